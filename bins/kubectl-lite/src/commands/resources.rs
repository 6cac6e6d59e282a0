//! Naming resources as kubectl does: what a user may type (`pods`, `po`, `rs/web`,
//! `pods,nodes`) and how kubectl names a kind in its messages (`pod/web`,
//! `replicaset.apps "web" deleted`).
use kl_api::{Kind, Object};

/// A usage error worded as kubectl's (printed as `error: ...`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// The kind a user named, or kubectl's error for an unknown one.
pub fn kind_of(name: &str) -> anyhow::Result<Kind> {
    Kind::from_resource(name).ok_or_else(|| {
        usage(format!(
            "the server doesn't have a resource type \"{name}\""
        ))
    })
}

/// Every resource type with its short name: `pods (po), nodes (no), ...`.
pub fn known_types() -> String {
    Kind::ALL
        .iter()
        .map(|k| match k.short_name() {
            Some(s) => format!("{} ({s})", k.plural()),
            None => k.plural().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// kubectl's name of a kind in messages and `-o name`: the singular resource, qualified by its
/// API group (`pod`, `replicaset.apps`, `lease.coordination.k8s.io`).
pub fn kind_ref(kind: Kind) -> String {
    match kind.api_version().rsplit_once('/') {
        Some((group, _)) => format!("{}.{group}", kind.singular()),
        None => kind.singular().to_string(),
    }
}

/// `pod/web`: `-o name`, and the subject of `created`/`configured`/`scaled`.
pub fn object_ref(o: &Object) -> String {
    format!("{}/{}", kind_ref(o.kind()), o.name())
}

/// What a command line names: kinds, each with the names asked for (none: every object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets(pub Vec<(Kind, Vec<String>)>);

impl Targets {
    /// Reads `KIND[,KIND...] [NAME...]` or `KIND/NAME...` as kubectl's resource builder does.
    /// `verb` words the error when nothing is named.
    pub fn parse(args: &[String], verb: &str) -> anyhow::Result<Targets> {
        let Some(first) = args.first() else {
            return Err(usage(format!(
                "you must specify the type of resource to {verb}. Known resource types: {}",
                known_types()
            )));
        };
        if first.contains('/') {
            let mut out: Vec<(Kind, Vec<String>)> = Vec::new();
            for a in args {
                let Some((k, name)) = a.split_once('/') else {
                    return Err(usage(format!(
                        "arguments in resource/name form must have a single resource and name, got {a:?}"
                    )));
                };
                if k.is_empty() || name.is_empty() || name.contains('/') {
                    return Err(usage(format!(
                        "arguments in resource/name form must have a single resource and name, got {a:?}"
                    )));
                }
                let kind = kind_of(k)?;
                match out.iter_mut().find(|(kk, _)| *kk == kind) {
                    Some((_, names)) => names.push(name.to_string()),
                    None => out.push((kind, vec![name.to_string()])),
                }
            }
            return Ok(Targets(out));
        }
        if let Some(a) = args[1..].iter().find(|a| a.contains('/')) {
            return Err(usage(format!(
                "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kubectl-lite {verb} resource/<resource_name>' instead of 'kubectl-lite {verb} resource resource/<resource_name>'), got {a:?}"
            )));
        }
        let mut kinds = Vec::new();
        for k in first.split(',').filter(|k| !k.is_empty()) {
            let kind = kind_of(k)?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(usage(format!(
                "you must specify the type of resource to {verb}"
            )));
        }
        let names: Vec<String> = args[1..].to_vec();
        Ok(Targets(
            kinds.into_iter().map(|k| (k, names.clone())).collect(),
        ))
    }

    /// Whether any object is named.
    pub fn has_names(&self) -> bool {
        self.0.iter().any(|(_, n)| !n.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kinds_are_named_as_kubectl_does() {
        assert_eq!(kind_ref(Kind::Pod), "pod");
        assert_eq!(kind_ref(Kind::ReplicaSet), "replicaset.apps");
        assert_eq!(kind_ref(Kind::Lease), "lease.coordination.k8s.io");
        assert_eq!(kind_ref(Kind::Node), "node");
    }

    #[test]
    fn targets_parse_every_form() {
        assert_eq!(
            Targets::parse(&args(&["po"]), "get").unwrap(),
            Targets(vec![(Kind::Pod, vec![])])
        );
        assert_eq!(
            Targets::parse(&args(&["rs", "a", "b"]), "get").unwrap(),
            Targets(vec![(Kind::ReplicaSet, args(&["a", "b"]))])
        );
        assert_eq!(
            Targets::parse(&args(&["rs/a", "pod/b", "rs/c"]), "get").unwrap(),
            Targets(vec![
                (Kind::ReplicaSet, args(&["a", "c"])),
                (Kind::Pod, args(&["b"]))
            ])
        );
        assert_eq!(
            Targets::parse(&args(&["pods,nodes"]), "get").unwrap(),
            Targets(vec![(Kind::Pod, vec![]), (Kind::Node, vec![])])
        );
    }

    #[test]
    fn bad_targets_get_kubectls_errors() {
        let e = Targets::parse(&args(&["deployments"]), "get").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("the server doesn't have a resource type \"deployments\""));
        assert!(Targets::parse(&args(&[]), "get").is_err());
        assert!(Targets::parse(&args(&["pods", "rs/a"]), "get").is_err());
        assert!(Targets::parse(&args(&["rs/"]), "get").is_err());
    }
}
