//! Review (session 46) of "keepers3": the bounded wait for a guest's lock
//! (`RunDir::lock_within`) against the keeper's start after a reboot.

use crate::guest::harness::{can_run, ok, run_bounded, stderr};
use crate::review_s31_doubts::within_60s;
use crate::review_s36_reboot::{console_log, rebooting_guest, wait_status};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// An init that reboots the guest once /tmp/go exists, and on its second
/// boot just runs.
const REBOOT_ON_GO: &str = "echo boot; [ -e /rebooted ] && exec sleep 1000; \
     while [ ! -e /tmp/go ]; do sleep 0.05; done; touch /rebooted; reboot -f";

/// A guest that reboots itself while another process holds its lock for
/// longer than a command waits for it (3 s here, UNIFS_TEST_LOCK_WAIT_MAX;
/// 70 s as shipped: a `stop --timeout 100` at work). Docs: the keeper
/// alone waits for the lock without a bound. Before, its start after the
/// reboot (the keeper's process, exec'd) waited 3 s, then gave up: the
/// guest stayed stopped, its exit.json saying `not_restarted: its start
/// failed: guest … is still … after 3 s …; try again once it has ended`
/// (to nobody: it is the keeper's). Now it waits for the lock, saying so
/// in the console log, then starts the guest again.
#[test]
fn s46_the_keepers_start_after_a_reboot_waits_for_the_lock_without_a_bound() {
    let test = "s46_the_keepers_start_after_a_reboot_waits_for_the_lock_without_a_bound";
    if !can_run(test) {
        return;
    }
    let g = rebooting_guest("s46krboot", REBOOT_ON_GO, "");
    // The keeper is forked from this start and inherits its environment.
    let mut start = g.cmd(&["start", &g.name]);
    start.env("UNIFS_TEST_LOCK_WAIT_MAX", "3");
    let o = run_bounded(start, Duration::from_secs(30));
    assert!(o.status.success(), "{}", stderr(&o));
    let first = g.state()["pid"].as_i64().expect("a pid");

    // The test holds the guest's lock, as a long command would.
    let lock = std::fs::File::open(g.run_dir.join(&g.name).join("lock")).unwrap();
    // SAFETY: flock on an fd we own; released when `lock` is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    let waiting = "waiting for it to finish";
    assert!(
        within_60s(|| console_log(&g).contains(waiting)),
        "the start after the reboot never said it waits: {}",
        console_log(&g)
    );
    // Well past the 3 s a command waits.
    std::thread::sleep(Duration::from_secs(8));
    drop(lock);

    let st = wait_status(&g, 60, |st| {
        st["running"] == true && st["pid"].as_i64().is_some_and(|p| p != first)
    });
    assert_eq!(
        st["running"],
        true,
        "not started again once the lock was let go: {st}\n{}",
        console_log(&g)
    );
    assert_eq!(st["reboots"], 1, "{st}");
    let log = console_log(&g);
    assert!(
        log.contains(&format!("{waiting}\n")) && !log.contains("after 3 s"),
        "the keeper's wait has no bound to say: {log}"
    );
    ok(&g.unifs(&["stop", &g.name]));
}
