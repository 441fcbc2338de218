//! A NATS JetStream cluster of the benchmark's own: three `nats-server`
//! processes on free ports, routed to each other, each with JetStream in a
//! folder of its own and an MQTT listener, MQTT streams and consumers
//! replicated three times. Stopping and starting keeps the JetStream state,
//! as a restarted cluster would.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, tools};

struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    mqtt_port: u16,
    child: Option<Child>,
}

pub struct Cluster {
    nodes: Vec<Node>,
    /// The MQTT gateway's `consumer_replicas`: how many nodes hold each
    /// QoS 1 subscription's JetStream consumer.
    pub consumer_replicas: usize,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` (and a SKIPPED line) without a `nats-server` binary.
    pub fn start(nodes: usize, consumer_replicas: usize) -> Option<Cluster> {
        if !tools("fleet", &["nats-server"]) {
            return None;
        }
        let nodes = (1..=nodes)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: free_port(),
                cluster_port: free_port(),
                mqtt_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            consumer_replicas,
            dir: tempfile::tempdir().unwrap(),
        };
        cluster.restart();
        Some(cluster)
    }

    /// One MQTT URL per node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("mqtt://127.0.0.1:{}", n.mqtt_port))
            .collect()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Starts every node with its MQTT listener on its usual port.
    pub fn restart(&mut self) {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.mqtt_port).collect();
        self.restart_on(&ports);
    }

    /// Starts every node with its MQTT listener on the given port (one per
    /// node), and returns once the MQTT listeners accept connections.
    pub fn restart_on(&mut self, mqtt_ports: &[u16]) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port))
            .collect();
        let routes = routes.join(", ");
        let dir = self.dir.path().to_owned();
        for (node, mqtt) in self.nodes.iter_mut().zip(mqtt_ports) {
            let conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\n\
                 max_payload: 1MB\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{ name: gongkai-bench, listen: 127.0.0.1:{cluster}, routes: [{routes}] }}\n\
                 mqtt {{ listen: 127.0.0.1:{mqtt}, stream_replicas: 3, consumer_replicas: {replicas} }}\n",
                replicas = self.consumer_replicas,
                name = node.name,
                client = node.client_port,
                store = dir.join(&node.name).display(),
                cluster = node.cluster_port,
            );
            let path = dir.join(format!("{}.conf", node.name));
            std::fs::write(&path, conf).unwrap();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.log", node.name)))
                .unwrap();
            node.child = Some(
                Command::new("nats-server")
                    .arg("-c")
                    .arg(&path)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("starting nats-server"),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in mqtt_ports {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                assert!(Instant::now() < deadline, "nats-server did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits until every node takes a QoS 1 publish over MQTT: JetStream has
    /// a leader and the MQTT streams exist.
    pub async fn wait_ready(&self) {
        for url in self.urls() {
            self.wait_ready_at(&url).await;
        }
    }

    /// Waits until the node at `url` takes a QoS 1 publish over MQTT.
    pub async fn wait_ready_at(&self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let attempt = async {
                let connect = gongkai::mqtt::Connect::cli(url, None, None)?;
                let mut client = gongkai::office::broker::OneShotClient::connect(&connect).await?;
                client
                    .publish_retained("gongkai-bench/ready", Vec::new())
                    .await?;
                client.close().await;
                anyhow::Ok(())
            };
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(10), attempt).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the NATS cluster did not take MQTT publishes: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log_path_of(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.log"))
    }

    /// Every node's log, for what went wrong.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| std::fs::read_to_string(self.log_path_of(&n.name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every node with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
