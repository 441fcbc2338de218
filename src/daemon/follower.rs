//! The office's follow of its own scopes: a screen's intake without a
//! screen. It subscribes to each scope's notices and manifest the way a
//! screen does (`mqtt::SessionTask`, with its manifest catch-up), verifies
//! every message with the screens' own code (`Follows::verify` in the
//! `IngestWorker`) and keeps what it accepts in a screen's store, so that
//! the office's public pages show exactly what a screen would.
//!
//! It publishes nothing: no status, no will, no commands taken. It uses a
//! clean session and a client id of its own each start, so that the broker
//! sends every retained message again and no session is left behind.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ingest::{IngestWorker, check_stored};
use crate::app::{Failures, Tasks};
use crate::mqtt::{self, Connect, Counters, Link};
use crate::protocol::Follows;
use crate::protocol::command::CommandKeys;
use crate::store::{Catalog, Store};

/// How long shutdown waits for the follower's tasks in total.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

/// Messages fetched by exact topic per batch of catch-up (a screen's default).
const FETCH_BATCH: usize = 50;

/// A running follow.
pub struct Follower {
    /// What the follow store holds; changes after every commit.
    pub catalog: watch::Receiver<Catalog>,
    /// Whether the broker connection is up.
    pub connected: watch::Receiver<bool>,
    /// Where a task that fails is reported.
    pub failures: Option<Failures>,
    cancel: CancellationToken,
    stop_event_loop: CancellationToken,
    session: JoinHandle<()>,
    event_loop: JoinHandle<()>,
    ingest: std::thread::JoinHandle<()>,
    relay: mqtt::Guard,
}

impl Follower {
    /// Opens (creating) the store at `store`, checks what it holds under
    /// `follows` as a screen does at start, and starts following through
    /// `connect` (whose session, will and acknowledgement settings are
    /// replaced by the follower's own).
    pub async fn start(
        store: &std::path::Path,
        follows: Follows,
        mut connect: Connect,
    ) -> anyhow::Result<Follower> {
        crate::tls::install_crypto_provider();
        let path = store;
        let mut store = Store::open(path)
            .with_context(|| format!("opening the follow store {}", path.display()))?;
        let refused = check_stored(&mut store, &follows)?;
        if refused > 0 {
            tracing::warn!(
                "{refused} stored notices of the follow store failed their check and are fetched again"
            );
        }
        let initial = store.load_catalog()?;
        tracing::info!(
            "follow store {} holds {} notices of {} scopes",
            path.display(),
            initial.items.len(),
            follows.all().len()
        );
        connect.clean_session = true;
        connect.manual_acks = true;
        connect.will = None;
        let (client, eventloop, relay) = connect.client()?;

        let cancel = CancellationToken::new();
        let stop_event_loop = CancellationToken::new();
        let (catalog_tx, catalog_rx) = watch::channel(initial);
        let (connected_tx, connected_rx) = watch::channel(false);
        let (publish_tx, publish_rx) = mpsc::unbounded_channel();
        let (link_tx, link_rx) = mpsc::unbounded_channel::<Link>();
        // Nobody sends resyncs or takes commands: the office subscribes to
        // no command topic, and a command that came anyway is refused,
        // since no key may sign one here.
        let (_resync_tx, resync_rx) = mpsc::unbounded_channel();
        let (commands_tx, _) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let (tasks, failures) = Tasks::new(cancel.clone());
        let worker = IngestWorker {
            store,
            client: client.clone(),
            follows: follows.clone(),
            screen: String::new(),
            command_keys: CommandKeys {
                office: Vec::new(),
                operator: Vec::new(),
            },
            commands: commands_tx,
            catalog: catalog_tx,
            counters: counters.clone(),
            runtime: tokio::runtime::Handle::current(),
            cancel: cancel.clone(),
        };
        let ingest = tasks
            .spawn_thread("follow ingest", move || {
                worker.run(publish_rx);
                Ok(())
            })
            .context("starting the follow ingest thread")?;
        let event_loop = mqtt::EventLoopTask {
            eventloop,
            publishes: publish_tx,
            links: link_tx,
            discard_first: None,
            brokers: connect.brokers.urls().len(),
            stop: stop_event_loop.clone(),
        };
        let event_loop = tasks.spawn("follow MQTT event loop", async move {
            event_loop.run().await;
            Ok(())
        });
        let session = mqtt::SessionTask {
            client,
            follows,
            command_topics: Vec::new(),
            resync: resync_rx,
            links: link_rx,
            catalog: catalog_rx.clone(),
            connected: connected_tx,
            counters,
            batch: FETCH_BATCH,
            offline_status: None,
            cancel: cancel.clone(),
        };
        let session = tasks.spawn("follow MQTT session", async move {
            session.run().await;
            Ok(())
        });
        Ok(Follower {
            catalog: catalog_rx,
            connected: connected_rx,
            failures: Some(failures),
            cancel,
            stop_event_loop,
            session,
            event_loop,
            ingest,
            relay,
        })
    }

    /// Stops the follow and waits for it, within a deadline.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        self.cancel.cancel();
        // The session disconnects through the event loop.
        let _ = tokio::time::timeout_at(deadline - Duration::from_secs(1), self.session).await;
        let mut event_loop = self.event_loop;
        if tokio::time::timeout_at(deadline - Duration::from_millis(500), &mut event_loop)
            .await
            .is_err()
        {
            self.stop_event_loop.cancel();
            let _ = tokio::time::timeout_at(deadline, event_loop).await;
        }
        self.relay.close(Duration::from_millis(300)).await;
        let ingest = self.ingest;
        let joined = tokio::task::spawn_blocking(move || ingest.join());
        if tokio::time::timeout_at(deadline + Duration::from_secs(1), joined)
            .await
            .is_err()
        {
            tracing::warn!("the follow ingest thread did not finish in time");
        }
    }
}
