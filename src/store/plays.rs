//! The screen's proof-of-play chain (PROTOCOL.md 1.1, section 7): an
//! append-only log, each record sealed with the hash of the one before and
//! committed (`synchronous=FULL`) before the next starts, so that a record
//! that was committed survives `kill -9` and power loss. A connection of its
//! own to the screen's store file; only the daemon's plays task writes it.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, StoreError};
use crate::protocol::plays::{PlayRecord, Trigger};

pub struct PlayLog {
    conn: Connection,
}

/// A play that ended, before it is sealed into the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Play {
    pub scope: String,
    pub notice_id: String,
    pub version: u64,
    /// UTC, three fractional digits and `Z`.
    pub started_at: String,
    pub duration_ms: u64,
    pub pages_shown: u32,
    pub trigger: Trigger,
}

impl PlayLog {
    /// Opens the log of the store at `path` (the daemon has created and
    /// migrated it).
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(PlayLog { conn })
    }

    /// Seals `play` after the head and commits it; returns the record.
    pub fn append(&mut self, play: Play) -> Result<PlayRecord> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let head = head_of(&tx)?;
        let record = PlayRecord {
            seq: 0,
            scope: play.scope,
            notice_id: play.notice_id,
            version: play.version,
            started_at: play.started_at,
            duration_ms: play.duration_ms,
            pages_shown: play.pages_shown,
            trigger: play.trigger,
            prev: String::new(),
            hash: String::new(),
        }
        .sealed_after(head.as_ref());
        tx.execute(
            "INSERT INTO plays (seq, record, hash) VALUES (?1, ?2, ?3)",
            params![
                record.seq,
                serde_json::to_string(&record).expect("records serialise"),
                record.hash
            ],
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// The seq through which the office has stored the chain, as it last
    /// said (0 before it said anything). Kept in the store, so that a
    /// restarted screen sends from where it stood; a lost store starts the
    /// chain, and this, again.
    pub fn acknowledged(&self) -> Result<u64> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'plays_acknowledged'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        text.map_or(Ok(0), |t| {
            t.parse()
                .map_err(|_| StoreError::Corrupt(format!("plays_acknowledged {t:?}")))
        })
    }

    /// Records what the office said it holds: through `seq`.
    pub fn set_acknowledged(&mut self, seq: u64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('plays_acknowledged', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [seq.to_string()],
        )?;
        Ok(())
    }

    /// The last record of the chain.
    pub fn head(&self) -> Result<Option<PlayRecord>> {
        head_of(&self.conn)
    }

    /// Records from `seq` on, at most `limit`, in order.
    pub fn records(&self, from_seq: u64, limit: usize) -> Result<Vec<PlayRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT record FROM plays WHERE seq >= ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![from_seq, limit as i64], |r| r.get::<_, String>(0))?;
        rows.map(|text| {
            serde_json::from_str(&text?).map_err(|e| StoreError::Corrupt(format!("play: {e}")))
        })
        .collect()
    }
}

fn head_of(conn: &Connection) -> Result<Option<PlayRecord>> {
    let text: Option<String> = conn
        .query_row(
            "SELECT record FROM plays ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("play: {e}"))))
        .transpose()
}
