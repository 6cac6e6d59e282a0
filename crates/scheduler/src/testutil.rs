//! Builders of nodes and pods for the unit tests.
use std::collections::BTreeMap;

use kl_api::{
    Container, Node, NodeCondition, NodeSpec, NodeStatus, ObjectMeta, OwnerReference, Pod, PodSpec,
    PodStatus, ResourceRequirements, Taint, Toleration,
};

pub struct NodeBuilder {
    node: Node,
}

pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        node: Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

impl NodeBuilder {
    fn alloc(mut self, k: &str, v: &str) -> Self {
        let st = self.node.status.as_mut().unwrap();
        st.allocatable.insert(k.into(), v.into());
        st.capacity.insert(k.into(), v.into());
        self
    }
    pub fn cpu(self, v: &str) -> Self {
        self.alloc("cpu", v)
    }
    pub fn mem(self, v: &str) -> Self {
        self.alloc("memory", v)
    }
    pub fn pods(self, v: &str) -> Self {
        self.alloc("pods", v)
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        let m = self.node.metadata.as_mut().unwrap();
        m.labels.insert(k.into(), v.into());
        self
    }
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.node.spec.as_mut().unwrap().taints.push(Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
            ..Default::default()
        });
        self
    }
    pub fn unschedulable(mut self) -> Self {
        self.node.spec.as_mut().unwrap().unschedulable = true;
        self
    }
    pub fn ready(mut self, status: &str) -> Self {
        self.node.status.as_mut().unwrap().conditions[0].status = status.into();
        self
    }
    pub fn no_conditions(mut self) -> Self {
        self.node.status.as_mut().unwrap().conditions.clear();
        self
    }
    pub fn build(self) -> Node {
        self.node
    }
}

pub struct PodBuilder {
    pod: Pod,
    requests: BTreeMap<String, String>,
}

pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                ..Default::default()
            }),
            spec: Some(PodSpec::default()),
            ..Default::default()
        },
        requests: BTreeMap::new(),
    }
}

impl PodBuilder {
    pub fn cpu(mut self, v: &str) -> Self {
        self.requests.insert("cpu".into(), v.into());
        self
    }
    pub fn mem(mut self, v: &str) -> Self {
        self.requests.insert("memory".into(), v.into());
        self
    }
    pub fn on(mut self, node: &str) -> Self {
        self.pod.spec.as_mut().unwrap().node_name = node.into();
        self
    }
    pub fn selector(mut self, k: &str, v: &str) -> Self {
        let s = self.pod.spec.as_mut().unwrap();
        s.node_selector.insert(k.into(), v.into());
        self
    }
    pub fn toleration(mut self, key: &str, op: &str, value: &str, effect: &str) -> Self {
        self.pod
            .spec
            .as_mut()
            .unwrap()
            .tolerations
            .push(Toleration {
                key: key.into(),
                operator: op.into(),
                value: value.into(),
                effect: effect.into(),
                ..Default::default()
            });
        self
    }
    pub fn owner(mut self, uid: &str) -> Self {
        self.pod
            .metadata
            .as_mut()
            .unwrap()
            .owner_references
            .push(OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: uid.into(),
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            });
        self
    }
    pub fn phase(mut self, phase: &str) -> Self {
        self.pod.status = Some(PodStatus {
            phase: phase.into(),
            ..Default::default()
        });
        self
    }
    pub fn terminating(mut self) -> Self {
        self.pod.metadata.as_mut().unwrap().deletion_timestamp = "2024-01-01T00:00:00Z".into();
        self
    }
    pub fn build(mut self) -> Pod {
        self.pod.spec.as_mut().unwrap().containers.push(Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: self.requests,
                ..Default::default()
            }),
            ..Default::default()
        });
        self.pod
    }
}
