//! The apiserver's Create, Update and UpdateStatus, from the request body to the bytes it would
//! write to etcd, without etcd.
//!
//! Input: one selector byte, then request bytes.
//! * selector % 3 == 0, Create: the rest is a `kl_api::CreateRequest` as tonic hands it to prost.
//! * 1 Update, 2 UpdateStatus: two little-endian bytes N, then N bytes of a `CreateRequest` for
//!   the object already stored (it goes through the create path first, as it once did), then
//!   the `kl_api::UpdateRequest`. When the stored object is not valid (or N overruns), the
//!   update's own object, created first, is the stored one.
//!
//! Each step is the function `crates/apiserver` itself calls, in its order:
//! * service.rs `serve`: `MAX_REQUEST_BYTES` on `encoded_len`; `object_target` (private: its
//!   body, `Object::from_typed` + kind/namespace/name, is repeated here) feeding
//!   `authz::authorize` and `authz::denial_message` (private `Target::attributes` repeated) for
//!   a node, the scheduler, the controller-manager and an unknown user under Node,RBAC;
//! * registry.rs `create` / `create_object`: `Object::from_typed`, `kl_api::set_defaults`, the
//!   resourceVersion check, `strategy::generate_name`, `strategy::prepare_for_create`,
//!   `kl_api::validate`, `storage::object_key`, `storage::encode`;
//! * registry.rs `update`: `Object::from_typed`, `set_defaults`, `strategy::has_status`, the
//!   name check, `parse_rv` (private, repeated), `storage::decode` of the stored JSON,
//!   `strategy::prepare_for_update`, `kl_api::validate_update`, `strategy::remove_after_update`,
//!   `strategy::same_content`, `storage::encode`; `fencing::stale_reason` against the stored
//!   object when the request carries a fencing token;
//! * every refusal as the client gets it: `ApiError::into_status` and `Status::into_http`.
//!
//! Not covered: etcd reads and writes (the compare-and-swap retry loop), the namespace
//! lifecycle check, TLS and the per-request limits other than the size.
//!
//! `KL_FUZZ_DEBUG=1` prints each input's outcome (for reading a crash or checking a seed).
//!
//! Beyond "never panics": what `storage::encode` writes must `storage::decode` back to the same
//! object, or the apiserver would store objects it can never read again.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use apiserver::authz::{self, Attributes, Mode, Verb};
use apiserver::service::MAX_REQUEST_BYTES;
use apiserver::storage;
use apiserver::strategy::{self, UpdateMode};
use apiserver::ApiError;
use kl_api::{
    set_defaults, validate, validate_update, CreateRequest, FencingToken, Object, TypedObject,
    UpdateRequest,
};
use kl_tls::PeerIdentity;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// A fixed clock: the same input takes the same path.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// The etcd mod_revision the stored object was read at.
const STORED_REVISION: i64 = 7;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(req) = CreateRequest::decode(rest) {
                if admitted(req.encoded_len(), &req.object, Verb::Create) {
                    report("create", create(req.object, req.fencing.as_ref()));
                }
            }
        }
        n => {
            let mode = if n == 1 {
                UpdateMode::Main
            } else {
                UpdateMode::Status
            };
            let (stored, body) = split_stored(rest);
            if let Ok(req) = UpdateRequest::decode(body) {
                if admitted(req.encoded_len(), &req.object, Verb::Update) {
                    report("update", update(stored, req, mode));
                }
            }
        }
    }
});

/// The stored object's `CreateRequest` bytes (maybe none) and the update's bytes.
fn split_stored(rest: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return (None, rest);
    };
    let len = usize::from(u16::from_le_bytes(*len));
    if len > rest.len() {
        return (None, rest);
    }
    let (stored, body) = rest.split_at(len);
    (Some(stored), body)
}

/// service.rs `serve` before the verb: the size limit, then authorization of the target
/// `object_target` names. False only for an oversized request: the verb then runs as for a
/// system:masters client, whom every mode allows (the other identities' decisions are made,
/// and their denial messages formatted, then dropped).
fn admitted(size: usize, object: &Option<TypedObject>, verb: Verb) -> bool {
    if size > MAX_REQUEST_BYTES {
        refuse(ApiError::RequestTooLarge(format!("{size} bytes")));
        return false;
    }
    // service.rs `object_target` (private there).
    let (resource, namespace, name) = match object.clone().and_then(Object::from_typed) {
        Some(o) => (
            o.kind().plural().to_string(),
            o.namespace().to_string(),
            o.name().to_string(),
        ),
        None => Default::default(),
    };
    let status_resource = format!("{resource}/status");
    for resource in [resource.as_str(), status_resource.as_str()] {
        // service.rs `Target::attributes` (private there), for the verb's target.
        let a = Attributes {
            verb,
            resource,
            namespace: &namespace,
            name: &name,
            field_selector: "",
        };
        for who in identities() {
            if let authz::Decision::Deny(why) = authz::authorize(Mode::NodeRbac, &who, &a) {
                let _ = authz::denial_message(&who, &a, &why);
            }
        }
    }
    true
}

fn identities() -> [PeerIdentity; 4] {
    let id = |cn: &str, orgs: &[&str]| PeerIdentity {
        common_name: cn.to_string(),
        organizations: orgs.iter().map(|o| o.to_string()).collect(),
    };
    [
        id(
            &format!("{}worker1", kl_pki::NODE_USER_PREFIX),
            &[kl_pki::SYSTEM_NODES],
        ),
        id(kl_pki::SCHEDULER_USER, &[]),
        id(kl_pki::CONTROLLER_MANAGER_USER, &[]),
        id("mallory", &["developers"]),
    ]
}

fn report(verb: &str, outcome: Result<Object, ApiError>) {
    match outcome {
        Ok(o) => {
            if debug() {
                eprintln!("{verb}: stored {} {:?}", o.kind(), o.name());
            }
        }
        Err(e) => {
            if debug() {
                eprintln!("{verb}: refused: {e}");
            }
            refuse(e);
        }
    }
}

fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("KL_FUZZ_DEBUG").is_some())
}

/// What the client sees of a refusal: the gRPC status, as HTTP/2 headers.
fn refuse(e: ApiError) {
    let _ = e.into_status().into_http::<()>();
}

/// registry.rs `create` + `create_object`, storage replaced by `storage::encode`: the object
/// as it would be stored, read back as a get would read it.
fn create(object: Option<TypedObject>, fencing: Option<&FencingToken>) -> Result<Object, ApiError> {
    let mut obj = object
        .and_then(Object::from_typed)
        .ok_or_else(|| ApiError::BadRequest("the request carries no object".into()))?;
    set_defaults(&mut obj);
    let kind = obj.kind();
    let meta = obj.metadata().cloned().unwrap_or_default();
    if !meta.resource_version.is_empty() {
        return Err(ApiError::BadRequest(
            "resourceVersion should not be set on objects to be created".into(),
        ));
    }
    let mut o = obj.clone();
    if meta.name.is_empty() && !meta.generate_name.is_empty() {
        o.metadata_mut().name = strategy::generate_name(&meta.generate_name);
    }
    strategy::prepare_for_create(&mut o, now());
    if let Err(errs) = validate(&o) {
        let name = if o.name().is_empty() {
            meta.generate_name.clone()
        } else {
            o.name().to_string()
        };
        return Err(ApiError::invalid(kind, &name, errs));
    }
    let _key = storage::object_key("/registry", kind, o.namespace(), o.name());
    if let Some(token) = fencing {
        let _ = fencing_check(token, &o);
    }
    Ok(store_and_read(&o))
}

/// `storage::encode` then `storage::decode`, as a write and a later read do.
fn store_and_read(o: &Object) -> Object {
    let json = storage::encode(o);
    match storage::decode(o.kind(), &json, STORED_REVISION) {
        Ok(back) => {
            let mut expected = o.clone();
            expected.set_type_meta();
            expected.metadata_mut().resource_version = STORED_REVISION.to_string();
            assert_eq!(back, expected, "the stored object reads back different");
            back
        }
        Err(e) => panic!(
            "the apiserver stores JSON it cannot read back: {e}\n{}",
            String::from_utf8_lossy(&json)
        ),
    }
}

/// `fencing::stale_reason` with `lease` standing for the Lease the token names.
fn fencing_check(token: &FencingToken, lease: &Object) -> Result<(), ApiError> {
    match apiserver::fencing::stale_reason(token, lease) {
        None => Ok(()),
        Some(why) => Err(ApiError::Fenced(why)),
    }
}

/// registry.rs `update` against `stored` (a `CreateRequest` that created the stored object),
/// storage replaced as in [`create`].
fn update(stored: Option<&[u8]>, req: UpdateRequest, mode: UpdateMode) -> Result<Object, ApiError> {
    let mut new = req
        .object
        .clone()
        .and_then(Object::from_typed)
        .ok_or_else(|| ApiError::BadRequest("the request carries no object".into()))?;
    set_defaults(&mut new);
    let kind = new.kind();
    if mode == UpdateMode::Status && !strategy::has_status(kind) {
        return Err(ApiError::BadRequest(format!(
            "{} have no status subresource",
            kind.plural()
        )));
    }
    let name = new.name().to_string();
    if name.is_empty() {
        return Err(ApiError::BadRequest("metadata.name is required".into()));
    }
    let rv = new
        .metadata()
        .map(|m| m.resource_version.clone())
        .unwrap_or_default();
    let pinned = parse_rv(&rv)?;

    // The stored object: read by key, so of the same kind, namespace and name.
    let old = stored
        .and_then(|b| CreateRequest::decode(b).ok())
        .and_then(|r| r.object)
        .and_then(Object::from_typed)
        .filter(|o| o.kind() == kind)
        .and_then(|mut o| {
            o.metadata_mut().name = name.clone();
            o.metadata_mut().namespace = new.namespace().to_string();
            o.metadata_mut().resource_version.clear();
            create(Some(o.into_typed()), None).ok()
        });
    let old = match old {
        Some(o) => o,
        None => {
            let mut first = new.clone();
            first.metadata_mut().resource_version.clear();
            match create(Some(first.into_typed()), None) {
                Ok(o) => o,
                // Nothing valid to update: the real apiserver answers NotFound.
                Err(_) => return Err(ApiError::not_found(kind, &name)),
            }
        }
    };
    if pinned.is_some_and(|p| p != STORED_REVISION) {
        return Err(ApiError::modified(kind, &name));
    }
    if let Some(token) = req.fencing.as_ref() {
        let _ = fencing_check(token, &old);
    }
    let mut next = strategy::prepare_for_update(&new, &old, mode);
    next.metadata_mut().resource_version = STORED_REVISION.to_string();
    validate_update(&next, &old).map_err(|errs| ApiError::invalid(kind, &name, errs))?;
    if strategy::remove_after_update(&next) {
        return Ok(next);
    }
    if strategy::same_content(&next, &old) {
        return Ok(old);
    }
    Ok(store_and_read(&next))
}

/// registry.rs `parse_rv` (private there).
fn parse_rv(rv: &str) -> Result<Option<i64>, ApiError> {
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))
}
