//! Resource limits through cgroups (v1 on these machines, v2 elsewhere).

use super::harness::{can_run, ok, stderr, stdout, TestRoot};

#[test]
fn limits_memory_kills_the_hog_and_spares_the_host() {
    if !can_run("limits_memory_kills_the_hog_and_spares_the_host") {
        return;
    }
    let t = TestRoot::new();
    // awk doubles a string up to 256 MiB; with 32 MiB the kernel must kill it.
    let out = t.sh(
        &["--memory", "32M"],
        "awk 'BEGIN { s = \"x\"; while (length(s) < 268435456) s = s s; print \"survived\" }'; echo status=$?",
    );
    let o = stdout(&out);
    assert!(!o.contains("survived"), "the hog was not stopped: {o}");
    assert!(
        o.contains("status=137"),
        "killed by SIGKILL (OOM): {o}\n{}",
        stderr(&out)
    );
    // The guest's shell, and the host, carry on.
    assert_eq!(out.status.code(), Some(0));
    let fine = t.sh(
        &[],
        "awk 'BEGIN { s = \"x\"; while (length(s) < 67108864) s = s s; print \"survived\" }'",
    );
    assert!(
        stdout(&fine).contains("survived"),
        "without a limit the same fits"
    );
}

#[test]
fn limits_pids_caps_a_fork_bomb() {
    if !can_run("limits_pids_caps_a_fork_bomb") {
        return;
    }
    let t = TestRoot::new();
    // ash gives up at the first fork that fails, so each "started" line is
    // one process the kernel allowed; the shell itself is one of the 20.
    let script =
        "i=0; while [ $i -lt 100 ]; do sleep 20 & echo started; i=$((i+1)); done 2>/dev/null";
    let out = t.sh(&["--pids", "20"], script);
    let n = stdout(&out).lines().filter(|l| *l == "started").count();
    assert!((1..20).contains(&n), "forks allowed: {n}");
    // A real fork bomb hits the cap (forks fail) and ends with PID 1, within
    // the bounded wait of `sh`; the host can still fork meanwhile.
    let bomb = t.sh(&["--pids", "30"], "b() { b | b & }; b; sleep 1");
    assert!(stderr(&bomb).contains("can't fork"), "{}", stderr(&bomb));
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
}

#[test]
fn limits_group_is_removed_after_run() {
    if !can_run("limits_group_is_removed_after_run") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = std::process::Command::new(crate::common::unifs_bin());
    cmd.arg("run")
        .arg("--pids")
        .arg("50")
        .arg("--root")
        .arg(t.root());
    cmd.args(["--", "/bin/cat", "/proc/self/cgroup"]);
    cmd.stdout(std::process::Stdio::piped());
    let child = super::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    let out = super::harness::wait_bounded(child, std::time::Duration::from_secs(30));
    let o = stdout(&out);
    // Inside its cgroup namespace the guest's group is its root.
    assert!(o.lines().any(|l| l.ends_with(":pids:/")), "{o}");
    for base in [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
    ] {
        let left = super::harness::run_group(std::path::Path::new(base), pid);
        assert!(left.is_none(), "{left:?} left behind");
    }
}

/// Starts `unifs run OPTS` of a command that runs until told to end, and
/// returns the control file `file` of its group in one of `hierarchies`,
/// read while it runs.
fn control_file_while_running(
    t: &TestRoot,
    opts: &[&str],
    hierarchies: &[&str],
    file: &str,
) -> Option<String> {
    let go = t.root().join("tmp/go");
    let mut cmd = std::process::Command::new(crate::common::unifs_bin());
    cmd.arg("run").args(opts).arg("--root").arg(t.root());
    // Running until the test has looked (a timed command could end first
    // on a loaded machine); waited for, not killed.
    cmd.args([
        "--",
        "/bin/sh",
        "-c",
        "while [ ! -e /tmp/go ]; do sleep 0.05; done",
    ]);
    let child = super::harness::KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    // The command runs in its leaf, its group's limits written before.
    super::harness::wait_for_descendant(pid, "sh");
    let found = hierarchies
        .iter()
        .filter_map(|h| super::harness::run_group(std::path::Path::new(h), pid))
        .filter(|g| super::harness::guest_joined(g))
        .find_map(|g| std::fs::read_to_string(g.join(file)).ok());
    // Let it finish (and clean up its groups) rather than kill it.
    std::fs::write(&go, "").unwrap();
    let out = super::harness::wait_bounded(child, std::time::Duration::from_secs(30));
    std::fs::remove_file(&go).unwrap();
    assert!(out.status.success());
    let left: Vec<_> = hierarchies
        .iter()
        .filter_map(|h| super::harness::run_group(std::path::Path::new(h), pid))
        .collect();
    assert!(left.is_empty(), "{left:?} left behind");
    found
}

#[test]
fn limits_cpus_sets_the_cfs_quota() {
    if !can_run("limits_cpus_sets_the_cfs_quota") {
        return;
    }
    let t = TestRoot::new();
    let v1 = control_file_while_running(
        &t,
        &["--cpus", "0.5"],
        &["/sys/fs/cgroup/cpu"],
        "cpu.cfs_quota_us",
    );
    let v2 = control_file_while_running(
        &t,
        &["--cpus", "0.5"],
        &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"],
        "cpu.max",
    );
    match (v1, v2) {
        (Some(q), _) => assert_eq!(q.trim(), "50000"),
        (None, Some(max)) => assert_eq!(max.trim(), "50000 100000"),
        (None, None) => panic!("no cpu limit found in any hierarchy"),
    }
}

#[test]
fn limits_io_weight_is_applied_or_refused_clearly() {
    if !can_run("limits_io_weight_is_applied_or_refused_clearly") {
        return;
    }
    let t = TestRoot::new();
    let out = t.sh(&["--io-weight", "200"], "echo ran");
    if out.status.success() {
        assert!(stdout(&out).contains("ran"));
        // Applied: one of the weight files holds it while the guest runs.
        let dirs = [
            "/sys/fs/cgroup/blkio",
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/unified",
        ];
        let weight = [
            "blkio.bfq.weight",
            "blkio.weight",
            "io.bfq.weight",
            "io.weight",
        ]
        .iter()
        .find_map(|f| control_file_while_running(&t, &["--io-weight", "200"], &dirs, f));
        let weight = weight.expect("no weight file found");
        assert!(weight.split_whitespace().any(|w| w == "200"), "{weight}");
    } else {
        // e.g. v1 blkio without BFQ: no weight file at all.
        let err = stderr(&out);
        assert!(err.contains("cannot apply --io-weight"), "{err}");
        assert!(
            !stdout(&out).contains("ran"),
            "must not run without the limit"
        );
    }
    let out = t.sh(&["--io-weight", "5"], "echo ran");
    assert!(
        stderr(&out).contains("must be 10..=1000"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn limits_groups_of_killed_runs_are_swept() {
    if !can_run("limits_groups_of_killed_runs_are_swept") {
        return;
    }
    let t = TestRoot::new();
    // A group as a SIGKILLed `unifs run` leaves it: no process, its PID gone
    // (above the largest PID Linux hands out).
    let parents: Vec<_> = ["/sys/fs/cgroup/pids/unifs", "/sys/fs/cgroup/unifs"]
        .iter()
        .map(std::path::Path::new)
        .filter(|p| {
            p.parent()
                .is_some_and(|h| h.join("pids.max").exists() || h.join("cgroup.procs").exists())
        })
        .collect();
    let _ = t.sh(&["--pids", "50"], "true");
    let stale: Vec<_> = parents
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| p.join("run-4194399"))
        .filter(|p| std::fs::create_dir(p).is_ok())
        .collect();
    // As a killed run leaves it: its processes were in the leaf below.
    for p in &stale {
        std::fs::create_dir(p.join("guest")).unwrap();
    }
    assert!(!stale.is_empty(), "no pids hierarchy to test in");
    ok(&t.sh(&["--pids", "50"], "true"));
    for p in &stale {
        assert!(!p.exists(), "{} not swept", p.display());
    }
}
