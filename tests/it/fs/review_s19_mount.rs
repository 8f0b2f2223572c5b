//! `unifs mount` over a mountpoint in use (review s19): `mount -a` run
//! again, and a mount whose daemon died after an earlier look at it.

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

/// How many mounts /proc/self/mountinfo lists at `mp` (canonical).
fn mounts_at(mp: &Path) -> usize {
    let mounts = unifs::fs::mountinfo::read().unwrap();
    mounts.iter().filter(|m| m.point == mp).count()
}

/// `mount -a` with docs/mount.md's fstab line, run again: libmount cannot
/// tell the entry is mounted (its source, `vfs-mount#GUEST`, is not the
/// mount's, `unifs:GUEST`) and runs the helper again, which refused: exit
/// 32 for every unifs entry. A live unifs mount of the same guest there is
/// now "already mounted", exit 0; another guest there is still refused.
#[test]
fn review_s19_mount_again_of_a_mounted_guest_is_already_mounted() {
    if !require_root("review_s19_mount_again_of_a_mounted_guest_is_already_mounted") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("motd"), b"hello\n").unwrap();
    let other = w.dir("other");
    let mp = fs::canonicalize(w.dir("m")).unwrap();
    let _guard = UnmountAt(&mp);
    let out = unifs(&w.store, &[&"mount", &g, &mp]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _watchdog = watchdog(daemon_pid(&mp).expect("the daemon runs"));

    let out = unifs(&w.store, &[&"mount", &g, &mp]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("already mounted"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(mounts_at(&mp), 1, "nothing mounted over it");
    assert_eq!(fs::read(mp.join("motd")).unwrap(), b"hello\n");

    // The same guest asked for with other options: refused, naming both.
    let out = unifs(&w.store, &[&"mount", &"-o", &"ro", &g, &mp]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("with other options") && err.contains("asked for ro"),
        "{err}"
    );
    assert_eq!(mounts_at(&mp), 1, "nothing mounted over it");

    // Another guest at that mountpoint: refused, as before.
    let out = unifs(&w.store, &[&"mount", &other, &mp]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is in use"), "{err}");

    // Through mount(8) and mount.fuse3, as the fstab line runs it.
    let helper = Path::new("/usr/sbin/mount.fuse3");
    if helper.exists() || Path::new("/sbin/mount.fuse3").exists() {
        let sbin = w.dir("sbin");
        std::os::unix::fs::symlink(unifs_bin(), sbin.join("vfs-mount")).unwrap();
        let fstab = w.tmp.path().join("fstab");
        fs::write(
            &fstab,
            format!(
                "{}#{}  {}  fuse  nodev,nofail  0  0\n",
                sbin.join("vfs-mount").display(),
                g.display(),
                mp.display()
            ),
        )
        .unwrap();
        let out = Command::new("mount")
            .args(["-a", "-T"])
            .arg(&fstab)
            .env("UNIFS_STORE", &w.store)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "second mount -a: {err}");
        assert!(err.contains("already mounted"), "{err}");
        assert_eq!(mounts_at(&mp), 1, "nothing mounted over it");
    } else {
        eprintln!("no mount.fuse3: mount -a not tried");
    }

    // A dead mount of the same guest is no mount of it.
    let pid = daemon_pid(&mp).unwrap();
    // SAFETY: the daemon this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    assert!(wait_until(Duration::from_secs(30), || daemon_pid(&mp).is_none()));
    let out = unifs(&w.store, &[&"mount", &g, &mp]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("whose daemon is gone"), "{err}");
}

/// A mount whose daemon died is named as such even when something looked
/// at the mountpoint while it lived (a refused `unifs mount`, a second
/// `mount -a`): the stat is answered from the attributes the kernel keeps
/// of the mount's root, so it never saw ENOTCONN, and the message was
/// "something is mounted there". statfs is never cached.
#[test]
fn review_s19_a_dead_mount_looked_at_before_is_named_as_such() {
    if !require_root("review_s19_a_dead_mount_looked_at_before_is_named_as_such") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let other = w.dir("other");
    fs::write(g.join("motd"), b"hello\n").unwrap();
    let mut m = w.mount(&g, "m", &[]);
    // A look while it lives: a refused mount of another guest.
    let out = unifs(&w.store, &[&"mount", &other, &m.dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("something is mounted there"), "{err}");
    let child = m.child.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    for guest in [&g, &other] {
        let out = unifs(&w.store, &[&"mount", guest, &m.dir]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("whose daemon is gone") && err.contains("unifs umount"),
            "{err}"
        );
    }
    let out = unifs(&w.store, &[&"umount", &m.dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&m.dir));
}
