//! The office's database, behind `gongkai office`: the screens and the hashes
//! of their tokens, residents' feedback, proof of play and screenshots, the
//! replies staff wrote to feedback and the audit trail of who saw residents'
//! contact numbers; and the web console's people, sessions, drafts, reviews
//! and images (`console`). Same discipline as the screen's store: WAL,
//! `synchronous=FULL`, migrations counted by `user_version`. A request is
//! answered only after its commit.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use super::{Result, StoreError, now_text, open_durable, parse_time};
use crate::protocol::feedback::FeedbackItem;
use crate::protocol::notice::rfc3339;

mod console;
mod feedback;
pub use console::{
    AuditEntry, AuditLine, Draft, DraftKind, DraftState, OldKey, Review, User, UserRole,
};
pub use feedback::{FeedbackCursor, FeedbackPage, FeedbackQuery, FeedbackRow};

const OFFICE_MIGRATIONS: &[&str] = &[
    "
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
",
    "
-- The reply notices staff wrote (`gongkai office reply`), per receipt. The
-- community is kept because receipts are unique per screen only: a reply
-- answers a receipt within its community, as screens look it up.
CREATE TABLE replies (
    receipt     TEXT NOT NULL,
    community   TEXT NOT NULL,
    notice_id   TEXT NOT NULL,
    written_at  TEXT NOT NULL,
    PRIMARY KEY (receipt, community, notice_id)
);
CREATE INDEX replies_notice ON replies (notice_id);
-- Who saw what of residents' personal data, and when.
CREATE TABLE audit (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    at    TEXT NOT NULL,
    who   TEXT NOT NULL,
    what  TEXT NOT NULL
);
CREATE INDEX feedback_received ON feedback (received_at);
",
    "
-- The community each screen belongs to. A bound screen's requests must
-- name it; NULL (tokens issued before this column, or without
-- `--community`) is bound by the first well-formed request the screen's
-- token authorises.
ALTER TABLE screens ADD COLUMN community TEXT;
",
    "
-- Feedback about an upper scope's notice (protocol 1.1, section 3.7) names
-- that scope; NULL is the screen's own community.
ALTER TABLE feedback ADD COLUMN notice_scope TEXT;
",
    "
-- Protocol 1.1's play chains (section 7). A screen's current chain is its
-- highest `chain`; a screen that lost its store begins a new one at seq 1,
-- and the chains before it are kept. The 1.0 table `plays` keeps what
-- screens sent before chains, untouched.
CREATE TABLE play_chains (
    screen     TEXT    NOT NULL,
    chain      INTEGER NOT NULL,
    community  TEXT    NOT NULL,
    begun_at   TEXT    NOT NULL,
    -- Records held: with the highest seq, it tells a whole chain from one
    -- with holes without counting it on every batch.
    held       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (screen, chain)
);
CREATE TABLE chain_plays (
    screen        TEXT    NOT NULL,
    chain         INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    scope         TEXT    NOT NULL,
    notice_id     TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    started_at    TEXT    NOT NULL,
    duration_ms   INTEGER NOT NULL,
    pages_shown   INTEGER NOT NULL,
    triggered_by  TEXT    NOT NULL,
    prev          TEXT    NOT NULL,
    hash          TEXT    NOT NULL,
    received_at   TEXT    NOT NULL,
    PRIMARY KEY (screen, chain, seq)
) WITHOUT ROWID;
CREATE INDEX chain_plays_notice ON chain_plays (notice_id);
-- Whoever deletes records (a person, a tool, a partial restore), the count
-- stays true, so that the office asks the screen for them again.
CREATE TRIGGER chain_plays_deleted AFTER DELETE ON chain_plays BEGIN
    UPDATE play_chains SET held = held - 1 WHERE screen = OLD.screen AND chain = OLD.chain;
END;
-- Batches refused for a wrong hash, a broken link or a fork: what was
-- held stays, and each distinct refusal is kept here with how often it
-- came.
CREATE TABLE play_conflicts (
    screen    TEXT    NOT NULL,
    chain     INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    hash      TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    record    TEXT    NOT NULL,
    first_at  TEXT    NOT NULL,
    last_at   TEXT    NOT NULL,
    times     INTEGER NOT NULL,
    PRIMARY KEY (screen, chain, seq, hash, reason)
);
",
    "
-- The web console (`office::console`). People and what they may do; the
-- password as an argon2id PHC string and the public half of the signing key
-- their browser keeps, both NULL until they enrol. Times of expiry are Unix
-- seconds, compared as integers.
CREATE TABLE users (
    name         TEXT PRIMARY KEY,
    role         TEXT NOT NULL CHECK (role IN ('staff', 'supervisor', 'viewer')),
    password     TEXT,
    public_key   TEXT,
    created_at   TEXT NOT NULL,
    enrolled_at  TEXT
);
-- One-time enrolment links, by the SHA-256 of their token.
CREATE TABLE enrolments (
    token_hash  TEXT PRIMARY KEY,
    name        TEXT NOT NULL REFERENCES users (name),
    expires     INTEGER NOT NULL,
    used_at     TEXT
);
-- Logged-in browsers, by the SHA-256 of their cookie, with the CSRF token
-- every form of the session carries.
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    name        TEXT NOT NULL REFERENCES users (name),
    csrf        TEXT NOT NULL,
    expires     INTEGER NOT NULL
);
-- What staff write: the form as typed (JSON), and once it is a valid notice
-- the exact payload bytes people sign, with their signatures (JSON
-- `{keyid, sig}`) and, once published, the envelope as sent and the
-- manifest version that listed it.
CREATE TABLE drafts (
    id              INTEGER PRIMARY KEY,
    scope           TEXT NOT NULL,
    notice_id       TEXT NOT NULL,
    version         INTEGER NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('notice', 'withdrawal')),
    state           TEXT NOT NULL,
    form            TEXT NOT NULL,
    payload         BLOB,
    office_sig      TEXT,
    supervisor_sig  TEXT,
    author          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    envelope        BLOB,
    published_at    TEXT,
    manifest_version INTEGER,
    UNIQUE (scope, notice_id, version)
);
-- The review history of each draft: who did what, when, with the comment
-- and the payload it was about.
CREATE TABLE reviews (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    draft    INTEGER NOT NULL REFERENCES drafts (id),
    at       TEXT NOT NULL,
    who      TEXT NOT NULL,
    action   TEXT NOT NULL,
    comment  TEXT NOT NULL,
    payload  BLOB
);
-- Images of notices, served at /media/{sha256}.
CREATE TABLE media (
    sha256       TEXT PRIMARY KEY,
    mime         TEXT NOT NULL,
    bytes        BLOB NOT NULL,
    uploaded_at  TEXT NOT NULL,
    uploaded_by  TEXT NOT NULL
);
-- Every console action's payload hash beside its audit line.
ALTER TABLE audit ADD COLUMN payload_sha256 TEXT;
",
    "
-- The console's inbox at scale (`store::office::feedback`): filtered pages
-- newest first and their counts, answered by indexes. Times of receipt get
-- nine fractional digits (`received_text` writes them so from now on), so
-- that their text sorts as the times do: '…05.5Z' sorted before '…05Z'.
UPDATE feedback SET received_at = substr(received_at, 1, 19) || '.' ||
    substr(CASE WHEN substr(received_at, 20, 1) = '.'
                THEN substr(received_at, 21, length(received_at) - 21)
                ELSE '' END || '000000000', 1, 9) || 'Z'
WHERE received_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*Z';
-- Whether a reply was written for the item's receipt in its community,
-- kept true by the triggers below whoever writes replies or feedback.
ALTER TABLE feedback ADD COLUMN answered INTEGER NOT NULL DEFAULT 0;
UPDATE feedback SET answered = EXISTS (SELECT 1 FROM replies r
    WHERE r.receipt = feedback.receipt AND r.community = feedback.community);
CREATE TRIGGER feedback_answered AFTER INSERT ON replies BEGIN
    UPDATE feedback SET answered = 1
    WHERE receipt = NEW.receipt AND community = NEW.community AND answered = 0;
END;
CREATE TRIGGER feedback_unanswered AFTER DELETE ON replies BEGIN
    UPDATE feedback SET answered = EXISTS (SELECT 1 FROM replies r
        WHERE r.receipt = OLD.receipt AND r.community = OLD.community)
    WHERE receipt = OLD.receipt AND community = OLD.community;
END;
CREATE TRIGGER feedback_arrived AFTER INSERT ON feedback BEGIN
    UPDATE feedback SET answered = 1
    WHERE rowid = NEW.rowid AND EXISTS (SELECT 1 FROM replies r
        WHERE r.receipt = NEW.receipt AND r.community = NEW.community);
END;
DROP INDEX feedback_received;
CREATE INDEX feedback_newest ON feedback (received_at, id);
CREATE INDEX feedback_open ON feedback (answered, received_at, id);
CREATE INDEX feedback_notice ON feedback (notice_id, received_at, id);
",
    "
-- Keys a person held before enrolling again (`gongkai office user
-- reenrol`). A retired key signs nothing new in the console but still
-- verifies what it signed, so it stays in the screens' trust; a revoked
-- one (the key may be in someone else's hands) is trusted nowhere.
CREATE TABLE old_keys (
    public_key  TEXT PRIMARY KEY,
    name        TEXT NOT NULL REFERENCES users (name),
    role        TEXT NOT NULL CHECK (role IN ('staff', 'supervisor', 'viewer')),
    retired_at  TEXT NOT NULL,
    revoked     INTEGER NOT NULL CHECK (revoked IN (0, 1))
);
-- When each screen last said it was online (its status's updated_at), as
-- the server's fleet watch saw it: a server started again still tells for
-- how long a screen that went away meanwhile has been offline.
CREATE TABLE screens_seen (
    scope        TEXT NOT NULL,
    screen       TEXT NOT NULL,
    last_online  TEXT NOT NULL,
    PRIMARY KEY (scope, screen)
);
",
];

mod plays;

pub use plays::{ChainSummary, LegacyPlay, NoticePlay, PlayConflict, PlaysOutcome};

pub struct OfficeStore {
    conn: Connection,
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenHolder {
    pub screen: String,
    /// `None` until the screen is bound to a community.
    pub community: Option<String>,
}

/// Valid items of one request, with the screen and community they came from.
pub struct FeedbackBatchRef<'a> {
    pub screen: &'a str,
    pub community: &'a str,
    pub items: &'a [&'a FeedbackItem],
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub at: String,
    pub who: String,
    pub what: String,
}

impl OfficeStore {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(OfficeStore {
            conn: open_durable(path, OFFICE_MIGRATIONS)?,
        })
    }

    /// Records the hash of a screen's new token; an older token of that
    /// screen stops working. `community` binds the screen to it; `None`
    /// keeps the community the screen had (a new token for the same
    /// screen, which has not moved), or leaves a new screen unbound.
    pub fn set_token(&self, screen: &str, token_hash: &str, community: Option<&str>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO screens (screen, token_hash, issued_at, community) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (screen) DO UPDATE SET token_hash = excluded.token_hash,
                                                issued_at = excluded.issued_at,
                                                community = COALESCE(excluded.community,
                                                                     screens.community)",
            params![screen, token_hash, now_text(), community],
        )?;
        Ok(())
    }

    /// The screen a token hash belongs to, and its community if bound.
    pub fn holder_of(&self, token_hash: &str) -> Result<Option<TokenHolder>> {
        Ok(self
            .conn
            .query_row(
                "SELECT screen, community FROM screens WHERE token_hash = ?1",
                [token_hash],
                |r| {
                    Ok(TokenHolder {
                        screen: r.get(0)?,
                        community: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// Binds an unbound screen to `community`; returns the community the
    /// screen is bound to afterwards (an earlier binding wins). `None` if
    /// the screen is unknown (its token was never issued here).
    pub fn bind_community(&self, screen: &str, community: &str) -> Result<Option<String>> {
        self.conn.execute(
            "UPDATE screens SET community = ?2 WHERE screen = ?1 AND community IS NULL",
            params![screen, community],
        )?;
        Ok(self
            .conn
            .query_row(
                "SELECT community FROM screens WHERE screen = ?1",
                [screen],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Stores valid items in one transaction; an id seen before is left as
    /// it was (a retry). Returns how many were new.
    pub fn add_feedback(
        &mut self,
        screen: &str,
        community: &str,
        items: &[&FeedbackItem],
    ) -> Result<usize> {
        self.add_feedback_received_at(screen, community, items, OffsetDateTime::now_utc())
    }

    /// `add_feedback` with the time of receipt given: for importing items
    /// taken in elsewhere, and for tests of deadlines, which cannot wait
    /// ten days.
    pub fn add_feedback_received_at(
        &mut self,
        screen: &str,
        community: &str,
        items: &[&FeedbackItem],
        received: OffsetDateTime,
    ) -> Result<usize> {
        let new = self.add_feedback_batches(
            &[FeedbackBatchRef {
                screen,
                community,
                items,
            }],
            received,
        )?;
        Ok(new[0])
    }

    /// Stores several requests' items in one transaction: the intake's
    /// group commit, so that requests arriving together share one fsync.
    /// Returns how many of each batch were new; on an error nothing of any
    /// batch is stored.
    pub fn add_feedback_batches(
        &mut self,
        batches: &[FeedbackBatchRef<'_>],
        received: OffsetDateTime,
    ) -> Result<Vec<usize>> {
        // UTC with nine fractional digits, so that the text sorts and
        // compares like the times it holds.
        let received = feedback::received_text(received);
        let tx = self.conn.transaction()?;
        let mut new = Vec::with_capacity(batches.len());
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO feedback (id, screen, community, receipt, created_at,
                     received_at, notice_id, notice_version, kind, rating, reasons, text, contact,
                     notice_scope)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            for batch in batches {
                let mut n = 0;
                for item in batch.items {
                    n += insert.execute(params![
                        item.id,
                        batch.screen,
                        batch.community,
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
                        item.notice_scope,
                    ])?;
                }
                new.push(n);
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

    /// The latest screenshot of `screen`: its command id, when it arrived,
    /// and the PNG.
    pub fn latest_screenshot(&self, screen: &str) -> Result<Option<(String, String, Vec<u8>)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT command_id, received_at, png FROM screenshots WHERE screen = ?1
                 ORDER BY received_at DESC, rowid DESC LIMIT 1",
                [screen],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    /// The communities whose feedback carries `receipt` (none if unknown).
    pub fn communities_of_receipt(&self, receipt: &str) -> Result<Vec<String>> {
        let mut query = self.conn.prepare(
            "SELECT DISTINCT community FROM feedback WHERE receipt = ?1 ORDER BY community",
        )?;
        let rows = query.query_map([receipt], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Whether a reply notice with this id was written already.
    pub fn reply_id_taken(&self, notice_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM replies WHERE notice_id = ?1 LIMIT 1",
                [notice_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records that the reply notice `notice_id` answers `receipts` of
    /// `community`, in one transaction.
    pub fn record_reply(
        &mut self,
        notice_id: &str,
        community: &str,
        receipts: &[String],
        written_at: OffsetDateTime,
    ) -> Result<()> {
        let at = rfc3339(written_at.to_offset(time::UtcOffset::UTC));
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO replies (receipt, community, notice_id, written_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for receipt in receipts {
                insert.execute(params![receipt, community, notice_id, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Wipes the contact number of every item whose receipt was answered (a
    /// reply written for it in its community) at `answered_before` or
    /// earlier, and records how many in the audit trail, in one
    /// transaction. Returns how many numbers were wiped.
    pub fn wipe_answered_contacts(&mut self, answered_before: OffsetDateTime) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let mut due = std::collections::BTreeSet::new();
        {
            // Times are compared parsed: as text, fractional seconds of
            // varying length do not sort (see `feedback_rows`).
            let mut query = tx.prepare(
                "SELECT f.id, r.written_at FROM feedback f
                 JOIN replies r ON r.receipt = f.receipt AND r.community = f.community
                 WHERE f.contact != ''",
            )?;
            let mut rows = query.query([])?;
            while let Some(r) = rows.next()? {
                if parse_time(&r.get::<_, String>(1)?)? <= answered_before {
                    due.insert(r.get::<_, String>(0)?);
                }
            }
        }
        if !due.is_empty() {
            let mut wipe = tx.prepare("UPDATE feedback SET contact = '' WHERE id = ?1")?;
            for id in &due {
                wipe.execute([id])?;
            }
            drop(wipe);
            tx.execute(
                "INSERT INTO audit (at, who, what) VALUES (?1, 'office', ?2)",
                params![
                    now_text(),
                    format!(
                        "contact numbers of {} answered items wiped (answered before {})",
                        due.len(),
                        rfc3339(answered_before.to_offset(time::UtcOffset::UTC))
                    )
                ],
            )?;
        }
        tx.commit()?;
        Ok(due.len())
    }

    /// Adds a line to the audit trail.
    pub fn audit(&self, who: &str, what: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO audit (at, who, what) VALUES (?1, ?2, ?3)",
            params![now_text(), who, what],
        )?;
        Ok(())
    }

    /// The audit trail, oldest first.
    pub fn audit_rows(&self) -> Result<Vec<AuditRow>> {
        let mut query = self
            .conn
            .prepare("SELECT at, who, what FROM audit ORDER BY seq")?;
        let rows = query.query_map([], |r| {
            Ok(AuditRow {
                at: r.get(0)?,
                who: r.get(1)?,
                what: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn item(id: u8, receipt: &str) -> FeedbackItem {
        FeedbackItem {
            id: format!("0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a{id:02}"),
            receipt: receipt.into(),
            created_at: "2026-10-08T10:00:00+08:00".into(),
            notice_scope: None,
            notice_id: None,
            notice_version: None,
            kind: "opinion".into(),
            rating: None,
            reasons: vec!["noise".into()],
            text: "楼道灯坏了".into(),
            contact: "13812341234".into(),
        }
    }

    #[test]
    fn batches_share_a_commit_and_count_new_items_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        let (a, b, c) = (item(1, "K7Q2MD"), item(2, "A1B2C3"), item(3, "B2C3D4"));
        let new = store
            .add_feedback_batches(
                &[
                    FeedbackBatchRef {
                        screen: "lobby-3",
                        community: "lixia-demo",
                        items: &[&a, &b],
                    },
                    FeedbackBatchRef {
                        screen: "lobby-4",
                        community: "lixia-demo",
                        items: &[&b, &c],
                    },
                ],
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        assert_eq!(new, [2, 1], "a repeated id is stored once");
        assert_eq!(store.feedback_count().unwrap(), 3);
    }

    #[test]
    fn a_screen_is_bound_to_its_first_community_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        store.set_token("lobby-3", "hash-1", None).unwrap();
        assert_eq!(store.holder_of("hash-1").unwrap().unwrap().community, None);
        // The first community wins; a second one is answered with it.
        assert_eq!(
            store.bind_community("lobby-3", "lixia-demo").unwrap(),
            Some("lixia-demo".into())
        );
        assert_eq!(
            store.bind_community("lobby-3", "other-demo").unwrap(),
            Some("lixia-demo".into())
        );
        assert_eq!(store.bind_community("nobody", "lixia-demo").unwrap(), None);
        // A new token without a community keeps the binding; one with a
        // community moves the screen.
        store.set_token("lobby-3", "hash-2", None).unwrap();
        assert_eq!(store.holder_of("hash-1").unwrap(), None);
        let holder = store.holder_of("hash-2").unwrap().unwrap();
        assert_eq!(holder.community.as_deref(), Some("lixia-demo"));
        store
            .set_token("lobby-3", "hash-3", Some("other-demo"))
            .unwrap();
        let holder = store.holder_of("hash-3").unwrap().unwrap();
        assert_eq!(holder.community.as_deref(), Some("other-demo"));
    }

    #[test]
    fn since_compares_times_not_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        // Within one second, "…05.5Z" sorts before "…05Z" as text.
        for (n, at) in [
            (1, datetime!(2026-10-08 02:00:04.9 UTC)),
            (2, datetime!(2026-10-08 02:00:05 UTC)),
            (3, datetime!(2026-10-08 02:00:05.5 UTC)),
            (4, datetime!(2026-10-08 10:00:06 +08:00)),
        ] {
            let it = item(n, "K7Q2MD");
            store
                .add_feedback_received_at("lobby-3", "lixia-demo", &[&it], at)
                .unwrap();
        }
        let ids = |since| -> Vec<String> {
            store
                .feedback_rows(Some(since))
                .unwrap()
                .into_iter()
                .map(|r| r.id[r.id.len() - 2..].to_owned())
                .collect()
        };
        assert_eq!(ids(datetime!(2026-10-08 02:00:05 UTC)), ["02", "03", "04"]);
        assert_eq!(ids(datetime!(2026-10-08 10:00:05.2 +08:00)), ["03", "04"]);
        assert_eq!(store.feedback_rows(None).unwrap().len(), 4);
    }

    /// Regression: times of receipt were stored with as many fractional
    /// digits as they had, whose text does not sort as the times do; the
    /// migration rewrites them, and marks the items already answered.
    #[test]
    fn the_inbox_migration_rewrites_times_and_marks_answered_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("office.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &OFFICE_MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            for (id, receipt, at) in [
                ("a", "K7Q2MD", "2026-10-08T02:00:05.5Z"),
                ("b", "A1B2C3", "2026-10-08T02:00:05Z"),
            ] {
                conn.execute(
                    "INSERT INTO feedback (id, screen, community, receipt, created_at,
                         received_at, kind, reasons, text, contact)
                     VALUES (?1, 'lobby-3', 'lixia-demo', ?2, ?3, ?3, 'opinion', '[]', '', '')",
                    params![id, receipt, at],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO replies VALUES ('K7Q2MD', 'lixia-demo', 'reply-a', ?1)",
                ["2026-10-09T02:00:00Z"],
            )
            .unwrap();
        }
        let store = OfficeStore::open(&path).unwrap();
        let page = store
            .feedback_page(
                &FeedbackQuery {
                    limit: 10,
                    ..FeedbackQuery::default()
                },
                datetime!(2026-10-08 02:00 UTC),
            )
            .unwrap();
        let order: Vec<&str> = page.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["a", "b"], "newest first: .5 s after the other");
        assert_eq!(
            page.rows[0].received_at,
            datetime!(2026-10-08 02:00:05.5 UTC)
        );
        let answered = store
            .feedback_page(
                &FeedbackQuery {
                    answered: Some(true),
                    limit: 10,
                    ..FeedbackQuery::default()
                },
                datetime!(2026-10-08 02:00 UTC),
            )
            .unwrap();
        assert_eq!(answered.matching, 1);
        assert_eq!(answered.rows[0].id, "a");
    }

    #[test]
    fn a_reply_answers_its_receipt_in_its_community_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        let (a, b) = (item(1, "K7Q2MD"), item(2, "K7Q2MD"));
        store.add_feedback("lobby-3", "lixia-demo", &[&a]).unwrap();
        store.add_feedback("gate-1", "other-demo", &[&b]).unwrap();
        assert_eq!(
            store.communities_of_receipt("K7Q2MD").unwrap(),
            ["lixia-demo", "other-demo"]
        );
        store
            .record_reply(
                "reply-20261008-k7q2md",
                "lixia-demo",
                &["K7Q2MD".into()],
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        assert!(store.reply_id_taken("reply-20261008-k7q2md").unwrap());
        let replies: Vec<(String, Vec<String>)> = store
            .feedback_rows(None)
            .unwrap()
            .into_iter()
            .map(|r| (r.community, r.replies))
            .collect();
        assert_eq!(
            replies,
            [
                ("lixia-demo".into(), vec!["reply-20261008-k7q2md".into()]),
                ("other-demo".into(), vec![])
            ]
        );
        store.audit("staff-li", "revealed").unwrap();
        assert_eq!(store.audit_rows().unwrap()[0].who, "staff-li");
    }

    #[test]
    fn contacts_are_wiped_once_their_answer_is_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        let with_contact = |n, receipt| FeedbackItem {
            contact: "13812341234".into(),
            ..item(n, receipt)
        };
        // Answered long ago; answered lately; never answered; and the same
        // receipt as the first in another community, not answered there.
        let (a, b, c, d) = (
            with_contact(1, "K7Q2MD"),
            with_contact(2, "A1B2C3"),
            with_contact(3, "B2C3D4"),
            with_contact(4, "K7Q2MD"),
        );
        let received = datetime!(2026-01-05 02:00 UTC);
        store
            .add_feedback_received_at("lobby-3", "lixia-demo", &[&a, &b, &c], received)
            .unwrap();
        store
            .add_feedback_received_at("gate-1", "other-demo", &[&d], received)
            .unwrap();
        let answered = datetime!(2026-01-10 02:00:00.5 UTC);
        store
            .record_reply("reply-a", "lixia-demo", &["K7Q2MD".into()], answered)
            .unwrap();
        store
            .record_reply(
                "reply-b",
                "lixia-demo",
                &["A1B2C3".into()],
                datetime!(2026-06-01 02:00 UTC),
            )
            .unwrap();
        let contacts = |store: &OfficeStore| -> Vec<String> {
            let rows = store.feedback_rows(None).unwrap();
            let mut rows: Vec<_> = rows.into_iter().map(|r| (r.id, r.contact)).collect();
            rows.sort();
            rows.into_iter().map(|(_, c)| c).collect()
        };

        // Half a second before the first answer: nothing is due yet.
        let just_before = datetime!(2026-01-10 02:00:00 UTC);
        assert_eq!(store.wipe_answered_contacts(just_before).unwrap(), 0);
        assert!(store.audit_rows().unwrap().is_empty());

        assert_eq!(store.wipe_answered_contacts(answered).unwrap(), 1);
        assert_eq!(
            contacts(&store),
            ["", "13812341234", "13812341234", "13812341234"]
        );
        let audit = store.audit_rows().unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].who, "office");
        assert!(audit[0].what.contains("1 answered items"), "{:?}", audit[0]);

        // Again at the same time: nothing more to wipe, no new audit line.
        assert_eq!(store.wipe_answered_contacts(answered).unwrap(), 0);
        assert_eq!(store.audit_rows().unwrap().len(), 1);
    }
}
