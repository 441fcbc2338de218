//! `gongkaid`: the tasks of a screen, wired together and shut down together.
//!
//! - the *ingest worker* (a thread: it owns the SQLite store) verifies each
//!   publish, commits batches, updates the in-memory [`Catalog`] and only then
//!   acknowledges to the broker;
//! - the MQTT *event loop* and *session* tasks (see [`crate::mqtt`]);
//! - the *status* task publishes section 6 status, coalesced;
//! - the *rotation* task walks the active set on the clock and says what is
//!   showing (the UI, where there is one, follows it); each slot that ends
//!   is a record of the proof-of-play chain, which the *plays* task commits
//!   and the *plays sync* task sends to the office (see [`crate::sync`]);
//! - the *ui io* task reads, decodes and commits for the UI (see
//!   [`crate::ui_io`]), so the UI thread only draws.
//!
//! Every task watches one cancellation token and is joined with a deadline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{LastWill, QoS};
use time::OffsetDateTime;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{Failures, Tasks};
use crate::config::Config;
use crate::media::MediaCache;
use crate::mqtt::{self, Connect, Counters, Link};
use crate::protocol::TopicSpace;
use crate::schedule;
use crate::status::{self, Identity};
use crate::store::outbox::OutboxCounts;
use crate::store::{Catalog, Store};

mod command_task;
mod follower;
mod ingest;
mod media_task;
mod rotation;
mod status_task;

use command_task::{CommandTask, HeadlessShooter, Shooter};
use ingest::{IngestWorker, check_stored};

pub use command_task::{IDENTIFY_FOR, ShotRequest};
pub use follower::Follower;
use media_task::MediaTask;
use rotation::RotationTask;
use status_task::StatusTask;

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
    pub showing: watch::Receiver<Option<schedule::Key>>,
    /// On, or dark in quiet hours.
    pub display: watch::Receiver<schedule::Display>,
    /// The rotation task's heartbeat (the watchdog's evidence, headless).
    pub heartbeat: crate::watchdog::Heartbeat,
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
        let (daemon, parts) = Self::start_inner(config, pacer).await?;
        let UiParts {
            media,
            io,
            screenshots,
            identify,
        } = parts;
        let link = UiLink {
            screenshots,
            identify,
            catalog: daemon.catalog.clone(),
            connected: daemon.connected.clone(),
            showing: daemon.showing.clone(),
            display: daemon.display.clone(),
            ui_heartbeat: crate::watchdog::Heartbeat::new(),
            media,
            slot_done: done_tx,
            io,
        };
        Ok((daemon, link))
    }

    async fn start_inner(
        config: Config,
        pacer: Option<mpsc::UnboundedReceiver<FromUi>>,
    ) -> anyhow::Result<(Daemon, UiParts)> {
        crate::tls::install_crypto_provider();
        let pacer_present = pacer.is_some();
        let mut store = Store::open(&config.store.path)
            .with_context(|| format!("opening the store {}", config.store.path.display()))?;
        let topics = config.topics();
        let follows = config.follows();
        let refused = check_stored(&mut store, &follows)?;
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
            "store {} holds {} notices (manifest version {}; {} scopes followed)",
            config.store.path.display(),
            initial.items.len(),
            initial
                .manifest(&config.screen.community)
                .map_or(0, |m| m.version),
            follows.all().len()
        );

        let connect = screen_connect(&config, &topics)?;
        let (client, eventloop, relay) = connect.client()?;

        let cancel = CancellationToken::new();
        let stop_event_loop = CancellationToken::new();
        let (catalog_tx, catalog_rx) = watch::channel(initial);
        let (connected_tx, connected_rx) = watch::channel(false);
        let (showing_tx, showing_rx) = watch::channel(None);
        let (display_tx, display_rx) = watch::channel(schedule::Display::On);
        let heartbeat = crate::watchdog::Heartbeat::new();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (resync_tx, resync_rx) = mpsc::unbounded_channel();
        let (identify_tx, identify_rx) = watch::channel(false);
        let (last_command_tx, last_command_rx) = watch::channel(None);
        let (plays_tx, plays_rx) = mpsc::unbounded_channel();
        let (plays_head_tx, plays_head_rx) =
            watch::channel(crate::store::plays::PlayLog::open(&config.store.path)?.head()?);
        let (plays_sent_tx, plays_sent_rx) =
            watch::channel(crate::sync::plays::PlaysSent::default());
        let (publish_tx, publish_rx) = mpsc::unbounded_channel();
        let (link_tx, link_rx) = mpsc::unbounded_channel::<Link>();
        let counters = Arc::new(Counters::default());

        let (tasks, failures) = Tasks::new(cancel.clone());
        let ingest = {
            let worker = IngestWorker {
                store,
                client: client.clone(),
                follows: follows.clone(),
                screen: config.screen.id.clone(),
                command_keys: crate::protocol::command::CommandKeys {
                    office: config.trust.office.clone(),
                    operator: config.trust.operator.clone(),
                },
                commands: command_tx,
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
            brokers: connect.brokers.urls().len(),
            stop: stop_event_loop.clone(),
        };
        let event_loop = tasks.spawn("MQTT event loop", async move {
            event_loop.run().await;
            Ok(())
        });
        let session = mqtt::SessionTask {
            client: client.clone(),
            follows: follows.clone(),
            command_topics: vec![topics.screen_command(&config.screen.id), topics.command()],
            resync: resync_rx,
            links: link_rx,
            catalog: catalog_rx.clone(),
            connected: connected_tx,
            counters: counters.clone(),
            batch: config.mqtt.fetch_batch,
            offline_status: Some((
                topics.status(&config.screen.id),
                status::offline(&config.screen.id, &config.screen.community),
            )),
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
                upper_scopes: config.follow.iter().map(|f| f.scope.clone()).collect(),
                mode: config.screen.mode.as_str(),
                started_at: OffsetDateTime::now_utc(),
            },
            catalog: catalog_rx.clone(),
            showing: showing_rx.clone(),
            display: display_rx.clone(),
            identify: identify_rx.clone(),
            last_command: last_command_rx,
            plays: plays_head_rx.clone(),
            plays_sent: plays_sent_rx,
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
        let plays_sync = crate::sync::plays::PlaysSyncTask {
            store: config.store.path.clone(),
            office: config.office.clone(),
            screen: config.screen.id.clone(),
            community: config.screen.community.clone(),
            head: plays_head_rx,
            sent: plays_sent_tx,
            cancel: cancel.clone(),
        };
        let rotation = RotationTask {
            screen: config.audience(),
            quiet: config.display.quiet.clone(),
            display: display_tx,
            heartbeat: heartbeat.clone(),
            plays: plays_tx,
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
        // Screenshots: the UI draws them when there is one.
        let (shots_tx, shots_rx) = mpsc::unbounded_channel();
        let shooter = match pacer_present {
            true => Shooter::Ui(shots_tx),
            false => Shooter::Headless(Box::new(HeadlessShooter {
                config: config.clone(),
                showing: showing_rx.clone(),
                display: display_rx.clone(),
                thread: None,
            })),
        };
        let commands = CommandTask {
            commands: command_rx,
            resync: resync_tx,
            identify: identify_tx,
            last: last_command_tx,
            shooter,
            office: config.office.clone(),
            cancel: cancel.clone(),
        };
        let others = vec![
            tasks.spawn("commands", commands.run()),
            tasks.spawn(
                "plays",
                record_plays(config.store.path.clone(), plays_rx, plays_head_tx),
            ),
            tasks.spawn("plays sync", plays_sync.run()),
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
            tasks.spawn(
                "backlight",
                backlight(
                    config.display.backlight_dir.clone(),
                    display_rx.clone(),
                    cancel.clone(),
                ),
            ),
        ];
        Ok((
            Daemon {
                catalog: catalog_rx,
                connected: connected_rx,
                showing: showing_rx,
                display: display_rx,
                heartbeat,
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
            UiParts {
                media: media_rx,
                io,
                screenshots: shots_rx,
                identify: identify_rx,
            },
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

/// Appends each play that ended to the chain, committed before the next,
/// and keeps the head for the status. A commit that fails is retried; the
/// plays behind it wait in the channel.
async fn record_plays(
    path: std::path::PathBuf,
    mut plays: mpsc::UnboundedReceiver<crate::store::plays::Play>,
    head: watch::Sender<Option<crate::protocol::plays::PlayRecord>>,
) -> anyhow::Result<()> {
    let log = Arc::new(std::sync::Mutex::new(crate::store::plays::PlayLog::open(
        &path,
    )?));
    while let Some(play) = plays.recv().await {
        let mut backoff =
            crate::backoff::Retry::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let (log, play) = (log.clone(), play.clone());
            let appended = tokio::task::spawn_blocking(move || {
                log.lock().expect("play log lock").append(play)
            })
            .await?;
            match appended {
                Ok(record) => {
                    head.send_replace(Some(record));
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!("cannot append to the play chain: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    Ok(())
}

/// Follows the display state with the panel's backlight: off in quiet
/// hours, back on after. A write that fails (no permission, no device) is
/// logged; the black frame still darkens the screen.
async fn backlight(
    dir: std::path::PathBuf,
    mut display: watch::Receiver<schedule::Display>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut panel = crate::backlight::Backlight::new(&dir);
    loop {
        let on = *display.borrow_and_update() == schedule::Display::On;
        match panel.set(on) {
            Ok(0) => {}
            Ok(n) => tracing::info!("backlight of {n} devices {}", if on { "on" } else { "off" }),
            Err(e) => tracing::warn!("backlight under {}: {e}", dir.display()),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = display.changed() => if r.is_err() { break },
        }
    }
    // Never leave a panel dark when the screen stops.
    let _ = panel.set(true);
    Ok(())
}

/// The daemon's ends of what a UI takes.
struct UiParts {
    media: watch::Receiver<u64>,
    io: crate::ui_io::UiIo,
    screenshots: mpsc::UnboundedReceiver<ShotRequest>,
    identify: watch::Receiver<bool>,
}

/// What a UI needs from a running daemon.
pub struct UiLink {
    pub catalog: watch::Receiver<Catalog>,
    pub connected: watch::Receiver<bool>,
    pub showing: watch::Receiver<Option<schedule::Key>>,
    pub display: watch::Receiver<schedule::Display>,
    /// Beaten by the UI thread: in a window, the watchdog's pings depend on it.
    pub ui_heartbeat: crate::watchdog::Heartbeat,
    /// Screenshot commands: each asks for the frame on screen as PNG.
    pub screenshots: mpsc::UnboundedReceiver<ShotRequest>,
    /// `identify`: show the screen's id and network state.
    pub identify: watch::Receiver<bool>,
    /// Counts media that landed in the cache.
    pub media: watch::Receiver<u64>,
    /// Where the UI says a rotation slot has shown all its pages, and what
    /// was on the glass (see [`FromUi`]).
    pub slot_done: mpsc::UnboundedSender<FromUi>,
    /// Where the UI asks for notice bodies and images, commits feedback
    /// and looks up replies (see [`crate::ui_io`]).
    pub io: crate::ui_io::UiIo,
}

/// What the UI tells the rotation task, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum FromUi {
    /// Page `page` (from 0) of the slot's notice is on the glass.
    SlotPage { key: schedule::Key, page: usize },
    /// The slot's notice showed all its pages (or left the glass).
    SlotDone(schedule::Key),
    /// A notice a resident opened on a kiosk left the glass: a play of its
    /// own in the chain (trigger `touch`).
    Touch(crate::store::plays::Play),
}

/// A slot the UI never reports done ends after this many dwell times (the
/// kiosk is being browsed, or the UI is stuck): status stays truthful.
pub const MAX_SLOT_DWELLS: u32 = 30;

/// What the broker's session for this screen subscribes to: when it changes
/// (another broker, another scope followed), the old session is ended.
fn topics_key(config: &Config) -> String {
    let urls: Vec<String> = config.mqtt.urls.iter().map(ToString::to_string).collect();
    let filters: Vec<String> = config
        .follows()
        .all()
        .iter()
        .map(|s| s.space.notices_filter())
        .collect();
    format!(
        "{}|{}|{}",
        urls.join(","),
        filters.join(","),
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
        brokers: mqtt::Brokers::for_client(config.mqtt.urls.clone(), &config.screen.id),
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
