//! Benchmark of the office console's pages, printed as figures (not
//! asserted): the time a real `gongkai office serve` process takes to
//! answer each page over loopback HTTP, with 1,000 published notices and
//! 100,000 feedback items in its database, p50 and p95 of 200 requests a
//! page, and the preview of every page of the finance sample. Measured at
//! the client, so the figures include loopback HTTP.
//!
//! `cargo bench --bench console`; `-- --requests N` sends N a page.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::OfficeServer;
use gongkai::office::console::{auth, compose};
use gongkai::protocol::feedback::FeedbackItem;
use gongkai::store::office::{DraftKind, DraftState, FeedbackBatchRef, OfficeStore, UserRole};
use gongkai::workdays::Calendar;
use time::OffsetDateTime;

const NOTICES: usize = 1_000;
const FEEDBACK: usize = 100_000;

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
    let office = OfficeServer::running_with(&format!("[[scope]]\nid = \"{scope}\"\n"));
    let started = Instant::now();
    let (cookie, middle) = fill(&office, scope);
    let sample = finance_sample(&office, scope);
    println!(
        "console: {NOTICES} published notices and {FEEDBACK} feedback items written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    gongkai::tls::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        for page in [
            "/console".to_owned(),
            "/console/review".to_owned(),
            format!("/console/drafts/{middle}"),
            "/console/compose".to_owned(),
            "/console/audit".to_owned(),
        ] {
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
                "console: {page:<22} p50 {:>6.1} ms  p95 {:>6.1} ms  max {:>6.1} ms  ({bytes} bytes, {requests} requests)",
                ms(at(0.5)),
                ms(at(0.95)),
                ms(*times.last().unwrap())
            );
        }
        // The finance sample previewed: the page listing its pages, then
        // every page's PNG, as a browser loads them one after another.
        for size in ["landscape", "portrait"] {
            let mut rounds = Vec::new();
            let mut pages = 0;
            for _ in 0..5 {
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
                pages = listing.matches("class=\"page\"").count();
                for page in 1..=pages {
                    let answer = http
                        .get(format!("{}/console/drafts/{sample}/preview/{size}/{page}", office.url))
                        .header("cookie", &cookie)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(answer.status(), 200);
                    answer.bytes().await.unwrap();
                }
                rounds.push(sent.elapsed());
            }
            rounds.sort();
            println!(
                "console: preview of the finance sample, {size}: {pages} pages in {:.0} ms (median of 5, fastest {:.0} ms; unoptimised build)",
                ms(rounds[2]),
                ms(rounds[0])
            );
        }
    });
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

/// Writes the notices, the feedback and a staff session straight into the
/// database; returns the session's cookie and a draft id in the middle.
fn fill(office: &OfficeServer, scope: &str) -> (String, i64) {
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
    let items: Vec<FeedbackItem> = (0..FEEDBACK)
        .map(|n| FeedbackItem {
            id: uuid::Uuid::new_v4().to_string(),
            receipt: "K7Q2MD".into(),
            created_at: "2026-10-08T10:00:00+08:00".into(),
            notice_scope: None,
            notice_id: Some(format!("bench-{:04}", n % NOTICES)),
            notice_version: Some(1),
            kind: "opinion".into(),
            rating: None,
            reasons: vec![],
            text: "楼道灯坏了".into(),
            contact: String::new(),
        })
        .collect();
    for chunk in items.chunks(10_000) {
        let refs: Vec<&FeedbackItem> = chunk.iter().collect();
        store
            .add_feedback_batches(
                &[FeedbackBatchRef {
                    screen: "lobby-1",
                    community: scope,
                    items: &refs,
                }],
                now,
            )
            .unwrap();
    }
    let token = auth::random_token();
    store
        .add_user("bench", UserRole::Staff, "enrol", now.unix_timestamp() + 60)
        .unwrap();
    let password = auth::hash_password("bench password").unwrap();
    store
        .complete_enrolment("enrol", now.unix_timestamp(), &password, None)
        .unwrap();
    store
        .create_session(
            &auth::token_hash(&token),
            "bench",
            "csrf",
            now.unix_timestamp() + 3600,
            now.unix_timestamp(),
        )
        .unwrap();
    (format!("{}={token}", auth::SESSION_COOKIE), middle)
}
