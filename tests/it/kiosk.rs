//! The screen's UI driven through Slint's testing backend on mock time:
//! kiosk navigation by simulated taps and swipes, the idle timeout, rotation
//! pages on their dwell times, and the urgent banner and interruption. Notice
//! bodies, commits and lookups are answered by the real `ui_io` task on a
//! tokio runtime beside the UI, as on a screen; the receipt shows only once
//! its answer has arrived.
//!
//! The testing backend can be installed once per process, so this file holds
//! one test that walks through everything in order, in a child process of
//! the test binary (the headless renderer's platform lives in this one).

use crate::common;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gongkai::config::Mode;
use gongkai::demo::DEMO_SCREEN;
use gongkai::schedule::Key;
use gongkai::ui::controller::View;
use gongkai::ui::{AppWindow, Controller, FbStep, Played, Screen, Setup, Snapshot};
use gongkai::ui_io::UiIoTask;
use i_slint_backend_testing::{AccessibleRole, ElementHandle};
use slint::ComponentHandle;
use slint::platform::{PointerEventButton, WindowEvent};

const DWELL: Duration = Duration::from_secs(12);
const IDLE: Duration = Duration::from_secs(60);

fn screen(ui: &AppWindow) -> Screen<'_> {
    ui.global::<Screen>()
}

thread_local! {
    /// The controller under test, and the UI's clock that it reads.
    static CONTROLLER: RefCell<Option<Rc<Controller>>> = const { RefCell::new(None) };
    static NOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Advances Slint's mock clock (timers fire, pending views instantiate),
/// then lets the I/O task answer what the UI asked for.
fn advance(by: Duration) {
    NOW.set(NOW.get() + by);
    i_slint_backend_testing::mock_elapsed_time(by);
    settle();
}

/// Runs the UI's event loop until the controller waits for no answer of the
/// I/O task.
fn settle() {
    let controller = CONTROLLER.with(|c| c.borrow().clone());
    if let Some(c) = controller {
        c.settle(Duration::from_secs(10)).unwrap();
        i_slint_backend_testing::mock_elapsed_time(Duration::ZERO);
    }
}

/// The visible button labelled `label`.
fn button(ui: &AppWindow, label: &str) -> ElementHandle {
    advance(Duration::ZERO);
    ElementHandle::find_by_accessible_label(ui, label)
        .filter(|e| {
            matches!(
                e.accessible_role(),
                Some(AccessibleRole::Button | AccessibleRole::Checkbox)
            )
        })
        .find(|e| e.size().width > 0.0 && e.size().height > 0.0)
        .unwrap_or_else(|| {
            panic!(
                "no button {label:?} on the {:?} view",
                screen(ui).get_view()
            )
        })
}

/// A tap on the button labelled `label`, and the I/O task's answers to it.
fn tap(ui: &AppWindow, label: &str) {
    press(ui, label);
    settle();
}

/// A finger down and up in the middle of the button labelled `label`; what
/// it asks of the I/O task is not answered yet.
fn press(ui: &AppWindow, label: &str) {
    let element = button(ui, label);
    let (p, s) = (element.absolute_position(), element.size());
    assert!(
        s.width >= 60.0 && s.height >= 60.0,
        "{label:?} is {}×{}, under 60×60",
        s.width,
        s.height
    );
    let at = slint::LogicalPosition::new(p.x + s.width / 2.0, p.y + s.height / 2.0);
    let window = ui.window();
    window.dispatch_event(WindowEvent::PointerPressed {
        position: at,
        button: PointerEventButton::Left,
    });
    window.dispatch_event(WindowEvent::PointerReleased {
        position: at,
        button: PointerEventButton::Left,
    });
    // Mock time stands still: views instantiate, answers wait.
    i_slint_backend_testing::mock_elapsed_time(Duration::ZERO);
}

/// A finger dragged horizontally across the middle of the page by `dx`.
fn swipe(ui: &AppWindow, dx: f32) {
    let window = ui.window();
    let from = slint::LogicalPosition::new(960.0, 500.0);
    let to = slint::LogicalPosition::new(960.0 + dx, 500.0);
    window.dispatch_event(WindowEvent::PointerPressed {
        position: from,
        button: PointerEventButton::Left,
    });
    for step in 1..=4 {
        window.dispatch_event(WindowEvent::PointerMoved {
            position: slint::LogicalPosition::new(960.0 + dx * step as f32 / 4.0, 500.0),
        });
    }
    window.dispatch_event(WindowEvent::PointerReleased {
        position: to,
        button: PointerEventButton::Left,
    });
    advance(Duration::ZERO);
}

fn titles(ui: &AppWindow) -> Vec<String> {
    use slint::Model;
    screen(ui)
        .get_entries()
        .iter()
        .map(|e| e.title.to_string())
        .collect()
}

/// Runs the walk below in a process of its own: the testing backend is a
/// Slint platform, and a process holds one.
#[test]
fn kiosk_navigation_idle_timeout_rotation_pages_and_urgent_notices() {
    common::in_child_process("kiosk::kiosk_walk_on_the_testing_backend");
}

#[test]
#[ignore = "run by kiosk_navigation_idle_timeout_rotation_pages_and_urgent_notices in a child process"]
fn kiosk_walk_on_the_testing_backend() {
    i_slint_backend_testing::init_integration_test_with_mock_time();
    let dir = tempfile::tempdir().unwrap();
    let store_path = common::sample_store(dir.path());
    let mut items = common::held_items(&store_path);
    // A street office's policy beside the community's own (section 3.7):
    // the kiosk lists it with its publisher. Listing needs only the item.
    let mut street = items
        .iter()
        .find(|i| i.category == gongkai::protocol::Category::Government)
        .unwrap()
        .clone();
    street.scope = "yanshan-street".into();
    street.id = "policy-2027-01".into();
    street.title = "2027年城乡居民医保缴费通知".into();
    street.publisher = "燕山街道办事处".into();
    let finance = items.iter().find(|i| i.id == "2026q3-finance").unwrap();
    (street.valid_from, street.valid_until) = (finance.valid_from, finance.valid_until);
    street.status = gongkai::protocol::Status::Active;
    street.screens.clear();
    items.push(street);
    let key_of = |id: &str| -> Key {
        let item = items.iter().find(|i| i.id == id).unwrap();
        item.key()
    };

    // The daemon's side: the UI's I/O task on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let (io_task, io) = UiIoTask::new(store_path.clone(), None, wake.clone(), cancel.clone());
    let io_running = runtime.spawn(io_task.run());

    let ui = AppWindow::new().unwrap();
    ui.window().set_size(slint::PhysicalSize::new(1920, 1080));
    gongkai::ui::set_screen_size(&ui, 1920, 1080);
    let done: Rc<RefCell<Vec<Key>>> = Rc::default();
    let record = done.clone();
    let played: Rc<RefCell<Vec<Played>>> = Rc::default();
    let record_played = played.clone();
    let controller = Controller::new(
        &ui,
        Setup {
            mode: Mode::Kiosk,
            screen: gongkai::schedule::Audience::new(DEMO_SCREEN, gongkai::demo::DEMO_COMMUNITY),
            title: "历下区示范社区".into(),
            io,
            dwell: DWELL,
            idle: IDLE,
            slot_done: Box::new(move |key| record.borrow_mut().push(key)),
            played: Box::new(move |p| record_played.borrow_mut().push(p)),
            feedback_interval: Some(Duration::from_secs(20)),
            clock: Box::new(|| NOW.get()),
        },
    )
    .unwrap();
    CONTROLLER.with(|c| *c.borrow_mut() = Some(controller.clone()));
    ui.show().unwrap();

    // The rotation shows the daemon's slot, every page for its dwell time,
    // then says the slot is done.
    let finance = key_of("2026q3-finance");
    controller.update(Snapshot {
        items: items.clone(),
        showing: Some(finance.clone()),
        slot: 1,
        ..Snapshot::default()
    });
    assert!(controller.waiting(), "the body is read off the UI thread");
    settle();
    assert_eq!(controller.view(), View::Rotation);
    assert_eq!(screen(&ui).get_title(), "2026年第三季度社区财务收支公开");
    assert_eq!(screen(&ui).get_category(), "财务公开");
    let (_, page, pages) = controller.page().unwrap();
    assert_eq!(page, 0);
    assert!(pages >= 2, "the finance sample spans pages, got {pages}");
    for expected in 1..pages {
        advance(DWELL * 3);
        assert_eq!(controller.page().unwrap().1, expected);
        assert!(done.borrow().is_empty(), "done before its last page");
    }
    advance(DWELL * 3);
    assert_eq!(done.borrow().as_slice(), std::slice::from_ref(&finance));
    // Each page was told as it showed, for the proof of play.
    let pages_told: Vec<Played> = (0..pages)
        .map(|page| Played::Page {
            key: finance.clone(),
            page,
        })
        .collect();
    assert_eq!(played.borrow().as_slice(), pages_told);
    played.borrow_mut().clear();
    // The urgent banner names the active urgent notice on every view.
    assert_eq!(screen(&ui).get_banner(), "停水通知：6号楼至9号楼管网维修");

    // A tap on the rotation opens the home screen, with a count per category;
    // the rotation's notice is off the glass, so its slot is done.
    tap(&ui, "查看全部公开");
    assert_eq!(controller.view(), View::Home);
    assert_eq!(done.borrow().len(), 2, "leaving the rotation ends its slot");
    let tiles: Vec<(String, String)> = {
        use slint::Model;
        screen(&ui)
            .get_tiles()
            .iter()
            .map(|t| (t.label.to_string(), t.count.to_string()))
            .collect()
    };
    assert_eq!(
        tiles,
        [
            ("居务公开", "4 条"),
            ("财务公开", "1 条"),
            ("政务公开", "2 条"),
            ("居民关心事项", "2 条"),
            ("反馈答复", "1 条"),
            ("往期公开", "2 条"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    // The street's notice names its publisher; the community's does not.
    tap(&ui, "政务公开");
    let details: Vec<(String, String)> = {
        use slint::Model;
        screen(&ui)
            .get_entries()
            .iter()
            .map(|e| (e.title.to_string(), e.detail.to_string()))
            .collect()
    };
    assert_eq!(details.len(), 2, "{details:?}");
    for (title, detail) in &details {
        let street = title == "2027年城乡居民医保缴费通知";
        assert_eq!(
            detail.starts_with("燕山街道办事处 · 政务公开"),
            street,
            "{details:?}"
        );
        assert_eq!(detail.starts_with("政务公开"), !street, "{details:?}");
    }
    tap(&ui, "← 首页");

    // Category list, then the notice with its pages: buttons and swipes.
    tap(&ui, "财务公开");
    assert_eq!(
        controller.view(),
        View::List(gongkai::ui::controller::ListKind::Category(
            gongkai::protocol::Category::Finance
        ))
    );
    assert_eq!(titles(&ui), ["2026年第三季度社区财务收支公开"]);
    tap(&ui, "2026年第三季度社区财务收支公开");
    assert_eq!(controller.view(), View::Notice);
    let (shown, page, pages) = controller.page().unwrap();
    assert_eq!((shown, page), (finance.clone(), 0));
    assert!(!screen(&ui).get_can_prev());
    tap(&ui, "下一页");
    assert_eq!(controller.page().unwrap().1, 1);
    assert_eq!(screen(&ui).get_page(), format!("第 2/{pages} 页"));
    swipe(&ui, 400.0);
    assert_eq!(controller.page().unwrap().1, 0, "a swipe right goes back");
    swipe(&ui, -400.0);
    assert_eq!(controller.page().unwrap().1, 1, "a swipe left goes on");
    advance(Duration::from_secs(5));
    assert!(played.borrow().is_empty(), "told once it leaves the glass");
    tap(&ui, "← 返回");
    // The resident read two pages for 5 s: a touch play.
    match played.borrow_mut().drain(..).collect::<Vec<_>>().as_slice() {
        [
            Played::Touch {
                key,
                duration,
                pages_shown,
                ..
            },
        ] => {
            assert_eq!(key, &finance);
            assert_eq!(*pages_shown, 2);
            assert_eq!(*duration, Duration::from_secs(5));
        }
        other => panic!("one touch play, not {other:?}"),
    }
    assert_eq!(
        controller.view(),
        View::List(gongkai::ui::controller::ListKind::Category(
            gongkai::protocol::Category::Finance
        ))
    );

    // The archive: expired and withdrawn notices, each marked as such.
    tap(&ui, "← 首页");
    tap(&ui, "往期公开");
    let marks: Vec<(String, String)> = {
        use slint::Model;
        screen(&ui)
            .get_entries()
            .iter()
            .map(|e| (e.title.to_string(), e.mark.to_string()))
            .collect()
    };
    assert!(
        marks.contains(&("停车收费调整方案（草案）".into(), "已撤回".into())),
        "{marks:?}"
    );
    assert!(
        marks.contains(&("2026年第一季度社区财务收支公开".into(), "已过期".into())),
        "{marks:?}"
    );
    tap(&ui, "停车收费调整方案（草案）");
    assert_eq!(screen(&ui).get_mark(), "已撤回");

    // Idle: nothing for just under a minute keeps the view; a minute returns
    // to the rotation, from the first page of the rotation's slot.
    advance(IDLE - Duration::from_secs(1));
    assert_eq!(controller.view(), View::Notice);
    tap(&ui, "← 返回");
    advance(IDLE - Duration::from_secs(1));
    assert_eq!(
        controller.view(),
        View::List(gongkai::ui::controller::ListKind::Archive)
    );
    advance(Duration::from_secs(2));
    assert_eq!(controller.view(), View::Rotation);
    assert_eq!(controller.page().unwrap().0, finance);
    assert_eq!(screen(&ui).get_mark(), "");

    // Urgent: the rotation is interrupted at once by the daemon's new slot;
    // the page says 紧急通知 in words and the banner steps aside.
    let urgent = key_of("water-cut-notice");
    controller.update(Snapshot {
        items: items.clone(),
        showing: Some(urgent.clone()),
        slot: 2,
        ..Snapshot::default()
    });
    settle();
    assert_eq!(controller.page().unwrap().0, urgent);
    assert!(screen(&ui).get_urgent());
    // On the kiosk's home screen the banner opens the urgent notice.
    tap(&ui, "查看全部公开");
    tap(&ui, "紧急通知：停水通知：6号楼至9号楼管网维修");
    assert_eq!(controller.view(), View::Notice);
    assert_eq!(controller.page().unwrap().0, urgent);

    // Feedback on a notice: a rating with reasons and a phone number typed
    // on the keypad, committed to the outbox by the I/O task; the receipt
    // shows only once its answer has arrived.
    tap(&ui, "首页");
    tap(&ui, "财务公开");
    tap(&ui, "2026年第三季度社区财务收支公开");
    tap(&ui, "评价");
    assert_eq!(controller.view(), View::Feedback);
    assert_eq!(screen(&ui).get_fb_step(), FbStep::Rate);
    assert!(screen(&ui).get_fb_prompt().contains("需要改进"));
    tap(&ui, "不满意");
    assert_eq!(screen(&ui).get_fb_step(), FbStep::Reasons);
    tap(&ui, "内容有误");
    // A finance notice offers a reason of its own.
    tap(&ui, "金额有疑问");
    tap(&ui, "下一步");
    assert_eq!(screen(&ui).get_fb_step(), FbStep::Privacy);
    assert!(screen(&ui).get_fb_message().is_empty());
    assert_eq!(
        screen(&ui).get_contact_retention_days(),
        i32::from(gongkai::protocol::feedback::CONTACT_RETENTION_DAYS),
        "the privacy notice promises what the office enforces"
    );
    assert_eq!(
        screen(&ui).get_reply_working_days(),
        gongkai::protocol::feedback::REPLY_WORKING_DAYS as i32,
        "the kiosk promises the deadline the office counts"
    );
    tap(&ui, "留下号码");
    for key in ["1", "3", "8", "1", "2"] {
        tap(&ui, key);
    }
    tap(&ui, "确定提交");
    assert!(
        screen(&ui).get_fb_message().contains("11 位"),
        "a short number is refused"
    );
    for key in ["3", "4", "1", "2", "3", "4"] {
        tap(&ui, key);
    }
    assert_eq!(screen(&ui).get_fb_entry(), "13812341234");
    press(&ui, "确定提交");
    assert_eq!(screen(&ui).get_fb_step(), FbStep::Submitting);
    assert_eq!(
        screen(&ui).get_fb_receipt(),
        "",
        "no receipt before the answer"
    );
    assert!(controller.waiting());
    settle();
    assert_eq!(screen(&ui).get_fb_step(), FbStep::Done);
    let receipt = screen(&ui).get_fb_receipt().to_string();
    assert!(
        gongkai::protocol::notice::is_receipt_code(&receipt),
        "{receipt}"
    );
    let pending = gongkai::store::outbox::Outbox::open(&store_path)
        .unwrap()
        .pending(10)
        .unwrap();
    assert_eq!(pending.len(), 1);
    let item = &pending[0];
    assert_eq!(item.receipt, receipt);
    assert_eq!((item.kind.as_str(), item.rating), ("rating", Some(1)));
    assert_eq!(item.reasons, ["error", "amounts"]);
    assert_eq!(item.contact, "13812341234");
    assert_eq!(item.notice_id.as_deref(), Some("2026q3-finance"));
    // The I/O task woke the sync task after the commit.
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("the sync task is woken after a commit")
    });
    tap(&ui, "完成");
    assert_eq!(controller.view(), View::Notice);

    // One submission per 20 s on a kiosk: an objection right away waits.
    tap(&ui, "异议");
    assert_eq!(screen(&ui).get_fb_step(), FbStep::Wait);
    assert!(screen(&ui).get_fb_answer().contains("频繁"));
    assert!(
        ElementHandle::find_by_accessible_label(&ui, "重新输入")
            .all(|e| e.size().width == 0.0 || e.size().height == 0.0),
        "a rate-limited resident is not sent to the lookup"
    );
    tap(&ui, "完成");
    advance(Duration::from_secs(21));
    tap(&ui, "异议");
    assert_eq!(screen(&ui).get_fb_step(), FbStep::Reasons);
    tap(&ui, "下一步");
    assert!(
        screen(&ui).get_fb_message().contains("至少"),
        "an objection needs a reason"
    );
    tap(&ui, "数据有误");
    tap(&ui, "下一步");
    tap(&ui, "不留号码，直接提交");
    assert_eq!(screen(&ui).get_fb_step(), FbStep::Done);
    tap(&ui, "完成");

    // 查询答复: a receipt the office answered opens its reply; another is
    // not answered yet.
    tap(&ui, "首页");
    tap(&ui, "查询答复");
    for key in ["K", "7", "Q", "2", "M", "D"] {
        tap(&ui, key);
    }
    tap(&ui, "查询");
    assert_eq!(controller.view(), View::Notice);
    assert_eq!(screen(&ui).get_category(), "反馈答复");
    tap(&ui, "首页");
    tap(&ui, "查询答复");
    for key in receipt.chars() {
        tap(&ui, &key.to_string());
    }
    tap(&ui, "查询");
    assert!(screen(&ui).get_fb_answer().contains("尚未答复"));
    // Nobody finishes: a minute later the kiosk is back to the rotation.
    advance(IDLE + Duration::from_secs(1));
    assert_eq!(controller.view(), View::Rotation);

    // Offline: the daemon's badge shows on the page.
    controller.update(Snapshot {
        items,
        showing: Some(urgent),
        slot: 2,
        offline: Some("离线 · 最后同步 10:02".into()),
        media: 0,
        dark: false,
        identify: None,
    });
    assert!(screen(&ui).get_offline());
    assert!(!screen(&ui).get_dark());
    assert_eq!(screen(&ui).get_offline_text(), "离线 · 最后同步 10:02");

    cancel.cancel();
    runtime.block_on(io_running).unwrap().unwrap();
}
