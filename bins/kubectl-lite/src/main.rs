//! `kubectl-lite`: the kube-lite command line, kubectl plus the PKI part of kubeadm.
//!
//! This file only parses flags and reports errors; each subcommand lives in [`commands`] and its
//! logic in a library crate (`kl-pki` for `certs`), so that tests and other binaries reuse it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

mod commands;

fn main() -> ExitCode {
    kl_cli::init_logging();
    let cli = commands::Cli::parse();
    match commands::run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and cut short is not a failure of the command.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, as kubectl's "error: ..." does.
            eprintln!("error: {e:#}");
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
