//! Output of `get`: kubectl's tables per kind (columns, STATUS and AGE computed as kubectl
//! does), and `-o yaml|json|name`.
//!
//! Everything here is pure: objects and `now` in, text out, so tests build objects in code and
//! assert the exact text.
use kl_api::{Event, LabelSelector, Lease, Namespace, Node, Object, Pod, ReplicaSet};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::resources::{kind_ref, object_ref, usage};
use super::tabwriter::TabWriter;
use super::timefmt::{age, parse_timestamp};

/// `-o`: how objects are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

impl Output {
    /// Reads `-o`; kubectl's error for anything else.
    pub fn parse(o: Option<&str>) -> anyhow::Result<Output> {
        Ok(match o.unwrap_or("") {
            "" => Output::Table,
            "wide" => Output::Wide,
            "yaml" => Output::Yaml,
            "json" => Output::Json,
            "name" => Output::Name,
            other => {
                return Err(usage(format!(
                    "unable to match a printer suitable for the output format \"{other}\", allowed formats are: json,name,wide,yaml"
                )))
            }
        })
    }
}

/// How a table is laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableOpts {
    /// `-o wide`: the extra columns.
    pub wide: bool,
    /// `-A` on a namespaced kind: a NAMESPACE column first.
    pub namespace_column: bool,
    /// Several kinds in one `get`: names are printed `pod/web`.
    pub kind_prefix: bool,
}

/// The header of a kind's table.
pub fn headers(kind: kl_api::Kind, opts: TableOpts) -> Vec<&'static str> {
    use kl_api::Kind::*;
    let mut h: Vec<&'static str> = match (kind, opts.wide) {
        (Pod, false) => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        (Pod, true) => vec![
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES",
        ],
        (Node, false) => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        (Node, true) => vec![
            "NAME",
            "STATUS",
            "ROLES",
            "AGE",
            "VERSION",
            "INTERNAL-IP",
            "EXTERNAL-IP",
            "OS-IMAGE",
            "KERNEL-VERSION",
            "CONTAINER-RUNTIME",
        ],
        (ReplicaSet, false) => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        (ReplicaSet, true) => vec![
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "SELECTOR",
        ],
        (Lease, _) => vec!["NAME", "HOLDER", "AGE"],
        (Event, false) => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        (Event, true) => vec![
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST SEEN",
            "COUNT",
            "NAME",
        ],
        (Namespace, _) => vec!["NAME", "STATUS", "AGE"],
    };
    if opts.namespace_column {
        h.insert(0, "NAMESPACE");
    }
    h
}

/// One object's row, matching [`headers`].
pub fn row(o: &Object, opts: TableOpts, now: OffsetDateTime) -> Vec<String> {
    let mut r = match o {
        Object::Pod(p) => pod_row(p, opts.wide, now),
        Object::Node(n) => node_row(n, opts.wide, now),
        Object::ReplicaSet(rs) => rs_row(rs, opts.wide, now),
        Object::Lease(l) => lease_row(l, now),
        Object::Event(e) => event_row(e, opts.wide, now),
        Object::Namespace(ns) => namespace_row(ns, now),
    };
    // Events lead with LAST SEEN, not the name.
    if opts.kind_prefix && !matches!(o, Object::Event(_)) {
        r[0] = object_ref(o);
    }
    if opts.namespace_column {
        r.insert(0, o.namespace().to_string());
    }
    r
}

/// A whole table: the header (unless `no_headers`) and one row per object, through `w` (whose
/// remembered widths keep later `-w` rows aligned).
pub fn table(
    w: &mut TabWriter,
    kind: kl_api::Kind,
    objects: &[Object],
    opts: TableOpts,
    no_headers: bool,
    now: OffsetDateTime,
) -> String {
    if !no_headers {
        w.row(&headers(kind, opts));
    }
    for o in objects {
        w.row(&row(o, opts, now));
    }
    w.flush()
}

fn creation(meta: Option<&kl_api::ObjectMeta>) -> &str {
    meta.map_or("", |m| m.creation_timestamp.as_str())
}

fn name_of(meta: Option<&kl_api::ObjectMeta>) -> String {
    meta.map_or(String::new(), |m| m.name.clone())
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

/// What kubectl shows of a pod: STATUS, ready and total containers, restarts and the time of
/// the last one (`printPod` in kubectl's printers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSummary {
    pub status: String,
    pub ready: usize,
    pub total: usize,
    pub restarts: i64,
    pub last_restart: Option<OffsetDateTime>,
}

pub fn pod_summary(p: &Pod) -> PodSummary {
    let status = p.status.clone().unwrap_or_default();
    let spec = p.spec.clone().unwrap_or_default();
    let mut reason = if status.reason.is_empty() {
        status.phase.clone()
    } else {
        status.reason.clone()
    };
    if reason.is_empty() {
        reason = "Pending".to_string();
    }
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut last_restart: Option<OffsetDateTime> = None;
    let mut has_running = false;
    for cs in status.container_statuses.iter().rev() {
        restarts += i64::from(cs.restart_count);
        if let Some(t) = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| parse_timestamp(&t.finished_at))
        {
            if last_restart.is_none_or(|l| t > l) {
                last_restart = Some(t);
            }
        }
        let state = cs.state.clone().unwrap_or_default();
        match (&state.waiting, &state.terminated) {
            (Some(w), _) if !w.reason.is_empty() => reason = w.reason.clone(),
            (_, Some(t)) if !t.reason.is_empty() => reason = t.reason.clone(),
            (_, Some(t)) => reason = format!("ExitCode:{}", t.exit_code),
            _ => {
                if cs.ready && state.running.is_some() {
                    has_running = true;
                    ready += 1;
                }
            }
        }
    }
    if reason == "Completed" && has_running {
        let pod_ready = status
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True");
        reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
    }
    let deleting = p
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty());
    let terminal = matches!(status.phase.as_str(), "Succeeded" | "Failed");
    if deleting && status.reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && !terminal {
        // A finished pod being deleted keeps showing how it finished (Completed, Error).
        reason = "Terminating".to_string();
    }
    PodSummary {
        status: reason,
        ready,
        total: spec.containers.len(),
        restarts,
        last_restart,
    }
}

fn pod_row(p: &Pod, wide: bool, now: OffsetDateTime) -> Vec<String> {
    let s = pod_summary(p);
    let restarts = match s.last_restart {
        Some(t) if s.restarts != 0 => format!(
            "{} ({} ago)",
            s.restarts,
            super::timefmt::human_duration_signed((now - t).whole_seconds())
        ),
        _ => s.restarts.to_string(),
    };
    let mut r = vec![
        name_of(p.metadata.as_ref()),
        format!("{}/{}", s.ready, s.total),
        s.status,
        restarts,
        age(creation(p.metadata.as_ref()), now),
    ];
    if wide {
        let status = p.status.clone().unwrap_or_default();
        let node = p.spec.as_ref().map_or("", |s| s.node_name.as_str());
        r.push(or_none(&status.pod_ip));
        r.push(or_none(node));
        // kube-lite has no preemption (nominatedNodeName) nor readiness gates.
        r.push("<none>".to_string());
        r.push("<none>".to_string());
    }
    r
}

/// `Ready`, `NotReady` or `Unknown`, then `,SchedulingDisabled` when cordoned.
pub fn node_status(n: &Node) -> String {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"));
    let mut status = match ready {
        Some(c) if c.status == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n.spec.as_ref().is_some_and(|s| s.unschedulable) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// `node-role.kubernetes.io/<role>` labels (and `kubernetes.io/role`), sorted, or `<none>`.
pub fn node_roles(n: &Node) -> String {
    let labels = n.metadata.as_ref().map(|m| &m.labels);
    let mut roles: Vec<&str> = labels
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then_some(role)
            } else if k == "kubernetes.io/role" {
                (!v.is_empty()).then_some(v.as_str())
            } else {
                None
            }
        })
        .collect();
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    }
}

fn node_address(n: &Node, kind: &str) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.iter().find(|a| a.r#type == kind))
        .map_or("<none>".to_string(), |a| a.address.clone())
}

fn node_row(n: &Node, wide: bool, now: OffsetDateTime) -> Vec<String> {
    let info = n
        .status
        .as_ref()
        .and_then(|s| s.node_info.clone())
        .unwrap_or_default();
    let mut r = vec![
        name_of(n.metadata.as_ref()),
        node_status(n),
        node_roles(n),
        age(creation(n.metadata.as_ref()), now),
        // Upstream prints the field as is; an empty cell would shift the columns.
        or_none(&info.kubelet_version),
    ];
    if wide {
        let unknown = |s: &str| {
            if s.is_empty() {
                "<unknown>".to_string()
            } else {
                s.to_string()
            }
        };
        r.push(node_address(n, "InternalIP"));
        r.push(node_address(n, "ExternalIP"));
        r.push(unknown(&info.os_image));
        r.push(unknown(&info.kernel_version));
        r.push(unknown(&info.container_runtime_version));
    }
    r
}

/// A label selector as kubectl prints it: `app=web,tier in (a,b),!legacy`, sorted by key;
/// `<none>` when empty.
pub fn format_selector(sel: Option<&LabelSelector>) -> String {
    let Some(sel) = sel else {
        return "<none>".to_string();
    };
    let mut reqs: Vec<(String, String)> = sel
        .match_labels
        .iter()
        .map(|(k, v)| (k.clone(), format!("{k}={v}")))
        .collect();
    for e in &sel.match_expressions {
        let mut values = e.values.clone();
        values.sort();
        let text = match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({})", e.key, values.join(",")),
        };
        reqs.push((e.key.clone(), text));
    }
    if reqs.is_empty() {
        return "<none>".to_string();
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

fn rs_row(rs: &ReplicaSet, wide: bool, now: OffsetDateTime) -> Vec<String> {
    let spec = rs.spec.clone().unwrap_or_default();
    let status = rs.status.unwrap_or_default();
    let mut r = vec![
        name_of(rs.metadata.as_ref()),
        spec.replicas.unwrap_or(1).to_string(),
        status.replicas.to_string(),
        status.ready_replicas.to_string(),
        age(creation(rs.metadata.as_ref()), now),
    ];
    if wide {
        let containers: Vec<String> = spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        r.push(or_none(&containers.join(",")));
        r.push(format_selector(spec.selector.as_ref()));
    }
    r
}

fn lease_row(l: &Lease, now: OffsetDateTime) -> Vec<String> {
    vec![
        name_of(l.metadata.as_ref()),
        l.spec
            .as_ref()
            .map_or(String::new(), |s| s.holder_identity.clone()),
        age(creation(l.metadata.as_ref()), now),
    ]
}

/// An event's "last seen" as kubectl prints it: `5s`, or `5s (x3 over 2m)`.
pub fn event_interval(e: &Event, now: OffsetDateTime) -> (String, String) {
    let first_ts = if e.first_timestamp.is_empty() {
        creation(e.metadata.as_ref())
    } else {
        e.first_timestamp.as_str()
    };
    let first = age(first_ts, now);
    let mut last = if e.last_timestamp.is_empty() {
        first.clone()
    } else {
        age(&e.last_timestamp, now)
    };
    if e.count > 1 {
        last = format!("{last} (x{} over {first})", e.count);
    }
    (last, first)
}

pub fn event_source(e: &Event) -> String {
    match &e.source {
        Some(s) if !s.host.is_empty() => format!("{}, {}", s.component, s.host),
        Some(s) => s.component.clone(),
        None => String::new(),
    }
}

fn event_row(e: &Event, wide: bool, now: OffsetDateTime) -> Vec<String> {
    let (last, first) = event_interval(e, now);
    let obj = e.involved_object.clone().unwrap_or_default();
    let target = format!("{}/{}", obj.kind.to_ascii_lowercase(), obj.name);
    if !wide {
        return vec![
            last,
            e.r#type.clone(),
            e.reason.clone(),
            target,
            e.message.trim().to_string(),
        ];
    }
    vec![
        last,
        e.r#type.clone(),
        e.reason.clone(),
        target,
        obj.field_path.clone(),
        event_source(e),
        e.message.trim().to_string(),
        first,
        e.count.to_string(),
        name_of(e.metadata.as_ref()),
    ]
}

fn namespace_row(ns: &Namespace, now: OffsetDateTime) -> Vec<String> {
    vec![
        name_of(ns.metadata.as_ref()),
        ns.status
            .as_ref()
            .map_or(String::new(), |s| s.phase.clone()),
        age(creation(ns.metadata.as_ref()), now),
    ]
}

/// `-o name`: one `kind.group/name` per line.
pub fn names(objects: &[Object]) -> String {
    objects
        .iter()
        .map(|o| format!("{}\n", object_ref(o)))
        .collect()
}

/// Rebuilds every map with its keys in order: kubectl's YAML comes from a JSON map, so its
/// keys are sorted.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// kubectl's `kind: List` around several objects.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a> {
    api_version: &'static str,
    items: &'a [Object],
    kind: &'static str,
    metadata: ListMeta,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
}

fn list(objects: &[Object]) -> List<'_> {
    List {
        api_version: "v1",
        items: objects,
        kind: "List",
        metadata: ListMeta {
            resource_version: String::new(),
        },
    }
}

/// `-o yaml`: the object itself when `single`, else a `kind: List`; keys sorted as kubectl's.
pub fn yaml(objects: &[Object], single: bool) -> anyhow::Result<String> {
    let value = match (single, objects) {
        (true, [one]) => serde_json::to_value(one)?,
        _ => serde_json::to_value(list(objects))?,
    };
    Ok(serde_yaml_ng::to_string(&sorted(value))?)
}

/// `-o json`: as [`yaml`], indented by four spaces as kubectl's.
pub fn json(objects: &[Object], single: bool) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    match (single, objects) {
        (true, [one]) => one.serialize(&mut ser)?,
        _ => list(objects).serialize(&mut ser)?,
    }
    buf.push(b'\n');
    Ok(String::from_utf8(buf)?)
}

/// `No resources found in default namespace.` (stderr, exit 0), as kubectl.
pub fn no_resources(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace."),
        None => "No resources found".to_string(),
    }
}

/// The subject of a message about an object: `pod "web"`, `replicaset.apps "web"`.
pub fn quoted_ref(kind: kl_api::Kind, name: &str) -> String {
    format!("{} \"{name}\"", kind_ref(kind))
}

#[cfg(test)]
mod tests {
    use kl_api::*;

    use super::*;
    use crate::commands::timefmt::parse_timestamp;

    fn now() -> OffsetDateTime {
        parse_timestamp("2024-05-01T12:00:00Z").unwrap()
    }

    fn meta(name: &str, created: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            creation_timestamp: created.into(),
            ..Default::default()
        })
    }

    fn container_status(ready: bool, restarts: i32, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: "main".into(),
            ready,
            restart_count: restarts,
            state: Some(state),
            last_state: None,
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning {
                started_at: "2024-05-01T11:00:00Z".into(),
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, phase: &str, statuses: Vec<ContainerStatus>) -> Pod {
        Pod {
            metadata: meta(name, "2024-05-01T11:57:30Z"),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    ..Default::default()
                }],
                node_name: if phase == "Running" {
                    "worker-1".into()
                } else {
                    String::new()
                },
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: phase.into(),
                container_statuses: statuses,
                pod_ip: if phase == "Running" {
                    "10.1.0.5".into()
                } else {
                    String::new()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn objects<T: Resource>(v: Vec<T>) -> Vec<Object> {
        v.into_iter().map(Resource::into_object).collect()
    }

    #[test]
    fn pods_print_like_kubectl() {
        let mut crashing = container_status(
            false,
            4,
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: "CrashLoopBackOff".into(),
                    message: String::new(),
                }),
                ..Default::default()
            },
        );
        crashing.last_state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                reason: "Error".into(),
                finished_at: "2024-05-01T11:59:00Z".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut deleting = pod("old", "Running", vec![container_status(true, 0, running())]);
        deleting.metadata.as_mut().unwrap().deletion_timestamp = "2024-05-01T11:59:59Z".into();
        let pods = objects(vec![
            pod(
                "web-1",
                "Running",
                vec![container_status(true, 0, running())],
            ),
            pod("pending", "", vec![]),
            pod("crash", "Running", vec![crashing]),
            deleting,
        ]);
        let text = table(
            &mut TabWriter::table(),
            Kind::Pod,
            &pods,
            TableOpts::default(),
            false,
            now(),
        );
        assert_eq!(
            text,
            "NAME      READY   STATUS             RESTARTS      AGE\n\
             web-1     1/1     Running            0             2m30s\n\
             pending   0/1     Pending            0             2m30s\n\
             crash     0/1     CrashLoopBackOff   4 (60s ago)   2m30s\n\
             old       1/1     Terminating        0             2m30s\n"
        );
    }

    #[test]
    fn wide_pods_add_ip_and_node_and_all_namespaces_adds_namespace() {
        let pods = objects(vec![
            pod(
                "web-1",
                "Running",
                vec![container_status(true, 0, running())],
            ),
            pod("pending", "Pending", vec![]),
        ]);
        let opts = TableOpts {
            wide: true,
            namespace_column: true,
            kind_prefix: false,
        };
        let text = table(
            &mut TabWriter::table(),
            Kind::Pod,
            &pods,
            opts,
            false,
            now(),
        );
        assert_eq!(
            text,
            "NAMESPACE   NAME      READY   STATUS    RESTARTS   AGE     IP         NODE       NOMINATED NODE   READINESS GATES\n\
             default     web-1     1/1     Running   0          2m30s   10.1.0.5   worker-1   <none>           <none>\n\
             default     pending   0/1     Pending   0          2m30s   <none>     <none>     <none>           <none>\n"
        );
        let text = table(&mut TabWriter::table(), Kind::Pod, &pods, opts, true, now());
        assert!(
            text.starts_with("default   web-1     1/1   Running"),
            "{text}"
        );
    }

    #[test]
    fn completed_and_errored_containers_show_their_reason() {
        let done = |reason: &str, code: i32| {
            container_status(
                false,
                0,
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        reason: reason.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
        };
        assert_eq!(
            pod_summary(&pod("a", "Succeeded", vec![done("Completed", 0)])).status,
            "Completed"
        );
        assert_eq!(
            pod_summary(&pod("a", "Failed", vec![done("Error", 2)])).status,
            "Error"
        );
        assert_eq!(
            pod_summary(&pod("a", "Failed", vec![done("", 137)])).status,
            "ExitCode:137"
        );
        // Being deleted: Terminating, unless already finished (upstream since 1.27).
        let mut finished = pod("a", "Succeeded", vec![done("Completed", 0)]);
        finished.metadata.as_mut().unwrap().deletion_timestamp = "2024-05-01T11:59:59Z".into();
        assert_eq!(pod_summary(&finished).status, "Completed");
        let mut lost = pod("a", "Running", vec![container_status(true, 0, running())]);
        lost.metadata.as_mut().unwrap().deletion_timestamp = "2024-05-01T11:59:59Z".into();
        lost.status.as_mut().unwrap().reason = "NodeLost".into();
        assert_eq!(pod_summary(&lost).status, "Unknown");
    }

    #[test]
    fn ready_counts_ready_running_containers_and_restarts_add_up() {
        let mut p = pod(
            "two",
            "Running",
            vec![
                container_status(true, 2, running()),
                container_status(false, 3, running()),
            ],
        );
        p.spec.as_mut().unwrap().containers.push(Container {
            name: "side".into(),
            ..Default::default()
        });
        let s = pod_summary(&p);
        assert_eq!((s.ready, s.total, s.restarts), (1, 2, 5));
        assert_eq!(s.status, "Running");
        // A waiting container's reason wins over the phase.
        let waiting = container_status(
            false,
            0,
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            pod_summary(&pod("c", "Pending", vec![waiting])).status,
            "ContainerCreating"
        );
    }

    fn node(name: &str, ready: Option<&str>, unschedulable: bool, roles: &[&str]) -> Node {
        let mut m = meta(name, "2024-04-28T08:00:00Z").unwrap();
        m.namespace.clear();
        for r in roles {
            m.labels
                .insert(format!("node-role.kubernetes.io/{r}"), String::new());
        }
        Node {
            metadata: Some(m),
            spec: Some(NodeSpec {
                unschedulable,
                taints: vec![],
            }),
            status: Some(NodeStatus {
                conditions: ready
                    .map(|s| NodeCondition {
                        r#type: "Ready".into(),
                        status: s.into(),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                addresses: vec![NodeAddress {
                    r#type: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn nodes_print_status_roles_and_cordoning() {
        let nodes = objects(vec![
            node(
                "master-1",
                Some("True"),
                false,
                &["control-plane", "master"],
            ),
            node("worker-1", Some("False"), true, &[]),
            node("worker-2", None, false, &[]),
        ]);
        let text = table(
            &mut TabWriter::table(),
            Kind::Node,
            &nodes,
            TableOpts::default(),
            false,
            now(),
        );
        assert_eq!(
            text,
            "NAME       STATUS                        ROLES                  AGE    VERSION\n\
             master-1   Ready                         control-plane,master   3d4h   <none>\n\
             worker-1   NotReady,SchedulingDisabled   <none>                 3d4h   <none>\n\
             worker-2   Unknown                       <none>                 3d4h   <none>\n"
        );
        let wide = TableOpts {
            wide: true,
            ..Default::default()
        };
        assert_eq!(
            row(&nodes[0], wide, now())[5..],
            ["10.0.0.1", "<none>", "<unknown>", "<unknown>", "<unknown>"]
        );
        // What the kubelet reports in status.nodeInfo.
        let mut n = node("worker1", Some("True"), false, &[]);
        n.status.as_mut().unwrap().node_info = Some(NodeSystemInfo {
            kubelet_version: "v0.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: "6.1.0-18-amd64".into(),
            container_runtime_version: "kubelet-lite://0.1.0".into(),
            ..Default::default()
        });
        let text = table(
            &mut TabWriter::table(),
            Kind::Node,
            &objects(vec![n]),
            wide,
            false,
            now(),
        );
        assert_eq!(
            text,
            "NAME      STATUS   ROLES    AGE    VERSION   INTERNAL-IP   EXTERNAL-IP   OS-IMAGE                         KERNEL-VERSION   CONTAINER-RUNTIME\n\
             worker1   Ready    <none>   3d4h   v0.1.0    10.0.0.1      <none>        Debian GNU/Linux 12 (bookworm)   6.1.0-18-amd64   kubelet-lite://0.1.0\n"
        );
    }

    #[test]
    fn replicasets_print_counts_and_wide_selector() {
        let rs = ReplicaSet {
            metadata: meta("web", "2024-05-01T09:30:00Z"),
            spec: Some(ReplicaSetSpec {
                replicas: Some(3),
                selector: Some(LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    match_expressions: vec![LabelSelectorRequirement {
                        key: "env".into(),
                        operator: "In".into(),
                        values: vec!["prod".into(), "dev".into()],
                    }],
                }),
                template: Some(PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![
                            Container {
                                name: "main".into(),
                                ..Default::default()
                            },
                            Container {
                                name: "side".into(),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    }),
                }),
            }),
            status: Some(ReplicaSetStatus {
                replicas: 3,
                ready_replicas: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let objs = objects(vec![rs]);
        let text = table(
            &mut TabWriter::table(),
            Kind::ReplicaSet,
            &objs,
            TableOpts::default(),
            false,
            now(),
        );
        assert_eq!(
            text,
            "NAME   DESIRED   CURRENT   READY   AGE\nweb    3         3         2       150m\n"
        );
        let wide = TableOpts {
            wide: true,
            ..Default::default()
        };
        let text = table(
            &mut TabWriter::table(),
            Kind::ReplicaSet,
            &objs,
            wide,
            false,
            now(),
        );
        assert_eq!(
            text,
            "NAME   DESIRED   CURRENT   READY   AGE    CONTAINERS   SELECTOR\n\
             web    3         3         2       150m   main,side    app=web,env in (dev,prod)\n"
        );
    }

    #[test]
    fn leases_namespaces_and_events() {
        let lease = Lease {
            metadata: meta("kube-scheduler", "2024-05-01T11:59:55Z"),
            spec: Some(LeaseSpec {
                holder_identity: "master-1_abc".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = table(
            &mut TabWriter::table(),
            Kind::Lease,
            &objects(vec![lease]),
            TableOpts::default(),
            false,
            now(),
        );
        assert_eq!(
            text,
            "NAME             HOLDER         AGE\nkube-scheduler   master-1_abc   5s\n"
        );
        let ns = Namespace {
            metadata: meta("default", "2022-05-02T12:00:00Z"),
            status: Some(NamespaceStatus {
                phase: "Active".into(),
            }),
            ..Default::default()
        };
        let text = table(
            &mut TabWriter::table(),
            Kind::Namespace,
            &objects(vec![ns]),
            TableOpts::default(),
            false,
            now(),
        );
        assert_eq!(text, "NAME      STATUS   AGE\ndefault   Active   2y\n");
        let ev = Event {
            metadata: meta("web-1.17a", "2024-05-01T11:58:00Z"),
            involved_object: Some(ObjectReference {
                kind: "Pod".into(),
                name: "web-1".into(),
                ..Default::default()
            }),
            reason: "Scheduled".into(),
            message: "Successfully assigned default/web-1 to worker-1".into(),
            r#type: "Normal".into(),
            count: 3,
            first_timestamp: "2024-05-01T11:58:00Z".into(),
            last_timestamp: "2024-05-01T11:59:50Z".into(),
            ..Default::default()
        };
        let text = table(
            &mut TabWriter::table(),
            Kind::Event,
            &objects(vec![ev]),
            TableOpts::default(),
            false,
            now(),
        );
        assert_eq!(
            text,
            "LAST SEEN          TYPE     REASON      OBJECT      MESSAGE\n\
             10s (x3 over 2m)   Normal   Scheduled   pod/web-1   Successfully assigned default/web-1 to worker-1\n"
        );
    }

    #[test]
    fn several_kinds_prefix_names() {
        let opts = TableOpts {
            kind_prefix: true,
            ..Default::default()
        };
        let o = pod("web-1", "Running", vec![]).into_object();
        assert_eq!(row(&o, opts, now())[0], "pod/web-1");
    }

    #[test]
    fn yaml_json_and_name_outputs() {
        let mut o = Lease {
            metadata: Some(ObjectMeta {
                name: "l".into(),
                namespace: "kube-system".into(),
                ..Default::default()
            }),
            spec: Some(LeaseSpec {
                holder_identity: "me".into(),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object();
        o.set_type_meta();
        assert_eq!(
            yaml(std::slice::from_ref(&o), true).unwrap(),
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: l\n  namespace: kube-system\nspec:\n  holderIdentity: me\n  leaseDurationSeconds: 15\n"
        );
        assert_eq!(
            yaml(&[], false).unwrap(),
            "apiVersion: v1\nitems: []\nkind: List\nmetadata:\n  resourceVersion: ''\n"
        );
        let j = json(std::slice::from_ref(&o), false).unwrap();
        assert!(j.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n        {\n            \"apiVersion\": \"coordination.k8s.io/v1\",\n            \"kind\": \"Lease\""), "{j}");
        let v: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["items"][0]["spec"]["holderIdentity"], "me");
        assert_eq!(names(&[o]), "lease.coordination.k8s.io/l\n");
    }

    #[test]
    fn messages_name_objects_as_kubectl() {
        assert_eq!(
            quoted_ref(Kind::ReplicaSet, "web"),
            "replicaset.apps \"web\""
        );
        assert_eq!(
            no_resources(Some("kube-public")),
            "No resources found in kube-public namespace."
        );
        assert_eq!(no_resources(None), "No resources found");
    }
}
