//! The operator's view on every node (`shoal daemon --ui-addr`, default `127.0.0.1:5050`):
//!
//! - on a manager, the **web UI** (plain HTML/CSS/JS embedded in the binary, no build step) and
//!   the part of the `/v1` API it uses; on a worker, a page that points to the managers;
//! - on every node, Prometheus **`/metrics`** (OpenMetrics text).
//!
//! **Who may use it** is the API's rule, carried over:
//! - On a loopback address the listener is plain HTTP, and a connection is served only when the
//!   process at the other end runs as root or as the daemon's own user (the owner of the peer's
//!   socket in `/proc/net/tcp`), the same people the root-only API socket admits. `/metrics` is
//!   the exception (Prometheus runs as its own user; metrics hold ids and counts, no specs).
//!   Browser attacks are closed too: the `Host` header must name the loopback address (DNS
//!   rebinding), and every write needs the `X-Shoal-UI` header, which no cross-site form or
//!   simple request can send (CSRF).
//! - On any other address it is served only over TLS with a client certificate of the cluster
//!   (like `--api-addr`): import the one from `shoal cluster client-cert` into the browser. The
//!   certificate's client role applies ([`crate::roles`], checked by [`crate::tcp::serve_tcp`]
//!   for every request): with a read-only one the UI shows everything and its actions answer
//!   `403`.
//! - Either way the UI reaches only what it shows and its four actions: node availability,
//!   scale, rollback, and running a scheduled job now. Join tokens, certificates, membership and
//!   deletes stay with the CLI; so do creating, suspending, resuming and removing jobs. Of the
//!   key-value store it reads keys (`POST /v1/kv/range`, a read despite the method) and watches
//!   them; writes, compaction and leases stay with `shoal kv` and etcdctl.

use crate::logs::AgentSlot;
use crate::server::ApiError;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use shoal_manager::Manager;
use shoal_metrics::{as_gauge, metrics, ReasonLabels, StateLabels, TaskLabels};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE_CSS: &str = include_str!("../ui/style.css");
const WORKER_HTML: &str = include_str!("../ui/worker.html");

/// The header every write from the UI carries (a cross-site request cannot set it).
pub const UI_HEADER: &str = "x-shoal-ui";

/// Records every API request's latency by method, route template and status.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let resp = next.run(req).await;
    metrics().observe_request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

/// The metrics of this process as OpenMetrics text, with the state gauges refreshed from this
/// manager's replica (when it is one) and from the node's agent.
pub fn metrics_text(manager: Option<&Manager>, agent: &AgentSlot) -> String {
    metrics().encode_with(|mx| {
        if let Some(m) = manager.filter(|m| m.joined_as_worker().borrow().is_none()) {
            let raft = m.node.status();
            mx.raft_term.set(as_gauge(raft.term));
            mx.raft_last_log_index.set(as_gauge(raft.last_log_index.unwrap_or(0)));
            mx.raft_applied_index.set(as_gauge(raft.last_applied.unwrap_or(0)));
            mx.raft_commit_index.set(as_gauge(m.node.committed_index().unwrap_or(0)));
            mx.raft_is_leader.set(i64::from(m.node.is_leader()));
            let d = m.node.local_state();
            let s = &d.state;
            let mut tasks: BTreeMap<(String, String), i64> = BTreeMap::new();
            let mut unplaceable: BTreeMap<String, i64> = BTreeMap::new();
            for t in s.tasks() {
                let driver = t.spec.driver_candidates().join("|");
                *tasks.entry((t.status.state.to_string(), driver)).or_default() += 1;
                if t.status.state == shoal_types::TaskState::Pending && !t.status.err.is_empty() {
                    for reason in shoal_metrics::unplaceable_reasons(&t.status.err) {
                        *unplaceable.entry(reason).or_default() += 1;
                    }
                }
            }
            mx.tasks.clear();
            for ((state, driver), n) in tasks {
                mx.tasks.get_or_create(&TaskLabels { state, driver }).set(n);
            }
            mx.scheduler_unplaceable.clear();
            for (reason, n) in unplaceable {
                mx.scheduler_unplaceable.get_or_create(&ReasonLabels { reason }).set(n);
            }
            let mut nodes: BTreeMap<String, i64> = BTreeMap::new();
            for n in s.nodes() {
                let state =
                    serde_json::to_value(n.status.state).ok().and_then(|v| v.as_str().map(str::to_string));
                *nodes.entry(state.unwrap_or_default()).or_default() += 1;
            }
            mx.nodes.clear();
            for (state, n) in nodes {
                mx.nodes.get_or_create(&StateLabels { state }).set(n);
            }
            mx.services.set(as_gauge(s.services().len()));
        }
        mx.agent_tasks_running.clear();
        if let Some(agent) = agent.get() {
            for (driver, n) in agent.running_by_driver() {
                let labels = shoal_metrics::DriverLabels { driver: driver.to_string() };
                mx.agent_tasks_running.get_or_create(&labels).set(as_gauge(n));
            }
        }
    })
}

fn metrics_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, shoal_metrics::CONTENT_TYPE)], text).into_response()
}

/// How the listener authenticates its clients.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    /// Plain HTTP on this loopback address: root (or the daemon's user) only, `Host` checked.
    Loopback(SocketAddr),
    /// TLS with the cluster's client certificates, checked by the listener.
    Tls,
}

#[derive(Clone)]
struct UiState {
    manager: Option<Arc<Manager>>,
    agent: AgentSlot,
    access: Access,
}

/// The operator's view: UI and UI API when `api` is given (a manager), else the worker's page;
/// `/metrics` always.
pub fn ui_router(
    manager: Option<Arc<Manager>>,
    agent: AgentSlot,
    services: Option<crate::Services>,
    access: Access,
) -> Router {
    let st = UiState { manager: manager.clone(), agent: agent.clone(), access };
    let metrics_route = get(|State(st): State<UiState>| async move {
        metrics_response(metrics_text(st.manager.as_deref(), &st.agent))
    });
    let page = |body: &'static str, kind: &'static str| {
        get(move || async move { ([(header::CONTENT_TYPE, kind)], body).into_response() })
    };
    let html = "text/html; charset=utf-8";
    let mut r: Router = Router::new().route("/metrics", metrics_route).with_state(st.clone());
    match (manager, services) {
        (Some(m), Some(services)) => {
            let chronos = crate::chronos::router(m.clone());
            let api = crate::full_router(m, agent, services)
                .layer(axum::middleware::from_fn(only_what_the_ui_uses));
            r = r
                .merge(chronos)
                .route("/", page(INDEX_HTML, html))
                .route("/app.js", page(APP_JS, "text/javascript; charset=utf-8"))
                .route("/style.css", page(STYLE_CSS, "text/css; charset=utf-8"))
                .merge(api);
        }
        _ => r = r.route("/", page(WORKER_HTML, html)),
    }
    r.layer(axum::middleware::from_fn_with_state(st.access, guard))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' \
             data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn forbidden(msg: impl Into<String>) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg).into_response()
}

/// Who may ask: see the module documentation.
async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    if let Access::Loopback(listen) = access {
        if !host_allowed(req.headers().get(header::HOST), listen) {
            return forbidden("the Host header must name this loopback address");
        }
        if req.uri().path() != "/metrics" {
            let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
            let uid = peer.and_then(|p| peer_uid(listen, p));
            let me = rustix::process::geteuid().as_raw();
            if !uid.is_some_and(|u| u == 0 || u == me) {
                return forbidden(
                    "the web UI on a loopback address serves root (or the daemon's user) only, like the API \
                     socket",
                );
            }
        }
    }
    let chronos = crate::chronos::is_chronos_path(req.uri().path());
    if req.method() != Method::GET
        && req.method() != Method::HEAD
        && !chronos
        && !req.headers().contains_key(UI_HEADER)
    {
        return forbidden(format!("writes from the web UI carry the {UI_HEADER} header"));
    }
    next.run(req).await
}

fn host_allowed(host: Option<&HeaderValue>, listen: SocketAddr) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else { return false };
    let port = listen.port();
    let names = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        listen.to_string(),
    ];
    names.iter().any(|n| n.eq_ignore_ascii_case(host))
}

/// The routes the UI uses; everything else answers 403 here (use the CLI).
fn ui_route_allowed(method: &Method, path: &str) -> bool {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        (method.as_str(), seg.as_slice()),
        ("GET", ["v1", "cluster"] | ["v1", "cluster", "health"] | ["v1", "health"])
            | ("GET", ["v1", "nodes"] | ["v1", "nodes", _] | ["v1", "tasks"] | ["v1", "events"])
            | ("GET", ["v1", "services"] | ["v1", "services", _] | ["v1", "services", _, "logs"])
            | ("GET", ["v1", "jobs"] | ["v1", "jobs", "graph"])
            | ("GET", ["v1", "kv", "watch"])
            | ("POST", ["v1", "kv", "range"])
            | ("POST", ["v1", "nodes", _, "update"] | ["v1", "services", _, "scale" | "rollback"])
            | ("POST", ["v1", "jobs", _, "run"])
    )
}

/// Limits the UI's API to its routes, and node updates to availability (not role or labels).
async fn only_what_the_ui_uses(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if !ui_route_allowed(req.method(), &path) {
        return forbidden(format!("{} {path} is not available from the web UI: use the CLI", req.method()));
    }
    if !path.ends_with("/update") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("request body: {e}"))
                .into_response()
        }
    };
    let only_availability = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
        .is_ok_and(|o| o.keys().all(|k| k == "availability" || k == "version"));
    if !only_availability {
        return forbidden("the web UI changes a node's availability only: use the CLI for role and labels");
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// The uid owning the peer's end of a loopback TCP connection to `local`, from `/proc/net/tcp*`.
fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let table = if peer.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table).ok()?;
    find_owner(&text, peer, local)
}

/// In a `/proc/net/tcp` table, the uid of the socket `from` → `to`.
fn find_owner(table: &str, from: SocketAddr, to: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (l, r, uid) = (f.get(1)?, f.get(2)?, f.get(7)?);
        (parse_proc_addr(l)? == from && parse_proc_addr(r)? == to).then(|| uid.parse().ok())?
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word in host order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?.to_le_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::from(word(0)?),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::from(b)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Serves Chronos's API alone (`--chronos-addr`), with the web UI's rules for who may call: on a
/// loopback address plain HTTP for root (or the daemon's user) with the `Host` checked, else
/// mutual TLS with the cluster's client certificates, whose client role applies (a read-only
/// one lists and reads jobs and is refused every change: [`crate::roles`]).
pub async fn serve_chronos(listener: tokio::net::TcpListener, manager: Arc<Manager>) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let r = crate::chronos::router(manager.clone());
    if addr.ip().is_loopback() {
        tracing::info!(%addr, "Chronos API at http://{addr}/v1/scheduler/");
        let r = r.layer(axum::middleware::from_fn_with_state(Access::Loopback(addr), guard));
        return axum::serve(listener, r.into_make_service_with_connect_info::<SocketAddr>()).await;
    }
    tracing::info!(%addr, "Chronos API at https://{addr}/v1/scheduler/ (client certificate required)");
    let r = r.layer(axum::middleware::from_fn_with_state(Access::Tls, guard));
    crate::tcp::serve_tcp(listener, manager, r).await;
    Ok(())
}

/// Serves the operator's view on `listener`: plain HTTP with the loopback checks when it is a
/// loopback address, else mutual TLS (a manager's certificate; on a worker, loopback only).
pub async fn serve(
    listener: tokio::net::TcpListener,
    manager: Option<Arc<Manager>>,
    agent: AgentSlot,
    services: Option<crate::Services>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if addr.ip().is_loopback() {
        tracing::info!(%addr, "web UI and metrics at http://{addr}/");
        let r = ui_router(manager, agent, services, Access::Loopback(addr));
        return axum::serve(listener, r.into_make_service_with_connect_info::<SocketAddr>()).await;
    }
    let Some(m) = manager else {
        return Err(std::io::Error::other("a worker serves its metrics on a loopback address only"));
    };
    tracing::info!(%addr, "web UI and metrics at https://{addr}/ (client certificate required)");
    let r = ui_router(Some(m.clone()), agent, services, Access::Tls);
    crate::tcp::serve_tcp(listener, m, r).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses() {
        assert_eq!(parse_proc_addr("0100007F:1F90"), Some("127.0.0.1:8080".parse().expect("addr")));
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0016"),
            Some("[::1]:22".parse().expect("addr"))
        );
        assert_eq!(parse_proc_addr("zz:1"), None);
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                     0: 0100007F:13BA 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1 1\n   \
                     1: 0100007F:C350 0100007F:13BA 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n";
        let server: SocketAddr = "127.0.0.1:5050".parse().expect("addr");
        let client: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
        assert_eq!(find_owner(table, client, server), Some(1000));
        assert_eq!(find_owner(table, server, client), Some(0));
        assert_eq!(find_owner(table, "127.0.0.1:1".parse().expect("addr"), server), None);
    }

    #[test]
    fn this_process_owns_its_own_connections() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let me = rustix::process::geteuid().as_raw();
        assert_eq!(peer_uid(l.local_addr().expect("addr"), c.local_addr().expect("addr")), Some(me));
    }

    #[test]
    fn hosts() {
        let listen: SocketAddr = "127.0.0.1:5050".parse().expect("addr");
        let ok = |h: &str| host_allowed(Some(&HeaderValue::from_str(h).expect("header")), listen);
        assert!(ok("127.0.0.1:5050") && ok("localhost:5050") && ok("LOCALHOST:5050"));
        assert!(!ok("evil.example:5050") && !ok("127.0.0.1:5051") && !ok("localhost"));
        assert!(!host_allowed(None, listen));
    }

    #[test]
    fn the_ui_reaches_only_its_routes() {
        let get = |p| ui_route_allowed(&Method::GET, p);
        let post = |p| ui_route_allowed(&Method::POST, p);
        assert!(
            get("/v1/nodes")
                && get("/v1/services/web/logs")
                && get("/v1/events")
                && get("/v1/cluster/health")
        );
        assert!(
            post("/v1/services/web/scale")
                && post("/v1/services/web/rollback")
                && post("/v1/nodes/n1/update")
                && get("/v1/jobs")
                && get("/v1/jobs/graph")
                && post("/v1/jobs/nightly/run")
        );
        assert!(!post("/v1/jobs/nightly/suspend") && !post("/v1/jobs/nightly/resume"));
        assert!(!get("/v1/cluster/join-token/worker") && !post("/v1/cluster/client-cert"));
        assert!(!post("/v1/services") && !post("/v1/services/web/update") && !post("/v1/cluster/leave"));
        assert!(!ui_route_allowed(&Method::DELETE, "/v1/services/web") && !post("/v1/nodes/n1/update/x"));
    }

    #[test]
    fn the_ui_lists_jobs_and_runs_them_and_nothing_more() {
        let get = |p| ui_route_allowed(&Method::GET, p);
        let post = |p| ui_route_allowed(&Method::POST, p);
        assert!(get("/v1/jobs") && get("/v1/jobs/graph") && post("/v1/jobs/extract/run"));
        // Suspending, resuming and removing a job, or changing its spec, stay with the CLI.
        for p in ["/v1/jobs/x/suspend", "/v1/jobs/x/resume", "/v1/jobs/x", "/v1/jobs", "/v1/jobs/graph"] {
            assert!(!post(p), "POST {p} must stay refused");
        }
        for m in [Method::PUT, Method::DELETE, Method::PATCH] {
            for p in ["/v1/jobs", "/v1/jobs/x", "/v1/jobs/x/run", "/v1/jobs/graph", "/v1/services/x"] {
                assert!(!ui_route_allowed(&m, p), "{m} {p} must stay refused");
            }
        }
        // Only with the methods the page uses, and no deeper or other paths.
        assert!(!get("/v1/jobs/x/run") && !get("/v1/jobs/x") && !get("/v1/jobs/graph/x"));
        assert!(!post("/v1/jobs/x/run/y") && !post("/v1/jobs//run/x") && !post("/v1/services/x/run"));
    }

    #[test]
    fn the_ui_reads_the_kv_store_and_writes_nothing_there() {
        let get = |p| ui_route_allowed(&Method::GET, p);
        let post = |p| ui_route_allowed(&Method::POST, p);
        // Reads: a range (a POST that only reads) and a watch.
        assert!(post("/v1/kv/range") && get("/v1/kv/watch"));
        // Writes (put, delete, txn, compaction, lease grant and revoke all go to ops) and leases:
        // refused, whatever the method.
        for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            for p in [
                "/v1/kv/ops",
                "/v1/kv/leases",
                "/v1/kv/leases/1",
                "/v1/kv/leases/1/keepalive",
                "/v1/kv/range/x",
                "/v1/kv/watch/x",
                "/v1/kv",
                "/internal/kv/range",
                "/internal/kv/ops",
            ] {
                assert!(!ui_route_allowed(&m, p), "{m} {p} must stay refused");
            }
        }
        // Only with the methods that read.
        assert!(!get("/v1/kv/range") && !post("/v1/kv/watch"));
        assert!(
            !ui_route_allowed(&Method::PUT, "/v1/kv/range")
                && !ui_route_allowed(&Method::DELETE, "/v1/kv/watch")
        );
    }
}
