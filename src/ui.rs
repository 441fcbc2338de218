//! The UI bridge: the only module that uses slint. It turns domain types into
//! the UI's structs (`ui/api.slint` is the whole contract) and renders pages,
//! in a window or headless with the software renderer for previews and tests.
//!
//! Slint objects live on the thread that made them; nothing here is `Send`.

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::Context;
use slint::platform::software_renderer::{
    MinimalSoftwareWindow, PremultipliedRgbaColor, RepaintBufferType,
};
use slint::{ComponentHandle, ModelRc, SharedString, VecModel};
use time::{OffsetDateTime, UtcOffset};

use crate::protocol::Notice;
use crate::protocol::notice::Block as NoticeBlock;

/// The code Slint generates from ui/app.slint (it uses unsafe internally).
#[allow(unsafe_code, clippy::all)]
mod generated {
    slint::include_modules!();
}

pub use generated::{AppWindow, Block, Screen};

/// Screens stand in China: the clock shows China Standard Time.
pub const CHINA: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => panic!("UTC+8 is a valid offset"),
};

/// One block of a page, as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockView {
    pub kind: &'static str,
    pub text: String,
    pub cells: Vec<String>,
    /// Per cell: right aligned, because its column holds numbers.
    pub right: Vec<bool>,
    pub header: bool,
}

/// Whether a table cell reads as a number (an amount, a count, a share).
fn is_numeric(cell: &str) -> bool {
    let cell = cell.trim();
    !cell.is_empty()
        && cell.chars().any(|c| c.is_ascii_digit())
        && cell.chars().all(|c| {
            c.is_ascii_digit() || matches!(c, ',' | '.' | '%' | '-' | '+' | ' ' | '¥' | '￥')
        })
}

/// Everything one page shows, in plain Rust types.
#[derive(Debug, Clone, PartialEq, Eq)]
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

fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn hhmm(t: OffsetDateTime) -> String {
    let t = t.to_offset(CHINA);
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// The blocks of a notice body: paragraphs, and tables as a caption, a header
/// row and rows. Images are shown by their caption until media land.
pub fn body_blocks(notice: &Notice) -> Vec<BlockView> {
    let mut out = Vec::new();
    let block = |kind, text: &str| BlockView {
        kind,
        text: text.to_owned(),
        cells: vec![],
        right: vec![],
        header: false,
    };
    if let Some(summary) = &notice.summary {
        out.push(block("paragraph", summary));
    }
    for b in &notice.body {
        match b {
            NoticeBlock::Paragraph { text } => out.push(block("paragraph", text)),
            NoticeBlock::Table {
                caption,
                header,
                rows,
            } => {
                if let Some(caption) = caption {
                    out.push(block("caption", caption));
                }
                // A column is right aligned when every one of its cells is a number.
                let right: Vec<bool> = (0..header.len())
                    .map(|i| {
                        !rows.is_empty()
                            && rows.iter().all(|r| r.get(i).is_some_and(|c| is_numeric(c)))
                    })
                    .collect();
                let row = |cells: &Vec<String>, header| BlockView {
                    kind: "row",
                    text: String::new(),
                    cells: cells.clone(),
                    right: right.clone(),
                    header,
                };
                out.push(row(header, true));
                out.extend(rows.iter().map(|r| row(r, false)));
            }
            NoticeBlock::Image { caption, .. } => {
                out.push(block(
                    "paragraph",
                    &format!("〔图片〕{}", caption.as_deref().unwrap_or("")),
                ));
            }
        }
    }
    out
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
            publisher: format!("公开主体：{}", notice.publisher),
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

/// Shows `view` in `ui`, QR code included.
pub fn apply(ui: &AppWindow, view: &PageView) -> anyhow::Result<()> {
    apply_text(ui, view);
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
/// The blocks model is created once and updated in place.
fn apply_text(ui: &AppWindow, view: &PageView) {
    let screen = ui.global::<Screen>();
    screen.set_category(view.category.as_str().into());
    screen.set_title(view.title.as_str().into());
    let blocks: Vec<Block> = view
        .blocks
        .iter()
        .map(|b| Block {
            kind: b.kind.into(),
            text: b.text.as_str().into(),
            cells: ModelRc::new(VecModel::from(
                b.cells.iter().map(SharedString::from).collect::<Vec<_>>(),
            )),
            right: ModelRc::new(VecModel::from(b.right.clone())),
            header: b.header,
        })
        .collect();
    screen.set_blocks(ModelRc::new(VecModel::from(blocks)));
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

/// The software-rendered platform for previews and tests: no display needed.
struct Headless {
    window: Rc<MinimalSoftwareWindow>,
}

impl slint::platform::Platform for Headless {
    fn create_window_adapter(
        &self,
    ) -> Result<Rc<dyn slint::platform::WindowAdapter>, slint::PlatformError> {
        Ok(self.window.clone())
    }
}

thread_local! {
    static HEADLESS: RefCell<Option<(Rc<MinimalSoftwareWindow>, AppWindow)>> = const { RefCell::new(None) };
}

/// Runs `f` with the headless UI sized `width`×`height`. The first call
/// installs the headless platform for this process and thread.
fn with_headless<T>(
    width: u32,
    height: u32,
    f: impl FnOnce(&MinimalSoftwareWindow, &AppWindow) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    HEADLESS.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let window = MinimalSoftwareWindow::new(RepaintBufferType::NewBuffer);
            slint::platform::set_platform(Box::new(Headless {
                window: window.clone(),
            }))
            .map_err(|e| anyhow::anyhow!("cannot install the headless renderer: {e}"))?;
            let ui = AppWindow::new().context("creating the UI")?;
            ui.show().context("showing the UI")?;
            *slot = Some((window, ui));
        }
        let (window, ui) = slot.as_ref().expect("set above");
        window.set_size(slint::PhysicalSize::new(width, height));
        ui.global::<Screen>().set_scale(scale_for(width, height));
        ui.global::<Screen>().set_page_width(width as f32);
        f(window, ui)
    })
}

/// Splits a notice's blocks into pages that fit the body of `ui` at the
/// window's size, measured by Slint's layout. Long content is paged, never
/// cut: a table continues on the next page under its caption (续) and header
/// row; a paragraph too long for a page is split between characters.
fn paginate(
    window: &MinimalSoftwareWindow,
    ui: &AppWindow,
    frame: &PageView,
    blocks: &[BlockView],
) -> Vec<Vec<BlockView>> {
    let size = window.size();
    let mut scratch = vec![PremultipliedRgbaColor::default(); (size.width * size.height) as usize];
    let mut fits = |candidate: &[BlockView]| {
        let mut view = frame.clone();
        view.blocks = candidate.to_vec();
        apply_text(ui, &view);
        // The repeater behind the blocks is brought up to date by a layout
        // pass; only then is the body's preferred height current.
        window.request_redraw();
        window.draw_if_needed(|renderer| {
            renderer.render(&mut scratch, size.width as usize);
        });
        ui.get_body_needed() <= ui.get_body_available() + 0.5
    };
    let mut pages = Vec::new();
    let mut current: Vec<BlockView> = Vec::new();
    // The caption and header row of the table being laid out, repeated on
    // every page it continues onto.
    let mut table_head: Vec<BlockView> = Vec::new();
    let mut queue: std::collections::VecDeque<BlockView> = blocks.iter().cloned().collect();
    while let Some(block) = queue.pop_front() {
        match (block.kind, block.header) {
            ("caption", _) => table_head = vec![block.clone()],
            ("row", true) => table_head.push(block.clone()),
            ("row", false) => {}
            _ => table_head.clear(),
        }
        let mut candidate = current.clone();
        candidate.push(block.clone());
        if fits(&candidate) {
            current = candidate;
            continue;
        }
        let only_heads = current.iter().all(|b| b.kind == "caption" || b.header);
        if !only_heads {
            // Start a new page with this block (and the table's head).
            pages.push(std::mem::take(&mut current));
            if block.kind == "row" && !block.header {
                current = continued(&table_head);
            }
            queue.push_front(block);
            continue;
        }
        // The block does not fit even on a page of its own.
        if block.kind == "paragraph" {
            let chars: Vec<char> = block.text.chars().collect();
            let (mut lo, mut hi) = (1usize, chars.len());
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                let mut probe = current.clone();
                probe.push(BlockView {
                    text: chars[..mid].iter().collect(),
                    ..block.clone()
                });
                if fits(&probe) { lo = mid } else { hi = mid - 1 }
            }
            let head: String = chars[..lo].iter().collect();
            let rest: String = chars[lo..].iter().collect();
            current.push(BlockView {
                text: head,
                ..block.clone()
            });
            pages.push(std::mem::take(&mut current));
            if !rest.is_empty() {
                queue.push_front(BlockView {
                    text: rest,
                    ..block
                });
            }
        } else {
            // A single table row taller than a page: show it alone rather than drop it.
            current.push(block);
            pages.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() || pages.is_empty() {
        pages.push(current);
    }
    pages
}

fn continued(table_head: &[BlockView]) -> Vec<BlockView> {
    table_head
        .iter()
        .map(|b| match b.kind {
            "caption" => BlockView {
                text: format!("{}（续）", b.text),
                ..b.clone()
            },
            _ => b.clone(),
        })
        .collect()
}

/// The pages of a notice at `width`×`height`, as the headless UI lays them out.
pub fn pages_of(notice: &Notice, width: u32, height: u32) -> anyhow::Result<Vec<Vec<BlockView>>> {
    with_headless(width, height, |window, ui| {
        let frame = PageView::new(notice, Vec::new(), 1, 1, OffsetDateTime::UNIX_EPOCH, None);
        apply(ui, &frame)?;
        Ok(paginate(window, ui, &frame, &body_blocks(notice)))
    })
}

/// One rendered page: RGBA pixels (not premultiplied), and whether its body
/// needed more room than the page has (only a single table row taller than a
/// page can; everything else is paged).
pub struct RenderedPage {
    pub rgba: Vec<u8>,
    pub overflows: bool,
}

/// Renders every page of a notice at `width`×`height` without a display.
pub fn render_notice(
    notice: &Notice,
    width: u32,
    height: u32,
    now: OffsetDateTime,
    offline_since: Option<OffsetDateTime>,
) -> anyhow::Result<Vec<RenderedPage>> {
    with_headless(width, height, |window, ui| {
        let frame = PageView::new(notice, Vec::new(), 1, 1, now, offline_since);
        apply(ui, &frame)?;
        let pages = paginate(window, ui, &frame, &body_blocks(notice));
        let count = pages.len();
        pages
            .into_iter()
            .enumerate()
            .map(|(i, blocks)| {
                let view = PageView {
                    blocks,
                    page: format!("第 {}/{count} 页", i + 1),
                    ..frame.clone()
                };
                let rgba = draw(window, ui, &view, width, height)?;
                let overflows = ui.get_body_needed() > ui.get_body_available() + 0.5;
                Ok(RenderedPage { rgba, overflows })
            })
            .collect()
    })
}

/// Renders one prepared page.
pub fn render_rgba(view: &PageView, width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    with_headless(width, height, |window, ui| {
        draw(window, ui, view, width, height)
    })
}

fn draw(
    window: &MinimalSoftwareWindow,
    ui: &AppWindow,
    view: &PageView,
    width: u32,
    height: u32,
) -> anyhow::Result<Vec<u8>> {
    apply(ui, view)?;
    window.request_redraw();
    slint::platform::update_timers_and_animations();
    let mut buffer = vec![PremultipliedRgbaColor::default(); (width * height) as usize];
    window.draw_if_needed(|renderer| {
        renderer.render(&mut buffer, width as usize);
    });
    Ok(buffer
        .iter()
        .flat_map(|p| {
            let unpremultiply = |c: u8| {
                if p.alpha == 0 {
                    0
                } else {
                    (u16::from(c) * 255 / u16::from(p.alpha)) as u8
                }
            };
            [
                unpremultiply(p.red),
                unpremultiply(p.green),
                unpremultiply(p.blue),
                p.alpha,
            ]
        })
        .collect())
}

/// Encodes RGBA pixels as PNG.
pub fn png(rgba: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(rgba)?;
    Ok(out)
}
