//! Starting and stopping a member: storage, Raft, the peer, client and metrics listeners, the
//! background duties, and a graceful stop on SIGTERM/SIGINT.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use parking_lot::RwLock;
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{ClientTlsConfig, Server};

use crate::{
    config::{ClusterState, Config, TlsFlags},
    lessor::Lessor,
    metrics::Metrics,
    mvcc::Mvcc,
    node::{cluster_id, member_id, Node, NodeParts},
    peerpb::{
        raft_peer_client::RaftPeerClient, raft_peer_server::RaftPeerServer, ClusterInfoRequest,
    },
    raft::{
        log_store::LogStore,
        network::{peer_channel, Network},
        peer_server::PeerService,
        state_machine::{Shared, StateMachine},
        PeerNode, Raft,
    },
    server::{self, ServerOptions},
};

fn server_tls(flags: &TlsFlags, side: &str) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    match (&flags.cert_file, &flags.key_file) {
        (Some(cert), Some(key)) => {
            let tls = kl_tls::ServerTls::load(
                cert,
                key,
                flags.trusted_ca_file.as_deref(),
                flags.client_cert_auth,
            )
            .with_context(|| format!("{side} TLS"))?;
            Ok(Some(tls.rustls_config()?))
        }
        (None, None) => {
            if flags.client_cert_auth {
                bail!("--{side}client-cert-auth needs --{side}cert-file, --{side}key-file and --{side}trusted-ca-file");
            }
            Ok(None)
        }
        _ => bail!("--{side}cert-file and --{side}key-file must be given together"),
    }
}

fn peer_client_tls(flags: &TlsFlags) -> anyhow::Result<Option<ClientTlsConfig>> {
    match (&flags.trusted_ca_file, &flags.cert_file, &flags.key_file) {
        (Some(ca), Some(cert), Some(key)) => Ok(Some(
            kl_tls::ClientTls::load(ca, Some((cert, key)))
                .context("peer client TLS")?
                .tonic_config(),
        )),
        (Some(ca), None, None) => Ok(Some(kl_tls::ClientTls::load(ca, None)?.tonic_config())),
        _ => Ok(None),
    }
}

async fn bind(url: &str) -> anyhow::Result<TcpListener> {
    let addr = kl_tls::url_socket_addr(url).with_context(|| format!("listen URL {url}"))?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {url}"))
}

/// Who this member is in which cluster, persisted in the data dir at first start.
struct Identity {
    member_id: u64,
    cluster_id: u64,
    /// Joined an existing cluster as a learner.
    is_learner: bool,
    /// Whether Raft must be initialized with the initial cluster (a brand-new cluster).
    bootstrap: Option<BTreeMap<u64, PeerNode>>,
}

async fn identity(
    config: &Config,
    db: &sled::Db,
    peer_tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<Identity> {
    let ids = db.open_tree("member")?;
    if let (Some(m), Some(c)) = (ids.get("member_id")?, ids.get("cluster_id")?) {
        let member_id = u64::from_be_bytes(m.as_ref().try_into().context("corrupt member id")?);
        let cluster_id = u64::from_be_bytes(c.as_ref().try_into().context("corrupt cluster id")?);
        tracing::info!(member = %format!("{member_id:x}"), "restarting member with existing data; --initial-cluster flags are ignored");
        return Ok(Identity {
            member_id,
            cluster_id,
            // Known from the applied membership from now on.
            is_learner: false,
            bootstrap: None,
        });
    }
    let identity = match config.initial_cluster_state {
        ClusterState::New => {
            let members: BTreeMap<u64, PeerNode> = config
                .initial_cluster
                .iter()
                .map(|m| {
                    (
                        member_id(&m.peer_urls, &config.initial_cluster_token),
                        PeerNode {
                            peer_urls: m.peer_urls.clone(),
                        },
                    )
                })
                .collect();
            let me = member_id(
                &config.initial_advertise_peer_urls,
                &config.initial_cluster_token,
            );
            let ids: Vec<u64> = members.keys().copied().collect();
            Identity {
                member_id: me,
                cluster_id: cluster_id(&ids, &config.initial_cluster_token),
                is_learner: false,
                bootstrap: Some(members),
            }
        }
        ClusterState::Existing => join_existing(config, peer_tls).await?,
    };
    ids.insert("member_id", &identity.member_id.to_be_bytes())?;
    ids.insert("cluster_id", &identity.cluster_id.to_be_bytes())?;
    db.flush_async().await?;
    Ok(identity)
}

/// `--initial-cluster-state existing`: ask the other members listed in `--initial-cluster` who
/// we are (the member whose peer URLs are ours, added by `member add`), as etcd does.
async fn join_existing(
    config: &Config,
    peer_tls: Option<&ClientTlsConfig>,
) -> anyhow::Result<Identity> {
    let mine = &config.initial_advertise_peer_urls;
    let others: Vec<&Vec<String>> = config
        .initial_cluster
        .iter()
        .filter(|m| m.name != config.name)
        .map(|m| &m.peer_urls)
        .collect();
    if others.is_empty() {
        bail!("--initial-cluster-state existing needs the other members in --initial-cluster");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last_err = String::new();
    while tokio::time::Instant::now() < deadline {
        for urls in &others {
            let channel = match peer_channel(urls, peer_tls, Duration::from_secs(2)) {
                Ok(c) => c,
                Err(e) => bail!(e),
            };
            let mut client = RaftPeerClient::new(channel);
            match client.cluster_info(ClusterInfoRequest {}).await {
                Ok(resp) => {
                    let info = resp.into_inner();
                    let me = info.members.iter().find(|m| {
                        let mut a = m.peer_urls.clone();
                        let mut b = mine.clone();
                        a.sort();
                        b.sort();
                        a == b
                    });
                    match me {
                        Some(m) => {
                            tracing::info!(member = %format!("{:x}", m.id), "joining existing cluster");
                            return Ok(Identity {
                                member_id: m.id,
                                cluster_id: info.cluster_id,
                                is_learner: m.is_learner,
                                bootstrap: None,
                            });
                        }
                        None => bail!(
                            "no member of the existing cluster has peer URLs {:?}: run `etcdctl member add {} --peer-urls={}` first",
                            mine, config.name, mine.join(",")
                        ),
                    }
                }
                Err(e) => last_err = format!("{}: {}", urls.join(","), e.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("could not reach any member of the existing cluster within 60s (last error: {last_err})")
}

fn open_sled(path: &std::path::Path, cache_capacity: u64) -> anyhow::Result<sled::Db> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_capacity)
        .mode(sled::Mode::HighThroughput)
        // We decide when data must be durable; sled's timer would only add fsyncs.
        .flush_every_ms(None)
        .open()
        .with_context(|| {
            format!(
                "opening {} (is another etcd-lite using this --data-dir?)",
                path.display()
            )
        })
}

/// Resolves once the member is told to stop: the shutdown signal of each listener.
fn on_stop(stop: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// Runs a member until SIGTERM or SIGINT.
pub async fn run(config: Config, server_opts: ServerOptions) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal_stop = stop_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = signal_stop.send(true);
    });
    run_until(config, server_opts, stop_rx).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("received SIGTERM, stopping"),
                _ = int.recv() => tracing::info!("received SIGINT, stopping"),
            }
        }
        _ => std::future::pending().await,
    }
}

/// Runs a member until `stop` turns true (tests and embedders use this directly).
pub async fn run_until(
    config: Config,
    server_opts: ServerOptions,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let client_tls = server_tls(&config.client_tls, "")?;
    let peer_server_tls = server_tls(&config.peer_tls, "peer-")?;
    let peer_tls = peer_client_tls(&config.peer_tls)?;
    for url in config
        .listen_client_urls
        .iter()
        .chain(&config.listen_metrics_urls)
    {
        if kl_tls::is_tls_url(url) && client_tls.is_none() {
            bail!("{url} is https but --cert-file/--key-file are not given");
        }
    }
    for url in &config.listen_peer_urls {
        if kl_tls::is_tls_url(url) && peer_server_tls.is_none() {
            bail!("{url} is https but --peer-cert-file/--peer-key-file are not given");
        }
    }

    // Two sled databases, like etcd's wal/ and snap/db: the Raft log (fsynced on every
    // append) and the state machine (fsynced only before a snapshot is taken, since the log
    // can replay it). Keeping them apart means a log fsync writes only log entries.
    let member_dir = config.data_dir.join("member");
    let wal = open_sled(&member_dir.join("wal"), config.cache_capacity / 4)?;
    let db = open_sled(&member_dir.join("db"), config.cache_capacity)?;

    let ident = identity(&config, &wal, peer_tls.as_ref()).await?;
    let metrics = Arc::new(Metrics::new());
    let lessor = Arc::new(Lessor::default());
    let mvcc = Arc::new(RwLock::new(
        Mvcc::open(&db).context("opening the MVCC store")?,
    ));
    let (revision_tx, revision_rx) = watch::channel(0);
    let shared = Arc::new(Shared {
        mvcc: mvcc.clone(),
        revision: revision_tx,
        lessor: lessor.clone(),
        metrics: metrics.clone(),
    });
    let state_machine = StateMachine::open(&db, shared).context("opening the state machine")?;
    let log_store = LogStore::open(&wal, ident.member_id)?;

    let et = config.election_timeout.as_millis() as u64;
    let raft_config = openraft::Config {
        cluster_name: config.initial_cluster_token.clone(),
        heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
        // A follower campaigns when it has heard nothing for --election-timeout (etcd waits a
        // random time in [timeout, 2 * timeout)). openraft waits `election_timeout_max` (its
        // leader lease) plus a random time in [min, max), so these make that sum fall in
        // [1, 1.2) x --election-timeout: failures are detected as soon as etcd's earliest.
        election_timeout_min: (et * 2 / 5).max(config.heartbeat_interval.as_millis() as u64 + 1),
        election_timeout_max: (et * 3 / 5).max(config.heartbeat_interval.as_millis() as u64 + 2),
        install_snapshot_timeout: et.max(3000),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        // etcd keeps 5000 entries after a snapshot for slow followers; a small --snapshot-count
        // (tests) keeps fewer so that catching up really goes through a snapshot.
        max_in_snapshot_log_to_keep: config.snapshot_count.min(5000),
        ..Default::default()
    }
    .validate()
    .context("raft configuration")?;
    let network = Network::new(
        peer_tls.clone(),
        config.election_timeout.min(Duration::from_secs(2)),
    );
    let raft = Raft::new(
        ident.member_id,
        Arc::new(raft_config),
        network,
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")?;

    let mvcc_for_shutdown = mvcc.clone();
    let node = Node::new(NodeParts {
        id: ident.member_id,
        cluster_id: ident.cluster_id,
        config: config.clone(),
        raft: raft.clone(),
        store: mvcc.clone(),
        revisions: revision_rx,
        metrics,
        lessor,
        peer_tls,
        joined_as_learner: ident.is_learner,
    });

    let mut tasks = tokio::task::JoinSet::new();
    // Peers first: the others must reach us before anyone can elect.
    for url in &config.listen_peer_urls {
        let listener = bind(url).await?;
        let svc = RaftPeerServer::new(PeerService { node: node.clone() })
            .max_decoding_message_size(crate::raft::MAX_DECODE_BYTES as usize)
            .max_encoding_message_size(usize::MAX);
        let router = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .add_service(svc);
        let shutdown = on_stop(&stop);
        match &peer_server_tls {
            Some(tls) => {
                let incoming =
                    kl_tls::incoming_with(listener, tls.clone(), kl_tls::ConnLimits::component());
                let incoming = kl_tls::allowing_cn(incoming, config.peer_cert_allowed_cn.clone());
                tasks.spawn(async move {
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                        .map_err(anyhow::Error::from)
                });
            }
            None => {
                let incoming = kl_tls::incoming_plain(listener, kl_tls::ConnLimits::component());
                tasks.spawn(async move {
                    router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await
                        .map_err(anyhow::Error::from)
                });
            }
        }
        tracing::info!(%url, "serving peer traffic");
    }

    if let Some(members) = ident.bootstrap {
        if !raft.is_initialized().await? {
            match raft.initialize(members).await {
                Ok(()) => tracing::info!("initialized a new cluster"),
                // Another member got there first and we already hold its log: fine.
                Err(e) => tracing::info!(error = %e, "cluster already initialized"),
            }
        }
    }

    for url in &config.listen_client_urls {
        let listener = bind(url).await?;
        let tls = client_tls.clone().filter(|_| kl_tls::is_tls_url(url));
        let shutdown = on_stop(&stop);
        tasks.spawn(server::serve_client(
            node.clone(),
            listener,
            tls,
            server_opts.clone(),
            shutdown,
        ));
        tracing::info!(%url, "serving client traffic");
    }
    for url in &config.listen_metrics_urls {
        let listener = bind(url).await?;
        let tls = client_tls.clone().filter(|_| kl_tls::is_tls_url(url));
        let shutdown = on_stop(&stop);
        tasks.spawn(crate::http::serve_metrics(
            node.clone(),
            listener,
            tls,
            shutdown,
        ));
        tracing::info!(%url, "serving /health and /metrics");
    }

    let reads = tokio::spawn(node.clone().run_read_rounds());
    let proposer = tokio::spawn(node.clone().run_proposer());
    tasks.spawn({
        let node = node.clone();
        let stop = stop.clone();
        async move {
            node.run_leader_duties(stop).await;
            Ok(())
        }
    });
    tasks.spawn({
        let node = node.clone();
        let stop = stop.clone();
        async move {
            node.publish_attributes(stop).await;
            Ok(())
        }
    });
    tracing::info!(name = %config.name, member = %format!("{:x}", node.id()), cluster = %format!("{:x}", node.cluster_id()), "etcd-lite member started");

    // Background duties end on their own (publishing attributes finishes once done); a
    // listener that fails ends the member.
    let mut stopped = stop.clone();
    let result = loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break Ok(()),
            next = tasks.join_next() => match next {
                None => {
                    let _ = stop.wait_for(|s| *s).await;
                    break Ok(());
                }
                Some(Ok(Ok(()))) => continue,
                Some(Ok(Err(e))) => break Err(e),
                Some(Err(e)) => break Err(anyhow::anyhow!("task failed: {e}")),
            },
        }
    };
    // Listeners stop on the stop signal; give them a moment, then stop Raft and flush.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    reads.abort();
    proposer.abort();
    let _ = raft.shutdown().await;
    wal.flush_async().await.context("final flush")?;
    crate::raft::state_machine::mark_clean_shutdown(&mvcc_for_shutdown, &db)
        .context("final flush")?;
    tracing::info!("etcd-lite member stopped");
    result
}
