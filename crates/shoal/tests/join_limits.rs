//! `/internal/join` under a storm of bad joins, with real processes: every attempt is answered
//! quickly with `401` (a token the manager's replica refutes, without a Raft round trip) or `429`
//! with `Retry-After` (the per-address limit), the manager keeps serving, and a real node with
//! the right token still joins right after (its `cluster join` waits out the 429s).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{eventually, Node};

/// One `POST /internal/join` to `addr` as a joiner makes it (trusting only the CA the token
/// pins, no certificate of its own): the raw response.
fn join_attempt(addr: &str, tls: Arc<rustls::ClientConfig>, body: &str) -> String {
    let name = rustls::pki_types::ServerName::try_from("manager.shoal").expect("name");
    let conn = rustls::ClientConnection::new(tls, name).expect("client");
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let req = format!(
        "POST /internal/join HTTP/1.1\r\nHost: manager.shoal\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("write");
    stream.flush().expect("flush");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if !out.is_empty() => break,
            Err(e) => panic!("no answer to a join attempt: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> Option<u16> {
    response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn a_storm_of_bad_joins_is_answered_cheaply_and_real_joins_still_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut m = Node::new(tmp.path(), "mgr");
    m.start("daemon");
    assert!(m.ok(&["cluster", "init"]).contains("initialized"));
    let token: shoal_pki::JoinToken =
        m.ok(&["cluster", "join-token", "worker", "-q"]).parse().expect("a join token");
    let tls = shoal_pki::pinned_client_config(&token.ca_digest).expect("pinned config");

    // Bad tokens of every kind: malformed, another CA's, a guessed secret for this CA.
    let guessed = shoal_pki::JoinToken::generate(&token.ca_digest).expect("token").to_string();
    let other_ca = shoal_pki::JoinToken::generate(&"e".repeat(64)).expect("token").to_string();
    let bodies: Vec<String> = ["SHOAL-1-nope", other_ca.as_str(), guessed.as_str()]
        .iter()
        .map(|t| serde_json::json!({"token": t, "csr_pem": "x", "node_id": "intruder"}).to_string())
        .collect();
    let started = Instant::now();
    let (mut unauthorized, mut limited) = (0, 0);
    for i in 0..120 {
        let t0 = Instant::now();
        let resp = join_attempt(&m.addr(), tls.clone(), &bodies[i % bodies.len()]);
        assert!(t0.elapsed() < Duration::from_secs(2), "attempt {i} took {:?}", t0.elapsed());
        match status_of(&resp) {
            Some(401) => {
                assert!(resp.contains("bad_token"), "{resp}");
                unauthorized += 1;
            }
            Some(429) => {
                let lower = resp.to_ascii_lowercase();
                assert!(lower.contains("\r\nretry-after: "), "{resp}");
                assert!(resp.contains("rate_limited"), "{resp}");
                limited += 1;
            }
            other => panic!("attempt {i}: {other:?}: {resp}"),
        }
    }
    assert!(unauthorized >= 10, "the first attempts are answered: {unauthorized} 401s");
    assert!(limited >= 60, "a burst from one address is limited: {limited} 429s");
    assert!(started.elapsed() < Duration::from_secs(30), "the storm took {:?}", started.elapsed());

    // The manager still serves, and a real worker joins at once (through the same address's
    // limit: its join waits out the 429s).
    m.ok(&["node", "ls"]);
    let mut w = Node::new(tmp.path(), "wrk");
    w.start("daemon");
    let out = w.ok(&["cluster", "join", "--token", &token.to_string(), &m.addr()]);
    assert!(out.contains("worker"), "{out}");
    eventually(30, "the worker to be ready", || {
        let nodes = m.json(&["node", "ls", "--format", "json"]);
        (nodes.as_array()?.iter().filter(|n| n["status"]["state"] == "ready").count() == 2).then_some(())
    });
}
