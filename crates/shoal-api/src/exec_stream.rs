//! Interactive exec (`shoal task exec -i/-t`): the command's stdin, output and exit code streamed
//! over one connection, like Docker's hijacked `exec start`.
//!
//! **Transport.** `POST /v1/tasks/{id}/exec/stream` with `Connection: Upgrade`,
//! `Upgrade: shoal-exec` and an [`ExecStreamRequest`] body. A refusal is an ordinary JSON error
//! (the task unknown or not running, a command that cannot start, a driver that cannot do it);
//! once the command runs the answer is `101 Switching Protocols` and the connection carries
//! [`Frame`]s both ways. HTTP/1.1 upgrade works on the unix socket and the TCP API alike and needs
//! nothing beyond HTTP/1.1 (no WebSocket or HTTP/2 stack), as Docker's attach/exec do.
//!
//! **Path.** As for [`crate::exec`]: the manager finds the task's node (confirming a refusal with
//! a linearizable read, so any manager works); its own agent streams in-process, another node's
//! agent is asked at `POST /internal/agent/exec/stream` on the node-to-node listener (mutual TLS,
//! manager certificates only, the node's certificate name verified), upgraded the same way, and
//! the manager copies bytes between the two upgraded connections without reading the frames.
//!
//! **Frames**: a type byte, a 4-byte big-endian length, the payload (at most [`MAX_FRAME`]).
//! Client to command: stdin data, stdin EOF (the client never half-closes), resize (rows, cols as
//! u16 BE). Command to client: stdout, stderr (a terminal has only stdout), then one exit (i32 BE)
//! or error (UTF-8 message) and the connection ends. **The client going away (its connection
//! ending) kills the command.** Buffers are bounded at every hop: a client that does not read
//! stops the command's output; a command that does not read stops the client's input.

use crate::exec::{
    find_target, from_exec_error, invalid, is_here, node_error, unavailable, unreachable, Target,
};
use crate::internal::require_manager;
use crate::logs::{AgentSlot, LogsState};
use crate::server::{ApiError, JsonBody};
use crate::{Client, ClientError};
use axum::extract::{Extension, FromRequestParts, Path, State};
use axum::http::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use shoal_agent::ExecError;
use shoal_driver::{DriverError, ExecInput, ExecOutput, ExecSession, ExecStreamOptions, WindowSize};
use shoal_pki::NodeIdentity;
use shoal_types::TaskId;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The `Upgrade` protocol token.
pub const UPGRADE_PROTOCOL: &str = "shoal-exec";
/// Where a node's agent starts interactive execs.
pub const AGENT_EXEC_STREAM_PATH: &str = "/internal/agent/exec/stream";
/// The largest frame payload accepted.
pub const MAX_FRAME: usize = 64 * 1024;
/// How long the CLI and a manager wait for the `101` (the command started) or a refusal.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `POST /v1/tasks/{id}/exec/stream`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct ExecStreamRequest {
    /// The program and its arguments (no shell).
    pub cmd: Vec<String>,
    /// The command reads the client's stdin (docker's `-i`).
    #[serde(default)]
    pub stdin: bool,
    /// On a pseudo-terminal (docker's `-t`).
    #[serde(default)]
    pub tty: bool,
    /// The terminal's size at start.
    #[serde(default)]
    pub size: Option<WindowSize>,
}

impl ExecStreamRequest {
    fn options(&self) -> ExecStreamOptions {
        ExecStreamOptions { stdin: self.stdin, tty: self.tty, size: self.size.filter(|_| self.tty) }
    }
}

/// A manager to the task's node (`POST /internal/agent/exec/stream`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentExecStreamRequest {
    pub task_id: String,
    pub exec: ExecStreamRequest,
}

/// One message on an upgraded exec connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    StdinEof,
    Resize(WindowSize),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    Error(String),
}

const STDIN: u8 = 1;
const STDIN_EOF: u8 = 2;
const RESIZE: u8 = 3;
const STDOUT: u8 = 4;
const STDERR: u8 = 5;
const EXIT: u8 = 6;
const ERROR: u8 = 7;

impl Frame {
    /// The frame as it goes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Stdin(b) => (STDIN, b.into()),
            Frame::StdinEof => (STDIN_EOF, (&[][..]).into()),
            Frame::Resize(s) => {
                let mut p = s.rows.to_be_bytes().to_vec();
                p.extend_from_slice(&s.cols.to_be_bytes());
                (RESIZE, p.into())
            }
            Frame::Stdout(b) => (STDOUT, b.into()),
            Frame::Stderr(b) => (STDERR, b.into()),
            Frame::Exit(code) => (EXIT, code.to_be_bytes().to_vec().into()),
            Frame::Error(m) => (ERROR, m.as_bytes().into()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

fn bad_frame(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

/// The next frame; `None` when the connection ended between frames.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(bad_frame(format!("exec frame of {len} bytes (at most {MAX_FRAME})")));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    let fixed = |n: usize| {
        if p.len() == n {
            Ok(())
        } else {
            Err(bad_frame(format!("exec frame {} of {} bytes (expected {n})", head[0], p.len())))
        }
    };
    Ok(Some(match head[0] {
        STDIN => Frame::Stdin(p),
        STDIN_EOF => Frame::StdinEof,
        RESIZE => {
            fixed(4)?;
            Frame::Resize(WindowSize {
                rows: u16::from_be_bytes([p[0], p[1]]),
                cols: u16::from_be_bytes([p[2], p[3]]),
            })
        }
        STDOUT => Frame::Stdout(p),
        STDERR => Frame::Stderr(p),
        EXIT => {
            fixed(4)?;
            Frame::Exit(i32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        }
        ERROR => Frame::Error(String::from_utf8_lossy(&p).into_owned()),
        other => return Err(bad_frame(format!("unknown exec frame type {other}"))),
    }))
}

/// Writes one frame and flushes it.
pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), f: &Frame) -> std::io::Result<()> {
    w.write_all(&f.encode()).await?;
    w.flush().await
}

/// The pending upgrade of a request that asked for `Upgrade: shoal-exec`.
pub struct ExecUpgrade(OnUpgrade);

fn has_token(v: Option<&axum::http::HeaderValue>, token: &str) -> bool {
    v.and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

impl<S: Send + Sync> FromRequestParts<S> for ExecUpgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if !has_token(parts.headers.get(CONNECTION), "upgrade")
            || !has_token(parts.headers.get(UPGRADE), UPGRADE_PROTOCOL)
        {
            return Err(ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                format!(
                    "this endpoint streams: send `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}`"
                ),
            ));
        }
        parts.extensions.remove::<OnUpgrade>().map(ExecUpgrade).ok_or_else(|| {
            invalid("this connection cannot be upgraded (HTTP/1.1 is needed for a streamed exec)")
        })
    }
}

fn switching_protocols() -> Response {
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    r.headers_mut().insert(CONNECTION, axum::http::HeaderValue::from_static("upgrade"));
    r.headers_mut().insert(UPGRADE, axum::http::HeaderValue::from_static(UPGRADE_PROTOCOL));
    r
}

fn check(r: &ExecStreamRequest) -> Result<(), ApiError> {
    match r.cmd.first() {
        None => Err(invalid("exec needs a command (cmd is empty)")),
        Some(p) if p.is_empty() => Err(invalid("exec needs a command (cmd[0] is empty)")),
        Some(_) => match r.size {
            Some(s) if r.tty && (s.rows == 0 || s.cols == 0) => {
                Err(invalid(format!("a terminal needs rows and columns (got {}x{})", s.rows, s.cols)))
            }
            _ => Ok(()),
        },
    }
}

/// The agent's refusal as the API's error; a driver without interactive exec is `501`.
fn refusal(e: ExecError, cmd: &[String]) -> ApiError {
    match e {
        ExecError::Driver(d @ DriverError::Unsupported { .. }) => {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", d.to_string())
        }
        e => from_exec_error(e, cmd),
    }
}

/// Starts the command through this node's agent; the session streams once `upgrade` completes.
async fn start_here(
    slot: &AgentSlot,
    task: &TaskId,
    r: &ExecStreamRequest,
    upgrade: OnUpgrade,
) -> Result<Response, ApiError> {
    let agent = slot.get().cloned().ok_or_else(|| unavailable("the agent is not running yet"))?;
    let session = agent.exec_task_stream(task, &r.cmd, &r.options()).await.map_err(|e| refusal(e, &r.cmd))?;
    let task = task.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => serve_session(TokioIo::new(io), session).await,
            // Dropping the session kills the command.
            Err(e) => tracing::debug!(task = %task, error = %e, "exec: the upgrade failed"),
        }
    });
    Ok(switching_protocols())
}

/// Streams a session over an upgraded connection until the command ended (its exit frame sent)
/// or the client went away (the session is dropped, which kills the command).
pub(crate) async fn serve_session<S: AsyncRead + AsyncWrite + Send>(io: S, session: ExecSession) {
    let ExecSession { input, mut output } = session;
    let (mut rd, mut wr) = tokio::io::split(io);
    let from_client = async move {
        loop {
            let msg = match read_frame(&mut rd).await {
                Ok(Some(Frame::Stdin(b))) => ExecInput::Stdin(b),
                Ok(Some(Frame::StdinEof)) => ExecInput::StdinEof,
                Ok(Some(Frame::Resize(s))) if s.rows > 0 && s.cols > 0 => ExecInput::Resize(s),
                Ok(Some(Frame::Resize(_))) => continue,
                Ok(Some(other)) => {
                    tracing::debug!(frame = ?other, "exec: a client sent an output frame; ending");
                    return;
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "exec: the client's stream ended");
                    return;
                }
            };
            // The command no longer takes input (it ended): what the client sends is dropped.
            let _ = input.send(msg).await;
        }
    };
    let to_client = async move {
        while let Some(msg) = output.recv().await {
            let (frame, last) = match msg {
                ExecOutput::Stdout(b) => (Frame::Stdout(b), false),
                ExecOutput::Stderr(b) => (Frame::Stderr(b), false),
                ExecOutput::Exit(c) => (Frame::Exit(c), true),
                ExecOutput::Failed(m) => (Frame::Error(m), true),
            };
            if write_frame(&mut wr, &frame).await.is_err() {
                return;
            }
            if last {
                let _ = wr.shutdown().await;
                return;
            }
        }
        let _ = write_frame(&mut wr, &Frame::Error("the exec ended without an exit code".into())).await;
    };
    // Whichever ends first ends the session: the exit sent, or the client gone (the output
    // receiver is dropped with `to_client`, which kills the command).
    tokio::select! {
        () = from_client => {}
        () = to_client => {}
    }
}

/// `POST /internal/agent/exec/stream` on a node: start the command in one of its running tasks.
async fn agent_exec_stream(
    State(slot): State<AgentSlot>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    ExecUpgrade(upgrade): ExecUpgrade,
    JsonBody(r): JsonBody<AgentExecStreamRequest>,
) -> Result<Response, ApiError> {
    require_manager(&peer)?;
    check(&r.exec)?;
    let task = TaskId::new(r.task_id.clone());
    start_here(&slot, &task, &r.exec, upgrade).await
}

/// Sends the upgrade request to `addr` over mutual TLS; the node's `101` gives the connection.
async fn open_upgraded(
    tls: Arc<rustls::ClientConfig>,
    target: &Target,
    req: &AgentExecStreamRequest,
) -> Result<Upgraded, ApiError> {
    use http_body_util::{BodyExt, Full};
    let (host, addr) = (&target.hostname, &target.addr);
    let cannot_reach = |why: String| {
        unreachable(format!("cannot reach node {host} ({addr}) where task {} runs: {why}", req.task_id))
    };
    let body = serde_json::to_vec(req).map_err(|e| invalid(e.to_string()))?;
    let server_name = shoal_pki::node_dns_name(target.node.as_str());
    let call = async {
        let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| cannot_reach("connect: timed out".into()))?
            .map_err(|e| cannot_reach(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::try_from(server_name.clone())
            .map_err(|e| cannot_reach(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| cannot_reach(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| cannot_reach(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let request = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(AGENT_EXEC_STREAM_PATH)
            .header("host", server_name.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, UPGRADE_PROTOCOL)
            .body(Full::new(hyper::body::Bytes::from(body)))
            .map_err(|e| invalid(e.to_string()))?;
        let resp = sender.send_request(request).await.map_err(|e| cannot_reach(e.to_string()))?;
        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return hyper::upgrade::on(resp).await.map_err(|e| cannot_reach(format!("upgrade: {e}")));
        }
        let bytes = resp.into_body().collect().await.map_err(|e| cannot_reach(e.to_string()))?.to_bytes();
        Err(match serde_json::from_slice::<serde_json::Value>(&bytes).ok() {
            Some(v) if v["error"]["code"] == "unsupported" => ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported",
                crate::internal::remote_error(status, &bytes),
            ),
            _ => node_error(status, &bytes, host),
        })
    };
    tokio::time::timeout(START_TIMEOUT, call).await.map_err(|_| {
        unreachable(format!("node {host} did not start the exec within {}s", START_TIMEOUT.as_secs()))
    })?
}

/// `POST /v1/tasks/{id}/exec/stream`.
async fn task_exec_stream(
    State(st): State<LogsState>,
    Path(id): Path<String>,
    upgrade: Result<ExecUpgrade, ApiError>,
    JsonBody(r): JsonBody<ExecStreamRequest>,
) -> Result<Response, ApiError> {
    // The request first (a bad one is a 400 whether or not it asked to upgrade), then the upgrade.
    check(&r)?;
    let ExecUpgrade(upgrade) = upgrade?;
    let id = TaskId::new(id);
    let m = st.manager.clone();
    let target = find_target(&m, &id).await?;
    if is_here(&m, &target) {
        return start_here(&st.agent, &id, &r, upgrade).await;
    }
    let tls = m.client_tls().ok_or_else(|| unavailable("this manager has no certificate yet"))?;
    let req = AgentExecStreamRequest { task_id: id.to_string(), exec: r };
    let node = open_upgraded(tls, &target, &req).await?;
    tokio::spawn(async move {
        // Bytes both ways, frames untouched; either side ending ends the other (the node's agent
        // kills the command when the client's side closes).
        match upgrade.await {
            Ok(client) => {
                let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
                    tracing::debug!(task = %id, error = %e, "exec: the relay ended");
                }
            }
            Err(e) => tracing::debug!(task = %id, error = %e, "exec: the upgrade failed"),
        }
    });
    Ok(switching_protocols())
}

/// `POST /v1/tasks/{id}/exec/stream` on a manager's `/v1` router.
pub fn exec_stream_router(st: LogsState) -> Router {
    Router::new().route("/v1/tasks/{id}/exec/stream", post(task_exec_stream)).with_state(st)
}

/// The node's part, on [`crate::logs::agent_router`].
pub fn agent_exec_stream_route() -> axum::routing::MethodRouter<AgentSlot> {
    post(agent_exec_stream)
}

/// An upgraded exec connection, as the client sees it.
pub type ExecConnection = TokioIo<Upgraded>;

impl Client {
    /// Starts an interactive exec in task `task` (its full id); once the command runs, the
    /// connection carries [`Frame`]s (see the module's documentation). A refusal is the API's
    /// error.
    pub async fn exec_stream(
        &self,
        task: &str,
        req: &ExecStreamRequest,
    ) -> Result<ExecConnection, ClientError> {
        use http_body_util::{BodyExt, Full};
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        let path = format!("/v1/tasks/{task}/exec/stream");
        let start = async {
            let (stream, host) = self.dial().await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let conn = tokio::spawn(conn.with_upgrades());
            let request = hyper::Request::builder()
                .method(hyper::Method::POST)
                .uri(path.as_str())
                .header("host", host)
                .header(CONTENT_TYPE, "application/json")
                .header(CONNECTION, "upgrade")
                .header(UPGRADE, UPGRADE_PROTOCOL)
                .body(Full::new(hyper::body::Bytes::from(body)))
                .map_err(|e| ClientError::Http(e.to_string()))?;
            let resp = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => {
                    let why = match conn.await {
                        Ok(Err(conn_err)) => crate::client::error_chain(&conn_err),
                        _ => crate::client::error_chain(&e),
                    };
                    return Err(ClientError::Http(why));
                }
            };
            let status = resp.status();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                let io = hyper::upgrade::on(resp).await.map_err(|e| ClientError::Http(e.to_string()))?;
                return Ok(TokioIo::new(io));
            }
            let bytes =
                resp.into_body().collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
            Err(crate::client::api_error(status, &bytes))
        };
        tokio::time::timeout(START_TIMEOUT, start)
            .await
            .map_err(|_| ClientError::Http(format!("no answer within {}s", START_TIMEOUT.as_secs())))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_or_unknown_ones_are_refused() {
        let frames = vec![
            Frame::Stdin(b"echo hi\n".to_vec()),
            Frame::StdinEof,
            Frame::Resize(WindowSize { rows: 40, cols: 132 }),
            Frame::Stdout(vec![0, 255, 10]),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-1),
            Frame::Exit(137),
            Frame::Error("boom".into()),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(read_frame(&mut r).await.expect("read").as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r).await.expect("clean end"), None);
        // Cut mid-frame: an error, not a clean end.
        let mut r = &wire[..3];
        assert!(read_frame(&mut r).await.is_err());
        let mut big = vec![STDOUT];
        big.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        assert!(read_frame(&mut &big[..]).await.is_err());
        assert!(read_frame(&mut &[9u8, 0, 0, 0, 0][..]).await.is_err());
        assert!(read_frame(&mut &[EXIT, 0, 0, 0, 1, 7][..]).await.is_err());
    }

    #[test]
    fn a_driver_without_interactive_exec_says_so() {
        let e = DriverError::Unsupported { driver: "fake".into(), what: "interactive exec (-i/-t)".into() };
        let e = refusal(ExecError::Driver(e), &["sh".into()]);
        assert_eq!((e.status, e.code), (StatusCode::NOT_IMPLEMENTED, "unsupported"));
        assert_eq!(e.message, "not supported by the fake driver: interactive exec (-i/-t)");
        let e = refusal(ExecError::CannotRun("executable not found: nope".into()), &["nope".into()]);
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "cannot_run"));
    }

    #[test]
    fn requests_are_checked() {
        let r: ExecStreamRequest = serde_json::from_str(
            r#"{"cmd": ["sh"], "stdin": true, "tty": true, "size": {"rows": 24, "cols": 80}}"#,
        )
        .expect("parse");
        assert_eq!(r.options().size, Some(WindowSize { rows: 24, cols: 80 }));
        assert!(check(&r).is_ok());
        assert!(serde_json::from_str::<ExecStreamRequest>(r#"{"cmd": ["sh"], "timeout_secs": 3}"#).is_err());
        let e = check(&ExecStreamRequest::default()).expect_err("empty");
        assert_eq!(e.message, "exec needs a command (cmd is empty)");
        let zero = ExecStreamRequest { size: Some(WindowSize { rows: 0, cols: 80 }), tty: true, ..r };
        assert!(check(&zero).is_err());
    }
}
