//! The status task (PROTOCOL.md section 6): what the screen tells the office
//! on MQTT, coalesced. It reads the catalog from its watch and never touches
//! the store.

use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::status::{Identity, STATUS_PERIOD, ScreenStatus, Showing};
use crate::store::Catalog;
use crate::store::outbox::OutboxCounts;

/// The status task: publishes the status after every CONNACK, at once on
/// every change (coalesced to ten a second, so a burst ends with one message
/// holding all of it), and at least every [`STATUS_PERIOD`].
///
/// Every new connection gets the status again, changed or not: the broker
/// (or the cluster node) that took over may hold an older one, or the
/// offline will of the connection that was lost. The session task sets
/// `connected` to true on each CONNACK only, so any change of `connected`
/// that reads true is a new connection, even when the drop before it was
/// too brief to be seen.
pub(super) struct StatusTask {
    pub(super) client: AsyncClient,
    pub(super) topic: String,
    pub(super) identity: Identity,
    pub(super) catalog: watch::Receiver<Catalog>,
    pub(super) showing: watch::Receiver<Option<crate::schedule::Key>>,
    pub(super) display: watch::Receiver<crate::schedule::Display>,
    pub(super) identify: watch::Receiver<bool>,
    pub(super) last_command: watch::Receiver<Option<crate::status::LastCommand>>,
    pub(super) plays: watch::Receiver<Option<crate::protocol::plays::PlayRecord>>,
    /// How far the office has the chain.
    pub(super) plays_sent: watch::Receiver<crate::sync::plays::PlaysSent>,
    pub(super) connected: watch::Receiver<bool>,
    pub(super) outbox: watch::Receiver<OutboxCounts>,
    pub(super) cancel: CancellationToken,
}

impl StatusTask {
    pub(super) async fn run(self) {
        let StatusTask {
            client,
            topic,
            identity,
            mut catalog,
            mut showing,
            mut display,
            mut identify,
            mut last_command,
            mut plays,
            mut plays_sent,
            mut connected,
            mut outbox,
            cancel,
        } = self;
        const MIN_GAP: Duration = Duration::from_millis(100);
        const PERIOD: Duration = STATUS_PERIOD;
        let mut last: Option<ScreenStatus> = None;
        let mut last_sent = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = catalog.changed() => if r.is_err() { return },
                r = showing.changed() => if r.is_err() { return },
                r = display.changed() => if r.is_err() { return },
                r = identify.changed() => if r.is_err() { return },
                r = last_command.changed() => if r.is_err() { return },
                r = plays.changed() => if r.is_err() { return },
                r = plays_sent.changed() => if r.is_err() { return },
                r = connected.changed() => {
                    if r.is_err() { return }
                    if *connected.borrow() {
                        // A new connection: publish whatever the last one got.
                        last = None;
                    }
                }
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
                showing.borrow_and_update().clone().map(|k| Showing {
                    scope: (k.scope != identity.community).then_some(k.scope),
                    id: k.id,
                    version: k.version,
                }),
                OffsetDateTime::now_utc(),
            );
            status.display = Some(match *identify.borrow_and_update() {
                true => "identify".to_owned(),
                false => display.borrow_and_update().as_str().to_owned(),
            });
            status.last_command = last_command.borrow_and_update().clone();
            let sent = plays_sent.borrow_and_update().clone();
            status.plays = plays
                .borrow_and_update()
                .as_ref()
                .map(|r| crate::status::PlaysHead {
                    seq: r.seq,
                    hash: r.hash.clone(),
                    unsent: r.seq.saturating_sub(sent.acknowledged),
                    refused: sent.refused.clone(),
                });
            let outbox_now = *outbox.borrow_and_update();
            status.outbox = outbox_now.pending;
            status.outbox_rejected = outbox_now.rejected;
            status.office_unauthorized = outbox_now.unauthorized || sent.unauthorized;
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
