//! Review (session 34) of `unifs run`'s keeper: a keeper that could not end
//! a killed run's guest, or failed in its own code, said so to nobody (its
//! output went to /dev/null); a keeper killed while the run went on left the
//! guest untied without a word; and `unifs run` died of SIGPIPE when its
//! guest's first process was gone before the run let it go.

use crate::common::unifs_bin;
use crate::guest::harness::{
    alive, can_run, run_bounded, stderr, wait_bounded, wait_for_descendant, within_30s, KillOnDrop,
    TestRoot,
};
use crate::guest::review_s11_life::Continue;
use crate::guest::review_s21_keeper::{child_named, run_groups, Leftovers};
use crate::review_s31_doubts::{stopped, within_60s};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A v1 freezer group of its own, frozen, holding `pid`: SIGKILL does not
/// end it until the group is thawed. Dropping thaws it and removes the group.
pub(crate) struct Frozen(pub(crate) PathBuf);

impl Frozen {
    pub(crate) fn new(hierarchy: &Path, name: &str, pid: u32) -> Frozen {
        let frozen = Frozen(hierarchy.join(name));
        std::fs::create_dir(&frozen.0).unwrap();
        std::fs::write(frozen.0.join("cgroup.procs"), pid.to_string()).unwrap();
        let state = frozen.0.join("freezer.state");
        std::fs::write(&state, "FROZEN").unwrap();
        assert!(
            within_60s(|| std::fs::read_to_string(&state).is_ok_and(|s| s.trim() == "FROZEN")),
            "{} never froze",
            frozen.0.display()
        );
        frozen
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        let _ = within_60s(|| !self.0.exists() || std::fs::remove_dir(&self.0).is_ok());
    }
}

/// `unifs run --root-mount bind` of `command` with the run dir `run_dir`
/// and `env`, its stdin /dev/null, its output piped.
pub(crate) fn spawn_run(
    t: &TestRoot,
    run_dir: &Path,
    env: &[(&str, &str)],
    command: &[&str],
) -> KillOnDrop {
    let mut run = Command::new(unifs_bin());
    run.arg("run").arg("--root").arg(t.root());
    run.args(["--root-mount", "bind", "--"]).args(command);
    run.env("UNIFS_RUN_DIR", run_dir).envs(env.iter().copied());
    run.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    KillOnDrop(Some(run.spawn().unwrap()))
}

/// `unifs run --root-mount bind -- /bin/true` with the run dir `run_dir`.
pub(crate) fn next_run(t: &TestRoot, run_dir: &Path) -> Output {
    let mut run = Command::new(unifs_bin());
    run.arg("run").arg("--root").arg(t.root());
    run.args(["--root-mount", "bind", "--", "/bin/true"]);
    run.env("UNIFS_RUN_DIR", run_dir);
    run_bounded(run, Duration::from_secs(60))
}

/// The keeper's reports of the run `pid` in `run_dir`.
pub(crate) fn reports(run_dir: &Path, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("run-{pid}-");
    std::fs::read_dir(run_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with(&prefix) && name.ends_with(".keeper")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A run of `sleep 1000` (with `env`), its pids, and what to clean up
/// should the test fail.
pub(crate) struct SleepingRun {
    run: KillOnDrop,
    pub(crate) pid: u32,
    pub(crate) guest: u32,
    pub(crate) keeper: u32,
    left: Leftovers,
}

impl SleepingRun {
    pub(crate) fn new(t: &TestRoot, run_dir: &Path, env: &[(&str, &str)]) -> SleepingRun {
        let run = spawn_run(t, run_dir, env, &["/bin/sleep", "1000"]);
        let pid = run.0.as_ref().unwrap().id();
        let guest = wait_for_descendant(pid, "sleep");
        let keeper = child_named(pid, "unifs-keeper").expect("the run's keeper");
        let left = Leftovers {
            guest: Some(guest as i32),
            groups: run_groups(pid),
        };
        SleepingRun {
            run,
            pid,
            guest,
            keeper,
            left,
        }
    }

    /// Kills `unifs run` with SIGKILL; waits for its keeper to end.
    fn kill(&mut self) {
        self.kill_run();
        let keeper = self.keeper;
        assert!(
            within_60s(|| !alive(keeper.into())),
            "the keeper {keeper} never ended"
        );
    }

    /// Kills `unifs run` with SIGKILL, and reaps it.
    pub(crate) fn kill_run(&mut self) {
        let mut run = self.run.0.take().unwrap();
        run.kill().unwrap();
        let _ = run.wait();
    }

    /// The test cleaned up.
    pub(crate) fn done(mut self) {
        self.left.guest = None;
        self.left.groups.clear();
    }
}

/// A keeper that could not end a killed run's guest (a process SIGKILL
/// does not end: frozen in a v1 freezer group outside the run's groups)
/// gave up after 5 s and ended without a word: its output went to
/// /dev/null, and the next run's sweep, finding the process gone by then,
/// removed the groups silently. Now the keeper leaves a report in the run
/// dir (RUN_DIR/run-PID-TAG.keeper) saying what survived and why, which the
/// next `unifs run` (or `guest start`) shows once and removes.
#[test]
fn s34_a_keeper_that_cannot_end_the_guest_tells_the_next_run() {
    let test = "s34_a_keeper_that_cannot_end_the_guest_tells_the_next_run";
    if !can_run(test) {
        return;
    }
    let Some(freezer) = crate::review_s27_cgroup::v1_hierarchy(test, "freezer") else {
        return;
    };
    let t = TestRoot::new();
    let run_dir = t.dir.path().join("run");
    let mut run = SleepingRun::new(&t, &run_dir, &[]);
    let (pid, guest) = (run.pid, run.guest);
    let name = format!("s34-frozen-{}", std::process::id());
    let frozen = Frozen::new(&freezer, &name, guest);
    run.kill();
    assert!(alive(guest.into()), "the frozen guest ended");
    let report = reports(&run_dir, pid);
    assert_eq!(report.len(), 1, "no report of the keeper in {run_dir:?}");
    // Thawed, it ends (its SIGKILL pending): the next run finds nothing
    // left to warn about but what the keeper said.
    drop(frozen);
    assert!(
        within_30s(|| !alive(guest.into())),
        "the thawed guest lives"
    );
    let o = next_run(&t, &run_dir);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("keeper of the"))
        .collect();
    assert!(
        said.len() == 1
            && said[0].contains(&format!(
                "the killed `unifs run` (pid {pid}, groups unifs/run-"
            ))
            && said[0].contains(&format!("process {guest} (sleep)"))
            && said[0].contains(&format!("{}/{name}/freezer.state", freezer.display())),
        "{err}"
    );
    assert!(!report[0].exists(), "the report was left");
    assert!(
        within_30s(|| run_groups(pid).is_empty()),
        "{:?}",
        run_groups(pid)
    );
    let again = next_run(&t, &run_dir);
    assert!(
        !stderr(&again).contains("keeper of the"),
        "{}",
        stderr(&again)
    );
    run.done();
}

/// A panic in the keeper once its run was killed went to /dev/null. It is
/// in the keeper's report now, which the next run shows.
#[test]
fn s34_a_keeper_that_fails_after_a_killed_run_tells_the_next_run() {
    if !can_run("s34_a_keeper_that_fails_after_a_killed_run_tells_the_next_run") {
        return;
    }
    let t = TestRoot::new();
    let run_dir = t.dir.path().join("run");
    let panic = [("UNIFS_TEST_CHILD_PANIC", "run-keeper-end")];
    let mut run = SleepingRun::new(&t, &run_dir, &panic);
    let (pid, guest, keeper) = (run.pid, run.guest, run.keeper);
    run.kill();
    assert!(within_30s(|| !alive(guest.into())), "the guest lives");
    assert!(run_groups(pid).is_empty(), "{:?}", run_groups(pid));
    let o = next_run(&t, &run_dir);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the keeper of `unifs run` (pid {keeper}) failed on an internal"
        )) && err.contains("UNIFS_TEST_CHILD_PANIC=run-keeper-end at "),
        "{err}"
    );
    assert!(reports(&run_dir, pid).is_empty());
    run.done();
}

/// A keeper killed while its run went on (an operator's `kill -9` of a
/// stray-looking `unifs-keeper`, the OOM killer) left the guest untied to
/// the run without a word: a SIGKILL of the run would then leave the guest
/// running. The run says so at once, once, with how to end the guest; it
/// still ends with its command's status and removes its groups.
#[test]
fn s34_a_run_whose_keeper_is_killed_says_so_once() {
    if !can_run("s34_a_run_whose_keeper_is_killed_says_so_once") {
        return;
    }
    let t = TestRoot::new();
    let run_dir = t.dir.path().join("run");
    let script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 3";
    let run = spawn_run(&t, &run_dir, &[], &["/bin/sh", "-c", script]);
    let pid = run.0.as_ref().unwrap().id();
    let guest = wait_for_descendant(pid, "sh");
    let keeper = child_named(pid, "unifs-keeper").expect("the run's keeper");
    kill(Pid::from_raw(keeper as i32), Signal::SIGKILL).unwrap();
    assert!(within_30s(|| !alive(keeper.into())), "the keeper lives");
    std::fs::write(t.root().join("tmp/go"), "").unwrap();
    let o = wait_bounded(run, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("keeper of this"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].contains(&format!("(unifs-keeper, pid {keeper})"))
            && said[0].contains(&format!("kill -KILL {guest}")),
        "{err}"
    );
    assert!(run_groups(pid).is_empty(), "{:?}", run_groups(pid));
}

/// `unifs run` wrote its go to its guest's first process on a pipe: gone
/// (killed) before that, its SIGPIPE killed `unifs run` (SIGPIPE is at
/// its default, for `unifs … | head`), leaving its keeper to clean up.
/// The go is sent on a socket without SIGPIPE now: the run fails saying
/// the guest's first process ended, and removes its groups itself.
#[test]
fn s34_a_run_whose_guest_is_gone_before_its_go_does_not_die_of_sigpipe() {
    if !can_run("s34_a_run_whose_guest_is_gone_before_its_go_does_not_die_of_sigpipe") {
        return;
    }
    let t = TestRoot::new();
    let run_dir = t.dir.path().join("run");
    let stop = [("UNIFS_TEST_CLONE_STOP", "1")];
    let run = spawn_run(&t, &run_dir, &stop, &["/bin/true"]);
    let pid = run.0.as_ref().unwrap().id();
    let go_on = Continue(pid as i32);
    assert!(within_60s(|| stopped(pid)), "the run never stopped");
    let keeper = child_named(pid, "unifs-keeper").expect("the run's keeper");
    let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let guest: Vec<i32> = kids
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .filter(|&k: &i32| k != keeper as i32)
        .collect();
    assert_eq!(guest.len(), 1, "children of the run: {kids}");
    kill(Pid::from_raw(guest[0]), Signal::SIGKILL).unwrap();
    assert!(
        within_30s(|| !alive(guest[0].into())),
        "the guest's process lives"
    );
    drop(go_on);
    let o = wait_bounded(run, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.signal(), None, "unifs run was killed: {err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the guest's first process (pid {})", guest[0])),
        "{err}"
    );
    assert!(
        within_30s(|| run_groups(pid).is_empty()),
        "{:?}",
        run_groups(pid)
    );
    assert!(within_30s(|| !alive(keeper.into())), "the keeper lives");
}
