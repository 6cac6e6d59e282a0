//! `apiserver`: kube-apiserver's flags in, a running kube-lite apiserver out. Everything else
//! happens in [`apiserver::run`].
#![forbid(unsafe_code)]

/// mimalloc, not glibc's malloc: a server allocating and freeing many small objects per
/// request spent a quarter of its CPU in glibc's allocator (docs/BENCHMARKS.md, scheduler).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

mod flags;

fn main() -> ExitCode {
    // `<binary> healthcheck URL ...`: a GET for container health checks (kl_cli::healthcheck).
    if let Some(code) = kl_cli::healthcheck::dispatch() {
        return code;
    }
    let flags = flags::Flags::parse();
    kl_cli::init_logging();
    let config = flags.config();
    if let Err(e) = config.validate() {
        eprintln!("apiserver: {e}");
        return ExitCode::FAILURE;
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), server = %config.server_id(), "starting apiserver");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("apiserver: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(apiserver::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apiserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}
