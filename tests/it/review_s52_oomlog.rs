//! Session 52 "oomlog": the OOM watch where v1's notice of an OOM cannot
//! be had. The kernel refuses its registration (the tests' hook
//! UNIFS_TEST_OOM_NOTICE_REFUSED: no real way to have this kernel refuse
//! it to root), or there is no eventfd to wake the watch (the tests'
//! UNIFS_TEST_NO_WAKE_EVENTFD, as a process out of descriptors): the
//! keeper holds no notice, and its half-second reads still count a kill.
//! (Its warning is not looked for: a named guest's keeper's stderr is
//! /dev/null while init runs, so it is seen nowhere yet.)

use crate::guest::harness::{can_run, ok, run_bounded, stderr, within_30s, TestRoot};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s43_forkfail::{guest_in_16m_with, ALLOC_64M};
use crate::review_s46_oomrev2::status_json as state;
use std::time::Duration;

/// `g` started with the test hook `hook` set (its keeper inherits it).
fn started_with(g: &Guest, hook: &str) {
    let mut start = g.command();
    start.args(["start", &g.name]).env(hook, "1");
    ok(&run_bounded(start, Duration::from_secs(60)));
}

/// How many eventfds the keeper of `g` holds (the watch's: the one that
/// wakes it, and the notice's).
fn keeper_eventfds(g: &Guest) -> usize {
    let pid = std::fs::read_to_string(g.run(&g.name).join("keeper.pid")).unwrap();
    let dir = std::fs::read_dir(format!("/proc/{}/fd", pid.trim())).unwrap();
    let links = dir
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok());
    links
        .filter(|l| l.as_os_str() == "anon_inode:[eventfd]")
        .count()
}

/// A command of `g`'s the OOM killer ends (in the guest's own leaf, which
/// stays: the ticks read it), then `status` until it counts it and the
/// keeper's `oom.json` until it holds it (the keeper's watch read it:
/// `status` alone would count it from the leaf as it is).
fn killed_and_counted(g: &Guest) -> (serde_json::Value, serde_json::Value) {
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", ALLOC_64M]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let kept = g.run(&g.name).join("oom.json");
    let (mut st, mut file) = (state(g), serde_json::Value::Null);
    within_30s(|| {
        st = state(g);
        let text = std::fs::read_to_string(&kept).unwrap_or_default();
        file = serde_json::from_str(&text).unwrap_or_default();
        st["oom_kills"] == 1 && file["groups"][0]["oom_kill"] == 1
    });
    (st, file)
}

/// A kernel that refuses the notice: the keeper said nothing before (the
/// hook did not exist: it held the notice's eventfd, 2 in all). Now it
/// holds the wake eventfd alone, and still counts a kill.
#[test]
fn s52_a_refused_oom_notice_leaves_the_ticks_to_count() {
    if !can_run("s52_a_refused_oom_notice_leaves_the_ticks_to_count") {
        return;
    }
    let g = guest_in_16m_with("s52refused", SLEEP, "");
    started_with(&g, "UNIFS_TEST_OOM_NOTICE_REFUSED");
    // Counted in oom.json: the keeper's watch runs (it holds its fds).
    let (st, file) = killed_and_counted(&g);
    let fds = keeper_eventfds(&g);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert_eq!(st["oom_kills"], 1, "{st}");
    assert_eq!(
        file["groups"][0]["oom_kill"], 1,
        "the keeper's oom.json: {file}"
    );
    assert_eq!(fds, 1, "the keeper's eventfds");
}

/// No eventfd to wake the watch: it waits on its channel alone, without
/// the notice (which it could not be woken from in time to stop). The
/// keeper held 2 eventfds before (the hook did not exist); now it holds
/// none, counts a kill at its ticks, and a stop ends it. `run`,
/// likewise without, says its command's kill (its verdict ends the
/// watch through the channel) and not the debug line.
#[test]
fn s52_without_the_wake_eventfd_the_watch_still_counts_and_ends() {
    if !can_run("s52_without_the_wake_eventfd_the_watch_still_counts_and_ends") {
        return;
    }
    let g = guest_in_16m_with("s52nowake", SLEEP, "");
    started_with(&g, "UNIFS_TEST_NO_WAKE_EVENTFD");
    // Counted in oom.json: the keeper's watch runs (it holds its fds).
    let (st, file) = killed_and_counted(&g);
    let fds = keeper_eventfds(&g);
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0", &g.name]);
    let stop = run_bounded(stop, Duration::from_secs(60));
    assert!(stop.status.success(), "{stop:?}");
    assert_eq!(st["oom_kills"], 1, "{st}");
    assert_eq!(
        file["groups"][0]["oom_kill"], 1,
        "the keeper's oom.json: {file}"
    );
    assert_eq!(fds, 0, "the keeper's eventfds");
    let t = TestRoot::new();
    let mut run = std::process::Command::new(crate::common::unifs_bin());
    run.args(["run", "--memory", "16M", "--root"]).arg(t.root());
    run.args(["--", "/bin/sh", "-c", ALLOC_64M]);
    run.env("UNIFS_TEST_NO_WAKE_EVENTFD", "1");
    let o = run_bounded(run, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{err}");
    assert!(err.contains("killed by the memory limit"), "{err}");
    assert!(!err.contains("no eventfd"), "{err}");
}
