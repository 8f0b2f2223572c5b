//! Review s34 (walshm): commands that only read leave the store as they
//! found it.
//!
//! - Every read-only command left an empty `catalog.db-wal` and
//!   `catalog.db-shm` in a store at rest that had neither: SQLite deletes
//!   them when the last connection closes, but only a connection that can
//!   checkpoint, never a read-only one. A reader now has SQLite remove
//!   them, which it does only where no other connection is open.
//! - Through a read-only view of the store (no -shm can be made there) the
//!   catalog is read immutable, which takes no lock and reads no log; a
//!   writer on a writable view was not noticed and could change the file
//!   under the reader. The reader now takes the store's lock shared, and
//!   says so where a writer holds it.

use crate::common::require_root;
use crate::review_s12_store::{hold_lock, RoBind};
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};

/// The catalog's files in `store` (catalog.db, and its -wal and -shm where
/// they are).
pub(crate) fn catalog_files(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("catalog.db"))
        .collect();
    names.sort();
    names
}

/// Guests g1 and g2 sharing a file, unified into `store`; the temp dir,
/// the store and the guests.
pub(crate) fn unified() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (g1, g2) = (dir.path().join("g1"), dir.path().join("g2"));
    for g in [&g1, &g2] {
        file_at(g, "usr/bin/tool", &bytes(34, 6000), 0o755, 1_600_000_000);
    }
    let s = unify_json(&store, &[&g1, &g2]);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(catalog_files(&store), ["catalog.db"], "a writer's close");
    (dir, store, g1, g2)
}

pub(crate) fn succeeded(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", stderr(out));
}

#[test]
fn s34_read_only_commands_leave_no_wal_or_shm_behind() {
    if !require_root("s34_read_only_commands_leave_no_wal_or_shm_behind") {
        return;
    }
    let (dir, store, g1, _g2) = unified();
    let manifest = dir.path().join("g1.jsonl");
    let private = dir.path().join("g1.private");
    let snapshot = dir.path().join("snapshot.db");
    let empty = dir.path().join("own");
    fs::create_dir(&empty).unwrap();
    let commands: Vec<Vec<&dyn AsRef<std::ffi::OsStr>>> = vec![
        vec![&"store", &"stats"],
        vec![&"store", &"ls"],
        vec![&"store", &"runs"],
        vec![&"store", &"verify"],
        vec![&"store", &"gc", &"--dry-run"],
        vec![&"store", &"snapshot", &snapshot],
        vec![&"unify", &"--dry-run", &"--all"],
        vec![
            &"manifest",
            &g1,
            &"-o",
            &manifest,
            &"--private-list",
            &private,
        ],
    ];
    for args in &commands {
        let out = unifs(&store, args);
        let what = format!(
            "{args:?}",
            args = args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        succeeded(&out, &what);
        assert_eq!(catalog_files(&store), ["catalog.db"], "after {what}");
    }
    // restore reads the catalog too (the format of its objects).
    let target = dir.path().join("g1-restored");
    succeeded(&restore(&store, &manifest, &empty, &target), "restore");
    assert_eq!(catalog_files(&store), ["catalog.db"], "after restore");
}

/// The removal is SQLite's own, at the close of a connection that finds
/// itself the last: never while another process has the catalog open, a
/// writer that has not written yet (its log empty) as much as one that has.
#[test]
fn s34_a_reader_removes_the_log_it_made_but_never_one_in_use() {
    if !require_root("s34_a_reader_removes_the_log_it_made_but_never_one_in_use") {
        return;
    }
    let (_dir, store, _g1, _g2) = unified();
    succeeded(&unifs(&store, &[&"store", &"stats"]), "stats at rest");
    assert_eq!(catalog_files(&store), ["catalog.db"], "a reader at rest");
    let all = ["catalog.db", "catalog.db-shm", "catalog.db-wal"];
    let wal = store.join("catalog.db-wal");
    // Another process's connection, open and read from: its log is empty.
    let writer = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    let count = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM config WHERE key = 's34'", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(count(&writer), 0);
    assert_eq!(fs::metadata(&wal).unwrap().len(), 0);
    succeeded(&unifs(&store, &[&"store", &"stats"]), "stats beside it");
    assert_eq!(
        catalog_files(&store),
        all,
        "removed under an open connection"
    );
    // It writes on, through the same log, and others read what it wrote.
    writer
        .execute("INSERT INTO config(key, value) VALUES ('s34', '1')", [])
        .unwrap();
    assert!(fs::metadata(&wal).unwrap().len() > 0);
    let out = unifs(&store, &[&"store", &"verify"]);
    succeeded(&out, "verify beside a writer");
    assert_eq!(catalog_files(&store), all, "removed with changes in it");
    let reader = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    assert_eq!(count(&reader), 1);
    drop(reader);
    writer
        .execute("DELETE FROM config WHERE key = 's34'", [])
        .unwrap();
    // The last to close checkpoints and removes both.
    drop(writer);
    assert_eq!(catalog_files(&store), ["catalog.db"], "the writer's close");
    assert_verify_clean(&store);
    assert_eq!(catalog_files(&store), ["catalog.db"], "after verify");
}

/// Through a read-only bind mount (a store kept read-only for backups),
/// while a writer holds the store's lock on a writable path to it: the
/// reader took the catalog for a file nobody changes and read on. It now
/// says the store is being written, and by whom; once it is not, it reads.
#[test]
fn s34_an_immutable_reader_refuses_while_a_writer_holds_the_store() {
    if !require_root("s34_an_immutable_reader_refuses_while_a_writer_holds_the_store") {
        return;
    }
    let (dir, store, _g1, _g2) = unified();
    let ro = RoBind::new(&store, &dir.path().join("store-ro"));
    let at_rest = unifs(&ro.0, &[&"store", &"stats", &"--json"]);
    succeeded(&at_rest, "stats through the read-only mount");
    let writer = hold_lock(&store, libc::LOCK_EX);
    for args in [
        &[&"store" as &dyn AsRef<std::ffi::OsStr>, &"stats"][..],
        &[&"unify", &"--dry-run", &"--all"],
    ] {
        let out = unifs(&ro.0, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("being written"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }
    drop(writer);
    // (Bounded: a child another test thread forked may hold the lock's fd
    // a moment, until its exec.)
    let mut out = unifs(&ro.0, &[&"store", &"stats", &"--json"]);
    for _ in 0..50 {
        if !stderr(&out).contains("being written") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = unifs(&ro.0, &[&"store", &"stats", &"--json"]);
    }
    succeeded(&out, "stats once the writer is done");
    assert_eq!(out.stdout, at_rest.stdout);
    assert_eq!(catalog_files(&store), ["catalog.db"]);
}
