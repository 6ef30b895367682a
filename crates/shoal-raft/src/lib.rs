//! Shoal's replicated cluster store: openraft 0.9 with the log, the vote, the commit index and
//! snapshots durable in redb, and [`shoal_state::ClusterState`] as the state machine.
//!
//! This is the only crate that names openraft; the rest of Shoal sees [`Request`] (a command and
//! the proposal time chosen by the leader) and [`Response`].
//!
//! Durability: every append and vote is in a redb transaction committed with fsync before
//! openraft is told it is done, so an acknowledged write survives a crash of any minority of
//! managers; the commit index rides along with the next transaction (see `log_store`). The
//! state machine lives in memory and is rebuilt on restart from the last snapshot (its own
//! file, `raft.snapshot`) plus the committed log after it.
//!
//! Managers talk to each other through [`transport`]: Raft RPCs as JSON over HTTP/1.1 over
//! mutual TLS ([`transport::TlsNetwork`] on the client side, [`transport::raft_router`] served by
//! [`transport::serve_tls`] on the server side).

// openraft fixes the error type of every storage method; it is large, and boxing it here would
// only add a conversion at each trait boundary.
#![allow(clippy::result_large_err)]

mod batch;
mod log_store;
mod network;
mod node;
pub mod runtime;
pub mod seal;
mod state_machine;
pub mod transport;

pub use log_store::LogStore;
pub use network::{LazyTlsNetwork, SingleManagerNetwork};
pub use node::{Consistency, NodeConfig, RaftNode, RaftStatus, RaftWatch, ReadError, StartError, WriteError};
pub use state_machine::{KvCommit, SharedState, SmData, StateMachineStore};

use serde::{Deserialize, Serialize};
use shoal_state::{Command, PlanItem, StateError};
use shoal_types::Timestamp;
use std::fmt;
use std::io::Cursor;

pub use openraft;

/// Raft node id (a number; the mapping to Shoal node ids is in [`ManagerNode`]).
pub type RaftId = u64;

/// Raft ids go up to 2^63, beyond what JSON tooling (JavaScript, jq) holds exactly in a number:
/// the API writes them as strings and reads strings or numbers.
pub mod raft_id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(u64),
        S(String),
    }

    fn parse<'de, D: Deserializer<'de>>(e: Either) -> Result<u64, D::Error> {
        match e {
            Either::N(n) => Ok(n),
            Either::S(s) => s.parse().map_err(|_| serde::de::Error::custom(format!("invalid raft id {s:?}"))),
        }
    }

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        parse::<D>(Either::deserialize(d)?)
    }

    /// The same for an optional id.
    pub mod option {
        use super::Either;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            match id {
                Some(id) => s.collect_str(id),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            Option::<Either>::deserialize(d)?.map(super::parse::<D>).transpose()
        }
    }
}

/// What the Raft membership records about a manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ManagerNode {
    /// `host:port` of its node-to-node (mTLS) endpoint.
    pub addr: String,
    /// The Shoal node id.
    pub node_id: String,
}

impl fmt::Display for ManagerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

/// A command with its proposal time: the leader stamps `at` once, so every replica applies the
/// same command at the same time and computes the same state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub at: Timestamp,
    pub command: Command,
    /// The entry format of the binary that proposed it: [`formats::STATE`] for one command,
    /// [`formats::ENTRY`] for a batch. Absent (format 1) in entries written before formats
    /// were numbered, and left out while it is 1, so a single command's entry is byte for byte
    /// what older binaries wrote.
    #[serde(default = "shoal_state::format_v1", skip_serializing_if = "is_format_v1")]
    pub format: u32,
    /// Group commit: commands of other writers proposed in the same entry, applied after
    /// `command` in this order, each on its own (one refused leaves the others applied), each
    /// with its own answer ([`Response::batch`]). Only in format 2 entries, which older
    /// binaries refuse instead of reading the first command alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<Command>,
}

impl Request {
    /// One command in its own entry, as every version writes it.
    pub fn single(at: Timestamp, command: Command) -> Request {
        Request { at, command, format: formats::STATE, batch: Vec::new() }
    }

    /// `commands` (at least one) in one entry; a single one is written as by [`Request::single`].
    pub(crate) fn batch(at: Timestamp, mut commands: Vec<Command>) -> Option<Request> {
        if commands.is_empty() {
            return None;
        }
        let rest = commands.split_off(1);
        let command = commands.pop()?;
        let format = if rest.is_empty() { formats::STATE } else { formats::ENTRY };
        Some(Request { at, command, format, batch: rest })
    }
}

fn is_format_v1(f: &u32) -> bool {
    *f == 1
}

/// A Raft transport that learns which log-entry format each peer reads (see
/// [`transport::ENTRY_FORMAT_HEADER`]): the leader batches writes into one entry only while every
/// other member has said it reads batches.
pub trait EntryFormats {
    /// Where the peers' answers are recorded; `None` for a transport with no peers.
    fn peer_contacts(&self) -> Option<transport::PeerContacts>;
}

/// The formats this binary reads; data of a newer one is refused, never misread.
pub mod formats {
    /// The layout of the Raft store (`raft.redb`: tables and keys), recorded in its `raft_meta`
    /// table under `format` (a store without one is format 1).
    /// 2: log entries sealed with the data key (`raft.key`, see [`crate::seal`]).
    pub const STORE: u32 = 2;
    /// The snapshot file (`raft.snapshot`): its magic line names it (`SHOAL-SNAPSHOT-2`: the
    /// rest sealed with the data key; 1, plain, is still read).
    pub const SNAPSHOT_FILE: u32 = 2;
    /// The state in snapshots, and a log entry holding one command.
    pub const STATE: u32 = shoal_state::FORMAT_VERSION;
    /// The log entries this binary reads: 2 adds batches ([`crate::Request::batch`]). Written
    /// only while every member has said it reads them ([`crate::transport::PeerContacts`]).
    pub const ENTRY: u32 = 2;
}

/// Finds the newest `format` that the requests in a JSON log entry, a list of entries, or an
/// append request (`entries`) name, if it is newer than this binary's: for the clear refusal
/// of an entry that does not decode, or does and would be misread.
pub(crate) fn newer_entry_format(v: &serde_json::Value) -> Option<shoal_state::NewerFormat> {
    fn formats(v: &serde_json::Value) -> Vec<u64> {
        match v {
            serde_json::Value::Array(a) => a.iter().flat_map(formats).collect(),
            serde_json::Value::Object(o) if o.contains_key("entries") => formats(&o["entries"]),
            serde_json::Value::Object(o) => o
                .get("payload")
                .and_then(|p| p.get("Normal"))
                .and_then(|n| n.get("format"))
                .and_then(|f| f.as_u64())
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
    let newest = formats(v).into_iter().max()?;
    let found = u32::try_from(newest).unwrap_or(u32::MAX);
    shoal_state::check_format("a Raft log entry", found, formats::ENTRY).err()
}

impl Request {
    /// About how many bytes the request takes encoded: key-value batches by their payload,
    /// anything else as a small command. (Decides whether encoding it is worth a thread hop.)
    ///
    /// Plans and status reports count as small here, as before group commit: under load, their
    /// entries encode faster on Raft's own (higher-priority) thread than on the blocking pool
    /// (a 1,000-node create took 9 s instead of 6 with them moved).
    pub(crate) fn approx_bytes(&self) -> usize {
        let one = |c: &Command| match c {
            Command::Kv { .. } => command_bytes(c),
            _ => 1024,
        };
        one(&self.command) + self.batch.iter().map(one).sum::<usize>()
    }
}

/// Whether `command` may share an entry with other writers' commands (group commit): not what
/// the managers' own control loops write — plans and each node's status reports (already
/// batches, sized and paced by their writers, one in flight), node registrations and node
/// states — nor a backup being restored. Measured on 1,000 simulated nodes and three managers
/// (`scripts/bench-scale.sh`, BENCHMARKS.md): with plans and reports batched too, failover took
/// 2.7–4.2 s instead of 0.8–1.1; with node registrations and states batched, creating 10,000
/// tasks took 9.2–9.8 s instead of 6–7.5; with all of them in their own entries, 5.9–6.2 s and
/// 0.67–0.82 s.
pub(crate) fn batchable(command: &Command) -> bool {
    !matches!(
        command,
        Command::ApplyPlan { .. }
            | Command::ReportTaskStatus { .. }
            | Command::RegisterNode { .. }
            | Command::SetNodeStatus { .. }
            | Command::RestoreBackup { .. }
    )
}

/// About how many bytes `command` takes encoded: key-value batches by their payload, plans by
/// their items (a created task is about 1 KiB), anything else as a small command.
pub(crate) fn command_bytes(command: &Command) -> usize {
    match command {
        Command::ReportTaskStatus { reports, .. } => 128 + reports.len() * 512,
        Command::RegisterNode { node } => 2048 + node.description.images.len() * 128,
        Command::Kv { ops } => ops.iter().map(|op| op.payload_bytes() * 4 / 3 + 64).sum(),
        Command::ApplyPlan { plan } => {
            let items = plan.assign.len()
                + plan.set_desired.len()
                + plan.set_status.len()
                + plan.delete_tasks.len()
                + plan.service_updates.len()
                + plan.job_updates.len();
            256 + plan.create_tasks.len() * 1024 + items * 128
        }
        _ => 1024,
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(&self.command)
            .ok()
            .and_then(|v| v.get("command").and_then(|c| c.as_str()).map(str::to_string))
            .unwrap_or_else(|| "command".into());
        write!(f, "{name}@{}", self.at)?;
        if !self.batch.is_empty() {
            write!(f, " and {} more", self.batch.len())?;
        }
        Ok(())
    }
}

/// The kind of a refused command, so the API can answer 400/404/409 without parsing text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    Conflict,
    Invalid,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<&StateError> for CommandError {
    fn from(e: &StateError) -> Self {
        let kind = match e {
            StateError::NotFound { .. } => ErrorKind::NotFound,
            StateError::VersionConflict { .. }
            | StateError::AlreadyExists { .. }
            | StateError::NameConflict(_)
            | StateError::Migration(_)
            | StateError::NodeRemoved(_)
            | StateError::Conflict(_) => ErrorKind::Conflict,
            StateError::Invalid(_)
            | StateError::InvalidNetwork(_)
            | StateError::ModeChange { .. }
            | StateError::NoPreviousSpec(_)
            | StateError::Backup(_)
            | StateError::NotReplicated(_) => ErrorKind::Invalid,
        };
        CommandError { kind, message: e.to_string() }
    }
}

/// The outcome of applying one [`Request`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The cluster-state index after the command (the version of every object it touched).
    pub index: u64,
    /// Why the command was refused; nothing changed.
    pub error: Option<CommandError>,
    /// Plan items that verification or the state machine refused, with the reason.
    pub rejected: Vec<(PlanItem, String)>,
    /// For a key-value command: each op's outcome, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv: Vec<Result<shoal_kv::Applied<shoal_kv::OpResponse>, shoal_kv::KvError>>,
    /// For a lease keep-alive or time-to-live, answered by the leader from its lease clock
    /// (not through the log): the lease's remaining TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Result<shoal_kv::LeaseTimeToLiveResponse, shoal_kv::KvError>>,
    /// For a batched entry: the answers to [`Request::batch`]'s commands, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<Response>,
}

openraft::declare_raft_types!(
    /// Shoal's Raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = RaftId,
        Node = ManagerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<RaftId>;
pub type Vote = openraft::Vote<RaftId>;
pub type StorageError = openraft::StorageError<RaftId>;
pub type StoredMembership = openraft::StoredMembership<RaftId, ManagerNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<RaftId, ManagerNode>;

/// Opens (or creates) the store in `path` (a redb file): the log store and the state machine,
/// the latter restored from the last snapshot.
pub fn open(path: &std::path::Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    open_with(path, None).map(|(log, sm, _)| (log, sm))
}

/// Opens the store at `path` with its data key; `unlock` opens a wrapped one (autolock).
pub fn open_with(
    path: &std::path::Path,
    unlock: Option<&str>,
) -> Result<(LogStore, StateMachineStore, std::sync::Arc<seal::DataKey>), OpenError> {
    // Owner-only, like the key and the snapshot (stores made by older versions were 0644).
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| OpenError(format!("{}: {e}", path.display())))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| OpenError(format!("{}: {e}", path.display())))?;
    }
    let mut db = redb::Database::create(path).map_err(|e| OpenError(e.to_string()))?;
    compact_if_sparse(&mut db, path);
    let db = std::sync::Arc::new(db);
    log_store::check_store_format(&db).map_err(|e| OpenError(format!("{}: {e}", path.display())))?;
    let key = std::sync::Arc::new(data_key(&db, &path.with_extension("key"), unlock)?);
    let log = LogStore::new(db.clone(), key.clone()).map_err(|e| OpenError(e.to_string()))?;
    let sm = StateMachineStore::new(db, path.with_extension("snapshot"), key.clone())
        .map_err(|e| OpenError(e.to_string()))?;
    Ok((log, sm, key))
}

/// A redb file never shrinks by itself: pages freed as the log is purged behind snapshots are
/// reused, but the file keeps the size of its largest log (a burst of large plans, a big state
/// since removed). When less than half of the file is in use, it is compacted here, on open,
/// the only time the store has no other user (compaction needs the database to itself). A
/// failure is logged and the store opens as it is.
fn compact_if_sparse(db: &mut redb::Database, path: &std::path::Path) {
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let used = match db.begin_write().and_then(|tx| {
        let st = tx.stats();
        tx.abort()?;
        Ok(st?)
    }) {
        Ok(st) => st.allocated_pages() * st.page_size() as u64,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the raft store's statistics; not compacting it");
            return;
        }
    };
    if file_bytes < COMPACT_MIN_BYTES || used.saturating_mul(2) > file_bytes {
        return;
    }
    let started = std::time::Instant::now();
    for _ in 0..16 {
        match db.compact() {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %e, "compacting the raft store failed; it opens as it is");
                return;
            }
        }
    }
    let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        before_bytes = file_bytes,
        used_bytes = used,
        after_bytes = after,
        ms = started.elapsed().as_millis() as u64,
        "compacted the raft store"
    );
}

/// Files smaller than this are left as they are, however sparse.
const COMPACT_MIN_BYTES: u64 = 16 << 20;

/// The store's data key: read from `key_path`, or made there for a store that has never been
/// sealed (a new one, or one from before encryption). A sealed store whose key file is gone is
/// refused: a new key would open nothing.
fn data_key(
    db: &redb::Database,
    key_path: &std::path::Path,
    unlock: Option<&str>,
) -> Result<seal::DataKey, OpenError> {
    let sealed = log_store::is_sealed(db).map_err(OpenError)?;
    let key = if key_path.exists() {
        seal::DataKey::read(key_path, unlock).map_err(|e| OpenError(e.to_string()))?
    } else if sealed {
        return Err(OpenError(format!(
            "the Raft store is encrypted but its data key {} is missing: restore the file, or rebuild this \
             manager (leave and join again, or `cluster init --restore` from a backup)",
            key_path.display()
        )));
    } else {
        seal::DataKey::create(key_path).map_err(OpenError)?
    };
    if !sealed {
        log_store::mark_sealed(db).map_err(OpenError)?;
    }
    Ok(key)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the raft store: {0}")]
pub struct OpenError(pub String);
