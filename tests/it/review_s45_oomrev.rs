//! Review (session 45) "oomrev" of "oominit": the OOM watch that reads the
//! kernel's log only when the guest's count of OOM kills rose. The kernel
//! logs a kill just after it counts it: a read right after the count rose
//! could come before the record, which the next half second's skip (the
//! count no longer rising) then passed over unread; with another victim
//! named, the log said "not the OOM killer" of that one. And `status`
//! said every kill its count holds was the memory limit's, the host's
//! included.

use crate::guest::harness::{can_run, ok, stderr, stdout};
use crate::review_s43_forkfail::{guest_in_16m, ALLOC_64M};
use std::time::Duration;

/// `unifs run` whose command's subshell the OOM killer ended, the
/// record of that kill logged only after the watch's read on the count's
/// rise (the tests' UNIFS_TEST_KMSG_LATE: that read finds nothing, as on
/// a busy host where the killing task is preempted between the count and
/// the log), and the command itself killed by hand a second and a half
/// later (within the count's 3 s window): "WARN the guest's command was
/// killed by the memory limit", the log having skipped the subshell's
/// record (it then named no victim, and the window decided).
#[test]
fn s45_a_kill_logged_just_after_the_watch_read_the_log_is_still_read() {
    if !can_run("s45_a_kill_logged_just_after_the_watch_read_the_log_is_still_read") {
        return;
    }
    crate::review_s44_oomexec::kill_a_run_by_hand_after_its_subshells_oom_kill(
        &[],
        &[("UNIFS_TEST_KMSG_LATE", "1")],
        |_| {},
        // The watch's rounds past the rise (every half second): the read
        // that found nothing, then the next one.
        || std::thread::sleep(Duration::from_millis(1500)),
    );
}

/// A running guest one of whose processes the OOM killer ended: `status`
/// said "oom:     1 of its processes killed by the memory limit", though
/// the count it reads (memory.oom_control's oom_kill) counts the host's
/// OOM killer's kills of its processes too.
#[test]
fn s45_status_says_its_oom_count_may_hold_the_hosts_kills() {
    if !can_run("s45_status_says_its_oom_count_may_hold_the_hosts_kills") {
        return;
    }
    let g = guest_in_16m("s45oomrevst", crate::guest::review_s11_life::SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", ALLOC_64M]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let status = stdout(&g.unifs(&["status", &g.name]));
    let said = "oom:     1 of its processes killed by the memory limit or the host's OOM killer";
    assert!(status.contains(said), "{status}");
}
