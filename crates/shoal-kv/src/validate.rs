//! Stateless request checks, in etcd's order: the gRPC-level checks (`v3rpc/key.go`), then the
//! duplicate-key check, then the request size (etcd checks it when proposing).

use crate::span::Span;
use crate::store::{KvConfig, Op};
use crate::types::{PutRequest, RequestOp, TxnRequest};
use crate::KvError;
use std::collections::BTreeSet;

/// Checks what can be checked without the store's state: empty keys, `ignore_value` with a
/// value, `ignore_lease` with a lease, txn size limits, keys written twice in a txn, lease TTL
/// above the maximum and the request byte limit.
///
/// The store runs this again when applying; the gRPC layer should run it before proposing, so
/// that bad requests never reach the Raft log.
pub fn validate(op: &Op, config: &KvConfig) -> Result<(), KvError> {
    match op {
        Op::Range(r) => {
            non_empty(&r.key)?;
            size(op.payload_bytes(), config)
        }
        Op::Put(p) => {
            check_put(p)?;
            size(op.payload_bytes(), config)
        }
        Op::DeleteRange(d) => {
            non_empty(&d.key)?;
            size(op.payload_bytes(), config)
        }
        Op::Txn(t) => validate_txn(t, config),
        Op::Compact { .. } | Op::LeaseRevoke { .. } => Ok(()),
        Op::LeaseGrant { ttl, .. } => {
            if *ttl > config.max_lease_ttl {
                Err(KvError::LeaseTtlTooLarge)
            } else {
                Ok(())
            }
        }
    }
}

impl Op {
    /// The bytes of keys, range ends and values the op carries (what etcd's request size
    /// limit counts; also how large it is in the log).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Range(r) => r.key.len() + r.range_end.len(),
            Op::Put(p) => p.key.len() + p.value.len(),
            Op::DeleteRange(d) => d.key.len() + d.range_end.len(),
            Op::Txn(t) => txn_bytes(t),
            Op::Compact { .. } | Op::LeaseGrant { .. } | Op::LeaseRevoke { .. } => 0,
        }
    }
}

pub(crate) fn validate_txn(t: &TxnRequest, config: &KvConfig) -> Result<(), KvError> {
    check_txn(t, config.max_txn_ops)?;
    writes_of(&t.success)?;
    writes_of(&t.failure)?;
    size(txn_bytes(t), config)
}

fn non_empty(key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        Err(KvError::EmptyKey)
    } else {
        Ok(())
    }
}

fn size(bytes: usize, config: &KvConfig) -> Result<(), KvError> {
    if bytes > config.max_request_bytes {
        Err(KvError::RequestTooLarge)
    } else {
        Ok(())
    }
}

pub(crate) fn check_put(p: &PutRequest) -> Result<(), KvError> {
    non_empty(&p.key)?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkTxnRequest`: the widest of compares/success/failure against the limit, and
/// nested txns against what is left of it.
fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<(), KvError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    if opc > max_ops {
        return Err(KvError::TooManyOps);
    }
    for c in &t.compare {
        non_empty(&c.key)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => non_empty(&r.key)?,
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) => non_empty(&d.key)?,
            RequestOp::Txn(inner) => check_txn(inner, max_ops - opc)?,
        }
    }
    Ok(())
}

fn txn_bytes(t: &TxnRequest) -> usize {
    let compares: usize = t
        .compare
        .iter()
        .map(|c| {
            let operand = match &c.target {
                crate::CompareTarget::Value(v) => v.len(),
                _ => 0,
            };
            c.key.len() + c.range_end.len() + operand
        })
        .sum();
    let ops: usize = t
        .success
        .iter()
        .chain(&t.failure)
        .map(|op| match op {
            RequestOp::Range(r) => r.key.len() + r.range_end.len(),
            RequestOp::Put(p) => p.key.len() + p.value.len(),
            RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
            RequestOp::Txn(inner) => txn_bytes(inner),
        })
        .sum();
    compares + ops
}

/// The keys a list of ops may write: puts and delete ranges, over every branch of nested txns.
struct Writes<'a> {
    puts: BTreeSet<&'a [u8]>,
    dels: Vec<Span<'a>>,
}

impl<'a> Writes<'a> {
    fn put_conflicts(&self, key: &[u8]) -> bool {
        self.puts.contains(key) || self.dels.iter().any(|d| d.contains(key))
    }
    fn del_conflicts(&self, span: &Span<'_>) -> bool {
        span.bounds().is_some_and(|b| self.puts.range::<[u8], _>(b).next().is_some())
    }
}

/// The duplicate-key check. Like etcd's `checkIntervals`, a key may not be put twice, nor put
/// and deleted, on any path through the txn; the two branches of one nested txn are exclusive,
/// so they may overlap each other. Unlike etcd, the check does not depend on op order (etcd
/// lets a nested txn put a key that a later sibling txn deletes), so no key ever changes twice
/// in one revision. Overlapping deletes are allowed (the second finds nothing).
fn writes_of(ops: &[RequestOp]) -> Result<Writes<'_>, KvError> {
    let mut w = Writes { puts: BTreeSet::new(), dels: Vec::new() };
    for op in ops {
        match op {
            RequestOp::Range(_) => {}
            RequestOp::Put(p) => {
                if w.put_conflicts(&p.key) {
                    return Err(KvError::DuplicateKey);
                }
                w.puts.insert(&p.key);
            }
            RequestOp::DeleteRange(d) => {
                let span = Span::new(&d.key, &d.range_end);
                if w.del_conflicts(&span) {
                    return Err(KvError::DuplicateKey);
                }
                w.dels.push(span);
            }
            RequestOp::Txn(t) => {
                let then = writes_of(&t.success)?;
                let other = writes_of(&t.failure)?;
                for key in then.puts.iter().chain(&other.puts) {
                    if w.put_conflicts(key) {
                        return Err(KvError::DuplicateKey);
                    }
                }
                for span in then.dels.iter().chain(&other.dels) {
                    if w.del_conflicts(span) {
                        return Err(KvError::DuplicateKey);
                    }
                }
                w.puts.extend(then.puts.into_iter().chain(other.puts));
                w.dels.extend(then.dels.into_iter().chain(other.dels));
            }
        }
    }
    Ok(w)
}
