//! Proof of play end to end (PROTOCOL.md 1.1, section 7): a real `gongkaid`
//! rotating notices, killed with SIGKILL again and again, delivers its
//! whole chain to a real `gongkai office serve`, and `gongkai office plays
//! --verify` passes against the head in the screen's retained status;
//! records the office's database lost are sent again; a screen whose store
//! went back to an older copy forks its chain, which the office refuses,
//! records and reports; a screen whose store was lost begins a new chain.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use gongkai::protocol::plays::{PlayRecord, chain_problems};
use gongkai::store::office::OfficeStore;
use gongkai::store::plays::PlayLog;

/// A screen rotating two notices with a one-second dwell, sending its
/// chain to `office`.
fn screen_setup(url: &str, c: &str, dir: &Path, office: &OfficeServer) -> (PathBuf, PathBuf) {
    let store = dir.join("screen.db");
    let config = dir.join("screen.toml");
    let token = office.token_file(&screen_id(c));
    std::fs::write(
        &config,
        format!(
            "{}\n[office]\nurl = \"{}\"\ntoken_file = \"{}\"\ntimeout_seconds = 5\n{}",
            config_text(url, c, &screen_id(c), &store)
                .replace("dwell_seconds = 2", "dwell_seconds = 1"),
            office.url,
            token.display(),
            office.screen_trust()
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut p = publisher(url).await;
        for id in ["a", "b"] {
            p.publish_retained(&topics(c).notice(id), signed(&notice(c, id, 1)))
                .await
                .unwrap();
        }
        p.close().await;
    });
    (store, config)
}

fn screen_chain(store: &Path) -> Vec<PlayRecord> {
    PlayLog::open(store).unwrap().records(1, 1_000_000).unwrap()
}

/// The current chain the office holds for `screen`, and its number.
fn office_chain(office: &OfficeServer, screen: &str) -> (u64, Vec<PlayRecord>) {
    let store = OfficeStore::open(&office.database).unwrap();
    let chain = store
        .play_chains()
        .unwrap()
        .into_iter()
        .filter(|c| c.screen == screen)
        .map(|c| c.chain)
        .max();
    match chain {
        Some(n) => (n, store.chain_records(screen, n).unwrap()),
        None => (0, Vec::new()),
    }
}

/// `gongkai office plays` with `args`: its exit status and output.
fn office_plays(office: &OfficeServer, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["office", "plays", "--config"])
        .arg(&office.config)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("gongkai office plays {}:\n{text}", args.join(" "));
    (out.status.success(), text)
}

/// The chain head in the retained online status of the screen of `c`.
fn status_head(url: &str, c: &str) -> Option<gongkai::status::PlaysHead> {
    let connect = gongkai::mqtt::Connect::cli(url, None, None).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fleet = runtime
        .block_on(gongkai::office::fleet_status(&connect, PREFIX, c))
        .unwrap_or_default();
    fleet.into_iter().find_map(|entry| match entry {
        gongkai::office::broker::FleetEntry::Read(gongkai::status::StatusMessage::Online(s)) => {
            s.plays
        }
        _ => None,
    })
}

/// Six runs of a rotating screen, each ended by SIGKILL, the office down
/// for the first three: the office ends with the screen's chain, record
/// for record, and `--verify` passes against the screen's status.
#[test]
fn a_screen_killed_again_and_again_delivers_its_whole_chain_and_it_verifies() {
    let url = broker_url();
    let c = community("plays-e2e");
    let screen = screen_id(&c);
    let dir = tempfile::tempdir().unwrap();
    // The office is down for the first three runs: nothing is dropped for
    // it, the records wait on the screen.
    let mut office = OfficeServer::new();
    let (store, config) = screen_setup(&url, &c, dir.path(), &office);
    let mut heads = Vec::new();
    for round in 0..6 {
        if round == 3 {
            assert_eq!(office_chain(&office, &screen).1.len(), 0);
            office.start();
        }
        let mut daemon = DaemonProcess::start(&config, &dir.path().join(format!("log-{round}")));
        std::thread::sleep(Duration::from_millis(1800 + 410 * round as u64));
        daemon.kill9();
        heads.push(screen_chain(&store).len());
    }
    let killed_at = *heads.last().unwrap();
    assert!(killed_at >= 6, "records after six runs: {heads:?}");
    // Once more, running: everything committed before reaches the office.
    let daemon = DaemonProcess::start(&config, &dir.path().join("log-last"));
    eventually("the office holds the chain through the last kill", || {
        office_chain(&office, &screen).1.len() >= killed_at
    });
    // The running screen's status, with its head, retained.
    eventually("an online status with the chain's head", || {
        status_head(&url, &c).is_some()
    });
    let (ok, report) = office_plays(&office, &["--verify", "--broker", &url]);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("ok    {screen} chain 1: records 1 to ")),
        "{report}"
    );
    assert!(
        report.contains("the head in its status") || report.contains("not sent yet"),
        "{report}"
    );
    let (ok, report) = office_plays(&office, &["--notice", "a", "--broker", &url]);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("screen {screen} ({c})")),
        "{report}"
    );
    assert!(report.contains("all inside the window"), "{report}");
    assert!(!report.contains("unknown"), "{report}");
    drop(daemon);
    // The office's chain is the screen's, record for record.
    let (chain, held) = office_chain(&office, &screen);
    let sent = screen_chain(&store);
    assert_eq!(chain, 1, "one chain: the store was never lost");
    assert!(chain_problems(&held).is_empty());
    assert_eq!(held[..], sent[..held.len()]);
    // Window unknown without the broker or a file.
    let (_, report) = office_plays(&office, &["--notice", "b"]);
    assert!(report.contains("unknown to the office"), "{report}");
}

#[test]
fn lost_office_records_are_sent_again_and_a_fork_and_a_restart_are_reported() {
    let url = broker_url();
    let c = community("plays-fork");
    let screen = screen_id(&c);
    let dir = tempfile::tempdir().unwrap();
    let office = OfficeServer::running();
    let (store, config) = screen_setup(&url, &c, dir.path(), &office);
    let log = |name: &str| dir.path().join(name);

    let mut daemon = DaemonProcess::start(&config, &log("log-1"));
    eventually("eight records at the office", || {
        office_chain(&office, &screen).1.len() >= 8
    });
    daemon.kill9();
    // An older copy of the screen's store, for the fork below.
    let older = dir.path().join("older.db");
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute("VACUUM INTO ?1", [older.to_str().unwrap()])
        .unwrap();

    // The office's database loses records 3 to 6.
    rusqlite::Connection::open(&office.database)
        .unwrap()
        .execute(
            "DELETE FROM chain_plays WHERE screen = ?1 AND seq BETWEEN 3 AND 6",
            [&screen],
        )
        .unwrap();
    let (ok, report) = office_plays(&office, &["--verify"]);
    assert!(!ok, "{report}");
    assert!(report.contains("records 3 to 6 are missing"), "{report}");
    // The screen is told (409) and sends them again.
    let mut daemon = DaemonProcess::start(&config, &log("log-2"));
    eventually("the office's chain whole again", || {
        let held = office_chain(&office, &screen).1;
        held.len() >= 12 && chain_problems(&held).is_empty()
    });
    daemon.kill9();
    assert!(
        daemon.log_text().contains("lacks play records from seq 3"),
        "{}",
        daemon.log_text()
    );
    let (ok, report) = office_plays(&office, &["--verify", "--broker", &url]);
    assert!(ok, "{report}");

    // The store goes back to the older copy: its next records are not the
    // ones the office holds. The office refuses them and keeps its own.
    let held_before = office_chain(&office, &screen).1;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    std::fs::copy(&older, &store).unwrap();
    let daemon = DaemonProcess::start(&config, &log("log-3"));
    eventually("the fork recorded", || {
        !OfficeStore::open(&office.database)
            .unwrap()
            .play_conflicts()
            .unwrap()
            .is_empty()
    });
    eventually("the refusal in the screen's log", || {
        daemon
            .log_text()
            .contains("the office refuses the play chain")
    });
    // The screen says so in its status, and does not ask again at once.
    eventually("the refusal in the screen's status", || {
        status_head(&url, &c).is_some_and(|h| h.refused.is_some_and(|r| r.contains("forks")))
    });
    let (chain, held) = office_chain(&office, &screen);
    assert_eq!(chain, 1);
    assert_eq!(held[..], held_before[..], "what the office held stays");
    let conflicts = OfficeStore::open(&office.database)
        .unwrap()
        .play_conflicts()
        .unwrap();
    assert_eq!(
        conflicts.iter().map(|k| k.times).sum::<u64>(),
        1,
        "asked once, not in a loop: {conflicts:?}"
    );
    let (ok, report) = office_plays(&office, &["--verify", "--broker", &url]);
    assert!(!ok, "{report}");
    assert!(report.contains("forks the chain held"), "{report}");
    drop(daemon);

    // The store is lost: the screen begins again at seq 1, in a new chain.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let daemon = DaemonProcess::start(&config, &log("log-4"));
    eventually("a second chain at the office", || {
        let (chain, held) = office_chain(&office, &screen);
        chain == 2 && held.len() >= 2
    });
    drop(daemon);
    let (ok, report) = office_plays(&office, &["--verify"]);
    assert!(!ok, "the fork stays on record: {report}");
    assert!(
        report.contains(&format!("ok    {screen} chain 2: records 1 to ")),
        "{report}"
    );
    assert!(report.contains("begun again at seq 1"), "{report}");
    let store = OfficeStore::open(&office.database).unwrap();
    assert_eq!(store.chain_records(&screen, 1).unwrap(), held_before);
}

/// A real `gongkaid` in a window (under Xvfb) pages a long notice: the
/// play records count the pages it showed, not one a slot.
#[test]
fn a_screen_in_a_window_records_the_pages_it_showed() {
    let Some(x) = Xvfb::start("plays-window", 640, 360) else {
        return;
    };
    let url = broker_url();
    let c = community("plays-window");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("screen.db");
    let config = dir.path().join("screen.toml");
    std::fs::write(
        &config,
        config_text(&url, &c, &screen_id(&c), &store).replace(
            "dwell_seconds = 2",
            "dwell_seconds = 1\nwidth = 640\nheight = 360\nfullscreen = false",
        ),
    )
    .unwrap();
    let mut long = notice(&c, "long", 1);
    long["body"] = (1..=24)
        .map(|i| {
            serde_json::json!({"type": "paragraph",
                "text": format!("第{i}项：根据居务公开制度，现将本季度社区公共事务的办理情况公开如下，请居民监督。")})
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut p = publisher(&url).await;
        p.publish_retained(&topics(&c).notice("long"), signed(&long))
            .await
            .unwrap();
        p.close().await;
    });
    let log = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gongkaid"))
        .arg("--config")
        .arg(&config)
        .env("DISPLAY", &x.display)
        .env_remove("WAYLAND_DISPLAY")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let played = loop {
        let records = match store.exists() {
            true => PlayLog::open(&store)
                .and_then(|l| l.records(1, 100))
                .unwrap_or_default(),
            false => Vec::new(),
        };
        if let Some(r) = records.first() {
            break r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "no play recorded:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("the first play: {played:?}");
    assert_eq!(played.notice_id, "long");
    assert!(
        played.pages_shown >= 3,
        "a notice of 24 paragraphs on a 640×360 screen: {played:?}"
    );
    // At least the base dwell a page.
    assert!(
        played.duration_ms >= 1000 * u64::from(played.pages_shown),
        "{played:?}"
    );
}
