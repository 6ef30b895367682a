//! How long the node's ruleset takes to load at scale: renders views with N services (one VIP,
//! two backends, one published port each), loads them with `nft -f` in the current network
//! namespace, then changes one service's backends and loads the difference, and finally replaces
//! the whole table (what a node does on its first load or when a network comes or goes). Run in
//! a scratch namespace:
//! `ip netns add scale && nsenter --net=/run/netns/scale target/release/examples/nft_scale 1000 10000`.

use shoal_net::{NetView, ViewAddr, ViewNetwork, ViewPort, ViewService, ViewTask};
use std::time::Instant;

fn view(services: usize, shift: usize) -> NetView {
    let addr = |i: usize| format!("10.{}.{}.{}", 8 + i / 65536, (i / 256) % 256, i % 256);
    let net = ViewNetwork {
        id: "n".into(),
        name: "n".into(),
        vni: 4097,
        subnet: "10.8.0.0/13".into(),
        local_addr: "10.15.255.250".into(),
        ..Default::default()
    };
    let services = (0..services)
        .map(|s| {
            let backend = |k: usize| ViewTask {
                id: format!("t{s}-{k}"),
                addrs: vec![ViewAddr {
                    network_id: "n".into(),
                    addr: addr(100_000 + s * 2 + k + shift * usize::from(s == 0)),
                }],
                ready: true,
                ..Default::default()
            };
            ViewService {
                id: format!("s{s}"),
                name: format!("svc{s}"),
                vips: vec![ViewAddr { network_id: "n".into(), addr: addr(s + 2) }],
                ingress_ports: vec![ViewPort {
                    protocol: "tcp".into(),
                    published: 10_000 + (s % 50_000) as u16,
                    target: 80,
                }],
                tasks: vec![backend(0), backend(1)],
                ..Default::default()
            }
        })
        .collect();
    NetView { networks: vec![net], services, ..Default::default() }
}

fn load(text: &str) -> std::time::Duration {
    let started = Instant::now();
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), text.as_bytes()).expect("write");
    assert!(child.wait().expect("wait").success(), "nft failed");
    started.elapsed()
}

fn main() {
    for n in std::env::args().skip(1).filter_map(|a| a.parse::<usize>().ok()) {
        let (v0, v1) = (view(n, 0), view(n, 7));
        let started = Instant::now();
        let old = shoal_net::nft::ruleset(&v0);
        let first = old.full();
        let render = started.elapsed();
        let full = load(&first);
        let started = Instant::now();
        let new = shoal_net::nft::ruleset(&v1);
        let update = new.update_from(&old).expect("same structure");
        let diff = started.elapsed();
        let change = load(&update);
        let replace = load(&new.full());
        println!(
            "{n} services: render {render:?}, first load {full:?}; one service's backends changed: \
             diff {diff:?} + element update {change:?} ({} bytes), or whole table replaced {replace:?} ({} bytes)",
            update.len(),
            first.len()
        );
    }
}
