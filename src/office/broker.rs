//! The office talking to the broker: publishing notices with the manifest,
//! and reading the fleet's status as `status::StatusMessage`s, the types
//! the screens write them with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::mqtt::Connect;
use crate::protocol::envelope::{
    Envelope, MANIFEST_PAGE_TYPE, MANIFEST_TYPE, MAX_ENVELOPE_BYTES, NOTICE_TYPE,
};
use crate::protocol::manifest::{MAX_PAGES, paginate};
use crate::protocol::topic::Topic;
use crate::protocol::{
    Manifest, ManifestEntry, ManifestPage, Notice, PageRef, SecretKey, TopicSpace, sha256_hex,
};
use crate::status::StatusMessage;

/// How long to wait for retained messages after the broker acknowledged a
/// subscription (brokers send them right after the SUBACK).
pub const RETAINED_GRACE: Duration = Duration::from_millis(700);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A short-lived connection. Its event loop runs in a task of its own and
/// forwards what the CLI waits for, so client calls are never awaited from
/// the polling task.
pub struct OneShotClient {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: tokio::task::JoinHandle<()>,
    relay: crate::mqtt::Guard,
}

impl OneShotClient {
    pub async fn connect(connect: &Connect) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let (client, mut eventloop, guard) = connect.client()?;
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let mut this = Self {
            client,
            events,
            task,
            relay: guard,
        };
        this.wait_for(CONNECT_TIMEOUT, |p| matches!(p, Packet::ConnAck(_)))
            .await
            .with_context(|| format!("connecting to {}", connect.brokers.current()))?;
        Ok(this)
    }

    async fn wait_for(
        &mut self,
        timeout: Duration,
        want: impl Fn(&Packet) -> bool,
    ) -> anyhow::Result<Packet> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => bail!("the broker did not answer within {} s", timeout.as_secs()),
                Ok(None) => bail!("connection closed"),
                Ok(Some(Err(e))) => bail!("{e}"),
                Ok(Some(Ok(p))) if want(&p) => return Ok(p),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Publishes at QoS 1, not retained, and waits for the broker's PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        self.wait_for(Duration::from_secs(30), |p| matches!(p, Packet::PubAck(_)))
            .await
            .with_context(|| format!("publishing {topic}"))?;
        Ok(())
    }

    /// Publishes retained at QoS 1 and waits for the broker's PUBACK.
    pub async fn publish_retained(&mut self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await?;
        self.wait_for(Duration::from_secs(30), |p| matches!(p, Packet::PubAck(_)))
            .await
            .with_context(|| format!("publishing {topic}"))?;
        Ok(())
    }

    /// Publishes many messages retained at QoS 1, pipelined, and returns once
    /// the broker acknowledged every one of them.
    pub async fn publish_retained_many(
        &mut self,
        messages: Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let total = messages.len();
        let mut acked = 0;
        let mut messages = messages.into_iter();
        let mut sent = 0;
        // Keep at most this many unacknowledged: the client's in-flight window.
        const WINDOW: usize = 50;
        while acked < total {
            while sent < total && sent - acked < WINDOW {
                let (topic, payload) = messages.next().expect("counted");
                self.client
                    .publish(topic, QoS::AtLeastOnce, true, payload)
                    .await?;
                sent += 1;
            }
            self.wait_for(Duration::from_secs(30), |p| matches!(p, Packet::PubAck(_)))
                .await
                .with_context(|| format!("publishing: {acked} of {total} acknowledged"))?;
            acked += 1;
        }
        Ok(())
    }

    /// The retained messages on `filter` (possibly none).
    pub async fn retained(&mut self, filter: &str) -> anyhow::Result<Vec<Publish>> {
        self.collect_retained(filter, false).await
    }

    /// The message retained on `topic`, an exact topic (no wildcard) that
    /// holds one at most: returned as soon as it is in after the SUBACK,
    /// so that only a topic holding none waits out `RETAINED_GRACE`.
    pub async fn retained_on(&mut self, topic: &str) -> anyhow::Result<Option<Publish>> {
        anyhow::ensure!(
            !topic.contains(['+', '#']),
            "{topic:?} is a filter, not a topic"
        );
        Ok(self.collect_retained(topic, true).await?.pop())
    }

    /// Subscribes to `filter` and collects its retained messages until
    /// `RETAINED_GRACE` passes without one after the SUBACK, or, with
    /// `first_only` (an exact topic), until the first is in.
    async fn collect_retained(
        &mut self,
        filter: &str,
        first_only: bool,
    ) -> anyhow::Result<Vec<Publish>> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        let mut out = Vec::new();
        let mut acked = false;
        while !(first_only && acked && !out.is_empty()) {
            let timeout = if acked {
                RETAINED_GRACE
            } else {
                CONNECT_TIMEOUT
            };
            match tokio::time::timeout(timeout, self.events.recv()).await {
                Err(_) if acked => break,
                Err(_) => bail!("the broker did not acknowledge the subscription"),
                Ok(None) => bail!("connection closed"),
                Ok(Some(Err(e))) => bail!("{e}"),
                Ok(Some(Ok(Packet::SubAck(_)))) => acked = true,
                Ok(Some(Ok(Packet::Publish(p))))
                    if p.retain && (!first_only || p.topic == filter) =>
                {
                    out.push(p);
                }
                Ok(Some(Ok(_))) => {}
            }
        }
        let _ = self.client.unsubscribe(filter).await;
        Ok(out)
    }

    /// Asks for `filter` at QoS 1 without waiting: the SUBACK and the
    /// messages that follow come through `next_packet`. For a subscription
    /// that stays (`office::watch`).
    pub async fn request_subscription(&mut self, filter: &str) -> anyhow::Result<()> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await?;
        Ok(())
    }

    /// The next packet from the broker, however long it takes; an error
    /// once the connection is gone.
    pub async fn next_packet(&mut self) -> anyhow::Result<Packet> {
        match self.events.recv().await {
            None => bail!("connection closed"),
            Some(Err(e)) => bail!("{e}"),
            Some(Ok(packet)) => Ok(packet),
        }
    }

    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        self.relay.close(Duration::from_millis(500)).await;
    }
}

/// What `publish` did for one community.
#[derive(Debug)]
pub struct Published {
    pub community: String,
    pub notices: Vec<(String, u64)>,
    pub manifest_version: u64,
    /// Pages of a paged manifest (0: the manifest lists its notices).
    pub pages: usize,
}

/// The JSON of one page at most: base64 makes it 4/3 larger, and the
/// envelope around it must stay under 256 KiB.
const MAX_PAGE_PAYLOAD: usize = 190_000;

/// A manifest as retained messages: its pages (none when one envelope
/// holds the list) and the envelope on the manifest topic.
struct ManifestMessages {
    pages: Vec<(String, Vec<u8>)>,
    index: Vec<u8>,
}

/// Signs `manifest` as one envelope when it fits in 256 KiB, and otherwise
/// as pages and an index of their hashes (section 3.6).
fn manifest_messages(
    topics: &TopicSpace,
    mut manifest: Manifest,
    key: &SecretKey,
) -> anyhow::Result<ManifestMessages> {
    let single = Envelope::sign_new(MANIFEST_TYPE, &serde_json::to_vec(&manifest)?, key).to_bytes();
    if single.len() <= MAX_ENVELOPE_BYTES {
        return Ok(ManifestMessages {
            pages: Vec::new(),
            index: single,
        });
    }
    let entries = manifest.notices.take().unwrap_or_default();
    let pages = paginate(
        &manifest.community,
        manifest.version,
        &entries,
        MAX_PAGE_PAYLOAD,
    );
    if pages.len() > MAX_PAGES {
        bail!(
            "the manifest of {} would need {} pages, more than the {MAX_PAGES} allowed; clear \
             expired and withdrawn notices from the broker first",
            manifest.community,
            pages.len()
        );
    }
    let mut refs = Vec::new();
    let mut messages = Vec::new();
    for page in &pages {
        let envelope =
            Envelope::sign_new(MANIFEST_PAGE_TYPE, &serde_json::to_vec(page)?, key).to_bytes();
        refs.push(PageRef {
            sha256: sha256_hex(&envelope),
            count: page.notices.len() as u64,
        });
        messages.push((topics.manifest_page(page.page), envelope));
    }
    manifest.pages = Some(refs);
    let index = Envelope::sign_new(MANIFEST_TYPE, &serde_json::to_vec(&manifest)?, key).to_bytes();
    Ok(ManifestMessages {
        pages: messages,
        index,
    })
}

/// The retained manifest of a scope as the office reads it back: its
/// version, the union of what it lists, and how many pages it has.
struct RetainedManifest {
    version: u64,
    entries: Vec<ManifestEntry>,
    pages: usize,
}

/// Publishes each envelope retained at QoS 1 on the topic its payload
/// implies, waiting for each PUBACK, then the next manifest of each
/// community, merged with the retained one and signed by `key`.
pub async fn publish(
    connect: &Connect,
    prefix: &str,
    key: &SecretKey,
    files: &[PathBuf],
) -> anyhow::Result<Vec<Published>> {
    // Read and check everything before sending anything.
    let mut by_community: BTreeMap<String, Vec<(Notice, Vec<u8>)>> = BTreeMap::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let envelope =
            Envelope::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if envelope.payload_type != NOTICE_TYPE {
            bail!(
                "{}: payload type {:?} is not a notice",
                file.display(),
                envelope.payload_type
            );
        }
        let payload = envelope
            .payload_bytes()
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let notice = Notice::from_payload(&payload)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if envelope.signatures.len() < 2 {
            tracing::warn!(
                "{}: only {} signature(s); screens need the office's and the supervisory committee's",
                file.display(),
                envelope.signatures.len()
            );
        }
        by_community
            .entry(notice.community.clone())
            .or_default()
            .push((notice, bytes));
    }
    publish_by_community(connect, prefix, key, by_community).await
}

/// Publishes envelopes already checked (each with its notice, parsed from
/// it), as `publish` does files: the web console's 发布.
pub async fn publish_envelopes(
    connect: &Connect,
    prefix: &str,
    key: &SecretKey,
    envelopes: Vec<(Notice, Vec<u8>)>,
) -> anyhow::Result<Vec<Published>> {
    let mut by_community: BTreeMap<String, Vec<(Notice, Vec<u8>)>> = BTreeMap::new();
    for (notice, bytes) in envelopes {
        by_community
            .entry(notice.community.clone())
            .or_default()
            .push((notice, bytes));
    }
    publish_by_community(connect, prefix, key, by_community).await
}

async fn publish_by_community(
    connect: &Connect,
    prefix: &str,
    key: &SecretKey,
    by_community: BTreeMap<String, Vec<(Notice, Vec<u8>)>>,
) -> anyhow::Result<Vec<Published>> {
    let mut client = OneShotClient::connect(connect).await?;
    let mut done = Vec::new();
    for (community, notices) in by_community {
        let topics = TopicSpace::new(prefix, &community);
        let previous = retained_manifest(&mut client, &topics).await?;
        let mut entries = Vec::new();
        let mut messages = Vec::new();
        for (notice, bytes) in notices {
            entries.push(ManifestEntry {
                id: notice.id.clone(),
                version: notice.version,
                sha256: sha256_hex(&bytes),
            });
            messages.push((topics.notice(&notice.id), bytes));
        }
        let manifest = Manifest::merged(
            previous.as_ref().map(|p| (p.version, p.entries.as_slice())),
            &community,
            &entries,
            OffsetDateTime::now_utc(),
        );
        // A retained manifest at the version limit leaves no next version:
        // refuse rather than publish one every screen rejects.
        manifest.validate().map_err(|e| {
            anyhow::anyhow!("refused: the next manifest of {community} would be invalid: {e}")
        })?;
        let written = manifest_messages(&topics, manifest.clone(), key)?;
        // Every notice is acknowledged before the manifest that lists it goes
        // out, and every page before the index that names it (section 3.6).
        client.publish_retained_many(messages).await?;
        let pages = written.pages.len();
        client.publish_retained_many(written.pages).await?;
        client
            .publish_retained(&topics.manifest(), written.index)
            .await?;
        // Pages past the new last one belong to no index: clear them, so the
        // broker keeps only what screens may fetch.
        let stale: Vec<(String, Vec<u8>)> = (pages + 1..=previous.as_ref().map_or(0, |p| p.pages))
            .map(|k| (topics.manifest_page(k as u32), Vec::new()))
            .collect();
        client.publish_retained_many(stale).await?;
        done.push(Published {
            community,
            notices: entries.into_iter().map(|e| (e.id, e.version)).collect(),
            manifest_version: manifest.version,
            pages,
        });
    }
    client.close().await;
    Ok(done)
}

async fn retained_manifest(
    client: &mut OneShotClient,
    topics: &TopicSpace,
) -> anyhow::Result<Option<RetainedManifest>> {
    let Some(last) = client.retained_on(&topics.manifest()).await? else {
        return Ok(None);
    };
    if last.payload.is_empty() {
        return Ok(None);
    }
    let parsed = Envelope::parse(&last.payload)
        .and_then(|e| e.payload_bytes())
        .and_then(|p| Manifest::from_payload(&p));
    let manifest = match parsed {
        Ok(m) => m,
        Err(e) => bail!(
            "the retained manifest on {} does not parse ({e}); fix or clear it before publishing",
            topics.manifest()
        ),
    };
    let Some(refs) = &manifest.pages else {
        return Ok(Some(RetainedManifest {
            version: manifest.version,
            entries: manifest.notices.unwrap_or_default(),
            pages: 0,
        }));
    };
    // An index: the next version lists what its pages list, so every page
    // must be there, exactly the one the index names.
    let mut by_hash: BTreeMap<String, ManifestPage> = BTreeMap::new();
    for p in client
        .retained(&format!("{}/pages/+", topics.manifest()))
        .await?
    {
        let page = Envelope::parse(&p.payload)
            .and_then(|e| e.payload_bytes())
            .and_then(|b| ManifestPage::from_payload(&b));
        if let Ok(page) = page {
            by_hash.insert(sha256_hex(&p.payload), page);
        }
    }
    let mut entries = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let Some(page) = by_hash.remove(&r.sha256) else {
            bail!(
                "page {} of the retained manifest of {} (version {}) is missing or not the one its \
                 index names; publishing would drop what it lists",
                i + 1,
                manifest.community,
                manifest.version
            );
        };
        entries.extend(page.notices);
    }
    Ok(Some(RetainedManifest {
        version: manifest.version,
        entries,
        pages: refs.len(),
    }))
}

/// One screen's retained status, as the office read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FleetEntry {
    Read(StatusMessage),
    /// A retained message on a screen's status topic that is not a status
    /// (`screen` from the topic). Listed rather than dropped: a screen
    /// missing from the list would look like one that never reported.
    Unreadable {
        screen: String,
        error: String,
    },
}

impl FleetEntry {
    pub fn screen(&self) -> &str {
        match self {
            FleetEntry::Read(status) => status.screen(),
            FleetEntry::Unreadable { screen, .. } => screen,
        }
    }
}

/// The fleet: every screen's retained status message, by screen id.
pub async fn fleet_status(
    connect: &Connect,
    prefix: &str,
    community: &str,
) -> anyhow::Result<Vec<FleetEntry>> {
    let topics = TopicSpace::new(prefix, community);
    let mut client = OneShotClient::connect(connect).await?;
    let retained = client.retained(&topics.status_filter()).await?;
    client.close().await;
    let mut out: Vec<FleetEntry> = retained
        .iter()
        .filter(|p| !p.payload.is_empty())
        .map(|p| {
            StatusMessage::parse(&p.payload).map_or_else(
                |error| FleetEntry::Unreadable {
                    screen: match topics.parse(&p.topic) {
                        Some(Topic::Status(screen)) => screen,
                        _ => p.topic.clone(),
                    },
                    error,
                },
                FleetEntry::Read,
            )
        })
        .collect();
    out.sort_by(|a, b| a.screen().cmp(b.screen()));
    Ok(out)
}
