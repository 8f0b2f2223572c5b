//! Guests cloned with `cp -al` and unified together in one run: what can
//! never become a store object must be split (each guest its own copy), or
//! reported, so that nothing done through one guest's mount reaches the
//! other (invariant 1).

use crate::common::require_root;
use crate::fs::harness::{Mount, World};
use crate::tree::*;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn cp_al(from: &Path, to: &Path) {
    let cp = Command::new("cp").arg("-al").arg(from).arg(to).status();
    assert!(cp.unwrap().success());
}

/// Fills the file's xattr space (ext4: its inode and one block) with
/// `user.*` attributes: no room is left for the store's marker.
fn fill_xattrs(path: &Path) {
    let set = |name: &str, value: &[u8]| unifs::sys::xattr::set_path(path, OsStr::new(name), value);
    set("user.big", &[b'a'; 4000]).unwrap();
    for i in 0..200 {
        if set(&format!("user.s{i}"), b"12345678").is_err() {
            return;
        }
    }
    panic!("{}: the xattr space never filled", path.display());
}

/// A clone's files that hashing or linking leaves alone (holes, inode
/// flags, no room for the store's xattr) joined the candidates (linked once
/// by each guest), were then dropped as "left alone" and never split: they
/// stayed hardlinked across the guests, unify exited 0, and a write through
/// the clone's mount changed the source guest's file.
#[test]
fn review_s22_clone_files_left_alone_when_hashed_or_linked_are_split() {
    if !require_root("review_s22_clone_files_left_alone_when_hashed_or_linked") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let a = w.dir("a");
    let img = a.join("opt/disk.img");
    sparse_file(&img, 64 << 20);
    file(&a, "usr/lib/flagged.conf", b"config\n", 0o644);
    chattr("+d", &a.join("usr/lib/flagged.conf"));
    file(&a, "usr/lib/xfull", b"data\n", 0o644);
    fill_xattrs(&a.join("usr/lib/xfull"));
    let b = w.tmp.path().join("b");
    cp_al(&a, &b);
    let before = [snapshot(&a), snapshot(&b)];

    let s = unify_json(&store, &[&a, &b]);
    // Each was left alone as the tester saw it, and split.
    assert_eq!(s["files_sparse"], 2, "{s}");
    assert_eq!(s["files_with_inode_flags"], 2, "{s}");
    assert_eq!(s["files_no_xattr_room"], 2, "{s}");
    assert_eq!(s["clone_paths_split"], 3, "{s}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    for rel in ["opt/disk.img", "usr/lib/flagged.conf", "usr/lib/xfull"] {
        assert_ne!(ino(&a.join(rel)), ino(&b.join(rel)), "{rel} still shared");
        assert_eq!(fs::metadata(a.join(rel)).unwrap().nlink(), 1, "{rel}");
        assert_eq!(fs::metadata(b.join(rel)).unwrap().nlink(), 1, "{rel}");
    }
    // The copies read as before (xattrs included), keep the flag, and
    // the holes.
    assert_invisible(&before[0], &snapshot(&a), "a");
    assert_invisible(&before[1], &snapshot(&b), "b");
    let lsattr = Command::new("lsattr")
        .arg(b.join("usr/lib/flagged.conf"))
        .output()
        .unwrap();
    let flags = String::from_utf8_lossy(&lsattr.stdout);
    assert!(flags.split(' ').next().unwrap().contains('d'), "{flags}");
    assert!(allocated(&b.join("opt/disk.img")) < 4 << 20);

    // Through b's mount, a write reaches b's file only.
    {
        let mb = Mount::start(&store, &b, &w.dir("mb"), &[]);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(mb.path("opt/disk.img"))
            .unwrap();
        f.write_all(b"B WROTE").unwrap();
        drop(f);
        fs::write(mb.path("usr/lib/flagged.conf"), b"b's\n").unwrap();
        fs::write(mb.path("usr/lib/xfull"), b"b's\n").unwrap();
    }
    let mut start = [0u8; 7];
    std::io::Read::read_exact(&mut fs::File::open(&img).unwrap(), &mut start).unwrap();
    assert_eq!(start[..], bytes(1, 7)[..], "a's disk.img changed");
    assert_eq!(
        fs::read(a.join("usr/lib/flagged.conf")).unwrap(),
        b"config\n"
    );
    assert_eq!(fs::read(a.join("usr/lib/xfull")).unwrap(), b"data\n");
    assert_verify_clean(&store);
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(again["clone_paths_split"], 0, "{again}");
}

/// A clone's shared file left alone that cannot be split either (immutable:
/// its name can be neither swapped nor removed) was not reported: unify
/// exited 0 with the file still shared. It is reported now, by the clone's
/// path, with exit 23.
#[test]
fn review_s22_clone_file_that_cannot_be_split_is_reported() {
    if !require_root("review_s22_clone_file_that_cannot_be_split") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let (a, b) = (w.dir("a"), w.dir("b"));
    let shared = file(&a, "usr/lib/imm", &bytes(7, 5_000), 0o644);
    fs::create_dir_all(b.join("usr/lib")).unwrap();
    fs::hard_link(&shared, b.join("usr/lib/imm")).unwrap();
    chattr("+i", &shared);
    struct Mutable<'a>(&'a Path);
    impl Drop for Mutable<'_> {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(self.0).status();
        }
    }
    let _mutable = Mutable(&shared);

    let out = unifs(&store, &[&"unify", &"--json", &a, &b]);
    let s = unify_summary(&out);
    assert_eq!(out.status.code(), Some(23), "{s}");
    assert_eq!(s["files_with_inode_flags"], 2, "{s}");
    let problems = s["problems"].to_string();
    let clone_path = b.join("usr/lib/imm").display().to_string();
    assert!(problems.contains(&clone_path), "{s}");
    assert!(
        problems.contains("could not be given a copy of its own"),
        "{s}"
    );
    assert_eq!(ino(&shared), ino(&b.join("usr/lib/imm")));
}

/// `cp -al` hardlinks symlinks, FIFOs and device nodes too, and unify only
/// ever looked at regular files: such nodes stayed shared across the
/// guests (exit 0), so a chown, chmod or touch through the clone's mount
/// changed the source guest's node. Now each guest but the first gets a
/// node of its own (same target or device, owner, mode, xattrs, times),
/// its own hardlinked nodes still linked together; a guest's own hardlinked
/// nodes are left as they are; a clone unified without its source is
/// reported.
#[test]
fn review_s22_clone_symlinks_fifos_and_device_nodes_are_split() {
    if !require_root("review_s22_clone_symlinks_fifos_and_device_nodes") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let (a, c) = (w.dir("a"), w.dir("c"));
    file(&a, "usr/bin/busybox", &bytes(1, 3_000), 0o755);
    fs::create_dir_all(a.join("run/app")).unwrap();
    fs::create_dir_all(a.join("dev")).unwrap();
    std::os::unix::fs::symlink("busybox", a.join("usr/bin/sh")).unwrap();
    // The guest's own pair of one symlink.
    fs::hard_link(a.join("usr/bin/sh"), a.join("usr/bin/ash")).unwrap();
    let fifo = a.join("run/app/ctl.fifo");
    unifs::sys::mknod(&fifo, libc::S_IFIFO | 0o620, 0, 0).unwrap();
    unifs::sys::xattr::set_path(&fifo, OsStr::new("trusted.t"), b"fifo").unwrap();
    unifs::sys::mknod(&a.join("dev/null"), libc::S_IFCHR | 0o600, 1, 3).unwrap();
    Command::new("chown")
        .args(["-h", "7:8"])
        .arg(a.join("usr/bin/sh"))
        .arg(&fifo)
        .status()
        .unwrap();
    for p in [a.join("usr/bin/sh"), fifo.clone(), a.join("dev/null")] {
        unifs::sys::lutimens(
            &p,
            unifs::sys::Timestamp {
                sec: 1_000,
                nsec: 5,
            },
            unifs::sys::Timestamp {
                sec: 2_000,
                nsec: 7,
            },
        )
        .unwrap();
    }
    // Another guest's own hardlinked FIFO: its own, left alone.
    fs::create_dir_all(c.join("run")).unwrap();
    unifs::sys::mknod(&c.join("run/p"), libc::S_IFIFO | 0o600, 0, 0).unwrap();
    fs::hard_link(c.join("run/p"), c.join("run/p2")).unwrap();
    let c_ino = ino(&c.join("run/p"));
    let b = w.tmp.path().join("b");
    cp_al(&a, &b);
    let before = [snapshot(&a), snapshot(&b)];

    // The clone alone: the other links of its file and of its nodes (sh
    // and ash, the FIFO, the device) are outside the run.
    let out = unifs(&store, &[&"unify", &"--json", &b]);
    let s = unify_summary(&out);
    assert_eq!(out.status.code(), Some(23), "{s}");
    let problems = s["problems"].to_string();
    assert!(
        problems.contains("have links outside the guests given"),
        "{s}"
    );
    assert!(problems.contains("5 paths (this one first)"), "{s}");
    assert_eq!(ino(&a.join("dev/null")), ino(&b.join("dev/null")));

    let s = unify_json(&store, &[&a, &b, &c]);
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    // sh and ash (one node), the FIFO, the device node.
    assert_eq!(s["clone_paths_split"], 4, "{s}");
    for rel in ["usr/bin/sh", "run/app/ctl.fifo", "dev/null"] {
        assert_ne!(ino(&a.join(rel)), ino(&b.join(rel)), "{rel} still shared");
    }
    for g in [&a, &b] {
        assert_eq!(ino(&g.join("usr/bin/sh")), ino(&g.join("usr/bin/ash")));
        assert_eq!(
            fs::symlink_metadata(g.join("usr/bin/sh")).unwrap().nlink(),
            2
        );
        let dev = fs::symlink_metadata(g.join("dev/null")).unwrap();
        assert!(dev.file_type().is_char_device());
        assert_eq!(dev.rdev(), libc::makedev(1, 3));
    }
    assert_eq!(ino(&c.join("run/p")), c_ino);
    assert_eq!(ino(&c.join("run/p2")), c_ino);
    assert_invisible(&before[0], &snapshot(&a), "a");
    assert_invisible(&before[1], &snapshot(&b), "b");

    // Through b's mount, b's nodes change, a's do not.
    {
        let mb = Mount::start(&store, &b, &w.dir("mb"), &[]);
        let chown = Command::new("chown")
            .args(["-h", "1000:1000"])
            .arg(mb.path("usr/bin/sh"))
            .arg(mb.path("dev/null"))
            .status()
            .unwrap();
        assert!(chown.success());
        fs::set_permissions(
            mb.path("run/app/ctl.fifo"),
            fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let touch = Command::new("touch")
            .args(["-h", "-d", "2001-01-01"])
            .arg(mb.path("usr/bin/sh"))
            .status()
            .unwrap();
        assert!(touch.success());
    }
    assert_eq!(
        fs::symlink_metadata(b.join("usr/bin/sh")).unwrap().uid(),
        1000
    );
    assert_invisible(&before[0], &snapshot(&a), "a after b's changes");
    assert_eq!(fs::symlink_metadata(a.join("dev/null")).unwrap().uid(), 0);
    let again = unify_json(&store, &[&a, &b, &c]);
    assert_eq!(again["clone_paths_split"], 0, "{again}");
}
