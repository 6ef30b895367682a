//! An etcd-v3-compatible MVCC key-value store, pure and deterministic, meant to live inside
//! Shoal's replicated state machine (issue 16; design note `kv-etcd.md`).
//!
//! No clocks, I/O, randomness or hash-ordered maps: the same commands in the same order give
//! the same state, responses and events on every replica. Time comes in as `now`
//! (nanoseconds since the Unix epoch, Shoal's `Timestamp`). The gRPC server, the Raft wiring
//! and the watch fan-out are built on top; the types here mirror etcd's `rpc.proto` closely so
//! that layer is a thin translation, and [`KvError`]'s messages and gRPC codes are etcd's.
//!
//! # Semantics (etcd's)
//!
//! * One global revision, starting at 1; every request that changes a key takes exactly one
//!   new revision (a txn's writes all share it); a delete that finds nothing, a txn that
//!   writes nothing, lease grants and compaction take none.
//! * Per key: `create_revision`, `mod_revision`, `version` (1 on create, +1 per put; a
//!   deletion resets it, a re-create gets a new `create_revision`).
//! * Reads at a past revision until compacted; [`KvStore::events_since`] replays history for
//!   watchers. Deletion events carry only key and `mod_revision`; every event has `prev_kv`.
//! * Txn: compares on value/version/create/mod/lease over ranges (an empty range compares as
//!   zeros, except value, which is then false); nested txns; reads see earlier writes; a key
//!   written twice is refused; everything is checked before the first write, so a failing
//!   request changes nothing.
//! * [`validate`] holds the state-free checks, for the gRPC layer to run before proposing.
//!
//! # Data layout
//!
//! * `keys: BTreeMap<key, Vec<version>>`: each key's versions, oldest first, each tagged with
//!   its `(revision, sub)` and either the live pair or a tombstone. A read at the current
//!   revision walks the key range and takes each key's last version; a read at a past revision
//!   binary-searches each key's versions: O(log n + t·log h) for `t` keys in the range (keys
//!   deleted and not yet compacted count in `t`).
//! * `log: BTreeMap<revision, Vec<key>>`: the keys changed at each revision, in write order,
//!   for watch replay: O(events since the start revision). Derived from the histories, so it
//!   is not in snapshots.
//! * Leases: `id → {granted TTL, attached keys}`; the key sets are derived from each key's
//!   current lease.
//! * Compaction at `C` drops the log below `C` and, for the keys changed since the previous
//!   compaction only, every version no read at `>= C` can see (all but the last one below
//!   `C`, and that one too if it is a tombstone; a key left with nothing is removed). Memory is
//!   then the live pairs plus the history since `C`; [`KvStore::auto_compact_target`] helps
//!   the leader keep that bounded (etcd's auto-compaction). A replay from `C` itself is
//!   complete, `prev_kv` included (etcd loses deletions at exactly `C`).
//!
//! # Leases and time: what keeps replicas identical
//!
//! Replicated (commands, snapshots): lease ids, granted TTLs, the attachments, and the counter
//! that picks ids for grants with id 0. *Not* replicated: deadlines. As in etcd, only the
//! leader keeps time for leases (etcd-io/etcd#9395): the store holds a leader-local deadline
//! table, excluded from serialization and from `PartialEq`. A grant sets `now + TTL` from the
//! command's timestamp; [`KvStore::lease_keepalive`] (never replicated: it would cost a log
//! write per keep-alive) pushes it on the leader; the leader polls
//! [`KvStore::expired_leases`] with its own clock and proposes [`Op::LeaseRevoke`], a normal
//! command; a new leader calls [`KvStore::refresh_all_leases`] (etcd's full-TTL reset on a
//! leader change). So deadlines only decide which revokes the leader proposes; the replicated
//! state stays a pure function of the command sequence.

/// Standard base64, as Raft entries and snapshots carry bytes; also for other crates' base64.
pub mod bytes;
mod error;
pub mod schema;
mod snapshot;
mod span;
mod store;
mod types;
mod validate;

pub use error::{GrpcCode, KvError};

/// Standard base64 with padding (how keys and values travel in JSON, as in etcd's gateway).
pub mod base64 {
    pub use crate::bytes::{decode, encode};
}
pub use store::{Applied, KvConfig, KvStats, KvStore, Op, OpResponse};
pub use types::*;
pub use validate::validate;

#[cfg(test)]
mod tests;
