//! Review s32-unsafe: the `unsafe` blocks made to go wrong for real.

use crate::common::{require_root, unifs_bin};
use crate::guest::harness::{can_run, run_bounded, stdout, TestRoot};
use crate::review_s9_exhaust::Ext4;
use crate::tree::{
    assert_invisible, assert_verify_clean, file, ino, snapshot, stderr, unifs, unify_json,
};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::time::{Duration, Instant};

/// unify keeps the directories it changes in pages of a file mapped shared
/// (`STORE/tmp/dirtimes-PID`), grown with ftruncate: holes. On a nearly
/// full filesystem the first store into a hole page raised SIGBUS, and
/// unify died with "Bus error" (exit 135) on every try, on the very disk
/// it was run to free. Each chunk now gets its blocks before it is mapped;
/// without them the run goes on without that record.
#[test]
fn unify_on_a_nearly_full_filesystem_is_not_killed_by_sigbus() {
    if !require_root("review_s32_unify_on_a_nearly_full_filesystem") {
        return;
    }
    let ext4 = Ext4::new(64 << 20);
    let store = ext4.path("store");
    let (a, b) = (ext4.path("a"), ext4.path("b"));
    // Directories with long paths: about one journal page each.
    let long = "n".repeat(250);
    let deep = vec![long.as_str(); 13].join("/");
    for g in [&a, &b] {
        for i in 0..300 {
            file(g, &format!("{i}/{deep}/f"), i.to_string().as_bytes(), 0o644);
        }
    }
    let seed = ext4.path("seed");
    file(&seed, "s", b"seed", 0o644);
    unify_json(&store, &[&seed]);
    let before = (snapshot(&a), snapshot(&b));
    ext4.fill(512 << 10);
    let out = unifs(&store, &[&"unify", &a, &b]);
    assert_eq!(out.status.signal(), None, "{}", stderr(&out));
    assert!(
        out.status.success() || stderr(&out).contains("the filesystem holding it is full"),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    // With space again, the run finishes, and nothing shows.
    ext4.unfill();
    unify_json(&store, &[&a, &b]);
    for i in 0..300 {
        let rel = format!("{i}/{deep}/f");
        assert_eq!(ino(&a.join(&rel)), ino(&b.join(&rel)), "{i}: not linked");
    }
    assert_invisible(&before.0, &snapshot(&a), "a");
    assert_invisible(&before.1, &snapshot(&b), "b");
    assert_verify_clean(&store);
}

/// An ignored SIGCHLD survives exec: a parent that sets it (to have no
/// zombies) starts unifs with its children reaped by the kernel, and every
/// wait for one fails (ECHILD). The mount daemon's readiness probe is a
/// child: `unifs run` (and `unifs mount`) waited 30 s, then failed with
/// "the overlay did not answer: ETIMEDOUT". unifs now restores SIGCHLD's
/// default first thing.
#[test]
fn run_started_with_sigchld_ignored_works() {
    if !can_run("review_s32_run_started_with_sigchld_ignored_works") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--", "/bin/sh", "-c", "echo hi; exit 3"]);
    // SAFETY: signal(2) is async-signal-safe; nothing else runs here.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGCHLD, libc::SIG_IGN);
            Ok(())
        });
    }
    let started = Instant::now();
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
