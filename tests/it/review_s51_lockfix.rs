//! Review s51 (lockfix): the silent wait for a guest's keeper that holds
//! its lock, as a command's bound counts it and as the tests hold it.

use crate::guest::harness::{can_run, ok};
use crate::guest::review_s11_life::Guest;
use crate::review_s51_leftover::{start_held_behind_its_keeper, EXIT_ON_GO};

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
    let held = start_held_behind_its_keeper(&g, "1");
    // Stopped again, it would never end: killed at the bound, failed.
    let (o, err) = held.go_on();
    assert!(
        o.status.success(),
        "the start never ended (stopped again after the keeper wait?): {err}"
    );
    ok(&g.unifs(&["stop", "--timeout", "0", "--signal", "KILL", &g.name]));
}
