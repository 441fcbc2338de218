//! The screen's durable cache and archive: the only user of SQLite.
//!
//! Every accepted notice version is kept (the archive); `heads` names the
//! highest version per (scope, id): two scopes may use one id (section 3.7).
//! Per scope, the highest accepted manifest is kept with its entries and,
//! for a paged one, which of its pages are held; rejections are logged with
//! their reasons. The database runs in WAL
//! mode with `synchronous=FULL`, so a commit that returned survives `kill -9`
//! and power loss, and the MQTT task acknowledges a message only after the
//! commit that recorded its fate. This module decides nothing about validity:
//! it records verdicts that `protocol` reached.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::protocol::notice::rfc3339;
use crate::protocol::ordering::{self, Held, Ordering};
use crate::protocol::{Category, Priority, Rejection, Status, Verified, printable};
use crate::schedule::{Audience, Item};

/// Rejections kept for inspection; older ones are pruned (the count stays).
const REJECTIONS_KEPT: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store holds a row that does not parse: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "the stored copy of {id} version {version} does not match the hash it was accepted with"
    )]
    Tampered { id: String, version: u64 },
}

/// A notice head as the store holds it, for checking against its hash and
/// signatures (see `Store::stored_heads`).
#[derive(Debug)]
pub struct StoredHead {
    pub scope: String,
    pub id: String,
    pub version: u64,
    /// The columns the catalog is built from, or why they do not parse.
    pub item: std::result::Result<Item, String>,
    pub topic: String,
    pub envelope: Vec<u8>,
    pub envelope_sha256: String,
    /// Whether the store marks it reviewed (a supervisor signature verified).
    pub reviewed: bool,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Ordered schema migrations; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE notices (
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    category        TEXT    NOT NULL,
    priority        TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    valid_from      TEXT    NOT NULL,
    valid_until     TEXT    NOT NULL,
    screens         TEXT    NOT NULL,
    payload_sha256  TEXT    NOT NULL,
    envelope_sha256 TEXT    NOT NULL,
    envelope        BLOB    NOT NULL,
    topic           TEXT    NOT NULL,
    received_at     TEXT    NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE TABLE heads (
    id      TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE manifest (
    slot            INTEGER PRIMARY KEY CHECK (slot = 1),
    version         INTEGER NOT NULL,
    issued_at       TEXT    NOT NULL,
    envelope_sha256 TEXT    NOT NULL,
    received_at     TEXT    NOT NULL
);
CREATE TABLE manifest_entries (
    id      TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    sha256  TEXT    NOT NULL
);
CREATE TABLE rejections (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at              TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    envelope_sha256 TEXT    NOT NULL,
    bytes           INTEGER NOT NULL
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    // Residents' feedback waiting for the office (the outbox), and which
    // reply notice answers which receipt.
    r#"
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    receipt         TEXT    NOT NULL UNIQUE,
    created_at      TEXT    NOT NULL,
    notice_id       TEXT,
    notice_version  INTEGER,
    kind            TEXT    NOT NULL,
    rating          INTEGER,
    reasons         TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    contact         TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    settled_at      TEXT
);
CREATE INDEX outbox_state ON outbox (state, seq);
CREATE TABLE replies (
    receipt  TEXT    NOT NULL,
    id       TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (receipt, id)
);
"#,
    // Protocol 1.1 (section 3.7): notices are identified by (scope, id), and
    // manifests are kept per scope, paged or not. Rows from before name their
    // scope in their topic, `{prefix}/{scope}/notices/{id}`: the scope is the
    // last segment before `/notices/{id}` (SQLite has no "last index of", so
    // `rtrim` by every character but `/` finds where it starts). The held
    // manifest belongs to the scope its notices came from; a store holding a
    // manifest but no notice drops it, and the screen takes the retained one
    // again at its next connection.
    r#"
CREATE TABLE notices3 (
    scope           TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    category        TEXT    NOT NULL,
    priority        TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    publisher       TEXT    NOT NULL DEFAULT '',
    valid_from      TEXT    NOT NULL,
    valid_until     TEXT    NOT NULL,
    screens         TEXT    NOT NULL,
    communities     TEXT    NOT NULL DEFAULT '[]',
    -- 1 when a trusted supervisor's signature verified (the review mark);
    -- rows from before are checked again at start.
    reviewed        INTEGER NOT NULL DEFAULT 0,
    payload_sha256  TEXT    NOT NULL,
    envelope_sha256 TEXT    NOT NULL,
    envelope        BLOB    NOT NULL,
    topic           TEXT    NOT NULL,
    received_at     TEXT    NOT NULL,
    PRIMARY KEY (scope, id, version)
);
INSERT INTO notices3 (scope, id, version, status, category, priority, title, valid_from,
    valid_until, screens, payload_sha256, envelope_sha256, envelope, topic, received_at)
SELECT substr(t, length(rtrim(t, replace(t, '/', ''))) + 1), id, version, status, category,
    priority, title, valid_from, valid_until, screens, payload_sha256, envelope_sha256,
    envelope, topic, received_at
FROM (SELECT *, substr(topic, 1, length(topic) - length(id) - 9) AS t FROM notices);
CREATE TABLE heads3 (
    scope   TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (scope, id)
);
INSERT INTO heads3 SELECT n.scope, h.id, h.version FROM heads h
    JOIN notices3 n ON n.id = h.id AND n.version = h.version;
CREATE TABLE manifests (
    scope           TEXT    PRIMARY KEY,
    version         INTEGER NOT NULL,
    issued_at       TEXT    NOT NULL,
    envelope_sha256 TEXT    NOT NULL,
    received_at     TEXT    NOT NULL,
    -- The index's pages as JSON [{"sha256", "count"}], or NULL when the
    -- manifest lists its notices itself.
    pages           TEXT
);
INSERT INTO manifests (scope, version, issued_at, envelope_sha256, received_at)
SELECT (SELECT scope FROM notices3 LIMIT 1), version, issued_at, envelope_sha256, received_at
FROM manifest WHERE EXISTS (SELECT 1 FROM notices3);
CREATE TABLE manifest_entries3 (
    scope   TEXT    NOT NULL,
    id      TEXT    NOT NULL,
    version INTEGER NOT NULL,
    sha256  TEXT    NOT NULL,
    -- 0 for an unpaged manifest, else the page that lists it.
    page    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, id)
);
INSERT INTO manifest_entries3 (scope, id, version, sha256)
SELECT m.scope, e.id, e.version, e.sha256 FROM manifest_entries e, manifests m;
CREATE TABLE manifest_pages (
    scope           TEXT    NOT NULL,
    page            INTEGER NOT NULL,
    envelope_sha256 TEXT    NOT NULL,
    PRIMARY KEY (scope, page)
);
CREATE TABLE replies3 (
    receipt  TEXT    NOT NULL,
    scope    TEXT    NOT NULL,
    id       TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    PRIMARY KEY (receipt, scope, id)
);
INSERT INTO replies3 SELECT r.receipt, h.scope, r.id, r.version FROM replies r
    JOIN heads3 h ON h.id = r.id;
DROP TABLE notices;
DROP TABLE heads;
DROP TABLE manifest;
DROP TABLE manifest_entries;
DROP TABLE replies;
ALTER TABLE notices3 RENAME TO notices;
ALTER TABLE heads3 RENAME TO heads;
ALTER TABLE manifest_entries3 RENAME TO manifest_entries;
ALTER TABLE replies3 RENAME TO replies;
-- Feedback about an upper-scope notice names its scope; NULL is the home one.
ALTER TABLE outbox ADD COLUMN notice_scope TEXT;
-- Commands taken (section 5), kept until they expire so that a redelivery
-- never runs one twice.
-- The proof-of-play chain (section 7): append-only, one row per record.
CREATE TABLE plays (
    seq     INTEGER PRIMARY KEY,
    record  TEXT    NOT NULL,
    hash    TEXT    NOT NULL
);
CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    action      TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    received_at TEXT NOT NULL
);
"#,
];

/// One message whose verdict is to be recorded.
#[derive(Debug)]
pub struct Incoming {
    pub topic: String,
    pub bytes: Vec<u8>,
    pub verdict: std::result::Result<Verified, Rejection>,
}

/// A notice's identity: notices are identified by (scope, id) (section 3.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoticeRef {
    pub scope: String,
    pub id: String,
}

impl NoticeRef {
    pub fn new(scope: &str, id: &str) -> Self {
        Self {
            scope: scope.to_owned(),
            id: id.to_owned(),
        }
    }
}

/// What recording one message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new head for this notice.
    Accepted(Item),
    /// Already held exactly, or lower than held: nothing changed.
    Duplicate,
    Replay {
        held: u64,
    },
    /// A newer manifest of `scope` (or a reset); it replaces the old one.
    /// `pages` is how many pages an index announces; its entries then come
    /// with the pages.
    Manifest {
        scope: String,
        version: u64,
        entries: Vec<(String, u64)>,
        pages: Option<u32>,
    },
    /// A page of the held index, now held.
    ManifestPage {
        scope: String,
        version: u64,
        page: u32,
        entries: Vec<(String, u64)>,
    },
    /// Not newer than the manifest held.
    StaleManifest {
        held: u64,
    },
    /// A page of a version other than the index held: ignored, not refused
    /// (publishers write the pages of the next version before its index).
    OtherPage {
        version: u64,
        held: Option<u64>,
    },
    Rejected(RejectionRecord),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RejectionRecord {
    pub topic: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The manifest a screen holds for one scope, reduced to what catch-up needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestState {
    pub version: u64,
    /// What it lists, as far as it is held (every held page, for an index).
    pub entries: Vec<(String, u64)>,
    /// For an index: how many pages it has and which are held.
    pub pages: Option<Pages>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pages {
    pub count: u32,
    pub held: std::collections::BTreeSet<u32>,
}

impl ManifestState {
    /// Pages of the index not held yet, in order.
    pub fn missing_pages(&self) -> Vec<u32> {
        self.pages
            .iter()
            .flat_map(|p| (1..=p.count).filter(|k| !p.held.contains(k)))
            .collect()
    }
}

/// Everything the running daemon keeps in memory, loaded once at start and
/// then kept current from `Outcome`s. Payload bodies stay on disk.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub items: BTreeMap<NoticeRef, Item>,
    /// The held manifest of each scope.
    pub manifests: BTreeMap<String, ManifestState>,
    pub rejected: u64,
    pub last_rejection: Option<RejectionRecord>,
    /// When the screen last committed anything from the broker.
    pub last_sync: Option<OffsetDateTime>,
    /// Why the store refuses commits, while it does (a full or failing
    /// disk): the status says so instead of pretending all is well.
    pub store_error: Option<String>,
}

impl Catalog {
    /// Applies what one commit did.
    pub fn apply(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Accepted(item) => {
                self.items
                    .insert(NoticeRef::new(&item.scope, &item.id), item.clone());
            }
            Outcome::Manifest {
                scope,
                version,
                entries,
                pages,
            } => {
                self.manifests.insert(
                    scope.clone(),
                    ManifestState {
                        version: *version,
                        entries: entries.clone(),
                        pages: pages.map(|count| Pages {
                            count,
                            held: Default::default(),
                        }),
                    },
                );
            }
            Outcome::ManifestPage {
                scope,
                version,
                page,
                entries,
            } => {
                if let Some(m) = self
                    .manifests
                    .get_mut(scope)
                    .filter(|m| m.version == *version)
                {
                    if let Some(pages) = &mut m.pages {
                        pages.held.insert(*page);
                    }
                    m.entries.extend(entries.iter().cloned());
                }
            }
            Outcome::Rejected(record) => {
                self.rejected += 1;
                self.last_rejection = Some(record.clone());
            }
            Outcome::Duplicate
            | Outcome::Replay { .. }
            | Outcome::StaleManifest { .. }
            | Outcome::OtherPage { .. } => {}
        }
    }

    /// The head of one notice.
    pub fn item(&self, scope: &str, id: &str) -> Option<&Item> {
        self.items.get(&NoticeRef::new(scope, id))
    }

    pub fn manifest(&self, scope: &str) -> Option<&ManifestState> {
        self.manifests.get(scope)
    }

    /// Notices of `scope` listed by its manifest that the screen lacks at
    /// that version or higher.
    pub fn missing_in(&self, scope: &str) -> Vec<String> {
        self.manifests
            .get(scope)
            .iter()
            .flat_map(|m| &m.entries)
            .filter(|(id, version)| self.item(scope, id).is_none_or(|i| i.version < *version))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every listed notice the screen lacks, over all scopes.
    pub fn missing(&self) -> Vec<NoticeRef> {
        self.manifests
            .keys()
            .flat_map(|scope| {
                self.missing_in(scope)
                    .into_iter()
                    .map(move |id| NoticeRef::new(scope, &id))
            })
            .collect()
    }

    /// Pages of held indexes not held yet, as (scope, page).
    pub fn missing_pages(&self) -> Vec<(String, u32)> {
        self.manifests
            .iter()
            .flat_map(|(scope, m)| m.missing_pages().into_iter().map(|k| (scope.clone(), k)))
            .collect()
    }
}

/// A row of `gongkai cache`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheRow {
    pub scope: String,
    pub id: String,
    pub version: u64,
    pub status: String,
    pub category: String,
    pub priority: String,
    pub title: String,
    pub valid_from: String,
    pub valid_until: String,
    pub active: bool,
    pub versions_kept: u64,
}

pub struct Store {
    conn: Connection,
}

fn now_text() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// Opens a database for writing, creating its folder and file if needed:
/// WAL, `synchronous=FULL` (a commit that returned survives power loss), and
/// every migration not yet applied (`user_version` counts them). The write
/// lock is taken before the version is read, so two processes opening the
/// file at once never run the same migration twice.
fn open_durable(path: &Path, migrations: &[&str]) -> Result<Connection> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
    }
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in migrations.iter().enumerate().skip(done) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(conn)
}

fn parse_time(text: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| StoreError::Corrupt(format!("{text}: {e}")))
}

impl Store {
    /// Opens (creating if needed) the store for the daemon.
    pub fn open(path: &Path) -> Result<Self> {
        let mut store = Self {
            conn: open_durable(path, MIGRATIONS)?,
        };
        store.fill_publishers()?;
        Ok(store)
    }

    /// Rows accepted before the store kept `publisher` have it empty (a
    /// valid notice never has): it is read from their signed payloads once,
    /// so the check at start still finds each row equal to its payload.
    fn fill_publishers(&mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        let rows: Vec<(String, String, u64, Vec<u8>)> = {
            let mut stmt = tx
                .prepare("SELECT scope, id, version, envelope FROM notices WHERE publisher = ''")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (scope, id, version, envelope) in rows {
            // One that does not parse is left for the check at start to refuse.
            if let Ok(notice) = crate::protocol::Notice::from_envelope(&envelope) {
                tx.execute(
                    "UPDATE notices SET publisher = ?4 WHERE scope = ?1 AND id = ?2 AND version = ?3",
                    params![scope, id, version, notice.publisher],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Opens the store read-only, beside a running daemon (WAL allows it).
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Records the fate of every message in one transaction and returns what
    /// each did. Nothing is acknowledged to the broker before this returns.
    ///
    /// Each message is recorded under a savepoint of its own: should the
    /// database refuse what one message asks of it (a value SQLite cannot
    /// hold, say), that message alone is rolled back and rejected with the
    /// reason, and the rest of the batch commits. No input can keep a batch
    /// from committing; only a failing disk can, and then nothing is lost
    /// because nothing was acknowledged.
    pub fn commit(&mut self, batch: &[Incoming]) -> Result<Vec<Outcome>> {
        let mut tx = self.conn.transaction()?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for incoming in batch {
            let savepoint = tx.savepoint()?;
            match record(&savepoint, incoming) {
                Ok(outcome) => {
                    savepoint.commit()?;
                    outcomes.push(outcome);
                }
                Err(StoreError::Sql(e)) if is_data_error(&e) => {
                    drop(savepoint); // rolls back what this message wrote
                    let refused = Rejection::Invalid(format!("the store cannot record it: {e}"));
                    outcomes.push(reject(&tx, &incoming.topic, &incoming.bytes, &refused)?);
                }
                Err(e) => return Err(e),
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_sync', ?1)",
            [now_text()],
        )?;
        tx.commit()?;
        Ok(outcomes)
    }

    /// The in-memory view the daemon starts from.
    pub fn load_catalog(&self) -> Result<Catalog> {
        let mut catalog = Catalog::default();
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS} FROM heads h
             JOIN notices n ON n.scope = h.scope AND n.id = h.id AND n.version = h.version"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let item = item_from_row(row)?;
            catalog
                .items
                .insert(NoticeRef::new(&item.scope, &item.id), item);
        }
        catalog.manifests = self.manifest_states()?;
        catalog.rejected = self
            .meta("rejected_total")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        catalog.last_rejection = self.rejections(1)?.into_iter().next();
        catalog.last_sync = self
            .meta("last_sync")?
            .map(|t| parse_time(&t))
            .transpose()?;
        Ok(catalog)
    }

    /// The held manifest of every scope.
    pub fn manifest_states(&self) -> Result<BTreeMap<String, ManifestState>> {
        let mut out = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT scope, version, pages FROM manifests")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            let (scope, version, pages) = row?;
            let pages = pages
                .map(|text| {
                    serde_json::from_str::<Vec<crate::protocol::PageRef>>(&text)
                        .map_err(|e| StoreError::Corrupt(format!("manifest pages: {e}")))
                })
                .transpose()?;
            out.insert(
                scope,
                ManifestState {
                    version,
                    entries: Vec::new(),
                    pages: pages.map(|p| Pages {
                        count: p.len() as u32,
                        held: Default::default(),
                    }),
                },
            );
        }
        let mut stmt = self
            .conn
            .prepare("SELECT scope, id, version FROM manifest_entries ORDER BY scope, id")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        for row in rows {
            let (scope, id, version) = row?;
            if let Some(m) = out.get_mut(&scope) {
                m.entries.push((id, version));
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT scope, page FROM manifest_pages")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
        for row in rows {
            let (scope, page) = row?;
            if let Some(pages) = out.get_mut(&scope).and_then(|m| m.pages.as_mut()) {
                pages.held.insert(page);
            }
        }
        Ok(out)
    }

    /// The held manifest of one scope.
    pub fn manifest_state(&self, scope: &str) -> Result<Option<ManifestState>> {
        Ok(self.manifest_states()?.remove(scope))
    }

    /// The newest rejections, newest first.
    pub fn rejections(&self, limit: usize) -> Result<Vec<RejectionRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT topic, reason, at FROM rejections ORDER BY seq DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (topic, reason, at) = row?;
            Ok(RejectionRecord {
                topic,
                reason,
                at: parse_time(&at)?,
            })
        })
        .collect()
    }

    /// The envelope bytes of one notice version, as received. They are
    /// checked against the hash recorded when they were accepted: a copy
    /// edited on disk is refused (`StoreError::Tampered`), never shown.
    pub fn envelope(&self, scope: &str, id: &str, version: u64) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>, String)> = self
            .conn
            .query_row(
                "SELECT envelope, envelope_sha256 FROM notices
                 WHERE scope = ?1 AND id = ?2 AND version = ?3",
                params![scope, id, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((bytes, sha)) if crate::protocol::sha256_hex(&bytes) == sha => Ok(Some(bytes)),
            Some(_) => Err(StoreError::Tampered {
                id: id.to_owned(),
                version,
            }),
        }
    }

    /// The head version of every notice as stored, for the check at start
    /// (see `refuse_stored`).
    pub fn stored_heads(&self) -> Result<Vec<StoredHead>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS}, n.topic, n.envelope, n.envelope_sha256, n.reviewed
             FROM heads h
             JOIN notices n ON n.scope = h.scope AND n.id = h.id AND n.version = h.version"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            // A row whose columns no longer parse is as tampered as one whose
            // bytes changed: the check refuses it rather than the start failing.
            let item = item_from_row(row).map_err(|e| e.to_string());
            out.push(StoredHead {
                scope: row.get(0)?,
                id: row.get(1)?,
                version: row.get(2)?,
                item,
                topic: row.get(ITEM_COLUMN_COUNT)?,
                envelope: row.get(ITEM_COLUMN_COUNT + 1)?,
                envelope_sha256: row.get(ITEM_COLUMN_COUNT + 2)?,
                reviewed: row.get(ITEM_COLUMN_COUNT + 3)?,
            });
        }
        Ok(out)
    }

    /// Takes a stored notice version that failed its check out of the store:
    /// the row goes, the head falls back to the highest version left (or
    /// goes too), and a rejection records why. Returns the rejection. The
    /// broker still holds the notice, and fetching it again restores it.
    pub fn refuse_stored(
        &mut self,
        notice: &NoticeRef,
        version: u64,
        why: &str,
    ) -> Result<RejectionRecord> {
        let (scope, id) = (&notice.scope, &notice.id);
        let tx = self.conn.transaction()?;
        let (topic, bytes): (String, Vec<u8>) = tx.query_row(
            "SELECT topic, envelope FROM notices WHERE scope = ?1 AND id = ?2 AND version = ?3",
            params![scope, id, version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "DELETE FROM notices WHERE scope = ?1 AND id = ?2 AND version = ?3",
            params![scope, id, version],
        )?;
        tx.execute(
            "DELETE FROM replies WHERE scope = ?1 AND id = ?2 AND version = ?3",
            params![scope, id, version],
        )?;
        let below: Option<u64> = tx.query_row(
            "SELECT MAX(version) FROM notices WHERE scope = ?1 AND id = ?2",
            params![scope, id],
            |r| r.get(0),
        )?;
        match below {
            Some(v) => tx.execute(
                "UPDATE heads SET version = ?3 WHERE scope = ?1 AND id = ?2",
                params![scope, id, v],
            )?,
            None => tx.execute(
                "DELETE FROM heads WHERE scope = ?1 AND id = ?2",
                params![scope, id],
            )?,
        };
        let reason = Rejection::Invalid(format!(
            "the stored copy of {id} version {version} failed its check ({why}); it was \
             taken out of the store and is fetched again"
        ));
        let Outcome::Rejected(record) = reject(&tx, &topic, &bytes, &reason)? else {
            unreachable!("reject records a rejection");
        };
        tx.commit()?;
        Ok(record)
    }

    /// Takes command `id` for execution: `true` the first time, `false` for
    /// a redelivery of one taken before (until it expires, after which its
    /// row is pruned and the command itself is refused as expired). Commits
    /// before it returns, so a crash after it never runs the command twice.
    pub fn take_command(
        &mut self,
        id: &str,
        action: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        // UTC text compares as the instants it names.
        let utc = |t: OffsetDateTime| rfc3339(t.to_offset(time::UtcOffset::UTC));
        tx.execute("DELETE FROM commands WHERE expires_at < ?1", [utc(now)])?;
        let taken = tx.execute(
            "INSERT OR IGNORE INTO commands (id, action, expires_at, received_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![id, action, utc(expires_at), utc(now)],
        )?;
        tx.commit()?;
        Ok(taken == 1)
    }

    /// Whether a supervisor's signature verified on this notice version.
    pub fn reviewed(&self, scope: &str, id: &str, version: u64) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT reviewed FROM notices WHERE scope = ?1 AND id = ?2 AND version = ?3",
                params![scope, id, version],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Records what the check at start found of a head's review signature.
    pub fn set_reviewed(&mut self, notice: &NoticeRef, version: u64, reviewed: bool) -> Result<()> {
        self.conn.execute(
            "UPDATE notices SET reviewed = ?4 WHERE scope = ?1 AND id = ?2 AND version = ?3",
            params![notice.scope, notice.id, version, reviewed],
        )?;
        Ok(())
    }

    /// Every version kept of one notice, oldest first (the archive).
    pub fn versions(&self, scope: &str, id: &str) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT version FROM notices WHERE scope = ?1 AND id = ?2 ORDER BY version")?;
        let rows = stmt.query_map(params![scope, id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// What `gongkai cache` shows: the head of every notice.
    pub fn cache_rows(&self, audience: &Audience, now: OffsetDateTime) -> Result<Vec<CacheRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS},
                    (SELECT COUNT(*) FROM notices a WHERE a.scope = n.scope AND a.id = n.id)
             FROM heads h
             JOIN notices n ON n.scope = h.scope AND n.id = h.id AND n.version = h.version
             ORDER BY n.scope, n.category, n.id"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let item = item_from_row(row)?;
            out.push(CacheRow {
                active: item.is_active(audience, now),
                scope: item.scope,
                id: item.id,
                version: item.version,
                status: item.status.as_str().to_owned(),
                category: item.category.as_str().to_owned(),
                priority: item.priority.as_str().to_owned(),
                title: item.title,
                valid_from: row.get(7)?,
                valid_until: row.get(8)?,
                versions_kept: row.get(ITEM_COLUMN_COUNT)?,
            });
        }
        Ok(out)
    }
}

/// The columns `item_from_row` reads, in order, from `notices n`.
const ITEM_COLUMNS: &str = "n.scope, n.id, n.version, n.status, n.category, n.priority, n.title,
    n.valid_from, n.valid_until, n.screens, n.communities, n.publisher";
const ITEM_COLUMN_COUNT: usize = 12;

fn item_from_row(row: &rusqlite::Row<'_>) -> Result<Item> {
    let text = |i: usize| row.get::<_, String>(i);
    let corrupt = |what: &str, value: String| StoreError::Corrupt(format!("{what} {value:?}"));
    let list = |i: usize| -> Result<Vec<String>> {
        serde_json::from_str(&text(i)?).map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    let status = text(3)?;
    let category = text(4)?;
    let priority = text(5)?;
    Ok(Item {
        scope: text(0)?,
        id: text(1)?,
        version: row.get(2)?,
        status: Status::parse(&status).ok_or_else(|| corrupt("status", status.clone()))?,
        category: Category::parse(&category)
            .ok_or_else(|| corrupt("category", category.clone()))?,
        priority: Priority::parse(&priority)
            .ok_or_else(|| corrupt("priority", priority.clone()))?,
        title: text(6)?,
        valid_from: parse_time(&text(7)?)?,
        valid_until: parse_time(&text(8)?)?,
        screens: list(9)?,
        communities: list(10)?,
        publisher: text(11)?,
    })
}

/// Whether an error is about the values one message carried rather than
/// the database itself (disk full, I/O, a lock): the former rejects that
/// message, the latter fails the whole commit so that it is retried.
fn is_data_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    match e {
        rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidParameterCount(..) => true,
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch
        ),
        _ => false,
    }
}

fn record(tx: &rusqlite::Connection, incoming: &Incoming) -> Result<Outcome> {
    let verified = match &incoming.verdict {
        Err(rejection) => return reject(tx, &incoming.topic, &incoming.bytes, rejection),
        Ok(v) => v,
    };
    match verified {
        Verified::Notice(v) => record_notice(tx, incoming, v),
        Verified::Manifest(v) => record_manifest(tx, v),
        Verified::ManifestPage(v) => record_page(tx, incoming, v),
    }
}

fn record_notice(
    tx: &rusqlite::Connection,
    incoming: &Incoming,
    v: &crate::protocol::VerifiedNotice,
) -> Result<Outcome> {
    let n = &v.notice;
    // The payload's community is the scope of its topic (verified).
    let scope = &n.community;
    let held: Option<(u64, String)> = tx
        .query_row(
            "SELECT n.version, n.payload_sha256 FROM heads h
             JOIN notices n ON n.scope = h.scope AND n.id = h.id AND n.version = h.version
             WHERE h.scope = ?1 AND h.id = ?2",
            params![scope, n.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let held_ref = held.as_ref().map(|(version, sha)| Held {
        version: *version,
        payload_sha256: sha,
    });
    match ordering::decide(held_ref, n.version, &v.payload_sha256) {
        Ordering::Duplicate => Ok(Outcome::Duplicate),
        Ordering::Replay => Ok(Outcome::Replay {
            held: held.map_or(0, |h| h.0),
        }),
        Ordering::Equivocation => reject(
            tx,
            &incoming.topic,
            &incoming.bytes,
            &Rejection::Equivocation {
                id: n.id.clone(),
                version: n.version,
            },
        ),
        Ordering::Newer => {
            let item = Item::of(n);
            let json = |list: &Vec<String>| serde_json::to_string(list).expect("strings serialise");
            tx.execute(
                "INSERT OR REPLACE INTO notices (scope, id, version, status, category, priority,
                    title, valid_from, valid_until, screens, communities, payload_sha256,
                    envelope_sha256, envelope, topic, received_at, publisher, reviewed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18)",
                params![
                    scope,
                    n.id,
                    n.version,
                    n.status.as_str(),
                    n.category.as_str(),
                    n.priority.as_str(),
                    n.title,
                    rfc3339(n.valid_from),
                    rfc3339(n.valid_until),
                    json(&n.screens),
                    json(&n.communities),
                    v.payload_sha256,
                    v.envelope_sha256,
                    incoming.bytes,
                    incoming.topic,
                    now_text(),
                    n.publisher,
                    n.review_verified,
                ],
            )?;
            tx.execute(
                "INSERT INTO heads (scope, id, version) VALUES (?1, ?2, ?3)
                 ON CONFLICT (scope, id) DO UPDATE SET version = excluded.version",
                params![scope, n.id, n.version],
            )?;
            // A reply answers receipts: residents look it up by code.
            for receipt in &n.reply_to {
                tx.execute(
                    "INSERT INTO replies (receipt, scope, id, version) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (receipt, scope, id) DO UPDATE SET version = excluded.version",
                    params![receipt, scope, n.id, n.version],
                )?;
            }
            Ok(Outcome::Accepted(item))
        }
    }
}

/// A newer manifest, or a reset whatever its version, replaces the one
/// held for its scope, with its entries (or, for an index, the pages to come).
fn record_manifest(
    tx: &rusqlite::Connection,
    v: &crate::protocol::VerifiedManifest,
) -> Result<Outcome> {
    let m = &v.manifest;
    let scope = &m.community;
    let held: Option<u64> = tx
        .query_row(
            "SELECT version FROM manifests WHERE scope = ?1",
            [scope],
            |r| r.get(0),
        )
        .optional()?;
    // A reset carries the office's and the supervisor's signatures (verified):
    // it replaces a mistaken huge version that would stop catch-up for good.
    if let Some(held) = held.filter(|h| *h >= m.version && !m.reset) {
        return Ok(Outcome::StaleManifest { held });
    }
    let pages = m
        .pages
        .as_ref()
        .map(|p| serde_json::to_string(p).expect("page refs serialise"));
    tx.execute(
        "INSERT INTO manifests (scope, version, issued_at, envelope_sha256, received_at, pages)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (scope) DO UPDATE SET version = excluded.version,
            issued_at = excluded.issued_at, envelope_sha256 = excluded.envelope_sha256,
            received_at = excluded.received_at, pages = excluded.pages",
        params![
            scope,
            m.version,
            rfc3339(m.issued_at),
            v.envelope_sha256,
            now_text(),
            pages
        ],
    )?;
    tx.execute("DELETE FROM manifest_entries WHERE scope = ?1", [scope])?;
    tx.execute("DELETE FROM manifest_pages WHERE scope = ?1", [scope])?;
    insert_entries(tx, scope, 0, m.entries())?;
    Ok(Outcome::Manifest {
        scope: scope.clone(),
        version: m.version,
        entries: m
            .entries()
            .iter()
            .map(|e| (e.id.clone(), e.version))
            .collect(),
        pages: m.pages.as_ref().map(|p| p.len() as u32),
    })
}

fn insert_entries(
    tx: &rusqlite::Connection,
    scope: &str,
    page: u32,
    entries: &[crate::protocol::ManifestEntry],
) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO manifest_entries (scope, id, version, sha256, page) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for e in entries {
        insert.execute(params![scope, e.id, e.version, e.sha256, page])?;
    }
    Ok(())
}

/// A page counts only when the held index of its scope lists its exact
/// envelope hash at its number (section 3.6); a page of another version is
/// ignored.
fn record_page(
    tx: &rusqlite::Connection,
    incoming: &Incoming,
    v: &crate::protocol::VerifiedPage,
) -> Result<Outcome> {
    let p = &v.page;
    let scope = &p.community;
    let held: Option<(u64, Option<String>)> = tx
        .query_row(
            "SELECT version, pages FROM manifests WHERE scope = ?1",
            [scope],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let refs = match held {
        Some((version, Some(pages))) if version == p.version => {
            serde_json::from_str::<Vec<crate::protocol::PageRef>>(&pages)
                .map_err(|e| StoreError::Corrupt(format!("manifest pages: {e}")))?
        }
        other => {
            return Ok(Outcome::OtherPage {
                version: p.version,
                held: other.map(|(v, _)| v),
            });
        }
    };
    let refuse = |why: Rejection| reject(tx, &incoming.topic, &incoming.bytes, &why);
    let Some(listed) = refs.get(p.page as usize - 1) else {
        return refuse(Rejection::invalid(format!(
            "page {} is not in the index of manifest version {}, which has {} pages",
            p.page,
            p.version,
            refs.len()
        )));
    };
    if listed.sha256 != v.envelope_sha256 {
        return refuse(Rejection::PageNotIndexed {
            page: p.page,
            version: p.version,
            got: v.envelope_sha256.clone(),
            listed: listed.sha256.clone(),
        });
    }
    let already: Option<String> = tx
        .query_row(
            "SELECT envelope_sha256 FROM manifest_pages WHERE scope = ?1 AND page = ?2",
            params![scope, p.page],
            |r| r.get(0),
        )
        .optional()?;
    if already.is_some() {
        return Ok(Outcome::Duplicate);
    }
    // The index's hash covers the page, so what follows is the publisher's
    // own mistake; it is refused rather than half-recorded.
    if listed.count != p.notices.len() as u64 {
        return refuse(Rejection::invalid(format!(
            "page {} lists {} notices, the index says {}",
            p.page,
            p.notices.len(),
            listed.count
        )));
    }
    for e in &p.notices {
        let other: Option<u32> = tx
            .query_row(
                "SELECT page FROM manifest_entries WHERE scope = ?1 AND id = ?2",
                params![scope, e.id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = other {
            return refuse(Rejection::invalid(format!(
                "page {} lists {:?}, which page {other} lists already",
                p.page, e.id
            )));
        }
    }
    tx.execute(
        "INSERT INTO manifest_pages (scope, page, envelope_sha256) VALUES (?1, ?2, ?3)",
        params![scope, p.page, v.envelope_sha256],
    )?;
    insert_entries(tx, scope, p.page, &p.notices)?;
    Ok(Outcome::ManifestPage {
        scope: scope.clone(),
        version: p.version,
        page: p.page,
        entries: p
            .notices
            .iter()
            .map(|e| (e.id.clone(), e.version))
            .collect(),
    })
}

fn reject(
    tx: &rusqlite::Connection,
    topic: &str,
    bytes: &[u8],
    rejection: &Rejection,
) -> Result<Outcome> {
    // Topics and reasons quote what an unsigned sender wrote: escape it once
    // here, so that no log line, status or terminal that shows them later
    // receives raw control characters.
    let record = RejectionRecord {
        topic: printable(topic).into_owned(),
        reason: printable(&rejection.to_string()).into_owned(),
        at: OffsetDateTime::now_utc(),
    };
    tx.execute(
        "INSERT INTO rejections (at, topic, reason, envelope_sha256, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            rfc3339(record.at),
            record.topic,
            record.reason,
            crate::protocol::sha256_hex(bytes),
            bytes.len() as i64,
        ],
    )?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('rejected_total', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )?;
    tx.execute(
        "DELETE FROM rejections WHERE seq <= (SELECT MAX(seq) FROM rejections) - ?1",
        [REJECTIONS_KEPT],
    )?;
    Ok(Outcome::Rejected(record))
}

pub mod office;
pub mod outbox;
pub mod plays;

impl Store {
    /// The newest active reply notice that answers `receipt`, if the screen
    /// holds one.
    pub fn reply_for(&self, receipt: &str) -> Result<Option<crate::schedule::Key>> {
        Ok(self
            .conn
            .query_row(
                "SELECT r.scope, r.id, h.version FROM replies r
                 JOIN heads h ON h.scope = r.scope AND h.id = r.id
                 JOIN notices n ON n.scope = h.scope AND n.id = h.id AND n.version = h.version
                 WHERE r.receipt = ?1 AND n.status = 'active'
                 ORDER BY n.valid_from DESC LIMIT 1",
                [receipt],
                |r| {
                    Ok(crate::schedule::Key {
                        scope: r.get(0)?,
                        id: r.get(1)?,
                        version: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{SecretKey, TopicSpace, TrustPolicy, verify_message};

    /// A store written by a 1.0 screen (migrations 1 and 2: notices keyed by
    /// id alone, one manifest) is migrated without losing a row: each notice
    /// gets the scope its topic names, heads, replies and the manifest follow,
    /// and `publisher` is read back from the signed payloads.
    #[test]
    fn a_store_of_1_0_keeps_every_row_under_its_scope() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("screen.db");
        let now = OffsetDateTime::now_utc();
        let (id, payload) = crate::demo::shifted_samples(now).remove(0);
        let (office, supervisor) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let envelope = crate::demo::dual_sign(&payload, &office, &supervisor).to_bytes();
        let space = TopicSpace::new("site/gongkai/v1", "lixia-demo");
        let topic = space.notice(&id);
        let policy = TrustPolicy {
            office: vec![office.public()],
            supervisor: vec![supervisor.public()],
            ..TrustPolicy::default()
        };
        let Ok(Verified::Notice(v)) = verify_message(&space, &topic, &envelope, &policy) else {
            panic!("the sample verifies");
        };
        {
            let conn = open_durable(&path, &MIGRATIONS[..2]).unwrap();
            let n = &v.notice;
            conn.execute(
                "INSERT INTO notices (id, version, status, category, priority, title, valid_from,
                    valid_until, screens, payload_sha256, envelope_sha256, envelope, topic,
                    received_at)
                 VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?6, ?7, '[]', ?8, ?9, ?10, ?11, ?12)",
                params![
                    n.id,
                    n.version,
                    n.category.as_str(),
                    n.priority.as_str(),
                    n.title,
                    rfc3339(n.valid_from),
                    rfc3339(n.valid_until),
                    v.payload_sha256,
                    v.envelope_sha256,
                    envelope,
                    topic,
                    now_text()
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO heads (id, version) VALUES (?1, ?2)",
                params![n.id, n.version],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO manifest (slot, version, issued_at, envelope_sha256, received_at)
                 VALUES (1, 7, ?1, ?2, ?1)",
                params![now_text(), "00".repeat(32)],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO manifest_entries (id, version, sha256) VALUES (?1, ?2, ?3)",
                params![n.id, n.version, v.envelope_sha256],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO replies (receipt, id, version) VALUES ('K7Q2MD', ?1, ?2)",
                params![n.id, n.version],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let catalog = store.load_catalog().unwrap();
        let item = catalog
            .item("lixia-demo", &id)
            .expect("kept under its scope");
        assert_eq!(
            *item,
            Item::of(&v.notice),
            "publisher filled from the payload"
        );
        assert_eq!(catalog.manifest("lixia-demo").unwrap().version, 7);
        assert!(catalog.missing().is_empty());
        assert_eq!(
            store.envelope("lixia-demo", &id, v.notice.version).unwrap(),
            Some(envelope)
        );
        assert_eq!(store.reply_for("K7Q2MD").unwrap().unwrap().id, id);
        assert_eq!(store.stored_heads().unwrap()[0].scope, "lixia-demo");
    }
}
