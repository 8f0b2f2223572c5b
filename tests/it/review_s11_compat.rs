//! Review s11-compat: a new unifs over stores older builds made. Old stores
//! are crafted here from a store this build made (a test cannot build old
//! commits): the catalog taken back to an older schema by raw SQL, markers
//! in their old form. The new binary must read them (migrating the catalog
//! where it writes), lose nothing and take old objects for objects.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Two guests sharing files (one with an xattr, one a guest hardlink
/// pair's content elsewhere), unified by this build. Returns the temp dir,
/// the store and the guests.
fn old_store_base() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests: Vec<_> = (1..=2).map(|i| dir.path().join(format!("g{i}"))).collect();
    for g in &guests {
        file(g, "usr/bin/a", &bytes(1, 5000), 0o755);
        file(g, "usr/lib/b", &bytes(2, 7000), 0o644);
        let x = file(g, "usr/lib/x", &bytes(3, 3000), 0o644);
        set_xattr(&x, "user.tag", b"hello");
        file(g, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644);
    }
    file(&guests[0], "usr/lib/own", &bytes(4, 2000), 0o644);
    let s = unify_json(&store, &[&guests[0], &guests[1]]);
    assert_eq!(s["objects_added"], 3, "{s}");
    (dir, store, guests)
}

/// Object files of the store.
fn object_files(store: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    out.sort();
    out
}

/// Gives every object the marker of stores made before 2026-11-30: the
/// id's 64 hex digits (the file name), not its 32 bytes.
fn hex_markers(store: &Path) {
    for path in object_files(store) {
        let name = path.file_name().unwrap().to_str().unwrap();
        let fan = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let hex = format!("{fan}{}", name.split('.').next().unwrap());
        set_xattr(&path, "trusted.unifs.object", hex.as_bytes());
    }
}

fn sql(store: &Path, batch: &str) {
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    conn.execute_batch(batch).unwrap();
}

fn user_version(store: &Path) -> i64 {
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

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

/// Schema 1 as the first builds (28b0301, store format 1 as documented in
/// 6c91a6e) made it: the links table was `guest_files`, later renamed in
/// 0001_init.sql itself. Migration 2 then failed on every command with
/// 'table guest_files already exists' (and the whole migration's SQL).
#[test]
fn a_schema_1_catalog_of_the_first_builds_is_migrated() {
    if !require_root("a_schema_1_catalog_of_the_first_builds_is_migrated") {
        return;
    }
    let (_dir, store, guests) = old_store_base();
    let links: i64 = rusqlite::Connection::open(store.join("catalog.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM guest_links", [], |r| r.get(0))
        .unwrap();
    assert_eq!(links, 6);
    sql(
        &store,
        &format!(
            "DROP VIEW guest_files; DROP VIEW store_objects; DROP VIEW unify_runs; {UNDO_SCHEMA_5}
             ALTER TABLE guests DROP COLUMN links_digest;
             ALTER TABLE guest_links RENAME TO guest_files;
             DROP INDEX guest_links_by_object;
             CREATE INDEX guest_files_by_object ON guest_files(object_id);
             DELETE FROM config WHERE key = 'objects_dir';
             PRAGMA user_version = 1;"
        ),
    );
    fs::remove_dir_all(store.join("cache")).unwrap();
    hex_markers(&store);
    let before: Vec<_> = guests.iter().map(|g| snapshot(g)).collect();

    // Read-only commands read it, and leave it at schema 1.
    let stats = ok(&unifs(&store, &[&"store", &"stats", &"--json"]));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["usage"]["guest_links"], 6, "{stats}");
    assert_eq!(user_version(&store), 1);

    // A writer migrates it; every file is known as linked, nothing new.
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_already_linked"], 6, "{s}");
    assert_eq!(s["objects_added"], 0, "{s}");
    assert_eq!(s["files_linked"], 0, "{s}");
    assert_eq!(user_version(&store), 6);
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    let (view, rows): (String, i64) = conn
        .query_row(
            "SELECT (SELECT type FROM sqlite_master WHERE name = 'guest_files'),
                    (SELECT count(*) FROM guest_files)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((view.as_str(), rows), ("view", 6));
    assert_eq!(object_files(&store).len(), 3);
    assert_verify_clean(&store);
    for (g, b) in guests.iter().zip(&before) {
        assert_invisible(b, &snapshot(g), "unify over a schema-1 store");
    }
}

/// Takes a catalog of this build back to schema 2 (before the links
/// digest), as builds 022f6dd up to c8ea64e wrote it.
fn to_schema_2(store: &Path) {
    sql(
        store,
        &format!(
            "DROP VIEW guest_files; DROP VIEW store_objects; DROP VIEW unify_runs; {}
             {UNDO_SCHEMA_5} ALTER TABLE guests DROP COLUMN links_digest;
             PRAGMA user_version = 2;",
            include_str!("../../migrations/0002_views.sql")
        ),
    );
}

/// docs/store-format.md: dry runs read an older catalog through a migrated
/// copy in memory and leave the file as it was, so that an older unifs can
/// still open it. `store gc --dry-run` opened it for writing and migrated
/// it in place (schema 2 to 3): the unifs that made the store then refused
/// it as 'newer than this unifs knows (2)'.
#[test]
fn gc_dry_run_leaves_an_older_catalog_at_its_schema() {
    if !require_root("gc_dry_run_leaves_an_older_catalog_at_its_schema") {
        return;
    }
    let (_dir, store, guests) = old_store_base();
    to_schema_2(&store);
    fs::remove_file(guests[0].join("usr/lib/b")).unwrap();
    fs::remove_file(guests[1].join("usr/lib/b")).unwrap();
    let out = ok(&unifs(&store, &[&"store", &"gc", &"--dry-run", &"--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["objects_removed"], 1, "{report}");
    assert_eq!(user_version(&store), 2, "a dry run migrated the catalog");
    assert_eq!(object_files(&store).len(), 3);
    // The real run migrates it, and removes the object.
    let out = ok(&unifs(&store, &[&"store", &"gc", &"--json"]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["objects_removed"], 1, "{report}");
    assert_eq!(user_version(&store), 6);
    assert_eq!(object_files(&store).len(), 2);
    assert_verify_clean(&store);
}

fn unify_link_max(store: &Path, guests: &[PathBuf], link_max: u32) -> serde_json::Value {
    let out = std::process::Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(store)
        .args(["unify", "--json"])
        .args(guests)
        .env("UNIFS_TEST_LINK_MAX", link_max.to_string())
        .output()
        .unwrap();
    unify_summary(&out)
}

/// A store as builds before 38a63d4 left it: `store gc` removed an
/// unlinked copy 0 of an object (file and row) while copy 1 was linked.
/// Guests g0-g4 have the same file; g3 links copy 1, g4 is not unified.
fn store_with_a_gap() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests: Vec<PathBuf> = (0..5).map(|i| dir.path().join(format!("g{i}"))).collect();
    for g in &guests {
        file(g, "shared", b"shared by five\n", 0o644);
    }
    unify_link_max(&store, &guests[..4], 4);
    assert_ne!(
        ino(&guests[0].join("shared")),
        ino(&guests[3].join("shared")),
        "two copies"
    );
    for g in &guests[..3] {
        fs::remove_file(g.join("shared")).unwrap();
    }
    let copy0 = object_files(&store)
        .into_iter()
        .find(|p| !p.file_name().unwrap().to_string_lossy().contains('.'))
        .unwrap();
    fs::remove_file(&copy0).unwrap();
    sql(&store, "DELETE FROM object_files WHERE copy = 0");
    (dir, store, guests)
}

/// Copies were found by counting up from 0, which stops at such a gap: the
/// manifest of a guest linking copy 1 described its file as private (not
/// unified, so restored as a copy), and restore looked for an object as
/// copy 0 alone, so a manifest naming it (one written before the gap) was
/// refused, writing nothing: 'object … is not in the store'.
#[test]
fn manifest_and_restore_find_an_object_past_a_gap_an_old_gc_left() {
    if !require_root("manifest_and_restore_find_an_object_past_a_gap_an_old_gc_left") {
        return;
    }
    let (dir, store, guests) = store_with_a_gap();
    let manifest = dir.path().join("g3.jsonl");
    let list = dir.path().join("g3.private");
    ok(&unifs(
        &store,
        &[
            &"manifest",
            &guests[3],
            &"-o",
            &manifest,
            &"--private-list",
            &list,
        ],
    ));
    let text = fs::read_to_string(&manifest).unwrap();
    let line = text.lines().find(|l| l.contains("\"shared\"")).unwrap();
    assert!(
        line.contains("\"object\""),
        "not described as linked: {line}"
    );
    assert_eq!(fs::read(&list).unwrap(), b"", "no private file");
    let private = dir.path().join("private");
    fs::create_dir(&private).unwrap();
    let target = dir.path().join("g3r");
    let out = restore(&store, &manifest, &private, &target);
    ok(&out);
    assert_eq!(
        ino(&target.join("shared")),
        ino(&guests[3].join("shared")),
        "linked to copy 1"
    );
    assert_eq!(
        fs::read(target.join("shared")).unwrap(),
        b"shared by five\n"
    );
}

/// `store snapshot` of an older catalog wrote the copy read commands
/// migrate in memory: a schema-3 file for a schema-2 store, so the backup
/// was no copy of the catalog, and once put back as docs/backup.md says
/// (cp to catalog.db) the unifs that made the store refused it as 'newer
/// than this unifs knows (2)'.
#[test]
fn a_snapshot_of_an_older_catalog_keeps_its_schema() {
    if !require_root("a_snapshot_of_an_older_catalog_keeps_its_schema") {
        return;
    }
    let (dir, store, _guests) = old_store_base();
    to_schema_2(&store);
    let snap = dir.path().join("catalog-snapshot.db");
    ok(&unifs(&store, &[&"store", &"snapshot", &snap]));
    let conn = rusqlite::Connection::open(&snap).unwrap();
    let (version, links): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM guest_links)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, links), (2, 6), "the snapshot is not the catalog");
    let digest: rusqlite::Result<i64> =
        conn.query_row("SELECT count(links_digest) FROM guests", [], |r| r.get(0));
    assert!(digest.is_err(), "a column schema 2 has not");
    assert_eq!(user_version(&store), 2);
}

/// Unify counted copies up from 0 too: over such a gap a new guest's file
/// became a new copy 0 beside copy 1, which had room (one more inode of the
/// same object, for good).
#[test]
fn unify_links_the_copy_past_a_gap_an_old_gc_left() {
    if !require_root("unify_links_the_copy_past_a_gap_an_old_gc_left") {
        return;
    }
    let (_dir, store, guests) = store_with_a_gap();
    let last = ino(&guests[3].join("shared"));
    let s = unify_link_max(&store, &guests[3..], 4);
    assert_eq!(s["objects_added"], 0, "{s}");
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(ino(&guests[4].join("shared")), last, "linked to copy 1");
    assert_eq!(object_files(&store).len(), 1);
    assert_verify_clean(&store);
}

/// A migration that fails (here: an old catalog holding a table of a name
/// migration 2 gives a view) printed SQLite's error with the whole of the
/// migration's SQL in it, and said neither which migration failed nor that
/// nothing was changed.
#[test]
fn a_failed_migration_says_which_and_that_nothing_changed() {
    if !require_root("a_failed_migration_says_which_and_that_nothing_changed") {
        return;
    }
    let (_dir, store, guests) = old_store_base();
    sql(
        &store,
        &format!(
            "DROP VIEW guest_files; DROP VIEW store_objects; DROP VIEW unify_runs; {UNDO_SCHEMA_5}
             ALTER TABLE guests DROP COLUMN links_digest;
             CREATE TABLE store_objects (x);
             PRAGMA user_version = 1;"
        ),
    );
    let out = unifs(&store, &[&"unify", &guests[0], &guests[1]]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0002_views.sql"), "{err}");
    assert!(err.contains("store_objects already exists"), "{err}");
    assert!(err.contains("stays at schema 1"), "{err}");
    assert!(!err.contains("CREATE VIEW"), "the migration's SQL: {err}");
    assert_eq!(user_version(&store), 1);
}

/// Schema 4 gives the view `guest_files` a column `path_bytes`. A schema-3
/// catalog is read as it is by read-only commands, and its first writer
/// adds the column, the view's other columns unchanged.
#[test]
fn a_schema_3_catalog_gets_path_bytes_in_guest_files() {
    if !require_root("a_schema_3_catalog_gets_path_bytes_in_guest_files") {
        return;
    }
    let (_dir, store, _guests) = old_store_base();
    sql(
        &store,
        &format!(
            "DROP VIEW guest_files; DROP VIEW store_objects; DROP VIEW unify_runs; {}
             {UNDO_SCHEMA_5} PRAGMA user_version = 3;",
            include_str!("../../migrations/0002_views.sql")
        ),
    );
    ok(&unifs(&store, &[&"store", &"stats"]));
    assert_eq!(user_version(&store), 3);
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_already_linked"], 6, "{s}");
    assert_eq!(user_version(&store), 6);
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    let rows: Vec<(String, String, String, Vec<u8>)> = conn
        .prepare("SELECT guest, path, object_id, path_bytes FROM guest_files ORDER BY guest, path")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    for (guest, path, object, bytes) in &rows {
        assert_eq!(path.as_bytes(), &bytes[..], "{guest} {path}");
        assert_eq!(object.len(), 64);
    }
}
