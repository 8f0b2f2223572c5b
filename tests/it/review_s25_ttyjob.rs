//! Review s25 (terminal angle): job control around the guest's terminal.
//! Ctrl-Z under `--init` (and `guest exec --tty`) stopped the command for
//! good; a background `unifs run` on the shell's terminal was ended as a
//! hang-up when the user typed; `-e =v` reached the guest; non-root
//! `guest status|list|ps` gave a bare EACCES.
//!
//! The user's terminal is a pty the test opens, the controlling terminal
//! of the process it starts (a session of its own). Every process is
//! killed, and every guest stopped, on drop; every wait is bounded.

use crate::common::unifs_bin;
use crate::guest::harness::{
    can_run, run_bounded, spawn_on_a_terminal, stderr, wait_for_descendant, wait_for_output,
    within_30s, KillOnDrop, TestRoot,
};
use crate::guest::review_s11_life::{Guest, SLEEP};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn type_in(master: &OwnedFd, text: &str) {
    nix::unistd::write(master, text.as_bytes()).unwrap();
}

/// Waits (bounded) until `pid` is in a state `ok` accepts (its
/// /proc/PID/stat state letter; `None` once it has ended): a loaded machine
/// makes any fixed pause too short.
fn wait_for_state(pid: u32, ok: impl Fn(Option<char>) -> bool) {
    let state = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s[s.rfind(')')? + 2..].chars().next())
            .filter(|&c| c != 'Z')
    };
    assert!(within_30s(|| ok(state())), "{pid} is {:?}", state());
}

/// Waits (bounded) until the terminal's foreground process group is, or
/// (`is` false) is not, `pgid`.
fn wait_for_foreground(master: &OwnedFd, pgid: u32, is: bool) {
    let fg = || nix::unistd::tcgetpgrp(master).map(|p| p.as_raw() as u32);
    assert!(
        within_30s(|| (fg() == Ok(pgid)) == is),
        "foreground {:?}",
        fg()
    );
}

/// Waits (bounded) for the process on the terminal to end, reading the
/// terminal meanwhile (a full pty would block its writes).
fn wait_on_terminal(master: &OwnedFd, child: KillOnDrop, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let mut child = child;
    loop {
        if let Some(status) = child.0.as_mut().unwrap().try_wait().unwrap() {
            child.0.take();
            return Output {
                status,
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the command on the terminal did not end within {limit:?}"
        );
        let mut fds = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16)).unwrap_or(0) > 0 {
            let mut buf = [0u8; 4096];
            let _ = nix::unistd::read(master, &mut buf);
        }
    }
}

/// What the command of the Ctrl-Z tests runs: it says `ready`, sleeps
/// (where Ctrl-Z comes, once the sleep runs; 4 s so that a loaded machine
/// does not end it first), and says `done-42` if it was not stopped for good.
const SLEEPS: &str = "echo ready; sleep 4; echo done-$((6*7))";

/// Ctrl-Z on `unifs run --init` stopped the command (and its `sleep`) in
/// the guest's pty, and nothing ever continued it: the run hung, Ctrl-C
/// and SIGTERM stayed pending on it. Now the init continues it at once,
/// as `fg`: Ctrl-Z does nothing, as without `--init`.
#[test]
fn review_s25_ctrl_z_under_init_does_not_stop_the_command() {
    let test = "review_s25_ctrl_z_under_init_does_not_stop_the_command";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--init").arg("--root").arg(t.root());
    cmd.args(["--", "/bin/sh", "-c", SLEEPS]);
    let (master, run) = spawn_on_a_terminal(cmd);
    wait_for_output(&master, "ready");
    wait_for_descendant(run.0.as_ref().unwrap().id(), "sleep");
    type_in(&master, "\x1a");
    wait_for_output(&master, "done-42");
    let out = wait_on_terminal(&master, run, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// The same for `guest exec --tty`, whose relay is the command's parent as
/// `--init` is.
#[test]
fn review_s25_ctrl_z_under_exec_tty_does_not_stop_the_command() {
    let test = "review_s25_ctrl_z_under_exec_tty_does_not_stop_the_command";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("ctrlz", SLEEP);
    crate::guest::harness::ok(&g.unifs(&["start", &g.name]));
    let mut cmd = g.command();
    cmd.args(["exec", "--tty", &g.name, "--", "/bin/sh", "-c", SLEEPS]);
    let (master, exec) = spawn_on_a_terminal(cmd);
    wait_for_output(&master, "ready");
    wait_for_descendant(exec.0.as_ref().unwrap().id(), "sleep");
    type_in(&master, "\x1a");
    wait_for_output(&master, "done-42");
    let out = wait_on_terminal(&master, exec, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// The repro's sequence: Ctrl-Z on `unifs run --init -- sleep 30`, then
/// one SIGTERM to `unifs run`. The SIGTERM (passed on by the init) stayed
/// pending on the stopped `sleep`, and the run went on for good. Now
/// `sleep` was never left stopped, and the SIGTERM ends it.
#[test]
fn review_s25_one_sigterm_ends_the_run_after_ctrl_z() {
    let test = "review_s25_one_sigterm_ends_the_run_after_ctrl_z";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--init").arg("--root").arg(t.root());
    cmd.args(["--", "/bin/sh", "-c", "echo ready; exec sleep 30"]);
    let (master, run) = spawn_on_a_terminal(cmd);
    wait_for_output(&master, "ready");
    wait_for_descendant(run.0.as_ref().unwrap().id(), "sleep");
    type_in(&master, "\x1a");
    // Time for the Ctrl-Z to land first (the init continues the sleep at
    // once, nothing to wait for): a late one only makes the test pass.
    std::thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(run.0.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = wait_on_terminal(&master, run, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(143), "{out:?}");
}

/// An interactive shell under `--init` keeps job control of its own jobs:
/// Ctrl-Z stops its `sleep` (the shell's child, not the init's) and gives
/// the prompt back; `fg` brings it back, Ctrl-C ends it.
#[test]
fn review_s25_a_shell_under_init_still_stops_its_jobs() {
    let test = "review_s25_a_shell_under_init_still_stops_its_jobs";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--init").arg("--root").arg(t.root());
    cmd.args(["--", "/bin/sh", "-i"]);
    let (master, run) = spawn_on_a_terminal(cmd);
    type_in(&master, "echo up-$((6*7))\n");
    wait_for_output(&master, "up-42");
    type_in(&master, "sleep 30\n");
    let sleep = wait_for_descendant(run.0.as_ref().unwrap().id(), "sleep");
    type_in(&master, "\x1a");
    wait_for_output(&master, "Stopped");
    type_in(&master, "echo back-$((6*7))\n");
    wait_for_output(&master, "back-42");
    type_in(&master, "fg\n");
    wait_for_state(sleep, |s| s.is_some_and(|s| s != 'T'));
    type_in(&master, "\x03");
    wait_for_state(sleep, |s| s.is_none());
    type_in(&master, "echo fg-$((6*7))\n");
    wait_for_output(&master, "fg-42");
    type_in(&master, "exit 7\n");
    let out = wait_on_terminal(&master, run, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

/// A background `unifs run` (`&` in an interactive shell, which leaves
/// stdin the terminal) was ended as a hang-up, 129, when the user typed at
/// the shell: its read of the terminal from the background got EIO. Now it
/// reads the terminal only while in its foreground, and ends as its
/// command does.
#[test]
fn review_s25_a_background_run_survives_typing_at_the_shell() {
    let test = "review_s25_a_background_run_survives_typing_at_the_shell";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let log = t.dir.path().join("log");
    // busybox's ash, interactive with job control, as the user's shell.
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["sh", "-i"]).env("PS1", "$ ");
    let (master, shell) = spawn_on_a_terminal(cmd);
    type_in(&master, "set -m; echo shell-$((6*7))\n");
    wait_for_output(&master, "shell-42");
    let job = format!(
        "{} run --root {} -- /bin/sh -c 'sleep 3; echo finished' >{} 2>&1 &\n",
        unifs_bin().display(),
        t.root().display(),
        log.display()
    );
    type_in(&master, &job);
    // The user types once the run is up (its command's sleep runs).
    let shell_pid = shell.0.as_ref().unwrap().id();
    wait_for_descendant(shell_pid, "sleep");
    // The user goes on working at the shell, typing ahead.
    type_in(&master, "sleep 1\n");
    type_in(&master, "echo typed-$((6*7))\n");
    wait_for_output(&master, "typed-42");
    // (Quoted apart: the echo of the line typed is not the answer.)
    type_in(&master, "wait $!; echo job-st\"\"atus-$?-\n");
    let seen = wait_for_output(&master, "job-status-");
    // One that reads its terminal waits for `fg`, then reads it.
    let job = format!(
        "{} run --root {} -- /bin/sh -c 'read x; echo got-$x' &\n",
        unifs_bin().display(),
        t.root().display(),
    );
    type_in(&master, &job);
    wait_for_descendant(shell_pid, "sh");
    type_in(&master, "echo again-$((6*7))\n");
    wait_for_output(&master, "again-42");
    type_in(&master, "fg\n");
    // The shell has given the job the terminal.
    wait_for_foreground(&master, shell_pid, false);
    type_in(&master, "hello\r");
    wait_for_output(&master, "got-hello");
    // The shell's again once the run has ended (what is typed before goes
    // to the run).
    wait_for_foreground(&master, shell_pid, true);
    type_in(&master, "echo shell-again-$((6*7))\n");
    wait_for_output(&master, "shell-again-42");
    type_in(&master, "exit\n");
    let _ = wait_on_terminal(&master, shell, Duration::from_secs(30));
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        seen.contains("job-status-0-"),
        "the background run did not end as its command: {seen:?}, log {log:?}"
    );
    assert!(log.contains("finished"), "{log:?}");
}

/// `-e =v` and `-e 'A B=1'` reached the guest's environment; `-e NOEQ`
/// was refused. Now all three are, and so is such an entry of a config.
#[test]
fn review_s25_env_entries_need_a_name() {
    let test = "review_s25_env_entries_need_a_name";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    for bad in ["=v", "A B=1", "\tA=1", "NOEQ"] {
        let o = t.sh(&["-e", bad], "echo ran");
        assert_eq!(o.status.code(), Some(1), "-e {bad:?}: {o:?}");
        let err = stderr(&o);
        assert!(err.contains("--env") && err.contains("KEY"), "{err}");
        assert!(!String::from_utf8_lossy(&o.stdout).contains("ran"), "{o:?}");
    }
    // A good one still passes.
    let o = t.sh(&["-e", "A=b=c"], "echo \"$A\"");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "b=c\n", "{o:?}");

    let g = Guest::new("env", SLEEP);
    g.configure_with(&g.name, &g.t.root(), SLEEP, "env = [\"=v\"]");
    let o = g.unifs(&["start", &g.name]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("env entry"), "{}", stderr(&o));
}

/// As non-root, `guest status`, `list` and `ps` said "reading runtime
/// record …: Permission denied (os error 13)"; now they say they need
/// root, as `exec` does.
#[test]
fn review_s25_non_root_status_says_it_needs_root() {
    let test = "review_s25_non_root_status_says_it_needs_root";
    if !crate::common::require_root(test) {
        return;
    }
    let g = Guest::new("nonroot", SLEEP);
    // What `start` makes: a run dir only root may enter.
    let run = g.run(&g.name);
    let run_dir = run.parent().unwrap();
    std::fs::create_dir_all(&run).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(g.t.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [
        vec!["status", &g.name],
        vec!["list"],
        vec!["ps", &g.name],
        vec!["exec", &g.name, "--", "true"],
    ] {
        let mut cmd = g.command();
        cmd.args(&args).uid(65534).gid(65534);
        let o = run_bounded(cmd, Duration::from_secs(30));
        let err = stderr(&o);
        assert_ne!(o.status.code(), Some(0), "{args:?}: {o:?}");
        assert!(
            err.contains("needs root") && !err.contains("os error"),
            "{args:?}: {err}"
        );
    }
}
