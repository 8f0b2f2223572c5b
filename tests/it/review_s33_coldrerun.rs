//! Thirty-third session, the speed of a cold re-run: a re-run stats the
//! files of a directory whose kept listing still stands by their inode
//! numbers (a file handle), not by name, so that with a cold cache it does
//! not read the directory's blocks. What it must still see as a walk by
//! name does.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Unmounts what a test bind-mounted, even when it fails.
struct BindMount(PathBuf);

impl BindMount {
    fn new(from: &Path, over: &Path) -> BindMount {
        nix::mount::mount(
            Some(from),
            over,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        BindMount(over.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

const MTIME: u64 = 1_600_000_000;

/// Two guests sharing a few files, each with a private one in `etc/` (of
/// one size and mtime: hashed, to tell them apart).
fn guests(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("g0"), dir.join("g1"));
    for (i, g) in [&a, &b].into_iter().enumerate() {
        for n in 0..4u64 {
            file(g, &format!("usr/lib/lib{n}.so"), &bytes(n, 5000), 0o644);
        }
        let own = bytes(100 + i as u64, 3000);
        file_at(g, "etc/own.conf", &own, 0o644, MTIME);
    }
    (a, b)
}

fn reads(s: &serde_json::Value) -> (Option<u64>, Option<u64>) {
    (s["dirs_read"].as_u64(), s["dirs_from_cache"].as_u64())
}

/// A file bind-mounted over a guest's file after a run leaves the
/// directory's stat as it was, so its kept listing stands: the re-run must
/// still leave the mount point alone (it is not the guest's file), as a
/// walk by name does, not take the file under it by its inode number.
#[test]
fn a_file_mounted_over_after_a_run_is_left_alone_by_the_rerun() {
    if !require_root("a_file_mounted_over_after_a_run_is_left_alone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = guests(dir.path());
    let store = dir.path().join("store");
    let first = unify_json(&store, &[&a, &b]);
    let scanned = first["files_scanned"].as_u64().unwrap();
    assert_eq!(scanned, 10, "{first}");
    let host = file(dir.path(), "host/resolv.conf", &bytes(7, 2000), 0o644);
    let _mount = BindMount::new(&host, &a.join("etc/own.conf"));
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(reads(&again).0, Some(0), "the listings stood: {again}");
    assert_eq!(again["files_scanned"], scanned - 1, "{again}");
    assert_eq!(again["files_hashed"], 0, "{again}");
    assert_eq!(fs::metadata(&host).map(|m| m.len()).unwrap(), 2000);
}

/// What a re-run stats by inode number is what it would find by name: a
/// file rewritten in place (its directory's listing still stands) is
/// hashed again and linked to the other guest's same content; a file
/// renamed over another (its directory changed) is seen too.
#[test]
fn a_rerun_sees_files_changed_under_a_kept_listing() {
    if !require_root("a_rerun_sees_files_changed_under_a_kept_listing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = guests(dir.path());
    let store = dir.path().join("store");
    unify_json(&store, &[&a, &b]);
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(reads(&again).0, Some(0), "{again}");
    let own = |g: &Path| g.join("etc/own.conf");
    assert_ne!(ino(&own(&a)), ino(&own(&b)));
    // In place: same inode, size and mtime, same directory stat; only the
    // content and the ctime tell.
    let before = ino(&own(&b));
    fs::write(own(&b), fs::read(own(&a)).unwrap()).unwrap();
    set_mtime(&own(&b), MTIME);
    assert_eq!(ino(&own(&b)), before);
    let changed = unify_json(&store, &[&a, &b]);
    assert_eq!(reads(&changed).0, Some(0), "{changed}");
    assert_eq!(changed["files_linked"], 1, "{changed}");
    assert_eq!(ino(&own(&a)), ino(&own(&b)));
    // Renamed over: the directory changed and is read again.
    file(&b, "etc/new.conf", &bytes(2, 5000), 0o644);
    fs::rename(b.join("etc/new.conf"), own(&b)).unwrap();
    let renamed = unify_json(&store, &[&a, &b]);
    assert_eq!(reads(&renamed).0, Some(1), "{renamed}");
    assert_eq!(renamed["files_linked"], 1, "{renamed}");
    assert_eq!(ino(&own(&b)), ino(&a.join("usr/lib/lib2.so")));
    assert_ne!(ino(&own(&a)), ino(&own(&b)));
    assert_verify_clean(&store);
}
