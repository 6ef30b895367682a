//! Docker tasks on overlay networks across simulated hosts: each `shoal daemon` runs in its own
//! network namespace (as in `networking.rs`) while the one dockerd of the machine runs in the
//! root namespace, so the infra container that holds a task's namespace is made by an engine
//! outside the node's namespace and plumbed by the node into the node's own sandboxes.
//!
//! The "done when": a two-service application (web serving HTTP with its port published
//! through the routing mesh, a client reaching it by name) on three hosts with the docker driver.

use serde_json::Value;

mod common;
use common::sim::{task_namespaces, three_hosts, Underlay};
use common::{addr_of, daemon_log, eventually, eventually_or, task_of, DockerImage, Node};

/// Every task id of `services` the managers list (running or history).
fn task_ids(n: &Node, services: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for s in services {
        let v = n.json(&["service", "ps", s, "--format", "json"]);
        ids.extend(v.as_array().into_iter().flatten().filter_map(|t| t["id"].as_str().map(str::to_string)));
    }
    ids
}

#[test]
fn a_two_service_docker_application_across_three_hosts_by_name_and_through_the_routing_mesh() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("dock", 3);
    let image = DockerImage::import(&tmp.path().join("img"), "shoal-netdocker-app");
    let hosts = three_hosts(&ul, tmp.path());
    let m = &hosts[0];
    m.ok(&["network", "create", "front"]);

    // web: a docker task on h1 only, its port 80 published on 8080 through the routing mesh.
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--driver",
        "docker",
        "--network",
        "front",
        "--constraint",
        "node.hostname==h1",
        "--publish",
        "published=8080,target=80,mode=ingress",
        &image.0,
        "sh",
        "-c",
        "busybox mkdir -p /www && echo hello from a docker web > /www/index.html && \
         exec busybox httpd -f -p 80 -h /www",
    ]);
    // client: a docker task on h2 only, fetching http://web/ by name again and again into a
    // directory of the test (bind-mounted). With busybox's nc: the wget of Debian's static busybox
    // 1.35 crashes (SIGSEGV) on any URL, also outside containers.
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let mount = format!("type=bind,source={},target=/out", out.display());
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "client",
        "--driver",
        "docker",
        "--network",
        "front",
        "--constraint",
        "node.hostname==h2",
        "--mount",
        &mount,
        &image.0,
        "sh",
        "-c",
        "while :; do busybox printf 'GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' | busybox nc -w 2 web 80 > /out/got.tmp \
         && busybox mv /out/got.tmp /out/got; sleep 0.2; done",
    ]);

    let diagnose = || {
        let ps = |s: &str| String::from_utf8_lossy(&m.cli(&["service", "ps", s]).stdout).into_owned();
        format!(
            "web:\n{}\nclient:\n{}\ncontainers: {:?}\nh1 log:\n{}\nh2 log:\n{}",
            ps("web"),
            ps("client"),
            image.containers(""),
            daemon_log(&hosts[0]),
            daemon_log(&hosts[1])
        )
    };
    let web = eventually_or(90, || task_of(m, "web"), diagnose);
    let client = eventually_or(90, || task_of(m, "client"), diagnose);
    assert_eq!(web["node_id"], hosts_node_id(m, "h1"), "web runs on h1");
    assert_eq!(client["node_id"], hosts_node_id(m, "h2"), "client runs on h2");

    // The client on h2 gets the page of the task on h1, by name, over the overlay.
    let got = out.join("got");
    eventually_or(
        60,
        || std::fs::read_to_string(&got).ok().filter(|s| s.contains("hello from a docker web")).map(|_| ()),
        diagnose,
    );
    // Each task is its container plus an infra container, which holds the namespace.
    for (t, name) in [(&web, "web"), (&client, "client")] {
        let id = t["id"].as_str().expect("id");
        let mut names: Vec<String> = image.containers("").into_iter().filter(|c| c.contains(id)).collect();
        names.sort();
        // Swarm's name for the task's own: SERVICE.SLOT.TASKID.
        let mut want = vec![format!("shoal-{id}-infra"), format!("{name}.1.{id}")];
        want.sort();
        assert_eq!(names, want, "{name}'s containers");
    }

    // The name resolves at h2's resolver, from the client's namespace.
    let client_id = client["id"].as_str().expect("id");
    let client_ns =
        format!("{}t-{client_id}", Underlay::prefix_of(client["node_id"].as_str().expect("node")));
    let resolv =
        std::fs::read_to_string(hosts[1].dir.join(format!("data/agent/net/resolv/{client_id}.conf")))
            .expect("the client's resolv.conf");
    let dns = resolv.lines().find_map(|l| l.strip_prefix("nameserver ")).expect("nameserver").to_string();
    let dig = ul.run_in(&client_ns, &format!("dig +short +time=2 +tries=1 @{dns} tasks.web"));
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), addr_of(&web).expect("web's address"));

    // The published port answers on every host, also h3, which runs no task of web.
    for i in [3, 1, 2] {
        eventually_or(
            20,
            || {
                let out = ul.run_in(&ul.name(), &format!("curl -s -m 3 http://198.51.100.{i}:8080/"));
                String::from_utf8_lossy(&out.stdout).contains("hello from a docker web").then_some(())
            },
            || format!("the routing mesh on h{i}\n{}", diagnose()),
        );
    }

    // Removing the services leaves no namespace and no container of any of their tasks.
    let ids = task_ids(m, &["web", "client"]);
    m.ok(&["service", "rm", "web", "client"]);
    eventually_or(
        60,
        || (task_namespaces(&ids).is_empty() && image.containers("").is_empty()).then_some(()),
        || format!("left: {:?} {:?}\n{}", task_namespaces(&ids), image.containers(""), diagnose()),
    );
    eventually(30, "the network removed", || {
        m.cli(&["network", "rm", "front"]).status.success().then_some(())
    });
}

/// The node id of the node whose hostname is `name`.
fn hosts_node_id(m: &Node, name: &str) -> Value {
    let nodes = m.json(&["node", "ls", "--format", "json"]);
    nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["description"]["hostname"] == name))
        .map(|n| n["id"].clone())
        .unwrap_or(Value::Null)
}
