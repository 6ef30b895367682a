//! A closed-loop benchmark for any etcd v3 gRPC endpoint (a real etcd, or Shoal's
//! `--etcd-addr`), through this crate's generated tonic client; no protoc, no Go.
//!
//! ```text
//! kvbench put   ENDPOINTS CONNECTIONS IN_FLIGHT SECONDS VALUE_SIZE
//! kvbench watch ENDPOINTS SECONDS VALUE_SIZE
//! ```
//!
//! * `put`: IN_FLIGHT workers, spread over CONNECTIONS HTTP/2 connections (themselves spread
//!   round-robin over the comma-separated ENDPOINTS, `host:port`), each putting VALUE_SIZE-byte
//!   values under `kvbench/` back to back for SECONDS; prints puts/s and the p50/p99 latency.
//! * `watch`: one watcher on `kvbench-watch/` at the last endpoint, one writer at the first,
//!   one put at a time; the latency is from sending the put to receiving its event.
//!
//! One line of output, `key=value` pairs, for scripts/bench-etcd.sh.

use shoal_etcd::pb::etcdserverpb as pb;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn usage() -> ! {
    eprintln!("usage: kvbench put ENDPOINTS CONNECTIONS IN_FLIGHT SECONDS VALUE_SIZE");
    eprintln!("       kvbench watch ENDPOINTS SECONDS VALUE_SIZE");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| usage())
}

async fn channel(endpoint: &str) -> Channel {
    let uri = if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    Channel::from_shared(uri)
        .unwrap_or_else(|_| usage())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {endpoint}: {e}"))
}

/// The mean of latencies, in milliseconds.
fn mean_ms(lat: &[Duration]) -> f64 {
    lat.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / lat.len().max(1) as f64
}

/// The `q`-quantile of sorted latencies, in milliseconds.
fn ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

async fn put_bench(endpoints: Vec<String>, conns: usize, in_flight: usize, secs: u64, size: usize) {
    let mut channels = Vec::new();
    for i in 0..conns.max(1) {
        channels.push(channel(&endpoints[i % endpoints.len()]).await);
    }
    let value = vec![b'x'; size];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..in_flight.max(1) {
        let mut kv = pb::kv_client::KvClient::new(channels[w % channels.len()].clone());
        let value = value.clone();
        workers.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut n) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                // 1,000 keys per worker, overwritten in turn (a bounded key space, like etcd's
                // `benchmark put --key-space-size`).
                let key = format!("kvbench/{w:04}/{:04}", n % 1000).into_bytes();
                n += 1;
                let t = Instant::now();
                match kv.put(pb::PutRequest { key, value: value.clone(), ..Default::default() }).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("put: {e}");
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (l, e) = w.await.expect("worker");
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "mode=put endpoints={} conns={conns} in_flight={in_flight} value={size} secs={elapsed:.1} puts={} \
         puts_per_s={:.0} mean_ms={:.2} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} errors={errors}",
        endpoints.len(),
        lat.len(),
        lat.len() as f64 / elapsed,
        mean_ms(&lat),
        ms(&lat, 0.50),
        ms(&lat, 0.90),
        ms(&lat, 0.99),
    );
}

async fn watch_bench(endpoints: Vec<String>, secs: u64, size: usize) {
    let writer = channel(&endpoints[0]).await;
    let watcher = channel(endpoints.last().expect("an endpoint")).await;
    let mut kv = pb::kv_client::KvClient::new(writer);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let prefix = b"kvbench-watch/".to_vec();
    let mut end = prefix.clone();
    *end.last_mut().expect("prefix") += 1;
    let create = pb::WatchCreateRequest { key: prefix, range_end: end, ..Default::default() };
    tx.send(pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) })
        .await
        .expect("send");
    let mut stream = pb::watch_client::WatchClient::new(watcher)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let created = stream.message().await.expect("watch stream").expect("created");
    assert!(created.created, "the first watch response acknowledges the watch");
    let value = vec![b'x'; size];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut lat = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let key = format!("kvbench-watch/{:04}", n % 1000).into_bytes();
        n += 1;
        let t = Instant::now();
        let rev = kv
            .put(pb::PutRequest { key, value: value.clone(), ..Default::default() })
            .await
            .expect("put")
            .into_inner()
            .header
            .map_or(0, |h| h.revision);
        // Until the event of this put (its mod_revision is the put's revision).
        'event: loop {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an event within 10 s")
                .expect("watch stream")
                .expect("the watch stays open");
            for e in &resp.events {
                if e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= rev) {
                    break 'event;
                }
            }
        }
        lat.push(t.elapsed());
    }
    drop(tx);
    lat.sort();
    println!(
        "mode=watch endpoints={} value={size} events={} mean_ms={:.2} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2}",
        endpoints.len(),
        lat.len(),
        mean_ms(&lat),
        ms(&lat, 0.50),
        ms(&lat, 0.90),
        ms(&lat, 0.99),
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoints = |i: usize| -> Vec<String> {
        let e: Vec<String> =
            args.get(i).map(|s| s.split(',').map(String::from).collect()).unwrap_or_default();
        if e.is_empty() {
            usage()
        }
        e
    };
    match args.first().map(String::as_str) {
        Some("put") => {
            put_bench(endpoints(1), arg(&args, 2), arg(&args, 3), arg(&args, 4), arg(&args, 5)).await
        }
        Some("watch") => watch_bench(endpoints(1), arg(&args, 2), arg(&args, 3)).await,
        _ => usage(),
    }
}
