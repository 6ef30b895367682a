//! `shoal events [--since T] [--until T] [--filter K=V] [--format json|TEMPLATE]`: object changes
//! from the state store as they happen (or since a time), like `docker events`. Objects are named:
//! a task event says `name=web.1, service=web, node=host1`, not ids, from the names the CLI reads
//! when it starts and learns from the events that follow. Filters are docker's: `type`, `event`
//! (create/update/remove), `service`, `node`, `network` (id or name), `name`, `id`, `label`,
//! `scope` (swarm). A template sees docker's message: `.Type .Action .Actor.ID
//! .Actor.Attributes.name .Scope .Time .TimeNano`.

use crate::filter::Filters;
use crate::format::Format;
use anyhow::{Context, Result};
use shoal_api::Client;
use shoal_state::{Event, Object};
use shoal_types::{Node, Service};
use std::collections::BTreeMap;
use std::time::SystemTime;

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Show events since a time: a duration ago (`10m`) or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Stop at a time (a duration ago, or RFC 3339; a future time waits for it).
    #[arg(long)]
    pub until: Option<String>,
    /// KEY=VALUE, repeatable: type (service|node|task|network), event (create|update|remove),
    /// service, node, network, name, id, label, scope.
    #[arg(long = "filter", short = 'f', value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// `json` (Shoal's event objects, one per line) or a Go template over docker's message
    /// (`'{{.Type}} {{.Action}} {{.Actor.Attributes.name}}'`); default: one line of text each.
    #[arg(long, value_parser = crate::format::parse_format, default_value = "table")]
    pub format: Format,
}

const KEYS: &[&str] = &["type", "event", "service", "node", "network", "name", "id", "label", "scope"];
const TYPES: &[&str] = &["service", "node", "task", "network", "secret", "config"];
const ACTIONS: &[&str] = &["create", "update", "remove"];

fn at_nanos(s: &str, flag: &str) -> Result<u64> {
    let t = match shoal_types::time::duration::parse(s) {
        Ok(d) => SystemTime::now().checked_sub(d).with_context(|| format!("{flag} is too far back"))?,
        Err(_) => humantime::parse_rfc3339_weak(s)
            .with_context(|| format!("{flag} {s:?}: give a duration (10m) or an RFC 3339 time"))?,
    };
    Ok(shoal_types::Timestamp::from_system_time(t).as_nanos())
}

/// Names of the objects events mention by id, kept current by the events themselves.
#[derive(Default)]
struct Names {
    services: BTreeMap<String, String>,
    nodes: BTreeMap<String, String>,
}

impl Names {
    fn learn(&mut self, e: &Event) {
        match &e.object {
            Object::Service(s) => {
                self.services.insert(s.id.to_string(), s.spec.name.clone());
            }
            Object::Node(n) => {
                self.nodes.insert(n.id.to_string(), n.description.hostname.clone());
            }
            Object::Task(_) | Object::Network(_) | Object::Secret(_) => {}
        }
    }

    fn service(&self, id: &str) -> String {
        self.services.get(id).cloned().unwrap_or_else(|| id.to_string())
    }

    fn node(&self, id: &str) -> String {
        self.nodes.get(id).cloned().unwrap_or_else(|| id.to_string())
    }
}

/// What an event is about, as docker's `Actor`: its id and named attributes (`name` first).
struct Actor {
    kind: &'static str,
    id: String,
    attrs: Vec<(&'static str, String)>,
    labels: BTreeMap<String, String>,
    /// Ids and names of the service, node and networks it belongs to (for the filters).
    service: Vec<String>,
    node: Vec<String>,
    network: Vec<String>,
}

impl Actor {
    fn attr(&self, k: &str) -> &str {
        self.attrs.iter().find(|(a, _)| *a == k).map_or("", |(_, v)| v.as_str())
    }
}

fn actor(e: &Event, names: &Names) -> Actor {
    let lower = |v: String| v.to_lowercase();
    match &e.object {
        Object::Service(s) => Actor {
            kind: "service",
            id: s.id.to_string(),
            attrs: vec![("name", s.spec.name.clone())],
            labels: s.spec.labels.clone(),
            service: vec![s.id.to_string(), s.spec.name.clone()],
            node: Vec::new(),
            network: Vec::new(),
        },
        Object::Node(n) => Actor {
            kind: "node",
            id: n.id.to_string(),
            attrs: vec![
                ("name", n.description.hostname.clone()),
                ("state", lower(format!("{:?}", n.status.state))),
                ("availability", lower(format!("{:?}", n.spec.availability))),
                ("role", n.spec.role.as_str().to_string()),
            ],
            labels: n.spec.labels.clone(),
            service: Vec::new(),
            node: vec![n.id.to_string(), n.description.hostname.clone()],
            network: Vec::new(),
        },
        Object::Task(t) => {
            let service = names.service(t.service_id.as_str());
            let node = t.node_id.as_ref().map(|n| names.node(n.as_str()));
            let name = match (t.slot, &t.node_id) {
                (Some(s), _) => format!("{service}.{s}"),
                (None, Some(n)) => format!("{service}.{}", n.short()),
                (None, None) => service.clone(),
            };
            let mut attrs = vec![("name", name), ("service", service.clone())];
            if let Some(n) = &node {
                attrs.push(("node", n.clone()));
            }
            attrs.push(("state", t.status.state.to_string()));
            attrs.push(("desired", t.desired_state.to_string()));
            if !t.status.err.is_empty() {
                attrs.push(("error", t.status.err.clone()));
            }
            Actor {
                kind: "task",
                id: t.id.to_string(),
                attrs,
                labels: BTreeMap::new(),
                service: vec![t.service_id.to_string(), service],
                node: t.node_id.iter().map(|n| n.to_string()).chain(node).collect(),
                network: t.networks.iter().map(|n| n.network_id.to_string()).collect(),
            }
        }
        Object::Network(n) => Actor {
            kind: "network",
            id: n.id.to_string(),
            attrs: vec![
                ("name", n.spec.name.clone()),
                ("subnet", n.status.subnet.clone()),
                ("vni", n.status.vni.to_string()),
            ],
            labels: n.spec.labels.clone(),
            service: Vec::new(),
            node: Vec::new(),
            network: vec![n.id.to_string(), n.spec.name.clone()],
        },
        Object::Secret(x) => Actor {
            kind: x.kind.as_str(),
            id: x.id.to_string(),
            attrs: vec![("name", x.spec.name.clone())],
            labels: x.spec.labels.clone(),
            service: Vec::new(),
            node: Vec::new(),
            network: Vec::new(),
        },
    }
}

fn action(e: &Event) -> String {
    format!("{:?}", e.action).to_lowercase()
}

/// docker's line: `TIME TYPE ACTION ID (name=…, …)`.
fn describe(e: &Event, a: &Actor) -> String {
    let attrs: Vec<String> = a.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{} {} {} {} ({})", e.at, a.kind, action(e), a.id, attrs.join(", "))
}

fn matches(f: &Filters, e: &Event, a: &Actor) -> bool {
    fn one_of(vals: &[String]) -> Vec<&str> {
        vals.iter().map(String::as_str).collect()
    }
    f.exact("type", &[a.kind])
        && f.exact("event", &[action(e).as_str()])
        && f.exact("service", &one_of(&a.service))
        && f.exact("node", &one_of(&a.node))
        && f.exact("network", &one_of(&a.network))
        && f.exact("name", &[a.attr("name")])
        && f.prefix("id", &[a.id.as_str()])
        && f.labels("label", &a.labels)
        && f.exact("scope", &["swarm"])
}

/// docker's event message, for templates.
fn message(e: &Event, a: &Actor) -> serde_json::Value {
    let attrs: serde_json::Map<String, serde_json::Value> =
        a.attrs.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone()))).collect();
    let nanos = e.at.as_nanos();
    serde_json::json!({
        "Type": a.kind,
        "Action": action(e),
        "Actor": {"ID": a.id, "Attributes": attrs},
        "Scope": "swarm",
        "Time": nanos / 1_000_000_000,
        "TimeNano": nanos,
    })
}

pub async fn run(c: &Client, a: EventsArgs) -> Result<()> {
    let filters = Filters::parse(&a.filters, KEYS)?;
    if let Some(bad) = filters.values("type").iter().find(|v| !TYPES.contains(&v.as_str())) {
        anyhow::bail!("invalid type filter {bad:?}: use {}", TYPES.join(", "));
    }
    if let Some(bad) = filters.values("event").iter().find(|v| !ACTIONS.contains(&v.as_str())) {
        anyhow::bail!("invalid event filter {bad:?}: use {}", ACTIONS.join(", "));
    }
    let mut q = Vec::new();
    if let Some(s) = &a.since {
        q.push(format!("since={}", at_nanos(s, "--since")?));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", at_nanos(u, "--until")?));
    }
    // Types are filtered by the server too, except for task events: their names come from the
    // service and node events the server would then leave out.
    let types = filters.values("type");
    if !types.is_empty() && !types.iter().any(|t| t == "task") {
        q.push(format!("type={}", filters.values("type").join(",")));
    }
    let mut names = Names::default();
    let services: Vec<Service> = c.get("/v1/services?stale=true").await?;
    let nodes: Vec<Node> = c.get("/v1/nodes?stale=true").await?;
    names.services.extend(services.into_iter().map(|s| (s.id.to_string(), s.spec.name)));
    names.nodes.extend(nodes.into_iter().map(|n| (n.id.to_string(), n.description.hostname)));
    let path = format!("/v1/events?{}", q.join("&"));
    crate::logs_cli::print_stream(c, &path, |line| {
        let e = serde_json::from_slice::<Event>(line).ok()?;
        names.learn(&e);
        let actor = actor(&e, &names);
        if !matches(&filters, &e, &actor) {
            return None;
        }
        match &a.format {
            Format::Json => Some(String::from_utf8_lossy(line).into_owned()),
            Format::Table => Some(describe(&e, &actor)),
            Format::Template(t) => match crate::format::render_object(t, &message(&e, &actor)) {
                Ok(s) => Some(s.trim_end_matches('\n').to_string()),
                Err(err) => Some(format!("{err}")),
            },
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_state::Action;
    use shoal_types::{Task, TaskState, Timestamp};

    fn task_event() -> (Event, Names) {
        let t = Task {
            id: shoal_types::TaskId::new("t1"),
            version: 1,
            created_at: Timestamp(1),
            updated_at: Timestamp(1),
            service_id: shoal_types::ServiceId::new("s1"),
            slot: Some(2),
            node_id: Some(shoal_types::NodeId::new("n1")),
            spec: Default::default(),
            endpoint: Default::default(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: shoal_types::TaskStatus { state: TaskState::Running, ..Default::default() },
            restart_history: Vec::new(),
            restore: None,
            networks: Vec::new(),
        };
        let mut names = Names::default();
        names.services.insert("s1".into(), "web".into());
        names.nodes.insert("n1".into(), "host1".into());
        let e = Event {
            index: 7,
            at: Timestamp::from_secs(1),
            action: Action::Update,
            object: Object::Task(Box::new(t)),
        };
        (e, names)
    }

    #[test]
    fn task_events_name_their_service_and_node() {
        let (e, names) = task_event();
        let a = actor(&e, &names);
        let line = describe(&e, &a);
        assert!(
            line.ends_with(
                "task update t1 (name=web.2, service=web, node=host1, state=running, desired=running)"
            ),
            "{line}"
        );
    }

    #[test]
    fn filters_by_name_service_node_and_event() {
        let (e, names) = task_event();
        let a = actor(&e, &names);
        let f = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            matches(&Filters::parse(&args, KEYS).expect("ok"), &e, &a)
        };
        assert!(f(&["service=web", "node=host1", "event=update", "type=task", "name=web.2"]));
        assert!(f(&["service=s1", "node=n1"]));
        assert!(!f(&["service=db"]));
        assert!(!f(&["event=create"]));
        assert!(!f(&["type=service"]));
    }

    #[test]
    fn templates_see_dockers_message() {
        let (e, names) = task_event();
        let a = actor(&e, &names);
        let out = crate::format::render_object(
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Time}}",
            &message(&e, &a),
        );
        assert_eq!(out.expect("ok"), "task update web.2 1\n");
    }
}
