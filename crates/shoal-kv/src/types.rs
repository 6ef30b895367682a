//! Requests, responses and events, mirroring etcd's `rpc.proto` and `kv.proto` field by field
//! (minus the response header's cluster/member/term, which the gRPC layer fills in).
//!
//! Numbers are `i64` like the protos. Byte strings are `Vec<u8>`; in JSON they are base64.

use serde::{Deserialize, Serialize};

/// A lease id (`int64 ID` in etcd). 0 means "no lease".
pub type LeaseId = i64;

/// A key-value pair at some revision (etcd `mvccpb.KeyValue`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub key: Vec<u8>,
    /// Revision of the last creation of this key.
    pub create_revision: i64,
    /// Revision of the last modification of this key.
    pub mod_revision: i64,
    /// Number of puts since creation: 1 on create; a deletion resets it to 0.
    pub version: i64,
    /// The value.
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub value: Vec<u8>,
    /// The attached lease, 0 if none.
    pub lease: LeaseId,
}

/// `RangeRequest.SortOrder`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[derive(schemars::JsonSchema)]
pub enum SortOrder {
    /// Key order, unless the target is not `Key` (then ascending).
    #[default]
    None,
    /// Ascending.
    Ascend,
    /// Descending.
    Descend,
}

/// `RangeRequest.SortTarget`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[derive(schemars::JsonSchema)]
pub enum SortTarget {
    /// By key.
    #[default]
    Key,
    /// By version.
    Version,
    /// By create revision.
    Create,
    /// By mod revision.
    Mod,
    /// By value (bytewise).
    Value,
}

/// etcd `RangeRequest`. `serializable` is not the store's concern (the caller decides where a
/// read is served).
///
/// `range_end`: empty = only `key`; `[0]` = every key `>= key`; otherwise `[key, range_end)`
/// (see [`prefix_end`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct RangeRequest {
    /// First key (must not be empty).
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub key: Vec<u8>,
    /// End of the range, see above.
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub range_end: Vec<u8>,
    /// At most this many keys (0 = no limit); `more` tells whether some were left out.
    pub limit: i64,
    /// Read the store as of this revision; 0 (or negative) = current.
    pub revision: i64,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Keep only keys with `mod_revision >=` this (0 = no filter).
    pub min_mod_revision: i64,
    /// Keep only keys with `mod_revision <=` this (0 = no filter).
    pub max_mod_revision: i64,
    /// Keep only keys with `create_revision >=` this (0 = no filter).
    pub min_create_revision: i64,
    /// Keep only keys with `create_revision <=` this (0 = no filter).
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// A read of one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        RangeRequest { key: key.into(), ..Default::default() }
    }
    /// A read of every key starting with `prefix` (etcdctl `get --prefix`).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        RangeRequest { range_end: prefix_end(&key), key, ..Default::default() }
    }
}

/// etcd `RangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RangeResponse {
    /// Header revision: the store's current revision when the read ran.
    pub revision: i64,
    /// The keys (none with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` left keys out.
    pub more: bool,
    /// Number of keys in the range at the read revision, before `limit` (and before the
    /// min/max revision filters, as etcd counts).
    pub count: i64,
}

/// etcd `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct PutRequest {
    /// The key (must not be empty).
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub value: Vec<u8>,
    /// Lease to attach (0 = none, which also detaches a previous lease).
    pub lease: LeaseId,
    /// Return the previous key-value pair.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` must be 0).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        PutRequest { key: key.into(), value: value.into(), ..Default::default() }
    }
}

/// etcd `PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PutResponse {
    /// Header revision (the put's revision).
    pub revision: i64,
    /// The previous pair, if asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// etcd `DeleteRangeRequest` (`range_end` as in [`RangeRequest`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct DeleteRangeRequest {
    /// First key (must not be empty).
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub key: Vec<u8>,
    /// End of the range.
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub range_end: Vec<u8>,
    /// Return the deleted pairs.
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// A delete of one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        DeleteRangeRequest { key: key.into(), ..Default::default() }
    }
    /// A delete of every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        DeleteRangeRequest { range_end: prefix_end(&key), key, ..Default::default() }
    }
}

/// etcd `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeleteRangeResponse {
    /// Header revision (unchanged when nothing was deleted).
    pub revision: i64,
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted pairs, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// `Compare.CompareResult`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[derive(schemars::JsonSchema)]
pub enum CompareResult {
    /// `==`.
    #[default]
    Equal,
    /// `>`.
    Greater,
    /// `<`.
    Less,
    /// `!=`.
    NotEqual,
}

/// `Compare.target` together with its `target_union` value. (In the proto both are separate;
/// a union that does not match the target compares against the target's zero value, which the
/// gRPC layer expresses by passing e.g. `Version(0)`.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum CompareTarget {
    /// Compare the version.
    Version(i64),
    /// Compare the create revision.
    Create(i64),
    /// Compare the mod revision.
    Mod(i64),
    /// Compare the value (bytewise). Always false on a missing key.
    Value(
        #[serde(with = "crate::bytes")]
        #[schemars(with = "crate::schema::Base64Bytes")]
        Vec<u8>,
    ),
    /// Compare the lease id.
    Lease(LeaseId),
}

impl Default for CompareTarget {
    fn default() -> Self {
        CompareTarget::Version(0)
    }
}

/// etcd `Compare`: holds when every key in the range satisfies it; an empty range compares
/// as a pair of zeros, except on `Value`, which is then false.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct Compare {
    /// The comparison.
    pub result: CompareResult,
    /// What to compare, with the operand.
    pub target: CompareTarget,
    /// The key (must not be empty).
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub key: Vec<u8>,
    /// End of the range, as in [`RangeRequest`].
    #[serde(with = "crate::bytes")]
    #[schemars(with = "crate::schema::Base64Bytes")]
    pub range_end: Vec<u8>,
}

impl Compare {
    /// A compare on one key.
    pub fn new(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Compare { result, target, key: key.into(), range_end: Vec::new() }
    }
}

/// etcd `RequestOp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum RequestOp {
    /// `request_range`.
    Range(RangeRequest),
    /// `request_put`.
    Put(PutRequest),
    /// `request_delete_range`.
    DeleteRange(DeleteRangeRequest),
    /// `request_txn` (nested).
    Txn(TxnRequest),
}

/// etcd `ResponseOp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(schemars::JsonSchema)]
pub enum ResponseOp {
    /// `response_range`.
    Range(RangeResponse),
    /// `response_put`.
    Put(PutResponse),
    /// `response_delete_range`.
    DeleteRange(DeleteRangeResponse),
    /// `response_txn`.
    Txn(TxnResponse),
}

/// etcd `TxnRequest`: if every compare holds run `success`, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[derive(schemars::JsonSchema)]
pub struct TxnRequest {
    /// The guards.
    pub compare: Vec<Compare>,
    /// Run when all compares hold.
    pub success: Vec<RequestOp>,
    /// Run otherwise.
    pub failure: Vec<RequestOp>,
}

/// etcd `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TxnResponse {
    /// Header revision: the txn's revision if it wrote, else the current one.
    pub revision: i64,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One response per op of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// etcd `CompactionResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompactionResponse {
    /// Header revision (compaction does not bump it).
    pub revision: i64,
}

/// etcd `LeaseGrantResponse` (`error` is a [`crate::KvError`] instead).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseGrantResponse {
    /// Header revision (a grant does not bump it).
    pub revision: i64,
    /// The lease id (chosen by the store when the request said 0).
    pub id: LeaseId,
    /// The granted TTL in seconds (raised to the minimum).
    pub ttl: i64,
}

/// etcd `LeaseRevokeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseRevokeResponse {
    /// Header revision: the revision of the deletes, or the current one if no key was attached.
    pub revision: i64,
}

/// etcd `LeaseTimeToLiveResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseTimeToLiveResponse {
    /// Header revision.
    pub revision: i64,
    /// The lease.
    pub id: LeaseId,
    /// Remaining seconds (truncated: the lease expires in under `ttl + 1` s).
    pub ttl: i64,
    /// The TTL granted (or last set) for the lease.
    pub granted_ttl: i64,
    /// Attached keys, sorted, if asked for.
    #[serde(with = "crate::bytes::seq")]
    #[schemars(with = "Vec<crate::schema::Base64Bytes>")]
    pub keys: Vec<Vec<u8>>,
}

/// `Event.EventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[derive(schemars::JsonSchema)]
pub enum EventKind {
    /// A put.
    Put,
    /// A delete (of a key that existed).
    Delete,
}

/// A change, as a watcher sees it (etcd `mvccpb.Event`).
///
/// For a `Delete`, `kv` carries only `key` and `mod_revision` (the deletion's revision), like
/// etcd. `prev_kv` is always filled when the key existed before; the watch layer drops it for
/// watchers that did not ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The pair after the change.
    pub kv: KeyValue,
    /// The pair before the change, if the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// The `range_end` that selects every key starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented and what follows dropped; `[0]` (every
/// key) if the prefix is empty or all 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
