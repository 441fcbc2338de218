//! The ingest worker: the thread that owns the screen's store. It verifies
//! each publish, commits a batch, updates the catalog, and only then
//! acknowledges to the broker; and, at start, it checks what the store holds
//! against hashes and signatures. It must not wait on the other tasks.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use rumqttc::{AsyncClient, Publish, QoS};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::MAX_BATCH;
use crate::backoff::Retry;
use crate::mqtt::{self, Counters};
use crate::protocol::{Follows, MAX_ENVELOPE_BYTES, Rejection, Verified, printable, sha256_hex};
use crate::schedule::Item;
use crate::store::{Catalog, Incoming, NoticeRef, Outcome, Store, StoredHead};

/// Checks every stored head against the hash it was accepted with and
/// against its signatures under the trust configured now, before anything is
/// shown. A copy edited on disk (or one whose keys are no longer trusted) is
/// taken out of the store with a rejection that says why; the version below
/// it, if any, becomes the head and is checked in the next round. Returns how
/// many were refused.
pub(super) fn check_stored(store: &mut Store, follows: &Follows) -> anyhow::Result<usize> {
    let mut refused = 0;
    loop {
        let mut bad: Vec<(NoticeRef, u64, String)> = Vec::new();
        for head in store.stored_heads()? {
            let notice = NoticeRef::new(&head.scope, &head.id);
            match check_head(&head, follows) {
                // The review mark follows the trust configured now.
                Ok(reviewed) if reviewed != head.reviewed => {
                    store.set_reviewed(&notice, head.version, reviewed)?
                }
                Ok(_) => {}
                Err(why) => bad.push((notice, head.version, why)),
            }
        }
        if bad.is_empty() {
            return Ok(refused);
        }
        for (notice, version, why) in bad {
            let record = store.refuse_stored(&notice, version, &why)?;
            tracing::warn!("{}", record.reason);
            refused += 1;
        }
    }
}

/// A scope no longer followed fails the check too: its keys are no longer
/// trusted, so what it published is no longer shown.
/// Returns whether a supervisor's signature verified (the review mark).
fn check_head(head: &StoredHead, follows: &Follows) -> Result<bool, String> {
    if sha256_hex(&head.envelope) != head.envelope_sha256 {
        return Err("its bytes do not match the hash they were accepted with".into());
    }
    let item = head
        .item
        .as_ref()
        .map_err(|e| format!("its row does not parse: {e}"))?;
    match follows.verify(&head.topic, &head.envelope) {
        Ok(Verified::Notice(v))
            if v.notice.id == head.id
                && v.notice.community == head.scope
                && v.notice.version == head.version
                && Item::of(&v.notice) == *item =>
        {
            Ok(v.notice.review_verified)
        }
        Ok(_) => Err("its row does not match its signed payload".into()),
        Err(rejection) => Err(format!("it no longer verifies: {rejection}")),
    }
}

/// Owns the store. Verifies, commits, updates the catalog, then acknowledges.
pub(super) struct IngestWorker {
    pub(super) store: Store,
    pub(super) client: AsyncClient,
    /// The scopes followed, with their keys.
    pub(super) follows: Follows,
    pub(super) catalog: watch::Sender<Catalog>,
    pub(super) counters: Arc<Counters>,
    pub(super) runtime: tokio::runtime::Handle,
    /// Shutdown: a commit that keeps failing is not retried past it.
    pub(super) cancel: CancellationToken,
}

impl IngestWorker {
    pub(super) fn run(mut self, mut publishes: mpsc::UnboundedReceiver<Publish>) {
        while let Some(first) = publishes.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match publishes.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.handle(&batch);
        }
    }

    /// Commits, retrying with backoff while the store refuses (a full or
    /// failing disk); `None` once shutdown began. Nothing of the batch was
    /// acknowledged, so nothing is lost either way: the broker redelivers.
    /// Meanwhile the status says the store is failing.
    fn commit(&mut self, incoming: &[Incoming]) -> Option<Vec<Outcome>> {
        let mut backoff = Retry::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match self.store.commit(incoming) {
                Ok(outcomes) => {
                    self.catalog
                        .send_if_modified(|c| c.store_error.take().is_some());
                    return Some(outcomes);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!(
                        "cannot commit to the store: {e}; retrying in {:.1} s",
                        delay.as_secs_f64()
                    );
                    let reason = e.to_string();
                    self.catalog.send_if_modified(|c| {
                        let changed = c.store_error.as_ref() != Some(&reason);
                        c.store_error = Some(reason);
                        changed
                    });
                    let cancelled = self.runtime.block_on(async {
                        tokio::select! {
                            () = self.cancel.cancelled() => true,
                            () = tokio::time::sleep(delay) => false,
                        }
                    });
                    if cancelled {
                        tracing::warn!(
                            "shutting down with {} messages uncommitted; the broker will redeliver them",
                            incoming.len()
                        );
                        return None;
                    }
                }
            }
        }
    }

    fn handle(&mut self, batch: &[Publish]) {
        let started = std::time::Instant::now();
        let incoming: Vec<Incoming> = batch
            .iter()
            .filter(|p| {
                if p.payload.is_empty() {
                    // Clearing a retained message is not a withdrawal: only a
                    // signed one removes a notice, so a broker-side actor
                    // cannot silently erase a disclosure.
                    tracing::info!(
                        "{}: empty retained payload ignored; the notice stays",
                        printable(&p.topic)
                    );
                }
                !p.payload.is_empty()
            })
            .map(|p| {
                let verdict = match mqtt::oversize_of(&p.payload) {
                    // The relay dropped a payload over the packet limit.
                    Some(bytes) => Err(Rejection::TooLarge {
                        bytes,
                        limit: MAX_ENVELOPE_BYTES,
                    }),
                    None => self.follows.verify(&p.topic, &p.payload),
                };
                Incoming {
                    topic: p.topic.clone(),
                    verdict,
                    bytes: p.payload.to_vec(),
                }
            })
            .collect();
        let Some(outcomes) = self.commit(&incoming) else {
            return;
        };
        // Committed: now the broker may forget these. Acknowledge before
        // telling the other tasks, so that the acks are queued ahead of any
        // subscription the session task makes in response: a broker with a
        // small queue would otherwise drop what that subscription brings.
        for publish in batch.iter().filter(|p| p.qos != QoS::AtMostOnce) {
            if let Err(e) = self.runtime.block_on(self.client.ack(publish)) {
                tracing::warn!("ack for {} not sent: {e}", printable(&publish.topic));
            }
        }
        for (i, o) in incoming.iter().zip(&outcomes) {
            log_outcome(&i.topic, o);
        }
        self.catalog.send_if_modified(|catalog| {
            let mut changed = false;
            for outcome in &outcomes {
                changed |= !matches!(
                    outcome,
                    Outcome::Duplicate
                        | Outcome::Replay { .. }
                        | Outcome::StaleManifest { .. }
                        | Outcome::OtherPage { .. }
                );
                catalog.apply(outcome);
            }
            catalog.last_sync = Some(OffsetDateTime::now_utc());
            changed
        });
        tracing::debug!(
            "handled {} messages in {:.2} ms",
            batch.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        self.counters
            .handled
            .fetch_add(batch.len() as u64, AtomicOrdering::Relaxed);
    }
}

/// One log line per message. Topics come from the broker and may hold
/// anything, so they are escaped like every foreign text.
fn log_outcome(topic: &str, outcome: &Outcome) {
    let topic = printable(topic);
    match outcome {
        Outcome::Accepted(item) => tracing::info!(
            "accepted {}/{} version {} ({}, {}): {}",
            item.scope,
            item.id,
            item.version,
            item.category.as_str(),
            item.status.as_str(),
            printable(&item.title)
        ),
        Outcome::Duplicate => tracing::debug!("{topic}: already held"),
        Outcome::Replay { held } => {
            tracing::info!("{topic}: ignored as a replay (holding version {held})")
        }
        Outcome::Manifest {
            scope,
            version,
            entries,
            pages: None,
        } => tracing::info!(
            "manifest of {scope} version {version} lists {} notices",
            entries.len()
        ),
        Outcome::Manifest {
            scope,
            version,
            pages: Some(pages),
            ..
        } => tracing::info!("manifest of {scope} version {version} is an index of {pages} pages"),
        Outcome::ManifestPage {
            scope,
            version,
            page,
            entries,
        } => tracing::info!(
            "manifest of {scope} version {version}: page {page} lists {} notices",
            entries.len()
        ),
        Outcome::OtherPage { version, held } => tracing::debug!(
            "{topic}: a page of manifest version {version}, not of the index held ({held:?}): ignored"
        ),
        Outcome::StaleManifest { held } => {
            tracing::debug!("{topic}: manifest not newer than {held}")
        }
        Outcome::Rejected(r) => tracing::warn!("rejected {}: {}", r.topic, r.reason),
    }
}
