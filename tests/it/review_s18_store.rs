//! Review s18-store: a damaged or crowded store (full disk, damaged
//! catalog, a lock file removed, wrong markers, objects/ lost): gc and
//! verify say what is wrong and the way out they name works.

use crate::common::require_root;
use crate::review_s9_exhaust::Ext4;
use crate::tree::{assert_verify_clean, bytes, file_at, init_store, stderr, unifs, unify_json};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Guests `a` and `b` in `root` with `n` shared files `usr/fI`, unified.
pub(crate) fn shared_guests(store: &Path, root: &Path, n: u64, size: usize) {
    for g in ["a", "b"] {
        for i in 0..n {
            file_at(
                &root.join(g),
                &format!("usr/f{i}"),
                &bytes(i, size),
                0o644,
                1_600_000_000,
            );
        }
    }
    unify_json(store, &[&root.join("a"), &root.join("b")]);
}

/// `store gc --json`, asserted to succeed.
fn gc_json(store: &Path) -> serde_json::Value {
    let out = unifs(store, &[&"store", &"gc", &"--json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// On a full filesystem `store gc` removed nothing: SQLite could not write
/// the catalog, and gc dropped an object's rows before its file, so it
/// stopped with "free some space there": the command meant to free space
/// was blocked just when it was needed. It now removes the unused files
/// first when the catalog cannot be written, then drops their rows.
#[test]
fn gc_frees_space_on_a_full_filesystem() {
    if !require_root("review_s18_gc_frees_space_on_a_full_filesystem") {
        return;
    }
    let ext4 = Ext4::new(32 << 20);
    let store = ext4.path("store");
    shared_guests(&store, &ext4.path(""), 4, 300_000);
    for g in ["a", "b"] {
        fs::remove_file(ext4.path(g).join("usr/f0")).unwrap();
        fs::remove_file(ext4.path(g).join("usr/f1")).unwrap();
    }
    ext4.fill(0);
    let gc = gc_json(&store);
    assert_eq!(gc["objects_removed"], 2, "{gc}");
    assert_verify_clean(&store);
    // The rows went too: nothing is left for the next gc, and unify works.
    assert_eq!(gc_json(&store)["objects_removed"], 0);
    let s = unify_json(&store, &[&ext4.path("a"), &ext4.path("b")]);
    assert_eq!(s["files_already_linked"], 4, "{s}");
}

/// What a gc killed on a full disk between removing the files and
/// dropping their rows leaves: rows naming files that are gone. verify
/// reports them with the way out, and the next gc drops them.
#[test]
fn a_gc_killed_after_removing_files_heals_on_the_next_gc() {
    if !require_root("review_s18_a_gc_killed_after_removing_files") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = dir.path().join("store");
    shared_guests(&store, dir.path(), 2, 20_000);
    for g in ["a", "b"] {
        fs::remove_file(dir.path().join(g).join("usr/f0")).unwrap();
    }
    let out = unifs(&store, &[&"store", &"gc", &"--dry-run", &"--json"]);
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = dry["paths"][0].as_str().unwrap().to_string();
    fs::remove_file(&path).unwrap();
    let out = unifs(&store, &[&"store", &"verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("`unifs store gc`"),
        "{}",
        stdout(&out)
    );
    let gc = gc_json(&store);
    assert_eq!(gc["missing_dropped"][0], path.as_str(), "{gc}");
    assert_verify_clean(&store);
}

/// The root page of table or index `name` in the catalog of `store`.
pub(crate) fn root_page(store: &Path, name: &str) -> u64 {
    let conn = rusqlite::Connection::open_with_flags(
        store.join("catalog.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT rootpage FROM sqlite_master WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

/// Random bytes over one page of the catalog left most queries working:
/// `store verify` said "0 problem(s)" for a damaged table or index, and
/// gc, forget and unify wrote into a catalog SQLite calls malformed.
/// verify now runs SQLite's integrity check, and writers its quick check,
/// and both name the way out of a damaged catalog.
#[test]
fn a_damaged_catalog_page_is_reported_and_refused_by_writers() {
    if !require_root("review_s18_a_damaged_catalog_page") {
        return;
    }
    for name in [
        "objects",
        "object_files_by_inode",
        "guest_links_by_object",
        "hash_cache",
    ] {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let store = dir.path().join("store");
        shared_guests(&store, dir.path(), 20, 5_000);
        let page = root_page(&store, name);
        let catalog = store.join("catalog.db");
        let mut db = fs::read(&catalog).unwrap();
        let at = (page as usize - 1) * 4096;
        db[at..at + 4096].copy_from_slice(&bytes(page + 7, 4096));
        fs::write(&catalog, &db).unwrap();
        let a = dir.path().join("a");
        // New twins: unify checks the catalog beside its walk, and must
        // still link nothing when the check fails.
        let twins = ["a", "b"].map(|g| {
            let twin = file_at(
                &dir.path().join(g),
                "new",
                &bytes(999, 5_000),
                0o644,
                1_600_000_000,
            );
            (fs::metadata(&twin).unwrap().ino(), twin)
        });
        for args in [
            vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"verify"],
            vec![&"store", &"gc"],
            vec![&"store", &"forget", &a],
            vec![&"unify", &"--all"],
        ] {
            let out = unifs(&store, &args);
            let err = stderr(&out);
            let args = args[..2]
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>();
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {err}");
            assert!(
                err.contains("damaged")
                    && err.contains(&format!("mv {}/catalog.db* DIR/", store.display())),
                "{name} {args:?}: {err}"
            );
            assert_eq!(fs::read(&catalog).unwrap(), db, "{name} {args:?} wrote");
        }
        for (ino, twin) in &twins {
            let st = fs::metadata(twin).unwrap();
            assert_eq!((st.ino(), st.nlink()), (*ino, 1), "{name}: {twin:?} linked");
        }
    }
}

/// On a full ext4 of 1 KiB blocks every command died of SIGBUS (exit 135,
/// no message), until space was freed: SQLite grows catalog.db-shm by one
/// byte per 4 KiB page and maps it, so three blocks of each page stayed
/// holes, and its first store into one found no block to take. The blocks
/// of each region SQLite maps are now allocated first; where they cannot
/// be, the command says the filesystem is full, and gc frees space.
#[test]
fn a_full_filesystem_of_small_blocks_is_an_error_not_a_crash() {
    if !require_root("review_s18_a_full_filesystem_of_small_blocks") {
        return;
    }
    let ext4 = Ext4::with(24 << 20, &["-b", "1024"]);
    let store = ext4.path("store");
    shared_guests(&store, &ext4.path(""), 4, 200_000);
    for g in ["a", "b"] {
        fs::remove_file(ext4.path(g).join("usr/f0")).unwrap();
    }
    assert!(!store.join("catalog.db-shm").exists());
    ext4.fill(16 << 10);
    for args in [
        vec![&"unify" as &dyn AsRef<std::ffi::OsStr>, &"--all"],
        vec![&"store", &"verify"],
        vec![&"store", &"stats"],
    ] {
        let out = unifs(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{:?}: {err}", out.status);
        assert!(err.contains("the filesystem holding it is full"), "{err}");
    }
    let gc = gc_json(&store);
    assert_eq!(gc["objects_removed"], 1, "{gc}");
    assert_verify_clean(&store);
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_already_linked"], 6, "{s}");
}

/// Deleting `lock` while a writer held it let a second writer in: it
/// created a new `lock` and flocked that. The store directory is now
/// flocked too, which cannot be swapped under a holder.
#[test]
fn a_deleted_lock_file_lets_no_second_writer_in() {
    if !require_root("review_s18_a_deleted_lock_file") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = dir.path().join("store");
    shared_guests(&store, dir.path(), 2, 5_000);
    let held = unifs::store::Store::open(&store)
        .unwrap()
        .lock_writer()
        .unwrap();
    fs::remove_file(store.join("lock")).unwrap();
    for args in [
        vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"gc"],
        vec![&"unify", &"--all"],
        vec![&"store", &"forget", &dir.path().join("a")],
    ] {
        let out = unifs(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("is busy") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }
    drop(held);
    assert_eq!(gc_json(&store)["objects_removed"], 0);
    assert!(store.join("lock").exists());
}

/// A marker whose value was damaged was reported as "missing" with "`unifs
/// store gc` puts it back", which gc did not do (it put back only absent
/// markers); one naming another object got no advice and nothing repaired
/// it. verify now tells them apart, and gc rewrites both.
#[test]
fn gc_rewrites_a_wrong_marker_as_verify_says() {
    if !require_root("review_s18_gc_rewrites_a_wrong_marker") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = dir.path().join("store");
    shared_guests(&store, dir.path(), 2, 5_000);
    let objects: Vec<_> = walk_files(&store.join("objects"));
    assert_eq!(objects.len(), 2);
    let other = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", "trusted.unifs.object"])
        .arg(&objects[1])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(other.len(), 32);
    for (value, says) in [
        (b"junk".to_vec(), "marker xattr malformed"),
        (other, "marker names another object"),
    ] {
        crate::tree::set_xattr(&objects[0], "trusted.unifs.object", &value);
        let out = unifs(&store, &[&"store", &"verify"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stdout(&out).contains(says) && stdout(&out).contains("`unifs store gc` writes"),
            "{}",
            stdout(&out)
        );
        let gc = gc_json(&store);
        assert_eq!(gc["markers_rewritten"].as_array().unwrap().len(), 1, "{gc}");
        assert_verify_clean(&store);
    }
}

/// The files below `dir`, sorted.
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// With `objects/` deleted and the catalog intact every command advised
/// `store init`, which refuses that directory, and `unify --all` said the
/// store "does not exist": a dead end. They now say what works: make
/// `objects/` again, and `store gc` gives the objects their names back
/// from the guests that link them.
#[test]
fn a_lost_objects_directory_gets_advice_that_works() {
    if !require_root("review_s18_a_lost_objects_directory") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = dir.path().join("store");
    shared_guests(&store, dir.path(), 3, 5_000);
    let a = dir.path().join("a");
    fs::remove_dir_all(store.join("objects")).unwrap();
    let advice = format!("install -d -m 0700 {}/objects", store.display());
    for args in [
        vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"verify"],
        vec![&"store", &"stats"],
        vec![&"store", &"gc"],
        vec![&"store", &"init"],
        vec![&"unify", &"--all"],
        vec![&"unify", &a],
        vec![&"manifest", &a],
    ] {
        let out = unifs(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&advice) && err.contains("store gc"), "{err}");
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&advice)
        .output()
        .unwrap();
    assert!(out.status.success());
    let gc = gc_json(&store);
    assert_eq!(gc["missing_restored"].as_array().unwrap().len(), 3, "{gc}");
    assert_verify_clean(&store);
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_already_linked"], 6, "{s}");
}

/// A bit-flipped object: verify's advice (restore the guests from a
/// backup, docs/backup.md) failed as written: the recipe's `tar
/// --skip-old-files` keeps the damaged file, and restore then stopped on
/// it with no hint. verify and restore now say to remove it and run gc
/// first, and the documented steps restore the guest.
#[test]
fn a_damaged_object_is_restored_the_documented_way() {
    if !require_root("review_s18_a_damaged_object") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let d = dir.path();
    let store = d.join("store");
    shared_guests(&store, d, 2, 5_000);
    let (b, manifest, private) = (d.join("b"), d.join("b.jsonl"), d.join("b.private"));
    let out = unifs(&store, &[&"manifest", &b, &"-o", &manifest]);
    assert!(out.status.success(), "{}", stderr(&out));
    fs::create_dir(&private).unwrap();
    let tar = |args: &[&str]| {
        let out = std::process::Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-C"])
            .arg(&store)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let objects_tar = d.join("objects.tar").to_string_lossy().into_owned();
    tar(&["-cpf", &objects_tar, "objects"]);
    // One bit of the object f0 links, flipped in place.
    let ino = crate::tree::ino(&b.join("usr/f0"));
    let object = walk_files(&store.join("objects"))
        .into_iter()
        .find(|p| crate::tree::ino(p) == ino)
        .unwrap();
    let mtime = fs::metadata(&object).unwrap().modified().unwrap();
    let mut data = fs::read(&object).unwrap();
    data[1000] ^= 1;
    fs::write(&object, &data).unwrap();
    fs::File::options()
        .write(true)
        .open(&object)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let rm = format!("rm {}", object.display());
    let out = unifs(&store, &[&"store", &"verify"]);
    assert!(
        stdout(&out).contains(&rm) && stdout(&out).contains("\"A damaged object\""),
        "{}",
        stdout(&out)
    );
    // The restore names the way out too.
    let damaged = d.join("b.damaged");
    fs::rename(&b, &damaged).unwrap();
    let out = crate::tree::restore(&store, &manifest, &private, &b);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the store's object is damaged") && stderr(&out).contains(&rm));
    // docs/backup.md, "A damaged object".
    fs::remove_file(&object).unwrap();
    gc_json(&store);
    tar(&["--skip-old-files", "-xpf", &objects_tar]);
    let out = crate::tree::restore(&store, &manifest, &private, &b);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read(b.join("usr/f0")).unwrap(), bytes(0, 5_000));
    unify_json(&store, &[&"--all"]);
    let out = unifs(&store, &[&"store", &"verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

/// A read-only bind mount of a directory, unmounted on drop.
struct ReadOnlyBind {
    at: std::path::PathBuf,
}

impl ReadOnlyBind {
    fn new(from: &Path, at: &Path) -> ReadOnlyBind {
        fs::create_dir_all(at).unwrap();
        let run = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
            let mut cmd = std::process::Command::new("mount");
            for a in args {
                cmd.arg(a.as_ref());
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        };
        run(&[&"--bind", &from, &at]);
        let bind = ReadOnlyBind {
            at: at.to_path_buf(),
        };
        run(&[&"-o", &"remount,bind,ro", &at]);
        bind
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.at, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `unify --dry-run --all` through a read-only bind mount of the store
/// (docs: dry runs work on read-only stores) skipped every guest as "on
/// another filesystem" and advised `store forget` for each: the guests are
/// on the same filesystem, reached through another mount, which only
/// matters to a run that links.
#[test]
fn a_dry_run_works_through_a_read_only_bind_mount_of_the_store() {
    if !require_root("review_s18_a_dry_run_through_a_read_only_bind") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = dir.path().join("store");
    shared_guests(&store, dir.path(), 2, 5_000);
    crate::tree::file(&dir.path().join("a"), "new", &bytes(9, 5_000), 0o644);
    crate::tree::file(&dir.path().join("b"), "new", &bytes(9, 5_000), 0o644);
    let ro = dir.path().join("ro");
    let _bind = ReadOnlyBind::new(&store, &ro);
    let out = unifs(&ro, &[&"unify", &"--dry-run", &"--all", &"--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["files_already_linked"], 4, "{s}");
    // A run that links still refuses, and says why.
    let out = unifs(&ro, &[&"unify", &"--all"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Store `one/store` (guests `one/a`, `one/b`) with the catalog of store
/// `two/store` copied over its own.
fn store_with_another_stores_catalog() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    shared_guests(&one.join("store"), &one, 2, 5_000);
    file_at(&two.join("a"), "x", &bytes(77, 5_000), 0o644, 1_600_000_000);
    file_at(&two.join("b"), "x", &bytes(77, 5_000), 0o644, 1_600_000_000);
    unify_json(&two.join("store"), &[&two.join("a"), &two.join("b")]);
    let store = one.join("store");
    fs::copy(two.join("store/catalog.db"), store.join("catalog.db")).unwrap();
    (dir, store)
}

/// Another store's catalog copied in was accepted silently: verify took
/// its objects for missing ones, and gc "restored" them by linking the
/// other store's inodes into this one. verify and gc now refuse a catalog
/// none of whose object files is in objects/ while objects/ holds others.
#[test]
fn another_stores_catalog_is_refused_by_verify_and_gc() {
    if !require_root("review_s18_another_stores_catalog") {
        return;
    }
    let (_dir, store) = store_with_another_stores_catalog();
    let before = walk_files(&store.join("objects"));
    for args in [
        vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"verify"],
        vec![&"store", &"gc"],
        vec![&"store", &"gc", &"--dry-run"],
    ] {
        let out = unifs(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("the catalog is another store's"), "{err}");
    }
    assert_eq!(walk_files(&store.join("objects")), before);
}

/// verify and gc refused another store's catalog, but its writers took
/// it: `unify --all` unified the other store's guests and recorded a run
/// in it, `unify GUEST` and `store forget` wrote to it. Every writer
/// refuses it now, with the same message, and writes nothing.
#[test]
fn another_stores_catalog_is_refused_by_unify_and_forget() {
    if !require_root("review_s18_another_stores_catalog_writers") {
        return;
    }
    let (dir, store) = store_with_another_stores_catalog();
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    for g in ["a", "b"] {
        file_at(&one.join(g), "new", &bytes(5, 5_000), 0o644, 1_600_000_000);
    }
    let catalog = fs::read(store.join("catalog.db")).unwrap();
    let before = walk_files(&store.join("objects"));
    let (a, b) = (one.join("a"), one.join("b"));
    for args in [
        vec![&"unify" as &dyn AsRef<std::ffi::OsStr>, &"--all"],
        vec![&"unify", &"--all", &"--dry-run"],
        vec![&"unify", &a, &b],
        vec![&"store", &"forget", &two.join("a")],
        vec![&"store", &"init"],
    ] {
        let out = unifs(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("the catalog is another store's"), "{err}");
        assert!(
            fs::read(store.join("catalog.db")).unwrap() == catalog,
            "{err}"
        );
    }
    assert_eq!(walk_files(&store.join("objects")), before);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(a.join("new")).unwrap().nlink(), 1);
}

/// A guest unified into a second store: that store silently took the
/// first store's object inodes as its own (each store's stats then count
/// the other's links). unify now warns, as a `unifs: warning:` line and in
/// `--json`'s notices, exit 0. (A store the run would make refuses them:
/// review_s20_store.)
#[test]
fn a_guest_unified_into_a_second_store_is_warned_about() {
    if !require_root("review_s18_a_guest_unified_into_a_second_store") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    shared_guests(&dir.path().join("one"), dir.path(), 2, 5_000);
    let two = dir.path().join("two");
    init_store(&two);
    let out = unifs(&two, &[&"unify", &dir.path().join("b")]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("unifs: warning: ") && err.contains("objects of another store"),
        "{err}"
    );
}
