//! Where a running task may move with its state (checkpoint/restore): pure, like the scheduler.

use crate::scheduler::Scheduler;
use shoal_state::ClusterState;
use shoal_types::{NodeId, Task, TaskState};

/// The capability a node's driver reports when CRIU works there.
pub const CHECKPOINT: &str = "checkpoint";

/// Why `task` cannot be checkpointed where it is, if it cannot.
pub fn check_source(state: &ClusterState, task: &Task) -> Result<NodeId, String> {
    if task.slot.is_none() {
        return Err("only replicated tasks migrate (a global task belongs to its node)".into());
    }
    if task.desired_state != TaskState::Running || task.status.state != TaskState::Running {
        return Err(format!(
            "the task is {} (desired {}), not running",
            task.status.state, task.desired_state
        ));
    }
    if !task.spec.secrets.is_empty() || !task.spec.configs.is_empty() {
        // Their files are binds from a tmpfs of the source node, which a checkpoint cannot carry
        // without writing the secrets into the checkpoint's files.
        return Err("a task with secrets or configs cannot be checkpointed (their files would end up in \
                    the checkpoint on disk): update the service instead"
            .into());
    }
    let Some(node_id) = task.node_id.clone() else { return Err("the task has no node".into()) };
    let node = state.node(&node_id).ok_or_else(|| format!("node {node_id} no longer exists"))?;
    if !can_checkpoint(node, task) {
        return Err(format!(
            "node {} cannot checkpoint this task: none of its drivers ({}) reports the checkpoint capability \
             (CRIU >= 4 and `criu check`: scripts/install-criu.sh)",
            node.description.hostname,
            task.spec.driver_candidates().join(" or ")
        ));
    }
    Ok(node_id)
}

/// Whether one of the drivers that may run `task` can checkpoint on `node`.
pub fn can_checkpoint(node: &shoal_types::Node, task: &Task) -> bool {
    let wanted = task.spec.driver_candidates();
    node.description
        .drivers
        .iter()
        .any(|d| wanted.contains(&d.name.as_str()) && d.capabilities.iter().any(|c| c == CHECKPOINT))
}

/// The node `task` should move to: `to` when given and suitable, else the suitable node with the
/// fewest tasks (ties by id). Suitable: not its own node, able to restore it (a checkpoint-capable
/// driver), and what the scheduler would accept (ready, active, constraints, ports, resources).
/// The error explains every candidate's reason.
pub fn target(state: &ClusterState, task: &Task, to: Option<&NodeId>) -> Result<NodeId, String> {
    let source = check_source(state, task)?;
    let mut candidates: Vec<(usize, &NodeId)> = state
        .nodes()
        .filter(|n| to.is_none_or(|t| *t == n.id))
        .map(|n| (state.tasks_on_node(&n.id).filter(|t| t.holds_resources()).count(), &n.id))
        .collect();
    if candidates.is_empty() {
        return Err(match to {
            Some(t) => format!("node {t} does not exist"),
            None => "no other node in the cluster".into(),
        });
    }
    candidates.sort();
    let mut sched = Scheduler::new(state);
    let mut why: Vec<String> = Vec::new();
    for (_, id) in candidates {
        let Some(node) = state.node(id) else { continue };
        let name = &node.description.hostname;
        if *id == source {
            why.push(format!("{name}: the task runs there"));
            continue;
        }
        if !can_checkpoint(node, task) {
            why.push(format!("{name}: no driver there can restore a checkpoint"));
            continue;
        }
        match sched.fits(task, id) {
            Ok(()) => return Ok(id.clone()),
            Err(e) => why.push(format!("{name}: {e}")),
        }
    }
    Err(format!("no node can take the task ({})", why.join("; ")))
}
