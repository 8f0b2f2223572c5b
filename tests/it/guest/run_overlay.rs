//! `unifs run` serves its root through the copy-on-write overlay: a guest
//! writing to a file it shares through the store gets a private copy, and no
//! other root and no store object changes. The overlay lives in the run's
//! own mount namespace: the host never sees it, and it is gone (daemon
//! included) when the run ends, however it ends. `--root-mount bind` keeps
//! the plain bind mount.

use super::harness::{
    can_run, ok, run_bounded, stderr, stdout, wait_bounded, wait_for_descendant, within_30s,
    KillOnDrop, TestRoot,
};
use crate::common::unifs_bin;
use crate::tree::{assert_invisible, assert_verify_clean, ino, snapshot, unify_json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `unifs --store STORE run --root ROOT OPTS -- /bin/sh -c SCRIPT`, bounded.
pub(crate) fn sh(store: &Path, root: &Path, opts: &[&str], script: &str) -> Output {
    run_bounded(
        run_cmd(store, root, opts, &["/bin/sh", "-c", script]),
        Duration::from_secs(30),
    )
}

fn run_cmd(store: &Path, root: &Path, opts: &[&str], command: &[&str]) -> Command {
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("--store")
        .arg(store)
        .arg("run")
        .arg("--root")
        .arg(root);
    cmd.args(opts).arg("--").args(command);
    cmd
}

/// Live (not zombie) processes started as `unifs … run … ROOT …`: the
/// launcher and its overlay daemon (a fork of it, same command line).
fn run_processes(root: &Path) -> Vec<i32> {
    let want = root.as_os_str().as_encoded_bytes();
    let me = std::process::id() as i32;
    crate::fs::harness::unifs_cmdlines()
        .into_iter()
        .filter_map(|(pid, cmd)| {
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat[stat.rfind(')')? + 2..].starts_with('Z');
            let ours = args.contains(&b"run".as_slice()) && args.contains(&want);
            (ours && !zombie && pid != me).then_some(pid)
        })
        .collect()
}

fn host_sees_mount_at(path: &Path) -> bool {
    let mounts = unifs::fs::mountinfo::read().unwrap();
    mounts.iter().any(|m| m.point == path)
}

/// Waits (bounded) until no process of a run on `root` is left.
fn assert_no_run_left(root: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run_processes(root).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what}: processes of the run on {} outlived it: {:?}",
            root.display(),
            run_processes(root)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !host_sees_mount_at(root),
        "{what}: {} is mounted",
        root.display()
    );
}

/// Whatever a failed test leaves: killed and unmounted, so no test hangs
/// on or leaks a mount.
pub(crate) struct Cleanup(pub(crate) PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in run_processes(&self.0) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if host_sees_mount_at(&self.0) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Two busybox roots sharing `/data` (and busybox) through a real store.
pub(crate) struct Unified {
    pub(crate) r1: TestRoot,
    pub(crate) r2: TestRoot,
    pub(crate) store: PathBuf,
}

impl Unified {
    pub(crate) fn new() -> Unified {
        let (r1, r2) = (TestRoot::new(), TestRoot::new());
        for t in [&r1, &r2] {
            crate::tree::file(&t.root(), "data", b"shared\n", 0o644);
            crate::tree::set_mtime(&t.root().join("bin/busybox"), crate::tree::MTIME);
        }
        let store = r1.dir.path().join("store");
        let s = unify_json(&store, &[&r1.root(), &r2.root()]);
        assert!(s["files_linked"].as_u64().unwrap() >= 2, "{s}");
        assert_eq!(ino(&r1.root().join("data")), ino(&r2.root().join("data")));
        Unified { r1, r2, store }
    }
}

#[test]
fn run_on_a_unified_root_writes_only_its_private_copy() {
    if !can_run("run_on_a_unified_root_writes_only_its_private_copy") {
        return;
    }
    let u = Unified::new();
    let (r1, r2) = (u.r1.root(), u.r2.root());
    let _cleanup = Cleanup(r1.clone());
    let shared = ino(&r2.join("data"));
    let before_r2 = snapshot(&r2);
    let out = ok(&sh(
        &u.store,
        &r1,
        &[],
        "echo x >> /data; cat /data; stat -c %h /data; \
         grep ' / / ' /proc/self/mountinfo | grep -c unifs:",
    ));
    assert_eq!(out, "shared\nx\n1\n1\n", "the guest's view, on the overlay");
    assert_no_run_left(&r1, "after a clean run");
    // R1 has its private copy; R2, the store object and verify: untouched.
    assert_eq!(std::fs::read(r1.join("data")).unwrap(), b"shared\nx\n");
    assert_ne!(ino(&r1.join("data")), shared);
    assert_eq!(ino(&r2.join("data")), shared);
    assert_eq!(std::fs::read(r2.join("data")).unwrap(), b"shared\n");
    assert_invisible(&before_r2, &snapshot(&r2), "root R2");
    assert_verify_clean(&u.store);
    // Untouched files stay shared: busybox ran from the store object.
    assert_eq!(ino(&r1.join("bin/busybox")), ino(&r2.join("bin/busybox")));
    // The same through the environment's store and the other kinds of
    // change: truncate, chmod, a rewrite with O_TRUNC.
    for t in [&u.r1, &u.r2] {
        crate::tree::file(&t.root(), "etc/motd", b"welcome\n", 0o644);
    }
    let s = unify_json(&u.store, &[&r1, &r2]);
    assert!(s["files_linked"].as_u64().unwrap() >= 1, "{s}");
    let mut cmd = Command::new(unifs_bin());
    cmd.env("UNIFS_STORE", &u.store)
        .arg("run")
        .arg("--root")
        .arg(&r1);
    cmd.args(["--", "/bin/sh", "-c"]);
    cmd.arg("chmod 600 /etc/motd && : > /etc/motd && echo mine > /etc/motd && cat /etc/motd");
    assert_eq!(ok(&run_bounded(cmd, Duration::from_secs(30))), "mine\n");
    assert_eq!(std::fs::read(r2.join("etc/motd")).unwrap(), b"welcome\n");
    let m = std::fs::metadata(r2.join("etc/motd")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
        0o644
    );
    assert_verify_clean(&u.store);
    assert_no_run_left(&r1, "after the second run");
}

#[test]
fn run_overlay_is_gone_after_a_failure_a_signal_or_a_kill() {
    if !can_run("run_overlay_is_gone_after_a_failure_a_signal_or_a_kill") {
        return;
    }
    let u = Unified::new();
    let r1 = u.r1.root();
    let _cleanup = Cleanup(r1.clone());
    // A command the root lacks: the error, then nothing left.
    let out = run_bounded(
        run_cmd(&u.store, &r1, &[], &["/bin/no-such-tool"]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("command not found in guest root"),
        "{}",
        stderr(&out)
    );
    assert_no_run_left(&r1, "after a failed command");
    // A failing command and a failing set-up (an unreachable bind source).
    assert_eq!(sh(&u.store, &r1, &[], "exit 3").status.code(), Some(3));
    assert_no_run_left(&r1, "after exit 3");
    let bad = format!("{}:/mnt", u.r1.dir.path().join("missing").display());
    let out = sh(&u.store, &r1, &["--bind", &bad], "true");
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_no_run_left(&r1, "after a refused bind");

    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut cmd = run_cmd(&u.store, &r1, &["--init"], &["/bin/sleep", "30"]);
        cmd.stdout(std::process::Stdio::null());
        let mut launcher = KillOnDrop(Some(cmd.spawn().unwrap()));
        let pid = launcher.0.as_ref().unwrap().id();
        wait_for_descendant(pid, "sleep");
        // While it runs: the launcher, its daemon and the --init reaper (all
        // with the launcher's command line), and no mount on the host.
        assert!(run_processes(&r1).len() >= 2, "{:?}", run_processes(&r1));
        assert!(!host_sees_mount_at(&r1), "the overlay is the run's own");
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid as i32, signal) };
        let out = wait_bounded(KillOnDrop(launcher.0.take()), Duration::from_secs(30));
        if signal == libc::SIGTERM {
            assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
        }
        assert_no_run_left(&r1, &format!("after signal {signal}"));
    }
    assert_eq!(
        std::fs::read(u.r2.root().join("data")).unwrap(),
        b"shared\n"
    );
    assert_verify_clean(&u.store);
}

#[test]
fn run_root_mount_bind_serves_a_plain_directory() {
    if !can_run("run_root_mount_bind_serves_a_plain_directory") {
        return;
    }
    let t = TestRoot::new();
    let root = t.root();
    let _cleanup = Cleanup(root.clone());
    std::fs::write(root.join("data"), "plain\n").unwrap();
    let store = t.dir.path().join("no-store");
    let out = ok(&sh(
        &store,
        &root,
        &["--root-mount", "bind"],
        "echo x >> /data; cat /data; grep ' / / ' /proc/self/mountinfo | grep -c unifs: ; true",
    ));
    assert_eq!(out, "plain\nx\n0\n", "a bind mount of the directory itself");
    assert_eq!(std::fs::read(root.join("data")).unwrap(), b"plain\nx\n");
    // The guest writes the directory's own inode: no copy is made.
    assert_no_run_left(&root, "after a bind run");
    // Unknown values are refused by the parser (a usage error: 1).
    let out = sh(&store, &root, &["--root-mount", "loop"], "true");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn run_refuses_a_store_as_root() {
    if !can_run("run_refuses_a_store_as_root") {
        return;
    }
    let u = Unified::new();
    let _cleanup = Cleanup(u.store.clone());
    let objects = std::fs::read_dir(u.store.join("objects"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let other = u.r2.dir.path().join("other-store");
    ok(&run_bounded(
        {
            let mut c = Command::new(unifs_bin());
            c.arg("--store").arg(&other).args(["store", "init"]);
            c
        },
        Duration::from_secs(20),
    ));
    let around = u.r1.dir.path().to_path_buf();
    for (root, what) in [
        (&u.store, "is a unifs store"),
        (&objects, "is inside the unifs store"),
        (&around, "overlap"),
        (&other, "is a unifs store"),
    ] {
        let out = sh(&u.store, root, &[], "true");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", root.display());
        assert!(err.contains(what), "{}: {err}", root.display());
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!host_sees_mount_at(root));
        assert_no_run_left(root, "after a refusal");
    }
    assert_verify_clean(&u.store);
}

/// A run whose overlay daemon dies says so (the guest then sees
/// "Transport endpoint is not connected"), and leaves nothing behind.
#[test]
fn run_reports_an_overlay_daemon_that_died() {
    if !can_run("run_reports_an_overlay_daemon_that_died") {
        return;
    }
    let u = Unified::new();
    let r1 = u.r1.root();
    let _cleanup = Cleanup(r1.clone());
    let mut cmd = run_cmd(&u.store, &r1, &[], &["/bin/sleep", "2"]);
    cmd.stdout(std::process::Stdio::null());
    cmd.stderr(std::process::Stdio::piped());
    let mut launcher = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = launcher.0.as_ref().unwrap().id() as i32;
    wait_for_descendant(pid as u32, "sleep");
    // (Not the run's keeper, a fork of it too.)
    let keeper = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "unifs-keeper")
    };
    let daemons = || -> Vec<i32> {
        run_processes(&r1)
            .into_iter()
            .filter(|&p| p != pid && !keeper(p))
            .collect()
    };
    // A fork of the run seen before it renamed itself to the keeper, or
    // before it exec'd, counts here for a moment (seen once under load:
    // two pids): wait for the daemon alone.
    let mut found = vec![];
    let one = within_30s(|| {
        found = daemons();
        found.len() == 1
    });
    assert!(one, "{found:?}");
    let daemons = found;
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(daemons[0], libc::SIGKILL) };
    let out = wait_bounded(KillOnDrop(launcher.0.take()), Duration::from_secs(30));
    assert!(
        stderr(&out).contains("ended while the guest ran (killed by SIGKILL)"),
        "{}",
        stderr(&out)
    );
    assert_no_run_left(&r1, "after the daemon died");
}
