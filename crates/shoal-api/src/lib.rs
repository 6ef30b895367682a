//! Shoal's user API: the `/v1` JSON routes every manager serves, and the client the CLI uses.
//! This crate (with the transport in `shoal-raft`) is the only one that knows wire formats.

pub mod client;
pub mod dispatcher;
pub mod internal;
pub mod join;
pub mod server;
pub mod tcp;

pub use client::{Client, ClientError};
pub use server::{
    router, ApiError, ClusterInfo, Created, JoinArgs, JoinInfo, JoinTokenInfo, NodeUpdate, ServiceUpdate,
    ROUTES,
};
pub use tcp::{serve_tcp, ClientCert, ClientCertRequest};

use std::path::Path;

/// Serves the API on a unix socket that only its owner (root) may use.
pub async fn serve_unix(path: &Path, manager: std::sync::Arc<shoal_manager::Manager>) -> std::io::Result<()> {
    serve_router(path, router(manager)).await
}

/// A worker's API socket: it answers health checks and tells every other request to go to a
/// manager (like `docker` on a Swarm worker).
pub async fn serve_unix_worker(path: &Path, node_id: String) -> std::io::Result<()> {
    use axum::http::StatusCode;
    let health = axum::routing::get(move || {
        let node_id = node_id.clone();
        async move { axum::Json(serde_json::json!({ "status": "ok", "role": "worker", "node_id": node_id })) }
    });
    let r = axum::Router::new().route("/v1/health", health).fallback(|| async {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_manager",
            "this node is a worker: run this command against a manager",
        )
    });
    serve_router(path, r).await
}

async fn serve_router(path: &Path, r: axum::Router) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    axum::serve(listener, r).await
}
