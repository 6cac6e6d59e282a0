//! Command-line conventions shared by every kube-lite binary.
//!
//! Upstream Kubernetes and etcd take flags the Go way, and people paste those flags into compose
//! files and scripts. This crate owns the small pieces that make the same text work here:
//!
//! * [`parse_duration`]: Go's `time.ParseDuration` notation (`15s`, `500ms`, `1m30s`, `2h`).
//! * [`bool_flag`]: a boolean flag that accepts `--flag`, `--flag=true` and `--flag true`, as the
//!   Go `flag` package and pflag do.
//! * [`parse_url_list`]: comma-separated URL lists (`--listen-client-urls a,b`).
//! * [`init_logging`]: one `tracing` subscriber set-up, filtered by `RUST_LOG`.
//! * [`healthcheck`]: the `<binary> healthcheck URL` subcommand every binary dispatches to
//!   (container health checks without curl or a TLS-capable wget).
//!
//! It must never grow component-specific knowledge: a flag's meaning lives with its component.
#![forbid(unsafe_code)]

use std::time::Duration;

pub mod healthcheck;

/// A flag value that could not be understood; the message names the value and the expected form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    #[error("invalid duration {0:?}: expected Go notation such as 15s, 500ms, 1m30s or 2h")]
    Duration(String),
    #[error("invalid URL {0:?}: expected scheme://host:port with scheme http or https")]
    Url(String),
}

/// Parses a duration in Go's notation: a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), e.g. `300ms`, `1.5h`, `2h45m`.
/// A bare `0` is accepted, as in Go.
pub fn parse_duration(text: &str) -> Result<Duration, FlagError> {
    let err = || FlagError::Duration(text.to_string());
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(err());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total_nanos += number * scale;
        rest = &rest[unit_len..];
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(err());
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats a duration the way Go's `Duration.String()` does for the common cases (`15s`,
/// `500ms`, `1m30s`), so that flag defaults print as users type them.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let frac_ms = (ms % 1000) as u64;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac_ms > 0 {
        let frac = format!("{:03}", frac_ms);
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    } else {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// A clap value parser for [`parse_duration`], for `#[arg(value_parser = kl_cli::duration)]`.
pub fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// Parses a comma-separated list of `http://` or `https://` URLs, keeping their order.
pub fn parse_url_list(text: &str) -> Result<Vec<String>, FlagError> {
    text.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let ok = (u.starts_with("http://") || u.starts_with("https://"))
                && u.split("://").nth(1).is_some_and(|hp| hp.contains(':'));
            if ok {
                Ok(u.to_string())
            } else {
                Err(FlagError::Url(u.to_string()))
            }
        })
        .collect()
}

/// A clap value parser for [`parse_url_list`].
pub fn url_list(text: &str) -> Result<Vec<String>, String> {
    parse_url_list(text).map_err(|e| e.to_string())
}

/// Turns a clap argument into an upstream-style boolean flag: `--flag` means true, and
/// `--flag=true`, `--flag=false`, `--flag true`, `--flag false` work as in Go's `flag` package.
///
/// ```
/// use clap::Parser;
/// #[derive(Parser)]
/// struct Flags {
///     #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
///           action = clap::ArgAction::Set)]
///     client_cert_auth: bool,
/// }
/// let f = Flags::parse_from(["x", "--client-cert-auth"]);
/// assert!(f.client_cert_auth);
/// let f = kl_cli::bool_flag(Flags::parse_from(["x", "--client-cert-auth", "false"]));
/// assert!(!f.client_cert_auth);
/// ```
///
/// The attribute line above is the whole convention; this function is the identity and exists so
/// that the doctest above keeps that convention checked.
pub fn bool_flag<T>(flags: T) -> T {
    flags
}

/// Installs the process-wide `tracing` subscriber: human-readable lines on stderr, filtered by
/// `RUST_LOG` (default `info`, with the chatty libraries we embed, openraft and h2, at `warn`:
/// their per-message logs would drown what an operator needs).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn,hyper=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Completes on SIGTERM or SIGINT (Ctrl-C): when a component should stop.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(Duration::from_secs(15)), "15s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn url_lists() {
        assert_eq!(
            parse_url_list("https://127.0.0.1:2379,http://a:1"),
            Ok(vec!["https://127.0.0.1:2379".into(), "http://a:1".into()])
        );
        assert!(parse_url_list("127.0.0.1:2379").is_err());
    }
}
