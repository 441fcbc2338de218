//! The office's database, behind `gongkai office`: the screens and the hashes
//! of their tokens, residents' feedback, proof of play and screenshots. Same
//! discipline as the screen's store: WAL, `synchronous=FULL`, migrations
//! counted by `user_version`. A request is answered only after its commit.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, StoreError, now_text};
use crate::protocol::feedback::FeedbackItem;

const OFFICE_MIGRATIONS: &[&str] = &["
CREATE TABLE screens (
    screen      TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    issued_at   TEXT NOT NULL
);
CREATE TABLE feedback (
    id              TEXT PRIMARY KEY,
    screen          TEXT NOT NULL,
    community       TEXT NOT NULL,
    receipt         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    notice_id       TEXT,
    notice_version  INTEGER,
    kind            TEXT NOT NULL,
    rating          INTEGER,
    reasons         TEXT NOT NULL,
    text            TEXT NOT NULL,
    contact         TEXT NOT NULL
);
CREATE INDEX feedback_receipt ON feedback (receipt);
CREATE TABLE plays (
    screen       TEXT NOT NULL,
    community    TEXT NOT NULL,
    notice_id    TEXT NOT NULL,
    version      INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    PRIMARY KEY (screen, notice_id, version, started_at)
);
CREATE TABLE screenshots (
    command_id   TEXT PRIMARY KEY,
    screen       TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    png          BLOB NOT NULL
);
"];

pub struct OfficeStore {
    conn: Connection,
}

/// One play of a notice on a screen (section 7, proof of play).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Play {
    pub notice_id: String,
    pub version: u64,
    pub started_at: String,
    pub duration_ms: u64,
}

impl OfficeStore {
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| open_err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut store = OfficeStore { conn };
        let done: usize = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = store.conn.transaction()?;
        for (i, sql) in OFFICE_MIGRATIONS.iter().enumerate().skip(done) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
        }
        tx.commit()?;
        Ok(store)
    }

    /// Records the hash of a screen's new token; an older token of that
    /// screen stops working.
    pub fn set_token(&self, screen: &str, token_hash: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO screens (screen, token_hash, issued_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (screen) DO UPDATE SET token_hash = excluded.token_hash,
                                                issued_at = excluded.issued_at",
            params![screen, token_hash, now_text()],
        )?;
        Ok(())
    }

    /// The screen a token hash belongs to.
    pub fn screen_of(&self, token_hash: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT screen FROM screens WHERE token_hash = ?1",
                [token_hash],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores valid items in one transaction; an id seen before is left as
    /// it was (a retry). Returns how many were new.
    pub fn add_feedback(
        &mut self,
        screen: &str,
        community: &str,
        items: &[&FeedbackItem],
    ) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut new = 0;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO feedback (id, screen, community, receipt, created_at,
                     received_at, notice_id, notice_version, kind, rating, reasons, text, contact)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            let received = now_text();
            for item in items {
                new += insert.execute(params![
                    item.id,
                    screen,
                    community,
                    item.receipt,
                    item.created_at,
                    received,
                    item.notice_id,
                    item.notice_version.map(|v| v as i64),
                    item.kind,
                    item.rating,
                    serde_json::to_string(&item.reasons).unwrap_or_else(|_| "[]".into()),
                    item.text,
                    item.contact,
                ])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    pub fn feedback_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM feedback", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Stores plays; a play recorded before is not counted twice.
    pub fn add_plays(&mut self, screen: &str, community: &str, plays: &[Play]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut stored = 0;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO plays (screen, community, notice_id, version, started_at, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for p in plays {
                stored += insert.execute(params![
                    screen,
                    community,
                    p.notice_id,
                    p.version as i64,
                    p.started_at,
                    p.duration_ms as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(stored)
    }

    /// Keeps the frame a screen sent for a command (the latest upload wins).
    pub fn put_screenshot(&self, screen: &str, command_id: &str, png: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO screenshots (command_id, screen, received_at, png) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (command_id) DO UPDATE SET png = excluded.png,
                                                    received_at = excluded.received_at",
            params![command_id, screen, now_text(), png],
        )?;
        Ok(())
    }
}
