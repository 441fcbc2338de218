//! The web console's rows in the office's database: people and their
//! enrolment links, sessions, drafts with their signatures, the review
//! history, uploaded images, the console's audit lines, and when each
//! screen was last online.
//!
//! Secrets are kept only as hashes: enrolment and session tokens as SHA-256,
//! passwords as argon2id PHC strings made by the caller. Nothing here knows
//! HTTP or decides who may do what: `office::console` does, and calls these
//! on the database thread.

use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{OfficeStore, Result, StoreError, now_text};

/// What a person may do in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRole {
    /// 社区工作者: composes, submits (signing as `office`) and publishes.
    Staff,
    /// 居务监督委员会: reviews, returns or approves (signing as `supervisor`).
    Supervisor,
    /// 上级监督 (the street office): reads, changes nothing.
    Viewer,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Staff => "staff",
            UserRole::Supervisor => "supervisor",
            UserRole::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [UserRole::Staff, UserRole::Supervisor, UserRole::Viewer]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Whether people of this role sign, and so enrol a key.
    pub fn signs(self) -> bool {
        self != UserRole::Viewer
    }
}

/// A person of the console.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub role: UserRole,
    /// Standard base64 of the raw Ed25519 public key their browser holds.
    pub public_key: Option<String>,
    pub enrolled: bool,
}

/// A key a person held before enrolling again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldKey {
    pub name: String,
    pub role: UserRole,
    /// Standard base64 of the raw Ed25519 public key.
    pub public_key: String,
    pub retired_at: String,
    /// Trusted nowhere (the key may be in someone else's hands); otherwise
    /// retired: it verifies what it signed but signs nothing new.
    pub revoked: bool,
}

/// Where a draft is in 提出方案 → 审查完善 → 确定 → 实施.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftState {
    /// Staff are writing it.
    Editing,
    /// Submitted with the office's signature, waiting for the supervisors.
    Review,
    /// Sent back by a supervisor with a comment; staff edit it again.
    Returned,
    /// Signed by a supervisor too: ready to publish.
    Approved,
    Published,
}

impl DraftState {
    pub fn as_str(self) -> &'static str {
        match self {
            DraftState::Editing => "editing",
            DraftState::Review => "review",
            DraftState::Returned => "returned",
            DraftState::Approved => "approved",
            DraftState::Published => "published",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            DraftState::Editing,
            DraftState::Review,
            DraftState::Returned,
            DraftState::Approved,
            DraftState::Published,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A new or revised notice, or the withdrawal of a published one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftKind {
    Notice,
    Withdrawal,
}

impl DraftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DraftKind::Notice => "notice",
            DraftKind::Withdrawal => "withdrawal",
        }
    }
}

/// One draft row.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub id: i64,
    pub scope: String,
    pub notice_id: String,
    pub version: u64,
    pub kind: DraftKind,
    pub state: DraftState,
    /// The compose form as staff typed it (JSON of `console::compose::Form`).
    pub form: String,
    /// The exact payload bytes to sign, once the form makes a valid notice.
    pub payload: Option<Vec<u8>>,
    /// JSON `{keyid, sig}` of the office's and the supervisor's signatures.
    pub office_sig: Option<String>,
    pub supervisor_sig: Option<String>,
    pub author: String,
    pub created_at: String,
    pub updated_at: String,
    /// The envelope as published.
    pub envelope: Option<Vec<u8>>,
    pub published_at: Option<String>,
    /// The manifest version published after it: a screen whose manifest is
    /// at least this, missing nothing, holds it.
    pub manifest_version: Option<u64>,
}

/// One line of a draft's review history.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub at: String,
    pub who: String,
    pub action: String,
    pub comment: String,
    pub payload: Option<Vec<u8>>,
}

/// One line of the audit trail with the hash of its payload (`None` for
/// lines written before the console, and by the office itself).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditLine {
    pub at: String,
    pub who: String,
    pub what: String,
    pub payload_sha256: Option<String>,
}

/// One console action for the audit trail.
pub struct AuditEntry<'a> {
    pub who: &'a str,
    pub what: &'a str,
    /// Lowercase hex SHA-256 of the request's payload.
    pub payload_sha256: &'a str,
}

const DRAFT_COLUMNS: &str = "id, scope, notice_id, version, kind, state, form, payload, office_sig, \
     supervisor_sig, author, created_at, updated_at, envelope, published_at, manifest_version";

fn draft_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Draft, String, String)> {
    Ok((
        Draft {
            id: r.get(0)?,
            scope: r.get(1)?,
            notice_id: r.get(2)?,
            version: r.get::<_, i64>(3)? as u64,
            kind: DraftKind::Notice,
            state: DraftState::Editing,
            form: r.get(6)?,
            payload: r.get(7)?,
            office_sig: r.get(8)?,
            supervisor_sig: r.get(9)?,
            author: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
            envelope: r.get(13)?,
            published_at: r.get(14)?,
            manifest_version: r.get::<_, Option<i64>>(15)?.map(|v| v as u64),
        },
        r.get(4)?,
        r.get(5)?,
    ))
}

fn finish_draft((mut draft, kind, state): (Draft, String, String)) -> Result<Draft> {
    draft.kind = match kind.as_str() {
        "notice" => DraftKind::Notice,
        "withdrawal" => DraftKind::Withdrawal,
        other => return Err(StoreError::Corrupt(format!("draft kind {other:?}"))),
    };
    draft.state = DraftState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("draft state {state:?}")))?;
    Ok(draft)
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, Option<String>, bool)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get::<_, Option<String>>(3)?.is_some(),
    ))
}

fn finish_user(
    (name, role, public_key, enrolled): (String, String, Option<String>, bool),
) -> Result<User> {
    Ok(User {
        role: UserRole::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("role {role:?} of {name:?}")))?,
        name,
        public_key,
        enrolled,
    })
}

impl OfficeStore {
    /// Adds a person (or, for one who has not enrolled yet, replaces their
    /// role and link) with a one-time enrolment link: `token_hash`, valid
    /// until `expires` (Unix seconds). An enrolled person keeps their
    /// account: refused.
    pub fn add_user(
        &mut self,
        name: &str,
        role: UserRole,
        token_hash: &str,
        expires: i64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        let enrolled: Option<Option<String>> = tx
            .query_row(
                "SELECT enrolled_at FROM users WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(Some(_)) = enrolled {
            return Err(StoreError::Refused(format!(
                "{name:?} has enrolled already; a person keeps one account"
            )));
        }
        tx.execute(
            "INSERT INTO users (name, role, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET role = excluded.role",
            params![name, role.as_str(), now_text()],
        )?;
        // An earlier link of someone not yet enrolled stops working.
        tx.execute("DELETE FROM enrolments WHERE name = ?1", [name])?;
        tx.execute(
            "INSERT INTO enrolments (token_hash, name, expires) VALUES (?1, ?2, ?3)",
            params![token_hash, name, expires],
        )?;
        tx.execute(
            "INSERT INTO audit (at, who, what, payload_sha256) VALUES (?1, 'office', ?2, NULL)",
            params![
                now_text(),
                format!(
                    "user {name} added as {}; enrolment link issued",
                    role.as_str()
                )
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The person an unused, unexpired enrolment link belongs to.
    pub fn enrolment(&self, token_hash: &str, now: i64) -> Result<Option<User>> {
        let row = self
            .conn
            .query_row(
                "SELECT u.name, u.role, u.public_key, u.enrolled_at FROM enrolments e
                 JOIN users u ON u.name = e.name
                 WHERE e.token_hash = ?1 AND e.used_at IS NULL AND e.expires > ?2
                   AND u.enrolled_at IS NULL",
                params![token_hash, now],
                user_row,
            )
            .optional()?;
        row.map(finish_user).transpose()
    }

    /// Uses an enrolment link once: sets the password hash and public key
    /// of its person, in one transaction. `None` when the link is unknown,
    /// used or expired (nothing changes then).
    pub fn complete_enrolment(
        &mut self,
        token_hash: &str,
        now: i64,
        password: &str,
        public_key: Option<&str>,
    ) -> Result<Option<User>> {
        let tx = self.conn.transaction()?;
        let name: Option<String> = tx
            .query_row(
                "SELECT e.name FROM enrolments e JOIN users u ON u.name = e.name
                 WHERE e.token_hash = ?1 AND e.used_at IS NULL AND e.expires > ?2
                   AND u.enrolled_at IS NULL",
                params![token_hash, now],
                |r| r.get(0),
            )
            .optional()?;
        let Some(name) = name else {
            return Ok(None);
        };
        if let Some(key) = public_key {
            let revoked: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM old_keys WHERE public_key = ?1 AND revoked = 1)",
                [key],
                |r| r.get(0),
            )?;
            if revoked {
                return Err(StoreError::Refused(
                    "这个密钥已被吊销，不能再登记。请在浏览器中生成新密钥。".to_owned(),
                ));
            }
        }
        let at = now_text();
        tx.execute(
            "UPDATE enrolments SET used_at = ?2 WHERE token_hash = ?1",
            params![token_hash, at],
        )?;
        tx.execute(
            "UPDATE users SET password = ?2, public_key = ?3, enrolled_at = ?4 WHERE name = ?1",
            params![name, password, public_key, at],
        )?;
        let user = tx.query_row(
            "SELECT name, role, public_key, enrolled_at FROM users WHERE name = ?1",
            [&name],
            user_row,
        )?;
        tx.commit()?;
        finish_user(user).map(Some)
    }

    /// An enrolled person and their password hash.
    pub fn login_of(&self, name: &str) -> Result<Option<(User, String)>> {
        let row = self
            .conn
            .query_row(
                "SELECT name, role, public_key, enrolled_at, password FROM users
                 WHERE name = ?1 AND password IS NOT NULL",
                [name],
                |r| Ok((user_row(r)?, r.get::<_, String>(4)?)),
            )
            .optional()?;
        row.map(|(u, p)| Ok((finish_user(u)?, p))).transpose()
    }

    /// Sends an enrolled person back to enrolment, with a new one-time
    /// link (by its token's hash): their key becomes an old key, retired or
    /// `revoke`d, their password and sessions end, and an audit line says
    /// so. For someone who lost the browser that held their key, or whose
    /// key may have leaked. Returns the old key.
    pub fn reenrol_user(
        &mut self,
        name: &str,
        token_hash: &str,
        expires: i64,
        revoke: bool,
    ) -> Result<Option<String>> {
        let tx = self.conn.transaction()?;
        let row: Option<(String, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT role, public_key, enrolled_at FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((role, key, enrolled_at)) = row else {
            return Err(StoreError::Refused(format!("nobody is called {name:?}")));
        };
        if enrolled_at.is_none() {
            return Err(StoreError::Refused(format!(
                "{name:?} has not enrolled yet; `user add` gives them a new link"
            )));
        }
        let at = now_text();
        if let Some(key) = &key {
            tx.execute(
                "INSERT INTO old_keys (public_key, name, role, retired_at, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (public_key) DO UPDATE SET revoked = max(revoked, excluded.revoked)",
                params![key, name, role, at, revoke],
            )?;
        }
        tx.execute(
            "UPDATE users SET password = NULL, public_key = NULL, enrolled_at = NULL
             WHERE name = ?1",
            [name],
        )?;
        tx.execute("DELETE FROM sessions WHERE name = ?1", [name])?;
        tx.execute("DELETE FROM enrolments WHERE name = ?1", [name])?;
        tx.execute(
            "INSERT INTO enrolments (token_hash, name, expires) VALUES (?1, ?2, ?3)",
            params![token_hash, name, expires],
        )?;
        let what = match (&key, revoke) {
            (Some(key), true) => {
                format!("user {name}: key {key} revoked; new enrolment link issued")
            }
            (Some(key), false) => {
                format!("user {name}: key {key} retired; new enrolment link issued")
            }
            (None, _) => format!("user {name}: new enrolment link issued"),
        };
        tx.execute(
            "INSERT INTO audit (at, who, what, payload_sha256) VALUES (?1, 'office', ?2, NULL)",
            params![at, what],
        )?;
        tx.commit()?;
        Ok(key)
    }

    /// Every key whose signatures verify, as the people who hold or held
    /// them: each person's current key, and each retired key under the
    /// name "NAME（旧密钥，DATE 停用）". Revoked keys are not among them.
    /// What screens, the office's follow and the console's publish check
    /// trust.
    pub fn key_holders(&self) -> Result<Vec<User>> {
        let mut holders = self.users()?;
        for old in self.old_keys()? {
            if old.revoked {
                continue;
            }
            holders.push(User {
                name: format!(
                    "{}（旧密钥，{} 停用）",
                    old.name,
                    old.retired_at.get(..10).unwrap_or(&old.retired_at)
                ),
                role: old.role,
                public_key: Some(old.public_key),
                enrolled: true,
            });
        }
        Ok(holders)
    }

    /// Records that `screen` of `scope` said it was online at `at` (kept
    /// only when later than what is held).
    pub fn remember_online(&self, scope: &str, screen: &str, at: OffsetDateTime) -> Result<()> {
        self.conn.execute(
            "INSERT INTO screens_seen (scope, screen, last_online) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope, screen) DO UPDATE SET last_online = excluded.last_online
             WHERE excluded.last_online > screens_seen.last_online",
            params![scope, screen, super::feedback::received_text(at)],
        )?;
        Ok(())
    }

    /// Forgets a screen whose retained status was cleared.
    pub fn forget_screen(&self, scope: &str, screen: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM screens_seen WHERE scope = ?1 AND screen = ?2",
            params![scope, screen],
        )?;
        Ok(())
    }

    /// Every screen's last online time, by scope and screen.
    pub fn screens_seen(&self) -> Result<Vec<(String, String, OffsetDateTime)>> {
        let mut query = self
            .conn
            .prepare("SELECT scope, screen, last_online FROM screens_seen")?;
        let rows = query.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(|(scope, screen, at)| {
                let parsed = OffsetDateTime::parse(&at, &Rfc3339).map_err(|_| {
                    StoreError::Corrupt(format!("last online time {at:?} of {screen:?}"))
                })?;
                Ok((scope, screen, parsed))
            })
            .collect()
    }

    /// Every key people held before enrolling again, oldest first.
    pub fn old_keys(&self) -> Result<Vec<OldKey>> {
        let mut query = self.conn.prepare(
            "SELECT name, role, public_key, retired_at, revoked FROM old_keys
             ORDER BY retired_at, public_key",
        )?;
        let rows = query.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, bool>(4)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(|(name, role, public_key, retired_at, revoked)| {
                Ok(OldKey {
                    role: UserRole::parse(&role)
                        .ok_or_else(|| StoreError::Corrupt(format!("role {role:?} of {name:?}")))?,
                    name,
                    public_key,
                    retired_at,
                    revoked,
                })
            })
            .collect()
    }

    /// Every person, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        let mut query = self
            .conn
            .prepare("SELECT name, role, public_key, enrolled_at FROM users ORDER BY name")?;
        let rows = query.query_map([], user_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(finish_user)
            .collect()
    }

    /// Opens a session; sessions past their time are cleared on the way.
    pub fn create_session(
        &self,
        token_hash: &str,
        name: &str,
        csrf: &str,
        expires: i64,
        now: i64,
    ) -> Result<()> {
        self.conn
            .execute("DELETE FROM sessions WHERE expires <= ?1", [now])?;
        self.conn.execute(
            "INSERT INTO sessions (token_hash, name, csrf, expires) VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, name, csrf, expires],
        )?;
        Ok(())
    }

    /// The person of a live session, and its CSRF token.
    pub fn session(&self, token_hash: &str, now: i64) -> Result<Option<(User, String)>> {
        let row = self
            .conn
            .query_row(
                "SELECT u.name, u.role, u.public_key, u.enrolled_at, s.csrf FROM sessions s
                 JOIN users u ON u.name = s.name
                 WHERE s.token_hash = ?1 AND s.expires > ?2",
                params![token_hash, now],
                |r| Ok((user_row(r)?, r.get::<_, String>(4)?)),
            )
            .optional()?;
        row.map(|(u, c)| Ok((finish_user(u)?, c))).transpose()
    }

    pub fn end_session(&self, token_hash: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
        Ok(())
    }

    /// One console action in the audit trail.
    pub fn audit_action(&self, entry: &AuditEntry<'_>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO audit (at, who, what, payload_sha256) VALUES (?1, ?2, ?3, ?4)",
            params![now_text(), entry.who, entry.what, entry.payload_sha256],
        )?;
        Ok(())
    }

    /// The audit trail with payload hashes, oldest first.
    pub fn audit_entries(&self) -> Result<Vec<AuditLine>> {
        let mut query = self
            .conn
            .prepare("SELECT at, who, what, payload_sha256 FROM audit ORDER BY seq")?;
        let rows = query.query_map([], |r| {
            Ok(AuditLine {
                at: r.get(0)?,
                who: r.get(1)?,
                what: r.get(2)?,
                payload_sha256: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A new draft; `None` when the scope already has this id at this
    /// version (another draft, or a published one).
    #[allow(clippy::too_many_arguments)]
    pub fn create_draft(
        &mut self,
        scope: &str,
        notice_id: &str,
        version: u64,
        kind: DraftKind,
        form: &str,
        payload: Option<&[u8]>,
        author: &str,
    ) -> Result<Option<i64>> {
        let at = now_text();
        let inserted = self.conn.execute(
            "INSERT OR IGNORE INTO drafts (scope, notice_id, version, kind, state, form, payload,
                 author, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'editing', ?5, ?6, ?7, ?8, ?8)",
            params![
                scope,
                notice_id,
                version as i64,
                kind.as_str(),
                form,
                payload,
                author,
                at
            ],
        )?;
        Ok((inserted == 1).then(|| self.conn.last_insert_rowid()))
    }

    pub fn draft(&self, id: i64) -> Result<Option<Draft>> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {DRAFT_COLUMNS} FROM drafts WHERE id = ?1"),
                [id],
                draft_row,
            )
            .optional()?;
        row.map(finish_draft).transpose()
    }

    /// Every draft, newest first.
    pub fn drafts(&self) -> Result<Vec<Draft>> {
        let mut query = self.conn.prepare(&format!(
            "SELECT {DRAFT_COLUMNS} FROM drafts ORDER BY updated_at DESC, id DESC"
        ))?;
        let rows = query.query_map([], draft_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(finish_draft)
            .collect()
    }

    /// The highest version of `notice_id` in `scope` that any draft holds
    /// (published or not), and the newest published draft of it.
    pub fn versions_of(&self, scope: &str, notice_id: &str) -> Result<(u64, Option<Draft>)> {
        let highest: Option<i64> = self.conn.query_row(
            "SELECT MAX(version) FROM drafts WHERE scope = ?1 AND notice_id = ?2",
            params![scope, notice_id],
            |r| r.get(0),
        )?;
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT {DRAFT_COLUMNS} FROM drafts WHERE scope = ?1 AND notice_id = ?2
                     AND state = 'published' ORDER BY version DESC LIMIT 1"
                ),
                params![scope, notice_id],
                draft_row,
            )
            .optional()?;
        Ok((
            highest.unwrap_or(0) as u64,
            row.map(finish_draft).transpose()?,
        ))
    }

    /// Writes a draft's form and payload, and moves it to `state` with its
    /// signatures, only if it is still in `expected` (two browsers acting
    /// on one draft: the second is refused, not merged). Adds `review` to
    /// its history in the same transaction. Returns whether it changed.
    #[allow(clippy::too_many_arguments)]
    pub fn update_draft(
        &mut self,
        id: i64,
        expected: DraftState,
        state: DraftState,
        form: &str,
        payload: Option<&[u8]>,
        office_sig: Option<&str>,
        supervisor_sig: Option<&str>,
        review: Option<&Review>,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE drafts SET state = ?3, form = ?4, payload = ?5, office_sig = ?6,
                 supervisor_sig = ?7, updated_at = ?8
             WHERE id = ?1 AND state = ?2",
            params![
                id,
                expected.as_str(),
                state.as_str(),
                form,
                payload,
                office_sig,
                supervisor_sig,
                now_text()
            ],
        )?;
        if changed == 1 {
            if let Some(review) = review {
                tx.execute(
                    "INSERT INTO reviews (draft, at, who, action, comment, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        id,
                        review.at,
                        review.who,
                        review.action,
                        review.comment,
                        review.payload
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Marks an approved draft published with the envelope that went out
    /// and the manifest version that lists it.
    pub fn mark_published(
        &mut self,
        id: i64,
        envelope: &[u8],
        manifest_version: u64,
        who: &str,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let at = now_text();
        let changed = tx.execute(
            "UPDATE drafts SET state = 'published', envelope = ?2, published_at = ?3,
                 updated_at = ?3, manifest_version = ?4
             WHERE id = ?1 AND state = 'approved'",
            params![id, envelope, at, manifest_version as i64],
        )?;
        if changed == 1 {
            tx.execute(
                "INSERT INTO reviews (draft, at, who, action, comment, payload)
                 VALUES (?1, ?2, ?3, 'published', '', NULL)",
                params![id, at, who],
            )?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    /// A draft's review history, oldest first.
    pub fn reviews(&self, draft: i64) -> Result<Vec<Review>> {
        let mut query = self.conn.prepare(
            "SELECT at, who, action, comment, payload FROM reviews WHERE draft = ?1 ORDER BY seq",
        )?;
        let rows = query.query_map([draft], |r| {
            Ok(Review {
                at: r.get(0)?,
                who: r.get(1)?,
                action: r.get(2)?,
                comment: r.get(3)?,
                payload: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The review history of every version of a notice, oldest first, each
    /// line with the version it was about.
    pub fn notice_history(&self, scope: &str, notice_id: &str) -> Result<Vec<(u64, Review)>> {
        let mut query = self.conn.prepare(
            "SELECT d.version, r.at, r.who, r.action, r.comment, r.payload FROM reviews r
             JOIN drafts d ON d.id = r.draft
             WHERE d.scope = ?1 AND d.notice_id = ?2 ORDER BY r.seq",
        )?;
        let rows = query.query_map(params![scope, notice_id], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                Review {
                    at: r.get(1)?,
                    who: r.get(2)?,
                    action: r.get(3)?,
                    comment: r.get(4)?,
                    payload: r.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Keeps an image by its hash (a second upload of it changes nothing).
    pub fn put_media(&self, sha256: &str, mime: &str, bytes: &[u8], who: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO media (sha256, mime, bytes, uploaded_at, uploaded_by)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sha256, mime, bytes, now_text(), who],
        )?;
        Ok(())
    }

    /// An image and its type.
    pub fn media(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT mime, bytes FROM media WHERE sha256 = ?1",
                [sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_online_times_only_move_forward_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("office.db");
        let (t1, t2) = (
            time::macros::datetime!(2026-10-08 02:00:05 UTC),
            time::macros::datetime!(2026-10-08 02:00:05.5 UTC),
        );
        {
            let store = OfficeStore::open(&path).unwrap();
            store.remember_online("a", "lobby-1", t2).unwrap();
            store.remember_online("a", "lobby-1", t1).unwrap();
            store.remember_online("a", "lobby-2", t1).unwrap();
            store.forget_screen("a", "lobby-2").unwrap();
        }
        let store = OfficeStore::open(&path).unwrap();
        assert_eq!(
            store.screens_seen().unwrap(),
            [("a".to_owned(), "lobby-1".to_owned(), t2)]
        );
    }

    fn store() -> (tempfile::TempDir, OfficeStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = OfficeStore::open(&dir.path().join("office.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn an_enrolment_link_works_once_and_not_after_it_expires() {
        let (_dir, mut store) = store();
        store.add_user("li", UserRole::Staff, "h1", 1000).unwrap();
        assert_eq!(store.enrolment("h1", 999).unwrap().unwrap().name, "li");
        assert!(store.enrolment("h1", 1000).unwrap().is_none(), "expired");
        assert!(
            store
                .complete_enrolment("h1", 1000, "pw", Some("k"))
                .unwrap()
                .is_none()
        );
        let user = store
            .complete_enrolment("h1", 10, "pw", Some("k"))
            .unwrap()
            .unwrap();
        assert!(user.enrolled);
        assert!(
            store
                .complete_enrolment("h1", 10, "pw2", Some("k2"))
                .unwrap()
                .is_none(),
            "used"
        );
        assert_eq!(store.login_of("li").unwrap().unwrap().1, "pw");
        // An enrolled person is not added again.
        assert!(store.add_user("li", UserRole::Viewer, "h2", 1000).is_err());
    }

    #[test]
    fn enrolling_again_retires_or_revokes_the_old_key_and_ends_the_sessions() {
        let (_dir, mut store) = store();
        store.add_user("li", UserRole::Staff, "h1", 1000).unwrap();
        store
            .complete_enrolment("h1", 10, "pw", Some("old"))
            .unwrap()
            .unwrap();
        store.create_session("s1", "li", "c", 1000, 10).unwrap();
        assert!(store.session("s1", 11).unwrap().is_some());
        assert!(
            store.reenrol_user("nobody", "h", 1000, false).is_err(),
            "an unknown name"
        );

        let old = store.reenrol_user("li", "h2", 1000, false).unwrap();
        assert_eq!(old.as_deref(), Some("old"));
        assert!(store.session("s1", 11).unwrap().is_none(), "sessions end");
        assert!(store.login_of("li").unwrap().is_none(), "the password ends");
        let li = &store.users().unwrap()[0];
        assert!(!li.enrolled && li.public_key.is_none());
        // The retired key still verifies what it signed.
        let holders = store.key_holders().unwrap();
        assert_eq!(holders.len(), 2);
        assert_eq!(holders[1].public_key.as_deref(), Some("old"));
        assert_eq!(holders[1].role, UserRole::Staff);
        assert!(holders[1].name.starts_with("li（旧密钥，"));
        assert!(
            store.reenrol_user("li", "h3", 1000, false).is_err(),
            "not enrolled again yet"
        );
        store
            .complete_enrolment("h2", 10, "pw2", Some("new"))
            .unwrap()
            .unwrap();
        assert_eq!(store.users().unwrap()[0].public_key.as_deref(), Some("new"));

        // Revoked: trusted nowhere, and never enrolled again.
        store.reenrol_user("li", "h4", 1000, true).unwrap();
        let keys: Vec<Option<String>> = store
            .key_holders()
            .unwrap()
            .into_iter()
            .map(|u| u.public_key)
            .collect();
        assert_eq!(keys, [None, Some("old".to_owned())]);
        assert!(matches!(
            store.complete_enrolment("h4", 10, "pw3", Some("new")),
            Err(StoreError::Refused(_))
        ));
        assert!(
            store.enrolment("h4", 10).unwrap().is_some(),
            "the link is not used up"
        );
        let audit = store.audit_entries().unwrap();
        let lines: Vec<&str> = audit.iter().map(|a| a.what.as_str()).collect();
        assert!(
            lines.contains(&"user li: key old retired; new enrolment link issued"),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"user li: key new revoked; new enrolment link issued"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_new_link_replaces_the_old_one_until_enrolment() {
        let (_dir, mut store) = store();
        store
            .add_user("wang", UserRole::Supervisor, "h1", 1000)
            .unwrap();
        store
            .add_user("wang", UserRole::Supervisor, "h2", 1000)
            .unwrap();
        assert!(store.enrolment("h1", 1).unwrap().is_none());
        assert!(store.enrolment("h2", 1).unwrap().is_some());
    }

    #[test]
    fn a_draft_moves_only_from_the_state_it_was_read_in() {
        let (_dir, mut store) = store();
        let id = store
            .create_draft("lixia", "n1", 1, DraftKind::Notice, "{}", None, "li")
            .unwrap()
            .unwrap();
        assert!(
            store
                .create_draft("lixia", "n1", 1, DraftKind::Notice, "{}", None, "li")
                .unwrap()
                .is_none()
        );
        let review = Review {
            at: "t".into(),
            who: "li".into(),
            action: "submitted".into(),
            comment: String::new(),
            payload: Some(b"p".to_vec()),
        };
        let go = |store: &mut OfficeStore, from| {
            store
                .update_draft(
                    id,
                    from,
                    DraftState::Review,
                    "{}",
                    Some(b"p"),
                    Some("s"),
                    None,
                    Some(&review),
                )
                .unwrap()
        };
        assert!(go(&mut store, DraftState::Editing));
        assert!(!go(&mut store, DraftState::Editing), "already moved on");
        assert_eq!(store.reviews(id).unwrap().len(), 1);
        assert_eq!(store.draft(id).unwrap().unwrap().state, DraftState::Review);
    }
}
