//! Session 48, cgrev: review of the removal of left-behind guest cgroups
//! (cgroupleft): `Cgroup::remove` now waits up to 5 s for a group's
//! processes, and `guest stop` has one deadline for all its waits.

use crate::guest::harness::{can_run, ok, stderr, wait_bounded, KillOnDrop};
use crate::guest::named::Guest;
use crate::review_s48_cgroupleft::{stop_at_listing, RmGroups};
use std::process::Command;
use std::time::{Duration, Instant};

/// A stop whose time is up (a 1 s lock wait, --timeout 0, 1 s after it)
/// when it removes the guest's groups, one of them held by a process that
/// does not end (here one the test moved there once the guest was gone,
/// while the groups' listing is held 1.5 s by
/// UNIFS_TEST_CGROUP_REMOVE_LISTED_PAUSE_MS): the removal's 5 s for
/// processes leaving were not drawn from the stop's one deadline, so the
/// stop ran 5 s past the moment the listing began, beyond the deadline
/// (STOP_TAIL kept 2 s for it: contrib's unit's TimeoutStopSec=90 is what
/// that deadline is for). Now the removal waits what is left of the time
/// (1 s at least, [`SETTLE`]), and the stop ends with the listing's pause.
#[test]
fn s48_a_stop_whose_time_is_up_does_not_wait_5_s_more_for_a_held_group() {
    let test = "s48_a_stop_whose_time_is_up_does_not_wait_5_s_more_for_a_held_group";
    if !can_run(test) {
        return;
    }
    let rm = RmGroups(Guest::new("cgrevlate", "[\"/bin/sleep\", \"1000\"]", true));
    let g = &rm.0;
    ok(&g.unifs(&["start", &g.name]));
    // Its time up by the removal: a 1 s lock wait, 1 s after --timeout 0.
    let late = [
        ("UNIFS_TEST_LOCK_WAIT_MAX", "1"),
        ("UNIFS_TEST_STOP_AFTER_MAX", "1"),
    ];
    let (stop, group) = stop_at_listing(g, "1500", &late);
    let seen = Instant::now();
    let mut held = KillOnDrop(Some(Command::new("sleep").arg("1000").spawn().unwrap()));
    let pid = held.0.as_ref().unwrap().id();
    let _ = std::fs::write(group.join("guest").join("cgroup.procs"), pid.to_string());
    let o = wait_bounded(stop, Duration::from_secs(60));
    let took = seen.elapsed();
    if let Some(mut c) = held.0.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let err = stderr(&o);
    // The process did keep a group (else the test saw nothing).
    if !err.contains(&format!("process {pid} (sleep) is still in it")) {
        eprintln!("{test}: the held process came after the removal ({err}); nothing seen");
        return;
    }
    // Before: 5 s from the listing, at least 3.5 s after `seen` (which
    // is within the 1.5 s pause). Now: the pause, then one round.
    assert!(
        took < Duration::from_millis(3500),
        "the stop removed the groups {:.1} s after the guest was gone, past its deadline: {err}",
        took.as_secs_f32()
    );
}
