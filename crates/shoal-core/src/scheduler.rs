//! The scheduler: places tasks on nodes.
//!
//! Tasks are placed in groups of identical spec — (service, spec_version) — so the static filters
//! (readiness, availability, driver, constraints, host ports) run once per node per group. The
//! nodes that pass go into an ordered pool keyed by the strategy (spread, binpack) or a vector
//! (random); each placement pops the best node, re-checks the dynamic filters (resources, max
//! replicas per node, ports) and puts it back with its new key, so one placement costs O(log n).
//! Placement preferences build a small tree of pools keyed by label values and descend it towards
//! the branch with the fewest tasks of the service.
//!
//! The scheduler never fails: a task it cannot place gets an explanation that counts, per reason,
//! how many nodes were ruled out ("insufficient memory on 3 nodes").
//!
//! Ports published through the routing mesh (`mode=ingress`) are not host ports: they are
//! reserved cluster-wide when the service is created, so they never rule out a node. A task that
//! still needs an address on one of its networks is placed only while the network has one left
//! for it (counting what this pass placed): otherwise it stays pending with `no free address in
//! network NAME`, as apply would refuse the placement.

use crate::rng::Rng;
use shoal_state::ClusterState;
use shoal_types::{
    Availability, Constraint, NetworkId, Node, NodeId, NodeState, Protocol, Resources, ServiceId, Shortfall,
    Strategy, Task, TaskId,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// The outcome for one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub task_id: TaskId,
    pub outcome: Result<NodeId, String>,
}

/// Why a node was ruled out for a task. Ordered so explanations list reasons deterministically.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reject {
    NotReady(NodeState),
    Availability(Availability),
    Driver(String),
    Constraint(String),
    /// The task's image was rejected there as on no node (`image not found`) and no node
    /// reports it.
    Image(String),
    Port(Protocol, u16),
    MaxReplicas(u64),
    Rule(crate::affinity::Rule),
    Resources(Shortfall),
}

impl Reject {
    fn describe(&self) -> String {
        match self {
            Reject::NotReady(s) => format!("node {s:?}").to_lowercase(),
            Reject::Availability(a) => format!("availability {a:?}").to_lowercase(),
            Reject::Driver(d) => format!("driver {d} not available"),
            Reject::Constraint(c) => format!("constraint {c} not satisfied"),
            Reject::Image(i) => format!("image {i} not there and no peer has it"),
            Reject::Port(p, n) => format!("host port {n}/{} in use", format!("{p:?}").to_lowercase()),
            Reject::MaxReplicas(m) => format!("max replicas per node ({m}) reached"),
            Reject::Rule(r) => r.describe(),
            Reject::Resources(s) => s.to_string(),
        }
    }
}

/// Counts of rejection reasons, rendered as the scheduler's explanation.
#[derive(Default)]
struct Explanation(BTreeMap<Reject, u64>);

impl Explanation {
    fn add(&mut self, r: Reject) {
        *self.0.entry(r).or_insert(0) += 1;
    }

    fn render(&self, nodes_total: usize) -> String {
        if nodes_total == 0 {
            return "no suitable node (no nodes in the cluster)".into();
        }
        let mut parts: Vec<(u64, String)> = self.0.iter().map(|(r, &n)| (n, r.describe())).collect();
        // Most common reason first; ties in reason order (already sorted).
        parts.sort_by_key(|p| Reverse(p.0));
        let body: Vec<String> = parts
            .into_iter()
            .map(|(n, what)| format!("{what} on {n} node{}", if n == 1 { "" } else { "s" }))
            .collect();
        if body.is_empty() {
            "no suitable node".into()
        } else {
            format!("no suitable node ({})", body.join("; "))
        }
    }
}

/// Per-node bookkeeping for one scheduling pass: the state's usage plus what this pass placed.
struct NodeInfo<'s> {
    node: &'s Node,
    usage: &'s shoal_state::NodeUsage,
    available: Resources,
    tasks: u64,
    placed_by_service: BTreeMap<ServiceId, u64>,
    placed_ports: Vec<(Protocol, u16)>,
}

/// A pass over one consistent state. Reuse it for several batches to keep earlier placements.
pub struct Scheduler<'s> {
    state: &'s ClusterState,
    infos: Vec<NodeInfo<'s>>,
    by_id: BTreeMap<&'s NodeId, u32>,
    /// Free addresses per network, less those this pass's placements will take.
    addresses: BTreeMap<NetworkId, u64>,
    /// Whether some service has `conflicts` (else services without rules skip the check).
    anyone_conflicts: bool,
}

/// The static part of a group's requirements.
struct GroupSpec<'t> {
    service: &'t ServiceId,
    drivers: Vec<&'t str>,
    constraints: Vec<Constraint>,
    ports: Vec<(Protocol, u16)>,
    reservation: &'t Resources,
    max_per_node: u64,
    strategy: Strategy,
    preferences: Vec<&'t str>,
    placement: &'t shoal_types::Placement,
    /// The oci image of the group's tasks when the oci driver may run them.
    image: Option<&'t str>,
    /// Whether some node reports that image: nodes that have it are preferred (a node without
    /// it can still fetch it from one that does).
    image_somewhere: bool,
    /// Nodes that rejected a task of the service for that image while no node has it.
    avoid: BTreeSet<NodeId>,
}

impl<'t> GroupSpec<'t> {
    fn of(task: &'t Task) -> Result<Self, String> {
        let p = &task.spec.placement;
        let constraints = Constraint::parse_all(&p.constraints).map_err(|e| e.to_string())?;
        Ok(GroupSpec {
            service: &task.service_id,
            drivers: task.spec.driver_candidates(),
            constraints,
            ports: task.endpoint.host_ports().collect(),
            reservation: &task.spec.resources.reservations,
            max_per_node: p.max_replicas_per_node,
            strategy: p.strategy,
            preferences: p.preferences.iter().map(|x| x.spread.as_str()).collect(),
            placement: p,
            image: task.spec.image.as_deref().filter(|_| task.spec.driver_candidates().contains(&"oci")),
            image_somewhere: false,
            avoid: BTreeSet::new(),
        })
    }
}

impl<'s> Scheduler<'s> {
    pub fn new(state: &'s ClusterState) -> Self {
        let mut infos = Vec::with_capacity(state.nodes().len());
        let mut by_id = BTreeMap::new();
        for (i, node) in state.nodes().enumerate() {
            let u = state.usage(&node.id);
            infos.push(NodeInfo {
                node,
                usage: u,
                available: node.description.resources.minus(&u.reserved),
                tasks: u.tasks,
                placed_by_service: BTreeMap::new(),
                placed_ports: Vec::new(),
            });
            by_id.insert(&node.id, i as u32);
        }
        let anyone_conflicts = crate::affinity::anyone_conflicts(state);
        Scheduler { state, infos, by_id, addresses: BTreeMap::new(), anyone_conflicts }
    }

    /// Counts an address on every network `t` still needs one on against what is left this
    /// pass; when one has none left, nothing is taken and the reason comes back.
    fn take_addresses(&mut self, t: &Task) -> Result<Vec<NetworkId>, String> {
        let state = self.state;
        let need: Vec<NetworkId> =
            state.addresses_needed(t).into_iter().filter(|id| state.network(id).is_some()).collect();
        for id in &need {
            let left = *self.addresses.entry(id.clone()).or_insert_with(|| state.free_addresses(id));
            if left == 0 {
                return Err(state.no_free_address(id));
            }
        }
        for id in &need {
            if let Some(left) = self.addresses.get_mut(id) {
                *left -= 1;
            }
        }
        Ok(need)
    }

    /// A task that was not placed after all does not keep its addresses.
    fn give_back_addresses(&mut self, taken: &[NetworkId]) {
        for id in taken {
            if let Some(left) = self.addresses.get_mut(id) {
                *left += 1;
            }
        }
    }

    fn service_count(&self, i: usize, svc: &ServiceId) -> u64 {
        let info = &self.infos[i];
        self.state.usage(&info.node.id).of_service(svc)
            + info.placed_by_service.get(svc).copied().unwrap_or(0)
    }

    fn port_in_use(&self, i: usize, ports: &[(Protocol, u16)]) -> Option<(Protocol, u16)> {
        if ports.is_empty() {
            return None;
        }
        let info = &self.infos[i];
        ports.iter().copied().find(|p| info.usage.host_ports.contains_key(p) || info.placed_ports.contains(p))
    }

    /// Fills in what the group's image asks of the nodes: whether some ready node reports it
    /// (then nodes that have it are preferred), else which nodes to avoid — those where a task of
    /// the service with this image was rejected because neither the node nor a peer had it.
    /// The avoidance lasts while such a task is in the service's history and no node reports the
    /// image; state-based, so a new leader decides the same.
    fn image_rules(&self, g: &mut GroupSpec<'_>) {
        let Some(image) = g.image else { return };
        g.image_somewhere = self
            .infos
            .iter()
            .any(|i| i.node.status.state == NodeState::Ready && i.node.description.has_image(image));
        if g.image_somewhere {
            return;
        }
        g.avoid = self
            .state
            .tasks_of_service(g.service)
            .filter(|t| t.spec.image.as_deref() == Some(image))
            .filter(|t| t.status.state.is_terminal() && shoal_types::node::is_image_not_found(&t.status.err))
            .filter_map(|t| t.node_id.clone())
            .collect();
    }

    /// Filters that do not change while a group is placed.
    fn static_check(&self, i: usize, g: &GroupSpec<'_>) -> Result<(), Reject> {
        let n = self.infos[i].node;
        if n.status.state != NodeState::Ready {
            return Err(Reject::NotReady(n.status.state));
        }
        if n.spec.availability != Availability::Active {
            return Err(Reject::Availability(n.spec.availability));
        }
        if !g.drivers.iter().any(|d| n.description.driver(d).is_some()) {
            return Err(Reject::Driver(g.drivers.join("|")));
        }
        if let Some(c) = g.constraints.iter().find(|c| !c.matches(n)) {
            return Err(Reject::Constraint(c.to_string()));
        }
        if let Some(image) = g.image.filter(|_| g.avoid.contains(&n.id)) {
            return Err(Reject::Image(image.to_string()));
        }
        Ok(())
    }

    /// Filters that change as tasks land on the node.
    fn dynamic_check(&self, i: usize, g: &GroupSpec<'_>) -> Result<(), Reject> {
        if let Some((p, n)) = self.port_in_use(i, &g.ports) {
            return Err(Reject::Port(p, n));
        }
        if g.max_per_node > 0 && self.service_count(i, g.service) >= g.max_per_node {
            return Err(Reject::MaxReplicas(g.max_per_node));
        }
        if self.anyone_conflicts || !g.placement.colocate.is_empty() {
            let info = &self.infos[i];
            let present = info.usage.by_service.keys().chain(info.placed_by_service.keys());
            crate::affinity::check(self.state, g.service, g.placement, self.anyone_conflicts, present)
                .map_err(Reject::Rule)?;
        }
        self.infos[i].available.fits(g.reservation).map_err(Reject::Resources)
    }

    fn commit(&mut self, i: usize, g: &GroupSpec<'_>) {
        let info = &mut self.infos[i];
        info.available.sub(g.reservation);
        info.tasks += 1;
        match info.placed_by_service.get_mut(g.service) {
            Some(c) => *c += 1,
            None => {
                info.placed_by_service.insert(g.service.clone(), 1);
            }
        }
        info.placed_ports.extend(g.ports.iter().copied());
    }

    /// Places `tasks` (those needing placement), in groups of identical spec. Deterministic for a
    /// given state, task list and RNG state.
    pub fn schedule<'t>(
        &mut self,
        tasks: impl IntoIterator<Item = &'t Task>,
        rng: &mut Rng,
    ) -> Vec<Decision> {
        let mut groups: BTreeMap<(&ServiceId, u64), Vec<&Task>> = BTreeMap::new();
        let mut bound: Vec<&Task> = Vec::new();
        for t in tasks {
            if t.node_id.is_some() {
                bound.push(t);
            } else {
                groups.entry((&t.service_id, t.spec_version)).or_default().push(t);
            }
        }
        let mut out = Vec::new();
        for t in bound {
            out.push(self.place_bound(t));
        }
        for (_, tasks) in groups {
            self.place_group(&tasks, rng, &mut out);
        }
        out
    }

    /// Whether `t` could run on `node` now (readiness, availability, driver, constraints,
    /// ports, max replicas, resources), with the reason when not.
    pub fn fits(&mut self, t: &Task, node: &NodeId) -> Result<(), String> {
        let mut t = t.clone();
        t.node_id = Some(node.clone());
        self.place_bound(&t).outcome.map(|_| ())
    }

    /// A task whose node is fixed (global services): check that node only.
    fn place_bound(&mut self, t: &Task) -> Decision {
        let task_id = t.id.clone();
        let Some(node_id) = t.node_id.as_ref() else {
            return Decision { task_id, outcome: Err("no node".into()) };
        };
        let mut g = match GroupSpec::of(t) {
            Ok(g) => g,
            Err(e) => return Decision { task_id, outcome: Err(e) },
        };
        self.image_rules(&mut g);
        let Some(&i) = self.by_id.get(node_id) else {
            return Decision { task_id, outcome: Err(format!("node {node_id} no longer exists")) };
        };
        let i = i as usize;
        let taken = match self.take_addresses(t) {
            Ok(taken) => taken,
            Err(why) => return Decision { task_id, outcome: Err(why) },
        };
        match self.static_check(i, &g).and_then(|()| self.dynamic_check(i, &g)) {
            Ok(()) => {
                self.commit(i, &g);
                Decision { task_id, outcome: Ok(node_id.clone()) }
            }
            Err(r) => {
                self.give_back_addresses(&taken);
                let mut e = Explanation::default();
                e.add(r);
                Decision { task_id, outcome: Err(e.render(1)) }
            }
        }
    }

    fn place_group(&mut self, tasks: &[&Task], rng: &mut Rng, out: &mut Vec<Decision>) {
        let Some(first) = tasks.first() else { return };
        let mut g = match GroupSpec::of(first) {
            Ok(g) => g,
            Err(e) => {
                out.extend(tasks.iter().map(|t| Decision { task_id: t.id.clone(), outcome: Err(e.clone()) }));
                return;
            }
        };
        self.image_rules(&mut g);
        let mut why = Explanation::default();
        let mut tree = Tree::new();
        let mut pools: Vec<Pool> = Vec::new();
        for i in 0..self.infos.len() {
            if let Err(r) = self.static_check(i, &g).and_then(|()| self.dynamic_check(i, &g)) {
                why.add(r);
                continue;
            }
            let path: Vec<&str> = g.preferences.iter().map(|p| label_value(self.infos[i].node, p)).collect();
            let count = self.service_count(i, g.service);
            let leaf = tree.leaf_for(&path, &mut pools, g.strategy);
            tree.add_count(leaf, count);
            let key = self.key(i, &g, rng.next_u64());
            pools[tree.branches[leaf].pool].insert(key);
        }
        for t in tasks {
            let taken = match self.take_addresses(t) {
                Ok(taken) => taken,
                Err(why) => {
                    out.push(Decision { task_id: t.id.clone(), outcome: Err(why) });
                    continue;
                }
            };
            let placed = loop {
                let Some(leaf) = tree.choose() else { break None };
                let pool = tree.branches[leaf].pool;
                let Some(key) = pools[pool].take(rng) else {
                    tree.exhaust(leaf);
                    continue;
                };
                let i = key.node as usize;
                match self.dynamic_check(i, &g) {
                    Ok(()) => {
                        self.commit(i, &g);
                        tree.add_count(leaf, 1);
                        // Still a candidate for the next task of the group unless now unusable.
                        match self.dynamic_check(i, &g) {
                            Ok(()) => pools[pool].insert(self.key(i, &g, key.tie)),
                            Err(r) => why.add(r),
                        }
                        break Some(self.infos[i].node.id.clone());
                    }
                    Err(r) => why.add(r),
                }
            };
            if placed.is_none() {
                self.give_back_addresses(&taken);
            }
            let outcome = placed.ok_or_else(|| why.render(self.infos.len()));
            out.push(Decision { task_id: t.id.clone(), outcome });
        }
    }

    fn key(&self, i: usize, g: &GroupSpec<'_>, tie: u64) -> Key {
        let info = &self.infos[i];
        // Among otherwise equal nodes, one that has the image (when some node does) comes first.
        let missing = match g.image {
            Some(image) if g.image_somewhere => u64::from(!info.node.description.has_image(image)),
            _ => 0,
        };
        let primary = match g.strategy {
            Strategy::Spread => (self.service_count(i, g.service), missing, info.tasks),
            Strategy::Binpack => {
                // Most allocated first: invert the score so the smallest key is the fullest node.
                let total = &info.node.description.resources;
                let used = total.minus(&info.available);
                let score = ppm(used.nano_cpus, total.nano_cpus) + ppm(used.memory_bytes, total.memory_bytes);
                (u64::MAX - score, missing, u64::MAX - info.tasks)
            }
            Strategy::Random => (0, 0, 0),
        };
        Key { primary, tie, node: i as u32 }
    }
}

fn ppm(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        ((u128::from(part) * 1_000_000) / u128::from(whole)) as u64
    }
}

fn label_value<'n>(node: &'n Node, pref: &str) -> &'n str {
    let lower = pref.to_ascii_lowercase();
    let found = if lower.starts_with("node.labels.") {
        node.spec.labels.get(&pref["node.labels.".len()..])
    } else if lower.starts_with("engine.labels.") {
        node.description.engine_labels.get(&pref["engine.labels.".len()..])
    } else {
        None
    };
    found.map(String::as_str).unwrap_or("")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    primary: (u64, u64, u64),
    tie: u64,
    node: u32,
}

/// Candidate nodes of one leaf, best first.
enum Pool {
    Ordered(BTreeSet<Key>),
    Random(Vec<Key>),
}

impl Pool {
    fn new(strategy: Strategy) -> Self {
        match strategy {
            Strategy::Random => Pool::Random(Vec::new()),
            _ => Pool::Ordered(BTreeSet::new()),
        }
    }
    fn insert(&mut self, k: Key) {
        match self {
            Pool::Ordered(s) => {
                s.insert(k);
            }
            Pool::Random(v) => v.push(k),
        }
    }
    /// Removes and returns the best candidate (a random one for the random strategy).
    fn take(&mut self, rng: &mut Rng) -> Option<Key> {
        match self {
            Pool::Ordered(s) => s.pop_first(),
            Pool::Random(v) if v.is_empty() => None,
            Pool::Random(v) => {
                let i = rng.below(v.len());
                Some(v.swap_remove(i))
            }
        }
    }
}

/// The placement-preference tree: one branch per label value per level; leaves own pools.
struct Tree {
    branches: Vec<Branch>,
}

struct Branch {
    count: u64,
    exhausted: bool,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    pool: usize,
}

impl Tree {
    fn new() -> Self {
        Tree {
            branches: vec![Branch {
                count: 0,
                exhausted: false,
                parent: None,
                children: BTreeMap::new(),
                pool: usize::MAX,
            }],
        }
    }

    fn leaf_for(&mut self, path: &[&str], pools: &mut Vec<Pool>, strategy: Strategy) -> usize {
        let mut b = 0;
        for v in path {
            b = match self.branches[b].children.get(*v) {
                Some(&c) => c,
                None => {
                    let c = self.branches.len();
                    self.branches.push(Branch {
                        count: 0,
                        exhausted: false,
                        parent: Some(b),
                        children: BTreeMap::new(),
                        pool: usize::MAX,
                    });
                    self.branches[b].children.insert((*v).to_string(), c);
                    c
                }
            };
        }
        if self.branches[b].pool == usize::MAX {
            self.branches[b].pool = pools.len();
            pools.push(Pool::new(strategy));
        }
        b
    }

    fn add_count(&mut self, leaf: usize, n: u64) {
        let mut b = Some(leaf);
        while let Some(i) = b {
            self.branches[i].count += n;
            b = self.branches[i].parent;
        }
    }

    /// Descends to the leaf under the non-exhausted branch with the fewest tasks at each level.
    fn choose(&self) -> Option<usize> {
        let mut b = 0;
        if self.branches[b].exhausted
            || (self.branches[b].pool == usize::MAX && self.branches[b].children.is_empty())
        {
            return None;
        }
        while !self.branches[b].children.is_empty() {
            b = self.branches[b]
                .children
                .values()
                .copied()
                .filter(|&c| !self.branches[c].exhausted)
                .min_by_key(|&c| self.branches[c].count)?;
        }
        Some(b)
    }

    fn exhaust(&mut self, leaf: usize) {
        self.branches[leaf].exhausted = true;
        let mut b = self.branches[leaf].parent;
        while let Some(i) = b {
            if self.branches[i].children.values().all(|&c| self.branches[c].exhausted) {
                self.branches[i].exhausted = true;
                b = self.branches[i].parent;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod image_tests {
    use crate::tests::{spec, World};
    use shoal_state::{Command, TaskStatusReport};
    use shoal_types::{DriverInfo, Node, ServiceId, TaskState, TaskStatus};

    /// `n` ready nodes offering the oci driver; `with_image` report `busybox:latest`.
    fn world(n: usize, with_image: &[usize]) -> World {
        let mut w = World::new(0);
        for i in 0..n {
            let mut node = Node::test(&format!("n{i}"), &format!("host{i}"));
            node.description.drivers.push(DriverInfo { name: "oci".into(), ..Default::default() });
            if with_image.contains(&i) {
                node.description.images.insert("busybox:latest".into(), "sha256:aa".into());
            }
            w.cmd(Command::RegisterNode { node: Box::new(node) });
        }
        w
    }

    fn oci(w: &mut World, name: &str, replicas: u64) -> ServiceId {
        let mut s = spec(name, replicas);
        s.task_template.driver = Some("oci".into());
        s.task_template.image = Some("busybox".into());
        w.service(s)
    }

    fn nodes_of(w: &World, svc: &ServiceId) -> Vec<String> {
        let mut v: Vec<String> = w
            .state
            .tasks_of_service(svc)
            .filter(|t| t.desired_state == TaskState::Running)
            .filter_map(|t| t.node_id.as_ref().map(|n| n.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn nodes_with_the_image_are_preferred_but_spread_still_rules() {
        for seed in 0..20 {
            let mut w = world(3, &[2]);
            w.seed = seed;
            let one = oci(&mut w, "one", 1);
            w.step();
            assert_eq!(nodes_of(&w, &one), vec!["n2"], "seed {seed}");
        }
        let mut w = world(3, &[2]);
        let three = oci(&mut w, "three", 3);
        w.step();
        assert_eq!(nodes_of(&w, &three), vec!["n0", "n1", "n2"]);
    }

    fn reject_current(w: &mut World, svc: &ServiceId) {
        let t = w
            .state
            .tasks_of_service(svc)
            .find(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Assigned)
            .expect("an assigned task")
            .clone();
        let node = t.node_id.clone().expect("placed");
        let status = TaskStatus {
            state: TaskState::Rejected,
            err: format!("image not found: busybox is not on node {node} and no peer has it"),
            ..t.status.clone()
        };
        w.cmd(Command::ReportTaskStatus {
            node_id: node,
            reports: vec![TaskStatusReport { task_id: t.id.clone(), status }],
        });
    }

    #[test]
    fn a_node_that_rejected_a_missing_image_is_avoided_and_the_task_says_why() {
        let mut w = world(2, &[]);
        let svc = oci(&mut w, "web", 1);
        w.step();
        let first = nodes_of(&w, &svc);
        assert_eq!(first.len(), 1);
        reject_current(&mut w, &svc);
        w.step();
        w.step();
        let second = w
            .state
            .tasks_of_service(&svc)
            .find(|t| t.desired_state == TaskState::Running && !t.status.state.is_terminal())
            .and_then(|t| t.node_id.clone())
            .map(|n| n.to_string())
            .expect("placed again");
        assert_ne!(vec![second], first, "the node that lacked the image is avoided");
        reject_current(&mut w, &svc);
        w.step();
        w.step();
        let pending = w
            .state
            .tasks_of_service(&svc)
            .find(|t| t.desired_state == TaskState::Running && !t.status.state.is_terminal())
            .expect("a current task")
            .clone();
        assert_eq!(pending.status.state, TaskState::Pending);
        assert!(pending.node_id.is_none());
        assert!(
            pending.status.err.contains("image busybox not there and no peer has it on 2 nodes"),
            "{}",
            pending.status.err
        );
        // Once a node reports the image, the task is placed (and prefers that node).
        let mut n1 = w.state.node(&shoal_types::NodeId::new("n1")).expect("n1").clone();
        n1.description.images.insert("busybox:latest".into(), "sha256:aa".into());
        w.cmd(Command::RegisterNode { node: Box::new(n1) });
        w.step();
        let placed = w.state.task(&pending.id).expect("task");
        assert_eq!(placed.node_id.as_ref().map(|n| n.as_str()), Some("n1"));
    }
}
