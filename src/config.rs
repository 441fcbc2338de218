//! The screen's configuration (TOML). Unknown keys are rejected and every
//! problem is reported at once, so an installer fixes a file in one pass;
//! `gongkaid --check` runs exactly this code and exits 78 on problems.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::mqtt::BrokerUrl;
use crate::protocol::topic::DEFAULT_PREFIX;
use crate::protocol::{Category, Follows, PublicKey, Scope, TopicSpace, TrustPolicy, is_valid_id};
use crate::schedule::Audience;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Led,
    Kiosk,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Led => "led",
            Mode::Kiosk => "kiosk",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub screen: ScreenConfig,
    pub mqtt: MqttConfig,
    /// The home community's keys and policy.
    pub trust: TrustPolicy,
    /// **[1.1]** Upper scopes the screen follows (`[[follow]]`, section 3.7).
    pub follow: Vec<FollowConfig>,
    pub store: StoreConfig,
    pub display: DisplayConfig,
    pub office: Option<OfficeApi>,
}

/// One `[[follow]]` entry: a scope above the community (a street office, a
/// district) with its own keys and policy, as `[trust]` is for the home one.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    pub scope: String,
    pub trust: TrustPolicy,
}

#[derive(Debug, Clone)]
pub struct ScreenConfig {
    pub id: String,
    pub community: String,
    pub mode: Mode,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// One broker, or the nodes of a cluster (`url = ["mqtt://a", "mqtt://b"]`);
    /// never empty.
    pub urls: Vec<BrokerUrl>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub topic_prefix: String,
    pub ca_file: Option<PathBuf>,
    pub fetch_batch: usize,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// Where fetched media are cached by hash; by default `media` beside the
    /// store file.
    pub media_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct DisplayConfig {
    pub dwell_seconds: u64,
    /// The screen's size in pixels; portrait when height > width.
    pub width: u32,
    pub height: u32,
    /// Fill the whole screen (appliances), or a window of `width`×`height`.
    pub fullscreen: bool,
    /// The name on a kiosk's home screen, e.g. the residents' committee.
    pub title: String,
    /// Seconds without a touch before a kiosk returns to the rotation.
    pub idle_seconds: u64,
    /// A kiosk takes at most one feedback submission per this many seconds.
    pub feedback_interval_seconds: u64,
    /// Quiet hours (China time): the screen is dark, unless an urgent
    /// notice is active.
    pub quiet: Vec<crate::schedule::QuietWindow>,
    /// Where the backlight devices are (`/sys/class/backlight`).
    pub backlight_dir: PathBuf,
}

/// The screen's `[office]` section: its link to the office's HTTP API
/// (PROTOCOL.md section 7), where residents' feedback goes. Not office.toml,
/// which is `office::ServerConfig`.
#[derive(Debug, Clone)]
pub struct OfficeApi {
    pub url: String,
    pub token_file: Option<PathBuf>,
    /// A PEM file of the certificates to trust for the office's HTTPS (a
    /// private CA, or the office server's self-signed certificate) instead
    /// of the system's CA bundle, as `mqtt.ca_file` is for the broker.
    pub ca_file: Option<PathBuf>,
    /// How long one request to the office may take before it is retried.
    pub timeout_seconds: u64,
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Config {
    pub fn load(path: &Path) -> Result<Self, Problems> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problems(vec![format!("cannot read {}: {e}", path.display())]))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, Problems> {
        let root: Table = text.parse().map_err(|e: toml::de::Error| {
            Problems(vec![format!("not valid TOML: {}", e.message())])
        })?;
        let mut p = Vec::new();
        let known_sections = [
            "screen", "mqtt", "trust", "follow", "store", "display", "office",
        ];
        for key in root.keys() {
            if !known_sections.contains(&key.as_str()) {
                p.push(format!("unknown section [{key}]"));
            }
        }

        let mut s = Section::new(&root, "screen", true, &mut p);
        let id = s.string("id", true);
        let community = s.string("community", true);
        let mode = s.string("mode", false);
        s.finish();
        for (key, value) in [("screen.id", &id), ("screen.community", &community)] {
            if let Some(v) = value.as_ref().filter(|v| !is_valid_id(v)) {
                p.push(format!(
                    "{key} {v:?} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$"
                ));
            }
        }
        let mode = match mode.as_deref() {
            None | Some("led") => Mode::Led,
            Some("kiosk") => Mode::Kiosk,
            Some(other) => {
                p.push(format!(
                    "screen.mode {other:?} must be \"led\" or \"kiosk\""
                ));
                Mode::Led
            }
        };

        let mut s = Section::new(&root, "mqtt", true, &mut p);
        let url = s.get("url", true).cloned();
        let username = s.string("username", false).filter(|u| !u.is_empty());
        let password_file = s.string("password_file", false).filter(|u| !u.is_empty());
        let topic_prefix = s.string("topic_prefix", false);
        let ca_file = s.string("ca_file", false).filter(|u| !u.is_empty());
        let fetch_batch = s.integer("fetch_batch", 1, 1000);
        s.finish();
        let urls = url.map(|u| broker_urls(&u, &mut p)).unwrap_or_default();
        if let Some(prefix) = &topic_prefix {
            if prefix.is_empty() || prefix.contains(['+', '#']) || prefix.starts_with('/') {
                p.push(format!(
                    "mqtt.topic_prefix {prefix:?} must be a topic without wildcards"
                ));
            }
        }
        if password_file.is_some() && username.is_none() {
            p.push("mqtt.password_file is set but mqtt.username is not".into());
        }

        let mut s = Section::new(&root, "trust", true, &mut p);
        let trust = read_policy(&mut s);
        s.finish();

        let mut follow: Vec<FollowConfig> = Vec::new();
        match root.get("follow") {
            None => {}
            Some(Value::Array(entries)) => {
                for (i, entry) in entries.iter().enumerate() {
                    let name = format!("follow[{i}]");
                    let Value::Table(table) = entry else {
                        p.push(format!("{name} must be a table ([[follow]])"));
                        continue;
                    };
                    let mut s = Section::of(table, name.clone(), &mut p);
                    let scope = s.string("scope", true);
                    let trust = read_policy(&mut s);
                    s.finish();
                    let Some(scope) = scope else { continue };
                    if !is_valid_id(&scope) {
                        p.push(format!(
                            "{name}.scope {scope:?} must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}$"
                        ));
                    } else if community.as_deref() == Some(scope.as_str()) {
                        p.push(format!(
                            "{name}.scope {scope:?} is the screen's own community; its keys belong in [trust]"
                        ));
                    } else if follow.iter().any(|f| f.scope == scope) {
                        p.push(format!("{name}.scope {scope:?} is followed twice"));
                    } else {
                        follow.push(FollowConfig { scope, trust });
                    }
                }
            }
            Some(_) => p.push("follow must be a list of tables ([[follow]])".into()),
        }

        let mut s = Section::new(&root, "store", true, &mut p);
        let store_path = s.string("path", true);
        let media_dir = s.string("media_dir", false).filter(|d| !d.is_empty());
        s.finish();

        let mut s = Section::new(&root, "display", false, &mut p);
        let dwell_seconds = s.integer("dwell_seconds", 1, 3600);
        let width = s.integer("width", 320, 7680);
        let height = s.integer("height", 320, 7680);
        let fullscreen = s.boolean("fullscreen");
        let title = s.string("title", false);
        let idle_seconds = s.integer("idle_seconds", 10, 3600);
        let feedback_interval_seconds = s.integer("feedback_interval_seconds", 0, 3600);
        let quiet_texts = s.strings("quiet").unwrap_or_default();
        let backlight_dir = s.string("backlight_dir", false);
        s.finish();
        let mut quiet = Vec::new();
        for text in &quiet_texts {
            match crate::schedule::QuietWindow::parse(text) {
                Ok(w) => quiet.push(w),
                Err(e) => p.push(format!("display.quiet: {e}")),
            }
        }

        let office_section = root.contains_key("office");
        let mut s = Section::new(&root, "office", false, &mut p);
        let office_url = s.string("url", office_section);
        let token_file = s.string("token_file", false).filter(|t| !t.is_empty());
        let timeout_seconds = s.integer("timeout_seconds", 1, 300);
        let office_ca_file = s.string("ca_file", false).filter(|c| !c.is_empty());
        s.finish();
        if let Some(u) = &office_url {
            match url::Url::parse(u) {
                Ok(url) if url.scheme() == "https" => {}
                Ok(url) if url.scheme() == "http" => {
                    if office_ca_file.is_some() {
                        p.push(format!(
                            "office.ca_file is set but office.url {u:?} is plain http: use https://"
                        ));
                    }
                }
                _ => p.push(format!("office.url {u:?} must be an http(s) URL")),
            }
        }

        if !p.is_empty() {
            return Err(Problems(p));
        }
        // Every required value is present: the problem list would say otherwise.
        Ok(Config {
            screen: ScreenConfig {
                id: id.unwrap_or_default(),
                community: community.unwrap_or_default(),
                mode,
            },
            mqtt: MqttConfig {
                urls,
                username,
                password_file: password_file.map(PathBuf::from),
                topic_prefix: topic_prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
                ca_file: ca_file.map(PathBuf::from),
                fetch_batch: fetch_batch.unwrap_or(50) as usize,
            },
            trust,
            follow,
            store: {
                let path = PathBuf::from(store_path.unwrap_or_default());
                let media_dir = media_dir.map(PathBuf::from).unwrap_or_else(|| {
                    path.parent()
                        .unwrap_or(std::path::Path::new("."))
                        .join("media")
                });
                StoreConfig { path, media_dir }
            },
            display: DisplayConfig {
                dwell_seconds: dwell_seconds.unwrap_or(12) as u64,
                width: width.unwrap_or(1920) as u32,
                height: height.unwrap_or(1080) as u32,
                fullscreen: fullscreen.unwrap_or(true),
                title: title.unwrap_or_else(|| "社区".to_owned()),
                idle_seconds: idle_seconds.unwrap_or(60) as u64,
                feedback_interval_seconds: feedback_interval_seconds.unwrap_or(20) as u64,
                quiet,
                backlight_dir: backlight_dir
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/sys/class/backlight")),
            },
            office: office_url.map(|url| OfficeApi {
                url,
                token_file: token_file.map(PathBuf::from),
                ca_file: office_ca_file.map(PathBuf::from),
                timeout_seconds: timeout_seconds.unwrap_or(20) as u64,
            }),
        })
    }

    pub fn topics(&self) -> TopicSpace {
        TopicSpace::new(&self.mqtt.topic_prefix, &self.screen.community)
    }

    /// Every scope the screen follows with its keys, the home community first.
    pub fn follows(&self) -> Follows {
        let upper = self
            .follow
            .iter()
            .map(|f| Scope {
                space: TopicSpace::new(&self.mqtt.topic_prefix, &f.scope),
                policy: f.trust.clone(),
            })
            .collect();
        Follows::new(
            Scope {
                space: self.topics(),
                policy: self.trust.clone(),
            },
            upper,
        )
    }

    /// This screen, for targeting (`screens`, `communities`).
    pub fn audience(&self) -> Audience {
        Audience::new(&self.screen.id, &self.screen.community)
    }
}

/// A scope's keys and policy: `[trust]` for the home community, each
/// `[[follow]]` for a scope above it.
fn read_policy(s: &mut Section<'_>) -> TrustPolicy {
    let office = s.keys("office").unwrap_or_default();
    let supervisor = s.keys("supervisor").unwrap_or_default();
    let operator = s.optional_keys("operator").unwrap_or_default();
    let urgent_office_only = s.boolean("urgent_office_only").unwrap_or(false);
    let categories = s.strings("office_only_categories").unwrap_or_default();
    for k in office.iter().filter(|k| supervisor.contains(k)) {
        let name = s.name.clone();
        s.problem(format!(
            "{name}: key {} is listed as both office and supervisor; one signature would then approve alone",
            k.to_base64()
        ));
    }
    for k in operator
        .iter()
        .filter(|k| office.contains(k) || supervisor.contains(k))
    {
        let name = s.name.clone();
        s.problem(format!(
            "{name}: key {} is listed as operator and as a person's key; the office server's \
             automation key must never count for a notice",
            k.to_base64()
        ));
    }
    let mut office_only_categories = Vec::new();
    for c in categories {
        match Category::parse(&c) {
            Some(cat) => office_only_categories.push(cat),
            None => {
                let name = s.name.clone();
                s.problem(format!(
                    "{name}.office_only_categories: {c:?} is not one of affairs, finance, government, services, reply"
                ))
            }
        }
    }
    TrustPolicy {
        office,
        supervisor,
        operator,
        urgent_office_only,
        office_only_categories,
    }
}

/// `mqtt.url`: one URL, or a list of them (the nodes of a cluster), each
/// checked; the problems go to `p`.
fn broker_urls(value: &Value, p: &mut Vec<String>) -> Vec<BrokerUrl> {
    let texts: Vec<(String, &Value)> = match value {
        Value::Array(items) if items.is_empty() => {
            p.push("mqtt.url must list at least one broker".into());
            return Vec::new();
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("mqtt.url[{i}]"), v))
            .collect(),
        single => vec![("mqtt.url".to_owned(), single)],
    };
    let mut urls: Vec<BrokerUrl> = Vec::new();
    for (key, value) in texts {
        let Some(text) = value.as_str() else {
            p.push(format!(
                "{key} must be a string like \"mqtts://broker.example:8883\", or mqtt.url a list of them"
            ));
            continue;
        };
        match BrokerUrl::parse(text) {
            Ok(url) if urls.contains(&url) => {
                p.push(format!("{key} {text:?} is listed twice"));
            }
            Ok(url) => urls.push(url),
            Err(e) => p.push(format!("{key}: {e}")),
        }
    }
    urls
}

/// Reads one section's keys, noting every problem and every unknown key.
struct Section<'a> {
    name: String,
    table: Option<&'a Table>,
    seen: BTreeSet<&'static str>,
    problems: &'a mut Vec<String>,
}

impl<'a> Section<'a> {
    fn new(
        root: &'a Table,
        name: &'static str,
        required: bool,
        problems: &'a mut Vec<String>,
    ) -> Self {
        let table = match root.get(name) {
            Some(Value::Table(t)) => Some(t),
            Some(_) => {
                problems.push(format!("[{name}] must be a table"));
                None
            }
            None => {
                if required {
                    problems.push(format!("missing section [{name}]"));
                }
                None
            }
        };
        Self {
            name: name.to_owned(),
            table,
            seen: BTreeSet::new(),
            problems,
        }
    }

    /// A table that is not a top-level section: one `[[follow]]` entry.
    fn of(table: &'a Table, name: String, problems: &'a mut Vec<String>) -> Self {
        Self {
            name,
            table: Some(table),
            seen: BTreeSet::new(),
            problems,
        }
    }

    fn problem(&mut self, text: String) {
        self.problems.push(text);
    }

    fn get(&mut self, key: &'static str, required: bool) -> Option<&'a Value> {
        self.seen.insert(key);
        let value = self.table.and_then(|t| t.get(key));
        if value.is_none() && required && self.table.is_some() {
            self.problems.push(format!("missing {}.{key}", self.name));
        }
        value
    }

    fn wrong(&mut self, key: &str, expected: &str) {
        self.problems
            .push(format!("{}.{key} must be {expected}", self.name));
    }

    fn string(&mut self, key: &'static str, required: bool) -> Option<String> {
        match self.get(key, required)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.wrong(key, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, key: &'static str) -> Option<bool> {
        match self.get(key, false)? {
            Value::Boolean(b) => Some(*b),
            _ => {
                self.wrong(key, "true or false");
                None
            }
        }
    }

    fn integer(&mut self, key: &'static str, min: i64, max: i64) -> Option<i64> {
        match self.get(key, false)? {
            Value::Integer(i) if (min..=max).contains(i) => Some(*i),
            _ => {
                self.wrong(key, &format!("a whole number from {min} to {max}"));
                None
            }
        }
    }

    fn strings(&mut self, key: &'static str) -> Option<Vec<String>> {
        match self.get(key, false)? {
            Value::Array(items) if items.iter().all(Value::is_str) => Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => {
                self.wrong(key, "a list of strings");
                None
            }
        }
    }

    fn keys(&mut self, key: &'static str) -> Option<Vec<PublicKey>> {
        self.get(key, true)?;
        self.key_list(key, true)
    }

    /// Keys that may be absent (`operator`).
    fn optional_keys(&mut self, key: &'static str) -> Option<Vec<PublicKey>> {
        self.get(key, false)?;
        self.key_list(key, false)
    }

    fn key_list(&mut self, key: &'static str, required: bool) -> Option<Vec<PublicKey>> {
        let texts = self.strings(key)?;
        if texts.is_empty() && required {
            self.problems
                .push(format!("{}.{key} must list at least one key", self.name));
        }
        let mut keys = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            match PublicKey::from_base64(text) {
                Ok(k) => keys.push(k),
                Err(e) => self.problems.push(format!(
                    "{}.{key}[{i}] {text:?} is not an Ed25519 public key in base64: {e}",
                    self.name
                )),
            }
        }
        Some(keys)
    }

    fn finish(self) {
        if let Some(table) = self.table {
            for key in table.keys() {
                if !self.seen.contains(key.as_str()) {
                    self.problems
                        .push(format!("unknown key {}.{key}", self.name));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFICE: &str = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=";
    const SUPERVISOR: &str = "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=";

    #[test]
    fn the_office_api_may_trust_a_ca_file_over_https_only() {
        let text = format!(
            "{}[office]\nurl = \"https://office.example:8443\"\nca_file = \"/etc/gongkai/office-ca.pem\"\n",
            good()
        );
        let office = Config::parse(&text).unwrap().office.unwrap();
        assert_eq!(
            office.ca_file.as_deref(),
            Some(Path::new("/etc/gongkai/office-ca.pem"))
        );
        let text = format!(
            "{}[office]\nurl = \"http://127.0.0.1:8080\"\nca_file = \"/etc/gongkai/office-ca.pem\"\n",
            good()
        );
        let problems = Config::parse(&text).unwrap_err().0;
        assert!(problems[0].contains("plain http"), "{problems:?}");
        let text = format!("{}[office]\nurl = \"http://127.0.0.1:8080\"\n", good());
        assert_eq!(Config::parse(&text).unwrap().office.unwrap().ca_file, None);
    }

    fn good() -> String {
        format!(
            r#"
[screen]
id = "lobby-1"
community = "lixia-demo"
mode = "kiosk"
[mqtt]
url = "mqtts://broker.example:8883"
username = "lobby-1"
password_file = "/etc/gongkai/mqtt-password"
[trust]
office = ["{OFFICE}"]
supervisor = ["{SUPERVISOR}"]
office_only_categories = ["services"]
[store]
path = "/var/lib/gongkai/screen.db"
"#
        )
    }

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = Config::parse(&good()).unwrap();
        assert_eq!(c.screen.mode, Mode::Kiosk);
        assert_eq!(c.mqtt.topic_prefix, "gongkai/v1");
        assert_eq!(c.mqtt.fetch_batch, 50);
        assert_eq!(c.display.dwell_seconds, 12);
        assert_eq!(c.trust.office_only_categories, vec![Category::Services]);
        assert!(c.office.is_none());
    }

    #[test]
    fn the_example_config_is_valid() {
        Config::parse(include_str!("../config/gongkaid.toml")).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = good()
            .replace("mode = \"kiosk\"", "mode = \"tv\"\ncolour = \"red\"")
            .replace(SUPERVISOR, "not-a-key")
            .replace("[store]\npath = \"/var/lib/gongkai/screen.db\"", "[stor]");
        let problems = Config::parse(&text).unwrap_err().0;
        let all = problems.join("\n");
        for expected in [
            "screen.mode",
            "unknown key screen.colour",
            "trust.supervisor[0]",
            "unknown section [stor]",
            "missing section [store]",
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
        assert_eq!(problems.len(), 5, "{all}");
    }

    #[test]
    fn mqtt_url_is_one_broker_or_a_list_of_them() {
        let c = Config::parse(&good()).unwrap();
        assert_eq!(
            c.mqtt.urls,
            [BrokerUrl::parse("mqtts://broker.example:8883").unwrap()]
        );
        let listed = good().replace(
            "url = \"mqtts://broker.example:8883\"",
            "url = [\"mqtt://a.example\", \"mqtts://b.example:8884\", \"mqtt://[::1]:1885\"]",
        );
        let c = Config::parse(&listed).unwrap();
        let shown: Vec<String> = c.mqtt.urls.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "mqtt://a.example:1883",
                "mqtts://b.example:8884",
                "mqtt://[::1]:1885"
            ]
        );
    }

    #[test]
    fn every_broker_url_is_checked() {
        let problems = |url: &str| {
            let text = good().replace("url = \"mqtts://broker.example:8883\"", url);
            Config::parse(&text).unwrap_err().0
        };
        let listed = problems(
            r#"url = ["mqtt://a.example", "http://b.example", 7, "mqtt://a.example:1883", "mqtt://c/x"]"#,
        );
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(
            listed[0].starts_with("mqtt.url[1]: scheme \"http\""),
            "{listed:?}"
        );
        assert!(
            listed[1].starts_with("mqtt.url[2] must be a string"),
            "{listed:?}"
        );
        assert!(listed[2].contains("mqtt.url[3] \"mqtt://a.example:1883\" is listed twice"));
        assert!(listed[3].starts_with("mqtt.url[4]:") && listed[3].contains("path"));
        assert_eq!(
            problems("url = []"),
            ["mqtt.url must list at least one broker"]
        );
        assert_eq!(
            problems("url = 1883"),
            [
                "mqtt.url must be a string like \"mqtts://broker.example:8883\", or mqtt.url a list of them"
            ]
        );
        let missing = problems("");
        assert_eq!(missing, ["missing mqtt.url"]);
    }

    #[test]
    fn one_key_in_both_roles_is_refused() {
        let text = good().replace(SUPERVISOR, OFFICE);
        let all = Config::parse(&text).unwrap_err().0.join("\n");
        assert!(all.contains("both office and supervisor"), "{all}");
    }

    const STREET_OFFICE: &str = "ypOsFwUYcHHWe4PH/w7+gQjo7EUwV113JoeTM9vavnw=";
    const STREET_SUPERVISOR: &str = "bnoc3Smwt4/ROvTFWY/v9O8qlxZuPKby5Pv8zYBQW/E=";
    const OPERATOR: &str = "iodf/x6zhFFXes1a/uQFRWVo3XyJ4JCGOgVXvHr0nxc=";

    #[test]
    fn upper_scopes_have_their_own_keys_and_policy() {
        let text = format!(
            "{}\n[[follow]]\nscope = \"yanshan-street\"\noffice = [\"{STREET_OFFICE}\"]\n\
             supervisor = [\"{STREET_SUPERVISOR}\"]\noperator = [\"{OPERATOR}\"]\n\
             urgent_office_only = true\n",
            good().replace(
                "office_only_categories",
                &format!("operator = [\"{OPERATOR}\"]\noffice_only_categories")
            )
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.trust.operator.len(), 1, "[trust] operator");
        let follows = c.follows();
        let ids: Vec<&str> = follows.all().iter().map(|s| s.id()).collect();
        assert_eq!(ids, ["lixia-demo", "yanshan-street"]);
        let street = follows.get("yanshan-street").unwrap();
        assert!(street.policy.urgent_office_only);
        assert_eq!(street.policy.office[0].to_base64(), STREET_OFFICE);
        assert!(
            !follows.home().policy.urgent_office_only,
            "policies stay apart"
        );
    }

    #[test]
    fn a_bad_follow_entry_is_named() {
        let follow = |body: &str| format!("{}\n[[follow]]\n{body}\n", good());
        let problems = |text: String| Config::parse(&text).unwrap_err().to_string();
        let street =
            format!("office = [\"{STREET_OFFICE}\"]\nsupervisor = [\"{STREET_SUPERVISOR}\"]");
        assert!(problems(follow(&street)).contains("missing follow[0].scope"));
        let own = problems(follow(&format!("scope = \"lixia-demo\"\n{street}")));
        assert!(own.contains("the screen's own community"), "{own}");
        let twice = problems(format!(
            "{}\n[[follow]]\nscope = \"s\"\n{street}\n",
            follow(&format!("scope = \"s\"\n{street}"))
        ));
        assert!(
            twice.contains("follow[1].scope \"s\" is followed twice"),
            "{twice}"
        );
        let unknown = problems(follow(&format!("scope = \"s\"\n{street}\ncolour = 1")));
        assert!(
            unknown.contains("unknown key follow[0].colour"),
            "{unknown}"
        );
        let no_keys = problems(follow("scope = \"s\""));
        assert!(no_keys.contains("missing follow[0].office"), "{no_keys}");
        // The office server's automation key never counts for a notice.
        let mixed = problems(follow(&format!(
            "scope = \"s\"\n{street}\noperator = [\"{STREET_OFFICE}\"]"
        )));
        assert!(
            mixed.contains("listed as operator and as a person's key"),
            "{mixed}"
        );
    }
}
