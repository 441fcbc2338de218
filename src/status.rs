//! The screen's status message (PROTOCOL.md section 6): what it is built
//! from, when it must be published again, and how the office reads it back.
//!
//! One set of types for both sides: the daemon writes a `ScreenStatus` as
//! `StatusMessage::Online` (`ScreenStatus::to_json`) and its will as
//! `StatusMessage::Offline` (`offline`); `gongkai status` parses the same
//! `StatusMessage`, so that writer and reader cannot drift apart. A reader
//! ignores fields it does not know (a newer screen stays readable) and
//! takes the fields added after section 6's first version as absent when
//! an older screen leaves them out. No I/O here: the MQTT task publishes
//! the bytes, `office::broker` fetches them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Catalog, RejectionRecord};

/// A running screen publishes its status at least this often (section 6).
pub const STATUS_PERIOD: Duration = Duration::from_secs(60);
/// An online status older than this is stale: three periods without one
/// mean the screen is gone, even though its retained status says online.
/// A broker publishes the will only while it lives: a cluster node that
/// dies with the screen's connection loses it, and nothing else would
/// ever replace that last "online".
pub const STALE_AFTER: Duration = Duration::from_secs(3 * 60);

/// What the office concludes from a retained status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    Online,
    /// Says online, but has not been renewed for [`STALE_AFTER`].
    Stale,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Showing {
    pub id: String,
    pub version: u64,
    /// The notice's scope when it is not the home community (beyond
    /// section 6: a reader that does not know it sees the id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestStatus {
    pub version: u64,
    pub missing: usize,
    /// Pages of a paged manifest not held yet (beyond section 6): `missing`
    /// counts only what the held pages list.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub pages_missing: usize,
}

/// **[1.1]** The outcome of the last command (section 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCommand {
    pub id: String,
    pub action: String,
    /// `done`, `rejected: <reason>` or `failed: <reason>`.
    pub result: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// **[1.1]** The head of the proof-of-play chain (section 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaysHead {
    pub seq: u64,
    pub hash: String,
    pub unsent: u64,
    /// Why the office refuses the chain, while it does (beyond section 6:
    /// a fork or a changed record needs a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// **[1.1]** One followed scope's manifest, in `manifests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeManifest {
    pub scope: String,
    #[serde(flatten)]
    pub manifest: ManifestStatus,
}

impl ManifestStatus {
    fn of(catalog: &Catalog, scope: &str) -> Self {
        let held = catalog.manifest(scope);
        ManifestStatus {
            version: held.map_or(0, |m| m.version),
            missing: catalog.missing_in(scope).len(),
            pages_missing: held.map_or(0, |m| m.missing_pages().len()),
        }
    }
}

/// The last message the screen refused, as the status carries it (the
/// store's `RejectionRecord` is a database row, converted explicitly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRejection {
    pub topic: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl From<&RejectionRecord> for LastRejection {
    fn from(r: &RejectionRecord) -> Self {
        LastRejection {
            topic: r.topic.clone(),
            reason: r.reason.clone(),
            at: r.at,
        }
    }
}

/// A running screen's status: the body of `StatusMessage::Online`, whose
/// `"state": "online"` it is serialised with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScreenStatus {
    pub screen: String,
    pub community: String,
    pub software: String,
    pub mode: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default)]
    pub showing: Option<Showing>,
    pub active: usize,
    pub cached: usize,
    pub rejected: u64,
    #[serde(default)]
    pub outbox: u64,
    /// Feedback the office refused for good (parked on the screen), and
    /// whether the office refuses this screen's token: both need a person.
    /// Fields beyond section 6, which readers ignore if they do not know them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outbox_rejected: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub office_unauthorized: bool,
    pub manifest: ManifestStatus,
    /// **[1.1]** `"on"`, `"quiet"` while a power schedule has it dark, or
    /// `"identify"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<LastCommand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plays: Option<PlaysHead>,
    /// **[1.1]** Every followed scope, the home community first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ScopeManifest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rejection: Option<LastRejection>,
    /// Why the store refuses commits, while it does: nothing new is taken
    /// in until it recovers (beyond section 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

/// The will's body: who went offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offline {
    pub screen: String,
    pub community: String,
}

/// What a screen's status topic holds, told apart by `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum StatusMessage {
    /// Boxed: an online status is six times the size of the will.
    Online(Box<ScreenStatus>),
    /// The MQTT will, published by the broker when the screen is gone, and
    /// by the screen itself when it stops.
    Offline(Offline),
}

impl StatusMessage {
    /// Parses a retained status; the error says what is wrong (an unknown
    /// `state`, a missing field), for the office to show.
    pub fn parse(bytes: &[u8]) -> Result<StatusMessage, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    pub fn screen(&self) -> &str {
        match self {
            StatusMessage::Online(s) => &s.screen,
            StatusMessage::Offline(o) => &o.screen,
        }
    }

    pub fn community(&self) -> &str {
        match self {
            StatusMessage::Online(s) => &s.community,
            StatusMessage::Offline(o) => &o.community,
        }
    }

    /// Online only while the screen keeps its status fresh: by `updated_at`
    /// as well as the will. A clock ahead of `now` counts as fresh: the
    /// office cannot tell a fast clock from a live screen.
    pub fn liveness(&self, now: OffsetDateTime) -> Liveness {
        match self {
            StatusMessage::Offline(_) => Liveness::Offline,
            StatusMessage::Online(s) if now - s.updated_at > STALE_AFTER => Liveness::Stale,
            StatusMessage::Online(_) => Liveness::Online,
        }
    }
}

/// The parts of a status that do not change by themselves.
#[derive(Debug, Clone)]
pub struct Identity {
    pub screen: String,
    pub community: String,
    /// The upper scopes followed, in configuration order.
    pub upper_scopes: Vec<String>,
    pub mode: &'static str,
    pub started_at: OffsetDateTime,
}

impl ScreenStatus {
    pub fn build(
        id: &Identity,
        catalog: &Catalog,
        showing: Option<Showing>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            screen: id.screen.clone(),
            community: id.community.clone(),
            software: env!("CARGO_PKG_VERSION").to_owned(),
            mode: id.mode.to_owned(),
            started_at: id.started_at,
            updated_at: now,
            showing,
            active: crate::schedule::active_set(
                catalog.items.values(),
                &crate::schedule::Audience::new(&id.screen, &id.community),
                now,
            )
            .len(),
            cached: catalog.items.len(),
            rejected: catalog.rejected,
            outbox: 0,
            outbox_rejected: 0,
            office_unauthorized: false,
            manifest: ManifestStatus::of(catalog, &id.community),
            display: None,
            last_command: None,
            plays: None,
            manifests: std::iter::once(&id.community)
                .chain(&id.upper_scopes)
                .map(|scope| ScopeManifest {
                    scope: scope.clone(),
                    manifest: ManifestStatus::of(catalog, scope),
                })
                .collect(),
            last_rejection: catalog.last_rejection.as_ref().map(LastRejection::from),
            store_error: catalog.store_error.clone(),
        }
    }

    /// Whether anything but `updated_at` differs: such a change is published
    /// at once (coalesced to ten a second).
    pub fn differs_from(&self, other: &ScreenStatus) -> bool {
        let mut a = self.clone();
        a.updated_at = other.updated_at;
        &a != other
    }

    /// The message published: this status with `"state": "online"`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&StatusMessage::Online(Box::new(self.clone())))
            .expect("status serialises")
    }
}

/// The will: `{"screen", "community", "state": "offline"}`, retained.
pub fn offline(screen: &str, community: &str) -> Vec<u8> {
    serde_json::to_vec(&StatusMessage::Offline(Offline {
        screen: screen.to_owned(),
        community: community.to_owned(),
    }))
    .expect("status serialises")
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_usize(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> ScreenStatus {
        ScreenStatus {
            screen: "lobby-3".into(),
            community: "lixia-demo".into(),
            software: "0.1.0".into(),
            mode: "led".into(),
            started_at: time::macros::datetime!(2026-10-08 01:00 UTC),
            updated_at: time::macros::datetime!(2026-10-08 01:02:03.456 UTC),
            showing: Some(Showing {
                id: "2026q3-finance-001".into(),
                version: 3,
                scope: None,
            }),
            active: 12,
            cached: 40,
            rejected: 1,
            outbox: 0,
            outbox_rejected: 2,
            office_unauthorized: false,
            manifest: ManifestStatus {
                version: 57,
                missing: 0,
                pages_missing: 0,
            },
            display: Some("quiet".into()),
            last_command: None,
            plays: None,
            manifests: vec![ScopeManifest {
                scope: "yanshan-street".into(),
                manifest: ManifestStatus {
                    version: 9,
                    missing: 2,
                    pages_missing: 1,
                },
            }],
            last_rejection: Some(LastRejection {
                topic: "gongkai/v1/lixia-demo/notices/x".into(),
                reason: "missing supervisor signature".into(),
                at: time::macros::datetime!(2026-10-08 00:59 UTC),
            }),
            store_error: None,
        }
    }

    #[test]
    fn what_the_screen_writes_the_office_reads_back() {
        let written = status();
        let json: serde_json::Value = serde_json::from_slice(&written.to_json()).unwrap();
        assert_eq!(json["state"], "online");
        assert_eq!(json["manifest"]["version"], 57);
        assert_eq!(
            json["manifests"],
            serde_json::json!([{"scope": "yanshan-street", "version": 9, "missing": 2, "pages_missing": 1}])
        );
        assert!(json.get("office_unauthorized").is_none(), "{json}");
        assert_eq!(
            StatusMessage::parse(&written.to_json()).unwrap(),
            StatusMessage::Online(Box::new(written))
        );
        let will = offline("lobby-3", "lixia-demo");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&will).unwrap(),
            serde_json::json!({"screen": "lobby-3", "community": "lixia-demo", "state": "offline"})
        );
        let read = StatusMessage::parse(&will).unwrap();
        assert_eq!(read.screen(), "lobby-3");
        assert!(matches!(read, StatusMessage::Offline(_)));
    }

    #[test]
    fn section_6s_example_parses_and_unknown_fields_are_ignored() {
        // PROTOCOL.md section 6, with the 1.1 fields this reader ignores.
        let example = br#"{"screen": "lobby-3", "community": "lixia-demo", "state": "online",
            "software": "0.1.0", "mode": "led", "started_at": "2026-10-08T01:00:00Z",
            "updated_at": "2026-10-08T01:02:03.456Z",
            "showing": {"id": "2026q3-finance-001", "version": 3},
            "active": 12, "cached": 40, "rejected": 1, "outbox": 0,
            "manifest": {"version": 57, "missing": 0},
            "manifests": [{"scope": "yanshan-street", "version": 9, "missing": 0}],
            "plays": {"seq": 18231, "hash": "00", "unsent": 0}, "display": "quiet",
            "last_rejection": {"topic": "t", "reason": "missing supervisor signature",
                               "at": "2026-10-08T00:59:00Z"}}"#;
        let StatusMessage::Online(read) = StatusMessage::parse(example).unwrap() else {
            panic!("online");
        };
        assert_eq!(read.cached, 40);
        assert_eq!(read.showing.unwrap().version, 3);
        assert_eq!(read.manifests[0].scope, "yanshan-street");
        assert_eq!(read.manifests[0].manifest.version, 9);
        assert_eq!(read.outbox_rejected, 0, "absent: none");
    }

    #[test]
    fn an_online_status_not_renewed_for_three_minutes_is_stale() {
        let written = status();
        let at = written.updated_at;
        let online = StatusMessage::Online(Box::new(written));
        let after = |d: Duration| at + d;
        assert_eq!(online.liveness(at), Liveness::Online);
        assert_eq!(online.liveness(after(STATUS_PERIOD * 2)), Liveness::Online);
        assert_eq!(online.liveness(after(STALE_AFTER)), Liveness::Online);
        assert_eq!(
            online.liveness(after(STALE_AFTER + Duration::from_secs(1))),
            Liveness::Stale
        );
        assert_eq!(
            online.liveness(at - time::Duration::hours(1)),
            Liveness::Online,
            "a screen whose clock runs ahead"
        );
        let will = StatusMessage::parse(&offline("lobby-3", "lixia-demo")).unwrap();
        assert_eq!(will.liveness(at), Liveness::Offline);
    }

    #[test]
    fn a_status_that_is_not_one_says_why() {
        let unknown = StatusMessage::parse(br#"{"screen": "s", "state": "dancing"}"#).unwrap_err();
        assert!(unknown.contains("dancing"), "{unknown}");
        let partial =
            StatusMessage::parse(br#"{"screen": "s", "community": "c", "state": "online"}"#)
                .unwrap_err();
        assert!(partial.contains("missing field"), "{partial}");
        assert!(StatusMessage::parse(b"not json").is_err());
    }
}
