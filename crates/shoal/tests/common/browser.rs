//! Real headless Chromium driven over WebDriver (Debian's chromium-driver), for the web UI's
//! tests: the driver process, a browser session, polling the page, screenshots.

#![allow(dead_code)] // each test binary uses a different part

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where screenshots go: `target/test-artifacts/` (CI keeps the directory).
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

pub struct ChromeDriver(Child);

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn chromedriver(port: u16, log: &Path) -> ChromeDriver {
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; scripts/install-deps.sh installs it)");
    let d = ChromeDriver(child);
    super::eventually(20, "chromedriver to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    d
}

pub async fn browser(driver_port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a WebDriver session in headless Chromium")
}

/// How often the page is looked at again.
pub const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Polls `f` (a script returning a JSON value) until `ok` accepts its result, for `secs`.
pub async fn wait_js(c: &Client, secs: u64, what: &str, script: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = super::poll_async(Duration::from_secs(secs), LOOK_EVERY, async || {
        match c.execute(script, vec![]).await {
            Ok(v) if ok(&v) => return Some(v),
            Ok(v) => last = v,
            Err(e) => last = json!(e.to_string()),
        }
        None
    })
    .await;
    if let Some(v) = found {
        return v;
    }
    let shot = c.screenshot().await.unwrap_or_default();
    let path = artifacts().join(format!("ui-timeout-{}.png", what.replace(' ', "-")));
    let _ = std::fs::write(&path, shot);
    panic!("timed out waiting for {what}; last: {last}; screenshot: {}", path.display());
}

/// Checks for `how_long` that `script`'s result keeps satisfying `ok` (e.g. a banner stays up):
/// looks for the first result that does not, which must not come within `how_long`.
pub async fn stays(c: &Client, how_long: Duration, what: &str, script: &str, ok: impl Fn(&Value) -> bool) {
    let gone = super::poll_async(how_long, LOOK_EVERY, async || {
        let v = c.execute(script, vec![]).await.unwrap_or_else(|e| json!(e.to_string()));
        (!ok(&v)).then_some(v)
    })
    .await;
    if let Some(v) = gone {
        let shot = c.screenshot().await.unwrap_or_default();
        let path = artifacts().join(format!("ui-gone-{}.png", what.replace(' ', "-")));
        let _ = std::fs::write(&path, shot);
        panic!("{what} did not stay for {how_long:?}; now: {v}; screenshot: {}", path.display());
    }
}

/// Waits until the page shows a JavaScript dialog (`confirm()`) and returns its text.
pub async fn wait_dialog(c: &Client, secs: u64, what: &str) -> String {
    let mut last = String::new();
    let text = super::poll_async(Duration::from_secs(secs), LOOK_EVERY, async || {
        c.get_alert_text().await.map_err(|e| last = e.to_string()).ok()
    })
    .await;
    text.unwrap_or_else(|| panic!("timed out waiting for {what}: {last}"))
}

/// Saves a screenshot of the page as `target/test-artifacts/<name>`.
pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(artifacts().join(name), png).expect("write screenshot");
}

/// A script that records, in `window.__requests`, the method and URL of every `fetch` the page
/// makes from now on (the resource timings keep the ones before).
pub const RECORD_REQUESTS_JS: &str = "performance.setResourceTimingBufferSize(100000);
window.__requests = [];
const fetch0 = window.fetch;
window.fetch = function (input, init) {
  window.__requests.push([(init && init.method) || 'GET', String(input)]);
  return fetch0.apply(this, arguments);
};
";
