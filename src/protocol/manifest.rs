//! The manifest (PROTOCOL.md section 3.6): the office's signed index of every
//! notice it keeps retained for a community.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::rejection::Rejection;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u64,
    pub community: String,
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub notices: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub id: String,
    pub version: u64,
    /// SHA-256 of the notice envelope bytes exactly as published.
    pub sha256: String,
}

impl Manifest {
    pub fn from_payload(bytes: &[u8]) -> Result<Self, Rejection> {
        let manifest: Manifest = super::notice::parse_payload(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn validate(&self) -> Result<(), Rejection> {
        if !super::is_valid_id(&self.community) {
            return Err(Rejection::invalid(format!(
                "community {:?} does not match the id pattern",
                self.community
            )));
        }
        super::check_version("manifest version", self.version)?;
        let mut seen = std::collections::HashSet::new();
        for entry in &self.notices {
            if !super::is_valid_id(&entry.id) || super::check_version("", entry.version).is_err() {
                return Err(Rejection::invalid(format!(
                    "manifest entry {:?} version {} is not valid",
                    entry.id, entry.version
                )));
            }
            if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Rejection::invalid(format!(
                    "manifest entry {:?}: sha256 must be 64 hex characters",
                    entry.id
                )));
            }
            if !seen.insert(entry.id.as_str()) {
                return Err(Rejection::invalid(format!(
                    "manifest lists {:?} twice",
                    entry.id
                )));
            }
        }
        Ok(())
    }

    /// The next manifest after `self` with `updates` merged in: an entry per id,
    /// the newer version winning, sorted by id so that diffs stay readable.
    pub fn merged(
        previous: Option<&Manifest>,
        community: &str,
        updates: &[ManifestEntry],
        now: OffsetDateTime,
    ) -> Manifest {
        let mut entries: std::collections::BTreeMap<String, ManifestEntry> = previous
            .map(|m| {
                m.notices
                    .iter()
                    .map(|e| (e.id.clone(), e.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for update in updates {
            match entries.get(&update.id) {
                Some(existing) if existing.version > update.version => {}
                _ => {
                    entries.insert(update.id.clone(), update.clone());
                }
            }
        }
        Manifest {
            schema: 1,
            community: community.to_owned(),
            version: previous.map_or(1, |m| m.version + 1),
            issued_at: now,
            notices: entries.into_values().collect(),
        }
    }
}
