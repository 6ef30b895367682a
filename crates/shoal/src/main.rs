//! The `shoal` binary: the daemon (`shoal daemon`, `shoal dev`), the client commands that talk to
//! it over its API socket, and the simulator (`shoal simulate`).

mod cli;
mod config;
mod daemon;
mod drivers;
mod events_cli;
mod exec_cli;
mod filter;
mod format;
mod image_cli;
mod info_cli;
mod job_cli;
mod kv_cli;
mod logs_cli;
mod network_cli;
mod progress;
mod secret_cli;
mod service_cli;
mod stack_cli;
mod unit_cli;

#[cfg(test)]
mod fuzz;

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
    /// A TOML file holding any of these flags (same names, `_` for `-`) and what to do on first
    /// boot: `init = true`, or a `[join]` section (`managers`, and `token_file`, `token_env` or
    /// `token`). Flags override the file. See packaging/shoal.toml.
    #[arg(long, env = "SHOAL_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (file and flags together, as TOML) and exit.
    #[arg(long)]
    print_config: bool,
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
    /// How often the Raft leader sends heartbeats to the other managers (etcd's
    /// `--heartbeat-interval`). Give every manager the same value.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    heartbeat_interval: std::time::Duration,
    /// A manager that hears nothing from the leader for 1.6–2 times this long (randomized)
    /// starts an election, and a manager refuses to vote while it heard from a leader within
    /// it — so a node that was cut off cannot depose a healthy leader. At least 4 heartbeat
    /// intervals. Give every manager the same value.
    #[arg(long, default_value = "350ms", value_parser = parse_duration)]
    election_timeout: std::time::Duration,
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
    /// Where to serve the etcd v3 API (etcdctl, etcd clients) on the cluster's key-value store,
    /// or `off`. A loopback address is plain (h2c); any other needs a client certificate of the
    /// cluster (`shoal cluster client-cert`; `etcdctl --cacert --cert --key`). With the default,
    /// a port already in use (a real etcd) only turns it off, with a warning.
    #[arg(long, default_value = DEFAULT_ETCD_ADDR)]
    etcd_addr: String,
    /// Also serve Chronos's REST API (`/v1/scheduler/...`, for Chronos clients and job
    /// definitions) on this address; the web UI's address serves it too. A loopback address is
    /// plain HTTP for root (and the daemon's user) only; any other needs a client certificate of
    /// the cluster. Default: none.
    #[arg(long)]
    chronos_addr: Option<String>,
}

/// etcd's client port, on loopback.
const DEFAULT_ETCD_ADDR: &str = "127.0.0.1:2379";

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
    /// Manage secrets: data that tasks find in files in memory (`/run/secrets/NAME`), shown to
    /// no one and written to no node's disk.
    #[command(subcommand)]
    Secret(secret_cli::SecretCmd),
    /// Manage configs: like secrets, but `inspect` shows the data; tasks find them at their
    /// target (default `/NAME`).
    #[command(subcommand)]
    Config(secret_cli::SecretCmd),
    /// Deploy and manage stacks of services from compose files.
    #[command(subcommand)]
    Stack(stack_cli::StackCmd),
    /// Object changes from the state store, as they happen (or since a time).
    Events(events_cli::EventsArgs),
    /// The cluster's key-value store (also served to etcd clients; see --etcd-addr).
    #[command(subcommand)]
    Kv(kv_cli::KvCmd),
    /// Scheduled jobs: cron or ISO 8601 schedules, dependencies between jobs, manual runs.
    #[command(subcommand)]
    Job(job_cli::JobCmd),
    /// fleet units: systemd unit files with [X-Fleet] placement (fleetctl's verbs).
    #[command(subcommand)]
    Unit(unit_cli::UnitCmd),
    /// Manage this node's image store (used by the oci driver).
    Image {
        /// The node's data directory (the store is `DATA_DIR/images`).
        #[arg(long, default_value = DEFAULT_DATA_DIR, global = true)]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: image_cli::ImageCmd,
    },
    /// The cluster at a glance (like `docker info`).
    Info {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print a shell completion script: `shoal completion bash > /etc/bash_completion.d/shoal`
    /// (zsh: into a directory of $fpath as `_shoal`; fish: ~/.config/fish/completions/shoal.fish).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for shoal and every subcommand (generated from this command line) into a
    /// directory, e.g. /usr/local/share/man/man1.
    Man {
        /// The directory to write `shoal.1`, `shoal-service-create.1`, ... into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
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
    // Colour codes only for a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn daemon_args(o: DaemonOpts, dev: bool, boot: config::FirstBoot) -> Result<daemon::DaemonArgs> {
    let init_data_path_port = match boot.data_path_port {
        None => shoal_state::DEFAULT_DATA_PATH_PORT,
        Some(p) => {
            shoal_state::validate_data_path_port(p).map_err(|e| anyhow::anyhow!("data_path_port: {e}"))?
        }
    };
    if dev && boot.join.is_some() {
        bail!("`shoal dev` creates its own cluster: a [join] section is for `shoal daemon`");
    }
    let prepared = boot.prepared.as_deref().map(config::read_prepared).transpose()?;
    let join = match boot.join {
        Some(j) => Some(daemon::JoinPlan { token: config::join_token(&j)?, managers: j.managers }),
        None => None,
    };
    Ok(daemon::DaemonArgs {
        data_dir: o.data_dir,
        advertise_addr: o.advertise_addr.unwrap_or_else(|| o.listen_addr.replace("0.0.0.0", "127.0.0.1")),
        listen_addr: o.listen_addr,
        cert_ttl: o.cert_ttl,
        raft_timing: daemon::RaftTiming::new(o.heartbeat_interval, o.election_timeout)?,
        api_socket: o.api_socket.clone(),
        hostname: o.hostname,
        labels: o.labels.into_iter().collect::<BTreeMap<_, _>>(),
        resources: o.resources.into_iter().collect::<BTreeMap<_, _>>(),
        api_addr: o.api_addr,
        ui_addr: (o.ui_addr != "off").then_some(o.ui_addr),
        docker_socket: match o.docker_socket {
            Some(p) if p.as_os_str() == "off" => None,
            Some(p) => Some(p),
            None if dev => Some(o.api_socket.with_file_name("docker.sock")),
            None => None,
        },
        init: dev || boot.init,
        init_data_path_port,
        prepared,
        join,
        etcd_addr: (o.etcd_addr != "off").then(|| o.etcd_addr.clone()),
        etcd_addr_is_default: o.etcd_addr == DEFAULT_ETCD_ADDR,
        chronos_addr: o.chronos_addr.filter(|a| a != "off"),
    })
}

/// `shoal daemon` and `shoal dev`: the configuration file under the flags, then the daemon.
fn daemon_main(cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    let (dev, mut o) = match cli.command {
        Cmd::Daemon(o) => (false, o),
        Cmd::Dev(o) => (true, o),
        _ => bail!("not a daemon command"),
    };
    let sub = matches
        .subcommand_matches(if dev { "dev" } else { "daemon" })
        .context("the daemon's command line")?;
    let (mut level, mut format) = (cli.log_level, cli.log_format);
    let boot = match &o.config {
        Some(path) => {
            let file = config::load(path)?;
            config::merge(file, &mut o, &mut level, &mut format, matches, sub)
        }
        None => config::FirstBoot::default(),
    };
    if o.print_config {
        print!("{}", config::render(&o, &level, format, &boot)?);
        return Ok(());
    }
    init_logging(&level, format)?;
    let args = daemon_args(o, dev, boot)?;
    runtime()?.block_on(daemon::run(args))
}

/// `~/.shoal`, docker's `~/.docker` for Shoal's client certificate.
fn default_tls_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".shoal"), |h| PathBuf::from(h).join(".shoal"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn main() -> std::process::ExitCode {
    // `shoal shim TASK_DIR` (how the drivers start it) goes straight to the shim: every task start
    // runs it twice, and it needs none of the command line's parsing or the logging set-up.
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(4).collect();
    if let Some(task_dir) = shoal_driver::shim::task_dir_from_args(&args) {
        std::process::exit(shoal_driver::shim::run(task_dir));
    }
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

/// Docker's `service create/update` flags that Shoal does not have, and why: such a flag is
/// answered with this instead of clap's "unexpected argument" and its tip, which would suggest a
/// flag that does something else.
const UNSUPPORTED_DOCKER_FLAGS: &[(&[&str], &str)] = &[
    (&["credential-spec"], "Shoal does not support Windows managed service accounts (it runs Linux tasks only)"),
    (&["isolation"], "Shoal does not support isolation modes (they are Windows'; Shoal runs Linux tasks only)"),
    (&["health-start-interval"], "Shoal does not support a start interval (health checks run every --health-interval, also during --health-start-period)"),
    (&["host", "host-add", "host-rm"], "Shoal does not support extra /etc/hosts entries (tasks on a network reach services by name; Shoal's own -H/--host names the daemon: unix://... or tcp://...)"),
    (&["sysctl", "sysctl-add", "sysctl-rm"], "Shoal does not support per-task sysctls"),
    (&["stop-signal"], "Shoal does not support other stop signals (tasks get SIGTERM, then SIGKILL after --stop-grace-period)"),
    (&["oom-score-adj"], "Shoal does not support OOM score adjustments (tasks keep the kernel's default score)"),
    (&["rollback"], "Shoal rolls back with its own verb: shoal service rollback SERVICE"),
];

/// Why `flag` (`--secret`, maybe `--secret=x`) is a docker flag Shoal does not support, when it is.
fn unsupported_docker_flag(flag: &str) -> Option<(String, &'static str)> {
    let name = flag.strip_prefix("--")?.split('=').next()?;
    UNSUPPORTED_DOCKER_FLAGS
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(_, why)| (format!("--{name}"), *why))
}

/// Whether the command line is `shoal [...] service create|update ...`; the index of the verb.
fn service_verb(args: &[String]) -> Option<usize> {
    let s = args.iter().position(|a| a == "service")?;
    let v = s + 1;
    matches!(args.get(v).map(String::as_str), Some("create" | "update")).then_some(v)
}

/// Parses the command line; docker flags Shoal does not support are refused with the reason
/// (exit status 2, as for any usage error).
fn parse_cli() -> (Cli, clap::ArgMatches) {
    let args: Vec<String> = std::env::args().collect();
    let refuse = |flag: &str, why: &str| -> ! {
        eprintln!("Error: unsupported flag {flag}: {why}");
        std::process::exit(2)
    };
    if let Some(verb) = service_verb(&args) {
        // Docker's `--host NAME:IP` would be taken as Shoal's global `--host` (the daemon).
        let mut it = args[verb + 1..].iter().take_while(|a| a.as_str() != "--");
        while let Some(a) = it.next() {
            let value = match a.strip_prefix("--host") {
                Some("") => it.next().map(String::as_str),
                Some(v) if v.starts_with('=') => Some(&v[1..]),
                _ => continue,
            };
            if !value.is_some_and(|v| v.starts_with("unix://") || v.starts_with("tcp://")) {
                if let Some((flag, why)) = unsupported_docker_flag("--host") {
                    refuse(&flag, why);
                }
            }
        }
    }
    use clap::{CommandFactory, FromArgMatches};
    match Cli::command().try_get_matches_from(&args) {
        Ok(m) => match Cli::from_arg_matches(&m) {
            Ok(cli) => (cli, m),
            Err(e) => e.exit(),
        },
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            if e.kind() == ErrorKind::UnknownArgument && service_verb(&args).is_some() {
                if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
                    if let Some((flag, why)) = unsupported_docker_flag(arg) {
                        refuse(&flag, why);
                    }
                }
            }
            e.exit()
        }
    }
}

fn real_main() -> Result<()> {
    let (cli, matches) = parse_cli();
    if matches!(cli.command, Cmd::Daemon(_) | Cmd::Dev(_)) {
        return daemon_main(cli, &matches);
    }
    if !matches!(cli.command, Cmd::Shim { .. }) {
        quiet_on_broken_stdout();
    }
    init_logging(&cli.log_level, cli.log_format)?;
    let tls_dir = cli.tls_dir.clone().unwrap_or_else(default_tls_dir);
    let client = || shoal_api::Client::connect(&cli.host, &tls_dir);
    match cli.command {
        Cmd::Daemon(_) | Cmd::Dev(_) => return daemon_main(cli, &matches),
        Cmd::Cluster(cli::ClusterCmd::Prepare { out }) => config::prepare(&out)?,
        Cmd::Cluster(c) => runtime()?.block_on(async { cli::cluster(&client()?, c).await })?,
        Cmd::Node(c) => runtime()?.block_on(async { cli::node(&client()?, c).await })?,
        Cmd::Service(c) => runtime()?.block_on(async { cli::service(&client()?, c).await })?,
        Cmd::Task(c) => runtime()?.block_on(async { cli::task(&client()?, c).await })?,
        Cmd::Network(c) => runtime()?.block_on(async { network_cli::run(&client()?, c).await })?,
        Cmd::Secret(c) => runtime()?
            .block_on(async { secret_cli::run(&client()?, shoal_types::SecretKind::Secret, c).await })?,
        Cmd::Config(c) => runtime()?
            .block_on(async { secret_cli::run(&client()?, shoal_types::SecretKind::Config, c).await })?,
        // `stack config` reads files only: no daemon.
        Cmd::Stack(stack_cli::StackCmd::Config { files }) => stack_cli::config(&files)?,
        Cmd::Stack(c) => runtime()?.block_on(async { stack_cli::run(&client()?, c).await })?,
        Cmd::Events(a) => runtime()?.block_on(async { events_cli::run(&client()?, a).await })?,
        Cmd::Kv(c) => runtime()?.block_on(async { kv_cli::run(&client()?, c).await })?,
        Cmd::Job(c) => runtime()?.block_on(async { job_cli::run(&client()?, c).await })?,
        Cmd::Unit(c) => runtime()?.block_on(async { unit_cli::run(&client()?, c).await })?,
        Cmd::Image { data_dir, command } => image_cli::run(&data_dir, command)?,
        Cmd::Info { format } => runtime()?
            .block_on(async { info_cli::run(&client()?, &cli.host, format == Format::Json).await })?,
        Cmd::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut std::io::stdout());
        }
        Cmd::Man { out } => write_man_pages(&out)?,
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

/// `shoal man --out DIR`: one page per command, named the way `man shoal-service-create` finds
/// it; hidden commands (the shim) get none.
fn write_man_pages(out: &std::path::Path) -> Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = 0;
    fn walk(cmd: &clap::Command, name: String, out: &std::path::Path, written: &mut usize) -> Result<()> {
        let page = cmd.clone().name(name.clone()).display_name(name.clone());
        let mut buf = Vec::new();
        clap_mangen::Man::new(page).render(&mut buf)?;
        let path = out.join(format!("{name}.1"));
        std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
        *written += 1;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            walk(sub, format!("{name}-{}", sub.get_name()), out, written)?;
        }
        Ok(())
    }
    walk(&cmd, "shoal".to_string(), out, &mut written)?;
    println!("Wrote {written} man pages to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_docker_flags_are_named_with_why() {
        let (flag, why) = unsupported_docker_flag("--stop-signal=SIGINT").expect("stop-signal");
        assert_eq!(flag, "--stop-signal");
        assert!(why.contains("Shoal does not support other stop signals"), "{why}");
        assert!(unsupported_docker_flag("--sysctl-add").is_some());
        assert!(unsupported_docker_flag("--replicas").is_none());
        assert!(unsupported_docker_flag("stop-signal").is_none());
        assert!(unsupported_docker_flag("--secret").is_none(), "secrets are supported");
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(service_verb(&args(&["shoal", "service", "create", "x"])), Some(2));
        assert_eq!(service_verb(&args(&["shoal", "-H", "unix:///s", "service", "update", "x"])), Some(4));
        assert_eq!(service_verb(&args(&["shoal", "service", "ls"])), None);
    }

    #[test]
    fn every_flag_of_the_table_is_unknown_to_shoal() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let service = cmd.find_subcommand("service").expect("service");
        for verb in ["create", "update"] {
            let c = service.find_subcommand(verb).expect("verb");
            for (names, _) in UNSUPPORTED_DOCKER_FLAGS {
                for n in *names {
                    // `--host` is the global daemon address, refused before clap sees it.
                    let known = c.get_arguments().any(|a| a.get_long() == Some(n)) && *n != "host";
                    assert!(!known, "--{n} is a flag of service {verb} now: take it off the table");
                }
            }
        }
    }
}
