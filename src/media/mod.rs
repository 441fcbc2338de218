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
//!
//! - [`cache`]: the content-addressed cache directory (`MediaCache`);
//! - [`fetch`]: the HTTP client and one checked download;
//! - [`decode`]: cached bytes into pixels, under limits;
//! - [`fetcher`]: the background task that keeps wanted media cached.

mod cache;
mod decode;
mod fetch;
mod fetcher;

pub use cache::MediaCache;
pub use decode::{DecodedImage, MAX_DECODE_ALLOC, MAX_IMAGE_SIDE, decode, fit_within, format_of};
pub use fetch::http_client;
pub use fetcher::{FetcherOptions, run_fetcher, run_fetcher_with};

use std::io;
use std::path::PathBuf;

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

/// A media item declared as the unit tests of these files need it.
#[cfg(test)]
fn test_media(sha256: &str, bytes: u64) -> crate::protocol::notice::Media {
    crate::protocol::notice::Media {
        id: "m1".to_string(),
        url: "http://127.0.0.1:9/m1.png".to_string(),
        sha256: sha256.to_string(),
        bytes,
        mime: "image/png".to_string(),
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
