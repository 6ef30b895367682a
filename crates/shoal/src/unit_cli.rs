//! `shoal unit …`: fleetctl's verbs for systemd unit files with `[X-Fleet]` options. A submitted
//! unit is kept by the cluster (inactive); a started one is a service (launched) placed by
//! MachineID, MachineMetadata, MachineOf, Conflicts and Global; `stop` removes the service and
//! keeps the file; `destroy` removes both. `status` and `journal` show the unit's tasks and
//! output. What a unit says that Shoal cannot honour is refused or reported, never dropped.

use crate::cli::{print_json, Format};
use crate::service_cli::enc;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use shoal_api::units::{UnitInfo, UnitRequest, UnitResult};
use shoal_api::Client;
use std::path::Path;

#[derive(Subcommand)]
pub enum UnitCmd {
    /// Submit unit files (FILE.service; the file name is the unit's name) without starting them.
    Submit {
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Start units: files (submitted first) or names of submitted units and of instances of
    /// submitted templates (web@1.service from web@.service).
    Start {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Stop units: their tasks stop, their files stay.
    Stop {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// Stop units and forget their files.
    Destroy {
        #[arg(required = true)]
        units: Vec<String>,
    },
    /// The launched units' tasks: UNIT, MACHINE, ACTIVE, SUB.
    ListUnits {
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// Every unit: UNIT, DSTATE (launched or inactive), STATE, TARGET machines.
    ListUnitFiles {
        #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
        format: Format,
    },
    /// A unit's state and its tasks.
    Status { unit: String },
    /// A unit's output (its tasks' logs).
    Journal {
        unit: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines of each task.
        #[arg(short = 'n', long)]
        lines: Option<String>,
    },
}

/// A unit argument: a file to read (path), or a name.
fn read_unit(arg: &str) -> Result<Option<(String, String)>> {
    let p = Path::new(arg);
    if !p.is_file() {
        return Ok(None);
    }
    let name = p.file_name().and_then(|n| n.to_str()).context("unit file name")?.to_string();
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {arg}"))?;
    Ok(Some((name, text)))
}

fn unit_name(arg: &str) -> String {
    Path::new(arg).file_name().and_then(|n| n.to_str()).unwrap_or(arg).to_string()
}

fn report(r: &UnitResult) {
    for w in &r.warnings {
        eprintln!("warning: {}: {w}", r.name);
    }
}

pub async fn run(c: &Client, cmd: UnitCmd) -> Result<()> {
    match cmd {
        UnitCmd::Submit { files } => {
            for f in &files {
                let Some((name, text)) = read_unit(f)? else { bail!("{f}: no such unit file") };
                let r: UnitResult =
                    c.put(&format!("/v1/units/{}", enc(&name)), &UnitRequest { text, start: false }).await?;
                report(&r);
                println!("Unit {name} {}", r.state);
            }
        }
        UnitCmd::Start { units } => {
            for u in &units {
                let r: UnitResult = match read_unit(u)? {
                    Some((name, text)) => {
                        c.put(&format!("/v1/units/{}", enc(&name)), &UnitRequest { text, start: true })
                            .await?
                    }
                    None => c.post(&format!("/v1/units/{}/start", enc(u)), &serde_json::json!({})).await?,
                };
                report(&r);
                println!("Unit {} launched (service {})", r.name, r.service);
            }
        }
        UnitCmd::Stop { units } => {
            for u in &units {
                let name = unit_name(u);
                c.post::<_, serde_json::Value>(
                    &format!("/v1/units/{}/stop", enc(&name)),
                    &serde_json::json!({}),
                )
                .await?;
                println!("Unit {name} loaded");
            }
        }
        UnitCmd::Destroy { units } => {
            for u in &units {
                let name = unit_name(u);
                c.delete(&format!("/v1/units/{}", enc(&name))).await?;
                println!("Destroyed {name}");
            }
        }
        UnitCmd::ListUnits { format } => {
            let units: Vec<UnitInfo> = c.get("/v1/units").await?;
            let mut rows = Vec::new();
            for u in units.iter().filter(|u| u.state == "launched") {
                if u.tasks.is_empty() {
                    rows.push(vec![u.name.clone(), "-".into(), "inactive".into(), "-".into()]);
                }
                for t in &u.tasks {
                    let active = match t.state.as_str() {
                        "running" => "active",
                        "complete" => "inactive",
                        "failed" | "rejected" => "failed",
                        _ => "activating",
                    };
                    let sub =
                        if t.err.is_empty() { t.state.clone() } else { format!("{} ({})", t.state, t.err) };
                    rows.push(vec![u.name.clone(), t.node.clone(), active.into(), sub]);
                }
            }
            let columns = [("Unit", "UNIT"), ("Machine", "MACHINE"), ("Active", "ACTIVE"), ("Sub", "SUB")];
            crate::format::print_listing(&format, &columns, rows, || print_json(&units))?;
        }
        UnitCmd::ListUnitFiles { format } => {
            let units: Vec<UnitInfo> = c.get("/v1/units").await?;
            let rows = units
                .iter()
                .map(|u| {
                    let machines: Vec<&str> = u.tasks.iter().map(|t| t.node.as_str()).collect();
                    vec![
                        u.name.clone(),
                        u.state.clone(),
                        u.state.clone(),
                        if machines.is_empty() { "-".into() } else { machines.join(",") },
                    ]
                })
                .collect();
            let columns = [("Unit", "UNIT"), ("Dstate", "DSTATE"), ("State", "STATE"), ("Target", "TARGET")];
            crate::format::print_listing(&format, &columns, rows, || print_json(&units))?;
        }
        UnitCmd::Status { unit } => {
            let name = unit_name(&unit);
            let units: Vec<UnitInfo> = c.get("/v1/units").await?;
            let Some(u) = units.iter().find(|u| u.name == name) else { bail!("unit {name} not found") };
            println!("● {} - {}", u.name, u.state);
            if let Some(s) = &u.service {
                println!("   Service: {s}");
            }
            for t in &u.tasks {
                let err = if t.err.is_empty() { String::new() } else { format!(" — {}", t.err) };
                println!("   Task on {}: {} (desired {}){err}", t.node, t.state, t.desired);
            }
        }
        UnitCmd::Journal { unit, follow, lines } => {
            let name = unit_name(&unit);
            let units: Vec<UnitInfo> = c.get("/v1/units").await?;
            let Some(svc) = units.iter().find(|u| u.name == name).and_then(|u| u.service.clone()) else {
                bail!("unit {name} is not launched (no output to show)")
            };
            let mut argv = vec!["logs".to_string(), svc, "--raw".into()];
            if follow {
                argv.push("--follow".into());
            }
            if let Some(n) = lines {
                argv.extend(["--tail".into(), n]);
            }
            #[derive(clap::Parser)]
            struct P {
                #[command(flatten)]
                a: crate::logs_cli::LogsArgs,
            }
            let p = <P as clap::Parser>::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
            crate::logs_cli::run(c, p.a).await?;
        }
    }
    Ok(())
}
