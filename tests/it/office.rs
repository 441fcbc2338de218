//! The office's intake server as a real process (`gongkai office serve`) on
//! loopback, spoken to over HTTPS with reqwest: tokens, idempotent feedback,
//! and malformed, oversized and unauthorised requests that store nothing.

use crate::common;

use common::OfficeServer;
use serde_json::json;

fn item(id: &str) -> serde_json::Value {
    json!({"id": id, "receipt": "K7Q2MD", "created_at": "2026-10-08T10:00:00+08:00",
           "notice_id": "2026q3-finance", "notice_version": 1,
           "kind": "rating", "rating": 3, "reasons": ["clear"], "text": "", "contact": ""})
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_is_stored_once_and_bad_requests_store_nothing() {
    let office = OfficeServer::running();
    let token = office.token("lobby-3");
    let http = office.client();
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

use common::OfficeStream;
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
async fn read_answer(stream: &mut OfficeStream, within: Duration) -> Answer {
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
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    since: Instant,
    within: Duration,
) -> Duration {
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
async fn kept_alive(office: &OfficeServer, token: &str) -> OfficeStream {
    let mut stream = office.connector().connect().await;
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
    let response = office
        .client()
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
) -> Vec<OfficeStream> {
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..n {
        let (connector, head, sent) = (office.connector(), head(), sent(i));
        opening.spawn(async move {
            let mut stream = connector.connect().await;
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
    // Each is answered 401 at once without waiting for its body, or reset:
    // the server closes on bytes it never read, and a reset may overtake
    // the answer. Those that sent a few bytes mostly see theirs.
    let mut refused = 0;
    for (i, stream) in connections.iter_mut().enumerate() {
        match read_answer(stream, Duration::from_secs(2)).await {
            Answer::Status(401, body) => {
                assert!(body.contains("bearer token"), "{body}");
                refused += 1;
            }
            Answer::Closed => {}
            other => panic!("connection {i}: {other:?}"),
        }
    }
    eprintln!("{refused} of 100 saw their 401");
    assert!(refused >= 25, "{refused} of 100 saw their 401");
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
    let connector = office.connector();
    // Header bytes trickling in, one every 100 ms, for ever (after the TLS
    // handshake).
    let slowloris = tokio::spawn(async move {
        let mut stream = connector.connect().await;
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
    // A connection that sends nothing, not even the TLS ClientHello: the
    // handshake is under the header timeout too.
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
    let connector = office.connector();
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
        let connector = connector.clone();
        trickling.push(tokio::spawn(async move {
            let mut stream = connector.connect().await;
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

/// Rows of an office table.
fn rows(office: &OfficeServer, table: &str) -> i64 {
    let db = rusqlite::Connection::open(&office.database).unwrap();
    db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Status and JSON body of an answer.
async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// The first `n` records of a chain (protocol 1.1), as JSON: each starts
/// at its own second.
fn chain_json(n: usize) -> Vec<serde_json::Value> {
    use gongkai::protocol::plays::{PlayRecord, Trigger};
    let mut records: Vec<PlayRecord> = Vec::new();
    for i in 0..n {
        let record = PlayRecord {
            seq: 0,
            scope: "lixia-demo".into(),
            notice_id: "2026q3-finance".into(),
            version: 3,
            started_at: format!(
                "2026-10-08T{:02}:{:02}:{:02}.000Z",
                i / 3600 % 24,
                i / 60 % 60,
                i % 60
            ),
            duration_ms: 36000,
            pages_shown: 2,
            trigger: Trigger::Rotation,
            prev: String::new(),
            hash: String::new(),
        }
        .sealed_after(records.last());
        records.push(record);
    }
    records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

/// Regression: one request stored 10,000 records with notice ids like
/// `../0`, timestamps like `x`, a foreign community, and version 2^64−1
/// stored as −1. With protocol 1.1 the records are a chain's: a hash
/// that does not match, a gap and a record of 1.0 are refused too.
#[tokio::test(flavor = "multi_thread")]
async fn plays_are_refused_whole_unless_every_record_is_in_range() {
    let office = OfficeServer::running();
    let token = office.token_in("lobby-3", "lixia-demo");
    let http = office.client();
    let post = |plays: Vec<serde_json::Value>, community: &str| {
        http.post(format!("{}/api/v1/plays", office.url))
            .bearer_auth(&token)
            .json(&json!({"screen": "lobby-3", "community": community, "plays": plays}))
            .send()
    };
    let batch = chain_json;

    // 10,000 records of a chain are past the body limit already.
    for (n, says) in [(10_000, "larger than"), (1001, "at most 1000")] {
        let (status, body) = answer(post(batch(n), "lixia-demo").await.unwrap()).await;
        assert_eq!(status, 413, "{n} records: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }

    // One bad field in record 3 refuses the batch, naming both.
    let bad = |field: &str, value: serde_json::Value| {
        let mut plays = batch(5);
        plays[3][field] = value;
        plays
    };
    let cases = [
        (bad("notice_id", json!("../0")), "plays[3].notice_id"),
        (bad("notice_id", json!("")), "plays[3].notice_id"),
        (bad("scope", json!("Lixia Demo")), "plays[3].scope"),
        (bad("started_at", json!("x")), "plays[3].started_at"),
        (
            bad("started_at", json!("2026-10-08T09:00:03+08:00")),
            "plays[3].started_at",
        ),
        (bad("version", json!(u64::MAX)), "plays[3].version"),
        (bad("version", json!(0)), "plays[3].version"),
        (bad("version", json!(1u64 << 53)), "plays[3].version"),
        (bad("version", json!(-1)), "plays[3].version"),
        (
            bad(
                "version",
                serde_json::from_str("18446744073709551616").unwrap(),
            ),
            "plays[3].version",
        ),
        (
            bad("duration_ms", json!(86_400_001)),
            "plays[3].duration_ms",
        ),
        (bad("duration_ms", json!("long")), "plays[3].duration_ms"),
        (bad("pages_shown", json!(0)), "plays[3].pages_shown"),
        (
            bad("pages_shown", json!(1u64 << 40)),
            "plays[3].pages_shown",
        ),
        (bad("trigger", json!("swipe")), "plays[3].trigger"),
        (bad("prev", json!("00")), "plays[3].prev"),
        (bad("hash", json!("A".repeat(64))), "plays[3].hash"),
        (bad("seq", json!(0)), "plays[3].seq"),
    ];
    for (plays, expected) in cases {
        let (status, body) = answer(post(plays, "lixia-demo").await.unwrap()).await;
        let error = body["error"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{expected}: {body}");
        assert!(error.contains(expected), "{error:?} should name {expected}");
    }
    // A record of protocol 1.0 has no place in a chain.
    let old = json!({"notice_id": "2026q3-finance", "version": 3,
                     "started_at": "2026-10-08T01:02:03.000Z", "duration_ms": 36000});
    let (status, body) = answer(post(vec![old], "lixia-demo").await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("seq"), "{body}");

    // Another community than the screen's: refused like a wrong token.
    let (status, body) = answer(post(batch(5), "other-demo").await.unwrap()).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("lixia-demo"),
        "{body}"
    );
    // Not JSON by its content type: 415.
    let response = http
        .post(format!("{}/api/v1/plays", office.url))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(
            json!({"screen": "lobby-3", "community": "lixia-demo", "plays": batch(5)}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer(response).await.0, 415);
    // Every field in range, and a duration changed under its old hash: the
    // chain's own check refuses it, and the conflict is recorded.
    let (status, body) = answer(
        post(bad("duration_ms", json!(1)), "lixia-demo")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("record 4: hash"),
        "{body}"
    );
    assert_eq!(rows(&office, "play_conflicts"), 1);
    // Records 3 and on, while the office holds none: resend from 1.
    let (status, body) = answer(post(batch(5)[2..].to_vec(), "lixia-demo").await.unwrap()).await;
    assert_eq!((status, &body["next_seq"]), (409, &json!(1)), "{body}");
    assert_eq!(
        rows(&office, "chain_plays"),
        0,
        "nothing of a refused batch is stored"
    );

    // The limit itself is taken, once.
    let (status, body) = answer(post(batch(1000), "lixia-demo").await.unwrap()).await;
    assert_eq!(
        (status, &body["stored"], &body["next_seq"]),
        (200, &json!(1000), &json!(1001)),
        "{body}"
    );
    let (_, body) = answer(post(batch(1000), "lixia-demo").await.unwrap()).await;
    assert_eq!(body["stored"], json!(0), "a retry stores nothing twice");
    assert_eq!(rows(&office, "chain_plays"), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_screen_sends_only_for_its_own_community() {
    let office = OfficeServer::running();
    let http = office.client();
    let post = |token: String, screen: &'static str, community: &'static str| {
        let id = uuid::Uuid::now_v7().to_string();
        http.post(format!("{}/api/v1/feedback", office.url))
            .bearer_auth(token)
            .json(&feedback_batch(screen, community, &[&id]))
            .send()
    };
    // Bound when the token was issued.
    let bound = office.token_in("lobby-3", "lixia-demo");
    let (status, body) = answer(post(bound.clone(), "lobby-3", "other-demo").await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("belongs to community \"lixia-demo\""),
        "{body}"
    );
    assert_eq!(
        post(bound, "lobby-3", "lixia-demo").await.unwrap().status(),
        200
    );

    // Issued without a community: bound by the first one it sends.
    let unbound = office.token("gate-1");
    // A community that is no id binds nothing.
    let (status, body) = answer(post(unbound.clone(), "gate-1", "../x").await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        post(unbound.clone(), "gate-1", "lixia-demo")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(unbound, "gate-1", "other-demo")
            .await
            .unwrap()
            .status(),
        401
    );
    // A new token for the same screen keeps its community.
    let renewed = office.token("gate-1");
    assert_eq!(
        post(renewed.clone(), "gate-1", "other-demo")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(renewed, "gate-1", "lixia-demo")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(office.stored(), 3);
    let db = rusqlite::Connection::open(&office.database).unwrap();
    let foreign: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM feedback WHERE community != 'lixia-demo'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(foreign, 0);
}

/// Regression: one UUID written in five spellings was stored five times.
#[tokio::test(flavor = "multi_thread")]
async fn five_spellings_of_one_id_are_stored_once() {
    let office = OfficeServer::running();
    let token = office.token("lobby-3");
    let http = office.client();
    let canonical = "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a30";
    let spellings = [
        "0192F1E4-7B7A-7CC3-9A51-6B3F4F0B2A30",
        "{0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a30}",
        "urn:uuid:0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a30",
        "0192f1e47b7a7cc39a516b3f4f0b2a30",
        canonical,
    ];
    let post = |ids: &[&str]| {
        http.post(format!("{}/api/v1/feedback", office.url))
            .bearer_auth(&token)
            .json(&feedback_batch("lobby-3", "lixia-demo", ids))
            .send()
    };
    // All five in one request, then each in a request of its own.
    let (status, body) = answer(post(&spellings).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], json!([canonical]), "{body}");
    for spelling in spellings {
        let (_, body) = answer(post(&[spelling]).await.unwrap()).await;
        assert_eq!(body["accepted"], json!([canonical]), "{spelling}: {body}");
    }
    assert_eq!(office.stored(), 1);

    // A screenshot's command id likewise: one command, one frame.
    for spelling in spellings {
        let response = http
            .put(format!("{}/api/v1/screenshots/{spelling}", office.url))
            .bearer_auth(&token)
            .header("content-type", "image/png")
            .body(png_of(4, 3))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{spelling}");
    }
    let db = rusqlite::Connection::open(&office.database).unwrap();
    let ids: Vec<String> = db
        .prepare("SELECT command_id FROM screenshots")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, [canonical]);
}

/// A PNG of `width`×`height` grey pixels.
fn png_of(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_image_data(&vec![128; (width * height) as usize])
        .unwrap();
    writer.finish().unwrap();
    out
}

/// Regression: a screenshot counted as a PNG by its magic bytes alone, and
/// bodies of any content type were taken.
#[tokio::test(flavor = "multi_thread")]
async fn screenshots_are_whole_png_headers_and_bodies_say_their_type() {
    let office = OfficeServer::running();
    let token = office.token("lobby-3");
    let http = office.client();
    let put = |body: Vec<u8>, content_type: &str| {
        http.put(format!(
            "{}/api/v1/screenshots/{}",
            office.url,
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(&token)
        .header("content-type", content_type)
        .body(body)
        .send()
    };
    let mut corrupt = png_of(4, 3);
    corrupt[20] ^= 0xff; // inside IHDR: its CRC no longer matches
    let mut magic_only = b"\x89PNG\r\n\x1a\n".to_vec();
    magic_only.extend_from_slice(&[0; 100]);
    for (body, expected) in [
        (magic_only, "not a PNG"),
        (corrupt, "not a PNG"),
        (png_of(9000, 1), "at most 8192×8192"),
    ] {
        let (status, body) = answer(put(body, "image/png").await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(expected), "{body}");
    }
    let (status, body) = answer(put(png_of(4, 3), "application/octet-stream").await.unwrap()).await;
    assert_eq!(status, 415, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("image/png"),
        "{body}"
    );
    assert_eq!(rows(&office, "screenshots"), 0);
    assert_eq!(put(png_of(4, 3), "image/png").await.unwrap().status(), 204);

    // JSON routes want application/json; parameters are fine.
    let batch = feedback_batch(
        "lobby-3",
        "lixia-demo",
        &["0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a40"],
    );
    let post = |content_type: Option<&str>| {
        let mut request = http
            .post(format!("{}/api/v1/feedback", office.url))
            .bearer_auth(&token)
            .body(batch.to_string());
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        request.send()
    };
    for refused in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (status, body) = answer(post(refused).await.unwrap()).await;
        assert_eq!(status, 415, "{refused:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("application/json"),
            "{body}"
        );
    }
    assert_eq!(office.stored(), 0);
    assert_eq!(
        post(Some("application/json; charset=utf-8"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(office.stored(), 1);
}

/// Sends `head` and `body` whole before reading anything, as a client that
/// does not look for an early answer would, and returns what came back.
async fn send_whole(office: &OfficeServer, head: String, body: Vec<u8>) -> Answer {
    let mut stream = office.connector().connect().await;
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await
    };
    // A write the server cut short is fine (a reset after 32 MiB); one
    // that never ends is not.
    let _ = tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("the server reads or closes, never stalls a sender");
    read_answer(&mut stream, Duration::from_secs(30)).await
}

/// Regression: screenshots of 16 to 50 MiB got a broken connection instead
/// of a 413.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_read_then_answered_413() {
    let office = OfficeServer::running();
    let token = office.token("lobby-3");
    let png = |n| head("PUT", &screenshot_path(), Some(&token), "image/png", n);

    let answer = send_whole(&office, png(20 * MIB), vec![0; 20 * MIB]).await;
    let Answer::Status(413, body) = &answer else {
        panic!("20 MiB screenshot: {answer:?}");
    };
    assert!(body.contains("larger than"), "{body}");

    // Past what the office drains: a 413, or a close, never a hang.
    let answer = send_whole(&office, png(40 * MIB), vec![0; 40 * MIB]).await;
    eprintln!("40 MiB screenshot: {answer:?}");
    assert!(
        matches!(answer, Answer::Status(413, _) | Answer::Closed),
        "{answer:?}"
    );

    // A JSON body past 1 MiB, declared or not, the same.
    let json_head = |n| head("POST", "/api/v1/feedback", Some(&token), JSON, n);
    let answer = send_whole(&office, json_head(2 * MIB), vec![b' '; 2 * MIB]).await;
    assert_eq!(answer.status(), Some(413), "{answer:?}");
    let chunked = format!(
        "POST /api/v1/feedback HTTP/1.1\r\nhost: office\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let mut body = Vec::new();
    for _ in 0..3 {
        body.extend_from_slice(format!("{:x}\r\n", MIB).as_bytes());
        body.extend(std::iter::repeat_n(b' ', MIB));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let answer = send_whole(&office, chunked, body).await;
    assert_eq!(answer.status(), Some(413), "chunked: {answer:?}");

    // And the server is none the worse.
    still_served(&office, &token, Duration::from_secs(5)).await;
    assert_eq!(rows(&office, "screenshots"), 0);
}
