use super::*;
use shoal_types::{Node, ServiceMode, TaskStatus, TaskTemplate};

fn at(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    let mut s = ServiceSpec { name: name.into(), ..Default::default() };
    s.task_template.command = vec!["sleep".into(), "1000".into()];
    s.task_template.resources.reservations.memory_bytes = 100;
    s.mode = ServiceMode::Replicated { replicas };
    s
}

fn service(id: &str, name: &str) -> Service {
    Service::new(ServiceId::new(id), spec(name, 1))
}

fn task(id: &str, svc: &str) -> Task {
    Task {
        id: TaskId::new(id),
        version: 0,
        created_at: Timestamp::ZERO,
        updated_at: Timestamp::ZERO,
        service_id: ServiceId::new(svc),
        slot: Some(1),
        node_id: None,
        spec: TaskTemplate { command: vec!["sleep".into()], ..spec("x", 1).task_template }.into(),
        endpoint: Default::default(),
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus { state: TaskState::Pending, ..Default::default() },
        restart_history: vec![],
        restore: None,
        networks: Vec::new(),
    }
}

fn setup() -> ClusterState {
    let mut s = ClusterState::new();
    s.apply(at(1), Command::RegisterNode { node: Box::new(Node::test("n1", "h1")) }).expect("node");
    s.apply(at(1), Command::CreateService { service: Box::new(service("s1", "web")) }).expect("svc");
    s
}

#[test]
fn create_service_sets_meta_and_rejects_duplicates() {
    let mut s = setup();
    let svc = s.service_by_name("web").expect("by name");
    assert_eq!((svc.version, svc.spec_version, svc.created_at), (2, 1, at(1)));
    let err = s.apply(at(2), Command::CreateService { service: Box::new(service("s2", "web")) });
    assert_eq!(err, Err(StateError::NameConflict("web".into())));
    assert_eq!(s.index(), 2, "a failed command changes nothing");
    let mut bad = service("s3", "");
    bad.spec.name.clear();
    assert!(matches!(
        s.apply(at(2), Command::CreateService { service: Box::new(bad) }),
        Err(StateError::Invalid(_))
    ));
}

#[test]
fn update_bumps_spec_version_only_for_template_changes() {
    let mut s = setup();
    let id = ServiceId::new("s1");
    s.apply(
        at(2),
        Command::UpdateService { id: id.clone(), expected_version: Some(2), spec: Box::new(spec("web", 5)) },
    )
    .expect("scale");
    let svc = s.service(&id).expect("svc");
    assert_eq!(svc.spec_version, 1);
    assert!(svc.update_status.is_none());
    let mut changed = spec("web", 5);
    changed.task_template.env.insert("A".into(), "1".into());
    let stale = s.apply(
        at(3),
        Command::UpdateService { id: id.clone(), expected_version: Some(2), spec: Box::new(changed.clone()) },
    );
    assert!(matches!(stale, Err(StateError::VersionConflict { expected: 2, actual: 3, .. })));
    s.apply(
        at(3),
        Command::UpdateService { id: id.clone(), expected_version: Some(3), spec: Box::new(changed) },
    )
    .expect("update");
    let svc = s.service(&id).expect("svc");
    assert_eq!(svc.spec_version, 2);
    assert_eq!(svc.update_status.as_ref().map(|u| u.state), Some(UpdateState::Updating));
    s.apply(at(4), Command::RollbackService { id: id.clone(), expected_version: None }).expect("rollback");
    let svc = s.service(&id).expect("svc");
    assert_eq!(svc.spec_version, 3);
    assert!(svc.spec.task_template.env.is_empty());
    assert_eq!(svc.update_status.as_ref().map(|u| u.state), Some(UpdateState::RollbackStarted));
}

#[test]
fn mode_cannot_change() {
    let mut s = setup();
    let mut g = spec("web", 1);
    g.mode = ServiceMode::Global;
    let r = s.apply(
        at(2),
        Command::UpdateService { id: ServiceId::new("s1"), expected_version: None, spec: Box::new(g) },
    );
    assert!(matches!(r, Err(StateError::ModeChange { .. })));
}

#[test]
fn plan_items_check_versions_and_keep_usage_in_step() {
    let mut s = setup();
    let plan = Plan {
        create_tasks: vec![task("t1", "s1"), task("t2", "s1"), task("t3", "gone")],
        ..Default::default()
    };
    let out = s.apply(at(2), Command::ApplyPlan { plan }).expect("plan");
    assert_eq!(out.skipped.len(), 1, "task of a missing service is skipped");
    assert_eq!(s.tasks().len(), 2);
    let v = s.task(&TaskId::new("t1")).expect("t1").version;
    let plan = Plan {
        assign: vec![
            Assignment { task_id: TaskId::new("t1"), task_version: v, node_id: NodeId::new("n1") },
            Assignment { task_id: TaskId::new("t2"), task_version: v - 1, node_id: NodeId::new("n1") },
        ],
        ..Default::default()
    };
    let out = s.apply(at(3), Command::ApplyPlan { plan }).expect("plan");
    assert_eq!(out.skipped.len(), 1, "stale version skipped");
    let u = s.usage(&NodeId::new("n1"));
    assert_eq!((u.tasks, u.reserved.memory_bytes), (1, 100));
    assert_eq!(s.check_indexes(), Ok(()));

    // The agent reports it failed: resources are released.
    let failed = TaskStatus { state: TaskState::Failed, exit_code: Some(1), ..Default::default() };
    let r = TaskStatusReport { task_id: TaskId::new("t1"), status: failed.clone() };
    let out = s
        .apply(at(4), Command::ReportTaskStatus { node_id: NodeId::new("other"), reports: vec![r.clone()] })
        .expect("report");
    assert_eq!(out.skipped.len(), 1, "only the assigned node may report");
    s.apply(at(4), Command::ReportTaskStatus { node_id: NodeId::new("n1"), reports: vec![r] })
        .expect("report");
    assert_eq!(s.usage(&NodeId::new("n1")).tasks, 0);
    // Terminal states are final.
    let back = TaskStatusReport {
        task_id: TaskId::new("t1"),
        status: TaskStatus { state: TaskState::Running, ..Default::default() },
    };
    let out = s
        .apply(at(5), Command::ReportTaskStatus { node_id: NodeId::new("n1"), reports: vec![back] })
        .expect("report");
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(s.task(&TaskId::new("t1")).map(|t| t.status.state), Some(TaskState::Failed));
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn remove_service_marks_tasks_for_removal() {
    let mut s = setup();
    s.apply(
        at(2),
        Command::ApplyPlan { plan: Plan { create_tasks: vec![task("t1", "s1")], ..Default::default() } },
    )
    .expect("plan");
    let out = s.apply(at(3), Command::RemoveService { id: ServiceId::new("s1") }).expect("rm");
    assert_eq!(out.events.len(), 2);
    assert!(s.service_by_name("web").is_none());
    assert_eq!(s.task(&TaskId::new("t1")).map(|t| t.desired_state), Some(TaskState::Remove));
}

#[test]
fn snapshot_roundtrips_through_json() {
    let mut s = setup();
    let mut t = task("t1", "s1");
    t.node_id = Some(NodeId::new("n1"));
    t.status.state = TaskState::Running;
    s.apply(at(2), Command::ApplyPlan { plan: Plan { create_tasks: vec![t], ..Default::default() } })
        .expect("plan");
    let json = serde_json::to_string(&s.snapshot()).expect("serialize");
    let back: Snapshot = serde_json::from_str(&json).expect("deserialize");
    let restored = ClusterState::restore(back);
    assert_eq!(restored, s);
    assert_eq!(restored.usage(&NodeId::new("n1")).tasks, 1);
}

#[test]
fn reregistering_node_keeps_operator_spec() {
    let mut s = setup();
    let mut spec = s.node(&NodeId::new("n1")).expect("n1").spec.clone();
    spec.labels.insert("zone".into(), "a".into());
    s.apply(at(2), Command::UpdateNodeSpec { id: NodeId::new("n1"), expected_version: None, spec })
        .expect("spec");
    s.apply(at(3), Command::RegisterNode { node: Box::new(Node::test("n1", "h1-renamed")) })
        .expect("register");
    let n = s.node(&NodeId::new("n1")).expect("n1");
    assert_eq!(n.spec.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(n.description.hostname, "h1-renamed");
    assert_eq!(n.created_at, at(1));
}

#[test]
fn commands_serialize() {
    let c = Command::SetNodeStatus {
        id: NodeId::new("n1"),
        state: NodeState::Down,
        message: "heartbeat missed".into(),
    };
    let j = serde_json::to_string(&c).expect("json");
    assert!(j.contains("\"command\":\"set_node_status\""), "{j}");
    let back: Command = serde_json::from_str(&j).expect("back");
    assert_eq!(back, c);
}

#[test]
fn reports_take_the_log_time_and_cannot_start_unscheduled_tasks() {
    let mut s = setup();
    let mut bound = task("g1", "s1");
    bound.slot = None;
    bound.node_id = Some(NodeId::new("n1")); // a global task, bound but not yet scheduled
    s.apply(at(2), Command::ApplyPlan { plan: Plan { create_tasks: vec![bound], ..Default::default() } })
        .expect("plan");
    let running = TaskStatus { state: TaskState::Running, timestamp: at(999), ..Default::default() };
    let r = TaskStatusReport { task_id: TaskId::new("g1"), status: running };
    let out = s
        .apply(at(3), Command::ReportTaskStatus { node_id: NodeId::new("n1"), reports: vec![r] })
        .expect("ok");
    assert_eq!(out.skipped.len(), 1, "a pending task cannot be reported running");
    assert_eq!(s.usage(&NodeId::new("n1")).tasks, 0);
    let rejected = TaskStatus { state: TaskState::Rejected, timestamp: at(999), ..Default::default() };
    let r = TaskStatusReport { task_id: TaskId::new("g1"), status: rejected };
    s.apply(at(4), Command::ReportTaskStatus { node_id: NodeId::new("n1"), reports: vec![r] }).expect("ok");
    let t = s.task(&TaskId::new("g1")).expect("g1");
    assert_eq!((t.status.state, t.status.timestamp), (TaskState::Rejected, at(4)), "time comes from the log");
}

#[test]
fn a_removed_node_cannot_register_again_and_the_tombstone_survives_a_snapshot() {
    let mut s = setup();
    let id = NodeId::new("n1");
    s.apply(at(2), Command::RemoveNode { id: id.clone() }).expect("remove");
    assert!(s.node(&id).is_none() && s.is_removed(&id));
    let again = s.apply(at(3), Command::RegisterNode { node: Box::new(Node::test("n1", "h1")) });
    assert_eq!(again, Err(StateError::NodeRemoved("n1".into())));
    // A member that never registered (no node object) is remembered as removed too, once.
    let ghost = NodeId::new("ghost");
    s.apply(at(3), Command::RemoveNode { id: ghost.clone() }).expect("tombstone");
    assert!(s.is_removed(&ghost));
    assert!(matches!(s.apply(at(4), Command::RemoveNode { id: ghost }), Err(StateError::NotFound { .. })));
    let restored = ClusterState::restore(s.snapshot());
    assert!(restored.is_removed(&id));
    let again = ClusterState::restore(s.snapshot())
        .apply(at(5), Command::RegisterNode { node: Box::new(Node::test("n1", "h1")) });
    assert_eq!(again, Err(StateError::NodeRemoved("n1".into())));
    // Another node (a machine that left and joined again gets a new id) registers as usual.
    s.apply(at(5), Command::RegisterNode { node: Box::new(Node::test("n2", "h1")) }).expect("new id");
}

#[test]
fn tasks_of_one_service_version_share_one_template() {
    let mut s = setup();
    // Each task decoded on its own, as the log and the snapshot deliver them.
    let decoded = |id: &str, version: u64, cmd: &str| {
        let mut t = task(id, "s1");
        t.spec_version = version;
        std::sync::Arc::make_mut(&mut t.spec).command = vec![cmd.into()];
        serde_json::from_slice::<Task>(&serde_json::to_vec(&t).expect("json")).expect("decode")
    };
    let plan = Plan {
        create_tasks: vec![
            decoded("a", 1, "sleep"),
            decoded("b", 1, "sleep"),
            decoded("c", 2, "sleep"),
            decoded("d", 1, "other"),
        ],
        ..Default::default()
    };
    s.apply(at(2), Command::ApplyPlan { plan }).expect("plan");
    let spec = |s: &ClusterState, id: &str| s.task(&TaskId::new(id)).expect("task").spec.clone();
    assert!(std::sync::Arc::ptr_eq(&spec(&s, "a"), &spec(&s, "b")), "same version, same template: shared");
    assert!(!std::sync::Arc::ptr_eq(&spec(&s, "a"), &spec(&s, "c")), "another version keeps its own");
    assert!(
        !std::sync::Arc::ptr_eq(&spec(&s, "a"), &spec(&s, "d")),
        "a different template is never swapped in"
    );
    assert_eq!(spec(&s, "d").command, ["other"]);
    // Their ids are shared the same way: one service id string for all of them.
    let sid = |s: &ClusterState, id: &str| s.task(&TaskId::new(id)).expect("task").service_id.0.clone();
    assert!(std::sync::Arc::ptr_eq(&sid(&s, "a"), &sid(&s, "d")));
    // A status change keeps the shared template; a state restored from a snapshot shares too
    // and equals the original.
    let version = s.task(&TaskId::new("b")).expect("b").version;
    let plan = Plan {
        set_desired: vec![DesiredChange {
            task_id: TaskId::new("b"),
            task_version: version,
            desired_state: TaskState::Shutdown,
        }],
        ..Default::default()
    };
    s.apply(at(3), Command::ApplyPlan { plan }).expect("plan");
    assert_eq!(s.task(&TaskId::new("b")).expect("b").desired_state, TaskState::Shutdown);
    assert!(std::sync::Arc::ptr_eq(&spec(&s, "a"), &spec(&s, "b")));
    let snap: Snapshot =
        serde_json::from_slice(&serde_json::to_vec(&s.snapshot()).expect("json")).expect("decode");
    let restored = ClusterState::restore(snap);
    assert!(std::sync::Arc::ptr_eq(&spec(&restored, "a"), &spec(&restored, "b")));
    assert_eq!(restored, s);
    s.check_indexes().expect("indexes");
}
