//! The office's checks of what screens send, beyond parsing: one spelling
//! per id, proof-of-play records within their ranges and in their form (the
//! chain itself, hashes and links, is judged against what is held by
//! `protocol::plays::judge`), screenshots that are
//! PNG images of a sane size, and the content types of bodies. Pure: no
//! I/O, no clock; the intake server calls these and turns a problem into a
//! refusal.
//!
//! Whatever is checked here is checked before anything is stored, because
//! the office's database is the record staff and auditors read: a value a
//! screen could not have sent (a version of 2^64−1, a notice id with a
//! slash) must never reach it.

use crate::protocol::feedback::FeedbackItem;
use crate::protocol::plays::PlayRecord;

/// Play records in one request at most (PROTOCOL.md section 7, play chain).
pub const MAX_PLAYS: usize = crate::protocol::plays::MAX_PLAYS_PER_REQUEST;
/// Pages of one play at most: a notice of 256 KiB in pages of a few
/// hundred characters has fewer.
pub const MAX_PAGES_SHOWN: u32 = 10_000;
/// The longest play taken: a day. A notice is on screen for seconds or
/// minutes; anything longer is a broken clock, not a play.
pub const MAX_PLAY_DURATION_MS: u64 = 24 * 60 * 60 * 1000;
/// Notice versions at most: 2^53 − 1, the largest integer every JSON
/// reader (JavaScript's included) holds exactly, and far below `i64::MAX`,
/// which SQLite stores.
pub const MAX_VERSION: u64 = (1 << 53) - 1;
/// Screenshot width and height at most, as for notice images (section 3.5).
pub const MAX_SCREENSHOT_SIDE: u32 = 8192;

/// The one spelling of a UUID the office stores and answers with:
/// lowercase and hyphenated. `Uuid::parse_str` takes upper case, braces,
/// `urn:uuid:` and the hyphenless form too; were they stored as sent, one
/// item would be stored once per spelling and idempotency would not hold.
pub fn canonical_uuid(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// Why the office cannot take this feedback item: the wire rules
/// (`FeedbackItem::problem`) and the office's own, which keep values out of
/// the database that no screen sends.
pub fn feedback_problem(item: &FeedbackItem) -> Option<String> {
    if let Some(problem) = item.problem() {
        return Some(problem);
    }
    if let Some(id) = &item.notice_id {
        if !crate::protocol::is_valid_id(id) {
            return Some(format!("notice_id {id:?} does not match the id pattern"));
        }
    }
    if let Some(version) = item.notice_version {
        if !(1..=MAX_VERSION).contains(&version) {
            return Some(format!(
                "notice_version {version} is not between 1 and {MAX_VERSION}"
            ));
        }
    }
    None
}

/// Why a batch of plays cannot be taken, naming the record and its field.
/// A batch is taken whole or not at all: the answer `{"stored": N}` has no
/// room for records refused one by one, and a chain has no room for holes.
pub fn plays_problem(plays: &[PlayRecord]) -> Option<String> {
    plays
        .iter()
        .enumerate()
        .find_map(|(i, play)| play_problem(play).map(|p| format!("plays[{i}].{p}")))
}

/// What is wrong with one play record, starting with the field's name.
fn play_problem(play: &PlayRecord) -> Option<String> {
    if !(1..=MAX_VERSION).contains(&play.seq) {
        return Some(format!(
            "seq {} is not between 1 and {MAX_VERSION}",
            play.seq
        ));
    }
    if !crate::protocol::is_valid_id(&play.scope) {
        return Some(format!(
            "scope {:?} does not match the id pattern",
            play.scope
        ));
    }
    if !crate::protocol::is_valid_id(&play.notice_id) {
        return Some(format!(
            "notice_id {:?} does not match the id pattern",
            play.notice_id
        ));
    }
    if !(1..=MAX_VERSION).contains(&play.version) {
        return Some(format!(
            "version {} is not between 1 and {MAX_VERSION}",
            play.version
        ));
    }
    if !crate::protocol::plays::is_millisecond_utc(&play.started_at) {
        return Some(format!(
            "started_at {:?} is not UTC with three fractional digits and Z",
            play.started_at
        ));
    }
    if play.duration_ms > MAX_PLAY_DURATION_MS {
        return Some(format!(
            "duration_ms {} is longer than a day ({MAX_PLAY_DURATION_MS})",
            play.duration_ms
        ));
    }
    if !(1..=MAX_PAGES_SHOWN).contains(&play.pages_shown) {
        return Some(format!(
            "pages_shown {} is not between 1 and {MAX_PAGES_SHOWN}",
            play.pages_shown
        ));
    }
    for (name, hex) in [("prev", &play.prev), ("hash", &play.hash)] {
        if !crate::protocol::plays::is_hex64(hex) {
            return Some(format!("{name} {hex:?} is not 64 lowercase hex digits"));
        }
    }
    None
}

/// Why these bytes are not a screenshot the office keeps: not a PNG whose
/// header (signature, IHDR and every chunk up to the first IDAT, with their
/// CRCs) decodes, or larger than `MAX_SCREENSHOT_SIDE` a side. The pixels
/// themselves are not decoded: nobody looks at them here, and an
/// 8192×8192 frame would take 256 MiB.
pub fn png_problem(bytes: &[u8]) -> Option<String> {
    // The header's own allocations (palette, text chunks) stay small.
    let limits = png::Limits { bytes: 1 << 20 };
    let decoder = png::Decoder::new_with_limits(bytes, limits);
    let reader = match decoder.read_info() {
        Ok(reader) => reader,
        Err(e) => return Some(format!("the body is not a PNG image: {e}")),
    };
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    if width == 0 || height == 0 || width > MAX_SCREENSHOT_SIDE || height > MAX_SCREENSHOT_SIDE {
        return Some(format!(
            "a screenshot of {width}×{height} pixels; at most \
             {MAX_SCREENSHOT_SIDE}×{MAX_SCREENSHOT_SIDE} are taken"
        ));
    }
    None
}

/// Whether a `Content-Type` value is `expected` (`type/subtype`, any case),
/// with or without parameters such as `charset=utf-8`.
pub fn is_content_type(value: &str, expected: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play() -> PlayRecord {
        PlayRecord {
            seq: 1,
            scope: "lixia-demo".into(),
            notice_id: "2026q3-finance-001".into(),
            version: 3,
            started_at: "2026-10-08T01:02:03.456Z".into(),
            duration_ms: 36_000,
            pages_shown: 3,
            trigger: crate::protocol::plays::Trigger::Rotation,
            prev: crate::protocol::plays::GENESIS.into(),
            hash: crate::protocol::plays::GENESIS.into(),
        }
    }

    #[test]
    fn every_spelling_of_a_uuid_becomes_one() {
        let canonical = "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10";
        for spelling in [
            canonical,
            "0192F1E4-7B7A-7CC3-9A51-6B3F4F0B2A10",
            "{0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10}",
            "urn:uuid:0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10",
            "0192f1e47b7a7cc39a516b3f4f0b2a10",
        ] {
            assert_eq!(canonical_uuid(spelling).as_deref(), Some(canonical));
        }
        assert_eq!(canonical_uuid("../0"), None);
    }

    #[test]
    fn each_play_rule_names_its_record_and_field() {
        assert_eq!(plays_problem(&[play(), play()]), None);
        let cases = [
            (
                PlayRecord {
                    notice_id: "../0".into(),
                    ..play()
                },
                "plays[1].notice_id",
            ),
            (
                PlayRecord {
                    version: u64::MAX,
                    ..play()
                },
                "plays[1].version",
            ),
            (
                PlayRecord {
                    version: 0,
                    ..play()
                },
                "plays[1].version",
            ),
            (
                PlayRecord {
                    started_at: "x".into(),
                    ..play()
                },
                "plays[1].started_at",
            ),
            (
                PlayRecord {
                    duration_ms: MAX_PLAY_DURATION_MS + 1,
                    ..play()
                },
                "plays[1].duration_ms",
            ),
            (
                PlayRecord {
                    started_at: "2026-10-08T09:02:03.456+08:00".into(),
                    ..play()
                },
                "plays[1].started_at",
            ),
            (
                PlayRecord {
                    scope: "A B".into(),
                    ..play()
                },
                "plays[1].scope",
            ),
            (PlayRecord { seq: 0, ..play() }, "plays[1].seq"),
            (
                PlayRecord {
                    pages_shown: 0,
                    ..play()
                },
                "plays[1].pages_shown",
            ),
            (
                PlayRecord {
                    prev: "ABC".into(),
                    ..play()
                },
                "plays[1].prev",
            ),
            (
                PlayRecord {
                    hash: "0".repeat(63),
                    ..play()
                },
                "plays[1].hash",
            ),
        ];
        for (bad, expected) in cases {
            let problem = plays_problem(&[play(), bad]).unwrap_or_default();
            assert!(
                problem.starts_with(expected),
                "{problem:?} should start with {expected:?}"
            );
        }
        assert_eq!(
            plays_problem(&[PlayRecord {
                version: MAX_VERSION,
                duration_ms: MAX_PLAY_DURATION_MS,
                ..play()
            }]),
            None
        );
    }

    /// A PNG of `width`×`height` grey pixels.
    fn png_of(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        let mut writer = encoder.write_header().unwrap();
        writer
            .write_image_data(&vec![128; (width * height) as usize])
            .unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn a_screenshot_is_a_png_by_its_header_not_its_magic() {
        assert_eq!(png_problem(&png_of(4, 3)), None);
        assert!(png_problem(b"\x89PNG\r\n\x1a\n").is_some(), "magic alone");
        let mut corrupt = png_of(4, 3);
        corrupt[20] ^= 0xff; // inside IHDR: its CRC no longer matches
        assert!(png_problem(&corrupt).is_some());
        // A valid PNG, too wide to be a screen's frame.
        let problem = png_problem(&png_of(9000, 1)).unwrap_or_default();
        assert!(problem.contains("9000×1"), "{problem}");
    }

    #[test]
    fn content_types_allow_parameters_and_any_case() {
        assert!(is_content_type("application/json", "application/json"));
        assert!(is_content_type(
            "Application/JSON; charset=utf-8",
            "application/json"
        ));
        assert!(!is_content_type("text/plain", "application/json"));
        assert!(!is_content_type("application/jsonx", "application/json"));
        assert!(!is_content_type("", "image/png"));
    }
}
