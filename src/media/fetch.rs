//! Fetching one media item: the HTTP client, the checks on a declaration
//! before anything is sent, and a download that never reads past the
//! declared size.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::MediaError;
use crate::protocol::notice::{MAX_MEDIA_BYTES, Media};

/// Rejects what the cache cannot safely handle whatever the server does: the
/// hash becomes a file name, so it must be exactly 64 lower-case hex digits,
/// and the size bounds the memory a download may use.
pub(super) fn check_declaration(media: &Media) -> Result<(), MediaError> {
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

pub(super) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(super) fn check_url(media: &Media) -> Result<url::Url, MediaError> {
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
pub(super) async fn download(
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

/// The HTTP client for media: bounded in time at every step so that a stuck
/// server cannot hold a download slot forever, and following at most five
/// redirects.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default crypto provider; installing ours
    // here (it is idempotent) keeps this function safe to call first.
    crate::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(120))
        .user_agent(concat!("gongkai/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::media::test_media as media;

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
}
