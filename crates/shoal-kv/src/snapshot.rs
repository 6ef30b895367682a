//! Serde for the whole store (it goes into Raft snapshots).
//!
//! Only the primary state is written: limits, counters, per-key histories and leases. The
//! revision log and the lease → keys sets are derived from the histories when reading back
//! (each version carries its `(revision, sub)`), so they cannot disagree and cost no space.
//! Lease deadlines are leader-local and are not written. Maps are written as sequences, since
//! JSON object keys must be strings.

use crate::bytes::{De, Ser};
use crate::store::{Entry, KvConfig, KvStore, Lease};
use crate::types::LeaseId;
use serde::de::Error as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

#[derive(Serialize)]
struct StoreRef<'a> {
    config: &'a KvConfig,
    revision: i64,
    compact_revision: i64,
    next_lease_id: LeaseId,
    keys: KeysRef<'a>,
    leases: Vec<LeaseSnap>,
}

struct KeysRef<'a>(&'a BTreeMap<Vec<u8>, Vec<Entry>>);

#[derive(Serialize)]
struct KeyRef<'a> {
    key: Ser<'a>,
    history: &'a [Entry],
}

impl Serialize for KeysRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (key, history) in self.0 {
            seq.serialize_element(&KeyRef { key: Ser(key), history })?;
        }
        seq.end()
    }
}

#[derive(Serialize, Deserialize)]
struct LeaseSnap {
    id: LeaseId,
    ttl: i64,
}

#[derive(Deserialize)]
struct StoreSnap {
    #[serde(default)]
    config: KvConfig,
    revision: i64,
    compact_revision: i64,
    next_lease_id: LeaseId,
    keys: Vec<KeySnap>,
    leases: Vec<LeaseSnap>,
}

#[derive(Deserialize)]
struct KeySnap {
    key: De,
    history: Vec<Entry>,
}

impl Serialize for KvStore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoreRef {
            config: &self.config,
            revision: self.revision,
            compact_revision: self.compact_revision,
            next_lease_id: self.next_lease_id,
            keys: KeysRef(&self.keys),
            leases: self.leases.iter().map(|(&id, l)| LeaseSnap { id, ttl: l.ttl }).collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for KvStore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let snap = StoreSnap::deserialize(d)?;
        rebuild(snap).map_err(D::Error::custom)
    }
}

fn rebuild(snap: StoreSnap) -> Result<KvStore, String> {
    let mut store = KvStore::with_config(snap.config);
    store.revision = snap.revision;
    store.compact_revision = snap.compact_revision;
    store.next_lease_id = snap.next_lease_id;
    if snap.compact_revision > snap.revision {
        return Err("kv snapshot: compaction revision above the current revision".into());
    }
    for l in snap.leases {
        store.leases.insert(l.id, Lease { ttl: l.ttl, keys: Default::default() });
    }
    let mut log: BTreeMap<i64, Vec<(u32, Vec<u8>)>> = BTreeMap::new();
    for KeySnap { key: De(key), history } in snap.keys {
        if history.is_empty() {
            return Err("kv snapshot: a key without history".into());
        }
        let ordered = history.windows(2).all(|w| (w[0].rev, w[0].sub) < (w[1].rev, w[1].sub));
        if !ordered || history.iter().any(|e| e.rev < 1 || e.rev > snap.revision) {
            return Err("kv snapshot: a key's history is out of order or out of range".into());
        }
        for e in history.iter().filter(|e| e.rev >= snap.compact_revision) {
            log.entry(e.rev).or_default().push((e.sub, key.clone()));
        }
        if let Some(lease) = history.last().and_then(|e| e.live.as_ref()).map(|l| l.lease).filter(|&l| l != 0)
        {
            let l =
                store.leases.get_mut(&lease).ok_or("kv snapshot: a key is attached to an unknown lease")?;
            l.keys.insert(key.clone());
        }
        if store.keys.insert(key, history).is_some() {
            return Err("kv snapshot: a key appears twice".into());
        }
    }
    for (rev, mut changes) in log {
        changes.sort_unstable();
        if changes.iter().enumerate().any(|(i, (sub, _))| *sub as usize != i) {
            return Err(format!("kv snapshot: the changes of revision {rev} are not numbered 0.."));
        }
        store.log.insert(rev, changes.into_iter().map(|(_, k)| k).collect());
    }
    Ok(store)
}
