//! Signed commands (PROTOCOL.md 1.1, section 5) end to end: `gongkai command`
//! with an operator key, a real screen that verifies, takes each command
//! once and runs it, the office that keeps the screenshot, and
//! `gongkai office screenshot` that writes it out.

use std::path::Path;
use std::process::Command as Process;
use std::time::Duration;

use crate::common::*;
use gongkai::protocol::SecretKey;
use gongkai::protocol::command::Action;

fn operator_key() -> SecretKey {
    SecretKey::from_seed([6; 32])
}

fn gongkai(args: &[&str]) -> std::process::Output {
    Process::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(args)
        .output()
        .unwrap()
}

async fn status_of(url: &str, c: &str) -> serde_json::Value {
    let mut client = publisher(url).await;
    let retained = client
        .retained(&topics(c).status(&screen_id(c)))
        .await
        .unwrap();
    client.close().await;
    retained
        .last()
        .map(|p| serde_json::from_slice(&p.payload).unwrap())
        .unwrap_or_default()
}

fn screen_text(url: &str, c: &str, store: &Path, office: &OfficeServer, token: &Path) -> String {
    config_text(url, c, &screen_id(c), store).replace(
        "[store]",
        &format!(
            "operator = [\"{}\"]\n[store]",
            operator_key().public().to_base64()
        ),
    ) + &format!(
        "width = 640\nheight = 360\n[office]\nurl = \"{}\"\ntoken_file = \"{}\"\n{}",
        office.url,
        token.display(),
        office.screen_trust()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn screenshot_identify_and_resync_run_once_each_and_report_back() {
    let url = broker_url();
    let dir = tempfile::tempdir().unwrap();
    let office = OfficeServer::running();
    let c = community("commands");
    let screen = screen_id(&c);
    let token = office.token_file(&screen);
    let store = dir.path().join("screen.db");
    // A process of its own: a headless screenshot installs Slint's platform,
    // one per process, and this test binary renders on a thread of its own.
    let config = dir.path().join("screen.toml");
    std::fs::write(&config, screen_text(&url, &c, &store, &office, &token)).unwrap();
    let mut publisher = publisher(&url).await;
    publisher
        .publish_retained(&topics(&c).notice("n1"), signed(&notice(&c, "n1", 1)))
        .await
        .unwrap();
    let mut daemon = DaemonProcess::start(&config, &dir.path().join("log"));
    let mut up = serde_json::Value::Null;
    for _ in 0..100 {
        up = status_of(&url, &c).await;
        if up["showing"]["id"] == "n1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up["showing"]["id"], "n1", "{up}\n{}", daemon.log_text());

    // `gongkai command` with the operator key: the screen takes the
    // screenshot and uploads it; the office writes it out.
    let key = dir.path().join("operator.key");
    std::fs::write(&key, operator_key().to_base64()).unwrap();
    let (key_path, community, screen_name, broker) = (
        key.to_str().unwrap().to_owned(),
        c.clone(),
        screen.clone(),
        url.clone(),
    );
    let cli = move |action: &str| {
        gongkai(&[
            "command",
            "--broker",
            &broker,
            "--key",
            &key_path,
            "--community",
            &community,
            "--screen",
            &screen_name,
            "--wait",
            "30",
            action,
        ])
    };
    let out = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli("screenshot")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log_text()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": done"));
    let png = dir.path().join("shot.png");
    let written = gongkai(&[
        "office",
        "screenshot",
        "--config",
        office.config.to_str().unwrap(),
        "--screen",
        &screen,
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap();
    assert_eq!(
        (info.info().width, info.info().height),
        (640, 360),
        "the screen's own size"
    );

    // identify: the status says so while it lasts.
    let out = tokio::task::spawn_blocking({
        let cli = cli.clone();
        move || cli("identify")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status_of(&url, &c).await["display"], "identify");

    // resync: the notice subscriptions are made again, and the screen stays whole.
    let out = tokio::task::spawn_blocking(move || cli("resync"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A redelivery of a command taken before is never run twice.
    let now = time::OffsetDateTime::now_utc();
    let (id, envelope) =
        gongkai::office::command::signed_command(&c, &screen, Action::Resync, &operator_key(), now)
            .unwrap();
    let topic = topics(&c).screen_command(&screen);
    publisher.publish(&topic, envelope.clone()).await.unwrap();
    let mut first = serde_json::Value::Null;
    for _ in 0..50 {
        first = status_of(&url, &c).await["last_command"].clone();
        if first["id"] == id.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first["result"], "done", "{first}");
    publisher.publish(&topic, envelope).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&url, &c).await["last_command"], first, "run once");

    // A supervisor's signature is neither needed nor enough for a command.
    let rejected = status_of(&url, &c).await["rejected"].as_u64().unwrap();
    let (_, forged) = gongkai::office::command::signed_command(
        &c,
        &screen,
        Action::Identify,
        &supervisor_key(),
        now,
    )
    .unwrap();
    publisher.publish(&topic, forged).await.unwrap();
    let mut after = serde_json::Value::Null;
    for _ in 0..50 {
        after = status_of(&url, &c).await;
        if after["rejected"].as_u64() == Some(rejected + 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after["rejected"].as_u64(), Some(rejected + 1), "{after}");
    let reason = after["last_rejection"]["reason"].as_str().unwrap();
    assert!(reason.contains("missing office signature"), "{reason}");
    assert_eq!(after["manifest"]["missing"], 0);
    publisher.close().await;
    daemon.kill9();
}
