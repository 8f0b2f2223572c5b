//! Session 33's review of doubts the last review left open: SQLite's
//! locks dropped by a plain close of the catalog file.

use crate::common::require_root;
use crate::review_s11_fault::two_guests;
use crate::review_s18_store::root_page;
use crate::tree::{bytes, stderr, unifs, unify_json};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The POSIX read locks this process holds on `file`'s inode, as
/// /proc/locks lists them (`1: POSIX  ADVISORY  READ PID MAJ:MIN:INO START END`).
fn my_read_locks(file: &Path) -> usize {
    let ino = std::fs::metadata(file).unwrap().ino().to_string();
    let me = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| {
            f.len() >= 6
                && f[1] == "POSIX"
                && f[3] == "READ"
                && f[4] == me
                && f[5].rsplit(':').next() == Some(ino.as_str())
        })
        .count()
}

/// Writes `data` over page `page` (4 KiB pages) of `file` from another
/// process: a descriptor of our own, closed, would drop the locks this
/// test watches.
fn write_page_elsewhere(file: &Path, page: u64, data: &[u8]) {
    use std::io::Write;
    let mut dd = Command::new("dd")
        .arg(format!("of={}", file.display()))
        .args(["bs=4096", "conv=notrunc,fsync", "status=none"])
        .arg(format!("seek={}", page - 1))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    dd.stdin.take().unwrap().write_all(data).unwrap();
    assert!(dd.wait().unwrap().success(), "dd over {}", file.display());
}

/// When a catalog read failed, unifs re-read catalog.db and its log
/// through a plain file to tell a failing disk from damage, and closed it
/// while its SQLite connection was still open. POSIX locks are the
/// process's: that close dropped SQLite's SHARED lock on catalog.db (found
/// by strace of `store verify` on a damaged page: fcntl F_RDLCK on SQLite's
/// descriptor, then open, pread to the end and close of another). A writer
/// closing its connection then took itself for the last user of the
/// catalog, checkpointed and deleted catalog.db-wal and catalog.db-shm
/// under the connection still open (SQLite's "How To Corrupt An SQLite
/// Database File", 2.2), while unifs went on reading through it (the full
/// integrity check that follows, unify's walk beside its failed check).
/// The re-read now goes through a descriptor kept open.
#[test]
fn a_failed_catalog_read_keeps_sqlites_lock_on_the_file() {
    if !require_root("a_failed_catalog_read_keeps_sqlites_lock_on_the_file") {
        return;
    }
    let (_dir, store, a, b) = two_guests();
    unify_json(&store, &[&a, &b]);
    let catalog = store.join("catalog.db");
    // Bytes over the objects table's page, before the open (which reads
    // only the schema): the check below reads the page and fails.
    let page = root_page(&store, "objects");
    let good = std::fs::read(&catalog).unwrap()[(page as usize - 1) * 4096..][..4096].to_vec();
    write_page_elsewhere(&catalog, page, &bytes(page + 7, 4096));
    let cat = unifs::catalog::Catalog::open_readonly(&catalog).unwrap();
    assert_eq!(
        my_read_locks(&catalog),
        1,
        "SQLite's SHARED lock, once open"
    );
    let err = cat.check_integrity(false).unwrap_err().to_string();
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(
        my_read_locks(&catalog),
        1,
        "the connection is open: SQLite's SHARED lock must still be held after the error"
    );

    // The page put back, a writer comes and goes: it must leave the log
    // of the connection still open here in place.
    write_page_elsewhere(&catalog, page, &good);
    let out = unifs(&store, &[&"store", &"gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let wal = store.join("catalog.db-wal");
    assert!(
        std::fs::symlink_metadata(&wal).is_ok_and(|m| m.len() > 0),
        "a writer deleted {} under a connection still open",
        wal.display()
    );
    drop(cat);
}
