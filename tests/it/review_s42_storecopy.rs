//! Session 42, "storecopy": a store copied or restored beside the store
//! it came from. An operator's restore drill (docs/backup.md, case B, into
//! a second store while the original guests ran on) had `unify --all`
//! with the copy link 21,608 files of the four live original guests into
//! it, away from their own store, and its `--dry-run` said all 21,608
//! were "already linked".

use crate::common::require_root;
use crate::tree::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Guests `a` and `b` of `lab`, each with the same two files, unified into
/// `lab/store`.
pub(crate) fn unified_pair(lab: &Path) -> PathBuf {
    for g in ["a", "b"] {
        for (seed, rel, mode) in [(1, "usr/one", 0o644), (2, "usr/two", 0o755)] {
            file_at(&lab.join(g), rel, &bytes(seed, 5_000), mode, 1_600_000_000);
        }
    }
    let store = lab.join("store");
    unify_json(&store, &[&lab.join("a"), &lab.join("b")]);
    store
}

/// [`unified_pair`] in a new directory, and its store copied (`cp -a`) to
/// `copy` there: (the directory, lab, store, copy).
fn pair_and_copy() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    let store = unified_pair(&lab);
    let copy = dir.path().join("copy");
    cp_a(&store, &copy);
    (dir, lab, store, copy)
}

/// `cp -a FROM TO`, as store-format.md and backup.md copy a store.
fn cp_a(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A `unify --json` summary without what differs between any two runs
/// (times, the run's number, whether it was a dry run).
fn figures(mut s: serde_json::Value) -> serde_json::Value {
    let o = s.as_object_mut().unwrap();
    for k in [
        "run",
        "dry_run",
        "scan_seconds",
        "hash_seconds",
        "apply_seconds",
        "seconds",
    ] {
        assert!(o.remove(k).is_some(), "no {k} in {s:?}");
    }
    s
}

/// (device, inode) of each guest file.
fn inodes(lab: &Path) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for g in ["a", "b"] {
        for f in ["usr/one", "usr/two"] {
            let m = std::fs::metadata(lab.join(g).join(f)).unwrap();
            v.push((m.dev(), m.ino()));
        }
    }
    v
}

/// The dry run trusted the catalog's inode numbers of the object files,
/// which in a copied store are the original's: guest files still linking
/// the original's inodes were "already linked" (4), and the real run
/// linked all 4 to the copy's objects. Here the original store is gone
/// (backup.md, case B: its guests link its inodes on), so the real run
/// goes ahead: the dry run must say what it does.
#[test]
fn s42_a_dry_run_with_a_restored_store_says_what_the_real_run_does() {
    if !require_root("s42_a_dry_run_with_a_restored_store_says_what_the_real_run_does") {
        return;
    }
    let (_dir, lab, store, restored) = pair_and_copy();
    std::fs::remove_dir_all(&store).unwrap();
    let before = inodes(&lab);
    let dry = unify_json(&restored, &[&"--all", &"--dry-run"]);
    assert_eq!(inodes(&lab), before, "the dry run changed guest files");
    let real = unify_json(&restored, &[&"--all"]);
    assert_eq!(real["files_linked"], 4, "{real}");
    assert_eq!(figures(dry), figures(real));
}

/// `stats --json`'s count of guest links.
fn guest_links(store: &Path) -> serde_json::Value {
    stats_json(store)["usage"]["guest_links"].clone()
}

/// The accident itself: a copy of the store used while the original and
/// its guests are there. `unify --all` with the copy linked the original's
/// guests to the copy's objects (the original fell to 0 guest links here,
/// 27,287 to 5,678 in the operator's drill). It is refused now, by the
/// dry run as by the real run, before anything changes, naming both
/// stores' traces and what to do; the original keeps its guests.
#[test]
fn s42_unify_with_a_copied_store_refuses_the_originals_guests() {
    if !require_root("s42_unify_with_a_copied_store_refuses_the_originals_guests") {
        return;
    }
    let (_dir, lab, store, copy) = pair_and_copy();
    let before = inodes(&lab);
    let links = guest_links(&store);
    assert_eq!(links, 4);
    for dry in [true, false] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"unify", &"--all"];
        if dry {
            args.push(&"--dry-run");
        }
        let out = unifs(&copy, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "dry run {dry}: {err}");
        for want in [
            "4 files of the guests",
            "are objects of another store",
            "Nothing was changed",
            "-samefile",
            "store forget",
            "--move-from-other-store",
            "last used with another objects/ directory",
        ] {
            assert!(err.contains(want), "dry run {dry}: no {want:?} in {err}");
        }
        assert!(err.contains(&*copy.to_string_lossy()), "{err}");
        assert_eq!(inodes(&lab), before, "dry run {dry}: guest files changed");
        assert_eq!(guest_links(&store), links);
    }
}

/// To move the guests into the copy on purpose: `--move-from-other-store`
/// links them there, with a notice, and its dry run says the same.
#[test]
fn s42_move_from_other_store_moves_them_and_its_dry_run_says_so() {
    if !require_root("s42_move_from_other_store_moves_them_and_its_dry_run_says_so") {
        return;
    }
    let (_dir, _lab, store, copy) = pair_and_copy();
    let flag = "--move-from-other-store";
    let dry = unify_json(&copy, &[&"--all", &flag, &"--dry-run"]);
    let real = unify_json(&copy, &[&"--all", &flag]);
    assert_eq!(real["files_linked"], 4, "{real}");
    let notices = real["notices"].to_string();
    assert!(notices.contains("--move-from-other-store"), "{real}");
    assert_eq!(figures(dry), figures(real));
    assert_eq!(guest_links(&store), 0);
    assert_eq!(guest_links(&copy), 4);
}

/// The documented move (store-format.md, "Copying or moving a store with
/// its guests"): store and guests copied in one `cp -a`, the old guests
/// forgotten in the copy, the copied guests unified by their new paths.
/// Not refused: their files are the copy's objects. (A guard: passes
/// before and after.)
#[test]
fn s42_a_store_copied_with_its_guests_takes_them_after_forget() {
    if !require_root("s42_a_store_copied_with_its_guests_takes_them_after_forget") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    let store = unified_pair(&lab);
    let new = dir.path().join("new");
    cp_a(&lab, &new);
    let copy = new.join("store");
    let out = unifs(
        &copy,
        &[&"store", &"forget", &lab.join("a"), &lab.join("b")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (new.join("a"), new.join("b"));
    let dry = unify_json(&copy, &[&a, &b, &"--dry-run"]);
    let real = unify_json(&copy, &[&a, &b]);
    assert_eq!(real["files_already_linked"], 4, "{real}");
    assert_eq!(real["files_linked"], 0, "{real}");
    assert_eq!(figures(dry), figures(real));
    assert_eq!(guest_links(&store), 4);
    assert_eq!(guest_links(&copy), 4);
}
