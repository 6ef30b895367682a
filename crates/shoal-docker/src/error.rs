//! Errors in Docker's shape: `{"message": "..."}` with the status Docker would give.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shoal_api::app::AppError;

/// What a handler answers when it fails.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DockerError {
    pub status: StatusCode,
    pub message: String,
}

pub type DockerResult<T> = Result<T, DockerError>;

/// Docker's words for a swarm request on a worker.
pub const NOT_A_MANAGER: &str =
    "This node is not a swarm manager. Worker nodes can't be used to view or modify \
     cluster state. Please run this command on a manager node or promote the current node to a manager.";

/// Docker's words for a swarm request on a node in no cluster, with Shoal's commands.
pub const NOT_IN_A_SWARM: &str =
    "This node is not a swarm manager. Use `shoal cluster init` or `shoal cluster \
     join` to connect this node to a cluster and try again.";

impl DockerError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        DockerError { status, message: message.into() }
    }
    /// 400: the request cannot be mapped or is malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        DockerError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        DockerError::new(StatusCode::NOT_FOUND, message)
    }
    /// 501: outside the subset Shoal serves, naming what is missing.
    pub fn not_implemented(what: impl std::fmt::Display) -> Self {
        DockerError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "Shoal does not implement {what}: its Docker API covers the swarm subset (version, info, \
                 nodes, services, tasks, service logs, overlay networks, secrets and configs)"
            ),
        )
    }
    pub fn not_a_manager() -> Self {
        DockerError::new(StatusCode::SERVICE_UNAVAILABLE, NOT_A_MANAGER)
    }
}

impl IntoResponse for DockerError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "message": self.message }))).into_response()
    }
}

impl From<AppError> for DockerError {
    fn from(e: AppError) -> Self {
        let status = e.kind.http_status();
        DockerError::new(status, e.message)
    }
}
