//! Review s21: `unifs unify` linking a mounted guest's files behind its
//! mount (the nightly unify of running guests) let the guest see the
//! sharing (invariant 5): link counts and times of the store object, and
//! a new number once the kernel forgot the file.

use super::harness::{ino, wait_until, Mount, World};
use crate::common::require_root;
use crate::tree::{bytes, file, unify_json};
use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Reads the file through the mount: the kernel then asks the daemon for
/// its attributes at the next stat (its atime changed), as after any read
/// of a guest.
fn read(path: &Path) {
    let mut v = Vec::new();
    fs::File::open(path).unwrap().read_to_end(&mut v).unwrap();
}

/// Reads `files` of the guests through their mounts (mount, guest's
/// directory), then waits for the releases of those opens to reach the
/// daemons: unify leaves a file the daemon holds open read-write as it is.
/// A read lease, refused while anyone holds the file open for writing,
/// says when (a fixed pause was too short on a loaded machine).
fn read_all(mounts: &[(&Mount, &Path)], files: &[&str]) {
    for (mount, _) in mounts {
        for f in files {
            read(&mount.path(f));
        }
    }
    unifs::sys::ignore_sigio();
    for (_, guest) in mounts {
        for f in files {
            let backing = fs::File::open(guest.join(f)).unwrap();
            let lease = || unifs::sys::take_read_lease(backing.as_fd()).is_ok();
            assert!(
                wait_until(Duration::from_secs(60), lease),
                "{f}: its daemon still holds it open for writing"
            );
        }
    }
}

/// Three guests with the same files in usr/lib (f0, f1) and one file of
/// their own each, which the first guest hardlinked (own, own2).
fn guests(w: &World) -> [std::path::PathBuf; 3] {
    let gs = [w.dir("g"), w.dir("g2"), w.dir("g3")];
    for (n, g) in gs.iter().enumerate() {
        for i in 0..2 {
            file(g, &format!("usr/lib/f{i}"), &bytes(i, 10_000), 0o644);
        }
        file(g, "usr/lib/own", &bytes(100 + n as u64, 10_000), 0o644);
    }
    fs::hard_link(gs[0].join("usr/lib/own"), gs[0].join("usr/lib/own2")).unwrap();
    gs
}

/// A file the guest had looked up (private: one link) that unify then made
/// the store object (this very inode) or replaced by a link to another
/// guest's was shown with the object's link count (store + every guest
/// linking it) and its real atime and ctime, until it was opened again:
/// the getattr trusted the table's "private" for an inode it had not seen
/// change. The guest's own hardlink pair stays a pair.
#[test]
fn review_s21_a_file_unified_behind_the_mount_shows_one_link_and_hidden_times() {
    if !require_root("review_s21_a_file_unified_behind_the_mount_shows_one_link") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let [g, g2, g3] = guests(&w);
    let m = Mount::start(&store, &g, &w.dir("m"), &[]);
    let m3 = Mount::start(&store, &g3, &w.dir("m3"), &[]);
    let files = ["usr/lib/f0", "usr/lib/f1", "usr/lib/own"];
    read_all(&[(&m, &g), (&m3, &g3)], &files);
    unify_json(&store, &[&"--no-default-excludes", &g, &g2, &g3]);
    let f0 = |g: &Path| ino(&g.join("usr/lib/f0"));
    assert_eq!(f0(&g), f0(&g3), "unify linked the guests' files");
    for mount in [&m, &m3] {
        // f0 is only stat'ed (the daemon's getattr); f1 read first (its
        // open finds the store's marker).
        read(&mount.path("usr/lib/f1"));
        for i in 0..2 {
            let p = mount.path(&format!("usr/lib/f{i}"));
            let st = fs::symlink_metadata(&p).unwrap();
            let backing = fs::metadata(
                if mount.dir == m.dir { &g } else { &g3 }.join(format!("usr/lib/f{i}")),
            )
            .unwrap();
            assert!(backing.nlink() >= 4, "unify linked it: {}", backing.nlink());
            assert_eq!(
                st.nlink(),
                1,
                "{}: the store object's link count shows the sharing",
                p.display()
            );
            assert_eq!(
                (st.atime(), st.atime_nsec(), st.ctime(), st.ctime_nsec()),
                (st.mtime(), st.mtime_nsec(), st.mtime(), st.mtime_nsec()),
                "{}: atime and ctime of a shared file are its mtime",
                p.display()
            );
        }
    }
    // The guest's own hardlinks keep hardlink semantics.
    read(&m.path("usr/lib/own"));
    let (a, b) = (
        fs::metadata(m.path("usr/lib/own")).unwrap(),
        fs::metadata(m.path("usr/lib/own2")).unwrap(),
    );
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), ino(&g.join("usr/lib/own")));
    drop((m, m3));
}

/// A private file (numbered by its backing inode) that unify linked behind
/// the mount kept its number only while the kernel cached it: once the
/// kernel forgot it (drop_caches), a lookup gave it a number from the
/// shared range, though nothing changed it for the guest. Now the daemon,
/// once it has seen the file shared (here: a read and a stat), keeps its
/// number for its path, as it keeps a shared path's; so for a path unify
/// replaced by a link to another guest's file.
#[test]
fn review_s21_a_file_unified_behind_the_mount_keeps_its_number_when_forgotten() {
    let _forgets = crate::common::forgets_held();
    if !require_root("review_s21_a_file_unified_behind_the_mount_keeps_its_number") {
        return;
    }
    let w = World::new();
    let store = w.tmp.path().join("real-store");
    let [g, g2, g3] = guests(&w);
    let m = Mount::start(&store, &g, &w.dir("m"), &[]);
    let m3 = Mount::start(&store, &g3, &w.dir("m3"), &[]);
    let files = ["usr/lib/f0", "usr/lib/f1"];
    let seen: Vec<u64> = [&m, &m3]
        .iter()
        .flat_map(|mount| files.map(|f| ino(&mount.path(f))))
        .collect();
    read_all(&[(&m, &g), (&m3, &g3)], &files);
    unify_json(&store, &[&"--no-default-excludes", &g, &g2, &g3]);
    let f0 = |g: &Path| ino(&g.join("usr/lib/f0"));
    assert_eq!(f0(&g), f0(&g3), "unify linked the guests' files");
    // The daemon sees each file shared: f0 by a stat (getattr), f1 by an
    // open.
    for mount in [&m, &m3] {
        fs::metadata(mount.path("usr/lib/f0")).unwrap();
        read(&mount.path("usr/lib/f1"));
    }
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let after: Vec<u64> = [&m, &m3]
        .iter()
        .flat_map(|mount| files.map(|f| ino(&mount.path(f))))
        .collect();
    assert_eq!(after, seen, "numbers before unify, after the kernel forgot");
    // Still two files to the guest, and a break keeps the number.
    fs::write(m.path("usr/lib/f0"), b"changed\n").unwrap();
    assert_eq!(ino(&m.path("usr/lib/f0")), seen[0]);
    assert_eq!(fs::read(m3.path("usr/lib/f0")).unwrap(), bytes(0, 10_000));
    drop((m, m3));
}
