//! `kubectl-lite get`: tables, `-o wide|yaml|json|name`, selectors, `-A`, and `-w` (rows as
//! events arrive; relist on Expired; resume from the last version after a dropped stream).
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use kl_api::{Kind, Object};
use kl_client::{ApiError, DynamicApi, ListParams, WatchEvent, WatchParams};
use time::OffsetDateTime;

use super::printers::{self, no_resources, Output, TableOpts};
use super::resources::{usage, Targets};
use super::session::{report, Globals, Reported, Session};
use super::tabwriter::TabWriter;

#[derive(Debug, Args)]
pub struct GetArgs {
    /// TYPE[,TYPE...] [NAME...], or TYPE/NAME... (types: pods/po, nodes/no, replicasets/rs,
    /// leases, events/ev, namespaces/ns).
    #[arg(value_name = "TYPE[.NAME]")]
    pub args: Vec<String>,
    /// Output format: wide, yaml, json or name.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Label selector to filter on (`app=web`, `tier!=db`, `env in (a,b)`, `!legacy`).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector to filter on (`metadata.name=x`, `spec.nodeName=n`, `status.phase=Running`).
    #[arg(long)]
    pub field_selector: Option<String>,
    /// List the requested objects across all namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Don't print headers.
    #[arg(long)]
    pub no_headers: bool,
    /// After listing the requested objects, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Watch for changes without listing first.
    #[arg(long)]
    pub watch_only: bool,
    /// Return large lists in chunks of this many items (0: all at once).
    #[arg(long, default_value_t = 500)]
    pub chunk_size: i64,
    /// Treat "resource not found" as a successful retrieval.
    #[arg(long)]
    pub ignore_not_found: bool,
}

pub async fn run(
    g: &Globals,
    args: GetArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<()> {
    let output = Output::parse(args.output.as_deref())?;
    let targets = Targets::parse(&args.args, "get")?;
    if targets.has_names() && args.selector.is_some() {
        return Err(usage(
            "name cannot be provided when a selector is specified",
        ));
    }
    if targets.has_names() && args.all_namespaces {
        return Err(usage(
            "a resource cannot be retrieved by name across all namespaces",
        ));
    }
    let s = Session::connect(g)?;
    let lp = ListParams::default()
        .labels(args.selector.as_deref().unwrap_or(""))
        .fields(args.field_selector.as_deref().unwrap_or(""))
        .limit(args.chunk_size.max(0));
    if args.watch || args.watch_only {
        let [(kind, names)] = targets.0.as_slice() else {
            return Err(usage("you may only specify a single resource type"));
        };
        return watch(&s, *kind, names, &args, lp, output, out).await;
    }

    let mut groups: Vec<(Kind, Vec<Object>)> = Vec::new();
    let mut failed = false;
    let mut named = 0;
    for (kind, names) in &targets.0 {
        let api = s.api(*kind, args.all_namespaces);
        let mut objects = Vec::new();
        if names.is_empty() {
            objects = api.list_all(&lp).await?.items;
        } else {
            for name in names {
                named += 1;
                match api.get(name).await {
                    Ok(o) => objects.push(o),
                    Err(e) if e.is_not_found() && args.ignore_not_found => {}
                    Err(e) => {
                        // One missing object does not stop the others (kubectl).
                        if e.is_transport() {
                            return Err(e.into());
                        }
                        report(err, &e.into());
                        failed = true;
                    }
                }
            }
        }
        groups.push((*kind, objects));
    }

    let objects: Vec<Object> = groups.iter().flat_map(|(_, o)| o.iter().cloned()).collect();
    let listing = !targets.has_names();
    match output {
        // Only errors to show: every object named was missing.
        _ if objects.is_empty() && !listing => {}
        Output::Yaml => {
            out.write_all(printers::yaml(&objects, named == 1 && objects.len() == 1)?.as_bytes())?
        }
        Output::Json => {
            out.write_all(printers::json(&objects, named == 1 && objects.len() == 1)?.as_bytes())?
        }
        _ if objects.is_empty() => {
            if listing {
                let all_namespaced = targets.0.iter().all(|(k, _)| k.namespaced());
                let ns = (all_namespaced && !args.all_namespaces).then_some(s.namespace.as_str());
                writeln!(err, "{}", no_resources(ns))?;
            }
        }
        Output::Name => out.write_all(printers::names(&objects).as_bytes())?,
        Output::Table | Output::Wide => {
            let now = OffsetDateTime::now_utc();
            let mut first = true;
            for (kind, objs) in groups.iter().filter(|(_, o)| !o.is_empty()) {
                let opts = TableOpts {
                    wide: output == Output::Wide,
                    namespace_column: args.all_namespaces && kind.namespaced(),
                    kind_prefix: targets.0.len() > 1,
                };
                if !first {
                    writeln!(out)?;
                }
                first = false;
                let text = printers::table(
                    &mut TabWriter::table(),
                    *kind,
                    objs,
                    opts,
                    args.no_headers,
                    now,
                );
                out.write_all(text.as_bytes())?;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// Prints objects as `-w` does, one flush per object so each row appears at once.
struct WatchPrinter {
    output: Output,
    opts: TableOpts,
    headers_left: bool,
    kind: Kind,
    tw: TabWriter,
}

impl WatchPrinter {
    fn print(&mut self, out: &mut dyn Write, o: &Object) -> anyhow::Result<()> {
        let text = match self.output {
            Output::Table | Output::Wide => {
                if self.headers_left {
                    self.headers_left = false;
                    self.tw.row(&printers::headers(self.kind, self.opts));
                }
                self.tw
                    .row(&printers::row(o, self.opts, OffsetDateTime::now_utc()));
                self.tw.flush()
            }
            Output::Name => printers::names(std::slice::from_ref(o)),
            Output::Yaml => format!("---\n{}", printers::yaml(std::slice::from_ref(o), true)?),
            Output::Json => printers::json(std::slice::from_ref(o), true)?,
        };
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    }
}

fn key(o: &Object) -> (String, String) {
    (o.namespace().to_string(), o.name().to_string())
}

fn rv(o: &Object) -> String {
    o.metadata()
        .map(|m| m.resource_version.clone())
        .unwrap_or_default()
}

async fn watch(
    s: &Session,
    kind: Kind,
    names: &[String],
    args: &GetArgs,
    mut lp: ListParams,
    output: Output,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match names {
        [] => {}
        [name] => {
            let by_name = format!("metadata.name={name}");
            lp.field_selector = if lp.field_selector.is_empty() {
                by_name
            } else {
                format!("{},{by_name}", lp.field_selector)
            };
        }
        _ => return Err(usage("watch is only supported on individual resources and resource collections, but multiple resources were found")),
    }
    let api = s.api(kind, args.all_namespaces);
    let mut p = WatchPrinter {
        output,
        opts: TableOpts {
            wide: output == Output::Wide,
            namespace_column: args.all_namespaces && kind.namespaced(),
            kind_prefix: false,
        },
        headers_left: !args.no_headers,
        kind,
        tw: TabWriter::table(),
    };
    // What was printed, by object: a relist prints only what changed meanwhile.
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    let list = api.list_all(&lp).await?;
    let mut version = list.resource_version;
    for o in &list.items {
        if !args.watch_only {
            p.print(out, o)?;
        }
        seen.insert(key(o), rv(o));
    }
    let wp = WatchParams::from(&lp).bookmarks(true);
    let mut failures = 0u32;
    loop {
        let mut stream = match api.watch(&wp, &version).await {
            Ok(st) => st,
            Err(e) if e.is_expired() => {
                version = relist(&api, &lp, &mut seen, &mut p, out).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(WatchEvent::Bookmark { resource_version }) => version = resource_version,
                Ok(ev) => {
                    failures = 0;
                    if let Some(o) = ev.object() {
                        version = rv(o);
                        match ev {
                            WatchEvent::Deleted(_) => seen.remove(&key(o)),
                            _ => seen.insert(key(o), rv(o)),
                        };
                        p.print(out, o)?;
                    }
                }
                Err(e) if e.is_expired() => {
                    version = relist(&api, &lp, &mut seen, &mut p, out).await?;
                    break;
                }
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "watch dropped; resuming");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        // The stream ended (apiserver shutdown, the lb cut a dead backend): resume from the
        // last version, backing off if it keeps failing.
        failures = failures.saturating_add(1);
        let delay = Duration::from_millis(100 * u64::from(failures.min(20)));
        tokio::time::sleep(delay).await;
    }
}

fn transient(e: &ApiError) -> bool {
    e.is_transport()
        || matches!(
            e.reason(),
            Some(kl_client::Reason::ServiceUnavailable | kl_client::Reason::TooManyRequests)
        )
}

/// After Expired: lists again, prints what changed since it was last printed, and returns the
/// version to watch from.
async fn relist(
    api: &DynamicApi,
    lp: &ListParams,
    seen: &mut HashMap<(String, String), String>,
    p: &mut WatchPrinter,
    out: &mut dyn Write,
) -> anyhow::Result<String> {
    let list = api.list_all(lp).await?;
    let mut now_seen = HashMap::new();
    for o in &list.items {
        if seen.get(&key(o)) != Some(&rv(o)) {
            p.print(out, o)?;
        }
        now_seen.insert(key(o), rv(o));
    }
    *seen = now_seen;
    Ok(list.resource_version)
}
