//! Review s9-exhaust: running out of things (space, inodes) on small
//! loop-mounted filesystems: unifs loses nothing, says which path and why,
//! and the next run recovers.

use crate::common::require_root;
use crate::tree::{assert_verify_clean, bytes, file, stderr, unifs, unify_json};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// A small ext4 filesystem (no blocks reserved for root, so root fills it
/// too) in an image file, loop-mounted for a test; unmounted (and its loop
/// device freed) even when the test fails.
pub(crate) struct Ext4 {
    dir: tempfile::TempDir,
}

impl Ext4 {
    pub(crate) fn new(size: u64) -> Ext4 {
        Ext4::with(size, &[])
    }

    /// With more `mkfs.ext4` arguments.
    pub(crate) fn with(size: u64, mkfs_args: &[&str]) -> Ext4 {
        let args = [&["-q", "-m", "0"], mkfs_args].concat();
        Ext4 {
            dir: crate::common::mounted_image("ext4", size, &args),
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join("fs").join(rel)
    }

    /// Fills the filesystem with `filler` until writes fail (ENOSPC), then
    /// gives back `leave` bytes.
    pub(crate) fn fill(&self, leave: u64) {
        let path = self.path("filler");
        let mut f = fs::File::create(&path).unwrap();
        for chunk in [1 << 16, 1024] {
            while f.write_all(&vec![0u8; chunk]).is_ok() {}
        }
        let _ = f.sync_all();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
        f.sync_all().unwrap();
    }

    pub(crate) fn unfill(&self) {
        fs::remove_file(self.path("filler")).unwrap();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(
            &self.dir.path().join("fs"),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

/// On a full filesystem SQLite cannot map catalog.db-shm (the first open
/// of the catalog, a reader's too, grows it) and says "disk I/O error",
/// which reads like a failing disk: every command and the backup commands
/// as well failed so, with no word of space. The error now says the filesystem is full.
#[test]
fn catalog_errors_on_a_full_filesystem_say_it_is_full() {
    if !require_root("review_s9_catalog_errors_on_a_full_filesystem") {
        return;
    }
    let ext4 = Ext4::new(32 << 20);
    let store = ext4.path("store");
    let (a, b) = (ext4.path("a"), ext4.path("b"));
    for g in [&a, &b] {
        file(g, "usr/x", &bytes(1, 300_000), 0o644);
        file(g, "usr/y", &bytes(2, 200_000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    // An object no guest links (gc's to remove), a new file to link.
    fs::remove_file(a.join("usr/y")).unwrap();
    fs::remove_file(b.join("usr/y")).unwrap();
    file(&a, "usr/z", &bytes(3, 100_000), 0o644);
    file(&b, "usr/z", &bytes(3, 100_000), 0o644);
    ext4.fill(0);
    let catalog = store.join("catalog.db");
    for args in [
        // (Not `store gc`: it removes unused objects first on a full disk,
        // review_s18_store.)
        vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"stats"],
        vec![&"store", &"verify"],
        vec![&"manifest", &a],
        vec![&"unify", &a, &b],
    ] {
        let out = unifs(&store, &args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("catalog {}", catalog.display()))
                && err.contains("the filesystem holding it is full"),
            "{err}"
        );
    }
    // With space again, all is well, and the work is done.
    ext4.unfill();
    assert_verify_clean(&store);
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    let out = unifs(&store, &[&"store", &"gc", &"--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gc["objects_removed"], 1, "{gc}");
    assert_verify_clean(&store);
}

/// `store snapshot` onto a filesystem without room for it failed halfway
/// and left the partial DEST (with its journal) behind: taking the space,
/// looking like a snapshot to whoever did not check the exit status (and
/// SQLite rolls it back to an empty database on the next open), and making
/// the next try refuse "DEST exists". The error blamed the store's catalog.
/// It is now written under a temp name, renamed into place when complete,
/// and removed when it fails.
#[test]
fn a_snapshot_that_runs_out_of_space_leaves_nothing_behind() {
    if !require_root("review_s9_a_snapshot_that_runs_out_of_space") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("store");
    let (a, b) = (lab.path().join("a"), lab.path().join("b"));
    for g in [&a, &b] {
        for i in 0..300 {
            file(g, &format!("usr/f{i}"), &bytes(i, 100), 0o644);
        }
    }
    unify_json(&store, &[&a, &b]);
    let size = fs::metadata(store.join("catalog.db")).unwrap().len();
    let ext4 = Ext4::new(8 << 20);
    ext4.fill(size / 4);
    let dest = ext4.path("snap.db");
    let listing = || {
        let mut v: Vec<_> = fs::read_dir(ext4.path(""))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = listing();
    let out = unifs(&store, &[&"store", &"snapshot", &dest]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("writing {}", dest.display()))
            && err.contains("the filesystem holding it is full")
            && !err.contains(&store.display().to_string()),
        "{err}"
    );
    assert_eq!(listing(), before, "a partial snapshot was left");
    ext4.unfill();
    let out = unifs(&store, &[&"store", &"snapshot", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 300);
    drop(conn);
    let left: Vec<_> = listing()
        .into_iter()
        .filter(|n| n.starts_with("snap.db."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A restore onto a filesystem without room for the guest failed with
/// "N file(s) did not verify against the manifest", which says the backup
/// is damaged, though nothing was checked: the files could not be written.
/// The error now says what failed; the next try, with room, restores.
#[test]
fn a_restore_that_runs_out_of_space_does_not_blame_the_backup() {
    if !require_root("review_s9_a_restore_that_runs_out_of_space") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("store");
    let (a, b) = (lab.path().join("a"), lab.path().join("b"));
    for i in 0..8 {
        let shared = bytes(i, 200_000);
        file(&a, &format!("usr/s{i}"), &shared, 0o644);
        file(&b, &format!("usr/s{i}"), &shared, 0o644);
        file(&a, &format!("etc/p{i}"), &bytes(100 + i, 100_000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    let manifest = lab.path().join("a.jsonl");
    let out = unifs(&store, &[&"manifest", &a, &"-o", &manifest]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ext4 = Ext4::new(8 << 20);
    ext4.fill(1 << 20);
    let target = ext4.path("web1");
    // The guest itself holds its private files at their paths.
    let restore = || crate::tree::restore(&store, &manifest, &a, &target);
    let out = restore();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("No space left on device") && !err.contains("did not verify"),
        "{err}"
    );
    assert!(!target.exists());
    ext4.unfill();
    let out = restore();
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 0..8 {
        let p = format!("etc/p{i}");
        assert_eq!(
            fs::read(target.join(&p)).unwrap(),
            fs::read(a.join(&p)).unwrap()
        );
    }
}

/// With no inode left, SQLite cannot create catalog.db-shm and says only
/// "unable to open database file", which suggests a missing or unreadable
/// catalog; the error now says the filesystem is full.
#[test]
fn catalog_errors_with_no_inodes_left_say_the_filesystem_is_full() {
    if !require_root("review_s9_catalog_errors_with_no_inodes_left") {
        return;
    }
    let ext4 = Ext4::with(16 << 20, &["-N", "128"]);
    let store = ext4.path("store");
    let (a, b) = (ext4.path("a"), ext4.path("b"));
    for g in [&a, &b] {
        file(g, "usr/x", &bytes(1, 5000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    file(&a, "usr/z", &bytes(3, 5000), 0o644);
    file(&b, "usr/z", &bytes(3, 5000), 0o644);
    let fill = ext4.path("fill");
    fs::create_dir(&fill).unwrap();
    let mut n = 0;
    while fs::File::create(fill.join(n.to_string())).is_ok() {
        n += 1;
    }
    for args in [
        vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"stats"],
        vec![&"unify", &a, &b],
    ] {
        let out = unifs(&store, &args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("the filesystem holding it is full"), "{err}");
    }
    fs::remove_dir_all(&fill).unwrap();
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_verify_clean(&store);
}

/// Below the open-file limit unify needs (docs/unify.md: about 350 fds
/// plus one per guest), a run left files as they were with only "Too many
/// open files" for each, hundreds of lines, without a word of the limit.
/// It is now refused at the start, saying what the limit is and how to
/// raise it; with it raised, a run finishes.
#[test]
fn unify_below_the_open_file_limit_it_needs_says_so_first() {
    if !require_root("review_s9_unify_below_the_open_file_limit") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("store");
    let guests: Vec<PathBuf> = (0..3).map(|i| lab.path().join(format!("g{i}"))).collect();
    for g in &guests {
        for i in 0..600 {
            file(
                g,
                &format!("usr/d{}/e{}/f{i}", i % 60, i % 7),
                &bytes(i, 64),
                0o644,
            );
        }
    }
    let out = Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--json"])
        .args(&guests)
        .output()
        .expect("prlimit (util-linux)");
    // Refused before anything is made (it went on, file by file, and
    // left files as they were; review s27).
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the open-file limit is 256") && err.contains("ulimit -n"),
        "{err}"
    );
    assert!(!store.exists(), "a refused run made the store");
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = guests.iter().map(|g| g as _).collect();
    let s = unify_json(&store, &args);
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    assert_verify_clean(&store);
    for i in 0..600 {
        let rel = format!("usr/d{}/e{}/f{i}", i % 60, i % 7);
        assert_eq!(
            crate::tree::ino(&guests[0].join(&rel)),
            crate::tree::ino(&guests[2].join(&rel))
        );
    }
}

/// `manifest -o FILE --private-list LIST` onto a full filesystem said only
/// "No space left on device", naming no file, and had already put LIST in
/// place: a new private list beside an older manifest of the same name
/// (a backup folder used again, as the restic steps of docs/backup.md do).
/// The error now names the file, and neither is put in place.
#[test]
fn a_manifest_that_runs_out_of_space_names_its_file_and_keeps_the_old_pair() {
    if !require_root("review_s9_a_manifest_that_runs_out_of_space") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("store");
    let (a, b) = (lab.path().join("a"), lab.path().join("b"));
    for i in 0..400 {
        file(&a, &format!("usr/shared{i}"), &bytes(i, 100), 0o644);
        file(&b, &format!("usr/shared{i}"), &bytes(i, 100), 0o644);
        file(&a, &format!("etc/own{i}"), &bytes(1000 + i, 100), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    let ext4 = Ext4::new(8 << 20);
    let (m, list) = (ext4.path("a.jsonl"), ext4.path("a.private-list"));
    fs::write(&m, b"older manifest\n").unwrap();
    fs::write(&list, b"older list\0").unwrap();
    ext4.fill(16 << 10);
    let args: [&dyn AsRef<std::ffi::OsStr>; 6] =
        [&"manifest", &a, &"-o", &m, &"--private-list", &list];
    let out = unifs(&store, &args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("writing {}", m.display())) && err.contains("No space left"),
        "{err}"
    );
    assert_eq!(fs::read(&m).unwrap(), b"older manifest\n");
    assert_eq!(fs::read(&list).unwrap(), b"older list\0");
    let mut names: Vec<_> = fs::read_dir(ext4.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.jsonl", "a.private-list", "filler", "lost+found"]);
    ext4.unfill();
    let out = unifs(&store, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = fs::read(&list).unwrap();
    assert_eq!(listed.iter().filter(|&&c| c == 0).count(), 400);
    assert!(fs::read_to_string(&m).unwrap().contains("etc/own399"));
}
