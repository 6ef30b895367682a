//! Unit tests of the controllers on small hand-built states. End-to-end behaviour over time is
//! tested in the simulator crate.

use super::*;
use crate::restart;
use shoal_state::{Command, TaskStatusReport};
use shoal_types::{Node, NodeState, ServiceId, ServiceMode, ServiceSpec, TaskTemplate, UpdateState};
use std::time::Duration;

pub(crate) fn task_fixture() -> Task {
    Task {
        id: TaskId::new("t"),
        version: 1,
        created_at: Timestamp::ZERO,
        updated_at: Timestamp::ZERO,
        service_id: ServiceId::new("s"),
        slot: Some(1),
        node_id: None,
        spec: TaskTemplate { command: vec!["true".into()], ..Default::default() }.into(),
        endpoint: Default::default(),
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus::default(),
        restart_history: vec![],
        restore: None,
        networks: Vec::new(),
    }
}

pub(crate) struct World {
    pub state: ClusterState,
    pub now: Timestamp,
    pub seed: u64,
}

impl World {
    pub fn new(nodes: usize) -> Self {
        let mut w = World { state: ClusterState::new(), now: Timestamp::from_secs(1000), seed: 1 };
        for i in 0..nodes {
            let n = Node::test(&format!("n{i}"), &format!("host{i}"));
            w.cmd(Command::RegisterNode { node: Box::new(n) });
        }
        w
    }

    pub fn cmd(&mut self, c: Command) -> shoal_state::Applied {
        self.state.apply(self.now, c).expect("command applies")
    }

    pub fn service(&mut self, spec: ServiceSpec) -> ServiceId {
        let id = ServiceId::new(format!("svc-{}", spec.name));
        let svc = Service::new(id.clone(), spec);
        self.cmd(Command::CreateService { service: Box::new(svc) });
        id
    }

    /// One controller pass, verified and applied. Returns the tick.
    pub fn step(&mut self) -> Tick {
        self.seed += 1;
        let t = tick(&self.state, self.now, self.seed);
        let v = verify(&self.state, t.plan.clone());
        self.cmd(Command::ApplyPlan { plan: v.plan });
        t
    }

    /// Agents: every assigned task with desired running starts; every task told to stop stops.
    pub fn agents(&mut self) {
        let mut by_node: std::collections::BTreeMap<NodeId, Vec<TaskStatusReport>> = Default::default();
        for t in self.state.tasks() {
            let Some(n) = &t.node_id else { continue };
            if self.state.node(n).map(|n| n.status.state) != Some(NodeState::Ready) {
                continue;
            }
            let next = if t.desired_state > TaskState::Running && !t.status.state.is_terminal() {
                Some(TaskState::Shutdown)
            } else if t.desired_state == TaskState::Running
                && t.status.state >= TaskState::Assigned
                && t.status.state < TaskState::Running
            {
                Some(TaskState::Running)
            } else {
                None
            };
            if let Some(state) = next {
                let status = TaskStatus { state, ..t.status.clone() };
                by_node
                    .entry(n.clone())
                    .or_default()
                    .push(TaskStatusReport { task_id: t.id.clone(), status });
            }
        }
        for (node_id, reports) in by_node {
            self.cmd(Command::ReportTaskStatus { node_id, reports });
        }
    }

    pub fn converge(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.step();
            self.agents();
            self.now = self.now.saturating_add(Duration::from_secs(1));
        }
    }

    pub fn running(&self, svc: &ServiceId) -> Vec<&Task> {
        self.state
            .tasks_of_service(svc)
            .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
            .collect()
    }

    pub fn set_node_state(&mut self, id: &str, state: NodeState) {
        self.cmd(Command::SetNodeStatus { id: NodeId::new(id), state, message: String::new() });
    }

    pub fn fail(&mut self, t: &TaskId, state: TaskState) {
        let task = self.state.task(t).expect("task").clone();
        let status = TaskStatus { state, exit_code: Some(1), ..task.status };
        let node_id = task.node_id.expect("placed");
        self.cmd(Command::ReportTaskStatus {
            node_id,
            reports: vec![TaskStatusReport { task_id: t.clone(), status }],
        });
    }
}

pub(crate) fn spec(name: &str, replicas: u64) -> ServiceSpec {
    let mut s = ServiceSpec { name: name.into(), ..Default::default() };
    s.task_template.command = vec!["sleep".into(), "inf".into()];
    s.mode = ServiceMode::Replicated { replicas };
    s.task_template.restart_policy.delay = Duration::ZERO;
    s
}

#[test]
fn replicated_converges_and_spreads() {
    let mut w = World::new(3);
    let svc = w.service(spec("web", 6));
    w.converge(3);
    let running = w.running(&svc);
    assert_eq!(running.len(), 6);
    for n in 0..3 {
        let on = running.iter().filter(|t| t.node_id == Some(NodeId::new(format!("n{n}")))).count();
        assert_eq!(on, 2, "node n{n}");
    }
    let slots: BTreeSet<u64> = running.iter().filter_map(|t| t.slot).collect();
    assert_eq!(slots, (1..=6).collect());
}

#[test]
fn scale_down_removes_from_busiest_node_first() {
    let mut w = World::new(2);
    let svc = w.service(spec("web", 3));
    w.converge(3);
    // Node n1 is drained and re-activated so n0 ends up with more replicas... simpler: add a node.
    let s = w.state.service(&svc).expect("svc").clone();
    let mut sp = s.spec.clone();
    sp.mode = ServiceMode::Replicated { replicas: 2 };
    w.cmd(Command::UpdateService { id: svc.clone(), expected_version: None, spec: Box::new(sp) });
    w.converge(3);
    let running = w.running(&svc);
    assert_eq!(running.len(), 2);
    let nodes: BTreeSet<_> = running.iter().filter_map(|t| t.node_id.clone()).collect();
    assert_eq!(nodes.len(), 2, "one replica left on each node");
}

#[test]
fn failed_task_is_replaced_in_its_slot_and_history_is_trimmed() {
    let mut w = World::new(1);
    w.cmd(Command::SetConfig { config: shoal_state::ClusterConfig { task_history_limit: 2 } });
    let svc = w.service(spec("web", 1));
    w.converge(2);
    for _ in 0..5 {
        let t = w.running(&svc)[0].id.clone();
        w.fail(&t, TaskState::Failed);
        w.converge(2);
    }
    let all: Vec<&Task> = w.state.tasks_of_service(&svc).collect();
    assert!(all.iter().all(|t| t.slot == Some(1)));
    assert_eq!(w.running(&svc).len(), 1);
    assert_eq!(all.len(), 3, "one running + history limit of 2");
    assert_eq!(w.running(&svc)[0].restart_history.len(), 5);
}

#[test]
fn restart_condition_none_leaves_slot_alone() {
    let mut w = World::new(1);
    let mut sp = spec("once", 1);
    sp.task_template.restart_policy.condition = shoal_types::RestartCondition::None;
    let svc = w.service(sp);
    w.converge(2);
    let t = w.running(&svc)[0].id.clone();
    w.fail(&t, TaskState::Failed);
    w.converge(3);
    assert_eq!(w.state.tasks_of_service(&svc).count(), 1, "no replacement");
    assert_eq!(w.state.task(&t).map(|t| t.desired_state), Some(TaskState::Complete));
}

#[test]
fn restart_delay_schedules_a_wake_up() {
    let mut w = World::new(1);
    let mut sp = spec("slow", 1);
    sp.task_template.restart_policy.delay = Duration::from_secs(10);
    let svc = w.service(sp);
    w.converge(2);
    let t = w.running(&svc)[0].id.clone();
    w.fail(&t, TaskState::Failed);
    let failed_at = w.state.task(&t).expect("t").status.timestamp;
    let tick = w.step();
    assert_eq!(tick.wake_at, Some(failed_at.saturating_add(Duration::from_secs(10))));
    assert!(tick.plan.create_tasks.is_empty());
    w.now = failed_at.saturating_add(Duration::from_secs(10));
    let tick = w.step();
    assert_eq!(tick.plan.create_tasks.len(), 1);
}

#[test]
fn node_down_moves_replicated_tasks_and_stale_tasks_stop_on_return() {
    let mut w = World::new(3);
    let svc = w.service(spec("web", 3));
    w.converge(3);
    w.set_node_state("n0", NodeState::Down);
    w.converge(3);
    let running = w.running(&svc);
    assert_eq!(running.len(), 3);
    assert!(running.iter().all(|t| t.node_id != Some(NodeId::new("n0"))));
    w.set_node_state("n0", NodeState::Ready);
    w.converge(3);
    let live: Vec<&Task> = w.state.tasks_of_service(&svc).filter(|t| !t.status.state.is_terminal()).collect();
    assert_eq!(live.len(), 3, "the stale task on n0 was stopped, never duplicated");
}

#[test]
fn global_follows_nodes_and_drain() {
    let mut w = World::new(2);
    let mut sp = spec("agent", 0);
    sp.mode = ServiceMode::Global;
    let svc = w.service(sp);
    w.converge(2);
    assert_eq!(w.running(&svc).len(), 2);
    w.cmd(Command::RegisterNode { node: Box::new(Node::test("n9", "late")) });
    w.converge(2);
    assert_eq!(w.running(&svc).len(), 3);
    let mut spec = w.state.node(&NodeId::new("n0")).expect("n0").spec.clone();
    spec.availability = shoal_types::Availability::Drain;
    w.cmd(Command::UpdateNodeSpec { id: NodeId::new("n0"), expected_version: None, spec });
    w.converge(2);
    let running = w.running(&svc);
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|t| t.node_id != Some(NodeId::new("n0"))));
}

#[test]
fn replicated_job_runs_to_completion_with_bounded_concurrency() {
    let mut w = World::new(2);
    let mut sp = spec("batch", 0);
    sp.mode = ServiceMode::ReplicatedJob { max_concurrent: 2, total_completions: 5 };
    let svc = w.service(sp);
    let mut max_seen = 0;
    for _ in 0..20 {
        w.step();
        w.agents();
        let running: Vec<TaskId> = w.running(&svc).iter().map(|t| t.id.clone()).collect();
        max_seen = max_seen.max(running.len());
        for id in running {
            w.fail(&id, TaskState::Complete);
        }
        w.now = w.now.saturating_add(Duration::from_secs(1));
    }
    let complete = w.state.tasks_of_service(&svc).filter(|t| t.status.state == TaskState::Complete).count();
    assert_eq!(complete, 5);
    assert_eq!(max_seen, 2);
}

#[test]
fn rolling_update_replaces_tasks_in_batches_and_completes() {
    let mut w = World::new(3);
    let mut sp = spec("web", 4);
    sp.update_config.parallelism = 2;
    sp.update_config.monitor = Duration::from_secs(2);
    let svc = w.service(sp.clone());
    w.converge(3);
    sp.task_template.env.insert("V".into(), "2".into());
    w.cmd(Command::UpdateService { id: svc.clone(), expected_version: None, spec: Box::new(sp) });
    let mut max_new_in_flight = 0;
    for _ in 0..20 {
        w.step();
        let in_flight = w
            .state
            .tasks_of_service(&svc)
            .filter(|t| t.spec_version == 2 && t.status.state < TaskState::Running)
            .count();
        max_new_in_flight = max_new_in_flight.max(in_flight);
        w.agents();
        w.now = w.now.saturating_add(Duration::from_secs(1));
    }
    assert!(max_new_in_flight <= 2, "parallelism respected ({max_new_in_flight})");
    let running = w.running(&svc);
    assert_eq!(running.len(), 4);
    assert!(running.iter().all(|t| t.spec_version == 2));
    let us = w.state.service(&svc).and_then(|s| s.update_status.clone()).expect("status");
    assert_eq!(us.state, UpdateState::Completed);
}

#[test]
fn failing_update_rolls_back_automatically() {
    let mut w = World::new(2);
    let mut sp = spec("web", 2);
    sp.update_config.failure_action = shoal_types::FailureAction::Rollback;
    let svc = w.service(sp.clone());
    w.converge(3);
    sp.task_template.image = None;
    sp.task_template.command = vec!["/bin/false".into()];
    w.cmd(Command::UpdateService { id: svc.clone(), expected_version: None, spec: Box::new(sp) });
    for _ in 0..20 {
        w.step();
        w.agents();
        // Every task of the bad version fails as soon as it runs.
        let bad: Vec<TaskId> = w
            .state
            .tasks_of_service(&svc)
            .filter(|t| t.spec.command == ["/bin/false"] && t.status.state == TaskState::Running)
            .map(|t| t.id.clone())
            .collect();
        for id in bad {
            w.fail(&id, TaskState::Failed);
        }
        w.now = w.now.saturating_add(Duration::from_secs(1));
    }
    let s = w.state.service(&svc).expect("svc");
    assert_eq!(s.update_status.as_ref().map(|u| u.state), Some(UpdateState::RollbackCompleted));
    assert_eq!(s.spec.task_template.command, vec!["sleep".to_string(), "inf".to_string()]);
    let running = w.running(&svc);
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|t| t.spec.command[0] == "sleep"));
}

#[test]
fn same_inputs_same_plan() {
    let mut w = World::new(50);
    for i in 0..5 {
        w.service(spec(&format!("s{i}"), 37));
    }
    let a = tick(&w.state, w.now, 42);
    let b = tick(&w.state, w.now, 42);
    assert_eq!(a, b);
    let ja = serde_json::to_vec(&a.plan).expect("json");
    let jb = serde_json::to_vec(&b.plan).expect("json");
    assert_eq!(ja, jb, "byte for byte");
    let c = tick(&w.state, w.now, 43);
    assert_ne!(a.plan, c.plan, "the seed matters (ids, tie-breaks)");
}

#[test]
fn verify_rejects_placements_invalidated_by_newer_state() {
    let mut w = World::new(2);
    let mut sp = spec("web", 2);
    sp.task_template.resources.reservations.memory_bytes = 6 << 30; // one per node
    w.service(sp);
    let t = tick(&w.state, w.now, 7);
    let on_n1 = t.plan.create_tasks.iter().find(|t| t.node_id == Some(NodeId::new("n1"))).expect("one on n1");
    let on_n1 = on_n1.id.clone();
    // Meanwhile n1 goes down.
    w.set_node_state("n1", NodeState::Down);
    let v = verify(&w.state, t.plan);
    assert_eq!(v.rejected.len(), 1, "{:?}", v.rejected);
    assert_eq!(v.rejected[0].0, shoal_state::PlanItem::Assign(on_n1.clone()));
    let kept = v.plan.create_tasks.iter().find(|t| t.id == on_n1).expect("task kept for its slot");
    assert_eq!((kept.status.state, kept.node_id.as_ref()), (TaskState::Pending, None));
    assert!(
        kept.status.err.starts_with("placement rejected: node n1 is no longer schedulable"),
        "{}",
        kept.status.err
    );
}

#[test]
fn verify_refuses_to_fill_a_slot_twice() {
    let mut w = World::new(2);
    w.service(spec("web", 1));
    let a = tick(&w.state, w.now, 1);
    let b = tick(&w.state, w.now, 2);
    let va = verify(&w.state, a.plan);
    w.cmd(Command::ApplyPlan { plan: va.plan });
    let vb = verify(&w.state, b.plan);
    assert!(vb.plan.create_tasks.is_empty(), "second plan for the same slot refused");
    assert_eq!(w.state.tasks().len(), 1);
}

#[test]
fn constraint_change_is_rolled_out_at_the_update_pace() {
    let mut w = World::new(3);
    let mut sp = spec("web", 6);
    sp.update_config.parallelism = 1;
    let svc = w.service(sp.clone());
    w.converge(3);
    // A constraint no node satisfies (a typo): the update must not take everything down at once.
    sp.task_template.placement.constraints.push("node.labels.zone==eu-west1".into());
    w.cmd(Command::UpdateService { id: svc.clone(), expected_version: None, spec: Box::new(sp) });
    w.converge(5);
    assert!(w.running(&svc).len() >= 5, "only one slot at a time is replaced: {}", w.running(&svc).len());
}

#[test]
fn finished_global_job_does_not_rerun_after_drain_and_activate() {
    let mut w = World::new(1);
    let mut sp = spec("migrate", 0);
    sp.mode = ServiceMode::GlobalJob;
    let svc = w.service(sp);
    w.converge(2);
    let t = w.running(&svc)[0].id.clone();
    w.fail(&t, TaskState::Complete);
    w.converge(2);
    let node = NodeId::new("n0");
    for a in [shoal_types::Availability::Drain, shoal_types::Availability::Active] {
        let mut spec = w.state.node(&node).expect("n0").spec.clone();
        spec.availability = a;
        w.cmd(Command::UpdateNodeSpec { id: node.clone(), expected_version: None, spec });
        w.converge(2);
    }
    assert_eq!(w.state.tasks_of_service(&svc).count(), 1, "the job ran once");
}

#[test]
fn max_attempts_above_the_history_cap_still_runs_out() {
    let mut policy =
        shoal_types::RestartPolicy { max_attempts: 70, delay: Duration::ZERO, ..Default::default() };
    let mut t = task_fixture();
    t.status.state = TaskState::Failed;
    let mut restarts = 0;
    loop {
        match restart::decide(&policy, false, &t, Timestamp::from_secs(100)) {
            restart::Restart::Now(h) => {
                restarts += 1;
                t.restart_history = h;
            }
            restart::Restart::Never(_) => break,
            restart::Restart::At(_) => unreachable!("no delay"),
        }
        assert!(restarts <= 70, "never ran out");
    }
    assert_eq!(restarts, 70);
    policy.max_attempts = 0;
    assert!(matches!(
        restart::decide(&policy, false, &t, Timestamp::from_secs(100)),
        restart::Restart::Now(_)
    ));
}

fn per_node(w: &World, svc: &ServiceId, nodes: usize) -> Vec<usize> {
    let running = w.running(svc);
    (0..nodes)
        .map(|n| running.iter().filter(|t| t.node_id == Some(NodeId::new(format!("n{n}")))).count())
        .collect()
}

#[test]
fn rebalance_moves_one_task_at_a_time_until_the_spread_is_even() {
    let mut w = World::new(2);
    let svc = w.service(spec("web", 6));
    w.converge(3);
    assert_eq!(per_node(&w, &svc, 3), vec![3, 3, 0]);
    // A node joins: nothing moves on its own (rebalance is manual by default).
    w.cmd(Command::RegisterNode { node: Box::new(Node::test("n2", "host2")) });
    w.converge(5);
    assert_eq!(per_node(&w, &svc, 3), vec![3, 3, 0]);
    let before: BTreeSet<TaskId> = w.running(&svc).iter().map(|t| t.id.clone()).collect();

    w.cmd(Command::RebalanceService { id: svc.clone() });
    // One move per pass at most: never fewer than 5 of 6 running along the way.
    for _ in 0..20 {
        w.step();
        w.agents();
        assert!(w.running(&svc).len() >= 5, "at most one task moves at a time");
        w.now = w.now.saturating_add(Duration::from_secs(1));
    }
    assert_eq!(per_node(&w, &svc, 3), vec![2, 2, 2]);
    let after: BTreeSet<TaskId> = w.running(&svc).iter().map(|t| t.id.clone()).collect();
    assert_eq!(before.intersection(&after).count(), 4, "only the two moved tasks were replaced");
    assert!(
        w.state.service(&svc).expect("svc").rebalance_requested_at.is_none(),
        "done: the request is cleared"
    );
    let slots: BTreeSet<u64> = w.running(&svc).iter().filter_map(|t| t.slot).collect();
    assert_eq!(slots, (1..=6).collect());
}

#[test]
fn auto_rebalance_follows_a_returning_node() {
    let mut w = World::new(2);
    let mut s = spec("web", 4);
    s.rebalance = shoal_types::RebalanceMode::Auto;
    let svc = w.service(s);
    w.converge(3);
    assert_eq!(per_node(&w, &svc, 2), vec![2, 2]);
    w.set_node_state("n1", NodeState::Down);
    w.converge(5);
    assert_eq!(per_node(&w, &svc, 2), vec![4, 0]);
    w.set_node_state("n1", NodeState::Ready);
    w.converge(20);
    assert_eq!(per_node(&w, &svc, 2), vec![2, 2]);
}

#[test]
fn rebalance_of_a_global_service_is_refused() {
    let mut w = World::new(1);
    let mut s = spec("g", 1);
    s.mode = ServiceMode::Global;
    let svc = w.service(s);
    let err = w.state.apply(w.now, Command::RebalanceService { id: svc }).expect_err("not replicated");
    assert!(err.to_string().contains("not replicated"), "{err}");
}

fn with_checkpoint(w: &mut World, nodes: &[&str]) {
    for id in nodes {
        let mut n = w.state.node(&NodeId::new(*id)).cloned().expect("node");
        n.description.drivers = vec![shoal_types::DriverInfo {
            name: "process".into(),
            version: "test".into(),
            capabilities: vec![crate::migrate::CHECKPOINT.into()],
        }];
        w.cmd(Command::RegisterNode { node: Box::new(n) });
    }
}

#[test]
fn migration_targets_are_capable_suitable_and_explained() {
    let mut w = World::new(3);
    let svc = w.service(spec("db", 1));
    w.converge(3);
    let task = w.running(&svc)[0].clone();
    let source = task.node_id.clone().expect("placed");
    let err = crate::migrate::target(&w.state, &task, None).expect_err("no CRIU anywhere");
    assert!(err.contains("cannot checkpoint"), "{err}");
    with_checkpoint(&mut w, &["n0", "n1", "n2"]);
    let to = crate::migrate::target(&w.state, &task, None).expect("a target");
    assert_ne!(to, source);
    let err = crate::migrate::target(&w.state, &task, Some(&source)).expect_err("not where it runs");
    assert!(err.contains("the task runs there"), "{err}");
    // A drained node is no target, and says why.
    let spec = shoal_types::NodeSpec { availability: shoal_types::Availability::Drain, ..Default::default() };
    w.cmd(Command::UpdateNodeSpec { id: to.clone(), expected_version: None, spec });
    let err = crate::migrate::target(&w.state, &task, Some(&to)).expect_err("drained");
    assert!(err.contains("drain"), "{err}");
    let other = crate::migrate::target(&w.state, &task, None).expect("the third node");
    assert!(other != to && other != source);
    // The move: the new task takes the slot on the target; nothing else is created.
    let mut new = task.clone();
    new.id = TaskId::new("moved");
    new.node_id = Some(other.clone());
    new.restore = Some(shoal_types::RestoreSpec {
        from_task: task.id.clone(),
        from_node: source.clone(),
        checkpoint_id: "c1".into(),
        source_addr: "m:1".into(),
        source_path: "/internal/agent/checkpoint/c1/archive".into(),
        source_server_name: "n0.node.shoal".into(),
        key_hex: "00".into(),
        binding: "b".into(),
    });
    w.cmd(Command::MigrateTask { task_id: task.id.clone(), task_version: task.version, task: Box::new(new) });
    w.converge(3);
    let running = w.running(&svc);
    assert_eq!(running.len(), 1);
    assert_eq!(
        (running[0].id.as_str(), running[0].slot, running[0].node_id.as_ref()),
        ("moved", Some(1), Some(&other))
    );
    let old = w.state.task(&task.id).expect("old task kept in history");
    assert_eq!(old.desired_state, TaskState::Shutdown);
}

#[test]
fn ingress_ports_never_rule_out_a_node_host_ports_do() {
    use shoal_types::{PortConfig, PublishMode};
    let mut w = World::new(2);
    let mut host = spec("host", 3);
    host.endpoint.ports = vec![PortConfig { published: 80, target: 80, ..Default::default() }];
    let host = w.service(host);
    let mut mesh = spec("mesh", 4);
    mesh.endpoint.ports =
        vec![PortConfig { published: 8080, target: 8080, mode: PublishMode::Ingress, ..Default::default() }];
    let mesh = w.service(mesh);
    w.converge(3);
    assert_eq!(w.running(&mesh).len(), 4, "ingress ports do not bind the node's port");
    assert_eq!(w.running(&host).len(), 2, "one host port per node");
    let pending = w.state.tasks_of_service(&host).find(|t| t.status.state == TaskState::Pending);
    assert!(pending.is_some_and(|t| t.status.err.contains("host port 80/tcp in use on 2 nodes")));
    // Every task of the mesh service has its address on the ingress network.
    let ingress = w.state.ingress_network().expect("ingress").id.clone();
    assert!(w.running(&mesh).iter().all(|t| t.networks.len() == 1
        && t.networks[0].network_id == ingress
        && t.networks[0].addrs.len() == 1));
}

#[test]
fn a_full_network_is_explained_and_not_placed() {
    use shoal_types::{Network, NetworkAttachmentConfig, NetworkId, NetworkSpec};
    let mut w = World::new(1);
    let spec_net =
        NetworkSpec { name: "small".into(), subnet: Some("10.9.0.0/29".into()), ..Default::default() };
    w.cmd(Command::CreateNetwork { network: Box::new(Network::new(NetworkId::new("small"), spec_net)) });
    let mut s = spec("web", 5);
    s.networks = vec![NetworkAttachmentConfig { target: "small".into(), aliases: vec![] }];
    let svc = w.service(s);
    // /29: 6 addresses, less the gateway, the node's own and the VIP: room for 3 tasks.
    let t = w.step();
    assert_eq!(t.unplaced, 2);
    assert!(t
        .plan
        .create_tasks
        .iter()
        .filter(|t| t.node_id.is_none())
        .all(|t| t.status.err == "no free address in network small"));
    w.agents();
    w.converge(2);
    assert_eq!(w.running(&svc).len(), 3);
    let pending: Vec<&Task> =
        w.state.tasks_of_service(&svc).filter(|t| t.status.state == TaskState::Pending).collect();
    assert_eq!(pending.len(), 2);
    assert!(pending
        .iter()
        .all(|t| t.status.err == "no free address in network small" && t.networks[0].addrs.is_empty()));
    let mut addrs: Vec<&str> = w.running(&svc).iter().map(|t| t.networks[0].addrs[0].as_str()).collect();
    addrs.sort();
    assert_eq!(addrs, ["10.9.0.4/29", "10.9.0.5/29", "10.9.0.6/29"]);
    // Nothing changes while it stays full: no plan is proposed again and again.
    assert!(w.step().plan.is_empty());
    // Scale down to 2: the pending ones go first and an address is left over; back to 3 fits.
    let mut s = w.state.service(&svc).expect("svc").spec.clone();
    s.mode = ServiceMode::Replicated { replicas: 2 };
    w.cmd(Command::UpdateService { id: svc.clone(), expected_version: None, spec: Box::new(s.clone()) });
    w.converge(4);
    assert_eq!(w.running(&svc).len(), 2);
    assert_eq!(w.state.check_indexes(), Ok(()));
}
