//! The UI bridge: the only module tree that uses slint. It turns domain types
//! into the UI's structs (`ui/api.slint` is the whole contract) and shows
//! them, in a window (winit, or linuxkms on appliances) or headless with the
//! software renderer for previews and tests.
//!
//! - this file: page views in plain Rust, and applying them to the UI;
//! - [`paging`]: long notices broken into pages by measuring the layout;
//! - [`controller`]: the controller of the screen, what it shows and the
//!   answers of the daemon's [`crate::ui_io`] task; `notice` asks for a
//!   notice and pages it, `rotation` pages the rotation's slot on its dwell
//!   times, `kiosk` runs the kiosk's views, and [`feedback`] is the
//!   feedback flow as a pure state machine;
//! - [`window`]: a real window beside the daemon's tokio runtime;
//! - [`headless`]: the software renderer without a display.
//!
//! Slint objects live on the thread that made them; nothing here is `Send`.
//! The daemon's tasks reach the UI only through `invoke_from_event_loop`. The
//! UI thread only draws: it opens no store, commits nothing and decodes no
//! image; [`crate::ui_io`] does that and answers with plain data.

use std::collections::HashMap;

use anyhow::Context;
use slint::{ComponentHandle, Model, ModelRc, SharedString, VecModel};
use time::{OffsetDateTime, UtcOffset};

pub mod controller;
pub mod feedback;
pub mod headless;
mod kiosk;
mod notice;
mod paging;
mod rotation;
pub mod window;

pub use controller::{Controller, Played, Setup, Snapshot};
pub use headless::{
    HeadlessWindow, RenderedPage, pages_of, render_kiosk_page, render_notice, render_notice_page,
    render_rgba,
};

use crate::protocol::Notice;
use crate::protocol::notice::Block as NoticeBlock;

/// The code Slint generates from ui/app.slint (it uses unsafe internally).
#[allow(unsafe_code, clippy::all)]
mod generated {
    slint::include_modules!();
}

pub use generated::{
    AppWindow, Block, BlockKind, Entry, FbStep, FeedbackKind, Reason, Screen, ScreenMode,
    ScreenView, Tile,
};

/// Screens stand in China: the clock shows China Standard Time.
pub const CHINA: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => panic!("UTC+8 is a valid offset"),
};

/// One block of a page, as the UI shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockView {
    pub kind: BlockKind,
    pub text: String,
    pub cells: Vec<String>,
    /// Per cell: right aligned, because its column holds numbers.
    pub right: Vec<bool>,
    pub header: bool,
    /// An image block: the media id, and the image's height / width.
    pub media: Option<String>,
    pub aspect: f32,
    /// An image drawn at this share of its full size, to fit a page.
    pub shrink: f32,
}

impl BlockView {
    fn text(kind: BlockKind, text: &str) -> Self {
        BlockView {
            kind,
            text: text.to_owned(),
            cells: vec![],
            right: vec![],
            header: false,
            media: None,
            aspect: 0.0,
            shrink: 1.0,
        }
    }

    /// The characters a resident reads in this block.
    pub fn chars(&self) -> usize {
        self.text.chars().count() + self.cells.iter().map(|c| c.chars().count()).sum::<usize>()
    }
}

/// Decoded images of the notice being shown, by media id. Only what is on
/// screen is held, so memory stays flat however many notices carry images.
#[derive(Default, Clone)]
pub struct Images {
    by_media: HashMap<String, (slint::Image, f32)>,
}

impl Images {
    /// Adds an RGBA image for media `id`.
    /// Images decoded off the UI thread (see [`crate::ui_io`]), by media id.
    pub fn from_decoded(decoded: &[(String, crate::media::DecodedImage)]) -> Self {
        let mut images = Images::default();
        for (id, image) in decoded {
            images.insert_rgba(id, image.width, image.height, &image.rgba);
        }
        images
    }

    pub fn insert_rgba(&mut self, id: &str, width: u32, height: u32, rgba: &[u8]) {
        if width == 0 || height == 0 {
            return;
        }
        let buffer =
            slint::SharedPixelBuffer::<slint::Rgba8Pixel>::clone_from_slice(rgba, width, height);
        self.by_media.insert(
            id.to_owned(),
            (
                slint::Image::from_rgba8(buffer),
                height as f32 / width as f32,
            ),
        );
    }

    fn get(&self, id: &str) -> Option<&(slint::Image, f32)> {
        self.by_media.get(id)
    }

    /// What a notice's paging depends on here: which media are present and
    /// their shapes, by id.
    pub(crate) fn shapes(&self) -> Vec<(String, u32)> {
        let mut shapes: Vec<(String, u32)> = self
            .by_media
            .iter()
            .map(|(id, (_, aspect))| (id.clone(), aspect.to_bits()))
            .collect();
        shapes.sort();
        shapes
    }

    pub fn len(&self) -> usize {
        self.by_media.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_media.is_empty()
    }
}

/// Whether a table cell reads as a number (an amount, a count, a share).
pub fn is_numeric(cell: &str) -> bool {
    let cell = cell.trim();
    !cell.is_empty()
        && cell.chars().any(|c| c.is_ascii_digit())
        && cell.chars().all(|c| {
            c.is_ascii_digit() || matches!(c, ',' | '.' | '%' | '-' | '+' | ' ' | '¥' | '￥')
        })
}

/// Everything one page shows, in plain Rust types.
#[derive(Debug, Clone, PartialEq)]
pub struct PageView {
    pub category: String,
    pub title: String,
    pub blocks: Vec<BlockView>,
    pub publisher: String,
    pub window: String,
    pub contact: String,
    pub qr_url: Option<String>,
    pub page: String,
    pub clock: String,
    pub offline: Option<String>,
    pub urgent: bool,
}

/// The date of `t` in China, where the screens stand: a window that opens at
/// midnight in Beijing is 16:00 UTC the day before.
fn date(t: OffsetDateTime) -> String {
    let t = t.to_offset(CHINA);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn hhmm(t: OffsetDateTime) -> String {
    let t = t.to_offset(CHINA);
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// The blocks of a notice body: paragraphs, tables as a caption, a header
/// row and rows, and images with their captions. An image not (yet) fetched
/// and checked is named by its caption, so the rest of the notice still shows.
pub fn body_blocks(notice: &Notice, images: &Images) -> Vec<BlockView> {
    let mut out = Vec::new();
    let block = BlockView::text;
    if let Some(summary) = &notice.summary {
        out.push(block(BlockKind::Paragraph, summary));
    }
    for b in &notice.body {
        match b {
            NoticeBlock::Paragraph { text } => out.push(block(BlockKind::Paragraph, text)),
            NoticeBlock::Table {
                caption,
                header,
                rows,
            } => {
                if let Some(caption) = caption {
                    out.push(block(BlockKind::Caption, caption));
                }
                // A column is right aligned when every one of its cells is a number.
                let right: Vec<bool> = (0..header.len())
                    .map(|i| {
                        !rows.is_empty()
                            && rows.iter().all(|r| r.get(i).is_some_and(|c| is_numeric(c)))
                    })
                    .collect();
                let row = |cells: &Vec<String>, header| BlockView {
                    cells: cells.clone(),
                    right: right.clone(),
                    header,
                    ..BlockView::text(BlockKind::Row, "")
                };
                out.push(row(header, true));
                out.extend(rows.iter().map(|r| row(r, false)));
            }
            NoticeBlock::Image { media, caption } => match images.get(media) {
                Some((_, aspect)) => out.push(BlockView {
                    media: Some(media.clone()),
                    aspect: *aspect,
                    ..block(BlockKind::Image, caption.as_deref().unwrap_or(""))
                }),
                None => out.push(block(
                    BlockKind::Paragraph,
                    &format!("〔图片：{}〕", caption.as_deref().unwrap_or("未命名")),
                )),
            },
        }
    }
    out
}

/// "公开主体：…", with the review mark (section 4) when, and only when, a
/// supervisor's signature verified: "经…居务监督委员会审核" from `reviewer`.
pub fn publisher_line(notice: &Notice) -> String {
    match (notice.review_verified, notice.reviewer.as_deref()) {
        (true, Some(reviewer)) if !reviewer.trim().is_empty() => {
            format!("公开主体：{}　经{reviewer}审核", notice.publisher)
        }
        (true, _) => format!("公开主体：{}　经居务监督委员会审核", notice.publisher),
        (false, _) => format!("公开主体：{}", notice.publisher),
    }
}

impl PageView {
    /// Page `page` (from 1) of `pages` of a notice, at `now`; `offline_since`
    /// is the last sync when the broker has been unreachable long enough to say so.
    pub fn new(
        notice: &Notice,
        blocks: Vec<BlockView>,
        page: usize,
        pages: usize,
        now: OffsetDateTime,
        offline_since: Option<OffsetDateTime>,
    ) -> Self {
        PageView {
            category: notice.category.label_zh().to_owned(),
            title: notice.title.clone(),
            blocks,
            publisher: publisher_line(notice),
            window: format!(
                "公开期限：{} 至 {}",
                date(notice.valid_from),
                date(notice.valid_until)
            ),
            contact: notice.contact.clone(),
            qr_url: notice.qr_url.clone(),
            page: format!("第 {page}/{pages} 页"),
            clock: hhmm(now),
            offline: offline_since.map(|t| format!("离线 · 最后同步 {}", hhmm(t))),
            urgent: notice.priority == crate::protocol::Priority::Urgent,
        }
    }
}

/// A QR code image of `url`: black modules on white with the standard quiet
/// zone, `scale` pixels a module.
pub fn qr_image(url: &str, scale: u32) -> anyhow::Result<slint::Image> {
    let code = qrcode::QrCode::new(url.as_bytes()).context("making the QR code")?;
    let modules = code.width() as u32;
    let colors = code.to_colors();
    let quiet = 4;
    let side = (modules + 2 * quiet) * scale;
    let mut buffer = slint::SharedPixelBuffer::<slint::Rgb8Pixel>::new(side, side);
    let white = slint::Rgb8Pixel {
        r: 255,
        g: 255,
        b: 255,
    };
    let black = slint::Rgb8Pixel { r: 0, g: 0, b: 0 };
    let pixels = buffer.make_mut_slice();
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (x / scale, y / scale);
            let dark = mx >= quiet
                && my >= quiet
                && mx < quiet + modules
                && my < quiet + modules
                && colors[((my - quiet) * modules + (mx - quiet)) as usize] == qrcode::Color::Dark;
            pixels[(y * side + x) as usize] = if dark { black } else { white };
        }
    }
    Ok(slint::Image::from_rgb8(buffer))
}

/// The UI's design unit for a screen of this size: 1 at 1920×1080 and at
/// 1080×1920 (portrait), so text keeps its size when a screen is turned.
pub fn scale_for(width: u32, height: u32) -> f32 {
    let (w, h) = (width as f32, height as f32);
    if h > w {
        (w / 1080.0).min(h / 1920.0)
    } else {
        (w / 1920.0).min(h / 1080.0)
    }
}

/// Shows `view` in `ui`, QR code and images included.
pub fn apply(ui: &AppWindow, view: &PageView, images: &Images) -> anyhow::Result<()> {
    apply_text(ui, view, images);
    let screen = ui.global::<Screen>();
    match &view.qr_url {
        Some(url) => {
            screen.set_qr(qr_image(url, 8)?);
            screen.set_has_qr(true);
        }
        None => screen.set_has_qr(false),
    }
    Ok(())
}

/// Everything of `view` but the QR image (which paging does not change).
fn apply_text(ui: &AppWindow, view: &PageView, images: &Images) {
    let screen = ui.global::<Screen>();
    screen.set_category(view.category.as_str().into());
    screen.set_title(view.title.as_str().into());
    let blocks: Vec<Block> = view
        .blocks
        .iter()
        .map(|b| {
            let image = b.media.as_deref().and_then(|m| images.get(m));
            Block {
                kind: b.kind,
                text: b.text.as_str().into(),
                cells: ModelRc::new(VecModel::from(
                    b.cells.iter().map(SharedString::from).collect::<Vec<_>>(),
                )),
                right: ModelRc::new(VecModel::from(b.right.clone())),
                header: b.header,
                image: image.map(|(i, _)| i.clone()).unwrap_or_default(),
                aspect: image.map_or(0.0, |(_, a)| *a),
                shrink: b.shrink,
            }
        })
        .collect();
    set_rows(screen.get_blocks(), blocks, |m| screen.set_blocks(m));
    screen.set_publisher(view.publisher.as_str().into());
    screen.set_window(view.window.as_str().into());
    screen.set_contact(view.contact.as_str().into());
    screen.set_has_qr(view.qr_url.is_some());
    screen.set_page(view.page.as_str().into());
    screen.set_clock(view.clock.as_str().into());
    screen.set_offline(view.offline.is_some());
    screen.set_offline_text(view.offline.clone().unwrap_or_default().into());
    screen.set_urgent(view.urgent);
}

/// Tells the UI the screen's size in physical pixels: the design scale (1 at
/// 1920×1080 and at 1080×1920) and the page's width and height.
pub fn set_screen_size(ui: &AppWindow, width: u32, height: u32) {
    let screen = ui.global::<Screen>();
    screen.set_scale(scale_for(width, height));
    screen.set_page_width(width as f32);
    screen.set_page_height(height as f32);
}

/// The images of `notice` that are in `cache`, decoded to fit `max_width`×
/// `max_height`; and whether some image is still to be fetched. For previews
/// off a screen (`gongkai render`); a screen's UI is handed its images
/// decoded by [`crate::ui_io`].
pub fn load_images(
    notice: &Notice,
    cache: &crate::media::MediaCache,
    max_width: u32,
    max_height: u32,
) -> (Images, bool) {
    let (decoded, waiting) = crate::ui_io::decode_images(notice, cache, max_width, max_height);
    (Images::from_decoded(&decoded), waiting)
}

/// Puts `rows` into the model behind `current`, in place when it is ours (so
/// the UI's repeaters keep their items), or into a new one made once.
fn set_rows<T: Clone + 'static>(current: ModelRc<T>, rows: Vec<T>, set: impl FnOnce(ModelRc<T>)) {
    match current.as_any().downcast_ref::<VecModel<T>>() {
        Some(model) => model.set_vec(rows),
        None => set(ModelRc::new(VecModel::from(rows))),
    }
}

/// Encodes RGBA pixels as PNG.
pub fn png(rgba: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    encode_png(rgba, width, height, png::Compression::Default)
}

/// As [`png`], compressed for speed rather than size: for frames looked at
/// at once and thrown away (previews, the demo's frames), where encoding a
/// 1920×1080 frame well costs more than drawing it.
pub fn png_fast(rgba: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    encode_png(rgba, width, height, png::Compression::Fast)
}

fn encode_png(
    rgba: &[u8],
    width: u32,
    height: u32,
    compression: png::Compression,
) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(compression);
    encoder.write_header()?.write_image_data(rgba)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Every date and time on screen is China's: just before midnight UTC it
    /// is already the next morning in Beijing.
    #[test]
    fn dates_and_times_are_china_time_around_midnight_utc() {
        let before = datetime!(2026-10-07 15:59 UTC);
        assert_eq!(
            (date(before), hhmm(before)),
            ("2026-10-07".into(), "23:59".into())
        );
        let after = datetime!(2026-10-07 16:00 UTC);
        assert_eq!(
            (date(after), hhmm(after)),
            ("2026-10-08".into(), "00:00".into())
        );
        let midnight_utc = datetime!(2026-12-31 23:30 UTC);
        assert_eq!(date(midnight_utc), "2027-01-01");
        assert_eq!(hhmm(midnight_utc), "07:30");
        // An offset given in the notice itself changes nothing.
        assert_eq!(date(datetime!(2026-10-08 00:00 +08:00)), "2026-10-08");
    }
}
