//! The etcd API over Shoal's replicated store: [`EtcdBackend`] for the application layer's
//! [`KvApp`] (writes group-committed through Raft, leases timed by the leader, watches from the
//! applied log). Members are the managers: id = Raft id, name = node id, peer URL = the
//! node-to-node address, client URL = where each serves the etcd API (known for this one).

use crate::backend::{BackendError, EtcdBackend, Header, Member, Status, WatchFeed, WatchMessage};
use shoal_api::kv::{KvApp, KvFailure, WatchItem};
use shoal_kv::{LeaseId, LeaseTimeToLiveResponse, Op, OpResponse, RangeRequest, RangeResponse};
use std::sync::Arc;

/// What etcdctl and clients are told this server is: etcd 3.4's API.
pub const VERSION: &str = "3.4.0";

/// [`KvApp`] as an etcd backend; `client_url` is where this manager serves the etcd API.
pub struct ClusterBackend {
    kv: Arc<KvApp>,
    client_url: String,
}

impl ClusterBackend {
    pub fn new(kv: Arc<KvApp>, client_url: String) -> Self {
        ClusterBackend { kv, client_url }
    }
}

impl From<KvFailure> for BackendError {
    fn from(e: KvFailure) -> Self {
        match e {
            KvFailure::Kv(k) => BackendError::Kv(k),
            KvFailure::NoLeader => BackendError::NoLeader,
            KvFailure::Unavailable(m) => BackendError::Unavailable(m),
        }
    }
}

/// A stable 64-bit id for the cluster from its id string (FNV-1a), never 0.
pub(crate) fn cluster_id(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[async_trait::async_trait]
impl EtcdBackend for ClusterBackend {
    fn header(&self) -> Header {
        let node = &self.kv.manager().node;
        let status = node.status();
        let (cluster, revision) =
            node.local(|s| (s.cluster().map(|c| cluster_id(&c.id)).unwrap_or(1), s.kv().revision()));
        Header { cluster_id: cluster, member_id: status.raft_id, raft_term: status.term, revision }
    }

    fn has_leader(&self) -> bool {
        self.kv.manager().node.status().leader.is_some()
    }

    async fn write(&self, op: Op) -> Result<OpResponse, BackendError> {
        Ok(self.kv.write(op).await?)
    }

    async fn range(&self, req: RangeRequest, serializable: bool) -> Result<RangeResponse, BackendError> {
        Ok(self.kv.range(req, serializable).await?)
    }

    async fn lease_keepalive(&self, id: LeaseId) -> Result<i64, BackendError> {
        Ok(self.kv.lease_keepalive(id).await?)
    }

    async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<LeaseTimeToLiveResponse, BackendError> {
        Ok(self.kv.lease_time_to_live(id, keys).await?)
    }

    async fn leases(&self) -> Result<Vec<LeaseId>, BackendError> {
        Ok(self.kv.leases().await?)
    }

    async fn watch(
        &self,
        start_revision: i64,
        key: Vec<u8>,
        range_end: Vec<u8>,
    ) -> Result<WatchFeed, BackendError> {
        // The application layer's items, translated as they pass (no task or channel of its own).
        use tokio_stream::StreamExt;
        let rx = self.kv.watch(start_revision, key, range_end)?;
        Ok(WatchFeed::new(tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| match item {
            WatchItem::Events { revision, events } => WatchMessage::Events { revision, events },
            WatchItem::Progress { revision } => WatchMessage::Progress { revision },
            WatchItem::Compacted { compact_revision } => WatchMessage::Compacted { compact_revision },
        })))
    }

    async fn members(&self) -> Result<Vec<Member>, BackendError> {
        let status = self.kv.manager().node.status();
        let me = status.raft_id;
        let member = |(id, n): (&u64, &shoal_manager::ManagerNode), learner: bool| Member {
            id: *id,
            name: n.node_id.clone(),
            peer_urls: vec![format!("https://{}", n.addr)],
            client_urls: if *id == me { vec![self.client_url.clone()] } else { Vec::new() },
            is_learner: learner,
        };
        let mut out: Vec<Member> = status.voters.iter().map(|m| member(m, false)).collect();
        out.extend(status.learners.iter().map(|m| member(m, true)));
        Ok(out)
    }

    async fn status(&self) -> Result<Status, BackendError> {
        let status = self.kv.manager().node.status();
        let size = self.kv.manager().node.local(|s| {
            let st = s.kv().stats();
            i64::try_from(st.bytes).unwrap_or(i64::MAX)
        });
        Ok(Status {
            version: VERSION.to_string(),
            db_size: size,
            db_size_in_use: size,
            leader: status.leader.unwrap_or(0),
            raft_index: status.last_log_index.unwrap_or(0),
            raft_term: status.term,
            raft_applied_index: status.last_applied.unwrap_or(0),
            is_learner: status.learners.contains_key(&status.raft_id),
            errors: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_ids_are_stable_and_non_zero() {
        assert_eq!(super::cluster_id("abc"), super::cluster_id("abc"));
        assert_ne!(super::cluster_id("abc"), super::cluster_id("abd"));
        assert_ne!(super::cluster_id(""), 0);
    }
}
