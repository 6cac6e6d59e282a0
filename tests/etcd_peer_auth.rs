//! The Raft port against hostile clients. The peer port trusts only the etcd CA (as kubeadm's
//! etcd), so a node's certificate, signed by the cluster CA, fails the handshake; the etcd CA
//! also signs the store's clients (the apiserver's, etcdctl's), and `--peer-cert-allowed-cn`
//! (etcd's flag) keeps those off it too, leaving only the members' own (CN kube-etcd-peer).
//! Both are refused before any Raft message is read, bytes that are not TLS are dropped, and a
//! member's own certificate sending undecodable Raft messages gets an error: none of it moves
//! the term, the leader or the data, and every member stays up.
//!
//! Needs `cargo build --workspace --bins` first.

mod common;

use std::time::Duration;

use common::{run, start};
use etcd_lite::peerpb::{raft_peer_client::RaftPeerClient, ClusterInfoRequest, RaftBytes};
use testkit::EtcdOpts;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

/// A peer-protocol client to member `url` presenting `cert`/`key`.
async fn peer_client(
    url: &str,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<RaftPeerClient<Channel>> {
    let tls = kl_tls::ClientTls::load(ca, Some((cert, key)))?.tonic_config();
    let channel = Endpoint::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    Ok(RaftPeerClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_port_refuses_other_identities_and_garbage() {
    let opts = EtcdOpts {
        extra_args: vec!["--peer-cert-allowed-cn=kube-etcd-peer".into()],
        ..EtcdOpts::default()
    };
    // The members' own certificates pass: the cluster forms and elects.
    let mut c = start(3, opts).await;
    run(&mut c, |c| async move {
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let mut kv = c.client_for(leader).await?;
        kv.put("/guarded", "before", None).await?;
        let term = c.status(leader).await?.raft_term();
        let pki = c.pki().clone();
        let target = c.peer_url(leader);

        // A node's certificate, signed by the cluster CA: refused at the handshake, nothing
        // forwarded. (ClusterInfo is a harmless read any member answers: the refusal is the
        // connection's.)
        let (cert, key) = pki.issue(
            "peer-intruder",
            "system:node:worker1",
            Some("system:nodes"),
            false,
        )?;
        let mut intruder = peer_client(&target, &pki.etcd_ca, &cert, &key).await?;
        let asked = intruder.cluster_info(ClusterInfoRequest::default()).await;
        anyhow::ensure!(
            asked.is_err(),
            "a node certificate reached the peer service: {asked:?}"
        );
        eprintln!("node certificate refused: {}", asked.unwrap_err());
        let log = std::fs::read_to_string(c.log_path(leader))?;
        anyhow::ensure!(
            !log.contains("CommonName authentication failed"),
            "the node's certificate is refused by the CA check, before any name check"
        );

        // The etcd CA's client identities pass the CA check but not the name check.
        for (what, cert, key) in [
            ("etcd admin", &pki.etcd_admin_cert, &pki.etcd_admin_key),
            (
                "apiserver-etcd-client",
                &pki.apiserver_etcd_cert,
                &pki.apiserver_etcd_key,
            ),
        ] {
            let mut intruder = peer_client(&target, &pki.etcd_ca, cert, key).await?;
            let asked = intruder.cluster_info(ClusterInfoRequest::default()).await;
            anyhow::ensure!(
                asked.is_err(),
                "the {what} certificate reached the peer service: {asked:?}"
            );
        }
        let log = std::fs::read_to_string(c.log_path(leader))?;
        anyhow::ensure!(
            log.contains("CommonName authentication failed"),
            "the member logs the refusal"
        );

        // Bytes that are not TLS: the connection is closed, nothing else happens.
        let addr = target.trim_start_matches("https://");
        let mut raw = tokio::net::TcpStream::connect(addr).await?;
        raw.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).await?;
        raw.write_all(&vec![0xa5; 4096]).await?;
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(15), raw.read(&mut buf)).await;
        anyhow::ensure!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "the member closes a connection that speaks garbage (or answers with a TLS alert)"
        );

        // A member's own certificate is served; with undecodable Raft messages it gets an
        // error, and they have no effect.
        let mut peer = peer_client(&target, &pki.etcd_ca, &pki.peer_cert, &pki.peer_key).await?;
        peer.cluster_info(ClusterInfoRequest::default()).await?;
        for data in [vec![], vec![0xff; 64], b"not bincode at all".to_vec()] {
            let r = peer.vote(RaftBytes { data: data.clone() }).await;
            let a = peer.append_entries(RaftBytes { data }).await;
            anyhow::ensure!(r.is_err() && a.is_err(), "garbage decoded: {r:?} {a:?}");
        }

        // Nothing moved: every member up, same leader, same term, the data intact.
        anyhow::ensure!(
            c.running_indices().len() == 3,
            "every member is still running"
        );
        anyhow::ensure!(c.wait_for_leader(Duration::from_secs(30)).await? == leader);
        anyhow::ensure!(
            c.status(leader).await?.raft_term() == term,
            "the term did not move"
        );
        let got = kv.get("/guarded", None).await?;
        anyhow::ensure!(got.kvs().first().map(|k| k.value()) == Some(&b"before"[..]));
        Ok(())
    })
    .await;
}
