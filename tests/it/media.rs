//! Media fetching, caching and decoding against real HTTP servers on
//! loopback: an axum server for well-behaved and faulty answers, and a raw
//! TCP server for answers no well-behaved server library will produce (a
//! body longer than it should be, a Content-Length that is never honoured).

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use gongkai::backoff::Backoff;
use gongkai::media::{
    FetcherOptions, MediaCache, MediaError, decode, http_client, run_fetcher_with,
};
use gongkai::protocol::notice::Media;
use gongkai::protocol::sha256_hex;
use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const RED: [u8; 4] = [255, 0, 0, 255];
const BLUE: [u8; 4] = [0, 0, 255, 255];

/// Every test bounds its waiting with this, so a hang fails instead of
/// blocking the suite.
const PATIENCE: Duration = Duration::from_secs(5);

fn client() -> reqwest::Client {
    gongkai::tls::install_crypto_provider();
    http_client().unwrap()
}

fn encode(image: impl Into<image::DynamicImage>, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.into().write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A 64×32 PNG: red on the left half, blue on the right.
fn two_colour_png() -> Vec<u8> {
    let image = RgbaImage::from_fn(64, 32, |x, _| Rgba(if x < 32 { RED } else { BLUE }));
    encode(image, ImageFormat::Png)
}

/// A solid PNG whose colour depends on `n`, so that each `n` has its own hash.
fn numbered_png(n: u8) -> Vec<u8> {
    encode(
        RgbaImage::from_pixel(8, 8, Rgba([n, 100, 200, 255])),
        ImageFormat::Png,
    )
}

fn media_for(id: &str, url: String, bytes: &[u8]) -> Media {
    Media {
        id: id.to_string(),
        url,
        sha256: sha256_hex(bytes),
        bytes: bytes.len() as u64,
        mime: "image/png".to_string(),
    }
}

/// Names in the cache directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// A route answering `status` and `body`, counting its requests.
fn counted(
    hits: &Arc<AtomicUsize>,
    status: StatusCode,
    body: Vec<u8>,
) -> axum::routing::MethodRouter {
    let hits = hits.clone();
    get(move || {
        let hits = hits.clone();
        let body = body.clone();
        async move {
            hits.fetch_add(1, SeqCst);
            (status, body)
        }
    })
}

/// A server that answers every connection with `head` and `body` written as
/// they are, then holds the connection open without another byte, so that a
/// client waiting for more would hang.
async fn serve_raw(head: String, body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (head, body) = (head.clone(), body.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(stream);
            });
        }
    });
    format!("http://{addr}")
}

async fn fetch(cache: &MediaCache, media: &Media) -> Result<std::path::PathBuf, MediaError> {
    tokio::time::timeout(PATIENCE, cache.fetch(&client(), media))
        .await
        .expect("fetch hung")
}

#[tokio::test]
async fn good_png_is_fetched_cached_by_hash_and_decoded() {
    let png = two_colour_png();
    let hits = Arc::new(AtomicUsize::new(0));
    let agent = Arc::new(std::sync::Mutex::new(String::new()));
    let seen_agent = agent.clone();
    let served = png.clone();
    let counter = hits.clone();
    let router = Router::new().route(
        "/notice/a.png",
        get(move |headers: HeaderMap| {
            let (served, counter, seen_agent) =
                (served.clone(), counter.clone(), seen_agent.clone());
            async move {
                counter.fetch_add(1, SeqCst);
                let ua = headers
                    .get(header::USER_AGENT)
                    .map(|v| v.to_str().unwrap().to_string());
                *seen_agent.lock().unwrap() = ua.unwrap_or_default();
                ([(header::CONTENT_TYPE, "image/png")], served)
            }
        }),
    );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path().join("media")).unwrap();
    let media = media_for("m1", format!("{base}/notice/a.png"), &png);

    assert!(!cache.contains(&media));
    let path = fetch(&cache, &media).await.unwrap();
    assert_eq!(path, cache.dir().join(&media.sha256));
    assert_eq!(std::fs::read(&path).unwrap(), png);
    assert_eq!(listing(cache.dir()), [media.sha256.as_str()]);
    assert!(cache.contains(&media));
    assert_eq!(hits.load(SeqCst), 1);
    assert_eq!(
        *agent.lock().unwrap(),
        format!("gongkai/{}", env!("CARGO_PKG_VERSION"))
    );

    // Cached: the second fetch does not touch the server.
    assert_eq!(fetch(&cache, &media).await.unwrap(), path);
    assert_eq!(hits.load(SeqCst), 1);

    // A cache opened again over the same directory still has it.
    let reopened = MediaCache::open(cache.dir()).unwrap();
    assert!(reopened.contains(&media));

    let image = reopened.load(&media, 1920, 1080).unwrap();
    assert_eq!((image.width, image.height), (64, 32));
    assert_eq!(image.rgba.len(), 64 * 32 * 4);
    assert_eq!(image.pixel(0, 0), Some(RED));
    assert_eq!(image.pixel(31, 31), Some(RED));
    assert_eq!(image.pixel(32, 0), Some(BLUE));
    assert_eq!(image.pixel(63, 31), Some(BLUE));
    assert_eq!(image.pixel(64, 0), None);
}

#[tokio::test]
async fn wrong_hash_is_rejected_and_nothing_is_kept() {
    let png = two_colour_png();
    let hits = Arc::new(AtomicUsize::new(0));
    let base =
        serve(Router::new().route("/a.png", counted(&hits, StatusCode::OK, png.clone()))).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let mut media = media_for("m1", format!("{base}/a.png"), &png);
    media.sha256 = sha256_hex(b"some other picture");

    let err = fetch(&cache, &media).await.unwrap_err();
    match &err {
        MediaError::HashMismatch { id, expected, got } => {
            assert_eq!(id, "m1");
            assert_eq!(expected, &media.sha256);
            assert_eq!(got, &sha256_hex(&png));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert!(!cache.path_of(&media.sha256).exists());
    assert!(!cache.contains(&media));
    assert!(
        listing(cache.dir()).is_empty(),
        "no file under any name, no temporary file: {:?}",
        listing(cache.dir())
    );
    assert_eq!(hits.load(SeqCst), 1);
}

#[tokio::test]
async fn content_length_larger_than_declared_is_refused_before_the_body() {
    // The server announces 2000 bytes and never sends one: a client that
    // started reading would hang here.
    let base = serve_raw(
        "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 2000\r\n\r\n".to_string(),
        Vec::new(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let declared = vec![7u8; 1000];
    let media = media_for("m1", format!("{base}/a.png"), &declared);

    let err = fetch(&cache, &media).await.unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::ContentLengthTooLarge {
                expected: 1000,
                content_length: 2000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(listing(cache.dir()).is_empty());
}

#[tokio::test]
async fn body_longer_than_declared_is_cut_off_as_soon_as_it_overflows() {
    // Chunked, so no Content-Length warns the client: it sees 1001 bytes of a
    // declared 1000 and then the server goes silent without ending the body.
    // Only a client that stops at the overflow returns.
    let declared = vec![7u8; 1000];
    let mut chunk = format!("{:x}\r\n", 1001).into_bytes();
    chunk.extend_from_slice(&[7u8; 1001]);
    chunk.extend_from_slice(b"\r\n");
    let base = serve_raw(
        "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_string(),
        chunk,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let media = media_for("m1", format!("{base}/a.png"), &declared);

    let err = fetch(&cache, &media).await.unwrap_err();
    assert!(
        matches!(err, MediaError::TooManyBytes { expected: 1000, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "media m1: expected 1000 bytes, the server sent more"
    );
    assert!(listing(cache.dir()).is_empty());
}

#[tokio::test]
async fn body_larger_than_declared_with_honest_content_length_is_refused() {
    let png = two_colour_png();
    let hits = Arc::new(AtomicUsize::new(0));
    let base =
        serve(Router::new().route("/a.png", counted(&hits, StatusCode::OK, png.clone()))).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    // The notice signed only the first half of the file.
    let half = &png[..png.len() / 2];
    let media = media_for("m1", format!("{base}/a.png"), half);

    let err = fetch(&cache, &media).await.unwrap_err();
    assert!(
        matches!(err, MediaError::ContentLengthTooLarge { content_length, .. } if content_length == png.len() as u64),
        "{err:?}"
    );
    assert!(listing(cache.dir()).is_empty());
}

#[tokio::test]
async fn body_shorter_than_declared_is_rejected() {
    let png = two_colour_png();
    let hits = Arc::new(AtomicUsize::new(0));
    let truncated = png[..png.len() - 10].to_vec();
    let base =
        serve(Router::new().route("/a.png", counted(&hits, StatusCode::OK, truncated))).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let media = media_for("m1", format!("{base}/a.png"), &png);

    let err = fetch(&cache, &media).await.unwrap_err();
    assert!(
        matches!(err, MediaError::TooFewBytes { expected, got, .. }
            if expected == png.len() as u64 && got == png.len() as u64 - 10),
        "{err:?}"
    );
    assert!(listing(cache.dir()).is_empty());
}

#[tokio::test]
async fn http_errors_name_the_status_and_url() {
    let hits = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/missing.png",
            counted(&hits, StatusCode::NOT_FOUND, b"no".to_vec()),
        )
        .route(
            "/broken.png",
            counted(&hits, StatusCode::INTERNAL_SERVER_ERROR, b"oops".to_vec()),
        );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let png = two_colour_png();

    for (path, code) in [("/missing.png", 404), ("/broken.png", 500)] {
        let url = format!("{base}{path}");
        let media = media_for("m1", url.clone(), &png);
        let err = fetch(&cache, &media).await.unwrap_err();
        match &err {
            MediaError::Status { status, url: u, .. } => {
                assert_eq!(status.as_u16(), code);
                assert_eq!(u, &url);
            }
            other => panic!("expected Status, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("HTTP {code}")), "{text}");
        assert!(text.contains(&url), "{text}");
        assert!(err.is_retryable());
    }
    assert_eq!(hits.load(SeqCst), 2);
    assert!(listing(cache.dir()).is_empty());
}

#[tokio::test]
async fn only_http_and_https_are_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let png = two_colour_png();
    for url in ["file:///etc/passwd", "ftp://127.0.0.1/a.png"] {
        let media = media_for("m1", url.to_string(), &png);
        let err = fetch(&cache, &media).await.unwrap_err();
        assert!(
            matches!(err, MediaError::UnsupportedScheme { .. }),
            "{url}: {err:?}"
        );
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error() {
    // Bind and drop a listener so the port is (almost certainly) closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let png = two_colour_png();
    let url = format!("http://127.0.0.1:{port}/a.png");
    let media = media_for("m1", url.clone(), &png);
    let err = fetch(&cache, &media).await.unwrap_err();
    assert!(matches!(err, MediaError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn redirects_are_followed_but_not_forever() {
    let png = two_colour_png();
    let good_hits = Arc::new(AtomicUsize::new(0));
    let loop_hits = Arc::new(AtomicUsize::new(0));
    let counter = loop_hits.clone();
    let router = Router::new()
        .route("/a.png", counted(&good_hits, StatusCode::OK, png.clone()))
        .route(
            "/moved.png",
            get(|| async { Redirect::temporary("/a.png") }),
        )
        .route(
            "/loop.png",
            get(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, SeqCst);
                    Redirect::temporary("/loop.png").into_response()
                }
            }),
        );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();

    let moved = media_for("m1", format!("{base}/moved.png"), &png);
    fetch(&cache, &moved).await.unwrap();
    assert_eq!(good_hits.load(SeqCst), 1);

    let mut looping = media_for("m2", format!("{base}/loop.png"), &png);
    looping.sha256 = sha256_hex(b"another");
    let err = fetch(&cache, &looping).await.unwrap_err();
    assert!(matches!(err, MediaError::Transport { .. }), "{err:?}");
    // The first request and five redirects.
    assert_eq!(loop_hits.load(SeqCst), 6);
}

#[tokio::test]
async fn concurrent_fetches_of_one_item_do_not_corrupt_each_other() {
    let png = two_colour_png();
    let hits = Arc::new(AtomicUsize::new(0));
    let base =
        serve(Router::new().route("/a.png", counted(&hits, StatusCode::OK, png.clone()))).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let media = media_for("m1", format!("{base}/a.png"), &png);

    let client = client();
    let fetches: Vec<_> = (0..4)
        .map(|_| {
            let (cache, client, media) = (cache.clone(), client.clone(), media.clone());
            tokio::spawn(async move { cache.fetch(&client, &media).await })
        })
        .collect();
    for fetch in fetches {
        let path = tokio::time::timeout(PATIENCE, fetch)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), png);
    }
    assert_eq!(listing(cache.dir()), [media.sha256.as_str()]);
}

/// CRC-32 (IEEE), as PNG chunks need it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let mut typed = kind.to_vec();
    typed.extend_from_slice(data);
    chunk.extend_from_slice(&typed);
    chunk.extend_from_slice(&crc32(&typed).to_be_bytes());
    chunk
}

/// A PNG of a few dozen bytes whose header claims `width`×`height` pixels.
fn png_claiming(width: u32, height: u32, bit_depth: u8) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth, colour type 6 (RGBA), compression, filter, no interlace.
    ihdr.extend_from_slice(&[bit_depth, 6, 0, 0, 0]);
    png.extend(png_chunk(b"IHDR", &ihdr));
    // A zlib stream of a few zero bytes: far too little data, never reached.
    png.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    ));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

#[test]
fn crc32_matches_the_known_value() {
    // The CRC of the IEND chunk type, found at the end of every PNG.
    assert_eq!(crc32(b"IEND"), 0xae42_6082);
}

#[test]
fn decompression_bomb_is_rejected_from_its_header() {
    let bomb = png_claiming(100_000, 100_000, 8);
    assert!(bomb.len() < 100);
    let started = Instant::now();
    let err = decode(&bomb, "image/png", 1920, 1080).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(
            err,
            MediaError::ImageTooLarge {
                width: 100_000,
                height: 100_000
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "image 100000×100000 exceeds the 8192×8192 limit"
    );

    // One side alone over the limit is enough.
    let wide = png_claiming(20_000, 1, 8);
    assert!(matches!(
        decode(&wide, "image/png", 1920, 1080),
        Err(MediaError::ImageTooLarge {
            width: 20_000,
            height: 1
        })
    ));
}

#[test]
fn image_within_the_sides_but_too_heavy_is_rejected() {
    // 8192×8192 at 16 bits per RGBA channel would need 512 MiB.
    let heavy = png_claiming(8192, 8192, 16);
    let started = Instant::now();
    let err = decode(&heavy, "image/png", 1920, 1080).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(
            err,
            MediaError::ImageNeedsTooMuchMemory {
                width: 8192,
                height: 8192,
                needed
            } if needed == 8192 * 8192 * 8
        ),
        "{err:?}"
    );
}

#[test]
fn content_must_match_the_declared_mime() {
    let jpeg = encode(
        RgbImage::from_pixel(16, 16, Rgb([10, 200, 30])),
        ImageFormat::Jpeg,
    );
    // Sanity: the same bytes decode as what they are.
    let image = decode(&jpeg, "image/jpeg", 100, 100).unwrap();
    assert_eq!((image.width, image.height), (16, 16));

    let err = decode(&jpeg, "image/png", 100, 100).unwrap_err();
    assert!(
        matches!(&err, MediaError::Decode { mime, .. } if mime == "image/png"),
        "{err:?}"
    );
    let png = two_colour_png();
    assert!(matches!(
        decode(&png, "image/webp", 100, 100),
        Err(MediaError::Decode { .. })
    ));
    assert!(matches!(
        decode(&png, "image/gif", 100, 100),
        Err(MediaError::UnsupportedMime { .. })
    ));
    assert!(matches!(
        decode(b"not an image at all", "image/png", 100, 100),
        Err(MediaError::Decode { .. })
    ));
}

#[test]
fn webp_decodes() {
    let webp = encode(RgbaImage::from_pixel(20, 10, Rgba(BLUE)), ImageFormat::WebP);
    let image = decode(&webp, "image/webp", 100, 100).unwrap();
    assert_eq!((image.width, image.height), (20, 10));
    assert_eq!(image.pixel(5, 5), Some(BLUE));
}

#[test]
fn large_image_is_scaled_down_keeping_its_aspect() {
    let png = encode(
        RgbaImage::from_pixel(4000, 1000, Rgba(RED)),
        ImageFormat::Png,
    );
    let image = decode(&png, "image/png", 1000, 1000).unwrap();
    assert_eq!((image.width, image.height), (1000, 250));
    assert_eq!(image.rgba.len(), 1000 * 250 * 4);
    assert_eq!(image.pixel(500, 125), Some(RED));

    // Small images are never scaled up.
    let small = decode(&two_colour_png(), "image/png", 1000, 1000).unwrap();
    assert_eq!((small.width, small.height), (64, 32));
}

/// Waits until `ready` reaches `target`, failing the test after PATIENCE.
async fn wait_ready(ready: &mut watch::Receiver<u64>, target: u64) {
    let reached = tokio::time::timeout(PATIENCE, ready.wait_for(|n| *n >= target))
        .await
        .is_ok();
    assert!(
        reached,
        "ready stayed at {} instead of {target}",
        *ready.borrow()
    );
}

fn quick_options() -> FetcherOptions {
    FetcherOptions {
        backoff: Backoff {
            first: Duration::from_millis(50),
            cap: Duration::from_millis(100),
        },
        ..FetcherOptions::default()
    }
}

#[tokio::test]
async fn fetcher_fetches_everything_wanted_and_retries_failures() {
    let good = numbered_png(1);
    let flaky = numbered_png(2);
    let good_hits = Arc::new(AtomicUsize::new(0));
    let flaky_hits = Arc::new(AtomicUsize::new(0));
    let counter = flaky_hits.clone();
    let flaky_body = flaky.clone();
    let router = Router::new()
        .route(
            "/good.png",
            counted(&good_hits, StatusCode::OK, good.clone()),
        )
        .route(
            "/flaky.png",
            get(move || {
                let (counter, body) = (counter.clone(), flaky_body.clone());
                async move {
                    // Fails twice, then serves the right bytes.
                    if counter.fetch_add(1, SeqCst) < 2 {
                        (StatusCode::INTERNAL_SERVER_ERROR, Vec::new())
                    } else {
                        (StatusCode::OK, body)
                    }
                }
            }),
        );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let good_media = media_for("m1", format!("{base}/good.png"), &good);
    // The same picture under another id: one download serves both.
    let mut good_twin = good_media.clone();
    good_twin.id = "m1-again".to_string();
    let flaky_media = media_for("m2", format!("{base}/flaky.png"), &flaky);

    let (_wanted_tx, wanted_rx) =
        watch::channel(vec![good_media.clone(), good_twin, flaky_media.clone()]);
    let (ready_tx, mut ready_rx) = watch::channel(0u64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_fetcher_with(
        cache.clone(),
        client(),
        wanted_rx,
        ready_tx,
        cancel.clone(),
        quick_options(),
    ));

    wait_ready(&mut ready_rx, 2).await;
    assert!(cache.contains(&good_media));
    assert!(cache.contains(&flaky_media));
    assert_eq!(
        std::fs::read(cache.path_of(&flaky_media.sha256)).unwrap(),
        flaky
    );
    assert_eq!(good_hits.load(SeqCst), 1, "deduplicated by hash");
    assert_eq!(flaky_hits.load(SeqCst), 3, "two failures, then success");
    let image = cache.load(&flaky_media, 100, 100).unwrap();
    assert_eq!(image.pixel(0, 0), Some([2, 100, 200, 255]));

    // Nothing left to do: it stays idle and stops promptly when cancelled.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*ready_rx.borrow(), 2);
    assert_eq!(good_hits.load(SeqCst) + flaky_hits.load(SeqCst), 4);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("fetcher did not stop")
        .unwrap();
}

#[tokio::test]
async fn fetcher_follows_the_wanted_list_and_stops_retrying_dropped_items() {
    let good = numbered_png(3);
    let good_hits = Arc::new(AtomicUsize::new(0));
    let broken_hits = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/good.png",
            counted(&good_hits, StatusCode::OK, good.clone()),
        )
        .route(
            "/broken.png",
            counted(&broken_hits, StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
        );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let broken = media_for("m1", format!("{base}/broken.png"), &numbered_png(4));
    let good_media = media_for("m2", format!("{base}/good.png"), &good);

    let (wanted_tx, wanted_rx) = watch::channel(vec![broken.clone()]);
    let (ready_tx, mut ready_rx) = watch::channel(0u64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_fetcher_with(
        cache.clone(),
        client(),
        wanted_rx,
        ready_tx,
        cancel.clone(),
        quick_options(),
    ));

    // It keeps retrying the broken item with backoff.
    let deadline = Instant::now() + PATIENCE;
    while broken_hits.load(SeqCst) < 3 {
        assert!(Instant::now() < deadline, "broken item was not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*ready_rx.borrow(), 0);

    // A new list replaces the old one.
    wanted_tx.send(vec![good_media.clone()]).unwrap();
    wait_ready(&mut ready_rx, 1).await;
    assert!(cache.contains(&good_media));
    assert!(!cache.contains(&broken));

    // With the cap at 100 ms, a dropped item still retried would be hit
    // several times in half a second (a request may have been in flight
    // when the list changed, hence the margin of one).
    let after_change = broken_hits.load(SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        broken_hits.load(SeqCst) <= after_change + 1,
        "dropped item retried: {} -> {}",
        after_change,
        broken_hits.load(SeqCst)
    );
    assert_eq!(good_hits.load(SeqCst), 1);

    // Cancelling in the middle of a backoff wait returns at once.
    wanted_tx.send(vec![broken.clone()]).unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("fetcher did not stop")
        .unwrap();
}

#[tokio::test]
async fn fetcher_runs_at_most_two_downloads_at_once() {
    let images: Arc<Vec<Vec<u8>>> = Arc::new((10..16).map(numbered_png).collect());
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (served, cur, top) = (images.clone(), current.clone(), peak.clone());
    let router = Router::new().route(
        "/img/{n}",
        get(move |UrlPath(n): UrlPath<usize>| {
            let (served, cur, top) = (served.clone(), cur.clone(), top.clone());
            async move {
                let now = cur.fetch_add(1, SeqCst) + 1;
                top.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                cur.fetch_sub(1, SeqCst);
                served[n].clone()
            }
        }),
    );
    let base = serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = MediaCache::open(dir.path()).unwrap();
    let wanted: Vec<Media> = images
        .iter()
        .enumerate()
        .map(|(n, bytes)| media_for(&format!("m{n}"), format!("{base}/img/{n}"), bytes))
        .collect();

    let (_wanted_tx, wanted_rx) = watch::channel(wanted.clone());
    let (ready_tx, mut ready_rx) = watch::channel(0u64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_fetcher_with(
        cache.clone(),
        client(),
        wanted_rx,
        ready_tx,
        cancel.clone(),
        quick_options(),
    ));
    wait_ready(&mut ready_rx, wanted.len() as u64).await;
    assert!(wanted.iter().all(|m| cache.contains(m)));
    assert_eq!(peak.load(SeqCst), 2, "two at a time, and not one");
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("fetcher did not stop")
        .unwrap();
}
