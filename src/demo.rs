//! `gongkaid --demo`: everything a fresh machine needs to see a screen work.
//! An embedded broker (rumqttd) on a loopback port of its own, demo keys in a
//! temporary folder, the sample notices signed by both keys with windows
//! around now, published with a manifest, and a screen running against it.
//!
//! rumqttd keeps nothing on disk and cannot be stopped: fine for a demo and
//! for tests that need a broker, not for fault tests (those use Mosquitto).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use time::OffsetDateTime;

use crate::config::{Config, Mode};
use crate::mqtt::Connect;
use crate::protocol::envelope::{Envelope, NOTICE_TYPE};
use crate::protocol::notice::rfc3339;
use crate::protocol::{SecretKey, topic::DEFAULT_PREFIX};

pub const DEMO_COMMUNITY: &str = "lixia-demo";
pub const DEMO_SCREEN: &str = "demo-lobby";
/// The sample whose window the demo opens a minute after start.
pub const OPENS_LATER: &str = "medical-insurance-2027";

/// Starts rumqttd on a free loopback port and returns the port once the
/// broker accepts connections.
pub fn start_embedded_broker() -> anyhow::Result<u16> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config: rumqttd::Config = toml::from_str(&format!(
        r#"
id = 0
[router]
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "gongkai-demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 100
dynamic_filters = true
"#
    ))
    .context("embedded broker configuration")?;
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = rumqttd::Broker::new(config).start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("the embedded broker did not start listening on {addr}")
}

/// The sample payloads with windows moved around `now`, for the demo: each
/// opened an hour ago and runs 30 days, except one opening a minute from now.
pub fn shifted_samples(now: OffsetDateTime) -> Vec<(String, Vec<u8>)> {
    crate::samples::ALL
        .iter()
        .map(|(_, text)| {
            let mut value: serde_json::Value =
                serde_json::from_str(text).expect("samples are JSON");
            let id = value["id"].as_str().unwrap_or_default().to_owned();
            let from = if id == OPENS_LATER {
                now + time::Duration::minutes(1)
            } else {
                now - time::Duration::hours(1)
            };
            value["valid_from"] = rfc3339(from).into();
            value["valid_until"] = rfc3339(now + time::Duration::days(30)).into();
            value["issued_at"] = rfc3339(now).into();
            value["community"] = DEMO_COMMUNITY.into();
            (id, serde_json::to_vec_pretty(&value).expect("json"))
        })
        .collect()
}

/// Signs a payload by the office and the supervisory committee.
pub fn dual_sign(payload: &[u8], office: &SecretKey, supervisor: &SecretKey) -> Envelope {
    let mut envelope = Envelope::sign_new(NOTICE_TYPE, payload, office);
    envelope.add_signature(payload, supervisor);
    envelope
}

/// A screen configuration for a broker on `port`, trusting these keys.
pub fn screen_config(
    port: u16,
    office: &SecretKey,
    supervisor: &SecretKey,
    store: &Path,
    dwell: u64,
    mode: Mode,
) -> Config {
    let text = format!(
        r#"
[screen]
id = "{DEMO_SCREEN}"
community = "{DEMO_COMMUNITY}"
mode = "{}"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[trust]
office = ["{}"]
supervisor = ["{}"]
[store]
path = "{}"
[display]
dwell_seconds = {dwell}
fullscreen = false
width = 1280
height = 720
title = "历下区示范社区"
"#,
        mode.as_str(),
        office.public().to_base64(),
        supervisor.public().to_base64(),
        store.display()
    );
    Config::parse(&text).expect("the demo configuration is valid")
}

/// A prepared demo: a broker holding the signed samples, and the screen's
/// configuration. The folder (keys, store) goes when this is dropped.
pub struct Demo {
    pub config: Config,
    pub dir: tempfile::TempDir,
}

/// Starts the embedded broker, makes demo keys, signs and publishes the
/// samples, and returns the screen's configuration, saying what it does.
pub async fn prepare(mode: Mode) -> anyhow::Result<Demo> {
    let port = start_embedded_broker()?;
    println!("gongkai demo");
    println!("  1. embedded MQTT broker listening on 127.0.0.1:{port}");

    let dir = tempfile::Builder::new().prefix("gongkai-demo-").tempdir()?;
    let office_path = dir.path().join("office.key");
    let supervisor_path = dir.path().join("supervisor.key");
    let office_public = crate::office::keygen(&office_path)?;
    let supervisor_public = crate::office::keygen(&supervisor_path)?;
    let office = crate::office::sign::read_key(&office_path)?;
    let supervisor = crate::office::sign::read_key(&supervisor_path)?;
    println!("  2. demo keys in {}", dir.path().display());
    println!("       office     {}", office_public.to_base64());
    println!("       supervisor {}", supervisor_public.to_base64());

    let now = OffsetDateTime::now_utc();
    let mut files: Vec<PathBuf> = Vec::new();
    for (id, payload) in shifted_samples(now) {
        let path = dir.path().join(format!("{id}.envelope.json"));
        std::fs::write(&path, dual_sign(&payload, &office, &supervisor).to_bytes())?;
        files.push(path);
    }
    println!(
        "  3. signed {} sample notices by both keys; {OPENS_LATER} opens in one minute",
        files.len()
    );

    let connect = Connect::cli(&format!("mqtt://127.0.0.1:{port}"), None, None)?;
    let published = crate::office::publish(&connect, DEFAULT_PREFIX, &office, &files).await?;
    for p in &published {
        println!(
            "  4. published {} notices retained on {DEFAULT_PREFIX}/{}/notices/+ and manifest version {}",
            p.notices.len(),
            p.community,
            p.manifest_version
        );
    }

    let config = screen_config(
        port,
        &office,
        &supervisor,
        &dir.path().join("screen.db"),
        8,
        mode,
    );
    println!(
        "  5. screen {DEMO_SCREEN} ({}) starts: it verifies both signatures and caches in {}",
        mode.as_str(),
        config.store.path.display()
    );
    Ok(Demo { config, dir })
}
