//! Residents' feedback is never lost between a screen and the office: the
//! real daemon's sync task against the real office server process on
//! loopback, through outages, broken answers and `kill -9`. Submissions go
//! through `Outbox::submit`, the call the kiosk UI makes.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use gongkai::daemon::Daemon;
use gongkai::store::outbox::{Outbox, Submission};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Receipts the office holds, and how many rows.
fn office_receipts(office: &OfficeServer) -> (BTreeSet<String>, u64) {
    let db = rusqlite::Connection::open(&office.database).unwrap();
    let mut stmt = db.prepare("SELECT receipt FROM feedback").unwrap();
    let receipts = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (receipts, office.stored())
}

/// A screen's configuration sending feedback to `office_url` (the office
/// or a proxy in front of it), trusting `office`'s certificate.
fn config_with_office(
    community: &str,
    store: &Path,
    office: &OfficeServer,
    office_url: &str,
    token: &Path,
    timeout: u64,
) -> String {
    format!(
        "{}\n[office]\nurl = \"{office_url}\"\ntoken_file = \"{}\"\ntimeout_seconds = {timeout}\n{}",
        config_text(&broker_url(), community, &screen_id(community), store),
        token.display(),
        office.screen_trust()
    )
}

fn submission(i: usize) -> Submission {
    Submission {
        notice: Some(gongkai::schedule::Key {
            scope: "lixia-demo".into(),
            id: "2026q3-finance".into(),
            version: 1,
        }),
        kind: "rating".into(),
        rating: Some((i % 3 + 1) as u8),
        reasons: vec!["clear".into()],
        text: String::new(),
        contact: if i % 10 == 0 {
            "13812341234".into()
        } else {
            String::new()
        },
    }
}

/// Submits `n` items the way the kiosk does; returns their receipts.
fn submit(store: &Path, n: usize) -> BTreeSet<String> {
    let mut outbox = Outbox::open(store).unwrap();
    (0..n)
        .map(|i| {
            outbox
                .submit(submission(i), time::OffsetDateTime::now_utc())
                .unwrap()
                .receipt
        })
        .collect()
}

/// A screen daemon on `store`, sending its feedback to `office_url`.
async fn screen_with_office(
    community: &str,
    store: &Path,
    office: &OfficeServer,
    office_url: &str,
    token: &Path,
    timeout: u64,
) -> Daemon {
    let text = config_with_office(community, store, office, office_url, token, timeout);
    Daemon::start(gongkai::config::Config::parse(&text).unwrap())
        .await
        .unwrap()
}

/// Queues `n` items as the kiosk does, wakes the sync task, and returns
/// their receipts.
async fn queue(daemon: &Daemon, store: &Path, n: usize) -> BTreeSet<String> {
    let store = store.to_owned();
    let receipts = tokio::task::spawn_blocking(move || submit(&store, n))
        .await
        .unwrap();
    daemon.feedback_wake.notify_one();
    receipts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_items_queued_while_the_office_is_down_arrive_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut office = OfficeServer::new();
    let c = community("outage");
    let token = office.token_file(&screen_id(&c));
    let store = dir.path().join("screen.db");
    let daemon = screen_with_office(&c, &store, &office, &office.url, &token, 5).await;
    let receipts = queue(&daemon, &store, 1000).await;
    let outbox = daemon.outbox.clone();
    wait_until("the outbox to count them", Duration::from_secs(10), || {
        outbox.borrow().pending == 1000
    })
    .await;
    // The office is down for a while: nothing is lost, nothing is settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(daemon.outbox.borrow().pending, 1000);

    office.start();
    let returned = Instant::now();
    wait_until("the queue to drain", Duration::from_secs(30), || {
        outbox.borrow().pending == 0
    })
    .await;
    eprintln!(
        "1000 items reached the office {:?} after its return",
        returned.elapsed()
    );
    let (held, rows) = office_receipts(&office);
    assert_eq!(rows, 1000, "each item stored once");
    assert_eq!(held, receipts);
    let counts = daemon.outbox.borrow().to_owned();
    assert_eq!((counts.accepted, counts.rejected), (1000, 0));
    // Accepted items keep no contact number on the screen.
    let left = Outbox::open(&store).unwrap().pending(10).unwrap();
    assert!(left.is_empty());
    daemon.shutdown().await;
    assert_eq!(Outbox::open(&store).unwrap().contacts_kept().unwrap(), 0);
}

/// What a fault-injecting proxy does with the connection number `n`.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answers 500 itself.
    ServerError,
    /// Answers 400 itself: the office refuses what was sent, for good.
    BadRequest,
    /// Reads the request and never answers (the client times out).
    Silence,
    /// Forwards the request, then sends back half the office's answer and
    /// closes: the office stored the items, the screen does not know.
    CutAnswer,
    Pass,
}

/// Reads one HTTP/1.1 request (headers and Content-Length body).
async fn read_request(stream: &mut OfficeStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf);
        }
    }
}

/// A proxy in front of `office` that meets its connections with
/// `faults`, in order, and passes the rest through. It ends TLS with the
/// office's own certificate and speaks TLS to the office, so that it sees
/// and makes plain HTTP. Returns its base URL.
async fn faulty_proxy(office: &OfficeServer, faults: Vec<Fault>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let tls = {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::from_pem_file(office.path("office-cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(office.path("office-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    };
    tokio::spawn(proxy(listener, tls, office.connector(), faults));
    url
}

async fn proxy(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    office: OfficeConnector,
    faults: Vec<Fault>,
) {
    let seen = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let fault = faults.get(n).copied().unwrap_or(Fault::Pass);
        let (tls, office) = (tls.clone(), office.clone());
        tokio::spawn(async move {
            let Ok(client) = tls.accept(tcp).await else {
                return;
            };
            let mut client: OfficeStream = Box::new(client);
            match fault {
                Fault::Pass => {
                    let mut upstream = office.connect().await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Fault::ServerError | Fault::BadRequest => {
                    if read_request(&mut client).await.is_some() {
                        let (status, body) = match fault {
                            Fault::ServerError => {
                                ("500 Internal Server Error", r#"{"error":"injected"}"#)
                            }
                            _ => ("400 Bad Request", r#"{"error":"injected refusal"}"#),
                        };
                        let _ = client
                            .write_all(
                                format!(
                                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                }
                Fault::Silence => {
                    let _ = read_request(&mut client).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Fault::CutAnswer => {
                    let Some(request) = read_request(&mut client).await else {
                        return;
                    };
                    let mut upstream = office.connect().await;
                    upstream.write_all(&request).await.unwrap();
                    let mut answer = vec![0u8; 65536];
                    let n = upstream.read(&mut answer).await.unwrap();
                    let _ = client.write_all(&answer[..n / 2]).await;
                    let _ = client.shutdown().await;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_timeouts_and_cut_answers_are_retried_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let office = OfficeServer::running();
    let c = community("faults");
    let token = office.token_file(&screen_id(&c));
    let proxy = faulty_proxy(
        &office,
        vec![
            Fault::ServerError,
            Fault::Silence,
            Fault::CutAnswer,
            Fault::ServerError,
            Fault::CutAnswer,
        ],
    )
    .await;
    let store = dir.path().join("screen.db");
    let daemon = screen_with_office(&c, &store, &office, &proxy, &token, 1).await;
    let mut receipts = BTreeSet::new();
    for _ in 0..3 {
        receipts.extend(queue(&daemon, &store, 150).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let outbox = daemon.outbox.clone();
    wait_until(
        "the queue to drain through the faults",
        Duration::from_secs(60),
        || {
            let c = *outbox.borrow();
            c.pending == 0 && c.accepted == 450
        },
    )
    .await;
    let (held, rows) = office_receipts(&office);
    assert_eq!(rows, 450, "no duplicates");
    assert_eq!(held, receipts);
    daemon.shutdown().await;
}

struct Screen {
    child: Child,
}

impl Screen {
    fn start(config: &Path, log: &Path) -> Screen {
        let child = Command::new(env!("CARGO_BIN_EXE_gongkaid"))
            .arg("--config")
            .arg(config)
            .arg("--headless")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .env("RUST_LOG", "debug,rumqttc=warn,hyper=warn,reqwest=warn")
            .spawn()
            .unwrap();
        Screen { child }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_committed_item_is_lost_when_the_daemon_is_killed_twenty_times() {
    let dir = tempfile::tempdir().unwrap();
    let office = OfficeServer::running();
    let c = community("kill9");
    let token = office.token_file(&screen_id(&c));
    let store = dir.path().join("screen.db");
    let config = dir.path().join("screen.toml");
    std::fs::write(
        &config,
        config_with_office(&c, &store, &office, &office.url, &token, 5),
    )
    .unwrap();
    let log = dir.path().join("gongkaid.log");
    let mut screen = Screen::start(&config, &log);
    wait_until("the store", Duration::from_secs(10), || {
        Outbox::open(&store).and_then(|o| o.counts()).is_ok()
    })
    .await;

    // A burst of submissions the whole time, as a busy kiosk would make.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burst = std::thread::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        move || {
            let mut outbox = Outbox::open(&store).unwrap();
            let mut receipts = BTreeSet::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                // Committed when submit returns: from here it must arrive.
                let item = outbox
                    .submit(submission(i), time::OffsetDateTime::now_utc())
                    .unwrap();
                receipts.insert(item.receipt);
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            receipts
        }
    });
    for round in 0..20u64 {
        tokio::time::sleep(Duration::from_millis(150 + (round * 37) % 200)).await;
        screen.kill9();
        screen = Screen::start(&config, &log);
    }
    stop.store(true, Ordering::SeqCst);
    let receipts = burst.join().unwrap();
    // The last screen sends what is left (a submission wakes it, so does
    // its periodic look; restart once more to be sure it looks at once).
    screen.kill9();
    let _screen = Screen::start(&config, &log);
    wait_until("the outbox to drain", Duration::from_secs(60), || {
        Outbox::open(&store)
            .and_then(|o| o.counts())
            .is_ok_and(|c| c.pending == 0)
    })
    .await;
    let (held, rows) = office_receipts(&office);
    assert_eq!(rows as usize, receipts.len(), "each item stored once");
    assert_eq!(held, receipts, "every committed item reached the office");
    eprintln!("{} items through 20 kill -9 restarts", receipts.len());
    // Contact numbers (one item in ten carries one) never reach the log.
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log_text.contains("13812341234"),
        "a contact number was logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_reply_is_found_by_its_receipt_code() {
    let url = broker_url();
    let c = community("reply");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("screen.db");
    let daemon = start_screen(&url, &c, &store).await;
    let mut payload = notice(&c, "reply-2026-11", 1);
    payload["category"] = "reply".into();
    payload["reply_to"] = serde_json::json!(["K7Q2MD", "AB12CD"]);
    let mut publisher = publisher(&url).await;
    publisher
        .publish_retained(&topics(&c).notice("reply-2026-11"), signed(&payload))
        .await
        .unwrap();
    wait_for(&daemon, "the reply", |cat| cat.has("reply-2026-11")).await;
    let held = gongkai::store::Store::open_read_only(&store).unwrap();
    assert_eq!(
        held.reply_for("K7Q2MD").unwrap().map(|k| (k.id, k.version)),
        Some(("reply-2026-11".to_owned(), 1))
    );
    assert_eq!(held.reply_for("ZZZZZZ").unwrap(), None, "尚未答复");
    publisher.close().await;
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_item_is_parked_and_a_refused_token_stops_sending() {
    let dir = tempfile::tempdir().unwrap();
    let office = OfficeServer::running();
    let c = community("refused");
    let token = office.token_file(&screen_id(&c));
    // The batch is refused (so it is split), then the first item alone.
    let proxy = faulty_proxy(&office, vec![Fault::BadRequest, Fault::BadRequest]).await;
    let store = dir.path().join("screen.db");
    let daemon = screen_with_office(&c, &store, &office, &proxy, &token, 5).await;
    let receipts = queue(&daemon, &store, 5).await;
    let outbox = daemon.outbox.clone();
    wait_until("four accepted, one parked", Duration::from_secs(20), || {
        let c = *outbox.borrow();
        c.pending == 0 && c.accepted == 4 && c.rejected == 1
    })
    .await;
    let parked = Outbox::open(&store).unwrap().parked(10).unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].reason, "injected refusal");
    assert!(receipts.contains(&parked[0].receipt), "one of ours");
    let (held, rows) = office_receipts(&office);
    assert_eq!(rows, 4);
    assert!(!held.contains(&parked[0].receipt));
    // `gongkai cache` shows it, beside the running daemon.
    let cache = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["cache", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let cache = String::from_utf8(cache.stdout).unwrap();
    assert!(
        cache.contains("0 pending, 4 accepted, 1 refused"),
        "{cache}"
    );
    assert!(
        cache.contains(&format!("refused {}", parked[0].receipt))
            && cache.contains("injected refusal"),
        "{cache}"
    );
    daemon.shutdown().await;

    // A token the office does not know: nothing is sent, nothing is lost,
    // and the screen says so.
    let c = community("badtoken");
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let store = dir.path().join("screen2.db");
    let daemon = screen_with_office(&c, &store, &office, &office.url, &wrong, 5).await;
    queue(&daemon, &store, 3).await;
    let outbox = daemon.outbox.clone();
    wait_until("the refusal to show", Duration::from_secs(20), || {
        let c = *outbox.borrow();
        c.unauthorized && c.pending == 3
    })
    .await;
    assert_eq!(
        office_receipts(&office).1,
        4,
        "nothing of the refused screen arrived"
    );
    daemon.shutdown().await;
}

/// Regression: a token file the screen could not read was reported as the
/// office refusing the token, and waited on like a refusal. It is the
/// screen's problem: the status does not say the office refused, and the
/// items go out soon after the file can be read, without waiting out a
/// refusal's ten minutes.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_token_file_is_retried_not_taken_for_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let office = OfficeServer::running();
    let c = community("notoken");
    let issued = office.token_file(&screen_id(&c));
    let token = dir.path().join("not-yet.token");
    let store = dir.path().join("screen.db");
    let daemon = screen_with_office(&c, &store, &office, &office.url, &token, 5).await;
    queue(&daemon, &store, 3).await;
    let outbox = daemon.outbox.clone();
    wait_until("the outbox to count them", Duration::from_secs(10), || {
        outbox.borrow().pending == 3
    })
    .await;
    // Several retries' worth of backoff (0.5 s doubling).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = *daemon.outbox.borrow();
    assert_eq!(counts.pending, 3, "nothing was sent without a token");
    assert!(
        !counts.unauthorized,
        "the office refused nothing: {counts:?}"
    );
    assert_eq!(office.stored(), 0);

    // The file appears: the next retry (at most 5 s away) sends them.
    std::fs::copy(&issued, &token).unwrap();
    wait_until("the items to arrive", Duration::from_secs(15), || {
        outbox.borrow().pending == 0
    })
    .await;
    assert_eq!(office.stored(), 3);
    assert!(!daemon.outbox.borrow().unauthorized);
    daemon.shutdown().await;
}
