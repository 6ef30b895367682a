//! `shoal daemon` and `shoal dev`: one node. A manager runs a Raft member with the leader's
//! controllers, the API on a unix socket, and its own agent (talking to the dispatcher
//! in-process). A worker (a node whose certificate says so) runs only the agent, which talks to the
//! managers' dispatcher over mutual TLS, and a unix socket that sends commands to a manager. The
//! agent registers the node (hostname, platform, CPUs, memory, drivers) once a leader exists.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shoal_agent::{Agent, AgentConfig};
use shoal_api::dispatcher::{LocalPlane, RemotePlane};
use shoal_manager::{Manager, ManagerNode, NodeConfig};
use shoal_raft::RaftNode;
use shoal_types::NodeId;
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
    pub raft_timing: RaftTiming,
    pub api_socket: PathBuf,
    pub advertise_addr: String,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Create a single-node cluster if this node is not in one yet (`shoal dev`, or `init = true`
    /// in the configuration file).
    pub init: bool,
    /// The overlay's VXLAN port when this node creates the cluster.
    pub init_data_path_port: u16,
    /// The CA and tokens made beforehand (`shoal cluster prepare`) for `init`.
    pub prepared: Option<shoal_manager::Prepared>,
    /// Join this cluster on first boot (the configuration file's `[join]`).
    pub join: Option<JoinPlan>,
    /// Generic resources the node offers (`--resource gpu=2`).
    pub resources: BTreeMap<String, u64>,
    /// Where a manager serves the `/v1` API over TCP with mutual TLS (client certificates
    /// required); none: only the root socket.
    pub api_addr: Option<String>,
    /// Where the web UI (managers) and `/metrics` (every node) are served; none: off.
    pub ui_addr: Option<String>,
    /// Where to serve the Docker Engine API (`shoal_docker`); none: off.
    pub docker_socket: Option<PathBuf>,
    /// Where to serve the etcd v3 API (`shoal_etcd`); none: off.
    pub etcd_addr: Option<String>,
    /// `etcd_addr` is the default: a port in use then only turns it off (with a warning).
    pub etcd_addr_is_default: bool,
    /// Where a manager also serves Chronos's REST API; none: only on the UI's address.
    pub chronos_addr: Option<String>,
}

/// Raft's timers, from `--heartbeat-interval` and `--election-timeout` (see `BENCHMARKS.md`,
/// "Leader failover", for how the defaults were measured).
///
/// openraft 0.9 has no pre-vote; its leader lease does that job: a voter refuses to vote while it
/// heard from a leader within `election_timeout_max`, and a follower stands for election only
/// after that lease plus its own randomized timeout (`election_timeout_min..max`) pass without a
/// heartbeat. With the election timeout E as the lease and 0.6·E as the lowest timeout, a leader's
/// loss is noticed after 1.6–2·E (plus up to one tick of 1.5 heartbeats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
}

impl RaftTiming {
    pub fn new(heartbeat: Duration, election: Duration) -> anyhow::Result<RaftTiming> {
        let hb = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX);
        let et = u64::try_from(election.as_millis()).unwrap_or(u64::MAX);
        if !(10..=5_000).contains(&hb) {
            anyhow::bail!("--heartbeat-interval must be between 10ms and 5s, got {hb}ms");
        }
        if et > 60_000 {
            anyhow::bail!("--election-timeout must be at most 60s, got {et}ms");
        }
        if et < 4 * hb {
            anyhow::bail!(
                "--election-timeout ({et}ms) must be at least 4 heartbeat intervals ({}ms): a follower must not \
                 start an election because one or two heartbeats came late",
                4 * hb
            );
        }
        Ok(RaftTiming { heartbeat_ms: hb, election_timeout_ms: (et * 3 / 5, et) })
    }
}

/// `[join]` of the configuration file: the managers to ask, in order, and the token.
pub struct JoinPlan {
    pub managers: Vec<String>,
    pub token: String,
}

/// Joins the cluster on first boot (a node already in one does nothing): asks each manager in
/// turn, again and again with a growing pause (the managers may be booting too), until one
/// admits this node or the token is refused.
async fn join_on_first_boot(m: Arc<Manager>, plan: JoinPlan) {
    use shoal_api::join::JoinClusterError as E;
    let mut pause = Duration::from_millis(250);
    loop {
        for addr in &plan.managers {
            match shoal_api::join::join_cluster(&m, &plan.token, addr).await {
                Ok(()) => {
                    tracing::info!(manager = %addr, "joined the cluster (configuration file)");
                    return;
                }
                Err(E::AlreadyMember) => return,
                Err(e @ E::Token(_)) => {
                    tracing::error!(error = %e, "cannot join the cluster: fix the token in the configuration file");
                    return;
                }
                Err(e) => tracing::warn!(manager = %addr, error = %e, "joining the cluster; will try again"),
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Keeps this manager's data key file as the cluster's autolock setting says: wrapped by the
/// replicated unlock key, or in the clear (the setting looked at every second, the file rewritten
/// only when it changes).
async fn follow_autolock(m: Arc<Manager>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The setting the key file was last made to match (none yet: checked once at start); the
    // file is read again only when the replicated setting changes.
    let mut stored: Option<Option<String>> = None;
    let mut last_error = String::new();
    loop {
        tick.tick().await;
        let want = {
            let local = m.node.local_state();
            if local.state.cluster().is_none() {
                continue;
            }
            local.state.unlock_key().map(str::to_string)
        };
        if stored.as_ref() == Some(&want) {
            continue;
        }
        match m.node.store_key_for(want.as_deref()) {
            Ok(changed) => {
                if changed {
                    let how =
                        if want.is_some() { "wrapped by the unlock key (autolock)" } else { "in the clear" };
                    tracing::info!("this manager's data key is now stored {how}");
                }
                stored = Some(want);
                last_error.clear();
            }
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::error!(error = %e, "cannot store the data key as autolock says");
                }
                last_error = e;
            }
        }
    }
}

/// Binds `--ui-addr` now, so that a wrong or busy address fails the start with a clear message.
async fn bind_ui(addr: &Option<String>) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on --ui-addr {addr} (another daemon there? choose another address, or `--ui-addr off`)")
    })?;
    Ok(Some(l))
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

pub async fn run(mut args: DaemonArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // Claimed first: a daemon that would take over another's socket stops before it starts
    // anything else.
    let socket = shoal_api::ApiSocket::bind(&args.api_socket)?;
    let socket_owner = socket.owner();
    let identity = load_or_create_identity(&args.data_dir)?;
    // Task records of a newer format (a newer Shoal ran here) stop the start, before anything
    // could misread them; the Raft store checks its own when it opens.
    shoal_agent::store::check_formats(&args.data_dir.join("agent").join("tasks"))?;
    let tls_dir = args.data_dir.join("tls");
    if let Some(role) = certified_role(&tls_dir)? {
        if role == shoal_pki::Role::Worker {
            return run_worker(args, identity, tls_dir, socket).await;
        }
    }
    // The Docker API's socket, claimed like the API's (a worker claims it in `run_worker`).
    let docker_socket = args.docker_socket.as_deref().map(shoal_api::ApiSocket::bind).transpose()?;
    let docker_owner = docker_socket.as_ref().map(|s| s.owner());
    let me = ManagerNode { addr: args.advertise_addr.clone(), node_id: identity.node_id.clone() };
    let mut cfg = NodeConfig::new(args.data_dir.join("raft"), identity.raft_id, me.clone());
    cfg.heartbeat_ms = args.raft_timing.heartbeat_ms;
    cfg.election_timeout_ms = args.raft_timing.election_timeout_ms;
    // Autolock: a wrapped data key waits for `shoal cluster unlock` before anything starts.
    let key_path = cfg.data_dir.join("raft.key");
    if shoal_raft::seal::is_locked(&key_path).map_err(anyhow::Error::msg)? {
        tracing::warn!("this manager is locked (autolock): waiting for `shoal cluster unlock`");
        let kp = key_path.clone();
        let try_unlock = Arc::new(move |k: &str| shoal_raft::seal::DataKey::read(&kp, Some(k)).map(|_| ()));
        let key = shoal_api::autolock::serve_locked(&socket, try_unlock)
            .await
            .with_context(|| format!("API socket {}", args.api_socket.display()))?;
        cfg.unlock_key = Some(key);
    }
    let network = shoal_raft::LazyTlsNetwork::default();
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
    let agent_slot: AgentSlot = Arc::new(std::sync::OnceLock::new());
    let services = shoal_api::Services::start(manager.clone(), shoal_api::kv::DEFAULT_RETAINED_REVISIONS);
    let etcd_handoff: EtcdHandoff = Arc::new(std::sync::OnceLock::new());
    {
        // Until this node joins a cluster as a worker (then forwarded to the managers, see
        // `start_agent`).
        let (kv, slot) = (services.kv.clone(), etcd_handoff.clone());
        let backend = move |url| -> Arc<dyn shoal_etcd::EtcdBackend> {
            let handoff = Arc::new(shoal_etcd::remote::Handoff::new(Arc::new(
                shoal_etcd::ClusterBackend::new(kv, url),
            )));
            let _ = slot.set(handoff.clone());
            handoff
        };
        serve_etcd(&args, backend, manager_etcd_tls(manager.clone())).await?;
    }
    if let Some(ui) = bind_ui(&args.ui_addr).await? {
        let (m, slot, services) = (manager.clone(), agent_slot.clone(), services.clone());
        tokio::spawn(async move {
            if let Err(e) = shoal_api::ui::serve(ui, Some(m), slot, Some(services)).await {
                tracing::error!(error = %e, "web UI stopped");
            }
        });
    }
    if let Some(addr) = &args.chronos_addr {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --chronos-addr {addr}"))?;
        let m = manager.clone();
        tokio::spawn(async move {
            if let Err(e) = shoal_api::ui::serve_chronos(l, m).await {
                tracing::error!(error = %e, "Chronos API stopped");
            }
        });
    }
    tokio::spawn(serve_node_to_node(manager.clone(), listener, agent_slot.clone(), services.kv.clone()));
    if let Some(addr) = &args.api_addr {
        // Bound now (a wrong address fails the start); served once this node has a certificate.
        let api_listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --api-addr {addr}"))?;
        manager.set_api_addr(reachable_addr(&api_listener, &args.advertise_addr));
        tokio::spawn(shoal_api::serve_tcp(
            api_listener,
            manager.clone(),
            shoal_api::full_router(manager.clone(), agent_slot.clone(), services.clone()),
        ));
    }
    manager.enable_tls().context("loading this node's certificate")?;
    if args.init && !in_cluster {
        // `shoal dev`, or `init = true` in the configuration file: a single node to begin with.
        manager
            .init_cluster_with(args.init_data_path_port, args.prepared.take())
            .await
            .context("initializing the cluster")?;
    }
    tracing::info!(node_id = %identity.node_id, socket = %args.api_socket.display(), "shoal daemon started");

    tokio::spawn(shoal_api::internal::heartbeat_loop(manager.clone()));
    tokio::spawn(follow_autolock(manager.clone()));
    tokio::spawn(renew_certificates(manager.clone()));
    tokio::spawn(start_agent(
        manager.clone(),
        agent_config(&args, &identity.node_id),
        crate::drivers::all(&args.data_dir),
        NodeId::new(identity.node_id.clone()),
        me,
        agent_slot.clone(),
        etcd_handoff,
    ));
    if let Some(plan) = args.join.take() {
        if !in_cluster {
            tokio::spawn(join_on_first_boot(manager.clone(), plan));
        }
    }
    if in_cluster && manager.node.status().last_log_index.is_none() {
        // A promoted worker restarts with a manager certificate and an empty Raft store: it asks
        // the managers it knows to add it (learner, then voter).
        tokio::spawn(rejoin_as_manager(manager.clone(), manager.tls_dir().to_path_buf()));
    }
    tokio::spawn(follow_role_as_manager(
        manager.clone(),
        args.data_dir.clone(),
        identity.raft_id,
        agent_slot.clone(),
    ));

    let api = {
        let m = manager.clone();
        let slot = agent_slot.clone();
        let services = services.clone();
        tokio::spawn(async move { shoal_api::serve_unix(socket, m, slot, services).await })
    };
    if let Some(sock) = docker_socket {
        let (app, slot) = (shoal_api::app::App::new(manager.clone()), agent_slot.clone());
        let shutdown = manager.leave_requested();
        tokio::spawn(async move {
            if let Err(e) = shoal_docker::serve(sock, app, slot, shutdown).await {
                tracing::error!(error = %e, "the Docker API socket stopped");
            }
        });
    }
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
        _ = manager.node.failed() => {
            tracing::error!(
                "the Raft member stopped on a fatal error (see above: a write to its store failed, a full \
                 disk?): exiting so that the service manager starts this manager again"
            );
            socket_owner.remove_if_ours();
            anyhow::bail!("the Raft member stopped on a fatal error");
        }
    }
    let leaving = *manager.leave_requested().borrow();
    manager.shutdown().await;
    socket_owner.remove_if_ours();
    if let Some(o) = &docker_owner {
        o.remove_if_ours();
    }
    if leaving {
        forget_cluster(&args.data_dir, agent_slot.get()).await;
        tracing::info!("left the cluster");
    }
    Ok(())
}

use shoal_api::logs::AgentSlot;

/// After `cluster leave`: stop every task of this node and forget the cluster (certificates,
/// Raft store, task records, identity), so the daemon can start anew.
async fn forget_cluster(data_dir: &Path, agent: Option<&Arc<Agent>>) {
    if let Some(a) = agent {
        if let Err(left) = a.leave(Duration::from_secs(120)).await {
            tracing::warn!(left, "some tasks did not stop before the node left");
        }
    }
    for d in ["tls", "raft", "agent"] {
        if let Err(e) = shoal_agent::store::remove_dir(&data_dir.join(d)) {
            tracing::warn!(dir = d, error = %e, "cannot remove");
        }
    }
    let _ = std::fs::remove_file(data_dir.join("node.json"));
}

/// A node that `node rm` removed (the managers say so): like `cluster leave` its tasks stop and it
/// forgets the cluster, but the daemon starts anew as a node in no cluster, so that the operator
/// can join it again without touching the machine (Docker's node goes to "inactive").
async fn forget_when_removed(
    mut removed: tokio::sync::watch::Receiver<bool>,
    data_dir: PathBuf,
    agent: AgentSlot,
) {
    if removed.wait_for(|r| *r).await.is_err() {
        return;
    }
    start_anew(&data_dir, agent.get()).await
}

/// Forgets the cluster after `node rm` and restarts the daemon as a node in no cluster.
async fn start_anew(data_dir: &Path, agent: Option<&Arc<Agent>>) -> ! {
    forget_cluster(data_dir, agent).await;
    tracing::warn!(
        "this node was removed from the cluster (node rm): it forgot the cluster and starts anew; \
         `shoal cluster join` joins it again"
    );
    let e = restart_daemon();
    tracing::error!(error = %format!("{e:#}"), "cannot restart; stopping");
    std::process::exit(1);
}

/// Replaces this process with a fresh start of the same command line (after a role change: the
/// node comes back as what its new certificate says). Tasks keep running: they belong to their
/// shims, not to this process.
fn restart_daemon() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return anyhow::Error::from(e).context("finding this executable to restart"),
    };
    tracing::info!("restarting the daemon");
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec();
    anyhow::Error::from(err).context("restarting the daemon")
}

/// A promoted worker restarted as a manager: joins the Raft membership through the managers it
/// knows, retrying until one takes it.
async fn rejoin_as_manager(m: Arc<Manager>, tls_dir: PathBuf) {
    let path = tls_dir.join(shoal_api::join::MANAGERS_FILE);
    let managers: Vec<String> =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    if managers.is_empty() {
        return;
    }
    loop {
        for addr in &managers {
            match shoal_api::join::rejoin(&m, addr).await {
                Ok(()) => {
                    tracing::info!(via = %addr, "joined the managers");
                    return;
                }
                Err(e) => tracing::debug!(via = %addr, error = %e, "joining the managers failed; retrying"),
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A demoted manager: once its spec says worker and it is out of the Raft membership, it takes a
/// worker certificate, keeps the managers' addresses, drops its Raft store and restarts as a
/// worker.
///
/// A member the leader removed may never hear of it (it can be removed before its own replica
/// has applied the demotion): such a node sees no leader and campaigns in vain. So when it has
/// no leader, it asks the other managers; if a majority refuse it as a member, it was removed,
/// and the role their state gives it decides.
async fn follow_role_as_manager(m: Arc<Manager>, data_dir: PathBuf, raft_id: u64, agent: AgentSlot) {
    use shoal_types::NodeRole;
    let mut raft = m.node.watch();
    let mut events = m.node.subscribe();
    let me = NodeId::new(m.node.config().node.node_id.clone());
    let mut last_asked: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = raft.changed() => {}
            _ = events.recv() => {}
            // The only wake-up a removed member gets: it hears nothing any more.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let status = m.node.status();
        let others: Vec<String> =
            status.voters.iter().filter(|(id, _)| **id != raft_id).map(|(_, n)| n.addr.clone()).collect();
        let local_worker =
            m.node.local_state().state.node(&me).is_some_and(|n| n.spec.role == NodeRole::Worker);
        // Only a node that hears no leader asks the others (at most once a second): a replica
        // that is catching up (it hears the leader) may list itself in a membership it is not in
        // yet.
        let ask = status.leader.is_none() && last_asked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        let removed_as = if ask {
            last_asked = Some(std::time::Instant::now());
            removed_from_membership(&m, &others).await
        } else {
            None
        };
        // What this node becomes, decided on the committed state (read through the leader) or
        // on what the managers that removed it say; never on a replica that may be catching up
        // (a promoted manager replays the log in which it was still a worker).
        let become_role = match removed_as {
            Some(Removal::FromCluster) => {
                m.shutdown().await;
                start_anew(&data_dir, agent.get()).await
            }
            Some(Removal::AsRole(role)) => role,
            None if local_worker => {
                let committed =
                    shoal_api::internal::read_linearizable(&m, |s| s.node(&me).map(|n| n.spec.role)).await;
                let member = status.voters.contains_key(&raft_id) || status.learners.contains_key(&raft_id);
                // Leaving Raft before the leader took this node out would cost the others their
                // quorum: wait for that.
                match committed {
                    Ok(Some(NodeRole::Worker)) if !member => Some(NodeRole::Worker),
                    _ => None,
                }
            }
            None => None,
        };
        let Some(role) = become_role else { continue };
        if others.is_empty() {
            continue;
        }
        let cert_role = match role {
            NodeRole::Worker => {
                tracing::info!("demoted: restarting as a worker");
                shoal_pki::Role::Worker
            }
            // Taken out of the membership while its spec says manager (demoted and promoted again
            // before it heard of the demotion): it starts over with a fresh store and rejoins.
            NodeRole::Manager => {
                tracing::info!("out of the membership but still a manager: rejoining with a fresh store");
                shoal_pki::Role::Manager
            }
        };
        let done = async {
            if cert_role == shoal_pki::Role::Worker {
                m.replace_certificate(cert_role).await?;
            }
            let json = serde_json::to_vec(&others)?;
            shoal_pki::write_public_file(m.tls_dir().join(shoal_api::join::MANAGERS_FILE), json)?;
            m.shutdown().await;
            shoal_agent::store::remove_dir(&data_dir.join("raft"))?;
            anyhow::Ok(())
        };
        match done.await {
            Ok(()) => {
                let e = restart_daemon();
                tracing::error!(error = %format!("{e:#}"), "cannot restart; stopping");
                std::process::exit(1);
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "changing role failed; retrying on the next change");
            }
        }
    }
}

/// Why a manager is out of the Raft membership.
enum Removal {
    /// Demoted (or promoted again before it heard of the demotion): the role the managers' state
    /// gives it (`None` when no manager said).
    AsRole(Option<shoal_types::NodeRole>),
    /// `node rm` removed it from the cluster.
    FromCluster,
}

/// Whether a majority of the other managers (`others`, from this node's last view) refuse this
/// node as a member — it was taken out of the membership — and if so, why (from the dispatcher
/// of one that refused it).
/// A manager that has appended the change that removed this node has also learnt that the
/// demotion before it was committed, so its answer is not older than the demotion.
async fn removed_from_membership(m: &Manager, others: &[String]) -> Option<Removal> {
    let tls = m.client_tls()?;
    let ask = |addr: String, path: &'static str| {
        let tls = tls.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                shoal_api::internal::call(tls, &addr, hyper::Method::GET, path, None),
            )
            .await
            .ok()
            .and_then(Result::ok)
        }
    };
    let mut refused = Vec::new();
    for addr in others {
        if let Some((st, _)) = ask(addr.clone(), "/internal/status").await {
            if st == hyper::StatusCode::FORBIDDEN {
                refused.push(addr.clone());
            }
        }
    }
    tracing::debug!(
        refused = refused.len(),
        of = others.len(),
        "asked the other managers whether this node is a member"
    );
    if others.is_empty() || refused.len() * 2 <= others.len() {
        return None;
    }
    for addr in refused {
        if let Some((st, body)) = ask(addr, "/internal/dispatcher/assignments").await {
            if shoal_api::dispatcher::says_node_removed(st, &body) {
                return Some(Removal::FromCluster);
            }
            if st.is_success() {
                let reply: Option<shoal_api::dispatcher::AssignmentsReply> =
                    serde_json::from_slice(&body).ok();
                return Some(Removal::AsRole(reply.and_then(|r| r.role)));
            }
        }
    }
    Some(Removal::AsRole(None))
}

/// A promoted worker: once the managers say it is a manager, it renews into a manager
/// certificate (signed by a manager) and restarts as a manager.
async fn follow_role_as_worker(plane: Arc<RemotePlane>, data_dir: PathBuf, node_id: String) {
    let mut role = plane.desired_role();
    tracing::debug!("following this node's role");
    loop {
        if *role.borrow_and_update() == Some(shoal_types::NodeRole::Manager) {
            let tls_dir = data_dir.join("tls");
            let done = async {
                let (key, csr) = shoal_pki::generate_key_and_csr(&node_id)?;
                let cert = plane.renew(csr).await?;
                let id = shoal_pki::identity_from_pem(&cert)?;
                anyhow::ensure!(
                    id.role == shoal_pki::Role::Manager,
                    "the managers issued a {:?} certificate",
                    id.role
                );
                let mut managers = plane.managers();
                managers.sort();
                shoal_pki::write_public_file(
                    tls_dir.join(shoal_api::join::MANAGERS_FILE),
                    serde_json::to_vec(&managers)?,
                )?;
                shoal_agent::store::remove_dir(&data_dir.join("raft"))?;
                shoal_pki::write_private_file(tls_dir.join("node.key.new"), key)?;
                shoal_pki::write_public_file(tls_dir.join("node.crt.new"), cert)?;
                shoal_manager::finish_renewal(&tls_dir)?;
                anyhow::Ok(())
            };
            match done.await {
                Ok(()) => {
                    tracing::info!("promoted: restarting as a manager");
                    let e = restart_daemon();
                    tracing::error!(error = %format!("{e:#}"), "cannot restart; stopping");
                    std::process::exit(1);
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "promotion failed; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if role.changed().await.is_err() {
            return;
        }
    }
}

/// Serves Raft and the other node-to-node endpoints over mutual TLS once this node has a
/// certificate. Raft messages are accepted only from current members' manager certificates, so
/// the certificate of a removed manager stops working at once.
async fn serve_node_to_node(
    m: Arc<Manager>,
    listener: tokio::net::TcpListener,
    agent: AgentSlot,
    kv: Arc<shoal_api::kv::KvApp>,
) {
    let mut tls = m.server_tls();
    let mut worker = m.joined_as_worker();
    let cfg = loop {
        if let Some(cfg) = tls.borrow().clone() {
            break cfg;
        }
        if worker.borrow().is_some() {
            // Joined as a worker (until the daemon restarts as one): only the agent's endpoints.
            match worker_server_tls(m.tls_dir()) {
                Ok(cfg) => {
                    let (_keep, configs) = tokio::sync::watch::channel(cfg);
                    shoal_raft::transport::serve_tls_reloading(
                        listener,
                        configs,
                        shoal_api::logs::agent_router(agent),
                        |_: &shoal_pki::NodeIdentity, _: &str| false,
                    )
                    .await;
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot serve the agent's endpoints"),
            }
            return;
        }
        tokio::select! {
            r = tls.changed() => if r.is_err() { return },
            r = worker.changed() => if r.is_err() { return },
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
        shoal_api::internal::internal_router(m.clone())
            .merge(shoal_api::internal::internal_kv_router(m, kv))
            .merge(shoal_api::logs::agent_router(agent)),
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
        let wait = match renewal_wait(m.tls_dir()) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read this node's certificate; not renewing it");
                return;
            }
        };
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

fn agent_config(args: &DaemonArgs, node_id: &str) -> AgentConfig {
    AgentConfig {
        dir: args.data_dir.join("agent"),
        hostname: args.hostname.clone().unwrap_or_else(shoal_agent::fingerprint::hostname),
        labels: args.labels.clone(),
        generic: args.resources.clone(),
        node_id: node_id.to_string(),
    }
}

/// The role in this node's certificate, if it has one.
fn certified_role(tls_dir: &Path) -> Result<Option<shoal_pki::Role>> {
    let path = tls_dir.join("node.crt");
    if !path.exists() {
        return Ok(None);
    }
    let pem = shoal_pki::read_pem_file(&path).with_context(|| format!("reading {}", path.display()))?;
    let id = shoal_pki::identity_from_pem(&pem).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(id.role))
}

/// A worker's listener: its own certificate, client certificates required (managers').
fn worker_server_tls(tls_dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let read = |f: &str| shoal_pki::read_pem_file(tls_dir.join(f));
    shoal_pki::server_config(
        &read("ca.crt")?,
        &read("node.crt")?,
        &read("node.key")?,
        shoal_pki::ClientAuth::Required,
    )
    .context("loading this node's certificate")
}

fn worker_tls(tls_dir: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let read = |f: &str| shoal_pki::read_pem_file(tls_dir.join(f));
    shoal_pki::client_config(&read("ca.crt")?, &read("node.crt")?, &read("node.key")?)
        .context("loading this node's certificate")
}

/// The etcd API's backend of a daemon that may join a cluster as a worker (set by `serve_etcd`).
type EtcdHandoff = Arc<std::sync::OnceLock<Arc<shoal_etcd::remote::Handoff>>>;

/// The managers as a worker's etcd API reaches them: the agent's current certificate and the
/// managers it has learned.
fn manager_link(plane: &Arc<RemotePlane>) -> shoal_etcd::remote::ManagerLink {
    let plane = plane.clone();
    Arc::new(move || (plane.client_tls(), plane.managers()))
}

/// Starts this node's agent once the node is in a cluster: against the local dispatcher on a
/// manager, or against the managers over mutual TLS when the node has just joined as a worker.
async fn start_agent(
    m: Arc<Manager>,
    cfg: AgentConfig,
    drivers: Vec<Arc<dyn shoal_driver::Driver>>,
    id: NodeId,
    me: ManagerNode,
    slot: AgentSlot,
    etcd: EtcdHandoff,
) {
    let mut manager_tls = m.server_tls();
    let mut worker = m.joined_as_worker();
    let plane: Arc<dyn shoal_agent::ControlPlane> = loop {
        if let Some(managers) = worker.borrow().clone() {
            match worker_tls(m.tls_dir()) {
                Ok(tls) => {
                    let plane = Arc::new(RemotePlane::new(tls, managers, me.addr.clone()));
                    if let Some(handoff) = etcd.get() {
                        handoff.hand_off(Arc::new(shoal_etcd::RemoteKvBackend::new(manager_link(&plane))));
                        tracing::info!("etcd API: joined as a worker, forwarding to the managers");
                    }
                    let tls_dir = m.tls_dir().to_path_buf();
                    tokio::spawn(renew_worker_certificate(
                        plane.clone(),
                        tls_dir.clone(),
                        id.to_string(),
                        None,
                    ));
                    tokio::spawn(remember_managers(
                        plane.clone(),
                        tls_dir.join(shoal_api::join::MANAGERS_FILE),
                    ));
                    if let Some(data_dir) = tls_dir.parent() {
                        tokio::spawn(forget_when_removed(
                            plane.removed(),
                            data_dir.to_path_buf(),
                            slot.clone(),
                        ));
                        tokio::spawn(follow_role_as_worker(
                            plane.clone(),
                            data_dir.to_path_buf(),
                            id.to_string(),
                        ));
                    }
                    break plane;
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot start the agent");
                    return;
                }
            }
        }
        if manager_tls.borrow().is_some() {
            break Arc::new(LocalPlane { manager: m.clone(), node_id: id.clone(), addr: me.addr.clone() });
        }
        tokio::select! {
            r = manager_tls.changed() => if r.is_err() { return },
            r = worker.changed() => if r.is_err() { return },
        }
    };
    match Agent::new(cfg, drivers, plane) {
        Ok(agent) => {
            let _ = slot.set(agent.clone());
            agent.run().await
        }
        Err(e) => tracing::error!(error = %e, "cannot start the agent"),
    }
}

/// A worker node: the agent and a unix socket that points users to a manager. No Raft.
async fn run_worker(
    args: DaemonArgs,
    identity: Identity,
    tls_dir: PathBuf,
    socket: shoal_api::ApiSocket,
) -> Result<()> {
    let socket_owner = socket.owner();
    let docker_socket = args.docker_socket.as_deref().map(shoal_api::ApiSocket::bind).transpose()?;
    let docker_owner = docker_socket.as_ref().map(|s| s.owner());
    let tls = worker_tls(&tls_dir)?;
    if let Some(addr) = &args.api_addr {
        tracing::warn!(%addr, "a worker serves no TCP API (--api-addr is for managers); ignoring it");
    }
    if let Some(addr) = &args.chronos_addr {
        tracing::warn!(%addr, "a worker serves no Chronos API (--chronos-addr is for managers); ignoring it");
    }
    let ui = bind_ui(&args.ui_addr).await?;
    let managers_path = tls_dir.join(shoal_api::join::MANAGERS_FILE);
    let managers: Vec<String> = std::fs::read(&managers_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .with_context(|| format!("reading the managers' addresses from {}", managers_path.display()))?;
    let docker_node = shoal_docker::WorkerNode {
        node_id: identity.node_id.clone(),
        hostname: args.hostname.clone().unwrap_or_else(shoal_agent::fingerprint::hostname),
        managers: managers.clone(),
    };
    let plane = Arc::new(RemotePlane::new(tls, managers, args.advertise_addr.clone()));
    // The etcd API, forwarded to the managers (like etcd's gRPC proxy).
    {
        let link = manager_link(&plane);
        let backend = move |_url| -> Arc<dyn shoal_etcd::EtcdBackend> {
            Arc::new(shoal_etcd::RemoteKvBackend::new(link))
        };
        let dir = tls_dir.clone();
        let tls = async move {
            shoal_api::tcp::api_server_config(&dir)
                .map_err(|e| tracing::error!(error = %e, "etcd API: cannot load this node's certificate"))
                .ok()
        };
        serve_etcd(&args, backend, tls).await?;
    }
    let agent = Agent::new(
        agent_config(&args, &identity.node_id),
        crate::drivers::all(&args.data_dir),
        plane.clone(),
    )
    .context("starting the agent")?;
    tracing::info!(node_id = %identity.node_id, socket = %args.api_socket.display(), "shoal worker started");
    tokio::spawn(agent.clone().run());
    // The node-to-node listener of a worker serves its agent's endpoints (task logs) to managers.
    let slot: AgentSlot = Arc::new(std::sync::OnceLock::new());
    let _ = slot.set(agent.clone());
    if let Some(ui) = ui {
        let slot = slot.clone();
        tokio::spawn(async move {
            if let Err(e) = shoal_api::ui::serve(ui, None, slot, None).await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    let server_tls = tokio::sync::watch::channel(worker_server_tls(&tls_dir)?).0;
    let listener = tokio::net::TcpListener::bind(&args.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen_addr))?;
    tokio::spawn(shoal_raft::transport::serve_tls_reloading(
        listener,
        server_tls.subscribe(),
        shoal_api::logs::agent_router(slot.clone()),
        |_: &shoal_pki::NodeIdentity, _: &str| false,
    ));
    tokio::spawn(remember_managers(plane.clone(), managers_path));
    tokio::spawn(renew_worker_certificate(
        plane.clone(),
        tls_dir.clone(),
        identity.node_id.clone(),
        Some(server_tls),
    ));
    tokio::spawn(forget_when_removed(plane.removed(), args.data_dir.clone(), slot.clone()));
    tokio::spawn(follow_role_as_worker(plane, args.data_dir.clone(), identity.node_id.clone()));
    let (leave_tx, mut leave_rx) = tokio::sync::mpsc::channel::<shoal_api::LeaveRequest>(1);
    let (stop_api, api_stopped) = tokio::sync::watch::channel(false);
    if let Some(sock) = docker_socket {
        let stopped = api_stopped.clone();
        tokio::spawn(async move {
            if let Err(e) = shoal_docker::serve_worker(sock, docker_node, stopped).await {
                tracing::error!(error = %e, "the Docker API socket stopped");
            }
        });
    }
    let mut api = {
        let id = identity.node_id.clone();
        tokio::spawn(async move { shoal_api::serve_unix_worker(socket, id, leave_tx, api_stopped).await })
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = &mut api => {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e).with_context(|| format!("API socket {}", args.api_socket.display())),
                Err(e) => return Err(e.into()),
            }
        }
        Some(reply) = leave_rx.recv() => {
            // `cluster leave` on a worker: its tasks stop, it forgets the cluster (the managers
            // see it go down; `node rm` removes it), and the daemon exits.
            forget_cluster(&args.data_dir, Some(&agent)).await;
            tracing::info!("left the cluster");
            let _ = reply.send(Ok(()));
            stop_api.send_replace(true);
            let _ = api.await;
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = term.recv() => tracing::info!("terminated, stopping"),
    }
    // Tasks keep running: the agent recovers them when the daemon starts again.
    socket_owner.remove_if_ours();
    if let Some(o) = &docker_owner {
        o.remove_if_ours();
    }
    Ok(())
}

/// A worker's certificate renewal: at 50-80% of its life, a new key and a CSR that a manager
/// signs (same node id and role); the files are replaced like a manager's (crash-safe) and the
/// agent's connections use the new certificate from the next request.
async fn renew_worker_certificate(
    plane: Arc<RemotePlane>,
    tls_dir: PathBuf,
    node_id: String,
    server: Option<tokio::sync::watch::Sender<Arc<rustls::ServerConfig>>>,
) {
    loop {
        let wait = match renewal_wait(&tls_dir) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read this node's certificate; not renewing it");
                return;
            }
        };
        tokio::time::sleep(wait).await;
        let renewed = async {
            let (key, csr) = shoal_pki::generate_key_and_csr(&node_id)?;
            let cert = plane.renew(csr).await?;
            shoal_pki::write_private_file(tls_dir.join("node.key.new"), key)?;
            shoal_pki::write_public_file(tls_dir.join("node.crt.new"), cert)?;
            shoal_manager::finish_renewal(&tls_dir)?;
            plane.set_tls(worker_tls(&tls_dir)?);
            if let Some(server) = &server {
                server.send_replace(worker_server_tls(&tls_dir)?);
            }
            anyhow::Ok(())
        };
        match renewed.await {
            Ok(()) => tracing::info!("node certificate renewed"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; retrying in 5s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// How long until this node's certificate is due for renewal: a random point between 50% and 80%
/// of its lifetime, counted from its issue (not from its back-dated start).
fn renewal_wait(tls_dir: &Path) -> Result<Duration> {
    let pem = shoal_pki::read_pem_file(tls_dir.join("node.crt"))?;
    let (not_before, not_after) = shoal_pki::cert_validity(&pem)?;
    let issued = not_before + shoal_pki::CLOCK_SKEW_ALLOWANCE;
    let start = if issued < not_after { issued } else { not_before };
    let fraction =
        random_bytes::<8>().map_or(0.5, |b| (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64);
    let at = shoal_pki::renewal_at(start, not_after, fraction);
    Ok(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Keeps the worker's list of managers current on disk, so a restarted worker finds the cluster
/// even if the manager it joined through is gone.
async fn remember_managers(plane: Arc<RemotePlane>, path: PathBuf) {
    let mut last = plane.managers();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = plane.managers();
        if now != last && !now.is_empty() {
            let mut sorted = now.clone();
            sorted.sort();
            if let Ok(json) = serde_json::to_string(&sorted) {
                if let Err(e) = shoal_pki::write_public_file(&path, &json) {
                    tracing::warn!(error = %e, "cannot record the managers' addresses");
                }
            }
            last = now;
        }
    }
}

/// Where clients reach a listener: its bound address, with the host of `--advertise-addr` when it
/// is bound to every address (`0.0.0.0:2378`).
fn reachable_addr(listener: &tokio::net::TcpListener, advertise: &str) -> String {
    match listener.local_addr() {
        Ok(a) if a.ip().is_unspecified() => {
            let host = advertise.rsplit_once(':').map_or(advertise, |(h, _)| h);
            format!("{host}:{}", a.port())
        }
        Ok(a) => a.to_string(),
        Err(_) => String::new(),
    }
}

/// The etcd v3 API on `--etcd-addr` (managers and workers; `backend` gets the client URL):
/// plain on loopback; elsewhere mutual TLS with the cluster's CA, with the server config that
/// `tls` yields (it waits for this node's certificate; `None`: never).
async fn serve_etcd<T>(
    args: &DaemonArgs,
    backend: impl FnOnce(String) -> Arc<dyn shoal_etcd::EtcdBackend>,
    tls: T,
) -> Result<()>
where
    T: std::future::Future<Output = Option<Arc<rustls::ServerConfig>>> + Send + 'static,
{
    let Some(addr) = &args.etcd_addr else { return Ok(()) };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if args.etcd_addr_is_default => {
            tracing::warn!(%addr, error = %e, "the etcd API is off: its default address is taken (--etcd-addr)");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on --etcd-addr {addr}")),
    };
    let local = listener.local_addr().context("the etcd listener's address")?;
    let loopback = local.ip().is_loopback();
    let url = format!(
        "{}://{}",
        if loopback { "http" } else { "https" },
        reachable_addr(&listener, &args.advertise_addr)
    );
    let backend = backend(url);
    tokio::spawn(async move {
        let tls = if loopback {
            None
        } else {
            match tls.await {
                Some(c) => Some(c),
                None => return,
            }
        };
        tracing::info!(addr = %local, tls = !loopback, "etcd API listening");
        if let Err(e) = shoal_etcd::serve(listener, backend, tls).await {
            tracing::error!(error = %e, "the etcd API stopped");
        }
    });
    Ok(())
}

/// A manager's etcd API server config, once it has its certificate (a daemon not in a cluster
/// yet has none; one that joins as a worker gets a worker certificate).
async fn manager_etcd_tls(manager: Arc<shoal_manager::Manager>) -> Option<Arc<rustls::ServerConfig>> {
    let mut node_tls = manager.server_tls();
    let mut worker = manager.joined_as_worker();
    loop {
        if node_tls.borrow_and_update().is_some() || worker.borrow_and_update().is_some() {
            match shoal_api::tcp::api_server_config(manager.tls_dir()) {
                Ok(c) => return Some(c),
                Err(e) => tracing::error!(error = %e, "etcd API: cannot load this node's certificate"),
            }
        }
        tokio::select! {
            r = node_tls.changed() => if r.is_err() { return None },
            r = worker.changed() => if r.is_err() { return None },
        }
    }
}

#[cfg(test)]
mod raft_timing_tests {
    use super::RaftTiming;
    use std::time::Duration;

    #[test]
    fn election_timeout_is_the_lease_and_the_lowest_timeout_is_three_fifths_of_it() {
        let t = RaftTiming::new(Duration::from_millis(50), Duration::from_millis(350)).expect("defaults");
        assert_eq!(t, RaftTiming { heartbeat_ms: 50, election_timeout_ms: (210, 350) });
        let t = RaftTiming::new(Duration::from_millis(100), Duration::from_secs(1)).expect("etcd's");
        assert_eq!(t.election_timeout_ms, (600, 1000));
    }

    #[test]
    fn timings_that_would_cause_spurious_elections_are_refused() {
        let e = RaftTiming::new(Duration::from_millis(100), Duration::from_millis(300)).expect_err("3 beats");
        assert!(e.to_string().contains("at least 4 heartbeat intervals"), "{e}");
        assert!(RaftTiming::new(Duration::from_millis(1), Duration::from_millis(300)).is_err());
        assert!(RaftTiming::new(Duration::from_millis(100), Duration::from_secs(61)).is_err());
    }
}
