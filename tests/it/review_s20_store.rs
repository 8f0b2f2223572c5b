//! Store findings of the twentieth session's testers.

use crate::common::require_root;
use crate::tree::{file_at, init_store, stderr, unifs, unify_json};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// (inode, link count) of every file of `root`, by path.
fn links(root: &Path) -> Vec<(std::path::PathBuf, u64, u64)> {
    let mut out: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let m = e.metadata().unwrap();
            (e.path().to_path_buf(), m.ino(), m.nlink())
        })
        .collect();
    out.sort();
    out
}

/// The store moved (or its filesystem not mounted where it was): the
/// nightly `unify` with the old --store made a new store there, took the
/// old store's inodes as its objects and exited 0, its only notice a log
/// line. A run that would make the store now refuses such guests, names
/// --store, and leaves no store behind (so the next run refuses again);
/// one made on purpose with `store init` takes them, with a warning.
#[test]
fn a_new_store_refuses_guests_of_a_store_that_moved() {
    if !require_root("review_s20_a_new_store_refuses_guests_of_a_store_that_moved") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for g in [&a, &b] {
        for i in 0..3 {
            file_at(
                g,
                &format!("usr/f{i}"),
                &vec![i as u8; 7_000],
                0o644,
                1_600_000_000,
            );
        }
    }
    let store = dir.path().join("store");
    unify_json(&store, &[&a, &b]);
    let moved = dir.path().join("store.moved");
    fs::rename(&store, &moved).unwrap();
    let before = (links(&a), links(&b), links(&moved));

    for dry in [true, false, false] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"unify", &a, &b];
        if dry {
            args.push(&"--dry-run");
        }
        let out = unifs(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("did not exist")
                && err.contains("another store")
                && err.contains("--store"),
            "{err}"
        );
        assert!(
            !store.exists(),
            "a store was left at {}: {err}",
            store.display()
        );
        assert_eq!((links(&a), links(&b), links(&moved)), before);
    }

    // An empty directory named as the store stays, empty.
    fs::create_dir(&store).unwrap();
    let out = unifs(&store, &[&"unify", &a]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(fs::read_dir(&store).unwrap().count(), 0);

    // Made on purpose: taken, with a warning, exit 0.
    init_store(&store);
    let out = unifs(&store, &[&"unify", &a, &b]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("unifs: warning: ") && err.contains("objects of another store"),
        "{err}"
    );
}
