//! Second review of unify, the store and the CLI (review s8b).

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn spawn_unify(store: &Path, guests: &[&Path]) -> std::process::Child {
    Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(store)
        .arg("unify")
        .args(guests)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A fresh store and guests in which a `unify a b` killed while linking
/// left temp names in `b`.
fn killed_with_temp_names() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    for attempt in 0..200u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let (a, b) = two_guests(dir.path());
        let mut child = spawn_unify(&store, &[&a, &b]);
        // Its record of directory mtimes is made just before it links.
        let record = store.join("tmp").join(format!("dirtimes-{}", child.id()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !record.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(attempt % 25 * 8));
        let _ = child.kill();
        let _ = child.wait();
        if !temp_names(&b).is_empty() && record.exists() {
            return (dir, store, a, b);
        }
    }
    panic!("no killed run left a temp name in 200 attempts");
}

/// A killed run's temp names are removed only in the directories its record
/// of directory mtimes names (`STORE/tmp/dirtimes-PID`). That record was
/// deleted by the next run as soon as it had put the mtimes back, before it
/// looked for temp names: when that run was given only the other guest, or
/// was killed before it got to them, every later run reported the temp
/// names as the guest's own, for good, and never removed them.
#[test]
fn review_s8b_temp_names_of_a_killed_run_outlive_the_next_runs_record() {
    if !require_root("review_s8b_temp_names_of_a_killed_run_outlive_the_next_runs_record") {
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
    if !require_root("review_s8b_temp_names_whose_record_is_lost_are_reported_not_removed") {
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
