//! 屏幕 (the fleet page): every screen of the console's scopes from its
//! retained status on office.toml's broker, as the server follows them
//! (`office::watch`; read from the broker itself until that view is
//! ready), with for how long an offline screen has been gone, the buttons
//! that send it operator-signed commands (截屏, 识别) and its latest
//! screenshot. The page renews its table every 30 seconds: the console's
//! script fetches `/console/fleet/view`, the same table as a fragment.
//!
//! Anyone logged in sees the page; only staff see and may press the
//! buttons, and every command sent is written to the audit trail.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use time::OffsetDateTime;

use crate::office::broker::FleetEntry;
use crate::protocol::TopicSpace;
use crate::protocol::command::Action;
use crate::status::{ScreenStatus, StatusMessage};
use crate::store::office::UserRole;

use super::html::{self, csrf_field, esc};
use super::{Console, FormBody, Page, require, see_other};

/// A screen whose status is older than this (or that is offline) is marked.
pub const MARK_AFTER: time::Duration = time::Duration::minutes(5);
/// How often the page renews its table.
const REFRESH_SECONDS: u32 = 30;
/// How long a command's sender waits for the screen's answer.
const COMMAND_WAIT: Duration = Duration::from_secs(30);

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/fleet", get(fleet_page))
        .route("/console/fleet/view", get(fleet_view))
        .route("/console/fleet/{scope}/{screen}/command", post(command))
        .route("/console/fleet/{screen}/screenshot", get(screenshot_page))
        .route(
            "/console/fleet/{screen}/screenshot.png",
            get(screenshot_png),
        )
}

fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(crate::workdays::CHINA);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// For how long a screen has been offline, from the last time it said it
/// was online: 离线 12 分钟, 离线 3 小时 5 分钟, 离线 2 天 4 小时.
pub fn offline_for(last_online: OffsetDateTime, now: OffsetDateTime) -> String {
    let minutes = (now - last_online).whole_minutes().max(0);
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => "离线不到 1 分钟".to_owned(),
        (0, 0, m) => format!("离线 {m} 分钟"),
        (0, h, 0) => format!("离线 {h} 小时"),
        (0, h, m) => format!("离线 {h} 小时 {m} 分钟"),
        (d, 0, _) => format!("离线 {d} 天"),
        (d, h, _) => format!("离线 {d} 天 {h} 小时"),
    }
}

/// The state cell of an online status: 在线, or for how long it has been
/// gone when it has not been renewed for `MARK_AFTER`.
fn online_state(status: &ScreenStatus, now: OffsetDateTime) -> String {
    if now - status.updated_at > MARK_AFTER {
        format!(
            "<span class=\"stale\">{}</span>（最后一次状态未标明离线）",
            offline_for(status.updated_at, now)
        )
    } else {
        "在线".to_owned()
    }
}

/// The state and last-seen cells of a screen whose will says offline:
/// how long since its last online status, when the office saw one.
fn offline_state(last_online: Option<OffsetDateTime>, now: OffsetDateTime) -> (String, String) {
    match last_online {
        Some(t) => (
            format!(
                "<span class=\"stale\">{}</span>（屏幕已断开）",
                offline_for(t, now)
            ),
            when(t),
        ),
        None => (
            "<span class=\"stale\">离线</span>（屏幕已断开；本服务启动以来未见其在线，离线时长未知）"
                .to_owned(),
            "未知".to_owned(),
        ),
    }
}

fn showing(status: &ScreenStatus) -> String {
    match &status.showing {
        Some(s) => format!(
            "{}{} 第 {} 版",
            s.scope
                .as_deref()
                .map(|scope| format!("{}/", esc(scope)))
                .unwrap_or_default(),
            esc(&s.id),
            s.version
        ),
        None => "（无）".to_owned(),
    }
}

fn rejection(status: &ScreenStatus) -> String {
    match &status.last_rejection {
        Some(r) => format!("{}：{}（{}）", when(r.at), esc(&r.reason), esc(&r.topic)),
        None => "无".to_owned(),
    }
}

/// The row of one screen; `last_online` is the latest online status the
/// server saw from it; `buttons` when the viewer may send commands.
fn row(
    scope: &str,
    entry: &FleetEntry,
    last_online: Option<OffsetDateTime>,
    now: OffsetDateTime,
    buttons: Option<&str>,
) -> String {
    let screen = entry.screen();
    let cells = match entry {
        FleetEntry::Read(StatusMessage::Online(s)) => format!(
            "<td class=\"state\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td>",
            online_state(s, now),
            when(s.updated_at),
            showing(s),
            s.manifest.missing + s.manifest.pages_missing,
            s.outbox,
            if s.outbox_rejected > 0 {
                format!("（{} 条被拒收）", s.outbox_rejected)
            } else {
                String::new()
            },
            rejection(s)
        ),
        FleetEntry::Read(StatusMessage::Offline(_)) => {
            let (state, seen) = offline_state(last_online, now);
            format!(
                "<td class=\"state\">{state}</td><td>{seen}</td><td>—</td><td>—</td><td>—</td><td>—</td>"
            )
        }
        FleetEntry::Unreadable { error, .. } => format!(
            "<td class=\"state\">状态无法读取</td><td colspan=\"5\">{}</td>",
            esc(error)
        ),
    };
    let actions = match buttons {
        Some(csrf) => format!(
            "<form method=\"post\" action=\"/console/fleet/{}/{}/command\" class=\"inline\">{}\
             <button type=\"submit\" name=\"action\" value=\"screenshot\">截屏</button>\
             <button type=\"submit\" name=\"action\" value=\"identify\">识别</button></form> ",
            esc(scope),
            esc(screen),
            csrf_field(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<tr data-screen=\"{}\"><td>{}</td><td>{}</td>{cells}<td>{actions}\
         <a href=\"/console/fleet/{}/screenshot\">最近截屏</a></td></tr>",
        esc(screen),
        esc(screen),
        esc(scope),
        esc(screen)
    )
}

async fn fleet_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let result: Page = async {
        let session = console.session(&headers).await?;
        let table = fleet_table(&console, &session).await?;
        Ok(html::page(
            StatusCode::OK,
            "屏幕",
            Some(&session.viewer()),
            &format!(
                "<section id=\"fleet-view\" data-refresh=\"/console/fleet/view\" \
                 data-every=\"{REFRESH_SECONDS}\">{table}</section>"
            ),
        ))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// The table of the fleet page alone, which its script fetches to renew it.
async fn fleet_view(State(console): State<Console>, headers: HeaderMap) -> Response {
    let result: Page = async {
        let session = console.session(&headers).await?;
        let table = fleet_table(&console, &session).await?;
        let mut response =
            ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], table).into_response();
        html::secure_headers(&mut response);
        Ok(response)
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// Every screen of every scope (or of `only`), each with the last time the
/// server saw it online: from the server's view once it is ready, else
/// read from the broker now.
pub(super) async fn fleet_entries(
    console: &Console,
    session: &super::Session,
    only: Option<&str>,
) -> Result<Vec<(String, FleetEntry, Option<OffsetDateTime>)>, Response> {
    let scopes: Vec<&super::Scope> = console
        .settings
        .scopes
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.id))
        .collect();
    let view = console.fleet.as_ref().map(|v| v.borrow().clone());
    if let Some(view) = view.as_ref().filter(|v| v.ready) {
        return Ok(scopes
            .iter()
            .copied()
            .flat_map(|scope| {
                view.scope(&scope.id)
                    .map(move |seen| (scope.id.clone(), seen.entry.clone(), seen.last_online))
            })
            .collect());
    }
    let Some(broker) = console.settings.broker.clone() else {
        return Err(super::drafts::conflict(
            session,
            "office.toml 没有配置 broker，无法读取屏幕状态。",
        ));
    };
    let connect = super::publish::one_shot(broker);
    let mut out = Vec::new();
    for scope in scopes {
        let fleet =
            crate::office::broker::fleet_status(&connect, &console.settings.prefix, &scope.id)
                .await
                .map_err(|e| {
                    html::message(
                        StatusCode::BAD_GATEWAY,
                        "无法读取屏幕状态",
                        Some(&session.viewer()),
                        &format!("未能从消息服务器读取屏幕状态（{e:#}）。"),
                    )
                })?;
        for entry in fleet {
            let last_online = view
                .as_ref()
                .and_then(|v| v.last_online(&scope.id, entry.screen()));
            out.push((scope.id.clone(), entry, last_online));
        }
    }
    Ok(out)
}

/// The count and the table of the fleet page.
async fn fleet_table(console: &Console, session: &super::Session) -> Result<String, Response> {
    let entries = fleet_entries(console, session, None).await?;
    let now = OffsetDateTime::now_utc();
    let buttons = (session.user.role == UserRole::Staff).then_some(session.csrf.as_str());
    let rows: String = entries
        .iter()
        .map(|(scope, entry, last_online)| row(scope, entry, *last_online, now, buttons))
        .collect();
    Ok(format!(
        "<p>共 {} 块屏幕（来自各屏在消息服务器上保留的状态；超过 5 分钟没有新状态的屏幕标为离线，\
         并注明离线多久；每 {REFRESH_SECONDS} 秒刷新，更新于 {}）。</p>\
         <table class=\"list\" id=\"fleet\"><thead><tr><th>屏幕</th><th>范围</th><th>状态</th>\
         <th>最后在线</th><th>正在显示</th><th>缺少</th><th>待上传意见</th><th>最近拒收</th>\
         <th>操作</th></tr></thead><tbody>{rows}</tbody></table>",
        entries.len(),
        when(now)
    ))
}

async fn command(
    State(console): State<Console>,
    UrlPath((scope, screen)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, form.get("csrf")).await?;
        require(&session, UserRole::Staff, "向屏幕发送指令")?;
        let action = match form.get("action") {
            Some("screenshot") => Action::Screenshot,
            Some("identify") => Action::Identify,
            _ => {
                return Err(super::drafts::bad_request(
                    &session,
                    "未知的指令：只能发送“截屏”或“识别”。",
                ));
            }
        };
        if !console.settings.scopes.iter().any(|s| s.id == scope)
            || !crate::protocol::is_valid_id(&screen)
        {
            return Err(super::drafts::bad_request(
                &session,
                "没有这块屏幕：范围或屏幕编号不正确。",
            ));
        }
        let Some(broker) = console.settings.broker.clone() else {
            return Err(super::drafts::conflict(
                &session,
                "office.toml 没有配置 broker，无法发送指令。",
            ));
        };
        console
            .audit(
                &session.user.name,
                format!(
                    "sent command {} to screen {screen} of {scope}",
                    action.as_str()
                ),
                &body,
            )
            .await?;
        let connect = super::publish::one_shot(broker);
        let topics = TopicSpace::new(&console.settings.prefix, &scope);
        let outcome = crate::office::command::send_command(
            &connect,
            &topics,
            &screen,
            action,
            &console.settings.operator,
            COMMAND_WAIT,
        )
        .await;
        match outcome {
            Ok(last) if last.result == "done" => {
                console
                    .audit(
                        &session.user.name,
                        format!(
                            "command {} ({}) to screen {screen}: done",
                            last.id,
                            action.as_str()
                        ),
                        last.id.as_bytes(),
                    )
                    .await?;
                Ok(see_other(&match action {
                    Action::Screenshot => format!("/console/fleet/{screen}/screenshot"),
                    _ => "/console/fleet".to_owned(),
                }))
            }
            Ok(last) => Err(html::message(
                StatusCode::BAD_GATEWAY,
                "屏幕未执行指令",
                Some(&session.viewer()),
                &format!("屏幕 {screen} 回复：{}", last.result),
            )),
            Err(e) => Err(html::message(
                StatusCode::GATEWAY_TIMEOUT,
                "屏幕没有回应",
                Some(&session.viewer()),
                &format!("指令已发出，但没有收到屏幕 {screen} 的结果（{e:#}）。"),
            )),
        }
    }
    .await;
    result.unwrap_or_else(|page| page)
}

async fn screenshot_page(
    State(console): State<Console>,
    UrlPath(screen): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let result: Page = async {
        let session = console.session(&headers).await?;
        let name = screen.clone();
        let shot = console
            .db(move |store| Ok(store.latest_screenshot(&name)?))
            .await?;
        let body = match shot {
            Some((command_id, received_at, png)) => format!(
                "<p>收到时间：{}，指令 <span class=\"hash\">{}</span>，{} 字节。</p>\
                 <img class=\"screenshot\" src=\"/console/fleet/{}/screenshot.png\" alt=\"屏幕 {} 的截屏\">",
                esc(&received_at),
                esc(&command_id),
                png.len(),
                esc(&screen),
                esc(&screen)
            ),
            None => "<p class=\"message\">这块屏幕还没有上传过截屏。</p>".to_owned(),
        };
        Ok(html::page(
            StatusCode::OK,
            &format!("屏幕 {screen} 的最近截屏"),
            Some(&session.viewer()),
            &format!("{body}<p><a href=\"/console/fleet\">返回屏幕列表</a></p>"),
        ))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

async fn screenshot_png(
    State(console): State<Console>,
    UrlPath(screen): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let result: Page = async {
        let session = console.session(&headers).await?;
        let shot = console
            .db(move |store| Ok(store.latest_screenshot(&screen)?))
            .await?;
        let Some((_, _, png)) = shot else {
            return Err(html::message(
                StatusCode::NOT_FOUND,
                "没有截屏",
                Some(&session.viewer()),
                "这块屏幕还没有上传过截屏。",
            ));
        };
        let mut response = ([(header::CONTENT_TYPE, "image/png")], png).into_response();
        html::secure_headers(&mut response);
        Ok(response)
    }
    .await;
    result.unwrap_or_else(|page| page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn an_offline_screen_says_for_how_long() {
        let now = datetime!(2026-10-08 10:00 +08:00);
        let ago = |minutes: i64| offline_for(now - time::Duration::minutes(minutes), now);
        assert_eq!(ago(0), "离线不到 1 分钟");
        assert_eq!(ago(12), "离线 12 分钟");
        assert_eq!(ago(60), "离线 1 小时");
        assert_eq!(ago(185), "离线 3 小时 5 分钟");
        assert_eq!(ago(2 * 1440 + 4 * 60 + 59), "离线 2 天 4 小时");
        assert_eq!(ago(3 * 1440 + 7), "离线 3 天");
        // 12 minutes and 59 seconds are 12 minutes: never more than it was.
        assert_eq!(
            offline_for(now - time::Duration::seconds(12 * 60 + 59), now),
            "离线 12 分钟"
        );
        // A screen clock ahead of the office's is not offline for less than 0.
        assert_eq!(ago(-5), "离线不到 1 分钟");
    }

    #[test]
    fn a_will_tells_how_long_only_when_the_office_saw_the_screen_online() {
        let now = datetime!(2026-10-08 10:00 +08:00);
        let (state, seen) = offline_state(Some(now - time::Duration::minutes(12)), now);
        assert!(state.contains("离线 12 分钟"), "{state}");
        assert_eq!(seen, "2026-10-08 09:48:00");
        let (state, seen) = offline_state(None, now);
        assert!(state.contains("离线时长未知"), "{state}");
        assert_eq!(seen, "未知");
    }

    #[test]
    fn a_status_not_renewed_says_how_long_since() {
        let now = datetime!(2026-10-08 10:00 +08:00);
        let status: ScreenStatus = serde_json::from_value(serde_json::json!({
            "screen": "lobby-1", "community": "lixia-demo", "software": "0.1.0",
            "mode": "led", "started_at": "2026-10-08T00:00:00Z",
            "updated_at": "2026-10-08T01:38:00Z",
            "active": 1, "cached": 1, "rejected": 0,
            "manifest": {"version": 1, "missing": 0},
        }))
        .unwrap();
        // 09:38 in China, 22 minutes before now.
        assert!(online_state(&status, now).contains("离线 22 分钟"));
        assert_eq!(
            online_state(&status, datetime!(2026-10-08 09:40 +08:00)),
            "在线"
        );
    }
}
