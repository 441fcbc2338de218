//! The kiosk's feedback flow (PROTOCOL.md section 7) as a pure state machine:
//! a rating of the notice shown with preset reasons, an objection (异议), an
//! opinion (意见建议); an optional phone number after a privacy notice; the
//! receipt; and 查询答复, the office's reply found by receipt code.
//!
//! [`Flow::on`] takes an [`Input`] (a tap, or an answer of the daemon's I/O
//! task) and the UI's monotonic time, changes the flow's state and returns
//! the [`Effect`] the controller carries out. It must stay free of slint, I/O
//! and clocks, so every step is tested here without a UI.

use std::time::Duration;

use crate::protocol::Category;
use crate::protocol::feedback::is_mobile_number;
use crate::protocol::notice::is_receipt_code;
use crate::schedule::Key;
use crate::store::outbox::Submission;

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

/// A preset reason as the screen lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub code: &'static str,
    pub label: &'static str,
    pub selected: bool,
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

/// The reason of its own a rating of each kind of notice offers besides the
/// common ones.
fn own_reason(category: Category) -> (&'static str, &'static str) {
    match category {
        Category::Finance => ("amounts", "金额有疑问"),
        Category::Reply => ("not-solved", "问题未解决"),
        Category::Government => ("how-to-apply", "不清楚如何办理"),
        Category::Services => ("not-notified", "通知不够及时"),
        Category::Affairs => ("process", "希望公开决策过程"),
    }
}

pub const TOO_SOON: &str = "操作过于频繁，请稍后再试。";
const NOT_OPEN: &str = "本屏暂未开通意见提交，请联系社区工作人员。";
const NOT_COMMITTED: &str = "提交失败，请稍后再试，或联系社区工作人员。";
const CHOOSE_ONE: &str = "请至少选择一项。";
const BAD_NUMBER: &str = "请输入以 1 开头的 11 位手机号码。";
const BAD_RECEIPT: &str = "回执码为 6 位数字或字母，请核对后重新输入。";
const LOOKUP_FAILED: &str = "暂时无法查询，请稍后再试。";
const PHONE_DIGITS: usize = 11;
const RECEIPT_CHARS: usize = 6;

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
                    "回执码 {} 尚未答复。社区将在 10 个工作日内答复，请稍后再查。",
                    self.entry
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
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(20);
    const T0: Duration = Duration::from_secs(1000);

    fn about(category: Category) -> About {
        About {
            key: ("2026q3-finance".into(), 3),
            title: "2026年第三季度社区财务收支公开".into(),
            category,
        }
    }

    fn open(flow: &mut Flow, kind: Kind, now: Duration) -> Effect {
        flow.on(
            Input::Open {
                kind,
                about: Some(about(Category::Finance)),
            },
            now,
        )
    }

    fn typed(flow: &mut Flow, keys: &str, now: Duration) {
        for c in keys.chars() {
            assert_eq!(flow.on(Input::Key(Press::Char(c)), now), Effect::Show);
        }
    }

    fn labels(flow: &Flow) -> Vec<&str> {
        flow.reasons().iter().map(|r| r.label).collect()
    }

    /// Submits a rating of 不满意 without a number; returns the ticket.
    fn submit_rating(flow: &mut Flow, now: Duration) -> u64 {
        open(flow, Kind::Rating, now);
        flow.on(Input::Rate(1), now);
        flow.on(Input::Toggle("error".into()), now);
        flow.on(Input::Next, now);
        match flow.on(Input::Contact(false), now) {
            Effect::Submit { ticket, .. } => ticket,
            other => panic!("not submitted: {other:?}"),
        }
    }

    #[test]
    fn a_rating_with_reasons_and_a_number_walks_every_step() {
        let mut flow = Flow::new(Some(INTERVAL));
        assert_eq!(open(&mut flow, Kind::Rating, T0), Effect::Show);
        assert_eq!(flow.step(), Step::Rate);
        assert_eq!(flow.title(), "评价 · 2026年第三季度社区财务收支公开");
        assert_eq!(flow.receipt(), "", "no receipt before a commit");
        // A finance notice offers a reason of its own, before 其他.
        assert_eq!(
            labels(&flow),
            [
                "看不懂",
                "内容有误",
                "希望更详细",
                "公开不及时",
                "金额有疑问",
                "其他"
            ]
        );
        assert_eq!(flow.on(Input::Rate(1), T0), Effect::Show);
        assert_eq!(flow.step(), Step::Reasons);
        flow.on(Input::Toggle("error".into()), T0);
        flow.on(Input::Toggle("amounts".into()), T0);
        flow.on(Input::Toggle("late".into()), T0);
        flow.on(Input::Toggle("late".into()), T0);
        let chosen: Vec<&str> = flow
            .reasons()
            .iter()
            .filter(|r| r.selected)
            .map(|r| r.code)
            .collect();
        assert_eq!(chosen, ["error", "amounts"], "a second tap unchooses");
        flow.on(Input::Next, T0);
        assert_eq!(flow.step(), Step::Privacy);
        flow.on(Input::Contact(true), T0);
        assert_eq!(flow.step(), Step::Keypad);

        typed(&mut flow, "13812", T0);
        assert_eq!(flow.on(Input::Key(Press::Confirm), T0), Effect::Show);
        assert_eq!((flow.step(), flow.message()), (Step::Keypad, BAD_NUMBER));
        typed(&mut flow, "3412349", T0);
        assert_eq!(flow.message(), "", "typing clears the message");
        assert_eq!(flow.entry(), "13812341234", "eleven digits at most");
        flow.on(Input::Key(Press::Delete), T0);
        typed(&mut flow, "4", T0);

        let Effect::Submit { ticket, submission } = flow.on(Input::Key(Press::Confirm), T0) else {
            panic!("a valid number submits");
        };
        assert_eq!(flow.step(), Step::Submitting);
        assert!(flow.waiting());
        assert_eq!(flow.receipt(), "", "the receipt waits for the commit");
        assert_eq!(
            submission,
            Submission {
                notice: Some(("2026q3-finance".into(), 3)),
                kind: "rating".into(),
                rating: Some(1),
                reasons: vec!["error".into(), "amounts".into()],
                text: "内容有误、金额有疑问".into(),
                contact: "13812341234".into(),
            }
        );
        // A second tap while the first is committed submits nothing more.
        assert_eq!(flow.on(Input::Contact(false), T0), Effect::Nothing);

        let answered = T0 + Duration::from_millis(30);
        let effect = flow.on(
            Input::Committed {
                ticket,
                receipt: Ok("K7Q2MD".into()),
            },
            answered,
        );
        assert_eq!(effect, Effect::Show);
        assert_eq!((flow.step(), flow.receipt()), (Step::Done, "K7Q2MD"));
        assert_eq!(flow.entry(), "", "the number leaves the screen");
        assert!(!flow.waiting());
        assert_eq!(
            flow.on(Input::Back, answered),
            Effect::Leave { to_notice: true }
        );
    }

    #[test]
    fn satisfied_needs_no_reasons_and_an_objection_needs_one() {
        let mut flow = Flow::new(Some(INTERVAL));
        open(&mut flow, Kind::Rating, T0);
        flow.on(Input::Rate(7), T0);
        assert_eq!(
            flow.step(),
            Step::Privacy,
            "满意 (clamped) skips the reasons"
        );

        open(&mut flow, Kind::Objection, T0);
        assert_eq!(flow.step(), Step::Reasons);
        assert_eq!(flow.title(), "异议 · 2026年第三季度社区财务收支公开");
        assert_eq!(
            labels(&flow),
            ["数据有误", "程序不当", "涉及个人隐私", "其他"]
        );
        flow.on(Input::Next, T0);
        assert_eq!((flow.step(), flow.message()), (Step::Reasons, CHOOSE_ONE));
        flow.on(Input::Toggle("wrong-data".into()), T0);
        flow.on(Input::Next, T0);
        assert_eq!((flow.step(), flow.message()), (Step::Privacy, ""));
        let Effect::Submit { submission, .. } = flow.on(Input::Contact(false), T0) else {
            panic!("submitted");
        };
        assert_eq!(submission.kind, "objection");
        assert_eq!(submission.rating, None);
        assert_eq!(submission.contact, "");
    }

    #[test]
    fn an_opinion_is_about_no_notice_and_a_rating_needs_one() {
        let mut flow = Flow::new(Some(INTERVAL));
        let none = Input::Open {
            kind: Kind::Rating,
            about: None,
        };
        assert_eq!(flow.on(none, T0), Effect::Nothing);
        let opinion = Input::Open {
            kind: Kind::Opinion,
            about: Some(about(Category::Reply)),
        };
        flow.on(opinion, T0);
        assert_eq!((flow.step(), flow.title()), (Step::Reasons, "意见建议"));
        flow.on(Input::Toggle("environment".into()), T0);
        flow.on(Input::Next, T0);
        let Effect::Submit { submission, .. } = flow.on(Input::Contact(false), T0) else {
            panic!("submitted");
        };
        assert_eq!(submission.notice, None);
        assert_eq!(submission.reasons, ["environment"]);
        assert_eq!(flow.on(Input::Back, T0), Effect::Leave { to_notice: false });
    }

    #[test]
    fn each_kind_of_notice_has_a_rating_reason_of_its_own() {
        for (category, code) in [
            (Category::Finance, "amounts"),
            (Category::Reply, "not-solved"),
            (Category::Government, "how-to-apply"),
            (Category::Services, "not-notified"),
            (Category::Affairs, "process"),
        ] {
            let mut flow = Flow::new(Some(INTERVAL));
            let input = Input::Open {
                kind: Kind::Rating,
                about: Some(about(category)),
            };
            flow.on(input, T0);
            let codes: Vec<&str> = flow.reasons().iter().map(|r| r.code).collect();
            assert_eq!(codes[codes.len() - 2..], [code, "other"], "{category:?}");
        }
    }

    #[test]
    fn one_submission_per_twenty_seconds_on_the_uis_clock() {
        let mut flow = Flow::new(Some(INTERVAL));
        let ticket = submit_rating(&mut flow, T0);
        flow.on(
            Input::Committed {
                ticket,
                receipt: Ok("AAAAAA".into()),
            },
            T0,
        );
        flow.on(Input::Back, T0);

        // At once: the kiosk says so instead of offering the faces.
        let soon = T0 + INTERVAL - Duration::from_millis(1);
        open(&mut flow, Kind::Objection, soon);
        assert_eq!((flow.step(), flow.answer()), (Step::Wait, TOO_SOON));
        assert_eq!(
            flow.on(Input::Back, soon),
            Effect::Leave { to_notice: true }
        );

        // A draft opened before a commit answered cannot slip through: the
        // limit is checked again at submission.
        let mut racing = Flow::new(Some(INTERVAL));
        let first = submit_rating(&mut racing, T0);
        racing.on(Input::Reset, T0);
        open(&mut racing, Kind::Objection, T0);
        assert_eq!(racing.step(), Step::Reasons, "nothing committed yet");
        let late = Input::Committed {
            ticket: first,
            receipt: Ok("BBBBBB".into()),
        };
        assert_eq!(racing.on(late, T0), Effect::Nothing);
        racing.on(Input::Toggle("privacy".into()), T0);
        racing.on(Input::Next, T0);
        assert_eq!(racing.on(Input::Contact(false), soon), Effect::Show);
        assert_eq!((racing.step(), racing.message()), (Step::Privacy, TOO_SOON));

        // Twenty seconds on, it goes.
        let later = T0 + INTERVAL;
        open(&mut flow, Kind::Objection, later);
        assert_eq!(flow.step(), Step::Reasons);
        flow.on(Input::Toggle("privacy".into()), later);
        flow.on(Input::Next, later);
        assert!(matches!(
            flow.on(Input::Contact(false), later),
            Effect::Submit { .. }
        ));
    }

    #[test]
    fn a_failed_commit_says_so_and_starts_no_rate_limit() {
        let mut flow = Flow::new(Some(INTERVAL));
        let ticket = submit_rating(&mut flow, T0);
        let effect = flow.on(
            Input::Committed {
                ticket,
                receipt: Err(Failed),
            },
            T0,
        );
        assert_eq!(effect, Effect::Show);
        assert_eq!(
            (flow.step(), flow.message()),
            (Step::Privacy, NOT_COMMITTED)
        );
        assert_eq!(flow.receipt(), "");
        // The draft is kept: the resident may try again at once.
        assert!(matches!(
            flow.on(Input::Contact(false), T0),
            Effect::Submit { .. }
        ));
    }

    #[test]
    fn a_screen_without_an_outbox_refuses_with_a_message() {
        let mut flow = Flow::new(None);
        open(&mut flow, Kind::Rating, T0);
        flow.on(Input::Rate(3), T0);
        assert_eq!(flow.on(Input::Contact(false), T0), Effect::Show);
        assert_eq!((flow.step(), flow.message()), (Step::Privacy, NOT_OPEN));
    }

    #[test]
    fn an_answer_for_a_resident_who_left_changes_nothing_but_the_rate_limit() {
        let mut flow = Flow::new(Some(INTERVAL));
        let old = submit_rating(&mut flow, T0);
        flow.on(Input::Reset, T0);
        // A new draft is started before the old commit answers.
        let new = submit_rating(&mut flow, T0);
        assert_ne!(old, new);
        let late = Input::Committed {
            ticket: old,
            receipt: Ok("OLD000".into()),
        };
        assert_eq!(flow.on(late, T0), Effect::Nothing);
        assert_eq!((flow.step(), flow.receipt()), (Step::Submitting, ""));
        assert!(flow.waiting(), "still waiting for its own answer");
        flow.on(
            Input::Committed {
                ticket: new,
                receipt: Ok("NEW000".into()),
            },
            T0,
        );
        assert_eq!(flow.receipt(), "NEW000");
        // The stale commit counted: the limit runs.
        open(&mut flow, Kind::Rating, T0 + Duration::from_secs(1));
        assert_eq!(flow.step(), Step::Wait);
    }

    #[test]
    fn a_lookup_finds_a_reply_or_says_there_is_none_yet() {
        let mut flow = Flow::new(Some(INTERVAL));
        assert_eq!(flow.on(Input::OpenLookup, T0), Effect::Show);
        assert_eq!((flow.step(), flow.title()), (Step::Lookup, "查询答复"));
        typed(&mut flow, "K7Q", T0);
        flow.on(Input::Key(Press::Confirm), T0);
        assert_eq!((flow.step(), flow.message()), (Step::Lookup, BAD_RECEIPT));
        typed(&mut flow, "2MDX", T0);
        assert_eq!(flow.entry(), "K7Q2MD", "six characters at most");
        let Effect::Lookup { ticket, receipt } = flow.on(Input::Key(Press::Confirm), T0) else {
            panic!("looked up");
        };
        assert_eq!((receipt.as_str(), flow.step()), ("K7Q2MD", Step::Searching));
        let reply = ("reply-2026-10".to_owned(), 1);
        let found = Input::LookedUp {
            ticket,
            reply: Ok(Some(reply.clone())),
        };
        assert_eq!(flow.on(found, T0), Effect::OpenReply(reply));
        assert!(!flow.waiting());

        flow.on(Input::OpenLookup, T0);
        typed(&mut flow, "ABCDEF", T0);
        let Effect::Lookup { ticket, .. } = flow.on(Input::Key(Press::Confirm), T0) else {
            panic!("looked up");
        };
        let none = Input::LookedUp {
            ticket,
            reply: Ok(None),
        };
        assert_eq!(flow.on(none, T0), Effect::Show);
        assert_eq!(flow.step(), Step::Answer);
        assert!(flow.answer().contains("ABCDEF") && flow.answer().contains("尚未答复"));
        assert_eq!(flow.on(Input::Back, T0), Effect::Leave { to_notice: false });
    }

    #[test]
    fn a_failed_lookup_asks_to_try_later_and_a_stale_one_is_ignored() {
        let mut flow = Flow::new(Some(INTERVAL));
        flow.on(Input::OpenLookup, T0);
        typed(&mut flow, "ABCDEF", T0);
        let Effect::Lookup { ticket, .. } = flow.on(Input::Key(Press::Confirm), T0) else {
            panic!("looked up");
        };
        let failed = Input::LookedUp {
            ticket,
            reply: Err(Failed),
        };
        assert_eq!(flow.on(failed, T0), Effect::Show);
        assert_eq!((flow.step(), flow.message()), (Step::Lookup, LOOKUP_FAILED));
        assert_eq!(flow.entry(), "ABCDEF", "kept, to try again");

        let Effect::Lookup { ticket, .. } = flow.on(Input::Key(Press::Confirm), T0) else {
            panic!("looked up");
        };
        flow.on(Input::Reset, T0);
        let late = Input::LookedUp {
            ticket,
            reply: Ok(Some(("r".into(), 1))),
        };
        assert_eq!(flow.on(late, T0), Effect::Nothing, "nobody waits for it");
    }

    #[test]
    fn keys_outside_a_keypad_and_stray_taps_do_nothing() {
        let mut flow = Flow::new(Some(INTERVAL));
        assert_eq!(flow.on(Input::Rate(1), T0), Effect::Nothing, "no draft");
        assert_eq!(flow.on(Input::Next, T0), Effect::Nothing);
        assert_eq!(flow.on(Input::Contact(false), T0), Effect::Nothing);
        open(&mut flow, Kind::Rating, T0);
        assert_eq!(flow.on(Input::Key(Press::Char('1')), T0), Effect::Nothing);
        assert_eq!(flow.entry(), "");
        assert_eq!(Press::parse("删除"), Some(Press::Delete));
        assert_eq!(Press::parse("确定"), Some(Press::Confirm));
        assert_eq!(Press::parse("K"), Some(Press::Char('K')));
        assert_eq!(Press::parse("KK"), None);
        assert_eq!(Press::parse(""), None);
    }
}
