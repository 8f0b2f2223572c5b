//! Review s38 (halt): a named guest whose init ended by itself (`halt`,
//! `exit`, a `kill -9` of init from the host) kept its root mounted, its
//! overlay daemon, its groups and its record ("stopped (stale record, …)")
//! until the next `stop` or `start`. Its keeper now stops it as `guest
//! stop` would, under the guest's lock; and `guest list --json` carries the
//! run dir's keeper reports, as `status --json` does.

use crate::guest::harness::{
    alive, can_run, groups, is_mounted, ok, parent_of, stderr, stdout, wait_bounded,
};
use crate::guest::review_s11_life::{mount_daemon, mount_daemon_if_any, Continue, Guest, SLEEP};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s34_keeper::SleepingRun;
use crate::review_s47_lockrev::spawned;
use crate::review_s48_lock3::read;
use serde_json::Value;
use std::time::Duration;

/// An init that waits for /tmp/go, then halts the guest (`reboot(2)`, so
/// `cap_add = ["sys_boot"]`).
pub(crate) const HALT_ON_GO: &str =
    "[\"/bin/sh\", \"-c\", \"while [ ! -e /tmp/go ]; do sleep 0.05; done; halt -f\"]";

/// A guest (overlay root) whose init is `init`, allowed to halt itself.
pub(crate) fn halting(test: &str, init: &str) -> Guest {
    let g = Guest::new(test, init);
    g.configure_with(&g.name, &g.t.root(), init, "cap_add = [\"sys_boot\"]");
    g
}

/// The guest's `status --json` once its keeper stopped it (waited up to
/// 60 s), or the last one seen.
pub(crate) fn stopped_by_its_keeper(g: &Guest) -> Value {
    let mut st = Value::Null;
    within_60s(|| {
        let o = g.unifs(&["status", "--json", &g.name]);
        st = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        st["last_exit"]["stopped_by_keeper"] == true
    });
    assert_eq!(
        st["last_exit"]["stopped_by_keeper"], true,
        "its keeper did not stop it: {st}"
    );
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["stale"], false, "{st}");
    st
}

/// Nothing of the guest is left but its logs and `exit.json`: no record,
/// no root mounted (nor its mount point), no overlay daemon, no groups.
pub(crate) fn nothing_left(g: &Guest) {
    let run = g.run(&g.name);
    assert!(!run.join("state.json").exists(), "its record is left");
    assert!(!is_mounted(&run.join("root")), "its root is mounted");
    assert!(!run.join("root").exists(), "its mount point is left");
    // (One ending may show a moment longer.)
    let no_daemon = || mount_daemon_if_any(&run.join("root")).is_none();
    assert!(within_60s(no_daemon), "its overlay daemon runs");
    for group in groups(&g.name, g.run_dir()) {
        assert!(!group.exists(), "{} is left", group.display());
    }
    assert!(run.join("console.log").exists(), "its console log is gone");
}

/// The init's pid and its keeper's (init's parent) of a running guest.
pub(crate) fn init_and_keeper(g: &Guest) -> (i64, u32) {
    let init = g.init_pid();
    (init, parent_of(init))
}

#[test]
fn s38_a_guest_that_halts_is_stopped_by_its_keeper() {
    let test = "s38_a_guest_that_halts_is_stopped_by_its_keeper";
    if !can_run(test) {
        return;
    }
    let g = halting("s38halt", HALT_ON_GO);
    ok(&g.unifs(&["start", &g.name]));
    let (init, _) = init_and_keeper(&g);
    let daemon = mount_daemon(&g.run(&g.name).join("root"));
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));

    let st = stopped_by_its_keeper(&g);
    assert_eq!(st["last_exit"]["pid"], init, "{st}");
    assert_eq!(st["last_exit"]["shutdown"], "halt", "{st}");
    nothing_left(&g);
    assert!(
        within_60s(|| !alive(daemon.into())),
        "daemon {daemon} lives"
    );

    let o = g.unifs(&["status", &g.name]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("state:   stopped (halted)\n"),
        "{}",
        stdout(&o)
    );
    let list = ok(&g.unifs(&["list"]));
    assert!(
        list.contains("stopped (halted)") && !list.contains("stale"),
        "{list}"
    );
    let logs = ok(&g.unifs(&["logs", &g.name]));
    let said = format!("stopped: its init (pid {init}) ended by itself (halted (code=killed");
    assert!(logs.contains(&said), "{logs}");

    // `stop` has nothing to do, and says why; a start starts it afresh.
    let out = ok(&g.unifs(&["stop", &g.name]));
    let said = "is not running (its init ended by itself: halted (code=killed, signal=INT)): \
                nothing to stop";
    assert!(out.contains(said), "{out}");
    // (Written through the overlay into the guest's own tree.)
    let _ = std::fs::remove_file(g.t.root().join("tmp/go"));
    let o = g.unifs(&["start", &g.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("stale"), "{}", stderr(&o));
    assert_eq!(g.unifs(&["status", &g.name]).status.code(), Some(0));
}

#[test]
fn s38_an_init_that_exits_or_is_killed_from_the_host_is_stopped_too() {
    let test = "s38_an_init_that_exits_or_is_killed_from_the_host_is_stopped_too";
    if !can_run(test) {
        return;
    }
    let exits = "[\"/bin/sh\", \"-c\", \"sleep 0.2; exit 0\"]";
    let g = Guest::new("s38exit", exits);
    ok(&g.unifs(&["start", &g.name]));
    let st = stopped_by_its_keeper(&g);
    assert_eq!(st["last_exit"]["code"], 0, "{st}");
    nothing_left(&g);
    let list = ok(&g.unifs(&["list"]));
    assert!(list.contains("stopped (exited 0)"), "{list}");

    g.configure_with(&g.name, &g.t.root(), SLEEP, "");
    ok(&g.unifs(&["start", &g.name]));
    let (init, _) = init_and_keeper(&g);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = stopped_by_its_keeper(&g);
    assert_eq!(st["last_exit"]["pid"], init, "{st}");
    assert_eq!(st["last_exit"]["signal"], "KILL", "{st}");
    nothing_left(&g);
    let list = ok(&g.unifs(&["list"]));
    assert!(list.contains("stopped (killed by SIGKILL)"), "{list}");
}

#[test]
fn s38_a_stop_that_waited_for_the_keeper_says_the_guest_ended_by_itself() {
    let test = "s38_a_stop_that_waited_for_the_keeper_says_the_guest_ended_by_itself";
    if !can_run(test) {
        return;
    }
    let g = halting("s38race", HALT_ON_GO);
    // Its keeper stops itself (UNIFS_TEST_ENDED_STOP) holding the guest's
    // lock, about to stop the guest.
    let (start, _) = g.start_with("UNIFS_TEST_ENDED_STOP", "1");
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, keeper) = init_and_keeper(&g);
    let go_on = Continue(keeper as i32);
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    assert!(
        within_60s(|| stopped(keeper)),
        "the keeper {keeper} never got to its stop"
    );

    // A `stop` meanwhile waits for the lock, then finds the guest stopped:
    // by its own halt, not by "another `guest stop`". Held
    // (UNIFS_TEST_LOCK_TRIED_STOP) once it found the lock taken, then let
    // go on while the keeper is still held there: it meets the keeper
    // holding the lock, stopped, and says so. Only then is the keeper let
    // go on (before, both were let go on at once, and the stop might find
    // the lock held or already free: the path was the machine's choice).
    let err = g.t.dir.path().join("stop.err");
    let mut stop = g.command();
    stop.args(["stop", &g.name])
        .env("UNIFS_TEST_LOCK_TRIED_STOP", "1");
    let (stop, stop_pid) = spawned(stop, &err);
    let stop_on = Continue(stop_pid as i32);
    assert!(
        within_60s(|| stopped(stop_pid)),
        "the stop never tried the lock: {}",
        read(&err)
    );
    drop(stop_on);
    let met = format!("is being stopped by its keeper (pid {keeper}): its init ended: waiting");
    let go_on_said = format!("`kill -CONT {keeper}` lets it go on");
    assert!(
        within_60s(|| read(&err).contains(&met) && read(&err).contains(&go_on_said)),
        "the stop never met the keeper {keeper} holding the lock: {}",
        read(&err)
    );
    drop(go_on);
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(o.status.success(), "{}", read(&err));
    let said = "its init ended by itself";
    assert!(stdout(&o).contains(said), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("halted (code=killed, signal=INT)"),
        "{}",
        stdout(&o)
    );
    stopped_by_its_keeper(&g);
    nothing_left(&g);
}

#[test]
fn s38_list_json_carries_the_keeper_reports() {
    let test = "s38_list_json_carries_the_keeper_reports";
    if !can_run(test) {
        return;
    }
    // A killed `unifs run` whose keeper is at work (stopped there): its
    // report is in the run dir, as `list` warns on stderr.
    let g = Guest::new("s38list", SLEEP);
    let stop_at_work = [("UNIFS_TEST_KEEPER_STOP", "1")];
    let mut run = SleepingRun::new(&g.t, g.run_dir(), &stop_at_work);
    let (pid, keeper) = (run.pid, run.keeper);
    let go_on = Continue(keeper as i32);
    run.kill_run();
    assert!(within_60s(|| stopped(keeper)), "the keeper never stopped");

    let (all, o) = g.list();
    assert!(!stderr(&o).is_empty(), "no warning of the report");
    let reports = &all[0]["keeper_reports"];
    assert_eq!(reports[0]["run_pid"], pid, "{all}");
    assert_eq!(reports[0]["state"], "at_work", "{all}");
    let status = g.unifs(&["status", "--json", &g.name]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        &status["keeper_reports"], reports,
        "as status --json has them"
    );

    drop(go_on);
    assert!(within_60s(|| !alive(keeper.into())), "the keeper lives");
    run.done();
}

#[test]
fn s38_a_guest_that_reboots_with_on_reboot_stop_is_stopped_too() {
    let test = "s38_a_guest_that_reboots_with_on_reboot_stop_is_stopped_too";
    if !can_run(test) {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"sleep 0.2; reboot -f\"]";
    let g = Guest::new("s38onreboot", init);
    let extra = "cap_add = [\"sys_boot\"]\non_reboot = \"stop\"";
    g.configure_with(&g.name, &g.t.root(), init, extra);
    ok(&g.unifs(&["start", &g.name]));
    let st = stopped_by_its_keeper(&g);
    assert_eq!(st["last_exit"]["shutdown"], "reboot", "{st}");
    nothing_left(&g);
}
