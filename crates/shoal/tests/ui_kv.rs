//! The key-value store in the web UI, in real headless Chromium driven over WebDriver, against a
//! real `shoal daemon` after `cluster init`; every write goes through `shoal kv` (or, for what
//! the CLI cannot send, the API socket), never through the page:
//!
//! - browsing: every key, then a prefix; each row as the CLI reads it (text or marked base64 for
//!   a value or key that is not UTF-8 text, revisions, version, a 64-bit lease id in etcd's hex);
//!   the store's revision; a long value cut short, then shown whole; keys and values holding HTML
//!   stay text;
//! - watching: puts and deletes from the CLI reach the table live, and the event log; turned off
//!   and on, the watch resumes after the last revision the table holds (the changes in between
//!   arrive as events); after a compaction it reads the keys again, saying so; when the daemon
//!   dies it says it reconnects, and does once the daemon is back;
//! - the page sends no write: every request it made is a read (the UI listener refused none).

mod common;
use common::browser::{browser, chromedriver, screenshot, wait_js, RECORD_REQUESTS_JS};
use common::{eventually, free_port, Node};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

/// `POST path` with a JSON body on `n`'s API socket: for what `shoal kv` cannot send (a key or
/// value that is not UTF-8, a lease with an id of our choosing). The answer's JSON.
fn api_post(n: &Node, path: &str, body: &Value) -> Value {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::os::unix::net::UnixStream::connect(n.dir.join("shoal.sock")).expect("the API socket");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, payload) = resp.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "POST {path} {body}: {resp}");
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("POST {path}: {e}: {payload}"))
}

fn b64(bytes: &[u8]) -> String {
    shoal_kv::base64::encode(bytes)
}

/// A key or value as the page must show it: `(text, "text")` when the bytes are UTF-8 without
/// control characters (but tab and line breaks) or bidirectional overrides, else
/// `(base64, "base64")`.
fn shown(b64: &str) -> (String, &'static str) {
    let bytes = shoal_kv::base64::decode(b64).expect("base64 from the API");
    let text_like = |s: &str| {
        !s.chars().any(|c| {
            matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
                | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
    };
    match String::from_utf8(bytes) {
        Ok(s) if text_like(&s) => (s, "text"),
        _ => (b64.to_string(), "base64"),
    }
}

/// One row of the table as the CLI's read says it must be.
#[derive(Debug)]
struct Row {
    key_b64: String,
    key: (String, &'static str),
    value: (String, &'static str),
    create: String,
    modified: String,
    version: String,
    lease: String,
}

/// The keys under `prefix` and the store's revision, from `shoal kv get`; every key for "" (from
/// the API: that range starts at the key "\0", which no command line can hold).
fn cli_rows(m: &Node, prefix: &str) -> (Vec<Row>, i64) {
    let r = if prefix.is_empty() {
        api_post(m, "/v1/kv/range", &json!({"key": b64(&[0]), "range_end": b64(&[0])}))
    } else {
        m.json(&["kv", "get", prefix, "--prefix", "--format", "json"])
    };
    let rows = r["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| {
            let key_b64 = kv["key"].as_str().expect("key").to_string();
            let lease = kv["lease"].as_u64().expect("lease");
            Row {
                key: shown(&key_b64),
                value: shown(kv["value"].as_str().unwrap_or("")),
                key_b64,
                create: kv["create_revision"].to_string(),
                modified: kv["mod_revision"].to_string(),
                version: kv["version"].to_string(),
                lease: if lease == 0 { String::new() } else { format!("{lease:016x}") },
            }
        })
        .collect();
    (rows, r["revision"].as_i64().expect("revision"))
}

/// The table's rows: `[data-key, key text, key encoding, value text, value encoding, cut short,
/// created, modified, version, lease]`.
const ROWS: &str = r#"
const rows = document.querySelectorAll('#kv-table tbody tr');
return Array.from(rows).map((r) => {
  const k = r.querySelector('.kv-key'), v = r.querySelector('.kv-value');
  const t = (sel) => r.querySelector(sel).textContent;
  return [r.dataset.key, k.querySelector('.kv-text').textContent, k.dataset.encoding,
    v.querySelector('.kv-text').textContent, v.dataset.encoding,
    !!v.querySelector('.kv-more[aria-expanded="false"]'),
    t('.kv-create'), t('.kv-mod'), t('.kv-version'), t('.kv-lease')];
});"#;

/// Whether the page's rows are `want`, in order. A value cut short must be the start of the
/// whole value, followed by an ellipsis.
fn rows_match(page: &Value, want: &[Row]) -> bool {
    let Some(page) = page.as_array() else { return false };
    page.len() == want.len()
        && page.iter().zip(want).all(|(p, w)| {
            let s = |i: usize| p[i].as_str().unwrap_or("\u{fffd}missing");
            let value_ok = if p[5] == true {
                let cut = s(3).strip_suffix('…').unwrap_or("\u{fffd}no ellipsis").trim_end();
                w.value.0.starts_with(cut) && w.value.0.len() > cut.len()
            } else {
                s(3) == w.value.0
            };
            s(0) == w.key_b64
                && s(1) == w.key.0
                && s(2) == w.key.1
                && value_ok
                && s(4) == w.value.1
                && s(6) == w.create
                && s(7) == w.modified
                && s(8) == w.version
                && s(9) == w.lease
        })
}

/// Waits until the table shows exactly what the CLI reads under `prefix` now.
async fn wait_rows(c: &Client, m: &Node, prefix: &str, what: &str) -> i64 {
    let (want, revision) = cli_rows(m, prefix);
    wait_js(c, 20, what, ROWS, |v| rows_match(v, &want)).await;
    revision
}

const WATCH_STATE: &str = "return document.querySelector('#kv-watch-state').dataset.state;";
const NOTE: &str = "const n = document.querySelector('#kv-note'); return n.hidden ? null : n.textContent;";
const SHOWN_REVISION: &str = "return document.querySelector('#kv-rev').textContent;";
/// The live log: `[kind, key or note]`, newest first.
const LOG: &str = "return Array.from(document.querySelectorAll('#kv-log-table tbody tr')).map((r) => [r.dataset.kind, r.children[2].textContent]);";

fn logged(v: &Value, kind: &str, key: &str) -> bool {
    v.as_array().is_some_and(|a| a.iter().any(|e| e[0] == kind && e[1] == key))
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.expect("click");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_store_in_chromium_browsed_and_watched_live() {
    let root = tempfile::tempdir().expect("tmp");
    let mut m = Node::new(root.path(), "m1");
    m.start("daemon");
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));
    eventually(20, "the store to take writes", || {
        m.cli(&["kv", "put", "app/a", "hello"]).status.success().then_some(())
    });
    // Through the CLI: text, a long value, a value on two lines, HTML in a key and in a value,
    // a value of control characters (UTF-8, but not text), a key outside the prefix.
    let long = format!("long-{}", "abcdefghij".repeat(30));
    let xss_key = "app/<script>window.__kvXss = 1</script>";
    for (k, v) in [
        ("app/long", long.as_str()),
        ("app/lines", "first line\nsecond line"),
        (xss_key, "<img src=x onerror=\"window.__kvXss = 2\">"),
        ("app/ctl", "\u{1}\u{2}\u{3}"),
        ("other/x", "outside"),
    ] {
        assert_eq!(m.ok(&["kv", "put", k, v]), "OK");
    }
    // What the CLI cannot send: a value and a key that are not UTF-8, a lease id past 2^53 (a
    // JavaScript number would round it), which the CLI then attaches.
    api_post(
        &m,
        "/v1/kv/ops",
        &json!({"put": {"key": b64(b"app/bin"), "value": b64(&[0xff, 0xfe, 0, 0x80, b'x'])}}),
    );
    api_post(&m, "/v1/kv/ops", &json!({"put": {"key": b64(b"app/\xffkey"), "value": b64(b"binary key")}}));
    api_post(&m, "/v1/kv/ops", &json!({"lease_grant": {"id": 0x7000_0000_0000_0001_i64, "ttl": 600}}));
    assert_eq!(m.ok(&["kv", "put", "app/leased", "with a lease", "--lease", "7000000000000001"]), "OK");

    let driver_port = free_port();
    let _cd = chromedriver(driver_port, &root.path().join("chromedriver.log"));
    let c = browser(driver_port, &root.path().join("chrome-profile")).await;

    // Every key (no prefix), once the page is up; then record every request the page makes from
    // here on (the resource timings have the ones before).
    c.goto(&format!("{}/#/kv", m.ui_url())).await.expect("open the UI");
    let revision = wait_rows(&c, &m, "", "every key").await;
    wait_js(&c, 5, "the store's revision", SHOWN_REVISION, |v| v.as_str() == Some(&revision.to_string()))
        .await;
    c.execute(RECORD_REQUESTS_JS, vec![]).await.expect("record the page's requests");

    // A prefix, typed and browsed: its keys only, as the CLI reads them, at the CLI's revision.
    let input = c.find(Locator::Css("#kv-prefix")).await.expect("prefix input");
    input.clear().await.expect("clear");
    input.send_keys("app/").await.expect("type the prefix");
    click(&c, "#kv-browse").await;
    let revision = wait_rows(&c, &m, "app/", "the keys under app/").await;
    wait_js(&c, 5, "the store's revision", SHOWN_REVISION, |v| v.as_str() == Some(&revision.to_string()))
        .await;
    let hash = c.execute("return location.hash;", vec![]).await.expect("hash");
    assert_eq!(hash, "#/kv/app%2F", "the prefix is in the address");
    let (want, _) = cli_rows(&m, "app/");
    let by_key =
        |k: &[u8]| want.iter().find(|r| r.key_b64 == b64(k)).unwrap_or_else(|| panic!("{k:?} listed"));
    // What the rows say, spelled out (rows_match checked them against the CLI's answer).
    assert_eq!(by_key(b"app/bin").value, (b64(&[0xff, 0xfe, 0, 0x80, b'x']), "base64"));
    assert_eq!(by_key(b"app/ctl").value, ("AQID".to_string(), "base64"));
    assert_eq!(by_key(b"app/\xffkey").key, (b64(b"app/\xffkey"), "base64"));
    assert_eq!(by_key(b"app/leased").lease, "7000000000000001");
    assert_eq!(by_key(xss_key.as_bytes()).key, (xss_key.to_string(), "text"));
    let page = c.execute(ROWS, vec![]).await.expect("rows");
    let marked = |k: &[u8]| page.as_array().and_then(|a| a.iter().find(|r| r[0] == b64(k)).cloned());
    assert_eq!(marked(b"app/long").expect("app/long")[5], true, "a long value is cut short");
    assert_eq!(marked(b"app/lines").expect("app/lines")[5], true, "a value on two lines is cut short");
    assert_eq!(marked(b"app/a").expect("app/a")[5], false);
    assert!(marked(b"other/x").is_none(), "a key outside the prefix");
    // HTML in keys and values stayed text: nothing ran, no element was made of it.
    let html = "return [typeof window.__kvXss, document.querySelectorAll('#kv script, #kv img').length,
        Array.from(document.querySelectorAll('#kv-table .kv-key .kv-text')).some((e) => e.textContent.includes('<script>'))];";
    assert_eq!(c.execute(html, vec![]).await.expect("html"), json!(["undefined", 0, true]));
    // The whole long value, on demand.
    click(&c, &format!("#kv-table tr[data-key=\"{}\"] button.kv-more", b64(b"app/long"))).await;
    let whole = format!(
        "return document.querySelector('#kv-table tr[data-key=\"{}\"] .kv-value .kv-text').textContent;",
        b64(b"app/long")
    );
    wait_js(&c, 5, "the whole long value", &whole, |v| *v == long.as_str()).await;
    screenshot(&c, "ui-kv.png").await;

    // Watch: the CLI's puts and deletes reach the table live; a key outside the prefix does not.
    click(&c, "#kv-watch").await;
    wait_js(&c, 10, "the watch to be live", WATCH_STATE, |v| v == "live").await;
    assert_eq!(m.ok(&["kv", "put", "app/new", "fresh"]), "OK");
    assert_eq!(m.ok(&["kv", "put", "app/a", "hello again"]), "OK");
    assert_eq!(m.ok(&["kv", "del", "app/ctl"]), "1");
    assert_eq!(m.ok(&["kv", "put", "other/y", "not shown"]), "OK");
    wait_rows(&c, &m, "app/", "the watched changes in the table").await;
    let log = wait_js(&c, 10, "the changes in the live log", LOG, |v| {
        logged(v, "PUT", "app/new") && logged(v, "PUT", "app/a") && logged(v, "DELETE", "app/ctl")
    })
    .await;
    assert!(!logged(&log, "PUT", "other/y"), "nothing outside the prefix: {log}");
    screenshot(&c, "ui-kv-watch.png").await;

    // Off, then on again: the watch resumes after the revision the table holds, so the changes
    // made meanwhile arrive as events (a fresh read would log none).
    click(&c, "#kv-watch").await;
    wait_js(&c, 5, "the watch to be off", WATCH_STATE, |v| v == "off").await;
    assert_eq!(m.ok(&["kv", "put", "app/while-off", "x"]), "OK");
    assert_eq!(m.ok(&["kv", "del", "app/new"]), "1");
    click(&c, "#kv-watch").await;
    wait_rows(&c, &m, "app/", "the changes made while the watch was off").await;
    wait_js(&c, 10, "the missed changes as events", LOG, |v| {
        logged(v, "PUT", "app/while-off") && logged(v, "DELETE", "app/new")
    })
    .await;

    // Off again, and the history the watch would resume from is compacted away: the page says so,
    // reads the keys again and watches on from there.
    click(&c, "#kv-watch").await;
    wait_js(&c, 5, "the watch to be off", WATCH_STATE, |v| v == "off").await;
    assert_eq!(m.ok(&["kv", "put", "app/compacted-away", "1"]), "OK");
    assert_eq!(m.ok(&["kv", "del", "app/while-off"]), "1");
    let (_, now) = cli_rows(&m, "app/");
    m.ok(&["kv", "compaction", &now.to_string()]);
    click(&c, "#kv-watch").await;
    wait_js(&c, 20, "the compaction message", NOTE, |v| {
        v.as_str()
            .is_some_and(|t| t.contains("compacted") && t.contains(&format!("read again at revision {now}")))
    })
    .await;
    wait_rows(&c, &m, "app/", "the keys read again after the compaction").await;
    wait_js(&c, 10, "the watch live again", WATCH_STATE, |v| v == "live").await;
    wait_js(&c, 5, "the store's revision", SHOWN_REVISION, |v| v.as_str() == Some(&now.to_string())).await;
    assert_eq!(m.ok(&["kv", "put", "app/after-compaction", "y"]), "OK");
    wait_rows(&c, &m, "app/", "a put after the compaction").await;
    screenshot(&c, "ui-kv-compacted.png").await;

    // The daemon dies: the page says the watch ended and that it reconnects; once the daemon is
    // back the watch is too, and changes reach the table again.
    m.kill9();
    wait_js(&c, 20, "the reconnecting message", NOTE, |v| {
        v.as_str().is_some_and(|t| t.contains("reconnecting from revision"))
    })
    .await;
    wait_js(&c, 5, "the watch reconnecting", WATCH_STATE, |v| v == "reconnecting").await;
    m.start("daemon");
    eventually(30, "the daemon to take writes again", || {
        m.cli(&["kv", "put", "app/after-restart", "back"]).status.success().then_some(())
    });
    wait_js(&c, 30, "the watch back", NOTE, |v| v.as_str().is_some_and(|t| t.contains("The watch is back")))
        .await;
    wait_js(&c, 5, "the watch live", WATCH_STATE, |v| v == "live").await;
    wait_rows(&c, &m, "app/", "the put made as the daemon came back").await;
    assert_eq!(m.ok(&["kv", "del", "app/a"]), "1");
    wait_rows(&c, &m, "app/", "a delete after the reconnection").await;
    screenshot(&c, "ui-kv-reconnected.png").await;

    // No write from the page: every request since recording was a read (a range or a GET), the
    // watch and the range among them; no request at all (from the page's load on) went to a write
    // route or was refused by the UI listener.
    let seen = c
        .execute(
            "return [window.__requests,
               performance.getEntriesByType('resource').map((e) => [e.name, e.responseStatus])];",
            vec![],
        )
        .await
        .expect("the page's requests");
    let requests = seen[0].as_array().expect("recorded requests");
    for r in requests {
        let (method, url) = (r[0].as_str().unwrap_or(""), r[1].as_str().unwrap_or(""));
        assert!(
            method == "GET" || (method == "POST" && url == "/v1/kv/range"),
            "the page sent {method} {url}"
        );
        assert!(
            !url.contains("/v1/kv/") || url == "/v1/kv/range" || url.starts_with("/v1/kv/watch?"),
            "{url}"
        );
    }
    assert!(requests.iter().any(|r| r[0] == "POST" && r[1] == "/v1/kv/range"), "{requests:?}");
    assert!(requests
        .iter()
        .any(|r| r[0] == "GET" && r[1].as_str().is_some_and(|u| u.starts_with("/v1/kv/watch?"))));
    let resources = seen[1].as_array().expect("resource timings");
    assert!(
        resources.iter().any(|r| r[0].as_str().is_some_and(|u| u.contains("/v1/kv/range"))),
        "{resources:?}"
    );
    for r in resources {
        let url = r[0].as_str().unwrap_or("");
        assert!(!url.contains("/v1/kv/ops") && !url.contains("/v1/kv/leases"), "the page asked for {url}");
        // The browser's own ask for an icon the UI has none of is not the page's request.
        if !url.ends_with("/favicon.ico") {
            assert_ne!(r[1], 403, "the UI listener refused {url}");
        }
    }
    c.close().await.expect("close the browser");
}
