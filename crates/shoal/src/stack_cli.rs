//! `shoal stack deploy|ls|ps|services|rm|config`: compose files deployed as stacks, as Swarm's
//! `docker stack`.
//!
//! The client reads the files (interpolating `${VAR}` from its environment over the project's
//! `.env`, reading `env_file`s, merging several `-c` files) with `shoal-compose` and sends the
//! resulting stack, with the data of its secrets and configs read from their files, to the
//! managers (`POST /v1/stacks/NAME/deploy`), which namespace it (`NAME_SERVICE`, label
//! `com.docker.stack.namespace=NAME`) and create its networks, secrets and configs and create or
//! update its services in dependency order. Like `docker stack deploy` it does not wait for the tasks:
//! `stack ps` shows them (a task waiting for a dependency says so).

use crate::cli::{print_json, Format, ListOpts};
use crate::format::print_listing;
use crate::service_cli::{enc, filtered_services, print_services, print_tasks, PsArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use shoal_api::stack::{Change, DeployRequest, StackInfo, StackReport};
use shoal_api::Client;
use shoal_types::{Node, Service, Task};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum StackCmd {
    /// Deploy a new stack or update an existing one from compose files. Changed services get a
    /// rolling update; nothing is removed unless --prune.
    Deploy(DeployArgs),
    /// List stacks.
    Ls {
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// List the tasks of a stack (history of a slot under ` \_ `).
    Ps {
        stack: String,
        #[command(flatten)]
        args: PsArgs,
    },
    /// List the services of a stack.
    Services {
        stack: String,
        #[command(flatten)]
        opts: ListOpts,
    },
    /// Remove stacks: their services, then their secrets and configs, then their networks.
    Rm {
        #[arg(required = true)]
        stacks: Vec<String>,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// Print the stack the compose files describe, as `deploy` would send it (interpolated,
    /// merged, in the stack's own names), as JSON; secrets' data is left out.
    Config {
        /// Compose file (`-` for standard input), repeatable: later files override earlier ones.
        #[arg(short = 'c', long = "compose-file", required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Args)]
pub struct DeployArgs {
    /// Compose file (`-` for standard input), repeatable: later files override earlier ones.
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub files: Vec<PathBuf>,
    /// Remove the stack's services, networks, secrets and configs that the files no longer name.
    #[arg(long)]
    pub prune: bool,
    #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
    pub format: Format,
    /// The stack's name (its services are NAME_SERVICE).
    pub name: String,
}

/// A deploy or removal waits for the managers to finish (a removal also for the tasks to stop
/// before the networks go).
const STACK_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn run(c: &Client, cmd: StackCmd) -> Result<()> {
    match cmd {
        StackCmd::Deploy(a) => deploy(c, a).await,
        StackCmd::Ls { format } => ls(c, &format).await,
        StackCmd::Ps { stack, args } => ps(c, &stack, &args).await,
        StackCmd::Services { stack, opts } => services(c, &stack, &opts).await,
        StackCmd::Rm { stacks, format } => rm(c, &stacks, format).await,
        StackCmd::Config { files } => config(&files),
    }
}

/// `stack config`: the stack as JSON, without the data of its secrets (configs' is shown, as
/// `config inspect` shows it).
pub fn config(files: &[PathBuf]) -> Result<()> {
    let mut stack = load(files)?.stack;
    for s in &mut stack.secrets {
        s.data = shoal_types::SecretData::default();
    }
    print_json(&stack)
}

/// Reads the compose files with this shell's environment over the project's `.env`.
fn load(files: &[PathBuf]) -> Result<shoal_compose::Project> {
    let mut docs = Vec::new();
    for f in files {
        let content = if f.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
                .context("reading the compose file from standard input")?
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        docs.push(shoal_compose::ComposeFile { name: f.display().to_string(), content });
    }
    let first = files.first().map(PathBuf::as_path).unwrap_or(Path::new("-"));
    let dir = if first.as_os_str() == "-" { PathBuf::from(".") } else { shoal_compose::project_dir(first) };
    let base_dir = std::path::absolute(&dir).with_context(|| format!("resolving {}", dir.display()))?;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let dotenv = base_dir.join(".env");
    if let Ok(text) = std::fs::read_to_string(&dotenv) {
        let vars =
            shoal_compose::parse_env_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", dotenv.display()))?;
        env.extend(vars.into_iter().filter_map(|(k, v)| Some((k, v?))));
    }
    env.extend(std::env::vars());
    let read = |p: &Path| std::fs::read_to_string(p);
    let read_bytes = |p: &Path| std::fs::read(p);
    let opts =
        shoal_compose::Options { env: &env, base_dir: &base_dir, read_file: &read, read_bytes: &read_bytes };
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let project = shoal_compose::load(&docs, &opts).map_err(|e| {
        let problems: Vec<String> = e.0.iter().map(|p| format!("  {p}")).collect();
        anyhow::anyhow!("invalid compose file {}:\n{}", names.join(", "), problems.join("\n"))
    })?;
    for w in &project.warnings {
        eprintln!("warning: {w}");
    }
    Ok(project)
}

fn print_report(r: &StackReport) {
    for c in &r.changes {
        let line = match c.change {
            Change::Created => format!("Creating {} {}", c.object, c.name),
            Change::Updated => format!("Updating {} {} (id: {})", c.object, c.name, c.id),
            Change::Unchanged => format!("{} {} is unchanged", capitalized(&c.object), c.name),
            Change::Removed => format!("Removing {} {}", c.object, c.name),
        };
        println!("{line}");
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

async fn deploy(c: &Client, a: DeployArgs) -> Result<()> {
    let project = load(&a.files)?;
    if let Some(name) = project.name.as_deref().filter(|n| *n != a.name) {
        eprintln!("warning: the compose file names its project {name}; it is deployed as stack {}", a.name);
    }
    let req = DeployRequest { spec: project.stack, prune: a.prune };
    let report: StackReport =
        c.with_timeout(STACK_TIMEOUT).post(&format!("/v1/stacks/{}/deploy", enc(&a.name)), &req).await?;
    if a.format == Format::Json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

async fn ls(c: &Client, format: &Format) -> Result<()> {
    let stacks: Vec<StackInfo> = c.get("/v1/stacks").await?;
    let rows =
        stacks.iter().map(|s| vec![s.name.clone(), s.services.to_string(), s.networks.to_string()]).collect();
    let columns = [("Name", "NAME"), ("Services", "SERVICES"), ("Networks", "NETWORKS")];
    print_listing(format, &columns, rows, || print_json(&stacks))
}

fn stale(stale: bool) -> &'static str {
    if stale {
        "?stale=true"
    } else {
        ""
    }
}

async fn ps(c: &Client, stack: &str, a: &PsArgs) -> Result<()> {
    let q = stale(a.opts.stale);
    let tasks: Vec<Task> = c.get(&format!("/v1/stacks/{}/tasks{q}", enc(stack))).await?;
    let (services, nodes): (Vec<Service>, Vec<Node>) =
        if (a.opts.quiet || a.opts.format == Format::Json) && a.opts.filter.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            (
                c.get(&format!("/v1/stacks/{}/services{q}", enc(stack))).await?,
                c.get("/v1/nodes?stale=true").await?,
            )
        };
    print_tasks(tasks, &services, &nodes, a)
}

async fn services(c: &Client, stack: &str, o: &ListOpts) -> Result<()> {
    let q = stale(o.stale);
    let services: Vec<Service> = c.get(&format!("/v1/stacks/{}/services{q}", enc(stack))).await?;
    let Some(services) = filtered_services(o, services)? else { return Ok(()) };
    if o.format == Format::Json {
        return print_json(&services);
    }
    let tasks: Vec<Task> = c.get(&format!("/v1/stacks/{}/tasks{q}", enc(stack))).await?;
    print_services(c, &services, &tasks, &o.format).await
}

async fn rm(c: &Client, stacks: &[String], format: Format) -> Result<()> {
    let c = c.with_timeout(STACK_TIMEOUT);
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for s in stacks {
        let path = format!("/v1/stacks/{}", enc(s));
        match c.bytes(hyper::Method::DELETE, &path, None).await {
            Ok(bytes) => {
                let r: StackReport = serde_json::from_slice(&bytes).context("reading the daemon's answer")?;
                if format == Format::Table {
                    print_report(&r);
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("Error: {s}: {e}");
                failed.push(s.as_str());
            }
        }
    }
    if format == Format::Json {
        print_json(&reports)?;
    }
    if !failed.is_empty() {
        bail!("could not remove {}", failed.join(", "));
    }
    Ok(())
}
