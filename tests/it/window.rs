//! The real `gongkaid --demo` in a real window (winit on X11, software
//! renderer) under Xvfb, in both modes: a screenshot of the X screen taken
//! with `xwd` must show the page, and SIGTERM must end it cleanly. On the
//! kiosk, clicks through the X server (`xdotool`) leave an opinion and a
//! rating, and look up a reply, as a resident would by touch; what they
//! commit is read back from the screen's outbox.
//!
//! Needs `Xvfb`, `xwd` and `xdotool` (Debian's xvfb, x11-apps and xdotool).
//! Without them the tests print SKIPPED; in CI (`GONGKAI_REQUIRE_ALL=1`)
//! they fail instead. The touch positions are those of the 1280×720 demo
//! window.

use crate::common;

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Xvfb;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;

fn pixel(rgb: &[u8], x: u32, y: u32) -> [u8; 3] {
    let i = ((y * WIDTH + x) * 3) as usize;
    [rgb[i], rgb[i + 1], rgb[i + 2]]
}

/// Dark (text) pixels in a band of rows.
fn dark_in_rows(rgb: &[u8], y0: u32, y1: u32) -> usize {
    (y0..y1)
        .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
        .filter(|&(x, y)| pixel(rgb, x, y).iter().all(|&c| c < 90))
        .count()
}

fn save(rgb: &[u8], name: &str) {
    if let Ok(dir) = std::env::var("GONGKAI_RENDER_DIR") {
        let rgba: Vec<u8> = rgb
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let png = gongkai::ui::png(&rgba, WIDTH, HEIGHT).unwrap();
        std::fs::write(Path::new(&dir).join(name), png).unwrap();
    }
}

const BAND: [u8; 3] = [0x1f, 0x4e, 0x79];
const URGENT: [u8; 3] = [0xa4, 0x00, 0x1d];

/// Runs the demo on the X server, waits until a page is on screen, checks
/// the screenshot with `check`, then stops the demo with SIGTERM.
fn demo_in_window(test: &str, args: &[&str], check: impl Fn(&[u8], &Demo)) {
    let Some(x) = Xvfb::start(test, WIDTH, HEIGHT) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gongkaid.log");
    let steps = dir.path().join("gongkaid.out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gongkaid"))
        .arg("--demo")
        .args(args)
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&steps).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // The first slot is on screen once the rotation names it; give the
    // window a moment to draw it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_text().contains("rotation: showing") {
        assert!(
            Instant::now() < deadline,
            "no rotation step:\n{}",
            log_text()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "gongkaid exited:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let shot = loop {
        std::thread::sleep(Duration::from_millis(500));
        let shot = x.screenshot().2;
        let top = pixel(&shot, 4, 4);
        if top == BAND || top == URGENT || Instant::now() > deadline {
            break shot;
        }
    };
    save(&shot, &format!("{test}.png"));
    // The demo names its screen's store among its steps.
    let steps = std::fs::read_to_string(&steps).unwrap();
    let store = steps
        .split_once("caches in ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or_else(|| panic!("the demo names its store:\n{steps}"));
    check(
        &shot,
        &Demo {
            x: &x,
            store: Path::new(store.trim()),
            log: &log,
        },
    );

    // SIGTERM: the window closes and the daemon says goodbye, exit 0.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "gongkaid ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    let _ = std::fs::File::open(&log).unwrap().read_to_string(&mut rest);
    assert!(status.success(), "gongkaid exited with {status}:\n{rest}");
}

#[test]
fn led_demo_draws_a_page_in_a_real_window() {
    demo_in_window("led-window", &[], |shot, _| {
        // The header band (blue, or red for an urgent notice) across the top,
        // the paper below it, the title and body as dark text.
        let top = pixel(shot, 4, 4);
        assert!(top == BAND || top == URGENT, "header band, got {top:?}");
        assert_eq!(pixel(shot, WIDTH - 4, 4), top, "the band spans the window");
        assert_eq!(
            pixel(shot, 4, 120),
            [0xfd, 0xfb, 0xf7],
            "paper under the band"
        );
        assert!(dark_in_rows(shot, 80, 160) > 2000, "a title is drawn");
        assert!(dark_in_rows(shot, 160, 500) > 4000, "a body is drawn");
    });
}

/// What a check gets of the running demo.
struct Demo<'a> {
    x: &'a Xvfb,
    /// The screen's SQLite store, which holds the kiosk's outbox.
    store: &'a Path,
    log: &'a Path,
}

impl Demo<'_> {
    /// A touch: a click through the X server at `(x, y)` of the window,
    /// which fills the X screen.
    fn tap(&self, x: u32, y: u32) {
        let status = Command::new("xdotool")
            .args(["mousemove", &x.to_string(), &y.to_string(), "click", "1"])
            .env("DISPLAY", &self.x.display)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the daemon's log holds `n` lines containing `text`.
    fn wait_for_log(&self, text: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(self.log).unwrap_or_default();
            if log.matches(text).count() >= n {
                return;
            }
            assert!(Instant::now() < deadline, "no {text:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const TILE: [u8; 3] = [0xee, 0xf3, 0xf9];
/// The kiosk's bar of buttons on a notice page.
const BAR: [u8; 3] = [0xee, 0xf1, 0xf5];
const BUTTON: [u8; 3] = BAND;
/// The rim and face of the 满意 button.
const SATISFIED: [u8; 3] = [0x1b, 0x6e, 0x3a];

/// Pixels of `colour`, sampled every 4 pixels.
fn count(rgb: &[u8], colour: [u8; 3]) -> usize {
    (0..HEIGHT)
        .step_by(4)
        .flat_map(|y| (0..WIDTH).step_by(4).map(move |x| (x, y)))
        .filter(|&(x, y)| pixel(rgb, x, y) == colour)
        .count()
}

/// Where the keys of the receipt keypad are at 1280×720: eleven columns of
/// 0–9 and the Crockford letters, in three rows.
fn receipt_key(c: char) -> (u32, u32) {
    let i = "0123456789ABCDEFGHJKMNPQRSTVWXYZ".find(c).unwrap() as u32;
    (82 + (i % 11) * 1115 / 10, 300 + (i / 11) * 104)
}

/// Where the keys of the phone keypad are at 1280×720: 1–5 and 6–0.
fn phone_key(c: char) -> (u32, u32) {
    let i = "1234567890".find(c).unwrap() as u32;
    (149 + (i % 5) * 245, 302 + (i / 5) * 104)
}

/// A resident at the kiosk, in a real window, by clicks through the X
/// server: a touch opens the home screen; 意见建议 with a topic and no
/// number gives a receipt, committed to the outbox; 意见建议 again at once
/// is refused (one submission per 20 s); 查询答复 with the code of the
/// sample reply opens that reply, and once the 20 s have passed its 评价
/// with 满意 and a phone number typed on the keypad gives a second receipt.
#[test]
fn kiosk_demo_takes_feedback_by_touch_in_a_real_window() {
    demo_in_window("kiosk-window", &["--kiosk"], |shot, demo| {
        let top = pixel(shot, 4, 4);
        assert!(top == BAND || top == URGENT, "header band, got {top:?}");
        // The kiosk's hint bar (触摸屏幕…) sits between the body and the footer.
        let bar_rows = (300..HEIGHT)
            .filter(|&y| pixel(shot, 2, y) == BAND && pixel(shot, WIDTH - 2, y) == BAND)
            .count();
        assert!(bar_rows >= 40, "a band-coloured hint bar, {bar_rows} rows");
        assert!(dark_in_rows(shot, 80, 160) > 2000, "a title is drawn");

        if !common::tools("the kiosk's touches", &["xdotool"]) {
            return;
        }
        let x = demo.x;
        let outbox = || {
            gongkai::store::outbox::Outbox::open_read_only(demo.store)
                .unwrap()
                .pending(10)
                .unwrap()
        };
        assert!(outbox().is_empty());

        // A touch anywhere: the home screen and its category tiles.
        demo.tap(WIDTH / 2, HEIGHT / 2);
        let home = wait_for_frame(x, |rgb| count(rgb, TILE) > 5000);
        save(&home, "kiosk-window-home.png");

        // 意见建议, the left button under the tiles: its topics, no tile.
        demo.tap(WIDTH / 4, 628);
        let topics = wait_for_frame(x, |rgb| count(rgb, TILE) == 0);
        save(&topics, "kiosk-window-feedback.png");
        assert!(
            dark_in_rows(&topics, 80, 400) > 2000,
            "the topics are drawn"
        );
        // 环境卫生 (top left) is chosen: filled with the band colour.
        demo.tap(332, 210);
        wait_for_frame(x, |rgb| pixel(rgb, 60, 190) == BUTTON);
        // 下一步, then the privacy notice's 不留号码，直接提交.
        demo.tap(1194, 656);
        let privacy = wait_for_frame(x, |rgb| pixel(rgb, 912, 640) == BUTTON);
        save(&privacy, "kiosk-window-privacy.png");
        demo.tap(912, 656);
        demo.wait_for_log(" committed (", 1);
        // The kiosk's 20 s between submissions count from about here.
        let committed_at = Instant::now();
        let receipt = wait_for_frame(x, |rgb| dark_in_rows(rgb, 330, 460) > 2000);
        save(&receipt, "kiosk-window-receipt.png");
        let items = outbox();
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].kind, "opinion");
        assert_eq!(items[0].reasons, ["environment"]);
        assert_eq!(items[0].contact, "");
        let log = std::fs::read_to_string(demo.log).unwrap();
        assert!(
            log.contains(&format!("feedback {} committed", items[0].receipt)),
            "{log}"
        );

        // 完成, back home; 意见建议 again at once is too soon: a message and
        // only 完成, no topics.
        demo.tap(640, 563);
        wait_for_frame(x, |rgb| count(rgb, TILE) > 5000);
        demo.tap(WIDTH / 4, 628);
        let refused = wait_for_frame(x, |rgb| {
            count(rgb, TILE) == 0 && pixel(rgb, 640, 431) == BUTTON
        });
        save(&refused, "kiosk-window-too-soon.png");
        assert!(
            dark_in_rows(&refused, 180, 260) == 0,
            "no topics are offered"
        );
        demo.tap(640, 431);
        wait_for_frame(x, |rgb| count(rgb, TILE) > 5000);

        // 查询答复 with the code of the sample reply opens it.
        demo.tap(WIDTH * 3 / 4, 628);
        wait_for_frame(x, |rgb| count(rgb, BUTTON) > 10000 && count(rgb, TILE) == 0);
        for c in "K7Q2MD".chars() {
            let (kx, ky) = receipt_key(c);
            demo.tap(kx, ky);
        }
        let typed = wait_for_frame(x, |rgb| dark_in_rows(rgb, 180, 230) > 300);
        save(&typed, "kiosk-window-lookup.png");
        demo.tap(1194, 656);
        // A notice page: no keypad, and the kiosk's bar of buttons
        // (返回 … 评价 异议 首页) over the footer.
        let reply = wait_for_frame(x, |rgb| {
            count(rgb, BUTTON) < 10000 && pixel(rgb, 4, 510) == BAR
        });
        save(&reply, "kiosk-window-reply.png");
        assert!(dark_in_rows(&reply, 150, 360) > 4000, "the reply is drawn");

        // Once 20 s have passed since the opinion, 评价 on the reply offers
        // the faces.
        std::thread::sleep(Duration::from_secs(21).saturating_sub(committed_at.elapsed()));
        demo.tap(938, 548);
        let faces = wait_for_frame(x, |rgb| count(rgb, SATISFIED) > 20);
        save(&faces, "kiosk-window-rate.png");
        // 满意, then 留下号码 and eleven digits on the keypad, 确定提交.
        demo.tap(218, 430);
        wait_for_frame(x, |rgb| pixel(rgb, 294, 640) == BUTTON);
        demo.tap(294, 656);
        wait_for_frame(x, |rgb| pixel(rgb, 149, 280) == BUTTON);
        for c in "13812341234".chars() {
            let (kx, ky) = phone_key(c);
            demo.tap(kx, ky);
        }
        let number = wait_for_frame(x, |rgb| dark_in_rows(rgb, 180, 230) > 300);
        save(&number, "kiosk-window-phone.png");
        demo.tap(1189, 656);
        demo.wait_for_log(" committed (", 2);
        let receipt = wait_for_frame(x, |rgb| dark_in_rows(rgb, 330, 460) > 2000);
        save(&receipt, "kiosk-window-receipt-2.png");
        let items = outbox();
        assert_eq!(items.len(), 2, "{items:?}");
        let rating = &items[1];
        assert_eq!(rating.kind, "rating");
        assert_eq!(rating.rating, Some(3));
        assert_eq!(rating.notice_id.as_deref(), Some("reply-2026-10"));
        assert_eq!(rating.contact, "13812341234");
        assert_ne!(rating.receipt, items[0].receipt);
        // The number stays in the outbox row: never in the log.
        let log = std::fs::read_to_string(demo.log).unwrap();
        assert!(!log.contains("13812341234"));
        assert!(log.contains(&format!("feedback {} committed", rating.receipt)));
        // The reply the resident opened and read is a touch play in the
        // proof-of-play chain, ended when 评价 took it off the glass.
        crate::common::eventually("a touch play of the reply", || {
            gongkai::store::plays::PlayLog::open(demo.store)
                .and_then(|l| l.records(1, 10_000))
                .unwrap_or_default()
                .iter()
                .any(|r| {
                    r.trigger == gongkai::protocol::plays::Trigger::Touch
                        && r.notice_id == "reply-2026-10"
                        && r.pages_shown >= 1
                })
        });
    });
}

/// Screenshots until `ok` holds (or 10 s pass, then the last one).
fn wait_for_frame(x: &Xvfb, ok: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let shot = x.screenshot().2;
        if ok(&shot) {
            return shot;
        }
        assert!(
            Instant::now() < deadline,
            "the window did not change as expected"
        );
    }
}
