//! Review (session 47) of "lock2" (the guest lock's bounds and words):
//! a command behind a `stop` first seen before that stop wrote its word.

use crate::guest::harness::{can_run, ok, wait_bounded, KillOnDrop};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s47_lock2::waited_for_the_stop;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `cmd` spawned, stdout piped, stderr into `err`, killed on drop; its pid.
pub(crate) fn spawned(mut cmd: Command, err: &std::path::Path) -> (KillOnDrop, u32) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(err).unwrap());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    (KillOnDrop(Some(child)), pid)
}

/// A `start` that looks at the lock of a `stop --timeout 20` that has
/// taken it but not yet written its word (held there:
/// UNIFS_TEST_LOCKED_UNSAID_STOP) gets no `holds` and waits its own bound
/// (8 s here, UNIFS_TEST_LOCK_WAIT_MAX; 70 s as shipped). The stop then
/// writes `holds 100`. Before, the start still gave up at its own bound:
/// `… is still being stopped by `unifs guest stop` (pid N) after 8 s`,
/// behind a stop that said it may take 100 s, and ran by itself 12 s
/// later. Now it looks again at its bound's end, says the longer bound,
/// waits it, and starts the guest once the stop has ended.
#[test]
fn s47_a_start_that_saw_a_stop_before_its_word_waits_as_long_as_it_then_says() {
    let test = "s47_a_start_that_saw_a_stop_before_its_word_waits_as_long_as_it_then_says";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s47lrunsaid", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let errs = tempfile::tempdir().unwrap();
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "20", &g.name])
        .env("UNIFS_TEST_LOCKED_UNSAID_STOP", "stop");
    let (stop, stop_pid) = spawned(stop, &errs.path().join("stop"));
    let go_on = Continue(stop_pid as i32);
    assert!(
        within_60s(|| stopped(stop_pid)),
        "the stop {stop_pid} never held the lock"
    );
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_LOCK_WAIT_MAX", "8");
    let start_err = errs.path().join("start");
    let (start, _) = spawned(start, &start_err);
    let said = || std::fs::read_to_string(&start_err).unwrap_or_default();
    assert!(
        within_60s(|| said().contains("waiting for it to finish (up to 8 s)")),
        "the start never waited: {}",
        said()
    );
    // The stop goes on: writes its word (holds 100), then stops the guest.
    drop(go_on);
    let o = wait_bounded(start, Duration::from_secs(120));
    let err = said();
    assert!(o.status.success(), "{o:?}: {err}");
    waited_for_the_stop(&g, &err, (stop, stop_pid), 100);
}
