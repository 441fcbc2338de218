//! The screen's feedback outbox: residents' submissions kept in the screen's
//! SQLite file until the office has accepted or permanently rejected them.
//!
//! A submission is committed (WAL, `synchronous=FULL`) before its receipt is
//! shown, so a receipt a resident photographed always stands for a row that
//! survives a crash. Rows are never deleted: an accepted row loses its
//! contact number (it now lives only in the office's database) and stays as
//! a record; a rejected row is parked with the office's reason.
//!
//! The daemon's `ui_io` task (for the kiosk) and the sync task each hold
//! their own `Outbox` connection to the store file; SQLite serialises their
//! writes. The UI thread holds none.

use std::path::Path;

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::{Result, StoreError, now_text};
use crate::protocol::feedback::FeedbackItem;
use crate::protocol::notice::rfc3339;

/// Crockford base32 without I, L, O and U: what a resident can read aloud.
const RECEIPT_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// What a resident submits; the outbox adds the id, receipt and time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submission {
    /// The notice it is about: scope, id and version.
    pub notice: Option<crate::schedule::Key>,
    /// "rating", "opinion" or "objection".
    pub kind: String,
    pub rating: Option<u8>,
    pub reasons: Vec<String>,
    pub text: String,
    pub contact: String,
}

/// How many rows are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// The office refused the screen's token at the last attempt (set by
    /// the sync task, not stored).
    pub unauthorized: bool,
}

/// A parked item, for `gongkai cache` and the status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Parked {
    pub receipt: String,
    pub id: String,
    pub reason: String,
}

pub struct Outbox {
    conn: Connection,
}

impl Outbox {
    /// Opens the outbox of the store at `path` (the daemon has created and
    /// migrated it).
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Outbox { conn })
    }

    /// Opens the outbox to look at it (`gongkai cache`), beside a running
    /// daemon.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Outbox { conn })
    }

    /// Commits a submission and returns it as the office will receive it.
    /// The item is problem-free (see [`FeedbackItem::problem`]) or refused
    /// here with the reason, before anything is written.
    pub fn submit(&mut self, submission: Submission, now: OffsetDateTime) -> Result<FeedbackItem> {
        let mut rng = rand::thread_rng();
        let (notice_scope, notice_id, notice_version) = match submission.notice {
            Some(key) => (Some(key.scope), Some(key.id), Some(key.version)),
            None => (None, None, None),
        };
        let mut item = FeedbackItem {
            id: uuid::Uuid::now_v7().to_string(),
            receipt: String::new(),
            created_at: rfc3339(now),
            notice_scope,
            notice_id,
            notice_version,
            kind: submission.kind,
            rating: submission.rating,
            reasons: submission.reasons,
            text: submission.text,
            contact: submission.contact,
        };
        // A receipt no other row of this screen has: 32^6 codes, so a clash
        // is rare, and the UNIQUE constraint is the final word.
        loop {
            item.receipt = (0..6)
                .map(|_| RECEIPT_ALPHABET[rng.gen_range(0..RECEIPT_ALPHABET.len())] as char)
                .collect();
            if let Some(problem) = item.problem() {
                return Err(StoreError::Refused(format!("feedback refused: {problem}")));
            }
            let inserted = self.conn.execute(
                "INSERT OR IGNORE INTO outbox (id, receipt, created_at, notice_id, notice_version,
                     kind, rating, reasons, text, contact, notice_scope)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    item.id,
                    item.receipt,
                    item.created_at,
                    item.notice_id,
                    item.notice_version.map(|v| v as i64),
                    item.kind,
                    item.rating,
                    serde_json::to_string(&item.reasons).expect("strings serialise"),
                    item.text,
                    item.contact,
                    item.notice_scope,
                ],
            )?;
            if inserted == 1 {
                return Ok(item);
            }
        }
    }

    /// The oldest pending items, at most `limit`.
    pub fn pending(&self, limit: usize) -> Result<Vec<FeedbackItem>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, receipt, created_at, notice_id, notice_version, kind, rating, reasons,
                    text, contact, notice_scope
             FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(FeedbackItem {
                id: r.get(0)?,
                receipt: r.get(1)?,
                created_at: r.get(2)?,
                notice_id: r.get(3)?,
                notice_version: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                kind: r.get(5)?,
                rating: r.get(6)?,
                reasons: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
                text: r.get(8)?,
                contact: r.get(9)?,
                notice_scope: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The office accepted these: the contact number leaves the screen.
    pub fn accepted(&mut self, ids: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut update = tx.prepare(
                "UPDATE outbox SET state = 'accepted', contact = '', settled_at = ?2
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            let now = now_text();
            for id in ids {
                update.execute(params![id, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The office refused this item for good: parked with its reason.
    pub fn rejected(&mut self, id: &str, reason: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE outbox SET state = 'rejected', reason = ?2, settled_at = ?3
             WHERE id = ?1 AND state = 'pending'",
            params![id, reason, now_text()],
        )?;
        Ok(())
    }

    /// Counts a failed attempt on these items (for the record).
    pub fn attempted(&mut self, ids: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ?1",
                [id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn counts(&self) -> Result<OutboxCounts> {
        let mut counts = OutboxCounts::default();
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let n = row.get::<_, i64>(1)? as u64;
            match row.get::<_, String>(0)?.as_str() {
                "pending" => counts.pending = n,
                "accepted" => counts.accepted = n,
                "rejected" => counts.rejected = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Items the office refused, newest first.
    pub fn parked(&self, limit: usize) -> Result<Vec<Parked>> {
        let mut stmt = self.conn.prepare(
            "SELECT receipt, id, COALESCE(reason, '') FROM outbox WHERE state = 'rejected'
             ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Parked {
                receipt: r.get(0)?,
                id: r.get(1)?,
                reason: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// When the last submission was made (the kiosk's rate limit).
    pub fn last_created_at(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT created_at FROM outbox ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Whether this screen issued `receipt`.
    pub fn has_receipt(&self, receipt: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM outbox WHERE receipt = ?1", [receipt], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// Contact numbers still on the screen for items the office accepted:
    /// always 0 (they are wiped on acceptance).
    pub fn contacts_kept(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE state = 'accepted' AND contact != ''",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}
