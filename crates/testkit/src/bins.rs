//! Where the binaries under test live. Tests run from `target/<profile>/deps/<test>-<hash>`, so
//! the binaries built by `cargo build --workspace --bins` are one directory up.

use std::path::PathBuf;

/// The environment variable that replaces etcd-lite by another etcd-compatible server binary,
/// e.g. `KL_ETCD_BIN=/usr/bin/etcd` to check the tests themselves against real etcd.
pub const ETCD_BIN_ENV: &str = "KL_ETCD_BIN";

/// The cargo profile directory (`target/debug` or `target/release`) of the running executable.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("the test executable has a parent directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary built in the same profile as the running executable. It is
/// not checked for existence; see [`etcd_bin`] for the checked variant.
pub fn bin_path(name: &str) -> PathBuf {
    profile_dir().join(name)
}

/// The store binary the tests start: `$KL_ETCD_BIN` if set, else `etcd-lite` next to the tests.
///
/// # Errors
/// When the binary does not exist, with the command that builds it.
pub fn etcd_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(ETCD_BIN_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        anyhow::ensure!(
            p.is_file(),
            "{ETCD_BIN_ENV}={} does not exist or is not a file",
            p.display()
        );
        return Ok(p);
    }
    let p = bin_path("etcd-lite");
    anyhow::ensure!(
        p.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first (or set \
         {ETCD_BIN_ENV}=/usr/bin/etcd to run these tests against real etcd)",
        p.display()
    );
    Ok(p)
}

/// Debian's `etcdctl` (package `etcd-client`), or `$KL_ETCDCTL_BIN`.
pub fn etcdctl_bin() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("KL_ETCDCTL_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"));
    anyhow::ensure!(
        p.is_file(),
        "{} does not exist: install Debian's etcd-client package (scripts/test does)",
        p.display()
    );
    Ok(p)
}
