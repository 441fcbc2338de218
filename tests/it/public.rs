//! The office server's own follow of its scopes and the public page
//! `/n/{scope}/{id}` that QR codes open, end to end: notices published with
//! `gongkai publish` to a Mosquitto of the test's own, followed and verified
//! by a real `gongkai office serve`, fetched over HTTPS with reqwest
//! trusting the certificate the server made itself. Also the certificate's
//! reuse across restarts, and plain HTTP: served on loopback, refused
//! anywhere else.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use gongkai::protocol::SecretKey;
use rustls::pki_types::pem::PemObject;

/// The scope's office.toml lines: the broker, the public URL, and the
/// scope with the test keys, accepting urgent notices on the office's
/// signature alone (as a screen may).
fn follow_config(broker: &str, c: &str) -> String {
    format!(
        "broker = \"{broker}\"\n\
         [[scope]]\nid = \"{c}\"\noffice = [\"{}\"]\nsupervisor = [\"{}\"]\nurgent_office_only = true\n",
        office_key().public().to_base64(),
        supervisor_key().public().to_base64()
    )
}

/// `gongkai publish` of `envelopes` (id, bytes) to `broker`, the manifest
/// signed by the office key.
fn publish(dir: &Path, broker: &str, envelopes: &[(&str, Vec<u8>)]) {
    let key = dir.join("office.key");
    std::fs::write(&key, format!("{}\n", office_key().to_base64())).unwrap();
    let mut files = Vec::new();
    for (i, (id, bytes)) in envelopes.iter().enumerate() {
        let file = dir.join(format!("{id}-{i}-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, bytes).unwrap();
        files.push(file);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["publish", "--broker", broker, "--key"])
        .arg(&key)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gongkai publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One answer of the public page: status, headers, body.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn fetch(http: &reqwest::Client, office: &OfficeServer, c: &str, id: &str) -> Page {
    let response = http
        .get(format!("{}/n/{c}/{id}", office.url))
        .send()
        .await
        .expect("the public page answers over HTTPS");
    Page {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// Fetches the page until `ok` holds, failing after 20 s with the last answer.
async fn wait_page(
    http: &reqwest::Client,
    office: &OfficeServer,
    c: &str,
    id: &str,
    what: &str,
    ok: impl Fn(&Page) -> bool,
) -> Page {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = fetch(http, office, c, id).await;
        if ok(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {} {}\n{}",
            page.status,
            page.body,
            office.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fingerprints(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("SHA-256 fingerprint ").map(|(_, f)| f))
        .map(|f| f.trim_end_matches(')').to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn published_notices_show_on_the_public_page_only_as_screens_accept_them() {
    const TEST: &str = "published_notices_show_on_the_public_page_only_as_screens_accept_them";
    let Some(broker) = Mosquitto::start(TEST, "") else {
        return;
    };
    let c = community("public");
    let dir = tempfile::tempdir().unwrap();
    let mut office = OfficeServer::self_signed_with(&follow_config(&broker.url(), &c));
    office.start();
    let http = office.client();

    // Before anything is published: a Chinese 404, with the same headers.
    let missing = fetch(&http, &office, &c, "n1").await;
    assert_eq!(missing.status, 404);
    assert!(
        missing.body.contains("未找到该公开内容"),
        "{}",
        missing.body
    );

    // A stranger's notice is published first, in the same batch as the
    // good ones, then a notice approved by both, an urgent one with the
    // office's signature alone, and one whose title is a script.
    let stranger = SecretKey::from_seed([3; 32]);
    let forged = signed_by(&notice(&c, "forged", 1), &[&stranger, &supervisor_key()]);
    let approved = signed(&notice(&c, "n1", 1));
    let mut urgent = notice(&c, "water", 1);
    urgent["priority"] = "urgent".into();
    urgent["title"] = "停水通知".into();
    let urgent = signed_by(&urgent, &[&office_key()]);
    let mut script = notice(&c, "script", 1);
    script["title"] = "<script>alert('x')</script>".into();
    script["body"] =
        serde_json::json!([{"type": "paragraph", "text": "<img src=x onerror=alert(1)>"}]);
    let script = signed(&script);
    publish(
        dir.path(),
        &broker.url(),
        &[
            ("forged", forged),
            ("n1", approved),
            ("water", urgent),
            ("script", script),
        ],
    );

    // Approved by both: the review mark, from the screens' own words.
    let page = wait_page(&http, &office, &c, "n1", "the approved notice", |p| {
        p.status == 200
    })
    .await;
    assert!(page.body.contains("测试公告 n1 第1版"), "{}", page.body);
    assert!(page.body.contains("经居务监督委员会审核"), "{}", page.body);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; img-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // Accepted on the office's signature alone, as the policy allows: no mark.
    let page = wait_page(&http, &office, &c, "water", "the urgent notice", |p| {
        p.status == 200
    })
    .await;
    assert!(page.body.contains("停水通知"), "{}", page.body);
    assert!(!page.body.contains("居务监督委员会审核"), "{}", page.body);
    assert!(page.body.contains("未经监督委员会审核"), "{}", page.body);

    // A script in a title or a paragraph is text.
    let page = wait_page(&http, &office, &c, "script", "the script notice", |p| {
        p.status == 200
    })
    .await;
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(!page.body.contains("<img src=x"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{}",
        page.body
    );

    // The stranger's notice came before the others and was refused: never shown.
    let page = fetch(&http, &office, &c, "forged").await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(!page.body.contains("测试公告 forged"));
    let log = office.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("rejected") && l.contains("/notices/forged")),
        "the follow refused it, saying why: {log}"
    );

    // A second version: the current one, and the dated history of both.
    let mut second = notice(&c, "n1", 2);
    second["title"] = "测试公告 n1 更正".into();
    publish(dir.path(), &broker.url(), &[("n1", signed(&second))]);
    let page = wait_page(&http, &office, &c, "n1", "the second version", |p| {
        p.body.contains("测试公告 n1 更正")
    })
    .await;
    assert!(
        page.body.contains("<h1>测试公告 n1 更正</h1>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("第 2 版　"), "{}", page.body);
    assert!(page.body.contains("第 1 版　"), "{}", page.body);
    assert!(
        page.body.contains("测试公告 n1 第1版"),
        "the old title in the history"
    );

    // Withdrawn (a signed withdrawal, version 3): the page says so.
    let mut withdrawal = second.clone();
    withdrawal["version"] = 3.into();
    withdrawal["status"] = "withdrawn".into();
    publish(dir.path(), &broker.url(), &[("n1", signed(&withdrawal))]);
    let page = wait_page(&http, &office, &c, "n1", "the withdrawal", |p| {
        p.body.contains("撤回")
    })
    .await;
    assert!(page.body.contains("class=\"withdrawn\""), "{}", page.body);
    assert!(page.body.contains("第 3 版　"), "{}", page.body);

    // The certificate the server made at its first start is reused at the
    // next one, and its fingerprint is printed both times.
    office.terminate(Duration::from_secs(10));
    office.start();
    let page = wait_page(
        &http,
        &office,
        &c,
        "water",
        "the page after a restart",
        |p| p.status == 200,
    )
    .await;
    assert!(page.body.contains("停水通知"));
    let log = office.log_text();
    let printed = fingerprints(&log);
    assert_eq!(printed.len(), 2, "{log}");
    assert_eq!(printed[0], printed[1], "the same certificate: {log}");
    assert_eq!(log.matches("made now").count(), 1, "{log}");
    let pem = std::fs::read(office.ca_file.as_ref().unwrap()).unwrap();
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(
        printed[0],
        gongkai::office::certificate::fingerprint(&cert),
        "the fingerprint printed is the certificate's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_serves_on_loopback_and_is_refused_anywhere_else() {
    // Loopback: plain HTTP, as asked.
    let mut office = OfficeServer::plain_with("");
    office.start();
    assert!(office.url.starts_with("http://127.0.0.1:"));
    let token = office.token("lobby-3");
    let batch = serde_json::json!({"screen": "lobby-3", "community": "lixia-demo", "items": [
        {"id": "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10", "receipt": "K7Q2MD",
         "created_at": "2026-10-08T10:00:00+08:00", "notice_id": "2026q3-finance",
         "notice_version": 1, "kind": "rating", "rating": 3, "reasons": ["clear"],
         "text": "", "contact": ""}]});
    let response = office
        .client()
        .post(format!("{}/api/v1/feedback", office.url))
        .bearer_auth(&token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(office.stored(), 1);
    assert!(office.log_text().contains("listening on http://127.0.0.1:"));

    // Any other address: refused at start, saying why, listening nowhere.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("office.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "listen = \"0.0.0.0:{port}\"\ndatabase = \"{}\"\nplain_http = true\n",
            dir.path().join("office.db").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["office", "serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(
        !dir.path().join("office.db").exists(),
        "nothing was created"
    );
}
