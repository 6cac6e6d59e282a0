//! Authorization: who may do what, decided for every request after authentication
//! (`--authorization-mode`).
//!
//! * `AlwaysAllow`, kube-apiserver's default: every authenticated client may do everything.
//! * `Node,RBAC`, what kubeadm sets: upstream's built-in roles, fixed here rather than read
//!   from RBAC objects (kube-lite has no Role or RoleBinding kinds):
//!   - group `system:masters` (the admin kubeconfig): everything;
//!   - `system:kube-controller-manager`: reads everything; writes pods, ReplicaSets (and their
//!     status), nodes (taints, status), Events, and its own Lease
//!     (`kube-system/kube-controller-manager`);
//!   - `system:kube-scheduler`: reads everything; binds pods, writes pod status (the
//!     Unschedulable condition), Events and its own Lease (`kube-system/kube-scheduler`);
//!   - `system:node:<name>` in group `system:nodes` (the Node authorizer and NodeRestriction
//!     admission as upstream): its own Node (create, update, status) and node Lease
//!     (`kube-node-lease/<name>`), pods bound to it only (get; list and watch with the field
//!     selector `spec.nodeName=<name>`; status; the final delete that confirms a deletion),
//!     reads of nodes and namespaces, and Events;
//!   - anyone else: nothing.
//!
//! A denial is `PERMISSION_DENIED` / `Forbidden` with upstream's wording and the reason
//! (`pods "web" is forbidden: User "system:node:worker2" cannot delete resource "pods" in API
//! group "" in the namespace "default": node "worker2" can only delete pods bound to it`),
//! counted in `apiserver_authorization_decisions_total{decision="denied"}` and logged.
//!
//! Some decisions depend on the object: "pods bound to it" is answered by
//! [`Decision::IfBoundTo`], which the service checks against the stored pod (and the pod sent,
//! for a status update).

use std::str::FromStr;

use kl_tls::PeerIdentity;

/// `--authorization-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// kube-apiserver's default.
    #[default]
    AlwaysAllow,
    /// `Node,RBAC`: the built-in policy of the module doc.
    NodeRbac,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        let mut modes: Vec<&str> = s.split(',').map(str::trim).collect();
        modes.sort_unstable();
        match modes.as_slice() {
            ["AlwaysAllow"] => Ok(Mode::AlwaysAllow),
            ["Node", "RBAC"] => Ok(Mode::NodeRbac),
            _ => Err(format!(
                "{s:?} is not supported: kube-lite implements AlwaysAllow (the default) and \
                 Node,RBAC (upstream's built-in roles and the Node authorizer, as kubeadm sets)"
            )),
        }
    }
}

/// What a request does, in RBAC's verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }

    fn reads(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// One request, as the authorizer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Attributes<'a> {
    pub verb: Verb,
    /// The plural resource, with its subresource: `pods`, `pods/status`, `pods/binding`.
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// A list's or watch's field selector (`spec.nodeName=worker1`).
    pub field_selector: &'a str,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed when the pod (stored, and sent for an update) is bound to this node.
    IfBoundTo(String),
    Deny(String),
}

/// The API group kubectl names in a denial.
fn group_of(resource: &str) -> &'static str {
    match resource.split('/').next().unwrap_or_default() {
        "replicasets" => "apps",
        "leases" => "coordination.k8s.io",
        _ => "",
    }
}

/// The resource as a denial names it: `pods`, `replicasets.apps`, `leases.coordination.k8s.io`.
pub fn qualified(resource: &str) -> String {
    let base = resource.split('/').next().unwrap_or_default();
    match group_of(base) {
        "" => base.to_string(),
        g => format!("{base}.{g}"),
    }
}

/// Upstream's wording of a denial: `User "u" cannot VERB resource "R" in API group "G" in the
/// namespace "N"` (or `at the cluster scope`), then the reason.
pub fn denial_message(who: &PeerIdentity, a: &Attributes<'_>, reason: &str) -> String {
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}: {reason}",
        who.common_name,
        a.verb.as_str(),
        a.resource,
        group_of(a.resource),
    )
}

/// Decides `a` for `who` under `mode`.
pub fn authorize(mode: Mode, who: &PeerIdentity, a: &Attributes<'_>) -> Decision {
    if mode == Mode::AlwaysAllow
        || who
            .organizations
            .iter()
            .any(|o| o == kl_pki::SYSTEM_MASTERS)
    {
        return Decision::Allow;
    }
    let user = who.common_name.as_str();
    if user == kl_pki::CONTROLLER_MANAGER_USER {
        return controller_manager(a);
    }
    if user == kl_pki::SCHEDULER_USER {
        return scheduler(a);
    }
    if let Some(node) = user.strip_prefix(kl_pki::NODE_USER_PREFIX) {
        if who.organizations.iter().any(|o| o == kl_pki::SYSTEM_NODES) && !node.is_empty() {
            return node_policy(node, a);
        }
    }
    Decision::Deny(
        "no role grants it (the built-in policy of --authorization-mode=Node,RBAC)".into(),
    )
}

/// A write to a leader-election Lease: only the component's own.
fn own_lease(a: &Attributes<'_>, name: &str) -> Decision {
    if a.namespace == "kube-system" && a.name == name {
        Decision::Allow
    } else {
        Decision::Deny(format!(
            "it may only write its own Lease kube-system/{name}"
        ))
    }
}

fn controller_manager(a: &Attributes<'_>) -> Decision {
    if a.verb.reads() {
        return Decision::Allow;
    }
    match a.resource {
        "pods" | "pods/status" | "replicasets" | "replicasets/status" => Decision::Allow,
        "nodes" | "nodes/status" if a.verb != Verb::Create => Decision::Allow,
        "events" if a.verb != Verb::Delete => Decision::Allow,
        "leases" if a.verb != Verb::Delete => own_lease(a, "kube-controller-manager"),
        _ => Decision::Deny("the controller-manager's role does not write it".into()),
    }
}

fn scheduler(a: &Attributes<'_>) -> Decision {
    if a.verb.reads() {
        return Decision::Allow;
    }
    match a.resource {
        "pods/binding" if a.verb == Verb::Create => Decision::Allow,
        "pods/status" if a.verb == Verb::Update => Decision::Allow,
        "events" if a.verb != Verb::Delete => Decision::Allow,
        "leases" if a.verb != Verb::Delete => own_lease(a, "kube-scheduler"),
        _ => Decision::Deny(
            "the scheduler may only bind pods and write pod status, Events and its own Lease"
                .into(),
        ),
    }
}

fn node_policy(node: &str, a: &Attributes<'_>) -> Decision {
    let bound = || Decision::IfBoundTo(node.to_string());
    match (a.resource, a.verb) {
        ("nodes" | "nodes/status", v) if v.reads() => Decision::Allow,
        ("nodes" | "nodes/status", Verb::Create | Verb::Update) if a.name == node => {
            Decision::Allow
        }
        ("nodes" | "nodes/status", _) => {
            Decision::Deny(format!("node \"{node}\" can only create and update its own Node"))
        }
        ("leases", v) if a.namespace == "kube-node-lease" && a.name == node && v != Verb::Delete => {
            Decision::Allow
        }
        ("leases", _) => Decision::Deny(format!(
            "node \"{node}\" can only access its own Lease kube-node-lease/{node}"
        )),
        ("pods", Verb::List | Verb::Watch) => {
            if a.field_selector.split(',').any(|s| s.trim() == format!("spec.nodeName={node}")) {
                Decision::Allow
            } else {
                Decision::Deny(format!(
                    "node \"{node}\" can only list and watch pods bound to it (fieldSelector spec.nodeName={node})"
                ))
            }
        }
        ("pods" | "pods/status", Verb::Get) | ("pods/status", Verb::Update) | ("pods", Verb::Delete) => {
            bound()
        }
        ("pods" | "pods/status" | "pods/binding", _) => Decision::Deny(format!(
            "node \"{node}\" can only read pods bound to it, update their status and confirm their deletion"
        )),
        ("namespaces", v) if v.reads() => Decision::Allow,
        ("events", v) if v != Verb::Delete => Decision::Allow,
        _ => Decision::Deny(format!("node \"{node}\" has no need of it (NodeRestriction)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(cn: &str, o: &[&str]) -> PeerIdentity {
        PeerIdentity {
            common_name: cn.into(),
            organizations: o.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn attrs<'a>(verb: Verb, resource: &'a str, ns: &'a str, name: &'a str) -> Attributes<'a> {
        Attributes {
            verb,
            resource,
            namespace: ns,
            name,
            field_selector: "",
        }
    }

    fn allowed(who: &PeerIdentity, a: Attributes<'_>) -> bool {
        authorize(Mode::NodeRbac, who, &a) == Decision::Allow
    }

    #[test]
    fn modes_parse_as_kube_apiserver_names_them() {
        assert_eq!("AlwaysAllow".parse(), Ok(Mode::AlwaysAllow));
        assert_eq!("Node,RBAC".parse(), Ok(Mode::NodeRbac));
        assert_eq!("RBAC,Node".parse(), Ok(Mode::NodeRbac));
        let e = "ABAC".parse::<Mode>().unwrap_err();
        assert!(e.contains("Node,RBAC"), "{e}");
        assert!("RBAC".parse::<Mode>().is_err());
    }

    #[test]
    fn always_allow_and_masters_may_do_anything() {
        let anyone = who("someone", &[]);
        let a = attrs(Verb::Delete, "namespaces", "", "default");
        assert_eq!(authorize(Mode::AlwaysAllow, &anyone, &a), Decision::Allow);
        assert!(matches!(
            authorize(Mode::NodeRbac, &anyone, &a),
            Decision::Deny(_)
        ));
        assert!(allowed(&who("kubernetes-admin", &["system:masters"]), a));
    }

    #[test]
    fn the_controller_manager_writes_what_its_controllers_need_and_only_its_lease() {
        let cm = who("system:kube-controller-manager", &[]);
        assert!(allowed(&cm, attrs(Verb::List, "pods", "", "")));
        assert!(allowed(&cm, attrs(Verb::Create, "pods", "default", "")));
        assert!(allowed(
            &cm,
            attrs(Verb::Update, "replicasets/status", "default", "web")
        ));
        assert!(allowed(&cm, attrs(Verb::Update, "nodes", "", "worker1")));
        assert!(allowed(&cm, attrs(Verb::Create, "events", "default", "")));
        assert!(allowed(
            &cm,
            attrs(
                Verb::Update,
                "leases",
                "kube-system",
                "kube-controller-manager"
            )
        ));
        assert!(!allowed(
            &cm,
            attrs(Verb::Update, "leases", "kube-system", "kube-scheduler")
        ));
        assert!(!allowed(
            &cm,
            attrs(Verb::Update, "leases", "kube-node-lease", "worker1")
        ));
        assert!(!allowed(
            &cm,
            attrs(Verb::Delete, "namespaces", "", "default")
        ));
    }

    #[test]
    fn the_scheduler_binds_and_writes_status_only() {
        let s = who("system:kube-scheduler", &[]);
        assert!(allowed(&s, attrs(Verb::Watch, "pods", "", "")));
        assert!(allowed(
            &s,
            attrs(Verb::Create, "pods/binding", "default", "web-1")
        ));
        assert!(allowed(
            &s,
            attrs(Verb::Update, "pods/status", "default", "web-1")
        ));
        assert!(allowed(
            &s,
            attrs(Verb::Update, "leases", "kube-system", "kube-scheduler")
        ));
        assert!(!allowed(
            &s,
            attrs(Verb::Update, "pods", "default", "web-1")
        ));
        assert!(!allowed(
            &s,
            attrs(Verb::Delete, "pods", "default", "web-1")
        ));
        assert!(!allowed(
            &s,
            attrs(Verb::Create, "replicasets", "default", "")
        ));
    }

    #[test]
    fn a_node_touches_only_its_own_node_lease_and_pods() {
        let n = who("system:node:worker1", &["system:nodes"]);
        assert!(allowed(&n, attrs(Verb::Create, "nodes", "", "worker1")));
        assert!(allowed(
            &n,
            attrs(Verb::Update, "nodes/status", "", "worker1")
        ));
        assert!(!allowed(
            &n,
            attrs(Verb::Update, "nodes/status", "", "worker2")
        ));
        assert!(!allowed(&n, attrs(Verb::Delete, "nodes", "", "worker1")));
        assert!(allowed(
            &n,
            attrs(Verb::Update, "leases", "kube-node-lease", "worker1")
        ));
        assert!(!allowed(
            &n,
            attrs(Verb::Update, "leases", "kube-node-lease", "worker2")
        ));
        assert!(!allowed(
            &n,
            attrs(Verb::Update, "leases", "kube-system", "kube-scheduler")
        ));
        let mut watch = attrs(Verb::Watch, "pods", "", "");
        assert!(!allowed(&n, watch));
        watch.field_selector = "spec.nodeName=worker1";
        assert!(allowed(&n, watch));
        watch.field_selector = "spec.nodeName=worker2";
        assert!(!allowed(&n, watch));
        for a in [
            attrs(Verb::Get, "pods", "default", "web-1"),
            attrs(Verb::Update, "pods/status", "default", "web-1"),
            attrs(Verb::Delete, "pods", "default", "web-1"),
        ] {
            assert_eq!(
                authorize(Mode::NodeRbac, &n, &a),
                Decision::IfBoundTo("worker1".into()),
                "{a:?}"
            );
        }
        assert!(!allowed(&n, attrs(Verb::Create, "pods", "default", "")));
        assert!(!allowed(
            &n,
            attrs(Verb::Update, "pods", "default", "web-1")
        ));
        assert!(!allowed(
            &n,
            attrs(Verb::Create, "pods/binding", "default", "web-1")
        ));
        assert!(!allowed(&n, attrs(Verb::List, "replicasets", "", "")));
        assert!(allowed(&n, attrs(Verb::Create, "events", "default", "")));
        // A node name without the group is no node.
        let fake = who("system:node:worker1", &[]);
        assert!(!allowed(&fake, attrs(Verb::Get, "nodes", "", "worker1")));
    }

    #[test]
    fn resources_are_named_with_their_group() {
        assert_eq!(qualified("pods/status"), "pods");
        assert_eq!(qualified("replicasets"), "replicasets.apps");
        assert_eq!(qualified("leases"), "leases.coordination.k8s.io");
        let list = crate::error::ApiError::Forbidden {
            resource: "pods".into(),
            name: String::new(),
            why: "x".into(),
        };
        assert_eq!(list.to_string(), "pods is forbidden: x");
    }

    #[test]
    fn denials_read_like_kubectls() {
        let n = who("system:node:worker2", &["system:nodes"]);
        let a = attrs(Verb::Delete, "pods", "default", "web");
        assert_eq!(
            denial_message(&n, &a, "node \"worker2\" can only delete pods bound to it"),
            "User \"system:node:worker2\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\": node \"worker2\" can only delete pods bound to it"
        );
        let a = attrs(Verb::Update, "leases", "kube-system", "kube-scheduler");
        assert!(denial_message(&n, &a, "x").contains("API group \"coordination.k8s.io\""));
    }
}
