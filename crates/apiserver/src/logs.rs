//! The pods/log subresource (upstream's `pod/rest/log.go` and `LogLocation`): check the
//! options, find the pod, pick its container, find its node, and relay the kubelet's
//! `GET /containerLogs/{namespace}/{pod}/{container}` answer chunk by chunk.
//!
//! The rules are pure functions ([`validate`], [`container`], [`kubelet_path`]) so that tests
//! pin upstream's wording without a kubelet; [`open`] wires them to the store and
//! [`crate::kubelet`].

use kl_api::{Kind, Node, Object, Pod, PodLogsRequest};

use crate::error::{ApiError, ApiResult};
use crate::kubelet::{self, KubeletClient};
use crate::registry::{namespace_for, Registry};

/// Upstream's `ValidatePodLogOptions`, worded as its `PodLogOptions "web" is invalid: ...`.
pub fn validate(req: &PodLogsRequest) -> ApiResult<()> {
    let mut errs = Vec::new();
    if let Some(n) = req.tail_lines.filter(|n| *n < 0) {
        errs.push(format!(
            "tailLines: Invalid value: {n}: must be greater than or equal to 0"
        ));
    }
    if let Some(n) = req.limit_bytes.filter(|n| *n < 1) {
        errs.push(format!(
            "limitBytes: Invalid value: {n}: must be greater than 0"
        ));
    }
    if errs.is_empty() {
        return Ok(());
    }
    let list = if errs.len() == 1 {
        errs.remove(0)
    } else {
        format!("[{}]", errs.join(", "))
    };
    Err(ApiError::BadRequest(format!(
        "PodLogOptions {:?} is invalid: {list}",
        req.name
    )))
}

/// The container whose log is asked for (upstream's `validateContainer`): the one named, which
/// must be in the pod's spec, or the pod's only container.
pub fn container(pod: &Pod, requested: &str) -> ApiResult<String> {
    let name = pod.metadata.as_ref().map_or("", |m| m.name.as_str());
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    if requested.is_empty() {
        return match containers {
            [only] => Ok(only.name.clone()),
            [] => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}"
            ))),
            many => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                many.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        };
    }
    if containers.iter().any(|c| c.name == requested) {
        Ok(requested.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "container {requested} is not valid for pod {name}"
        )))
    }
}

/// The kubelet's path and query for the request (the kubelet's `/containerLogs` API, with
/// upstream's query parameter names).
pub fn kubelet_path(namespace: &str, pod: &str, container: &str, req: &PodLogsRequest) -> String {
    let mut path = format!(
        "/containerLogs/{}/{}/{}",
        kubelet::path_segment(namespace),
        kubelet::path_segment(pod),
        kubelet::path_segment(container)
    );
    let mut query = Vec::new();
    if req.follow {
        query.push("follow=true".to_string());
    }
    if let Some(n) = req.tail_lines {
        query.push(format!("tailLines={n}"));
    }
    if req.previous {
        query.push("previous=true".to_string());
    }
    if req.timestamps {
        query.push("timestamps=true".to_string());
    }
    if let Some(n) = req.limit_bytes {
        query.push(format!("limitBytes={n}"));
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    path
}

/// Finds the pod and its kubelet and starts the kubelet's answer.
pub async fn open(
    registry: &Registry,
    kubelets: &KubeletClient,
    req: &PodLogsRequest,
) -> ApiResult<kubelet::Body> {
    validate(req)?;
    let namespace = namespace_for(Kind::Pod, &req.namespace);
    let pod = match registry
        .get(Kind::Pod.plural(), &namespace, &req.name)
        .await?
    {
        Object::Pod(p) => p,
        _ => return Err(ApiError::Internal("a pods key holds another kind".into())),
    };
    let container = container(&pod, &req.container)?;
    let node_name = pod.spec.as_ref().map_or("", |s| s.node_name.as_str());
    if node_name.is_empty() {
        // Upstream answers with an empty log; an error says why there is none.
        return Err(ApiError::BadRequest(format!(
            "pod {:?} is not scheduled to a node yet",
            req.name
        )));
    }
    let node: Node = match registry.get(Kind::Node.plural(), "", node_name).await? {
        Object::Node(n) => n,
        _ => return Err(ApiError::Internal("a nodes key holds another kind".into())),
    };
    let loc = kubelets.location(&node)?;
    let path = kubelet_path(&namespace, &req.name, &container, req);
    tracing::debug!(node = %loc.node, addr = %loc.authority(), %path, "reading container log from the kubelet");
    kubelets.get(&loc, &path).await
}

#[cfg(test)]
mod tests {
    use kl_api::{Container, ObjectMeta, PodSpec};

    use super::*;

    fn pod(containers: &[&str]) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .map(|c| Container {
                        name: c.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_are_chosen_as_upstream() {
        assert_eq!(container(&pod(&["a"]), "").unwrap(), "a");
        assert_eq!(container(&pod(&["a", "b"]), "b").unwrap(), "b");
        let e = container(&pod(&["a", "b"]), "").unwrap_err();
        assert_eq!(e.reason(), "BadRequest");
        assert_eq!(
            e.to_string(),
            "a container name must be specified for pod web, choose one of: [a b]"
        );
        assert_eq!(
            container(&pod(&["a"]), "x").unwrap_err().to_string(),
            "container x is not valid for pod web"
        );
        assert_eq!(
            container(&pod(&[]), "").unwrap_err().to_string(),
            "a container name must be specified for pod web"
        );
    }

    #[test]
    fn options_are_checked_and_passed_with_upstream_names() {
        let mut r = PodLogsRequest {
            name: "web".into(),
            ..Default::default()
        };
        assert_eq!(
            kubelet_path("default", "web", "c", &r),
            "/containerLogs/default/web/c"
        );
        assert!(validate(&r).is_ok());
        r.follow = true;
        r.tail_lines = Some(0);
        r.previous = true;
        r.timestamps = true;
        r.limit_bytes = Some(10);
        assert!(validate(&r).is_ok());
        assert_eq!(
            kubelet_path("ns", "web", "c", &r),
            "/containerLogs/ns/web/c?follow=true&tailLines=0&previous=true&timestamps=true&limitBytes=10"
        );
        r.tail_lines = Some(-1);
        let e = validate(&r).unwrap_err();
        assert_eq!(e.reason(), "BadRequest");
        assert_eq!(
            e.to_string(),
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        r.limit_bytes = Some(0);
        assert!(validate(&r)
            .unwrap_err()
            .to_string()
            .ends_with(", limitBytes: Invalid value: 0: must be greater than 0]"));
    }
}
