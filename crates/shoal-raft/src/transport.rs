//! Node-to-node Raft transport: JSON over HTTP/2 (HTTP/1.1 with a peer of an older version)
//! over mutual TLS.
//!
//! # Wire format
//!
//! Each Raft RPC is one `POST https://<ManagerNode.addr>/internal/raft/<kind>` with a JSON body
//! (`Content-Type: application/json`):
//!
//! | kind       | request body                              | `200 OK` body                                                   |
//! |------------|-------------------------------------------|-----------------------------------------------------------------|
//! | `append`   | openraft `AppendEntriesRequest`           | `Result<AppendEntriesResponse, RaftError>`                      |
//! | `vote`     | openraft `VoteRequest`                    | `Result<VoteResponse, RaftError>`                               |
//! | `snapshot` | openraft `InstallSnapshotRequest` (chunk) | `Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>` |
//!
//! A `Result` is serde's externally tagged form, `{"Ok": …}` or `{"Err": …}`: an error that the
//! peer's Raft returned (e.g. it is shutting down) travels back in a `200` and becomes
//! [`RPCError::RemoteError`] on the caller's side. `400` means an unknown kind or a body that is
//! not the expected JSON ([`RpcError`]), `403` that the caller is not allowed (see below), `413`
//! a body over [`MAX_RAFT_BODY`]. Snapshots travel in openraft's chunks (1 MiB, see
//! [`crate::NodeConfig`]; JSON spells the bytes as a number array, so a body is up to ~4x that).
//!
//! # Who may call what
//!
//! [`serve_tls`] runs the TLS handshake with the server config it is given (the cluster CA's
//! [`shoal_pki::server_config`]; with [`shoal_pki::ClientAuth::Optional`] clients without a
//! certificate may connect, for the join endpoint). A presented client certificate must verify
//! against the CA; its identity ([`shoal_pki::identity_from_cert`]) is put into every request's
//! extensions as `Option<NodeIdentity>` (`None`: no certificate), together with the peer's
//! `axum::extract::ConnectInfo<SocketAddr>`, so routes added by callers can read them.
//!
//! Every path under [`RAFT_PATH_PREFIX`] is answered `403` unless the peer presented a
//! certificate whose role is [`Role::Manager`] *and* the caller's `authorize(identity, path)`
//! returns true (used to refuse certificates of managers that were removed). This is checked
//! on every request, not once per connection. Clients ([`TlsNetwork`]) present their own
//! manager certificate and accept only a server certificate valid for
//! [`MANAGER_SERVER_NAME`] under the cluster CA, so a worker can never pose as a manager.
//!
//! # Connections and timeouts
//!
//! * Every RPC must be answered within openraft's `RPCOption::hard_ttl()`: the heartbeat
//!   interval (100 ms) for `append`, `election_timeout_min` (400 ms) for `vote`, the snapshot
//!   timeout (10 s) per `snapshot` chunk. The clock starts before the request is encoded and
//!   includes connecting.
//! * The client offers the ALPN protocol [`RAFT_ALPN`] (HTTP/2). Where the peer agrees, one
//!   connection per peer carries every RPC as its own stream: the replication stream, the
//!   heartbeats that confirm leadership for linearizable reads beside it, and an RPC that timed
//!   out and is still being answered. A peer without it (an older version) gets HTTP/1.1, one
//!   request per connection at a time, pooled (at most [`MAX_IDLE_PER_PEER`] idle). A request that
//!   fails on a reused connection (the peer restarted or closed it) is retried once on a fresh
//!   one. The exchange runs in its own task that may outlive the caller's deadline by another
//!   `hard_ttl`: a slow answer or handshake then completes and leaves a usable connection in the
//!   pool rather than a torn one. A connection whose exchange failed is never reused.
//! * Entries and snapshot chunks are encoded, and request bodies over 64 KiB decoded, on tokio's
//!   blocking pool, so a large batch does not stall heartbeats.
//! * Clients offer the ALPN protocol [`RAFT_ALPN`]; the server also lists it (before
//!   `http/1.1`), and serves a connection that negotiated it on Raft's own runtime
//!   ([`crate::runtime`]), where API work on the same listener cannot delay a heartbeat.
//! * The server gives each connection its own task: the TLS handshake must finish within
//!   [`HANDSHAKE_TIMEOUT`], request headers within 30 s, so a slow or silent client never
//!   blocks another. Dropping the [`serve_tls`] future closes every connection it accepted.
//!
//! # Error mapping (client side)
//!
//! * TCP connect, TLS handshake, HTTP or I/O failure, a non-`200` answer or an undecodable
//!   answer → [`RPCError::Unreachable`] (openraft backs off before retrying that peer: 25, 50,
//!   100, 200 ms, then 500 ms each while it stays unreachable; see `backoff`).
//! * Deadline passed while connecting, encoding or waiting for the answer →
//!   [`RPCError::Timeout`] (the exchange goes on and leaves its connection in the pool;
//!   openraft retries at once) — except an `append` of more than one
//!   entry that is not answered within `soft_ttl()` (3/4 of the deadline), which returns
//!   [`RPCError::PayloadTooLarge`] with half as many entries as the hint, so openraft resends
//!   at once in smaller batches instead of timing out on the same large one forever.
//! * `{"Err": RaftError}` from the peer → [`RPCError::RemoteError`].

use crate::runtime::RAFT_ALPN;
use crate::{ManagerNode, Raft, RaftId, RaftNode, TypeConfig};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use openraft::error::{
    InstallSnapshotError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls_pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shoal_pki::{identity_from_cert, NodeIdentity, Role, MANAGER_SERVER_NAME};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Every path under this prefix is a Raft RPC and needs a manager certificate.
pub const RAFT_PATH_PREFIX: &str = "/internal/raft/";

/// How long a TLS handshake may take on the server side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest Raft request or response body accepted (a snapshot chunk is the largest).
pub const MAX_RAFT_BODY: usize = 64 * 1024 * 1024;

/// Idle connections kept per peer address.
pub const MAX_IDLE_PER_PEER: usize = 4;

/// How long the server waits for a request's headers (also bounds idle keep-alive connections).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The three Raft RPCs and their path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RpcKind {
    Append,
    Vote,
    Snapshot,
}

impl RpcKind {
    fn as_str(self) -> &'static str {
        match self {
            RpcKind::Append => "append",
            RpcKind::Vote => "vote",
            RpcKind::Snapshot => "snapshot",
        }
    }

    fn rpc_type(self) -> RPCTypes {
        match self {
            RpcKind::Append => RPCTypes::AppendEntries,
            RpcKind::Vote => RPCTypes::Vote,
            RpcKind::Snapshot => RPCTypes::InstallSnapshot,
        }
    }

    fn parse(kind: &str) -> Option<RpcKind> {
        match kind {
            "append" => Some(RpcKind::Append),
            "vote" => Some(RpcKind::Vote),
            "snapshot" => Some(RpcKind::Snapshot),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// A connection to a peer: HTTP/2 where the peer negotiated [`RAFT_ALPN`] — every RPC to the
/// peer shares it, each as its own stream, so a slow answer never makes the next heartbeat wait
/// for a connection — else HTTP/1.1, one request at a time (a peer of an older version).
enum Sender {
    H1(SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// A second handle on a shared (HTTP/2) connection.
    fn share(&self) -> Option<Sender> {
        match self {
            Sender::H2(s) => Some(Sender::H2(s.clone())),
            Sender::H1(_) => None,
        }
    }

    async fn send_request(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<hyper::Response<Incoming>> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// HTTP/2 flow-control windows for Raft connections: a snapshot chunk (up to ~4 MiB of JSON)
/// goes through without waiting for window updates on every 64 KiB.
const H2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// The Raft network over mTLS: a [`RaftNetworkFactory`] whose clients POST to the peers'
/// `/internal/raft/*`. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct TlsNetwork {
    connector: TlsConnector,
    local_id: Option<RaftId>,
    /// Idle connections by peer address.
    idle: Arc<Mutex<HashMap<String, Vec<Sender>>>>,
    contacts: PeerContacts,
}

/// How each peer answered this member's last RPCs: a leader sends every follower a heartbeat
/// each 100 ms, so a manager that stopped answering is known within a few of them (sooner than
/// the dispatcher's heartbeat grace), which `node ls` shows as unreachable.
#[derive(Clone, Debug, Default)]
pub struct PeerContacts(Arc<Mutex<BTreeMap<RaftId, Contact>>>);

#[derive(Clone, Debug, Default)]
struct Contact {
    /// Since when every RPC to the peer failed (None: the last one was answered).
    failing_since: Option<std::time::Instant>,
    error: String,
    /// The newest log-entry format the peer said it reads in its last answer
    /// ([`ENTRY_FORMAT_HEADER`]; 0 before any answer, 1 from a binary that does not say).
    entry_format: u32,
}

/// The answer header in which a member says which log-entry format it reads
/// ([`crate::formats::ENTRY`]); a binary from before batched entries sends none.
pub const ENTRY_FORMAT_HEADER: &str = "shoal-entry-format";

impl PeerContacts {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RaftId, Contact>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn answered(&self, peer: RaftId) {
        self.lock().entry(peer).or_default().failing_since = None;
    }

    fn reads_format(&self, peer: RaftId, format: u32) {
        self.lock().entry(peer).or_default().entry_format = format;
    }

    /// The newest log-entry format `peer` said it reads in its last answer (0: it has not
    /// answered this member yet).
    pub fn entry_format(&self, peer: RaftId) -> u32 {
        self.lock().get(&peer).map_or(0, |c| c.entry_format)
    }

    fn failed(&self, peer: RaftId, error: String) {
        let mut g = self.lock();
        let c = g.entry(peer).or_default();
        c.failing_since.get_or_insert_with(std::time::Instant::now);
        c.error = error;
    }

    /// Peers whose RPCs have all failed for at least `for_at_least`, with the last error.
    pub fn unreachable(&self, for_at_least: Duration) -> BTreeMap<RaftId, String> {
        self.lock()
            .iter()
            .filter(|(_, c)| c.failing_since.is_some_and(|t| t.elapsed() >= for_at_least))
            .map(|(id, c)| (*id, c.error.clone()))
            .collect()
    }
}

impl crate::EntryFormats for TlsNetwork {
    fn peer_contacts(&self) -> Option<PeerContacts> {
        Some(self.contacts.clone())
    }
}

impl std::fmt::Debug for TlsNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsNetwork").field("local_id", &self.local_id).finish_non_exhaustive()
    }
}

impl TlsNetwork {
    /// `client_config` must trust the cluster CA and present this manager's certificate
    /// ([`shoal_pki::client_config`]); servers are verified as [`MANAGER_SERVER_NAME`].
    pub fn new(client_config: Arc<rustls::ClientConfig>) -> Self {
        TlsNetwork::with_contacts(client_config, PeerContacts::default())
    }

    /// Like [`TlsNetwork::new`], recording how peers answer in `contacts` (shared across the
    /// networks a renewal replaces).
    pub fn with_contacts(client_config: Arc<rustls::ClientConfig>, contacts: PeerContacts) -> Self {
        // Offering the Raft protocol puts the connection on the peer's Raft runtime.
        let mut config = (*client_config).clone();
        config.alpn_protocols = vec![RAFT_ALPN.to_vec()];
        TlsNetwork {
            connector: TlsConnector::from(Arc::new(config)),
            local_id: None,
            idle: Arc::default(),
            contacts,
        }
    }

    /// Names this member in the [`RPCError::Timeout`]s it reports (otherwise they say 0).
    pub fn with_local_id(mut self, id: RaftId) -> Self {
        self.local_id = Some(id);
        self
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Sender>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A still open connection to `addr`, if any: the shared HTTP/2 one (it stays in the pool),
    /// else an idle HTTP/1.1 one.
    fn checkout(&self, addr: &str) -> Option<Sender> {
        let mut pool = self.pool();
        let conns = pool.get_mut(addr)?;
        conns.retain(|s| !s.is_closed());
        let found = conns.iter().find_map(Sender::share).or_else(|| conns.pop());
        if conns.is_empty() {
            pool.remove(addr);
        }
        found
    }

    /// Returns a connection whose exchange completed (an HTTP/2 one only if the pool holds no
    /// open one yet).
    fn checkin(&self, addr: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut pool = self.pool();
        let conns = pool.entry(addr.to_owned()).or_default();
        let keep = match sender {
            Sender::H2(_) => !conns.iter().any(|c| matches!(c, Sender::H2(_)) && !c.is_closed()),
            Sender::H1(_) => conns.len() < MAX_IDLE_PER_PEER,
        };
        if keep {
            conns.push(sender);
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for TlsNetwork {
    type Network = TlsPeer;

    async fn new_client(&mut self, target: RaftId, node: &ManagerNode) -> Self::Network {
        TlsPeer { target, node: node.clone(), net: self.clone() }
    }
}

/// The client for one peer (see [`TlsNetwork`]).
#[derive(Clone)]
pub struct TlsPeer {
    target: RaftId,
    node: ManagerNode,
    net: TlsNetwork,
}

/// A failure below Raft: connecting, TLS, HTTP, or an answer that is not a Raft result.
#[derive(Debug, thiserror::Error)]
#[error("raft rpc {kind} to manager {target} ({node}): {message}")]
struct TransportError {
    kind: &'static str,
    target: RaftId,
    node: ManagerNode,
    message: String,
}

/// How far a client RPC got (to tell "cannot reach" from "no answer in time").
const ENCODING: u8 = 0;
const CONNECTING: u8 = 1;
const EXCHANGING: u8 = 2;

/// Request bodies above this size are decoded on the blocking pool, not on async workers.
const BLOCKING_THRESHOLD: usize = 64 * 1024;

/// Serializes a request; `heavy` ones (entries, snapshot chunks) on the blocking pool.
async fn encode_request<Req: Serialize + Send + 'static>(
    kind: RpcKind,
    req: Req,
    heavy: bool,
) -> Result<Bytes, String> {
    let encode = move || {
        serde_json::to_vec(&req).map(Bytes::from).map_err(|e| format!("encode {}: {e}", kind.as_str()))
    };
    if heavy {
        tokio::task::spawn_blocking(encode).await.map_err(|e| format!("encode task: {e}"))?
    } else {
        encode()
    }
}

type ClientResult<T, E> = Result<T, RPCError<RaftId, ManagerNode, RaftError<RaftId, E>>>;

impl TlsPeer {
    fn fail(&self, kind: RpcKind, message: impl Into<String>) -> TransportError {
        TransportError {
            kind: kind.as_str(),
            target: self.target,
            node: self.node.clone(),
            message: message.into(),
        }
    }

    /// Sends one RPC and decodes the peer's `Result`. `entries`: how many log entries an
    /// `append` carries (for the batch-size hint); `heavy`: encode it on the blocking pool
    /// (a snapshot chunk, or entries of 64 KiB and more: a small append is encoded in place,
    /// a thread hop would cost more than the encoding).
    async fn call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: Req,
        option: &RPCOption,
        entries: usize,
        heavy: bool,
    ) -> ClientResult<Resp, E>
    where
        Req: Serialize + Send + 'static,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |e: TransportError| RPCError::Unreachable(Unreachable::new(&e));
        let ttl = option.hard_ttl();
        // A batch of entries that is not through by the soft TTL is cut in half for the next
        // attempts (openraft's PayloadTooLarge hint) rather than resent whole until it fits.
        let split = kind == RpcKind::Append && entries > 1;
        let wait = if split { option.soft_ttl() } else { ttl };
        // Encoding and the exchange run detached: when the caller gives up (or openraft drops
        // this future at `hard_ttl`), the exchange may still finish for up to another `hard_ttl`,
        // so a slow answer or a slow handshake leaves a usable connection in the pool instead of
        // a torn one. Large bodies are encoded off the async worker threads.
        let progress = Arc::new(AtomicU8::new(ENCODING));
        let exchange = {
            let peer = self.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let body = encode_request(kind, req, heavy).await.map_err(|e| peer.fail(kind, e))?;
                progress.store(CONNECTING, Ordering::Release);
                match tokio::time::timeout(ttl * 2, peer.exchange(kind, body, &progress)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(peer.fail(kind, "no answer")),
                }
            })
        };
        let answer = match tokio::time::timeout(wait, exchange).await {
            Ok(Ok(Ok(answer))) => answer,
            Ok(Ok(Err(e))) => {
                self.net.contacts.failed(self.target, e.message.clone());
                return Err(unreachable(e));
            }
            Ok(Err(e)) => return Err(unreachable(self.fail(kind, format!("exchange task failed: {e}")))),
            Err(_) => {
                let stage = progress.load(Ordering::Acquire);
                if split && stage != CONNECTING {
                    let hint = (entries / 2).max(1) as u64;
                    tracing::debug!(
                        target_id = self.target,
                        entries,
                        hint,
                        "raft transport: append too slow; splitting"
                    );
                    return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
                }
                // A connection still being made is a timeout too, not "unreachable": the
                // exchange goes on in its own task and leaves the connection in the pool, and
                // openraft sends the next heartbeat at once instead of backing off (a TLS
                // handshake on a loaded machine can outlast the 50 ms a heartbeat is given).
                let what = if stage == CONNECTING { "no connection" } else { "no answer" };
                self.net.contacts.failed(self.target, format!("{what} within {wait:?}"));
                return Err(RPCError::Timeout(Timeout {
                    action: kind.rpc_type(),
                    id: self.net.local_id.unwrap_or_default(),
                    target: self.target,
                    timeout: wait,
                }));
            }
        };
        self.net.contacts.answered(self.target);
        // Answers are small (a vote, a log id): parse them here.
        match serde_json::from_slice::<Result<Resp, RaftError<RaftId, E>>>(&answer) {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
            }
            Err(e) => Err(unreachable(self.fail(kind, format!("undecodable answer: {e}")))),
        }
    }

    /// One request/response on a pooled connection, or (also after a pooled one failed) on a
    /// new one; `progress` says whether a connection is there. Returns the `200` body.
    async fn exchange(
        &self,
        kind: RpcKind,
        body: Bytes,
        progress: &AtomicU8,
    ) -> Result<Bytes, TransportError> {
        let addr = self.node.addr.as_str();
        if let Some(mut sender) = self.net.checkout(addr) {
            progress.store(EXCHANGING, Ordering::Release);
            match self.send(&mut sender, kind, body.clone()).await {
                Ok(answer) => {
                    self.net.checkin(addr, sender);
                    return answer;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "raft transport: pooled connection failed; reconnecting");
                    progress.store(CONNECTING, Ordering::Release);
                }
            }
        }
        let mut sender = self.connect(kind).await?;
        progress.store(EXCHANGING, Ordering::Release);
        let answer = self.send(&mut sender, kind, body).await?;
        self.net.checkin(addr, sender);
        answer
    }

    async fn connect(&self, kind: RpcKind) -> Result<Sender, TransportError> {
        let tcp = TcpStream::connect(self.node.addr.as_str())
            .await
            .map_err(|e| self.fail(kind, format!("connect: {e}")))?;
        // Raft RPCs are small request/response pairs: do not let Nagle delay them.
        tcp.set_nodelay(true).map_err(|e| self.fail(kind, format!("set TCP_NODELAY: {e}")))?;
        let name = ServerName::try_from(MANAGER_SERVER_NAME)
            .map_err(|e| self.fail(kind, format!("server name: {e}")))?;
        let tls =
            self.net.connector.connect(name, tcp).await.map_err(|e| self.fail(kind, format!("TLS: {e}")))?;
        let peer = self.node.addr.clone();
        let closed = move |e: hyper::Error| tracing::debug!(peer = %peer, error = %e, "raft transport: connection closed");
        if tls.get_ref().1.alpn_protocol() == Some(RAFT_ALPN) {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|e| self.fail(kind, format!("HTTP/2: {e}")))?;
            tokio::spawn(async move { conn.await.map_err(closed) });
            return Ok(Sender::H2(sender));
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.fail(kind, format!("HTTP: {e}")))?;
        tokio::spawn(async move { conn.await.map_err(closed) });
        Ok(Sender::H1(sender))
    }

    /// Sends the request and reads the whole answer. `Err`: the connection is unusable.
    /// `Ok(Err)`: a complete answer that is not a `200`; the connection can be reused.
    async fn send(
        &self,
        sender: &mut Sender,
        kind: RpcKind,
        body: Bytes,
    ) -> Result<Result<Bytes, TransportError>, TransportError> {
        let uri = match sender {
            // HTTP/2 carries the authority and scheme in the request itself.
            Sender::H2(_) => format!("https://{}{RAFT_PATH_PREFIX}{}", self.node.addr, kind.as_str()),
            Sender::H1(_) => format!("{RAFT_PATH_PREFIX}{}", kind.as_str()),
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, self.node.addr.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| self.fail(kind, format!("request: {e}")))?;
        let resp = sender.send_request(req).await.map_err(|e| self.fail(kind, format!("HTTP: {e}")))?;
        let status = resp.status();
        if status == StatusCode::OK {
            let format = resp
                .headers()
                .get(ENTRY_FORMAT_HEADER)
                .and_then(|v| v.to_str().ok()?.parse::<u32>().ok())
                .unwrap_or(1);
            self.net.contacts.reads_format(self.target, format);
        }
        let answer = Limited::new(resp.into_body(), MAX_RAFT_BODY)
            .collect()
            .await
            .map_err(|e| self.fail(kind, format!("reading the answer: {e}")))?
            .to_bytes();
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            return Ok(Err(self.fail(kind, format!("peer answered {status}: {text}"))));
        }
        Ok(Ok(answer))
    }
}

impl RaftNetwork<TypeConfig> for TlsPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> ClientResult<AppendEntriesResponse<RaftId>, openraft::error::Infallible> {
        let entries = rpc.entries.len();
        let bytes: usize = rpc
            .entries
            .iter()
            .map(|e| match &e.payload {
                openraft::EntryPayload::Normal(req) => req.approx_bytes(),
                _ => 256,
            })
            .sum();
        self.call(RpcKind::Append, rpc, &option, entries, bytes >= BLOCKING_THRESHOLD).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> ClientResult<InstallSnapshotResponse<RaftId>, InstallSnapshotError> {
        self.call(RpcKind::Snapshot, rpc, &option, 0, true).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> ClientResult<VoteResponse<RaftId>, openraft::error::Infallible> {
        self.call(RpcKind::Vote, rpc, &option, 0, false).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        backoff()
    }
}

/// The pauses before each retry to a peer that could not be reached: openraft's constant 500 ms
/// is longer than an election timeout, so one refused connection (the peer restarting, a
/// connection the peer just closed) silenced the leader's heartbeats to it long enough for an
/// election. Short at first, 500 ms for a peer that stays away.
pub(crate) fn backoff() -> openraft::network::Backoff {
    let first = [25, 50, 100, 200].map(Duration::from_millis);
    openraft::network::Backoff::new(first.into_iter().chain(std::iter::repeat(Duration::from_millis(500))))
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Why a Raft RPC could not even be handed to Raft.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("unknown raft rpc {0:?} (expected append, vote or snapshot)")]
    UnknownKind(String),
    #[error("bad raft {kind} request: {message}")]
    BadRequest { kind: &'static str, message: String },
    #[error("raft {kind}: {message}")]
    Internal { kind: &'static str, message: String },
}

impl RpcError {
    /// The HTTP status to answer with: 400 for the caller's mistakes, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            RpcError::UnknownKind(_) | RpcError::BadRequest { .. } => 400,
            RpcError::Internal { .. } => 500,
        }
    }
}

fn decode_now<T: DeserializeOwned>(kind: RpcKind, body: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(body)
        .map_err(|e| RpcError::BadRequest { kind: kind.as_str(), message: e.to_string() })
}

/// Parses a request; large ones (entries, snapshot chunks) on the blocking pool so that a
/// multi-megabyte body does not stall the async workers (and with them heartbeats).
async fn decode<T: DeserializeOwned + Send + 'static>(kind: RpcKind, body: &[u8]) -> Result<T, RpcError> {
    if body.len() <= BLOCKING_THRESHOLD {
        return decode_now(kind, body);
    }
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || decode_now(kind, &body))
        .await
        .map_err(|e| RpcError::Internal { kind: kind.as_str(), message: format!("decode task: {e}") })?
}

fn encode<T: Serialize>(kind: RpcKind, value: &T) -> Result<Vec<u8>, RpcError> {
    serde_json::to_vec(value)
        .map_err(|e| RpcError::Internal { kind: kind.as_str(), message: format!("encode the response: {e}") })
}

/// Handles one Raft RPC, independent of the HTTP framework: `kind` is `append`, `vote` or
/// `snapshot`, `body` the JSON request. The answer is the JSON `Result` of the Raft call, so
/// Raft's own errors reach the client (as [`RPCError::RemoteError`]); `Err` means the request
/// never reached Raft (answer with [`RpcError::http_status`]).
pub async fn handle_raft_rpc(raft: &Raft, kind: &str, body: &[u8]) -> Result<Vec<u8>, RpcError> {
    let kind = RpcKind::parse(kind).ok_or_else(|| RpcError::UnknownKind(kind.chars().take(64).collect()))?;
    match kind {
        RpcKind::Append => {
            // Entries of a newer format (from a leader that runs a newer Shoal) are refused
            // before they reach the log, whether they decode or not.
            let refuse = |e: shoal_state::NewerFormat| {
                tracing::error!(error = %e, "refusing entries from the leader");
                RpcError::BadRequest { kind: kind.as_str(), message: e.to_string() }
            };
            let req: AppendEntriesRequest<TypeConfig> = match decode(kind, body).await {
                Ok(r) => r,
                Err(e) => {
                    let newer = serde_json::from_slice(body).ok().and_then(|v| crate::newer_entry_format(&v));
                    return Err(newer.map_or(e, refuse));
                }
            };
            for entry in &req.entries {
                if let openraft::EntryPayload::Normal(r) = &entry.payload {
                    shoal_state::check_format("a Raft log entry", r.format, crate::formats::ENTRY)
                        .map_err(refuse)?;
                }
            }
            encode(kind, &raft.append_entries(req).await)
        }
        RpcKind::Vote => {
            let req: VoteRequest<RaftId> = decode(kind, body).await?;
            encode(kind, &raft.vote(req).await)
        }
        RpcKind::Snapshot => {
            let req: InstallSnapshotRequest<TypeConfig> = decode(kind, body).await?;
            encode(kind, &raft.install_snapshot(req).await)
        }
    }
}

/// `POST /internal/raft/{kind}` for `node`, with bodies up to [`MAX_RAFT_BODY`]. Serve it with
/// [`serve_tls`] (which enforces who may call it); merge other routes into it as needed.
pub fn raft_router(node: Arc<RaftNode>) -> Router {
    Router::new()
        .route("/internal/raft/{kind}", post(raft_rpc))
        .layer(DefaultBodyLimit::max(MAX_RAFT_BODY))
        .with_state(node)
}

async fn raft_rpc(State(node): State<Arc<RaftNode>>, Path(kind): Path<String>, body: Bytes) -> Response {
    match handle_raft_rpc(node.raft(), &kind, &body).await {
        Ok(answer) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (HeaderName::from_static(ENTRY_FORMAT_HEADER), HeaderValue::from(crate::formats::ENTRY)),
            ],
            answer,
        )
            .into_response(),
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, e.to_string()).into_response()
        }
    }
}

/// Whether `path` is a Raft RPC path (exactly the prefix without its slash counts too).
fn is_raft_path(path: &str) -> bool {
    path.starts_with(RAFT_PATH_PREFIX) || path == RAFT_PATH_PREFIX.trim_end_matches('/')
}

/// Whether a peer with `identity` may call `path`.
fn allowed<A>(identity: Option<&NodeIdentity>, path: &str, authorize: &A) -> bool
where
    A: Fn(&NodeIdentity, &str) -> bool,
{
    if !is_raft_path(path) {
        return true;
    }
    matches!(identity, Some(id) if id.role == Role::Manager && authorize(id, path))
}

/// Serves `router` over TLS on `listener` until the returned future is dropped (dropping it
/// also closes every connection it accepted).
///
/// Each connection runs in its own task: TLS handshake (at most [`HANDSHAKE_TIMEOUT`]), then
/// HTTP/1.1 with keep-alive. Every request carries the peer's `Option<NodeIdentity>` (from its
/// certificate; `None` without one) and `ConnectInfo<SocketAddr>` in its extensions. Requests
/// under [`RAFT_PATH_PREFIX`] get `403` unless the peer's certificate is a manager's and
/// `authorize(identity, path)` is true.
pub async fn serve_tls<A>(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: Router, authorize: A)
where
    A: Fn(&NodeIdentity, &str) -> bool + Clone + Send + Sync + 'static,
{
    let (_keep, configs) = tokio::sync::watch::channel(tls);
    serve_tls_reloading(listener, configs, router, authorize).await
}

/// Like [`serve_tls`], but every new connection uses the newest configuration published on
/// `configs` (a renewed certificate takes effect without dropping the listener; established
/// connections keep the one they were made with).
pub async fn serve_tls_reloading<A>(
    listener: TcpListener,
    configs: tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>,
    router: Router,
    authorize: A,
) where
    A: Fn(&NodeIdentity, &str) -> bool + Clone + Send + Sync + 'static,
{
    let mut conns = JoinSet::new();
    // The configuration with the ALPN protocols added, made again when a new one is published.
    let mut current: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let published = configs.borrow().clone();
                    let config = match &current {
                        Some((from, made)) if Arc::ptr_eq(from, &published) => made.clone(),
                        _ => {
                            let made = with_raft_alpn(&published);
                            current = Some((published, made.clone()));
                            made
                        }
                    };
                    let acceptor = TlsAcceptor::from(config);
                    conns.spawn(serve_connection(acceptor, tcp, peer, router.clone(), authorize.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "raft transport: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// `config` also accepting the Raft ALPN protocol. `http/1.1` stays in the list: a client that
/// offers ALPN protocols none of which the server lists is refused by rustls (curl offers `h2`
/// and `http/1.1`); clients that offer none are unaffected.
fn with_raft_alpn(config: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    if config.alpn_protocols.iter().any(|p| p == RAFT_ALPN) {
        return config.clone();
    }
    let mut c = (**config).clone();
    let mut protocols = vec![RAFT_ALPN.to_vec()];
    if c.alpn_protocols.is_empty() {
        protocols.push(b"http/1.1".to_vec());
    }
    protocols.append(&mut c.alpn_protocols);
    c.alpn_protocols = protocols;
    Arc::new(c)
}

async fn serve_connection<A>(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    authorize: A,
) where
    A: Fn(&NodeIdentity, &str) -> bool + Clone + Send + Sync + 'static,
{
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set TCP_NODELAY");
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|cert| {
        identity_from_cert(cert)
            .map_err(|e| tracing::warn!(%peer, error = %e, "peer certificate has no usable identity"))
            .ok()
    });
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let router = router.clone();
        let identity = identity.clone();
        let allowed = allowed(identity.as_ref(), req.uri().path(), &authorize);
        async move {
            if !allowed {
                let who = identity.as_ref().map_or_else(
                    || "a peer without certificate".to_owned(),
                    |i| format!("{} {}", i.role, i.node_id),
                );
                tracing::debug!(%peer, path = req.uri().path(), %who, "raft transport: refused");
                let body = format!("forbidden: {who} may not call {}\n", req.uri().path());
                return Ok::<Response, Infallible>((StatusCode::FORBIDDEN, body).into_response());
            }
            req.extensions_mut().insert(identity);
            req.extensions_mut().insert(ConnectInfo(peer));
            hyper::service::Service::call(&router, req).await
        }
    });
    let raft = tls.get_ref().1.alpn_protocol() == Some(RAFT_ALPN);
    let serve = async move {
        let ended = |e: hyper::Error| tracing::debug!(%peer, error = %e, "raft transport: connection ended with an error");
        if raft {
            // A peer's Raft RPCs, each its own HTTP/2 stream. Pings find a peer that went away.
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .keep_alive_interval(Some(Duration::from_secs(10)))
                .keep_alive_timeout(Duration::from_secs(20));
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                ended(e);
            }
            return;
        }
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        // `with_upgrades`: an agent's streamed exec takes the connection over after its `101`.
        if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).with_upgrades().await {
            ended(e);
        }
    };
    // A peer's Raft connection is served on Raft's runtime, where API work cannot hold up the
    // heartbeats it carries (see `crate::runtime`).
    match raft.then(crate::runtime::handle) {
        Some(Ok(rt)) => {
            // Dropping this future (the listener stops) closes the connection there too.
            let mut task = crate::runtime::AbortOnDrop(rt.spawn(serve));
            let _ = (&mut task.0).await;
        }
        Some(Err(e)) => {
            tracing::warn!(%peer, error = %e, "serving a Raft connection on the shared runtime");
            serve.await;
        }
        None => serve.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_paths_need_an_authorized_manager() {
        let mgr = NodeIdentity { node_id: "m1".into(), role: Role::Manager };
        let wrk = NodeIdentity { node_id: "w1".into(), role: Role::Worker };
        let yes = |_: &NodeIdentity, _: &str| true;
        let no = |_: &NodeIdentity, _: &str| false;
        for path in ["/internal/raft/vote", "/internal/raft/anything", "/internal/raft"] {
            assert!(allowed(Some(&mgr), path, &yes), "{path}");
            assert!(!allowed(Some(&mgr), path, &no), "{path}");
            assert!(!allowed(Some(&wrk), path, &yes), "{path}");
            assert!(!allowed(None, path, &yes), "{path}");
        }
        for path in ["/internal/join", "/v1/services", "/internal/raftx"] {
            assert!(allowed(None, path, &no), "{path}");
            assert!(allowed(Some(&wrk), path, &no), "{path}");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [RpcKind::Append, RpcKind::Vote, RpcKind::Snapshot] {
            assert_eq!(RpcKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(RpcKind::parse("Append"), None);
    }
}
