//! A Shoal manager: a Raft member ([`shoal_raft::RaftNode`]) plus the work only the leader does.
//!
//! **Controllers** run only on the leader: compute a plan with `shoal_core::tick` on the local
//! replica, commit it through Raft; the state machine verifies it against the state at apply time
//! (Nomad's plan-apply), so a plan made on a slightly stale replica can never overcommit a node or
//! fill a slot twice. A pass runs after every change to the state (batched) over the services the
//! changes concern, over every service when the brain's `wake_at` falls due or anything but a
//! service or task changed, and at least every 10 s (`shoal_core::NextPass`); passes stop as soon as leadership is lost
//! and a new leader continues from the replicated state with a full pass (the brain keeps no
//! memory between passes).

pub mod changes;

use shoal_raft::{RaftNode, RaftWatch};
use shoal_state::{ClusterObject, Command};
use shoal_types::{NodeRole, Timestamp};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, watch};

pub use shoal_raft::{
    CommandError, Consistency, ErrorKind, ManagerNode, NodeConfig, RaftId, RaftStatus, ReadError,
    SingleManagerNetwork, StartError, WriteError,
};

pub struct Manager {
    pub node: Arc<RaftNode>,
    /// The Raft transport, switched on once this node has its certificate.
    network: shoal_raft::LazyTlsNetwork,
    /// mTLS client configuration (this node's certificate, the cluster CA), once it has one;
    /// replaced when the certificate is renewed.
    client_tls: std::sync::RwLock<Option<Arc<rustls::ClientConfig>>>,
    /// Lifetime of the certificates this manager issues (`--cert-ttl`).
    cert_validity_secs: std::sync::atomic::AtomicU64,
    /// The node-to-node listener's TLS configuration, published once this node has a certificate.
    server_tls: watch::Sender<Option<Arc<rustls::ServerConfig>>>,
    /// Where this node keeps its certificate, key (0600) and the cluster CA certificate.
    tls_dir: PathBuf,
    /// Upper bound between two controller passes.
    max_pass_interval: Duration,
    stop: watch::Sender<bool>,
    /// When each node's last heartbeat reached this manager, and the period the node was told
    /// to heartbeat at then (only the leader's view matters).
    heartbeats: std::sync::Mutex<std::collections::BTreeMap<String, (std::time::Instant, Duration)>>,
    /// What the dispatcher's long polls wait on (one reader of the state machine's events).
    changes: Arc<changes::Changes>,
    /// The heartbeat period for the cluster's size ([`heartbeat_period`]), in milliseconds;
    /// kept by the liveness loop.
    heartbeat_period_ms: std::sync::atomic::AtomicU64,
    /// Set when this node joined a cluster as a worker: the managers' addresses. The daemon then
    /// runs its agent against them instead of being a manager.
    joined_as_worker: watch::Sender<Option<Vec<String>>>,
    /// Set by `cluster leave`: the daemon stops this node's tasks, forgets the cluster and exits.
    leave: watch::Sender<bool>,
    /// Where this manager serves the `/v1` API over TCP (`--api-addr`, its host made reachable),
    /// for the commands that tell a client where to connect.
    api_addr: std::sync::OnceLock<String>,
}

/// How often nodes heartbeat to the leader in a cluster of up to [`HEARTBEATS_PER_SECOND`]
/// nodes; a node is down after `MISSED_HEARTBEATS` misses of the period it was told.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const MISSED_HEARTBEATS: u32 = 3;
/// The most heartbeats a second the leader asks of the whole cluster: past this many nodes the
/// period grows with the node count (Nomad's `max_heartbeats_per_second`), so a 1,000-node
/// cluster heartbeats every 5 s (SwarmKit's fixed period) and a node is down after 15 s.
pub const HEARTBEATS_PER_SECOND: u64 = 200;
/// The longest heartbeat period the leader asks for, however large the cluster.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// The heartbeat period for a cluster of `nodes` nodes: [`HEARTBEAT_INTERVAL`] up to
/// [`HEARTBEATS_PER_SECOND`] nodes, then `nodes / HEARTBEATS_PER_SECOND` seconds, at most
/// [`MAX_HEARTBEAT_INTERVAL`].
pub fn heartbeat_period(nodes: usize) -> Duration {
    let ms = (nodes as u64).saturating_mul(1000) / HEARTBEATS_PER_SECOND;
    Duration::from_millis(ms).clamp(HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL)
}
/// A manager none of whose Raft RPCs the leader got an answer to for this long is down.
pub const MANAGER_UNREACHABLE: Duration = Duration::from_secs(1);

/// Lifetime of node certificates (renewed between 50% and 80% of it).
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// What a node that joined receives.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Admission {
    pub role: shoal_pki::Role,
    pub cert_pem: String,
    pub ca_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "invalid join token (it may have been rotated; ask for a new one with `shoal cluster join-token`)"
    )]
    BadToken,
    #[error("the cluster has not been initialized")]
    NotInitialized,
    #[error("node {0} is already a member of this cluster")]
    AlreadyMember(String),
    #[error("{0}")]
    Pki(shoal_pki::PkiError),
    #[error("{0}")]
    Unavailable(String),
}

/// A cluster's CA and join tokens made before the cluster (`shoal cluster prepare`); the
/// tokens name this CA's digest.
pub struct Prepared {
    pub ca: shoal_pki::Ca,
    pub manager_token: String,
    pub worker_token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("this node is already part of cluster {0}")]
    AlreadyInitialized(String),
    #[error("raft: {0}")]
    Raft(#[from] StartError),
    #[error("no leader was elected within {0}s")]
    NoLeader(u64),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Pki(#[from] shoal_pki::PkiError),
    #[error("the cluster has no CA yet; run `shoal cluster init` first")]
    NoCa,
    #[error("node {0} is not a member of this cluster")]
    NotAMember(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

impl Manager {
    /// Starts the controllers over a started Raft member.
    pub fn start(node: RaftNode, network: shoal_raft::LazyTlsNetwork, tls_dir: PathBuf) -> Arc<Manager> {
        let (stop, stop_rx) = watch::channel(false);
        let m = Arc::new(Manager {
            node: Arc::new(node),
            network,
            client_tls: std::sync::RwLock::new(None),
            cert_validity_secs: std::sync::atomic::AtomicU64::new(NODE_CERT_VALIDITY.as_secs()),
            server_tls: watch::channel(None).0,
            tls_dir,
            max_pass_interval: Duration::from_secs(1),
            stop,
            heartbeats: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            changes: Arc::new(changes::Changes::default()),
            heartbeat_period_ms: std::sync::atomic::AtomicU64::new(HEARTBEAT_INTERVAL.as_millis() as u64),
            joined_as_worker: watch::channel(None).0,
            leave: watch::channel(false).0,
            api_addr: std::sync::OnceLock::new(),
        });
        tokio::spawn(changes::fan_out(m.changes.clone(), m.node.subscribe(), stop_rx.clone()));
        tokio::spawn(controllers(m.clone(), stop_rx.clone()));
        tokio::spawn(liveness(m.clone(), stop_rx));
        m
    }

    /// Creates a new cluster with this manager as its first member: Raft membership, the root CA
    /// (ECDSA P-256), the worker and manager join tokens, and this node's own certificate, which
    /// it then uses at once (Raft transport, node-to-node listener, its agent): no restart.
    /// Calling it again on the same node only makes sure the certificate exists and is in use.
    /// `data_path_port` is the cluster's VXLAN port (checked by the caller; see
    /// [`shoal_state::validate_data_path_port`]), fixed from then on.
    pub async fn init_cluster(&self, data_path_port: u16) -> Result<(), InitError> {
        self.init_cluster_with(data_path_port, None).await
    }

    /// `init_cluster` with a CA and join tokens made beforehand (`shoal cluster prepare`), so
    /// that machines provisioned at the same time can carry the join token in their
    /// configuration file before the cluster exists.
    pub async fn init_cluster_with(
        &self,
        data_path_port: u16,
        prepared: Option<Prepared>,
    ) -> Result<(), InitError> {
        self.create_cluster(data_path_port, prepared).await?;
        self.enable_tls()?;
        Ok(())
    }

    async fn create_cluster(&self, data_path_port: u16, prepared: Option<Prepared>) -> Result<(), InitError> {
        self.node.initialize().await?;
        if self.node.wait_for_leader(Duration::from_secs(10)).await.is_none() {
            return Err(InitError::NoLeader(10));
        }
        let existing = self.node.read(Consistency::Linearizable, |s| s.cluster().map(|c| c.id.clone())).await;
        match existing {
            Ok(Some(_)) => return self.ensure_certificate(shoal_pki::Role::Manager).await,
            Ok(None) => {}
            Err(e) => return Err(InitError::Write(WriteError::Unavailable(e.to_string()))),
        }
        let (cluster_id, ca, worker_token, manager_token) = match prepared {
            Some(p) => (p.ca.cluster_id().to_string(), p.ca, p.worker_token, p.manager_token),
            None => {
                let cluster_id = random_id();
                let ca = shoal_pki::Ca::generate(&cluster_id)?;
                let worker_token = shoal_pki::JoinToken::generate(&ca.digest())?.to_string();
                let manager_token = shoal_pki::JoinToken::generate(&ca.digest())?.to_string();
                (cluster_id, ca, worker_token, manager_token)
            }
        };
        let cluster = ClusterObject {
            id: cluster_id,
            created_at: Timestamp::ZERO,
            ca_cert_pem: ca.cert_pem().to_string(),
            ca_key_pem: ca.key_pem().to_string(),
            worker_token,
            manager_token,
            data_path_port,
        };
        self.node.write(Command::InitCluster { cluster: Box::new(cluster) }).await?;
        tracing::info!("cluster initialized with a new root CA");
        self.ensure_certificate(shoal_pki::Role::Manager).await
    }

    /// `cluster init --restore`: a new cluster with this manager as its only member whose state
    /// is a backup's (same CA and tokens, so the old cluster's workers keep their certificates;
    /// services, tasks, networks, the key-value store). The old cluster's managers are removed
    /// (see `ClusterState::restore_backup`). The caller has checked the backup (checksum,
    /// format) before: a refusal here leaves an initialized cluster without state, which a
    /// plain `cluster init` or another restore can still finish.
    pub async fn restore_cluster(&self, backup: shoal_state::Snapshot) -> Result<(), InitError> {
        self.node.initialize().await?;
        if self.node.wait_for_leader(Duration::from_secs(10)).await.is_none() {
            return Err(InitError::NoLeader(10));
        }
        let existing = self.node.read(Consistency::Linearizable, |s| s.cluster().map(|c| c.id.clone())).await;
        match existing {
            Ok(Some(id)) => return Err(InitError::AlreadyInitialized(id)),
            Ok(None) => {}
            Err(e) => return Err(InitError::Write(WriteError::Unavailable(e.to_string()))),
        }
        let id = backup.cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default();
        self.node.write(Command::RestoreBackup { snapshot: Box::new(backup) }).await?;
        tracing::info!(cluster = %id, "cluster restored from a backup");
        self.ensure_certificate(shoal_pki::Role::Manager).await?;
        self.enable_tls()?;
        Ok(())
    }

    /// Makes sure this node has a certificate signed by the cluster CA (the key is made here and
    /// never leaves the node). Managers sign their own; workers get theirs when they join.
    pub async fn ensure_certificate(&self, role: shoal_pki::Role) -> Result<(), InitError> {
        let cert_path = self.tls_dir.join("node.crt");
        if cert_path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.tls_dir).map_err(|e| InitError::Io(self.tls_dir.clone(), e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.tls_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| InitError::Io(self.tls_dir.clone(), e))?;
        }
        let ca = self.cluster_ca().await?;
        let node_id = self.node.config().node.node_id.clone();
        let (key, csr) = shoal_pki::generate_key_and_csr(&node_id)?;
        let cert = ca.issue(&csr, &node_id, role, self.cert_validity(), SystemTime::now())?;
        shoal_pki::write_private_file(self.tls_dir.join("node.key"), key)?;
        shoal_pki::write_public_file(self.tls_dir.join("ca.crt"), ca.cert_pem())?;
        shoal_pki::write_public_file(&cert_path, cert)?;
        Ok(())
    }

    /// A heartbeat from `node_id` reached this manager: the period the node should send the
    /// next one after (the node is down after `MISSED_HEARTBEATS` of these without one).
    pub fn record_heartbeat(&self, node_id: &str) -> Duration {
        shoal_metrics::metrics().dispatcher_heartbeats.inc();
        let period = self.heartbeat_period();
        let mut h = self.heartbeats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        h.insert(node_id.to_string(), (std::time::Instant::now(), period));
        period
    }

    /// What the dispatcher's long polls wait on.
    pub fn changes(&self) -> &changes::Changes {
        &self.changes
    }

    /// The period nodes are told to heartbeat at now ([`heartbeat_period`] of the node count).
    pub fn heartbeat_period(&self) -> Duration {
        Duration::from_millis(self.heartbeat_period_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Records that this node joined as a worker (its certificate is in `tls_dir`).
    pub fn set_joined_as_worker(&self, managers: Vec<String>) {
        self.joined_as_worker.send_replace(Some(managers));
    }

    /// Asks the daemon to leave the cluster (after the membership change is done).
    pub fn request_leave(&self) {
        self.leave.send_replace(true);
    }

    pub fn leave_requested(&self) -> watch::Receiver<bool> {
        self.leave.subscribe()
    }

    pub fn joined_as_worker(&self) -> watch::Receiver<Option<Vec<String>>> {
        self.joined_as_worker.subscribe()
    }

    pub fn tls_dir(&self) -> &std::path::Path {
        &self.tls_dir
    }

    /// Once this node has a certificate: switches the Raft transport on and returns the server
    /// configuration for the node-to-node listener (client certificates optional, so a joining
    /// node can reach the join endpoint; every other endpoint checks the peer's identity).
    pub fn enable_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, InitError> {
        let dir = &self.tls_dir;
        if !dir.join("node.crt").exists() {
            return Ok(None);
        }
        let ca = shoal_pki::read_pem_file(dir.join("ca.crt"))?;
        let cert = shoal_pki::read_pem_file(dir.join("node.crt"))?;
        let key = shoal_pki::read_pem_file(dir.join("node.key"))?;
        let client = shoal_pki::client_config(&ca, &cert, &key)?;
        let server = shoal_pki::server_config(&ca, &cert, &key, shoal_pki::ClientAuth::Optional)?;
        *self.client_tls.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(client.clone());
        self.network.set(client);
        self.server_tls.send_replace(Some(server.clone()));
        Ok(Some(server))
    }

    /// Watches for the node-to-node listener's TLS configuration (set by `enable_tls`).
    pub fn server_tls(&self) -> watch::Receiver<Option<Arc<rustls::ServerConfig>>> {
        self.server_tls.subscribe()
    }

    /// The mTLS client configuration, once this node has a certificate.
    pub fn client_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.client_tls.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Lifetime of the certificates this manager issues (default 90 days).
    /// Records where this manager serves the TCP API (once, at start).
    pub fn set_api_addr(&self, addr: String) {
        let _ = self.api_addr.set(addr);
    }

    /// Where this manager serves the TCP API, if it does.
    pub fn api_addr(&self) -> Option<&str> {
        self.api_addr.get().map(String::as_str)
    }

    pub fn set_cert_validity(&self, d: Duration) {
        self.cert_validity_secs.store(d.as_secs().max(1), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn cert_validity(&self) -> Duration {
        Duration::from_secs(self.cert_validity_secs.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The cluster CA from this replica (it never changes after `cluster init`).
    async fn cluster_ca(&self) -> Result<shoal_pki::Ca, InitError> {
        let (cert, key) = self
            .node
            .read(Consistency::Stale, |s| s.cluster().map(|c| (c.ca_cert_pem.clone(), c.ca_key_pem.clone())))
            .await
            .map_err(|e| InitError::Write(WriteError::Unavailable(e.to_string())))?
            .ok_or(InitError::NoCa)?;
        Ok(shoal_pki::Ca::from_pem(&cert, &key)?)
    }

    /// Replaces this manager's certificate with a new one (new key, signed by the cluster CA)
    /// and switches the transport and the listener to it; connections already open keep theirs.
    pub async fn renew_certificate(&self) -> Result<(), InitError> {
        self.replace_certificate(shoal_pki::Role::Manager).await?;
        self.enable_tls()?;
        Ok(())
    }

    /// Writes a new key and a certificate with `role` for this node (crash-safe, like a renewal)
    /// without switching the transport: a demoted manager uses it when it restarts as a worker.
    pub async fn replace_certificate(&self, role: shoal_pki::Role) -> Result<(), InitError> {
        let ca = self.cluster_ca().await?;
        let node_id = self.node.config().node.node_id.clone();
        let (key, csr) = shoal_pki::generate_key_and_csr(&node_id)?;
        let cert = ca.issue(&csr, &node_id, role, self.cert_validity(), SystemTime::now())?;
        // Both new files first, then the renames (key, then certificate): a crash at any point
        // leaves either the old pair or a pair that `finish_renewal` completes on the next start.
        let dir = &self.tls_dir;
        shoal_pki::write_private_file(dir.join("node.key.new"), key)?;
        shoal_pki::write_public_file(dir.join("node.crt.new"), cert)?;
        finish_renewal(dir).map_err(|e| InitError::Io(dir.clone(), e))?;
        Ok(())
    }

    /// Signs a renewal for another node (a worker renews through a manager; it cannot sign
    /// itself): same node id and role as its current certificate, a new key. A node that was
    /// removed from the cluster gets nothing.
    pub async fn sign_renewal(
        &self,
        node_id: &str,
        role: shoal_pki::Role,
        desired: Option<NodeRole>,
        csr_pem: &str,
    ) -> Result<String, InitError> {
        // `desired` comes from the committed state (a linearizable read by the caller): a role is
        // never decided on a lagging replica.
        let desired = desired.ok_or_else(|| InitError::NotAMember(node_id.to_string()))?;
        // A node's role follows its spec: a promoted worker renews into a manager certificate, a
        // demoted manager into a worker one.
        let role = match (role, desired) {
            (shoal_pki::Role::Manager | shoal_pki::Role::Worker, shoal_types::NodeRole::Manager) => {
                shoal_pki::Role::Manager
            }
            (shoal_pki::Role::Manager | shoal_pki::Role::Worker, shoal_types::NodeRole::Worker) => {
                shoal_pki::Role::Worker
            }
            (other, _) => other,
        };
        let ca = self.cluster_ca().await?;
        Ok(ca.issue(csr_pem, node_id, role, self.cert_validity(), SystemTime::now())?)
    }

    /// Adds a manager that joined: first as a learner (it catches up), then as a voter.
    pub async fn add_manager(&self, raft_id: RaftId, node: ManagerNode) -> Result<(), WriteError> {
        self.node.add_learner(raft_id, node).await?;
        let mut voters: std::collections::BTreeSet<RaftId> =
            self.node.status().voters.keys().copied().collect();
        voters.insert(raft_id);
        self.node.change_voters(voters).await
    }

    /// Admits a joining node: checks the presented join token against the cluster's tokens (in
    /// constant time; the token decides the role) and signs the node's CSR. The node made its key
    /// itself; only the certificate travels. Never logs the token.
    ///
    /// `cluster` and `node_exists` must come from a linearizable read (on a follower: with the
    /// leader's read index), so a rotated token is refused everywhere at once.
    pub fn admit(
        &self,
        cluster: Option<ClusterObject>,
        node_exists: bool,
        token: &str,
        csr_pem: &str,
        node_id: &str,
    ) -> Result<Admission, JoinError> {
        let presented: shoal_pki::JoinToken = token.parse().map_err(|_| JoinError::BadToken)?;
        let cluster = cluster.ok_or(JoinError::NotInitialized)?;
        let matches = |t: &str| t.parse::<shoal_pki::JoinToken>().is_ok_and(|t| t.matches(&presented));
        let role = if matches(&cluster.manager_token) {
            shoal_pki::Role::Manager
        } else if matches(&cluster.worker_token) {
            shoal_pki::Role::Worker
        } else {
            return Err(JoinError::BadToken);
        };
        if node_exists {
            return Err(JoinError::AlreadyMember(node_id.to_string()));
        }
        let ca =
            shoal_pki::Ca::from_pem(&cluster.ca_cert_pem, &cluster.ca_key_pem).map_err(JoinError::Pki)?;
        let cert_pem = ca
            .issue(csr_pem, node_id, role, self.cert_validity(), SystemTime::now())
            .map_err(JoinError::Pki)?;
        Ok(Admission { role, cert_pem, ca_pem: cluster.ca_cert_pem })
    }

    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        self.node.shutdown().await;
    }
}

/// Completes a certificate renewal that a crash interrupted (see `renew_certificate`): a new
/// certificate that was fully written is moved in place with its key; a lone new key (the crash
/// came before the certificate was written) is discarded.
pub fn finish_renewal(tls_dir: &std::path::Path) -> std::io::Result<()> {
    let (key_new, crt_new) = (tls_dir.join("node.key.new"), tls_dir.join("node.crt.new"));
    if crt_new.exists() {
        if key_new.exists() {
            std::fs::rename(&key_new, tls_dir.join("node.key"))?;
        }
        std::fs::rename(&crt_new, tls_dir.join("node.crt"))?;
    } else if key_new.exists() {
        std::fs::remove_file(&key_new)?;
    }
    Ok(())
}

/// A new random object id.
pub fn random_id() -> String {
    let (a, b) = (random_seed(), random_seed());
    shoal_types::id::id_from_bits(a, b)
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // The brain needs a seed, not secrecy; fall back to the clock if the OS source fails.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return Timestamp::from_system_time(SystemTime::now()).as_nanos();
    }
    u64::from_le_bytes(b)
}

/// The leader's liveness check: a ready node whose heartbeats stopped for `MISSED_HEARTBEATS`
/// of the periods it was told is marked down (the orchestrators then move its replicated tasks); a down node that
/// heartbeats again is marked ready (and told to stop what it no longer owns). A new leader
/// gives every node a full grace period from the moment it took over.
async fn liveness(m: Arc<Manager>, mut stop: watch::Receiver<bool>) {
    let mut leading_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL / 2) => {}
            _ = stop.changed() => return,
        }
        if !m.node.is_leader() {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(std::time::Instant::now);
        reconcile_membership(&m).await;
        let now = std::time::Instant::now();
        let seen = m.heartbeats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let me = m.node.config().node.node_id.clone();
        // Managers that answer none of the leader's Raft RPCs (heartbeats every 100 ms) are down
        // sooner than the dispatcher's heartbeat grace would tell.
        let cut_off: std::collections::BTreeMap<String, String> = {
            let failing = m.network.contacts().unreachable(MANAGER_UNREACHABLE);
            let status = m.node.status();
            status
                .voters
                .iter()
                .chain(status.learners.iter())
                .filter_map(|(id, n)| failing.get(id).map(|e| (n.node_id.clone(), e.clone())))
                .collect()
        };
        let nodes: Vec<(shoal_types::NodeId, shoal_types::NodeState)> = {
            let d = m.node.local_state();
            d.state.nodes().map(|n| (n.id.clone(), n.status.state)).collect()
        };
        let period = heartbeat_period(nodes.len());
        m.heartbeat_period_ms.store(period.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
        // A node not heard from since this manager leads may still be on the period an earlier
        // leader told it: the current one, as the cluster's size decides both.
        let grace = period * MISSED_HEARTBEATS;
        for (id, state) in nodes {
            let unreachable = cut_off.get(id.as_str());
            let alive = id.as_str() == me
                || unreachable.is_none()
                    && (seen.get(id.as_str()).is_some_and(|(t, told)| {
                        now.duration_since(*t) < *told * MISSED_HEARTBEATS && *t >= since
                    }) || now.duration_since(since) < grace && state == shoal_types::NodeState::Ready);
            let want = match (state, alive) {
                (shoal_types::NodeState::Ready, false) => {
                    shoal_metrics::metrics().dispatcher_missed_heartbeats.inc();
                    let why = match unreachable {
                        Some(e) => format!("manager unreachable: {e}"),
                        None => "heartbeat missed".to_string(),
                    };
                    Some((shoal_types::NodeState::Down, why))
                }
                (shoal_types::NodeState::Down | shoal_types::NodeState::Unknown, true) => {
                    Some((shoal_types::NodeState::Ready, String::new()))
                }
                _ => None,
            };
            if let Some((state, message)) = want {
                tracing::info!(node = %id, ?state, "node status changed");
                let cmd = Command::SetNodeStatus { id, state, message };
                if let Err(e) = m.node.write(cmd).await {
                    tracing::warn!(error = %e, "could not record node status");
                }
            }
        }
    }
}

/// The leader keeps the Raft membership in step with the committed node specs: a member whose
/// node the operator demoted (spec role worker) leaves the membership, even if the request that
/// demoted it failed half-way. Promotions are driven by the promoted node (it needs a manager
/// certificate first), so nothing is added here.
async fn reconcile_membership(m: &Manager) {
    let status = m.node.status();
    let demoted: std::collections::BTreeSet<RaftId> = {
        let d = m.node.local_state();
        status
            .voters
            .iter()
            .chain(status.learners.iter())
            .filter(|(_, n)| {
                d.state
                    .node(&shoal_types::NodeId::new(n.node_id.clone()))
                    .is_some_and(|n| n.spec.role == NodeRole::Worker)
            })
            .map(|(id, _)| *id)
            .collect()
    };
    let remaining = status.voters.keys().filter(|v| !demoted.contains(v)).count();
    if demoted.is_empty() || remaining == 0 {
        return;
    }
    tracing::info!(members = ?demoted, "removing demoted managers from the membership");
    if let Err(e) = m.node.remove_members(&demoted).await {
        tracing::warn!(error = %e, "could not remove demoted managers from the membership");
    }
}

/// A task state change the leader makes (created pending, placed, refused by the scheduler),
/// logged once when its plan commits. The node's agent logs the states it observes.
struct StateChange {
    task: shoal_types::TaskId,
    service: shoal_types::ServiceId,
    node: Option<shoal_types::NodeId>,
    state: shoal_types::TaskState,
    message: String,
    err: String,
}

impl StateChange {
    fn log(&self) {
        let node = self.node.as_ref().map_or("", |n| n.as_str());
        let (task, service, state) = (self.task.as_str(), self.service.as_str(), self.state.as_str());
        if self.err.is_empty() {
            tracing::info!(task, service, node, state, detail = %self.message, "task state");
        } else {
            tracing::warn!(task, service, node, state, detail = %self.message, error = %self.err, "task state");
        }
    }
}

fn state_changes(state: &shoal_state::ClusterState, plan: &shoal_state::Plan) -> Vec<StateChange> {
    let mut out = Vec::new();
    for t in &plan.create_tasks {
        out.push(StateChange {
            task: t.id.clone(),
            service: t.service_id.clone(),
            node: t.node_id.clone(),
            state: t.status.state,
            message: t.status.message.clone(),
            err: t.status.err.clone(),
        });
    }
    let created = |id: &shoal_types::TaskId| plan.create_tasks.iter().find(|t| &t.id == id);
    for a in &plan.assign {
        let service = state
            .task(&a.task_id)
            .map(|t| t.service_id.clone())
            .or_else(|| created(&a.task_id).map(|t| t.service_id.clone()));
        if let Some(service) = service {
            out.push(StateChange {
                task: a.task_id.clone(),
                service,
                node: Some(a.node_id.clone()),
                state: shoal_types::TaskState::Assigned,
                message: "scheduler assigned task to node".into(),
                err: String::new(),
            });
        }
    }
    for c in &plan.set_status {
        let Some(t) = state.task(&c.task_id) else { continue };
        // Only real state changes (a pending task whose explanation changed stays pending).
        if t.status.state != c.status.state || t.status.err != c.status.err {
            out.push(StateChange {
                task: t.id.clone(),
                service: t.service_id.clone(),
                node: t.node_id.clone(),
                state: c.status.state,
                message: c.status.message.clone(),
                err: c.status.err.clone(),
            });
        }
    }
    out
}

/// The most tasks one plan write creates (about 1 KiB each in the log: entries of about 2 MB).
const MAX_CREATES_PER_WRITE: usize = 2048;

/// Splits a plan that creates more than [`MAX_CREATES_PER_WRITE`] tasks into several writes,
/// committed in order: the first ones only create tasks, the last creates the rest and carries
/// everything else. One entry of 10,000 new tasks (about 10 MB) took longer to replicate on a
/// busy machine than the followers' election timeout, and three managers then elected leaders
/// in turn without end (BENCHMARKS.md, the load test). Parts of about 2 MB replicate in time,
/// and few enough of them keep one manager's create as fast as one entry (each part wakes the
/// nodes' polls again: parts of 512 doubled it). Every part keeps the plan's base: a part's creates are in slots no earlier
/// part touches, and the service changes nothing before the last part, so verification judges
/// each part as it would the whole. A leader lost between parts leaves some tasks created; the
/// next pass plans the rest from the state. A plan with scheduled jobs' records stays whole (a
/// run and its tasks commit together).
fn split_plan(mut plan: shoal_state::Plan) -> Vec<shoal_state::Plan> {
    if plan.create_tasks.len() <= MAX_CREATES_PER_WRITE || !plan.job_updates.is_empty() {
        return vec![plan];
    }
    let mut creates = std::mem::take(&mut plan.create_tasks);
    let mut out = Vec::new();
    while creates.len() > MAX_CREATES_PER_WRITE {
        let rest = creates.split_off(MAX_CREATES_PER_WRITE);
        out.push(shoal_state::Plan {
            base_index: plan.base_index,
            create_tasks: creates,
            ..Default::default()
        });
        creates = rest;
    }
    plan.create_tasks = creates;
    out.push(plan);
    out
}

/// The leader's control loop. A pass looks at the services that changed since the last one
/// (`shoal_core::tick_scoped`: 0.7 ms for one changed service among 100,000 tasks, against
/// 166 ms for every service), and at all of them when something scheduled falls due, after a
/// change to anything but services and tasks, when a plan did not commit whole, and at least
/// every [`shoal_core::FULL_PASS_INTERVAL`] (`shoal_core::NextPass` decides, as in the simulator).
async fn controllers(m: Arc<Manager>, mut stop: watch::Receiver<bool>) {
    let mut raft: RaftWatch = m.node.watch();
    let mut events = m.node.subscribe();
    let min_gap = Duration::from_millis(20);
    let mut next = shoal_core::NextPass::default();
    loop {
        if *stop.borrow() {
            return;
        }
        if !m.node.is_leader() {
            next = shoal_core::NextPass::default();
            tokio::select! {
                _ = raft.changed() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let now = Timestamp::from_system_time(SystemTime::now());
        let metrics = shoal_metrics::metrics();
        let started = std::time::Instant::now();
        let term = m.node.status().term;
        let pass = {
            let d = m.node.local_state();
            let scope = next.take(&d.state, term, now);
            (!scope.is_empty()).then(|| {
                let tick = shoal_core::tick_scoped(&d.state, now, random_seed(), &scope);
                let changes = state_changes(&d.state, &tick.plan);
                (scope, tick, changes)
            })
        };
        if let Some((scope, tick, changes)) = pass {
            metrics.scheduler_plan_seconds.observe(started.elapsed().as_secs_f64());
            next.passed(&scope, tick.wake_at);
            if !tick.plan.is_empty() && !commit_plan(&m, tick.plan, &changes).await {
                // What did not commit is planned again from the whole state.
                next.look_at_everything();
            }
        }
        let wait = next.wait(now, m.max_pass_interval);
        tokio::select! {
            _ = tokio::time::sleep(wait.max(min_gap)) => {}
            r = events.recv() => {
                match r {
                    Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(_)) => next.look_at_everything(),
                    Ok(e) => next.note(&e.object),
                }
                // Batch a burst of changes into one pass.
                tokio::time::sleep(min_gap).await;
                loop {
                    match events.try_recv() {
                        Ok(e) => next.note(&e.object),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => next.look_at_everything(),
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(broadcast::error::TryRecvError::Closed) => return,
                    }
                }
            }
            _ = raft.changed() => {}
            _ = stop.changed() => {}
        }
    }
}

/// Commits a pass's plan (in parts, see [`split_plan`]) and logs what it changed. Returns
/// whether all of it was committed (no part failed, no item refused).
async fn commit_plan(m: &Manager, plan: shoal_state::Plan, changes: &[StateChange]) -> bool {
    let metrics = shoal_metrics::metrics();
    let items = plan.len();
    let restarts =
        plan.create_tasks.iter().filter(|t| t.restart_history.last() == Some(&t.created_at)).count();
    let started = std::time::Instant::now();
    let mut written: Result<shoal_raft::Response, shoal_raft::WriteError> =
        Ok(shoal_raft::Response::default());
    for part in split_plan(plan) {
        match m.node.write(Command::ApplyPlan { plan: part }).await {
            Ok(r) => {
                if let Ok(all) = &mut written {
                    all.rejected.extend(r.rejected);
                    all.index = r.index;
                }
            }
            Err(e) => {
                written = Err(e);
                break;
            }
        }
    }
    metrics.scheduler_plan_commit_seconds.observe(started.elapsed().as_secs_f64());
    if let Ok(r) = &written {
        for c in changes.iter().filter(|c| !r.rejected.iter().any(|(i, _)| i.task_id() == Some(&c.task))) {
            c.log();
            if c.state == shoal_types::TaskState::Assigned {
                metrics.scheduler_placements.inc();
            }
        }
        if !r.rejected.iter().any(|(i, _)| matches!(i, shoal_state::PlanItem::Create(_))) {
            metrics.task_restarts.inc_by(restarts as u64);
        }
    }
    match written {
        Ok(r) if !r.rejected.is_empty() => {
            tracing::debug!(items, rejected = r.rejected.len(), "plan partly rejected");
            false
        }
        Ok(_) => {
            tracing::debug!(items, "plan committed");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "plan not committed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{finish_renewal, heartbeat_period};
    use std::time::Duration;

    #[test]
    fn large_plans_are_written_in_parts_with_everything_else_last() {
        let task = |i: usize| -> shoal_types::Task {
            serde_json::from_value(serde_json::json!({
                "id": format!("t{i}"), "version": 0, "created_at": "1970-01-01T00:00:00Z",
                "updated_at": "1970-01-01T00:00:00Z", "service_id": "s1", "slot": i, "spec": {},
                "spec_version": 1, "desired_state": "running", "status": {},
            }))
            .expect("a task")
        };
        let mut plan = shoal_state::Plan { base_index: 7, ..Default::default() };
        plan.create_tasks = (0..4_200).map(task).collect();
        plan.delete_tasks.push((shoal_types::TaskId::new("old"), 3));
        let parts = super::split_plan(plan.clone());
        assert_eq!(parts.iter().map(|p| p.create_tasks.len()).collect::<Vec<_>>(), [2048, 2048, 104]);
        assert!(parts.iter().all(|p| p.base_index == 7));
        assert!(parts[..2].iter().all(|p| p.delete_tasks.is_empty()), "other items go last");
        assert_eq!(parts[2].delete_tasks, plan.delete_tasks);
        let order: Vec<_> = parts.iter().flat_map(|p| p.create_tasks.iter().map(|t| t.id.clone())).collect();
        assert_eq!(order, plan.create_tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>());
        plan.create_tasks.truncate(2048);
        assert_eq!(super::split_plan(plan.clone()), vec![plan], "a small plan stays whole");
    }

    #[test]
    fn heartbeat_period_grows_with_the_cluster_past_200_nodes() {
        let s = Duration::from_secs;
        for (nodes, want) in [(0, s(1)), (3, s(1)), (200, s(1)), (300, Duration::from_millis(1500))] {
            assert_eq!(heartbeat_period(nodes), want, "{nodes} nodes");
        }
        assert_eq!(heartbeat_period(1_000), s(5), "SwarmKit's period at 1,000 nodes");
        assert_eq!(heartbeat_period(5_000), s(25));
        assert_eq!(heartbeat_period(100_000), s(30), "capped");
        assert_eq!(heartbeat_period(usize::MAX), s(30), "no overflow");
    }

    fn setup(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            std::fs::write(d.path().join(name), content).expect("write");
        }
        d
    }

    fn read(d: &tempfile::TempDir, name: &str) -> Option<String> {
        std::fs::read_to_string(d.path().join(name)).ok()
    }

    #[test]
    fn interrupted_renewals_end_with_a_matching_pair() {
        // Crash after both new files were written, before any rename: the new pair wins.
        let d =
            setup(&[("node.key", "k1"), ("node.crt", "c1"), ("node.key.new", "k2"), ("node.crt.new", "c2")]);
        finish_renewal(d.path()).expect("repair");
        assert_eq!((read(&d, "node.key"), read(&d, "node.crt")), (Some("k2".into()), Some("c2".into())));
        // Crash between the two renames: the key is new, the certificate follows.
        let d = setup(&[("node.key", "k2"), ("node.crt", "c1"), ("node.crt.new", "c2")]);
        finish_renewal(d.path()).expect("repair");
        assert_eq!((read(&d, "node.key"), read(&d, "node.crt")), (Some("k2".into()), Some("c2".into())));
        // Crash before the new certificate existed: the old pair stays, the stray key goes.
        let d = setup(&[("node.key", "k1"), ("node.crt", "c1"), ("node.key.new", "k2")]);
        finish_renewal(d.path()).expect("repair");
        assert_eq!((read(&d, "node.key"), read(&d, "node.crt")), (Some("k1".into()), Some("c1".into())));
        assert_eq!(read(&d, "node.key.new"), None);
        // Nothing to do.
        let d = setup(&[("node.key", "k1"), ("node.crt", "c1")]);
        finish_renewal(d.path()).expect("repair");
        assert_eq!(read(&d, "node.crt"), Some("c1".into()));
    }
}
