//! Client roles: what an operator's certificate may do, decided here and nowhere else.
//!
//! Every listener that accepts client certificates asks this module: the `/v1` API over TCP
//! (`--api-addr`), the web UI and the Chronos API on a non-loopback address (both served by
//! [`crate::tcp::serve_tcp`]) and the etcd API over TLS (`shoal-etcd`, gRPC and its JSON
//! gateway). The root unix socket and the plain loopback listeners (their peers are checked to be
//! root or the daemon's user) have no certificate and keep full access.
//!
//! | Certificate (subject OU) | [`ClientRole`] |
//! |---|---|
//! | `client` — every client certificate issued before roles existed, and `--role admin` | [`ClientRole::Admin`]: everything the root socket may do |
//! | `client-ro` — `--role read-only` | [`ClientRole::ReadOnly`]: reads that reveal no secret |
//! | `manager` — a manager's own node certificate | [`ClientRole::Admin`] |
//! | `worker`, none, or one without a Shoal identity | refused |
//!
//! **Read-only** may `GET` (and `HEAD`) every route except those in [`SECRET_READS`] (the join
//! tokens, and the backup, which holds the CA key), and `POST` only the routes in [`READ_POSTS`]
//! (a key-value range read). Every other method is a change and needs an admin — creating,
//! updating and removing anything, rotating tokens, issuing certificates, exec, checkpoints,
//! migrations, restores. The rule is deny-by-default for anything but a read, so a new write
//! route can never be open to read-only certificates; the tests below walk every route this
//! crate registers and fail until a new `GET` route is classified here.
//!
//! On the etcd API read-only may call [`ETCD_READS`] (Range, Watch, lease and member lists,
//! Status) and [`ETCD_READS_BY_BODY`] when the request only reads (a Txn whose every operation is
//! a range, an Alarm that only lists); the etcd crate checks those bodies.

use axum::http::Method;
use serde::{Deserialize, Serialize};
use shoal_pki::{NodeIdentity, Role};
use std::fmt;
use std::str::FromStr;

/// What an operator's client certificate may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientRole {
    /// Everything (certificate OU `client`; every client certificate issued before roles).
    #[default]
    Admin,
    /// Reads that reveal no secret (certificate OU `client-ro`).
    ReadOnly,
}

impl ClientRole {
    /// `admin` or `read-only`, as the CLI and the request body spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Admin => "admin",
            ClientRole::ReadOnly => "read-only",
        }
    }

    /// The certificate role (subject OU) that carries this client role.
    pub fn cert_role(self) -> Role {
        match self {
            ClientRole::Admin => Role::Client,
            ClientRole::ReadOnly => Role::ClientReadOnly,
        }
    }

    /// The client role of a client certificate's role; `None` for a node's.
    pub fn of_cert_role(role: Role) -> Option<ClientRole> {
        match role {
            Role::Client => Some(ClientRole::Admin),
            Role::ClientReadOnly => Some(ClientRole::ReadOnly),
            Role::Manager | Role::Worker => None,
        }
    }

    /// Whether this is [`ClientRole::Admin`] (for `skip_serializing_if`).
    pub fn is_admin(&self) -> bool {
        *self == ClientRole::Admin
    }
}

impl fmt::Display for ClientRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClientRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(ClientRole::Admin),
            "read-only" => Ok(ClientRole::ReadOnly),
            other => Err(format!("client role must be admin or read-only, not {other:?}")),
        }
    }
}

/// Who a verified peer certificate's holder is on an operator's listener: its client role, or
/// why it is refused altogether.
pub fn access_of(identity: Option<&NodeIdentity>) -> Result<ClientRole, String> {
    match identity {
        None => Err("a client certificate of this cluster is required".to_string()),
        // A manager's own certificate: whoever holds its key is root on a manager already.
        Some(id) if id.role == Role::Manager => Ok(ClientRole::Admin),
        Some(id) => ClientRole::of_cert_role(id.role).ok_or_else(|| {
            format!(
                "a {} certificate may not use the API: use a client certificate (`shoal cluster client-cert`)",
                id.role
            )
        }),
    }
}

/// `GET` routes that reveal secrets: the join tokens (anyone with one can add nodes) and the
/// backup (the CA key and the tokens). Admin only.
pub const SECRET_READS: &[&str] =
    &["/v1/cluster/join-token/{role}", "/v1/cluster/backup", "/v1/cluster/unlock-key"];

/// Routes that only read despite their method: `(method, route)`.
pub const READ_POSTS: &[(&str, &str)] = &[("POST", "/v1/kv/range")];

/// Whether `role` may call `method path` on the `/v1` API (and the web UI and Chronos routes
/// served next to it); `Err` says why not, for a `403 forbidden`.
pub fn allowed(role: ClientRole, method: &Method, path: &str) -> Result<(), String> {
    if role == ClientRole::Admin {
        return Ok(());
    }
    let refused = |why: &str| {
        Err(format!(
            "{method} {path} {why}: this is a read-only certificate, which may list, inspect, read logs \
             and events and watch; ask for an admin one (`shoal cluster client-cert --role admin`)"
        ))
    };
    // A path the router would not match literally cannot be classified: refused rather than
    // guessed at (axum matches the raw path, without decoding or normalising it).
    let odd = path.contains('%')
        || path.contains("//")
        || path.split('/').any(|s| s == "." || s == "..")
        || !path.starts_with('/');
    if odd {
        return refused("is not a plain path");
    }
    if path == "/internal" || path.starts_with("/internal/") {
        return refused("is a node-to-node endpoint");
    }
    let is = |route: &str| route_matches(route, path);
    if method == Method::GET || method == Method::HEAD {
        if SECRET_READS.iter().any(|r| is(r)) {
            return refused("reveals cluster secrets (join tokens, or the CA key in a backup)");
        }
        return Ok(());
    }
    if READ_POSTS.iter().any(|(m, r)| method.as_str() == *m && is(r)) {
        return Ok(());
    }
    refused("is not a read")
}

/// Whether `path` is an instance of `route` (`{name}` matches one non-empty segment).
pub fn route_matches(route: &str, path: &str) -> bool {
    let mut r = route.split('/');
    let mut p = path.split('/');
    loop {
        match (r.next(), p.next()) {
            (None, None) => return true,
            (Some(rs), Some(ps)) => {
                let wildcard = rs.starts_with('{') && rs.ends_with('}');
                if !((wildcard && !ps.is_empty()) || rs == ps) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// etcd RPCs (gRPC method names) that only read.
pub const ETCD_READS: &[&str] = &["Range", "Watch", "LeaseTimeToLive", "LeaseLeases", "MemberList", "Status"];

/// etcd RPCs that read or write depending on the request: read-only may call them when the
/// body only reads (the etcd crate checks: a Txn whose operations are all ranges, an Alarm
/// that only lists).
pub const ETCD_READS_BY_BODY: &[&str] = &["Txn", "Alarm"];

/// Whether `role` may call the etcd RPC `rpc` (the gRPC method name, e.g. `Put`); for
/// [`ETCD_READS_BY_BODY`] the body is checked separately.
pub fn etcd_allowed(role: ClientRole, rpc: &str) -> Result<(), String> {
    if role == ClientRole::Admin || ETCD_READS.contains(&rpc) || ETCD_READS_BY_BODY.contains(&rpc) {
        return Ok(());
    }
    Err(etcd_refusal(rpc))
}

/// Why a read-only certificate may not make this etcd call.
pub fn etcd_refusal(what: &str) -> String {
    format!(
        "shoal: {what} is not a read: this is a read-only certificate, which may only range, watch and \
         list leases and members"
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const ALL_METHODS: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ];

    /// `GET` routes reviewed as reads that reveal no secret. A new `GET` route fails
    /// [`every_route_is_classified`] until it is added here or to [`SECRET_READS`].
    const REVIEWED_READS: &[&str] = &[
        "/",
        "/app.js",
        "/style.css",
        "/metrics",
        "/v1/health",
        "/v1/cluster",
        "/v1/cluster/health",
        "/v1/nodes",
        "/v1/nodes/{id}",
        "/v1/services",
        "/v1/services/{id}",
        "/v1/services/{id}/logs",
        "/v1/tasks",
        "/v1/tasks/{id}/logs",
        "/v1/networks",
        "/v1/networks/{id}",
        "/v1/stacks",
        "/v1/stacks/{name}/services",
        "/v1/stacks/{name}/tasks",
        "/v1/events",
        "/v1/kv/watch",
        "/v1/kv/leases",
        "/v1/kv/leases/{id}",
        "/v1/jobs",
        "/v1/jobs/graph",
        "/v1/units",
        // Never a secret's data (list and inspect strip it); a config's data is not secret.
        "/v1/secrets",
        "/v1/secrets/{id}",
        "/v1/configs",
        "/v1/configs/{id}",
        "/v1/openapi.json",
        "/v1/scheduler/jobs",
        "/v1/scheduler/jobs/search",
        "/v1/scheduler/job/{name}",
        "/v1/scheduler/graph/dot",
        "/v1/scheduler/graph/csv",
        "/v1/scheduler/leader",
        "/scheduler/jobs",
        "/scheduler/jobs/search",
        "/scheduler/job/{name}",
        "/scheduler/graph/dot",
        "/scheduler/graph/csv",
        "/scheduler/leader",
    ];

    /// Routes whose method the scan cannot see (a method router built elsewhere).
    const KNOWN_METHODS: &[(&str, &str)] = &[
        ("/", "GET"),
        ("/app.js", "GET"),
        ("/style.css", "GET"),
        ("/metrics", "GET"),
        ("/v1/health", "GET"),
        ("/v1/cluster/leave", "POST"),
        ("/v1/cluster/join", "POST"),
    ];

    /// Route paths built from constants: node-to-node agent endpoints (never on a listener that
    /// takes client certificates; refused to read-only there anyway).
    const KNOWN_PATH_EXPRESSIONS: &[&str] =
        &["crate::exec::AGENT_EXEC_PATH", "crate::exec_stream::AGENT_EXEC_STREAM_PATH"];

    /// Prefixes of the routes built with `format!("{prefix}/…")`, per file.
    const PREFIXES: &[(&str, &[&str])] =
        &[("kv_http.rs", &["/v1/kv", "/internal/kv"]), ("chronos.rs", &["/v1/scheduler", "/scheduler"])];

    /// A path that matches `route` (each `{name}` replaced by a segment).
    fn instance(route: &str) -> String {
        route
            .split('/')
            .map(|s| if s.starts_with('{') && s.ends_with('}') { "x1" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every `(method, route)` this crate registers, found in its sources (the method `*` when
    /// the scan cannot tell), plus the documented [`crate::server::ROUTES`].
    fn registered_routes() -> Vec<(String, String)> {
        let mut found = scanned_routes();
        for (m, p, _) in crate::server::ROUTES {
            found.push((m.to_ascii_uppercase(), p.to_string()));
        }
        found.sort();
        found.dedup();
        found
    }

    /// Every `(method, route)` this crate's sources register (the method `*` when the scan
    /// cannot tell); the OpenAPI test compares the `/v1` ones with the document.
    pub(crate) fn scanned_routes() -> Vec<(String, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("src")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        let needle = [".rou", "te("].concat();
        for file in files {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name == "roles.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("read source");
            for (at, _) in text.match_indices(&needle) {
                let call = call_text(&text[at + needle.len()..]);
                for path in route_paths(&name, &call) {
                    let methods = methods_in(&call);
                    if methods.is_empty() {
                        let known = KNOWN_METHODS.iter().find(|(p, _)| *p == path);
                        let m = known.map_or("*", |(_, m)| *m);
                        found.push((m.to_string(), path.clone()));
                    }
                    for m in methods {
                        found.push((m, path.clone()));
                    }
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }

    /// The text of a call's arguments: up to its closing parenthesis (string literals skipped).
    fn call_text(rest: &str) -> String {
        let mut depth = 1;
        let mut in_str = false;
        let mut prev = ' ';
        for (i, c) in rest.char_indices() {
            match c {
                '"' if prev != '\\' => in_str = !in_str,
                '(' if !in_str => depth += 1,
                ')' if !in_str => {
                    depth -= 1;
                    if depth == 0 {
                        return rest[..i].to_string();
                    }
                }
                _ => {}
            }
            prev = c;
        }
        panic!("unbalanced .route( call: {}", &rest[..rest.len().min(200)]);
    }

    /// The route paths of a call's first argument.
    fn route_paths(file: &str, call: &str) -> Vec<String> {
        let arg = call.trim_start();
        let literal = |s: &str| -> Option<String> {
            let s = s.strip_prefix('"')?;
            Some(s[..s.find('"')?].replace("{{", "{").replace("}}", "}"))
        };
        if let Some(path) = literal(arg) {
            return vec![path];
        }
        if let Some(fmt) = arg.strip_prefix("&format!(") {
            let path = literal(fmt).expect("a format! with a literal");
            let prefixes = PREFIXES
                .iter()
                .find(|(f, _)| *f == file)
                .unwrap_or_else(|| panic!("{file}: add the prefixes of {path:?} to PREFIXES"))
                .1;
            assert!(path.starts_with("{prefix}"), "{file}: {path}");
            return prefixes.iter().map(|p| path.replacen("{prefix}", p, 1)).collect();
        }
        let expr = arg.split(',').next().unwrap_or_default().trim();
        assert!(
            KNOWN_PATH_EXPRESSIONS.contains(&expr),
            "{file}: a route path the scan cannot read ({expr}): classify it in roles.rs"
        );
        Vec::new()
    }

    /// The HTTP methods of the method routers in a call (`get(…)`, `.post(…)`, …).
    fn methods_in(call: &str) -> Vec<String> {
        let mut out = Vec::new();
        for m in ["get", "post", "put", "delete", "patch", "head", "options"] {
            let token = format!("{m}(");
            for (i, _) in call.match_indices(&token) {
                let before = call[..i].chars().next_back();
                if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                    out.push(m.to_ascii_uppercase());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn the_scan_sees_the_routes() {
        let routes = registered_routes();
        for expected in [
            ("GET", "/v1/cluster/backup"),
            ("GET", "/v1/cluster/join-token/{role}"),
            ("POST", "/v1/cluster/client-cert"),
            ("POST", "/v1/kv/range"),
            ("POST", "/v1/tasks/{id}/checkpoint"),
            ("POST", "/v1/tasks/{id}/exec/stream"),
            ("DELETE", "/v1/nodes/{id}"),
            ("PUT", "/v1/units/{name}"),
            ("PUT", "/scheduler/job/{name}"),
            ("GET", "/v1/scheduler/jobs"),
            ("POST", "/internal/join"),
            ("GET", "/metrics"),
        ] {
            assert!(
                routes.iter().any(|(m, p)| m == expected.0 && p == expected.1),
                "the scan missed {expected:?}: {routes:?}"
            );
        }
    }

    #[test]
    fn every_route_is_classified() {
        let routes = registered_routes();
        for (method, route) in &routes {
            let path = instance(route);
            let methods: Vec<Method> = if method == "*" {
                ALL_METHODS.to_vec()
            } else {
                vec![method.parse::<Method>().expect("method")]
            };
            for m in methods {
                assert!(allowed(ClientRole::Admin, &m, &path).is_ok(), "admin: {m} {route}");
                let ro = allowed(ClientRole::ReadOnly, &m, &path);
                let internal = route.starts_with("/internal/");
                let read = m == Method::GET || m == Method::HEAD;
                let secret = SECRET_READS.contains(&route.as_str());
                if internal {
                    assert!(ro.is_err(), "read-only reached the node-to-node {m} {route}");
                } else if read {
                    assert!(
                        secret || REVIEWED_READS.contains(&route.as_str()),
                        "GET {route} is new: decide in roles.rs whether it may reveal a secret (then \
                         SECRET_READS) or not (then the tests' REVIEWED_READS)"
                    );
                    assert_eq!(ro.is_ok(), !secret, "read-only {m} {route}: {ro:?}");
                } else {
                    let read_post = READ_POSTS.iter().any(|(rm, rr)| m.as_str() == *rm && rr == route);
                    assert_eq!(ro.is_ok(), read_post, "read-only {m} {route}: {ro:?}");
                }
            }
        }
        // The rules name routes that exist.
        for r in SECRET_READS {
            assert!(routes.iter().any(|(_, p)| p == r), "{r} is classified but not registered");
        }
        for (m, r) in READ_POSTS {
            assert!(routes.iter().any(|(rm, p)| rm == m && p == r), "{m} {r} is not registered");
        }
    }

    #[test]
    fn read_only_reads_and_nothing_else() {
        let ro = |m: Method, p: &str| allowed(ClientRole::ReadOnly, &m, p);
        for p in ["/v1/nodes", "/v1/services/web", "/v1/tasks", "/v1/events", "/v1/services/web/logs"] {
            assert!(ro(Method::GET, p).is_ok(), "GET {p}");
            assert!(ro(Method::HEAD, p).is_ok(), "HEAD {p}");
        }
        assert!(ro(Method::POST, "/v1/kv/range").is_ok());
        for (m, p) in [
            (Method::GET, "/v1/cluster/join-token/worker"),
            (Method::GET, "/v1/cluster/join-token/manager"),
            (Method::GET, "/v1/cluster/backup"),
            (Method::POST, "/v1/cluster/join-token/worker/rotate"),
            (Method::POST, "/v1/cluster/client-cert"),
            (Method::POST, "/v1/services"),
            (Method::POST, "/v1/tasks/t1/exec"),
            (Method::POST, "/v1/tasks/t1/checkpoint"),
            (Method::POST, "/v1/kv/ops"),
            (Method::POST, "/v1/kv/range/x"),
            (Method::DELETE, "/v1/services/web"),
            (Method::PUT, "/v1/units/u"),
            (Method::PATCH, "/v1/nodes/n1"),
            (Method::OPTIONS, "/v1/nodes"),
            (Method::GET, "/internal/checkpoints/x"),
            // Variants of the secret paths that the router would not match are refused too.
            (Method::GET, "/v1/cluster/%62ackup"),
            (Method::GET, "/v1//cluster/backup"),
            (Method::GET, "/v1/cluster/./backup"),
            (Method::GET, "/v1/nodes/../cluster/backup"),
        ] {
            let why = ro(m.clone(), p).expect_err("refused");
            assert!(why.contains("read-only certificate"), "{m} {p}: {why}");
        }
        // Admins may do everything.
        assert!(allowed(ClientRole::Admin, &Method::GET, "/v1/cluster/backup").is_ok());
        assert!(allowed(ClientRole::Admin, &Method::POST, "/v1/cluster/client-cert").is_ok());
    }

    #[test]
    fn certificates_map_to_roles() {
        let id = |role| NodeIdentity { node_id: "alice".into(), role };
        assert_eq!(access_of(Some(&id(Role::Client))), Ok(ClientRole::Admin));
        assert_eq!(access_of(Some(&id(Role::ClientReadOnly))), Ok(ClientRole::ReadOnly));
        assert_eq!(access_of(Some(&id(Role::Manager))), Ok(ClientRole::Admin));
        assert!(access_of(Some(&id(Role::Worker))).is_err());
        assert!(access_of(None).is_err());
        for r in [ClientRole::Admin, ClientRole::ReadOnly] {
            assert_eq!(ClientRole::of_cert_role(r.cert_role()), Some(r));
            assert_eq!(r.as_str().parse::<ClientRole>(), Ok(r));
        }
        assert!("readonly".parse::<ClientRole>().is_err());
        assert_eq!(ClientRole::default(), ClientRole::Admin);
    }

    #[test]
    fn etcd_rpcs() {
        for rpc in ETCD_READS.iter().chain(ETCD_READS_BY_BODY) {
            assert!(etcd_allowed(ClientRole::ReadOnly, rpc).is_ok(), "{rpc}");
        }
        for rpc in
            ["Put", "DeleteRange", "Compact", "LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "Defragment"]
        {
            assert!(etcd_allowed(ClientRole::ReadOnly, rpc).is_err(), "{rpc}");
            assert!(etcd_allowed(ClientRole::Admin, rpc).is_ok(), "{rpc}");
        }
    }
}
