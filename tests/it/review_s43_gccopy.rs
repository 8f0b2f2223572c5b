//! Session 43, "gccopy": the store commands in a store copied (`cp -a`,
//! `rsync -aH`) or restored (objects and catalog snapshot into a new
//! directory, docs/backup.md case B) beside a live original. The copy's
//! catalog names the original's guests and, for each object, the
//! original's inode: `store gc` there took every object file for "replaced
//! by a copy" and gave its name back from the original's guests, linking
//! the original's objects into the copy (each inode one link more, the
//! original's `store stats` counting the copy as a guest link). Also: a
//! guest unified with a wrong store that holds its objects (the warning's
//! words), and restore's lock file (looked at before it is opened).

use crate::common::require_root;
use crate::review_s42_storecopy::unified_pair;
use crate::tree::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `cmd`, which must succeed.
pub(crate) fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}

/// The ways a store is copied or restored beside its original.
#[derive(Debug, Clone, Copy)]
enum Copied {
    /// `cp -a STORE COPY` (store-format.md).
    CpA,
    /// As `rsync -aH` does: links, modes, owners and times, no xattrs (the
    /// objects lose their markers).
    NoXattrs,
    /// backup.md case B: the objects from a tar and `store snapshot`'s
    /// catalog, into a new directory.
    Restored,
}

/// Copies `store` to `copy` the way `how` says.
fn copy_store(store: &Path, copy: &Path, how: Copied) {
    match how {
        Copied::CpA => run(Command::new("cp").arg("-a").arg(store).arg(copy)),
        Copied::NoXattrs => run(Command::new("cp")
            .arg("-r")
            .arg("--preserve=mode,ownership,timestamps,links")
            .arg(store)
            .arg(copy)),
        Copied::Restored => {
            let tar = copy.with_extension("tar");
            run(Command::new("tar")
                .args(["--xattrs", "--xattrs-include=*", "-C"])
                .arg(store)
                .arg("-cf")
                .arg(&tar)
                .arg("objects"));
            run(Command::new("install").args(["-d", "-m", "0700"]).arg(copy));
            run(Command::new("tar")
                .args(["--xattrs", "--xattrs-include=*", "-xpf"])
                .arg(&tar)
                .arg("-C")
                .arg(copy));
            let out = unifs(store, &[&"store", &"snapshot", &copy.join("catalog.db")]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
    }
}

/// Everything of each path under `root` a command could change: inode,
/// link count, ctime (a link made or removed moves it), mode, owner, size,
/// mtime, content and every xattr (the store's markers too).
fn fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let content = match m.is_file() {
            true => hash_file(e.path()).to_hex().to_string(),
            false => String::new(),
        };
        let xattrs = unifs::sys::xattr::list_path(e.path()).unwrap();
        let is_dir = m.is_dir();
        out.insert(
            e.path().to_path_buf(),
            format!(
                "{}:{} n{} {:o} {}:{} {} m{}.{} c{}.{} {content} {xattrs:?}",
                m.dev(),
                m.ino(),
                m.nlink(),
                m.mode(),
                m.uid(),
                m.gid(),
                if is_dir { 0 } else { m.size() },
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec()
            ),
        );
    }
    out
}

/// Asserts that nothing under `lab` changed since `before`, naming what did.
fn assert_unchanged(lab: &Path, before: &BTreeMap<PathBuf, String>, after_what: &str) {
    let now = fingerprint(lab);
    let changed: Vec<_> = before
        .iter()
        .filter(|(p, v)| now.get(*p) != Some(v))
        .map(|(p, v)| format!("{}\n  was {v}\n  now {:?}", p.display(), now.get(p)))
        .collect();
    assert!(
        changed.is_empty() && now.len() == before.len(),
        "{after_what} changed the original's guests or store:\n{}",
        changed.join("\n")
    );
}

/// [`unifs`] with plain words for arguments.
fn unifs_words(store: &Path, args: &[&str]) -> Output {
    let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as _).collect();
    unifs(store, &args)
}

/// A command's stdout and stderr, for messages.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "{:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    )
}

/// Asserts `out` is gc's refusal for the original's guests of `lab`.
fn assert_refused(out: &Output, copy: &Path, lab: &Path) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    for want in [
        format!("store {}", copy.display()),
        "link objects of another store".to_string(),
        lab.join("a").display().to_string(),
        lab.join("b").display().to_string(),
        "Nothing was changed".to_string(),
        format!("unifs --store {} store forget", copy.display()),
    ] {
        assert!(err.contains(&want), "no {want:?} in:\n{err}");
    }
}

/// Every store command run in the copy, gc and its dry run refused; then
/// (the copy's catalog without them) the copy's gc frees its objects no
/// guest links, and the original's guests and store are as they were,
/// inode for inode. Before the fix, `store gc --dry-run` said "would give
/// … back", and `store gc` linked both of the original's objects into the
/// copy (their inodes and the guests' files at 4 links, not 3).
fn gc_in_a_copy_leaves_the_original_alone(how: Copied) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    let store = unified_pair(&lab);
    let copy = dir.path().join("copy");
    copy_store(&store, &copy, how);
    let before = fingerprint(&lab);
    for args in [&["store", "gc", "--dry-run"][..], &["store", "gc"]] {
        let out = unifs_words(&copy, args);
        assert_unchanged(&lab, &before, &format!("{how:?}: {args:?}"));
        assert_refused(&out, &copy, &lab);
    }
    for args in [
        &["store", "verify"][..],
        &["store", "stats"],
        &["store", "ls"],
        &["store", "runs"],
        &["unify", "--all"],
        &["unify", "--all", "--dry-run"],
    ] {
        let _ = unifs_words(&copy, args);
        assert_unchanged(&lab, &before, &format!("{how:?}: {args:?}"));
    }
    let out = unifs(
        &copy,
        &[&"store", &"forget", &lab.join("a"), &lab.join("b")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_unchanged(&lab, &before, &format!("{how:?}: store forget"));
    let out = unifs(&copy, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 2 unused object files"),
        "{}",
        text(&out)
    );
    assert_unchanged(&lab, &before, &format!("{how:?}: store gc after forget"));
    assert_eq!(stats_json(&store)["usage"]["guest_links"], 4);
    assert_verify_clean(&store);
}

#[test]
fn s43_gc_in_a_store_copied_with_cp_a_leaves_the_original_alone() {
    if require_root("s43_gc_in_a_store_copied_with_cp_a_leaves_the_original_alone") {
        gc_in_a_copy_leaves_the_original_alone(Copied::CpA);
    }
}

#[test]
fn s43_gc_in_a_store_copied_without_xattrs_leaves_the_original_alone() {
    if require_root("s43_gc_in_a_store_copied_without_xattrs_leaves_the_original_alone") {
        gc_in_a_copy_leaves_the_original_alone(Copied::NoXattrs);
    }
}

#[test]
fn s43_gc_in_a_store_restored_beside_its_original_leaves_it_alone() {
    if require_root("s43_gc_in_a_store_restored_beside_its_original_leaves_it_alone") {
        gc_in_a_copy_leaves_the_original_alone(Copied::Restored);
    }
}

/// A copy restored in part (here: the catalog snapshot alone, objects/
/// made empty, as the error for a missing objects/ says to): gc took each object file for missing and gave it its name back
/// from the original's guests ("restored missing … from a guest that links
/// it"), linking the original's objects into the copy. Refused now.
#[test]
fn s43_gc_in_a_copy_missing_its_objects_does_not_take_the_originals() {
    if !require_root("s43_gc_in_a_copy_missing_its_objects_does_not_take_the_originals") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    let store = unified_pair(&lab);
    let copy = dir.path().join("copy");
    run(Command::new("install")
        .args(["-d", "-m", "0700"])
        .arg(&copy)
        .arg(copy.join("objects")));
    let out = unifs(&store, &[&"store", &"snapshot", &copy.join("catalog.db")]);
    assert!(out.status.success(), "{}", text(&out));
    let before = fingerprint(&lab);
    for args in [&["store", "gc", "--dry-run"][..], &["store", "gc"]] {
        let out = unifs_words(&copy, args);
        assert_unchanged(&lab, &before, &format!("{args:?}"));
        assert_refused(&out, &copy, &lab);
    }
}

/// The store copied with its guests (`cp -a` of their common directory):
/// the copy's catalog names the original guests' paths. gc there found no
/// guest link on the copy's files... of the original's guests, and took
/// the copy's files for the objects (the catalog renumbered): after that,
/// `unify --all` with the copy no longer knew the original's guests' files
/// for the original's objects, and linked them into the copy (unify's
/// refusal of session 42 disarmed). gc refuses now, and the copied guests
/// are taken once the original's are forgotten (docs/store-format.md).
#[test]
fn s43_gc_in_a_store_copied_with_its_guests_keeps_unify_refusing_the_originals() {
    if !require_root("s43_gc_in_a_store_copied_with_its_guests_keeps_unify_refusing_the_originals")
    {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    unified_pair(&lab);
    let copy_lab = dir.path().join("lab2");
    run(Command::new("cp").arg("-a").arg(&lab).arg(&copy_lab));
    let copy = copy_lab.join("store");
    let before = fingerprint(&lab);
    let gc = unifs(&copy, &[&"store", &"gc"]);
    let unify = unifs(&copy, &[&"unify", &"--all"]);
    assert_unchanged(&lab, &before, "store gc, then unify --all, in the copy");
    assert_refused(&gc, &copy, &lab);
    assert_eq!(unify.status.code(), Some(1), "{}", text(&unify));
    let out = unifs(
        &copy,
        &[&"store", &"forget", &lab.join("a"), &lab.join("b")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = unify_json(&copy, &[&copy_lab.join("a"), &copy_lab.join("b")]);
    assert_eq!(s["files_linked"], 0, "{s}");
    let out = unifs(&copy, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stats_json(&copy)["usage"]["guest_links"], 4);
    assert_verify_clean(&copy);
    assert_unchanged(&lab, &before, "the copy's forget, unify and gc");
}

/// A guest of one store unified with another store that holds the same
/// objects (a wrong `--store`): warned, not refused, and the guest moves to
/// that store (its files linked to that store's object files). The warning
/// said "this store takes each such inode as its object, shared with any
/// other store", which is what happens only where the store lacks the
/// object, and not how to undo it. It now says both, and its advice, taken
/// as written, puts the guest back: each store as it was, verify clean,
/// gc removing nothing of either.
#[test]
fn s43_a_guest_unified_into_a_store_holding_its_objects_is_told_how_to_go_back() {
    if !require_root("s43_a_guest_unified_into_a_store_holding_its_objects_is_told_how_to_go_back")
    {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    let store = unified_pair(&lab);
    let other = dir.path().join("other");
    unified_pair(&other);
    let wrong = other.join("store");
    let (a, b) = (lab.join("a"), lab.join("b"));
    let ino_of = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let before = ino_of(&a.join("usr/one"));
    let out = unifs(&wrong, &[&"unify", &a]);
    assert!(out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    // Where it went: the wrong store's object file.
    let moved = ino_of(&a.join("usr/one"));
    assert_eq!(moved, ino_of(&other.join("a/usr/one")), "{err}");
    for want in [
        "carry a store marker".to_string(),
        "its guest moves to this store".to_string(),
        "unifs --store THAT_STORE unify GUEST_DIR".to_string(),
        format!("unifs --store {} store forget GUEST_DIR", wrong.display()),
    ] {
        assert!(err.contains(&want), "no {want:?} in:\n{err}");
    }
    // The advice, as written.
    let out = unifs(&store, &[&"unify", &a]);
    assert!(out.status.success(), "{}", text(&out));
    let out = unifs(&wrong, &[&"store", &"forget", &a]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ino_of(&a.join("usr/one")), before);
    assert_eq!(ino_of(&b.join("usr/one")), before);
    for s in [&store, &wrong] {
        assert_eq!(stats_json(s)["usage"]["guest_links"], 4, "{}", s.display());
        assert_verify_clean(s);
        let out = unifs_words(s, &["store", "gc", "--dry-run"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("would remove 0 unused"),
            "{}",
            text(&out)
        );
    }
}

/// `TARGET.unifs-restore.lock` was opened for writing (`O_CREAT`, no
/// look first) whatever was at that name, then refused if not a regular
/// file: a device node there (the target's directory may be in a guest's
/// tree, whose root can put one there) was opened by host root, and a
/// device's open is its driver's to act on. The name is looked at through
/// `O_PATH` now, as every guest entry is (src/sys/regular.rs). Here a node
/// of /dev/null's numbers (harmless to open); strace shows each open.
#[test]
fn s43_a_restore_never_opens_a_device_node_at_its_lock_name() {
    let test = "s43_a_restore_never_opens_a_device_node_at_its_lock_name";
    if !require_root(test) || !crate::common::require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let lab = dir.path().join("lab");
    let store = unified_pair(&lab);
    let m = dir.path().join("a.jsonl");
    let out = unifs(&store, &[&"manifest", &lab.join("a"), &"-o", &m]);
    assert!(out.status.success(), "{}", text(&out));
    let target = dir.path().join("restores/a");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let lock = dir.path().join("restores/a.unifs-restore.lock");
    run(Command::new("mknod").arg(&lock).args(["c", "1", "3"]));
    let log = dir.path().join("strace.log");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&log)
        .arg(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["restore", "--manifest"])
        .arg(&m)
        .arg("--from")
        .arg(lab.join("a"))
        .arg(&target)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        err.contains("a.unifs-restore.lock") && err.contains("not a regular file"),
        "{err}"
    );
    let trace = std::fs::read_to_string(&log).unwrap();
    let opens: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("unifs-restore.lock"))
        .collect();
    assert!(
        !opens.is_empty(),
        "no open of the lock name traced:\n{trace}"
    );
    for l in &opens {
        assert!(l.contains("O_PATH"), "the lock's node was opened: {l}");
    }
    assert!(!target.exists());
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::symlink_metadata(&lock).unwrap().file_type();
    assert!(kind.is_char_device(), "the node was replaced: {kind:?}");
}
