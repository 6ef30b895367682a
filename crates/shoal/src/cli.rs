//! Client commands: talk to the local daemon's API and print tables or `--format json`.

use crate::filter::Filters;
use crate::format::print_listing;
use crate::service_cli;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use shoal_api::{Client, ClusterInfo, NodeUpdate};
use shoal_types::{Availability, Node};
use std::collections::BTreeMap;

pub use crate::format::Format;

#[derive(Args, Clone, Debug)]
pub struct ListOpts {
    /// Output format: `table`, `json`, or a Go template (`'{{.Name}}'`, `'table {{.ID}}\t{{.Name}}'`).
    #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
    pub format: Format,
    /// Only what matches KEY=VALUE (repeatable; values of one key are alternatives).
    #[arg(long = "filter", short = 'f', value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Only print IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Read this manager's replica without confirming with a quorum.
    #[arg(long)]
    pub stale: bool,
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Make the local daemon the first manager of a new cluster.
    Init {
        /// The UDP port of the VXLAN data path between nodes (overlay networks), 1024-49151;
        /// every node must accept UDP on it from the others. Fixed for the cluster's life: it
        /// cannot be changed after init (as in Docker).
        #[arg(long, value_name = "PORT", default_value_t = shoal_state::DEFAULT_DATA_PATH_PORT,
              value_parser = parse_data_path_port, conflicts_with = "restore")]
        data_path_port: u16,
        /// Start the new cluster from a backup (`shoal cluster backup`) instead of empty: same CA
        /// and join tokens (the old workers' certificates stay valid), services, tasks, networks
        /// and key-value store; the old cluster's managers are removed (this node is the only
        /// manager). Only on a daemon in no cluster yet. The data-path port is the backup's.
        #[arg(long, value_name = "FILE")]
        restore: Option<std::path::PathBuf>,
        /// Turn autolock on: every manager's data key is wrapped by an unlock key, printed once,
        /// that no disk holds; a restarted manager waits for `shoal cluster unlock`.
        #[arg(long)]
        autolock: bool,
    },
    /// Change cluster-wide settings.
    Update {
        /// Autolock on (a new unlock key, printed once; keep it safe) or off.
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set, required = true)]
        autolock: bool,
    },
    /// Unlock a manager that autolock keeps locked after a restart: give the cluster's unlock
    /// key on standard input (a prompt on a terminal).
    Unlock,
    /// Show the unlock key (admins only), or replace it with --rotate. A manager that is down
    /// during a rotation still opens with the previous key: keep it until every manager is back.
    UnlockKey {
        /// Replace the key; the managers rewrap their data keys with the new one.
        #[arg(long)]
        rotate: bool,
        /// Only print the key.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a backup of the replicated state (cluster, CA, join tokens, nodes, services, tasks,
    /// networks, key-value store) as of now, taken through any manager. The file holds the CA
    /// key and the join tokens: anyone who has it can join nodes to the cluster, so it is
    /// written 0600; keep it like a private key. Restore it with `cluster init --restore FILE`.
    Backup {
        /// The file to write (atomically: a failed backup leaves no partial file).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: std::path::PathBuf,
    },
    /// Show the cluster and this manager's Raft view.
    Inspect {
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// Every manager: reachable, Raft state, term, last log and applied index.
    Health {
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// This node leaves its cluster: its tasks stop and it forgets the cluster; the daemon exits.
    /// A manager leaves the Raft membership first; the last manager only with --force (that ends
    /// the cluster). Remove a worker's entry afterwards with `shoal node rm` on a manager.
    Leave {
        #[arg(long)]
        force: bool,
    },
    /// Join an existing cluster as a manager or a worker, as the token says (run against a
    /// daemon in no cluster yet).
    Join {
        /// The manager join token (`shoal cluster join-token manager` on a manager).
        #[arg(long)]
        token: String,
        /// Node-to-node address of a manager, HOST:PORT.
        addr: String,
    },
    /// Make a new cluster's CA and both join tokens before the cluster exists, for machines that
    /// form it from configuration files on first boot: the first manager's file says
    /// `init = true` and `prepared = "DIR"`, the others' `[join] token_file = "DIR/manager.token"`
    /// (workers: `worker.token`). Runs here, without a daemon; writes DIR/ca.crt, ca.key,
    /// manager.token and worker.token (0600; the directory 0700).
    Prepare {
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Create a client certificate for the TCP API (`shoal -H tcp://HOST:PORT --tls-dir DIR`),
    /// the web UI and the Chronos API on non-loopback addresses, and the etcd API over TLS:
    /// writes DIR/ca.pem, DIR/cert.pem and DIR/key.pem (0600). The key is made here and never
    /// leaves this machine; the manager signs a CSR. Only an admin (or root on a manager's
    /// socket) may create one.
    ClientCert {
        /// Where to write the files (created with mode 0700).
        #[arg(long)]
        out: std::path::PathBuf,
        /// The client's name in the certificate (1-64 characters of [a-z0-9-]).
        #[arg(long, default_value = "admin")]
        name: String,
        /// What the certificate may do. `admin`: everything root may do on a manager's socket
        /// (every client certificate made before roles existed is an admin's). `read-only`:
        /// reads that reveal no secret — ls, inspect, ps, logs, events, the web UI's views,
        /// key-value ranges and watches (etcd: Range, Watch, Txn that only reads, lease and member
        /// lists, status) — and nothing else: no creating, changing or removing anything, no join
        /// tokens, no client certificates, no backups (they hold the CA key), no exec, no
        /// checkpoints or migrations.
        #[arg(long, default_value = "admin", value_parser = ["admin", "read-only"])]
        role: String,
        /// Replace a certificate already in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Show (or rotate) the token that lets a worker or a manager join.
    JoinToken {
        /// worker or manager
        role: String,
        /// Replace the token; the old one stops working.
        #[arg(long)]
        rotate: bool,
        /// Only print the token.
        #[arg(short, long)]
        quiet: bool,
    },
}

#[derive(Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    Ls(ListOpts),
    /// Show one node.
    Inspect {
        node: String,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "json")]
        format: Format,
    },
    /// Change a node's availability or labels.
    Update {
        node: String,
        #[arg(long, value_parser = parse_availability)]
        availability: Option<Availability>,
        #[arg(long = "label-add", value_parser = parse_kv)]
        label_add: Vec<(String, String)>,
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        /// With `--availability drain`: move every task that can be checkpointed to other nodes
        /// with its state (live migration) before the rest are restarted elsewhere.
        #[arg(long)]
        migrate: bool,
        /// `manager` or `worker`: promote or demote the node (as `node promote|demote`).
        #[arg(long, value_parser = parse_role)]
        role: Option<shoal_types::NodeRole>,
    },
    /// Make workers managers: each gets a manager certificate, restarts as a manager and joins
    /// the Raft membership (its tasks keep running).
    Promote { nodes: Vec<String> },
    /// Make managers workers: each leaves the Raft membership (through the leader), then
    /// restarts as a worker. The last manager cannot be demoted.
    Demote { nodes: Vec<String> },
    /// List the tasks on nodes (default: the node this API belongs to).
    Ps {
        nodes: Vec<String>,
        #[command(flatten)]
        args: service_cli::PsArgs,
    },
    /// Remove a node from the cluster.
    Rm {
        node: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Create a service: IMAGE [COMMAND] [ARG...], or with `--driver process` COMMAND [ARG...].
    /// Waits until the tasks run (or the timeout) unless -d.
    Create(Box<service_cli::CreateArgs>),
    /// Change a service (a rolling update when its tasks change). Waits unless -d.
    Update(Box<service_cli::UpdateArgs>),
    /// The output of a service's tasks, from the nodes that run them.
    Logs(crate::logs_cli::LogsArgs),
    /// Set the replicas of replicated services: SERVICE=N... Waits unless -d.
    Scale(service_cli::ScaleArgs),
    /// Return a service to its previous spec. Waits unless -d.
    Rollback {
        service: String,
        #[command(flatten)]
        progress: service_cli::ProgressOpts,
    },
    /// Even out a replicated service's spread over its eligible nodes, one task at a time
    /// (respecting that every task is up before the next move). Waits unless -d.
    Rebalance {
        service: String,
        #[command(flatten)]
        progress: service_cli::ProgressOpts,
    },
    /// List services.
    Ls(ListOpts),
    /// List the tasks of services (history of a slot under ` \_ `).
    Ps {
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        args: service_cli::PsArgs,
    },
    /// Show services (JSON, or a readable summary with --pretty).
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        /// A readable summary instead of JSON.
        #[arg(long)]
        pretty: bool,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "json")]
        format: Format,
        /// Only print IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove a service and stop its tasks.
    Rm { services: Vec<String> },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// `--data-path-port`: refused here already (the daemon checks again), with the daemon's message.
fn parse_data_path_port(s: &str) -> Result<u16, String> {
    let n: u64 = s.trim().parse().map_err(|_| format!("not a port number: {s:?}"))?;
    shoal_state::validate_data_path_port(n).map_err(|e| e.to_string())
}

fn parse_availability(s: &str) -> Result<Availability, String> {
    match s {
        "active" => Ok(Availability::Active),
        "pause" => Ok(Availability::Pause),
        "drain" => Ok(Availability::Drain),
        _ => Err(format!("availability must be active, pause or drain, not {s:?}")),
    }
}

fn parse_role(s: &str) -> Result<shoal_types::NodeRole, String> {
    match s {
        "manager" => Ok(shoal_types::NodeRole::Manager),
        "worker" => Ok(shoal_types::NodeRole::Worker),
        _ => Err(format!("role must be manager or worker, not {s:?}")),
    }
}

fn stale_q(stale: bool) -> &'static str {
    if stale {
        "?stale=true"
    } else {
        ""
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints rows as aligned columns.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{:<w$}   ", c, w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

pub async fn cluster(c: &Client, cmd: ClusterCmd) -> Result<()> {
    match cmd {
        // Needs no daemon; main runs it before connecting.
        ClusterCmd::Prepare { out } => crate::config::prepare(&out)?,
        ClusterCmd::Init { restore: Some(file), autolock, .. } => {
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            // Checked here first for a clear error before anything is sent; the daemon checks again.
            let (header, _) = shoal_api::backup::decode(&bytes)
                .with_context(|| format!("cannot restore from {}", file.display()))?;
            let info: ClusterInfo = serde_json::from_slice(
                &c.with_timeout(std::time::Duration::from_secs(300))
                    .bytes(hyper::Method::POST, "/v1/cluster/restore", Some(bytes))
                    .await?,
            )
            .context("reading the daemon's answer")?;
            println!(
                "Cluster {} restored from {} (Raft index {}, taken {}): this node ({}) is now its only \
                 manager and the leader; {} services, {} nodes.",
                header.cluster_id,
                file.display(),
                header.raft_index,
                header.created_at,
                info.raft.node_id,
                info.services,
                info.nodes,
            );
            if autolock {
                set_autolock(c, true).await?;
            }
        }
        ClusterCmd::Backup { output } => {
            let started = std::time::Instant::now();
            let bytes = c
                .with_timeout(std::time::Duration::from_secs(300))
                .bytes(hyper::Method::GET, "/v1/cluster/backup", None)
                .await?;
            let (header, _) =
                shoal_api::backup::decode(&bytes).context("the daemon sent a damaged backup")?;
            shoal_pki::write_private_file(&output, &bytes)
                .with_context(|| format!("cannot write {}", output.display()))?;
            println!(
                "Backup of cluster {} at Raft index {} (term {}): {} bytes in {:.1}s written to {} \
                 (0600: it holds the cluster's CA key and join tokens; keep it safe).",
                header.cluster_id,
                header.raft_index,
                header.raft_term,
                bytes.len(),
                started.elapsed().as_secs_f64(),
                output.display(),
            );
        }
        ClusterCmd::Init { data_path_port, restore: None, autolock } => {
            let args = shoal_api::InitArgs { data_path_port: Some(data_path_port.into()) };
            let info: ClusterInfo = c.post("/v1/cluster/init", &args).await?;
            println!(
                "Cluster initialized: this node ({}) is now a manager and the leader.",
                info.raft.node_id
            );
            if autolock {
                set_autolock(c, true).await?;
            }
        }
        ClusterCmd::Update { autolock } => set_autolock(c, autolock).await?,
        ClusterCmd::Unlock => {
            let key = read_unlock_key()?;
            let req = shoal_api::autolock::UnlockRequest { unlock_key: key };
            let _: serde_json::Value = c.post("/v1/cluster/unlock", &req).await?;
            println!("Manager unlocked.");
        }
        ClusterCmd::UnlockKey { rotate, quiet } => {
            let a: shoal_api::autolock::AutolockAnswer = if rotate {
                c.post("/v1/cluster/unlock-key/rotate", &serde_json::json!({})).await?
            } else {
                c.get("/v1/cluster/unlock-key").await?
            };
            let Some(key) = a.unlock_key else {
                anyhow::bail!(
                    "autolock is off: there is no unlock key (`shoal cluster update --autolock=true`)"
                );
            };
            if quiet {
                println!("{key}");
            } else {
                let what = if rotate { "The new unlock key" } else { "The unlock key" };
                println!("{what} (give it to `shoal cluster unlock` on a restarted manager):\n\n    {key}\n");
                if rotate {
                    println!("Keep the previous key until every manager has restarted once: one that was down meanwhile still opens with it.");
                }
            }
        }
        ClusterCmd::Health { format } => {
            let health: Vec<shoal_api::internal::ManagerHealth> = c.get("/v1/cluster/health").await?;
            if format == Format::Json {
                return print_json(&health);
            }
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            let rows = health
                .iter()
                .map(|h| {
                    let s = h.status.as_ref();
                    vec![
                        h.node_id.clone(),
                        h.addr.clone(),
                        if h.voter { "voter" } else { "learner" }.to_string(),
                        if h.reachable {
                            "yes".to_string()
                        } else {
                            format!("no: {}", h.error.clone().unwrap_or_default())
                        },
                        s.map_or("-".to_string(), |s| s.state.clone()),
                        s.map_or("-".to_string(), |s| s.term.to_string()),
                        opt(s.and_then(|s| s.last_log_index)),
                        opt(s.and_then(|s| s.last_applied)),
                    ]
                })
                .collect();
            table(&["MANAGER", "ADDRESS", "ROLE", "REACHABLE", "STATE", "TERM", "LAST LOG", "APPLIED"], rows);
            let healthy = health.iter().filter(|h| h.reachable && h.voter).count();
            let voters = health.iter().filter(|h| h.voter).count();
            println!(
                "\ncluster is {}: {healthy} of {voters} voting managers reachable (quorum {})",
                if healthy > voters / 2 { "healthy" } else { "UNHEALTHY" },
                voters / 2 + 1
            );
        }
        ClusterCmd::Leave { force } => {
            let path = format!("/v1/cluster/leave{}", if force { "?force=true" } else { "" });
            let _: serde_json::Value = c.post(&path, &serde_json::json!({})).await?;
            println!("Node left the cluster; its tasks are stopped and the daemon exits.");
        }
        ClusterCmd::Join { token, addr } => {
            let info: shoal_api::JoinInfo =
                c.post("/v1/cluster/join", &shoal_api::JoinArgs { token, addr }).await?;
            if info.role == "worker" {
                println!("This node joined the cluster as a worker.");
            } else {
                println!("This node joined the cluster as a manager ({} managers).", info.managers);
            }
        }
        ClusterCmd::ClientCert { out, name, role, force } => {
            client_cert(c, &out, &name, &role, force).await?
        }
        ClusterCmd::JoinToken { role, rotate, quiet } => {
            let path = format!("/v1/cluster/join-token/{role}{}", if rotate { "/rotate" } else { "" });
            let info: shoal_api::JoinTokenInfo =
                if rotate { c.post(&path, &serde_json::json!({})).await? } else { c.get(&path).await? };
            if quiet {
                println!("{}", info.token);
            } else {
                if rotate {
                    println!("Successfully rotated {role} join token.\n");
                }
                // This manager's node-to-node address, as the cluster knows it.
                let cluster: ClusterInfo = c.get("/v1/cluster?stale=true").await?;
                let r = &cluster.raft;
                let addr = r
                    .voters
                    .values()
                    .chain(r.learners.values())
                    .find(|m| m.node_id == r.node_id)
                    .map_or_else(|| "MANAGER-ADDR".to_string(), |m| m.addr.clone());
                println!("To add a {role} to this cluster, run the following command:\n");
                println!("    shoal cluster join --token {} {addr}\n", info.token);
            }
        }
        ClusterCmd::Inspect { format } => {
            let info: ClusterInfo = c.get("/v1/cluster").await?;
            if format == Format::Json {
                return print_json(&info);
            }
            let r = &info.raft;
            println!("Manager:        {} (raft id {})", r.node_id, r.raft_id);
            println!("Raft state:     {}", r.state);
            println!("Term:           {}", r.term);
            let leader =
                r.leader_node.as_ref().map_or("none".to_string(), |n| format!("{} at {}", n.node_id, n.addr));
            println!("Leader:         {leader}");
            println!("Autolock:       {}", if info.autolock { "on" } else { "off" });
            println!("Last log index: {}", r.last_log_index.map_or("-".into(), |i| i.to_string()));
            println!("Applied index:  {}", r.last_applied.map_or("-".into(), |i| i.to_string()));
            println!("Managers:       {}", r.voters.len());
            println!("State index:    {}", info.index);
            println!("Data path port: {}", info.data_path_port);
            println!("Nodes: {}   Services: {}   Tasks: {}", info.nodes, info.services, info.tasks);
        }
    }
    Ok(())
}

async fn set_role(c: &Client, nodes: Vec<String>, role: shoal_types::NodeRole) -> Result<()> {
    for node in nodes {
        let n: Node = c.get(&format!("/v1/nodes/{node}")).await?;
        if n.spec.role == role {
            println!("Node {node} is already a {}.", role.as_str());
            continue;
        }
        // No version: the change is to the role only, and a status change meanwhile (a heartbeat,
        // a re-registration) must not fail it; the manager applies it to the newest spec.
        let u = NodeUpdate { role: Some(role), version: None, ..Default::default() };
        let _: Node = c.post(&format!("/v1/nodes/{node}/update"), &u).await?;
        let verb = if role == shoal_types::NodeRole::Manager { "promoted to" } else { "demoted to" };
        println!("Node {node} {verb} {}.", role.as_str());
    }
    Ok(())
}

/// `node ls --filter`: docker's keys (`label` is the daemon's `--label`, `node.label` the
/// node's own labels; every node is an accepted member).
fn node_matches(f: &Filters, n: &Node) -> bool {
    f.prefix("id", &[n.id.as_str()])
        && f.prefix("name", &[n.description.hostname.as_str()])
        && f.labels("label", &n.description.engine_labels)
        && f.labels("node.label", &n.spec.labels)
        && f.exact("role", &[n.spec.role.as_str()])
        && f.exact("membership", &["accepted"])
}

pub async fn node(c: &Client, cmd: NodeCmd) -> Result<()> {
    match cmd {
        NodeCmd::Ls(o) => {
            let filters =
                Filters::parse(&o.filter, &["id", "name", "label", "node.label", "role", "membership"])?;
            let mut nodes: Vec<Node> = c.get(&format!("/v1/nodes{}", stale_q(o.stale))).await?;
            nodes.retain(|n| node_matches(&filters, n));
            let info: Option<ClusterInfo> = c.get("/v1/cluster?stale=true").await.ok();
            let me = info.map(|i| i.raft.node_id).unwrap_or_default();
            if o.quiet {
                nodes.iter().for_each(|n| println!("{}", n.id));
                return Ok(());
            }
            let table = o.format == Format::Table;
            let rows = nodes
                .iter()
                .map(|n| {
                    let is_me = n.id.as_str() == me;
                    let id = if is_me && table { format!("{} *", n.id) } else { n.id.to_string() };
                    let manager = match &n.manager_status {
                        Some(m) if m.leader => "Leader".to_string(),
                        Some(m) => format!("{:?}", m.reachability),
                        None => String::new(),
                    };
                    vec![
                        id,
                        is_me.to_string(),
                        n.description.hostname.clone(),
                        format!("{:?}", n.status.state),
                        format!("{:?}", n.spec.availability),
                        manager,
                        n.description.engine_version.clone(),
                    ]
                })
                .collect();
            let columns = [
                ("ID", "ID"),
                ("Self", ""),
                ("Hostname", "HOSTNAME"),
                ("Status", "STATUS"),
                ("Availability", "AVAILABILITY"),
                ("ManagerStatus", "MANAGER STATUS"),
                ("EngineVersion", "VERSION"),
            ];
            print_listing(&o.format, &columns, rows, || print_json(&nodes))?;
        }
        NodeCmd::Inspect { node, format } => {
            let n: Node = c.get(&format!("/v1/nodes/{node}")).await?;
            if format == Format::Json {
                return print_json(&n);
            }
            if crate::format::print_inspect(&format, &[&n])? {
                return Ok(());
            }
            println!("{} {} {:?} {:?}", n.id, n.description.hostname, n.status.state, n.spec.availability);
        }
        NodeCmd::Update { node, availability, label_add, label_rm, migrate, role } => {
            if availability.is_none() && label_add.is_empty() && label_rm.is_empty() && role.is_none() {
                bail!("nothing to update: give --availability, --label-add, --label-rm or --role");
            }
            if migrate && availability != Some(Availability::Drain) {
                bail!("--migrate goes with --availability drain");
            }
            if availability.is_none() && label_add.is_empty() && label_rm.is_empty() {
                if let Some(role) = role {
                    return set_role(c, vec![node], role).await;
                }
            }
            let u = NodeUpdate {
                availability,
                label_add: label_add.into_iter().collect::<BTreeMap<_, _>>(),
                label_rm,
                migrate,
                ..Default::default()
            };
            // Migrations take as long as their checkpoints: allow minutes.
            let c = if migrate { c.with_timeout(std::time::Duration::from_secs(1800)) } else { c.clone() };
            let n: Node = c.post(&format!("/v1/nodes/{node}/update"), &u).await?;
            println!("{}", n.id);
            if let Some(role) = role {
                set_role(&c, vec![node], role).await?;
            }
        }
        NodeCmd::Promote { nodes } | NodeCmd::Demote { nodes } if nodes.is_empty() => {
            bail!("name at least one node");
        }
        NodeCmd::Promote { nodes } => set_role(c, nodes, shoal_types::NodeRole::Manager).await?,
        NodeCmd::Demote { nodes } => set_role(c, nodes, shoal_types::NodeRole::Worker).await?,
        NodeCmd::Ps { nodes, args } => service_cli::node_ps(c, &nodes, &args).await?,
        NodeCmd::Rm { node, force } => {
            c.delete(&format!("/v1/nodes/{node}{}", if force { "?force=true" } else { "" })).await?;
            println!("{node}");
        }
    }
    Ok(())
}

pub async fn service(c: &Client, cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Create(a) => service_cli::create(c, *a).await?,
        ServiceCmd::Update(a) => service_cli::update(c, *a).await?,
        ServiceCmd::Logs(a) => crate::logs_cli::run(c, a).await?,
        ServiceCmd::Scale(a) => service_cli::scale(c, a).await?,
        ServiceCmd::Rollback { service, progress } => service_cli::rollback(c, &service, &progress).await?,
        ServiceCmd::Rebalance { service, progress } => service_cli::rebalance(c, &service, &progress).await?,
        ServiceCmd::Ls(o) => service_cli::ls(c, &o).await?,
        ServiceCmd::Ps { services, args } => service_cli::ps(c, &services, &args).await?,
        ServiceCmd::Inspect { services, pretty, format, quiet } => {
            service_cli::inspect(c, &services, pretty, format, quiet).await?
        }
        ServiceCmd::Rm { services } => {
            if services.is_empty() {
                bail!("name at least one service");
            }
            for s in services {
                c.delete(&format!("/v1/services/{s}")).await?;
                println!("{s}");
            }
        }
    }
    Ok(())
}

/// `cluster init --autolock`, `cluster update --autolock=true|false`.
async fn set_autolock(c: &Client, on: bool) -> Result<()> {
    let a: shoal_api::autolock::AutolockAnswer =
        c.post("/v1/cluster/autolock", &shoal_api::autolock::AutolockRequest { autolock: on }).await?;
    match (on, a.unlock_key) {
        (true, Some(key)) => println!(
            "Autolock is on. To unlock a manager after it restarts, run `shoal cluster unlock` and give this key:\n\n    {key}\n\n\
             Keep it somewhere safe: without it a restarted manager cannot start (`shoal cluster unlock-key` shows it again)."
        ),
        (true, None) => println!("Autolock was already on (`shoal cluster unlock-key` shows the key)."),
        (false, _) => println!("Autolock is off: managers keep their data keys in the clear (0600) and start unattended."),
    }
    Ok(())
}

/// The unlock key from standard input (after a prompt on a terminal).
fn read_unlock_key() -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("Enter the unlock key: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the unlock key")?;
    let key = line.trim().to_string();
    if key.is_empty() {
        anyhow::bail!("no unlock key given (on standard input)");
    }
    Ok(key)
}

/// `cluster client-cert`: a key and CSR made here, the certificate signed by the cluster CA,
/// written in docker's layout.
async fn client_cert(c: &Client, out: &std::path::Path, name: &str, role: &str, force: bool) -> Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let role: shoal_api::roles::ClientRole = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let key_path = out.join(shoal_api::client::TLS_KEY_FILE);
    if key_path.exists() && !force {
        bail!("{} already exists (use --force to replace it)", key_path.display());
    }
    let (key_pem, csr_pem) = shoal_pki::generate_key_and_csr(name)
        .with_context(|| format!("--name {name:?}: must be 1-64 characters of [a-z0-9-]"))?;
    let req = shoal_api::ClientCertRequest { name: name.to_string(), csr_pem: Some(csr_pem), role };
    let cert: shoal_api::ClientCert = c.post("/v1/cluster/client-cert", &req).await?;
    // A manager that predates roles ignores the request's role and signs an admin certificate:
    // never hand that out as a read-only one.
    let issued = shoal_pki::identity_from_pem(&cert.cert_pem).context("the certificate the manager sent")?;
    if issued.role != role.cert_role() {
        bail!(
            "the manager signed a {} certificate instead of a {role} one (it predates client roles: upgrade \
             the managers first); nothing was written",
            issued.role
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the mode of {}", out.display()))?;
    shoal_pki::write_private_file(&key_path, key_pem)?;
    shoal_pki::write_public_file(out.join(shoal_api::client::TLS_CERT_FILE), &cert.cert_pem)?;
    shoal_pki::write_public_file(out.join(shoal_api::client::TLS_CA_FILE), &cert.ca_pem)?;
    println!("Client certificate for {name:?} ({role}) written to {}.", out.display());
    match cert.api_addr.as_deref().filter(|a| !a.is_empty()) {
        Some(addr) => println!("Use it with: shoal -H tcp://{addr} --tls-dir {} node ls", out.display()),
        None => println!(
            "Use it with: shoal -H tcp://HOST:PORT --tls-dir {} node ls, against a manager started with \
             --api-addr (this one serves no TCP API)",
            out.display()
        ),
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Show tasks (id or unique id prefix) as JSON, with their network addresses.
    Inspect {
        #[arg(required = true)]
        tasks: Vec<String>,
    },
    /// Checkpoint a running task into a file (CRIU: memory, open files, filesystem changes),
    /// signed for this cluster. Without --leave-running the task stops and its slot restarts.
    Checkpoint {
        task: String,
        /// Keep the task running (a snapshot).
        #[arg(long)]
        leave_running: bool,
        /// The file to write (default: TASK.checkpoint); it must not exist.
        #[arg(long, short = 'o')]
        output: Option<std::path::PathBuf>,
    },
    /// Restore a checkpoint file as the task of its slot (replacing the task there now), on
    /// --node or where the slot's task runs. A tampered file, or one from another cluster, is
    /// refused before anything changes.
    Restore {
        file: std::path::PathBuf,
        #[arg(long)]
        node: Option<String>,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// Move a running task with its memory and files to another node (CRIU checkpoint, transfer
    /// over the cluster's mutual TLS, restore). It keeps its slot; if anything fails after the
    /// checkpoint it is restored on its own node.
    Migrate {
        task: String,
        /// The node to move to (id or hostname); default: the scheduler's choice.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// Run a command inside a running task (its namespaces, through its driver) on whichever node
    /// runs it and exit with its exit code; -i streams stdin and output, -t gives it a terminal.
    Exec(crate::exec_cli::ExecArgs),
}

pub async fn task(c: &Client, cmd: TaskCmd) -> Result<()> {
    match cmd {
        TaskCmd::Exec(a) => return crate::exec_cli::run(c, a).await,
        TaskCmd::Inspect { tasks } => {
            let all: Vec<shoal_types::Task> = c.get("/v1/tasks").await?;
            let mut found = Vec::new();
            for key in &tasks {
                let mut m = all.iter().filter(|t| t.id.as_str().starts_with(key.as_str()));
                match (m.next(), m.next()) {
                    (Some(t), None) => found.push(t),
                    (None, _) => bail!("task {key} not found"),
                    (Some(_), Some(_)) => bail!("task {key} is ambiguous: give more of its id"),
                }
            }
            return print_json(&found);
        }
        TaskCmd::Checkpoint { task, leave_running, output } => {
            let c = c.with_timeout(std::time::Duration::from_secs(1800));
            let body = serde_json::to_vec(&shoal_api::migrate::CheckpointToFile { leave_running })?;
            let file =
                c.bytes(hyper::Method::POST, &format!("/v1/tasks/{task}/checkpoint"), Some(body)).await?;
            let out = output.unwrap_or_else(|| std::path::PathBuf::from(format!("{task}.checkpoint")));
            // The file holds the task's memory: only its owner may read it.
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&out)
                    .with_context(|| format!("creating {} (it must not exist)", out.display()))?;
                f.write_all(&file)?;
                f.sync_all()?;
            }
            let what = if leave_running { "still running" } else { "stopped; its slot restarts" };
            println!(
                "Task {task} checkpointed to {} ({} bytes; the task is {what}).",
                out.display(),
                file.len()
            );
        }
        TaskCmd::Restore { file, node, format } => {
            let c = c.with_timeout(std::time::Duration::from_secs(1800));
            let body = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let q = node.map(|n| format!("?node={n}")).unwrap_or_default();
            let bytes = c.bytes(hyper::Method::POST, &format!("/v1/tasks/restore{q}"), Some(body)).await?;
            let r: shoal_api::migrate::Migration = serde_json::from_slice(&bytes)?;
            if format == Format::Json {
                return print_json(&r);
            }
            println!(
                "Restored task {} as task {} on {} ({} ms).",
                r.from_task, r.task, r.to_node, r.total_ms
            );
        }
        TaskCmd::Migrate { task, to, format } => {
            let c = c.with_timeout(std::time::Duration::from_secs(1800));
            let r: shoal_api::migrate::Migration = c
                .post(&format!("/v1/tasks/{task}/migrate"), &shoal_api::migrate::MigrateRequest { to })
                .await?;
            if format == Format::Json {
                return print_json(&r);
            }
            println!(
                "Task {} moved from {} to {} as task {} (downtime {} ms, {} bytes, {} ms in all).",
                r.from_task, r.from_node, r.to_node, r.task, r.downtime_ms, r.archive_bytes, r.total_ms
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ClusterCmd,
    }

    fn init(args: &[&str]) -> Result<u16, String> {
        let all = [&["shoal", "init"][..], args].concat();
        match Cli::try_parse_from(all).map_err(|e| e.to_string())?.cmd {
            ClusterCmd::Init { data_path_port, .. } => Ok(data_path_port),
            _ => Err("not init".into()),
        }
    }

    #[test]
    fn init_takes_a_data_path_port_from_1024_to_49151_and_defaults_to_4789() {
        assert_eq!(init(&[]), Ok(4789));
        assert_eq!(init(&["--data-path-port", "7789"]), Ok(7789));
        assert_eq!(init(&["--data-path-port", "49151"]), Ok(49151));
        for bad in ["80", "1023", "49152", "70000", "0"] {
            let e = init(&["--data-path-port", bad]).expect_err(bad);
            assert!(
                e.contains(&format!("data path port {bad} is out of range")) && e.contains("1024-49151"),
                "{e}"
            );
        }
        assert!(init(&["--data-path-port", "http"]).expect_err("text").contains("not a port number"));
    }
}
