//! The screen on glass: Slint owns the main thread and its event loop; the
//! daemon's tokio runtime runs beside it. A feed task turns the daemon's
//! watches into [`Snapshot`]s and hands each to the UI thread with
//! `invoke_from_event_loop`; the UI answers through a channel when a rotation
//! slot has shown all its pages, and asks the daemon's [`crate::ui_io`] task
//! for notice bodies, commits and lookups.
//!
//! Without a display the same controller drives a headless window and the
//! current frame is written to a PNG file (the demo on a server, and tests).

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use slint::ComponentHandle;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::controller::{Controller, Setup, Snapshot, system_clock};
use super::{AppWindow, hhmm};
use crate::config::Config;

/// After this long without the broker the screen says it is offline.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(120);

pub use crate::daemon::UiLink as Link;

thread_local! {
    /// The controller of this (the UI) thread, reached by the feed's closures.
    static CONTROLLER: RefCell<Option<Rc<Controller>>> = const { RefCell::new(None) };
}

/// How the screen is shown.
pub enum Output<'a> {
    /// A real window (winit; linuxkms in a `kms` build without X or Wayland).
    Window,
    /// No display: frames are written to this PNG file.
    Png(&'a Path),
}

/// Whether a windowing system looks reachable: X11 or Wayland. (The KMS
/// backend needs neither.)
pub fn display_available() -> bool {
    std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty())
        || cfg!(feature = "kms")
}

/// Runs a screen: the daemon on `runtime`, the UI on this (the main) thread,
/// until `shutdown` resolves, the window is closed or a task fails (see
/// [`crate::app::run`], which owns the lifecycle).
pub fn run_screen(
    runtime: &tokio::runtime::Runtime,
    config: Config,
    output: Output<'_>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let handle = runtime.handle().clone();
    let ui_config = config.clone();
    crate::app::run(
        runtime,
        config,
        shutdown,
        Some(Box::new(move |link, stop| {
            run(&ui_config, link, &handle, stop, output)
        })),
    )
}

/// Runs the UI on this (the main) thread until the window closes or
/// `cancel` fires; the daemon's tasks keep running on `runtime`.
pub fn run(
    config: &Config,
    link: Link,
    runtime: &tokio::runtime::Handle,
    cancel: CancellationToken,
    output: Output<'_>,
) -> anyhow::Result<()> {
    let (width, height) = (config.display.width, config.display.height);
    let mut link = link;
    let screen_id = config.screen.id.clone();
    let (_, unused) = tokio::sync::mpsc::unbounded_channel();
    let screenshots = std::mem::replace(&mut link.screenshots, unused);
    let slot_done = link.slot_done.clone();
    // The UI thread beats while its event loop runs: blocked, it stops, and
    // so do the watchdog's pings (see `crate::watchdog`).
    let heartbeat = link.ui_heartbeat.clone();
    heartbeat.beat();
    let beating = slint::Timer::default();
    beating.start(
        slint::TimerMode::Repeated,
        crate::watchdog::BEAT,
        move || heartbeat.beat(),
    );
    let setup = Setup {
        mode: config.screen.mode,
        screen: config.audience(),
        title: config.display.title.clone(),
        io: link.io.clone(),
        dwell: Duration::from_secs(config.display.dwell_seconds),
        idle: Duration::from_secs(config.display.idle_seconds),
        slot_done: Box::new({
            let slot_done = slot_done.clone();
            move |key| {
                let _ = slot_done.send(crate::daemon::FromUi::SlotDone(key));
            }
        }),
        played: Box::new(move |played| {
            let _ = slot_done.send(from_ui(played));
        }),
        feedback_interval: Some(Duration::from_secs(
            config.display.feedback_interval_seconds,
        )),
        clock: system_clock(),
    };
    let start = |ui: &AppWindow| -> anyhow::Result<()> {
        let controller = Controller::new(ui, setup)?;
        CONTROLLER.with(|c| *c.borrow_mut() = Some(controller));
        runtime.spawn(answer_screenshots(screenshots, cancel.clone()));
        runtime.spawn(feed(link, screen_id.clone(), cancel.clone()));
        // Closing the event loop from the daemon's side (SIGTERM).
        let quit = cancel.clone();
        runtime.spawn(async move {
            quit.cancelled().await;
            let _ = slint::invoke_from_event_loop(|| {
                let _ = slint::quit_event_loop();
            });
        });
        Ok(())
    };
    let result = match output {
        Output::Window => {
            let ui = AppWindow::new().context(NO_DISPLAY)?;
            super::set_screen_size(&ui, width, height);
            ui.window()
                .set_size(slint::PhysicalSize::new(width, height));
            if config.display.fullscreen {
                ui.window().set_fullscreen(true);
            }
            // The layout follows the window when the window manager sizes it.
            let weak = ui.as_weak();
            let resized = slint::Timer::default();
            let laid_out = Cell::new((width, height));
            resized.start(
                slint::TimerMode::Repeated,
                Duration::from_millis(500),
                move || {
                    if let Some(ui) = weak.upgrade() {
                        follow_size(&ui, &laid_out);
                    }
                },
            );
            start(&ui)?;
            ui.show().context("showing the window")?;
            let result = slint::run_event_loop_until_quit().context("running the UI");
            drop(resized);
            result
        }
        Output::Png(path) => super::headless::run_to_png(width, height, path, start),
    };
    cancel.cancel();
    CONTROLLER.with(|c| *c.borrow_mut() = None);
    result
}

/// Keeps the design scale in step with the window's real size, in logical
/// pixels (a high-density display has a scale factor above 1). `laid_out`
/// is the size the UI was last told, kept here rather than read back.
fn follow_size(ui: &AppWindow, laid_out: &Cell<(u32, u32)>) {
    let size = ui.window().size();
    let factor = ui.window().scale_factor().max(0.1);
    let (width, height) = (
        (size.width as f32 / factor).round() as u32,
        (size.height as f32 / factor).round() as u32,
    );
    if width == 0 || height == 0 || laid_out.get() == (width, height) {
        return;
    }
    laid_out.set((width, height));
    super::set_screen_size(ui, width, height);
    CONTROLLER.with(|c| {
        if let Some(c) = c.borrow().as_ref() {
            c.resized();
        }
    });
}

/// Turns the daemon's watches into snapshots for the UI thread: on every
/// change, and when the broker has been gone long enough to say so.
/// Screenshot commands: the UI thread takes the window's frame.
async fn answer_screenshots(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<crate::daemon::ShotRequest>,
    cancel: CancellationToken,
) {
    loop {
        let reply = tokio::select! {
            _ = cancel.cancelled() => return,
            r = requests.recv() => match r { Some(r) => r, None => return },
        };
        let sent = slint::invoke_from_event_loop(move || {
            let png = CONTROLLER.with(|c| match c.borrow().as_ref() {
                Some(c) => c.screenshot_png().map_err(|e| format!("{e:#}")),
                None => Err("the UI has not started".to_owned()),
            });
            let _ = reply.send(png);
        });
        if sent.is_err() {
            return;
        }
    }
}

async fn feed(mut link: Link, screen_id: String, cancel: CancellationToken) {
    let mut slot = 0u64;
    let mut offline = Offline::new(tokio::time::Instant::now());
    let mut last: Option<Snapshot> = None;
    loop {
        let snapshot = {
            let catalog = link.catalog.borrow_and_update();
            let connected = *link.connected.borrow_and_update();
            let showing = link.showing.borrow_and_update().clone();
            offline.observe(
                connected,
                tokio::time::Instant::now(),
                OffsetDateTime::now_utc(),
            );
            Snapshot {
                items: catalog.items.values().cloned().collect(),
                showing,
                slot,
                offline: offline.text(
                    tokio::time::Instant::now(),
                    catalog.last_sync,
                    OffsetDateTime::now_utc(),
                ),
                media: *link.media.borrow_and_update(),
                dark: *link.display.borrow_and_update() == crate::schedule::Display::Quiet,
                identify: link.identify.borrow_and_update().then(|| {
                    format!(
                        "屏幕 {screen_id}\n{}",
                        if connected {
                            "已连接服务器"
                        } else {
                            "未连接服务器"
                        }
                    )
                }),
            }
        };
        if last.as_ref() != Some(&snapshot) {
            last = Some(snapshot.clone());
            let pushed = slint::invoke_from_event_loop(move || {
                CONTROLLER.with(|c| {
                    if let Some(c) = c.borrow().as_ref() {
                        c.update(snapshot);
                    }
                })
            });
            if pushed.is_err() {
                return;
            }
        }
        let wake = offline.next_change();
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = link.catalog.changed() => if r.is_err() { return },
            r = link.connected.changed() => if r.is_err() { return },
            r = link.showing.changed() => {
                if r.is_err() { return }
                // A new slot, even when it shows the same notice again.
                slot += 1;
            }
            r = link.media.changed() => if r.is_err() { return },
            r = link.display.changed() => if r.is_err() { return },
            r = link.identify.changed() => if r.is_err() { return },
            _ = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// When the screen has been without its broker long enough to say so.
struct Offline {
    /// Since when the broker has been unreachable; `None` while connected.
    since: Option<tokio::time::Instant>,
    /// The wall-clock time the connection was last up.
    last_up: Option<OffsetDateTime>,
}

impl Offline {
    fn new(start: tokio::time::Instant) -> Self {
        Offline {
            since: Some(start),
            last_up: None,
        }
    }

    fn observe(&mut self, connected: bool, now: tokio::time::Instant, wall: OffsetDateTime) {
        if connected {
            self.since = None;
            self.last_up = Some(wall);
        } else if self.since.is_none() {
            self.since = Some(now);
            self.last_up = Some(wall);
        }
    }

    /// The badge, once the broker has been unreachable for [`OFFLINE_AFTER`]:
    /// with the last sync, the later of the last commit and the last time
    /// the connection was up.
    fn text(
        &self,
        now: tokio::time::Instant,
        last_sync: Option<OffsetDateTime>,
        wall: OffsetDateTime,
    ) -> Option<String> {
        let since = self.since?;
        if now.duration_since(since) < OFFLINE_AFTER {
            return None;
        }
        Some(offline_text(self.last_up.max(last_sync), wall))
    }

    /// When the badge would appear, if the broker stays away.
    fn next_change(&self) -> Option<tokio::time::Instant> {
        let at = self.since? + OFFLINE_AFTER;
        (at > tokio::time::Instant::now()).then_some(at)
    }
}

/// "离线 · 最后同步 10:02", with the date when it was not today.
pub fn offline_text(last_sync: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    match last_sync {
        None => "离线 · 尚未同步".to_owned(),
        Some(t) => {
            let (local, today) = (t.to_offset(super::CHINA), now.to_offset(super::CHINA));
            if local.date() == today.date() {
                format!("离线 · 最后同步 {}", hhmm(t))
            } else {
                format!(
                    "离线 · 最后同步 {:02}-{:02} {}",
                    u8::from(local.month()),
                    local.day(),
                    hhmm(t)
                )
            }
        }
    }
}

/// What to do when no window can be opened: the advice depends on whether
/// this build can drive a bare screen itself.
#[cfg(feature = "kms")]
const NO_DISPLAY: &str = "cannot open a window: no display found and no usable DRM/KMS device \
     (set DISPLAY or WAYLAND_DISPLAY, check /dev/dri and the user's access to it, or run --headless)";
#[cfg(not(feature = "kms"))]
const NO_DISPLAY: &str = "cannot open a window: no display found (set DISPLAY or WAYLAND_DISPLAY, \
     build with --features kms for a bare screen, or run --headless)";

/// What the controller saw on the glass, as the daemon's rotation task
/// takes it.
fn from_ui(played: super::Played) -> crate::daemon::FromUi {
    use crate::daemon::FromUi;
    match played {
        super::Played::Page { key, page } => FromUi::SlotPage { key, page },
        super::Played::Touch {
            key,
            started_at,
            duration,
            pages_shown,
        } => FromUi::Touch(crate::store::plays::Play {
            scope: key.scope,
            notice_id: key.id,
            version: key.version,
            started_at: crate::protocol::plays::millisecond_utc(started_at),
            duration_ms: duration.as_millis() as u64,
            pages_shown,
            trigger: crate::protocol::plays::Trigger::Touch,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn offline_badge_after_two_minutes_with_the_last_sync() {
        let t0 = tokio::time::Instant::now();
        let wall = datetime!(2026-11-27 02:00 UTC);
        let mut offline = Offline::new(t0);
        offline.observe(true, t0, wall);
        assert_eq!(offline.text(t0, None, wall), None);
        assert_eq!(
            offline.next_change(),
            None,
            "no badge to wait for while connected"
        );
        // The broker goes away at 10:05 China time.
        let gone = t0 + Duration::from_secs(300);
        let gone_wall = wall + time::Duration::minutes(5);
        offline.observe(false, gone, gone_wall);
        let just_before = gone + OFFLINE_AFTER - Duration::from_secs(1);
        assert_eq!(offline.text(just_before, None, gone_wall), None);
        let after = gone + OFFLINE_AFTER;
        assert_eq!(
            offline.text(after, Some(wall), gone_wall).as_deref(),
            Some("离线 · 最后同步 10:05")
        );
        offline.observe(true, after, gone_wall);
        assert_eq!(offline.text(after, None, gone_wall), None);
    }

    #[test]
    fn offline_text_names_the_day_when_not_today() {
        let now = datetime!(2026-11-27 02:00 UTC);
        assert_eq!(offline_text(None, now), "离线 · 尚未同步");
        assert_eq!(
            offline_text(Some(datetime!(2026-11-25 01:30 UTC)), now),
            "离线 · 最后同步 11-25 09:30"
        );
    }
}
