//! The Docker Engine API on a unix socket (`shoal daemon|dev --docker-socket PATH`): the swarm
//! subset the docker CLI uses for `version`, `info`, `node …`, `service …` (with its attached
//! progress and logs), `network …` (overlay), and `secret …`/`config …`.
//!
//! This crate only translates wire formats. Every rule (lookups, validation, version races, the
//! last manager, drains, the one write path) is [`shoal_api::app::App`]'s; what Docker can say
//! and Shoal cannot do is refused with a message naming the field, never ignored; endpoints
//! outside the subset answer 501 naming what is missing; errors are Docker's `{"message"}`.
//!
//! Versions are negotiated as Docker does: `/_ping` answers with an `Api-Version` header
//! ([`API_VERSION`]), and every route is served bare and under any `/v1.24`–`/v1.50` prefix.

pub mod error;
mod filters;
mod logs;
mod networks;
mod nodes;
mod secrets;
mod services;
pub mod spec;
mod system;
mod tasks;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
pub use error::{DockerError, DockerResult};
use shoal_api::app::{resolve_prefix, App, Lookup};
use shoal_api::logs::AgentSlot;
use shoal_api::ApiSocket;
use tower::Layer;

/// The API version Shoal advertises (the docker CLI 28's).
pub const API_VERSION: &str = "1.50";
/// The oldest API version Shoal accepts (Docker's minimum).
pub const MIN_API_VERSION: &str = "1.24";
const API: (u32, u32) = (1, 50);
const MIN_API: (u32, u32) = (1, 24);

/// The API version of a request: its `/vX.Y` prefix, or [`API_VERSION`] without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.0, self.1) >= (major, minor)
    }
}

/// What the handlers of a manager's socket share.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub app: App,
    pub agent: AgentSlot,
}

/// The key [`App`]'s operations take for what a Docker request names `key`: Docker's lookups
/// (id, name, or a unique id prefix as `ls` shows ids) are the application layer's
/// ([`resolve_prefix`]); a key that names nothing passes through, so the operation's own
/// not-found answers.
pub(crate) async fn resolve(ctx: &Ctx, what: Lookup, key: &str) -> DockerResult<String> {
    let found =
        ctx.app.read(shoal_manager::Consistency::Linearizable, |s| resolve_prefix(s, what, key)).await??;
    Ok(found.unwrap_or_else(|| key.to_string()))
}

/// This node, for a worker's `/info`.
#[derive(Clone, Debug)]
pub struct WorkerNode {
    pub node_id: String,
    pub hostname: String,
    /// The managers' node-to-node addresses, as the worker knows them.
    pub managers: Vec<String>,
}

/// Serves a manager's Docker API on `socket` until `shutdown` turns true.
pub async fn serve(
    socket: ApiSocket,
    app: App,
    agent: AgentSlot,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_router(socket, manager_router(app, agent), shutdown).await
}

/// Serves a worker's Docker API: `/_ping`, `/version` and `/info` (a swarm node, without control);
/// every swarm request answers 503 as Docker's workers do.
pub async fn serve_worker(
    socket: ApiSocket,
    node: WorkerNode,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_router(socket, worker_router(node), shutdown).await
}

async fn serve_router(
    socket: ApiSocket,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::ServiceExt;
    let listener = tokio::net::UnixListener::from_std(socket.into_listener())?;
    // The version prefix is stripped before routing, so the middleware wraps the router.
    let svc = axum::middleware::from_fn(version_prefix).layer(router);
    axum::serve(listener, ServiceExt::<Request>::into_make_service(svc))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

/// A manager's routes.
pub fn manager_router(app: App, agent: AgentSlot) -> Router {
    let ctx = Ctx { app, agent };
    let swarm = Router::new()
        .route("/nodes", get(nodes::list))
        .route("/nodes/{id}", get(nodes::inspect).delete(nodes::remove))
        .route("/nodes/{id}/update", post(nodes::update))
        .route("/services", get(services::list))
        .route("/services/create", post(services::create))
        .route("/services/{id}", get(services::inspect).delete(services::remove))
        .route("/services/{id}/update", post(services::update))
        .route("/services/{id}/logs", get(logs::service_logs))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{id}", get(tasks::inspect))
        .route("/tasks/{id}/logs", get(logs::task_logs))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/{id}", get(networks::inspect).delete(networks::remove))
        .route("/secrets", get(secrets::list::<false>))
        .route("/secrets/create", post(secrets::create::<false>))
        .route("/secrets/{id}", get(secrets::inspect::<false>).delete(secrets::remove::<false>))
        .route("/secrets/{id}/update", post(secrets::update::<false>))
        .route("/configs", get(secrets::list::<true>))
        .route("/configs/create", post(secrets::create::<true>))
        .route("/configs/{id}", get(secrets::inspect::<true>).delete(secrets::remove::<true>))
        .route("/configs/{id}/update", post(secrets::update::<true>))
        .route_layer(axum::middleware::from_fn_with_state(ctx.clone(), swarm_gate));
    Router::new()
        .route("/_ping", get(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .merge(swarm)
        .fallback(not_implemented)
        .method_not_allowed_fallback(not_implemented)
        .with_state(ctx)
}

/// A worker's routes.
pub fn worker_router(node: WorkerNode) -> Router {
    Router::new()
        .route("/_ping", get(system::worker_ping))
        .route("/version", get(system::version_plain))
        .route("/info", get(system::worker_info))
        .fallback(worker_fallback)
        .method_not_allowed_fallback(worker_fallback)
        .with_state(node)
}

/// The swarm routes need a manager that is in a cluster (a daemon that joined as a worker, until
/// it restarts as one, is not).
async fn swarm_gate(
    axum::extract::State(ctx): axum::extract::State<Ctx>,
    req: Request,
    next: Next,
) -> Response {
    let m = ctx.app.manager();
    if m.joined_as_worker().borrow().is_some() {
        return DockerError::not_a_manager().into_response();
    }
    let in_cluster =
        ctx.app.read(shoal_manager::Consistency::Stale, |s| s.cluster().is_some()).await.unwrap_or(false);
    if !in_cluster {
        return DockerError::new(StatusCode::SERVICE_UNAVAILABLE, error::NOT_IN_A_SWARM).into_response();
    }
    next.run(req).await
}

/// Swarm endpoints a worker refuses like Docker's; anything else is outside the subset.
async fn worker_fallback(method: Method, uri: axum::http::Uri) -> DockerError {
    const SWARM: [&str; 7] = ["/nodes", "/services", "/tasks", "/networks", "/secrets", "/configs", "/swarm"];
    let path = uri.path();
    if SWARM.iter().any(|p| path == *p || path.starts_with(&format!("{p}/"))) {
        DockerError::not_a_manager()
    } else {
        DockerError::not_implemented(format!("{method} {path}"))
    }
}

async fn not_implemented(method: Method, uri: axum::http::Uri) -> DockerError {
    DockerError::not_implemented(format!("{method} {}", uri.path()))
}

/// `1.50` → (1, 50); components that are not numbers count as 0, as in Docker.
fn parse_version(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Strips a `/vX.Y` prefix (checking the version), records the version for the handlers and
/// adds Docker's headers to every answer.
async fn version_prefix(mut req: Request, next: Next) -> Response {
    let mut version = ApiVersion(API.0, API.1);
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let (v, tail) = rest.split_at(end);
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let asked = parse_version(v);
            let refused = if asked < MIN_API {
                Some(format!(
                    "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, \
                     please upgrade your client to a newer version"
                ))
            } else if asked > API {
                Some(format!("client version {v} is too new. Maximum supported API version is {API_VERSION}"))
            } else {
                None
            };
            if let Some(m) = refused {
                return with_headers(DockerError::invalid(m).into_response());
            }
            version = ApiVersion(asked.0, asked.1);
            let tail = if tail.is_empty() { "/" } else { tail };
            let rewritten = match req.uri().query() {
                Some(q) => format!("{tail}?{q}"),
                None => tail.to_string(),
            };
            match rewritten.parse() {
                Ok(uri) => *req.uri_mut() = uri,
                Err(_) => {
                    return with_headers(DockerError::invalid("malformed request path").into_response())
                }
            }
        }
    }
    req.extensions_mut().insert(version);
    with_headers(next.run(req).await)
}

fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("api-version", HeaderValue::from_static(API_VERSION));
    h.insert("ostype", HeaderValue::from_static("linux"));
    h.insert("docker-experimental", HeaderValue::from_static("false"));
    if let Ok(v) = HeaderValue::from_str(&format!("Shoal/{} (linux)", env!("CARGO_PKG_VERSION"))) {
        h.insert("server", v);
    }
    resp
}

/// Routes a request through the middleware and router as the socket would (for unit tests).
#[cfg(test)]
pub(crate) async fn call(router: Router, req: Request) -> Response {
    use tower::ServiceExt;
    let svc = axum::middleware::from_fn(version_prefix).layer(router);
    match svc.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn worker() -> Router {
        worker_router(WorkerNode { node_id: "n1".into(), hostname: "w1".into(), managers: vec![] })
    }

    async fn body(r: Response) -> String {
        let b = r.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }

    fn get(path: &str) -> Request {
        Request::builder().uri(path).body(axum::body::Body::empty()).expect("request")
    }

    /// This crate translates: every change goes through an `App` operation, never a command of
    /// its own, a Raft write or the write path underneath.
    #[test]
    fn changes_only_through_app_operations() {
        let sources = [
            ("lib.rs", include_str!("lib.rs")),
            ("nodes.rs", include_str!("nodes.rs")),
            ("services.rs", include_str!("services.rs")),
            ("tasks.rs", include_str!("tasks.rs")),
            ("networks.rs", include_str!("networks.rs")),
            ("secrets.rs", include_str!("secrets.rs")),
            ("logs.rs", include_str!("logs.rs")),
            ("system.rs", include_str!("system.rs")),
            ("spec.rs", include_str!("spec.rs")),
        ];
        let forbidden =
            [".write(", "Command::Create", "Command::Update", "Command::Remove", "internal::", "leader::"];
        for (file, text) in sources {
            // The unit tests build states of their own.
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            for f in forbidden {
                assert!(!code.contains(f), "{file} uses {f}: call an App operation");
            }
        }
    }

    #[tokio::test]
    async fn versions_are_negotiated_like_docker() {
        for path in ["/_ping", "/v1.24/_ping", "/v1.50/_ping", "/v1.41/_ping"] {
            let r = call(worker(), get(path)).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()["api-version"], "1.50");
            assert_eq!(r.headers()["swarm"], "active/worker");
            assert_eq!(body(r).await, "OK");
        }
        let r = call(worker(), get("/v1.23/version")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body(r)
            .await
            .contains("client version 1.23 is too old. Minimum supported API version is 1.24"));
        let r = call(worker(), get("/v1.51/version")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body(r).await.contains("Maximum supported API version is 1.50"));
        let r = call(worker(), get("/v1.45/version")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body(r).await).expect("json");
        assert_eq!(v["ApiVersion"], "1.50");
        assert_eq!(v["MinAPIVersion"], "1.24");
    }

    #[tokio::test]
    async fn workers_refuse_swarm_requests_and_name_what_is_missing() {
        let r = call(worker(), get("/v1.50/services")).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(r).await.contains("This node is not a swarm manager"));
        let r = call(worker(), get("/v1.50/containers/json")).await;
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
        let b = body(r).await;
        assert!(b.contains("GET /containers/json"), "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).expect("Docker's error shape");
        assert!(v["message"].is_string());
        let r = call(worker(), get("/v1.50/info")).await;
        let v: serde_json::Value = serde_json::from_str(&body(r).await).expect("json");
        assert_eq!(v["Swarm"]["LocalNodeState"], "active");
        assert_eq!(v["Swarm"]["ControlAvailable"], false);
        assert_eq!(v["Swarm"]["NodeID"], "n1");
    }
}
