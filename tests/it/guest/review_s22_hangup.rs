//! Review s22: a terminal's hang-up (its window closed, an ssh session
//! dropped) ends `guest exec --tty` and `unifs run` on it, as sshd ends a
//! session: the command's pty is closed, so its session gets the kernel's
//! hang-up, and the session exits 129.
//!
//! The user's terminal is a pty the test opens, made the controlling
//! terminal of the unifs process (its own session), and hung up by closing
//! its master. Every guest stops, and every process ends, on drop.

use super::harness::{
    can_run, spawn_on_a_terminal, stdout, wait_bounded, wait_for_output, TestRoot,
};
use super::review_s11_life::{gone, Guest, SLEEP};
use crate::common::unifs_bin;
use std::process::Command;
use std::time::{Duration, Instant};

/// A command that ignores SIGHUP and never reads its terminal: it says
/// `ready`, then writes /tmp/hup once its terminal is hung up (no longer a
/// terminal), and runs on.
const IGNORES_HUP: &str = "trap \"\" HUP; echo ready; while [ -t 0 ]; do sleep 0.1; done; \
                           echo hung-up > /tmp/hup; while :; do sleep 1; done";

/// The children of `pid`.
fn children(pid: u32) -> Vec<i64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .collect()
}

/// `guest exec --tty` of a command that ignores SIGHUP stayed forever after
/// its terminal hung up: it passed the one SIGHUP on (ignored), took the
/// terminal's end for an end of input (a ^D to the command, which does not
/// read) and kept polling the dead terminal, ten times a second, until the
/// command ended or the guest stopped; the command kept a live terminal.
/// Now the hang-up closes the command's pty (its session gets the kernel's
/// hang-up), and `exec` exits 129 at once, leaving no relay behind.
#[test]
fn review_s22_a_terminal_hang_up_ends_exec_tty() {
    let test = "review_s22_a_terminal_hang_up_ends_exec_tty";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("hup", SLEEP);
    super::harness::ok(&g.unifs(&["start", &g.name]));
    let mut cmd = g.command();
    cmd.args(["exec", "--tty", &g.name, "--", "/bin/sh", "-c", IGNORES_HUP]);
    let (master, exec) = spawn_on_a_terminal(cmd);
    wait_for_output(&master, "ready");
    // The relay `exec` forks to reach the guest's PID namespace.
    let relays = children(exec.0.as_ref().unwrap().id());
    assert_eq!(relays.len(), 1, "{relays:?}");

    // The terminal hangs up.
    drop(master);
    let hung_up = Instant::now();
    let out = wait_bounded(exec, Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(129), "{out:?}");
    assert!(
        hung_up.elapsed() < Duration::from_secs(10),
        "exec took {:?} to end",
        hung_up.elapsed()
    );
    assert!(gone(relays[0]), "the relay {} outlived exec", relays[0]);
    // The command's own terminal was hung up too (it ignores SIGHUP, and
    // is left to the guest, as sshd leaves it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = g.unifs(&["exec", &g.name, "--", "/bin/cat", "/tmp/hup"]);
        if stdout(&o) == "hung-up\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the command's terminal was never hung up: {o:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `unifs run` on a terminal stayed forever, as `exec --tty` did, after
/// the terminal hung up while the guest ignored SIGHUP. Now it ends the
/// guest and exits 129.
#[test]
fn review_s22_a_terminal_hang_up_ends_run() {
    let test = "review_s22_a_terminal_hang_up_ends_run";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--", "/bin/sh", "-c", IGNORES_HUP]);
    let (master, run) = spawn_on_a_terminal(cmd);
    wait_for_output(&master, "ready");

    drop(master);
    let out = wait_bounded(run, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(129), "{out:?}");
}

/// `guest enter` with a shell ended on a hang-up before (the shell ends on
/// SIGHUP) and must still: 129, at once, no relay left.
#[test]
fn review_s22_a_terminal_hang_up_still_ends_enter() {
    let test = "review_s22_a_terminal_hang_up_still_ends_enter";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("hupenter", SLEEP);
    super::harness::ok(&g.unifs(&["start", &g.name]));
    // A shell that missed the hang-up is killed after HANG_UP_WAIT (2 s):
    // only a bound under that tells it apart (enter ends in ~0.1 s). Up to
    // three tries: a loaded machine may slow one, a missed hang-up all.
    let mut took = Vec::new();
    for _ in 0..3 {
        let mut cmd = g.command();
        cmd.args(["enter", &g.name]);
        let (master, enter) = spawn_on_a_terminal(cmd);
        nix::unistd::write(&master, b"echo sh-$((6*7))\n").unwrap();
        wait_for_output(&master, "sh-42");
        let relays = children(enter.0.as_ref().unwrap().id());
        assert_eq!(relays.len(), 1, "{relays:?}");

        drop(master);
        let hung_up = Instant::now();
        let out = wait_bounded(enter, Duration::from_secs(30));
        took.push(hung_up.elapsed());
        assert_eq!(out.status.code(), Some(129), "{out:?}");
        assert!(gone(relays[0]), "the relay {} outlived enter", relays[0]);
        if took[took.len() - 1] < Duration::from_secs(2) {
            return;
        }
    }
    panic!("enter took 2 s or more to end each time: {took:?}");
}
