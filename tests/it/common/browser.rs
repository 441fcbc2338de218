//! Real browsers for the console's tests: Debian's Chromium, headless,
//! driven over WebDriver by chromedriver (fantoccini), one fresh profile per
//! person; and a recording proxy in front of the office server, so that a
//! test can read every request the browsers sent.
//!
//! Without chromium and chromedriver a test prints `SKIPPED` and passes,
//! unless `GONGKAI_REQUIRE_ALL=1` (see `common::tools`).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use fantoccini::{Client, ClientBuilder, Locator};

use super::{free_port, tools};

/// The flags of every profile: headless, and nothing that talks to the
/// network by itself.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
];

/// A chromedriver of the test's own, and the profiles it started.
pub struct Browsers {
    driver: Child,
    port: u16,
    profiles: Vec<tempfile::TempDir>,
}

impl Browsers {
    /// `None` (and a SKIPPED line) without chromium and chromedriver.
    pub fn start(test: &str) -> Option<Browsers> {
        if !tools(test, &["chromium", "chromedriver"]) {
            return None;
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that the browsers it starts end
            // with it.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Browsers {
            driver,
            port,
            profiles: Vec::new(),
        })
    }

    /// A new browser with a fresh profile (its own cookies and IndexedDB).
    pub async fn profile(&mut self) -> Client {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", dir.path().display()));
        self.profiles.push(dir);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Browsers {
    fn drop(&mut self) {
        // The driver's whole group: the browsers it started go with it.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// One request a browser sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// Everything of the request as bytes: what a secret must not be in.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {}\n", self.method, self.uri).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// A reverse proxy on loopback in front of `upstream` that records every
/// request whole before passing it on.
pub struct Recorder {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    proxy.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        uri: path.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    });
    let mut outgoing = proxy
        .client
        .request(parts.method, format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Body::from(format!("proxy: {e}")))
                .unwrap();
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "content-length" && name != "connection" {
            response = response.header(name, value);
        }
    }
    let bytes: Bytes = answer.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}

impl Recorder {
    /// Listens on `port` of 127.0.0.1 and forwards to `upstream`
    /// (`http://127.0.0.1:PORT`).
    pub async fn start(port: u16, upstream: &str) -> Recorder {
        gongkai::tls::install_crypto_provider();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let proxy = Proxy {
            upstream: upstream.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            requests: requests.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            task,
        }
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (at most 30 s) for an element, failing with the page's text.
pub async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await {
            return element;
        }
        if Instant::now() > deadline {
            let text = page_text(browser).await;
            panic!(
                "no {css} on {:?} within 30 s:\n{text}",
                browser.current_url().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most 30 s) until the element's text contains `want`.
pub async fn wait_for_text(browser: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await {
            if element.text().await.is_ok_and(|t| t.contains(want)) {
                return;
            }
        }
        if Instant::now() > deadline {
            let text = page_text(browser).await;
            panic!("{css} never showed {want:?} within 30 s:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The page's visible text.
pub async fn page_text(browser: &Client) -> String {
    match browser.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(e) => format!("(no body: {e})"),
    }
}

/// Types into the field named `name`, replacing what it held.
pub async fn fill(browser: &Client, name: &str, value: &str) {
    let field = wait_for(browser, &format!("[name=\"{name}\"]")).await;
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Sets a field's value as a paste would (a textarea that `send_keys`
/// would leave on the first tab).
pub async fn paste(browser: &Client, name: &str, value: &str) {
    wait_for(browser, &format!("[name=\"{name}\"]")).await;
    browser
        .execute(
            "document.querySelector(`[name=\"${arguments[0]}\"]`).value = arguments[1];",
            vec![name.into(), value.into()],
        )
        .await
        .unwrap();
}

/// Clicks `css` once it is there. An element of the page being left (the
/// same selector on both pages) goes stale before the click lands: it is
/// found again on the page that replaced it.
pub async fn click(browser: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match wait_for(browser, css).await.click().await {
            Ok(_) => return,
            Err(fantoccini::error::CmdError::Standard(e))
                if e.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}
