//! Fuzz target: what the docker CLI (or any client on the socket) sends as raw text — the
//! `filters` query parameter, boolean query values, the `/vX.Y` version prefix, the bodies of
//! `service create/update`, `network create`, `secret/config create`, and the `X-Registry-Auth`
//! header. Arbitrary input and structure-aware mutations of what the CLI really sends never
//! panic and are refused with a message; accepted filters only name accepted keys and read back
//! what was encoded, in both of Docker's encodings.

use super::{bool_param, Filters};
use crate::{networks, secrets, spec};
use proptest::prelude::*;
use serde_json::{json, Value};
use shoal_types::SecretKind;
use std::collections::{BTreeSet, HashMap};

const ACCEPTED: &[&str] = &["id", "name", "label", "service", "node", "desired-state", "_up-to-date"];

fn soup() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[{}\\[\\]\":,a-z0-9 =.-]{0,40}",
        "\\{(\"(id|name|label|color|node)\":(\\{\"[a-z=0-9]{0,5}\":(true|false|1|null|\"x\")\\}|\\[(\"[a-z]{0,3}\"|1|null|\\{\\})?\\]|null|3|\"x\"),?){0,3}\\}",
    ]
}

/// An arbitrary JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![Just(-1.5f64), Just(0.5), Just(1e300), Just(-0.0)].prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![Just("vip"), Just("dnsrr"), Just("overlay"), Just("tcp"), Just("global"), Just("host")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One structure-aware change: at the node reached by following `path` (indices taken modulo
/// each container's size), replace the value, drop a member, or add an unknown one.
#[derive(Clone, Debug)]
enum Mutation {
    Replace(Vec<usize>, Value),
    Remove(Vec<usize>),
    Add(Vec<usize>, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = prop::collection::vec(any::<usize>(), 0..6);
    prop_oneof![
        3 => (path.clone(), any_json()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        1 => path.clone().prop_map(Mutation::Remove),
        1 => (path, "[A-Za-z]{1,10}", any_json()).prop_map(|(p, k, v)| Mutation::Add(p, k, v)),
    ]
}

fn child(v: &mut Value, i: usize) -> Option<&mut Value> {
    match v {
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            a.get_mut(i % n)
        }
        Value::Object(o) if !o.is_empty() => {
            let n = o.len();
            o.values_mut().nth(i % n)
        }
        _ => None,
    }
}

fn apply(v: &mut Value, m: &Mutation) {
    let (path, last) = match m {
        Mutation::Replace(p, _) | Mutation::Remove(p) | Mutation::Add(p, _, _) => {
            (&p[..p.len().saturating_sub(1)], p.last().copied().unwrap_or(0))
        }
    };
    let mut at = v;
    for &i in path {
        if child(at, i).is_none() {
            break;
        }
        at = match child(at, i) {
            Some(c) => c,
            None => return,
        };
    }
    match m {
        Mutation::Replace(_, new) => match child(at, last) {
            Some(c) => *c = new.clone(),
            None => *at = new.clone(),
        },
        Mutation::Remove(_) => match at {
            Value::Object(o) if !o.is_empty() => {
                let k = o.keys().nth(last % o.len()).cloned().unwrap_or_default();
                o.remove(&k);
            }
            Value::Array(a) if !a.is_empty() => {
                let n = a.len();
                a.remove(last % n);
            }
            _ => {}
        },
        Mutation::Add(_, k, new) => {
            if let Value::Object(o) = at {
                o.insert(k.clone(), new.clone());
            }
        }
    }
}

fn mutated(sample: &str, ms: &[Mutation]) -> String {
    let mut v: Value = serde_json::from_str(sample).expect("a valid sample");
    for m in ms {
        apply(&mut v, m);
    }
    v.to_string()
}

fn message<T>(r: Result<T, String>) {
    if let Err(e) = r {
        assert!(!e.trim().is_empty(), "an empty error message");
    }
}

/// URL-safe base64 with padding, as the docker CLI encodes `X-Registry-Auth`.
fn base64_url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { char::from(A[((n >> shift) & 63) as usize]) } else { '=' });
        }
    }
    out
}

fn q(f: &str) -> HashMap<String, String> {
    [("filters".to_string(), f.to_string())].into_iter().collect()
}

/// What the docker CLI 28 sends for `docker service create` with most flags.
const SERVICE: &str = r#"{"Name":"web2","Labels":{"l":"1"},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:latest",
    "Command":["/bin/sh"],"Args":["-c","x"],"Env":["A=1","B=x=y"],"Dir":"/tmp","User":"nobody",
    "Hostname":"h","Init":false,"Mounts":[{"Type":"bind","Source":"/tmp","Target":"/data","ReadOnly":true},
    {"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{}}],"StopGracePeriod":3000000000,
    "Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":2000000000},"DNSConfig":{},
    "Secrets":[{"File":{"Name":"s","UID":"0","GID":"0","Mode":292},"SecretID":"abc","SecretName":"s"}],
    "Ulimits":[{"Name":"nofile","Hard":2048,"Soft":1024}]},
    "Resources":{"Limits":{"MemoryBytes":67108864,"Pids":50},"Reservations":{"NanoCPUs":500000000,
    "GenericResources":[{"DiscreteResourceSpec":{"Kind":"gpu","Value":1}}]}},
    "RestartPolicy":{"Condition":"on-failure","Delay":1000000000,"MaxAttempts":3},
    "Placement":{"Constraints":["node.role==worker"],"Preferences":[{"Spread":{"SpreadDescriptor":"node.labels.zone"}}],"MaxReplicas":2},
    "Networks":[{"Target":"front","Aliases":["w"]}],"ForceUpdate":2},
    "Mode":{"Replicated":{"Replicas":3}},
    "UpdateConfig":{"Parallelism":0,"Delay":3000000000,"FailureAction":"rollback","Monitor":1000000000,"MaxFailureRatio":0.5,"Order":"start-first"},
    "EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8080,"PublishMode":"ingress"}]}}"#;

/// `docker network create -d overlay --subnet … --attachable --opt mtu=1400 --label a=b front`.
const NETWORK: &str = r#"{"Driver":"overlay","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.20.0.0/24","Gateway":"10.20.0.1"}]},
    "Internal":false,"Attachable":true,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,
    "Options":{"mtu":"1400"},"Labels":{"a":"b"},"Name":"front"}"#;

/// `docker secret create --label a=b s file`.
const SECRET: &str = r#"{"Name":"s","Labels":{"a":"b"},"Data":"aGVsbG8=","Driver":null,"Templating":null}"#;

fn service(body: &[u8]) -> Result<shoal_types::ServiceSpec, String> {
    let d: spec::ServiceSpec = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    spec::to_shoal(&d, None)
}

fn secret(kind: SecretKind, body: &[u8]) -> Result<shoal_types::SecretSpec, String> {
    let w: secrets::WireSpec = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    secrets::to_spec(kind, w)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn filters_never_panic_and_only_accepted_keys_pass(s in soup(), n in 0..ACCEPTED.len()) {
        let accepted = &ACCEPTED[..n];
        match Filters::from_query(&q(&s), accepted) {
            Ok(f) => {
                for k in f.0.keys() {
                    prop_assert!(accepted.contains(&k.as_str()), "{k} passed for {s:?}");
                }
            }
            Err(e) => {
                prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
                prop_assert!(!e.message.trim().is_empty());
            }
        }
        let m: HashMap<String, String> = [("force".to_string(), s.clone())].into_iter().collect();
        let _ = bool_param(&m, "force");
        let _ = crate::parse_version(&s);
    }

    #[test]
    fn filters_read_back_in_both_encodings(
        f in prop::collection::btree_map(prop::sample::select(ACCEPTED), prop::collection::btree_set("\\PC{0,8}", 0..4), 0..4),
        off in prop::collection::btree_set("\\PC{1,8}", 0..3),
    ) {
        // {"key": {"value": true}}, with some values switched off; and the legacy {"key": ["value"]}.
        let objects: serde_json::Map<String, Value> = f
            .iter()
            .map(|(k, vs)| {
                let mut m: serde_json::Map<String, Value> = vs.iter().map(|v| (v.clone(), json!(true))).collect();
                for o in off.iter().filter(|o| !vs.contains(*o)) {
                    m.insert(o.clone(), json!(false));
                }
                (k.to_string(), Value::Object(m))
            })
            .collect();
        let arrays: serde_json::Map<String, Value> = f.iter().map(|(k, vs)| (k.to_string(), json!(vs))).collect();
        let none = BTreeSet::new();
        for encoded in [Value::Object(objects), Value::Object(arrays)] {
            let parsed = Filters::from_query(&q(&encoded.to_string()), ACCEPTED).expect("a valid filter");
            for k in ACCEPTED {
                prop_assert_eq!(parsed.contains(k), f.contains_key(k));
                let got: BTreeSet<String> = parsed.get(k).iter().cloned().collect();
                prop_assert_eq!(&got, f.get(k).unwrap_or(&none), "{} in {}", k, encoded);
            }
        }
    }

    #[test]
    fn service_specs_never_panic(s in "\\PC{0,64}", ms in prop::collection::vec(mutation(), 1..5)) {
        message(service(s.as_bytes()));
        message(service(mutated(SERVICE, &ms).as_bytes()));
    }

    #[test]
    fn network_and_secret_bodies_never_panic(s in "\\PC{0,64}", ms in prop::collection::vec(mutation(), 1..5)) {
        message(networks::to_spec(s.as_bytes()));
        message(networks::to_spec(mutated(NETWORK, &ms).as_bytes()));
        for kind in [SecretKind::Secret, SecretKind::Config] {
            message(secret(kind, s.as_bytes()));
            message(secret(kind, mutated(SECRET, &ms).as_bytes()));
        }
    }

    #[test]
    fn registry_auth_headers_never_panic(s in "\\PC{0,64}", user in "\\PC{0,12}", pass in "\\PC{0,12}") {
        let r = shoal_api::registry_auth::from_x_registry_auth(&s);
        if let Err(e) = r {
            prop_assert!(!e.to_string().trim().is_empty());
        }
        // What the CLI sends: URL-safe base64 of the JSON credentials, which read back.
        let creds = json!({"username": user, "password": pass, "serveraddress": "registry.example:5000"});
        let b64 = base64_url(creds.to_string().as_bytes());
        let got = shoal_api::registry_auth::from_x_registry_auth(&b64).expect("valid credentials");
        match got {
            Some(a) => prop_assert_eq!((a.username, a.password), (user, pass)),
            None => prop_assert!(user.is_empty() && pass.is_empty()),
        }
    }
}

#[test]
fn filter_values_of_another_type_are_refused_not_dropped() {
    // Found by this target: non-string list elements and non-boolean object values were
    // silently dropped, so `{"name":[1]}` became a `name` filter with no values, which matches
    // every object. Docker refuses both (`invalid filter`).
    for raw in
        [r#"{"name":[1]}"#, r#"{"name":["web",null]}"#, r#"{"name":{"web":"yes"}}"#, r#"{"name":{"web":1}}"#]
    {
        let e = Filters::from_query(&q(raw), ACCEPTED).expect_err(raw);
        assert!(e.message.contains("name is not a list of strings"), "{raw}: {}", e.message);
    }
    let f = Filters::from_query(&q(r#"{"name":{"web":true,"db":false}}"#), ACCEPTED).expect("booleans");
    assert_eq!(f.get("name"), ["web"]);
    let f = Filters::from_query(&q(r#"{"name":[]}"#), ACCEPTED).expect("an empty list");
    assert!(f.contains("name") && f.get("name").is_empty());
}

#[test]
fn the_samples_are_accepted() {
    service(SERVICE.as_bytes()).expect("the CLI's service");
    networks::to_spec(NETWORK.as_bytes()).expect("the CLI's network");
    secret(SecretKind::Secret, SECRET.as_bytes()).expect("the CLI's secret");
}

#[test]
fn long_and_deep_bodies_are_bounded() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let wide = format!("{{\"name\":[{}\"x\"]}}", "\"a\",".repeat(100_000));
    assert!(Filters::from_query(&q(&deep), ACCEPTED).is_err());
    assert_eq!(Filters::from_query(&q(&wide), ACCEPTED).expect("wide").get("name").len(), 100_001);
    message(service(deep.as_bytes()));
    message(networks::to_spec(deep.as_bytes()));
    message(secret(SecretKind::Config, deep.as_bytes()));
    let long_version = "9".repeat(100_000);
    let _ = crate::parse_version(&long_version);
}
