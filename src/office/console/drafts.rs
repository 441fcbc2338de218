//! The console's pages about notices: the dashboard, compose and edit
//! (staff), the review queue, 批准 and 退回 (supervisors), 发布 (staff),
//! revisions and withdrawals, and the images notices show.
//!
//! Signatures arrive from the browser over the exact payload bytes the page
//! showed, named by their SHA-256: a draft that changed since is refused,
//! never signed blind. Each signature is checked against the signer's
//! enrolled key with the screens' own `verify::signed_by_any`, and before
//! publishing the whole envelope goes through `verify_message`, as a screen
//! would take it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use time::OffsetDateTime;

use crate::mqtt::Connect;
use crate::protocol::envelope::{Envelope, NOTICE_TYPE, Signature};
use crate::protocol::notice::{MAX_BODY_BLOCKS, MAX_MEDIA_BYTES, Notice};
use crate::protocol::verify::{TrustPolicy, signed_by_any};
use crate::protocol::{PublicKey, TopicSpace, personal_data, sha256_hex, verify_message};
use crate::store::office::{Draft, DraftKind, DraftState, Review, User, UserRole};

use super::compose::{self, Form, FormBlock};
use super::diff::{self, Line};
use super::html::{self, csrf_field, esc};
use super::{Console, FormBody, Page, Session, require, see_other};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console", get(dashboard))
        .route("/console/review", get(review_queue))
        .route("/console/compose", get(compose_page).post(create))
        .route("/console/drafts/{id}", get(draft_page))
        .route("/console/drafts/{id}/edit", post(edit))
        .route("/console/drafts/{id}/submit", post(submit))
        .route("/console/drafts/{id}/approve", post(approve))
        .route("/console/drafts/{id}/return", post(send_back))
        .route("/console/drafts/{id}/publish", post(publish))
        .route("/console/drafts/{id}/revise", post(revise))
        .route("/console/drafts/{id}/withdraw", post(withdraw))
        .route("/console/drafts/{id}/screens", get(screens_page))
        .route("/console/drafts/{id}/preview/{size}", get(preview_page))
        .route(
            "/console/drafts/{id}/preview/{size}/{page}",
            get(preview_png),
        )
        .route(
            "/console/media",
            post(upload).layer(DefaultBodyLimit::max(MAX_MEDIA_BYTES as usize)),
        )
        .route("/media/{sha256}", get(media))
}

fn state_label(state: DraftState) -> &'static str {
    match state {
        DraftState::Editing => "草稿",
        DraftState::Review => "待审核",
        DraftState::Returned => "已退回",
        DraftState::Approved => "已批准，待发布",
        DraftState::Published => "已发布",
    }
}

fn action_label(action: &str) -> &str {
    match action {
        "submitted" => "提交审核（工作人员签名）",
        "returned" => "退回",
        "approved" => "批准（监督委员会签名）",
        "published" => "发布",
        other => other,
    }
}

fn conflict(session: &Session, text: &str) -> Response {
    html::message(
        StatusCode::CONFLICT,
        "无法执行",
        Some(&session.viewer()),
        text,
    )
}

fn bad_request(session: &Session, text: &str) -> Response {
    html::message(
        StatusCode::BAD_REQUEST,
        "无法执行",
        Some(&session.viewer()),
        text,
    )
}

impl Console {
    async fn load(&self, session: &Session, id: i64) -> Result<Draft, Response> {
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

    fn context(&self, version: u64, now: OffsetDateTime) -> compose::Context<'_> {
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
    fn policy(&self, scope: &str, users: &[User]) -> TrustPolicy {
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

fn draft_row(draft: &Draft) -> String {
    let title = draft_title(draft);
    format!(
        "<tr><td><a href=\"/console/drafts/{}\">{}</a></td><td>{}/{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td></tr>",
        draft.id,
        esc(&title),
        esc(&draft.scope),
        esc(&draft.notice_id),
        draft.version,
        if draft.kind == DraftKind::Withdrawal {
            "撤回"
        } else {
            "公告"
        },
        state_label(draft.state),
        esc(&draft.author)
    )
}

fn draft_title(draft: &Draft) -> String {
    let form: Form = serde_json::from_str(&draft.form).unwrap_or_default();
    if form.title.trim().is_empty() {
        "（无标题）".to_owned()
    } else {
        form.title
    }
}

fn draft_table(drafts: &[&Draft]) -> String {
    if drafts.is_empty() {
        return "<p class=\"empty\">暂无</p>".to_owned();
    }
    let rows: String = drafts.iter().map(|d| draft_row(d)).collect();
    format!(
        "<table class=\"list\"><thead><tr><th>标题</th><th>范围/编号</th><th>版本</th>\
         <th>类型</th><th>状态</th><th>撰写人</th></tr></thead><tbody>{rows}</tbody></table>"
    )
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

fn select(name: &str, options: &[(&str, &str)], chosen: &str) -> String {
    let options: String = options
        .iter()
        .map(|(value, label)| {
            format!(
                "<option value=\"{}\"{}>{}</option>",
                esc(value),
                if *value == chosen { " selected" } else { "" },
                esc(label)
            )
        })
        .collect();
    format!("<select name=\"{name}\">{options}</select>")
}

fn input(label: &str, name: &str, value: &str, extra: &str) -> String {
    format!(
        "<label>{label} <input name=\"{name}\" value=\"{}\" {extra}></label>",
        esc(value)
    )
}

fn table_preview(text: &str) -> String {
    let (header, rows) = compose::parse_table(text);
    if header.is_empty() {
        return String::new();
    }
    let cells = |row: &[String], tag: &str| -> String {
        row.iter()
            .map(|c| format!("<{tag}>{}</{tag}>", esc(c)))
            .collect()
    };
    let body: String = rows
        .iter()
        .map(|r| format!("<tr>{}</tr>", cells(r, "td")))
        .collect();
    format!(
        "<table class=\"preview\"><thead><tr>{}</tr></thead><tbody>{body}</tbody></table>",
        cells(&header, "th")
    )
}

fn block_html(i: usize, block: &FormBlock) -> String {
    let kind_label = match block.kind.as_str() {
        "paragraph" => "段落",
        "table" => "表格",
        "image" => "图片",
        _ => "未知",
    };
    let content = match block.kind.as_str() {
        "table" => format!(
            "{}<textarea name=\"b{i}_text\" class=\"tsv\" rows=\"6\" \
             placeholder=\"从表格软件复制后粘贴：每行一条，单元格之间为制表符，第一行为表头\">{}</textarea>{}",
            input("表格标题", &format!("b{i}_caption"), &block.caption, ""),
            esc(&block.text),
            table_preview(&block.text)
        ),
        "image" => format!(
            "<input type=\"file\" accept=\"image/png,image/jpeg,image/webp\" data-upload=\"{i}\" \
             id=\"upload-{i}\">\
             <input type=\"hidden\" name=\"b{i}_sha256\" value=\"{}\">\
             <input type=\"hidden\" name=\"b{i}_bytes\" value=\"{}\">\
             <input type=\"hidden\" name=\"b{i}_mime\" value=\"{}\">\
             <span class=\"status\" id=\"upload-status-{i}\">{}</span>{}{}",
            esc(&block.sha256),
            block.bytes,
            esc(&block.mime),
            if block.sha256.is_empty() {
                "尚未上传".to_owned()
            } else {
                format!("已上传 {} 字节", block.bytes)
            },
            if block.sha256.is_empty() {
                String::new()
            } else {
                format!(
                    "<img class=\"thumb\" src=\"/media/{}\" alt=\"\">",
                    esc(&block.sha256)
                )
            },
            input("图片说明", &format!("b{i}_caption"), &block.caption, ""),
        ),
        _ => format!(
            "<textarea name=\"b{i}_text\" rows=\"4\">{}</textarea>",
            esc(&block.text)
        ),
    };
    format!(
        "<fieldset class=\"block\" data-block=\"{i}\"><legend>正文第{}块：{kind_label}</legend>\
         <input type=\"hidden\" name=\"b{i}_kind\" value=\"{}\">{content}\
         <button type=\"submit\" name=\"action\" value=\"remove_{i}\" class=\"minor\">删除此块</button></fieldset>",
        i + 1,
        esc(&block.kind)
    )
}

/// The compose form. `fixed`: the draft exists, so scope and id are fixed.
fn form_html(console: &Console, form: &Form, csrf: &str, action: &str, fixed: bool) -> String {
    let scope = if fixed {
        format!(
            "<p>发布范围：<strong>{}</strong>　公告编号：<strong id=\"notice-id\">{}</strong></p>",
            esc(&form.scope),
            esc(&form.notice_id)
        )
    } else {
        let scopes: Vec<(&str, &str)> = console
            .settings
            .scopes
            .iter()
            .map(|s| (s.id.as_str(), s.id.as_str()))
            .collect();
        format!(
            "<label>发布范围 {}</label>{}",
            select("scope", &scopes, &form.scope),
            input(
                "公告编号（留空自动生成）",
                "notice_id",
                &form.notice_id,
                "pattern=\"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\""
            )
        )
    };
    let categories: Vec<(&str, &str)> = crate::protocol::notice::Category::ALL
        .iter()
        .map(|c| (c.as_str(), c.label_zh()))
        .collect();
    let priorities = [
        ("normal", compose::priority_label("normal")),
        ("high", compose::priority_label("high")),
        ("urgent", compose::priority_label("urgent")),
    ];
    let windows = [
        (compose::WINDOW_PUBLICITY, "公示 7 个工作日"),
        (compose::WINDOW_QUARTER, "至下季度公开日"),
        (compose::WINDOW_CUSTOM, "自定义截止日期"),
    ];
    let blocks: String = form
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| block_html(i, b))
        .collect();
    format!(
        "<form method=\"post\" action=\"{action}\" id=\"compose\" class=\"card\">{}{scope}\
         <label>公开类别 {}</label><label>优先级 {}</label>\
         {}{}{}\
         <fieldset><legend>公开期限</legend><label>期限 {}</label>{}{}</fieldset>\
         {}{}{}{}\
         <input type=\"hidden\" name=\"blocks\" value=\"{}\">{blocks}\
         <p class=\"buttons\"><button type=\"submit\" name=\"action\" value=\"add_paragraph\">添加段落</button>\
         <button type=\"submit\" name=\"action\" value=\"add_table\">添加表格</button>\
         <button type=\"submit\" name=\"action\" value=\"add_image\">添加图片</button>\
         <button type=\"submit\" name=\"action\" value=\"save\" id=\"save\" class=\"primary\">保存</button></p></form>",
        csrf_field(csrf),
        select("category", &categories, &form.category),
        select("priority", &priorities, &form.priority),
        input("标题", "title", &form.title, "maxlength=\"120\""),
        input("摘要", "summary", &form.summary, "maxlength=\"300\""),
        input("所属期（如 2026Q3，可空）", "period", &form.period, ""),
        select("window", &windows, &form.window),
        input("开始日期", "valid_from", &form.valid_from, "type=\"date\""),
        input(
            "截止日期（仅自定义）",
            "valid_until",
            &form.valid_until,
            "type=\"date\""
        ),
        input("公开主体", "publisher", &form.publisher, ""),
        input("审核机构（可空）", "reviewer", &form.reviewer, ""),
        input("监督电话", "contact", &form.contact, ""),
        input(
            "目标屏幕（屏幕编号，逗号分隔；留空为全部）",
            "screens",
            &form.screens,
            ""
        ),
        form.blocks.len(),
    )
}

fn problems_html(problems: &[compose::Problem]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let blocked = problems.iter().any(|p| p.personal_data);
    let items: String = problems
        .iter()
        .map(|p| {
            format!(
                "<li{}><strong>{}</strong>：{}</li>",
                if p.personal_data {
                    " class=\"personal\""
                } else {
                    ""
                },
                esc(&p.place),
                esc(&p.message)
            )
        })
        .collect();
    format!(
        "<section id=\"problems\" class=\"problems\"><h3>{}</h3><ul>{items}</ul></section>",
        if blocked {
            "发现未遮盖的个人信息，不能提交审核"
        } else {
            "尚不能提交审核"
        }
    )
}

/// The payload as people sign it, and the button that signs it in the
/// browser: `data-payload` holds the exact bytes (base64), which the script
/// checks against the text shown before signing.
fn sign_html(
    draft: &Draft,
    payload: &[u8],
    csrf: &str,
    action: &str,
    button: &str,
    id: &str,
) -> String {
    format!(
        "<form method=\"post\" action=\"/console/drafts/{}/{action}\" id=\"{id}-form\" class=\"sign\">{}\
         <input type=\"hidden\" name=\"payload_sha256\" value=\"{}\">\
         <input type=\"hidden\" name=\"keyid\" value=\"\">\
         <input type=\"hidden\" name=\"sig\" value=\"\">\
         <button type=\"button\" id=\"{id}\" class=\"primary\" data-sign=\"{id}-form\" \
         data-payload-type=\"{}\" data-payload=\"{}\">{button}</button>\
         <span class=\"status\" id=\"{id}-status\"></span></form>",
        draft.id,
        csrf_field(csrf),
        sha256_hex(payload),
        esc(NOTICE_TYPE),
        STANDARD.encode(payload),
    )
}

fn payload_html(payload: &[u8]) -> String {
    format!(
        "<details open><summary>签名内容（公告原文，共 {} 字节，SHA-256 {}）</summary>\
         <pre class=\"payload\" id=\"payload\">{}</pre></details>",
        payload.len(),
        sha256_hex(payload),
        esc(&String::from_utf8_lossy(payload))
    )
}

fn history_html(reviews: &[(u64, Review)]) -> String {
    if reviews.is_empty() {
        return "<section id=\"history\"><h3>审核记录</h3><p class=\"empty\">暂无</p></section>"
            .to_owned();
    }
    let rows: String = reviews
        .iter()
        .map(|(version, r)| {
            format!(
                "<tr><td>第 {version} 版</td><td>{}</td><td>{}</td><td>{}</td><td class=\"comment\">{}</td></tr>",
                esc(&r.at),
                esc(&r.who),
                esc(action_label(&r.action)),
                esc(&r.comment)
            )
        })
        .collect();
    format!(
        "<section id=\"history\"><h3>审核记录（本公告各版本）</h3><table class=\"list\"><thead><tr><th>版本</th><th>时间</th>\
         <th>人员</th><th>操作</th><th>意见</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )
}

fn diff_html(label: &str, lines: &[Line]) -> String {
    let rows: String = lines
        .iter()
        .map(|l| match l {
            Line::Same(t) => format!("<li class=\"same\">{}</li>", esc(t)),
            Line::Added(t) => format!("<li class=\"added\"><ins>＋ {}</ins></li>", esc(t)),
            Line::Removed(t) => format!("<li class=\"removed\"><del>－ {}</del></li>", esc(t)),
        })
        .collect();
    format!(
        "<section id=\"diff\"><h3>修改对照（{}）</h3><ul class=\"diff\">{rows}</ul></section>",
        esc(label)
    )
}

/// The diff a reviewer sees: against the content last sent back, else the
/// published version this one replaces, else everything is new.
fn review_diff(payload: &[u8], reviews: &[Review], replaced: Option<&Draft>) -> String {
    let Ok(new) = Notice::from_payload(payload) else {
        return String::new();
    };
    let returned = reviews
        .iter()
        .rev()
        .find(|r| r.action == "returned")
        .and_then(|r| r.payload.as_deref())
        .and_then(|p| Notice::from_payload(p).ok());
    let (label, old) = match (returned, replaced.and_then(|d| d.payload.as_deref())) {
        (Some(old), _) => ("与退回时的内容相比".to_owned(), diff::lines(&old)),
        (None, Some(p)) => match Notice::from_payload(p) {
            Ok(old) => (
                format!("与已发布的第 {} 版相比", old.version),
                diff::lines(&old),
            ),
            Err(_) => ("新公告，全部为新增内容".to_owned(), Vec::new()),
        },
        (None, None) => ("新公告，全部为新增内容".to_owned(), Vec::new()),
    };
    diff_html(&label, &diff::diff(&old, &diff::lines(&new)))
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
async fn save_form(console: &Console, session: &Session, draft: &Draft, form: Form) -> Page {
    let json = serde_json::to_string(&form).expect("a form serialises");
    let payload = compose::build(
        &form,
        &console.context(draft.version, OffsetDateTime::now_utc()),
    )
    .ok()
    .map(|(_, payload)| payload);
    let (id, state) = (draft.id, draft.state);
    let stored = json.clone();
    let changed = console
        .db(move |store| {
            Ok(store.update_draft(
                id,
                state,
                state,
                &stored,
                payload.as_deref(),
                None,
                None,
                None,
            )?)
        })
        .await?;
    if !changed {
        return Err(conflict(session, "这份草稿已被提交或修改，请返回刷新。"));
    }
    console
        .audit(
            &session.user.name,
            format!("saved draft {id}"),
            json.as_bytes(),
        )
        .await?;
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
                 <a href=\"/console/drafts/{id}/preview/portrait\" id=\"preview-portrait\">竖屏</a></p>"
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

/// A signature posted from the browser, checked: over the payload the draft
/// holds (named by its hash), by `signer`'s enrolled key.
fn posted_signature(
    session: &Session,
    draft: &Draft,
    body: &FormBody,
) -> Result<(Vec<u8>, Signature), Response> {
    let Some(payload) = draft.payload.clone() else {
        return Err(conflict(
            session,
            "这份草稿还不是一份完整的公告，不能签名。",
        ));
    };
    if body.get("payload_sha256") != Some(sha256_hex(&payload).as_str()) {
        return Err(conflict(
            session,
            "签名的内容与服务器上的不一致（可能已被修改）。没有执行任何操作，请刷新页面后重新签名。",
        ));
    }
    let Some(key) = session
        .user
        .public_key
        .as_deref()
        .and_then(|k| PublicKey::from_base64(k).ok())
    else {
        return Err(conflict(session, "您没有登记签名密钥。"));
    };
    let signature = Signature {
        keyid: key.key_id().0.clone(),
        sig: body.text("sig"),
    };
    let alone = Envelope {
        payload_type: NOTICE_TYPE.to_owned(),
        payload: STANDARD.encode(&payload),
        signatures: vec![signature.clone()],
    };
    if !signed_by_any(&alone, &payload, std::slice::from_ref(&key)) {
        return Err(bad_request(
            session,
            "签名无效：不是用您登记的密钥对这份内容所做的签名。没有执行任何操作。",
        ));
    }
    Ok((payload, signature))
}

/// Refuses a payload the screens would refuse, or one holding personal data:
/// the form's checks made it, but the check is cheap and the stakes are not.
fn recheck(session: &Session, payload: &[u8]) -> Result<(), Response> {
    let notice = Notice::from_payload(payload)
        .map_err(|e| bad_request(session, &format!("内容不符合公开屏的公告规则：{e}")))?;
    if notice
        .texts()
        .into_iter()
        .any(|t| !personal_data::scan(t).is_empty())
    {
        return Err(bad_request(session, "内容含有未遮盖的个人信息，不能提交。"));
    }
    Ok(())
}

async fn submit(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, body.get("csrf")).await?;
        require(&session, UserRole::Staff, "提交审核")?;
        let draft = console.load(&session, id).await?;
        if !matches!(draft.state, DraftState::Editing | DraftState::Returned) {
            return Err(conflict(&session, "这份公告已经提交过了。"));
        }
        let (payload, signature) = posted_signature(&session, &draft, &body)?;
        recheck(&session, &payload)?;
        let sig = serde_json::to_string(&signature).expect("a signature serialises");
        let review = Review {
            at: crate::protocol::notice::rfc3339(OffsetDateTime::now_utc()),
            who: session.user.name.clone(),
            action: "submitted".into(),
            comment: String::new(),
            payload: Some(payload.clone()),
        };
        let (state, form, stored) = (draft.state, draft.form.clone(), payload.clone());
        let changed = console
            .db(move |store| {
                Ok(store.update_draft(
                    id,
                    state,
                    DraftState::Review,
                    &form,
                    Some(&stored),
                    Some(&sig),
                    None,
                    Some(&review),
                )?)
            })
            .await?;
        if !changed {
            return Err(conflict(&session, "这份草稿已被提交或修改，请返回刷新。"));
        }
        console
            .audit(
                &session.user.name,
                format!(
                    "submitted draft {id} ({}/{} version {}) signed as office",
                    draft.scope, draft.notice_id, draft.version
                ),
                &payload,
            )
            .await?;
        Ok(see_other(&format!("/console/drafts/{id}")))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

async fn approve(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, body.get("csrf")).await?;
        require(&session, UserRole::Supervisor, "批准")?;
        let draft = console.load(&session, id).await?;
        if draft.state != DraftState::Review {
            return Err(conflict(&session, "这份公告不在待审核状态。"));
        }
        let (payload, signature) = posted_signature(&session, &draft, &body)?;
        recheck(&session, &payload)?;
        let sig = serde_json::to_string(&signature).expect("a signature serialises");
        let review = Review {
            at: crate::protocol::notice::rfc3339(OffsetDateTime::now_utc()),
            who: session.user.name.clone(),
            action: "approved".into(),
            comment: body.text("comment"),
            payload: Some(payload.clone()),
        };
        let (form, stored, office_sig) = (
            draft.form.clone(),
            payload.clone(),
            draft.office_sig.clone(),
        );
        let changed = console
            .db(move |store| {
                Ok(store.update_draft(
                    id,
                    DraftState::Review,
                    DraftState::Approved,
                    &form,
                    Some(&stored),
                    office_sig.as_deref(),
                    Some(&sig),
                    Some(&review),
                )?)
            })
            .await?;
        if !changed {
            return Err(conflict(&session, "这份公告已被他人处理，请返回刷新。"));
        }
        console
            .audit(
                &session.user.name,
                format!(
                    "approved draft {id} ({}/{} version {}) signed as supervisor",
                    draft.scope, draft.notice_id, draft.version
                ),
                &payload,
            )
            .await?;
        Ok(see_other(&format!("/console/drafts/{id}")))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

async fn send_back(
    State(console): State<Console>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, body.get("csrf")).await?;
        require(&session, UserRole::Supervisor, "退回")?;
        let draft = console.load(&session, id).await?;
        if draft.state != DraftState::Review {
            return Err(conflict(&session, "这份公告不在待审核状态。"));
        }
        let comment = body.text("comment").trim().to_owned();
        if comment.is_empty() {
            return Err(bad_request(&session, "退回须填写意见，说明需要修改什么。"));
        }
        let review = Review {
            at: crate::protocol::notice::rfc3339(OffsetDateTime::now_utc()),
            who: session.user.name.clone(),
            action: "returned".into(),
            comment: comment.clone(),
            payload: draft.payload.clone(),
        };
        let (form, payload) = (draft.form.clone(), draft.payload.clone());
        let changed = console
            .db(move |store| {
                Ok(store.update_draft(
                    id,
                    DraftState::Review,
                    DraftState::Returned,
                    &form,
                    payload.as_deref(),
                    None,
                    None,
                    Some(&review),
                )?)
            })
            .await?;
        if !changed {
            return Err(conflict(&session, "这份公告已被他人处理，请返回刷新。"));
        }
        console
            .audit(
                &session.user.name,
                format!("returned draft {id} ({}/{})", draft.scope, draft.notice_id),
                comment.as_bytes(),
            )
            .await?;
        Ok(see_other(&format!("/console/drafts/{id}")))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// The envelope of an approved draft, as a screen of its scope would take
/// it: both people's signatures, verified with the screens' own code.
fn envelope_of(console: &Console, draft: &Draft, users: &[User]) -> Result<Vec<u8>, String> {
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

async fn publish(
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
        let users = console.db(|store| Ok(store.users()?)).await?;
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
        let connect = Connect::cli(&broker, None, None)
            .map_err(|e| conflict(&session, &format!("broker 地址无效：{e}")))?;
        let published = crate::office::broker::publish_envelopes(
            &connect,
            &console.settings.prefix,
            &console.settings.operator,
            vec![(notice, envelope.clone())],
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
        console
            .db(move |store| Ok(store.mark_published(id, &stored, manifest, &who)?))
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
async fn newest_published(
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

async fn revise(
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
                    DraftKind::Notice,
                    &form,
                    None,
                    &author,
                )?)
            })
            .await?;
        let Some(new_id) = created else {
            return Err(conflict(&session, "已有这份公告的新版本草稿。"));
        };
        let draft = console.load(&session, new_id).await?;
        let form: Form = serde_json::from_str(&draft.form).unwrap_or_default();
        save_form(&console, &session, &draft, form).await
    }
    .await;
    result.unwrap_or_else(|page| page)
}

async fn withdraw(
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
        let (scope, notice_id, version, form, author, stored) = (
            old.scope.clone(),
            old.notice_id.clone(),
            old.version + 1,
            old.form.clone(),
            session.user.name.clone(),
            payload.clone(),
        );
        let created = console
            .db(move |store| {
                Ok(store.create_draft(
                    &scope,
                    &notice_id,
                    version,
                    DraftKind::Withdrawal,
                    &form,
                    Some(&stored),
                    &author,
                )?)
            })
            .await?;
        let Some(new_id) = created else {
            return Err(conflict(&session, "已有这份公告的新版本草稿。"));
        };
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

fn json_error(status: StatusCode, message: &str) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    html::secure_headers(&mut response);
    response
}

/// What an image's first bytes say it is.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

async fn upload(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let session = match console.posted(&headers, None).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    if session.user.role != UserRole::Staff {
        return json_error(StatusCode::FORBIDDEN, "只有社区工作人员可以上传图片");
    }
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(mime) = sniff(&body) else {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "只能上传 PNG、JPEG 或 WebP 图片",
        );
    };
    if declared != mime {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("文件内容是 {mime}，与声明的类型 {declared} 不符"),
        );
    }
    if body.is_empty() || body.len() as u64 > MAX_MEDIA_BYTES {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "图片不能超过 10 MiB");
    }
    let sha256 = sha256_hex(&body);
    let (hash, bytes, who) = (sha256.clone(), body.clone(), session.user.name.clone());
    if let Err(page) = console
        .db(move |store| Ok(store.put_media(&hash, mime, &bytes, &who)?))
        .await
    {
        return page;
    }
    if let Err(page) = console
        .audit(
            &session.user.name,
            format!("uploaded image {sha256}"),
            &body,
        )
        .await
    {
        return page;
    }
    let mut response = axum::Json(serde_json::json!({
        "sha256": sha256,
        "bytes": body.len(),
        "mime": mime,
        "url": format!("{}/media/{sha256}", console.settings.public_url),
    }))
    .into_response();
    html::secure_headers(&mut response);
    response
}

/// An image of a notice: public, as screens fetch it without a session,
/// and never changing under its hash.
async fn media(State(console): State<Console>, UrlPath(sha256): UrlPath<String>) -> Response {
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return json_error(StatusCode::NOT_FOUND, "no such image");
    }
    let found = match console.db(move |store| Ok(store.media(&sha256)?)).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some((mime, bytes)) = found else {
        return json_error(StatusCode::NOT_FOUND, "no such image");
    };
    let mut response = ([(header::CONTENT_TYPE, mime)], bytes).into_response();
    html::secure_headers(&mut response);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

/// The notice a draft's payload holds, and its images from the database.
async fn preview_input(
    console: &Console,
    session: &Session,
    id: i64,
) -> Result<(Draft, Notice, Vec<(String, Vec<u8>)>), Response> {
    let draft = console.load(session, id).await?;
    let Some(notice) = draft
        .payload
        .as_deref()
        .and_then(|p| Notice::from_payload(p).ok())
    else {
        return Err(conflict(
            session,
            "这份草稿还不是一份完整的公告，无法预览：请先修正列出的问题并保存。",
        ));
    };
    let hashes: Vec<String> = notice.media.iter().map(|m| m.sha256.clone()).collect();
    let images = console
        .db(move |store| {
            let mut out = Vec::new();
            for hash in hashes {
                if let Some((_, bytes)) = store.media(&hash)? {
                    out.push((hash, bytes));
                }
            }
            Ok(out)
        })
        .await?;
    Ok((draft, notice, images))
}

fn preview_size(session: &Session, size: &str) -> Result<super::preview::Size, Response> {
    super::preview::Size::parse(size)
        .ok_or_else(|| bad_request(session, "预览尺寸只有横屏（landscape）和竖屏（portrait）。"))
}

async fn preview_page(
    State(console): State<Console>,
    UrlPath((id, size)): UrlPath<(i64, String)>,
    headers: HeaderMap,
) -> Response {
    let result: Page = async {
        let session = console.session(&headers).await?;
        let size = preview_size(&session, &size)?;
        let (draft, notice, images) = preview_input(&console, &session, id).await?;
        let (_, count) = console
            .previewer
            .render(notice, images, size, 1)
            .await
            .map_err(|e| conflict(&session, &format!("无法绘制预览：{e:#}")))?;
        let (width, height) = size.pixels();
        let pages: String = (1..=count)
            .map(|page| {
                format!(
                    "<figure><img class=\"page\" src=\"/console/drafts/{id}/preview/{}/{page}\" \
                     width=\"{}\" height=\"{}\" alt=\"第 {page} 页\"><figcaption>第 {page} 页，共 {count} 页</figcaption></figure>",
                    size.as_str(),
                    width / 4,
                    height / 4
                )
            })
            .collect();
        Ok(html::page(
            StatusCode::OK,
            &format!("预览：{}", draft_title(&draft)),
            Some(&session.viewer()),
            &format!(
                "<p>{}，共 <strong id=\"page-count\">{count}</strong> 页，由公开屏的绘制程序生成。\
                 <a href=\"/console/drafts/{id}\">返回</a></p><section id=\"pages\">{pages}</section>",
                size.label()
            ),
        ))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

async fn preview_png(
    State(console): State<Console>,
    UrlPath((id, size, page)): UrlPath<(i64, String, usize)>,
    headers: HeaderMap,
) -> Response {
    let result: Page = async {
        let session = console.session(&headers).await?;
        let size = preview_size(&session, &size)?;
        let (_, notice, images) = preview_input(&console, &session, id).await?;
        let (png, _) = console
            .previewer
            .render(notice, images, size, page)
            .await
            .map_err(|e| conflict(&session, &format!("无法绘制预览：{e:#}")))?;
        let mut response = ([(header::CONTENT_TYPE, "image/png")], png).into_response();
        html::secure_headers(&mut response);
        Ok(response)
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// Whether a screen's status says it holds what manifest `version` of
/// `scope` lists: that manifest or a later one, with nothing missing.
fn holds(status: &crate::status::ScreenStatus, scope: &str, version: u64) -> bool {
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
/// the broker; the page renews itself every 5 seconds.
async fn screens_page(
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
        let Some(broker) = console.settings.broker.clone() else {
            return Err(conflict(&session, "office.toml 没有配置 broker，无法读取屏幕状态。"));
        };
        let connect = Connect::cli(&broker, None, None)
            .map_err(|e| conflict(&session, &format!("broker 地址无效：{e}")))?;
        let fleet = crate::office::broker::fleet_status(&connect, &console.settings.prefix, &draft.scope)
            .await
            .map_err(|e| {
                html::message(
                    StatusCode::BAD_GATEWAY,
                    "无法读取屏幕状态",
                    Some(&session.viewer()),
                    &format!("未能从消息服务器读取屏幕状态（{e:#}）。"),
                )
            })?;
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
