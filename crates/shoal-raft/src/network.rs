//! Raft transport for a cluster of one manager. A single voter never sends Raft messages, so a
//! call here means a second manager was added to a member started without the node-to-node
//! transport ([`crate::transport::TlsNetwork`]); it fails with a clear, retryable error rather
//! than pretending to deliver.

use crate::{ManagerNode, RaftId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

#[derive(Clone, Copy, Debug, Default)]
pub struct SingleManagerNetwork;

pub struct NoPeer {
    target: RaftId,
}

fn err<E: std::error::Error>(target: RaftId) -> RPCError<RaftId, ManagerNode, E> {
    let msg = format!("no transport to manager {target}: this build runs single-manager clusters only");
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
}

impl RaftNetworkFactory<TypeConfig> for SingleManagerNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, target: RaftId, _node: &ManagerNode) -> Self::Network {
        NoPeer { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, ManagerNode, RaftError<RaftId>>> {
        Err(err(self.target))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, ManagerNode, RaftError<RaftId, InstallSnapshotError>>,
    > {
        Err(err(self.target))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<RaftId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, ManagerNode, RaftError<RaftId>>> {
        Err(err(self.target))
    }
}
