//! Refusals, and reading a request's body once its sender is known.
//!
//! Handlers check the bearer token before they touch the body (the body
//! is an `axum::body::Body` argument, which reads nothing): a client
//! without a valid token gets `401` and its connection closes with its
//! body unread. Only then does an `Upload` read the body, under three
//! bounds:
//!
//! - a deadline for the whole body (`[limits] body_timeout_seconds`),
//!   after which the answer is `408`;
//! - the route's size limit. Past it, PROTOCOL.md section 7 (Errors, 1.1)
//!   wants the rest read and discarded, up to `DRAIN_LIMIT` in all, so
//!   that a client still sending receives the `413` rather than a reset
//!   connection; the answer then closes the connection;
//! - a memory budget shared by the bodies being read: `JSON_BUDGET` for
//!   feedback and plays, `SCREENSHOT_BUDGET` for screenshots, so that even
//!   token holders uploading slowly at once cannot take more, and a few
//!   slow screenshots cannot hold up residents' feedback.
//!
//! Any other refusal after the token check drains the body the same way
//! before answering, for the same reason.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Duration, Instant, timeout_at};

/// Bytes of a refused body read and discarded at most before answering.
pub const DRAIN_LIMIT: u64 = 32 * 1024 * 1024;

/// Bytes of JSON bodies held in memory at once, at most, over all
/// requests: sixteen of the largest, thousands of the usual.
pub const JSON_BUDGET: usize = 16 * 1024 * 1024;
/// Bytes of screenshots held in memory at once, at most: six of the largest.
pub const SCREENSHOT_BUDGET: usize = 48 * 1024 * 1024;

/// Which memory budget a body is read under.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Json,
    Screenshot,
}

/// The budget is counted in KiB: a semaphore's permits are `u32` a call.
const BUDGET_UNIT: usize = 1024;

/// A refused request: its status and a message for the screen's log, sent
/// as `{"error": …}`; whether the connection closes after the answer; how
/// long to wait before retrying, for `503`.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    close: bool,
    retry_after: Option<u32>,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            close: false,
            retry_after: None,
        }
    }

    /// The same refusal, closing the connection after it is sent.
    pub fn closing(self) -> Refusal {
        Refusal {
            close: true,
            ..self
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// `415` unless the request says its body is `expected` (parameters such
/// as `charset=utf-8` allowed).
pub fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), Refusal> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if super::input::is_content_type(given, expected) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body must be sent as Content-Type: {expected}, not {:?}",
                given
            ),
        ))
    }
}

/// What every upload shares: its time and the memory budgets.
#[derive(Clone)]
pub struct Reading {
    timeout: Duration,
    json: Arc<Semaphore>,
    screenshots: Arc<Semaphore>,
}

impl Reading {
    pub fn new(timeout: Duration) -> Reading {
        Reading {
            timeout,
            json: Arc::new(Semaphore::new(JSON_BUDGET / BUDGET_UNIT)),
            screenshots: Arc::new(Semaphore::new(SCREENSHOT_BUDGET / BUDGET_UNIT)),
        }
    }

    /// The body of a request whose sender has been authorised, to be read
    /// at most `limit` bytes under `budget`. Its deadline starts now.
    pub fn upload(&self, headers: &HeaderMap, body: Body, limit: usize, budget: Budget) -> Upload {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Upload {
            body: Some(body),
            declared,
            limit,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
            budget: match budget {
                Budget::Json => self.json.clone(),
                Budget::Screenshot => self.screenshots.clone(),
            },
            _held: None,
        }
    }
}

/// One request's body, read at most once.
pub struct Upload {
    /// `None` once read (or drained).
    body: Option<Body>,
    /// Content-Length, when the client sent one.
    declared: Option<u64>,
    limit: usize,
    deadline: Instant,
    timeout: Duration,
    budget: Arc<Semaphore>,
    /// The budget the body read holds until the answer is sent.
    _held: Option<OwnedSemaphorePermit>,
}

impl Upload {
    /// The whole body: `413` past the limit (after draining the rest),
    /// `408` past the deadline, `503` when the memory budget stays taken
    /// until then.
    pub async fn read(&mut self) -> Result<Bytes, Refusal> {
        let Some(mut body) = self.body.take() else {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the body was read twice",
            ));
        };
        if self.declared.is_some_and(|n| n > self.limit as u64) {
            drain(body, 0, self.deadline).await;
            return Err(self.too_large());
        }
        // Budget for the bytes the client declared, or for the limit when
        // it declared none (a chunked body). Hyper holds a client to its
        // Content-Length, so the body never outgrows what was reserved.
        let expected = self.declared.map_or(self.limit, |n| n as usize);
        let units = expected.div_ceil(BUDGET_UNIT).max(1) as u32;
        match timeout_at(self.deadline, self.budget.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => self._held = Some(permit),
            _ => {
                return Err(Refusal {
                    retry_after: Some(5),
                    ..Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the office is receiving too much at once; retry",
                    )
                }
                .closing());
            }
        }
        let mut data = Vec::with_capacity(expected.min(self.limit));
        loop {
            let frame = match timeout_at(self.deadline, body.frame()).await {
                Err(_) => return Err(self.timed_out()),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!("the body could not be read: {e}"),
                    )
                    .closing());
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            if data.len() + chunk.len() > self.limit {
                let seen = (data.len() + chunk.len()) as u64;
                drop(data);
                drain(body, seen, self.deadline).await;
                return Err(self.too_large());
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(data))
    }

    /// The answer to the request: `result`'s response, or its refusal sent
    /// once the body that was not read has been drained (and with the
    /// connection closed if it could not be).
    pub async fn answer<T: IntoResponse>(mut self, result: Result<T, Refusal>) -> Response {
        match result {
            Ok(answer) => answer.into_response(),
            Err(refusal) => {
                let drained = match self.body.take() {
                    Some(body) => drain(body, 0, self.deadline).await,
                    None => true,
                };
                if drained { refusal } else { refusal.closing() }.into_response()
            }
        }
    }

    fn too_large(&self) -> Refusal {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", self.limit),
        )
        .closing()
    }

    fn timed_out(&self) -> Refusal {
        Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {:?}", self.timeout),
        )
        .closing()
    }
}

/// Reads and discards the rest of `body` until it ends, `DRAIN_LIMIT` bytes
/// have come (`seen` of them already), or `deadline` passes. Whether it
/// ended. (A free function: a `Body` is not `Sync`, so no `&Upload` may be
/// held across an await.)
async fn drain(mut body: Body, seen: u64, deadline: Instant) -> bool {
    let mut seen = seen;
    while seen <= DRAIN_LIMIT {
        match timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Ok(None) => return true,
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
    false
}
