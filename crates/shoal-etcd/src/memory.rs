//! [`MemoryBackend`]: a single-process [`EtcdBackend`] over a [`KvStore`] in a mutex.
//!
//! **A test double for the gRPC translation layer only.** Nothing is replicated or persisted;
//! Shoal's real backend runs the store inside the managers' Raft state machine.

use crate::backend::{BackendError, EtcdBackend, Header, Member, Status, WatchFeed, WatchMessage};
use shoal_kv::{
    Event, KvError, KvStore, LeaseId, LeaseTimeToLiveResponse, Op, OpResponse, RangeRequest, RangeResponse,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc};

/// The cluster id the memory backend reports.
pub const MEMORY_CLUSTER_ID: u64 = 0x5348_4f41_4c00_0001;
/// The member id the memory backend reports.
pub const MEMORY_MEMBER_ID: u64 = 0x5348_4f41_4c00_0002;

/// One revision's events, as broadcast to watchers.
#[derive(Debug)]
struct Batch {
    revision: i64,
    events: Vec<Event>,
}

/// A live subscription, the replay that precedes it, and the revision the replay reaches.
type Subscription = (broadcast::Receiver<Arc<Batch>>, Vec<Batch>, i64);

/// See the module documentation.
pub struct MemoryBackend {
    store: Mutex<KvStore>,
    batches: broadcast::Sender<Arc<Batch>>,
    client_urls: Mutex<Vec<String>>,
    /// Itself, for the watch tasks (which must not keep the backend alive).
    me: Weak<MemoryBackend>,
    leader: AtomicBool,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether `k` is in `[key, range_end)` with etcd's `range_end` conventions.
fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

/// Splits events (in revision order) into one batch per revision.
fn by_revision(events: Vec<Event>) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    for e in events {
        let rev = e.kv.mod_revision;
        match out.last_mut() {
            Some(b) if b.revision == rev => b.events.push(e),
            _ => out.push(Batch { revision: rev, events: vec![e] }),
        }
    }
    out
}

impl MemoryBackend {
    /// An empty store, with a lease-expiry ticker (every 100 ms) on the current tokio runtime
    /// that stops when the backend is dropped.
    pub fn new() -> Arc<Self> {
        let (batches, _) = broadcast::channel(1024);
        let me = Arc::new_cyclic(|me| MemoryBackend {
            store: Mutex::new(KvStore::new()),
            batches,
            client_urls: Mutex::new(Vec::new()),
            me: me.clone(),
            leader: AtomicBool::new(true),
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(expiry_ticker(weak));
        me
    }

    /// Sets the client URLs `MemberList` reports.
    pub fn set_client_urls(&self, urls: Vec<String>) {
        *self.client_urls.lock().unwrap_or_else(|p| p.into_inner()) = urls;
    }

    /// Pretends this member has (or has lost) its leader: `has_leader` only, for testing
    /// `hasleader: true` streams.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    /// Watches currently subscribed (lets tests wait until a client's watch is registered).
    pub fn watch_count(&self) -> usize {
        self.batches.receiver_count()
    }

    fn store(&self) -> MutexGuard<'_, KvStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies under the lock and publishes the events before releasing it, so watchers that
    /// subscribe under the lock see every later revision exactly once.
    fn apply(&self, op: Op) -> Result<OpResponse, KvError> {
        let mut store = self.store();
        let applied = store.apply(op, now_ns())?;
        if !applied.events.is_empty() {
            let _ = self.batches.send(Arc::new(Batch { revision: store.revision(), events: applied.events }));
        }
        Ok(applied.response)
    }

    fn expire(&self) {
        let expired = self.store().expired_leases(now_ns());
        for id in expired {
            match self.apply(Op::LeaseRevoke { id }) {
                Ok(_) | Err(KvError::LeaseNotFound) => {}
                Err(e) => tracing::warn!(error = %e, id, "memory backend: lease expiry failed"),
            }
        }
    }

    /// Subscribes and replays from `start` under the lock: the replay and the subscription
    /// meet without a gap or an overlap.
    fn subscribe(&self, start: i64, key: &[u8], range_end: &[u8]) -> Result<Subscription, KvError> {
        let store = self.store();
        let rx = self.batches.subscribe();
        let events = store.events_since(start, key, range_end)?;
        Ok((rx, by_revision(events), store.revision()))
    }
}

async fn expiry_ticker(backend: Weak<MemoryBackend>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        match backend.upgrade() {
            Some(b) => b.expire(),
            None => return,
        }
    }
}

/// Feeds one watcher: replay, then live batches; after a broadcast lag, replays again from
/// the store (or reports the compaction if that history is gone).
struct Watch {
    backend: Weak<MemoryBackend>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The next revision to deliver.
    next: i64,
    tx: mpsc::Sender<WatchMessage>,
}

impl Watch {
    async fn run(self, mut rx: broadcast::Receiver<Arc<Batch>>, replay: Vec<Batch>, current: i64) {
        let Watch { backend, key, range_end, mut next, tx } = self;
        let mut pending = replay;
        let mut caught_up = current;
        loop {
            for b in pending.drain(..) {
                next = b.revision + 1;
                if tx.send(WatchMessage::Events { revision: b.revision, events: b.events }).await.is_err() {
                    return;
                }
            }
            if caught_up >= next && tx.send(WatchMessage::Progress { revision: caught_up }).await.is_err() {
                return;
            }
            // Live.
            loop {
                match rx.recv().await {
                    Ok(b) if b.revision < next => {}
                    Ok(b) => {
                        next = b.revision + 1;
                        let events: Vec<Event> = b
                            .events
                            .iter()
                            .filter(|e| in_range(&e.kv.key, &key, &range_end))
                            .cloned()
                            .collect();
                        let msg = if events.is_empty() {
                            WatchMessage::Progress { revision: b.revision }
                        } else {
                            WatchMessage::Events { revision: b.revision, events }
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            // Lagged: catch up from the store.
            let Some(b) = backend.upgrade() else { return };
            match b.subscribe(next, &key, &range_end) {
                Ok((new_rx, replay, current)) => {
                    rx = new_rx;
                    pending = replay;
                    caught_up = current;
                }
                Err(KvError::Compacted { compact_revision }) => {
                    let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(WatchMessage::Error(e.into())).await;
                    return;
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl EtcdBackend for MemoryBackend {
    fn header(&self) -> Header {
        Header {
            cluster_id: MEMORY_CLUSTER_ID,
            member_id: MEMORY_MEMBER_ID,
            raft_term: 1,
            revision: self.store().revision(),
        }
    }

    fn has_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    async fn write(&self, op: Op) -> Result<OpResponse, BackendError> {
        if matches!(op, Op::Range(_)) {
            return Err(BackendError::Internal("shoal: reads go through range".into()));
        }
        Ok(self.apply(op)?)
    }

    async fn range(&self, req: RangeRequest, _serializable: bool) -> Result<RangeResponse, BackendError> {
        Ok(self.store().range(&req)?)
    }

    async fn lease_keepalive(&self, id: LeaseId) -> Result<i64, BackendError> {
        Ok(self.store().lease_keepalive(id, now_ns())?)
    }

    async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, BackendError> {
        Ok(self.store().lease_time_to_live(id, now_ns(), keys)?)
    }

    async fn leases(&self) -> Result<Vec<LeaseId>, BackendError> {
        Ok(self.store().leases())
    }

    async fn watch(
        &self,
        start_revision: i64,
        key: Vec<u8>,
        range_end: Vec<u8>,
    ) -> Result<WatchFeed, BackendError> {
        let (tx, rx) = mpsc::channel(64);
        let start = if start_revision <= 0 { self.store().revision() + 1 } else { start_revision };
        match self.subscribe(start, &key, &range_end) {
            Ok((brx, replay, current)) => {
                let watch = Watch { backend: self.me.clone(), key, range_end, next: start, tx };
                tokio::spawn(watch.run(brx, replay, current));
            }
            Err(KvError::Compacted { compact_revision }) => {
                let _ = tx.try_send(WatchMessage::Compacted { compact_revision });
            }
            Err(e) => return Err(e.into()),
        }
        Ok(WatchFeed::from_receiver(rx))
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        Ok(vec![Member {
            id: MEMORY_MEMBER_ID,
            name: "shoal-memory".into(),
            peer_urls: Vec::new(),
            client_urls: self.client_urls.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            is_learner: false,
        }])
    }

    async fn status(&self) -> Result<Status, BackendError> {
        let store = self.store();
        let stats = store.stats();
        let index = u64::try_from(store.revision()).unwrap_or(0);
        // A rough size: the store keeps no byte count; 64 bytes per stored version.
        let db_size = i64::try_from(stats.history_entries.saturating_mul(64)).unwrap_or(i64::MAX).max(4096);
        Ok(Status {
            version: "3.4.0".into(),
            db_size,
            db_size_in_use: db_size,
            leader: MEMORY_MEMBER_ID,
            raft_index: index,
            raft_term: 1,
            raft_applied_index: index,
            is_learner: false,
            errors: Vec::new(),
        })
    }
}
