//! One lifecycle for every way a screen runs (headless, in a window, as PNG
//! frames): start the daemon's tasks, tell systemd, run until a signal, a
//! closed window or a failed task, then stop everything within a deadline.
//!
//! - [`Tasks`] spawns every task of the daemon around one cancellation
//!   token. A task that panics, returns an error, or simply ends before
//!   shutdown is a *failure*: it is logged with its cause and [`run`]
//!   returns an error, so the binary exits non-zero and systemd restarts it.
//!   A half-alive screen (rotating, say, while nothing is taken in any more)
//!   is never an option.
//! - [`run`] is the only place that talks to systemd: `READY=1`,
//!   `STOPPING=1`, `STATUS=` lines saying what the screen does, and, when the
//!   unit sets `WatchdogSec=`, `WATCHDOG=1` while the watched thread's
//!   heartbeat is fresh (the UI thread in a window, the rotation headless).
//!
//! What runs is in [`crate::daemon`]; how it is drawn is in [`crate::ui`].

use std::future::Future;
use std::panic::AssertUnwindSafe;

use anyhow::anyhow;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::{Daemon, UiLink};

/// A task that stopped when it should not have, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub task: &'static str,
    pub cause: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} task failed: {}", self.task, self.cause)
    }
}

/// Spawns tasks; each failure goes to the [`Failures`] made with it.
#[derive(Clone)]
pub struct Tasks {
    cancel: CancellationToken,
    failed: mpsc::UnboundedSender<Failure>,
}

/// Where failed tasks are reported.
pub struct Failures(mpsc::UnboundedReceiver<Failure>);

impl Failures {
    /// The next failure, once there is one. Never resolves if no task fails.
    pub async fn next(&mut self) -> Failure {
        match self.0.recv().await {
            Some(failure) => failure,
            None => std::future::pending().await,
        }
    }
}

impl Tasks {
    /// Tasks that stop when `cancel` fires; ending before that is a failure.
    pub fn new(cancel: CancellationToken) -> (Self, Failures) {
        let (failed, failures) = mpsc::unbounded_channel();
        (Self { cancel, failed }, Failures(failures))
    }

    /// Spawns `task` on the runtime. The handle lets shutdown wait for it in
    /// the order it needs.
    pub fn spawn(
        &self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> JoinHandle<()> {
        let report = self.reporter(name);
        tokio::spawn(async move {
            let outcome = AssertUnwindSafe(task).catch_unwind().await;
            report(outcome);
        })
    }

    /// Runs `work` on a thread of its own (it blocks: the store's owner).
    pub fn spawn_thread(
        &self,
        name: &'static str,
        work: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let report = self.reporter(name);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
                report(outcome);
            })
    }

    fn reporter(
        &self,
        name: &'static str,
    ) -> impl FnOnce(std::thread::Result<anyhow::Result<()>>) + Send + 'static {
        let cancel = self.cancel.clone();
        let failed = self.failed.clone();
        move |outcome| {
            let cause = match outcome {
                Ok(Ok(())) if cancel.is_cancelled() => return,
                Ok(Ok(())) => "it ended before shutdown".to_owned(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(panic) => format!("it panicked: {}", panic_message(panic.as_ref())),
            };
            let failure = Failure { task: name, cause };
            tracing::error!("{failure}");
            let _ = failed.send(failure);
        }
    }

    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// A UI that runs on the calling (main) thread until the window closes or
/// the token fires.
pub type Ui<'a> = Box<dyn FnOnce(UiLink, CancellationToken) -> anyhow::Result<()> + 'a>;

/// Runs a screen: starts the daemon on `runtime`, tells systemd it is ready,
/// runs `ui` on this thread (or, headless, waits), and stops when `shutdown`
/// resolves, the UI returns or a task fails. Returns the failure, if any.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ui: Option<Ui<'_>>,
) -> anyhow::Result<()> {
    let (mut daemon, link) = runtime.block_on(Daemon::start_paced(config, ui.is_some()))?;
    notify(sd_notify::NotifyState::Ready);
    let watched = match ui {
        Some(_) => link.ui_heartbeat.clone(),
        None => daemon.heartbeat.clone(),
    };
    let pinger = runtime.spawn(systemd_status(
        watched,
        daemon.catalog.clone(),
        daemon.connected.clone(),
        daemon.display.clone(),
        daemon.showing.clone(),
    ));
    let stop = CancellationToken::new();
    let watcher = {
        let stop = stop.clone();
        let mut failures = daemon
            .failures
            .take()
            .expect("a new daemon has its failures");
        runtime.spawn(async move {
            let failure = tokio::select! {
                () = shutdown => None,
                () = stop.cancelled() => None,
                failure = failures.next() => Some(failure),
            };
            stop.cancel();
            failure
        })
    };
    let ui_result = match ui {
        Some(ui) => ui(link, stop.clone()),
        None => {
            runtime.block_on(stop.cancelled());
            Ok(())
        }
    };
    stop.cancel();
    pinger.abort();
    tracing::info!("shutting down");
    notify(sd_notify::NotifyState::Stopping);
    let failure = runtime.block_on(watcher).unwrap_or(None);
    runtime.block_on(daemon.shutdown());
    match failure {
        Some(failure) => Err(anyhow!("{failure}")),
        None => ui_result,
    }
}

fn notify(state: sd_notify::NotifyState<'_>) {
    let _ = sd_notify::notify(false, &[state]);
}

/// What `systemctl status` shows of the screen, in one line.
fn status_line(
    catalog: &crate::store::Catalog,
    connected: bool,
    display: crate::schedule::Display,
    showing: Option<&crate::schedule::Key>,
) -> String {
    let mut parts = vec![
        if connected {
            "online"
        } else {
            "broker unreachable"
        }
        .to_owned(),
        format!("{} notices held", catalog.items.len()),
        format!("{} missing", catalog.missing().len()),
    ];
    match (display, showing) {
        (crate::schedule::Display::Quiet, _) => parts.push("quiet hours: dark".into()),
        (_, Some(k)) => parts.push(format!("showing {} v{}", k.id, k.version)),
        (_, None) => parts.push("nothing to show".into()),
    }
    if let Some(e) = &catalog.store_error {
        parts.push(format!("store failing: {e}"));
    }
    parts.join(" · ")
}

/// Sends `STATUS=` when what the screen does changes, and `WATCHDOG=1`
/// (when systemd asks for it) while `watched` beats.
async fn systemd_status(
    watched: crate::watchdog::Heartbeat,
    catalog: tokio::sync::watch::Receiver<crate::store::Catalog>,
    connected: tokio::sync::watch::Receiver<bool>,
    display: tokio::sync::watch::Receiver<crate::schedule::Display>,
    showing: tokio::sync::watch::Receiver<Option<crate::schedule::Key>>,
) {
    let mut usec = 0u64;
    let timeout = sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| std::time::Duration::from_micros(usec));
    let period = timeout.map_or(std::time::Duration::from_secs(2), |t| {
        crate::watchdog::ping_interval(t).min(std::time::Duration::from_secs(2))
    });
    let mut last_line = String::new();
    let mut stale_logged = false;
    loop {
        let line = status_line(
            &catalog.borrow(),
            *connected.borrow(),
            *display.borrow(),
            showing.borrow().as_ref(),
        );
        if line != last_line {
            notify(sd_notify::NotifyState::Status(&line));
            last_line = line;
        }
        if let Some(timeout) = timeout {
            let age = watched.age(std::time::Instant::now());
            if crate::watchdog::should_ping(age, timeout) {
                notify(sd_notify::NotifyState::Watchdog);
                stale_logged = false;
            } else if !stale_logged {
                stale_logged = true;
                tracing::error!(
                    "no heartbeat for {:.1} s: the watchdog is no longer pinged",
                    age.as_secs_f64()
                );
            }
        }
        tokio::time::sleep(period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_errs_or_ends_early_is_a_failure() {
        let cancel = CancellationToken::new();
        let (tasks, mut failures) = Tasks::new(cancel.clone());
        tasks.spawn("panicky", async { panic!("index out of range") });
        let failure = failures.next().await;
        assert_eq!(failure.task, "panicky");
        assert!(failure.cause.contains("index out of range"), "{failure}");

        tasks.spawn("erring", async { Err(anyhow!("disk gone")) });
        assert_eq!(failures.next().await.cause, "disk gone");

        tasks.spawn("quitter", async { Ok(()) });
        assert!(failures.next().await.cause.contains("before shutdown"));

        let thread = tasks
            .spawn_thread("thread", || panic!("{}", String::from("owned message")))
            .unwrap();
        let _ = thread.join();
        assert!(failures.next().await.cause.contains("owned message"));
    }

    #[tokio::test]
    async fn a_task_that_ends_after_shutdown_began_is_not_a_failure() {
        let cancel = CancellationToken::new();
        let (tasks, mut failures) = Tasks::new(cancel.clone());
        let watched = cancel.clone();
        let handle = tasks.spawn("polite", async move {
            watched.cancelled().await;
            Ok(())
        });
        cancel.cancel();
        handle.await.unwrap();
        let none = tokio::time::timeout(std::time::Duration::from_millis(50), failures.next());
        assert!(none.await.is_err(), "no failure reported");
    }
}
