//! `/networks`: Shoal's overlay networks (with `ingress`) as Docker's swarm-scoped networks.

use crate::error::{DockerError, DockerResult};
use crate::filters::Filters;
use crate::spec::says_nothing;
use crate::Ctx;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bollard::models::{ConfigReference, Ipam, IpamConfig, Network, NetworkCreateResponse, PeerInfo};
use serde_json::Value;
use shoal_api::app::Lookup;
use shoal_manager::Consistency;
use shoal_types as st;
use std::collections::HashMap;

const VXLAN_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";
const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// A Shoal network as Docker's; `peers` for inspect.
fn render(n: &st::Network, peers: Option<Vec<PeerInfo>>) -> Network {
    let mut options: HashMap<String, String> = HashMap::new();
    options.insert(VXLAN_OPTION.into(), n.status.vni.to_string());
    if let Some(mtu) = n.spec.mtu {
        options.insert(MTU_OPTION.into(), mtu.to_string());
    }
    Network {
        name: Some(n.spec.name.clone()),
        id: Some(n.id.to_string()),
        created: Some(n.created_at.to_string()),
        scope: Some("swarm".into()),
        driver: Some(n.spec.driver.as_str().into()),
        enable_ipv4: Some(true),
        enable_ipv6: Some(false),
        ipam: Some(Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(n.status.subnet.clone()),
                gateway: Some(n.status.gateway.clone()),
                ..Default::default()
            }]),
            options: Some(HashMap::new()),
        }),
        internal: Some(false),
        attachable: Some(n.spec.attachable),
        ingress: Some(n.spec.ingress),
        config_from: Some(ConfigReference { network: Some(String::new()) }),
        config_only: Some(false),
        options: Some(options),
        labels: Some(n.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        peers,
    }
}

pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> DockerResult<Json<Vec<Network>>> {
    let f = Filters::from_query(&q, &["driver", "id", "label", "name", "scope", "type"])?;
    for t in f.get("type") {
        if t != "custom" && t != "builtin" {
            return Err(DockerError::invalid(format!("invalid filter: 'type'='{t}'")));
        }
    }
    let nets = ctx.app.networks(Consistency::Linearizable).await?;
    let out = nets
        .iter()
        .filter(|n| {
            // Docker matches names by substring and ids by prefix.
            f.any("name", |p| n.spec.name.contains(p))
                && f.any("id", |p| n.id.as_str().starts_with(p))
                && f.any("driver", |d| d == n.spec.driver.as_str())
                && f.any("scope", |s| s == "swarm")
                && f.any("type", |t| t == "custom")
                && f.labels_match("label", |k| n.spec.labels.get(k).map(String::as_str))
        })
        .map(|n| render(n, None))
        .collect();
    Ok(Json(out))
}

pub(crate) async fn inspect(State(ctx): State<Ctx>, Path(id): Path<String>) -> DockerResult<Json<Network>> {
    let id = crate::resolve(&ctx, Lookup::Network, &id).await?;
    let info = ctx.app.network(&id, Consistency::Linearizable).await?;
    let peers = info
        .peers
        .iter()
        .map(|p| PeerInfo {
            name: Some(p.node_id.to_string()),
            ip: Some(p.addr.split('/').next().unwrap_or_default().to_string()),
        })
        .collect();
    Ok(Json(render(&info.network, Some(peers))))
}

/// The fields of Docker's `NetworkCreateRequest` (any other is refused unless it says nothing).
const CREATE_FIELDS: [&str; 14] = [
    "Name",
    "Driver",
    "Scope",
    "EnableIPv4",
    "EnableIPv6",
    "IPAM",
    "Internal",
    "Attachable",
    "Ingress",
    "ConfigOnly",
    "ConfigFrom",
    "Options",
    "Labels",
    "CheckDuplicate",
];

/// Docker's `network create` → Shoal's spec; every problem at once.
pub(crate) fn to_spec(body: &[u8]) -> Result<st::NetworkSpec, String> {
    let raw: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("invalid network spec: {e}"))?;
    let mut problems = Vec::new();
    for (k, v) in &raw {
        if !CREATE_FIELDS.contains(&k.as_str()) && !says_nothing(v) {
            problems.push(format!("{k}: unknown field: Shoal cannot map it"));
        }
    }
    let req: bollard::models::NetworkCreateRequest =
        serde_json::from_value(Value::Object(raw)).map_err(|e| format!("invalid network spec: {e}"))?;
    let mut spec = st::NetworkSpec {
        name: req.name.clone(),
        attachable: req.attachable.unwrap_or(false),
        ingress: req.ingress.unwrap_or(false),
        labels: req.labels.clone().unwrap_or_default().into_iter().collect(),
        ..Default::default()
    };
    match req.driver.as_deref() {
        Some("overlay") => {}
        None | Some("") => problems.push("Driver: Shoal's networks are overlay networks (-d overlay)".into()),
        Some(d) => problems.push(format!(
            "Driver: {d:?} is not supported: Shoal's networks are overlay networks (-d overlay)"
        )),
    }
    match req.scope.as_deref() {
        None | Some("") | Some("swarm") => {}
        Some(s) => problems.push(format!("Scope: {s:?} is not supported (networks are cluster-wide: swarm)")),
    }
    if req.enable_ipv4 == Some(false) {
        problems.push("EnableIPv4: networks are IPv4 networks".into());
    }
    for (set, field, what) in [
        (req.enable_ipv6, "EnableIPv6", "IPv6"),
        (req.internal, "Internal", "internal networks"),
        (req.config_only, "ConfigOnly", "config-only networks"),
    ] {
        if set == Some(true) {
            problems.push(format!("{field}: not supported by Shoal ({what})"));
        }
    }
    if req.config_from.as_ref().and_then(|c| c.network.as_deref()).is_some_and(|n| !n.is_empty()) {
        problems.push("ConfigFrom: not supported by Shoal (config-only networks)".into());
    }
    if let Some(ipam) = &req.ipam {
        match ipam.driver.as_deref() {
            None | Some("") | Some("default") => {}
            Some(d) => {
                problems.push(format!("IPAM.Driver: {d:?} is not supported (Shoal allocates addresses)"))
            }
        }
        if ipam.options.as_ref().is_some_and(|o| !o.is_empty()) {
            problems.push("IPAM.Options: not supported by Shoal".into());
        }
        let configs = ipam.config.clone().unwrap_or_default();
        if configs.len() > 1 {
            problems.push("IPAM.Config: one subnet per network (IPv4)".into());
        }
        if let Some(c) = configs.first() {
            spec.subnet = c.subnet.clone().filter(|s| !s.is_empty());
            spec.gateway = c.gateway.clone().filter(|s| !s.is_empty());
            if c.ip_range.as_deref().is_some_and(|r| !r.is_empty()) {
                problems
                    .push("IPAM.Config[0].IPRange: not supported by Shoal (the whole subnet is used)".into());
            }
            if c.auxiliary_addresses.as_ref().is_some_and(|a| !a.is_empty()) {
                problems.push("IPAM.Config[0].AuxiliaryAddresses: not supported by Shoal".into());
            }
        }
    }
    for (k, v) in req.options.iter().flatten() {
        match k.as_str() {
            "mtu" | MTU_OPTION => match v.parse::<u16>() {
                Ok(m) => spec.mtu = Some(m),
                Err(_) => problems.push(format!("Options.{k}: {v:?} is not an MTU")),
            },
            VXLAN_OPTION => problems.push(format!("Options.{k}: Shoal allocates the VXLAN ids")),
            "encrypted" => {
                problems.push("Options.encrypted: not supported by Shoal (encrypted overlays)".into())
            }
            _ => problems.push(format!("Options.{k}: not supported by Shoal (only mtu)")),
        }
    }
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems.join("; "))
    }
}

pub(crate) async fn create(
    State(ctx): State<Ctx>,
    body: Bytes,
) -> DockerResult<(StatusCode, Json<NetworkCreateResponse>)> {
    let spec = to_spec(&body).map_err(DockerError::invalid)?;
    let id = ctx.app.create_network(spec).await?;
    Ok((StatusCode::CREATED, Json(NetworkCreateResponse { id: id.to_string(), warning: String::new() })))
}

pub(crate) async fn remove(State(ctx): State<Ctx>, Path(id): Path<String>) -> DockerResult<StatusCode> {
    let id = crate::resolve(&ctx, Lookup::Network, &id).await?;
    // `docker stack rm` removes a stack's networks right after its services, as Swarm allows.
    ctx.app.remove_network_when_stopped(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clis_overlay_create_maps_and_the_rest_is_refused() {
        // What `docker network create -d overlay --subnet … --attachable --opt mtu=1400 --label a=b
        // front` sends.
        let body = br#"{"Driver":"overlay","Scope":"","IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.20.0.0/24"}]},
            "Internal":false,"Attachable":true,"Ingress":false,"ConfigOnly":false,"ConfigFrom":null,
            "Options":{"mtu":"1400"},"Labels":{"a":"b"},"Name":"front"}"#;
        let s = to_spec(body).expect("maps");
        assert_eq!(s.name, "front");
        assert_eq!(s.subnet.as_deref(), Some("10.20.0.0/24"));
        assert_eq!(s.mtu, Some(1400));
        assert!(s.attachable && !s.ingress);
        assert_eq!(s.labels.get("a").map(String::as_str), Some("b"));
        let e = to_spec(br#"{"Name":"b","Driver":"bridge","Internal":true,"EnableIPv6":true,"Options":{"encrypted":""},"Colour":"red"}"#)
            .expect_err("refused");
        for want in [
            "Driver: \"bridge\" is not supported",
            "Internal: not supported",
            "EnableIPv6",
            "Options.encrypted",
            "Colour: unknown field",
        ] {
            assert!(e.contains(want), "{want} missing from {e}");
        }
    }
}
