//! `cluster init --data-path-port`: the VXLAN port between nodes, chosen once for the cluster, on
//! simulated hosts (see `common::sim`): a port out of range is refused before anything is made,
//! the tunnels of every node use the chosen one, a restart changes nothing, and a VXLAN device
//! found with another port is made again.

use std::process::Command;

mod common;
use common::sim::{start_hosts, web_server, Underlay};
use common::{daemon_log_plain, eventually, eventually_or, task_of, Node};

const PORT: &str = "7789";

/// `POST /v1/cluster/init` with `body` on `n`'s API socket: the status line's code and the body.
fn post_init(n: &Node, body: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(n.dir.join("shoal.sock"))
        .args(["-X", "POST", "-H", "content-type: application/json", "-d", body])
        .args(["-w", "\n%{http_code}", "http://shoal/v1/cluster/init"])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `n` is in no cluster: `cluster inspect` says so and it has no certificate.
fn assert_no_cluster(n: &Node) {
    let out = n.cli(&["cluster", "inspect"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not in a cluster"), "{err}");
    assert!(!n.dir.join("data/tls/node.crt").exists(), "a certificate was made");
}

/// What `ip -d link show` says of `vx<vni>` in `ns`.
fn vxlan_details(ul: &Underlay, ns: &str, vni: u64) -> String {
    let out = ul.run_in(ns, &format!("ip -d link show vx{vni}"));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_data_path_port_chosen_at_init_carries_the_overlay_and_a_device_with_another_is_made_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ul = Underlay::new("dpp", 2);
    let mut hosts = start_hosts(&ul, tmp.path(), 2);
    let m = &hosts[0];

    // Out of range: refused by the CLI and by the API, before anything is created.
    let out = m.cli(&["cluster", "init", "--data-path-port", "80"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "init with port 80 succeeded");
    assert!(err.contains("data path port 80 is out of range") && err.contains("1024-49151"), "{err}");
    assert_no_cluster(m);
    let answer = post_init(m, r#"{"data_path_port": 80}"#);
    assert!(answer.ends_with("\n400") && answer.contains("1024-49151"), "{answer}");
    let answer = post_init(m, r#"{"data_path_port": 70000}"#);
    assert!(answer.ends_with("\n400") && answer.contains("data path port 70000 is out of range"), "{answer}");
    assert_no_cluster(m);

    m.ok(&["cluster", "init", "--data-path-port", PORT]);
    let inspect = m.ok(&["cluster", "inspect"]);
    assert!(inspect.contains(&format!("Data path port: {PORT}")), "{inspect}");
    assert_eq!(m.json(&["cluster", "inspect", "--format", "json"])["data_path_port"], 7789);
    common::join_worker(m, &hosts[1]);

    // web on h1, a client on h2 that fetches http://web/ by name: over the tunnel.
    m.ok(&["network", "create", "front"]);
    let net = m.json(&["network", "inspect", "front", "--format", "json"]);
    let net = if net.is_array() { net[0].clone() } else { net };
    let vni = net["status"]["vni"].as_u64().expect("vni");
    web_server(m, tmp.path(), "web", "front", &["--constraint", "node.hostname==h1"], "hello from web\n");
    let got = common::sim::fetcher(m, tmp.path(), "client", "front", Some("node.hostname==h2"), "web");
    eventually(60, "web running", || task_of(m, "web"));
    eventually(60, "client running", || task_of(m, "client"));
    let answered = || std::fs::read_to_string(&got).ok().filter(|s| s.contains("hello from web")).map(|_| ());
    eventually_or(30, answered, || daemon_log_plain(&hosts[1]));

    // Both ends of the tunnel use the cluster's port.
    let sandbox_of = |n: &Node| format!("{}n{vni}", Underlay::prefix_of(&n.node_id()));
    let sandboxes: Vec<String> = hosts.iter().map(sandbox_of).collect();
    for ns in &sandboxes {
        let d = vxlan_details(&ul, ns, vni);
        assert!(d.contains(&format!("dstport {PORT} ")), "vx{vni} in {ns}: {d}");
    }

    // A restart of h2's daemon finds everything as the view wants it: nothing is made again.
    let before = daemon_log_plain(&hosts[1]).len();
    hosts[1].kill9();
    hosts[1].start("daemon");
    let checked = eventually(30, "h2's networks checked on start", || {
        let log = daemon_log_plain(&hosts[1]);
        log[before.min(log.len())..]
            .lines()
            .find(|l| l.contains("networks checked on start"))
            .map(str::to_string)
    });
    assert!(checked.contains("changes=0"), "{checked}");

    // A device with another port in h2's sandbox (left by an earlier cluster, or by hand) is
    // made again with the cluster's port at the next change of the view, and traffic flows.
    let h2_sandbox = &sandboxes[1];
    let tamper = format!(
        "ip link del vx{vni} && ip link add vx{vni} type vxlan id {vni} dstport 4789 local 198.51.100.2 \
         nolearning proxy && ip link set vx{vni} master br0 up"
    );
    let out = ul.run_in(h2_sandbox, &tamper);
    assert!(out.status.success(), "{tamper}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(vxlan_details(&ul, h2_sandbox, vni).contains("dstport 4789 "));
    let m = &hosts[0];
    m.ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "nudge",
        "--driver",
        "process",
        "--network",
        "front",
        "--constraint",
        "node.hostname==h2",
        "sleep",
        "600",
    ]);
    eventually_or(
        30,
        || vxlan_details(&ul, h2_sandbox, vni).contains(&format!("dstport {PORT} ")).then_some(()),
        || format!("{}\n{}", vxlan_details(&ul, h2_sandbox, vni), daemon_log_plain(&hosts[1])),
    );
    assert!(daemon_log_plain(&hosts[1]).contains("the VXLAN port differs: recreating the device"));
    std::fs::remove_file(&got).expect("remove the last answer");
    eventually_or(30, answered, || daemon_log_plain(&hosts[1]));

    common::remove_services_and_wait(m, &["web", "client", "nudge"], &[&hosts[0], &hosts[1]]);
}
