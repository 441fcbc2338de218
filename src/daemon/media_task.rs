//! The media task: keeps the images of current and upcoming notices in the
//! cache, reading which media they name from the store (read-only, off the
//! async threads) and handing the list to the fetcher.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::media::{self, MediaCache};
use crate::protocol::Notice;
use crate::protocol::notice::Media;
use crate::schedule;
use crate::store::{Catalog, Store};

/// The media task: keeps the media of current and upcoming notices in the
/// cache. It works out which media they name (reading bodies through a
/// read-only connection, off the async threads) and hands the list to the
/// fetcher.
pub(super) struct MediaTask {
    pub(super) config: Config,
    pub(super) catalog: watch::Receiver<Catalog>,
    pub(super) ready: watch::Sender<u64>,
    pub(super) cancel: CancellationToken,
}

impl MediaTask {
    pub(super) async fn run(self) {
        let MediaTask {
            config,
            mut catalog,
            ready,
            cancel,
        } = self;
        let setup = MediaCache::open(&config.store.media_dir)
            .map_err(anyhow::Error::from)
            .and_then(|cache| Ok((cache, media::http_client()?)));
        let (cache, client) = match setup {
            Ok(setup) => setup,
            Err(e) => {
                tracing::error!(
                    "media cache {} unusable, images will not show: {e:#}",
                    config.store.media_dir.display()
                );
                // Keep `ready` open: the UI watches it.
                cancel.cancelled().await;
                return;
            }
        };
        let (wanted_tx, wanted_rx) = watch::channel(Vec::new());
        let fetcher = tokio::spawn(media::run_fetcher(
            cache,
            client,
            wanted_rx,
            ready,
            cancel.clone(),
        ));
        let audience = config.audience();
        let mut known: HashMap<schedule::Key, Vec<Media>> = HashMap::new();
        loop {
            let now = OffsetDateTime::now_utc();
            let current: Vec<schedule::Key> = catalog
                .borrow_and_update()
                .items
                .values()
                .filter(|i| {
                    i.status == crate::protocol::Status::Active
                        && i.targets(&audience)
                        && i.valid_until > now
                })
                .map(|i| i.key())
                .collect();
            known.retain(|k, _| current.contains(k));
            let unread: Vec<schedule::Key> = current
                .iter()
                .filter(|k| !known.contains_key(*k))
                .cloned()
                .collect();
            if !unread.is_empty() {
                let path = config.store.path.clone();
                match tokio::task::spawn_blocking(move || media_of(&path, unread)).await {
                    Ok(Ok(read)) => known.extend(read),
                    Ok(Err(e)) => tracing::warn!("cannot read notice media from the store: {e:#}"),
                    Err(e) => tracing::warn!("media lookup failed: {e}"),
                }
            }
            let mut wanted: Vec<Media> = known.values().flatten().cloned().collect();
            wanted.sort_by(|a, b| a.sha256.cmp(&b.sha256));
            wanted.dedup_by(|a, b| a.sha256 == b.sha256);
            wanted_tx.send_if_modified(|w| {
                let changed = *w != wanted;
                *w = wanted;
                changed
            });
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = catalog.changed() => if r.is_err() { break },
                // Windows open and close with the clock.
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
        let _ = fetcher.await;
    }
}

/// The media each notice names.
fn media_of(
    store: &std::path::Path,
    keys: Vec<schedule::Key>,
) -> anyhow::Result<Vec<(schedule::Key, Vec<Media>)>> {
    let store = Store::open_read_only(store)?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(envelope) = store.envelope(&key.scope, &key.id, key.version)? else {
            continue;
        };
        let notice = Notice::from_envelope(&envelope).map_err(anyhow::Error::msg)?;
        out.push((key, notice.media));
    }
    Ok(out)
}
