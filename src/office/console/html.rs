//! The console's HTML: escaping, the page around every view, and the
//! headers every console answer carries (a strict Content-Security-Policy:
//! scripts only from the console's own file, nothing inline).
//!
//! Every value that did not come from this file goes through `esc`: titles,
//! names and comments are people's text, and a title of `<script>` must be
//! shown as that text, never run.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
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

/// Scripts from the console's own file only, no inline script or style, no
/// frames, forms only to the console itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The headers of every console answer.
pub fn secure_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Enrolment links carry their token in the query: never pass it on.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Who is looking at a page, for its heading and its forms.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub role_label: &'a str,
    pub csrf: &'a str,
    /// The key id the person enrolled, for the page's script to check the
    /// browser's key against before signing.
    pub keyid: Option<&'a str>,
}

/// A whole page: `body` is HTML already escaped by its maker.
pub fn page(status: StatusCode, title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> Response {
    let (nav, data) = match viewer {
        Some(v) => (
            format!(
                "<nav><a href=\"/console\">工作台</a> <a href=\"/console/compose\">撰写公告</a> \
                 <a href=\"/console/review\">审核队列</a> <a href=\"/console/fleet\">屏幕</a> <a href=\"/console/feedback\">居民意见</a> <a href=\"/console/audit\">操作记录</a>\
                 <span class=\"who\">{} （{}）</span>\
                 <form method=\"post\" action=\"/console/logout\" class=\"inline\">{}\
                 <button type=\"submit\">退出</button></form></nav>",
                esc(v.name),
                esc(v.role_label),
                csrf_field(v.csrf)
            ),
            format!(
                " data-user=\"{}\" data-csrf=\"{}\" data-keyid=\"{}\"",
                esc(v.name),
                esc(v.csrf),
                esc(v.keyid.unwrap_or(""))
            ),
        ),
        None => (String::new(), String::new()),
    };
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · 公开屏管理</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\">\
         <script src=\"/console/static/console.js\" defer></script></head>\
         <body{data}><header><h1>社区公开屏 · 管理平台</h1>{nav}</header><main>\
         <h2>{}</h2>{body}</main></body></html>\n",
        esc(title),
        esc(title)
    );
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    secure_headers(&mut response);
    response
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A message page: refusals and errors, in words a person can act on.
pub fn message(
    status: StatusCode,
    title: &str,
    viewer: Option<&Viewer<'_>>,
    text: &str,
) -> Response {
    page(
        status,
        title,
        viewer,
        &format!(
            "<p class=\"message\">{}</p><p><a href=\"/console\">返回工作台</a></p>",
            esc(text)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
