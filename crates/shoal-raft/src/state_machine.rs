//! The state machine: Shoal's [`ClusterState`], applied deterministically. Plans are verified
//! against the state at apply time (inside the state machine), so a plan computed on an older
//! snapshot can never overcommit a node or fill a slot twice, on any replica.

use crate::seal::DataKey;
use crate::{Entry, LogId, Request, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftLogId, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use shoal_state::{ClusterState, Command, Event};
use shoal_types::Timestamp;
use std::io::Cursor;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::broadcast;

/// Where snapshots were kept before they moved to their own file (read once, then removed).
const LEGACY_SNAPSHOT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_snapshot");
const KEY_CURRENT: &str = "current";
/// The snapshot file starts with this, then the metadata's length (u64 LE), the metadata
/// (JSON), then the state as it is sent to other managers. The number is the file's format
/// ([`crate::formats::SNAPSHOT_FILE`]): a newer one is refused, never misread.
const SNAPSHOT_MAGIC_V1: &[u8] = b"SHOAL-SNAPSHOT-1\n";
/// Format 2: the same after the magic line, sealed with the data key ([`crate::seal`]).
const SNAPSHOT_MAGIC: &[u8] = b"SHOAL-SNAPSHOT-2\n";
/// The sealed part's additional data.
const SNAPSHOT_PLACE: &[u8] = b"raft.snapshot";
const SNAPSHOT_MAGIC_PREFIX: &[u8] = b"SHOAL-SNAPSHOT-";

/// What the state machine holds; shared read-only with the API and the controllers.
#[derive(Debug, Default)]
pub struct SmData {
    pub state: ClusterState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

pub type SharedState = Arc<RwLock<SmData>>;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl StoredSnapshot {
    /// The magic line, then sealed: the metadata's length (u64 LE), the metadata, the state.
    fn encode(&self, key: &DataKey) -> Result<Vec<u8>, String> {
        let meta = serde_json::to_vec(&self.meta).map_err(|e| e.to_string())?;
        let mut inner = Vec::with_capacity(8 + meta.len() + self.data.len());
        inner.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        inner.extend_from_slice(&meta);
        inner.extend_from_slice(&self.data);
        let sealed = key.seal(SNAPSHOT_PLACE, &inner)?;
        drop(inner);
        let mut out = Vec::with_capacity(SNAPSHOT_MAGIC.len() + sealed.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Reads format 2 (sealed) or 1 (plain, from before encryption).
    fn decode(bytes: Vec<u8>, key: &DataKey) -> Result<StoredSnapshot, String> {
        let mut inner = if let Some(sealed) = bytes.strip_prefix(SNAPSHOT_MAGIC) {
            key.open(SNAPSHOT_PLACE, sealed).map_err(|e| format!("the snapshot file: {e}"))?
        } else if let Some(plain) = bytes.strip_prefix(SNAPSHOT_MAGIC_V1) {
            plain.to_vec()
        } else {
            return Err(snapshot_file_format(&bytes));
        };
        drop(bytes);
        let (len, rest) = inner.split_first_chunk::<8>().ok_or("snapshot file cut short")?;
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| "snapshot metadata too long")?;
        let meta = rest.get(..len).ok_or("snapshot file cut short")?;
        let meta: SnapshotMeta =
            serde_json::from_slice(meta).map_err(|e| format!("snapshot metadata: {e}"))?;
        let data = inner.split_off(8 + len);
        Ok(StoredSnapshot { meta, data })
    }
}

/// Why a snapshot file without today's magic line is refused: a newer format, or no snapshot.
fn snapshot_file_format(bytes: &[u8]) -> String {
    let version = bytes
        .strip_prefix(SNAPSHOT_MAGIC_PREFIX)
        .and_then(|rest| rest.split(|b| *b == b'\n').next())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u32>().ok());
    match version {
        Some(found) => {
            match shoal_state::check_format("the snapshot file", found, crate::formats::SNAPSHOT_FILE) {
                Err(e) => e.to_string(),
                Ok(()) => format!("snapshot file of unknown format {found}"),
            }
        }
        None => "not a Shoal snapshot file".into(),
    }
}

/// Writes `bytes` to `path` atomically and durably (temporary file, fsync, rename, fsync dir).
fn write_file_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The key-value store's changes at one revision, as watchers see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCommit {
    pub revision: i64,
    pub events: Vec<shoal_kv::Event>,
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    /// Seals the snapshot file.
    key: Arc<DataKey>,
    /// The last snapshot (a file beside the log: a large state does not bloat the log's
    /// database or hold its write lock while it is written).
    snapshot_path: Arc<PathBuf>,
    /// The size of the last snapshot built or installed (the snapshot policy's yardstick).
    snapshot_bytes: Arc<AtomicU64>,
    data: SharedState,
    events: broadcast::Sender<Arc<Event>>,
    kv_events: broadcast::Sender<Arc<KvCommit>>,
}

impl StateMachineStore {
    pub(crate) fn new(
        db: Arc<Database>,
        snapshot_path: PathBuf,
        key: Arc<DataKey>,
    ) -> Result<Self, redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(LEGACY_SNAPSHOT)?;
        tx.commit()?;
        let (events, _) = broadcast::channel(8192);
        let (kv_events, _) = broadcast::channel(8192);
        let sm = StateMachineStore {
            db,
            key,
            snapshot_path: Arc::new(snapshot_path),
            snapshot_bytes: Arc::default(),
            data: Arc::default(),
            events,
            kv_events,
        };
        if let Some(stored) = sm.read_stored().map_err(|e| redb::Error::Corrupted(e.to_string()))? {
            sm.snapshot_bytes.store(stored.data.len() as u64, Ordering::Relaxed);
            let state = decode_state(&stored.data).map_err(redb::Error::Corrupted)?;
            let mut d = sm.data.write().unwrap_or_else(PoisonError::into_inner);
            d.state = state;
            d.last_applied = stored.meta.last_log_id;
            d.membership = stored.meta.last_membership.clone();
        }
        Ok(sm)
    }

    /// The live state, for reads (API, controllers). Hold the lock briefly.
    pub fn shared(&self) -> SharedState {
        self.data.clone()
    }

    /// Every change the state machine applies, as events (for watches and the event stream).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Every revision of the key-value store as it is applied (watches; a receiver that lags
    /// behind replays from the store's history).
    pub fn subscribe_kv(&self) -> broadcast::Receiver<Arc<KvCommit>> {
        self.kv_events.subscribe()
    }

    /// The size of the last snapshot, in bytes.
    pub(crate) fn snapshot_bytes(&self) -> Arc<AtomicU64> {
        self.snapshot_bytes.clone()
    }

    /// The current snapshot: the file, or (from an older version) the log database's entry.
    fn read_stored(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::IO {
            source: StorageIOError::read_snapshot(None, &std::io::Error::other(e.to_string())),
        };
        match std::fs::read(&*self.snapshot_path) {
            Ok(bytes) => return StoredSnapshot::decode(bytes, &self.key).map(Some).map_err(|e| err(&e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&e)),
        }
        let map = |e: redb::Error| StorageError::IO { source: StorageIOError::read_snapshot(None, &e) };
        let tx = self.db.begin_read().map_err(|e| map(e.into()))?;
        let t = tx.open_table(LEGACY_SNAPSHOT).map_err(|e| map(e.into()))?;
        match t.get(KEY_CURRENT).map_err(|e| map(e.into()))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StorageError::IO { source: StorageIOError::read_snapshot(None, &e) }),
        }
    }

    fn write_stored(&self, s: &StoredSnapshot) -> Result<(), StorageError> {
        let sig = Some(s.meta.signature());
        let err = |e: &dyn std::fmt::Display| StorageError::IO {
            source: StorageIOError::write_snapshot(sig.clone(), &std::io::Error::other(e.to_string())),
        };
        let bytes = s.encode(&self.key).map_err(|e| err(&e))?;
        write_file_durably(&self.snapshot_path, &bytes).map_err(|e| err(&e))?;
        self.snapshot_bytes.store(s.data.len() as u64, Ordering::Relaxed);
        // The file is durable: an older version's copy in the database can go.
        let legacy = || -> Result<(), redb::Error> {
            let tx = self.db.begin_write()?;
            let had = tx.open_table(LEGACY_SNAPSHOT)?.remove(KEY_CURRENT)?.is_some();
            if had {
                tx.commit()?;
            } else {
                tx.abort()?;
            }
            Ok(())
        };
        legacy().map_err(|e| err(&e))
    }
}

/// Reads a snapshot's state. A newer format is refused (also one that happens to decode: it
/// would be misread), with a message that says to upgrade.
fn decode_state(data: &[u8]) -> Result<ClusterState, String> {
    #[derive(Deserialize)]
    struct Header {
        #[serde(default = "shoal_state::format_v1")]
        format: u32,
    }
    let check = |found| shoal_state::check_format("the snapshot", found, crate::formats::STATE);
    match serde_json::from_slice::<shoal_state::Snapshot>(data) {
        Ok(snap) => {
            check(snap.format).map_err(|e| e.to_string())?;
            Ok(ClusterState::restore(snap))
        }
        Err(e) => {
            if let Ok(h) = serde_json::from_slice::<Header>(data) {
                check(h.format).map_err(|e| e.to_string())?;
            }
            Err(format!("cannot decode the snapshot: {e}"))
        }
    }
}

/// Applies one command: plans are verified first; the outcome (or refusal) becomes the response.
fn apply_command(state: &mut ClusterState, at: Timestamp, command: Command) -> (Response, Vec<Event>) {
    let mut rejected = Vec::new();
    let command = match command {
        Command::ApplyPlan { plan } => {
            let v = shoal_core::verify(state, plan);
            rejected = v.rejected;
            Command::ApplyPlan { plan: v.plan }
        }
        other => other,
    };
    match state.apply(at, command) {
        Ok(applied) => {
            rejected.extend(applied.skipped);
            (
                Response { index: applied.index, rejected, kv: applied.kv, ..Default::default() },
                applied.events,
            )
        }
        Err(e) => (
            Response { index: state.index(), error: Some((&e).into()), rejected, ..Default::default() },
            Vec::new(),
        ),
    }
}

/// A snapshot being built: the state as it was when openraft asked (copied while applying
/// waited), serialized and written without holding the state's lock.
pub struct SnapshotBuilder {
    store: StateMachineStore,
    state: shoal_state::Snapshot,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let state = std::mem::take(&mut self.state);
        let (store, last_applied, membership) =
            (self.store.clone(), self.last_applied, self.membership.clone());
        let build = move || -> Result<Snapshot<TypeConfig>, StorageError> {
            let data = serde_json::to_vec(&state)
                .map_err(|e| StorageError::IO { source: StorageIOError::read_state_machine(&e) })?;
            drop(state);
            let snapshot_id = match last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
                None => format!("empty-{}", data.len()),
            };
            let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
            let stored = StoredSnapshot { meta: meta.clone(), data };
            store.write_stored(&stored)?;
            Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
        };
        // Serializing a large state and fsyncing it is blocking work.
        tokio::task::spawn_blocking(build).await.map_err(|e| StorageError::IO {
            source: StorageIOError::read_state_machine(&std::io::Error::other(e.to_string())),
        })?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let d = self.data.read().unwrap_or_else(PoisonError::into_inner);
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut events = Vec::new();
        let mut kv_commits = Vec::new();
        {
            let mut d = self.data.write().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                let log_id = *entry.get_log_id();
                d.last_applied = Some(log_id);
                match entry.payload {
                    EntryPayload::Blank => {
                        responses.push(Response { index: d.state.index(), ..Default::default() })
                    }
                    EntryPayload::Normal(req) => {
                        if let Err(e) =
                            shoal_state::check_format("a Raft log entry", req.format, crate::formats::ENTRY)
                        {
                            tracing::error!(error = %e, index = log_id.index, "cannot apply a log entry");
                            return Err(StorageError::IO {
                                source: StorageIOError::apply(log_id, &std::io::Error::other(e.to_string())),
                            });
                        }
                        // A batch's commands one after the other, each with its own answer.
                        let Request { at, command, batch, .. } = req;
                        let mut first = None;
                        for command in std::iter::once(command).chain(batch) {
                            let (resp, ev) = apply_command(&mut d.state, at, command);
                            events.extend(ev);
                            for applied in resp.kv.iter().flatten() {
                                if let Some(first) = applied.events.first() {
                                    let revision = first.kv.mod_revision;
                                    kv_commits.push(KvCommit { revision, events: applied.events.clone() });
                                }
                            }
                            match &mut first {
                                None => first = Some(resp),
                                Some(f) => f.batch.push(resp),
                            }
                        }
                        responses.push(first.unwrap_or_default());
                    }
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(log_id), m);
                        responses.push(Response { index: d.state.index(), ..Default::default() });
                    }
                }
            }
        }
        for e in events {
            // No subscribers is fine: nobody is watching.
            let _ = self.events.send(Arc::new(e));
        }
        for c in kv_commits {
            let _ = self.kv_events.send(Arc::new(c));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let d = self.data.read().unwrap_or_else(PoisonError::into_inner);
        SnapshotBuilder {
            store: self.clone(),
            state: d.state.snapshot(),
            last_applied: d.last_applied,
            membership: d.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = decode_state(&data).map_err(|e| {
            tracing::error!(error = %e, "refusing the snapshot the leader sent");
            StorageError::IO {
                source: StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(e)),
            }
        })?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_stored(&stored)).await.map_err(|e| {
            StorageError::IO {
                source: StorageIOError::write_snapshot(None, &std::io::Error::other(e.to_string())),
            }
        })??;
        let mut d = self.data.write().unwrap_or_else(PoisonError::into_inner);
        d.state = state;
        d.last_applied = meta.last_log_id;
        d.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.read_stored()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
