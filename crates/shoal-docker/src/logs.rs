//! `service logs` and task logs in Docker's stream format: each line a frame of an 8-byte
//! header (stream 1 stdout / 2 stderr, three zero bytes, the length big-endian) and the line,
//! preceded by its timestamp (`timestamps`) and by the task's attributes (`details`:
//! `com.docker.swarm.node.id=…,com.docker.swarm.service.id=…,com.docker.swarm.task.id=…`,
//! which the CLI turns into `web.1.abc@node |`).
//!
//! The lines come from Shoal's own merge of every node's task logs (`/v1/services/{id}/logs`,
//! `/v1/tasks/{id}/logs`, `shoal_api::logs`), called in-process: this module only changes their
//! format (the attributes come from each line's `origin`).

use crate::error::{DockerError, DockerResult};
use crate::filters::bool_param;
use crate::{ApiVersion, Ctx};
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use shoal_api::app::Lookup;
use shoal_api::logs::{LogRecord, LogsState};
use shoal_driver::LogStream;
use shoal_manager::Consistency;
use std::collections::HashMap;
use tokio::sync::mpsc;

/// What the client asked for.
#[derive(Clone, Debug)]
struct Options {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    details: bool,
    follow: bool,
    tail: Option<usize>,
    since: Option<u64>,
}

fn options(q: &HashMap<String, String>) -> DockerResult<Options> {
    let stdout = bool_param(q, "stdout");
    let stderr = bool_param(q, "stderr");
    if !stdout && !stderr {
        return Err(DockerError::invalid("Bad parameters: you must choose at least one stream"));
    }
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("") | Some("all") => None,
        Some(t) => Some(t.parse::<usize>().map_err(|_| DockerError::invalid(format!("invalid tail {t:?}")))?),
    };
    let since = match q.get("since").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => Some(parse_since(s).ok_or_else(|| DockerError::invalid(format!("invalid since {s:?}")))?),
    };
    Ok(Options {
        stdout,
        stderr,
        timestamps: bool_param(q, "timestamps"),
        details: bool_param(q, "details"),
        follow: bool_param(q, "follow"),
        tail,
        since,
    })
}

/// Docker's `since`: Unix seconds with an optional fraction (`1700000000.5`), in nanoseconds.
fn parse_since(s: &str) -> Option<u64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: u64 = secs.parse().ok()?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u64 = format!("{frac:0<9}").parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// One line as a frame of Docker's multiplexed stream.
fn frame(rec: &LogRecord, o: &Options) -> Option<Bytes> {
    let stream: u8 = match rec.stream {
        LogStream::Stdout if o.stdout => 1,
        LogStream::Stderr if o.stderr => 2,
        _ => return None,
    };
    let mut payload = String::new();
    if o.timestamps {
        payload.push_str(&shoal_types::Timestamp::from_nanos(rec.timestamp).to_string());
        payload.push(' ');
    }
    if o.details {
        let (node, service) = rec.origin.as_ref().map_or(("", ""), |g| (&g.node_id, &g.service_id));
        payload.push_str(&format!(
            "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={} ",
            escape(node),
            escape(service),
            escape(&rec.task_id)
        ));
    }
    payload.push_str(&rec.line);
    payload.push('\n');
    let len = u32::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload.as_bytes());
    Some(Bytes::from(out))
}

/// Go's `url.QueryEscape` for the characters that can occur in ids and names.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(crate) async fn service_logs(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Extension(version): Extension<ApiVersion>,
    Query(q): Query<HashMap<String, String>>,
) -> DockerResult<Response> {
    let o = options(&q)?;
    let id = crate::resolve(&ctx, Lookup::Service, &id).await?;
    let svc = ctx.app.service(&id, Consistency::Linearizable).await?;
    stream(&ctx, &format!("/v1/services/{}/logs", svc.id), o, version).await
}

pub(crate) async fn task_logs(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Extension(version): Extension<ApiVersion>,
    Query(q): Query<HashMap<String, String>>,
) -> DockerResult<Response> {
    let o = options(&q)?;
    let key = crate::resolve(&ctx, Lookup::Task, &id).await?;
    let task = ctx
        .app
        .read(Consistency::Linearizable, |s| s.task(&shoal_types::TaskId::new(key)).map(|t| t.id.to_string()))
        .await?;
    let task = task.ok_or_else(|| DockerError::not_found(format!("task {id} not found")))?;
    stream(&ctx, &format!("/v1/tasks/{task}/logs"), o, version).await
}

/// The lines of `/v1/...{id}/logs` at `path`, reformatted as they arrive.
async fn stream(ctx: &Ctx, path: &str, o: Options, version: ApiVersion) -> DockerResult<Response> {
    use tower::ServiceExt;
    let mut uri = format!("{path}?follow={}", o.follow);
    if let Some(t) = o.tail {
        uri.push_str(&format!("&tail={t}"));
    }
    if let Some(s) = o.since {
        uri.push_str(&format!("&since={s}"));
    }
    let router = shoal_api::logs::service_logs_router(LogsState {
        manager: ctx.app.manager().clone(),
        agent: ctx.agent.clone(),
    });
    let req = Request::get(&uri)
        .body(Body::empty())
        .map_err(|e| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    if !resp.status().is_success() {
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = v["error"]["message"].as_str().unwrap_or("cannot read the logs").to_string();
        return Err(DockerError::new(status, message));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut body = resp.into_body().into_data_stream();
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(rec) = serde_json::from_slice::<LogRecord>(&line) else { continue };
                let Some(f) = frame(&rec, &o) else { continue };
                if tx.send(f).await.is_err() {
                    // The client went away: dropping the body stops the readers.
                    return;
                }
            }
        }
    });
    let out = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(b), rx))
    });
    let content_type = if version.at_least(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from_stream(out)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            stdout: true,
            stderr: true,
            timestamps: false,
            details: true,
            follow: false,
            tail: None,
            since: None,
        }
    }

    #[test]
    fn frames_are_dockers_multiplexing_with_task_attributes() {
        let rec = LogRecord {
            timestamp: 1_700_000_000_000_000_001,
            stream: LogStream::Stderr,
            line: "hello".into(),
            task_id: "t1".into(),
            source: String::new(),
            origin: Some(shoal_api::logs::LogOrigin {
                service_id: "s1".into(),
                node_id: "n1".into(),
                ..Default::default()
            }),
        };
        let f = frame(&rec, &opts()).expect("frame");
        let payload =
            "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 hello\n";
        assert_eq!(f[0], 2);
        assert_eq!(&f[1..4], &[0, 0, 0]);
        assert_eq!(u32::from_be_bytes([f[4], f[5], f[6], f[7]]) as usize, payload.len());
        assert_eq!(&f[8..], payload.as_bytes());
        let o = Options { details: false, timestamps: true, ..opts() };
        let f = frame(&rec, &o).expect("frame");
        assert_eq!(&f[8..], b"2023-11-14T22:13:20.000000001Z hello\n");
        let o = Options { stderr: false, ..opts() };
        assert!(frame(&rec, &o).is_none(), "stderr not asked for");
    }

    #[test]
    fn since_is_unix_seconds_with_a_fraction() {
        assert_eq!(parse_since("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_since("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_since("1700000000.000000001"), Some(1_700_000_000_000_000_001));
        assert_eq!(parse_since("yesterday"), None);
        assert_eq!(escape("a b/c"), "a+b%2Fc");
    }
}

/// Fuzz target: the logs query (`since`, `tail`, the stream booleans) as the client sends it.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn queries_never_panic(since in "[0-9.+-]{0,30}|\\PC{0,20}", tail in "[0-9a-z-]{0,25}", out in "\\PC{0,6}") {
            let q: HashMap<String, String> =
                [("since", &since), ("tail", &tail), ("stdout", &out), ("timestamps", &out)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
            if let Err(e) = options(&q) {
                prop_assert!(!e.message.trim().is_empty());
            }
            if let Some(n) = parse_since(&since) {
                // Only digits with at most one fraction of at most 9 digits read as a time.
                let (secs, frac) = since.split_once('.').unwrap_or((&since, ""));
                prop_assert!(frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()), "{since:?}");
                prop_assert_eq!(n / 1_000_000_000, secs.trim_start_matches('+').parse::<u64>().expect("seconds"));
            }
        }

        #[test]
        fn since_round_trips(secs in 0u64..(u64::MAX / 1_000_000_000 + 2), nanos in 0u64..1_000_000_000) {
            let want = secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(nanos));
            prop_assert_eq!(parse_since(&format!("{secs}.{nanos:09}")), want);
            prop_assert_eq!(parse_since(&format!("{secs}")), secs.checked_mul(1_000_000_000));
        }
    }

    #[test]
    fn a_since_with_an_empty_fraction_is_refused() {
        // Found by this target: `1700000000.` (and `.`-terminated values in general) read as a
        // time; Docker's ParseTimestamps refuses an empty fraction.
        assert_eq!(parse_since("1700000000."), None);
        assert_eq!(parse_since("."), None);
        assert_eq!(parse_since("1700000000.0"), Some(1_700_000_000_000_000_000));
        let q: HashMap<String, String> = [("since", "5."), ("stdout", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(options(&q).is_err_and(|e| e.message == "invalid since \"5.\""));
    }

    #[test]
    fn long_since_values_are_bounded() {
        assert_eq!(parse_since(&"9".repeat(100_000)), None);
        assert_eq!(parse_since(&format!("1.{}", "0".repeat(100_000))), None);
    }
}
