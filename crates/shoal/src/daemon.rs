//! `shoal daemon` and `shoal dev`: one node — a Raft manager with the leader's controllers and the
//! API on a unix socket. The node registers itself (hostname, platform, CPUs, memory) once the
//! cluster has a leader. The task agent and its drivers arrive with the agent issue; until then
//! the node offers no driver, so the scheduler explains why tasks stay pending.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shoal_manager::{Manager, ManagerNode, NodeConfig};
use shoal_raft::RaftNode;
use shoal_state::Command;
use shoal_types::{
    Node, NodeDescription, NodeId, NodeRole, NodeSpec, NodeState, NodeStatus, Platform, Resources, Timestamp,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct DaemonArgs {
    pub data_dir: PathBuf,
    /// Node-to-node (mTLS) listener.
    pub listen_addr: String,
    /// Lifetime of the node certificates this manager issues.
    pub cert_ttl: Duration,
    pub api_socket: PathBuf,
    pub advertise_addr: String,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Create a single-node cluster if this node is not in one yet (`shoal dev`).
    pub init: bool,
}

/// Who this node is; created once and kept in the data directory.
#[derive(Serialize, Deserialize)]
struct Identity {
    node_id: String,
    raft_id: u64,
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow::anyhow!("the OS random source failed"))?;
    Ok(b)
}

fn load_or_create_identity(dir: &Path) -> Result<Identity> {
    let path = dir.join("node.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()));
    }
    let b = random_bytes::<24>()?;
    let hi = u64::from_le_bytes(b[..8].try_into()?);
    let lo = u64::from_le_bytes(b[8..16].try_into()?);
    let raft_id = u64::from_le_bytes(b[16..].try_into()?) >> 1; // keep it positive in JSON tooling
    let id = Identity { node_id: shoal_types::id::id_from_bits(hi, lo), raft_id };
    let tmp = dir.join("node.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&id)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn memory_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn describe(hostname: String, labels: BTreeMap<String, String>) -> NodeDescription {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    NodeDescription {
        hostname,
        platform: Platform { os: std::env::consts::OS.into(), arch: std::env::consts::ARCH.into() },
        resources: Resources {
            nano_cpus: cpus * shoal_types::NANO_CPUS_PER_CPU,
            memory_bytes: memory_bytes(),
            generic: BTreeMap::new(),
        },
        drivers: Vec::new(),
        engine_version: env!("CARGO_PKG_VERSION").into(),
        engine_labels: labels,
    }
}

pub async fn run(args: DaemonArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let identity = load_or_create_identity(&args.data_dir)?;
    let me = ManagerNode { addr: args.advertise_addr.clone(), node_id: identity.node_id.clone() };
    let cfg = NodeConfig::new(args.data_dir.join("raft"), identity.raft_id, me.clone());
    let network = shoal_raft::LazyTlsNetwork::default();
    let tls_dir = args.data_dir.join("tls");
    if tls_dir.exists() {
        shoal_manager::finish_renewal(&tls_dir).context("completing an interrupted certificate renewal")?;
    }
    if tls_dir.join("node.crt").exists() {
        // A node that is already in a cluster talks TLS from its first Raft message.
        let read = |f: &str| shoal_pki::read_pem_file(tls_dir.join(f));
        let client = shoal_pki::client_config(&read("ca.crt")?, &read("node.crt")?, &read("node.key")?)
            .context("loading this node's certificate")?;
        network.set(client);
    }
    let raft = RaftNode::start(cfg, network.clone()).await.context("starting the raft member")?;
    let in_cluster = tls_dir.join("node.crt").exists();
    let manager = Manager::start(raft, network, tls_dir);
    manager.set_cert_validity(args.cert_ttl);
    let listener = tokio::net::TcpListener::bind(&args.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
    tokio::spawn(serve_node_to_node(manager.clone(), listener));
    manager.enable_tls().context("loading this node's certificate")?;
    if args.init && !in_cluster {
        manager.init_cluster().await.context("initializing the cluster")?;
        manager.enable_tls().context("loading this node's certificate")?;
    }
    tracing::info!(node_id = %identity.node_id, socket = %args.api_socket.display(), "shoal daemon started");

    let description = describe(args.hostname.clone().unwrap_or_else(hostname), args.labels.clone());
    tokio::spawn(shoal_api::internal::heartbeat_loop(manager.clone()));
    tokio::spawn(renew_certificates(manager.clone()));
    tokio::spawn(register_self(manager.clone(), NodeId::new(identity.node_id.clone()), description, me));

    let api = {
        let socket = args.api_socket.clone();
        let m = manager.clone();
        tokio::spawn(async move { shoal_api::serve_unix(&socket, m).await })
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = api => {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e).with_context(|| format!("API socket {}", args.api_socket.display())),
                Err(e) => return Err(e.into()),
            }
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = term.recv() => tracing::info!("terminated, stopping"),
    }
    manager.shutdown().await;
    let _ = std::fs::remove_file(&args.api_socket);
    Ok(())
}

/// Serves Raft and the other node-to-node endpoints over mutual TLS once this node has a
/// certificate. Raft messages are accepted only from current members' manager certificates, so
/// the certificate of a removed manager stops working at once.
async fn serve_node_to_node(m: Arc<Manager>, listener: tokio::net::TcpListener) {
    let mut tls = m.server_tls();
    let cfg = loop {
        if let Some(cfg) = tls.borrow().clone() {
            break cfg;
        }
        if tls.changed().await.is_err() {
            return;
        }
    };
    // Renewed certificates are published on the manager's watch; new connections use the newest.
    let (publish, configs) = tokio::sync::watch::channel(cfg);
    tokio::spawn(async move {
        while tls.changed().await.is_ok() {
            let next = tls.borrow().clone();
            if let Some(c) = next {
                publish.send_replace(c);
            }
        }
    });
    let members = m.clone();
    let authorize = move |id: &shoal_pki::NodeIdentity, _path: &str| {
        let s = members.node.status();
        // A manager that has just joined knows no membership until the leader's first message
        // reaches it: until then any manager certificate of this cluster's CA may talk Raft to it.
        (s.voters.is_empty() && s.learners.is_empty())
            || s.voters.values().chain(s.learners.values()).any(|n| n.node_id == id.node_id)
    };
    shoal_raft::transport::serve_tls_reloading(
        listener,
        configs,
        shoal_api::internal::internal_router(m),
        authorize,
    )
    .await;
}

/// Renews this node's certificate at a random point between 50% and 80% of its lifetime
/// (counted from its issue, not from its back-dated start), forever.
async fn renew_certificates(m: Arc<Manager>) {
    // Nothing to renew until this node has a certificate (after init or join).
    let mut tls = m.server_tls();
    while tls.borrow().is_none() {
        if tls.changed().await.is_err() {
            return;
        }
    }
    loop {
        let path = m.tls_dir().join("node.crt");
        let (not_before, not_after) =
            match shoal_pki::read_pem_file(&path).and_then(|p| shoal_pki::cert_validity(&p)) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read this node's certificate; not renewing it");
                    return;
                }
            };
        let issued = not_before + shoal_pki::CLOCK_SKEW_ALLOWANCE;
        let start = if issued < not_after { issued } else { not_before };
        let fraction =
            random_bytes::<8>().map_or(0.5, |b| (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64);
        let at = shoal_pki::renewal_at(start, not_after, fraction);
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        match m.renew_certificate().await {
            Ok(()) => tracing::info!("node certificate renewed"),
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; retrying in 5s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Registers this node (its description, as of this start) once a leader exists. Its manager
/// status is not stored: the API derives it from the Raft membership.
async fn register_self(m: Arc<Manager>, id: NodeId, description: NodeDescription, me: ManagerNode) {
    let mut raft = m.node.watch();
    loop {
        if m.node.status().leader.is_some() {
            let node = Node {
                id: id.clone(),
                version: 0,
                created_at: Timestamp::ZERO,
                updated_at: Timestamp::ZERO,
                spec: NodeSpec { role: NodeRole::Manager, ..Default::default() },
                description: description.clone(),
                status: NodeStatus { state: NodeState::Ready, addr: me.addr.clone(), message: String::new() },
                manager_status: None,
            };
            match shoal_api::internal::write(&m, Command::RegisterNode { node: Box::new(node) }).await {
                Ok(_) => return,
                Err(e) => tracing::debug!(error = %e, "node registration deferred"),
            }
        }
        // Try again when Raft's view changes (a leader appears), or after a moment.
        tokio::select! {
            _ = raft.changed() => {}
            _ = tokio::time::sleep(shoal_manager::HEARTBEAT_INTERVAL) => {}
        }
    }
}
