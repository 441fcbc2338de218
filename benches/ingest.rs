//! Benchmarks of the screen's data path, printed as figures (not asserted):
//! - 10,000 signed notices retained on the broker, first connect: time until
//!   all are verified and stored;
//! - office publish → notice in the screen's active set, 200 publishes;
//! - resident memory of `gongkaid --headless` holding 10,000 notices.
//!
//! Each uses a Mosquitto process of its own on a free port (`cargo bench`).

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use gongkai::daemon::Daemon;

fn main() {
    // GONGKAI_BENCH_LOG=debug shows what the daemon does while measured.
    if let Ok(filter) = std::env::var("GONGKAI_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo test --all-targets` runs this binary without `--bench`: the
    // figures are for `cargo bench`, in an optimised build.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench --bench ingest`");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        if Mosquitto::start("bench", "").is_none() {
            return;
        }
        // A manifest lists at most about 1,900 notices (the 256 KiB envelope
        // limit), so 10,000 notices go without one, on a broker whose queue
        // holds them all; the manifest's catch-up is measured with 1,800
        // notices on Mosquitto's defaults, which drop past 1,000 queued.
        // `cargo bench --bench ingest -- catch-up` runs only the catch-up figures.
        if std::env::args().any(|a| a == "catch-up") {
            let some = make_notices("bench-1800", 1_800);
            first_connect(&some, true, "Mosquitto with max_inflight_messages 200, default queue, with manifest", "max_inflight_messages 200").await;
            return;
        }
        let notices = make_notices("bench-10k", 10_000);
        let broker = first_connect(
            &notices,
            false,
            "Mosquitto with max_inflight_messages 1000, max_queued_messages 20000, no manifest",
            "max_queued_messages 20000\nmax_inflight_messages 1000",
        )
        .await;
        let some = make_notices("bench-1800", 1_800);
        first_connect(&some, true, "Mosquitto defaults (max_inflight_messages 20, max_queued_messages 1000), with manifest", "").await;
        first_connect(&some, true, "Mosquitto with max_inflight_messages 200, default queue, with manifest", "max_inflight_messages 200").await;
        resident_memory(&broker, &notices).await;
        publish_to_active().await;
    });
}

fn make_notices(c: &str, n: usize) -> (String, Vec<(String, Vec<u8>)>) {
    let start = Instant::now();
    let all: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let id = format!("n{i:05}");
            let mut payload = notice(c, &id, 1);
            payload["body"] = serde_json::json!([
                {"type": "paragraph", "text": "根据居务公开制度，现将本社区有关事项公开如下，接受居民监督。如有异议，请在公示期内向社区居务监督委员会反映。"},
                {"type": "table", "header": ["项目", "金额（元）"], "rows": [["办公经费", "12,000.00"], ["环境整治", "20,400.00"]]}
            ]);
            let bytes = signed(&payload);
            (id, bytes)
        })
        .collect();
    println!(
        "signed {n} notices (office + supervisor) in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    (c.to_owned(), all)
}

async fn load(
    broker: &Mosquitto,
    (c, all): &(String, Vec<(String, Vec<u8>)>),
    with_manifest: bool,
) {
    let mut client = publisher(&broker.url()).await;
    let messages: Vec<(String, Vec<u8>)> = all
        .iter()
        .map(|(id, b)| (topics(c).notice(id), b.clone()))
        .collect();
    client.publish_retained_many(messages).await.unwrap();
    if !with_manifest {
        client.close().await;
        return;
    }
    let entries: Vec<(String, u64, &[u8])> = all
        .iter()
        .map(|(id, b)| (id.clone(), 1, b.as_slice()))
        .collect();
    client
        .publish_retained(&topics(c).manifest(), manifest(c, 1, &entries))
        .await
        .unwrap();
    client.close().await;
}

async fn first_connect(
    notices: &(String, Vec<(String, Vec<u8>)>),
    with_manifest: bool,
    label: &str,
    extra: &str,
) -> Mosquitto {
    let broker = Mosquitto::start("bench", extra).unwrap();
    load(&broker, notices, with_manifest).await;
    let (c, all) = notices;
    let dir = tempfile::tempdir().unwrap();
    let config = screen_config(
        &broker.url(),
        c,
        &format!("bench-{}", free_port()),
        &dir.path().join("screen.db"),
    );
    let start = Instant::now();
    let daemon = Daemon::start(config).await.unwrap();
    let mut catalog = daemon.catalog.clone();
    let n = all.len();
    tokio::time::timeout(
        Duration::from_secs(120),
        catalog.wait_for(|cat| {
            cat.items.len() == n
                && (!cat.manifests.is_empty() || !with_manifest)
                && cat.missing().is_empty()
        }),
    )
    .await
    .expect("all notices within two minutes")
    .unwrap();
    let elapsed = start.elapsed();
    let fetched = fetched(&daemon);
    println!(
        "first connect, {n} retained notices, {label}: all verified and stored in {:.2} s ({fetched} fetched through the manifest)",
        elapsed.as_secs_f64()
    );
    daemon.shutdown().await;
    broker
}

async fn resident_memory(broker: &Mosquitto, (c, all): &(String, Vec<(String, Vec<u8>)>)) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("screen.db");
    let config = dir.path().join("gongkaid.toml");
    std::fs::write(
        &config,
        config_text(&broker.url(), c, &format!("rss-{}", free_port()), &store),
    )
    .unwrap();
    let daemon = DaemonProcess::start(&config, &dir.path().join("daemon.log"));
    let n = all.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stored_versions(&store).len() < n {
        assert!(
            Instant::now() < deadline,
            "the daemon did not store {n} notices"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0)
            .unwrap_or(0.0)
    };
    println!(
        "gongkaid --headless holding {n} notices: RSS {:.1} MiB (peak {:.1} MiB)",
        field("VmRSS:"),
        field("VmHWM:")
    );
}

async fn publish_to_active() {
    let broker = Mosquitto::start("bench", "").unwrap();
    let c = community("latency");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_screen(&broker.url(), &c, &dir.path().join("screen.db")).await;
    wait_connected(&daemon).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = publisher(&broker.url()).await;
    let screen = screen_id(&c);
    let mut latencies = Vec::new();
    for i in 0..200 {
        let id = format!("live{i:03}");
        let bytes = signed(&notice(&c, &id, 1));
        let mut catalog = daemon.catalog.clone();
        let start = Instant::now();
        client
            .publish_retained(&topics(&c).notice(&id), bytes)
            .await
            .unwrap();
        catalog
            .wait_for(|cat| {
                cat.item(&c, &id).is_some_and(|item| {
                    item.is_active(
                        &gongkai::schedule::Audience::new(&screen, &c),
                        time::OffsetDateTime::now_utc(),
                    )
                })
            })
            .await
            .unwrap();
        latencies.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "publish to active, 200 publishes, real Mosquitto: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(latencies[99]),
        ms(latencies[197]),
        ms(latencies[199])
    );
    client.close().await;
    daemon.shutdown().await;
}
