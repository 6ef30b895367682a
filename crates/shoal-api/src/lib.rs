//! Shoal's user API: the `/v1` JSON routes every manager serves, and the client the CLI uses.
//! This crate (with the transport in `shoal-raft`) is the only one that knows wire formats.

pub mod client;
pub mod dispatcher;
pub mod events;
pub mod internal;
pub mod join;
pub mod logs;
pub mod migrate;
pub mod server;
pub mod tcp;
pub mod ui;

pub use client::{Client, ClientError};
pub use server::{
    router, ApiError, ClusterInfo, Created, JoinArgs, JoinInfo, JoinTokenInfo, NodeUpdate, ServiceUpdate,
    ROUTES,
};
pub use tcp::{serve_tcp, ClientCert, ClientCertRequest};

use std::path::Path;

/// Serves the API on a unix socket that only its owner (root) may use.
pub async fn serve_unix(
    path: &Path,
    manager: std::sync::Arc<shoal_manager::Manager>,
    agent: logs::AgentSlot,
    events: std::sync::Arc<events::EventLog>,
) -> std::io::Result<()> {
    // Stops (after answering what is in flight) once the node has asked to leave the cluster.
    let shutdown = manager.leave_requested();
    serve_router(path, full_router(manager, agent, events), shutdown).await
}

/// The whole `/v1` API of a manager: the state endpoints and the logs of tasks, which its own
/// agent (in `agent`) and the other nodes' agents serve.
pub fn full_router(
    manager: std::sync::Arc<shoal_manager::Manager>,
    agent: logs::AgentSlot,
    events: std::sync::Arc<events::EventLog>,
) -> axum::Router {
    router(manager.clone())
        .merge(logs::service_logs_router(logs::LogsState { manager, agent }))
        .merge(events::events_router(events))
        .layer(axum::middleware::from_fn(ui::track_requests))
}

/// A leave request from a worker's socket to its daemon, answered when the node has left.
pub type LeaveRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

/// A worker's API socket: it answers health checks and `cluster leave`, and tells every other
/// request to go to a manager (like `docker` on a Swarm worker). It stops serving (after
/// answering what is in flight) when `shutdown` turns true.
pub async fn serve_unix_worker(
    path: &Path,
    node_id: String,
    leave: tokio::sync::mpsc::Sender<LeaveRequest>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    let health = axum::routing::get(move || {
        let node_id = node_id.clone();
        async move { axum::Json(serde_json::json!({ "status": "ok", "role": "worker", "node_id": node_id })) }
    });
    let leave = axum::routing::post(move || {
        let leave = leave.clone();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let unavailable = |m: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m);
            leave.send(tx).await.map_err(|_| unavailable("the daemon is stopping".into()))?;
            match rx.await {
                Ok(Ok(())) => Ok(StatusCode::NO_CONTENT),
                Ok(Err(e)) => Err(unavailable(e)),
                Err(_) => Err(unavailable("the daemon stopped before leaving".into())),
            }
        }
    });
    let r = axum::Router::new().route("/v1/health", health).route("/v1/cluster/leave", leave).fallback(
        || async {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_manager",
                "this node is a worker: run this command against a manager",
            )
        },
    );
    serve_router(path, r, shutdown).await
}

async fn serve_router(
    path: &Path,
    r: axum::Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    axum::serve(listener, r)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}
