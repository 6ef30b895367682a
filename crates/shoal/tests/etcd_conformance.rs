//! Conformance against a real etcd: the same sequence of operations, through one gRPC client
//! (shoal-etcd's generated tonic stubs), against Debian's etcd-server 3.4 and against a
//! one-manager Shoal cluster (`shoal daemon` + `cluster init`, serving `--etcd-addr`); the
//! answers must be the same. Revisions are printed relative to each store's starting revision;
//! member ids, cluster ids, raft terms and lease ids are left out.
//!
//! The probes are those of the design note `kv-etcd.md` §1.7. Left out on purpose, where Shoal
//! deliberately differs (crates/shoal-kv/src/lib.rs, validate.rs): the nested-txn duplicate-key
//! check (Shoal's does not depend on op order) and a watch replay from exactly the compaction
//! revision (Shoal's is complete; etcd loses deletions at it).
//!
//! Needs `etcd` on the PATH (`apt-get install etcd-server`, scripts/install-deps.sh); skipped
//! without it, unless `SHOAL_REQUIRE_RUNTIMES=1`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_etcd::pb::etcdserverpb as pb;
use shoal_etcd::pb::mvccpb;
use tonic::transport::Channel;

mod common;
use common::{free_port, Node};

use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::request_op::Request;
use pb::response_op::Response;
use pb::watch_client::WatchClient;

fn etcd_missing() -> bool {
    let found =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()));
    if found {
        return false;
    }
    assert!(
        !std::env::var("SHOAL_REQUIRE_RUNTIMES").is_ok_and(|v| v == "1"),
        "SHOAL_REQUIRE_RUNTIMES=1 but etcd is not installed (apt-get install etcd-server)"
    );
    eprintln!("skipping: etcd is not installed (apt-get install etcd-server)");
    true
}

/// A real etcd member, killed when dropped.
struct Etcd {
    child: Child,
    client_port: u16,
}

impl Etcd {
    fn start(dir: &std::path::Path) -> Etcd {
        let (p, q) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd.log");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.join("etcd-data"))
            .args(["--name", "default"])
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{q}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{q}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{q}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        Etcd { child, client_port: p }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A channel to `port` once a linearizable range answers there (the store has a leader).
async fn connect(port: u16, what: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect().await {
            Ok(ch) => match KvClient::new(ch.clone()).range(range(b"health")).await {
                Ok(_) => return ch,
                Err(e) => last = format!("{e:?}"),
            },
            Err(e) => last = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} did not answer on 127.0.0.1:{port}: {last}");
}

fn range(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest { key: key.to_vec(), ..Default::default() }
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

fn prefix_end(p: &str) -> Vec<u8> {
    let mut e = p.as_bytes().to_vec();
    *e.last_mut().expect("non-empty prefix") += 1;
    e
}

fn cmp(key: &str, target: CompareTarget, result: CompareResult, u: TargetUnion) -> pb::Compare {
    pb::Compare {
        key: key.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(u),
        ..Default::default()
    }
}

fn op(r: Request) -> pb::RequestOp {
    pb::RequestOp { request: Some(r) }
}

/// Formats answers with revisions relative to the store's starting revision `r0`.
struct Fmt {
    r0: i64,
}

impl Fmt {
    fn rev(&self, r: i64) -> String {
        if r == 0 {
            "0".into()
        } else {
            format!("+{}", r - self.r0)
        }
    }

    fn hdr(&self, h: &Option<pb::ResponseHeader>) -> String {
        self.rev(h.as_ref().map_or(0, |h| h.revision))
    }

    fn kv(&self, kv: &mvccpb::KeyValue) -> String {
        format!(
            "{}={:?} c{} m{} v{} lease={}",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value),
            self.rev(kv.create_revision),
            self.rev(kv.mod_revision),
            kv.version,
            kv.lease != 0
        )
    }

    fn opt_kv(&self, kv: &Option<mvccpb::KeyValue>) -> String {
        kv.as_ref().map_or("-".into(), |kv| self.kv(kv))
    }

    fn kvs(&self, kvs: &[mvccpb::KeyValue]) -> String {
        kvs.iter().map(|kv| self.kv(kv)).collect::<Vec<_>>().join(", ")
    }

    fn range(&self, r: &pb::RangeResponse) -> String {
        format!("rev={} count={} more={} [{}]", self.hdr(&r.header), r.count, r.more, self.kvs(&r.kvs))
    }

    fn txn(&self, t: &pb::TxnResponse) -> String {
        let ops: Vec<String> = t
            .responses
            .iter()
            .map(|r| match &r.response {
                Some(Response::ResponsePut(p)) => format!("put prev={}", self.opt_kv(&p.prev_kv)),
                Some(Response::ResponseRange(r)) => format!("range {}", self.range(r)),
                Some(Response::ResponseDeleteRange(d)) => format!("del deleted={}", d.deleted),
                Some(Response::ResponseTxn(t)) => format!("txn {}", self.txn(t)),
                None => "none".into(),
            })
            .collect();
        format!("rev={} succeeded={} [{}]", self.hdr(&t.header), t.succeeded, ops.join("; "))
    }

    fn event(&self, e: &mvccpb::Event) -> String {
        let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 { "DELETE" } else { "PUT" };
        format!("{kind} {} prev={}", self.opt_kv(&e.kv), self.opt_kv(&e.prev_kv))
    }
}

fn err(s: &tonic::Status) -> String {
    format!("ERR {:?} {:?}", s.code(), s.message())
}

/// Runs every probe against the etcd API at `ch` and returns one line per answer.
async fn probes(ch: Channel) -> Vec<String> {
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let mut out = Vec::new();
    let r0 = kv.range(range(b"a")).await.expect("range").into_inner().header.expect("header").revision;
    let f = Fmt { r0 };
    macro_rules! probe {
        ($name:expr, $call:expr, |$r:ident| $fmt:expr) => {{
            let line = match $call.await {
                Ok(resp) => {
                    let $r = resp.into_inner();
                    $fmt
                }
                Err(s) => err(&s),
            };
            out.push(format!("{:<28} {line}", $name));
        }};
    }
    let get = |k: &str| range(k.as_bytes());

    // Put, prev_kv, delete, no-op delete, re-create.
    probe!("01 put a=1", kv.put(put("a", "1")), |r| format!("rev={}", f.hdr(&r.header)));
    probe!("02 put a=2 prev_kv", kv.put(pb::PutRequest { prev_kv: true, ..put("a", "2") }), |r| format!(
        "rev={} prev={}",
        f.hdr(&r.header),
        f.opt_kv(&r.prev_kv)
    ));
    probe!("03 put a=2 no prev_kv", kv.put(put("a", "2")), |r| format!("prev={}", f.opt_kv(&r.prev_kv)));
    probe!("04 get a", kv.range(get("a")), |r| f.range(&r));
    let del = |k: &str| pb::DeleteRangeRequest { key: k.into(), prev_kv: true, ..Default::default() };
    probe!("05 del a prev_kv", kv.delete_range(del("a")), |r| format!(
        "rev={} deleted={} prev=[{}]",
        f.hdr(&r.header),
        r.deleted,
        f.kvs(&r.prev_kvs)
    ));
    probe!("06 del a again (no-op)", kv.delete_range(del("a")), |r| format!(
        "rev={} deleted={}",
        f.hdr(&r.header),
        r.deleted
    ));
    probe!("07 re-put a=3", kv.put(put("a", "3")), |r| format!("rev={}", f.hdr(&r.header)));
    probe!("08 get a (version reset)", kv.range(get("a")), |r| f.range(&r));

    // Txn: one revision for all writes; compares; absent keys.
    let txn = pb::TxnRequest {
        compare: vec![cmp(
            "a",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b"3".to_vec()),
        )],
        success: vec![
            op(Request::RequestPut(put("b", "B"))),
            op(Request::RequestPut(pb::PutRequest { prev_kv: true, ..put("c", "C") })),
            op(Request::RequestRange(get("a"))),
            op(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b"zz".to_vec(),
                ..Default::default()
            })),
        ],
        failure: vec![],
    };
    probe!("09 txn value(a)=3 then", kv.txn(txn), |r| f.txn(&r));
    probe!("10 get b..d", kv.range(pb::RangeRequest { range_end: b"d".to_vec(), ..get("b") }), |r| f
        .range(&r));
    let txn = pb::TxnRequest {
        compare: vec![cmp("a", CompareTarget::Version, CompareResult::Greater, TargetUnion::Version(5))],
        success: vec![op(Request::RequestPut(put("x", "1")))],
        failure: vec![],
    };
    probe!("11 txn version(a)>5 false", kv.txn(txn), |r| f.txn(&r));
    let txn = pb::TxnRequest {
        compare: vec![cmp(
            "nokey",
            CompareTarget::Create,
            CompareResult::Equal,
            TargetUnion::CreateRevision(0),
        )],
        success: vec![op(Request::RequestRange(get("nokey")))],
        failure: vec![],
    };
    probe!("12 txn create(nokey)=0", kv.txn(txn), |r| f.txn(&r));
    let txn = pb::TxnRequest {
        compare: vec![cmp("nokey", CompareTarget::Value, CompareResult::Equal, TargetUnion::Value(vec![]))],
        success: vec![],
        failure: vec![op(Request::RequestRange(get("a")))],
    };
    probe!("13 txn value(nokey)=\"\"", kv.txn(txn), |r| f.txn(&r));
    let txn = pb::TxnRequest {
        compare: vec![cmp("nokey", CompareTarget::Version, CompareResult::Less, TargetUnion::Version(1))],
        success: vec![op(Request::RequestPut(put("nokey", "now")))],
        failure: vec![],
    };
    probe!("14 txn version(nokey)<1", kv.txn(txn), |r| f.txn(&r));

    // Errors.
    let txn = pb::TxnRequest {
        success: vec![op(Request::RequestPut(put("d", "1"))), op(Request::RequestPut(put("d", "2")))],
        ..Default::default()
    };
    probe!("15 txn put d twice", kv.txn(txn), |r| f.txn(&r));
    probe!("16 put empty key", kv.put(put("", "v")), |r| format!("rev={}", f.hdr(&r.header)));
    probe!(
        "17 put ignore_value missing",
        kv.put(pb::PutRequest { ignore_value: true, ..put("missing", "") }),
        |r| format!("rev={}", f.hdr(&r.header))
    );
    probe!(
        "18 put ignore_value a",
        kv.put(pb::PutRequest { ignore_value: true, ..put("a", "") }),
        |r| format!("rev={}", f.hdr(&r.header))
    );
    probe!("19 get a", kv.range(get("a")), |r| f.range(&r));
    let cur = kv.range(get("a")).await.expect("range").into_inner().header.expect("header").revision;
    probe!("20 get a at cur+10", kv.range(pb::RangeRequest { revision: cur + 10, ..get("a") }), |r| f
        .range(&r));
    probe!("21 get a at +2", kv.range(pb::RangeRequest { revision: r0 + 2, ..get("a") }), |r| f.range(&r));

    // Prefix ranges: limit + sort (count before the limit), count_only, keys_only.
    for (k, v) in [("p/1", "e"), ("p/2", "d"), ("p/3", "c"), ("p/4", "b"), ("p/5", "a")] {
        kv.put(put(k, v)).await.expect("put");
    }
    let sorted = pb::RangeRequest {
        range_end: prefix_end("p/"),
        limit: 2,
        sort_target: pb::range_request::SortTarget::Value as i32,
        sort_order: pb::range_request::SortOrder::Ascend as i32,
        ..get("p/")
    };
    probe!("22 p/ limit=2 sort=value", kv.range(sorted), |r| f.range(&r));
    let desc = pb::RangeRequest {
        range_end: prefix_end("p/"),
        limit: 3,
        sort_target: pb::range_request::SortTarget::Key as i32,
        sort_order: pb::range_request::SortOrder::Descend as i32,
        keys_only: true,
        ..get("p/")
    };
    probe!("23 p/ limit=3 key desc keys", kv.range(desc), |r| f.range(&r));
    probe!(
        "24 p/ count_only",
        kv.range(pb::RangeRequest { range_end: prefix_end("p/"), count_only: true, ..get("p/") }),
        |r| f.range(&r)
    );
    probe!("25 from-key p/4", kv.range(pb::RangeRequest { range_end: vec![0], ..get("p/4") }), |r| format!(
        "count={} first={}",
        r.count,
        r.kvs.first().map_or("-".into(), |kv| f.kv(kv))
    ));

    // Leases.
    probe!("26 lease grant ttl=1", lease.lease_grant(pb::LeaseGrantRequest { ttl: 1, id: 0 }), |r| format!(
        "rev={} ttl={} error={:?}",
        f.hdr(&r.header),
        r.ttl,
        r.error
    ));
    let l = lease.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 }).await.expect("grant").into_inner().id;
    for k in ["l/1", "l/2"] {
        probe!(
            format!("27 put {k} with lease"),
            kv.put(pb::PutRequest { lease: l, ..put(k, "held") }),
            |r| format!("rev={}", f.hdr(&r.header))
        );
    }
    probe!(
        "28 timetolive keys",
        lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: l, keys: true }),
        |r| {
            let mut keys: Vec<String> =
                r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
            keys.sort(); // etcd lists them in map order
            format!("granted={} keys={keys:?}", r.granted_ttl)
        }
    );
    probe!("29 revoke", lease.lease_revoke(pb::LeaseRevokeRequest { id: l }), |r| format!(
        "rev={}",
        f.hdr(&r.header)
    ));
    probe!(
        "30 get l/ after revoke",
        kv.range(pb::RangeRequest { range_end: prefix_end("l/"), ..get("l/") }),
        |r| f.range(&r)
    );
    probe!("31 revoke unknown", lease.lease_revoke(pb::LeaseRevokeRequest { id: 12345 }), |r| format!(
        "rev={}",
        f.hdr(&r.header)
    ));
    probe!("32 put unknown lease", kv.put(pb::PutRequest { lease: 12345, ..put("l/3", "x") }), |r| format!(
        "rev={}",
        f.hdr(&r.header)
    ));
    probe!(
        "33 timetolive unknown",
        lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 12345, keys: false }),
        |r| format!("ttl={}", r.ttl)
    );

    // A watch from a past revision: every event so far, in order, with prev_kv.
    let last = kv.range(get("a")).await.expect("range").into_inner().header.expect("header").revision;
    let (events, responses) = watch(&ch, r0 + 1, Some(last), &f).await;
    for (i, e) in events.iter().enumerate() {
        out.push(format!("34 watch from +1 event {i:<2}   {e}"));
    }
    out.push(format!("34 watch from +1 responses  {}", responses.join(" | ")));

    // Compaction; reads below it; a watch from below it.
    let c = r0 + 6;
    probe!(
        "35 compact at +6",
        kv.compact(pb::CompactionRequest { revision: c, physical: false }),
        |r| format!("rev={}", f.hdr(&r.header))
    );
    probe!("36 get a at +5", kv.range(pb::RangeRequest { revision: c - 1, ..get("a") }), |r| f.range(&r));
    probe!("37 get a at +6", kv.range(pb::RangeRequest { revision: c, ..get("a") }), |r| f.range(&r));
    probe!(
        "38 compact at +6 again",
        kv.compact(pb::CompactionRequest { revision: c, physical: false }),
        |r| format!("rev={}", f.hdr(&r.header))
    );
    probe!(
        "39 compact at +4",
        kv.compact(pb::CompactionRequest { revision: c - 2, physical: false }),
        |r| format!("rev={}", f.hdr(&r.header))
    );
    probe!(
        "40 compact future",
        kv.compact(pb::CompactionRequest { revision: last + 10, physical: false }),
        |r| format!("rev={}", f.hdr(&r.header))
    );
    let (events, responses) = watch(&ch, r0 + 2, None, &f).await;
    out.push(format!("41 watch from +2 (compacted) {} events; {}", events.len(), responses.join(" | ")));
    out
}

/// Watches every key from `start` (prev_kv): the events until one at revision `until` (or,
/// with `None`, until the watch is canceled), and each response's flags.
async fn watch(ch: &Channel, start: i64, until: Option<i64>, f: &Fmt) -> (Vec<String>, Vec<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = pb::WatchCreateRequest {
        key: vec![0],
        range_end: vec![0],
        start_revision: start,
        prev_kv: true,
        ..Default::default()
    };
    tx.send(pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) })
        .await
        .expect("send");
    let mut stream = WatchClient::new(ch.clone())
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let (mut events, mut responses) = (Vec::new(), Vec::new());
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let resp = match next {
            Err(_) => {
                responses.push("timeout".into());
                break;
            }
            Ok(Err(s)) => {
                responses.push(err(&s));
                break;
            }
            Ok(Ok(None)) => {
                responses.push("end".into());
                break;
            }
            Ok(Ok(Some(r))) => r,
        };
        if resp.created || resp.canceled || resp.compact_revision != 0 {
            responses.push(format!(
                "created={} canceled={} compact_revision={}",
                resp.created,
                resp.canceled,
                f.rev(resp.compact_revision)
            ));
        }
        events.extend(resp.events.iter().map(|e| f.event(e)));
        let seen = resp.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max();
        if resp.canceled || until.is_some_and(|u| seen.is_some_and(|s| s >= u)) {
            break;
        }
    }
    drop(tx);
    (events, responses)
}

#[test]
fn shoal_answers_like_etcd() {
    if etcd_missing() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let etcd = Etcd::start(tmp.path());
    let etcd_lines = rt.block_on(async { probes(connect(etcd.client_port, "etcd").await).await });
    drop(etcd);

    let mut node = Node::with_etcd(tmp.path(), "m1");
    node.start("daemon");
    assert!(node.ok(&["cluster", "init"]).contains("initialized"));
    let shoal_lines = rt.block_on(async { probes(connect(node.etcd_port, "shoal").await).await });

    let report: Vec<String> = etcd_lines
        .iter()
        .zip(&shoal_lines)
        .map(|(e, s)| if e == s { format!("  {e}") } else { format!("- {e}\n+ {s}") })
        .collect();
    assert!(etcd_lines == shoal_lines, "Shoal (+) answers differently from etcd (-):\n{}", report.join("\n"));
    eprintln!("{}", etcd_lines.join("\n"));
}
