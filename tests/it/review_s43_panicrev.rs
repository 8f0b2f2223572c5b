//! Review (session 43) of the panic audit, and of what a panic in a
//! serving mount daemon does. UNIFS_TEST_CHILD_PANIC=fuse-mkdir makes a
//! FUSE thread panic in the mkdir handler holding its reply, as a bug of
//! ours would; `fuse-mkdir-unanswered` with the reply gone first, as a
//! panic in fuser's own parsing of a request leaves it (its
//! `system_time_from_time` on some SETATTR times).

use crate::fs::harness::{errno, is_mounted, wait_until, Mount, World};
use crate::guest::harness::{can_run, ok, run_bounded, stderr, stdout, TestRoot};
use crate::guest::named::Guest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A mount of a guest holding one file `f`, whose mkdir handler panics as
/// `site` says, served by `threads` FUSE threads.
fn panicking_mount(w: &World, site: &str, threads: usize) -> Mount {
    let guest = w.dir("guest");
    std::fs::write(guest.join("f"), "kept\n").unwrap();
    let mp = std::fs::canonicalize(w.dir("mp")).unwrap();
    let log = std::fs::File::create(mp.with_extension("log")).unwrap();
    let panic = format!("UNIFS_TEST_CHILD_PANIC={site}");
    let threads = format!("threads={threads}");
    Mount::start_under(&["env", &panic], &w.store, &guest, &mp, &[&threads], log)
}

/// A guest process's mkdir of `path`: its result, or `None` if it did not
/// return within 30 s (the thread is left asleep in the kernel until the
/// mount's guard kills the daemon).
fn mkdir_within_30s(path: &Path) -> Option<std::io::Result<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::create_dir(path));
    });
    rx.recv_timeout(Duration::from_secs(30)).ok()
}

/// Waits (30 s at most) for the daemon of `m` to end; its exit status.
fn daemon_ended(m: &mut Mount) -> Option<std::process::ExitStatus> {
    let child = m.child.as_mut().unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

/// What a panicking daemon must leave: it ended with Rust's status for a
/// panic, its log says which thread failed and what to do, the mount point
/// is a dead mount (ENOTCONN, not the directory below it, where a guest's
/// writes would go astray), and `unifs umount` unmounts it.
fn check_ended(m: &mut Mount, site: &str) {
    let status = daemon_ended(m);
    let log = std::fs::read_to_string(&m.log).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(101),
        "{status:?}: {log}"
    );
    assert!(
        log.contains(&format!("UNIFS_TEST_CHILD_PANIC={site}"))
            && log.contains("failed on an internal error in its thread fuser-")
            && log.contains("Transport endpoint is not connected"),
        "{log}"
    );
    assert_eq!(errno(std::fs::metadata(m.path("f"))), libc::ENOTCONN);
    assert_eq!(errno(std::fs::create_dir(m.path("b"))), libc::ENOTCONN);
    let o = Command::new(crate::common::unifs_bin())
        .arg("umount")
        .arg(&m.dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!is_mounted(&m.dir));
    assert!(
        !m.dir.join("b").exists(),
        "a mkdir went to the directory below"
    );
}

/// A FUSE thread that panicked before the reply existed left its request
/// unanswered: the guest's mkdir slept in the kernel (request_wait_answer),
/// unkillable once sent SIGKILL, holding the root directory's lock (a `cat`
/// of another file there hung too), and `unifs umount` said the mount was
/// busy. Now the panic ends the daemon: the mkdir fails at once
/// (ECONNABORTED), and the mount is dead until unmounted.
#[test]
fn s43_a_panic_before_a_fuse_reply_ends_the_daemon_and_frees_the_caller() {
    if !crate::common::require_root(
        "s43_a_panic_before_a_fuse_reply_ends_the_daemon_and_frees_the_caller",
    ) {
        return;
    }
    let w = World::new();
    let site = "fuse-mkdir-unanswered";
    let mut m = panicking_mount(&w, site, 4);
    let made = mkdir_within_30s(&m.path("a"));
    let e = made.expect("the guest's mkdir did not return within 30 s");
    assert!(
        matches!(errno(e), libc::ECONNABORTED | libc::ENOTCONN),
        "the mkdir got no error of a dead daemon"
    );
    check_ended(&mut m, site);
}

/// A FUSE thread that panicked in a handler holding its reply answered
/// EIO and ended; with four threads the three left served on, with the
/// node table as the panic left it, and nothing said it but fuser's
/// "Reply not sent"; with one, fuser unmounted the mount point, and the
/// next mkdir made a directory in the directory below. Now the panic ends
/// the daemon, whatever thread it was.
#[test]
fn s43_a_panic_in_a_fuse_handler_ends_the_daemon() {
    if !crate::common::require_root("s43_a_panic_in_a_fuse_handler_ends_the_daemon") {
        return;
    }
    for threads in [4, 1] {
        let w = World::new();
        let site = "fuse-mkdir";
        let mut m = panicking_mount(&w, site, threads);
        let made = mkdir_within_30s(&m.path("a"));
        let e = made.expect("the guest's mkdir did not return within 30 s");
        assert!(e.is_err(), "threads={threads}: the mkdir worked");
        check_ended(&mut m, site);
    }
}

/// `unifs run` whose overlay daemon panicked while serving (before the
/// reply) never ended: its guest's mkdir slept in the kernel for good.
/// Now the guest's call fails, the command goes on to its end, and the
/// run says the daemon ended and why.
#[test]
fn s43_a_run_whose_overlay_daemon_panics_ends_and_says_so() {
    if !can_run("s43_a_run_whose_overlay_daemon_panics_ends_and_says_so") {
        return;
    }
    let t = TestRoot::new();
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root());
    run.args(["--", "/bin/sh", "-c", "mkdir /made; echo mkdir=$?"])
        .env("UNIFS_TEST_CHILD_PANIC", "fuse-mkdir-unanswered");
    let o = run_bounded(run, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(stdout(&o), "mkdir=1\n", "{err}");
    assert!(
        err.contains("failed on an internal error in its thread fuser-")
            && err.contains("UNIFS_TEST_CHILD_PANIC=fuse-mkdir-unanswered")
            && err.contains("ended while the guest ran (exit status 101)"),
        "{err}"
    );
    let made: PathBuf = t.root().join("made");
    assert!(!made.exists());
}

/// A started guest whose overlay daemon (`unifs mount`, started with the
/// start's environment) panicked before its reply left the guest's call
/// asleep for good, and `exec` with it. Now the call fails, `status` says
/// the root is lost and names the log that says why, and `stop` stops it.
#[test]
fn s43_a_guest_whose_overlay_daemon_panics_is_told_lost_and_stops() {
    if !can_run("s43_a_guest_whose_overlay_daemon_panics_is_told_lost_and_stops") {
        return;
    }
    let g = Guest::new("s43panicrev", "[\"/bin/sleep\", \"1000\"]", true);
    let mut start = g.cmd(&["start", &g.name]);
    start.env("UNIFS_TEST_CHILD_PANIC", "fuse-mkdir-unanswered");
    ok(&run_bounded(start, Duration::from_secs(30)));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/mkdir", "/made"]);
    assert!(!o.status.success(), "{}", stderr(&o));
    let st = g.state();
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["root_lost"], true, "{st}");
    let log = std::fs::read_to_string(st["mount_log"].as_str().unwrap()).unwrap();
    assert!(
        log.contains("failed on an internal error in its thread fuser-"),
        "{log}"
    );
    ok(&g.unifs(&["stop", "--timeout", "1", &g.name]));
    assert_eq!(g.state()["running"], false);
    assert!(!g.t.root().join("made").exists());
}

/// `stop --timeout 1e20` (or `inf`), past what a Duration holds, was
/// refused with "expected seconds, >= 0", which reads as if the number
/// were negative. The error now gives the range.
#[test]
fn s43_a_stop_timeout_past_the_range_is_refused_naming_the_range() {
    let dir = tempfile::tempdir().unwrap();
    for t in ["1e20", "inf"] {
        let o = Command::new(crate::common::unifs_bin())
            .env("UNIFS_CONFIG_DIR", dir.path())
            .env("UNIFS_RUN_DIR", dir.path())
            .args(["guest", "stop", "--timeout", t, "s43-none"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{t}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(": expected seconds, 0 to 1.8e19"),
            "{t}: {}",
            stderr(&o)
        );
    }
}
