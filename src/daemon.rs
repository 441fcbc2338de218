//! `gongkaid`: the tasks of a screen, wired together and shut down together.
//!
//! - the *ingest worker* (a thread: it owns the SQLite store) verifies each
//!   publish, commits batches, updates the in-memory [`Catalog`] and only then
//!   acknowledges to the broker;
//! - the MQTT *event loop* and *session* tasks (see [`crate::mqtt`]);
//! - the *status* task publishes section 6 status, coalesced;
//! - the *rotation* task walks the active set on the clock and says what is
//!   showing (the UI, where there is one, follows it);
//! - the *ui io* task reads, decodes and commits for the UI (see
//!   [`crate::ui_io`]), so the UI thread only draws.
//!
//! Every task watches one cancellation token and is joined with a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, LastWill, Publish, QoS};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{Failures, Tasks};
use crate::backoff::Retry;
use crate::config::Config;
use crate::media::{self, MediaCache};
use crate::mqtt::{self, Connect, Counters, Link};
use crate::protocol::Notice;
use crate::protocol::notice::Media;
use crate::protocol::{
    MAX_ENVELOPE_BYTES, Rejection, TopicSpace, TrustPolicy, Verified, printable, sha256_hex,
    verify_message,
};
use crate::schedule::{self, Item, Rotation};
use crate::status::{self, Identity, ScreenStatus, Showing};
use crate::store::outbox::OutboxCounts;
use crate::store::{Catalog, Incoming, Outcome, Store, StoredHead};

/// Messages committed in one transaction at most.
const MAX_BATCH: usize = 512;
/// How long shutdown waits for the tasks in total.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(4);

/// A running screen daemon.
pub struct Daemon {
    /// What the screen holds; changes after every commit.
    pub catalog: watch::Receiver<Catalog>,
    /// Whether the broker connection is up.
    pub connected: watch::Receiver<bool>,
    /// What the rotation shows now.
    pub showing: watch::Receiver<Option<Showing>>,
    /// Message counters shared with the MQTT and ingest tasks.
    pub counters: Arc<Counters>,
    /// Residents' feedback waiting for the office, and the parked items.
    pub outbox: watch::Receiver<OutboxCounts>,
    /// Notified after a submission, so the sync task sends it at once.
    pub feedback_wake: Arc<Notify>,
    /// Where a task that fails is reported; [`crate::app::run`] takes it.
    pub failures: Option<Failures>,
    cancel: CancellationToken,
    stop_event_loop: CancellationToken,
    session: JoinHandle<()>,
    event_loop: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    ingest: std::thread::JoinHandle<()>,
    /// The relay the MQTT connection runs through.
    relay: mqtt::Guard,
}

impl Daemon {
    /// Opens the store and starts every task. Returns once the store is open
    /// and the tasks run (the broker may still be unreachable: the screen then
    /// shows what it has). Each rotation slot lasts the dwell time.
    pub async fn start(config: Config) -> anyhow::Result<Daemon> {
        Ok(Self::start_paced(config, false).await?.0)
    }

    /// Like [`Daemon::start`], for a screen with a UI: a rotation slot lasts
    /// until the UI says it has shown every page of the notice (or, should
    /// the UI say nothing, [`MAX_SLOT_DWELLS`] dwell times).
    pub async fn start_with_ui(config: Config) -> anyhow::Result<(Daemon, UiLink)> {
        Self::start_paced(config, true).await
    }

    /// Starts the daemon; with `paced_by_ui`, rotation slots wait for the
    /// UI's "slot done" on the link.
    pub async fn start_paced(
        config: Config,
        paced_by_ui: bool,
    ) -> anyhow::Result<(Daemon, UiLink)> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let pacer = paced_by_ui.then_some(done_rx);
        let (daemon, media, io) = Self::start_inner(config, pacer).await?;
        let link = UiLink {
            catalog: daemon.catalog.clone(),
            connected: daemon.connected.clone(),
            showing: daemon.showing.clone(),
            media,
            slot_done: done_tx,
            io,
        };
        Ok((daemon, link))
    }

    async fn start_inner(
        config: Config,
        pacer: Option<mpsc::UnboundedReceiver<schedule::Key>>,
    ) -> anyhow::Result<(Daemon, watch::Receiver<u64>, crate::ui_io::UiIo)> {
        crate::tls::install_crypto_provider();
        let mut store = Store::open(&config.store.path)
            .with_context(|| format!("opening the store {}", config.store.path.display()))?;
        let topics = config.topics();
        let refused = check_stored(&mut store, &topics, &config.trust)?;
        store.set_meta("screen_id", &config.screen.id)?;
        store.set_meta("community", &config.screen.community)?;
        // The broker keeps this screen's subscriptions in its session. When the
        // screen was set up for other topics before, the old session is ended
        // first so that its subscriptions go (see `mqtt::discard_session`). So
        // it is when a stored copy was refused at start: subscribing anew
        // makes the broker send every retained notice again.
        let subscribed = topics_key(&config);
        let fresh_session =
            refused > 0 || store.meta("session_topics")?.as_deref() != Some(subscribed.as_str());
        store.set_meta("session_topics", &subscribed)?;
        let initial = store.load_catalog()?;
        tracing::info!(
            "store {} holds {} notices (manifest version {})",
            config.store.path.display(),
            initial.items.len(),
            initial.manifest.as_ref().map_or(0, |m| m.version)
        );

        let connect = screen_connect(&config, &topics)?;
        let (client, eventloop, relay) = connect.client()?;

        let cancel = CancellationToken::new();
        let stop_event_loop = CancellationToken::new();
        let (catalog_tx, catalog_rx) = watch::channel(initial);
        let (connected_tx, connected_rx) = watch::channel(false);
        let (showing_tx, showing_rx) = watch::channel(None);
        let (publish_tx, publish_rx) = mpsc::unbounded_channel();
        let (link_tx, link_rx) = mpsc::unbounded_channel::<Link>();
        let counters = Arc::new(Counters::default());

        let (tasks, failures) = Tasks::new(cancel.clone());
        let ingest = {
            let worker = IngestWorker {
                store,
                client: client.clone(),
                topics: topics.clone(),
                policy: config.trust.clone(),
                catalog: catalog_tx,
                counters: counters.clone(),
                runtime: tokio::runtime::Handle::current(),
                cancel: cancel.clone(),
            };
            tasks
                .spawn_thread("ingest", move || {
                    worker.run(publish_rx);
                    Ok(())
                })
                .context("starting the ingest thread")?
        };
        let event_loop = mqtt::EventLoopTask {
            eventloop,
            publishes: publish_tx,
            links: link_tx,
            discard_first: fresh_session.then(|| connect.clone()),
            stop: stop_event_loop.clone(),
        };
        let event_loop = tasks.spawn("MQTT event loop", async move {
            event_loop.run().await;
            Ok(())
        });
        let session = mqtt::SessionTask {
            client: client.clone(),
            topics: topics.clone(),
            links: link_rx,
            catalog: catalog_rx.clone(),
            connected: connected_tx,
            counters: counters.clone(),
            batch: config.mqtt.fetch_batch,
            offline_status: (
                topics.status(&config.screen.id),
                status::offline(&config.screen.id, &config.screen.community),
            ),
            cancel: cancel.clone(),
        };
        let session = tasks.spawn("MQTT session", async move {
            session.run().await;
            Ok(())
        });
        let (outbox_tx, outbox_rx) = watch::channel(OutboxCounts::default());
        let feedback_wake = Arc::new(Notify::new());
        let status = StatusTask {
            client,
            topic: topics.status(&config.screen.id),
            identity: Identity {
                screen: config.screen.id.clone(),
                community: config.screen.community.clone(),
                mode: config.screen.mode.as_str(),
                started_at: OffsetDateTime::now_utc(),
            },
            catalog: catalog_rx.clone(),
            showing: showing_rx.clone(),
            connected: connected_rx.clone(),
            outbox: outbox_rx.clone(),
            cancel: cancel.clone(),
        };
        let sync = crate::sync::SyncTask {
            store: config.store.path.clone(),
            office: config.office.clone(),
            screen: config.screen.id.clone(),
            community: config.screen.community.clone(),
            wake: feedback_wake.clone(),
            counts: outbox_tx,
            cancel: cancel.clone(),
        };
        let rotation = RotationTask {
            screen: config.screen.id.clone(),
            dwell: Duration::from_secs(config.display.dwell_seconds),
            pacer,
            catalog: catalog_rx.clone(),
            showing: showing_tx,
            cancel: cancel.clone(),
        };
        let (media_tx, media_rx) = watch::channel(0u64);
        let media = MediaTask {
            config: config.clone(),
            catalog: catalog_rx.clone(),
            ready: media_tx,
            cancel: cancel.clone(),
        };
        // The UI's reads, decoding and feedback commits, off the UI thread.
        let (ui_io, io) = crate::ui_io::UiIoTask::new(
            config.store.path.clone(),
            Some(MediaCache::reader(&config.store.media_dir)),
            feedback_wake.clone(),
            cancel.clone(),
        );
        let others = vec![
            tasks.spawn("status", async move {
                status.run().await;
                Ok(())
            }),
            tasks.spawn("feedback sync", async move {
                sync.run().await;
                Ok(())
            }),
            tasks.spawn("rotation", async move {
                rotation.run().await;
                Ok(())
            }),
            tasks.spawn("media", async move {
                media.run().await;
                Ok(())
            }),
            tasks.spawn("ui io", ui_io.run()),
        ];
        Ok((
            Daemon {
                catalog: catalog_rx,
                connected: connected_rx,
                showing: showing_rx,
                counters,
                outbox: outbox_rx,
                feedback_wake,
                failures: Some(failures),
                cancel,
                stop_event_loop,
                session,
                event_loop,
                tasks: others,
                ingest,
                relay,
            },
            media_rx,
            io,
        ))
    }

    /// Stops every task and waits for it, within a deadline.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        self.cancel.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        // The session task says goodbye (offline status, DISCONNECT) through
        // the event loop, which keeps running until the DISCONNECT went out.
        let goodbye = deadline - Duration::from_secs(2);
        let _ = tokio::time::timeout_at(goodbye, self.session).await;
        let mut event_loop = self.event_loop;
        if tokio::time::timeout_at(goodbye + Duration::from_millis(500), &mut event_loop)
            .await
            .is_err()
        {
            self.stop_event_loop.cancel();
            let _ = tokio::time::timeout_at(deadline, event_loop).await;
        }
        // The event loop is gone with its end of the relay's socket: let the
        // relay pass its last bytes (acknowledgements, DISCONNECT) on.
        self.relay.close(Duration::from_millis(500)).await;
        // The event loop is gone, so the ingest channel is closed: the worker
        // finishes its batch and returns.
        // Its commit loop watches the token, so this is quick; the deadline
        // keeps shutdown bounded even so.
        let ingest = self.ingest;
        let joined = tokio::task::spawn_blocking(move || ingest.join());
        if tokio::time::timeout_at(deadline + Duration::from_secs(1), joined)
            .await
            .is_err()
        {
            tracing::warn!("the ingest thread did not finish in time");
        }
    }
}

/// What a UI needs from a running daemon.
pub struct UiLink {
    pub catalog: watch::Receiver<Catalog>,
    pub connected: watch::Receiver<bool>,
    pub showing: watch::Receiver<Option<Showing>>,
    /// Counts media that landed in the cache.
    pub media: watch::Receiver<u64>,
    /// Where the UI says a rotation slot has shown all its pages.
    pub slot_done: mpsc::UnboundedSender<schedule::Key>,
    /// Where the UI asks for notice bodies and images, commits feedback
    /// and looks up replies (see [`crate::ui_io`]).
    pub io: crate::ui_io::UiIo,
}

/// A slot the UI never reports done ends after this many dwell times (the
/// kiosk is being browsed, or the UI is stuck): status stays truthful.
pub const MAX_SLOT_DWELLS: u32 = 30;

fn topics_key(config: &Config) -> String {
    format!(
        "{}|{}|{}",
        config.mqtt.url,
        config.topics().notices_filter(),
        config.screen.id
    )
}

fn screen_connect(config: &Config, topics: &TopicSpace) -> anyhow::Result<Connect> {
    let password = config
        .mqtt
        .password_file
        .as_deref()
        .map(mqtt::read_secret)
        .transpose()?;
    Ok(Connect {
        url: mqtt::BrokerUrl::parse(&config.mqtt.url).map_err(anyhow::Error::msg)?,
        client_id: config.screen.id.clone(),
        username: config.mqtt.username.clone(),
        password,
        ca_file: config.mqtt.ca_file.clone(),
        clean_session: false,
        manual_acks: true,
        will: Some(LastWill::new(
            topics.status(&config.screen.id),
            status::offline(&config.screen.id, &config.screen.community),
            QoS::AtLeastOnce,
            true,
        )),
    })
}

/// Checks every stored head against the hash it was accepted with and
/// against its signatures under the trust configured now, before anything is
/// shown. A copy edited on disk (or one whose keys are no longer trusted) is
/// taken out of the store with a rejection that says why; the version below
/// it, if any, becomes the head and is checked in the next round. Returns how
/// many were refused.
fn check_stored(
    store: &mut Store,
    topics: &TopicSpace,
    policy: &TrustPolicy,
) -> anyhow::Result<usize> {
    let mut refused = 0;
    loop {
        let bad: Vec<(String, u64, String)> = store
            .stored_heads()?
            .into_iter()
            .filter_map(|head| {
                let why = check_head(&head, topics, policy).err()?;
                Some((head.id, head.version, why))
            })
            .collect();
        if bad.is_empty() {
            return Ok(refused);
        }
        for (id, version, why) in bad {
            let record = store.refuse_stored(&id, version, &why)?;
            tracing::warn!("{}", record.reason);
            refused += 1;
        }
    }
}

fn check_head(head: &StoredHead, topics: &TopicSpace, policy: &TrustPolicy) -> Result<(), String> {
    if sha256_hex(&head.envelope) != head.envelope_sha256 {
        return Err("its bytes do not match the hash they were accepted with".into());
    }
    let item = head
        .item
        .as_ref()
        .map_err(|e| format!("its row does not parse: {e}"))?;
    match verify_message(topics, &head.topic, &head.envelope, policy) {
        Ok(Verified::Notice(v))
            if v.notice.id == head.id
                && v.notice.version == head.version
                && Item::of(&v.notice) == *item =>
        {
            Ok(())
        }
        Ok(_) => Err("its row does not match its signed payload".into()),
        Err(rejection) => Err(format!("it no longer verifies: {rejection}")),
    }
}

/// Owns the store. Verifies, commits, updates the catalog, then acknowledges.
struct IngestWorker {
    store: Store,
    client: AsyncClient,
    topics: TopicSpace,
    policy: TrustPolicy,
    catalog: watch::Sender<Catalog>,
    counters: Arc<Counters>,
    runtime: tokio::runtime::Handle,
    /// Shutdown: a commit that keeps failing is not retried past it.
    cancel: CancellationToken,
}

impl IngestWorker {
    fn run(mut self, mut publishes: mpsc::UnboundedReceiver<Publish>) {
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
                    None => verify_message(&self.topics, &p.topic, &p.payload, &self.policy),
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
                    Outcome::Duplicate | Outcome::Replay { .. } | Outcome::StaleManifest { .. }
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
            "accepted {} version {} ({}, {}): {}",
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
        Outcome::Manifest { version, entries } => {
            tracing::info!("manifest version {version} lists {} notices", entries.len())
        }
        Outcome::StaleManifest { held } => {
            tracing::debug!("{topic}: manifest not newer than {held}")
        }
        Outcome::Rejected(r) => tracing::warn!("rejected {}: {}", r.topic, r.reason),
    }
}

/// The status task: publishes the status on connect, at once on every
/// change (coalesced to ten a second, so a burst ends with one message
/// holding all of it), and at least every 60 s.
struct StatusTask {
    client: AsyncClient,
    topic: String,
    identity: Identity,
    catalog: watch::Receiver<Catalog>,
    showing: watch::Receiver<Option<Showing>>,
    connected: watch::Receiver<bool>,
    outbox: watch::Receiver<OutboxCounts>,
    cancel: CancellationToken,
}

impl StatusTask {
    async fn run(self) {
        let StatusTask {
            client,
            topic,
            identity,
            mut catalog,
            mut showing,
            mut connected,
            mut outbox,
            cancel,
        } = self;
        const MIN_GAP: Duration = Duration::from_millis(100);
        const PERIOD: Duration = Duration::from_secs(60);
        let mut last: Option<ScreenStatus> = None;
        let mut last_sent = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = catalog.changed() => if r.is_err() { return },
                r = showing.changed() => if r.is_err() { return },
                r = connected.changed() => if r.is_err() { return },
                r = outbox.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(last_sent + PERIOD) => {}
            }
            if !*connected.borrow_and_update() {
                last = None;
                continue;
            }
            let gap = last_sent + MIN_GAP;
            if last.is_some() && tokio::time::Instant::now() < gap {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(gap) => {}
                }
            }
            let mut status = ScreenStatus::build(
                &identity,
                &catalog.borrow_and_update(),
                showing.borrow_and_update().clone(),
                OffsetDateTime::now_utc(),
            );
            let outbox_now = *outbox.borrow_and_update();
            status.outbox = outbox_now.pending;
            status.outbox_rejected = outbox_now.rejected;
            status.office_unauthorized = outbox_now.unauthorized;
            let due = match &last {
                None => true,
                Some(prev) => status.differs_from(prev) || last_sent.elapsed() >= PERIOD,
            };
            if due {
                if let Err(e) =
                    client.try_publish(topic.clone(), QoS::AtLeastOnce, true, status.to_json())
                {
                    tracing::debug!("status not published: {e}");
                }
                last = Some(status);
                last_sent = tokio::time::Instant::now();
            }
        }
    }
}

/// The rotation task: walks the active set, one slot per notice, `dwell`
/// per slot (or until the UI, when it paces the rotation, says the slot's
/// pages are done), cut short by an urgent interruption or when the notice
/// shown leaves the active set.
struct RotationTask {
    screen: String,
    dwell: Duration,
    pacer: Option<mpsc::UnboundedReceiver<schedule::Key>>,
    catalog: watch::Receiver<Catalog>,
    showing: watch::Sender<Option<Showing>>,
    cancel: CancellationToken,
}

impl RotationTask {
    async fn run(self) {
        let RotationTask {
            screen,
            dwell,
            mut pacer,
            mut catalog,
            showing,
            cancel,
        } = self;
        let mut rotation = Rotation::new();
        let mut idle_logged = false;
        loop {
            let now = OffsetDateTime::now_utc();
            let (slot, count, deadline, title) = {
                let cat = catalog.borrow_and_update();
                let active = schedule::active_set(cat.items.values(), &screen, now);
                let slot = rotation.next(&active);
                let title = slot
                    .as_ref()
                    .and_then(|k| cat.items.get(&k.0))
                    .map(|i| format!("[{}] {}", i.category.label_zh(), printable(&i.title)));
                (
                    slot,
                    active.len(),
                    schedule::next_deadline(cat.items.values(), &screen, now),
                    title,
                )
            };
            match &slot {
                Some((id, version)) => {
                    idle_logged = false;
                    tracing::info!(target: "rotation", "showing {id} v{version} of {count} active: {}", title.unwrap_or_default());
                }
                None if !idle_logged => {
                    idle_logged = true;
                    tracing::info!(target: "rotation", "nothing to show");
                }
                None => {}
            }
            showing.send_replace(slot.clone().map(|(id, version)| Showing { id, version }));
            let slot_end = tokio::time::Instant::now()
                + if pacer.is_some() {
                    dwell * MAX_SLOT_DWELLS
                } else {
                    dwell
                };
            let window_change = deadline.map(|d| {
                let wait = (d - now).try_into().unwrap_or(Duration::ZERO);
                tokio::time::Instant::now() + wait
            });
            // Wait out the slot unless something must cut it short.
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(slot_end), if slot.is_some() => break,
                    done = recv_opt(&mut pacer) => match done {
                        // The UI showed every page of this slot's notice.
                        Some(key) if Some(&key) == slot.as_ref() => break,
                        Some(_) => {}
                        // The UI is gone: fall back to the dwell time.
                        None => pacer = None,
                    },
                    _ = sleep_until_opt(window_change) => break,
                    changed = catalog.changed() => {
                        if changed.is_err() { return; }
                        let cat = catalog.borrow_and_update();
                        let now = OffsetDateTime::now_utc();
                        let active = schedule::active_set(cat.items.values(), &screen, now);
                        let still_shown = slot.as_ref().is_some_and(|(id, v)| active.iter().any(|i| &i.id == id && i.version == *v));
                        if rotation.should_interrupt(&active) || !still_shown {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The media task: keeps the media of current and upcoming notices in the
/// cache. It works out which media they name (reading bodies through a
/// read-only connection, off the async threads) and hands the list to the
/// fetcher.
struct MediaTask {
    config: Config,
    catalog: watch::Receiver<Catalog>,
    ready: watch::Sender<u64>,
    cancel: CancellationToken,
}

impl MediaTask {
    async fn run(self) {
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
        let mut known: HashMap<schedule::Key, Vec<Media>> = HashMap::new();
        loop {
            let now = OffsetDateTime::now_utc();
            let current: Vec<schedule::Key> = catalog
                .borrow_and_update()
                .items
                .values()
                .filter(|i| {
                    i.status == crate::protocol::Status::Active
                        && i.targets(&config.screen.id)
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
        let Some(envelope) = store.envelope(&key.0, key.1)? else {
            continue;
        };
        let notice = Notice::from_envelope(&envelope).map_err(anyhow::Error::msg)?;
        out.push((key, notice.media));
    }
    Ok(out)
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Category, Priority, Status};
    use crate::schedule::Item;

    fn item(id: &str, priority: Priority) -> Item {
        let now = OffsetDateTime::now_utc();
        Item {
            id: id.into(),
            version: 1,
            category: Category::Affairs,
            priority,
            status: Status::Active,
            title: id.into(),
            valid_from: now - time::Duration::hours(1),
            valid_until: now + time::Duration::days(1),
            screens: vec![],
        }
    }

    fn catalog(items: &[Item]) -> Catalog {
        Catalog {
            items: items.iter().map(|i| (i.id.clone(), i.clone())).collect(),
            ..Catalog::default()
        }
    }

    /// The rotation on virtual time, paced by a UI: a slot lasts until the UI
    /// says its pages are done (however long that takes), `high` notices come
    /// twice per cycle, an urgent notice cuts the slot short at once, and a
    /// UI that says nothing still gets a new slot after `MAX_SLOT_DWELLS`.
    #[tokio::test(start_paused = true)]
    async fn rotation_paced_by_the_ui_on_virtual_time() {
        let dwell = Duration::from_secs(12);
        let (catalog_tx, catalog_rx) = watch::channel(catalog(&[
            item("a", Priority::Normal),
            item("b", Priority::High),
            item("c", Priority::Normal),
        ]));
        let (showing_tx, mut showing_rx) = watch::channel(None);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(
            RotationTask {
                screen: "lobby".into(),
                dwell,
                pacer: Some(done_rx),
                catalog: catalog_rx,
                showing: showing_tx,
                cancel: cancel.clone(),
            }
            .run(),
        );
        let mut next = async || -> String {
            showing_rx.changed().await.unwrap();
            showing_rx.borrow_and_update().as_ref().unwrap().id.clone()
        };
        let mut order = vec![next().await];
        for _ in 0..7 {
            let id = order.last().unwrap().clone();
            // A notice of three pages: the UI takes 3 dwells, then says so.
            tokio::time::sleep(dwell * 3).await;
            done_tx.send((id, 1)).unwrap();
            order.push(next().await);
        }
        let b = order.iter().filter(|id| *id == "b").count();
        let a = order.iter().filter(|id| *id == "a").count();
        assert_eq!(b, 2 * a, "high twice as often: {order:?}");

        // An urgent notice arrives mid-slot: it is shown at once.
        let started = tokio::time::Instant::now();
        catalog_tx.send_modify(|c| {
            let urgent = item("u", Priority::Urgent);
            c.items.insert("u".into(), urgent);
        });
        assert_eq!(next().await, "u");
        assert!(started.elapsed() < Duration::from_millis(10));

        // The UI says nothing: the slot still ends, after MAX_SLOT_DWELLS.
        let started = tokio::time::Instant::now();
        let after = next().await;
        assert_ne!(after, "u", "urgent takes every other slot, not every slot");
        assert_eq!(started.elapsed(), dwell * MAX_SLOT_DWELLS);
        cancel.cancel();
        task.await.unwrap();
    }
}
