//! Shoal's user API: the `/v1` JSON routes every manager serves, and the client the CLI uses.
//! This crate (with the transport in `shoal-raft`) is the only one that knows wire formats.

pub mod client;
pub mod internal;
pub mod join;
pub mod server;

pub use client::{Client, ClientError};
pub use server::{
    router, ApiError, ClusterInfo, Created, JoinArgs, JoinTokenInfo, NodeUpdate, ServiceUpdate, ROUTES,
};

use std::path::Path;

/// Serves the API on a unix socket that only its owner (root) may use.
pub async fn serve_unix(path: &Path, manager: std::sync::Arc<shoal_manager::Manager>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    axum::serve(listener, router(manager)).await
}
