//! The state machine's policy, over an in-memory driver and control plane (the real drivers are
//! tested against real runtimes in their own crates and in `crates/shoal/tests`).

use super::*;
use async_trait::async_trait;
use shoal_driver::{ExecResult, LogOptions, LogReceiver, Stats};
use shoal_types::{NodeId, Resources, ServiceId, TaskTemplate};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
struct FakeRuntime {
    /// task id → exit status once it has exited.
    exits: Mutex<BTreeMap<String, Option<ExitStatus>>>,
    starts: AtomicU64,
    changed: tokio::sync::Notify,
    /// What `exec` (the health check) answers.
    unhealthy: std::sync::atomic::AtomicBool,
    /// The tasks whose network namespace the driver was told to remove.
    netns_removed: Mutex<Vec<String>>,
}

struct FakeDriver(Arc<FakeRuntime>);

impl FakeRuntime {
    fn exit(&self, task: &str, code: i32) {
        lock(&self.exits).insert(task.to_string(), Some(ExitStatus { code, ..Default::default() }));
        self.changed.notify_waiters();
    }
    fn running(&self) -> Vec<String> {
        lock(&self.exits).iter().filter(|(_, x)| x.is_none()).map(|(k, _)| k.clone()).collect()
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        "process"
    }
    async fn fingerprint(&self) -> Option<DriverInfo> {
        Some(DriverInfo { name: "process".into(), version: "test".into(), capabilities: vec![] })
    }
    async fn prepare(&self, cfg: &TaskConfig) -> Result<(), DriverError> {
        if cfg.command.first().is_some_and(|c| c == "missing") {
            return Err(DriverError::Invalid("executable not found: missing".into()));
        }
        Ok(())
    }
    async fn start(&self, cfg: &TaskConfig) -> Result<Handle, DriverError> {
        self.0.starts.fetch_add(1, Ordering::SeqCst);
        lock(&self.0.exits).insert(cfg.task_id.clone(), None);
        Ok(Handle {
            task_id: cfg.task_id.clone(),
            driver: "process".into(),
            runtime_id: format!("pid-{}", cfg.task_id),
            state: serde_json::Value::Null,
        })
    }
    async fn recover(&self, h: &Handle) -> Result<Recovered, DriverError> {
        match lock(&self.0.exits).get(&h.task_id) {
            None => Err(DriverError::NotFound(h.task_id.clone())),
            Some(None) => Ok(Recovered::Running),
            Some(Some(x)) => Ok(Recovered::Exited(x.clone())),
        }
    }
    async fn wait(&self, h: &Handle) -> Result<ExitStatus, DriverError> {
        loop {
            let notified = self.0.changed.notified();
            match lock(&self.0.exits).get(&h.task_id) {
                None => return Err(DriverError::NotFound(h.task_id.clone())),
                Some(Some(x)) => return Ok(x.clone()),
                Some(None) => {}
            }
            notified.await;
        }
    }
    async fn stop(&self, h: &Handle, _grace: Duration) -> Result<(), DriverError> {
        self.0.exit(&h.task_id, 143);
        Ok(())
    }
    async fn destroy(&self, h: &Handle) -> Result<(), DriverError> {
        lock(&self.0.exits).remove(&h.task_id);
        Ok(())
    }
    async fn logs(&self, _h: &Handle, _o: &LogOptions) -> Result<LogReceiver, DriverError> {
        Err(DriverError::Runtime("no logs".into()))
    }
    async fn stats(&self, _h: &Handle) -> Result<Stats, DriverError> {
        Ok(Stats::default())
    }
    async fn exec(&self, _h: &Handle, c: &[String], _t: Duration) -> Result<ExecResult, DriverError> {
        assert_eq!(c, ["/bin/sh", "-c", "probe"], "CMD-SHELL runs through sh -c");
        let sick = self.0.unhealthy.load(Ordering::SeqCst);
        Ok(ExecResult { exit_code: i32::from(sick), output: if sick { "down".into() } else { "ok".into() } })
    }
    async fn remove_network_namespace(&self, task_id: &str) -> Result<(), DriverError> {
        lock(&self.0.netns_removed).push(task_id.to_string());
        Ok(())
    }
}

/// The managers, reduced to a task table the test edits and the reports the agent sends.
#[derive(Default)]
struct FakePlane {
    tasks: Mutex<BTreeMap<TaskId, Task>>,
    reports: Mutex<Vec<StatusReport>>,
    rev: AtomicU64,
    changed: tokio::sync::Notify,
}

impl FakePlane {
    fn set(&self, t: Task) {
        lock(&self.tasks).insert(t.id.clone(), t);
        self.rev.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
    fn remove(&self, id: &str) {
        lock(&self.tasks).remove(&TaskId::new(id));
        self.rev.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
    fn get(&self, id: &str) -> Task {
        lock(&self.tasks).get(&TaskId::new(id)).cloned().expect("task")
    }
    fn states(&self, id: &str) -> Vec<TaskState> {
        lock(&self.reports).iter().filter(|r| r.task_id.as_str() == id).map(|r| r.status.state).collect()
    }
}

#[async_trait]
impl ControlPlane for FakePlane {
    async fn register(&self, _d: &NodeDescription) -> Result<(), PlaneError> {
        Ok(())
    }
    async fn assignments(&self, known: Option<&str>) -> Result<Assignments, PlaneError> {
        loop {
            let notified = self.changed.notified();
            let rev = self.rev.load(Ordering::SeqCst).to_string();
            if known != Some(rev.as_str()) {
                return Ok(Assignments {
                    revision: rev,
                    tasks: lock(&self.tasks).values().cloned().collect(),
                    ..Default::default()
                });
            }
            notified.await;
        }
    }
    async fn report(&self, reports: Vec<StatusReport>) -> Result<(), PlaneError> {
        let mut tasks = lock(&self.tasks);
        for r in &reports {
            // Like the state store: forward-only transitions.
            if let Some(t) = tasks.get_mut(&r.task_id) {
                if t.status.state.can_transition_to(r.status.state) {
                    t.status = r.status.clone();
                    t.version += 1;
                }
            }
        }
        drop(tasks);
        lock(&self.reports).extend(reports);
        self.rev.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        Ok(())
    }
    async fn heartbeat(&self) -> Result<std::time::Duration, PlaneError> {
        Ok(crate::HEARTBEAT_INTERVAL)
    }
}

fn task(id: &str, command: &str) -> Task {
    Task {
        id: TaskId::new(id),
        version: 1,
        created_at: Timestamp::ZERO,
        updated_at: Timestamp::ZERO,
        service_id: ServiceId::new("svc"),
        slot: Some(1),
        node_id: Some(NodeId::new("n1")),
        spec: TaskTemplate { command: vec![command.into()], ..Default::default() }.into(),
        endpoint: Default::default(),
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus { state: TaskState::Assigned, ..Default::default() },
        restart_history: Vec::new(),
        restore: None,
        networks: Vec::new(),
    }
}

struct Rig {
    dir: tempfile::TempDir,
    runtime: Arc<FakeRuntime>,
    plane: Arc<FakePlane>,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            dir: tempfile::tempdir().expect("tmp"),
            runtime: Arc::new(FakeRuntime::default()),
            plane: Arc::new(FakePlane::default()),
        }
    }
    /// Starts an agent over the same directory, runtime and managers (a restart).
    fn start(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.agent().run())
    }

    /// An agent over the same directory, runtime and managers, not started.
    fn agent(&self) -> Arc<Agent> {
        let cfg = AgentConfig {
            dir: self.dir.path().to_path_buf(),
            hostname: "n1".into(),
            labels: BTreeMap::new(),
            generic: BTreeMap::new(),
            node_id: String::new(),
        };
        let driver: Arc<dyn Driver> = Arc::new(FakeDriver(self.runtime.clone()));
        Agent::new(cfg, vec![driver], self.plane.clone()).expect("agent")
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_tasks_limits_reach_the_driver() {
    let rig = Rig::new();
    let mut t = task("t1", "sleep");
    std::sync::Arc::make_mut(&mut t.spec).resources.limits =
        Resources { memory_bytes: 64 << 20, nano_cpus: 500_000_000, pids: 50, ..Default::default() };
    let limits = rig.agent().config(&t).limits;
    assert_eq!(limits, Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(50) });
    // Zero: no limit of its own.
    std::sync::Arc::make_mut(&mut t.spec).resources.limits = Resources::default();
    assert_eq!(rig.agent().config(&t).limits, Limits::default());
}

#[tokio::test]
async fn a_task_runs_through_the_states_and_completes() {
    let rig = Rig::new();
    rig.plane.set(task("t1", "sleep"));
    let _agent = rig.start();
    eventually("running", || rig.plane.get("t1").status.state == TaskState::Running).await;
    assert_eq!(rig.plane.get("t1").status.runtime_id, "pid-t1");
    rig.runtime.exit("t1", 0);
    eventually("complete", || rig.plane.get("t1").status.state == TaskState::Complete).await;
    // Reports are batched (only the newest state of a task goes out), and only ever move forward.
    let states = rig.plane.states("t1");
    assert!(states.windows(2).all(|w| w[0] <= w[1]), "{states:?}");
    assert_eq!(states.last(), Some(&TaskState::Complete));
}

#[tokio::test]
async fn a_failed_task_reports_its_exit_code() {
    let rig = Rig::new();
    rig.plane.set(task("t1", "sleep"));
    let _agent = rig.start();
    eventually("running", || rig.plane.get("t1").status.state == TaskState::Running).await;
    rig.runtime.exit("t1", 3);
    eventually("failed", || rig.plane.get("t1").status.state == TaskState::Failed).await;
    let s = rig.plane.get("t1").status;
    assert_eq!(s.exit_code, Some(3));
    assert!(s.err.contains("code 3"), "{}", s.err);
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_drivers_reason() {
    let rig = Rig::new();
    rig.plane.set(task("t1", "missing"));
    let mut other = task("t2", "sleep");
    std::sync::Arc::make_mut(&mut other.spec).driver = Some("docker".into());
    rig.plane.set(other);
    let _agent = rig.start();
    eventually("rejected", || rig.plane.get("t1").status.state == TaskState::Rejected).await;
    assert_eq!(rig.plane.get("t1").status.err, "executable not found: missing");
    eventually("rejected", || rig.plane.get("t2").status.state == TaskState::Rejected).await;
    assert!(rig.plane.get("t2").status.err.contains("needs docker"), "{}", rig.plane.get("t2").status.err);
    assert_eq!(rig.runtime.starts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn shutdown_stops_the_task_and_unassignment_cleans_up() {
    let rig = Rig::new();
    rig.plane.set(task("t1", "sleep"));
    let _agent = rig.start();
    eventually("running", || rig.plane.get("t1").status.state == TaskState::Running).await;
    let mut t = rig.plane.get("t1");
    t.desired_state = TaskState::Shutdown;
    rig.plane.set(t);
    eventually("shutdown", || rig.plane.get("t1").status.state == TaskState::Shutdown).await;
    assert_eq!(rig.plane.get("t1").status.exit_code, Some(143));
    let task_dir = rig.dir.path().join("tasks/t1");
    assert!(task_dir.exists(), "a stopped task keeps its files until it is unassigned");
    rig.plane.remove("t1");
    eventually("cleanup", || !task_dir.exists() && rig.runtime.running().is_empty()).await;
}

#[tokio::test]
async fn a_restarted_agent_reattaches_and_never_starts_a_task_twice() {
    let rig = Rig::new();
    rig.plane.set(task("t1", "sleep"));
    rig.plane.set(task("t2", "sleep"));
    let agent = rig.start();
    eventually("running", || {
        rig.plane.get("t1").status.state == TaskState::Running
            && rig.plane.get("t2").status.state == TaskState::Running
    })
    .await;
    // The agent dies; t2 exits while nobody watches.
    agent.abort();
    let _ = agent.await;
    rig.runtime.exit("t2", 7);
    // A task the managers think is running but the node has no record of.
    let mut ghost = task("t3", "sleep");
    ghost.status.state = TaskState::Running;
    rig.plane.set(ghost);
    let _agent = rig.start();
    eventually("t2 failed with its code", || rig.plane.get("t2").status.exit_code == Some(7)).await;
    assert_eq!(rig.plane.get("t2").status.state, TaskState::Failed);
    eventually("ghost failed", || rig.plane.get("t3").status.state == TaskState::Failed).await;
    assert!(rig.plane.get("t3").status.err.contains("no record"));
    assert_eq!(rig.runtime.starts.load(Ordering::SeqCst), 2, "nothing was started again");
    // The re-attached task is still followed: its exit is reported.
    rig.runtime.exit("t1", 0);
    eventually("t1 complete", || rig.plane.get("t1").status.state == TaskState::Complete).await;
}

/// The agent died between starting a task on networks and recording its handle: the restarted
/// agent reports it failed and removes what its networks hold at once (a docker task's infra
/// container and its container in there), not only once the managers forget the task, so the
/// interrupted attempt never runs beside its replacement.
#[tokio::test]
async fn a_task_interrupted_before_its_handle_was_recorded_leaves_its_networks_at_once() {
    let rig = Rig::new();
    let mut t = task("t1", "sleep");
    t.networks = vec![shoal_types::TaskNetwork {
        network_id: shoal_types::NetworkId::new("net1"),
        addrs: vec!["10.0.1.5/24".into()],
    }];
    t.status.state = TaskState::Preparing;
    rig.plane.set(t.clone());
    let mut plain = task("t2", "sleep");
    plain.status.state = TaskState::Preparing;
    rig.plane.set(plain.clone());
    let agent = rig.agent();
    for t in [t, plain] {
        let lt = LocalTask {
            task: t,
            driver: "process".into(),
            handle: None,
            status: status(TaskState::Starting, "starting"),
        };
        agent.store.save(&lt).expect("record");
    }
    drop(agent);
    let _agent = rig.start();
    eventually("both failed", || {
        rig.plane.get("t1").status.state == TaskState::Failed
            && rig.plane.get("t2").status.state == TaskState::Failed
    })
    .await;
    assert!(rig.plane.get("t1").status.err.contains("restarted before the task started"));
    // Still listed (as history), yet its networks are gone; a task on no network has none to remove.
    eventually("t1's namespace removed", || lock(&rig.runtime.netns_removed).contains(&"t1".to_string()))
        .await;
    assert_eq!(*lock(&rig.runtime.netns_removed), ["t1"]);
    assert_eq!(rig.runtime.starts.load(Ordering::SeqCst), 0, "nothing was started");
}

/// `cluster leave` can arrive while a restarted agent is still finding its tasks again: the
/// tasks it recovers after the leave began are stopped and removed too, and the leave ends.
#[tokio::test]
async fn a_leave_during_recovery_stops_the_recovered_tasks() {
    let rig = Rig::new();
    rig.plane.set(task("t1", "sleep"));
    // The first agent runs in a runtime of its own, which goes away whole, like a process.
    let first =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
    first.spawn(rig.agent().run());
    eventually("running", || rig.plane.get("t1").status.state == TaskState::Running).await;
    first.shutdown_background();
    let a = rig.agent();
    let leaving = tokio::spawn({
        let a = a.clone();
        async move { a.leave(Duration::from_secs(10)).await }
    });
    eventually("the leave to begin", || a.leaving.load(Ordering::SeqCst)).await;
    a.recover().await;
    assert_eq!(leaving.await.expect("join"), Ok(()), "the recovered task was stopped and removed");
    assert!(rig.runtime.running().is_empty());
}

#[tokio::test]
async fn health_checks_mark_a_task_healthy_then_fail_it_when_unhealthy() {
    let rig = Rig::new();
    let mut t = task("t1", "sleep");
    std::sync::Arc::make_mut(&mut t.spec).health_check = Some(shoal_types::HealthCheck {
        test: vec!["CMD-SHELL".into(), "probe".into()],
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
        retries: 2,
        start_period: Duration::ZERO,
    });
    rig.plane.set(t);
    let _agent = rig.start();
    eventually("healthy", || rig.plane.get("t1").status.health == Some(Health::Healthy)).await;
    assert_eq!(rig.plane.get("t1").status.state, TaskState::Running);
    rig.runtime.unhealthy.store(true, Ordering::SeqCst);
    eventually("failed as unhealthy", || rig.plane.get("t1").status.state == TaskState::Failed).await;
    let s = rig.plane.get("t1").status;
    assert_eq!(s.health, Some(Health::Unhealthy));
    assert!(s.err.contains("unhealthy") && s.err.contains("down"), "{}", s.err);
    assert!(rig.runtime.running().is_empty(), "the unhealthy task was stopped");
}

#[tokio::test]
async fn exec_runs_only_in_a_running_task_of_this_node() {
    let rig = Rig::new();
    rig.plane.set(task("t1", "sleep"));
    let agent = rig.agent();
    let _run = tokio::spawn(agent.clone().run());
    let cmd: Vec<String> = ["/bin/sh", "-c", "probe"].map(String::from).to_vec();
    let limit = Duration::from_secs(1);
    let (t1, nope) = (TaskId::new("t1"), TaskId::new("nope"));
    assert_eq!(agent.exec_task(&nope, &cmd, limit).await, Err(ExecError::NotHere(nope.clone())));
    eventually("running", || rig.plane.get("t1").status.state == TaskState::Running).await;
    let r = agent.exec_task(&t1, &cmd, limit).await;
    assert_eq!(r, Ok(ExecResult { exit_code: 0, output: "ok".into() }));
    assert_eq!(agent.exec_task(&t1, &[], limit).await, Err(ExecError::EmptyCommand));
    rig.runtime.exit("t1", 0);
    eventually("complete", || rig.plane.get("t1").status.state == TaskState::Complete).await;
    let refused = agent.exec_task(&t1, &cmd, limit).await;
    assert_eq!(refused, Err(ExecError::NotRunning { task: t1.clone(), state: TaskState::Complete }));
    assert_eq!(
        refused.map_err(|e| e.to_string()),
        Err("task t1 is not running (state complete)".to_string())
    );
}
