//! fleet's placement rules between services: `conflicts` (anti-affinity by name glob, either
//! side's rule applies, the service itself included) and `colocate` (only where named services
//! run). The scheduler, plan verification and the orchestrators' "must this task move" check
//! all ask here, with the services present on a node.

use shoal_state::ClusterState;
use shoal_types::{glob_match, Placement, ServiceId};

/// Why a node is ruled out by these rules.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rule {
    /// Conflicts with a task of this service (by name) already there.
    Conflict(String),
    /// A service this one must run next to is not there.
    Colocate(String),
}

impl Rule {
    pub fn describe(&self) -> String {
        match self {
            Rule::Conflict(other) => format!("conflicts with {other}"),
            Rule::Colocate(target) => format!("{target} not running there"),
        }
    }
}

/// Whether any service in `state` has conflicts, so that services without rules of their own
/// can skip the check.
pub(crate) fn anyone_conflicts(state: &ClusterState) -> bool {
    state.services().any(|s| !s.spec.task_template.placement.conflicts.is_empty())
}

/// Checks `me` (with placement `p`) against the services with tasks on a node (`present`,
/// `me` included when its own tasks are there).
pub(crate) fn check<'a>(
    state: &ClusterState,
    me: &ServiceId,
    p: &Placement,
    anyone_conflicts: bool,
    present: impl Iterator<Item = &'a ServiceId> + Clone,
) -> Result<(), Rule> {
    let my_spec = state.service(me).map(|s| &s.spec);
    if !p.conflicts.is_empty() || anyone_conflicts {
        for other in present.clone() {
            let Some(o) = state.service(other) else { continue };
            let mine = o.spec.placement_names().any(|n| p.conflicts.iter().any(|g| glob_match(g, n)));
            let theirs = my_spec.is_some_and(|me| {
                let globs = &o.spec.task_template.placement.conflicts;
                !globs.is_empty() && me.placement_names().any(|n| globs.iter().any(|g| glob_match(g, n)))
            });
            if mine || theirs {
                return Err(Rule::Conflict(o.spec.name.clone()));
            }
        }
    }
    for target in &p.colocate {
        let there = present.clone().any(|s| {
            s != me && state.service(s).is_some_and(|o| o.spec.placement_names().any(|n| n == target))
        });
        if !there {
            return Err(Rule::Colocate(target.clone()));
        }
    }
    Ok(())
}
