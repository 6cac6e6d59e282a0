//! `lb`: a TCP load balancer for the apiservers, like HAProxy in `mode tcp`. Flags in,
//! [`lb::Config`] out, then [`lb::run`] until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "lb",
    about = "TCP load balancer (HAProxy mode tcp): TLS passes through untouched; active \
             /readyz health checks, passive connect failures, stats and /metrics."
)]
struct Flags {
    /// Address the frontend listens on.
    #[arg(long, default_value = "0.0.0.0:6443")]
    bind: SocketAddr,

    /// A backend as HOST:PORT; repeat the flag or give a comma list. Names are re-resolved on
    /// every connect and check.
    #[arg(
        long = "backend",
        value_name = "HOST:PORT",
        value_delimiter = ',',
        required = true
    )]
    backends: Vec<String>,

    /// How a backend is picked for a new connection.
    #[arg(long, value_enum, default_value = "roundrobin")]
    balance: BalanceFlag,

    /// Time between two health checks of one backend.
    #[arg(long, value_parser = kl_cli::duration, default_value = "1s")]
    check_interval: Duration,

    /// Bound on one health check (connect, TLS, answer).
    #[arg(long, value_parser = kl_cli::duration, default_value = "1s")]
    check_timeout: Duration,

    /// Consecutive failed checks that take a backend down (and cut its connections).
    #[arg(long, default_value_t = 2)]
    fall: u32,

    /// Consecutive passed checks that bring a down backend back.
    #[arg(long, default_value_t = 2)]
    rise: u32,

    /// HTTP path of the health check; a 2xx or 3xx answer passes.
    #[arg(long, default_value = "/readyz")]
    check_path: String,

    /// CA that signs the backends' serving certificates. With it, checks are HTTPS and the
    /// backend's certificate is verified for its HOST; WITHOUT IT, CHECKS ARE PLAIN HTTP.
    #[arg(long, value_name = "FILE")]
    check_ca_file: Option<PathBuf>,

    /// Client certificate presented by HTTPS checks (mutual TLS); needs --check-key-file and
    /// --check-ca-file.
    #[arg(long, value_name = "FILE")]
    check_cert_file: Option<PathBuf>,

    /// Key of --check-cert-file.
    #[arg(long, value_name = "FILE")]
    check_key_file: Option<PathBuf>,

    /// Address of the stats page (/) and Prometheus metrics (/metrics).
    #[arg(long, default_value = "127.0.0.1:8404")]
    stats_bind: SocketAddr,

    /// A connection with no traffic either way for this long is closed (HAProxy's timeout
    /// client/server); long because watches can be quiet.
    #[arg(long, value_parser = kl_cli::duration, default_value = "1h")]
    idle_timeout: Duration,

    /// Bound on connecting to one backend before trying the next.
    #[arg(long, value_parser = kl_cli::duration, default_value = "5s")]
    connect_timeout: Duration,

    /// Open client connections beyond this are closed at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,

    /// On SIGTERM, how long open connections may continue before they are cut.
    #[arg(long, value_parser = kl_cli::duration, default_value = "5s")]
    drain_timeout: Duration,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum BalanceFlag {
    Roundrobin,
    Leastconn,
}

impl Flags {
    fn config(&self) -> anyhow::Result<lb::Config> {
        let mut c = lb::Config::new(self.bind, self.backends.clone());
        c.balance = match self.balance {
            BalanceFlag::Roundrobin => lb::Balance::RoundRobin,
            BalanceFlag::Leastconn => lb::Balance::LeastConn,
        };
        c.check.interval = self.check_interval;
        c.check.timeout = self.check_timeout;
        c.check.fall = self.fall;
        c.check.rise = self.rise;
        c.check.path = self.check_path.clone();
        c.check.tls = match (
            &self.check_ca_file,
            &self.check_cert_file,
            &self.check_key_file,
        ) {
            (None, None, None) => None,
            (None, _, _) => anyhow::bail!(
                "--check-cert-file/--check-key-file need --check-ca-file (mutual TLS checks)"
            ),
            (Some(ca), None, None) => Some(kl_tls::ClientTls::load(ca, None)?),
            (Some(ca), Some(cert), Some(key)) => Some(
                kl_tls::ClientTls::load(ca, Some((cert, key)))
                    .context("loading the health-check TLS files")?,
            ),
            _ => anyhow::bail!("--check-cert-file and --check-key-file go together"),
        };
        c.stats_bind = self.stats_bind;
        c.idle_timeout = self.idle_timeout;
        c.connect_timeout = self.connect_timeout;
        c.max_connections = self.max_connections;
        c.drain_timeout = self.drain_timeout;
        c.validate()?;
        Ok(c)
    }
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; lb stops only when killed");
            std::future::pending::<()>().await
        }
    }
}

fn main() -> ExitCode {
    // `<binary> healthcheck URL ...`: a GET for container health checks (kl_cli::healthcheck).
    if let Some(code) = kl_cli::healthcheck::dispatch() {
        return code;
    }
    let flags = Flags::parse();
    kl_cli::init_logging();
    let config = match flags.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lb: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lb: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lb::run(config, terminated())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb: {e}");
            ExitCode::FAILURE
        }
    }
}
