//! The console's pages about drafts: the dashboard and the review queue,
//! compose and edit (staff), and a draft's page, which shows each person
//! what they may do with it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use time::OffsetDateTime;

use crate::protocol::PublicKey;
use crate::protocol::notice::MAX_BODY_BLOCKS;
use crate::protocol::verify::TrustPolicy;
use crate::store::office::{Draft, DraftKind, DraftState, Review, User, UserRole};

use super::compose::{self, Form, FormBlock};
use super::html::{self, csrf_field, esc};
use super::views::{
    draft_table, draft_title, form_html, history_html, payload_html, problems_html, review_diff,
    sign_html, state_label,
};
use super::{Console, FormBody, Page, Session, require, see_other};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console", get(dashboard))
        .route("/console/review", get(review_queue))
        .route("/console/compose", get(compose_page).post(create))
        .route("/console/drafts/{id}", get(draft_page))
        .route("/console/drafts/{id}/edit", post(edit))
}

pub(super) fn conflict(session: &Session, text: &str) -> Response {
    html::message(
        StatusCode::CONFLICT,
        "无法执行",
        Some(&session.viewer()),
        text,
    )
}

pub(super) fn bad_request(session: &Session, text: &str) -> Response {
    html::message(
        StatusCode::BAD_REQUEST,
        "无法执行",
        Some(&session.viewer()),
        text,
    )
}

impl Console {
    pub(super) async fn load(&self, session: &Session, id: i64) -> Result<Draft, Response> {
        match self.db(move |store| Ok(store.draft(id)?)).await? {
            Some(draft) => Ok(draft),
            None => Err(html::message(
                StatusCode::NOT_FOUND,
                "没有这份公告",
                Some(&session.viewer()),
                "没有找到这份公告或草稿。",
            )),
        }
    }

    pub(super) fn context(&self, version: u64, now: OffsetDateTime) -> compose::Context<'_> {
        compose::Context {
            public_url: &self.settings.public_url,
            version,
            now,
            calendar: &self.settings.calendar,
        }
    }

    /// The keys a screen of `scope` trusts, as the console knows them:
    /// enrolled staff as office, supervisors as supervisor, office.toml's
    /// keys of the scope, and the operator key.
    pub(super) fn policy(&self, scope: &str, users: &[User]) -> TrustPolicy {
        let mut policy = TrustPolicy::default();
        for user in users {
            let Some(key) = user
                .public_key
                .as_deref()
                .and_then(|k| PublicKey::from_base64(k).ok())
            else {
                continue;
            };
            match user.role {
                UserRole::Staff => policy.office.push(key),
                UserRole::Supervisor => policy.supervisor.push(key),
                UserRole::Viewer => {}
            }
        }
        if let Some(s) = self.settings.scopes.iter().find(|s| s.id == scope) {
            policy.office.extend(s.office.iter().cloned());
            policy.supervisor.extend(s.supervisor.iter().cloned());
        }
        policy.operator.push(self.settings.operator.public());
        policy
    }
}

async fn dashboard(State(console): State<Console>, headers: HeaderMap) -> Response {
    let session = match console.session(&headers).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let drafts = match console.db(|store| Ok(store.drafts()?)).await {
        Ok(d) => d,
        Err(page) => return page,
    };
    let of = |states: &[DraftState]| -> Vec<&Draft> {
        drafts
            .iter()
            .filter(|d| states.contains(&d.state))
            .collect()
    };
    let body = format!(
        "<section id=\"queue\"><h3>待审核</h3>{}</section>\
         <section id=\"drafts\"><h3>草稿与退回</h3>{}</section>\
         <section id=\"approved\"><h3>已批准，待发布</h3>{}</section>\
         <section id=\"published\"><h3>已发布</h3>{}</section>",
        draft_table(&of(&[DraftState::Review])),
        draft_table(&of(&[DraftState::Editing, DraftState::Returned])),
        draft_table(&of(&[DraftState::Approved])),
        draft_table(&of(&[DraftState::Published])),
    );
    html::page(StatusCode::OK, "工作台", Some(&session.viewer()), &body)
}

async fn review_queue(State(console): State<Console>, headers: HeaderMap) -> Response {
    let session = match console.session(&headers).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let drafts = match console.db(|store| Ok(store.drafts()?)).await {
        Ok(d) => d,
        Err(page) => return page,
    };
    let waiting: Vec<&Draft> = drafts
        .iter()
        .filter(|d| d.state == DraftState::Review)
        .collect();
    html::page(
        StatusCode::OK,
        "审核队列",
        Some(&session.viewer()),
        &format!("<section id=\"queue\">{}</section>", draft_table(&waiting)),
    )
}

/// The compose form's fields as posted.
fn read_form(body: &FormBody, scope: &str, notice_id: &str) -> Form {
    let count = body
        .get("blocks")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY_BLOCKS);
    let blocks = (0..count)
        .map(|i| {
            let field = |name: &str| body.text(&format!("b{i}_{name}"));
            FormBlock {
                kind: field("kind"),
                text: field("text"),
                caption: field("caption"),
                sha256: field("sha256"),
                bytes: field("bytes").parse().unwrap_or(0),
                mime: field("mime"),
            }
        })
        .collect();
    Form {
        scope: scope.to_owned(),
        notice_id: notice_id.to_owned(),
        category: body.text("category"),
        priority: body.text("priority"),
        title: body.text("title"),
        summary: body.text("summary"),
        period: body.text("period"),
        window: body.text("window"),
        valid_from: body.text("valid_from"),
        valid_until: body.text("valid_until"),
        publisher: body.text("publisher"),
        reviewer: body.text("reviewer"),
        contact: body.text("contact"),
        screens: body.text("screens"),
        blocks,
        reply_to: String::new(),
    }
}

/// Carries out the form's button: add or remove a block, or just save.
fn apply_action(form: &mut Form, action: &str) {
    let add = |kind: &str| FormBlock {
        kind: kind.to_owned(),
        ..FormBlock::default()
    };
    match action {
        "add_paragraph" => form.blocks.push(add("paragraph")),
        "add_table" => form.blocks.push(add("table")),
        "add_image" => form.blocks.push(add("image")),
        other => {
            if let Some(i) = other
                .strip_prefix("remove_")
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < form.blocks.len())
            {
                form.blocks.remove(i);
            }
        }
    }
    form.blocks.truncate(MAX_BODY_BLOCKS);
}

async fn compose_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let session = match console.session(&headers).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    if let Err(page) = require(&session, UserRole::Staff, "撰写公告") {
        return page;
    }
    let Some(scope) = console.settings.scopes.first() else {
        return html::message(
            StatusCode::CONFLICT,
            "尚未配置发布范围",
            Some(&session.viewer()),
            "office.toml 中没有 [[scope]]：请管理员先配置本办公室发布的社区。",
        );
    };
    let form = compose::new_form(&scope.id, OffsetDateTime::now_utc());
    html::page(
        StatusCode::OK,
        "撰写公告",
        Some(&session.viewer()),
        &form_html(&console, &form, &session.csrf, "/console/compose", false),
    )
}

/// Stores a form: its payload too when it makes a valid notice. Returns the
/// page to go to.
pub(super) async fn save_form(
    console: &Console,
    session: &Session,
    draft: &Draft,
    form: Form,
) -> Page {
    let json = serde_json::to_string(&form).expect("a form serialises");
    let payload = compose::build(
        &form,
        &console.context(draft.version, OffsetDateTime::now_utc()),
    )
    .ok()
    .map(|(_, payload)| payload);
    let id = draft.id;
    move_draft(
        console,
        session,
        id,
        DraftUpdate {
            from: draft.state,
            to: draft.state,
            form: json.clone(),
            payload,
            office_sig: None,
            supervisor_sig: None,
            review: None,
        },
        "这份草稿已被提交或修改，请返回刷新。",
        format!("saved draft {id}"),
        json.as_bytes(),
    )
    .await
}

/// A draft's move from one state to the next, with what it then holds.
pub(super) struct DraftUpdate {
    pub from: DraftState,
    pub to: DraftState,
    pub form: String,
    pub payload: Option<Vec<u8>>,
    pub office_sig: Option<String>,
    pub supervisor_sig: Option<String>,
    pub review: Option<Review>,
}

/// Stores `update` if the draft is still in `update.from` (else `refused`
/// says why not), audits `what` over `audited`, and goes to the draft's page.
pub(super) async fn move_draft(
    console: &Console,
    session: &Session,
    id: i64,
    update: DraftUpdate,
    refused: &str,
    what: String,
    audited: &[u8],
) -> Page {
    let changed = console
        .db(move |store| {
            Ok(store.update_draft(
                id,
                update.from,
                update.to,
                &update.form,
                update.payload.as_deref(),
                update.office_sig.as_deref(),
                update.supervisor_sig.as_deref(),
                update.review.as_ref(),
            )?)
        })
        .await?;
    if !changed {
        return Err(conflict(session, refused));
    }
    console.audit(&session.user.name, what, audited).await?;
    Ok(see_other(&format!("/console/drafts/{id}")))
}

async fn create(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let body = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, body.get("csrf")).await?;
        require(&session, UserRole::Staff, "撰写公告")?;
        let scope = body.text("scope");
        let now = OffsetDateTime::now_utc();
        let mut notice_id = body.text("notice_id").trim().to_owned();
        if notice_id.is_empty() {
            notice_id = compose::fresh_id(&body.text("category"), now, rand::random());
        }
        let mut form = read_form(&body, &scope, &notice_id);
        // Refused forms come back filled in as typed: nothing is lost.
        let again = |form: &Form, status, text: &str| {
            html::page(
                status,
                "撰写公告",
                Some(&session.viewer()),
                &format!(
                    "<p class=\"message\" id=\"refused\">{}</p>{}",
                    esc(text),
                    form_html(&console, form, &session.csrf, "/console/compose", false)
                ),
            )
        };
        if !console.settings.scopes.iter().any(|s| s.id == scope) {
            return Err(again(
                &form,
                StatusCode::BAD_REQUEST,
                "请选择 office.toml 中配置的发布范围。",
            ));
        }
        if !crate::protocol::is_valid_id(&notice_id) {
            return Err(again(
                &form,
                StatusCode::BAD_REQUEST,
                "公告编号只能由字母、数字、点、下划线和连字符组成，以字母或数字开头，最长 64 个字符。",
            ));
        }
        apply_action(&mut form, &body.text("action"));
        let (s, n, author) = (scope.clone(), notice_id.clone(), session.user.name.clone());
        let json = serde_json::to_string(&form).expect("a form serialises");
        let created = console
            .db(move |store| {
                let (highest, _) = store.versions_of(&s, &n)?;
                if highest > 0 {
                    return Ok(None);
                }
                Ok(store.create_draft(&s, &n, 1, DraftKind::Notice, &json, None, &author)?)
            })
            .await?;
        let Some(id) = created else {
            return Err(again(
                &form,
                StatusCode::CONFLICT,
                "这个公告编号已经存在：请换一个编号，或在已发布的公告上选择“修订”。",
            ));
        };
        let draft = console.load(&session, id).await?;
        save_form(&console, &session, &draft, form).await
    }
    .await;
    result.unwrap_or_else(|page| page)
}

async fn edit(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, body.get("csrf")).await?;
        require(&session, UserRole::Staff, "修改公告")?;
        let draft = console.load(&session, id).await?;
        if draft.kind != DraftKind::Notice
            || !matches!(draft.state, DraftState::Editing | DraftState::Returned)
        {
            return Err(conflict(
                &session,
                "这份公告已提交审核或已发布，不能再修改。",
            ));
        }
        let mut form = read_form(&body, &draft.scope, &draft.notice_id);
        // The receipts a reply answers are chosen in the inbox, not typed.
        form.reply_to = serde_json::from_str::<Form>(&draft.form)
            .map(|old| old.reply_to)
            .unwrap_or_default();
        apply_action(&mut form, &body.text("action"));
        save_form(&console, &session, &draft, form).await
    }
    .await;
    result.unwrap_or_else(|page| page)
}

async fn draft_page(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
) -> Response {
    let result: Page = async {
        let session = console.session(&headers).await?;
        let draft = console.load(&session, id).await?;
        let (scope, notice_id) = (draft.scope.clone(), draft.notice_id.clone());
        let (reviews, history, (highest, published)) = console
            .db(move |store| {
                Ok((
                    store.reviews(id)?,
                    store.notice_history(&scope, &notice_id)?,
                    store.versions_of(&scope, &notice_id)?,
                ))
            })
            .await?;
        let replaced = published.filter(|p| p.version < draft.version);
        let form: Form = serde_json::from_str(&draft.form).unwrap_or_default();
        let role = session.user.role;
        let keyid = session.keyid();
        let mut viewer = session.viewer();
        viewer.keyid = keyid.as_deref();
        let csrf = &session.csrf;
        let mut body = format!(
            "<p class=\"meta\">范围 <strong>{}</strong> · 编号 <strong>{}</strong> · 第 {} 版 · {} · \
             状态 <strong id=\"state\">{}</strong> · 撰写人 {}</p>",
            esc(&draft.scope),
            esc(&draft.notice_id),
            draft.version,
            if draft.kind == DraftKind::Withdrawal { "撤回申请" } else { "公告" },
            state_label(draft.state),
            esc(&draft.author)
        );
        if draft.state == DraftState::Returned {
            if let Some(r) = reviews.iter().rev().find(|r| r.action == "returned") {
                body.push_str(&format!(
                    "<p class=\"message returned\" id=\"returned-comment\">{} 退回了这份公告：{}</p>",
                    esc(&r.who),
                    esc(&r.comment)
                ));
            }
        }
        let editable = role == UserRole::Staff
            && draft.kind == DraftKind::Notice
            && matches!(draft.state, DraftState::Editing | DraftState::Returned);
        if editable {
            let problems = compose::build(
                &form,
                &console.context(draft.version, OffsetDateTime::now_utc()),
            )
            .err()
            .unwrap_or_default();
            body.push_str(&problems_html(&problems));
            body.push_str(&form_html(
                &console,
                &form,
                csrf,
                &format!("/console/drafts/{id}/edit"),
                true,
            ));
        }
        if let Some(payload) = &draft.payload {
            if draft.state != DraftState::Editing || !editable {
                body.push_str(&review_diff(payload, &reviews, replaced.as_ref()));
            }
            body.push_str(&format!(
                "<p class=\"previews\">预览（与公开屏分页一致）：\
                 <a href=\"/console/drafts/{id}/preview/landscape\" id=\"preview-landscape\">横屏</a> \
                 <a href=\"/console/drafts/{id}/preview/portrait\" id=\"preview-portrait\">竖屏</a> \
                 <a href=\"/console/drafts/{id}/preview/kiosk\" id=\"preview-kiosk\">触摸屏（打开公告）</a></p>"
            ));
            body.push_str(&payload_html(payload));
            body.push_str(&format!(
                "<p class=\"signatures\">工作人员签名：<strong id=\"office-signed\">{}</strong>　\
                 监督委员会签名：<strong id=\"supervisor-signed\">{}</strong></p>",
                if draft.office_sig.is_some() { "已签" } else { "未签" },
                if draft.supervisor_sig.is_some() { "已签" } else { "未签" },
            ));
            let can_submit = role == UserRole::Staff
                && matches!(draft.state, DraftState::Editing | DraftState::Returned);
            if can_submit {
                body.push_str(&sign_html(&draft, payload, csrf, "submit", "签名并提交审核", "submit"));
            }
            if role == UserRole::Supervisor && draft.state == DraftState::Review {
                body.push_str(&sign_html(&draft, payload, csrf, "approve", "批准并签名", "approve"));
                body.push_str(&format!(
                    "<form method=\"post\" action=\"/console/drafts/{id}/return\" id=\"return-form\" class=\"card\">{}\
                     <label>退回意见（必填）<textarea name=\"comment\" rows=\"3\" required></textarea></label>\
                     <button type=\"submit\" id=\"return\">退回修改</button></form>",
                    csrf_field(csrf)
                ));
            }
            if role == UserRole::Staff && draft.state == DraftState::Approved {
                body.push_str(&format!(
                    "<form method=\"post\" action=\"/console/drafts/{id}/publish\" class=\"card\">{}\
                     <button type=\"submit\" id=\"publish\" class=\"primary\">发布</button></form>",
                    csrf_field(csrf)
                ));
            }
            if draft.state == DraftState::Published {
                body.push_str(&format!(
                    "<p><a href=\"/console/drafts/{id}/screens\" id=\"screens\">查看各屏幕接收情况</a></p>"
                ));
            }
            if role == UserRole::Staff
                && draft.state == DraftState::Published
                && draft.kind == DraftKind::Notice
                && draft.version == highest
            {
                body.push_str(&format!(
                    "<form method=\"post\" action=\"/console/drafts/{id}/revise\" class=\"inline\">{}\
                     <button type=\"submit\" id=\"revise\">修订（新版本）</button></form>\
                     <form method=\"post\" action=\"/console/drafts/{id}/withdraw\" class=\"inline\">{}\
                     <button type=\"submit\" id=\"withdraw\">申请撤回</button></form>",
                    csrf_field(csrf),
                    csrf_field(csrf)
                ));
            }
        }
        body.push_str(&history_html(&history));
        Ok(html::page(
            StatusCode::OK,
            &draft_title(&draft),
            Some(&viewer),
            &body,
        ))
    }
    .await;
    result.unwrap_or_else(|page| page)
}
