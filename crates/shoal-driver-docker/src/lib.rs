//! The docker driver: runs Shoal tasks as containers of a local Docker Engine, through the Engine
//! API on its unix socket.
//!
//! Every task becomes one container named `shoal-<task id>`, labelled [`LABEL_TASK_ID`] and
//! [`LABEL_SERVICE_ID`], with restart policy `no` (Shoal owns restarts). The [`Handle`] keeps the
//! container id, which is all the driver needs to find the task again after the agent restarts.
//!
//! An image the engine lacks is pulled (`create_image`) before the container is created, like
//! Swarm's agent does: with the task's registry credentials when the service has them
//! (`--with-registry-auth`, [`TaskConfig::registry_auth`]), else anonymously; a failed pull makes
//! the task invalid with the registry's reason. The credentials are never logged.
//!
//! Overlay networks: Docker cannot join a network namespace by path, so a task on networks gets
//! an infra container first ([`DockerDriver::infra_name`], like Kubernetes' sandbox): made from
//! the task's own image with network mode `none`, running a static busybox from the node
//! (bind-mounted read-only, [`PAUSE_BINARIES`]) that sleeps forever. Its namespace is named
//! `/run/netns/<name>` (`ip netns attach`), the agent plumbs the task's interfaces into it, and
//! the task's container joins it (`container:<infra>`) with the agent's `resolv.conf` mounted
//! over `/etc/resolv.conf`. The infra container carries the task's labels and goes with it.

mod exec_tty;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummaryStateEnum,
    HostConfig, HostConfigLogConfig, PortBinding, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StatsOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use shoal_driver::{
    capability, write_resolv_conf, Driver, DriverError, ExecResult, ExitStatus, Handle, LogLine, LogOptions,
    LogReceiver, LogStream, Recovered, RegistryAuth, Stats, TaskConfig, MIN_MEMORY_LIMIT,
};
use shoal_types::{DriverInfo, MountType, Protocol};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OnceCell;

/// The driver's name, in handles and [`DriverInfo`].
pub const DRIVER_NAME: &str = "docker";
/// The label carrying the Shoal task id on every container this driver creates.
pub const LABEL_TASK_ID: &str = "shoal.task.id";
/// The label carrying the Shoal service id.
pub const LABEL_SERVICE_ID: &str = "shoal.service.id";
/// The label carrying the task's readable name (`<service>.<slot>.<task id>`).
pub const LABEL_TASK_NAME: &str = "shoal.task.name";
/// The socket used when neither the configuration nor `DOCKER_HOST` name one.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The most output [`Driver::exec`] keeps (stdout and stderr together).
pub const EXEC_OUTPUT_CAP: usize = 4096;
/// Log rotation of the json-file log driver: size of one file.
pub const LOG_MAX_SIZE: &str = "10m";
/// Log rotation of the json-file log driver: number of files kept.
pub const LOG_MAX_FILES: &str = "3";
/// Swarm's labels on a task's container, which Shoal sets too.
pub const SWARM_SERVICE_NAME: &str = "com.docker.swarm.service.name";
pub const SWARM_SERVICE_ID: &str = "com.docker.swarm.service.id";
pub const SWARM_TASK_ID: &str = "com.docker.swarm.task.id";
pub const SWARM_TASK_NAME: &str = "com.docker.swarm.task.name";
pub const SWARM_NODE_ID: &str = "com.docker.swarm.node.id";
/// The stack a container's service belongs to.
pub const STACK_NAMESPACE: &str = "com.docker.stack.namespace";
/// The label marking an infra container (the holder of a task's network namespace).
pub const LABEL_INFRA: &str = "shoal.infra";
/// Where the infra container's sleeping process comes from: the first of these that exists on
/// the node, a statically linked busybox (Debian's busybox-static).
pub const PAUSE_BINARIES: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];
/// Where the pause binary is mounted in the infra container (named `busybox`, so that busybox
/// runs its first argument as the applet).
const PAUSE_TARGET: &str = "/.shoal-pause/busybox";

/// Requests that answer quickly (inspect, create, start...).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// What `stop` allows the engine beyond the grace period.
const STOP_SLACK: Duration = Duration::from_secs(60);
/// Exit code reported for an OOM-killed task (SIGKILL).
const OOM_EXIT_CODE: i32 = 137;

/// How to reach the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerDriverConfig {
    /// The engine's unix socket; `None`: `DOCKER_HOST` when it is a `unix://` address, else
    /// [`DEFAULT_SOCKET`].
    pub socket: Option<PathBuf>,
}

impl DockerDriverConfig {
    /// The socket this configuration resolves to.
    pub fn socket_path(&self) -> PathBuf {
        if let Some(socket) = &self.socket {
            return socket.clone();
        }
        match std::env::var("DOCKER_HOST") {
            Ok(host) if host.starts_with("unix://") => PathBuf::from(host.trim_start_matches("unix://")),
            Ok(host) if !host.is_empty() => {
                tracing::warn!(%host, "DOCKER_HOST is not a unix:// address; using {DEFAULT_SOCKET}");
                PathBuf::from(DEFAULT_SOCKET)
            }
            _ => PathBuf::from(DEFAULT_SOCKET),
        }
    }
}

/// A container found by [`DockerDriver::list_shoal_containers`]: `(task id, container id, running)`.
pub type ShoalContainer = (String, String, bool);

/// What the driver keeps in [`Handle::state`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HandleState {
    container_id: String,
}

/// Runs tasks as Docker containers. Construction never touches the engine: the connection is made
/// (and the API version negotiated) on first use, and retried on every call until it works.
pub struct DockerDriver {
    socket: PathBuf,
    client: OnceCell<Docker>,
}

impl std::fmt::Debug for DockerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerDriver")
            .field("socket", &self.socket)
            .field("connected", &self.client.initialized())
            .finish()
    }
}

impl DockerDriver {
    pub fn new(cfg: DockerDriverConfig) -> Self {
        DockerDriver { socket: cfg.socket_path(), client: OnceCell::new() }
    }

    /// The engine socket in use.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The container name of a task: Swarm's `<service>.<slot>.<task id>` (`<service>.<node
    /// id>.<task id>` for global services), [`TaskConfig::name`], kept to the characters Docker
    /// allows; [`Self::legacy_name`] when the config has no name.
    pub fn container_name(cfg: &TaskConfig) -> String {
        let name: String = cfg
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
            .collect();
        if name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            name
        } else {
            Self::legacy_name(&cfg.task_id)
        }
    }

    /// The name earlier versions gave a task's container (still found and removed).
    pub fn legacy_name(task_id: &str) -> String {
        format!("shoal-{task_id}")
    }

    /// The infra container of a task on overlay networks (it holds the task's network namespace).
    pub fn infra_name(task_id: &str) -> String {
        format!("shoal-{task_id}-infra")
    }

    /// A handle for a container found otherwise (e.g. by [`Self::list_shoal_containers`]), so the
    /// agent can stop and destroy orphans.
    pub fn handle_for(task_id: &str, container_id: &str) -> Handle {
        Handle {
            task_id: task_id.to_string(),
            driver: DRIVER_NAME.to_string(),
            runtime_id: short_id(container_id),
            state: serde_json::json!(HandleState { container_id: container_id.to_string() }),
        }
    }

    /// The connected client; connects and negotiates the API version on first use.
    pub async fn client(&self) -> Result<&Docker, DriverError> {
        self.client
            .get_or_try_init(|| async {
                let path = self.socket.to_string_lossy().into_owned();
                let docker =
                    Docker::connect_with_unix(&path, REQUEST_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
                        .map_err(|e| DriverError::runtime("connecting to the docker engine", e))?;
                let docker = docker
                    .negotiate_version()
                    .await
                    .map_err(|e| DriverError::runtime("negotiating the docker API version", e))?;
                tracing::debug!(socket = %path, version = ?docker.client_version(), "connected to docker");
                Ok(docker)
            })
            .await
    }

    /// Every container (running or not) labelled with a Shoal task id: `(task id, container id,
    /// running)`. The agent uses it to find containers whose task it no longer knows.
    pub async fn list_shoal_containers(&self) -> Result<Vec<ShoalContainer>, DriverError> {
        let docker = self.client().await?;
        let filters = HashMap::from([("label".to_string(), vec![LABEL_TASK_ID.to_string()])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DriverError::runtime("listing containers", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let task_id = c.labels.as_ref()?.get(LABEL_TASK_ID)?.clone();
                let id = c.id?;
                let running = matches!(
                    c.state,
                    Some(
                        ContainerSummaryStateEnum::RUNNING
                            | ContainerSummaryStateEnum::RESTARTING
                            | ContainerSummaryStateEnum::PAUSED
                    )
                );
                Some((task_id, id, running))
            })
            .collect())
    }

    /// Every container of a task, found by its [`LABEL_TASK_ID`] label whatever its name (this
    /// version's or an older one's): `(container id, infra)`, the task's own containers first.
    async fn task_containers(&self, task_id: &str) -> Result<Vec<(String, bool)>, DriverError> {
        let docker = self.client().await?;
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_TASK_ID}={task_id}")])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DriverError::runtime("listing the task's containers", e))?;
        let mut found: Vec<(String, bool)> = containers
            .into_iter()
            .filter_map(|c| {
                let infra = c.labels.as_ref().is_some_and(|l| l.contains_key(LABEL_INFRA));
                Some((c.id?, infra))
            })
            .collect();
        found.sort_by_key(|(_, infra)| *infra);
        Ok(found)
    }

    /// The exit status of an ended container. A SIGKILL (137) under a memory limit without the
    /// OOM mark is looked at again for a moment: the OOM event may land after the exit.
    async fn settled_exit_status(&self, id: &str, info: ContainerInspectResponse) -> ExitStatus {
        let mut status = exit_status(&info);
        let limited = info.host_config.as_ref().and_then(|h| h.memory).is_some_and(|m| m > 0);
        if status.code != 137 || status.oom_killed || !limited {
            return status;
        }
        let deadline = tokio::time::Instant::now() + OOM_EVENT_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.inspect(id).await {
                Ok(again) if !is_running(&again) => {
                    status = exit_status(&again);
                    if status.oom_killed {
                        break;
                    }
                }
                _ => break,
            }
        }
        status
    }

    async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse, DriverError> {
        self.client()
            .await?
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
            .map_err(|e| map_err("inspecting the container", e))
    }

    async fn remove(&self, container: &str) -> Result<(), DriverError> {
        let options = RemoveContainerOptions { force: true, v: false, ..Default::default() };
        match self.client().await?.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) if status_of(&e) == Some(409) && e.to_string().contains("already in progress") => Ok(()),
            Err(e) => Err(DriverError::runtime("removing the container", e)),
        }
    }

    /// The id of the task's running infra container, for its container to join.
    async fn running_infra(&self, task_id: &str) -> Result<String, DriverError> {
        let name = Self::infra_name(task_id);
        let info = match self.inspect(&name).await {
            Err(DriverError::NotFound(_)) => {
                return Err(DriverError::Runtime(format!("the task's infra container {name} is gone")))
            }
            r => r?,
        };
        if !is_running(&info) {
            return Err(DriverError::Runtime(format!("the task's infra container {name} is not running")));
        }
        info.id.ok_or_else(|| DriverError::Runtime(format!("the engine gave no id for {name}")))
    }

    /// Starts (or adopts) the task's infra container and names its network namespace
    /// `/run/netns/<ns>`.
    async fn make_infra(&self, cfg: &TaskConfig, image: &str, ns: &str) -> Result<(), DriverError> {
        let pause = pause_binary()?;
        let name = Self::infra_name(&cfg.task_id);
        let docker = self.client().await?;
        let adopted = match self.inspect(&name).await {
            Ok(info) if is_running(&info) => info.id,
            Ok(info) => {
                self.remove(info.id.as_deref().unwrap_or(&name)).await?;
                None
            }
            Err(DriverError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if adopted.is_none() {
            // The infra container is made before `prepare` runs: pull the image first if needed.
            if let Err(e) = docker.inspect_image(image).await {
                if status_of(&e) == Some(404) {
                    pull(docker, image, cfg.registry_auth.as_ref()).await?;
                }
            }
            let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
            let created = match docker.create_container(Some(options), infra_body(cfg, image, pause)).await {
                Ok(created) => created,
                Err(e) if status_of(&e) == Some(404) => return Err(image_not_found(image)),
                Err(DockerError::DockerResponseServerError { status_code: 400, message }) => {
                    return Err(DriverError::Invalid(format!(
                        "docker rejected the infra container: {message}"
                    )))
                }
                Err(e) => return Err(DriverError::runtime("creating the infra container", e)),
            };
            docker
                .start_container(&created.id, None::<StartContainerOptions>)
                .await
                .map_err(|e| DriverError::runtime("starting the infra container", e))?;
            tracing::info!(task = %cfg.task_id, container = %short_id(&created.id), "infra container started");
        }
        let info = self.inspect(&name).await?;
        let pid = info
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| DriverError::Runtime(format!("the infra container {name} is not running")))?;
        let path = Path::new("/run/netns").join(ns);
        let proc_ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if path.exists() {
            if same_file(&path, &proc_ns) {
                return Ok(());
            }
            // A namespace of an earlier attempt that no container holds any more.
            ip(&["netns", "del", ns]).await?;
        }
        ip(&["netns", "attach", ns, &pid.to_string()]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await
    }

    /// The container of a stale earlier attempt at the same task: removed when it is not
    /// running, adopted when it is.
    async fn existing(&self, cfg: &TaskConfig, name: &str) -> Result<Option<Handle>, DriverError> {
        let info = match self.inspect(name).await {
            Ok(info) => info,
            Err(DriverError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = info.id.clone().unwrap_or_else(|| name.to_string());
        let same_task = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_TASK_ID))
            .is_some_and(|t| *t == cfg.task_id);
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if running && same_task {
            tracing::info!(task = %cfg.task_id, container = %id, "adopting the task's running container");
            return Ok(Some(Self::handle_for(&cfg.task_id, &id)));
        }
        if running {
            return Err(DriverError::Runtime(format!(
                "a running container named {name} that is not this task's is in the way"
            )));
        }
        tracing::info!(task = %cfg.task_id, container = %id, "removing a stale container");
        self.remove(&id).await?;
        Ok(None)
    }
}

/// The container id in a handle.
fn container_id(handle: &Handle) -> Result<String, DriverError> {
    let state: HandleState = serde_json::from_value(handle.state.clone()).map_err(|e| {
        DriverError::Runtime(format!("task {}: not a docker driver handle: {e}", handle.task_id))
    })?;
    Ok(state.container_id)
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// 404 → NotFound, anything else → Runtime.
fn map_err(context: &str, e: DockerError) -> DriverError {
    match e {
        DockerError::DockerResponseServerError { status_code: 404, message } => {
            DriverError::NotFound(message)
        }
        e => DriverError::runtime(context, e),
    }
}

/// What the Engine's pull asks for: the repository and the tag or digest (`latest` when the
/// reference has neither; an empty tag would pull every tag).
fn pull_target(image: &str) -> (String, String) {
    let (reference, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let (repo, tag) = match last.rfind(':') {
        Some(i) => {
            let cut = reference.len() - last.len() + i;
            (&reference[..cut], &reference[cut + 1..])
        }
        None => (reference, "latest"),
    };
    (repo.to_string(), digest.unwrap_or(tag).to_string())
}

/// Pulls `image` into the engine, with the task's registry credentials if it has some (else
/// anonymously); a failure makes the task invalid with its reason.
async fn pull(docker: &Docker, image: &str, auth: Option<&RegistryAuth>) -> Result<(), DriverError> {
    let (repo, tag) = pull_target(image);
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(repo),
        tag: Some(tag),
        ..Default::default()
    };
    tracing::info!(image, with_credentials = auth.is_some(), "the engine lacks the image; pulling it");
    let credentials = auth.map(|a| bollard::auth::DockerCredentials {
        username: Some(a.username.clone()),
        password: Some(a.password.clone()),
        serveraddress: Some(a.serveraddress.clone()).filter(|s| !s.is_empty()),
        ..Default::default()
    });
    let mut progress = docker.create_image(Some(options), None, credentials);
    let failed = |why: String| {
        DriverError::Invalid(format!(
            "image not found: {image} is not in the engine and pulling it failed: {why}"
        ))
    };
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(why) = info.error_detail.and_then(|d| d.message) {
                    return Err(failed(why));
                }
            }
            Err(DockerError::DockerResponseServerError { message, .. }) => return Err(failed(message)),
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    tracing::info!(image, "image pulled");
    Ok(())
}

fn image_not_found(image: &str) -> DriverError {
    DriverError::Invalid(format!(
        "image not found: {image} (no registry pull in this environment; load it into the engine first)"
    ))
}

fn is_running(info: &ContainerInspectResponse) -> bool {
    matches!(
        info.state.as_ref().and_then(|s| s.status),
        Some(
            ContainerStateStatusEnum::RUNNING
                | ContainerStateStatusEnum::RESTARTING
                | ContainerStateStatusEnum::PAUSED
        )
    ) || info.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

/// How long a SIGKILLed container with a memory limit may take to be marked OOM-killed: dockerd
/// records the exit and containerd's OOM event separately, and under load the exit can come first.
const OOM_EVENT_WAIT: Duration = Duration::from_millis(500);

/// How an ended container ended, from its inspect state.
fn exit_status(info: &ContainerInspectResponse) -> ExitStatus {
    let state = info.state.clone().unwrap_or_default();
    let oom_killed = state.oom_killed.unwrap_or(false);
    let mut code = i32::try_from(state.exit_code.unwrap_or(0)).unwrap_or(-1);
    let mut messages = Vec::new();
    if oom_killed {
        messages.push("out of memory (OOM killed)".to_string());
        if code == 0 {
            code = OOM_EXIT_CODE;
        }
    }
    if let Some(error) = state.error.filter(|e| !e.is_empty()) {
        messages.push(error);
    }
    if state.status == Some(ContainerStateStatusEnum::CREATED) {
        messages.push("the container was created but never started".to_string());
    }
    ExitStatus { code, signal: signal_of(code), oom_killed, message: messages.join("; ") }
}

/// Docker reports a container killed by signal N as 128 + N.
fn signal_of(code: i32) -> Option<i32> {
    (129..=128 + 64).contains(&code).then_some(code - 128)
}

fn secs_ceil(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn checked_i64(what: &str, v: u64) -> Result<i64, DriverError> {
    i64::try_from(v).map_err(|_| DriverError::Invalid(format!("{what} is too large: {v}")))
}

/// Validation that needs no engine.
fn validate(cfg: &TaskConfig) -> Result<&str, DriverError> {
    let image = cfg
        .image
        .as_deref()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| DriverError::Invalid("the docker driver needs an image".into()))?;
    if cfg.netns.is_some() && !cfg.ports.is_empty() {
        return Err(DriverError::Invalid(NO_HOST_PORTS_ON_NETWORKS.into()));
    }
    if let Some(l) = &cfg.options.log_driver {
        if let Some(problem) = shoal_types::container::check_log_driver(l).into_iter().next() {
            return Err(DriverError::Invalid(problem));
        }
    }
    if let Some(memory) = cfg.limits.memory_bytes {
        if memory < MIN_MEMORY_LIMIT {
            return Err(DriverError::Invalid(format!(
                "memory limit {memory} bytes is below the minimum of {MIN_MEMORY_LIMIT} bytes"
            )));
        }
    }
    for mount in &cfg.mounts {
        if !mount.target.starts_with('/') {
            return Err(DriverError::Invalid(format!(
                "mount target must be an absolute path: {}",
                mount.target
            )));
        }
        match mount.kind {
            MountType::Bind => {
                if !mount.source.starts_with('/') {
                    return Err(DriverError::Invalid(format!(
                        "bind mount source must be an absolute path: {}",
                        mount.source
                    )));
                }
                if !Path::new(&mount.source).exists() {
                    return Err(DriverError::Invalid(format!(
                        "bind mount source does not exist: {}",
                        mount.source
                    )));
                }
            }
            MountType::Volume => {
                if mount.source.is_empty() || mount.source.contains('/') || mount.source.contains(':') {
                    return Err(DriverError::Invalid(format!("invalid volume name: {:?}", mount.source)));
                }
            }
        }
    }
    Ok(image)
}

/// The labels of every container of a task: the task's container labels, Swarm's
/// (`com.docker.swarm.*`, `com.docker.stack.namespace`) and Shoal's own (which find it again).
fn task_labels(cfg: &TaskConfig) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = cfg.options.labels.clone().into_iter().collect();
    labels.extend(cfg.labels.clone());
    labels.insert(LABEL_TASK_ID.into(), cfg.task_id.clone());
    labels.insert(LABEL_SERVICE_ID.into(), cfg.service_id.clone());
    labels.insert(SWARM_TASK_ID.into(), cfg.task_id.clone());
    labels.insert(SWARM_SERVICE_ID.into(), cfg.service_id.clone());
    if !cfg.name.is_empty() {
        labels.insert(LABEL_TASK_NAME.into(), cfg.name.clone());
        labels.insert(SWARM_TASK_NAME.into(), cfg.name.clone());
    }
    if !cfg.service_name.is_empty() {
        labels.insert(SWARM_SERVICE_NAME.into(), cfg.service_name.clone());
    }
    if !cfg.node_id.is_empty() {
        labels.insert(SWARM_NODE_ID.into(), cfg.node_id.clone());
    }
    if let Some(stack) = &cfg.stack_namespace {
        labels.insert(STACK_NAMESPACE.into(), stack.clone());
    }
    labels
}

/// The infra container of a task on overlay networks: the task's image, no network of Docker's,
/// and the node's static busybox sleeping forever (the image need not have anything).
fn infra_body(cfg: &TaskConfig, image: &str, pause: &str) -> ContainerCreateBody {
    let mut labels = task_labels(cfg);
    labels.insert(LABEL_INFRA.into(), "true".into());
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec![PAUSE_TARGET.to_string()]),
        cmd: Some(vec!["sleep".into(), "2147483647".into()]),
        hostname: (!cfg.hostname.is_empty()).then(|| cfg.hostname.clone()),
        labels: Some(labels),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(HostConfig {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            network_mode: Some("none".into()),
            binds: Some(vec![format!("{pause}:{PAUSE_TARGET}:ro")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The static busybox that infra containers run.
fn pause_binary() -> Result<&'static str, DriverError> {
    PAUSE_BINARIES.iter().copied().find(|p| Path::new(p).is_file()).ok_or_else(|| {
        DriverError::Invalid(format!(
            "a docker task on overlay networks needs a static busybox on the node for its infra \
             container (none of {}; install busybox-static)",
            PAUSE_BINARIES.join(", ")
        ))
    })
}

/// Whether two paths are the same namespace (same device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Runs `ip ARGS`; a failure carries the command and what it said.
async fn ip(args: &[&str]) -> Result<(), DriverError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| DriverError::Runtime(format!("running ip {}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DriverError::Runtime(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Why host-mode ports are refused for a task on overlay networks.
const NO_HOST_PORTS_ON_NETWORKS: &str =
    "the docker driver cannot publish host-mode ports of a task on overlay \
     networks (its container shares another's network namespace): publish with mode=ingress";

/// The container to create for a task; `infra`: the id of the infra container whose network
/// namespace it joins (a task on overlay networks).
fn container_body(
    cfg: &TaskConfig,
    image: &str,
    infra: Option<&str>,
    resolv: Option<&Path>,
) -> Result<ContainerCreateBody, DriverError> {
    let o = &cfg.options;
    let (entrypoint, cmd) = if !cfg.command.is_empty() {
        (Some(cfg.command.clone()), Some(cfg.args.clone()))
    } else if !cfg.args.is_empty() {
        (None, Some(cfg.args.clone()))
    } else {
        (None, None)
    };
    let labels = task_labels(cfg);
    let mut binds: Vec<String> = cfg
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.readonly { ":ro" } else { "" };
            format!("{}:{}{mode}", m.source, m.target)
        })
        .collect();
    // Secrets and configs: single files from the task's tmpfs, read-only.
    binds.extend(cfg.secret_files.iter().map(|f| format!("{}:{}:ro", f.source.display(), f.target)));
    if let (Some(_), Some(resolv)) = (infra, resolv) {
        // A mount of its own there: Docker then leaves out the infra container's file. (Docker
        // refuses DNS settings in another container's namespace: the file carries the search
        // domains and options and names Shoal's resolver, which forwards to the task's servers.)
        binds.push(format!("{}:/etc/resolv.conf:ro", resolv.display()));
    }
    let dns_list = |v: &Vec<String>| (infra.is_none() && !v.is_empty()).then(|| v.clone());
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let ulimits = o
        .ulimits
        .iter()
        .map(|u| ResourcesUlimits { name: Some(u.name.clone()), soft: Some(u.soft), hard: Some(u.hard) })
        .collect::<Vec<_>>();
    let (log_driver, mut log_opts) = match &o.log_driver {
        Some(l) => (l.name.clone(), l.options.clone().into_iter().collect::<HashMap<_, _>>()),
        None => ("json-file".to_string(), HashMap::new()),
    };
    log_opts.entry("max-size".into()).or_insert_with(|| LOG_MAX_SIZE.into());
    log_opts.entry("max-file".into()).or_insert_with(|| LOG_MAX_FILES.into());
    let mut exposed = Vec::new();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &cfg.ports {
        let proto = match port.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let key = format!("{}/{proto}", port.target);
        exposed.push(key.clone());
        if port.published != 0 {
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding { host_ip: None, host_port: Some(port.published.to_string()) });
        }
    }
    let memory = cfg.limits.memory_bytes.map(|m| checked_i64("memory limit", m)).transpose()?;
    let host_config = HostConfig {
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        memory,
        memory_swap: memory,
        nano_cpus: cfg.limits.nano_cpus.map(|n| checked_i64("cpu limit", n)).transpose()?,
        pids_limit: cfg.limits.pids.map(|p| checked_i64("pids limit", p)).transpose()?,
        binds: (!binds.is_empty()).then_some(binds),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        network_mode: infra.map(|id| format!("container:{id}")),
        log_config: Some(HostConfigLogConfig { typ: Some(log_driver), config: Some(log_opts) }),
        readonly_rootfs: o.read_only.then_some(true),
        cap_add: list(&o.cap_add),
        cap_drop: list(&o.cap_drop),
        dns: dns_list(&o.dns.nameservers),
        dns_search: dns_list(&o.dns.search),
        dns_options: dns_list(&o.dns.options),
        init: o.init.then_some(true),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        group_add: list(&o.groups),
        ..Default::default()
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint,
        cmd,
        env: Some(cfg.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: non_empty(&cfg.workdir),
        user: non_empty(&cfg.user),
        // In another container's network namespace the hostname is that container's (Docker
        // refuses one of its own there): the infra container gets it.
        hostname: if infra.is_some() { None } else { non_empty(&cfg.hostname) },
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        // A terminal's output reaches `docker logs` as one raw stream (no stdout/stderr frames):
        // `logs` reads it as stdout.
        tty: Some(o.tty),
        open_stdin: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// A start/create failure that no retry will fix (the binary is missing...).
fn is_invalid_start(message: &str) -> bool {
    ["executable file not found", "no such file or directory", "permission denied", "unable to find user"]
        .iter()
        .any(|m| message.contains(m))
}

/// Splits one log frame (`<RFC3339 timestamp> <text>`, possibly several lines) into log lines.
fn parse_log_frame(stream: LogStream, bytes: &[u8]) -> Vec<LogLine> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let mut lines = Vec::new();
    let mut last = SystemTime::now();
    for raw in text.split('\n') {
        let (timestamp, line) = match raw.split_once(' ') {
            Some((ts, rest)) => match humantime::parse_rfc3339(ts) {
                Ok(t) => (t, rest),
                Err(_) => (last, raw),
            },
            None => match humantime::parse_rfc3339(raw) {
                Ok(t) => (t, ""),
                Err(_) => (last, raw),
            },
        };
        last = timestamp;
        lines.push(LogLine { stream, timestamp, line: line.strip_suffix('\r').unwrap_or(line).to_string() });
    }
    lines
}

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    async fn fingerprint(&self) -> Option<DriverInfo> {
        let docker = match self.client().await {
            Ok(docker) => docker,
            Err(e) => {
                tracing::debug!(socket = %self.socket.display(), error = %e, "docker engine not usable");
                return None;
            }
        };
        let version = match docker.version().await {
            Ok(version) => version,
            Err(e) => {
                tracing::debug!(error = %e, "docker engine version unavailable");
                return None;
            }
        };
        let capabilities = [capability::IMAGES, capability::LIMITS, capability::EXEC, capability::HOST_PORTS]
            .iter()
            .map(|c| c.to_string())
            .collect();
        Some(DriverInfo {
            name: DRIVER_NAME.into(),
            version: version.version.unwrap_or_default(),
            capabilities,
        })
    }

    async fn prepare(&self, cfg: &TaskConfig) -> Result<(), DriverError> {
        let image = validate(cfg)?;
        let docker = self.client().await?;
        match docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => pull(docker, image, cfg.registry_auth.as_ref()).await,
            Err(e) => Err(DriverError::runtime("inspecting the image", e)),
        }
    }

    async fn start(&self, cfg: &TaskConfig) -> Result<Handle, DriverError> {
        let image = validate(cfg)?;
        let name = Self::container_name(cfg);
        // An earlier attempt's container, under this version's name or an older one's.
        for n in [name.clone(), Self::legacy_name(&cfg.task_id)] {
            if let Some(handle) = self.existing(cfg, &n).await? {
                return Ok(handle);
            }
        }
        let infra = match &cfg.netns {
            None => None,
            Some(_) => Some(self.running_infra(&cfg.task_id).await?),
        };
        let resolv = match infra {
            Some(_) => write_resolv_conf(cfg)?.or_else(|| cfg.resolv_conf.clone()),
            None => None,
        };
        let body = container_body(cfg, image, infra.as_deref(), resolv.as_deref())?;
        let docker = self.client().await?;
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let created = match docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(e) if status_of(&e) == Some(404) => return Err(image_not_found(image)),
            Err(DockerError::DockerResponseServerError { status_code: 400, message }) => {
                return Err(DriverError::Invalid(format!("docker rejected the container: {message}")))
            }
            Err(e) => return Err(DriverError::runtime("creating the container", e)),
        };
        for warning in &created.warnings {
            tracing::warn!(task = %cfg.task_id, %warning, "docker create");
        }
        if let Err(e) = docker.start_container(&created.id, None::<StartContainerOptions>).await {
            if let Err(remove) = self.remove(&created.id).await {
                tracing::warn!(container = %created.id, error = %remove, "removing a container that failed to start");
            }
            let message = e.to_string();
            return Err(if is_invalid_start(&message) {
                DriverError::Invalid(format!("starting the container: {message}"))
            } else {
                DriverError::runtime("starting the container", message)
            });
        }
        tracing::info!(task = %cfg.task_id, container = %short_id(&created.id), "container started");
        Ok(Self::handle_for(&cfg.task_id, &created.id))
    }

    async fn recover(&self, handle: &Handle) -> Result<Recovered, DriverError> {
        let info = self.inspect(&container_id(handle)?).await?;
        if is_running(&info) {
            Ok(Recovered::Running)
        } else {
            Ok(Recovered::Exited(exit_status(&info)))
        }
    }

    async fn wait(&self, handle: &Handle) -> Result<ExitStatus, DriverError> {
        let id = container_id(handle)?;
        let docker = self.client().await?;
        let options = WaitContainerOptions { condition: "not-running".into() };
        let mut waited = docker.wait_container(&id, Some(options));
        let fallback = match waited.next().await {
            Some(Ok(response)) => {
                let message = response.error.and_then(|e| e.message).unwrap_or_default();
                Some((response.status_code, message))
            }
            Some(Err(DockerError::DockerContainerWaitError { error, code })) => Some((code, error)),
            Some(Err(e)) => return Err(map_err("waiting for the container", e)),
            None => None,
        };
        drop(waited);
        match self.inspect(&id).await {
            Ok(info) if !is_running(&info) => Ok(self.settled_exit_status(&id, info).await),
            Ok(_) => Err(DriverError::Runtime("the container is running again after it ended".into())),
            // Removed between the end of the wait and the inspect: what the wait said is all there is.
            Err(DriverError::NotFound(e)) => match fallback {
                Some((code, message)) => {
                    let code = i32::try_from(code).unwrap_or(-1);
                    Ok(ExitStatus { code, signal: signal_of(code), oom_killed: false, message })
                }
                None => Err(DriverError::NotFound(e)),
            },
            Err(e) => Err(e),
        }
    }

    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<(), DriverError> {
        let id = container_id(handle)?;
        let docker = self.client().await?.clone().with_timeout(grace + STOP_SLACK);
        let options = StopContainerOptions { t: Some(secs_ceil(grace)), ..Default::default() };
        match docker.stop_container(&id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 304)) => Ok(()),
            Err(e) => Err(DriverError::runtime("stopping the container", e)),
        }
    }

    async fn destroy(&self, handle: &Handle) -> Result<(), DriverError> {
        self.remove(&container_id(handle)?).await?;
        // The task's container first: it lives in the infra container's namespace.
        self.remove(&Self::infra_name(&handle.task_id)).await
    }

    async fn network_namespace(&self, cfg: &TaskConfig, name: &str) -> Result<(), DriverError> {
        let image = validate(cfg)?;
        if !cfg.ports.is_empty() {
            return Err(DriverError::Invalid(NO_HOST_PORTS_ON_NETWORKS.into()));
        }
        if name.is_empty() || name.contains('/') {
            return Err(DriverError::Invalid(format!("not a namespace name: {name:?}")));
        }
        let made = self.make_infra(cfg, image, name).await;
        if made.is_err() {
            if let Err(e) = self.remove(&Self::infra_name(&cfg.task_id)).await {
                tracing::warn!(task = %cfg.task_id, error = %e, "removing an infra container that failed");
            }
        }
        made
    }

    async fn remove_network_namespace(&self, task_id: &str) -> Result<(), DriverError> {
        // The task's container too, found by name: it lives in the infra container's namespace,
        // and one whose handle the agent never recorded (it died between the start and the
        // record) would run on there, out of everyone's sight, for good. Found by its label
        // (its name has the service's name, which a task id alone does not tell), and by the
        // names of older versions.
        for (id, _) in self.task_containers(task_id).await? {
            self.remove(&id).await?;
        }
        self.remove(&Self::legacy_name(task_id)).await?;
        self.remove(&Self::infra_name(task_id)).await
    }

    async fn logs(&self, handle: &Handle, opts: &LogOptions) -> Result<LogReceiver, DriverError> {
        let id = container_id(handle)?;
        self.inspect(&id).await?;
        let docker = self.client().await?.clone();
        let since = opts.since;
        let since_secs = since
            .and_then(|s| s.duration_since(UNIX_EPOCH).ok())
            .map(|d| i32::try_from(d.as_secs()).unwrap_or(0));
        let options = LogsOptions {
            follow: opts.follow,
            stdout: true,
            stderr: true,
            since: since_secs.unwrap_or(0),
            until: 0,
            timestamps: true,
            tail: opts.tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut stream = docker.logs(&id, Some(options));
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    () = tx.closed() => return,
                };
                let (kind, bytes) = match item {
                    None => return,
                    Some(Ok(LogOutput::StdErr { message })) => (LogStream::Stderr, message),
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                        (LogStream::Stdout, message)
                    }
                    Some(Ok(LogOutput::StdIn { .. })) => continue,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(map_err("reading the container's logs", e))).await;
                        return;
                    }
                };
                for line in parse_log_frame(kind, &bytes) {
                    if since.is_some_and(|s| line.timestamp < s) {
                        continue;
                    }
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn stats(&self, handle: &Handle) -> Result<Stats, DriverError> {
        let id = container_id(handle)?;
        let info = self.inspect(&id).await?;
        let docker = self.client().await?;
        let options = StatsOptions { stream: false, one_shot: true };
        let stats = match docker.stats(&id, Some(options)).next().await {
            Some(Ok(stats)) => stats,
            Some(Err(e)) => return Err(map_err("reading the container's stats", e)),
            None => return Err(DriverError::Runtime("the engine returned no stats".into())),
        };
        let memory = stats.memory_stats.unwrap_or_default();
        // Like `docker stats`: page cache that the kernel can reclaim is not counted.
        let inactive = memory
            .stats
            .as_ref()
            .and_then(|s| s.get("total_inactive_file").or_else(|| s.get("inactive_file")).copied())
            .unwrap_or(0);
        let limit = info
            .host_config
            .as_ref()
            .and_then(|h| h.memory)
            .filter(|m| *m > 0)
            .and_then(|m| u64::try_from(m).ok());
        Ok(Stats {
            cpu_usage_ns: stats.cpu_stats.and_then(|c| c.cpu_usage).and_then(|u| u.total_usage).unwrap_or(0),
            memory_bytes: memory.usage.unwrap_or(0).saturating_sub(inactive),
            memory_limit_bytes: limit,
            pids: stats.pids_stats.and_then(|p| p.current).unwrap_or(0),
        })
    }

    async fn exec_stream(
        &self,
        handle: &Handle,
        cmd: &[String],
        opts: &shoal_driver::ExecStreamOptions,
    ) -> Result<shoal_driver::ExecSession, DriverError> {
        let id = container_id(handle)?;
        exec_tty::exec_stream(self.client().await?, &id, cmd, opts).await
    }

    async fn exec(
        &self,
        handle: &Handle,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, DriverError> {
        if cmd.is_empty() {
            return Err(DriverError::Invalid("exec needs a command".into()));
        }
        let id = container_id(handle)?;
        let docker = self.client().await?;
        let options = CreateExecOptions {
            cmd: Some(cmd.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let exec = docker.create_exec(&id, options).await.map_err(|e| match e {
            DockerError::DockerResponseServerError { status_code: 409, message } => {
                DriverError::Runtime(format!("the container is not running: {message}"))
            }
            e => map_err("creating the exec", e),
        })?;
        let started = docker
            .start_exec(&exec.id, Some(StartExecOptions { detach: false, tty: false, output_capacity: None }))
            .await
            .map_err(|e| map_err("starting the exec", e))?;
        let mut output = Vec::new();
        let collect = async {
            if let StartExecResults::Attached { output: mut stream, .. } = started {
                while let Some(item) = stream.next().await {
                    let chunk = item.map_err(|e| DriverError::runtime("reading the exec's output", e))?;
                    let bytes = chunk.into_bytes();
                    let room = EXEC_OUTPUT_CAP.saturating_sub(output.len());
                    output.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            Ok::<(), DriverError>(())
        };
        let timed_out = match tokio::time::timeout(timeout, collect).await {
            Ok(result) => {
                result?;
                false
            }
            Err(_) => true,
        };
        let mut output = String::from_utf8_lossy(&output).into_owned();
        if timed_out {
            match docker.inspect_exec(&exec.id).await {
                Ok(info) if info.running == Some(true) => kill_exec(info.pid),
                Ok(_) => {}
                Err(e) => tracing::warn!(exec = %exec.id, error = %e, "inspecting a timed-out exec"),
            }
            output.push_str(&format!("\n[killed: timed out after {timeout:?}]"));
            return Ok(ExecResult { exit_code: OOM_EXIT_CODE, output });
        }
        // The exit code can lag the end of the output stream by a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let info = docker.inspect_exec(&exec.id).await.map_err(|e| map_err("inspecting the exec", e))?;
            if info.running != Some(true) {
                let exit_code = info.exit_code.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1);
                return Ok(ExecResult { exit_code, output });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Runtime("the exec's output ended but it is still running".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Docker has no API to end an exec: kill its process (the engine runs on this host).
fn kill_exec(pid: Option<i64>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
        tracing::warn!(pid = pid.as_raw_nonzero().get(), error = %e, "killing a timed-out exec");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_driver::Limits;
    use shoal_types::{Mount, PortConfig};

    #[test]
    fn log_frames_parse_timestamps() {
        let lines = parse_log_frame(LogStream::Stderr, b"2024-05-01T10:00:00.123456789Z hello world\n");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line, "hello world");
        assert_eq!(lines[0].stream, LogStream::Stderr);
        let expected = UNIX_EPOCH + Duration::new(1_714_557_600, 123_456_789);
        assert_eq!(lines[0].timestamp, expected);
        let lines = parse_log_frame(LogStream::Stdout, b"2024-05-01T10:00:00Z \n");
        assert_eq!(lines[0].line, "");
    }

    #[test]
    fn command_and_args_map_to_entrypoint_and_cmd() {
        let mut cfg = TaskConfig { task_id: "t1".into(), image: Some("img".into()), ..Default::default() };
        cfg.args = vec!["a".into()];
        let body = container_body(&cfg, "img", None, None).expect("body");
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, Some(vec!["a".to_string()]));
        cfg.command = vec!["/bin/sh".into()];
        let body = container_body(&cfg, "img", None, None).expect("body");
        assert_eq!(body.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(body.cmd, Some(vec!["a".to_string()]));
    }

    #[test]
    fn host_config_has_limits_ports_and_no_restarts() {
        let cfg = TaskConfig {
            task_id: "t1".into(),
            service_id: "s1".into(),
            image: Some("img".into()),
            limits: Limits { memory_bytes: Some(64 << 20), nano_cpus: Some(500_000_000), pids: Some(10) },
            ports: vec![PortConfig { published: 8080, target: 80, ..Default::default() }],
            mounts: vec![Mount {
                kind: MountType::Volume,
                source: "data".into(),
                target: "/data".into(),
                readonly: true,
            }],
            ..Default::default()
        };
        let body = container_body(&cfg, "img", None, None).expect("body");
        let host = body.host_config.expect("host config");
        assert_eq!(host.restart_policy.and_then(|r| r.name), Some(RestartPolicyNameEnum::NO));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(10));
        assert_eq!(host.binds, Some(vec!["data:/data:ro".to_string()]));
        let bindings = host.port_bindings.expect("ports");
        let binding = bindings.get("80/tcp").cloned().flatten().expect("80/tcp");
        assert_eq!(binding[0].host_port.as_deref(), Some("8080"));
        let labels = body.labels.expect("labels");
        assert_eq!(labels.get(LABEL_TASK_ID).map(String::as_str), Some("t1"));
        assert_eq!(labels.get(LABEL_SERVICE_ID).map(String::as_str), Some("s1"));
    }

    #[test]
    fn container_options_names_and_swarms_labels() {
        let mut cfg = TaskConfig {
            task_id: "t1".into(),
            service_id: "s1".into(),
            name: "web.1.t1".into(),
            service_name: "web".into(),
            stack_namespace: Some("app".into()),
            node_id: "n1".into(),
            image: Some("img".into()),
            ..Default::default()
        };
        assert_eq!(DockerDriver::container_name(&cfg), "web.1.t1");
        let o = &mut cfg.options;
        o.read_only = true;
        o.cap_add = vec!["CAP_NET_ADMIN".into()];
        o.cap_drop = vec!["CAP_NET_RAW".into()];
        o.dns.nameservers = vec!["1.1.1.1".into()];
        o.dns.options = vec!["ndots:2".into()];
        o.init = true;
        o.tty = true;
        o.labels.insert("team".into(), "fish".into());
        o.ulimits = vec![shoal_types::Ulimit { name: "nofile".into(), soft: 10, hard: 20 }];
        o.groups = vec!["audio".into()];
        o.log_driver = Some(shoal_types::LogDriver {
            name: "local".into(),
            options: [("max-size".to_string(), "1m".to_string())].into(),
        });
        let body = container_body(&cfg, "img", None, None).expect("body");
        assert_eq!(body.tty, Some(true));
        let labels = body.labels.expect("labels");
        for (k, v) in [
            ("team", "fish"),
            (SWARM_SERVICE_NAME, "web"),
            (SWARM_SERVICE_ID, "s1"),
            (SWARM_TASK_ID, "t1"),
            (SWARM_TASK_NAME, "web.1.t1"),
            (SWARM_NODE_ID, "n1"),
            (STACK_NAMESPACE, "app"),
            (LABEL_TASK_ID, "t1"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        let host = body.host_config.expect("host config");
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_add, Some(vec!["CAP_NET_ADMIN".to_string()]));
        assert_eq!(host.cap_drop, Some(vec!["CAP_NET_RAW".to_string()]));
        assert_eq!(host.dns, Some(vec!["1.1.1.1".to_string()]));
        assert_eq!(host.dns_options, Some(vec!["ndots:2".to_string()]));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.group_add, Some(vec!["audio".to_string()]));
        let u = &host.ulimits.expect("ulimits")[0];
        assert_eq!((u.name.as_deref(), u.soft, u.hard), (Some("nofile"), Some(10), Some(20)));
        let log = host.log_config.expect("log");
        assert_eq!(log.typ.as_deref(), Some("local"));
        let opts = log.config.expect("log options");
        assert_eq!(opts.get("max-size").map(String::as_str), Some("1m"));
        assert_eq!(opts.get("max-file").map(String::as_str), Some(LOG_MAX_FILES), "the default for the rest");
        // In another container's namespace Docker takes no DNS settings: the task's file has the
        // search domains and options, and names Shoal's resolver, which forwards to its servers.
        let body =
            container_body(&cfg, "img", Some("abc"), Some(Path::new("/task/resolv.conf"))).expect("body");
        let host = body.host_config.expect("host config");
        assert_eq!(host.dns, None);
        assert_eq!(host.binds, Some(vec!["/task/resolv.conf:/etc/resolv.conf:ro".to_string()]));
        // Odd characters never make an invalid name; no name at all: the old one.
        cfg.name = "we b.1.t1".into();
        assert_eq!(DockerDriver::container_name(&cfg), "we_b.1.t1");
        cfg.name.clear();
        assert_eq!(DockerDriver::container_name(&cfg), "shoal-t1");
        cfg.options.log_driver = Some(shoal_types::LogDriver { name: "syslog".into(), ..Default::default() });
        assert!(
            matches!(validate(&cfg), Err(DriverError::Invalid(m)) if m.contains("Shoal keeps task logs itself"))
        );
    }

    #[test]
    fn a_task_on_networks_joins_its_infra_container() {
        let cfg = TaskConfig {
            task_id: "t1".into(),
            service_id: "s1".into(),
            image: Some("img".into()),
            hostname: "web".into(),
            netns: Some("/run/netns/x".into()),
            resolv_conf: Some("/var/lib/shoal/resolv/t1.conf".into()),
            ..Default::default()
        };
        let body = container_body(&cfg, "img", Some("abc"), cfg.resolv_conf.as_deref()).expect("body");
        assert_eq!(body.hostname, None);
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("container:abc"));
        assert_eq!(host.binds, Some(vec!["/var/lib/shoal/resolv/t1.conf:/etc/resolv.conf:ro".to_string()]));
        assert_eq!(host.port_bindings, None);
        let infra = infra_body(&cfg, "img", "/bin/busybox");
        assert_eq!(infra.hostname.as_deref(), Some("web"));
        assert_eq!(infra.entrypoint, Some(vec![PAUSE_TARGET.to_string()]));
        let labels = infra.labels.expect("labels");
        assert_eq!(labels.get(LABEL_TASK_ID).map(String::as_str), Some("t1"));
        assert_eq!(labels.get(LABEL_INFRA).map(String::as_str), Some("true"));
        let host = infra.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.binds, Some(vec![format!("/bin/busybox:{PAUSE_TARGET}:ro")]));
        // Host-mode ports cannot be published from another container's namespace.
        let ports = TaskConfig {
            ports: vec![PortConfig { published: 8080, target: 80, ..Default::default() }],
            ..cfg
        };
        assert!(matches!(validate(&ports), Err(DriverError::Invalid(m)) if m.contains("mode=ingress")));
    }

    #[test]
    fn validation_rejects_bad_configs() {
        let base = TaskConfig { task_id: "t".into(), image: Some("img".into()), ..Default::default() };
        assert!(validate(&base).is_ok());
        let no_image = TaskConfig { image: None, ..base.clone() };
        assert_eq!(pull_target("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(pull_target("reg:5000/a/b"), ("reg:5000/a/b".into(), "latest".into()));
        assert_eq!(pull_target("reg:5000/a/b:1"), ("reg:5000/a/b".into(), "1".into()));
        assert_eq!(pull_target("a:1@sha256:ab"), ("a".into(), "sha256:ab".into()));
        assert_eq!(pull_target("a@sha256:ab"), ("a".into(), "sha256:ab".into()));
        assert!(matches!(validate(&no_image), Err(DriverError::Invalid(_))));
        let small = TaskConfig {
            limits: Limits { memory_bytes: Some(MIN_MEMORY_LIMIT - 1), ..Default::default() },
            ..base.clone()
        };
        assert!(matches!(validate(&small), Err(DriverError::Invalid(_))));
        let missing_bind = TaskConfig {
            mounts: vec![Mount {
                kind: MountType::Bind,
                source: "/nonexistent/shoal/bind/source".into(),
                target: "/x".into(),
                readonly: false,
            }],
            ..base
        };
        assert!(matches!(validate(&missing_bind), Err(DriverError::Invalid(_))));
    }

    #[test]
    fn exit_codes_map_to_signals() {
        assert_eq!(signal_of(137), Some(9));
        assert_eq!(signal_of(143), Some(15));
        assert_eq!(signal_of(1), None);
        assert_eq!(secs_ceil(Duration::from_millis(1500)), 2);
        assert_eq!(secs_ceil(Duration::from_secs(3)), 3);
    }

    #[test]
    fn construction_does_not_need_an_engine() {
        let driver =
            DockerDriver::new(DockerDriverConfig { socket: Some("/nonexistent/docker.sock".into()) });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        assert_eq!(runtime.block_on(driver.fingerprint()), None);
    }
}
