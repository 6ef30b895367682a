//! `shoal-loadtest`: many simulated nodes in one process against real `shoal` managers, so that
//! everything but the task runtimes is real. Each node joins with the worker token like a real
//! one (its own key, CSR and certificate from `/internal/join`), then runs a real
//! [`shoal_agent::Agent`] whose control plane is the same mutual-TLS [`RemotePlane`] a worker
//! daemon uses. Its only driver "runs" a task at once and keeps it running until it is
//! stopped (it answers to `--driver process`, the name every service can ask for).
//!
//! Identities are kept in `--dir`, so a second run reuses the nodes instead of joining new
//! ones. Every `--report-every` seconds one JSON line goes to standard output: nodes up, tasks
//! running, tasks started and stopped so far. `scripts/bench-scale.sh` drives it.

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use clap::Parser;
use shoal_agent::plane::{Assignments, ControlPlane, PlaneError, StatusReport};
use shoal_agent::{Agent, AgentConfig};
use shoal_api::dispatcher::RemotePlane;
use shoal_driver::{
    Driver, DriverError, ExecResult, ExitStatus, Handle, LogOptions, LogReceiver, Recovered, Stats,
    TaskConfig,
};
use shoal_types::DriverInfo;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Parser)]
#[command(about = "Simulated nodes (real agents, instant tasks) against real shoal managers")]
struct Args {
    /// A manager's node-to-node address (HOST:PORT); more with commas.
    #[arg(long)]
    managers: String,
    /// A file holding the worker join token (`shoal cluster join-token worker -q`).
    #[arg(long)]
    token_file: PathBuf,
    /// How many nodes to run.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// The number of the first node: a second process with `--first` past the first one's
    /// nodes runs other nodes (killing it loses them all at once).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Where the nodes' identities and agent directories live.
    #[arg(long)]
    dir: PathBuf,
    /// Node hostnames are PREFIX-N.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 16)]
    join_concurrency: usize,
    /// Seconds between report lines.
    #[arg(long, default_value_t = 1)]
    report_every: u64,
}

/// A task of a simulated node: the value of its `ROUND` variable (what a rolling update
/// changes, so a report can tell old tasks from new) and its exit, `None` while it runs.
struct SimTask {
    round: String,
    exit: watch::Sender<Option<ExitStatus>>,
}

/// The tasks of every simulated node (task ids are unique in the cluster).
#[derive(Default)]
struct Runtime {
    tasks: Mutex<HashMap<String, SimTask>>,
    started: AtomicU64,
    stopped: AtomicU64,
    /// Heartbeat round trips (ms) since the last report line.
    heartbeats: Mutex<Vec<u64>>,
}

impl Runtime {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, SimTask>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Running tasks by their `ROUND` ("" without one).
    fn running(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in self.tasks().values().filter(|t| t.exit.borrow().is_none()) {
            *out.entry(t.round.clone()).or_insert(0) += 1;
        }
        out
    }
}

/// The driver of a simulated node: start is instant, the task runs until stopped.
struct InstantDriver(Arc<Runtime>);

#[async_trait]
impl Driver for InstantDriver {
    fn name(&self) -> &'static str {
        "process"
    }
    async fn fingerprint(&self) -> Option<DriverInfo> {
        Some(DriverInfo { name: "process".into(), version: "loadtest".into(), capabilities: vec![] })
    }
    async fn prepare(&self, _cfg: &TaskConfig) -> Result<(), DriverError> {
        Ok(())
    }
    async fn start(&self, cfg: &TaskConfig) -> Result<Handle, DriverError> {
        let round = cfg.env.get("ROUND").cloned().unwrap_or_default();
        self.0.tasks().insert(cfg.task_id.clone(), SimTask { round, exit: watch::channel(None).0 });
        self.0.started.fetch_add(1, Ordering::Relaxed);
        Ok(Handle {
            task_id: cfg.task_id.clone(),
            driver: "process".into(),
            runtime_id: format!("sim-{}", cfg.task_id),
            state: serde_json::Value::Null,
        })
    }
    async fn recover(&self, h: &Handle) -> Result<Recovered, DriverError> {
        match self.0.tasks().get(&h.task_id).map(|t| t.exit.borrow().clone()) {
            None => Err(DriverError::NotFound(h.task_id.clone())),
            Some(None) => Ok(Recovered::Running),
            Some(Some(x)) => Ok(Recovered::Exited(x)),
        }
    }
    async fn wait(&self, h: &Handle) -> Result<ExitStatus, DriverError> {
        let rx = self.0.tasks().get(&h.task_id).map(|t| t.exit.subscribe());
        let Some(mut rx) = rx else { return Err(DriverError::NotFound(h.task_id.clone())) };
        let exit = rx.wait_for(Option::is_some).await.map(|x| x.clone().unwrap_or_default());
        exit.map_err(|_| DriverError::NotFound(h.task_id.clone()))
    }
    async fn stop(&self, h: &Handle, _grace: Duration) -> Result<(), DriverError> {
        if let Some(t) = self.0.tasks().get(&h.task_id) {
            let stopped = t.exit.send_if_modified(|x| {
                let was = x.is_none();
                if was {
                    *x = Some(ExitStatus { code: 143, signal: Some(15), ..Default::default() });
                }
                was
            });
            if stopped {
                self.0.stopped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
    async fn destroy(&self, h: &Handle) -> Result<(), DriverError> {
        self.0.tasks().remove(&h.task_id);
        Ok(())
    }
    async fn logs(&self, _h: &Handle, _o: &LogOptions) -> Result<LogReceiver, DriverError> {
        Err(DriverError::Unsupported { driver: "loadtest".into(), what: "logs".into() })
    }
    async fn stats(&self, _h: &Handle) -> Result<Stats, DriverError> {
        Ok(Stats::default())
    }
    async fn exec(&self, _h: &Handle, _cmd: &[String], _t: Duration) -> Result<ExecResult, DriverError> {
        Ok(ExecResult { exit_code: 0, output: String::new() })
    }
}

/// A node's identity: the PEM files of its key, its certificate (which names its id) and the
/// cluster CA.
struct Identity {
    key: String,
    cert: String,
    ca: String,
}

fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow!("no randomness"))?;
    let hi = u64::from_le_bytes(b[..8].try_into()?);
    let lo = u64::from_le_bytes(b[8..].try_into()?);
    Ok(shoal_types::id::id_from_bits(hi, lo))
}

/// A node's control plane with its heartbeats timed: the round trips go into the report, so a
/// run shows whether nodes marked down had their heartbeats delayed (and by how much).
struct TimedPlane {
    inner: RemotePlane,
    rt: Arc<Runtime>,
}

#[async_trait]
impl ControlPlane for TimedPlane {
    async fn register(&self, description: &shoal_types::NodeDescription) -> Result<(), PlaneError> {
        self.inner.register(description).await
    }
    async fn assignments(&self, known: Option<&str>) -> Result<Assignments, PlaneError> {
        self.inner.assignments(known).await
    }
    async fn report(&self, reports: Vec<StatusReport>) -> Result<(), PlaneError> {
        self.inner.report(reports).await
    }
    async fn heartbeat(&self) -> Result<Duration, PlaneError> {
        let sent = Instant::now();
        let r = self.inner.heartbeat().await;
        let ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.rt.heartbeats.lock().unwrap_or_else(PoisonError::into_inner).push(ms);
        r
    }
    async fn netview(&self, known: Option<&str>) -> Result<shoal_net::NetView, PlaneError> {
        self.inner.netview(known).await
    }
}

/// The identity kept in `dir`, or a new one from joining through `managers` with `token`.
async fn identity(dir: &Path, managers: &[String], token: &str, source: IpAddr) -> Result<Identity> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    if let (Ok(key), Ok(cert), Ok(ca)) = (read("node.key"), read("node.crt"), read("ca.crt")) {
        return Ok(Identity { key, cert, ca });
    }
    let node_id = random_id()?;
    let parsed: shoal_pki::JoinToken = token.parse().map_err(|e| anyhow!("the join token: {e}"))?;
    let (key, csr) = shoal_pki::generate_key_and_csr(&node_id)?;
    let pinned = shoal_pki::pinned_client_config(&parsed.ca_digest)?;
    let req =
        shoal_api::internal::JoinRequest { token: token.to_string(), csr_pem: csr, node_id: node_id.clone() };
    let body = serde_json::to_vec(&req)?;
    let mut tries = 0usize;
    let admission = loop {
        let addr = &managers[tries % managers.len()];
        tries += 1;
        match post_from(source, pinned.clone(), addr, "/internal/join", &body).await {
            Ok((200, bytes)) => break serde_json::from_slice::<shoal_manager::Admission>(&bytes)?,
            // Rate-limited (the managers admit 20 joins a second in all): later.
            Ok((429, _)) => {}
            Ok((st, bytes)) => bail!("{addr}: join refused: {st} {}", String::from_utf8_lossy(&bytes)),
            Err(e) if tries > 20 => bail!("{addr}: {e}"),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    std::fs::create_dir_all(dir)?;
    shoal_pki::write_private_file(dir.join("node.key"), &key)?;
    shoal_pki::write_public_file(dir.join("node.crt"), &admission.cert_pem)?;
    shoal_pki::write_public_file(dir.join("ca.crt"), &admission.ca_pem)?;
    Ok(Identity { key, cert: admission.cert_pem, ca: admission.ca_pem })
}

/// One HTTP/1.1 POST over TLS from the address `source`: the status and the body.
async fn post_from(
    source: IpAddr,
    tls: Arc<rustls::ClientConfig>,
    addr: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let to: std::net::SocketAddr = addr.parse().with_context(|| format!("{addr}: not IP:PORT"))?;
    let sock =
        if source.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.bind(std::net::SocketAddr::new(source, 0))?;
    let tcp = tokio::time::timeout(Duration::from_secs(5), sock.connect(to)).await??;
    let name = rustls_pki_types::ServerName::try_from(shoal_pki::MANAGER_SERVER_NAME)?;
    let mut tls = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        shoal_pki::MANAGER_SERVER_NAME,
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body).await?;
    tls.flush().await?;
    let mut out = Vec::new();
    // The server may close without a TLS close_notify once it has answered.
    let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut out)).await?;
    let text_end =
        out.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("{addr}: no HTTP answer"))?;
    let status_line =
        String::from_utf8_lossy(&out[..text_end]).lines().next().unwrap_or_default().to_string();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{addr}: bad status line {status_line:?}"))?;
    Ok((status, out[text_end + 4..].to_vec()))
}

/// Joins (or finds) node `i` and starts its agent.
async fn start_node(
    args: Arc<Args>,
    managers: Arc<Vec<String>>,
    token: Arc<String>,
    rt: Arc<Runtime>,
    i: usize,
) -> Result<()> {
    let name = format!("{}-{i}", args.prefix);
    let dir = args.dir.join(&name);
    // Each node joins from an address of its own (127.0.0.0/8 is all loopback), as nodes on
    // their own hosts would: the managers limit joins per address as well as in all.
    let source = IpAddr::V4(std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8));
    let id = identity(&dir, &managers, &token, source).await.with_context(|| format!("node {name}"))?;
    let tls = shoal_pki::client_config(&id.ca, &id.cert, &id.key)?;
    // The address managers would call for logs and exec: nothing listens there.
    let inner = RemotePlane::new(tls, managers.to_vec(), "127.0.0.1:9".into());
    let plane = Arc::new(TimedPlane { inner, rt: rt.clone() });
    let cfg = AgentConfig {
        dir: dir.join("agent"),
        hostname: name,
        labels: BTreeMap::from([("loadtest".to_string(), "true".to_string())]),
        generic: BTreeMap::new(),
        // No node id: the agent builds no networks (tasks on an overlay would be rejected).
        node_id: String::new(),
    };
    let agent = Agent::new(cfg, vec![Arc::new(InstantDriver(rt))], plane)?;
    tokio::spawn(agent.run());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Arc::new(Args::parse());
    let token = Arc::new(
        std::fs::read_to_string(&args.token_file)
            .with_context(|| format!("cannot read {}", args.token_file.display()))?
            .trim()
            .to_string(),
    );
    let managers: Arc<Vec<String>> = Arc::new(args.managers.split(',').map(str::to_string).collect());
    let rt = Arc::new(Runtime::default());
    let up = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();

    // The nodes come up in the background, `join_concurrency` joins at a time.
    {
        let (args, managers, token, rt, up) =
            (args.clone(), managers.clone(), token.clone(), rt.clone(), up.clone());
        tokio::spawn(async move {
            let gate = Arc::new(tokio::sync::Semaphore::new(args.join_concurrency.max(1)));
            let mut joins = tokio::task::JoinSet::new();
            for i in args.first..args.first + args.nodes {
                let Ok(permit) = gate.clone().acquire_owned().await else { return };
                let (args, managers, token, rt, up) =
                    (args.clone(), managers.clone(), token.clone(), rt.clone(), up.clone());
                joins.spawn(async move {
                    match start_node(args, managers, token, rt, i).await {
                        Ok(()) => {
                            up.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("{e:#}"),
                    }
                    drop(permit);
                });
            }
            while joins.join_next().await.is_some() {}
        });
    }

    let mut tick = tokio::time::interval(Duration::from_secs(args.report_every.max(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let by_round = rt.running();
                let mut hb = std::mem::take(&mut *rt.heartbeats.lock().unwrap_or_else(PoisonError::into_inner));
                hb.sort_unstable();
                let q = |p: f64| hb.get(((hb.len() as f64 * p) as usize).min(hb.len().saturating_sub(1))).copied();
                let line = serde_json::json!({
                    "seconds": (began.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                    "nodes_up": up.load(Ordering::Relaxed),
                    "running": by_round.values().sum::<usize>(),
                    "running_by_round": by_round,
                    "started": rt.started.load(Ordering::Relaxed),
                    "stopped": rt.stopped.load(Ordering::Relaxed),
                    "heartbeat_ms": {"n": hb.len(), "p50": q(0.5), "p99": q(0.99), "max": hb.last()},
                });
                println!("{line}");
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
