//! Review s51 (lockfix): the silent wait for a guest's keeper that holds
//! its lock, as a command's bound counts it and as the tests hold it.

use crate::guest::harness::{can_run, ok, wait_bounded, within_30s};
use crate::guest::review_s11_life::{Continue, Guest};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s47_lockrev::spawned;
use crate::review_s48_lock3::read;
use crate::review_s51_leftover::{ended_by_itself, EXIT_ON_GO};
use std::time::Duration;

/// A `start` behind a keeper that holds the guest's lock longer (20 s
/// here: UNIFS_TEST_ENDED_PAUSE_MS) than the silent wait for it (1 s:
/// UNIFS_TEST_KEEPER_END_WAIT_MAX), held where it first found the lock
/// taken (UNIFS_TEST_LOCK_TRIED_STOP) and let go on. Before, the hook
/// fired again once the silent wait ran out: the start stopped itself a
/// second time, with nobody to let it go on, and never ended. Now it is
/// held at its first look only, and starts the guest once the keeper is
/// done.
#[test]
fn s51_a_command_held_at_its_first_look_is_not_held_again_after_the_keeper_wait() {
    let test = "s51_a_command_held_at_its_first_look_is_not_held_again_after_the_keeper_wait";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s51heldonce", EXIT_ON_GO);
    let keeper = ended_by_itself(&g, "UNIFS_TEST_ENDED_PAUSE_MS", "20000");
    let lock = g.run(&g.name).join("lock");
    let held = format!("pid {keeper}\n");
    assert!(
        within_60s(|| read(&lock).contains(&held)),
        "the keeper {keeper} never took the guest's lock: {}",
        read(&lock)
    );

    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_KEEPER_END_WAIT_MAX", "1")
        .env("UNIFS_TEST_LOCK_TRIED_STOP", "1");
    let err = g.t.dir.path().join("start.err");
    let (start, pid) = spawned(start, &err);
    let go_on = Continue(pid as i32);
    assert!(
        within_30s(|| stopped(pid)),
        "the start never found the lock held by the keeper {keeper}: {}",
        read(&err)
    );
    drop(go_on);
    // Stopped again, it would never end: killed at the bound, failed.
    let o = wait_bounded(start, Duration::from_secs(90));
    assert!(
        o.status.success(),
        "the start never ended (stopped again after the keeper wait?): {}",
        read(&err)
    );
    ok(&g.unifs(&["stop", "--timeout", "0", "--signal", "KILL", &g.name]));
}
