#!/usr/bin/env python3
"""Makes the embedded UI font: Noto Sans CJK SC (SIL Open Font License 1.1)
cut down to GB 2312, ASCII, common punctuation and every character of the
sample notices and UI texts, so that every screen renders Simplified Chinese
glyph forms without any system font.

Needs Debian's fonts-noto-cjk and `pip install fonttools`. Run from the
repository root: python3 tools/subset-font.py
"""
import glob
import pathlib

from fontTools import subset
from fontTools.ttLib import TTCollection

SOURCES = {
    "Regular": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "Bold": "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
}
SC_INDEX = 2  # JP, KR, SC, TC, HK: the collection's order


def characters():
    chars = set()
    for hi in range(0xA1, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                chars.update(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    chars.update(chr(c) for c in range(0x20, 0x7F))
    for start, end in [(0x2000, 0x206F), (0x3000, 0x303F), (0xFF00, 0xFFEF), (0x2190, 0x21FF), (0x25A0, 0x25FF)]:
        chars.update(chr(c) for c in range(start, end + 1))
    chars.update("¥·×÷°±《》「」『』【】〔〕…—～￥")
    for path in glob.glob("samples/*.json") + glob.glob("ui/**/*.slint", recursive=True) + glob.glob("src/**/*.rs", recursive=True):
        chars.update(pathlib.Path(path).read_text(encoding="utf-8"))
    return "".join(sorted(c for c in chars if c.isprintable() or c == " "))


def main():
    text = characters()
    out_dir = pathlib.Path("ui/fonts")
    out_dir.mkdir(parents=True, exist_ok=True)
    for weight, source in SOURCES.items():
        font = TTCollection(source).fonts[SC_INDEX]
        options = subset.Options()
        options.layout_features = ["*"]
        options.name_IDs = ["*"]
        options.name_languages = ["*"]
        options.notdef_outline = True
        options.hinting = False
        subsetter = subset.Subsetter(options)
        subsetter.populate(text=text)
        subsetter.subset(font)
        target = out_dir / f"NotoSansSC-{weight}.otf"
        font.save(target)
        print(f"{target}: {target.stat().st_size} bytes, {len(text)} characters")


if __name__ == "__main__":
    main()
