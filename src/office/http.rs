//! The intake server's connections: accepting them, bounding how many and
//! for how long, and ending them all at shutdown within a deadline.
//!
//! The intake listens on a network that screens share with anyone who can
//! reach it, so no client may hold the server's memory or a connection
//! slot for long without a valid token:
//!
//! - at most `max_connections` connections are served at once; the next
//!   waits in the kernel's accept queue until one ends, which every
//!   timeout below guarantees soon;
//! - over HTTPS, the TLS handshake must end within `header_timeout` too,
//!   so a client that connects and sends nothing, or trickles its
//!   ClientHello, holds its slot no longer than a slow plain client;
//! - a request's headers must arrive within `header_timeout`, counted from
//!   the first poll, so a client trickling header bytes (slowloris) is cut
//!   off. Hyper starts the same timer when a kept-alive connection waits for
//!   its next request, which makes it the idle timeout too;
//! - headers are read into at most `HEADER_BUFFER` bytes a connection;
//! - bodies are the handlers' business (`office::body`): nothing is read
//!   before the token is checked, and a body has `body_timeout` in all.
//!
//! On shutdown the listener closes, idle connections close at once and
//! requests in flight get `SHUTDOWN_GRACE` to finish; whatever is left is
//! dropped, so that SIGTERM ends the server whatever clients do.
//!
//! This module decides nothing about requests: it hands each to the router.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long requests in flight may still take once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bytes of a request's head buffered at most: headers a screen sends are
/// a few hundred bytes, and hyper's default (about 400 KiB) would let 256
/// tokenless connections hold 100 MiB until their header timeout.
const HEADER_BUFFER: usize = 64 * 1024;

/// office.toml's `[limits]`: every field may be left out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Seconds a request's headers may take to arrive, and a kept-alive
    /// connection may stay idle.
    pub header_timeout_seconds: u64,
    /// Seconds a request's body may take to arrive, in all.
    pub body_timeout_seconds: u64,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout_seconds: 10,
            body_timeout_seconds: 30,
            max_connections: 256,
        }
    }
}

impl Limits {
    /// Every problem at once: a zero would turn a limit off or make the
    /// server refuse everything, neither of which anyone means.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.header_timeout_seconds == 0 {
            problems.push("limits.header_timeout_seconds must be at least 1".to_owned());
        }
        if self.body_timeout_seconds == 0 {
            problems.push("limits.body_timeout_seconds must be at least 1".to_owned());
        }
        if self.max_connections == 0 {
            problems.push("limits.max_connections must be at least 1".to_owned());
        }
        problems
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_seconds)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_seconds)
    }
}

/// What woke the accept loop.
enum Event {
    /// A client connected, and a connection slot is held for it.
    Accepted(tokio::net::TcpStream, OwnedSemaphorePermit),
    AcceptFailed(std::io::Error),
    Shutdown,
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until
/// `shutdown` resolves, then ends every connection within `SHUTDOWN_GRACE`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_buf_size(HEADER_BUFFER);
    // One token tells every connection to finish: cancelled on shutdown.
    let stop = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first, then the accept: while every slot is taken,
        // clients wait in the kernel's queue rather than in our memory.
        let event = tokio::select! {
            () = &mut shutdown => Event::Shutdown,
            accepted = async {
                // The semaphore is never closed, so the slot always comes.
                let slot = slots.clone().acquire_owned().await.expect("open semaphore");
                (slot, listener.accept().await)
            } => match accepted {
                (slot, Ok((stream, _))) => Event::Accepted(stream, slot),
                (_, Err(e)) => Event::AcceptFailed(e),
            },
        };
        // Finished connections leave the set as we go, so that it holds
        // only the live ones.
        while connections.try_join_next().is_some() {}
        match event {
            Event::Accepted(stream, slot) => {
                connections.spawn(connection(
                    stream,
                    Handshake {
                        tls: tls.clone(),
                        within: limits.header_timeout(),
                    },
                    router.clone(),
                    http.clone(),
                    stop.clone(),
                    slot,
                ));
            }
            Event::AcceptFailed(e) => {
                // Out of file descriptors, mostly: the connections we hold
                // end within their timeouts, so wait a little and go on.
                tracing::warn!("accepting a connection failed: {e}");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            Event::Shutdown => break,
        }
    }
    drop(listener);
    stop.cancel();
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            "{} connections still open {SHUTDOWN_GRACE:?} after shutdown began; dropping them",
            connections.len()
        );
        connections.shutdown().await;
    }
}

/// The TLS handshake a connection must finish first, if any, and how long
/// it may take.
struct Handshake {
    tls: Option<TlsAcceptor>,
    within: Duration,
}

/// One client connection, holding its `slot` until it ends.
async fn connection(
    stream: tokio::net::TcpStream,
    handshake: Handshake,
    router: Router,
    http: http1::Builder,
    stop: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    // Answers are small and written whole: no reason to wait for acks.
    let _ = stream.set_nodelay(true);
    // The client's address, for the console's per-address login limit.
    let router = match stream.peer_addr() {
        Ok(peer) => router.layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        Err(_) => router,
    };
    let Some(acceptor) = handshake.tls else {
        return serve_connection(stream, router, http, stop, slot).await;
    };
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(handshake.within, acceptor.accept(stream)) => accepted,
        () = stop.cancelled() => return,
    };
    match accepted {
        Ok(Ok(stream)) => serve_connection(stream, router, http, stop, slot).await,
        // A client that speaks no TLS, or distrusts the certificate: the
        // log says so at debug level, as for any client that goes away.
        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
        Err(_) => tracing::debug!(
            "TLS handshake not finished within {:?}: connection closed",
            handshake.within
        ),
    }
}

/// HTTP/1.1 on an established connection, plain or TLS.
async fn serve_connection<Io>(
    io: Io,
    router: Router,
    http: http1::Builder,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let mut served = std::pin::pin!(http.serve_connection(TokioIo::new(io), service));
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = stop.cancelled() => {
            // Finishes the request in flight, if any, then closes.
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        // A client that went away or was too slow: nothing to answer.
        tracing::debug!("connection ended: {e}");
    }
}
