//! Forty-third session: an audit of the panics bad input can reach. A
//! panic answers an operator with a backtrace (exit status 101) where an
//! error should say what was wrong; each test here gives unifs the input
//! that reached one and checks for the error instead.

use crate::fs::harness::{set_mtime, World};
use crate::guest::harness::{can_run, ok, stderr};
use crate::guest::named::Guest;
use crate::review_s33_pids::PidsGroup;
use std::process::{Command, Output};

/// That `o` is no panic: neither Rust's exit status for one nor its
/// message.
fn no_panic(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(
        o.status.code() != Some(101) && !err.contains("panicked at"),
        "{what}: {:?}, {err}",
        o.status
    );
}

/// `unifs guest stop --timeout 1e19` panicked ("overflow when adding
/// duration to instant"): the deadline, now + 10^19 s, is past what the
/// monotonic clock can hold (2^63 ns... s). A timeout that long waits as
/// long as one can: with `--signal KILL` the guest stops at once.
#[test]
fn s43_guest_stop_with_a_timeout_past_the_clocks_range_stops_the_guest() {
    if !can_run("s43_guest_stop_with_a_timeout_past_the_clocks_range_stops_the_guest") {
        return;
    }
    let g = Guest::new("s43stop", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["stop", "--timeout", "1e19", "--signal", "KILL", &g.name]);
    no_panic(&o, "stop --timeout 1e19");
    ok(&o);
    assert_eq!(g.state()["running"], false);
    // The same for restart, which stops first.
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["restart", "--timeout", "1e19", "--signal", "KILL", &g.name]);
    no_panic(&o, "restart --timeout 1e19");
    ok(&o);
    assert_eq!(g.state()["running"], true);
}

/// A v1 pids group of this test's own (`what` names it), made; `None`
/// (the test skips) without root or the hierarchy.
fn pids_group(test: &str, what: &str) -> Option<PidsGroup> {
    if !crate::common::require_root(test) {
        return None;
    }
    let pids = crate::review_s27_cgroup::v1_hierarchy(test, "pids")?;
    let group = PidsGroup(pids.join(format!("s43-panicaudit-{what}-{}", std::process::id())));
    std::fs::create_dir(&group.0).unwrap();
    Some(group)
}

/// Two guests with the same files, for a unify with work to do.
fn two_guests(w: &World) -> (std::path::PathBuf, std::path::PathBuf) {
    let (a, b) = (w.dir("a"), w.dir("b"));
    for i in 0..20 {
        let data = format!("file {i} ").repeat(100);
        std::fs::write(a.join(format!("f{i}")), &data).unwrap();
        std::fs::write(b.join(format!("f{i}")), &data).unwrap();
        // Files unify links are alike in their metadata too.
        set_mtime(&a.join(format!("f{i}")), 1_700_000_000);
        set_mtime(&b.join(format!("f{i}")), 1_700_000_000);
    }
    (a, b)
}

/// `unifs unify` in a pids group whose limit lets its worker threads start
/// but not the 8 that close replaced files (a systemd unit's TasksMax=, a
/// container's): it panicked ("failed to spawn thread") halfway through
/// linking. Under every limit it now either links or says which limit it
/// met; a run that went through links the files.
#[test]
fn s43_unify_under_a_pids_limit_never_panics() {
    let Some(group) = pids_group("s43_unify_under_a_pids_limit_never_panics", "unify") else {
        return;
    };
    let mut runs = Vec::new();
    for max in 1..=8 {
        let w = World::new();
        let (a, b) = two_guests(&w);
        let mut unify = Command::new(crate::common::unifs_bin());
        unify.env("UNIFS_THREADS", "2");
        unify
            .arg("--store")
            .arg(&w.store)
            .arg("unify")
            .arg(&a)
            .arg(&b);
        let o = group.run(max, unify);
        let ino =
            |p: std::path::PathBuf| std::os::unix::fs::MetadataExt::ino(&p.metadata().unwrap());
        let linked = ino(a.join("f0")) == ino(b.join("f0"));
        runs.push((max, o, linked));
    }
    for (max, o, _) in &runs {
        no_panic(o, &format!("unify under pids.max {max}"));
    }
    let mut linked = 0;
    for (max, o, went) in &runs {
        if o.status.success() {
            assert!(
                went,
                "pids.max {max}: unify says it went through, f0 is not linked"
            );
            linked += 1;
        } else {
            // Its worker threads did not start: the error names the limit met.
            let err = stderr(o);
            assert!(
                err.contains("worker threads") && err.contains(&format!("allows {max} tasks")),
                "pids.max {max}: {err}"
            );
        }
    }
    assert!(linked >= 1, "no unify went through under pids.max 1 to 8");
}

/// `unifs demo` started unify's worker threads at their first use, where a
/// limit on tasks made it panic ("cannot start unify's 2 worker threads");
/// `unifs unify` starts them first and says which limit to raise. The demo
/// now does so too, and both name the pids cgroup's limit (they named only
/// RLIMIT_AS and RLIMIT_NPROC, which were not the ones met).
#[test]
fn s43_demo_under_a_pids_limit_never_panics() {
    let Some(group) = pids_group("s43_demo_under_a_pids_limit_never_panics", "demo") else {
        return;
    };
    let mut refused = 0;
    for max in 1..=3 {
        let w = World::new();
        let mut demo = Command::new(crate::common::unifs_bin());
        demo.env("UNIFS_THREADS", "2");
        demo.arg("demo")
            .arg("--guests")
            .arg("2")
            .arg("--dir")
            .arg(w.dir("d").join("demo"));
        let o = group.run(max, demo);
        no_panic(&o, &format!("demo under pids.max {max}"));
        if !o.status.success() {
            refused += 1;
            let err = stderr(&o);
            assert!(
                err.contains("worker threads") && err.contains(&format!("allows {max} tasks")),
                "pids.max {max}: {err}"
            );
        }
    }
    assert!(
        refused >= 1,
        "every demo went through under pids.max 1 to 3"
    );
}
