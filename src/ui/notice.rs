//! A notice on the glass: asked of the daemon's [`crate::ui_io`] task, its
//! answer matched to the latest request (a late answer never shows
//! something stale), then paged for this screen and the view on it. Both
//! the rotation and a kiosk's opened notice come through here.

use std::rc::Rc;

use slint::ComponentHandle;
use time::OffsetDateTime;

use super::controller::{Controller, ListKind, View, post};
use super::paging::paginate;
use super::{BlockView, Images, PageView, Screen, apply, body_blocks, hhmm};
use crate::protocol::Notice;
use crate::schedule::{self, Key};
use crate::ui_io::{LoadedNotice, UiIoError};

/// A notice on the glass: its pages at this screen's size, and which one shows.
pub(super) struct Shown {
    pub key: Key,
    pub notice: Notice,
    pub images: Images,
    /// Some image is not in the cache yet.
    pub waiting_for_media: bool,
    pub frame: PageView,
    pub pages: Vec<Vec<BlockView>>,
    pub page: usize,
}

/// Why a notice was asked of the I/O task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// The rotation's slot of this number.
    Slot(u64),
    /// Opened on the kiosk (from this list, for 返回).
    Open(Option<ListKind>),
    /// The notice on screen again, now that an image it waits for landed.
    Refresh,
}

/// The notice last asked for; an answer to any earlier request is dropped.
pub(super) struct Loading {
    pub ticket: u64,
    pub key: Key,
    pub purpose: Purpose,
}

impl Controller {
    /// Asks the I/O task for notice `key`, for `purpose`; the answer goes to
    /// [`Controller::loaded`].
    pub(super) fn request(self: &Rc<Self>, key: Key, purpose: Purpose) {
        let ticket = {
            let mut state = self.state.borrow_mut();
            state.tickets += 1;
            let ticket = state.tickets;
            state.loading = Some(Loading {
                ticket,
                key: key.clone(),
                purpose,
            });
            ticket
        };
        // Images are decoded to fit the window (and not smaller than this,
        // before the window manager has sized it).
        let size = self.ui.window().size();
        let fit = (size.width.max(320), size.height.max(320));
        let id = self.id;
        self.setup.io.load(key, fit, move |answer| {
            post(id, move |c| c.loaded(ticket, answer))
        });
    }

    fn loaded(self: &Rc<Self>, ticket: u64, answer: Result<LoadedNotice, UiIoError>) {
        let loading = {
            let mut state = self.state.borrow_mut();
            match &state.loading {
                Some(l) if l.ticket == ticket => state.loading.take(),
                _ => None,
            }
        };
        // Superseded by a later request, or no longer wanted.
        let Some(Loading { key, purpose, .. }) = loading else {
            return;
        };
        let loaded = match answer {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!("cannot show {}/{} v{}: {e}", key.scope, key.id, key.version);
                if let Purpose::Slot(_) = purpose {
                    // Say the slot is done, so the rotation moves on.
                    (self.setup.slot_done)(key);
                }
                return;
            }
        };
        match purpose {
            Purpose::Slot(_) => self.slot_loaded(loaded),
            Purpose::Open(from) => self.opened(loaded, from),
            Purpose::Refresh => {
                let page = {
                    let state = self.state.borrow();
                    let shown = state.shown.as_ref().filter(|s| s.key == loaded.key);
                    shown.map(|s| s.page)
                };
                if let Some(page) = page {
                    self.show_loaded(loaded, page);
                }
            }
        }
    }

    // --- showing a notice ---------------------------------------------------

    /// Pages a notice the I/O task delivered and shows page `page`.
    pub(super) fn show_loaded(&self, loaded: LoadedNotice, page: usize) {
        let images = Images::from_decoded(&loaded.images);
        self.show_notice(
            loaded.key,
            loaded.notice,
            images,
            loaded.waiting_for_media,
            page,
        );
    }

    /// Pages `notice` for the view on screen and shows page `page`.
    fn show_notice(&self, key: Key, notice: Notice, images: Images, waiting: bool, page: usize) {
        let now = OffsetDateTime::now_utc();
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
            waiting_for_media: waiting,
            frame,
            pages,
            page,
        });
        self.show_page(page);
    }

    /// Shows the current notice again, paged afresh (the banner or the
    /// window changed the room it has), on the same page where it can.
    pub(super) fn reshow(self: &Rc<Self>) {
        let shown = self.state.borrow_mut().shown.take();
        match shown {
            Some(s) => self.show_notice(s.key, s.notice, s.images, s.waiting_for_media, s.page),
            None if self.view() == View::Rotation => self.show_placeholder(),
            None => {}
        }
    }

    pub(super) fn show_page(&self, page: usize) {
        let (view, images, slot_page) = {
            let mut state = self.state.borrow_mut();
            let on_view = state.view;
            let Some(shown) = state.shown.as_mut() else {
                return;
            };
            shown.page = page;
            let key = shown.key.clone();
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
            let images = shown.images.clone();
            // What residents see, for the proof of play.
            let slot_page = match on_view {
                View::Rotation => Some(key),
                View::Notice => {
                    if let Some(opened) = state.opened.as_mut().filter(|o| o.key == key) {
                        opened.pages.insert(page);
                    }
                    None
                }
                _ => None,
            };
            (view, images, slot_page)
        };
        self.apply_page(&view, &images);
        if let Some(key) = slot_page {
            (self.setup.played)(super::controller::Played::Page { key, page });
        }
    }

    pub(super) fn apply_page(&self, view: &PageView, images: &Images) {
        if let Err(e) = apply(&self.ui, view, images) {
            tracing::warn!("cannot show the page: {e:#}");
        }
        // The offline badge is the daemon's, not the page's.
        self.push_offline();
    }

    /// "已撤回" or "已过期" for a notice no longer shown in the rotation.
    fn mark_of(&self, key: &Key, now: OffsetDateTime) -> &'static str {
        let state = self.state.borrow();
        match state
            .snapshot
            .items
            .iter()
            .find(|i| i.scope == key.scope && i.id == key.id)
        {
            Some(item) if item.version == key.version => {
                schedule::archive_mark(item, now).map_or("", |m| m.label_zh())
            }
            _ => "",
        }
    }
}
