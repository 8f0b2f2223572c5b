//! Review s12-store: the store's locks, modes and leftovers, and what
//! unify costs on a large store.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `flock(op)` on the store's lock file, as another unifs process holds it.
fn hold_lock(store: &Path, op: libc::c_int) -> fs::File {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.join("lock"))
        .unwrap();
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) }, 0);
    f
}

/// Runs `cmd` until the store is not busy (bounded): a lock this test
/// dropped lives on a moment in a child another test thread forked before
/// its exec closes the fd.
fn when_free(cmd: impl Fn() -> std::process::Output) -> std::process::Output {
    for _ in 0..50 {
        let out = cmd();
        if !String::from_utf8_lossy(&out.stderr).contains("is busy") {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cmd()
}

/// Guest g1 unified alone (its objects linked by nobody else), its
/// manifest and private files written, then g1 removed: what a restore
/// starts from. Returns the temp dir, store, manifest and private dir.
fn lost_guest() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g1 = dir.path().join("g1");
    let g2 = dir.path().join("g2");
    for g in [&g1, &g2] {
        file(g, "usr/bin/tool", &bytes(7, 6000), 0o755);
    }
    file(&g1, "etc/own", b"g1's own\n", 0o644);
    unify_json(&store, &[&g1, &g2]);
    let manifest = dir.path().join("g1.jsonl");
    let list = dir.path().join("g1.private");
    ok(&unifs(
        &store,
        &[&"manifest", &g1, &"-o", &manifest, &"--private-list", &list],
    ));
    let private = dir.path().join("private");
    file(&private, "etc/own", b"g1's own\n", 0o644);
    fs::remove_dir_all(&g1).unwrap();
    fs::remove_dir_all(&g2).unwrap();
    (dir, store, manifest, private)
}

/// Restore took no lock: a `store gc` running meanwhile could remove the
/// objects it had checked and was linking (after the loss nobody links
/// them: gc's very candidates), and docs/backup.md could only ask not to
/// run gc meanwhile. It now holds the lock shared: a writer holding it
/// makes restore fail at once with the busy message, writing nothing.
#[test]
fn restore_refuses_a_store_a_writer_holds() {
    if !require_root("restore_refuses_a_store_a_writer_holds") {
        return;
    }
    let (dir, store, manifest, private) = lost_guest();
    let target = dir.path().join("g1r");
    let restore = || {
        unifs(
            &store,
            &[
                &"restore",
                &"--manifest",
                &manifest,
                &"--from",
                &private,
                &target,
            ],
        )
    };
    let gc = hold_lock(&store, libc::LOCK_EX);
    let started = std::time::Instant::now();
    let err = failed(&restore());
    assert!(err.contains("is busy"), "{err}");
    assert!(started.elapsed().as_secs() < 5, "waited for the lock");
    assert!(!target.exists(), "wrote a target");
    drop(gc);
    ok(&when_free(restore));
    assert_eq!(fs::read(target.join("etc/own")).unwrap(), b"g1's own\n");
}

/// Restores share the lock with one another; a writer (gc) finds it busy
/// while one runs.
#[test]
fn restores_share_the_lock_and_keep_gc_out() {
    if !require_root("restores_share_the_lock_and_keep_gc_out") {
        return;
    }
    let (dir, store, manifest, private) = lost_guest();
    let other_restore = hold_lock(&store, libc::LOCK_SH);
    let target = dir.path().join("g1r");
    ok(&unifs(
        &store,
        &[
            &"restore",
            &"--manifest",
            &manifest,
            &"--from",
            &private,
            &target,
        ],
    ));
    fs::remove_dir_all(&target).unwrap();
    let err = failed(&unifs(&store, &[&"store", &"gc"]));
    assert!(err.contains("is busy"), "{err}");
    drop(other_restore);
    // With no restore, gc removes the lost guest's object.
    ok(&when_free(|| unifs(&store, &[&"store", &"gc"])));
    let objects: Vec<_> = walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .collect();
    assert!(objects.is_empty(), "{objects:?}");
}
