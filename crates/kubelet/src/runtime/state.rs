//! The on-disk records of one container attempt, shared by the kubelet and the shim, and the
//! small OS helpers both need (process liveness by pid *and* start time, atomic writes, RFC 3339
//! timestamps).
//!
//! Files of attempt `N` of a container, in `pods/<uid>/.runtime/<container>/`:
//! * `N.spec.json` ([`ShimSpec`]): written by the kubelet before it starts the shim; the shim's
//!   only input.
//! * `N.json` ([`AttemptState`]): written by the shim once the container process exists; what a
//!   restarted kubelet adopts.
//! * `N.exit.json` ([`ExitRecord`]): written by the shim when the container has exited and its
//!   output is drained (or by the kubelet, for a start the shim could not report, or a shim that
//!   died without recording). Its presence means "this attempt is over, and its log is
//!   complete".
//!
//! Every record is written atomically (temp file + rename), so a reader never sees half of one.
use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};
use time::{format_description::BorrowedFormatItem, macros::format_description};

/// RFC 3339 with nanoseconds, always nine digits, in UTC: the CRI log timestamp and kubectl's
/// `--timestamps` format (kubelet's `RFC3339NanoFixed`).
const TIME_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Formats a time as `2026-12-07T09:15:01.123456789Z`.
pub(crate) fn format_time(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(TIME_FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000000Z".to_string())
}

/// Parses what [`format_time`] wrote.
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    let t = time::PrimitiveDateTime::parse(s, TIME_FORMAT).ok()?;
    Some(t.assume_utc().into())
}

/// Everything the shim needs to start and watch one container attempt (`N.spec.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShimSpec {
    /// `command` followed by `args`, as the pod spec gave them; `argv[0]` is resolved by the shim
    /// against the `PATH` in `env`.
    pub argv: Vec<String>,
    /// The container's whole environment (the kubelet already added `PATH` if the pod had none).
    pub env: Vec<(String, String)>,
    /// The working directory (the pod's `workingDir`, or the container's default directory).
    pub cwd: PathBuf,
    /// The CRI log file of this attempt; rotated files are written next to it.
    pub log_path: PathBuf,
    /// Rotate the log file before it would grow past this many bytes.
    pub log_max_size: u64,
    /// Keep at most this many log files (the live one included).
    pub log_max_files: usize,
    /// Where to write [`AttemptState`].
    pub state_path: PathBuf,
    /// Where to write [`ExitRecord`].
    pub exit_path: PathBuf,
}

/// A running attempt (`N.json`), written by the shim right after the container started.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttemptState {
    /// The container's pid, which is also its process group id.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat`: tells the container from a later process that reuses
    /// its pid.
    pub pid_start_time: u64,
    /// The shim's pid and start time, to know whether anyone is still going to record the exit.
    pub shim_pid: u32,
    pub shim_start_time: u64,
    /// When the container process was started ([`format_time`]).
    pub started_at: String,
}

/// How an attempt ended (`N.exit.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExitRecord {
    /// The exit status, or 128 + the signal that killed it (137 for SIGKILL), or 128 for a
    /// start error (as containerd reports them).
    pub exit_code: i32,
    /// The signal that killed the container, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// `Completed`, `Error` or `StartError`.
    pub reason: String,
    /// Why it could not start, or why the exit is not known; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the process started ([`format_time`]); absent for a start error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the exit was observed ([`format_time`]).
    pub finished_at: String,
}

/// The shim's one line to the kubelet on its stdout, right after it tried to start the
/// container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Handshake {
    /// The container runs with this pid; `N.json` is written.
    Started { pid: u32 },
    /// It could not start; `N.exit.json` is written (when the spec could be read).
    Failed { message: String },
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsynced, renamed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a record as JSON, atomically.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes)
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot) and whether
/// it has already exited (a zombie waiting to be reaped); `None` when there is no such process.
pub(crate) fn proc_stat(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 is fields[19].
    let state = *fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// Whether process `pid` is alive and is the one that started at `start_time` (not a later
/// process that reuses the pid, not a zombie).
pub(crate) fn process_alive(pid: u32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some((start, false)) if start == start_time)
}

/// Go's wording of an OS error (`no such file or directory`), as upstream messages carry it.
pub(crate) fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_with_nine_digits() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_796_634_901, 123_456_789);
        let s = format_time(t);
        assert_eq!(s, "2026-12-07T09:15:01.123456789Z");
        assert_eq!(parse_time(&s), Some(t));
        let whole = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5);
        assert_eq!(format_time(whole), "1970-01-01T00:00:05.000000000Z");
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn own_process_is_alive_and_pid_reuse_is_detected() {
        let me = std::process::id();
        let (start, zombie) = proc_stat(me).expect("own /proc/self/stat");
        assert!(!zombie);
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
        assert!(proc_stat(u32::MAX - 1).is_none());
    }

    #[test]
    fn records_are_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.exit.json");
        assert!(read_json::<ExitRecord>(&path).unwrap().is_none());
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            reason: "Error".into(),
            message: String::new(),
            started_at: Some(format_time(SystemTime::now())),
            finished_at: format_time(SystemTime::now()),
        };
        write_json(&path, &rec).unwrap();
        assert_eq!(read_json::<ExitRecord>(&path).unwrap(), Some(rec));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    #[test]
    fn errno_text_is_gos_wording() {
        let e = io::Error::from_raw_os_error(libc_enoent());
        assert_eq!(errno_text(&e), "no such file or directory");
    }

    fn libc_enoent() -> i32 {
        nix::errno::Errno::ENOENT as i32
    }
}
