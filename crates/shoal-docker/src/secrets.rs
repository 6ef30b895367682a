//! `/secrets` and `/configs`: Shoal's secrets and configs as Docker's (`docker secret|config
//! create/ls/inspect/rm`, and what `docker stack deploy/rm` does with them).
//!
//! Only wire formats are translated here; the rules are [`shoal_api::app::App`]'s: a secret's data
//! is never shown (not by inspect either), a config's is (base64, as Docker's); names are unique
//! per kind; one in use cannot be removed (409, naming the services). Both are immutable: an update
//! that changes nothing is accepted (the docker CLI sends one for every secret of a stack it
//! re-deploys), any other is refused (Swarm allows changing labels; Shoal does not).

use crate::error::{DockerError, DockerResult};
use crate::filters::Filters;
use crate::spec::says_nothing;
use crate::Ctx;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bollard::models::ObjectVersion;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_manager::Consistency;
use shoal_types as st;
use st::SecretKind;
use std::collections::{BTreeMap, HashMap};

/// Docker's `SecretSpec`/`ConfigSpec` as a client sends it. `Data` is standard base64.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireSpec {
    #[serde(rename = "Name", default)]
    name: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Data", default)]
    data: Option<st::SecretData>,
    #[serde(rename = "Driver", default)]
    driver: Option<Value>,
    #[serde(rename = "Templating", default)]
    templating: Option<Value>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

/// Docker's `Secret`/`Config`.
#[derive(Debug, Serialize)]
pub(crate) struct Wire {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Version")]
    version: ObjectVersion,
    #[serde(rename = "CreatedAt")]
    created_at: String,
    #[serde(rename = "UpdatedAt")]
    updated_at: String,
    #[serde(rename = "Spec")]
    spec: WireSpecOut,
}

#[derive(Debug, Serialize)]
struct WireSpecOut {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Labels")]
    labels: BTreeMap<String, String>,
    /// A config's data (base64); never a secret's.
    #[serde(rename = "Data", skip_serializing_if = "Option::is_none")]
    data: Option<st::SecretData>,
}

/// A Shoal secret or config as Docker's: a secret's data is left out whatever `s` holds.
pub(crate) fn render(s: &st::Secret) -> Wire {
    let data = match s.kind {
        SecretKind::Config => Some(s.spec.data.clone()).filter(|d| !d.is_empty()),
        SecretKind::Secret => None,
    };
    Wire {
        id: s.id.to_string(),
        version: ObjectVersion { index: Some(s.version) },
        created_at: s.created_at.to_string(),
        updated_at: s.updated_at.to_string(),
        spec: WireSpecOut { name: s.spec.name.clone(), labels: s.spec.labels.clone(), data },
    }
}

/// Docker's spec → Shoal's; what Shoal cannot do is refused with its path, all at once.
pub(crate) fn to_spec(kind: SecretKind, w: WireSpec) -> Result<st::SecretSpec, String> {
    let mut problems = Vec::new();
    for (k, v) in &w.extra {
        if !says_nothing(v) {
            problems.push(format!("Spec.{k}: unknown field: Shoal cannot map it"));
        }
    }
    if w.driver.as_ref().is_some_and(|v| !says_nothing(v)) {
        problems.push(format!(
            "Spec.Driver: not supported by Shoal ({kind} drivers: the managers keep the data themselves)"
        ));
    }
    if w.templating.as_ref().is_some_and(|v| !says_nothing(v)) {
        problems.push("Spec.Templating: not supported by Shoal (templated secrets and configs)".to_string());
    }
    if problems.is_empty() {
        Ok(st::SecretSpec {
            name: w.name.unwrap_or_default(),
            labels: w.labels.unwrap_or_default(),
            data: w.data.unwrap_or_default(),
        })
    } else {
        Err(problems.join("; "))
    }
}

fn kind_of<const CONFIG: bool>() -> SecretKind {
    if CONFIG {
        SecretKind::Config
    } else {
        SecretKind::Secret
    }
}

fn parse(kind: SecretKind, body: &[u8]) -> DockerResult<st::SecretSpec> {
    let w: WireSpec = serde_json::from_slice(body)
        .map_err(|e| DockerError::invalid(format!("invalid {kind} spec: {e}")))?;
    to_spec(kind, w).map_err(DockerError::invalid)
}

/// `docker secret ls` (`docker config ls`): Docker's filters `id` (prefix), `name` (prefix),
/// `names` (exact) and `label`.
pub(crate) async fn list<const CONFIG: bool>(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> DockerResult<Json<Vec<Wire>>> {
    let f = Filters::from_query(&q, &["id", "name", "names", "label"])?;
    let all = ctx.app.secrets(kind_of::<CONFIG>(), Consistency::Linearizable).await?;
    let out = all
        .iter()
        .filter(|s| {
            f.any("id", |p| s.id.as_str().starts_with(p))
                && f.any("name", |p| s.spec.name.starts_with(p))
                && f.any("names", |n| s.spec.name == n)
                && f.labels_match("label", |k| s.spec.labels.get(k).map(String::as_str))
        })
        .map(render)
        .collect();
    Ok(Json(out))
}

/// By id, name or unique id prefix, as Docker looks them up.
pub(crate) async fn inspect<const CONFIG: bool>(
    State(ctx): State<Ctx>,
    Path(key): Path<String>,
) -> DockerResult<Json<Wire>> {
    let s = ctx.app.secret(kind_of::<CONFIG>(), &key, Consistency::Linearizable).await?;
    Ok(Json(render(&s)))
}

#[derive(Serialize)]
pub(crate) struct Created {
    #[serde(rename = "ID")]
    id: String,
}

pub(crate) async fn create<const CONFIG: bool>(
    State(ctx): State<Ctx>,
    body: Bytes,
) -> DockerResult<(StatusCode, Json<Created>)> {
    let kind = kind_of::<CONFIG>();
    let spec = parse(kind, &body)?;
    let id = ctx.app.create_secret(kind, spec).await?;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string() })))
}

pub(crate) async fn remove<const CONFIG: bool>(
    State(ctx): State<Ctx>,
    Path(key): Path<String>,
) -> DockerResult<StatusCode> {
    ctx.app.remove_secret(kind_of::<CONFIG>(), &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /secrets/{id}/update?version=N`: accepted when it changes nothing (see the module).
pub(crate) async fn update<const CONFIG: bool>(
    State(ctx): State<Ctx>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> DockerResult<StatusCode> {
    let kind = kind_of::<CONFIG>();
    let version = match q.get("version").map(String::as_str) {
        None | Some("") => None,
        Some(v) => {
            Some(v.parse::<u64>().map_err(|_| DockerError::invalid(format!("invalid version {v:?}")))?)
        }
    };
    let spec = parse(kind, &body)?;
    ctx.app.update_secret(kind, &key, version, spec).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(j: &str) -> WireSpec {
        serde_json::from_str(j).expect("wire spec")
    }

    /// What `docker secret create --label a=1 pw -` sends for "hunter2".
    const CREATE: &str = r#"{"Name":"pw","Labels":{"a":"1"},"Data":"aHVudGVyMg=="}"#;

    #[test]
    fn the_clis_create_maps_and_data_is_never_shown_for_a_secret() {
        let spec = to_spec(SecretKind::Secret, wire(CREATE)).expect("maps");
        assert_eq!(spec.name, "pw");
        assert_eq!(spec.labels.get("a").map(String::as_str), Some("1"));
        assert_eq!(spec.data.as_bytes(), b"hunter2");
        let mut s = st::Secret::new(st::SecretId::new("s1"), SecretKind::Secret, spec.clone());
        s.version = 3;
        let v = serde_json::to_value(render(&s)).expect("json");
        assert_eq!(v["ID"], "s1");
        assert_eq!(v["Version"]["Index"], 3);
        assert_eq!(v["Spec"]["Name"], "pw");
        assert_eq!(v["Spec"]["Labels"]["a"], "1");
        assert!(v["Spec"].get("Data").is_none(), "{v}");
        assert!(!v.to_string().contains("aHVudGVyMg"), "{v}");
        // A config's data is shown, base64 as Docker has it.
        let c = st::Secret::new(st::SecretId::new("c1"), SecretKind::Config, spec);
        let v = serde_json::to_value(render(&c)).expect("json");
        assert_eq!(v["Spec"]["Data"], "aHVudGVyMg==");
        assert!(v["CreatedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    }

    #[test]
    fn drivers_templates_and_unknown_fields_are_refused_by_path() {
        let e = to_spec(
            SecretKind::Secret,
            wire(r#"{"Name":"pw","Driver":{"Name":"vault"},"Templating":{"Name":"golang"},"Frob":1}"#),
        )
        .expect_err("refused");
        for want in [
            "Spec.Driver: not supported by Shoal",
            "Spec.Templating: not supported",
            "Spec.Frob: unknown field",
        ] {
            assert!(e.contains(want), "{want} missing from: {e}");
        }
        // Fields that say nothing are not refused; absent data is the application layer's to refuse.
        let quiet =
            to_spec(SecretKind::Config, wire(r#"{"Name":"c","Driver":null,"Templating":{"Name":""}}"#))
                .expect("quiet");
        assert!(quiet.data.is_empty());
        assert!(serde_json::from_str::<WireSpec>(r#"{"Name":"x","Data":"%%"}"#).is_err(), "not base64");
    }
}
