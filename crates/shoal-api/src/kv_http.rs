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
//!
//! Managers serve the same routes under `/internal/kv` on their node-to-node listener (for
//! workers' etcd API, see [`crate::internal`]), answering errors as a typed [`WireError`] so the
//! worker can hand etcd's exact error back, and watch lines with `progress=true`.

use crate::kv::{KvApp, KvFailure, WatchItem};
use crate::server::{ApiError, JsonBody};
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
        let status = kv_status(&e);
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "invalid",
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The HTTP status of a failure (both error shapes).
fn kv_status(e: &KvFailure) -> StatusCode {
    match e {
        KvFailure::Kv(k) => match k.grpc_code() {
            GrpcCode::NotFound => StatusCode::NOT_FOUND,
            GrpcCode::FailedPrecondition => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        },
        KvFailure::NoLeader | KvFailure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The error shapes the routes can answer with: the API's (`/v1/kv`), or the typed one
/// (`/internal/kv`).
pub trait KvRouteError: From<KvFailure> + From<ApiError> + IntoResponse + Send + 'static {}
impl<E: From<KvFailure> + From<ApiError> + IntoResponse + Send + 'static> KvRouteError for E {}

/// Why a node-to-node key-value request failed, as the worker rebuilds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WireFailure {
    /// A store error (etcd's own).
    Kv {
        error: shoal_kv::KvError,
    },
    NoLeader,
    Unavailable {
        message: String,
    },
    /// A malformed request (or another API error), with its message.
    Invalid {
        message: String,
    },
}

/// An `/internal/kv` error: the API's `error` object plus the typed `failure`.
#[derive(Debug)]
pub struct WireError(pub StatusCode, pub WireFailure);

/// The body of a [`WireError`].
#[derive(Debug, Serialize, Deserialize)]
pub struct WireErrorBody {
    pub failure: WireFailure,
}

impl From<KvFailure> for WireError {
    fn from(e: KvFailure) -> Self {
        let status = kv_status(&e);
        let failure = match e {
            KvFailure::Kv(error) => WireFailure::Kv { error },
            KvFailure::NoLeader => WireFailure::NoLeader,
            KvFailure::Unavailable(message) => WireFailure::Unavailable { message },
        };
        WireError(status, failure)
    }
}

impl From<ApiError> for WireError {
    fn from(e: ApiError) -> Self {
        WireError(e.status, WireFailure::Invalid { message: e.message })
    }
}

impl IntoResponse for WireError {
    fn into_response(self) -> Response {
        let message = match &self.1 {
            WireFailure::Kv { error } => error.to_string(),
            WireFailure::NoLeader => KvFailure::NoLeader.to_string(),
            WireFailure::Unavailable { message } | WireFailure::Invalid { message } => message.clone(),
        };
        let body = serde_json::json!({
            "error": {"code": "kv", "message": message},
            "failure": self.1,
        });
        (self.0, Json(body)).into_response()
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct RangeBody {
    #[serde(flatten)]
    req: RangeRequest,
    #[serde(default)]
    serializable: bool,
}

async fn range<E: KvRouteError>(
    State(kv): State<Arc<KvApp>>,
    body: Result<JsonBody<RangeBody>, ApiError>,
) -> Result<Response, E> {
    // A malformed body is a 400 in the route's own error shape (axum's `Json` said 422).
    let JsonBody(b) = body?;
    Ok(Json(kv.range(b.req, b.serializable).await?).into_response())
}

async fn ops<E: KvRouteError>(
    State(kv): State<Arc<KvApp>>,
    body: Result<JsonBody<Op>, ApiError>,
) -> Result<Json<OpResponse>, E> {
    let JsonBody(op) = body?;
    if matches!(op, Op::Range(_)) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "reads go to POST /v1/kv/range").into());
    }
    Ok(Json(kv.write(op).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct WatchQuery {
    /// Base64, like the bodies.
    key: String,
    #[serde(default)]
    range_end: String,
    #[serde(default)]
    start_revision: i64,
    /// Also send `progress` lines (everything up to that revision has been sent).
    #[serde(default)]
    progress: bool,
}

/// One line of a watch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum WatchLine {
    Events {
        revision: i64,
        events: Vec<shoal_kv::Event>,
    },
    /// Only with `progress=true`.
    Progress {
        revision: i64,
    },
    Compacted {
        compact_revision: i64,
    },
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    shoal_kv::base64::decode(s)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("{field}: not base64")))
}

async fn watch<E: KvRouteError>(
    State(kv): State<Arc<KvApp>>,
    Query(q): Query<WatchQuery>,
) -> Result<Response, E> {
    let key = b64("key", &q.key)?;
    let range_end = b64("range_end", &q.range_end)?;
    let rx = kv.watch(q.start_revision, key, range_end)?;
    let progress = q.progress;
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        let line = loop {
            match rx.recv().await? {
                WatchItem::Events { revision, events } => break WatchLine::Events { revision, events },
                WatchItem::Compacted { compact_revision } => break WatchLine::Compacted { compact_revision },
                WatchItem::Progress { revision } if progress => break WatchLine::Progress { revision },
                WatchItem::Progress { .. } => continue,
            }
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(bytes)), rx))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

async fn leases<E: KvRouteError>(State(kv): State<Arc<KvApp>>) -> Result<Json<Vec<i64>>, E> {
    Ok(Json(kv.leases().await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(crate) struct LeaseQuery {
    #[serde(default)]
    keys: bool,
}

async fn lease<E: KvRouteError>(
    State(kv): State<Arc<KvApp>>,
    Path(id): Path<i64>,
    Query(q): Query<LeaseQuery>,
) -> Result<Json<shoal_kv::LeaseTimeToLiveResponse>, E> {
    Ok(Json(kv.lease_time_to_live(id, q.keys).await?))
}

async fn keepalive<E: KvRouteError>(
    State(kv): State<Arc<KvApp>>,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, E> {
    Ok(Json(serde_json::json!({ "ttl": kv.lease_keepalive(id).await? })))
}

pub fn kv_router(kv: Arc<KvApp>) -> Router {
    kv_routes::<ApiError>("/v1/kv").with_state(kv)
}

/// The routes under `prefix` (`/v1/kv`, `/internal/kv`), answering errors as `E`.
pub fn kv_routes<E: KvRouteError>(prefix: &str) -> Router<Arc<KvApp>> {
    Router::new()
        .route(&format!("{prefix}/range"), post(range::<E>))
        .route(&format!("{prefix}/ops"), post(ops::<E>))
        .route(&format!("{prefix}/watch"), get(watch::<E>))
        .route(&format!("{prefix}/leases"), get(leases::<E>))
        .route(&format!("{prefix}/leases/{{id}}"), get(lease::<E>))
        .route(&format!("{prefix}/leases/{{id}}/keepalive"), post(keepalive::<E>))
}

/// What a worker's etcd API needs of the cluster for headers, `MemberList` and `Status`
/// (`GET /internal/kv/info`), as the answering manager sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvInfo {
    /// The cluster's id string.
    pub cluster: String,
    /// The answering manager's Raft id.
    pub member_id: u64,
    pub raft_term: u64,
    /// Its applied store revision.
    pub revision: i64,
    /// The leader's Raft id, 0 if none.
    pub leader: u64,
    pub members: Vec<KvMember>,
    pub db_size: i64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
}

/// One manager in [`KvInfo`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
}

impl KvInfo {
    /// This manager's view.
    pub fn of(kv: &KvApp) -> KvInfo {
        let node = &kv.manager().node;
        let status = node.status();
        let (cluster, revision, bytes) = node.local(|s| {
            (
                s.cluster().map(|c| c.id.to_string()).unwrap_or_default(),
                s.kv().revision(),
                s.kv().stats().bytes,
            )
        });
        let member = |(id, n): (&u64, &shoal_manager::ManagerNode), is_learner: bool| KvMember {
            id: *id,
            name: n.node_id.clone(),
            peer_urls: vec![format!("https://{}", n.addr)],
            is_learner,
        };
        let mut members: Vec<KvMember> = status.voters.iter().map(|m| member(m, false)).collect();
        members.extend(status.learners.iter().map(|m| member(m, true)));
        KvInfo {
            cluster,
            member_id: status.raft_id,
            raft_term: status.term,
            revision,
            leader: status.leader.unwrap_or(0),
            members,
            db_size: i64::try_from(bytes).unwrap_or(i64::MAX),
            raft_index: status.last_log_index.unwrap_or(0),
            raft_applied_index: status.last_applied.unwrap_or(0),
        }
    }
}
