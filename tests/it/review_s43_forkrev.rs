//! Review (session 43) of "forkfail" (95956f3): when a guest's end by
//! SIGKILL is called the OOM killer's. The count of the memory groups'
//! OOM kills "rose" since the guest (or `unifs run`'s command) started:
//! an OOM kill of one of its processes long before, then a `kill -9` of
//! its init by the operator, was called "killed by the memory limit".

use crate::guest::harness::{can_run, ok, stderr, stderr_but_unshielded_warning, stdout, TestRoot};
use crate::guest::review_s11_life::Guest;
use crate::review_s43_forkfail::{guest_in_16m, status_once_ended, ALLOC_64M};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

/// Longer than the window before an end in which a rise of the count is
/// taken for the OOM killer's (a few seconds): the earlier kill is old.
const LATER: Duration = Duration::from_secs(6);

/// A guest one of whose processes (a `guest exec`'s) the OOM killer
/// ended, and whose init the operator killed with SIGKILL later: its
/// exit was said "killed by the memory limit (16 MiB;
/// memory.oom_control oom_kill 1)", as the count had risen since its
/// start. It is a plain SIGKILL.
#[test]
fn s43_a_guest_killed_by_hand_after_an_earlier_oom_kill_is_not_said_oom_killed() {
    let test = "s43_a_guest_killed_by_hand_after_an_earlier_oom_kill_is_not_said_oom_killed";
    if !can_run(test) {
        return;
    }
    let g = guest_in_16m("s43oomlate", crate::guest::review_s11_life::SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", ALLOC_64M]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let status = stdout(&g.unifs(&["status", &g.name]));
    assert!(
        status.contains("oom:     1 of its processes killed by the memory limit"),
        "{status}"
    );
    std::thread::sleep(LATER);
    kill_init_and_see_a_plain_sigkill(&g);
}

/// Kills the init of `g` with SIGKILL, and asserts its end is recorded as
/// a plain SIGKILL, not the memory limit's.
pub(crate) fn kill_init_and_see_a_plain_sigkill(g: &Guest) {
    kill(Pid::from_raw(g.init_pid() as i32), Signal::SIGKILL).unwrap();
    let status = status_once_ended(g);
    assert!(
        status.contains("exit:    code=killed, signal=KILL"),
        "{status}"
    );
    assert!(!status.contains("memory limit"), "{status}");
}

/// `unifs run --init` whose command's subshell the OOM killer ended, and
/// which then killed itself with SIGKILL: 137, with the warning that the
/// memory limit killed the command. It did not.
#[test]
fn s43_a_run_whose_command_is_killed_by_hand_after_an_earlier_oom_kill_says_no_oom() {
    if !can_run("s43_a_run_whose_command_is_killed_by_hand_after_an_earlier_oom_kill_says_no_oom") {
        return;
    }
    let t = TestRoot::new();
    let script = format!(
        "({ALLOC_64M}); echo sub $?; sleep {}; kill -9 $$",
        LATER.as_secs()
    );
    let o = t.sh(&["--memory", "16M", "--init"], &script);
    let err = stderr_but_unshielded_warning(&o);
    assert_eq!(o.status.code(), Some(137), "{err}");
    assert_eq!(stdout(&o), "sub 137\n", "{err}");
    assert!(!err.contains("memory limit"), "{err}");
}
