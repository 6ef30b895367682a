//! The one write path. Every change to the cluster that a front end asks for — a state-machine
//! command, adding a manager, taking managers out of the membership — is a [`LeaderOp`] and goes
//! through [`submit`]: on the leader it runs here; on a follower it is forwarded to the leader
//! (`POST /internal/leader`, manager certificates of current members only). No handler calls
//! Raft's write or membership changes itself (a test in this module checks the sources).
//!
//! A forwarded op follows the leader: while it waits for the leader's answer, this manager
//! watches its own Raft view, and when the leader changes (the old one froze, crashed or lost its
//! quorum) it stops waiting and sends the op once more to the new leader instead of waiting out a
//! fixed timeout. An op whose retry is refused as a conflict may have taken effect before the
//! leader changed; the error says so.

use crate::internal::remote_error;
use crate::server::ApiError;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_manager::{CommandError, ErrorKind, Manager, ManagerNode, RaftId, WriteError};
use shoal_pki::NodeIdentity;
use shoal_state::Command;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Something only the leader may do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum LeaderOp {
    /// Commit a state-machine command.
    Write { command: Command },
    /// Add a manager that has its certificate: as a learner that catches up, then as a voter.
    AddManager {
        #[serde(with = "shoal_raft::raft_id_string")]
        raft_id: RaftId,
        node: ManagerNode,
    },
    /// Take managers out of the Raft membership, voters and learners alike (by node id).
    RemoveMembers { node_ids: Vec<String> },
    /// Renew a key-value lease (`keep_alive`) or read its remaining time: only the leader
    /// keeps lease time (etcd's model), so both are done there and never written to the log.
    /// Answered in the response's `lease`.
    KvLease {
        id: i64,
        keep_alive: bool,
        #[serde(default)]
        keys: bool,
    },
}

impl LeaderOp {
    fn name(&self) -> &'static str {
        match self {
            LeaderOp::Write { .. } => "write",
            LeaderOp::AddManager { .. } => "adding a manager",
            LeaderOp::RemoveMembers { .. } => "removing managers",
            LeaderOp::KvLease { .. } => "a lease's time",
        }
    }
}

/// The leader's answer: what applying a command did (none for membership changes).
#[derive(Debug, Serialize, Deserialize)]
pub struct OpDone {
    pub response: Option<shoal_raft::Response>,
}

/// Said when this node is in no cluster yet.
pub(crate) const NOT_IN_CLUSTER: &str =
    "this node is not in a cluster yet: run `shoal cluster init` to start one, or `shoal cluster join` to join one";

/// Said when no leader emerges.
pub(crate) const NO_LEADER: &str = "no leader: no manager has won an election within 10s — a majority of the managers is \
     down or unreachable and a quorum is missing (see `shoal cluster health` on each manager); writes resume when a \
     quorum is back, and reads work meanwhile with --stale";

/// How long a follower waits for a leader to appear when it knows none, and for a new one after
/// the leader it forwarded to went away (an election takes 0.4–2 s here).
pub(crate) const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Runs `op` on the leader: here when this manager leads, else forwarded; once more at the new
/// leader if the leader changes on the way.
pub async fn submit(m: &Manager, op: LeaderOp) -> Result<Option<shoal_raft::Response>, WriteError> {
    let mut retried = false;
    // Sent again at each new leader while nothing reached the old one, for as long as a
    // follower waits for a leader at all (leaders can change more than once under load).
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let leader = wait_for_leader(m, None).await?;
        match attempt(m, &op, &leader).await {
            Ok(r) => return Ok(r),
            Err(Failure::Final(e)) => return Err(retry_note(e, retried)),
            Err(Failure::LeaderGone(e)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(e);
                }
                tracing::info!(op = op.name(), old_leader = %leader.node_id, error = %e, "the leader changed; sending again");
                retried = true;
                // Give the election a chance: wait for a leader other than the one that failed
                // (the same one again if it recovers first).
                let _ = wait_for_leader(m, Some(&leader)).await;
            }
        }
    }
}

/// A retried op refused as a conflict may have been applied by the old leader after all.
fn retry_note(e: WriteError, retried: bool) -> WriteError {
    match e {
        WriteError::Refused(c) if retried && c.kind == ErrorKind::Conflict => {
            WriteError::Refused(CommandError {
                kind: c.kind,
                message: format!(
                "{} (the leader changed while this request was in flight; the first attempt may have taken \
                 effect: check before retrying)",
                c.message
            ),
            })
        }
        e => e,
    }
}

enum Failure {
    /// The leader went away (or was never reachable): worth one more try at the next leader.
    LeaderGone(WriteError),
    /// The op was decided (refused) or cannot be done.
    Final(WriteError),
}

/// The current leader, waiting up to [`LEADER_WAIT`] for one (other than `not`, if given; after
/// the wait, `not` itself is accepted again if it is the leader).
pub(crate) async fn wait_for_leader(
    m: &Manager,
    not: Option<&ManagerNode>,
) -> Result<ManagerNode, WriteError> {
    let status = m.node.status();
    if status.voters.is_empty() && status.learners.is_empty() {
        return Err(WriteError::Unavailable(NOT_IN_CLUSTER.into()));
    }
    let mut watch = m.node.watch();
    let deadline =
        tokio::time::Instant::now() + if not.is_some() { Duration::from_secs(3) } else { LEADER_WAIT };
    loop {
        let status = m.node.status();
        if let Some(l) = &status.leader_node {
            if not.is_none_or(|n| n.node_id != l.node_id) {
                return Ok(l.clone());
            }
        }
        let changed = tokio::time::timeout_at(deadline, watch.changed()).await;
        if !matches!(changed, Ok(true)) {
            return match (m.node.status().leader_node, not) {
                (Some(l), _) => Ok(l),
                (None, _) => Err(WriteError::Unavailable(NO_LEADER.into())),
            };
        }
    }
}

async fn attempt(
    m: &Manager,
    op: &LeaderOp,
    leader: &ManagerNode,
) -> Result<Option<shoal_raft::Response>, Failure> {
    if leader.node_id == m.node.config().node.node_id {
        return match execute(m, op).await {
            Err(e @ WriteError::NotLeader { .. }) => Err(Failure::LeaderGone(e)),
            Err(e) => Err(Failure::Final(e)),
            Ok(r) => Ok(r),
        };
    }
    let tls = m
        .client_tls()
        .ok_or_else(|| Failure::Final(WriteError::Unavailable("this node has no certificate yet".into())))?;
    let body = serde_json::to_vec(op).map_err(|e| Failure::Final(WriteError::Unavailable(e.to_string())))?;
    // Stop waiting as soon as this manager sees another leader (or none).
    let mut watch = m.node.watch();
    let mut leader_moved = async || loop {
        if !watch.changed().await {
            return;
        }
        if m.node.status().leader_node.is_none_or(|l| l.node_id != leader.node_id) {
            return;
        }
    };
    // Connecting: nothing has reached the leader yet, so another leader may get it.
    let conn = tokio::select! {
        c = crate::internal::connect(tls, &leader.addr, shoal_pki::MANAGER_SERVER_NAME) => c.map_err(|e| {
            Failure::LeaderGone(WriteError::Unavailable(format!(
                "forwarding to the leader {} at {} failed: {e}", leader.node_id, leader.addr
            )))
        })?,
        _ = leader_moved() => {
            return Err(Failure::LeaderGone(WriteError::Unavailable(format!(
                "the leader {} at {} stopped leading before it could be reached", leader.node_id, leader.addr
            ))))
        }
    };
    // Sent: from here a failure leaves the outcome unknown (the old leader may have proposed it,
    // and the next may commit it), so a write is not sent again — that could apply it twice.
    let unknown = |why: String| match op {
        LeaderOp::Write { .. } => Failure::Final(WriteError::Unavailable(format!(
            "{why}: the write may or may not take effect (check before retrying)"
        ))),
        _ => Failure::LeaderGone(WriteError::Unavailable(why)),
    };
    let exchange = async {
        use http_body_util::BodyExt;
        let resp = conn.send(hyper::Method::POST, "/internal/leader", Some(body)).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(15), exchange) => match r {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(unknown(format!(
                "the leader {} at {} did not answer: {e}", leader.node_id, leader.addr
            ))),
            Err(_) => return Err(unknown(format!(
                "the leader {} at {} did not answer within 15s", leader.node_id, leader.addr
            ))),
        },
        _ = leader_moved() => {
            return Err(unknown(format!(
                "the leader {} at {} stopped leading before it answered", leader.node_id, leader.addr
            )))
        }
    };
    if status.is_success() {
        let done: OpDone = serde_json::from_slice(&bytes)
            .map_err(|e| Failure::Final(WriteError::Unavailable(format!("the leader's answer: {e}"))))?;
        return Ok(done.response);
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let message = remote_error(status, &bytes);
    let kind = match v["error"]["code"].as_str() {
        Some("not_found") => ErrorKind::NotFound,
        Some("conflict") => ErrorKind::Conflict,
        Some("invalid") => ErrorKind::Invalid,
        Some("not_leader") => return Err(Failure::LeaderGone(WriteError::Unavailable(message))),
        _ => return Err(Failure::Final(WriteError::Unavailable(message))),
    };
    Err(Failure::Final(WriteError::Refused(CommandError { kind, message })))
}

/// Runs `op` on this manager, which must lead.
async fn execute(m: &Manager, op: &LeaderOp) -> Result<Option<shoal_raft::Response>, WriteError> {
    match op {
        LeaderOp::Write { command } => m.node.write(command.clone()).await.map(Some),
        LeaderOp::AddManager { raft_id, node } => m.add_manager(*raft_id, node.clone()).await.map(|()| None),
        LeaderOp::RemoveMembers { node_ids } => {
            let status = m.node.status();
            let ids: BTreeSet<RaftId> = status
                .voters
                .iter()
                .chain(status.learners.iter())
                .filter(|(_, n)| node_ids.contains(&n.node_id))
                .map(|(id, _)| *id)
                .collect();
            m.node.remove_members(&ids).await.map(|()| None)
        }
        LeaderOp::KvLease { id, keep_alive, keys } => {
            if !m.node.is_leader() {
                return Err(WriteError::NotLeader { leader: m.node.status().leader_node });
            }
            let now = shoal_types::Timestamp::from_system_time(std::time::SystemTime::now()).as_nanos();
            let term = m.node.status().term;
            let lease = m.node.kv_leader(|kv| {
                // A new leader answers from its own deadlines only: before the first answer in
                // its term, every lease gets a full TTL (the followers' deadlines are stale).
                kv.promote(term, now);
                if *keep_alive {
                    kv.lease_keepalive(*id, now)?;
                }
                kv.lease_time_to_live(*id, now, *keys)
            });
            Ok(Some(shoal_raft::Response { lease: Some(lease), ..Default::default() }))
        }
    }
}

/// `POST /internal/leader`: an op forwarded by another manager. Runs only on the leader (a
/// follower answers `not_leader`; ops are never forwarded twice).
pub(crate) async fn serve_forwarded(
    State(m): State<Arc<Manager>>,
    Extension(peer): Extension<Option<NodeIdentity>>,
    body: axum::body::Bytes,
) -> Result<Json<OpDone>, ApiError> {
    // Who asks is checked before the body is even parsed.
    crate::internal::require_manager(&peer)?;
    let op: LeaderOp = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("invalid op: {e}")))?;
    match &op {
        // A joining manager (not a member yet) may add itself; members forward for others.
        LeaderOp::AddManager { node, .. } => {
            let id = crate::internal::require_manager(&peer)?;
            if id.node_id != node.node_id {
                crate::internal::require_member(&m, &peer)?;
            }
        }
        _ => {
            crate::internal::require_member(&m, &peer)?;
        }
    }
    if !m.node.is_leader() {
        let leader = m.node.status().leader_node.map_or_else(|| "unknown".into(), |l| l.node_id);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            format!("not the leader (the leader is {leader})"),
        ));
    }
    Ok(Json(OpDone { response: execute(&m, &op).await? }))
}

#[cfg(test)]
mod tests {
    /// The one write path: no front end commits to Raft or changes the membership itself.
    #[test]
    fn handlers_never_write_to_raft_directly() {
        let sources = [
            ("server.rs", include_str!("server.rs")),
            ("internal.rs", include_str!("internal.rs")),
            ("dispatcher.rs", include_str!("dispatcher.rs")),
            ("migrate.rs", include_str!("migrate.rs")),
            ("join.rs", include_str!("join.rs")),
            ("tcp.rs", include_str!("tcp.rs")),
            ("ui.rs", include_str!("ui.rs")),
            ("logs.rs", include_str!("logs.rs")),
            ("events.rs", include_str!("events.rs")),
            ("networks.rs", include_str!("networks.rs")),
        ];
        let forbidden = [
            ".write(Command",
            "node.write(",
            ".change_voters(",
            ".add_learner(",
            ".remove_members(",
            ".add_manager(",
        ];
        for (file, text) in sources {
            for f in forbidden {
                assert!(!text.contains(f), "{file} calls {f}: go through leader::submit");
            }
        }
    }

    #[test]
    fn ops_carry_raft_ids_as_strings() {
        let op = super::LeaderOp::AddManager {
            raft_id: u64::MAX >> 1,
            node: shoal_manager::ManagerNode { addr: "a:1".into(), node_id: "n".into() },
        };
        let json = serde_json::to_value(&op).expect("json");
        assert_eq!(json["raft_id"], serde_json::json!((u64::MAX >> 1).to_string()));
        let back: super::LeaderOp = serde_json::from_value(json).expect("round trip");
        assert!(matches!(back, super::LeaderOp::AddManager { raft_id, .. } if raft_id == u64::MAX >> 1));
    }
}
