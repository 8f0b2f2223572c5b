//! Review (session 43) of a flake of the whole suite under load
//! (`review_s21_a_guest_that_clears_its_pdeathsig_dies_with_a_killed_run`:
//! "unifs: creating cgroup …/devices/unifs/run-PID-TAG/guest: No such file
//! or directory"): a `unifs run` in a PID namespace of its own (as
//! review_s21_runs_in_pid_namespaces… makes) sees no /proc/PID for another
//! run, and its sweep of dead runs took the groups of a run still starting
//! (no keeper yet to hold their lock) for a dead run's, and removed those
//! no process had joined yet.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, wait_bounded, KillOnDrop, TestRoot};
use crate::guest::review_s21_keeper::run_groups;
use crate::guest::review_s22_stall::tree;
use crate::review_s31_doubts::{stopped, within_60s};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run A is held (UNIFS_TEST_BEFORE_CLONE_STOP) with its groups made and
/// its overlay mounted, before its guest is cloned; run B, in a PID
/// namespace of its own, starts and ends meanwhile. A's groups must all
/// be there after B, and A must finish.
#[test]
fn s43_a_run_in_another_pid_namespace_leaves_a_starting_runs_groups_alone() {
    let test = "s43_a_run_in_another_pid_namespace_leaves_a_starting_runs_groups_alone";
    if !can_run(test) {
        return;
    }
    let (a, b) = (TestRoot::new(), TestRoot::new());
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("--store").arg(a.dir.path().join("store"));
    cmd.args(["run", "--root"]).arg(a.root());
    cmd.args(["--memory", "64M", "--", "/bin/sh", "-c", "echo A finished"])
        .env("UNIFS_TEST_BEFORE_CLONE_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let first = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = first.0.as_ref().unwrap().id();
    let mut held = None;
    assert!(
        within_60s(|| {
            held = tree(pid as i32).into_iter().find(|&p| stopped(p as u32));
            held.is_some()
        }),
        "run A was never held before its clone"
    );
    let before = run_groups(pid);
    assert!(!before.is_empty(), "run A made no groups");

    let mut cmd = Command::new("unshare");
    cmd.args(["-pf", "--mount-proc"])
        .arg(unifs_bin())
        .args(["run", "--root-mount", "bind", "--root"])
        .arg(b.root())
        .args(["--", "/bin/sh", "-c", "echo B finished"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let second = wait_bounded(
        KillOnDrop(Some(cmd.spawn().unwrap())),
        Duration::from_secs(60),
    );
    assert_eq!(second.status.code(), Some(0), "run B: {second:?}");

    let after = run_groups(pid);
    let gone: Vec<_> = before.iter().filter(|g| !after.contains(g)).collect();
    kill(Pid::from_raw(held.unwrap()), Signal::SIGCONT).unwrap();
    let first = wait_bounded(first, Duration::from_secs(60));
    assert!(gone.is_empty(), "run B removed run A's groups {gone:?}");
    assert_eq!(first.status.code(), Some(0), "run A: {first:?}");
    assert_eq!(String::from_utf8_lossy(&first.stdout), "A finished\n");
}
