//! Tests of the generated tree: what each certificate says (parsed back with x509-parser), and
//! that real rustls handshakes through `kl-tls` accept it and refuse strangers.

use std::{net::SocketAddr, path::Path, time::Duration};

use futures::StreamExt;
use kl_tls::{ClientTls, ServerTls};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::{extensions::GeneralName, pem::Pem};

use super::*;

fn read_pem(path: &Path) -> Pem {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).unwrap();
    pem
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn generated(sans: &[&str]) -> (tempfile::TempDir, Generated) {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(&PkiSpec::new().sans(sans.iter().copied()), dir.path()).unwrap();
    (dir, out)
}

#[test]
fn writes_the_kubeadm_layout() {
    let (dir, out) = generated(&["etcd1"]);
    assert_eq!(out.ca, CaOrigin::Created);
    let mut rel: Vec<String> = out
        .files
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    rel.sort();
    assert_eq!(
        rel,
        [
            "apiserver-etcd-client.crt",
            "apiserver-etcd-client.key",
            "apiserver-kubelet-client.crt",
            "apiserver-kubelet-client.key",
            "apiserver.crt",
            "apiserver.key",
            "ca.crt",
            "ca.key",
            "clients/admin.crt",
            "clients/admin.key",
            "clients/controller-manager.crt",
            "clients/controller-manager.key",
            "clients/scheduler.crt",
            "clients/scheduler.key",
            "etcd/admin.crt",
            "etcd/admin.key",
            "etcd/ca.crt",
            "etcd/ca.key",
            "etcd/healthcheck-client.crt",
            "etcd/healthcheck-client.key",
            "etcd/peer.crt",
            "etcd/peer.key",
            "etcd/server.crt",
            "etcd/server.key",
        ]
    );
    for f in &out.files {
        let expected = if f.path.extension().is_some_and(|e| e == "key") {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode(&f.path), expected, "{}", f.path.display());
    }
    // Two CAs, kubeadm's names, neither signed by the other.
    assert_eq!(out.etcd_ca, CaOrigin::Created);
    let cluster = std::fs::read(paths::CA.cert_in(dir.path())).unwrap();
    let etcd = std::fs::read(paths::ETCD_CA.cert_in(dir.path())).unwrap();
    assert_eq!(out.ca_pem.as_bytes(), cluster);
    assert_eq!(out.etcd_ca_pem.as_bytes(), etcd);
    for (pem, cn) in [(&cluster, CA_COMMON_NAME), (&etcd, ETCD_CA_COMMON_NAME)] {
        let s = inspect(pem).unwrap();
        assert_eq!(s.common_name, cn);
        assert!(s.is_ca, "{cn}");
        verify_issued_by(pem, pem).unwrap_or_else(|e| panic!("{cn}: not self-signed: {e}"));
    }
    assert_eq!(ETCD_CA_COMMON_NAME, "etcd-ca");
    assert!(verify_issued_by(&etcd, &cluster).is_err());
    assert!(verify_issued_by(&cluster, &etcd).is_err());
}

/// The CA each leaf must chain to, by its path: kubeadm's split.
fn expected_authority(rel: &str) -> Authority {
    match rel {
        "etcd/server.crt"
        | "etcd/peer.crt"
        | "etcd/healthcheck-client.crt"
        | "etcd/admin.crt"
        | "apiserver-etcd-client.crt" => Authority::Etcd,
        _ => Authority::Cluster,
    }
}

#[test]
fn each_certificate_chains_to_its_own_ca_and_not_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    let out = generate(&PkiSpec::new().san("etcd1").node("worker1"), pki).unwrap();
    let ca_pem = |a: Authority| std::fs::read(a.files().cert_in(pki)).unwrap();
    let mut leaves = 0;
    let mut by_etcd = Vec::new();
    for f in &out.files {
        let rel = f.path.strip_prefix(pki).unwrap().display().to_string();
        if !rel.ends_with(".crt") || rel == paths::CA.cert || rel == paths::ETCD_CA.cert {
            continue;
        }
        leaves += 1;
        let pem = std::fs::read(&f.path).unwrap();
        let right = expected_authority(&rel);
        let wrong = match right {
            Authority::Cluster => Authority::Etcd,
            Authority::Etcd => Authority::Cluster,
        };
        verify_issued_by(&pem, &ca_pem(right))
            .unwrap_or_else(|e| panic!("{rel}: not signed by {right}: {e}"));
        assert!(
            verify_issued_by(&pem, &ca_pem(wrong)).is_err(),
            "{rel}: also verifies with {wrong}"
        );
        if right == Authority::Etcd {
            by_etcd.push(rel);
        }
    }
    by_etcd.sort();
    assert_eq!(
        by_etcd,
        [
            "apiserver-etcd-client.crt",
            "etcd/admin.crt",
            "etcd/healthcheck-client.crt",
            "etcd/peer.crt",
            "etcd/server.crt",
        ]
    );
    // 5 etcd, apiserver, apiserver-kubelet-client, 3 components, worker1's client and serving.
    assert_eq!(leaves, 12);
    // The kubeconfig identities are the cluster CA's.
    for id in &out.identities {
        verify_issued_by(id.cert_pem.as_bytes(), out.ca_pem.as_bytes()).unwrap();
        assert!(verify_issued_by(id.cert_pem.as_bytes(), out.etcd_ca_pem.as_bytes()).is_err());
    }
}

#[test]
fn every_etcd_certificate_chains_to_the_etcd_ca_and_says_what_it_is_for() {
    let (dir, _) = generated(&["etcd1", "10.1.2.3"]);
    let pki = dir.path();
    let ca_pem = read_pem(&paths::ETCD_CA.cert_in(pki));
    let ca = ca_pem.parse_x509().unwrap();
    assert!(ca.is_ca());
    assert_eq!(ca.subject(), ca.issuer());
    ca.verify_signature(None).unwrap();
    let ca_life = ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp();
    assert!((3650 * 86400..3651 * 86400).contains(&ca_life), "{ca_life}");

    struct Expect {
        files: paths::CertFiles,
        cn: &'static str,
        org: Option<&'static str>,
        server: bool,
    }
    let expect = [
        (paths::ETCD_SERVER, "kube-etcd", None, true),
        (paths::ETCD_PEER, "kube-etcd-peer", None, true),
        (
            paths::ETCD_HEALTHCHECK_CLIENT,
            "kube-etcd-healthcheck-client",
            None,
            false,
        ),
        (
            paths::ETCD_ADMIN,
            "etcd-admin",
            Some("system:masters"),
            false,
        ),
        (
            paths::APISERVER_ETCD_CLIENT,
            "kube-apiserver-etcd-client",
            Some("system:masters"),
            false,
        ),
    ]
    .map(|(files, cn, org, server)| Expect {
        files,
        cn,
        org,
        server,
    });

    for e in expect {
        let pem = read_pem(&e.files.cert_in(pki));
        let cert = pem.parse_x509().unwrap();
        let name = e.files.cert;
        assert_eq!(cert.issuer(), ca.subject(), "{name}");
        cert.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|err| panic!("{name}: not signed by the etcd CA: {err}"));
        assert!(!cert.is_ca(), "{name}");

        let identity = kl_tls::identity_of(pem.contents.as_ref()).unwrap();
        assert_eq!(identity.common_name, e.cn, "{name}");
        assert_eq!(
            identity.organizations,
            e.org.map(str::to_string).into_iter().collect::<Vec<_>>(),
            "{name}"
        );

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(
            eku.client_auth,
            "{name}: every certificate here is a client"
        );
        assert_eq!(eku.server_auth, e.server, "{name}");

        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert!((365 * 86400..366 * 86400).contains(&life), "{name}: {life}");

        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .map(|n| match n {
                        GeneralName::DNSName(d) => d.to_string(),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap())
                                .to_string(),
                            _ => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap())
                                .to_string(),
                        },
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if e.server {
            assert_eq!(
                sans,
                ["localhost", "127.0.0.1", "::1", "etcd1", "10.1.2.3"],
                "{name}"
            );
        } else {
            assert!(sans.is_empty(), "{name}: {sans:?}");
        }
    }
}

#[test]
fn regenerating_reuses_the_ca_and_reissues_leaves() {
    let (dir, _) = generated(&["etcd1"]);
    let pki = dir.path();
    let ca_before = std::fs::read(paths::CA.cert_in(pki)).unwrap();
    let etcd_ca_before = std::fs::read(paths::ETCD_CA.cert_in(pki)).unwrap();
    let server_before = std::fs::read(paths::ETCD_SERVER.cert_in(pki)).unwrap();

    let out = generate(&PkiSpec::new().sans(["etcd1", "etcd4"]), pki).unwrap();
    assert_eq!(out.ca, CaOrigin::Reused);
    assert_eq!(out.etcd_ca, CaOrigin::Reused);
    assert!(!out.files.iter().any(|f| f.path.ends_with("ca.key")));
    assert!(!out.files.iter().any(|f| f.path.ends_with("ca.crt")));
    assert_eq!(std::fs::read(paths::CA.cert_in(pki)).unwrap(), ca_before);
    assert_eq!(
        std::fs::read(paths::ETCD_CA.cert_in(pki)).unwrap(),
        etcd_ca_before
    );
    let server_after = std::fs::read(paths::ETCD_SERVER.cert_in(pki)).unwrap();
    assert_ne!(server_after, server_before);
    assert!(out.sans.contains(&San::Dns("etcd4".into())));

    // The certificate issued before is still signed by the (same) etcd CA.
    let ca_pem = read_pem(&paths::ETCD_CA.cert_in(pki));
    let ca = ca_pem.parse_x509().unwrap();
    let (_, old) = x509_parser::pem::parse_x509_pem(&server_before).unwrap();
    old.parse_x509()
        .unwrap()
        .verify_signature(Some(ca.public_key()))
        .unwrap();
}

#[test]
fn refuses_half_a_ca_or_a_foreign_key() {
    let (dir, _) = generated(&[]);
    let pki = dir.path();
    let key = paths::CA.key_in(pki);

    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let err = generate(&PkiSpec::new(), pki).unwrap_err();
    assert!(matches!(err, PkiError::HalfCa { .. }), "{err}");
    assert!(err.to_string().contains("ca.key"), "{err}");

    let (other, _) = generated(&[]);
    std::fs::copy(paths::CA.key_in(other.path()), &key).unwrap();
    let err = generate(&PkiSpec::new(), pki).unwrap_err();
    assert!(matches!(err, PkiError::BadCa { .. }), "{err}");

    std::fs::write(&key, saved).unwrap();
    assert_eq!(generate(&PkiSpec::new(), pki).unwrap().ca, CaOrigin::Reused);

    // The same for the etcd CA, and nothing is written before the refusal.
    let etcd_key = paths::ETCD_CA.key_in(pki);
    let saved = std::fs::read(&etcd_key).unwrap();
    std::fs::remove_file(&etcd_key).unwrap();
    let server_before = std::fs::read(paths::ETCD_SERVER.cert_in(pki)).unwrap();
    let err = generate(&PkiSpec::new(), pki).unwrap_err();
    assert!(matches!(err, PkiError::HalfCa { .. }), "{err}");
    assert!(err.to_string().contains("etcd/ca.key"), "{err}");
    assert_eq!(
        std::fs::read(paths::ETCD_SERVER.cert_in(pki)).unwrap(),
        server_before
    );
    // Its key in the cluster CA's place is not a match either.
    std::fs::copy(&key, &etcd_key).unwrap();
    let err = generate(&PkiSpec::new(), pki).unwrap_err();
    assert!(matches!(err, PkiError::BadCa { .. }), "{err}");
    std::fs::write(&etcd_key, saved).unwrap();
    assert_eq!(
        generate(&PkiSpec::new(), pki).unwrap().etcd_ca,
        CaOrigin::Reused
    );
}

/// Writes the tree of kube-lite before the etcd CA: one CA, `etcd/ca.crt` its byte copy, no
/// `etcd/ca.key`, every certificate signed by the one CA.
fn old_layout(pki: &Path) {
    generate(&PkiSpec::new().node("w1"), pki).unwrap();
    let ca = CertificateAuthority::load(pki, Authority::Cluster)
        .unwrap()
        .unwrap();
    std::fs::remove_file(paths::ETCD_CA.key_in(pki)).unwrap();
    std::fs::write(paths::ETCD_CA.cert_in(pki), ca.cert_pem()).unwrap();
    for files in [
        paths::ETCD_SERVER,
        paths::ETCD_PEER,
        paths::ETCD_HEALTHCHECK_CLIENT,
        paths::ETCD_ADMIN,
        paths::APISERVER_ETCD_CLIENT,
    ] {
        let pem = std::fs::read(files.cert_in(pki)).unwrap();
        let leaf = inspect(&pem).unwrap();
        ca.issue(&LeafSpec {
            common_name: leaf.common_name,
            organization: leaf.organizations.into_iter().next(),
            usage: match (leaf.server_auth, leaf.client_auth) {
                (true, true) => Usage::ServerAndClient,
                (true, false) => Usage::Server,
                _ => Usage::Client,
            },
            sans: leaf.sans,
        })
        .unwrap()
        .write(pki, files)
        .unwrap();
    }
}

#[test]
fn the_old_layouts_copy_of_the_ca_becomes_an_etcd_ca_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    old_layout(pki);
    let cluster_before = std::fs::read(paths::CA.cert_in(pki)).unwrap();
    let admin_before = std::fs::read(paths::ADMIN.cert_in(pki)).unwrap();
    assert!(verify_issued_by(
        &std::fs::read(paths::ETCD_SERVER.cert_in(pki)).unwrap(),
        &cluster_before
    )
    .is_ok());

    let out = generate(&PkiSpec::new().node("w1"), pki).unwrap();
    assert_eq!(out.ca, CaOrigin::Reused);
    assert_eq!(out.etcd_ca, CaOrigin::Migrated);
    let etcd_ca = std::fs::read(paths::ETCD_CA.cert_in(pki)).unwrap();
    assert_ne!(etcd_ca, cluster_before);
    assert_eq!(inspect(&etcd_ca).unwrap().common_name, ETCD_CA_COMMON_NAME);
    assert!(paths::ETCD_CA.key_in(pki).exists());
    assert_eq!(mode(&paths::ETCD_CA.key_in(pki)), 0o600);
    assert_eq!(
        std::fs::read(paths::CA.cert_in(pki)).unwrap(),
        cluster_before
    );
    for files in [paths::ETCD_SERVER, paths::APISERVER_ETCD_CLIENT] {
        let pem = std::fs::read(files.cert_in(pki)).unwrap();
        verify_issued_by(&pem, &etcd_ca).unwrap_or_else(|e| panic!("{}: {e}", files.cert));
    }
    // The cluster CA's certificates issued before stay valid.
    verify_issued_by(&admin_before, &cluster_before).unwrap();
    // And the next run simply reuses the new etcd CA.
    let again = generate(&PkiSpec::new(), pki).unwrap();
    assert_eq!(again.etcd_ca, CaOrigin::Reused);
    assert_eq!(std::fs::read(paths::ETCD_CA.cert_in(pki)).unwrap(), etcd_ca);
}

#[test]
fn a_keyless_etcd_ca_that_is_not_the_old_copy_is_refused() {
    // kubeadm's external-CA set-up: etcd/ca.crt of some other CA, its key kept elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    let (other, _) = generated(&[]);
    generate(&PkiSpec::new(), pki).unwrap();
    std::fs::remove_file(paths::ETCD_CA.key_in(pki)).unwrap();
    let foreign = std::fs::read(paths::ETCD_CA.cert_in(other.path())).unwrap();
    std::fs::write(paths::ETCD_CA.cert_in(pki), &foreign).unwrap();
    let err = generate(&PkiSpec::new(), pki).unwrap_err();
    assert!(matches!(err, PkiError::HalfCa { .. }), "{err}");
    assert!(err.to_string().contains("etcd/ca.key"), "{err}");
    assert_eq!(std::fs::read(paths::ETCD_CA.cert_in(pki)).unwrap(), foreign);

    // Nor is the copy of ca.crt when ca.key is gone too (nothing proves it is the old layout).
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    old_layout(pki);
    std::fs::remove_file(paths::CA.key_in(pki)).unwrap();
    let err = generate(&PkiSpec::new(), pki).unwrap_err();
    assert!(matches!(err, PkiError::HalfCa { .. }), "{err}");
    assert!(!paths::ETCD_CA.key_in(pki).exists());
}

#[test]
fn a_bad_san_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let err = generate(&PkiSpec::new().san("etcd1:2379"), &out).unwrap_err();
    assert!(err.to_string().contains("etcd1:2379"), "{err}");
    assert!(!out.exists());
}

#[test]
fn issued_cert_debug_hides_the_key() {
    let ca = CertificateAuthority::create(Authority::Cluster).unwrap();
    let cert = ca
        .issue(&LeafSpec {
            common_name: "alice".into(),
            organization: None,
            usage: Usage::Client,
            sans: vec![],
        })
        .unwrap();
    assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
    assert!(ca
        .issue(&LeafSpec {
            common_name: "srv".into(),
            organization: None,
            usage: Usage::Server,
            sans: vec![],
        })
        .is_err());
}

// ---- real handshakes through kl-tls ----------------------------------------------------------

/// Serves mutual TLS with etcd's serving certificate, trusting the etcd CA only, as
/// `etcd-lite --client-cert-auth --trusted-ca-file=etcd/ca.crt` does, and answers every
/// connection with the CN of the client certificate it verified.
async fn serve(pki: &Path) -> SocketAddr {
    serve_as(pki, paths::ETCD_SERVER, Authority::Etcd).await
}

/// [`serve`] with another serving certificate and trusted CA.
async fn serve_as(pki: &Path, serving: paths::CertFiles, trust: Authority) -> SocketAddr {
    let tls = ServerTls::load(
        &serving.cert_in(pki),
        &serving.key_in(pki),
        Some(&trust.files().cert_in(pki)),
        true,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conns = Box::pin(kl_tls::incoming(listener, tls.rustls_config().unwrap()));
    tokio::spawn(async move {
        while let Some(Ok(mut stream)) = conns.next().await {
            let cn = stream
                .get_ref()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| kl_tls::identity_of(c.as_ref()))
                .map(|id| id.common_name)
                .unwrap_or_default();
            let mut ping = [0u8; 4];
            if stream.read_exact(&mut ping).await.is_ok() {
                let _ = stream.write_all(format!("{cn}\n").as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        }
    });
    addr
}

/// Dials `addr` as `server_name` with `client`, sends a ping and returns the server's answer.
async fn ping(addr: SocketAddr, client: &ClientTls, server_name: &str) -> std::io::Result<String> {
    let config = client
        .rustls_config()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        tls.write_all(b"ping").await?;
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await?;
        if answer.is_empty() {
            // A server that refused us after the handshake (TLS 1.3 checks the client
            // certificate after the client considers the handshake done) just hangs up.
            return Err(std::io::Error::other("connection closed without an answer"));
        }
        Ok(answer.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| std::io::Error::other("timed out"))?
}

fn client(ca: &Path, identity: Option<(&Path, paths::CertFiles)>) -> ClientTls {
    let files = identity.map(|(dir, f)| (f.cert_in(dir), f.key_in(dir)));
    ClientTls::load(ca, files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))).unwrap()
}

#[tokio::test]
async fn mutual_tls_works_with_the_generated_certs() {
    let (dir, _) = generated(&["etcd1"]);
    let pki = dir.path();
    let addr = serve(pki).await;
    let ca = paths::ETCD_CA.cert_in(pki);

    for (files, cn) in [
        (paths::ETCD_ADMIN, "etcd-admin"),
        (paths::APISERVER_ETCD_CLIENT, "kube-apiserver-etcd-client"),
        (
            paths::ETCD_HEALTHCHECK_CLIENT,
            "kube-etcd-healthcheck-client",
        ),
        (paths::ETCD_PEER, "kube-etcd-peer"),
    ] {
        let c = client(&ca, Some((pki, files)));
        for name in ["localhost", "127.0.0.1", "etcd1"] {
            assert_eq!(ping(addr, &c, name).await.unwrap(), cn, "{cn} via {name}");
        }
    }
    // A name the certificate was not issued for is refused by the client.
    let c = client(&ca, Some((pki, paths::ETCD_ADMIN)));
    assert!(ping(addr, &c, "etcd9").await.is_err());

    // The cluster CA does not vouch for etcd's serving certificate.
    let c = client(&paths::CA.cert_in(pki), Some((pki, paths::ETCD_ADMIN)));
    assert!(ping(addr, &c, "localhost").await.is_err());
}

#[tokio::test]
async fn the_store_refuses_the_cluster_cas_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    generate(&PkiSpec::new().node("worker1"), pki).unwrap();
    let addr = serve(pki).await;
    let etcd_ca = paths::ETCD_CA.cert_in(pki);
    // Valid certificates of the cluster, even system:masters ones: wrong CA for the store.
    for files in [
        paths::ADMIN.into(),
        paths::CONTROLLER_MANAGER.into(),
        paths::node_client("worker1"),
        paths::APISERVER_KUBELET_CLIENT.into(),
    ] {
        let tls =
            ClientTls::load(&etcd_ca, Some((&files.cert_in(pki), &files.key_in(pki)))).unwrap();
        let err = ping(addr, &tls, "localhost").await.unwrap_err();
        assert!(err.to_string().contains("alert"), "{}: {err}", files.cert);
    }
    let good = client(&etcd_ca, Some((pki, paths::APISERVER_ETCD_CLIENT)));
    assert_eq!(
        ping(addr, &good, "localhost").await.unwrap(),
        "kube-apiserver-etcd-client"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (dir, _) = generated(&[]);
    let (other, _) = generated(&[]);
    let pki = dir.path();
    let addr = serve(pki).await;

    // Trusts our CA (so the server verifies), but presents a certificate of a stranger CA.
    let stranger = client(
        &paths::ETCD_CA.cert_in(pki),
        Some((other.path(), paths::ETCD_ADMIN)),
    );
    let err = ping(addr, &stranger, "localhost").await.unwrap_err();
    // The refusal comes from the server (a TLS alert), not from the client's own checks.
    assert!(err.to_string().contains("alert"), "{err}");

    // No client certificate at all: refused as well (--client-cert-auth).
    let anonymous = client(&paths::ETCD_CA.cert_in(pki), None);
    assert!(ping(addr, &anonymous, "localhost").await.is_err());

    // And a client that trusts only the other CA refuses our server.
    let wrong_trust = client(
        &paths::ETCD_CA.cert_in(other.path()),
        Some((other.path(), paths::ETCD_ADMIN)),
    );
    assert!(ping(addr, &wrong_trust, "localhost").await.is_err());

    // The server is still fine for a legitimate client afterwards.
    let good = client(&paths::ETCD_CA.cert_in(pki), Some((pki, paths::ETCD_ADMIN)));
    assert_eq!(ping(addr, &good, "localhost").await.unwrap(), "etcd-admin");
}

// ---- the Kubernetes side: apiserver, components, nodes ---------------------------------------

/// What the certificate says, after checking that the CA its path calls for signed it.
fn summary(pki: &Path, files: impl Into<paths::NamedCertFiles>) -> CertSummary {
    let files = files.into();
    let pem = std::fs::read(files.cert_in(pki)).unwrap();
    let ca = std::fs::read(expected_authority(&files.cert).files().cert_in(pki)).unwrap();
    verify_issued_by(&pem, &ca).unwrap_or_else(|e| panic!("{}: {e}", files.cert));
    inspect(&pem).unwrap()
}

fn shown(sans: &[San]) -> Vec<String> {
    sans.iter().map(ToString::to_string).collect()
}

#[test]
fn kubernetes_certificates_carry_kubeadms_identities() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    let spec = PkiSpec::new()
        .san("master1")
        .node("worker1")
        .node("worker-2");
    let out = generate(&spec, pki).unwrap();

    // (files, CN, O, server?)
    let expect: Vec<(paths::NamedCertFiles, String, Option<&str>, bool)> = vec![
        (paths::APISERVER.into(), "kube-apiserver".into(), None, true),
        (
            paths::APISERVER_KUBELET_CLIENT.into(),
            "kube-apiserver-kubelet-client".into(),
            Some(SYSTEM_MASTERS),
            false,
        ),
        (
            paths::ADMIN.into(),
            ADMIN_USER.into(),
            Some(SYSTEM_MASTERS),
            false,
        ),
        (
            paths::CONTROLLER_MANAGER.into(),
            "system:kube-controller-manager".into(),
            None,
            false,
        ),
        (
            paths::SCHEDULER.into(),
            "system:kube-scheduler".into(),
            None,
            false,
        ),
        (
            paths::node_client("worker1"),
            "system:node:worker1".into(),
            Some(SYSTEM_NODES),
            false,
        ),
        (
            paths::node_client("worker-2"),
            "system:node:worker-2".into(),
            Some(SYSTEM_NODES),
            false,
        ),
        (
            paths::node_serving("worker1"),
            "system:node:worker1".into(),
            Some(SYSTEM_NODES),
            true,
        ),
    ];
    for (files, cn, org, server) in expect {
        let s = summary(pki, files.clone());
        let name = &files.cert;
        assert_eq!(s.common_name, cn, "{name}");
        assert_eq!(
            s.organizations,
            org.map(str::to_string).into_iter().collect::<Vec<_>>(),
            "{name}"
        );
        assert!(!s.is_ca, "{name}");
        assert_eq!(s.server_auth, server, "{name}");
        assert_eq!(s.client_auth, !server, "{name}");
        assert!(s.not_after > s.not_before, "{name}");
        if !server {
            assert!(s.sans.is_empty(), "{name}: {:?}", s.sans);
        }
        assert_eq!(mode(&files.key_in(pki)), 0o600, "{name}");
    }

    let apiserver = summary(pki, paths::APISERVER);
    assert_eq!(
        shown(&apiserver.sans),
        [
            "localhost",
            "127.0.0.1",
            "::1",
            "master1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "lb",
        ]
    );
    assert_eq!(apiserver.sans, out.apiserver_sans);
    // etcd's certificates do not claim the apiserver's names.
    assert_eq!(
        shown(&summary(pki, paths::ETCD_SERVER).sans),
        ["localhost", "127.0.0.1", "::1", "master1"]
    );
    assert_eq!(
        shown(&summary(pki, paths::node_serving("worker-2")).sans),
        ["localhost", "127.0.0.1", "::1", "worker-2"]
    );
}

#[test]
fn identities_match_the_files_and_chain_to_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    let out = generate(&PkiSpec::new().nodes(["w1", "w2", "w1"]), pki).unwrap();
    assert_eq!(
        out.ca_pem,
        std::fs::read_to_string(paths::CA.cert_in(pki)).unwrap()
    );
    let got: Vec<(&str, &str)> = out
        .identities
        .iter()
        .map(|i| (i.kubeconfig.as_str(), i.user.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("admin", "kubernetes-admin"),
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
            ("w1", "system:node:w1"),
            ("w2", "system:node:w2"),
        ],
        "one identity per kubeconfig, nodes deduplicated"
    );
    for id in &out.identities {
        let files = match id.kubeconfig.as_str() {
            "admin" => paths::ADMIN.into(),
            "controller-manager" => paths::CONTROLLER_MANAGER.into(),
            "scheduler" => paths::SCHEDULER.into(),
            node => paths::node_client(node),
        };
        assert_eq!(
            std::fs::read_to_string(files.cert_in(pki)).unwrap(),
            id.cert_pem
        );
        assert_eq!(
            std::fs::read_to_string(files.key_in(pki)).unwrap(),
            id.key_pem
        );
        verify_issued_by(id.cert_pem.as_bytes(), out.ca_pem.as_bytes()).unwrap();
        assert_eq!(
            inspect(id.cert_pem.as_bytes()).unwrap().common_name,
            id.user
        );
        assert!(!format!("{id:?}").contains("PRIVATE KEY"));
    }

    // A certificate of another CA does not verify.
    let (other, _) = generated(&[]);
    let foreign = std::fs::read(paths::ADMIN.cert_in(other.path())).unwrap();
    let err = verify_issued_by(&foreign, out.ca_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, PkiError::BadCert { .. }), "{err}");
    assert!(inspect(b"not a certificate").is_err());
}

#[test]
fn node_names_are_checked_before_anything_is_written() {
    for good in ["worker1", "w-1", "node.example.com", "0"] {
        check_node_name(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "",
        "Worker1",
        "w_1",
        "-w",
        "w-",
        "a..b",
        "../etc",
        "a/b",
        "admin",
        "scheduler",
        "controller-manager",
        "w 1",
    ] {
        assert!(check_node_name(bad).is_err(), "{bad:?} should be refused");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let err = generate(&PkiSpec::new().node("ok").node("admin"), &out).unwrap_err();
    assert!(matches!(err, PkiError::InvalidNodeName { .. }), "{err}");
    assert!(err.to_string().contains("\"admin\""), "{err}");
    assert!(!out.exists());
}

#[test]
fn regenerating_keeps_nodes_not_named_again() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    generate(&PkiSpec::new().node("w1"), pki).unwrap();
    let w1 = std::fs::read(paths::node_client("w1").cert_in(pki)).unwrap();
    let out = generate(&PkiSpec::new().node("w2"), pki).unwrap();
    assert_eq!(out.ca, CaOrigin::Reused);
    assert_eq!(
        std::fs::read(paths::node_client("w1").cert_in(pki)).unwrap(),
        w1
    );
    assert!(paths::node_serving("w2").cert_in(pki).exists());
    assert_eq!(out.identities.len(), 4);
}

#[tokio::test]
async fn the_apiserver_certificate_serves_every_name_clients_dial() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    generate(&PkiSpec::new().node("w1"), pki).unwrap();
    let addr = serve_as(pki, paths::APISERVER, Authority::Cluster).await;
    let ca = paths::CA.cert_in(pki);
    let admin = client(&ca, Some((pki, paths::ADMIN)));
    for name in ["127.0.0.1", "localhost", "lb", "kubernetes.default"] {
        assert_eq!(
            ping(addr, &admin, name).await.unwrap(),
            "kubernetes-admin",
            "{name}"
        );
    }
    assert!(ping(addr, &admin, "etcd1").await.is_err());
    let node = paths::node_client("w1");
    let w1 = ClientTls::load(&ca, Some((&node.cert_in(pki), &node.key_in(pki)))).unwrap();
    assert_eq!(ping(addr, &w1, "lb").await.unwrap(), "system:node:w1");
}
