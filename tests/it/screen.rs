//! The screen daemon end to end against a broker: retained pickup, live
//! updates, withdrawal, replay and equivocation, empty retained payloads,
//! forged and unsigned notices.

use crate::common;

use common::*;
use gongkai::daemon::Daemon;
use gongkai::office::broker::{FleetEntry, OneShotClient};
use gongkai::status::StatusMessage;
use gongkai::store::{Catalog, Store};
use std::time::Duration;

/// What most tests here need: a community of their own, a screen daemon on a
/// fresh store, and an office publisher on the same broker.
struct Scene {
    url: String,
    c: String,
    dir: tempfile::TempDir,
    daemon: Daemon,
    publisher: OneShotClient,
}

impl Scene {
    async fn start(test: &str) -> Scene {
        let url = broker_url();
        let c = community(test);
        let dir = tempfile::tempdir().unwrap();
        let daemon = start_screen(&url, &c, &dir.path().join("screen.db")).await;
        let publisher = publisher(&url).await;
        Scene {
            url,
            c,
            dir,
            daemon,
            publisher,
        }
    }

    /// Publishes envelope bytes retained on the topic of notice `id`.
    async fn put(&mut self, id: &str, bytes: Vec<u8>) {
        let topic = topics(&self.c).notice(id);
        self.publisher
            .publish_retained(&topic, bytes)
            .await
            .unwrap();
    }

    /// A copy of what the screen holds now.
    fn catalog(&self) -> Catalog {
        self.daemon.catalog.borrow().clone()
    }

    fn last_reason(&self) -> String {
        self.catalog().last_rejection.unwrap().reason
    }

    /// Stops the daemon and opens its store as `gongkai cache` would.
    async fn stop(self) -> (tempfile::TempDir, Store) {
        self.publisher.close().await;
        self.daemon.shutdown().await;
        let store = Store::open_read_only(&self.dir.path().join("screen.db")).unwrap();
        (self.dir, store)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retained_notices_are_picked_up_at_start_and_live_updates_follow() {
    let url = broker_url();
    let c = community("pickup");
    let mut publisher = publisher(&url).await;
    let n1 = signed(&notice(&c, "n1", 1));
    let n2 = signed(&notice(&c, "n2", 1));
    publisher
        .publish_retained(&topics(&c).notice("n1"), n1.clone())
        .await
        .unwrap();
    publisher
        .publish_retained(&topics(&c).notice("n2"), n2.clone())
        .await
        .unwrap();
    publisher
        .publish_retained(
            &topics(&c).manifest(),
            manifest(&c, 1, &[("n1".into(), 1, &n1), ("n2".into(), 1, &n2)]),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let daemon = start_screen(&url, &c, &dir.path().join("screen.db")).await;
    wait_for(&daemon, "the retained notices", |cat| {
        cat.items.len() == 2 && cat.manifests.len() == 1
    })
    .await;
    assert!(daemon.catalog.borrow().missing().is_empty());

    // A live update: a new version replaces the old one in the active set.
    let mut v2 = notice(&c, "n1", 2);
    v2["title"] = "更新后的公告".into();
    publisher
        .publish_retained(&topics(&c).notice("n1"), signed(&v2))
        .await
        .unwrap();
    wait_for(&daemon, "version 2", |cat| cat.id("n1").version == 2).await;
    assert_eq!(daemon.catalog.borrow().id("n1").title, "更新后的公告");

    // The rotation shows what is active.
    let mut showing = daemon.showing.clone();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        showing.wait_for(|s| s.is_some()),
    )
    .await
    .unwrap()
    .unwrap();
    publisher.close().await;
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_withdrawal_takes_a_notice_out_of_rotation_and_keeps_it_archived() {
    let mut s = Scene::start("withdraw").await;
    let c = s.c.clone();
    s.put("n1", signed(&notice(&c, "n1", 1))).await;
    wait_for(&s.daemon, "the notice", |cat| cat.has("n1")).await;

    // The withdrawal the CLI makes from the published envelope.
    let envelope = s.dir.path().join("n1.json");
    std::fs::write(&envelope, signed(&notice(&c, "n1", 1))).unwrap();
    let payload = gongkai::office::withdraw(&envelope, time::OffsetDateTime::now_utc()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(value["version"], 2);
    s.put("n1", signed(&value)).await;
    wait_for(&s.daemon, "the withdrawal", |cat| cat.id("n1").version == 2).await;
    let now = time::OffsetDateTime::now_utc();
    assert!(
        !s.catalog()
            .id("n1")
            .is_active(&gongkai::schedule::Audience::new(&screen_id(&c), &c), now)
    );

    let (_dir, store) = s.stop().await;
    assert_eq!(
        store.versions(&c, "n1").unwrap(),
        vec![1, 2],
        "version 1 stays in the archive"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_are_ignored_and_equivocations_rejected() {
    let mut s = Scene::start("replay").await;
    let c = s.c.clone();
    s.put("n1", signed(&notice(&c, "n1", 2))).await;
    wait_for(&s.daemon, "version 2", |cat| {
        cat.by_id("n1").is_some_and(|i| i.version == 2)
    })
    .await;

    // A replay of version 1, then version 2 with other content.
    s.put("n1", signed(&notice(&c, "n1", 1))).await;
    let mut other = notice(&c, "n1", 2);
    other["title"] = "另一份内容".into();
    s.put("n1", signed(&other)).await;
    wait_for(&s.daemon, "the equivocation", |cat| cat.rejected == 1).await;
    let cat = s.catalog();
    assert_eq!(cat.id("n1").version, 2);
    assert_ne!(cat.id("n1").title, "另一份内容");
    assert!(s.last_reason().contains("equivocation"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_retained_payload_changes_nothing() {
    let mut s = Scene::start("empty").await;
    let c = s.c.clone();
    s.put("n1", signed(&notice(&c, "n1", 1))).await;
    wait_for(&s.daemon, "the notice", |cat| cat.has("n1")).await;

    // Clear the retained message the MQTT way, then publish a marker: once the
    // marker is in, the empty payload has been handled.
    s.put("n1", Vec::new()).await;
    s.put("marker", signed(&notice(&c, "marker", 1))).await;
    wait_for(&s.daemon, "the marker", |cat| cat.has("marker")).await;
    let now = time::OffsetDateTime::now_utc();
    let cat = s.catalog();
    assert!(
        cat.id("n1")
            .is_active(&gongkai::schedule::Audience::new(&screen_id(&c), &c), now),
        "the notice is still shown"
    );
    assert_eq!(
        cat.rejected, 0,
        "an empty payload is not a rejection either"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_unsigned_notices_are_rejected_with_their_reason() {
    let mut s = Scene::start("forged").await;
    let c = s.c.clone();

    s.put("a", signed_by(&notice(&c, "a", 1), &[&office_key()]))
        .await;
    wait_for(&s.daemon, "the first rejection", |cat| cat.rejected == 1).await;
    assert!(s.last_reason().contains("missing supervisor signature"));

    s.put(
        "b",
        signed_by(&notice(&c, "b", 1), &[&office_key(), &stranger_key()]),
    )
    .await;
    wait_for(&s.daemon, "the second rejection", |cat| cat.rejected == 2).await;

    let unsigned = serde_json::json!({
        "payloadType": gongkai::protocol::NOTICE_TYPE,
        "payload": base64_of(&notice(&c, "c", 1)),
        "signatures": []
    });
    s.put("c", serde_json::to_vec(&unsigned).unwrap()).await;
    wait_for(&s.daemon, "the third rejection", |cat| cat.rejected == 3).await;
    assert!(s.last_reason().contains("missing office signature"));

    s.put("d", b"not json".to_vec()).await;
    wait_for(&s.daemon, "the fourth rejection", |cat| cat.rejected == 4).await;
    assert!(s.catalog().items.is_empty(), "nothing was accepted");

    // The reasons are in the store for the office to read.
    let (_dir, store) = s.stop().await;
    let reasons: Vec<String> = store
        .rejections(10)
        .unwrap()
        .into_iter()
        .map(|r| r.reason)
        .collect();
    assert_eq!(reasons.len(), 4);
    assert!(reasons[0].contains("not valid JSON"), "{reasons:?}");
}

fn base64_of(value: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_published_retained_and_goes_offline_on_shutdown() {
    let mut s = Scene::start("status").await;
    let c = s.c.clone();
    s.put("n1", signed(&notice(&c, "n1", 1))).await;
    wait_for(&s.daemon, "the notice", |cat| cat.has("n1")).await;

    let connect = gongkai::mqtt::Connect::cli(&s.url, None, None).unwrap();
    let mut online = None;
    for _ in 0..50 {
        let fleet = gongkai::office::fleet_status(&connect, PREFIX, &c)
            .await
            .unwrap();
        online = fleet.into_iter().find_map(|entry| match entry {
            FleetEntry::Read(StatusMessage::Online(status)) if status.cached == 1 => Some(status),
            _ => None,
        });
        if online.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let online = online.expect("an online status holding the notice");
    assert_eq!(online.screen, screen_id(&c));
    assert_eq!(online.active, 1);
    assert_eq!(online.manifest.missing, 0);
    assert_eq!(online.software, env!("CARGO_PKG_VERSION"));

    s.stop().await;
    let fleet = gongkai::office::fleet_status(&connect, PREFIX, &c)
        .await
        .unwrap();
    assert!(
        matches!(&fleet[..], [FleetEntry::Read(StatusMessage::Offline(o))] if o.screen == screen_id(&c)),
        "{fleet:?}"
    );
}

/// A notice with an image: the screen fetches it from the office's HTTP
/// server into its media cache (checked against the signed hash), and the
/// page shows it. A second image whose hash does not match is never cached,
/// and the rest of the notice still shows.
#[tokio::test(flavor = "multi_thread")]
async fn media_are_fetched_checked_cached_and_shown() {
    // An image of one colour, and a server that serves it and a tampered copy.
    let (w, h) = (400u32, 200u32);
    let rgba: Vec<u8> = (0..w * h).flat_map(|_| [0x20, 0xa0, 0x40, 0xff]).collect();
    let png = gongkai::ui::png(&rgba, w, h).unwrap();
    let sha = gongkai::protocol::sha256_hex(&png);
    let served = png.clone();
    let app = axum::Router::new()
        .route(
            "/m/good.png",
            axum::routing::get(move || async move { served.clone() }),
        )
        .route(
            "/m/tampered.png",
            axum::routing::get(|| async { vec![0u8; 64] }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut scene = Scene::start("media").await;
    let mut payload = notice(&scene.c, "with-image", 1);
    payload["body"] = serde_json::json!([
        {"type": "paragraph", "text": "现场照片如下。"},
        {"type": "image", "media": "m1", "caption": "维修现场"},
        {"type": "image", "media": "m2", "caption": "被篡改的图片"}
    ]);
    payload["media"] = serde_json::json!([
        {"id": "m1", "url": format!("http://127.0.0.1:{port}/m/good.png"),
         "sha256": sha, "bytes": png.len(), "mime": "image/png"},
        {"id": "m2", "url": format!("http://127.0.0.1:{port}/m/tampered.png"),
         "sha256": "ab".repeat(32), "bytes": 64, "mime": "image/png"}
    ]);
    scene.put("with-image", signed(&payload)).await;
    wait_for(&scene.daemon, "the notice", |c| c.has("with-image")).await;

    let media = scene.dir.path().join("media");
    let cached = media.join(&sha);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cached.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the image was not cached"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read(&cached).unwrap(), png);
    assert!(
        !media.join("ab".repeat(32)).exists(),
        "a tampered image is never cached"
    );

    // The page, rendered from the store and the media cache, shows the image.
    let config = screen_config(
        &scene.url,
        &scene.c,
        &screen_id(&scene.c),
        &scene.dir.path().join("screen.db"),
    );
    let frame = tokio::task::spawn_blocking(move || {
        common::render_thread(move || {
            gongkai::preview::render_from_store(
                &config,
                Some("with-image"),
                1,
                (1920, 1080),
                time::OffsetDateTime::now_utc(),
            )
        })
        .unwrap()
    })
    .await
    .unwrap();
    if let Ok(dir) = std::env::var("GONGKAI_RENDER_DIR") {
        std::fs::write(std::path::Path::new(&dir).join("media-page.png"), &frame).unwrap();
    }
    let decoder = png::Decoder::new(std::io::Cursor::new(frame));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let bpp = info.color_type.samples();
    let green = pixels
        .chunks(bpp)
        .filter(|p| p[0] == 0x20 && p[1] == 0xa0 && p[2] == 0x40)
        .count();
    // At 1920×1080 the 2:1 image fills the text width (1792 px) or the
    // page's image height limit: many thousands of pixels either way.
    assert!(
        green > 100_000,
        "the image is drawn ({green} pixels of its colour)"
    );
    scene.stop().await;
}

/// A power schedule (`[display] quiet`, China time): inside quiet hours the
/// screen shows nothing, says `display: "quiet"` and switches its backlight
/// off; an urgent notice lights it, and the backlight gets back its brightness.
#[tokio::test(flavor = "multi_thread")]
async fn quiet_hours_darken_the_screen_until_an_urgent_notice_lights_it() {
    let url = broker_url();
    let c = community("quiet");
    let dir = tempfile::tempdir().unwrap();
    let panel = dir.path().join("backlight/panel0");
    std::fs::create_dir_all(&panel).unwrap();
    std::fs::write(panel.join("brightness"), "200\n").unwrap();
    // A window from an hour ago to an hour ahead, as the clock reads in China.
    let china = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    let hhmm = |t: time::OffsetDateTime| format!("{:02}:{:02}", t.hour(), t.minute());
    let window = format!(
        "{}-{}",
        hhmm(china - time::Duration::hours(1)),
        hhmm(china + time::Duration::hours(1))
    );
    let store = dir.path().join("screen.db");
    let text = format!(
        "{}quiet = [\"{window}\"]\nbacklight_dir = \"{}\"\n",
        config_text(&url, &c, &screen_id(&c), &store),
        dir.path().join("backlight").display()
    );
    let mut publisher = publisher(&url).await;
    publisher
        .publish_retained(&topics(&c).notice("n1"), signed(&notice(&c, "n1", 1)))
        .await
        .unwrap();
    let daemon = gongkai::daemon::Daemon::start(gongkai::config::Config::parse(&text).unwrap())
        .await
        .unwrap();
    wait_for(&daemon, "the notice", |cat| cat.has("n1")).await;
    let mut display = daemon.display.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        display.wait_for(|d| *d == gongkai::schedule::Display::Quiet),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        daemon.showing.borrow().is_none(),
        "nothing shown while quiet"
    );
    let brightness = || std::fs::read_to_string(panel.join("brightness")).unwrap();
    wait_until("the backlight off", Duration::from_secs(10), || {
        brightness() == "0"
    })
    .await;
    // The status follows the display within its 100 ms gap; poll, as the
    // office would, rather than race it.
    let dark = status_saying(&mut publisher, &c, "quiet").await;
    assert_eq!(dark["display"], "quiet", "{dark}");

    let mut urgent = notice(&c, "water-cut", 1);
    urgent["priority"] = "urgent".into();
    publisher
        .publish_retained(&topics(&c).notice("water-cut"), signed(&urgent))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        display.wait_for(|d| *d == gongkai::schedule::Display::On),
    )
    .await
    .unwrap()
    .unwrap();
    let mut showing = daemon.showing.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        showing.wait_for(|s| s.as_ref().is_some_and(|k| k.id == "water-cut")),
    )
    .await
    .unwrap()
    .unwrap();
    wait_until("the backlight back", Duration::from_secs(10), || {
        brightness() == "200"
    })
    .await;
    let lit = status_saying(&mut publisher, &c, "on").await;
    assert_eq!(lit["display"], "on", "{lit}");
    publisher.close().await;
    daemon.shutdown().await;
}

/// The screen's retained status once its `display` says `display`, or the
/// last one read after four seconds.
async fn status_saying(publisher: &mut OneShotClient, c: &str, display: &str) -> serde_json::Value {
    let mut status = serde_json::Value::Null;
    for _ in 0..20 {
        status = retained_status(publisher, c).await;
        if status["display"] == display {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    status
}

async fn retained_status(publisher: &mut OneShotClient, c: &str) -> serde_json::Value {
    let retained = publisher
        .retained(&topics(c).status(&screen_id(c)))
        .await
        .unwrap();
    serde_json::from_slice(&retained.last().unwrap().payload).unwrap()
}
