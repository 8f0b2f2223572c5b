//! Review (session 50) of unifs as a hosting operator uses it, with a real
//! Debian root (`debootstrap --variant=minbase bookworm`, three and two
//! copies): unify, `store verify`, named guests and `unifs run` with dpkg,
//! apt-get, useradd, chpasswd, ldconfig and update-alternatives in them.
//! What broke, reduced to synthetic guests (no debootstrap, no network).

use crate::guest::harness::{can_run, ok, stderr, wait_bounded};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s38_halt::init_and_keeper;
use crate::review_s47_lockrev::spawned;
use crate::review_s48_lock3::read;
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

    let err = g.t.dir.path().join("stop.err");
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0", "--signal", "KILL", &g.name]);
    // Its wait for the keeper made long: ended within the 2 s looked at
    // below, it did not wait.
    stop.env("UNIFS_TEST_KEEPER_END_WAIT_MAX", "60");
    let (mut stop, _) = spawned(stop, &err);
    assert!(
        within_60s(|| stopped(keeper)),
        "the keeper {keeper} never took the guest's lock: {}",
        read(&err)
    );
    let child = stop.0.as_mut().unwrap();
    let ended_first = (0..20).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        child.try_wait().unwrap()
    });
    drop(go_on);
    let o = wait_bounded(stop, Duration::from_secs(30));
    assert!(o.status.success(), "{}", read(&err));
    assert!(
        ended_first.is_none(),
        "the stop ended ({ended_first:?}: {}) while the guest's keeper {keeper} still held \
         its lock: a start right after it waits behind that",
        read(&err)
    );

    let o = g.unifs(&["start", &g.name]);
    ok(&o);
    assert!(!stderr(&o).contains("waiting"), "{}", stderr(&o));
    ok(&g.unifs(&["stop", "--timeout", "0", "--signal", "KILL", &g.name]));
}
