//! Fencing tokens (api.proto's FencingToken; kube-lite's addition to Kubernetes): a write that
//! carries one is refused with `FAILED_PRECONDITION`, reason `Fenced`, unless the named Lease
//! is still held by the token's holder at the token's transition count. The check reads the
//! Lease and returns its key's mod_revision; the write's Txn then also compares that
//! mod_revision, so a takeover between the check and the write fails the write too
//! (`registry.rs` re-checks once the Lease moved: a renewal by the holder moves it as well).

use kl_api::{FencingToken, Kind, Object};

use crate::error::{ApiError, ApiResult};
use crate::storage::{self, FenceGuard, Store};

/// Why a token does not match the Lease as stored; None when it does.
pub fn stale_reason(token: &FencingToken, lease: &Object) -> Option<String> {
    let Object::Lease(l) = lease else {
        return Some("the fencing object is not a Lease".into());
    };
    let spec = l.spec.clone().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    if transitions != token.lease_transitions {
        return Some(format!(
            "fencing token is stale: lease {}/{} is at leaseTransitions {transitions}, the token carries {}",
            token.lease_namespace, token.lease_name, token.lease_transitions
        ));
    }
    if spec.holder_identity != token.holder_identity {
        return Some(format!(
            "fencing token is stale: lease {}/{} is held by {:?}, not {:?}",
            token.lease_namespace, token.lease_name, spec.holder_identity, token.holder_identity
        ));
    }
    None
}

/// Checks `token` against the stored Lease; the guard to put in the write's Txn.
pub async fn check(store: &Store, token: &FencingToken) -> ApiResult<FenceGuard> {
    let ns = if token.lease_namespace.is_empty() {
        "default"
    } else {
        token.lease_namespace.as_str()
    };
    if token.lease_name.is_empty() {
        return Err(ApiError::BadRequest(
            "fencing: lease_name is required".into(),
        ));
    }
    let key = store.key(Kind::Lease, ns, &token.lease_name);
    let Some((value, rev)) = store.get_raw(Kind::Lease.plural(), &key).await? else {
        return Err(ApiError::Fenced(format!(
            "fencing token is stale: lease {ns}/{} does not exist",
            token.lease_name
        )));
    };
    let lease = storage::decode(Kind::Lease, &value, rev)
        .map_err(|e| ApiError::Internal(format!("decoding {key}: {e}")))?;
    if let Some(why) = stale_reason(token, &lease) {
        return Err(ApiError::Fenced(why));
    }
    Ok(FenceGuard {
        key,
        mod_revision: rev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_api::{Lease, LeaseSpec};

    fn lease(holder: &str, transitions: Option<i32>) -> Object {
        Object::Lease(Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.into(),
                lease_transitions: transitions,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn token(holder: &str, transitions: i32) -> FencingToken {
        FencingToken {
            lease_namespace: "kube-system".into(),
            lease_name: "kube-scheduler".into(),
            lease_transitions: transitions,
            holder_identity: holder.into(),
        }
    }

    #[test]
    fn a_token_matches_only_the_current_holder_and_term() {
        assert_eq!(stale_reason(&token("a", 3), &lease("a", Some(3))), None);
        // An unset leaseTransitions counts as 0.
        assert_eq!(stale_reason(&token("a", 0), &lease("a", None)), None);
        let why = stale_reason(&token("a", 2), &lease("a", Some(3))).unwrap();
        assert!(why.contains("leaseTransitions 3"), "{why}");
        let why = stale_reason(&token("a", 3), &lease("b", Some(3))).unwrap();
        assert!(why.contains("held by \"b\""), "{why}");
        assert!(stale_reason(&token("a", 0), &Object::Pod(Default::default())).is_some());
    }
}
