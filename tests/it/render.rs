//! Every sample notice rendered headless with the software renderer, in both
//! orientations: the page is drawn, the title is there, and the QR code
//! decodes back to `qr_url`; then the kiosk's home and list views. One test:
//! the headless platform is per process.

use crate::common;

use gongkai::protocol::Notice;
use gongkai::ui;

const PAPER: [u8; 3] = [0xfd, 0xfb, 0xf7];
const BAND: [u8; 3] = [0x1f, 0x4e, 0x79];
const URGENT: [u8; 3] = [0xa4, 0x00, 0x1d];

struct Frame {
    rgba: Vec<u8>,
    width: u32,
    height: u32,
}

impl Frame {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 4) as usize;
        [self.rgba[i], self.rgba[i + 1], self.rgba[i + 2]]
    }

    /// Pixels in rows `y0..y1` that are dark (text ink).
    fn dark_in_rows(&self, y0: u32, y1: u32) -> usize {
        (y0..y1)
            .flat_map(|y| (0..self.width).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y).iter().all(|c| *c < 90))
            .count()
    }

    fn luma(&self) -> image_like::Gray {
        image_like::Gray {
            width: self.width as usize,
            height: self.height as usize,
            data: self
                .rgba
                .chunks(4)
                .map(|p| {
                    ((u32::from(p[0]) * 299 + u32::from(p[1]) * 587 + u32::from(p[2]) * 114) / 1000)
                        as u8
                })
                .collect(),
        }
    }
}

mod image_like {
    pub struct Gray {
        pub width: usize,
        pub height: usize,
        pub data: Vec<u8>,
    }
}

#[test]
fn every_sample_renders_in_both_orientations() {
    common::render_thread(every_sample_and_the_kiosk_views);
}

fn every_sample_and_the_kiosk_views() {
    let now = time::macros::datetime!(2026-10-10 10:30 +08:00);
    for (name, text) in gongkai::samples::ALL {
        let notice = Notice::from_payload(text.as_bytes()).unwrap();
        for (width, height) in [(1920, 1080), (1080, 1920), (1280, 720)] {
            let pages =
                ui::render_notice(&notice, &ui::Images::default(), width, height, now, None)
                    .unwrap();
            // Nothing is cut: the pages hold every block of the body, in order.
            let laid_out = ui::pages_of(&notice, width, height).unwrap();
            assert_eq!(laid_out.len(), pages.len());
            assert_eq!(
                text_of(laid_out.iter().flatten()),
                text_of(ui::body_blocks(&notice, &ui::Images::default()).iter()),
                "{name}"
            );
            for (i, page) in pages.into_iter().enumerate() {
                let what = format!("{name} page {} at {width}x{height}", i + 1);
                assert!(!page.overflows, "{what}: the body overflows the page");
                let frame = Frame {
                    rgba: page.rgba,
                    width,
                    height,
                };
                // GONGKAI_RENDER_DIR=folder keeps every frame as PNG, to look at.
                if let Ok(dir) = std::env::var("GONGKAI_RENDER_DIR") {
                    let file = format!(
                        "{}-{width}x{height}-p{}.png",
                        name.trim_end_matches(".json"),
                        i + 1
                    );
                    let png = ui::png(&frame.rgba, width, height).unwrap();
                    std::fs::write(std::path::Path::new(&dir).join(file), png).unwrap();
                }
                check_frame(&notice, &frame, &what);
            }
        }
    }
    review_mark_only_when_the_supervisor_signature_verified(now);
    kiosk_home_and_list_render_in_both_orientations();
}

/// Section 4's review mark: 经…居务监督委员会审核 is drawn from `reviewer` when a
/// supervisor's signature verified, and never for a notice accepted with the
/// office key alone, even though its payload names a reviewer too.
fn review_mark_only_when_the_supervisor_signature_verified(now: time::OffsetDateTime) {
    let (_, text) = gongkai::samples::ALL[0];
    let mut notice = Notice::from_payload(text.as_bytes()).unwrap();
    let reviewer = notice
        .reviewer
        .clone()
        .expect("the sample names its reviewer");
    let footer = |notice: &Notice| {
        let (page, _) =
            ui::render_notice_page(notice, &ui::Images::default(), (1920, 1080), now, 1).unwrap();
        let frame = Frame {
            rgba: page.rgba,
            width: 1920,
            height: 1080,
        };
        // The footer's text ink: publisher, window and contact lines.
        frame.dark_in_rows(1080 - 260, 1080)
    };
    notice.review_verified = false;
    assert!(!ui::publisher_line(&notice).contains("审核"));
    let office_only = footer(&notice);
    notice.review_verified = true;
    assert!(
        ui::publisher_line(&notice).ends_with(&format!("经{reviewer}审核")),
        "{}",
        ui::publisher_line(&notice)
    );
    let reviewed = footer(&notice);
    assert!(
        reviewed > office_only + 500,
        "the mark is drawn: {reviewed} dark pixels against {office_only}"
    );
}

/// The paragraph text and table cells of blocks, concatenated (continuation
/// captions and repeated header rows aside).
fn text_of<'a>(blocks: impl Iterator<Item = &'a ui::BlockView>) -> String {
    let mut out = String::new();
    let mut seen_headers = std::collections::HashSet::new();
    for b in blocks {
        match b.kind {
            ui::BlockKind::Paragraph => out.push_str(&b.text),
            ui::BlockKind::Caption if b.text.ends_with("（续）") => {}
            ui::BlockKind::Caption => out.push_str(&b.text),
            ui::BlockKind::Row if b.header && !seen_headers.insert(b.cells.clone()) => {}
            ui::BlockKind::Row | ui::BlockKind::Image => out.push_str(&b.cells.join("|")),
        }
    }
    out
}

fn check_frame(notice: &Notice, frame: &Frame, what: &str) {
    let (width, height) = (frame.width, frame.height);
    // The header band carries the category, in the urgent colour for urgent notices.
    let band = if notice.priority == gongkai::protocol::Priority::Urgent {
        URGENT
    } else {
        BAND
    };
    assert_eq!(frame.pixel(2, 2), band, "{what}: header band");
    // The page is paper-coloured where nothing is drawn.
    assert_eq!(
        frame.pixel(width - 3, height / 2),
        PAPER,
        "{what}: page background"
    );
    // The title (large, bold, dark) is drawn just below the band.
    let u = ui::scale_for(width, height);
    let (band_bottom, title_bottom) = ((112.0 * u) as u32, ((112.0 + 36.0 + 70.0) * u) as u32);
    assert!(
        frame.dark_in_rows(band_bottom, title_bottom) > 500,
        "{what}: title ink"
    );
    // The footer is on the page, so nothing pushed it off: its QR code decodes.
    if let Some(url) = &notice.qr_url {
        let gray = frame.luma();
        let mut prepared =
            rqrr::PreparedImage::prepare_from_greyscale(gray.width, gray.height, |x, y| {
                gray.data[y * gray.width + x]
            });
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1, "{what}: one QR code");
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(&content, url, "{what}: QR code");
    }
}

#[test]
fn png_encoding_round_trips_dimensions() {
    let png = ui::png(&[255u8; 4 * 8 * 4], 8, 4).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // IHDR: width and height, big-endian, after the 8-byte signature and 8-byte chunk header.
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 8);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 4);
}

/// The kiosk's own views drawn headless, in both orientations: the home
/// screen's buttons and the urgent banner, then a category's list.
fn kiosk_home_and_list_render_in_both_orientations() {
    use gongkai::config::Mode;
    use gongkai::ui::{Controller, FeedbackKind, HeadlessWindow, Screen, Setup, Snapshot};
    use slint::ComponentHandle;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let store = common::sample_store(dir.path());
    let items = common::held_items(&store);
    // Notice bodies come from the UI's I/O task, as on a screen.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (task, io) = gongkai::ui_io::UiIoTask::new(
        store.clone(),
        None,
        std::sync::Arc::new(tokio::sync::Notify::new()),
        cancel.clone(),
    );
    runtime.spawn(task.run());
    for (width, height) in [(1920, 1080), (1080, 1920)] {
        let window = HeadlessWindow::new(width, height).unwrap();
        let controller = Controller::new(
            window.ui(),
            Setup {
                mode: Mode::Kiosk,
                screen: gongkai::schedule::Audience::new(
                    gongkai::demo::DEMO_SCREEN,
                    gongkai::demo::DEMO_COMMUNITY,
                ),
                title: "历下区示范社区".into(),
                io: io.clone(),
                dwell: Duration::from_secs(12),
                idle: Duration::from_secs(60),
                slot_done: Box::new(|_| {}),
                played: Box::new(|_| {}),
                feedback_interval: None,
                clock: gongkai::ui::controller::system_clock(),
            },
        )
        .unwrap();
        controller.update(Snapshot {
            items: items.clone(),
            ..Snapshot::default()
        });
        let screen = window.ui().global::<Screen>();
        screen.invoke_open_home();
        let home = Frame {
            rgba: window.render(),
            width,
            height,
        };
        keep(&home, &format!("kiosk-home-{width}x{height}.png"));
        let what = format!("home at {width}x{height}");
        let urgent = [0xa4, 0x00, 0x1d];
        let banner_rows = (0..height / 3)
            .filter(|&y| home.pixel(2, y) == urgent && home.pixel(width - 3, y) == urgent)
            .count();
        assert!(
            banner_rows > 40,
            "{what}: the urgent banner ({banner_rows} rows)"
        );
        // Six buttons: their fill covers a good share of the screen.
        let tile = [0xee, 0xf3, 0xf9];
        let tiles = (0..height)
            .step_by(4)
            .flat_map(|y| (0..width).step_by(4).map(move |x| (x, y)))
            .filter(|&(x, y)| home.pixel(x, y) == tile)
            .count();
        assert!(
            tiles * 16 > (width * height) as usize / 4,
            "{what}: the category buttons"
        );
        screen.invoke_open_tile("finance".into());
        let list = Frame {
            rgba: window.render(),
            width,
            height,
        };
        keep(&list, &format!("kiosk-list-{width}x{height}.png"));
        // The feedback flow's first step: three faces, each in its colour.
        screen.invoke_open_entry(
            gongkai::demo::DEMO_COMMUNITY.into(),
            "2026q3-finance".into(),
            1,
        );
        controller.settle(Duration::from_secs(10)).unwrap();
        screen.invoke_open_feedback(FeedbackKind::Rating);
        let rate = Frame {
            rgba: window.render(),
            width,
            height,
        };
        keep(&rate, &format!("kiosk-rate-{width}x{height}.png"));
        for tint in [[0x1b, 0x6e, 0x3a], [0x1f, 0x4e, 0x79], [0xa4, 0x00, 0x1d]] {
            let drawn = (0..height)
                .step_by(2)
                .flat_map(|y| (0..width).step_by(2).map(move |x| (x, y)))
                .filter(|&(x, y)| rate.pixel(x, y) == tint)
                .count();
            assert!(
                drawn > 500,
                "rating at {width}x{height}: face {tint:?} ({drawn})"
            );
        }
        screen.invoke_fb_rate(3);
        screen.invoke_fb_contact(true);
        let keypad = Frame {
            rgba: window.render(),
            width,
            height,
        };
        keep(&keypad, &format!("kiosk-keypad-{width}x{height}.png"));
        screen.invoke_open_lookup();
        keep(
            &Frame {
                rgba: window.render(),
                width,
                height,
            },
            &format!("kiosk-lookup-{width}x{height}.png"),
        );
        assert!(
            list.dark_in_rows(250, 600) > 3000,
            "list at {width}x{height}: an entry's title is drawn"
        );
    }
}

fn keep(frame: &Frame, name: &str) {
    if let Ok(dir) = std::env::var("GONGKAI_RENDER_DIR") {
        let png = ui::png(&frame.rgba, frame.width, frame.height).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}
