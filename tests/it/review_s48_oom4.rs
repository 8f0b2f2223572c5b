//! Review (session 48) "oom4": a reaper's word of its command's end, and
//! a PID 1's own exit 137.

use crate::guest::harness::{
    alive, can_run, ok, parent_of, stderr, stderr_but_unshielded_warning, stdout, wait_bounded,
    wait_for_descendant, within_30s, KillOnDrop, TestRoot,
};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s43_forkfail::ALLOC_64M;
use crate::review_s47_oom3::{exec_session_with, FOREIGN};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The reaper waits here (up to a minute) once it said its command exited,
/// for the test to kill it: a pause, as `run --init`'s reaper is the
/// guest's PID 1, which its own SIGSTOP does not stop.
pub(crate) const PAUSED: [(&str, &str); 1] = [("UNIFS_TEST_REAPER_EXITED_PAUSE_MS", "60000")];

/// A command that exits 3 on SIGUSR1 (the test's go).
pub(crate) const EXITS_3_ON_USR1: &str = "trap 'exit 3' USR1; while :; do sleep 0.2; done";

fn send(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

/// Once `command` (a child of `reaper`) got its go: waits until it is
/// reaped and `reaper` sleeps in the hook's pause after its word.
pub(crate) fn wait_for_reaper_paused(reaper: u32, command: u32) {
    send(command, Signal::SIGUSR1);
    let paused = || {
        let wchan = std::fs::read_to_string(format!("/proc/{reaper}/wchan")).unwrap_or_default();
        !alive(command.into()) && wchan.contains("nanosleep")
    };
    assert!(within_30s(paused), "reaper {reaper} never paused");
}

/// `unifs run --init OPTS -- sh -c script` with the reaper's pause, in the
/// background once its command runs: the run, its root, the command's
/// and the reaper's PIDs.
fn run_init_session(opts: &[&str], script: &str) -> (KillOnDrop, TestRoot, u32, u32) {
    let t = TestRoot::new();
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root()).arg("--init");
    run.args(opts).args(["--", "/bin/sh", "-c", script]);
    run.envs(PAUSED);
    run.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let session = KillOnDrop(Some(run.spawn().unwrap()));
    let command = wait_for_descendant(session.0.as_ref().unwrap().id(), "sh");
    let reaper = parent_of(command.into());
    // Its trap set (seen failing 2 in 6 under load without: the USR1 came
    // first and killed it, exit 138).
    let trapped = || crate::review_s37_runsig::catches(command, libc::SIGUSR1);
    assert!(within_30s(trapped), "the command never set its trap");
    (session, t, command, reaper)
}

fn finish(session: KillOnDrop) -> Output {
    wait_bounded(session, Duration::from_secs(60))
}

/// `session` waited for: checks that it exited 3 (its command's code) and
/// said `said` of its reaper's kill; what it said.
fn exits_3_saying(session: KillOnDrop, said: &str) -> String {
    let o = finish(session);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains(said), "{err}");
    err
}

/// `guest exec`'s `helper` (the reaper of `command`, a
/// [`EXITS_3_ON_USR1`] of `session`) SIGKILLed once the command got its go
/// and the helper paused after its word, then `g` stopped: checks that
/// exec exited 3 and said the command's 3 and the helper's SIGKILL; what
/// exec said.
pub(crate) fn exec_whose_helper_is_killed_after_exit_3(
    g: &Guest,
    session: KillOnDrop,
    command: u32,
    helper: u32,
) -> String {
    wait_for_reaper_paused(helper, command);
    send(helper, Signal::SIGKILL);
    let o = finish(session);
    let err = stderr(&o);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let said = format!(
        "the command in guest {} exited 3; its reaper was then killed by SIGKILL",
        g.name
    );
    assert!(err.contains(&said), "{err}");
    err
}

/// Item 1: `run --init`'s reaper (the guest's PID 1) SIGKILLed after its
/// command exited 3 and it said so: run exited 137 and said nothing (the
/// word "exited" took the reaper's kill for its command's own code). Now
/// the command's 3, and the reaper's kill said.
#[test]
fn s48_a_run_init_whose_reaper_is_killed_after_its_command_exited_says_both() {
    if !can_run("s48_a_run_init_whose_reaper_is_killed_after_its_command_exited_says_both") {
        return;
    }
    let (session, _t, command, reaper) = run_init_session(&[], EXITS_3_ON_USR1);
    wait_for_reaper_paused(reaper, command);
    send(reaper, Signal::SIGKILL);
    let said = "the guest's command exited 3; its reaper was then killed by SIGKILL";
    exits_3_saying(session, said);
}

/// Item 1, the OOM killer's pick: the reaper (its `oom_score_adj` raised
/// from the host) killed by the memory limit after its command exited 3,
/// while a child the command left allocates: run said nothing and exited
/// 137; now 3, and the memory limit's kill of the reaper said.
#[test]
fn s48_a_run_init_whose_reaper_the_oom_killer_picks_after_its_command_exited_says_so() {
    if !can_run("s48_a_run_init_whose_reaper_the_oom_killer_picks_after_its_command_exited_says_so")
    {
        return;
    }
    let script = format!(
        "(echo 0 > /proc/self/oom_score_adj; while kill -0 $$ 2>/dev/null; do sleep 0.1; done; {ALLOC_64M}) & \
         {EXITS_3_ON_USR1}"
    );
    let (session, _t, command, reaper) = run_init_session(&["--memory", "16M"], &script);
    std::fs::write(format!("/proc/{reaper}/oom_score_adj"), "1000").unwrap();
    send(command, Signal::SIGUSR1);
    let said = "the guest's command exited 3; its reaper was then killed by the memory limit";
    exits_3_saying(session, said);
}

/// Item 1 through `guest exec`, whose helper reaps the command: the helper
/// SIGKILLed after its command exited 3: exec exited 137, nothing said;
/// now 3, and the helper's kill said.
#[test]
fn s48_an_exec_whose_helper_is_killed_after_its_command_exited_says_both() {
    if !can_run("s48_an_exec_whose_helper_is_killed_after_its_command_exited_says_both") {
        return;
    }
    let g = Guest::new("s48exhk", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let (session, command, helper) = exec_session_with(&g, EXITS_3_ON_USR1, &PAUSED);
    exec_whose_helper_is_killed_after_exit_3(&g, session, command, helper);
}

/// Item 4: `unifs run` without --init, its command the guest's PID 1,
/// exits 137 by itself just after its child's OOM kill, where the kernel's
/// log cannot tell: the count rose in the window and the 137 was taken for
/// a SIGKILL ("the guest's command was killed by the memory limit"). The
/// wait status says it exited: no kill.
#[test]
fn s48_a_run_whose_pid_1_exits_137_itself_where_the_log_cannot_tell_says_no_oom() {
    if !can_run("s48_a_run_whose_pid_1_exits_137_itself_where_the_log_cannot_tell_says_no_oom") {
        return;
    }
    let t = TestRoot::new();
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run")
        .arg("--root")
        .arg(t.root())
        .args(["--memory", "16M"]);
    let script = format!("({ALLOC_64M}); echo sub $?; exit 137");
    run.args(["--", "/bin/sh", "-c", &script]).envs(FOREIGN);
    run.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let o = finish(KillOnDrop(Some(run.spawn().unwrap())));
    let (out, err) = (stdout(&o), stderr_but_unshielded_warning(&o));
    assert_eq!(o.status.code(), Some(137), "{out}{err}");
    assert_eq!(out, "sub 137\n", "{err}");
    assert!(!err.contains("memory limit"), "{err}");
}
