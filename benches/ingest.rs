//! Benchmarks of the screen's data path, printed as figures (not asserted):
//! - catch-up: the time until a screen is whole (every notice the manifest
//!   lists verified and stored) in the cases a real screen meets, on a
//!   Mosquitto of its own with persistence on: a fresh install, a return
//!   after an outage that overflowed its session's queue, a broker restart
//!   while it was away, and a first connect to a scope of 10,000 notices;
//! - office publish → notice in the screen's active set, 200 publishes;
//! - resident memory of `gongkaid --headless` holding 10,000 notices.
//!
//! `cargo bench --bench ingest` prints them all; `-- catch-up` only the
//! catch-up table. `GONGKAI_BENCH_LOG=debug` shows what the daemon does while
//! measured.

#[path = "../tests/it/common/mod.rs"]
mod common;
#[path = "fleet/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use common::*;
use gongkai::daemon::Daemon;

/// How long a case may take before it is reported as not whole.
const GIVE_UP: Duration = Duration::from_secs(120);

/// What the README recommends for a district's broker.
const RECOMMENDED: &str = "max_inflight_messages 1000\nmax_queued_messages 20000";

fn main() {
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
    let args: Vec<String> = std::env::args().collect();
    let only_catch_up = args.iter().any(|a| a == "catch-up");
    let wanted: Vec<String> = args
        .iter()
        .filter(|a| CASES.contains(&a.as_str()))
        .cloned()
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        if Mosquitto::start_stock("bench", "").is_none() {
            return;
        }
        let rows = catch_up_table(&wanted).await;
        print_table(&rows);
        if only_catch_up {
            return;
        }
        let notices = make_notices("bench-rss", 10_000);
        let broker = Mosquitto::start_stock("bench", RECOMMENDED).unwrap();
        load(&broker, &notices, false).await;
        resident_memory(&broker, &notices).await;
        publish_to_active().await;
    });
}

/// The settings of a benchmark's broker.
#[derive(Clone, Copy)]
enum Settings {
    /// Mosquitto as installed, persistence on.
    Stock,
    /// Persistence saved after every change: the tests' broker (see
    /// `Mosquitto::start`), which the figures of earlier versions of this
    /// benchmark came from.
    SaveEveryChange,
    /// [`RECOMMENDED`], persistence on.
    Recommended,
}

impl Settings {
    fn start(self) -> Mosquitto {
        match self {
            Settings::Stock => Mosquitto::start_stock("bench", ""),
            Settings::SaveEveryChange => Mosquitto::start("bench", ""),
            Settings::Recommended => Mosquitto::start_stock("bench", RECOMMENDED),
        }
        .unwrap()
    }

    fn describe(self) -> &'static str {
        match self {
            Settings::Stock => {
                "Mosquitto 2.0 defaults (inflight 20, queue 1000), persistence on, autosave 1800 s"
            }
            Settings::SaveEveryChange => {
                "Mosquitto defaults, persistence saved on every change (autosave_on_changes, interval 1)"
            }
            Settings::Recommended => {
                "Mosquitto, README settings (inflight 1000, queue 20000), persistence on"
            }
        }
    }
}

/// One line of the table.
struct Row {
    case: &'static str,
    broker: &'static str,
    notices: usize,
    /// `Err` with the state reached when the screen was not whole in time.
    whole_after: Result<Duration, String>,
    fetched: u64,
    spent: Meter,
}

/// What the broker spent over a case: CPU seconds, and how many times it
/// wrote its whole persistence file.
#[derive(Default)]
struct Meter {
    cpu: f64,
    saves: usize,
}

impl Meter {
    fn read(broker: &Mosquitto) -> Meter {
        Meter {
            cpu: broker.pid().map_or(0.0, cpu_seconds),
            saves: broker
                .log_text()
                .matches("Saving in-memory database")
                .count(),
        }
    }

    /// From `start` to now; `restarted` when the process is a new one since.
    fn since(start: &Meter, broker: &Mosquitto, restarted: bool) -> Meter {
        let now = Meter::read(broker);
        Meter {
            cpu: now.cpu - if restarted { 0.0 } else { start.cpu },
            saves: now.saves - start.saves,
        }
    }
}

/// The catch-up cases, by the name that selects one
/// (`cargo bench --bench ingest -- catch-up b c`).
const CASES: &[&str] = &[
    "a",
    "a-save-every-change",
    "b",
    "c",
    "d",
    "10k",
    "10k-recommended",
    "a-nats",
    "10k-nats",
];

async fn catch_up_table(wanted: &[String]) -> Vec<Row> {
    // 2,000 notices, more than one manifest envelope lists (about 1,900):
    // the manifests are paged (PROTOCOL 3.6), as `gongkai publish` writes
    // them, and so are those of 10,000.
    let n = 2_000;
    let mut rows = Vec::new();
    for case in CASES {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == case) {
            continue;
        }
        rows.push(match *case {
            "a" => fresh_install(Settings::Stock, n).await,
            "a-save-every-change" => fresh_install(Settings::SaveEveryChange, n).await,
            "b" => return_after_outage(Settings::Stock, n).await,
            "c" => broker_restart(Settings::Stock, n).await,
            "d" => published_while_online(Settings::Stock, n).await,
            "10k" => fresh_install(Settings::Stock, 10_000).await,
            "10k-recommended" => fresh_install(Settings::Recommended, 10_000).await,
            "a-nats" => fresh_install_nats(n).await,
            _ => fresh_install_nats(10_000).await,
        });
    }
    rows
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<46} | {:<86} | {:>7} | {:>13} | {:>7} | {:>10} | {:>8}",
        "case",
        "broker and its settings",
        "notices",
        "time to whole",
        "fetched",
        "broker CPU",
        "db saves"
    );
    println!("{}", "-".repeat(46 + 86 + 7 + 13 + 7 + 10 + 8 + 18));
    for r in rows {
        let time = match &r.whole_after {
            Ok(d) => format!("{:.2} s", d.as_secs_f64()),
            Err(_) => "NOT WHOLE".to_owned(),
        };
        println!(
            "{:<46} | {:<86} | {:>7} | {:>13} | {:>7} | {:>8.2} s | {:>8}",
            r.case, r.broker, r.notices, time, r.fetched, r.spent.cpu, r.spent.saves
        );
        if let Err(state) = &r.whole_after {
            println!("    after {} s: {state}", GIVE_UP.as_secs());
        }
    }
    println!();
}

/// The notices of one scope, signed: (scope, [(id, envelope)]).
type Notices = (String, Vec<(String, Vec<u8>)>);

fn make_notices(scope: &str, n: usize) -> Notices {
    // A scope of its own per run: the screen's client id derives from it.
    let c = format!("{scope}-{}", free_port());
    let all = (0..n)
        .map(|i| {
            let id = format!("n{i:05}");
            let mut payload = notice(&c, &id, 1);
            payload["body"] = serde_json::json!([
                {"type": "paragraph", "text": "根据居务公开制度，现将本社区有关事项公开如下，接受居民监督。如有异议，请在公示期内向社区居务监督委员会反映。"},
                {"type": "table", "header": ["项目", "金额（元）"], "rows": [["办公经费", "12,000.00"], ["环境整治", "20,400.00"]]}
            ]);
            let bytes = signed(&payload);
            (id, bytes)
        })
        .collect();
    (c, all)
}

/// Publishes every notice retained, then (with `manifest`) the manifest
/// listing them, its pages first when one envelope cannot hold it: what
/// `gongkai publish` does. Without, only the notices.
async fn load(broker: &Mosquitto, notices: &Notices, manifest: bool) {
    load_at(&broker.url(), notices, manifest).await
}

async fn load_at(url: &str, (c, all): &Notices, manifest: bool) {
    if manifest {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<std::path::PathBuf> = all
            .iter()
            .map(|(id, bytes)| {
                let path = dir.path().join(format!("{id}.json"));
                std::fs::write(&path, bytes).unwrap();
                path
            })
            .collect();
        let connect = gongkai::mqtt::Connect::cli(url, None, None).unwrap();
        gongkai::office::publish(&connect, PREFIX, &office_key(), &files)
            .await
            .unwrap();
        return;
    }
    let mut client = publisher(url).await;
    let messages: Vec<(String, Vec<u8>)> = all
        .iter()
        .map(|(id, b)| (topics(c).notice(id), b.clone()))
        .collect();
    client.publish_retained_many(messages).await.unwrap();
    client.close().await;
}

/// An empty manifest, the scope's first: the screen has one before the
/// notices of a case come.
async fn empty_manifest(url: &str, c: &str) {
    let mut client = publisher(url).await;
    client
        .publish_retained(&topics(c).manifest(), manifest(c, 1, &[]))
        .await
        .unwrap();
    client.close().await;
}

fn config_for(url: &str, c: &str, dir: &std::path::Path) -> gongkai::config::Config {
    screen_config(url, c, &screen_id(c), &dir.join("screen.db"))
}

/// Waits until the screen holds all `n` notices and the manifest of
/// `version` (when there is one) with nothing missing; `Err` says where it
/// stood after [`GIVE_UP`].
async fn whole(daemon: &Daemon, n: usize, version: Option<u64>) -> Result<(), String> {
    let mut catalog = daemon.catalog.clone();
    let done = tokio::time::timeout(
        GIVE_UP,
        catalog.wait_for(|cat| {
            cat.items.len() == n
                && cat.manifests.values().next().map(|m| m.version) == version
                && cat.manifests.values().all(|m| m.missing_pages().is_empty())
                && cat.missing().is_empty()
        }),
    )
    .await;
    match done {
        Ok(Ok(_)) => Ok(()),
        _ => {
            let cat = daemon.catalog.borrow();
            Err(format!(
                "{} notices held, manifest version {:?}, {} missing",
                cat.items.len(),
                cat.manifests.values().next().map(|m| m.version),
                cat.missing().len()
            ))
        }
    }
}

/// (a) A screen installed in a scope with `n` retained notices.
async fn fresh_install(settings: Settings, n: usize) -> Row {
    let broker = settings.start();
    let notices = make_notices("fresh", n);
    load(&broker, &notices, true).await;
    let dir = tempfile::tempdir().unwrap();
    let meter = Meter::read(&broker);
    let start = Instant::now();
    let daemon = Daemon::start(config_for(&broker.url(), &notices.0, dir.path()))
        .await
        .unwrap();
    let result = whole(&daemon, n, Some(1)).await;
    let elapsed = start.elapsed();
    let spent = Meter::since(&meter, &broker, false);
    let fetched = fetched(&daemon);
    daemon.shutdown().await;
    Row {
        case: match n {
            10_000 => "first connect, 10,000, paged manifest",
            _ => "(a) fresh install",
        },
        broker: settings.describe(),
        notices: n,
        whole_after: result.map(|()| elapsed),
        fetched,
        spent,
    }
}

/// (a) on a NATS JetStream cluster of three (see `nats`): the screen
/// connects to one node, the office publishes through another.
async fn fresh_install_nats(n: usize) -> Row {
    let Some(cluster) = nats::Cluster::start(3, 3) else {
        return Row {
            case: "(a) fresh install, NATS",
            broker: "no nats-server",
            notices: n,
            whole_after: Err("not run".into()),
            fetched: 0,
            spent: Meter::default(),
        };
    };
    let urls = cluster.urls();
    cluster.wait_ready().await;
    let notices = make_notices("fresh", n);
    load_at(&urls[1], &notices, true).await;
    let cpu: f64 = cluster.pids().into_iter().map(cpu_seconds).sum();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let daemon = Daemon::start(config_for(&urls[0], &notices.0, dir.path()))
        .await
        .unwrap();
    let result = whole(&daemon, n, Some(1)).await;
    let elapsed = start.elapsed();
    let cpu = cluster.pids().into_iter().map(cpu_seconds).sum::<f64>() - cpu;
    let fetched = fetched(&daemon);
    daemon.shutdown().await;
    Row {
        case: if n == 10_000 {
            "first connect, 10,000, paged manifest, NATS"
        } else {
            "(a) fresh install, NATS"
        },
        broker: "NATS 2.9 cluster of 3, JetStream, MQTT stream and consumer replicas 3",
        notices: n,
        whole_after: result.map(|()| elapsed),
        fetched,
        spent: Meter { cpu, saves: 0 },
    }
}

/// (b) A screen that was whole, then off while the office published `n`
/// notices: its persistent session's queue overflowed past 1,000.
async fn return_after_outage(settings: Settings, n: usize) -> Row {
    let broker = settings.start();
    let notices = make_notices("outage", n);
    let c = &notices.0;
    empty_manifest(&broker.url(), c).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config_for(&broker.url(), c, dir.path()))
        .await
        .unwrap();
    whole(&daemon, 0, Some(1)).await.unwrap();
    daemon.shutdown().await;

    load(&broker, &notices, true).await;
    let meter = Meter::read(&broker);
    let start = Instant::now();
    let daemon = Daemon::start(config_for(&broker.url(), c, dir.path()))
        .await
        .unwrap();
    let result = whole(&daemon, n, Some(2)).await;
    let elapsed = start.elapsed();
    let spent = Meter::since(&meter, &broker, false);
    let fetched = fetched(&daemon);
    daemon.shutdown().await;
    Row {
        case: "(b) return after an outage, queue overflowed",
        broker: settings.describe(),
        notices: n,
        whole_after: result.map(|()| elapsed),
        fetched,
        spent,
    }
}

/// (c) A running screen whose broker went down; the office published `n`
/// notices to the broker while screens could not reach it (on a listener of
/// the office's own), then the broker restarted with its persistence and the
/// screen reconnected by itself. Timed from the restart.
async fn broker_restart(settings: Settings, n: usize) -> Row {
    let mut broker = settings.start();
    let notices = make_notices("restart", n);
    let c = &notices.0;
    empty_manifest(&broker.url(), c).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config_for(&broker.url(), c, dir.path()))
        .await
        .unwrap();
    whole(&daemon, 0, Some(1)).await.unwrap();

    broker.stop();
    let mut connected = daemon.connected.clone();
    connected.wait_for(|up| !*up).await.unwrap();
    let office = free_port();
    broker.restart_on(office);
    load_at(&format!("mqtt://127.0.0.1:{office}"), &notices, true).await;
    broker.stop();
    let meter = Meter::read(&broker);
    broker.restart();
    let start = Instant::now();
    let result = whole(&daemon, n, Some(2)).await;
    let elapsed = start.elapsed();
    let spent = Meter::since(&meter, &broker, true);
    let fetched = fetched(&daemon);
    daemon.shutdown().await;
    Row {
        case: "(c) broker restart while the screen was away",
        broker: settings.describe(),
        notices: n,
        whole_after: result.map(|()| elapsed),
        fetched,
        spent,
    }
}

/// (d) A screen online and whole while the office publishes `n` notices
/// at once: more than the broker's queue for the screen holds, and the
/// manifest comes last. Timed from the start of the publication.
async fn published_while_online(settings: Settings, n: usize) -> Row {
    let broker = settings.start();
    let notices = make_notices("online", n);
    let c = &notices.0;
    empty_manifest(&broker.url(), c).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(config_for(&broker.url(), c, dir.path()))
        .await
        .unwrap();
    whole(&daemon, 0, Some(1)).await.unwrap();
    let meter = Meter::read(&broker);
    let start = Instant::now();
    load(&broker, &notices, true).await;
    let result = whole(&daemon, n, Some(2)).await;
    let elapsed = start.elapsed();
    let spent = Meter::since(&meter, &broker, false);
    let fetched = fetched(&daemon);
    daemon.shutdown().await;
    Row {
        case: "(d) online while the office publishes at once",
        broker: settings.describe(),
        notices: n,
        whole_after: result.map(|()| elapsed),
        fetched,
        spent,
    }
}

async fn resident_memory(broker: &Mosquitto, (c, all): &Notices) {
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
    let deadline = Instant::now() + GIVE_UP;
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
    let broker = Mosquitto::start_stock("bench", "").unwrap();
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
        "publish to active, 200 publishes, stock Mosquitto: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(latencies[99]),
        ms(latencies[197]),
        ms(latencies[199])
    );
    client.close().await;
    daemon.shutdown().await;
}
