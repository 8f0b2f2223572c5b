//! Review (session 44) "oomexec": OOM kills as the user sees them beyond a
//! guest's init. `guest exec` and `guest enter` whose command the OOM
//! killer of the guest's memory limit ended exited 137 and said nothing.
//! And a SIGKILL from anyone else within a few seconds of another
//! process's OOM kill was taken for the OOM killer's (the group's count
//! rose): the kernel's log names the victim, and is asked now.

use crate::guest::harness::{
    can_run, exec_sleep_session, ok, run_with_input, stderr, stderr_but_unshielded_warning, stdout,
    wait_bounded, wait_for_descendant, within_30s, KillOnDrop,
};
use crate::guest::review_s11_life::SLEEP;
use crate::review_s43_forkfail::{guest_in_16m, ALLOC_64M};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The kill as unifs says it, with the limit and the kernel's count.
const BY_THE_LIMIT: &str = "killed by the memory limit (16 MiB; memory.oom_control oom_kill ";

/// `guest exec` whose command the OOM killer ended: 137, and now why.
#[test]
fn s44_an_exec_whose_command_the_oom_killer_ended_says_so() {
    if !can_run("s44_an_exec_whose_command_the_oom_killer_ended_says_so") {
        return;
    }
    let g = guest_in_16m("s44oomexec", SLEEP);
    exec_and_see_its_oom_kill_said(&g, &["/bin/sh", "-c", ALLOC_64M]);
}

/// Starts `g`, execs `command` there, which its memory limit's OOM killer
/// ends: 137, and said so; stops `g`.
pub(crate) fn exec_and_see_its_oom_kill_said(
    g: &crate::guest::review_s11_life::Guest,
    command: &[&str],
) {
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&[&["exec", &g.name, "--"], command].concat());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{err}");
    let said = format!("the command in guest {} was {BY_THE_LIMIT}1)", g.name);
    assert!(err.contains(&said), "{err}");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// `guest enter` whose shell the OOM killer ended (its input a pipe): 137,
/// and now why.
#[test]
fn s44_an_enter_whose_shell_the_oom_killer_ended_says_so() {
    if !can_run("s44_an_enter_whose_shell_the_oom_killer_ended_says_so") {
        return;
    }
    let g = guest_in_16m("s44oomenter", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let mut enter = g.command();
    enter.args(["enter", &g.name]);
    let script = format!("{ALLOC_64M}\n");
    let o = run_with_input(enter, script.as_bytes(), Duration::from_secs(30));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{err}");
    let said = format!("the shell in guest {} was {BY_THE_LIMIT}1)", g.name);
    assert!(err.contains(&said), "{err}");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// An exec'd worker the OOM killer ended, then at once the operator's
/// `kill -9` of init: within the window in which a rise of the count was
/// taken for the end's cause, init was recorded "killed by the memory
/// limit". The kernel named the worker, not init: a plain SIGKILL.
#[test]
fn s44_init_killed_by_hand_right_after_a_workers_oom_kill_is_a_sigkill() {
    if !can_run("s44_init_killed_by_hand_right_after_a_workers_oom_kill_is_a_sigkill") {
        return;
    }
    let g = guest_in_16m("s44oomhand", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", ALLOC_64M]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{err}");
    assert!(
        err.contains(BY_THE_LIMIT),
        "the worker's kill is the OOM killer's: {err}"
    );
    crate::review_s43_forkrev::kill_init_and_see_a_plain_sigkill(&g);
}

/// Guard: one `guest exec`'s command killed by hand while another's was
/// ended by the OOM killer a moment before. By the group's count alone
/// (the kernel's log not read) it was said "killed by the memory limit".
#[test]
fn s44_an_exec_killed_by_hand_right_after_another_ones_oom_kill_says_no_oom() {
    if !can_run("s44_an_exec_killed_by_hand_right_after_another_ones_oom_kill_says_no_oom") {
        return;
    }
    let g = guest_in_16m("s44oomother", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let (session, sleeper) = exec_sleep_session(g.command(), &g.name);
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", ALLOC_64M]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{err}");
    assert!(err.contains(BY_THE_LIMIT), "{err}");
    kill(Pid::from_raw(sleeper as i32), Signal::SIGKILL).unwrap();
    let o = wait_bounded(session, Duration::from_secs(30));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{err}");
    assert!(!err.contains("memory limit"), "{err}");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// `unifs run` (no --init) whose command's subshell the OOM killer ended,
/// its command (the guest's init) killed by hand right after: "WARN the
/// guest's command was killed by the memory limit". It was not.
#[test]
fn s44_a_run_killed_by_hand_right_after_its_subshells_oom_kill_says_no_oom() {
    if !can_run("s44_a_run_killed_by_hand_right_after_its_subshells_oom_kill_says_no_oom") {
        return;
    }
    kill_a_run_by_hand_right_after_its_subshells_oom_kill(&[], |_| {});
}

/// `unifs run` with `options` whose command's subshell the OOM killer
/// ends, once `before_oom` (given the run's PID) has returned; then its
/// command is killed by hand: 137, and no OOM kill said.
pub(crate) fn kill_a_run_by_hand_right_after_its_subshells_oom_kill(
    options: &[&str],
    before_oom: impl FnOnce(u32),
) {
    kill_a_run_by_hand_after_its_subshells_oom_kill(options, &[], before_oom, || {});
}

/// [`kill_a_run_by_hand_right_after_its_subshells_oom_kill`], `unifs run`
/// with `env` too, and `after_oom` run before the command's kill.
pub(crate) fn kill_a_run_by_hand_after_its_subshells_oom_kill(
    options: &[&str],
    env: &[(&str, &str)],
    before_oom: impl FnOnce(u32),
    after_oom: impl FnOnce(),
) {
    let t = crate::guest::harness::TestRoot::new();
    let (go, marker) = (t.root().join("tmp/go"), t.root().join("tmp/sub"));
    let script = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; ({ALLOC_64M}); echo $? > /tmp/sub; \
         exec sleep 1000"
    );
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root()).args(options);
    run.args(["--memory", "16M", "--", "/bin/sh", "-c", &script]);
    run.envs(env.iter().copied());
    run.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let session = KillOnDrop(Some(run.spawn().unwrap()));
    let run_pid = session.0.as_ref().unwrap().id();
    wait_for_descendant(run_pid, "sh");
    before_oom(run_pid);
    std::fs::write(&go, "").unwrap();
    assert!(within_30s(|| marker.exists()));
    let init = wait_for_descendant(run_pid, "sleep");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "137\n");
    after_oom();
    kill_by_hand_and_see_no_oom_said(init, session);
}

/// SIGKILLs `command` (a `unifs run`'s, `session`) by hand: the run ends
/// 137, no OOM kill said.
pub(crate) fn kill_by_hand_and_see_no_oom_said(command: u32, session: KillOnDrop) {
    kill(Pid::from_raw(command as i32), Signal::SIGKILL).unwrap();
    let o = wait_bounded(session, Duration::from_secs(30));
    let err = stderr_but_unshielded_warning(&o);
    assert_eq!(o.status.code(), Some(137), "{err}{}", stdout(&o));
    assert!(!err.contains("memory limit"), "{err}");
}
