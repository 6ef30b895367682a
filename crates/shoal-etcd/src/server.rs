//! The listener: etcd's services on their own port, h2c or TLS (ALPN `h2` and `http/1.1`),
//! gRPC and the JSON gateway ([`crate::gateway`]) on the same connections, as etcd serves them:
//! requests with a gRPC content-type go to the gRPC services, the others to the gateway, over
//! HTTP/1.1 (curl's default) or HTTP/2.

use crate::backend::EtcdBackend;
use crate::gateway::GatewayLayer;
use crate::pb::etcdserverpb::{cluster_server, kv_server, lease_server, maintenance_server, watch_server};
use crate::service::{EtcdService, ServiceConfig};
use shoal_api::roles::ClientRole;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP/2 server failed.
    #[error("etcd API server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// gRPC message limit: etcd's default `--max-request-bytes` (1.5 MiB) plus gRPC overhead.
pub(crate) const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Serves etcd's API on `listener` until an error. `tls`: the rustls configuration (Shoal's
/// requires client certificates, of gRPC and JSON clients alike); ALPN is set here. See [`EtcdServer`] for options and
/// graceful shutdown.
///
/// Over TLS every request is checked against its client certificate's role
/// ([`shoal_api::roles`]): a read-only certificate may range, watch and list, and gets
/// `PermissionDenied` (the gateway: `403`) for anything that writes; a certificate that is not
/// an operator's or a manager's (a worker's, or one without a Shoal identity) gets it for
/// everything. Plain h2c (loopback only, like the root socket) is not checked.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn EtcdBackend>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(), ServeError> {
    EtcdServer::new(backend).tls(tls).serve(listener, std::future::pending()).await
}

/// The etcd API server with its options.
pub struct EtcdServer {
    backend: Arc<dyn EtcdBackend>,
    config: ServiceConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl EtcdServer {
    /// A plain-text (h2c) server over `backend` with etcd's defaults.
    pub fn new(backend: Arc<dyn EtcdBackend>) -> Self {
        EtcdServer { backend, config: ServiceConfig::default(), tls: None }
    }

    /// Serve TLS with this configuration (ALPN is set to `h2` and `http/1.1`: gRPC clients
    /// need h2, and curl without HTTP/2 support still reaches the gateway).
    pub fn tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.tls = tls.map(|cfg| {
            if cfg.alpn_protocols == alpn {
                cfg
            } else {
                let mut c = (*cfg).clone();
                c.alpn_protocols = alpn;
                Arc::new(c)
            }
        });
        self
    }

    /// How often `progress_notify` watchers hear from an idle watch (etcd: 10 minutes).
    pub fn progress_interval(mut self, interval: Duration) -> Self {
        self.config.progress_interval = interval;
        self
    }

    /// Serves until `shutdown` completes (then stops accepting and lets open calls finish)
    /// or the server fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let svc = EtcdService::new(self.backend, self.config);
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            // HTTP/1.1 for the JSON gateway; gRPC clients speak HTTP/2 (detected by its preface).
            .accept_http1(true)
            .layer(GatewayLayer::new(svc.clone()))
            .add_service(kv_server::KvServer::new(svc.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
            .add_service(watch_server::WatchServer::new(svc.clone()))
            .add_service(lease_server::LeaseServer::new(svc.clone()))
            .add_service(cluster_server::ClusterServer::new(svc.clone()))
            .add_service(maintenance_server::MaintenanceServer::new(svc));
        match self.tls {
            None => {
                let (tx, rx) = mpsc::channel::<std::io::Result<PeerStream<TcpStream>>>(64);
                let accept = tokio::spawn(accept_plain(listener, tx));
                let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
                let r = router.serve_with_incoming_shutdown(incoming, shutdown).await;
                accept.abort();
                Ok(r?)
            }
            Some(cfg) => {
                let (tx, rx) = mpsc::channel::<std::io::Result<PeerStream<TlsStream<TcpStream>>>>(64);
                let accept = tokio::spawn(accept_tls(listener, TlsAcceptor::from(cfg), tx));
                let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
                let r = router.serve_with_incoming_shutdown(incoming, shutdown).await;
                accept.abort();
                Ok(r?)
            }
        }
    }
}

/// The client role of the peer a request came from, which [`crate::gateway::Gateway`] puts
/// in every request's extensions (and the gateway into the calls it makes), for the services'
/// checks of request bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerRole(pub(crate) ClientRole);

/// Who is at the other end of a connection, decided once when it is accepted: over TLS the
/// client role of its verified certificate ([`shoal_api::roles::access_of`]), on a plain
/// listener (loopback only, like the root socket) admin. `Err`: why the peer may do nothing.
/// Tonic puts it in the extensions of every request of the connection.
#[derive(Clone, Debug)]
pub(crate) struct PeerAccess(pub(crate) Result<ClientRole, String>);

/// The client role of a request's peer ([`PeerAccess`]); a request without one did not come
/// through this server's listener and is refused.
pub(crate) fn peer_role<B>(req: &http::Request<B>) -> Result<ClientRole, String> {
    match req.extensions().get::<PeerAccess>() {
        Some(PeerAccess(access)) => access.clone(),
        None => Err("shoal: the etcd API cannot tell who is calling".to_string()),
    }
}

/// A connection with what its peer may do ([`PeerAccess`], its tonic connect info).
pub(crate) struct PeerStream<S> {
    inner: S,
    access: PeerAccess,
}

impl<S> tonic::transport::server::Connected for PeerStream<S>
where
    S: Send + 'static,
{
    type ConnectInfo = PeerAccess;

    fn connect_info(&self) -> PeerAccess {
        self.access.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PeerStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PeerStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What the peer of a TLS connection may do: its certificate's client role.
fn tls_access(tls: &TlsStream<TcpStream>) -> PeerAccess {
    let identity = tls.get_ref().1.peer_certificates().and_then(|certs| {
        let first = certs.first()?;
        shoal_pki::identity_from_cert(first)
            .map_err(|e| tracing::debug!(error = %e, "etcd API: client certificate has no Shoal identity"))
            .ok()
    });
    PeerAccess(shoal_api::roles::access_of(identity.as_ref()))
}

async fn accept(listener: &TcpListener) -> Option<TcpStream> {
    match listener.accept().await {
        Ok((stream, _)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Err(e) => {
            // Out of file descriptors and the like: back off instead of spinning.
            tracing::warn!(error = %e, "etcd API: accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

async fn accept_plain(listener: TcpListener, tx: mpsc::Sender<std::io::Result<PeerStream<TcpStream>>>) {
    loop {
        if let Some(stream) = accept(&listener).await {
            let stream = PeerStream { inner: stream, access: PeerAccess(Ok(ClientRole::Admin)) };
            if tx.send(Ok(stream)).await.is_err() {
                return;
            }
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<std::io::Result<PeerStream<TlsStream<TcpStream>>>>,
) {
    loop {
        let Some(stream) = accept(&listener).await else { continue };
        if tx.is_closed() {
            return;
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        // Handshakes run on their own so one slow client does not hold up the others.
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let access = tls_access(&tls);
                    let _ = tx.send(Ok(PeerStream { inner: tls, access })).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "etcd API: TLS handshake failed"),
                Err(_) => tracing::debug!("etcd API: TLS handshake timed out"),
            }
        });
    }
}
