//! The MVCC store: per-key histories, the revision log, leases.

use crate::span::Span;
use crate::types::*;
use crate::validate::{check_put, validate, validate_txn};
use crate::KvError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Limits that decide outcomes, so they are part of the replicated state (serialized with the
/// store): every replica must apply with the same ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KvConfig {
    /// Most ops per txn level (etcd `--max-txn-ops`, 128).
    pub max_txn_ops: usize,
    /// Most bytes of keys, values and range ends in one request (etcd `--max-request-bytes`,
    /// 1.5 MiB).
    pub max_request_bytes: usize,
    /// Granted TTLs are raised to this (seconds; etcd's default timing gives 2).
    pub min_lease_ttl: i64,
    /// Grants above this fail (seconds; etcd `MaxLeaseTTL`, 9,000,000,000).
    pub max_lease_ttl: i64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            max_txn_ops: 128,
            max_request_bytes: 1024 * 1024 + 512 * 1024,
            min_lease_ttl: 2,
            max_lease_ttl: 9_000_000_000,
        }
    }
}

/// One replicated command for the store (what a Raft `KvBatch` carries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum Op {
    /// A read (e.g. a linearizable read-only txn sent through the log).
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete range.
    DeleteRange(DeleteRangeRequest),
    /// A txn.
    Txn(TxnRequest),
    /// Compaction at `revision`.
    Compact {
        /// Drop history below this revision.
        revision: i64,
    },
    /// A lease grant; `id` 0 lets the store pick.
    LeaseGrant {
        /// Requested id, or 0.
        id: LeaseId,
        /// Requested TTL in seconds.
        ttl: i64,
    },
    /// A lease revoke (also how the leader expires a lease).
    LeaseRevoke {
        /// The lease.
        id: LeaseId,
    },
}

/// The answer to an [`Op`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum OpResponse {
    /// For [`Op::Range`].
    Range(RangeResponse),
    /// For [`Op::Put`].
    Put(PutResponse),
    /// For [`Op::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// For [`Op::Txn`].
    Txn(TxnResponse),
    /// For [`Op::Compact`].
    Compact(CompactionResponse),
    /// For [`Op::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// For [`Op::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeResponse),
}

/// A response plus the events the operation produced, in order (empty for reads and for
/// operations that changed no key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied<T> {
    /// The response.
    pub response: T,
    /// What watchers see.
    pub events: Vec<Event>,
}

/// Sizes, for metrics and for checking that compaction frees history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Keys that exist at the current revision.
    pub live_keys: usize,
    /// Keys with any stored history (including deleted keys not yet compacted away).
    pub tracked_keys: usize,
    /// Stored versions over all keys (puts and tombstones).
    pub history_entries: usize,
    /// Revisions in the event log (those at or above the compaction revision).
    pub log_revisions: usize,
    /// Events in the event log.
    pub log_events: usize,
    /// Leases.
    pub leases: usize,
    /// Bytes of keys and values held, history included (etcd's "db size", roughly).
    pub bytes: usize,
}

/// The live part of a stored version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Live {
    #[serde(rename = "create")]
    pub(crate) create_revision: i64,
    #[serde(rename = "ver")]
    pub(crate) version: i64,
    #[serde(with = "crate::bytes")]
    pub(crate) value: Vec<u8>,
    #[serde(default)]
    pub(crate) lease: LeaseId,
}

/// One stored version of a key: written at `(rev, sub)` (`sub` = position among the changes
/// of that revision); `live: None` is a tombstone (a deletion).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) rev: i64,
    pub(crate) sub: u32,
    pub(crate) live: Option<Live>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) ttl: i64,
    /// Derived: keys whose current version carries this lease.
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

/// The store. See the crate documentation for the layout and the lease model.
///
/// `PartialEq` compares the replicated state only (not the leader-local lease deadlines).
#[derive(Clone, Debug)]
pub struct KvStore {
    pub(crate) config: KvConfig,
    pub(crate) revision: i64,
    pub(crate) compact_revision: i64,
    pub(crate) next_lease_id: LeaseId,
    /// key -> versions, oldest first, ordered by `(rev, sub)`; never empty.
    pub(crate) keys: BTreeMap<Vec<u8>, Vec<Entry>>,
    /// Derived: revision -> keys changed at it, in `sub` order; revisions >= compact_revision.
    pub(crate) log: BTreeMap<i64, Vec<Vec<u8>>>,
    pub(crate) leases: BTreeMap<LeaseId, Lease>,
    /// Leader-local soft state: lease deadlines (ns since the epoch). Not serialized.
    pub(crate) deadlines: BTreeMap<LeaseId, u64>,
    /// Leader-local: the term in which [`KvStore::promote`] last made the deadlines this
    /// leader's.
    pub(crate) promoted_term: Option<u64>,
}

impl PartialEq for KvStore {
    fn eq(&self, o: &Self) -> bool {
        self.config == o.config
            && self.revision == o.revision
            && self.compact_revision == o.compact_revision
            && self.next_lease_id == o.next_lease_id
            && self.keys == o.keys
            && self.log == o.log
            && self.leases == o.leases
    }
}

impl Eq for KvStore {}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new()
    }
}

/// The writes of one revision in progress.
struct Batch {
    /// The revision being written (current + 1).
    rev: i64,
    /// Changes so far; the revision is taken only if this ends above 0.
    sub: u32,
    events: Vec<Event>,
}

/// Compare outcomes for a txn and its nested txns, decided before anything is written.
struct Plan {
    succeeded: bool,
    /// One per nested txn in the chosen branch, in order.
    children: Vec<Plan>,
}

fn kv_of(key: &[u8], e: &Entry, live: &Live) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: live.create_revision,
        mod_revision: e.rev,
        version: live.version,
        value: live.value.clone(),
        lease: live.lease,
    }
}

/// The version visible at `rev`: the last one written at or before it.
fn entry_at(history: &[Entry], rev: i64) -> Option<&Entry> {
    let n = history.partition_point(|e| e.rev <= rev);
    n.checked_sub(1).map(|i| &history[i])
}

fn deadline(now: u64, ttl: i64) -> u64 {
    now.saturating_add(u64::try_from(ttl).unwrap_or(0).saturating_mul(NANOS_PER_SEC))
}

impl KvStore {
    /// An empty store at revision 1 (etcd's first write is revision 2), default limits.
    pub fn new() -> Self {
        KvStore::with_config(KvConfig::default())
    }

    /// An empty store with these limits.
    pub fn with_config(config: KvConfig) -> Self {
        KvStore {
            config,
            revision: 1,
            compact_revision: 0,
            next_lease_id: 1,
            keys: BTreeMap::new(),
            log: BTreeMap::new(),
            leases: BTreeMap::new(),
            deadlines: BTreeMap::new(),
            promoted_term: None,
        }
    }

    /// The limits.
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// The current revision (the header revision of every response).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compaction revision: reads below it fail; 0 if never compacted.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Sizes (walks every key: O(keys)).
    pub fn stats(&self) -> KvStats {
        KvStats {
            live_keys: self.keys.values().filter(|h| h.last().is_some_and(|e| e.live.is_some())).count(),
            tracked_keys: self.keys.len(),
            history_entries: self.keys.values().map(Vec::len).sum(),
            log_revisions: self.log.len(),
            log_events: self.log.values().map(Vec::len).sum(),
            leases: self.leases.len(),
            bytes: self
                .keys
                .iter()
                .map(|(k, h)| {
                    h.iter().map(|e| k.len() + e.live.as_ref().map_or(0, |l| l.value.len())).sum::<usize>()
                })
                .sum(),
        }
    }

    /// [`validate`] with this store's limits.
    pub fn validate(&self, op: &Op) -> Result<(), KvError> {
        validate(op, &self.config)
    }

    // ---- dispatch ----------------------------------------------------------------------------

    /// Applies one command. `now` (ns since the epoch, the command's timestamp) only seeds the
    /// deadline of a granted lease.
    pub fn apply(&mut self, op: Op, now: u64) -> Result<Applied<OpResponse>, KvError> {
        let none = |response| Ok(Applied { response, events: Vec::new() });
        match op {
            Op::Range(r) => none(OpResponse::Range(self.range(&r)?)),
            Op::Put(p) => {
                self.put(p).map(|a| Applied { response: OpResponse::Put(a.response), events: a.events })
            }
            Op::DeleteRange(d) => self
                .delete_range(&d)
                .map(|a| Applied { response: OpResponse::DeleteRange(a.response), events: a.events }),
            Op::Txn(t) => {
                self.txn(t).map(|a| Applied { response: OpResponse::Txn(a.response), events: a.events })
            }
            Op::Compact { revision } => none(OpResponse::Compact(self.compact(revision)?)),
            Op::LeaseGrant { id, ttl } => none(OpResponse::LeaseGrant(self.lease_grant(id, ttl, now)?)),
            Op::LeaseRevoke { id } => self
                .lease_revoke(id)
                .map(|a| Applied { response: OpResponse::LeaseRevoke(a.response), events: a.events }),
        }
    }

    /// Applies commands in order (group commit): each is independent (its own revision if it
    /// writes; a failure affects only its own result).
    pub fn apply_batch(&mut self, ops: Vec<Op>, now: u64) -> Vec<Result<Applied<OpResponse>, KvError>> {
        ops.into_iter().map(|op| self.apply(op, now)).collect()
    }

    // ---- reads -------------------------------------------------------------------------------

    /// Resolves a requested read revision (0 or negative = current).
    fn read_revision(&self, requested: i64) -> Result<i64, KvError> {
        if requested > self.revision {
            return Err(KvError::FutureRevision);
        }
        if requested <= 0 {
            return Ok(self.revision);
        }
        if requested < self.compact_revision {
            return Err(KvError::Compacted { compact_revision: self.compact_revision });
        }
        Ok(requested)
    }

    /// etcd `Range`: the keys in the range as of `revision` (0 = current).
    ///
    /// Cost: O(log n + t) to find and walk the `t` tracked keys in the range (deleted keys stay
    /// tracked until compaction), O(log h) per key to find the version at a past revision, plus
    /// a sort when a non-key order is asked for. Values are copied only for the keys returned.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        if req.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        if req.key.len() + req.range_end.len() > self.config.max_request_bytes {
            return Err(KvError::RequestTooLarge);
        }
        let rev = self.read_revision(req.revision)?;
        Ok(self.range_at(req, rev, self.revision))
    }

    fn range_at(&self, req: &RangeRequest, rev: i64, header: i64) -> RangeResponse {
        let mut found: Vec<(&[u8], &Entry, &Live)> = Vec::new();
        if let Some(bounds) = Span::new(&req.key, &req.range_end).bounds() {
            for (k, history) in self.keys.range::<[u8], _>(bounds) {
                if let Some(e) = entry_at(history, rev) {
                    if let Some(live) = &e.live {
                        found.push((k, e, live));
                    }
                }
            }
        }
        let count = found.len() as i64;
        if req.count_only {
            return RangeResponse { revision: header, kvs: Vec::new(), more: false, count };
        }
        let (min_mod, max_mod) = (req.min_mod_revision, req.max_mod_revision);
        let (min_create, max_create) = (req.min_create_revision, req.max_create_revision);
        found.retain(|(_, e, l)| {
            (max_mod == 0 || e.rev <= max_mod)
                && (min_mod == 0 || e.rev >= min_mod)
                && (max_create == 0 || l.create_revision <= max_create)
                && (min_create == 0 || l.create_revision >= min_create)
        });
        let order = match (req.sort_target, req.sort_order) {
            (SortTarget::Key, o) => o,
            (_, SortOrder::None) => SortOrder::Ascend,
            (_, o) => o,
        };
        let keyed_ascending = req.sort_target == SortTarget::Key && order == SortOrder::Ascend;
        if order != SortOrder::None && !keyed_ascending {
            // Stable: ties keep key order, in both directions.
            found.sort_by(|a, b| {
                let o = match req.sort_target {
                    SortTarget::Key => a.0.cmp(b.0),
                    SortTarget::Version => a.2.version.cmp(&b.2.version),
                    SortTarget::Create => a.2.create_revision.cmp(&b.2.create_revision),
                    SortTarget::Mod => a.1.rev.cmp(&b.1.rev),
                    SortTarget::Value => a.2.value.cmp(&b.2.value),
                };
                if order == SortOrder::Descend {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 && found.len() > limit {
                found.truncate(limit);
                more = true;
            }
        }
        let kvs = found
            .into_iter()
            .map(|(k, e, l)| {
                if req.keys_only {
                    KeyValue {
                        key: k.to_vec(),
                        create_revision: l.create_revision,
                        mod_revision: e.rev,
                        version: l.version,
                        value: Vec::new(),
                        lease: l.lease,
                    }
                } else {
                    kv_of(k, e, l)
                }
            })
            .collect();
        RangeResponse { revision: header, kvs, more, count }
    }

    /// The current pair for `key`, if it exists.
    fn current(&self, key: &[u8]) -> Option<KeyValue> {
        let history = self.keys.get(key)?;
        let e = history.last()?;
        e.live.as_ref().map(|l| kv_of(key, e, l))
    }

    /// Whether every key in the compare's range satisfies it (etcd `applyCompare`).
    fn compare(&self, c: &Compare) -> bool {
        let mut any = false;
        if let Some(bounds) = Span::new(&c.key, &c.range_end).bounds() {
            for (_, history) in self.keys.range::<[u8], _>(bounds) {
                let Some(e) = history.last() else { continue };
                let Some(live) = &e.live else { continue };
                any = true;
                if !compare_one(c, e.rev, Some(live)) {
                    return false;
                }
            }
        }
        any || (!matches!(c.target, CompareTarget::Value(_)) && compare_one(c, 0, None))
    }

    // ---- writes ------------------------------------------------------------------------------

    fn begin(&self) -> Batch {
        Batch { rev: self.revision + 1, sub: 0, events: Vec::new() }
    }

    /// Takes the batch's revision if it wrote anything; returns its events.
    fn finish(&mut self, b: Batch) -> Vec<Event> {
        if b.sub > 0 {
            self.revision = b.rev;
        }
        b.events
    }

    /// The header revision inside a batch: the new revision once something was written.
    fn batch_revision(&self, b: &Batch) -> i64 {
        if b.sub > 0 {
            b.rev
        } else {
            self.revision
        }
    }

    /// Writes one version of `key` at the batch's revision; `prev` is its current pair.
    fn write(&mut self, b: &mut Batch, key: Vec<u8>, live: Option<Live>, prev: Option<KeyValue>) {
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        let new_lease = live.as_ref().map_or(0, |l| l.lease);
        if old_lease != new_lease {
            if let Some(l) = self.leases.get_mut(&old_lease) {
                l.keys.remove(&key);
            }
            if let Some(l) = self.leases.get_mut(&new_lease) {
                l.keys.insert(key.clone());
            }
        }
        let entry = Entry { rev: b.rev, sub: b.sub, live };
        let event = match &entry.live {
            Some(l) => Event { kind: EventKind::Put, kv: kv_of(&key, &entry, l), prev_kv: prev },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue { key: key.clone(), mod_revision: b.rev, ..Default::default() },
                prev_kv: prev,
            },
        };
        b.events.push(event);
        b.sub += 1;
        self.log.entry(b.rev).or_default().push(key.clone());
        // Most keys keep one version: no spare capacity until a second one arrives.
        self.keys.entry(key).or_insert_with(|| Vec::with_capacity(1)).push(entry);
    }

    /// The state-dependent put checks (etcd `checkPut`): the lease exists; with
    /// `ignore_value`/`ignore_lease` the key exists.
    fn check_put_state(&self, p: &PutRequest) -> Result<(), KvError> {
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(KvError::LeaseNotFound);
        }
        if (p.ignore_value || p.ignore_lease) && self.current(&p.key).is_none() {
            return Err(KvError::KeyNotFound);
        }
        Ok(())
    }

    /// A checked put; cannot fail.
    fn exec_put(&mut self, b: &mut Batch, p: PutRequest) -> PutResponse {
        let prev = self.current(&p.key);
        let (create_revision, version) =
            prev.as_ref().map_or((b.rev, 1), |k| (k.create_revision, k.version + 1));
        let value = match (&prev, p.ignore_value) {
            (Some(k), true) => k.value.clone(),
            _ => p.value,
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(k), true) => k.lease,
            _ => p.lease,
        };
        let prev_kv = if p.prev_kv { prev.clone() } else { None };
        self.write(b, p.key, Some(Live { create_revision, version, value, lease }), prev);
        PutResponse { revision: b.rev, prev_kv }
    }

    /// A delete range; cannot fail.
    fn exec_delete(&mut self, b: &mut Batch, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let mut doomed = Vec::new();
        if let Some(bounds) = Span::new(&d.key, &d.range_end).bounds() {
            for (k, history) in self.keys.range::<[u8], _>(bounds) {
                if let Some(e) = history.last() {
                    if let Some(l) = &e.live {
                        doomed.push(kv_of(k, e, l));
                    }
                }
            }
        }
        let deleted = doomed.len() as i64;
        let mut prev_kvs = Vec::new();
        for kv in doomed {
            if d.prev_kv {
                prev_kvs.push(kv.clone());
            }
            self.write(b, kv.key.clone(), None, Some(kv));
        }
        DeleteRangeResponse { revision: self.batch_revision(b), deleted, prev_kvs }
    }

    /// etcd `Put`.
    pub fn put(&mut self, req: PutRequest) -> Result<Applied<PutResponse>, KvError> {
        check_put(&req)?;
        if req.key.len() + req.value.len() > self.config.max_request_bytes {
            return Err(KvError::RequestTooLarge);
        }
        self.check_put_state(&req)?;
        let mut b = self.begin();
        let response = self.exec_put(&mut b, req);
        Ok(Applied { response, events: self.finish(b) })
    }

    /// etcd `DeleteRange`. Deleting nothing does not take a revision.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Applied<DeleteRangeResponse>, KvError> {
        if req.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        if req.key.len() + req.range_end.len() > self.config.max_request_bytes {
            return Err(KvError::RequestTooLarge);
        }
        let mut b = self.begin();
        let response = self.exec_delete(&mut b, req);
        Ok(Applied { response, events: self.finish(b) })
    }

    // ---- txn ---------------------------------------------------------------------------------

    /// etcd `Txn`. All compares (nested ones too) see the state before the txn; reads in it
    /// see its earlier writes; every write shares one new revision (none if nothing was
    /// written). Every check runs before the first write, so a failing txn changes nothing.
    pub fn txn(&mut self, req: TxnRequest) -> Result<Applied<TxnResponse>, KvError> {
        validate_txn(&req, &self.config)?;
        let plan = self.plan(&req);
        self.check_txn_state(&req, &plan)?;
        let mut b = self.begin();
        let mut response = self.exec_txn(&mut b, req, &plan);
        response.revision = self.batch_revision(&b);
        Ok(Applied { response, events: self.finish(b) })
    }

    fn plan(&self, t: &TxnRequest) -> Plan {
        let succeeded = t.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &t.success } else { &t.failure };
        let children = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(inner) => Some(self.plan(inner)),
                _ => None,
            })
            .collect();
        Plan { succeeded, children }
    }

    /// etcd `checkTxn`: read revisions and put preconditions of the branches that will run.
    fn check_txn_state(&self, t: &TxnRequest, plan: &Plan) -> Result<(), KvError> {
        let ops = if plan.succeeded { &t.success } else { &t.failure };
        let mut children = plan.children.iter();
        for op in ops {
            match op {
                RequestOp::Range(r) => {
                    self.read_revision(r.revision)?;
                }
                RequestOp::Put(p) => self.check_put_state(p)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(inner) => {
                    if let Some(child) = children.next() {
                        self.check_txn_state(inner, child)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn exec_txn(&mut self, b: &mut Batch, t: TxnRequest, plan: &Plan) -> TxnResponse {
        let ops = if plan.succeeded { t.success } else { t.failure };
        let mut children = plan.children.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                RequestOp::Range(r) => {
                    let header = self.batch_revision(b);
                    let rev = if r.revision > 0 { r.revision } else { header };
                    ResponseOp::Range(self.range_at(&r, rev, header))
                }
                RequestOp::Put(p) => ResponseOp::Put(self.exec_put(b, p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.exec_delete(b, &d)),
                RequestOp::Txn(inner) => match children.next() {
                    Some(child) => {
                        let mut r = self.exec_txn(b, inner, child);
                        r.revision = self.batch_revision(b);
                        ResponseOp::Txn(r)
                    }
                    None => ResponseOp::Txn(TxnResponse::default()),
                },
            };
            responses.push(response);
        }
        TxnResponse { revision: 0, succeeded: plan.succeeded, responses }
    }

    // ---- compaction --------------------------------------------------------------------------

    /// etcd `Compact`: afterwards reads below `revision` and watches starting below it fail
    /// with [`KvError::Compacted`]; reads at `revision` or later, and replays from it, work.
    ///
    /// Frees every version that no read at `>= revision` can see (per key: all but the last
    /// version at or below `revision`, and that one too if it is a deletion) and the log below
    /// `revision`. Cost: O(changes being dropped × log n), independent of untouched keys.
    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, KvError> {
        if revision <= self.compact_revision {
            return Err(KvError::Compacted { compact_revision: self.compact_revision });
        }
        if revision > self.revision {
            return Err(KvError::FutureRevision);
        }
        let kept = self.log.split_off(&revision);
        let dropped = std::mem::replace(&mut self.log, kept);
        // Only keys changed since the last compaction can have prunable versions.
        let touched: BTreeSet<Vec<u8>> = dropped.into_values().flatten().collect();
        for key in touched {
            let Some(history) = self.keys.get_mut(&key) else { continue };
            let first_kept = history.partition_point(|e| e.rev < revision);
            if first_kept == 0 {
                continue;
            }
            // Keep the last version below `revision` (what reads at `revision` see and the
            // `prev_kv` of a change at `revision`) unless it is a deletion.
            let from = if history[first_kept - 1].live.is_some() { first_kept - 1 } else { first_kept };
            history.drain(..from);
            if history.is_empty() {
                self.keys.remove(&key);
            } else if history.capacity() > 2 * history.len() + 4 {
                history.shrink_to_fit();
            }
        }
        self.compact_revision = revision;
        Ok(CompactionResponse { revision: self.revision })
    }

    /// For automatic compaction in etcd's `revision` mode: the revision to compact at so that
    /// the last `retain_revisions` revisions stay readable, or `None` if that is not above the
    /// current compaction revision. The leader calls it periodically (etcd: every 5 minutes)
    /// and proposes [`Op::Compact`] with the result. For etcd's `periodic` mode, the caller
    /// records `(time, revision())` samples and compacts at the revision of the sample that is
    /// one retention period old.
    pub fn auto_compact_target(&self, retain_revisions: i64) -> Option<i64> {
        let target = self.revision.saturating_sub(retain_revisions.max(0));
        (target > self.compact_revision && target >= 1).then_some(target)
    }

    // ---- watch -------------------------------------------------------------------------------

    /// Every event at revisions `>= start_revision` on keys in `(key, range_end)` (as in
    /// [`RangeRequest`]), in revision order and, within a revision, in write order — what a
    /// watcher replays before going live. `start_revision` is taken literally (the watch layer
    /// maps etcd's 0 = "now" to `revision() + 1`). Fails with [`KvError::Compacted`] (carrying
    /// the compaction revision, as a watch cancel reports it) if `start_revision` is below the
    /// compaction revision.
    ///
    /// Cost: O(events since `start_revision` × log h).
    pub fn events_since(
        &self,
        start_revision: i64,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Vec<Event>, KvError> {
        let start = start_revision.max(1);
        if start < self.compact_revision {
            return Err(KvError::Compacted { compact_revision: self.compact_revision });
        }
        let span = Span::new(key, range_end);
        let mut out = Vec::new();
        for (&rev, keys) in self.log.range(start..) {
            for (sub, k) in keys.iter().enumerate() {
                if span.contains(k) {
                    if let Some(ev) = self.event_at(k, rev, sub) {
                        out.push(ev);
                    }
                }
            }
        }
        Ok(out)
    }

    fn event_at(&self, key: &[u8], rev: i64, sub: usize) -> Option<Event> {
        let history = self.keys.get(key)?;
        let sub = u32::try_from(sub).ok()?;
        let i = history.binary_search_by(|e| (e.rev, e.sub).cmp(&(rev, sub))).ok()?;
        let e = &history[i];
        let prev_kv = i.checked_sub(1).and_then(|p| {
            let pe = &history[p];
            pe.live.as_ref().map(|l| kv_of(key, pe, l))
        });
        Some(match &e.live {
            Some(l) => Event { kind: EventKind::Put, kv: kv_of(key, e, l), prev_kv },
            None => Event {
                kind: EventKind::Delete,
                kv: KeyValue { key: key.to_vec(), mod_revision: rev, ..Default::default() },
                prev_kv,
            },
        })
    }

    // ---- leases ------------------------------------------------------------------------------

    /// etcd `LeaseGrant`. `id` 0 picks the lowest free id from a counter kept in the store (so
    /// every replica picks the same). The TTL is raised to the minimum. `now` (the command's
    /// timestamp) sets the lease's deadline in the leader-local deadline table.
    pub fn lease_grant(&mut self, id: LeaseId, ttl: i64, now: u64) -> Result<LeaseGrantResponse, KvError> {
        if ttl > self.config.max_lease_ttl {
            return Err(KvError::LeaseTtlTooLarge);
        }
        let picked = id == 0;
        let id = if picked {
            let mut id = self.next_lease_id.max(1);
            while self.leases.contains_key(&id) {
                id = id.checked_add(1).unwrap_or(1);
            }
            id
        } else {
            id
        };
        if self.leases.contains_key(&id) {
            return Err(KvError::LeaseExists);
        }
        if picked {
            self.next_lease_id = id.checked_add(1).unwrap_or(1);
        }
        let ttl = ttl.max(self.config.min_lease_ttl);
        self.leases.insert(id, Lease { ttl, keys: BTreeSet::new() });
        self.deadlines.insert(id, deadline(now, ttl));
        Ok(LeaseGrantResponse { revision: self.revision, id, ttl })
    }

    /// etcd `LeaseRevoke` (and expiry): deletes the attached keys, in key order, at one new
    /// revision (none if no key was attached), then forgets the lease.
    pub fn lease_revoke(&mut self, id: LeaseId) -> Result<Applied<LeaseRevokeResponse>, KvError> {
        let lease = self.leases.remove(&id).ok_or(KvError::LeaseNotFound)?;
        self.deadlines.remove(&id);
        let mut b = self.begin();
        for key in lease.keys {
            let prev = self.current(&key);
            if prev.is_some() {
                self.write(&mut b, key, None, prev);
            }
        }
        let revision = self.batch_revision(&b);
        Ok(Applied { response: LeaseRevokeResponse { revision }, events: self.finish(b) })
    }

    /// etcd `LeaseKeepAlive` (leader only; not replicated): pushes the deadline to
    /// `now + TTL` and returns the TTL. A lease past its deadline is not renewed (it is about
    /// to be revoked): [`KvError::LeaseNotFound`], which the gRPC layer answers as TTL 0.
    pub fn lease_keepalive(&mut self, id: LeaseId, now: u64) -> Result<i64, KvError> {
        let ttl = self.leases.get(&id).ok_or(KvError::LeaseNotFound)?.ttl;
        if self.deadlines.get(&id).is_some_and(|&d| d <= now) {
            return Err(KvError::LeaseNotFound);
        }
        self.deadlines.insert(id, deadline(now, ttl));
        Ok(ttl)
    }

    /// etcd `LeaseTimeToLive`: remaining seconds (truncated, at least 0; the granted TTL if
    /// this replica has no deadline for it), granted TTL and, if asked, the attached keys.
    /// Unknown lease: [`KvError::LeaseNotFound`], which the gRPC layer answers as TTL -1.
    pub fn lease_time_to_live(
        &self,
        id: LeaseId,
        now: u64,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, KvError> {
        let lease = self.leases.get(&id).ok_or(KvError::LeaseNotFound)?;
        let ttl = match self.deadlines.get(&id) {
            Some(&d) => i64::try_from(d.saturating_sub(now) / NANOS_PER_SEC).unwrap_or(i64::MAX),
            None => lease.ttl,
        };
        Ok(LeaseTimeToLiveResponse {
            revision: self.revision,
            id,
            ttl,
            granted_ttl: lease.ttl,
            keys: if keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        })
    }

    /// etcd `LeaseLeases`: every lease id, ascending.
    pub fn leases(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }

    /// The leases whose deadline is at or before `now`, earliest first (ties by id). The leader
    /// calls this with its clock (etcd: every 500 ms) and proposes [`Op::LeaseRevoke`] for
    /// each. Leases without a deadline on this replica never show up: a new leader must call
    /// [`KvStore::refresh_all_leases`] first.
    pub fn expired_leases(&self, now: u64) -> Vec<LeaseId> {
        let mut due: Vec<(u64, LeaseId)> =
            self.deadlines.iter().filter(|(_, &d)| d <= now).map(|(&id, &d)| (d, id)).collect();
        due.sort_unstable();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// On becoming leader (etcd's `Promote`): every lease gets a full TTL from `now`, as etcd
    /// does on a leader change, since deadlines were only known to the old leader.
    pub fn promote(&mut self, term: u64, now: u64) -> bool {
        if self.promoted_term == Some(term) {
            return false;
        }
        self.refresh_all_leases(now);
        self.promoted_term = Some(term);
        true
    }

    /// Every lease gets a full TTL from `now`.
    pub fn refresh_all_leases(&mut self, now: u64) {
        self.deadlines = self.leases.iter().map(|(&id, l)| (id, deadline(now, l.ttl))).collect();
    }
}

fn compare_one(c: &Compare, mod_revision: i64, live: Option<&Live>) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => live.map_or(0, |l| l.version).cmp(v),
        CompareTarget::Create(v) => live.map_or(0, |l| l.create_revision).cmp(v),
        CompareTarget::Mod(v) => mod_revision.cmp(v),
        CompareTarget::Lease(v) => live.map_or(0, |l| l.lease).cmp(v),
        CompareTarget::Value(v) => live.map_or(&[][..], |l| &l.value[..]).cmp(&v[..]),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}
