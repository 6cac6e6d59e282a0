//! `etcd-lite`: one member of a Raft-replicated, sled-backed store speaking the etcd v3 API.
//!
//! It takes etcd's flags (same names, defaults and `ETCD_*` variables, see [`flags`]), so a
//! script that starts etcd starts etcd-lite by changing only the binary name. Everything else
//! happens in [`etcd_lite::run`].
#![forbid(unsafe_code)]

/// mimalloc, not glibc's malloc: a server allocating and freeing many small objects per
/// request spent a quarter of its CPU in glibc's allocator (docs/BENCHMARKS.md, scheduler).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

mod flags;

fn main() -> ExitCode {
    // `<binary> healthcheck URL ...`: a GET for container health checks (kl_cli::healthcheck).
    if let Some(code) = kl_cli::healthcheck::dispatch() {
        return code;
    }
    // Flags first, while the process has one thread (parsing edits the environment).
    let flags = flags::Flags::from_process();
    if flags.version {
        println!("etcd-lite Version: {}", env!("CARGO_PKG_VERSION"));
        println!("etcd API Version: {}", etcd_lite::server::ETCD_API_VERSION);
        return ExitCode::SUCCESS;
    }
    kl_cli::init_logging();
    let config = match flags.config() {
        Ok(config) => config,
        Err(e) => {
            // As etcd: a configuration that fails verification exits 1, naming the flag.
            eprintln!("etcd-lite: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        name = %config.name,
        data_dir = %config.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "starting etcd-lite"
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("etcd-lite: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(etcd_lite::run(config, flags.server_options())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-lite: {e:#}");
            ExitCode::FAILURE
        }
    }
}
