//! Review s38 (smalls): `unifs run`'s signal watcher wakes on the signal
//! (no poll while idle); chattr's retry on a directory that a break races;
//! the log line of a break under an open reader; `unifs demo`'s "try:" lines.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, stderr, wait_bounded, wait_for_descendant, KillOnDrop};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The voluntary context switches of all of `pid`'s threads so far.
fn context_switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// `unifs run`'s watcher for a second signal (and for a held one's init)
/// woke every 20 ms to look, so a held signal reached init up to 20 ms
/// late and an idle run woke 50 times a second. It now sleeps until a
/// signal comes; a signal still ends the run (init takes it).
#[test]
fn s38_an_idle_run_does_not_wake_to_poll_for_signals() {
    let test = "s38_an_idle_run_does_not_wake_to_poll_for_signals";
    if !can_run(test) {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args([
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    wait_for_descendant(pid, "sleep");
    // Settled: the start's own waits are over.
    std::thread::sleep(Duration::from_millis(300));
    let before = context_switches(pid);
    std::thread::sleep(Duration::from_secs(2));
    let woke = context_switches(pid) - before;
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = wait_bounded(child, Duration::from_secs(30));
    // Polling every 20 ms is ~100 wakes in 2 s; a loaded machine may
    // stretch the pauses, never to under 10.
    assert!(woke < 10, "{woke} wake-ups in 2 s of an idle run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
