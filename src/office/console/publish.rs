//! 发布 and what follows it: an approved draft's envelope goes through
//! `verify_message` as a screen would take it, then out to the broker with
//! the next manifest signed by the operator key; revisions and withdrawals
//! start from the newest published version; and the screens' retained
//! statuses say which of them hold it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use time::OffsetDateTime;

use crate::mqtt::Connect;
use crate::protocol::envelope::{Envelope, NOTICE_TYPE, Signature};
use crate::protocol::notice::Notice;
use crate::protocol::{TopicSpace, verify_message};
use crate::store::office::{Draft, DraftKind, DraftState, User, UserRole};

use super::compose::{self, Form};
use super::drafts::{conflict, save_form};
use super::html::{self, esc};
use super::views::draft_title;
use super::{Console, FormBody, Page, Session, require, see_other};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/drafts/{id}/publish", post(publish))
        .route("/console/drafts/{id}/revise", post(revise))
        .route("/console/drafts/{id}/withdraw", post(withdraw))
        .route("/console/drafts/{id}/screens", get(screens_page))
}

/// The envelope of an approved draft, as a screen of its scope would take
/// it: both people's signatures, verified with the screens' own code.
pub(super) fn envelope_of(
    console: &Console,
    draft: &Draft,
    users: &[User],
) -> Result<Vec<u8>, String> {
    let payload = draft.payload.as_deref().ok_or("没有签名内容")?;
    let parse = |sig: Option<&str>, who: &str| -> Result<Signature, String> {
        sig.and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| format!("缺少{who}的签名"))
    };
    let envelope = Envelope {
        payload_type: NOTICE_TYPE.to_owned(),
        payload: STANDARD.encode(payload),
        signatures: vec![
            parse(draft.office_sig.as_deref(), "工作人员")?,
            parse(draft.supervisor_sig.as_deref(), "居务监督委员会")?,
        ],
    };
    let bytes = envelope.to_bytes();
    let topics = TopicSpace::new(&console.settings.prefix, &draft.scope);
    let verified = verify_message(
        &topics,
        &topics.notice(&draft.notice_id),
        &bytes,
        &console.policy(&draft.scope, users),
    )
    .map_err(|e| format!("公开屏会拒收这份公告：{e}"))?;
    match verified {
        crate::protocol::Verified::Notice(n) if n.notice.review_verified => Ok(bytes),
        _ => Err("监督委员会的签名没有通过验证".to_owned()),
    }
}

pub(super) async fn publish(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, form.get("csrf")).await?;
        require(&session, UserRole::Staff, "发布")?;
        let draft = console.load(&session, id).await?;
        if draft.state != DraftState::Approved {
            return Err(conflict(
                &session,
                "只有经工作人员和居务监督委员会双方签名、已批准的公告才能发布。",
            ));
        }
        let users = console.db(|store| Ok(store.key_holders()?)).await?;
        let envelope = envelope_of(&console, &draft, &users)
            .map_err(|why| conflict(&session, &format!("不能发布：{why}。")))?;
        let Some(broker) = console.settings.broker.clone() else {
            return Err(conflict(
                &session,
                "office.toml 没有配置 broker，无法发布。请管理员配置后重试。",
            ));
        };
        let notice = Notice::from_payload(draft.payload.as_deref().unwrap_or_default())
            .map_err(|e| conflict(&session, &format!("{e}")))?;
        let connect = one_shot(broker);
        let published = crate::office::broker::publish_envelopes(
            &connect,
            &console.settings.prefix,
            &console.settings.operator,
            vec![(notice.clone(), envelope.clone())],
        )
        .await;
        let manifest = match published {
            Ok(done) => done.first().map_or(0, |p| p.manifest_version),
            Err(e) => {
                tracing::warn!("publishing draft {id}: {e:#}");
                return Err(html::message(
                    StatusCode::BAD_GATEWAY,
                    "发布失败",
                    Some(&session.viewer()),
                    &format!("未能发布到消息服务器（{e:#}）。公告仍为“已批准”，可稍后重试。"),
                ));
            }
        };
        let (stored, who) = (envelope.clone(), session.user.name.clone());
        let (scope, reply) = (draft.scope.clone(), notice.clone());
        console
            .db(move |store| {
                store.mark_published(id, &stored, manifest, &who)?;
                // A reply's receipts are answered once it is out.
                if reply.category == crate::protocol::notice::Category::Reply {
                    store.record_reply(
                        &reply.id,
                        &scope,
                        &reply.reply_to,
                        OffsetDateTime::now_utc(),
                    )?;
                }
                Ok(())
            })
            .await?;
        console
            .audit(
                &session.user.name,
                format!(
                    "published draft {id} ({}/{} version {}), manifest version {manifest}",
                    draft.scope, draft.notice_id, draft.version
                ),
                &envelope,
            )
            .await?;
        Ok(see_other(&format!("/console/drafts/{id}")))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// The newest published version of a notice, which revisions and
/// withdrawals start from.
pub(super) async fn newest_published(
    console: &Console,
    session: &Session,
    id: i64,
) -> Result<Draft, Response> {
    let draft = console.load(session, id).await?;
    let (scope, notice_id) = (draft.scope.clone(), draft.notice_id.clone());
    let (highest, _) = console
        .db(move |store| Ok(store.versions_of(&scope, &notice_id)?))
        .await?;
    if draft.state != DraftState::Published
        || draft.kind != DraftKind::Notice
        || draft.version != highest
    {
        return Err(conflict(
            session,
            "只能修订或撤回最新的已发布版本（可能已有更新的草稿）。",
        ));
    }
    Ok(draft)
}

pub(super) async fn revise(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, body.get("csrf")).await?;
        require(&session, UserRole::Staff, "修订")?;
        let old = newest_published(&console, &session, id).await?;
        let new_id = next_version(&console, &session, &old, DraftKind::Notice, None).await?;
        let draft = console.load(&session, new_id).await?;
        let form: Form = serde_json::from_str(&draft.form).unwrap_or_default();
        save_form(&console, &session, &draft, form).await
    }
    .await;
    result.unwrap_or_else(|page| page)
}

pub(super) async fn withdraw(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, body.get("csrf")).await?;
        require(&session, UserRole::Staff, "申请撤回")?;
        let old = newest_published(&console, &session, id).await?;
        let payload = compose::withdrawal(
            old.payload.as_deref().unwrap_or_default(),
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| conflict(&session, &format!("无法生成撤回内容：{e}")))?;
        let new_id = next_version(
            &console,
            &session,
            &old,
            DraftKind::Withdrawal,
            Some(payload.clone()),
        )
        .await?;
        console
            .audit(
                &session.user.name,
                format!("drafted the withdrawal of {}/{}", old.scope, old.notice_id),
                &payload,
            )
            .await?;
        Ok(see_other(&format!("/console/drafts/{new_id}")))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// A draft of the version after `old`, by the session's person, of `kind`
/// (with its payload, if already made); refused when one exists already.
async fn next_version(
    console: &Console,
    session: &Session,
    old: &Draft,
    kind: DraftKind,
    payload: Option<Vec<u8>>,
) -> Result<i64, Response> {
    let (scope, notice_id, version, form, author) = (
        old.scope.clone(),
        old.notice_id.clone(),
        old.version + 1,
        old.form.clone(),
        session.user.name.clone(),
    );
    let created = console
        .db(move |store| {
            Ok(store.create_draft(
                &scope,
                &notice_id,
                version,
                kind,
                &form,
                payload.as_deref(),
                &author,
            )?)
        })
        .await?;
    created.ok_or_else(|| conflict(session, "已有这份公告的新版本草稿。"))
}

/// Whether a screen's status says it holds what manifest `version` of
/// `scope` lists: that manifest or a later one, with nothing missing.
pub(super) fn holds(status: &crate::status::ScreenStatus, scope: &str, version: u64) -> bool {
    let manifest = if status.community == scope {
        Some(&status.manifest)
    } else {
        status
            .manifests
            .iter()
            .find(|m| m.scope == scope)
            .map(|m| &m.manifest)
    };
    manifest.is_some_and(|m| m.version >= version && m.missing == 0 && m.pages_missing == 0)
}

/// Which screens hold a published notice, from their retained statuses on
/// the broker as the server follows them (`fleet::fleet_entries`); the page
/// renews itself every 5 seconds.
pub(super) async fn screens_page(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
) -> Response {
    use crate::office::broker::FleetEntry;
    use crate::status::{Liveness, StatusMessage};
    let result: Page = async {
        let session = console.session(&headers).await?;
        let draft = console.load(&session, id).await?;
        let Some(version) = draft.manifest_version.filter(|_| draft.state == DraftState::Published)
        else {
            return Err(conflict(&session, "这份公告尚未发布。"));
        };
        let fleet: Vec<FleetEntry> =
            super::fleet::fleet_entries(&console, &session, Some(&draft.scope))
                .await?
                .into_iter()
                .map(|(_, entry, _)| entry)
                .collect();
        let now = OffsetDateTime::now_utc();
        let mut held = 0;
        let rows: String = fleet
            .iter()
            .map(|entry| {
                let (state, holding) = match entry {
                    FleetEntry::Read(message @ StatusMessage::Online(s)) => {
                        let state = match message.liveness(now) {
                            Liveness::Stale => "超过 5 分钟无状态",
                            _ => "在线",
                        };
                        (state, holds(s, &draft.scope, version))
                    }
                    FleetEntry::Read(StatusMessage::Offline(_)) => ("离线", false),
                    FleetEntry::Unreadable { .. } => ("状态无法读取", false),
                };
                held += usize::from(holding);
                format!(
                    "<tr data-screen=\"{}\"><td>{}</td><td>{state}</td><td class=\"holds\">{}</td></tr>",
                    esc(entry.screen()),
                    esc(entry.screen()),
                    if holding { "已接收" } else { "尚未接收" }
                )
            })
            .collect();
        let mut response = html::page(
            StatusCode::OK,
            &format!("接收情况：{}", draft_title(&draft)),
            Some(&session.viewer()),
            &format!(
                "<p>第 {} 版随清单第 {version} 版发布。<strong id=\"held\">{held}</strong> / {} 块屏幕已接收（每 5 秒刷新）。\
                 <a href=\"/console/drafts/{id}\">返回</a></p><table class=\"list\" id=\"fleet\"><thead><tr>\
                 <th>屏幕</th><th>状态</th><th>本公告</th></tr></thead><tbody>{rows}</tbody></table>",
                draft.version,
                fleet.len()
            ),
        );
        response
            .headers_mut()
            .insert(header::REFRESH, HeaderValue::from_static("5"));
        Ok(response)
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// office.toml's broker for one connection of the console's own: a fresh
/// client id (never the follow's), acknowledged by the client library.
pub(super) fn one_shot(mut connect: Connect) -> Connect {
    connect.client_id = format!("gongkai-console-{}", uuid::Uuid::new_v4().simple());
    connect.manual_acks = false;
    connect.clean_session = true;
    connect
}
