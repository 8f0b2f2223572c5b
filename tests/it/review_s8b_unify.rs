//! Second review of unify, the store and the CLI (review s8b).

use crate::common::{require_root, require_strace};
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Guests `a` and `b` with the same 3000 files in 60 directories.
fn two_guests(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("a"), dir.join("b"));
    for g in [&a, &b] {
        for j in 0..3000u64 {
            file(g, &format!("d{}/f{j}", j % 60), &bytes(j, 1500), 0o644);
        }
    }
    (a, b)
}

/// Every `.unifs-tmp-*` name below `root`.
fn temp_names(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(temp_names(&path));
        } else if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".unifs-tmp-"))
        {
            found.push(path);
        }
    }
    found
}

/// A fresh store and guests in which a `unify a b` killed while linking
/// left a temp name in `b`: strace kills it as it enters its 40th
/// `renameat2` (one linking thread: the exchange of a linked temp name with
/// a guest file of `b`), so the temp name is left, and its record of
/// directory mtimes too. (Killing it after a random wait needed up to 200
/// tries of 6,000 files each, over 20 minutes on a loaded machine.)
fn killed_with_temp_names() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = two_guests(dir.path());
    let status = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null"])
        .arg("--inject=renameat2:signal=SIGKILL:when=40")
        .arg(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--no-progress"])
        .args([&a, &b])
        .env("UNIFS_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), None, "killed");
    assert!(!temp_names(&b).is_empty(), "no temp name left in b");
    let records = fs::read_dir(store.join("tmp"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("dirtimes-")
        })
        .count();
    assert_eq!(records, 1, "the killed run's record");
    (dir, store, a, b)
}

/// A killed run's temp names are removed only in the directories its record
/// of directory mtimes names (`STORE/tmp/dirtimes-PID`). That record was
/// deleted by the next run as soon as it had put the mtimes back, before it
/// looked for temp names: when that run was given only the other guest, or
/// was killed before it got to them, every later run reported the temp
/// names as the guest's own, for good, and never removed them.
#[test]
fn review_s8b_temp_names_of_a_killed_run_outlive_the_next_runs_record() {
    if !require_root("review_s8b_temp_names_of_a_killed_run_outlive_the_next_runs_record")
        || !require_strace("review_s8b_temp_names_of_a_killed_run_outlive_the_next_runs_record")
    {
        return;
    }
    // The next run is given only the guest without temp names.
    let (_dir, store, a, b) = killed_with_temp_names();
    let left = temp_names(&b);
    let s = unify_json(&store, &[&a]);
    assert_eq!(s["stale_tmp_removed"], 0, "{s}");
    assert_eq!(temp_names(&b), left);
    let s = unify_json(&store, &[&a, &b]);
    assert!(s["problems"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(s["stale_tmp_removed"], left.len() as u64, "{s}");
    assert!(temp_names(&b).is_empty());
    assert_verify_clean(&store);
    assert_no_records(&store);

    // (A next run killed while it scans is the same case: the record is
    // gone either way. Not timed here: each try builds 6,000 files.)
}

fn assert_no_records(store: &Path) {
    let names: Vec<String> = fs::read_dir(store.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dirtimes-"))
        .collect();
    assert!(names.is_empty(), "left in tmp/: {names:?}");
}

/// Without the record (deleted), a killed run's temp names cannot be told
/// from the guest's own files: reported and left, and the store stays
/// sound.
#[test]
fn review_s8b_temp_names_whose_record_is_lost_are_reported_not_removed() {
    if !require_root("review_s8b_temp_names_whose_record_is_lost_are_reported_not_removed")
        || !require_strace("review_s8b_temp_names_whose_record_is_lost_are_reported_not_removed")
    {
        return;
    }
    let (_dir, store, a, b) = killed_with_temp_names();
    let left = temp_names(&b);
    for e in fs::read_dir(store.join("tmp")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("dirtimes-")
        {
            fs::remove_file(p).unwrap();
        }
    }
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["stale_tmp_removed"], 0, "{s}");
    let problems = s["problems"].as_array().unwrap();
    assert_eq!(problems.len(), left.len(), "{s}");
    assert!(
        problems.iter().all(|p| p["what"]
            .as_str()
            .unwrap()
            .contains("no killed run recorded")),
        "{s}"
    );
    assert_eq!(temp_names(&b), left);
    assert_verify_clean(&store);
}
