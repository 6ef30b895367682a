//! The spec types as the API receives them: unknown fields are refused with their name, what the
//! types serialize reads back unchanged, system-owned objects stay tolerant, and a template that
//! does not say otherwise gets Docker's 10 s stop grace period.

use serde_json::json;
use shoal_types::{
    Node, NodeDescription, NodeSpec, NodeStatus, Service, ServiceId, ServiceSpec, Task, TaskStatus,
    TaskTemplate, UpdateStatus,
};
use std::time::Duration;

fn spec_error(v: serde_json::Value) -> String {
    match serde_json::from_value::<ServiceSpec>(v) {
        Ok(s) => format!("accepted: {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn minimal() -> serde_json::Value {
    json!({"name": "web", "task_template": {"command": ["sleep", "1"]}})
}

#[test]
fn stop_grace_period_defaults_to_ten_seconds() {
    assert_eq!(TaskTemplate::default().stop_grace_period, Duration::from_secs(10));
    assert_eq!(ServiceSpec::default().task_template.stop_grace_period, Duration::from_secs(10));
    let s: ServiceSpec = serde_json::from_value(minimal()).expect("minimal spec");
    assert_eq!(s.task_template.stop_grace_period, Duration::from_secs(10));
    // An explicit value, zero included, is kept.
    let mut v = minimal();
    v["task_template"]["stop_grace_period"] = json!("0s");
    let s: ServiceSpec = serde_json::from_value(v).expect("explicit 0s");
    assert_eq!(s.task_template.stop_grace_period, Duration::ZERO);
}

#[test]
fn misspelled_fields_are_refused_by_name() {
    let cases = [
        ("/task_template/resources", "limts", json!({"memory_bytes": 1})),
        ("/task_template", "hostnme", json!("x")),
        ("/task_template/restart_policy", "max_attempt", json!(3)),
        ("/task_template/placement", "constraint", json!(["node.role==manager"])),
        ("/task_template/health_check", "intervall", json!("5s")),
        ("/update_config", "paralelism", json!(2)),
        ("/rollback_config", "monitr", json!("1s")),
        ("/endpoint", "port", json!([])),
        ("", "replicas", json!(3)),
    ];
    for (at, field, value) in cases {
        let mut v = minimal();
        if at == "/task_template/health_check" {
            v["task_template"]["health_check"] = json!({"test": ["NONE"]});
        }
        // Index the path (creating the objects on the way), then add the misspelled field.
        let mut obj = &mut v;
        for key in at.split('/').filter(|k| !k.is_empty()) {
            obj = &mut obj[key];
        }
        obj[field] = value;
        let e = spec_error(v);
        assert!(e.contains(&format!("unknown field `{field}`")), "{at}/{field}: {e}");
    }
}

#[test]
fn misspelled_fields_in_arrays_and_modes_are_refused() {
    let mut v = minimal();
    v["task_template"]["mounts"] =
        json!([{"type": "bind", "source": "/a", "target": "/b", "read_only": true}]);
    assert!(spec_error(v).contains("unknown field `read_only`"));
    let mut v = minimal();
    v["endpoint"] = json!({"ports": [{"published": 80, "target": 80, "protocl": "udp"}]});
    assert!(spec_error(v).contains("unknown field `protocl`"));
    let mut v = minimal();
    v["task_template"]["placement"] = json!({"preferences": [{"sprad": "node.labels.zone"}]});
    assert!(spec_error(v).contains("unknown field `sprad`"));
    let mut v = minimal();
    v["mode"] = json!({"replicated_job": {"max_concurrent": 1, "total_completions": 2, "max_concurent": 3}});
    assert!(spec_error(v).contains("unknown field `max_concurent`"));
}

#[test]
fn unknown_field_error_lists_the_expected_ones() {
    let mut v = minimal();
    v["task_template"]["resources"] = json!({"limts": {"memory_bytes": 1}});
    let e = spec_error(v);
    assert!(e.contains("unknown field `limts`, expected `reservations` or `limits`"), "{e}");
}

#[test]
fn node_spec_refuses_unknown_fields() {
    let e = serde_json::from_value::<NodeSpec>(json!({"availabilty": "drain"})).expect_err("typo");
    assert!(e.to_string().contains("unknown field `availabilty`"), "{e}");
    let ok: NodeSpec = serde_json::from_value(json!({"availability": "drain"})).expect("spec");
    assert_eq!(ok.availability, shoal_types::Availability::Drain);
}

#[test]
fn what_the_spec_types_serialize_reads_back() {
    let mut full = ServiceSpec { name: "web".into(), ..Default::default() };
    let t = &mut full.task_template;
    t.driver = Some("docker".into());
    t.image = Some("busybox".into());
    t.hostname = "h".into();
    t.mounts = vec![shoal_types::Mount { source: "/a".into(), target: "/b".into(), ..Default::default() }];
    t.health_check = Some(shoal_types::HealthCheck { test: vec!["NONE".into()], ..Default::default() });
    t.placement.preferences = vec![shoal_types::PlacementPreference { spread: "node.labels.z".into() }];
    t.resources.limits.memory_bytes = 64 << 20;
    full.endpoint.ports = vec![shoal_types::PortConfig { published: 8080, target: 80, ..Default::default() }];
    full.mode = shoal_types::ServiceMode::ReplicatedJob { max_concurrent: 2, total_completions: 4 };
    for spec in [ServiceSpec::default(), full] {
        let text = serde_json::to_string(&spec).expect("serialize");
        let back: ServiceSpec = serde_json::from_str(&text).expect("a serialized spec reads back");
        assert_eq!(back, spec);
        // Inside the system-owned objects that the Raft log, snapshots and the API carry.
        let mut svc = Service::new(ServiceId::new("s1"), spec.clone());
        svc.previous_spec = Some(spec.clone());
        svc.update_status = Some(UpdateStatus {
            state: shoal_types::UpdateState::Updating,
            started_at: shoal_types::Timestamp::from_secs(1),
            completed_at: None,
            message: "m".into(),
        });
        let text = serde_json::to_string(&svc).expect("serialize service");
        let back: Service = serde_json::from_str(&text).expect("a serialized service reads back");
        assert_eq!(back, svc);
    }
    let node = Node::test("n1", "h1");
    let back: Node = serde_json::from_str(&serde_json::to_string(&node).expect("node")).expect("node back");
    assert_eq!(back, node);
}

#[test]
fn system_owned_objects_stay_tolerant() {
    // What agents and other replicas (possibly newer) send: extra fields are ignored.
    let mut n = serde_json::to_value(Node::test("n1", "h1")).expect("node");
    n["future"] = json!(1);
    n["description"]["future"] = json!(1);
    n["description"]["platform"]["future"] = json!(1);
    n["description"]["drivers"][0]["future"] = json!(1);
    n["status"]["future"] = json!(1);
    let back: Node = serde_json::from_value(n).expect("tolerant node");
    assert_eq!(back, Node::test("n1", "h1"));
    assert!(serde_json::from_value::<NodeDescription>(json!({"hostname": "h", "gpu_model": "x"})).is_ok());
    assert!(serde_json::from_value::<NodeStatus>(json!({"state": "ready", "future": 1})).is_ok());
    assert!(serde_json::from_value::<TaskStatus>(json!({"state": "running", "oom": true})).is_ok());

    let mut svc =
        serde_json::to_value(Service::new(ServiceId::new("s1"), ServiceSpec::default())).expect("svc");
    svc["future"] = json!(1);
    assert!(serde_json::from_value::<Service>(svc).is_ok());

    let task = json!({
        "id": "t1", "version": 1, "created_at": "1970-01-01T00:00:00Z", "updated_at": "1970-01-01T00:00:00Z",
        "service_id": "s1", "spec": {"command": ["x"]}, "spec_version": 1, "desired_state": "running",
        "status": {"state": "running", "timestamp": "1970-01-01T00:00:00Z", "future": 1}, "future": 1
    });
    let t: Task = serde_json::from_value(task).expect("tolerant task");
    assert_eq!(t.spec.stop_grace_period, Duration::from_secs(10));
}

#[test]
fn network_specs_refuse_unknown_fields() {
    let e =
        serde_json::from_value::<shoal_types::NetworkSpec>(json!({"name": "n", "subnett": "10.0.0.0/24"}))
            .expect_err("typo");
    assert!(e.to_string().contains("unknown field `subnett`"), "{e}");
    let e = serde_json::from_value::<shoal_types::NetworkSpec>(json!({"name": "n", "driver": "bridge"}))
        .expect_err("driver");
    assert!(e.to_string().contains("unknown variant `bridge`, expected `overlay`"), "{e}");
    let n: shoal_types::NetworkSpec =
        serde_json::from_value(json!({"name": "n", "driver": "overlay", "mtu": 1400})).expect("spec");
    assert_eq!(n.mtu, Some(1400));
    // In a service: the attachments and the endpoint mode.
    let mut v = minimal();
    v["networks"] = json!([{"target": "n", "alias": ["x"]}]);
    assert!(spec_error(v).contains("unknown field `alias`"));
    let mut v = minimal();
    v["endpoint"] = json!({"mode": "dnsr"});
    assert!(spec_error(v).contains("unknown variant `dnsr`"));
    let mut v = minimal();
    v["endpoint"] = json!({"mode": "dnsrr", "ports": [{"published": 80, "target": 80, "mode": "ingress"}]});
    let s: ServiceSpec = serde_json::from_value(v).expect("ingress port");
    assert_eq!(s.endpoint.mode, shoal_types::EndpointMode::Dnsrr);
    assert_eq!(s.endpoint.ports[0].mode, shoal_types::PublishMode::Ingress);
}

#[test]
fn objects_from_before_networks_read_back() {
    // A service, a task and a port as an older version wrote them: no networks, no endpoint mode,
    // no VIPs, no task addresses. They read back with today's defaults (host ports, vip mode).
    let svc = json!({
        "id": "s1", "version": 2, "created_at": "1970-01-01T00:00:00Z", "updated_at": "1970-01-01T00:00:00Z",
        "spec": {"name": "web", "task_template": {"command": ["x"]},
                 "endpoint": {"ports": [{"published": 80, "target": 80, "protocol": "tcp", "mode": "host"}]}},
        "spec_version": 1
    });
    let s: Service = serde_json::from_value(svc).expect("old service");
    assert!(s.spec.networks.is_empty() && s.endpoint.vips.is_empty());
    assert_eq!(s.spec.endpoint.mode, shoal_types::EndpointMode::Vip);
    assert_eq!(s.spec.endpoint.host_ports().collect::<Vec<_>>(), vec![(shoal_types::Protocol::Tcp, 80)]);
    let port: shoal_types::PortConfig =
        serde_json::from_value(json!({"published": 81, "target": 81})).expect("port");
    assert_eq!(port.mode, shoal_types::PublishMode::Host);
    // And what is written without networks stays as it was (no new keys), so a version without
    // networks (an older replica replaying the log, an older CLI) still reads it.
    let text = serde_json::to_string(&s).expect("json");
    assert!(!text.contains("vips") && !text.contains("networks") && !text.contains("\"vip\""), "{text}");
    let mut with = s.clone();
    with.endpoint.vips = vec![shoal_types::VirtualIp {
        network_id: shoal_types::NetworkId::new("n1"),
        addr: "10.0.1.2/24".into(),
    }];
    let back: Service = serde_json::from_str(&serde_json::to_string(&with).expect("json")).expect("back");
    assert_eq!(back, with);
}
