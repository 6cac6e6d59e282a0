//! What the Docker tests (tests/image.rs, tests/compose.rs) share: bounded `docker` runs, a
//! name suffix no other run on the engine uses, and the test image built by `scripts/image`
//! from the binaries the tests run.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    path::{Path, PathBuf},
    time::Duration,
};

use testkit::{command::run_bounded, CmdOutput};
use tokio::process::Command;

/// Bound on one `docker` command that starts or inspects something (not a build).
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A suffix no other run on this engine uses: container, network, project and image names
/// carry it.
pub fn random_suffix() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

/// `docker ARGS...`, bounded by [`DOCKER_TIMEOUT`].
pub async fn docker(args: &[&str], what: &str) -> anyhow::Result<CmdOutput> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run_bounded(cmd, None, DOCKER_TIMEOUT, what).await
}

/// Builds image `tag` with `scripts/image` from the binaries the tests run
/// (target/<profile>/, built by scripts/test), debug info stripped from the image's copies:
/// the same image, a quarter of the size and build time. Returns scripts/image's last line
/// (`scripts/image: TAG ID SIZE ...`).
pub async fn build_test_image(tag: &str) -> String {
    let profile_dir = testkit::profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name")
        .to_owned();
    let target_dir: &Path = profile_dir.parent().expect("the target directory");
    let mut build = Command::new(repo_root().join("scripts/image"));
    build
        .args(["--profile", &profile, "--strip", "--tag", tag])
        .current_dir(repo_root())
        .env("KL_SKIP_BUILD", "1")
        .env("CARGO_TARGET_DIR", target_dir);
    let built = run_bounded(build, None, Duration::from_secs(300), "scripts/image")
        .await
        .expect("running scripts/image")
        .ok()
        .expect("scripts/image builds the image");
    let last = built.stdout.lines().last().unwrap_or_default().to_owned();
    eprintln!("{last}");
    last
}
