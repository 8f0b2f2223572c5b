//! Review s35 (walshm2): what s34's tidy of the catalog's -wal and -shm
//! left.
//!
//! - A reader's tidy checked that the log was empty, then opened and closed
//!   a connection, whose close checkpoints where it is the last: a writer
//!   that committed and closed in between had its commit copied into
//!   catalog.db by a command that only reads. The tidy's close now
//!   refuses to checkpoint a log that is not empty, decided while it holds
//!   the lock that keeps every other connection out.
//! - `restore` read the catalog (for the format of its objects) before it
//!   took the store's lock, through a read-only view immutable, where a
//!   writer can change the file under it. It reads it under the lock.
//! - A reader open while a writer finished kept the writer's log (and
//!   -shm) until the next writer. The writer now empties its log into
//!   catalog.db before it closes, and a reader removes an empty log.

use crate::common::unifs_bin;
use crate::guest::harness::KillOnDrop;
use crate::guest::review_s11_life::Continue;
use crate::review_s12_store::{hold_lock, when_free, RoBind};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s34_walshm::{catalog_files, succeeded, unified};
use crate::tree::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

const ALL: [&str; 3] = ["catalog.db", "catalog.db-shm", "catalog.db-wal"];

/// `unifs store stats` on `store`, stopped (UNIFS_TEST_TIDY_STOP) in its
/// tidy with the tidy's connection open; SIGCONT lets it go on.
fn stats_stopped_in_tidy(store: &Path) -> (KillOnDrop, Continue) {
    let child = Command::new(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(["store", "stats"])
        .env("UNIFS_TEST_TIDY_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let child = KillOnDrop(Some(child));
    let go_on = Continue(pid as i32);
    assert!(within_60s(|| stopped(pid)), "stats never reached its tidy");
    (child, go_on)
}

/// Lets the stopped command go on and waits (bounded) for it to succeed.
fn finish(mut child: KillOnDrop, go_on: Continue) {
    drop(go_on);
    let running = child.0.as_mut().unwrap();
    assert!(
        within_60s(|| !matches!(running.try_wait(), Ok(None))),
        "stats never finished once let go on"
    );
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    succeeded(&out, "stats stopped in its tidy");
}

/// The interleaving held open: a reader's tidy, its connection open, while
/// a writer commits and closes (its close cannot checkpoint: the tidy's
/// connection is open). The tidy's close, the last, then checkpointed the
/// commit: catalog.db changed under a command that only reads.
#[test]
fn s35_a_readers_tidy_never_checkpoints_a_writers_commit() {
    if !crate::common::require_root("s35_a_readers_tidy_never_checkpoints_a_writers_commit") {
        return;
    }
    let (_dir, store, _g1, _g2) = unified();
    let db = store.join("catalog.db");
    let (child, go_on) = stats_stopped_in_tidy(&store);
    let writer = rusqlite::Connection::open(&db).unwrap();
    writer
        .execute("INSERT INTO config(key, value) VALUES ('s35', '1')", [])
        .unwrap();
    drop(writer);
    assert!(fs::metadata(store.join("catalog.db-wal")).unwrap().len() > 0);
    let before = fs::read(&db).unwrap();
    finish(child, go_on);
    assert!(
        fs::read(&db).unwrap() == before,
        "the reader's tidy wrote the writer's commit into catalog.db"
    );
    assert_eq!(catalog_files(&store), ALL, "a log with a commit removed");
    // The commit is there for the next connection, which, the last to
    // close and able to checkpoint, removes both.
    let next = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = next
        .query_row("SELECT count(*) FROM config WHERE key = 's35'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 1);
    next.execute("DELETE FROM config WHERE key = 's35'", [])
        .unwrap();
    drop(next);
    assert_eq!(catalog_files(&store), ["catalog.db"]);
    assert_verify_clean(&store);
}

/// restore checks the format of the store's objects in the catalog: it read
/// it before taking the store's lock (through a read-only view, as a file
/// nobody changes), so beside a writer it read what the writer was
/// changing. Under the lock, a writer holding it is "busy" before any read.
#[test]
fn s35_restore_reads_the_catalog_under_the_stores_lock() {
    if !crate::common::require_root("s35_restore_reads_the_catalog_under_the_stores_lock") {
        return;
    }
    let (dir, store, g1, _g2) = unified();
    let manifest = dir.path().join("g1.jsonl");
    crate::backup::manifest(&store, &g1, &manifest);
    let empty = dir.path().join("own");
    fs::create_dir(&empty).unwrap();
    // What a writer is in the middle of: a format this unifs does not know,
    // read only by one that does not wait for the writer.
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    conn.execute(
        "UPDATE config SET value = '99' WHERE key = 'format_version'",
        [],
    )
    .unwrap();
    drop(conn);
    let ro = RoBind::new(&store, &dir.path().join("store-ro"));
    let writer = hold_lock(&store, libc::LOCK_EX);
    let target = dir.path().join("g1-restored");
    let out = restore(&ro.0, &manifest, &empty, &target);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("is busy"), "read without the lock: {err}");
    drop(writer);
    // Once the writer is gone, the check reads.
    let out = when_free(|| restore(&ro.0, &manifest, &empty, &target));
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("format 99"), "{err}");
    assert!(!target.exists());
    assert_eq!(catalog_files(&store), ["catalog.db"]);
}

/// A reader open while a writer finished kept the writer's log (and -shm)
/// until the next writer closed: the writer's close, not the last, could
/// not checkpoint, and no reader may. The writer now checkpoints it
/// before its close, leaving it empty, and the next reader's close, or
/// the open reader's own, removes both.
#[test]
fn s35_a_reader_open_while_a_writer_finishes_keeps_no_log() {
    if !crate::common::require_root("s35_a_reader_open_while_a_writer_finishes_keeps_no_log") {
        return;
    }
    let (dir, store, _g1, _g2) = unified();
    let db = store.join("catalog.db");
    let guest = |name: &str, seed: u64| {
        let g = dir.path().join(name);
        file_at(&g, "usr/bin/tool", &bytes(34, 6000), 0o755, 1_600_000_000);
        file_at(&g, "etc/own", &bytes(seed, 3000), 0o644, 1_600_000_000);
        g
    };
    let guests = |store: &Path| -> usize {
        let out = unifs(store, &[&"store", &"stats", &"--json"]);
        succeeded(&out, "stats --json");
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        stats["guests"].as_array().unwrap().len()
    };
    // Another program's reader (one that cannot checkpoint), then the next
    // unifs reader.
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let reader = rusqlite::Connection::open_with_flags(&db, flags).unwrap();
    let _: i64 = reader
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let g3 = guest("g3", 3);
    unify_json(&store, &[&g3]);
    drop(reader);
    assert_eq!(guests(&store), 3);
    assert_eq!(
        catalog_files(&store),
        ["catalog.db"],
        "the writer's log, after a reader"
    );
    // A unifs reader, held in its tidy: its own close removes them.
    let (child, go_on) = stats_stopped_in_tidy(&store);
    let g4 = guest("g4", 4);
    unify_json(&store, &[&g4]);
    assert_eq!(catalog_files(&store), ALL, "removed under an open reader");
    finish(child, go_on);
    assert_eq!(catalog_files(&store), ["catalog.db"], "the open reader's");
    assert_eq!(guests(&store), 4);
    assert_eq!(catalog_files(&store), ["catalog.db"]);
    assert_verify_clean(&store);
}
