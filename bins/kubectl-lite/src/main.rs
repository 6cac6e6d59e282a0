//! `kubectl-lite`: the kube-lite command line, kubectl plus the PKI part of kubeadm.
//!
//! This file only parses flags and reports errors; each subcommand lives in [`commands`] and its
//! logic in a library crate (`kl-client` for everything that talks to the cluster, `kl-pki` for
//! `certs`), so that tests and other binaries reuse it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

mod commands;

fn main() -> ExitCode {
    // `<binary> healthcheck URL ...`: a GET for container health checks (kl_cli::healthcheck).
    if let Some(code) = kl_cli::healthcheck::dispatch() {
        return code;
    }
    kl_cli::init_logging();
    let cli = commands::Cli::parse();
    let result = commands::run_with(
        cli,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and cut short is not a failure of the command.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // kubectl's wording: "Error from server (NotFound): ..." as is, anything else
            // after "error: " with its whole cause chain on one line. Nothing when the command
            // already printed its errors.
            if let Some(line) = commands::error_message(&e) {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
