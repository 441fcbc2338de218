//! The broker access control of `config/mosquitto/`, as shipped: a real
//! Mosquitto of the test's own with `gongkai.conf` and `gongkai-listener.conf`
//! (TLS with a throwaway CA, a password for every user, client id = user
//! name), and the ACL that `gongkai-acl` makes of `roster.example`. Each test
//! tries what a screen or an office may and may not do.
//!
//! MQTT 3.1.1 has no negative acknowledgement: Mosquitto acknowledges a
//! denied PUBLISH and drops it, and grants a subscription whose messages it
//! will never deliver. So a denial is proved by what others observe: the
//! retained copy a fresh subscription brings back is unchanged, and a message
//! the broker would have routed before a later, allowed one never arrives
//! before it. Both rest on Mosquitto handling one client's packets in order
//! (the PUBACK of a publish comes after the broker has stored or dropped it)
//! and queueing to each subscriber in order.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Mosquitto, eventually, free_port, tools};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/mosquitto")
        .join(name)
}

fn topic(scope: &str, rest: &str) -> String {
    format!("gongkai/v1/{scope}/{rest}")
}

fn password(user: &str) -> String {
    format!("pw-{user}-4f1c")
}

/// The users of the shipped roster (its `office` and `screen` entries).
fn roster_users() -> Vec<String> {
    std::fs::read_to_string(shipped("roster.example"))
        .unwrap()
        .lines()
        .filter_map(|line| {
            let mut words = line.split('#').next().unwrap().split_whitespace();
            match words.next() {
                Some("office" | "screen") => words.next().map(str::to_owned),
                _ => None,
            }
        })
        .collect()
}

/// Runs the shipped `gongkai-acl` on `roster`: status, stdout, stderr.
fn gongkai_acl(roster: &Path) -> (i32, String, String) {
    let out = Command::new("sh")
        .arg(shipped("gongkai-acl"))
        .arg(roster)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A CA, and a certificate for `localhost` signed by it, where the listener
/// file expects them (`certs/broker.pem`, `certs/broker.key`); the CA as
/// `ca.pem`, as a screen's `mqtt.ca_file`.
fn make_certificates(root: &Path) -> PathBuf {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::create_dir_all(root.join("certs")).unwrap();
    std::fs::write(root.join("certs/broker.pem"), cert.pem()).unwrap();
    std::fs::write(root.join("certs/broker.key"), key.serialize_pem()).unwrap();
    let ca = root.join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    ca
}

/// A Mosquitto with the shipped files. Its TLS listener is on `port`; the
/// plain one `Mosquitto` always opens needs a password too.
struct Broker {
    port: u16,
    ca: PathBuf,
    mosquitto: Mosquitto,
    root: tempfile::TempDir,
}

impl Broker {
    /// `None` (and a SKIPPED line) without Mosquitto's programs.
    fn start(test: &str) -> Option<Broker> {
        if !tools(test, &["mosquitto", "mosquitto_passwd", "awk"]) {
            return None;
        }
        // `root` stands for /etc/mosquitto: the placeholders of the listener
        // file point into it.
        let root = tempfile::tempdir().unwrap();
        let ca = make_certificates(root.path());
        std::fs::create_dir_all(root.path().join("gongkai")).unwrap();
        let (status, acl, errors) = gongkai_acl(&shipped("roster.example"));
        assert_eq!(status, 0, "{errors}");
        std::fs::write(root.path().join("gongkai/acl"), acl).unwrap();
        let passwords = root.path().join("gongkai/passwords");
        for (i, user) in roster_users().iter().enumerate() {
            let mut cmd = Command::new("mosquitto_passwd");
            cmd.arg("-b");
            if i == 0 {
                cmd.arg("-c");
            }
            let made = cmd
                .arg(&passwords)
                .arg(user)
                .arg(password(user))
                .output()
                .unwrap();
            assert!(made.status.success(), "mosquitto_passwd {user}: {made:?}");
        }

        let port = free_port();
        let listener = std::fs::read_to_string(shipped("gongkai-listener.conf")).unwrap();
        assert!(listener.contains("\nlistener 8883\n"), "{listener}");
        let listener = listener
            .replace(
                "\nlistener 8883\n",
                &format!("\nlistener {port} 127.0.0.1\n"),
            )
            .replace("/etc/mosquitto/", &format!("{}/", root.path().display()));
        let limits = std::fs::read_to_string(shipped("gongkai.conf")).unwrap();
        let mosquitto = Mosquitto::start(test, &format!("{limits}\n{listener}"))?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        eventually("the TLS listener", || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        });
        Some(Broker {
            port,
            ca,
            mosquitto,
            root,
        })
    }

    /// `user` with its password, asking for client id `user`.
    async fn peer(&self, user: &str) -> Peer {
        Peer::connect(self, Some((user, &password(user))), user)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
    }
}

/// One MQTT client over TLS, with its event loop on a task of its own.
struct Peer {
    name: String,
    client: AsyncClient,
    packets: mpsc::UnboundedReceiver<Result<Packet, String>>,
    /// Every PUBLISH received so far, in order.
    seen: Vec<Publish>,
    barriers: u32,
}

impl Peer {
    async fn connect(
        broker: &Broker,
        credentials: Option<(&str, &str)>,
        client_id: &str,
    ) -> Result<Peer, String> {
        let tls = gongkai::tls::client_config(Some(&broker.ca)).unwrap();
        let mut options = MqttOptions::new(client_id, "localhost", broker.port);
        options
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls),
            )))
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true);
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, mut packets) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), packets.recv()).await {
            Ok(Some(Ok(Packet::ConnAck(ack))))
                if ack.code == rumqttc::ConnectReturnCode::Success => {}
            Ok(Some(Ok(other))) => return Err(format!("{other:?}")),
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err("the event loop ended".into()),
            Err(_) => return Err("no CONNACK within 10 s".into()),
        }
        Ok(Peer {
            name: credentials.map_or("anonymous", |c| c.0).to_owned(),
            client,
            packets,
            seen: Vec::new(),
            barriers: 0,
        })
    }

    /// Waits until the broker closes this connection.
    async fn closed(&mut self) {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), self.packets.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: still connected after 10 s", self.name));
            match next {
                Some(Ok(Packet::Publish(p))) => self.seen.push(p),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    }

    /// The next packet from the broker; PUBLISHes are also kept in `seen`.
    async fn next(&mut self) -> Packet {
        let packet = tokio::time::timeout(Duration::from_secs(10), self.packets.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no packet from the broker within 10 s", self.name))
            .unwrap_or_else(|| panic!("{}: the event loop ended", self.name))
            .unwrap_or_else(|e| panic!("{}: the connection failed: {e}", self.name));
        if let Packet::Publish(p) = &packet {
            self.seen.push(p.clone());
        }
        packet
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        while !matches!(self.next().await, Packet::SubAck(_)) {}
    }

    /// Publishes at QoS 1 and waits for the PUBACK: the broker has then
    /// stored, routed or dropped the message.
    async fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
        while !matches!(self.next().await, Packet::PubAck(_)) {}
    }

    /// Waits until the SUBACK of a further subscription: everything the
    /// broker queued for this client before (the retained messages of an
    /// earlier subscription, say) has arrived by then.
    async fn settle(&mut self) {
        self.barriers += 1;
        let filter = format!("barrier/{}/{}", self.name, self.barriers);
        self.subscribe(&filter).await;
    }

    /// Waits until `payload` arrives on `topic`.
    async fn until(&mut self, topic: &str, payload: &[u8]) {
        let arrived = |seen: &[Publish]| {
            seen.iter()
                .any(|p| p.topic == topic && p.payload.as_ref() == payload)
        };
        while !arrived(&self.seen) {
            self.next().await;
        }
    }

    /// What a fresh subscription to `filter` brings back retained, sorted.
    async fn retained(&mut self, filter: &str) -> Vec<(String, Vec<u8>)> {
        let from = self.seen.len();
        self.subscribe(filter).await;
        self.settle().await;
        let mut found: Vec<(String, Vec<u8>)> = self.seen[from..]
            .iter()
            .filter(|p| p.retain)
            .map(|p| (p.topic.clone(), p.payload.to_vec()))
            .collect();
        found.sort();
        found
    }

    /// Payloads seen on `topic`.
    fn on(&self, topic: &str) -> Vec<Vec<u8>> {
        self.seen
            .iter()
            .filter(|p| p.topic == topic)
            .map(|p| p.payload.to_vec())
            .collect()
    }
}

fn retained(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = pairs
        .iter()
        .map(|(t, p)| ((*t).to_owned(), p.to_vec()))
        .collect();
    v.sort();
    v
}

/// A screen subscribes as gongkaid does (its community and its followed
/// street: notices, manifest, a manifest page; its commands) and receives
/// everything retained there; the offices publish it all, and send commands
/// that the screen receives; the office reads the screen's status.
#[tokio::test(flavor = "multi_thread")]
async fn a_screen_reads_its_notices_manifests_pages_and_commands() {
    let Some(broker) = Broker::start("a_screen_reads_its_notices_manifests_pages_and_commands")
    else {
        return;
    };
    let mut office = broker.peer("office-lixia").await;
    let mut street = broker.peer("office-yanshan").await;
    let mut expected = Vec::new();
    for (who, scope) in [(&mut office, "lixia-demo"), (&mut street, "yanshan-street")] {
        for rest in ["notices/n1", "manifest", "manifest/pages/1"] {
            let t = topic(scope, rest);
            let payload = format!("{rest} of {scope}").into_bytes();
            who.publish(&t, &payload, true).await;
            expected.push((t, payload));
        }
    }
    expected.sort();
    office
        .subscribe(&topic("lixia-demo", "screens/+/status"))
        .await;

    let mut screen = broker.peer("lobby-1").await;
    for scope in ["lixia-demo", "yanshan-street"] {
        for filter in ["manifest", "notices/+", "manifest/pages/1"] {
            screen.subscribe(&topic(scope, filter)).await;
        }
    }
    screen.subscribe(&topic("lixia-demo", "cmd")).await;
    screen
        .subscribe(&topic("lixia-demo", "screens/lobby-1/cmd"))
        .await;
    screen.settle().await;
    let mut got: Vec<(String, Vec<u8>)> = screen
        .seen
        .iter()
        .filter(|p| p.retain)
        .map(|p| (p.topic.clone(), p.payload.to_vec()))
        .collect();
    got.sort();
    assert_eq!(got, expected);

    // Commands, to this screen and to the whole community.
    let own = topic("lixia-demo", "screens/lobby-1/cmd");
    let all = topic("lixia-demo", "cmd");
    office.publish(&own, b"screenshot lobby-1", false).await;
    office.publish(&all, b"resync all", false).await;
    screen.until(&own, b"screenshot lobby-1").await;
    screen.until(&all, b"resync all").await;

    // The screen's status reaches the office.
    let status = topic("lixia-demo", "screens/lobby-1/status");
    screen.publish(&status, b"online", true).await;
    office.until(&status, b"online").await;
}

/// A screen cannot publish a notice, replace or clear a retained one, nor
/// touch a manifest or a manifest page, in its community or the street it
/// follows; nor send commands to other screens.
#[tokio::test(flavor = "multi_thread")]
async fn a_screen_cannot_publish_replace_or_clear_notices_nor_send_commands() {
    let Some(broker) =
        Broker::start("a_screen_cannot_publish_replace_or_clear_notices_nor_send_commands")
    else {
        return;
    };
    let mut office = broker.peer("office-lixia").await;
    let (n1, manifest, page) = (
        topic("lixia-demo", "notices/n1"),
        topic("lixia-demo", "manifest"),
        topic("lixia-demo", "manifest/pages/1"),
    );
    office.publish(&n1, b"the office's n1", true).await;
    office
        .publish(&manifest, b"the office's manifest", true)
        .await;
    office.publish(&page, b"the office's page 1", true).await;
    let mut street = broker.peer("office-yanshan").await;
    let s1 = topic("yanshan-street", "notices/s1");
    street.publish(&s1, b"the street's s1", true).await;
    let mut kiosk = broker.peer("kiosk-1").await;
    let kiosk_cmd = topic("lixia-demo", "screens/kiosk-1/cmd");
    let community_cmd = topic("lixia-demo", "cmd");
    kiosk.subscribe(&kiosk_cmd).await;
    kiosk.subscribe(&community_cmd).await;

    let mut screen = broker.peer("lobby-1").await;
    let forged: &[u8] = b"forged by lobby-1";
    for t in [
        &topic("lixia-demo", "notices/n2"),
        &n1,
        &manifest,
        &page,
        &topic("yanshan-street", "notices/s2"),
        &s1,
        &topic("yanshan-street", "manifest"),
    ] {
        screen.publish(t, forged, true).await;
    }
    // An empty retained message would clear the retained copy.
    for t in [&n1, &manifest, &page, &s1] {
        screen.publish(t, b"", true).await;
    }
    screen.publish(&kiosk_cmd, forged, false).await;
    screen.publish(&community_cmd, forged, false).await;

    assert_eq!(
        office.retained(&topic("lixia-demo", "notices/+")).await,
        retained(&[(&n1, b"the office's n1")])
    );
    assert_eq!(
        office.retained(&manifest).await,
        retained(&[(&manifest, b"the office's manifest")])
    );
    assert_eq!(
        office
            .retained(&topic("lixia-demo", "manifest/pages/+"))
            .await,
        retained(&[(&page, b"the office's page 1")])
    );
    assert_eq!(
        street.retained(&topic("yanshan-street", "#")).await,
        retained(&[(&s1, b"the street's s1")])
    );

    // The kiosk got none of the forged commands, which the broker would
    // have queued before the office's.
    office.publish(&kiosk_cmd, b"identify kiosk-1", false).await;
    kiosk.until(&kiosk_cmd, b"identify kiosk-1").await;
    assert_eq!(kiosk.on(&kiosk_cmd), [b"identify kiosk-1".to_vec()]);
    assert!(kiosk.on(&community_cmd).is_empty());
}

/// A screen writes its own status and no other: not a neighbour's, not one
/// under another community, not even its own id there.
#[tokio::test(flavor = "multi_thread")]
async fn a_screen_writes_only_its_own_status() {
    let Some(broker) = Broker::start("a_screen_writes_only_its_own_status") else {
        return;
    };
    let mut office = broker.peer("office-lixia").await;
    let mut other_office = broker.peer("office-quancheng").await;
    office
        .subscribe(&topic("lixia-demo", "screens/+/status"))
        .await;
    other_office
        .subscribe(&topic("quancheng-garden", "screens/+/status"))
        .await;

    let mut screen = broker.peer("lobby-1").await;
    let forged: &[u8] = b"forged by lobby-1";
    for t in [
        topic("lixia-demo", "screens/kiosk-1/status"),
        topic("quancheng-garden", "screens/lobby-q1/status"),
        topic("quancheng-garden", "screens/lobby-1/status"),
    ] {
        screen.publish(&t, forged, true).await;
    }
    let own = topic("lixia-demo", "screens/lobby-1/status");
    screen.publish(&own, b"lobby-1 online", true).await;
    let mut neighbour = broker.peer("lobby-q1").await;
    let theirs = topic("quancheng-garden", "screens/lobby-q1/status");
    neighbour.publish(&theirs, b"lobby-q1 online", true).await;

    office.until(&own, b"lobby-1 online").await;
    other_office.until(&theirs, b"lobby-q1 online").await;
    for peer in [&office, &other_office] {
        assert!(
            peer.seen.iter().all(|p| p.payload.as_ref() != forged),
            "{} saw a forged status",
            peer.name
        );
    }
    assert_eq!(
        office
            .retained(&topic("lixia-demo", "screens/+/status"))
            .await,
        retained(&[(&own, b"lobby-1 online")])
    );
    assert_eq!(
        other_office
            .retained(&topic("quancheng-garden", "screens/+/status"))
            .await,
        retained(&[(&theirs, b"lobby-q1 online")])
    );
}

/// A screen reads neither another community's commands and notices nor a
/// neighbour's commands, even through a `#` subscription; the screens they
/// are meant for do receive them.
#[tokio::test(flavor = "multi_thread")]
async fn a_screen_cannot_read_another_communitys_commands() {
    let Some(broker) = Broker::start("a_screen_cannot_read_another_communitys_commands") else {
        return;
    };
    let mut other_office = broker.peer("office-quancheng").await;
    let q1 = topic("quancheng-garden", "notices/q1");
    other_office.publish(&q1, b"quancheng's q1", true).await;
    let mut office = broker.peer("office-lixia").await;

    let mut other_screen = broker.peer("lobby-q1").await;
    let (their_cmd, their_community_cmd) = (
        topic("quancheng-garden", "screens/lobby-q1/cmd"),
        topic("quancheng-garden", "cmd"),
    );
    other_screen.subscribe(&their_cmd).await;
    other_screen.subscribe(&their_community_cmd).await;
    let mut kiosk = broker.peer("kiosk-1").await;
    let kiosk_cmd = topic("lixia-demo", "screens/kiosk-1/cmd");
    kiosk.subscribe(&kiosk_cmd).await;

    let mut screen = broker.peer("lobby-1").await;
    let own_cmd = topic("lixia-demo", "screens/lobby-1/cmd");
    for filter in [
        their_cmd.as_str(),
        their_community_cmd.as_str(),
        &topic("quancheng-garden", "screens/lobby-1/cmd"),
        &topic("quancheng-garden", "notices/+"),
        &topic("quancheng-garden", "manifest"),
        kiosk_cmd.as_str(),
        own_cmd.as_str(),
        "gongkai/v1/#",
    ] {
        screen.subscribe(filter).await;
    }
    screen.settle().await;

    other_office
        .publish(&their_cmd, b"screenshot lobby-q1", false)
        .await;
    other_office
        .publish(&their_community_cmd, b"resync quancheng", false)
        .await;
    office.publish(&kiosk_cmd, b"identify kiosk-1", false).await;
    office.publish(&own_cmd, b"identify lobby-1", false).await;

    screen.until(&own_cmd, b"identify lobby-1").await;
    let readable = [own_cmd.as_str()];
    let strays: Vec<&str> = screen
        .seen
        .iter()
        .map(|p| p.topic.as_str())
        .filter(|t| !readable.contains(t))
        .collect();
    assert!(strays.is_empty(), "lobby-1 read {strays:?}");
    // Those messages were real: their screens received them.
    other_screen.until(&their_cmd, b"screenshot lobby-q1").await;
    other_screen
        .until(&their_community_cmd, b"resync quancheng")
        .await;
    kiosk.until(&kiosk_cmd, b"identify kiosk-1").await;
}

/// Wrong passwords and anonymous clients are refused; a screen's
/// credentials cannot take over another screen's session (the client id is
/// the user name); an office cannot publish in another scope.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_checked_and_bound_to_their_client_id_and_scope() {
    let Some(broker) =
        Broker::start("credentials_are_checked_and_bound_to_their_client_id_and_scope")
    else {
        return;
    };
    assert!(
        Peer::connect(&broker, Some(("lobby-1", "wrong")), "lobby-1")
            .await
            .is_err(),
        "a wrong password was accepted"
    );
    assert!(
        Peer::connect(&broker, None, "lobby-1").await.is_err(),
        "an anonymous client was accepted"
    );

    let mut kiosk = broker.peer("kiosk-1").await;
    let kiosk_cmd = topic("lixia-demo", "screens/kiosk-1/cmd");
    kiosk.subscribe(&kiosk_cmd).await;
    // lobby-1's credentials, asking for kiosk-1's client id: the broker
    // makes it lobby-1, and kiosk-1 stays connected.
    let mut intruder = Peer::connect(&broker, Some(("lobby-1", &password("lobby-1"))), "kiosk-1")
        .await
        .unwrap();
    let own_cmd = topic("lixia-demo", "screens/lobby-1/cmd");
    intruder.subscribe(&kiosk_cmd).await;
    intruder.subscribe(&own_cmd).await;
    let mut office = broker.peer("office-lixia").await;
    office.publish(&kiosk_cmd, b"identify kiosk-1", false).await;
    office.publish(&own_cmd, b"identify lobby-1", false).await;
    kiosk.until(&kiosk_cmd, b"identify kiosk-1").await;
    intruder.until(&own_cmd, b"identify lobby-1").await;
    assert!(intruder.on(&kiosk_cmd).is_empty());

    // The street office publishes in its own scope only.
    let mut street = broker.peer("office-yanshan").await;
    let intruding = topic("lixia-demo", "notices/from-the-street");
    street.publish(&intruding, b"street in lixia", true).await;
    street
        .publish(&topic("lixia-demo", "manifest"), b"street manifest", true)
        .await;
    assert!(office.retained(&topic("lixia-demo", "#")).await.is_empty());
}

/// The real daemon, as `lobby-1` of `lixia-demo` following `yanshan-street`
/// with the shipped ACL: it connects over TLS with its password (its will
/// on its own status), subscribes, takes a notice of each scope, and its
/// status reaches the office. So the ACL grants everything a screen does.
#[tokio::test(flavor = "multi_thread")]
async fn a_real_screen_works_under_the_acl() {
    let Some(broker) = Broker::start("a_real_screen_works_under_the_acl") else {
        return;
    };
    let mut office = broker.peer("office-lixia").await;
    let status = topic("lixia-demo", "screens/lobby-1/status");
    office.subscribe(&status).await;
    let home = common::notice("lixia-demo", "home-1", 1);
    office
        .publish(
            &topic("lixia-demo", "notices/home-1"),
            &common::signed(&home),
            true,
        )
        .await;
    let (street_office, street_supervisor) = (
        gongkai::protocol::SecretKey::from_seed([4; 32]),
        gongkai::protocol::SecretKey::from_seed([5; 32]),
    );
    let mut street = broker.peer("office-yanshan").await;
    let upper = common::notice("yanshan-street", "street-1", 1);
    street
        .publish(
            &topic("yanshan-street", "notices/street-1"),
            &common::signed_by(&upper, &[&street_office, &street_supervisor]),
            true,
        )
        .await;

    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("mqtt-password");
    std::fs::write(&password_file, format!("{}\n", password("lobby-1"))).unwrap();
    let url = format!("mqtts://localhost:{}", broker.port);
    let text = common::config_text(&url, "lixia-demo", "lobby-1", &dir.path().join("screen.db"))
        .replace(
            &format!("url = \"{url}\""),
            &format!(
                "url = \"{url}\"\nusername = \"lobby-1\"\npassword_file = \"{}\"\nca_file = \"{}\"",
                password_file.display(),
                broker.ca.display()
            ),
        );
    let text = format!(
        "{text}\n[[follow]]\nscope = \"yanshan-street\"\noffice = [\"{}\"]\nsupervisor = [\"{}\"]\n",
        street_office.public().to_base64(),
        street_supervisor.public().to_base64()
    );
    let daemon = gongkai::daemon::Daemon::start(gongkai::config::Config::parse(&text).unwrap())
        .await
        .unwrap();
    common::wait_for(&daemon, "a notice of each scope", |cat| {
        use common::ById;
        cat.has("home-1") && cat.has("street-1")
    })
    .await;
    while !office
        .on(&status)
        .iter()
        .any(|p| String::from_utf8_lossy(p).contains("\"online\""))
    {
        office.next().await;
    }
    daemon.shutdown().await;
}

/// A screen struck off (its roster line and password line deleted, the ACL
/// made again) loses its access at the broker's reload: its connection is
/// closed and it cannot connect again; the others carry on.
#[tokio::test(flavor = "multi_thread")]
async fn a_screen_struck_off_loses_its_access_at_a_reload() {
    let Some(broker) = Broker::start("a_screen_struck_off_loses_its_access_at_a_reload") else {
        return;
    };
    let mut stolen = broker.peer("lobby-1").await;
    let mut kiosk = broker.peer("kiosk-1").await;
    let kiosk_cmd = topic("lixia-demo", "screens/kiosk-1/cmd");
    kiosk.subscribe(&kiosk_cmd).await;

    let roster = broker.root.path().join("gongkai/roster");
    let text = std::fs::read_to_string(shipped("roster.example")).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("screen lobby-1 "))
        .collect();
    assert_eq!(kept.len() + 1, text.lines().count());
    std::fs::write(&roster, kept.join("\n")).unwrap();
    let (status, acl, errors) = gongkai_acl(&roster);
    assert_eq!(status, 0, "{errors}");
    assert!(!acl.contains("lobby-1"));
    std::fs::write(broker.root.path().join("gongkai/acl"), acl).unwrap();
    let deleted = Command::new("mosquitto_passwd")
        .arg("-D")
        .arg(broker.root.path().join("gongkai/passwords"))
        .arg("lobby-1")
        .status()
        .unwrap();
    assert!(deleted.success());
    broker.mosquitto.reload();

    stolen.closed().await;
    assert!(
        Peer::connect(&broker, Some(("lobby-1", &password("lobby-1"))), "lobby-1")
            .await
            .is_err(),
        "a struck-off screen connected again"
    );
    let mut office = broker.peer("office-lixia").await;
    office.publish(&kiosk_cmd, b"identify kiosk-1", false).await;
    kiosk.until(&kiosk_cmd, b"identify kiosk-1").await;
}

/// `acl.example` is what `gongkai-acl` makes of `roster.example`, so the
/// example a reader sees is the ACL the other tests run.
#[test]
fn the_example_acl_is_what_gongkai_acl_makes_of_the_example_roster() {
    if !tools(
        "the_example_acl_is_what_gongkai_acl_makes_of_the_example_roster",
        &["awk"],
    ) {
        return;
    }
    let (status, acl, errors) = gongkai_acl(&shipped("roster.example"));
    assert_eq!(status, 0, "{errors}");
    assert_eq!(
        acl,
        std::fs::read_to_string(shipped("acl.example")).unwrap(),
        "run: config/mosquitto/gongkai-acl config/mosquitto/roster.example > config/mosquitto/acl.example"
    );
}

/// A roster with mistakes gets every one named with its line, and no ACL.
#[test]
fn gongkai_acl_names_every_problem_and_writes_nothing() {
    if !tools(
        "gongkai_acl_names_every_problem_and_writes_nothing",
        &["awk"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let roster = dir.path().join("roster");
    std::fs::write(
        &roster,
        "scope lixia-demo yanshan-street\n\
         office office-lixia lixia-demo\n\
         screen lobby-1 lixia-demo\n\
         screen lobby-1 lixia-demo\n\
         screen lobby+2 lixia-demo\n\
         screen lobby-3 nowhere\n\
         office office-x lixia/demo\n\
         screeen lobby-4 lixia-demo\n",
    )
    .unwrap();
    let (status, acl, errors) = gongkai_acl(&roster);
    assert_eq!(status, 65, "{errors}");
    assert_eq!(acl, "");
    for expected in [
        ":1: scope \"yanshan-street\" is not declared",
        ":4: user \"lobby-1\" already appears on line 3",
        ":5: \"lobby+2\" is not a valid id",
        ":6: scope \"nowhere\" is not declared",
        ":7: \"lixia/demo\" is not a valid id",
        ":8: unknown entry \"screeen\"",
    ] {
        assert!(errors.contains(expected), "{expected:?} not in:\n{errors}");
    }
}
