//! office.toml, the configuration of the office's server and staff
//! commands: where the server listens and how (HTTPS with its certificate,
//! or plain HTTP on loopback), the office's database, the server's limits,
//! the calendar its reply deadlines are counted in, the broker it follows
//! and the scopes it follows there with their keys, and the base of the
//! public pages that QR codes open.
//!
//! Not the screen's configuration: a screen's link to the office's API is
//! `config::OfficeApi`, its `[office]` section. Unknown keys are errors, so
//! that a mistyped key is not silently left at its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::mqtt::BrokerUrl;
use crate::protocol::topic::DEFAULT_PREFIX;
use crate::protocol::{Category, PublicKey, TrustPolicy, is_valid_id};
use crate::workdays::Calendar;

use super::http::Limits;

/// office.toml, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: SocketAddr,
    database: PathBuf,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    holidays: Option<PathBuf>,
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<PathBuf>,
    #[serde(default)]
    plain_http: bool,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    broker: Option<OneOrMany>,
    #[serde(default)]
    broker_username: Option<String>,
    #[serde(default)]
    broker_password_file: Option<PathBuf>,
    #[serde(default)]
    broker_ca_file: Option<PathBuf>,
    #[serde(default)]
    topic_prefix: Option<String>,
    #[serde(default)]
    scope: Vec<ScopeFile>,
}

/// `broker = "mqtt://…"` or `broker = ["mqtt://a", "mqtt://b"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// One `[[scope]]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeFile {
    id: String,
    #[serde(default)]
    office: Vec<String>,
    #[serde(default)]
    supervisor: Vec<String>,
    #[serde(default)]
    operator: Vec<String>,
    #[serde(default)]
    urgent_office_only: bool,
    #[serde(default)]
    office_only_categories: Vec<String>,
}

/// office.toml, checked.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the server listens, e.g. "0.0.0.0:8443".
    pub listen: SocketAddr,
    /// The office's SQLite file.
    pub database: PathBuf,
    /// Timeouts and the connection cap; defaults when left out.
    pub limits: Limits,
    /// A holiday calendar of the office's own, in the format of
    /// `config/holidays/cn.toml`, replacing the national one built in.
    pub holidays: Option<PathBuf>,
    /// The calendar of working days: the file named by `holidays`, or the
    /// national one.
    pub calendar: Calendar,
    /// How the server speaks: HTTPS (with a certificate of office.toml's or
    /// its own), or plain HTTP, which only a loopback `listen` may use.
    pub transport: Transport,
    /// The base of the public pages (`{public_url}/n/{scope}/{id}`), what
    /// a notice's `qr_url` starts with; no trailing slash.
    pub public_url: Option<String>,
    /// The broker the office publishes to and follows, when set.
    pub broker: Option<BrokerConfig>,
    /// The topic prefix of every scope (default `gongkai/v1`).
    pub topic_prefix: String,
    /// The scopes the office publishes to and follows.
    pub scopes: Vec<ScopeConfig>,
}

/// How the server speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// HTTPS with this PEM certificate chain and key.
    Tls { cert: PathBuf, key: PathBuf },
    /// HTTPS with the server's own self-signed certificate, made at its
    /// first start and kept beside the database.
    SelfSigned,
    /// Plain HTTP (`plain_http = true`): loopback only.
    Plain,
}

/// The broker the office follows (and console-b publishes to).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// One broker, or a cluster's nodes; never empty.
    pub urls: Vec<BrokerUrl>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

/// One `[[scope]]`: a scope the office publishes to, with the keys trusted
/// there in addition to the people enrolled in the office's database.
#[derive(Debug, Clone)]
pub struct ScopeConfig {
    pub id: String,
    pub policy: TrustPolicy,
}

impl ServerConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut config =
            Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
        if let Some(file) = &config.holidays {
            let text = std::fs::read_to_string(file).with_context(|| {
                format!(
                    "{}: cannot read the holidays file {}",
                    path.display(),
                    file.display()
                )
            })?;
            config.calendar = Calendar::from_toml(&text).map_err(|problems| {
                anyhow::anyhow!(
                    "{}: holidays file {}: {problems}",
                    path.display(),
                    file.display()
                )
            })?;
        }
        Ok(config)
    }

    /// Parses office.toml's text, reading no other file: every problem at
    /// once.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text)?;
        let mut problems = file.limits.problems();
        let transport = match (file.plain_http, file.tls_cert, file.tls_key) {
            (false, Some(cert), Some(key)) => Transport::Tls { cert, key },
            (false, None, None) => Transport::SelfSigned,
            (false, Some(_), None) => {
                problems.push("tls_cert is set but tls_key is not".into());
                Transport::SelfSigned
            }
            (false, None, Some(_)) => {
                problems.push("tls_key is set but tls_cert is not".into());
                Transport::SelfSigned
            }
            (true, None, None) => Transport::Plain,
            (true, _, _) => {
                problems.push(
                    "plain_http = true and tls_cert/tls_key contradict each other: choose one"
                        .into(),
                );
                Transport::Plain
            }
        };
        if transport == Transport::Plain && !file.listen.ip().is_loopback() {
            problems.push(format!(
                "plain_http = true needs a loopback listen address (127.0.0.1 or ::1), not {}: \
                 bearer tokens and passwords would cross the network in clear; leave \
                 plain_http out to serve HTTPS",
                file.listen
            ));
        }
        let public_url = file.public_url.map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &public_url {
            if !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                problems.push(format!(
                    "public_url {u:?} must be an http(s) URL, e.g. \"https://office.example\""
                ));
            }
        }
        let broker = file.broker.map(|b| {
            let texts = match b {
                OneOrMany::One(one) => vec![one],
                OneOrMany::Many(many) => many,
            };
            if texts.is_empty() {
                problems.push("broker must list at least one URL".into());
            }
            let mut urls: Vec<BrokerUrl> = Vec::new();
            for text in texts {
                match BrokerUrl::parse(&text) {
                    Ok(url) if urls.contains(&url) => {
                        problems.push(format!("broker {text:?} is listed twice"))
                    }
                    Ok(url) => urls.push(url),
                    Err(e) => problems.push(format!("broker: {e}")),
                }
            }
            BrokerConfig {
                urls,
                username: file.broker_username.clone().filter(|u| !u.is_empty()),
                password_file: file.broker_password_file.clone(),
                ca_file: file.broker_ca_file.clone(),
            }
        });
        if broker.is_none()
            && (file.broker_username.is_some()
                || file.broker_password_file.is_some()
                || file.broker_ca_file.is_some())
        {
            problems.push(
                "broker_username, broker_password_file or broker_ca_file is set but broker is not"
                    .into(),
            );
        }
        if let Some(b) = &broker {
            if b.password_file.is_some() && b.username.is_none() {
                problems.push("broker_password_file is set but broker_username is not".into());
            }
        }
        let topic_prefix = file
            .topic_prefix
            .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        if topic_prefix.is_empty()
            || topic_prefix.contains(['+', '#'])
            || topic_prefix.starts_with('/')
        {
            problems.push(format!(
                "topic_prefix {topic_prefix:?} must be a topic without wildcards"
            ));
        }
        let mut scopes: Vec<ScopeConfig> = Vec::new();
        for (i, scope) in file.scope.into_iter().enumerate() {
            let name = format!("scope[{i}]");
            if !is_valid_id(&scope.id) {
                problems.push(format!(
                    "{name}.id {:?} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$",
                    scope.id
                ));
                continue;
            }
            if scopes.iter().any(|s| s.id == scope.id) {
                problems.push(format!("{name}.id {:?} is listed twice", scope.id));
                continue;
            }
            let policy = scope_policy(&name, &scope, &mut problems);
            scopes.push(ScopeConfig {
                id: scope.id,
                policy,
            });
        }
        if broker.is_some() && scopes.is_empty() {
            problems.push("broker is set but no [[scope]] says what to follow there".into());
        }
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(ServerConfig {
            listen: file.listen,
            database: file.database,
            limits: file.limits,
            holidays: file.holidays,
            calendar: Calendar::default(),
            transport,
            public_url,
            broker,
            topic_prefix,
            scopes,
        })
    }

    /// The public page of a notice: what its `qr_url` should be.
    pub fn public_page(&self, scope: &str, id: &str) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|base| format!("{base}/n/{scope}/{id}"))
    }

    /// The store of what the office follows on the broker: the screens' own
    /// store, in a file of its own beside the office's database.
    pub fn follow_store(&self) -> PathBuf {
        beside(&self.database, "follow.db")
    }

    /// Where the server keeps the certificate and key it made itself.
    pub fn self_signed_paths(&self) -> (PathBuf, PathBuf) {
        (
            beside(&self.database, "tls-cert.pem"),
            beside(&self.database, "tls-key.pem"),
        )
    }
}

/// `<database>.<suffix>`, in the database's folder.
fn beside(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "office.db".into());
    name.push(".");
    name.push(suffix);
    database.with_file_name(name)
}

/// A `[[scope]]`'s keys and policy, with the rules of a screen's `[trust]`:
/// a key in two roles is refused.
fn scope_policy(name: &str, scope: &ScopeFile, problems: &mut Vec<String>) -> TrustPolicy {
    let mut keys = |role: &str, texts: &[String]| -> Vec<PublicKey> {
        let mut keys = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match PublicKey::from_base64(text) {
                Ok(k) => keys.push(k),
                Err(e) => problems.push(format!(
                    "{name}.{role}[{i}] {text:?} is not an Ed25519 public key in base64: {e}"
                )),
            }
        }
        keys
    };
    let office = keys("office", &scope.office);
    let supervisor = keys("supervisor", &scope.supervisor);
    let operator = keys("operator", &scope.operator);
    for k in office.iter().filter(|k| supervisor.contains(k)) {
        problems.push(format!(
            "{name}: key {} is listed as both office and supervisor; one signature would then approve alone",
            k.to_base64()
        ));
    }
    for k in operator
        .iter()
        .filter(|k| office.contains(k) || supervisor.contains(k))
    {
        problems.push(format!(
            "{name}: key {} is listed as operator and as a person's key; the office server's \
             automation key must never count for a notice",
            k.to_base64()
        ));
    }
    let mut office_only_categories = Vec::new();
    for c in &scope.office_only_categories {
        match Category::parse(c) {
            Some(cat) => office_only_categories.push(cat),
            None => problems.push(format!(
                "{name}.office_only_categories: {c:?} is not one of affairs, finance, government, services, reply"
            )),
        }
    }
    TrustPolicy {
        office,
        supervisor,
        operator,
        urgent_office_only: scope.urgent_office_only,
        office_only_categories,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=";

    fn parse(text: &str) -> Result<ServerConfig, String> {
        ServerConfig::parse(text).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn without_a_certificate_the_server_makes_its_own() {
        let c = parse("listen = \"0.0.0.0:8443\"\ndatabase = \"/var/lib/o/office.db\"\n").unwrap();
        assert_eq!(c.transport, Transport::SelfSigned);
        assert_eq!(
            c.self_signed_paths().0,
            PathBuf::from("/var/lib/o/office.db.tls-cert.pem")
        );
        assert_eq!(
            c.follow_store(),
            PathBuf::from("/var/lib/o/office.db.follow.db")
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let base = "database = \"o.db\"\nplain_http = true\n";
        assert_eq!(
            parse(&format!("listen = \"127.0.0.1:8080\"\n{base}"))
                .unwrap()
                .transport,
            Transport::Plain
        );
        assert_eq!(
            parse(&format!("listen = \"[::1]:8080\"\n{base}"))
                .unwrap()
                .transport,
            Transport::Plain
        );
        for listen in ["0.0.0.0:8080", "192.168.1.5:8080", "[::]:8080"] {
            let e = parse(&format!("listen = \"{listen}\"\n{base}")).unwrap_err();
            assert!(e.contains("loopback"), "{e}");
        }
    }

    #[test]
    fn a_certificate_needs_its_key_and_excludes_plain_http() {
        let base = "listen = \"0.0.0.0:8443\"\ndatabase = \"o.db\"\n";
        let e = parse(&format!("{base}tls_cert = \"c.pem\"\n")).unwrap_err();
        assert!(e.contains("tls_key"), "{e}");
        let e = parse(&format!(
            "{base}tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nplain_http = true\n"
        ))
        .unwrap_err();
        assert!(e.contains("contradict"), "{e}");
        let c = parse(&format!(
            "{base}tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.transport,
            Transport::Tls {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
    }

    #[test]
    fn scopes_brokers_and_public_url() {
        let c = parse(&format!(
            "listen = \"0.0.0.0:8443\"\ndatabase = \"o.db\"\n\
             broker = [\"mqtt://a:1883\", \"mqtts://b\"]\npublic_url = \"https://office.example/\"\n\
             [[scope]]\nid = \"lixia-demo\"\noffice = [\"{KEY}\"]\n\
             [[scope]]\nid = \"street\"\n"
        ))
        .unwrap();
        assert_eq!(c.broker.as_ref().unwrap().urls.len(), 2);
        assert_eq!(
            c.public_page("lixia-demo", "n1").unwrap(),
            "https://office.example/n/lixia-demo/n1"
        );
        assert_eq!(c.scopes.len(), 2);
        assert_eq!(c.scopes[0].policy.office.len(), 1);
        assert!(c.scopes[1].policy.office.is_empty());
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let e = parse(&format!(
            "listen = \"0.0.0.0:8443\"\ndatabase = \"o.db\"\nbroker = \"http://x\"\n\
             public_url = \"ftp://x\"\n\
             [[scope]]\nid = \"bad id\"\n\
             [[scope]]\nid = \"a\"\noffice = [\"{KEY}\"]\nsupervisor = [\"{KEY}\", \"nope\"]\n\
             office_only_categories = [\"weather\"]\n"
        ))
        .unwrap_err();
        for part in [
            "broker: scheme",
            "public_url",
            "scope[0].id",
            "scope[1].supervisor[1]",
            "both office and supervisor",
            "weather",
        ] {
            assert!(e.contains(part), "{part} missing in {e}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse("listen = \"127.0.0.1:1\"\ndatabase = \"o.db\"\nbrokers = \"mqtt://x\"\n")
            .unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = parse(
            "listen = \"127.0.0.1:1\"\ndatabase = \"o.db\"\n[[scope]]\nid = \"a\"\nkeys = []\n",
        )
        .unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }
}
