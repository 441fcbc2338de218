//! Media of notices (PROTOCOL.md section 3.5): fetched over HTTP(S), checked
//! against the signed size and SHA-256, cached by hash, decoded under limits.
//!
//! This module owns the media cache directory, the HTTP client that fills it,
//! the background task that keeps it filled for the notices on screen, and the
//! decoding of cached files into pixels. The signature over a notice covers
//! the size and hash of each media item, so a file is trusted only after both
//! match: nothing here ever shows, decodes or keeps under its final name a
//! file that failed its check, and nothing here buffers more than the declared
//! size (at most 10 MiB) or decodes an image larger than 8192×8192. It must not
//! decide what a screen shows: a media item that fails is reported, and the
//! caller shows the rest of the notice without it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::protocol::notice::{MAX_MEDIA_BYTES, Media};

/// The largest width or height, in pixels, that [`decode`] accepts.
pub const MAX_IMAGE_SIDE: u32 = 8192;

/// The most memory, in bytes, that [`decode`] lets a decoder allocate for one
/// image: exactly an 8192×8192 RGBA8 picture.
pub const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;

/// The MIME types a notice may declare for a media item.
pub const SUPPORTED_MIMES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// Why a media item could not be fetched, found or decoded.
///
/// Every variant names what a technician needs to find the fault: the media
/// id, the URL, the numbers that disagreed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The notice declares something this screen can never fetch (a hash
    /// that is not 64 lower-case hex digits, a size over 10 MiB, a URL that
    /// does not parse). Retrying cannot help.
    #[error("media {id}: {reason}")]
    InvalidMedia { id: String, reason: String },

    /// The URL is neither `http` nor `https`; no request was made.
    #[error("media {id}: URL {url} is not http or https")]
    UnsupportedScheme { id: String, url: String },

    /// The request failed below HTTP: DNS, connection, TLS, timeout, or the
    /// connection broke while the body was arriving.
    #[error("media {id}: fetching {url} failed: {source}")]
    Transport {
        id: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with a status other than 2xx.
    #[error("media {id}: HTTP {status} from {url}")]
    Status {
        id: String,
        url: String,
        status: reqwest::StatusCode,
    },

    /// The server announced a body larger than the signed size; the body was
    /// not read.
    #[error(
        "media {id}: expected {expected} bytes, the server announces {content_length} (Content-Length)"
    )]
    ContentLengthTooLarge {
        id: String,
        expected: u64,
        content_length: u64,
    },

    /// The body grew past the signed size; reading stopped there.
    #[error("media {id}: expected {expected} bytes, the server sent more")]
    TooManyBytes { id: String, expected: u64 },

    /// The body ended before the signed size was reached.
    #[error("media {id}: expected {expected} bytes, the server sent only {got}")]
    TooFewBytes { id: String, expected: u64, got: u64 },

    /// The body has the signed size but not the signed hash.
    #[error("media {id}: sha256 mismatch: expected {expected}, got {got}")]
    HashMismatch {
        id: String,
        expected: String,
        got: String,
    },

    /// The item is not in the cache; fetch it first.
    #[error("media {id}: not in the cache ({sha256})")]
    NotCached { id: String, sha256: String },

    /// The cached file does not have the signed size (the disk was tampered
    /// with or damaged); it has been removed so the next fetch replaces it.
    #[error("media {id}: cached file has {got} bytes, expected {expected}; removed it")]
    CachedSizeMismatch { id: String, expected: u64, got: u64 },

    /// Reading or writing the cache directory failed.
    #[error("media cache {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The declared MIME type is not one a notice may use.
    #[error("media type {mime:?} is not supported (image/jpeg, image/png or image/webp)")]
    UnsupportedMime { mime: String },

    /// The image header declares a picture wider or taller than
    /// [`MAX_IMAGE_SIDE`]; no pixel memory was allocated.
    #[error("image {width}×{height} exceeds the {MAX_IMAGE_SIDE}×{MAX_IMAGE_SIDE} limit")]
    ImageTooLarge { width: u32, height: u32 },

    /// Decoding the image would need more memory than [`MAX_DECODE_ALLOC`].
    #[error(
        "image {width}×{height} needs {needed} bytes to decode, more than the {MAX_DECODE_ALLOC} byte limit"
    )]
    ImageNeedsTooMuchMemory {
        width: u32,
        height: u32,
        needed: u64,
    },

    /// The bytes are not a valid image of the declared type.
    #[error("not a valid {mime} image: {source}")]
    Decode {
        mime: String,
        #[source]
        source: image::ImageError,
    },
}

impl MediaError {
    /// Whether fetching the same item again later may succeed. A declaration
    /// that is wrong in itself stays wrong until the office publishes a new
    /// version of the notice; a server fault or a network fault may pass.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            MediaError::InvalidMedia { .. } | MediaError::UnsupportedScheme { .. }
        )
    }
}

/// The content-addressed cache of media files: the file of an item is
/// `dir/<sha256>`, and only a checked file ever appears under that name.
#[derive(Debug, Clone)]
pub struct MediaCache {
    dir: PathBuf,
}

impl MediaCache {
    /// Opens (creating if needed) the cache directory and removes temporary
    /// files a crash left behind.
    ///
    /// Call it once at start-up, before any fetch: a temporary file being
    /// written by a fetch that is already running would be removed too.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, MediaError> {
        let dir = dir.into();
        let io_error = |source| MediaError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io_error)?;
        for entry in fs::read_dir(&dir).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            if is_temporary_name(&entry.file_name().to_string_lossy()) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|source| MediaError::Io { path, source })?;
            }
        }
        Ok(MediaCache { dir })
    }

    /// The cache as its readers see it (the UI, previews): nothing is created
    /// or cleaned, so a fetch the daemon is running is left alone.
    pub fn reader(dir: impl Into<PathBuf>) -> Self {
        MediaCache { dir: dir.into() }
    }

    /// The directory this cache lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file with this hash lives (or would live). The caller passes
    /// a checked lower-case hex hash; [`MediaCache::fetch`],
    /// [`MediaCache::contains`] and [`MediaCache::load`] check it themselves.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Whether the item is cached with exactly its signed size. A file of the
    /// wrong size is removed, so that the next fetch replaces it.
    pub fn contains(&self, media: &Media) -> bool {
        if check_declaration(media).is_err() {
            return false;
        }
        let path = self.path_of(&media.sha256);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() && meta.len() == media.bytes => true,
            Ok(meta) if meta.is_file() => {
                tracing::warn!(
                    media = %media.id,
                    path = %path.display(),
                    expected = media.bytes,
                    got = meta.len(),
                    "cached media file has the wrong size; removing it"
                );
                let _ = fs::remove_file(&path);
                false
            }
            _ => false,
        }
    }

    /// Makes sure the item is in the cache and returns the path of its file.
    ///
    /// Returns at once if it is cached already. Otherwise downloads it, never
    /// holding more than the signed size in memory, checks size and hash, and
    /// only then writes it under its final name (atomically, so that two
    /// fetches of the same item cannot corrupt each other).
    pub async fn fetch(
        &self,
        client: &reqwest::Client,
        media: &Media,
    ) -> Result<PathBuf, MediaError> {
        check_declaration(media)?;
        let path = self.path_of(&media.sha256);
        if self.contains(media) {
            return Ok(path);
        }
        let url = check_url(media)?;
        let body = download(client, url, media).await?;
        let dir = self.dir.clone();
        let target = path.clone();
        tokio::task::spawn_blocking(move || store(&dir, &target, &body))
            .await
            .map_err(|join| MediaError::Io {
                path: path.clone(),
                source: io::Error::other(join.to_string()),
            })?
            .map_err(|source| MediaError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    /// Reads a cached item and decodes it to fit `max_width`×`max_height`.
    ///
    /// The hash was checked when the file was fetched; the size is checked
    /// again here because it is cheap and catches a truncated file. Decoding
    /// is CPU work: call this from a blocking thread.
    pub fn load(
        &self,
        media: &Media,
        max_width: u32,
        max_height: u32,
    ) -> Result<DecodedImage, MediaError> {
        check_declaration(media)?;
        let bytes = self.read_cached(media)?;
        decode(&bytes, &media.mime, max_width, max_height)
    }

    fn read_cached(&self, media: &Media) -> Result<Vec<u8>, MediaError> {
        let path = self.path_of(&media.sha256);
        let io_error = |source| MediaError::Io {
            path: path.clone(),
            source,
        };
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MediaError::NotCached {
                    id: media.id.clone(),
                    sha256: media.sha256.clone(),
                });
            }
            Err(e) => return Err(io_error(e)),
        };
        // Checking the length before reading bounds the memory used, and
        // reading one byte more than expected catches a file that grew since.
        let mut bytes = Vec::new();
        let len = file.metadata().map_err(io_error)?.len();
        if len == media.bytes {
            file.take(media.bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(io_error)?;
        }
        let got = if len == media.bytes {
            bytes.len() as u64
        } else {
            len
        };
        if got != media.bytes {
            let _ = fs::remove_file(&path);
            return Err(MediaError::CachedSizeMismatch {
                id: media.id.clone(),
                expected: media.bytes,
                got,
            });
        }
        Ok(bytes)
    }
}

/// `NamedTempFile` names its files `.tmp<random>`; nothing else in the cache
/// directory contains `.tmp`, since final names are hex digits only.
fn is_temporary_name(name: &str) -> bool {
    name.contains(".tmp")
}

/// Rejects what the cache cannot safely handle whatever the server does: the
/// hash becomes a file name, so it must be exactly 64 lower-case hex digits,
/// and the size bounds the memory a download may use.
fn check_declaration(media: &Media) -> Result<(), MediaError> {
    let invalid = |reason: String| {
        Err(MediaError::InvalidMedia {
            id: media.id.clone(),
            reason,
        })
    };
    if !is_sha256_hex(&media.sha256) {
        return invalid(format!(
            "declared sha256 {:?} is not 64 lower-case hex digits",
            media.sha256
        ));
    }
    if media.bytes > MAX_MEDIA_BYTES {
        return invalid(format!(
            "declared size {} bytes exceeds the {MAX_MEDIA_BYTES} byte limit",
            media.bytes
        ));
    }
    Ok(())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_url(media: &Media) -> Result<url::Url, MediaError> {
    let url = url::Url::parse(&media.url).map_err(|e| MediaError::InvalidMedia {
        id: media.id.clone(),
        reason: format!("URL {:?} does not parse: {e}", media.url),
    })?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        _ => Err(MediaError::UnsupportedScheme {
            id: media.id.clone(),
            url: media.url.clone(),
        }),
    }
}

/// GETs the body, stopping as soon as it is known to be wrong, and returns it
/// only if its size and hash are the signed ones.
async fn download(
    client: &reqwest::Client,
    url: url::Url,
    media: &Media,
) -> Result<Vec<u8>, MediaError> {
    let transport = |source: reqwest::Error| MediaError::Transport {
        id: media.id.clone(),
        url: media.url.clone(),
        source: source.without_url(),
    };
    let mut response = client.get(url).send().await.map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(MediaError::Status {
            id: media.id.clone(),
            url: media.url.clone(),
            status,
        });
    }
    // A server that announces too much is refused before a byte is read.
    match response.content_length() {
        Some(content_length) if content_length > media.bytes => {
            return Err(MediaError::ContentLengthTooLarge {
                id: media.id.clone(),
                expected: media.bytes,
                content_length,
            });
        }
        _ => {}
    }
    let mut body = Vec::new();
    let mut hasher = Sha256::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if (body.len() + chunk.len()) as u64 > media.bytes {
            return Err(MediaError::TooManyBytes {
                id: media.id.clone(),
                expected: media.bytes,
            });
        }
        hasher.update(&chunk);
        body.extend_from_slice(&chunk);
    }
    if body.len() as u64 != media.bytes {
        return Err(MediaError::TooFewBytes {
            id: media.id.clone(),
            expected: media.bytes,
            got: body.len() as u64,
        });
    }
    let got = hex::encode(hasher.finalize());
    if got != media.sha256 {
        return Err(MediaError::HashMismatch {
            id: media.id.clone(),
            expected: media.sha256.clone(),
            got,
        });
    }
    Ok(body)
}

/// Writes a checked body under its final name so that a crash at any moment
/// leaves either no file or the whole file there: write a temporary file in
/// the same directory, flush it to disk, rename it (atomic, and replacing an
/// identical file if another fetch won the race), then flush the directory so
/// the rename itself survives a power cut.
fn store(dir: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
    let mut temporary = tempfile::NamedTempFile::new_in(dir)?;
    temporary.write_all(body)?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Only Unix lets a directory be opened and flushed; elsewhere the rename
    // is as durable as the file system makes it.
    Ok(())
}

/// The HTTP client for media: bounded in time at every step so that a stuck
/// server cannot hold a download slot forever, and following at most five
/// redirects.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default crypto provider; installing ours
    // here (it is idempotent) keeps this function safe to call first.
    crate::mqtt::install_crypto_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(120))
        .user_agent(concat!("gongkai/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()?;
    Ok(client)
}

/// A decoded picture: `width`×`height` pixels, four bytes (RGBA) each, rows
/// top to bottom.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedImage {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl std::fmt::Debug for DecodedImage {
    // Printing megabytes of pixels helps nobody.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("rgba_len", &self.rgba.len())
            .finish()
    }
}

impl DecodedImage {
    /// The RGBA value of the pixel at (`x`, `y`), if it is inside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = (y as usize * self.width as usize + x as usize) * 4;
        self.rgba.get(at..at + 4)?.try_into().ok()
    }
}

/// The image format for a declared MIME type. The format is never guessed
/// from the content: a file must be what the signed notice says it is.
pub fn format_of(mime: &str) -> Result<ImageFormat, MediaError> {
    match mime {
        "image/jpeg" => Ok(ImageFormat::Jpeg),
        "image/png" => Ok(ImageFormat::Png),
        "image/webp" => Ok(ImageFormat::WebP),
        _ => Err(MediaError::UnsupportedMime {
            mime: mime.to_string(),
        }),
    }
}

/// The size that fits `width`×`height` into `max_width`×`max_height` keeping
/// the aspect ratio, never larger than the original, never zero.
pub fn fit_within(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    let (max_width, max_height) = (max_width.max(1), max_height.max(1));
    if width <= max_width && height <= max_height {
        return (width.max(1), height.max(1));
    }
    // Compare the two scale factors max_width/width and max_height/height
    // without floating point: the smaller one decides.
    let (w, h) = (u64::from(width), u64::from(height));
    let (mw, mh) = (u64::from(max_width), u64::from(max_height));
    let (new_width, new_height) = if mw * h <= mh * w {
        (mw, (h * mw + w / 2) / w)
    } else {
        ((w * mh + h / 2) / h, mh)
    };
    let clamp = |v: u64, max: u32| (v.clamp(1, u64::from(max))) as u32;
    (clamp(new_width, max_width), clamp(new_height, max_height))
}

/// The decoder limits: the strict side limits reject a decompression bomb
/// from its header alone; the allocation limit bounds what is left.
fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    limits
}

/// Decodes `bytes` as the declared `mime` type and scales the picture down
/// (never up) to fit `max_width`×`max_height`, as RGBA8.
///
/// The header is read first and an image wider or taller than
/// [`MAX_IMAGE_SIDE`] is rejected before any pixel memory is allocated.
pub fn decode(
    bytes: &[u8],
    mime: &str,
    max_width: u32,
    max_height: u32,
) -> Result<DecodedImage, MediaError> {
    let format = format_of(mime)?;
    let decode_error = |source| MediaError::Decode {
        mime: mime.to_string(),
        source,
    };

    // The first pass has no side limit so that the error can name the size
    // the header claims; it only reads the header.
    let mut header_limits = decode_limits();
    header_limits.max_image_width = None;
    header_limits.max_image_height = None;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(MediaError::ImageTooLarge { width, height });
    }
    let needed = decoder.total_bytes();
    let mut limits = decode_limits();
    if limits.reserve(needed).is_err() {
        return Err(MediaError::ImageNeedsTooMuchMemory {
            width,
            height,
            needed,
        });
    }
    decoder.set_limits(limits).map_err(decode_error)?;
    let image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;

    let (new_width, new_height) = fit_within(width, height, max_width, max_height);
    let image = if (new_width, new_height) == (width, height) {
        image
    } else {
        // Resizing before converting keeps the large intermediate in the
        // decoder's own (often smaller) pixel format.
        image.resize_exact(new_width, new_height, image::imageops::FilterType::Triangle)
    };
    let rgba = image.into_rgba8();
    Ok(DecodedImage {
        width: rgba.width(),
        height: rgba.height(),
        rgba: rgba.into_raw(),
    })
}

/// Exponential backoff with full jitter: the n-th retry waits a uniformly
/// random time between zero and `first`·2ⁿ⁻¹, capped at `cap`. The jitter
/// keeps a fleet of screens that lost the same server from coming back in
/// lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(2),
            cap: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The longest wait before retry number `attempt` (1 is the first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.cap)
    }

    /// The wait before retry number `attempt`, drawn from `rng`.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        rng.gen_range(Duration::ZERO..=ceiling)
    }
}

/// How the background fetcher paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetcherOptions {
    /// The wait between failed attempts at one item.
    pub backoff: Backoff,
    /// How many downloads may run at once.
    pub parallel: usize,
}

impl Default for FetcherOptions {
    fn default() -> Self {
        FetcherOptions {
            backoff: Backoff::default(),
            parallel: 2,
        }
    }
}

/// One wanted item that is not cached yet.
struct Pending {
    media: Media,
    /// Failed attempts so far.
    attempts: u32,
    /// When to try next; `None` once an error showed that retrying the same
    /// declaration cannot succeed.
    next_try: Option<Instant>,
}

/// Keeps every wanted media item in the cache, with the default options.
/// See [`run_fetcher_with`].
pub async fn run_fetcher(
    cache: MediaCache,
    client: reqwest::Client,
    wanted: watch::Receiver<Vec<Media>>,
    ready: watch::Sender<u64>,
    cancel: CancellationToken,
) {
    run_fetcher_with(
        cache,
        client,
        wanted,
        ready,
        cancel,
        FetcherOptions::default(),
    )
    .await
}

/// Keeps every wanted media item in the cache until `cancel` fires.
///
/// Fetches each item of `wanted` that is not cached (one download per hash,
/// at most `options.parallel` at once), adds one to `ready` each time an item
/// lands so that the screen can redraw, and retries a failed item after a
/// backoff. When `wanted` changes the new list replaces the old: an item no
/// longer wanted is not retried. Failures are logged, never fatal.
pub async fn run_fetcher_with(
    cache: MediaCache,
    client: reqwest::Client,
    mut wanted: watch::Receiver<Vec<Media>>,
    ready: watch::Sender<u64>,
    cancel: CancellationToken,
    options: FetcherOptions,
) {
    let mut rng = StdRng::from_entropy();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    // Hashes being downloaded, by the id of the task downloading them.
    let mut in_flight: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut downloads: JoinSet<Result<PathBuf, MediaError>> = JoinSet::new();
    let mut wanted_open = true;

    let list = wanted.borrow_and_update().clone();
    update_wanted(&mut pending, &list, &cache, Instant::now());

    loop {
        start_due(
            &mut pending,
            &mut in_flight,
            &mut downloads,
            &cache,
            &client,
            options.parallel.max(1),
        );
        // With every slot busy there is nothing to wake up for but a
        // finished download.
        let next_wake = if downloads.len() < options.parallel.max(1) {
            pending
                .iter()
                .filter(|(sha256, _)| !in_flight.values().any(|s| s == *sha256))
                .filter_map(|(_, p)| p.next_try)
                .min()
        } else {
            None
        };

        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                // Dropping the JoinSet aborts the downloads; a file that was
                // already being stored is complete and checked either way.
                downloads.abort_all();
                return;
            }
            changed = wanted.changed(), if wanted_open => match changed {
                Ok(()) => {
                    let list = wanted.borrow_and_update().clone();
                    update_wanted(&mut pending, &list, &cache, Instant::now());
                }
                // The sender is gone: keep the current list until cancelled.
                Err(_) => wanted_open = false,
            },
            Some(joined) = downloads.join_next_with_id(), if !downloads.is_empty() => {
                let (task, result) = match joined {
                    Ok((task, result)) => (task, result),
                    Err(join) => (
                        join.id(),
                        Err(MediaError::Io {
                            path: cache.dir.clone(),
                            source: io::Error::other(format!("download task failed: {join}")),
                        }),
                    ),
                };
                if let Some(sha256) = in_flight.remove(&task) {
                    let now = Instant::now();
                    finish(&mut pending, &sha256, result, &ready, &options.backoff, &mut rng, now);
                }
            }
            () = sleep_until_some(next_wake), if next_wake.is_some() => {}
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Replaces the pending set with the items of `list` that are not cached,
/// one per hash. An item still wanted keeps its backoff, unless its URL
/// changed: a new URL deserves a try at once.
fn update_wanted(
    pending: &mut HashMap<String, Pending>,
    list: &[Media],
    cache: &MediaCache,
    now: Instant,
) {
    let mut old = std::mem::take(pending);
    let mut seen = HashSet::new();
    for media in list {
        if !seen.insert(media.sha256.as_str()) || cache.contains(media) {
            continue;
        }
        let entry = match old.remove(&media.sha256) {
            Some(previous) if previous.media.url == media.url => Pending {
                media: media.clone(),
                ..previous
            },
            _ => Pending {
                media: media.clone(),
                attempts: 0,
                next_try: Some(now),
            },
        };
        pending.insert(media.sha256.clone(), entry);
    }
}

/// Starts downloads of due items while there are free slots.
fn start_due(
    pending: &mut HashMap<String, Pending>,
    in_flight: &mut HashMap<tokio::task::Id, String>,
    downloads: &mut JoinSet<Result<PathBuf, MediaError>>,
    cache: &MediaCache,
    client: &reqwest::Client,
    parallel: usize,
) {
    let now = Instant::now();
    let mut due: Vec<(Instant, &String)> = pending
        .iter()
        .filter(|(sha256, _)| !in_flight.values().any(|s| s == *sha256))
        .filter_map(|(sha256, p)| p.next_try.filter(|t| *t <= now).map(|t| (t, sha256)))
        .collect();
    // The longest-waiting item goes first.
    due.sort();
    for (_, sha256) in due {
        if downloads.len() >= parallel {
            break;
        }
        let media = pending[sha256].media.clone();
        let cache = cache.clone();
        let client = client.clone();
        let handle = downloads.spawn(async move { cache.fetch(&client, &media).await });
        in_flight.insert(handle.id(), sha256.clone());
    }
}

/// Records the outcome of one download.
fn finish(
    pending: &mut HashMap<String, Pending>,
    sha256: &str,
    result: Result<PathBuf, MediaError>,
    ready: &watch::Sender<u64>,
    backoff: &Backoff,
    rng: &mut impl Rng,
    now: Instant,
) {
    match result {
        Ok(path) => {
            tracing::debug!(sha256, path = %path.display(), "media cached");
            pending.remove(sha256);
            ready.send_modify(|n| *n += 1);
        }
        Err(error) => {
            // An item dropped from the wanted list while it was downloading
            // is not retried.
            let Some(item) = pending.get_mut(sha256) else {
                return;
            };
            item.attempts += 1;
            let reason = error_chain(&error);
            if error.is_retryable() {
                let delay = backoff.delay(item.attempts, rng);
                item.next_try = Some(now + delay);
                tracing::warn!(
                    media = %item.media.id,
                    url = %item.media.url,
                    attempt = item.attempts,
                    retry_in = ?delay,
                    "media fetch failed: {reason}"
                );
            } else {
                item.next_try = None;
                tracing::warn!(
                    media = %item.media.id,
                    url = %item.media.url,
                    "media fetch failed, not retrying this declaration: {reason}"
                );
            }
        }
    }
}

/// An error and its causes on one line, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(sha256: &str, bytes: u64) -> Media {
        Media {
            id: "m1".to_string(),
            url: "http://127.0.0.1:9/m1.png".to_string(),
            sha256: sha256.to_string(),
            bytes,
            mime: "image/png".to_string(),
        }
    }

    #[test]
    fn backoff_ceiling_doubles_from_first_up_to_cap() {
        let backoff = Backoff::default();
        let ceilings: Vec<u64> = (1..=11).map(|n| backoff.ceiling(n).as_secs()).collect();
        assert_eq!(
            ceilings,
            [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600],
            "first retry within 2 s, doubling, capped at 10 min"
        );
        assert_eq!(backoff.ceiling(0), Duration::from_secs(2));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn backoff_delay_is_full_jitter_within_the_ceiling() {
        let backoff = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=20 {
            let ceiling = backoff.ceiling(attempt);
            let delays: Vec<Duration> =
                (0..200).map(|_| backoff.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter spreads over the whole range, not just its top.
            assert!(delays.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(
                delays.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn backoff_with_zero_first_never_waits() {
        let backoff = Backoff {
            first: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(backoff.delay(5, &mut rng), Duration::ZERO);
    }

    #[test]
    fn fit_within_keeps_aspect_and_never_upscales() {
        assert_eq!(fit_within(4000, 1000, 1000, 1000), (1000, 250));
        assert_eq!(fit_within(1000, 4000, 1000, 1000), (250, 1000));
        assert_eq!(fit_within(64, 32, 1920, 1080), (64, 32));
        assert_eq!(fit_within(3840, 2160, 1920, 1080), (1920, 1080));
        assert_eq!(fit_within(3000, 3000, 1920, 1080), (1080, 1080));
        assert_eq!(fit_within(8192, 1, 100, 100), (100, 1));
        assert_eq!(fit_within(10, 10, 0, 0), (1, 1));
    }

    #[test]
    fn format_comes_from_the_declared_mime_only() {
        assert_eq!(format_of("image/png").unwrap(), ImageFormat::Png);
        assert_eq!(format_of("image/jpeg").unwrap(), ImageFormat::Jpeg);
        assert_eq!(format_of("image/webp").unwrap(), ImageFormat::WebP);
        for mime in ["image/gif", "image/PNG", "text/html", ""] {
            assert!(
                matches!(format_of(mime), Err(MediaError::UnsupportedMime { .. })),
                "{mime}"
            );
        }
    }

    #[test]
    fn declarations_that_would_escape_the_cache_are_refused() {
        let good = "a".repeat(64);
        assert!(check_declaration(&media(&good, 10)).is_ok());
        for bad in [
            "../../etc/passwd".to_string(),
            "A".repeat(64),
            "a".repeat(63),
            format!("{}/", "a".repeat(63)),
        ] {
            assert!(
                matches!(
                    check_declaration(&media(&bad, 10)),
                    Err(MediaError::InvalidMedia { .. })
                ),
                "{bad}"
            );
        }
        assert!(check_declaration(&media(&good, MAX_MEDIA_BYTES + 1)).is_err());
    }

    #[test]
    fn only_http_and_https_urls_are_fetched() {
        let mut m = media(&"a".repeat(64), 1);
        for url in ["http://example.invalid/x", "https://example.invalid/x"] {
            m.url = url.to_string();
            assert!(check_url(&m).is_ok(), "{url}");
        }
        for url in ["file:///etc/passwd", "ftp://example.invalid/x", "data:,x"] {
            m.url = url.to_string();
            assert!(
                matches!(check_url(&m), Err(MediaError::UnsupportedScheme { .. })),
                "{url}"
            );
        }
        m.url = "not a url".to_string();
        assert!(matches!(
            check_url(&m),
            Err(MediaError::InvalidMedia { .. })
        ));
    }

    #[test]
    fn open_removes_leftover_temporary_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let kept = "b".repeat(64);
        fs::write(dir.path().join(&kept), b"x").unwrap();
        fs::write(dir.path().join(".tmpAbC123"), b"partial").unwrap();
        fs::write(dir.path().join("x.tmp"), b"partial").unwrap();
        let cache = MediaCache::open(dir.path()).unwrap();
        let mut names: Vec<String> = fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [kept]);
    }

    #[test]
    fn contains_checks_the_size_and_removes_a_wrong_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MediaCache::open(dir.path().join("media")).unwrap();
        let sha = "c".repeat(64);
        let m = media(&sha, 3);
        assert!(!cache.contains(&m));
        fs::write(cache.path_of(&sha), b"abc").unwrap();
        assert!(cache.contains(&m));
        fs::write(cache.path_of(&sha), b"abcd").unwrap();
        assert!(!cache.contains(&m));
        assert!(
            !cache.path_of(&sha).exists(),
            "the wrong-size file is removed"
        );
    }

    #[test]
    fn load_reports_missing_and_truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MediaCache::open(dir.path()).unwrap();
        let sha = "d".repeat(64);
        let m = media(&sha, 100);
        assert!(matches!(
            cache.load(&m, 10, 10),
            Err(MediaError::NotCached { .. })
        ));
        fs::write(cache.path_of(&sha), [0u8; 40]).unwrap();
        let err = cache.load(&m, 10, 10).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::CachedSizeMismatch {
                    expected: 100,
                    got: 40,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!cache.path_of(&sha).exists());
    }

    #[test]
    fn update_wanted_dedupes_and_keeps_backoff_unless_the_url_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MediaCache::open(dir.path()).unwrap();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let a = media(&"a".repeat(64), 5);
        let mut a_twin = a.clone();
        a_twin.id = "m2".to_string();
        let mut pending = HashMap::new();
        update_wanted(&mut pending, &[a.clone(), a_twin], &cache, now);
        assert_eq!(pending.len(), 1, "one download per hash");

        let entry = pending.get_mut(&a.sha256).unwrap();
        entry.attempts = 3;
        entry.next_try = Some(later);
        update_wanted(&mut pending, std::slice::from_ref(&a), &cache, now);
        assert_eq!(
            pending[&a.sha256].attempts, 3,
            "still wanted: keeps its backoff"
        );
        assert_eq!(pending[&a.sha256].next_try, Some(later));

        let mut moved = a.clone();
        moved.url = "http://127.0.0.1:9/elsewhere.png".to_string();
        update_wanted(&mut pending, std::slice::from_ref(&moved), &cache, now);
        assert_eq!(pending[&a.sha256].attempts, 0, "a new URL is tried at once");
        assert_eq!(pending[&a.sha256].next_try, Some(now));

        update_wanted(&mut pending, &[], &cache, now);
        assert!(pending.is_empty(), "an item no longer wanted is dropped");
    }

    #[test]
    fn error_messages_name_the_numbers() {
        let e = MediaError::TooManyBytes {
            id: "m1".to_string(),
            expected: 183211,
        };
        assert_eq!(
            e.to_string(),
            "media m1: expected 183211 bytes, the server sent more"
        );
        let e = MediaError::ImageTooLarge {
            width: 100000,
            height: 100000,
        };
        assert_eq!(
            e.to_string(),
            "image 100000×100000 exceeds the 8192×8192 limit"
        );
        let e = MediaError::Status {
            id: "m1".to_string(),
            url: "https://example.invalid/a.png".to_string(),
            status: reqwest::StatusCode::NOT_FOUND,
        };
        assert_eq!(
            e.to_string(),
            "media m1: HTTP 404 Not Found from https://example.invalid/a.png"
        );
    }
}
