//! `mqtts://` with a private CA and a user name and password, against a real
//! Mosquitto with a TLS listener: the set-up of a district's broker.

use crate::common;

use std::time::Duration;

use common::*;
use gongkai::daemon::Daemon;
use gongkai::mqtt::{BrokerUrl, Brokers, Connect};
use gongkai::office::broker::OneShotClient;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and a certificate for `localhost` signed by it, as PEM files in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtts_with_a_private_ca_and_a_password() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let passwords = certs.path().join("passwords");
    let c = community("tls");
    let screen = screen_id(&c);
    let made = std::process::Command::new("mosquitto_passwd")
        .args([
            "-b",
            "-c",
            passwords.to_str().unwrap(),
            &screen,
            "s3cret-screen",
        ])
        .status();
    if made.is_err()
        && !tools(
            "mqtts_with_a_private_ca_and_a_password",
            &["mosquitto_passwd"],
        )
    {
        return;
    }
    std::process::Command::new("mosquitto_passwd")
        .args(["-b", passwords.to_str().unwrap(), "office", "s3cret-office"])
        .status()
        .unwrap();
    let path = |name: &str| certs.path().join(name).display().to_string();
    let extra = format!(
        "allow_anonymous false\npassword_file {}\ncafile {}\ncertfile {}\nkeyfile {}\n",
        path("passwords"),
        path("ca.pem"),
        path("server.pem"),
        path("server.key")
    );
    let Some(broker) = Mosquitto::start("mqtts_with_a_private_ca_and_a_password", &extra) else {
        return;
    };
    let url = format!("mqtts://localhost:{}", broker.port);

    // The office publishes over TLS with its own credentials.
    let office = Connect {
        brokers: Brokers::one(BrokerUrl::parse(&url).unwrap()),
        client_id: format!("office-{c}"),
        username: Some("office".into()),
        password: Some("s3cret-office".into()),
        ca_file: Some(certs.path().join("ca.pem")),
        clean_session: true,
        manual_acks: false,
        will: None,
    };
    let mut client = OneShotClient::connect(&office).await.unwrap();
    client
        .publish_retained(&topics(&c).notice("n1"), signed(&notice(&c, "n1", 1)))
        .await
        .unwrap();
    client.close().await;

    // A screen with the CA, its user name and a password file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mqtt-password"), "s3cret-screen\n").unwrap();
    let text = config_text(&url, &c, &screen, &dir.path().join("screen.db")).replace(
        &format!("url = \"{url}\""),
        &format!(
            "url = \"{url}\"\nusername = \"{screen}\"\npassword_file = \"{}\"\nca_file = \"{}\"",
            dir.path().join("mqtt-password").display(),
            path("ca.pem")
        ),
    );
    let daemon = Daemon::start(gongkai::config::Config::parse(&text).unwrap())
        .await
        .unwrap();
    wait_for(&daemon, "the notice over TLS", |cat| cat.has("n1")).await;
    daemon.shutdown().await;

    // A wrong password never connects; the screen keeps retrying with backoff.
    std::fs::write(dir.path().join("mqtt-password"), "wrong\n").unwrap();
    let daemon = Daemon::start(gongkai::config::Config::parse(&text).unwrap())
        .await
        .unwrap();
    let mut connected = daemon.connected.clone();
    let outcome = tokio::time::timeout(Duration::from_secs(2), connected.wait_for(|up| *up)).await;
    assert!(outcome.is_err(), "connected with a wrong password");
    assert!(daemon.catalog.borrow().has("n1"), "still serving its cache");
    daemon.shutdown().await;

    // Without the private CA, the system's roots do not trust the broker.
    let mut untrusted = office.clone();
    untrusted.ca_file = None;
    assert!(OneShotClient::connect(&untrusted).await.is_err());
}
