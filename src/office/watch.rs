//! The office server's standing view of its screens: one connection to
//! office.toml's broker, subscribed to every scope's status topics, keeping
//! each screen's latest retained status and the last time it said it was
//! online (its `updated_at`). The console's fleet page is drawn from this
//! view rather than from a fresh read of every retained status, which must
//! wait for the broker's last one; and only a view that stays can tell for
//! how long a screen has been offline, since the will a broker publishes
//! for a lost screen carries no time.
//!
//! What a message does to the view is the pure `FleetView::apply`; the task
//! only connects, subscribes, forwards and reconnects with backoff. Until
//! the retained statuses of a subscription are in (the broker's SUBACKs and
//! `broker::RETAINED_GRACE` after them) the view is not `ready`, and the
//! console reads the broker itself. The connection is a
//! `broker::OneShotClient`'s, which polls its event loop: nothing here does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::broker::{FleetEntry, OneShotClient, RETAINED_GRACE};
use super::database::Database;
use crate::backoff::Retry;
use crate::mqtt::Connect;
use crate::protocol::TopicSpace;
use crate::protocol::topic::Topic;
use crate::status::StatusMessage;

/// One screen as the office last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub entry: FleetEntry,
    /// The latest `updated_at` of an online status the office has seen
    /// from this screen since it started; `None` if none.
    pub last_online: Option<OffsetDateTime>,
}

/// Every screen of every scope, by scope and screen id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetView {
    /// The statuses retained on the broker are all in, and the connection
    /// is up: the view is the broker's.
    pub ready: bool,
    pub screens: BTreeMap<(String, String), Seen>,
    /// Last online times kept in the office's database from before this
    /// start, for screens whose first status now is a will.
    remembered: BTreeMap<(String, String), OffsetDateTime>,
}

/// What a status did to the view that the office's database keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The screen's last online time moved forward to this.
    Online(OffsetDateTime),
    /// Its retained status was cleared: the screen is gone.
    Forgotten,
}

impl FleetView {
    /// A view that knows the last online times `remembered` (scope,
    /// screen, time) from before.
    pub fn remembering(remembered: Vec<(String, String, OffsetDateTime)>) -> Self {
        FleetView {
            remembered: remembered
                .into_iter()
                .map(|(scope, screen, at)| ((scope, screen), at))
                .collect(),
            ..FleetView::default()
        }
    }

    /// What a message on `screen`'s status topic in `scope` does: an empty
    /// payload (a retained status cleared) forgets the screen; anything
    /// else replaces its entry, and an online status moves `last_online`
    /// forward (never back: a message redelivered late changes nothing).
    /// Says what changed that is worth keeping.
    pub fn apply(&mut self, scope: &str, screen: &str, payload: &[u8]) -> Option<Change> {
        let key = (scope.to_owned(), screen.to_owned());
        if payload.is_empty() {
            self.screens.remove(&key);
            self.remembered.remove(&key);
            return Some(Change::Forgotten);
        }
        let entry = StatusMessage::parse(payload).map_or_else(
            |error| FleetEntry::Unreadable {
                screen: screen.to_owned(),
                error,
            },
            FleetEntry::Read,
        );
        let before = self
            .screens
            .get(&key)
            .and_then(|s| s.last_online)
            .or_else(|| self.remembered.get(&key).copied());
        let now_says = match &entry {
            FleetEntry::Read(StatusMessage::Online(s)) => Some(s.updated_at),
            _ => None,
        };
        let last_online = before.max(now_says);
        self.screens.insert(key, Seen { entry, last_online });
        match last_online {
            Some(at) if last_online != before => Some(Change::Online(at)),
            _ => None,
        }
    }

    /// The screens of `scope`, by id.
    pub fn scope<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = &'a Seen> + 'a {
        self.screens
            .range((scope.to_owned(), String::new())..)
            .take_while(move |((s, _), _)| s == scope)
            .map(|(_, seen)| seen)
    }

    /// The last online `updated_at` seen from `screen` of `scope`, or
    /// remembered from before this start.
    pub fn last_online(&self, scope: &str, screen: &str) -> Option<OffsetDateTime> {
        let key = (scope.to_owned(), screen.to_owned());
        self.screens
            .get(&key)
            .and_then(|s| s.last_online)
            .or_else(|| self.remembered.get(&key).copied())
    }

    /// After a new subscription's retained statuses are in: a screen not
    /// among `retained` has no status on the broker any more.
    fn keep_only(&mut self, retained: &BTreeSet<(String, String)>) {
        self.screens.retain(|key, _| retained.contains(key));
    }
}

/// The running view, with the task that keeps it.
pub struct FleetWatch {
    pub view: watch::Receiver<FleetView>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl FleetWatch {
    /// Starts watching the status topics of `scopes` under `prefix` through
    /// `connect` (a fresh client id of its own each connection), from
    /// `view` (what the office's database remembers), keeping what changes
    /// in `database`.
    pub fn start(
        connect: Connect,
        prefix: &str,
        scopes: &[String],
        view: FleetView,
        database: Option<Database>,
    ) -> FleetWatch {
        let (tx, view) = watch::channel(view);
        let cancel = CancellationToken::new();
        let task = WatchTask {
            connect,
            spaces: scopes
                .iter()
                .map(|s| (s.clone(), TopicSpace::new(prefix, s)))
                .collect(),
            view: tx,
            database,
            cancel: cancel.clone(),
        };
        FleetWatch {
            view,
            cancel,
            task: tokio::spawn(task.run()),
        }
    }

    /// Stops the task and waits for it to close its connection.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(3), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// How a connection ended.
enum Ended {
    Cancelled,
    Failed(anyhow::Error),
}

struct WatchTask {
    connect: Connect,
    spaces: Vec<(String, TopicSpace)>,
    view: watch::Sender<FleetView>,
    database: Option<Database>,
    cancel: CancellationToken,
}

impl WatchTask {
    /// Keeps what a status changed in the office's database, without
    /// waiting for it: the view is right already, and a write that fails
    /// only costs the offline time after the next restart.
    fn keep(&self, scope: String, screen: String, change: Change) {
        let Some(database) = self.database.clone() else {
            return;
        };
        tokio::spawn(async move {
            let written = database
                .call(move |store| {
                    match change {
                        Change::Online(at) => store.remember_online(&scope, &screen, at)?,
                        Change::Forgotten => store.forget_screen(&scope, &screen)?,
                    }
                    Ok(())
                })
                .await;
            if let Err(super::database::Failure::Failed(e)) = written {
                tracing::warn!("cannot keep when a screen was last online: {e:#}");
            }
        });
    }

    async fn run(self) {
        let mut retry = Retry::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match self.connection(&mut retry).await {
                Ended::Cancelled => return,
                Ended::Failed(e) => {
                    self.view.send_modify(|v| v.ready = false);
                    let delay = retry.next_delay();
                    tracing::warn!(
                        "fleet statuses: {e:#}; reconnecting in {:.1} s",
                        delay.as_secs_f64()
                    );
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection: subscribe to every scope's statuses, take what the
    /// broker retained, then follow every change until it fails.
    async fn connection(&self, retry: &mut Retry) -> Ended {
        let mut connect = self.connect.clone();
        connect.client_id = format!("gongkai-fleet-{}", uuid::Uuid::new_v4().simple());
        connect.clean_session = true;
        connect.manual_acks = false;
        connect.will = None;
        let connected = tokio::select! {
            () = self.cancel.cancelled() => return Ended::Cancelled,
            c = OneShotClient::connect(&connect) => c,
        };
        let mut client = match connected {
            Ok(client) => client,
            Err(e) => return Ended::Failed(e),
        };
        for (_, space) in &self.spaces {
            if let Err(e) = client.request_subscription(&space.status_filter()).await {
                client.close().await;
                return Ended::Failed(e);
            }
        }
        let mut acked = 0;
        // Until the view is ready: the screens whose retained statuses came.
        let mut retained: Option<BTreeSet<(String, String)>> = Some(BTreeSet::new());
        let mut grace_ends: Option<tokio::time::Instant> = None;
        loop {
            let deadline = grace_ends;
            let grace = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let packet = tokio::select! {
                () = self.cancel.cancelled() => {
                    client.close().await;
                    return Ended::Cancelled;
                }
                () = grace => {
                    grace_ends = None;
                    let retained = retained.take().unwrap_or_default();
                    self.view.send_modify(|v| {
                        v.keep_only(&retained);
                        v.ready = true;
                    });
                    retry.reset();
                    continue;
                }
                packet = client.next_packet() => packet,
            };
            match packet {
                Ok(rumqttc::Packet::SubAck(_)) => {
                    acked += 1;
                    if acked == self.spaces.len() {
                        grace_ends = Some(tokio::time::Instant::now() + RETAINED_GRACE);
                    }
                }
                Ok(rumqttc::Packet::Publish(p)) => {
                    let Some((scope, screen)) = self.screen_of(&p.topic) else {
                        continue;
                    };
                    if let Some(retained) = retained.as_mut() {
                        retained.insert((scope.clone(), screen.clone()));
                    }
                    let mut change = None;
                    self.view
                        .send_modify(|v| change = v.apply(&scope, &screen, &p.payload));
                    if let Some(change) = change {
                        self.keep(scope, screen, change);
                    }
                }
                Ok(_) => {}
                Err(e) => return Ended::Failed(e),
            }
        }
    }

    /// The scope and screen of a status topic.
    fn screen_of(&self, topic: &str) -> Option<(String, String)> {
        self.spaces
            .iter()
            .find_map(|(scope, space)| match space.parse(topic) {
                Some(Topic::Status(screen)) => Some((scope.clone(), screen)),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn online(screen: &str, updated: OffsetDateTime) -> Vec<u8> {
        let mut status: serde_json::Value = serde_json::json!({
            "state": "online", "screen": screen, "community": "lixia-demo",
            "software": "0.1.0", "mode": "led",
            "started_at": "2026-10-08T00:00:00Z",
            "active": 1, "cached": 1, "rejected": 0, "outbox": 0,
            "manifest": {"version": 1, "missing": 0},
        });
        status["updated_at"] = crate::protocol::notice::rfc3339(updated).into();
        serde_json::to_vec(&status).unwrap()
    }

    #[test]
    fn the_view_remembers_when_a_screen_was_last_online_after_its_will() {
        let mut view = FleetView::default();
        let (t1, t2) = (
            datetime!(2026-10-08 02:00 UTC),
            datetime!(2026-10-08 02:01 UTC),
        );
        view.apply("lixia-demo", "lobby-1", &online("lobby-1", t1));
        view.apply("lixia-demo", "lobby-1", &online("lobby-1", t2));
        // A late copy of the older status moves nothing back.
        view.apply("lixia-demo", "lobby-1", &online("lobby-1", t1));
        assert_eq!(view.last_online("lixia-demo", "lobby-1"), Some(t2));
        // The will: offline, and the last online time kept.
        view.apply(
            "lixia-demo",
            "lobby-1",
            &crate::status::offline("lobby-1", "lixia-demo"),
        );
        let seen: Vec<&Seen> = view.scope("lixia-demo").collect();
        assert!(matches!(
            seen[0].entry,
            FleetEntry::Read(StatusMessage::Offline(_))
        ));
        assert_eq!(seen[0].last_online, Some(t2));
        // Something else on the topic is listed as unreadable.
        view.apply("other-demo", "gate-1", b"not json");
        assert!(matches!(
            view.scope("other-demo").next().unwrap().entry,
            FleetEntry::Unreadable { .. }
        ));
        assert_eq!(view.scope("lixia-demo").count(), 1, "scopes apart");
        // A cleared retained status forgets the screen.
        view.apply("lixia-demo", "lobby-1", b"");
        assert_eq!(view.scope("lixia-demo").count(), 0);
    }

    #[test]
    fn a_view_started_again_remembers_when_a_gone_screen_was_last_online() {
        let (t1, t2) = (
            datetime!(2026-10-08 02:00 UTC),
            datetime!(2026-10-08 02:05 UTC),
        );
        let mut view = FleetView::remembering(vec![("lixia-demo".into(), "lobby-1".into(), t1)]);
        // Its will is the first the new view hears: offline since t1.
        let will = crate::status::offline("lobby-1", "lixia-demo");
        assert_eq!(view.apply("lixia-demo", "lobby-1", &will), None);
        assert_eq!(view.last_online("lixia-demo", "lobby-1"), Some(t1));
        // Back online: the time moves, and is worth keeping; the same
        // status again is not.
        assert_eq!(
            view.apply("lixia-demo", "lobby-1", &online("lobby-1", t2)),
            Some(Change::Online(t2))
        );
        assert_eq!(
            view.apply("lixia-demo", "lobby-1", &online("lobby-1", t2)),
            None
        );
        assert_eq!(
            view.apply("lixia-demo", "lobby-1", b""),
            Some(Change::Forgotten)
        );
        assert_eq!(view.apply("lixia-demo", "lobby-1", &will), None);
        assert_eq!(view.last_online("lixia-demo", "lobby-1"), None, "forgotten");
    }

    #[test]
    fn a_new_subscription_drops_screens_the_broker_no_longer_holds() {
        let mut view = FleetView::default();
        let t = datetime!(2026-10-08 02:00 UTC);
        view.apply("lixia-demo", "lobby-1", &online("lobby-1", t));
        view.apply("lixia-demo", "lobby-2", &online("lobby-2", t));
        let retained = BTreeSet::from([("lixia-demo".to_owned(), "lobby-2".to_owned())]);
        view.keep_only(&retained);
        let left: Vec<&str> = view.scope("lixia-demo").map(|s| s.entry.screen()).collect();
        assert_eq!(left, ["lobby-2"]);
    }
}
