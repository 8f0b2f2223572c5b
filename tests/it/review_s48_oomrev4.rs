//! Review (session 48) "oomrev4": how `run` and `exec` judge a reaper's
//! and a command's end (oom4's word with the command's code, and exec's
//! "the guest stopped while it ran").

use crate::guest::harness::{
    can_run, ok, spawn_on_a_terminal, wait_for_descendant, wait_for_output, within_30s,
};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s43_forkfail::{guest_in_16m, ALLOC_64M};
use crate::review_s47_oom3::{exec_session_with, FOREIGN};
use crate::review_s48_oom4::{exec_whose_helper_is_killed_after_exit_3, EXITS_3_ON_USR1, PAUSED};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Item 1: `guest exec`'s helper, the command's reaper, is outside the
/// guest's groups: the memory limit's OOM killer cannot pick it. Killed
/// (SIGKILL from the host) after its command exited 3, a moment after an
/// OOM kill of another process of the guest, where the kernel's log
/// cannot tell (UNIFS_TEST_KMSG_FOREIGN): the count's window took the
/// helper's kill for the memory limit's ("its reaper was then killed by
/// the memory limit (16 MiB; …)"). It is a plain SIGKILL.
#[test]
fn s48_an_exec_helper_killed_after_its_command_exited_is_no_kill_of_the_memory_limit() {
    if !can_run("s48_an_exec_helper_killed_after_its_command_exited_is_no_kill_of_the_memory_limit")
    {
        return;
    }
    let g = guest_in_16m("s48orhom", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let script = format!("({ALLOC_64M}); echo $? > /tmp/s48sub; {EXITS_3_ON_USR1}");
    let env = [PAUSED[0], FOREIGN[0]];
    let (session, command, helper) = exec_session_with(&g, &script, &env);
    // The subshell's OOM kill counted (its status written in full), and
    // the command's trap set (its loop's sleep runs).
    let sub = g.t.root().join("tmp/s48sub");
    let mut text = String::new();
    let written = within_30s(|| {
        text = std::fs::read_to_string(&sub).unwrap_or_default();
        text.ends_with('\n')
    });
    assert!(written, "{}: {text:?}", sub.display());
    assert_eq!(text, "137\n");
    wait_for_descendant(command, "sleep");
    let err = exec_whose_helper_is_killed_after_exit_3(&g, session, command, helper);
    assert!(!err.contains("memory limit"), "{err}");
}

/// Item 2, a guard: `guest exec --tty` (the pty proxy) says as the piped
/// exec does that the guest stopped under its command (`guest stop`),
/// and exits 137. Its stderr goes to a file: what it writes to the
/// terminal as the pty closes may be lost to a reader.
#[test]
fn s48_an_exec_tty_says_the_guest_stopped_under_its_command() {
    if !can_run("s48_an_exec_tty_says_the_guest_stopped_under_its_command") {
        return;
    }
    let g = Guest::new("s48orttystop", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let pid = g.init_pid();
    let err_file = g.t.dir.path().join("s48-exec.err");
    let exec = g.command();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "exec \"$@\" 2>\"$S48_ERR\"", "sh"]);
    cmd.arg(exec.get_program()).args(exec.get_args());
    cmd.envs(exec.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    cmd.env("S48_ERR", &err_file);
    cmd.args(["exec", "--tty", &g.name, "--", "/bin/sh", "-c"]);
    cmd.arg("echo s48-ready; exec sleep 1000");
    let (master, mut exec) = spawn_on_a_terminal(cmd);
    wait_for_output(&master, "s48-ready");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    let child = exec.0.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "exec --tty never ended");
        // The terminal drained, so that no write of exec's waits on it.
        let mut buf = [0u8; 4096];
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if nix::poll::poll(&mut fds, PollTimeout::from(20u16)).unwrap_or(0) > 0 {
            let _ = nix::unistd::read(&master, &mut buf);
        }
    };
    exec.0.take();
    let err = std::fs::read_to_string(&err_file).unwrap_or_default();
    assert_eq!(status.code(), Some(137), "{err}");
    let said = format!(
        "the command in guest {} was killed: the guest stopped while it ran (its init, pid {pid}",
        g.name
    );
    assert!(err.contains(&said), "{err}");
}
