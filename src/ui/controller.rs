//! The controller of a screen, on the UI thread: it keeps what is shown (the
//! view, the notice on the glass and its pages) and pushes it into the UI;
//! it never reads its own state back out of Slint.
//!
//! The daemon decides *which* notice a rotation slot shows (see
//! [`crate::schedule::Rotation`]). Here: the setup, the snapshot from the
//! daemon, the callbacks of the UI and the way answers of other threads
//! reach this one. `notice` asks the daemon's [`crate::ui_io`] task for a
//! notice and pages it, `rotation` shows its pages and says when the slot
//! is done, `kiosk` runs a kiosk's views, and [`super::feedback`] decides
//! the feedback flow. Nothing here reads, writes or decodes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slint::{ComponentHandle, Timer, TimerMode};
use time::OffsetDateTime;

use super::feedback::Flow;
use super::notice::{Loading, Purpose, Shown};
use super::{AppWindow, Screen, ScreenMode, ScreenView, hhmm};
use crate::config::Mode;
use crate::protocol::Category;
use crate::schedule::{self, Item, Key};
use crate::ui_io::UiIo;

/// What the controller needs to know of its screen.
pub struct Setup {
    pub mode: Mode,
    /// This screen and its community, for targeting.
    pub screen: schedule::Audience,
    /// The name on the kiosk's home screen.
    pub title: String,
    /// Where notice bodies, submissions and lookups are asked for.
    pub io: UiIo,
    /// The base dwell time of a page (denser pages stay longer).
    pub dwell: Duration,
    /// Without a touch for this long, a kiosk returns to the rotation.
    pub idle: Duration,
    /// Told when the rotation's notice has shown all its pages, or left
    /// the glass because a resident opened the kiosk.
    pub slot_done: Box<dyn Fn(Key)>,
    /// Told what residents saw, for the proof-of-play chain: each page of
    /// the rotation's notice as it shows, and each notice a resident
    /// opened on the kiosk once it leaves the glass.
    pub played: Box<dyn Fn(Played)>,
    /// At most one submission per this long on this kiosk; `None`: this
    /// screen takes no feedback (it says so when asked).
    pub feedback_interval: Option<Duration>,
    /// The UI's monotonic clock, for the rate limit: [`system_clock`] on a
    /// screen, the mock time of Slint's testing backend in tests.
    pub clock: Box<dyn Fn() -> Duration>,
}

/// Time since the call, from the system's monotonic clock.
pub fn system_clock() -> Box<dyn Fn() -> Duration> {
    let start = Instant::now();
    Box::new(move || start.elapsed())
}

/// What was on the glass, for the proof-of-play chain (PROTOCOL.md 1.1,
/// section 7). The daemon seals it into records; the UI only tells.
#[derive(Debug, Clone, PartialEq)]
pub enum Played {
    /// Page `page` (from 0) of the rotation slot's notice is on screen.
    Page { key: Key, page: usize },
    /// A notice a resident opened on the kiosk, from `started_at` for
    /// `duration`, of which `pages_shown` different pages were seen.
    Touch {
        key: Key,
        started_at: OffsetDateTime,
        duration: Duration,
        pages_shown: u32,
    },
}

/// A notice opened on the kiosk, while it is on the glass.
pub(super) struct Opened {
    pub key: Key,
    pub started_at: OffsetDateTime,
    /// On `Setup::clock`.
    pub started: Duration,
    pub pages: std::collections::BTreeSet<usize>,
}

/// What the daemon knows, pushed to the UI thread on every change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The head of every notice held.
    pub items: Vec<Item>,
    /// The rotation's notice, and the slot number: the same notice twice in
    /// a row is two slots.
    pub showing: Option<Key>,
    pub slot: u64,
    /// "离线 · 最后同步 10:02" once the broker has been unreachable for two
    /// minutes; `None` otherwise.
    pub offline: Option<String>,
    /// Counts media that landed in the cache, so a page waiting for an image
    /// shows it as soon as it arrives.
    pub media: u64,
    /// Quiet hours: the screen shows a black frame.
    pub dark: bool,
    /// `identify`: the screen's id and network state, shown over everything.
    pub identify: Option<String>,
}

/// The kiosk's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Category(Category),
    Archive,
}

/// What the screen shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Rotation,
    Home,
    List(ListKind),
    Notice,
    Feedback,
}

pub(super) struct State {
    pub view: View,
    pub snapshot: Snapshot,
    pub shown: Option<Shown>,
    /// The list a kiosk notice was opened from, for 返回.
    pub opened_from: Option<ListKind>,
    pub banner: String,
    pub clock: String,
    pub loading: Option<Loading>,
    pub tickets: u64,
    /// The notice a resident opened, while it shows.
    pub opened: Option<Opened>,
}

pub struct Controller {
    /// Names this controller to answers arriving from other threads.
    pub(super) id: u64,
    pub(super) ui: AppWindow,
    pub(super) setup: Setup,
    pub(super) state: RefCell<State>,
    pub(super) flow: RefCell<Flow>,
    pub(super) page_timer: Timer,
    pub(super) idle_timer: Timer,
    clock_timer: Timer,
}

thread_local! {
    /// The controllers of this (the UI) thread, by id: an answer carried
    /// here by `invoke_from_event_loop` finds its controller, if it lives.
    static LIVE: RefCell<HashMap<u64, Weak<Controller>>> = RefCell::new(HashMap::new());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs `f` on the UI thread with controller `id`, if it still lives. Called
/// from the I/O task's threads.
pub(super) fn post(id: u64, f: impl FnOnce(&Rc<Controller>) + Send + 'static) {
    let posted = slint::invoke_from_event_loop(move || {
        let controller = LIVE.with(|live| live.borrow().get(&id).and_then(Weak::upgrade));
        if let Some(c) = controller {
            f(&c)
        }
    });
    if let Err(e) = posted {
        tracing::debug!("an answer for the UI was dropped: {e}");
    }
}

impl Controller {
    /// Takes over `ui`: wires its callbacks and starts on an empty rotation.
    pub fn new(ui: &AppWindow, setup: Setup) -> anyhow::Result<Rc<Controller>> {
        let screen = ui.global::<Screen>();
        screen.set_mode(match setup.mode {
            Mode::Led => ScreenMode::Led,
            Mode::Kiosk => ScreenMode::Kiosk,
        });
        screen.set_community(setup.title.as_str().into());
        screen.set_idle_seconds(setup.idle.as_secs() as i32);
        screen.set_banner("".into());
        screen.set_offline(false);
        screen.set_contact_retention_days(i32::from(
            crate::protocol::feedback::CONTACT_RETENTION_DAYS,
        ));
        // The kiosk's promise is the office's rule: the same constant.
        screen.set_reply_working_days(crate::protocol::feedback::REPLY_WORKING_DAYS as i32);
        let flow = Flow::new(setup.feedback_interval);
        let controller = Rc::new(Controller {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ui: ui.clone_strong(),
            setup,
            state: RefCell::new(State {
                view: View::Rotation,
                snapshot: Snapshot::default(),
                shown: None,
                opened_from: None,
                banner: String::new(),
                clock: String::new(),
                loading: None,
                tickets: 0,
                opened: None,
            }),
            flow: RefCell::new(flow),
            page_timer: Timer::default(),
            idle_timer: Timer::default(),
            clock_timer: Timer::default(),
        });
        LIVE.with(|live| {
            live.borrow_mut()
                .insert(controller.id, Rc::downgrade(&controller))
        });
        controller.wire();
        controller.set_view(View::Rotation);
        controller.show_slot();
        let weak = Rc::downgrade(&controller);
        controller
            .clock_timer
            .start(TimerMode::Repeated, Duration::from_secs(1), move || {
                if let Some(c) = weak.upgrade() {
                    c.tick_clock();
                }
            });
        controller.tick_clock();
        Ok(controller)
    }

    /// The view on screen.
    pub fn view(&self) -> View {
        self.state.borrow().view
    }

    /// The notice on the glass and its page (from 0) of how many.
    pub fn page(&self) -> Option<(Key, usize, usize)> {
        let state = self.state.borrow();
        let shown = state.shown.as_ref()?;
        Some((shown.key.clone(), shown.page, shown.pages.len()))
    }

    /// Whether the controller waits for an answer of the I/O task (a notice
    /// body, a commit, a lookup).
    pub fn waiting(&self) -> bool {
        self.state.borrow().loading.is_some() || self.flow.borrow().waiting()
    }

    /// For tests and tools that drive the UI without running its event loop:
    /// runs the event loop until the controller waits for nothing, or
    /// `timeout` passes (an error). Never call it from inside the event loop.
    pub fn settle(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.waiting() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no answer from the UI's I/O task"
            );
            // Everything queued for this thread runs, then the loop quits.
            slint::invoke_from_event_loop(|| {
                let _ = slint::quit_event_loop();
            })?;
            slint::run_event_loop()?;
            if self.waiting() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    /// The window changed size: page the notice on screen afresh.
    pub fn resized(self: &Rc<Self>) {
        self.reshow();
    }

    /// Takes in what the daemon knows now.
    /// The frame on screen now, as residents see it, as PNG (a `screenshot`
    /// command): the window's own pixels, whatever view is open.
    pub fn screenshot_png(&self) -> anyhow::Result<Vec<u8>> {
        let shot = self.ui.window().take_snapshot()?;
        super::png(shot.as_bytes(), shot.width(), shot.height())
    }

    pub fn update(self: &Rc<Self>, snapshot: Snapshot) {
        let (new_slot, media_landed) = {
            let mut state = self.state.borrow_mut();
            let new_slot =
                state.snapshot.slot != snapshot.slot || state.snapshot.showing != snapshot.showing;
            let media_landed = state.snapshot.media != snapshot.media;
            state.snapshot = snapshot;
            (new_slot, media_landed)
        };
        self.push_offline();
        let (dark, identify) = {
            let state = self.state.borrow();
            (state.snapshot.dark, state.snapshot.identify.clone())
        };
        self.ui.global::<Screen>().set_dark(dark);
        self.ui
            .global::<Screen>()
            .set_identify(identify.unwrap_or_default().into());
        let banner_changed = self.refresh_banner();
        let view = self.view();
        match view {
            View::Rotation if new_slot => self.show_slot(),
            View::Home => self.fill_home(),
            View::List(kind) => self.fill_list(kind),
            View::Rotation | View::Notice | View::Feedback => {}
        }
        if view == View::Rotation && new_slot {
            return;
        }
        let waiting_key = self
            .state
            .borrow()
            .shown
            .as_ref()
            .filter(|s| s.waiting_for_media)
            .map(|s| s.key.clone());
        match waiting_key {
            // The notice is read again with its new image, then shown.
            Some(key) if media_landed => self.request(key, Purpose::Refresh),
            _ if banner_changed => self.reshow(),
            _ => {}
        }
    }

    fn wire(self: &Rc<Self>) {
        /// A callback of one argument that reaches the controller while it
        /// lives (the UI must not keep it alive).
        fn with_arg<A: 'static>(
            this: &Rc<Controller>,
            f: fn(&Rc<Controller>, A),
        ) -> impl Fn(A) + 'static {
            let weak = Rc::downgrade(this);
            move |a| {
                if let Some(c) = weak.upgrade() {
                    f(&c, a)
                }
            }
        }
        let screen = self.ui.global::<Screen>();
        let with = |f: fn(&Rc<Controller>)| {
            let weak: Weak<Controller> = Rc::downgrade(self);
            move || {
                if let Some(c) = weak.upgrade() {
                    f(&c)
                }
            }
        };
        screen.on_touched(with(|c| c.touched()));
        screen.on_open_home(with(|c| c.open_home()));
        screen.on_open_banner(with(|c| c.open_banner()));
        screen.on_prev_page(with(|c| c.turn(-1)));
        screen.on_next_page(with(|c| c.turn(1)));
        screen.on_back(with(|c| c.back()));
        screen.on_open_tile(with_arg(self, |c, key: slint::SharedString| {
            c.open_tile(&key)
        }));
        let weak = Rc::downgrade(self);
        screen.on_open_entry(move |scope, id, version| {
            if let Some(c) = weak.upgrade() {
                c.open_entry(
                    Key {
                        scope: scope.into(),
                        id: id.into(),
                        version: version.max(0) as u64,
                    },
                    None,
                );
            }
        });
        screen.on_open_lookup(with(|c| c.open_lookup()));
        screen.on_open_feedback(with_arg(self, |c, kind| c.open_feedback(kind)));
        screen.on_fb_next(with(|c| c.fb_next()));
        screen.on_fb_rate(with_arg(self, |c, rating: i32| c.fb_rate(rating)));
        screen.on_fb_toggle(with_arg(self, |c, code: slint::SharedString| {
            c.fb_toggle(&code)
        }));
        screen.on_fb_contact(with_arg(self, |c, leave: bool| c.fb_contact(leave)));
        screen.on_fb_key(with_arg(self, |c, key: slint::SharedString| c.fb_key(&key)));
    }

    pub(super) fn kiosk(&self) -> bool {
        self.setup.mode == Mode::Kiosk
    }

    /// Shows `view`. A notice asked for another view is no longer wanted.
    /// Leaving the rotation ends its slot (the notice is off the glass);
    /// leaving an opened notice ends its touch play, and coming back to it
    /// (from the feedback flow) begins another.
    pub(super) fn set_view(&self, view: View) {
        let (left_slot, ended) = {
            let mut state = self.state.borrow_mut();
            let old = state.view;
            if old != view {
                state.loading = state
                    .loading
                    .take()
                    .filter(|l| l.purpose == Purpose::Refresh);
            }
            state.view = view;
            let left_slot = (old == View::Rotation && view != View::Rotation)
                .then(|| state.shown.as_ref().map(|s| s.key.clone()))
                .flatten();
            let ended = match (old == View::Notice, view == View::Notice) {
                (true, false) => state.opened.take(),
                _ => None,
            };
            if old != View::Notice && view == View::Notice && state.opened.is_none() {
                let key = state.shown.as_ref().map(|s| s.key.clone());
                let page = state.shown.as_ref().map(|s| s.page);
                state.opened = key.map(|key| Opened {
                    key,
                    started_at: OffsetDateTime::now_utc(),
                    started: (self.setup.clock)(),
                    pages: page.into_iter().collect(),
                });
            }
            (left_slot, ended)
        };
        if let Some(key) = left_slot {
            (self.setup.slot_done)(key);
        }
        if let Some(opened) = ended {
            self.touch_played(opened);
        }
        self.ui.global::<Screen>().set_view(match view {
            View::Rotation => ScreenView::Rotation,
            View::Home => ScreenView::Home,
            View::List(_) => ScreenView::List,
            View::Notice => ScreenView::Notice,
            View::Feedback => ScreenView::Feedback,
        });
    }

    /// Tells the daemon of a notice a resident opened, now off the glass.
    pub(super) fn touch_played(&self, opened: Opened) {
        if opened.pages.is_empty() {
            return;
        }
        (self.setup.played)(Played::Touch {
            key: opened.key,
            started_at: opened.started_at,
            duration: (self.setup.clock)().saturating_sub(opened.started),
            pages_shown: opened.pages.len() as u32,
        });
    }

    fn tick_clock(&self) {
        let clock = hhmm(OffsetDateTime::now_utc());
        let mut state = self.state.borrow_mut();
        if state.clock != clock {
            self.ui.global::<Screen>().set_clock(clock.as_str().into());
            state.clock = clock;
        }
    }

    /// The offline badge is the daemon's: every page shows it.
    pub(super) fn push_offline(&self) {
        let state = self.state.borrow();
        let screen = self.ui.global::<Screen>();
        screen.set_offline(state.snapshot.offline.is_some());
        screen.set_offline_text(state.snapshot.offline.clone().unwrap_or_default().into());
    }

    /// Sets the urgent banner from the active set; says whether it changed.
    fn refresh_banner(&self) -> bool {
        let now = OffsetDateTime::now_utc();
        let banner = {
            let state = self.state.borrow();
            schedule::urgent_banner(&state.snapshot.items, &self.setup.screen, now)
                .map(|i| i.title.clone())
                .unwrap_or_default()
        };
        let mut state = self.state.borrow_mut();
        if state.banner == banner {
            return false;
        }
        self.ui
            .global::<Screen>()
            .set_banner(banner.as_str().into());
        state.banner = banner;
        true
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = LIVE.try_with(|live| live.borrow_mut().remove(&self.id));
    }
}
