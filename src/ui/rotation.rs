//! The rotation on the glass: the daemon's slot, paged for this screen, each
//! page on its dwell time, and "slot done" after the last page so the
//! daemon's rotation moves on. Which notice a slot shows is the daemon's
//! decision ([`crate::schedule::Rotation`]); this file only pages it.

use std::rc::Rc;

use slint::TimerMode;
use time::OffsetDateTime;

use super::controller::{Controller, View};
use super::notice::Purpose;
use super::paging::page_chars;
use super::{BlockKind, BlockView, Images, PageView, hhmm};
use crate::schedule;
use crate::ui_io::LoadedNotice;

const PLACEHOLDER_TITLE: &str = "暂无公开内容";

impl Controller {
    /// Shows the rotation's current slot from its first page, once the I/O
    /// task has read it; the page before stays up until then.
    pub(super) fn show_slot(self: &Rc<Self>) {
        let (showing, slot) = {
            let state = self.state.borrow();
            (state.snapshot.showing.clone(), state.snapshot.slot)
        };
        self.page_timer.stop();
        match showing {
            Some(key) => self.request(key, Purpose::Slot(slot)),
            None => {
                self.state.borrow_mut().loading = None;
                self.show_placeholder();
            }
        }
    }

    /// The slot's notice arrived from the I/O task.
    pub(super) fn slot_loaded(self: &Rc<Self>, loaded: LoadedNotice) {
        if self.view() != View::Rotation {
            return;
        }
        self.show_loaded(loaded, 0);
        self.schedule_page();
    }

    pub(super) fn show_placeholder(&self) {
        self.state.borrow_mut().shown = None;
        let view = PageView {
            category: "社区公开".into(),
            title: PLACEHOLDER_TITLE.into(),
            blocks: vec![BlockView::text(
                BlockKind::Paragraph,
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
}
