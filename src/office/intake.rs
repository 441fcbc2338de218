//! The office's intake server (`gongkai office serve`): the HTTP API of
//! PROTOCOL.md section 7 that screens post residents' feedback, proof of play
//! and screenshots to.
//!
//! - every request carries a screen's bearer token, checked before any of
//!   the body is read; the office keeps only SHA-256 hashes of tokens, and
//!   a body that names another screen, or another community than the
//!   screen's, is refused;
//! - connections are bounded in number and time (`office::http`), bodies
//!   in size, time and memory (`office::body`);
//! - every refusal is a status with a JSON `{"error": …}`: 413 past a
//!   limit, 415 for a body of the wrong type, 400 for a malformed one or a
//!   value out of range (`office::input`), and nothing of it is stored;
//! - a feedback item is stored once by id, whichever way the UUID is
//!   spelled: a screen retrying gets it accepted again, never twice;
//! - one thread owns the SQLite connection; handlers reach it through a
//!   channel and answer only after the commit.
//!
//! What staff do with what came in lives here too, behind `gongkai office
//! feedback` and `gongkai office reply`: contact numbers leave this module
//! masked unless the caller names who asked to see them, which the audit
//! trail then records; a reply is a notice payload of category `reply` that
//! passes the same validation as any notice, and writing it marks its
//! receipts as answered.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::protocol::feedback::{
    FeedbackBatch, FeedbackResponse, ItemRejection, MAX_ITEMS, mask_contact,
};
use crate::protocol::notice::{
    Block, Category, Notice, Priority, Status, is_receipt_code, rfc3339,
};
use crate::protocol::sha256_hex;
use crate::store::office::{FeedbackBatchRef, FeedbackRow, OfficeStore, Play, TokenHolder};

use super::body::{Budget, Reading, Refusal, require_content_type};
use super::http::Limits;
use super::input::{MAX_PLAYS, canonical_uuid, feedback_problem, plays_problem, png_problem};

/// Request bodies at most: feedback and plays, and a screenshot.
pub const MAX_JSON_BODY: usize = 1024 * 1024;
pub const MAX_SCREENSHOT_BODY: usize = 8 * 1024 * 1024;

/// office.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfficeConfig {
    /// Where the intake server listens, e.g. "127.0.0.1:8080".
    pub listen: SocketAddr,
    /// The office's SQLite file.
    pub database: PathBuf,
    /// Timeouts and the connection cap; defaults when left out.
    #[serde(default)]
    pub limits: Limits,
}

impl OfficeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: OfficeConfig =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let problems = config.limits.problems();
        anyhow::ensure!(
            problems.is_empty(),
            "{}: {}",
            path.display(),
            problems.join("; ")
        );
        Ok(config)
    }
}

/// A new random token for a screen: 32 bytes, base64url. The office keeps
/// only its hash; the token itself is shown once.
///
/// `community` binds the screen to its community: its requests must name
/// it. Without one, a new screen is bound by its first accepted request
/// (trust on first use, so that tokens issued before communities were
/// recorded, and scripts that do not pass one, keep working), and a
/// screen issued a new token keeps the community it had.
pub fn issue_token(
    config: &OfficeConfig,
    screen: &str,
    community: Option<&str>,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        crate::protocol::is_valid_id(screen),
        "{screen:?} is not a valid screen id"
    );
    if let Some(community) = community {
        anyhow::ensure!(
            crate::protocol::is_valid_id(community),
            "{community:?} is not a valid community id"
        );
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
    let store = OfficeStore::open(&config.database)?;
    store.set_token(screen, &sha256_hex(token.as_bytes()), community)?;
    Ok(token)
}

/// Work for the thread that owns the database.
enum Job {
    HolderOf(String, oneshot::Sender<anyhow::Result<Option<TokenHolder>>>),
    /// Binds an unbound screen to a community; answers the one it has.
    Bind(
        String,
        String,
        oneshot::Sender<anyhow::Result<Option<String>>>,
    ),
    Feedback(
        FeedbackBatch,
        oneshot::Sender<anyhow::Result<FeedbackResponse>>,
    ),
    Plays(PlaysBody, String, oneshot::Sender<anyhow::Result<usize>>),
    Screenshot(String, String, Bytes, oneshot::Sender<anyhow::Result<()>>),
    WipeContacts(OffsetDateTime, oneshot::Sender<anyhow::Result<usize>>),
}

#[derive(Clone)]
struct App {
    jobs: std_mpsc::Sender<Job>,
    reading: Reading,
}

#[derive(Debug, Deserialize)]
struct PlaysBody {
    screen: String,
    community: String,
    plays: Vec<Play>,
}

/// Jobs taken at most into one round of the database thread.
const GROUP_MAX: usize = 64;

fn database_thread(mut store: OfficeStore, jobs: std_mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        // Group commit: feedback of every request already waiting is stored
        // in one transaction. Each commit costs an fsync (synchronous=FULL),
        // which is what bounds screens sending one item per request. Other
        // jobs neither read nor write feedback, so they may run first.
        let mut feedback = Vec::new();
        let mut next = Some(job);
        while let Some(job) = next {
            match job {
                Job::Feedback(batch, reply) => feedback.push((batch, reply)),
                other => run_job(&mut store, other),
            }
            next = if feedback.len() < GROUP_MAX {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        if !feedback.is_empty() {
            store_feedback(&mut store, feedback);
        }
    }
}

fn run_job(store: &mut OfficeStore, job: Job) {
    match job {
        Job::HolderOf(hash, reply) => {
            let _ = reply.send(store.holder_of(&hash).map_err(Into::into));
        }
        Job::Bind(screen, community, reply) => {
            let _ = reply.send(
                store
                    .bind_community(&screen, &community)
                    .map_err(Into::into),
            );
        }
        Job::Feedback(batch, reply) => store_feedback(store, vec![(batch, reply)]),
        Job::Plays(body, screen, reply) => {
            let _ = reply.send(
                store
                    .add_plays(&screen, &body.community, &body.plays)
                    .map_err(Into::into),
            );
        }
        Job::Screenshot(screen, id, png, reply) => {
            let _ = reply.send(store.put_screenshot(&screen, &id, &png).map_err(Into::into));
        }
        Job::WipeContacts(answered_before, reply) => {
            let _ = reply.send(
                store
                    .wipe_answered_contacts(answered_before)
                    .map_err(Into::into),
            );
        }
    }
}

type FeedbackJob = (
    FeedbackBatch,
    oneshot::Sender<anyhow::Result<FeedbackResponse>>,
);

/// Stores the valid items of every request in one commit and answers each
/// request after it; invalid items are rejected with their reasons.
fn store_feedback(store: &mut OfficeStore, jobs: Vec<FeedbackJob>) {
    let (batches, replies): (Vec<FeedbackBatch>, Vec<_>) = jobs.into_iter().unzip();
    let mut responses = Vec::with_capacity(batches.len());
    let mut valid = Vec::with_capacity(batches.len());
    for batch in &batches {
        let mut response = FeedbackResponse::default();
        let mut ok = Vec::new();
        for item in &batch.items {
            match feedback_problem(item) {
                Some(reason) => response.rejected.push(ItemRejection {
                    id: item.id.clone(),
                    reason,
                }),
                None => ok.push(item),
            }
        }
        responses.push(response);
        valid.push(ok);
    }
    let refs: Vec<FeedbackBatchRef<'_>> = batches
        .iter()
        .zip(&valid)
        .map(|(batch, items)| FeedbackBatchRef {
            screen: &batch.screen,
            community: &batch.community,
            items,
        })
        .collect();
    match store.add_feedback_batches(&refs, OffsetDateTime::now_utc()) {
        Ok(new) => {
            let answers = batches.iter().zip(&valid).zip(responses).zip(new);
            for ((((batch, items), mut response), new), reply) in answers.zip(replies) {
                tracing::info!(
                    "{}: {} feedback items accepted ({new} new), {} rejected",
                    batch.screen,
                    items.len(),
                    response.rejected.len()
                );
                // One id per item, even when a request carried it twice
                // (in two spellings, say): it was stored once.
                let mut seen = std::collections::HashSet::new();
                response.accepted = items
                    .iter()
                    .filter(|i| seen.insert(i.id.as_str()))
                    .map(|i| i.id.clone())
                    .collect();
                let _ = reply.send(Ok(response));
            }
        }
        Err(e) => {
            let e = anyhow::Error::new(e);
            for reply in replies {
                let _ = reply.send(Err(anyhow::anyhow!("{e:#}")));
            }
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal::new(status, message)
}

impl App {
    /// Runs a job on the database thread: its result, a 503 when the
    /// thread is gone, or a 500 (logged) when the job failed.
    async fn run<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<anyhow::Result<T>>) -> Job,
    ) -> Result<T, Refusal> {
        let closed = || error(StatusCode::SERVICE_UNAVAILABLE, "the database is closed");
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?.map_err(internal)
    }

    /// The screen the request's bearer token belongs to. Called before
    /// anything of the body is read.
    async fn holder(&self, headers: &HeaderMap) -> Result<TokenHolder, Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "a bearer token is required"))?;
        let hash = sha256_hex(token.as_bytes());
        self.run(|tx| Job::HolderOf(hash, tx))
            .await?
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "unknown token"))
    }

    /// Refuses a body that names another screen than the token's, or
    /// another community than the screen's; binds an unbound screen to the
    /// community named. Both are 401, like a wrong token: the screen is
    /// misconfigured, and a screen keeps (rather than parks) what it could
    /// not send for want of authorisation.
    async fn check_sender(
        &self,
        holder: &TokenHolder,
        screen: &str,
        community: &str,
    ) -> Result<(), Refusal> {
        if holder.screen != screen {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "this token is for screen {:?}, not {screen:?}",
                    holder.screen
                ),
            ));
        }
        if !crate::protocol::is_valid_id(community) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("community {community:?} does not match the id pattern"),
            ));
        }
        let bound = match &holder.community {
            Some(bound) => Some(bound.clone()),
            None => {
                let (screen, community) = (screen.to_owned(), community.to_owned());
                self.run(|tx| Job::Bind(screen, community, tx)).await?
            }
        };
        match bound {
            Some(bound) if bound == community => Ok(()),
            Some(bound) => Err(error(
                StatusCode::UNAUTHORIZED,
                format!("screen {screen:?} belongs to community {bound:?}, not {community:?}"),
            )),
            // The screen's row was there a moment ago: only an edit of
            // the database behind the server's back removes it.
            None => Err(error(StatusCode::UNAUTHORIZED, "unknown token")),
        }
    }
}

fn internal(e: anyhow::Error) -> Refusal {
    tracing::error!("{e:#}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the office could not store this; retry",
    )
}

/// Parses a JSON body into `T`, a 400 naming the problem otherwise.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed body: {e}")))
}

const JSON: &str = "application/json";
const PNG: &str = "image/png";

// Each handler takes the body as `Body`, which reads nothing: the token is
// checked first, and a request without a valid one is answered with its
// body unread. Everything after that runs inside `Upload::answer`, which
// drains what a refusal left unread.

async fn feedback(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let holder = match app.holder(&headers).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.into_response(),
    };
    let mut upload = app
        .reading
        .upload(&headers, body, MAX_JSON_BODY, Budget::Json);
    let result = async {
        require_content_type(&headers, JSON)?;
        let mut batch: FeedbackBatch = parse(&upload.read().await?)?;
        app.check_sender(&holder, &batch.screen, &batch.community)
            .await?;
        if batch.items.len() > MAX_ITEMS {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("at most {MAX_ITEMS} items per request"),
            ));
        }
        // One spelling per id before anything looks at ids: storing,
        // idempotency and the answer all see the canonical one.
        for item in &mut batch.items {
            if let Some(id) = canonical_uuid(&item.id) {
                item.id = id;
            }
        }
        Ok(Json(app.run(|tx| Job::Feedback(batch, tx)).await?))
    }
    .await;
    upload.answer(result).await
}

async fn plays(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let holder = match app.holder(&headers).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.into_response(),
    };
    let mut upload = app
        .reading
        .upload(&headers, body, MAX_JSON_BODY, Budget::Json);
    let result = async {
        require_content_type(&headers, JSON)?;
        let plays: PlaysBody = parse(&upload.read().await?)?;
        app.check_sender(&holder, &plays.screen, &plays.community)
            .await?;
        if plays.plays.len() > MAX_PLAYS {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "at most {MAX_PLAYS} play records per request, not {}",
                    plays.plays.len()
                ),
            ));
        }
        if let Some(problem) = plays_problem(&plays.plays) {
            return Err(error(StatusCode::BAD_REQUEST, problem));
        }
        let screen = holder.screen.clone();
        let stored = app.run(|tx| Job::Plays(plays, screen, tx)).await?;
        Ok(Json(serde_json::json!({ "stored": stored })))
    }
    .await;
    upload.answer(result).await
}

async fn screenshot(
    State(app): State<App>,
    UrlPath(command_id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let holder = match app.holder(&headers).await {
        Ok(holder) => holder,
        Err(refusal) => return refusal.into_response(),
    };
    let mut upload = app
        .reading
        .upload(&headers, body, MAX_SCREENSHOT_BODY, Budget::Screenshot);
    let result = async {
        require_content_type(&headers, PNG)?;
        // The canonical spelling, so that one command keeps one frame.
        let command_id = canonical_uuid(&command_id)
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, "the command id is not a UUID"))?;
        let png = upload.read().await?;
        if let Some(problem) = png_problem(&png) {
            return Err(error(StatusCode::BAD_REQUEST, problem));
        }
        let screen = holder.screen;
        app.run(|tx| Job::Screenshot(screen, command_id, png, tx))
            .await?;
        Ok(StatusCode::NO_CONTENT)
    }
    .await;
    upload.answer(result).await
}

/// The intake routes over a database thread. No route has a body limit
/// of axum's: handlers read bodies themselves, after the token check.
fn router(app: App) -> Router {
    Router::new()
        .route("/api/v1/feedback", post(feedback))
        .route("/api/v1/plays", post(plays))
        .route("/api/v1/screenshots/{command_id}", put(screenshot))
        .with_state(app)
}

/// How long a resident's contact number is kept once their item was
/// answered: what the kiosk's privacy notice promises, so it lives beside the
/// wire rules both sides import. The server wipes numbers past it when it
/// starts and every hour.
pub use crate::protocol::feedback::CONTACT_KEPT_AFTER_REPLY;

const CONTACT_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Wipes the contact numbers answered longer ago than
/// `CONTACT_KEPT_AFTER_REPLY`, through the database thread.
async fn sweep_contacts(app: &App) {
    let answered_before = OffsetDateTime::now_utc() - CONTACT_KEPT_AFTER_REPLY;
    match app.run(|tx| Job::WipeContacts(answered_before, tx)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            "wiped the contact numbers of {n} items answered more than {} days ago",
            CONTACT_KEPT_AFTER_REPLY.whole_days()
        ),
        Err(refusal) => tracing::error!("cannot wipe old contact numbers: {}", refusal.message),
    }
}

/// Serves until `shutdown` resolves, then finishes the requests in flight
/// (within `office::http::SHUTDOWN_GRACE`; the rest are dropped).
pub async fn serve(
    config: OfficeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = OfficeStore::open(&config.database)?;
    let (jobs, rx) = std_mpsc::channel();
    let database = std::thread::Builder::new()
        .name("office-db".into())
        .spawn(move || database_thread(store, rx))?;
    // Numbers past their time are gone before the server even listens.
    let app = App {
        jobs,
        reading: Reading::new(config.limits.body_timeout()),
    };
    sweep_contacts(&app).await;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let sweeper = tokio::spawn({
        let app = app.clone();
        async move {
            let mut every = tokio::time::interval(CONTACT_SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                sweep_contacts(&app).await;
            }
        }
    });
    tracing::info!("office intake listening on {}", listener.local_addr()?);
    println!("listening on {}", listener.local_addr()?);
    super::http::serve(listener, router(app), &config.limits, shutdown).await;
    // The router (dropped with every connection) and the sweeper hold the
    // last senders: once both are gone, the database thread ends.
    sweeper.abort();
    let _ = sweeper.await;
    let _ = tokio::task::spawn_blocking(move || database.join()).await;
    Ok(())
}

/// Feedback received longer ago than this with no reply written is overdue
/// (逾期未复). Counted from the office's clock at receipt: a screen's clock
/// may be wrong, and the office cannot answer before the item arrives.
pub const REPLY_DUE: time::Duration = time::Duration::days(10);

/// How long a reply notice stays on screens.
pub const REPLY_SHOWN_FOR: time::Duration = time::Duration::days(30);

/// Whether staff still owe this item a reply past its deadline.
pub fn is_overdue(row: &FeedbackRow, now: OffsetDateTime) -> bool {
    row.replies.is_empty() && now - row.received_at > REPLY_DUE
}

/// `--since`: an RFC 3339 time, or a date `YYYY-MM-DD` meaning its start at
/// `offset` (the office's local time).
pub fn parse_since(text: &str, offset: time::UtcOffset) -> anyhow::Result<OffsetDateTime> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let date = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .with_context(|| {
        format!(
            "--since {text:?}: expected RFC 3339 (2026-10-08T09:00:00+08:00) or a date (2026-10-08)"
        )
    })?;
    Ok(date.midnight().assume_offset(offset))
}

/// The office's database of `config`, which must exist: a command that only
/// reads or answers feedback has nothing to do with an empty one, and should
/// not leave one behind where the path was mistyped.
fn open_existing(config: &OfficeConfig) -> anyhow::Result<OfficeStore> {
    anyhow::ensure!(
        config.database.exists(),
        "no office database at {} (it is made by `gongkai office serve` or `gongkai office token`)",
        config.database.display()
    );
    Ok(OfficeStore::open(&config.database)?)
}

/// Who reveals contact numbers: the audit trail's `who`.
pub enum Contacts<'a> {
    /// Shown as 138****1234.
    Masked,
    /// Shown in full to this user, which the audit trail records.
    RevealedTo(&'a str),
}

/// Feedback received at `since` or later, oldest first, for staff. Contact
/// numbers are masked unless revealed; a reveal is written to the audit
/// trail (and logged) before any number is returned, so that no number is
/// seen without a record of it.
pub fn feedback_for_staff(
    config: &OfficeConfig,
    since: Option<OffsetDateTime>,
    contacts: Contacts<'_>,
) -> anyhow::Result<Vec<FeedbackRow>> {
    let store = open_existing(config)?;
    let mut rows = store.feedback_rows(since)?;
    match contacts {
        Contacts::Masked => {
            for row in &mut rows {
                row.contact = mask_contact(&row.contact);
            }
        }
        Contacts::RevealedTo(who) => {
            let with_contact: Vec<&str> = rows
                .iter()
                .filter(|r| !r.contact.is_empty())
                .map(|r| r.receipt.as_str())
                .collect();
            const LISTED: usize = 50;
            let mut receipts = with_contact
                .iter()
                .take(LISTED)
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            if with_contact.len() > LISTED {
                receipts.push_str(&format!(" and {} more", with_contact.len() - LISTED));
            }
            let what = format!(
                "revealed the contact numbers of {} feedback items{} (receipts: {})",
                with_contact.len(),
                since
                    .map(|t| format!(" received since {}", rfc3339(t)))
                    .unwrap_or_default(),
                if receipts.is_empty() {
                    "none"
                } else {
                    &receipts
                }
            );
            tracing::warn!(target: "audit", "{who} {what}");
            store
                .audit(who, &what)
                .context("recording the reveal in the audit trail; no number was shown")?;
        }
    }
    Ok(rows)
}

/// Feedback as CSV (RFC 4180: CRLF line ends, a header row, fields quoted
/// where they hold commas, quotes or line breaks). Times are RFC 3339 at
/// `offset`.
pub fn feedback_csv(rows: &[FeedbackRow], now: OffsetDateTime, offset: time::UtcOffset) -> String {
    let mut out = String::new();
    let mut line = |fields: &[&str]| {
        let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&quoted.join(","));
        out.push_str("\r\n");
    };
    line(&[
        "id",
        "receipt",
        "received_at",
        "created_at",
        "screen",
        "community",
        "kind",
        "rating",
        "notice_id",
        "notice_version",
        "reasons",
        "text",
        "contact",
        "replies",
        "overdue",
    ]);
    for r in rows {
        let rating = r.rating.map(|n| n.to_string()).unwrap_or_default();
        let version = r.notice_version.map(|n| n.to_string()).unwrap_or_default();
        line(&[
            &r.id,
            &r.receipt,
            &rfc3339(
                r.received_at
                    .replace_nanosecond(0)
                    .unwrap_or(r.received_at)
                    .to_offset(offset),
            ),
            &r.created_at,
            &r.screen,
            &r.community,
            &r.kind,
            &rating,
            r.notice_id.as_deref().unwrap_or(""),
            &version,
            &r.reasons.join(" "),
            &defuse_formula(&r.text),
            &r.contact,
            &r.replies.join(" "),
            if is_overdue(r, now) { "yes" } else { "no" },
        ]);
    }
    out
}

/// One CSV field, quoted when it must be.
pub fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Residents type the text at a public kiosk and staff open the export in a
/// spreadsheet, which would run a text starting with `=`, `+`, `-` or `@` as
/// a formula: such a text gets a leading apostrophe (OWASP's advice), which
/// spreadsheets show as text.
fn defuse_formula(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// What `gongkai office reply` is asked to write.
pub struct ReplyRequest<'a> {
    /// Receipt codes, in any case.
    pub receipts: &'a [String],
    pub text: &'a str,
    pub publisher: &'a str,
    pub contact: &'a str,
    /// Needed only when a receipt is found in more than one community.
    pub community: Option<&'a str>,
}

/// A reply payload written.
#[derive(Debug)]
pub struct WrittenReply {
    pub notice_id: String,
    pub community: String,
    pub receipts: Vec<String>,
}

/// Writes the payload of a `reply` notice answering the receipts to `output`
/// (never over an existing file) and records the receipts as answered.
/// Nothing is written unless every receipt is known and all belong to one
/// community. `now` is at the office's local offset: it gives the payload's
/// times and the date in its id and title.
pub fn write_reply(
    config: &OfficeConfig,
    request: &ReplyRequest<'_>,
    output: &Path,
    now: OffsetDateTime,
) -> anyhow::Result<WrittenReply> {
    let mut receipts: Vec<String> = Vec::new();
    for code in request.receipts {
        let code = code.trim().to_uppercase();
        anyhow::ensure!(
            is_receipt_code(&code),
            "{code:?} is not a receipt code (6 characters of 0-9 and A-Z without I, L, O, U)"
        );
        if !receipts.contains(&code) {
            receipts.push(code);
        }
    }
    anyhow::ensure!(!receipts.is_empty(), "name at least one receipt");
    let text = request.text.trim();
    anyhow::ensure!(!text.is_empty(), "--text must not be empty");
    if output.exists() {
        bail!(
            "{} exists; a reply is never written over a file",
            output.display()
        );
    }
    let mut store = open_existing(config)?;

    // Each receipt's community; every problem is reported at once.
    let mut unknown = Vec::new();
    let mut ambiguous = Vec::new();
    let mut found: Vec<(String, String)> = Vec::new();
    for receipt in &receipts {
        let mut communities = store.communities_of_receipt(receipt)?;
        if let Some(c) = request.community {
            communities.retain(|x| x == c);
        }
        match communities.as_slice() {
            [] => unknown.push(receipt.as_str()),
            [one] => found.push((receipt.clone(), one.clone())),
            many => ambiguous.push(format!("{receipt} ({})", many.join(", "))),
        }
    }
    if !unknown.is_empty() {
        bail!(
            "no feedback in {} carries receipt {}{}; nothing was written",
            config.database.display(),
            unknown.join(", "),
            request
                .community
                .map(|c| format!(" in community {c}"))
                .unwrap_or_default()
        );
    }
    if !ambiguous.is_empty() {
        bail!(
            "receipts found in more than one community: {}; name one with --community; nothing was written",
            ambiguous.join("; ")
        );
    }
    let community = found[0].1.clone();
    if let Some((receipt, other)) = found.iter().find(|(_, c)| *c != community) {
        bail!(
            "a reply is shown in one community: {} is from {community}, {receipt} from {other}; write one reply per community; nothing was written",
            found[0].0
        );
    }

    // A fresh id: screens refuse a second version 1 with other content as
    // an equivocation, so an id written before is never reused.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let date = now.date();
    let base = format!(
        "reply-{:04}{:02}{:02}-{}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        receipts[0].to_lowercase()
    );
    let mut notice_id = base.clone();
    let mut n = 1;
    while store.reply_id_taken(&notice_id)? {
        n += 1;
        notice_id = format!("{base}-{n}");
    }

    let notice = Notice {
        schema: 1,
        id: notice_id.clone(),
        version: 1,
        community: community.clone(),
        category: Category::Reply,
        priority: Priority::Normal,
        status: Status::Active,
        title: format!(
            "居民意见答复（{}年{}月{}日）",
            date.year(),
            u8::from(date.month()),
            date.day()
        ),
        summary: None,
        body: vec![Block::Paragraph {
            text: text.to_owned(),
        }],
        media: vec![],
        period: None,
        valid_from: now,
        valid_until: now + REPLY_SHOWN_FOR,
        issued_at: now,
        publisher: request.publisher.trim().to_owned(),
        reviewer: None,
        contact: request.contact.trim().to_owned(),
        qr_url: None,
        screens: vec![],
        reply_to: receipts.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&notice)?;
    bytes.push(b'\n');
    // The same parsing and rules `gongkai sign` and every screen apply.
    Notice::from_payload(&bytes).map_err(|e| anyhow::anyhow!("the reply would be refused: {e}"))?;

    let dir = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing into {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.as_file().sync_all()?;
    // No clobbering even if the file appeared since the check above.
    tmp.persist_noclobber(output)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", output.display()))?;
    // Recorded after the file is there, so that a receipt is never marked
    // answered without a reply to show; if recording fails, the file goes
    // too, so that a second try writes the same id afresh.
    if let Err(e) = store.record_reply(&notice_id, &community, &receipts, now) {
        let _ = std::fs::remove_file(output);
        return Err(anyhow::Error::new(e).context("recording the reply; nothing was written"));
    }
    Ok(WrittenReply {
        notice_id,
        community,
        receipts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field("plain 文本"), "plain 文本");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(defuse_formula("=1+1"), "'=1+1");
        assert_eq!(defuse_formula("1+1"), "1+1");
    }

    #[test]
    fn since_takes_a_time_or_a_date() {
        let east8 = time::macros::offset!(+8);
        assert_eq!(
            parse_since("2026-10-08", east8).unwrap(),
            time::macros::datetime!(2026-10-08 00:00 +08:00)
        );
        assert_eq!(
            parse_since("2026-10-08T09:30:00Z", east8).unwrap(),
            time::macros::datetime!(2026-10-08 09:30 UTC)
        );
        assert!(parse_since("yesterday", east8).is_err());
    }
}
