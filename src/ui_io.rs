//! The UI's I/O, done on the daemon's side so that the UI thread only draws.
//! [`UiIoTask`] owns what the screen's UI would otherwise open on its own
//! thread: the kiosk's writable [`Outbox`] (its one writer in the screen's
//! UI), a read-only connection to the store for notice bodies and reply
//! lookups, and the media cache whose images it decodes. The UI reaches it
//! through a [`UiIo`] handle and is answered with plain data (no slint
//! types), which it carries onto its own thread with `invoke_from_event_loop`.
//!
//! A submission is committed (`synchronous=FULL`), the sync task is woken,
//! and only then is the receipt answered: a receipt a resident photographed
//! always stands for a row that survives a crash.
//!
//! It must not use slint, decide anything about what is shown, or block the
//! async threads: SQLite and decoding run on the blocking pool, one request
//! at a time, so requests are answered in the order they were made.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::media::{DecodedImage, MediaCache};
use crate::protocol::Notice;
use crate::protocol::feedback::FeedbackItem;
use crate::protocol::notice::Block;
use crate::schedule::Key;
use crate::store::outbox::Outbox;
pub use crate::store::outbox::Submission;
use crate::store::{Store, StoreError};

/// Why a request of the UI was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum UiIoError {
    #[error("the store does not hold {0} v{1}")]
    NotHeld(String, u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored notice cannot be read: {0:#}")]
    Notice(anyhow::Error),
    /// The task has stopped (the screen is shutting down).
    #[error("the UI's I/O task has stopped")]
    Stopped,
}

/// A notice body ready to be laid out: plain data, sent to the UI thread.
#[derive(Debug)]
pub struct LoadedNotice {
    pub key: Key,
    pub notice: Notice,
    /// The images of the notice that are in the cache, decoded to fit the
    /// screen, by media id.
    pub images: Vec<(String, DecodedImage)>,
    /// Some image the notice names is not in the cache yet.
    pub waiting_for_media: bool,
}

/// How an answer gets back: the UI passes a closure that posts it to its
/// own thread.
type Reply<T> = Box<dyn FnOnce(Result<T, UiIoError>) + Send>;

enum Request {
    Load {
        key: Key,
        fit: (u32, u32),
        reply: Reply<LoadedNotice>,
    },
    Submit {
        submission: Submission,
        reply: Reply<FeedbackItem>,
    },
    FindReply {
        receipt: String,
        reply: Reply<Option<Key>>,
    },
}

impl Request {
    fn refuse(self, error: UiIoError) {
        match self {
            Request::Load { reply, .. } => reply(Err(error)),
            Request::Submit { reply, .. } => reply(Err(error)),
            Request::FindReply { reply, .. } => reply(Err(error)),
        }
    }
}

/// The UI's end: every call returns at once, and `reply` runs later on a
/// thread of the daemon's (never the caller's).
#[derive(Clone)]
pub struct UiIo {
    requests: mpsc::UnboundedSender<Request>,
}

impl UiIo {
    /// Reads notice `key` and decodes its cached images to fit `fit`
    /// (width, height in pixels).
    pub fn load(
        &self,
        key: Key,
        fit: (u32, u32),
        reply: impl FnOnce(Result<LoadedNotice, UiIoError>) + Send + 'static,
    ) {
        self.send(Request::Load {
            key,
            fit,
            reply: Box::new(reply),
        });
    }

    /// Commits `submission` to the outbox; `reply` gets the item, receipt
    /// included, once it is committed.
    pub fn submit(
        &self,
        submission: Submission,
        reply: impl FnOnce(Result<FeedbackItem, UiIoError>) + Send + 'static,
    ) {
        self.send(Request::Submit {
            submission,
            reply: Box::new(reply),
        });
    }

    /// Finds the reply notice that answers `receipt`, if the office has
    /// published one.
    pub fn find_reply(
        &self,
        receipt: String,
        reply: impl FnOnce(Result<Option<Key>, UiIoError>) + Send + 'static,
    ) {
        self.send(Request::FindReply {
            receipt,
            reply: Box::new(reply),
        });
    }

    fn send(&self, request: Request) {
        // The channel is unbounded so that the UI never waits; residents'
        // taps bound what is in it.
        if let Err(mpsc::error::SendError(request)) = self.requests.send(request) {
            request.refuse(UiIoError::Stopped);
        }
    }
}

/// The task that serves a [`UiIo`].
pub struct UiIoTask {
    owner: Owner,
    requests: mpsc::UnboundedReceiver<Request>,
    cancel: CancellationToken,
}

impl UiIoTask {
    /// A task for the store at `store` and the media cache `media` (none:
    /// images are never shown), waking `feedback_wake` after each commit.
    pub fn new(
        store: PathBuf,
        media: Option<MediaCache>,
        feedback_wake: Arc<Notify>,
        cancel: CancellationToken,
    ) -> (UiIoTask, UiIo) {
        let (tx, rx) = mpsc::unbounded_channel();
        let owner = Owner {
            path: store,
            media,
            wake: feedback_wake,
            reader: None,
            outbox: None,
        };
        let task = UiIoTask {
            owner,
            requests: rx,
            cancel,
        };
        (task, UiIo { requests: tx })
    }

    /// Serves requests until shutdown.
    pub async fn run(self) -> anyhow::Result<()> {
        let UiIoTask {
            mut owner,
            mut requests,
            cancel,
        } = self;
        loop {
            let request = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                request = requests.recv() => request,
            };
            let Some(request) = request else {
                // No UI (a headless screen drops its end): nothing to serve,
                // but ending before shutdown would read as a failure.
                cancel.cancelled().await;
                return Ok(());
            };
            // The connections travel with the work, so that one blocking
            // thread at a time holds them: there is one writer, and
            // answers keep the order of the requests.
            owner = tokio::task::spawn_blocking(move || {
                owner.serve(request);
                owner
            })
            .await
            .context("serving the UI's request")?;
        }
    }
}

/// The connections and the cache, opened on first use and kept: a store that
/// cannot be opened now is tried again at the next request.
struct Owner {
    path: PathBuf,
    media: Option<MediaCache>,
    wake: Arc<Notify>,
    reader: Option<Store>,
    outbox: Option<Outbox>,
}

impl Owner {
    fn serve(&mut self, request: Request) {
        match request {
            Request::Load { key, fit, reply } => {
                let loaded = self.load(key, fit);
                reply(loaded);
            }
            Request::Submit { submission, reply } => {
                let committed = self.submit(submission);
                reply(committed);
            }
            Request::FindReply { receipt, reply } => {
                let found = self
                    .reader()
                    .and_then(|store| Ok(store.reply_for(&receipt)?));
                if let Err(e) = &found {
                    tracing::warn!("reply lookup failed: {e}");
                }
                reply(found);
            }
        }
    }

    fn reader(&mut self) -> Result<&Store, UiIoError> {
        if self.reader.is_none() {
            self.reader = Some(Store::open_read_only(&self.path)?);
        }
        Ok(self.reader.as_ref().expect("opened above"))
    }

    fn load(&mut self, key: Key, (width, height): (u32, u32)) -> Result<LoadedNotice, UiIoError> {
        let envelope = self
            .reader()?
            .envelope(&key.scope, &key.id, key.version)?
            .ok_or_else(|| UiIoError::NotHeld(key.id.clone(), key.version))?;
        let mut notice = crate::protocol::Notice::from_envelope(&envelope)
            .map_err(|e| UiIoError::Notice(anyhow::Error::msg(e)))?;
        notice.review_verified = self.reader()?.reviewed(&key.scope, &key.id, key.version)?;
        let (images, waiting_for_media) = match &self.media {
            Some(cache) => decode_images(&notice, cache, width, height),
            None => (Vec::new(), false),
        };
        Ok(LoadedNotice {
            key,
            notice,
            images,
            waiting_for_media,
        })
    }

    fn submit(&mut self, submission: Submission) -> Result<FeedbackItem, UiIoError> {
        if self.outbox.is_none() {
            self.outbox = Some(Outbox::open(&self.path).inspect_err(|e| {
                tracing::error!("feedback not committed: the outbox cannot be opened: {e}")
            })?);
        }
        let outbox = self.outbox.as_mut().expect("opened above");
        match outbox.submit(submission, time::OffsetDateTime::now_utc()) {
            Ok(item) => {
                // The number stays in the row: never in the log.
                tracing::info!("feedback {} committed ({})", item.receipt, item.kind);
                self.wake.notify_one();
                Ok(item)
            }
            Err(e) => {
                tracing::error!("feedback not committed: {e}");
                Err(e.into())
            }
        }
    }
}

/// The images of `notice` that are in `cache`, decoded to fit `max_width`×
/// `max_height`; and whether some image is still to be fetched. An image that
/// fails to decode is left out (its caption stands in) and logged. CPU work:
/// call it from a blocking thread.
pub fn decode_images(
    notice: &Notice,
    cache: &MediaCache,
    max_width: u32,
    max_height: u32,
) -> (Vec<(String, DecodedImage)>, bool) {
    let mut images = Vec::new();
    let mut waiting = false;
    for block in &notice.body {
        let Block::Image { media, .. } = block else {
            continue;
        };
        let Some(entry) = notice.media.iter().find(|m| &m.id == media) else {
            continue;
        };
        if !cache.contains(entry) {
            waiting = true;
            continue;
        }
        match cache.load(entry, max_width, max_height) {
            Ok(image) => images.push((media.clone(), image)),
            Err(e) => tracing::warn!("{}: image {media} not shown: {e}", notice.id),
        }
    }
    (images, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request to a task that has stopped is answered, not lost: the UI
    /// would otherwise wait for a receipt for ever.
    #[test]
    fn a_stopped_task_answers_every_request_with_an_error() {
        let (task, io) = UiIoTask::new(
            PathBuf::from("/nonexistent/store.db"),
            None,
            Arc::new(Notify::new()),
            CancellationToken::new(),
        );
        drop(task);
        let (tx, rx) = std::sync::mpsc::channel();
        io.submit(Submission::default(), move |r| {
            tx.send(matches!(r, Err(UiIoError::Stopped))).unwrap()
        });
        assert!(rx.recv().unwrap());
    }

    /// The store opens at the first request, and a failure is an answer.
    #[tokio::test]
    async fn a_store_that_cannot_be_opened_is_an_error_answered() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let (task, io) = UiIoTask::new(
            dir.path().join("missing").join("store.db"),
            None,
            Arc::new(Notify::new()),
            cancel.clone(),
        );
        let running = tokio::spawn(task.run());
        let (tx, rx) = tokio::sync::oneshot::channel();
        io.load(
            Key {
                scope: "c".into(),
                id: "n".into(),
                version: 1,
            },
            (1920, 1080),
            move |r| {
                let _ = tx.send(r.map(|_| ()));
            },
        );
        assert!(matches!(rx.await.unwrap(), Err(UiIoError::Store(_))));
        let (tx, rx) = tokio::sync::oneshot::channel();
        io.submit(Submission::default(), move |r| {
            let _ = tx.send(r.map(|_| ()));
        });
        assert!(matches!(rx.await.unwrap(), Err(UiIoError::Store(_))));
        cancel.cancel();
        running.await.unwrap().unwrap();
    }
}
