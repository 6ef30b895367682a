//! What the dispatcher's long polls wait on. One reader of the state machine's events wakes
//! only the polls an event concerns: a node's assignments poll when one of its tasks or its node
//! object changed, the network views when something that may change them did. Before, each of a
//! thousand polls read every event itself, so every task change woke a thousand tasks
//! (BENCHMARKS.md, the load test: heartbeats then waited seconds for a worker thread).

use shoal_state::Object;
use shoal_types::NodeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{broadcast, watch};

/// Change counters: one per node that has a poll waiting (or had one), one for network views.
#[derive(Default)]
pub struct Changes {
    nodes: Mutex<NodeCounters>,
    net: watch::Sender<u64>,
}

/// The per-node counters, and the size at which those nobody waits for are next dropped.
#[derive(Default)]
struct NodeCounters {
    map: HashMap<NodeId, watch::Sender<u64>>,
    sweep_at: usize,
}

/// The fewest counters kept before any is dropped.
const SWEEP_MIN: usize = 64;

impl Changes {
    /// Changes to `node`'s tasks or node object from now on. Take it before reading the state:
    /// a change between the read and the wait is then not missed.
    pub fn node(&self, node: &NodeId) -> watch::Receiver<u64> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let NodeCounters { map, sweep_at } = &mut *nodes;
        // Forget the counters of nodes nobody waits for (removed nodes, workers gone) once the
        // map has doubled since the last sweep: amortized O(1) per poll whatever the size.
        if map.len() >= (*sweep_at).max(SWEEP_MIN) {
            map.retain(|_, s| s.receiver_count() > 0);
            *sweep_at = map.len().saturating_mul(2);
        }
        map.entry(node.clone()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Changes that may alter a node's network view (nodes, networks, services, tasks on
    /// networks) from now on.
    pub fn net(&self) -> watch::Receiver<u64> {
        self.net.subscribe()
    }

    fn bump(s: &watch::Sender<u64>) {
        s.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn bump_node(&self, node: &NodeId) {
        if let Some(s) = self.nodes.lock().unwrap_or_else(PoisonError::into_inner).map.get(node) {
            Self::bump(s);
        }
    }

    fn bump_all(&self) {
        for s in self.nodes.lock().unwrap_or_else(PoisonError::into_inner).map.values() {
            Self::bump(s);
        }
        Self::bump(&self.net);
    }

    /// Routes one event to the counters it concerns.
    pub(crate) fn route(&self, object: &Object) {
        match object {
            Object::Task(t) => {
                if let Some(n) = &t.node_id {
                    self.bump_node(n);
                }
                if !t.networks.is_empty() {
                    Self::bump(&self.net);
                }
            }
            Object::Node(n) => {
                self.bump_node(&n.id);
                Self::bump(&self.net);
            }
            Object::Service(_) | Object::Network(_) | Object::Secret(_) => Self::bump(&self.net),
        }
    }
}

/// Reads the state machine's events until `stop`, routing each; a reader that fell behind
/// wakes every poll (each then reads the state afresh).
pub(crate) async fn fan_out(
    changes: Arc<Changes>,
    mut events: broadcast::Receiver<Arc<shoal_state::Event>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => changes.route(&ev.object),
                Err(broadcast::error::RecvError::Lagged(_)) => changes.bump_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::{Node, Task};

    fn task_on(node: &str, networks: bool) -> Object {
        let nets = if networks { serde_json::json!([{"network_id": "n1"}]) } else { serde_json::json!([]) };
        let t: Task = serde_json::from_value(serde_json::json!({
            "id": "t1", "version": 1, "created_at": "1970-01-01T00:00:00Z",
            "updated_at": "1970-01-01T00:00:00Z", "service_id": "s1",
            "node_id": node, "spec": {}, "spec_version": 1, "desired_state": "running",
            "status": {}, "networks": nets,
        }))
        .expect("a task");
        Object::Task(Box::new(t))
    }

    #[test]
    fn an_event_wakes_only_the_node_it_concerns() {
        let c = Changes::default();
        let mut a = c.node(&NodeId::new("a"));
        let mut b = c.node(&NodeId::new("b"));
        let mut net = c.net();
        c.route(&task_on("a", false));
        assert!(a.has_changed().expect("open"));
        assert!(!b.has_changed().expect("open"), "b's poll woke for a's task");
        assert!(!net.has_changed().expect("open"), "a task on no network changes no view");
        a.mark_unchanged();
        c.route(&task_on("b", true));
        assert!(b.has_changed().expect("open") && net.has_changed().expect("open"));
        assert!(!a.has_changed().expect("open"));
        b.mark_unchanged();
        net.mark_unchanged();
        c.route(&Object::Node(Box::new(Node::test("a", "ha"))));
        assert!(a.has_changed().expect("open") && net.has_changed().expect("open"));
        assert!(!b.has_changed().expect("open"));
    }

    #[test]
    fn counters_nobody_waits_for_are_dropped_as_the_map_doubles_and_only_then() {
        let c = Changes::default();
        let size = || c.nodes.lock().expect("lock").map.len();
        // 100 nodes keep polling (their receivers stay alive).
        let live: Vec<_> = (0..100).map(|i| c.node(&NodeId::new(format!("live{i}")))).collect();
        // Polls at a steady size sweep nothing and keep the threshold: no O(n) pass per poll.
        let before = c.nodes.lock().expect("lock").sweep_at;
        for _ in 0..1000 {
            drop(c.node(&NodeId::new("live0")));
        }
        assert_eq!(c.nodes.lock().expect("lock").sweep_at, before);
        // 10,000 nodes come and go: the map stays within twice the live ones (plus one sweep's growth).
        for i in 0..10_000 {
            drop(c.node(&NodeId::new(format!("gone{i}"))));
            assert!(size() <= 2 * live.len() + 1, "{} counters for {} live polls", size(), live.len());
        }
        // The live ones kept their counters: a change still wakes them.
        c.route(&task_on("live7", false));
        assert!(live[7].has_changed().expect("open"));
    }

    #[test]
    fn falling_behind_wakes_everyone() {
        let c = Changes::default();
        let (a, b, net) = (c.node(&NodeId::new("a")), c.node(&NodeId::new("b")), c.net());
        c.bump_all();
        for rx in [a, b, net] {
            assert!(rx.has_changed().expect("open"));
        }
    }
}
