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
