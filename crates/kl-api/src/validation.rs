//! Kubernetes validation, with Kubernetes' messages (`field: Invalid value: <v>: <reason>`,
//! `field: Required value`, `field: Unsupported value: "X": supported values: ...`).
//!
//! [`validate`] collects every error rather than stopping at the first, as the apiserver does.
//! It expects a defaulted object (see [`crate::set_defaults`]).
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::{Container, LabelSelector, Object, ObjectMeta, PodSpec, Quantity};

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorType {
    /// The value, already rendered as Kubernetes does (`"abc"` for strings, `-1` for numbers).
    Invalid {
        value: String,
    },
    Required,
    Unsupported {
        value: String,
        supported: &'static [&'static str],
    },
    Duplicate {
        value: String,
    },
    Forbidden,
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[0].name`.
    pub field: String,
    pub error: ErrorType,
    /// Why, in words ("" when the type says it all).
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = &self.field;
        match &self.error {
            ErrorType::Invalid { value } => write!(f, "{field}: Invalid value: {value}")?,
            ErrorType::Required => write!(f, "{field}: Required value")?,
            ErrorType::Unsupported { value, supported } => {
                let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                return write!(
                    f,
                    "{field}: Unsupported value: {value:?}: supported values: {}",
                    list.join(", ")
                );
            }
            ErrorType::Duplicate { value } => write!(f, "{field}: Duplicate value: {value:?}")?,
            ErrorType::Forbidden => write!(f, "{field}: Forbidden")?,
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every invalid field of an object. Displays like Kubernetes' aggregate: one error alone, or
/// `[a, b]` for several.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msgs: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        if msgs.len() == 1 {
            f.write_str(&msgs[0])
        } else {
            write!(f, "[{}]", msgs.join(", "))
        }
    }
}

impl std::error::Error for FieldErrors {}

impl FieldErrors {
    fn invalid(&mut self, field: impl Into<String>, value: String, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            error: ErrorType::Invalid { value },
            detail: detail.into(),
        });
    }
    fn required(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            error: ErrorType::Required,
            detail: detail.into(),
        });
    }
    fn unsupported(&mut self, field: String, value: &str, supported: &'static [&'static str]) {
        if !supported.contains(&value) {
            self.0.push(FieldError {
                field,
                error: ErrorType::Unsupported {
                    value: value.to_string(),
                    supported,
                },
                detail: String::new(),
            });
        }
    }
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters. Returns the reasons it is not.
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_dns_label(s) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

/// Dot-separated DNS-1123 labels, at most 253 characters. Returns the reasons it is not.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_dns_label) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

fn is_label_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label (or annotation) key: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 characters.
pub fn label_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                dns1123_subdomain_errors(p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        if !is_label_name_part(name) {
            errs.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    errs
}

/// A label value: empty, or like a key's name part, at most 63 characters.
pub fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_label_name_part(v) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// Go's `%v` of a `map[string]string`, as Kubernetes prints labels in messages.
fn go_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

fn validate_labels(errs: &mut FieldErrors, field: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        for e in label_key_errors(k) {
            errs.invalid(field, format!("{k:?}"), e);
        }
        for e in label_value_errors(v) {
            errs.invalid(field, format!("{v:?}"), e);
        }
    }
}

fn validate_meta(
    errs: &mut FieldErrors,
    meta: Option<&ObjectMeta>,
    namespaced: bool,
    label_name: bool,
) {
    let default = ObjectMeta::default();
    let meta = meta.unwrap_or(&default);
    if meta.name.is_empty() {
        errs.required("metadata.name", "name or generateName is required");
    } else {
        let name_errs = if label_name {
            dns1123_label_errors(&meta.name)
        } else {
            dns1123_subdomain_errors(&meta.name)
        };
        for e in name_errs {
            errs.invalid("metadata.name", format!("{:?}", meta.name), e);
        }
    }
    if namespaced {
        if meta.namespace.is_empty() {
            errs.required("metadata.namespace", "");
        } else {
            for e in dns1123_label_errors(&meta.namespace) {
                errs.invalid("metadata.namespace", format!("{:?}", meta.namespace), e);
            }
        }
    } else if !meta.namespace.is_empty() {
        errs.0.push(FieldError {
            field: "metadata.namespace".into(),
            error: ErrorType::Forbidden,
            detail: "not allowed on this type".into(),
        });
    }
    if !meta.generate_name.is_empty() {
        // As upstream: the prefix must itself be a valid name once its trailing '-' is gone.
        let prefix = meta.generate_name.trim_end_matches('-');
        let prefix_errs = if prefix.is_empty() {
            Vec::new()
        } else if label_name {
            dns1123_label_errors(prefix)
        } else {
            dns1123_subdomain_errors(prefix)
        };
        for e in prefix_errs {
            errs.invalid(
                "metadata.generateName",
                format!("{:?}", meta.generate_name),
                e,
            );
        }
    }
    validate_labels(errs, "metadata.labels", &meta.labels);
    for k in meta.annotations.keys() {
        for e in label_key_errors(k) {
            errs.invalid("metadata.annotations", format!("{k:?}"), e);
        }
    }
}

/// Validates a (defaulted) object; `Err` lists every invalid field.
pub fn validate(obj: &Object) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    let kind = obj.kind();
    validate_meta(
        &mut errs,
        obj.metadata(),
        kind.namespaced(),
        matches!(obj, Object::Namespace(_)),
    );
    match obj {
        Object::Pod(pod) => match &pod.spec {
            Some(spec) => validate_pod_spec(&mut errs, "spec", spec),
            None => errs.required("spec", ""),
        },
        Object::ReplicaSet(rs) => validate_replicaset(&mut errs, rs),
        Object::Node(node) => {
            if let Some(spec) = &node.spec {
                for (i, t) in spec.taints.iter().enumerate() {
                    let f = format!("spec.taints[{i}]");
                    if t.key.is_empty() {
                        errs.required(format!("{f}.key"), "");
                    } else {
                        for e in label_key_errors(&t.key) {
                            errs.invalid(format!("{f}.key"), format!("{:?}", t.key), e);
                        }
                    }
                    if t.effect.is_empty() {
                        errs.required(format!("{f}.effect"), "");
                    } else {
                        errs.unsupported(format!("{f}.effect"), &t.effect, TAINT_EFFECTS);
                    }
                }
            }
            if let Some(status) = &node.status {
                validate_quantities(&mut errs, "status.capacity", &status.capacity);
                validate_quantities(&mut errs, "status.allocatable", &status.allocatable);
            }
        }
        Object::Lease(lease) => {
            if let Some(d) = lease.spec.as_ref().and_then(|s| s.lease_duration_seconds) {
                if d <= 0 {
                    errs.invalid(
                        "spec.leaseDurationSeconds",
                        d.to_string(),
                        "must be greater than 0",
                    );
                }
            }
        }
        Object::Namespace(_) | Object::Event(_) => {}
    }
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const TOLERATION_OPERATORS: &[&str] = &["Equal", "Exists"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const SELECTOR_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];

fn validate_replicaset(errs: &mut FieldErrors, rs: &crate::ReplicaSet) {
    let Some(spec) = &rs.spec else {
        errs.required("spec.selector", "");
        errs.required("spec.template", "");
        return;
    };
    if let Some(r) = spec.replicas {
        if r < 0 {
            errs.invalid(
                "spec.replicas",
                r.to_string(),
                "must be greater than or equal to 0",
            );
        }
    }
    match &spec.selector {
        None => errs.required("spec.selector", ""),
        Some(sel) if sel.match_labels.is_empty() && sel.match_expressions.is_empty() => errs
            .invalid(
                "spec.selector",
                "{}".to_string(),
                "empty selector is invalid for deployment",
            ),
        Some(sel) => {
            validate_labels(errs, "spec.selector.matchLabels", &sel.match_labels);
            for (i, r) in sel.match_expressions.iter().enumerate() {
                let f = format!("spec.selector.matchExpressions[{i}]");
                errs.unsupported(format!("{f}.operator"), &r.operator, SELECTOR_OPERATORS);
                let needs_values = matches!(r.operator.as_str(), "In" | "NotIn");
                if needs_values && r.values.is_empty() {
                    errs.required(
                        format!("{f}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                } else if !needs_values && !r.values.is_empty() {
                    errs.0.push(FieldError {
                        field: format!("{f}.values"),
                        error: ErrorType::Forbidden,
                        detail:
                            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                                .into(),
                    });
                }
            }
        }
    }
    match &spec.template {
        None => errs.required("spec.template", ""),
        Some(t) => {
            let default = ObjectMeta::default();
            let meta = t.metadata.as_ref().unwrap_or(&default);
            validate_labels(errs, "spec.template.metadata.labels", &meta.labels);
            if let Some(sel) = &spec.selector {
                if !selector_matches(sel, &meta.labels) {
                    errs.invalid(
                        "spec.template.metadata.labels",
                        go_map(&meta.labels),
                        "`selector` does not match template `labels`",
                    );
                }
            }
            match &t.spec {
                Some(ps) => {
                    validate_pod_spec(errs, "spec.template.spec", ps);
                    if ps.restart_policy != "Always"
                        && RESTART_POLICIES.contains(&ps.restart_policy.as_str())
                    {
                        errs.0.push(FieldError {
                            field: "spec.template.spec.restartPolicy".into(),
                            error: ErrorType::Unsupported {
                                value: ps.restart_policy.clone(),
                                supported: &["Always"],
                            },
                            detail: String::new(),
                        });
                    }
                }
                None => errs.required("spec.template.spec", ""),
            }
        }
    }
}

/// Validates an update of `old` into `new` (both defaulted): `new` must be valid, and the
/// fields the server owns must not change (Kubernetes' `ValidateObjectMetaUpdate`:
/// `metadata.uid: Invalid value: "x": field is immutable`). Empty values in `new` are not
/// changes: the apiserver fills them from `old` before calling this.
pub fn validate_update(new: &Object, old: &Object) -> Result<(), FieldErrors> {
    let mut errs = match validate(new) {
        Ok(()) => FieldErrors::default(),
        Err(e) => e,
    };
    let (n, o) = (
        new.metadata().cloned().unwrap_or_default(),
        old.metadata().cloned().unwrap_or_default(),
    );
    for (field, nv, ov) in [
        ("metadata.name", &n.name, &o.name),
        ("metadata.namespace", &n.namespace, &o.namespace),
        ("metadata.uid", &n.uid, &o.uid),
        (
            "metadata.creationTimestamp",
            &n.creation_timestamp,
            &o.creation_timestamp,
        ),
    ] {
        if nv != ov {
            errs.invalid(field, format!("{nv:?}"), "field is immutable");
        }
    }
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Whether a label selector selects an object with these labels (an empty selector selects all).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().all(|r| {
            let got = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => got.is_some_and(|v| r.values.contains(v)),
                "NotIn" => got.is_none_or(|v| !r.values.contains(v)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        })
}

fn validate_quantities(errs: &mut FieldErrors, field: &str, m: &BTreeMap<String, String>) {
    for (name, v) in m {
        match Quantity::parse(v) {
            Err(e) => errs.invalid(format!("{field}[{name}]"), format!("{v:?}"), e.to_string()),
            Ok(q) if q.milli_value() < 0 => errs.invalid(
                format!("{field}[{name}]"),
                format!("{v:?}"),
                "must be greater than or equal to 0",
            ),
            Ok(_) => {}
        }
    }
}

/// Validates a pod spec found at `path` (`spec` for a Pod, `spec.template.spec` for a template).
pub fn validate_pod_spec(errs: &mut FieldErrors, path: &str, spec: &PodSpec) {
    if spec.containers.is_empty() {
        errs.required(format!("{path}.containers"), "");
    }
    let mut names = HashSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let f = format!("{path}.containers[{i}]");
        if !c.name.is_empty() && !names.insert(c.name.as_str()) {
            errs.0.push(FieldError {
                field: format!("{f}.name"),
                error: ErrorType::Duplicate {
                    value: c.name.clone(),
                },
                detail: String::new(),
            });
        }
        validate_container(errs, &f, c);
    }
    if spec.restart_policy.is_empty() {
        errs.required(format!("{path}.restartPolicy"), "");
    } else {
        errs.unsupported(
            format!("{path}.restartPolicy"),
            &spec.restart_policy,
            RESTART_POLICIES,
        );
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errs.invalid(
                format!("{path}.terminationGracePeriodSeconds"),
                g.to_string(),
                "must be greater than or equal to 0",
            );
        }
    }
    validate_labels(errs, &format!("{path}.nodeSelector"), &spec.node_selector);
    for (i, t) in spec.tolerations.iter().enumerate() {
        let f = format!("{path}.tolerations[{i}]");
        let op = if t.operator.is_empty() {
            "Equal"
        } else {
            t.operator.as_str()
        };
        errs.unsupported(format!("{f}.operator"), op, TOLERATION_OPERATORS);
        if op == "Exists" && !t.value.is_empty() {
            errs.invalid(
                format!("{f}.operator"),
                format!("{:?}", t.operator),
                "value must be empty when `operator` is 'Exists'",
            );
        }
        if t.key.is_empty() && op != "Exists" {
            errs.invalid(format!("{f}.operator"), format!("{:?}", t.operator), "operator must be Exists when `key` is empty, which means \"match all values and all keys\"");
        }
        if !t.effect.is_empty() {
            errs.unsupported(format!("{f}.effect"), &t.effect, TAINT_EFFECTS);
        }
        if t.toleration_seconds.is_some() && t.effect != "NoExecute" {
            errs.invalid(
                format!("{f}.effect"),
                format!("{:?}", t.effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
    }
}

fn validate_container(errs: &mut FieldErrors, f: &str, c: &Container) {
    if c.name.is_empty() {
        errs.required(format!("{f}.name"), "");
    } else {
        for e in dns1123_label_errors(&c.name) {
            errs.invalid(format!("{f}.name"), format!("{:?}", c.name), e);
        }
    }
    if c.command.is_empty() {
        errs.required(
            format!("{f}.command"),
            "kube-lite runs each container as a process and has no images, so a container needs a command",
        );
    }
    if let Some(r) = &c.resources {
        validate_quantities(errs, &format!("{f}.resources.requests"), &r.requests);
        validate_quantities(errs, &format!("{f}.resources.limits"), &r.limits);
    }
    for (j, p) in c.ports.iter().enumerate() {
        let pf = format!("{f}.ports[{j}]");
        if !(1..=65535).contains(&p.container_port) {
            errs.invalid(
                format!("{pf}.containerPort"),
                p.container_port.to_string(),
                "must be between 1 and 65535, inclusive",
            );
        }
        errs.unsupported(format!("{pf}.protocol"), &p.protocol, PROTOCOLS);
    }
    for (name, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
    ] {
        let Some(p) = probe else { continue };
        let pf = format!("{f}.{name}");
        let handlers = [
            p.exec.is_some(),
            p.tcp_socket.is_some(),
            p.http_get.is_some(),
        ];
        match handlers.iter().filter(|h| **h).count() {
            0 => errs.required(pf.clone(), "must specify a handler type"),
            1 => {}
            _ => errs.0.push(FieldError {
                field: pf.clone(),
                error: ErrorType::Forbidden,
                detail: "may not specify more than 1 handler type".into(),
            }),
        }
        for (field, v, min) in [
            ("initialDelaySeconds", p.initial_delay_seconds, 0),
            ("periodSeconds", p.period_seconds, 1),
            ("timeoutSeconds", p.timeout_seconds, 1),
            ("failureThreshold", p.failure_threshold, 1),
            ("successThreshold", p.success_threshold, 1),
        ] {
            if v < min {
                errs.invalid(
                    format!("{pf}.{field}"),
                    v.to_string(),
                    format!("must be greater than or equal to {min}"),
                );
            }
        }
        if name == "livenessProbe" && p.success_threshold != 1 {
            errs.invalid(
                format!("{pf}.successThreshold"),
                p.success_threshold.to_string(),
                "must be 1",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_manifests, set_defaults};

    /// Parses, defaults and validates one document; returns each error message.
    fn errors(yaml: &str) -> Vec<String> {
        let mut o = parse_manifests(yaml).unwrap().remove(0);
        set_defaults(&mut o);
        match validate(&o) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn pod(spec: &str) -> String {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n{spec}")
    }

    fn rs(spec: &str) -> String {
        format!("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: r}}\nspec:\n{spec}")
    }

    const TEMPLATE: &str = "  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, command: [x]}]}\n";

    #[test]
    fn example_manifests_are_valid() {
        for text in [
            include_str!("../examples-manifests/pod-sleep.yaml"),
            include_str!("../examples-manifests/replicaset-sleep.yaml"),
        ] {
            for mut o in parse_manifests(text).unwrap() {
                set_defaults(&mut o);
                validate(&o).unwrap();
            }
        }
        let objs =
            parse_manifests(include_str!("../examples-manifests/replicaset-sleep.yaml")).unwrap();
        let Object::ReplicaSet(r) = &objs[1] else {
            panic!()
        };
        assert_eq!(r.spec.as_ref().unwrap().replicas, Some(3));
    }

    #[test]
    fn replicas_must_not_be_negative() {
        let e = errors(&rs(&format!(
            "  replicas: -1\n  selector: {{matchLabels: {{app: a}}}}\n{TEMPLATE}"
        )));
        assert_eq!(
            e,
            ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn selector_required_and_must_match() {
        let e = errors(&rs(TEMPLATE));
        assert_eq!(e, ["spec.selector: Required value"]);
        let e = errors(&rs(&format!(
            "  selector: {{matchLabels: {{app: b}}}}\n{TEMPLATE}"
        )));
        assert_eq!(
            e,
            ["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"a\"}: `selector` does not match template `labels`"]
        );
        let e = errors(&rs(&format!(
            "  selector: {{matchExpressions: [{{key: app, operator: In, values: [a, b]}}]}}\n{TEMPLATE}"
        )));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn names() {
        let e = errors("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c, command: [x]}]}\n");
        assert_eq!(
            e,
            [format!(
                "metadata.name: Invalid value: \"Bad_Name\": {DNS1123_SUBDOMAIN_MSG}"
            )]
        );
        let e = errors("apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\nspec: {containers: [{name: c, command: [x]}]}\n");
        assert_eq!(
            e,
            ["metadata.name: Required value: name or generateName is required"]
        );
        // Namespaces are labels: no dots.
        let e = errors("apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n");
        assert_eq!(
            e,
            [format!(
                "metadata.name: Invalid value: \"a.b\": {DNS1123_LABEL_MSG}"
            )]
        );
        assert!(
            errors("apiVersion: v1\nkind: Node\nmetadata: {name: node-1.example.com}\n").is_empty()
        );
        let long = "a".repeat(64);
        let e = errors(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {long}}}\n"
        ));
        assert_eq!(
            e,
            [format!(
                "metadata.name: Invalid value: \"{long}\": must be no more than 63 characters"
            )]
        );
        let e = errors("apiVersion: v1\nkind: Node\nmetadata: {name: n, namespace: default}\n");
        assert_eq!(
            e,
            ["metadata.namespace: Forbidden: not allowed on this type"]
        );
    }

    #[test]
    fn labels() {
        assert!(label_key_errors("app.kubernetes.io/name").is_empty());
        assert!(label_key_errors("Tier_1").is_empty());
        assert_eq!(label_key_errors("-bad"), [QUALIFIED_NAME_MSG]);
        assert_eq!(label_key_errors("/x"), ["prefix part must be non-empty"]);
        assert_eq!(
            label_key_errors(&"k".repeat(64)),
            ["name part must be no more than 63 characters"]
        );
        assert!(label_value_errors("").is_empty());
        assert_eq!(label_value_errors("a b"), [LABEL_VALUE_MSG]);
        let e = errors(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {ok: 'bad value'}}\n",
        );
        assert_eq!(
            e,
            [format!(
                "metadata.labels: Invalid value: \"bad value\": {LABEL_VALUE_MSG}"
            )]
        );
    }

    #[test]
    fn containers() {
        let e = errors(&pod("  containers: []\n"));
        assert_eq!(e, ["spec.containers: Required value"]);
        let e = errors(&pod("  containers: [{command: [x]}, {name: Web, command: [x]}, {name: a, command: [x]}, {name: a}]\n"));
        assert_eq!(
            e,
            [
                "spec.containers[0].name: Required value".to_string(),
                format!("spec.containers[1].name: Invalid value: \"Web\": {DNS1123_LABEL_MSG}"),
                "spec.containers[3].name: Duplicate value: \"a\"".to_string(),
                "spec.containers[3].command: Required value: kube-lite runs each container as a process and has no images, so a container needs a command".to_string(),
            ]
        );
    }

    #[test]
    fn restart_policy_and_grace() {
        let e = errors(&pod("  restartPolicy: Sometimes\n  terminationGracePeriodSeconds: -1\n  containers: [{name: c, command: [x]}]\n"));
        assert_eq!(
            e,
            [
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
        let e = errors(&rs(
            "  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {restartPolicy: Never, containers: [{name: c, command: [x]}]}\n",
        ));
        assert_eq!(e, ["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]);
    }

    #[test]
    fn taints_and_tolerations() {
        let e = errors("apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec: {taints: [{key: k, effect: Sometimes}, {effect: NoSchedule}]}\n");
        assert_eq!(
            e,
            [
                "spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
                "spec.taints[1].key: Required value",
            ]
        );
        let e = errors(&pod("  containers: [{name: c, command: [x]}]\n  tolerations: [{key: k, operator: Maybe}, {operator: Exists}, {key: k, operator: Equal, value: v, effect: NoExecute, tolerationSeconds: 5}]\n"));
        assert_eq!(e, ["spec.tolerations[0].operator: Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\""]);
    }

    #[test]
    fn quantities_ports_probes() {
        let e = errors(&pod(
            "  containers:\n  - name: c\n    command: [x]\n    resources: {requests: {cpu: 100m, memory: lots}, limits: {memory: 1Gi}}\n    ports: [{containerPort: 70000, protocol: HTTP}]\n    livenessProbe: {periodSeconds: -1}\n",
        ));
        assert_eq!(
            e,
            [
                "spec.containers[0].resources.requests[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
                "spec.containers[0].livenessProbe: Required value: must specify a handler type",
                "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 1",
            ]
        );
    }

    #[test]
    fn generate_name_and_immutable_fields() {
        let e =
            errors("apiVersion: v1\nkind: Node\nmetadata: {name: n-abcde, generateName: Bad_}\n");
        assert_eq!(
            e,
            [format!(
                "metadata.generateName: Invalid value: \"Bad_\": {DNS1123_SUBDOMAIN_MSG}"
            )]
        );
        assert!(errors(
            "apiVersion: v1\nkind: Node\nmetadata: {name: gen-abcde, generateName: gen-}\n"
        )
        .is_empty());
        let mut old = parse_manifests("apiVersion: v1\nkind: Node\nmetadata: {name: n, uid: a, creationTimestamp: '2024-01-01T00:00:00Z'}\n").unwrap().remove(0);
        set_defaults(&mut old);
        let mut new = old.clone();
        assert!(validate_update(&new, &old).is_ok());
        new.metadata_mut().uid = "b".into();
        assert_eq!(
            validate_update(&new, &old).unwrap_err().to_string(),
            "metadata.uid: Invalid value: \"b\": field is immutable"
        );
    }

    #[test]
    fn all_errors_are_collected_and_aggregated() {
        let mut o = parse_manifests(&rs("  replicas: -2\n")).unwrap().remove(0);
        set_defaults(&mut o);
        let e = validate(&o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "[spec.replicas: Invalid value: -2: must be greater than or equal to 0, spec.selector: Required value, spec.template: Required value]"
        );
    }
}
