//! Benchmark of the feedback path, printed as figures (not asserted): 10,000
//! items queued in a screen's outbox while the office is down, then the time
//! from the office's return until all of them are stored there.
//!
//! `cargo bench --bench feedback`. The office is the real `gongkai office
//! serve` process on loopback; the screen is the daemon, in this process.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use gongkai::store::outbox::{Outbox, Submission};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench --bench feedback`");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(outage(10_000));
}

async fn outage(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut office = OfficeServer::new();
    let c = community("bench-feedback");
    let token = office.token_file(&screen_id(&c));
    let store = dir.path().join("screen.db");
    let config = format!(
        "{}\n[office]\nurl = \"{}\"\ntoken_file = \"{}\"\n{}",
        config_text(&broker_url(), &c, &screen_id(&c), &store),
        office.url,
        token.display(),
        office.screen_trust()
    );
    let daemon = gongkai::daemon::Daemon::start(gongkai::config::Config::parse(&config).unwrap())
        .await
        .unwrap();
    let started = Instant::now();
    tokio::task::spawn_blocking({
        let store = store.clone();
        move || {
            let mut outbox = Outbox::open(&store).unwrap();
            for i in 0..n {
                outbox
                    .submit(
                        Submission {
                            notice: Some(gongkai::schedule::Key {
                                scope: gongkai::demo::DEMO_COMMUNITY.into(),
                                id: "2026q3-finance".into(),
                                version: 1,
                            }),
                            kind: "rating".into(),
                            rating: Some((i % 3 + 1) as u8),
                            reasons: vec!["clear".into()],
                            ..Submission::default()
                        },
                        time::OffsetDateTime::now_utc(),
                    )
                    .unwrap();
            }
        }
    })
    .await
    .unwrap();
    let queued = started.elapsed();
    daemon.feedback_wake.notify_one();
    // The office stays away long enough for the retries to back off fully.
    tokio::time::sleep(Duration::from_secs(12)).await;
    office.start();
    let back = Instant::now();
    let outbox = daemon.outbox.clone();
    while outbox.borrow().pending > 0 {
        assert!(
            back.elapsed() < Duration::from_secs(120),
            "the queue did not drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = back.elapsed();
    println!(
        "feedback: {n} items committed to the outbox in {:.2} s ({:.0}/s, synchronous=FULL); after a 12 s office outage all reached the office {:.2} s after its return",
        queued.as_secs_f64(),
        n as f64 / queued.as_secs_f64(),
        drained.as_secs_f64()
    );
    daemon.shutdown().await;
}
