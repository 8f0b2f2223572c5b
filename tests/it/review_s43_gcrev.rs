//! Session 43, "gcrev": review of "gccopy" (179cbc4), gc's refusal of a
//! copied or restored store's guests. Its check took every link of an
//! object's inode that is not a catalog guest path for another store's
//! object file: in a store restored in the place of a lost one
//! (docs/backup.md case B), a hardlink a guest made of a shared file, or a
//! shared file the guest renamed (a rename through its mount keeps the
//! inode), refused the whole gc. Links anywhere in the catalog's guest
//! directories are the guests' own now, as unify counts them.

use crate::common::require_root;
use crate::review_s42_storecopy::unified_pair;
use crate::review_s43_gccopy::{run, text};
use crate::tree::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// The store of `lab` lost and restored in its place as docs/backup.md
/// case B says, from a backup taken as its "With tar" recipe takes one:
/// the catalog snapshot and a tar of `objects/`.
fn lose_and_restore_in_place(store: &Path, backup: &Path) {
    run(Command::new("install")
        .args(["-d", "-m", "0700"])
        .arg(backup));
    let out = unifs(store, &[&"store", &"snapshot", &backup.join("catalog.db")]);
    assert!(out.status.success(), "{}", text(&out));
    let tar = backup.join("objects.tar");
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--sparse", "-C"])
        .arg(store)
        .arg("-cf")
        .arg(&tar)
        .arg("objects"));
    std::fs::remove_dir_all(store).unwrap();
    run(Command::new("install")
        .args(["-d", "-m", "0700"])
        .arg(store));
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(store));
    std::fs::copy(backup.join("catalog.db"), store.join("catalog.db")).unwrap();
}

/// A store restored in the place of a lost one whose guests made names of
/// their own for shared files (`a` a hardlink of usr/one, `b` usr/two
/// renamed: neither name is in the catalog): gc gives each object its name
/// back from the guests, as for guests without such names. Before, gc
/// refused it, exit 1, "2 files of the guests … link objects of another
/// store", nothing repaired, each object's space taken twice.
#[test]
fn s43_gc_in_a_store_restored_in_place_takes_its_guests_own_names() {
    if !require_root("s43_gc_in_a_store_restored_in_place_takes_its_guests_own_names") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    let store = unified_pair(&lab);
    let (a, b) = (lab.join("a"), lab.join("b"));
    std::fs::hard_link(a.join("usr/one"), a.join("usr/one.link")).unwrap();
    std::fs::rename(b.join("usr/two"), b.join("usr/two.moved")).unwrap();
    lose_and_restore_in_place(&store, &dir.path().join("backup"));
    let out = unifs(&store, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.matches("back the inode guests link").count(),
        2,
        "{said}"
    );
    let m = |p: &Path| std::fs::metadata(p).unwrap();
    let one = m(&a.join("usr/one"));
    assert_eq!(one.nlink(), 4, "a/usr/one, its link, b/usr/one, the object");
    let two = m(&a.join("usr/two"));
    assert_eq!(two.ino(), m(&b.join("usr/two.moved")).ino());
    for f in std::fs::read_dir(store.join("objects")).unwrap() {
        for o in std::fs::read_dir(f.unwrap().path()).unwrap() {
            let ino = m(&o.unwrap().path()).ino();
            assert!(ino == one.ino() || ino == two.ino(), "a copy was kept");
        }
    }
    assert_verify_clean(&store);
}

/// The same restored store where guest `a` was moved since the snapshot
/// (the catalog has its old path): its links are outside every guest
/// directory the catalog names, as another store's object file would be,
/// and gc refuses. The message says what to do when `find` shows no
/// objects/ among them, and that, done as written, lets gc repair the
/// store. Before, it said only to forget the guests (this store's own) or
/// to run gc with "the store they belong to".
#[test]
fn s43_gc_refusing_a_restored_store_says_how_to_take_a_moved_guest() {
    if !require_root("s43_gc_refusing_a_restored_store_says_how_to_take_a_moved_guest") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    let store = unified_pair(&lab);
    let (a, moved) = (lab.join("a"), lab.join("a.moved"));
    std::fs::rename(&a, &moved).unwrap();
    lose_and_restore_in_place(&store, &dir.path().join("backup"));
    let out = unifs(&store, &[&"store", &"gc"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    let unify = format!("unifs --store {} unify --all DIR...", store.display());
    for want in [
        "link objects of another store",
        "in no objects/",
        &unify,
        "`store forget` its old path first",
    ] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    let out = unifs(&store, &[&"store", &"forget", &a]);
    assert!(out.status.success(), "{}", text(&out));
    let out = unifs(&store, &[&"unify", &"--all", &moved]);
    assert!(out.status.success(), "{}", text(&out));
    let out = unifs(&store, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stats_json(&store)["usage"]["guest_links"], 4);
    assert_verify_clean(&store);
}

/// The command between "`find " and "` shows" in `err`, run by sh as an
/// operator pastes it: its output.
fn run_find_as_printed(err: &str) -> String {
    let start = err.find("`find ").expect("no find command") + 1;
    let len = err[start..]
        .find("` shows")
        .expect("no end of the find command");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&err[start..start + len])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}:\n{}",
        &err[start..start + len],
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `find -xdev -samefile` command gc's and unify's refusals print,
/// pasted into a shell, where the first file's path has a space: it found
/// nothing ("find: '/…/g': No such file or directory", exit 1), as the
/// paths were printed unquoted. Now each is one shell word, and it lists
/// the original store's object file. (On a tmpfs of its own, so that find
/// walks no more than the test's files.)
#[test]
fn s43_the_find_command_of_the_refusals_works_as_printed() {
    if !require_root("s43_the_find_command_of_the_refusals_works_as_printed") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let fs = dir.path().join("fs");
    let _mounted = crate::review_s20_backup::TmpfsMount::at(&fs);
    let lab = fs.join("lab");
    for g in ["g one", "g two"] {
        file_at(
            &lab.join(g),
            "usr/a file",
            &bytes(3, 5_000),
            0o644,
            1_600_000_000,
        );
    }
    let store = lab.join("store");
    unify_json(&store, &[&lab.join("g one"), &lab.join("g two")]);
    let object = first_object_file(&store);
    let copy = fs.join("copy of store");
    run(Command::new("cp").arg("-a").arg(&store).arg(&copy));
    for args in [
        &[&"store" as &dyn AsRef<std::ffi::OsStr>, &"gc"][..],
        &[&"unify", &"--all"],
    ] {
        let out = unifs(&copy, args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let found = run_find_as_printed(&stderr(&out));
        assert!(found.contains(&*object.to_string_lossy()), "{found}");
    }
}
