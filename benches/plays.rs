//! Benchmark of the office's proof-of-play intake, printed as figures (not
//! asserted). Issue 11's target: 100,000 chain records verified by the
//! office in at most 2 s.
//!
//! - *over HTTP*: one client (as a screen sends) posts 100 batches of 1,000
//!   records, in seq order, to a real `gongkai office serve` process on
//!   loopback; each batch is judged against the chain held and committed
//!   (`synchronous=FULL`) before the answer;
//! - *database*: the same batches through `OfficeStore::add_chain_plays`
//!   on a file, without HTTP;
//! - *verify only*: the pure verdict (`protocol::plays::judge`, every hash
//!   and link) over the 100 batches, and `chain_problems` over the whole
//!   chain as `gongkai office plays --verify` runs it.
//!
//! `cargo bench --bench plays`.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::OfficeServer;
use gongkai::protocol::plays::{ChainVerdict, PlayRecord, Trigger, chain_problems, judge};
use serde_json::json;

const RECORDS: usize = 100_000;
const BATCH: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench --bench plays`");
        return;
    }
    let chain = chain(RECORDS);
    let bodies: Vec<Vec<u8>> = chain
        .chunks(BATCH)
        .map(|batch| {
            serde_json::to_vec(
                &json!({"screen": "bench-plays", "community": "bench-demo", "plays": batch}),
            )
            .unwrap()
        })
        .collect();
    let body_kib = bodies[0].len() / 1024;

    // Over HTTP, to a real office server.
    let office = OfficeServer::running();
    let token = office.token_in("bench-plays", "bench-demo");
    gongkai::tls::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let http_elapsed = runtime.block_on(async {
        let http = office.client();
        let start = Instant::now();
        for (i, body) in bodies.iter().enumerate() {
            let response = http
                .post(format!("{}/api/v1/plays", office.url))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("the office answers");
            let status = response.status();
            let answer: serde_json::Value = response.json().await.expect("a JSON answer");
            let expected = json!({"stored": BATCH, "next_seq": (i + 1) * BATCH + 1});
            assert!(
                status == 200 && answer == expected,
                "batch {i}: {status} {answer}"
            );
        }
        start.elapsed()
    });
    drop(office);

    // The database alone.
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        gongkai::store::office::OfficeStore::open(&dir.path().join("office.db")).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let start = Instant::now();
    for batch in chain.chunks(BATCH) {
        store
            .add_chain_plays("bench-plays", "bench-demo", batch, now)
            .unwrap();
    }
    let db_elapsed = start.elapsed();

    // The verdicts alone, against a chain held in memory.
    let start = Instant::now();
    let mut held: HashMap<u64, String> = HashMap::with_capacity(RECORDS);
    let mut next_seq = 1;
    for batch in chain.chunks(BATCH) {
        match judge(batch, next_seq, |seq| held.get(&seq).cloned()) {
            ChainVerdict::Continues { new, next_seq: n } => {
                assert_eq!(new, BATCH);
                next_seq = n;
            }
            other => panic!("{other:?}"),
        }
        held.extend(batch.iter().map(|r| (r.seq, r.hash.clone())));
    }
    let judge_elapsed = start.elapsed();
    let start = Instant::now();
    assert!(chain_problems(&chain).is_empty());
    let verify_elapsed = start.elapsed();

    let rate = |d: Duration| RECORDS as f64 / d.as_secs_f64();
    println!(
        "plays over HTTP: {RECORDS} records in {} batches of {BATCH} ({body_kib} KiB a request) \
         judged and stored in {:.2} s: {:.0} records/s, {:.1} ms a request",
        RECORDS / BATCH,
        http_elapsed.as_secs_f64(),
        rate(http_elapsed),
        http_elapsed.as_secs_f64() * 1000.0 / (RECORDS / BATCH) as f64
    );
    println!(
        "plays database only: {:.2} s: {:.0} records/s",
        db_elapsed.as_secs_f64(),
        rate(db_elapsed)
    );
    println!(
        "plays verify only: judge over the batches {:.3} s ({:.0} records/s), \
         chain_problems over the chain {:.3} s ({:.0} records/s)",
        judge_elapsed.as_secs_f64(),
        rate(judge_elapsed),
        verify_elapsed.as_secs_f64(),
        rate(verify_elapsed)
    );
}

/// A chain of `n` records of the kind a screen writes.
fn chain(n: usize) -> Vec<PlayRecord> {
    let mut out: Vec<PlayRecord> = Vec::with_capacity(n);
    for i in 0..n {
        let record = PlayRecord {
            seq: 0,
            scope: "bench-demo".into(),
            notice_id: format!("2026q3-finance-{:03}", i % 40),
            version: 3,
            started_at: format!(
                "2026-10-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                1 + i / 86_400 % 28,
                i / 3600 % 24,
                i / 60 % 60,
                i % 60,
                i % 1000
            ),
            duration_ms: 12_000 + (i as u64 % 7) * 1000,
            pages_shown: 1 + (i % 3) as u32,
            trigger: if i % 50 == 0 {
                Trigger::Touch
            } else {
                Trigger::Rotation
            },
            prev: String::new(),
            hash: String::new(),
        }
        .sealed_after(out.last());
        out.push(record);
    }
    out
}
