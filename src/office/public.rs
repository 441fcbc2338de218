//! The public page of a notice, `/n/{scope}/{id}`: what a resident opens
//! from the QR code on a screen (码上公开). No login, mobile first, in
//! Chinese, with no script.
//!
//! It is built only from what the office's follow accepted
//! (`daemon::Follower`, which verifies with the screens' own code): the
//! current version, the dated history of every version kept, and the review
//! mark only where a supervisor's signature verified. Nothing of the
//! office's own database (drafts, comments, residents' contacts) is read
//! here, so nothing of it can leak.
//!
//! Every text is escaped, and the answer carries a Content-Security-Policy
//! that allows no script, styles only by the hash of the one inline style,
//! and images only from the page's own origin and its notice's media hosts.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;

use crate::protocol::notice::{Block, Notice, Status};
use crate::protocol::{is_valid_id, printable};
use crate::store::Store;
use crate::workdays::CHINA;

/// The public pages' state: a read-only connection to the follow store,
/// or none when the office follows no broker.
#[derive(Clone)]
pub struct PublicPages {
    store: Option<Arc<Mutex<Store>>>,
}

impl PublicPages {
    /// Pages read from the follow store at `path` (the follower's writer
    /// must have created it).
    pub fn open(path: &Path) -> anyhow::Result<PublicPages> {
        let store = Store::open_read_only(path)?;
        Ok(PublicPages {
            store: Some(Arc::new(Mutex::new(store))),
        })
    }

    /// Pages when nothing is followed: every notice is unknown.
    pub fn none() -> PublicPages {
        PublicPages { store: None }
    }

    /// Every version kept of a notice, oldest first, each with its review
    /// mark as the follow found it; empty when none is.
    fn versions(&self, scope: &str, id: &str) -> anyhow::Result<Vec<Notice>> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let store = store.lock().expect("public store lock");
        let mut out = Vec::new();
        for version in store.versions(scope, id)? {
            // Checked against the hash it was accepted with.
            let Some(envelope) = store.envelope(scope, id, version)? else {
                continue;
            };
            let mut notice = Notice::from_envelope(&envelope)
                .map_err(|e| anyhow::anyhow!("{scope}/{id} version {version}: {e}"))?;
            notice.review_verified = store.reviewed(scope, id, version)?;
            out.push(notice);
        }
        Ok(out)
    }
}

/// The routes: `GET /n/{scope}/{id}`.
pub fn router(pages: PublicPages) -> Router {
    Router::new()
        .route("/n/{scope}/{id}", get(page))
        .with_state(pages)
}

async fn page(
    State(pages): State<PublicPages>,
    UrlPath((scope, id)): UrlPath<(String, String)>,
) -> Response {
    if !is_valid_id(&scope) || !is_valid_id(&id) {
        return answer(StatusCode::NOT_FOUND, not_found(), &[]);
    }
    let found = tokio::task::spawn_blocking({
        let (scope, id) = (scope.clone(), id.clone());
        move || pages.versions(&scope, &id)
    })
    .await;
    match found {
        Ok(Ok(versions)) if versions.is_empty() => answer(StatusCode::NOT_FOUND, not_found(), &[]),
        Ok(Ok(versions)) => {
            let hosts = media_origins(versions.last().expect("not empty"));
            answer(StatusCode::OK, render(&versions), &hosts)
        }
        Ok(Err(e)) => {
            tracing::error!(
                "public page {}/{}: {e:#}",
                printable(&scope),
                printable(&id)
            );
            answer(StatusCode::INTERNAL_SERVER_ERROR, unavailable(), &[])
        }
        Err(e) => {
            tracing::error!("public page: {e}");
            answer(StatusCode::INTERNAL_SERVER_ERROR, unavailable(), &[])
        }
    }
}

/// The one inline style of every page. The CSP allows it by its hash.
const STYLE: &str = "\
body{margin:0;background:#f4f1ea;color:#1d1d1d;font:17px/1.7 system-ui,\"PingFang SC\",\"Noto Sans CJK SC\",\"Microsoft YaHei\",sans-serif}\
main{max-width:46rem;margin:0 auto;padding:1rem 1.1rem 3rem;background:#fff;min-height:100vh;box-sizing:border-box}\
.category{display:inline-block;margin:0;padding:.1rem .6rem;border-radius:.3rem;background:#b3261e;color:#fff;font-size:.9rem}\
h1{font-size:1.45rem;line-height:1.4;margin:.6rem 0 .4rem}\
h2{font-size:1.1rem;margin:2rem 0 .5rem;border-top:1px solid #ddd;padding-top:1rem}\
.summary{font-weight:600}\
.withdrawn{padding:.6rem .8rem;border:2px solid #b3261e;color:#b3261e;font-weight:700}\
.meta{color:#555;font-size:.95rem;margin:.2rem 0}\
.review{color:#1b5e20;font-weight:600}\
.table{overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-size:.95rem}\
caption{text-align:left;font-weight:600;padding:.3rem 0}\
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}\
th{background:#f0ece2}\
td.n{text-align:right;font-variant-numeric:tabular-nums}\
figure{margin:1rem 0}\
img{max-width:100%;height:auto}\
figcaption{color:#555;font-size:.9rem}\
ol{padding-left:1.3rem}\
li{margin:.3rem 0}";

/// `'sha256-…'` of [`STYLE`], for the CSP.
fn style_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(STYLE.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    })
}

/// The policy of a page whose images come from `media` origins besides
/// its own.
pub fn content_security_policy(media: &[String]) -> String {
    let mut images = vec!["'self'".to_owned()];
    images.extend(media.iter().cloned());
    format!(
        "default-src 'none'; img-src {}; style-src {}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        images.join(" "),
        style_hash()
    )
}

fn answer(status: StatusCode, html: String, media: &[String]) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Origins come from `url`'s serialisation: ASCII, no quote or newline.
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(media)) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A withdrawal or a new version shows at the next visit.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (status, headers, html).into_response()
}

/// The origins (`https://host[:port]`) of a notice's media that are http(s)
/// URLs; any other URL is never put in a page.
pub fn media_origins(notice: &Notice) -> Vec<String> {
    let mut origins: Vec<String> = Vec::new();
    for media in &notice.media {
        if let Some(origin) = image_url(&media.url).map(|u| u.origin().ascii_serialization()) {
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
    }
    origins
}

fn image_url(text: &str) -> Option<url::Url> {
    url::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
}

/// Text made safe for HTML, in content and in quoted attributes alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn date(t: OffsetDateTime) -> String {
    let t = t.to_offset(CHINA);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn date_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(CHINA);
    format!("{} {:02}:{:02}", date(t), t.hour(), t.minute())
}

fn document(title: &str, main: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body><main>\n{main}</main></body></html>\n",
        escape(title)
    )
}

/// The page of a notice from its versions, oldest first (never empty).
pub fn render(versions: &[Notice]) -> String {
    let current = versions.last().expect("a notice has a version");
    let mut html = String::new();
    let push = |html: &mut String, s: String| html.push_str(&s);
    push(
        &mut html,
        format!(
            "<p class=\"category\">{}</p>\n<h1>{}</h1>\n",
            escape(current.category.label_zh()),
            escape(&current.title)
        ),
    );
    if current.status == Status::Withdrawn {
        push(
            &mut html,
            format!(
                "<p class=\"withdrawn\">本公告已于 {} 撤回，不再公开展示。以下为撤回时的内容，仅供查阅。</p>\n",
                date(current.issued_at)
            ),
        );
    }
    if let Some(summary) = &current.summary {
        push(
            &mut html,
            format!("<p class=\"summary\">{}</p>\n", escape(summary)),
        );
    }
    for block in &current.body {
        push(&mut html, render_block(current, block));
    }
    push(&mut html, publisher(current));
    push(
        &mut html,
        format!(
            "<p class=\"meta\">公开期限：{} 至 {}</p>\n",
            date(current.valid_from),
            date(current.valid_until)
        ),
    );
    if let Some(period) = &current.period {
        push(
            &mut html,
            format!("<p class=\"meta\">所属期间：{}</p>\n", escape(period)),
        );
    }
    if !current.contact.trim().is_empty() {
        push(
            &mut html,
            format!(
                "<p class=\"meta\">联系方式：{}</p>\n",
                escape(&current.contact)
            ),
        );
    }
    push(
        &mut html,
        format!(
            "<p class=\"meta\">第 {} 版，发布于 {}</p>\n<h2>版本记录</h2>\n<ol reversed>\n",
            current.version,
            date_time(current.issued_at)
        ),
    );
    for notice in versions.iter().rev() {
        let what = match notice.status {
            Status::Withdrawn => "撤回".to_owned(),
            Status::Active => escape(&notice.title),
        };
        let review = match (notice.status, notice.review_verified) {
            (Status::Withdrawn, _) => "",
            (Status::Active, true) => "　<span class=\"review\">已经审核</span>",
            (Status::Active, false) => "　未经监督委员会审核",
        };
        push(
            &mut html,
            format!(
                "<li>第 {} 版　{}　{}{}</li>\n",
                notice.version,
                date_time(notice.issued_at),
                what,
                review
            ),
        );
    }
    html.push_str("</ol>\n");
    document(
        &format!("{} - {}", current.title, current.category.label_zh()),
        &html,
    )
}

/// "公开主体：…" with the review mark (section 4) exactly when the
/// screens would show it: the words of `ui::publisher_line`.
fn publisher(notice: &Notice) -> String {
    let line = crate::ui::publisher_line(notice);
    match line.split_once('　') {
        Some((who, mark)) if notice.review_verified => format!(
            "<p class=\"meta\">{}　<span class=\"review\">{}</span></p>\n",
            escape(who),
            escape(mark)
        ),
        _ => format!("<p class=\"meta\">{}</p>\n", escape(&line)),
    }
}

fn render_block(notice: &Notice, block: &Block) -> String {
    match block {
        Block::Paragraph { text } => format!("<p>{}</p>\n", escape(text)),
        Block::Table {
            caption,
            header,
            rows,
        } => {
            let numeric = |i: usize| {
                !rows.is_empty()
                    && rows
                        .iter()
                        .all(|r| r.get(i).is_some_and(|c| crate::ui::is_numeric(c)))
            };
            let mut out = String::from("<div class=\"table\"><table>");
            if let Some(caption) = caption {
                out.push_str(&format!("<caption>{}</caption>", escape(caption)));
            }
            out.push_str("<thead><tr>");
            for cell in header {
                out.push_str(&format!("<th>{}</th>", escape(cell)));
            }
            out.push_str("</tr></thead><tbody>");
            for row in rows {
                out.push_str("<tr>");
                for (i, cell) in row.iter().enumerate() {
                    let class = if numeric(i) { " class=\"n\"" } else { "" };
                    out.push_str(&format!("<td{class}>{}</td>", escape(cell)));
                }
                out.push_str("</tr>");
            }
            out.push_str("</tbody></table></div>\n");
            out
        }
        Block::Image { media, caption } => {
            let caption = caption.as_deref().unwrap_or("");
            let url = notice
                .media
                .iter()
                .find(|m| &m.id == media)
                .and_then(|m| image_url(&m.url));
            match url {
                Some(url) => format!(
                    "<figure><img src=\"{}\" alt=\"{}\" loading=\"lazy\">{}</figure>\n",
                    escape(url.as_str()),
                    escape(caption),
                    if caption.is_empty() {
                        String::new()
                    } else {
                        format!("<figcaption>{}</figcaption>", escape(caption))
                    }
                ),
                None => format!(
                    "<p>〔图片：{}〕</p>\n",
                    escape(if caption.is_empty() {
                        "未命名"
                    } else {
                        caption
                    })
                ),
            }
        }
    }
}

/// The page of an unknown scope or id.
pub fn not_found() -> String {
    document(
        "未找到公开内容",
        "<h1>未找到该公开内容</h1>\n<p>您打开的链接没有对应的公开内容。它可能尚未发布，或链接有误。请核对屏幕上的二维码，或向社区居委会咨询。</p>\n",
    )
}

fn unavailable() -> String {
    document(
        "暂时无法显示",
        "<h1>暂时无法显示</h1>\n<p>公开内容暂时无法读取，请稍后再试。</p>\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(version: u64, title: &str) -> Notice {
        let value = serde_json::json!({
            "schema": 1, "id": "n1", "version": version, "community": "lixia-demo",
            "category": "finance", "priority": "normal", "status": "active",
            "title": title, "summary": "总收入 <b>12</b> 元", "body": [
                {"type": "paragraph", "text": "第一段 & \"引号\""},
                {"type": "table", "caption": "收支", "header": ["项目", "金额"],
                 "rows": [["<i>收入</i>", "12.00"], ["支出", "3.50"]]},
                {"type": "image", "media": "m1", "caption": "票据"},
                {"type": "image", "media": "m2", "caption": "坏链接"}
            ],
            "media": [
                {"id": "m1", "url": "https://media.example:8443/a.png", "sha256": "a".repeat(64), "bytes": 10, "mime": "image/png"},
                {"id": "m2", "url": "https://media.example/b.png", "sha256": "b".repeat(64), "bytes": 10, "mime": "image/png"}
            ],
            "valid_from": "2026-10-01T00:00:00+08:00", "valid_until": "2026-12-31T00:00:00+08:00",
            "issued_at": format!("2026-10-0{version}T09:30:00+08:00"),
            "publisher": "历下社区居委会", "reviewer": "历下社区居务监督委员会",
            "contact": "0531-0000000"
        });
        let mut notice = Notice::from_payload(&serde_json::to_vec(&value).unwrap()).unwrap();
        // Validation refuses such a URL; the page must not trust it did.
        notice.media[1].url = "javascript:alert(1)".into();
        notice
    }

    #[test]
    fn everything_is_escaped_and_no_script_can_run() {
        let mut n = notice(1, "<script>alert(1)</script>");
        n.review_verified = true;
        let html = render(&[n]);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;12&lt;/b&gt;"));
        assert!(html.contains("&lt;i&gt;收入&lt;/i&gt;"));
        assert!(html.contains("&amp; &quot;引号&quot;"));
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("〔图片：坏链接〕"));
        assert!(html.contains("<img src=\"https://media.example:8443/a.png\""));
        assert!(html.contains("<td class=\"n\">12.00</td>"));
    }

    #[test]
    fn the_review_mark_shows_only_when_verified() {
        let mut reviewed = notice(1, "财务公开");
        reviewed.review_verified = true;
        let html = render(std::slice::from_ref(&reviewed));
        assert!(html.contains("经历下社区居务监督委员会审核"), "{html}");
        let unreviewed = notice(2, "财务公开");
        let html = render(&[reviewed, unreviewed]);
        assert!(!html.contains("居务监督委员会审核"), "{html}");
        assert!(html.contains("未经监督委员会审核"));
        assert!(html.contains("第 2 版　2026-10-02 09:30"));
        assert!(html.contains("第 1 版　2026-10-01 09:30"));
    }

    #[test]
    fn a_withdrawn_notice_says_so() {
        let mut w = notice(2, "财务公开");
        w.status = Status::Withdrawn;
        let html = render(&[notice(1, "财务公开"), w]);
        assert!(html.contains("本公告已于 2026-10-02 撤回"), "{html}");
        assert!(html.contains("第 2 版　2026-10-02 09:30　撤回"));
    }

    #[test]
    fn the_policy_allows_no_script_and_only_the_media_origins() {
        let origins = media_origins(&notice(1, "t"));
        assert_eq!(origins, vec!["https://media.example:8443".to_owned()]);
        let csp = content_security_policy(&origins);
        assert!(csp.starts_with("default-src 'none'; img-src 'self' https://media.example:8443;"));
        assert!(!csp.contains("script"));
        assert!(!csp.contains("unsafe"));
        assert!(csp.contains(style_hash()));
    }
}
