//! Review s37 (runsig): a signal `unifs run` passes on before its guest's
//! init takes it (the kernel drops those to a PID namespace's init) waits
//! until init takes it; tests/it/review_s37_sysinit.rs has `guest stop`'s.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, stderr, stdout, wait_bounded, within_30s, KillOnDrop};
use crate::review_s37_sysinit::late_trap;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether `pid` has a handler for `sig` (SigCgt in its /proc status).
pub(crate) fn catches(pid: u32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (sig - 1)) != 0)
}

/// A SIGTERM to `unifs run` right after it starts reached its init before
/// that set its trap, and the kernel dropped it: the run went on until a
/// second signal killed it (137). Now it waits for init to take it.
#[test]
fn s37_a_sigterm_right_after_run_starts_waits_for_init_to_take_it() {
    let test = "s37_a_sigterm_right_after_run_starts_waits_for_init_to_take_it";
    if !can_run(test) {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--stop-signal", "SIGTERM", "--", "/bin/sh", "-c"]);
    cmd.arg(late_trap("TERM"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    // Once `unifs run` catches it (before, it would end the run itself).
    assert!(within_30s(|| catches(pid, libc::SIGTERM)), "no handler");
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let ended = within_30s(|| matches!(child.0.as_mut().unwrap().try_wait(), Ok(Some(_))));
    if !ended {
        // Lost: the second signal ends the guest, and the asserts say so.
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let out = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "trapped\ncaught\n", "{}", stderr(&out));
}
