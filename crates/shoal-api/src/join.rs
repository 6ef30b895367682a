//! Joining an existing cluster as a manager or a worker (`shoal cluster join --token TOKEN HOST:PORT`, run
//! against a daemon that is in no cluster yet).
//!
//! 1. The token names the cluster CA's digest: the joiner connects to HOST:PORT trusting only a
//!    CA with that digest (no certificate of its own yet).
//! 2. It makes its key locally and sends a CSR with the token; the manager checks the token (its
//!    kind decides the role) and returns the signed certificate and the CA.
//! 3. With that certificate the joiner turns on its Raft transport and listener, then asks the
//!    leader to add it: as a learner that catches up, then as a voter.

use crate::internal::{call, AddManager, JoinRequest};
use hyper::Method;
use shoal_manager::{Admission, Manager};
use shoal_pki::{JoinToken, Role};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum JoinClusterError {
    #[error("this node is already part of a cluster: run `shoal cluster leave` on it first to join another")]
    AlreadyMember,
    #[error("invalid join token: {0}")]
    Token(String),
    #[error("{0}")]
    Remote(String),
    #[error("{0}")]
    Local(String),
}

impl JoinClusterError {
    pub fn into_api_error(self) -> crate::server::ApiError {
        use hyper::StatusCode;
        let (status, code) = match &self {
            JoinClusterError::AlreadyMember => (StatusCode::CONFLICT, "conflict"),
            JoinClusterError::Token(_) => (StatusCode::BAD_REQUEST, "invalid"),
            JoinClusterError::Remote(_) | JoinClusterError::Local(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        crate::server::ApiError::new(status, code, self.to_string())
    }
}

/// Where a worker keeps the managers' addresses (in its TLS directory).
pub const MANAGERS_FILE: &str = "managers.json";

pub async fn join_cluster(m: &Arc<Manager>, token: &str, addr: &str) -> Result<(), JoinClusterError> {
    let status = m.node.status();
    if !status.voters.is_empty() || m.tls_dir().join("node.crt").exists() {
        return Err(JoinClusterError::AlreadyMember);
    }
    let parsed: JoinToken = token
        .trim()
        .parse()
        .map_err(|e: shoal_pki::JoinTokenError| JoinClusterError::Token(e.to_string()))?;
    let me = m.node.config().node.clone();
    let (key, csr) =
        shoal_pki::generate_key_and_csr(&me.node_id).map_err(|e| JoinClusterError::Local(e.to_string()))?;
    let pinned = shoal_pki::pinned_client_config(&parsed.ca_digest)
        .map_err(|e| JoinClusterError::Local(e.to_string()))?;
    let req = JoinRequest { token: token.trim().to_string(), csr_pem: csr, node_id: me.node_id.clone() };
    let body = serde_json::to_vec(&req).map_err(|e| JoinClusterError::Local(e.to_string()))?;
    let (st, bytes) = call(pinned, addr, Method::POST, "/internal/join", Some(body))
        .await
        .map_err(|e| JoinClusterError::Remote(format!("cannot reach the manager at {addr}: {e}")))?;
    if !st.is_success() {
        return Err(JoinClusterError::Remote(crate::internal::remote_error(st, &bytes)));
    }
    let adm: Admission =
        serde_json::from_slice(&bytes).map_err(|e| JoinClusterError::Remote(e.to_string()))?;
    let dir = m.tls_dir();
    let local = |e: shoal_pki::PkiError| JoinClusterError::Local(e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| JoinClusterError::Local(e.to_string()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| JoinClusterError::Local(e.to_string()))?;
    }
    shoal_pki::write_private_file(dir.join("node.key"), key).map_err(local)?;
    shoal_pki::write_public_file(dir.join("ca.crt"), &adm.ca_pem).map_err(local)?;
    if adm.role == Role::Worker {
        // A worker keeps the managers' addresses and runs its agent against them; it takes no
        // part in Raft.
        let managers = vec![addr.to_string()];
        let json = serde_json::to_vec(&managers).map_err(|e| JoinClusterError::Local(e.to_string()))?;
        shoal_pki::write_public_file(dir.join(MANAGERS_FILE), &json).map_err(local)?;
        shoal_pki::write_public_file(dir.join("node.crt"), &adm.cert_pem).map_err(local)?;
        m.set_joined_as_worker(managers);
        return Ok(());
    }
    shoal_pki::write_public_file(dir.join("node.crt"), &adm.cert_pem).map_err(local)?;
    let added = add_self(m, addr).await;
    if added.is_err() {
        // Not a member after all: forget the certificate so that `join` can be tried again.
        for f in ["node.crt", "node.key", "ca.crt"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    added
}

/// A manager that has its certificate but is in no membership (a promoted worker after its
/// restart) asks to be added through the manager at `addr`.
pub async fn rejoin(m: &Arc<Manager>, addr: &str) -> Result<(), JoinClusterError> {
    add_self(m, addr).await
}

/// With its new certificate, asks the leader to add this manager (learner, then voter).
async fn add_self(m: &Arc<Manager>, addr: &str) -> Result<(), JoinClusterError> {
    m.enable_tls().map_err(|e| JoinClusterError::Local(e.to_string()))?;
    let tls = m.client_tls().ok_or_else(|| JoinClusterError::Local("TLS did not come up".into()))?;
    let me = m.node.config().node.clone();

    // Any manager takes the request and passes it to the leader (the one write path).
    let add = AddManager { raft_id: m.node.config().raft_id, node: me };
    let body = serde_json::to_vec(&add).map_err(|e| JoinClusterError::Local(e.to_string()))?;
    let (st, bytes) = call(tls, addr, Method::POST, "/internal/managers", Some(body))
        .await
        .map_err(|e| JoinClusterError::Remote(format!("asking {addr} to add this manager: {e}")))?;
    if !st.is_success() {
        return Err(JoinClusterError::Remote(crate::internal::remote_error(st, &bytes)));
    }
    match m.node.wait_for_leader(Duration::from_secs(10)).await {
        Some(_) => Ok(()),
        None => Err(JoinClusterError::Remote("added, but no leader became visible within 10s".into())),
    }
}
