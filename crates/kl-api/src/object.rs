//! The kinds kube-lite serves: their apiVersion, resource names, scope, and [`Object`], one
//! value of any kind.
use serde::Serialize;

use crate::typed_object::Object as Typed;
use crate::{Event, Lease, Namespace, Node, ObjectMeta, Pod, ReplicaSet, TypedObject};

/// A kind of object, with what kubectl and the apiserver need to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    ReplicaSet,
    Lease,
    Event,
}

impl Kind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [Kind; 6] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::ReplicaSet,
        Kind::Lease,
        Kind::Event,
    ];

    /// The `kind` field, e.g. `ReplicaSet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Lease => "Lease",
            Kind::Event => "Event",
        }
    }

    /// The `apiVersion` Kubernetes serves this kind under.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "apps/v1",
            Kind::Lease => "coordination.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The resource (plural) name: the key segment in `/registry/<resource>/...` and kubectl's name.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::ReplicaSet => "replicasets",
            Kind::Lease => "leases",
            Kind::Event => "events",
        }
    }

    /// The singular resource name, as `kubectl get pod` accepts.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Node => "node",
            Kind::Pod => "pod",
            Kind::ReplicaSet => "replicaset",
            Kind::Lease => "lease",
            Kind::Event => "event",
        }
    }

    /// kubectl's short name, if the kind has one.
    pub fn short_name(self) -> Option<&'static str> {
        match self {
            Kind::Namespace => Some("ns"),
            Kind::Node => Some("no"),
            Kind::Pod => Some("po"),
            Kind::ReplicaSet => Some("rs"),
            Kind::Lease => None,
            Kind::Event => Some("ev"),
        }
    }

    /// Whether objects of this kind live in a namespace (Namespace and Node do not).
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// The kind whose `kind` field is exactly `kind` (case-sensitive, as in manifests).
    pub fn from_kind(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The kind a user named on a command line: plural, singular, short name or kind,
    /// case-insensitively (`pods`, `pod`, `po`, `Pod`).
    pub fn from_resource(name: &str) -> Option<Kind> {
        let name = name.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            k.plural() == name
                || k.singular() == name
                || k.short_name() == Some(name.as_str())
                || k.as_str().to_ascii_lowercase() == name
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object of any kind. Serializes as the inner object (apiVersion and kind included).
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    ReplicaSet(ReplicaSet),
    Lease(Lease),
    Event(Event),
}

macro_rules! each {
    ($self:expr, $o:ident => $e:expr) => {
        match $self {
            Object::Namespace($o) => $e,
            Object::Node($o) => $e,
            Object::Pod($o) => $e,
            Object::ReplicaSet($o) => $e,
            Object::Lease($o) => $e,
            Object::Event($o) => $e,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Lease(_) => Kind::Lease,
            Object::Event(_) => Kind::Event,
        }
    }

    /// The object's metadata, if it has any.
    pub fn metadata(&self) -> Option<&ObjectMeta> {
        each!(self, o => o.metadata.as_ref())
    }

    /// The object's metadata, created empty if absent.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each!(self, o => o.metadata.get_or_insert_with(Default::default))
    }

    /// `metadata.name` ("" if unset).
    pub fn name(&self) -> &str {
        self.metadata().map_or("", |m| m.name.as_str())
    }

    /// `metadata.namespace` ("" if unset or cluster-scoped).
    pub fn namespace(&self) -> &str {
        self.metadata().map_or("", |m| m.namespace.as_str())
    }

    /// Sets `apiVersion` and `kind` to this kind's (they may be empty on objects built in code).
    pub fn set_type_meta(&mut self) {
        let kind = self.kind();
        each!(self, o => {
            o.api_version = kind.api_version().to_string();
            o.kind = kind.as_str().to_string();
        })
    }

    /// Kubernetes-shaped YAML (as `kubectl get -o yaml`).
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        serde_yaml_ng::to_string(self)
    }

    /// Kubernetes-shaped JSON (as `kubectl get -o json`), pretty-printed.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

impl Object {
    /// Reads an object of a known kind from its JSON (as the apiserver stores it), strictly.
    pub fn from_json(kind: Kind, bytes: &[u8]) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::Namespace => Object::Namespace(serde_json::from_slice(bytes)?),
            Kind::Node => Object::Node(serde_json::from_slice(bytes)?),
            Kind::Pod => Object::Pod(serde_json::from_slice(bytes)?),
            Kind::ReplicaSet => Object::ReplicaSet(serde_json::from_slice(bytes)?),
            Kind::Lease => Object::Lease(serde_json::from_slice(bytes)?),
            Kind::Event => Object::Event(serde_json::from_slice(bytes)?),
        })
    }

    /// Compact JSON, Kubernetes field names (what the apiserver stores in etcd).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no I/O.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The object as the API carries it.
    pub fn into_typed(self) -> TypedObject {
        TypedObject {
            object: Some(match self {
                Object::Namespace(o) => Typed::Namespace(o),
                Object::Node(o) => Typed::Node(o),
                Object::Pod(o) => Typed::Pod(o),
                Object::ReplicaSet(o) => Typed::ReplicaSet(o),
                Object::Lease(o) => Typed::Lease(o),
                Object::Event(o) => Typed::Event(o),
            }),
        }
    }

    /// The object an API message carries, or None when it carries none.
    pub fn from_typed(typed: TypedObject) -> Option<Object> {
        Some(match typed.object? {
            Typed::Namespace(o) => Object::Namespace(o),
            Typed::Node(o) => Object::Node(o),
            Typed::Pod(o) => Object::Pod(o),
            Typed::ReplicaSet(o) => Object::ReplicaSet(o),
            Typed::Lease(o) => Object::Lease(o),
            Typed::Event(o) => Object::Event(o),
        })
    }
}

impl From<Object> for TypedObject {
    fn from(o: Object) -> TypedObject {
        o.into_typed()
    }
}

/// A kind's own type (`Pod`, `Node`, ...), for typed clients: `Api<Pod>` rather than `Object`.
pub trait Resource: Sized + Clone + Default + Send + Sync + 'static {
    const KIND: Kind;
    fn into_object(self) -> Object;
    /// The inner value when `object` is of this kind.
    fn from_object(object: Object) -> Option<Self>;
    fn meta(&self) -> Option<&ObjectMeta>;
    /// The metadata, created empty if absent.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! resource {
    ($($t:ident),*) => {$(
        impl Resource for $t {
            const KIND: Kind = Kind::$t;
            fn into_object(self) -> Object {
                Object::$t(self)
            }
            fn from_object(object: Object) -> Option<Self> {
                match object {
                    Object::$t(o) => Some(o),
                    _ => None,
                }
            }
            fn meta(&self) -> Option<&ObjectMeta> {
                self.metadata.as_ref()
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                self.metadata.get_or_insert_with(Default::default)
            }
        }
    )*};
}
resource!(Namespace, Node, Pod, ReplicaSet, Lease, Event);

impl Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        each!(self, o => o.serialize(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_know_their_names() {
        assert_eq!(Kind::from_resource("po"), Some(Kind::Pod));
        assert_eq!(Kind::from_resource("ReplicaSets"), Some(Kind::ReplicaSet));
        assert_eq!(Kind::from_resource("rs"), Some(Kind::ReplicaSet));
        assert_eq!(Kind::from_resource("ns"), Some(Kind::Namespace));
        assert_eq!(Kind::from_resource("lease"), Some(Kind::Lease));
        assert_eq!(Kind::from_resource("deployments"), None);
        assert_eq!(Kind::Lease.api_version(), "coordination.k8s.io/v1");
        assert_eq!(Kind::ReplicaSet.api_version(), "apps/v1");
        assert_eq!(Kind::Event.api_version(), "v1");
        assert!(!Kind::Node.namespaced());
        assert!(Kind::Event.namespaced());
        assert_eq!(Kind::Event.short_name(), Some("ev"));
    }

    #[test]
    fn objects_round_trip_through_json_and_typed() {
        let mut pod = Pod::default();
        pod.meta_mut().name = "web".into();
        let mut o = pod.into_object();
        o.set_type_meta();
        let back = Object::from_json(Kind::Pod, &o.to_json_bytes()).unwrap();
        assert_eq!(back, o);
        assert_eq!(Object::from_typed(o.clone().into_typed()), Some(o));
        assert_eq!(Object::from_typed(TypedObject::default()), None);
        assert!(Object::from_json(Kind::Node, br#"{"spec":{"bogus":1}}"#).is_err());
    }

    #[test]
    fn set_type_meta_fills_api_version_and_kind() {
        let mut o = Object::Lease(Lease::default());
        o.set_type_meta();
        let yaml = o.to_yaml().unwrap();
        assert_eq!(yaml, "apiVersion: coordination.k8s.io/v1\nkind: Lease\n");
    }
}
