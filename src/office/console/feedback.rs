//! 居民意见 (the feedback inbox): what screens sent, newest first, 50 a
//! page, with filters (status, notice, overdue by working days, as
//! `office::staff` counts them; the store answers them in SQL, given the
//! overdue cutoff as an instant),
//! contact numbers masked until a person reveals one (a POST, audited
//! before the number is shown), and the reply composer that turns chosen
//! receipts into a `reply` draft, which then goes through the same review
//! as any notice. The receipts count as answered once the reply is
//! published (`publish`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::office::reply::REPLY_SHOWN_FOR;
use crate::office::staff::{is_overdue, overdue_cutoff, reply_due};
use crate::protocol::feedback::mask_contact;
use crate::protocol::notice::is_receipt_code;
use crate::store::office::{DraftKind, FeedbackCursor, FeedbackQuery, FeedbackRow, UserRole};
use crate::workdays::china_date;

use super::compose::{Form, FormBlock, WINDOW_CUSTOM};
use super::drafts::{conflict, save_form};
use super::html::{self, csrf_field, esc};
use super::{Console, FormBody, Page, require};

/// Items on one page of the inbox; the next page is a link.
const PAGE: usize = 50;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/feedback", get(inbox))
        .route("/console/feedback/{id}/reveal", post(reveal))
        .route("/console/feedback/reply", post(compose_reply))
}

/// The inbox's filters and page, from its query.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// `open` (no reply yet), `replied`, or anything else for all.
    pub status: String,
    /// A notice id: items about it only.
    pub notice: String,
    /// `1`: overdue items only.
    pub overdue: String,
    /// The page: items after this cursor (`FeedbackCursor::to_param`).
    pub after: String,
}

impl Filter {
    /// The store's query for these filters; `cutoff` is the instant before
    /// which an unanswered item is overdue.
    fn query(&self, cutoff: OffsetDateTime) -> FeedbackQuery {
        let notice = self.notice.trim();
        FeedbackQuery {
            answered: match self.status.as_str() {
                "open" => Some(false),
                "replied" => Some(true),
                _ => None,
            },
            notice_id: (!notice.is_empty()).then(|| notice.to_owned()),
            overdue_before: (self.overdue == "1").then_some(cutoff),
            after: FeedbackCursor::parse(&self.after),
            limit: PAGE,
        }
    }

    /// The inbox's address with these filters, from `after` when given.
    fn href(&self, after: Option<&FeedbackCursor>) -> String {
        let mut params: Vec<(&str, String)> = Vec::new();
        if matches!(self.status.as_str(), "open" | "replied") {
            params.push(("status", self.status.clone()));
        }
        if !self.notice.trim().is_empty() {
            params.push(("notice", self.notice.trim().to_owned()));
        }
        if self.overdue == "1" {
            params.push(("overdue", "1".to_owned()));
        }
        if let Some(after) = after {
            params.push(("after", after.to_param()));
        }
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        if query.is_empty() {
            "/console/feedback".to_owned()
        } else {
            format!("/console/feedback?{}", query.join("&"))
        }
    }
}

/// A query value percent-encoded (everything but unreserved characters).
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn kind_label(kind: &str) -> &str {
    match kind {
        "rating" => "评价",
        "question" => "询问",
        "complaint" => "投诉",
        "suggestion" => "建议",
        other => other,
    }
}

fn selected(yes: bool) -> &'static str {
    if yes { " selected" } else { "" }
}

async fn inbox(
    State(console): State<Console>,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
) -> Response {
    let result: Page = async {
        let session = console.session(&headers).await?;
        let now = OffsetDateTime::now_utc();
        let calendar = &console.settings.calendar;
        let cutoff = overdue_cutoff(now, calendar);
        let query = filter.query(cutoff);
        let first = query.after.is_none();
        let found = console
            .db(move |store| Ok(store.feedback_page(&query, cutoff)?))
            .await?;
        let staff = session.user.role == UserRole::Staff;
        let listed: Vec<(&FeedbackRow, bool)> = found
            .rows
            .iter()
            .map(|r| (r, is_overdue(r, now, calendar)))
            .collect();
        let mut list = String::new();
        for (row, overdue) in &listed {
            let about = match (&row.notice_id, row.notice_version) {
                (Some(id), Some(v)) => format!(
                    "{}{} 第 {v} 版",
                    row.notice_scope
                        .as_deref()
                        .map(|s| format!("{}/", esc(s)))
                        .unwrap_or_default(),
                    esc(id)
                ),
                (Some(id), None) => esc(id),
                _ => "（未关联公告）".to_owned(),
            };
            let status = if !row.replies.is_empty() {
                format!("已答复（{}）", esc(&row.replies.join("、")))
            } else if *overdue {
                "<span class=\"stale\">逾期未复</span>".to_owned()
            } else {
                "待答复".to_owned()
            };
            let contact = if row.contact.is_empty() {
                "—".to_owned()
            } else if staff {
                format!(
                    "{} <form method=\"post\" action=\"/console/feedback/{}/reveal\" class=\"inline\">{}\
                     <button type=\"submit\" class=\"minor\">查看完整号码</button></form>",
                    esc(&mask_contact(&row.contact)),
                    esc(&row.id),
                    csrf_field(&session.csrf)
                )
            } else {
                esc(&mask_contact(&row.contact))
            };
            let choose = if staff {
                format!(
                    "<input type=\"checkbox\" form=\"reply\" name=\"receipt\" value=\"{}\">",
                    esc(&row.receipt)
                )
            } else {
                String::new()
            };
            list.push_str(&format!(
                "<tr data-receipt=\"{}\"><td>{choose}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{about}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{status}</td><td>{contact}</td></tr>",
                esc(&row.receipt),
                esc(&row.receipt),
                esc(&row.screen),
                esc(&row.created_at),
                esc(kind_label(&row.kind)),
                row.rating.map(|r| format!("{r} 星 ")).unwrap_or_default()
                    + &esc(&row.reasons.join("、")),
                esc(&row.text),
                reply_due(row, calendar),
            ));
        }
        let pages = format!(
            "<p class=\"pages\">{}{}</p>",
            if first {
                String::new()
            } else {
                format!(
                    "<a href=\"{}\" id=\"newest\">回到最新</a> ",
                    esc(&filter.href(None))
                )
            },
            match &found.next {
                Some(next) => format!(
                    "<a href=\"{}\" id=\"next-page\">下一页（更早的 {PAGE} 条）</a>",
                    esc(&filter.href(Some(next)))
                ),
                None => "已是最后一页。".to_owned(),
            }
        );
        let filters = format!(
            "<form method=\"get\" action=\"/console/feedback\" class=\"card\">\
             <label>状态 <select name=\"status\"><option value=\"all\">全部</option>\
             <option value=\"open\"{}>待答复</option><option value=\"replied\"{}>已答复</option></select></label>\
             <label>公告编号 <input name=\"notice\" value=\"{}\"></label>\
             <label><input type=\"checkbox\" name=\"overdue\" value=\"1\"{}> 只看逾期未复</label>\
             <button type=\"submit\">筛选</button></form>",
            selected(filter.status == "open"),
            selected(filter.status == "replied"),
            esc(&filter.notice),
            if filter.overdue == "1" { " checked" } else { "" },
        );
        let composer = if staff {
            format!(
                "<form method=\"post\" action=\"/console/feedback/reply\" id=\"reply\" class=\"card\">{}\
                 <h3>答复所选意见</h3><p>勾选上表中的意见（同一社区），写下答复，生成“意见答复”草稿，\
                 经居务监督委员会审核后发布。</p>\
                 <label>答复内容<textarea name=\"text\" rows=\"4\"></textarea></label>\
                 <label>公开主体<input name=\"publisher\"></label>\
                 <label>监督电话<input name=\"contact\"></label>\
                 <button type=\"submit\" class=\"primary\">生成答复草稿</button></form>",
                csrf_field(&session.csrf)
            )
        } else {
            String::new()
        };
        Ok(html::page(
            StatusCode::OK,
            "居民意见",
            Some(&session.viewer()),
            &format!(
                "{filters}<p>符合条件 <strong id=\"matching\">{}</strong> 条（本页 {} 条，从新到旧），\
                 全部逾期未复 <strong id=\"overdue\">{}</strong> 条。答复期限为收到后 {} 个工作日。</p>\
                 <table class=\"list\" id=\"feedback\"><thead><tr><th></th><th>回执码</th><th>屏幕</th><th>时间</th>\
                 <th>关于</th><th>类型</th><th>评价</th><th>内容</th><th>答复期限</th><th>状态</th><th>联系方式</th>\
                 </tr></thead><tbody>{list}</tbody></table>{pages}{composer}",
                found.matching,
                listed.len(),
                found.overdue,
                crate::protocol::feedback::REPLY_WORKING_DAYS,
            ),
        ))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// Shows one item's contact number in full, after the audit trail has it.
async fn reveal(
    State(console): State<Console>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, form.get("csrf")).await?;
        require(&session, UserRole::Staff, "查看完整联系方式")?;
        let wanted = id.clone();
        let found = console
            .db(move |store| Ok(store.feedback_item(&wanted)?))
            .await?;
        let Some(row) = found else {
            return Err(html::message(
                StatusCode::NOT_FOUND,
                "没有这条意见",
                Some(&session.viewer()),
                "没有找到这条意见。",
            ));
        };
        // Recorded before any number is shown: no number seen without it.
        console
            .audit(
                &session.user.name,
                format!(
                    "revealed the contact number of feedback item {} (receipt {})",
                    row.id, row.receipt
                ),
                row.id.as_bytes(),
            )
            .await?;
        Ok(html::page(
            StatusCode::OK,
            &format!("回执 {} 的联系方式", row.receipt),
            Some(&session.viewer()),
            &format!(
                "<p>联系方式：<strong id=\"contact\">{}</strong></p><p class=\"message\">本次查看已记入操作记录。\
                 请仅用于答复居民。</p><p><a href=\"/console/feedback\">返回居民意见</a></p>",
                esc(if row.contact.is_empty() {
                    "（未留）"
                } else {
                    &row.contact
                })
            ),
        ))
    }
    .await;
    result.unwrap_or_else(|page| page)
}

/// A refused reply: why, and the composer again with everything typed and
/// chosen, so that nothing is lost.
fn kept(session: &super::Session, form: &FormBody, why: &str) -> Response {
    let receipts: String = form
        .0
        .iter()
        .filter(|(k, _)| k == "receipt")
        .map(|(_, r)| {
            format!(
                "<label><input type=\"checkbox\" name=\"receipt\" value=\"{}\" checked> {}</label>",
                esc(r),
                esc(r)
            )
        })
        .collect();
    html::page(
        StatusCode::BAD_REQUEST,
        "无法生成答复草稿",
        Some(&session.viewer()),
        &format!(
            "<p class=\"problems\">{}</p><form method=\"post\" action=\"/console/feedback/reply\" \
             id=\"reply\" class=\"card\">{}{receipts}\
             <label>答复内容<textarea name=\"text\" rows=\"4\">{}</textarea></label>\
             <label>公开主体<input name=\"publisher\" value=\"{}\"></label>\
             <label>监督电话<input name=\"contact\" value=\"{}\"></label>\
             <button type=\"submit\" class=\"primary\">生成答复草稿</button></form>\
             <p><a href=\"/console/feedback\">返回居民意见</a></p>",
            esc(why),
            csrf_field(&session.csrf),
            esc(&form.text("text")),
            esc(&form.text("publisher")),
            esc(&form.text("contact")),
        ),
    )
}

/// Turns the chosen receipts into a `reply` draft of their community.
async fn compose_reply(
    State(console): State<Console>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = FormBody::parse(&body);
    let result: Page = async {
        let session = console.posted(&headers, form.get("csrf")).await?;
        require(&session, UserRole::Staff, "答复居民意见")?;
        let bad_request = |session: &super::Session, text: &str| kept(session, &form, text);
        let mut receipts: Vec<String> = Vec::new();
        for (_, code) in form.0.iter().filter(|(k, _)| k == "receipt") {
            let code = code.trim().to_uppercase();
            if !is_receipt_code(&code) {
                return Err(bad_request(
                    &session,
                    &format!("“{code}”不是回执码（6 位数字和字母）。没有生成草稿。"),
                ));
            }
            if !receipts.contains(&code) {
                receipts.push(code);
            }
        }
        if receipts.is_empty() {
            return Err(bad_request(
                &session,
                "请先在列表中勾选要答复的意见。没有生成草稿。",
            ));
        }
        let text = form.text("text");
        if text.trim().is_empty() {
            return Err(bad_request(&session, "请填写答复内容。没有生成草稿。"));
        }
        let wanted = receipts.clone();
        let found = console
            .db(move |store| {
                wanted
                    .iter()
                    .map(|r| Ok((r.clone(), store.communities_of_receipt(r)?)))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .await?;
        let mut communities: Vec<&str> = Vec::new();
        for (receipt, of) in &found {
            match of.as_slice() {
                [] => {
                    return Err(bad_request(
                        &session,
                        &format!("没有回执码为 {receipt} 的意见。没有生成草稿。"),
                    ));
                }
                many => {
                    for c in many {
                        if !communities.contains(&c.as_str()) {
                            communities.push(c);
                        }
                    }
                }
            }
        }
        let [community] = communities.as_slice() else {
            return Err(bad_request(
                &session,
                &format!(
                    "一份答复只在一个社区显示，所选意见来自 {}：请按社区分别答复。没有生成草稿。",
                    communities.join("、")
                ),
            ));
        };
        let community = (*community).to_owned();
        if !console.settings.scopes.iter().any(|s| s.id == community) {
            return Err(conflict(
                &session,
                &format!("社区 {community} 不在 office.toml 的发布范围内，无法生成答复草稿。"),
            ));
        }
        let now = OffsetDateTime::now_utc();
        let today = china_date(now);
        let base = format!(
            "reply-{:04}{:02}{:02}-{}",
            today.year(),
            u8::from(today.month()),
            today.day(),
            receipts[0].to_lowercase()
        );
        let form = Form {
            scope: community.clone(),
            notice_id: base.clone(),
            category: "reply".into(),
            priority: "normal".into(),
            title: format!(
                "居民意见答复（{}年{}月{}日）",
                today.year(),
                u8::from(today.month()),
                today.day()
            ),
            window: WINDOW_CUSTOM.into(),
            valid_from: today.to_string(),
            valid_until: china_date(now + REPLY_SHOWN_FOR).to_string(),
            publisher: form.text("publisher").trim().to_owned(),
            contact: form.text("contact").trim().to_owned(),
            blocks: vec![FormBlock {
                kind: "paragraph".into(),
                text: text.trim().to_owned(),
                ..FormBlock::default()
            }],
            reply_to: receipts.join(" "),
            ..Form::default()
        };
        let json = serde_json::to_string(&form).expect("a form serialises");
        let (author, scope) = (session.user.name.clone(), community.clone());
        // A fresh id: one never written before, as a reply or a draft.
        let created = console
            .db(move |store| {
                for n in 1..100 {
                    let id = if n == 1 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    };
                    if store.reply_id_taken(&id)? {
                        continue;
                    }
                    if let Some(draft) = store.create_draft(
                        &scope,
                        &id,
                        1,
                        DraftKind::Notice,
                        &json,
                        None,
                        &author,
                    )? {
                        return Ok(Some((draft, id)));
                    }
                }
                Ok(None)
            })
            .await?;
        let Some((draft_id, notice_id)) = created else {
            return Err(conflict(&session, "今天的答复编号已用尽，请明天再试。"));
        };
        console
            .audit(
                &session.user.name,
                format!(
                    "drafted reply {community}/{notice_id} to receipts {}",
                    receipts.join(" ")
                ),
                &body,
            )
            .await?;
        let draft = console.load(&session, draft_id).await?;
        let form = Form { notice_id, ..form };
        save_form(&console, &session, &draft, form).await
    }
    .await;
    result.unwrap_or_else(|page| page)
}
