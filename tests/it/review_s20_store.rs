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

/// The `store forget` a warning gives for a gone guest whose name is not
/// UTF-8 named it with U+FFFD, so pasting it failed ("not a guest of the
/// store"). It is now a shell word (bash's `$'…\xff…'`) that names it.
#[test]
fn the_forget_hint_for_a_gone_guest_works_when_pasted() {
    if !require_root("review_s20_the_forget_hint_for_a_gone_guest_works_when_pasted") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let a = dir.path().join("a");
    let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"c\xffd 'x'"));
    for g in [&a, &odd] {
        file_at(g, "usr/f", &[7u8; 5_000], 0o644, 1_600_000_000);
    }
    let store = dir.path().join("store");
    unify_json(&store, &[&a, &odd]);
    fs::remove_dir_all(&odd).unwrap();
    let out = unifs(&store, &[&"unify", &"--all"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(23), "{err}");
    let hint = err
        .split('`')
        .find(|s| s.starts_with("unifs store forget "))
        .unwrap_or_else(|| panic!("no forget hint: {err}"));
    assert!(hint.contains(r"\xff"), "{hint}");
    let bin = crate::common::unifs_bin();
    let pasted = hint.replacen(
        "unifs ",
        &format!("{} --store {} ", bin.display(), store.display()),
        1,
    );
    let forget = std::process::Command::new("bash")
        .args(["-c", &pasted])
        .output()
        .unwrap();
    assert!(forget.status.success(), "{pasted}: {}", stderr(&forget));
    let out = unifs(&store, &[&"unify", &"--all"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
