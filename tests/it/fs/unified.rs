//! End to end: guests unified by the real `unifs unify`, both mounted; every
//! kind of change through one mount leaves the other guest and the store
//! untouched, and `store verify` stays clean.

use super::harness::{ino, Mount, World};
use crate::common::require_root;
use crate::tree::{assert_invisible, assert_verify_clean, bytes, file, snapshot, unify_json};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[test]
fn guests_unified_for_real_stay_isolated_through_their_mounts() {
    if !require_root("guests_unified_for_real_stay_isolated") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let (a, b) = (w.dir("a"), w.dir("b"));
    for g in [&a, &b] {
        for i in 0..8u64 {
            file(
                g,
                &format!("usr/lib/f{i}"),
                &bytes(i, 10_000 + i as usize),
                0o644,
            );
        }
        file(g, "usr/bin/tool", &bytes(50, 60_000), 0o755);
        fs::set_permissions(g, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 9, "{s}");
    let before_b = snapshot(&b);
    let ma = Mount::start(&store, &a, &w.dir("ma"), &[]);
    let mb = Mount::start(&store, &b, &w.dir("mb"), &[]);
    let inodes: Vec<u64> = (0..8)
        .map(|i| ino(&ma.path(&format!("usr/lib/f{i}"))))
        .collect();
    // Through A: write, append, truncate, O_TRUNC, chmod, chown, utimens, setxattr, mmap-free rewrite.
    let p = |i: u64| ma.path(&format!("usr/lib/f{i}"));
    fs::OpenOptions::new()
        .write(true)
        .open(p(0))
        .unwrap()
        .write_all(b"XX")
        .unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(p(1))
        .unwrap()
        .write_all(b"tail")
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(p(2))
        .unwrap()
        .set_len(10)
        .unwrap();
    fs::write(p(3), b"replaced by O_TRUNC").unwrap();
    fs::set_permissions(p(4), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(p(5), Some(1234), Some(1234)).unwrap();
    crate::tree::set_mtime(&p(6), 12345);
    crate::tree::set_xattr(&p(7), "user.changed", b"yes");
    for i in 0..8u64 {
        assert_eq!(ino(&p(i)), inodes[i as usize], "inode of f{i} changed in A");
        assert_eq!(fs::metadata(p(i)).unwrap().nlink(), 1);
    }
    assert_eq!(&fs::read(p(0)).unwrap()[..2], b"XX");
    // B, through its mount and on disk, and the store: untouched.
    assert_eq!(fs::read(mb.path("usr/lib/f0")).unwrap(), bytes(0, 10_000));
    assert_eq!(
        fs::metadata(mb.path("usr/lib/f4")).unwrap().mode() & 0o777,
        0o644
    );
    drop(ma);
    drop(mb);
    assert_invisible(&before_b, &snapshot(&b), "guest B");
    assert_verify_clean(&store);
    // A re-run keeps A's changed files private and B's still shared.
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(again["files_linked"], 0, "{again}");
    assert_eq!(
        crate::tree::ino(&a.join("usr/bin/tool")),
        crate::tree::ino(&b.join("usr/bin/tool"))
    );
    assert_ne!(
        crate::tree::ino(&a.join("usr/lib/f0")),
        crate::tree::ino(&b.join("usr/lib/f0"))
    );
    assert_verify_clean(&store);
}

#[test]
fn unify_while_a_guest_is_mounted_never_lets_its_writes_reach_the_store() {
    if !require_root("unify_while_a_guest_is_mounted") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let (a, b) = (w.dir("a"), w.dir("b"));
    let ma = Mount::start(&store, &a, &w.dir("ma"), &[]);
    // Written through the mount, looked at (so the daemon knows the node),
    // then unified behind its back.
    fs::create_dir_all(ma.path("etc")).unwrap();
    fs::write(ma.path("etc/conf"), b"same config\n").unwrap();
    fs::write(ma.path("etc/other"), b"other config\n").unwrap();
    file(&b, "etc/conf", b"same config\n", 0o644);
    file(&b, "etc/other", b"other config\n", 0o644);
    let m = fs::metadata(a.join("etc/conf")).unwrap();
    for f in ["etc/conf", "etc/other"] {
        std::os::unix::fs::chown(b.join(f), Some(m.uid()), Some(m.gid())).unwrap();
        let t = fs::metadata(a.join(f)).unwrap().modified().unwrap();
        fs::File::options()
            .write(true)
            .open(b.join(f))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let seen = ino(&ma.path("etc/conf"));
    assert_eq!(fs::read(ma.path("etc/conf")).unwrap(), b"same config\n");
    let s = unify_json(&store, &[&"--no-default-excludes", &a, &b]);
    assert_eq!(s["files_linked"], 2, "{s}");
    assert_eq!(
        crate::tree::ino(&a.join("etc/conf")),
        crate::tree::ino(&b.join("etc/conf"))
    );
    // Now the guest writes through its mount: the link must break first.
    fs::OpenOptions::new()
        .write(true)
        .open(ma.path("etc/conf"))
        .unwrap()
        .write_all(b"SAME")
        .unwrap();
    fs::write(ma.path("etc/other"), b"rewritten\n").unwrap();
    assert_eq!(ino(&ma.path("etc/conf")), seen);
    drop(ma);
    assert_eq!(fs::read(b.join("etc/conf")).unwrap(), b"same config\n");
    assert_eq!(fs::read(b.join("etc/other")).unwrap(), b"other config\n");
    assert_eq!(fs::read(a.join("etc/conf")).unwrap(), b"SAME config\n");
    assert_verify_clean(&store);
}

/// Guests cloned with `cp -al` (util-vserver's vclone, `rsync --link-dest`)
/// share inodes with no store in between: unify makes each such inode an
/// object in place, so that the mount breaks it on a write like any shared
/// file. A clone's own hardlink pair, linked twice by each guest, is given
/// to the clone as a copy of its own (still a pair).
#[test]
fn guests_cloned_with_cp_al_are_isolated_once_unified() {
    if !require_root("guests_cloned_with_cp_al") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let (a, c) = (w.dir("a"), w.dir("c"));
    for i in 0..4u64 {
        file(
            &a,
            &format!("usr/lib/f{i}"),
            &bytes(i, 9_000 + i as usize),
            0o644,
        );
    }
    file(&a, "usr/bin/perl", &bytes(40, 7_000), 0o755);
    fs::hard_link(a.join("usr/bin/perl"), a.join("usr/bin/perl5")).unwrap();
    // c has its own copy of f0, made separately.
    file(&c, "usr/lib/f0", &bytes(0, 9_000), 0o644);
    crate::tree::set_mtime(&c.join("usr/lib/f0"), 1_000_000);
    crate::tree::set_mtime(&a.join("usr/lib/f0"), 1_000_000);
    let b = w.tmp.path().join("b");
    let cp = std::process::Command::new("cp")
        .arg("-al")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(cp.success());
    let clone_ino = crate::tree::ino(&a.join("usr/lib/f1"));
    assert_eq!(crate::tree::ino(&b.join("usr/lib/f1")), clone_ino);
    let before: Vec<_> = [&a, &b, &c].iter().map(|g| snapshot(g)).collect();

    let s = unify_json(&store, &[&a, &b, &c]);
    for (g, snap) in [&a, &b, &c].iter().zip(&before) {
        assert_invisible(snap, &snapshot(g), &g.display().to_string());
    }
    // f1..f3: the clone's inode became the object as it was (nothing copied
    // or freed); f0: c's copy joined it.
    assert_eq!(crate::tree::ino(&a.join("usr/lib/f1")), clone_ino);
    assert_eq!(
        crate::tree::ino(&c.join("usr/lib/f0")),
        crate::tree::ino(&a.join("usr/lib/f0"))
    );
    assert_eq!(s["objects_added"], 4, "{s}");
    // Each shared inode is read once, and nothing came from a cache.
    assert_eq!(s["cache_hits"], 0, "{s}");
    assert_eq!(s["files_hashed"], 5, "{s}");
    assert_eq!(s["files_linked"], 1, "{s}");
    // c's f0 freed, less b's copy of the perl pair (below).
    assert_eq!(s["bytes_copied"], 7_000, "{s}");
    assert_eq!(s["bytes_saved"], 2_000, "{s}");
    assert_eq!(fs::metadata(a.join("usr/lib/f1")).unwrap().nlink(), 3);
    // The pair perl/perl5, linked twice by each clone, cannot be one object:
    // b gets its own copy of the pair, still a pair.
    assert_eq!(s["clone_paths_split"], 2, "{s}");
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    assert_eq!(fs::metadata(a.join("usr/bin/perl")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(b.join("usr/bin/perl")).unwrap().nlink(), 2);
    assert_eq!(
        crate::tree::ino(&b.join("usr/bin/perl")),
        crate::tree::ino(&b.join("usr/bin/perl5"))
    );
    assert_ne!(
        crate::tree::ino(&a.join("usr/bin/perl")),
        crate::tree::ino(&b.join("usr/bin/perl"))
    );
    assert_verify_clean(&store);

    // Through b's mount every write breaks b's link; a and the store keep theirs.
    let mb = Mount::start(&store, &b, &w.dir("mb"), &[]);
    let seen = ino(&mb.path("usr/lib/f1"));
    fs::OpenOptions::new()
        .append(true)
        .open(mb.path("usr/lib/f1"))
        .unwrap()
        .write_all(b"b only")
        .unwrap();
    fs::set_permissions(mb.path("usr/lib/f2"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(ino(&mb.path("usr/lib/f1")), seen);
    assert_eq!(fs::metadata(mb.path("usr/lib/f1")).unwrap().nlink(), 1);
    drop(mb);
    assert_eq!(fs::read(a.join("usr/lib/f1")).unwrap(), bytes(1, 9_001));
    assert_eq!(
        fs::metadata(a.join("usr/lib/f2")).unwrap().mode() & 0o777,
        0o644
    );
    assert!(fs::read(b.join("usr/lib/f1")).unwrap().ends_with(b"b only"));
    assert_verify_clean(&store);

    // A re-run reads nothing and finds everything linked.
    let again = unify_json(&store, &[&a, &b, &c]);
    assert_eq!(again["bytes_hashed"], 0, "{again}");
    assert_eq!(again["files_linked"], 0, "{again}");
}

/// Invariant 5 for times: what another guest does to a shared file (its
/// break changes the object's link count, so its ctime; its reads may move
/// the atime) does not show in this guest's view of its own path.
#[test]
fn another_guests_break_does_not_show_in_this_guests_times() {
    if !require_root("another_guests_break_does_not_show") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let (a, b) = (w.dir("a"), w.dir("b"));
    for g in [&a, &b] {
        file(g, "usr/lib/f", &bytes(3, 20_000), 0o644);
        crate::tree::set_mtime(&g.join("usr/lib/f"), 1_500_000_000);
    }
    unify_json(&store, &[&a, &b]);
    let seen = |m: &Mount| {
        let md = fs::metadata(m.path("usr/lib/f")).unwrap();
        (md.ctime(), md.ctime_nsec(), md.atime(), md.nlink())
    };
    let ma = Mount::start(&store, &a, &w.dir("ma"), &[]);
    let before = seen(&ma);
    drop(ma);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mb = Mount::start(&store, &b, &w.dir("mb"), &[]);
    fs::read(mb.path("usr/lib/f")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(mb.path("usr/lib/f"))
        .unwrap()
        .write_all(b"b")
        .unwrap();
    drop(mb);
    let ma = Mount::start(&store, &a, &w.dir("ma"), &[]);
    assert_eq!(seen(&ma), before);
    assert_eq!(
        before.0, 1_500_000_000,
        "a shared file shows its mtime as ctime"
    );
}
