//! A kiosk's views: home with a button per category, lists (a category's
//! active notices, or the archive), an opened notice with its pages, the
//! feedback flow, and the idle timeout back to the rotation. What to list is
//! [`crate::schedule`]'s (active set, archive, banner); what the feedback
//! flow does is [`super::feedback`]'s. This file turns taps into those
//! decisions and pushes the result into the UI.

use std::rc::Rc;

use slint::{ComponentHandle, TimerMode};
use time::OffsetDateTime;

use super::controller::{Controller, ListKind, View, post};
use super::feedback::{About, Effect, Failed, Input, Kind, Press, Step};
use super::notice::Purpose;
use super::{Entry, FbStep, FeedbackKind, Reason, Screen, Tile, date, set_rows};
use crate::protocol::Category;
use crate::schedule::{self, Item, Key};
use crate::ui_io::LoadedNotice;

impl Controller {
    pub(super) fn touched(self: &Rc<Self>) {
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
        // An unfinished submission is dropped: nothing was committed.
        self.state.borrow_mut().opened_from = None;
        self.flow_input(Input::Reset);
        self.set_view(View::Rotation);
        self.show_slot();
    }

    pub(super) fn open_home(self: &Rc<Self>) {
        if !self.kiosk() {
            return;
        }
        self.page_timer.stop();
        self.touched();
        if self.view() == View::Feedback {
            self.flow_input(Input::Reset);
        }
        self.fill_home();
        self.set_view(View::Home);
        tracing::info!("kiosk: home screen opened");
    }

    pub(super) fn fill_home(&self) {
        let now = OffsetDateTime::now_utc();
        let state = self.state.borrow();
        let items = &state.snapshot.items;
        let active = schedule::active_set(items, &self.setup.screen, now);
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
            count: count(schedule::archive(items, &self.setup.screen, now).len()).into(),
        });
        let screen = self.ui.global::<Screen>();
        set_rows(screen.get_tiles(), tiles, |m| screen.set_tiles(m));
    }

    pub(super) fn open_tile(self: &Rc<Self>, key: &str) {
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

    pub(super) fn fill_list(&self, kind: ListKind) {
        let now = OffsetDateTime::now_utc();
        let state = self.state.borrow();
        let items = &state.snapshot.items;
        let (title, items): (String, Vec<&Item>) = match kind {
            ListKind::Category(c) => (
                c.label_zh().to_owned(),
                schedule::active_set(items, &self.setup.screen, now)
                    .into_iter()
                    .filter(|i| i.category == c)
                    .collect(),
            ),
            ListKind::Archive => (
                "往期公开".to_owned(),
                schedule::archive(items, &self.setup.screen, now),
            ),
        };
        let entries: Vec<Entry> = items
            .iter()
            .map(|i| Entry {
                scope: i.scope.as_str().into(),
                id: i.id.as_str().into(),
                version: i32::try_from(i.version).unwrap_or(i32::MAX),
                title: i.title.as_str().into(),
                // A street office's or district's notice names its publisher
                // (section 3.7): residents tell it from their committee's.
                detail: format!(
                    "{}{} · 公开期限：{} 至 {}",
                    match i.scope == self.setup.screen.community {
                        true => String::new(),
                        false => format!("{} · ", i.publisher),
                    },
                    i.category.label_zh(),
                    date(i.valid_from),
                    date(i.valid_until)
                )
                .into(),
                mark: schedule::archive_mark(i, now)
                    .map_or("", |m| m.label_zh())
                    .into(),
            })
            .collect();
        let screen = self.ui.global::<Screen>();
        screen.set_list_title(format!("{title} · {} 条", entries.len()).into());
        set_rows(screen.get_entries(), entries, |m| screen.set_entries(m));
    }

    /// Asks for a notice version; it opens when it arrives.
    pub(super) fn open_entry(self: &Rc<Self>, key: Key, from: Option<ListKind>) {
        self.touched();
        let from = from.or(match self.view() {
            View::List(kind) => Some(kind),
            _ => None,
        });
        self.request(key, Purpose::Open(from));
    }

    /// A notice opened on the kiosk arrived from the I/O task.
    pub(super) fn opened(self: &Rc<Self>, loaded: LoadedNotice, from: Option<ListKind>) {
        // Another notice opened over one that was open: that one's play ends.
        let before = {
            let mut state = self.state.borrow_mut();
            state.opened_from = from;
            let before = state.opened.take();
            state.opened = Some(super::controller::Opened {
                key: loaded.key.clone(),
                started_at: OffsetDateTime::now_utc(),
                started: (self.setup.clock)(),
                pages: Default::default(),
            });
            before
        };
        if let Some(before) = before {
            self.touch_played(before);
        }
        self.page_timer.stop();
        // The view first: paging measures the page as it will be shown.
        self.set_view(View::Notice);
        self.show_loaded(loaded, 0);
    }

    pub(super) fn open_banner(self: &Rc<Self>) {
        if !self.kiosk() {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let urgent = {
            let state = self.state.borrow();
            schedule::urgent_banner(&state.snapshot.items, &self.setup.screen, now).map(Item::key)
        };
        if let Some(key) = urgent {
            self.open_entry(key, None);
        }
    }

    pub(super) fn turn(self: &Rc<Self>, by: isize) {
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

    pub(super) fn back(self: &Rc<Self>) {
        self.touched();
        if self.view() == View::Feedback {
            self.flow_input(Input::Back);
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

    // --- feedback -------------------------------------------------------------

    /// Starts a rating or objection of the notice on screen, or an opinion.
    pub(super) fn open_feedback(self: &Rc<Self>, kind: FeedbackKind) {
        if !self.kiosk() {
            return;
        }
        self.touched();
        let kind = match kind {
            FeedbackKind::Rating => Kind::Rating,
            FeedbackKind::Objection => Kind::Objection,
            FeedbackKind::Opinion => Kind::Opinion,
        };
        let about = self.state.borrow().shown.as_ref().map(|s| About {
            key: s.key.clone(),
            title: s.notice.title.clone(),
            category: s.notice.category,
        });
        self.flow_input(Input::Open { kind, about });
    }

    pub(super) fn open_lookup(self: &Rc<Self>) {
        if !self.kiosk() {
            return;
        }
        self.touched();
        self.flow_input(Input::OpenLookup);
    }

    pub(super) fn fb_rate(self: &Rc<Self>, rating: i32) {
        self.touched();
        self.flow_input(Input::Rate(rating));
    }

    pub(super) fn fb_toggle(self: &Rc<Self>, code: &str) {
        self.touched();
        self.flow_input(Input::Toggle(code.to_owned()));
    }

    pub(super) fn fb_next(self: &Rc<Self>) {
        self.touched();
        self.flow_input(Input::Next);
    }

    pub(super) fn fb_contact(self: &Rc<Self>, leave: bool) {
        self.touched();
        self.flow_input(Input::Contact(leave));
    }

    pub(super) fn fb_key(self: &Rc<Self>, key: &str) {
        self.touched();
        match Press::parse(key) {
            Some(press) => self.flow_input(Input::Key(press)),
            None => tracing::warn!("unknown key {key:?}"),
        }
    }

    /// Hands `input` to the flow and carries out what it decides.
    fn flow_input(self: &Rc<Self>, input: Input) {
        let now = (self.setup.clock)();
        let effect = self.flow.borrow_mut().on(input, now);
        let id = self.id;
        match effect {
            Effect::Nothing => {}
            Effect::Show => self.show_flow(),
            Effect::Submit { ticket, submission } => {
                self.show_flow();
                self.setup.io.submit(submission, move |answer| {
                    let receipt = answer.map(|item| item.receipt).map_err(|_| Failed);
                    post(id, move |c| {
                        c.flow_input(Input::Committed { ticket, receipt })
                    });
                });
            }
            Effect::Lookup { ticket, receipt } => {
                self.show_flow();
                self.setup.io.find_reply(receipt, move |answer| {
                    let reply = answer.map_err(|_| Failed);
                    post(id, move |c| c.flow_input(Input::LookedUp { ticket, reply }));
                });
            }
            Effect::OpenReply(key) => self.open_entry(key, None),
            Effect::Leave { to_notice } => {
                if to_notice && self.state.borrow().shown.is_some() {
                    self.set_view(View::Notice);
                    self.reshow();
                } else {
                    self.open_home();
                }
            }
        }
    }

    /// Pushes the flow's state into the UI, and shows the feedback view.
    fn show_flow(&self) {
        let flow = self.flow.borrow();
        let screen = self.ui.global::<Screen>();
        screen.set_fb_step(match flow.step() {
            Step::Rate => FbStep::Rate,
            Step::Reasons => FbStep::Reasons,
            Step::Privacy => FbStep::Privacy,
            Step::Keypad => FbStep::Keypad,
            Step::Submitting => FbStep::Submitting,
            Step::Done => FbStep::Done,
            Step::Lookup => FbStep::Lookup,
            Step::Searching => FbStep::Searching,
            Step::Answer => FbStep::Answer,
            Step::Wait => FbStep::Wait,
        });
        screen.set_fb_title(flow.title().into());
        screen.set_fb_prompt(flow.prompt().into());
        screen.set_fb_message(flow.message().into());
        screen.set_fb_entry(flow.entry().into());
        screen.set_fb_receipt(flow.receipt().into());
        screen.set_fb_answer(flow.answer().into());
        let reasons: Vec<Reason> = flow
            .reasons()
            .iter()
            .map(|r| Reason {
                code: r.code.into(),
                label: r.label.into(),
                selected: r.selected,
            })
            .collect();
        set_rows(screen.get_fb_reasons(), reasons, |m| {
            screen.set_fb_reasons(m)
        });
        drop(flow);
        if self.view() != View::Feedback {
            self.page_timer.stop();
            self.set_view(View::Feedback);
        }
    }
}
