//! Benchmark of the office console's pages, printed as figures (not
//! asserted): the time a real `gongkai office serve` process takes to
//! answer each page over loopback HTTPS, with 1,000 published notices,
//! 100,000 feedback items (received over 200 days, most answered) and 200
//! screens' retained statuses on a Mosquitto of its own (which the server
//! follows): p50 and p95 of 200 requests a page; and every page of the
//! finance sample in the three previews (landscape, portrait, the kiosk's).
//! Measured at the client, so the figures include loopback HTTPS. Then 发布
//! to a loopback fleet of ten real screens (`publish`).
//!
//! `cargo bench --bench console`; `-- --requests N` sends N a page.

#[path = "../../tests/it/common/mod.rs"]
mod common;
mod publish;

use std::time::{Duration, Instant};

use common::{Mosquitto, OfficeServer};
use gongkai::office::console::{auth, compose};
use gongkai::protocol::SecretKey;
use gongkai::protocol::feedback::FeedbackItem;
use gongkai::store::office::{DraftKind, DraftState, FeedbackBatchRef, OfficeStore, UserRole};
use gongkai::workdays::Calendar;
use time::OffsetDateTime;

const NOTICES: usize = 1_000;
const FEEDBACK: usize = 100_000;
/// Feedback items received on one day: 100,000 over 200 days.
const FEEDBACK_PER_DAY: usize = 500;
const SCREENS: usize = 200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench --bench console`");
        return;
    }
    let requests: usize = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let scope = "bench-console";
    let broker = Mosquitto::start_stock("console-bench", "");
    let mut extra = format!("[[scope]]\nid = \"{scope}\"\n");
    if let Some(broker) = &broker {
        extra = format!("broker = \"{}\"\n{extra}", broker.url());
    }
    let office = OfficeServer::running_with(&extra);
    let started = Instant::now();
    let (session, middle) = fill(&office, scope);
    let cookie = session.cookie.clone();
    let sample = finance_sample(&office, scope);
    println!(
        "console: {NOTICES} published notices and {FEEDBACK} feedback items written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    gongkai::tls::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        if let Some(broker) = &broker {
            statuses(&broker.url(), scope).await;
            println!(
                "console: {SCREENS} screens' retained statuses on the broker ({} online, {} stale, {} offline)",
                SCREENS - 20,
                10,
                10
            );
        } else {
            println!("console: no mosquitto: the fleet page is not measured");
        }
        let http = client(&office);
        if broker.is_some() {
            // The server follows the statuses: measure once it has them all.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let page = http
                    .get(format!("{}/console/fleet/view", office.url))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                if page.contains(&format!("共 {SCREENS} 块屏幕")) {
                    break;
                }
                assert!(Instant::now() < deadline, "the fleet page lacks screens: {page}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut pages = vec![
            "/console".to_owned(),
            "/console/review".to_owned(),
            format!("/console/drafts/{middle}"),
            "/console/compose".to_owned(),
            "/console/audit".to_owned(),
            "/console/feedback".to_owned(),
            "/console/feedback?status=open&overdue=1".to_owned(),
            "/console/feedback?notice=bench-0500".to_owned(),
        ];
        if broker.is_some() {
            pages.push("/console/fleet".to_owned());
        }
        for page in pages {
            let mut times = Vec::with_capacity(requests);
            let mut bytes = 0;
            for _ in 0..requests {
                let sent = Instant::now();
                let answer = http
                    .get(format!("{}{page}", office.url))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200, "{page}");
                bytes = answer.bytes().await.unwrap().len();
                times.push(sent.elapsed());
            }
            times.sort();
            let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
            println!(
                "console: {page:<40} p50 {:>6.1} ms  p95 {:>6.1} ms  max {:>6.1} ms  ({bytes} bytes, {requests} requests)",
                ms(at(0.5)),
                ms(at(0.95)),
                ms(*times.last().unwrap())
            );
        }
        // The finance sample previewed: the page listing its pages, then
        // every page's PNG, as a browser loads them one after another. The
        // sizes take turns, so each round pages the notice afresh (the
        // preview keeps the paging of the last notice and size it drew);
        // the first round also decodes the sample's image.
        let sizes = ["landscape", "portrait", "kiosk"];
        let mut rounds = vec![Vec::new(); sizes.len()];
        let mut pages = vec![0; sizes.len()];
        for _ in 0..5 {
            for (k, size) in sizes.iter().enumerate() {
                let sent = Instant::now();
                let listing = http
                    .get(format!("{}/console/drafts/{sample}/preview/{size}", office.url))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                pages[k] = listing.matches("class=\"page\"").count();
                for page in 1..=pages[k] {
                    let answer = http
                        .get(format!("{}/console/drafts/{sample}/preview/{size}/{page}", office.url))
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(answer.status(), 200);
                    answer.bytes().await.unwrap();
                }
                rounds[k].push(sent.elapsed());
            }
        }
        for (k, size) in sizes.iter().enumerate() {
            let first = rounds[k][0];
            let mut sorted = rounds[k].clone();
            sorted.sort();
            println!(
                "console: preview of the finance sample, {size}: {} pages in {:.0} ms (median of 5 rounds, fastest {:.0} ms; the first, decoding its image too, {:.0} ms)",
                pages[k],
                ms(sorted[2]),
                ms(sorted[0]),
                ms(first)
            );
        }
        if let Some(broker) = &broker {
            publish::run(&office, &broker.url(), scope, &session).await;
        }
    });
}

/// A client of `office` that trusts its certificate and follows no
/// redirect.
fn client(office: &OfficeServer) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &office.ca_file {
        let pem = std::fs::read(ca).unwrap();
        builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// Retained statuses of `SCREENS` screens of `scope`, as screens publish
/// them: most online and fresh, ten whose last status is twenty minutes
/// old, ten gone offline (their will).
async fn statuses(url: &str, scope: &str) {
    let topics = common::topics(scope);
    let now = OffsetDateTime::now_utc();
    let messages: Vec<(String, Vec<u8>)> = (0..SCREENS)
        .map(|n| {
            let screen = format!("bench-screen-{n:03}");
            let payload = if n >= SCREENS - 10 {
                gongkai::status::offline(&screen, scope)
            } else {
                let updated = if n >= SCREENS - 20 {
                    now - time::Duration::minutes(20)
                } else {
                    now
                };
                let time = |t: OffsetDateTime| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .unwrap()
                };
                serde_json::to_vec(&serde_json::json!({
                    "state": "online",
                    "screen": screen,
                    "community": scope,
                    "software": env!("CARGO_PKG_VERSION"),
                    "mode": "led",
                    "started_at": time(now - time::Duration::days(3)),
                    "updated_at": time(updated),
                    "showing": {"id": format!("bench-{:04}", n % NOTICES), "version": 1},
                    "active": NOTICES,
                    "cached": NOTICES,
                    "rejected": 0,
                    "outbox": n % 3,
                    "manifest": {"version": 1, "missing": 0},
                    "display": "on",
                }))
                .unwrap()
            };
            (topics.status(&screen), payload)
        })
        .collect();
    let mut publisher = common::publisher(url).await;
    publisher.publish_retained_many(messages).await.unwrap();
    publisher.close().await;
}

/// The finance sample as a draft of `scope`; returns its id.
fn finance_sample(office: &OfficeServer, scope: &str) -> i64 {
    let (_, text) = gongkai::samples::ALL[0];
    let mut value: serde_json::Value = serde_json::from_str(text).unwrap();
    value["community"] = scope.into();
    let payload = serde_json::to_vec_pretty(&value).unwrap();
    let mut store = OfficeStore::open(&office.database).unwrap();
    store
        .create_draft(
            scope,
            value["id"].as_str().unwrap(),
            1,
            DraftKind::Notice,
            "{}",
            Some(&payload),
            "bench",
        )
        .unwrap()
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The staff session the bench's requests carry, and the keys the bench's
/// staff member and supervisor sign with (enrolled as theirs).
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub staff_key: SecretKey,
    pub supervisor_key: SecretKey,
}

/// Writes the notices, the feedback, a staff member and a supervisor with
/// their keys, and a staff session straight into the database; returns the
/// session and a draft id in the middle.
fn fill(office: &OfficeServer, scope: &str) -> (Session, i64) {
    let mut store = OfficeStore::open(&office.database).unwrap();
    let calendar = Calendar::national();
    let now = OffsetDateTime::now_utc();
    let mut middle = 0;
    for n in 0..NOTICES {
        let mut form = compose::new_form(scope, now);
        form.notice_id = format!("bench-{n:04}");
        form.title = format!("第{n}号 财务收支公开");
        form.publisher = "历下区示范社区居民委员会".into();
        form.contact = "监督电话：0531-00000000".into();
        form.blocks[0].text = "现将本季度财务收支公开如下。".repeat(8);
        form.blocks.push(compose::FormBlock {
            kind: "table".into(),
            text: "项目\t金额（元）\n办公经费\t12,000.00\n环境整治\t20,400.00\n".into(),
            ..Default::default()
        });
        let context = compose::Context {
            public_url: &office.url,
            version: 1,
            now,
            calendar: &calendar,
        };
        let (_, payload) = compose::build(&form, &context).unwrap();
        let json = serde_json::to_string(&form).unwrap();
        let id = store
            .create_draft(
                scope,
                &form.notice_id,
                1,
                DraftKind::Notice,
                &json,
                Some(&payload),
                "bench",
            )
            .unwrap()
            .unwrap();
        store
            .update_draft(
                id,
                DraftState::Editing,
                DraftState::Approved,
                &json,
                Some(&payload),
                Some("{}"),
                Some("{}"),
                None,
            )
            .unwrap();
        store.mark_published(id, b"{}", 1, "bench").unwrap();
        if n == NOTICES / 2 {
            middle = id;
        }
    }
    // Received over the last 200 days, 500 a day, each with a receipt of
    // its own; nine in ten of those older than 30 days are answered, by
    // replies of 500 receipts each.
    let receipt = |n: usize| {
        let digits = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
        (0..6)
            .map(|i| digits[(n / digits.len().pow(i)) % digits.len()] as char)
            .collect::<String>()
    };
    for (day, chunk) in (0..FEEDBACK)
        .collect::<Vec<_>>()
        .chunks(FEEDBACK_PER_DAY)
        .enumerate()
    {
        let items: Vec<FeedbackItem> = chunk
            .iter()
            .map(|&n| FeedbackItem {
                id: uuid::Uuid::new_v4().to_string(),
                receipt: receipt(n),
                created_at: "2026-10-08T10:00:00+08:00".into(),
                notice_scope: None,
                notice_id: Some(format!("bench-{:04}", n % NOTICES)),
                notice_version: Some(1),
                kind: "opinion".into(),
                rating: None,
                reasons: vec![],
                text: "楼道灯坏了".into(),
                contact: if n % 4 == 0 {
                    "13812341234".into()
                } else {
                    String::new()
                },
            })
            .collect();
        let refs: Vec<&FeedbackItem> = items.iter().collect();
        let received = now - time::Duration::days(day as i64);
        store
            .add_feedback_batches(
                &[FeedbackBatchRef {
                    screen: "lobby-1",
                    community: scope,
                    items: &refs,
                }],
                received,
            )
            .unwrap();
        if day > 30 {
            let answered: Vec<String> = chunk
                .iter()
                .filter(|&&n| n % 10 != 0)
                .map(|&n| receipt(n))
                .collect();
            store
                .record_reply(
                    &format!("reply-bench-{day:03}"),
                    scope,
                    &answered,
                    received + time::Duration::days(5),
                )
                .unwrap();
        }
    }
    let (staff_key, supervisor_key) = (common::office_key(), common::supervisor_key());
    let password = auth::hash_password("bench password").unwrap();
    for (name, role, key) in [
        ("bench", UserRole::Staff, &staff_key),
        ("bench-supervisor", UserRole::Supervisor, &supervisor_key),
    ] {
        let enrolment = format!("enrol-{name}");
        store
            .add_user(name, role, &enrolment, now.unix_timestamp() + 60)
            .unwrap();
        store
            .complete_enrolment(
                &enrolment,
                now.unix_timestamp(),
                &password,
                Some(&key.public().to_base64()),
            )
            .unwrap()
            .unwrap();
    }
    let token = auth::random_token();
    store
        .create_session(
            &auth::token_hash(&token),
            "bench",
            "csrf",
            now.unix_timestamp() + 3600,
            now.unix_timestamp(),
        )
        .unwrap();
    let session = Session {
        cookie: format!("{}={token}", auth::SESSION_COOKIE),
        csrf: "csrf".to_owned(),
        staff_key,
        supervisor_key,
    };
    (session, middle)
}
