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
        Self::start_with(test, 3)
    }

    /// As [`NatsCluster::start`], with each QoS 1 subscription's JetStream
    /// consumer on `consumer_replicas` nodes (the README's setting for a
    /// large fleet is 1; NATS's default is the streams' 3).
    pub fn start_with(test: &str, consumer_replicas: usize) -> Option<NatsCluster> {
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
                     mqtt {{ listen: \"127.0.0.1:{mqtt_port}\", stream_replicas: 3, \
                     consumer_replicas: {consumer_replicas} }}\n",
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
        self.nodes[i].log()
    }

    /// The cluster's folder (configurations, stores, logs).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn spawn(&mut self, i: usize) {
        self.nodes[i].spawn();
    }

    /// Waits until node `i` completes an MQTT CONNECT/CONNACK round trip:
    /// it answers only once JetStream holds its MQTT streams.
    fn wait_ready(&mut self, i: usize) {
        self.nodes[i].wait_ready();
    }
}

impl Node {
    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log.with_extension("stderr")).unwrap())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
    }

    /// The node's log, and what it wrote to stderr (a Go panic).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
            + &std::fs::read_to_string(self.log.with_extension("stderr")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let last = match mqtt_handshake(self.mqtt_port) {
                Ok(()) => return,
                Err(e) => e.to_string(),
            };
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "nats-server {} exited ({status}):\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not answer MQTT within {READY_WITHIN:?} ({last}):\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One NATS node with JetStream and the MQTT gateway, whose clients (no
/// credentials needed) land in an account with a JetStream consumer limit
/// of the test's choosing. Each QoS 1 subscription is a consumer, so past
/// the limit NATS refuses subscriptions with SUBACK code 0x80; raising the
/// limit with [`NatsSolo::set_max_consumers`] lets them succeed.
pub struct NatsSolo {
    node: Node,
    monitor_port: u16,
    client_port: u16,
    dir: tempfile::TempDir,
}

impl NatsSolo {
    /// `None` (and a SKIPPED line) without nats-server.
    pub fn start(test: &str, max_consumers: usize) -> Option<NatsSolo> {
        if !tools(test, &["nats-server"]) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let node = Node {
            name: "solo".into(),
            mqtt_port: free_port(),
            config: dir.path().join("solo.conf"),
            log: dir.path().join("solo.log"),
            child: None,
        };
        let mut solo = NatsSolo {
            node,
            monitor_port: free_port(),
            client_port: free_port(),
            dir,
        };
        solo.write_config(max_consumers);
        solo.node.spawn();
        solo.node.wait_ready();
        Some(solo)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.node.mqtt_port)
    }

    pub fn log(&self) -> String {
        self.node.log()
    }

    /// Rewrites the account's consumer limit and has the node reload it
    /// (SIGHUP); consumers made before stay.
    pub fn set_max_consumers(&mut self, max_consumers: usize) {
        self.write_config(max_consumers);
        let pid = self.node.child.as_ref().expect("nats-server runs").id();
        let sent = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -HUP nats-server");
    }

    /// How many JetStream consumers the account holds, from the node's
    /// monitoring endpoint (`/jsz`). A reload closes the connections the
    /// endpoint has open: those requests are sent again.
    pub async fn consumers(&self) -> u64 {
        let url = format!("http://127.0.0.1:{}/jsz", self.monitor_port);
        let mut tries = 0;
        let jsz: serde_json::Value = loop {
            match reqwest::get(&url).await.and_then(|r| r.error_for_status()) {
                Ok(response) => break response.json().await.unwrap(),
                Err(e) if tries < 20 && e.is_request() => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{url}: {e:?}\n{}", self.log()),
            }
        };
        jsz["consumers"]
            .as_u64()
            .unwrap_or_else(|| panic!("{url}: {jsz}"))
    }

    /// The user's explicit permissions are needed: without them NATS 2.9.10
    /// dereferences nil at a reload while it holds retained MQTT messages
    /// (`mqttCheckPubRetainedPerms`) and dies.
    fn write_config(&self, max_consumers: usize) {
        let text = format!(
            "server_name: solo\n\
             listen: \"127.0.0.1:{client}\"\n\
             http: \"127.0.0.1:{monitor}\"\n\
             log_file: \"{log}\"\n\
             jetstream {{ store_dir: \"{store}\" }}\n\
             accounts {{\n  SCREENS: {{\n    jetstream: {{ max_mem: 64M, max_file: 256M, max_streams: 20, \
             max_consumers: {max_consumers} }}\n    users: [{{ user: screens, password: screens, permissions: {{ publish: \">\", subscribe: \">\" }} }}]\n  }}\n}}\n\
             no_auth_user: screens\n\
             mqtt {{ listen: \"127.0.0.1:{mqtt}\" }}\n",
            client = self.client_port,
            monitor = self.monitor_port,
            log = self.node.log.display(),
            store = self.dir.path().join("js").display(),
            mqtt = self.node.mqtt_port,
        );
        std::fs::write(&self.node.config, text).unwrap();
    }
}

impl Drop for NatsSolo {
    fn drop(&mut self) {
        if let Some(mut child) = self.node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
