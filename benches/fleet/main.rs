//! A fleet of screens in one process, against a broker the benchmark starts
//! itself: N screens (default 1000; `-- --screens N` or
//! `GONGKAI_FLEET_SCREENS`), each a real `Daemon` with its MQTT session, its
//! verification and a SQLite store in a folder of its own. Printed, not
//! asserted:
//! - the time until the whole fleet is connected and holds the scope;
//! - publish → active across the fleet for one notice (p50, p99, max);
//! - the reconnect storm: the broker restarts (with one notice published
//!   while screens could not reach it) and every screen reconnects at once;
//!   the time until every screen is whole again;
//! - memory per screen (the process's RSS and PSS growth ÷ N), threads and
//!   file descriptors per screen, and the broker's CPU over each interval.
//!
//! Against a single Mosquitto and a 3-node NATS JetStream cluster
//! (`-- --broker mosquitto` or `nats` for one of them).

#[path = "../../tests/it/common/mod.rs"]
mod common;
mod nats;

use std::time::{Duration, Instant};

use common::*;
use gongkai::daemon::Daemon;
use tokio::task::JoinSet;

/// Notices the scope holds before the measurements.
const BASE_NOTICES: usize = 20;
/// How long a phase may take before the screens still waiting are counted
/// as failed.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

fn main() {
    if let Ok(filter) = std::env::var("GONGKAI_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    // `cargo test --all-targets` runs this binary without `--bench`.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("benchmarks run with `cargo bench --bench fleet`");
        return;
    }
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let screens: usize = value_of("--screens")
        .or_else(|| std::env::var("GONGKAI_FLEET_SCREENS").ok())
        .map(|n| n.parse().expect("--screens takes a number"))
        .unwrap_or(1000);
    let which = value_of("--broker");
    raise_open_files(screens);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        if which.as_deref() != Some("nats") {
            if let Some(broker) = Mosquitto::start_stock("fleet", "") {
                run(Brokers::Mosquitto(broker), screens).await;
            }
        }
        if which.as_deref() != Some("mosquitto") {
            if let Some(cluster) = nats::Cluster::start(3) {
                run(Brokers::Nats(cluster), screens).await;
            }
        }
    });
}

/// The broker under test.
enum Brokers {
    Mosquitto(Mosquitto),
    Nats(nats::Cluster),
}

impl Brokers {
    fn describe(&self) -> &'static str {
        match self {
            Brokers::Mosquitto(_) => {
                "one Mosquitto 2.0, defaults (max_inflight_messages 20, max_queued_messages 1000), persistence on"
            }
            Brokers::Nats(_) => {
                "NATS 2.9 cluster of 3, JetStream, MQTT stream_replicas 3, consumer_replicas 3; screens spread over the nodes"
            }
        }
    }

    /// Where screens connect: one URL, or one per node.
    fn urls(&self) -> Vec<String> {
        match self {
            Brokers::Mosquitto(m) => vec![m.url()],
            Brokers::Nats(c) => c.urls(),
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Brokers::Mosquitto(m) => m.pid().into_iter().collect(),
            Brokers::Nats(c) => c.pids(),
        }
    }

    fn stop(&mut self) {
        match self {
            Brokers::Mosquitto(m) => m.stop(),
            Brokers::Nats(c) => c.stop(),
        }
    }

    /// Starts the broker where screens cannot reach it; returns the
    /// office's URL.
    fn start_for_office(&mut self) -> String {
        match self {
            Brokers::Mosquitto(m) => {
                let port = free_port();
                m.restart_on(port);
                format!("mqtt://127.0.0.1:{port}")
            }
            Brokers::Nats(c) => {
                let ports: Vec<u16> = (0..c.urls().len()).map(|_| free_port()).collect();
                c.restart_on(&ports);
                format!("mqtt://127.0.0.1:{}", ports[0])
            }
        }
    }

    fn restart(&mut self) {
        match self {
            Brokers::Mosquitto(m) => m.restart(),
            Brokers::Nats(c) => c.restart(),
        }
    }

    fn cpu_seconds(&self) -> f64 {
        self.pids().into_iter().map(cpu_seconds).sum()
    }

    fn logs(&self) -> String {
        match self {
            Brokers::Mosquitto(_) => String::new(),
            Brokers::Nats(c) => c.logs(),
        }
    }
}

/// A screen of the fleet.
struct Screen {
    id: String,
    daemon: Daemon,
}

async fn run(mut broker: Brokers, n: usize) {
    println!();
    println!("== {n} screens; broker: {}", broker.describe());
    let c = format!("fleet-{}", free_port());
    let office = broker.urls()[0].clone();
    // The issue asks for a street-scope notice; the configuration has no
    // followed scopes yet, so the notice goes to the home community.
    let base: Vec<(String, Vec<u8>)> = (0..BASE_NOTICES)
        .map(|i| {
            let id = format!("base{i:02}");
            let bytes = signed(&notice(&c, &id, 1));
            (id, bytes)
        })
        .collect();
    publish_until_taken(&office, &c, &base, &base, 1).await;

    let before = memory();
    let dir = tempfile::tempdir().unwrap();
    let urls = broker.urls();
    let started = Instant::now();
    let mut screens = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("f{i:05}-{c}");
        let folder = dir.path().join(&id);
        std::fs::create_dir(&folder).unwrap();
        let config = screen_config(
            &urls[i % urls.len()],
            &c,
            &id,
            &folder.join("screen.db"),
        );
        let daemon = Daemon::start(config).await.unwrap();
        screens.push(Screen { id, daemon });
    }
    let all_started = started.elapsed();
    let cpu = broker.cpu_seconds();
    let times = wait_each(&screens, started, |_, cat| {
        holds(cat, BASE_NOTICES, 1)
    })
    .await;
    report(
        &format!("first connect, {BASE_NOTICES} notices (daemons started in {:.1} s)", all_started.as_secs_f64()),
        &times,
        broker.cpu_seconds() - cpu,
        started.elapsed(),
    );
    if times.iter().any(Option::is_none) {
        failed(&broker, &screens);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = memory();
    let (threads, fds) = (threads(), open_files());
    println!(
        "memory per screen: RSS {:.2} MiB, PSS {:.2} MiB (process RSS {:.0} MiB, PSS {:.0} MiB); {:.1} threads and {:.1} file descriptors per screen",
        (after.rss - before.rss) / n as f64,
        (after.pss - before.pss) / n as f64,
        after.rss,
        after.pss,
        threads as f64 / n as f64,
        fds as f64 / n as f64,
    );

    // One notice, published as an office does: the notice, then the manifest.
    let mut all = base.clone();
    let live = ("live".to_owned(), signed(&notice(&c, "live", 1)));
    all.push(live.clone());
    let cpu = broker.cpu_seconds();
    let start = Instant::now();
    publish_until_taken(&office, &c, &[live], &all, 2).await;
    let times = wait_each(&screens, start, |screen, cat| {
        cat.items.get("live").is_some_and(|item| {
            item.is_active(screen, time::OffsetDateTime::now_utc())
        })
    })
    .await;
    report(
        "publish → active, one notice",
        &times,
        broker.cpu_seconds() - cpu,
        start.elapsed(),
    );

    // The reconnect storm: the broker goes down, the office publishes one
    // notice while the screens cannot reach it, the broker comes back and
    // every screen reconnects at once.
    broker.stop();
    let down = Instant::now();
    for screen in &screens {
        let mut connected = screen.daemon.connected.clone();
        let _ = tokio::time::timeout(Duration::from_secs(30), connected.wait_for(|up| !*up)).await;
    }
    println!(
        "broker stopped: every screen saw it within {:.1} s",
        down.elapsed().as_secs_f64()
    );
    let storm = ("storm".to_owned(), signed(&notice(&c, "storm", 1)));
    all.push(storm.clone());
    let office_during = broker.start_for_office();
    publish_until_taken(&office_during, &c, &[storm], &all, 3).await;
    broker.stop();
    let start = Instant::now();
    broker.restart();
    let total = all.len();
    let times = wait_each(&screens, start, move |_, cat| holds(cat, total, 3)).await;
    report(
        "reconnect storm: broker restarted, all whole",
        &times,
        broker.cpu_seconds(),
        start.elapsed(),
    );
    if times.iter().any(Option::is_none) {
        failed(&broker, &screens);
    }

    let mut stopping = JoinSet::new();
    for screen in screens {
        stopping.spawn(screen.daemon.shutdown());
    }
    while stopping.join_next().await.is_some() {}
    broker.stop();
}

/// Whether a screen holds `n` notices and manifest `version` with nothing
/// missing.
fn holds(cat: &gongkai::store::Catalog, n: usize, version: u64) -> bool {
    cat.items.len() == n
        && cat.manifest.as_ref().map(|m| m.version) == Some(version)
        && cat.missing().is_empty()
}

/// How long after `since` each screen satisfied `ok` (given its id and
/// catalog); `None`: not within [`PHASE_LIMIT`].
async fn wait_each(
    screens: &[Screen],
    since: Instant,
    ok: impl Fn(&str, &gongkai::store::Catalog) -> bool + Clone + Send + 'static,
) -> Vec<Option<Duration>> {
    let mut waits = JoinSet::new();
    for (i, screen) in screens.iter().enumerate() {
        let mut catalog = screen.daemon.catalog.clone();
        let ok = ok.clone();
        let id = screen.id.clone();
        waits.spawn(async move {
            let reached = tokio::time::timeout_at(
                (since + PHASE_LIMIT).into(),
                catalog.wait_for(|cat| ok(&id, cat)),
            )
            .await;
            (i, reached.is_ok().then(|| since.elapsed()))
        });
    }
    let mut times = vec![None; screens.len()];
    while let Some(Ok((i, t))) = waits.join_next().await {
        times[i] = t;
    }
    times
}

/// Prints p50, p99 and max of the screens that got there, how many did not,
/// and the broker's CPU over the interval.
fn report(what: &str, times: &[Option<Duration>], broker_cpu: f64, interval: Duration) {
    let mut reached: Vec<Duration> = times.iter().flatten().copied().collect();
    reached.sort();
    let missed = times.len() - reached.len();
    let at = |q: f64| {
        reached
            .get(((reached.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map_or(f64::NAN, Duration::as_secs_f64)
    };
    println!(
        "{what}: p50 {:.2} s, p99 {:.2} s, max {:.2} s over {} screens{}; broker CPU {:.1} s in {:.1} s ({:.0}% of a core)",
        at(0.50),
        at(0.99),
        at(1.0),
        reached.len(),
        if missed > 0 {
            format!(", {missed} NOT within {} s", PHASE_LIMIT.as_secs())
        } else {
            String::new()
        },
        broker_cpu,
        interval.as_secs_f64(),
        100.0 * broker_cpu / interval.as_secs_f64()
    );
}

/// What the screens that did not get there hold, and what the broker said.
fn failed(broker: &Brokers, screens: &[Screen]) {
    let mut connected = 0;
    let mut shown = 0;
    for screen in screens {
        connected += usize::from(*screen.daemon.connected.borrow());
        let cat = screen.daemon.catalog.borrow();
        if shown < 5 && !cat.missing().is_empty() || cat.manifest.is_none() {
            shown += 1;
            println!(
                "    {}: {} notices, manifest {:?}, {} missing",
                screen.id,
                cat.items.len(),
                cat.manifest.as_ref().map(|m| m.version),
                cat.missing().len()
            );
        }
    }
    println!("    {connected} of {} screens connected", screens.len());
    let logs = broker.logs();
    let mut errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("[ERR]") || l.contains("[WRN]"))
        .collect();
    errors.dedup();
    for line in errors.iter().rev().take(10).rev() {
        println!("    broker: {line}");
    }
}

/// Publishes `notices`, then the manifest `version` listing `listed`,
/// reconnecting and retrying until the broker takes them (a restarted
/// cluster takes a while to accept MQTT).
async fn publish_until_taken(
    url: &str,
    c: &str,
    notices: &[(String, Vec<u8>)],
    listed: &[(String, Vec<u8>)],
    version: u64,
) {
    let entries: Vec<(String, u64, &[u8])> = listed
        .iter()
        .map(|(id, b)| (id.clone(), 1, b.as_slice()))
        .collect();
    let manifest_bytes = manifest(c, version, &entries);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = async {
            let connect = gongkai::mqtt::Connect::cli(url, None, None)?;
            let mut client = gongkai::office::broker::OneShotClient::connect(&connect).await?;
            let messages = notices
                .iter()
                .map(|(id, b)| (topics(c).notice(id), b.clone()))
                .collect();
            client.publish_retained_many(messages).await?;
            client
                .publish_retained(&topics(c).manifest(), manifest_bytes.clone())
                .await?;
            client.close().await;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(20), attempt).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => assert!(Instant::now() < deadline, "cannot publish: {e:#}"),
            Err(_) => assert!(Instant::now() < deadline, "cannot publish: timed out"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The process's resident and proportional set sizes, in MiB.
struct Memory {
    rss: f64,
    pss: f64,
}

fn memory() -> Memory {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    Memory {
        rss: field("Rss:"),
        pss: field("Pss:"),
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A process's user and system CPU time, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name in parentheses may hold spaces: count from after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of stat(5) are utime and stime; the first after the
    // name is field 3.
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Each screen holds a dozen file descriptors (its store, the relay's
/// sockets, the broker connection): raise the soft limit to the hard one
/// when the fleet needs more than it allows (`prlimit`, as the code has no
/// unsafe call to make).
fn raise_open_files(screens: usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some((soft, hard)) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            Some((v.get(3)?.parse::<u64>().ok()?, v.get(4)?.parse::<u64>().ok()?))
        })
    else {
        return;
    };
    let need = 16 * screens as u64 + 256;
    if soft < need {
        let _ = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={hard}:{hard}"),
            ])
            .status();
    }
    if hard < need {
        println!("open files limited to {hard}; {screens} screens may need {need}");
    }
}
