//! A fleet of screens in one process, against a broker the benchmark starts
//! itself: N screens (default 1000; `-- --screens N` or
//! `GONGKAI_FLEET_SCREENS`), each a real `Daemon` with its MQTT session, its
//! verification and a SQLite store in a folder of its own. Printed, not
//! asserted:
//! - the time until the whole fleet is connected and holds the scope;
//! - publish → active across the fleet for one notice (p50, p99, max);
//! - the reconnect storm: the broker restarts (after `--outage S` seconds
//!   down, default 0), every screen reconnects at once, and the street
//!   office publishes one notice as soon as the broker takes it; the time
//!   until every screen is whole again, that notice included;
//! - memory per screen (the process's RSS and PSS growth ÷ N), threads and
//!   file descriptors per screen, and the broker's CPU over each interval.
//!
//! Against a single Mosquitto and a 3-node NATS JetStream cluster
//! (`-- --broker mosquitto` or `nats` for one of them; `--consumer-replicas
//! N`, default 3, sets the NATS gateway's `consumer_replicas`).

#[path = "../../tests/it/common/mod.rs"]
mod common;
mod nats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use gongkai::config::Config;
use gongkai::daemon::Daemon;
use gongkai::office::broker::OneShotClient;
use gongkai::schedule::Audience;
use gongkai::store::Catalog;
use tokio::task::{JoinHandle, JoinSet};

/// Notices each community holds before the measurements.
const BASE_NOTICES: usize = 20;
/// Notices the street holds before the measurements.
const STREET_NOTICES: usize = 5;
/// Screens per community: a lobby screen per building, fifty buildings.
const SCREENS_PER_COMMUNITY: usize = 50;
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
    let outage = Duration::from_secs_f64(
        value_of("--outage")
            .map(|s| s.parse().expect("--outage takes seconds"))
            .unwrap_or(0.0),
    );
    raise_open_files(screens);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        if which.as_deref() != Some("nats") {
            if let Some(broker) = Mosquitto::start_stock("fleet", "") {
                run(Brokers::Mosquitto(broker), screens, outage).await;
            }
        }
        if which.as_deref() != Some("mosquitto") {
            let replicas = value_of("--consumer-replicas")
                .map(|n| n.parse().expect("--consumer-replicas takes a number"))
                .unwrap_or(3);
            if let Some(cluster) = nats::Cluster::start(3, replicas) {
                run(Brokers::Nats(cluster), screens, outage).await;
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
    fn describe(&self) -> String {
        match self {
            Brokers::Mosquitto(_) => {
                "one Mosquitto 2.0, defaults (max_inflight_messages 20, max_queued_messages 1000), persistence on".into()
            }
            Brokers::Nats(c) => format!(
                "NATS 2.9 cluster of 3, JetStream, MQTT stream_replicas 3, consumer_replicas {}; screens spread over the nodes",
                c.consumer_replicas
            ),
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
    community: String,
    daemon: Daemon,
}

/// The street office's keys: a scope's own keys count in no other (PROTOCOL
/// 3.7).
fn street_office() -> gongkai::protocol::SecretKey {
    gongkai::protocol::SecretKey::from_seed([4; 32])
}

fn street_supervisor() -> gongkai::protocol::SecretKey {
    gongkai::protocol::SecretKey::from_seed([5; 32])
}

/// The configuration of a screen of `community` following `street`.
fn fleet_config(url: &str, community: &str, street: &str, id: &str, store: &Path) -> Config {
    Config::parse(&format!(
        "{}\n[[follow]]\nscope = \"{street}\"\noffice = [\"{}\"]\nsupervisor = [\"{}\"]\n",
        config_text(url, community, id, store),
        street_office().public().to_base64(),
        street_supervisor().public().to_base64(),
    ))
    .unwrap()
}

/// Where the fleet stands: what every screen must hold to be whole.
#[derive(Clone)]
struct Expected {
    /// Notices per screen: its community's and the street's.
    notices: usize,
    /// The street's manifest version (each community's stays at 1).
    street_version: u64,
}

async fn run(mut broker: Brokers, n: usize, outage: Duration) {
    println!();
    println!("== {n} screens; broker: {}", broker.describe());
    if let Brokers::Nats(cluster) = &broker {
        cluster.wait_ready().await;
    }
    let tag = free_port();
    let street = format!("street-{tag}");
    let communities: Vec<String> = (0..n.div_ceil(SCREENS_PER_COMMUNITY))
        .map(|k| format!("c{k:03}-{tag}"))
        .collect();
    let office = broker.urls()[0].clone();
    let work = tempfile::tempdir().unwrap();
    for c in &communities {
        let notices: Vec<serde_json::Value> = (0..BASE_NOTICES)
            .map(|i| notice(c, &format!("base{i:02}"), 1))
            .collect();
        publish_until_taken(
            &office,
            work.path(),
            &notices,
            &[&office_key(), &supervisor_key()],
        )
        .await;
    }
    let street_keys = [&street_office(), &street_supervisor()];
    let street_base: Vec<serde_json::Value> = (0..STREET_NOTICES)
        .map(|i| notice(&street, &format!("street{i:02}"), 1))
        .collect();
    let mut street_listed =
        publish_until_taken(&office, work.path(), &street_base, &street_keys).await;
    let mut expected = Expected {
        notices: BASE_NOTICES + STREET_NOTICES,
        street_version: 1,
    };

    let before = memory();
    let dir = tempfile::tempdir().unwrap();
    let urls = broker.urls();
    let cpu = broker.cpu_seconds();
    let started = Instant::now();
    let mut screens = Vec::with_capacity(n);
    let mut starts = Vec::with_capacity(n);
    let mut whole = Vec::with_capacity(n);
    for i in 0..n {
        let community = communities[i / SCREENS_PER_COMMUNITY].clone();
        let id = format!("s{i:05}-{tag}");
        let folder = dir.path().join(&id);
        std::fs::create_dir(&folder).unwrap();
        let config = fleet_config(
            &urls[i % urls.len()],
            &community,
            &street,
            &id,
            &folder.join("screen.db"),
        );
        starts.push(Instant::now());
        let daemon = Daemon::start(config).await.unwrap();
        let screen = Screen {
            id,
            community,
            daemon,
        };
        let want = expected.clone();
        whole.push(watch(&screen, move |_, cat| holds(cat, &want)));
        screens.push(screen);
    }
    let all_started = started.elapsed();
    let times = times_since(whole, &starts).await;
    report(
        &format!(
            "first connect, each from its start, {} notices each (daemons started one after another in {:.1} s)",
            expected.notices,
            all_started.as_secs_f64()
        ),
        &times,
        broker.cpu_seconds() - cpu,
        started.elapsed(),
    );
    let first_connect_failed = times.iter().any(Option::is_none);
    if first_connect_failed {
        failed(&broker, &screens);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = memory();
    let (threads, fds) = (threads(), open_files());
    println!(
        "memory per screen: RSS {:.2} MiB, PSS {:.2} MiB (process RSS {:.0} MiB, PSS {:.0} MiB); {:.2} threads and {:.1} file descriptors per screen",
        (after.rss - before.rss) / n as f64,
        (after.pss - before.pss) / n as f64,
        after.rss,
        after.pss,
        threads as f64 / n as f64,
        fds as f64 / n as f64,
    );

    if first_connect_failed {
        println!("the fleet never was whole: the other figures are not measured");
        stop(screens, broker).await;
        return;
    }

    // One street notice, published as the street office does: the notice,
    // then the street's next manifest. (Timed from the notice's PUBLISH:
    // `gongkai publish` first reads the retained manifest back, which takes
    // it most of a second.)
    let live = signed_by(&notice(&street, "live", 1), &street_keys);
    street_listed.push(("live".to_owned(), live.clone()));
    let entries: Vec<(String, u64, &[u8])> = street_listed
        .iter()
        .map(|(id, b)| (id.clone(), 1, b.as_slice()))
        .collect();
    let street_manifest = manifest_signed_by(&street, 2, &entries, &street_office());
    let in_street = street.clone();
    let active: Vec<_> = screens
        .iter()
        .map(|screen| {
            let in_street = in_street.clone();
            watch(screen, move |who, cat| {
                cat.item(&in_street, "live").is_some_and(|item| {
                    item.is_active(
                        &Audience::new(&who.id, &who.community),
                        time::OffsetDateTime::now_utc(),
                    )
                })
            })
        })
        .collect();
    let cpu = broker.cpu_seconds();
    let start = Instant::now();
    let sent = publish_retrying(
        &office,
        &[
            (topics(&street).notice("live"), live),
            (topics(&street).manifest(), street_manifest),
        ],
    )
    .await;
    let times = times_since(active, &vec![start; n]).await;
    println!("  (the office's two PUBLISHes: {sent})");
    report(
        "publish → active, one street notice",
        &times,
        broker.cpu_seconds() - cpu,
        start.elapsed(),
    );
    expected.notices += 1;
    expected.street_version += 1;

    // The reconnect storm: the broker restarts and every screen reconnects
    // at once, while the street office publishes one notice as soon as the
    // broker takes it again.
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
    if !outage.is_zero() {
        tokio::time::sleep(outage).await;
    }
    expected.notices += 1;
    expected.street_version += 1;
    let reconnected: Vec<_> = screens.iter().map(watch_connected).collect();
    let whole: Vec<_> = screens
        .iter()
        .map(|screen| {
            let want = expected.clone();
            watch(screen, move |_, cat| holds(cat, &want))
        })
        .collect();
    let start = Instant::now();
    broker.restart();
    println!(
        "broker restarted: listening {:.1} s after the restart began, {:.1} s after it stopped",
        start.elapsed().as_secs_f64(),
        down.elapsed().as_secs_f64()
    );
    let publishing = {
        let (url, dir, street) = (office.clone(), work.path().to_owned(), street.clone());
        tokio::spawn(async move {
            let keys = [street_office(), street_supervisor()];
            let storm = notice(&street, "storm", 1);
            publish_until_taken(&url, &dir, &[storm], &[&keys[0], &keys[1]]).await;
            Instant::now()
        })
    };
    let times = times_since(whole, &vec![start; n]).await;
    let taken = publishing.await.unwrap();
    println!(
        "  (the street office's notice was taken {:.2} s after the restart began)",
        taken.duration_since(start).as_secs_f64()
    );
    report(
        "reconnect storm: broker restarted, all whole",
        &times,
        broker.cpu_seconds(),
        start.elapsed(),
    );
    report(
        "  of which: reconnected (each screen's own backoff)",
        &times_since(reconnected, &vec![start; n]).await,
        f64::NAN,
        start.elapsed(),
    );
    if times.iter().any(Option::is_none) {
        failed(&broker, &screens);
    }

    stop(screens, broker).await;
}

/// Shuts every screen down at once, then the broker.
async fn stop(screens: Vec<Screen>, mut broker: Brokers) {
    let mut stopping = JoinSet::new();
    for screen in screens {
        stopping.spawn(screen.daemon.shutdown());
    }
    while stopping.join_next().await.is_some() {}
    broker.stop();
}

/// Whether a screen holds what it should, both manifests, nothing missing.
fn holds(cat: &Catalog, expected: &Expected) -> bool {
    cat.items.len() == expected.notices
        && cat.manifests.len() == 2
        && cat
            .manifests
            .iter()
            .any(|(scope, m)| scope.starts_with("street-") && m.version == expected.street_version)
        && cat.missing().is_empty()
}

/// When the screen is connected again (`None`: not within [`PHASE_LIMIT`]),
/// watched from now on.
fn watch_connected(screen: &Screen) -> JoinHandle<Option<Instant>> {
    let mut connected = screen.daemon.connected.clone();
    // Seen down first: the broker is stopped when the watch begins.
    connected.borrow_and_update();
    tokio::spawn(async move {
        let up = tokio::time::timeout(PHASE_LIMIT, connected.wait_for(|up| *up)).await;
        matches!(up, Ok(Ok(_))).then(Instant::now)
    })
}

/// A screen's id and community, for the conditions a phase waits for.
struct Who {
    id: String,
    community: String,
}

/// When the screen satisfies `ok` (`None`: not within [`PHASE_LIMIT`]),
/// watched from now on.
fn watch(
    screen: &Screen,
    ok: impl Fn(&Who, &Catalog) -> bool + Send + Sync + 'static,
) -> JoinHandle<Option<Instant>> {
    let mut catalog = screen.daemon.catalog.clone();
    let who = Who {
        id: screen.id.clone(),
        community: screen.community.clone(),
    };
    tokio::spawn(async move {
        let reached =
            tokio::time::timeout(PHASE_LIMIT, catalog.wait_for(|cat| ok(&who, cat))).await;
        matches!(reached, Ok(Ok(_))).then(Instant::now)
    })
}

/// How long after its start each watch saw its condition hold.
async fn times_since(
    watches: Vec<JoinHandle<Option<Instant>>>,
    starts: &[Instant],
) -> Vec<Option<Duration>> {
    let mut times = Vec::with_capacity(watches.len());
    for (watch, start) in watches.into_iter().zip(starts) {
        times.push(
            watch
                .await
                .ok()
                .flatten()
                .map(|at| at.saturating_duration_since(*start)),
        );
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
    let cpu = if broker_cpu.is_nan() {
        String::new()
    } else {
        format!(
            "; broker CPU {broker_cpu:.1} s in {:.1} s ({:.0}% of a core)",
            interval.as_secs_f64(),
            100.0 * broker_cpu / interval.as_secs_f64()
        )
    };
    println!(
        "{what}: p50 {:.2} s, p99 {:.2} s, max {:.2} s over {} screens{}{cpu}",
        at(0.50),
        at(0.99),
        at(1.0),
        reached.len(),
        if missed > 0 {
            format!(", {missed} NOT within {} s", PHASE_LIMIT.as_secs())
        } else {
            String::new()
        },
    );
}

/// What the screens that did not get there hold, and what the broker said.
fn failed(broker: &Brokers, screens: &[Screen]) {
    let mut connected = 0;
    let mut shown = 0;
    for screen in screens {
        connected += usize::from(*screen.daemon.connected.borrow());
        let cat = screen.daemon.catalog.borrow();
        if shown < 3 && (!cat.missing().is_empty() || cat.manifests.len() < 2) {
            shown += 1;
            println!(
                "    {}: {} notices, manifests {:?}, {} missing",
                screen.id,
                cat.items.len(),
                cat.manifests
                    .iter()
                    .map(|(s, m)| (s, m.version))
                    .collect::<Vec<_>>(),
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
    if !errors.is_empty() {
        println!(
            "    broker: {} warnings and errors, {} of them \"NO quorum\", {} about MQTT; the first errors about MQTT:",
            errors.len(),
            errors.iter().filter(|l| l.contains("NO quorum")).count(),
            errors
                .iter()
                .filter(|l| l.contains("MQTT") || l.contains("mqtt"))
                .count(),
        );
    }
    let mqtt_errors = errors
        .iter()
        .filter(|l| l.contains("[ERR]") && (l.contains("MQTT") || l.contains("mqtt")));
    for line in mqtt_errors.take(3) {
        println!("    broker: {line}");
    }
    for line in errors.iter().rev().take(2).rev() {
        println!("    broker (last): {line}");
    }
}

/// Publishes `notices` as `gongkai publish` does (the notices, then the
/// scope's next manifest, signed by the first key), retrying until the
/// broker takes them (a restarted cluster takes a while to accept MQTT).
/// Returns each notice's id and envelope.
/// Publishes `messages` retained, as the office does, connecting again
/// after a failure (a loaded cluster may close the office's connection)
/// until the broker acknowledges them all; says how long that took and
/// what failed on the way. Panics after [`PHASE_LIMIT`].
async fn publish_retrying(url: &str, messages: &[(String, Vec<u8>)]) -> String {
    let connect = gongkai::mqtt::Connect::cli(url, None, None).unwrap();
    let start = Instant::now();
    let mut failures = Vec::new();
    loop {
        let attempt = async {
            let mut client = OneShotClient::connect(&connect).await?;
            client.publish_retained_many(messages.to_vec()).await?;
            client.close().await;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(30), attempt).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(_) => failures.push("no acknowledgement within 30 s".to_owned()),
        }
        assert!(
            start.elapsed() < PHASE_LIMIT,
            "cannot publish through {url}: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = start.elapsed().as_secs_f64();
    match failures.last() {
        None => format!("acknowledged after {took:.2} s"),
        Some(last) => format!(
            "acknowledged after {took:.2} s, on attempt {} (last failure: {last})",
            failures.len() + 1
        ),
    }
}

async fn publish_until_taken(
    url: &str,
    dir: &Path,
    notices: &[serde_json::Value],
    keys: &[&gongkai::protocol::SecretKey],
) -> Vec<(String, Vec<u8>)> {
    let envelopes: Vec<(String, Vec<u8>)> = notices
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), signed_by(p, keys)))
        .collect();
    let files: Vec<PathBuf> = notices
        .iter()
        .zip(&envelopes)
        .map(|(p, (id, bytes))| {
            let path = dir.join(format!("{}-{id}.json", p["community"].as_str().unwrap()));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let connect = gongkai::mqtt::Connect::cli(url, None, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = gongkai::office::publish(&connect, PREFIX, keys[0], &files);
        match tokio::time::timeout(Duration::from_secs(30), attempt).await {
            Ok(Ok(_)) => return envelopes,
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
            Some((
                v.get(3)?.parse::<u64>().ok()?,
                v.get(4)?.parse::<u64>().ok()?,
            ))
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
