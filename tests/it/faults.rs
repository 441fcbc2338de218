//! Faults a screen must ride out without missing a notice: the broker killed
//! and restarted mid-stream, the daemon killed while the broker is down, and
//! a broker that drops messages past a small queue. Each test runs a Mosquitto
//! of its own on a free port.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use gongkai::office::broker::OneShotClient;

/// Publishes retained, reconnecting and retrying until the broker takes it.
async fn publish_through_outages(
    client: &mut Option<OneShotClient>,
    url: &str,
    topic: &str,
    bytes: Vec<u8>,
) {
    let connect = gongkai::mqtt::Connect::cli(url, None, None).unwrap();
    for _ in 0..600 {
        if client.is_none() {
            *client = OneShotClient::connect(&connect).await.ok();
        }
        if let Some(c) = client.as_mut() {
            if c.publish_retained(topic, bytes.clone()).await.is_ok() {
                return;
            }
            *client = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not publish {topic} within a minute");
}

fn notices(c: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| format!("n{i:03}"))
        .map(|id| {
            let bytes = signed(&notice(c, &id, 1));
            (id, bytes)
        })
        .collect()
}

fn manifest_of(c: &str, version: u64, all: &[(String, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<(String, u64, &[u8])> = all
        .iter()
        .map(|(id, b)| (id.clone(), 1, b.as_slice()))
        .collect();
    manifest(c, version, &entries)
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_killed_and_restarted_mid_stream_misses_no_notice() {
    let Some(mut broker) = Mosquitto::start("broker_killed_and_restarted_mid_stream", "") else {
        return;
    };
    let url = broker.url();
    let c = community("restart");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_screen(&url, &c, &dir.path().join("screen.db")).await;
    wait_connected(&daemon).await;
    let mut connected = daemon.connected.clone();

    let all = notices(&c, 60);
    let stream = {
        let (url, c, all) = (url.clone(), c.clone(), all.clone());
        tokio::spawn(async move {
            let mut client = None;
            for (id, bytes) in &all {
                publish_through_outages(&mut client, &url, &topics(&c).notice(id), bytes.clone())
                    .await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            publish_through_outages(
                &mut client,
                &url,
                &topics(&c).manifest(),
                manifest_of(&c, 1, &all),
            )
            .await;
        })
    };
    // Kill the broker mid-stream, leave it down for a while, bring it back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.kill();
    tokio::time::timeout(Duration::from_secs(5), connected.wait_for(|up| !*up))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    broker.restart();
    stream.await.unwrap();

    wait_complete(&daemon, 60).await;
    assert!(*daemon.connected.borrow());
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_killed_and_restarted_while_the_broker_is_down_serves_from_its_cache() {
    let Some(mut broker) = Mosquitto::start("daemon_killed_while_broker_down", "") else {
        return;
    };
    let url = broker.url();
    let c = community("kill9");
    let all = notices(&c, 3);
    let mut client = publisher(&url).await;
    for (id, bytes) in &all {
        client
            .publish_retained(&topics(&c).notice(id), bytes.clone())
            .await
            .unwrap();
    }
    client
        .publish_retained(&topics(&c).manifest(), manifest_of(&c, 1, &all))
        .await
        .unwrap();
    client.close().await;

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("screen.db");
    let config = dir.path().join("gongkaid.toml");
    std::fs::write(&config, config_text(&url, &c, "lobby-1", &store)).unwrap();
    let mut first = DaemonProcess::start(&config, &dir.path().join("first.log"));
    eventually("the first daemon to store 3 notices", || {
        stored_versions(&store).len() == 3
    });

    first.kill9();
    broker.kill();
    let mut second = DaemonProcess::start(&config, &dir.path().join("second.log"));
    eventually("the restarted daemon to rotate from its cache", || {
        second.log_text().matches("showing n").count() >= 2
    });
    let log = second.log_text();
    assert!(log.contains("holds 3 notices"), "{log}");
    assert!(
        log.contains("broker connection:"),
        "the broker is down: {log}"
    );
    assert!(!log.contains("connected to the broker"), "{log}");
    assert!(
        stored_versions(&store)
            .values()
            .all(|(v, active)| *v == 1 && *active)
    );

    // SIGTERM: every task joined, exit 0 within 5 s.
    assert_terminates(&mut second, Duration::from_secs(5));
}

fn assert_terminates(daemon: &mut DaemonProcess, within: Duration) {
    let pid = daemon.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "exit status {status}: {}",
                daemon.log_text()
            );
            return;
        }
        assert!(
            start.elapsed() < within,
            "still running {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn publish_all(url: &str, c: &str, all: &[(String, Vec<u8>)], manifest_version: u64) {
    let mut client = publisher(url).await;
    for (id, bytes) in all {
        client
            .publish_retained(&topics(c).notice(id), bytes.clone())
            .await
            .unwrap();
    }
    client
        .publish_retained(&topics(c).manifest(), manifest_of(c, manifest_version, all))
        .await
        .unwrap();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_drops_past_a_small_queue_is_made_whole_through_the_manifest() {
    let Some(broker) = Mosquitto::start("capped_queue", "max_queued_messages 60") else {
        return;
    };
    let url = broker.url();
    let c = community("capped");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("screen.db");

    // First connection: the screen subscribes, so the broker holds a session.
    let daemon = start_screen(&url, &c, &store).await;
    wait_connected(&daemon).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.shutdown().await;

    // 300 notices while the screen is away: the broker queues 60 of them for
    // its session and drops the rest.
    let all = notices(&c, 300);
    publish_all(&url, &c, &all, 1).await;

    let daemon = start_screen(&url, &c, &store).await;
    wait_complete(&daemon, 300).await;
    let fetched = fetched(&daemon);
    assert!(
        fetched >= 200,
        "the broker dropped messages and the manifest fetched them: {fetched}"
    );
    daemon.shutdown().await;
    assert_store_complete(&store, 300);
}

fn assert_store_complete(store: &Path, n: usize) {
    let versions = stored_versions(store);
    assert_eq!(versions.len(), n);
    assert!(versions.values().all(|(v, _)| *v == 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_retained_notices_behind_a_small_queue_arrive_on_first_connect() {
    let Some(broker) = Mosquitto::start("capped_queue_first_connect", "max_queued_messages 60")
    else {
        return;
    };
    let url = broker.url();
    let c = community("capped-first");
    let all = notices(&c, 300);
    publish_all(&url, &c, &all, 1).await;

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("screen.db");
    let daemon = start_screen(&url, &c, &store).await;
    wait_complete(&daemon, 300).await;
    // Mosquitto drops retained messages past the queue on a first
    // subscription too: what arrives is made whole through the manifest.
    let fetched = fetched(&daemon);
    assert!(fetched > 0, "nothing was fetched through the manifest");
    daemon.shutdown().await;
    assert_store_complete(&store, 300);
}

/// systemd's side of a screen, with a notify socket of the test's own:
/// `READY=1`, `STATUS=` lines saying what the screen does, and `WATCHDOG=1`
/// pings at a third of `WATCHDOG_USEC` while the rotation beats (the UI
/// thread does in a window: see the next test for pings that stop).
#[test]
fn gongkaid_tells_systemd_it_is_ready_what_it_does_and_that_it_lives() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let c = community("watchdog");
    let config = dir.path().join("screen.toml");
    std::fs::write(
        &config,
        config_text(
            &broker_url(),
            &c,
            &screen_id(&c),
            &dir.path().join("screen.db"),
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    // systemd names the watched process in WATCHDOG_PID: `exec` keeps the
    // shell's pid for the daemon.
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "WATCHDOG_PID=$$ exec \"$0\" --headless --config \"$1\"",
        ])
        .arg(env!("CARGO_BIN_EXE_gongkaid"))
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1500000")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut messages: Vec<String> = Vec::new();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    while started.elapsed() < std::time::Duration::from_secs(6) {
        if let Ok(n) = socket.recv(&mut buf) {
            messages.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
        let online = messages.iter().any(|m| m.starts_with("STATUS=online"));
        if online && messages.iter().filter(|m| *m == "WATCHDOG=1").count() >= 4 {
            break;
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    assert!(messages.iter().any(|m| m == "READY=1"), "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("STATUS=online") && m.contains("notices held")),
        "{messages:?}"
    );
    assert!(
        messages.iter().filter(|m| *m == "WATCHDOG=1").count() >= 4,
        "{messages:?}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

/// A frozen UI stops the watchdog's pings, and they resume once it moves
/// again: a screen in a real window (Xvfb) rotates two notices every two
/// seconds; the X server is stopped with SIGSTOP, so the UI thread blocks
/// on its display at the next frame, as it would on a display server that
/// hangs. No hook in the daemon: the rest of the process runs on, and its
/// pinger says it stopped pinging. After SIGCONT the pings come back.
#[test]
fn watchdog_pings_stop_while_the_ui_thread_is_blocked_and_resume_after() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Instant;
    let test = "watchdog_pings_stop_while_the_ui_thread_is_blocked";
    let Some(x) = Xvfb::start(test, 640, 360) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let c = community("frozen-ui");
    let store = dir.path().join("screen.db");
    commit_signed(&store, &c, &[notice(&c, "a", 1), notice(&c, "b", 1)]);
    let config = dir.path().join("screen.toml");
    // [display] is the last table of config_text: a small window.
    let text =
        config_text(&broker_url(), &c, &screen_id(&c), &store) + "width = 640\nheight = 360\n";
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("log");
    let mut child = std::process::Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_gongkaid"))
        .arg(&config)
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY")
        .env("NOTIFY_SOCKET", &socket_path)
        // Pings while the UI's heartbeat (a beat a second) is at most 1.5 s
        // old, considered every second.
        .env("WATCHDOG_USEC", "3000000")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let signal = |name: &str, pid: u32| {
        let sent = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {name} {pid}");
    };
    // Pings received until `done` says so, or the deadline fails the test.
    let mut pings = 0usize;
    let mut receive = |what: &str, within: Duration, done: &mut dyn FnMut(usize) -> bool| {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = socket.recv(&mut buf) {
                pings += String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .filter(|l| *l == "WATCHDOG=1")
                    .count();
            }
            if done(pings) {
                return pings;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {pings} pings so far\n{}",
                log_text()
            );
        }
    };

    receive(
        "pings while the UI runs",
        Duration::from_secs(60),
        &mut |n| n >= 3 && log_text().contains("rotation: showing"),
    );
    signal("-STOP", x.pid());
    let frozen = Instant::now();
    let stopped_at = receive(
        "the pinger giving up on a blocked UI",
        Duration::from_secs(30),
        &mut |_| log_text().contains("the watchdog is no longer pinged"),
    );
    let gave_up = frozen.elapsed();
    // While the X server stays stopped the UI thread cannot beat: no ping,
    // however long we listen.
    let quiet_until = Instant::now() + Duration::from_secs(4);
    let after = receive("silence", Duration::from_secs(30), &mut |_| {
        Instant::now() > quiet_until
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon runs on:\n{}",
        log_text()
    );
    let silent = frozen.elapsed();
    signal("-CONT", x.pid());
    let thawed = Instant::now();
    assert_eq!(after, stopped_at, "no ping while the UI thread is blocked");
    receive(
        "pings once the UI moves again",
        Duration::from_secs(30),
        &mut |n| n >= after + 2,
    );
    eprintln!(
        "watchdog: {stopped_at} pings; the pinger gave up {:.1} s after the X server \
         stopped, none came in the {:.1} s after that, two more within {:.1} s of \
         SIGCONT",
        gave_up.as_secs_f64(),
        (silent - gave_up).as_secs_f64(),
        thawed.elapsed().as_secs_f64()
    );
    signal("-TERM", child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}:\n{}", log_text());
}

/// The proof-of-play chain (section 7) survives `kill -9`: a screen
/// rotating with a one-second dwell is killed ten times; every record
/// committed is there, in one unbroken chain (each record's hash over its
/// own line, each `prev` the hash before it, `seq` from 1 without a gap).
#[test]
fn the_play_chain_stays_whole_through_ten_sigkills() {
    use gongkai::protocol::plays::{ChainVerdict, GENESIS, judge};
    let url = broker_url();
    let c = community("plays-kill");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("screen.db");
    let config = dir.path().join("screen.toml");
    std::fs::write(
        &config,
        config_text(&url, &c, &screen_id(&c), &store)
            .replace("dwell_seconds = 2", "dwell_seconds = 1"),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut p = publisher(&url).await;
        for id in ["a", "b"] {
            p.publish_retained(&topics(&c).notice(id), signed(&notice(&c, id, 1)))
                .await
                .unwrap();
        }
        p.close().await;
    });
    let mut heads = Vec::new();
    for round in 0..10 {
        let mut daemon = DaemonProcess::start(&config, &dir.path().join(format!("log-{round}")));
        std::thread::sleep(std::time::Duration::from_millis(1500 + 370 * round as u64));
        daemon.kill9();
        let log = gongkai::store::plays::PlayLog::open(&store).unwrap();
        heads.push(log.head().unwrap().map_or(0, |r| r.seq));
    }
    let log = gongkai::store::plays::PlayLog::open(&store).unwrap();
    let records = log.records(1, 100_000).unwrap();
    assert!(records.len() >= 10, "{} records", records.len());
    assert!(
        heads.windows(2).all(|w| w[0] <= w[1]),
        "never shrinks: {heads:?}"
    );
    assert_eq!(records[0].prev, GENESIS);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
        r.check().unwrap();
    }
    // The office's own judgement of the whole chain.
    assert!(matches!(
        judge(&records, 1, |_| None),
        ChainVerdict::Continues { .. }
    ));
}
