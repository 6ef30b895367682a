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
    pub(crate) target: RaftId,
}

fn err<E: std::error::Error>(target: RaftId) -> RPCError<RaftId, ManagerNode, E> {
    let msg = format!("no transport to manager {target}: this member has no TLS certificate yet");
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
}

impl crate::EntryFormats for SingleManagerNetwork {
    fn peer_contacts(&self) -> Option<crate::transport::PeerContacts> {
        None
    }
}

impl crate::EntryFormats for LazyTlsNetwork {
    fn peer_contacts(&self) -> Option<crate::transport::PeerContacts> {
        Some(self.contacts.clone())
    }
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

/// The TLS transport, switched on once this member has its certificate (a node that is
/// initializing a cluster or joining one starts Raft before the certificate exists), and switched
/// to a new certificate when it is renewed: every peer picks up the newest configuration on its
/// next call. Until the first one, every call fails like [`SingleManagerNetwork`]'s, which a lone
/// voter never makes.
#[derive(Clone, Default)]
pub struct LazyTlsNetwork {
    inner: std::sync::Arc<std::sync::RwLock<Option<(u64, crate::transport::TlsNetwork)>>>,
    contacts: crate::transport::PeerContacts,
}

impl LazyTlsNetwork {
    /// Installs (or replaces, after a renewal) the client configuration.
    pub fn set(&self, client_config: std::sync::Arc<rustls::ClientConfig>) {
        let mut g = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = g.as_ref().map_or(1, |(n, _)| n + 1);
        *g = Some((
            generation,
            crate::transport::TlsNetwork::with_contacts(client_config, self.contacts.clone()),
        ));
    }

    /// How the peers answered this member's RPCs (see [`crate::transport::PeerContacts`]).
    pub fn contacts(&self) -> &crate::transport::PeerContacts {
        &self.contacts
    }

    pub fn is_set(&self) -> bool {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    fn current(&self) -> Option<(u64, crate::transport::TlsNetwork)> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A peer of [`LazyTlsNetwork`]: uses the newest TLS configuration, even if the replication
/// stream that owns it was created before the first one.
pub struct LazyPeer {
    network: LazyTlsNetwork,
    target: RaftId,
    node: ManagerNode,
    tls: Option<(u64, crate::transport::TlsPeer)>,
}

impl LazyPeer {
    async fn peer(&mut self) -> Option<&mut crate::transport::TlsPeer> {
        if let Some((generation, network)) = self.network.current() {
            if self.tls.as_ref().is_none_or(|(g, _)| *g != generation) {
                self.tls = Some((generation, network.clone().new_client(self.target, &self.node).await));
            }
        }
        self.tls.as_mut().map(|(_, p)| p)
    }
}

impl RaftNetworkFactory<TypeConfig> for LazyTlsNetwork {
    type Network = LazyPeer;

    async fn new_client(&mut self, target: RaftId, node: &ManagerNode) -> Self::Network {
        LazyPeer { network: self.clone(), target, node: node.clone(), tls: None }
    }
}

impl RaftNetwork<TypeConfig> for LazyPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, ManagerNode, RaftError<RaftId>>> {
        let target = self.target;
        match self.peer().await {
            Some(p) => p.append_entries(rpc, option).await,
            None => Err(err(target)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, ManagerNode, RaftError<RaftId, InstallSnapshotError>>,
    > {
        let target = self.target;
        match self.peer().await {
            Some(p) => p.install_snapshot(rpc, option).await,
            None => Err(err(target)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, ManagerNode, RaftError<RaftId>>> {
        let target = self.target;
        match self.peer().await {
            Some(p) => p.vote(rpc, option).await,
            None => Err(err(target)),
        }
    }
    fn backoff(&self) -> openraft::network::Backoff {
        crate::transport::backoff()
    }
}
