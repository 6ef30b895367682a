//! `/_ping`, `/version` and `/info`.

use crate::error::DockerResult;
use crate::{Ctx, WorkerNode, API_VERSION, MIN_API_VERSION};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use bollard::models::{
    ClusterInfo, LocalNodeState, ObjectVersion, PeerNode, SwarmInfo, SwarmSpec, SwarmSpecCaConfig,
    SwarmSpecDispatcher, SwarmSpecOrchestration, SwarmSpecRaft, SystemInfo, SystemVersion,
    SystemVersionComponents, SystemVersionPlatform,
};
use shoal_manager::Consistency;
use shoal_types::NodeRole;
use std::collections::HashMap;

/// What the machine is, as `docker info` and `docker version` show it.
struct Host {
    kernel: String,
    os: String,
    ncpu: i64,
    mem_total: i64,
}

fn host() -> Host {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get() as i64);
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let kb = l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim();
                kb.parse::<i64>().ok()
            })
        })
        .map_or(0, |kb| kb.saturating_mul(1024));
    Host { kernel, os, ncpu, mem_total }
}

/// Go's names for the architectures (`docker version` prints GOARCH).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn ping_response(swarm: &'static str) -> impl IntoResponse {
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert("swarm", HeaderValue::from_static(swarm));
    (h, "OK")
}

pub(crate) async fn ping(State(ctx): State<Ctx>) -> impl IntoResponse {
    let in_cluster = ctx.app.read(Consistency::Stale, |s| s.cluster().is_some()).await.unwrap_or(false);
    let worker = ctx.app.manager().joined_as_worker().borrow().is_some();
    ping_response(match (in_cluster, worker) {
        (_, true) => "active/worker",
        (true, false) => "active/manager",
        (false, false) => "inactive",
    })
}

pub(crate) async fn worker_ping() -> impl IntoResponse {
    ping_response("active/worker")
}

pub(crate) async fn version() -> Json<SystemVersion> {
    version_plain().await
}

pub(crate) async fn version_plain() -> Json<SystemVersion> {
    let h = host();
    let v = env!("CARGO_PKG_VERSION").to_string();
    let rust = format!("rust {}", env!("CARGO_PKG_RUST_VERSION"));
    let details: HashMap<String, String> = [
        ("ApiVersion", API_VERSION.to_string()),
        ("MinAPIVersion", MIN_API_VERSION.to_string()),
        ("GitCommit", String::new()),
        ("GoVersion", rust.clone()),
        ("Os", "linux".to_string()),
        ("Arch", go_arch().to_string()),
        ("KernelVersion", h.kernel.clone()),
        ("Experimental", "false".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Json(SystemVersion {
        platform: Some(SystemVersionPlatform { name: format!("Shoal {v}") }),
        components: Some(vec![SystemVersionComponents {
            name: "Engine".into(),
            version: v.clone(),
            details: Some(details),
        }]),
        version: Some(v),
        api_version: Some(API_VERSION.into()),
        min_api_version: Some(MIN_API_VERSION.into()),
        git_commit: Some(String::new()),
        go_version: Some(rust),
        os: Some("linux".into()),
        arch: Some(go_arch().into()),
        kernel_version: Some(h.kernel),
        experimental: Some(false),
        build_time: None,
    })
}

/// The parts of `docker info` that describe the machine and the daemon.
fn base_info(id: &str, hostname: &str) -> SystemInfo {
    let h = host();
    SystemInfo {
        id: Some(id.to_string()),
        name: Some(hostname.to_string()),
        containers: Some(0),
        containers_running: Some(0),
        containers_paused: Some(0),
        containers_stopped: Some(0),
        images: Some(0),
        driver: Some("shoal".into()),
        server_version: Some(env!("CARGO_PKG_VERSION").into()),
        kernel_version: Some(h.kernel),
        operating_system: Some(h.os),
        os_type: Some("linux".into()),
        architecture: Some(std::env::consts::ARCH.into()),
        ncpu: Some(h.ncpu),
        mem_total: Some(h.mem_total),
        logging_driver: Some("json-file".into()),
        labels: Some(vec![]),
        experimental_build: Some(false),
        security_options: Some(vec![]),
        warnings: Some(vec![]),
        ..Default::default()
    }
}

/// `docker info` on a manager: the machine, and the swarm as this manager's replica has it (a
/// stale read, so `info` answers without quorum, as Docker's does).
pub(crate) async fn info(State(ctx): State<Ctx>) -> DockerResult<Json<SystemInfo>> {
    let m = ctx.app.manager();
    let me = m.node.config().node.node_id.clone();
    let joined_as_worker = m.joined_as_worker().borrow().clone();
    if let Some(managers) = joined_as_worker {
        // Joined as a worker (until the daemon restarts as one): its replica knows nothing.
        let mut info = base_info(&me, "");
        info.swarm = Some(worker_swarm(&me, &managers));
        return Ok(Json(info));
    }
    let (cluster, hostname, node_addr) = ctx
        .app
        .read(Consistency::Stale, |s| {
            let node = s.node(&shoal_types::NodeId::new(me.clone()));
            (
                s.cluster().map(|c| (c.id.clone(), c.created_at, c.data_path_port)),
                node.map(|n| n.description.hostname.clone()),
                node.map(|n| crate::nodes::addr_ip(&n.status.addr)),
            )
        })
        .await?;
    let hostname = hostname.unwrap_or_default();
    let mut info = base_info(&me, &hostname);
    let Some((cluster_id, created_at, data_path_port)) = cluster else {
        info.swarm = Some(SwarmInfo {
            node_id: Some(String::new()),
            node_addr: Some(String::new()),
            local_node_state: Some(LocalNodeState::INACTIVE),
            control_available: Some(false),
            error: Some(String::new()),
            ..Default::default()
        });
        return Ok(Json(info));
    };
    let nodes = ctx.app.nodes(Consistency::Stale).await?;
    let managers = nodes.iter().filter(|n| n.spec.role == NodeRole::Manager).count();
    let raft = m.node.status();
    let remote: Vec<PeerNode> = raft
        .voters
        .values()
        .map(|v| PeerNode { node_id: Some(v.node_id.clone()), addr: Some(v.addr.clone()) })
        .collect();
    info.swarm = Some(SwarmInfo {
        node_id: Some(me),
        node_addr: node_addr.or(Some(String::new())),
        local_node_state: Some(LocalNodeState::ACTIVE),
        control_available: Some(true),
        error: Some(String::new()),
        remote_managers: Some(remote),
        nodes: Some(nodes.len() as i64),
        managers: Some(managers as i64),
        cluster: Some(ClusterInfo {
            id: Some(cluster_id),
            version: Some(ObjectVersion { index: raft.last_applied }),
            created_at: Some(created_at.to_string()),
            updated_at: Some(created_at.to_string()),
            spec: Some(SwarmSpec {
                name: Some("default".into()),
                labels: Some(HashMap::new()),
                orchestration: Some(SwarmSpecOrchestration { task_history_retention_limit: Some(5) }),
                raft: Some(SwarmSpecRaft {
                    snapshot_interval: Some(10_000),
                    keep_old_snapshots: Some(0),
                    log_entries_for_slow_followers: Some(500),
                    election_tick: Some(10),
                    heartbeat_tick: Some(1),
                }),
                dispatcher: Some(SwarmSpecDispatcher { heartbeat_period: Some(1_000_000_000) }),
                ca_config: Some(SwarmSpecCaConfig {
                    node_cert_expiry: i64::try_from(m.cert_validity().as_nanos()).ok(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            root_rotation_in_progress: Some(false),
            data_path_port: Some(u32::from(data_path_port)),
            default_addr_pool: Some(vec![shoal_types::network::DEFAULT_POOL.into()]),
            subnet_size: Some(u32::from(shoal_types::network::DEFAULT_POOL_PREFIX)),
            ..Default::default()
        }),
    });
    Ok(Json(info))
}

/// `docker info` on a worker: a swarm node without control.
pub(crate) async fn worker_info(State(node): State<WorkerNode>) -> Json<SystemInfo> {
    let mut info = base_info(&node.node_id, &node.hostname);
    info.swarm = Some(worker_swarm(&node.node_id, &node.managers));
    Json(info)
}

fn worker_swarm(node_id: &str, managers: &[String]) -> SwarmInfo {
    SwarmInfo {
        node_id: Some(node_id.to_string()),
        node_addr: Some(String::new()),
        local_node_state: Some(LocalNodeState::ACTIVE),
        control_available: Some(false),
        error: Some(String::new()),
        remote_managers: Some(
            managers
                .iter()
                .map(|a| PeerNode { node_id: Some(String::new()), addr: Some(a.clone()) })
                .collect(),
        ),
        ..Default::default()
    }
}
