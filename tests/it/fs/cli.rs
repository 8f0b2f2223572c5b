//! `unifs mount` / `unifs umount` as a user runs them: daemonizing, options,
//! signals, and one clear line for each error with nothing mounted.

use super::harness::*;
use crate::common::{require_root, unifs_bin};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn unifs(store: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store);
    for a in args {
        c.arg(a.as_ref());
    }
    c.output().expect("run unifs")
}

#[test]
fn mount_daemonizes_when_ready_and_umount_unmounts() {
    if !require_root("mount_daemonizes_when_ready_and_umount_unmounts") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("hello"), b"hi\n").unwrap();
    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);
    let out = unifs(&w.store, &[&"mount", &g, &mp]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = daemon_pid(&mp).expect("the daemon runs");
    let _watchdog = watchdog(pid);
    // No waiting: the mount is ready when the command returns.
    let names: Vec<_> = fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("hello")]);
    let out = unifs(&w.store, &[&"umount", &mp]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mp));
    let out = unifs(&w.store, &[&"umount", &mp]);
    assert!(
        !out.status.success(),
        "umount of something not mounted fails"
    );
}

#[test]
fn sigterm_unmounts_cleanly() {
    if !require_root("sigterm_unmounts_cleanly") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let mut m = w.mount(&g, "m", &[]);
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(m.pid() as i32, libc::SIGTERM);
    }
    let child = m.child.as_mut().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || child
            .try_wait()
            .unwrap()
            .is_some()),
        "daemon did not exit on SIGTERM"
    );
    assert!(child.try_wait().unwrap().unwrap().success());
    assert!(!is_mounted(&m.dir), "SIGTERM left the mount behind");
}

#[test]
fn a_mount_whose_daemon_was_killed_is_named_as_such() {
    if !require_root("a_mount_whose_daemon_was_killed_is_named_as_such") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let mut m = w.mount(&g, "m", &[]);
    let child = m.child.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let out = unifs(&w.store, &[&"mount", &g, &m.dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("whose daemon is gone") && err.contains("unifs umount"),
        "{err}"
    );
    let out = unifs(&w.store, &[&"umount", &m.dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&m.dir));
}

#[test]
fn a_terminal_ioctl_on_a_file_is_enotty_and_not_logged() {
    if !require_root("a_terminal_ioctl_on_a_file_is_enotty_and_not_logged") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"x").unwrap();
    let m = w.mount(&g, "m", &[]);
    let f = fs::File::open(m.path("f")).unwrap();
    // isatty(3), as every stdio open of a file does.
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: TCGETS writes a termios into `t`, valid for writes.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::TCGETS,
            t.as_mut_ptr(),
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    drop(f);
    let log = fs::read_to_string(&m.log).unwrap_or_default();
    assert!(!log.contains("ioctl"), "{log}");
}

#[test]
fn a_guests_view_given_for_its_directory_is_refused_naming_the_directory() {
    if !require_root("a_guests_view_given_for_its_directory_is_refused_naming_the_directory") {
        return;
    }
    // A running guest's root (its view) given where its backing directory
    // was meant: unify said to unmount it, or to put the store on it.
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("sub")).unwrap();
    let m = w.mount(&g, "m", &[]);
    let other = w.dir("m2");
    let fresh = w.store.with_extension("new");
    let sub = m.path("sub");
    let cases: [(&Path, Vec<&dyn AsRef<std::ffi::OsStr>>, std::path::PathBuf); 4] = [
        (&w.store, vec![&"unify", &m.dir], g.clone()),
        (&fresh, vec![&"unify", &sub], g.join("sub")),
        (&w.store, vec![&"mount", &sub, &other], g.join("sub")),
        (
            &w.store,
            vec![&"run", &"--root", &m.dir, &"--", &"/bin/true"],
            g.clone(),
        ),
    ];
    // A bind mount of a directory of the view shows that directory.
    let bound = w.dir("bound");
    let ok = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&sub)
        .arg(&bound)
        .status()
        .unwrap();
    assert!(ok.success());
    let _unbind = UnmountAt(&bound);
    let out = unifs(&fresh, &[&"unify", &bound]);
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("instead ({})", g.join("sub").display());
    assert!(err.contains(&want), "{err}");
    for (store, args, backing) in cases {
        let out = unifs(store, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        let want = format!(
            "name the guest's backing directory instead ({})",
            backing.display()
        );
        assert!(err.contains(&want), "{err}");
    }
    assert!(!fresh.exists());
    assert!(!is_mounted(&other));
}

#[test]
fn read_only_option_refuses_writes() {
    if !require_root("read_only_option_refuses_writes") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"x").unwrap();
    let m = w.mount(&g, "m", &["ro"]);
    assert_eq!(fs::read(m.path("f")).unwrap(), b"x");
    assert_eq!(errno(fs::write(m.path("f"), b"y")), libc::EROFS);
    assert_eq!(errno(fs::create_dir(m.path("d"))), libc::EROFS);
}

fn assert_refused(out: &Output, mp: &Path, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: must fail");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    assert!(err.contains(what), "{what}: says so: {err}");
    assert!(!is_mounted(mp), "{what}: nothing mounted");
}

#[test]
fn mount_errors_are_one_clear_line_and_mount_nothing() {
    if !require_root("mount_errors_are_one_clear_line_and_mount_nothing") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);
    let missing = w.tmp.path().join("missing");
    assert_refused(
        &unifs(&w.store, &[&"mount", &missing, &mp]),
        &mp,
        "does not exist",
    );
    assert_refused(
        &unifs(&w.store, &[&"mount", &"-o", &"bogus", &g, &mp]),
        &mp,
        "unknown mount option \"bogus\"; `unifs mount --help` lists the options",
    );
    // A store on another filesystem cannot hold this guest's objects.
    if let Ok(shm) = tempfile::Builder::new()
        .prefix("unifs-store-")
        .tempdir_in("/dev/shm")
    {
        fs::create_dir_all(shm.path().join("objects")).unwrap();
        fs::create_dir_all(shm.path().join("tmp")).unwrap();
        assert_refused(
            &unifs(shm.path(), &[&"mount", &g, &mp]),
            &mp,
            "hardlinks cannot cross filesystems",
        );
    }
    // No /dev/fuse: in a mount namespace of its own, /dev is an empty tmpfs.
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs tmpfs /dev && exec \"$0\" --store \"$1\" mount \"$2\" \"$3\"")
        .arg(unifs_bin())
        .arg(&w.store)
        .arg(&g)
        .arg(&mp)
        .output()
        .expect("run unshare");
    assert_refused(&out, &mp, "no /dev/fuse");
    // A mountpoint in use (by another guest: the same one is "already
    // mounted", exit 0).
    let m = w.mount(&g, "m2", &[]);
    let other = w.dir("other");
    let out = unifs(&w.store, &[&"mount", &other, &m.dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("in use"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn the_daemon_uses_the_hard_open_file_limit() {
    if !require_root("the_daemon_uses_the_hard_open_file_limit") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    for i in 0..600 {
        fs::write(g.join(format!("f{i}")), b"x").unwrap();
    }
    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" --store \"$1\" mount \"$2\" \"$3\"")
        .arg(unifs_bin())
        .arg(&w.store)
        .arg(&g)
        .arg(&mp)
        .output()
        .expect("run unifs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _watchdog = watchdog(daemon_pid(&mp).expect("the daemon runs"));
    let open: Vec<fs::File> = (0..600)
        .map(|i| fs::File::open(mp.join(format!("f{i}"))).expect("open through the mount"))
        .collect();
    assert_eq!(open.len(), 600);
}

#[test]
fn mount_refuses_a_store_and_anything_overlapping_it() {
    if !require_root("mount_refuses_a_store_and_anything_overlapping_it") {
        return;
    }
    let w = World::new();
    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);
    // A real store (catalog.db and objects/) with an object in it.
    let g = w.dir("g");
    crate::tree::file(&g, "usr/f", b"object\n", 0o644);
    crate::tree::file(&w.dir("g2"), "usr/f", b"object\n", 0o644);
    let store = w.tmp.path().join("real-store");
    crate::tree::unify_json(&store, &[&g, &w.tmp.path().join("g2")]);
    let fanout = fs::read_dir(store.join("objects"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let link = w.tmp.path().join("link-to-store");
    std::os::unix::fs::symlink(&store, &link).unwrap();
    let objects_before = crate::tree::snapshot(&store.join("objects"));
    for (guest, what) in [
        (&store, "is a unifs store"),
        (&link, "is a unifs store"),
        (&store.join("objects"), "is inside the unifs store"),
        (&fanout, "is inside the unifs store"),
        // Around the store: the guest would hold its objects.
        (
            &w.tmp.path().to_path_buf(),
            "overlap (one is inside the other)",
        ),
    ] {
        let out = unifs(&store, &[&"mount", guest, &mp]);
        assert_refused(&out, &mp, what);
    }
    // The store passed through the environment, as `unifs mount` is used
    // from fstab.
    let out = Command::new(unifs_bin())
        .env("UNIFS_STORE", &store)
        .arg("mount")
        .arg(&store)
        .arg(&mp)
        .output()
        .unwrap();
    assert_refused(&out, &mp, "is a unifs store");
    // A store other than --store is refused too.
    let out = unifs(&w.store, &[&"mount", &store, &mp]);
    assert_refused(&out, &mp, "is a unifs store");
    // The configured store, even without a catalog yet (World's fixture
    // store has objects/ and tmp/ only), and what lies in or around it.
    for guest in [&w.store, &w.store.join("objects")] {
        let out = unifs(&w.store, &[&"mount", guest, &mp]);
        assert_refused(&out, &mp, "overlap (one is inside the other)");
    }
    assert!(
        crate::tree::snapshot(&store.join("objects")) == objects_before,
        "store objects changed"
    );
    crate::tree::assert_verify_clean(&store);
    // A guest beside the store still mounts.
    let m = Mount::start(&store, &g, &w.dir("m2"), &[]);
    assert_eq!(fs::read(m.path("usr/f")).unwrap(), b"object\n");
}

/// One mount per guest: its daemon must be the guest's only writer. A second
/// mount of the same guest, anywhere, is refused in one line; once the first
/// is gone the guest mounts again at once.
#[test]
fn a_guest_is_mounted_once_at_a_time() {
    if !require_root("a_guest_is_mounted_once_at_a_time") {
        return;
    }
    let w = World::new();
    let outer = w.dir("outer");
    let g = outer.join("g");
    fs::create_dir(&g).unwrap();
    fs::write(g.join("f"), b"x").unwrap();
    let first = w.mount(&g, "m1", &[]);
    let mp2 = fs::canonicalize(w.dir("m2")).unwrap();
    let _guard = UnmountAt(&mp2);
    let out = unifs(&w.store, &[&"mount", &g, &mp2]);
    assert_refused(&out, &mp2, "is already served by another unifs mount");
    // Nor a directory inside it, nor one around it.
    fs::create_dir(g.join("sub")).unwrap();
    let out = unifs(&w.store, &[&"mount", &g.join("sub"), &mp2]);
    assert_refused(&out, &mp2, "is already served by another unifs mount");
    let out = unifs(&w.store, &[&"mount", &outer, &mp2]);
    assert_refused(&out, &mp2, "is already served by another unifs mount");
    assert_eq!(fs::read(first.path("f")).unwrap(), b"x");
    drop(first);
    let out = unifs(&w.store, &[&"mount", &g, &mp2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(mp2.join("f")).unwrap(), b"x");
    let out = unifs(&w.store, &[&"umount", &mp2]);
    assert!(out.status.success());
}
