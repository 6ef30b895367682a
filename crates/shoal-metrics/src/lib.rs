//! Shoal's Prometheus metrics: one registry per daemon process, holding every family the
//! control plane (Raft, scheduler, dispatcher, API) and the node agent record into. The daemon
//! serves it as OpenMetrics text on `/metrics`.
//!
//! Counters and histograms are recorded where things happen; gauges that describe the cluster
//! state (tasks by state, nodes by state, unplaceable tasks) are set from a state snapshot just
//! before each scrape ([`Metrics::encode_with`]), so they can never drift from the store.
//!
//! Label values are bounded: routes are the API's route templates (not raw paths), drivers and
//! states are small enums, and scheduler reasons have their node counts stripped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The content type of [`Metrics::encode_with`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriverLabels {
    pub driver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub state: String,
    pub driver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

type Hist = Family<RouteLabels, Histogram, fn() -> Histogram>;
type DriverHist = Family<DriverLabels, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.5 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric family Shoal records. Get the process's instance with [`metrics`].
pub struct Metrics {
    registry: Registry,
    /// Serialises "refresh the state gauges, then encode" between concurrent scrapes.
    scrape: Mutex<()>,

    // Raft (managers).
    pub raft_term: Gauge,
    pub raft_last_log_index: Gauge,
    pub raft_commit_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_leader_changes: Counter,
    pub raft_apply_seconds: Histogram,

    // Scheduler and orchestrators (the leader).
    pub scheduler_placements: Counter,
    pub scheduler_plan_seconds: Histogram,
    pub scheduler_plan_commit_seconds: Histogram,
    pub scheduler_unplaceable: Family<ReasonLabels, Gauge>,
    pub task_restarts: Counter,

    // Dispatcher.
    pub nodes: Family<StateLabels, Gauge>,
    pub dispatcher_heartbeats: Counter,
    pub dispatcher_missed_heartbeats: Counter,

    // Cluster state.
    pub tasks: Family<TaskLabels, Gauge>,
    pub services: Gauge,

    // API.
    pub api_request_seconds: Hist,

    // Agent.
    pub agent_task_start_seconds: DriverHist,
    pub agent_tasks_running: Family<DriverLabels, Gauge>,
    pub agent_task_state_changes: Family<StateLabels, Counter>,

    // Live migration (the coordinating manager).
    pub migrations: Family<ResultLabels, Counter>,
    pub migration_downtime_seconds: Histogram,
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("shoal");
        let m = Metrics {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            raft_term: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_leader_changes: Counter::default(),
            raft_apply_seconds: latency(),
            scheduler_placements: Counter::default(),
            scheduler_plan_seconds: latency(),
            scheduler_plan_commit_seconds: latency(),
            scheduler_unplaceable: Family::default(),
            task_restarts: Counter::default(),
            nodes: Family::default(),
            dispatcher_heartbeats: Counter::default(),
            dispatcher_missed_heartbeats: Counter::default(),
            tasks: Family::default(),
            services: Gauge::default(),
            api_request_seconds: Family::new_with_constructor(latency),
            agent_task_start_seconds: Family::new_with_constructor(latency),
            agent_tasks_running: Family::default(),
            agent_task_state_changes: Family::default(),
            migrations: Family::default(),
            migration_downtime_seconds: latency(),
        };
        r.register("raft_term", "Raft term this manager is in", m.raft_term.clone());
        r.register(
            "raft_last_log_index",
            "Index of the last entry in this manager's Raft log",
            m.raft_last_log_index.clone(),
        );
        r.register(
            "raft_commit_index",
            "Highest Raft log index known to be committed",
            m.raft_commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Highest Raft log index applied to the state machine",
            m.raft_applied_index.clone(),
        );
        r.register("raft_is_leader", "1 when this manager is the Raft leader", m.raft_is_leader.clone());
        r.register(
            "raft_leader_changes",
            "Times this manager saw the Raft leader change",
            m.raft_leader_changes.clone(),
        );
        r.register(
            "raft_apply_seconds",
            "Time from proposing a write to its application on this manager",
            m.raft_apply_seconds.clone(),
        );
        r.register(
            "scheduler_placements",
            "Tasks placed on a node by the scheduler",
            m.scheduler_placements.clone(),
        );
        r.register(
            "scheduler_plan_seconds",
            "Time to compute one orchestrator and scheduler pass",
            m.scheduler_plan_seconds.clone(),
        );
        r.register(
            "scheduler_plan_commit_seconds",
            "Time to verify and commit a plan through Raft",
            m.scheduler_plan_commit_seconds.clone(),
        );
        r.register(
            "scheduler_unplaceable_tasks",
            "Tasks waiting for a node, by the scheduler's reason",
            m.scheduler_unplaceable.clone(),
        );
        r.register("task_restarts", "Tasks replaced by their restart policy", m.task_restarts.clone());
        r.register("nodes", "Nodes by status", m.nodes.clone());
        r.register(
            "dispatcher_heartbeats",
            "Node heartbeats received by this manager",
            m.dispatcher_heartbeats.clone(),
        );
        r.register(
            "dispatcher_missed_heartbeats",
            "Nodes marked down because their heartbeats stopped",
            m.dispatcher_missed_heartbeats.clone(),
        );
        r.register("tasks", "Tasks in the cluster state by state and driver", m.tasks.clone());
        r.register("services", "Services in the cluster state", m.services.clone());
        r.register(
            "api_request_seconds",
            "API request latency by method, route and status",
            m.api_request_seconds.clone(),
        );
        r.register(
            "agent_task_start_seconds",
            "Time the node's driver took to start a task, by driver",
            m.agent_task_start_seconds.clone(),
        );
        r.register(
            "agent_tasks_running",
            "Tasks running on this node, by driver",
            m.agent_tasks_running.clone(),
        );
        r.register(
            "agent_task_state_changes",
            "Task state changes this node's agent reported, by new state",
            m.agent_task_state_changes.clone(),
        );
        r.register(
            "migrations",
            "Task migrations this manager coordinated: moved, restored_at_home (failed after the \
             checkpoint), lost (failed and not restored)",
            m.migrations.clone(),
        );
        r.register(
            "migration_downtime_seconds",
            "From the checkpoint to the restored task running, for migrations that moved",
            m.migration_downtime_seconds.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Runs `refresh` (which sets the state gauges), then encodes every family as OpenMetrics text.
    pub fn encode_with(&self, refresh: impl FnOnce(&Metrics)) -> String {
        let _one = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        refresh(self);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let labels = RouteLabels { method: method.to_string(), route: route.to_string(), status };
        self.api_request_seconds.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn count_migration(&self, result: &str) {
        self.migrations.get_or_create(&ResultLabels { result: result.to_string() }).inc();
    }

    pub fn observe_task_start(&self, driver: &str, took: Duration) {
        self.agent_task_start_seconds
            .get_or_create(&DriverLabels { driver: driver.to_string() })
            .observe(took.as_secs_f64());
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// The reasons in a scheduler explanation, without their node counts, for a bounded label:
/// `no suitable node (insufficient memory on 3 nodes; node is drain on 1 node)` gives
/// `insufficient memory` and `node is drain`.
pub fn unplaceable_reasons(err: &str) -> Vec<String> {
    let body = err.strip_prefix("no suitable node (").and_then(|b| b.strip_suffix(')')).unwrap_or(err);
    body.split("; ")
        .map(|part| match part.rsplit_once(" on ") {
            Some((what, count)) if count.ends_with(" node") || count.ends_with(" nodes") => what.to_string(),
            _ => part.to_string(),
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// A gauge value from a count (saturating).
pub fn as_gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_lose_their_counts() {
        assert_eq!(
            unplaceable_reasons("no suitable node (insufficient memory on 3 nodes; node is drain on 1 node)"),
            vec!["insufficient memory", "node is drain"]
        );
        assert_eq!(unplaceable_reasons("no suitable node"), vec!["no suitable node"]);
        assert_eq!(
            unplaceable_reasons("no suitable node (no nodes in the cluster)"),
            vec!["no nodes in the cluster"]
        );
    }

    #[test]
    fn encodes_openmetrics_with_every_family() {
        let m = metrics();
        m.observe_request("GET", "/v1/nodes", 200, Duration::from_millis(3));
        m.observe_task_start("process", Duration::from_millis(12));
        let text = m.encode_with(|m| {
            m.tasks.clear();
            m.tasks.get_or_create(&TaskLabels { state: "running".into(), driver: "oci".into() }).set(4);
        });
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("shoal_tasks{state=\"running\",driver=\"oci\"} 4"), "{text}");
        assert!(text.contains(
            "shoal_api_request_seconds_count{method=\"GET\",route=\"/v1/nodes\",status=\"200\"} 1"
        ));
        assert!(text.contains("# TYPE shoal_raft_leader_changes counter"), "{text}");
        assert!(
            text.contains("shoal_agent_task_start_seconds_bucket{le=\"0.016\",driver=\"process\"} 1"),
            "{text}"
        );
    }
}
