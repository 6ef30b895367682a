//! A small client for the `/v1` API over the local unix socket.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

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
    #[error("unsupported host {0:?}: use unix:///path/to/shoal.sock")]
    BadHost(String),
}

#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// `unix:///run/shoal.sock` or a plain path.
    pub fn new(host: &str) -> Result<Client, ClientError> {
        let path = if let Some(p) = host.strip_prefix("unix://") {
            p
        } else if host.starts_with('/') {
            host
        } else {
            return Err(ClientError::BadHost(host.to_string()));
        };
        Ok(Client { socket: PathBuf::from(path), timeout: Duration::from_secs(30) })
    }

    /// Sends a request; returns the status and the raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let fut = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| ClientError::Connect(self.socket.display().to_string(), e))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut req = Request::builder().method(method).uri(path).header("host", "shoal");
            if body.is_some() {
                req = req.header("content-type", "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let resp = sender.send_request(req).await.map_err(|e| ClientError::Http(e.to_string()))?;
            let status = resp.status();
            let bytes =
                resp.into_body().collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Http(format!("no answer within {}s", self.timeout.as_secs())))?
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let code = v["error"]["code"].as_str().unwrap_or("error").to_string();
            let message = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).to_string());
            return Err(ClientError::Api { status: status.as_u16(), code, message });
        }
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

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.call::<serde_json::Value>(Method::DELETE, path, None).await.map(|_| ())
    }
}
