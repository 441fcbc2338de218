//! Signing and reviewing: staff submit a draft signed as `office`, a
//! supervisor returns it with a comment or approves it signed as
//! `supervisor`.
//!
//! Signatures arrive from the browser over the exact payload bytes the page
//! showed, named by their SHA-256: a draft that changed since is refused,
//! never signed blind. Each signature is checked against the signer's
//! enrolled key with the screens' own `verify::signed_by_any`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use time::OffsetDateTime;

use crate::protocol::envelope::{Envelope, NOTICE_TYPE, Signature};
use crate::protocol::notice::Notice;
use crate::protocol::verify::signed_by_any;
use crate::protocol::{PublicKey, personal_data, sha256_hex};
use crate::store::office::{Draft, DraftState, Review, UserRole};

use super::drafts::{DraftUpdate, bad_request, conflict, move_draft};
use super::{Console, FormBody, Page, Session, require};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/drafts/{id}/submit", post(submit))
        .route("/console/drafts/{id}/approve", post(approve))
        .route("/console/drafts/{id}/return", post(send_back))
}

/// A signature posted from the browser, checked: over the payload the draft
/// holds (named by its hash), by `signer`'s enrolled key.
pub(super) fn posted_signature(
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
pub(super) fn recheck(session: &Session, payload: &[u8]) -> Result<(), Response> {
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

pub(super) async fn submit(
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
        let what = format!(
            "submitted draft {id} ({}/{} version {}) signed as office",
            draft.scope, draft.notice_id, draft.version
        );
        let update = DraftUpdate {
            from: draft.state,
            to: DraftState::Review,
            form: draft.form.clone(),
            payload: Some(payload.clone()),
            office_sig: Some(sig),
            supervisor_sig: None,
            review: Some(review),
        };
        let refused = "这份草稿已被提交或修改，请返回刷新。";
        move_draft(&console, &session, id, update, refused, what, &payload).await
    }
    .await;
    result.unwrap_or_else(|page| page)
}

pub(super) async fn approve(
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
        let what = format!(
            "approved draft {id} ({}/{} version {}) signed as supervisor",
            draft.scope, draft.notice_id, draft.version
        );
        let update = DraftUpdate {
            from: DraftState::Review,
            to: DraftState::Approved,
            form: draft.form.clone(),
            payload: Some(payload.clone()),
            office_sig: draft.office_sig.clone(),
            supervisor_sig: Some(sig),
            review: Some(review),
        };
        let refused = "这份公告已被他人处理，请返回刷新。";
        move_draft(&console, &session, id, update, refused, what, &payload).await
    }
    .await;
    result.unwrap_or_else(|page| page)
}

pub(super) async fn send_back(
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
        let what = format!("returned draft {id} ({}/{})", draft.scope, draft.notice_id);
        let update = DraftUpdate {
            from: DraftState::Review,
            to: DraftState::Returned,
            form: draft.form.clone(),
            payload: draft.payload.clone(),
            office_sig: None,
            supervisor_sig: None,
            review: Some(review),
        };
        let refused = "这份公告已被他人处理，请返回刷新。";
        move_draft(
            &console,
            &session,
            id,
            update,
            refused,
            what,
            comment.as_bytes(),
        )
        .await
    }
    .await;
    result.unwrap_or_else(|page| page)
}
