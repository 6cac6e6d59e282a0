//! Kubernetes defaulting: what the apiserver fills in before validating an object.
//!
//! Mirrors upstream: namespace `default` for namespaced kinds, Pod `restartPolicy: Always`,
//! `terminationGracePeriodSeconds: 30`, container port protocol `TCP`, probe periods and
//! thresholds, ReplicaSet `replicas: 1`. The ReplicaSet selector is *not* defaulted from the
//! template labels: apps/v1 requires it.
use crate::{Object, PodSpec, Probe};

/// Fills in every default on `obj` (apiVersion and kind included).
pub fn set_defaults(obj: &mut Object) {
    obj.set_type_meta();
    if obj.kind().namespaced() {
        let meta = obj.metadata_mut();
        if meta.namespace.is_empty() {
            meta.namespace = "default".to_string();
        }
    }
    match obj {
        Object::Pod(pod) => default_pod_spec(pod.spec.get_or_insert_with(Default::default)),
        Object::ReplicaSet(rs) => {
            let spec = rs.spec.get_or_insert_with(Default::default);
            spec.replicas.get_or_insert(1);
            if let Some(spec) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
                default_pod_spec(spec);
            }
        }
        _ => {}
    }
}

/// Defaults of a pod spec (also applied to ReplicaSet templates, as upstream).
pub fn default_pod_spec(spec: &mut PodSpec) {
    if spec.restart_policy.is_empty() {
        spec.restart_policy = "Always".to_string();
    }
    spec.termination_grace_period_seconds.get_or_insert(30);
    for c in &mut spec.containers {
        for p in &mut c.ports {
            if p.protocol.is_empty() {
                p.protocol = "TCP".to_string();
            }
        }
        for probe in [c.liveness_probe.as_mut(), c.readiness_probe.as_mut()]
            .into_iter()
            .flatten()
        {
            default_probe(probe);
        }
    }
}

fn default_probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.period_seconds, 10),
        (&mut p.timeout_seconds, 1),
        (&mut p.failure_threshold, 3),
        (&mut p.success_threshold, 1),
    ] {
        if *field == 0 {
            *field = default;
        }
    }
    if let Some(h) = p.http_get.as_mut() {
        if h.path.is_empty() {
            h.path = "/".to_string();
        }
        if h.scheme.is_empty() {
            h.scheme = "HTTP".to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_manifests;

    fn one(yaml: &str) -> Object {
        let mut o = parse_manifests(yaml).unwrap().remove(0);
        set_defaults(&mut o);
        o
    }

    #[test]
    fn pod_defaults() {
        let o = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    command: [sleep, '3600']\n    ports: [{containerPort: 80}]\n    livenessProbe: {httpGet: {port: 80}}\n",
        );
        let Object::Pod(pod) = o else { panic!() };
        assert_eq!(pod.metadata.as_ref().unwrap().namespace, "default");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy, "Always");
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        let c = &spec.containers[0];
        assert_eq!(c.ports[0].protocol, "TCP");
        let p = c.liveness_probe.as_ref().unwrap();
        assert_eq!(
            (
                p.period_seconds,
                p.timeout_seconds,
                p.failure_threshold,
                p.success_threshold
            ),
            (10, 1, 3, 1)
        );
        assert_eq!(p.http_get.as_ref().unwrap().path, "/");
    }

    #[test]
    fn explicit_values_are_kept() {
        let o = one(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: prod}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 0\n  containers: [{name: c, command: [x]}]\n",
        );
        let Object::Pod(pod) = o else { panic!() };
        assert_eq!(pod.metadata.unwrap().namespace, "prod");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy, "Never");
        assert_eq!(spec.termination_grace_period_seconds, Some(0));
    }

    #[test]
    fn replicaset_defaults_replicas_not_selector() {
        let o = one(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: r}\nspec:\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, command: [x]}]}\n",
        );
        let Object::ReplicaSet(rs) = o else { panic!() };
        let spec = rs.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert!(spec.selector.is_none());
        assert_eq!(
            spec.template.unwrap().spec.unwrap().restart_policy,
            "Always"
        );
    }

    #[test]
    fn replicas_zero_is_kept_and_cluster_scoped_kinds_get_no_namespace() {
        let o = one(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: r}\nspec: {replicas: 0}\n",
        );
        let Object::ReplicaSet(rs) = o else { panic!() };
        assert_eq!(rs.spec.unwrap().replicas, Some(0));
        let o = one("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n");
        assert_eq!(o.namespace(), "");
    }
}
