//! Session 49, stopleft: what `guest stop` still left after session 48's
//! one deadline: its worst case past contrib's unit's TimeoutStopSec=90,
//! the stop of a guest without a record keeping bounds of its own, the
//! words of a stop behind a stopped holder of the lock, and a `guest
//! exec`'s command the stop kills before the guest's init ends.

use crate::guest::harness::{can_run, ok, run_bounded, stderr, wait_bounded};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::within_60s;
use crate::review_s48_lock3::{read, start_held_unsaid};
use crate::review_s48_lockrev3::{daemon_pids, left_of, stop_late};
use std::time::{Duration, Instant};

/// A stop whose every wait on what it made end took all it may (here made
/// so: UNIFS_TEST_SETTLE_FULL, each then finding it ended) ended past its
/// deadline: such a wait drew from the whole time, the 5 s kept at its end
/// included, and took 1 s at least however late ([`SETTLE`]), so the
/// ones after the time was up added a second each: 1 s for the lock
/// (UNIFS_TEST_LOCK_WAIT_MAX), --timeout 0, 8 s after it
/// (UNIFS_TEST_STOP_AFTER_MAX) made 9 s, and the stop took 11 (the
/// killed 5 s, the daemon's end 3.9 s up to the deadline, then 1 s for
/// its leaf and 1 s for the groups); with the default 10 s and 45 s, 85 s
/// made up to 92 s, past TimeoutStopSec=90. Now the second each is kept
/// at the end of the time (8 waits at most, 8 s), and the waits before
/// draw from the time before it: the stop ends by its deadline.
#[test]
fn s49_a_stop_whose_waits_each_take_their_bound_ends_by_its_deadline() {
    let test = "s49_a_stop_whose_waits_each_take_their_bound_ends_by_its_deadline";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s49late", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let began = Instant::now();
    let (daemon, o) = stop_late(&g, "8", &[("UNIFS_TEST_SETTLE_FULL", "1")]);
    let took = began.elapsed();
    let err = stderr(&o);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(left_of(&g, &daemon), Vec::<String>::new(), "{err}");
    // Its deadline 9 s after it began; before, 11 s at least (its waits'
    // sleeps alone).
    assert!(
        took < Duration::from_millis(9500),
        "the stop ended {:.1} s after it began, past its deadline (9 s): {err}",
        took.as_secs_f32()
    );
}

/// The stop of a guest that runs without a record (moved away here, as a
/// `start` killed before it wrote it leaves it) kept bounds of its own:
/// 5 s for what it killed, 30 s for `unifs umount` of the root, 5 s and
/// 5 s for the daemon's end, 5 s + 2 s for its leaf, 5 s for the groups,
/// whatever was left of its time. Its unmount hung (UNIFS_TEST_UMOUNT_PAUSE)
/// 30 s, past its deadline (1 s for the lock, --timeout 0, 12 s after):
/// the test's 25 s ended first. Now it draws from the stop's one deadline
/// as a recorded guest's stop does: the unmount is cut when the time is
/// up, said, and the root unmounted directly; nothing is left.
#[test]
fn s49_the_stop_of_an_unrecorded_guest_draws_from_the_stops_one_deadline() {
    let test = "s49_the_stop_of_an_unrecorded_guest_draws_from_the_stops_one_deadline";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s49unrec", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let run = g.run(&g.name);
    let daemon = daemon_pids(&g);
    assert!(
        !daemon.is_empty(),
        "no overlay daemon in the guest's groups"
    );
    let aside = g.t.dir.path().join("state.json.aside");
    std::fs::rename(run.join("state.json"), &aside).unwrap();
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0", "--signal", "KILL", &g.name])
        .env("UNIFS_TEST_UMOUNT_PAUSE", "40000")
        .env("UNIFS_TEST_LOCK_WAIT_MAX", "1")
        .env("UNIFS_TEST_STOP_AFTER_MAX", "12");
    let o = run_bounded(stop, Duration::from_secs(25));
    let err = stderr(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(
        err.contains("did not finish within") && err.contains("unmounting it directly"),
        "{err}"
    );
    assert_eq!(left_of(&g, &daemon), Vec::<String>::new(), "{err}");
}

/// A `stop` behind a holder of the guest's lock that has not written its
/// word yet and is stopped (SIGSTOP, a debugger: here the start stopped
/// by UNIFS_TEST_LOCKED_UNSAID_STOP in that moment) waited for it as for
/// a start, then said `guest … is starting (a `unifs guest start` holds
/// …) and was not started within 1 s; nothing was stopped: try again once
/// it runs`: a start it did not see, and advice that waits for good. Now
/// it says what it sees, the holder by its pid, that it is stopped, and
/// what to do: `kill -CONT PID`.
#[test]
fn s49_a_stop_behind_a_stopped_holder_of_no_word_says_it_is_stopped() {
    let test = "s49_a_stop_behind_a_stopped_holder_of_no_word_says_it_is_stopped";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s49held", SLEEP);
    let dir = tempfile::tempdir().unwrap();
    let (start, start_pid, go_on) = start_held_unsaid(&g, dir.path());
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0", &g.name])
        .env("UNIFS_TEST_LOCK_WAIT_MAX", "1");
    let o = run_bounded(stop, Duration::from_secs(30));
    let err = stderr(&o);
    drop(go_on);
    let started = wait_bounded(start, Duration::from_secs(60));
    assert!(!o.status.success(), "{o:?}");
    assert!(!err.contains("is starting"), "{err}");
    assert!(
        err.contains(&format!("(pid {start_pid})"))
            && err.contains("is stopped")
            && err.contains(&format!("kill -CONT {start_pid}")),
        "{err}"
    );
    assert!(
        started.status.success(),
        "{started:?} {}",
        read(&dir.path().join("start.err"))
    );
}

/// An init that waits for /tmp/go, then asks its root's statfs: with the
/// overlay daemon slow to answer it (UNIFS_TEST_STATFS_PAUSE_MS), then
/// stopped, init waits in D state, which SIGKILL does not end.
const STUCK_ON_GO: &str =
    "[\"/bin/sh\", \"-c\", \"while [ ! -e /tmp/go ]; do sleep 0.1; done; exec stat -f /\"]";

/// What the kernel says `pid` waits in.
fn wchan(pid: i64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

/// A `guest exec`'s command killed by the guest's stop said nothing (exit
/// 137) when the guest's init outlived it: the stop SIGKILLs init, then
/// what is in the guest's groups, and an init waiting on its overlay
/// daemon (a statfs the daemon read, then the daemon stopped) ends only
/// once the stop has ended that daemon, seconds later; `exec` asked only
/// whether init had ended. (A plain guest did not show it: 75 stops of a
/// guest with an exec'd sleep, --timeout 10 and 0, all said it.) Now the
/// `stop` at work (it holds the guest's lock) is taken for what it is.
#[test]
fn s49_an_exec_killed_by_a_stop_before_init_ends_says_so() {
    let test = "s49_an_exec_killed_by_a_stop_before_init_ends_says_so";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s49stuck", STUCK_ON_GO);
    let (start, _) = g.start_with("UNIFS_TEST_STATFS_PAUSE_MS", "6000");
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{o:?}");
    let init = g.init_pid();
    let (session, command) = g.exec_sleep();
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    assert!(
        within_60s(|| wchan(init) == "request_wait_answer"),
        "init {init} never waited on its daemon: {}",
        wchan(init)
    );
    let daemon = daemon_pids(&g);
    assert_eq!(daemon.len(), 1, "{daemon:?}");
    let go_on = Continue(daemon[0] as i32);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon[0] as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    if wchan(init) != "request_wait_answer" {
        eprintln!("{test}: the daemon answered before it was stopped; nothing seen");
        return;
    }
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0", &g.name]);
    let stopped = run_bounded(stop, Duration::from_secs(60));
    let o = wait_bounded(session, Duration::from_secs(60));
    drop(go_on);
    assert!(stopped.status.success(), "{stopped:?}");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{o:?}");
    assert!(
        err.contains(&format!(
            "the command in guest {} was killed: the guest stopped while it ran (it is being \
             stopped by `unifs guest stop` (pid",
            g.name
        )),
        "exec's command {command}: {err}"
    );
}
