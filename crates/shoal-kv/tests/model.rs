//! Random op sequences against a trivially simple model: a full copy of the key space at every
//! revision, plus the events of each revision. After every op, reads at every past revision
//! and watch replays from every start revision must match the model (or fail as compacted),
//! and at the end a serde round trip must change nothing.

use proptest::prelude::*;
use shoal_kv::*;
use std::collections::{BTreeMap, BTreeSet};

type State = BTreeMap<Vec<u8>, KeyValue>;

#[derive(Clone, Debug)]
enum MOp {
    Put { key: u8, val: u8, lease: i64 },
    Del { key: u8, end: Option<u8> },
    Txn { guard: u8, version: i64, then: Vec<(u8, Option<u8>)>, other: Vec<(u8, Option<u8>)> },
    Compact { back: i64 },
    Grant { id: i64 },
    Revoke { id: i64 },
}

fn key(k: u8) -> Vec<u8> {
    vec![b'a' + k]
}

struct Model {
    /// `states[r]` = the key space at revision `r` (index 0 unused; the store starts at 1).
    states: Vec<State>,
    /// `events[r]` = the events of revision `r`.
    events: Vec<Vec<Event>>,
    leases: BTreeSet<i64>,
    compact: i64,
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![State::new(), State::new()],
            events: vec![vec![], vec![]],
            leases: BTreeSet::new(),
            compact: 0,
        }
    }
    fn rev(&self) -> i64 {
        self.states.len() as i64 - 1
    }
    fn cur(&self) -> &State {
        &self.states[self.states.len() - 1]
    }
    /// Writes into `next` at revision `rev`.
    fn put(next: &mut State, evs: &mut Vec<Event>, rev: i64, k: Vec<u8>, v: Vec<u8>, lease: i64) {
        let prev = next.get(&k).cloned();
        let kv = KeyValue {
            key: k.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: v,
            lease,
        };
        evs.push(Event { kind: EventKind::Put, kv: kv.clone(), prev_kv: prev });
        next.insert(k, kv);
    }
    fn del(next: &mut State, evs: &mut Vec<Event>, rev: i64, keys: Vec<Vec<u8>>) {
        for k in keys {
            if let Some(prev) = next.remove(&k) {
                let kv = KeyValue { key: k, mod_revision: rev, ..Default::default() };
                evs.push(Event { kind: EventKind::Delete, kv, prev_kv: Some(prev) });
            }
        }
    }
    fn commit(&mut self, next: State, evs: Vec<Event>) -> Vec<Event> {
        if !evs.is_empty() {
            self.states.push(next);
            self.events.push(evs.clone());
        }
        evs
    }

    /// The expected outcome: Ok(events) or the error.
    fn apply(&mut self, op: &MOp) -> Result<Vec<Event>, KvError> {
        let rev = self.rev() + 1;
        let mut next = self.cur().clone();
        let mut evs = Vec::new();
        match op {
            MOp::Put { key: k, val, lease } => {
                if *lease != 0 && !self.leases.contains(lease) {
                    return Err(KvError::LeaseNotFound);
                }
                Model::put(&mut next, &mut evs, rev, key(*k), vec![*val], *lease);
            }
            MOp::Del { key: k, end } => {
                let (a, b) = (key(*k), end.map(key));
                let doomed = next.keys().filter(|x| match &b {
                    None => **x == a,
                    Some(b) => **x >= a && *x < b,
                });
                let doomed: Vec<Vec<u8>> = doomed.cloned().collect();
                Model::del(&mut next, &mut evs, rev, doomed);
            }
            MOp::Txn { guard, version, then, other } => {
                let v = self.cur().get(&key(*guard)).map_or(0, |kv| kv.version);
                for (k, w) in if v == *version { then } else { other } {
                    match w {
                        Some(val) => Model::put(&mut next, &mut evs, rev, key(*k), vec![*val], 0),
                        None => Model::del(&mut next, &mut evs, rev, vec![key(*k)]),
                    }
                }
            }
            MOp::Compact { back } => {
                let target = self.rev() - back;
                if target <= self.compact {
                    return Err(KvError::Compacted { compact_revision: self.compact });
                }
                self.compact = target;
            }
            MOp::Grant { id } => {
                if !self.leases.insert(*id) {
                    return Err(KvError::LeaseExists);
                }
            }
            MOp::Revoke { id } => {
                if !self.leases.remove(id) {
                    return Err(KvError::LeaseNotFound);
                }
                let doomed: Vec<Vec<u8>> =
                    next.values().filter(|kv| kv.lease == *id).map(|kv| kv.key.clone()).collect();
                Model::del(&mut next, &mut evs, rev, doomed);
            }
        }
        Ok(self.commit(next, evs))
    }
}

fn to_op(m: &MOp, store_rev: i64) -> Op {
    let txn_ops = |ops: &[(u8, Option<u8>)]| -> Vec<RequestOp> {
        ops.iter()
            .map(|(k, w)| match w {
                Some(v) => RequestOp::Put(PutRequest::new(key(*k), vec![*v])),
                None => RequestOp::DeleteRange(DeleteRangeRequest::key(key(*k))),
            })
            .collect()
    };
    match m {
        MOp::Put { key: k, val, lease } => {
            Op::Put(PutRequest { lease: *lease, ..PutRequest::new(key(*k), vec![*val]) })
        }
        MOp::Del { key: k, end } => Op::DeleteRange(DeleteRangeRequest {
            range_end: end.map(key).unwrap_or_default(),
            ..DeleteRangeRequest::key(key(*k))
        }),
        MOp::Txn { guard, version, then, other } => Op::Txn(TxnRequest {
            compare: vec![Compare::new(key(*guard), CompareResult::Equal, CompareTarget::Version(*version))],
            success: txn_ops(then),
            failure: txn_ops(other),
        }),
        MOp::Compact { back } => Op::Compact { revision: store_rev - back },
        MOp::Grant { id } => Op::LeaseGrant { id: *id, ttl: 10 },
        MOp::Revoke { id } => Op::LeaseRevoke { id: *id },
    }
}

fn dedup(ops: Vec<(u8, Option<u8>)>) -> Vec<(u8, Option<u8>)> {
    let mut seen = BTreeSet::new();
    ops.into_iter().filter(|(k, _)| seen.insert(*k)).collect()
}

fn mop() -> impl Strategy<Value = MOp> {
    let k = 0u8..6;
    let w = proptest::option::weighted(0.7, any::<u8>());
    prop_oneof![
        6 => (k.clone(), any::<u8>(), prop_oneof![3 => Just(0i64), 1 => 1i64..4]).prop_map(|(key, val, lease)| MOp::Put { key, val, lease }),
        2 => (k.clone(), proptest::option::of(0u8..7)).prop_map(|(key, end)| MOp::Del { key, end }),
        3 => (k.clone(), 0i64..3, proptest::collection::vec((k.clone(), w.clone()), 0..4), proptest::collection::vec((k, w), 0..4))
            .prop_map(|(guard, version, then, other)| MOp::Txn { guard, version, then: dedup(then), other: dedup(other) }),
        1 => (0i64..6).prop_map(|back| MOp::Compact { back }),
        1 => (1i64..4).prop_map(|id| MOp::Grant { id }),
        1 => (1i64..4).prop_map(|id| MOp::Revoke { id }),
    ]
}

fn all_keys(revision: i64) -> RangeRequest {
    RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() }
}

fn check(store: &KvStore, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.revision(), model.rev());
    prop_assert_eq!(store.compact_revision(), model.compact);
    for rev in 1..=model.rev() {
        let got = store.range(&all_keys(rev));
        if rev < model.compact {
            prop_assert_eq!(got, Err(KvError::Compacted { compact_revision: model.compact }));
            continue;
        }
        let want: Vec<KeyValue> = model.states[rev as usize].values().cloned().collect();
        let got = got.map_err(|e| TestCaseError::fail(format!("range at {rev}: {e}")))?;
        prop_assert_eq!(got.count, want.len() as i64);
        prop_assert_eq!(&got.kvs, &want, "range at revision {}", rev);
        // a sub-range: keys b..d
        let sub = store.range(&RangeRequest {
            key: key(1),
            range_end: key(3),
            revision: rev,
            ..Default::default()
        });
        let sub = sub.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want_sub: Vec<KeyValue> =
            want.iter().filter(|kv| kv.key >= key(1) && kv.key < key(3)).cloned().collect();
        prop_assert_eq!(sub.kvs, want_sub);
    }
    prop_assert_eq!(store.range(&all_keys(model.rev() + 1)), Err(KvError::FutureRevision));
    for start in 1..=model.rev() + 1 {
        let got = store.events_since(start, &[0], &[0]);
        if start < model.compact {
            prop_assert_eq!(got, Err(KvError::Compacted { compact_revision: model.compact }));
            continue;
        }
        let want: Vec<Event> = model.events[start as usize..].iter().flatten().cloned().collect();
        prop_assert_eq!(got, Ok(want.clone()), "events since {}", start);
        let one = store.events_since(start, &key(2), &[]);
        let want_one: Vec<Event> = want.into_iter().filter(|e| e.kv.key == key(2)).collect();
        prop_assert_eq!(one, Ok(want_one));
    }
    // lease attachments match the current state
    for id in store.leases() {
        let ttl = store.lease_time_to_live(id, 0, true).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<Vec<u8>> =
            model.cur().values().filter(|kv| kv.lease == id).map(|kv| kv.key.clone()).collect();
        prop_assert_eq!(ttl.keys, want);
    }
    prop_assert_eq!(store.leases(), model.leases.iter().copied().collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(mop(), 1..40)) {
        let mut store = KvStore::new();
        let mut model = Model::new();
        for m in &ops {
            let op = to_op(m, store.revision());
            let want = model.apply(m);
            let got = store.apply(op, 0).map(|a| a.events);
            prop_assert_eq!(got, want, "op {:?}", m);
            check(&store, &model)?;
        }
        let json = serde_json::to_string(&store).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: KvStore = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(back == store);
        check(&back, &model)?;
    }
}
