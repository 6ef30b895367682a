//! The `shoal` binary: the daemon (`shoal daemon`, `shoal dev`), the client commands that talk to
//! it over its API socket, and the simulator (`shoal simulate`).

mod cli;
mod daemon;
mod drivers;
mod events_cli;
mod exec_cli;
mod image_cli;
mod logs_cli;
mod network_cli;
mod service_cli;
mod stack_cli;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use shoal_sim::scenario::{self, ScenarioConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

const DEFAULT_SOCKET: &str = "/run/shoal/shoal.sock";
const DEFAULT_DATA_DIR: &str = "/var/lib/shoal";

#[derive(Parser)]
#[command(name = "shoal", version, about = "Shoal: a container cluster orchestrator in one binary")]
struct Cli {
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info", env = "SHOAL_LOG")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The daemon to talk to: unix:///path/to/shoal.sock, or tcp://HOST:PORT (mutual TLS with the
    /// client certificate in --tls-dir).
    #[arg(short = 'H', long, global = true, env = "SHOAL_HOST", default_value = concat!("unix://", "/run/shoal/shoal.sock"))]
    host: String,
    /// With `-H tcp://HOST:PORT`: the directory holding the client certificate (`ca.pem`,
    /// `cert.pem`, `key.pem`, from `shoal cluster client-cert`). Default: ~/.shoal.
    #[arg(long, global = true, env = "SHOAL_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct DaemonOpts {
    /// Where the node keeps its state (Raft log, snapshots, identity).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The API socket (root only).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    api_socket: PathBuf,
    /// Where the node-to-node (mTLS) listener binds.
    #[arg(long, default_value = "0.0.0.0:4242")]
    listen_addr: String,
    /// Address other nodes use to reach this one (default: the listen address, with 127.0.0.1
    /// for an unspecified host).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Lifetime of the node certificates this manager issues (renewed at 50-80% of it).
    #[arg(long, default_value = "90d", value_parser = parse_duration)]
    cert_ttl: std::time::Duration,
    /// Hostname to report (default: the machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// Engine label (`engine.labels.K` in constraints), repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A generic resource this node offers, NAME=COUNT (e.g. `--resource gpu=2`), repeatable.
    #[arg(long = "resource", value_parser = parse_resource)]
    resources: Vec<(String, u64)>,
    /// Also serve the API over TCP at HOST:PORT, with TLS and required client certificates of
    /// this cluster (`shoal cluster client-cert`). Default: none (the root-only socket only).
    #[arg(long)]
    api_addr: Option<String>,
    /// Where to serve the web UI (managers) and Prometheus `/metrics` (every node), or `off`.
    /// A loopback address is plain HTTP for root (and the daemon's user) only; any other address
    /// needs a client certificate of the cluster (`shoal cluster client-cert`).
    #[arg(long, default_value = "127.0.0.1:5050")]
    ui_addr: String,
    /// Also serve the Docker Engine API (the swarm subset the docker CLI uses) on this unix
    /// socket (root only), or `off`. Default: off for `daemon`; for `dev`, `docker.sock` next to
    /// the API socket (`/run/shoal/docker.sock`).
    #[arg(long)]
    docker_socket: Option<PathBuf>,
}

fn parse_resource(s: &str) -> Result<(String, u64), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => v
            .parse::<u64>()
            .map(|n| (k.to_string(), n))
            .map_err(|_| format!("expected NAME=COUNT with a whole number, got {s:?}")),
        _ => Err(format!("expected NAME=COUNT, got {s:?}")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    shoal_types::time::duration::parse(s)
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (it joins or creates a cluster through `shoal cluster`).
    Daemon(DaemonOpts),
    /// Run a node that is at once a single-node cluster: manager and worker, embedded store.
    Dev(DaemonOpts),
    /// Cluster-wide commands.
    #[command(subcommand)]
    Cluster(cli::ClusterCmd),
    /// Manage nodes.
    #[command(subcommand)]
    Node(cli::NodeCmd),
    /// Manage services.
    #[command(subcommand)]
    Service(cli::ServiceCmd),
    /// Act on single tasks (inspect, exec, live migration).
    #[command(subcommand)]
    Task(cli::TaskCmd),
    /// Manage overlay networks.
    #[command(subcommand)]
    Network(network_cli::NetworkCmd),
    /// Deploy and manage stacks of services from compose files.
    #[command(subcommand)]
    Stack(stack_cli::StackCmd),
    /// Object changes from the state store, as they happen (or since a time).
    Events(events_cli::EventsArgs),
    /// Manage this node's image store (used by the oci driver).
    Image {
        /// The node's data directory (the store is `DATA_DIR/images`).
        #[arg(long, default_value = DEFAULT_DATA_DIR, global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: image_cli::ImageCmd,
    },
    /// Per-task supervisor, started by the process and oci drivers (not for direct use).
    #[command(hide = true)]
    Shim { task_dir: PathBuf },
    /// Run the scheduling brain on a simulated cluster and print what it did.
    Simulate {
        /// Number of simulated nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Number of generated services (a mix of replicated, global and job services).
        #[arg(long, default_value_t = 50)]
        services: usize,
        /// Average replicas per replicated service.
        #[arg(long, default_value_t = 40)]
        replicas: u64,
        /// Seed for the workload, tie-breaks and IDs: the same seed gives the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Percentage of nodes to take down after the cluster first settles.
        #[arg(long, default_value_t = 10)]
        fail_nodes: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

fn init_logging(level: &str, format: LogFormat) -> Result<()> {
    // openraft narrates every election at info; keep it to warnings unless asked for by name.
    let directives =
        if level.contains("openraft") { level.to_string() } else { format!("{level},openraft=warn") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .with_context(|| format!("invalid --log-level {level:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn daemon_args(o: DaemonOpts, init: bool) -> daemon::DaemonArgs {
    daemon::DaemonArgs {
        data_dir: o.data_dir,
        advertise_addr: o.advertise_addr.unwrap_or_else(|| o.listen_addr.replace("0.0.0.0", "127.0.0.1")),
        listen_addr: o.listen_addr,
        cert_ttl: o.cert_ttl,
        api_socket: o.api_socket.clone(),
        hostname: o.hostname,
        labels: o.labels.into_iter().collect::<BTreeMap<_, _>>(),
        resources: o.resources.into_iter().collect::<BTreeMap<_, _>>(),
        api_addr: o.api_addr,
        ui_addr: (o.ui_addr != "off").then_some(o.ui_addr),
        docker_socket: match o.docker_socket {
            Some(p) if p.as_os_str() == "off" => None,
            Some(p) => Some(p),
            None if init => Some(o.api_socket.with_file_name("docker.sock")),
            None => None,
        },
        init,
    }
}

/// `~/.shoal`, docker's `~/.docker` for Shoal's client certificate.
fn default_tls_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".shoal"), |h| PathBuf::from(h).join(".shoal"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `task exec`: the command's own exit status.
        Err(e) if e.is::<exec_cli::Exit>() => {
            let exit = e.downcast_ref::<exec_cli::Exit>();
            if let Some(m) = exit.and_then(|x| x.message.as_ref()) {
                eprintln!("Error: {m}");
            }
            std::process::ExitCode::from(exit.map_or(1, |x| x.code))
        }
        Err(e) => {
            // The message, with its causes; no backtrace for a user-facing error.
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `shoal service ps X | head -1`: a client command whose reader went away stops quietly, like
/// other unix tools killed by SIGPIPE (exit status 141), instead of panicking in `println!`.
/// (Rust ignores SIGPIPE and resetting it needs `unsafe`, which the workspace forbids; so the
/// panic that `println!` raises on EPIPE is recognized here.) Not for the daemon or the shim.
fn quiet_on_broken_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("(os error 32)") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Daemon(_) | Cmd::Dev(_) | Cmd::Shim { .. }) {
        quiet_on_broken_stdout();
    }
    init_logging(&cli.log_level, cli.log_format)?;
    let tls_dir = cli.tls_dir.clone().unwrap_or_else(default_tls_dir);
    let client = || shoal_api::Client::connect(&cli.host, &tls_dir);
    match cli.command {
        Cmd::Daemon(o) => runtime()?.block_on(daemon::run(daemon_args(o, false)))?,
        Cmd::Dev(o) => runtime()?.block_on(daemon::run(daemon_args(o, true)))?,
        Cmd::Cluster(c) => runtime()?.block_on(async { cli::cluster(&client()?, c).await })?,
        Cmd::Node(c) => runtime()?.block_on(async { cli::node(&client()?, c).await })?,
        Cmd::Service(c) => runtime()?.block_on(async { cli::service(&client()?, c).await })?,
        Cmd::Task(c) => runtime()?.block_on(async { cli::task(&client()?, c).await })?,
        Cmd::Network(c) => runtime()?.block_on(async { network_cli::run(&client()?, c).await })?,
        // `stack config` reads files only: no daemon.
        Cmd::Stack(stack_cli::StackCmd::Config { files }) => stack_cli::config(&files)?,
        Cmd::Stack(c) => runtime()?.block_on(async { stack_cli::run(&client()?, c).await })?,
        Cmd::Events(a) => runtime()?.block_on(async { events_cli::run(&client()?, a).await })?,
        Cmd::Image { data_dir, command } => image_cli::run(&data_dir, command)?,
        // No async runtime: the shim is a small single-threaded supervisor.
        Cmd::Shim { task_dir } => std::process::exit(shoal_driver::shim::run(&task_dir)),
        Cmd::Simulate { nodes, services, replicas, seed, fail_nodes, format } => {
            if nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            if fail_nodes > 100 {
                bail!("--fail-nodes is a percentage (0-100)");
            }
            let cfg = ScenarioConfig {
                nodes,
                services,
                replicas,
                seed,
                fail_nodes_pct: fail_nodes,
                max_steps: 500,
            };
            tracing::info!(nodes, services, seed, "simulating");
            let started = Instant::now();
            let report = scenario::run(&cfg);
            let elapsed = started.elapsed();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Text => {
                    println!("{report}");
                    println!("  wall time {:.2}s", elapsed.as_secs_f64());
                }
            }
            if !report.violations.is_empty() {
                bail!("{} invariant violations", report.violations.len());
            }
        }
    }
    Ok(())
}
