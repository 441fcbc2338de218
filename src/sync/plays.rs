//! The proof-of-play chain from the screen's store to the office
//! (PROTOCOL.md 1.1, section 7), sent like feedback and never dropped:
//!
//! - records go in seq order, at most 1000 a request, from the first one
//!   the office has not acknowledged; the seq it acknowledged is kept in
//!   the store, and records stay in the chain for good (it is append-only),
//!   so nothing is lost to a restart or a network error;
//! - a `409` names the seq the office lacks first (its database lost
//!   records, or never had them): sending starts again from there;
//! - a `400` means the office refuses the chain (a fork: this store is not
//!   the one it was, or records were changed). Nothing the screen can send
//!   changes that, so it says so in its status and log, and asks again
//!   rarely (a minute at least, up to an hour), never in a hot loop;
//! - network errors, `429` and `5xx` are retried with the feedback's
//!   backoff; a `401` waits `UNAUTHORIZED_WAIT`; an unreadable token file
//!   is the screen's own problem, retried with backoff.
//!
//! What an answer means is the pure [`action`]; the task carries it out.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    IDLE_CHECK, MAX_RETRY_AFTER, RETRY, UNAUTHORIZED_WAIT, error_message, http_client, read_token,
    retry_after,
};
use crate::backoff::Backoff;
use crate::config::OfficeApi;
use crate::protocol::plays::{MAX_PLAYS_PER_REQUEST, PlayRecord};
use crate::store::plays::PlayLog;

/// Asking again after the office refused the chain: at least a minute,
/// then up to an hour more, with jitter. A person has to look at a fork;
/// asking is only so that the screen notices when they have.
const REFUSED_FLOOR: Duration = Duration::from_secs(60);
const REFUSED_RETRY: Backoff = Backoff {
    first: Duration::from_secs(60),
    cap: Duration::from_secs(3600),
};

/// How far the office has the chain, for the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaysSent {
    /// The office holds every record through this seq, as it last said.
    pub acknowledged: u64,
    /// Why the office refuses the chain, while it does.
    pub refused: Option<String>,
    /// The office refuses this screen's token.
    pub unauthorized: bool,
}

/// The office's answer to one request, as the task saw it.
#[derive(Debug)]
pub enum Reply {
    /// 200: the office holds everything before `next_seq`.
    Stored {
        next_seq: u64,
    },
    /// 409: the office lacks records from `next_seq` on.
    Gap {
        next_seq: u64,
    },
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
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// The office holds the chain through this seq: go on after it at once.
    Acknowledge(u64),
    /// Send again from this seq at once (the office holds what is before).
    ResendFrom(u64),
    /// The office refuses the chain: say why, ask again much later.
    Refused(String),
    /// The token is wrong: wait for a person.
    Unauthorized(String),
    /// Try again later (after at least this long, if the office said).
    Retry(Option<Duration>),
    TokenUnreadable(String),
}

/// Decides what an answer to the records `first..=last` means.
pub fn action(reply: Reply, first: u64, last: u64) -> Action {
    match reply {
        // `next_seq` past the batch (the office held more already) is not
        // taken on trust: the next request starts after what was sent, and
        // its answer says again.
        Reply::Stored { next_seq } => Action::Acknowledge(next_seq.saturating_sub(1).min(last)),
        // A 409 that names a seq at or past the batch's start would send
        // the same batch again and again: wait instead.
        Reply::Gap { next_seq } if (1..first).contains(&next_seq) => Action::ResendFrom(next_seq),
        Reply::Gap { .. } => Action::Retry(None),
        Reply::Status {
            code: 400 | 413,
            message,
            ..
        } => Action::Refused(message),
        Reply::Status {
            code: 401, message, ..
        } => Action::Unauthorized(message),
        Reply::Status { retry_after, .. } => Action::Retry(retry_after),
        Reply::Network(_) => Action::Retry(None),
        Reply::TokenUnreadable(message) => Action::TokenUnreadable(message),
    }
}

/// A read or write of the play log, run on a blocking thread.
type LogWork = Box<dyn FnOnce(&mut PlayLog) -> crate::store::Result<u64> + Send>;

/// The task that sends the chain.
pub struct PlaysSyncTask {
    /// The screen's store file, whose chain this task sends.
    pub store: PathBuf,
    pub office: Option<OfficeApi>,
    pub screen: String,
    pub community: String,
    /// The chain's head: a change means a record to send.
    pub head: watch::Receiver<Option<PlayRecord>>,
    pub sent: watch::Sender<PlaysSent>,
    pub cancel: CancellationToken,
}

/// The request body: the 1.0 shape with 1.1's records.
#[derive(serde::Serialize)]
struct Body<'a> {
    screen: &'a str,
    community: &'a str,
    plays: &'a [PlayRecord],
}

#[derive(Deserialize)]
struct Answer {
    next_seq: u64,
}

impl PlaysSyncTask {
    pub async fn run(self) -> anyhow::Result<()> {
        let PlaysSyncTask {
            store,
            office,
            screen,
            community,
            mut head,
            sent,
            cancel,
        } = self;
        let log = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || PlayLog::open(&store)).await??
        };
        let log = Arc::new(Mutex::new(log));
        let blocking = |f: LogWork| {
            let log = log.clone();
            async move {
                tokio::task::spawn_blocking(move || f(&mut log.lock().expect("play log lock")))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r.map_err(anyhow::Error::from))
            }
        };
        let acknowledged = blocking(Box::new(|log| log.acknowledged())).await?;
        sent.send_modify(|s| s.acknowledged = acknowledged);
        let Some(office) = office else {
            tracing::info!("no [office] in the configuration: the play chain stays on the screen");
            cancel.cancelled().await;
            return Ok(());
        };
        let client = http_client(&office)?;
        let url = format!("{}/api/v1/plays", office.url.trim_end_matches('/'));
        let mut from = acknowledged + 1;
        let (mut attempt, mut refusals) = (0u32, 0u32);
        let mut token_problem: Option<String> = None;
        loop {
            let records = {
                let log = log.clone();
                tokio::task::spawn_blocking(move || {
                    log.lock()
                        .expect("play log lock")
                        .records(from, MAX_PLAYS_PER_REQUEST)
                })
                .await?
            };
            let records = match records {
                Ok(records) => records,
                Err(e) => {
                    tracing::error!("cannot read the play chain: {e}");
                    Vec::new()
                }
            };
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                head.borrow_and_update();
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    r = head.changed() => if r.is_err() { cancel.cancelled().await; return Ok(()) },
                    _ = tokio::time::sleep(IDLE_CHECK) => {}
                }
                continue;
            };
            let (first, last) = (first.seq, last.seq);
            let token = office.token_file.as_deref().map(read_token).transpose();
            let reply = match token {
                Ok(token) => {
                    if token_problem.take().is_some() {
                        tracing::info!("the token file is readable again");
                    }
                    send(
                        &client,
                        &url,
                        token.as_deref(),
                        &Body {
                            screen: &screen,
                            community: &community,
                            plays: &records,
                        },
                    )
                    .await
                }
                Err(message) => Reply::TokenUnreadable(message),
            };
            let wait = match action(reply, first, last) {
                Action::Acknowledge(through) => {
                    attempt = 0;
                    refusals = 0;
                    if let Err(e) = blocking(Box::new(move |log| {
                        log.set_acknowledged(through).map(|()| through)
                    }))
                    .await
                    {
                        // Sent again next time: the office counts it stored.
                        tracing::error!("cannot record what the office holds: {e:#}");
                    }
                    from = through + 1;
                    sent.send_modify(|s| {
                        *s = PlaysSent {
                            acknowledged: through,
                            refused: None,
                            unauthorized: false,
                        }
                    });
                    None
                }
                Action::ResendFrom(next) => {
                    tracing::warn!(
                        "the office lacks play records from seq {next} on: sending them again"
                    );
                    attempt = 0;
                    let through = next - 1;
                    if let Err(e) = blocking(Box::new(move |log| {
                        log.set_acknowledged(through).map(|()| through)
                    }))
                    .await
                    {
                        tracing::error!("cannot record what the office holds: {e:#}");
                    }
                    from = next;
                    sent.send_modify(|s| {
                        s.acknowledged = through;
                        s.refused = None;
                    });
                    None
                }
                Action::Refused(reason) => {
                    refusals = refusals.saturating_add(1);
                    let wait =
                        REFUSED_FLOOR + REFUSED_RETRY.delay(refusals, &mut rand::thread_rng());
                    tracing::error!(
                        "the office refuses the play chain from seq {first}: {reason}; the records \
                         stay on the screen, asked again in {} s",
                        wait.as_secs()
                    );
                    sent.send_modify(|s| s.refused = Some(reason));
                    Some(wait)
                }
                Action::Unauthorized(message) => {
                    tracing::error!(
                        "the office refused this screen's token ({message}); the play chain waits \
                         until the token is fixed"
                    );
                    sent.send_modify(|s| s.unauthorized = true);
                    Some(UNAUTHORIZED_WAIT)
                }
                Action::Retry(after) => {
                    attempt = attempt.saturating_add(1);
                    let backoff = RETRY.delay(attempt, &mut rand::thread_rng());
                    Some(after.map_or(backoff, |a| a.min(MAX_RETRY_AFTER).max(backoff)))
                }
                Action::TokenUnreadable(message) => {
                    if token_problem.as_deref() != Some(message.as_str()) {
                        tracing::error!("{message}; the play chain waits on the screen");
                        token_problem = Some(message);
                    }
                    attempt = attempt.saturating_add(1);
                    Some(RETRY.delay(attempt, &mut rand::thread_rng()))
                }
            };
            if let Some(wait) = wait {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// One request with a batch.
async fn send(client: &reqwest::Client, url: &str, token: Option<&str>, body: &Body<'_>) -> Reply {
    let mut request = client.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Reply::Network(e.to_string()),
    };
    let code = response.status().as_u16();
    let retry_after = retry_after(&response);
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return Reply::Network(e.to_string()),
    };
    match code {
        200 | 409 => match serde_json::from_slice::<Answer>(&bytes) {
            Ok(a) if code == 200 => Reply::Stored {
                next_seq: a.next_seq,
            },
            Ok(a) => Reply::Gap {
                next_seq: a.next_seq,
            },
            // An office of protocol 1.0 answers `{"stored": N}` alone: it
            // does not keep chains, so nothing is acknowledged.
            Err(e) => Reply::Status {
                code: 502,
                retry_after,
                message: format!("unreadable answer: {e}"),
            },
        },
        _ => Reply::Status {
            code,
            retry_after,
            message: error_message(&bytes, code),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Reply {
        Reply::Status {
            code,
            retry_after: None,
            message: format!("m{code}"),
        }
    }

    #[test]
    fn answers_decide_the_next_step() {
        assert_eq!(
            action(Reply::Stored { next_seq: 11 }, 1, 10),
            Action::Acknowledge(10)
        );
        // The office said it holds more than was sent: only what was sent
        // counts.
        assert_eq!(
            action(Reply::Stored { next_seq: 900 }, 1, 10),
            Action::Acknowledge(10)
        );
        assert_eq!(
            action(Reply::Stored { next_seq: 6 }, 1, 10),
            Action::Acknowledge(5)
        );
        assert_eq!(
            action(Reply::Gap { next_seq: 4 }, 20, 30),
            Action::ResendFrom(4)
        );
        // A 409 that would send the same records again: wait, not loop.
        assert_eq!(
            action(Reply::Gap { next_seq: 20 }, 20, 30),
            Action::Retry(None)
        );
        assert_eq!(
            action(Reply::Gap { next_seq: 0 }, 20, 30),
            Action::Retry(None)
        );
        assert_eq!(action(status(400), 1, 10), Action::Refused("m400".into()));
        assert_eq!(action(status(413), 1, 10), Action::Refused("m413".into()));
        assert_eq!(
            action(status(401), 1, 10),
            Action::Unauthorized("m401".into())
        );
        assert_eq!(action(status(503), 1, 10), Action::Retry(None));
        let busy = Reply::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(7)),
            message: String::new(),
        };
        assert_eq!(
            action(busy, 1, 10),
            Action::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            action(Reply::Network("reset".into()), 1, 10),
            Action::Retry(None)
        );
        assert_eq!(
            action(Reply::TokenUnreadable("no file".into()), 1, 10),
            Action::TokenUnreadable("no file".into())
        );
    }
}
