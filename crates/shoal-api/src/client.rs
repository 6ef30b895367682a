//! A small client for the `/v1` API: over the local unix socket (`unix:///run/shoal/shoal.sock`)
//! or over TCP with mutual TLS (`tcp://HOST:PORT`, a client certificate from `shoal cluster
//! client-cert` in a TLS directory: `ca.pem`, `cert.pem`, `key.pem`; the server must present a
//! manager certificate of the same cluster, verified as `manager.shoal`).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// The files of a TLS directory (docker's layout): the cluster CA, the client certificate, its key.
pub const TLS_CA_FILE: &str = "ca.pem";
pub const TLS_CERT_FILE: &str = "cert.pem";
pub const TLS_KEY_FILE: &str = "key.pem";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the shoal daemon at {0}: {1} (is `shoal daemon` running? set -H or SHOAL_HOST)")]
    Connect(String, std::io::Error),
    #[error("talking to the daemon: {0}")]
    Http(String),
    #[error("{message}")]
    Api { status: u16, code: String, message: String },
    #[error("unexpected response from the daemon: {0}")]
    Decode(String),
    #[error("unsupported host {0:?}: use unix:///path/to/shoal.sock or tcp://HOST:PORT")]
    BadHost(String),
    #[error(
        "no client certificate in {0}: create one on a manager with `shoal cluster client-cert --out {0}`"
    )]
    NoCertificate(String),
    #[error("cannot use the client certificate in {0}: {1}")]
    BadCertificate(String, String),
    #[error(
        "TLS with the daemon at {0} failed: {1} (is the certificate in the TLS directory from this cluster?)"
    )]
    Tls(String, std::io::Error),
}

#[derive(Clone, Debug)]
enum Transport {
    Unix(PathBuf),
    Tls { addr: String, config: Arc<rustls::ClientConfig> },
}

#[derive(Clone, Debug)]
pub struct Client {
    transport: Transport,
    timeout: Duration,
}

impl Client {
    /// The same client with another per-request timeout (long actions: migrations).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client { transport: self.transport.clone(), timeout }
    }

    /// `unix:///run/shoal.sock` or a plain path.
    pub fn new(host: &str) -> Result<Client, ClientError> {
        let path = if let Some(p) = host.strip_prefix("unix://") {
            p
        } else if host.starts_with('/') {
            host
        } else {
            return Err(ClientError::BadHost(host.to_string()));
        };
        Ok(Client { transport: Transport::Unix(PathBuf::from(path)), timeout: Duration::from_secs(30) })
    }

    /// Like [`Client::new`], and also `tcp://HOST:PORT`: mutual TLS with the client certificate
    /// in `tls_dir` (`ca.pem`, `cert.pem`, `key.pem`), the server verified as `manager.shoal`.
    pub fn connect(host: &str, tls_dir: &Path) -> Result<Client, ClientError> {
        let Some(addr) = host.strip_prefix("tcp://") else {
            return Client::new(host);
        };
        let addr = addr.trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') {
            return Err(ClientError::BadHost(host.to_string()));
        }
        let dir = tls_dir.display().to_string();
        let files = [TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE].map(|f| tls_dir.join(f));
        if files.iter().any(|f| !f.exists()) {
            return Err(ClientError::NoCertificate(dir));
        }
        let [ca, cert, key] = files;
        let read = |p: &Path| {
            shoal_pki::read_pem_file(p).map_err(|e| ClientError::BadCertificate(dir.clone(), e.to_string()))
        };
        let config = shoal_pki::client_config(&read(&ca)?, &read(&cert)?, &read(&key)?)
            .map_err(|e| ClientError::BadCertificate(dir.clone(), e.to_string()))?;
        Ok(Client {
            transport: Transport::Tls { addr: addr.to_string(), config },
            timeout: Duration::from_secs(30),
        })
    }

    /// A GET whose answer is a stream of lines (`service logs -f`): calls `f` with each line
    /// as it arrives, until the server ends the stream or `f` returns false. No overall timeout.
    pub async fn get_lines(&self, path: &str, mut f: impl FnMut(&[u8]) -> bool) -> Result<(), ClientError> {
        let resp = tokio::time::timeout(self.timeout, self.open(path))
            .await
            .map_err(|_| ClientError::Http(format!("no answer within {}s", self.timeout.as_secs())))??;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: v["error"]["code"].as_str().unwrap_or("error").to_string(),
                message: v["error"]["message"]
                    .as_str()
                    .map_or_else(|| format!("HTTP {status}"), str::to_string),
            });
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if !f(&line[..line.len() - 1]) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn open(&self, path: &str) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        async fn send<S>(
            stream: S,
            host: &str,
            path: &str,
        ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
        where
            S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(Method::GET)
                .uri(path)
                .header("host", host)
                .body(Full::new(Bytes::new()))
                .map_err(|e| ClientError::Http(e.to_string()))?;
            sender.send_request(req).await.map_err(|e| ClientError::Http(error_chain(&e)))
        }
        let (stream, host) = self.dial().await?;
        send(stream, host, path).await
    }

    /// A connection to the daemon: the unix socket, or TCP with mutual TLS; and the host name to
    /// send.
    pub(crate) async fn dial(&self) -> Result<(Box<dyn Io>, &'static str), ClientError> {
        match &self.transport {
            Transport::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| ClientError::Connect(socket.display().to_string(), e))?;
                Ok((Box::new(stream), "shoal"))
            }
            Transport::Tls { addr, config } => {
                let tcp = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| ClientError::Connect(format!("tcp://{addr}"), e))?;
                let name = rustls_pki_types::ServerName::try_from(shoal_pki::MANAGER_SERVER_NAME)
                    .map_err(|e| ClientError::Http(e.to_string()))?
                    .to_owned();
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ClientError::Tls(format!("tcp://{addr}"), e))?;
                Ok((Box::new(stream), shoal_pki::MANAGER_SERVER_NAME))
            }
        }
    }

    /// Sends a request; returns the status and the raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let fut = async {
            let (stream, host) = self.dial().await?;
            exchange(stream, host, method, path, body).await
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Http(format!("no answer within {}s", self.timeout.as_secs())))?
    }

    /// Sends a request; returns the body of a successful answer as it is (binary), or the API's
    /// error.
    pub async fn bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        Ok(bytes)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let bytes = self.bytes(method, path, body).await?;
        let bytes = if bytes.is_empty() { Bytes::from_static(b"null") } else { bytes };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(Method::DELETE, path, None).await.map(|_| ())
    }
}

/// The API's error answer as a [`ClientError`].
pub(crate) fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("error").to_string();
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_string());
    let message = if message.is_empty() {
        format!("the daemon answered {status} (is -H the API's address?)")
    } else {
        message
    };
    ClientError::Api { status: status.as_u16(), code, message }
}

/// A byte stream to the daemon (unix socket or TLS).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One HTTP/1.1 request on a fresh connection.
async fn exchange<S>(
    stream: S,
    host: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    // The connection's own error says why a request failed (e.g. the server refused the client
    // certificate, which TLS 1.3 reports only after the handshake).
    let conn = tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", host);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let resp = match sender.send_request(req).await {
        Ok(resp) => resp,
        Err(e) => {
            let why = match conn.await {
                Ok(Err(conn_err)) => error_chain(&conn_err),
                _ => error_chain(&e),
            };
            return Err(ClientError::Http(why));
        }
    };
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
    Ok((status, bytes))
}

/// An error with its causes: `connection error: received fatal alert: …`.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}
