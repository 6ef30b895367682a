//! Secrets and configs: the application layer's operations (`impl App`) and the `/v1/secrets`,
//! `/v1/configs` routes that translate them.
//!
//! - **A secret's data never leaves the managers through the API**: list and inspect show the
//!   object without it (like `docker secret inspect`); only the dispatcher hands it to a node, for
//!   a task of that node that has yet to start ([`crate::dispatcher`]). A config's data is shown
//!   by inspect (as Docker does), but never in lists or events.
//! - Names are unique per kind; secrets are immutable (rotate by creating another and updating
//!   the services); one in use cannot be removed (`apply` names the services).
//! - Keys are ids, names or unique id prefixes. Reads are linearizable unless `?stale=true`.

use crate::app::{new_id, App, AppError, AppResult};
use crate::server::{ApiError, Created, JsonBody, ReadQuery};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use shoal_manager::{Consistency, Manager};
use shoal_state::{ClusterState, Command};
use shoal_types::{Secret, SecretId, SecretKind, SecretSpec};
use std::sync::Arc;

/// The one object of `kind` that `key` names: its id, its name, or a unique prefix of its id.
pub fn find_secret<'s>(s: &'s ClusterState, kind: SecretKind, key: &str) -> AppResult<Option<&'s Secret>> {
    if let Some(x) = s.secret(&SecretId::new(key)).filter(|x| x.kind == kind) {
        return Ok(Some(x));
    }
    if let Some(x) = s.secret_by_name(kind, key) {
        return Ok(Some(x));
    }
    if key.is_empty() {
        return Ok(None);
    }
    let mut matches = s.secrets().filter(|x| x.kind == kind && x.id.as_str().starts_with(key));
    match (matches.next(), matches.next()) {
        (Some(x), None) => Ok(Some(x)),
        (Some(_), Some(_)) => Err(AppError::conflict(format!("{kind} prefix {key:?} is ambiguous"))),
        _ => Ok(None),
    }
}

/// Whether `want` describes `have` as it is: the same name and labels, and no data or the same
/// data (compared here, so the data never leaves the state). Else the invalid request, saying
/// what would change and what to do instead.
pub(crate) fn unchanged(have: &Secret, want: &SecretSpec) -> Result<(), AppError> {
    let kind = have.kind;
    let name = &have.spec.name;
    let change = if want.name != *name {
        Some(format!("its name ({name} → {})", want.name))
    } else if !want.data.is_empty() && want.data != have.spec.data {
        Some("its data".to_string())
    } else if want.labels != have.spec.labels {
        Some("its labels".to_string())
    } else {
        None
    };
    match change {
        None => Ok(()),
        Some(what) => Err(AppError::invalid(format!(
            "{kind} {name} cannot change ({what}): Shoal's secrets and configs are immutable, labels included; \
             create one under another name and move the services to it (service update --{kind}-rm {name} \
             --{kind}-add NEW; in a stack: another key, or name:)"
        ))),
    }
}

/// What a client may see of `s`: never a secret's data.
fn shown(s: &Secret) -> Secret {
    match s.kind {
        SecretKind::Secret => s.without_data(),
        SecretKind::Config => s.clone(),
    }
}

impl App {
    /// Secrets or configs, without their data, in id order.
    pub async fn secrets(&self, kind: SecretKind, c: Consistency) -> AppResult<Vec<Secret>> {
        self.read(c, |s| s.secrets().filter(|x| x.kind == kind).map(Secret::without_data).collect()).await
    }

    /// One secret (without its data) or config (with it).
    pub async fn secret(&self, kind: SecretKind, key: &str, c: Consistency) -> AppResult<Secret> {
        self.read(c, |s| find_secret(s, kind, key).map(|x| x.map(shown)))
            .await??
            .ok_or_else(|| AppError::not_found(kind.as_str(), key))
    }

    pub async fn create_secret(&self, kind: SecretKind, spec: SecretSpec) -> AppResult<SecretId> {
        spec.validate(kind).map_err(|e| AppError::invalid(format!("invalid {kind} spec: {e}")))?;
        let id = SecretId::new(new_id());
        self.write(Command::CreateSecret { secret: Box::new(Secret::new(id.clone(), kind, spec)) }).await?;
        tracing::info!(%id, %kind, "created");
        Ok(id)
    }

    /// An update of a secret or config, as Docker's API and `docker stack deploy` send one:
    /// Shoal's are immutable (Swarm's are too, except their labels), so an update that changes
    /// nothing — the same name and labels, and no data or the same data — is accepted (Docker's
    /// CLI sends one when it re-deploys a stack), and any change is refused, saying why. `version`
    /// is the one the client read (a race is a conflict).
    pub async fn update_secret(
        &self,
        kind: SecretKind,
        key: &str,
        version: Option<u64>,
        spec: SecretSpec,
    ) -> AppResult<SecretId> {
        let (id, why) = self
            .read(Consistency::Linearizable, |s| {
                find_secret(s, kind, key).map(|x| {
                    x.map(|x| {
                        let raced = version.filter(|v| *v != x.version).map(|v| {
                            format!(
                                "{kind} {} was changed concurrently (version {} now, expected {v})",
                                x.spec.name, x.version
                            )
                        });
                        (x.id.clone(), raced.map(AppError::conflict).or_else(|| unchanged(x, &spec).err()))
                    })
                })
            })
            .await??
            .ok_or_else(|| AppError::not_found(kind.as_str(), key))?;
        match why {
            Some(e) => Err(e),
            None => Ok(id),
        }
    }

    /// Removes one that no service uses (`apply` refuses one in use, naming the services).
    pub async fn remove_secret(&self, kind: SecretKind, key: &str) -> AppResult<()> {
        let id = self
            .read(Consistency::Linearizable, |s| find_secret(s, kind, key).map(|x| x.map(|x| x.id.clone())))
            .await??
            .ok_or_else(|| AppError::not_found(kind.as_str(), key))?;
        self.write(Command::RemoveSecret { id }).await?;
        Ok(())
    }
}

pub fn routes() -> Router<Arc<Manager>> {
    Router::new()
        .route("/v1/secrets", get(list::<false>).post(create::<false>))
        .route("/v1/secrets/{id}", get(inspect::<false>).delete(remove::<false>))
        .route("/v1/configs", get(list::<true>).post(create::<true>))
        .route("/v1/configs/{id}", get(inspect::<true>).delete(remove::<true>))
}

fn kind_of<const CONFIG: bool>() -> SecretKind {
    if CONFIG {
        SecretKind::Config
    } else {
        SecretKind::Secret
    }
}

async fn list<const CONFIG: bool>(
    State(m): State<Arc<Manager>>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Secret>>, ApiError> {
    Ok(Json(App::new(m).secrets(kind_of::<CONFIG>(), q.consistency()).await?))
}

async fn inspect<const CONFIG: bool>(
    State(m): State<Arc<Manager>>,
    Path(key): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Secret>, ApiError> {
    Ok(Json(App::new(m).secret(kind_of::<CONFIG>(), &key, q.consistency()).await?))
}

async fn create<const CONFIG: bool>(
    State(m): State<Arc<Manager>>,
    JsonBody(spec): JsonBody<SecretSpec>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let id = App::new(m).create_secret(kind_of::<CONFIG>(), spec).await?;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string(), warnings: Vec::new() })))
}

async fn remove<const CONFIG: bool>(
    State(m): State<Arc<Manager>>,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    App::new(m).remove_secret(kind_of::<CONFIG>(), &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::SecretData;

    #[test]
    fn only_an_update_that_changes_nothing_is_accepted() {
        let spec = |name: &str, label: &str, data: &[u8]| SecretSpec {
            name: name.into(),
            labels: [("l".to_string(), label.to_string())].into_iter().collect(),
            data: SecretData(data.to_vec()),
        };
        let have = Secret::new(SecretId::new("s1"), SecretKind::Secret, spec("pw", "1", b"hunter2"));
        assert!(unchanged(&have, &spec("pw", "1", b"hunter2")).is_ok());
        assert!(unchanged(&have, &spec("pw", "1", b"")).is_ok(), "no data: the data stays");
        for (want, what) in [
            (spec("pw", "1", b"Zq9-new"), "(its data)"),
            (spec("pw", "2", b"hunter2"), "(its labels)"),
            (spec("pw2", "1", b"hunter2"), "(its name (pw → pw2))"),
        ] {
            let e = unchanged(&have, &want).expect_err("a change");
            assert_eq!(e.kind, crate::app::Kind::Invalid);
            assert!(e.message.starts_with(&format!("secret pw cannot change {what}")), "{}", e.message);
            assert!(!e.message.contains("hunter2") && !e.message.contains("Zq9"), "{}", e.message);
        }
    }
}
