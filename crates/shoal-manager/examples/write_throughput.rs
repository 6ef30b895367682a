//! Write throughput of one manager: service creates through Raft (each one fsynced to redb
//! before it is acknowledged), one at a time and with 32 writers in flight.
//!
//!     cargo run --release -p shoal-manager --example write_throughput [-- N]

use shoal_manager::{ManagerNode, NodeConfig, SingleManagerNetwork};
use shoal_raft::RaftNode;
use shoal_state::Command;
use shoal_types::{Service, ServiceId, ServiceSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn create(i: usize) -> Command {
    let mut spec = ServiceSpec { name: format!("svc-{i}"), ..Default::default() };
    spec.task_template.command = vec!["sleep".into(), "1000".into()];
    spec.mode = shoal_types::ServiceMode::Replicated { replicas: 0 };
    let svc = Service::new(ServiceId::new(format!("id-{i:08}")), spec);
    Command::CreateService { service: Box::new(svc) }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let me = ManagerNode { addr: "127.0.0.1:1".into(), node_id: "bench".into() };
    let node = Arc::new(
        RaftNode::start(NodeConfig::new(dir.path().join("raft"), 1, me), SingleManagerNetwork).await?,
    );
    node.initialize().await?;
    node.wait_for_leader(Duration::from_secs(10)).await.ok_or("no leader")?;

    let start = Instant::now();
    for i in 0..n {
        node.write(create(i)).await?;
    }
    let seq = start.elapsed();
    println!(
        "sequential: {n} creates in {:.2}s = {:.0} writes/s",
        seq.as_secs_f64(),
        n as f64 / seq.as_secs_f64()
    );

    let writers = 32;
    let start = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let node = node.clone();
        handles.push(tokio::spawn(async move {
            let mut i = n + w;
            while i < 2 * n {
                if let Err(e) = node.write(create(i)).await {
                    return Err(e.to_string());
                }
                i += writers;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let par = start.elapsed();
    println!(
        "{writers} writers: {n} creates in {:.2}s = {:.0} writes/s",
        par.as_secs_f64(),
        n as f64 / par.as_secs_f64()
    );
    node.shutdown().await;
    Ok(())
}
