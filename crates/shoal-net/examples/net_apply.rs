//! Applies a network view by hand, as the agent would (for debugging the kernel side without a
//! cluster): `net_apply FILE` where FILE is JSON `{"node_id", "state_dir", "view": NetView,
//! "tasks": [{"id", "addrs": [{"network_id", "addr"}]}]}`. Run it inside the node's namespace
//! (`nsenter --net=/run/netns/X`). Prints the changes made and each task's namespace.

use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    node_id: String,
    state_dir: std::path::PathBuf,
    view: shoal_net::NetView,
    #[serde(default)]
    tasks: Vec<Task>,
}

#[derive(Deserialize)]
struct Task {
    id: String,
    addrs: Vec<Addr>,
}

#[derive(Deserialize)]
struct Addr {
    network_id: String,
    addr: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: net_apply FILE")?;
    let input: Input = serde_json::from_slice(&std::fs::read(path)?)?;
    let net = shoal_net::Net::new(&input.node_id, &input.state_dir);
    let changes = net.reconcile(&input.view).await?;
    println!("changes: {changes}");
    for t in &input.tasks {
        let addrs: Vec<shoal_net::TaskAddr> = t
            .addrs
            .iter()
            .map(|a| shoal_net::TaskAddr { network_id: a.network_id.clone(), addr: a.addr.clone() })
            .collect();
        let at = net.attach(&t.id, &addrs, &input.view).await?;
        println!("task {}: {}", t.id, at.netns.display());
    }
    Ok(())
}
