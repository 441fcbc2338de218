//! Every step of the feedback flow, without Slint: the rate limit on a mock
//! clock, lookups, failures and answers that arrive too late.

use super::*;
use crate::protocol::Category;

const INTERVAL: Duration = Duration::from_secs(20);
const T0: Duration = Duration::from_secs(1000);

fn key(id: &str, version: u64) -> Key {
    Key {
        scope: "lixia-demo".into(),
        id: id.into(),
        version,
    }
}

fn about(category: Category) -> About {
    About {
        key: key("2026q3-finance", 3),
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
            notice: Some(key("2026q3-finance", 3)),
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
    let reply = key("reply-2026-10", 1);
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
        reply: Ok(Some(key("r", 1))),
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
