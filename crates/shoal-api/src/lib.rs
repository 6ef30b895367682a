//! Shoal's user API: the `/v1` JSON routes every manager serves, and the client the CLI uses.
//! This crate (with the transport in `shoal-raft`) is the only one that knows wire formats.

pub mod app;
pub mod autolock;
pub mod backup;
pub mod chronos;
pub mod client;
pub mod dispatcher;
pub mod events;
pub mod exec;
pub mod exec_stream;
pub mod images;
pub mod internal;
pub mod jobs;
pub mod join;
pub mod kv;
pub mod kv_http;
pub mod leader;
pub mod logs;
pub mod migrate;
pub mod netview;
pub mod networks;
pub mod openapi;
pub mod registry_auth;
pub mod roles;
pub mod secrets;
pub mod server;
pub mod stack;
pub mod tcp;
pub mod ui;
pub mod units;

pub use client::{Client, ClientError};
pub use server::{
    router, ApiError, ClusterInfo, Created, InitArgs, JoinArgs, JoinInfo, JoinTokenInfo, NodeUpdate,
    ServiceCreate, ServiceUpdate, ROUTES,
};
pub use tcp::{serve_tcp, ClientCert, ClientCertRequest};

use std::path::Path;

/// A manager's long-lived API parts that every front end shares: the event log and the
/// key-value store's application layer (group commit, watches, lease housekeeping).
#[derive(Clone)]
pub struct Services {
    pub events: std::sync::Arc<events::EventLog>,
    pub kv: std::sync::Arc<kv::KvApp>,
}

impl Services {
    /// Starts them for `manager`; the key-value store keeps `retained_revisions` of history.
    pub fn start(manager: std::sync::Arc<shoal_manager::Manager>, retained_revisions: i64) -> Services {
        Services {
            events: events::EventLog::start(manager.clone()),
            kv: kv::KvApp::start(manager, retained_revisions),
        }
    }
}

/// Serves the API on a unix socket that only its owner (root) may use.
pub async fn serve_unix(
    path: ApiSocket,
    manager: std::sync::Arc<shoal_manager::Manager>,
    agent: logs::AgentSlot,
    services: Services,
) -> std::io::Result<()> {
    // Stops (after answering what is in flight) once the node has asked to leave the cluster.
    let shutdown = manager.leave_requested();
    serve_router(path, full_router(manager, agent, services), shutdown).await
}

/// The whole `/v1` API of a manager: the state endpoints and the logs of tasks, which its own
/// agent (in `agent`) and the other nodes' agents serve.
pub fn full_router(
    manager: std::sync::Arc<shoal_manager::Manager>,
    agent: logs::AgentSlot,
    services: Services,
) -> axum::Router {
    router(manager.clone())
        .merge(logs::service_logs_router(logs::LogsState { manager: manager.clone(), agent: agent.clone() }))
        .merge(exec_stream::exec_stream_router(logs::LogsState {
            manager: manager.clone(),
            agent: agent.clone(),
        }))
        .merge(exec::exec_router(logs::LogsState { manager: manager.clone(), agent }))
        .merge(events::events_router(services.events))
        .merge(units::router(manager, services.kv.clone()))
        .merge(kv_http::kv_router(services.kv))
        .layer(axum::middleware::map_response(server::json_errors))
        .layer(axum::middleware::from_fn(ui::track_requests))
}

/// A leave request from a worker's socket to its daemon, answered when the node has left.
pub type LeaveRequest = tokio::sync::oneshot::Sender<Result<(), String>>;

/// A worker's API socket: it answers health checks and `cluster leave`, and tells every other
/// request to go to a manager (like `docker` on a Swarm worker). It stops serving (after
/// answering what is in flight) when `shutdown` turns true.
pub async fn serve_unix_worker(
    path: ApiSocket,
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
    let join = axum::routing::post(|| async { join::JoinClusterError::AlreadyMember.into_api_error() });
    let r = axum::Router::new()
        .route("/v1/health", health)
        .route("/v1/cluster/leave", leave)
        .route("/v1/cluster/join", join)
        .fallback(|| async {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_manager",
                "this node is a worker: run this command against a manager",
            )
        });
    serve_router(path, r, shutdown).await
}

/// The daemon's API socket, claimed at start: a socket another daemon still serves is never
/// taken over (the second daemon refuses to start, saying so); a stale one (nobody listening) is
/// replaced. The daemon removes it on exit only while it is still its own.
pub struct ApiSocket {
    listener: std::os::unix::net::UnixListener,
    owner: SocketOwner,
}

/// Which file is this daemon's socket (device and inode), to remove it on exit only if it is.
#[derive(Clone, Debug)]
pub struct SocketOwner {
    path: std::path::PathBuf,
    id: (u64, u64),
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "another daemon is serving {0} (stop it first, or give this one its own --api-socket; its data \
         directory, --listen-addr and --ui-addr must differ too)"
    )]
    InUse(std::path::PathBuf),
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotASocket(std::path::PathBuf),
    #[error("{0}: {1}")]
    Io(std::path::PathBuf, std::io::Error),
}

impl ApiSocket {
    pub fn bind(path: &Path) -> Result<ApiSocket, SocketError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let io = |e| SocketError::Io(path.to_path_buf(), e);
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(SocketError::InUse(path.to_path_buf())),
                // Nobody listens: a daemon that died without cleaning up.
                Err(_) => std::fs::remove_file(path).map_err(io)?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let meta = std::fs::metadata(path).map_err(io)?;
        Ok(ApiSocket {
            listener,
            owner: SocketOwner { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) },
        })
    }

    pub fn owner(&self) -> SocketOwner {
        self.owner.clone()
    }

    /// The bound listener (non-blocking), for a server of another protocol on a socket claimed
    /// the same way (the Docker Engine API).
    pub fn into_listener(self) -> std::os::unix::net::UnixListener {
        self.listener
    }
}

impl SocketOwner {
    /// Removes the socket file if it is still the one this daemon bound.
    pub fn remove_if_ours(&self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn serve_router(
    socket: ApiSocket,
    r: axum::Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::UnixListener::from_std(socket.listener)?;
    axum::serve(listener, r)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}
