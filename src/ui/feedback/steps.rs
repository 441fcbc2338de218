//! The vocabulary of the feedback flow: what it is told ([`Input`]), what
//! it asks for ([`Effect`]) and where it is ([`Step`]). Plain data, no slint:
//! the controller maps it to the UI's enums.

use crate::protocol::Category;
use crate::schedule::Key;
use crate::ui_io::Submission;

/// What a resident gives feedback on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rating,
    Objection,
    Opinion,
}

impl Kind {
    /// The kind on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rating => "rating",
            Kind::Objection => "objection",
            Kind::Opinion => "opinion",
        }
    }
}

/// The step on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Rate,
    Reasons,
    Privacy,
    Keypad,
    /// Waiting for the outbox's owner to commit.
    Submitting,
    Done,
    Lookup,
    /// Waiting for the owner to look the receipt up.
    Searching,
    Answer,
    /// The rate limit holds a new submission back.
    Wait,
}

/// The notice a rating or an objection is about.
#[derive(Debug, Clone, PartialEq)]
pub struct About {
    pub key: Key,
    pub title: String,
    pub category: Category,
}

/// A key of a keypad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    Char(char),
    Delete,
    Confirm,
}

impl Press {
    /// A key as the UI names it: a character, "删除" or "确定".
    pub fn parse(key: &str) -> Option<Press> {
        let mut chars = key.chars();
        match (key, chars.next(), chars.next()) {
            ("删除", _, _) => Some(Press::Delete),
            ("确定", _, _) => Some(Press::Confirm),
            (_, Some(c), None) if c.is_ascii_alphanumeric() => Some(Press::Char(c)),
            _ => None,
        }
    }
}

/// The I/O task could not do it (it logged why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// 评价 or 异议 on the notice shown (`about`), or 意见建议 from home.
    Open {
        kind: Kind,
        about: Option<About>,
    },
    /// 查询答复.
    OpenLookup,
    /// A face: 1 不满意, 2 基本满意, 3 满意.
    Rate(i32),
    /// A preset reason chosen or unchosen, by code.
    Toggle(String),
    /// 下一步 under the reasons.
    Next,
    /// 留下号码 (`true`) or 不留号码，直接提交.
    Contact(bool),
    Key(Press),
    /// The outbox's owner answered submission `ticket`: the receipt, once
    /// committed.
    Committed {
        ticket: u64,
        receipt: Result<String, Failed>,
    },
    /// The owner answered lookup `ticket`: the reply notice, if any.
    LookedUp {
        ticket: u64,
        reply: Result<Option<Key>, Failed>,
    },
    /// 返回 or 完成.
    Back,
    /// The kiosk went idle, or home: an unfinished draft is dropped.
    Reset,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Nothing to show (an answer nobody waits for any more, a stray tap).
    Nothing,
    /// Show the flow as it is now.
    Show,
    /// Show the flow, and have the owner commit this; answer with
    /// [`Input::Committed`] and the same ticket.
    Submit { ticket: u64, submission: Submission },
    /// Show the flow, and have the owner look `receipt` up; answer with
    /// [`Input::LookedUp`].
    Lookup { ticket: u64, receipt: String },
    /// Open this reply notice: the lookup found it.
    OpenReply(Key),
    /// Leave the flow: back to the notice it was about, or home.
    Leave { to_notice: bool },
}
