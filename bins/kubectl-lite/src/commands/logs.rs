//! `kubectl-lite logs (POD | TYPE/NAME) [CONTAINER] [-c CONTAINER] [-f] [-p] [--tail N]
//! [--timestamps] [--limit-bytes N]`: a container's log, through the apiserver's pods/log
//! subresource (kl-client's `Api<Pod>::logs`), written out as it arrives.
//!
//! As kubectl, the pod is read first: a missing container name defaults to the pod's first
//! container (with kubectl's `Defaulted container "a" out of: a, b` note on stderr when there
//! are several), and a wrong one is refused before the log is asked for. `rs/NAME` picks one of
//! the ReplicaSet's pods, as kubectl does.
use std::io::Write;

use clap::Args;
use futures::StreamExt;
use kl_api::{Kind, Object, Pod};
use kl_client::{Api, ListParams, LogParams};

use super::printers::format_selector;
use super::resources::{kind_of, usage};
use super::session::{Globals, Session};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod (NAME or pod/NAME), or rs/NAME for one of a ReplicaSet's pods; then, optionally,
    /// the container (kubectl's older form).
    #[arg(value_name = "POD | TYPE/NAME", required = true, num_args = 1..=2)]
    pub args: Vec<String>,
    /// Print the logs of this container.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Specify if the logs should be streamed.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// If true, print the logs for the previous instance of the container in a pod if it
    /// exists.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Lines of recent log file to display. Defaults to -1, showing all log lines.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Include timestamps on each line in the log output.
    #[arg(long)]
    pub timestamps: bool,
    /// Maximum bytes of logs to return. Defaults to no limit.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub limit_bytes: i64,
}

impl LogsArgs {
    /// The options as the API takes them, after kubectl's checks of the flags.
    pub fn params(&self) -> anyhow::Result<LogParams> {
        if self.limit_bytes < 0 {
            return Err(usage("--limit-bytes must be greater than 0"));
        }
        if self.tail < -1 {
            return Err(usage("--tail must be greater than or equal to -1"));
        }
        let mut lp = LogParams::default()
            .follow(self.follow)
            .previous(self.previous)
            .timestamps(self.timestamps);
        if self.tail >= 0 {
            lp = lp.tail_lines(self.tail);
        }
        if self.limit_bytes > 0 {
            lp = lp.limit_bytes(self.limit_bytes);
        }
        Ok(lp)
    }

    /// `-c`, else the second argument.
    fn container(&self) -> anyhow::Result<Option<String>> {
        match (&self.container, self.args.get(1)) {
            (Some(_), Some(_)) => Err(usage(
                "only one of -c or an inline [CONTAINER] arg is allowed",
            )),
            (Some(c), None) | (None, Some(c)) => Ok(Some(c.clone())),
            (None, None) => Ok(None),
        }
    }
}

/// The container to read, as kubectl chooses it: the one named (which must be the pod's), else
/// the first, with kubectl's note when the pod has several.
pub fn choose_container(
    pod: &Pod,
    requested: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    let name = pod.metadata.as_ref().map_or("", |m| m.name.as_str());
    let containers: Vec<&str> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    match requested {
        Some(c) if containers.contains(&c) => Ok((c.to_string(), None)),
        Some(c) => Err(usage(format!("container {c} is not valid for pod {name}"))),
        None => match containers.as_slice() {
            [] => Err(usage(format!("pod {name} does not have any containers"))),
            [only] => Ok((only.to_string(), None)),
            [first, ..] => Ok((
                first.to_string(),
                Some(format!(
                    "Defaulted container {first:?} out of: {}",
                    containers.join(", ")
                )),
            )),
        },
    }
}

/// kubectl's pick among a controller's pods: a running one first, then the oldest.
fn pick_pod(mut pods: Vec<Pod>) -> Option<Pod> {
    let rank = |p: &Pod| {
        let phase = p.status.as_ref().map_or("", |s| s.phase.as_str());
        let running = phase == "Running";
        let created = p
            .metadata
            .as_ref()
            .map(|m| m.creation_timestamp.clone())
            .unwrap_or_default();
        (!running, created)
    };
    pods.sort_by_key(rank);
    pods.into_iter().next()
}

pub async fn run(
    g: &Globals,
    args: LogsArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut lp = args.params()?;
    let requested = args.container()?;
    let target = &args.args[0];
    let s = Session::connect(g)?;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.namespace);
    let pod = match target.split_once('/') {
        None => pods.get(target).await?,
        Some((kind, name)) => match kind_of(kind)? {
            Kind::Pod => pods.get(name).await?,
            Kind::ReplicaSet => {
                let Object::ReplicaSet(rs) = s.api(Kind::ReplicaSet, false).get(name).await? else {
                    anyhow::bail!("the server answered with another kind");
                };
                let selector =
                    format_selector(rs.spec.as_ref().and_then(|sp| sp.selector.as_ref()));
                let list = pods
                    .list_all(&ListParams::default().labels(&selector))
                    .await?;
                let n = list.items.len();
                let pod = pick_pod(list.items)
                    .ok_or_else(|| usage(format!("no pods found for replicaset.apps/{name}")))?;
                if n > 1 {
                    let pod_name = pod.metadata.as_ref().map_or("", |m| m.name.as_str());
                    writeln!(err, "Found {n} pods, using pod/{pod_name}")?;
                }
                pod
            }
            other => {
                return Err(usage(format!(
                    "cannot get the logs from {}: only pods and replicasets have logs",
                    other.plural()
                )))
            }
        },
    };
    let (container, note) = choose_container(&pod, requested.as_deref())?;
    if let Some(note) = note {
        writeln!(err, "{note}")?;
    }
    lp.container = container;
    let name = pod.metadata.as_ref().map_or("", |m| m.name.as_str());
    let mut stream = pods.logs(name, &lp).await?;
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use kl_api::{Container, ObjectMeta, PodSpec, PodStatus};

    use super::*;
    use crate::commands::{error_message, Cli, Command};

    fn logs_args(argv: &[&str]) -> LogsArgs {
        let mut full = vec!["kubectl-lite", "logs"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Logs(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn pod(name: &str, containers: &[&str]) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
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
    fn flags_read_as_kubectl() {
        let a = logs_args(&[
            "web",
            "-f",
            "-p",
            "--tail",
            "1",
            "--timestamps",
            "-c",
            "c",
            "--limit-bytes=10",
        ]);
        assert_eq!(
            a.params().unwrap(),
            LogParams::default()
                .follow(true)
                .previous(true)
                .tail_lines(1)
                .timestamps(true)
                .limit_bytes(10)
        );
        assert_eq!(a.container().unwrap().as_deref(), Some("c"));
        // Defaults: everything, no limit.
        let a = logs_args(&["web", "side"]);
        assert_eq!(a.params().unwrap(), LogParams::default());
        assert_eq!(a.container().unwrap().as_deref(), Some("side"));
        let a = logs_args(&["web", "side", "-c", "main"]);
        assert_eq!(
            error_message(&a.container().unwrap_err()).unwrap(),
            "error: only one of -c or an inline [CONTAINER] arg is allowed"
        );
        let a = logs_args(&["web", "--tail=-2"]);
        assert_eq!(
            error_message(&a.params().unwrap_err()).unwrap(),
            "error: --tail must be greater than or equal to -1"
        );
        let a = logs_args(&["web", "--limit-bytes=-1"]);
        assert!(a.params().is_err());
        assert!(Cli::try_parse_from(["kubectl-lite", "logs"]).is_err());
    }

    #[test]
    fn containers_default_and_are_checked_as_kubectl() {
        assert_eq!(
            choose_container(&pod("web", &["main"]), None).unwrap(),
            ("main".to_string(), None)
        );
        assert_eq!(
            choose_container(&pod("web", &["main", "side"]), None).unwrap(),
            (
                "main".to_string(),
                Some("Defaulted container \"main\" out of: main, side".to_string())
            )
        );
        assert_eq!(
            choose_container(&pod("web", &["main", "side"]), Some("side")).unwrap(),
            ("side".to_string(), None)
        );
        let e = choose_container(&pod("web", &["main"]), Some("nope")).unwrap_err();
        assert_eq!(
            error_message(&e).unwrap(),
            "error: container nope is not valid for pod web"
        );
    }

    #[test]
    fn a_running_pod_is_picked_first_then_the_oldest() {
        let p = |name: &str, phase: &str, created: &str| {
            let mut p = pod(name, &["c"]);
            p.metadata.as_mut().unwrap().creation_timestamp = created.into();
            p.status = Some(PodStatus {
                phase: phase.into(),
                ..Default::default()
            });
            p
        };
        let picked = pick_pod(vec![
            p("a", "Pending", "2024-01-01T00:00:00Z"),
            p("b", "Running", "2024-01-03T00:00:00Z"),
            p("c", "Running", "2024-01-02T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(picked.metadata.unwrap().name, "c");
        assert!(pick_pod(vec![]).is_none());
    }
}
