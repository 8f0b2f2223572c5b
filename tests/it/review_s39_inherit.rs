//! Session 39, "inherit": what a guest's processes get of the process that
//! started them. The caller here holds what a shell, nohup or a service
//! would hand on (an fd without close-on-exec, umask 077, a raised OOM
//! score, ignored and blocked signals, host-only environment): none of it
//! may reach `unifs run`'s command, a named guest's init, or `guest
//! exec`'s and `enter`'s commands. docs/guests.md, "What a guest's
//! processes start with".

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, stderr, wait_bounded, KillOnDrop, TestRoot};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn s39_run_started_with_signals_blocked_still_passes_sigterm_on() {
    if !can_run("s39_run_started_with_signals_blocked_still_passes_sigterm_on") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--root-mount", "bind", "--init", "--", "/bin/sleep", "1000"]);
    // SAFETY: sigemptyset, sigaddset and sigprocmask only, on a local set.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = child.0.as_ref().unwrap().id();
    crate::guest::harness::wait_for_descendant(pid, "sleep");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(
        o.status.code(),
        Some(143),
        "the command, told of the SIGTERM, ends of it: {}",
        stderr(&o)
    );
}
