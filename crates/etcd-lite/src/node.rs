//! One etcd-lite member, as the gRPC services see it.
//!
//! The services never touch Raft directly: they call this. It owns proposing (forwarded to the
//! leader when this member is a follower), linearizable reads (ReadIndex, batched, through the
//! leader), the lessor's leader-side work (renewals, expiry proposed through the log),
//! membership changes, and status.
//!
//! Every wait here is bounded: with no leader, a request fails within two election timeouts
//! with `etcdserver: no leader`; with a leader that cannot commit, within etcd's request timeout
//! (5 s + 2 election timeouts) with `etcdserver: request timed out`.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use etcd_client::proto::PbResponseHeader;
use openraft::{
    error::{ChangeMembershipError, ClientWriteError, RaftError},
    ChangeMembers, ServerState,
};
use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tonic::transport::{Channel, ClientTlsConfig};

use crate::{
    command::{Command, CommandResponse},
    config::Config,
    error::EtcdError,
    lessor::Lessor,
    metrics::Metrics,
    mvcc::Mvcc,
    peerpb::{
        member_change_request::Kind, raft_peer_client::RaftPeerClient, ForwardRequest,
        LeaseKeepAliveRequest, LeaseTimeToLiveRequest, MemberChangeRequest, ReadIndexRequest,
    },
    raft::{decode, decode_error, encode, network::peer_channel, peer_server::NOT_LEADER, Raft},
};

/// What Maintenance.Status reports.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    pub member_id: u64,
    pub leader: Option<u64>,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    pub is_learner: bool,
    pub db_size: u64,
}

/// A cluster member, as MemberList shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started and published its attributes (as etcd).
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// Everything a [`Node`] is built from (see `crate::run`).
pub struct NodeParts {
    pub id: u64,
    pub cluster_id: u64,
    pub config: Config,
    pub raft: Raft,
    pub store: Arc<RwLock<Mvcc>>,
    pub revisions: watch::Receiver<i64>,
    pub metrics: Arc<Metrics>,
    pub lessor: Arc<Lessor>,
    pub peer_tls: Option<ClientTlsConfig>,
    /// Whether this member joined an existing cluster as a learner (what it is until the
    /// membership that says so reaches it).
    pub joined_as_learner: bool,
}

/// Log entries the proposer keeps in flight before it starts batching.
const MAX_PROPOSALS_IN_FLIGHT: usize = 2;
/// Upper bounds of one batch entry.
const MAX_BATCH_COMMANDS: usize = 1024;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A command waiting in the proposer's queue, with where its result goes.
struct Proposal {
    cmd: Command,
    tx: oneshot::Sender<Result<(CommandResponse, u64), EtcdError>>,
}

/// Roughly what a command adds to a log entry.
fn command_size(cmd: &Command) -> usize {
    use prost::Message;
    match cmd {
        Command::Put(r) => r.encoded_len(),
        Command::DeleteRange(r) => r.encoded_len(),
        Command::Txn(r) => r.encoded_len(),
        Command::Batch(c) => c.iter().map(command_size).sum(),
        _ => 64,
    }
}

/// A linearizable read waiting for the read index of the next ReadIndex round.
type ReadWaiter = oneshot::Sender<Result<u64, EtcdError>>;

pub struct Node {
    id: u64,
    cluster_id: u64,
    config: Config,
    raft: Raft,
    store: Arc<RwLock<Mvcc>>,
    revisions: watch::Receiver<i64>,
    metrics: Arc<Metrics>,
    lessor: Arc<Lessor>,
    peer_tls: Option<ClientTlsConfig>,
    joined_as_learner: bool,
    /// Channels to peers for forwarding, by member id (with the URL they were made for).
    peers: Mutex<HashMap<u64, (String, RaftPeerClient<Channel>)>>,
    /// Linearizable reads waiting for the next ReadIndex round.
    read_waiters: mpsc::UnboundedSender<ReadWaiter>,
    read_rounds: Mutex<Option<mpsc::UnboundedReceiver<ReadWaiter>>>,
    /// Proposals for [`Node::run_proposer`].
    proposals: mpsc::UnboundedSender<Proposal>,
    proposal_queue: Mutex<Option<mpsc::UnboundedReceiver<Proposal>>>,
}

impl Node {
    pub fn new(parts: NodeParts) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ptx, prx) = mpsc::unbounded_channel();
        Arc::new(Node {
            id: parts.id,
            cluster_id: parts.cluster_id,
            config: parts.config,
            raft: parts.raft,
            store: parts.store,
            revisions: parts.revisions,
            metrics: parts.metrics,
            lessor: parts.lessor,
            peer_tls: parts.peer_tls,
            joined_as_learner: parts.joined_as_learner,
            peers: Mutex::new(HashMap::new()),
            read_waiters: tx,
            read_rounds: Mutex::new(Some(rx)),
            proposals: ptx,
            proposal_queue: Mutex::new(Some(prx)),
        })
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// A response header for a response at store `revision`.
    pub fn header(&self, revision: i64) -> PbResponseHeader {
        PbResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow().current_term,
        }
    }

    /// The state machine, for local (serializable, or after [`Node::read_barrier`]) reads.
    pub fn store(&self) -> &Arc<RwLock<Mvcc>> {
        &self.store
    }

    /// The store revision, updated after every apply: watchers wait on this.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.revisions.clone()
    }

    /// etcd's request timeout: 5 s plus two election timeouts.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + self.config.election_timeout * 2
    }

    fn current_leader(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        // A leader that has heard from no quorum for an election timeout is no leader for
        // clients (etcd's CheckQuorum makes such a leader step down): fail fast rather than
        // let requests wait for a commit that cannot happen.
        if leader == self.id && m.state == ServerState::Leader {
            let voters = m.membership_config.membership().voter_ids().count();
            if voters > 1 {
                let stale = m
                    .millis_since_quorum_ack
                    .is_none_or(|ms| ms > self.config.election_timeout.as_millis() as u64 * 2);
                if stale {
                    return None;
                }
            }
        }
        Some(leader)
    }

    /// The current leader, waiting up to two election timeouts (one election) for one.
    async fn leader(&self, deadline: Instant) -> Result<u64, EtcdError> {
        let wait_until = deadline.min(Instant::now() + self.config.election_timeout * 2);
        loop {
            if let Some(l) = self.current_leader() {
                return Ok(l);
            }
            if Instant::now() >= wait_until {
                return Err(EtcdError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn peer(&self, id: u64) -> Result<RaftPeerClient<Channel>, EtcdError> {
        let url = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let node = m
                .membership_config
                .membership()
                .get_node(&id)
                .cloned()
                .ok_or(EtcdError::LeaderChanged)?;
            node.peer_urls
                .first()
                .cloned()
                .ok_or(EtcdError::LeaderChanged)?
        };
        let mut peers = self.peers.lock();
        if let Some((u, c)) = peers.get(&id) {
            if *u == url {
                return Ok(c.clone());
            }
        }
        let channel = peer_channel(
            std::slice::from_ref(&url),
            self.peer_tls.as_ref(),
            self.config.election_timeout,
        )
        .map_err(EtcdError::Internal)?;
        let client = RaftPeerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        peers.insert(id, (url, client.clone()));
        Ok(client)
    }

    /// Waits until this member has applied `index` (bounded by `deadline`).
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), EtcdError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "read your writes")
            .await
            .map(|_| ())
            .map_err(|_| EtcdError::Timeout)
    }

    /// Whether this member is a learner (it then serves only serializable reads, Status and
    /// MemberList to clients, as etcd).
    pub fn is_learner(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        if membership.get_node(&self.id).is_some() {
            membership.learner_ids().any(|l| l == self.id)
        } else {
            self.joined_as_learner
        }
    }

    /// etcd's `isRPCSupportedForLearner`: clients may not write or read linearizably through a
    /// learner.
    fn refuse_on_learner(&self) -> Result<(), EtcdError> {
        if self.is_learner() {
            return Err(EtcdError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// Replicates a client's command and returns its result once applied on this member.
    /// `CommandResponse::Error(e)` comes back as `Err(e)`.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, EtcdError> {
        self.refuse_on_learner()?;
        self.propose_internal(cmd).await
    }

    /// [`Node::propose`] for the member's own commands (attributes, lease expiry), which a
    /// learner makes too.
    async fn propose_internal(&self, cmd: Command) -> Result<CommandResponse, EtcdError> {
        let deadline = Instant::now() + self.request_timeout();
        self.metrics.proposals_pending.inc();
        let result = self.propose_until(cmd, deadline).await;
        self.metrics.proposals_pending.dec();
        if result.is_err() {
            self.metrics.proposals_failed.inc();
        }
        match result? {
            CommandResponse::Error(e) => Err(e),
            other => Ok(other),
        }
    }

    /// Runs `op` against the current leader: `op(None)` when this member leads, `op(Some(peer))`
    /// with a client for the leader otherwise. Retries (until `deadline`) when it turns out
    /// there is no leader, or, if `retry_changed`, when the leader changed under the call:
    /// callers pass that only for requests that change nothing, which are safe to repeat.
    async fn at_leader<T, F, Fut>(
        &self,
        deadline: Instant,
        retry_changed: bool,
        mut op: F,
    ) -> Result<T, EtcdError>
    where
        F: FnMut(Option<RaftPeerClient<Channel>>) -> Fut,
        Fut: std::future::Future<Output = Result<T, EtcdError>>,
    {
        loop {
            let leader = self.leader(deadline).await?;
            let peer = if leader == self.id {
                None
            } else {
                Some(self.peer(leader)?)
            };
            match op(peer).await {
                Err(EtcdError::NoLeader) if Instant::now() < deadline => {}
                Err(EtcdError::LeaderChanged) if retry_changed && Instant::now() < deadline => {}
                other => return other,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn propose_until(
        &self,
        cmd: Command,
        deadline: Instant,
    ) -> Result<CommandResponse, EtcdError> {
        // A write is retried only when nothing was appended (NoLeader), never after the leader
        // may have taken it.
        self.at_leader(deadline, false, |peer| {
            let cmd = cmd.clone();
            async move {
                match peer {
                    None => tokio::time::timeout_at(deadline, self.propose_as_leader(cmd))
                        .await
                        .map_err(|_| EtcdError::Timeout)?
                        .map(|(r, _)| r),
                    Some(client) => self.forward(client, &cmd, deadline).await,
                }
            }
        })
        .await
    }

    async fn forward(
        &self,
        mut client: RaftPeerClient<Channel>,
        cmd: &Command,
        deadline: Instant,
    ) -> Result<CommandResponse, EtcdError> {
        let mut req = tonic::Request::new(ForwardRequest {
            command: encode(cmd),
        });
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let resp = client
            .forward(req)
            .await
            .map_err(|s| status_to_error(&s, true))?
            .into_inner();
        let response: CommandResponse = decode(&resp.response).map_err(|e| {
            EtcdError::Internal(format!("leader sent an undecodable response: {e}"))
        })?;
        // Read-your-writes on this member: answer once it has applied the entry too.
        self.wait_applied(resp.index, deadline).await?;
        Ok(response)
    }

    /// Leader side of a proposal: the response and the log index it was applied at. It goes
    /// through the [`Node::run_proposer`] queue, which batches under load.
    pub async fn propose_as_leader(
        &self,
        cmd: Command,
    ) -> Result<(CommandResponse, u64), EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send(Proposal { cmd, tx })
            .map_err(|_| EtcdError::Stopped)?;
        rx.await.map_err(|_| EtcdError::Stopped)?
    }

    /// Replicates proposals. With fewer than [`MAX_PROPOSALS_IN_FLIGHT`] log entries in flight
    /// a proposal is written at once; beyond that, proposals queue and the next free slot
    /// takes all of them as one [`Command::Batch`] entry. So one client sees no added latency,
    /// and 64 clients share a few entries, fsyncs and replication messages instead of paying
    /// for 64 (etcd gets the same effect from its Raft `Ready` loop).
    pub async fn run_proposer(self: Arc<Self>) {
        use futures::stream::{FuturesUnordered, StreamExt};
        let Some(mut rx) = self.proposal_queue.lock().take() else {
            return;
        };
        let mut queue: std::collections::VecDeque<Proposal> = Default::default();
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        while open || !queue.is_empty() || !in_flight.is_empty() {
            tokio::select! {
                p = rx.recv(), if open => match p {
                    Some(p) => {
                        queue.push_back(p);
                        while let Ok(p) = rx.try_recv() {
                            queue.push_back(p);
                        }
                    }
                    None => open = false,
                },
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            }
            while in_flight.len() < MAX_PROPOSALS_IN_FLIGHT && !queue.is_empty() {
                let mut batch = Vec::new();
                let mut bytes = 0usize;
                while let Some(p) = queue.front() {
                    let size = command_size(&p.cmd);
                    if !batch.is_empty()
                        && (batch.len() >= MAX_BATCH_COMMANDS || bytes + size > MAX_BATCH_BYTES)
                    {
                        break;
                    }
                    bytes += size;
                    batch.extend(queue.pop_front());
                }
                in_flight.push(self.clone().write_batch(batch));
            }
        }
    }

    async fn write_batch(self: Arc<Self>, mut batch: Vec<Proposal>) {
        let n = batch.len() as i64;
        if batch.len() == 1 {
            let Some(p) = batch.pop() else { return };
            let result = self.client_write(p.cmd).await;
            if result.is_ok() {
                self.metrics.proposals_committed.inc();
            }
            let _ = p.tx.send(result);
            return;
        }
        let (cmds, txs): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
        match self.client_write(Command::Batch(cmds)).await {
            Ok((CommandResponse::Batch(responses), index)) if responses.len() == txs.len() => {
                self.metrics.proposals_committed.add(n);
                for (tx, r) in txs.into_iter().zip(responses) {
                    let _ = tx.send(Ok((r, index)));
                }
            }
            Ok((other, _)) => {
                let e = EtcdError::Internal(format!("a batch was answered with {other:?}"));
                for tx in txs {
                    let _ = tx.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for tx in txs {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }

    async fn client_write(&self, cmd: Command) -> Result<(CommandResponse, u64), EtcdError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok((r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(EtcdError::NoLeader)
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(EtcdError::Internal(e.to_string()))
            }
            Err(RaftError::Fatal(_)) => Err(EtcdError::Stopped),
        }
    }

    /// ReadIndex: returns once this member has applied everything committed when the call was
    /// made, as confirmed by a leader that still holds a quorum. Reads after it are linearizable.
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        self.refuse_on_learner()?;
        let deadline = Instant::now() + self.request_timeout();
        let (tx, rx) = oneshot::channel();
        self.read_waiters.send(tx).map_err(|_| EtcdError::Stopped)?;
        let index = tokio::time::timeout_at(deadline, rx)
            .await
            .map_err(|_| EtcdError::Timeout)?
            .map_err(|_| EtcdError::Stopped)??;
        self.wait_applied(index, deadline).await
    }

    /// Runs ReadIndex rounds: every read that queued while one round ran shares the next one,
    /// as etcd's linearizableReadLoop does, so a burst of reads costs one quorum round trip.
    pub async fn run_read_rounds(self: Arc<Self>) {
        let Some(mut rx) = self.read_rounds.lock().take() else {
            return;
        };
        let mut waiters = Vec::new();
        while rx.recv_many(&mut waiters, 4096).await > 0 {
            let result = self.fetch_read_index().await;
            for w in waiters.drain(..) {
                let _ = w.send(result.clone());
            }
        }
    }

    async fn fetch_read_index(&self) -> Result<u64, EtcdError> {
        let deadline = Instant::now() + self.request_timeout();
        // A read may always be retried: it changes nothing.
        self.at_leader(deadline, true, |peer| async move {
            match peer {
                None => tokio::time::timeout_at(deadline, self.read_index_as_leader())
                    .await
                    .map_err(|_| EtcdError::Timeout)?,
                Some(mut client) => {
                    let mut req = tonic::Request::new(ReadIndexRequest {});
                    req.set_timeout(deadline.saturating_duration_since(Instant::now()));
                    client
                        .read_index(req)
                        .await
                        .map(|r| r.into_inner().index)
                        .map_err(|s| status_to_error(&s, false))
                }
            }
        })
        .await
    }

    /// Leader side of ReadIndex: confirms leadership with a quorum and returns the index reads
    /// must wait for.
    pub async fn read_index_as_leader(&self) -> Result<u64, EtcdError> {
        match self.raft.get_read_log_id().await {
            Ok((read, applied)) => Ok(read.max(applied).map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(_)) => Err(EtcdError::NoLeader),
            Err(RaftError::Fatal(_)) => Err(EtcdError::Stopped),
        }
    }

    /// The smallest TTL a lease is granted with: etcd's `(3 * electionTicks / 2) * heartbeat`,
    /// rounded up to whole seconds.
    pub fn min_lease_ttl(&self) -> i64 {
        let hb = self.config.heartbeat_interval.as_millis().max(1);
        let ticks = self.config.election_timeout.as_millis() / hb;
        let ms = (3 * ticks / 2) * hb;
        ms.div_ceil(1000).max(1) as i64
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// Renews a lease on the leader; returns its TTL. `LeaseNotFound` if it does not exist.
    pub async fn lease_keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        self.refuse_on_learner()?;
        let deadline = Instant::now() + self.request_timeout();
        self.at_leader(deadline, true, |peer| async move {
            match peer {
                None => self.lease_keepalive_as_leader(id),
                Some(mut client) => {
                    match client.lease_keep_alive(LeaseKeepAliveRequest { id }).await {
                        Ok(r) if r.get_ref().ttl > 0 => Ok(r.into_inner().ttl),
                        Ok(_) => Err(EtcdError::LeaseNotFound),
                        Err(s) => Err(status_to_error(&s, false)),
                    }
                }
            }
        })
        .await
    }

    pub fn lease_keepalive_as_leader(&self, id: i64) -> Result<i64, EtcdError> {
        if !self.is_leader() {
            return Err(EtcdError::NoLeader);
        }
        self.lessor.renew(id).ok_or(EtcdError::LeaseNotFound)
    }

    /// (remaining TTL, granted TTL) of a lease, from the leader.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<(i64, i64), EtcdError> {
        self.refuse_on_learner()?;
        let deadline = Instant::now() + self.request_timeout();
        self.at_leader(deadline, true, |peer| async move {
            match peer {
                None => self.lease_time_to_live_as_leader(id),
                Some(mut client) => {
                    match client
                        .lease_time_to_live(LeaseTimeToLiveRequest { id })
                        .await
                    {
                        Ok(r) if r.get_ref().found => {
                            let r = r.into_inner();
                            Ok((r.ttl, r.granted_ttl))
                        }
                        Ok(_) => Err(EtcdError::LeaseNotFound),
                        Err(s) => Err(status_to_error(&s, false)),
                    }
                }
            }
        })
        .await
    }

    pub fn lease_time_to_live_as_leader(&self, id: i64) -> Result<(i64, i64), EtcdError> {
        if !self.is_leader() {
            return Err(EtcdError::NoLeader);
        }
        self.lessor.time_to_live(id).ok_or(EtcdError::LeaseNotFound)
    }

    /// The members as this member knows them (its applied membership).
    pub fn members_local(&self) -> Vec<Member> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let learners: BTreeSet<u64> = membership.learner_ids().collect();
        let attrs = self.store.read().member_attrs();
        membership
            .nodes()
            .map(|(id, node)| {
                let a = attrs.get(id);
                Member {
                    id: *id,
                    name: a.map(|a| a.name.clone()).unwrap_or_default(),
                    peer_urls: node.peer_urls.clone(),
                    client_urls: a.map(|a| a.client_urls.clone()).unwrap_or_default(),
                    is_learner: learners.contains(id),
                }
            })
            .collect()
    }

    /// The members, with what each published about itself.
    pub async fn member_list(&self) -> Result<Vec<Member>, EtcdError> {
        Ok(self.members_local())
    }

    async fn member_change(&self, req: MemberChangeRequest) -> Result<u64, EtcdError> {
        self.refuse_on_learner()?;
        let id = self.member_change_via_leader(req).await?;
        // Answer with the membership as changed, also when the leader made the change: wait
        // until this member has applied what the leader has committed.
        let deadline = Instant::now() + self.request_timeout();
        let index = self.fetch_read_index().await?;
        self.wait_applied(index, deadline).await?;
        Ok(id)
    }

    async fn member_change_via_leader(&self, req: MemberChangeRequest) -> Result<u64, EtcdError> {
        let deadline = Instant::now() + self.request_timeout();
        self.at_leader(deadline, false, |peer| {
            let req = req.clone();
            async move {
                match peer {
                    None => match Kind::try_from(req.kind).unwrap_or(Kind::Add) {
                        Kind::Add => {
                            self.member_add_as_leader(req.peer_urls, req.is_learner)
                                .await
                        }
                        Kind::Remove => self.member_remove_as_leader(req.id).await.map(|_| req.id),
                        Kind::Promote => {
                            self.member_promote_as_leader(req.id).await.map(|_| req.id)
                        }
                    },
                    Some(mut client) => {
                        let mut r = tonic::Request::new(req);
                        r.set_timeout(deadline.saturating_duration_since(Instant::now()));
                        client
                            .member_change(r)
                            .await
                            .map(|r| r.into_inner().id)
                            .map_err(|s| status_to_error(&s, true))
                    }
                }
            }
        })
        .await
    }

    /// Adds a member (a voter, or a learner); returns its new id.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<u64, EtcdError> {
        self.member_change(MemberChangeRequest {
            kind: Kind::Add as i32,
            id: 0,
            peer_urls,
            is_learner,
        })
        .await
    }

    pub async fn member_remove(&self, id: u64) -> Result<(), EtcdError> {
        self.member_change(MemberChangeRequest {
            kind: Kind::Remove as i32,
            id,
            peer_urls: vec![],
            is_learner: false,
        })
        .await
        .map(|_| ())
    }

    pub async fn member_promote(&self, id: u64) -> Result<(), EtcdError> {
        self.member_change(MemberChangeRequest {
            kind: Kind::Promote as i32,
            id,
            peer_urls: vec![],
            is_learner: false,
        })
        .await
        .map(|_| ())
    }

    pub async fn member_add_as_leader(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<u64, EtcdError> {
        if !self.is_leader() {
            return Err(EtcdError::NoLeader);
        }
        if self
            .members_local()
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExists);
        }
        // etcd allows one learner at a time (--experimental-max-learners defaults to 1).
        if is_learner && self.members_local().iter().any(|m| m.is_learner) {
            return Err(EtcdError::TooManyLearners);
        }
        // etcd derives a new member's id from its peer URLs and the current time.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let id = member_id(&peer_urls, &now.to_string());
        let node = crate::raft::PeerNode { peer_urls };
        self.raft
            .add_learner(id, node, false)
            .await
            .map_err(membership_error)?;
        if !is_learner {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        tracing::info!(member = %format!("{id:x}"), is_learner, "member added");
        Ok(id)
    }

    pub async fn member_remove_as_leader(&self, id: u64) -> Result<(), EtcdError> {
        if !self.is_leader() {
            return Err(EtcdError::NoLeader);
        }
        let member = self
            .members_local()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(EtcdError::MemberNotFound)?;
        let change = if member.is_learner {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(membership_error)?;
        tracing::info!(member = %format!("{id:x}"), "member removed");
        Ok(())
    }

    pub async fn member_promote_as_leader(&self, id: u64) -> Result<(), EtcdError> {
        if !self.is_leader() {
            return Err(EtcdError::NoLeader);
        }
        let member = self
            .members_local()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(EtcdError::MemberNotFound)?;
        if !member.is_learner {
            return Err(EtcdError::MemberNotLearner);
        }
        // etcd promotes a learner only once it has at least 90% of the leader's log.
        let ready = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let last = m.last_log_index.unwrap_or(0);
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index)
                .unwrap_or(0);
            matched as f64 >= last as f64 * 0.9
        };
        if !ready {
            return Err(EtcdError::LearnerNotReady);
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(())
    }

    pub fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let status = NodeStatus {
            member_id: self.id,
            leader: None,
            is_learner: false,
            raft_term: m.current_term,
            raft_index: m.last_log_index.unwrap_or(0),
            raft_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            db_size: 0,
        };
        drop(m);
        NodeStatus {
            leader: self.current_leader(),
            is_learner: self.is_learner(),
            db_size: self.store.read().db_size(),
            ..status
        }
    }

    /// Whether this member currently knows a leader (for /health).
    pub fn has_leader(&self) -> bool {
        self.current_leader().is_some()
    }

    /// Watches Raft for leader changes: counts them, promotes the lessor when this member
    /// becomes leader, and proposes revokes for expired leases while it leads.
    pub async fn run_leader_duties(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut metrics = self.raft.metrics();
        let mut last_leader: Option<u64> = None;
        let mut leading_term: Option<u64> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = metrics.changed() => if r.is_err() { return },
                _ = tick.tick() => {}
            }
            let (leader, state, term) = {
                let m = metrics.borrow();
                (m.current_leader, m.state, m.current_term)
            };
            if leader != last_leader {
                if leader.is_some() {
                    self.metrics.leader_changes_seen.inc();
                    tracing::info!(leader = %format!("{:x}", leader.unwrap_or(0)), term, "leader elected");
                }
                last_leader = leader;
            }
            self.metrics.has_leader.set(i64::from(leader.is_some()));
            let leading = state == ServerState::Leader && leader == Some(self.id);
            self.metrics.is_leader.set(i64::from(leading));
            if !leading {
                leading_term = None;
                continue;
            }
            if leading_term != Some(term) {
                // New leadership: nobody renewed through us before, so give every lease a full
                // TTL plus one election timeout (etcd's lessor Promote).
                self.lessor.promote(self.config.election_timeout);
                leading_term = Some(term);
            }
            for id in self.lessor.take_expired(self.request_timeout()) {
                let node = self.clone();
                tokio::spawn(async move {
                    match node.propose_internal(Command::LeaseRevoke { id }).await {
                        Ok(_) | Err(EtcdError::LeaseNotFound) => {
                            tracing::info!(lease = %format!("{id:x}"), "lease expired")
                        }
                        Err(e) => {
                            tracing::warn!(lease = %format!("{id:x}"), error = %e, "revoking expired lease")
                        }
                    }
                });
            }
        }
    }

    /// Publishes this member's name and client URLs through the log once a leader exists, as
    /// etcd does after start, retrying until it is done.
    pub async fn publish_attributes(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let attrs = crate::mvcc::MemberAttrs {
            name: self.config.name.clone(),
            client_urls: self.config.advertise_client_urls.clone(),
        };
        loop {
            if self.store.read().member_attrs().get(&self.id) == Some(&attrs) {
                return;
            }
            let cmd = Command::MemberAttrs {
                id: self.id,
                name: attrs.name.clone(),
                client_urls: attrs.client_urls.clone(),
            };
            match self.propose_internal(cmd).await {
                Ok(_) => {
                    tracing::info!(name = %attrs.name, "published member attributes");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "publishing member attributes; will retry"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// An etcd member id from peer URLs and a salt (the cluster token for the initial cluster, the
/// time for a member added later), as etcd derives them. Never 0.
pub fn member_id(peer_urls: &[String], salt: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha256::new();
    for u in &urls {
        h.update(u.as_bytes());
    }
    h.update(salt.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b).max(1)
}

/// The cluster id from the initial members' ids, as etcd derives it.
pub fn cluster_id(member_ids: &[u64], token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    h.update(token.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b).max(1)
}

fn membership_error(e: RaftError<u64, ClientWriteError<u64, crate::raft::PeerNode>>) -> EtcdError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => EtcdError::NoLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => EtcdError::Internal("a membership change is already in progress; retry".into()),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            EtcdError::Internal(e.to_string())
        }
        RaftError::Fatal(_) => EtcdError::Stopped,
    }
}

/// Maps a peer-transport failure to the client's error. `sent_may_apply`: the request may
/// have been applied even though no answer came (a forwarded write), so it must not be retried.
fn status_to_error(s: &tonic::Status, sent_may_apply: bool) -> EtcdError {
    if s.code() == tonic::Code::FailedPrecondition && s.message() == NOT_LEADER {
        return EtcdError::NoLeader;
    }
    if s.code() == tonic::Code::Aborted {
        if let Some(e) = decode_error(s.message()) {
            return e;
        }
    }
    let connect_failed = s.code() == tonic::Code::Unavailable && s.message().contains("connect");
    if connect_failed || !sent_may_apply {
        // Nothing reached the leader: look for the (new) leader again.
        EtcdError::NoLeader
    } else if s.code() == tonic::Code::DeadlineExceeded || s.code() == tonic::Code::Cancelled {
        EtcdError::Timeout
    } else {
        EtcdError::LeaderChanged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_order_independent() {
        let a = member_id(&["https://a:2380".into(), "https://b:2380".into()], "tok");
        let b = member_id(&["https://b:2380".into(), "https://a:2380".into()], "tok");
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["https://a:2380".into()], "tok"));
        assert_eq!(cluster_id(&[1, 2], "t"), cluster_id(&[2, 1], "t"));
    }
}
