//! Review s51 (leftover): what a full CI run left behind, and what a
//! guest's keeper, its init ended by itself, left in the way of the next
//! command.

use crate::guest::harness::{can_run, ok, stderr, wait_bounded, within_30s, KillOnDrop};
use crate::guest::review_s11_life::{Continue, Guest};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s38_halt::init_and_keeper;
use crate::review_s44_docaudit::names;
use crate::review_s47_lockrev::spawned;
use crate::review_s48_lock3::read;
use std::time::Duration;

/// Each full CI run left one or two /tmp/unifs-guest-* dirs holding an
/// empty `run/` (its mtime its birth: nothing was ever made in it; the
/// dir's own 10 s later, the test's end). The guest of
/// `started_in_own_tmpfs` (review_s46_rundir2) has a tmpfs mounted at its
/// run dir, inside the guest's temp dir, and the guest was dropped first:
/// stopped, then its temp dir removed, the tmpfs still mounted there
/// (`rmdir run`: EBUSY), then the tmpfs unmounted, the empty `run/` left.
/// Now the tmpfs goes between the stop and that removal.
#[test]
fn s51_a_guest_with_its_run_dir_in_a_tmpfs_of_its_own_leaves_no_temp_dir() {
    if !can_run("s51_a_guest_with_its_run_dir_in_a_tmpfs_of_its_own_leaves_no_temp_dir") {
        return;
    }
    let s = crate::review_s46_rundir2::started_in_own_tmpfs("s51owntmpfs", SLEEP_NAMED);
    let dir = s.g.t.dir.path().to_path_buf();
    drop(s);
    assert!(
        !dir.exists(),
        "{} left, holding {:?}",
        dir.display(),
        names(&dir)
    );
}

/// The init of `crate::guest::named::Guest`: it runs until stopped.
const SLEEP_NAMED: &str = "[\"/bin/sleep\", \"1000\"]";

/// An init that ends by itself (exit 0) once /tmp/go is there.
pub(crate) const EXIT_ON_GO: &str =
    "[\"/bin/sh\", \"-c\", \"while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 0\"]";

/// The guest `g` of [`EXIT_ON_GO`] started with the test hook `var` set
/// to `value` (its keeper has it too), and its init told to end: its
/// keeper's pid.
pub(crate) fn ended_by_itself(g: &Guest, var: &str, value: &str) -> u32 {
    let (start, _) = g.start_with(var, value);
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, keeper) = init_and_keeper(g);
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    keeper
}

/// A `stop` of a guest whose init ended by itself just before, its keeper
/// not yet at the guest's lock (held there: UNIFS_TEST_ENDED_UNLOCKED_STOP):
/// the stop takes the lock, tears the guest down, and lets go; the keeper
/// then takes the lock to stop the guest, finds it stopped, and ends.
/// Before, the stop waited for the keeper only when it had ended a live
/// init, and returned while this one was still to take the lock: a
/// `start` right after it could find the lock held by the keeper and say
/// `… is locked by another `unifs guest` command (pid N): waiting`. Now
/// the stop waits for it here too (up to 60 s here:
/// UNIFS_TEST_KEEPER_END_WAIT_MAX; the keeper held 2 s after the
/// teardown).
#[test]
fn s51_a_stop_after_init_ended_by_itself_returns_once_its_keeper_has_ended() {
    let test = "s51_a_stop_after_init_ended_by_itself_returns_once_its_keeper_has_ended";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s51endstop", EXIT_ON_GO);
    let keeper = ended_by_itself(&g, "UNIFS_TEST_ENDED_UNLOCKED_STOP", "1");
    let go_on = Continue(keeper as i32);
    assert!(
        within_60s(|| stopped(keeper)),
        "the keeper {keeper} never reached the guest's lock"
    );

    let record = g.run(&g.name).join("state.json");
    let torn_down = || !record.exists();
    stop_held_behind_its_keeper(
        &g,
        &[],
        (keeper, go_on),
        ("tore the guest down", &torn_down),
    );
}

/// A `start` right after a guest's init ended by itself, its keeper
/// holding the guest's lock to stop it (for 20 s here, once it has the
/// lock: UNIFS_TEST_ENDED_PAUSE_MS). Before, the start said at once
/// `unifs: guest NAME is being stopped by its keeper (pid N): its init
/// ended: waiting for it to finish` (`is locked by another `unifs guest`
/// command` before the keeper's word was in the lock file), of what is
/// over in a moment. Now a command waits for a keeper that holds the lock
/// without a word (up to 60 s here: UNIFS_TEST_KEEPER_END_WAIT_MAX; 5 s
/// as shipped), and starts the guest. The start is held where it found
/// the lock taken (UNIFS_TEST_LOCK_TRIED_STOP), and let go on while the
/// keeper still holds it: a start slow to get there would find it free.
#[test]
fn s51_a_start_right_after_init_ended_by_itself_waits_for_its_keeper_unsaid() {
    let test = "s51_a_start_right_after_init_ended_by_itself_waits_for_its_keeper_unsaid";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s51endstart", EXIT_ON_GO);
    let held = start_held_behind_its_keeper(&g, "60");
    // Else the start would find the lock free, which proves nothing.
    assert!(
        read(&held.lock).contains(&format!("pid {}\n", held.keeper)),
        "the keeper {} let go of the lock before the start was let go on",
        held.keeper
    );
    let (o, err) = held.go_on();
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("waiting"), "{err}");
    ok(&g.unifs(&["stop", "--timeout", "0", "--signal", "KILL", &g.name]));
}

/// A `start` of `g`, whose keeper holds its lock (a guest that ended by
/// itself, its keeper paused 20 s there), held where it found the lock
/// taken (UNIFS_TEST_LOCK_TRIED_STOP); `wait_max`: its silent wait for
/// the keeper, in seconds (UNIFS_TEST_KEEPER_END_WAIT_MAX).
pub(crate) fn start_held_behind_its_keeper(g: &Guest, wait_max: &str) -> HeldStart {
    let keeper = ended_by_itself(g, "UNIFS_TEST_ENDED_PAUSE_MS", "20000");
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
        .env("UNIFS_TEST_KEEPER_END_WAIT_MAX", wait_max)
        .env("UNIFS_TEST_LOCK_TRIED_STOP", "1");
    let err = g.t.dir.path().join("start.err");
    let (start, pid) = spawned(start, &err);
    let go_on = Continue(pid as i32);
    assert!(
        within_30s(|| stopped(pid)),
        "the start never found the lock held by the keeper {keeper}: {}",
        read(&err)
    );
    HeldStart {
        start,
        go_on,
        err,
        lock,
        keeper,
    }
}

/// A start [`start_held_behind_its_keeper`] holds.
pub(crate) struct HeldStart {
    start: KillOnDrop,
    go_on: Continue,
    err: std::path::PathBuf,
    pub(crate) lock: std::path::PathBuf,
    pub(crate) keeper: u32,
}

impl HeldStart {
    /// Lets the start go on; its end (within 90 s) and its stderr.
    pub(crate) fn go_on(self) -> (std::process::Output, String) {
        drop(self.go_on);
        let o = wait_bounded(self.start, Duration::from_secs(90));
        (o, read(&self.err))
    }
}

/// A `stop --timeout 0 EXTRA… g` while `g`'s keeper (`keeper.0`, let go
/// on when `keeper.1` drops) is held at the guest's lock, with a long
/// silent wait for it (60 s: UNIFS_TEST_KEEPER_END_WAIT_MAX). Once the
/// stop got as far as `reached` tells (`reached.0`: what it did), it must
/// not end while the keeper is held (looked at for 2 s); the keeper is let
/// go on, and the stop ends. A `start` right after then finds the lock
/// free: no word of waiting. The guest is stopped again at the end.
pub(crate) fn stop_held_behind_its_keeper(
    g: &Guest,
    extra: &[&str],
    keeper: (u32, Continue),
    reached: (&str, &dyn Fn() -> bool),
) {
    let (keeper, go_on) = keeper;
    let err = g.t.dir.path().join("stop.err");
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0"])
        .args(extra)
        .arg(&g.name);
    stop.env("UNIFS_TEST_KEEPER_END_WAIT_MAX", "60");
    let (mut stop, _) = spawned(stop, &err);
    assert!(
        within_60s(reached.1),
        "the stop never {}: {}",
        reached.0,
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
        "the stop ended ({ended_first:?}: {}) while the guest's keeper {keeper} was held at \
         its lock: a start right after it waits behind that",
        read(&err)
    );

    let o = g.unifs(&["start", &g.name]);
    ok(&o);
    assert!(!stderr(&o).contains("waiting"), "{}", stderr(&o));
    ok(&g.unifs(&["stop", "--timeout", "0", "--signal", "KILL", &g.name]));
}
