//! Review s9, second round: the unify, store and backup changes of the
//! first round, as operators hit them.

use super::harness::Mount;
use crate::common::require_root;
use crate::tree::{assert_verify_clean, bytes, file, ino, stderr, unifs, unify_json};
use std::fs;
use std::path::Path;
use std::process::Command;

/// A guest whose unifs mount over its own directory lost its daemon (killed,
/// crashed: every access fails with ENOTCONN) is still a unifs mount.
/// Named on the command line it was refused as "not a directory; unify
/// takes guest root directories" (the directory could not be stat'ed),
/// which sends the operator looking for the wrong thing; it gets the error
/// a live mount gets. (`--all` skips it, as it does a live one.)
#[test]
fn unify_of_a_guest_whose_mount_over_it_lost_its_daemon_says_so() {
    if !require_root("review_s9r2_unify_of_a_guest_with_a_dead_mount") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("store");
    let (a, b) = (lab.path().join("a"), lab.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/lib/f", &bytes(1, 5_000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    let mut over = Mount::start(&store, &a, &a, &[]);
    let mut daemon = over.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert_eq!(
        fs::metadata(&a).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    file(&b, "usr/lib/g1", &bytes(2, 6_000), 0o644);
    file(&b, "usr/lib/g2", &bytes(2, 6_000), 0o644);
    let out = unifs(&store, &[&"unify", &"--all"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(23), "{err}");
    assert!(err.contains("has a unifs mount over it"), "{err}");
    assert_eq!(ino(&b.join("usr/lib/g1")), ino(&b.join("usr/lib/g2")));
    // Named, it is refused as a live one is, not with ENOTCONN.
    let out = unifs(&store, &[&"unify", &a, &b]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("has a unifs mount over it"), "{err}");
    drop(over);
}

/// A tmpfs mounted for a test, unmounted even when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(opts: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A catalog error on a filesystem that reports no space or inode counts
/// (btrfs reports no inode counts; a tmpfs without size= or nr_inodes=
/// neither) said "the filesystem holding it is full ... free some space",
/// whatever the error was: the zero counts were taken for none left.
#[test]
fn a_catalog_error_on_a_filesystem_without_counts_does_not_say_it_is_full() {
    if !require_root("review_s9r2_catalog_error_without_counts") {
        return;
    }
    let t = Tmpfs::new("size=0,nr_inodes=0");
    let st = nix::sys::statvfs::statvfs(t.path()).unwrap();
    assert_eq!((st.blocks(), st.files()), (0, 0), "tmpfs reports counts");
    let store = t.path().join("store");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/f", &bytes(1, 5_000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    // A directory the snapshot cannot be written in (EPERM, even for root).
    let locked = t.path().join("locked");
    fs::create_dir(&locked).unwrap();
    let ok = Command::new("chattr")
        .arg("+i")
        .arg(&locked)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chattr +i on tmpfs");
    let out = unifs(&store, &[&"store", &"snapshot", &locked.join("catalog.db")]);
    Command::new("chattr")
        .arg("-i")
        .arg(&locked)
        .status()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The temp file the snapshot is written to, named with the errno.
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(!err.contains("full"), "{err}");
    assert_verify_clean(&store);
}

/// A store in a directory with a default ACL (`setfacl -d`, common on
/// shared admin trees) gave every object file unifs created by copy (an
/// extra copy after the link limit, a first file open for writing) the
/// inherited access ACL: the copy no longer matched its id (`store verify`:
/// BAD), the guest files linked to it took an ACL they never had, and unify
/// then refused to link any more files to it. A copy has the source's
/// xattrs and no others.
#[test]
fn objects_copied_into_a_store_under_a_default_acl_keep_their_own_xattrs() {
    if !require_root("review_s9r2_objects_copied_under_a_default_acl") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let acl_dir = lab.path().join("srv");
    fs::create_dir(&acl_dir).unwrap();
    let ok = Command::new("setfacl")
        .args(["-d", "-m", "g:adm:rwx"])
        .arg(&acl_dir)
        .status()
        .expect("setfacl (acl)")
        .success();
    assert!(ok, "setfacl -d");
    let store = acl_dir.join("store");
    let guests: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|g| lab.path().join(g))
        .collect();
    for g in &guests {
        file(g, "usr/lib/f", &bytes(1, 5_000), 0o644);
        file(g, "usr/lib/w", &bytes(2, 5_000), 0o644);
    }
    // usr/lib/w of a is open for writing: its object is made by copy.
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(guests[0].join("usr/lib/w"))
        .unwrap();
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.arg("--store").arg(&store).args(["unify", "--json"]);
    cmd.args(&guests).env("UNIFS_TEST_LINK_MAX", "2");
    let s = crate::tree::unify_summary(&cmd.output().unwrap());
    drop(writer);
    assert!(s["extra_copies"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["objects_copied"], 1, "{s}");
    let problems = s["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .all(|p| p["what"].as_str().unwrap().contains("open for writing")),
        "{s}"
    );
    assert_verify_clean(&store);
    for g in &guests[1..] {
        for rel in ["usr/lib/f", "usr/lib/w"] {
            let path = g.join(rel);
            let names = unifs::sys::xattr::list_path(&path).unwrap();
            assert!(
                names
                    .iter()
                    .all(|(n, _)| n.to_str() != Some("system.posix_acl_access")),
                "{} took the store's ACL",
                path.display()
            );
        }
    }
}

/// A restore into a directory with a default ACL (`setfacl -d` on
/// /var/lib/machines or the like) gave every directory and private file it
/// made the inherited ACL, which the guest never had: a 0640 file became
/// readable by the ACL's group, and a manifest of the restored guest no
/// longer matched the backup's. The restored tree now has the manifest's
/// xattrs and no others.
#[test]
fn a_restore_under_a_default_acl_gives_files_no_acl_of_their_own() {
    if !require_root("review_s9r2_a_restore_under_a_default_acl") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("store");
    let (a, b) = (lab.path().join("a"), lab.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/f", &bytes(1, 5_000), 0o644);
    }
    file(&a, "etc/shadow", b"root:x:1::::::\n", 0o640);
    unify_json(&store, &[&a, &b]);
    let (m, list) = (lab.path().join("a.jsonl"), lab.path().join("a.list"));
    let out = unifs(
        &store,
        &[&"manifest", &a, &"-o", &m, &"--private-list", &list],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let private = lab.path().join("private");
    fs::create_dir(&private).unwrap();
    let tar = format!(
        "tar --xattrs --xattrs-include='*' --null -C {} -T {} -cf - | tar --xattrs \
         --xattrs-include='*' -C {} -xf -",
        a.display(),
        list.display(),
        private.display()
    );
    assert!(Command::new("sh")
        .args(["-c", &tar])
        .status()
        .unwrap()
        .success());
    let machines = lab.path().join("machines");
    fs::create_dir(&machines).unwrap();
    let ok = Command::new("setfacl")
        .args(["-d", "-m", "g:adm:rwx"])
        .arg(&machines)
        .status()
        .expect("setfacl (acl)")
        .success();
    assert!(ok, "setfacl -d");
    let target = machines.join("a");
    let out = crate::tree::restore(&store, &m, &private, &target);
    assert!(out.status.success(), "{}", stderr(&out));
    for rel in [".", "etc", "etc/shadow", "usr"] {
        let path = target.join(rel);
        let names = unifs::sys::xattr::list_path(&path).unwrap();
        assert!(
            names
                .iter()
                .all(|(n, _)| !n.to_string_lossy().contains("posix_acl")),
            "{} has an ACL: {names:?}",
            path.display()
        );
    }
    let again = lab.path().join("again.jsonl");
    let out = unifs(&store, &[&"manifest", &target, &"-o", &again]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries = |p: &Path| {
        let text = fs::read_to_string(p).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
            .into_iter()
            .map(|mut v| {
                v.as_object_mut().unwrap().remove("atime");
                v
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(entries(&m), entries(&again));
}

/// `store snapshot DEST` writes DEST.tmp-PID and renames it: a DEST name
/// of 238 to 247 bytes (one SQLite can open: DEST-journal fits in 255)
/// left no room for the suffix and the temp's journal, and the snapshot
/// failed with "unable to open database file" under a name the user never
/// gave.
#[test]
fn a_snapshot_to_a_long_file_name_is_written() {
    if !require_root("review_s9r2_a_snapshot_to_a_long_file_name") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("store");
    let (a, b) = (lab.path().join("a"), lab.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/f", &bytes(1, 5_000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    let out_dir = lab.path().join("backup");
    fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join(format!("{}.db", "c".repeat(244)));
    let out = unifs(&store, &[&"store", &"snapshot", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<_> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(names, vec![dest.clone()]);
    let db = rusqlite::Connection::open(&dest).unwrap();
    let n: i64 = db
        .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}
