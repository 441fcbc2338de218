//! The kiosk's feedback flow (PROTOCOL.md section 7) as a pure state machine:
//! a rating of the notice shown with preset reasons, an objection (异议), an
//! opinion (意见建议); an optional phone number after a privacy notice; the
//! receipt; and 查询答复, the office's reply found by receipt code.
//!
//! [`Flow::on`] takes an [`Input`] (a tap, or an answer of the daemon's I/O
//! task) and the UI's monotonic time, changes the flow's state and returns
//! the [`Effect`] the controller carries out. It must stay free of slint, I/O
//! and clocks, so every step is tested here without a UI.
//!
//! - this file: [`Flow`], the state and its transitions;
//! - `steps`: the vocabulary of inputs, effects and steps;
//! - `wording`: the preset reasons and what the flow says to residents.

use std::time::Duration;

use crate::protocol::feedback::is_mobile_number;
use crate::protocol::notice::is_receipt_code;
use crate::schedule::Key;
use crate::ui_io::Submission;

mod steps;
mod wording;

pub use steps::{About, Effect, Failed, Input, Kind, Press, Step};
use wording::{
    BAD_NUMBER, BAD_RECEIPT, CHOOSE_ONE, LOOKUP_FAILED, NOT_COMMITTED, NOT_OPEN, OBJECTION_REASONS,
    OPINION_REASONS, PHONE_DIGITS, RATING_REASONS, RECEIPT_CHARS, own_reason,
};
pub use wording::{Reason, TOO_SOON};

/// A submission being made.
#[derive(Debug, Clone, PartialEq)]
struct Draft {
    kind: Kind,
    notice: Option<Key>,
    rating: Option<u8>,
    reasons: Vec<Reason>,
}

/// The flow's state, and what the screen shows of it.
#[derive(Debug)]
pub struct Flow {
    /// At most one submission per this long; `None`: this screen takes none.
    min_interval: Option<Duration>,
    /// When the last submission was committed, on the UI's clock.
    last_commit: Option<Duration>,
    step: Step,
    draft: Option<Draft>,
    /// What is typed on the keypad: a phone number or a receipt code.
    entry: String,
    title: String,
    prompt: &'static str,
    message: &'static str,
    receipt: String,
    answer: String,
    /// The submission or lookup waiting for the owner's answer.
    awaiting: Option<u64>,
    tickets: u64,
}

impl Flow {
    pub fn new(min_interval: Option<Duration>) -> Self {
        Flow {
            min_interval,
            last_commit: None,
            step: Step::Rate,
            draft: None,
            entry: String::new(),
            title: String::new(),
            prompt: "",
            message: "",
            receipt: String::new(),
            answer: String::new(),
            awaiting: None,
            tickets: 0,
        }
    }

    pub fn step(&self) -> Step {
        self.step
    }
    pub fn title(&self) -> &str {
        &self.title
    }
    pub fn prompt(&self) -> &str {
        self.prompt
    }
    /// A problem to point out above the step, or "".
    pub fn message(&self) -> &str {
        self.message
    }
    pub fn entry(&self) -> &str {
        &self.entry
    }
    /// The receipt of the last commit; "" until it is committed.
    pub fn receipt(&self) -> &str {
        &self.receipt
    }
    pub fn answer(&self) -> &str {
        &self.answer
    }
    pub fn reasons(&self) -> &[Reason] {
        self.draft.as_ref().map_or(&[], |d| &d.reasons)
    }
    /// Whether an answer of the owner is awaited.
    pub fn waiting(&self) -> bool {
        self.awaiting.is_some()
    }

    /// Takes `input` at `now` (the UI's monotonic time).
    pub fn on(&mut self, input: Input, now: Duration) -> Effect {
        match input {
            Input::Open { kind, about } => self.open(kind, about, now),
            Input::OpenLookup => {
                self.reset();
                self.title = "查询答复".into();
                self.to(Step::Lookup)
            }
            Input::Rate(rating) => {
                let Some(draft) = self.draft.as_mut() else {
                    return Effect::Nothing;
                };
                let rating = rating.clamp(1, 3) as u8;
                draft.rating = Some(rating);
                // 满意 needs no reasons.
                self.to(if rating == 3 {
                    Step::Privacy
                } else {
                    Step::Reasons
                })
            }
            Input::Toggle(code) => {
                let Some(draft) = self.draft.as_mut() else {
                    return Effect::Nothing;
                };
                for reason in draft.reasons.iter_mut().filter(|r| r.code == code) {
                    reason.selected = !reason.selected;
                }
                self.to(Step::Reasons)
            }
            Input::Next => {
                let Some(draft) = &self.draft else {
                    return Effect::Nothing;
                };
                if draft.kind == Kind::Rating || draft.reasons.iter().any(|r| r.selected) {
                    self.to(Step::Privacy)
                } else {
                    self.say(Step::Reasons, CHOOSE_ONE)
                }
            }
            Input::Contact(true) => {
                self.entry.clear();
                self.to(Step::Keypad)
            }
            Input::Contact(false) => self.submit(String::new(), now),
            Input::Key(press) => self.press(press, now),
            Input::Committed { ticket, receipt } => self.committed(ticket, receipt, now),
            Input::LookedUp { ticket, reply } => self.looked_up(ticket, reply),
            Input::Back => {
                let to_notice = self.draft.as_ref().is_some_and(|d| d.notice.is_some());
                self.reset();
                Effect::Leave { to_notice }
            }
            Input::Reset => {
                self.reset();
                Effect::Nothing
            }
        }
    }

    fn rate_limited(&self, now: Duration) -> bool {
        match (self.last_commit, self.min_interval) {
            (Some(at), Some(min)) => now < at + min,
            _ => false,
        }
    }

    fn open(&mut self, kind: Kind, about: Option<About>, now: Duration) -> Effect {
        let about = match kind {
            Kind::Opinion => None,
            // A rating or objection is of the notice on screen.
            Kind::Rating | Kind::Objection => match about {
                Some(about) => Some(about),
                None => return Effect::Nothing,
            },
        };
        let (presets, prompt): (&[(&'static str, &'static str)], _) = match kind {
            Kind::Rating => (&RATING_REASONS, "哪些方面需要改进？（可多选）"),
            Kind::Objection => (&OBJECTION_REASONS, "您对哪方面有异议？（可多选）"),
            Kind::Opinion => (&OPINION_REASONS, "您的意见建议是关于：（可多选）"),
        };
        let mut presets = presets.to_vec();
        if let (Kind::Rating, Some(about)) = (kind, &about) {
            // Before 其他, which stays last.
            presets.insert(presets.len() - 1, own_reason(about.category));
        }
        self.reset();
        self.title = match (kind, &about) {
            (Kind::Rating, Some(a)) => format!("评价 · {}", a.title),
            (_, Some(a)) => format!("异议 · {}", a.title),
            (_, None) => "意见建议".to_owned(),
        };
        self.prompt = prompt;
        self.draft = Some(Draft {
            kind,
            notice: about.map(|a| a.key),
            rating: None,
            reasons: presets
                .iter()
                .map(|&(code, label)| Reason {
                    code,
                    label,
                    selected: false,
                })
                .collect(),
        });
        if self.rate_limited(now) {
            self.answer = TOO_SOON.into();
            return self.to(Step::Wait);
        }
        self.to(match kind {
            Kind::Rating => Step::Rate,
            Kind::Objection | Kind::Opinion => Step::Reasons,
        })
    }

    fn press(&mut self, press: Press, now: Duration) -> Effect {
        let max = match self.step {
            Step::Keypad => PHONE_DIGITS,
            Step::Lookup => RECEIPT_CHARS,
            _ => return Effect::Nothing,
        };
        match press {
            Press::Delete => {
                self.entry.pop();
                self.to(self.step)
            }
            Press::Char(c) => {
                if self.entry.chars().count() < max {
                    self.entry.push(c);
                }
                self.to(self.step)
            }
            Press::Confirm if self.step == Step::Lookup => self.lookup(),
            Press::Confirm if is_mobile_number(&self.entry) => {
                let contact = self.entry.clone();
                self.submit(contact, now)
            }
            Press::Confirm => self.say(Step::Keypad, BAD_NUMBER),
        }
    }

    fn submit(&mut self, contact: String, now: Duration) -> Effect {
        let Some(draft) = &self.draft else {
            return Effect::Nothing;
        };
        if self.awaiting.is_some() {
            return Effect::Nothing;
        }
        if self.min_interval.is_none() {
            return self.say(Step::Privacy, NOT_OPEN);
        }
        if self.rate_limited(now) {
            return self.say(Step::Privacy, TOO_SOON);
        }
        let chosen: Vec<&Reason> = draft.reasons.iter().filter(|r| r.selected).collect();
        let submission = Submission {
            notice: draft.notice.clone(),
            kind: draft.kind.as_str().to_owned(),
            rating: draft.rating,
            reasons: chosen.iter().map(|r| r.code.to_owned()).collect(),
            text: chosen
                .iter()
                .map(|r| r.label)
                .collect::<Vec<_>>()
                .join("、"),
            contact,
        };
        let ticket = self.ticket();
        self.to(Step::Submitting);
        Effect::Submit { ticket, submission }
    }

    fn committed(&mut self, ticket: u64, receipt: Result<String, Failed>, now: Duration) -> Effect {
        if receipt.is_ok() {
            // Committed, whether or not the resident is still here: the
            // kiosk's rate limit counts it.
            self.last_commit = Some(now);
        }
        if self.awaiting != Some(ticket) {
            return Effect::Nothing;
        }
        self.awaiting = None;
        match receipt {
            Ok(receipt) => {
                self.receipt = receipt;
                self.entry.clear();
                self.to(Step::Done)
            }
            Err(Failed) => self.say(Step::Privacy, NOT_COMMITTED),
        }
    }

    fn lookup(&mut self) -> Effect {
        if !is_receipt_code(&self.entry) {
            return self.say(Step::Lookup, BAD_RECEIPT);
        }
        let ticket = self.ticket();
        self.to(Step::Searching);
        Effect::Lookup {
            ticket,
            receipt: self.entry.clone(),
        }
    }

    fn looked_up(&mut self, ticket: u64, reply: Result<Option<Key>, Failed>) -> Effect {
        if self.awaiting != Some(ticket) {
            return Effect::Nothing;
        }
        self.awaiting = None;
        match reply {
            Ok(Some(key)) => Effect::OpenReply(key),
            Ok(None) => {
                self.answer = format!(
                    "回执码 {} 尚未答复。社区将在 {} 个工作日内答复，请稍后再查。",
                    self.entry,
                    crate::protocol::feedback::REPLY_WORKING_DAYS
                );
                self.to(Step::Answer)
            }
            Err(Failed) => self.say(Step::Lookup, LOOKUP_FAILED),
        }
    }

    fn ticket(&mut self) -> u64 {
        self.tickets += 1;
        self.awaiting = Some(self.tickets);
        self.tickets
    }

    /// Drops the draft and what was typed; an answer still on its way will
    /// find nobody waiting.
    fn reset(&mut self) {
        self.draft = None;
        self.entry.clear();
        self.message = "";
        self.receipt.clear();
        self.answer.clear();
        self.awaiting = None;
    }

    fn to(&mut self, step: Step) -> Effect {
        self.say(step, "")
    }

    fn say(&mut self, step: Step, message: &'static str) -> Effect {
        self.step = step;
        self.message = message;
        Effect::Show
    }
}

#[cfg(test)]
mod tests;
