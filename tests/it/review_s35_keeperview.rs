//! Review (session 35) of what session 34 left of `unifs run`'s keeper
//! reports: `guest list` and `status` said nothing of them; a keeper killed
//! at its work was told of only by a run 10 s later, untested; and a
//! sweep of another run or start took on a dead run's groups while that
//! run's keeper was still at work on them.

use crate::guest::harness::{alive, can_run, stderr, stdout, within_30s, TestRoot};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::guest::review_s21_keeper::run_groups;
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s34_keeper::{next_run, reports, Frozen, SleepingRun};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;

/// The test hook that stops a keeper at work: its report made, nothing
/// done yet.
const KEEPER_STOP: [(&str, &str); 1] = [("UNIFS_TEST_KEEPER_STOP", "1")];

/// A sleeping run in `run_dir`, its guest frozen (in a v1 freezer group of
/// its own: the run's death, whose signal ends the guest's PID 1, does not
/// end it until thawed), killed with SIGKILL, its keeper stopped at work (a
/// guard lets it go on should the test fail). None without a v1 freezer.
fn killed_run_with_keeper_stopped(
    test: &str,
    t: &TestRoot,
    run_dir: &Path,
) -> Option<(SleepingRun, Frozen, Continue)> {
    let freezer = crate::review_s27_cgroup::v1_hierarchy(test, "freezer")?;
    let mut run = SleepingRun::new(t, run_dir, &KEEPER_STOP);
    let name = format!("s35-frozen-{}-{}", std::process::id(), run.pid);
    let frozen = Frozen::new(&freezer, &name, run.guest);
    let go_on = Continue(run.keeper as i32);
    run.kill_run();
    let keeper = run.keeper;
    assert!(
        within_60s(|| stopped(keeper)),
        "the keeper {keeper} never stopped at work"
    );
    Some((run, frozen, go_on))
}

/// SIGKILLs the keeper `pid` and waits for it to end.
fn kill_keeper(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    assert!(within_30s(|| !alive(pid.into())), "the keeper {pid} lives");
}

/// The keeper lines of `err`: those naming the killed run `pid`.
fn about_run(err: &str, pid: u32) -> Vec<&str> {
    let run = format!("the killed `unifs run` (pid {pid}, groups unifs/run-{pid}-");
    err.lines().filter(|l| l.contains(&run)).collect()
}

/// A keeper killed at its work (an operator's `kill -9`, the OOM killer)
/// leaves its report empty. The next run skipped an empty report for 10 s
/// (a keeper may have made it without locking it yet), so the run right
/// after said nothing of it, and this path was never tested. The keeper
/// now writes a first line (its pid) once it holds the report: a report
/// with that line alone, not locked, is a keeper that ended before it was
/// done, which the next run says at once.
#[test]
fn s35_a_keeper_killed_at_work_is_told_by_the_next_run() {
    let test = "s35_a_keeper_killed_at_work_is_told_by_the_next_run";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let run_dir = t.dir.path().join("run");
    let Some((run, frozen, _go_on)) = killed_run_with_keeper_stopped(test, &t, &run_dir) else {
        return;
    };
    let (pid, guest) = (run.pid, run.guest);
    kill_keeper(run.keeper);
    let report = reports(&run_dir, pid);
    assert_eq!(report.len(), 1, "no report of the keeper in {run_dir:?}");
    let o = next_run(&t, &run_dir);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let said = about_run(&err, pid);
    assert!(
        said.len() == 1 && said[0].contains("ended before it was done"),
        "{err}"
    );
    assert!(!report[0].exists(), "the report was left");
    drop(frozen);
    assert!(within_30s(|| !alive(guest.into())), "the guest lives");
    // What the keeper did not do, the next sweep does.
    let again = next_run(&t, &run_dir);
    assert!(
        about_run(&stderr(&again), pid).is_empty(),
        "{}",
        stderr(&again)
    );
    assert!(run_groups(pid).is_empty(), "{:?}", run_groups(pid));
    run.done();
}

/// The sweep of every `unifs run` and `guest start` took on the groups of
/// a run whose pid was gone while that run's keeper was still at its work
/// there: between the run's death and the keeper's SIGKILL it killed the
/// guest itself (`killing 1 process …`, and a 2 s wait), and during
/// the keeper's 5 s with a process SIGKILL does not end (a test's frozen
/// guest) every run and start beside it warned of that process. A keeper
/// now holds a lock on its run's group while it lives, and the sweep
/// leaves a dead run's groups to a keeper that holds it.
#[test]
fn s35_a_sweep_leaves_a_dead_runs_groups_to_its_keeper_at_work() {
    let test = "s35_a_sweep_leaves_a_dead_runs_groups_to_its_keeper_at_work";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let run_dir = t.dir.path().join("run");
    let Some((run, frozen, go_on)) = killed_run_with_keeper_stopped(test, &t, &run_dir) else {
        return;
    };
    let (pid, guest, keeper) = (run.pid, run.guest, run.keeper);
    let groups = run_groups(pid);
    assert!(!groups.is_empty(), "the run made no groups");
    // Another run dir: the run beside it, not this run's next.
    let beside = next_run(&t, &t.dir.path().join("other-run"));
    let err = stderr(&beside);
    assert!(beside.status.success(), "{err}");
    assert!(
        !err.contains(&format!("unifs/run-{pid}-")) && !err.contains(&format!("process {guest} (")),
        "the run beside took on the groups of a run whose keeper is at work: {err}"
    );
    assert_eq!(run_groups(pid), groups);
    // Thawed and let go on, the keeper does its work, and has nothing to
    // report.
    drop(frozen);
    drop(go_on);
    assert!(within_30s(|| !alive(guest.into())), "the guest lives");
    assert!(within_30s(|| !alive(keeper.into())), "the keeper lives");
    assert!(run_groups(pid).is_empty(), "{:?}", run_groups(pid));
    assert!(reports(&run_dir, pid).is_empty(), "a report was left");
    run.done();
}

/// `guest list` and `guest status` said nothing of a keeper's report: an
/// operator looking at the host learnt of a guest process a keeper could
/// not end only from the next `unifs run` or `guest start`. They show each
/// report now (a warning on stderr; `status --json`: `keeper_reports`),
/// with the processes left in the run's groups and what to do, and leave
/// it for the next run or start to show and remove.
#[test]
fn s35_list_and_status_show_a_keeper_report_and_leave_it() {
    let test = "s35_list_and_status_show_a_keeper_report_and_leave_it";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s35view", SLEEP);
    let Some((run, frozen, _go_on)) = killed_run_with_keeper_stopped(test, &g.t, g.run_dir())
    else {
        return;
    };
    let (pid, guest, keeper) = (run.pid, run.guest, run.keeper);
    let status = || {
        let o = g.unifs(&["status", "--json", &g.name]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        let json: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", stdout(&o)));
        (json["keeper_reports"].clone(), stderr(&o))
    };

    // At work: said so, nothing more.
    let (reports_json, err) = status();
    assert_eq!(reports_json[0]["run_pid"], pid, "{reports_json}");
    assert_eq!(reports_json[0]["state"], "at_work", "{reports_json}");
    let said = about_run(&err, pid);
    assert!(said.len() == 1 && said[0].contains("is at work"), "{err}");

    // Killed at work: the guest it left, with its pid and what to do (thaw
    // it: its SIGKILL waits).
    kill_keeper(keeper);
    let list = g.unifs(&["list"]);
    let err = stderr(&list);
    assert!(list.status.success(), "{err}");
    assert_eq!(stdout(&list).lines().count(), 2, "{}", stdout(&list));
    let said = about_run(&err, pid);
    let thaw_it = format!("{}/freezer.state", frozen.0.display());
    assert!(
        said.iter().any(|l| l.contains("ended before it was done"))
            && said
                .iter()
                .any(|l| l.contains(&format!("process {guest} (sleep)")) && l.contains(&thaw_it))
            && said.iter().all(|l| l.starts_with("warning: ")),
        "{err}"
    );
    let (list_json, json_out) = g.list();
    assert!(
        list_json.as_array().is_some_and(|a| a.len() == 1),
        "{list_json}"
    );
    assert!(
        !about_run(&stderr(&json_out), pid).is_empty(),
        "{}",
        stderr(&json_out)
    );
    let (reports_json, _) = status();
    let report = &reports_json[0];
    assert_eq!(report["state"], "unfinished", "{reports_json}");
    assert_eq!(report["keeper_pid"], keeper, "{reports_json}");
    assert_eq!(report["left"][0]["pid"], guest, "{reports_json}");
    assert_eq!(report["left"][0]["command"], "sleep", "{reports_json}");
    assert!(
        report["left"][0]["note"]
            .as_str()
            .is_some_and(|a| a.contains(&thaw_it)),
        "{reports_json}"
    );
    let path = report["path"].as_str().unwrap().to_string();
    assert_eq!(
        reports(g.run_dir(), pid),
        vec![std::path::PathBuf::from(&path)]
    );

    // Left for the next run, which shows it once and removes it.
    let o = next_run(&g.t, g.run_dir());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(about_run(&stderr(&o), pid).len(), 1, "{}", stderr(&o));
    assert!(!Path::new(&path).exists(), "the run left the report");
    let (reports_json, err) = status();
    assert_eq!(reports_json, serde_json::json!([]), "{err}");
    assert!(about_run(&err, pid).is_empty(), "{err}");
    drop(frozen);
    assert!(within_30s(|| !alive(guest.into())), "the guest lives");
    run.done();
}
