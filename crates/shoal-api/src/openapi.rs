//! `GET /v1/openapi.json`: the API described from its own types, so it cannot drift from them.
//!
//! Every schema comes from `schemars::JsonSchema`, derived on the request and response types
//! (which follows their serde attributes: renames, defaults, skipped fields, flattening, tagged
//! enums, `deny_unknown_fields`) or written by hand next to a hand-written `Serialize` (see
//! `shoal_types::schema`, `shoal_kv::schema`). Requests are described as they are *read*
//! (aliases, defaults: a field with a default is optional) and responses as they are *written*
//! (a field skipped when empty is optional); a type whose two forms differ appears twice, the
//! request form named `…In`.
//!
//! The document is OpenAPI 3.1, whose schemas are JSON Schema 2020-12, what schemars emits.
//! Each operation lists its path and query parameters (the handler's `Path` and `Query` types),
//! its body (JSON, or the bytes of a backup or checkpoint file), its answers (JSON, NDJSON
//! streams of one schema per line, files) and the error statuses the handler returns, all in
//! the API's error shape (`{"error": {"code", "message"}}`, see [`crate::server::ApiError`]).
//! The summaries are those of [`crate::server::ROUTES`]; a test checks that every route the
//! router registers is here and that nothing here is unregistered.

use crate::server::ROUTES;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";
const OCTETS: &str = "application/octet-stream";

/// Where the schemas of responses live, and (until they are merged) those of requests.
const SCHEMAS: &str = "#/components/schemas/";
const REQUEST_SCHEMAS: &str = "#/components/x-request-schemas/";

/// The document, built once per request (it is small and cheap to make).
pub fn document() -> Value {
    let mut b = Builder::new();
    operations(&mut b);
    b.finish()
}

/// One operation being described.
struct Op {
    method: &'static str,
    path: &'static str,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Map<String, Value>,
    description: Option<&'static str>,
}

struct Builder {
    /// Requests: the deserialize contract, definitions kept apart until [`Builder::finish`].
    de: SchemaGenerator,
    /// Responses: the serialize contract.
    ser: SchemaGenerator,
    ops: Vec<Op>,
}

impl Builder {
    fn new() -> Builder {
        let de = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/x-request-schemas".into();
                s.meta_schema = None;
            })
            .for_deserialize()
            .into_generator();
        let ser = SchemaSettings::draft2020_12()
            .with(|s| {
                s.definitions_path = "/components/schemas".into();
                s.meta_schema = None;
            })
            .for_serialize()
            .into_generator();
        Builder { de, ser, ops: Vec::new() }
    }

    /// Starts `method path`; its path parameters are plain non-empty strings unless
    /// [`OpBuilder::path_param`] says otherwise.
    fn op(&mut self, method: &'static str, path: &'static str) -> OpBuilder<'_> {
        let params = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": {"type": "string", "minLength": 1}})
            })
            .collect();
        OpBuilder {
            b: self,
            op: Op { method, path, params, body: None, responses: Map::new(), description: None },
        }
    }

    fn request<T: JsonSchema>(&mut self) -> Value {
        self.de.subschema_for::<T>().to_value()
    }

    fn response<T: JsonSchema>(&mut self) -> Value {
        self.ser.subschema_for::<T>().to_value()
    }

    /// Merges the two sets of definitions and writes the document.
    fn finish(mut self) -> Value {
        let mut schemas = self.ser.take_definitions(true);
        let requests = self.de.take_definitions(true);
        // Request forms that differ from the response form of the same name (compared with
        // their references pointing at the same place), and those that refer to one of them.
        let normal = |v: &Value| rewrite_refs(v.clone(), &|name| format!("{SCHEMAS}{name}"));
        let mut differ: std::collections::BTreeSet<String> = requests
            .iter()
            .filter(|(name, v)| schemas.get(*name).is_some_and(|s| *s != normal(v)))
            .map(|(name, _)| name.clone())
            .collect();
        loop {
            let more: Vec<String> = requests
                .iter()
                .filter(|(name, v)| {
                    !differ.contains(*name)
                        && schemas.contains_key(*name)
                        && refs(v).iter().any(|r| differ.contains(r))
                })
                .map(|(name, _)| name.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            differ.extend(more);
        }
        let rename = |name: &str| {
            if differ.contains(name) {
                format!("{SCHEMAS}{name}In")
            } else {
                format!("{SCHEMAS}{name}")
            }
        };
        for (name, v) in requests {
            let v = rewrite_refs(v, &rename);
            if differ.contains(&name) {
                schemas.insert(format!("{name}In"), v);
            } else {
                schemas.entry(name).or_insert(v);
            }
        }
        schemas.insert("Error".into(), error_schema());
        let mut paths = Map::new();
        for op in self.ops {
            let summary =
                ROUTES.iter().find(|(m, p, _)| *m == op.method && *p == op.path).map_or("", |(_, _, s)| *s);
            let mut o = Map::new();
            o.insert("operationId".into(), json!(operation_id(op.method, op.path)));
            o.insert("summary".into(), json!(summary));
            if let Some(d) = op.description {
                o.insert("description".into(), json!(d));
            }
            if !op.params.is_empty() {
                o.insert("parameters".into(), Value::Array(op.params));
            }
            if let Some(body) = op.body {
                o.insert("requestBody".into(), rewrite_refs(body, &rename));
            }
            o.insert("responses".into(), Value::Object(op.responses));
            let entry = paths.entry(op.path.to_string()).or_insert_with(|| json!({}));
            if let Some(e) = entry.as_object_mut() {
                e.insert(op.method.to_string(), Value::Object(o));
            }
        }
        let paths = rewrite_refs(Value::Object(paths), &rename);
        json!({
            "openapi": "3.1.0",
            "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
            "info": {
                "title": "Shoal API",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "Shoal's /v1 API. Errors are {\"error\": {\"code\", \"message\"}}; reads are \
                                linearizable unless ?stale=true; 503 when there is no quorum or leader."
            },
            "paths": paths,
            "components": {"schemas": schemas},
        })
    }
}

/// The `operationId` of `method path`: `getV1NodesById` for `get /v1/nodes/{id}`.
pub fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let (by, seg) = match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(p) => ("By", p),
            None => ("", seg),
        };
        id.push_str(by);
        for word in seg.split(['-', '_', '.']) {
            let mut c = word.chars();
            if let Some(f) = c.next() {
                id.extend(f.to_uppercase());
                id.push_str(c.as_str());
            }
        }
    }
    id
}

/// `v` with every `$ref` to a definition (of either set) pointing where `to` says.
fn rewrite_refs(v: Value, to: &dyn Fn(&str) -> String) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| match (k.as_str(), &v) {
                    ("$ref", Value::String(r)) => {
                        let name = r.strip_prefix(REQUEST_SCHEMAS).or_else(|| r.strip_prefix(SCHEMAS));
                        let r = name.map_or_else(|| r.clone(), to);
                        (k, Value::String(r))
                    }
                    _ => (k, rewrite_refs(v, to)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| rewrite_refs(v, to)).collect()),
        v => v,
    }
}

/// The definition names `v` refers to.
fn refs(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(n) = r.strip_prefix(REQUEST_SCHEMAS).or_else(|| r.strip_prefix(SCHEMAS)) {
                            out.push(n.to_string());
                        }
                    }
                    _ => out.extend(refs(v)),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| out.extend(refs(v))),
        _ => {}
    }
    out
}

/// [`crate::server::ApiError`] as it is written.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "An error: a stable machine code and a message for people.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "not_found, conflict, invalid, unavailable, …"},
                    "message": {"type": "string"}
                }
            }
        }
    })
}

struct OpBuilder<'a> {
    b: &'a mut Builder,
    op: Op,
}

impl OpBuilder<'_> {
    fn describe(mut self, d: &'static str) -> Self {
        self.op.description = Some(d);
        self
    }

    /// Path parameter `name` with its own schema.
    fn path_param(mut self, name: &str, schema: Value) -> Self {
        for p in &mut self.op.params {
            if p["name"] == name && p["in"] == "path" {
                p["schema"] = schema.clone();
            }
        }
        self
    }

    /// The query parameters of the handler's `Query<T>`: every field, or only those in `only`
    /// when the handler shares a query type with others and reads just these.
    fn query<T: JsonSchema>(mut self, only: &[&str]) -> Self {
        let schema = SchemaSettings::draft2020_12()
            .with(|s| {
                s.inline_subschemas = true;
                s.meta_schema = None;
            })
            .for_deserialize()
            .into_generator()
            .into_root_schema_for::<T>()
            .to_value();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map_or(Vec::new(), |r| r.iter().filter_map(Value::as_str).collect());
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                if !only.is_empty() && !only.contains(&name.as_str()) {
                    continue;
                }
                let mut p = json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&name.as_str()),
                    "schema": not_null(prop.clone()),
                });
                if let Some(d) = prop.get("description") {
                    p["description"] = d.clone();
                }
                self.op.params.push(p);
            }
        }
        self
    }

    /// A JSON body of type `T` (required).
    fn json<T: JsonSchema>(mut self) -> Self {
        let schema = self.b.request::<T>();
        self.op.body = Some(json!({"required": true, "content": {JSON: {"schema": schema}}}));
        self
    }

    /// A JSON body of type `T` that may be left out (an empty body is the defaults).
    fn optional_json<T: JsonSchema>(mut self) -> Self {
        let schema = self.b.request::<T>();
        self.op.body = Some(json!({"required": false, "content": {JSON: {"schema": schema}}}));
        self
    }

    /// A JSON body of either type.
    fn json_either<A: JsonSchema, B: JsonSchema>(mut self) -> Self {
        let (a, b) = (self.b.request::<A>(), self.b.request::<B>());
        self.op.body = Some(json!({"required": true, "content": {JSON: {"schema": {"anyOf": [a, b]}}}}));
        self
    }

    /// A file as the body.
    fn octets(mut self, what: &str) -> Self {
        self.op.body = Some(json!({
            "required": true,
            "description": what,
            "content": {OCTETS: {"schema": {"type": "string", "contentMediaType": OCTETS}}}
        }));
        self
    }

    fn respond(mut self, status: u16, description: &str, content: Option<Value>) -> Self {
        let mut r = json!({"description": description});
        if let Some(c) = content {
            r["content"] = c;
        }
        self.op.responses.insert(status.to_string(), r);
        self
    }

    /// A JSON answer of type `T`.
    fn ok<T: JsonSchema>(self, status: u16) -> Self {
        let schema = self.b.response::<T>();
        self.respond(status, "success", Some(json!({JSON: {"schema": schema}})))
    }

    /// A JSON answer given by hand (for a `serde_json::Value` the handler builds).
    fn ok_value(self, status: u16, schema: Value) -> Self {
        self.respond(status, "success", Some(json!({JSON: {"schema": schema}})))
    }

    /// An NDJSON stream, one `T` per line.
    fn ndjson<T: JsonSchema>(self) -> Self {
        let schema = self.b.response::<T>();
        self.respond(
            200,
            "a stream of JSON lines (NDJSON); the schema is that of each line",
            Some(json!({NDJSON: {"schema": schema}})),
        )
    }

    /// A file.
    fn file(self, description: &str) -> Self {
        self.respond(200, description, Some(json!({OCTETS: {"schema": {"type": "string"}}})))
    }

    /// No content.
    fn no_content(self) -> Self {
        self.respond(204, "done", None)
    }

    /// The error statuses the handler returns, in the API's error shape.
    fn errors(mut self, statuses: &[u16]) -> Self {
        for s in statuses {
            let why = match s {
                400 => "invalid input",
                403 => "forbidden",
                404 => "not found",
                409 => "conflict (a stale version, a name in use, the wrong state)",
                413 => "the body is larger than the limit",
                415 => "the body is not JSON (Content-Type: application/json)",
                426 => "the request did not ask to upgrade the connection",
                502 => "the node that runs the task could not be reached",
                503 => "no quorum or leader, or this node is not a manager",
                _ => "error",
            };
            self.op.responses.insert(
                s.to_string(),
                json!({"description": why, "content": {JSON: {"schema": {"$ref": format!("{SCHEMAS}Error")}}}}),
            );
        }
        self
    }

    fn add(self) {
        self.b.ops.push(self.op);
    }
}

/// A query or path schema without `null` (a parameter is absent instead).
fn not_null(mut v: Value) -> Value {
    if let Some(Value::Array(types)) = v.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let t = types[0].clone();
            v["type"] = t;
        }
    }
    if let Some(Value::Array(any)) = v.get_mut("anyOf") {
        any.retain(|s| s.get("type") != Some(&json!("null")));
    }
    v
}

/// Every `/v1` route of a manager's router ([`crate::full_router`]).
fn operations(b: &mut Builder) {
    use crate::server::{
        ClusterInfo, Created, InitArgs, JoinArgs, JoinInfo, JoinTokenInfo, LeaveQuery, ReadQuery,
        ScaleRequest, ServiceCreate, ServiceUpdate,
    };
    use shoal_types::{Network, NetworkSpec, Node, Secret, SecretSpec, Service, ServiceSpec, Task};

    const READ: &[u16] = &[400, 503];
    const INSPECT: &[u16] = &[400, 404, 503];
    let consistency: &[&str] = &["stale"];

    // The cluster.
    b.op("get", "/v1/cluster").query::<ReadQuery>(consistency).ok::<ClusterInfo>(200).errors(READ).add();
    b.op("post", "/v1/cluster/init")
        .describe("The body may be empty (the defaults).")
        .optional_json::<InitArgs>()
        .ok::<ClusterInfo>(200)
        .errors(&[400, 403, 409, 503])
        .add();
    b.op("post", "/v1/cluster/join")
        .json::<JoinArgs>()
        .ok::<JoinInfo>(200)
        .errors(&[400, 409, 413, 415, 503])
        .add();
    b.op("post", "/v1/cluster/leave").query::<LeaveQuery>(&[]).no_content().errors(&[400, 409, 503]).add();
    b.op("get", "/v1/cluster/health").ok::<Vec<crate::internal::ManagerHealth>>(200).errors(&[503]).add();
    b.op("get", "/v1/cluster/backup").file("the backup file").errors(&[503]).add();
    b.op("post", "/v1/cluster/restore")
        .octets("a backup file (`GET /v1/cluster/backup`)")
        .ok::<ClusterInfo>(200)
        .errors(&[400, 409, 413, 503])
        .add();
    let role = json!({"type": "string", "enum": ["worker", "manager"]});
    b.op("get", "/v1/cluster/join-token/{role}")
        .path_param("role", role.clone())
        .ok::<JoinTokenInfo>(200)
        .errors(&[400, 409, 503])
        .add();
    b.op("post", "/v1/cluster/join-token/{role}/rotate")
        .path_param("role", role)
        .ok::<JoinTokenInfo>(200)
        .errors(&[400, 409, 503])
        .add();
    b.op("post", "/v1/cluster/client-cert")
        .json::<crate::tcp::ClientCertRequest>()
        .ok::<crate::tcp::ClientCert>(200)
        .errors(&[400, 409, 413, 415, 503])
        .add();
    b.op("post", "/v1/cluster/autolock")
        .json::<crate::autolock::AutolockRequest>()
        .ok::<crate::autolock::AutolockAnswer>(200)
        .errors(&[400, 413, 415, 503])
        .add();
    b.op("get", "/v1/cluster/unlock-key")
        .ok::<crate::autolock::AutolockAnswer>(200)
        .errors(&[409, 503])
        .add();
    b.op("post", "/v1/cluster/unlock-key/rotate")
        .ok::<crate::autolock::AutolockAnswer>(200)
        .errors(&[409, 503])
        .add();
    b.op("post", "/v1/cluster/unlock")
        .describe("Served by a locked manager; an unlocked one answers 409.")
        .json::<crate::autolock::UnlockRequest>()
        .errors(&[400, 409, 413, 415, 503])
        .add();

    // Nodes.
    b.op("get", "/v1/nodes").query::<ReadQuery>(consistency).ok::<Vec<Node>>(200).errors(READ).add();
    b.op("get", "/v1/nodes/{id}").query::<ReadQuery>(consistency).ok::<Node>(200).errors(INSPECT).add();
    b.op("post", "/v1/nodes/{id}/update")
        .json::<crate::app::NodeUpdate>()
        .ok::<Node>(200)
        .errors(&[400, 404, 409, 413, 415, 503])
        .add();
    b.op("delete", "/v1/nodes/{id}")
        .query::<ReadQuery>(&["force"])
        .no_content()
        .errors(&[400, 404, 409, 503])
        .add();

    // Services and tasks.
    b.op("get", "/v1/services").query::<ReadQuery>(consistency).ok::<Vec<Service>>(200).errors(READ).add();
    b.op("post", "/v1/services")
        .describe("A ServiceSpec, or {spec, registry_auth} with registry credentials to seal.")
        .json_either::<ServiceSpec, ServiceCreate>()
        .ok::<Created>(201)
        .errors(&[400, 404, 409, 413, 503])
        .add();
    b.op("get", "/v1/services/{id}").query::<ReadQuery>(consistency).ok::<Service>(200).errors(INSPECT).add();
    b.op("post", "/v1/services/{id}/update")
        .json::<ServiceUpdate>()
        .ok::<Service>(200)
        .errors(&[400, 404, 409, 413, 415, 503])
        .add();
    b.op("post", "/v1/services/{id}/rollback").ok::<Service>(200).errors(&[400, 404, 409, 503]).add();
    b.op("post", "/v1/services/{id}/scale")
        .json::<ScaleRequest>()
        .ok::<Service>(200)
        .errors(&[400, 404, 409, 413, 415, 503])
        .add();
    b.op("post", "/v1/services/{id}/rebalance").ok::<Service>(200).errors(&[400, 404, 409, 503]).add();
    b.op("delete", "/v1/services/{id}").no_content().errors(&[404, 409, 503]).add();
    b.op("get", "/v1/services/{id}/logs")
        .query::<crate::logs::LogQuery>(&["tail", "since", "follow"])
        .ndjson::<crate::logs::LogRecord>()
        .errors(INSPECT)
        .add();
    b.op("get", "/v1/tasks")
        .query::<ReadQuery>(&["stale", "service", "node"])
        .ok::<Vec<Task>>(200)
        .errors(INSPECT)
        .add();
    b.op("get", "/v1/tasks/{id}/logs")
        .query::<crate::logs::LogQuery>(&["tail", "since", "follow"])
        .ndjson::<crate::logs::LogRecord>()
        .errors(INSPECT)
        .add();
    b.op("post", "/v1/tasks/{id}/migrate")
        .json::<crate::migrate::MigrateRequest>()
        .ok::<crate::migrate::Migration>(200)
        .errors(&[400, 404, 409, 413, 415, 503])
        .add();
    b.op("post", "/v1/tasks/{id}/checkpoint")
        .json::<crate::migrate::CheckpointToFile>()
        .file("the checkpoint file: a JSON header line, then the archive")
        .errors(&[400, 404, 409, 413, 415, 503])
        .add();
    b.op("post", "/v1/tasks/restore")
        .query::<crate::migrate::RestoreQuery>(&[])
        .octets("a checkpoint file (`POST /v1/tasks/{id}/checkpoint`)")
        .ok::<crate::migrate::Migration>(200)
        .errors(&[400, 404, 409, 413, 503])
        .add();
    b.op("post", "/v1/tasks/{id}/exec")
        .json::<crate::exec::ExecRequest>()
        .ok::<crate::exec::ExecResponse>(200)
        .errors(&[400, 404, 409, 413, 415, 502, 503])
        .add();
    b.op("post", "/v1/tasks/{id}/exec/stream")
        .describe(
            "Send `Connection: Upgrade` and `Upgrade: shoal-exec`: the answer is 101 and the connection \
             carries frames; without them the answer is 426.",
        )
        .json::<crate::exec_stream::ExecStreamRequest>()
        .respond(101, "switching to the exec stream", None)
        .errors(&[400, 404, 409, 413, 415, 426, 502, 503])
        .add();

    // Networks.
    b.op("get", "/v1/networks").query::<ReadQuery>(consistency).ok::<Vec<Network>>(200).errors(READ).add();
    b.op("post", "/v1/networks")
        .json::<NetworkSpec>()
        .ok::<Created>(201)
        .errors(&[400, 409, 413, 415, 503])
        .add();
    b.op("get", "/v1/networks/{id}")
        .query::<ReadQuery>(consistency)
        .ok::<crate::app::NetworkInfo>(200)
        .errors(INSPECT)
        .add();
    b.op("delete", "/v1/networks/{id}").no_content().errors(&[404, 409, 503]).add();

    // Secrets and configs.
    for (list, one) in [("/v1/secrets", "/v1/secrets/{id}"), ("/v1/configs", "/v1/configs/{id}")] {
        b.op("get", list).query::<ReadQuery>(consistency).ok::<Vec<Secret>>(200).errors(READ).add();
        b.op("post", list).json::<SecretSpec>().ok::<Created>(201).errors(&[400, 409, 413, 415, 503]).add();
        b.op("get", one).query::<ReadQuery>(consistency).ok::<Secret>(200).errors(INSPECT).add();
        b.op("delete", one).no_content().errors(&[404, 409, 503]).add();
    }

    // Stacks.
    b.op("get", "/v1/stacks")
        .query::<ReadQuery>(consistency)
        .ok::<Vec<crate::stack::StackInfo>>(200)
        .errors(READ)
        .add();
    b.op("post", "/v1/stacks/{name}/deploy")
        .json::<crate::stack::DeployRequest>()
        .ok::<crate::stack::StackReport>(200)
        .errors(&[400, 404, 409, 413, 415, 503])
        .add();
    b.op("get", "/v1/stacks/{name}/services")
        .query::<ReadQuery>(consistency)
        .ok::<Vec<Service>>(200)
        .errors(INSPECT)
        .add();
    b.op("get", "/v1/stacks/{name}/tasks")
        .query::<ReadQuery>(consistency)
        .ok::<Vec<Task>>(200)
        .errors(INSPECT)
        .add();
    b.op("delete", "/v1/stacks/{name}")
        .ok::<crate::stack::StackReport>(200)
        .errors(&[400, 404, 409, 503])
        .add();

    // Events.
    b.op("get", "/v1/events")
        .query::<crate::events::EventsQuery>(&[])
        .ndjson::<shoal_state::Event>()
        .errors(READ)
        .add();

    // The key-value store.
    let lease_id = json!({"type": "integer", "format": "int64"});
    b.op("post", "/v1/kv/range")
        .json::<crate::kv_http::RangeBody>()
        .ok::<shoal_kv::RangeResponse>(200)
        .errors(&[400, 413, 415, 503])
        .add();
    b.op("post", "/v1/kv/ops")
        .json::<shoal_kv::Op>()
        .ok::<shoal_kv::OpResponse>(200)
        .errors(&[400, 404, 409, 413, 415, 503])
        .add();
    b.op("get", "/v1/kv/watch")
        .query::<crate::kv_http::WatchQuery>(&["key", "range_end", "start_revision"])
        .ndjson::<crate::kv_http::WatchLine>()
        .errors(&[400, 409, 503])
        .add();
    b.op("get", "/v1/kv/leases").ok::<Vec<i64>>(200).errors(&[503]).add();
    b.op("get", "/v1/kv/leases/{id}")
        .path_param("id", lease_id.clone())
        .query::<crate::kv_http::LeaseQuery>(&[])
        .ok::<shoal_kv::LeaseTimeToLiveResponse>(200)
        .errors(&[400, 404, 503])
        .add();
    b.op("post", "/v1/kv/leases/{id}/keepalive")
        .path_param("id", lease_id)
        .ok_value(
            200,
            json!({"type": "object", "required": ["ttl"], "properties": {"ttl": {"type": "integer", "format": "int64"}}}),
        )
        .errors(&[400, 404, 503])
        .add();

    // Scheduled jobs.
    b.op("get", "/v1/jobs").query::<ReadQuery>(consistency).ok::<Vec<Service>>(200).errors(READ).add();
    let graph = b.response::<crate::jobs::JobGraph>();
    b.op("get", "/v1/jobs/graph")
        .query::<crate::jobs::GraphQuery>(&[])
        .respond(
            200,
            "the graph: JSON, Graphviz dot or CSV (by `format`)",
            Some(json!({
                JSON: {"schema": graph},
                "text/vnd.graphviz": {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}}
            })),
        )
        .errors(READ)
        .add();
    for action in ["/v1/jobs/{id}/run", "/v1/jobs/{id}/suspend", "/v1/jobs/{id}/resume"] {
        b.op("post", action).ok::<Service>(200).errors(&[400, 404, 409, 503]).add();
    }

    // Fleet units.
    b.op("get", "/v1/units").ok::<Vec<crate::units::UnitInfo>>(200).errors(&[503]).add();
    b.op("put", "/v1/units/{name}")
        .json::<crate::units::UnitRequest>()
        .ok::<crate::units::UnitResult>(200)
        .errors(&[400, 404, 409, 413, 415, 503])
        .add();
    b.op("post", "/v1/units/{name}/start")
        .ok::<crate::units::UnitResult>(200)
        .errors(&[400, 404, 409, 503])
        .add();
    b.op("post", "/v1/units/{name}/stop").no_content().errors(&[400, 404, 409, 503]).add();
    b.op("delete", "/v1/units/{name}").no_content().errors(&[400, 404, 409, 503]).add();

    b.op("get", "/v1/openapi.json").ok_value(200, json!({"type": "object"})).add();
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}

/// The operations as `(method, path)`, for the tests and the route table.
pub fn operations_list() -> Vec<(String, String)> {
    let mut b = Builder::new();
    operations(&mut b);
    b.ops.iter().map(|o| (o.method.to_string(), o.path.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_names_every_registered_v1_route_and_nothing_else() {
        // The /v1 routes a manager's router registers: the source scan of crate::roles, less
        // those that are not part of it (the worker's socket's health check, the Chronos API
        // served on its own listener).
        let mut registered: Vec<(String, String)> = crate::roles::tests::scanned_routes()
            .into_iter()
            .filter(|(_, p)| p.starts_with("/v1/") && p != "/v1/health" && !p.starts_with("/v1/scheduler"))
            .map(|(m, p)| (m.to_ascii_lowercase(), p))
            .collect();
        registered.sort();
        registered.dedup();
        assert!(registered.iter().all(|(m, _)| m != "*"), "a /v1 route whose method the scan cannot see");
        let mut documented = operations_list();
        documented.sort();
        let missing: Vec<_> = registered.iter().filter(|r| !documented.contains(r)).collect();
        let extra: Vec<_> = documented.iter().filter(|d| !registered.contains(d)).collect();
        assert!(missing.is_empty(), "registered but not in /v1/openapi.json: {missing:?}");
        assert!(extra.is_empty(), "in /v1/openapi.json but not registered: {extra:?}");
        // The summaries come from ROUTES: every operation has one, and ROUTES names nothing else.
        let mut routes: Vec<(String, String)> =
            ROUTES.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
        routes.sort();
        assert_eq!(routes, documented, "crate::server::ROUTES and the document differ");
    }

    #[test]
    fn every_reference_resolves_and_ids_are_unique() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for r in refs(&doc) {
            assert!(schemas.contains_key(&r), "dangling $ref {r}");
        }
        let text = doc.to_string();
        assert!(!text.contains("x-request-schemas"), "a request reference was not merged");
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|p| p.as_object().expect("path item").values())
            .map(|o| o["operationId"].as_str().expect("operationId"))
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate operationId");
    }

    /// `value` against the document's schema `name` (references resolved in the document).
    fn check(doc: &Value, name: &str, value: &Value) {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("{SCHEMAS}{name}"),
            "components": doc["components"],
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("schema {name}: {e}"));
        let errors: Vec<String> =
            validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "{name} does not describe\n{value:#}\n{errors:#?}");
    }

    /// A service spec with most of what an operator sets, read as the API reads it.
    fn rich_spec(name: &str, mode: Value) -> shoal_types::ServiceSpec {
        serde_json::from_value(json!({
            "name": name,
            "labels": {"team": "web"},
            "task_template": {
                "image": "nginx:1.27",
                "command": ["nginx", "-g", "daemon off;"],
                "env": {"A": "1"},
                "mounts": [{"type": "volume", "source": "data", "target": "/data"}],
                "resources": {"limits": {"memory_bytes": 1048576}},
                "placement": {"constraints": ["node.labels.zone==a"]},
                "health_check": {"test": ["CMD", "true"], "interval": "10s", "timeout": "1s", "retries": 3},
                // Written back as `1day 12h` and `1s 500ms`.
                "stop_grace_period": "36h",
                "restart_policy": {"condition": "on-failure", "delay": "1.5s", "max_attempts": 3},
                "ulimits": [{"name": "nofile", "soft": 1024, "hard": 2048}],
                "log_driver": {"name": "json-file", "options": {"max-size": "10m"}},
                "secrets": [{"source": "db", "id": "s1", "target": "db"}]
            },
            "mode": mode,
            "update_config": {"parallelism": 2, "delay": "1s", "order": "start-first"},
            "endpoint": {"ports": [{"protocol": "tcp", "target": 80, "published": 8080}]},
            "networks": [{"target": "n1"}],
            "depends_on": [{"service": "db", "condition": "healthy"}]
        }))
        .unwrap_or_else(|e| panic!("spec: {e}"))
    }

    #[test]
    fn real_objects_match_their_schemas() {
        use shoal_types::{Network, NetworkId, NetworkSpec, Node, NodeId, Service, ServiceId, Task, TaskId};
        use shoal_types::{TaskState, Timestamp};
        let doc = document();
        let at = Timestamp::from_secs(1_764_098_516);
        let spec = rich_spec("web", json!({"replicated": {"replicas": 3}}));
        let mut svc = Service::new(ServiceId::new("s1"), spec.clone());
        svc.version = 7;
        svc.created_at = at;
        svc.previous_spec = Some(spec.clone());
        svc.rebalance_requested_at = Some(at);
        svc.update_status = Some(shoal_types::UpdateStatus {
            state: shoal_types::UpdateState::Updating,
            started_at: at,
            completed_at: None,
            message: "update in progress".into(),
        });
        let job =
            rich_spec("nightly", json!({"scheduled": {"schedule": "0 3 * * *", "starting_deadline": "1m"}}));
        let job = Service::new(ServiceId::new("s2"), job);
        for s in [&svc, &job] {
            let v = serde_json::to_value(s).expect("service");
            check(&doc, "Service", &v);
            // What the API writes, it reads back: a spec shown is a valid request.
            check(&doc, "ServiceSpecIn", &v["spec"]);
        }
        let task = Task {
            id: TaskId::new("t1"),
            version: 3,
            created_at: at,
            updated_at: at,
            service_id: svc.id.clone(),
            slot: Some(1),
            node_id: Some(NodeId::new("n1")),
            spec: spec.task_template.clone().into(),
            endpoint: spec.endpoint.clone(),
            spec_version: 1,
            desired_state: TaskState::Running,
            status: shoal_types::TaskStatus {
                state: TaskState::Running,
                timestamp: at,
                message: "started".into(),
                exit_code: Some(0),
                health: Some(shoal_types::Health::Healthy),
                ..Default::default()
            },
            restart_history: vec![at],
            restore: None,
            networks: Vec::new(),
        };
        check(&doc, "Task", &serde_json::to_value(&task).expect("task"));
        let node = Node {
            id: NodeId::new("n1"),
            version: 2,
            created_at: at,
            updated_at: at,
            spec: Default::default(),
            description: Default::default(),
            status: Default::default(),
            manager_status: Some(Default::default()),
        };
        check(&doc, "Node", &serde_json::to_value(&node).expect("node"));
        let net: NetworkSpec =
            serde_json::from_value(json!({"name": "backend", "subnet": "10.0.9.0/24", "attachable": true}))
                .expect("network spec");
        let net = Network::new(NetworkId::new("net1"), net);
        check(&doc, "Network", &serde_json::to_value(&net).expect("network"));
        let info = crate::app::NetworkInfo { network: net.clone(), peers: Vec::new() };
        check(&doc, "NetworkInfo", &serde_json::to_value(&info).expect("network info"));
        // An event line: a tagged object flattened next to the index.
        let ev = shoal_state::Event {
            index: 9,
            at,
            action: shoal_state::Action::Update,
            object: shoal_state::Object::Service(Box::new(svc.clone())),
        };
        check(&doc, "Event", &serde_json::to_value(&ev).expect("event"));
        let secret = shoal_types::Secret::new(
            shoal_types::SecretId::new("x1"),
            shoal_types::SecretKind::Config,
            serde_json::from_value(json!({"name": "conf", "data": "aGVsbG8="})).expect("secret spec"),
        );
        check(&doc, "Secret", &serde_json::to_value(&secret).expect("secret"));
        let kv = shoal_kv::RangeResponse {
            revision: 4,
            kvs: vec![shoal_kv::KeyValue {
                key: b"k".to_vec(),
                value: b"\x00\xffv".to_vec(),
                create_revision: 2,
                mod_revision: 4,
                version: 2,
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        check(&doc, "RangeResponse", &serde_json::to_value(&kv).expect("range"));
        let err =
            crate::server::ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such service");
        let body =
            axum::body::to_bytes(axum::response::IntoResponse::into_response(err).into_body(), 1 << 16);
        let body = futures_util::FutureExt::now_or_never(body).expect("ready").expect("body");
        check(&doc, "Error", &serde_json::from_slice(&body).expect("error json"));
    }

    #[test]
    fn request_forms_that_differ_are_named_apart() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        // A service is written with its system fields; its spec is read with defaults, so
        // nothing in it is required on the way in.
        assert!(schemas["Service"]["required"].as_array().is_some_and(|r| r.contains(&json!("spec"))));
        let create = &doc["paths"]["/v1/services"]["post"]["requestBody"]["content"][JSON]["schema"];
        assert!(create.to_string().contains("#/components/schemas/ServiceSpec"), "{create}");
        assert_eq!(schemas["ServiceSpecIn"]["additionalProperties"], json!(false));
    }
}
