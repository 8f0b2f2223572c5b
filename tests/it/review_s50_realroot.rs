//! Review (session 50) of unifs as a hosting operator uses it, with a real
//! Debian root (`debootstrap --variant=minbase bookworm`, three and two
//! copies): unify, `store verify`, named guests and `unifs run` with dpkg,
//! apt-get, useradd, chpasswd, ldconfig and update-alternatives in them.
//! What broke, reduced to synthetic guests (no debootstrap, no network).

use crate::guest::harness::{can_run, stderr, wait_bounded};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::stopped;
use crate::review_s38_halt::init_and_keeper;
use crate::review_s51_leftover::stop_held_behind_its_keeper;
use std::time::Duration;

/// `guest stop` kills init and tears the guest down, then lets go of its
/// lock; the guest's keeper (init's parent) reaps init and takes that lock
/// to stop the guest itself, finds it stopped, and ends. The stop returned
/// before the keeper had done so: a `guest start` right after it (a script's
/// `stop; start`, or `guest restart`, which does both) found the lock held
/// and said `unifs: guest NAME is locked by another `unifs guest` command
/// (pid N): waiting for it to finish (up to 70 s)`, of a command nobody ran
/// (seen in 4 of 5 `stop --signal KILL` then `start`, and 1 of 6 `restart
/// --signal KILL`, of a Debian guest). Here the keeper is held once it has
/// the lock (UNIFS_TEST_ENDED_STOP); the stop now waits for it to end
/// (up to 60 s here: UNIFS_TEST_KEEPER_END_WAIT_MAX).
#[test]
fn s50_a_stop_returns_once_the_guests_keeper_has_ended() {
    let test = "s50_a_stop_returns_once_the_guests_keeper_has_ended";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s50keeperend", SLEEP);
    let (start, _) = g.start_with("UNIFS_TEST_ENDED_STOP", "1");
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, keeper) = init_and_keeper(&g);
    let go_on = Continue(keeper as i32);

    let took_the_lock = || stopped(keeper);
    let reached = ("let the keeper take the guest's lock", &took_the_lock as _);
    stop_held_behind_its_keeper(&g, &["--signal", "KILL"], (keeper, go_on), reached);
}
