//! Resource limits through cgroups (v1 on these machines, v2 elsewhere).

use super::harness::{can_run, stderr, stdout, TestRoot};

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
    // A real fork bomb ends too, taken down with PID 1.
    let bomb = t.sh(&["--pids", "30"], "b() { b | b & }; b; sleep 1; echo alive");
    assert!(stdout(&bomb).contains("alive"), "{}", stderr(&bomb));
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
    let group = format!("run-{}", child.0.as_ref().unwrap().id());
    let out = super::harness::wait_bounded(child, std::time::Duration::from_secs(20));
    let o = stdout(&out);
    // Inside its cgroup namespace the guest's group is its root.
    assert!(o.lines().any(|l| l.ends_with(":pids:/")), "{o}");
    for base in [
        "/sys/fs/cgroup/pids/unifs",
        "/sys/fs/cgroup/unifs",
        "/sys/fs/cgroup/unified/unifs",
    ] {
        let dir = std::path::Path::new(base).join(&group);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
