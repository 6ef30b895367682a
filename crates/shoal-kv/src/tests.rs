//! Unit tests: the etcd behaviours of kv-etcd.md §1.7's probe list (numbered like the probes;
//! revisions relative to the start, as the probes print them), plus edge cases.

use crate::*;

const SEC: u64 = 1_000_000_000;

fn put(s: &mut KvStore, k: &str, v: &str) -> PutResponse {
    s.put(PutRequest::new(k, v)).expect("put").response
}

fn get(s: &KvStore, k: &str) -> Option<KeyValue> {
    s.range(&RangeRequest::key(k)).expect("get").kvs.into_iter().next()
}

fn val(kv: &KeyValue) -> &str {
    std::str::from_utf8(&kv.value).expect("utf8")
}

fn cmp(k: &str, r: CompareResult, t: CompareTarget) -> Compare {
    Compare::new(k, r, t)
}

fn rput(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(PutRequest::new(k, v))
}

fn txn(
    s: &mut KvStore,
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
    failure: Vec<RequestOp>,
) -> Applied<TxnResponse> {
    s.txn(TxnRequest { compare, success, failure }).expect("txn")
}

#[test]
fn probes_01_to_06_revisions_prev_kv_noop_delete_version_reset() {
    let mut s = KvStore::new();
    let r0 = s.revision();
    assert_eq!(r0, 1, "etcd starts at revision 1");
    // 01
    assert_eq!(put(&mut s, "a", "1").revision, r0 + 1);
    // 02
    let p = s.put(PutRequest { prev_kv: true, ..PutRequest::new("a", "2") }).expect("put").response;
    assert_eq!(p.revision, r0 + 2);
    let prev = p.prev_kv.expect("prev");
    assert_eq!((val(&prev), prev.version, prev.create_revision, prev.mod_revision), ("1", 1, r0 + 1, r0 + 1));
    let a = get(&s, "a").expect("a");
    assert_eq!((a.version, a.create_revision, a.mod_revision), (2, r0 + 1, r0 + 2));
    // 04 delete
    let d =
        s.delete_range(&DeleteRangeRequest { prev_kv: true, ..DeleteRangeRequest::key("a") }).expect("del");
    assert_eq!((d.response.deleted, d.response.revision), (1, r0 + 3));
    assert_eq!(val(&d.response.prev_kvs[0]), "2");
    assert_eq!(d.events.len(), 1);
    // 05 delete again: no-op, no revision
    let d = s.delete_range(&DeleteRangeRequest::key("a")).expect("del");
    assert_eq!((d.response.deleted, d.response.revision), (0, r0 + 3));
    assert!(d.events.is_empty());
    assert_eq!(s.revision(), r0 + 3);
    // 06 re-put: version resets, new create revision
    assert_eq!(put(&mut s, "a", "3").revision, r0 + 4);
    let a = get(&s, "a").expect("a");
    assert_eq!((val(&a), a.version, a.create_revision, a.mod_revision), ("3", 1, r0 + 4, r0 + 4));
    // the history is still readable
    let old = s.range(&RangeRequest { revision: r0 + 2, ..RangeRequest::key("a") }).expect("old");
    assert_eq!(val(&old.kvs[0]), "2");
    assert_eq!(old.revision, r0 + 4, "header revision is the current one");
    assert!(s
        .range(&RangeRequest { revision: r0 + 3, ..RangeRequest::key("a") })
        .expect("gone")
        .kvs
        .is_empty());
}

#[test]
fn probes_08_to_12_txn_one_revision_and_compares() {
    let mut s = KvStore::new();
    let r0 = s.revision();
    put(&mut s, "a", "1");
    put(&mut s, "a", "2");
    s.delete_range(&DeleteRangeRequest::key("a")).expect("del");
    put(&mut s, "a", "3"); // r0+4
                           // 08: value(a) == 3 -> put b, put c, get a: one revision
    let t = txn(
        &mut s,
        vec![cmp("a", CompareResult::Equal, CompareTarget::Value(b"3".to_vec()))],
        vec![rput("b", "x"), rput("c", "y"), RequestOp::Range(RangeRequest::key("a"))],
        vec![],
    );
    assert!(t.response.succeeded);
    assert_eq!(t.response.revision, r0 + 5);
    assert_eq!(s.revision(), r0 + 5);
    assert_eq!(get(&s, "b").expect("b").mod_revision, r0 + 5);
    assert_eq!(get(&s, "c").expect("c").mod_revision, r0 + 5);
    assert_eq!(t.events.len(), 2);
    let ResponseOp::Range(ra) = &t.response.responses[2] else { panic!("range response") };
    assert_eq!(val(&ra.kvs[0]), "3");
    // 10: version(a) > 5 is false, empty else: no revision
    let t = txn(
        &mut s,
        vec![cmp("a", CompareResult::Greater, CompareTarget::Version(5))],
        vec![rput("z", "1")],
        vec![],
    );
    assert!(!t.response.succeeded);
    assert_eq!((t.response.revision, s.revision()), (r0 + 5, r0 + 5));
    assert!(t.events.is_empty() && t.response.responses.is_empty());
    // 11: an absent key compares as zeros
    let t = txn(&mut s, vec![cmp("nokey", CompareResult::Equal, CompareTarget::Create(0))], vec![], vec![]);
    assert!(t.response.succeeded);
    for target in [CompareTarget::Version(0), CompareTarget::Mod(0), CompareTarget::Lease(0)] {
        assert!(
            txn(&mut s, vec![cmp("nokey", CompareResult::Equal, target)], vec![], vec![]).response.succeeded
        );
    }
    // 12: ... except on value, which is always false
    for r in [CompareResult::Equal, CompareResult::NotEqual, CompareResult::Less, CompareResult::Greater] {
        let t = txn(&mut s, vec![cmp("missing", r, CompareTarget::Value(Vec::new()))], vec![], vec![]);
        assert!(!t.response.succeeded, "{r:?}");
    }
    assert_eq!(s.revision(), r0 + 5);
}

#[test]
fn txn_compares_every_kind_and_ranges() {
    let mut s = KvStore::new();
    put(&mut s, "k1", "b"); // rev 2
    put(&mut s, "k2", "c"); // rev 3
    put(&mut s, "k2", "d"); // rev 4
    let ok = |s: &mut KvStore, c: Compare| txn(s, vec![c], vec![], vec![]).response.succeeded;
    use CompareResult::*;
    assert!(ok(&mut s, cmp("k1", Less, CompareTarget::Value(b"c".to_vec()))));
    assert!(ok(&mut s, cmp("k1", Greater, CompareTarget::Value(b"a".to_vec()))));
    assert!(ok(&mut s, cmp("k1", NotEqual, CompareTarget::Value(b"a".to_vec()))));
    assert!(ok(&mut s, cmp("k2", Equal, CompareTarget::Version(2))));
    assert!(ok(&mut s, cmp("k2", Equal, CompareTarget::Create(3))));
    assert!(ok(&mut s, cmp("k2", Equal, CompareTarget::Mod(4))));
    assert!(ok(&mut s, cmp("k2", Less, CompareTarget::Mod(5))));
    assert!(ok(&mut s, cmp("k2", Equal, CompareTarget::Lease(0))));
    // Ranges: every key must satisfy.
    let mut c = cmp("k", Greater, CompareTarget::Mod(1));
    c.range_end = prefix_end(b"k");
    assert!(ok(&mut s, c.clone()));
    c.target = CompareTarget::Mod(2);
    assert!(!ok(&mut s, c.clone()), "k1 has mod 2");
    c.range_end = vec![0]; // from key
    c.target = CompareTarget::Version(0);
    assert!(ok(&mut s, c));
    // Empty range (no key in it) compares as zero.
    let mut c = cmp("x", Equal, CompareTarget::Version(0));
    c.range_end = b"y".to_vec();
    assert!(ok(&mut s, c));
    // Several compares: all must hold.
    let t = txn(
        &mut s,
        vec![cmp("k1", Equal, CompareTarget::Version(1)), cmp("k2", Equal, CompareTarget::Version(1))],
        vec![],
        vec![rput("f", "1")],
    );
    assert!(!t.response.succeeded);
    assert_eq!(t.response.revision, 5);
}

#[test]
fn txn_reads_see_earlier_writes_and_nested_txns_share_the_revision() {
    let mut s = KvStore::new();
    put(&mut s, "a", "old"); // 2
    put(&mut s, "gone", "x"); // 3
    let inner = TxnRequest {
        // Nested compares see the state before the txn: "n" does not exist yet.
        compare: vec![cmp("n", CompareResult::Equal, CompareTarget::Version(0))],
        success: vec![rput("m", "2"), RequestOp::Range(RangeRequest::prefix("m"))],
        failure: vec![],
    };
    let t = txn(
        &mut s,
        vec![],
        vec![
            RequestOp::Range(RangeRequest::key("n")),
            rput("n", "1"),
            RequestOp::Range(RangeRequest::key("n")),
            RequestOp::Range(RangeRequest { revision: 3, ..RangeRequest::key("n") }),
            RequestOp::DeleteRange(DeleteRangeRequest { prev_kv: true, ..DeleteRangeRequest::key("gone") }),
            RequestOp::Txn(inner),
            RequestOp::Range(RangeRequest { key: b"\0".to_vec(), range_end: vec![0], ..Default::default() }),
        ],
        vec![],
    );
    let r = &t.response;
    assert!(r.succeeded);
    assert_eq!(r.revision, 4);
    let ResponseOp::Range(before) = &r.responses[0] else { panic!() };
    assert!(before.kvs.is_empty());
    assert_eq!(before.revision, 3);
    let ResponseOp::Range(after) = &r.responses[2] else { panic!() };
    assert_eq!((val(&after.kvs[0]), after.kvs[0].mod_revision, after.revision), ("1", 4, 4));
    let ResponseOp::Range(past) = &r.responses[3] else { panic!() };
    assert!(past.kvs.is_empty(), "an explicit old revision does not see the txn's writes");
    let ResponseOp::DeleteRange(d) = &r.responses[4] else { panic!() };
    assert_eq!((d.deleted, val(&d.prev_kvs[0])), (1, "x"));
    let ResponseOp::Txn(nested) = &r.responses[5] else { panic!() };
    assert!(nested.succeeded);
    let ResponseOp::Range(all) = &r.responses[6] else { panic!() };
    let keys: Vec<&[u8]> = all.kvs.iter().map(|k| &k.key[..]).collect();
    assert_eq!(keys, vec![&b"a"[..], b"m", b"n"]);
    assert!(all.kvs.iter().skip(1).all(|k| k.mod_revision == 4));
    let kinds: Vec<(EventKind, &[u8])> = t.events.iter().map(|e| (e.kind, &e.kv.key[..])).collect();
    assert_eq!(
        kinds,
        vec![(EventKind::Put, &b"n"[..]), (EventKind::Delete, b"gone"), (EventKind::Put, b"m")]
    );
    assert_eq!(s.revision(), 4);
    assert_eq!(s.events_since(4, b"\0", &[0]).expect("events"), t.events);
}

#[test]
fn probe_13_duplicate_keys_in_txn() {
    let mut s = KvStore::new();
    put(&mut s, "a", "1");
    let dup = |s: &mut KvStore, success: Vec<RequestOp>| {
        s.txn(TxnRequest { compare: vec![], success, failure: vec![] }).map(|_| ())
    };
    let e = dup(&mut s, vec![rput("k", "1"), rput("k", "2")]).expect_err("dup");
    assert_eq!(e, KvError::DuplicateKey);
    assert_eq!(e.to_string(), "etcdserver: duplicate key given in txn request");
    assert_eq!(e.grpc_code(), GrpcCode::InvalidArgument);
    // put + delete covering it, in either order; nested txns too.
    assert!(
        dup(&mut s, vec![RequestOp::DeleteRange(DeleteRangeRequest::prefix("k")), rput("k1", "1")]).is_err()
    );
    assert!(
        dup(&mut s, vec![rput("k1", "1"), RequestOp::DeleteRange(DeleteRangeRequest::prefix("k"))]).is_err()
    );
    let nested_put = RequestOp::Txn(TxnRequest { success: vec![rput("k", "1")], ..Default::default() });
    let nested_del = RequestOp::Txn(TxnRequest {
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::key("k"))],
        ..Default::default()
    });
    assert!(dup(&mut s, vec![nested_put.clone(), rput("k", "2")]).is_err());
    assert!(dup(&mut s, vec![nested_put.clone(), nested_del.clone()]).is_err());
    assert!(dup(&mut s, vec![nested_del, nested_put]).is_err());
    // Allowed: the two branches of one nested txn, overlapping deletes, success vs failure.
    let both_branches = RequestOp::Txn(TxnRequest {
        success: vec![rput("k", "1")],
        failure: vec![rput("k", "2")],
        ..Default::default()
    });
    assert!(dup(&mut s, vec![both_branches]).is_ok());
    let two_dels = vec![
        RequestOp::DeleteRange(DeleteRangeRequest { range_end: vec![0], ..DeleteRangeRequest::key("\0") }),
        RequestOp::DeleteRange(DeleteRangeRequest::key("a")),
    ];
    let t =
        s.txn(TxnRequest { compare: vec![], success: two_dels, failure: vec![rput("a", "x")] }).expect("ok");
    let ResponseOp::DeleteRange(second) = &t.response.responses[1] else { panic!() };
    assert_eq!(second.deleted, 0, "the second delete finds nothing");
    // A failed txn changed nothing.
    assert_eq!(s.revision(), 4);
}

#[test]
fn probes_14_15_put_argument_errors() {
    let mut s = KvStore::new();
    let e = s.put(PutRequest::new("", "v")).expect_err("empty key");
    assert_eq!(e.to_string(), "etcdserver: key is not provided");
    assert_eq!(e.grpc_code(), GrpcCode::InvalidArgument);
    assert_eq!(s.range(&RangeRequest::default()), Err(KvError::EmptyKey));
    assert_eq!(s.delete_range(&DeleteRangeRequest::default()).map(|_| ()), Err(KvError::EmptyKey));
    let e = s.put(PutRequest { ignore_value: true, ..PutRequest::new("missing", "") }).expect_err("missing");
    assert_eq!(e.to_string(), "etcdserver: key not found");
    assert_eq!(e.grpc_code(), GrpcCode::InvalidArgument);
    let e = s.put(PutRequest { ignore_value: true, ..PutRequest::new("k", "v") }).expect_err("value");
    assert_eq!(e.to_string(), "etcdserver: value is provided");
    let e =
        s.put(PutRequest { ignore_lease: true, lease: 5, ..PutRequest::new("k", "") }).expect_err("lease");
    assert_eq!(e.to_string(), "etcdserver: lease is provided");
    // ignore_value / ignore_lease keep what is there.
    let id = s.lease_grant(7, 10, 0).expect("grant").id;
    s.put(PutRequest { lease: id, ..PutRequest::new("k", "v1") }).expect("put");
    s.put(PutRequest { ignore_value: true, lease: 0, ..PutRequest::new("k", "") }).expect("put");
    let k = get(&s, "k").expect("k");
    assert_eq!((val(&k), k.lease, k.version), ("v1", 0, 2));
    s.put(PutRequest { lease: id, ..PutRequest::new("k", "v1") }).expect("put");
    s.put(PutRequest { ignore_lease: true, ..PutRequest::new("k", "v2") }).expect("put");
    let k = get(&s, "k").expect("k");
    assert_eq!((val(&k), k.lease), ("v2", id));
    assert_eq!(s.revision(), 5);
    // In a txn, an argument error anywhere fails the whole txn before any write.
    let e = s
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                rput("x", "1"),
                RequestOp::Put(PutRequest { ignore_value: true, ..PutRequest::new("nope", "") }),
            ],
            failure: vec![],
        })
        .expect_err("txn");
    assert_eq!(e, KvError::KeyNotFound);
    let e = s
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                rput("x", "1"),
                RequestOp::Put(PutRequest { lease: 999, ..PutRequest::new("y", "") }),
            ],
            failure: vec![],
        })
        .expect_err("txn");
    assert_eq!(e, KvError::LeaseNotFound);
    let e = s
        .txn(TxnRequest {
            compare: vec![cmp("", CompareResult::Equal, CompareTarget::Version(0))],
            ..Default::default()
        })
        .expect_err("txn");
    assert_eq!(e, KvError::EmptyKey);
    assert_eq!(s.revision(), 5);
    assert!(get(&s, "x").is_none());
}

#[test]
fn probe_16_30_31_32_future_and_compacted_revisions() {
    let mut s = KvStore::new();
    for i in 0..10 {
        put(&mut s, "a", &i.to_string());
    }
    let cur = s.revision();
    let e = s.range(&RangeRequest { revision: cur + 10, ..RangeRequest::key("a") }).expect_err("future");
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision is a future revision");
    assert_eq!(e.grpc_code(), GrpcCode::OutOfRange);
    assert_eq!(s.compact(cur + 1), Err(KvError::FutureRevision));
    // compact
    let c = cur - 3;
    assert_eq!(s.compact(c).expect("compact").revision, cur);
    assert_eq!(s.compact_revision(), c);
    // 30: below -> compacted
    let e = s.range(&RangeRequest { revision: c - 1, ..RangeRequest::key("a") }).expect_err("compacted");
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision has been compacted");
    assert_eq!(e.grpc_code(), GrpcCode::OutOfRange);
    assert_eq!(e, KvError::Compacted { compact_revision: c });
    // 31: at the compaction revision -> works
    let at = s.range(&RangeRequest { revision: c, ..RangeRequest::key("a") }).expect("at c");
    assert_eq!(at.kvs[0].mod_revision, c);
    assert_eq!(at.kvs[0].version, c - 1);
    // 32: compact again at the same (or a lower) revision
    assert_eq!(
        s.compact(c).expect_err("again").to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert!(s.compact(c - 1).is_err());
    // compaction in a txn's read
    let e = s
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                rput("b", "1"),
                RequestOp::Range(RangeRequest { revision: 2, ..RangeRequest::key("a") }),
            ],
            failure: vec![],
        })
        .expect_err("txn");
    assert!(matches!(e, KvError::Compacted { .. }));
    assert_eq!(s.revision(), cur);
    // compact at the current revision is allowed
    assert!(s.compact(cur).is_ok());
    assert_eq!(s.range(&RangeRequest { revision: cur, ..RangeRequest::key("a") }).expect("cur").kvs.len(), 1);
}

#[test]
fn probes_17_19_prefix_limit_sort_count() {
    let mut s = KvStore::new();
    for (k, v) in
        [("p/a", "5"), ("p/b", "3"), ("p/c", "4"), ("p/d", "1"), ("p/e", "2"), ("q", "0"), ("p", "9")]
    {
        put(&mut s, k, v);
    }
    // 17: limit 2 sort by value ascending: count is pre-limit, more = true
    let r = s
        .range(&RangeRequest {
            limit: 2,
            sort_order: SortOrder::Ascend,
            sort_target: SortTarget::Value,
            ..RangeRequest::prefix("p/")
        })
        .expect("range");
    assert_eq!((r.count, r.more), (5, true));
    let vals: Vec<&str> = r.kvs.iter().map(val).collect();
    assert_eq!(vals, vec!["1", "2"]);
    // descending by key, limit 3
    let r = s
        .range(&RangeRequest { limit: 3, sort_order: SortOrder::Descend, ..RangeRequest::prefix("p/") })
        .expect("range");
    let keys: Vec<&[u8]> = r.kvs.iter().map(|k| &k.key[..]).collect();
    assert_eq!(keys, vec![&b"p/e"[..], b"p/d", b"p/c"]);
    // sort target with order NONE means ascending
    let r =
        s.range(&RangeRequest { sort_target: SortTarget::Mod, ..RangeRequest::prefix("p/") }).expect("range");
    assert!(r.kvs.windows(2).all(|w| w[0].mod_revision < w[1].mod_revision));
    // no more when the limit is not reached
    let r = s.range(&RangeRequest { limit: 5, ..RangeRequest::prefix("p/") }).expect("range");
    assert_eq!((r.count, r.more, r.kvs.len()), (5, false, 5));
    // 19: count only
    let r = s.range(&RangeRequest { count_only: true, ..RangeRequest::prefix("p/") }).expect("range");
    assert_eq!((r.count, r.kvs.len()), (5, 0));
    // keys only
    let r = s.range(&RangeRequest { keys_only: true, ..RangeRequest::prefix("p/") }).expect("range");
    assert!(r.kvs.iter().all(|k| k.value.is_empty() && k.version == 1));
    // from-key and explicit [key, end)
    let r = s.range(&RangeRequest { range_end: vec![0], ..RangeRequest::key("p/d") }).expect("range");
    assert_eq!(r.count, 3); // p/d p/e q
    let r = s.range(&RangeRequest { range_end: b"p/c".to_vec(), ..RangeRequest::key("p/a") }).expect("range");
    assert_eq!(r.count, 2);
    let r = s.range(&RangeRequest { range_end: b"a".to_vec(), ..RangeRequest::key("p") }).expect("end < key");
    assert_eq!(r.count, 0);
    // revision filters (count stays pre-filter, like etcd)
    let r = s
        .range(&RangeRequest { min_mod_revision: 4, max_mod_revision: 5, ..RangeRequest::prefix("p/") })
        .expect("range");
    let keys: Vec<&[u8]> = r.kvs.iter().map(|k| &k.key[..]).collect();
    assert_eq!((keys, r.count), (vec![&b"p/c"[..], b"p/d"], 5));
    let r = s
        .range(&RangeRequest { min_create_revision: 6, max_create_revision: 0, ..RangeRequest::prefix("p/") })
        .expect("range");
    assert_eq!(r.kvs.len(), 1);
    // prefix_end
    assert_eq!(prefix_end(b"ab"), b"ac");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    assert_eq!(prefix_end(b""), vec![0]);
}

type EventSummary<'a> = (EventKind, &'a [u8], i64, Option<&'a [u8]>);

#[test]
fn probe_21_and_33_watch_replay_and_compaction() {
    let mut s = KvStore::new();
    let r0 = s.revision();
    put(&mut s, "a", "1");
    s.put(PutRequest::new("a", "2")).expect("put");
    s.delete_range(&DeleteRangeRequest::key("a")).expect("del");
    put(&mut s, "a", "3");
    put(&mut s, "other", "x");
    txn(&mut s, vec![], vec![rput("b", "1"), rput("c", "1")], vec![]);
    let evs = s.events_since(r0 + 1, b"", &[0]).expect("all");
    let summary: Vec<EventSummary<'_>> = evs
        .iter()
        .map(|e| (e.kind, &e.kv.key[..], e.kv.mod_revision, e.prev_kv.as_ref().map(|p| &p.value[..])))
        .collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Put, &b"a"[..], r0 + 1, None),
            (EventKind::Put, b"a", r0 + 2, Some(&b"1"[..])),
            (EventKind::Delete, b"a", r0 + 3, Some(&b"2"[..])),
            (EventKind::Put, b"a", r0 + 4, None),
            (EventKind::Put, b"other", r0 + 5, None),
            (EventKind::Put, b"b", r0 + 6, None),
            (EventKind::Put, b"c", r0 + 6, None),
        ]
    );
    // a delete event carries only key + mod_revision
    assert_eq!(evs[2].kv, KeyValue { key: b"a".to_vec(), mod_revision: r0 + 3, ..Default::default() });
    // prefix watch: "a" and "b"/"c" are not under "o"
    let evs = s.events_since(r0 + 1, b"o", &prefix_end(b"o")).expect("prefix");
    assert_eq!(evs.len(), 1);
    let evs = s.events_since(r0 + 4, b"a", &[]).expect("key");
    assert_eq!(evs.len(), 1);
    assert!(s.events_since(s.revision() + 1, b"a", &[0]).expect("future").is_empty());
    // 33: compaction; a watch below it is cancelled with the compaction revision
    s.compact(r0 + 3).expect("compact");
    assert_eq!(s.events_since(r0 + 2, b"a", &[0]), Err(KvError::Compacted { compact_revision: r0 + 3 }));
    // from the compaction revision itself the replay is complete, prev_kv included
    let evs = s.events_since(r0 + 3, b"a", &[]).expect("at c");
    assert_eq!(evs.len(), 2);
    assert_eq!(
        (evs[0].kind, evs[0].prev_kv.as_ref().map(|p| &p.value[..])),
        (EventKind::Delete, Some(&b"2"[..]))
    );
}

#[test]
fn probes_22_to_27_leases() {
    let mut s = KvStore::new();
    let now = 1_000 * SEC;
    // 22: TTL raised to the minimum
    let g = s.lease_grant(0, 1, now).expect("grant");
    assert_eq!((g.id, g.ttl), (1, 2));
    assert_eq!(s.revision(), 1, "a grant takes no revision");
    let g2 = s.lease_grant(0, 60, now).expect("grant");
    assert_eq!(g2.id, 2);
    s.lease_grant(5, 60, now).expect("explicit id");
    let e = s.lease_grant(5, 60, now).expect_err("exists");
    assert_eq!(e.to_string(), "etcdserver: lease already exists");
    assert_eq!(e.grpc_code(), GrpcCode::FailedPrecondition);
    let e = s.lease_grant(9, 9_000_000_001, now).expect_err("too large");
    assert_eq!(
        (e.to_string().as_str(), e.grpc_code()),
        ("etcdserver: too large lease TTL", GrpcCode::OutOfRange)
    );
    assert_eq!(s.leases(), vec![1, 2, 5]);
    // 23: leased keys
    for k in ["l/a", "l/b"] {
        s.put(PutRequest { lease: g.id, ..PutRequest::new(k, "v") }).expect("put");
    }
    s.put(PutRequest { lease: g2.id, ..PutRequest::new("l/c", "v") }).expect("put");
    let ttl = s.lease_time_to_live(g.id, now + SEC / 2, true).expect("ttl");
    assert_eq!((ttl.ttl, ttl.granted_ttl), (1, 2));
    assert_eq!(ttl.keys, vec![b"l/a".to_vec(), b"l/b".to_vec()]);
    // moving a key to another lease detaches it
    s.put(PutRequest { lease: g2.id, ..PutRequest::new("l/b", "v") }).expect("put");
    assert_eq!(s.lease_time_to_live(g.id, now, true).expect("ttl").keys, vec![b"l/a".to_vec()]);
    s.put(PutRequest { lease: g.id, ..PutRequest::new("l/b", "v") }).expect("put");
    // 24: expiry is decided by the caller's clock; the leader proposes revokes
    assert!(s.expired_leases(now + SEC).is_empty());
    assert_eq!(s.expired_leases(now + 2 * SEC), vec![g.id]);
    assert_eq!(
        s.lease_keepalive(g.id, now + 3 * SEC),
        Err(KvError::LeaseNotFound),
        "expired leases are not renewed"
    );
    let before = s.revision();
    let rv = s.lease_revoke(g.id).expect("revoke");
    assert_eq!(rv.response.revision, before + 1, "one revision for all attached keys");
    assert_eq!(s.revision(), before + 1);
    let kinds: Vec<(EventKind, &[u8], i64)> =
        rv.events.iter().map(|e| (e.kind, &e.kv.key[..], e.kv.mod_revision)).collect();
    assert_eq!(
        kinds,
        vec![(EventKind::Delete, &b"l/a"[..], before + 1), (EventKind::Delete, b"l/b", before + 1)]
    );
    assert!(get(&s, "l/a").is_none() && get(&s, "l/c").is_some());
    // keep-alive pushes the deadline
    assert_eq!(s.lease_keepalive(g2.id, now + 30 * SEC), Ok(60));
    assert_eq!(s.expired_leases(now + 61 * SEC), vec![5], "lease 5 was granted for 60 s at `now`");
    assert_eq!(s.expired_leases(now + 90 * SEC), vec![5, g2.id], "earliest deadline first");
    assert_eq!(s.lease_time_to_live(g2.id, now + 80 * SEC, false).expect("ttl").ttl, 10);
    // refresh on a new leader: full TTL from now
    s.refresh_all_leases(now + 100 * SEC);
    assert!(s.expired_leases(now + 159 * SEC).is_empty());
    assert_eq!(s.expired_leases(now + 160 * SEC), vec![g2.id, 5]);
    // a revoke without keys takes no revision
    let r = s.revision();
    assert_eq!(s.lease_revoke(5).expect("revoke").response.revision, r);
    assert_eq!(s.revision(), r);
    // 26/27: unknown leases
    let e = s.lease_revoke(1234).expect_err("unknown");
    assert_eq!(e.to_string(), "etcdserver: requested lease not found");
    assert_eq!(e.grpc_code(), GrpcCode::NotFound);
    assert_eq!(
        s.put(PutRequest { lease: 1234, ..PutRequest::new("x", "") }).map(|_| ()),
        Err(KvError::LeaseNotFound)
    );
    assert_eq!(s.lease_keepalive(1234, now), Err(KvError::LeaseNotFound));
    assert_eq!(s.lease_time_to_live(1234, now, false).map(|_| ()), Err(KvError::LeaseNotFound));
    assert_eq!(s.revision(), r);
    // deleting a key detaches it; a picked id never reuses a live one
    s.delete_range(&DeleteRangeRequest::key("l/c")).expect("del");
    assert!(s.lease_time_to_live(g2.id, now, true).expect("ttl").keys.is_empty());
    assert_eq!(s.lease_grant(0, 5, now).expect("grant").id, 3);
}

#[test]
fn limits_txn_ops_and_request_size() {
    let mut s =
        KvStore::with_config(KvConfig { max_txn_ops: 3, max_request_bytes: 100, ..Default::default() });
    let ops = |n: usize| (0..n).map(|i| rput(&format!("k{i}"), "v")).collect::<Vec<_>>();
    let e = s.txn(TxnRequest { success: ops(4), ..Default::default() }).expect_err("too many");
    assert_eq!(e.to_string(), "etcdserver: too many operations in txn request");
    assert!(s.txn(TxnRequest { success: ops(3), failure: ops(3), ..Default::default() }).is_ok());
    // nested txns get what is left of the budget
    let nested = RequestOp::Txn(TxnRequest { success: ops(2), ..Default::default() });
    let e = s.txn(TxnRequest { success: vec![nested.clone(), rput("z", "1")], ..Default::default() });
    assert_eq!(e.map(|_| ()), Err(KvError::TooManyOps));
    let e = s.put(PutRequest::new("k", vec![b'x'; 100]));
    assert_eq!(e.map(|_| ()).map_err(|e| e.to_string()), Err("etcdserver: request is too large".into()));
    assert!(s.put(PutRequest::new("k", vec![b'x'; 99])).is_ok());
    let big = TxnRequest {
        success: vec![rput("a", &"x".repeat(60)), rput("b", &"x".repeat(60))],
        ..Default::default()
    };
    assert_eq!(s.txn(big).map(|_| ()), Err(KvError::RequestTooLarge));
    assert_eq!(KvStore::new().config().max_request_bytes, 1_572_864);
    assert_eq!(KvStore::new().config().max_txn_ops, 128);
}

#[test]
fn compaction_frees_history() {
    let mut s = KvStore::new();
    for i in 0..100 {
        put(&mut s, "hot", &i.to_string());
        put(&mut s, &format!("tmp{i}"), "x");
        s.delete_range(&DeleteRangeRequest::key(format!("tmp{i}"))).expect("del");
    }
    put(&mut s, "cold", "c");
    let before = s.stats();
    assert_eq!(before.history_entries, 100 + 200 + 1);
    assert_eq!(before.live_keys, 2);
    s.compact(s.revision()).expect("compact");
    let after = s.stats();
    assert_eq!(
        after,
        KvStats {
            live_keys: 2,
            tracked_keys: 2,
            history_entries: 2,
            log_revisions: 1,
            log_events: 1,
            leases: 0,
            // "hot" = "99" and "cold" = "c"
            bytes: 5 + 5,
        }
    );
    assert_eq!(val(&get(&s, "hot").expect("hot")), "99");
    // compacting below a lone live version keeps it
    let mut s = KvStore::new();
    put(&mut s, "k", "1"); // 2
    put(&mut s, "x", "1"); // 3
    put(&mut s, "x", "2"); // 4
    s.compact(3).expect("compact");
    assert_eq!(s.range(&RangeRequest { revision: 3, ..RangeRequest::key("k") }).expect("k").kvs.len(), 1);
    assert_eq!(s.stats().history_entries, 3);
    // auto compaction target
    assert_eq!(s.auto_compact_target(1), None, "4 - 1 = 3 is already compacted");
    put(&mut s, "x", "3"); // 5
    assert_eq!(s.auto_compact_target(1), Some(4));
    assert_eq!(s.auto_compact_target(1000), None);
}

#[test]
fn apply_batch_gives_each_op_its_own_revision_and_isolates_failures() {
    let mut s = KvStore::new();
    let out = s.apply_batch(
        vec![
            Op::Put(PutRequest::new("a", "1")),
            Op::Put(PutRequest::new("", "bad")),
            Op::LeaseGrant { id: 0, ttl: 10 },
            Op::Put(PutRequest { lease: 1, ..PutRequest::new("b", "2") }),
            Op::DeleteRange(DeleteRangeRequest::key("zz")),
            Op::Txn(TxnRequest { success: vec![rput("c", "3"), rput("d", "4")], ..Default::default() }),
            Op::LeaseRevoke { id: 1 },
            Op::Compact { revision: 3 },
            Op::Range(RangeRequest { revision: 2, ..RangeRequest::key("a") }),
        ],
        5 * SEC,
    );
    assert_eq!(out.len(), 9);
    assert_eq!(out[1], Err(KvError::EmptyKey));
    let revs: Vec<i64> = out
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|a| match &a.response {
            OpResponse::Put(p) => p.revision,
            OpResponse::DeleteRange(d) => d.revision,
            OpResponse::Txn(t) => t.revision,
            OpResponse::LeaseGrant(g) => g.revision,
            OpResponse::LeaseRevoke(r) => r.revision,
            OpResponse::Compact(c) => c.revision,
            OpResponse::Range(r) => r.revision,
        })
        .collect();
    assert_eq!(revs, vec![2, 2, 3, 3, 4, 5, 5]);
    assert_eq!(out[8], Err(KvError::Compacted { compact_revision: 3 }));
}

#[test]
fn validate_is_the_apply_time_check() {
    let cfg = KvConfig::default();
    assert_eq!(validate(&Op::Put(PutRequest::new("", "")), &cfg), Err(KvError::EmptyKey));
    assert_eq!(validate(&Op::LeaseGrant { id: 1, ttl: i64::MAX }, &cfg), Err(KvError::LeaseTtlTooLarge));
    let dup = TxnRequest { success: vec![rput("a", "1"), rput("a", "2")], ..Default::default() };
    assert_eq!(validate(&Op::Txn(dup), &cfg), Err(KvError::DuplicateKey));
    assert_eq!(validate(&Op::Put(PutRequest::new("a", "1")), &cfg), Ok(()));
}

#[test]
fn serde_round_trip_keeps_everything_and_drops_deadlines() {
    let mut s = KvStore::new();
    s.lease_grant(42, 30, 0).expect("grant");
    for i in 0..20u8 {
        s.put(PutRequest {
            lease: if i % 3 == 0 { 42 } else { 0 },
            ..PutRequest::new(vec![b'k', i % 5], vec![i, 0xff])
        })
        .expect("put");
        if i % 4 == 0 {
            s.delete_range(&DeleteRangeRequest::key(vec![b'k', (i + 1) % 5])).expect("del");
        }
    }
    txn(
        &mut s,
        vec![],
        vec![rput("t1", "a"), rput("t0", "b"), RequestOp::DeleteRange(DeleteRangeRequest::key(b"k\x02"))],
        vec![],
    );
    for compacted in [false, true] {
        if compacted {
            s.compact(s.revision() - 7).expect("compact");
        }
        let json = serde_json::to_string(&s).expect("ser");
        let back: KvStore = serde_json::from_str(&json).expect("de");
        assert_eq!(back, s);
        assert_eq!(serde_json::to_string(&back).expect("ser"), json);
        for rev in s.compact_revision().max(1)..=s.revision() {
            let req = RangeRequest { revision: rev, range_end: vec![0], ..RangeRequest::key("\0") };
            assert_eq!(back.range(&req), s.range(&req));
        }
        let from = s.compact_revision();
        assert_eq!(back.events_since(from, b"\0", &[0]), s.events_since(from, b"\0", &[0]));
        assert_eq!(
            back.lease_time_to_live(42, 0, true),
            s.lease_time_to_live(42, 0, true).map(|mut t| {
                t.ttl = 30; // the deadline is leader-local: not carried
                t
            })
        );
        assert!(back.expired_leases(u64::MAX).is_empty(), "no deadline until refresh_all_leases");
    }
    // A snapshot that references an unknown lease is refused.
    let json = serde_json::to_value(&s).expect("ser");
    let mut bad = json.clone();
    bad["leases"] = serde_json::json!([]);
    assert!(serde_json::from_value::<KvStore>(bad).is_err());
    // Bytes are base64 in JSON.
    let kv = KeyValue { key: b"gw1".to_vec(), value: b"hello".to_vec(), ..Default::default() };
    let text = serde_json::to_string(&kv).expect("ser");
    assert!(text.contains("\"Z3cx\"") && text.contains("\"aGVsbG8=\""), "{text}");
    let op = Op::Txn(TxnRequest {
        compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Value(b"v".to_vec()))],
        success: vec![rput("a", "b")],
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::prefix("a"))],
    });
    let back: Op = serde_json::from_str(&serde_json::to_string(&op).expect("ser")).expect("de");
    assert_eq!(back, op);
}

#[test]
fn error_messages_and_codes_are_etcds() {
    let all = [
        (KvError::EmptyKey, "etcdserver: key is not provided", "InvalidArgument", 3),
        (KvError::KeyNotFound, "etcdserver: key not found", "InvalidArgument", 3),
        (KvError::ValueProvided, "etcdserver: value is provided", "InvalidArgument", 3),
        (KvError::LeaseProvided, "etcdserver: lease is provided", "InvalidArgument", 3),
        (KvError::TooManyOps, "etcdserver: too many operations in txn request", "InvalidArgument", 3),
        (KvError::DuplicateKey, "etcdserver: duplicate key given in txn request", "InvalidArgument", 3),
        (KvError::InvalidSortOption, "etcdserver: invalid sort option", "InvalidArgument", 3),
        (
            KvError::Compacted { compact_revision: 3 },
            "etcdserver: mvcc: required revision has been compacted",
            "OutOfRange",
            11,
        ),
        (
            KvError::FutureRevision,
            "etcdserver: mvcc: required revision is a future revision",
            "OutOfRange",
            11,
        ),
        (KvError::RequestTooLarge, "etcdserver: request is too large", "InvalidArgument", 3),
        (KvError::LeaseNotFound, "etcdserver: requested lease not found", "NotFound", 5),
        (KvError::LeaseExists, "etcdserver: lease already exists", "FailedPrecondition", 9),
        (KvError::LeaseTtlTooLarge, "etcdserver: too large lease TTL", "OutOfRange", 11),
    ];
    for (e, msg, code, n) in all {
        assert_eq!((e.to_string().as_str(), e.grpc_code().name(), e.grpc_code().number()), (msg, code, n));
    }
}

/// A new leader's first lease answer in its term comes from fresh deadlines: a lease granted
/// longer ago than its TTL (whose deadline on this replica went stale while another member
/// led) is renewed, not reported gone; a second promote in the same term changes nothing.
#[test]
fn promote_refreshes_stale_deadlines_once_per_term() {
    let mut s = KvStore::default();
    let now = 1_000 * SEC;
    let g = s.lease_grant(0, 5, now).expect("grant");
    let later = now + 60 * SEC;
    assert_eq!(s.lease_keepalive(g.id, later), Err(KvError::LeaseNotFound), "stale deadline");
    assert!(s.promote(7, later), "a new term refreshes");
    assert_eq!(s.lease_keepalive(g.id, later + SEC), Ok(5));
    assert!(!s.promote(7, later + 30 * SEC), "same term: deadlines stay this leader's");
    assert_eq!(s.expired_leases(later + 30 * SEC), vec![g.id], "and they expire on its clock");
    assert!(s.promote(8, later + 30 * SEC), "the next term refreshes again");
    assert!(s.expired_leases(later + 34 * SEC).is_empty());
}
