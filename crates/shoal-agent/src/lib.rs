//! The node agent, in every `shoal daemon`: it fingerprints the node, registers it, heartbeats,
//! follows the node's assignments and runs each task through **one generic state machine** over
//! the [`shoal_driver::Driver`] trait (SwarmKit's `exec.Do`):
//!
//! ```text
//! assigned → accepted → preparing → starting → running → complete | failed
//!                 └──────────── desired state past running ───────────→ shutdown
//! ```
//!
//! Drivers implement primitives; every policy lives here: which driver runs a task, when a driver
//! error rejects a task (bad input) or fails it (runtime trouble), stop with the task's grace
//! period, batching status reports. Tasks are recorded locally ([`store`]) with their driver
//! handles, so a restarted agent recovers every task through its driver and reports the truth —
//! including the exit code of a task that ended while the agent was away. The agent never starts a
//! task the managers believe is already past `assigned`: a task it has no record of is reported
//! failed and the orchestrator replaces it, so a restart never runs a task twice.

mod exec_stream;
pub mod fingerprint;
pub mod plane;
pub mod store;

pub use plane::{AssignedService, Assignments, ControlPlane, PlaneError, StatusReport};

use shoal_driver::{
    CheckpointOptions, CheckpointReport, Driver, DriverError, ExitStatus, Handle, Limits, Recovered,
    TaskConfig,
};
use shoal_types::{DriverInfo, Health, NodeDescription, Task, TaskId, TaskState, TaskStatus, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use store::{LocalTask, Store};
use tokio::sync::{mpsc, watch};

/// How long to wait before retrying the control plane after an error.
const RETRY: Duration = Duration::from_millis(500);
/// The heartbeat period until the managers name one (each heartbeat's answer does).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest period a manager's answer is taken at.
const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// Heartbeats sent and not answered yet, at most (the managers' grace is 3 periods).
const HEARTBEATS_IN_FLIGHT: usize = 3;

pub struct AgentConfig {
    /// The agent's own directory (`<data>/agent`).
    pub dir: PathBuf,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    /// Generic resources this node offers (`--resource gpu=2`).
    pub generic: BTreeMap<String, u64>,
    /// This node's id: names its network namespaces (unique on a machine that simulates several
    /// nodes). Empty: the agent builds no networks (tasks that join one are rejected).
    pub node_id: String,
}

pub struct Agent {
    store: Store,
    volumes_dir: PathBuf,
    drivers: BTreeMap<&'static str, Arc<dyn Driver>>,
    plane: Arc<dyn ControlPlane>,
    cfg: AgentConfig,
    offered: Mutex<Vec<DriverInfo>>,
    runners: Mutex<BTreeMap<TaskId, watch::Sender<Task>>>,
    reports: mpsc::UnboundedSender<StatusReport>,
    report_rx: Mutex<Option<mpsc::UnboundedReceiver<StatusReport>>>,
    /// Set by [`Agent::leave`]: no new task starts.
    leaving: std::sync::atomic::AtomicBool,
    /// The last state reported for each task, with its driver: a state change is logged once.
    reported: Mutex<BTreeMap<TaskId, (TaskState, &'static str)>>,
    /// The node's networks (None without a node id) and its resolver.
    net: Option<Arc<shoal_net::Net>>,
    dns: shoal_net::dns::Dns,
    /// The newest network view from the managers, once one came.
    netview: watch::Sender<Option<Arc<shoal_net::NetView>>>,
    /// The services of the assigned tasks (names for the tasks' containers).
    services: Mutex<BTreeMap<shoal_types::ServiceId, AssignedService>>,
    /// Registry credentials of the assigned tasks (from the newest assignments; memory only).
    registry_auth: Mutex<BTreeMap<TaskId, shoal_driver::RegistryAuth>>,
    /// Secrets and configs of the tasks yet to start, from the latest assignments (memory only).
    secrets: Mutex<BTreeMap<shoal_types::SecretId, shoal_types::SecretData>>,
    /// The description the managers have (after a registration went through): re-sent only
    /// when it changes, so an unchanged node costs no Raft write.
    registered: Mutex<Option<NodeDescription>>,
    /// Wakes the description refresher at once (an image was fetched or went missing).
    refresh: tokio::sync::Notify,
    /// One image fetch at a time: a second task of the same image finds it in the store.
    fetching: tokio::sync::Mutex<()>,
}

/// How often the agent compares the images in its store with what it last reported.
const IMAGE_REFRESH: Duration = Duration::from_secs(2);
/// How long a task waits for some peer to report its missing image (a fresh import shows up
/// with that peer's next refresh) before it is rejected.
const IMAGE_SOURCE_WAIT: Duration = Duration::from_secs(5);
/// What the plane answers when no ready peer reports the image.
pub const NO_PEER_HAS_IT: &str = "no peer has it";

/// How long a task stopped by a checkpoint waits for the managers to move it (a migration
/// commits in seconds); after that it is failed, and its slot restarts from scratch.
const CHECKPOINT_LIMBO: Duration = Duration::from_secs(300);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn status(state: TaskState, message: impl Into<String>) -> TaskStatus {
    TaskStatus { state, timestamp: now(), message: message.into(), ..Default::default() }
}

/// The status of a task that ended on its own.
fn exited(prev: &TaskStatus, x: &ExitStatus) -> TaskStatus {
    let mut s = prev.clone();
    s.timestamp = now();
    s.exit_code = Some(x.code);
    if x.success() {
        s.state = TaskState::Complete;
        s.message = "finished".into();
        s.err.clear();
    } else {
        s.state = TaskState::Failed;
        s.message = "task exited".into();
        s.err = if x.oom_killed {
            format!("out of memory: killed by the OOM killer (exit code {})", x.code)
        } else if !x.message.is_empty() {
            format!("{} (exit code {})", x.message, x.code)
        } else if let Some(sig) = x.signal {
            format!("killed by signal {sig} (exit code {})", x.code)
        } else {
            format!("task exited with code {}", x.code)
        };
    }
    s
}

impl Agent {
    pub fn new(
        cfg: AgentConfig,
        drivers: Vec<Arc<dyn Driver>>,
        plane: Arc<dyn ControlPlane>,
    ) -> std::io::Result<Arc<Agent>> {
        let store = Store::open(cfg.dir.join("tasks"))?;
        let volumes_dir = cfg.dir.join("volumes");
        std::fs::create_dir_all(&volumes_dir)?;
        let (reports, rx) = mpsc::unbounded_channel();
        let cfg_node_id = cfg.node_id.clone();
        let net_dir = cfg.dir.join("net");
        Ok(Arc::new(Agent {
            store,
            volumes_dir,
            drivers: drivers.into_iter().map(|d| (d.name(), d)).collect(),
            plane,
            cfg,
            offered: Mutex::new(Vec::new()),
            runners: Mutex::new(BTreeMap::new()),
            reports,
            report_rx: Mutex::new(Some(rx)),
            leaving: std::sync::atomic::AtomicBool::new(false),
            reported: Mutex::new(BTreeMap::new()),
            net: (!cfg_node_id.is_empty()).then(|| Arc::new(shoal_net::Net::new(&cfg_node_id, &net_dir))),
            dns: shoal_net::dns::Dns::default(),
            netview: watch::channel(None).0,
            services: Mutex::new(BTreeMap::new()),
            registry_auth: Mutex::new(BTreeMap::new()),
            secrets: Mutex::new(BTreeMap::new()),
            registered: Mutex::new(None),
            refresh: tokio::sync::Notify::new(),
            fetching: tokio::sync::Mutex::new(()),
        }))
    }

    /// The node's oci image store (`<data>/images`, beside the agent's own `<data>/agent`, as
    /// the oci driver opens it), when this node offers the oci driver.
    pub fn image_store_root(&self) -> Option<PathBuf> {
        if !lock(&self.offered).iter().any(|d| d.name == "oci") {
            return None;
        }
        Some(self.cfg.dir.parent()?.join("images"))
    }

    /// The images in the node's store (name → config digest), as the description reports them.
    fn local_images(&self) -> BTreeMap<String, String> {
        let Some(root) = self.image_store_root().filter(|r| r.join("index.json").is_file()) else {
            return BTreeMap::new();
        };
        let listed = shoal_driver_oci::store::ImageStore::open(&root).and_then(|s| s.list());
        match listed {
            Ok(images) => images
                .into_iter()
                .take(shoal_types::node::MAX_REPORTED_IMAGES)
                .map(|r| (r.name, r.config_digest))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the image store");
                BTreeMap::new()
            }
        }
    }

    /// Re-sends the node's description when the images in its store change (every
    /// [`IMAGE_REFRESH`], or at once when woken); nothing is sent while it is unchanged.
    async fn refresh_description(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(IMAGE_REFRESH) => {}
                _ = self.refresh.notified() => {}
            }
            let Some(mut next) = lock(&self.registered).clone() else { continue };
            let images = self.local_images();
            if next.images == images {
                continue;
            }
            next.images = images;
            match self.plane.register(&next).await {
                Ok(()) => {
                    tracing::info!(
                        images = next.images.len(),
                        "node description updated (image store changed)"
                    );
                    *lock(&self.registered) = Some(next);
                }
                Err(e) => tracing::debug!(error = %e, "node description update deferred"),
            }
        }
    }

    /// Makes sure the oci image of `task` is in the node's store: when it is missing, fetches it
    /// from a peer that reports it (verified blob by blob). An image on no peer rejects the
    /// task with an error that starts with [`shoal_types::node::IMAGE_NOT_FOUND`].
    async fn ensure_image(&self, image: &str) -> Result<(), DriverError> {
        let Some(root) = self.image_store_root() else { return Ok(()) };
        let present = |root: &Path| {
            shoal_driver_oci::store::ImageStore::open(root)
                .and_then(|s| s.get(image))
                .map(|r| r.is_some())
                .unwrap_or(false)
        };
        if present(&root) {
            return Ok(());
        }
        let _one = self.fetching.lock().await;
        if present(&root) {
            return Ok(());
        }
        if let Err(e) = shoal_driver_oci::store::validate_reference(image) {
            return Err(DriverError::Invalid(e.to_string()));
        }
        let started = std::time::Instant::now();
        // An image imported on a peer a moment ago is reported with the peer's next refresh
        // (every IMAGE_REFRESH): while no peer reports it, ask again for a little longer than
        // two refreshes before the task is rejected for it.
        let mut fetched = self.plane.fetch_image(image, &root).await;
        while matches!(&fetched, Err(e) if e.0 == NO_PEER_HAS_IT) && started.elapsed() < IMAGE_SOURCE_WAIT {
            tokio::time::sleep(Duration::from_millis(250)).await;
            fetched = self.plane.fetch_image(image, &root).await;
        }
        match fetched {
            Ok(from) => {
                tracing::info!(image, from = %from, took_ms = started.elapsed().as_millis() as u64, "image fetched from a peer");
                self.refresh.notify_one();
                Ok(())
            }
            Err(e) => {
                self.refresh.notify_one();
                Err(DriverError::Invalid(format!(
                    "{}: {image} is not on node {} and {e}",
                    shoal_types::node::IMAGE_NOT_FOUND,
                    self.cfg.hostname
                )))
            }
        }
    }

    /// Asks every driver what it is; drivers that are not usable here are left out.
    pub async fn fingerprint(&self) -> NodeDescription {
        let mut offered = Vec::new();
        for d in self.drivers.values() {
            match d.fingerprint().await {
                Some(info) => offered.push(info),
                None => tracing::info!(driver = d.name(), "driver not available on this node"),
            }
        }
        offered.sort();
        *lock(&self.offered) = offered.clone();
        let mut d = fingerprint::describe(
            self.cfg.hostname.clone(),
            self.cfg.labels.clone(),
            self.cfg.generic.clone(),
            offered,
        );
        d.images = self.local_images();
        d
    }

    /// Runs the agent until the process exits: recover, register, then follow assignments.
    pub async fn run(self: Arc<Self>) {
        let description = self.fingerprint().await;
        self.recover().await;
        if let Some(rx) = lock(&self.report_rx).take() {
            tokio::spawn(reporter(self.plane.clone(), rx));
        }
        loop {
            match self.plane.register(&description).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "node registration deferred");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        tracing::info!(drivers = ?description.drivers.iter().map(|d| &d.name).collect::<Vec<_>>(), "agent registered");
        *lock(&self.registered) = Some(description);
        tokio::spawn(self.clone().refresh_description());
        tokio::spawn(heartbeats(self.plane.clone()));
        tokio::spawn(self.clone().follow_networks());
        let mut revision: Option<String> = None;
        loop {
            match self.plane.assignments(revision.as_deref()).await {
                Ok(a) => {
                    revision = Some(a.revision.clone());
                    if !a.services.is_empty() {
                        *lock(&self.services) = a.services;
                    }
                    *lock(&self.registry_auth) = a.registry_auth;
                    *lock(&self.secrets) = a.secrets;
                    self.reconcile(a.tasks);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "assignments unavailable");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Keeps the node's networks, VIPs, routing mesh and resolver in line with the newest view
    /// from the managers; removes the namespaces of tasks that are gone.
    async fn follow_networks(self: Arc<Self>) {
        let Some(net) = self.net.clone() else { return };
        let mut known: Option<String> = None;
        let mut checked_once = false;
        let mut failures: u32 = 0;
        loop {
            let view = match self.plane.netview(known.as_deref()).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "network view unavailable");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            if known.as_deref() == Some(view.revision.as_str()) {
                continue;
            }
            let started = std::time::Instant::now();
            let first = known.is_none() && !checked_once;
            match net.reconcile(&view).await {
                // After a restart, what the previous run built should still be there.
                Ok(changes) if first => {
                    checked_once = true;
                    tracing::info!(revision = %view.revision, changes, "networks checked on start")
                }
                Ok(0) => tracing::debug!(revision = %view.revision, "networks already as the view says"),
                Ok(changes) => tracing::info!(
                    revision = %view.revision, changes, took_ms = started.elapsed().as_millis() as u64,
                    "networks reconciled"
                ),
                Err(e) => {
                    // Backing off (0.5 s doubling to 10 s) keeps a node that cannot build its
                    // networks (no nftables, say) from spinning and flooding its log.
                    failures += 1;
                    let wait =
                        (RETRY * 2u32.saturating_pow(failures.min(5) - 1)).min(Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "networks not reconciled");
                    self.netview.send_replace(Some(Arc::new(view)));
                    tokio::time::sleep(wait).await;
                    known = None;
                    continue;
                }
            }
            failures = 0;
            for (addr, e) in self.dns.update(&view).await {
                tracing::warn!(%addr, error = %e, "the resolver cannot listen there yet");
            }
            let live: BTreeSet<String> = lock(&self.runners).keys().map(|t| t.to_string()).collect();
            net.forget_tasks_except(&live).await;
            known = Some(view.revision.clone());
            self.netview.send_replace(Some(Arc::new(view)));
        }
    }

    /// Prepares `task`'s namespace on its networks, once the view has them all; None when the
    /// task is told to stop meanwhile. The driver makes the namespace first when it needs one of
    /// its own (docker: an infra container's); then the interfaces are plumbed into it.
    async fn attach_networks(
        &self,
        task: &Task,
        driver: &dyn Driver,
        cfg: &TaskConfig,
        assigned: &mut watch::Receiver<Task>,
    ) -> Option<Result<shoal_net::Attachment, DriverError>> {
        let Some(net) = self.net.clone() else {
            return Some(Err(DriverError::Runtime(
                "this node builds no networks (it has no node id)".into(),
            )));
        };
        let addrs: Vec<shoal_net::TaskAddr> = task
            .networks
            .iter()
            .map(|n| shoal_net::TaskAddr {
                network_id: n.network_id.to_string(),
                addr: n.addrs.first().cloned().unwrap_or_default(),
            })
            .collect();
        if let Some(missing) = addrs.iter().find(|a| a.addr.is_empty()) {
            return Some(Err(DriverError::Runtime(format!("no address on network {}", missing.network_id))));
        }
        let mut views = self.netview.subscribe();
        let has_all = |v: &Option<Arc<shoal_net::NetView>>| {
            v.as_ref().is_some_and(|v| addrs.iter().all(|a| v.network(&a.network_id).is_some()))
        };
        let stop_wanted = |rx: &watch::Receiver<Task>| rx.borrow().desired_state > TaskState::Running;
        tokio::select! {
            r = views.wait_for(has_all) => if r.is_err() {
                return Some(Err(DriverError::Runtime("the agent is stopping".into())));
            },
            _ = wait_until(assigned, stop_wanted) => return None,
        }
        let view = views.borrow().clone()?;
        let ns = net.names().task(task.id.as_str());
        let made = tokio::select! {
            r = driver.network_namespace(cfg, &ns) => r,
            _ = wait_until(assigned, stop_wanted) => return None,
        };
        if let Err(e) = made {
            return Some(Err(e));
        }
        Some(
            net.attach(task.id.as_str(), &addrs, &view)
                .await
                .map_err(|e| DriverError::Runtime(format!("attaching to its networks: {e}"))),
        )
    }

    fn report(&self, task: &Task, status: &TaskStatus) {
        let driver = self.driver_name(task);
        let previous = lock(&self.reported).insert(task.id.clone(), (status.state, driver));
        if previous.map(|p| p.0) != Some(status.state) {
            log_state_change(task, status, driver);
            let labels = shoal_metrics::StateLabels { state: status.state.to_string() };
            shoal_metrics::metrics().agent_task_state_changes.get_or_create(&labels).inc();
        }
        let _ = self.reports.send(StatusReport { task_id: task.id.clone(), status: status.clone() });
    }

    /// The driver that runs (or would run) `task` here, for logs and metrics.
    fn driver_name(&self, task: &Task) -> &'static str {
        self.driver_for(task).map_or("none", |d| d.name())
    }

    /// Checkpoints a running task into `dir` and stops it (CRIU, through its driver). The task is
    /// then neither complete nor failed: it waits for the managers to move it (its new task is
    /// restored elsewhere and this one is told to stop) and reports `shutdown` then.
    pub async fn checkpoint_task(
        &self,
        id: &TaskId,
        dir: &Path,
        opts: &CheckpointOptions,
    ) -> Result<CheckpointReport, DriverError> {
        let (driver, handle) = self.task_handle(id).ok_or_else(|| DriverError::NotFound(id.to_string()))?;
        driver.checkpoint(&handle, dir, opts).await
    }

    /// Where the agent keeps checkpoints it makes or restores.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.cfg.dir.join("checkpoints")
    }

    /// Tasks this node runs now, by driver.
    pub fn running_by_driver(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for (state, driver) in lock(&self.reported).values() {
            if *state == TaskState::Running {
                *out.entry(*driver).or_insert(0) += 1;
            }
        }
        out
    }

    fn driver_for(&self, task: &Task) -> Result<Arc<dyn Driver>, String> {
        let offered = lock(&self.offered);
        let wanted = task.spec.driver_candidates();
        for name in &wanted {
            if offered.iter().any(|d| d.name == *name) {
                if let Some(d) = self.drivers.get(name) {
                    return Ok(d.clone());
                }
            }
        }
        let have: Vec<&str> = offered.iter().map(|d| d.name.as_str()).collect();
        Err(format!(
            "no driver for this task on this node: it needs {} and the node offers {}",
            wanted.join(" or "),
            if have.is_empty() { "none".to_string() } else { have.join(", ") }
        ))
    }

    /// Brings the local picture in line with the managers' complete list of this node's tasks.
    pub fn reconcile(self: &Arc<Self>, tasks: Vec<Task>) {
        let mut runners = lock(&self.runners);
        if self.leaving.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let assigned: BTreeSet<TaskId> = tasks.iter().map(|t| t.id.clone()).collect();
        // Tasks no longer bound to this node: their runners stop them and clean up.
        runners.retain(|id, _| assigned.contains(id));
        for t in tasks {
            if let Some(tx) = runners.get(&t.id) {
                tx.send_replace(t);
                continue;
            }
            if t.status.state == TaskState::Assigned {
                let id = t.id.clone();
                let (tx, rx) = watch::channel(t.clone());
                runners.insert(id, tx);
                tokio::spawn(self.clone().run_new(t, rx));
            } else if t.status.state > TaskState::Assigned && !t.status.state.is_terminal() {
                let mut s = t.status.clone();
                s.state = TaskState::Failed;
                s.timestamp = now();
                s.err = "the agent on this node has no record of this task (its local state was lost)".into();
                self.report(&t, &s);
            }
        }
    }

    /// Reads every recorded task and asks its driver what became of it.
    async fn recover(self: &Arc<Self>) {
        for rec in self.store.load_all() {
            let mut lt = match rec {
                Ok(lt) => lt,
                Err((dir, e)) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "unreadable task record; leaving it");
                    continue;
                }
            };
            let id = lt.task.id.clone();
            let Some(driver) = self.drivers.get(lt.driver.as_str()).cloned() else {
                tracing::warn!(task = %id, driver = %lt.driver, "task recorded with an unknown driver");
                continue;
            };
            let (tx, rx) = watch::channel(lt.task.clone());
            {
                // Under the runners' lock, so that a `leave` that started meanwhile either sees
                // this runner or has already said so: then `tx` is dropped here and the runner
                // stops the task and cleans up, as for every other task.
                let mut runners = lock(&self.runners);
                if !self.leaving.load(std::sync::atomic::Ordering::SeqCst) {
                    runners.insert(id.clone(), tx);
                }
            }
            // Its state was logged before the agent restarted: a re-attachment is not a change.
            lock(&self.reported).insert(id.clone(), (lt.status.state, driver.name()));
            if lt.status.state.is_terminal() {
                self.report(&lt.task, &lt.status);
                tokio::spawn(self.clone().finished(lt, driver, rx));
                continue;
            }
            let Some(handle) = lt.handle.clone() else {
                lt.status = TaskStatus {
                    err: "the agent restarted before the task started".into(),
                    ..status(TaskState::Failed, "not started")
                };
                self.save_and_report(&lt).await;
                // It never runs under this id, but its start may have gone further than the record
                // says (the agent died before recording the handle): what its networks hold goes
                // now, with a docker task's container that joined its infra container's namespace,
                // so nothing of it runs beside its replacement.
                self.remove_networking(&lt.task, driver.as_ref()).await;
                tokio::spawn(self.clone().finished(lt, driver, rx));
                continue;
            };
            match driver.recover(&handle).await {
                Ok(Recovered::Running) => {
                    tracing::info!(task = %id, driver = %lt.driver, "re-attached to a running task");
                    self.report(&lt.task, &lt.status);
                    tokio::spawn(self.clone().running(lt, driver, handle, rx));
                }
                Ok(Recovered::Exited(x)) => {
                    tracing::info!(task = %id, code = x.code, "task ended while the agent was away");
                    lt.status = if x.is_checkpointed() {
                        // A migration was under way when the agent went; its slot restarts (restart policy).
                        TaskStatus {
                            err: "stopped by a checkpoint while the agent was away".into(),
                            ..status(TaskState::Failed, "checkpointed")
                        }
                    } else {
                        exited(&lt.status, &x)
                    };
                    self.save_and_report(&lt).await;
                    tokio::spawn(self.clone().finished(lt, driver, rx));
                }
                Err(e) => {
                    lt.status = TaskStatus {
                        err: format!("lost while the agent was away: {e}"),
                        ..status(TaskState::Failed, "lost")
                    };
                    self.save_and_report(&lt).await;
                    tokio::spawn(self.clone().finished(lt, driver, rx));
                }
            }
        }
    }

    /// Records the task on disk, then reports its status. The write (with its fsync) runs on
    /// the blocking pool: on the runtime's workers, a node's fsyncs stalled its heartbeats.
    async fn save_and_report(&self, lt: &LocalTask) {
        let (store, record) = (self.store.clone(), lt.clone());
        let saved = tokio::task::spawn_blocking(move || store.save(&record))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = saved {
            tracing::warn!(task = %lt.task.id, error = %e, "cannot record the task locally");
        }
        self.report(&lt.task, &lt.status);
    }

    fn config(&self, t: &Task) -> TaskConfig {
        let opt = |v: u64| (v > 0).then_some(v);
        let slot = t.slot.map_or_else(
            || t.node_id.as_ref().map_or_else(String::new, |n| n.to_string()),
            |s| s.to_string(),
        );
        let service = lock(&self.services).get(&t.service_id).cloned().unwrap_or_default();
        let service_name =
            if service.name.is_empty() { t.service_id.to_string() } else { service.name.clone() };
        TaskConfig {
            task_id: t.id.to_string(),
            service_id: t.service_id.to_string(),
            name: format!("{service_name}.{slot}.{}", t.id),
            service_name: service.name,
            stack_namespace: service.stack,
            node_id: self.cfg.node_id.clone(),
            options: shoal_driver::ContainerOptions::of(&t.spec),
            image: t.spec.image.clone(),
            command: t.spec.command.clone(),
            args: t.spec.args.clone(),
            env: t.spec.env.clone(),
            workdir: t.spec.workdir.clone(),
            user: t.spec.user.clone(),
            hostname: t.spec.hostname.clone(),
            mounts: t.spec.mounts.clone(),
            limits: Limits {
                memory_bytes: opt(t.spec.resources.limits.memory_bytes),
                nano_cpus: opt(t.spec.resources.limits.nano_cpus),
                pids: opt(t.spec.resources.limits.pids),
            },
            // Ingress ports are the routing mesh's (nftables on every node), not the driver's.
            ports: t
                .endpoint
                .ports
                .iter()
                .filter(|p| p.mode == shoal_types::PublishMode::Host)
                .cloned()
                .collect(),
            labels: BTreeMap::from([
                ("shoal.task.id".to_string(), t.id.to_string()),
                ("shoal.service.id".to_string(), t.service_id.to_string()),
            ]),
            task_dir: self.store.run_dir(&t.id),
            volumes_dir: self.volumes_dir.clone(),
            // Set once the task is attached to its networks (see `attach_networks`).
            netns: None,
            resolv_conf: None,
            registry_auth: lock(&self.registry_auth).get(&t.id).cloned(),
            // Set once they are in the task's tmpfs (see `place_secrets`).
            secret_files: Vec::new(),
        }
    }

    /// Writes the task's secrets and configs into its tmpfs (from the data the managers sent
    /// with the assignment) and tells the driver where they are. A secret that did not come
    /// (removed meanwhile) rejects the task, naming it.
    fn place_secrets(&self, task: &Task, cfg: &mut TaskConfig) -> Result<(), DriverError> {
        use shoal_types::SecretKind;
        if task.spec.secrets.is_empty() && task.spec.configs.is_empty() {
            return Ok(());
        }
        let delivered = lock(&self.secrets).clone();
        let mut files = Vec::new();
        for (kind, refs) in
            [(SecretKind::Secret, &task.spec.secrets), (SecretKind::Config, &task.spec.configs)]
        {
            for r in refs {
                let data = r.id.as_ref().and_then(|id| delivered.get(id)).ok_or_else(|| {
                    DriverError::Invalid(format!(
                        "{kind} {:?} did not reach this node (was it removed?)",
                        r.source
                    ))
                })?;
                files.push((data.clone(), r.path(kind), r.uid, r.gid, r.mode));
            }
        }
        let contents: Vec<_> = files
            .iter()
            .map(|(data, target, uid, gid, mode)| shoal_driver::secrets::FileContent {
                data: data.as_bytes(),
                target: target.clone(),
                uid: *uid,
                gid: *gid,
                mode: *mode,
            })
            .collect();
        cfg.secret_files = shoal_driver::secrets::materialize(&cfg.task_dir, &contents)?;
        Ok(())
    }

    /// A newly assigned task: accept, prepare, start; then follow it while it runs.
    async fn run_new(self: Arc<Self>, task: Task, mut assigned: watch::Receiver<Task>) {
        let driver = match self.driver_for(&task) {
            Ok(d) => d,
            Err(e) => {
                let s = TaskStatus { err: e, ..status(TaskState::Rejected, "rejected") };
                self.report(&task, &s);
                return;
            }
        };
        let mut lt = LocalTask {
            task,
            driver: driver.name().to_string(),
            handle: None,
            status: status(TaskState::Accepted, "accepted"),
        };
        self.save_and_report(&lt).await;
        let stop_wanted = |rx: &watch::Receiver<Task>| rx.borrow().desired_state > TaskState::Running;
        if stop_wanted(&assigned) {
            lt.status = status(TaskState::Shutdown, "stopped before it started");
            self.save_and_report(&lt).await;
            return self.finished(lt, driver, assigned).await;
        }
        let mut cfg = self.config(&lt.task);
        lt.status = status(TaskState::Preparing, "preparing");
        self.save_and_report(&lt).await;
        let fail = |lt: &mut LocalTask, e: DriverError| {
            lt.status = match e {
                DriverError::Invalid(m) => TaskStatus { err: m, ..status(TaskState::Rejected, "rejected") },
                e => TaskStatus { err: e.to_string(), ..status(TaskState::Failed, "failed to start") },
            };
        };
        // Its image (fetched from a peer when the node lacks it), its networks (the namespace
        // the driver runs it in), then the driver's own preparation; any may end with the task
        // told to stop (None) or failing.
        let ready = async {
            if driver.name() == "oci" {
                if let Some(image) = lt.task.spec.image.clone() {
                    let fetched = tokio::select! {
                        r = self.ensure_image(&image) => r,
                        _ = wait_until(&mut assigned, stop_wanted) => return None,
                    };
                    if let Err(e) = fetched {
                        return Some(Err(e));
                    }
                }
            }
            if !lt.task.networks.is_empty() {
                match self.attach_networks(&lt.task, driver.as_ref(), &cfg, &mut assigned).await? {
                    Ok(at) => {
                        cfg.netns = Some(at.netns);
                        cfg.resolv_conf = Some(at.resolv_conf);
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            if let Err(e) = self.place_secrets(&lt.task, &mut cfg) {
                return Some(Err(e));
            }
            tokio::select! {
                r = driver.prepare(&cfg) => Some(r),
                _ = wait_until(&mut assigned, stop_wanted) => None,
            }
        }
        .await;
        match ready {
            None => {
                lt.status = status(TaskState::Shutdown, "stopped before it started");
                self.save_and_report(&lt).await;
                return self.finished(lt, driver, assigned).await;
            }
            Some(Err(e)) => {
                fail(&mut lt, e);
                self.save_and_report(&lt).await;
                return self.finished(lt, driver, assigned).await;
            }
            Some(Ok(())) => {}
        }
        lt.status = status(TaskState::Starting, "starting");
        self.save_and_report(&lt).await;
        let started = std::time::Instant::now();
        let launched = match lt.task.restore.clone() {
            Some(spec) => self.restore(&spec, &cfg, driver.as_ref()).await,
            None => driver.start(&cfg).await,
        };
        match launched {
            Ok(handle) => {
                shoal_metrics::metrics().observe_task_start(driver.name(), started.elapsed());
                lt.handle = Some(handle.clone());
                let checked =
                    lt.task.spec.health_check.as_ref().is_some_and(|h| health_command(&h.test).is_some());
                let how = match &lt.task.restore {
                    Some(r) => format!("restored from a checkpoint of task {}", r.from_task),
                    None => "started".into(),
                };
                lt.status = TaskStatus {
                    runtime_id: handle.runtime_id.clone(),
                    health: checked.then_some(Health::Starting),
                    ..status(TaskState::Running, how)
                };
                self.save_and_report(&lt).await;
                self.running(lt, driver, handle, assigned).await
            }
            Err(e) => {
                fail(&mut lt, e);
                self.save_and_report(&lt).await;
                self.finished(lt, driver, assigned).await
            }
        }
    }

    /// A migrated task: fetch its checkpoint (verified before anything is unpacked) and restore it.
    async fn restore(
        &self,
        spec: &shoal_types::RestoreSpec,
        cfg: &TaskConfig,
        driver: &dyn Driver,
    ) -> Result<Handle, DriverError> {
        let restored = if spec.source_addr.is_empty() {
            // Back home after a failed migration: from the checkpoint this node kept.
            let dir = self.checkpoints_dir().join(&spec.checkpoint_id);
            if !spec.checkpoint_id.bytes().all(|b| b.is_ascii_alphanumeric()) || !dir.is_dir() {
                return Err(DriverError::Runtime(format!(
                    "checkpoint {} is not on this node",
                    spec.checkpoint_id
                )));
            }
            let r = driver.restore(cfg, &dir).await;
            (r, dir)
        } else {
            let dir = self.checkpoints_dir().join(format!("restore-{}", cfg.task_id));
            let _ = store::remove_dir(&dir);
            let t0 = std::time::Instant::now();
            let r = match self.plane.fetch_checkpoint(spec, &dir).await {
                Ok(()) => {
                    let t1 = std::time::Instant::now();
                    let r = driver.restore(cfg, &dir).await;
                    tracing::info!(
                        task = %cfg.task_id,
                        fetch_ms = (t1 - t0).as_millis() as u64,
                        restore_ms = t1.elapsed().as_millis() as u64,
                        "checkpoint fetched and restored"
                    );
                    r
                }
                Err(e) => {
                    Err(DriverError::Runtime(format!("fetching checkpoint {}: {e}", spec.checkpoint_id)))
                }
            };
            (r, dir)
        };
        let (restored, dir) = restored;
        if let Err(e) = store::remove_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a restored checkpoint");
        }
        restored.map_err(|e| match e {
            DriverError::Invalid(m) => DriverError::Invalid(format!("restore: {m}")),
            e => DriverError::Runtime(format!("restore: {e}")),
        })
    }

    /// A running task: report how it ends, or stop it when asked (or when it is unassigned).
    async fn running(
        self: Arc<Self>,
        mut lt: LocalTask,
        driver: Arc<dyn Driver>,
        handle: Handle,
        mut assigned: watch::Receiver<Task>,
    ) {
        lt.status = self.follow(&lt, driver.as_ref(), &handle, &mut assigned).await;
        if lt.status.runtime_id.is_empty() {
            lt.status.runtime_id = handle.runtime_id.clone();
        }
        self.save_and_report(&lt).await;
        self.finished(lt, driver, assigned).await
    }

    async fn follow(
        &self,
        lt: &LocalTask,
        driver: &dyn Driver,
        handle: &Handle,
        assigned: &mut watch::Receiver<Task>,
    ) -> TaskStatus {
        let wait = driver.wait(handle);
        tokio::pin!(wait);
        let stop_wanted = |rx: &watch::Receiver<Task>| rx.borrow().desired_state > TaskState::Running;
        let health = async {
            match lt.task.spec.health_check.as_ref().and_then(|h| health_command(&h.test).map(|c| (h, c))) {
                Some((h, cmd)) => self.watch_health(lt, driver, handle, h, &cmd).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            r = &mut wait => Ending::Exited(r),
            _ = wait_until(assigned, stop_wanted) => Ending::Stop,
            why = health => Ending::Unhealthy(why),
        };
        match outcome {
            Ending::Exited(Ok(x)) if x.is_checkpointed() => {
                // Stopped by a checkpoint: the managers are moving it. It stays as it is until
                // they tell it to stop, so its slot is not restarted meanwhile.
                let told = tokio::time::timeout(CHECKPOINT_LIMBO, wait_until(assigned, stop_wanted)).await;
                let mut s = match told {
                    Ok(()) => status(TaskState::Shutdown, "checkpointed"),
                    Err(_) => TaskStatus {
                        err: "stopped by a checkpoint, but the managers never moved it".into(),
                        ..status(TaskState::Failed, "checkpointed")
                    },
                };
                s.runtime_id = handle.runtime_id.clone();
                s
            }
            Ending::Exited(Ok(x)) => exited(&lt.status, &x),
            Ending::Exited(Err(e)) => TaskStatus {
                err: format!("lost track of the task: {e}"),
                ..status(TaskState::Failed, "lost")
            },
            Ending::Stop | Ending::Unhealthy(_) => {
                let grace = assigned.borrow().spec.stop_grace_period;
                if let Err(e) = driver.stop(handle, grace).await {
                    tracing::warn!(task = %lt.task.id, error = %e, "stopping the task failed");
                }
                let x = wait.await;
                let mut s = match outcome {
                    Ending::Unhealthy(why) => TaskStatus {
                        err: format!("unhealthy: {why}"),
                        health: Some(Health::Unhealthy),
                        ..status(TaskState::Failed, "failed its health check")
                    },
                    _ => status(TaskState::Shutdown, "shut down"),
                };
                s.runtime_id = handle.runtime_id.clone();
                s.exit_code = x.ok().map(|x| x.code);
                s
            }
        }
    }

    /// Runs the task's health check (docker's semantics): every `interval`, the command in the
    /// task's context, killed after `timeout`; `retries` failures in a row make the task
    /// unhealthy, except during `start_period`. Reports each change of health; returns why the
    /// task is unhealthy.
    async fn watch_health(
        &self,
        lt: &LocalTask,
        driver: &dyn Driver,
        handle: &Handle,
        h: &shoal_types::HealthCheck,
        cmd: &[String],
    ) -> String {
        let started = tokio::time::Instant::now();
        let mut current = lt.status.clone();
        current.health = Some(Health::Starting);
        let mut failures = 0u32;
        let mut tick =
            tokio::time::interval_at(started + h.interval, h.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (ok, output) = match driver.exec(handle, cmd, h.timeout).await {
                Ok(r) => (r.exit_code == 0, format!("exit code {}: {}", r.exit_code, r.output.trim())),
                Err(e) => (false, e.to_string()),
            };
            if ok {
                failures = 0;
                if current.health != Some(Health::Healthy) {
                    current.health = Some(Health::Healthy);
                    current.timestamp = now();
                    self.report(&lt.task, &current);
                }
                continue;
            }
            if started.elapsed() < h.start_period {
                continue;
            }
            failures += 1;
            if failures >= h.retries.max(1) {
                return format!("{failures} checks failed in a row; last: {output}");
            }
        }
    }

    /// A task in a final state: its record and files stay (for logs and inspection) until the
    /// managers stop listing it on this node; then the runtime's leftovers go too.
    async fn finished(
        self: Arc<Self>,
        lt: LocalTask,
        driver: Arc<dyn Driver>,
        mut assigned: watch::Receiver<Task>,
    ) {
        while assigned.changed().await.is_ok() {}
        if let Some(h) = &lt.handle {
            if let Err(e) = driver.destroy(h).await {
                tracing::warn!(task = %lt.task.id, error = %e, "cleaning up the task failed");
            }
        }
        self.remove_networking(&lt.task, driver.as_ref()).await;
        // Unmounting and deleting files block: off the runtime's workers.
        let (store, id) = (self.store.clone(), lt.task.id.clone());
        let removed = tokio::task::spawn_blocking(move || {
            shoal_driver::secrets::release(&store.run_dir(&id));
            store.remove(&id)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = removed {
            tracing::warn!(task = %lt.task.id, error = %e, "removing the task's files failed");
        }
        lock(&self.reported).remove(&lt.task.id);
        tracing::debug!(task = %lt.task.id, "task removed from this node");
    }

    /// Removes what a task on networks holds on this node: the driver's part (docker: the infra
    /// container holding the namespace) and the task's namespace. Idempotent.
    async fn remove_networking(&self, task: &Task, driver: &dyn Driver) {
        if task.networks.is_empty() {
            return;
        }
        if let Err(e) = driver.remove_network_namespace(task.id.as_str()).await {
            tracing::warn!(task = %task.id, error = %e, "removing the driver's network namespace failed");
        }
        if let Some(net) = &self.net {
            if let Err(e) = net.detach(task.id.as_str()).await {
                tracing::warn!(task = %task.id, error = %e, "removing the task's network namespace failed");
            }
        }
    }

    /// The node leaves its cluster: every task is stopped (each with its grace period) and its
    /// files and runtime leftovers removed; no new task starts. Returns once nothing is left, or
    /// with the number of tasks still there after `timeout`.
    pub async fn leave(&self, timeout: Duration) -> Result<(), usize> {
        // Dropping a runner's channel means "no longer assigned here": it stops the task if it
        // runs, destroys what the runtime kept and removes the task's directory. Under the
        // runners' lock: a task being recovered right now (a leave during the agent's start)
        // gets no channel at all and stops the same way.
        {
            let mut runners = lock(&self.runners);
            self.leaving.store(true, std::sync::atomic::Ordering::SeqCst);
            runners.clear();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.store.load_all().len();
            if left == 0 {
                if let Some(net) = &self.net {
                    net.remove_all().await;
                }
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(left);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The driver and handle of a task on this node (for logs, stats and exec).
    pub fn task_handle(&self, id: &TaskId) -> Option<(Arc<dyn Driver>, Handle)> {
        let lt = self.store.load_all().into_iter().flatten().find(|lt| &lt.task.id == id)?;
        Some((self.drivers.get(lt.driver.as_str())?.clone(), lt.handle?))
    }

    /// The driver and handle of task `id` for an exec: it must run here (as this agent last
    /// reported it).
    fn running_task_handle(&self, id: &TaskId) -> Result<(Arc<dyn Driver>, Handle), ExecError> {
        let state = lock(&self.reported).get(id).map(|(s, _)| *s);
        match state {
            Some(TaskState::Running) => {}
            Some(state) => return Err(ExecError::NotRunning { task: id.clone(), state }),
            None => return Err(ExecError::NotHere(id.clone())),
        }
        self.task_handle(id).ok_or_else(|| ExecError::NotHere(id.clone()))
    }

    /// Runs `cmd` inside a running task's namespaces through its driver (`shoal task exec`), and
    /// answers with its exit code and output. Only a task this node runs now: one that has not
    /// started yet or has ended is refused with its state.
    pub async fn exec_task(
        &self,
        id: &TaskId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<shoal_driver::ExecResult, ExecError> {
        if cmd.is_empty() {
            return Err(ExecError::EmptyCommand);
        }
        let (driver, handle) = self.running_task_handle(id)?;
        match driver.exec(&handle, cmd, timeout).await {
            Ok(r) => Ok(r),
            // The command itself cannot run (not found, not executable): the operator's input.
            Err(DriverError::Invalid(why)) => Err(ExecError::CannotRun(why)),
            Err(DriverError::NotFound(_)) => Err(ExecError::Ended(id.clone())),
            Err(e) => Err(ExecError::Driver(e)),
        }
    }
}

/// Why [`Agent::exec_task`] ran nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("exec needs a command")]
    EmptyCommand,
    #[error("task {0} is not on this node")]
    NotHere(TaskId),
    #[error("task {task} is not running (state {state})")]
    NotRunning { task: TaskId, state: TaskState },
    /// It ended between the check and the exec (its runtime no longer knows it).
    #[error("task {0} is not running (it has just ended)")]
    Ended(TaskId),
    /// The command cannot be started in the task (not found, not executable).
    #[error("{0}")]
    CannotRun(String),
    #[error("exec failed: {0}")]
    Driver(DriverError),
}

enum Ending {
    Exited(Result<ExitStatus, DriverError>),
    Stop,
    Unhealthy(String),
}

/// The command of a health check: `["CMD", prog, args...]`, `["CMD-SHELL", line]` (through
/// `/bin/sh -c`), or none (`["NONE"]` or empty).
/// One log line per task state change, with the ids an operator greps for.
fn log_state_change(task: &Task, status: &TaskStatus, driver: &str) {
    let node = task.node_id.as_ref().map_or("", |n| n.as_str());
    let (task_id, service, state) = (task.id.as_str(), task.service_id.as_str(), status.state.as_str());
    if status.err.is_empty() {
        tracing::info!(task = task_id, service, node, driver, state, detail = %status.message, "task state");
    } else {
        tracing::warn!(task = task_id, service, node, driver, state, detail = %status.message, error = %status.err, "task state");
    }
}

fn health_command(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
            Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
        }
        _ => None,
    }
}

/// Resolves once `pred` holds for the latest assignment, or when the task is no longer
/// assigned here (the sender is gone): both mean "stop".
async fn wait_until(rx: &mut watch::Receiver<Task>, pred: impl Fn(&watch::Receiver<Task>) -> bool) {
    loop {
        if pred(rx) {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Heartbeats at the period the managers' last answer named (larger clusters heartbeat less
/// often), counted from when the previous one was sent: a slow answer does not push the next
/// one back (the next goes out while it is pending, up to [`HEARTBEATS_IN_FLIGHT`] at once).
/// After a failed one, again after [`HEARTBEAT_INTERVAL`].
async fn heartbeats(plane: Arc<dyn ControlPlane>) {
    let mut period = HEARTBEAT_INTERVAL;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let sent = tokio::time::Instant::now();
        let p = plane.clone();
        in_flight.spawn(async move { p.heartbeat().await });
        loop {
            let answered = tokio::select! {
                _ = tokio::time::sleep_until(sent + period), if in_flight.len() < HEARTBEATS_IN_FLIGHT => break,
                Some(r) = in_flight.join_next() => r,
            };
            match answered {
                Ok(Ok(p)) => period = p.clamp(HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "heartbeat not delivered");
                    period = HEARTBEAT_INTERVAL;
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat task failed"),
            }
        }
    }
}

/// Sends status reports in batches: everything that arrived while the previous batch was in
/// flight goes in the next one, only the newest status of each task, retried until delivered.
async fn reporter(plane: Arc<dyn ControlPlane>, mut rx: mpsc::UnboundedReceiver<StatusReport>) {
    let mut pending: BTreeMap<TaskId, TaskStatus> = BTreeMap::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(r) => {
                    pending.insert(r.task_id, r.status);
                }
                None => return,
            }
        }
        while let Ok(r) = rx.try_recv() {
            pending.insert(r.task_id, r.status);
        }
        let batch: Vec<StatusReport> =
            pending.iter().map(|(k, v)| StatusReport { task_id: k.clone(), status: v.clone() }).collect();
        match plane.report(batch.clone()).await {
            Ok(()) => {
                for r in batch {
                    if pending.get(&r.task_id) == Some(&r.status) {
                        pending.remove(&r.task_id);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "status report not delivered; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
