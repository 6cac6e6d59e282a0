//! `kubectl-lite cordon NODE` / `uncordon NODE`: sets or clears `spec.unschedulable`.
use std::io::Write;

use clap::Args;
use kl_api::{Kind, Object};
use kl_client::ListParams;

use super::resources::usage;
use super::session::{report, Globals, Reported, Session};

#[derive(Debug, Args)]
pub struct CordonArgs {
    /// The nodes.
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Selector (label query) to filter on.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

pub async fn run(
    g: &Globals,
    args: CordonArgs,
    cordon: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let verb = if cordon { "cordon" } else { "uncordon" };
    if args.nodes.is_empty() && args.selector.is_none() {
        return Err(usage(format!(
            "USAGE: {verb} NODE [flags]\nSee 'kubectl-lite {verb} -h' for help and examples"
        )));
    }
    let s = Session::connect(g)?;
    let api = s.api(Kind::Node, false);
    let mut names = args.nodes.clone();
    if let Some(sel) = &args.selector {
        let list = api.list_all(&ListParams::default().labels(sel)).await?;
        names.extend(list.items.iter().map(|o| o.name().to_string()));
    }
    let mut failed = false;
    for name in names {
        let result = async {
            for attempt in 1.. {
                let Object::Node(mut node) = api.get(&name).await? else {
                    anyhow::bail!("the server answered with another kind");
                };
                let spec = node.spec.get_or_insert_with(Default::default);
                if spec.unschedulable == cordon {
                    return Ok(format!("node/{name} already {verb}ed"));
                }
                spec.unschedulable = cordon;
                match api.update(Object::Node(node)).await {
                    Ok(_) => return Ok(format!("node/{name} {verb}ed")),
                    // The kubelet renews its node often: redo on the newer version.
                    Err(e) if e.is_conflict() && attempt < 5 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            unreachable!("the loop returns")
        }
        .await;
        match result {
            Ok(line) => writeln!(out, "{line}")?,
            Err(e) => {
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
