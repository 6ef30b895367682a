//! `GET /v1/events?since=NANOS&until=NANOS&type=service,node,task`: a stream of object changes
//! from the state store (`shoal events`), as newline-delimited JSON [`shoal_state::Event`]s.
//!
//! The manager keeps the last [`KEEP`] events it applied in memory, so `since` can look back
//! (like `docker events --since`); without `since` only new events come. A client subscribes to
//! the live stream *before* reading the kept ones and skips live events it already got, so the
//! stream has neither gaps nor duplicates. `until` ends the stream at that time.

use crate::server::ApiError;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use shoal_manager::Manager;
use shoal_state::Event;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// How many past events a manager keeps for `since`.
pub const KEEP: usize = 10_000;

pub struct EventLog {
    manager: Arc<Manager>,
    kept: Mutex<VecDeque<Arc<Event>>>,
}

impl EventLog {
    /// Starts keeping this manager's events.
    pub fn start(manager: Arc<Manager>) -> Arc<EventLog> {
        let log = Arc::new(EventLog { manager: manager.clone(), kept: Mutex::new(VecDeque::new()) });
        let mut rx = manager.node.subscribe();
        let l = log.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let mut k = l.kept.lock().unwrap_or_else(PoisonError::into_inner);
                        if k.len() == KEEP {
                            k.pop_front();
                        }
                        k.push_back(ev);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "the event log fell behind; some past events are not kept"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        log
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct EventsQuery {
    /// Nanoseconds since the Unix epoch.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Comma-separated object kinds: `service`, `node`, `task`.
    #[serde(rename = "type")]
    pub kinds: Option<String>,
}

fn now_nanos() -> u64 {
    shoal_types::Timestamp::from_system_time(SystemTime::now()).as_nanos()
}

async fn events(
    State(log): State<Arc<EventLog>>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let kinds: Option<Vec<String>> =
        q.kinds.as_ref().map(|k| k.split(',').map(|s| s.trim().to_string()).collect());
    if let Some(k) = &kinds {
        if let Some(bad) = k.iter().find(|k| !matches!(k.as_str(), "service" | "node" | "task")) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("unknown event type {bad:?}: use service, node or task"),
            ));
        }
    }
    let wanted = move |e: &Event| {
        kinds.as_ref().is_none_or(|k| k.iter().any(|k| k == e.object.kind()))
            && q.since.is_none_or(|s| e.at.as_nanos() >= s)
            && q.until.is_none_or(|u| e.at.as_nanos() <= u)
    };
    // Live first, then the kept ones: nothing falls between the two.
    let mut live = log.manager.node.subscribe();
    let (past, seen) = {
        let kept = log.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = kept.back().map_or(0, |e| e.index);
        let past: Vec<Arc<Event>> =
            if q.since.is_some() { kept.iter().cloned().collect() } else { Vec::new() };
        (past, seen)
    };
    let until = q.until;
    let (tx, rx) = tokio::sync::mpsc::channel::<Arc<Event>>(256);
    let wanted2 = wanted.clone();
    tokio::spawn(async move {
        for e in past.into_iter().filter(|e| wanted2(e)) {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        if until.is_some_and(|u| u <= now_nanos()) {
            return;
        }
        loop {
            let next = match until {
                Some(u) => {
                    let left = Duration::from_nanos(u.saturating_sub(now_nanos()));
                    match tokio::time::timeout(left, live.recv()).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
                None => live.recv().await,
            };
            match next {
                Ok(e) if e.index > seen && wanted2(&e) => {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let e = rx.recv().await?;
        let mut line = serde_json::to_vec(&*e).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(line)), rx))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

pub fn events_router(log: Arc<EventLog>) -> Router {
    Router::new().route("/v1/events", get(events)).with_state(log)
}
