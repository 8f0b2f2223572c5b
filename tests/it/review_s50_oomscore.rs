//! Session 50 "oomscore": the OOM scores a guest's processes hold where
//! its overlay daemon could not be shielded at -999 (unifs without
//! CAP_SYS_RESOURCE, as this CI's root): a memory limit `guest update`
//! adds to a running guest, and `unifs run`'s warning.

use crate::guest::harness::{can_run, group_pids, ok, stderr, within_30s, TestRoot};
use crate::guest::review_s11_life::Guest;
use crate::review_s49_oomd::holds_sys_resource;

/// The OOM score of each of the guest's processes (its `guest` leaves,
/// not its daemon's), by host pid.
/// The score a memory limit `update` adds leaves the guest's processes
/// at: 999, above its unshielded daemon; 0 where this unifs may shield
/// the daemon instead (CAP_SYS_RESOURCE).
pub fn raised() -> &'static str {
    match holds_sys_resource() {
        true => "0",
        false => "999",
    }
}

/// The score of process `pid` among [`scores`].
pub fn score_of(scores: &[(i32, String)], pid: i64) -> Option<&str> {
    let found = scores.iter().find(|(p, _)| i64::from(*p) == pid);
    found.map(|(_, s)| s.as_str())
}

pub fn scores(g: &Guest) -> Vec<(i32, String)> {
    let mut pids = group_pids(&g.name, g.run_dir());
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter_map(|pid| {
            let score = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).ok()?;
            Some((pid, score.trim().to_string()))
        })
        .collect()
}

/// A guest started without a memory limit has its processes at 0, level
/// with a daemon that could not be shielded. A limit `guest update` adds
/// raises them to 999 as a start with that limit would (before 2026-12-06
/// they stayed at 0 until the next start), the command of an `exec`
/// session already there too; one that raised itself to 1000 keeps it.
#[test]
fn s50_a_memory_limit_update_adds_raises_the_guests_processes_above_its_daemon() {
    if !can_run("s50_a_memory_limit_update_adds_raises_the_guests_processes_above_its_daemon") {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \
                \"(echo 1000 > /proc/self/oom_score_adj; exec sleep 1000) & exec sleep 1000\"]";
    let g = Guest::new("s50oomup", init);
    ok(&g.unifs(&["start", &g.name]));
    let init_pid = g.init_pid();
    let (session, command) = g.exec_sleep();
    // init, its child at 1000, the exec's command.
    let ready = within_30s(|| {
        let now = scores(&g);
        now.len() == 3 && now.iter().any(|(_, s)| s == "1000")
    });
    let before = scores(&g);
    assert!(ready, "the guest's processes before the update: {before:?}");
    let o = g.unifs(&["update", "--memory", "64M", &g.name]);
    let said = stderr(&o);
    ok(&o);
    let after = scores(&g);
    drop(session);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    let raised = raised();
    assert_eq!(
        score_of(&after, init_pid),
        Some(raised),
        "init: before {before:?}, after {after:?}; {said}"
    );
    assert_eq!(
        score_of(&after, i64::from(command as i32)),
        Some(raised),
        "the exec's command: {after:?}; {said}"
    );
    assert!(
        after.iter().any(|(_, s)| s == "1000"),
        "the process at 1000 was lowered: {after:?}"
    );
    if raised == "999" {
        assert!(
            said.contains("999") && said.contains("OOM score"),
            "the update says what it raised: {said}"
        );
    }
}

/// `unifs run` with a memory limit says once, as `guest start` does, that
/// the daemon could not be shielded and the guest's processes start at
/// 999 (before 2026-12-06 only `guest start` said it); without a limit,
/// or with a bind root (no daemon), nothing.
#[test]
fn s50_unifs_run_says_once_that_its_daemon_could_not_be_shielded() {
    if !can_run("s50_unifs_run_says_once_that_its_daemon_could_not_be_shielded") {
        return;
    }
    let t = TestRoot::new();
    let said = |opts: &[&str]| {
        let o = t.sh(opts, "true");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{opts:?}: {err}");
        (err.matches("lacks CAP_SYS_RESOURCE").count(), err)
    };
    let (limited, err) = said(&["--memory", "64M"]);
    let expected = usize::from(!holds_sys_resource());
    assert_eq!(limited, expected, "with --memory: {err}");
    if expected == 1 {
        assert!(
            err.contains(
                "the guest's overlay daemon may not get the OOM score -999 that shields \
                 it, only the least its caller lets it (0 for most callers); where that is \
                 above -999 the guest's processes start at 999 instead of 0"
            ),
            "start's words: {err}"
        );
    }
    let (unlimited, err) = said(&[]);
    assert_eq!(unlimited, 0, "without --memory: {err}");
    let (bind, err) = said(&["--memory", "64M", "--root-mount", "bind"]);
    assert_eq!(bind, 0, "a bind root: {err}");
}
