//! Manifests: Kubernetes-style multi-document YAML (or JSON, which is YAML) → [`Object`]s.
//!
//! Parsing is strict, like `kubectl apply --validate=strict`: an unknown field is an error naming
//! it. Every error names the document (1-based, counting `---` separated documents) and, for
//! type errors, the field path (`spec.containers[0].name`). Parsing neither defaults nor
//! validates: see [`crate::set_defaults`] and [`crate::validate`].
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::{Kind, Object};

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML at all; the message carries the line and column.
    #[error("document {document}: malformed YAML: {message}")]
    Syntax { document: usize, message: String },
    #[error(
        "document {document}: not an object (a mapping with apiVersion, kind, metadata, spec)"
    )]
    NotAMapping { document: usize },
    #[error("document {document}: {field}: Required value")]
    Missing {
        document: usize,
        field: &'static str,
    },
    #[error("document {document}: unknown kind {kind:?} (known: {known})", known = known_kinds())]
    UnknownKind { document: usize, kind: String },
    #[error("document {document}: kind {kind} is served as apiVersion {expected:?}, not {got:?}")]
    WrongApiVersion {
        document: usize,
        kind: Kind,
        expected: &'static str,
        got: String,
    },
    /// A field of the wrong type, or an unknown field.
    #[error("document {document}: {path}: {message}")]
    Field {
        document: usize,
        path: String,
        message: String,
    },
}

fn known_kinds() -> String {
    Kind::ALL.map(Kind::as_str).join(", ")
}

/// Parses every document of a multi-document YAML or JSON text. Empty documents are skipped.
pub fn parse_manifests(text: &str) -> Result<Vec<Object>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = Value::deserialize(doc).map_err(|e| ManifestError::Syntax {
            document,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        out.push(object_from_value(document, value)?);
    }
    Ok(out)
}

/// Reads one already-parsed document (`document` is only used in errors).
pub fn object_from_value(document: usize, value: Value) -> Result<Object, ManifestError> {
    let Some(map) = value.as_mapping() else {
        return Err(ManifestError::NotAMapping { document });
    };
    let field = |name: &'static str| match map.get(name) {
        None | Some(Value::Null) => Err(ManifestError::Missing {
            document,
            field: name,
        }),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ManifestError::Field {
            document,
            path: name.to_string(),
            message: "must be a string".to_string(),
        }),
    };
    let api_version = field("apiVersion")?;
    let kind_name = field("kind")?;
    let kind = Kind::from_kind(&kind_name).ok_or(ManifestError::UnknownKind {
        document,
        kind: kind_name,
    })?;
    if api_version != kind.api_version() {
        return Err(ManifestError::WrongApiVersion {
            document,
            kind,
            expected: kind.api_version(),
            got: api_version,
        });
    }
    Ok(match kind {
        Kind::Namespace => Object::Namespace(typed(document, value)?),
        Kind::Node => Object::Node(typed(document, value)?),
        Kind::Pod => Object::Pod(typed(document, value)?),
        Kind::ReplicaSet => Object::ReplicaSet(typed(document, value)?),
        Kind::Lease => Object::Lease(typed(document, value)?),
        Kind::Event => Object::Event(typed(document, value)?),
    })
}

fn typed<T: DeserializeOwned>(document: usize, value: Value) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| ManifestError::Field {
        document,
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\n  labels:\n    app: sleeper\nspec:\n  containers:\n  - name: main\n    command:\n    - sleep\n    - '3600'\n";

    #[test]
    fn multi_document_with_empty_documents() {
        let text = format!(
            "---\n{POD}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: prod}}\n---\n"
        );
        let objs = parse_manifests(&text).unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].kind(), Kind::Pod);
        assert_eq!(objs[0].name(), "sleeper");
        assert_eq!(objs[1].kind(), Kind::Namespace);
    }

    #[test]
    fn json_is_accepted() {
        let objs = parse_manifests(
            r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"l","namespace":"kube-system"},"spec":{"holderIdentity":"a","leaseDurationSeconds":15}}"#,
        )
        .unwrap();
        let Object::Lease(l) = &objs[0] else { panic!() };
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity, "a");
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn yaml_round_trip_keeps_kubernetes_names() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\n  resourceVersion: '7'\n  creationTimestamp: 2024-01-01T00:00:00Z\n  ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    name: r\n    uid: u1\n    controller: true\n    blockOwnerDeletion: true\nspec:\n  containers:\n  - name: c\n    command:\n    - sleep\n    resources:\n      requests:\n        cpu: 100m\n        memory: 128Mi\n    readinessProbe:\n      tcpSocket:\n        port: 80\n      initialDelaySeconds: 2\n  nodeName: n1\n  nodeSelector:\n    disk: ssd\n  tolerations:\n  - key: k\n    operator: Exists\n    effect: NoExecute\n    tolerationSeconds: 300\n  restartPolicy: Always\n  terminationGracePeriodSeconds: 30\nstatus:\n  phase: Running\n  containerStatuses:\n  - name: c\n    ready: true\n    restartCount: 2\n    state:\n      running:\n        startedAt: 2024-01-01T00:00:01Z\n    lastState:\n      terminated:\n        exitCode: 1\n        reason: Error\n  podIP: 10.0.0.5\n  hostIP: 127.0.0.1\n";
        let objs = parse_manifests(text).unwrap();
        assert_eq!(objs[0].to_yaml().unwrap(), text);
        let again = parse_manifests(&objs[0].to_json().unwrap()).unwrap();
        assert_eq!(again, objs);
    }

    #[test]
    fn lease_and_replicaset_field_names() {
        let text = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: r\nspec:\n  replicas: 0\n  selector:\n    matchLabels:\n      app: a\n    matchExpressions:\n    - key: tier\n      operator: In\n      values:\n      - web\n  template:\n    metadata:\n      labels:\n        app: a\n    spec:\n      containers:\n      - name: c\n        command:\n        - x\nstatus:\n  readyReplicas: 1\n  observedGeneration: 3\n";
        let objs = parse_manifests(text).unwrap();
        assert_eq!(
            objs[0].to_yaml().unwrap(),
            text,
            "replicas: 0 is kept (optional)"
        );
        let lease = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: kube-scheduler\n  namespace: kube-system\nspec:\n  holderIdentity: m1\n  leaseDurationSeconds: 15\n  acquireTime: 2024-01-01T00:00:00.000000Z\n  renewTime: 2024-01-01T00:00:10.000000Z\n  leaseTransitions: 0\n";
        assert_eq!(parse_manifests(lease).unwrap()[0].to_yaml().unwrap(), lease);
        let event = "apiVersion: v1\nkind: Event\nmetadata:\n  name: e\ninvolvedObject:\n  kind: Pod\n  namespace: default\n  name: p\nreason: Scheduled\nmessage: assigned\ntype: Normal\ncount: 1\nsource:\n  component: default-scheduler\n";
        assert_eq!(parse_manifests(event).unwrap()[0].to_yaml().unwrap(), event);
        let node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  unschedulable: true\n  taints:\n  - key: k\n    effect: NoSchedule\nstatus:\n  capacity:\n    cpu: '4'\n  conditions:\n  - type: Ready\n    status: 'True'\n    lastHeartbeatTime: 2024-01-01T00:00:00Z\n  addresses:\n  - type: InternalIP\n    address: 10.0.0.1\n  daemonEndpoints:\n    kubeletEndpoint:\n      Port: 10250\n  nodeInfo:\n    machineID: m\n    systemUUID: s\n    bootID: b\n    kernelVersion: 6.1.0\n    osImage: Debian GNU/Linux 12 (bookworm)\n    kubeletVersion: v0.1.0\n    operatingSystem: linux\n    architecture: amd64\n";
        // Upstream's spellings: `Port` capitalised, `machineID`, `systemUUID`, `bootID`.
        assert_eq!(parse_manifests(node).unwrap()[0].to_yaml().unwrap(), node);
    }

    #[test]
    fn unknown_kind_names_document_and_known_kinds() {
        let text =
            format!("{POD}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n");
        assert_eq!(
            parse_manifests(&text).unwrap_err().to_string(),
            "document 2: unknown kind \"Deployment\" (known: Namespace, Node, Pod, ReplicaSet, Lease, Event)"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: [a]\n";
        let err = parse_manifests(text).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "document 1: spec.containers[0].name: invalid type: sequence, expected a string"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_an_error() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    imagee: busybox\n";
        let err = parse_manifests(text).unwrap_err().to_string();
        assert!(
            err.starts_with("document 1: spec.containers[0].imagee: unknown field `imagee`, expected one of `name`, `command`"),
            "{err}"
        );
    }

    #[test]
    fn malformed_yaml_has_line_and_column() {
        let text = format!("{POD}---\nkind: Pod\nmetadata: {{name: p\n");
        let err = parse_manifests(&text).unwrap_err().to_string();
        assert!(err.starts_with("document 2: malformed YAML: "), "{err}");
        assert!(err.contains("line"), "{err}");
        assert!(err.contains("column"), "{err}");
    }

    #[test]
    fn missing_kind_and_api_version_mismatch() {
        assert_eq!(
            parse_manifests("apiVersion: v1\nmetadata: {name: p}\n")
                .unwrap_err()
                .to_string(),
            "document 1: kind: Required value"
        );
        assert_eq!(
            parse_manifests("apiVersion: v1\nkind: ReplicaSet\n")
                .unwrap_err()
                .to_string(),
            "document 1: kind ReplicaSet is served as apiVersion \"apps/v1\", not \"v1\""
        );
        assert_eq!(
            parse_manifests("- a\n").unwrap_err().to_string(),
            "document 1: not an object (a mapping with apiVersion, kind, metadata, spec)"
        );
    }
}
