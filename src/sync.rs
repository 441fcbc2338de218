//! Residents' feedback from the screen's outbox to the office (PROTOCOL.md
//! section 7), never losing an item:
//!
//! - items leave the outbox only when the office has answered for them:
//!   accepted (the contact number is then wiped from the screen) or rejected
//!   for good (parked with the office's reason);
//! - each item keeps its id on every retry, so the office stores it once;
//! - network errors, timeouts, `429` and `5xx` are retried with exponential
//!   backoff and full jitter, honouring `Retry-After`;
//! - a `400` or `413` on a batch splits it, so one bad item cannot hold the
//!   others back; a `401` stops sending for `UNAUTHORIZED_WAIT` at a time,
//!   until the token is fixed;
//! - a token file the screen cannot read is reported as that (its path and
//!   the OS error), not as a refusal by the office, and retried with the
//!   same backoff as a network error: it is the screen's problem, often a
//!   moment's (a file being replaced), and the office never saw a request.
//!
//! What to do with an answer is decided by the pure [`action`]; the task
//! carries it out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::OfficeApi;
use crate::protocol::feedback::{FeedbackBatch, FeedbackItem, FeedbackResponse};
use crate::store::outbox::{Outbox, OutboxCounts};

pub mod plays;

/// Items in one request.
pub const BATCH: usize = 100;
/// Retries of a network error or a busy office: 0.5 s doubling to 5 s, so a
/// queue reaches an office within seconds of its return.
pub(crate) const RETRY: Backoff = Backoff {
    first: Duration::from_millis(500),
    cap: Duration::from_secs(5),
};
/// The longest `Retry-After` obeyed.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// The wait after a `401`: a wrong token needs a person, so asking more
/// often would only fill the office's log; a submission does not cut it
/// short, and the items wait in the outbox.
pub const UNAUTHORIZED_WAIT: Duration = Duration::from_secs(600);
/// An idle outbox is looked at this often (a submission wakes it at once).
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(30);

/// The office's answer to one request, as the task saw it.
#[derive(Debug)]
pub enum Reply {
    Answered(FeedbackResponse),
    Status {
        code: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    Network(String),
    /// No request was made: the token file could not be read.
    TokenUnreadable(String),
}

/// What to do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Mark these accepted, park these with their reasons, go on at once.
    Settle {
        accepted: Vec<String>,
        rejected: Vec<(String, String)>,
    },
    /// Send the batch's items one at a time to find the one at fault.
    Split,
    /// The single item sent is refused for good.
    Park(String),
    /// The token is wrong: stop until it is fixed.
    Unauthorized(String),
    /// Try again later (after at least this long, if the office said).
    Retry(Option<Duration>),
    /// The screen cannot read its token: say so, and retry with backoff.
    TokenUnreadable(String),
}

/// Decides what an answer to a batch of `sent` items means.
pub fn action(reply: Reply, sent: usize) -> Action {
    match reply {
        Reply::Answered(r) => Action::Settle {
            accepted: r.accepted,
            rejected: r.rejected.into_iter().map(|r| (r.id, r.reason)).collect(),
        },
        Reply::Status {
            code: 400, message, ..
        }
        | Reply::Status {
            code: 413, message, ..
        } if sent == 1 => Action::Park(message),
        Reply::Status {
            code: 400 | 413, ..
        } => Action::Split,
        Reply::Status {
            code: 401, message, ..
        } => Action::Unauthorized(message),
        Reply::Status { retry_after, .. } => Action::Retry(retry_after),
        Reply::Network(_) => Action::Retry(None),
        Reply::TokenUnreadable(message) => Action::TokenUnreadable(message),
    }
}

/// A change to the outbox, run on a blocking thread.
type OutboxWork = Box<dyn FnOnce(&mut Outbox) -> crate::store::Result<()> + Send>;

/// What the rest of the daemon sees of the outbox.
pub type OutboxState = watch::Sender<OutboxCounts>;

/// The sync task. `wake` is notified after every submission.
pub struct SyncTask {
    /// The screen's store file, whose outbox this task sends.
    pub store: PathBuf,
    pub office: Option<OfficeApi>,
    pub screen: String,
    pub community: String,
    /// Notified after a submission, so that it goes out at once.
    pub wake: Arc<Notify>,
    pub counts: OutboxState,
    pub cancel: CancellationToken,
}

impl SyncTask {
    pub async fn run(self) {
        let SyncTask {
            store,
            office,
            screen,
            community,
            wake,
            counts,
            cancel,
        } = self;
        let outbox = match tokio::task::spawn_blocking({
            let store = store.clone();
            move || Outbox::open(&store)
        })
        .await
        {
            Ok(Ok(outbox)) => Arc::new(std::sync::Mutex::new(outbox)),
            Ok(Err(e)) => {
                tracing::error!("feedback outbox unusable: {e}");
                // Keep `counts` open until shutdown: the status task watches it.
                cancel.cancelled().await;
                return;
            }
            Err(_) => {
                cancel.cancelled().await;
                return;
            }
        };
        let with_outbox = |f: OutboxWork| {
            let outbox = outbox.clone();
            async move {
                let result = tokio::task::spawn_blocking(move || {
                    let mut outbox = outbox.lock().expect("outbox lock");
                    f(&mut outbox)
                })
                .await;
                match result {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::error!("feedback outbox: {e}");
                        false
                    }
                    Err(_) => false,
                }
            }
        };
        let refresh = |counts: &OutboxState| {
            let outbox = outbox.clone();
            let counts = counts.clone();
            async move {
                if let Ok(Ok(mut now)) = tokio::task::spawn_blocking(move || {
                    outbox.lock().expect("outbox lock").counts()
                })
                .await
                {
                    counts.send_if_modified(|c| {
                        now.unauthorized = c.unauthorized;
                        std::mem::replace(c, now) != now
                    });
                }
            }
        };
        let unauthorized = |counts: &OutboxState, yes: bool| {
            counts.send_if_modified(|c| std::mem::replace(&mut c.unauthorized, yes) != yes);
        };
        refresh(&counts).await;
        let Some(office) = office else {
            tracing::info!("no [office] in the configuration: feedback stays in the outbox");
            cancel.cancelled().await;
            return;
        };
        let client = match http_client(&office) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!("feedback sync cannot start: {e:#}");
                cancel.cancelled().await;
                return;
            }
        };
        let url = format!("{}/api/v1/feedback", office.url.trim_end_matches('/'));
        let mut batch_size = BATCH;
        let mut attempt = 0u32;
        // What was wrong with the token file, while something is: logged
        // when it starts or changes, not on every retry.
        let mut token_problem: Option<String> = None;
        loop {
            // New submissions show in the status at once, office or not.
            refresh(&counts).await;
            let pending = {
                let outbox = outbox.clone();
                let limit = batch_size;
                tokio::task::spawn_blocking(move || {
                    outbox.lock().expect("outbox lock").pending(limit)
                })
                .await
            };
            let items = match pending {
                // Section 7: `notice_scope` only for an upper scope's notice.
                Ok(Ok(mut items)) => {
                    for item in &mut items {
                        if item.notice_scope.as_deref() == Some(community.as_str()) {
                            item.notice_scope = None;
                        }
                    }
                    items
                }
                Ok(Err(e)) => {
                    tracing::error!("feedback outbox: {e}");
                    Vec::new()
                }
                Err(_) => {
                    cancel.cancelled().await;
                    return;
                }
            };
            if items.is_empty() {
                batch_size = BATCH;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_CHECK) => {}
                }
                continue;
            }
            let token = office.token_file.as_deref().map(read_token).transpose();
            let reply = match token {
                Ok(token) => {
                    if token_problem.take().is_some() {
                        tracing::info!("the token file is readable again");
                    }
                    send(&client, &url, token.as_deref(), &screen, &community, &items).await
                }
                Err(message) => Reply::TokenUnreadable(message),
            };
            let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
            let wait = match action(reply, items.len()) {
                Action::Settle { accepted, rejected } => {
                    attempt = 0;
                    unauthorized(&counts, false);
                    batch_size = BATCH;
                    for (id, reason) in &rejected {
                        tracing::warn!("the office refused feedback {id}: {reason}");
                    }
                    let settled = with_outbox(Box::new(move |o| {
                        o.accepted(&accepted)?;
                        for (id, reason) in &rejected {
                            o.rejected(id, reason)?;
                        }
                        Ok(())
                    }))
                    .await;
                    refresh(&counts).await;
                    if settled {
                        None
                    } else {
                        Some(Duration::from_secs(1))
                    }
                }
                Action::Split => {
                    batch_size = 1;
                    None
                }
                Action::Park(reason) => {
                    tracing::warn!("the office refused feedback {}: {reason}", ids[0]);
                    let id = ids[0].clone();
                    with_outbox(Box::new(move |o| o.rejected(&id, &reason))).await;
                    refresh(&counts).await;
                    None
                }
                Action::Unauthorized(message) => {
                    unauthorized(&counts, true);
                    tracing::error!(
                        "the office refused this screen's token ({message}); feedback waits in the outbox until the token is fixed"
                    );
                    Some(UNAUTHORIZED_WAIT)
                }
                Action::Retry(after) => {
                    attempt = attempt.saturating_add(1);
                    let ids = ids.clone();
                    with_outbox(Box::new(move |o| o.attempted(&ids))).await;
                    let backoff = RETRY.delay(attempt, &mut rand::thread_rng());
                    Some(after.map_or(backoff, |a| a.min(MAX_RETRY_AFTER).max(backoff)))
                }
                Action::TokenUnreadable(message) => {
                    // Not the office's refusal: the status keeps whatever
                    // the office last said about the token.
                    if token_problem.as_deref() != Some(message.as_str()) {
                        tracing::error!(
                            "{message}; feedback waits in the outbox, retried until the file can be read"
                        );
                        token_problem = Some(message);
                    }
                    attempt = attempt.saturating_add(1);
                    Some(RETRY.delay(attempt, &mut rand::thread_rng()))
                }
            };
            if let Some(wait) = wait {
                // A submission does not cut the wait short, but the status
                // counts it at once.
                let until = tokio::time::Instant::now() + wait;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep_until(until) => break,
                        _ = wake.notified() => refresh(&counts).await,
                    }
                }
            }
        }
    }
}

/// The screen's token, or why its file cannot be read (the path and the
/// OS error).
pub(crate) fn read_token(path: &std::path::Path) -> Result<String, String> {
    crate::mqtt::read_secret(path).map_err(|e| {
        format!(
            "cannot read the token file {}: {}",
            path.display(),
            e.root_cause()
        )
    })
}

/// The client of the office's API: its timeout, and its `ca_file` (only
/// those certificates are trusted) or the system's roots.
pub(crate) fn http_client(office: &OfficeApi) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    crate::tls::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(office.timeout_seconds))
        .user_agent(concat!("gongkaid/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &office.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the office's CA file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing the office's CA file {}", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "the office's CA file {} holds no certificate",
            path.display()
        );
        builder = builder.tls_certs_only(certs);
    }
    Ok(builder.build()?)
}

/// The `Retry-After` of an answer, in seconds (the form the office uses).
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The `error` of a JSON answer, or the status code.
pub(crate) fn error_message(body: &[u8], code: u16) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {code}"))
}

/// One request with a batch.
async fn send(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    screen: &str,
    community: &str,
    items: &[FeedbackItem],
) -> Reply {
    let batch = FeedbackBatch {
        screen: screen.to_owned(),
        community: community.to_owned(),
        items: items.to_vec(),
    };
    let mut request = client.post(url).json(&batch);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Reply::Network(e.to_string()),
    };
    let code = response.status().as_u16();
    let retry_after = retry_after(&response);
    let body = match response.bytes().await {
        Ok(b) => b,
        // The connection broke mid-answer: nothing is known, so retry.
        Err(e) => return Reply::Network(e.to_string()),
    };
    if code == 200 {
        return match serde_json::from_slice::<FeedbackResponse>(&body) {
            Ok(r) => Reply::Answered(r),
            Err(e) => Reply::Network(format!("unreadable answer: {e}")),
        };
    }
    let message = error_message(&body, code);
    Reply::Status {
        code,
        retry_after,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::feedback::ItemRejection;

    fn status(code: u16) -> Reply {
        Reply::Status {
            code,
            retry_after: None,
            message: format!("m{code}"),
        }
    }

    #[test]
    fn answers_decide_the_next_step() {
        let answered = Reply::Answered(FeedbackResponse {
            accepted: vec!["a".into()],
            rejected: vec![ItemRejection {
                id: "b".into(),
                reason: "bad".into(),
            }],
        });
        assert_eq!(
            action(answered, 2),
            Action::Settle {
                accepted: vec!["a".into()],
                rejected: vec![("b".into(), "bad".into())]
            }
        );
        assert_eq!(action(status(400), 5), Action::Split);
        assert_eq!(action(status(400), 1), Action::Park("m400".into()));
        assert_eq!(action(status(413), 5), Action::Split);
        assert_eq!(action(status(413), 1), Action::Park("m413".into()));
        assert_eq!(action(status(401), 5), Action::Unauthorized("m401".into()));
        assert_eq!(action(status(500), 5), Action::Retry(None));
        assert_eq!(action(status(503), 1), Action::Retry(None));
        let busy = Reply::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(7)),
            message: String::new(),
        };
        assert_eq!(action(busy, 3), Action::Retry(Some(Duration::from_secs(7))));
        assert_eq!(
            action(Reply::Network("reset".into()), 3),
            Action::Retry(None)
        );
        // Regression: an unreadable token file was reported as the
        // office refusing the token.
        assert_eq!(
            action(Reply::TokenUnreadable("no file".into()), 3),
            Action::TokenUnreadable("no file".into())
        );
    }
}
