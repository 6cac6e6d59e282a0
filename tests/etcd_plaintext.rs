//! Without certificates a member serves plaintext, as etcd does: `http://` URLs and no TLS
//! flags give a working single-member store, and a TLS client is refused rather than served.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use testkit::{free_port, process::Proc, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_certificates_serves_plaintext() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let args: Vec<String> = vec![
        "--name=solo".into(),
        format!("--data-dir={}", dir.path().join("solo.etcd").display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=solo={peer_url}"),
        format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
    ];
    let bin = testkit::etcd_bin().expect("etcd binary");
    let mut member = Proc::spawn(&bin, &args, &dir.path().join("solo.log")).expect("spawn");

    let endpoint = client_url.clone();
    let mut kv = wait_until(
        "the plaintext member to answer",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let endpoint = endpoint.clone();
            async move {
                let opts = ConnectOptions::new().with_timeout(Duration::from_secs(2));
                let mut c = Client::connect([endpoint], Some(opts)).await?;
                c.put("/plain", "text", None).await?;
                Ok(Some(c))
            }
        },
    )
    .await
    .expect("a plaintext put");
    let got = kv.get("/plain", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"text");

    // A client that insists on TLS gets no answer from a plaintext port.
    let pki = testkit::TestPki::generate(&dir.path().join("pki")).expect("pki");
    let tls = ConnectOptions::new()
        .with_timeout(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(2))
        .with_tls(pki.client_tls().expect("client tls").tonic_config());
    let refused = async {
        let mut c = Client::connect([format!("https://127.0.0.1:{client}")], Some(tls)).await?;
        c.get("/plain", None).await
    }
    .await;
    assert!(
        refused.is_err(),
        "a TLS client was served on a plaintext port"
    );
    assert!(member.is_running(), "the member stays up");
    member.kill9();
}
