//! The node's resolver: UDP and TCP port 53 on the node's own address on every network, so a
//! task asks the node it runs on (its `resolv.conf` names that address). Answers are scoped to
//! the network the question arrived on — the address it was sent to tells which:
//!
//! - `NAME` (and its aliases): the service's VIP, or with `dnsrr` its ready tasks' addresses;
//! - `tasks.NAME`: the addresses of its ready tasks;
//! - `NAME.SLOT.TASKID` and `TASKID`: one task's address; PTR for task addresses.
//!
//! Records come from the same view as the nftables rules, so names and load balancing never
//! disagree, and change as soon as the view does (TTL 1 s). Other names go to the DNS servers
//! of the task that asked (`--dns`: the view lists them by the task's addresses, and the query's
//! source address tells which task asked), else to the node's own resolvers (`/etc/resolv.conf`),
//! in order, the next on a timeout or failure; without any, the answer is NXDOMAIN.

use crate::view::NetView;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TTL: u32 = 1;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Names and addresses of one network.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Zone {
    pub names: BTreeMap<String, Vec<Ipv4Addr>>,
    pub ptr: BTreeMap<Ipv4Addr, String>,
}

/// The zones of every network, by the node's address on it.
pub fn zones(view: &NetView) -> BTreeMap<Ipv4Addr, Zone> {
    let mut out = BTreeMap::new();
    for n in &view.networks {
        let Ok(local) = n.local_addr.parse::<Ipv4Addr>() else { continue };
        let mut z = Zone::default();
        for s in &view.services {
            let addr_on = |a: &crate::ViewAddr| {
                (a.network_id == n.id).then(|| crate::host_of(&a.addr).parse().ok()).flatten()
            };
            let mut ready: Vec<Ipv4Addr> =
                s.tasks.iter().filter(|t| t.ready).flat_map(|t| t.addrs.iter().filter_map(addr_on)).collect();
            ready.sort();
            ready.dedup();
            let vips: Vec<Ipv4Addr> = s.vips.iter().filter_map(addr_on).collect();
            let on_net =
                !vips.is_empty() || s.tasks.iter().any(|t| t.addrs.iter().any(|a| a.network_id == n.id));
            if !on_net {
                continue;
            }
            let name = s.name.to_ascii_lowercase();
            let service_addrs = if s.dnsrr { ready.clone() } else { vips };
            let mut names = vec![name.clone()];
            names.extend(
                s.aliases.iter().filter(|a| a.network_id == n.id).map(|a| a.name.to_ascii_lowercase()),
            );
            for nm in names {
                z.names.insert(nm.clone(), service_addrs.clone());
                z.names.insert(format!("tasks.{nm}"), ready.clone());
            }
            for t in &s.tasks {
                for a in t.addrs.iter().filter_map(addr_on) {
                    let task_id = t.id.to_ascii_lowercase();
                    let full = match t.slot {
                        Some(slot) => format!("{name}.{slot}.{task_id}"),
                        None => format!("{name}.{task_id}"),
                    };
                    z.ptr.insert(a, format!("{full}.{}", n.name.to_ascii_lowercase()));
                    z.names.insert(full, vec![a]);
                    z.names.insert(task_id, vec![a]);
                }
            }
        }
        out.insert(local, z);
    }
    out
}

/// `in-addr.arpa` name → address.
fn reverse(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = rest.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

/// What the zone says to `query` (None: not ours; ask upstream).
pub fn answer(zone: &Zone, request: &Message) -> Option<Message> {
    let q = request.queries.first()?;
    let qname = q.name().to_ascii().to_ascii_lowercase();
    let key = qname.trim_end_matches('.');
    let mut resp = Message::response(request.metadata.id, OpCode::Query);
    resp.metadata.recursion_desired = request.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.add_query(q.clone());
    if let Some(addr) = reverse(key) {
        let target = zone.ptr.get(&addr)?;
        if q.query_type() == RecordType::PTR {
            let ptr = Name::from_ascii(format!("{target}.")).ok()?;
            resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(ptr))));
        }
        return Some(resp);
    }
    let addrs = zone.names.get(key)?;
    match q.query_type() {
        RecordType::A | RecordType::ANY => {
            for a in addrs {
                resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(*a))));
            }
        }
        // Known name, no record of that type (no IPv6 on the overlays): an empty answer, so
        // clients do not wait for one.
        _ => {}
    }
    Some(resp)
}

/// The node's own resolvers, from `/etc/resolv.conf`.
pub fn upstreams() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The DNS servers of the tasks that have their own (port 53), by each of the tasks' addresses.
/// Entries that are not IP addresses are left out (validation refuses them); a task with none
/// left asks the node's resolvers.
pub fn task_upstreams(view: &NetView) -> BTreeMap<Ipv4Addr, Vec<SocketAddr>> {
    let mut out = BTreeMap::new();
    for t in view.services.iter().flat_map(|s| &s.tasks) {
        let servers: Vec<SocketAddr> = t
            .dns_servers
            .iter()
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        if servers.is_empty() {
            continue;
        }
        for a in &t.addrs {
            if let Ok(ip) = crate::host_of(&a.addr).parse::<Ipv4Addr>() {
                out.insert(ip, servers.clone());
            }
        }
    }
    out
}

/// Asks `upstreams` in order (UDP); None when none answered.
async fn forward(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else { continue };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// What the listeners share: the records and the upstreams, replaced as a whole by each view.
#[derive(Default)]
struct Shared {
    zones: RwLock<BTreeMap<Ipv4Addr, Zone>>,
    /// The servers of tasks that have their own, by the tasks' addresses.
    by_source: RwLock<BTreeMap<Ipv4Addr, Arc<Vec<SocketAddr>>>>,
    /// The node's resolvers.
    node: Arc<Vec<SocketAddr>>,
}

impl Shared {
    /// Where names the cluster does not own go, for a query from `source`.
    fn upstreams_for(&self, source: IpAddr) -> Arc<Vec<SocketAddr>> {
        let v4 = match source {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        let by_source = self.by_source.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        v4.and_then(|a| by_source.get(&a)).cloned().unwrap_or_else(|| self.node.clone())
    }
}

async fn resolve(shared: &Shared, local: Ipv4Addr, source: IpAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(bytes).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let answered = {
        let z = shared.zones.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        z.get(&local).map(|zone| answer(zone, &request))
    };
    match answered {
        Some(Some(resp)) => resp.to_vec().ok(),
        _ => match forward(&shared.upstreams_for(source), bytes).await {
            Some(resp) => Some(resp),
            None => {
                let none = shared.upstreams_for(source).is_empty();
                let code = if none { ResponseCode::NXDomain } else { ResponseCode::ServFail };
                let mut resp = Message::error_msg(request.metadata.id, OpCode::Query, code);
                resp.metadata.recursion_desired = request.metadata.recursion_desired;
                resp.metadata.recursion_available = true;
                resp.queries = request.queries.clone();
                resp.to_vec().ok()
            }
        },
    }
}

async fn serve_udp(sock: tokio::net::UdpSocket, shared: Arc<Shared>, local: Ipv4Addr) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
        let query = buf[..n].to_vec();
        let (sock, shared) = (sock.clone(), shared.clone());
        tokio::spawn(async move {
            if let Some(resp) = resolve(&shared, local, from.ip(), &query).await {
                let _ = sock.send_to(&resp, from).await;
            }
        });
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>, local: Ipv4Addr) {
    loop {
        let Ok((mut conn, from)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok(Ok(len)) = tokio::time::timeout(Duration::from_secs(10), conn.read_u16()).await else {
                    return;
                };
                let mut query = vec![0u8; usize::from(len)];
                if conn.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Some(resp) = resolve(&shared, local, from.ip(), &query).await else { return };
                let Ok(len) = u16::try_from(resp.len()) else { return };
                if conn.write_u16(len).await.is_err() || conn.write_all(&resp).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The resolver of one node: listeners on the node's addresses, records from the newest view.
pub struct Dns {
    shared: Arc<Shared>,
    listeners: tokio::sync::Mutex<BTreeMap<Ipv4Addr, Vec<tokio::task::JoinHandle<()>>>>,
}

impl Default for Dns {
    fn default() -> Self {
        Dns::new(upstreams())
    }
}

impl Dns {
    /// A resolver that forwards to `upstreams` (the node's resolvers) what it does not own.
    pub fn new(upstreams: Vec<SocketAddr>) -> Dns {
        let shared = Shared { node: Arc::new(upstreams), ..Default::default() };
        Dns { shared: Arc::new(shared), listeners: Default::default() }
    }

    /// Takes the records and the tasks' own servers of `view` (replacing the previous view's
    /// whole) and returns the node's addresses to answer on.
    fn take(&self, view: &NetView) -> Vec<Ipv4Addr> {
        let zones = zones(view);
        let wanted: Vec<Ipv4Addr> = zones.keys().copied().collect();
        let by_source = task_upstreams(view).into_iter().map(|(a, u)| (a, Arc::new(u))).collect();
        *self.shared.zones.write().unwrap_or_else(std::sync::PoisonError::into_inner) = zones;
        *self.shared.by_source.write().unwrap_or_else(std::sync::PoisonError::into_inner) = by_source;
        wanted
    }

    /// Where a query from `source` goes when the cluster does not own its name: the asking
    /// task's own servers, else the node's resolvers.
    pub fn upstreams_for(&self, source: IpAddr) -> Vec<SocketAddr> {
        self.shared.upstreams_for(source).to_vec()
    }

    /// Takes the records of `view` and listens on the node's address on each of its networks
    /// (the addresses must exist: call after [`crate::Net::reconcile`]). Returns the addresses it
    /// could not listen on, with why.
    pub async fn update(&self, view: &NetView) -> Vec<(Ipv4Addr, String)> {
        let wanted = self.take(view);
        let mut listeners = self.listeners.lock().await;
        listeners.retain(|addr, tasks| {
            let keep = wanted.contains(addr);
            if !keep {
                tasks.iter().for_each(|t| t.abort());
            }
            keep
        });
        let mut failed = Vec::new();
        for addr in wanted {
            if listeners.contains_key(&addr) {
                continue;
            }
            let at = SocketAddr::from((addr, 53));
            let udp = match tokio::net::UdpSocket::bind(at).await {
                Ok(s) => s,
                Err(e) => {
                    failed.push((addr, format!("UDP {at}: {e}")));
                    continue;
                }
            };
            let tcp = match tokio::net::TcpListener::bind(at).await {
                Ok(s) => s,
                Err(e) => {
                    failed.push((addr, format!("TCP {at}: {e}")));
                    continue;
                }
            };
            let u = tokio::spawn(serve_udp(udp, self.shared.clone(), addr));
            let t = tokio::spawn(serve_tcp(tcp, self.shared.clone(), addr));
            listeners.insert(addr, vec![u, t]);
        }
        failed
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Ok(l) = self.listeners.try_lock() {
            l.values().flatten().for_each(|t| t.abort());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{ViewAddr, ViewNetwork, ViewService, ViewTask};
    use hickory_proto::op::Query;

    fn view() -> NetView {
        let addr = |n: &str, a: &str| ViewAddr { network_id: n.into(), addr: a.into() };
        NetView {
            networks: vec![
                ViewNetwork {
                    id: "n1".into(),
                    name: "front".into(),
                    local_addr: "10.0.1.250".into(),
                    ..Default::default()
                },
                ViewNetwork {
                    id: "n2".into(),
                    name: "back".into(),
                    local_addr: "10.0.2.250".into(),
                    ..Default::default()
                },
            ],
            services: vec![
                ViewService {
                    name: "Web".into(),
                    vips: vec![addr("n1", "10.0.1.2/24")],
                    tasks: vec![
                        ViewTask {
                            id: "aaa".into(),
                            slot: Some(1),
                            addrs: vec![addr("n1", "10.0.1.3/24")],
                            ready: true,
                            ..Default::default()
                        },
                        ViewTask {
                            id: "bbb".into(),
                            slot: Some(2),
                            addrs: vec![addr("n1", "10.0.1.4/24")],
                            ready: false,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
                ViewService {
                    name: "db".into(),
                    dnsrr: true,
                    tasks: vec![ViewTask {
                        id: "ccc".into(),
                        slot: Some(1),
                        addrs: vec![addr("n2", "10.0.2.3/24")],
                        ready: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn ask(zone: &Zone, name: &str, t: RecordType) -> Option<Vec<String>> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
        let r = answer(zone, &m)?;
        Some(r.answers.iter().map(|a| a.data.to_string()).collect())
    }

    #[test]
    fn names_resolve_on_their_network_only() {
        let z = zones(&view());
        let front = &z[&"10.0.1.250".parse().expect("ip")];
        let back = &z[&"10.0.2.250".parse().expect("ip")];
        assert_eq!(ask(front, "web.", RecordType::A), Some(vec!["10.0.1.2".to_string()]));
        assert_eq!(ask(front, "WEB", RecordType::A), Some(vec!["10.0.1.2".to_string()]), "case-insensitive");
        assert_eq!(
            ask(front, "tasks.web", RecordType::A),
            Some(vec!["10.0.1.3".to_string()]),
            "only ready tasks"
        );
        assert_eq!(ask(front, "web.2.bbb", RecordType::A), Some(vec!["10.0.1.4".to_string()]));
        assert_eq!(ask(front, "web", RecordType::AAAA), Some(vec![]), "known name, no IPv6");
        assert_eq!(ask(front, "db", RecordType::A), None, "another network's service is not ours");
        assert_eq!(
            ask(back, "db", RecordType::A),
            Some(vec!["10.0.2.3".to_string()]),
            "dnsrr: task addresses"
        );
        assert_eq!(
            ask(front, "3.1.0.10.in-addr.arpa.", RecordType::PTR),
            Some(vec!["web.1.aaa.front.".to_string()])
        );
    }

    fn ip(a: &str) -> IpAddr {
        a.parse().expect("ip")
    }

    fn sock(a: &str) -> SocketAddr {
        a.parse().expect("socket address")
    }

    /// `view()` with task aaa (10.0.1.3, and 10.0.2.9 on back) asking its own servers.
    fn view_with_servers(servers: &[&str]) -> NetView {
        let mut v = view();
        let aaa = &mut v.services[0].tasks[0];
        aaa.addrs.push(ViewAddr { network_id: "n2".into(), addr: "10.0.2.9/24".into() });
        aaa.dns_servers = servers.iter().map(|s| s.to_string()).collect();
        v
    }

    #[test]
    fn a_task_with_servers_of_its_own_gets_them_by_its_addresses() {
        let dns = Dns::new(vec![sock("192.0.2.1:53")]);
        let node = vec![sock("192.0.2.1:53")];
        let own = vec![sock("198.51.100.53:53"), sock("[2001:db8::53]:53")];
        // Nothing from the view yet: the node's resolvers for everyone.
        assert_eq!(dns.upstreams_for(ip("10.0.1.3")), node);
        dns.take(&view_with_servers(&["198.51.100.53", "2001:db8::53", "not-an-ip"]));
        assert_eq!(dns.upstreams_for(ip("10.0.1.3")), own, "in order; what is no address is left out");
        assert_eq!(dns.upstreams_for(ip("10.0.2.9")), own, "from its address on every network");
        assert_eq!(dns.upstreams_for(ip("::ffff:10.0.1.3")), own, "an IPv4-mapped source");
        assert_eq!(dns.upstreams_for(ip("10.0.1.4")), node, "a task without servers: the node's");
        assert_eq!(dns.upstreams_for(ip("10.0.1.250")), node, "the node itself");
        // The same view again changes nothing; one without the servers takes them away.
        dns.take(&view_with_servers(&["198.51.100.53", "2001:db8::53", "not-an-ip"]));
        assert_eq!(dns.upstreams_for(ip("10.0.1.3")), own);
        dns.take(&view());
        assert_eq!(dns.upstreams_for(ip("10.0.1.3")), node);
        // Nothing usable: the node's.
        dns.take(&view_with_servers(&["dns.example"]));
        assert_eq!(dns.upstreams_for(ip("10.0.1.3")), node);
        assert!(task_upstreams(&view_with_servers(&["dns.example"])).is_empty());
    }

    #[test]
    fn views_without_servers_read_and_serialize_as_before() {
        let old = r#"{"id":"aaa","slot":1,"node_id":"n1","addrs":[{"network_id":"n1","addr":"10.0.1.3"}],"ready":true}"#;
        let t: ViewTask = serde_json::from_str(old).expect("an older view's task");
        assert!(t.dns_servers.is_empty());
        assert_eq!(serde_json::to_string(&t).expect("json"), old, "no new key when there are no servers");
        let with = ViewTask { dns_servers: vec!["1.1.1.1".into()], ..t };
        let back: ViewTask =
            serde_json::from_str(&serde_json::to_string(&with).expect("json")).expect("read");
        assert_eq!(back.dns_servers, ["1.1.1.1"]);
    }

    /// A server on loopback that answers every A query with `addr` (None: never answers).
    async fn upstream(addr: Option<Ipv4Addr>) -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let at = sock.local_addr().expect("address");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let (Some(addr), Ok(q)) = (addr, Message::from_vec(&buf[..n])) else { continue };
                let Some(query) = q.queries.first().cloned() else { continue };
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(A(addr))));
                r.add_query(query);
                let _ = sock.send_to(&r.to_vec().expect("encode"), from).await;
            }
        });
        at
    }

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), RecordType::A));
        m.to_vec().expect("encode")
    }

    fn answers(resp: Option<Vec<u8>>) -> (ResponseCode, Vec<String>) {
        let m = Message::from_vec(&resp.expect("a response")).expect("decode");
        (m.metadata.response_code, m.answers.iter().map(|a| a.data.to_string()).collect())
    }

    #[tokio::test]
    async fn other_names_go_to_the_asking_tasks_servers_next_on_timeout() {
        let silent = upstream(None).await;
        let own = upstream(Some(Ipv4Addr::new(192, 0, 2, 7))).await;
        let node = upstream(Some(Ipv4Addr::new(192, 0, 2, 1))).await;
        let v = view_with_servers(&["192.0.2.53"]);
        let shared = Shared {
            zones: RwLock::new(zones(&v)),
            // What `task_upstreams` gives, with the test's ports.
            by_source: RwLock::new(BTreeMap::from([(
                Ipv4Addr::new(10, 0, 1, 3),
                Arc::new(vec![silent, own]),
            )])),
            node: Arc::new(vec![node]),
        };
        let local = Ipv4Addr::new(10, 0, 1, 250);
        let (aaa, bbb) = (ip("10.0.1.3"), ip("10.0.1.4"));
        let started = std::time::Instant::now();
        let got = answers(resolve(&shared, local, aaa, &query("ext.example.")).await);
        assert_eq!(got, (ResponseCode::NoError, vec!["192.0.2.7".to_string()]), "the task's second server");
        assert!(started.elapsed() >= UPSTREAM_TIMEOUT, "after the first timed out");
        let got = answers(resolve(&shared, local, bbb, &query("ext.example.")).await);
        assert_eq!(got, (ResponseCode::NoError, vec!["192.0.2.1".to_string()]), "another task: the node's");
        // The cluster's names answer as before, for both.
        for from in [aaa, bbb] {
            let got = answers(resolve(&shared, local, from, &query("web.")).await);
            assert_eq!(got, (ResponseCode::NoError, vec!["10.0.1.2".to_string()]));
        }
        // Servers that all fail: SERVFAIL; no servers anywhere: NXDOMAIN.
        let shared = Shared {
            by_source: RwLock::new(BTreeMap::from([(Ipv4Addr::new(10, 0, 1, 3), Arc::new(vec![silent]))])),
            ..Default::default()
        };
        let got = answers(resolve(&shared, local, aaa, &query("ext.example.")).await);
        assert_eq!(got.0, ResponseCode::ServFail);
        let got = answers(resolve(&shared, local, bbb, &query("ext.example.")).await);
        assert_eq!(got.0, ResponseCode::NXDomain);
    }
}
