//! The office CLI and `gongkaid --check`, run as their binaries.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn gongkai(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Keys made by `keygen`, a screen config trusting them, and a signed notice.
struct Office {
    dir: tempfile::TempDir,
}

impl Office {
    fn new() -> Office {
        let office = Office {
            dir: tempfile::tempdir().unwrap(),
        };
        for role in ["office", "supervisor"] {
            let out = gongkai(&["keygen", "--out", p(&office.path(&format!("{role}.key")))]);
            assert!(out.status.success(), "{}", stderr(&out));
            let text = stdout(&out);
            let public = text
                .lines()
                .find_map(|l| l.strip_prefix("public: "))
                .unwrap();
            let keyid = text
                .lines()
                .find_map(|l| l.strip_prefix("keyid: "))
                .unwrap();
            let key = gongkai::protocol::PublicKey::from_base64(public).unwrap();
            assert_eq!(key.key_id().0, keyid);
            std::fs::write(office.path(&format!("{role}.pub")), public).unwrap();
        }
        office
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn public(&self, role: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{role}.pub"))).unwrap()
    }

    fn screen_config(&self, community: &str, url: &str) -> std::path::PathBuf {
        let path = self.path("screen.toml");
        let text = format!(
            "[screen]\nid = \"lobby-1\"\ncommunity = \"{community}\"\n[mqtt]\nurl = \"{url}\"\n\
             [trust]\noffice = [\"{}\"]\nsupervisor = [\"{}\"]\n[store]\npath = \"{}\"\n",
            self.public("office"),
            self.public("supervisor"),
            self.path("screen.db").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes `payload`, signs it by the office, then by the supervisor.
    /// Runs `gongkai sign --key ROLE.key INPUT -o OUTPUT [EXTRA...]`.
    fn sign(&self, role: &str, input: &Path, output: &Path, extra: &[&str]) -> Output {
        let key = self.path(&format!("{role}.key"));
        let mut args = vec!["sign", "--key", p(&key), p(input), "-o", p(output)];
        args.extend_from_slice(extra);
        gongkai(&args)
    }

    /// Writes `payload` as `NAME.json` and returns it.
    fn write_payload(&self, name: &str, payload: &serde_json::Value) -> std::path::PathBuf {
        let input = self.path(&format!("{name}.json"));
        std::fs::write(&input, serde_json::to_vec_pretty(payload).unwrap()).unwrap();
        input
    }

    /// Writes `payload`, signs it by the office, then by the supervisor.
    fn sign_both(&self, name: &str, payload: &serde_json::Value) -> std::path::PathBuf {
        let input = self.write_payload(name, payload);
        let once = self.path(&format!("{name}.office.json"));
        let out = self.sign("office", &input, &once, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let twice = self.path(&format!("{name}.env.json"));
        let out = self.sign("supervisor", &once, &twice, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("2 signature(s)"));
        twice
    }
}

#[test]
fn keygen_writes_a_private_seed_and_never_overwrites() {
    let office = Office::new();
    let key = office.path("office.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.lines().count(), 1);
    gongkai::protocol::SecretKey::from_base64(&text).unwrap();
    let again = gongkai(&["keygen", "--out", p(&key)]);
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        text,
        "the key is untouched"
    );
}

#[test]
fn sign_then_verify_as_the_screen_would() {
    let office = Office::new();
    let c = "lixia-demo";
    let config = office.screen_config(c, "mqtt://127.0.0.1:1");
    let envelope = office.sign_both("n1", &notice(c, "n1", 1));
    let topic = format!("gongkai/v1/{c}/notices/n1");

    let out = gongkai(&[
        "verify",
        "--config",
        p(&config),
        "--topic",
        &topic,
        p(&envelope),
    ]);
    assert_eq!(stdout(&out).trim(), "accept");
    assert_eq!(out.status.code(), Some(0));

    let office_only = office.path("n1.office.json");
    let out = gongkai(&[
        "verify",
        "--config",
        p(&config),
        "--topic",
        &topic,
        p(&office_only),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("reject: missing supervisor signature"),
        "{}",
        stdout(&out)
    );

    let out = gongkai(&[
        "verify",
        "--config",
        p(&config),
        "--topic",
        &format!("gongkai/v1/{c}/notices/n2"),
        p(&envelope),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("does not match the topic's id"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn sign_refuses_invalid_payloads_and_unmasked_personal_data() {
    let office = Office::new();
    let mut bad = notice("lixia-demo", "n1", 1);
    bad["title"] = "".into();
    let input = office.write_payload("bad", &bad);
    let out = office.sign("office", &input, &office.path("bad.env"), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("title"), "{}", stderr(&out));
    assert!(!office.path("bad.env").exists(), "nothing is written");

    let mut personal = notice("lixia-demo", "dibao", 1);
    personal["body"] = serde_json::json!([{"type": "table", "header": ["姓名", "身份证号", "电话"],
        "rows": [["张*三", "370102198001011234", "13800138000"]]}]);
    let input = office.write_payload("personal", &personal);
    let out = office.sign("office", &input, &office.path("p.env"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("resident ID") && err.contains("mobile"),
        "{err}"
    );
    assert!(
        !err.contains("13800138000"),
        "the refusal does not repeat the number: {err}"
    );
    let out = office.sign(
        "office",
        &input,
        &office.path("p.env"),
        &["--allow-personal-data"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn withdraw_makes_the_next_version_and_signing_it_is_accepted() {
    let office = Office::new();
    let c = "lixia-demo";
    let config = office.screen_config(c, "mqtt://127.0.0.1:1");
    let envelope = office.sign_both("n1", &notice(c, "n1", 3));
    let withdrawal = office.path("withdraw.json");
    let out = gongkai(&["withdraw", p(&envelope), "-o", p(&withdrawal)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&withdrawal).unwrap()).unwrap();
    assert_eq!(value["version"], 4);
    assert_eq!(value["status"], "withdrawn");
    let signed = office.sign_both("withdraw", &value);
    let out = gongkai(&[
        "verify",
        "--config",
        p(&config),
        "--topic",
        &format!("gongkai/v1/{c}/notices/n1"),
        p(&signed),
    ]);
    assert_eq!(stdout(&out).trim(), "accept");
}

#[test]
fn gongkaid_check_exits_78_listing_every_problem() {
    let office = Office::new();
    let config = office.screen_config("lixia-demo", "mqtt://127.0.0.1:1883");
    let ok = Command::new(env!("CARGO_BIN_EXE_gongkaid"))
        .args(["--config", p(&config), "--check"])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("lobby-1", "lobby 1")
        + "\n[extra]\n";
    std::fs::write(&config, text.replace("mqtt://", "http://")).unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_gongkaid"))
        .args(["--config", p(&config), "--check"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(78));
    let err = stderr(&bad);
    for expected in [
        "screen.id",
        "mqtt.url",
        "unknown section [extra]",
        "3 problem(s)",
    ] {
        assert!(err.contains(expected), "{expected} not in {err}");
    }
}

#[test]
fn publish_then_a_screen_caches_it_and_the_fleet_reports() {
    let url = broker_url();
    let office = Office::new();
    let c = community("cli");
    let config = office.screen_config(&c, &url);
    let a = office.sign_both("a", &notice(&c, "a", 1));
    let b = office.sign_both("b", &notice(&c, "b", 1));
    let key = office.path("office.key");
    let out = gongkai(&["publish", "--broker", &url, "--key", p(&key), p(&a), p(&b)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("manifest version 1"),
        "{}",
        stdout(&out)
    );
    // A second publish merges with the retained manifest.
    let a2 = office.sign_both("a2", &notice(&c, "a", 2));
    let out = gongkai(&["publish", "--broker", &url, "--key", p(&key), p(&a2)]);
    assert!(
        stdout(&out).contains("manifest version 2"),
        "{}",
        stdout(&out)
    );

    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("lobby-1", &screen_id(&c));
    std::fs::write(&config, text).unwrap();
    let daemon = DaemonProcess::start(&config, &office.path("daemon.log"));
    let store = office.path("screen.db");
    eventually("the screen to hold a v2 and b v1 with the manifest", || {
        let out = gongkai(&["cache", "--store", p(&store), "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let Some(rows) = rows.as_array() else {
            return false;
        };
        rows.len() == 2
            && rows
                .iter()
                .any(|r| r["id"] == "a" && r["version"] == 2 && r["active"] == true)
            && rows
                .iter()
                .any(|r| r["id"] == "b" && r["status"] == "active" && r["category"] == "affairs")
    });
    let table = stdout(&gongkai(&["cache", "--store", p(&store)]));
    assert!(
        table.contains(&format!("manifest of {c} version 2 lists 2 notices")),
        "{table}"
    );

    eventually("the fleet status to show the screen online", || {
        let out = gongkai(&["status", "--broker", &url, "--community", &c, "--json"]);
        let fleet: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        fleet[0]["state"] == "online"
            && fleet[0]["cached"] == 2
            && fleet[0]["manifest"]["version"] == 2
    });
    drop(daemon);
}

#[test]
fn render_draws_a_cached_notice_to_png_without_a_display() {
    let office = Office::new();
    let c = "lixia-demo";
    let config = office.screen_config(c, "mqtt://127.0.0.1:1");
    // Fill the screen's store the way the daemon does: verify, then commit.
    let screen = gongkai::config::Config::load(&config).unwrap();
    let mut store = gongkai::store::Store::open(&screen.store.path).unwrap();
    let mut payload: serde_json::Value = serde_json::from_str(gongkai::samples::ALL[0].1).unwrap();
    payload["community"] = c.into();
    let id = payload["id"].as_str().unwrap().to_owned();
    let envelope = std::fs::read(office.sign_both("finance", &payload)).unwrap();
    let topic = format!("gongkai/v1/{c}/notices/{id}");
    let verdict =
        gongkai::protocol::verify_message(&screen.topics(), &topic, &envelope, &screen.trust);
    assert!(verdict.is_ok(), "{verdict:?}");
    store
        .commit(&[gongkai::store::Incoming {
            topic,
            bytes: envelope,
            verdict,
        }])
        .unwrap();
    drop(store);

    for (args, size) in [
        (vec!["--now"], (1920u32, 1080u32)),
        (vec!["--notice", id.as_str(), "--page", "2"], (1080, 1920)),
    ] {
        let out_file = office.path("page.png");
        let size_arg = format!("{}x{}", size.0, size.1);
        let mut all = vec![
            "render",
            "--config",
            p(&config),
            "--size",
            &size_arg,
            "--out",
            p(&out_file),
        ];
        all.extend(args.iter().copied());
        let out = gongkai(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        let png = std::fs::read(&out_file).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), size.0);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), size.1);
    }
    let out = gongkai(&[
        "render",
        "--config",
        p(&config),
        "--notice",
        "nope",
        "--out",
        p(&office.path("x.png")),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no notice"), "{}", stderr(&out));
}
