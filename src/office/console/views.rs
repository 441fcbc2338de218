//! The HTML fragments of the console's pages about notices: lists of
//! drafts, the compose form and its blocks, the problems a form has, the
//! payload people sign with the button that signs it, the diff and the
//! review history. Pure: every value from outside goes through `esc`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::protocol::envelope::NOTICE_TYPE;
use crate::protocol::notice::Notice;
use crate::protocol::sha256_hex;
use crate::store::office::{Draft, DraftKind, DraftState, Review};

use super::Console;
use super::compose::{self, Form, FormBlock};
use super::diff::{self, Line};
use super::html::{csrf_field, esc};

pub(super) fn state_label(state: DraftState) -> &'static str {
    match state {
        DraftState::Editing => "草稿",
        DraftState::Review => "待审核",
        DraftState::Returned => "已退回",
        DraftState::Approved => "已批准，待发布",
        DraftState::Published => "已发布",
    }
}

pub(super) fn action_label(action: &str) -> &str {
    match action {
        "submitted" => "提交审核（工作人员签名）",
        "returned" => "退回",
        "approved" => "批准（监督委员会签名）",
        "published" => "发布",
        other => other,
    }
}

pub(super) fn draft_row(draft: &Draft) -> String {
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

pub(super) fn draft_title(draft: &Draft) -> String {
    let form: Form = serde_json::from_str(&draft.form).unwrap_or_default();
    if form.title.trim().is_empty() {
        "（无标题）".to_owned()
    } else {
        form.title
    }
}

pub(super) fn draft_table(drafts: &[&Draft]) -> String {
    if drafts.is_empty() {
        return "<p class=\"empty\">暂无</p>".to_owned();
    }
    let rows: String = drafts.iter().map(|d| draft_row(d)).collect();
    format!(
        "<table class=\"list\"><thead><tr><th>标题</th><th>范围/编号</th><th>版本</th>\
         <th>类型</th><th>状态</th><th>撰写人</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

pub(super) fn select(name: &str, options: &[(&str, &str)], chosen: &str) -> String {
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

pub(super) fn input(label: &str, name: &str, value: &str, extra: &str) -> String {
    format!(
        "<label>{label} <input name=\"{name}\" value=\"{}\" {extra}></label>",
        esc(value)
    )
}

pub(super) fn table_preview(text: &str) -> String {
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

pub(super) fn block_html(i: usize, block: &FormBlock) -> String {
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
pub(super) fn form_html(
    console: &Console,
    form: &Form,
    csrf: &str,
    action: &str,
    fixed: bool,
) -> String {
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

pub(super) fn problems_html(problems: &[compose::Problem]) -> String {
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
pub(super) fn sign_html(
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

pub(super) fn payload_html(payload: &[u8]) -> String {
    format!(
        "<details open><summary>签名内容（公告原文，共 {} 字节，SHA-256 {}）</summary>\
         <pre class=\"payload\" id=\"payload\">{}</pre></details>",
        payload.len(),
        sha256_hex(payload),
        esc(&String::from_utf8_lossy(payload))
    )
}

pub(super) fn history_html(reviews: &[(u64, Review)]) -> String {
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

pub(super) fn diff_html(label: &str, lines: &[Line]) -> String {
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
pub(super) fn review_diff(payload: &[u8], reviews: &[Review], replaced: Option<&Draft>) -> String {
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
