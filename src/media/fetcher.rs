//! The background task that keeps the media of the notices on screen in the
//! cache, retrying failures with backoff and jitter.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::PathBuf;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{MediaCache, MediaError, error_chain};
use crate::backoff::Backoff;
use crate::protocol::notice::Media;

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
                            path: cache.dir().to_path_buf(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::media::test_media as media;

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
}
