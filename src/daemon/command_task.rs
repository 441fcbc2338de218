//! The command task: runs what the ingest worker took (section 5): a
//! `screenshot` of the frame residents see, uploaded to the office; a
//! `resync` of the notice subscriptions; `identify`, the screen's id and
//! network state for 30 s. Each outcome goes into the status
//! (`last_command`). It never draws itself: the UI thread takes the
//! snapshot, or, headless, a render thread of the task's own.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::OfficeApi;
use crate::protocol::command::{Action, Command};
use crate::schedule::{self, Key};
use crate::status::LastCommand;

/// How long `identify` shows the screen's id.
pub const IDENTIFY_FOR: Duration = Duration::from_secs(30);
/// Upload attempts of one screenshot.
const UPLOAD_ATTEMPTS: u32 = 4;

/// A request for the frame on screen now, as PNG bytes.
pub type ShotRequest = oneshot::Sender<Result<Vec<u8>, String>>;

/// Who draws a screenshot.
pub(super) enum Shooter {
    /// The UI thread, which takes the window's own frame.
    Ui(mpsc::UnboundedSender<ShotRequest>),
    /// No UI: the page the rotation shows, drawn headless.
    Headless(Box<HeadlessShooter>),
}

/// What a headless screenshot draws from.
pub(super) struct HeadlessShooter {
    pub(super) config: crate::config::Config,
    pub(super) showing: watch::Receiver<Option<Key>>,
    pub(super) display: watch::Receiver<schedule::Display>,
    /// The render thread, started at the first screenshot: Slint keeps one
    /// platform per process, on one thread.
    pub(super) thread: Option<std::sync::mpsc::Sender<(Option<Key>, bool, ShotRequest)>>,
}

pub(super) struct CommandTask {
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) resync: mpsc::UnboundedSender<()>,
    pub(super) identify: watch::Sender<bool>,
    pub(super) last: watch::Sender<Option<LastCommand>>,
    pub(super) shooter: Shooter,
    pub(super) office: Option<OfficeApi>,
    pub(super) cancel: CancellationToken,
}

impl CommandTask {
    pub(super) async fn run(mut self) -> anyhow::Result<()> {
        let mut identify_until: Option<tokio::time::Instant> = None;
        loop {
            let command = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                _ = sleep_until(identify_until) => {
                    identify_until = None;
                    self.identify.send_replace(false);
                    continue;
                }
                command = self.commands.recv() => match command {
                    Some(c) => c,
                    None => return Ok(()),
                },
            };
            let result = match command.action {
                Action::Resync => match self.resync.send(()) {
                    Ok(()) => Ok(()),
                    Err(_) => Err("the MQTT session is gone".to_owned()),
                },
                Action::Identify => {
                    identify_until = Some(tokio::time::Instant::now() + IDENTIFY_FOR);
                    self.identify.send_replace(true);
                    Ok(())
                }
                Action::Screenshot => self.screenshot(&command.id).await,
            };
            let result = match result {
                Ok(()) => "done".to_owned(),
                Err(e) => format!("failed: {e}"),
            };
            tracing::info!(
                "command {} ({}): {result}",
                command.id,
                command.action.as_str()
            );
            self.last.send_replace(Some(LastCommand {
                id: command.id,
                action: command.action.as_str().to_owned(),
                result,
                at: OffsetDateTime::now_utc(),
            }));
        }
    }

    async fn screenshot(&mut self, id: &str) -> Result<(), String> {
        let Some(office) = self.office.clone() else {
            return Err("no [office] to upload to".into());
        };
        let (tx, rx) = oneshot::channel();
        match &mut self.shooter {
            Shooter::Ui(ui) => ui.send(tx).map_err(|_| "the UI is gone".to_owned())?,
            Shooter::Headless(h) => h.request(tx)?,
        }
        let png = rx.await.map_err(|_| "no frame came".to_owned())??;
        upload(&office, id, png).await
    }
}

impl HeadlessShooter {
    fn request(&mut self, reply: ShotRequest) -> Result<(), String> {
        let key = self.showing.borrow().clone();
        let dark = *self.display.borrow() == schedule::Display::Quiet;
        if self.thread.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<(Option<Key>, bool, ShotRequest)>();
            let config = self.config.clone();
            std::thread::Builder::new()
                .name("screenshots".into())
                .spawn(move || {
                    for (key, dark, reply) in rx {
                        let _ = reply.send(draw(&config, key, dark).map_err(|e| format!("{e:#}")));
                    }
                })
                .map_err(|e| format!("cannot start the render thread: {e}"))?;
            self.thread = Some(tx);
        }
        self.thread
            .as_ref()
            .expect("started above")
            .send((key, dark, reply))
            .map_err(|_| "the render thread is gone".to_owned())
    }
}

/// The frame a headless screen would show: black while dark or with nothing
/// to show, else the first page of the notice the rotation shows.
fn draw(config: &crate::config::Config, key: Option<Key>, dark: bool) -> anyhow::Result<Vec<u8>> {
    let (width, height) = (config.display.width, config.display.height);
    let black = || {
        let rgba: Vec<u8> = [0, 0, 0, 255].repeat((width * height) as usize);
        crate::ui::png(&rgba, width, height)
    };
    let key = match key {
        Some(key) if !dark => key,
        _ => return black(),
    };
    let store = crate::store::Store::open_read_only(&config.store.path)?;
    let Some(envelope) = store.envelope(&key.scope, &key.id, key.version)? else {
        return black();
    };
    let mut notice =
        crate::protocol::Notice::from_envelope(&envelope).map_err(anyhow::Error::msg)?;
    notice.review_verified = store.reviewed(&key.scope, &key.id, key.version)?;
    let cache = crate::media::MediaCache::reader(&config.store.media_dir);
    let images = crate::ui::load_images(&notice, &cache, width, height).0;
    let (page, _) = crate::ui::render_notice_page(
        &notice,
        &images,
        (width, height),
        OffsetDateTime::now_utc(),
        1,
    )?;
    crate::ui::png(&page.rgba, width, height)
}

/// `PUT /api/v1/screenshots/{id}` (section 7), retried on a network error
/// or a busy office.
async fn upload(office: &OfficeApi, id: &str, png: Vec<u8>) -> Result<(), String> {
    let client = crate::sync::http_client(office).map_err(|e| format!("{e:#}"))?;
    let url = format!(
        "{}/api/v1/screenshots/{id}",
        office.url.trim_end_matches('/')
    );
    let retry = Backoff {
        first: Duration::from_millis(500),
        cap: Duration::from_secs(5),
    };
    let mut last = String::new();
    for attempt in 1..=UPLOAD_ATTEMPTS {
        let token = match &office.token_file {
            Some(path) => Some(crate::sync::read_token(path)?),
            None => None,
        };
        let mut request = client
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "image/png")
            .body(png.clone());
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                return Err(format!("the office answered {}", r.status()));
            }
            Ok(r) => last = format!("the office answered {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        let wait = retry.delay(attempt, &mut rand::thread_rng());
        tokio::time::sleep(wait).await;
    }
    Err(last)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
