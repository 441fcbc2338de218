//! The screen's durable cache and archive: the only user of SQLite.
//!
//! Every accepted notice version is kept (the archive); `heads` names the
//! highest version per id; the highest accepted manifest and its entries are
//! kept; rejections are logged with their reasons. The database runs in WAL
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
use crate::schedule::Item;

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
    pub id: String,
    pub version: u64,
    /// The columns the catalog is built from, or why they do not parse.
    pub item: std::result::Result<Item, String>,
    pub topic: String,
    pub envelope: Vec<u8>,
    pub envelope_sha256: String,
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
];

/// One message whose verdict is to be recorded.
#[derive(Debug)]
pub struct Incoming {
    pub topic: String,
    pub bytes: Vec<u8>,
    pub verdict: std::result::Result<Verified, Rejection>,
}

/// What recording one message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new head for this notice id.
    Accepted(Item),
    /// Already held exactly, or lower than held: nothing changed.
    Duplicate,
    Replay {
        held: u64,
    },
    /// A newer manifest; its entries replace the old ones.
    Manifest {
        version: u64,
        entries: Vec<(String, u64)>,
    },
    /// Not newer than the manifest held.
    StaleManifest {
        held: u64,
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

/// The manifest a screen holds, reduced to what catch-up needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestState {
    pub version: u64,
    pub entries: Vec<(String, u64)>,
}

/// Everything the running daemon keeps in memory, loaded once at start and
/// then kept current from `Outcome`s. Payload bodies stay on disk.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub items: BTreeMap<String, Item>,
    pub manifest: Option<ManifestState>,
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
                self.items.insert(item.id.clone(), item.clone());
            }
            Outcome::Manifest { version, entries } => {
                self.manifest = Some(ManifestState {
                    version: *version,
                    entries: entries.clone(),
                });
            }
            Outcome::Rejected(record) => {
                self.rejected += 1;
                self.last_rejection = Some(record.clone());
            }
            Outcome::Duplicate | Outcome::Replay { .. } | Outcome::StaleManifest { .. } => {}
        }
    }

    /// Ids listed by the manifest that the screen lacks at that version or higher.
    pub fn missing(&self) -> Vec<String> {
        self.manifest
            .iter()
            .flat_map(|m| &m.entries)
            .filter(|(id, version)| self.items.get(id).is_none_or(|i| i.version < *version))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A row of `gongkai cache`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheRow {
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
        Ok(Self {
            conn: open_durable(path, MIGRATIONS)?,
        })
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
        let mut stmt = self.conn.prepare(
            "SELECT n.id, n.version, n.status, n.category, n.priority, n.title,
                    n.valid_from, n.valid_until, n.screens
             FROM heads h JOIN notices n ON n.id = h.id AND n.version = h.version",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let item = item_from_row(row)?;
            catalog.items.insert(item.id.clone(), item);
        }
        catalog.manifest = self.manifest_state()?;
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

    pub fn manifest_state(&self) -> Result<Option<ManifestState>> {
        let version: Option<u64> = self
            .conn
            .query_row("SELECT version FROM manifest WHERE slot = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(version) = version else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT id, version FROM manifest_entries ORDER BY id")?;
        let entries = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(String, u64)>>>()?;
        Ok(Some(ManifestState { version, entries }))
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
    pub fn envelope(&self, id: &str, version: u64) -> Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>, String)> = self
            .conn
            .query_row(
                "SELECT envelope, envelope_sha256 FROM notices WHERE id = ?1 AND version = ?2",
                params![id, version],
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
        let mut stmt = self.conn.prepare(
            "SELECT n.id, n.version, n.status, n.category, n.priority, n.title,
                    n.valid_from, n.valid_until, n.screens, n.topic, n.envelope, n.envelope_sha256
             FROM heads h JOIN notices n ON n.id = h.id AND n.version = h.version",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            // A row whose columns no longer parse is as tampered as one whose
            // bytes changed: the check refuses it rather than the start failing.
            let item = item_from_row(row).map_err(|e| e.to_string());
            out.push(StoredHead {
                id: row.get(0)?,
                version: row.get(1)?,
                item,
                topic: row.get(9)?,
                envelope: row.get(10)?,
                envelope_sha256: row.get(11)?,
            });
        }
        Ok(out)
    }

    /// Takes a stored notice version that failed its check out of the store:
    /// the row goes, the head falls back to the highest version left (or
    /// goes too), and a rejection records why. Returns the rejection. The
    /// broker still holds the notice, and fetching it again restores it.
    pub fn refuse_stored(&mut self, id: &str, version: u64, why: &str) -> Result<RejectionRecord> {
        let tx = self.conn.transaction()?;
        let (topic, bytes): (String, Vec<u8>) = tx.query_row(
            "SELECT topic, envelope FROM notices WHERE id = ?1 AND version = ?2",
            params![id, version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "DELETE FROM notices WHERE id = ?1 AND version = ?2",
            params![id, version],
        )?;
        tx.execute(
            "DELETE FROM replies WHERE id = ?1 AND version = ?2",
            params![id, version],
        )?;
        let below: Option<u64> = tx.query_row(
            "SELECT MAX(version) FROM notices WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?;
        match below {
            Some(v) => tx.execute(
                "UPDATE heads SET version = ?2 WHERE id = ?1",
                params![id, v],
            )?,
            None => tx.execute("DELETE FROM heads WHERE id = ?1", [id])?,
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

    /// Every version kept of one notice id, oldest first (the archive).
    pub fn versions(&self, id: &str) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT version FROM notices WHERE id = ?1 ORDER BY version")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// What `gongkai cache` shows: the head of every notice id.
    pub fn cache_rows(&self, screen: &str, now: OffsetDateTime) -> Result<Vec<CacheRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT n.id, n.version, n.status, n.category, n.priority, n.title,
                    n.valid_from, n.valid_until, n.screens,
                    (SELECT COUNT(*) FROM notices a WHERE a.id = n.id)
             FROM heads h JOIN notices n ON n.id = h.id AND n.version = h.version
             ORDER BY n.category, n.id",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let item = item_from_row(row)?;
            out.push(CacheRow {
                active: item.is_active(screen, now),
                id: item.id,
                version: item.version,
                status: item.status.as_str().to_owned(),
                category: item.category.as_str().to_owned(),
                priority: item.priority.as_str().to_owned(),
                title: item.title,
                valid_from: row.get(6)?,
                valid_until: row.get(7)?,
                versions_kept: row.get(9)?,
            });
        }
        Ok(out)
    }
}

fn item_from_row(row: &rusqlite::Row<'_>) -> Result<Item> {
    let text = |i: usize| row.get::<_, String>(i);
    let corrupt = |what: &str, value: String| StoreError::Corrupt(format!("{what} {value:?}"));
    let status = text(2)?;
    let category = text(3)?;
    let priority = text(4)?;
    Ok(Item {
        id: text(0)?,
        version: row.get(1)?,
        status: Status::parse(&status).ok_or_else(|| corrupt("status", status.clone()))?,
        category: Category::parse(&category)
            .ok_or_else(|| corrupt("category", category.clone()))?,
        priority: Priority::parse(&priority)
            .ok_or_else(|| corrupt("priority", priority.clone()))?,
        title: text(5)?,
        valid_from: parse_time(&text(6)?)?,
        valid_until: parse_time(&text(7)?)?,
        screens: serde_json::from_str(&text(8)?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
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
        Verified::Notice(v) => {
            let n = &v.notice;
            let held: Option<(u64, String)> = tx
                .query_row(
                    "SELECT n.version, n.payload_sha256 FROM heads h
                     JOIN notices n ON n.id = h.id AND n.version = h.version WHERE h.id = ?1",
                    [&n.id],
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
                    tx.execute(
                        "INSERT OR REPLACE INTO notices (id, version, status, category, priority, title,
                            valid_from, valid_until, screens, payload_sha256, envelope_sha256, envelope,
                            topic, received_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                        params![
                            n.id,
                            n.version,
                            n.status.as_str(),
                            n.category.as_str(),
                            n.priority.as_str(),
                            n.title,
                            rfc3339(n.valid_from),
                            rfc3339(n.valid_until),
                            serde_json::to_string(&n.screens).expect("strings serialise"),
                            v.payload_sha256,
                            v.envelope_sha256,
                            incoming.bytes,
                            incoming.topic,
                            now_text(),
                        ],
                    )?;
                    tx.execute(
                        "INSERT INTO heads (id, version) VALUES (?1, ?2)
                         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                        params![n.id, n.version],
                    )?;
                    // A reply answers receipts: residents look it up by code.
                    for receipt in &n.reply_to {
                        tx.execute(
                            "INSERT INTO replies (receipt, id, version) VALUES (?1, ?2, ?3)
                             ON CONFLICT (receipt, id) DO UPDATE SET version = excluded.version",
                            params![receipt, n.id, n.version],
                        )?;
                    }
                    Ok(Outcome::Accepted(item))
                }
            }
        }
        Verified::Manifest(v) => {
            let m = &v.manifest;
            let held: Option<u64> = tx
                .query_row("SELECT version FROM manifest WHERE slot = 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(held) = held.filter(|h| *h >= m.version) {
                return Ok(Outcome::StaleManifest { held });
            }
            tx.execute(
                "INSERT INTO manifest (slot, version, issued_at, envelope_sha256, received_at)
                 VALUES (1, ?1, ?2, ?3, ?4)
                 ON CONFLICT (slot) DO UPDATE SET version = excluded.version,
                    issued_at = excluded.issued_at, envelope_sha256 = excluded.envelope_sha256,
                    received_at = excluded.received_at",
                params![
                    m.version,
                    rfc3339(m.issued_at),
                    v.envelope_sha256,
                    now_text()
                ],
            )?;
            tx.execute("DELETE FROM manifest_entries", [])?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO manifest_entries (id, version, sha256) VALUES (?1, ?2, ?3)",
            )?;
            for e in &m.notices {
                insert.execute(params![e.id, e.version, e.sha256])?;
            }
            Ok(Outcome::Manifest {
                version: m.version,
                entries: m
                    .notices
                    .iter()
                    .map(|e| (e.id.clone(), e.version))
                    .collect(),
            })
        }
    }
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

impl Store {
    /// The newest active reply notice that answers `receipt`, if the screen
    /// holds one.
    pub fn reply_for(&self, receipt: &str) -> Result<Option<(String, u64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT r.id, h.version FROM replies r
                 JOIN heads h ON h.id = r.id
                 JOIN notices n ON n.id = h.id AND n.version = h.version
                 WHERE r.receipt = ?1 AND n.status = 'active'
                 ORDER BY n.valid_from DESC LIMIT 1",
                [receipt],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}
