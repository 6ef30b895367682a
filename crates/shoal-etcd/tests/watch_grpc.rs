//! Watch and lease streams through tonic's generated client: what etcdctl cannot show
//! (several watchers on one stream, filters, progress, cancel, `hasleader`).

use shoal_etcd::pb::etcdserverpb as pb;
use shoal_etcd::pb::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient,
};
use shoal_etcd::{EtcdBackend, EtcdServer, MemoryBackend};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

struct Env {
    backend: Arc<MemoryBackend>,
    channel: Channel,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(progress: Duration) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let backend = MemoryBackend::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = EtcdServer::new(backend.clone()).progress_interval(progress);
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let channel =
        Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    Env { backend, channel, _stop: stop }
}

async fn put(env: &Env, k: &str, v: &str) -> i64 {
    let r = KvClient::new(env.channel.clone())
        .put(pb::PutRequest { key: k.into(), value: v.into(), ..Default::default() })
        .await
        .expect("put")
        .into_inner();
    r.header.expect("header").revision
}

async fn del(env: &Env, k: &str) {
    KvClient::new(env.channel.clone())
        .delete_range(pb::DeleteRangeRequest { key: k.into(), ..Default::default() })
        .await
        .expect("del");
}

fn create(key: &str, f: impl FnOnce(&mut pb::WatchCreateRequest)) -> pb::WatchRequest {
    let mut c = pb::WatchCreateRequest { key: key.into(), ..Default::default() };
    f(&mut c);
    pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(c)) }
}

async fn open(env: &Env) -> (mpsc::Sender<pb::WatchRequest>, Streaming<pb::WatchResponse>) {
    let (tx, rx) = mpsc::channel(16);
    let resp = WatchClient::new(env.channel.clone()).watch(ReceiverStream::new(rx)).await.expect("watch");
    (tx, resp.into_inner())
}

async fn next(s: &mut Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a watch response in time")
        .expect("no error")
        .expect("stream open")
}

fn keys(r: &pb::WatchResponse) -> Vec<(i32, String)> {
    r.events
        .iter()
        .map(|e| (e.r#type, String::from_utf8_lossy(&e.kv.as_ref().expect("kv").key).into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_filters_cancel_progress() {
    let env = start(Duration::from_secs(600)).await;
    let (tx, mut s) = open(&env).await;
    let r1 = put(&env, "a", "1").await;

    // Watcher 0: key "a" from r1 (replay), prev_kv; watcher 1: prefix "" (all keys), no puts.
    tx.send(create("a", |c| {
        c.start_revision = r1;
        c.prev_kv = true;
    }))
    .await
    .expect("send");
    let ack = next(&mut s).await;
    assert!(ack.created && ack.watch_id == 0 && !ack.canceled, "{ack:?}");
    let replay = next(&mut s).await;
    assert_eq!((replay.watch_id, keys(&replay)), (0, vec![(0, "a".to_string())]));
    assert!(replay.events[0].prev_kv.is_none(), "created, so no previous pair");

    tx.send(create("", |c| {
        c.range_end = vec![0];
        c.filters = vec![pb::watch_create_request::FilterType::Noput as i32];
    }))
    .await
    .expect("send");
    let ack = next(&mut s).await;
    assert!(ack.created && ack.watch_id == 1, "{ack:?}");

    // A client-chosen id that is taken is refused as etcd does.
    tx.send(create("x", |c| c.watch_id = 1)).await.expect("send");
    let dup = next(&mut s).await;
    assert!(dup.created && dup.canceled && dup.watch_id == -1, "{dup:?}");
    assert_eq!(dup.cancel_reason, "mvcc: duplicate watch ID provided on the WatchStream");

    let r2 = put(&env, "a", "2").await;
    let ev = next(&mut s).await;
    assert_eq!((ev.watch_id, keys(&ev)), (0, vec![(0, "a".to_string())]));
    assert_eq!(ev.events[0].kv.as_ref().expect("kv").mod_revision, r2);
    assert_eq!(ev.events[0].prev_kv.as_ref().expect("prev_kv").value, b"1");
    assert!(ev.header.expect("header").revision >= r2);

    del(&env, "a").await;
    // Both watchers see the delete (watcher 1 filters puts only), in some order.
    let mut seen = [next(&mut s).await, next(&mut s).await];
    seen.sort_by_key(|r| r.watch_id);
    assert_eq!(keys(&seen[0]), vec![(1, "a".to_string())]);
    assert_eq!(keys(&seen[1]), vec![(1, "a".to_string())]);
    assert_eq!(seen[1].watch_id, 1);

    // Progress request: watch_id -1, header revision = what every watcher has reached.
    let now = env.backend.header().revision;
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
    })
    .await
    .expect("send");
    let p = next(&mut s).await;
    assert_eq!((p.watch_id, p.events.len()), (-1, 0));
    assert_eq!(p.header.expect("header").revision, now);

    // Cancel watcher 0: acked; later puts reach nobody (watcher 1 filters puts).
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: 0,
        })),
    })
    .await
    .expect("send");
    let c = next(&mut s).await;
    assert!(c.canceled && c.watch_id == 0, "{c:?}");
    put(&env, "a", "3").await;
    del(&env, "a").await;
    let d = next(&mut s).await;
    assert_eq!((d.watch_id, keys(&d)), (1, vec![(1, "a".to_string())]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_start_and_progress_notify() {
    let env = start(Duration::from_millis(200)).await;
    for v in ["1", "2", "3"] {
        put(&env, "k", v).await;
    }
    let rev = env.backend.header().revision;
    KvClient::new(env.channel.clone())
        .compact(pb::CompactionRequest { revision: rev, physical: false })
        .await
        .expect("compact");
    let (tx, mut s) = open(&env).await;
    tx.send(create("k", |c| c.start_revision = rev - 1)).await.expect("send");
    let ack = next(&mut s).await;
    assert!(ack.created, "{ack:?}");
    let cancel = next(&mut s).await;
    assert!(
        cancel.canceled && cancel.compact_revision == rev && cancel.watch_id == ack.watch_id,
        "{cancel:?}"
    );

    // Start exactly at the compaction revision: complete replay.
    tx.send(create("k", |c| {
        c.start_revision = rev;
        c.progress_notify = true;
    }))
    .await
    .expect("send");
    let ack = next(&mut s).await;
    assert!(ack.created && !ack.canceled);
    let ev = next(&mut s).await;
    assert_eq!(ev.events.len(), 1);
    // Idle: a progress notification (no events) for this watcher at the current revision.
    let p = next(&mut s).await;
    assert_eq!((p.watch_id, p.events.len()), (ack.watch_id, 0));
    assert_eq!(p.header.expect("header").revision, rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hasleader_and_keepalive_stream() {
    let env = start(Duration::from_secs(600)).await;
    let mut lease = LeaseClient::new(env.channel.clone());
    let g = lease.lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 0 }).await.expect("grant").into_inner();
    let (tx, rx) = mpsc::channel(4);
    let mut ka = lease.lease_keep_alive(ReceiverStream::new(rx)).await.expect("keepalive").into_inner();
    tx.send(pb::LeaseKeepAliveRequest { id: g.id }).await.expect("send");
    let r = ka.message().await.expect("ok").expect("open");
    assert_eq!((r.id, r.ttl), (g.id, 30));
    // Unknown lease: TTL 0, and the stream stays usable.
    tx.send(pb::LeaseKeepAliveRequest { id: 999 }).await.expect("send");
    let r = ka.message().await.expect("ok").expect("open");
    assert_eq!((r.id, r.ttl), (999, 0));
    tx.send(pb::LeaseKeepAliveRequest { id: g.id }).await.expect("send");
    assert_eq!(ka.message().await.expect("ok").expect("open").ttl, 30);
    // Time-to-live of an unknown lease: TTL -1, not an error.
    let t = lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 999, keys: true }).await.expect("ttl");
    assert_eq!(t.into_inner().ttl, -1);

    // No leader: streams asking `hasleader` fail at once; others still open.
    env.backend.set_leader(false);
    let mut req = tonic::Request::new(ReceiverStream::new(mpsc::channel::<pb::WatchRequest>(1).1));
    req.metadata_mut().insert("hasleader", "true".parse().expect("value"));
    let err = WatchClient::new(env.channel.clone()).watch(req).await.expect_err("no leader");
    assert_eq!((err.code(), err.message()), (tonic::Code::Unavailable, "etcdserver: no leader"));
    let mut req = tonic::Request::new(ReceiverStream::new(mpsc::channel::<pb::LeaseKeepAliveRequest>(1).1));
    req.metadata_mut().insert("hasleader", "true".parse().expect("value"));
    let err = lease.lease_keep_alive(req).await.expect_err("no leader");
    assert_eq!(err.message(), "etcdserver: no leader");
    open(&env).await;
}

/// A client that half-closes its request stream after creating a watcher keeps receiving
/// events, as from etcd (its server only ends the stream when the client goes away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_outlive_a_half_closed_request_stream() {
    let env = start(Duration::from_secs(600)).await;
    let (tx, mut s) = open(&env).await;
    tx.send(create("half", |_| {})).await.expect("send");
    drop(tx); // the request stream ends here
    assert!(next(&mut s).await.created, "the watcher is created");
    let rev = put(&env, "half", "1").await;
    let r = next(&mut s).await;
    assert_eq!(keys(&r), vec![(0, "half".to_string())], "the put after the half-close arrives");
    assert_eq!(r.events[0].kv.as_ref().expect("kv").mod_revision, rev);
}
