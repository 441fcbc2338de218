//! The office's web console: people and roles, sessions, CSRF, the login
//! limit, compose, review, signing and publishing, over real HTTP on
//! loopback against `gongkai office serve`, and the whole loop in real
//! browsers (Chromium over WebDriver) with a real screen at the end.
//!
//! The HTTP tests sign as a browser would, in Rust, with keys the test
//! holds; the browser test lets the browsers make and keep the keys.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gongkai::protocol::envelope::{Envelope, NOTICE_TYPE};
use gongkai::protocol::{SecretKey, sha256_hex};
use gongkai::store::office::OfficeStore;

use crate::common::browser::{self, Browsers, Recorder};
use crate::common::{self, DaemonProcess, Mosquitto, OfficeServer};

const PASSWORD: &str = "correct horse 电池 staple";

/// The console's office server: `[[scope]]` of `community`, publishing to
/// `broker` (when given), reachable at `public_url` (when given).
fn console_office(community: &str, broker: Option<&str>, public_url: Option<&str>) -> OfficeServer {
    OfficeServer::running_with(&console_extra(community, broker, public_url))
}

/// The same over plain HTTP, which the server allows on loopback alone: the
/// browser test's recording proxy reads every request as the browser sent
/// it, and `http://localhost` is a secure context, so WebCrypto works there.
fn console_office_plain(
    community: &str,
    broker: Option<&str>,
    public_url: Option<&str>,
) -> OfficeServer {
    let mut office = OfficeServer::plain_with(&console_extra(community, broker, public_url));
    office.start();
    office
}

fn console_extra(community: &str, broker: Option<&str>, public_url: Option<&str>) -> String {
    let mut extra = String::new();
    if let Some(url) = public_url {
        extra.push_str(&format!("public_url = \"{url}\"\n"));
    }
    if let Some(broker) = broker {
        extra.push_str(&format!("broker = \"{broker}\"\n"));
    }
    extra.push_str(&format!("[[scope]]\nid = \"{community}\"\n"));
    extra
}

/// `gongkai office user add`: the enrolment link, the last line.
fn user_add(office: &OfficeServer, name: &str, role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args([
            "office", "user", "add", "--name", name, "--role", role, "--config",
        ])
        .arg(&office.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let link = text.lines().last().unwrap().to_owned();
    assert!(link.contains("/console/enrol?token="), "{text}");
    link
}

/// `gongkai office trust`.
fn trust_block(office: &OfficeServer) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["office", "trust", "--config"])
        .arg(&office.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A browser as HTTP sees it: cookies kept by hand, redirects not followed.
struct Agent {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first input named `name`.
    fn field(&self, name: &str) -> String {
        let pattern = format!(r#"name="{}" value="([^"]*)""#, regex::escape(name));
        regex::Regex::new(&pattern)
            .unwrap()
            .captures(&self.text)
            .map(|c| html_unescape(&c[1]))
            .unwrap_or_else(|| panic!("no field {name} in:\n{}", self.text))
    }

    /// The value of the first attribute `attr` in the page.
    fn attr(&self, attr: &str) -> String {
        let pattern = format!(r#"{}="([^"]*)""#, regex::escape(attr));
        regex::Regex::new(&pattern)
            .unwrap()
            .captures(&self.text)
            .map(|c| html_unescape(&c[1]))
            .unwrap_or_else(|| panic!("no {attr} in:\n{}", self.text))
    }
}

fn html_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Agent {
    /// A client of `office`, trusting its certificate.
    fn new(office: &OfficeServer) -> Agent {
        gongkai::tls::install_crypto_provider();
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &office.ca_file {
            let pem = std::fs::read(ca).unwrap();
            http = http.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
        }
        Agent {
            http: http.build().unwrap(),
            base: office.url.trim_end_matches('/').to_owned(),
            cookies: BTreeMap::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn answer(&mut self, response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for cookie in headers.get_all("set-cookie") {
            let cookie = cookie.to_str().unwrap();
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Answer {
            status,
            headers,
            text: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let response = self
            .http
            .get(self.url(path))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.answer(response).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let response = self
            .http
            .post(self.url(path))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.answer(response).await
    }

    /// Enrols through `link` with `key`'s public half (none for a viewer).
    async fn enrol(&mut self, link: &str, key: Option<&SecretKey>) -> Answer {
        let page = self.get(link).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let token = page.field("token");
        let csrf = page.field("csrf");
        let public = key.map(|k| k.public().to_base64()).unwrap_or_default();
        self.post(
            "/console/enrol",
            &[
                ("token", &token),
                ("csrf", &csrf),
                ("password", PASSWORD),
                ("password2", PASSWORD),
                ("key_source", "generate"),
                ("public_key", &public),
            ],
        )
        .await
    }

    async fn login(&mut self, name: &str, password: &str) -> Answer {
        self.cookies.remove("gk_session");
        let page = self.get("/console/login").await;
        let csrf = page.field("csrf");
        self.post(
            "/console/login",
            &[("name", name), ("password", password), ("csrf", &csrf)],
        )
        .await
    }

    /// The session's CSRF token, from any page.
    async fn csrf(&mut self) -> String {
        self.get("/console").await.attr("data-csrf")
    }
}

/// A person enrolled and logged in over HTTP.
async fn person(office: &OfficeServer, name: &str, role: &str, key: Option<&SecretKey>) -> Agent {
    let link = user_add(office, name, role);
    let mut agent = Agent::new(office);
    let enrolled = agent.enrol(&link, key).await;
    assert_eq!(enrolled.status, 200, "{}", enrolled.text);
    assert!(enrolled.text.contains("已完成登记"), "{}", enrolled.text);
    let login = agent.login(name, PASSWORD).await;
    assert_eq!(
        (login.status, login.location()),
        (303, "/console"),
        "{}",
        login.text
    );
    agent
}

fn staff_key() -> SecretKey {
    SecretKey::from_seed([21; 32])
}

fn supervisor_key() -> SecretKey {
    SecretKey::from_seed([22; 32])
}

/// Today in China, as the date field holds it.
fn today() -> &'static str {
    static TODAY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TODAY.get_or_init(|| gongkai::workdays::china_date(time::OffsetDateTime::now_utc()).to_string())
}

/// The fields of a finance notice with a table.
fn finance_fields<'a>(
    community: &'a str,
    id: &'a str,
    title: &'a str,
    table: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("scope", community),
        ("notice_id", id),
        ("category", "finance"),
        ("priority", "normal"),
        ("title", title),
        ("summary", "本季度收支情况"),
        ("window", "workdays7"),
        ("valid_from", today()),
        ("publisher", "历下区示范社区居民委员会"),
        ("reviewer", "历下区示范社区居务监督委员会"),
        ("contact", "监督电话：0531-00000000"),
        ("blocks", "2"),
        ("b0_kind", "paragraph"),
        ("b0_text", "现将本季度财务收支公开如下。"),
        ("b1_kind", "table"),
        ("b1_caption", "支出明细"),
        ("b1_text", table),
        ("action", "save"),
    ]
}

/// Composes a draft; returns its page's path.
async fn compose(staff: &mut Agent, fields: &[(&str, &str)]) -> String {
    let csrf = staff.csrf().await;
    let mut fields = fields.to_vec();
    fields.push(("csrf", &csrf));
    let created = staff.post("/console/compose", &fields).await;
    assert_eq!(created.status, 303, "{}", created.text);
    let path = created.location().to_owned();
    assert!(path.starts_with("/console/drafts/"), "{path}");
    path
}

/// Signs the payload a draft page shows, as the browser script does, and
/// posts it to `action` (submit or approve).
async fn sign(agent: &mut Agent, draft: &str, action: &str, key: &SecretKey) -> Answer {
    let page = agent.get(draft).await;
    assert_eq!(page.status, 200, "{}", page.text);
    // The payload as the page shows it (a page without a signing button,
    // a staff member's on approval, shows it too).
    let shown = regex::Regex::new(r#"(?s)id="payload">(.*?)</pre>"#)
        .unwrap()
        .captures(&page.text)
        .map(|c| html_unescape(&c[1]))
        .unwrap_or_else(|| panic!("no payload in {}", page.text));
    let payload = shown.into_bytes();
    let sig = Envelope::sign_new(NOTICE_TYPE, &payload, key).signatures[0]
        .sig
        .clone();
    let csrf = page.attr("data-csrf");
    agent
        .post(
            &format!("{draft}/{action}"),
            &[
                ("csrf", &csrf),
                ("payload_sha256", &sha256_hex(&payload)),
                ("keyid", &key.public().key_id().0),
                ("sig", &sig),
            ],
        )
        .await
}

async fn state_of(agent: &mut Agent, draft: &str) -> String {
    let page = agent.get(draft).await;
    regex::Regex::new(r#"id="state">([^<]*)<"#)
        .unwrap()
        .captures(&page.text)
        .map(|c| c[1].to_owned())
        .unwrap_or_else(|| panic!("no state in {}", page.text))
}

const TABLE: &str = "项目\t金额（元）\n办公经费\t12,000.00\n环境整治\t20,400.00\n";

#[tokio::test(flavor = "multi_thread")]
async fn every_console_page_needs_login() {
    let community = common::community("console-login");
    let office = console_office(&community, None, None);
    let mut anonymous = Agent::new(&office);
    for path in [
        "/console",
        "/console/review",
        "/console/compose",
        "/console/drafts/1",
        "/console/drafts/1/screens",
        "/console/drafts/1/preview/landscape",
        "/console/drafts/1/preview/portrait/1",
        "/console/drafts/1/preview/kiosk",
        "/console/audit",
        "/console/fleet",
        "/console/fleet/view",
        "/console/fleet/s-1/screenshot",
        "/console/fleet/s-1/screenshot.png",
        "/console/feedback",
    ] {
        let answer = anonymous.get(path).await;
        assert_eq!(
            (answer.status, answer.location()),
            (303, "/console/login"),
            "GET {path}"
        );
    }
    for path in [
        "/console/compose",
        "/console/drafts/1/edit",
        "/console/drafts/1/submit",
        "/console/drafts/1/approve",
        "/console/drafts/1/return",
        "/console/drafts/1/publish",
        "/console/media",
        "/console/logout",
        "/console/fleet/x/s-1/command",
        "/console/feedback/1/reveal",
        "/console/feedback/reply",
    ] {
        let answer = anonymous.post(path, &[("csrf", "x")]).await;
        assert_eq!(
            (answer.status, answer.location()),
            (303, "/console/login"),
            "POST {path}"
        );
    }
    // A cookie that is no session is none.
    anonymous
        .cookies
        .insert("gk_session".into(), "forged".into());
    assert_eq!(anonymous.get("/console").await.status, 303);
    // The login page itself, and the script, are open; the page carries the
    // strict policy.
    let login = anonymous.get("/console/login").await;
    assert_eq!(login.status, 200);
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(
        anonymous.get("/console/static/console.js").await.status,
        200
    );
    let store = OfficeStore::open(&office.database).unwrap();
    assert!(store.drafts().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrolment_link_works_once_and_the_session_cookie_is_strict() {
    let community = common::community("console-enrol");
    let office = console_office(&community, None, None);
    let link = user_add(&office, "李四", "staff");
    let mut first = Agent::new(&office);
    let done = first.enrol(&link, Some(&staff_key())).await;
    assert_eq!(done.status, 200, "{}", done.text);
    let mut again = Agent::new(&office);
    assert_eq!(again.get(&link).await.status, 404, "a used link");
    // A staff member without a key is refused and keeps the link unused.
    let link = user_add(&office, "赵六", "staff");
    let mut keyless = Agent::new(&office);
    assert_eq!(keyless.enrol(&link, None).await.status, 400);
    assert_eq!(keyless.get(&link).await.status, 200, "still usable");
    // The same key for two people is refused.
    assert_eq!(keyless.enrol(&link, Some(&staff_key())).await.status, 409);

    let mut agent = Agent::new(&office);
    let page = agent.get("/console/login").await;
    let csrf = page.field("csrf");
    let wrong = agent
        .post(
            "/console/login",
            &[
                ("name", "李四"),
                ("password", "wrong password!"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    let page = agent.get("/console/login").await;
    let csrf = page.field("csrf");
    let login = agent
        .post(
            "/console/login",
            &[("name", "李四"), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(login.status, 303);
    let session = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("gk_session="))
        .unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(session.contains(attribute), "{session}");
    }
    let store = OfficeStore::open(&office.database).unwrap();
    let users = store.users().unwrap();
    let li = users.iter().find(|u| u.name == "李四").unwrap();
    assert_eq!(
        li.public_key.as_deref(),
        Some(staff_key().public().to_base64().as_str())
    );
    // The password is kept as argon2id only.
    let (_, hash) = store.login_of("李四").unwrap().unwrap();
    assert!(
        hash.starts_with("$argon2id$") && !hash.contains(PASSWORD),
        "{hash}"
    );
    let audit = store.audit_entries().unwrap();
    let whats: Vec<&str> = audit.iter().map(|line| line.what.as_str()).collect();
    assert!(
        whats
            .iter()
            .any(|w| w.starts_with("enrolled as staff with key")),
        "{whats:?}"
    );
    assert!(
        whats.contains(&"login failed") && whats.contains(&"login"),
        "{whats:?}"
    );
}

/// `gongkai office user reenrol`.
fn reenrol(office: &OfficeServer, name: &str, revoke: bool) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gongkai"));
    command.args(["office", "user", "reenrol", "--name", name, "--config"]);
    command.arg(&office.config);
    if revoke {
        command.arg("--revoke");
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_who_lost_their_key_enrols_again_and_the_old_key_is_retired_or_revoked() {
    let community = common::community("console-reenrol");
    let office = console_office(&community, None, None);
    let mut lost = person(&office, "李四", "staff", Some(&staff_key())).await;
    let (first, second, third) = (
        staff_key(),
        SecretKey::from_seed([23; 32]),
        SecretKey::from_seed([24; 32]),
    );

    // The browser that held the key is lost: the office sends them back to
    // enrolment. Their session ends with it.
    let said = reenrol(&office, "李四", false);
    assert!(said.contains("retired"), "{said}");
    let link = said.lines().last().unwrap().to_owned();
    assert!(link.contains("/console/enrol?token="), "{said}");
    let old_session = lost.get("/console").await;
    assert_eq!(
        (old_session.status, old_session.location()),
        (303, "/console/login")
    );
    let mut again = Agent::new(&office);
    let enrolled = again.enrol(&link, Some(&second)).await;
    assert_eq!(enrolled.status, 200, "{}", enrolled.text);
    assert_eq!(again.login("李四", PASSWORD).await.status, 303);
    // Screens trust the new key, and still the retired one, which verifies
    // what it signed before.
    let trust = trust_block(&office);
    assert!(trust.contains(&second.public().to_base64()), "{trust}");
    let retired = trust
        .lines()
        .find(|l| l.contains(&first.public().to_base64()))
        .unwrap_or_else(|| panic!("the retired key is gone: {trust}"));
    assert!(retired.contains("李四（旧密钥，"), "{retired}");

    // A key that may have leaked is revoked: trusted nowhere, and it cannot
    // be enrolled again.
    let said = reenrol(&office, "李四", true);
    assert!(said.contains("revoked"), "{said}");
    let link = said.lines().last().unwrap().to_owned();
    let trust = trust_block(&office);
    assert!(!trust.contains(&second.public().to_base64()), "{trust}");
    assert!(trust.contains(&first.public().to_base64()), "{trust}");
    let mut thief = Agent::new(&office);
    let refused = thief.enrol(&link, Some(&second)).await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.text.contains("已被吊销"), "{}", refused.text);
    let mut fresh = Agent::new(&office);
    let enrolled = fresh.enrol(&link, Some(&third)).await;
    assert_eq!(enrolled.status, 200, "{}", enrolled.text);
    assert!(trust_block(&office).contains(&third.public().to_base64()));
    // Every step is in the audit trail.
    let store = OfficeStore::open(&office.database).unwrap();
    let audit: Vec<String> = store
        .audit_entries()
        .unwrap()
        .into_iter()
        .map(|a| a.what)
        .collect();
    for what in [
        format!(
            "user 李四: key {} retired; new enrolment link issued",
            first.public().to_base64()
        ),
        format!(
            "user 李四: key {} revoked; new enrolment link issued",
            second.public().to_base64()
        ),
    ] {
        assert!(audit.contains(&what), "{what} not in {audit:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn csrf_is_refused_and_nothing_changes() {
    let community = common::community("console-csrf");
    let office = console_office(&community, None, None);
    let mut staff = person(&office, "李四", "staff", Some(&staff_key())).await;
    let mut fields = finance_fields(&community, "n-csrf", "标题", TABLE);
    fields.push(("csrf", "not the session's token"));
    let refused = staff.post("/console/compose", &fields).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    fields.pop();
    let refused = staff.post("/console/compose", &fields).await;
    assert_eq!(refused.status, 403, "no token at all");
    // The login form's double-submitted token: without the cookie, refused.
    let mut other = Agent::new(&office);
    let page = other.get("/console/login").await;
    let csrf = page.field("csrf");
    other.cookies.clear();
    let login = other
        .post(
            "/console/login",
            &[("name", "李四"), ("password", PASSWORD), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(login.status, 403);
    let store = OfficeStore::open(&office.database).unwrap();
    assert!(store.drafts().unwrap().is_empty());
    // With the session's token, it goes through.
    compose(
        &mut staff,
        &finance_fields(&community, "n-csrf", "标题", TABLE),
    )
    .await;
    assert_eq!(store.drafts().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_login_rate_limit_holds_per_account_and_per_address() {
    let community = common::community("console-limit");
    let office = console_office(&community, None, None);
    let _ = person(&office, "李四", "staff", Some(&staff_key())).await;
    let _ = person(&office, "王五", "supervisor", Some(&supervisor_key())).await;
    let mut agent = Agent::new(&office);
    for _ in 0..5 {
        assert_eq!(agent.login("李四", "wrong password!").await.status, 401);
    }
    let held = agent.login("李四", PASSWORD).await;
    assert_eq!(held.status, 429, "the right password is held too");
    assert!(held.text.contains("登录失败次数过多"), "{}", held.text);
    // Another account from the same address is not held yet...
    assert_eq!(agent.login("王五", PASSWORD).await.status, 303);
    // ...until the address has failed 20 times in all.
    for n in 0..15 {
        assert_eq!(agent.login(&format!("nobody-{n}"), "x").await.status, 401);
    }
    assert_eq!(agent.login("王五", PASSWORD).await.status, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_hold_staff_cannot_approve_nobody_publishes_without_both_signatures_viewers_change_nothing()
 {
    let community = common::community("console-roles");
    let office = console_office(&community, Some(&common::broker_url()), None);
    let mut staff = person(&office, "李四", "staff", Some(&staff_key())).await;
    let mut supervisor = person(&office, "王五", "supervisor", Some(&supervisor_key())).await;
    let mut viewer = person(&office, "街道办", "viewer", None).await;

    let draft = compose(
        &mut staff,
        &finance_fields(&community, "n-roles", "第四季度财务公开", TABLE),
    )
    .await;
    // Nobody publishes a draft no one signed, nor one only staff signed.
    let csrf = staff.csrf().await;
    let early = staff
        .post(&format!("{draft}/publish"), &[("csrf", &csrf)])
        .await;
    assert_eq!(early.status, 409, "{}", early.text);
    assert_eq!(
        sign(&mut staff, &draft, "submit", &staff_key())
            .await
            .status,
        303
    );
    assert_eq!(state_of(&mut staff, &draft).await, "待审核");
    let early = staff
        .post(&format!("{draft}/publish"), &[("csrf", &csrf)])
        .await;
    assert_eq!(early.status, 409, "only the office signed: {}", early.text);
    // Staff cannot approve, even with a valid signature of their own...
    let approve = sign(&mut staff, &draft, "approve", &staff_key()).await;
    assert_eq!(approve.status, 403, "{}", approve.text);
    // ...nor a supervisor with someone else's signature.
    let forged = sign(&mut supervisor, &draft, "approve", &staff_key()).await;
    assert_eq!(forged.status, 400, "{}", forged.text);
    // A supervisor cannot publish.
    let csrf_s = supervisor.csrf().await;
    let publish = supervisor
        .post(&format!("{draft}/publish"), &[("csrf", &csrf_s)])
        .await;
    assert_eq!(publish.status, 403);
    // The viewer reads, and changes nothing.
    assert_eq!(viewer.get(&draft).await.status, 200);
    assert_eq!(viewer.get("/console/review").await.status, 200);
    assert_eq!(viewer.get("/console/compose").await.status, 403);
    let csrf_v = viewer.csrf().await;
    let mut fields = finance_fields(&community, "n-viewer", "标题", TABLE);
    fields.push(("csrf", &csrf_v));
    assert_eq!(viewer.post("/console/compose", &fields).await.status, 403);
    for action in [
        "edit", "submit", "approve", "return", "publish", "revise", "withdraw",
    ] {
        let answer = viewer
            .post(
                &format!("{draft}/{action}"),
                &[("csrf", &csrf_v), ("comment", "x")],
            )
            .await;
        assert_eq!(answer.status, 403, "viewer {action}");
    }
    let upload = viewer
        .http
        .post(viewer.url("/console/media"))
        .header("cookie", viewer.cookie_header())
        .header("x-csrf-token", &csrf_v)
        .header("content-type", "image/png")
        .body(png_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status().as_u16(), 403);
    assert_eq!(state_of(&mut staff, &draft).await, "待审核");
    let store = OfficeStore::open(&office.database).unwrap();
    assert_eq!(store.drafts().unwrap().len(), 1);
    // Every refusal left the draft as it was; the audit knows who did what.
    let audit = store.audit_entries().unwrap();
    assert!(
        audit.iter().all(|line| line.who == "office"
            || line
                .payload_sha256
                .as_deref()
                .is_some_and(|h| h.len() == 64)),
        "{audit:?}"
    );
    let viewer_did: Vec<&str> = audit
        .iter()
        .filter(|line| line.who == "街道办")
        .map(|line| line.what.as_str())
        .collect();
    assert_eq!(viewer_did, ["enrolled as viewer", "login"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_title_is_inert_and_personal_data_blocks_submission_naming_its_place() {
    let community = common::community("console-inert");
    let office = console_office(&community, None, None);
    let mut staff = person(&office, "李四", "staff", Some(&staff_key())).await;
    let title = "<script>alert('x')</script>公告";
    let draft = compose(
        &mut staff,
        &finance_fields(&community, "n-inert", title, TABLE),
    )
    .await;
    for path in [draft.as_str(), "/console"] {
        let page = staff.get(path).await;
        assert!(
            !page.text.contains("<script>alert"),
            "{path} runs the title:\n{}",
            page.text
        );
        assert!(
            page.text
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;公告"),
            "{path}"
        );
    }
    // The same id again: refused, and the form comes back as typed.
    let csrf = staff.csrf().await;
    let mut fields = finance_fields(&community, "n-inert", "重复编号的公告", TABLE);
    fields.push(("csrf", &csrf));
    let again = staff.post("/console/compose", &fields).await;
    assert_eq!(again.status, 409);
    assert!(
        again.text.contains("value=\"重复编号的公告\""),
        "{}",
        again.text
    );
    assert!(
        again.text.contains("环境整治\t20,400.00"),
        "the table is kept"
    );
    // A mobile number in a table cell: named, and submission refused.
    let table = "姓名\t电话\n张*三\t13812345678\n";
    let draft = compose(
        &mut staff,
        &finance_fields(&community, "n-personal", "补贴名单", table),
    )
    .await;
    let page = staff.get(&draft).await;
    assert!(page.text.contains("id=\"problems\""), "{}", page.text);
    assert!(
        page.text.contains("正文第2块（表格）第1行第2列"),
        "{}",
        page.text
    );
    assert!(
        !page.text.contains("13812345678\t") && !page.text.contains("data-sign"),
        "no signing offered"
    );
    let csrf = page.attr("data-csrf");
    let submit = staff
        .post(
            &format!("{draft}/submit"),
            &[
                ("csrf", &csrf),
                ("payload_sha256", "x"),
                ("keyid", "x"),
                ("sig", "x"),
            ],
        )
        .await;
    assert_eq!(submit.status, 409, "{}", submit.text);
}

fn png_bytes() -> Vec<u8> {
    let image = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, 120])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A screen of `community` on `broker` trusting what `gongkai office trust`
/// prints, as a real `gongkaid --headless` process.
fn screen(
    office: &OfficeServer,
    community: &str,
    broker: &str,
    dir: &Path,
) -> (DaemonProcess, std::path::PathBuf) {
    let store = dir.join("screen.db");
    let trust = trust_block(office);
    let config = format!(
        "[screen]\nid = \"{}\"\ncommunity = \"{community}\"\n[mqtt]\nurl = \"{broker}\"\n{trust}\
         [store]\npath = \"{}\"\n[display]\ndwell_seconds = 2\n",
        common::screen_id(community),
        store.display()
    );
    let path = dir.join("screen.toml");
    std::fs::write(&path, config).unwrap();
    (DaemonProcess::start(&path, &dir.join("screen.log")), store)
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_review_return_fix_approve_publish_reaches_a_real_screen() {
    let Some(mosquitto) = Mosquitto::start("console-loop", "") else {
        return;
    };
    let community = common::community("console-loop");
    let office = console_office(&community, Some(&mosquitto.url()), None);
    let mut staff = person(&office, "李四", "staff", Some(&staff_key())).await;
    let mut supervisor = person(&office, "王五", "supervisor", Some(&supervisor_key())).await;

    let draft = compose(
        &mut staff,
        &finance_fields(&community, "2026q4-finance-001", "第四季度财务公开", TABLE),
    )
    .await;
    assert_eq!(
        sign(&mut staff, &draft, "submit", &staff_key())
            .await
            .status,
        303
    );
    let queue = supervisor.get("/console/review").await;
    assert!(queue.text.contains(&draft), "{}", queue.text);
    let page = supervisor.get(&draft).await;
    assert!(
        page.text.contains("新公告，全部为新增内容"),
        "{}",
        page.text
    );
    let csrf = page.attr("data-csrf");
    let empty = supervisor
        .post(
            &format!("{draft}/return"),
            &[("csrf", &csrf), ("comment", " ")],
        )
        .await;
    assert_eq!(empty.status, 400, "a return needs a comment");
    let back = supervisor
        .post(
            &format!("{draft}/return"),
            &[("csrf", &csrf), ("comment", "环境整治金额有误，请核对")],
        )
        .await;
    assert_eq!(back.status, 303);
    assert_eq!(state_of(&mut staff, &draft).await, "已退回");
    let page = staff.get(&draft).await;
    assert!(
        page.text.contains("环境整治金额有误，请核对"),
        "{}",
        page.text
    );
    // Staff fix the amount and submit again.
    let csrf = page.attr("data-csrf");
    let fixed = TABLE.replace("20,400.00", "20,040.00");
    let mut fields = finance_fields(&community, "", "第四季度财务公开", &fixed);
    fields.retain(|(k, _)| *k != "scope" && *k != "notice_id");
    fields.push(("csrf", &csrf));
    assert_eq!(
        staff.post(&format!("{draft}/edit"), &fields).await.status,
        303
    );
    assert_eq!(
        sign(&mut staff, &draft, "submit", &staff_key())
            .await
            .status,
        303
    );
    // The supervisor sees what changed since the return.
    let page = supervisor.get(&draft).await;
    assert!(page.text.contains("与退回时的内容相比"), "{}", page.text);
    assert!(
        page.text
            .contains("<ins>＋ 正文2（表格行）：环境整治 | 20,040.00</ins>"),
        "{}",
        page.text
    );
    assert!(
        page.text
            .contains("<del>－ 正文2（表格行）：环境整治 | 20,400.00</del>"),
        "{}",
        page.text
    );
    assert_eq!(
        sign(&mut supervisor, &draft, "approve", &supervisor_key())
            .await
            .status,
        303
    );
    assert_eq!(state_of(&mut staff, &draft).await, "已批准，待发布");

    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, store) = screen(&office, &community, &mosquitto.url(), dir.path());
    let csrf = staff.csrf().await;
    let published = staff
        .post(&format!("{draft}/publish"), &[("csrf", &csrf)])
        .await;
    assert_eq!(published.status, 303, "{}", published.text);
    assert_eq!(state_of(&mut staff, &draft).await, "已发布");
    screen_holds(&daemon, &store, "2026q4-finance-001", 1);
    // The public page, with no login: the office's follow took the notice
    // signed by two people who enrolled after the server started, and
    // shows the review mark.
    let mut resident = Agent::new(&office);
    let public = format!("/n/{community}/2026q4-finance-001");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = resident.get(&public).await;
        if page.status == 200 && page.text.contains("居务监督委员会审核</span>") {
            assert!(page.text.contains("第四季度财务公开"), "{}", page.text);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the public page lacks the reviewed notice: {} {}\n{}",
            page.status,
            page.text,
            office.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The console reads the screen's status: it holds the notice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let row = format!("data-screen=\"{}\"", common::screen_id(&community));
    loop {
        let screens = supervisor.get(&format!("{draft}/screens")).await;
        assert_eq!(screens.status, 200, "{}", screens.text);
        let held = screens
            .text
            .find(&row)
            .map(|at| &screens.text[at..])
            .is_some_and(|rest| rest[..rest.find("</tr>").unwrap()].contains("已接收"));
        if held {
            assert!(
                screens.text.contains("id=\"held\">1</strong> / 1"),
                "{}",
                screens.text
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", screens.text);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let history = staff.get(&draft).await;
    for action in ["提交审核", "退回", "批准", "发布"] {
        assert!(history.text.contains(action), "history lacks {action}");
    }

    // A revision: version 2, reviewed against the published version 1.
    let revised = staff
        .post(&format!("{draft}/revise"), &[("csrf", &csrf)])
        .await;
    assert_eq!(revised.status, 303, "{}", revised.text);
    let second = revised.location().to_owned();
    assert_ne!(second, draft);
    let csrf = staff.csrf().await;
    let mut fields = finance_fields(&community, "", "第四季度财务公开（更正）", &fixed);
    fields.retain(|(k, _)| *k != "scope" && *k != "notice_id");
    fields.push(("csrf", &csrf));
    assert_eq!(
        staff.post(&format!("{second}/edit"), &fields).await.status,
        303
    );
    assert_eq!(
        sign(&mut staff, &second, "submit", &staff_key())
            .await
            .status,
        303
    );
    let page = supervisor.get(&second).await;
    assert!(page.text.contains("与已发布的第 1 版相比"), "{}", page.text);
    assert!(
        page.text
            .contains("<ins>＋ 标题：第四季度财务公开（更正）</ins>"),
        "{}",
        page.text
    );
    assert_eq!(
        sign(&mut supervisor, &second, "approve", &supervisor_key())
            .await
            .status,
        303
    );
    let published = staff
        .post(&format!("{second}/publish"), &[("csrf", &csrf)])
        .await;
    assert_eq!(published.status, 303, "{}", published.text);
    screen_holds(&daemon, &store, "2026q4-finance-001", 2);
    // Version 1 can no longer be revised or withdrawn.
    let stale = staff
        .post(&format!("{draft}/withdraw"), &[("csrf", &csrf)])
        .await;
    assert_eq!(stale.status, 409);

    // A withdrawal goes through the same review.
    let withdrawal = staff
        .post(&format!("{second}/withdraw"), &[("csrf", &csrf)])
        .await;
    assert_eq!(withdrawal.status, 303, "{}", withdrawal.text);
    let third = withdrawal.location().to_owned();
    assert_eq!(
        sign(&mut staff, &third, "submit", &staff_key())
            .await
            .status,
        303
    );
    let page = supervisor.get(&third).await;
    assert!(
        page.text.contains("<ins>＋ 状态：撤回</ins>"),
        "{}",
        page.text
    );
    assert_eq!(
        sign(&mut supervisor, &third, "approve", &supervisor_key())
            .await
            .status,
        303
    );
    let published = staff
        .post(&format!("{third}/publish"), &[("csrf", &csrf)])
        .await;
    assert_eq!(published.status, 303, "{}", published.text);
    // The history on the notice covers every version, with the comment.
    let history = staff.get(&third).await;
    let section = &history.text[history.text.find("id=\"history\"").unwrap()..];
    for line in ["第 1 版", "第 2 版", "第 3 版", "环境整治金额有误，请核对"] {
        assert!(
            section.contains(line),
            "the history lacks {line}: {section}"
        );
    }
    common::eventually("the screen takes the withdrawal", || {
        common::stored_versions(&store).get("2026q4-finance-001") == Some(&(3, false))
    });
    daemon.kill9();
    let log = daemon.log_text();
    assert!(!log.contains("rejected"), "{log}");
}

/// Waits (at most 30 s) until the screen holds `id` at `version`, active.
fn screen_holds(daemon: &DaemonProcess, store: &Path, id: &str, version: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::stored_versions(store).get(id) != Some(&(version, true)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the screen does not hold {id} version {version}: {:?}\n{}",
            common::stored_versions(store),
            daemon.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The whole loop in two real browsers, each with its own profile and key,
/// through a proxy that records every request they send.
#[tokio::test(flavor = "multi_thread")]
async fn the_whole_loop_in_real_browsers_and_no_key_leaves_them() {
    let Some(mosquitto) = Mosquitto::start("console-browsers", "") else {
        return;
    };
    let Some(mut browsers) = Browsers::start("console-browsers") else {
        return;
    };
    let community = common::community("console-browsers");
    let proxy_port = common::free_port();
    let public = format!("http://localhost:{proxy_port}");
    let office = console_office_plain(&community, Some(&mosquitto.url()), Some(&public));
    let recorder = Recorder::start(proxy_port, &office.url).await;

    // Staff: a key made in the browser.
    let link = user_add(&office, "李四", "staff");
    let staff = browsers.profile().await;
    staff.goto(&link).await.unwrap();
    browser::fill(&staff, "password", PASSWORD).await;
    browser::fill(&staff, "password2", PASSWORD).await;
    browser::click(&staff, "#enrol").await;
    browser::wait_for(&staff, "#enrolled").await;
    login(&staff, &public, "李四").await;

    // Compose: a paragraph, a pasted table, an uploaded image.
    staff
        .goto(&format!("{public}/console/compose"))
        .await
        .unwrap();
    browser::fill(&staff, "notice_id", "2026q4-finance-001").await;
    browser::fill(&staff, "title", "2026年第四季度财务收支公开").await;
    browser::fill(&staff, "publisher", "历下区示范社区居民委员会").await;
    browser::fill(&staff, "contact", "监督电话：0531-00000000").await;
    browser::paste(&staff, "b0_text", "现将本季度财务收支公开如下。").await;
    browser::click(&staff, "button[value=add_table]").await;
    browser::paste(&staff, "b1_text", TABLE).await;
    browser::fill(&staff, "b1_caption", "支出明细").await;
    browser::click(&staff, "button[value=add_image]").await;
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("receipt.png");
    std::fs::write(&png, png_bytes()).unwrap();
    browser::wait_for(&staff, "#upload-2")
        .await
        .send_keys(png.to_str().unwrap())
        .await
        .unwrap();
    browser::wait_for_text(&staff, "#upload-status-2", "已上传").await;
    browser::click(&staff, "#save").await;
    browser::wait_for(&staff, "img.thumb").await;
    let draft = staff.current_url().await.unwrap().path().to_owned();
    // The preview, as screens page it.
    browser::click(&staff, "#preview-landscape").await;
    browser::wait_for(&staff, "#page-count").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let width = staff
            .execute(
                "return document.querySelector('img.page').naturalWidth;",
                vec![],
            )
            .await
            .unwrap();
        if width == serde_json::json!(1920) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the preview never loaded: {width}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    staff.goto(&format!("{public}{draft}")).await.unwrap();
    browser::click(&staff, "#submit").await;
    browser::wait_for_text(&staff, "#state", "待审核").await;

    // The supervisor imports a `gongkai keygen` seed in a second profile.
    let seed_file = dir.path().join("supervisor.key");
    let out = Command::new(env!("CARGO_BIN_EXE_gongkai"))
        .args(["keygen", "--out"])
        .arg(&seed_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let seed_text = std::fs::read_to_string(&seed_file).unwrap();
    let seed = gongkai::office::sign::read_key(&seed_file).unwrap();
    let link = user_add(&office, "王五", "supervisor");
    let supervisor = browsers.profile().await;
    supervisor.goto(&link).await.unwrap();
    browser::fill(&supervisor, "password", PASSWORD).await;
    browser::fill(&supervisor, "password2", PASSWORD).await;
    browser::click(&supervisor, "input[value=import]").await;
    browser::wait_for(&supervisor, "#seed-file")
        .await
        .send_keys(seed_file.to_str().unwrap())
        .await
        .unwrap();
    browser::click(&supervisor, "#enrol").await;
    browser::wait_for(&supervisor, "#enrolled").await;
    login(&supervisor, &public, "王五").await;
    supervisor
        .goto(&format!("{public}/console/review"))
        .await
        .unwrap();
    browser::click(&supervisor, "#queue a").await;
    browser::wait_for_text(&supervisor, "#diff", "新公告").await;
    browser::fill(&supervisor, "comment", "环境整治金额有误，请核对").await;
    browser::click(&supervisor, "#return").await;
    browser::wait_for_text(&supervisor, "#state", "已退回").await;

    // Staff fix it and submit again.
    staff.goto(&format!("{public}{draft}")).await.unwrap();
    browser::wait_for_text(&staff, "#returned-comment", "环境整治金额有误").await;
    browser::paste(&staff, "b1_text", &TABLE.replace("20,400.00", "20,040.00")).await;
    browser::click(&staff, "#save").await;
    browser::click(&staff, "#submit").await;
    browser::wait_for_text(&staff, "#state", "待审核").await;

    // The supervisor sees what changed, and approves.
    supervisor.goto(&format!("{public}{draft}")).await.unwrap();
    browser::wait_for_text(&supervisor, "#diff li.added", "20,040.00").await;
    browser::wait_for_text(&supervisor, "#diff li.removed", "20,400.00").await;
    browser::click(&supervisor, "#approve").await;
    browser::wait_for_text(&supervisor, "#state", "已批准").await;

    // Staff publish; a real screen shows it.
    let (mut daemon, store) = screen(&office, &community, &mosquitto.url(), dir.path());
    staff.goto(&format!("{public}{draft}")).await.unwrap();
    browser::click(&staff, "#publish").await;
    browser::wait_for_text(&staff, "#state", "已发布").await;
    screen_holds(&daemon, &store, "2026q4-finance-001", 1);
    // A resident opens the QR code's page: the reviewed version, with the
    // mark the supervisor's signature earns.
    let resident = browsers.profile().await;
    let page = format!("{public}/n/{community}/2026q4-finance-001");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        resident.goto(&page).await.unwrap();
        let mark = match resident
            .find(fantoccini::Locator::Css("p.meta .review"))
            .await
        {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if mark.contains("居务监督委员会审核") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the public page shows no review mark: {}",
            resident.source().await.unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let title = resident.find(fantoccini::Locator::Css("h1")).await.unwrap();
    assert!(
        title
            .text()
            .await
            .unwrap()
            .contains("2026年第四季度财务收支公开")
    );
    resident.close().await.unwrap();
    // The stored envelope carries the browsers' signatures by the enrolled keys.
    let office_store = OfficeStore::open(&office.database).unwrap();
    let users = office_store.users().unwrap();
    let supervisor_public = users
        .iter()
        .find(|u| u.name == "王五")
        .unwrap()
        .public_key
        .clone();
    assert_eq!(supervisor_public, Some(seed.public().to_base64()));

    // Every request the browsers sent: no seed, in any spelling, and no
    // private key material (a PKCS#8 or JWK `d`) ever reached the server.
    let requests = recorder.requests();
    assert!(requests.len() > 20, "{} requests recorded", requests.len());
    let seed_bytes = STANDARD.decode(seed_text.trim()).unwrap();
    let spellings: Vec<Vec<u8>> = vec![
        seed_bytes.clone(),
        seed_text.trim().as_bytes().to_vec(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&seed_bytes)
            .into_bytes(),
        hex::encode(&seed_bytes).into_bytes(),
        url::form_urlencoded::byte_serialize(seed_text.trim().as_bytes())
            .collect::<String>()
            .into_bytes(),
    ];
    for request in &requests {
        let bytes = request.bytes();
        for spelling in &spellings {
            assert!(
                !bytes
                    .windows(spelling.len())
                    .any(|w| w == spelling.as_slice()),
                "{} {} carries the seed",
                request.method,
                request.uri
            );
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("\"d\":") && !text.contains("PRIVATE KEY"),
            "{} {}",
            request.method,
            request.uri
        );
    }
    // The enrolment posts carried the public keys only: 32 bytes each.
    let enrolments: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.uri == "/console/enrol")
        .collect();
    assert_eq!(enrolments.len(), 2);
    for e in enrolments {
        let fields: BTreeMap<String, String> =
            url::form_urlencoded::parse(&e.body).into_owned().collect();
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "csrf",
                "key_source",
                "password",
                "password2",
                "public_key",
                "token"
            ]
        );
        assert_eq!(STANDARD.decode(&fields["public_key"]).unwrap().len(), 32);
    }
    // The browser's own key is not extractable.
    let extractable = staff
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const r = indexedDB.open('gongkai-console', 1);
             r.onsuccess = () => { const g = r.result.transaction('keys').objectStore('keys').get('李四');
               g.onsuccess = () => done(g.result.privateKey.extractable); };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(extractable, serde_json::Value::Bool(false));
    daemon.kill9();
    staff.close().await.unwrap();
    supervisor.close().await.unwrap();
}

async fn login(browser: &fantoccini::Client, public: &str, name: &str) {
    browser
        .goto(&format!("{public}/console/login"))
        .await
        .unwrap();
    browser::fill(browser, "name", name).await;
    browser::fill(browser, "password", PASSWORD).await;
    browser::click(browser, "#login").await;
    browser::wait_for(browser, "section#queue").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draft_is_previewed_with_its_image_as_screens_page_it() {
    let community = common::community("console-preview");
    let office = console_office(&community, None, None);
    let mut staff = person(&office, "李四", "staff", Some(&staff_key())).await;
    let csrf = staff.csrf().await;
    // An image, uploaded as the compose page's script does.
    let png = png_bytes();
    let upload = |mime: &'static str, body: Vec<u8>| {
        staff
            .http
            .post(staff.url("/console/media"))
            .header("cookie", staff.cookie_header())
            .header("x-csrf-token", &csrf)
            .header("content-type", mime)
            .body(body)
            .send()
    };
    let refused = upload("image/jpeg", png.clone()).await.unwrap();
    assert_eq!(refused.status().as_u16(), 415, "a PNG declared as JPEG");
    let refused = upload("image/png", b"<svg onload=alert(1)>".to_vec())
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 415);
    let uploaded = upload("image/png", png.clone()).await.unwrap();
    assert_eq!(uploaded.status().as_u16(), 200);
    let media: serde_json::Value = uploaded.json().await.unwrap();
    assert_eq!(media["sha256"], sha256_hex(&png));
    let served = office
        .client()
        .get(format!(
            "{}/media/{}",
            office.url,
            media["sha256"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        served.status().as_u16(),
        200,
        "images are public, as screens fetch them"
    );
    assert_eq!(served.bytes().await.unwrap().to_vec(), png);

    let long: String = "根据居务公开制度，现将有关事项公开如下，请居民监督。".repeat(40);
    let (bytes, sha) = (png.len().to_string(), sha256_hex(&png));
    let mut fields = finance_fields(&community, "n-preview", "预览测试", TABLE);
    fields.retain(|(k, _)| *k != "blocks");
    fields.extend([
        ("blocks", "5"),
        ("b2_kind", "paragraph"),
        ("b2_text", long.as_str()),
        ("b3_kind", "paragraph"),
        ("b3_text", long.as_str()),
        ("b4_kind", "image"),
        ("b4_sha256", sha.as_str()),
        ("b4_bytes", bytes.as_str()),
        ("b4_mime", "image/png"),
        ("b4_caption", "票据照片"),
    ]);
    let draft = compose(&mut staff, &fields).await;
    let page = staff.get(&draft).await;
    assert!(!page.text.contains("id=\"problems\""), "{}", page.text);
    assert!(
        page.text.contains(&format!("{}/media/{sha}", office.url)),
        "the image URL fills itself"
    );
    // Submitted for review: the supervisor's page offers the three
    // previews, the kiosk's among them.
    assert_eq!(
        sign(&mut staff, &draft, "submit", &staff_key())
            .await
            .status,
        303
    );
    let mut supervisor = person(&office, "王五", "supervisor", Some(&supervisor_key())).await;
    let review = supervisor.get(&draft).await;
    for size in ["landscape", "portrait", "kiosk"] {
        assert!(
            review.text.contains(&format!(
                "href=\"{draft}/preview/{size}\" id=\"preview-{size}\""
            )),
            "{size}: {}",
            review.text
        );
    }
    let page_count = regex::Regex::new(r#"id="page-count">(\d+)<"#).unwrap();
    let mut counts = BTreeMap::new();
    let mut first_pages = BTreeMap::new();
    for (size, width, height) in [
        ("landscape", 1920, 1080),
        ("portrait", 1080, 1920),
        ("kiosk", 1920, 1080),
    ] {
        let preview = supervisor.get(&format!("{draft}/preview/{size}")).await;
        assert_eq!(preview.status, 200, "{}", preview.text);
        let count: usize = page_count.captures(&preview.text).unwrap()[1]
            .parse()
            .unwrap();
        assert!(
            count >= 2,
            "{size}: a long notice is paged, {count} page(s)"
        );
        counts.insert(size, count);
        for page in [1, count] {
            let answer = supervisor
                .http
                .get(supervisor.url(&format!("{draft}/preview/{size}/{page}")))
                .header("cookie", supervisor.cookie_header())
                .send()
                .await
                .unwrap();
            assert_eq!(answer.headers()["content-type"], "image/png");
            let image = image::load_from_memory(&answer.bytes().await.unwrap())
                .unwrap()
                .to_rgb8();
            assert_eq!((image.width(), image.height()), (width, height));
            // Drawn, not blank: dark text on many rows (the last page may
            // hold a few lines only, with the header and footer).
            let inked_rows = (0..height)
                .filter(|&y| (0..width).any(|x| image.get_pixel(x, y).0.iter().all(|&c| c < 96)))
                .count();
            assert!(
                inked_rows as u32 > height / 10,
                "{size} page {page}: text on {inked_rows} rows"
            );
            if page == 1 {
                first_pages.insert(size, image);
            }
        }
    }
    // The kiosk's notice view is the kiosk's own: its bar of buttons spans
    // the screen above the footer, which the rotation has not, and leaves
    // the body less room.
    let bar = |image: &image::RgbImage| {
        (0..image.height())
            .filter(|&y| {
                [2, image.width() / 2, image.width() - 3]
                    .iter()
                    .all(|&x| image.get_pixel(x, y).0 == [0xee, 0xf1, 0xf5])
            })
            .count()
    };
    assert!(bar(&first_pages["kiosk"]) > 24, "the kiosk's bar");
    assert_eq!(bar(&first_pages["landscape"]), 0);
    assert!(
        counts["kiosk"] >= counts["landscape"],
        "{counts:?}: the bar takes room"
    );
    // Past the last page: refused, not drawn.
    let past = staff.get(&format!("{draft}/preview/landscape/99")).await;
    assert_eq!(past.status, 409);
    let mut anonymous = Agent::new(&office);
    assert_eq!(
        anonymous
            .get(&format!("{draft}/preview/landscape"))
            .await
            .status,
        303
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_the_broker_refuses_keeps_the_draft_approved_and_says_why() {
    let community = common::community("console-nobroker");
    // Nothing listens there.
    let broker = format!("mqtt://127.0.0.1:{}", common::free_port());
    let office = console_office(&community, Some(&broker), None);
    let mut staff = person(&office, "李四", "staff", Some(&staff_key())).await;
    let mut supervisor = person(&office, "王五", "supervisor", Some(&supervisor_key())).await;
    let draft = compose(
        &mut staff,
        &finance_fields(&community, "n-nobroker", "财务公开", TABLE),
    )
    .await;
    assert_eq!(
        sign(&mut staff, &draft, "submit", &staff_key())
            .await
            .status,
        303
    );
    assert_eq!(
        sign(&mut supervisor, &draft, "approve", &supervisor_key())
            .await
            .status,
        303
    );
    let csrf = staff.csrf().await;
    let failed = staff
        .post(&format!("{draft}/publish"), &[("csrf", &csrf)])
        .await;
    assert_eq!(failed.status, 502, "{}", failed.text);
    assert!(
        failed.text.contains("未能发布到消息服务器"),
        "{}",
        failed.text
    );
    assert_eq!(state_of(&mut staff, &draft).await, "已批准，待发布");
    let store = OfficeStore::open(&office.database).unwrap();
    assert!(
        !store
            .audit_entries()
            .unwrap()
            .iter()
            .any(|l| l.what.starts_with("published"))
    );
}

/// A screen as `screen` makes it, that also reaches the office's intake
/// (its token, and `ca_file` for the office's certificate) and draws
/// screenshots at 640×360: it takes the console's operator commands.
fn commanded_screen(
    office: &OfficeServer,
    community: &str,
    broker: &str,
    dir: &Path,
) -> (DaemonProcess, std::path::PathBuf) {
    let store = dir.join("screen.db");
    let screen = common::screen_id(community);
    let token = office.token_file(&screen);
    let trust = trust_block(office);
    let config = format!(
        "[screen]\nid = \"{screen}\"\ncommunity = \"{community}\"\n[mqtt]\nurl = \"{broker}\"\n{trust}\
         [store]\npath = \"{}\"\n[display]\ndwell_seconds = 2\nwidth = 640\nheight = 360\n\
         [office]\nurl = \"{}\"\ntoken_file = \"{}\"\n{}",
        store.display(),
        office.url,
        token.display(),
        office.screen_trust()
    );
    let path = dir.join("screen.toml");
    std::fs::write(&path, config).unwrap();
    (DaemonProcess::start(&path, &dir.join("screen.log")), store)
}

/// The row of `screen` on the fleet page.
fn fleet_row<'a>(page: &'a Answer, screen: &str) -> &'a str {
    let start = format!("<tr data-screen=\"{screen}\">");
    let from = page
        .text
        .find(&start)
        .unwrap_or_else(|| panic!("no row of {screen} in:\n{}", page.text));
    let rest = &page.text[from..];
    &rest[..rest.find("</tr>").unwrap()]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_page_shows_real_and_stale_screens_and_staff_alone_take_a_screenshot() {
    let Some(mosquitto) = Mosquitto::start("console-fleet", "") else {
        return;
    };
    let community = common::community("console-fleet");
    let mut office = console_office(&community, Some(&mosquitto.url()), None);
    let mut staff = person(&office, "赵六", "staff", Some(&staff_key())).await;
    let mut viewer = person(&office, "街道办", "viewer", None).await;
    // Screens need a supervisor key to trust.
    person(&office, "钱七", "supervisor", Some(&supervisor_key())).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, _store) = commanded_screen(&office, &community, &mosquitto.url(), dir.path());
    let screen = common::screen_id(&community);

    // The real screen appears online, with what it reports.
    let mut page = staff.get("/console/fleet").await;
    for _ in 0..100 {
        if page
            .text
            .contains(&format!("<tr data-screen=\"{screen}\">"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        page = staff.get("/console/fleet").await;
    }
    assert!(
        page.text
            .contains(&format!("<tr data-screen=\"{screen}\">")),
        "{}\n{}",
        page.text,
        daemon.log_text()
    );
    let row = fleet_row(&page, &screen);
    assert!(row.contains("在线"), "{row}\n{}", daemon.log_text());
    assert!(!row.contains("离线"), "{row}");
    assert!(
        row.contains("value=\"screenshot\""),
        "staff see 截屏: {row}"
    );
    assert!(row.contains("value=\"identify\""), "staff see 识别: {row}");

    // A screen whose last status is ten minutes old is marked.
    let mut client = common::publisher(&mosquitto.url()).await;
    let topics = common::topics(&community);
    let real = client.retained(&topics.status(&screen)).await.unwrap();
    let mut status: serde_json::Value =
        serde_json::from_slice(&real.last().unwrap().payload).unwrap();
    let stale = format!("{screen}-old");
    let ten_minutes_ago = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    status["screen"] = stale.clone().into();
    status["updated_at"] = ten_minutes_ago
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    client
        .publish_retained(&topics.status(&stale), serde_json::to_vec(&status).unwrap())
        .await
        .unwrap();
    // The server follows the statuses: the new one shows within moments.
    let mut page = staff.get("/console/fleet").await;
    for _ in 0..50 {
        if page.text.contains(&format!("<tr data-screen=\"{stale}\">")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        page = staff.get("/console/fleet").await;
    }
    let row = fleet_row(&page, &stale);
    assert!(row.contains("离线 10 分钟"), "{row}");
    assert!(row.contains("最后一次状态未标明离线"), "{row}");
    assert!(!fleet_row(&page, &screen).contains("离线"));
    // The page renews its table from the fragment, which is the same table.
    assert!(
        page.text
            .contains("id=\"fleet-view\" data-refresh=\"/console/fleet/view\" data-every=\"30\""),
        "{}",
        page.text
    );
    let fragment = staff.get("/console/fleet/view").await;
    assert_eq!(fragment.status, 200);
    assert!(
        fragment.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(!fragment.text.contains("<html"), "a fragment");
    assert!(fleet_row(&fragment, &stale).contains("离线 10 分钟"));

    // Its will: offline, and for how long counted from the last online
    // status the office saw, which the will itself does not carry.
    client
        .publish_retained(
            &topics.status(&stale),
            gongkai::status::offline(&stale, &community),
        )
        .await
        .unwrap();
    client.close().await;
    let mut row = String::new();
    for _ in 0..50 {
        row = fleet_row(&staff.get("/console/fleet/view").await, &stale).to_owned();
        if row.contains("屏幕已断开") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        row.contains("离线 10 分钟") && row.contains("屏幕已断开"),
        "{row}"
    );
    // The server starts again. All the broker holds of that screen is its
    // will, yet the office still knows since when it has been offline.
    office.restart();
    let mut row = String::new();
    for _ in 0..100 {
        let fragment = staff.get("/console/fleet/view").await;
        if fragment.status == 200
            && fragment
                .text
                .contains(&format!("<tr data-screen=\"{stale}\">"))
        {
            row = fleet_row(&fragment, &stale).to_owned();
            if row.contains("屏幕已断开") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        row.contains("离线 10 分钟") && row.contains("屏幕已断开"),
        "after a restart: {row}\n{}",
        office.log_text()
    );

    // A viewer sees the fleet but no buttons, and a command posted anyway
    // is refused without reaching the screen or the audit trail.
    let page = viewer.get("/console/fleet").await;
    assert_eq!(page.status, 200);
    let row = fleet_row(&page, &screen);
    assert!(
        !row.contains("截屏</button>") && !row.contains("value=\"identify\""),
        "{row}"
    );
    let csrf = page.attr("data-csrf");
    let path = format!("/console/fleet/{community}/{screen}/command");
    let refused = viewer
        .post(&path, &[("csrf", &csrf), ("action", "screenshot")])
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let store = OfficeStore::open(&office.database).unwrap();
    assert_eq!(store.latest_screenshot(&screen).unwrap(), None);
    assert!(
        !store
            .audit_entries()
            .unwrap()
            .iter()
            .any(|e| e.what.starts_with("sent command")),
        "a refused command is not recorded as sent"
    );

    // 截屏 by staff: the screen draws and uploads it, the console shows it.
    let csrf = staff.csrf().await;
    let sent = staff
        .post(&path, &[("csrf", &csrf), ("action", "screenshot")])
        .await;
    assert_eq!(
        (sent.status, sent.location()),
        (303, format!("/console/fleet/{screen}/screenshot").as_str()),
        "{}\n{}",
        sent.text,
        daemon.log_text()
    );
    let shown = staff.get(sent.location()).await;
    assert!(
        shown
            .text
            .contains(&format!("src=\"/console/fleet/{screen}/screenshot.png\"")),
        "{}",
        shown.text
    );
    let png = staff
        .http
        .get(staff.url(&format!("/console/fleet/{screen}/screenshot.png")))
        .header("cookie", staff.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    let bytes = png.bytes().await.unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (640, 360));
    let (_, _, stored) = store.latest_screenshot(&screen).unwrap().unwrap();
    assert_eq!(stored, bytes.to_vec(), "the office's stored screenshot");

    // 识别 too, and each command is in the audit trail under staff's name.
    let identified = staff
        .post(&path, &[("csrf", &csrf), ("action", "identify")])
        .await;
    assert_eq!(identified.status, 303, "{}", identified.text);
    let sent: Vec<_> = store
        .audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.what.starts_with("sent command"))
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|e| e.who == "赵六"), "{sent:?}");
    assert!(sent[0].what.contains("screenshot") && sent[1].what.contains("identify"));
    daemon.kill9();
}

/// A feedback item as a screen sends it.
fn feedback_item(
    receipt: &str,
    text: &str,
    contact: &str,
) -> gongkai::protocol::feedback::FeedbackItem {
    gongkai::protocol::feedback::FeedbackItem {
        id: uuid::Uuid::new_v4().to_string(),
        receipt: receipt.into(),
        created_at: "2026-10-08T10:00:00+08:00".into(),
        notice_scope: None,
        notice_id: Some("2026q4-finance-001".into()),
        notice_version: Some(1),
        kind: "opinion".into(),
        rating: None,
        reasons: vec![],
        text: text.into(),
        contact: contact.into(),
    }
}

/// The row of `receipt` in the feedback inbox.
fn feedback_row<'a>(page: &'a Answer, receipt: &str) -> &'a str {
    let start = format!("<tr data-receipt=\"{receipt}\">");
    let from = page
        .text
        .find(&start)
        .unwrap_or_else(|| panic!("no row of {receipt} in:\n{}", page.text));
    let rest = &page.text[from..];
    &rest[..rest.find("</tr>").unwrap()]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_feedback_inbox_filters_reveals_with_an_audit_and_drafts_a_reply_for_review() {
    let Some(mosquitto) = Mosquitto::start("console-feedback", "") else {
        return;
    };
    let community = common::community("console-feedback");
    let office = console_office(&community, Some(&mosquitto.url()), None);
    let mut staff = person(&office, "孙八", "staff", Some(&staff_key())).await;
    let mut supervisor = person(&office, "周九", "supervisor", Some(&supervisor_key())).await;
    let mut viewer = person(&office, "街道办", "viewer", None).await;

    // An opinion with a contact number, sent as a screen sends it: its
    // token, over HTTPS to the intake.
    let screen = common::screen_id(&community);
    let token = office.token_in(&screen, &community);
    let item = feedback_item("A1B2C3", "希望公布维修基金明细 <b>", "13812341234");
    let sent = office
        .client()
        .post(format!("{}/api/v1/feedback", office.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"screen": screen, "community": community, "items": [item]}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    // One received 30 days ago and never answered: overdue; one of
    // another community.
    let mut store = OfficeStore::open(&office.database).unwrap();
    let month_ago = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    store
        .add_feedback_received_at(
            &screen,
            &community,
            &[&feedback_item("K7Q2MD", "楼道灯坏了很久", "")],
            month_ago,
        )
        .unwrap();
    store
        .add_feedback_received_at(
            "gate-1",
            "other-demo",
            &[&feedback_item("B2C3D4", "别处的意见", "")],
            month_ago,
        )
        .unwrap();

    // Everyone sees the inbox, contacts masked, the text inert.
    let page = viewer.get("/console/feedback").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let row = feedback_row(&page, "A1B2C3");
    assert!(
        row.contains("138****1234") && row.contains("&lt;b&gt;"),
        "{row}"
    );
    assert!(!page.text.contains("13812341234"));
    assert!(
        !row.contains("/reveal") && !page.text.contains("id=\"reply\""),
        "viewers change nothing: {row}"
    );
    assert!(feedback_row(&page, "K7Q2MD").contains("逾期未复"));
    assert!(!feedback_row(&page, "A1B2C3").contains("逾期未复"));

    // Filters: overdue, notice, status.
    let overdue = staff.get("/console/feedback?overdue=1").await;
    assert!(overdue.text.contains("data-receipt=\"K7Q2MD\""));
    assert!(
        !overdue.text.contains("data-receipt=\"A1B2C3\""),
        "{}",
        overdue.text
    );
    let none = staff.get("/console/feedback?notice=other-notice").await;
    assert!(!none.text.contains("data-receipt="), "{}", none.text);
    let open = staff.get("/console/feedback?status=replied").await;
    assert!(!open.text.contains("data-receipt="), "nothing answered yet");

    // Revealing a contact: a viewer is refused; staff see it, audited.
    let page = staff.get("/console/feedback").await;
    let reveal = regex::Regex::new(r#"action="(/console/feedback/[^"]+/reveal)""#)
        .unwrap()
        .captures(feedback_row(&page, "A1B2C3"))
        .map(|c| c[1].to_owned())
        .expect("staff see the reveal button");
    let csrf = viewer.csrf().await;
    let refused = viewer.post(&reveal, &[("csrf", &csrf)]).await;
    assert_eq!(refused.status, 403);
    assert!(!refused.text.contains("13812341234"));
    let revealed_lines = |store: &OfficeStore| {
        store
            .audit_entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.what.starts_with("revealed"))
            .collect::<Vec<_>>()
    };
    assert!(revealed_lines(&store).is_empty());
    let csrf = staff.csrf().await;
    let shown = staff.post(&reveal, &[("csrf", &csrf)]).await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert!(shown.text.contains("13812341234"), "{}", shown.text);
    let lines = revealed_lines(&store);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].who, "孙八");
    assert!(lines[0].what.contains("A1B2C3"), "{lines:?}");

    // The reply composer: receipts of two communities are refused, unknown
    // ones too, and nothing is drafted.
    let reply = |receipts: &[&'static str]| {
        let mut fields = vec![
            ("text", "维修基金明细将于下月公布。"),
            ("publisher", "某某社区居民委员会"),
            ("contact", "0531-12345678"),
        ];
        fields.extend(receipts.iter().map(|r| ("receipt", *r)));
        fields
    };
    for bad in [&["A1B2C3", "B2C3D4"][..], &["ZZZZZZ"], &[]] {
        let mut fields = reply(bad);
        fields.push(("csrf", &csrf));
        let answer = staff.post("/console/feedback/reply", &fields).await;
        assert_eq!(answer.status, 400, "{bad:?}: {}", answer.text);
        // Nothing typed or chosen is lost: the composer comes back filled.
        assert!(
            answer.text.contains("维修基金明细将于下月公布。"),
            "{}",
            answer.text
        );
        for receipt in bad {
            assert!(
                answer
                    .text
                    .contains(&format!("value=\"{receipt}\" checked")),
                "{}",
                answer.text
            );
        }
    }
    let queue = supervisor.get("/console/review").await;
    assert!(!queue.text.contains("/console/drafts/"), "{}", queue.text);

    // Chosen receipts become a reply draft, which goes through review.
    let mut fields = reply(&["a1b2c3", "K7Q2MD"]);
    fields.push(("csrf", &csrf));
    let drafted = staff.post("/console/feedback/reply", &fields).await;
    assert_eq!(drafted.status, 303, "{}", drafted.text);
    let draft = drafted.location().to_owned();
    assert!(draft.starts_with("/console/drafts/"), "{draft}");
    let page = staff.get(&draft).await;
    let payload = regex::Regex::new(r#"(?s)id="payload">(.*?)</pre>"#)
        .unwrap()
        .captures(&page.text)
        .map(|c| html_unescape(&c[1]))
        .unwrap_or_else(|| panic!("no payload in {}", page.text));
    let notice: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(notice["category"], "reply");
    assert_eq!(notice["community"], community.as_str());
    assert_eq!(notice["reply_to"], serde_json::json!(["A1B2C3", "K7Q2MD"]));
    assert!(
        notice["id"].as_str().unwrap().starts_with("reply-"),
        "{notice}"
    );
    assert_eq!(
        sign(&mut staff, &draft, "submit", &staff_key())
            .await
            .status,
        303
    );
    let queue = supervisor.get("/console/review").await;
    assert!(queue.text.contains(&draft), "{}", queue.text);
    assert!(
        store
            .audit_entries()
            .unwrap()
            .iter()
            .any(|e| e.what.starts_with("drafted reply") && e.what.contains("A1B2C3 K7Q2MD")),
        "the reply composer is audited"
    );

    // Approved and published, the reply answers its receipts.
    assert_eq!(
        sign(&mut supervisor, &draft, "approve", &supervisor_key())
            .await
            .status,
        303
    );
    let csrf = staff.csrf().await;
    let published = staff
        .post(&format!("{draft}/publish"), &[("csrf", &csrf)])
        .await;
    assert_eq!(published.status, 303, "{}", published.text);
    let replied = staff.get("/console/feedback?status=replied").await;
    let row = feedback_row(&replied, "K7Q2MD");
    assert!(row.contains("已答复") && !row.contains("逾期未复"), "{row}");
    assert!(replied.text.contains("data-receipt=\"A1B2C3\""));
    assert!(!replied.text.contains("data-receipt=\"B2C3D4\""));
}

/// Regression: the inbox loaded every item of the database for each
/// request. It lists 50 at a time, newest first, with a link to the next
/// 50 that keeps the filters, and counts what matches on every page.
#[tokio::test(flavor = "multi_thread")]
async fn the_feedback_inbox_pages_fifty_at_a_time_newest_first_keeping_its_filters() {
    let community = common::community("console-pages");
    let office = console_office(&community, None, None);
    let mut viewer = person(&office, "街道办", "viewer", None).await;
    let mut store = OfficeStore::open(&office.database).unwrap();
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(200);
    // 120 items an hour apart; every other one about notice "n-even".
    for n in 0..120i64 {
        let mut item = feedback_item(&format!("P{n:05}"), "意见", "");
        item.notice_id = Some(if n % 2 == 0 { "n-even" } else { "n-odd" }.into());
        store
            .add_feedback_received_at(
                "lobby-1",
                &community,
                &[&item],
                start + time::Duration::hours(n),
            )
            .unwrap();
    }
    let receipts = |page: &Answer| -> Vec<String> {
        regex::Regex::new(r#"data-receipt="(P\d+)""#)
            .unwrap()
            .captures_iter(&page.text)
            .map(|c| c[1].to_owned())
            .collect()
    };
    let first = viewer.get("/console/feedback?notice=n-even").await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(first.text.contains("id=\"matching\">60<"), "{}", first.text);
    let listed = receipts(&first);
    assert_eq!(listed.len(), 50);
    assert_eq!(
        (listed[0].as_str(), listed[49].as_str()),
        ("P00118", "P00020")
    );
    let next = html_unescape(
        &regex::Regex::new(r#"href="([^"]+)" id="next-page""#)
            .unwrap()
            .captures(&first.text)
            .unwrap_or_else(|| panic!("no next page in {}", first.text))[1],
    );
    assert!(next.contains("notice=n-even"), "{next}");
    let second = viewer.get(&next).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert!(second.text.contains("id=\"matching\">60<"));
    assert_eq!(
        receipts(&second),
        [
            "P00018", "P00016", "P00014", "P00012", "P00010", "P00008", "P00006", "P00004",
            "P00002", "P00000"
        ]
    );
    assert!(!second.text.contains("id=\"next-page\""), "the last page");
    assert!(second.text.contains("id=\"newest\""));
    // A cursor that is not one is ignored: the newest page again.
    let bad = viewer.get("/console/feedback?after=%3Cscript%3E").await;
    assert_eq!(receipts(&bad)[0], "P00119");
}

/// A retained online status of `screen` in `community`, renewed now.
fn online_status(screen: &str, community: &str) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    serde_json::to_vec(&serde_json::json!({
        "state": "online", "screen": screen, "community": community,
        "software": "0.1.0", "mode": "led", "started_at": now, "updated_at": now,
        "active": 1, "cached": 1, "rejected": 0, "outbox": 0,
        "manifest": {"version": 1, "missing": 0},
    }))
    .unwrap()
}

/// The fleet page in a real browser renews its table by itself, under the
/// console's CSP: a screen that appears later shows without a reload.
#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_page_renews_its_table_in_a_browser_without_reloading() {
    let Some(mosquitto) = Mosquitto::start("console-fleet-refresh", "") else {
        return;
    };
    let Some(mut browsers) = Browsers::start("console-fleet-refresh") else {
        return;
    };
    let community = common::community("console-fleet-refresh");
    let office = console_office_plain(&community, Some(&mosquitto.url()), None);
    let public = format!("http://localhost:{}", office.port);
    person(&office, "赵六", "staff", Some(&staff_key())).await;
    let topics = common::topics(&community);
    let mut client = common::publisher(&mosquitto.url()).await;
    let (first, later) = ("lobby-first", "lobby-later");
    client
        .publish_retained(&topics.status(first), online_status(first, &community))
        .await
        .unwrap();
    let browser = browsers.profile().await;
    login(&browser, &public, "赵六").await;
    browser
        .goto(&format!("{public}/console/fleet"))
        .await
        .unwrap();
    browser::wait_for(&browser, &format!("tr[data-screen=\"{first}\"]")).await;
    // Anything the page holds survives a renewal, which a reload would lose.
    browser
        .execute("document.body.dataset.kept = 'yes';", vec![])
        .await
        .unwrap();
    client
        .publish_retained(&topics.status(later), online_status(later, &community))
        .await
        .unwrap();
    client.close().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while browser
        .find(fantoccini::Locator::Css(&format!(
            "tr[data-screen=\"{later}\"]"
        )))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the table was not renewed within 45 s:\n{}",
            browser::page_text(&browser).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let kept = browser
        .execute("return document.body.dataset.kept || 'lost';", vec![])
        .await
        .unwrap();
    assert_eq!(kept, "yes", "the page was renewed in place, not reloaded");
}
