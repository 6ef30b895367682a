//! The listener: etcd's services on their own port, h2c or TLS (ALPN `h2` and `http/1.1`),
//! gRPC and the JSON gateway ([`crate::gateway`]) on the same connections, as etcd serves them:
//! requests with a gRPC content-type go to the gRPC services, the others to the gateway, over
//! HTTP/1.1 (curl's default) or HTTP/2.

use crate::backend::EtcdBackend;
use crate::gateway::GatewayLayer;
use crate::pb::etcdserverpb::{cluster_server, kv_server, lease_server, maintenance_server, watch_server};
use crate::service::{EtcdService, ServiceConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
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
                let (tx, rx) = mpsc::channel::<std::io::Result<TcpStream>>(64);
                let accept = tokio::spawn(accept_plain(listener, tx));
                let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
                let r = router.serve_with_incoming_shutdown(incoming, shutdown).await;
                accept.abort();
                Ok(r?)
            }
            Some(cfg) => {
                let (tx, rx) = mpsc::channel::<std::io::Result<TlsStream<TcpStream>>>(64);
                let accept = tokio::spawn(accept_tls(listener, TlsAcceptor::from(cfg), tx));
                let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
                let r = router.serve_with_incoming_shutdown(incoming, shutdown).await;
                accept.abort();
                Ok(r?)
            }
        }
    }
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

async fn accept_plain(listener: TcpListener, tx: mpsc::Sender<std::io::Result<TcpStream>>) {
    loop {
        if let Some(stream) = accept(&listener).await {
            if tx.send(Ok(stream)).await.is_err() {
                return;
            }
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
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
                    let _ = tx.send(Ok(tls)).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "etcd API: TLS handshake failed"),
                Err(_) => tracing::debug!("etcd API: TLS handshake timed out"),
            }
        });
    }
}
