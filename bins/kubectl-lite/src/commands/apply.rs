//! `kubectl-lite apply -f` and `create -f`: manifests from files, directories or stdin.
//!
//! apply creates what is missing (`pod/web created`) and otherwise merges the manifest into the
//! live object ([`merge_manifest`]): labels and annotations are merged key by key, every other
//! top-level field (spec, and an Event's fields) is merged map by map with lists replaced, and
//! status is never touched. Nothing differing → `unchanged`; else an update on the live
//! resourceVersion → `configured`, redone once on Conflict. Unlike kubectl there is no
//! last-applied annotation: a field removed from the manifest stays on the live object.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use kl_api::Object;
use kl_client::{ApiError, DynamicApi};
use serde_json::Value;

use super::resources::{object_ref, usage};
use super::session::{report, Globals, Reported, Session};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The files, directories (their *.yaml, *.yml, *.json files) or `-` (stdin) that contain
    /// the configuration to apply.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub filenames: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The files, directories or `-` (stdin) that contain the objects to create.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub filenames: Vec<String>,
}

/// One object read from a manifest, with where it came from (kubectl names the file in errors).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub source: String,
    pub object: Object,
}

/// Reads every `-f`: files, directories (sorted *.yaml/*.yml/*.json), `-` for stdin. Any
/// malformed document fails the whole command before anything is sent, naming the file.
pub fn read_manifests(filenames: &[String]) -> anyhow::Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for f in filenames {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            parse_into(&mut out, "STDIN", &text)?;
            continue;
        }
        let path = Path::new(f);
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading directory {f}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        for file in files {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    usage(format!("the path \"{name}\" does not exist"))
                } else {
                    anyhow::anyhow!("reading {name}: {e}")
                }
            })?;
            parse_into(&mut out, &name, &text)?;
        }
    }
    if out.is_empty() {
        return Err(usage("no objects passed to apply"));
    }
    Ok(out)
}

fn parse_into(out: &mut Vec<Manifest>, source: &str, text: &str) -> anyhow::Result<()> {
    let objects =
        kl_api::parse_manifests(text).map_err(|e| usage(format!("error parsing {source}: {e}")))?;
    out.extend(objects.into_iter().map(|object| Manifest {
        source: source.to_string(),
        object,
    }));
    Ok(())
}

/// The namespace a manifest's object goes to: its own, else `-n`/the context's; kubectl's
/// error when `-n` was given and the manifest says otherwise. Cluster-scoped: none.
pub fn target_namespace(s: &Session, m: &mut Manifest) -> anyhow::Result<String> {
    if !m.object.kind().namespaced() {
        m.object.metadata_mut().namespace.clear();
        return Ok(String::new());
    }
    let own = m.object.namespace().to_string();
    if own.is_empty() {
        m.object.metadata_mut().namespace = s.namespace.clone();
        return Ok(s.namespace.clone());
    }
    if s.namespace_explicit && own != s.namespace {
        return Err(usage(format!(
            "the namespace from the provided object \"{own}\" does not match the namespace \"{}\". You must pass '--namespace={own}' to perform this operation.",
            s.namespace
        )));
    }
    Ok(own)
}

pub async fn run_apply(
    g: &Globals,
    args: ApplyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let manifests = read_manifests(&args.filenames)?;
    let s = Session::connect(g)?;
    let mut failed = false;
    for mut m in manifests {
        let result = async {
            let ns = target_namespace(&s, &mut m)?;
            let api = s.api_in(m.object.kind(), &ns);
            let verb = apply_one(&api, &m).await?;
            anyhow::Ok(verb)
        }
        .await;
        match result {
            Ok(verb) => writeln!(out, "{} {verb}", object_ref(&m.object))?,
            Err(e) => {
                if e.downcast_ref::<ApiError>()
                    .is_some_and(ApiError::is_transport)
                {
                    return Err(e);
                }
                report(err, &e);
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// Applies one object: `created`, `configured` or `unchanged`.
async fn apply_one(api: &DynamicApi, m: &Manifest) -> anyhow::Result<&'static str> {
    let name = m.object.name();
    if name.is_empty() {
        return Err(usage(format!(
            "error when applying {:?}: a {} must have metadata.name",
            m.source,
            m.object.kind()
        )));
    }
    for attempt in 0..2 {
        let live = match api.get(name).await {
            Ok(o) => o,
            Err(e) if e.is_not_found() => {
                return match api.create(m.object.clone()).await {
                    Ok(_) => Ok("created"),
                    Err(e) => Err(in_file(e, "creating", &m.source)),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let Some(desired) = merge_manifest(&m.object, &live)? else {
            return Ok("unchanged");
        };
        match api.update(desired).await {
            Ok(_) => return Ok("configured"),
            // Someone wrote in between: merge into the newer version, once.
            Err(e) if e.is_conflict() && attempt == 0 => continue,
            Err(e) => return Err(in_file(e, "updating", &m.source)),
        }
    }
    unreachable!("the loop returns on its second pass")
}

/// kubectl's context inside the server's message: `error when creating "app.yaml": ...`.
fn in_file(e: ApiError, verb: &str, source: &str) -> anyhow::Error {
    if e.is_transport() {
        return e.into();
    }
    e.map_message(|m| format!("error when {verb} \"{source}\": {m}"))
        .into()
}

/// The live object with the manifest merged in, or None when that changes nothing.
pub fn merge_manifest(manifest: &Object, live: &Object) -> anyhow::Result<Option<Object>> {
    let kind = live.kind();
    let live_v = serde_json::to_value(live)?;
    let mut desired = live_v.clone();
    let (Value::Object(m), Value::Object(d)) = (serde_json::to_value(manifest)?, &mut desired)
    else {
        anyhow::bail!("objects serialize as maps");
    };
    for (key, value) in m {
        match key.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                let meta = d
                    .entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()));
                for field in ["labels", "annotations"] {
                    if let Some(v) = value.get(field) {
                        merge(meta_entry(meta, field), v.clone());
                    }
                }
            }
            _ => merge(d.entry(key).or_insert(Value::Null), value),
        }
    }
    // Lists taken from the manifest (containers, ...) lack the server's defaults: fill them in
    // as the apiserver would, so that an unchanged manifest compares equal.
    let mut obj = Object::from_json(kind, &serde_json::to_vec(&desired)?)
        .context("merging the manifest into the live object")?;
    kl_api::set_defaults(&mut obj);
    // Compared with the live object defaulted the same way, so that a default the server
    // spells differently (or not at all) is no difference.
    let mut live_defaulted = live.clone();
    kl_api::set_defaults(&mut live_defaulted);
    if serde_json::to_value(&obj)? == serde_json::to_value(&live_defaulted)? {
        return Ok(None);
    }
    Ok(Some(obj))
}

fn meta_entry<'a>(meta: &'a mut Value, field: &str) -> &'a mut Value {
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    match meta {
        Value::Object(m) => m.entry(field).or_insert(Value::Null),
        _ => unreachable!("made an object above"),
    }
}

/// JSON merge: maps merge key by key (the patch wins), anything else is replaced.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

pub async fn run_create(
    g: &Globals,
    args: CreateArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let manifests = read_manifests(&args.filenames)?;
    let s = Session::connect(g)?;
    let mut failed = false;
    for mut m in manifests {
        let result = async {
            let ns = target_namespace(&s, &mut m)?;
            let api = s.api_in(m.object.kind(), &ns);
            api.create(m.object.clone())
                .await
                .map_err(|e| in_file(e, "creating", &m.source))
        }
        .await;
        match result {
            Ok(o) => writeln!(out, "{} created", object_ref(&o))?,
            Err(e) => {
                if e.downcast_ref::<ApiError>()
                    .is_some_and(ApiError::is_transport)
                {
                    return Err(e);
                }
                report(err, &e);
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RS: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: main\n        command: [sleep, '3600']\n        ports: [{containerPort: 80}]\n";

    fn manifest(text: &str) -> Object {
        kl_api::parse_manifests(text).unwrap().remove(0)
    }

    /// What the apiserver would store: defaults, metadata and status filled in.
    fn live_of(m: &Object) -> Object {
        let mut o = m.clone();
        kl_api::set_defaults(&mut o);
        let meta = o.metadata_mut();
        meta.uid = "u1".into();
        meta.resource_version = "7".into();
        meta.creation_timestamp = "2024-05-01T12:00:00Z".into();
        meta.annotations.insert("owner".into(), "controller".into());
        if let Object::ReplicaSet(rs) = &mut o {
            rs.status = Some(kl_api::ReplicaSetStatus {
                replicas: 2,
                ..Default::default()
            });
        }
        o
    }

    #[test]
    fn an_unchanged_manifest_changes_nothing() {
        let m = manifest(RS);
        assert_eq!(merge_manifest(&m, &live_of(&m)).unwrap(), None);
    }

    #[test]
    fn a_changed_spec_is_merged_keeping_status_and_server_fields() {
        let m = manifest(RS);
        let live = live_of(&m);
        let changed = manifest(&RS.replace("replicas: 2", "replicas: 3"));
        let Some(Object::ReplicaSet(rs)) = merge_manifest(&changed, &live).unwrap() else {
            panic!("expected an update");
        };
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
        let meta = rs.metadata.as_ref().unwrap();
        assert_eq!(meta.resource_version, "7", "updates the version read");
        assert_eq!(meta.uid, "u1");
        assert_eq!(
            meta.annotations["owner"], "controller",
            "others' annotations stay"
        );
        assert_eq!(rs.status.as_ref().unwrap().replicas, 2, "status untouched");
        let c = &rs
            .spec
            .as_ref()
            .unwrap()
            .template
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        assert_eq!(c.ports[0].protocol, "TCP", "defaults filled in");
    }

    #[test]
    fn labels_merge_and_fields_set_by_others_stay() {
        let m = manifest(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {app: web}\nspec:\n  containers:\n  - name: main\n    command: [sleep, '1']\n",
        );
        let mut live = live_of(&m);
        if let Object::Pod(p) = &mut live {
            p.spec.as_mut().unwrap().node_name = "worker-1".into();
        }
        assert_eq!(
            merge_manifest(&m, &live).unwrap(),
            None,
            "nodeName set by the scheduler stays"
        );
        let relabelled = manifest(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {app: web, tier: front}\nspec:\n  containers:\n  - name: main\n    command: [sleep, '1']\n",
        );
        let Some(Object::Pod(p)) = merge_manifest(&relabelled, &live).unwrap() else {
            panic!("expected an update");
        };
        let labels = &p.metadata.as_ref().unwrap().labels;
        assert_eq!(labels.len(), 2);
        assert_eq!(p.spec.as_ref().unwrap().node_name, "worker-1");
    }

    #[test]
    fn manifests_are_read_from_files_and_directories_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), RS).unwrap();
        std::fs::write(
            dir.path().join("a.yml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let got = read_manifests(&[dir.path().display().to_string()]).unwrap();
        let names: Vec<&str> = got.iter().map(|m| m.object.name()).collect();
        assert_eq!(names, ["x", "y", "web"]);
        assert!(got[2].source.ends_with("b.yaml"));

        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n",
        )
        .unwrap();
        let e = read_manifests(&[bad.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.yaml")
                && e.contains("Deployment")
                && e.contains("known: Namespace, Node, Pod, ReplicaSet, Lease, Event"),
            "{e}"
        );
        std::fs::write(&bad, "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n").unwrap();
        let e = read_manifests(&[bad.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "error parsing {}: document 1: malformed YAML",
                bad.display()
            )),
            "{e}"
        );
        let e = read_manifests(&["/nonexistent.yaml".to_string()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "the path \"/nonexistent.yaml\" does not exist");
    }
}
