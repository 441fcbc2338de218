//! The office's intake server (`gongkai office serve`): the HTTP API of
//! PROTOCOL.md section 7 that screens post residents' feedback, proof of play
//! and screenshots to.
//!
//! - every request carries a screen's bearer token; the office keeps only
//!   SHA-256 hashes of tokens, and a body that names another screen is refused;
//! - bodies over their limit get 413, malformed ones 400 with a JSON
//!   `{"error": …}`, and nothing of them is stored;
//! - a feedback item is stored once by id: a screen retrying gets it
//!   accepted again, never twice;
//! - one thread owns the SQLite connection; handlers reach it through a
//!   channel and answer only after the commit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::protocol::feedback::{FeedbackBatch, FeedbackResponse, ItemRejection, MAX_ITEMS};
use crate::protocol::sha256_hex;
use crate::store::office::{OfficeStore, Play};

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
}

impl OfficeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}", path.display()))
    }
}

/// A new random token for a screen: 32 bytes, base64url. The office keeps
/// only its hash; the token itself is shown once.
pub fn issue_token(config: &OfficeConfig, screen: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        crate::protocol::is_valid_id(screen),
        "{screen:?} is not a valid screen id"
    );
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes);
    let store = OfficeStore::open(&config.database)?;
    store.set_token(screen, &sha256_hex(token.as_bytes()))?;
    Ok(token)
}

/// Work for the thread that owns the database.
enum Job {
    ScreenOf(String, oneshot::Sender<anyhow::Result<Option<String>>>),
    Feedback(
        FeedbackBatch,
        oneshot::Sender<anyhow::Result<FeedbackResponse>>,
    ),
    Plays(PlaysBody, String, oneshot::Sender<anyhow::Result<usize>>),
    Screenshot(String, String, Bytes, oneshot::Sender<anyhow::Result<()>>),
}

#[derive(Clone)]
struct App {
    jobs: std_mpsc::Sender<Job>,
}

#[derive(Debug, Deserialize)]
struct PlaysBody {
    screen: String,
    community: String,
    plays: Vec<Play>,
}

fn database_thread(mut store: OfficeStore, jobs: std_mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::ScreenOf(hash, reply) => {
                let _ = reply.send(store.screen_of(&hash).map_err(Into::into));
            }
            Job::Feedback(batch, reply) => {
                let mut response = FeedbackResponse::default();
                let mut valid = Vec::new();
                for item in &batch.items {
                    match item.problem() {
                        Some(reason) => response.rejected.push(ItemRejection {
                            id: item.id.clone(),
                            reason,
                        }),
                        None => valid.push(item),
                    }
                }
                let stored = store.add_feedback(&batch.screen, &batch.community, &valid);
                let _ = reply.send(stored.map_err(Into::into).map(|new| {
                    tracing::info!(
                        "{}: {} feedback items accepted ({new} new), {} rejected",
                        batch.screen,
                        valid.len(),
                        response.rejected.len()
                    );
                    response.accepted = valid.iter().map(|i| i.id.clone()).collect();
                    response
                }));
            }
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
        }
    }
}

/// A refused request: its status, and a message for the screen's log,
/// sent as `{"error": …}`.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

impl App {
    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, Refusal> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(job(tx))
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "the database is closed"))?;
        rx.await
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "the database is closed"))
    }

    /// The screen the request's bearer token belongs to.
    async fn screen(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "a bearer token is required"))?;
        let hash = sha256_hex(token.as_bytes());
        match self.ask(|tx| Job::ScreenOf(hash, tx)).await? {
            Ok(Some(screen)) => Ok(screen),
            Ok(None) => Err(error(StatusCode::UNAUTHORIZED, "unknown token")),
            Err(e) => Err(internal(e)),
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

fn same_screen(token_screen: &str, body_screen: &str) -> Result<(), Refusal> {
    if token_screen == body_screen {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            format!("this token is for screen {token_screen:?}, not {body_screen:?}"),
        ))
    }
}

async fn feedback(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let screen = app.screen(&headers).await?;
        let batch: FeedbackBatch = parse(&body)?;
        same_screen(&screen, &batch.screen)?;
        if batch.items.len() > MAX_ITEMS {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("at most {MAX_ITEMS} items per request"),
            ));
        }
        match app.ask(|tx| Job::Feedback(batch, tx)).await? {
            Ok(response) => Ok(Json(response).into_response()),
            Err(e) => Err(internal(e)),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn plays(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let screen = app.screen(&headers).await?;
        let plays: PlaysBody = parse(&body)?;
        same_screen(&screen, &plays.screen)?;
        match app.ask(|tx| Job::Plays(plays, screen, tx)).await? {
            Ok(stored) => Ok(Json(serde_json::json!({ "stored": stored })).into_response()),
            Err(e) => Err(internal(e)),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn screenshot(
    State(app): State<App>,
    UrlPath(command_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let screen = app.screen(&headers).await?;
        if uuid::Uuid::parse_str(&command_id).is_err() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the command id is not a UUID",
            ));
        }
        if !body.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the body is not a PNG image",
            ));
        }
        match app
            .ask(|tx| Job::Screenshot(screen, command_id, body, tx))
            .await?
        {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(e) => Err(internal(e)),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// The intake routes over a database thread.
fn router(jobs: std_mpsc::Sender<Job>) -> Router {
    let app = App { jobs };
    Router::new()
        .route(
            "/api/v1/feedback",
            post(feedback).layer(DefaultBodyLimit::max(MAX_JSON_BODY)),
        )
        .route(
            "/api/v1/plays",
            post(plays).layer(DefaultBodyLimit::max(MAX_JSON_BODY)),
        )
        .route(
            "/api/v1/screenshots/{command_id}",
            put(screenshot).layer(DefaultBodyLimit::max(MAX_SCREENSHOT_BODY)),
        )
        .with_state(app)
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    config: OfficeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = OfficeStore::open(&config.database)?;
    let (jobs, rx) = std_mpsc::channel();
    let database = std::thread::Builder::new()
        .name("office-db".into())
        .spawn(move || database_thread(store, rx))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!("office intake listening on {}", listener.local_addr()?);
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, router(jobs))
        .with_graceful_shutdown(shutdown)
        .await?;
    // The router (and its senders) are gone: the database thread ends.
    let _ = tokio::task::spawn_blocking(move || database.join()).await;
    Ok(())
}
