//! Review s22: `guest status` and `guest exec` tell a guest's overlay daemon
//! that is busy from one that is gone or stopped.
//!
//! The daemon is made busy deterministically: strace holds back each of its
//! fstatfs calls (what the probe's statfs becomes) for a set time, while its
//! other threads serve on. Every guest stops, and strace ends, on drop.

use super::harness::{
    all_threads_stopped, ok, run_bounded, stderr, stdout, within_30s, KillOnDrop,
};
use super::review_s11_life::{entry, gone, mount_daemon, Continue, Guest, SLEEP};
use std::process::Command;
use std::time::{Duration, Instant};

/// strace attached to every thread of `daemon`, holding back each of its
/// fstatfs calls for `hold` (ended on drop). None: no strace here.
pub(super) fn hold_statfs(test: &str, daemon: i32, hold: Duration) -> Option<KillOnDrop> {
    if !crate::common::require_strace(test) {
        return None;
    }
    let strace = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fstatfs"])
        .arg("-e")
        .arg(format!("inject=fstatfs:delay_enter={}", hold.as_micros()))
        .arg("-p")
        .arg(daemon.to_string())
        .spawn()
        .unwrap();
    let strace = KillOnDrop(Some(strace));
    // Attached once every thread has a tracer.
    let traced = || {
        let tasks = std::fs::read_dir(format!("/proc/{daemon}/task")).unwrap();
        tasks.flatten().all(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            status
                .lines()
                .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !traced() {
        assert!(
            Instant::now() < deadline,
            "strace did not attach to {daemon}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(strace)
}

/// `guest status --json NAME`: its exit status and the guest's entry.
fn status_json(g: &Guest) -> (Option<i32>, serde_json::Value) {
    let o = g.unifs(&["status", "--json", &g.name]);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}\n{}\n{}", stdout(&o), stderr(&o)));
    (o.status.code(), v)
}

/// A daemon that runs but answered statfs only after 3 s (one of its
/// threads busy, as in a long break or under a guest's flood of requests)
/// was taken for a lost root: `guest status` said "running (root lost)",
/// `"root_lost": true`, exit 4, and `guest exec` refused the guest after
/// 1 s with "has died or does not answer".
#[test]
fn review_s22_a_busy_overlay_daemon_is_not_taken_for_a_lost_root() {
    let test = "review_s22_a_busy_overlay_daemon_is_not_taken_for_a_lost_root";
    if !super::harness::can_run(test) {
        return;
    }
    let g = Guest::new("busy", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let daemon = mount_daemon(&g.run(&g.name).join("root"));
    let Some(_strace) = hold_statfs(test, daemon, Duration::from_secs(3)) else {
        return;
    };

    let (code, s) = status_json(&g);
    assert_eq!(s["running"], true, "{s}");
    assert_eq!(s["root_lost"], false, "{s}");
    assert_eq!(s["root_busy"], true, "{s}");
    assert_eq!(code, Some(0), "a busy root serves: {s}");
    let o = g.unifs(&["status", &g.name]);
    assert!(stdout(&o).contains("running (root busy)"), "{}", stdout(&o));
    assert!(stderr(&o).contains("busy"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // `exec` waits for it, and runs the command.
    let started = Instant::now();
    let o = g.unifs(&["exec", &g.name, "--", "/bin/echo", "served"]);
    assert_eq!(ok(&o).trim(), "served", "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(25));
}

/// The wait for a busy daemon is bounded: one that has not answered after
/// 30 s is refused, and the message says it runs and is busy (or hung),
/// not that it died.
#[test]
fn review_s22_exec_waits_for_a_busy_daemon_only_so_long() {
    let test = "review_s22_exec_waits_for_a_busy_daemon_only_so_long";
    if !super::harness::can_run(test) {
        return;
    }
    let g = Guest::new("slow", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let daemon = mount_daemon(&g.run(&g.name).join("root"));
    let Some(strace) = hold_statfs(test, daemon, Duration::from_secs(60)) else {
        return;
    };
    let mut exec = g.command();
    exec.args(["exec", &g.name, "--", "/bin/true"]);
    let started = Instant::now();
    let o = run_bounded(exec, Duration::from_secs(50));
    let took = started.elapsed();
    drop(strace);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        took >= Duration::from_secs(30),
        "refused after {took:?}: {err}"
    );
    assert!(took < Duration::from_secs(45), "{took:?}");
    assert!(
        err.contains(&format!("pid {daemon}")) && err.contains("busy") && err.contains("30 s"),
        "says which case it is: {err}"
    );
    assert!(!err.contains("died"), "{err}");
    assert!(err.contains("try again"), "says what to do: {err}");
    // Let go, it serves again.
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/true"]));
}

/// A stopped daemon and a killed one are still a lost root, at once (a
/// stopped daemon is not waited for as a busy one), and `exec` says which.
#[test]
fn review_s22_a_stopped_or_killed_daemon_is_still_a_lost_root() {
    if !super::harness::can_run("review_s22_a_stopped_or_killed_daemon_is_still_a_lost_root") {
        return;
    }
    let g = Guest::new("stopd", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let daemon = mount_daemon(&g.run(&g.name).join("root"));
    let pid = nix::unistd::Pid::from_raw(daemon);

    let stopped = Continue(daemon);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // The stop reaches each thread when it next runs: a loaded machine let
    // a status probe in before it, which the daemon rightly answered.
    assert!(
        within_30s(|| all_threads_stopped(daemon)),
        "daemon {daemon} not stopped"
    );
    let (code, s) = status_json(&g);
    assert_eq!(
        (s["root_lost"].clone(), s["root_busy"].clone()),
        (true.into(), false.into()),
        "{s}"
    );
    assert_eq!(code, Some(4), "{s}");
    let o = g.unifs(&["status", &g.name]);
    assert!(stdout(&o).contains("running (root lost)"), "{}", stdout(&o));
    assert!(stderr(&o).contains("stopped"), "{}", stderr(&o));
    let started = Instant::now();
    let o = g.unifs(&["exec", &g.name, "--", "/bin/true"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains("does not answer")
            && err.contains(&format!("pid {daemon}) is stopped"))
            && err.contains(&format!("kill -CONT {daemon}")),
        "says which case it is and what to do: {err}"
    );
    drop(stopped);
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/true"]));

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(gone(daemon as i64));
    let (code, s) = status_json(&g);
    assert_eq!(
        (s["root_lost"].clone(), s["root_busy"].clone()),
        (true.into(), false.into()),
        "{s}"
    );
    assert_eq!(code, Some(4), "{s}");
    let (all, _) = g.list();
    assert_eq!(entry(&all, &g.name)["root_lost"], true, "{all}");
    let o = g.unifs(&["exec", &g.name, "--", "/bin/true"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("has died") && err.contains("guest stop"),
        "{err}"
    );
}
