//! The container runtime with real processes: the shim is `kubelet-shim` (this crate's test
//! binary, the same entry point as `kubelet-lite shim`). Each test uses its own root
//! directory, bounds every wait, and kills every process group it started.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use futures::StreamExt;
use kubelet::runtime::{
    ContainerExited, ContainerInfo, ContainerSpec, ContainerState, LogError, LogOptions, PodRef,
    Runtime, RuntimeConfig, SHIM_LOST_MESSAGE,
};
use nix::{
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(20);

fn shim() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubelet-shim"))
}

fn pod(uid: &str) -> PodRef {
    PodRef {
        namespace: "default".into(),
        name: format!("pod-{uid}"),
        uid: uid.into(),
    }
}

fn spec(name: &str, cmd: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn sh(name: &str, script: &str) -> ContainerSpec {
    spec(name, &["sh", "-c", script])
}

/// Kills the process groups of the containers a test started, however the test ends.
#[derive(Default)]
struct Reaper(Vec<u32>);

impl Reaper {
    fn track(&mut self, info: &ContainerInfo) {
        if let Some(pid) = info.pid {
            self.0.push(pid);
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

fn runtime(root: &Path) -> (Runtime, UnboundedReceiver<ContainerExited>) {
    Runtime::new(RuntimeConfig::new(root, shim())).unwrap()
}

async fn next_exit(rx: &mut UnboundedReceiver<ContainerExited>) -> ContainerExited {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a container exit within 20s")
        .expect("the runtime is alive")
}

fn exited(info: &ContainerInfo) -> (i32, Option<i32>, String, String) {
    match &info.state {
        ContainerState::Exited {
            exit_code,
            signal,
            reason,
            message,
            ..
        } => (*exit_code, *signal, reason.clone(), message.clone()),
        s => panic!("not exited: {s:?}"),
    }
}

async fn logs(rt: &Runtime, p: &PodRef, c: &str, opts: LogOptions) -> String {
    let stream = rt.logs(&p.namespace, &p.name, c, opts).await.unwrap();
    let chunks: Vec<_> = tokio::time::timeout(WAIT, stream.collect())
        .await
        .expect("the log stream ends within 20s");
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&c.unwrap());
    }
    String::from_utf8(out).unwrap()
}

/// Waits until the container's log contains `needle` (the container reached that point).
async fn wait_for_log(rt: &Runtime, p: &PodRef, c: &str, needle: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if logs(rt, p, c, LogOptions::default()).await.contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle:?} never logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            state == "Z" || state == "X"
        }
    }
}

async fn wait_gone(pid: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !gone(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pid {pid} still alive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Attempt 0's state file (pid, shimPid, ...).
fn state_of(root: &Path, uid: &str, container: &str) -> serde_json::Value {
    let path = root.join(format!("pods/{uid}/.runtime/{container}/0.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn runs_containers_logs_their_output_and_records_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    let (rt, mut exits) = runtime(root.path());
    let mut reaper = Reaper::default();
    let p = pod("u1");

    let mut failing = sh(
        "app",
        "echo out; echo err >&2; echo \"$GREETING from $(pwd)\"; exit 3",
    );
    failing.env = vec![("GREETING".into(), "hello".into())];
    let info = rt.start_container(&p, &failing, 0).await.unwrap();
    reaper.track(&info);
    assert!(info.pid.is_some());
    let ev = next_exit(&mut exits).await;
    assert_eq!(
        ev,
        ContainerExited {
            pod_uid: "u1".into(),
            container: "app".into(),
            attempt: 0
        }
    );
    let info = rt.container("u1", "app").unwrap();
    assert_eq!(exited(&info), (3, None, "Error".into(), String::new()));
    let out = logs(&rt, &p, "app", LogOptions::default()).await;
    let workdir = rt.container_dir("u1", "app");
    assert!(out.contains("out\n") && out.contains("err\n"), "{out}");
    assert!(
        out.contains(&format!("hello from {}\n", workdir.display())),
        "the pod's env and the default working directory: {out}"
    );
    // The file itself is CRI: `<ts> stdout F out`.
    let raw =
        std::fs::read_to_string(root.path().join("logs/default_pod-u1_u1/app/0.log")).unwrap();
    assert!(raw.lines().any(|l| l.ends_with(" stderr F err")), "{raw}");

    let info = rt
        .start_container(&p, &spec("ok", &["true"]), 0)
        .await
        .unwrap();
    reaper.track(&info);
    next_exit(&mut exits).await;
    assert_eq!(
        exited(&rt.container("u1", "ok").unwrap()),
        (0, None, "Completed".into(), String::new())
    );
    let (pods, _) = (rt.pods(), ());
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].0, p);
    assert_eq!(pods[0].1.len(), 2);
    assert_eq!(
        rt.pod_containers("default", "pod-u1").unwrap(),
        ["app", "ok"]
    );
    assert!(rt.pod_containers("default", "other").is_none());

    // `args` follow `command`, each one argument as given (no word splitting).
    let p = pod("u1-args");
    let argv = ContainerSpec {
        args: vec!["first arg".into(), "second".into()],
        ..sh("argv", r#"printf '[%s]' "$0" "$@"; echo"#)
    };
    let info = rt.start_container(&p, &argv, 0).await.unwrap();
    reaper.track(&info);
    next_exit(&mut exits).await;
    assert_eq!(
        exited(&rt.container("u1-args", "argv").unwrap()).0,
        0,
        "sh -c SCRIPT first-arg second"
    );
    assert_eq!(
        logs(&rt, &p, "argv", LogOptions::default()).await,
        "[first arg][second]\n"
    );
}

#[tokio::test]
async fn start_errors_read_like_upstream() {
    let root = tempfile::tempdir().unwrap();
    let (rt, _exits) = runtime(root.path());
    let p = pod("u2");
    let cases = [
        (
            spec("a", &["nosuch"]),
            r#"exec: "nosuch": executable file not found in $PATH"#,
        ),
        (
            spec("b", &["/no/such"]),
            r#"exec: "/no/such": stat /no/such: no such file or directory"#,
        ),
        (
            ContainerSpec {
                working_dir: Some("/nope".into()),
                ..spec("c", &["true"])
            },
            r#"chdir to cwd ("/nope") set in config.json failed: no such file or directory"#,
        ),
    ];
    for (s, message) in cases {
        let info = rt.start_container(&p, &s, 0).await.unwrap();
        assert_eq!(info.pid, None);
        assert_eq!(
            exited(&info),
            (128, None, "StartError".into(), message.to_string()),
            "{}",
            s.name
        );
        assert_eq!(rt.container("u2", &s.name), Some(info));
    }
    // PATH from the pod is the one searched.
    let mut s = spec("d", &["sh", "-c", "true"]);
    s.env = vec![("PATH".into(), "/nonexistent".into())];
    let info = rt.start_container(&p, &s, 0).await.unwrap();
    assert_eq!(
        exited(&info).3,
        r#"exec: "sh": executable file not found in $PATH"#
    );
}

#[tokio::test]
async fn stop_sends_term_then_kill_to_the_whole_group() {
    let root = tempfile::tempdir().unwrap();
    let (rt, mut exits) = runtime(root.path());
    let mut reaper = Reaper::default();
    let p = pod("u3");

    // Exits on SIGTERM: 143.
    let info = rt
        .start_container(&p, &spec("term", &["sleep", "300"]), 0)
        .await
        .unwrap();
    reaper.track(&info);
    assert!(matches!(info.state, ContainerState::Running { .. }));
    // The shim shrugs off the signals a terminal or a dying kubelet would send it.
    let shim_pid = state_of(root.path(), "u3", "term")["shimPid"]
        .as_u64()
        .unwrap() as i32;
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        kill(Pid::from_raw(shim_pid), sig).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !gone(shim_pid as u32),
        "the shim survives TERM, INT and HUP"
    );
    rt.stop_container("u3", "term", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        exited(&rt.container("u3", "term").unwrap()),
        (143, Some(15), "Error".into(), String::new())
    );
    next_exit(&mut exits).await;
    // Idempotent.
    rt.stop_container("u3", "term", Duration::from_secs(1))
        .await
        .unwrap();

    // Ignores SIGTERM: SIGKILL after the grace period, 137.
    let info = rt
        .start_container(
            &p,
            &sh("stubborn", "trap '' TERM; echo ready; sleep 300"),
            0,
        )
        .await
        .unwrap();
    reaper.track(&info);
    wait_for_log(&rt, &p, "stubborn", "ready").await;
    let started = std::time::Instant::now();
    rt.stop_container("u3", "stubborn", Duration::from_millis(500))
        .await
        .unwrap();
    // Killed once the grace is over: not before, and not long after (generous for a busy
    // machine).
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took <= Duration::from_millis(500 + 8000),
        "stopping a SIGTERM-ignoring container with 0.5 s of grace took {took:?}"
    );
    assert_eq!(
        exited(&rt.container("u3", "stubborn").unwrap()),
        (137, Some(9), "Error".into(), String::new())
    );

    // Every process of the group goes.
    let info = rt
        .start_container(&p, &sh("group", "sleep 300 & echo bg=$!; sleep 300"), 0)
        .await
        .unwrap();
    reaper.track(&info);
    wait_for_log(&rt, &p, "group", "bg=").await;
    let out = logs(&rt, &p, "group", LogOptions::default()).await;
    let bg: u32 = out.trim().strip_prefix("bg=").unwrap().parse().unwrap();
    let main = info.pid.unwrap();
    assert!(!gone(bg) && !gone(main));
    rt.stop_container("u3", "group", Duration::from_secs(10))
        .await
        .unwrap();
    wait_gone(main).await;
    // Reaped, not a zombie: the shim is the subreaper of the container's orphans.
    let deadline = tokio::time::Instant::now() + WAIT;
    while Path::new(&format!("/proc/{bg}")).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pid {bg} never reaped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_restarted_kubelet_adopts_running_containers() {
    let root = tempfile::tempdir().unwrap();
    let mut reaper = Reaper::default();
    let p = pod("u4");
    let go = root.path().join("go");
    let script = format!(
        "echo up; i=0; while [ ! -e {} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 7",
        go.display()
    );
    {
        let (first, _exits) = runtime(root.path());
        let info = first
            .start_container(&p, &sh("app", &script), 0)
            .await
            .unwrap();
        reaper.track(&info);
        let info = first
            .start_container(&p, &spec("orphan", &["sleep", "300"]), 0)
            .await
            .unwrap();
        reaper.track(&info);
        wait_for_log(&first, &p, "app", "up").await;
    }
    // The "restarted kubelet": a new runtime on the same root.
    let (second, mut exits) = runtime(root.path());
    let pods = second.pods();
    assert_eq!(pods.len(), 1);
    assert!(pods[0]
        .1
        .iter()
        .all(|c| matches!(c.state, ContainerState::Running { .. })));
    second.adopt_all();
    std::fs::write(&go, "").unwrap();
    let ev = next_exit(&mut exits).await;
    assert_eq!(ev.container, "app");
    assert_eq!(
        exited(&second.container("u4", "app").unwrap()),
        (7, None, "Error".into(), String::new())
    );

    // Its shim dies (kill -9) and then the container: nobody recorded the exit.
    let state = state_of(root.path(), "u4", "orphan");
    let shim_pid = state["shimPid"].as_u64().unwrap() as i32;
    let pid = state["pid"].as_u64().unwrap() as u32;
    kill(Pid::from_raw(shim_pid), Signal::SIGKILL).unwrap();
    wait_gone(shim_pid as u32).await;
    assert!(matches!(
        second.container("u4", "orphan").unwrap().state,
        ContainerState::Running { .. }
    ));
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let ev = next_exit(&mut exits).await;
    assert_eq!(ev.container, "orphan");
    let info = second.container("u4", "orphan").unwrap();
    assert_eq!(
        exited(&info),
        (137, None, "Error".into(), SHIM_LOST_MESSAGE.into())
    );
    // Recorded once: later calls agree on when it ended.
    assert_eq!(second.container("u4", "orphan").unwrap(), info);
}

#[tokio::test]
async fn logs_rotate_tail_follow_and_previous() {
    let root = tempfile::tempdir().unwrap();
    let (rt, mut exits) = Runtime::new(RuntimeConfig {
        log_max_size: 1000,
        log_max_files: 3,
        ..RuntimeConfig::new(root.path(), shim())
    })
    .unwrap();
    let mut reaper = Reaper::default();
    let p = pod("u5");

    // Rotation keeps at most 3 files; tailLines spans them.
    let chatty = sh(
        "chatty",
        "i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done",
    );
    let info = rt.start_container(&p, &chatty, 0).await.unwrap();
    reaper.track(&info);
    next_exit(&mut exits).await;
    let dir = root.path().join("logs/default_pod-u5_u5/chatty");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(files.len() <= 3 && files.len() >= 2, "{files:?}");
    let all = logs(&rt, &p, "chatty", LogOptions::default()).await;
    assert!(all.ends_with("line198\nline199\n"), "{all}");
    let tail = logs(
        &rt,
        &p,
        "chatty",
        LogOptions {
            tail_lines: Some(40),
            ..Default::default()
        },
    )
    .await;
    let want: String = (160..200).map(|i| format!("line{i}\n")).collect();
    assert_eq!(tail, want);
    let live_lines = std::fs::read_to_string(dir.join("0.log"))
        .unwrap()
        .lines()
        .count();
    assert!(live_lines < 40, "the tail needed a rotated file");

    // Follow streams lines as they come and ends when the container exits.
    let slow = sh("slow", "echo one; sleep 1; echo two; sleep 1; echo three");
    let info = rt.start_container(&p, &slow, 0).await.unwrap();
    reaper.track(&info);
    let followed = logs(
        &rt,
        &p,
        "slow",
        LogOptions {
            follow: true,
            timestamps: true,
            ..Default::default()
        },
    )
    .await;
    let lines: Vec<&str> = followed.lines().collect();
    assert_eq!(lines.len(), 3, "{followed}");
    for (line, word) in lines.iter().zip(["one", "two", "three"]) {
        let (ts, text) = line.split_once(' ').unwrap();
        assert_eq!(text, word);
        assert_eq!(ts.len(), "2026-12-07T09:15:01.123456789Z".len(), "{ts}");
    }
    next_exit(&mut exits).await;

    // previous = the attempt before; only two attempts are kept.
    assert!(matches!(
        rt.logs(
            "default",
            "pod-u5",
            "slow",
            LogOptions {
                previous: true,
                ..Default::default()
            }
        )
        .await,
        Err(LogError::NoPrevious { .. })
    ));
    for (attempt, word) in [(1, "second"), (2, "third")] {
        let info = rt
            .start_container(&p, &spec("slow", &["echo", word]), attempt)
            .await
            .unwrap();
        reaper.track(&info);
        next_exit(&mut exits).await;
    }
    let previous = LogOptions {
        previous: true,
        ..Default::default()
    };
    assert_eq!(logs(&rt, &p, "slow", previous).await, "second\n");
    assert_eq!(
        logs(&rt, &p, "slow", LogOptions::default()).await,
        "third\n"
    );
    let mut names: Vec<String> = std::fs::read_dir(root.path().join("logs/default_pod-u5_u5/slow"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["1.log", "2.log"]);
    assert_eq!(rt.container("u5", "slow").unwrap().attempt, 2);

    let err = rt
        .logs("default", "pod-u5", "nope", LogOptions::default())
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        r#"container "nope" is not valid for pod "pod-u5", choose one of: [chatty slow]"#
    );
    assert!(matches!(
        rt.logs("default", "nope", "slow", LogOptions::default())
            .await,
        Err(LogError::PodNotFound { .. })
    ));
}

#[tokio::test]
async fn remove_pod_kills_and_forgets() {
    let root = tempfile::tempdir().unwrap();
    let (rt, mut exits) = runtime(root.path());
    let mut reaper = Reaper::default();
    let p = pod("u6");
    let info = rt
        .start_container(&p, &spec("app", &["sleep", "300"]), 0)
        .await
        .unwrap();
    reaper.track(&info);
    // Refuses a second attempt while the first runs.
    assert!(rt
        .start_container(&p, &spec("app", &["sleep", "300"]), 1)
        .await
        .is_err());
    rt.remove_pod("u6").await.unwrap();
    wait_gone(info.pid.unwrap()).await;
    assert!(!root.path().join("pods/u6").exists());
    assert!(!root.path().join("logs/default_pod-u6_u6").exists());
    assert!(rt.pods().is_empty());
    assert!(rt.container("u6", "app").is_none());
    // Its exit is not reported.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(exits.try_recv().is_err());
    // Removing again is fine.
    rt.remove_pod("u6").await.unwrap();
}
