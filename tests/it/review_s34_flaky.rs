//! Session 34: races that made the suite flaky on a loaded machine, made
//! certain.

use crate::common::{proc_stat, require_root, unifs_bin};
use crate::fs::harness::{wait_until, World};
use crate::guest::harness::{
    can_run, ok, stderr, wait_bounded, wait_for_descendant, KillOnDrop, TestRoot,
};
use crate::guest::named::Guest;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether a child of `parent` (forked by its main thread) waits for a
/// FUSE daemon's answer.
fn child_waits_on_fuse(parent: i32) -> bool {
    let kids = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        .unwrap_or_default();
    kids.split_whitespace().any(|k| {
        std::fs::read_to_string(format!("/proc/{k}/wchan"))
            .is_ok_and(|w| w == "request_wait_answer")
    })
}

/// `unifs mount` over a mount whose daemon is killed while `mount` looks
/// at it (as review_s19's mount-again test did, its daemon just killed and
/// not quite gone): the look (statfs, in a probe process) waited for the
/// daemon's answer and heard ECONNABORTED, not ENOTCONN, which was taken
/// for an answer; the root's stat, answered from what the kernel keeps,
/// then passed, and the mount said the mountpoint "serves another
/// directory" (failed once in CI). It is a mount whose daemon is gone.
#[test]
fn s34_a_mount_over_a_daemon_killed_while_it_looks_says_the_daemon_is_gone() {
    if !require_root("s34_a_mount_over_a_daemon_killed_while_it_looks_says_the_daemon_is_gone") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    std::fs::write(g.join("motd"), b"hello\n").unwrap();
    // Tried again when the kill came after the look's 2 s (a loaded
    // machine): then it said "does not answer", which proves nothing here.
    for attempt in 0..5 {
        let mut m = w.mount(&g, &format!("m{attempt}"), &[]);
        // The root's attributes kept, as after any look at the mount.
        assert!(std::fs::metadata(&m.dir).unwrap().is_dir());
        let daemon = m.child.as_ref().unwrap().id() as i32;
        // Stopped, it reads no request: the look waits for it.
        // SAFETY: signalling the daemon this test started.
        unsafe { libc::kill(daemon, libc::SIGSTOP) };
        assert!(wait_until(Duration::from_secs(30), || {
            proc_stat(daemon as u32)[0] == "T"
        }));
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("--store")
            .arg(&w.store)
            .arg("mount")
            .arg(&g)
            .arg(&m.dir);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = KillOnDrop(Some(cmd.spawn().unwrap()));
        let looker = child.0.as_ref().unwrap().id() as i32;
        let waits = wait_until(Duration::from_secs(30), || child_waits_on_fuse(looker));
        // SAFETY: as above; a stopped process ends on SIGKILL.
        unsafe { libc::kill(daemon, libc::SIGKILL) };
        let _ = m.child.as_mut().unwrap().wait();
        let out = wait_bounded(child, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        if !waits || err.contains("does not answer") {
            eprintln!("attempt {attempt}: the kill came too late: {err}");
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("whose daemon is gone"), "{err}");
        return;
    }
    panic!("the look never waited on the stopped daemon within its 2 s");
}

/// A `unifs run` started while a named guest runs: its mount namespace,
/// made slaves of the host's mounts, kept its copy of that guest's overlay
/// root where the host's mounts are private (this CI machine: a slave
/// gets no unmount then), for the run's life. The guest's `stop` then
/// waited for the overlay daemon 10 s in `unifs umount` and 5 s more, and
/// killed it ("did not end after the unmount"); a flooding guest's stop
/// took 8.3 s once in CI (review_s29_rconsole), a concurrent test's run
/// holding its root. The run now lets go of other overlays.
#[test]
fn s34_a_run_started_beside_a_guest_does_not_hold_its_overlay() {
    if !can_run("s34_a_run_started_beside_a_guest_does_not_hold_its_overlay") {
        return;
    }
    let g = Guest::new("beside", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let root = g.run_dir.join(&g.name).join("root");
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--", "/bin/sleep", "60"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut run = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = run.0.as_ref().unwrap().id();
    // Its guest runs: its namespace is made, its copies let go of.
    let sleeper = wait_for_descendant(pid, "sleep");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let shown = root.to_str().unwrap();
    assert!(
        !mounts.lines().any(|l| l.split(' ').nth(4) == Some(shown)),
        "the run holds {shown}:\n{mounts}"
    );
    let o = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("did not end"), "{}", stderr(&o));
    // SAFETY: signalling the run's guest this test started.
    unsafe { libc::kill(sleeper as i32, libc::SIGKILL) };
    let c = run.0.as_mut().unwrap();
    let ended = wait_until(Duration::from_secs(30), || c.try_wait().unwrap().is_some());
    assert!(ended, "the run did not end with its guest");
}
