//! Joining an existing cluster as a manager or a worker (`shoal cluster join --token TOKEN HOST:PORT`, run
//! against a daemon that is in no cluster yet).
//!
//! 1. The token names the cluster CA's digest: the joiner connects to HOST:PORT trusting only a
//!    CA with that digest (no certificate of its own yet).
//! 2. It makes its key locally and sends a CSR with the token; the manager checks the token (its
//!    kind decides the role) and returns the signed certificate and the CA.
//! 3. With that certificate the joiner turns on its Raft transport and listener, then asks the
//!    leader to add it: as a learner that catches up, then as a voter.
//!
//! The manager's side, `POST /internal/join` ([`serve_join`]), is open to anyone who reaches the
//! node-to-node port, so it is cheap to refuse: attempts are rate-limited per peer (an IPv4
//! address or an IPv6 /64, [`JOIN_PER_PEER`]; `429` with `Retry-After`), a token that the local
//! replica's cluster record refutes — malformed, for another CA, or a secret it does not know,
//! compared in constant time — is answered `401` at once ([`precheck`]), and only a plausible
//! one costs a linearizable read (within a manager-wide budget, [`JOIN_GLOBAL`]) before the
//! committed state decides. A token rotated moments ago may be refused by a manager whose
//! replica has not applied the rotation yet (a heartbeat later it is accepted there too).

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
    // A manager answers 429 while too many joins arrive (from this address, or plausible ones
    // in all): wait a little and try again, a few times.
    let mut retries = 0u64;
    let (st, bytes) = loop {
        let (st, bytes) = call(pinned.clone(), addr, Method::POST, "/internal/join", Some(body.clone()))
            .await
            .map_err(|e| JoinClusterError::Remote(format!("cannot reach the manager at {addr}: {e}")))?;
        if st == hyper::StatusCode::TOO_MANY_REQUESTS && retries < 3 {
            retries += 1;
            tokio::time::sleep(Duration::from_secs(retries)).await;
            continue;
        }
        break (st, bytes);
    };
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

// ---------------------------------------------------------------------------------------------
// The manager's side: `POST /internal/join`, which anyone who reaches the node-to-node port may
// call (a joiner has no certificate yet).

/// How many join attempts one peer (an IPv4 address, an IPv6 /64) may make at once, and how fast
/// it gets more.
pub const JOIN_PER_PEER: Rate = Rate { burst: 20.0, per_sec: 2.0 };
/// How many join attempts may reach the committed state at once (plausible tokens only: bad
/// ones are answered from the local replica), and how fast more may.
pub const JOIN_GLOBAL: Rate = Rate { burst: 50.0, per_sec: 20.0 };
/// How many peers the limiter remembers; beyond that the idlest are forgotten.
pub const JOIN_MAX_PEERS: usize = 10_000;
/// The largest join request read (a token, a node id and a CSR).
const MAX_JOIN_BODY: usize = 64 * 1024;

/// A token bucket's size and refill rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Attempts allowed at once.
    pub burst: f64,
    /// Attempts added back per second.
    pub per_sec: f64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    fn full(rate: Rate, now: std::time::Instant) -> Bucket {
        Bucket { tokens: rate.burst, at: now }
    }

    fn refill(&mut self, rate: Rate, now: std::time::Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.at = now;
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: std::time::Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = if rate.per_sec > 0.0 { (1.0 - self.tokens) / rate.per_sec } else { 3600.0 };
        Err(Duration::from_secs_f64(wait.clamp(0.001, 3600.0)))
    }
}

/// Token buckets for join attempts: one per peer (IPv4 address or IPv6 /64) and one for the
/// whole manager. Bounded memory: at most `max_peers` peers are remembered.
pub struct JoinLimiter {
    per_peer: Rate,
    global: Rate,
    max_peers: usize,
    state: std::sync::Mutex<LimiterState>,
}

struct LimiterState {
    peers: std::collections::HashMap<std::net::IpAddr, Bucket>,
    global: Option<Bucket>,
}

/// The key a peer is limited by: IPv4 addresses as they are, IPv6 by their /64 (one host
/// usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
fn peer_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

impl JoinLimiter {
    pub fn new(per_peer: Rate, global: Rate, max_peers: usize) -> JoinLimiter {
        JoinLimiter {
            per_peer,
            global,
            max_peers: max_peers.max(1),
            state: std::sync::Mutex::new(LimiterState { peers: Default::default(), global: None }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One attempt from `ip` at `now`: `Err(wait)` when that peer has used up its attempts.
    pub fn check_peer(&self, ip: std::net::IpAddr, now: std::time::Instant) -> Result<(), Duration> {
        let key = peer_key(ip);
        let rate = self.per_peer;
        let mut st = self.lock();
        if !st.peers.contains_key(&key) && st.peers.len() >= self.max_peers {
            // Forget the peers whose buckets have refilled (they lose nothing), then, if that
            // is not enough, the one idle longest.
            st.peers.retain(|_, b| {
                let mut b = *b;
                b.refill(rate, now);
                b.tokens < rate.burst
            });
            if st.peers.len() >= self.max_peers {
                if let Some(oldest) = st.peers.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                    st.peers.remove(&oldest);
                }
            }
        }
        st.peers.entry(key).or_insert_with(|| Bucket::full(rate, now)).take(rate, now)
    }

    /// One attempt that would reach the committed state: `Err(wait)` when the manager's budget
    /// for them is used up.
    pub fn check_global(&self, now: std::time::Instant) -> Result<(), Duration> {
        let rate = self.global;
        self.lock().global.get_or_insert_with(|| Bucket::full(rate, now)).take(rate, now)
    }

    /// How many peers are remembered.
    pub fn peers(&self) -> usize {
        self.lock().peers.len()
    }
}

/// This process's join limiter (one manager per daemon).
fn limiter() -> &'static JoinLimiter {
    static LIMITER: std::sync::OnceLock<JoinLimiter> = std::sync::OnceLock::new();
    LIMITER.get_or_init(|| JoinLimiter::new(JOIN_PER_PEER, JOIN_GLOBAL, JOIN_MAX_PEERS))
}

/// `429 rate_limited` with `Retry-After` (whole seconds, at least one).
fn too_many(wait: Duration, whose: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut r = crate::server::ApiError::new(
        hyper::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many join attempts {whose}: retry in {secs} s"),
    )
    .into_response();
    r.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from(secs));
    r
}

/// What the local replica says of a presented token, before anything costs a Raft round trip.
#[derive(Debug, PartialEq, Eq)]
pub enum Precheck {
    /// It is one of the cluster's current tokens as this replica knows them: worth a
    /// linearizable check.
    Plausible,
    /// Malformed, for another CA, or a secret this replica does not know: refused.
    Refused,
    /// This replica knows no cluster yet (it is catching up): only the committed state can tell.
    Unknown,
}

/// Checks `presented` against the tokens of the local replica's cluster record (`None`: no
/// record). Both secrets are compared, in constant time, whatever the first gives.
pub fn precheck(presented: &str, cluster_tokens: Option<(&str, &str)>) -> Precheck {
    let Ok(presented) = presented.parse::<JoinToken>() else { return Precheck::Refused };
    let Some((manager, worker)) = cluster_tokens else { return Precheck::Unknown };
    let matches = |t: &str| t.parse::<JoinToken>().is_ok_and(|t| t.matches(&presented));
    if matches(manager) | matches(worker) {
        Precheck::Plausible
    } else {
        Precheck::Refused
    }
}

/// `POST /internal/join` (token + CSR → certificate): rate-limited per peer; a token the local
/// replica refutes is answered at once; only a plausible one costs a linearizable read (and the
/// manager's global budget), and the committed state decides.
pub(crate) async fn serve_join(
    axum::extract::State(m): axum::extract::State<Arc<Manager>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use crate::server::ApiError;
    use axum::response::IntoResponse;
    use hyper::StatusCode;
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    if let Err(wait) = limiter().check_peer(peer, std::time::Instant::now()) {
        tracing::debug!(%peer, "join attempt refused: rate limit");
        return too_many(wait, "from this address");
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_JOIN_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("request body: {e}"))
                .into_response()
        }
    };
    let join: JoinRequest = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("join request: {e}"))
                .into_response()
        }
    };
    let local = {
        let data = m.node.local_state();
        data.state.cluster().map(|c| (c.manager_token.clone(), c.worker_token.clone()))
    };
    match precheck(&join.token, local.as_ref().map(|(a, b)| (a.as_str(), b.as_str()))) {
        Precheck::Refused => {
            tracing::debug!(%peer, "join attempt refused: bad token");
            return ApiError::from(shoal_manager::JoinError::BadToken).into_response();
        }
        Precheck::Plausible | Precheck::Unknown => {}
    }
    if let Err(wait) = limiter().check_global(std::time::Instant::now()) {
        tracing::debug!(%peer, "join attempt refused: global rate limit");
        return too_many(wait, "on this manager");
    }
    let node = shoal_types::NodeId::new(join.node_id.clone());
    let read =
        crate::internal::read_linearizable(&m, |s| (s.cluster().cloned(), s.node(&node).is_some())).await;
    let (cluster, exists) = match read {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match m.admit(cluster, exists, &join.token, &join.csr_pem, &join.node_id) {
        Ok(admission) => axum::Json(admission).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Instant;

    const RATE: Rate = Rate { burst: 3.0, per_sec: 2.0 };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_peer_gets_its_burst_then_waits() {
        let l = JoinLimiter::new(RATE, JOIN_GLOBAL, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_peer(ip("10.0.0.1"), t0).is_ok());
        }
        let wait = l.check_peer(ip("10.0.0.1"), t0).expect_err("limited");
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        // Another peer is not affected.
        assert!(l.check_peer(ip("10.0.0.2"), t0).is_ok());
        // Half a second later one more attempt is allowed, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.check_peer(ip("10.0.0.1"), t1).is_ok());
        assert!(l.check_peer(ip("10.0.0.1"), t1).is_err());
        // The bucket never holds more than its burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(l.check_peer(ip("10.0.0.1"), later).is_ok());
        }
        assert!(l.check_peer(ip("10.0.0.1"), later).is_err());
    }

    #[test]
    fn ipv6_peers_count_by_their_64() {
        let l = JoinLimiter::new(RATE, JOIN_GLOBAL, 100);
        let t0 = Instant::now();
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"] {
            assert!(l.check_peer(ip(host), t0).is_ok());
        }
        assert!(l.check_peer(ip("2001:db8::99"), t0).is_err(), "the same /64");
        assert!(l.check_peer(ip("2001:db8:0:1::1"), t0).is_ok(), "another /64");
        // IPv4-mapped addresses are the IPv4 peer.
        for _ in 0..3 {
            assert!(l.check_peer(ip("192.0.2.7"), t0).is_ok());
        }
        assert!(l.check_peer(ip("::ffff:192.0.2.7"), t0).is_err());
    }

    #[test]
    fn the_global_bucket_limits_everyone() {
        let l = JoinLimiter::new(JOIN_PER_PEER, Rate { burst: 2.0, per_sec: 1.0 }, 100);
        let t0 = Instant::now();
        assert!(l.check_global(t0).is_ok() && l.check_global(t0).is_ok());
        let wait = l.check_global(t0).expect_err("limited");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(l.check_global(t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let l = JoinLimiter::new(RATE, JOIN_GLOBAL, 10);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let _ = l.check_peer(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(l.peers() <= 10, "{}", l.peers());
        // The newest peers are the ones remembered: the last one is still limited after its
        // burst.
        let last = IpAddr::from(999u32.to_be_bytes());
        let t = t0 + Duration::from_millis(999);
        assert!(l.check_peer(last, t).is_ok() && l.check_peer(last, t).is_ok());
        assert!(l.check_peer(last, t).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        let r = too_many(Duration::from_millis(1500), "from this address");
        assert_eq!(r.status(), hyper::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("2"));
        let r = too_many(Duration::from_millis(1), "on this manager");
        assert_eq!(r.headers().get(hyper::header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"));
    }

    #[test]
    fn bad_tokens_are_refused_without_the_committed_state() {
        let digest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let manager = JoinToken::generate(digest).expect("token").to_string();
        let worker = JoinToken::generate(digest).expect("token").to_string();
        let tokens = Some((manager.as_str(), worker.as_str()));
        assert_eq!(precheck(&manager, tokens), Precheck::Plausible);
        assert_eq!(precheck(&format!(" {worker}\n"), tokens), Precheck::Plausible);
        // Malformed, another CA, another secret: refused.
        assert_eq!(precheck("SHOAL-1-nope", tokens), Precheck::Refused);
        assert_eq!(precheck("", tokens), Precheck::Refused);
        let other_ca = JoinToken::generate(&"f".repeat(64)).expect("token");
        let forged =
            format!("SHOAL-1-{}-{}", other_ca.ca_digest, manager.rsplit('-').next().unwrap_or_default());
        assert_eq!(precheck(&forged, tokens), Precheck::Refused);
        let guessed = JoinToken::generate(digest).expect("token").to_string();
        assert_eq!(precheck(&guessed, tokens), Precheck::Refused);
        // A malformed token is refused even by a replica that knows no cluster yet; a
        // well-formed one needs the committed state there.
        assert_eq!(precheck("garbage", None), Precheck::Refused);
        assert_eq!(precheck(&guessed, None), Precheck::Unknown);
    }
}
