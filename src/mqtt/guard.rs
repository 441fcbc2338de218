//! A relay between rumqttc and the broker that no message can break.
//!
//! rumqttc reads every packet whole and drops the connection on one larger
//! than its limit. A QoS 1 message on a subscribed topic then comes back on
//! every reconnection, from the persistent session or as a retained message,
//! so one oversized publish, signed or not, would keep a screen offline for
//! good; raising the limit only moves the size that does it and lets a
//! stranger choose how much memory the screen spends. MQTT 3.1.1 has no way
//! for a client to decline a message.
//!
//! So the screen's client talks to the broker through this relay, in its own
//! process, over a Unix socket in a private folder. The relay owns the TCP
//! (and TLS) connection to the broker, copies the client's bytes upstream as
//! they are, and reads the broker's bytes packet by packet. A PUBLISH larger
//! than its limit is rewritten into a small one with the same flags, topic
//! and packet id, whose payload is a marker naming the size it had; the
//! payload itself is read and thrown away as it streams, never held. The
//! ingest worker rejects the marker as too large and acknowledges it like any
//! rejected message, so the broker forgets it. Memory stays bounded by the
//! limit whatever arrives.
//!
//! The relay serves one client connection at a time: a new one (rumqttc
//! reconnecting) ends the old one and opens a new upstream connection, so
//! reconnection, backoff and sessions stay rumqttc's and the event loop's.
//!
//! With several brokers (the nodes of a cluster), the relay is also where
//! the next node is chosen, since it is the one that dials. rumqttc connects
//! to the relay again only after its connection failed (refused, dropped,
//! or no CONNACK in time), so every client connection after the relay's
//! first goes to the next broker of the shared [`super::Brokers`]: the
//! screen goes round the list, one node per failure, while the event loop
//! keeps the backoff between attempts. The relay does not parse what the
//! client sends to tell failures apart, and needs not: a client connects
//! anew for no other reason.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// What stands in for the payload of a message that was too large.
const OVERSIZE_MARKER: &[u8] = b"\0gongkai: payload dropped by the relay, bytes=";

/// The size of the payload a rewritten message had, if `payload` is the
/// relay's marker. No real envelope starts with a NUL byte.
pub fn oversize_of(payload: &[u8]) -> Option<usize> {
    let digits = payload.strip_prefix(OVERSIZE_MARKER)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Where the relay connects to.
#[derive(Clone)]
pub struct Upstream {
    /// The brokers, and which one the next connection goes to.
    pub brokers: super::Brokers,
    /// TLS towards a broker whose URL says mqtts.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
}

/// A running relay. Dropping it stops it at once and removes its socket;
/// [`Guard::close`] first lets the last connection deliver what it holds.
pub struct Guard {
    socket: PathBuf,
    task: JoinHandle<()>,
    closing: tokio_util::sync::CancellationToken,
    // Declared last: the folder goes after the task that uses it.
    _dir: tempfile::TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Guard {
    /// Binds the relay's socket and starts serving it; call inside a tokio
    /// runtime. A PUBLISH from the broker whose remaining length exceeds
    /// `limit` is rewritten (see the module documentation).
    pub fn start(upstream: Upstream, limit: usize) -> io::Result<Guard> {
        // A folder only this user can enter: nobody else reaches the socket.
        let dir = tempfile::Builder::new().prefix("gongkai-mqtt-").tempdir()?;
        let socket = dir.path().join("broker.sock");
        let listener = UnixListener::bind(&socket)?;
        let closing = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(serve(listener, Arc::new(upstream), limit, closing.clone()));
        Ok(Guard {
            socket,
            task,
            closing,
            _dir: dir,
        })
    }

    /// Stops accepting and waits (at most `deadline`) for the connection in
    /// use to end, which it does once the client has closed its side and
    /// everything it wrote (its last acknowledgements, the offline status,
    /// the DISCONNECT) was passed on to the broker. Call it after the client's
    /// event loop is gone.
    pub async fn close(mut self, deadline: Duration) {
        self.closing.cancel();
        let _ = tokio::time::timeout(deadline, &mut self.task).await;
    }

    /// The socket rumqttc connects to (`Transport::Unix`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

async fn serve(
    listener: UnixListener,
    upstream: Arc<Upstream>,
    limit: usize,
    closing: tokio_util::sync::CancellationToken,
) {
    let mut current: Option<JoinHandle<()>> = None;
    let mut first = true;
    loop {
        let accepted = tokio::select! {
            () = closing.cancelled() => {
                if let Some(last) = current {
                    let _ = last.await;
                }
                return;
            }
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!("broker relay: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The client reconnected, so its old connection is dead to it, and
        // failed: the new one goes to the next broker.
        if let Some(old) = current.take() {
            old.abort();
        }
        if !std::mem::take(&mut first) {
            upstream.brokers.advance();
        }
        current = Some(tokio::spawn(relay(client, upstream.clone(), limit)));
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(upstream: &Upstream, broker: &super::BrokerUrl) -> io::Result<Box<dyn Stream>> {
    let address = (broker.host.as_str(), broker.port);
    let tcp = tokio::time::timeout(upstream.connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    // Acknowledgements are tiny packets; delaying them throttles the broker.
    tcp.set_nodelay(true)?;
    let tls = match (&upstream.tls, broker.tls) {
        (_, false) => return Ok(Box::new(tcp)),
        (Some(tls), true) => tls,
        (None, true) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no TLS configuration for an mqtts broker",
            ));
        }
    };
    let name = rustls::pki_types::ServerName::try_from(broker.host.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let connector = rumqttc::tokio_rustls::TlsConnector::from(tls.clone());
    let stream = tokio::time::timeout(upstream.connect_timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Box::new(stream))
}

/// Relays one client connection until either side ends.
async fn relay(client: UnixStream, upstream: Arc<Upstream>, limit: usize) {
    let url = upstream.brokers.current().clone();
    let count = upstream.brokers.urls().len();
    if count > 1 {
        tracing::info!(
            "broker relay: connecting to {url} (broker {} of {count})",
            upstream.brokers.position() + 1
        );
    }
    let broker = match connect(&upstream, &url).await {
        Ok(broker) => broker,
        Err(e) => {
            // Dropping the client's connection makes rumqttc report the
            // failure and back off; say why here, since it cannot.
            tracing::warn!("broker relay: cannot reach {url}: {e}");
            return;
        }
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (from_broker, mut to_broker) = tokio::io::split(broker);
    // The client's end closing ends the relay, once what it wrote is passed
    // on; the broker's end closing ends it too (the client then sees EOF).
    let upward = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_broker).await;
        let _ = to_broker.shutdown().await;
    };
    let downward = filter(BufReader::new(from_broker), &mut to_client, limit);
    tokio::select! {
        () = upward => {}
        result = downward => if let Err(e) = result {
            tracing::debug!("broker relay: {e}");
        },
    }
}

/// Copies MQTT packets from `from` to `to`, rewriting each PUBLISH whose
/// remaining length exceeds `limit`. Ends at the end of `from`.
pub async fn filter<R, W>(mut from: R, to: &mut W, limit: usize) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut packet = Vec::new();
    loop {
        let first = match from.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let length = read_remaining_length(&mut from).await?;
        packet.clear();
        packet.push(first);
        let is_publish = first >> 4 == 3;
        if is_publish && length > limit {
            let qos = (first >> 1) & 0b11;
            let topic_length = usize::from(from.read_u16().await?);
            let head = 2 + topic_length + if qos > 0 { 2 } else { 0 };
            if head > length {
                return Err(invalid("PUBLISH shorter than its topic"));
            }
            let mut head_bytes = vec![0; head];
            head_bytes[..2].copy_from_slice(&(topic_length as u16).to_be_bytes());
            from.read_exact(&mut head_bytes[2..]).await?;
            let dropped = length - head;
            let skipped = tokio::io::copy(
                &mut (&mut from).take(dropped as u64),
                &mut tokio::io::sink(),
            )
            .await?;
            if skipped != dropped as u64 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut payload = OVERSIZE_MARKER.to_vec();
            payload.extend_from_slice(dropped.to_string().as_bytes());
            write_remaining_length(head + payload.len(), &mut packet);
            packet.extend_from_slice(&head_bytes);
            packet.extend_from_slice(&payload);
        } else {
            write_remaining_length(length, &mut packet);
            let start = packet.len();
            packet.resize(start + length, 0);
            from.read_exact(&mut packet[start..]).await?;
        }
        to.write_all(&packet).await?;
        // Keep the buffer of a large packet from staying allocated.
        if packet.capacity() > 64 * 1024 {
            packet = Vec::new();
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// MQTT's variable-length integer: up to four bytes, seven bits each.
async fn read_remaining_length<R: AsyncRead + Unpin>(from: &mut R) -> io::Result<usize> {
    let mut value = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = from.read_u8().await?;
        value |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(invalid("remaining length longer than four bytes"))
}

fn write_remaining_length(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: u8, topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut packet = vec![0x30 | (qos << 1) | 1];
        write_remaining_length(body.len(), &mut packet);
        packet.extend(body);
        packet
    }

    async fn filtered(input: Vec<u8>, limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        filter(&input[..], &mut out, limit).await.unwrap();
        out
    }

    #[tokio::test]
    async fn small_packets_pass_unchanged_and_large_publishes_become_markers() {
        let small = publish(1, "gongkai/v1/c/notices/a", 7, b"{\"ok\":1}");
        let ping = vec![0xd0, 0x00];
        let big_payload = vec![b'x'; 300_000];
        let big = publish(1, "gongkai/v1/c/notices/b", 8, &big_payload);
        let after = publish(0, "gongkai/v1/c/manifest", 0, b"m");
        let input = [small.clone(), ping.clone(), big, after.clone()].concat();
        let out = filtered(input, 1000).await;
        let marked = publish(
            1,
            "gongkai/v1/c/notices/b",
            8,
            &[OVERSIZE_MARKER, b"300000"].concat(),
        );
        assert_eq!(out, [small, ping, marked.clone(), after].concat());
        let payload = &marked[marked.len() - OVERSIZE_MARKER.len() - 6..];
        assert_eq!(oversize_of(payload), Some(300_000));
        assert_eq!(oversize_of(b"{\"payloadType\":1}"), None);
    }

    #[test]
    fn remaining_lengths_round_trip_at_every_width() {
        for value in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = Vec::new();
            write_remaining_length(value, &mut out);
            let read = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(read_remaining_length(&mut &out[..]))
                .unwrap();
            assert_eq!(read, value);
        }
    }

    #[tokio::test]
    async fn each_client_connection_after_the_first_goes_to_the_next_broker() {
        let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let mut urls = Vec::new();
        for node in 0..3 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            urls.push(super::super::BrokerUrl::parse(&format!("mqtt://127.0.0.1:{port}")).unwrap());
            let tx = accepted_tx.clone();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    held.push(stream);
                    let _ = tx.send(node);
                }
            });
        }
        let brokers = super::super::Brokers::new(urls, 1);
        let upstream = Upstream {
            brokers: brokers.clone(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
        };
        let guard = Guard::start(upstream, 1000).unwrap();
        let mut reached = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(UnixStream::connect(guard.socket()).await.unwrap());
            reached.push(accepted.recv().await.unwrap());
        }
        assert_eq!(reached, [1, 2, 0, 1]);
        assert_eq!(brokers.position(), 1, "the position is shared");
    }

    #[tokio::test]
    async fn a_truncated_packet_is_an_error_not_a_hang() {
        let mut packet = publish(1, "t", 1, &[0; 100]);
        packet.truncate(50);
        let mut out = Vec::new();
        assert!(filter(&packet[..], &mut out, 1000).await.is_err());
    }
}
