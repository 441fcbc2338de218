//! What the screen shows, on the UI thread: the rotation's pages on their
//! dwell times, and on a kiosk the home screen, lists, opened notices and the
//! idle timeout back to the rotation.
//!
//! The daemon decides *which* notice a rotation slot shows (see
//! [`crate::schedule::Rotation`]); the controller pages it, shows every page
//! for its dwell time and then says the slot is done. It reads notice bodies
//! from its own read-only connection to the store and never writes.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::Duration;

use anyhow::Context;
use slint::{ComponentHandle, Timer, TimerMode};
use time::OffsetDateTime;

use super::paging::{page_chars, paginate};
use super::{
    AppWindow, BlockView, Entry, Images, PageView, Reason, Screen, Tile, apply, body_blocks,
};
use super::{date, hhmm, set_rows};
use crate::config::Mode;
use crate::media::MediaCache;
use crate::protocol::{Category, Notice, Priority, Status};
use crate::schedule::{self, Item, Key};
use crate::store::Store;
use crate::store::outbox::{Outbox, Submission};

/// What the controller needs to know of its screen.
pub struct Setup {
    pub mode: Mode,
    pub screen: String,
    /// The name on the kiosk's home screen.
    pub title: String,
    pub store: PathBuf,
    pub media: Option<MediaCache>,
    /// The base dwell time of a page (denser pages stay longer).
    pub dwell: Duration,
    /// Without a touch for this long, a kiosk returns to the rotation.
    pub idle: Duration,
    /// Told when the rotation's notice has shown all its pages.
    pub slot_done: Box<dyn Fn(Key)>,
    /// Where residents' feedback goes (kiosks); `None` hides nothing but
    /// refuses submissions with a message.
    pub feedback: Option<FeedbackSink>,
}

/// The outbox the kiosk commits feedback to, and who to tell.
pub struct FeedbackSink {
    /// The screen's store file, which holds the outbox.
    pub store: PathBuf,
    /// Wakes the sync task after a commit.
    pub wake: Box<dyn Fn()>,
    /// At most one submission per this long on this kiosk.
    pub min_interval: Duration,
}

/// A submission being made on the kiosk.
#[derive(Debug, Clone, Default)]
struct Draft {
    kind: &'static str,
    notice: Option<Key>,
    rating: Option<u8>,
    reasons: Vec<(&'static str, &'static str, bool)>,
    /// Where to go when done: the notice it is about, or home.
    from_notice: bool,
}

const RATING_REASONS: [(&str, &str); 5] = [
    ("unclear", "看不懂"),
    ("error", "内容有误"),
    ("more-detail", "希望更详细"),
    ("late", "公开不及时"),
    ("other", "其他"),
];
const OBJECTION_REASONS: [(&str, &str); 4] = [
    ("wrong-data", "数据有误"),
    ("improper-procedure", "程序不当"),
    ("privacy", "涉及个人隐私"),
    ("other", "其他"),
];
const OPINION_REASONS: [(&str, &str); 6] = [
    ("environment", "环境卫生"),
    ("parking", "停车管理"),
    ("safety", "治安安全"),
    ("services", "便民服务"),
    ("repairs", "设施维修"),
    ("other", "其他"),
];

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

/// A notice on the glass: its pages at this screen's size, and which one shows.
struct Shown {
    key: Key,
    notice: Notice,
    images: Images,
    /// Some image is not in the cache yet.
    waiting_for_media: bool,
    frame: PageView,
    pages: Vec<Vec<BlockView>>,
    page: usize,
}

#[derive(Default)]
struct State {
    view: Option<View>,
    snapshot: Snapshot,
    /// The rotation slot on screen, or last on screen.
    slot: Option<(Key, u64)>,
    shown: Option<Shown>,
    /// The list a kiosk notice was opened from, for 返回.
    opened_from: Option<ListKind>,
    banner: String,
    draft: Option<Draft>,
    /// What is typed on the keypad.
    entry: String,
}

pub struct Controller {
    ui: AppWindow,
    setup: Setup,
    store: Store,
    state: RefCell<State>,
    page_timer: Timer,
    idle_timer: Timer,
    clock_timer: Timer,
    /// Runs after a submission: while it runs, the kiosk takes no other.
    cooldown: Timer,
    outbox: RefCell<Option<Outbox>>,
}

const PLACEHOLDER_TITLE: &str = "暂无公开内容";

impl Controller {
    /// Takes over `ui`: wires its callbacks and starts on an empty rotation.
    pub fn new(ui: &AppWindow, setup: Setup) -> anyhow::Result<Rc<Controller>> {
        let store = Store::open_read_only(&setup.store)
            .with_context(|| format!("opening the store {}", setup.store.display()))?;
        let screen = ui.global::<Screen>();
        screen.set_mode(setup.mode.as_str().into());
        screen.set_community(setup.title.as_str().into());
        screen.set_idle_seconds(setup.idle.as_secs() as i32);
        screen.set_banner("".into());
        screen.set_offline(false);
        let controller = Rc::new(Controller {
            ui: ui.clone_strong(),
            setup,
            store,
            state: RefCell::new(State::default()),
            page_timer: Timer::default(),
            idle_timer: Timer::default(),
            clock_timer: Timer::default(),
            cooldown: Timer::default(),
            outbox: RefCell::new(None),
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
        self.state.borrow().view.unwrap_or(View::Rotation)
    }

    /// The notice on the glass and its page (from 0) of how many.
    pub fn page(&self) -> Option<(Key, usize, usize)> {
        let state = self.state.borrow();
        let shown = state.shown.as_ref()?;
        Some((shown.key.clone(), shown.page, shown.pages.len()))
    }

    /// The window changed size: page the notice on screen afresh.
    pub fn resized(self: &Rc<Self>) {
        self.reshow();
    }

    /// Takes in what the daemon knows now.
    pub fn update(self: &Rc<Self>, snapshot: Snapshot) {
        let (new_slot, media_landed, offline) = {
            let mut state = self.state.borrow_mut();
            let new_slot =
                state.snapshot.slot != snapshot.slot || state.snapshot.showing != snapshot.showing;
            let media_landed = state.snapshot.media != snapshot.media;
            let offline = snapshot.offline.clone();
            state.snapshot = snapshot;
            (new_slot, media_landed, offline)
        };
        let screen = self.ui.global::<Screen>();
        screen.set_offline(offline.is_some());
        screen.set_offline_text(offline.unwrap_or_default().into());

        let banner_changed = self.refresh_banner();
        match self.view() {
            View::Rotation if new_slot => self.show_slot(),
            View::Home => self.fill_home(),
            View::List(kind) => self.fill_list(kind),
            _ => {}
        }
        let waiting = self
            .state
            .borrow()
            .shown
            .as_ref()
            .is_some_and(|s| s.waiting_for_media);
        if (banner_changed || (media_landed && waiting))
            && !(self.view() == View::Rotation && new_slot)
        {
            self.reshow();
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
        let weak = Rc::downgrade(self);
        let with = move |f: fn(&Rc<Controller>)| {
            let weak: Weak<Controller> = weak.clone();
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
        screen.on_open_entry(move |id, version| {
            if let Some(c) = weak.upgrade() {
                c.open_entry(&id, version.max(0) as u64, None);
            }
        });
        screen.on_open_lookup(with(|c| c.open_lookup()));
        screen.on_fb_next(with(|c| c.fb_next()));
        screen.on_open_feedback(with_arg(self, |c, kind: slint::SharedString| {
            c.open_feedback(&kind)
        }));
        screen.on_fb_rate(with_arg(self, |c, rating: i32| c.fb_rate(rating)));
        screen.on_fb_toggle(with_arg(self, |c, code: slint::SharedString| {
            c.fb_toggle(&code)
        }));
        screen.on_fb_contact(with_arg(self, |c, leave: bool| c.fb_contact(leave)));
        screen.on_fb_key(with_arg(self, |c, key: slint::SharedString| c.fb_key(&key)));
    }

    fn kiosk(&self) -> bool {
        self.setup.mode == Mode::Kiosk
    }

    fn set_view(&self, view: View) {
        self.state.borrow_mut().view = Some(view);
        let name = match view {
            View::Rotation => "rotation",
            View::Home => "home",
            View::List(_) => "list",
            View::Notice => "notice",
            View::Feedback => "feedback",
        };
        self.ui.global::<Screen>().set_view(name.into());
    }

    fn tick_clock(&self) {
        let clock = hhmm(OffsetDateTime::now_utc());
        let screen = self.ui.global::<Screen>();
        if screen.get_clock() != clock.as_str() {
            screen.set_clock(clock.into());
        }
    }

    // --- the rotation -------------------------------------------------------

    /// Shows the rotation's current slot from its first page.
    fn show_slot(self: &Rc<Self>) {
        let (showing, slot) = {
            let state = self.state.borrow();
            (state.snapshot.showing.clone(), state.snapshot.slot)
        };
        self.page_timer.stop();
        self.state.borrow_mut().slot = showing.clone().map(|k| (k, slot));
        let Some(key) = showing else {
            self.show_placeholder();
            return;
        };
        match self.load(&key) {
            Ok(notice) => {
                self.show_notice(key, notice, 0);
                self.schedule_page();
            }
            Err(e) => {
                tracing::warn!("cannot show {} v{}: {e:#}", key.0, key.1);
                // Say the slot is done, so the rotation moves on.
                (self.setup.slot_done)(key);
            }
        }
    }

    fn show_placeholder(&self) {
        self.state.borrow_mut().shown = None;
        let view = PageView {
            category: "社区公开".into(),
            title: PLACEHOLDER_TITLE.into(),
            blocks: vec![BlockView::text(
                "paragraph",
                "当前没有正在公开的内容。往期公开内容可在触摸屏上查阅，或咨询社区居委会。",
            )],
            publisher: String::new(),
            window: String::new(),
            contact: String::new(),
            qr_url: None,
            page: String::new(),
            clock: hhmm(OffsetDateTime::now_utc()),
            offline: None,
            urgent: false,
        };
        self.apply_page(&view, &Images::default());
    }

    /// Starts the timer of the page on screen: the next page after its dwell
    /// time, and after the last page the slot is done.
    fn schedule_page(self: &Rc<Self>) {
        let dwell = {
            let state = self.state.borrow();
            let Some(shown) = state.shown.as_ref() else {
                return;
            };
            schedule::page_dwell(self.setup.dwell, page_chars(&shown.pages[shown.page]))
        };
        let weak = Rc::downgrade(self);
        self.page_timer
            .start(TimerMode::SingleShot, dwell, move || {
                if let Some(c) = weak.upgrade() {
                    c.page_elapsed();
                }
            });
    }

    fn page_elapsed(self: &Rc<Self>) {
        if self.view() != View::Rotation {
            return;
        }
        let next = {
            let state = self.state.borrow();
            state
                .shown
                .as_ref()
                .map(|s| (s.page + 1 < s.pages.len(), s.key.clone(), s.page))
        };
        match next {
            Some((true, _, page)) => {
                self.show_page(page + 1);
                self.schedule_page();
            }
            Some((false, key, _)) => (self.setup.slot_done)(key),
            None => {}
        }
    }

    // --- showing a notice ---------------------------------------------------

    fn load(&self, key: &Key) -> anyhow::Result<Notice> {
        let envelope = self
            .store
            .envelope(&key.0, key.1)?
            .context("the store does not hold it")?;
        crate::preview::notice_of(&envelope)
    }

    /// The images of a notice that are in the cache, decoded to fit the page.
    fn images_of(&self, notice: &Notice) -> (Images, bool) {
        let Some(cache) = &self.setup.media else {
            return (Images::default(), false);
        };
        let size = self.ui.window().size();
        super::load_images(notice, cache, size.width.max(320), size.height.max(320))
    }

    /// Pages `notice` for the view on screen and shows page `page`.
    fn show_notice(&self, key: Key, notice: Notice, page: usize) {
        let now = OffsetDateTime::now_utc();
        let (images, waiting_for_media) = self.images_of(&notice);
        let mut frame = PageView::new(&notice, Vec::new(), 1, 1, now, None);
        frame.offline = None;
        let mark = self.mark_of(&key, now);
        self.ui.global::<Screen>().set_mark(mark.into());
        self.apply_page(&frame, &images);
        let pages = paginate(&self.ui, &frame, &body_blocks(&notice, &images));
        let page = page.min(pages.len() - 1);
        self.state.borrow_mut().shown = Some(Shown {
            key,
            notice,
            images,
            waiting_for_media,
            frame,
            pages,
            page,
        });
        self.show_page(page);
    }

    /// Shows the current notice again, paged afresh (the banner or an image
    /// changed the room it has), on the same page where it can.
    fn reshow(self: &Rc<Self>) {
        let shown = self.state.borrow_mut().shown.take();
        match shown {
            Some(shown) => self.show_notice(shown.key, shown.notice, shown.page),
            None if self.view() == View::Rotation => self.show_placeholder(),
            None => {}
        }
    }

    fn show_page(&self, page: usize) {
        let (view, images) = {
            let mut state = self.state.borrow_mut();
            let Some(shown) = state.shown.as_mut() else {
                return;
            };
            shown.page = page;
            let count = shown.pages.len();
            let view = PageView {
                blocks: shown.pages[page].clone(),
                page: format!("第 {}/{count} 页", page + 1),
                clock: hhmm(OffsetDateTime::now_utc()),
                ..shown.frame.clone()
            };
            let screen = self.ui.global::<Screen>();
            screen.set_can_prev(page > 0);
            screen.set_can_next(page + 1 < count);
            (view, shown.images.clone())
        };
        self.apply_page(&view, &images);
    }

    fn apply_page(&self, view: &PageView, images: &Images) {
        if let Err(e) = apply(&self.ui, view, images) {
            tracing::warn!("cannot show the page: {e:#}");
        }
        // The offline badge is the daemon's, not the page's.
        let state = self.state.borrow();
        let screen = self.ui.global::<Screen>();
        screen.set_offline(state.snapshot.offline.is_some());
        screen.set_offline_text(state.snapshot.offline.clone().unwrap_or_default().into());
    }

    /// "已撤回" or "已过期" for a notice no longer shown in the rotation.
    fn mark_of(&self, key: &Key, now: OffsetDateTime) -> &'static str {
        let state = self.state.borrow();
        match state.snapshot.items.iter().find(|i| i.id == key.0) {
            Some(item) if item.version == key.1 => archive_mark(item, now),
            _ => "",
        }
    }

    /// Sets the urgent banner from the active set; says whether it changed.
    fn refresh_banner(&self) -> bool {
        let now = OffsetDateTime::now_utc();
        let banner = {
            let state = self.state.borrow();
            schedule::active_set(state.snapshot.items.iter(), &self.setup.screen, now)
                .into_iter()
                .find(|i| i.priority == Priority::Urgent)
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

    // --- the kiosk ----------------------------------------------------------

    fn touched(self: &Rc<Self>) {
        if !self.kiosk() {
            return;
        }
        let weak = Rc::downgrade(self);
        self.idle_timer
            .start(TimerMode::SingleShot, self.setup.idle, move || {
                if let Some(c) = weak.upgrade() {
                    c.idle();
                }
            });
    }

    /// Nobody touched the kiosk for a while: back to the rotation.
    fn idle(self: &Rc<Self>) {
        if self.view() == View::Rotation {
            return;
        }
        tracing::info!("kiosk idle: back to the rotation");
        {
            // An unfinished submission is dropped: nothing was committed.
            let mut state = self.state.borrow_mut();
            state.opened_from = None;
            state.draft = None;
            state.entry.clear();
        }
        self.set_view(View::Rotation);
        self.show_slot();
    }

    fn open_home(self: &Rc<Self>) {
        if !self.kiosk() {
            return;
        }
        self.page_timer.stop();
        self.touched();
        self.fill_home();
        self.set_view(View::Home);
    }

    fn fill_home(&self) {
        let now = OffsetDateTime::now_utc();
        let state = self.state.borrow();
        let active = schedule::active_set(state.snapshot.items.iter(), &self.setup.screen, now);
        let count = |n: usize| {
            if n == 0 {
                "暂无".to_owned()
            } else {
                format!("{n} 条")
            }
        };
        let mut tiles: Vec<Tile> = Category::ALL
            .iter()
            .map(|c| Tile {
                key: c.as_str().into(),
                label: c.label_zh().into(),
                count: count(active.iter().filter(|i| i.category == *c).count()).into(),
            })
            .collect();
        tiles.push(Tile {
            key: "archive".into(),
            label: "往期公开".into(),
            count: count(archive(&state.snapshot.items, &self.setup.screen, now).len()).into(),
        });
        let screen = self.ui.global::<Screen>();
        set_rows(screen.get_tiles(), tiles, |m| screen.set_tiles(m));
    }

    fn open_tile(self: &Rc<Self>, key: &str) {
        let kind = match key {
            "archive" => ListKind::Archive,
            other => match Category::parse(other) {
                Some(c) => ListKind::Category(c),
                None => {
                    tracing::warn!("unknown tile {other:?}");
                    return;
                }
            },
        };
        self.touched();
        self.fill_list(kind);
        self.set_view(View::List(kind));
    }

    fn fill_list(&self, kind: ListKind) {
        let now = OffsetDateTime::now_utc();
        let state = self.state.borrow();
        let (title, items): (String, Vec<&Item>) = match kind {
            ListKind::Category(c) => (
                c.label_zh().to_owned(),
                schedule::active_set(state.snapshot.items.iter(), &self.setup.screen, now)
                    .into_iter()
                    .filter(|i| i.category == c)
                    .collect(),
            ),
            ListKind::Archive => (
                "往期公开".to_owned(),
                archive(&state.snapshot.items, &self.setup.screen, now),
            ),
        };
        let entries: Vec<Entry> = items
            .iter()
            .map(|i| Entry {
                id: i.id.as_str().into(),
                version: i32::try_from(i.version).unwrap_or(i32::MAX),
                title: i.title.as_str().into(),
                detail: format!(
                    "{} · 公开期限：{} 至 {}",
                    i.category.label_zh(),
                    date(i.valid_from),
                    date(i.valid_until)
                )
                .into(),
                mark: archive_mark(i, now).into(),
            })
            .collect();
        let screen = self.ui.global::<Screen>();
        screen.set_list_title(format!("{title} · {} 条", entries.len()).into());
        set_rows(screen.get_entries(), entries, |m| screen.set_entries(m));
    }

    fn open_entry(self: &Rc<Self>, id: &str, version: u64, from: Option<ListKind>) {
        self.touched();
        let key = (id.to_owned(), version);
        let notice = match self.load(&key) {
            Ok(notice) => notice,
            Err(e) => {
                tracing::warn!("cannot open {id} v{version}: {e:#}");
                return;
            }
        };
        let from = from.or(match self.view() {
            View::List(kind) => Some(kind),
            _ => None,
        });
        self.state.borrow_mut().opened_from = from;
        self.page_timer.stop();
        // The view first: paging measures the page as it will be shown.
        self.set_view(View::Notice);
        self.show_notice(key, notice, 0);
    }

    fn open_banner(self: &Rc<Self>) {
        if !self.kiosk() {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let urgent = {
            let state = self.state.borrow();
            schedule::active_set(state.snapshot.items.iter(), &self.setup.screen, now)
                .into_iter()
                .find(|i| i.priority == Priority::Urgent)
                .map(Item::key)
        };
        if let Some((id, version)) = urgent {
            self.open_entry(&id, version, None);
        }
    }

    fn turn(self: &Rc<Self>, by: isize) {
        if self.view() != View::Notice {
            return;
        }
        self.touched();
        let target = {
            let state = self.state.borrow();
            state.shown.as_ref().and_then(|s| {
                let page = s.page.checked_add_signed(by)?;
                (page < s.pages.len()).then_some(page)
            })
        };
        if let Some(page) = target {
            self.show_page(page);
        }
    }

    fn back(self: &Rc<Self>) {
        self.touched();
        if self.view() == View::Feedback {
            let draft = self.state.borrow_mut().draft.take();
            if draft.is_some_and(|d| d.from_notice) && self.state.borrow().shown.is_some() {
                self.set_view(View::Notice);
                self.reshow();
            } else {
                self.open_home();
            }
            return;
        }
        let from = self.state.borrow_mut().opened_from.take();
        match from {
            Some(kind) => {
                self.fill_list(kind);
                self.set_view(View::List(kind));
            }
            None => self.open_home(),
        }
    }
}

impl Controller {
    // --- feedback -------------------------------------------------------------

    fn fb_screen(&self, step: &str, message: &str) {
        let screen = self.ui.global::<Screen>();
        screen.set_fb_step(step.into());
        screen.set_fb_message(message.into());
        let state = self.state.borrow();
        screen.set_fb_entry(state.entry.as_str().into());
        if let Some(draft) = &state.draft {
            let reasons: Vec<Reason> = draft
                .reasons
                .iter()
                .map(|(code, label, selected)| Reason {
                    code: (*code).into(),
                    label: (*label).into(),
                    selected: *selected,
                })
                .collect();
            set_rows(screen.get_fb_reasons(), reasons, |m| {
                screen.set_fb_reasons(m)
            });
        }
    }

    /// Starts a rating or objection of the notice on screen, or an opinion.
    fn open_feedback(self: &Rc<Self>, kind: &str) {
        if !self.kiosk() {
            return;
        }
        self.touched();
        let (kind, presets, prompt): (&'static str, &[(&'static str, &'static str)], &str) =
            match kind {
                "rating" => ("rating", &RATING_REASONS, "哪些方面需要改进？（可多选）"),
                "objection" => (
                    "objection",
                    &OBJECTION_REASONS,
                    "您对哪方面有异议？（可多选）",
                ),
                _ => (
                    "opinion",
                    &OPINION_REASONS,
                    "您的意见建议是关于：（可多选）",
                ),
            };
        let shown = match kind {
            "opinion" => None,
            _ => self
                .state
                .borrow()
                .shown
                .as_ref()
                .map(|s| (s.key.clone(), s.notice.title.clone(), s.notice.category)),
        };
        // Each kind of notice has a reason of its own besides the common ones.
        let mut presets: Vec<(&'static str, &'static str)> = presets.to_vec();
        if kind == "rating" {
            let own = match shown.as_ref().map(|s| s.2) {
                Some(Category::Finance) => Some(("amounts", "金额有疑问")),
                Some(Category::Reply) => Some(("not-solved", "问题未解决")),
                Some(Category::Government) => Some(("how-to-apply", "不清楚如何办理")),
                Some(Category::Services) => Some(("not-notified", "通知不够及时")),
                Some(Category::Affairs) => Some(("process", "希望公开决策过程")),
                None => None,
            };
            if let Some(own) = own {
                presets.insert(presets.len() - 1, own);
            }
        }
        let notice = shown.map(|(key, title, _)| (key, title));
        if kind != "opinion" && notice.is_none() {
            return;
        }
        let screen = self.ui.global::<Screen>();
        let title = match (&notice, kind) {
            (Some((_, t)), "rating") => format!("评价 · {t}"),
            (Some((_, t)), _) => format!("异议 · {t}"),
            _ => "意见建议".to_owned(),
        };
        screen.set_fb_title(title.into());
        screen.set_fb_prompt(prompt.into());
        {
            let mut state = self.state.borrow_mut();
            state.entry.clear();
            state.draft = Some(Draft {
                kind,
                from_notice: notice.is_some(),
                notice: notice.map(|(k, _)| k),
                rating: None,
                reasons: presets.iter().map(|(c, l)| (*c, *l, false)).collect(),
            });
        }
        self.page_timer.stop();
        self.set_view(View::Feedback);
        if self.cooldown.running() {
            self.fb_screen("wait", "");
            screen.set_fb_answer("操作过于频繁，请稍后再试。".into());
            return;
        }
        self.fb_screen(if kind == "rating" { "rate" } else { "reasons" }, "");
    }

    fn fb_rate(self: &Rc<Self>, rating: i32) {
        self.touched();
        let rating = rating.clamp(1, 3) as u8;
        if let Some(draft) = self.state.borrow_mut().draft.as_mut() {
            draft.rating = Some(rating);
        }
        // 满意 needs no reasons.
        self.fb_screen(if rating == 3 { "privacy" } else { "reasons" }, "");
    }

    fn fb_toggle(self: &Rc<Self>, code: &str) {
        self.touched();
        if let Some(draft) = self.state.borrow_mut().draft.as_mut() {
            for reason in &mut draft.reasons {
                if reason.0 == code {
                    reason.2 = !reason.2;
                }
            }
        }
        self.fb_screen("reasons", "");
    }

    fn fb_next(self: &Rc<Self>) {
        self.touched();
        let ok = self
            .state
            .borrow()
            .draft
            .as_ref()
            .is_some_and(|d| d.kind == "rating" || d.reasons.iter().any(|r| r.2));
        if ok {
            self.fb_screen("privacy", "");
        } else {
            self.fb_screen("reasons", "请至少选择一项。");
        }
    }

    fn fb_contact(self: &Rc<Self>, leave: bool) {
        self.touched();
        if leave {
            self.state.borrow_mut().entry.clear();
            self.fb_screen("keypad", "");
        } else {
            self.fb_submit(String::new());
        }
    }

    fn fb_key(self: &Rc<Self>, key: &str) {
        self.touched();
        let lookup = self.ui.global::<Screen>().get_fb_step() == "lookup";
        let step = if lookup { "lookup" } else { "keypad" };
        match key {
            "删除" => {
                self.state.borrow_mut().entry.pop();
                self.fb_screen(step, "");
            }
            "确定" => {
                let entry = self.state.borrow().entry.clone();
                if lookup {
                    self.lookup(&entry);
                } else if crate::protocol::feedback::is_mobile_number(&entry) {
                    self.fb_submit(entry);
                } else {
                    self.fb_screen(step, "请输入以 1 开头的 11 位手机号码。");
                }
            }
            key => {
                let max = if lookup { 6 } else { 11 };
                {
                    let mut state = self.state.borrow_mut();
                    if state.entry.chars().count() < max {
                        state.entry.push_str(key);
                    }
                }
                self.fb_screen(step, "");
            }
        }
    }

    /// Commits the draft to the outbox; the receipt shows only after that.
    fn fb_submit(self: &Rc<Self>, contact: String) {
        let Some(draft) = self.state.borrow().draft.clone() else {
            return;
        };
        let Some(sink) = &self.setup.feedback else {
            self.fb_screen("privacy", "本屏暂未开通意见提交，请联系社区工作人员。");
            return;
        };
        if self.cooldown.running() {
            self.fb_screen("privacy", "操作过于频繁，请稍后再试。");
            return;
        }
        let chosen: Vec<&(&str, &str, bool)> = draft.reasons.iter().filter(|r| r.2).collect();
        let submission = Submission {
            notice: draft.notice.clone(),
            kind: draft.kind.to_owned(),
            rating: draft.rating,
            reasons: chosen.iter().map(|r| r.0.to_owned()).collect(),
            text: chosen.iter().map(|r| r.1).collect::<Vec<_>>().join("、"),
            contact,
        };
        let result = {
            let mut outbox = self.outbox.borrow_mut();
            if outbox.is_none() {
                *outbox = Outbox::open(&sink.store).ok();
            }
            match outbox.as_mut() {
                Some(outbox) => outbox.submit(submission, OffsetDateTime::now_utc()),
                None => Err(crate::store::StoreError::Refused(
                    "the outbox cannot be opened".into(),
                )),
            }
        };
        match result {
            Ok(item) => {
                tracing::info!("feedback {} committed ({})", item.receipt, item.kind);
                (sink.wake)();
                self.cooldown
                    .start(TimerMode::SingleShot, sink.min_interval, || {});
                self.ui
                    .global::<Screen>()
                    .set_fb_receipt(item.receipt.as_str().into());
                self.state.borrow_mut().entry.clear();
                self.fb_screen("done", "");
            }
            Err(e) => {
                tracing::error!("feedback not committed: {e}");
                self.fb_screen("privacy", "提交失败，请稍后再试，或联系社区工作人员。");
            }
        }
    }

    fn open_lookup(self: &Rc<Self>) {
        if !self.kiosk() {
            return;
        }
        self.touched();
        {
            let mut state = self.state.borrow_mut();
            state.entry.clear();
            state.draft = None;
        }
        self.ui.global::<Screen>().set_fb_title("查询答复".into());
        self.page_timer.stop();
        self.set_view(View::Feedback);
        self.fb_screen("lookup", "");
    }

    /// Finds the reply notice that answers `code`, or says there is none yet.
    fn lookup(self: &Rc<Self>, code: &str) {
        if !crate::protocol::notice::is_receipt_code(code) {
            self.fb_screen("lookup", "回执码为 6 位数字或字母，请核对后重新输入。");
            return;
        }
        match self.store.reply_for(code) {
            Ok(Some((id, version))) => self.open_entry(&id, version, None),
            Ok(None) => {
                self.ui.global::<Screen>().set_fb_answer(
                    format!("回执码 {code} 尚未答复。社区将在 10 个工作日内答复，请稍后再查。")
                        .into(),
                );
                self.fb_screen("answer", "");
            }
            Err(e) => {
                tracing::warn!("reply lookup failed: {e}");
                self.fb_screen("lookup", "暂时无法查询，请稍后再试。");
            }
        }
    }
}

/// Notices no longer shown that residents may still look up: withdrawn, or
/// past their window. Newest first.
fn archive<'a>(items: &'a [Item], screen: &str, now: OffsetDateTime) -> Vec<&'a Item> {
    let mut out: Vec<&Item> = items
        .iter()
        .filter(|i| i.targets(screen) && !archive_mark(i, now).is_empty())
        .collect();
    out.sort_by(|a, b| b.valid_until.cmp(&a.valid_until).then(a.id.cmp(&b.id)));
    out
}

fn archive_mark(item: &Item, now: OffsetDateTime) -> &'static str {
    if item.status == Status::Withdrawn {
        "已撤回"
    } else if item.valid_until <= now {
        "已过期"
    } else {
        ""
    }
}
