//! The `/v1` API over TCP with mutual TLS (`shoal daemon --api-addr HOST:PORT`), like Docker's
//! `-H tcp://` with `--tlsverify`.
//!
//! - **Client certificates are required** at the handshake: a certificate from the cluster CA,
//!   and after the handshake only the roles [`Role::Client`] and [`Role::ClientReadOnly`] (an
//!   operator's, from `POST /v1/cluster/client-cert`) and [`Role::Manager`] are served; a
//!   worker's certificate gets `403` on every request.
//! - **Every request is checked against the client role** ([`crate::roles`]): a read-only
//!   certificate gets `403 forbidden` for anything but a read that reveals no secret. This
//!   listener also serves the web UI and the Chronos API on non-loopback addresses, so the rule
//!   holds there too.
//! - **The server certificate** is this manager's node certificate (SAN `manager.shoal`, which
//!   clients verify). Serving starts once the node has one (after `cluster init` or `join`) and
//!   every new connection uses the newest (renewed certificates are picked up from the manager's
//!   `server_tls` watch; open connections keep theirs).
//! - `POST /v1/cluster/client-cert` (the handler is here, the route in [`crate::router`]) issues
//!   operator certificates; it is reachable only on the root socket or by a client that already
//!   holds a certificate.

use crate::roles::ClientRole;
use crate::server::{ApiError, JsonBody};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use shoal_manager::Manager;
use shoal_pki::{identity_from_cert, ClientAuth, NodeIdentity, Role};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for a request's headers (also bounds idle keep-alive connections).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a certificate with `role` may use the TCP API at all (what it may do there:
/// [`crate::roles`]).
pub fn may_use_api(role: Role) -> bool {
    role.is_client() || role == Role::Manager
}

/// The TCP API's TLS configuration: this node's certificate, client certificates from the
/// cluster CA required.
pub fn api_server_config(tls_dir: &Path) -> Result<Arc<rustls::ServerConfig>, shoal_pki::PkiError> {
    let read = |f: &str| shoal_pki::read_pem_file(tls_dir.join(f));
    shoal_pki::server_config(&read("ca.crt")?, &read("node.crt")?, &read("node.key")?, ClientAuth::Required)
}

/// Serves `router` (the `/v1` API) on `listener` over mutual TLS, from the moment `manager` has a
/// certificate, forever. Connections that arrive earlier wait in the listen backlog.
pub async fn serve_tcp(listener: TcpListener, manager: Arc<Manager>, router: axum::Router) {
    let mut node_tls = manager.server_tls();
    let tls_dir = manager.tls_dir().to_path_buf();
    // Wait for this node's certificate, then build the first configuration.
    let first = loop {
        if node_tls.borrow_and_update().is_some() {
            match api_server_config(&tls_dir) {
                Ok(c) => break c,
                Err(e) => tracing::error!(error = %e, "TCP API: cannot load this node's certificate"),
            }
        }
        if node_tls.changed().await.is_err() {
            return;
        }
    };
    let (publish, configs) = watch::channel(first);
    // A renewed certificate is published by the manager; rebuild ours from the same files.
    tokio::spawn(async move {
        while node_tls.changed().await.is_ok() {
            if node_tls.borrow_and_update().is_none() {
                continue;
            }
            match api_server_config(&tls_dir) {
                Ok(c) => {
                    publish.send_replace(c);
                }
                Err(e) => tracing::warn!(error = %e, "TCP API: cannot load the renewed certificate"),
            }
        }
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "TCP API (mutual TLS) listening");
    }
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let acceptor = TlsAcceptor::from(configs.borrow().clone());
                    conns.spawn(serve_connection(acceptor, tcp, peer, router.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "TCP API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn forbidden(message: String) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

async fn serve_connection(acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr, router: axum::Router) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TCP API: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TCP API: TLS handshake timed out");
            return;
        }
    };
    // The handshake required a certificate that verifies against the cluster CA.
    let identity: Option<NodeIdentity> =
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|cert| {
            identity_from_cert(cert)
                .map_err(|e| tracing::warn!(%peer, error = %e, "TCP API: client certificate has no identity"))
                .ok()
        });
    let access = crate::roles::access_of(identity.as_ref());
    if let Some(id) = &identity {
        tracing::debug!(%peer, role = %id.role, name = %id.node_id, "TCP API: connection");
    }
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let router = router.clone();
        let identity = identity.clone();
        // Who may do what is decided in one place, for every request.
        let decision = access
            .clone()
            .and_then(|role| crate::roles::allowed(role, req.method(), req.uri().path()).map(|()| role));
        async move {
            let role = match decision {
                Ok(role) => role,
                Err(why) => {
                    let (method, path) = (req.method(), req.uri().path());
                    tracing::debug!(%peer, %method, path, "TCP API: refused");
                    return Ok::<Response, Infallible>(forbidden(why));
                }
            };
            req.extensions_mut().insert(identity);
            req.extensions_mut().insert(role);
            hyper::service::Service::call(&router, req).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    // `with_upgrades`: a streamed exec (`POST /v1/tasks/{id}/exec/stream`) takes the connection over.
    if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).with_upgrades().await {
        tracing::debug!(%peer, error = %e, "TCP API: connection ended with an error");
    }
}

/// `POST /v1/cluster/client-cert`: a certificate for an operator.
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientCertRequest {
    /// The client's name (the certificate's CN): 1-64 characters of `[a-z0-9-]`.
    pub name: String,
    /// A PKCS#10 CSR (ECDSA P-256) made by the client: then its key never leaves the client.
    /// Without one the manager makes the key and returns it (over the root socket or mTLS only).
    #[serde(default)]
    pub csr_pem: Option<String>,
    /// What the certificate may do (`admin`, the default, or `read-only`; see [`crate::roles`]).
    /// A manager that predates roles ignores the field and issues an admin certificate: the CLI
    /// checks the role of what it gets back.
    #[serde(default, skip_serializing_if = "ClientRole::is_admin")]
    pub role: ClientRole,
}

/// The answer: the cluster CA, the certificate and, when the manager made it, the key.
/// No `Debug`: it may hold a private key.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClientCert {
    pub ca_pem: String,
    pub cert_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// Where the manager that issued it serves the TCP API (`HOST:PORT`); none when it serves
    /// only its unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_addr: Option<String>,
}

pub(crate) async fn issue_client_cert(
    State(m): State<Arc<Manager>>,
    JsonBody(r): JsonBody<ClientCertRequest>,
) -> Result<Json<ClientCert>, ApiError> {
    let invalid = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid", msg);
    shoal_pki::validate_node_id(&r.name).map_err(|e| invalid(format!("name: {e}")))?;
    let cluster = crate::internal::read_linearizable(&m, |s| {
        s.cluster().map(|c| (c.ca_cert_pem.clone(), c.ca_key_pem.clone()))
    })
    .await?;
    let (ca_pem, ca_key) = cluster.ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "conflict", "the cluster has not been initialized")
    })?;
    let ca = shoal_pki::Ca::from_pem(&ca_pem, &ca_key).map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("cluster CA: {e}"))
    })?;
    let (key_pem, csr_pem) = match r.csr_pem {
        Some(csr) => (None, csr),
        None => {
            let (key, csr) = shoal_pki::generate_key_and_csr(&r.name)
                .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()))?;
            (Some(key), csr)
        }
    };
    let cert_pem = ca
        .issue(&csr_pem, &r.name, r.role.cert_role(), m.cert_validity(), SystemTime::now())
        .map_err(|e| invalid(e.to_string()))?;
    tracing::info!(name = %r.name, role = %r.role, "issued a client certificate");
    Ok(Json(ClientCert { ca_pem, cert_pem, key_pem, api_addr: m.api_addr().map(str::to_string) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clients_and_managers_use_the_api() {
        assert!(may_use_api(Role::Client));
        assert!(may_use_api(Role::ClientReadOnly));
        assert!(may_use_api(Role::Manager));
        assert!(!may_use_api(Role::Worker));
    }
}
