//! Review (session 44) of a run's keeper and the sweep of dead runs.
//!
//! The sweep told a run dead by /proc/PID, which is of the looking
//! process's PID namespace: the groups of a run still starting, made by a
//! unifs older than session 43's (which locked them only once its keeper
//! ran), were removed by a run in another namespace (`run-PID-TAG/guest:
//! ENOENT` for that run). And a panic in a named guest's keeper's thread for
//! signals ended that thread alone: every signal sent to the keeper then
//! stayed pending for good (a `systemctl stop` waited its whole timeout)
//! while the guest looked well.

use crate::guest::harness::{alive, can_run, ok, run_bounded, stderr, KillOnDrop, TestRoot};
use crate::guest::review_s11_life::Guest;
use crate::review_s31_doubts::within_60s;
use crate::review_s38_halt::{init_and_keeper, nothing_left, stopped_by_its_keeper};
use crate::review_s38_keeperkill::signal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The groups `run-PID-TAG` (and its `guest` leaf) an older unifs makes
/// in the pids hierarchy before its guest joins: empty, and unlocked until
/// its keeper runs. Removed on drop.
struct StartingGroups(PathBuf);

impl StartingGroups {
    /// Or None (said) on a host without a v1 pids hierarchy.
    fn new(test: &str, t: &TestRoot, pid: u32, tag: &str) -> Option<StartingGroups> {
        let pids = Path::new("/sys/fs/cgroup/pids");
        if !pids.join("pids.max").exists() && !pids.join("cgroup.procs").exists() {
            crate::common::skip(test, "needs the v1 pids hierarchy");
            return None;
        }
        // A run with a pids limit makes unifs/ there.
        ok(&t.sh(&["--pids", "50"], "true"));
        let group = pids.join("unifs").join(format!("run-{pid}-{tag}"));
        std::fs::create_dir(&group).unwrap();
        let groups = StartingGroups(group);
        std::fs::create_dir(groups.0.join("guest")).unwrap();
        Some(groups)
    }

    fn there(&self) -> bool {
        self.0.join("guest").is_dir()
    }
}

impl Drop for StartingGroups {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.0.join("guest"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `unifs run --pids 50` of `t` (its sweep looks beside its pids group),
/// in a PID namespace of its own if `unshared`; it must succeed.
fn run_with_pids(t: &TestRoot, unshared: bool) {
    let mut cmd = match unshared {
        true => {
            let mut cmd = Command::new("unshare");
            cmd.args(["-pf", "--mount-proc"])
                .arg(crate::common::unifs_bin());
            cmd
        }
        false => Command::new(crate::common::unifs_bin()),
    };
    cmd.args(["run", "--pids", "50", "--root-mount", "bind", "--root"])
        .arg(t.root())
        .args(["--", "/bin/true"]);
    let o = run_bounded(cmd, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// An older unifs's run of the host's PID namespace, still starting (its
/// groups made, empty, no keeper yet to lock them), and a `unifs run` in a
/// PID namespace of its own, which sees no /proc/PID for it: the run's
/// groups stay. Before, they were taken for a dead run's and removed.
#[test]
fn s44_a_run_in_a_pid_namespace_leaves_an_older_runs_starting_groups_alone() {
    let test = "s44_a_run_in_a_pid_namespace_leaves_an_older_runs_starting_groups_alone";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    // The older run's `unifs run`: a process of ours, in our namespace.
    let older = KillOnDrop(Some(
        Command::new("sleep")
            .arg("120")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let pid = older.0.as_ref().unwrap().id();
    let Some(groups) = StartingGroups::new(test, &t, pid, "5440a001") else {
        return;
    };
    run_with_pids(&t, true);
    assert!(
        groups.there(),
        "the run in a PID namespace removed {:?}",
        groups.0
    );
}

/// The other way round: an older unifs's run in a PID namespace below
/// ours, starting (its pid there, 4000001, is no pid of ours), and a
/// `unifs run` here: its groups stay. Before, they were removed.
#[test]
fn s44_a_run_leaves_the_starting_groups_of_an_older_run_in_a_namespace_below() {
    let test = "s44_a_run_leaves_the_starting_groups_of_an_older_run_in_a_namespace_below";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let said = t.dir.path().join("pid");
    // Its `unifs run`, given pid 4000001 of its namespace.
    let script = format!(
        "echo 4000000 > /proc/sys/kernel/ns_last_pid; sleep 120 & echo $! > {}; wait",
        said.display()
    );
    let _older = KillOnDrop(Some(
        Command::new("unshare")
            .args(["-pf", "--kill-child", "--mount-proc", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let mut pid = 0u32;
    assert!(
        within_60s(|| {
            let text = std::fs::read_to_string(&said).unwrap_or_default();
            pid = text.trim().parse().unwrap_or(0);
            pid != 0
        }),
        "the process in the namespace below never said its pid"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} of the namespace below is one of ours too: nothing to test"
    );
    let Some(groups) = StartingGroups::new(test, &t, pid, "5440a002") else {
        return;
    };
    run_with_pids(&t, false);
    assert!(groups.there(), "the run removed {:?}", groups.0);
}

/// A named guest's init that ends on SIGTERM (its default stop signal).
pub(crate) const ENDS_ON_TERM: &str =
    r#"["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]"#;

/// The keeper's thread for signals panics on the first signal it takes
/// (UNIFS_TEST_CHILD_PANIC=keeper-signals): the keeper stops the guest
/// (init's stop signal), says why in the console log and in `last_exit`,
/// and ends. Before, that thread alone ended: the guest ran on, deaf to
/// every later signal to its keeper.
#[test]
fn s44_a_panic_in_the_keepers_signals_thread_stops_the_guest() {
    let test = "s44_a_panic_in_the_keepers_signals_thread_stops_the_guest";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s44sigpanic", ENDS_ON_TERM);
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_CHILD_PANIC", "keeper-signals");
    ok(&run_bounded(start, Duration::from_secs(30)));
    let (init, keeper) = init_and_keeper(&g);
    signal(keeper, libc::SIGUSR1);
    let st = stopped_by_its_keeper(&g);
    assert_eq!(st["last_exit"]["pid"], init, "{st}");
    let failed = st["last_exit"]["keeper_failed"].as_str().unwrap_or("");
    assert!(
        failed.contains("its thread signals failed: UNIFS_TEST_CHILD_PANIC=keeper-signals"),
        "{st}"
    );
    // Its stop signal, which init took: no SIGKILL.
    assert_eq!(st["last_exit"]["code"], 0, "{st}");
    nothing_left(&g);
    assert!(within_60s(|| !alive(keeper.into())), "the keeper lives");
    let log = std::fs::read_to_string(g.run(&g.name).join("console.log")).unwrap_or_default();
    assert!(
        log.contains("its keeper failed on an internal error in its thread signals"),
        "{log}"
    );
    let status = g.unifs(&["status", &g.name]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("stopped by its keeper, which failed"),
        "{status:?}"
    );
}

/// `unifs run`'s thread that passes signals on to the guest panics on the
/// first one (UNIFS_TEST_CHILD_PANIC=run-signals): the run says so,
/// stops the guest (its stop signal) and exits 101. Before, that thread
/// ended alone: the signal, and every later one, never reached the guest,
/// which ran on, the run with it.
#[test]
fn s44_a_panic_in_the_runs_signals_thread_stops_the_guest() {
    let test = "s44_a_panic_in_the_runs_signals_thread_stops_the_guest";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.args(["run", "--root-mount", "bind", "--root"])
        .arg(t.root())
        .args(["--", "/bin/sh", "-c"])
        .arg("touch /tmp/up; trap 'exit 0' TERM; while :; do sleep 1; done")
        .env("UNIFS_TEST_CHILD_PANIC", "run-signals")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = run.0.as_ref().unwrap().id();
    assert!(
        within_60s(|| t.root().join("tmp/up").exists()),
        "the guest never ran"
    );
    signal(pid, libc::SIGINT);
    let o = crate::guest::harness::wait_bounded(run, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(101), "{err}");
    assert!(
        err.contains("`unifs run` failed on an internal error in its thread signals"),
        "{err}"
    );
}
