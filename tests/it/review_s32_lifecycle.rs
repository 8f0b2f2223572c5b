//! Review (session 32) of three lifecycle doubts the last review left
//! open: the sweep of killed runs' groups meeting a process SIGKILL cannot
//! end, a `stop` while an `exec` session is suspended, a `stop`
//! in a start's first moments.

use crate::guest::harness::{
    alive, can_run, cgroup_hierarchies, is_mounted, ok, stderr, stdout, wait_bounded, KillOnDrop,
    TestRoot,
};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::{stopped, within_60s};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A process left in the groups `unifs/run-DEAD-s32` of a `unifs run`
/// (pid DEAD) that is gone, frozen in a v1 freezer group of its own: SIGKILL
/// does not end it until that group is thawed. Dropping thaws and ends it
/// and removes the groups.
struct FrozenLeftover {
    child: Child,
    groups: Vec<PathBuf>,
    freezer: PathBuf,
}

impl FrozenLeftover {
    fn new(freezer_hierarchy: &std::path::Path) -> FrozenLeftover {
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        let mut gone = Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let mut left = FrozenLeftover {
            child,
            groups: Vec::new(),
            freezer: freezer_hierarchy.join(format!("s32-lifecycle-{}", std::process::id())),
        };
        let pid = left.child.id().to_string();
        for h in cgroup_hierarchies() {
            if h == freezer_hierarchy || !h.join("unifs").is_dir() {
                continue;
            }
            let group = h.join(format!("unifs/run-{}-s32", gone.id()));
            std::fs::create_dir(&group).unwrap();
            left.groups.push(group.clone());
            std::fs::write(group.join("cgroup.procs"), &pid).unwrap();
        }
        std::fs::create_dir(&left.freezer).unwrap();
        std::fs::write(left.freezer.join("cgroup.procs"), &pid).unwrap();
        let state = left.freezer.join("freezer.state");
        std::fs::write(&state, "FROZEN").unwrap();
        assert!(
            within_60s(|| std::fs::read_to_string(&state).is_ok_and(|s| s.trim() == "FROZEN")),
            "{} never froze",
            left.freezer.display()
        );
        left
    }
}

impl Drop for FrozenLeftover {
    fn drop(&mut self) {
        let _ = std::fs::write(self.freezer.join("freezer.state"), "THAWED");
        let _ = self.child.kill();
        let _ = self.child.wait();
        for g in self.groups.iter().chain([&self.freezer]) {
            let _ = within_60s(|| !g.exists() || std::fs::remove_dir(g).is_ok());
        }
    }
}

/// The sweep of killed runs' groups (every `unifs run` and `guest start`)
/// took a run's group in each hierarchy on its own: a process SIGKILL
/// cannot end (D state: on a FUSE mount that does not answer, frozen in a
/// v1 freezer group) was killed, waited for 2 s and warned about once per
/// hierarchy, 9 times here: every run and start took 18 s while it was
/// there, with 9 `killing …` lines and never a word of what kept it. Now a
/// run's groups are taken together: one kill, one wait, one warning naming
/// the process and what to do, and no wait at all once it was killed before.
#[test]
fn s32_a_dead_runs_unkillable_process_costs_one_wait_and_one_warning() {
    let test = "s32_a_dead_runs_unkillable_process_costs_one_wait_and_one_warning";
    if !can_run(test) {
        return;
    }
    let Some(freezer) = crate::review_s27_cgroup::v1_hierarchy(test, "freezer") else {
        return;
    };
    let t = TestRoot::new();
    // Makes `unifs/` in every hierarchy.
    ok(&t.sh(&["--root-mount", "bind"], "true"));
    let left = FrozenLeftover::new(&freezer);
    let pid = left.child.id();
    // Lines about this process only: a test beside this one may leave
    // one of its own to the sweep (review_s34_keeper's frozen guest).
    let ours = |l: &str| l.contains(&format!("process {pid} (")) || l.contains(&format!("[{pid}]"));
    let says = |err: &str, what: &str| err.lines().filter(|l| l.contains(what) && ours(l)).count();
    for round in ["first", "second"] {
        let o = t.sh(&["--root-mount", "bind"], "true");
        let err = stderr(&o);
        assert!(o.status.success(), "{round} run: {err}");
        assert!(
            says(&err, "killing") <= 1 && says(&err, "survived SIGKILL") == 1,
            "{round} run: one kill and one warning for the run's groups in every hierarchy: {err}"
        );
        assert!(
            err.contains(&format!("process {pid} (sleep)"))
                && err.contains(&format!("{}/freezer.state", left.freezer.display())),
            "{round} run names the process and the group to thaw: {err}"
        );
    }
    assert!(
        alive(pid.into()),
        "the frozen process ended before its thaw"
    );
    let groups = left.groups.clone();
    drop(left);
    let after = t.sh(&["--root-mount", "bind"], "true");
    assert!(after.status.success(), "{}", stderr(&after));
    assert!(!stderr(&after).lines().any(ours), "{}", stderr(&after));
    for g in groups {
        assert!(!g.exists(), "{} left", g.display());
    }
}

/// `guest exec G -- CMD` suspended (SIGSTOP to the `unifs` process the
/// shell runs: `kill -STOP`, a debugger; it ignores Ctrl-Z's SIGTSTP) made `guest stop G` take 15 s and warn
/// `the overlay daemon of …/root (pid N) did not end after the unmount;
/// killing it`. The session's process had joined the guest's mount
/// namespace and stayed there: stopped, it kept that namespace, and the
/// guest's root in it, alive after the unmount, so the daemon served on
/// (`unifs umount` waited 10 s for it, `stop` 5 s more). It goes back to
/// its own mount namespace once its helper is forked: `stop` ends the
/// guest at once, and the session, continued, ends with status 137 as its
/// killed command did.
#[test]
fn s32_stop_of_a_guest_whose_exec_session_is_suspended_ends_at_once() {
    if !can_run("s32_stop_of_a_guest_whose_exec_session_is_suspended_ends_at_once") {
        return;
    }
    let g = Guest::new("suspended", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.init_pid();
    let (session, _) = g.exec_sleep();
    let pid = session.0.as_ref().unwrap().id();
    let go_on = Continue(pid as i32);
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    assert!(within_60s(|| stopped(pid)), "the session never stopped");

    let began = std::time::Instant::now();
    let o = g.unifs(&["stop", "--timeout", "0", &g.name]);
    let took = began.elapsed();
    let err = stderr(&o);
    assert!(o.status.success(), "stop: {err}");
    assert!(
        !err.contains("overlay daemon"),
        "stop had to kill the overlay daemon (after {took:?}): {err}"
    );
    assert!(!is_mounted(&g.run(&g.name).join("root")));
    assert!(!g.run(&g.name).join("state.json").exists(), "record left");
    assert!(!alive(init), "init {init} lives");
    assert!(stopped(pid), "stop touched the suspended session");
    drop(go_on);
    let o = wait_bounded(session, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
}

/// `guest stop G` while a `start` of G was at work but had not yet mounted
/// its root (its first moments: the sweep, the cgroups, a slow mount) said
/// `guest G is not running`, and the start then went on: G ran, though
/// the operator (or a script's `stop; start` with new settings) was told
/// otherwise. `stop` now waits for the start (the lock file says `start`,
/// as status reads it), then stops the guest it started. The window is
/// held by the start, told to by UNIFS_TEST_START_LOCKED_STOP, stopping
/// itself right after it took the lock.
#[test]
fn s32_stop_during_a_starts_first_moments_waits_and_stops_it() {
    if !can_run("s32_stop_during_a_starts_first_moments_waits_and_stops_it") {
        return;
    }
    let g = Guest::new("early", SLEEP);
    let mut start = g.command();
    start.args(["start", &g.name]);
    start.env("UNIFS_TEST_START_LOCKED_STOP", "1");
    start
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = KillOnDrop(Some(start.spawn().unwrap()));
    let pid = start.0.as_ref().unwrap().id();
    let go_on = Continue(pid as i32);
    assert!(within_60s(|| stopped(pid)), "the start never took its lock");

    let mut stop = g.command();
    stop.args(["stop", "--timeout", "0", &g.name]);
    stop.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut stop = KillOnDrop(Some(stop.spawn().unwrap()));
    // It must wait for the start: still at work a moment later.
    std::thread::sleep(Duration::from_millis(500));
    let early = stop.0.as_mut().unwrap().try_wait().unwrap();
    drop(go_on);
    let started = wait_bounded(start, Duration::from_secs(60));
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(
        early.is_none() && o.status.success(),
        "stop during a start ({early:?}): {} {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(started.status.success(), "start: {}", stderr(&started));
    let o = g.unifs(&["status", &g.name]);
    assert!(
        stdout(&o).contains("state:   stopped"),
        "the stopped guest runs: {}",
        stdout(&o)
    );
    assert!(!is_mounted(&g.run(&g.name).join("root")));
}
