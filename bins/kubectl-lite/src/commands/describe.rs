//! `kubectl-lite describe`: kubectl's `Name:`/`Namespace:`/`Labels:` ... blocks per kind,
//! then the object's `Events:` (filtered client-side from the events list).
//!
//! The text is written with tabs between a field and its value, then aligned by kubectl's
//! describe tabwriter (see [`TabWriter::describe`]), so blocks line up as kubectl's do.
use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use clap::Args;
use kl_api::{
    Container, ContainerState, Event, Kind, Lease, Namespace, Node, Object, ObjectMeta, Pod,
    PodSpec, Probe, ReplicaSet,
};
use kl_client::ListParams;
use time::OffsetDateTime;

use super::printers::{event_interval, event_source, format_selector, node_roles};
use super::resources::{usage, Targets};
use super::session::{report, Globals, Reported, Session};
use super::tabwriter::TabWriter;
use super::timefmt::{age, parse_timestamp, rfc1123z};

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// TYPE [NAME...], or TYPE/NAME...
    #[arg(value_name = "TYPE[.NAME]")]
    pub args: Vec<String>,
    /// Label selector to filter on.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Describe the objects of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Whether to show events.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub show_events: bool,
}

pub async fn run(
    g: &Globals,
    args: DescribeArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let targets = Targets::parse(&args.args, "describe")?;
    if targets.has_names() && args.selector.is_some() {
        return Err(usage(
            "name cannot be provided when a selector is specified",
        ));
    }
    let s = Session::connect(g)?;
    let lp = ListParams::default().labels(args.selector.as_deref().unwrap_or(""));
    let mut objects = Vec::new();
    let mut failed = false;
    for (kind, names) in &targets.0 {
        let api = s.api(*kind, args.all_namespaces);
        if names.is_empty() {
            objects.extend(api.list_all(&lp).await?.items);
            continue;
        }
        for name in names {
            match api.get(name).await {
                Ok(o) => objects.push(o),
                Err(e) if e.is_transport() => return Err(e.into()),
                Err(e) => {
                    report(err, &e.into());
                    failed = true;
                }
            }
        }
    }
    if objects.is_empty() && !targets.has_names() {
        let ns = (!args.all_namespaces).then_some(s.namespace.as_str());
        writeln!(err, "{}", super::printers::no_resources(ns))?;
    }
    // Events per namespace ("" = all), fetched once each.
    let mut events: HashMap<String, Vec<Event>> = HashMap::new();
    let now = OffsetDateTime::now_utc();
    for (i, o) in objects.iter().enumerate() {
        let mut evs = Vec::new();
        if args.show_events {
            let ns = if o.kind().namespaced() {
                o.namespace()
            } else {
                ""
            };
            if !events.contains_key(ns) {
                let list = s
                    .api_in(Kind::Event, ns)
                    .list_all(&ListParams::default())
                    .await?;
                let items = list
                    .items
                    .into_iter()
                    .filter_map(|e| match e {
                        Object::Event(e) => Some(e),
                        _ => None,
                    })
                    .collect();
                events.insert(ns.to_string(), items);
            }
            evs = events_for(o, &events[ns]);
        }
        let extra = match o {
            Object::ReplicaSet(rs) => Extra::Pods(owned_pods(&s, rs).await?),
            Object::Node(n) => {
                let lp = ListParams::default().fields(&format!(
                    "spec.nodeName={}",
                    n.metadata.as_ref().map_or("", |m| m.name.as_str())
                ));
                Extra::Pods(pods_of(s.api(Kind::Pod, true).list_all(&lp).await?.items))
            }
            _ => Extra::None,
        };
        let text = describe(o, &evs, &extra, args.show_events, now);
        if i > 0 {
            out.write_all(b"\n\n")?;
        }
        out.write_all(text.as_bytes())?;
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

fn pods_of(objects: Vec<Object>) -> Vec<Pod> {
    objects
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// The pods a ReplicaSet controls: matching its selector and owned by its uid.
async fn owned_pods(s: &Session, rs: &ReplicaSet) -> anyhow::Result<Vec<Pod>> {
    let meta = rs.metadata.clone().unwrap_or_default();
    let pods = pods_of(
        s.api_in(Kind::Pod, &meta.namespace)
            .list_all(&ListParams::default())
            .await?
            .items,
    );
    let selector = rs
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    Ok(pods
        .into_iter()
        .filter(|p| {
            let pm = p.metadata.clone().unwrap_or_default();
            let owned = pm
                .owner_references
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == meta.uid);
            owned && kl_api::validation::selector_matches(&selector, &pm.labels)
        })
        .collect())
}

/// What a describe shows besides the object itself.
#[derive(Debug, Default)]
pub enum Extra {
    #[default]
    None,
    /// A ReplicaSet's pods, or the pods on a node.
    Pods(Vec<Pod>),
}

/// The events about `o`, oldest first (kubectl's `SortableEvents`).
pub fn events_for(o: &Object, events: &[Event]) -> Vec<Event> {
    let meta = o.metadata().cloned().unwrap_or_default();
    let mut out: Vec<Event> = events
        .iter()
        .filter(|e| {
            let Some(r) = &e.involved_object else {
                return false;
            };
            r.kind == o.kind().as_str()
                && r.name == meta.name
                && (!o.kind().namespaced()
                    || r.namespace.is_empty()
                    || r.namespace == meta.namespace)
                && (r.uid.is_empty() || meta.uid.is_empty() || r.uid == meta.uid)
        })
        .cloned()
        .collect();
    let when = |e: &Event| {
        [&e.last_timestamp, &e.first_timestamp]
            .into_iter()
            .find_map(|t| parse_timestamp(t))
    };
    out.sort_by_key(|e| when(e));
    out
}

/// The whole text of one object's description.
pub fn describe(
    o: &Object,
    events: &[Event],
    extra: &Extra,
    show_events: bool,
    now: OffsetDateTime,
) -> String {
    let mut d = D::default();
    match o {
        Object::Pod(p) => pod(&mut d, p),
        Object::Node(n) => node(&mut d, n, extra, now),
        Object::ReplicaSet(rs) => replicaset(&mut d, rs, extra),
        Object::Lease(l) => lease(&mut d, l),
        Object::Namespace(ns) => namespace(&mut d, ns),
        Object::Event(e) => event(&mut d, e),
    }
    if show_events {
        d.events(events, now);
    }
    d.finish()
}

/// Text with tabs, aligned at the end; `level` indents by two spaces each, as kubectl's
/// PrefixWriter.
#[derive(Default)]
struct D {
    buf: String,
}

impl D {
    fn line(&mut self, level: usize, text: &str) {
        for _ in 0..level {
            self.buf.push_str("  ");
        }
        self.buf.push_str(text);
        self.buf.push('\n');
    }

    fn kv(&mut self, level: usize, key: &str, value: impl std::fmt::Display) {
        self.line(level, &format!("{key}:\t{value}"));
    }

    /// A map, one `k=v` (or `k: v`) per line, the first beside the title; `<none>` if empty.
    fn map(&mut self, indent: &str, title: &str, m: &BTreeMap<String, String>, sep: &str) {
        if m.is_empty() {
            self.buf.push_str(&format!("{indent}{title}:\t<none>\n"));
            return;
        }
        for (i, (k, v)) in m.iter().enumerate() {
            if i == 0 {
                self.buf
                    .push_str(&format!("{indent}{title}:\t{k}{sep}{v}\n"));
            } else {
                self.buf.push_str(&format!("{indent}\t{k}{sep}{v}\n"));
            }
        }
    }

    fn list(&mut self, title: &str, items: &[String]) {
        if items.is_empty() {
            self.kv(0, title, "<none>");
            return;
        }
        for (i, it) in items.iter().enumerate() {
            if i == 0 {
                self.kv(0, title, it);
            } else {
                self.line(0, &format!("\t{it}"));
            }
        }
    }

    fn meta_head(&mut self, m: &ObjectMeta, namespaced: bool) {
        self.kv(0, "Name", &m.name);
        if namespaced {
            self.kv(0, "Namespace", &m.namespace);
        }
    }

    fn labels_annotations(&mut self, m: &ObjectMeta) {
        self.map("", "Labels", &m.labels, "=");
        self.map("", "Annotations", &m.annotations, ": ");
    }

    fn controlled_by(&mut self, m: &ObjectMeta) {
        if let Some(r) = m
            .owner_references
            .iter()
            .find(|r| r.controller == Some(true))
        {
            self.kv(0, "Controlled By", format!("{}/{}", r.kind, r.name));
        }
    }

    fn events(&mut self, events: &[Event], now: OffsetDateTime) {
        if events.is_empty() {
            self.kv(0, "Events", "<none>");
            return;
        }
        self.line(0, "Events:");
        self.line(1, "Type\tReason\tAge\tFrom\tMessage");
        self.line(1, "----\t------\t----\t----\t-------");
        for e in events {
            let (last, first) = event_interval(e, now);
            let interval = if e.count > 1 { last } else { first };
            self.line(
                1,
                &format!(
                    "{}\t{}\t{}\t{}\t{}",
                    e.r#type,
                    e.reason,
                    interval,
                    event_source(e),
                    e.message.trim()
                ),
            );
        }
    }

    fn finish(self) -> String {
        let mut tw = TabWriter::describe();
        tw.write(&self.buf);
        tw.flush()
    }
}

fn pod(d: &mut D, p: &Pod) {
    let m = p.metadata.clone().unwrap_or_default();
    let spec = p.spec.clone().unwrap_or_default();
    let status = p.status.clone().unwrap_or_default();
    d.meta_head(&m, true);
    let node = match (spec.node_name.as_str(), status.host_ip.as_str()) {
        ("", _) => "<none>".to_string(),
        (n, "") => n.to_string(),
        (n, ip) => format!("{n}/{ip}"),
    };
    d.kv(0, "Node", node);
    if !status.start_time.is_empty() {
        d.kv(0, "Start Time", rfc1123z(&status.start_time));
    }
    d.labels_annotations(&m);
    if !m.deletion_timestamp.is_empty() {
        d.kv(
            0,
            "Status",
            format!(
                "Terminating (lasts {})",
                age(&m.deletion_timestamp, OffsetDateTime::now_utc())
            ),
        );
        if let Some(g) = m.deletion_grace_period_seconds {
            d.kv(0, "Termination Grace Period", format!("{g}s"));
        }
    } else {
        let phase = if status.phase.is_empty() {
            "Pending"
        } else {
            &status.phase
        };
        d.kv(0, "Status", phase);
    }
    if !status.reason.is_empty() {
        d.kv(0, "Reason", &status.reason);
    }
    if !status.message.is_empty() {
        d.kv(0, "Message", &status.message);
    }
    d.kv(0, "IP", &status.pod_ip);
    d.controlled_by(&m);
    d.line(0, "Containers:");
    for c in &spec.containers {
        let cs = status.container_statuses.iter().find(|s| s.name == c.name);
        d.line(1, &format!("{}:", c.name));
        container_basics(d, c);
        if let Some(cs) = cs {
            container_state(d, "State", cs.state.as_ref());
            if let Some(last) = cs
                .last_state
                .as_ref()
                .filter(|s| **s != ContainerState::default())
            {
                container_state(d, "Last State", Some(last));
            }
            d.kv(2, "Ready", if cs.ready { "True" } else { "False" });
            d.kv(2, "Restart Count", cs.restart_count);
        }
        container_rest(d, c);
    }
    if !status.conditions.is_empty() {
        d.line(0, "Conditions:");
        d.line(1, "Type\tStatus");
        for c in &status.conditions {
            d.line(1, &format!("{} \t{} ", c.r#type, c.status));
        }
    }
    pod_scheduling(d, &spec);
}

fn pod_scheduling(d: &mut D, spec: &PodSpec) {
    d.map("", "Node-Selectors", &spec.node_selector, "=");
    let tolerations: Vec<String> = spec
        .tolerations
        .iter()
        .map(|t| {
            let mut s = t.key.clone();
            if !t.value.is_empty() {
                s.push_str(&format!("={}", t.value));
            }
            if !t.effect.is_empty() {
                s.push_str(&format!(":{}", t.effect));
            }
            if t.operator == "Exists" && t.value.is_empty() {
                if t.key.is_empty() && t.effect.is_empty() {
                    s.push_str("op=Exists");
                } else {
                    s.push_str(" op=Exists");
                }
            }
            if let Some(secs) = t.toleration_seconds {
                s.push_str(&format!(" for {secs}s"));
            }
            s
        })
        .collect();
    d.list("Tolerations", &tolerations);
}

/// Ports and command: what kubectl prints before a container's state.
fn container_basics(d: &mut D, c: &Container) {
    let ports: Vec<String> = c
        .ports
        .iter()
        .map(|p| {
            let proto = if p.protocol.is_empty() {
                "TCP"
            } else {
                &p.protocol
            };
            format!("{}/{proto}", p.container_port)
        })
        .collect();
    match ports.len() {
        0 => d.kv(2, "Port", "<none>"),
        1 => d.kv(2, "Port", &ports[0]),
        _ => d.kv(2, "Ports", ports.join(", ")),
    }
    for (title, items) in [("Command", &c.command), ("Args", &c.args)] {
        if !items.is_empty() {
            d.line(2, &format!("{title}:"));
            for it in items {
                for l in it.split('\n') {
                    d.line(3, l);
                }
            }
        }
    }
}

/// Resources, probes and environment: what kubectl prints after a container's state.
fn container_rest(d: &mut D, c: &Container) {
    let res = c.resources.clone().unwrap_or_default();
    for (title, m) in [("Limits", &res.limits), ("Requests", &res.requests)] {
        if !m.is_empty() {
            d.line(2, &format!("{title}:"));
            for (k, v) in m {
                d.kv(3, k, v);
            }
        }
    }
    if let Some(p) = &c.liveness_probe {
        d.kv(2, "Liveness", probe(p));
    }
    if let Some(p) = &c.readiness_probe {
        d.kv(2, "Readiness", probe(p));
    }
    if c.env.is_empty() {
        d.kv(2, "Environment", "<none>");
    } else {
        d.line(2, "Environment:");
        for e in &c.env {
            d.kv(3, &e.name, &e.value);
        }
    }
    if !c.working_dir.is_empty() {
        d.kv(2, "Working Dir", &c.working_dir);
    }
}

fn probe(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds,
        p.timeout_seconds,
        p.period_seconds,
        p.success_threshold,
        p.failure_threshold
    );
    if let Some(e) = &p.exec {
        format!("exec [{}] {attrs}", e.command.join(" "))
    } else if let Some(h) = &p.http_get {
        let scheme = if h.scheme.is_empty() {
            "http".to_string()
        } else {
            h.scheme.to_ascii_lowercase()
        };
        format!("http-get {scheme}://:{}{} {attrs}", h.port, h.path)
    } else if let Some(t) = &p.tcp_socket {
        format!("tcp-socket :{} {attrs}", t.port)
    } else {
        format!("unknown {attrs}")
    }
}

fn container_state(d: &mut D, title: &str, state: Option<&ContainerState>) {
    let state = state.cloned().unwrap_or_default();
    if let Some(r) = &state.running {
        d.kv(2, title, "Running");
        d.kv(3, "Started", rfc1123z(&r.started_at));
    } else if let Some(t) = &state.terminated {
        d.kv(2, title, "Terminated");
        if !t.reason.is_empty() {
            d.kv(3, "Reason", &t.reason);
        }
        if !t.message.is_empty() {
            d.kv(3, "Message", &t.message);
        }
        d.kv(3, "Exit Code", t.exit_code);
        d.kv(3, "Started", rfc1123z(&t.started_at));
        d.kv(3, "Finished", rfc1123z(&t.finished_at));
    } else {
        d.kv(2, title, "Waiting");
        if let Some(w) = state.waiting.as_ref().filter(|w| !w.reason.is_empty()) {
            d.kv(3, "Reason", &w.reason);
        }
    }
}

fn node(d: &mut D, n: &Node, extra: &Extra, now: OffsetDateTime) {
    let m = n.metadata.clone().unwrap_or_default();
    let spec = n.spec.clone().unwrap_or_default();
    let status = n.status.clone().unwrap_or_default();
    d.meta_head(&m, false);
    d.kv(0, "Roles", node_roles(n));
    d.labels_annotations(&m);
    d.kv(0, "CreationTimestamp", rfc1123z(&m.creation_timestamp));
    let taints: Vec<String> = spec
        .taints
        .iter()
        .map(|t| {
            if t.value.is_empty() {
                format!("{}:{}", t.key, t.effect)
            } else {
                format!("{}={}:{}", t.key, t.value, t.effect)
            }
        })
        .collect();
    d.list("Taints", &taints);
    d.kv(0, "Unschedulable", spec.unschedulable);
    if status.conditions.is_empty() {
        d.kv(0, "Conditions", "<none>");
    } else {
        d.line(0, "Conditions:");
        d.line(
            1,
            "Type\tStatus\tLastHeartbeatTime\tLastTransitionTime\tReason\tMessage",
        );
        d.line(
            1,
            "----\t------\t-----------------\t------------------\t------\t-------",
        );
        for c in &status.conditions {
            d.line(
                1,
                &format!(
                    "{} \t{} \t{} \t{} \t{} \t{}",
                    c.r#type,
                    c.status,
                    rfc1123z(&c.last_heartbeat_time),
                    rfc1123z(&c.last_transition_time),
                    c.reason,
                    c.message
                ),
            );
        }
    }
    d.line(0, "Addresses:");
    for a in &status.addresses {
        d.kv(1, &a.r#type, &a.address);
    }
    for (title, m) in [
        ("Capacity", &status.capacity),
        ("Allocatable", &status.allocatable),
    ] {
        if !m.is_empty() {
            d.line(0, &format!("{title}:"));
            for (k, v) in m {
                d.kv(1, k, v);
            }
        }
    }
    if let Some(i) = &status.node_info {
        d.line(0, "System Info:");
        for (k, v) in [
            ("Machine ID", &i.machine_id),
            ("System UUID", &i.system_uuid),
            ("Boot ID", &i.boot_id),
            ("Kernel Version", &i.kernel_version),
            ("OS Image", &i.os_image),
            ("Operating System", &i.operating_system),
            ("Architecture", &i.architecture),
            ("Container Runtime Version", &i.container_runtime_version),
            ("Kubelet Version", &i.kubelet_version),
            ("Kube-Proxy Version", &i.kube_proxy_version),
        ] {
            d.kv(1, k, v);
        }
    }
    if let Extra::Pods(pods) = extra {
        d.kv(
            0,
            "Non-terminated Pods",
            format!("({} in total)", pods.len()),
        );
        if !pods.is_empty() {
            d.line(1, "Namespace\tName\tAge");
            d.line(1, "---------\t----\t---");
            for p in pods {
                let pm = p.metadata.clone().unwrap_or_default();
                d.line(
                    1,
                    &format!(
                        "{}\t{}\t{}",
                        pm.namespace,
                        pm.name,
                        age(&pm.creation_timestamp, now)
                    ),
                );
            }
        }
    }
}

fn replicaset(d: &mut D, rs: &ReplicaSet, extra: &Extra) {
    let m = rs.metadata.clone().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let status = rs.status.unwrap_or_default();
    d.meta_head(&m, true);
    d.kv(0, "Selector", format_selector(spec.selector.as_ref()));
    d.labels_annotations(&m);
    d.controlled_by(&m);
    d.kv(
        0,
        "Replicas",
        format!(
            "{} current / {} desired",
            status.replicas,
            spec.replicas.unwrap_or(1)
        ),
    );
    if let Extra::Pods(pods) = extra {
        let count = |phase: &str| {
            pods.iter()
                .filter(|p| {
                    let ph = p.status.as_ref().map_or("", |s| s.phase.as_str());
                    ph == phase || (phase == "Pending" && ph.is_empty())
                })
                .count()
        };
        d.kv(
            0,
            "Pods Status",
            format!(
                "{} Running / {} Waiting / {} Succeeded / {} Failed",
                count("Running"),
                count("Pending"),
                count("Succeeded"),
                count("Failed")
            ),
        );
    }
    d.line(0, "Pod Template:");
    let template = spec.template.clone().unwrap_or_default();
    let tm = template.metadata.clone().unwrap_or_default();
    d.map("  ", "Labels", &tm.labels, "=");
    let tspec = template.spec.clone().unwrap_or_default();
    d.line(1, "Containers:");
    for c in &tspec.containers {
        d.line(0, &format!("   {}:", c.name));
        container_basics(d, c);
        container_rest(d, c);
    }
}

fn lease(d: &mut D, l: &Lease) {
    let m = l.metadata.clone().unwrap_or_default();
    let spec = l.spec.clone().unwrap_or_default();
    d.meta_head(&m, true);
    d.labels_annotations(&m);
    d.kv(0, "Holder Identity", or_none(&spec.holder_identity));
    d.kv(
        0,
        "Lease Duration Seconds",
        spec.lease_duration_seconds
            .map_or("<unset>".to_string(), |s| s.to_string()),
    );
    d.kv(0, "Acquire Time", rfc1123z(&spec.acquire_time));
    d.kv(0, "Renew Time", rfc1123z(&spec.renew_time));
    d.kv(0, "Lease Transitions", spec.lease_transitions.unwrap_or(0));
}

fn namespace(d: &mut D, ns: &Namespace) {
    let m = ns.metadata.clone().unwrap_or_default();
    d.meta_head(&m, false);
    d.labels_annotations(&m);
    d.kv(
        0,
        "Status",
        ns.status.as_ref().map_or("", |s| s.phase.as_str()),
    );
}

fn event(d: &mut D, e: &Event) {
    let m = e.metadata.clone().unwrap_or_default();
    d.meta_head(&m, true);
    d.labels_annotations(&m);
    let r = e.involved_object.clone().unwrap_or_default();
    d.line(0, "Involved Object:");
    d.kv(1, "Kind", &r.kind);
    d.kv(1, "Name", &r.name);
    if !r.namespace.is_empty() {
        d.kv(1, "Namespace", &r.namespace);
    }
    if !r.field_path.is_empty() {
        d.kv(1, "Field Path", &r.field_path);
    }
    d.kv(0, "Type", &e.r#type);
    d.kv(0, "Reason", &e.reason);
    d.kv(0, "Message", e.message.trim());
    d.kv(0, "Count", e.count);
    d.kv(0, "First Timestamp", rfc1123z(&e.first_timestamp));
    d.kv(0, "Last Timestamp", rfc1123z(&e.last_timestamp));
    d.kv(0, "Source", or_none(&event_source(e)));
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use kl_api::*;

    use super::*;

    fn now() -> OffsetDateTime {
        parse_timestamp("2024-05-01T12:00:00Z").unwrap()
    }

    fn web_pod() -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: "web-1".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                labels: [
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "front".to_string()),
                ]
                .into(),
                owner_references: vec![OwnerReference {
                    kind: "ReplicaSet".into(),
                    name: "web".into(),
                    controller: Some(true),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    command: vec!["sleep".into(), "3600".into()],
                    resources: Some(ResourceRequirements {
                        requests: [("cpu".to_string(), "100m".to_string())].into(),
                        limits: Default::default(),
                    }),
                    ..Default::default()
                }],
                node_name: "worker-1".into(),
                restart_policy: "Always".into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Running".into(),
                host_ip: "10.0.0.1".into(),
                pod_ip: "10.1.0.5".into(),
                start_time: "2024-05-01T11:00:00Z".into(),
                conditions: vec![PodCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                container_statuses: vec![ContainerStatus {
                    name: "main".into(),
                    ready: true,
                    restart_count: 0,
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: "2024-05-01T11:00:01Z".into(),
                        }),
                        ..Default::default()
                    }),
                    last_state: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn scheduled(name: &str, uid: &str) -> Event {
        Event {
            metadata: Some(ObjectMeta {
                name: format!("{name}.1"),
                namespace: "default".into(),
                ..Default::default()
            }),
            involved_object: Some(ObjectReference {
                kind: "Pod".into(),
                name: name.into(),
                namespace: "default".into(),
                uid: uid.into(),
                ..Default::default()
            }),
            reason: "Scheduled".into(),
            message: format!("Successfully assigned default/{name} to worker-1"),
            r#type: "Normal".into(),
            count: 1,
            first_timestamp: "2024-05-01T11:00:00Z".into(),
            last_timestamp: "2024-05-01T11:00:00Z".into(),
            source: Some(EventSource {
                component: "default-scheduler".into(),
                host: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_are_described_like_kubectl() {
        let o = web_pod().into_object();
        let events = vec![
            scheduled("web-1", "u1"),
            scheduled("other", ""),
            scheduled("web-1", "old-uid"),
        ];
        let evs = events_for(&o, &events);
        assert_eq!(evs.len(), 1);
        let text = describe(&o, &evs, &Extra::None, true, now());
        assert_eq!(
            text,
            "Name:           web-1
Namespace:      default
Node:           worker-1/10.0.0.1
Start Time:     Wed, 01 May 2024 11:00:00 +0000
Labels:         app=web
                tier=front
Annotations:    <none>
Status:         Running
IP:             10.1.0.5
Controlled By:  ReplicaSet/web
Containers:
  main:
    Port:  <none>
    Command:
      sleep
      3600
    State:          Running
      Started:      Wed, 01 May 2024 11:00:01 +0000
    Ready:          True
    Restart Count:  0
    Requests:
      cpu:        100m
    Environment:  <none>
Conditions:
  Type           Status
  Ready          True 
Node-Selectors:  <none>
Tolerations:     <none>
Events:
  Type    Reason     Age   From               Message
  ----    ------     ----  ----               -------
  Normal  Scheduled  60m   default-scheduler  Successfully assigned default/web-1 to worker-1
"
        );
    }

    #[test]
    fn nodes_and_replicasets_are_described() {
        let n = Node {
            metadata: Some(ObjectMeta {
                name: "worker-1".into(),
                creation_timestamp: "2024-05-01T10:00:00Z".into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                unschedulable: true,
                taints: vec![Taint {
                    key: "node.kubernetes.io/unschedulable".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }],
            }),
            status: Some(NodeStatus {
                capacity: [("cpu".to_string(), "4".to_string())].into(),
                addresses: vec![NodeAddress {
                    r#type: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }],
                node_info: Some(NodeSystemInfo {
                    kubelet_version: "v0.1.0".into(),
                    operating_system: "linux".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object();
        let text = describe(&n, &[], &Extra::Pods(vec![web_pod()]), true, now());
        assert!(
            text.contains(
                "System Info:\n  Machine ID:                 \n  System UUID:                \n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  Operating System:           linux\n"),
            "{text}"
        );
        assert!(
            text.contains("  Kubelet Version:            v0.1.0\n"),
            "{text}"
        );
        assert!(
            text.contains("Taints:             node.kubernetes.io/unschedulable:NoSchedule\n"),
            "{text}"
        );
        assert!(text.contains("Unschedulable:      true\n"), "{text}");
        assert!(
            text.contains("Addresses:\n  InternalIP:  10.0.0.1\n"),
            "{text}"
        );
        // As upstream, the pods table aligns with the System Info block above it.
        assert!(
            text.contains("Non-terminated Pods:          (1 in total)\n  Namespace                   Name   Age\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Events:                       <none>\n"),
            "{text}"
        );

        let rs = ReplicaSet {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(ReplicaSetSpec {
                replicas: Some(2),
                selector: Some(LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: [("app".to_string(), "web".to_string())].into(),
                        ..Default::default()
                    }),
                    spec: web_pod().spec,
                }),
            }),
            status: Some(ReplicaSetStatus {
                replicas: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object();
        let text = describe(&rs, &[], &Extra::Pods(vec![web_pod()]), true, now());
        assert!(
            text.starts_with("Name:         web\nNamespace:    default\nSelector:     app=web\n"),
            "{text}"
        );
        assert!(text.contains("Replicas:     1 current / 2 desired\nPods Status:  1 Running / 0 Waiting / 0 Succeeded / 0 Failed\n"), "{text}");
        assert!(
            text.contains("Pod Template:\n  Labels:  app=web\n  Containers:\n   main:\n"),
            "{text}"
        );
    }
}
