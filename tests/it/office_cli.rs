//! What staff do with residents' feedback, through the real binaries:
//! `gongkai office feedback` (masked contacts, the overdue flag, CSV export,
//! an audited reveal) and `gongkai office reply` (a reply payload that
//! `gongkai sign` accepts, refusals that write nothing), against a running
//! `gongkai office serve` fed over HTTP.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::OfficeServer;
use gongkai::protocol::Notice;
use gongkai::protocol::feedback::FeedbackItem;
use gongkai::store::office::OfficeStore;
use serde_json::json;
use time::OffsetDateTime;

/// `gongkai office <command> --config … <args>`, as user `staff-li`.
fn run(office: &OfficeServer, command: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["office", command, "--config"])
        .arg(&office.config)
        .args(args)
        .env("USER", "staff-li")
        .output()
        .unwrap()
}

fn database(office: &OfficeServer) -> OfficeStore {
    OfficeStore::open(&office.database).unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn line_of<'a>(text: &'a str, receipt: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(receipt))
        .unwrap_or_else(|| panic!("no line for {receipt} in:\n{text}"))
}

/// RFC 4180 parsing, enough to read the export back.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "the last line ends");
    rows
}

fn old_item(receipt: &str) -> FeedbackItem {
    FeedbackItem {
        id: uuid::Uuid::new_v4().to_string(),
        receipt: receipt.into(),
        created_at: "2026-09-20T10:00:00+08:00".into(),
        notice_scope: None,
        notice_id: None,
        notice_version: None,
        kind: "opinion".into(),
        rating: None,
        reasons: vec![],
        text: "楼道灯坏了很久".into(),
        contact: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_list_export_reveal_and_answer_feedback() {
    let office = OfficeServer::running();
    let token = office.token("lobby-3");
    gongkai::tls::install_crypto_provider();
    let http = office.client();

    // A fresh opinion with a contact number, over HTTP.
    let text = "希望增加健身器材, 并修好 \"东门\"";
    let response = http
        .post(format!("{}/api/v1/feedback", office.url))
        .bearer_auth(&token)
        .json(
            &json!({"screen": "lobby-3", "community": "lixia-demo", "items": [{
            "id": "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10", "receipt": "A1B2C3",
            "created_at": "2026-10-08T10:00:00+08:00", "kind": "opinion",
            "text": text, "contact": "13812341234"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // An opinion received 30 days ago, never answered (well past 10
    // working days, whatever the holidays); one of another community.
    let thirty_days_ago = OffsetDateTime::now_utc() - time::Duration::days(30);
    let mut store = database(&office);
    store
        .add_feedback_received_at(
            "lobby-3",
            "lixia-demo",
            &[&old_item("K7Q2MD")],
            thirty_days_ago,
        )
        .unwrap();
    store
        .add_feedback_received_at(
            "gate-1",
            "other-demo",
            &[&old_item("B2C3D4")],
            thirty_days_ago,
        )
        .unwrap();

    // The table: masked, the old items flagged.
    let table = stdout(&run(&office, "feedback", &[]));
    assert!(table.contains("138****1234"), "{table}");
    assert!(!table.contains("13812341234"), "{table}");
    assert!(line_of(&table, "K7Q2MD").contains("逾期未复"), "{table}");
    assert!(line_of(&table, "B2C3D4").contains("逾期未复"), "{table}");
    assert!(!line_of(&table, "A1B2C3").contains("逾期未复"), "{table}");
    assert!(table.contains("3 items, 2 overdue"), "{table}");

    // --since: a date or a time.
    let five_days_ago = (OffsetDateTime::now_utc() - time::Duration::days(5)).date();
    let recent = stdout(&run(
        &office,
        "feedback",
        &["--since", &five_days_ago.to_string()],
    ));
    assert!(
        recent.contains("A1B2C3") && !recent.contains("K7Q2MD"),
        "{recent}"
    );
    let tomorrow = (OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    let none = stdout(&run(
        &office,
        "feedback",
        &["--since", &format!("{tomorrow}T00:00:00Z")],
    ));
    assert!(none.contains("no feedback"), "{none}");
    let bad = run(&office, "feedback", &["--since", "last week"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));

    // CSV: a header, one row per item, the text intact, contacts masked.
    let csv = parse_csv(&stdout(&run(&office, "feedback", &["--csv"])));
    assert_eq!(csv.len(), 4, "{csv:?}");
    let col = |name: &str| csv[0].iter().position(|h| h == name).unwrap();
    assert!(csv.iter().all(|r| r.len() == csv[0].len()), "{csv:?}");
    let fresh = csv.iter().find(|r| r[col("receipt")] == "A1B2C3").unwrap();
    assert_eq!(fresh[col("text")], text);
    assert_eq!(fresh[col("contact")], "138****1234");
    assert_eq!(fresh[col("overdue")], "no");
    let old = csv.iter().find(|r| r[col("receipt")] == "K7Q2MD").unwrap();
    assert_eq!(old[col("overdue")], "yes");
    // The deadline: ten working days of the national calendar, in China.
    let national = gongkai::workdays::Calendar::national();
    let due = |t: OffsetDateTime| {
        national
            .add_working_days(gongkai::workdays::china_date(t), 10)
            .to_string()
    };
    assert_eq!(old[col("reply_due")], due(thirty_days_ago));
    assert!(line_of(&table, "K7Q2MD").contains(&due(thirty_days_ago)));
    assert!(database(&office).audit_rows().unwrap().is_empty());

    // Revealed: in full, and on the audit trail.
    let revealed = stdout(&run(&office, "feedback", &["--reveal-contact"]));
    assert!(
        line_of(&revealed, "A1B2C3").contains("13812341234"),
        "{revealed}"
    );
    let audit = database(&office).audit_rows().unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].who, "staff-li");
    assert!(audit[0].what.contains("A1B2C3"), "{audit:?}");

    // Refusals write nothing: an unknown receipt (alone or with a known
    // one), receipts of two communities.
    let reply_args = |receipts: &[&str], out: &Path| {
        let mut args: Vec<String> = receipts.iter().map(|r| r.to_string()).collect();
        args.extend(
            [
                "--text",
                "楼道灯已于本周更换，感谢您的反映。",
                "--publisher",
                "历下区示范社区居民委员会",
                "--contact",
                "监督电话：0531-00000000",
                "-o",
            ]
            .map(String::from),
        );
        args.push(out.display().to_string());
        args
    };
    let reply = |receipts: &[&str], out: &Path| {
        let args = reply_args(receipts, out);
        run(
            &office,
            "reply",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let refused = office.path("refused.json");
    for (receipts, expected) in [
        (&["ZZZZZZ"][..], "ZZZZZZ"),
        (&["K7Q2MD", "ZZZZZZ"][..], "ZZZZZZ"),
        (&["K7Q2MD", "B2C3D4"][..], "one community"),
        (&["NOTOK!"][..], "not a receipt code"),
    ] {
        let out = reply(receipts, &refused);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{receipts:?}");
        assert!(stderr.contains(expected), "{receipts:?}: {stderr}");
        assert!(!refused.exists(), "{receipts:?}");
    }
    assert!(line_of(&stdout(&run(&office, "feedback", &[])), "K7Q2MD").contains("逾期未复"));

    // The reply: valid, citing the receipt, and accepted by `gongkai sign`.
    let payload_path = office.path("reply.json");
    let out = stdout(&reply(&["k7q2md"], &payload_path));
    assert!(out.contains("gongkai sign --key office.key"), "{out}");
    let payload = std::fs::read(&payload_path).unwrap();
    let notice = Notice::from_payload(&payload).unwrap();
    assert_eq!(notice.reply_to, ["K7Q2MD"]);
    assert_eq!(notice.community, "lixia-demo");
    assert_eq!(notice.category.as_str(), "reply");
    assert!(notice.id.starts_with("reply-") && notice.id.ends_with("-k7q2md"));
    assert!(notice.title.starts_with("居民意见答复（"));
    let key = office.path("office.key");
    let keygen = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    stdout(&keygen);
    let signed = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .arg("sign")
        .arg("--key")
        .arg(&key)
        .arg(&payload_path)
        .arg("-o")
        .arg(office.path("reply.env.json"))
        .output()
        .unwrap();
    stdout(&signed);

    // Never over an existing file; a second reply gets an id of its own.
    let again = reply(&["K7Q2MD"], &payload_path);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(std::fs::read(&payload_path).unwrap(), payload);
    let second = office.path("reply-2.json");
    stdout(&reply(&["K7Q2MD"], &second));
    let second = Notice::from_payload(&std::fs::read(&second).unwrap()).unwrap();
    assert_eq!(second.id, format!("{}-2", notice.id));

    // Answered: no longer flagged; the unanswered one still is.
    let table = stdout(&run(&office, "feedback", &[]));
    assert!(!line_of(&table, "K7Q2MD").contains("逾期未复"), "{table}");
    assert!(line_of(&table, "K7Q2MD").contains(&notice.id), "{table}");
    assert!(line_of(&table, "B2C3D4").contains("逾期未复"), "{table}");
}

#[test]
fn commands_on_a_missing_database_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("office.db");
    let config = dir.path().join("office.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\ndatabase = \"{}\"\n",
            database.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["office", "feedback", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no office database"));
    assert!(!database.exists());
}

/// The kiosk's privacy notice promises a number is kept at most 180 days
/// after its item was answered: the server wipes older ones before it
/// serves anything, and says so in the audit trail.
#[test]
fn the_server_wipes_contact_numbers_180_days_after_the_answer() {
    let mut office = OfficeServer::new();
    let now = OffsetDateTime::now_utc();
    {
        let mut store = database(&office);
        let with_contact = |receipt: &str| FeedbackItem {
            contact: "13812341234".into(),
            ..old_item(receipt)
        };
        let (old, recent) = (with_contact("K7Q2MD"), with_contact("A1B2C3"));
        store
            .add_feedback_received_at(
                "lobby-3",
                "lixia-demo",
                &[&old, &recent],
                now - time::Duration::days(200),
            )
            .unwrap();
        for (id, receipt, age) in [("reply-old", "K7Q2MD", 181), ("reply-new", "A1B2C3", 179)] {
            store
                .record_reply(
                    id,
                    "lixia-demo",
                    &[receipt.into()],
                    now - time::Duration::days(age),
                )
                .unwrap();
        }
    }
    office.start();
    let contacts: Vec<(String, String)> = database(&office)
        .feedback_rows(None)
        .unwrap()
        .into_iter()
        .map(|r| (r.receipt, r.contact))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        contacts,
        [
            ("A1B2C3".to_owned(), "13812341234".to_owned()),
            ("K7Q2MD".to_owned(), String::new())
        ]
    );
    let audit = database(&office).audit_rows().unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].what.contains("1 answered items"), "{audit:?}");
}

/// An office.toml `holidays` file replaces the national calendar: with
/// every day of the last weeks a holiday, an item of 30 days ago is not yet
/// due. A file that does not parse stops the command, naming it.
#[test]
fn an_office_calendar_of_its_own_moves_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let holidays = dir.path().join("holidays.toml");
    let now = OffsetDateTime::now_utc();
    let mut by_year = std::collections::BTreeMap::<i32, Vec<String>>::new();
    let mut day = (now - time::Duration::days(40)).date();
    while day < (now + time::Duration::days(40)).date() {
        by_year
            .entry(day.year())
            .or_default()
            .push(format!("\"{day}\""));
        day = day.next_day().unwrap();
    }
    let text: String = by_year
        .iter()
        .map(|(year, days)| {
            format!(
                "[[year]]\nyear = {year}\nholidays = [{}]\n",
                days.join(", ")
            )
        })
        .collect();
    std::fs::write(&holidays, text).unwrap();
    let office = OfficeServer::with_config(&format!("holidays = \"{}\"\n", holidays.display()));
    database(&office)
        .add_feedback_received_at(
            "lobby-3",
            "lixia-demo",
            &[&old_item("K7Q2MD")],
            now - time::Duration::days(30),
        )
        .unwrap();
    let table = stdout(&run(&office, "feedback", &[]));
    assert!(!line_of(&table, "K7Q2MD").contains("逾期未复"), "{table}");
    assert!(table.contains("1 items, 0 overdue"), "{table}");

    std::fs::write(
        &holidays,
        "[[year]]\nyear = 2026\nholidays = [\"2026-13-01\"]\n",
    )
    .unwrap();
    let out = run(&office, "feedback", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("holidays.toml") && stderr.contains("2026-13-01"),
        "{stderr}"
    );
}
