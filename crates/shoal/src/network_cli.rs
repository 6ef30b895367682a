//! `shoal network create/ls/inspect/rm`: docker's network verbs over `/v1/networks`.
//!
//! Phase 1 of service networking: networks are cluster objects with what the managers allocate
//! for them (VNI, subnet, the services' VIPs, the tasks' and nodes' addresses). The nodes do not
//! plumb them yet; tasks still run on the node's own network.

use crate::cli::{print_json, Format, ListOpts};
use crate::service_cli::enc;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use shoal_api::networks::NetworkInfo;
use shoal_api::{Client, Created};
use shoal_types::{Network, NetworkDriver, NetworkSpec};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create an overlay network; prints its id.
    Create(CreateArgs),
    /// List networks.
    Ls(ListOpts),
    /// Show networks (JSON, or a readable summary with --format table).
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
        #[arg(long, value_parser = crate::format::parse_format, default_value = "json")]
        format: Format,
    },
    /// Remove networks that no service uses.
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

#[derive(Args, Clone, Debug)]
pub struct CreateArgs {
    /// Network driver (only overlay: VXLAN between the nodes).
    #[arg(long, short = 'd', default_value = "overlay", value_parser = ["overlay"])]
    pub driver: String,
    /// IPv4 subnet in CIDR form (/8 to /29); default: the next free /24 of 10.0.0.0/8.
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address inside the subnet; default: its first address.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Let standalone tasks attach (kept for docker compatibility).
    #[arg(long)]
    pub attachable: bool,
    /// The routing-mesh network (there can be one; it exists from `cluster init` on).
    #[arg(long)]
    pub ingress: bool,
    /// Driver option KEY=VALUE: `mtu=N`.
    #[arg(long = "opt", short = 'o', value_parser = parse_kv)]
    pub opts: Vec<(String, String)>,
    /// Network label KEY=VALUE, repeatable.
    #[arg(long = "label", value_parser = parse_kv)]
    pub labels: Vec<(String, String)>,
    /// The network's name.
    pub name: String,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// The spec `network create` sends.
pub fn create_spec(a: &CreateArgs) -> Result<NetworkSpec> {
    let mut spec = NetworkSpec {
        name: a.name.clone(),
        driver: NetworkDriver::Overlay,
        subnet: a.subnet.clone(),
        gateway: a.gateway.clone(),
        attachable: a.attachable,
        ingress: a.ingress,
        labels: a.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        ..Default::default()
    };
    for (k, v) in &a.opts {
        match k.as_str() {
            "mtu" | "com.docker.network.driver.mtu" => {
                let mtu: u16 =
                    v.parse().map_err(|_| anyhow::anyhow!("--opt mtu={v}: use a number from 68 to 65535"))?;
                spec.mtu = Some(mtu);
            }
            _ => bail!("--opt {k}: unknown driver option (the overlay driver takes mtu=N)"),
        }
    }
    Ok(spec)
}

pub async fn run(c: &Client, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create(a) => {
            let spec = create_spec(&a)?;
            let created: Created = c.post("/v1/networks", &spec).await?;
            println!("{}", created.id);
        }
        NetworkCmd::Ls(o) => ls(c, &o).await?,
        NetworkCmd::Inspect { networks, format } => {
            let mut found = Vec::new();
            for n in &networks {
                let info: NetworkInfo = c.get(&format!("/v1/networks/{}", enc(n))).await?;
                found.push(info);
            }
            if crate::format::print_inspect(&format, &found)? {
                return Ok(());
            }
            for info in &found {
                print!("{}", pretty(info));
            }
        }
        NetworkCmd::Rm { networks } => {
            let mut errors = Vec::new();
            for n in &networks {
                match c.delete(&format!("/v1/networks/{}", enc(n))).await {
                    Ok(()) => println!("{n}"),
                    Err(e) => errors.push(format!("{n}: {e}")),
                }
            }
            if !errors.is_empty() {
                bail!("{}", errors.join("\n"));
            }
        }
    }
    Ok(())
}

async fn ls(c: &Client, o: &ListOpts) -> Result<()> {
    let q = if o.stale { "?stale=true" } else { "" };
    let f = crate::filter::Filters::parse(&o.filter, &["id", "name", "label", "driver", "scope"])?;
    let mut nets: Vec<Network> = c.get(&format!("/v1/networks{q}")).await?;
    nets.retain(|n| {
        f.prefix("id", &[n.id.as_str()])
            && f.prefix("name", &[n.spec.name.as_str()])
            && f.labels("label", &n.spec.labels)
            && f.exact("driver", &[n.spec.driver.as_str()])
            && f.exact("scope", &["swarm"])
    });
    nets.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    if o.quiet {
        nets.iter().for_each(|n| println!("{}", n.id));
        return Ok(());
    }
    let rows = nets
        .iter()
        .map(|n| {
            vec![
                n.id.short().to_string(),
                n.spec.name.clone(),
                n.spec.driver.as_str().to_string(),
                "swarm".to_string(),
            ]
        })
        .collect();
    let columns = [("ID", "NETWORK ID"), ("Name", "NAME"), ("Driver", "DRIVER"), ("Scope", "SCOPE")];
    crate::format::print_listing(&o.format, &columns, rows, || print_json(&nets))
}

fn pretty(info: &NetworkInfo) -> String {
    let n = &info.network;
    let mut o = String::new();
    let _ = writeln!(o, "ID:\t\t{}", n.id);
    let _ = writeln!(o, "Name:\t\t{}", n.spec.name);
    let _ = writeln!(o, "Driver:\t\t{}", n.spec.driver.as_str());
    let _ = writeln!(o, "VNI:\t\t{}", n.status.vni);
    let _ = writeln!(o, "Subnet:\t\t{}", n.status.subnet);
    let _ = writeln!(o, "Gateway:\t{}", n.status.gateway);
    if let Some(mtu) = n.spec.mtu {
        let _ = writeln!(o, "MTU:\t\t{mtu}");
    }
    let _ = writeln!(o, "Attachable:\t{}", n.spec.attachable);
    let _ = writeln!(o, "Ingress:\t{}", n.spec.ingress);
    for (k, v) in &n.spec.labels {
        let _ = writeln!(o, "Label:\t\t{k}={v}");
    }
    if !info.peers.is_empty() {
        let _ = writeln!(o, "Peers:");
        for p in &info.peers {
            let _ = writeln!(o, " {}\t{}", p.node_id, p.addr);
        }
    }
    o
}

/// `service update --network-add/--network-rm` name networks by name or id; the service's spec
/// holds ids. Names that match a network become its id; others are left for the API to refuse
/// (`network NAME not found`) or for `--network-rm` to report.
pub async fn resolve_network_flags(
    c: &Client,
    mut a: crate::service_cli::UpdateArgs,
) -> Result<crate::service_cli::UpdateArgs> {
    if a.network_add.is_empty() && a.network_rm.is_empty() {
        return Ok(a);
    }
    let nets: Vec<Network> = c.get("/v1/networks").await?;
    let id_of = |key: &str| {
        nets.iter()
            .find(|n| n.id.as_str() == key)
            .or_else(|| nets.iter().find(|n| n.spec.name == key))
            .map_or_else(|| key.to_string(), |n| n.id.to_string())
    };
    for add in &mut a.network_add {
        add.target = id_of(&add.target);
    }
    for rm in &mut a.network_rm {
        *rm = id_of(rm);
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> CreateArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: CreateArgs,
        }
        let mut argv = vec!["x"];
        argv.extend_from_slice(extra);
        <P as clap::Parser>::try_parse_from(argv).map(|p| p.a).expect("flags")
    }

    #[test]
    fn create_flags_build_the_spec() {
        let a = args(&[
            "--subnet",
            "10.42.0.0/24",
            "--gateway",
            "10.42.0.254",
            "--opt",
            "mtu=1400",
            "--label",
            "team=a",
            "--attachable",
            "net1",
        ]);
        let s = create_spec(&a).expect("spec");
        assert_eq!(s.name, "net1");
        assert_eq!(
            (s.subnet.as_deref(), s.gateway.as_deref(), s.mtu),
            (Some("10.42.0.0/24"), Some("10.42.0.254"), Some(1400))
        );
        assert!(s.attachable && !s.ingress);
        assert_eq!(s.labels.get("team").map(String::as_str), Some("a"));
        let e = create_spec(&args(&["--opt", "encrypted", "n"])).expect_err("unknown opt");
        assert!(e.to_string().contains("unknown driver option"), "{e}");
        let e = create_spec(&args(&["--opt", "mtu=big", "n"])).expect_err("bad mtu");
        assert!(e.to_string().contains("--opt mtu=big"), "{e}");
    }
}
