//! The unary services (KV, Lease, Cluster, Maintenance) and the LeaseKeepAlive stream.

use crate::backend::{BackendError, EtcdBackend};
use crate::convert::{self, header};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::{cluster_server, kv_server, lease_server, maintenance_server};
use crate::server::PeerRole;
use shoal_api::roles::ClientRole;
use shoal_kv::{KvError, Op, OpResponse};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Settings of the gRPC layer.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// How often watchers created with `progress_notify` get an empty response when nothing
    /// else was sent (etcd: 10 minutes).
    pub progress_interval: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { progress_interval: Duration::from_secs(600) }
    }
}

/// Implements etcd's services on an [`EtcdBackend`].
#[derive(Clone)]
pub struct EtcdService {
    pub(crate) backend: Arc<dyn EtcdBackend>,
    pub(crate) config: ServiceConfig,
}

impl EtcdService {
    /// The services over `backend`.
    pub fn new(backend: Arc<dyn EtcdBackend>, config: ServiceConfig) -> Self {
        EtcdService { backend, config }
    }

    async fn write(&self, op: Op) -> Result<OpResponse, Status> {
        self.backend.write(op).await.map_err(Status::from)
    }

    /// etcd's `hasleader: true` metadata: fail fast when this member has no leader.
    pub(crate) fn check_leader<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let wants = req.metadata().get("hasleader").is_some_and(|v| v.as_bytes() == b"true");
        if wants && !self.backend.has_leader() {
            return Err(BackendError::NoLeader.into());
        }
        Ok(())
    }
}

/// Whether the request comes from a read-only certificate (the role [`crate::gateway`] put in
/// its extensions; a request built without one, in this crate's tests, is an admin's).
fn read_only<T>(req: &Request<T>) -> bool {
    req.extensions().get::<PeerRole>().is_some_and(|r| r.0 == ClientRole::ReadOnly)
}

/// Whether every operation of a transaction (nested ones included) is a range.
pub(crate) fn txn_only_reads(txn: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Op;
    txn.success.iter().chain(&txn.failure).all(|op| match &op.request {
        None | Some(Op::RequestRange(_)) => true,
        Some(Op::RequestTxn(t)) => txn_only_reads(t),
        Some(Op::RequestPut(_) | Op::RequestDeleteRange(_)) => false,
    })
}

fn mismatch(what: &str, got: &OpResponse) -> Status {
    tracing::error!(?got, "etcd backend answered a {what} with another response kind");
    Status::internal(format!("shoal: backend answered a {what} with a different response"))
}

fn unimplemented(what: &str, hint: &str) -> Status {
    Status::unimplemented(format!("shoal: {what} is not supported by Shoal's etcd API{hint}"))
}

const MEMBERSHIP_HINT: &str =
    "; cluster membership is managed by Shoal (`shoal node promote` / `shoal node demote`)";

#[tonic::async_trait]
impl kv_server::Kv for EtcdService {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let (req, serializable) = convert::range_from_pb(request.into_inner())?;
        let resp = self.backend.range(req, serializable).await?;
        Ok(Response::new(convert::range_to_pb(self.backend.header(), resp)))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = convert::put_from_pb(request.into_inner());
        match self.write(Op::Put(req)).await? {
            OpResponse::Put(r) => Ok(Response::new(convert::put_to_pb(self.backend.header(), r))),
            other => Err(mismatch("put", &other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = convert::delete_from_pb(request.into_inner());
        match self.write(Op::DeleteRange(req)).await? {
            OpResponse::DeleteRange(r) => Ok(Response::new(convert::delete_to_pb(self.backend.header(), r))),
            other => Err(mismatch("delete", &other)),
        }
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        if read_only(&request) && !txn_only_reads(request.get_ref()) {
            return Err(Status::permission_denied(shoal_api::roles::etcd_refusal(
                "a Txn that puts or deletes",
            )));
        }
        let req = convert::txn_from_pb(request.into_inner())?;
        match self.write(Op::Txn(req)).await? {
            OpResponse::Txn(r) => Ok(Response::new(convert::txn_to_pb(self.backend.header(), r))),
            other => Err(mismatch("txn", &other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        // `physical` asks etcd to wait until the bbolt compaction is done; Shoal's compaction
        // is complete when the command is applied, so it needs no special handling.
        let revision = request.into_inner().revision;
        match self.write(Op::Compact { revision }).await? {
            OpResponse::Compact(r) => Ok(Response::new(pb::CompactionResponse {
                header: header(self.backend.header(), r.revision),
            })),
            other => Err(mismatch("compaction", &other)),
        }
    }
}

#[tonic::async_trait]
impl lease_server::Lease for EtcdService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = request.into_inner();
        match self.write(Op::LeaseGrant { id: r.id, ttl: r.ttl }).await? {
            OpResponse::LeaseGrant(g) => Ok(Response::new(pb::LeaseGrantResponse {
                header: header(self.backend.header(), g.revision),
                id: g.id,
                ttl: g.ttl,
                error: String::new(),
            })),
            other => Err(mismatch("lease grant", &other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        match self.write(Op::LeaseRevoke { id }).await? {
            OpResponse::LeaseRevoke(r) => Ok(Response::new(pb::LeaseRevokeResponse {
                header: header(self.backend.header(), r.revision),
            })),
            other => Err(mismatch("lease revoke", &other)),
        }
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.check_leader(&request)?;
        let mut inbound = request.into_inner();
        let backend = self.backend.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                // etcd (v3rpc/lease.go): an unknown lease is answered TTL 0 and the stream
                // stays open; other errors end it.
                let ttl = match backend.lease_keepalive(req.id).await {
                    Ok(ttl) => ttl,
                    Err(BackendError::Kv(KvError::LeaseNotFound)) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let h = backend.header();
                let resp = pb::LeaseKeepAliveResponse { header: header(h, h.revision), id: req.id, ttl };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        let h = self.backend.header();
        let resp = match self.backend.lease_time_to_live(r.id, r.keys).await {
            Ok(t) => pb::LeaseTimeToLiveResponse {
                header: header(h, t.revision),
                id: t.id,
                ttl: t.ttl,
                granted_ttl: t.granted_ttl,
                keys: t.keys,
            },
            // etcd: an unknown lease is TTL -1, not an error.
            Err(BackendError::Kv(KvError::LeaseNotFound)) => pb::LeaseTimeToLiveResponse {
                header: header(h, h.revision),
                id: r.id,
                ttl: -1,
                ..Default::default()
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let ids = self.backend.leases().await?;
        let h = self.backend.header();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: header(h, h.revision),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for EtcdService {
    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(unimplemented("MemberAdd", MEMBERSHIP_HINT))
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(unimplemented("MemberRemove", MEMBERSHIP_HINT))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(unimplemented("MemberUpdate", MEMBERSHIP_HINT))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let members = self.backend.members().await?;
        let h = self.backend.header();
        Ok(Response::new(pb::MemberListResponse {
            // etcd's member list header carries no revision.
            header: header(h, 0),
            members: members
                .into_iter()
                .map(|m| pb::Member {
                    id: m.id,
                    name: m.name,
                    peer_ur_ls: m.peer_urls,
                    client_ur_ls: m.client_urls,
                    is_learner: m.is_learner,
                })
                .collect(),
        }))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(unimplemented("MemberPromote", MEMBERSHIP_HINT))
    }
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for EtcdService {
    async fn alarm(&self, request: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        // Shoal raises no etcd alarms (no NOSPACE quota, no corruption checker): GET lists
        // none, ACTIVATE/DEACTIVATE change nothing.
        // etcd 3.4 answers with no header at all.
        if read_only(&request) && request.get_ref().action() != pb::alarm_request::AlarmAction::Get {
            return Err(Status::permission_denied(shoal_api::roles::etcd_refusal(
                "an Alarm that changes alarms",
            )));
        }
        Ok(Response::new(pb::AlarmResponse { header: None, alarms: Vec::new() }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.backend.status().await?;
        let h = self.backend.header();
        Ok(Response::new(pb::StatusResponse {
            header: header(h, h.revision),
            version: s.version,
            db_size: s.db_size,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: s.errors,
            db_size_in_use: s.db_size_in_use,
            is_learner: s.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // Nothing to defragment: compaction frees memory directly. (etcd 3.4 answers with no
        // header.)
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    async fn hash(&self, _: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        Err(unimplemented("Hash", "; replicas are checked by Shoal's Raft snapshots"))
    }

    async fn hash_kv(&self, _: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        Err(unimplemented("HashKV", "; replicas are checked by Shoal's Raft snapshots"))
    }

    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Snapshot", "; back up the cluster with Shoal's own snapshot/backup commands"))
    }

    async fn move_leader(
        &self,
        _: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(unimplemented("MoveLeader", "; Raft leadership is managed by Shoal"))
    }
}
