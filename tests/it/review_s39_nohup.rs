//! Session 39, "nohup": a signal the caller of `unifs run` ignored on
//! purpose (nohup's SIGHUP; the SIGINT and SIGQUIT a non-interactive shell
//! ignores for `cmd &`) is left ignored, not passed on to the guest;
//! SIGTERM still is. docs/guests.md, "`unifs run` passes SIGTERM ...".

use crate::common::unifs_bin;
use crate::guest::harness::{
    can_run, stderr, stdout, wait_bounded, wait_for_descendant, within_30s, KillOnDrop, TestRoot,
};
use crate::review_s37_runsig::catches;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The guest's PID 1: says which signal reached it, and ends on SIGTERM.
const GUEST: &str = "trap 'echo got-hup; exit 3' HUP; trap 'echo got-int; exit 4' INT; \
     trap 'echo got-quit; exit 5' QUIT; trap 'echo got-term; exit 0' TERM; \
     while :; do sleep 0.1; done";

/// Starts `shell -c script UNIFS ROOT GUEST` in a session of its own (no
/// terminal), HUP, INT and QUIT at their defaults whatever the test's
/// were; `script` runs `"$0" run --root "$1" -- /bin/sh -c "$2"`. Returns
/// it and the PID of `unifs run` once the guest's init has set its traps.
fn start(t: &TestRoot, shell: &str, script: &str) -> (KillOnDrop, u32) {
    let mut cmd = Command::new(shell);
    cmd.args(["-c", script]).arg(unifs_bin()).arg(t.root());
    cmd.arg(GUEST)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid and signal are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let top = child.0.as_ref().unwrap().id();
    let init = wait_for_descendant(top, "sh");
    // By now `exec`'d (it is the shell's PID), or the shell's child.
    let run = match std::fs::read_to_string(format!("/proc/{top}/comm")) {
        Ok(comm) if comm.trim() == "unifs" => top,
        _ => wait_for_descendant(top, "unifs"),
    };
    assert!(
        within_30s(|| catches(init, libc::SIGTERM) && catches(init, libc::SIGHUP)),
        "the guest's init set no traps"
    );
    (child, run)
}

/// Sends `sig` to `pid`.
fn kill(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Sends `sigs` to `run`; the guest must still run 2 s later (nothing
/// passed on), and end on a SIGTERM then (passed on as ever).
fn ignored_then_ended(mut child: KillOnDrop, run: u32, sigs: &[i32]) {
    for sig in sigs {
        kill(run, *sig);
    }
    std::thread::sleep(Duration::from_secs(2));
    let running = matches!(child.0.as_mut().unwrap().try_wait(), Ok(None));
    kill(run, libc::SIGTERM);
    let out = wait_bounded(child, Duration::from_secs(30));
    assert!(
        running,
        "the guest ended on {sigs:?} the caller ignored: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "got-term\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `nohup unifs run … &`, then a logout: the SIGHUP ended the guest, as
/// unifs caught it and passed it on.
#[test]
fn s39_a_sighup_the_caller_ignored_is_not_passed_on() {
    if !can_run("s39_a_sighup_the_caller_ignored_is_not_passed_on") {
        return;
    }
    let t = TestRoot::new();
    let script = "trap '' HUP; exec \"$0\" run --root \"$1\" -- /bin/sh -c \"$2\"";
    let (child, run) = start(&t, "bash", script);
    ignored_then_ended(child, run, &[libc::SIGHUP]);
}

/// A non-interactive shell starts `unifs run … &` with SIGINT and SIGQUIT
/// ignored: a Ctrl-C on its terminal reached the background guest.
#[test]
fn s39_sigint_and_sigquit_a_shell_ignored_for_a_background_run_are_not_passed_on() {
    let test = "s39_sigint_and_sigquit_a_shell_ignored_for_a_background_run_are_not_passed_on";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let script = "\"$0\" run --root \"$1\" -- /bin/sh -c \"$2\" & wait";
    let (child, run) = start(&t, "sh", script);
    ignored_then_ended(child, run, &[libc::SIGINT, libc::SIGQUIT]);
}

/// Not ignored by the caller, a SIGHUP still reaches the guest's init
/// (a guard on the fix above: it must not drop what was not ignored).
#[test]
fn s39_a_sighup_the_caller_did_not_ignore_is_passed_on() {
    if !can_run("s39_a_sighup_the_caller_did_not_ignore_is_passed_on") {
        return;
    }
    let t = TestRoot::new();
    let script = "exec \"$0\" run --root \"$1\" -- /bin/sh -c \"$2\"";
    let (child, run) = start(&t, "bash", script);
    kill(run, libc::SIGHUP);
    let out = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(stdout(&out), "got-hup\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

/// A named guest's keeper, a session of its own that no terminal's
/// hang-up reaches, passes on a SIGHUP it is sent even if `guest start`
/// was started with SIGHUP ignored (`nohup unifs guest start`): only an
/// explicit `kill` or `systemctl kill` sends it one, meant for the guest.
#[test]
fn s39_a_named_guests_keeper_passes_on_a_sighup_its_start_ignored() {
    if !can_run("s39_a_named_guests_keeper_passes_on_a_sighup_its_start_ignored") {
        return;
    }
    let init = format!("[\"/bin/sh\", \"-c\", {GUEST:?}]");
    let g = crate::guest::named::Guest::new("s39nohup", &init, false);
    let mut start = g.cmd(&["start", &g.name]);
    // SAFETY: signal is async-signal-safe.
    unsafe {
        start.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let o = crate::guest::harness::run_bounded(start, Duration::from_secs(30));
    assert!(o.status.success(), "start: {}", stderr(&o));
    let init = g.state()["pid"].as_i64().expect("init's pid");
    assert!(
        within_30s(|| catches(init as u32, libc::SIGHUP)),
        "the guest's init set no traps"
    );
    let keeper = crate::guest::harness::parent_of(init);
    let comm = std::fs::read_to_string(format!("/proc/{keeper}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "unifs-keeper", "init's parent {keeper}");
    kill(keeper, libc::SIGHUP);
    let log = g.run_dir.join(&g.name).join("console.log");
    assert!(
        within_30s(|| std::fs::read_to_string(&log).is_ok_and(|l| l.contains("got-hup"))),
        "the keeper did not pass the SIGHUP on: {:?}",
        std::fs::read_to_string(&log)
    );
}

/// `guest exec` started with SIGHUP ignored keeps it from its command as
/// `unifs run` does.
#[test]
fn s39_a_sighup_the_caller_of_guest_exec_ignored_is_not_passed_on() {
    if !can_run("s39_a_sighup_the_caller_of_guest_exec_ignored_is_not_passed_on") {
        return;
    }
    let g = crate::guest::named::Guest::new("s39nohupx", "[\"/bin/sleep\", \"1000\"]", true);
    let o = g.unifs(&["start", &g.name]);
    assert!(o.status.success(), "start: {}", stderr(&o));
    let mut exec = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", GUEST]);
    exec.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid and signal are async-signal-safe.
    unsafe {
        exec.pre_exec(|| {
            libc::setsid();
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = KillOnDrop(Some(exec.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    let command = wait_for_descendant(pid, "sh");
    assert!(
        within_30s(|| catches(command, libc::SIGTERM) && catches(command, libc::SIGHUP)),
        "the command set no traps"
    );
    ignored_then_ended(child, pid, &[libc::SIGHUP]);
}
