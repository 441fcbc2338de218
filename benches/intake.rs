//! Benchmark of the office's intake, printed as figures (not asserted): how
//! many feedback items per second a real `gongkai office serve` process
//! stores, posted by 4 concurrent clients over loopback HTTPS, first in
//! batches of 100 items and then one item per request. Every item is new
//! and valid, so every request ends in a commit (`synchronous=FULL`).
//!
//! `cargo bench --bench intake`; `-- --seconds N` measures N seconds a phase.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::OfficeServer;
use serde_json::json;

const CLIENTS: usize = 4;
const BATCH: usize = 100;

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: the
    // figures are for `cargo bench`, in an optimised build.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench --bench intake`");
        return;
    }
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let phase = Duration::from_secs_f64(seconds);
    let office = OfficeServer::running();
    let token = office.token("bench-1");
    gongkai::tls::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let batched = measure(&office, &token, BATCH, phase).await;
        let single = measure(&office, &token, 1, phase).await;
        println!(
            "intake: {:.0} items/s in batches of {BATCH} ({CLIENTS} clients, {} requests, {:.1} ms a request), {:.0} items/s one item per request ({CLIENTS} clients, {:.1} ms a request)",
            batched.items_per_second(),
            batched.requests,
            batched.ms_per_request(),
            single.items_per_second(),
            single.ms_per_request(),
        );
    });
}

struct Figures {
    items: u64,
    requests: u64,
    elapsed: Duration,
}

impl Figures {
    fn items_per_second(&self) -> f64 {
        self.items as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency seen by one client (clients run at once).
    fn ms_per_request(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0 * CLIENTS as f64 / self.requests.max(1) as f64
    }
}

/// `CLIENTS` clients posting batches of `batch` new items for `phase`.
async fn measure(office: &OfficeServer, token: &str, batch: usize, phase: Duration) -> Figures {
    let url = office.url.as_str();
    let items = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (url, token) = (url.to_owned(), token.to_owned());
        let (items, requests) = (items.clone(), requests.clone());
        let http = office.client();
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < phase {
                let body = json!({"screen": "bench-1", "community": "bench-demo",
                                  "items": (0..batch).map(|_| item()).collect::<Vec<_>>()});
                let response = http
                    .post(format!("{url}/api/v1/feedback"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("the office answers");
                let status = response.status();
                let answer: serde_json::Value = response.json().await.expect("a JSON answer");
                let accepted = answer["accepted"].as_array().map_or(0, Vec::len);
                if status != 200 || accepted != batch {
                    eprintln!("unexpected answer {status}: {answer}");
                }
                items.fetch_add(accepted as u64, Ordering::Relaxed);
                requests.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Figures {
        items: items.load(Ordering::Relaxed),
        requests: requests.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

/// A new valid item, of the kinds screens send.
fn item() -> serde_json::Value {
    let id = uuid::Uuid::now_v7().to_string();
    // Receipts: 6 characters of Crockford base32 from the id's random end.
    const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let receipt: String = id
        .bytes()
        .rev()
        .take(6)
        .map(|b| CROCKFORD[usize::from(b) % 32] as char)
        .collect();
    match id.as_bytes()[35] % 3 {
        0 => json!({"id": id, "receipt": receipt, "created_at": "2026-10-08T10:00:00+08:00",
                    "notice_id": "2026q3-finance-001", "notice_version": 3,
                    "kind": "rating", "rating": 3, "reasons": ["clear"]}),
        1 => json!({"id": id, "receipt": receipt, "created_at": "2026-10-08T10:00:00+08:00",
                    "kind": "opinion", "text": "希望在小区东门增加健身器材，并延长活动室的开放时间。",
                    "contact": "13812341234"}),
        _ => json!({"id": id, "receipt": receipt, "created_at": "2026-10-08T10:00:00+08:00",
                    "notice_id": "2026q3-finance-001", "notice_version": 3,
                    "kind": "objection", "reasons": ["amount-unclear"],
                    "text": "环境整治支出与实际工程量不符。"}),
    }
}
