//! Data-driven scheduler tests. Each file in `tests/fixtures/` describes nodes, existing load and
//! services, runs one controller pass with a fixed seed, and states where tasks must land:
//!
//! ```text
//! node n1 cpu=4 mem=8G label.zone=a state=ready avail=active driver=process,oci gpu=1 engine.ssd=1
//! load n1 svc=other count=3 mem=1G          # tasks already holding resources on n1
//! service web replicas=6 mem=1G cpu=0.5 strategy=spread constraint=node.labels.zone==a pref=node.labels.zone max-per-node=2 port=80 driver=oci image=busybox gpu=1 mode=global
//! expect web n1=3 n2=3                      # tasks of web placed per node (others: 0)
//! expect web unplaced=2 err="insufficient memory on 2 nodes"
//! expect web nodes-used=5                   # number of distinct nodes used
//! expect web max-per-node=2                 # no node has more than this
//! ```

use shoal_core::tick;
use shoal_state::{ClusterState, Command, Plan};
use shoal_types::*;
use std::collections::BTreeMap;
use std::path::Path;

fn size(v: &str) -> u64 {
    let (num, mul) = match v.chars().last() {
        Some('G') => (&v[..v.len() - 1], 1u64 << 30),
        Some('M') => (&v[..v.len() - 1], 1 << 20),
        Some('K') => (&v[..v.len() - 1], 1 << 10),
        _ => (v, 1),
    };
    (num.parse::<f64>().unwrap_or_else(|_| panic!("bad size {v}")) * mul as f64) as u64
}

fn cpus(v: &str) -> u64 {
    (v.parse::<f64>().unwrap_or_else(|_| panic!("bad cpu {v}")) * 1e9) as u64
}

/// Splits `a=b c="d e"` into pairs.
fn fields(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').unwrap_or_else(|| panic!("expected key=value in {rest:?}"));
        let key = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        let (val, next) = if let Some(stripped) = rest.strip_prefix('"') {
            let end = stripped.find('"').expect("closing quote");
            (stripped[..end].to_string(), &stripped[end + 1..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        out.push((key, val));
        rest = next.trim_start();
    }
    out
}

fn split_head(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    }
}

fn run_fixture(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string();
    let now = Timestamp::from_secs(1000);
    let mut state = ClusterState::new();
    let mut load: Vec<Task> = Vec::new();
    let mut services: BTreeMap<String, ServiceId> = BTreeMap::new();
    let mut expects: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for raw in text.lines() {
        let line = raw.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kind, rest) = split_head(line);
        match kind {
            "node" => {
                let (id, rest) = split_head(rest);
                let mut n = Node::test(id, id);
                for (k, v) in fields(rest) {
                    match k.as_str() {
                        "cpu" => n.description.resources.nano_cpus = cpus(&v),
                        "mem" => n.description.resources.memory_bytes = size(&v),
                        "gpu" => {
                            n.description.resources.generic.insert("gpu".into(), v.parse().expect("gpu"));
                        }
                        "state" => n.status.state = serde_json::from_str(&format!("\"{v}\"")).expect("state"),
                        "avail" => {
                            n.spec.availability = serde_json::from_str(&format!("\"{v}\"")).expect("avail")
                        }
                        "driver" => {
                            n.description.drivers = v
                                .split(',')
                                .map(|d| DriverInfo {
                                    name: d.into(),
                                    version: "1".into(),
                                    capabilities: vec![],
                                })
                                .collect()
                        }
                        k if k.starts_with("label.") => {
                            n.spec.labels.insert(k["label.".len()..].into(), v);
                        }
                        k if k.starts_with("engine.") => {
                            n.description.engine_labels.insert(k["engine.".len()..].into(), v);
                        }
                        other => panic!("{name}: unknown node field {other}"),
                    }
                }
                let spec = n.spec.clone();
                state.apply(now, Command::RegisterNode { node: Box::new(n) }).expect("register");
                // Registration keeps an existing spec; a new node takes the given one.
                state
                    .apply(now, Command::UpdateNodeSpec { id: NodeId::new(id), expected_version: None, spec })
                    .expect("spec");
            }
            "load" => {
                let (node, rest) = split_head(rest);
                let f: BTreeMap<String, String> = fields(rest).into_iter().collect();
                let count: usize = f.get("count").map_or(1, |c| c.parse().expect("count"));
                for i in 0..count {
                    let mut t = Task {
                        id: TaskId::new(format!("load-{node}-{i}-{}", load.len())),
                        version: 0,
                        created_at: now,
                        updated_at: now,
                        service_id: ServiceId::new(f.get("svc").cloned().unwrap_or_else(|| "load".into())),
                        slot: Some(i as u64 + 1),
                        node_id: Some(NodeId::new(node)),
                        spec: TaskTemplate { command: vec!["x".into()], ..Default::default() }.into(),
                        endpoint: EndpointSpec::default(),
                        spec_version: 1,
                        desired_state: TaskState::Running,
                        status: TaskStatus { state: TaskState::Running, ..Default::default() },
                        restart_history: vec![],
                        restore: None,
                        networks: Vec::new(),
                    };
                    if let Some(m) = f.get("mem") {
                        std::sync::Arc::make_mut(&mut t.spec).resources.reservations.memory_bytes = size(m);
                    }
                    if let Some(c) = f.get("cpu") {
                        std::sync::Arc::make_mut(&mut t.spec).resources.reservations.nano_cpus = cpus(c);
                    }
                    if let Some(p) = f.get("port") {
                        t.endpoint.ports.push(PortConfig {
                            published: p.parse().expect("port"),
                            target: 1,
                            ..Default::default()
                        });
                    }
                    load.push(t);
                }
            }
            "service" => {
                let (svc_name, rest) = split_head(rest);
                let mut spec = ServiceSpec { name: svc_name.into(), ..Default::default() };
                spec.task_template.command = vec!["run".into()];
                for (k, v) in fields(rest) {
                    let tt = &mut spec.task_template;
                    match k.as_str() {
                        "replicas" => {
                            spec.mode = ServiceMode::Replicated { replicas: v.parse().expect("replicas") }
                        }
                        "mode" if v == "global" => spec.mode = ServiceMode::Global,
                        "mem" => tt.resources.reservations.memory_bytes = size(&v),
                        "cpu" => tt.resources.reservations.nano_cpus = cpus(&v),
                        "gpu" => {
                            tt.resources.reservations.generic.insert("gpu".into(), v.parse().expect("gpu"));
                        }
                        "strategy" => {
                            tt.placement.strategy =
                                serde_json::from_str(&format!("\"{v}\"")).expect("strategy")
                        }
                        "constraint" => tt.placement.constraints.push(v),
                        "pref" => tt.placement.preferences.push(PlacementPreference { spread: v }),
                        "max-per-node" => tt.placement.max_replicas_per_node = v.parse().expect("max"),
                        "port" => spec.endpoint.ports.push(PortConfig {
                            published: v.parse().expect("port"),
                            target: v.parse().expect("port"),
                            ..Default::default()
                        }),
                        "driver" => tt.driver = Some(v),
                        "image" => {
                            tt.image = Some(v);
                            tt.command.clear();
                        }
                        other => panic!("{name}: unknown service field {other}"),
                    }
                }
                let id = ServiceId::new(format!("svc-{svc_name}"));
                let svc = Service::new(id.clone(), spec);
                state.apply(now, Command::CreateService { service: Box::new(svc) }).expect("create service");
                services.insert(svc_name.to_string(), id);
            }
            "expect" => {
                let (svc_name, rest) = split_head(rest);
                expects.push((svc_name.to_string(), fields(rest)));
            }
            other => panic!("{name}: unknown line kind {other}"),
        }
    }
    if !load.is_empty() {
        // Load belongs to a service that exists, so the plan applies.
        let mut load_services: Vec<ServiceId> = load.iter().map(|t| t.service_id.clone()).collect();
        load_services.dedup();
        for sid in load_services {
            let mut spec = ServiceSpec { name: format!("load-{sid}"), ..Default::default() };
            spec.task_template.command = vec!["x".into()];
            spec.mode = ServiceMode::Replicated { replicas: 0 };
            let svc = Service::new(sid.clone(), spec);
            let _ = state.apply(now, Command::CreateService { service: Box::new(svc) });
        }
        let plan = Plan { create_tasks: load, ..Default::default() };
        let out = state.apply(now, Command::ApplyPlan { plan }).expect("load");
        assert!(out.skipped.is_empty(), "{name}: load skipped: {:?}", out.skipped);
        // Load services must not be scaled away by the orchestrator during the pass: they have
        // replicas 0, so the pass would remove them; that does not free resources until the
        // tasks stop, which keeps the load in place for this one pass.
    }

    let t = tick(&state, now, 1);
    for (svc_name, checks) in expects {
        let sid = services.get(&svc_name).unwrap_or_else(|| panic!("{name}: unknown service {svc_name}"));
        let tasks: Vec<&Task> = t.plan.create_tasks.iter().filter(|t| &t.service_id == sid).collect();
        let mut per_node: BTreeMap<String, u64> = BTreeMap::new();
        let mut unplaced = 0;
        let mut errs = Vec::new();
        for task in &tasks {
            match (&task.node_id, task.status.state) {
                (Some(n), TaskState::Assigned) => *per_node.entry(n.to_string()).or_insert(0) += 1,
                _ => {
                    unplaced += 1;
                    errs.push(task.status.err.clone());
                }
            }
        }
        let ctx =
            format!("{name}: service {svc_name}: placed {per_node:?}, unplaced {unplaced}, errors {errs:?}");
        let mut named_nodes = false;
        for (k, v) in &checks {
            match k.as_str() {
                "unplaced" => assert_eq!(unplaced, v.parse::<usize>().expect("n"), "{ctx}"),
                "err" => {
                    assert!(errs.iter().any(|e| e.contains(v.as_str())), "{ctx}: want error containing {v:?}")
                }
                "nodes-used" => assert_eq!(per_node.len(), v.parse::<usize>().expect("n"), "{ctx}"),
                "max-per-node" => {
                    let max = per_node.values().copied().max().unwrap_or(0);
                    assert!(max <= v.parse::<u64>().expect("n"), "{ctx}")
                }
                node => {
                    named_nodes = true;
                    assert_eq!(
                        per_node.get(node).copied().unwrap_or(0),
                        v.parse::<u64>().expect("n"),
                        "{ctx}: node {node}"
                    )
                }
            }
        }
        if named_nodes {
            let named: Vec<&String> = checks.iter().map(|(k, _)| k).collect();
            for (n, c) in &per_node {
                assert!(named.contains(&n), "{ctx}: unexpected {c} task(s) on {n}");
            }
        }
    }
}

#[test]
fn scheduler_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixtures found: {}", files.len());
    for f in files {
        run_fixture(&f);
    }
}
