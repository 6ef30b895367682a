//! Translation between etcd's protos and [`shoal_kv`] types.

use crate::backend::Header;
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use shoal_kv as kv;
use shoal_kv::KvError;

/// Why a request could not be translated (answered `InvalidArgument`, like etcd).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A store-level validation error with etcd's message.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// An enum value etcd would not know either (e.g. a compare target from a newer proto).
    #[error("etcdserver: {0}")]
    Invalid(&'static str),
}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> Self {
        match e {
            ConvertError::Kv(k) => crate::backend::BackendError::Kv(k).into(),
            ConvertError::Invalid(_) => tonic::Status::invalid_argument(e.to_string()),
        }
    }
}

/// The response header for `revision`.
pub fn header(h: Header, revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision,
        raft_term: h.raft_term,
    })
}

/// A store pair on the wire.
pub fn kv_to_pb(k: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: k.key,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        value: k.value,
        lease: k.lease,
    }
}

/// A store event on the wire; `prev_kv` only if the watcher asked for it.
pub fn event_to_pb(e: kv::Event, prev_kv: bool) -> mvccpb::Event {
    let r#type = match e.kind {
        kv::EventKind::Put => mvccpb::event::EventType::Put,
        kv::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: r#type as i32,
        kv: Some(kv_to_pb(e.kv)),
        prev_kv: if prev_kv { e.prev_kv.map(kv_to_pb) } else { None },
    }
}

fn sort_order(v: i32) -> Result<kv::SortOrder, KvError> {
    use pb::range_request::SortOrder as P;
    match P::try_from(v).map_err(|_| KvError::InvalidSortOption)? {
        P::None => Ok(kv::SortOrder::None),
        P::Ascend => Ok(kv::SortOrder::Ascend),
        P::Descend => Ok(kv::SortOrder::Descend),
    }
}

fn sort_target(v: i32) -> Result<kv::SortTarget, KvError> {
    use pb::range_request::SortTarget as P;
    match P::try_from(v).map_err(|_| KvError::InvalidSortOption)? {
        P::Key => Ok(kv::SortTarget::Key),
        P::Version => Ok(kv::SortTarget::Version),
        P::Create => Ok(kv::SortTarget::Create),
        P::Mod => Ok(kv::SortTarget::Mod),
        P::Value => Ok(kv::SortTarget::Value),
    }
}

/// A `RangeRequest`, plus its `serializable` flag (a placement concern, not the store's).
pub fn range_from_pb(r: pb::RangeRequest) -> Result<(kv::RangeRequest, bool), ConvertError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey.into());
    }
    let req = kv::RangeRequest {
        sort_order: sort_order(r.sort_order)?,
        sort_target: sort_target(r.sort_target)?,
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    };
    Ok((req, r.serializable))
}

/// A `PutRequest`.
pub fn put_from_pb(p: pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

/// A `DeleteRangeRequest`.
pub fn delete_from_pb(d: pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest { key: d.key, range_end: d.range_end, prev_kv: d.prev_kv }
}

/// A `Compare`. The proto keeps the target and its operand (`target_union`) apart; an operand
/// of another kind than the target (or none) compares against the target's zero value, as in
/// etcd (whose getters return the zero value for an unset oneof member).
pub fn compare_from_pb(c: pb::Compare) -> Result<kv::Compare, ConvertError> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result).map_err(|_| ConvertError::Invalid("unknown compare result"))? {
        R::Equal => kv::CompareResult::Equal,
        R::Greater => kv::CompareResult::Greater,
        R::Less => kv::CompareResult::Less,
        R::NotEqual => kv::CompareResult::NotEqual,
    };
    let u = c.target_union;
    let target = match T::try_from(c.target).map_err(|_| ConvertError::Invalid("unknown compare target"))? {
        T::Version => kv::CompareTarget::Version(match u {
            Some(U::Version(v)) => v,
            _ => 0,
        }),
        T::Create => kv::CompareTarget::Create(match u {
            Some(U::CreateRevision(v)) => v,
            _ => 0,
        }),
        T::Mod => kv::CompareTarget::Mod(match u {
            Some(U::ModRevision(v)) => v,
            _ => 0,
        }),
        T::Value => kv::CompareTarget::Value(match u {
            Some(U::Value(v)) => v,
            _ => Vec::new(),
        }),
        T::Lease => kv::CompareTarget::Lease(match u {
            Some(U::Lease(v)) => v,
            _ => 0,
        }),
    };
    Ok(kv::Compare { result, target, key: c.key, range_end: c.range_end })
}

fn request_op_from_pb(op: pb::RequestOp) -> Result<kv::RequestOp, ConvertError> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::RequestRange(r)) => {
            // `serializable` has no meaning inside a txn (the txn is linearizable).
            let (r, _) = range_from_pb(r)?;
            Ok(kv::RequestOp::Range(r))
        }
        Some(R::RequestPut(p)) => Ok(kv::RequestOp::Put(put_from_pb(p))),
        Some(R::RequestDeleteRange(d)) => Ok(kv::RequestOp::DeleteRange(delete_from_pb(d))),
        Some(R::RequestTxn(t)) => Ok(kv::RequestOp::Txn(txn_from_pb(t)?)),
        // etcd (`checkRequestOp`): an empty op is answered "key not found".
        None => Err(KvError::KeyNotFound.into()),
    }
}

/// A `TxnRequest` (nested txns included).
pub fn txn_from_pb(t: pb::TxnRequest) -> Result<kv::TxnRequest, ConvertError> {
    Ok(kv::TxnRequest {
        compare: t.compare.into_iter().map(compare_from_pb).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(request_op_from_pb).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(request_op_from_pb).collect::<Result<_, _>>()?,
    })
}

/// A store `RangeResponse` on the wire.
pub fn range_to_pb(h: Header, r: kv::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(h, r.revision),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A store `PutResponse` on the wire.
pub fn put_to_pb(h: Header, r: kv::PutResponse) -> pb::PutResponse {
    pb::PutResponse { header: header(h, r.revision), prev_kv: r.prev_kv.map(kv_to_pb) }
}

/// A store `DeleteRangeResponse` on the wire.
pub fn delete_to_pb(h: Header, r: kv::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(h, r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

/// A store `TxnResponse` on the wire (nested responses carry headers too, as in etcd).
pub fn txn_to_pb(h: Header, r: kv::TxnResponse) -> pb::TxnResponse {
    let header = header(h, r.revision);
    pb::TxnResponse { header, succeeded: r.succeeded, responses: txn_responses(h, r.responses) }
}

/// A txn's inner responses as etcd 3.4 fills them: a range, put or delete carries only its
/// revision in its header, a nested txn an empty header.
fn txn_responses(h: Header, responses: Vec<kv::ResponseOp>) -> Vec<pb::ResponseOp> {
    use pb::response_op::Response as R;
    let only = |revision: i64| Some(pb::ResponseHeader { revision, ..Default::default() });
    responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                kv::ResponseOp::Range(x) => {
                    R::ResponseRange(pb::RangeResponse { header: only(x.revision), ..range_to_pb(h, x) })
                }
                kv::ResponseOp::Put(x) => {
                    R::ResponsePut(pb::PutResponse { header: only(x.revision), ..put_to_pb(h, x) })
                }
                kv::ResponseOp::DeleteRange(x) => R::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: only(x.revision),
                    ..delete_to_pb(h, x)
                }),
                kv::ResponseOp::Txn(x) => R::ResponseTxn(pb::TxnResponse {
                    header: Some(pb::ResponseHeader::default()),
                    succeeded: x.succeeded,
                    responses: txn_responses(h, x.responses),
                }),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};

    fn cmp(result: R, target: T, u: Option<U>) -> pb::Compare {
        pb::Compare {
            result: result as i32,
            target: target as i32,
            key: b"k".to_vec(),
            range_end: vec![],
            target_union: u,
        }
    }

    #[test]
    fn compare_targets_take_their_operand() {
        let c = compare_from_pb(cmp(R::Greater, T::Mod, Some(U::ModRevision(7)))).expect("ok");
        assert_eq!(c.target, kv::CompareTarget::Mod(7));
        assert_eq!(c.result, kv::CompareResult::Greater);
        let c = compare_from_pb(cmp(R::Equal, T::Value, Some(U::Value(b"v".to_vec())))).expect("ok");
        assert_eq!(c.target, kv::CompareTarget::Value(b"v".to_vec()));
        let c = compare_from_pb(cmp(R::NotEqual, T::Lease, Some(U::Lease(5)))).expect("ok");
        assert_eq!((c.target, c.result), (kv::CompareTarget::Lease(5), kv::CompareResult::NotEqual));
        let c = compare_from_pb(cmp(R::Less, T::Create, Some(U::CreateRevision(3)))).expect("ok");
        assert_eq!(c.target, kv::CompareTarget::Create(3));
    }

    #[test]
    fn mismatched_or_missing_operand_is_the_zero_value() {
        let c = compare_from_pb(cmp(R::Equal, T::Version, Some(U::Value(b"x".to_vec())))).expect("ok");
        assert_eq!(c.target, kv::CompareTarget::Version(0));
        let c = compare_from_pb(cmp(R::Equal, T::Value, None)).expect("ok");
        assert_eq!(c.target, kv::CompareTarget::Value(vec![]));
    }

    #[test]
    fn unknown_enums_are_rejected() {
        let mut c = cmp(R::Equal, T::Version, None);
        c.target = 99;
        assert_eq!(compare_from_pb(c), Err(ConvertError::Invalid("unknown compare target")));
        let r = pb::RangeRequest { key: b"a".to_vec(), sort_order: 9, ..Default::default() };
        assert_eq!(range_from_pb(r).map(|_| ()), Err(ConvertError::Kv(KvError::InvalidSortOption)));
        let r = pb::RangeRequest { key: b"a".to_vec(), sort_target: 9, ..Default::default() };
        let status = tonic::Status::from(range_from_pb(r).map(|_| ()).expect_err("bad sort"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "etcdserver: invalid sort option");
    }

    #[test]
    fn range_translates_every_field() {
        let r = pb::RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 3,
            revision: 4,
            sort_order: 2,
            sort_target: 4,
            serializable: true,
            keys_only: true,
            count_only: true,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
        };
        let (k, ser) = range_from_pb(r).expect("ok");
        assert!(ser);
        assert_eq!(k.sort_order, kv::SortOrder::Descend);
        assert_eq!(k.sort_target, kv::SortTarget::Value);
        assert_eq!((k.limit, k.revision, k.keys_only, k.count_only), (3, 4, true, true));
        assert_eq!(
            (k.min_mod_revision, k.max_mod_revision, k.min_create_revision, k.max_create_revision),
            (1, 2, 3, 4)
        );
        assert_eq!(
            range_from_pb(pb::RangeRequest::default()).map(|_| ()),
            Err(ConvertError::Kv(KvError::EmptyKey))
        );
    }

    #[test]
    fn nested_txn_and_empty_op() {
        use pb::request_op::Request;
        let inner = pb::TxnRequest {
            compare: vec![],
            success: vec![pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: b"x".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        let outer = pb::TxnRequest {
            compare: vec![cmp(R::Equal, T::Version, Some(U::Version(0)))],
            success: vec![pb::RequestOp { request: Some(Request::RequestTxn(inner)) }],
            failure: vec![pb::RequestOp {
                request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: b"y".to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let t = txn_from_pb(outer).expect("ok");
        match &t.success[0] {
            kv::RequestOp::Txn(i) => assert!(matches!(&i.success[0], kv::RequestOp::Put(p) if p.key == b"x")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(&t.failure[0], kv::RequestOp::DeleteRange(d) if d.key == b"y"));
        let bad = pb::TxnRequest { success: vec![pb::RequestOp { request: None }], ..Default::default() };
        assert_eq!(txn_from_pb(bad), Err(ConvertError::Kv(KvError::KeyNotFound)));
    }

    #[test]
    fn responses_carry_headers_and_drop_prev_kv_on_request() {
        let h = Header { cluster_id: 1, member_id: 2, raft_term: 3, revision: 99 };
        let txn = kv::TxnResponse {
            revision: 7,
            succeeded: true,
            responses: vec![kv::ResponseOp::Put(kv::PutResponse { revision: 7, prev_kv: None })],
        };
        let p = txn_to_pb(h, txn);
        let hd = p.header.expect("header");
        assert_eq!((hd.cluster_id, hd.member_id, hd.raft_term, hd.revision), (1, 2, 3, 7));
        assert!(p.succeeded);
        let ev = kv::Event {
            kind: kv::EventKind::Delete,
            kv: kv::KeyValue { key: b"k".to_vec(), mod_revision: 5, ..Default::default() },
            prev_kv: Some(kv::KeyValue { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }),
        };
        let with = event_to_pb(ev.clone(), true);
        assert_eq!(with.r#type, mvccpb::event::EventType::Delete as i32);
        assert_eq!(with.prev_kv.map(|k| k.value), Some(b"v".to_vec()));
        assert!(event_to_pb(ev, false).prev_kv.is_none());
    }

    #[test]
    fn backend_errors_have_etcds_codes() {
        use crate::backend::BackendError as B;
        let s = tonic::Status::from(B::Kv(KvError::Compacted { compact_revision: 3 }));
        assert_eq!(
            (s.code(), s.message()),
            (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        );
        let s = tonic::Status::from(B::Kv(KvError::LeaseNotFound));
        assert_eq!((s.code(), s.message()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));
        let s = tonic::Status::from(B::NoLeader);
        assert_eq!((s.code(), s.message()), (tonic::Code::Unavailable, "etcdserver: no leader"));
        let s = tonic::Status::from(B::Timeout);
        assert_eq!((s.code(), s.message()), (tonic::Code::Unavailable, "etcdserver: request timed out"));
        let s = tonic::Status::from(B::Kv(KvError::LeaseExists));
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(tonic::Status::from(B::Internal("x".into())).code(), tonic::Code::Internal);
    }
}
