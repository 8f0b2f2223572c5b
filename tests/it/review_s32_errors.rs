//! Session 32's review of error paths left open: a disk that fails to
//! read the catalog, closedir errors, libfaketime's path, a low open-file
//! limit.

use crate::common::{require_root, require_strace};
use crate::review_s11_fault::{strace_unifs_on, two_guests};
use crate::tree::*;

/// Every command that opens the catalog, with guests `a` and `b` unified
/// into it, `snap` where a snapshot may go: each must say the same of a
/// catalog the disk fails to read.
pub(crate) fn catalog_commands(
    a: &std::path::Path,
    b: &std::path::Path,
    snap: &std::path::Path,
) -> Vec<Vec<std::ffi::OsString>> {
    let words = |w: &[&std::ffi::OsStr]| w.iter().map(|w| w.to_os_string()).collect();
    let s = |t: &'static str| std::ffi::OsStr::new(t);
    vec![
        words(&[s("store"), s("stats")]),
        words(&[s("store"), s("verify")]),
        words(&[s("store"), s("gc")]),
        words(&[s("store"), s("snapshot"), snap.as_os_str()]),
        words(&[s("unify"), s("--no-progress"), s("-n"), s("--all")]),
        words(&[s("unify"), s("--no-progress"), a.as_os_str(), b.as_os_str()]),
        words(&[s("manifest"), a.as_os_str()]),
    ]
}

/// A disk that failed to read catalog.db (EIO) made every command say
/// "database disk image is malformed; the catalog is damaged: move it out
/// of the store … start an empty catalog … and unify every guest again":
/// SQLite reports a read's EIO as damage (SQLITE_IOERR_CORRUPTFS), and
/// where the first read failed, a bare "disk I/O error". The catalog was
/// sound; the cure offered would throw it away. Each command that opens
/// the catalog now names it, says the read failed with an I/O error and
/// sends the user to the disk, never to a new catalog. strace fails every
/// read of catalog.db from the `when`th on, as a bad sector fails every
/// read of it.
#[test]
fn an_eio_reading_the_catalog_sends_the_user_to_the_disk_not_to_a_new_catalog() {
    let test = "an_eio_reading_the_catalog_sends_the_user_to_the_disk_not_to_a_new_catalog";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let (dir, store, a, b) = two_guests();
    unify_json(&store, &[&a, &b]);
    let catalog = store.join("catalog.db");
    for args in catalog_commands(&a, &b, &dir.path().join("snap.db")) {
        // 1: the header read at open ("disk I/O error"); 3: a page read
        // later ("malformed").
        for when in ["1+", "3+"] {
            let inject = format!("pread64:error=EIO:when={when}");
            let out = strace_unifs_on(&store, &inject, None, Some(&catalog))
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let what = format!("unifs {args:?}, EIO from read {when}");
            assert!(!out.status.success(), "{what}: succeeded");
            assert!(
                err.contains(&catalog.display().to_string())
                    && err.contains("Input/output error")
                    && err.contains("dmesg")
                    && err.contains("fsck")
                    && err.contains("store verify"),
                "{what}: the error should name the catalog, the I/O error and the disk check: {err}"
            );
            assert!(
                !err.contains("damaged")
                    && !err.contains("new-catalog")
                    && !err.contains("malformed"),
                "{what}: a failed read is not a damaged catalog: {err}"
            );
        }
    }
    // The catalog was sound all along.
    assert_verify_clean(&store);
}
