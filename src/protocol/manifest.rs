//! The manifest (PROTOCOL.md section 3.6): the office's signed index of every
//! notice it keeps retained for a scope. A manifest either lists the notices
//! itself or, when one envelope cannot hold the list, is an index of pages
//! retained on topics of their own ([`ManifestPage`]). A manifest marked
//! `reset` replaces the one a screen holds whatever its version, and needs
//! the office's and the supervisor's signatures for that.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::rejection::Rejection;

/// Pages per manifest at most (section 3.6).
pub const MAX_PAGES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u64,
    pub community: String,
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// The listed notices; `None` in an index of pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices: Option<Vec<ManifestEntry>>,
    /// The pages of an index; `None` in a manifest that lists its notices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<Vec<PageRef>>,
    /// Replaces the manifest held whatever its version (dual-signed only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub id: String,
    pub version: u64,
    /// SHA-256 of the notice envelope bytes exactly as published.
    pub sha256: String,
}

/// An index's entry for one page: the hash of the page's envelope bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRef {
    pub sha256: String,
    pub count: u64,
}

/// One page of a paged manifest, retained on `…/manifest/pages/{page}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestPage {
    pub schema: u64,
    pub community: String,
    pub version: u64,
    /// 1-based.
    pub page: u32,
    pub notices: Vec<ManifestEntry>,
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_community(community: &str) -> Result<(), Rejection> {
    if super::is_valid_id(community) {
        Ok(())
    } else {
        Err(Rejection::invalid(format!(
            "community {community:?} does not match the id pattern"
        )))
    }
}

/// Entries are valid and name each id once.
fn check_entries(entries: &[ManifestEntry]) -> Result<(), Rejection> {
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        if !super::is_valid_id(&entry.id) || super::check_version("", entry.version).is_err() {
            return Err(Rejection::invalid(format!(
                "manifest entry {:?} version {} is not valid",
                entry.id, entry.version
            )));
        }
        if !is_sha256_hex(&entry.sha256) {
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

impl Manifest {
    pub fn from_payload(bytes: &[u8]) -> Result<Self, Rejection> {
        let manifest: Manifest = super::notice::parse_payload(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    pub fn validate(&self) -> Result<(), Rejection> {
        check_community(&self.community)?;
        super::check_version("manifest version", self.version)?;
        match (&self.notices, &self.pages) {
            (Some(_), Some(_)) => Err(Rejection::invalid(
                "a manifest carries either notices or pages, not both",
            )),
            (None, None) => Err(Rejection::invalid(
                "a manifest carries notices or pages; this one has neither",
            )),
            (Some(entries), None) => check_entries(entries),
            (None, Some(pages)) => {
                if pages.is_empty() || pages.len() > MAX_PAGES {
                    return Err(Rejection::invalid(format!(
                        "an index lists 1 to {MAX_PAGES} pages, not {}",
                        pages.len()
                    )));
                }
                match pages.iter().position(|p| !is_sha256_hex(&p.sha256)) {
                    Some(i) => Err(Rejection::invalid(format!(
                        "page {}: sha256 must be 64 hex characters",
                        i + 1
                    ))),
                    None => Ok(()),
                }
            }
        }
    }

    /// The entries this manifest lists itself (none in an index).
    pub fn entries(&self) -> &[ManifestEntry] {
        self.notices.as_deref().unwrap_or_default()
    }

    /// The next manifest after `self` with `updates` merged in: an entry per id,
    /// the newer version winning, sorted by id so that diffs stay readable.
    /// `previous_entries` is what the previous version listed (the union of
    /// its pages, for an index). The result lists its notices; see
    /// [`paginate`] for one too large for an envelope.
    pub fn merged(
        previous: Option<(u64, &[ManifestEntry])>,
        community: &str,
        updates: &[ManifestEntry],
        now: OffsetDateTime,
    ) -> Manifest {
        let mut entries: std::collections::BTreeMap<String, ManifestEntry> = previous
            .map(|(_, entries)| entries.iter().map(|e| (e.id.clone(), e.clone())).collect())
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
            version: previous.map_or(1, |(v, _)| v.saturating_add(1)),
            issued_at: now,
            notices: Some(entries.into_values().collect()),
            pages: None,
            reset: false,
        }
    }
}

impl ManifestPage {
    pub fn from_payload(bytes: &[u8]) -> Result<Self, Rejection> {
        let page: ManifestPage = super::notice::parse_payload(bytes)?;
        check_community(&page.community)?;
        super::check_version("manifest version", page.version)?;
        if page.page == 0 || page.page as usize > MAX_PAGES {
            return Err(Rejection::invalid(format!(
                "page number {} is not between 1 and {MAX_PAGES}",
                page.page
            )));
        }
        check_entries(&page.notices)?;
        Ok(page)
    }
}

/// Splits `entries` into pages whose payloads stay under `max_payload`
/// bytes of JSON, in order; every page holds at least one entry.
pub fn paginate(
    community: &str,
    version: u64,
    entries: &[ManifestEntry],
    max_payload: usize,
) -> Vec<ManifestPage> {
    // Room for the page's own fields around the list.
    let overhead = 96 + community.len();
    let mut pages: Vec<ManifestPage> = Vec::new();
    let mut size = usize::MAX;
    for entry in entries {
        // `{"id":"…","version":…,"sha256":"…"},` with a version of up to 16 digits.
        let entry_size = entry.id.len() + 120;
        if size.saturating_add(entry_size) > max_payload {
            pages.push(ManifestPage {
                schema: 1,
                community: community.to_owned(),
                version,
                page: pages.len() as u32 + 1,
                notices: Vec::new(),
            });
            size = overhead;
        }
        size += entry_size;
        pages
            .last_mut()
            .expect("a page was started")
            .notices
            .push(entry.clone());
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> ManifestEntry {
        ManifestEntry {
            id: format!("notice-{i:05}"),
            version: 1,
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn pages_stay_under_their_size_and_keep_every_entry_once() {
        let entries: Vec<_> = (0..5000).map(entry).collect();
        let pages = paginate("lixia-demo", 9, &entries, 100_000);
        assert!(pages.len() > 1);
        for (i, page) in pages.iter().enumerate() {
            assert_eq!(page.page as usize, i + 1);
            assert!(serde_json::to_vec(page).unwrap().len() <= 100_000);
        }
        let all: Vec<_> = pages.iter().flat_map(|p| p.notices.clone()).collect();
        assert_eq!(all, entries);
    }

    #[test]
    fn an_index_has_pages_or_notices_never_both_nor_neither() {
        let mut m = Manifest::merged(None, "c", &[entry(1)], OffsetDateTime::UNIX_EPOCH);
        assert!(m.validate().is_ok());
        m.pages = Some(vec![PageRef {
            sha256: "00".repeat(32),
            count: 1,
        }]);
        assert!(m.validate().unwrap_err().to_string().contains("pages"));
        m.notices = None;
        assert!(m.validate().is_ok());
        m.pages = None;
        assert!(m.validate().unwrap_err().to_string().contains("pages"));
    }
}
