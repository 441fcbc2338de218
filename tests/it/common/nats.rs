//! A three-node NATS cluster with JetStream and the MQTT gateway, of a
//! test's own: free ports, a temporary folder for configurations, stores
//! and logs, nodes that can be killed with SIGKILL and restarted, and
//! everything stopped on drop.
//!
//! Each node replicates the MQTT streams (sessions, retained messages) on
//! all three (`stream_replicas: 3`), so a screen's session survives the loss
//! of the node it was connected to.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, tools};

/// How long a node may take to answer MQTT after it starts: JetStream
/// elects its leaders first, which takes several seconds.
const READY_WITHIN: Duration = Duration::from_secs(60);

struct Node {
    name: String,
    mqtt_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Three nodes, started and answering MQTT on each; `None` (and a
    /// SKIPPED line) without nats-server (see [`tools`]).
    pub fn start(test: &str) -> Option<NatsCluster> {
        if !tools(test, &["nats-server"]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, cluster_port)| {
                let name = format!("n{}", i + 1);
                let mqtt_port = free_port();
                let config = dir.path().join(format!("{name}.conf"));
                let log = dir.path().join(format!("{name}.log"));
                let store = dir.path().join(format!("{name}-js"));
                let text = format!(
                    "server_name: {name}\n\
                     listen: \"127.0.0.1:{client}\"\n\
                     log_file: \"{log}\"\n\
                     jetstream {{ store_dir: \"{store}\" }}\n\
                     cluster {{\n  name: gongkai-test\n  listen: \"127.0.0.1:{cluster_port}\"\n  \
                     routes: [{routes}]\n}}\n\
                     mqtt {{ listen: \"127.0.0.1:{mqtt_port}\", stream_replicas: 3 }}\n",
                    client = free_port(),
                    log = log.display(),
                    store = store.display(),
                );
                std::fs::write(&config, text).unwrap();
                Node {
                    name,
                    mqtt_port,
                    config,
                    log,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster { nodes, dir };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_ready(i);
        }
        Some(cluster)
    }

    /// The MQTT URL of node `i` (0, 1 or 2).
    pub fn url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[i].mqtt_port)
    }

    /// Every node's MQTT URL, in order.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// Kills node `i` with SIGKILL: no goodbye to its clients, no will
    /// published for them, no final write.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and store, and waits until it
    /// answers MQTT.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i);
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// The cluster's folder (configurations, stores, logs).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        node.child = Some(child);
    }

    /// Waits until node `i` completes an MQTT CONNECT/CONNACK round trip:
    /// it answers only once JetStream holds its MQTT streams.
    fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let last = match mqtt_handshake(self.nodes[i].mqtt_port) {
                Ok(()) => return,
                Err(e) => e.to_string(),
            };
            if let Some(status) = self.nodes[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().unwrap())
            {
                panic!(
                    "nats-server {} exited ({status}):\n{}",
                    self.nodes[i].name,
                    self.log(i)
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not answer MQTT within {READY_WITHIN:?} ({last}):\n{}",
                self.nodes[i].name,
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// One MQTT 3.1.1 CONNECT with a clean session, its CONNACK (accepted),
/// then DISCONNECT.
fn mqtt_handshake(port: u16) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let client_id = format!("ready-probe-{port}");
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b0000_0010, 0, 10];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    stream.write_all(&packet)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    if connack[0] != 0x20 || connack[3] != 0 {
        return Err(std::io::Error::other(format!("CONNACK {connack:?}")));
    }
    stream.write_all(&[0xe0, 0])?;
    Ok(())
}
