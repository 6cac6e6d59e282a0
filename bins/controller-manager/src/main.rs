//! `controller-manager`: kube-controller-manager's flags in, a running kube-lite
//! controller-manager out. Everything else happens in [`controller_manager::run`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

mod flags;

fn main() -> ExitCode {
    // `<binary> healthcheck URL ...`: a GET for container health checks (kl_cli::healthcheck).
    if let Some(code) = kl_cli::healthcheck::dispatch() {
        return code;
    }
    let flags = kl_cli::bool_flag(flags::Flags::parse());
    kl_cli::init_logging();
    let config = match flags.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("controller-manager: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("controller-manager: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), identity = %config.leader_election.identity, "starting controller-manager");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("controller-manager: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(controller_manager::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("controller-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}
