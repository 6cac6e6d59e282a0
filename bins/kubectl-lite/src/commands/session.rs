//! What every API command shares: kubectl's global flags, the connection to the cluster
//! (kl-client), the namespace in effect, and kubectl's wording of errors.
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use kl_api::Kind;
use kl_client::{ApiError, Client, ClientOptions, DynamicApi, Kubeconfig};

use super::resources::UsageError;

/// kubectl's global flags; they may come before or after the subcommand.
#[derive(Debug, Args, Default, Clone)]
pub struct Globals {
    /// Path to the kubeconfig file to use for CLI requests (else KUBECONFIG, else
    /// ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The name of the kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// If present, the namespace scope for this CLI request.
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The length of time to wait before giving up on a single server request (each retry
    /// gets its own). Non-zero values need a unit (1s, 2m, 3h); a bare number is seconds; 0
    /// means no timeout. Default: 30s.
    #[arg(long, global = true, value_name = "DURATION")]
    pub request_timeout: Option<String>,
}

impl Globals {
    /// `--request-timeout`: None when not given, Some(None) for `0` (no timeout).
    pub fn request_timeout(&self) -> anyhow::Result<Option<Option<Duration>>> {
        let Some(t) = self.request_timeout.as_deref() else {
            return Ok(None);
        };
        let d = match t.trim().parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => kl_cli::parse_duration(t).map_err(|_| {
                UsageError(format!(
                    "invalid timeout value {t:?}. Timeout must be a single integer in seconds, or an integer followed by a corresponding time unit (e.g. 1s | 2m | 3h)"
                ))
            })?,
        };
        Ok(Some((!d.is_zero()).then_some(d)))
    }
}

/// A connected command: the client, and the namespace it works in.
#[derive(Clone, Debug)]
pub struct Session {
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// Whether `-n` was given (apply refuses manifests of another namespace then).
    pub namespace_explicit: bool,
}

impl Session {
    pub fn connect(g: &Globals) -> anyhow::Result<Session> {
        let config =
            Kubeconfig::load_default(g.kubeconfig.as_deref())?.resolve(g.context.as_deref())?;
        let mut opts = ClientOptions::default();
        if let Some(t) = g.request_timeout()? {
            opts = opts.request_timeout(t);
        }
        let client = Client::with_options(&config, opts)?;
        let namespace = match &g.namespace {
            Some(ns) if !ns.is_empty() => ns.clone(),
            _ => client.default_namespace().to_string(),
        };
        Ok(Session {
            client,
            namespace,
            namespace_explicit: g.namespace.as_deref().is_some_and(|n| !n.is_empty()),
        })
    }

    /// The API of `kind` in this session's namespace, or every namespace.
    pub fn api(&self, kind: Kind, all_namespaces: bool) -> DynamicApi {
        let ns = if all_namespaces { "" } else { &self.namespace };
        DynamicApi::new(self.client.clone(), kind, ns)
    }

    /// The API of `kind` in `namespace`.
    pub fn api_in(&self, kind: Kind, namespace: &str) -> DynamicApi {
        DynamicApi::new(self.client.clone(), kind, namespace)
    }
}

/// The command already printed its errors (kubectl goes on past a failed object and exits 1
/// at the end).
#[derive(Debug, thiserror::Error)]
#[error("errors were reported above")]
pub struct Reported;

/// Runs an async command on a runtime of its own.
pub fn block_on<T, F: Future<Output = anyhow::Result<T>>>(f: F) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(f)
}

/// kubectl's line for an error: `Error from server (NotFound): ...` and `Unable to connect to
/// the server: ...` as they are, anything else after `error: `. None for [`Reported`].
pub fn error_message(e: &anyhow::Error) -> Option<String> {
    if e.downcast_ref::<Reported>().is_some() {
        return None;
    }
    if let Some(api) = e.downcast_ref::<ApiError>() {
        return Some(api_error_message(api));
    }
    // The cause chain on one line, as kubectl's; a cause its parent already quotes is not
    // repeated.
    let mut line = String::from("error: ");
    for (i, cause) in e.chain().enumerate() {
        let text = cause.to_string();
        if i == 0 {
            line.push_str(&text);
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    Some(line)
}

pub fn api_error_message(e: &ApiError) -> String {
    match e {
        ApiError::Status {
            reason: kl_client::Reason::Unauthorized,
            ..
        }
        | ApiError::Unexpected { .. } => format!("error: {e}"),
        _ => e.to_string(),
    }
}

/// Prints one object's error as kubectl does and goes on.
pub fn report(err: &mut dyn Write, e: &anyhow::Error) {
    if let Some(line) = error_message(e) {
        let _ = writeln!(err, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use kl_client::Reason;

    use super::*;

    #[test]
    fn request_timeouts_read_like_kubectl() {
        let g = |t: &str| Globals {
            request_timeout: Some(t.to_string()),
            ..Default::default()
        };
        assert_eq!(
            g("5").request_timeout().unwrap(),
            Some(Some(Duration::from_secs(5)))
        );
        assert_eq!(
            g("1m").request_timeout().unwrap(),
            Some(Some(Duration::from_secs(60)))
        );
        assert_eq!(g("0").request_timeout().unwrap(), Some(None));
        assert!(g("soon").request_timeout().is_err());
        assert_eq!(Globals::default().request_timeout().unwrap(), None);
    }

    #[test]
    fn errors_are_worded_as_kubectl() {
        let nf = ApiError::Status {
            reason: Reason::NotFound,
            code: tonic_code_not_found(),
            message: "pods \"x\" not found".into(),
            retry_after: None,
        };
        assert_eq!(
            error_message(&anyhow::Error::from(nf)).unwrap(),
            "Error from server (NotFound): pods \"x\" not found"
        );
        let unauth = ApiError::Status {
            reason: Reason::Unauthorized,
            code: tonic_code_not_found(),
            message: "Unauthorized".into(),
            retry_after: None,
        };
        assert_eq!(
            error_message(&anyhow::Error::from(unauth)).unwrap(),
            "error: You must be logged in to the server (Unauthorized)"
        );
        let usage = super::super::resources::usage("the server doesn't have a resource type \"x\"");
        assert_eq!(
            error_message(&usage).unwrap(),
            "error: the server doesn't have a resource type \"x\""
        );
        assert_eq!(error_message(&anyhow::Error::from(Reported)), None);
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(io).context("reading x: entity not found");
        assert_eq!(
            error_message(&e).unwrap(),
            "error: reading x: entity not found"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_message(&e).unwrap(), "error: outer: inner");
    }

    fn tonic_code_not_found() -> kl_client::error::Code {
        kl_client::error::Code::NotFound
    }
}
