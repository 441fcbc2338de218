//! The office's web console (`/console`), served by `gongkai office serve`
//! beside the intake API: people and their roles, compose (撰写), review
//! (审核: 退回 or 批准), publish (发布), and the images notices show
//! (`/media/{sha256}`).
//!
//! Keys stay with people. Each person's browser makes (or imports) an
//! Ed25519 key at enrolment and keeps it non-extractable in IndexedDB; the
//! server learns only the public half. Staff sign a notice's exact payload
//! bytes as `office` when they submit it, a supervisor as `supervisor` when
//! approving it, both in the browser (`assets/console.js`), and the server
//! checks each signature with the screens' own code before it counts. The
//! server's own `operator` key (`keys`) signs manifests only, never a notice.
//!
//! - every page needs a session (an HttpOnly, Secure, SameSite=Strict
//!   cookie); every POST carries the session's CSRF token, and the login
//!   and enrolment forms a double-submitted one;
//! - logins are rate-limited per account and per client address (`auth`);
//! - every action writes an audit line: who, when, what, and the SHA-256 of
//!   the request's payload;
//! - pages are server-rendered, every foreign value escaped (`html`), under
//!   a Content-Security-Policy that allows no inline script.
//!
//! Handlers never touch SQLite: they call the database thread of
//! `office::database`. What a form makes is pure (`compose`, `diff`), and
//! so is its HTML (`views`); the handlers are `people` (login, enrolment,
//! audit), `drafts` (compose and edit), `review` (submit, return, approve),
//! `publish` (publish, revise, withdraw, which screens hold it) and `media`
//! (images and previews); `preview` draws pages with the screens' renderer
//! on a thread of its own.

// A refusal is the page that says so: handlers return `Result<_, Response>`
// and the error is as large as any answer.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod compose;
pub mod diff;
mod drafts;
mod feedback;
mod fleet;
pub mod html;
pub mod keys;
mod media;
mod people;
pub mod preview;
mod publish;
mod review;
mod views;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use time::OffsetDateTime;

use crate::protocol::{PublicKey, SecretKey, sha256_hex};
use crate::store::office::{AuditEntry, OfficeStore, User, UserRole};
use crate::workdays::Calendar;

use super::config::ServerConfig;
use super::database::{Database, Failure};
use auth::LoginLimiter;
use html::Viewer;

/// A scope the console publishes to, with the keys office.toml adds there.
#[derive(Debug, Clone)]
pub struct Scope {
    pub id: String,
    pub office: Vec<PublicKey>,
    pub supervisor: Vec<PublicKey>,
}

/// What the console knows from office.toml and its key file.
pub struct Settings {
    /// Without a trailing slash.
    pub public_url: String,
    /// How to reach office.toml's broker (each use takes a fresh client id).
    pub broker: Option<crate::mqtt::Connect>,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub calendar: Calendar,
    pub operator: SecretKey,
}

impl Settings {
    pub fn from_config(config: &ServerConfig) -> anyhow::Result<Settings> {
        let mut scopes = Vec::new();
        for scope in &config.scopes {
            anyhow::ensure!(
                crate::protocol::is_valid_id(&scope.id),
                "[[scope]] id {:?} does not match the id pattern",
                scope.id
            );
            scopes.push(Scope {
                id: scope.id.clone(),
                office: scope.policy.office.clone(),
                supervisor: scope.policy.supervisor.clone(),
            });
        }
        let public_url = config.public_url.clone().unwrap_or_else(|| {
            let scheme = match config.transport {
                crate::office::config::Transport::Plain => "http",
                _ => "https",
            };
            format!("{scheme}://{}", config.listen)
        });
        Ok(Settings {
            public_url: public_url.trim_end_matches('/').to_owned(),
            broker: crate::office::follow::connect(config)?,
            prefix: config.topic_prefix.clone(),
            scopes,
            calendar: config.calendar.clone(),
            operator: keys::operator_key(&config.database)?,
        })
    }
}

/// The console's shared state: the database thread, settings, and the
/// login limiter (in memory: a restart forgets failures, which only
/// an administrator with shell access can cause).
#[derive(Clone)]
pub struct Console {
    database: Database,
    settings: Arc<Settings>,
    limiter: Arc<Mutex<LoginLimiter>>,
    previewer: preview::Previewer,
    /// The screens' statuses as the server follows them, with a broker.
    fleet: Option<tokio::sync::watch::Receiver<crate::office::watch::FleetView>>,
}

/// A logged-in person.
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub token_hash: String,
}

impl Session {
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer {
            name: &self.user.name,
            role_label: role_label(self.user.role),
            csrf: &self.csrf,
            keyid: None,
        }
    }

    /// The key id of the person's enrolled key.
    pub fn keyid(&self) -> Option<String> {
        self.user
            .public_key
            .as_deref()
            .and_then(|k| PublicKey::from_base64(k).ok())
            .map(|k| k.key_id().0.clone())
    }
}

pub fn role_label(role: UserRole) -> &'static str {
    match role {
        UserRole::Staff => "社区工作人员",
        UserRole::Supervisor => "居务监督委员会",
        UserRole::Viewer => "上级监督（只读）",
    }
}

pub fn now_seconds() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A refusal or failure as a page.
pub type Page = Result<Response, Response>;

impl Console {
    pub fn new(
        settings: Settings,
        database: Database,
        fleet: Option<tokio::sync::watch::Receiver<crate::office::watch::FleetView>>,
    ) -> anyhow::Result<Console> {
        Ok(Console {
            database,
            settings: Arc::new(settings),
            limiter: Arc::new(Mutex::new(LoginLimiter::default())),
            previewer: preview::Previewer::start()?,
            fleet,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The console's routes, to merge into the intake's router.
    pub fn router(self) -> Router {
        people::routes()
            .merge(drafts::routes())
            .merge(review::routes())
            .merge(publish::routes())
            .merge(media::routes())
            .merge(fleet::routes())
            .merge(feedback::routes())
            .with_state(self)
    }

    /// Runs `f` on the database thread; a failure is a 500 or 503 page.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut OfficeStore) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Response> {
        self.database.call(f).await.map_err(|failure| match failure {
            Failure::Closed => html::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "服务暂不可用",
                None,
                "服务器正在停止，请稍后再试。",
            ),
            Failure::Failed(e) => {
                tracing::error!("console: {e:#}");
                html::message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "出错了",
                    None,
                    "服务器未能完成这一操作，没有保存任何改动。请重试；如仍失败，请联系管理员。",
                )
            }
        })
    }

    /// The session of a request's cookie, or the way to the login page.
    async fn session(&self, headers: &HeaderMap) -> Result<Session, Response> {
        let token = headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|c| auth::cookie(c, auth::SESSION_COOKIE))
            .map(str::to_owned);
        let to_login = || Redirect::to("/console/login").into_response();
        let Some(token) = token else {
            return Err(to_login());
        };
        let token_hash = auth::token_hash(&token);
        let hash = token_hash.clone();
        let found = self
            .db(move |store| Ok(store.session(&hash, now_seconds())?))
            .await?;
        match found {
            Some((user, csrf)) => Ok(Session {
                user,
                csrf,
                token_hash,
            }),
            None => Err(to_login()),
        }
    }

    /// The session of a POST whose CSRF token (form field or
    /// `X-CSRF-Token` header) matches the session's.
    async fn posted(
        &self,
        headers: &HeaderMap,
        form_csrf: Option<&str>,
    ) -> Result<Session, Response> {
        let session = self.session(headers).await?;
        let given = form_csrf.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
        match given {
            Some(given) if auth::same_secret(given, &session.csrf) => Ok(session),
            _ => Err(html::message(
                StatusCode::FORBIDDEN,
                "请求被拒绝",
                Some(&session.viewer()),
                "表单已过期或来源不明（CSRF 校验失败），没有执行任何操作。请返回页面刷新后重试。",
            )),
        }
    }

    /// Writes an audit line: who, what, and the hash of the payload.
    async fn audit(&self, who: &str, what: String, payload: &[u8]) -> Result<(), Response> {
        let who = who.to_owned();
        let hash = sha256_hex(payload);
        self.db(move |store| {
            Ok(store.audit_action(&AuditEntry {
                who: &who,
                what: &what,
                payload_sha256: &hash,
            })?)
        })
        .await
    }
}

/// Refuses unless the session's person has `role`.
fn require(session: &Session, role: UserRole, what: &str) -> Result<(), Response> {
    if session.user.role == role {
        return Ok(());
    }
    Err(html::message(
        StatusCode::FORBIDDEN,
        "没有权限",
        Some(&session.viewer()),
        &format!(
            "{what}需要“{}”的身份，您是“{}”。没有执行任何操作。",
            role_label(role),
            role_label(session.user.role)
        ),
    ))
}

/// A urlencoded form body.
pub struct FormBody(Vec<(String, String)>);

impl FormBody {
    pub fn parse(body: &Bytes) -> FormBody {
        FormBody(url::form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }
}

/// The client's address, when the accept loop recorded it.
fn client_address(connect_info: Option<&ConnectInfo<SocketAddr>>) -> Option<IpAddr> {
    connect_info.map(|c| c.0.ip())
}

/// Redirects after a POST (303: the browser GETs the page).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// `gongkai office user add`: adds a person (or renews the link of one who
/// has not enrolled) and returns their one-time enrolment link.
pub fn add_user(config: &ServerConfig, name: &str, role: UserRole) -> anyhow::Result<String> {
    let name = name.trim();
    anyhow::ensure!(
        !name.is_empty() && name.chars().count() <= 64 && !name.chars().any(char::is_control),
        "a name is 1 to 64 characters, without control characters"
    );
    let settings = Settings::from_config(config)?;
    let token = auth::random_token();
    let mut store = OfficeStore::open(&config.database)?;
    store.add_user(
        name,
        role,
        &auth::token_hash(&token),
        now_seconds() + auth::ENROLMENT_SECONDS,
    )?;
    Ok(format!(
        "{}/console/enrol?token={token}",
        settings.public_url
    ))
}

/// `gongkai office user reenrol`: sends an enrolled person back to
/// enrolment (a lost browser, a new computer, a key that may have leaked)
/// and returns their new one-time link, with the key they held. That key
/// is retired (it still verifies what it signed, so screens keep trusting
/// it) or, with `revoke`, trusted nowhere from the next `[trust]` block on.
pub fn reenrol_user(
    config: &ServerConfig,
    name: &str,
    revoke: bool,
) -> anyhow::Result<(String, Option<String>)> {
    let settings = Settings::from_config(config)?;
    let token = auth::random_token();
    let mut store = OfficeStore::open(&config.database)?;
    let old = store.reenrol_user(
        name.trim(),
        &auth::token_hash(&token),
        now_seconds() + auth::ENROLMENT_SECONDS,
        revoke,
    )?;
    Ok((
        format!("{}/console/enrol?token={token}", settings.public_url),
        old,
    ))
}

/// `gongkai office trust`: the `[trust]` block screens need.
pub fn trust(config: &ServerConfig) -> anyhow::Result<String> {
    let settings = Settings::from_config(config)?;
    let store = OfficeStore::open(&config.database)?;
    Ok(keys::trust_block(
        &store.key_holders()?,
        &settings.scopes,
        &settings.operator.public(),
    ))
}
