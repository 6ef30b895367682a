//! The etcd API on a worker, like etcd's gRPC proxy: every call goes to a manager's
//! `/internal/kv/...` routes (`shoal_api::kv_http`, typed errors) over the worker's mutual TLS,
//! to the manager that answered last and then to the others it knows.
//!
//! * Reads, lease time-to-live and keep-alives move on to the next manager on any transport
//!   failure; writes only when the request was never sent (connect or TLS failed), so a write
//!   is never applied twice.
//! * [`EtcdBackend::header`] and [`EtcdBackend::has_leader`] answer from the last
//!   `/internal/kv/info`, refreshed every [`INFO_REFRESH`] in the background (no leader while
//!   no manager answers).
//! * A watch reads the manager's NDJSON lines (with progress lines); when that manager goes
//!   away it resumes at another one from the revision after the last one delivered (no gaps,
//!   no duplicates), and ends with `Compacted` if that history is gone.

use crate::backend::{BackendError, EtcdBackend, Header, Member, Status, WatchFeed, WatchMessage};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use shoal_api::kv_http::{KvInfo, WatchLine, WireErrorBody, WireFailure};
use shoal_kv::{KvError, LeaseId, LeaseTimeToLiveResponse, Op, OpResponse, RangeRequest, RangeResponse};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

/// How often the cached cluster info (headers, leader) is refreshed.
pub const INFO_REFRESH: Duration = Duration::from_secs(1);
/// How long a watch waits before trying the managers again when none answered.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// Where the managers are: this node's current client TLS config and the managers' addresses
/// (called for every request, so renewed certificates and learned managers are used at once).
pub type ManagerLink = Arc<dyn Fn() -> (Arc<rustls::ClientConfig>, Vec<String>) + Send + Sync>;

/// A worker's [`EtcdBackend`]: the managers' store, reached over mutual TLS.
pub struct RemoteKvBackend {
    inner: Arc<Inner>,
}

struct Inner {
    link: ManagerLink,
    /// The manager that answered last.
    preferred: Mutex<Option<String>>,
    /// The last cluster info a manager sent (leader cleared while none answers).
    info: RwLock<Option<KvInfo>>,
}

impl RemoteKvBackend {
    /// A backend over `link`; starts the background refresh of the cluster info (needs a Tokio
    /// runtime; stops when the backend is dropped).
    pub fn new(link: ManagerLink) -> RemoteKvBackend {
        let inner = Arc::new(Inner { link, preferred: Mutex::new(None), info: RwLock::new(None) });
        tokio::spawn(refresh_info(Arc::downgrade(&inner)));
        RemoteKvBackend { inner }
    }
}

async fn refresh_info(inner: Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        if let Err(e) = i.info().await {
            tracing::debug!(error = %e, "etcd API: no manager answered for the cluster info");
            if let Some(info) = i.info.write().unwrap_or_else(PoisonError::into_inner).as_mut() {
                info.leader = 0;
            }
        }
        drop(i);
        tokio::time::sleep(INFO_REFRESH).await;
    }
}

/// Why one manager's answer failed, and whether another manager may be asked.
struct Failure {
    error: BackendError,
    try_next: bool,
}

fn decode_error(addr: &str, status: StatusCode, bytes: &[u8]) -> Failure {
    match serde_json::from_slice::<WireErrorBody>(bytes) {
        Ok(b) => match b.failure {
            WireFailure::Kv { error } => Failure { error: BackendError::Kv(error), try_next: false },
            WireFailure::NoLeader => Failure { error: BackendError::NoLeader, try_next: false },
            WireFailure::Unavailable { message } => {
                Failure { error: BackendError::Unavailable(message), try_next: true }
            }
            WireFailure::Invalid { message } => {
                Failure { error: BackendError::Internal(message), try_next: false }
            }
        },
        // Not a key-value answer (an older manager, a proxy): another manager may know better.
        Err(_) => Failure {
            error: BackendError::Unavailable(format!("manager {addr}: HTTP {status}")),
            try_next: true,
        },
    }
}

/// Whether a transport failure happened before the request was sent.
fn unsent(e: &str) -> bool {
    e.starts_with("connect ") || e.starts_with("TLS with ")
}

fn percent(s: &str) -> String {
    s.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, BackendError> {
    serde_json::from_slice(bytes).map_err(|e| BackendError::Internal(format!("a manager's answer: {e}")))
}

impl Inner {
    /// The managers to try, the one that answered last first.
    fn order(&self) -> (Arc<rustls::ClientConfig>, Vec<String>) {
        let (tls, mut managers) = (self.link)();
        let preferred = self.preferred.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(p) = preferred {
            if let Some(pos) = managers.iter().position(|a| *a == p) {
                let a = managers.remove(pos);
                managers.insert(0, a);
            }
        }
        (tls, managers)
    }

    fn answered(&self, addr: &str) {
        *self.preferred.lock().unwrap_or_else(PoisonError::into_inner) = Some(addr.to_string());
    }

    /// One request, to each manager in turn until one answers; `idempotent` requests are sent
    /// again to the next manager after any transport failure, others only when unsent.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        idempotent: bool,
    ) -> Result<Vec<u8>, BackendError> {
        let (tls, managers) = self.order();
        let mut last = BackendError::Unavailable("no manager address known".into());
        for addr in &managers {
            match shoal_api::internal::call(tls.clone(), addr, method.clone(), path, body.clone()).await {
                Ok((st, bytes)) if st.is_success() => {
                    self.answered(addr);
                    return Ok(bytes.to_vec());
                }
                Ok((st, bytes)) => {
                    let f = decode_error(addr, st, &bytes);
                    if !f.try_next {
                        return Err(f.error);
                    }
                    last = f.error;
                }
                Err(e) if idempotent || unsent(&e) => {
                    last = BackendError::Unavailable(format!("no manager answered: {e}"));
                }
                Err(e) => return Err(BackendError::Unavailable(e)),
            }
        }
        Err(last)
    }

    /// The cluster info from a manager, cached.
    async fn info(&self) -> Result<KvInfo, BackendError> {
        let bytes = self.call(Method::GET, "/internal/kv/info", None, true).await?;
        let info: KvInfo = decode(&bytes)?;
        *self.info.write().unwrap_or_else(PoisonError::into_inner) = Some(info.clone());
        Ok(info)
    }

    /// Opens a watch stream at a manager (the first that accepts it).
    async fn open_watch(
        &self,
        start: i64,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<hyper::Response<hyper::body::Incoming>, BackendError> {
        let path = format!(
            "/internal/kv/watch?key={}&range_end={}&start_revision={start}&progress=true",
            percent(&shoal_kv::base64::encode(key)),
            percent(&shoal_kv::base64::encode(range_end)),
        );
        let (tls, managers) = self.order();
        let mut last = BackendError::Unavailable("no manager address known".into());
        for addr in &managers {
            let opened = tokio::time::timeout(
                Duration::from_secs(15),
                shoal_api::internal::open(
                    tls.clone(),
                    addr,
                    shoal_pki::MANAGER_SERVER_NAME,
                    Method::GET,
                    &path,
                    None,
                ),
            )
            .await;
            match opened {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    self.answered(addr);
                    return Ok(resp);
                }
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    let bytes = tokio::time::timeout(Duration::from_secs(15), resp.into_body().collect())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|c| c.to_bytes().to_vec())
                        .unwrap_or_default();
                    let f = decode_error(addr, status, &bytes);
                    if !f.try_next {
                        return Err(f.error);
                    }
                    last = f.error;
                }
                Ok(Err(e)) => last = BackendError::Unavailable(format!("no manager answered: {e}")),
                Err(_) => last = BackendError::Unavailable(format!("{addr} did not answer within 15s")),
            }
        }
        Err(last)
    }
}

/// Follows a watch across managers: `next` is the first revision not delivered yet (0: "now",
/// until the first line says where the stream is).
async fn follow(
    inner: Arc<Inner>,
    first: hyper::Response<hyper::body::Incoming>,
    mut next: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<WatchMessage>,
) {
    let mut resp = Some(first);
    loop {
        let current = match resp.take() {
            Some(r) => r,
            None => {
                let opened = tokio::select! {
                    r = inner.open_watch(next, &key, &range_end) => r,
                    _ = tx.closed() => return,
                };
                match opened {
                    Ok(r) => r,
                    Err(BackendError::Kv(KvError::Compacted { compact_revision })) => {
                        let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                        return;
                    }
                    Err(e @ BackendError::Kv(_)) => {
                        let _ = tx.send(WatchMessage::Error(e)).await;
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "etcd API: watch cannot resume yet; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(WATCH_RETRY) => continue,
                            _ = tx.closed() => return,
                        }
                    }
                }
            }
        };
        let mut body = current.into_body();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = tx.closed() => return,
            };
            let data = match frame {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
                Some(Err(_)) | None => break,
            };
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let msg = match serde_json::from_slice::<WatchLine>(&line) {
                    Ok(WatchLine::Events { revision, .. }) if revision < next => continue,
                    Ok(WatchLine::Events { revision, events }) => {
                        next = revision + 1;
                        WatchMessage::Events { revision, events }
                    }
                    Ok(WatchLine::Progress { revision }) => {
                        next = next.max(revision + 1);
                        WatchMessage::Progress { revision }
                    }
                    Ok(WatchLine::Compacted { compact_revision }) => {
                        let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd API: a manager sent a malformed watch line");
                        continue;
                    }
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        }
        tracing::debug!(next, "etcd API: a manager's watch stream ended; resuming at another");
    }
}

#[async_trait::async_trait]
impl EtcdBackend for RemoteKvBackend {
    fn header(&self) -> Header {
        match self.inner.info.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
            Some(i) => Header {
                cluster_id: if i.cluster.is_empty() { 1 } else { crate::cluster::cluster_id(&i.cluster) },
                member_id: i.member_id,
                raft_term: i.raft_term,
                revision: i.revision,
            },
            None => Header { cluster_id: 1, ..Header::default() },
        }
    }

    fn has_leader(&self) -> bool {
        self.inner.info.read().unwrap_or_else(PoisonError::into_inner).as_ref().is_some_and(|i| i.leader != 0)
    }

    async fn write(&self, op: Op) -> Result<OpResponse, BackendError> {
        let body = serde_json::to_vec(&op).map_err(|e| BackendError::Internal(e.to_string()))?;
        decode(&self.inner.call(Method::POST, "/internal/kv/ops", Some(body), false).await?)
    }

    async fn range(&self, req: RangeRequest, serializable: bool) -> Result<RangeResponse, BackendError> {
        let mut v = serde_json::to_value(&req).map_err(|e| BackendError::Internal(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("serializable".into(), serializable.into());
        }
        let body = serde_json::to_vec(&v).map_err(|e| BackendError::Internal(e.to_string()))?;
        decode(&self.inner.call(Method::POST, "/internal/kv/range", Some(body), true).await?)
    }

    async fn lease_keepalive(&self, id: LeaseId) -> Result<i64, BackendError> {
        let path = format!("/internal/kv/leases/{id}/keepalive");
        let v: serde_json::Value = decode(&self.inner.call(Method::POST, &path, None, true).await?)?;
        v["ttl"].as_i64().ok_or_else(|| BackendError::Internal("a keep-alive answer without a TTL".into()))
    }

    async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, BackendError> {
        let path = format!("/internal/kv/leases/{id}?keys={keys}");
        decode(&self.inner.call(Method::GET, &path, None, true).await?)
    }

    async fn leases(&self) -> Result<Vec<LeaseId>, BackendError> {
        decode(&self.inner.call(Method::GET, "/internal/kv/leases", None, true).await?)
    }

    async fn watch(
        &self,
        start_revision: i64,
        key: Vec<u8>,
        range_end: Vec<u8>,
    ) -> Result<WatchFeed, BackendError> {
        let first = self.inner.open_watch(start_revision, &key, &range_end).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(follow(self.inner.clone(), first, start_revision.max(0), key, range_end, tx));
        Ok(WatchFeed::from_receiver(rx))
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let info = self.inner.info().await?;
        Ok(info
            .members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: Vec::new(),
                is_learner: m.is_learner,
            })
            .collect())
    }

    async fn status(&self) -> Result<Status, BackendError> {
        let info = self.inner.info().await?;
        Ok(Status {
            version: crate::cluster::VERSION.to_string(),
            db_size: info.db_size,
            db_size_in_use: info.db_size,
            leader: info.leader,
            raft_index: info.raft_index,
            raft_term: info.raft_term,
            raft_applied_index: info.raft_applied_index,
            is_learner: false,
            errors: Vec::new(),
        })
    }
}

/// A daemon's backend that can change once: a node started outside any cluster serves the etcd
/// API as a manager would, and hands it to a [`RemoteKvBackend`] when it joins as a worker
/// (it runs as one from then on, without a restart).
pub struct Handoff {
    local: Arc<dyn EtcdBackend>,
    remote: std::sync::OnceLock<Arc<dyn EtcdBackend>>,
}

impl Handoff {
    pub fn new(local: Arc<dyn EtcdBackend>) -> Handoff {
        Handoff { local, remote: std::sync::OnceLock::new() }
    }

    /// Every later call goes to `remote` (only the first hand-off counts).
    pub fn hand_off(&self, remote: Arc<dyn EtcdBackend>) {
        let _ = self.remote.set(remote);
    }

    fn current(&self) -> &dyn EtcdBackend {
        self.remote.get().unwrap_or(&self.local).as_ref()
    }
}

#[async_trait::async_trait]
impl EtcdBackend for Handoff {
    fn header(&self) -> Header {
        self.current().header()
    }

    fn has_leader(&self) -> bool {
        self.current().has_leader()
    }

    async fn write(&self, op: Op) -> Result<OpResponse, BackendError> {
        self.current().write(op).await
    }

    async fn range(&self, req: RangeRequest, serializable: bool) -> Result<RangeResponse, BackendError> {
        self.current().range(req, serializable).await
    }

    async fn lease_keepalive(&self, id: LeaseId) -> Result<i64, BackendError> {
        self.current().lease_keepalive(id).await
    }

    async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, BackendError> {
        self.current().lease_time_to_live(id, keys).await
    }

    async fn leases(&self) -> Result<Vec<LeaseId>, BackendError> {
        self.current().leases().await
    }

    async fn watch(
        &self,
        start_revision: i64,
        key: Vec<u8>,
        range_end: Vec<u8>,
    ) -> Result<WatchFeed, BackendError> {
        self.current().watch(start_revision, key, range_end).await
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        self.current().members().await
    }

    async fn status(&self) -> Result<Status, BackendError> {
        self.current().status().await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_survives_the_query_string() {
        assert_eq!(super::percent("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    }

    #[test]
    fn typed_errors_come_back_as_etcds() {
        use super::*;
        let failure = WireFailure::Kv { error: KvError::Compacted { compact_revision: 7 } };
        let body = serde_json::json!({"error": {"code": "kv", "message": "x"}, "failure": failure});
        let f = decode_error("m:1", StatusCode::BAD_REQUEST, body.to_string().as_bytes());
        assert_eq!(f.error, BackendError::Kv(KvError::Compacted { compact_revision: 7 }));
        assert!(!f.try_next);
        let body = serde_json::json!({"failure": WireFailure::NoLeader});
        let f = decode_error("m:1", StatusCode::SERVICE_UNAVAILABLE, body.to_string().as_bytes());
        assert_eq!(f.error, BackendError::NoLeader);
        // Not a key-value answer: another manager may know better.
        assert!(decode_error("m:1", StatusCode::NOT_FOUND, b"no such route").try_next);
    }
}
