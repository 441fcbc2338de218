//! Paging: a notice's blocks split into pages that fit the body of the page.
//!
//! Slint has no public text-measuring API, and the body's own preferred
//! height is only current after a drawing pass (its blocks come from a
//! repeater). So each block is measured on its own with a hidden `Text` of
//! the page (`probe-*` in ui/page.slint), and the heights are added up here
//! with the same spacing and paddings the page uses. This works on any
//! window, headless or real, without drawing, so paging never flickers.
//! Tests check the sum against the laid-out page after drawing.

use super::{AppWindow, BlockKind, BlockView, PageView, Screen, apply_text};
use slint::ComponentHandle;

/// Whether the body of what `ui` shows now fits its page, by the page's own
/// layout. Only current after a drawing pass.
pub(crate) fn fits_now(ui: &AppWindow) -> bool {
    ui.get_body_needed() <= ui.get_body_available() + 0.5
}

/// The page's sizes, in logical pixels, as ui/page.slint computes them.
struct Metrics {
    /// One design unit.
    u: f32,
    text_width: f32,
    page_width: f32,
    image_max: f32,
}

impl Metrics {
    fn of(ui: &AppWindow) -> Self {
        let screen = ui.global::<Screen>();
        let u = screen.get_scale();
        let page_width = screen.get_page_width();
        Metrics {
            u,
            text_width: page_width - 128.0 * u,
            page_width,
            image_max: ui.get_image_max(),
        }
    }
}

/// Measures text as the page sets it.
fn text_height(ui: &AppWindow, text: &str, size: f32, width: f32, bold: bool) -> f32 {
    ui.set_probe_text(text.into());
    ui.set_probe_size(size);
    ui.set_probe_width(width);
    ui.set_probe_bold(bold);
    ui.set_probe_wrap(true);
    ui.get_probe_height()
}

/// The height a block takes in the body, its top padding included.
fn block_height(ui: &AppWindow, m: &Metrics, block: &BlockView) -> f32 {
    let u = m.u;
    let padding = if block.kind == BlockKind::Row && !block.header {
        0.0
    } else {
        18.0 * u
    };
    let content = match block.kind {
        BlockKind::Paragraph => text_height(ui, &block.text, 42.0 * u, m.text_width, false),
        BlockKind::Caption => text_height(ui, &block.text, 42.0 * u, m.text_width, true),
        BlockKind::Image => {
            let image = (m.text_width * block.aspect).min(m.image_max) * block.shrink;
            let caption = if block.text.is_empty() {
                0.0
            } else {
                8.0 * u + text_height(ui, &block.text, 36.0 * u, m.text_width, false)
            };
            image + caption
        }
        BlockKind::Row => {
            let n = block.cells.len().max(1) as f32;
            let column = (m.page_width - 128.0 * u - 40.0 * u - 24.0 * u * (n - 1.0)) / n;
            let tallest = block
                .cells
                .iter()
                .map(|c| text_height(ui, c, 42.0 * u, column, block.header))
                .fold(0.0f32, f32::max);
            tallest + 16.0 * u
        }
    };
    padding + content
}

/// Splits a notice's blocks into pages that fit the body of `ui` at its
/// size, for the view it shows now (a kiosk's bar and the urgent banner take
/// room). Long content is paged, never cut: a table continues on the next
/// page under its caption (续) and header row; a paragraph too long for a
/// page is split between characters; an image is never taller than a page.
pub(crate) fn paginate(
    ui: &AppWindow,
    frame: &PageView,
    blocks: &[BlockView],
) -> Vec<Vec<BlockView>> {
    let mut view = frame.clone();
    view.blocks = Vec::new();
    apply_text(ui, &view, &super::Images::default());
    let m = Metrics::of(ui);
    let available = ui.get_body_available() + 0.5;
    let title = text_height(ui, &frame.title, 60.0 * m.u, m.text_width, true);

    let mut pages = Vec::new();
    let mut current: Vec<BlockView> = Vec::new();
    let mut used = title;
    // The caption and header row of the table being laid out, repeated on
    // every page it continues onto.
    let mut table_head: Vec<BlockView> = Vec::new();
    let mut queue: std::collections::VecDeque<BlockView> = blocks.iter().cloned().collect();
    while let Some(block) = queue.pop_front() {
        match (block.kind, block.header) {
            (BlockKind::Caption, _) => table_head = vec![block.clone()],
            (BlockKind::Row, true) => table_head.push(block.clone()),
            (BlockKind::Row, false) => {}
            (BlockKind::Paragraph | BlockKind::Image, _) => table_head.clear(),
        }
        let height = block_height(ui, &m, &block);
        // A table's caption and header row stay with its first row.
        let keep_with: f32 = if block.kind == BlockKind::Caption || block.header {
            queue
                .iter()
                .take(3)
                .scan(false, |done, b| {
                    if *done || b.kind != BlockKind::Row {
                        return None;
                    }
                    *done = !b.header;
                    Some(b)
                })
                .map(|b| block_height(ui, &m, b))
                .sum()
        } else {
            0.0
        };
        let only_heads = current
            .iter()
            .all(|b| b.kind == BlockKind::Caption || b.header);
        if keep_with > 0.0 && used + height + keep_with > available && !only_heads {
            pages.push(std::mem::take(&mut current));
            used = title;
            if block.header {
                // Seen again on the next page.
                table_head.pop();
            }
            queue.push_front(block);
            continue;
        }
        if used + height <= available {
            used += height;
            current.push(block);
            continue;
        }
        // An image that nearly fits is drawn a little smaller rather than
        // left for the next page.
        if block.kind == BlockKind::Image && block.shrink > 0.0 {
            let full = (m.text_width * block.aspect).min(m.image_max);
            let others = height - full * block.shrink;
            let room = available - used - others;
            if room >= full * 0.6 {
                let smaller = BlockView {
                    shrink: (room / full).min(1.0),
                    ..block
                };
                used += block_height(ui, &m, &smaller);
                current.push(smaller);
                continue;
            }
        }
        if !only_heads {
            // Start a new page with this block (and the table's head).
            pages.push(std::mem::take(&mut current));
            used = title;
            if block.kind == BlockKind::Row && !block.header {
                for head in continued(&table_head) {
                    used += block_height(ui, &m, &head);
                    current.push(head);
                }
            }
            queue.push_front(block);
            continue;
        }
        // The block does not fit even on a page of its own.
        if block.kind == BlockKind::Paragraph {
            let chars: Vec<char> = block.text.chars().collect();
            let fits = |n: usize| {
                let text: String = chars[..n].iter().collect();
                used + 18.0 * m.u + text_height(ui, &text, 42.0 * m.u, m.text_width, false)
                    <= available
            };
            let (mut lo, mut hi) = (1usize, chars.len());
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if fits(mid) { lo = mid } else { hi = mid - 1 }
            }
            let head: String = chars[..lo].iter().collect();
            let rest: String = chars[lo..].iter().collect();
            current.push(BlockView {
                text: head,
                ..block.clone()
            });
            pages.push(std::mem::take(&mut current));
            used = title;
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
            used = title;
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
            BlockKind::Caption => BlockView {
                text: format!("{}（续）", b.text.trim_end_matches("（续）")),
                ..b.clone()
            },
            BlockKind::Row | BlockKind::Paragraph | BlockKind::Image => b.clone(),
        })
        .collect()
}

/// The characters of a page, for its dwell time.
pub(crate) fn page_chars(blocks: &[BlockView]) -> usize {
    blocks.iter().map(BlockView::chars).sum()
}
