//! `shoal events [--since T] [--until T] [--filter type=service|node|task|network] [--format json]`: object
//! changes from the state store as they happen (or since a time), like `docker events`.

use anyhow::{bail, Context, Result};
use shoal_api::Client;
use shoal_state::{Event, Object};
use std::time::SystemTime;

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Show events since a time: a duration ago (`10m`) or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Stop at a time (a duration ago, or RFC 3339; a future time waits for it).
    #[arg(long)]
    pub until: Option<String>,
    /// `type=service`, `type=node`, `type=task` or `type=network`; repeatable.
    #[arg(long = "filter", short = 'f')]
    pub filters: Vec<String>,
    #[arg(long, value_enum, default_value_t = EventFormat::Text)]
    pub format: EventFormat,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum EventFormat {
    Text,
    Json,
}

fn at_nanos(s: &str, flag: &str) -> Result<u64> {
    let t = match shoal_types::time::duration::parse(s) {
        Ok(d) => SystemTime::now().checked_sub(d).with_context(|| format!("{flag} is too far back"))?,
        Err(_) => humantime::parse_rfc3339_weak(s)
            .with_context(|| format!("{flag} {s:?}: give a duration (10m) or an RFC 3339 time"))?,
    };
    Ok(shoal_types::Timestamp::from_system_time(t).as_nanos())
}

fn describe(e: &Event) -> String {
    let (kind, id, detail) = match &e.object {
        Object::Service(s) => ("service", s.id.as_str(), format!("name={}", s.spec.name)),
        Object::Node(n) => (
            "node",
            n.id.as_str(),
            format!(
                "hostname={}, state={:?}, availability={:?}",
                n.description.hostname, n.status.state, n.spec.availability
            )
            .to_lowercase(),
        ),
        Object::Task(t) => (
            "task",
            t.id.as_str(),
            format!(
                "service={}, slot={}, state={}, desired={}",
                t.service_id,
                t.slot.map_or_else(|| "-".to_string(), |s| s.to_string()),
                t.status.state,
                t.desired_state
            ),
        ),
        Object::Network(n) => (
            "network",
            n.id.as_str(),
            format!("name={}, subnet={}, vni={}", n.spec.name, n.status.subnet, n.status.vni),
        ),
    };
    let action = format!("{:?}", e.action).to_lowercase();
    format!("{} {kind} {action} {id} ({detail})", e.at)
}

pub async fn run(c: &Client, a: EventsArgs) -> Result<()> {
    let mut q = Vec::new();
    if let Some(s) = &a.since {
        q.push(format!("since={}", at_nanos(s, "--since")?));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", at_nanos(u, "--until")?));
    }
    let mut kinds = Vec::new();
    for f in &a.filters {
        match f.split_once('=') {
            Some(("type", v)) if matches!(v, "service" | "node" | "task" | "network") => {
                kinds.push(v.to_string())
            }
            _ => bail!("unsupported filter {f:?}: use type=service, type=node, type=task or type=network"),
        }
    }
    if !kinds.is_empty() {
        q.push(format!("type={}", kinds.join(",")));
    }
    let path = format!("/v1/events?{}", q.join("&"));
    crate::logs_cli::print_stream(c, &path, |line| match a.format {
        EventFormat::Json => Some(String::from_utf8_lossy(line).into_owned()),
        EventFormat::Text => serde_json::from_slice::<Event>(line).ok().map(|e| describe(&e)),
    })
    .await
}
