//! The state machine: Shoal's [`ClusterState`], applied deterministically. Plans are verified
//! against the state at apply time (inside the state machine), so a plan computed on an older
//! snapshot can never overcommit a node or fill a slot twice, on any replica.

use crate::{Entry, LogId, Request, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftLogId, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use shoal_state::{ClusterState, Command, Event};
use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::broadcast;

const SNAPSHOT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_snapshot");
const KEY_CURRENT: &str = "current";

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

/// The key-value store's changes at one revision, as watchers see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCommit {
    pub revision: i64,
    pub events: Vec<shoal_kv::Event>,
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    data: SharedState,
    events: broadcast::Sender<Arc<Event>>,
    kv_events: broadcast::Sender<Arc<KvCommit>>,
}

impl StateMachineStore {
    pub(crate) fn new(db: Arc<Database>) -> Result<Self, redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(SNAPSHOT)?;
        tx.commit()?;
        let (events, _) = broadcast::channel(8192);
        let (kv_events, _) = broadcast::channel(8192);
        let sm = StateMachineStore { db, data: Arc::default(), events, kv_events };
        if let Some(stored) = sm.read_stored().map_err(|e| redb::Error::Corrupted(e.to_string()))? {
            let state = decode_state(&stored.data).map_err(|e| redb::Error::Corrupted(e.to_string()))?;
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

    fn read_stored(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let map = |e: redb::Error| StorageError::IO { source: StorageIOError::read_snapshot(None, &e) };
        let tx = self.db.begin_read().map_err(|e| map(e.into()))?;
        let t = tx.open_table(SNAPSHOT).map_err(|e| map(e.into()))?;
        match t.get(KEY_CURRENT).map_err(|e| map(e.into()))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StorageError::IO { source: StorageIOError::read_snapshot(None, &e) }),
        }
    }

    fn write_stored(&self, s: &StoredSnapshot) -> Result<(), StorageError> {
        let sig = Some(s.meta.signature());
        let map =
            |e: redb::Error| StorageError::IO { source: StorageIOError::write_snapshot(sig.clone(), &e) };
        let bytes = serde_json::to_vec(s)
            .map_err(|e| StorageError::IO { source: StorageIOError::write_snapshot(sig.clone(), &e) })?;
        let tx = self.db.begin_write().map_err(|e| map(e.into()))?;
        {
            let mut t = tx.open_table(SNAPSHOT).map_err(|e| map(e.into()))?;
            t.insert(KEY_CURRENT, bytes.as_slice()).map_err(|e| map(e.into()))?;
        }
        tx.commit().map_err(|e| map(e.into()))
    }
}

fn decode_state(data: &[u8]) -> Result<ClusterState, serde_json::Error> {
    let snap: shoal_state::Snapshot = serde_json::from_slice(data)?;
    Ok(ClusterState::restore(snap))
}

/// Applies one request: plans are verified first; the outcome (or refusal) becomes the response.
fn apply_request(state: &mut ClusterState, req: Request) -> (Response, Vec<Event>) {
    let mut rejected = Vec::new();
    let command = match req.command {
        Command::ApplyPlan { plan } => {
            let v = shoal_core::verify(state, plan);
            rejected = v.rejected;
            Command::ApplyPlan { plan: v.plan }
        }
        other => other,
    };
    match state.apply(req.at, command) {
        Ok(applied) => {
            rejected.extend(applied.skipped);
            (
                Response { index: applied.index, error: None, rejected, kv: applied.kv, lease: None },
                applied.events,
            )
        }
        Err(e) => (
            Response { index: state.index(), error: Some((&e).into()), rejected, ..Default::default() },
            Vec::new(),
        ),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_applied, membership) = {
            let d = self.data.read().unwrap_or_else(PoisonError::into_inner);
            let data = serde_json::to_vec(&d.state.snapshot())
                .map_err(|e| StorageError::IO { source: StorageIOError::read_state_machine(&e) })?;
            (data, d.last_applied, d.membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.write_stored(&stored)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

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
                        let (resp, ev) = apply_request(&mut d.state, req);
                        events.extend(ev);
                        for applied in resp.kv.iter().flatten() {
                            if let Some(first) = applied.events.first() {
                                let revision = first.kv.mod_revision;
                                kv_commits.push(KvCommit { revision, events: applied.events.clone() });
                            }
                        }
                        responses.push(resp);
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
        self.clone()
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
        let state = decode_state(&data).map_err(|e| StorageError::IO {
            source: StorageIOError::read_snapshot(Some(meta.signature()), &e),
        })?;
        self.write_stored(&StoredSnapshot { meta: meta.clone(), data })?;
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
