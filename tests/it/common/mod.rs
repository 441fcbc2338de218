//! Helpers shared by the integration tests: brokers, keys, signed notices,
//! screens, and waiting for a condition with a deadline.
//!
//! Tests run against the embedded broker by default and against
//! `GONGKAI_TEST_BROKER` when it is set (CI). Each test has a topic space
//! (community) and client ids of its own, so tests never see each other.

#![allow(dead_code)]

pub mod browser;
pub mod nats;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gongkai::config::Config;
use gongkai::daemon::Daemon;
use gongkai::office::broker::OneShotClient;
use gongkai::protocol::envelope::{Envelope, MANIFEST_TYPE, NOTICE_TYPE};
use gongkai::protocol::{Manifest, ManifestEntry, SecretKey, TopicSpace, sha256_hex};
use gongkai::store::Catalog;
use time::OffsetDateTime;

pub const PREFIX: &str = "gongkai/v1";

/// The broker URL for tests that can use any broker.
pub fn broker_url() -> String {
    static EMBEDDED: OnceLock<u16> = OnceLock::new();
    if let Ok(url) = std::env::var("GONGKAI_TEST_BROKER") {
        return url;
    }
    let port =
        EMBEDDED.get_or_init(|| gongkai::demo::start_embedded_broker().expect("embedded broker"));
    format!("mqtt://127.0.0.1:{port}")
}

/// Logs what the daemons in this test process trace, to the test's output,
/// when `GONGKAI_TEST_LOG` holds a filter (`gongkai=debug`): for reading a
/// slow or failing run with `--nocapture`.
pub fn log_if_asked() {
    if let Ok(filter) = std::env::var("GONGKAI_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A community name no other test (or earlier run on a shared broker) uses.
pub fn community(test: &str) -> String {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000_000;
    format!("t-{test}-{}-{nanos}", std::process::id())
}

/// A screen id (and so MQTT client id) of the test's own: client ids are
/// unique per broker, and a persistent session outlives the test.
pub fn screen_id(community: &str) -> String {
    format!("s-{community}")
}

pub fn office_key() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

pub fn supervisor_key() -> SecretKey {
    SecretKey::from_seed([2; 32])
}

pub fn stranger_key() -> SecretKey {
    SecretKey::from_seed([3; 32])
}

/// A valid notice payload, open from an hour ago for 30 days.
pub fn notice(community: &str, id: &str, version: u64) -> serde_json::Value {
    let now = OffsetDateTime::now_utc();
    let rfc = gongkai::protocol::notice::rfc3339;
    serde_json::json!({
        "schema": 1, "id": id, "version": version, "community": community,
        "category": "affairs", "priority": "normal", "status": "active",
        "title": format!("测试公告 {id} 第{version}版"),
        "body": [{"type": "paragraph", "text": "根据居务公开制度，现将有关事项公开如下。"}],
        "valid_from": rfc(now - time::Duration::hours(1)),
        "valid_until": rfc(now + time::Duration::days(30)),
        "issued_at": rfc(now),
        "publisher": "历下区示范社区居民委员会",
        "contact": "监督电话：0531-00000000"
    })
}

/// Envelope bytes signed by the office and the supervisor.
pub fn signed(payload: &serde_json::Value) -> Vec<u8> {
    signed_by(payload, &[&office_key(), &supervisor_key()])
}

pub fn signed_by(payload: &serde_json::Value, keys: &[&SecretKey]) -> Vec<u8> {
    let bytes = serde_json::to_vec(payload).unwrap();
    let mut envelope = Envelope::sign_new(NOTICE_TYPE, &bytes, keys[0]);
    for key in &keys[1..] {
        envelope.add_signature(&bytes, key);
    }
    envelope.to_bytes()
}

/// An office-signed manifest listing these envelopes.
pub fn manifest(community: &str, version: u64, envelopes: &[(String, u64, &[u8])]) -> Vec<u8> {
    manifest_signed_by(community, version, envelopes, &office_key())
}

/// A manifest listing these envelopes, signed by `key` (a scope's own).
pub fn manifest_signed_by(
    community: &str,
    version: u64,
    envelopes: &[(String, u64, &[u8])],
    key: &SecretKey,
) -> Vec<u8> {
    let manifest = Manifest {
        schema: 1,
        community: community.into(),
        version,
        issued_at: OffsetDateTime::now_utc(),
        notices: Some(
            envelopes
                .iter()
                .map(|(id, v, bytes)| ManifestEntry {
                    id: id.clone(),
                    version: *v,
                    sha256: sha256_hex(bytes),
                })
                .collect(),
        ),
        pages: None,
        reset: false,
    };
    Envelope::sign_new(MANIFEST_TYPE, &serde_json::to_vec(&manifest).unwrap(), key).to_bytes()
}

/// Polls `ok` until it holds, failing the test after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Looking notices up by id alone, in tests whose screen follows one scope.
pub trait ById {
    fn by_id(&self, id: &str) -> Option<&gongkai::schedule::Item>;
    fn has(&self, id: &str) -> bool {
        self.by_id(id).is_some()
    }
    fn id(&self, id: &str) -> &gongkai::schedule::Item {
        self.by_id(id)
            .unwrap_or_else(|| panic!("no notice {id:?} held"))
    }
}

impl ById for Catalog {
    fn by_id(&self, id: &str) -> Option<&gongkai::schedule::Item> {
        self.items.values().find(|i| i.id == id)
    }
}

/// A screen configuration for `community` on `url`, trusting the test keys.
pub fn screen_config(url: &str, community: &str, screen: &str, store: &Path) -> Config {
    Config::parse(&config_text(url, community, screen, store)).unwrap()
}

pub fn config_text(url: &str, community: &str, screen: &str, store: &Path) -> String {
    format!(
        r#"
[screen]
id = "{screen}"
community = "{community}"
[mqtt]
url = "{url}"
[trust]
office = ["{}"]
supervisor = ["{}"]
[store]
path = "{}"
[display]
dwell_seconds = 2
"#,
        office_key().public().to_base64(),
        supervisor_key().public().to_base64(),
        store.display()
    )
}

/// A screen daemon, in this process, for `community` on `url` with its
/// store at `store`; its screen id is the community's own.
pub async fn start_screen(url: &str, community: &str, store: &Path) -> Daemon {
    Daemon::start(screen_config(url, community, &screen_id(community), store))
        .await
        .unwrap()
}

/// Waits (at most 10 s) until the daemon is connected to its broker.
pub async fn wait_connected(daemon: &Daemon) {
    let mut connected = daemon.connected.clone();
    tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|up| *up))
        .await
        .expect("connected within 10 s")
        .unwrap();
}

/// Waits until the daemon holds `n` notices, a manifest, and lacks nothing
/// the manifest lists.
pub async fn wait_complete(daemon: &Daemon, n: usize) {
    wait_for(daemon, &format!("all {n} notices"), |cat| {
        cat.items.len() == n && !cat.manifests.is_empty() && cat.missing().is_empty()
    })
    .await;
}

/// How many notices the daemon fetched through the manifest.
pub fn fetched(daemon: &Daemon) -> u64 {
    daemon
        .counters
        .fetched
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A publisher connection with the office's tools.
pub async fn publisher(url: &str) -> OneShotClient {
    let connect = gongkai::mqtt::Connect::cli(url, None, None).unwrap();
    OneShotClient::connect(&connect).await.unwrap()
}

pub fn topics(community: &str) -> TopicSpace {
    TopicSpace::new(PREFIX, community)
}

/// Waits until the daemon's catalog satisfies `ok`, or fails the test with
/// `what` and the catalog's state.
pub async fn wait_for(daemon: &Daemon, what: &str, ok: impl Fn(&Catalog) -> bool) {
    let mut rx = daemon.catalog.clone();
    let wait = async {
        loop {
            if ok(&rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .is_err()
    {
        let cat = daemon.catalog.borrow();
        panic!(
            "timed out waiting for {what}: {} notices, manifest {:?}, missing {}, last rejection {:?}",
            cat.items.len(),
            cat.manifests
                .iter()
                .map(|(s, m)| (s, m.version))
                .collect::<Vec<_>>(),
            cat.missing().len(),
            cat.last_rejection
        );
    }
}

/// Polls `ok` until it holds or 30 s pass.
pub fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto process of a test's own, on a free port, with persistence in
/// a temporary folder, so that it can be killed and restarted.
pub struct Mosquitto {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: String,
    /// Save the persistence file after every change (the tests' broker, so
    /// that a SIGKILL loses nothing), or as installed (every 30 minutes and
    /// on the way out).
    save_every_change: bool,
}

impl Mosquitto {
    /// `None` (and a SKIPPED line) where no mosquitto binary exists (see
    /// [`tools`]).
    pub fn start(test: &str, extra: &str) -> Option<Mosquitto> {
        if !tools(test, &["mosquitto"]) {
            return None;
        }
        let mut m = Mosquitto {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.to_owned(),
            save_every_change: true,
        };
        m.restart();
        Some(m)
    }

    /// Like [`Mosquitto::start`], but saving its persistence file as an
    /// installed Mosquitto does (`autosave_interval` 1800 s, and at exit),
    /// not after every change: what benchmarks measure.
    pub fn start_stock(test: &str, extra: &str) -> Option<Mosquitto> {
        if !tools(test, &["mosquitto"]) {
            return None;
        }
        let mut m = Mosquitto {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.to_owned(),
            save_every_change: false,
        };
        m.restart();
        Some(m)
    }

    /// What the broker logged (its log file holds every start).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// The broker process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's own folder, for files its configuration names.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// (Re)starts the broker on the same port and persistence folder.
    pub fn restart(&mut self) {
        self.restart_on(self.port);
    }

    /// (Re)starts the broker with its persistence folder, listening on
    /// `port` alone: an office's own listener, say, while screens cannot
    /// reach the broker on theirs.
    pub fn restart_on(&mut self, port: u16) {
        let conf = format!(
            "listener {port} 127.0.0.1\n{anonymous}user root\npersistence true\n\
             persistence_location {dir}/\n{autosave}\
             log_dest file {dir}/mosquitto.log\n{extra}\n",
            autosave = if self.save_every_change {
                "autosave_interval 1\nautosave_on_changes true\n"
            } else {
                ""
            },
            anonymous = if self.extra.contains("allow_anonymous") {
                ""
            } else {
                "allow_anonymous true\n"
            },
            dir = self.dir.path().display(),
            extra = self.extra
        );
        std::fs::write(self.config_path(), conf).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        eventually("mosquitto to listen", || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        });
    }

    /// Stops the broker with SIGTERM, as a service manager does: it saves
    /// its persistence file on the way out.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Sends SIGHUP: Mosquitto rereads its password file, ACL file and
    /// certificates, and applies them to the clients already connected.
    pub fn reload(&self) {
        let child = self.child.as_ref().expect("the broker runs");
        let sent = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -HUP mosquitto");
    }

    /// Kills the broker with SIGKILL: no goodbye, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A process's user and system CPU time so far, in seconds (0 once it is
/// gone).
pub fn cpu_seconds(pid: u32) -> f64 {
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
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / clock_ticks()
}

/// The unit of /proc's CPU times, per second.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The real `gongkaid` binary, headless, with its stderr collected.
pub struct DaemonProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl DaemonProcess {
    pub fn start(config: &Path, log: &Path) -> DaemonProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_gongkaid"))
            .arg("--config")
            .arg(config)
            .arg("--headless")
            .env(
                "RUST_LOG",
                std::env::var("GONGKAI_TEST_LOG").unwrap_or("info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        DaemonProcess {
            child,
            log: log.to_owned(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a screen's store holds, read as `gongkai cache` reads it.
pub fn stored_versions(store: &Path) -> std::collections::BTreeMap<String, (u64, bool)> {
    if !store.exists() {
        return Default::default();
    }
    let Ok(s) = gongkai::store::Store::open_read_only(store) else {
        return Default::default();
    };
    s.cache_rows(
        &gongkai::schedule::Audience::new("lobby-1", ""),
        OffsetDateTime::now_utc(),
    )
    .unwrap_or_default()
    .into_iter()
    .map(|r| (r.id, (r.version, r.active)))
    .collect()
}

/// Whether the tools a test needs are installed. Where one is missing, the
/// test prints `SKIPPED <test>: <tool>` and should return, unless
/// `GONGKAI_REQUIRE_ALL=1` (CI), where it fails: in CI no test skips.
pub fn tools(test: &str, needed: &[&str]) -> bool {
    let missing: Vec<&str> = needed.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    assert!(
        std::env::var("GONGKAI_REQUIRE_ALL").as_deref() != Ok("1"),
        "{test}: {missing} not installed, and GONGKAI_REQUIRE_ALL=1"
    );
    eprintln!("SKIPPED {test}: {missing}");
    false
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An X server of the test's own, `width`×`height` at 24 bits.
pub struct Xvfb {
    child: Child,
    pub display: String,
    width: u32,
    height: u32,
}

impl Xvfb {
    /// `None` (and a SKIPPED line) without Xvfb and xwd (see [`tools`]).
    pub fn start(test: &str, width: u32, height: u32) -> Option<Xvfb> {
        if !tools(test, &["Xvfb", "xwd"]) {
            return None;
        }
        // Xvfb picks a free display itself and writes its number to
        // stdout (-displayfd): tests running at once never share one.
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1"])
            .args([
                "-screen",
                "0",
                &format!("{width}x{height}x24"),
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .expect("Xvfb says its display");
        let number: u32 = line.trim().parse().expect("a display number from Xvfb");
        let display = format!(":{number}");
        Some(Xvfb {
            child,
            display,
            width,
            height,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole X screen: width, height and RGB pixels.
    pub fn screenshot(&self) -> (u32, u32, Vec<u8>) {
        let out = Command::new("xwd")
            .args(["-root", "-silent", "-display", &self.display])
            .output()
            .expect("xwd runs");
        assert!(out.status.success(), "xwd failed");
        let (width, height, rgb) = xwd_to_rgb(&out.stdout);
        assert_eq!((width, height), (self.width, self.height));
        (width, height, rgb)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes an XWD dump of a 24-bit TrueColor screen (32 bits a pixel).
pub fn xwd_to_rgb(data: &[u8]) -> (u32, u32, Vec<u8>) {
    let field = |i: usize| u32::from_be_bytes(data[i * 4..i * 4 + 4].try_into().unwrap());
    let header_size = field(0) as usize;
    assert_eq!(field(2), 2, "ZPixmap");
    let (width, height) = (field(4), field(5));
    let byte_order = field(7);
    let bits_per_pixel = field(11);
    assert_eq!(
        bits_per_pixel, 32,
        "the test screen is 24-bit in 32-bit pixels"
    );
    let bytes_per_line = field(12) as usize;
    let ncolors = field(19) as usize;
    let start = header_size + ncolors * 12;
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height as usize {
        for x in 0..width as usize {
            let p = &data[start + y * bytes_per_line + x * 4..][..4];
            let value = if byte_order == 0 {
                u32::from_le_bytes(p.try_into().unwrap())
            } else {
                u32::from_be_bytes(p.try_into().unwrap())
            };
            rgb.extend([(value >> 16) as u8, (value >> 8) as u8, value as u8]);
        }
    }
    (width, height, rgb)
}

/// A store holding the samples (windows around now), plus one expired and
/// one withdrawn notice for the archive.
pub fn sample_store(dir: &Path) -> PathBuf {
    use gongkai::demo::DEMO_COMMUNITY;
    let path = dir.join("screen.db");
    let now = OffsetDateTime::now_utc();
    let rfc = gongkai::protocol::notice::rfc3339;
    let mut payloads: Vec<serde_json::Value> = gongkai::demo::shifted_samples(now)
        .into_iter()
        .map(|(_, bytes)| serde_json::from_slice(&bytes).unwrap())
        .collect();
    let mut expired = notice(DEMO_COMMUNITY, "old-finance-2026q1", 1);
    expired["category"] = "finance".into();
    expired["title"] = "2026年第一季度社区财务收支公开".into();
    expired["valid_from"] = rfc(now - time::Duration::days(200)).into();
    expired["valid_until"] = rfc(now - time::Duration::days(100)).into();
    payloads.push(expired);
    let mut withdrawn = notice(DEMO_COMMUNITY, "parking-fee-draft", 2);
    withdrawn["status"] = "withdrawn".into();
    withdrawn["title"] = "停车收费调整方案（草案）".into();
    payloads.push(withdrawn);
    commit_signed(&path, DEMO_COMMUNITY, &payloads);
    path
}

/// Puts payloads, signed by the test keys, into the screen store at `path`
/// through the daemon's own verify-and-commit path.
pub fn commit_signed(path: &Path, community: &str, payloads: &[serde_json::Value]) {
    use gongkai::protocol::{TrustPolicy, verify_message};
    use gongkai::store::{Incoming, Store};
    let mut store = Store::open(path).unwrap();
    let space = TopicSpace::new(PREFIX, community);
    let policy = TrustPolicy {
        office: vec![office_key().public()],
        supervisor: vec![supervisor_key().public()],
        ..TrustPolicy::default()
    };
    for chunk in payloads.chunks(200) {
        let batch: Vec<Incoming> = chunk
            .iter()
            .map(|p| {
                let topic = space.notice(p["id"].as_str().unwrap());
                let bytes = signed(p);
                Incoming {
                    verdict: verify_message(&space, &topic, &bytes, &policy),
                    topic,
                    bytes,
                }
            })
            .collect();
        store.commit(&batch).unwrap();
    }
}

/// The head of every notice a screen store holds.
pub fn held_items(path: &Path) -> Vec<gongkai::schedule::Item> {
    gongkai::store::Store::open_read_only(path)
        .unwrap()
        .load_catalog()
        .unwrap()
        .items
        .into_values()
        .collect()
}

/// The office's intake server (`gongkai office serve`) as a process of a
/// test's own, on a port chosen beforehand (so screens can be pointed at it
/// while it is down), with its configuration and database in a folder of
/// its own. It serves HTTPS with a certificate made for the test (for
/// `localhost` and 127.0.0.1), which `ca_file` holds for screens and
/// clients to trust; `plain_with` makes one that speaks plain HTTP on
/// loopback.
pub struct OfficeServer {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub config: PathBuf,
    pub database: PathBuf,
    /// The PEM certificate a client trusts to reach it; `None` for plain HTTP.
    pub ca_file: Option<PathBuf>,
    dir: tempfile::TempDir,
}

/// A self-signed certificate for `localhost`, 127.0.0.1 and ::1, and its
/// key, as PEM files `cert` and `key`.
pub fn self_signed_certificate(cert: &Path, key: &Path) {
    let names = ["localhost", "127.0.0.1", "::1"]
        .map(str::to_owned)
        .to_vec();
    let pair = rcgen::KeyPair::generate().unwrap();
    let made = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&pair)
        .unwrap();
    std::fs::write(cert, made.pem()).unwrap();
    std::fs::write(key, pair.serialize_pem()).unwrap();
}

impl OfficeServer {
    /// Configured, not started.
    pub fn new() -> OfficeServer {
        OfficeServer::with_config("")
    }

    /// Configured with `extra` at the end of office.toml (a `[limits]`
    /// table, say), not started: HTTPS with a certificate of the test's.
    pub fn with_config(extra: &str) -> OfficeServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("office-cert.pem"),
            dir.path().join("office-key.pem"),
        );
        self_signed_certificate(&cert, &key);
        let tls = format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        );
        OfficeServer::configured(dir, "https", &tls, extra, Some(cert))
    }

    /// Plain HTTP on loopback (`plain_http = true`), not started.
    pub fn plain_with(extra: &str) -> OfficeServer {
        let dir = tempfile::tempdir().unwrap();
        OfficeServer::configured(dir, "http", "plain_http = true\n", extra, None)
    }

    /// HTTPS with the certificate the server makes itself at its first
    /// start (office.toml names none), not started.
    pub fn self_signed_with(extra: &str) -> OfficeServer {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("office.db.tls-cert.pem");
        OfficeServer::configured(dir, "https", "", extra, Some(cert))
    }

    fn configured(
        dir: tempfile::TempDir,
        scheme: &str,
        transport: &str,
        extra: &str,
        ca_file: Option<PathBuf>,
    ) -> OfficeServer {
        let port = free_port();
        let database = dir.path().join("office.db");
        let config = dir.path().join("office.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\n{transport}{extra}",
                database.display()
            ),
        )
        .unwrap();
        OfficeServer {
            child: None,
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
            config,
            database,
            ca_file,
            dir,
        }
    }

    /// Configured and listening.
    pub fn running() -> OfficeServer {
        OfficeServer::running_with("")
    }

    /// Configured with `extra` (see `with_config`) and listening.
    pub fn running_with(extra: &str) -> OfficeServer {
        let mut office = OfficeServer::with_config(extra);
        office.start();
        office
    }

    /// Starts the server and waits until it listens; what it prints goes
    /// to `log_text`. Panics with that text if it exits first.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("server.log"))
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_gongkai"))
                .args(["office", "serve", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "the office server exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the office server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM, waits for it, and starts it again
    /// with the same configuration and database.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        self.start();
    }

    /// What the server printed and logged, over every start.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    /// An HTTP client that trusts the server's certificate.
    pub fn client(&self) -> reqwest::Client {
        gongkai::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca).unwrap();
            builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
        }
        builder.build().unwrap()
    }

    /// What a screen's `[office]` section needs to reach this server
    /// (`ca_file` when it speaks HTTPS), after `url` and `token_file`.
    pub fn screen_trust(&self) -> String {
        match &self.ca_file {
            Some(ca) => format!("ca_file = \"{}\"\n", ca.display()),
            None => String::new(),
        }
    }

    /// Connects as a client of its own would: TLS (trusting `ca_file`)
    /// or plain, as the server speaks.
    pub fn connector(&self) -> OfficeConnector {
        OfficeConnector {
            port: self.port,
            tls: self.ca_file.as_deref().map(|ca| {
                tokio_rustls::TlsConnector::from(std::sync::Arc::new(
                    gongkai::tls::client_config(Some(ca)).unwrap(),
                ))
            }),
        }
    }

    /// `gongkai office token`: the token is the last line of its output.
    /// The screen is bound to the first community it sends.
    pub fn token(&self, screen: &str) -> String {
        self.token_with(&["--screen", screen])
    }

    /// `gongkai office token --community`: a screen bound to `community`.
    pub fn token_in(&self, screen: &str, community: &str) -> String {
        self.token_with(&["--screen", screen, "--community", community])
    }

    fn token_with(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_gongkai"))
            .args(["office", "token"])
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned()
    }

    /// A token for `screen`, in a 0600 file as a screen keeps it.
    pub fn token_file(&self, screen: &str) -> PathBuf {
        let path = self.path(&format!("{screen}.token"));
        std::fs::write(&path, self.token(screen)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// A file in the office's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the office server runs").id()
    }

    /// The server's resident memory, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Sends SIGTERM and waits for the server to exit, at most `within`;
    /// returns how long it took and how it exited.
    pub fn terminate(&mut self, within: Duration) -> (Duration, std::process::ExitStatus) {
        let mut child = self.child.take().expect("the office server runs");
        let sent = Instant::now();
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (sent.elapsed(), status);
            }
            if sent.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the office server did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Feedback rows the office holds.
    pub fn stored(&self) -> u64 {
        gongkai::store::office::OfficeStore::open(&self.database)
            .unwrap()
            .feedback_count()
            .unwrap()
    }
}

impl Drop for OfficeServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A byte stream to the office server, TLS or plain.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}
pub type OfficeStream = Box<dyn Stream>;

/// Opens connections to an office server as raw clients do, with the TLS
/// handshake done when the server speaks HTTPS.
#[derive(Clone)]
pub struct OfficeConnector {
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl OfficeConnector {
    pub async fn connect(&self) -> OfficeStream {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Box::new(tls.connect(name, tcp).await.unwrap())
            }
        }
    }
}

/// Runs `f` on the one thread of this test binary that renders headless.
/// Slint allows one platform per process (its event loop proxy is global),
/// and the headless renderer installs its platform on the thread that first
/// renders: every test that renders must do so on that same thread.
pub fn render_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::Mutex;
    use std::sync::mpsc;
    type Job = Box<dyn FnOnce() + Send>;
    static JOBS: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("headless render".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .unwrap();
        Mutex::new(tx)
    });
    let (done_tx, done_rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = done_tx.send(outcome);
    });
    jobs.lock().unwrap().send(job).unwrap();
    match done_rx.recv().unwrap() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs the one test named `name` of this binary in a child process, and
/// fails if it fails. For tests that install a Slint platform of their own
/// (the testing backend), which cannot share a process with the headless one.
pub fn in_child_process(name: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{name} failed in its process:\n{text}"
    );
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
}
