//! The network allocator: VNIs, subnets, VIPs, task and node addresses, ingress ports; unit
//! tests, then property tests over random command sequences.

use crate::{Applied, ClusterObject, ClusterState, Command, Plan, Snapshot, StateError, STILL_STOPPING};
use proptest::prelude::*;
use shoal_types::network::{parse_addr_with_prefix, Ipv4Net};
use shoal_types::{
    EndpointMode, Network, NetworkAttachmentConfig, NetworkId, NetworkSpec, Node, NodeId, NodeState,
    PortConfig, Protocol, PublishMode, Service, ServiceId, ServiceMode, ServiceSpec, Task, TaskId, TaskState,
    TaskStatus, Timestamp,
};
use std::collections::{BTreeMap, BTreeSet};

fn at(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

fn apply(s: &mut ClusterState, c: Command) -> Result<Applied, StateError> {
    let t = at(s.index() + 1);
    s.apply(t, c)
}

fn net_spec(name: &str, subnet: Option<&str>) -> NetworkSpec {
    NetworkSpec { name: name.into(), subnet: subnet.map(str::to_string), ..Default::default() }
}

fn create_net(
    s: &mut ClusterState,
    id: &str,
    name: &str,
    subnet: Option<&str>,
) -> Result<Applied, StateError> {
    let n = Network::new(NetworkId::new(id), net_spec(name, subnet));
    apply(s, Command::CreateNetwork { network: Box::new(n) })
}

fn svc_spec(name: &str, replicas: u64, nets: &[&str]) -> ServiceSpec {
    let mut s = ServiceSpec { name: name.into(), ..Default::default() };
    s.task_template.command = vec!["sleep".into(), "1000".into()];
    s.mode = ServiceMode::Replicated { replicas };
    s.networks =
        nets.iter().map(|n| NetworkAttachmentConfig { target: n.to_string(), aliases: vec![] }).collect();
    s
}

fn create_svc(s: &mut ClusterState, id: &str, spec: ServiceSpec) -> Result<Applied, StateError> {
    apply(s, Command::CreateService { service: Box::new(Service::new(ServiceId::new(id), spec)) })
}

fn ingress_port(p: u16) -> PortConfig {
    PortConfig { published: p, target: p, protocol: Protocol::Tcp, mode: PublishMode::Ingress }
}

/// A task as a plan creates it: placed on `node`, no addresses yet.
fn new_task(id: &str, svc: &str, slot: u64, node: Option<&str>) -> Task {
    Task {
        id: TaskId::new(id),
        version: 0,
        created_at: Timestamp::ZERO,
        updated_at: Timestamp::ZERO,
        service_id: ServiceId::new(svc),
        slot: Some(slot),
        node_id: node.map(NodeId::new),
        spec: svc_spec("x", 1, &[]).task_template.into(),
        endpoint: Default::default(),
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: if node.is_some() { TaskState::Assigned } else { TaskState::Pending },
            ..Default::default()
        },
        restart_history: vec![],
        restore: None,
        networks: Vec::new(),
    }
}

fn create_tasks(s: &mut ClusterState, tasks: Vec<Task>) -> Applied {
    apply(s, Command::ApplyPlan { plan: Plan { create_tasks: tasks, ..Default::default() } }).expect("plan")
}

/// Stops and deletes tasks, as the agents and the reaper would.
fn delete_tasks(s: &mut ClusterState, ids: &[TaskId]) {
    let plan = Plan {
        delete_tasks: ids.iter().filter_map(|id| s.task(id).map(|t| (id.clone(), t.version))).collect(),
        ..Default::default()
    };
    apply(s, Command::ApplyPlan { plan }).expect("delete");
}

fn addrs(t: &Task) -> Vec<String> {
    t.networks.iter().flat_map(|n| n.addrs.clone()).collect()
}

/// The agent on `node` reports the task failed.
fn fail(s: &mut ClusterState, node_id: NodeId, task_id: TaskId) {
    let status = TaskStatus { state: TaskState::Failed, exit_code: Some(1), ..Default::default() };
    let reports = vec![crate::TaskStatusReport { task_id, status }];
    apply(s, Command::ReportTaskStatus { node_id, reports }).expect("report");
}

fn register(s: &mut ClusterState, id: &str) {
    apply(s, Command::RegisterNode { node: Box::new(Node::test(id, id)) }).expect("node");
}

fn conflict(r: Result<Applied, StateError>) -> String {
    match r {
        Err(StateError::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn networks_get_serial_vnis_and_pool_subnets() {
    let mut s = ClusterState::new();
    create_net(&mut s, "a", "net-a", None).expect("a");
    create_net(&mut s, "b", "net-b", None).expect("b");
    let a = s.network_by_name("net-a").expect("a").clone();
    let b = s.network_by_name("net-b").expect("b").clone();
    assert_eq!(
        (a.status.vni, a.status.subnet.as_str(), a.status.gateway.as_str()),
        (4096, "10.0.1.0/24", "10.0.1.1")
    );
    assert_eq!((b.status.vni, b.status.subnet.as_str()), (4097, "10.0.2.0/24"));
    assert_eq!((a.version, a.created_at), (1, at(1)));
    // A given subnet: checked for overlap, naming the network it overlaps.
    let m = conflict(create_net(&mut s, "c", "net-c", Some("10.0.0.0/16")));
    assert_eq!(m, "subnet 10.0.0.0/16 overlaps network net-a (10.0.1.0/24)");
    let m = conflict(create_net(&mut s, "c", "net-a", Some("10.9.0.0/24")));
    assert_eq!(m, "a network named \"net-a\" already exists");
    assert!(matches!(
        create_net(&mut s, "c", "net-c", Some("10.9.0.1/24")),
        Err(StateError::InvalidNetwork(_))
    ));
    assert_eq!(s.index(), 2, "refused commands change nothing");
    // The pool skips what is taken: 10.0.3.0/24 is inside the new /22.
    create_net(&mut s, "c", "net-c", Some("10.0.3.0/28")).expect("c");
    create_net(&mut s, "d", "net-d", None).expect("d");
    assert_eq!(s.network(&NetworkId::new("d")).map(|n| n.status.subnet.as_str()), Some("10.0.4.0/24"));
    // Removal frees the subnet (the pool hands it out again) but not the VNI (serial).
    apply(&mut s, Command::RemoveNetwork { id: NetworkId::new("a") }).expect("rm");
    create_net(&mut s, "e", "net-e", None).expect("e");
    let e = s.network(&NetworkId::new("e")).expect("e");
    assert_eq!((e.status.vni, e.status.subnet.as_str()), (4100, "10.0.1.0/24"));
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn cluster_init_creates_the_ingress_network_first() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    let cluster = ClusterObject {
        id: "c1".into(),
        created_at: Timestamp::ZERO,
        ca_cert_pem: String::new(),
        ca_key_pem: String::new(),
        worker_token: String::new(),
        manager_token: String::new(),
        data_path_port: crate::DEFAULT_DATA_PATH_PORT,
    };
    let out = apply(&mut s, Command::InitCluster { cluster: Box::new(cluster) }).expect("init");
    assert_eq!(out.events.iter().map(|e| e.object.kind()).collect::<Vec<_>>(), ["network"]);
    let i = s.ingress_network().expect("ingress").clone();
    assert_eq!(
        (i.spec.name.as_str(), i.status.vni, i.status.subnet.as_str()),
        ("ingress", 4096, "10.255.0.0/16")
    );
    assert_eq!(i.id.as_str().len(), shoal_types::id::ID_LEN);
    // The node that was there gets its address on it, and so does the next one.
    register(&mut s, "n2");
    let peers: Vec<String> = s.node_addresses(&i.id).into_iter().map(|a| a.addr).collect();
    assert_eq!(peers, ["10.255.0.2/16", "10.255.0.3/16"]);
    create_net(&mut s, "a", "net-a", None).expect("a");
    assert_eq!(s.network(&NetworkId::new("a")).map(|n| n.status.vni), Some(4097));
    // Only one ingress network.
    let mut spec = net_spec("mesh2", None);
    spec.ingress = true;
    let r =
        apply(&mut s, Command::CreateNetwork { network: Box::new(Network::new(NetworkId::new("m2"), spec)) });
    assert!(conflict(r).contains("an ingress network already exists: ingress"));
}

#[test]
fn node_addresses_follow_registration_and_removal() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    create_net(&mut s, "a", "net-a", None).expect("a");
    register(&mut s, "n2");
    register(&mut s, "n2"); // again: keeps its address
    let id = NetworkId::new("a");
    let got: Vec<(String, String)> =
        s.node_addresses(&id).into_iter().map(|a| (a.node_id.to_string(), a.addr)).collect();
    assert_eq!(got, [("n1".into(), "10.0.1.2/24".into()), ("n2".into(), "10.0.1.3/24".into())]);
    assert_eq!(s.free_addresses(&id), 254 - 3);
    apply(&mut s, Command::RemoveNode { id: NodeId::new("n1") }).expect("rm");
    assert_eq!(s.node_addresses(&id).len(), 1);
    assert_eq!(s.free_addresses(&id), 254 - 2);
    assert_eq!(s.check_indexes(), Ok(()));
    // A subnet too small for one address per node is refused.
    for n in ["n3", "n4", "n5", "n6", "n7", "n8"] {
        register(&mut s, n);
    }
    let m = conflict(create_net(&mut s, "tiny", "tiny", Some("10.8.0.0/29")));
    assert!(
        m.contains(
            "subnet 10.8.0.0/29 has 5 addresses besides its gateway, fewer than the cluster's 7 nodes"
        ),
        "{m}"
    );
}

#[test]
fn services_get_vips_and_tasks_distinct_addresses_released_on_delete() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    create_net(&mut s, "a", "net-a", Some("10.42.0.0/24")).expect("a");
    create_svc(&mut s, "s1", svc_spec("web", 3, &["net-a"])).expect("svc");
    let svc = s.service(&ServiceId::new("s1")).expect("svc");
    assert_eq!(svc.spec.networks[0].target, "a", "stored as the network's id");
    assert_eq!(svc.endpoint.vips.len(), 1);
    assert_eq!(svc.endpoint.vips[0].addr, "10.42.0.3/24"); // .1 gateway, .2 n1
    let tasks: Vec<Task> = (1..=3).map(|i| new_task(&format!("t{i}"), "s1", i, Some("n1"))).collect();
    create_tasks(&mut s, tasks);
    let got: Vec<Vec<String>> = s.tasks().map(addrs).collect();
    assert_eq!(got, [vec!["10.42.0.4/24"], vec!["10.42.0.5/24"], vec!["10.42.0.6/24"]]);
    assert!(s
        .tasks()
        .all(|t| t.networks[0].network_id.as_str() == "a" && t.status.state == TaskState::Assigned));
    // Scale down: deleting a task frees its address, which is not handed out again at once.
    delete_tasks(&mut s, &[TaskId::new("t2")]);
    create_tasks(&mut s, vec![new_task("t4", "s1", 2, Some("n1"))]);
    assert_eq!(addrs(s.task(&TaskId::new("t4")).expect("t4")), ["10.42.0.7/24"]);
    assert_eq!(s.check_indexes(), Ok(()));
    // Removing the service frees its VIP; deleting its tasks frees theirs.
    apply(&mut s, Command::RemoveService { id: ServiceId::new("s1") }).expect("rm svc");
    let ids: Vec<TaskId> = s.tasks().map(|t| t.id.clone()).collect();
    delete_tasks(&mut s, &ids);
    assert_eq!(s.free_addresses(&NetworkId::new("a")), 254 - 2);
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn a_full_network_leaves_tasks_pending_with_the_reason() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    // /29: 6 host addresses; gateway, n1 and the VIP leave 3 for tasks.
    create_net(&mut s, "small", "small", Some("10.9.0.0/29")).expect("net");
    create_svc(&mut s, "s1", svc_spec("web", 5, &["small"])).expect("svc");
    let tasks: Vec<Task> = (1..=5).map(|i| new_task(&format!("t{i}"), "s1", i, Some("n1"))).collect();
    create_tasks(&mut s, tasks);
    let states: Vec<(TaskState, bool, String)> =
        s.tasks().map(|t| (t.status.state, t.node_id.is_some(), t.status.err.clone())).collect();
    let pending = (TaskState::Pending, false, "no free address in network small".to_string());
    assert_eq!(&states[3..], [pending.clone(), pending]);
    assert!(states[..3].iter().all(|(st, placed, _)| *st == TaskState::Assigned && *placed));
    assert!(s
        .task(&TaskId::new("t5"))
        .is_some_and(|t| t.networks.len() == 1 && t.networks[0].addrs.is_empty()));
    assert_eq!(s.free_addresses(&NetworkId::new("small")), 0);
    // A placement of a pending task while the network is still full is refused by apply.
    let t5 = s.task(&TaskId::new("t5")).expect("t5").clone();
    let plan = Plan {
        assign: vec![crate::Assignment {
            task_id: t5.id.clone(),
            task_version: t5.version,
            node_id: NodeId::new("n1"),
        }],
        ..Default::default()
    };
    let out = apply(&mut s, Command::ApplyPlan { plan: plan.clone() }).expect("plan");
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(out.skipped[0].1, "no free address in network small");
    // Once an address is free, the same placement takes it.
    delete_tasks(&mut s, &[TaskId::new("t1")]);
    let t5 = s.task(&TaskId::new("t5")).expect("t5").clone();
    let mut plan = plan;
    plan.assign[0].task_version = t5.version;
    let out = apply(&mut s, Command::ApplyPlan { plan }).expect("plan");
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    let t5 = s.task(&TaskId::new("t5")).expect("t5");
    assert_eq!((t5.status.state, addrs(t5)), (TaskState::Assigned, vec!["10.9.0.4/29".to_string()]));
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn ended_tasks_free_their_addresses_and_keep_them_on_record() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    // /29: gateway, n1 and the VIP leave 3 addresses for tasks.
    create_net(&mut s, "small", "small", Some("10.9.0.0/29")).expect("net");
    create_svc(&mut s, "s1", svc_spec("web", 3, &["small"])).expect("svc");
    create_tasks(&mut s, (1..=3).map(|i| new_task(&format!("t{i}"), "s1", i, Some("n1"))).collect());
    assert_eq!(s.free_addresses(&NetworkId::new("small")), 0);
    // Ten failures in slot 1, each replaced: the failed ones stay as history, holding nothing.
    for round in 0..10 {
        let old = if round == 0 { "t1".to_string() } else { format!("r{}", round - 1) };
        fail(&mut s, NodeId::new("n1"), TaskId::new(old.clone()));
        assert_eq!(s.free_addresses(&NetworkId::new("small")), 1, "round {round}");
        let failed = s.task(&TaskId::new(old)).expect("kept as history");
        assert_eq!(addrs(failed).len(), 1, "the record keeps the address it had");
        create_tasks(&mut s, vec![new_task(&format!("r{round}"), "s1", 1, Some("n1"))]);
        let new = s.task(&TaskId::new(format!("r{round}"))).expect("new");
        assert_eq!((new.status.state, addrs(new).len()), (TaskState::Assigned, 1), "round {round}");
        assert_eq!(s.free_addresses(&NetworkId::new("small")), 0);
    }
    // Deleting a failed task whose address another task holds now frees nothing.
    let before = s.free_addresses(&NetworkId::new("small"));
    delete_tasks(&mut s, &[TaskId::new("t1"), TaskId::new("r0")]);
    assert_eq!(s.free_addresses(&NetworkId::new("small")), before);
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn a_network_in_use_cannot_be_removed() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    create_net(&mut s, "a", "net-a", None).expect("a");
    create_svc(&mut s, "s1", svc_spec("web", 1, &["a"])).expect("svc");
    create_svc(&mut s, "s2", svc_spec("api", 1, &["net-a"])).expect("svc");
    create_tasks(&mut s, vec![new_task("t1", "s1", 1, Some("n1"))]);
    let m = conflict(apply(&mut s, Command::RemoveNetwork { id: NetworkId::new("a") }));
    assert!(m.starts_with("network net-a is in use by services attached to it: api, web"), "{m}");
    apply(&mut s, Command::RemoveService { id: ServiceId::new("s1") }).expect("rm");
    apply(&mut s, Command::RemoveService { id: ServiceId::new("s2") }).expect("rm");
    let m = conflict(apply(&mut s, Command::RemoveNetwork { id: NetworkId::new("a") }));
    assert!(m.contains("still has tasks of service s1 that have not stopped yet"), "{m}");
    // Stopped tasks kept as history let go of their address when the network goes.
    let failed = TaskStatus { state: TaskState::Shutdown, ..Default::default() };
    let r = crate::TaskStatusReport { task_id: TaskId::new("t1"), status: failed };
    apply(&mut s, Command::ReportTaskStatus { node_id: NodeId::new("n1"), reports: vec![r] })
        .expect("report");
    let out = apply(&mut s, Command::RemoveNetwork { id: NetworkId::new("a") }).expect("rm net");
    assert_eq!(out.events.iter().map(|e| e.object.kind()).collect::<Vec<_>>(), ["task", "network"]);
    assert!(s.task(&TaskId::new("t1")).is_some_and(|t| t.networks.is_empty()));
    assert!(s.networks().next().is_none() && s.node_addresses(&NetworkId::new("a")).is_empty());
    assert!(matches!(
        apply(&mut s, Command::RemoveNetwork { id: NetworkId::new("a") }),
        Err(StateError::NotFound { kind: "network", .. })
    ));
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn tasks_told_to_stop_on_a_down_node_do_not_hold_the_network() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    create_net(&mut s, "a", "net-a", None).expect("a");
    create_svc(&mut s, "s1", svc_spec("web", 1, &["a"])).expect("svc");
    create_tasks(&mut s, vec![new_task("t1", "s1", 1, Some("n1"))]);
    apply(&mut s, Command::RemoveService { id: ServiceId::new("s1") }).expect("rm");
    let m = conflict(apply(&mut s, Command::RemoveNetwork { id: NetworkId::new("a") }));
    assert!(m.contains(STILL_STOPPING), "{m}");
    // Its node goes down: the task cannot report, and no longer holds the network.
    let down =
        Command::SetNodeStatus { id: NodeId::new("n1"), state: NodeState::Down, message: "gone".into() };
    apply(&mut s, down).expect("down");
    apply(&mut s, Command::RemoveNetwork { id: NetworkId::new("a") }).expect("rm net");
    assert!(s.networks().next().is_none());
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn unknown_and_ingress_targets_are_refused() {
    let mut s = ClusterState::new();
    let r = create_svc(&mut s, "s1", svc_spec("web", 1, &["nope"]));
    assert_eq!(r, Err(StateError::NotFound { kind: "network", id: "nope".into() }));
    let mut spec = svc_spec("web", 1, &[]);
    spec.endpoint.ports = vec![ingress_port(80)];
    create_svc(&mut s, "s1", spec).expect("lazily creates ingress");
    let r = create_svc(&mut s, "s2", svc_spec("api", 1, &["ingress"]));
    assert!(
        matches!(r, Err(StateError::Invalid(e)) if e.to_string().contains("ingress is the routing-mesh network"))
    );
    create_net(&mut s, "a", "net-a", None).expect("a");
    let r = create_svc(&mut s, "s2", svc_spec("api", 1, &["a", "net-a"]));
    assert!(
        matches!(r, Err(StateError::Invalid(e)) if e.to_string().contains("network net-a is listed twice"))
    );
}

#[test]
fn ingress_ports_are_reserved_cluster_wide() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    let mut web = svc_spec("web", 1, &[]);
    web.endpoint.ports = vec![ingress_port(8080)];
    // A cluster from before networks: the first ingress port creates the ingress network.
    let out = create_svc(&mut s, "s1", web).expect("web");
    assert_eq!(out.events.iter().map(|e| e.object.kind()).collect::<Vec<_>>(), ["network", "service"]);
    let ingress = s.ingress_network().expect("ingress").id.clone();
    let svc = s.service(&ServiceId::new("s1")).expect("web");
    assert_eq!(
        svc.endpoint.vips.iter().map(|v| (&v.network_id, v.addr.as_str())).collect::<Vec<_>>(),
        [(&ingress, "10.255.0.3/16")]
    );
    create_tasks(&mut s, vec![new_task("t1", "s1", 1, Some("n1"))]);
    assert_eq!(s.task(&TaskId::new("t1")).map(|t| t.networks[0].network_id.clone()), Some(ingress.clone()));

    let mut api = svc_spec("api", 1, &[]);
    api.endpoint.ports = vec![ingress_port(8080)];
    let m = conflict(create_svc(&mut s, "s2", api.clone()));
    assert!(m.starts_with("port 8080/tcp is already published by service web (mode ingress)"), "{m}");
    api.endpoint.ports[0].mode = PublishMode::Host;
    assert!(conflict(create_svc(&mut s, "s2", api.clone())).contains("service web"));
    api.endpoint.ports[0].protocol = Protocol::Udp;
    api.endpoint.ports[0].mode = PublishMode::Ingress;
    create_svc(&mut s, "s2", api).expect("udp is another port");
    // Host ports of different services may share a number (a node binds one at a time)...
    let mut h1 = svc_spec("h1", 1, &[]);
    h1.endpoint.ports = vec![PortConfig { published: 9000, target: 9000, ..Default::default() }];
    create_svc(&mut s, "s3", h1.clone()).expect("h1");
    h1.name = "h2".into();
    create_svc(&mut s, "s4", h1).expect("h2");
    // ...but an ingress port clashes with them, and an update is checked like a create.
    let mut spec = s.service(&ServiceId::new("s1")).expect("web").spec.clone();
    spec.endpoint.ports.push(ingress_port(9000));
    let r = apply(
        &mut s,
        Command::UpdateService { id: ServiceId::new("s1"), expected_version: None, spec: Box::new(spec) },
    );
    assert!(conflict(r).starts_with("port 9000/tcp is already published by service h1 (mode host)"));
    // The ingress network cannot go while ports are published through it.
    let m = conflict(apply(&mut s, Command::RemoveNetwork { id: ingress }));
    assert!(m.contains("publish ports through the routing mesh (mode=ingress): api, web"), "{m}");
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn endpoint_mode_and_network_changes_move_vips() {
    let mut s = ClusterState::new();
    create_net(&mut s, "a", "net-a", None).expect("a");
    create_net(&mut s, "b", "net-b", None).expect("b");
    let mut spec = svc_spec("web", 1, &["net-a"]);
    spec.endpoint.mode = EndpointMode::Dnsrr;
    create_svc(&mut s, "s1", spec.clone()).expect("dnsrr");
    assert!(s.service(&ServiceId::new("s1")).expect("svc").endpoint.vips.is_empty());
    let update = |s: &mut ClusterState, spec: &ServiceSpec| {
        let c = Command::UpdateService {
            id: ServiceId::new("s1"),
            expected_version: None,
            spec: Box::new(spec.clone()),
        };
        apply(s, c).expect("update");
        s.service(&ServiceId::new("s1")).expect("svc").clone()
    };
    spec.endpoint.mode = EndpointMode::Vip;
    let svc = update(&mut s, &spec);
    assert_eq!(svc.endpoint.vips.iter().map(|v| v.addr.as_str()).collect::<Vec<_>>(), ["10.0.1.2/24"]);
    assert_eq!(svc.spec_version, 2);
    spec.networks.push(NetworkAttachmentConfig { target: "net-b".into(), aliases: vec![] });
    let svc = update(&mut s, &spec);
    assert_eq!(
        svc.endpoint.vips.iter().map(|v| v.addr.as_str()).collect::<Vec<_>>(),
        ["10.0.1.2/24", "10.0.2.2/24"]
    );
    assert_eq!(svc.spec_version, 3, "joining a network is a change of the tasks");
    // The same spec sent back with ids instead of names is no change.
    let svc = update(&mut s, &svc.spec);
    assert_eq!(svc.spec_version, 3);
    spec.networks.remove(0);
    let svc = update(&mut s, &spec);
    assert_eq!(svc.endpoint.vips.iter().map(|v| v.addr.as_str()).collect::<Vec<_>>(), ["10.0.2.2/24"]);
    assert_eq!(s.free_addresses(&NetworkId::new("a")), 253);
    assert_eq!(s.check_indexes(), Ok(()));
}

#[test]
fn snapshots_keep_allocations_and_cursors() {
    let mut s = ClusterState::new();
    register(&mut s, "n1");
    create_net(&mut s, "a", "net-a", Some("10.42.0.0/24")).expect("a");
    create_svc(&mut s, "s1", svc_spec("web", 3, &["a"])).expect("svc");
    create_tasks(&mut s, (1..=3).map(|i| new_task(&format!("t{i}"), "s1", i, Some("n1"))).collect());
    delete_tasks(&mut s, &[TaskId::new("t3")]);
    apply(&mut s, Command::RemoveNetwork { id: NetworkId::new("a") }).expect_err("in use");
    let json = serde_json::to_string(&s.snapshot()).expect("json");
    let mut back = ClusterState::restore(serde_json::from_str::<Snapshot>(&json).expect("snapshot"));
    assert_eq!(back, s);
    // Both go on the same way: the cursor came along, so t3's address is not reused.
    for st in [&mut s, &mut back] {
        create_tasks(st, vec![new_task("t9", "s1", 3, Some("n1"))]);
        create_net(st, "b", "net-b", None).expect("b");
    }
    assert_eq!(back, s);
    assert_eq!(addrs(s.task(&TaskId::new("t9")).expect("t9")), ["10.42.0.7/24"]);
    // A snapshot from before networks reads back with none.
    let old = r#"{"index":3,"config":{},"nodes":[],"services":[],"tasks":[]}"#;
    let s = ClusterState::restore(serde_json::from_str::<Snapshot>(old).expect("old snapshot"));
    assert_eq!(s.networks().len(), 0);
}

// ---- properties ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    CreateNetwork {
        n: u8,
        subnet: Option<(u8, u8)>,
    },
    RemoveNetwork {
        n: u8,
    },
    Register {
        node: u8,
    },
    RemoveNode {
        node: u8,
    },
    CreateService {
        s: u8,
        nets: Vec<u8>,
        ingress: Option<u16>,
        dnsrr: bool,
    },
    UpdateNetworks {
        s: u8,
        nets: Vec<u8>,
    },
    /// A plan creates `count` tasks of the service, placed on a node.
    Scale {
        s: u8,
        count: u8,
    },
    /// The reaper deletes every `k`-th task.
    Reap {
        k: u8,
    },
    /// The agents report every `k`-th placed task failed (it keeps its record, not its addresses).
    Fail {
        k: u8,
    },
    RemoveService {
        s: u8,
    },
    SnapshotRestore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..5, proptest::option::of((0u8..4, 26u8..30)))
            .prop_map(|(n, subnet)| Op::CreateNetwork { n, subnet }),
        1 => (0u8..5).prop_map(|n| Op::RemoveNetwork { n }),
        2 => (0u8..4).prop_map(|node| Op::Register { node }),
        1 => (0u8..4).prop_map(|node| Op::RemoveNode { node }),
        3 => (0u8..4, proptest::collection::vec(0u8..5, 0..3), proptest::option::of(8000u16..8003), any::<bool>())
            .prop_map(|(s, nets, ingress, dnsrr)| Op::CreateService { s, nets, ingress, dnsrr }),
        1 => (0u8..4, proptest::collection::vec(0u8..5, 0..3)).prop_map(|(s, nets)| Op::UpdateNetworks { s, nets }),
        4 => (0u8..4, 1u8..6).prop_map(|(s, count)| Op::Scale { s, count }),
        2 => (1u8..4).prop_map(|k| Op::Reap { k }),
        2 => (1u8..4).prop_map(|k| Op::Fail { k }),
        1 => (0u8..4).prop_map(|s| Op::RemoveService { s }),
        1 => Just(Op::SnapshotRestore),
    ]
}

struct World {
    s: ClusterState,
    next_task: u64,
    vnis_seen: BTreeSet<u32>,
}

impl World {
    fn run(&mut self, op: &Op) {
        let s = &mut self.s;
        match op.clone() {
            Op::CreateNetwork { n, subnet } => {
                // Small subnets (/26 to /29) in a few places, so that they fill up and collide.
                let subnet = subnet.map(|(base, prefix)| format!("10.{}.0.0/{prefix}", 100 + base));
                let _ = create_net(s, &format!("net{n}"), &format!("net{n}"), subnet.as_deref());
            }
            Op::RemoveNetwork { n } => {
                let _ = apply(s, Command::RemoveNetwork { id: NetworkId::new(format!("net{n}")) });
            }
            Op::Register { node } => {
                // A removed node cannot come back under its id: refused, nothing changes.
                let _ =
                    apply(s, Command::RegisterNode { node: Box::new(Node::test(&format!("n{node}"), "h")) });
            }
            Op::RemoveNode { node } => {
                let _ = apply(s, Command::RemoveNode { id: NodeId::new(format!("n{node}")) });
            }
            Op::CreateService { s: i, nets, ingress, dnsrr } => {
                let names: Vec<String> = nets.iter().map(|n| format!("net{n}")).collect();
                let mut spec =
                    svc_spec(&format!("svc{i}"), 1, &names.iter().map(String::as_str).collect::<Vec<_>>());
                spec.networks.dedup_by(|a, b| a.target == b.target);
                spec.endpoint.ports = ingress.map(ingress_port).into_iter().collect();
                if dnsrr && ingress.is_none() {
                    spec.endpoint.mode = EndpointMode::Dnsrr;
                }
                let _ = create_svc(s, &format!("s{i}"), spec);
            }
            Op::UpdateNetworks { s: i, nets } => {
                let id = ServiceId::new(format!("s{i}"));
                if let Some(svc) = s.service(&id) {
                    let mut spec = svc.spec.clone();
                    spec.networks = nets
                        .iter()
                        .map(|n| NetworkAttachmentConfig { target: format!("net{n}"), aliases: vec![] })
                        .collect();
                    spec.networks.dedup_by(|a, b| a.target == b.target);
                    let _ =
                        apply(s, Command::UpdateService { id, expected_version: None, spec: Box::new(spec) });
                }
            }
            Op::Scale { s: i, count } => {
                let nodes: Vec<String> = s.nodes().map(|n| n.id.to_string()).collect();
                let tasks = (0..count)
                    .map(|k| {
                        self.next_task += 1;
                        let node = nodes.get(k as usize % nodes.len().max(1)).map(String::as_str);
                        new_task(&format!("t{:05}", self.next_task), &format!("s{i}"), u64::from(k) + 1, node)
                    })
                    .collect();
                create_tasks(s, tasks);
            }
            Op::Reap { k } => {
                let ids: Vec<TaskId> = s.tasks().step_by(usize::from(k)).map(|t| t.id.clone()).collect();
                delete_tasks(s, &ids);
            }
            Op::Fail { k } => {
                let placed: Vec<(NodeId, TaskId)> = s
                    .tasks()
                    .filter(|t| t.status.state == TaskState::Assigned)
                    .step_by(usize::from(k))
                    .filter_map(|t| Some((t.node_id.clone()?, t.id.clone())))
                    .collect();
                for (node_id, task_id) in placed {
                    fail(s, node_id, task_id);
                }
            }
            Op::RemoveService { s: i } => {
                let _ = apply(s, Command::RemoveService { id: ServiceId::new(format!("s{i}")) });
            }
            Op::SnapshotRestore => {
                let json = serde_json::to_string(&s.snapshot()).expect("json");
                let back = ClusterState::restore(serde_json::from_str(&json).expect("snapshot"));
                assert_eq!(&back, s, "a snapshot round trip changes nothing");
                self.s = back;
            }
        }
    }

    /// Every address is held once, inside its network, never the network or broadcast address;
    /// subnets do not overlap; VNIs are unique and never handed out twice.
    fn check(&mut self) -> Result<(), String> {
        self.s.check_indexes()?;
        let mut held: BTreeMap<NetworkId, Vec<(u32, String)>> = BTreeMap::new();
        let mut hold = |net: &NetworkId, addr: &str, owner: String| {
            let a = parse_addr_with_prefix(addr).ok_or_else(|| format!("bad address {addr}"))?;
            held.entry(net.clone()).or_default().push((a, owner));
            Ok::<(), String>(())
        };
        for n in self.s.networks() {
            hold(&n.id, &n.status.gateway, "gateway".into())?;
            for a in self.s.node_addresses(&n.id) {
                hold(&n.id, &a.addr, format!("node {}", a.node_id))?;
            }
        }
        for svc in self.s.services() {
            for v in &svc.endpoint.vips {
                hold(&v.network_id, &v.addr, format!("vip of {}", svc.id))?;
            }
        }
        for t in self.s.tasks().filter(|t| !t.status.state.is_terminal()) {
            for tn in &t.networks {
                for a in &tn.addrs {
                    hold(&tn.network_id, a, format!("task {}", t.id))?;
                }
            }
        }
        let nets: Vec<&Network> = self.s.networks().collect();
        for (id, mut list) in held {
            let n =
                self.s.network(&id).ok_or_else(|| format!("address on removed network {id}: {list:?}"))?;
            let subnet = Ipv4Net::parse(&n.status.subnet)?;
            list.sort();
            for w in list.windows(2) {
                if w[0].0 == w[1].0 {
                    return Err(format!(
                        "{} held twice in {}: {} and {}",
                        w[0].0, n.spec.name, w[0].1, w[1].1
                    ));
                }
            }
            if let Some((a, o)) = list.iter().find(|(a, _)| !subnet.is_host(*a)) {
                return Err(format!("{a} of {o} is not a host address of {subnet}"));
            }
            let free = self.s.free_addresses(&id);
            if free + list.len() as u64 != subnet.hosts() {
                return Err(format!(
                    "{}: {free} free + {} held != {} hosts",
                    n.spec.name,
                    list.len(),
                    subnet.hosts()
                ));
            }
        }
        for (i, a) in nets.iter().enumerate() {
            for b in &nets[i + 1..] {
                if a.status.vni == b.status.vni {
                    return Err(format!("VNI {} twice", a.status.vni));
                }
                if Ipv4Net::parse(&a.status.subnet)?.overlaps(&Ipv4Net::parse(&b.status.subnet)?) {
                    return Err(format!("{} overlaps {}", a.status.subnet, b.status.subnet));
                }
            }
        }
        // A VNI is never handed out again (the cursor moves on).
        let now: BTreeSet<u32> = nets.iter().map(|n| n.status.vni).collect();
        let last = self.vnis_seen.last().copied();
        for v in now.difference(&self.vnis_seen.clone()) {
            if last.is_some_and(|l| *v <= l) {
                return Err(format!("VNI {v} reused"));
            }
            self.vnis_seen.insert(*v);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn allocations_are_unique_and_released(ops in proptest::collection::vec(op(), 1..60)) {
        let mut w = World { s: ClusterState::new(), next_task: 0, vnis_seen: BTreeSet::new() };
        for op in &ops {
            w.run(op);
            if let Err(e) = w.check() {
                return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
            }
        }
        // Everything goes: then only gateways and node addresses are held.
        let services: Vec<ServiceId> = w.s.services().map(|s| s.id.clone()).collect();
        for id in services {
            apply(&mut w.s, Command::RemoveService { id }).expect("rm service");
        }
        let tasks: Vec<TaskId> = w.s.tasks().map(|t| t.id.clone()).collect();
        delete_tasks(&mut w.s, &tasks);
        for n in w.s.networks() {
            let hosts = Ipv4Net::parse(&n.status.subnet).map(|s| s.hosts()).unwrap_or(0);
            let nodes = w.s.node_addresses(&n.id).len() as u64;
            prop_assert!(nodes <= w.s.nodes().len() as u64);
            prop_assert_eq!(w.s.free_addresses(&n.id), hosts - 1 - nodes, "{} still holds addresses", n.spec.name);
        }
        let nets: Vec<NetworkId> = w.s.networks().map(|n| n.id.clone()).collect();
        for id in nets {
            apply(&mut w.s, Command::RemoveNetwork { id }).expect("rm network");
        }
        prop_assert_eq!(w.s.networks().len(), 0);
        prop_assert_eq!(w.s.check_indexes(), Ok(()));
    }

    #[test]
    fn replaying_the_same_commands_allocates_the_same(ops in proptest::collection::vec(op(), 1..40)) {
        // The simulator and every replica replay apply: the same log gives the same addresses,
        // whether or not it went through a snapshot on the way.
        let mut a = World { s: ClusterState::new(), next_task: 0, vnis_seen: BTreeSet::new() };
        let mut b = World { s: ClusterState::new(), next_task: 0, vnis_seen: BTreeSet::new() };
        for op in &ops {
            a.run(op);
            b.run(op);
            b.run(&Op::SnapshotRestore);
            prop_assert_eq!(&a.s, &b.s);
        }
    }
}
