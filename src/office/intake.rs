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
//! - play records (protocol 1.1's chain) are judged against the chain the
//!   office holds for the screen: `200 {"stored", "next_seq"}` when they
//!   continue it (a retry stores nothing twice) or begin a new one at seq
//!   1, `409 {"error", "next_seq"}` past a gap, `400` for a wrong hash, a
//!   broken link or a fork, which is recorded and stores nothing;
//! - handlers never touch SQLite: they send jobs to the thread of
//!   `office::database` and answer only after its commit.
//!
//! What staff do with what came in is not here: `office::staff` and
//! `office::reply`; the web console (`office::console`) is merged into the
//! same router.

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use time::OffsetDateTime;

use crate::protocol::feedback::{FeedbackBatch, MAX_ITEMS};
use crate::protocol::sha256_hex;
use crate::store::office::{OfficeStore, PlaysOutcome, TokenHolder};
use serde_json::json;

use super::body::{Budget, Reading, Refusal, Upload, require_content_type};
use super::config::ServerConfig;
use super::database::{Answer, Database, Failure, Job, PlaysBody};
use super::input::{MAX_PLAYS, canonical_uuid, plays_problem, png_problem};

/// Request bodies at most: feedback and plays, and a screenshot.
pub const MAX_JSON_BODY: usize = 1024 * 1024;
pub const MAX_SCREENSHOT_BODY: usize = 8 * 1024 * 1024;

/// What every handler shares: the database thread and the body reader.
#[derive(Clone)]
struct App {
    database: Database,
    reading: Reading,
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal::new(status, message)
}

impl App {
    /// Runs a job on the database thread: its result, a 503 when the
    /// thread is gone, or a 500 (logged) when the job failed.
    async fn run<T>(&self, job: impl FnOnce(Answer<T>) -> Job) -> Result<T, Refusal> {
        self.database
            .run(job)
            .await
            .map_err(|failure| match failure {
                Failure::Closed => error(StatusCode::SERVICE_UNAVAILABLE, "the database is closed"),
                Failure::Failed(e) => internal(e),
            })
    }

    /// The screen the request's bearer token belongs to. Called before
    /// anything of the body is read.
    /// The token's holder, and the body to read under `limit` and `budget`:
    /// the token is checked before a byte of the body is read.
    async fn authorised_upload(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: usize,
        budget: Budget,
    ) -> Result<(TokenHolder, Upload), Refusal> {
        let holder = self.holder(headers).await?;
        Ok((holder, self.reading.upload(headers, body, limit, budget)))
    }

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
    let (holder, mut upload) = match app
        .authorised_upload(&headers, body, MAX_JSON_BODY, Budget::Json)
        .await
    {
        Ok(begun) => begun,
        Err(refusal) => return refusal.into_response(),
    };
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
    let (holder, mut upload) = match app
        .authorised_upload(&headers, body, MAX_JSON_BODY, Budget::Json)
        .await
    {
        Ok(begun) => begun,
        Err(refusal) => return refusal.into_response(),
    };
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
        let (count, first) = (plays.plays.len(), plays.plays.first().map(|r| r.seq));
        let outcome = app.run(|tx| Job::Plays(plays, screen, tx)).await?;
        Ok(plays_answer(&holder.screen, count, first, outcome))
    }
    .await;
    upload.answer(result).await
}

/// The answer to a batch of chain records (section 7, play chain), logged
/// for the office: a restart, a gap and a refusal are what staff may need
/// to look into.
fn plays_answer(screen: &str, count: usize, first: Option<u64>, outcome: PlaysOutcome) -> Response {
    match outcome {
        PlaysOutcome::Stored {
            stored,
            next_seq,
            restarted,
        } => {
            if let Some(chain) = restarted {
                tracing::warn!(
                    "{screen}: the screen began its play chain again at seq 1 (its store was lost?); \
                     the chains before are kept, this is chain {chain}"
                );
            }
            tracing::info!("{screen}: {count} play records ({stored} new), next seq {next_seq}");
            Json(json!({ "stored": stored, "next_seq": next_seq })).into_response()
        }
        PlaysOutcome::Gap { next_seq } => {
            let error = format!(
                "the batch starts at seq {} but the office lacks records from seq {next_seq}: \
                 send from there",
                first.unwrap_or_default()
            );
            tracing::info!("{screen}: {error}");
            (
                StatusCode::CONFLICT,
                Json(json!({ "error": error, "next_seq": next_seq })),
            )
                .into_response()
        }
        PlaysOutcome::Refused { reason } => {
            tracing::warn!("{screen}: play records refused, conflict recorded: {reason}");
            Refusal::new(StatusCode::BAD_REQUEST, reason).into_response()
        }
    }
}

async fn screenshot(
    State(app): State<App>,
    UrlPath(command_id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (holder, mut upload) = match app
        .authorised_upload(&headers, body, MAX_SCREENSHOT_BODY, Budget::Screenshot)
        .await
    {
        Ok(begun) => begun,
        Err(refusal) => return refusal.into_response(),
    };
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
fn router(app: App, console: super::console::Console) -> Router {
    Router::new()
        .route("/api/v1/feedback", post(feedback))
        .route("/api/v1/plays", post(plays))
        .route("/api/v1/screenshots/{command_id}", put(screenshot))
        .with_state(app)
        .merge(console.router())
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
/// (within `office::http::SHUTDOWN_GRACE`; the rest are dropped). Over
/// HTTPS unless office.toml asks for plain HTTP on loopback; with a broker,
/// the office follows its scopes there and serves their public pages.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match super::certificate::Identity::for_config(&config)? {
        Some(identity) => {
            let made = if identity.made_now { "made now, " } else { "" };
            println!(
                "TLS certificate {} ({made}SHA-256 fingerprint {})",
                identity.cert_file.display(),
                identity.fingerprint
            );
            Some(tokio_rustls::TlsAcceptor::from(identity.server_config()?))
        }
        None => None,
    };
    let store = OfficeStore::open(&config.database)?;
    let (database, database_thread) = Database::start(store)?;
    // The console shares the database thread (and makes the operator key
    // at the first start).
    // The screens' statuses, followed for the console's fleet page.
    let settings = super::console::Settings::from_config(&config)?;
    let operator = settings.operator.public();
    let remembered = database.call(|store| Ok(store.screens_seen()?)).await;
    let remembered = match remembered {
        Ok(seen) => seen,
        Err(super::database::Failure::Failed(e)) => return Err(e),
        Err(super::database::Failure::Closed) => anyhow::bail!("the database thread is gone"),
    };
    let fleet = settings.broker.clone().map(|connect| {
        let scopes: Vec<String> = settings.scopes.iter().map(|s| s.id.clone()).collect();
        super::watch::FleetWatch::start(
            connect,
            &settings.prefix,
            &scopes,
            super::watch::FleetView::remembering(remembered),
            Some(database.clone()),
        )
    });
    let console = super::console::Console::new(
        settings,
        database.clone(),
        fleet.as_ref().map(|f| f.view.clone()),
    )?;
    // Numbers past their time are gone before the server even listens.
    let app = App {
        database,
        reading: Reading::new(config.limits.body_timeout()),
    };
    sweep_contacts(&app).await;
    // The follow trusts the people enrolled besides office.toml's keys, and
    // starts again when they change.
    let enrolled = {
        let (database, config) = (app.database.clone(), config.clone());
        move || {
            let (database, config, operator) = (database.clone(), config.clone(), operator.clone());
            async move {
                let users = database
                    .call(|store| Ok(store.key_holders()?))
                    .await
                    .map_err(|e| match e {
                        Failure::Closed => anyhow::anyhow!("the database thread is gone"),
                        Failure::Failed(e) => e,
                    })?;
                Ok(super::follow::enrolled_keys(&config, &users, &operator))
            }
        }
    };
    let keys = enrolled().await?;
    let follower = super::follow::start(&config, &keys).await?;
    let pages = match &follower {
        Some(_) => super::public::PublicPages::open(&config.follow_store())?,
        None => super::public::PublicPages::none(),
    };
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "office server listening on {scheme}://{}",
        listener.local_addr()?
    );
    println!("listening on {scheme}://{}", listener.local_addr()?);
    // A follow that fails ends the server, as a failed task ends a screen:
    // public pages that silently stopped following would go stale.
    let (follow_failed, mut follow_failures) = tokio::sync::mpsc::unbounded_channel();
    let stop_following = tokio_util::sync::CancellationToken::new();
    let following = follower.map(|follower| {
        tokio::spawn(super::follow::keep_following(
            config.clone(),
            follower,
            keys,
            enrolled,
            stop_following.clone(),
            follow_failed,
        ))
    });
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    let stop = async move {
        let failure = tokio::select! {
            () = shutdown => None,
            Some(failure) = follow_failures.recv() => Some(failure),
        };
        let _ = failed_tx.send(failure);
    };
    let routes = router(app, console).merge(super::public::router(pages));
    super::http::serve(listener, routes, &config.limits, tls, stop).await;
    stop_following.cancel();
    if let Some(following) = following {
        let _ = following.await;
    }
    if let Some(fleet) = fleet {
        fleet.shutdown().await;
    }
    // The router (dropped with every connection) and the sweeper hold the
    // last senders: once both are gone, the database thread ends.
    sweeper.abort();
    let _ = sweeper.await;
    let _ = tokio::task::spawn_blocking(move || database_thread.join()).await;
    match failed_rx.await {
        Ok(Some(failure)) => Err(anyhow::anyhow!("{failure}")),
        _ => Ok(()),
    }
}
