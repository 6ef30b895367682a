//! `/v1/networks`: overlay networks (phase 1 of service networking: the objects and what the
//! managers allocate for them; nothing on the nodes uses them yet).
//!
//! Writes go through the one write path (`crate::internal::write`, which is
//! `crate::leader::submit`); `apply` decides everything else (VNI, subnet, overlaps, use). Reads
//! are linearizable unless `?stale=true`. Errors: 400 for a bad spec (name, CIDR, gateway, MTU,
//! unknown fields), 404 for an unknown network, 409 when it overlaps, exists or is in use.

use crate::server::{read, ApiError, Created, JsonBody, ReadQuery};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_manager::Manager;
use shoal_state::{ClusterState, Command, NodeAddress};
use shoal_types::{Network, NetworkId, NetworkSpec};
use std::sync::Arc;

/// A network as `network inspect` shows it: the object and every node's address on it.
#[derive(Debug, Serialize, Deserialize)]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub network: Network,
    /// Each node's own address on the network (its endpoint there once the agents plumb it).
    #[serde(default)]
    pub peers: Vec<NodeAddress>,
}

/// A network by id, or by name.
pub fn find_network<'s>(s: &'s ClusterState, key: &str) -> Option<&'s Network> {
    s.network(&NetworkId::new(key)).or_else(|| s.network_by_name(key))
}

fn not_found(key: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("network {key} not found"))
}

pub async fn list(
    State(m): State<Arc<Manager>>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<Vec<Network>>, ApiError> {
    Ok(Json(read(&m, &q, |s| s.networks().cloned().collect()).await?))
}

pub async fn inspect(
    State(m): State<Arc<Manager>>,
    Path(key): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<NetworkInfo>, ApiError> {
    read(&m, &q, |s| {
        find_network(s, &key).map(|n| NetworkInfo { network: n.clone(), peers: s.node_addresses(&n.id) })
    })
    .await?
    .map(Json)
    .ok_or_else(|| not_found(&key))
}

pub async fn create(
    State(m): State<Arc<Manager>>,
    JsonBody(spec): JsonBody<NetworkSpec>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    spec.validate().map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("invalid network spec: {e}"))
    })?;
    let id = crate::server::new_id();
    let network = Network::new(NetworkId::new(id.clone()), spec);
    crate::internal::write(&m, Command::CreateNetwork { network: Box::new(network) }).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

pub async fn remove(State(m): State<Arc<Manager>>, Path(key): Path<String>) -> Result<StatusCode, ApiError> {
    // Resolved on the committed state (a name must not name yesterday's network).
    let id = read(&m, &ReadQuery::default(), |s| find_network(s, &key).map(|n| n.id.clone()))
        .await?
        .ok_or_else(|| not_found(&key))?;
    crate::internal::write(&m, Command::RemoveNetwork { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}
