//! The MQTT side of a screen: the only owner of the rumqttc event loop.
//!
//! Two tasks share one `AsyncClient`:
//! - the *event loop task* only polls `EventLoop`: it forwards publishes to the
//!   ingest worker, connection changes to the session task, and sleeps with
//!   exponential backoff and jitter after a failure (rumqttc itself would retry
//!   in a tight loop). It never awaits a client call: the client's requests
//!   are served by the very loop it polls, so awaiting one there can deadlock.
//! - the *session task* reacts to connections: it (re)subscribes when the
//!   broker kept no session, asks again for what a SUBACK refused, asks for
//!   the retained manifest on every
//!   connection, and fetches notices the manifest lists but the broker did not
//!   deliver by exact-topic subscriptions at QoS 0, in bounded batches with
//!   several out at once (see [`CatchUp`]).
//!
//! Acknowledgements are manual: the ingest worker acks a publish only after
//! the store committed what it decided, so a crash means redelivery, not loss.
//!
//! A screen may list several brokers: the nodes of one cluster (NATS with
//! JetStream, EMQX), which share sessions and retained messages. It starts
//! at the node its client id picks ([`first_broker`]), so that a fleet
//! spreads over the nodes, and moves to the next node, round the list, after
//! every failure: a refused or dropped connection, or no CONNACK within
//! [`CONNECT_TIMEOUT`]. Between attempts it waits with full jitter from
//! [`FIRST_RETRY`] up to [`MAX_RETRY`], the window growing once per round
//! of the list ([`Reconnect`]). Every SUBACK code is checked, and a filter
//! the broker refused is asked for again ([`suback`]). The session stays
//! persistent, so a node that takes over finds the screen's subscriptions,
//! and the session task resubscribes only when the broker kept none. Which
//! node a connection goes to is the relay's choice ([`guard`]), since the
//! relay holds the TCP connection: rumqttc only ever sees one Unix socket.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::protocol::Follows;
use crate::store::Catalog;

pub mod guard;
pub mod suback;

pub use guard::{Guard, oversize_of};

/// Envelopes are up to 256 KiB; the topic and MQTT framing need a little more.
pub const MAX_OUTGOING_PACKET: usize = 256 * 1024 + 4096;
/// A PUBLISH from the broker longer than this reaches the client as the
/// relay's small marker instead (see [`guard`]), so that it is rejected and
/// acknowledged rather than breaking the connection on every redelivery.
pub const GUARD_LIMIT: usize = MAX_OUTGOING_PACKET;
/// What rumqttc accepts: every PUBLISH the relay passes, and room for the
/// other packets, which are small.
pub const MAX_INCOMING_PACKET: usize = GUARD_LIMIT + 1024;
/// Room for acknowledgements of every message in flight.
const REQUEST_CHANNEL: usize = 4096;
/// How long a connection to the broker, with its TLS handshake and CONNACK,
/// may take before it counts as failed and the next broker is tried. A NATS
/// cluster holds CONNECTs for about 4 s while JetStream elects a new leader
/// after losing a node: this leaves room for that, and no more.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// The wait before the first retry is drawn from zero to this (full jitter)...
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// ...and doubles with each failure up to this.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// A connection that lasted this long was a success: the next failure waits
/// the shortest time again. One that ends sooner (a broker that accepts and
/// then closes the connection) keeps the waits growing.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(60);

/// `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let tls = match url.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            other => return Err(format!("scheme {other:?} must be mqtt or mqtts")),
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("{text:?} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if url.path() != "" && url.path() != "/" {
            return Err(format!("{text:?} must not have a path"));
        }
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        Ok(Self { tls, host, port })
    }
}

/// The canonical form, `mqtt://host:port` or `mqtts://host:port`.
impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The brokers a client may use (one, or the nodes of a cluster) and which
/// of them the next connection goes to.
///
/// The position is shared by every clone, and so by every relay started
/// from one `Connect` and its clones: ending the old session on one broker
/// (see [`discard_session`]) leaves the position where that worked, and the
/// screen's connection starts there.
#[derive(Debug, Clone)]
pub struct Brokers {
    urls: Arc<[BrokerUrl]>,
    next: Arc<AtomicUsize>,
}

impl Brokers {
    /// `urls` in order, starting at `first` (modulo their number).
    ///
    /// # Panics
    /// If `urls` is empty: the configuration requires at least one.
    pub fn new(urls: Vec<BrokerUrl>, first: usize) -> Self {
        assert!(!urls.is_empty(), "at least one broker");
        let first = first % urls.len();
        Self {
            urls: urls.into(),
            next: Arc::new(AtomicUsize::new(first)),
        }
    }

    /// One broker.
    pub fn one(url: BrokerUrl) -> Self {
        Self::new(vec![url], 0)
    }

    /// A screen's brokers, starting at the one its client id picks (see
    /// [`first_broker`]), so that a fleet spreads over a cluster's nodes.
    pub fn for_client(urls: Vec<BrokerUrl>, client_id: &str) -> Self {
        let first = first_broker(client_id, urls.len());
        Self::new(urls, first)
    }

    pub fn urls(&self) -> &[BrokerUrl] {
        &self.urls
    }

    /// Where the next connection goes, as a position in [`Brokers::urls`].
    pub fn position(&self) -> usize {
        self.next.load(Ordering::Relaxed) % self.urls.len()
    }

    /// The broker the next connection goes to.
    pub fn current(&self) -> &BrokerUrl {
        &self.urls[self.position()]
    }

    /// After a failure: the next connection goes to the next broker, round
    /// the list.
    pub fn advance(&self) {
        self.next.fetch_add(1, Ordering::Relaxed);
    }
}

/// The broker a client starts with: a stable hash of its id (FNV-1a, which
/// no Rust release changes), modulo the number of brokers. Screens of a
/// fleet have different ids, so they spread over a cluster's nodes instead
/// of all crowding the first one listed.
pub fn first_broker(client_id: &str, brokers: usize) -> usize {
    if brokers == 0 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in client_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % brokers as u64) as usize
}

/// How to reach and log in to a broker.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Where to connect, and where the next connection goes (shared by
    /// clones: see [`Brokers`]).
    pub brokers: Brokers,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
    /// `false` for screens: the broker keeps subscriptions and queued messages.
    pub clean_session: bool,
    /// Screens acknowledge a publish only after committing it; rumqttc would
    /// otherwise acknowledge on receipt.
    pub manual_acks: bool,
    pub will: Option<LastWill>,
}

impl Connect {
    /// A throwaway connection for the office CLI.
    pub fn cli(
        url: &str,
        username: Option<String>,
        password: Option<String>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            brokers: Brokers::one(BrokerUrl::parse(url).map_err(anyhow::Error::msg)?),
            client_id: format!("gongkai-cli-{}", uuid::Uuid::new_v4().simple()),
            username,
            password,
            ca_file: None,
            clean_session: true,
            manual_acks: false,
            will: None,
        })
    }

    /// A client, its event loop and the relay it talks to the broker through
    /// (see [`guard`]); call inside a tokio runtime. Keep the `Guard` as long
    /// as the event loop: dropping it ends the connection.
    pub fn client(&self) -> anyhow::Result<(AsyncClient, EventLoop, Guard)> {
        let any_tls = self.brokers.urls().iter().any(|u| u.tls);
        let upstream = guard::Upstream {
            brokers: self.brokers.clone(),
            tls: match any_tls {
                true => Some(Arc::new(crate::tls::client_config(
                    self.ca_file.as_deref(),
                )?)),
                false => None,
            },
            connect_timeout: CONNECT_TIMEOUT,
        };
        let guard = Guard::start(upstream, GUARD_LIMIT).context("starting the broker relay")?;
        let (client, mut eventloop) =
            AsyncClient::new(self.options(guard.socket())?, REQUEST_CHANNEL);
        // rumqttc's timeout covers its connection to the relay and the
        // CONNACK, so it is the whole budget of one attempt.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        eventloop.set_network_options(network);
        Ok((client, eventloop, guard))
    }

    /// rumqttc's options for a connection through the relay at `socket`:
    /// plain MQTT over a Unix socket, since the relay holds the TCP and TLS
    /// connection to the broker.
    fn options(&self, socket: &Path) -> anyhow::Result<MqttOptions> {
        let mut o = MqttOptions::new(self.client_id.clone(), socket.to_string_lossy(), 0);
        o.set_transport(Transport::Unix);
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(self.clean_session)
            .set_manual_acks(self.manual_acks)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
            .set_request_channel_capacity(REQUEST_CHANNEL)
            .set_inflight(100);
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(will) = &self.will {
            o.set_last_will(will.clone());
        }
        Ok(o)
    }
}

/// What the event loop task tells the session task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connected {
        session_present: bool,
    },
    Disconnected {
        error: String,
    },
    /// rumqttc numbered the oldest SUBSCRIBE not numbered yet.
    SubscribeSent {
        pkid: u16,
    },
    /// A SUBACK: whether each filter of SUBSCRIBE `pkid` was granted.
    SubscribeAcked {
        pkid: u16,
        granted: Vec<bool>,
    },
}

/// When to try again after a failed attempt or a lost connection: full
/// jitter from [`FIRST_RETRY`] up to [`MAX_RETRY`], starting over only after
/// a connection that lasted [`STABLE_CONNECTION`]. Each attempt goes to the
/// next broker of the list, and the wait grows once per round of the list,
/// not per attempt: a screen whose node died tries the others within a
/// second or so each (a node that refuses at once costs nothing), while a
/// fleet that lost every broker still spreads its returns over a growing
/// window. Pure but for the random draw: `now` is passed in.
#[derive(Debug, Clone)]
pub struct Reconnect {
    backoff: Backoff,
    brokers: u32,
    failures: u32,
    up_since: Option<Instant>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::new(1)
    }
}

impl Reconnect {
    /// For a list of `brokers` (at least one).
    pub fn new(brokers: usize) -> Self {
        Self {
            backoff: Backoff {
                first: FIRST_RETRY,
                cap: MAX_RETRY,
            },
            brokers: u32::try_from(brokers.max(1)).unwrap_or(u32::MAX),
            failures: 0,
            up_since: None,
        }
    }

    /// A CONNACK arrived.
    pub fn connected(&mut self, now: Instant) {
        self.up_since = Some(now);
    }

    /// An attempt failed or the connection was lost: the wait before the
    /// next attempt.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if self
            .up_since
            .take()
            .is_some_and(|since| now.saturating_duration_since(since) >= STABLE_CONNECTION)
        {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.round(), &mut rand::thread_rng())
    }

    /// Failures counted since the last stable connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The longest wait after the next failure.
    pub fn ceiling(&self) -> Duration {
        let next = Self {
            failures: self.failures.saturating_add(1),
            ..self.clone()
        };
        self.backoff.ceiling(next.round())
    }

    /// The round of the list the last failure was in, from 1.
    fn round(&self) -> u32 {
        self.failures.saturating_sub(1) / self.brokers + 1
    }
}

/// Ends the session the broker keeps for `connect`'s client id, with its
/// subscriptions and queued messages: a clean connection, then a clean
/// disconnect. In MQTT 3.1.1 a session started clean lasts only as long as
/// its connection, so a screen that wants a fresh *persistent* session first
/// ends the old one this way and then connects with `clean_session = false`.
/// It tries the broker `connect.brokers` points at; the caller moves on to
/// the next after a failure.
pub async fn discard_session(connect: &Connect) -> anyhow::Result<()> {
    let clean = Connect {
        clean_session: true,
        manual_acks: false,
        will: None,
        ..connect.clone()
    };
    let (client, mut eventloop, _relay) = clean.client()?;
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match eventloop.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    return Ok::<(), rumqttc::ConnectionError>(());
                }
                _ => continue,
            }
        }
    })
    .await;
    let broker = connect.brokers.current();
    match connected {
        Err(_) => bail!(
            "{broker} did not answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ),
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context(broker.to_string())),
        Ok(Ok(())) => {}
    }
    // The request channel has room: this only queues the DISCONNECT, which
    // the polls below send.
    client.disconnect().await?;
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, async {
        while let Ok(event) = eventloop.poll().await {
            if event == Event::Outgoing(rumqttc::Outgoing::Disconnect) {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// The event loop task: the only poller of the rumqttc `EventLoop`.
pub struct EventLoopTask {
    pub eventloop: EventLoop,
    /// Where incoming publishes go (the ingest worker).
    pub publishes: mpsc::UnboundedSender<Publish>,
    /// Where connection changes go (the session task).
    pub links: mpsc::UnboundedSender<Link>,
    /// End the old session first (see [`discard_session`]), retrying until
    /// a broker answers, before the first connection.
    pub discard_first: Option<Connect>,
    /// How many brokers the client goes round (see [`Reconnect`]).
    pub brokers: usize,
    pub stop: CancellationToken,
}

impl EventLoopTask {
    /// Polls the event loop until `stop` fires or the client disconnected.
    pub async fn run(self) {
        let EventLoopTask {
            eventloop,
            publishes,
            links,
            discard_first,
            brokers,
            stop,
        } = self;
        let mut reconnect = Reconnect::new(brokers);
        if let Some(connect) = discard_first {
            loop {
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    result = discard_session(&connect) => result,
                };
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        // The next attempt, and the screen's connection
                        // after a success, go to the next broker.
                        connect.brokers.advance();
                        let delay = reconnect.failed(Instant::now());
                        tracing::warn!(
                            "broker connection (ending the old session): {e:#}; retrying in {:.1} s",
                            delay.as_secs_f64()
                        );
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            // Ending the session was a success: the first wait is short again.
            reconnect = Reconnect::new(brokers);
        }
        poll_event_loop(eventloop, publishes, links, stop, reconnect).await
    }
}

/// Polls until `stop` or a clean disconnect. After each error it waits, then
/// polls again, which makes rumqttc connect to the relay anew; the relay
/// takes every connection after its first one to the next broker (see
/// [`guard`]), so each failure moves the screen round the list.
async fn poll_event_loop(
    mut eventloop: EventLoop,
    publishes: mpsc::UnboundedSender<Publish>,
    links: mpsc::UnboundedSender<Link>,
    stop: CancellationToken,
    mut reconnect: Reconnect,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                reconnect.connected(Instant::now());
                let _ = links.send(Link::Connected {
                    session_present: ack.session_present,
                });
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                // Unbounded is safe: the broker sends no more than its in-flight
                // window of unacknowledged QoS 1 messages.
                if publishes.send(publish).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Subscribe(pkid))) => {
                let _ = links.send(Link::SubscribeSent { pkid });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .map(|code| matches!(code, rumqttc::SubscribeReasonCode::Success(_)))
                    .collect();
                let _ = links.send(Link::SubscribeAcked {
                    pkid: ack.pkid,
                    granted,
                });
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                let delay = reconnect.failed(Instant::now());
                tracing::warn!(
                    "broker connection: {error}; retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                let _ = links.send(Link::Disconnected {
                    error: error.to_string(),
                });
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Manifest catch-up: which exact topics to fetch next, in batches.
/// Pure state; the session task carries out what it returns.
///
/// Topics are opaque here: whatever the session task lists as lacking (the
/// pages of a held index, the notices the manifests list). Up to `window`
/// batches are out at once, and a batch that is done is replaced at once, so
/// that fetching costs no round trip per batch.
#[derive(Debug)]
pub struct CatchUp {
    batch: usize,
    window: usize,
    in_flight: Vec<Batch>,
    /// Exact subscriptions of an earlier connection, to drop at the next step.
    stale: Vec<String>,
    /// Topics asked for in this round; each is asked for once per round.
    attempted: HashSet<String>,
    /// A round runs from its first batch until every missing topic was asked for.
    in_round: bool,
    pause: Duration,
    pause_until: Option<Instant>,
}

/// One SUBSCRIBE's worth of exact topics.
#[derive(Debug)]
struct Batch {
    topics: Vec<String>,
    /// How many of `topics` were still lacking at the last step.
    waiting: usize,
    /// When the batch is given up unless more of it arrives first.
    deadline: Instant,
}

/// What the session task should do for catch-up: drop the exact
/// subscriptions of finished batches, then subscribe the new batches, one
/// SUBSCRIBE each.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CatchUpStep {
    pub unsubscribe: Vec<String>,
    pub subscribe: Vec<Vec<String>>,
}

/// Catch-up batches out at once: ten SUBSCRIBEs of `fetch_batch` (default
/// 50) exact topics. One batch at a time cost a round trip and a settling of
/// the broker's window per batch: 10,000 notices on a stock Mosquitto took
/// 20 to 30 s that way, about 5 s with ten out. Mosquitto drops QoS 0
/// messages for a client that has `max_queued_messages` (default 1000)
/// packets waiting to be written, so 500 topics out stays well inside it.
const FETCH_WINDOW: usize = 10;
/// Catch-up fetches at QoS 0. The manifest is the repair mechanism: a
/// fetched copy lost before its commit (a crash, a dropped connection, a
/// broker that dropped it) is still missing and is fetched again, so the
/// fetch needs no acknowledgement. At QoS 0 the copies bypass Mosquitto's
/// in-flight window (default 20) and its queue limit (past which it drops
/// QoS 1 messages), and cost NATS no JetStream consumer: each QoS 1
/// subscription is one, and fetching the 7 pages of an index took 3.7 s at
/// QoS 1 on a 3-node cluster and 0.17 s at QoS 0. Live notices still come
/// on the QoS 1 wildcard subscription, acknowledged after their commit.
const FETCH_QOS: QoS = QoS::AtMostOnce;
/// How long a batch may go without anything of it arriving before it is
/// given up (the broker may lack some).
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// After every missing topic was asked for once, wait before the next round;
/// the pause doubles each round the broker still lacks them, up to the maximum.
const ROUND_PAUSE: Duration = Duration::from_secs(5);
const MAX_ROUND_PAUSE: Duration = Duration::from_secs(300);

impl CatchUp {
    /// `batch` topics per SUBSCRIBE, at most `window` batches out at once.
    pub fn new(batch: usize, window: usize) -> Self {
        Self {
            batch: batch.max(1),
            window: window.max(1),
            in_flight: Vec::new(),
            stale: Vec::new(),
            attempted: HashSet::new(),
            in_round: false,
            pause: ROUND_PAUSE,
            pause_until: None,
        }
    }

    /// A new connection: every missing topic may be asked for again, once
    /// messages settle. The batches out are forgotten, and their exact
    /// subscriptions dropped at the next step (a kept session would hold them).
    pub fn restart(&mut self) {
        let mut stale = std::mem::take(&mut self.stale);
        stale.extend(self.in_flight.drain(..).flat_map(|b| b.topics));
        *self = Self {
            stale,
            ..Self::new(self.batch, self.window)
        };
    }

    /// What the manifests list changed (a new version, a page): everything
    /// still missing may be asked for again, without a pause. The batches
    /// out stay out, and what they ask for is not asked for twice.
    pub fn renew(&mut self) {
        self.attempted = self
            .in_flight
            .iter()
            .flat_map(|b| b.topics.iter().cloned())
            .collect();
        self.pause = ROUND_PAUSE;
        self.pause_until = None;
    }

    /// `missing` is the current list of topics to fetch; `quiet` says that
    /// messages stopped flowing for a while. A round starts only when quiet,
    /// so that the retained flood of a wildcard subscription settles first;
    /// within a round, a batch that is done is replaced at once.
    pub fn step(&mut self, missing: &[String], quiet: bool, now: Instant) -> CatchUpStep {
        let mut step = CatchUpStep {
            unsubscribe: std::mem::take(&mut self.stale),
            subscribe: Vec::new(),
        };
        if !self.in_flight.is_empty() {
            let lacking: HashSet<&str> = missing.iter().map(String::as_str).collect();
            self.in_flight.retain_mut(|b| {
                let waiting = b
                    .topics
                    .iter()
                    .filter(|t| lacking.contains(t.as_str()))
                    .count();
                if waiting < b.waiting {
                    b.waiting = waiting;
                    b.deadline = now + BATCH_TIMEOUT;
                }
                let finished = waiting == 0 || now >= b.deadline;
                if finished {
                    step.unsubscribe.append(&mut b.topics);
                }
                !finished
            });
        }
        if missing.is_empty() {
            self.attempted.clear();
            self.in_round = false;
            self.pause = ROUND_PAUSE;
            self.pause_until = None;
            return step;
        }
        if !self.in_round && (!quiet || self.pause_until.is_some_and(|p| now < p)) {
            return step;
        }
        self.in_round = true;
        let room = (self.window - self.in_flight.len()) * self.batch;
        let next: Vec<&String> = missing
            .iter()
            .filter(|t| !self.attempted.contains(*t))
            .take(room)
            .collect();
        for topics in next.chunks(self.batch) {
            let topics: Vec<String> = topics.iter().map(|t| (*t).clone()).collect();
            self.attempted.extend(topics.iter().cloned());
            self.in_flight.push(Batch {
                waiting: topics.len(),
                topics: topics.clone(),
                deadline: now + BATCH_TIMEOUT,
            });
            step.subscribe.push(topics);
        }
        if self.in_flight.is_empty() {
            // Everything missing was asked for once: the broker lacks the rest.
            self.attempted.clear();
            self.in_round = false;
            self.pause_until = Some(now + self.pause);
            self.pause = (self.pause * 2).min(MAX_ROUND_PAUSE);
        }
        step
    }
}

/// Shared between tasks: how many publishes the ingest worker has handled.
#[derive(Debug, Default)]
pub struct Counters {
    pub handled: AtomicU64,
    /// Notices asked for by exact-topic subscription because the manifest
    /// listed them and the broker had not delivered them.
    pub fetched: AtomicU64,
}

/// The session task: subscriptions and manifest catch-up. On shutdown it
/// publishes the offline status itself (a clean disconnect sends no will)
/// and disconnects.
pub struct SessionTask {
    pub client: AsyncClient,
    /// Every scope the screen follows: its notices and manifest are
    /// subscribed, and what its manifest lists is fetched.
    pub follows: Follows,
    /// The home community's command topics (section 5): this screen's and
    /// every screen's.
    pub command_topics: Vec<String>,
    /// A `resync` command: drop the notice subscriptions and subscribe again.
    pub resync: mpsc::UnboundedReceiver<()>,
    /// Connection changes from the event loop task.
    pub links: mpsc::UnboundedReceiver<Link>,
    pub catalog: watch::Receiver<Catalog>,
    /// Whether the broker connection is up, for the status and the UI.
    pub connected: watch::Sender<bool>,
    pub counters: Arc<Counters>,
    /// Exact-topic subscriptions per catch-up batch.
    pub batch: usize,
    /// The topic and payload of the goodbye; `None` for a client that
    /// publishes no status (the office's follow).
    pub offline_status: Option<(String, Vec<u8>)>,
    pub cancel: CancellationToken,
}

impl SessionTask {
    pub async fn run(self) {
        let SessionTask {
            client,
            follows,
            command_topics,
            mut resync,
            mut links,
            mut catalog,
            connected,
            counters,
            batch,
            offline_status,
            cancel,
        } = self;
        let mut catch_up = CatchUp::new(batch, FETCH_WINDOW);
        let mut is_connected = false;
        let versions = |c: &Catalog| -> Vec<(String, u64, usize)> {
            c.manifests
                .iter()
                .map(|(scope, m)| (scope.clone(), m.version, m.entries.len()))
                .collect()
        };
        let mut manifest_version = versions(&catalog.borrow());
        let mut last_handled = counters.handled.load(Ordering::Relaxed);
        // Catch-up waits until the subscriptions of a connection are acknowledged
        // and a whole tick passed without a message: the retained flood of the
        // wildcard subscription has then settled, and fetching what it lacked
        // will not race it.
        let mut subacks = suback::Subacks::default();
        let mut settled = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                link = links.recv() => match link {
                    None => break,
                    Some(Link::Connected { session_present }) => {
                        is_connected = true;
                        tracing::info!("connected to the broker (session kept: {session_present})");
                        subacks.reconnected(session_present, Instant::now());
                        subscribe(&client, &follows, &command_topics, session_present, &mut subacks).await;
                        settled = false;
                        catch_up.restart();
                        connected.send_replace(true);
                    }
                    Some(Link::Disconnected { .. }) => {
                        if is_connected {
                            is_connected = false;
                            connected.send_replace(false);
                        }
                    }
                    Some(Link::SubscribeSent { pkid }) => subacks.sent(pkid),
                    Some(Link::SubscribeAcked { pkid, granted }) => {
                        let answer = subacks.acked(pkid, &granted, Instant::now());
                        if answer.standing && !answer.refused.is_empty() {
                            tracing::warn!(
                                "the broker refused {}; asking again",
                                answer.refused.join(", ")
                            );
                        }
                    }
                },
                Some(()) = resync.recv() => {
                    // Section 5's resync: the broker sends every retained
                    // notice again on the new subscriptions.
                    for scope in follows.all() {
                        let _ = client.unsubscribe(scope.space.notices_filter()).await;
                    }
                    subscribe(&client, &follows, &command_topics, false, &mut subacks).await;
                    settled = false;
                    catch_up.restart();
                }
                changed = catalog.changed() => {
                    if changed.is_err() { break; }
                    // A new manifest, or a page of one: what is missing changed.
                    let version = versions(&catalog.borrow_and_update());
                    if version != manifest_version {
                        manifest_version = version;
                        catch_up.renew();
                    }
                }
                _ = tick.tick() => {
                    let handled = counters.handled.load(Ordering::Relaxed);
                    if handled == last_handled && subacks.awaiting_standing() == 0 {
                        settled = true;
                    }
                    last_handled = handled;
                }
            }
            if !is_connected {
                continue;
            }
            let refused = subacks.retry(Instant::now());
            if !refused.is_empty() {
                subscribe_standing(&client, refused, &mut subacks).await;
            }
            let missing = missing_topics(&catalog.borrow(), &follows);
            let step = catch_up.step(&missing, settled, Instant::now());
            for topic in &step.unsubscribe {
                let _ = client.unsubscribe(topic).await;
            }
            if !step.subscribe.is_empty() {
                let topics: usize = step.subscribe.iter().map(Vec::len).sum();
                tracing::info!(
                    "fetching {topics} listed by the manifests in {} batches ({} missing)",
                    step.subscribe.len(),
                    missing.len()
                );
                counters.fetched.fetch_add(topics as u64, Ordering::Relaxed);
                for batch in step.subscribe {
                    let filters: Vec<_> = batch
                        .into_iter()
                        .map(|topic| rumqttc::SubscribeFilter::new(topic, FETCH_QOS))
                        .collect();
                    match client.subscribe_many(filters.clone()).await {
                        Ok(()) => subacks.requested(&filters, false),
                        Err(e) => tracing::warn!("cannot subscribe for missing notices: {e}"),
                    }
                }
            }
        }
        // Say goodbye: a clean disconnect suppresses the will, so publish it ourselves.
        if let (true, Some((topic, payload))) = (is_connected, offline_status) {
            let _ = client.publish(topic, QoS::AtLeastOnce, true, payload).await;
        }
        let _ = client.disconnect().await;
    }
}

/// The exact topics catch-up fetches: every page of a held index not held
/// yet (a page says what else is missing), then every listed notice the
/// screen lacks, over all scopes.
pub fn missing_topics(catalog: &Catalog, follows: &Follows) -> Vec<String> {
    let space = |scope: &str| follows.get(scope).map(|s| &s.space);
    let pages = catalog
        .missing_pages()
        .into_iter()
        .filter_map(|(scope, page)| space(&scope).map(|s| s.manifest_page(page)));
    let notices = catalog
        .missing()
        .into_iter()
        .filter_map(|n| space(&n.scope).map(|s| s.notice(&n.id)));
    pages.chain(notices).collect()
}

/// Subscribes for a new connection (or a resync), telling `subacks`.
async fn subscribe(
    client: &AsyncClient,
    follows: &Follows,
    commands: &[String],
    session_present: bool,
    subacks: &mut suback::Subacks,
) {
    // The manifests first, and on every connection: re-subscribing makes the
    // broker send each retained manifest again, which tells the screen whether
    // it holds everything (a notice acked just before a power cut, say).
    let manifests = follows
        .all()
        .iter()
        .map(|s| rumqttc::SubscribeFilter::new(s.space.manifest(), QoS::AtLeastOnce))
        .collect();
    subscribe_standing(client, manifests, subacks).await;
    if session_present {
        return;
    }
    // Commands at QoS 1 too: the session queues them while the screen is
    // away (they still expire).
    let notices = follows
        .all()
        .iter()
        .map(|s| s.space.notices_filter())
        .chain(commands.iter().cloned())
        .map(|topic| rumqttc::SubscribeFilter::new(topic, QoS::AtLeastOnce))
        .collect();
    subscribe_standing(client, notices, subacks).await;
}

/// One SUBSCRIBE of standing filters, whose refusal is retried.
async fn subscribe_standing(
    client: &AsyncClient,
    filters: Vec<rumqttc::SubscribeFilter>,
    subacks: &mut suback::Subacks,
) {
    match client.subscribe_many(filters.clone()).await {
        Ok(()) => subacks.requested(&filters, true),
        Err(e) => tracing::warn!("cannot subscribe: {e}"),
    }
}

/// Reads a secret from a file, trimming the final newline.
pub fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1:1884").unwrap(),
            BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1884
            }
        );
        assert_eq!(
            BrokerUrl::parse("mqtts://broker.example").unwrap().port,
            8883
        );
        assert!(BrokerUrl::parse("http://x").is_err());
        assert!(BrokerUrl::parse("mqtt://x/path").is_err());
    }

    #[test]
    fn broker_urls_print_in_their_canonical_form() {
        for (text, canonical) in [
            ("mqtt://127.0.0.1:1884", "mqtt://127.0.0.1:1884"),
            ("mqtts://broker.example", "mqtts://broker.example:8883"),
            ("tcp://b", "mqtt://b:1883"),
            ("ssl://[::1]:9", "mqtts://[::1]:9"),
        ] {
            let url = BrokerUrl::parse(text).unwrap();
            assert_eq!(url.to_string(), canonical);
            assert_eq!(BrokerUrl::parse(canonical).unwrap(), url);
        }
    }

    #[test]
    fn the_first_broker_is_a_stable_hash_of_the_client_id_that_spreads_a_fleet() {
        // FNV-1a of the id: these values must not change between releases,
        // or every screen of a fleet would move at once on an upgrade.
        assert_eq!(first_broker("lobby-1", 3), 1);
        assert_eq!(first_broker("lobby-3", 3), 2);
        assert_eq!(first_broker("", 3), 2);
        assert_eq!(first_broker("lobby-1", 1), 0);
        assert_eq!(first_broker("lobby-1", 0), 0);
        let mut per_node = [0usize; 3];
        for i in 0..300 {
            per_node[first_broker(&format!("screen-{i}"), 3)] += 1;
        }
        assert!(
            per_node.iter().all(|n| (80..=120).contains(n)),
            "{per_node:?}"
        );
    }

    fn urls(n: u16) -> Vec<BrokerUrl> {
        (0..n)
            .map(|i| BrokerUrl::parse(&format!("mqtt://node{i}:1883")).unwrap())
            .collect()
    }

    #[test]
    fn brokers_go_round_the_list_and_clones_share_the_position() {
        let brokers = Brokers::new(urls(3), 4);
        assert_eq!(
            brokers.position(),
            1,
            "the first position is taken modulo 3"
        );
        let relay_copy = brokers.clone();
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(relay_copy.current().host.clone());
            brokers.advance();
        }
        assert_eq!(seen, ["node1", "node2", "node0", "node1"]);
        let client = Brokers::for_client(urls(3), "lobby-3");
        assert_eq!(client.current().host, "node2");
        let single = Brokers::one(urls(1).remove(0));
        single.advance();
        assert_eq!(single.current().host, "node0");
    }

    #[test]
    fn reconnect_waits_grow_to_a_minute_and_start_over_after_a_stable_connection() {
        let t = Instant::now();
        let mut r = Reconnect::default();
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = r.ceiling();
            assert!(r.failed(t) <= ceiling);
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        // A connection that ends at once was no success: waits keep growing.
        r.connected(t);
        r.failed(t + Duration::from_secs(5));
        assert_eq!(r.failures(), 9);
        // One that lasted is: the next wait is at most the first again.
        r.connected(t);
        let delay = r.failed(t + STABLE_CONNECTION);
        assert_eq!(r.failures(), 1);
        assert!(delay <= FIRST_RETRY);
        // A failure without a connection in between never resets.
        r.failed(t + STABLE_CONNECTION * 3);
        assert_eq!(r.failures(), 2);
    }

    #[test]
    fn reconnect_waits_grow_once_per_round_of_the_broker_list() {
        let t = Instant::now();
        let mut r = Reconnect::new(3);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let ceiling = r.ceiling();
            assert!(r.failed(t) <= ceiling);
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8]);
    }

    fn topics(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("g/v1/c/notices/n{i}")).collect()
    }

    /// Every topic the step subscribes, whatever the batches.
    fn subscribed(step: CatchUpStep) -> Vec<String> {
        step.subscribe.into_iter().flatten().collect()
    }

    #[test]
    fn catch_up_fetches_in_batches_one_after_another() {
        let t = Instant::now();
        let mut c = CatchUp::new(50, 1);
        let mut missing = topics(120);
        assert_eq!(
            c.step(&missing, false, t),
            CatchUpStep::default(),
            "waits for quiet"
        );
        let first = c.step(&missing, true, t).subscribe;
        assert_eq!(first.len(), 1, "one SUBSCRIBE");
        let first = first.concat();
        assert_eq!(first, missing[..50]);
        assert_eq!(
            c.step(&missing, true, t),
            CatchUpStep::default(),
            "one batch at a time"
        );
        // The batch arrived: the next follows at once, even while messages flow.
        missing.retain(|id| !first.contains(id));
        let step = c.step(&missing, false, t);
        assert_eq!(step.unsubscribe, first);
        assert_eq!(subscribed(step).len(), 50);
        // The broker lacks these: the batch times out and the last one follows.
        let later = t + BATCH_TIMEOUT;
        let step = c.step(&missing, false, later);
        assert_eq!(step.unsubscribe.len(), 50);
        assert_eq!(subscribed(step).len(), 20);
        // Every one was asked for once: pause before the next round.
        let end = later + BATCH_TIMEOUT;
        let step = c.step(&missing, true, end);
        assert_eq!((step.unsubscribe.len(), step.subscribe.len()), (20, 0));
        assert_eq!(
            c.step(&missing, true, end + ROUND_PAUSE / 2),
            CatchUpStep::default()
        );
        assert_eq!(
            subscribed(c.step(&missing, true, end + ROUND_PAUSE)).len(),
            50
        );
        // A second fruitless round doubles the pause.
        // The 70 missing take two batches of this round.
        let mut t2 = end + ROUND_PAUSE;
        for _ in 0..2 {
            t2 += BATCH_TIMEOUT;
            c.step(&missing, true, t2);
        }
        assert_eq!(
            c.step(&missing, true, t2 + ROUND_PAUSE),
            CatchUpStep::default()
        );
        assert_eq!(
            subscribed(c.step(&missing, true, t2 + ROUND_PAUSE * 2)).len(),
            50
        );
    }

    #[test]
    fn a_window_of_batches_is_kept_full() {
        let t = Instant::now();
        let mut c = CatchUp::new(10, 3);
        let mut missing = topics(100);
        let step = c.step(&missing, true, t);
        assert_eq!(step.subscribe.len(), 3, "three SUBSCRIBEs at once");
        assert!(step.subscribe.iter().all(|b| b.len() == 10));
        assert_eq!(step.subscribe.concat(), missing[..30]);
        // The second batch arrives first: only it is replaced, by the next ten.
        missing.retain(|t| !step.subscribe[1].contains(t));
        let next = c.step(&missing, false, t);
        assert_eq!(next.unsubscribe, step.subscribe[1]);
        assert_eq!(next.subscribe, vec![missing[20..30].to_vec()]);
        assert_eq!(c.step(&missing, false, t), CatchUpStep::default());
    }

    #[test]
    fn a_batch_that_keeps_arriving_is_not_given_up() {
        let t = Instant::now();
        let mut c = CatchUp::new(10, 1);
        let mut missing = topics(10);
        c.step(&missing, true, t);
        // Half of it arrives just before its deadline: the deadline moves.
        let almost = t + BATCH_TIMEOUT - Duration::from_millis(1);
        missing.drain(..5);
        assert_eq!(c.step(&missing, false, almost), CatchUpStep::default());
        assert_eq!(
            c.step(&missing, false, t + BATCH_TIMEOUT),
            CatchUpStep::default(),
            "still within BATCH_TIMEOUT of the last arrival"
        );
        let step = c.step(&missing, false, almost + BATCH_TIMEOUT);
        assert_eq!(step.unsubscribe.len(), 10, "given up: the whole batch goes");
    }

    #[test]
    fn a_new_connection_drops_the_batches_out_and_waits_for_quiet() {
        let t = Instant::now();
        let mut c = CatchUp::new(10, 2);
        let missing = topics(50);
        let out = subscribed(c.step(&missing, true, t));
        assert_eq!(out.len(), 20);
        c.restart();
        let step = c.step(&missing, false, t);
        assert_eq!(step.unsubscribe, out, "the old exact subscriptions go");
        assert!(step.subscribe.is_empty(), "waits for the flood to settle");
        assert_eq!(subscribed(c.step(&missing, true, t)), missing[..20]);
    }

    #[test]
    fn a_changed_manifest_asks_again_at_once_and_keeps_the_batches_out() {
        let t = Instant::now();
        let mut c = CatchUp::new(10, 2);
        let mut missing = topics(10);
        c.step(&missing, true, t);
        // The batch times out, nothing else is missing: a pause begins.
        let later = t + BATCH_TIMEOUT;
        assert_eq!(c.step(&missing, true, later).unsubscribe.len(), 10);
        assert_eq!(c.step(&missing, true, later), CatchUpStep::default());
        // A page (or a new version) lists more: no pause. (It still waits
        // for quiet, so that a manifest that came first, as on a fresh
        // connection, does not race the retained flood behind it.)
        missing.extend(topics(30).into_iter().skip(10));
        c.renew();
        assert_eq!(c.step(&missing, false, later), CatchUpStep::default());
        let step = c.step(&missing, true, later);
        assert_eq!(subscribed(step), missing[..20]);
        // A page arrives while batches are out: they stay out, and what they
        // ask for is not asked for again when one of them is done.
        c.renew();
        assert_eq!(
            c.step(&missing, true, later),
            CatchUpStep::default(),
            "the window is full; nothing is dropped"
        );
        let arrived: Vec<String> = missing.drain(..10).collect();
        let step = c.step(&missing, true, later);
        assert_eq!(step.unsubscribe, arrived);
        assert_eq!(subscribed(step), missing[10..20]);
    }

    #[test]
    fn nothing_missing_means_nothing_to_do() {
        let mut c = CatchUp::new(50, 4);
        assert_eq!(c.step(&[], true, Instant::now()), CatchUpStep::default());
    }
}
