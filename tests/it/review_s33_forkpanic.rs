//! Review (session 33) of what a forked child of unifs does when something
//! goes wrong in it: the guest's set-up, the keepers of `guest start` and
//! `unifs run`, the overlay daemon of `run`, the `exec` helper and the
//! command's process of `--init` and `exec`. Each is made to fail in its
//! own code by UNIFS_TEST_CHILD_PANIC=SITE (a panic there; nothing else a
//! test can arrange makes that code fail). And what a suspended `exec`
//! session keeps of a guest that was stopped.

use crate::guest::harness::{
    alive, can_run, groups, is_mounted, ok, run_bounded, stderr, stdout, wait_bounded, within_30s,
    KillOnDrop, TestRoot,
};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::guest::review_s21_keeper::{child_named, run_groups};
use crate::review_s31_doubts::{stopped, within_60s};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether `err` says, once, that the child `what` failed on the panic
/// UNIFS_TEST_CHILD_PANIC=`site` made.
fn says_child_failed(err: &str, what: &str, site: &str) -> bool {
    err.matches("failed on an internal error").count() == 1
        && err.contains(&format!("{what} (pid "))
        && err.contains(&format!("UNIFS_TEST_CHILD_PANIC={site} at "))
}

/// A child of `guest start` that panicked unwound into its copy of the
/// start's frames (dropping the guest's lock there unlocked it for the
/// start too, which shares the open file) and ended as the whole command,
/// exit 101. Its parent was told nothing: a panic in the guest's set-up
/// failed the start with "the guest's child sent no pty". Now the child
/// ends where it panicked, and the start fails saying which child failed
/// and why, leaving nothing: no mount, no groups, no record, its lock free
/// (`status` says stopped, not starting), and the guest starts after it.
#[test]
fn s33_a_start_whose_child_fails_says_so_and_leaves_nothing() {
    if !can_run("s33_a_start_whose_child_fails_says_so_and_leaves_nothing") {
        return;
    }
    let g = Guest::new("cpanic", SLEEP);
    for (site, what) in [
        ("guest", "the guest's set-up"),
        ("keeper", "the guest's keeper"),
    ] {
        let mut start = g.command();
        start
            .args(["start", &g.name])
            .env("UNIFS_TEST_CHILD_PANIC", site);
        let o = run_bounded(start, Duration::from_secs(60));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{site}: {err}");
        assert!(says_child_failed(&err, what, site), "{site}: {err}");
        assert!(
            !is_mounted(&g.run(&g.name).join("root")),
            "{site}: root left"
        );
        assert!(!g.run(&g.name).join("state.json").exists(), "{site}");
        for group in groups(&g.name, g.run_dir()) {
            assert!(!group.exists(), "{site}: {} left", group.display());
        }
        let o = g.unifs(&["status", &g.name]);
        assert!(
            o.status.code() == Some(3) && stdout(&o).contains("state:   stopped\n"),
            "{site}: {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/echo", "runs"]);
    assert_eq!(ok(&o), "runs\n");
}

/// A panic in the `exec` helper, or in the command's process it forks
/// before the exec, unwound into the `exec` command's frames and ended
/// with 101, which `exec` then gave as its command's exit status. It is an
/// error of unifs now (exit 1, saying which process failed), and the guest
/// runs on untouched.
#[test]
fn s33_an_exec_whose_helper_fails_is_an_error_not_its_commands_status() {
    if !can_run("s33_an_exec_whose_helper_fails_is_an_error_not_its_commands_status") {
        return;
    }
    let g = Guest::new("epanic", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.init_pid();
    for (site, what) in [
        ("exec-helper", "the `exec` helper"),
        ("command", "the guest command's process"),
    ] {
        let mut exec = g.command();
        exec.args(["exec", &g.name, "--", "/bin/echo", "ran"])
            .env("UNIFS_TEST_CHILD_PANIC", site);
        let o = run_bounded(exec, Duration::from_secs(60));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{site}: {err}");
        assert!(says_child_failed(&err, what, site), "{site}: {err}");
        assert_eq!(stdout(&o), "", "{site}");
    }
    assert!(alive(init), "init {init} died");
    assert!(is_mounted(&g.run(&g.name).join("root")));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/echo", "runs"]);
    assert_eq!(ok(&o), "runs\n");
}

/// `unifs run` whose guest's set-up (or `--init`'s command process)
/// panicked exited 101 as if its command had; one whose overlay daemon
/// panicked said only "the overlay daemon died before the mount was
/// ready". Each is an error saying which process failed now, exit 1, and
/// the run's groups are gone.
#[test]
fn s33_a_run_whose_child_fails_says_so_and_removes_its_groups() {
    if !can_run("s33_a_run_whose_child_fails_says_so_and_removes_its_groups") {
        return;
    }
    let t = TestRoot::new();
    for (site, what, opts) in [
        ("guest", "the guest's set-up", &[][..]),
        ("overlay-daemon", "the overlay daemon", &[]),
        ("command", "the guest command's process", &["--init"]),
    ] {
        let mut run = Command::new(crate::common::unifs_bin());
        run.arg("run").arg("--root").arg(t.root()).args(opts);
        run.args(["--", "/bin/echo", "ran"])
            .env("UNIFS_TEST_CHILD_PANIC", site)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let run = KillOnDrop(Some(run.spawn().unwrap()));
        let pid = run.0.as_ref().unwrap().id();
        let o = wait_bounded(run, Duration::from_secs(60));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{site}: {err}");
        assert!(says_child_failed(&err, what, site), "{site}: {err}");
        assert_eq!(stdout(&o), "", "{site}");
        assert!(run_groups(pid).is_empty(), "{site}: {:?}", run_groups(pid));
    }
}

/// `unifs run` whose keeper had died (killed: an operator's `kill -9` of
/// a stray-looking `unifs-keeper`, the OOM killer, or a panic in it) was
/// killed by SIGPIPE when it dismissed the keeper at its end: exit 141,
/// not its command's status, and its groups left for the next run's sweep.
#[test]
fn s33_a_run_whose_keeper_died_ends_with_its_commands_status() {
    if !can_run("s33_a_run_whose_keeper_died_ends_with_its_commands_status") {
        return;
    }
    let t = TestRoot::new();
    let go = t.root().join("tmp/go");
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root());
    run.args(["--", "/bin/sh", "-c"])
        .arg("while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 3")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = KillOnDrop(Some(run.spawn().unwrap()));
    let pid = run.0.as_ref().unwrap().id();
    let keeper = child_named(pid, "unifs-keeper").expect("the run's keeper");
    kill(Pid::from_raw(keeper as i32), Signal::SIGKILL).unwrap();
    assert!(within_30s(|| !alive(keeper.into())), "the keeper lives");
    std::fs::write(&go, "").unwrap();
    let o = wait_bounded(run, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(run_groups(pid).is_empty(), "{:?}", run_groups(pid));
}

/// The namespaces of `pid` of the kinds exec joins, as `ls -l
/// /proc/PID/ns` shows them (`net:[4026532187]`).
fn namespaces(pid: &str) -> Vec<String> {
    ["mnt", "net", "uts", "ipc"]
        .iter()
        .map(|ns| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap_or_default();
            link.to_string_lossy().into_owned()
        })
        .collect()
}

/// A suspended `exec` session (SIGSTOP, a debugger) stayed in the guest's
/// network, UTS and IPC namespaces after `guest stop` (session 32 took it
/// out of the mount namespace only): `lsns` showed the stopped guest's
/// namespaces held by the `unifs guest exec` process alone, with whatever
/// the guest left in them (SysV shared memory and message queues, its
/// network namespace) until the session went on. Once its helper is
/// forked, the session is back in its own namespaces, all of them.
#[test]
fn s33_a_suspended_exec_session_holds_none_of_the_guests_namespaces() {
    if !can_run("s33_a_suspended_exec_session_holds_none_of_the_guests_namespaces") {
        return;
    }
    let g = Guest::new("nsheld", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let guest = namespaces(&g.init_pid().to_string());
    let (session, _) = g.exec_sleep();
    let pid = session.0.as_ref().unwrap().id();
    let go_on = Continue(pid as i32);
    kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
    assert!(within_60s(|| stopped(pid)), "the session never stopped");
    assert_eq!(
        namespaces(&pid.to_string()),
        namespaces("self"),
        "the session's namespaces; the guest's: {guest:?}"
    );
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    drop(go_on);
    let o = wait_bounded(session, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
}

/// A `guest start` whose keeper could not fork (a limit on processes: a
/// service's TasksMax=, the pids group it runs in) said only "the guest's
/// keeper process ended before it started init": the first keeper, whose
/// second fork failed, ended without a word. Each fork now says which
/// failed, and for EAGAIN which limits to look at. The start runs in a
/// pids group whose limit is 1, 2, then 3: the forks fail one after the
/// other, each saying so (and a start that fits runs).
#[test]
fn s33_a_start_whose_fork_fails_names_the_fork_and_the_limit() {
    let test = "s33_a_start_whose_fork_fails_names_the_fork_and_the_limit";
    if !can_run(test) {
        return;
    }
    let Some(pids) = crate::review_s27_cgroup::v1_hierarchy(test, "pids") else {
        return;
    };
    let g = Guest::new("forkfail", SLEEP);
    let group = crate::review_s33_pids::PidsGroup(
        pids.join(format!("s33-forkpanic-{}", std::process::id())),
    );
    std::fs::create_dir(&group.0).unwrap();
    let mut failed = 0;
    for max in 1..=3 {
        let mut start = g.command();
        start.args(["start", &g.name]);
        let o = group.run(max, start);
        let err = stderr(&o);
        if o.status.success() {
            ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
            continue;
        }
        failed += 1;
        // A fork of the start's, or (on a loaded machine, where the start
        // got further) the overlay daemon's threads: each names the limit.
        assert!(
            !err.contains("ended before it started init")
                && (err.contains("Resource temporarily unavailable")
                    || err.contains("EAGAIN: Try again; a limit on processes was reached")
                    || err.contains(&format!("allows {max} tasks (pids.max"))),
            "pids.max {max}: {err}"
        );
    }
    assert!(failed >= 2, "the limits failed {failed} starts");
}

/// A start whose overlay daemon died between its mount and the guest's
/// launch failed saying only "see its log at …". It now quotes how the
/// log ends (or that it says nothing), the daemon's own last word on why,
/// and leaves nothing mounted; the guest starts afterwards.
#[test]
fn s33_a_start_whose_overlay_daemon_died_quotes_its_log() {
    if !can_run("s33_a_start_whose_overlay_daemon_died_quotes_its_log") {
        return;
    }
    let g = Guest::new("daemondied", SLEEP);
    let (o, root) = g.start_whose_daemon_died();
    let err = stderr(&o);
    assert!(!o.status.success(), "the start succeeded: {err}");
    assert!(
        err.contains("exited before the guest was launched (its log at ")
            && (err.contains(" ends: ") || err.contains(" says nothing")),
        "{err}"
    );
    assert!(!is_mounted(&root), "left mounted: {err}");
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
}
