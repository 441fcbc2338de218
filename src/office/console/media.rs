//! Images of notices: uploads by staff (checked by their first bytes, at
//! most 10 MiB, kept by SHA-256), served publicly at `/media/{sha256}` since
//! screens fetch them without a session; and the preview pages, drawn by
//! `preview`'s render thread with those images.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::protocol::notice::{MAX_MEDIA_BYTES, Notice};
use crate::protocol::sha256_hex;
use crate::store::office::{Draft, UserRole};

use super::drafts::{bad_request, conflict};
use super::html;
use super::views::draft_title;
use super::{Console, Page, Session};

pub fn routes() -> Router<Console> {
    Router::new()
        .route(
            "/console/media",
            post(upload).layer(DefaultBodyLimit::max(MAX_MEDIA_BYTES as usize)),
        )
        .route("/media/{sha256}", get(media))
        .route("/console/drafts/{id}/preview/{size}", get(preview_page))
        .route(
            "/console/drafts/{id}/preview/{size}/{page}",
            get(preview_png),
        )
}

pub(super) fn json_error(status: StatusCode, message: &str) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    html::secure_headers(&mut response);
    response
}

/// What an image's first bytes say it is.
pub(super) fn sniff(bytes: &[u8]) -> Option<&'static str> {
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

pub(super) async fn upload(
    State(console): State<Console>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
pub(super) async fn media(
    State(console): State<Console>,
    UrlPath(sha256): UrlPath<String>,
) -> Response {
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
pub(super) async fn preview_input(
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

pub(super) fn preview_size(
    session: &Session,
    size: &str,
) -> Result<super::preview::Size, Response> {
    super::preview::Size::parse(size).ok_or_else(|| {
        bad_request(
            session,
            "预览只有横屏（landscape）、竖屏（portrait）和触摸屏（kiosk）三种。",
        )
    })
}

pub(super) async fn preview_page(
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

pub(super) async fn preview_png(
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
