//! Review s42 (hostrev) of "hostopen" (06882ba, 28c5fb4, ce69ec3): unify
//! and `store gc` open a guest's entry only once an `O_PATH` look shows it
//! regular (sys::open_regular_beneath / open_regular_at).
//!
//! - Found: two reads of a store object (an inode every guest path linking
//!   it shares) moved its atime, where every read of a guest's file is
//!   `O_NOATIME`: `--paranoid`'s byte compare, and the copy made of a full
//!   object (EMLINK, or UNIFS_TEST_LINK_MAX here). relatime moves an atime
//!   older than the mtime or ctime (and a link into the store moves the
//!   ctime), so the guests' files read as "accessed now" after a unify
//!   that only looked at them. Both now open the object `O_NOATIME`
//!   through the same helper.
//! - Guard: the split of an inode a `cp -al` clone shares (after hashing
//!   left it alone) opens no device node the guest swapped in after the
//!   walk; 06882ba changed split.rs but no test reached it.

use crate::review_s42_hostopen::{swap_for_node, unify_held};
use crate::tree::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// An atime older than [`MTIME`]: relatime moves it on the next read.
const OLD_ATIME: i64 = 978_307_200;

fn set_atime(path: &Path, sec: i64) {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(sec as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_accessed(at))
        .unwrap();
}

/// `n` files of one content (and mtime) in guest `g`, each with an old
/// atime.
fn twins(g: &Path, n: usize) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|i| {
            let p = file(g, &format!("usr/lib/t{i}.so"), &bytes(7, 30_000), 0o644);
            set_atime(&p, OLD_ATIME);
            p
        })
        .collect()
}

/// Asserts that each of `paths` still has [`OLD_ATIME`] (`s`: the run's
/// summary, shown on failure).
fn assert_atimes_old(paths: &[std::path::PathBuf], s: &serde_json::Value) {
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let atimes: Vec<_> = paths
        .iter()
        .map(|p| (name(p), std::fs::metadata(p).unwrap().atime()))
        .collect();
    let want: Vec<_> = paths.iter().map(|p| (name(p), OLD_ATIME)).collect();
    assert_eq!(atimes, want, "{s}");
}

/// `unify --paranoid` compares each file's bytes with the object's before
/// linking it. Before: the object was opened without `O_NOATIME`, so the
/// compare moved the atime of the object, which is the first file's inode
/// and then every linked path's (here to the run's time).
#[test]
fn s42_paranoid_unify_leaves_the_objects_atime_alone() {
    if !crate::common::require_root("s42_paranoid_unify_leaves_the_objects_atime_alone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g");
    let paths = twins(&g, 3);
    let s = unify_json(&dir.path().join("store"), &[&"--paranoid", &g]);
    assert_eq!(s["files_linked"], 2, "{s}");
    assert_atimes_old(&paths, &s);
}

/// An object full of links gets a second copy, made by reading the first.
/// Before: that read was without `O_NOATIME` and moved the atime of the
/// full copy, the inode of every guest path already linking it.
#[test]
fn s42_a_second_copy_leaves_the_full_objects_atime_alone() {
    if !crate::common::require_root("s42_a_second_copy_leaves_the_full_objects_atime_alone") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("g");
    let paths = twins(&g, 4);
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.arg("--store")
        .arg(dir.path().join("store"))
        .args(["unify", "--json"])
        .arg(&g)
        // The object, the store's name and two guest paths: full.
        .env("UNIFS_TEST_LINK_MAX", "3");
    let out = crate::guest::harness::run_bounded(cmd, Duration::from_secs(60));
    let s = unify_summary(&out);
    assert_eq!(s["extra_copies"], 1, "{s}");
    let full = std::fs::metadata(&paths[0]).unwrap();
    let on_full: Vec<_> = paths
        .iter()
        .filter(|p| std::fs::metadata(p).unwrap().ino() == full.ino())
        .cloned()
        .collect();
    assert!(on_full.len() >= 2, "{s}");
    assert_atimes_old(&on_full, &s);
}

/// A sparse file (left alone by hashing) that a `cp -al` clone shares is
/// split after hashing: the clone gets a copy of its own. A device node
/// the clone's root renamed over its path after the walk is not opened by
/// the split, which reports the path. Guard of 06882ba's split.rs change:
/// with split.rs's `open_at` by name back, the node was opened (1 IN_OPEN).
#[test]
fn s42_a_split_opens_no_device_node_swapped_in_after_the_walk() {
    if !crate::common::require_root("s42_a_split_opens_no_device_node_swapped_in_after_the_walk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // A candidate (of one size class with another file): hashing leaves
    // it alone (sparse; here changed: the swap below moves its ctime), and
    // the split of what hashing left comes after the stop.
    let sparse = a.join("usr/lib/img");
    sparse_file(&sparse, 1 << 20);
    set_mtime(&sparse, MTIME);
    file(&a, "usr/lib/other", &bytes(9, 1 << 20), 0o644);
    let cp = Command::new("cp").arg("-al").arg(&a).arg(&b).status();
    assert!(cp.unwrap().success());
    let img = b.join("usr/lib/img");
    let store = dir.path().join("store");
    let (s, opens) = unify_held(&store, &[&a, &b], &img, || swap_for_node(&img));
    assert_eq!(
        opens,
        0,
        "unify opened the device node a guest put at {}: {s}",
        img.display()
    );
    let problems = s["problems"].to_string();
    assert!(problems.contains("b/usr/lib/img"), "reported: {s}");
    assert!(
        std::fs::symlink_metadata(&img)
            .unwrap()
            .file_type()
            .is_char_device(),
        "the node is left where the guest put it"
    );
}
