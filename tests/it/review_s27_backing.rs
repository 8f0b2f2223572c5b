//! Review s27 (backing): what lies under a guest's backing directory and the
//! store. A file the host bind-mounted into a guest was opened, changed and
//! backed up through the mount and the manifest as if it were the guest's;
//! a store on a filesystem without xattrs was made and then failed file by
//! file; the FUSE mount dropped the backing mount's nosuid/noexec.

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::{errno, look, Mount, UnmountAt, World};
use crate::guest::harness::run_bounded;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// `unifs --store STORE ARGS…`, killed after a minute.
fn unifs(store: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store);
    for a in args {
        c.arg(a.as_ref());
    }
    run_bounded(c, Duration::from_secs(60))
}

/// `mount ARGS…`, which must succeed.
fn mount(args: &[&dyn AsRef<OsStr>]) {
    let mut c = Command::new("mount");
    for a in args {
        c.arg(a.as_ref());
    }
    let o = run_bounded(c, Duration::from_secs(30));
    assert!(o.status.success(), "mount: {}", text(&o.stderr));
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn file_mounted_in_guest_is_refused_and_left_out() {
    if !require_root("file_mounted_in_guest_is_refused_and_left_out") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("etc")).unwrap();
    let host = w.tmp.path().join("hostfile");
    fs::write(&host, b"host\n").unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o644)).unwrap();
    let host_dir = w.dir("hostdir");
    fs::write(host_dir.join("secret"), b"host's\n").unwrap();
    let at = g.join("etc/x");
    fs::write(&at, b"guest\n").unwrap();
    let at_dir = g.join("d");
    fs::create_dir(&at_dir).unwrap();
    mount(&[&"--bind", &host, &at]);
    let _file_bound = UnmountAt(&at);
    mount(&[&"--bind", &host_dir, &at_dir]);
    let _dir_bound = UnmountAt(&at_dir);
    let before = look(&host);
    let dir_mode = fs::metadata(&host_dir).unwrap().mode();

    let m = w.mount(&g, "mnt", &[]);
    let x = m.path("etc/x");
    assert_eq!(errno(OpenOptions::new().write(true).open(&x)), libc::EXDEV);
    assert_eq!(errno(OpenOptions::new().append(true).open(&x)), libc::EXDEV);
    assert_eq!(errno(File::open(&x)), libc::EXDEV, "read open");
    let chmod = |p: &Path| fs::set_permissions(p, fs::Permissions::from_mode(0o777));
    assert_eq!(errno(chmod(&x)), libc::EXDEV, "chmod");
    let attr = OsStr::new("user.t");
    assert_eq!(
        errno(unifs::sys::xattr::set_path(&x, attr, b"v")),
        libc::EXDEV
    );
    assert_eq!(errno(unifs::sys::xattr::get_path(&x, attr)), libc::EXDEV);
    assert_eq!(errno(fs::hard_link(&x, m.path("etc/y"))), libc::EXDEV);
    // A mounted directory, alike: never listed, never changed.
    assert_eq!(errno(fs::read_dir(m.path("d"))), libc::EXDEV, "listing");
    assert_eq!(errno(chmod(&m.path("d"))), libc::EXDEV, "chmod of a dir");
    drop(m);
    assert_eq!(look(&host), before, "the host's file changed");
    assert_eq!(fs::metadata(&host_dir).unwrap().mode(), dir_mode);

    // The manifest leaves the mounted file out: the host's, not the guest's.
    let o = unifs(&w.store, &[&"store", &"init"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = unifs(&w.store, &[&"manifest", &g]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("\"path\":\"etc\""), "{out}");
    assert!(
        !out.contains("etc/x"),
        "the host's file is in the manifest: {out}"
    );
}

/// A ramfs (no xattrs at all) mounted at a new temp dir's `fs`.
fn ramfs() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let fs_dir = t.path().join("fs");
    fs::create_dir(&fs_dir).unwrap();
    mount(&[&"-t", &"ramfs", &"ramfs", &fs_dir]);
    t
}

#[test]
fn store_without_xattrs_is_refused_at_once() {
    if !require_root("store_without_xattrs_is_refused_at_once") {
        return;
    }
    let t = ramfs();
    let ram = t.path().join("fs");
    let _mounted = UnmountAt(&ram);
    let store = ram.join("store");
    let o = unifs(&store, &[&"store", &"init"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "store init on ramfs succeeded: {err}");
    assert!(err.contains(&*store.to_string_lossy()), "{err}");
    assert!(err.contains("extended attributes"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!store.exists(), "a store was left behind");

    let (g1, g2) = (ram.join("g1"), ram.join("g2"));
    for g in [&g1, &g2] {
        fs::create_dir(g).unwrap();
        fs::write(g.join("a"), b"same content\n").unwrap();
    }
    let o = unifs(&store, &[&"unify", &g1, &g2]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("extended attributes"), "{err}");
    assert!(!err.contains("os error 95"), "failed file by file: {err}");
    assert!(!store.exists(), "a store was left behind");
    assert_eq!(fs::metadata(g1.join("a")).unwrap().nlink(), 1);
}

#[test]
fn mount_keeps_backing_nosuid_and_noexec() {
    if !require_root("mount_keeps_backing_nosuid_and_noexec") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let backing = t.path().join("fs");
    fs::create_dir(&backing).unwrap();
    mount(&[
        &"-t",
        &"tmpfs",
        &"-o",
        &"nosuid,noexec,mode=0755",
        &"tmpfs",
        &backing,
    ]);
    let _mounted = UnmountAt(&backing);
    let g = backing.join("g");
    fs::create_dir(&g).unwrap();
    fs::write(g.join("su"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(g.join("su"), fs::Permissions::from_mode(0o4755)).unwrap();
    let mp = t.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let no_store = t.path().join("no-store");

    let m = Mount::start(&no_store, &g, &mp, &[]);
    let words = unifs::fs::mounted_vfs_words(&mp).unwrap();
    assert!(words.contains(&"nosuid"), "{words:?}");
    assert!(words.contains(&"noexec"), "{words:?}");
    drop(m);

    // Asked for explicitly: the backing's restriction stands, with a warning.
    let log = t.path().join("log");
    let m = Mount::start_logging_to(
        &no_store,
        &g,
        &mp,
        &["suid,exec"],
        File::create(&log).unwrap(),
    );
    let words = unifs::fs::mounted_vfs_words(&mp).unwrap();
    assert!(words.contains(&"nosuid"), "{words:?}");
    assert!(words.contains(&"noexec"), "{words:?}");
    drop(m);
    let said = fs::read_to_string(&log).unwrap();
    assert_eq!(
        said.matches("warning: -o suid,exec ignored").count(),
        1,
        "{said}"
    );
}
