//! The user key-value store's application layer (etcd's API and `shoal kv` call it): writes
//! group-committed through the one write path, linearizable or serializable reads, lease time
//! kept by the leader, watches that replay history and then follow the log, and the leader's
//! housekeeping (lease expiry, automatic compaction).
//!
//! * **Group commit.** Writes queue; everything queued goes as one [`Command::Kv`] through
//!   [`leader::submit`] (forwarded to the leader from a follower) while the next writes queue
//!   behind it — so concurrent clients share a log entry and an fsync, each op still its own
//!   revision, in order.
//! * **Leases.** Deadlines are the leader's alone (etcd's model, `shoal_kv` docs): keep-alives
//!   and time-to-live go to the leader ([`LeaderOp::KvLease`]); the leader revokes what expired
//!   every [`LEASE_TICK`] through the log, and a manager that becomes leader first gives every
//!   lease a full TTL.
//! * **Watches.** A watch subscribes to the applied revisions first, then replays the store's
//!   history from its start revision, then follows the live revisions it has not seen: in order,
//!   no gaps, no duplicates. A watcher that falls behind the broadcast replays from the store
//!   again; one whose next revision was compacted away is cancelled with the compaction point.

use crate::leader::{self, LeaderOp};
use shoal_kv::{Event, KvError, LeaseTimeToLiveResponse, Op, OpResponse, RangeRequest, RangeResponse};
use shoal_manager::{Manager, WriteError};
use shoal_raft::{Consistency, KvCommit, ReadError};
use shoal_state::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How often the leader looks for expired leases (etcd 3.4: 500 ms).
pub const LEASE_TICK: Duration = Duration::from_millis(500);
/// The most ops one log entry carries.
const MAX_BATCH: usize = 1024;
/// How many batches may be on their way through Raft at once. One: openraft 0.9 appends and
/// fsyncs proposals one after another, so more batches only split the queue into smaller log
/// entries (measured, one manager, 16 in flight: 4,490 puts/s with 4 batches, 7,664 with 1).
const BATCHES_IN_FLIGHT: usize = 1;
/// Scheduler turns given before a batch is cut, so a burst whose requests are still being
/// decoded joins it (256 in flight: 23,100 -> 25,600 puts/s).
const YIELDS_BEFORE_BATCH: usize = 2;
/// Revisions kept before the leader compacts automatically (history for watchers and reads at
/// past revisions; etcd's `--auto-compaction-mode=revision`).
pub const DEFAULT_RETAINED_REVISIONS: i64 = 10_000;

/// Why a key-value request failed: etcd's own errors, or the cluster's.
#[derive(Debug, thiserror::Error)]
pub enum KvFailure {
    #[error(transparent)]
    Kv(#[from] KvError),
    /// No leader (no quorum): etcd's "no leader".
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The cluster could not do it now (the message says why).
    #[error("{0}")]
    Unavailable(String),
}

impl From<WriteError> for KvFailure {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotLeader { .. } => KvFailure::NoLeader,
            WriteError::Unavailable(m) if m == leader::NO_LEADER => KvFailure::NoLeader,
            other => KvFailure::Unavailable(other.to_string()),
        }
    }
}

impl From<ReadError> for KvFailure {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotLeader { .. } => KvFailure::NoLeader,
            ReadError::Unavailable(m) if m == leader::NO_LEADER => KvFailure::NoLeader,
            ReadError::Unavailable(m) => KvFailure::Unavailable(m),
        }
    }
}

/// One revision's changes, or the end of a watch that fell behind compaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    Events {
        revision: i64,
        events: Vec<Event>,
    },
    /// Everything up to `revision` has been sent (after the replay).
    Progress {
        revision: i64,
    },
    Compacted {
        compact_revision: i64,
    },
}

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<OpResponse, KvFailure>>,
}

/// The key-value store's operations on this manager.
pub struct KvApp {
    m: Arc<Manager>,
    queue: mpsc::Sender<Pending>,
}

fn now_nanos() -> u64 {
    shoal_types::Timestamp::from_system_time(std::time::SystemTime::now()).as_nanos()
}

/// The revision a response's header carries.
pub fn revision_of(r: &OpResponse) -> i64 {
    match r {
        OpResponse::Range(x) => x.revision,
        OpResponse::Put(x) => x.revision,
        OpResponse::DeleteRange(x) => x.revision,
        OpResponse::Txn(x) => x.revision,
        OpResponse::Compact(x) => x.revision,
        OpResponse::LeaseGrant(x) => x.revision,
        OpResponse::LeaseRevoke(x) => x.revision,
    }
}

/// Whether `k` is in etcd's `(key, range_end)`: one key when `range_end` is empty, every key
/// from `key` on when it is `\0`, else `[key, range_end)`.
fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    match range_end {
        [] => k == key,
        [0] => k >= key,
        end => k >= key && k < end,
    }
}

impl KvApp {
    /// Starts the group-commit task and the leader's housekeeping for this manager.
    pub fn start(m: Arc<Manager>, retained_revisions: i64) -> Arc<KvApp> {
        let (queue, rx) = mpsc::channel(16 * MAX_BATCH);
        tokio::spawn(commit_loop(m.clone(), rx));
        tokio::spawn(housekeeping(m.clone(), retained_revisions));
        Arc::new(KvApp { m, queue })
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.m
    }

    /// A write (put, delete, txn, compaction, lease grant or revoke), committed through Raft
    /// with whatever else is queued. Requests that cannot succeed fail here, before the log.
    pub async fn write(&self, op: Op) -> Result<OpResponse, KvFailure> {
        self.m.node.local(|s| shoal_kv::validate(&op, s.kv().config()))?;
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Pending { op, reply })
            .await
            .map_err(|_| KvFailure::Unavailable("the manager is shutting down".into()))?;
        rx.await.map_err(|_| KvFailure::Unavailable("the manager is shutting down".into()))?
    }

    /// A range: linearizable (read-index through the leader) unless `serializable`.
    pub async fn range(&self, req: RangeRequest, serializable: bool) -> Result<RangeResponse, KvFailure> {
        let read = |s: &shoal_state::ClusterState| s.kv().range(&req);
        let r = if serializable {
            self.m.node.read(Consistency::Stale, read).await?
        } else {
            crate::internal::read_linearizable(&self.m, read).await?
        };
        Ok(r?)
    }

    /// Renews a lease on the leader; its TTL.
    pub async fn lease_keepalive(&self, id: i64) -> Result<i64, KvFailure> {
        Ok(self.lease(id, true, false).await?.ttl)
    }

    /// A lease's remaining time (from the leader's clock) and, if asked, its keys.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, KvFailure> {
        self.lease(id, false, keys).await
    }

    async fn lease(
        &self,
        id: i64,
        keep_alive: bool,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, KvFailure> {
        let r = leader::submit(&self.m, LeaderOp::KvLease { id, keep_alive, keys }).await?;
        match r.and_then(|r| r.lease) {
            Some(r) => Ok(r?),
            None => Err(KvFailure::Unavailable("the leader sent no lease answer".into())),
        }
    }

    /// Every lease id (linearizable).
    pub async fn leases(&self) -> Result<Vec<i64>, KvFailure> {
        Ok(crate::internal::read_linearizable(&self.m, |s| s.kv().leases()).await?)
    }

    /// The store's current revision and compaction point on this replica.
    pub fn revisions(&self) -> (i64, i64) {
        self.m.node.local(|s| (s.kv().revision(), s.kv().compact_revision()))
    }

    /// Watches `(key, range_end)` from `start_revision` (0: the next revision): one item per
    /// revision with changes in range, in order; ends with `Compacted` when the history it
    /// needs is gone, or when the receiver is dropped.
    pub fn watch(
        &self,
        start_revision: i64,
        key: Vec<u8>,
        range_end: Vec<u8>,
    ) -> Result<mpsc::Receiver<WatchItem>, KvFailure> {
        // Subscribe first: nothing applied after the replay's read can be missed.
        let live = self.m.node.subscribe_kv();
        let (start, replay, current) = self.replay(start_revision, &key, &range_end)?;
        let (tx, rx) = mpsc::channel(256);
        let m = self.m.clone();
        tokio::spawn(async move {
            for item in group(replay) {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            // Everything up to the replay's revision has been sent.
            let last = current.max(start - 1);
            if tx.send(WatchItem::Progress { revision: last }).await.is_err() {
                return;
            }
            follow(m, live, tx, last, key, range_end).await;
        });
        Ok(rx)
    }

    /// (the first revision watched, the history from it, the revision it goes up to).
    fn replay(
        &self,
        start_revision: i64,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(i64, Vec<Event>, i64), KvFailure> {
        self.m.node.local(|s| {
            let kv = s.kv();
            let start = if start_revision <= 0 { kv.revision() + 1 } else { start_revision };
            Ok((start, kv.events_since(start, key, range_end)?, kv.revision()))
        })
    }
}

/// Events in revision order, one item per revision.
fn group(events: Vec<Event>) -> Vec<WatchItem> {
    let mut out: Vec<WatchItem> = Vec::new();
    for e in events {
        let rev = e.kv.mod_revision;
        match out.last_mut() {
            Some(WatchItem::Events { revision, events }) if *revision == rev => events.push(e),
            _ => out.push(WatchItem::Events { revision: rev, events: vec![e] }),
        }
    }
    out
}

/// A watch's live part: revisions after `last` as they are applied.
async fn follow(
    m: Arc<Manager>,
    mut live: broadcast::Receiver<Arc<KvCommit>>,
    tx: mpsc::Sender<WatchItem>,
    mut last: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
) {
    loop {
        let items = match live.recv().await {
            Ok(c) if c.revision <= last => continue,
            Ok(c) => {
                let events: Vec<Event> =
                    c.events.iter().filter(|e| in_range(&e.kv.key, &key, &range_end)).cloned().collect();
                last = c.revision;
                if events.is_empty() {
                    continue;
                }
                vec![WatchItem::Events { revision: c.revision, events }]
            }
            // Fell behind the broadcast: catch up from the store's history.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let replay = m.node.local(|s| {
                    let kv = s.kv();
                    kv.events_since(last + 1, &key, &range_end).map(|ev| (ev, kv.revision()))
                });
                match replay {
                    Ok((events, now)) => {
                        last = now;
                        group(events)
                    }
                    Err(KvError::Compacted { compact_revision }) => {
                        let _ = tx.send(WatchItem::Compacted { compact_revision }).await;
                        return;
                    }
                    Err(_) => return,
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for item in items {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// Sends what is queued as one log entry, with up to [`BATCHES_IN_FLIGHT`] entries on their
/// way at once; what arrives meanwhile queues and goes as the next batch.
async fn commit_loop(m: Arc<Manager>, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot lets the queue fill: the next batch is bigger.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // Requests that arrived together (a client's pipelined burst, answered at once by the
        // last batch) are still being decoded by their connections' tasks: let them queue.
        for _ in 0..YIELDS_BEFORE_BATCH {
            tokio::task::yield_now().await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let m = m.clone();
        tokio::spawn(async move {
            commit(&m, batch).await;
            drop(slot);
        });
    }
}

/// Commits one batch and answers each of its writers.
async fn commit(m: &Arc<Manager>, batch: Vec<Pending>) {
    let ops = batch.iter().map(|p| p.op.clone()).collect();
    let outcome = leader::submit(m, LeaderOp::Write { command: Command::Kv { ops } }).await;
    match outcome {
        Ok(Some(resp)) if resp.kv.len() == batch.len() => {
            for (p, r) in batch.into_iter().zip(resp.kv) {
                let _ = p.reply.send(r.map(|a| a.response).map_err(KvFailure::from));
            }
        }
        Ok(_) => {
            for p in batch {
                let _ =
                    p.reply.send(Err(KvFailure::Unavailable("the leader's answer had no outcome".into())));
            }
        }
        Err(e) => {
            let failure = KvFailure::from(e);
            for p in batch {
                let again = match &failure {
                    KvFailure::NoLeader => KvFailure::NoLeader,
                    other => KvFailure::Unavailable(other.to_string()),
                };
                let _ = p.reply.send(Err(again));
            }
        }
    }
}

/// The leader's chores: a full TTL for every lease when it takes over, expired leases revoked,
/// history compacted beyond `retained` revisions.
async fn housekeeping(m: Arc<Manager>, retained: i64) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !m.node.is_leader() {
            continue;
        }
        // Deadlines were the old leader's: start every lease afresh (etcd does the same).
        let term = m.node.status().term;
        m.node.kv_leader(|kv| kv.promote(term, now_nanos()));
        let (expired, compact) =
            m.node.local(|s| (s.kv().expired_leases(now_nanos()), s.kv().auto_compact_target(retained)));
        let mut ops: Vec<Op> = expired.into_iter().map(|id| Op::LeaseRevoke { id }).collect();
        if let Some(revision) = compact {
            ops.push(Op::Compact { revision });
        }
        if ops.is_empty() {
            continue;
        }
        if let Err(e) = leader::submit(&m, LeaderOp::Write { command: Command::Kv { ops } }).await {
            tracing::warn!(error = %e, "key-value housekeeping (lease expiry, compaction) failed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_like_etcds() {
        assert!(in_range(b"a", b"a", b""));
        assert!(!in_range(b"ab", b"a", b""));
        assert!(in_range(b"zz", b"b", b"\0") && !in_range(b"a", b"b", b"\0"));
        assert!(in_range(b"foo1", b"foo", b"fop") && !in_range(b"fop", b"foo", b"fop"));
    }

    #[test]
    fn events_group_by_revision() {
        let ev = |k: &str, rev: i64| Event {
            kind: shoal_kv::EventKind::Put,
            kv: shoal_kv::KeyValue { key: k.into(), mod_revision: rev, ..Default::default() },
            prev_kv: None,
        };
        let items = group(vec![ev("a", 2), ev("b", 2), ev("c", 4)]);
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0], WatchItem::Events { revision: 2, events } if events.len() == 2));
        assert!(matches!(&items[1], WatchItem::Events { revision: 4, events } if events.len() == 1));
    }
}
