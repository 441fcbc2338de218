//! The screen's status message (PROTOCOL.md section 6): what it is built from,
//! and when it must be published again.

use serde::Serialize;
use time::OffsetDateTime;

use crate::store::{Catalog, RejectionRecord};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Showing {
    pub id: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestStatus {
    pub version: u64,
    pub missing: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScreenStatus {
    pub screen: String,
    pub community: String,
    pub state: &'static str,
    pub software: &'static str,
    pub mode: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub showing: Option<Showing>,
    pub active: usize,
    pub cached: usize,
    pub rejected: u64,
    pub outbox: u64,
    /// Feedback the office refused for good (parked on the screen), and
    /// whether the office refuses this screen's token: both need a person.
    /// Fields beyond section 6, which readers ignore if they do not know them.
    #[serde(skip_serializing_if = "is_zero")]
    pub outbox_rejected: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub office_unauthorized: bool,
    pub manifest: ManifestStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_rejection: Option<RejectionRecord>,
    /// Why the store refuses commits, while it does: nothing new is taken
    /// in until it recovers (beyond section 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

/// The parts of a status that do not change by themselves.
#[derive(Debug, Clone)]
pub struct Identity {
    pub screen: String,
    pub community: String,
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
            state: "online",
            software: env!("CARGO_PKG_VERSION"),
            mode: id.mode,
            started_at: id.started_at,
            updated_at: now,
            showing,
            active: crate::schedule::active_set(catalog.items.values(), &id.screen, now).len(),
            cached: catalog.items.len(),
            rejected: catalog.rejected,
            outbox: 0,
            outbox_rejected: 0,
            office_unauthorized: false,
            manifest: ManifestStatus {
                version: catalog.manifest.as_ref().map_or(0, |m| m.version),
                missing: catalog.missing().len(),
            },
            last_rejection: catalog.last_rejection.clone(),
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

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("status serialises")
    }
}

/// The will: `{"screen", "community", "state": "offline"}`, retained.
pub fn offline(screen: &str, community: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "screen": screen, "community": community, "state": "offline"
    }))
    .expect("json")
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
