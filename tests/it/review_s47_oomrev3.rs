//! Review (session 47) "oomrev3" of "oom3": the OOM watch's tally of a
//! guest's groups, and the reaper's word that its command exited.

use crate::guest::harness::{can_run, ok, stderr, stdout, wait_bounded};
use crate::guest::review_s11_life::SLEEP;
use crate::review_s43_forkfail::guest_in_16m;
use crate::review_s47_oom3::{exec_session_with, memory_leaf, oom_killed_in, RmdirOnDrop, FOREIGN};
use std::time::Duration;

/// Item 2, cgroup v1, whose groups a guest may rename (rename(2) within
/// their parent: `mv`): the watch keyed each group's count by its path
/// and inode, so a group with a kill, renamed while an `exec` ran, was
/// taken for one gone (its count kept) and one new (its count again):
/// the count rose by the group's kills with no kill at all. The exec's
/// command, then SIGKILLed by hand, was said "killed by the memory limit
/// (16 MiB; memory.oom_control oom_kill 2)" where the kernel's log cannot
/// tell (here the tests' UNIFS_TEST_KMSG_FOREIGN; as well where it can,
/// when it holds no other OOM record since the exec began: a count risen
/// that no record names is "cannot tell"). The group is kept by its
/// device and inode now, which a rename keeps.
#[test]
fn s47_a_group_with_a_kill_renamed_while_an_exec_runs_is_not_a_new_kill() {
    if !can_run("s47_a_group_with_a_kill_renamed_while_an_exec_runs_is_not_a_new_kill") {
        return;
    }
    let g = guest_in_16m("s47exmv", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let service = memory_leaf(&g).join("s47-service");
    let renamed = memory_leaf(&g).join("s47-service-renamed");
    std::fs::create_dir(&service).unwrap();
    // Removed at the end whatever happens (stop removes them too).
    let _rm = (RmdirOnDrop(service.clone()), RmdirOnDrop(renamed.clone()));
    oom_killed_in(&g, &service);
    // The next exec starts with the guest's count at 1; no kill after.
    let script = "while [ ! -e /tmp/never ]; do sleep 0.1; done";
    let (second, command, _) = exec_session_with(&g, script, &FOREIGN);
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::rename(&service, &renamed).unwrap();
    // Past a sample of its watch (every 0.5 s), well within its window
    // (3 s) of a rise.
    std::thread::sleep(Duration::from_millis(1000));
    let killed = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(command as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(killed, Ok(()));
    let o = wait_bounded(second, Duration::from_secs(60));
    let (out, err) = (stdout(&o), stderr(&o));
    let kills = std::fs::read_to_string(renamed.join("memory.oom_control")).unwrap_or_default();
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert!(kills.contains("oom_kill 1"), "{kills}");
    assert_eq!(o.status.code(), Some(137), "{out}{err}");
    assert!(!err.contains("memory limit"), "{err}");
}
