//! A running Raft member: wraps openraft so the rest of Shoal never names it. Writes carry the
//! proposer's clock (`Request::at`); reads are linearizable (read-index) or stale.

use crate::{
    CommandError, ErrorKind, ManagerNode, Raft, RaftId, Request, Response, SharedState, StateMachineStore,
    TypeConfig,
};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::{RaftMetrics, ServerState};
use serde::{Deserialize, Serialize};
use shoal_state::{ClusterState, Command, Event};
use shoal_types::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, watch};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub raft_id: RaftId,
    pub node: ManagerNode,
    /// openraft's election timeout range (min, max); max is also the leader lease during which
    /// a voter refuses other candidates. A follower stands for election after max + rand(min..max)
    /// without a heartbeat.
    pub election_timeout_ms: (u64, u64),
    pub heartbeat_ms: u64,
    /// How long a write or a linearizable read may wait for a quorum.
    pub quorum_timeout: Duration,
    /// How long [`RaftNode::add_learner`] waits for a new learner to catch up with the log.
    pub learner_catch_up_timeout: Duration,
    /// Opens a data key wrapped by autolock ([`crate::seal`]). Never stored.
    pub unlock_key: Option<String>,
}

impl NodeConfig {
    pub fn new(data_dir: PathBuf, raft_id: RaftId, node: ManagerNode) -> Self {
        NodeConfig {
            data_dir,
            raft_id,
            node,
            unlock_key: None,
            // `shoal daemon`'s defaults (`--election-timeout 350ms --heartbeat-interval 50ms`).
            election_timeout_ms: (210, 350),
            heartbeat_ms: 50,
            quorum_timeout: Duration::from_secs(5),
            learner_catch_up_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::OpenError),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a write did not happen. `Refused` is the caller's fault (4xx); the others are the
/// cluster's (503, or retry at the leader).
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}", .0.message)]
    Refused(CommandError),
    #[error("not the leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<ManagerNode> },
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<ManagerNode> },
    #[error("{0}")]
    Unavailable(String),
}

/// A failed membership change: not the leader, refused (in progress, empty, unknown learner),
/// or Raft itself failing.
fn membership_error(e: RaftError<RaftId, ClientWriteError<RaftId, ManagerNode>>) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            WriteError::NotLeader { leader: f.leader_node }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            let kind = match c {
                ChangeMembershipError::InProgress(_) => ErrorKind::Conflict,
                ChangeMembershipError::EmptyMembership(_) | ChangeMembershipError::LearnerNotFound(_) => {
                    ErrorKind::Invalid
                }
            };
            WriteError::Refused(CommandError { kind, message: c.to_string() })
        }
        RaftError::Fatal(f) => WriteError::Unavailable(format!("membership change failed: {f}")),
    }
}

fn leader_hint(l: &Option<ManagerNode>) -> String {
    match l {
        Some(n) => format!(" (leader is {} at {})", n.node_id, n.addr),
        None => " and no leader is known".into(),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Read-index: the answer reflects every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// The local replica as it is (works without a quorum).
    Stale,
}

/// What `cluster inspect` / `cluster health` show about this manager's view of Raft.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RaftStatus {
    #[serde(with = "crate::raft_id_string")]
    #[schemars(with = "String")]
    pub raft_id: RaftId,
    pub node_id: String,
    pub state: String,
    pub term: u64,
    #[serde(with = "crate::raft_id_string::option")]
    #[schemars(with = "Option<String>")]
    pub leader: Option<RaftId>,
    pub leader_node: Option<ManagerNode>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// Milliseconds since a quorum last acknowledged this leader (leaders only).
    pub millis_since_quorum_ack: Option<u64>,
    pub voters: BTreeMap<RaftId, ManagerNode>,
    pub learners: BTreeMap<RaftId, ManagerNode>,
}

/// A change in Raft's view (term, leader, membership): `changed().await`.
pub struct RaftWatch(watch::Receiver<RaftMetrics<RaftId, ManagerNode>>);

impl RaftWatch {
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// The outcome of one leadership check (shared by the reads batched into it).
#[derive(Clone, Debug)]
enum Check {
    Index(u64),
    NotLeader(Option<ManagerNode>),
    QuorumNotEnough(usize),
    Failed(String),
}

/// Read-index rounds: at most one leadership check runs at a time; `done` holds the last one.
#[derive(Default)]
struct ReadBatch {
    started: std::sync::atomic::AtomicU64,
    lock: tokio::sync::Mutex<()>,
    done: watch::Sender<Option<(u64, Check)>>,
}

pub struct RaftNode {
    read_batch: ReadBatch,
    cfg: NodeConfig,
    raft: Raft,
    sm: StateMachineStore,
    shared: SharedState,
    /// The store's data key, and where its file is (rewrapped when autolock changes).
    key: Arc<crate::seal::DataKey>,
    key_path: std::path::PathBuf,
    /// Set by [`RaftNode::shutdown`]: a stop that is not a failure.
    stopping: std::sync::atomic::AtomicBool,
    committed: Arc<std::sync::atomic::AtomicU64>,
    /// Group commit ([`crate::batch`]).
    batcher: crate::batch::Batcher,
    /// What the transport learned of the peers' entry formats (`None`: no transport).
    peers: Option<crate::transport::PeerContacts>,
}

impl RaftNode {
    /// Opens the store in `data_dir` and starts the Raft member.
    pub async fn start<N>(cfg: NodeConfig, network: N) -> Result<RaftNode, StartError>
    where
        N: RaftNetworkFactory<TypeConfig> + crate::EntryFormats,
    {
        let peers = network.peer_contacts();
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
        let store_path = cfg.data_dir.join("raft.redb");
        let (log, sm, key) = crate::open_with(&store_path, cfg.unlock_key.as_deref())?;
        let key_path = store_path.with_extension("key");
        let raft_config = openraft::Config {
            cluster_name: "shoal".into(),
            election_timeout_min: cfg.election_timeout_ms.0,
            election_timeout_max: cfg.election_timeout_ms.1,
            heartbeat_interval: cfg.heartbeat_ms,
            // See `snapshot_policy` below.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 500,
            // Snapshots travel as JSON (bytes as a number array, ~4x) in chunks; each chunk (the
            // last one includes installing the snapshot) must arrive within this timeout. The
            // 200 ms default never gets a multi-megabyte state across.
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let committed = log.committed_index();
        let (appended, snapshot_bytes) = (log.appended_bytes(), sm.snapshot_bytes());
        // The core, its replication streams and timers run on Raft's own runtime (see
        // `crate::runtime`): API work on the caller's runtime cannot delay a heartbeat.
        let (id, raft_sm) = (cfg.raft_id, sm.clone());
        let raft =
            crate::runtime::run(
                async move { Raft::new(id, Arc::new(raft_config), network, log, raft_sm).await },
            )
            .await
            .map_err(StartError::Raft)?
            .map_err(|e| StartError::Raft(e.to_string()))?;
        tokio::spawn(count_leader_changes(raft.metrics()));
        tokio::spawn(snapshot_policy(raft.clone(), appended, snapshot_bytes));
        let shared = sm.shared();
        let batcher = crate::batch::Batcher::start(raft.clone(), cfg.quorum_timeout);
        Ok(RaftNode {
            read_batch: ReadBatch::default(),
            cfg,
            raft,
            sm,
            shared,
            committed,
            key,
            key_path,
            stopping: Default::default(),
            batcher,
            peers,
        })
    }

    /// Makes the data key file match the cluster's autolock setting: wrapped by `unlock`, or in
    /// the clear without one. Returns whether it changed anything.
    pub fn store_key_for(&self, unlock: Option<&str>) -> Result<bool, crate::seal::KeyError> {
        if self.key.stored_as(&self.key_path, unlock) {
            return Ok(false);
        }
        self.key.write(&self.key_path, unlock)?;
        Ok(true)
    }

    /// Makes this member the first voter of a new cluster. Idempotent.
    pub async fn initialize(&self) -> Result<(), StartError> {
        if self.raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
            return Ok(());
        }
        let members = BTreeMap::from([(self.cfg.raft_id, self.cfg.node.clone())]);
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The openraft handle, for the transport's server side ([`crate::transport`]).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Adds manager `id` at `node` as a learner (a non-voting member that receives the log) and
    /// waits until it has caught up with the log up to the membership change, at most
    /// `learner_catch_up_timeout`. Must run on the leader. Adding a member that is already one
    /// changes nothing (its recorded address included) and returns once it has caught up.
    pub async fn add_learner(&self, id: RaftId, node: ManagerNode) -> Result<(), WriteError> {
        let change = tokio::time::timeout(self.cfg.quorum_timeout, self.raft.add_learner(id, node, false));
        let resp = match change.await {
            Err(_) => return Err(self.no_quorum("adding the learner")),
            Ok(r) => r.map_err(membership_error)?,
        };
        if id == self.cfg.raft_id {
            return Ok(());
        }
        let target = resp.log_id;
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + self.cfg.learner_catch_up_timeout;
        loop {
            {
                let m = rx.borrow_and_update();
                let membership = m.membership_config.membership();
                if membership.get_node(&id).is_none() {
                    return Err(WriteError::Unavailable(format!(
                        "manager {id} was removed from the membership while catching up"
                    )));
                }
                let Some(replication) = &m.replication else {
                    let leader_node = m.current_leader.and_then(|l| membership.get_node(&l).cloned());
                    return Err(WriteError::NotLeader { leader: leader_node });
                };
                if replication.get(&id).is_some_and(|matched| matched.as_ref() >= Some(&target)) {
                    return Ok(());
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(WriteError::Unavailable("raft stopped".into())),
                Err(_) => {
                    return Err(WriteError::Unavailable(format!(
                        "manager {id} was added as a learner but did not catch up within {}s (is it \
                         reachable?)",
                        self.cfg.learner_catch_up_timeout.as_secs()
                    )))
                }
            }
        }
    }

    /// Makes `voters` the set of voting members, through joint consensus. Current voters that
    /// are not in `voters` leave the membership altogether (openraft's `retain = false`);
    /// learners that are not in it stay learners. Every new voter must already be a learner
    /// ([`RaftNode::add_learner`]), otherwise the change is refused. Must run on the leader.
    pub async fn change_voters(&self, voters: BTreeSet<RaftId>) -> Result<(), WriteError> {
        let change =
            tokio::time::timeout(self.cfg.quorum_timeout, self.raft.change_membership(voters, false));
        match change.await {
            Err(_) => Err(self.no_quorum("changing the voters")),
            Ok(r) => r.map(|_| ()).map_err(membership_error),
        }
    }

    /// Takes `ids` out of the membership altogether, voters and learners alike (a node that was
    /// removed, or a learner that never caught up). Refuses to remove every voter. Must run on the
    /// leader. A change that meets another one still in progress is retried until the quorum
    /// timeout.
    pub async fn remove_members(&self, ids: &BTreeSet<RaftId>) -> Result<(), WriteError> {
        let deadline = tokio::time::Instant::now() + self.cfg.quorum_timeout;
        loop {
            let status = self.status();
            let voters: BTreeSet<RaftId> =
                status.voters.keys().filter(|v| !ids.contains(v)).copied().collect();
            if voters.is_empty() {
                return Err(WriteError::Refused(CommandError {
                    kind: ErrorKind::Conflict,
                    message: "cannot remove the last manager".into(),
                }));
            }
            let leaving_voters = status.voters.keys().any(|v| ids.contains(v));
            let leaving_learners: BTreeSet<RaftId> =
                status.learners.keys().filter(|l| ids.contains(l)).copied().collect();
            let change = if leaving_voters {
                openraft::ChangeMembers::ReplaceAllVoters(voters)
            } else if !leaving_learners.is_empty() {
                openraft::ChangeMembers::RemoveNodes(leaving_learners)
            } else {
                return Ok(());
            };
            let r = tokio::time::timeout_at(deadline, self.raft.change_membership(change, false)).await;
            match r {
                Err(_) => return Err(self.no_quorum("removing the managers")),
                Ok(Ok(_)) => continue, // voters first, then learners: look again
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                )))) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => return Err(membership_error(e)),
            }
        }
    }

    fn no_quorum(&self, what: &str) -> WriteError {
        WriteError::Unavailable(format!(
            "no quorum: {what} was not committed within {}s (it may still take effect; check `shoal \
             cluster health`)",
            self.cfg.quorum_timeout.as_secs()
        ))
    }
    /// Commits `command` through Raft and returns what applying it did. Concurrent writes share
    /// entries ([`crate::batch`]) while every member reads batched entries; a large command,
    /// the managers' own batches (plans, status reports: [`crate::batchable`]) and any command
    /// before then are written in their own entry.
    pub async fn write(&self, command: Command) -> Result<Response, WriteError> {
        let bytes = crate::command_bytes(&command);
        if crate::batchable(&command)
            && bytes <= crate::batch::MAX_BATCHED_COMMAND_BYTES
            && self.batches_allowed()
        {
            return self.batcher.write(command, bytes).await;
        }
        let req = Request::single(Timestamp::from_system_time(SystemTime::now()), command);
        outcome(propose(&self.raft, self.cfg.quorum_timeout, req).await?)
    }

    /// Whether every other member (voter or learner) has said it reads batched entries.
    fn batches_allowed(&self) -> bool {
        let me = self.cfg.raft_id;
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let mut others = m.membership_config.membership().nodes().map(|(id, _)| *id).filter(|id| *id != me);
        match &self.peers {
            None => others.next().is_none(),
            Some(peers) => others.all(|id| peers.entry_format(id) >= crate::formats::ENTRY),
        }
    }

    /// Runs `f` on the cluster state with the requested consistency.
    pub async fn read<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&ClusterState) -> T,
    ) -> Result<T, ReadError> {
        if consistency == Consistency::Linearizable {
            self.read_index().await?;
        }
        let d = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        Ok(f(&d.state))
    }

    /// Read-index on the leader: the log index a linearizable read must have applied. A round of
    /// heartbeats that a majority did not answer in time (a busy leader, a slow disk) is retried
    /// until the quorum timeout; only then is the read refused, saying why.
    ///
    /// Concurrent reads share rounds (as etcd batches read-index requests): a caller takes the
    /// result of the first round that *started* after it arrived, so a burst of reads costs a few
    /// rounds of heartbeats instead of one each.
    pub async fn read_index(&self) -> Result<u64, ReadError> {
        let deadline = tokio::time::Instant::now() + self.cfg.quorum_timeout;
        let mut last_short: Option<String> = None;
        loop {
            let r = tokio::time::timeout_at(deadline, self.batched_check()).await;
            match r {
                Err(_) => return Err(self.no_read_quorum(last_short)),
                Ok(Check::NotLeader(leader)) => return Err(ReadError::NotLeader { leader }),
                Ok(Check::QuorumNotEnough(got)) => {
                    let voters = self.status().voters.len();
                    last_short = Some(format!("{got} of {voters} managers answered"));
                    if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
                        return Err(self.no_read_quorum(last_short));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Check::Failed(e)) => return Err(ReadError::Unavailable(format!("read failed: {e}"))),
                Ok(Check::Index(i)) => return Ok(i),
            }
        }
    }

    /// One leadership check, shared with every caller that arrived before it started.
    async fn batched_check(&self) -> Check {
        let b = &self.read_batch;
        let wanted = b.started.load(std::sync::atomic::Ordering::SeqCst) + 1;
        let mut done = b.done.subscribe();
        loop {
            if let Some((round, check)) = &*done.borrow_and_update() {
                if *round >= wanted {
                    return check.clone();
                }
            }
            tokio::select! {
                _ = done.changed() => continue,
                guard = b.lock.lock() => {
                    // A round that satisfies this caller may have finished while it waited.
                    if let Some((round, check)) = &*b.done.borrow() {
                        if *round >= wanted {
                            return check.clone();
                        }
                    }
                    let round = b.started.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let check = match self.raft.ensure_linearizable().await {
                        Ok(log_id) => Check::Index(log_id.map_or(0, |l| l.index)),
                        Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                            Check::NotLeader(f.leader_node)
                        }
                        Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(q))) => {
                            Check::QuorumNotEnough(q.got.len())
                        }
                        Err(e) => Check::Failed(e.to_string()),
                    };
                    b.done.send_replace(Some((round, check.clone())));
                    drop(guard);
                    return check;
                }
            }
        }
    }

    fn no_read_quorum(&self, detail: Option<String>) -> ReadError {
        ReadError::Unavailable(format!(
            "no quorum: a majority of the managers did not confirm the leader within {}s{} — an election may \
             be under way or too many managers are down (see `shoal cluster health`); retry, or read this \
             manager's possibly stale copy with --stale",
            self.cfg.quorum_timeout.as_secs(),
            detail.map(|d| format!(" ({d})")).unwrap_or_default(),
        ))
    }

    /// Waits until this replica has applied `index` (a follower serving a linearizable read with
    /// the leader's read index), then runs `f` on the state.
    pub async fn read_at<T>(&self, index: u64, f: impl FnOnce(&ClusterState) -> T) -> Result<T, ReadError> {
        self.raft
            .wait(Some(self.cfg.quorum_timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| ReadError::Unavailable(format!("replica did not catch up: {e}")))?;
        let d = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        Ok(f(&d.state))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sm.subscribe()
    }

    /// This replica's state as it is now, read under the lock (hold it briefly).
    pub fn local<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        let d = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        f(&d.state)
    }

    /// The key-value store's revisions as they are applied (watches).
    pub fn subscribe_kv(&self) -> broadcast::Receiver<Arc<crate::KvCommit>> {
        self.sm.subscribe_kv()
    }

    /// The key-value store's leader-local soft state (lease deadlines), which no command
    /// replicates: keep-alives and a new leader's refresh. Hold it briefly.
    pub fn kv_leader<T>(&self, f: impl FnOnce(&mut shoal_kv::KvStore) -> T) -> T {
        let mut d = self.shared.write().unwrap_or_else(PoisonError::into_inner);
        f(d.state.kv_leader_mut())
    }

    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if membership.voter_ids().any(|v| v == *id) {
                voters.insert(*id, node.clone());
            } else {
                learners.insert(*id, node.clone());
            }
        }
        let leader_node = m.current_leader.and_then(|l| membership.get_node(&l).cloned());
        RaftStatus {
            raft_id: self.cfg.raft_id,
            node_id: self.cfg.node.node_id.clone(),
            state: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader: m.current_leader,
            leader_node,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            voters,
            learners,
        }
    }

    /// The highest log index known to be committed (as last saved by this member).
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(std::sync::atomic::Ordering::Relaxed).checked_sub(1)
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.cfg.raft_id)
    }

    /// Waits until some manager is leader (or `timeout` passes).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<RaftId> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Some(l);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return None;
            }
        }
    }

    pub async fn shutdown(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    /// Returns once the Raft member has stopped on its own — a fatal error, such as a write to
    /// its store that failed (a full disk) — and not through [`RaftNode::shutdown`]. openraft
    /// then serves nothing more; the daemon exits so that its service manager starts it again
    /// (as etcd stops on a failed write to its log).
    pub async fn failed(&self) {
        let mut rx = self.raft.metrics();
        while rx.changed().await.is_ok() {}
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    pub fn watch(&self) -> RaftWatch {
        RaftWatch(self.raft.metrics())
    }

    /// A copy of this replica's state with the log position it reflects (`(term, index)` of the
    /// last applied entry), taken under one lock: a backup's image. Take it after a
    /// linearizable read for a copy that has every acknowledged write.
    pub fn state_image(&self) -> (shoal_state::Snapshot, Option<(u64, u64)>) {
        let d = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        (d.state.snapshot(), d.last_applied.map(|l| (l.leader_id.term, l.index)))
    }

    /// The local replica's state (no consistency check): for the leader's own controllers.
    pub fn local_state(&self) -> std::sync::RwLockReadGuard<'_, crate::state_machine::SmData> {
        self.shared.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts the leader changes this member sees (including losing a leader), until Raft stops.
/// The fewest log entries between two snapshots.
const SNAPSHOT_MIN_ENTRIES: u64 = 2_000;

/// When to snapshot: once the log since the last snapshot has at least
/// [`SNAPSHOT_MIN_ENTRIES`] entries *and* half as many bytes as that snapshot. A snapshot
/// copies the whole state, so with a large key-value store a fixed entry count would rebuild
/// hundreds of megabytes every few seconds under load; tied to bytes written, its cost stays
/// proportional to the writes, and the log stays under about half the state's size.
async fn snapshot_policy(raft: Raft, appended: Arc<AtomicU64>, snapshot_bytes: Arc<AtomicU64>) {
    let rx = raft.metrics();
    let mut bytes_at_last = 0u64;
    // A look twice a second is plenty: 2,000 entries take longer than that to write.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if rx.has_changed().is_err() {
            return; // Raft has stopped.
        }
        let (applied, snapshot) = {
            let m = rx.borrow();
            (m.last_applied.map_or(0, |l| l.index), m.snapshot.map_or(0, |l| l.index))
        };
        let bytes = appended.load(Ordering::Relaxed);
        if applied.saturating_sub(snapshot) < SNAPSHOT_MIN_ENTRIES
            || bytes.saturating_sub(bytes_at_last) < snapshot_bytes.load(Ordering::Relaxed) / 2
        {
            continue;
        }
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        bytes_at_last = bytes;
    }
}

async fn count_leader_changes(mut rx: watch::Receiver<RaftMetrics<RaftId, ManagerNode>>) {
    let mut leader = rx.borrow_and_update().current_leader;
    while rx.changed().await.is_ok() {
        let now = rx.borrow_and_update().current_leader;
        if now != leader {
            if now.is_some() {
                shoal_metrics::metrics().raft_leader_changes.inc();
            }
            leader = now;
        }
    }
}

/// Commits `req` through Raft and returns what applying it did (a refused command's answer
/// carries its error: see [`outcome`]).
pub(crate) async fn propose(
    raft: &Raft,
    quorum_timeout: Duration,
    req: Request,
) -> Result<Response, WriteError> {
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(quorum_timeout, raft.client_write(req)).await;
    if matches!(res, Ok(Ok(_))) {
        shoal_metrics::metrics().raft_apply_seconds.observe(started.elapsed().as_secs_f64());
    }
    match res {
        Err(_) => Err(WriteError::Unavailable(format!(
            "no quorum: the write was not committed within {}s — a majority of the managers is down or \
             unreachable, or an election is under way; it takes effect later if a quorum returns (see \
             `shoal cluster health`)",
            quorum_timeout.as_secs()
        ))),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(WriteError::NotLeader { leader: f.leader_node })
        }
        Ok(Err(e)) => Err(WriteError::Unavailable(format!("write failed: {e}"))),
        Ok(Ok(resp)) => Ok(resp.data),
    }
}

/// One command's answer: what applying it did, or why it was refused.
pub(crate) fn outcome(resp: Response) -> Result<Response, WriteError> {
    match resp.error {
        Some(e) => Err(WriteError::Refused(e)),
        None => Ok(resp),
    }
}
