//! Several compose files (`-c a.yml -c b.yml`) merge into one, by the Compose specification's
//! rules: mappings merge key by key (the later file wins); `command`, `entrypoint` and
//! `healthcheck.test` are replaced; `environment`, `labels`, `depends_on` and a service's
//! `networks` merge as mappings whichever form (list or mapping) each file uses; `ports` and
//! other sequences are appended without duplicates; a service's `volumes` merge by target path,
//! its `secrets` and `configs` by source (as the docker CLI merges them).

use serde_norway::{Mapping, Value};

/// `over` merged onto `base`; `path` is where they are (keys from the root).
pub(crate) fn merge(base: Value, over: Value, path: &[&str]) -> Value {
    match kind(path) {
        Kind::Replace => over,
        Kind::KeyValues => merge_mappings(key_values(base), key_values(over), path),
        Kind::DependsOn => merge_mappings(depends_on(base), depends_on(over), path),
        Kind::Networks => merge_mappings(network_list(base), network_list(over), path),
        Kind::Volumes => merge_volumes(base, over),
        Kind::BySource => merge_by_source(base, over),
        Kind::Default => match (base, over) {
            (Value::Mapping(a), Value::Mapping(b)) => {
                merge_mappings(Value::Mapping(a), Value::Mapping(b), path)
            }
            (Value::Sequence(mut a), Value::Sequence(b)) => {
                for v in b {
                    if !a.contains(&v) {
                        a.push(v);
                    }
                }
                Value::Sequence(a)
            }
            (Value::String(a), Value::Sequence(b)) if path.last() == Some(&"env_file") => {
                merge(Value::Sequence(vec![Value::String(a)]), Value::Sequence(b), path)
            }
            (Value::Sequence(a), Value::String(b)) if path.last() == Some(&"env_file") => {
                merge(Value::Sequence(a), Value::Sequence(vec![Value::String(b)]), path)
            }
            (_, over) => over,
        },
    }
}

enum Kind {
    Replace,
    KeyValues,
    DependsOn,
    Networks,
    Volumes,
    BySource,
    Default,
}

fn kind(path: &[&str]) -> Kind {
    match path {
        ["services", _, "command" | "entrypoint"] | ["services", _, "healthcheck", "test"] => Kind::Replace,
        ["services", _, "environment" | "labels"]
        | ["services", _, "deploy", "labels"]
        | ["networks" | "volumes" | "secrets" | "configs", _, "labels"] => Kind::KeyValues,
        ["services", _, "depends_on"] => Kind::DependsOn,
        ["services", _, "networks"] => Kind::Networks,
        ["services", _, "volumes"] => Kind::Volumes,
        ["services", _, "secrets" | "configs"] => Kind::BySource,
        _ => Kind::Default,
    }
}

fn merge_mappings(base: Value, over: Value, path: &[&str]) -> Value {
    let (mut a, b) = match (base, over) {
        (Value::Mapping(a), Value::Mapping(b)) => (a, b),
        // A shape the reader refuses later (`environment: 5`): the later file's value stands.
        (_, over) => return over,
    };
    for (k, v) in b {
        let key = k.as_str().map(str::to_string);
        let merged = match (a.remove(&k), key) {
            (Some(old), Some(key)) => {
                let mut p = path.to_vec();
                p.push(&key);
                merge(old, v, &p)
            }
            (_, _) => v,
        };
        a.insert(k, merged);
    }
    Value::Mapping(a)
}

/// `["A=1", "B"]` or `{A: 1, B: null}` as a mapping; anything else unchanged (and reported
/// when the merged value is read).
pub(crate) fn key_values(v: Value) -> Value {
    match v {
        Value::Sequence(items) => {
            let mut m = Mapping::new();
            for item in items {
                match item {
                    Value::String(s) => match s.split_once('=') {
                        Some((k, v)) => m.insert(Value::String(k.to_string()), Value::String(v.to_string())),
                        None => m.insert(Value::String(s), Value::Null),
                    },
                    other => m.insert(other, Value::Null),
                };
            }
            Value::Mapping(m)
        }
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    }
}

/// `[db]` as `{db: {condition: service_started}}`.
pub(crate) fn depends_on(v: Value) -> Value {
    match v {
        Value::Sequence(items) => {
            let mut m = Mapping::new();
            for item in items {
                let mut c = Mapping::new();
                c.insert("condition".into(), "service_started".into());
                m.insert(item, Value::Mapping(c));
            }
            Value::Mapping(m)
        }
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    }
}

/// `[front]` as `{front: null}`.
pub(crate) fn network_list(v: Value) -> Value {
    match v {
        Value::Sequence(items) => Value::Mapping(items.into_iter().map(|i| (i, Value::Null)).collect()),
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    }
}

/// The target path of a service volume, short (`src:/dst:ro`) or long form.
fn volume_target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(match parts.as_slice() {
                [one] => one.to_string(),
                [_, dst, ..] => dst.to_string(),
                [] => return None,
            })
        }
        Value::Mapping(m) => m.get("target").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn merge_volumes(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Sequence(mut a), Value::Sequence(b)) => {
            for v in b {
                let t = volume_target(&v);
                match a.iter_mut().find(|x| t.is_some() && volume_target(x) == t) {
                    Some(slot) => *slot = v,
                    None => a.push(v),
                }
            }
            Value::Sequence(a)
        }
        (_, over) => over,
    }
}

/// The source of a service's secret or config: `NAME` or `{source: NAME, …}`.
fn source_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Mapping(m) => m.get("source").and_then(Value::as_str),
        _ => None,
    }
}

fn merge_by_source(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Sequence(mut a), Value::Sequence(b)) => {
            for v in b {
                let s = source_of(&v).map(str::to_string);
                match a.iter_mut().find(|x| s.is_some() && source_of(x).map(str::to_string) == s) {
                    Some(slot) => *slot = v,
                    None => a.push(v),
                }
            }
            Value::Sequence(a)
        }
        (_, over) => over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_norway::from_str(s).expect("yaml")
    }

    #[test]
    fn merge_follows_the_specifications_rules() {
        let a = yaml(
            r#"
services:
  web:
    image: web:1
    command: ["serve", "--old"]
    environment: ["A=1", "B=2"]
    ports: ["80:80"]
    depends_on: [db]
    networks: [front]
    volumes: ["data:/data", "/etc/x:/x:ro"]
    env_file: a.env
    deploy: {replicas: 2, labels: {tier: web}}
    secrets: [pw, {source: tls, target: /etc/tls}]
"#,
        );
        let b = yaml(
            r#"
services:
  web:
    image: web:2
    command: serve
    environment: {B: "3", C: "4"}
    ports: ["443:443", "80:80"]
    depends_on: {cache: {condition: service_healthy}}
    networks: {back: {aliases: [w]}}
    volumes: ["other:/data"]
    env_file: [b.env]
    deploy: {replicas: 3}
    secrets: [{source: pw, mode: 0400}, ca]
  db:
    image: db
"#,
        );
        let m = merge(a, b, &[]);
        let expected = yaml(
            r#"
services:
  web:
    image: web:2
    command: serve
    environment: {A: "1", B: "3", C: "4"}
    ports: ["80:80", "443:443"]
    depends_on: {db: {condition: service_started}, cache: {condition: service_healthy}}
    networks: {front: null, back: {aliases: [w]}}
    volumes: ["other:/data", "/etc/x:/x:ro"]
    env_file: [a.env, b.env]
    deploy: {replicas: 3, labels: {tier: web}}
    secrets: [{source: pw, mode: 0400}, {source: tls, target: /etc/tls}, ca]
  db:
    image: db
"#,
        );
        assert_eq!(m, expected);
    }
}
