//! gongkai (公开, "disclosure"): the software of community disclosure screens.
//!
//! Map of the crate, from the wire inwards:
//! - [`protocol`]: pure. Signed DSSE envelopes, notice and manifest schemas,
//!   topics, the screen's verdict on a message, personal-data scan.
//! - [`schedule`]: pure. Which notices are active at `now`, rotation order,
//!   when the next window opens or closes.
//! - [`store`]: the only user of SQLite. The screen's durable cache and archive.
//! - [`config`]: the screen's TOML configuration, every problem reported at once.
//! - [`mqtt`]: the only owner of the rumqttc event loop; connection, backoff,
//!   subscriptions, manual acks after commit, manifest catch-up.
//! - [`daemon`]: the screen's tasks (ingest, MQTT, status, rotation, media,
//!   feedback sync), wired together around one cancellation token.
//! - [`app`]: the one lifecycle: start, tell systemd, run until a signal, a
//!   closed window or a failed task, stop within a deadline.
//! - [`backlight`]: the panel's backlight, off in quiet hours.
//! - [`backoff`]: exponential backoff with full jitter, for every retry loop.
//! - [`sync`]: residents' feedback from the screen's outbox to the office.
//! - [`office`]: the office's side, behind the `gongkai` CLI (and its
//!   intake server).
//! - [`demo`]: an embedded broker, demo keys and signed samples.
//! - [`files`]: the one atomic file write.
//! - [`media`]: images of notices, fetched, checked against their signed hash,
//!   cached by hash, decoded under limits.
//! - [`tls`]: the one rustls crypto provider and client configurations.
//! - [`watchdog`]: heartbeats that the systemd watchdog pings depend on.
//! - [`workdays`]: pure. Working days (工作日) of a holiday calendar, for
//!   the office's reply deadlines.
//! - [`ui`]: the only user of slint; the screen's pages, rotation and kiosk
//!   views in a window or headless, beside the daemon's runtime.
//! - [`ui_io`]: the UI's I/O on the daemon's side: notice bodies read and
//!   images decoded for it, the kiosk's feedback committed to the outbox.

pub mod app;
pub mod backlight;
pub mod backoff;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod files;
pub mod media;
pub mod mqtt;
pub mod office;
pub mod preview;
pub mod protocol;
pub mod samples;
pub mod schedule;
pub mod status;
pub mod store;
pub mod sync;
pub mod tls;
pub mod ui;
pub mod ui_io;
pub mod watchdog;
pub mod workdays;

/// Resolves on SIGTERM or SIGINT: how both programs are asked to stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
