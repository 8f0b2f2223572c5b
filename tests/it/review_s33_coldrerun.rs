//! Thirty-third session, the speed of a cold re-run. A re-run takes the
//! directory listings it kept where a directory's stat is as it was, and
//! stats the files listed by name. Statting them by inode number instead
//! (a file handle: no lookup, so no read of the directory's blocks with a
//! cold cache) was tried and not kept (docs/benchmarks.md); these tests
//! hold what any such shortcut must keep: a file mounted over after a run
//! is still left alone, and a file changed in place under a kept listing
//! is still seen.

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
/// still leave the mount point alone (it is not the guest's file), not
/// take the file under it (by its listed inode number, say).
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

/// A file rewritten in place (same inode, size and mtime; its directory's
/// listing still stands) is hashed again and linked to the other guest's
/// same content; a file renamed over another (its directory changed) is
/// seen too.
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
