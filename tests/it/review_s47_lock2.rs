//! Review (session 47) of the guest lock's loose ends (`RunDir::lock_within`):
//! a `stop` behind a `start` against contrib's unit's TimeoutStopSec=90, a
//! command behind a `stop` with a long --timeout, and what a waiter says of
//! a holder that let go, or has not yet written its word.

use crate::guest::harness::{can_run, ok, run_bounded, stderr, wait_bounded, KillOnDrop};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::{stopped, within_60s};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `cmd` spawned, its output piped, killed on drop; and its pid.
fn spawned(mut cmd: Command) -> (KillOnDrop, u32) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    (KillOnDrop(Some(child)), pid)
}

/// `guest start G` stopped (SIGSTOP, test hook `hook` set to `value`) once
/// it holds the guest's lock: it, and its pid. (Its keeper inherits the
/// hook: UNIFS_TEST_LOCKED_UNSAID_STOP names the command it stops.)
fn start_held(g: &Guest, hook: &str, value: &str) -> (KillOnDrop, u32) {
    let mut start = g.command();
    start.args(["start", &g.name]).env(hook, value);
    let (start, pid) = spawned(start);
    assert!(
        within_60s(|| stopped(pid)),
        "the start {pid} never held the lock"
    );
    (start, pid)
}

/// A `stop` behind a `start` at work (held once it has the lock) waited
/// 70 s for it, then up to 70 s more for the lock, then its own --timeout
/// and teardown: past contrib's unit's TimeoutStopSec=90, which SIGKILLs
/// it half-way. Now its waits for other commands share one bound of 30 s
/// (with its --timeout, 10 s, and at most 45 s of its own, within 90 s):
/// it says so at once, and fails after 30 s having done nothing. Before,
/// it said `(up to 70 s)` and was still waiting when the test's 60 s
/// ended. Real bounds here, not the tests' shorter one.
#[test]
fn s47_a_stop_behind_a_start_gives_up_within_the_units_stop_timeout() {
    let test = "s47_a_stop_behind_a_start_gives_up_within_the_units_stop_timeout";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s47stopbound", SLEEP);
    let (start, start_pid) = start_held(&g, "UNIFS_TEST_START_LOCKED_STOP", "1");
    let go_on = Continue(start_pid as i32);
    let mut stop = g.command();
    stop.args(["stop", &g.name]);
    let o = run_bounded(stop, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        err.contains(&format!(
            "is being started by `unifs guest start` (pid {start_pid}): waiting for it to \
             finish (up to 30 s)"
        )) && err.contains("was not started within 30 s; nothing was stopped"),
        "{err}"
    );
    // The start goes on and runs the guest; a stop then stops it.
    drop(go_on);
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{o:?}");
    ok(&g.unifs(&["stop", &g.name]));
}

/// A `start` behind a `stop --timeout 6` of a guest whose init takes no
/// signal (so the stop waits its 6 s, then kills it): the stop writes in
/// the lock file that it may hold it 86 s (its --timeout and 80 s of its
/// teardown), and the start waits that long rather than its own bound (2 s
/// here, UNIFS_TEST_LOCK_WAIT_MAX; 70 s as shipped, which a `stop --timeout
/// 100` outlasted), then starts the guest. Before, it gave up after 2 s:
/// `guest … is still being stopped by `unifs guest stop` (pid N) after 2 s`.
#[test]
fn s47_a_start_behind_a_long_stop_waits_as_long_as_the_stop_said() {
    let test = "s47_a_start_behind_a_long_stop_waits_as_long_as_the_stop_said";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s47holds", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "6", &g.name]);
    let (stop, stop_pid) = spawned(stop);
    let lock = g.run(&g.name).join("lock");
    let word = || std::fs::read_to_string(&lock).unwrap_or_default();
    assert!(
        within_60s(|| word().starts_with("stop")),
        "the stop {stop_pid} never took the lock: {:?}",
        word()
    );
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_LOCK_WAIT_MAX", "2");
    let o = run_bounded(start, Duration::from_secs(60));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    waited_for_the_stop(&g, &err, (stop, stop_pid), 86);
}

/// After a command that waited behind `guest stop` `stop` (it, its pid)
/// and said so in `err` (its stderr), up to `secs` s: the stop ends well,
/// and the guest runs a command; then it is stopped.
pub(crate) fn waited_for_the_stop(g: &Guest, err: &str, stop: (KillOnDrop, u32), secs: u32) {
    let (stop, stop_pid) = stop;
    assert!(
        err.contains(&format!(
            "is being stopped by `unifs guest stop` (pid {stop_pid}): waiting for it to finish \
             (up to {secs} s)"
        )),
        "{err}"
    );
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(o.status.success(), "{o:?}");
    let o = g.unifs(&["exec", &g.name, "--", "/bin/echo", "runs"]);
    assert_eq!(ok(&o), "runs\n");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// The holder lets go between a command's failed try for the lock and its
/// read of /proc/locks (held there: UNIFS_TEST_LOCK_TRIED_STOP). /proc/locks
/// then lists nobody, and the command said `… (its pid not to be seen from
/// this PID namespace): waiting for it to finish`, of a holder in this
/// namespace that was gone. Now it tries the lock once more before it says
/// anything, and takes it.
#[test]
fn s47_a_holder_gone_before_the_look_at_proc_locks_is_not_said_to_be_elsewhere() {
    let test = "s47_a_holder_gone_before_the_look_at_proc_locks_is_not_said_to_be_elsewhere";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s47gone", SLEEP);
    let dir = g.run(&g.name);
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("lock")).unwrap();
    // SAFETY: flock on an fd we own; released when `lock` is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut update = g.command();
    update
        .args(["update", "--memory", "100M", &g.name])
        .env("UNIFS_TEST_LOCK_TRIED_STOP", "1");
    let (update, pid) = spawned(update);
    let go_on = Continue(pid as i32);
    assert!(
        within_60s(|| stopped(pid)),
        "the update never tried the lock"
    );
    drop(lock);
    drop(go_on);
    let o = wait_bounded(update, Duration::from_secs(60));
    let err = stderr(&o);
    // It got the lock: the guest does not run.
    assert!(err.contains("is not running"), "{err}");
    assert!(
        !err.contains("not to be seen") && !err.contains("waiting for it"),
        "{err}"
    );
}

/// A holder that has taken the lock but not yet written its word (held
/// there: UNIFS_TEST_LOCKED_UNSAID_STOP) leaves the word of the one before
/// in the lock file: a command behind it named that one's command with
/// this one's pid (`having its limits changed by `unifs guest update` (pid
/// N)` of a `start`). The word now carries its writer's pid: one of
/// another than the holder /proc/locks lists is read again for a moment,
/// then not said (`locked by another `unifs guest` command (pid N)`).
#[test]
fn s47_a_word_left_by_the_holder_before_is_not_said_of_the_next() {
    let test = "s47_a_word_left_by_the_holder_before_is_not_said_of_the_next";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s47stale", SLEEP);
    // An update leaves its word (the guest does not run).
    let o = g.unifs(&["update", "--memory", "100M", &g.name]);
    assert!(stderr(&o).contains("is not running"), "{o:?}");
    let (start, start_pid) = start_held(&g, "UNIFS_TEST_LOCKED_UNSAID_STOP", "start");
    let go_on = Continue(start_pid as i32);
    let mut update = g.command();
    update
        .args(["update", "--memory", "100M", &g.name])
        .env("UNIFS_TEST_LOCK_WAIT_MAX", "2");
    let o = run_bounded(update, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        err.contains(&format!(
            "is locked by another `unifs guest` command (pid {start_pid}): waiting"
        )) && !err.contains("limits changed"),
        "{err}"
    );
    drop(go_on);
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{o:?}");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}
