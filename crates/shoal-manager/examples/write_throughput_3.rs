//! Write throughput of a three-manager cluster: three Raft members in one process, each with its
//! own redb store (every log append fsynced before it is acknowledged) and its own TLS listener
//! on 127.0.0.1, talking over real TCP and mutual TLS with certificates from a cluster CA. Service
//! creates are proposed on the leader, one at a time and with WRITERS (default 32) in flight; each one is
//! acknowledged only once a quorum (the leader and at least one follower) has it on disk.
//!
//!     cargo run --release -p shoal-manager --example write_throughput_3 [-- N [WRITERS]]

use shoal_manager::{ManagerNode, NodeConfig, RaftId};
use shoal_pki::{client_config, generate_key_and_csr, server_config, Ca, ClientAuth, Role};
use shoal_raft::transport::{raft_router, serve_tls, TlsNetwork};
use shoal_raft::RaftNode;
use shoal_state::Command;
use shoal_types::{Service, ServiceId, ServiceSpec};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const MEMBERS: [&str; 3] = ["mgr-1", "mgr-2", "mgr-3"];

fn create(i: usize) -> Command {
    let mut spec = ServiceSpec { name: format!("svc-{i}"), ..Default::default() };
    spec.task_template.command = vec!["sleep".into(), "1000".into()];
    spec.mode = shoal_types::ServiceMode::Replicated { replicas: 0 };
    let svc = Service::new(ServiceId::new(format!("id-{i:08}")), spec);
    Command::CreateService { service: Box::new(svc) }
}

struct Member {
    id: RaftId,
    me: ManagerNode,
    node: Arc<RaftNode>,
    server: JoinHandle<()>,
    _dir: TempDir,
}

/// One manager: its certificate from `ca`, its store in a fresh temporary directory, its Raft
/// listener on an ephemeral loopback port.
async fn start_member(ca: &Ca, id: RaftId) -> Result<Member, BoxError> {
    let node_id = format!("mgr-{id}");
    let (key, csr) = generate_key_and_csr(&node_id)?;
    let cert = ca.issue(&csr, &node_id, Role::Manager, 30 * DAY, SystemTime::now())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let dir = tempfile::tempdir()?;
    let me = ManagerNode { addr: addr.to_string(), node_id };
    let cfg = NodeConfig::new(dir.path().join("raft"), id, me.clone());
    let network = TlsNetwork::new(client_config(ca.cert_pem(), &cert, &key)?).with_local_id(id);
    let node = Arc::new(RaftNode::start(cfg, network).await?);
    let tls = server_config(ca.cert_pem(), &cert, &key, ClientAuth::Required)?;
    let members: Arc<BTreeSet<String>> = Arc::new(MEMBERS.iter().map(|m| m.to_string()).collect());
    let authorize = move |peer: &shoal_pki::NodeIdentity, _path: &str| members.contains(&peer.node_id);
    let server = tokio::spawn(serve_tls(listener, tls, raft_router(node.clone()), authorize));
    Ok(Member { id, me, node, server, _dir: dir })
}

/// The `q`-quantile (0..=1) of sorted latencies.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(label: &str, n: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort_unstable();
    println!(
        "{label}: {n} creates in {:.2}s = {:.0} writes/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        quantile(&latencies, 0.50).as_secs_f64() * 1e3,
        quantile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let ca = Ca::generate("bench")?;
    let mut members = Vec::new();
    for id in 1..=3 {
        members.push(start_member(&ca, id).await?);
    }

    // Member 1 bootstraps, takes 2 and 3 in as learners, then makes all three voters.
    let first = &members[0];
    first.node.initialize().await?;
    first.node.wait_for_leader(Duration::from_secs(10)).await.ok_or("no leader")?;
    for m in &members[1..] {
        first.node.add_learner(m.id, m.me.clone()).await?;
    }
    first.node.change_voters(BTreeSet::from([1, 2, 3])).await?;
    let voters = first.node.status().voters.len();
    if voters != 3 {
        return Err(format!("expected 3 voters, have {voters}").into());
    }
    let leader_id = first.node.wait_for_leader(Duration::from_secs(10)).await.ok_or("no leader")?;
    let leader = members.iter().find(|m| m.id == leader_id).ok_or("leader is not a member")?;
    println!("three managers over mTLS on loopback; leader {}", leader.me.node_id);

    let start = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        leader.node.write(create(i)).await?;
        latencies.push(t.elapsed());
    }
    report("sequential", n, start.elapsed(), latencies);

    let writers: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let node = leader.node.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = n + w;
            while i < 2 * n {
                let t = Instant::now();
                if let Err(e) = node.write(create(i)).await {
                    return Err(e.to_string());
                }
                latencies.push(t.elapsed());
                i += writers;
            }
            Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for h in handles {
        latencies.extend(h.await??);
    }
    report(&format!("{writers} writers"), n, start.elapsed(), latencies);

    // Sanity check: every member ends up with every service (each write was replicated, not
    // just committed on the leader and one follower). Concurrent writes land in the log in any
    // order, so wait for the leader's last applied index rather than for one name.
    let target = leader.node.status().last_applied.ok_or("leader applied nothing")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    for m in &members {
        while m.node.status().last_applied < Some(target) {
            if Instant::now() > deadline {
                return Err(format!("{} did not apply index {target}", m.me.node_id).into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let count = m.node.local_state().state.services().len();
        if count != 2 * n {
            return Err(format!("{} has {count} services, expected {}", m.me.node_id, 2 * n).into());
        }
    }
    println!("all three managers applied all {} creates", 2 * n);

    for m in &members {
        m.node.shutdown().await;
        m.server.abort();
    }
    Ok(())
}
