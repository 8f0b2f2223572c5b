//! Review (session 48) of a `guest stop`'s worst case against contrib's
//! unit's TimeoutStopSec=90 (one deadline for the whole command), a
//! `--timeout` past any use, and a stop behind a holder that has not yet
//! written its word.

use crate::guest::harness::{can_run, ok, run_bounded, stderr, wait_bounded, KillOnDrop};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s47_lockrev::spawned;
use std::process::Output;
use std::time::Duration;

pub(crate) fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `guest start g` in the background, stopped (SIGSTOP) by
/// UNIFS_TEST_LOCKED_UNSAID_STOP once it holds the guest's lock and before
/// it writes its word there, its stderr into `dir`/start.err: the start,
/// its pid, and its SIGCONT on drop.
pub(crate) fn start_held_unsaid(g: &Guest, dir: &std::path::Path) -> (KillOnDrop, u32, Continue) {
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_LOCKED_UNSAID_STOP", "start");
    let (start, start_pid) = spawned(start, &dir.join("start.err"));
    let go_on = Continue(start_pid as i32);
    assert!(
        within_60s(|| stopped(start_pid)),
        "the start {start_pid} never held the lock"
    );
    (start, start_pid, go_on)
}

/// `g` stopped at once (--timeout 0, SIGKILL) with a 1 s lock wait
/// (UNIFS_TEST_LOCK_WAIT_MAX) and `after` seconds after the timeout
/// (UNIFS_TEST_STOP_AFTER_MAX, of which the last 8 are kept for the
/// waits on what the stop made end), `env` set too: what it said, the stop cut at `bound`.
pub(crate) fn stop_at_once(
    g: &Guest,
    after: &str,
    env: &[(&str, &str)],
    bound: Duration,
) -> Output {
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0", "--signal", "KILL", &g.name])
        .env("UNIFS_TEST_LOCK_WAIT_MAX", "1")
        .env("UNIFS_TEST_STOP_AFTER_MAX", after)
        .envs(env.iter().copied());
    run_bounded(stop, bound)
}

/// A stop whose `unifs umount` of the root hangs (UNIFS_TEST_UMOUNT_PAUSE:
/// a FUSE unmount stuck on its daemon) waited 30 s for it whatever time
/// the stop had left: 30 s for the lock, 10 s of --timeout, 45 s for what
/// SIGKILL ends and a hung daemon, then these 30 s: 115 s, past contrib's
/// unit's TimeoutStopSec=90. Now every wait after the --timeout draws from
/// one deadline for the whole command (here shrunk: 1 s for the lock,
/// UNIFS_TEST_LOCK_WAIT_MAX, and 10 s after the --timeout,
/// UNIFS_TEST_STOP_AFTER_MAX, of which the last 8 s are kept for the
/// waits on what the stop made end: 5 s before 2026-12-06, with 6 s
/// after): the hung unmount is cut when the time is up, said, and the
/// root unmounted directly. Before, the stop was still in the unmount when
/// the test's 25 s ended (its `unifs umount`, paused 40 s, past its 30 s).
#[test]
fn s48_a_hung_unmount_draws_from_the_stops_one_deadline() {
    let test = "s48_a_hung_unmount_draws_from_the_stops_one_deadline";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s48hung", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let paused = [("UNIFS_TEST_UMOUNT_PAUSE", "40000")];
    let o = stop_at_once(&g, "10", &paused, Duration::from_secs(25));
    let err = stderr(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(
        err.contains("did not finish within") && err.contains("unmounting it directly"),
        "{err}"
    );
    let root = g.run(&g.name).join("root");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!(" {} ", root.display())),
        "{} still mounted",
        root.display()
    );
    let o = g.unifs(&["stop", &g.name]);
    assert!(format!("{o:?}").contains("not running"), "{o:?}");
}

/// A `stop` in the moment after a `start` took the guest's lock, before
/// it wrote its word in the lock file (held there:
/// UNIFS_TEST_LOCKED_UNSAID_STOP), saw a holder of no known word, did not
/// wait for it as for a start, found no record and said `guest … is not
/// running: nothing to stop`, exit 0; the start then ran the guest. Now a
/// holder of no word yet is waited for as a start is: the stop says so,
/// and stops the guest once the start has run it.
#[test]
fn s48_a_stop_behind_a_start_that_has_not_said_its_word_waits_for_it() {
    let test = "s48_a_stop_behind_a_start_that_has_not_said_its_word_waits_for_it";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s48unsaid", SLEEP);
    let dir = tempfile::tempdir().unwrap();
    let (start, start_pid, go_on) = start_held_unsaid(&g, dir.path());
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0", "--signal", "KILL", &g.name]);
    let stop_err = dir.path().join("stop.err");
    let (mut stop, stop_pid) = spawned(stop, &stop_err);
    let waits = format!(
        "is locked by another `unifs guest` command (pid {start_pid}): waiting for it to finish \
         (up to 30 s)"
    );
    let ended = |s: &mut KillOnDrop| s.0.as_mut().unwrap().try_wait().unwrap().is_some();
    assert!(
        within_60s(|| read(&stop_err).contains(&waits) || ended(&mut stop)),
        "the stop {stop_pid} neither waited nor ended"
    );
    drop(go_on);
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{o:?}");
    let o = wait_bounded(stop, Duration::from_secs(60));
    let err = read(&stop_err);
    assert!(o.status.success(), "{o:?} {err}");
    assert!(err.contains(&waits), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("stopped") && !out.contains("not running"),
        "{out}"
    );
    assert!(!g.run(&g.name).join("state.json").exists());
}

/// A `start` behind a `stop --timeout 1e19` (a guest whose init takes no
/// SIGTERM, so the stop waits its timeout, which is as long as anyone
/// waits): the stop wrote `holds 10000000000000000080` and the start said
/// `waiting for it to finish (up to 10000000000000000080 s)`. Now the
/// stop writes at most 136 years (what the clock's wait counts), and the
/// start says it waits as long as it takes.
#[test]
fn s48_a_start_behind_a_stop_of_no_end_says_so_in_words() {
    let test = "s48_a_start_behind_a_stop_of_no_end_says_so_in_words";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s48forever", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let dir = tempfile::tempdir().unwrap();
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "1e19", &g.name]);
    let (stop, stop_pid) = spawned(stop, &dir.path().join("stop.err"));
    let lock = g.run(&g.name).join("lock");
    assert!(
        within_60s(|| read(&lock).starts_with("stop")),
        "the stop {stop_pid} never took the lock: {:?}",
        read(&lock)
    );
    assert!(
        read(&lock).contains("holds 4294967295\n"),
        "{:?}",
        read(&lock)
    );
    let mut start = g.command();
    start.args(["start", &g.name]);
    let start_err = dir.path().join("start.err");
    let (start, _) = spawned(start, &start_err);
    let says = format!(
        "is being stopped by `unifs guest stop` (pid {stop_pid}): waiting for it to finish (as \
         long as it takes: it may hold it for good)"
    );
    assert!(
        within_60s(|| read(&start_err).contains(&says)),
        "{}",
        read(&start_err)
    );
    drop(start);
    drop(stop);
    // The stop killed mid-wait: the guest still runs; stopped for good.
    ok(&g.unifs(&["stop", "--timeout", "0", "--signal", "KILL", &g.name]));
    assert!(!g.run(&g.name).join("state.json").exists());
}
