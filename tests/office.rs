//! The office's intake server as a real process (`gongkai office serve`) on
//! loopback, spoken to over HTTP with reqwest: tokens, idempotent feedback,
//! and malformed, oversized and unauthorised requests that store nothing.

mod common;

use common::OfficeServer;
use serde_json::json;

fn item(id: &str) -> serde_json::Value {
    json!({"id": id, "receipt": "K7Q2MD", "created_at": "2026-10-08T10:00:00+08:00",
           "notice_id": "2026q3-finance", "notice_version": 1,
           "kind": "rating", "rating": 3, "reasons": ["clear"], "text": "", "contact": ""})
}

fn client() -> reqwest::Client {
    gongkai::mqtt::install_crypto_provider();
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_is_stored_once_and_bad_requests_store_nothing() {
    let office = OfficeServer::running();
    let token = office.token("lobby-3");
    let http = client();
    let post = |body: serde_json::Value, token: &str| {
        http.post(format!("{}/api/v1/feedback", office.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let a = "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10";
    let b = "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a11";
    let batch =
        json!({"screen": "lobby-3", "community": "lixia-demo", "items": [item(a), item(b)]});

    // Accepted, then accepted again on a retry, and stored once.
    for _ in 0..2 {
        let response = post(batch.clone(), &token).await.unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["accepted"], json!([a, b]));
        assert_eq!(body["rejected"], json!([]));
    }
    assert_eq!(office.stored(), 2);

    // An invalid item is rejected with its reason; the rest are taken.
    let mut bad = item("0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a12");
    bad["rating"] = json!(7);
    let c = "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a13";
    let response = post(
        json!({"screen": "lobby-3", "community": "lixia-demo", "items": [bad, item(c)]}),
        &token,
    )
    .await
    .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], json!([c]));
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("1, 2 or 3")
    );
    assert_eq!(office.stored(), 3);

    // Malformed: 400 with a JSON error naming the field.
    let response = post(json!({"screen": "lobby-3", "items": "many"}), &token)
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("malformed"),
        "{body}"
    );

    // Oversized: 413.
    let mut huge = item("0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a14");
    huge["text"] = json!("长".repeat(600_000));
    let response = post(
        json!({"screen": "lobby-3", "community": "lixia-demo", "items": [huge]}),
        &token,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "a JSON error: {body}");

    // Unauthorised: no token, a wrong token, another screen's token.
    let response = http
        .post(format!("{}/api/v1/feedback", office.url))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        post(batch.clone(), "not-a-token").await.unwrap().status(),
        401
    );
    let other = office.token("lobby-4");
    let mut fresh = batch.clone();
    fresh["items"] = json!([item("0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a15")]);
    assert_eq!(post(fresh.clone(), &other).await.unwrap().status(), 401);
    // A new token replaces the old one.
    let renewed = office.token("lobby-3");
    assert_eq!(post(fresh.clone(), &token).await.unwrap().status(), 401);
    assert_eq!(post(fresh, &renewed).await.unwrap().status(), 200);
    assert_eq!(
        office.stored(),
        4,
        "nothing of the refused requests was stored"
    );
}

// Attacks on the intake server, each end to end against the real process.
// Raw TCP where a well-behaved client (reqwest) cannot misbehave enough.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

/// A request head with a Content-Length of `length`.
fn head(
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    length: usize,
) -> String {
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: office\r\n{auth}content-type: {content_type}\r\ncontent-length: {length}\r\n\r\n"
    )
}

fn screenshot_path() -> String {
    format!("/api/v1/screenshots/{}", uuid::Uuid::new_v4())
}

/// How a connection ended from the client's side.
#[derive(Debug, PartialEq)]
enum Answer {
    /// A status and the body that came with it.
    Status(u16, String),
    /// Closed (or reset) before a whole answer came.
    Closed,
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Status(code, _) => Some(*code),
            Answer::Closed => None,
        }
    }
}

/// Reads one answer; panics if none (and no close) comes `within`: the
/// server must never leave a client hanging.
async fn read_answer(stream: &mut TcpStream, within: Duration) -> Answer {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let code = head.split(' ').nth(1).and_then(|c| c.parse().ok());
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    return code.map_or(Answer::Closed, |c| Answer::Status(c, body.into()));
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Answer::Closed,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the server answers or closes, never hangs")
}

/// Waits until the server closes `stream` (EOF or reset); how long after
/// `since` that was.
async fn closed_after(stream: &mut TcpStream, since: Instant, within: Duration) -> Duration {
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
    since.elapsed()
}

/// A connection that carried one good feedback request and is kept alive.
async fn kept_alive(office: &OfficeServer, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", office.port))
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let body = feedback_batch("lobby-3", "lixia-demo", &[&id]).to_string();
    let head = head("POST", "/api/v1/feedback", Some(token), JSON, body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(answer.status(), Some(200), "{answer:?}");
    stream
}

const JSON: &str = "application/json";

fn feedback_batch(screen: &str, community: &str, ids: &[&str]) -> serde_json::Value {
    let items: Vec<_> = ids.iter().map(|id| item(id)).collect();
    json!({"screen": screen, "community": community, "items": items})
}

/// One feedback request with a fresh item, which must be answered 200
/// within `within`: the server still serves screens.
async fn still_served(office: &OfficeServer, token: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let id = uuid::Uuid::now_v7().to_string();
    let response = client()
        .post(format!("{}/api/v1/feedback", office.url))
        .bearer_auth(token)
        .json(&feedback_batch("lobby-3", "lixia-demo", &[&id]))
        .timeout(within)
        .send()
        .await
        .expect("a screen is still served");
    assert_eq!(response.status(), 200);
    start.elapsed()
}

/// Opens `n` connections at once, each sending `head` and then `sent` bytes
/// of its body (as much as the server takes within a second), and leaves
/// them open.
async fn stalled(
    office: &OfficeServer,
    n: usize,
    head: impl Fn() -> String,
    sent: impl Fn(usize) -> usize,
) -> Vec<TcpStream> {
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..n {
        let (port, head, sent) = (office.port, head(), sent(i));
        opening.spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let body = vec![0u8; sent];
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&body)).await;
            stream
        });
    }
    opening.join_all().await
}

/// The server's peak resident memory in KiB over `during`, sampled.
async fn peak_rss(office: &OfficeServer, during: Duration) -> u64 {
    let end = Instant::now() + during;
    let mut peak = office.rss_kib();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(office.rss_kib());
    }
    peak
}

/// Regression: the server read whole bodies (8 MiB each) before looking at
/// the token, with no timeout: 100 such connections held 847 MB.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_uploads_without_a_token_are_refused_unread_and_hold_no_memory() {
    let office = OfficeServer::running();
    let token = office.token("lobby-3");
    let idle = office.rss_kib();
    // Half send a few bytes of their 8 MiB, half all but the last byte.
    let mut connections = stalled(
        &office,
        100,
        || head("PUT", &screenshot_path(), None, "image/png", 8 * MIB),
        |i| if i % 2 == 0 { 8 } else { 8 * MIB - 1 },
    )
    .await;
    let peak = peak_rss(&office, Duration::from_secs(2)).await;
    let served = still_served(&office, &token, Duration::from_secs(5)).await;
    eprintln!(
        "100 stalled tokenless uploads: RSS {idle} KiB idle, {peak} KiB at peak; a screen served in {served:?}"
    );
    assert!(peak < 100 * 1024, "RSS {peak} KiB");
    // Each is answered 401 at once (or reset, when the server closed on
    // bytes it never read), without waiting for its body.
    let mut refused = 0;
    for (i, stream) in connections.iter_mut().enumerate() {
        match read_answer(stream, Duration::from_secs(2)).await {
            Answer::Status(401, body) => {
                assert!(body.contains("bearer token"), "{body}");
                refused += 1;
            }
            Answer::Closed if i % 2 == 1 => {}
            other => panic!("connection {i}: {other:?}"),
        }
    }
    assert!(refused >= 50, "{refused} of 100 saw their 401");
}

/// Token holders cannot exhaust memory either: bodies are read under a
/// budget and a deadline (3 s here), and a stalled one is answered.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_uploads_with_a_token_stay_within_the_budget_and_time_out() {
    let office = OfficeServer::running_with("[limits]\nbody_timeout_seconds = 3\n");
    let token = office.token("lobby-3");
    let idle = office.rss_kib();
    let started = Instant::now();
    let mut connections = stalled(
        &office,
        100,
        || {
            head(
                "PUT",
                &screenshot_path(),
                Some(&token),
                "image/png",
                8 * MIB,
            )
        },
        |_| 8 * MIB - 1,
    )
    .await;
    let served = still_served(&office, &token, Duration::from_secs(5)).await;
    let peak = peak_rss(&office, Duration::from_secs(1)).await;
    eprintln!(
        "100 stalled uploads with a token: RSS {idle} KiB idle, {peak} KiB at peak; a screen served in {served:?}"
    );
    assert!(peak < 100 * 1024, "RSS {peak} KiB");
    let mut statuses = std::collections::BTreeMap::new();
    for stream in &mut connections {
        let answer = read_answer(stream, Duration::from_secs(10)).await;
        *statuses.entry(answer.status()).or_insert(0) += 1;
    }
    eprintln!("their answers after {:?}: {statuses:?}", started.elapsed());
    assert!(
        statuses
            .keys()
            .all(|s| matches!(s, Some(408) | Some(503) | None)),
        "{statuses:?}"
    );
    assert!(statuses.contains_key(&Some(408)), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_silent_and_idle_connections_are_closed_by_the_server() {
    let office = OfficeServer::running_with("[limits]\nheader_timeout_seconds = 2\n");
    let token = office.token("lobby-3");
    let port = office.port;
    // Header bytes trickling in, one every 100 ms, for ever.
    let slowloris = tokio::spawn(async move {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let start = Instant::now();
        let text = "POST /api/v1/feedback HTTP/1.1\r\nhost: office\r\nx-padding: ".to_owned()
            + &"a".repeat(10_000);
        for byte in text.as_bytes() {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            let mut probe = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
        }
        start.elapsed()
    });
    // A connection that sends nothing.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let silent_since = Instant::now();
    // A kept-alive connection after one good request.
    let mut idle = kept_alive(&office, &token).await;
    let idle_since = Instant::now();

    let silent_for = closed_after(&mut silent, silent_since, Duration::from_secs(10)).await;
    let idle_for = closed_after(&mut idle, idle_since, Duration::from_secs(10)).await;
    let slowloris_for = slowloris.await.unwrap();
    eprintln!(
        "closed by the server after: slowloris {slowloris_for:?}, silent {silent_for:?}, idle {idle_for:?}"
    );
    for took in [slowloris_for, silent_for, idle_for] {
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_wait_for_a_slot() {
    let office =
        OfficeServer::running_with("[limits]\nheader_timeout_seconds = 2\nmax_connections = 4\n");
    let token = office.token("lobby-3");
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(
            TcpStream::connect(("127.0.0.1", office.port))
                .await
                .unwrap(),
        );
    }
    // Every slot is held by a silent client until its header timeout: the
    // screen waits in the queue, then is served.
    let waited = still_served(&office, &token, Duration::from_secs(10)).await;
    eprintln!("a fifth client served after {waited:?}");
    assert!(
        waited >= Duration::from_secs(1),
        "served at once: the cap did not hold"
    );
    for stream in &mut silent {
        closed_after(stream, Instant::now(), Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_the_server_within_ten_seconds_whatever_clients_do() {
    let mut office = OfficeServer::running();
    let token = office.token("lobby-3");
    let port = office.port;
    let _tokenless = stalled(
        &office,
        100,
        || head("PUT", &screenshot_path(), None, "image/png", 8 * MIB),
        |_| 8,
    )
    .await;
    // Requests in flight, whose bodies never end.
    let _uploads = stalled(
        &office,
        5,
        || {
            head(
                "PUT",
                &screenshot_path(),
                Some(&token),
                "image/png",
                8 * MIB,
            )
        },
        |_| 1000,
    )
    .await;
    // Slowloris clients, still trickling when the signal comes.
    let mut trickling = Vec::new();
    for _ in 0..20 {
        trickling.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            for byte in b"POST /api/v1/feedback HTTP/1.1\r\nhost: office\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Idle kept-alive connections.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(kept_alive(&office, &token).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (took, status) = tokio::task::spawn_blocking(move || {
        let ended = office.terminate(Duration::from_secs(10));
        drop(office);
        ended
    })
    .await
    .unwrap();
    eprintln!("SIGTERM with 128 hostile connections open: exited {status} after {took:?}");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    for t in trickling {
        t.abort();
    }
}
