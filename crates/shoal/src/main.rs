//! The `shoal` binary. Today it drives the simulator (`shoal simulate`); the daemon, cluster,
//! node and service commands land with the control-plane issue.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use shoal_sim::scenario::{self, ScenarioConfig};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "shoal", version, about = "Shoal: a container cluster orchestrator in one binary")]
struct Cli {
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info", env = "SHOAL_LOG")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
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
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid --log-level {level:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format)?;
    match cli.command {
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
