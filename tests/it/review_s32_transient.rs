//! Session 32's review of a read of the catalog that fails once: the disk
//! is at fault, not the catalog.

use crate::common::{require_root, require_strace};
use crate::review_s11_fault::strace_unifs_on;
use crate::review_s18_store::{root_page, shared_guests};
use crate::review_s32_errors::catalog_commands;
use crate::tree::{assert_verify_clean, bytes, stderr, unifs};
use std::fs;

/// A read of catalog.db that failed once (EIO), then read fine, made the
/// command say "database disk image is malformed; the catalog is damaged:
/// move it out of the store … start an empty catalog with … --new-catalog":
/// the re-read that tells a failing disk (`read_failure`) passed, so the
/// error was taken for damage. The catalog was sound; the cure offered
/// would have thrown it away. SQLite's integrity check, on a connection
/// of its own, now settles it: the command says a read failed once, that
/// the catalog checks sound, to check the disk and run it again. A page
/// really overwritten is still called damaged, with the way out.
#[test]
fn a_read_that_fails_once_is_not_called_a_damaged_catalog() {
    let test = "a_read_that_fails_once_is_not_called_a_damaged_catalog";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let store = dir.path().join("store");
    shared_guests(&store, dir.path(), 20, 5_000);
    let catalog = store.join("catalog.db");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for args in catalog_commands(&a, &b, &dir.path().join("snap.db")) {
        // 1: the header read at open ("disk I/O error"); 3 and 6: page
        // reads later ("malformed"). Only that one read fails.
        for when in ["1", "3", "6"] {
            let inject = format!("pread64:error=EIO:when={when}");
            let out = strace_unifs_on(&store, &inject, None, Some(&catalog))
                .args(&args)
                .output()
                .unwrap();
            let err = stderr(&out);
            let what = format!("unifs {args:?}, EIO on read {when} only");
            assert!(!out.status.success(), "{what}: succeeded");
            assert!(
                err.contains(&catalog.display().to_string())
                    && err.contains("the disk did not repeat")
                    && err.contains("do not replace it")
                    && err.contains("dmesg")
                    && err.contains("run the command again"),
                "{what}: the error should name the catalog, the read that failed and the disk: \
                 {err}"
            );
            assert!(
                !err.contains("damaged") && !err.contains("new-catalog"),
                "{what}: a read that failed once is not a damaged catalog: {err}"
            );
        }
    }
    // The catalog was sound all along, and the commands work again.
    assert_verify_clean(&store);

    // Bytes over a page of the objects table: every read returns them, so
    // the catalog is damaged, and stats (whose query SQLite finds
    // malformed) and verify (its integrity check) say so.
    let page = root_page(&store, "objects");
    let mut db = fs::read(&catalog).unwrap();
    let at = (page as usize - 1) * 4096;
    db[at..at + 4096].copy_from_slice(&bytes(page + 7, 4096));
    fs::write(&catalog, &db).unwrap();
    for args in [["store", "stats"], ["store", "verify"]] {
        let out = unifs(&store, &[&args[0], &args[1]]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} on a damaged page: {err}"
        );
        assert!(
            err.contains("damaged") && !err.contains("did not repeat"),
            "{args:?} on a damaged page: {err}"
        );
    }
}
