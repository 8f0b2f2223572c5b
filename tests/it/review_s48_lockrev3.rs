//! Review (session 48) of lock3's one deadline for a `guest stop`: the
//! waits that follow a SIGKILL or an unmount, when the stop's time is up.

use crate::guest::harness::{
    alive, can_run, group_pids, groups, is_mounted, ok, stderr, within_30s,
};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s48_lock3::stop_at_once;
use std::process::Output;
use std::time::Duration;

/// The processes of the overlay daemon's leaf (`mount`) of `g`'s groups.
pub(crate) fn daemon_pids(g: &Guest) -> Vec<i64> {
    let mut pids: Vec<i64> = groups(&g.name, g.run_dir())
        .iter()
        .filter_map(|group| std::fs::read_to_string(group.join("mount/cgroup.procs")).ok())
        .flat_map(|t| t.lines().filter_map(|l| l.parse().ok()).collect::<Vec<_>>())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// What `g`'s stop left: its root mounted, its daemon running, its groups,
/// its record; empty when nothing.
pub(crate) fn left_of(g: &Guest, daemon: &[i64]) -> Vec<String> {
    let run = g.run_dir().join(&g.name);
    let mut left = Vec::new();
    if is_mounted(&run.join("root")) {
        left.push("the root mounted".to_string());
    }
    left.extend(
        daemon
            .iter()
            .filter(|&&p| alive(p))
            .map(|p| format!("the daemon {p} running")),
    );
    left.extend(
        groups(&g.name, g.run_dir())
            .into_iter()
            .filter(|g| g.exists())
            .map(|g| format!("the group {}", g.display())),
    );
    if run.join("state.json").exists() {
        left.push("the record".to_string());
    }
    left
}

/// `g`'s overlay daemon (one there is), then `g` stopped at once
/// (--timeout 0, SIGKILL) with a 1 s lock wait and `after` seconds after
/// the timeout (of which 8 are the tail: 5 before 2026-12-06), `env` set too: the daemon and
/// what the stop said.
pub(crate) fn stop_late(g: &Guest, after: &str, env: &[(&str, &str)]) -> (Vec<i64>, Output) {
    let daemon = daemon_pids(g);
    assert!(
        !daemon.is_empty(),
        "no overlay daemon in the guest's groups"
    );
    (daemon, stop_at_once(g, after, env, Duration::from_secs(30)))
}

/// An init of 40 children: its end (the kernel ends and reaps its PID
/// namespace first) takes a moment after a SIGKILL.
const FORTY: &str = "[\"/bin/sh\", \"-c\", \"for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40; do /bin/sleep 1000 & done; wait\"]";

/// A stop whose time is up when it sends SIGKILL (here at once:
/// UNIFS_TEST_STOP_AFTER_MAX=1 leaves less than the tail kept for the
/// waits on what the stop made end, and --timeout 0) waited zero for what the SIGKILL ends: it
/// looked once, a few microseconds after the kill, found init (of 40
/// children) still there and failed ("processes … survived SIGKILL"), the
/// guest's record, root, daemon and groups left. A SIGKILLed process ends
/// in milliseconds; not waiting for it skips the teardown that must
/// happen. Now such a wait gets a moment (1 s) even when the time is up.
#[test]
fn s48_a_stop_whose_time_is_up_still_waits_a_moment_for_what_it_killed() {
    let test = "s48_a_stop_whose_time_is_up_still_waits_a_moment_for_what_it_killed";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s48lr3kill", FORTY);
    ok(&g.unifs(&["start", &g.name]));
    assert!(
        within_30s(|| group_pids(&g.name, g.run_dir()).len() > 40),
        "the guest's 40 children never ran: {:?}",
        group_pids(&g.name, g.run_dir())
    );
    let (daemon, o) = stop_late(&g, "1", &[]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(left_of(&g, &daemon), Vec::<String>::new(), "{}", stderr(&o));
}

/// Guard (passed before too): a stop whose `unifs umount` of the root
/// hangs (UNIFS_TEST_UMOUNT_PAUSE) until its time is up unmounts the root
/// directly and leaves nothing: not the root, the overlay daemon, the
/// groups, the record. Before, its time gone, it waited zero for the
/// daemon to end by itself after that unmount and SIGKILLed it if it had
/// not ended at the one look (`did not end after the unmount; killing
/// it`); here the daemon was always quicker. Now it gets its moment.
#[test]
fn s48_a_stop_cut_off_in_its_unmount_leaves_nothing_mounted_or_running() {
    let test = "s48_a_stop_cut_off_in_its_unmount_leaves_nothing_mounted_or_running";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s48lr3umount", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let (daemon, o) = stop_late(&g, "10", &[("UNIFS_TEST_UMOUNT_PAUSE", "40000")]);
    let err = stderr(&o);
    assert!(o.status.success(), "{o:?}");
    assert!(err.contains("unmounting it directly"), "{err}");
    assert!(!err.contains("did not end after the unmount"), "{err}");
    assert_eq!(left_of(&g, &daemon), Vec::<String>::new(), "{err}");
}
