//! The store's client port against certificates of the wrong role. As in kubeadm, etcd trusts
//! only the etcd CA (`--trusted-ca-file=etcd/ca.crt`), which signs nothing but the store's
//! own certificates and its clients. Every certificate of the cluster CA, valid anywhere else
//! in the cluster (a kubelet's `system:node:worker1`, the controller-manager's, even the
//! cluster administrator's `system:masters`), is refused at the TLS handshake: it can read
//! nothing and write nothing, through kube-lite's client or Debian's etcdctl. The
//! apiserver's client certificate and the etcd administrator's work.
//!
//! Runs against etcd-lite, or real etcd with `KL_ETCD_BIN=/usr/bin/etcd`. Needs
//! `cargo build --workspace --bins` first.

mod common;

use std::{path::Path, time::Duration};

use common::{run, start};
use etcd_client::{Client, ConnectOptions};
use testkit::{EtcdCluster, EtcdOpts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{rustls::pki_types::ServerName, TlsConnector};

/// A bound on each attempt of a refused client: refusals must come as errors, not hangs.
const ATTEMPT: Duration = Duration::from_secs(10);

/// Client options presenting `cert`/`key` and trusting the etcd CA (so that the server's
/// certificate verifies and only the client's identity is in question).
fn options(c: &EtcdCluster, cert: &Path, key: &Path) -> anyhow::Result<ConnectOptions> {
    let tls = kl_tls::ClientTls::load(&c.pki().etcd_ca, Some((cert, key)))?.tonic_config();
    Ok(ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(ATTEMPT))
}

/// Opens a TLS connection to member `i`'s client port with `cert`/`key` and sends the HTTP/2
/// preface; returns how the server answered: `Err` with the TLS error if it refused.
async fn handshake(c: &EtcdCluster, i: usize, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let tls = kl_tls::ClientTls::load(&c.pki().etcd_ca, Some((cert, key)))?.rustls_config()?;
    let url = c.client_url(i);
    let addr = url.trim_start_matches("https://").to_string();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(&addr).await?;
        let mut tls = TlsConnector::from(tls)
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        // TLS 1.3: the server checks the client's certificate after the client considers the
        // handshake done, so its verdict arrives with the first read.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        tls.flush().await?;
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "the server closed the connection without a word");
        Ok(())
    };
    tokio::time::timeout(ATTEMPT, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {ATTEMPT:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_refuses_the_cluster_cas_certificates() {
    let mut c = start(1, EtcdOpts::fast()).await;
    run(&mut c, |c| async move {
        let pki = c.pki().clone();
        c.wait_for_leader(Duration::from_secs(30)).await?;
        let mut admin = c.client_for(0).await?;
        admin.put("/registry/guarded", "before", None).await?;
        let revision = admin
            .get("/registry/guarded", None)
            .await?
            .header()
            .map(|h| h.revision())
            .unwrap_or_default();

        // Certificates valid in the cluster, signed by the cluster CA.
        let (kubelet_cert, kubelet_key) = pki.issue(
            "kubelet-worker1",
            "system:node:worker1",
            Some("system:nodes"),
            false,
        )?;
        let cm = kl_pki::paths::CONTROLLER_MANAGER;
        let wrong_role = [
            ("a kubelet (system:node:worker1)", kubelet_cert, kubelet_key),
            (
                "the controller-manager",
                cm.cert_in(&pki.dir),
                cm.key_in(&pki.dir),
            ),
            (
                "the cluster admin (system:masters)",
                pki.admin_cert.clone(),
                pki.admin_key.clone(),
            ),
        ];
        for (who, cert, key) in &wrong_role {
            // The handshake itself fails, with the server's TLS alert.
            let refused = handshake(c, 0, cert, key)
                .await
                .err()
                .ok_or_else(|| anyhow::anyhow!("{who}: the TLS handshake succeeded"))?;
            anyhow::ensure!(
                format!("{refused:#}").contains("alert"),
                "{who}: not refused by a TLS alert: {refused:#}"
            );
            eprintln!("{who}: {refused:#}");

            // Through an etcd client: a write and a read both fail.
            match c.client_with(&[0], options(c, cert, key)?).await {
                Err(e) => eprintln!("{who}: connect refused: {e}"),
                Ok(mut kv) => {
                    let put = kv.put("/registry/guarded", "overwritten", None).await;
                    anyhow::ensure!(put.is_err(), "{who}: a put went through: {put:?}");
                    let put = kv.put("/registry/intruder", "x", None).await;
                    anyhow::ensure!(put.is_err(), "{who}: a put went through: {put:?}");
                    let got = kv.get("/registry/guarded", None).await;
                    anyhow::ensure!(got.is_err(), "{who}: a read went through: {got:?}");
                }
            }

            // Debian's etcdctl with the same certificate fails too.
            let etcdctl = c.etcdctl_for(0)?.with_identity(cert.clone(), key.clone());
            let out = etcdctl
                .run(&["--command-timeout=3s", "put", "/registry/intruder", "x"])
                .await?;
            anyhow::ensure!(!out.success(), "{who}: etcdctl put succeeded: {out:?}");
        }

        // Nothing changed: the value, no new key, not a single revision more.
        let got = admin.get("/registry/guarded", None).await?;
        anyhow::ensure!(
            got.kvs().first().map(|kv| kv.value()) == Some(&b"before"[..]),
            "the guarded value changed: {got:?}"
        );
        let intruder = admin.get("/registry/intruder", None).await?;
        anyhow::ensure!(intruder.kvs().is_empty(), "a refused client wrote a key");
        let now = got.header().map(|h| h.revision()).unwrap_or_default();
        anyhow::ensure!(
            now == revision,
            "revision {revision} moved to {now}: a refused client wrote"
        );

        // The store's own clients, signed by the etcd CA, work: the apiserver's certificate
        // writes, the etcd administrator's and the health check's read it back.
        let mut apiserver = c
            .client_with(
                &[0],
                options(c, &pki.apiserver_etcd_cert, &pki.apiserver_etcd_key)?,
            )
            .await?;
        handshake(c, 0, &pki.apiserver_etcd_cert, &pki.apiserver_etcd_key).await?;
        apiserver
            .put("/registry/guarded", "by the apiserver", None)
            .await?;
        let hc = kl_pki::paths::ETCD_HEALTHCHECK_CLIENT;
        for (who, cert, key) in [
            (
                "the etcd admin",
                pki.etcd_admin_cert.clone(),
                pki.etcd_admin_key.clone(),
            ),
            (
                "the health check",
                hc.cert_in(&pki.dir),
                hc.key_in(&pki.dir),
            ),
        ] {
            let mut kv: Client = c.client_with(&[0], options(c, &cert, &key)?).await?;
            let got = kv.get("/registry/guarded", None).await?;
            anyhow::ensure!(
                got.kvs().first().map(|kv| kv.value()) == Some(&b"by the apiserver"[..]),
                "{who} reads {got:?}"
            );
        }
        let out = c
            .etcdctl_for(0)?
            .run(&["get", "/registry/guarded"])
            .await?
            .ok()?;
        anyhow::ensure!(
            out.stdout == "/registry/guarded\nby the apiserver\n",
            "{out:?}"
        );
        Ok(())
    })
    .await;
}
