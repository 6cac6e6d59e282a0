//! `kubectl-lite delete`: by name (`pod web`, `pod/web`), by selector (`-l`, `--all`), or the
//! objects of manifests (`-f`). Prints `pod "web" deleted` per object, as kubectl.
//!
//! Unlike kubectl, `--wait` is off by default: a pod's graceful deletion ends only when its
//! kubelet confirms, and scripts of an HA cluster should not hang on a lost node.
use std::io::Write;
use std::time::Duration;

use clap::Args;
use kl_client::{DeleteParams, DynamicApi, ListParams};

use super::apply::{read_manifests, target_namespace};
use super::printers::{no_resources, quoted_ref};
use super::resources::{usage, Targets};
use super::session::{report, Globals, Reported, Session};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// TYPE NAME..., TYPE/NAME..., or TYPE with -l/--all.
    #[arg(value_name = "TYPE[.NAME]")]
    pub args: Vec<String>,
    /// Files, directories or `-` (stdin) naming the objects to delete.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filenames: Vec<String>,
    /// Delete the objects matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete the objects matching this field selector.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    pub all: bool,
    /// With --all or a selector: in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Seconds given to the pod to terminate gracefully; -1: the pod's own
    /// terminationGracePeriodSeconds; 0: remove at once.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Signal the pod to stop immediately (grace period 1).
    #[arg(long)]
    pub now: bool,
    /// Remove at once, without waiting for the kubelet (grace period 0).
    #[arg(long)]
    pub force: bool,
    /// What happens to the objects' dependents (pods of a ReplicaSet), as kubectl's flag:
    /// `background` (the garbage collector deletes them) or `orphan` (they are left alone).
    /// `foreground` is not supported.
    #[arg(long, default_value = "background", value_name = "background|orphan")]
    pub cascade: String,
    /// Treat "resource not found" as a successful delete.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
}

impl DeleteArgs {
    fn params(&self) -> anyhow::Result<DeleteParams> {
        if self.now && self.force {
            return Err(usage("--now and --force are mutually exclusive"));
        }
        let grace = if self.now {
            1
        } else if self.force && self.grace_period < 0 {
            0
        } else {
            self.grace_period
        };
        let propagation_policy = match self.cascade.as_str() {
            // kubectl accepts the old boolean spellings too.
            "background" | "true" => "Background",
            "orphan" | "false" => "Orphan",
            other => {
                return Err(usage(format!(
                    "invalid --cascade value {other:?}: must be one of background, orphan"
                )))
            }
        };
        Ok(DeleteParams {
            grace_period_seconds: (grace >= 0).then_some(grace),
            preconditions: None,
            propagation_policy: Some(propagation_policy.to_string()),
        })
    }
}

pub async fn run(
    g: &Globals,
    args: DeleteArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let dp = args.params()?;
    // What to delete: (api, name).
    let mut victims: Vec<(DynamicApi, String)> = Vec::new();
    let s;
    if !args.filenames.is_empty() {
        if !args.args.is_empty() {
            return Err(usage(
                "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kubectl-lite delete -f FILE' takes no other arguments)",
            ));
        }
        let manifests = read_manifests(&args.filenames)?;
        s = Session::connect(g)?;
        for mut m in manifests {
            let ns = target_namespace(&s, &mut m)?;
            victims.push((s.api_in(m.object.kind(), &ns), m.object.name().to_string()));
        }
    } else {
        let targets = Targets::parse(&args.args, "delete")?;
        let selecting = args.all || args.selector.is_some() || args.field_selector.is_some();
        if targets.has_names() && selecting {
            return Err(usage(
                "name cannot be provided when a selector is specified",
            ));
        }
        if !targets.has_names() && !selecting {
            return Err(usage(
                "resource(s) were provided, but no name was specified",
            ));
        }
        s = Session::connect(g)?;
        for (kind, names) in &targets.0 {
            if !names.is_empty() {
                let api = s.api(*kind, false);
                victims.extend(names.iter().map(|n| (api.clone(), n.clone())));
                continue;
            }
            let lp = ListParams::default()
                .labels(args.selector.as_deref().unwrap_or(""))
                .fields(args.field_selector.as_deref().unwrap_or(""));
            let list = s.api(*kind, args.all_namespaces).list_all(&lp).await?;
            for o in list.items {
                let ns = if kind.namespaced() { o.namespace() } else { "" };
                victims.push((s.api_in(*kind, ns), o.name().to_string()));
            }
        }
        if victims.is_empty() {
            let namespaced = targets.0.iter().all(|(k, _)| k.namespaced());
            let ns = (namespaced && !args.all_namespaces).then_some(s.namespace.as_str());
            writeln!(err, "{}", no_resources(ns))?;
            return Ok(());
        }
    }
    if dp.grace_period_seconds == Some(0) {
        writeln!(err, "Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely.")?;
    }

    let mut failed = false;
    let mut pending = Vec::new();
    for (api, name) in victims {
        match api.delete(&name, &dp).await {
            Ok(outcome) => {
                writeln!(out, "{} deleted", quoted_ref(api.kind(), &name))?;
                if !outcome.deleted {
                    pending.push((api, name));
                }
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) if e.is_transport() => return Err(e.into()),
            Err(e) => {
                report(err, &e.into());
                failed = true;
            }
        }
    }
    if args.wait {
        for (api, name) in pending {
            wait_gone(&api, &name).await?;
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// Polls until the object is gone (kubectl's `--wait`), for at most five minutes.
async fn wait_gone(api: &DynamicApi, name: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        match api.get(name).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::anyhow!(
                    "timed out waiting for the deletion of {}",
                    quoted_ref(api.kind(), name)
                ))
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::commands::{Cli, Command};

    fn parse(args: &[&str]) -> super::DeleteArgs {
        let mut argv = vec!["kubectl-lite", "delete"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Delete(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn grace_period_flags_map_to_delete_params() {
        assert_eq!(
            parse(&["pod", "x"]).params().unwrap().grace_period_seconds,
            None
        );
        assert_eq!(
            parse(&["pod", "x", "--grace-period", "0"])
                .params()
                .unwrap()
                .grace_period_seconds,
            Some(0)
        );
        assert_eq!(
            parse(&["pod", "x", "--grace-period=-1"])
                .params()
                .unwrap()
                .grace_period_seconds,
            None
        );
        assert_eq!(
            parse(&["pod", "x", "--now"])
                .params()
                .unwrap()
                .grace_period_seconds,
            Some(1)
        );
        assert_eq!(
            parse(&["pod", "x", "--force"])
                .params()
                .unwrap()
                .grace_period_seconds,
            Some(0)
        );
        assert!(parse(&["pod", "x", "--force", "--now"]).params().is_err());
        assert!(parse(&["pod", "x", "--wait"]).wait);
        assert!(!parse(&["pod", "x", "--wait=false"]).wait);
        assert!(!parse(&["pod", "x"]).wait);
    }

    #[test]
    fn cascade_maps_to_the_propagation_policy() {
        let policy = |args: &[&str]| parse(args).params().map(|p| p.propagation_policy);
        assert_eq!(
            policy(&["rs", "web"]).unwrap().as_deref(),
            Some("Background")
        );
        assert_eq!(
            policy(&["rs", "web", "--cascade=orphan"])
                .unwrap()
                .as_deref(),
            Some("Orphan")
        );
        let err = policy(&["rs", "web", "--cascade=foreground"]).unwrap_err();
        assert!(err.to_string().contains("--cascade"), "{err}");
    }
}
