//! `kubectl-lite scale rs/NAME --replicas N` (also `scale replicaset NAME`): sets
//! `spec.replicas` with an update on the version read, retried on Conflict.
use std::io::Write;

use clap::Args;
use kl_api::{Kind, Object};

use super::resources::{kind_ref, usage, Targets};
use super::session::{Globals, Session};

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// rs/NAME, or replicaset NAME.
    #[arg(value_name = "TYPE NAME | TYPE/NAME", required = true)]
    pub args: Vec<String>,
    /// The new number of replicas.
    #[arg(long, required = true)]
    pub replicas: i32,
    /// Precondition: scale only if the current replicas match (-1: no precondition).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub current_replicas: i32,
    /// Precondition: scale only if the resourceVersion matches.
    #[arg(long)]
    pub resource_version: Option<String>,
}

/// Conflicts are retried this many times (someone else wrote the object meanwhile).
const CONFLICT_RETRIES: usize = 5;

pub async fn run(g: &Globals, args: ScaleArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.replicas < 0 {
        return Err(usage(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0",
        ));
    }
    let targets = Targets::parse(&args.args, "scale")?;
    let s = Session::connect(g)?;
    for (kind, names) in &targets.0 {
        if *kind != Kind::ReplicaSet {
            return Err(usage(format!(
                "cannot scale {}: only replicasets have a scale subresource in kube-lite",
                kind.plural()
            )));
        }
        if names.is_empty() {
            return Err(usage(
                "resource(s) were provided, but no name was specified",
            ));
        }
        let api = s.api(*kind, false);
        for name in names {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let Object::ReplicaSet(mut rs) = api.get(name).await? else {
                    anyhow::bail!("the server answered with another kind");
                };
                let meta = rs.metadata.clone().unwrap_or_default();
                let spec = rs.spec.get_or_insert_with(Default::default);
                if args.current_replicas >= 0 && spec.replicas.unwrap_or(1) != args.current_replicas
                {
                    anyhow::bail!(
                        "Expected replicas to be {}, was {}",
                        args.current_replicas,
                        spec.replicas.unwrap_or(1)
                    );
                }
                if let Some(rv) = &args.resource_version {
                    if *rv != meta.resource_version {
                        anyhow::bail!(
                            "Expected resourceVersion to be {rv}, was {}",
                            meta.resource_version
                        );
                    }
                }
                spec.replicas = Some(args.replicas);
                match api.update(Object::ReplicaSet(rs)).await {
                    Ok(_) => break,
                    Err(e)
                        if e.is_conflict()
                            && attempt < CONFLICT_RETRIES
                            && args.resource_version.is_none() =>
                    {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            writeln!(out, "{}/{name} scaled", kind_ref(*kind))?;
        }
    }
    Ok(())
}
