//! The client side of the peer transport: openraft's RPCs as gRPC calls (`proto/raft.proto`),
//! over mutual TLS when peer certificates are configured.
//!
//! Raft payloads are bincode-encoded openraft types inside `RaftBytes`; the remote side answers
//! with a bincode `Result<Response, RaftError>`, so openraft sees the remote error itself.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;

use openraft::{
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{decode, encode, PeerNode, TypeConfig};
use crate::peerpb::{raft_peer_client::RaftPeerClient, RaftBytes};

/// Opens a (lazily connected) channel to a peer's first URL.
pub fn peer_channel(
    urls: &[String],
    tls: Option<&ClientTlsConfig>,
    connect_timeout: Duration,
) -> Result<Channel, String> {
    let url = urls
        .first()
        .ok_or_else(|| "member has no peer URL".to_string())?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("peer URL {url}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if url.starts_with("https://") {
        let tls = tls.ok_or_else(|| {
            format!("peer URL {url} is https but no --peer-cert-file/--peer-key-file/--peer-trusted-ca-file were given")
        })?;
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| format!("peer TLS for {url}: {e}"))?;
    }
    Ok(endpoint.connect_lazy())
}

/// Makes one [`PeerConnection`] per target member. Channels are cached per (member, URL):
/// openraft asks for a new client for every leadership check and election round, and a fresh
/// TCP + TLS connection each time would cost more than the round itself. A tonic channel
/// multiplexes calls and reconnects by itself when the peer comes back.
#[derive(Clone)]
pub struct Network {
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
    channels: Arc<Mutex<HashMap<(u64, String), Channel>>>,
}

impl Network {
    pub fn new(tls: Option<ClientTlsConfig>, connect_timeout: Duration) -> Self {
        Network {
            tls,
            connect_timeout,
            channels: Arc::default(),
        }
    }

    fn channel(&self, target: u64, node: &PeerNode) -> Result<Channel, String> {
        let url = node.peer_urls.first().cloned().unwrap_or_default();
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(&(target, url.clone())) {
            return Ok(c.clone());
        }
        let channel = peer_channel(&node.peer_urls, self.tls.as_ref(), self.connect_timeout)?;
        // A member's URL changed (removed and re-added): drop what pointed at the old one.
        channels.retain(|(id, _), _| *id != target);
        channels.insert((target, url), channel.clone());
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> PeerConnection {
        let client = self
            .channel(target, node)
            .map(|c| {
                RaftPeerClient::new(c)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX)
            })
            .map_err(|e| {
                tracing::warn!(target, error = %e, "cannot reach peer");
                e
            });
        PeerConnection { target, client }
    }
}

pub struct PeerConnection {
    target: u64,
    client: Result<RaftPeerClient<Channel>, String>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, PeerNode, RaftError<u64, E>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: serde::Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )))
            }
        };
        let mut request = tonic::Request::new(RaftBytes { data: encode(req) });
        request.set_timeout(option.hard_ttl());
        let result = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let bytes = match result {
            Ok(r) => r.into_inner().data,
            Err(status) => {
                return Err(if status.code() == tonic::Code::Unavailable {
                    RPCError::Unreachable(Unreachable::new(&status))
                } else {
                    RPCError::Network(NetworkError::new(&status))
                })
            }
        };
        let decoded: Result<Resp, RaftError<u64, E>> =
            decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&*e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
