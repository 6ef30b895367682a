//! `/v1/networks`: overlay networks, translated to and from the application layer
//! ([`crate::app::App`]); `apply` decides everything else (VNI, subnet, overlaps, use). Reads
//! are linearizable unless `?stale=true`. Errors: 400 for a bad spec (name, CIDR, gateway, MTU,
//! unknown fields), 404 for an unknown network, 409 when it overlaps, exists or is in use.

use crate::app::App;
pub use crate::app::{find_network, NetworkInfo};
use crate::server::{ApiError, Created, JsonBody, ReadQuery};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use shoal_manager::Manager;
use shoal_types::{Network, NetworkSpec};
use std::sync::Arc;

pub async fn list(
    State(m): State<Arc<Manager>>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Network>>, ApiError> {
    Ok(Json(App::new(m).networks(q.consistency()).await?))
}

pub async fn inspect(
    State(m): State<Arc<Manager>>,
    Path(key): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<NetworkInfo>, ApiError> {
    Ok(Json(App::new(m).network(&key, q.consistency()).await?))
}

pub async fn create(
    State(m): State<Arc<Manager>>,
    JsonBody(spec): JsonBody<NetworkSpec>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let id = App::new(m).create_network(spec).await?;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string(), warnings: Vec::new() })))
}

pub async fn remove(State(m): State<Arc<Manager>>, Path(key): Path<String>) -> Result<StatusCode, ApiError> {
    App::new(m).remove_network(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}
