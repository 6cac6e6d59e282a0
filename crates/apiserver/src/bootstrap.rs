//! What an apiserver does for the cluster at start and while it lives, as kube-apiserver's
//! post-start hooks do:
//!
//! * creates the system namespaces (`default`, `kube-system`, `kube-public`,
//!   `kube-node-lease`) if missing;
//! * keeps its identity Lease `kube-system/apiserver-<hash of its address>` (label
//!   `apiserver.kubernetes.io/identity: kube-apiserver`, holderIdentity = its
//!   `<advertise-address>:<secure-port>`, leaseDurationSeconds 3600) renewed every
//!   [`RENEW_INTERVAL`], and deletes other apiservers' identity Leases once expired, so that
//!   `kubectl-lite cluster-info` lists the live ones.

use std::time::{Duration, SystemTime};

use kl_api::{Lease, LeaseSpec, Namespace, Object, ObjectMeta, Resource};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::strategy::{self, UpdateMode};

/// Upstream's identity lease renew interval.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// Upstream's identity lease duration.
pub const LEASE_DURATION_SECONDS: i32 = 3600;
/// The label every identity Lease carries.
pub const IDENTITY_LABEL: (&str, &str) = ("apiserver.kubernetes.io/identity", "kube-apiserver");

/// The identity Lease's name for a server id (`apiserver-` + 16 hex digits of its SHA-256).
pub fn identity_lease_name(server_id: &str) -> String {
    let digest = Sha256::digest(server_id.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("apiserver-{hex}")
}

/// Creates the system namespaces, retrying until done or stopped. Returns false if stopped.
pub async fn ensure_namespaces(registry: &Registry, stop: &mut watch::Receiver<bool>) -> bool {
    for ns in strategy::SYSTEM_NAMESPACES {
        loop {
            let mut o = Namespace {
                metadata: Some(ObjectMeta {
                    name: ns.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into_object();
            match registry.create_object(&mut o, None).await {
                Ok(()) => {
                    tracing::info!(namespace = ns, "created system namespace");
                    break;
                }
                Err(ApiError::AlreadyExists { .. }) => break,
                Err(e) => {
                    tracing::warn!(namespace = ns, error = %e, "creating system namespace failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = crate::run::stopped(stop) => return false,
                    }
                }
            }
        }
    }
    true
}

fn identity_lease(server_id: &str, name: &str, now: SystemTime) -> Object {
    let now = strategy::rfc3339_micro(now);
    Lease {
        metadata: Some(ObjectMeta {
            name: name.to_string(),
            namespace: "kube-system".into(),
            labels: [(IDENTITY_LABEL.0.to_string(), IDENTITY_LABEL.1.to_string())].into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: server_id.to_string(),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            acquire_time: now.clone(),
            renew_time: now,
            ..Default::default()
        }),
        ..Default::default()
    }
    .into_object()
}

/// Creates or renews this apiserver's identity Lease once.
pub async fn renew_identity(registry: &Registry, server_id: &str) -> Result<(), ApiError> {
    let name = identity_lease_name(server_id);
    let now = SystemTime::now();
    match registry.get("leases", "kube-system", &name).await {
        Err(ApiError::NotFound { .. }) => {
            let mut o = identity_lease(server_id, &name, now);
            registry.create_object(&mut o, None).await
        }
        Err(e) => Err(e),
        Ok(Object::Lease(mut l)) => {
            let spec = l.spec.get_or_insert_with(Default::default);
            spec.holder_identity = server_id.to_string();
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
            spec.renew_time = strategy::rfc3339_micro(now);
            l.meta_mut().resource_version.clear();
            registry
                .update(Some(l.into_object().into_typed()), None, UpdateMode::Main)
                .await
                .map(|_| ())
        }
        Ok(_) => Err(ApiError::Internal(format!("{name} is not a Lease"))),
    }
}

/// Whether an identity Lease expired (renewTime + duration in the past).
pub fn expired(lease: &Object, now: SystemTime) -> bool {
    let Object::Lease(l) = lease else {
        return false;
    };
    let spec = l.spec.clone().unwrap_or_default();
    let Ok(renewed) = time::OffsetDateTime::parse(
        &spec.renew_time,
        &time::format_description::well_known::Rfc3339,
    ) else {
        return false;
    };
    let duration = i64::from(
        spec.lease_duration_seconds
            .unwrap_or(LEASE_DURATION_SECONDS),
    );
    let now = time::OffsetDateTime::from(now);
    renewed + time::Duration::seconds(duration) < now
}

/// Deletes expired identity Leases of other apiservers (upstream's apiserver lease GC).
async fn collect_expired(registry: &Registry) {
    let req = kl_api::ListRequest {
        resource: "leases".into(),
        namespace: "kube-system".into(),
        label_selector: format!("{}={}", IDENTITY_LABEL.0, IDENTITY_LABEL.1),
        ..Default::default()
    };
    let Ok((_, page)) = registry.list(&req).await else {
        return;
    };
    let now = SystemTime::now();
    for l in page.items.iter().filter(|l| expired(l, now)) {
        let del = kl_api::DeleteRequest {
            resource: "leases".into(),
            namespace: "kube-system".into(),
            name: l.name().to_string(),
            preconditions: Some(kl_api::Preconditions {
                resource_version: l
                    .metadata()
                    .map(|m| m.resource_version.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        };
        if registry.delete(&del).await.is_ok() {
            tracing::info!(
                lease = l.name(),
                "deleted an expired apiserver identity lease"
            );
        }
    }
}

/// The start-up work then the identity Lease loop; `ready` is called once the namespaces
/// exist.
pub async fn run(
    registry: Registry,
    server_id: String,
    ready: impl FnOnce(),
    mut stop: watch::Receiver<bool>,
) {
    if !ensure_namespaces(&registry, &mut stop).await {
        return;
    }
    ready();
    let mut round: u64 = 0;
    loop {
        if let Err(e) = renew_identity(&registry, &server_id).await {
            tracing::warn!(error = %e, lease = %identity_lease_name(&server_id), "renewing the identity lease failed");
        }
        if round.is_multiple_of(30) {
            collect_expired(&registry).await;
        }
        round += 1;
        tokio::select! {
            _ = tokio::time::sleep(RENEW_INTERVAL) => {}
            _ = crate::run::stopped(&mut stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_lease_shape() {
        let name = identity_lease_name("127.0.0.1:6443");
        assert!(name.starts_with("apiserver-") && name.len() == 26, "{name}");
        assert_ne!(name, identity_lease_name("127.0.0.1:6444"));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let l = identity_lease("127.0.0.1:6443", &name, now);
        let Object::Lease(lease) = &l else {
            unreachable!()
        };
        let spec = lease.spec.clone().unwrap();
        assert_eq!(spec.holder_identity, "127.0.0.1:6443");
        assert_eq!(spec.lease_duration_seconds, Some(3600));
        assert_eq!(
            lease
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .get(IDENTITY_LABEL.0)
                .map(String::as_str),
            Some("kube-apiserver")
        );
        assert_eq!(l.kind(), kl_api::Kind::Lease);
        assert!(!expired(&l, now + Duration::from_secs(3599)));
        assert!(expired(&l, now + Duration::from_secs(3601)));
    }
}
