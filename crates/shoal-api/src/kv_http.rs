//! `/v1/kv/…`: the key-value store over Shoal's own API (for `shoal kv` and the web UI), a thin
//! translation to [`KvApp`]. Keys and values are base64 in JSON, as in etcd's JSON gateway;
//! errors carry etcd's messages.
//!
//! | route | body / query | answer |
//! | --- | --- | --- |
//! | `POST /v1/kv/range` | a `RangeRequest` (+ `serializable`) | `RangeResponse` |
//! | `POST /v1/kv/ops` | an `Op` (put, delete_range, txn, compact, lease_grant, lease_revoke) | its response |
//! | `GET /v1/kv/watch` | `key`, `range_end` (base64), `start_revision` | NDJSON, one line per revision |
//! | `GET /v1/kv/leases` | | lease ids |
//! | `GET /v1/kv/leases/{id}` | `keys=true` | `LeaseTimeToLiveResponse` |
//! | `POST /v1/kv/leases/{id}/keepalive` | | `{"ttl": N}` |

use crate::kv::{KvApp, KvFailure, WatchItem};
use crate::server::ApiError;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_kv::{GrpcCode, Op, OpResponse, RangeRequest};
use std::sync::Arc;

impl From<KvFailure> for ApiError {
    fn from(e: KvFailure) -> Self {
        let message = e.to_string();
        match e {
            KvFailure::Kv(k) => {
                let (status, code) = match k.grpc_code() {
                    GrpcCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                    GrpcCode::FailedPrecondition => (StatusCode::CONFLICT, "conflict"),
                    _ => (StatusCode::BAD_REQUEST, "invalid"),
                };
                ApiError::new(status, code, message)
            }
            KvFailure::NoLeader | KvFailure::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
        }
    }
}

#[derive(Deserialize)]
struct RangeBody {
    #[serde(flatten)]
    req: RangeRequest,
    #[serde(default)]
    serializable: bool,
}

async fn range(State(kv): State<Arc<KvApp>>, Json(b): Json<RangeBody>) -> Result<Response, ApiError> {
    Ok(Json(kv.range(b.req, b.serializable).await?).into_response())
}

async fn ops(State(kv): State<Arc<KvApp>>, Json(op): Json<Op>) -> Result<Json<OpResponse>, ApiError> {
    if matches!(op, Op::Range(_)) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "reads go to POST /v1/kv/range"));
    }
    Ok(Json(kv.write(op).await?))
}

#[derive(Deserialize)]
struct WatchQuery {
    /// Base64, like the bodies.
    key: String,
    #[serde(default)]
    range_end: String,
    #[serde(default)]
    start_revision: i64,
}

/// One line of a watch.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WatchLine {
    Events { revision: i64, events: Vec<shoal_kv::Event> },
    Compacted { compact_revision: i64 },
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    shoal_kv::base64::decode(s)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("{field}: not base64")))
}

async fn watch(State(kv): State<Arc<KvApp>>, Query(q): Query<WatchQuery>) -> Result<Response, ApiError> {
    let key = b64("key", &q.key)?;
    let range_end = b64("range_end", &q.range_end)?;
    let rx = kv.watch(q.start_revision, key, range_end)?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = loop {
            match rx.recv().await? {
                WatchItem::Events { revision, events } => break WatchLine::Events { revision, events },
                WatchItem::Compacted { compact_revision } => break WatchLine::Compacted { compact_revision },
                WatchItem::Progress { .. } => continue,
            }
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(bytes)), rx))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

async fn leases(State(kv): State<Arc<KvApp>>) -> Result<Json<Vec<i64>>, ApiError> {
    Ok(Json(kv.leases().await?))
}

#[derive(Deserialize)]
struct LeaseQuery {
    #[serde(default)]
    keys: bool,
}

async fn lease(
    State(kv): State<Arc<KvApp>>,
    Path(id): Path<i64>,
    Query(q): Query<LeaseQuery>,
) -> Result<Json<shoal_kv::LeaseTimeToLiveResponse>, ApiError> {
    Ok(Json(kv.lease_time_to_live(id, q.keys).await?))
}

async fn keepalive(
    State(kv): State<Arc<KvApp>>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(serde_json::json!({ "ttl": kv.lease_keepalive(id).await? })))
}

pub fn kv_router(kv: Arc<KvApp>) -> Router {
    Router::new()
        .route("/v1/kv/range", post(range))
        .route("/v1/kv/ops", post(ops))
        .route("/v1/kv/watch", get(watch))
        .route("/v1/kv/leases", get(leases))
        .route("/v1/kv/leases/{id}", get(lease))
        .route("/v1/kv/leases/{id}/keepalive", post(keepalive))
        .with_state(kv)
}
