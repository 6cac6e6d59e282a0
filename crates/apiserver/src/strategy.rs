//! Per-kind rules of the verbs, as kube-apiserver's registry "strategies" hold them: what the
//! server sets on create, what an update may change, when a delete is graceful, what a bind
//! does. Pure functions of (object, request, clock) so that each decision is unit-tested
//! without etcd; `registry.rs` applies them inside its compare-and-swap loops.

use std::time::{Duration, SystemTime};

use kl_api::{Kind, Object, Pod, PodCondition, PodStatus};
use rand::Rng;

use crate::error::ApiError;

/// Namespaces kube-apiserver creates at start and refuses to delete.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The alphabet of generated names (Kubernetes' `utilrand.String`: no vowels, no confusable
/// characters, so that names never spell words).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` + 5 random characters.
pub fn generate_name(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| NAME_ALPHABET[rng.gen_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// A random (version 4) UUID, as Kubernetes assigns `metadata.uid`.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 3339 in UTC with whole seconds (`metav1.Time`'s JSON form).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let dt =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    dt.format(&f).unwrap_or_default()
}

/// RFC 3339 in UTC with microseconds (`metav1.MicroTime`, a Lease's renewTime).
pub fn rfc3339_micro(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(d.as_nanos() as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    dt.format(&f).unwrap_or_default()
}

/// Kinds with a status subresource: Update leaves their status alone, UpdateStatus changes
/// only it.
pub fn has_status(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Pod | Kind::Node | Kind::ReplicaSet | Kind::Namespace
    )
}

/// Kinds whose metadata.generation counts spec changes.
fn tracks_generation(kind: Kind) -> bool {
    matches!(kind, Kind::Pod | Kind::ReplicaSet)
}

fn spec_json(o: &Object) -> serde_json::Value {
    let v = serde_json::to_value(o).unwrap_or_default();
    v.get("spec").cloned().unwrap_or_default()
}

fn status_json(o: &Object) -> serde_json::Value {
    let v = serde_json::to_value(o).unwrap_or_default();
    v.get("status").cloned().unwrap_or_default()
}

/// Replaces `dst`'s status with `src`'s (kinds without status: nothing).
fn copy_status(dst: &mut Object, src: &Object) {
    match (dst, src) {
        (Object::Pod(d), Object::Pod(s)) => d.status = s.status.clone(),
        (Object::Node(d), Object::Node(s)) => d.status = s.status.clone(),
        (Object::ReplicaSet(d), Object::ReplicaSet(s)) => d.status = s.status,
        (Object::Namespace(d), Object::Namespace(s)) => d.status = s.status.clone(),
        _ => {}
    }
}

/// What the server sets on a new object (after defaulting, before validation).
pub fn prepare_for_create(obj: &mut Object, now: SystemTime) {
    let meta = obj.metadata_mut();
    meta.uid = new_uid();
    meta.creation_timestamp = rfc3339(now);
    meta.generation = 1;
    meta.resource_version.clear();
    meta.deletion_timestamp.clear();
    meta.deletion_grace_period_seconds = None;
    match obj {
        // As upstream: a new pod is Pending whatever status it was sent with.
        Object::Pod(p) => {
            p.status = Some(PodStatus {
                phase: "Pending".into(),
                ..Default::default()
            })
        }
        Object::ReplicaSet(rs) => rs.status = None,
        Object::Namespace(ns) => {
            ns.status = Some(kl_api::NamespaceStatus {
                phase: "Active".into(),
            })
        }
        // Nodes register with their status (the kubelet sends capacity at create).
        _ => {}
    }
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// Update: everything but status and the server-owned metadata.
    Main,
    /// UpdateStatus: status only.
    Status,
}

/// The object to store for an update of `old` with `new`: server-owned fields kept, status or
/// everything-but-status taken from `new` per `mode`, generation bumped on a spec change.
pub fn prepare_for_update(new: &Object, old: &Object, mode: UpdateMode) -> Object {
    let kind = old.kind();
    let mut next = match mode {
        UpdateMode::Main => {
            let mut next = new.clone();
            if has_status(kind) {
                copy_status(&mut next, old);
            }
            next
        }
        UpdateMode::Status => {
            let mut next = old.clone();
            copy_status(&mut next, new);
            next
        }
    };
    let old_meta = old.metadata().cloned().unwrap_or_default();
    let meta = next.metadata_mut();
    // Empty means "not sent": keep the stored value. A different value is refused by
    // validate_update.
    if meta.uid.is_empty() {
        meta.uid = old_meta.uid.clone();
    }
    if meta.creation_timestamp.is_empty() {
        meta.creation_timestamp = old_meta.creation_timestamp.clone();
    }
    meta.deletion_timestamp = old_meta.deletion_timestamp.clone();
    meta.deletion_grace_period_seconds = old_meta.deletion_grace_period_seconds;
    meta.generation = old_meta.generation;
    if tracks_generation(kind) && spec_json(&next) != spec_json(old) {
        next.metadata_mut().generation = old_meta.generation + 1;
    }
    next
}

/// Whether two objects differ in anything but resourceVersion (an update that changes nothing
/// is not written, as upstream).
pub fn same_content(a: &Object, b: &Object) -> bool {
    crate::storage::encode(a) == crate::storage::encode(b)
}

/// Whether a status update changed the status (for tests and logs).
pub fn status_changed(a: &Object, b: &Object) -> bool {
    status_json(a) != status_json(b)
}

/// What a delete request does to an object.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteAction {
    /// Remove the key now.
    Remove,
    /// Keep the object, stored as this (deletionTimestamp and grace set).
    Mark(Box<Object>),
    /// Keep the object as it is (a deletion is already pending with a shorter grace).
    Unchanged,
}

fn pod_of(o: &Object) -> Option<&Pod> {
    match o {
        Object::Pod(p) => Some(p),
        _ => None,
    }
}

/// Whether a pod is bound to a node and not yet terminal: only such pods are deleted
/// gracefully (upstream deletes unscheduled and finished pods at once).
fn pod_runs(p: &Pod) -> bool {
    let bound = p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
    let phase = p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    bound && phase != "Succeeded" && phase != "Failed"
}

/// kube-apiserver's `BeforeDelete` plus finalizer handling: graceful deletion for running pods,
/// deletionTimestamp first when finalizers remain, removal otherwise.
pub fn decide_delete(obj: &Object, grace_request: Option<i64>, now: SystemTime) -> DeleteAction {
    let meta = obj.metadata().cloned().unwrap_or_default();
    let pending = !meta.deletion_timestamp.is_empty();
    let grace = match pod_of(obj) {
        Some(p) if pod_runs(p) => grace_request
            .filter(|g| *g >= 0)
            .or(p
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0),
        _ => 0,
    };
    let mark = |grace: i64, bump: bool| {
        let mut o = obj.clone();
        let m = o.metadata_mut();
        m.deletion_timestamp = rfc3339(now + Duration::from_secs(grace as u64));
        m.deletion_grace_period_seconds = Some(grace);
        if bump {
            // As upstream: a graceful deletion is a change of desired state.
            m.generation += 1;
        }
        DeleteAction::Mark(Box::new(o))
    };
    if grace > 0 {
        if !pending {
            return mark(grace, true);
        }
        // Only a shorter grace changes a pending deletion.
        return match meta.deletion_grace_period_seconds {
            Some(current) if grace < current => mark(grace, false),
            _ => DeleteAction::Unchanged,
        };
    }
    if meta.finalizers.is_empty() {
        return DeleteAction::Remove;
    }
    // Finalizers hold the object: mark it once (grace 0), then wait for them.
    match (pending, meta.deletion_grace_period_seconds) {
        (true, Some(0)) => DeleteAction::Unchanged,
        _ => mark(0, !pending),
    }
}

/// Whether an updated object must now be removed: it is being deleted, its last finalizer is
/// gone, and (pods) no graceful termination is still running.
pub fn remove_after_update(obj: &Object) -> bool {
    let Some(meta) = obj.metadata() else {
        return false;
    };
    if meta.deletion_timestamp.is_empty() || !meta.finalizers.is_empty() {
        return false;
    }
    match pod_of(obj) {
        Some(p) => !pod_runs(p) || meta.deletion_grace_period_seconds.unwrap_or(0) == 0,
        None => true,
    }
}

/// The pods/binding subresource: sets spec.nodeName if unset and records PodScheduled=True.
pub fn bind(pod: &mut Pod, node: &str, uid: &str, now: SystemTime) -> Result<(), ApiError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let name = meta.name.as_str();
    if !uid.is_empty() && uid != meta.uid {
        return Err(ApiError::conflict(
            "pods/binding",
            name,
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta.uid
            ),
        ));
    }
    if !meta.deletion_timestamp.is_empty() {
        return Err(ApiError::conflict(
            "pods/binding",
            name,
            format!("pod {name} is being deleted, cannot be assigned to a host"),
        ));
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    if !spec.node_name.is_empty() {
        return Err(ApiError::conflict(
            "pods/binding",
            name,
            format!(
                "pod {name} is already assigned to node {:?}",
                spec.node_name
            ),
        ));
    }
    spec.node_name = node.to_string();
    let status = pod.status.get_or_insert_with(Default::default);
    let cond = PodCondition {
        r#type: "PodScheduled".into(),
        status: "True".into(),
        last_transition_time: rfc3339(now),
        ..Default::default()
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.r#type == "PodScheduled")
    {
        Some(c) => *c = cond,
        None => status.conditions.push(cond),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kl_api::{PodSpec, Resource};

    fn pod(node: &str, finalizers: &[&str]) -> Object {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: node.into(),
                termination_grace_period_seconds: Some(30),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Running".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = p.meta_mut();
        m.name = "p".into();
        m.generation = 1;
        m.finalizers = finalizers.iter().map(|s| s.to_string()).collect();
        p.into_object()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn marked(a: DeleteAction) -> kl_api::ObjectMeta {
        match a {
            DeleteAction::Mark(o) => o.metadata().cloned().unwrap(),
            other => panic!("expected Mark, got {other:?}"),
        }
    }

    #[test]
    fn times_and_ids() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339_micro(at(1) + Duration::from_micros(5)),
            "1970-01-01T00:00:01.000005Z"
        );
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n[4..].bytes().all(|c| NAME_ALPHABET.contains(&c)));
    }

    #[test]
    fn bound_pods_are_deleted_gracefully_then_removed_on_grace_zero() {
        let p = pod("node-a", &[]);
        let m = marked(decide_delete(&p, None, at(100)));
        assert_eq!(m.deletion_timestamp, rfc3339(at(130)));
        assert_eq!(m.deletion_grace_period_seconds, Some(30));
        assert_eq!(m.generation, 2);
        let mut pending = p.clone();
        *pending.metadata_mut() = m;
        // The same or a longer grace changes nothing; a shorter one shortens it.
        assert_eq!(
            decide_delete(&pending, None, at(101)),
            DeleteAction::Unchanged
        );
        let m = marked(decide_delete(&pending, Some(5), at(101)));
        assert_eq!(m.deletion_grace_period_seconds, Some(5));
        assert_eq!(m.deletion_timestamp, rfc3339(at(106)));
        // The kubelet's confirmation.
        assert_eq!(
            decide_delete(&pending, Some(0), at(102)),
            DeleteAction::Remove
        );
        assert!(!remove_after_update(&pending));
    }

    #[test]
    fn unbound_and_finished_pods_and_other_kinds_go_at_once() {
        assert_eq!(
            decide_delete(&pod("", &[]), None, at(1)),
            DeleteAction::Remove
        );
        let mut done = pod("n", &[]);
        if let Object::Pod(p) = &mut done {
            p.status.as_mut().unwrap().phase = "Succeeded".into();
        }
        assert_eq!(decide_delete(&done, None, at(1)), DeleteAction::Remove);
        let ns = kl_api::Namespace::default().into_object();
        assert_eq!(decide_delete(&ns, Some(30), at(1)), DeleteAction::Remove);
    }

    #[test]
    fn finalizers_hold_the_object() {
        let held = pod("", &["example.com/hold"]);
        let m = marked(decide_delete(&held, None, at(50)));
        assert_eq!(m.deletion_timestamp, rfc3339(at(50)));
        assert_eq!(m.deletion_grace_period_seconds, Some(0));
        let mut pending = held.clone();
        *pending.metadata_mut() = m;
        assert_eq!(
            decide_delete(&pending, None, at(60)),
            DeleteAction::Unchanged
        );
        assert!(!remove_after_update(&pending));
        pending.metadata_mut().finalizers.clear();
        assert!(remove_after_update(&pending));
        // A running pod with a pending graceful deletion waits for the kubelet even without
        // finalizers.
        let running = pod("node-a", &["f"]);
        let mut m = marked(decide_delete(&running, None, at(1)));
        m.finalizers.clear();
        let mut r = running.clone();
        *r.metadata_mut() = m;
        assert!(!remove_after_update(&r));
    }

    #[test]
    fn updates_keep_server_fields_and_split_status() {
        let mut old = pod("", &[]);
        {
            let m = old.metadata_mut();
            m.uid = "u1".into();
            m.creation_timestamp = "2024-01-01T00:00:00Z".into();
        }
        let mut new = old.clone();
        new.metadata_mut().uid.clear();
        new.metadata_mut().creation_timestamp.clear();
        new.metadata_mut().labels.insert("a".into(), "b".into());
        if let Object::Pod(p) = &mut new {
            p.status.as_mut().unwrap().phase = "Failed".into();
            p.spec.as_mut().unwrap().restart_policy = "Never".into();
        }
        let next = prepare_for_update(&new, &old, UpdateMode::Main);
        let m = next.metadata().unwrap();
        assert_eq!((m.uid.as_str(), m.generation), ("u1", 2));
        assert_eq!(m.labels.get("a").map(String::as_str), Some("b"));
        assert!(!status_changed(&next, &old), "Update ignores status");
        let next = prepare_for_update(&new, &old, UpdateMode::Status);
        assert!(status_changed(&next, &old));
        let m = next.metadata().unwrap();
        assert!(m.labels.is_empty(), "UpdateStatus ignores metadata");
        assert_eq!(m.generation, 1, "and spec");
        assert!(same_content(
            &old,
            &prepare_for_update(&old, &old, UpdateMode::Main)
        ));
    }

    #[test]
    fn bind_sets_the_node_once() {
        let Object::Pod(mut p) = pod("", &[]) else {
            unreachable!()
        };
        p.meta_mut().uid = "u".into();
        assert!(matches!(
            bind(&mut p.clone(), "n1", "other", at(1)),
            Err(ApiError::Conflict { .. })
        ));
        bind(&mut p, "n1", "u", at(1)).unwrap();
        assert_eq!(p.spec.as_ref().unwrap().node_name, "n1");
        let c = &p.status.as_ref().unwrap().conditions;
        assert_eq!(
            (c[0].r#type.as_str(), c[0].status.as_str()),
            ("PodScheduled", "True")
        );
        let e = bind(&mut p, "n2", "", at(2)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Operation cannot be fulfilled on pods/binding \"p\": pod p is already assigned to node \"n1\""
        );
    }
}
