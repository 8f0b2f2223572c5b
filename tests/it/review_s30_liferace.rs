//! Review (session 30) of concurrent lifecycle commands on one named guest:
//! `exec`/`enter` racing a `stop`, and commands racing a `start`.

use crate::common::proc_stat;
use crate::guest::harness::{
    exec_sleep_session, is_mounted, ok, stderr, stdout, wait_bounded, within_30s,
};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::stopped;
use crate::review_s47_lockrev::spawned;
use crate::review_s48_lock3::read;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

/// Whether `pid` is exiting (PF_EXITING in its flags, proc(5)'s field 9).
fn exiting(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok()
        && proc_stat(pid)[6].parse::<u64>().unwrap() & 0x4 != 0
}

/// An `exec` or `enter` that a `stop` overtakes while it joins the guest
/// failed with the errno of the step it was at: `pidfd_open N: ESRCH`,
/// `setns into guest G: ESRCH`, `setns into the guest's cgroup namespace:
/// ESRCH`, or `fork for --init: ENOMEM: Out of memory` (a fork into the
/// dying PID namespace). Found with `stop` racing four `exec`s 25 times:
/// 16 of 100 failed so. The window is held open here: an `exec` session's
/// helper (outside the guest, the parent of its command) is stopped, so
/// the guest's init, killed, stays exiting until that helper reaps the
/// command, and every `exec` meanwhile is overtaken.
#[test]
fn s30_exec_overtaken_by_a_stop_says_the_guest_stopped() {
    if !crate::guest::harness::can_run("s30_exec_overtaken_by_a_stop_says_the_guest_stopped") {
        return;
    }
    let g = Guest::new("xstop", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.init_pid() as u32;
    let (session, command) = exec_sleep_session(g.command(), &g.name);
    let helper: i32 = proc_stat(command)[1].parse().unwrap();
    let _go_on = Continue(helper);
    kill(Pid::from_raw(helper), Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(init as i32), Signal::SIGKILL).unwrap();
    assert!(within_30s(|| exiting(init)), "init {init} is not exiting");
    for args in [
        vec!["exec", &g.name, "--", "/bin/true"],
        vec!["enter", &g.name],
    ] {
        let o = g.unifs(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?}: {err}");
        assert!(
            err.contains(&format!("guest {} stopped while the command", g.name))
                && err.contains(&format!("`unifs guest start {}`", g.name)),
            "{args:?} says what happened and what to do: {err}"
        );
    }
    drop(_go_on);
    drop(session);
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
}

/// `exec` while a `start` of the guest is at work (its root mounted, its
/// init not yet recorded: an operator's script that starts a guest and
/// runs a command in it as soon as it can) said `guest G runs without a
/// runtime record (its start was interrupted); \`unifs guest stop G\` ends
/// it`: no start was interrupted, and that advice would stop a guest
/// coming up. It waits for the start now. The start is held after its
/// mount (UNIFS_TEST_START_STOP) until the `exec` says it waits for it
/// (before, a 2 s pause held it: an `exec` slow to start came after).
#[test]
fn s30_exec_during_a_start_waits_for_it() {
    if !crate::guest::harness::can_run("s30_exec_during_a_start_waits_for_it") {
        return;
    }
    let g = Guest::new("xstart", SLEEP);
    let (start, root) = g.start_with("UNIFS_TEST_START_STOP", "1");
    let start_pid = start.0.as_ref().unwrap().id();
    let go_on = Continue(start_pid as i32);
    assert!(
        within_30s(|| stopped(start_pid)),
        "the start never got past its mount"
    );
    assert!(is_mounted(&root), "the start mounted no root");
    let err = g.t.dir.path().join("exec.err");
    let mut exec = g.command();
    exec.args(["exec", &g.name, "--", "/bin/echo", "in the guest"]);
    let (exec, _) = spawned(exec, &err);
    let waits = format!(
        "is being started by `unifs guest start` (pid {start_pid}): waiting for it to finish"
    );
    assert!(
        within_30s(|| read(&err).contains(&waits)),
        "the exec never said it waits for the start: {}",
        read(&err)
    );
    drop(go_on);
    let o = wait_bounded(exec, Duration::from_secs(60));
    assert!(
        o.status.success() && stdout(&o) == "in the guest\n",
        "exec during the start: {:?} {}",
        o.status,
        read(&err)
    );
    ok(&wait_bounded(start, Duration::from_secs(30)));
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
}
