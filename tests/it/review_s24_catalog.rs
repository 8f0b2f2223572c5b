//! Review s24-catalog: stores and catalogs older builds left, or a
//! snapshot put back, met by this build. Old states are crafted with raw
//! SQL and plain file operations (a test cannot build old commits).

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn conn(store: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(store.join("catalog.db")).unwrap()
}

fn guests(dir: &Path, n: usize) -> Vec<PathBuf> {
    (1..=n).map(|i| dir.join(format!("g{i}"))).collect()
}

fn gc_ok(store: &Path) {
    let out = unifs(store, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// Builds before schema 6 kept hash-cache rows for files open for writing
/// (and changed within a coarse ctime tick): such a row can vouch for
/// content the file no longer has. Crafted: g1's row names the object of
/// g2's and g3's content, as a row would after writes through a shared
/// mapping that changed no stat. The upgrade must not trust it.
#[test]
fn review_s24_old_builds_hash_cache_rows_are_dropped_by_the_upgrade() {
    if !require_root("review_s24_old_builds_hash_cache_rows_are_dropped_by_the_upgrade") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), 3);
    let own = file(&g[0], "usr/lib/db", &bytes(1, 8192), 0o644);
    file(&g[1], "usr/lib/db", &bytes(2, 8192), 0o644);
    file(&g[2], "usr/lib/db", &bytes(2, 8192), 0o644);
    unify_json(&store, &[&g[0], &g[1], &g[2]]);
    let own_ino = ino(&own);
    let c = conn(&store);
    let rows: i64 = c
        .query_row(
            "SELECT count(*) FROM hash_cache WHERE ino = ?1",
            [own_ino],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1, "no hash-cache row to make old");
    // The catalog as a build of schema 5 left it, with a row gone wrong.
    c.execute_batch(&format!(
        "UPDATE hash_cache SET (object_id, content_hash) =
             (SELECT id, content_hash FROM objects)
         WHERE ino = {own_ino};
         PRAGMA user_version = 5;"
    ))
    .unwrap();
    drop(c);

    let s = unify_json(&store, &[&g[0], &g[1], &g[2]]);
    let kept = fs::read(&own).unwrap() == bytes(1, 8192);
    assert!(kept, "g1's content lost (now another object's): {s}");
    assert_eq!(fs::metadata(&own).unwrap().nlink(), 1, "{s}");
    assert!(s["files_hashed"].as_u64() >= Some(1), "not rehashed: {s}");
    let v: i64 = conn(&store)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, 6);
    // Rows are made again: the next run hashes nothing.
    let s = unify_json(&store, &[&g[0], &g[1], &g[2]]);
    assert_eq!(s["files_hashed"], 0, "{s}");
}

/// A store an older build made keeps 0755 on its directory, objects/ and
/// tmp/: a guest's set-uid object is then runnable by any host user. A
/// writer tightens them to what a new store gets, and says so once.
#[test]
fn review_s24_writers_tighten_an_old_stores_open_modes_and_say_so_once() {
    if !require_root("review_s24_writers_tighten_an_old_stores_open_modes_and_say_so_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), 2);
    for g in &g {
        file(g, "bin/su", &bytes(5, 3000), 0o4755);
    }
    unify_json(&store, &[&g[0], &g[1]]);
    let open = |paths: &[&Path]| {
        for p in paths {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    };
    let (objects, tmp) = (store.join("objects"), store.join("tmp"));
    open(&[&store, &objects, &tmp]);

    let out = unifs(&store, &[&"unify", &"--no-progress", &g[0], &g[1]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for p in [&store, &objects, &tmp] {
        assert_eq!(mode(p), 0o700, "{}: {err}", p.display());
        let said = format!("{}: mode 0755 changed to 0700", p.display());
        assert!(err.contains(&said), "not said: {said}\n{err}");
    }
    let out = unifs(&store, &[&"unify", &"--no-progress", &g[0], &g[1]]);
    assert!(
        !stderr(&out).contains("changed to 0700"),
        "{}",
        stderr(&out)
    );

    // gc too (it writes to objects/).
    open(&[&objects]);
    let out = unifs(&store, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&objects), 0o700);
    let said = format!("{}: mode 0755 changed to 0700", objects.display());
    assert!(stderr(&out).contains(&said), "{}", stderr(&out));
}

/// A snapshot put back as catalog.db (the documented recovery) names the
/// inode numbers objects had when it was taken. One of them gc freed since
/// is a private file's now (crafted: ext4 reuses freed numbers, the test
/// points the row at a private file rather than wait for it). Unify must
/// not take that file for a link of the object.
#[test]
fn review_s24_a_restored_snapshots_freed_object_inode_is_not_trusted() {
    if !require_root("review_s24_a_restored_snapshots_freed_object_inode_is_not_trusted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), 2);
    for g in &g {
        file(g, "usr/lib/U.so", &bytes(7, 4000), 0o644);
        file(g, "usr/lib/V.so", &bytes(8, 5000), 0o644);
    }
    unify_json(&store, &[&g[0], &g[1]]);
    let snap = dir.path().join("snap.db");
    let out = unifs(&store, &[&"store", &"snapshot", &snap]);
    assert!(out.status.success(), "{}", stderr(&out));
    for g in &g {
        fs::remove_file(g.join("usr/lib/U.so")).unwrap();
    }
    gc_ok(&store);
    let private = file(&g[0], "usr/lib/p.so", &bytes(9, 4000), 0o644);

    for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = fs::remove_file(store.join(name));
    }
    fs::copy(&snap, store.join("catalog.db")).unwrap();
    // The freed number, reused by the private file.
    conn(&store)
        .execute(
            "UPDATE object_files SET ino = ?1 WHERE object_id NOT IN
                 (SELECT object_id FROM guest_links WHERE CAST(path AS TEXT) = 'usr/lib/V.so')",
            [ino(&private)],
        )
        .unwrap();

    let s = unify_json(&store, &[&"--all"]);
    let linked: i64 = conn(&store)
        .query_row(
            "SELECT count(*) FROM guest_links WHERE CAST(path AS TEXT) = 'usr/lib/p.so'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        linked, 0,
        "a private file recorded as an object's link: {s}"
    );
    assert_eq!(fs::read(&private).unwrap(), bytes(9, 4000));
    assert_eq!(fs::metadata(&private).unwrap().nlink(), 1);
    // gc drops the gone object (no guest path links it): all clean.
    gc_ok(&store);
    assert_eq!(fs::metadata(&private).unwrap().nlink(), 1);
    assert_verify_clean(&store);
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_already_linked"], 2, "{s}");
}

/// The store's own snapshot, put back after every object it lists was
/// gc'd, is this store's catalog: not refused as another store's.
#[test]
fn review_s24_own_snapshot_whose_objects_were_all_gcd_is_taken() {
    if !require_root("review_s24_own_snapshot_whose_objects_were_all_gcd_is_taken") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), 2);
    for g in &g {
        file(g, "usr/f", &bytes(11, 3000), 0o644);
    }
    unify_json(&store, &[&g[0], &g[1]]);
    let snap = dir.path().join("snap.db");
    let out = unifs(&store, &[&"store", &"snapshot", &snap]);
    assert!(out.status.success(), "{}", stderr(&out));
    for g in &g {
        fs::remove_file(g.join("usr/f")).unwrap();
        file(g, "usr/g", &bytes(12, 3000), 0o644);
    }
    unify_json(&store, &[&"--all"]);
    let out = unifs(&store, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = fs::remove_file(store.join(name));
    }
    fs::copy(&snap, store.join("catalog.db")).unwrap();

    let out = unifs(&store, &[&"unify", &"--json", &"--all"]);
    assert!(
        !stderr(&out).contains("another store"),
        "own snapshot refused: {}",
        stderr(&out)
    );
    let s = unify_summary(&out);
    assert_eq!(s["objects_recovered"], 1, "{s}");
    gc_ok(&store);
    assert_verify_clean(&store);
}

/// An older unify (before the killed runs' records in STORE/tmp) killed
/// mid-run left a temp name no record accounts for: the message says an
/// older unifs may have left it and how to tell it is safe to delete.
#[test]
fn review_s24_an_older_unifys_temp_name_is_explained() {
    if !require_root("review_s24_an_older_unifys_temp_name_is_explained") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let g = guests(dir.path(), 2);
    for g in &g {
        file(g, "usr/f", &bytes(13, 3000), 0o644);
    }
    unify_json(&store, &[&g[0], &g[1]]);
    // As an old build killed between its link and its rename left it.
    let left = g[0].join("usr/.unifs-tmp-4000000-1");
    fs::hard_link(g[0].join("usr/f"), &left).unwrap();

    let out = unifs(&store, &[&"unify", &"--json", &g[0], &g[1]]);
    let s = unify_summary(&out);
    let what = s["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == left.to_str().unwrap())
        .unwrap_or_else(|| panic!("not reported: {s}"))["what"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(what.contains("older unifs"), "{what}");
    assert!(what.contains("getfattr -n trusted.unifs.object"), "{what}");
    assert!(what.contains("cmp"), "{what}");
    assert!(left.exists(), "removed though no record accounts for it");
}
