//! Errors, with etcd's exact messages and gRPC codes (etcd `api/v3rpc/rpctypes/error.go`).

use serde::{Deserialize, Serialize};

/// Why a request failed. A failed request changes nothing.
///
/// `Display` is etcd's exact message (clients such as etcdctl print it verbatim and clientv3
/// matches on it); [`KvError::grpc_code`] is the status code etcd sends with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvError {
    /// A range, put, delete or compare with an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a non-empty value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a non-zero lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More operations in a txn (or one of its branches) than the configured limit.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn that would write one key twice (put/put or put/delete overlap).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// An unknown sort order or target (for the gRPC layer, which sees raw enum numbers).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// The revision asked for is below the compaction point.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compaction revision (what a watch cancel reports).
        compact_revision: i64,
    },
    /// The revision asked for is above the store's current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The request's keys and values exceed the configured byte limit.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// The lease does not exist (revoke, keep-alive, time-to-live, or put with a lease).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant with an id that is already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL above the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
}

/// The gRPC status codes the errors map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GrpcCode {
    /// Code 3.
    InvalidArgument,
    /// Code 5.
    NotFound,
    /// Code 9.
    FailedPrecondition,
    /// Code 11.
    OutOfRange,
}

impl GrpcCode {
    /// The code's name as gRPC spells it (`InvalidArgument`).
    pub fn name(self) -> &'static str {
        match self {
            GrpcCode::InvalidArgument => "InvalidArgument",
            GrpcCode::NotFound => "NotFound",
            GrpcCode::FailedPrecondition => "FailedPrecondition",
            GrpcCode::OutOfRange => "OutOfRange",
        }
    }

    /// The numeric code on the wire (`grpc-status`).
    pub fn number(self) -> i32 {
        match self {
            GrpcCode::InvalidArgument => 3,
            GrpcCode::NotFound => 5,
            GrpcCode::FailedPrecondition => 9,
            GrpcCode::OutOfRange => 11,
        }
    }
}

impl KvError {
    /// The gRPC status code etcd answers this error with.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            KvError::EmptyKey
            | KvError::KeyNotFound
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::TooManyOps
            | KvError::DuplicateKey
            | KvError::InvalidSortOption
            | KvError::RequestTooLarge => GrpcCode::InvalidArgument,
            KvError::Compacted { .. } | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
                GrpcCode::OutOfRange
            }
            KvError::LeaseNotFound => GrpcCode::NotFound,
            KvError::LeaseExists => GrpcCode::FailedPrecondition,
        }
    }
}
