//! A long life in a few cycles (session 30): what runs repeated over
//! guests that change between them leave behind.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::Path;

fn hash_cache_rows(store: &Path) -> i64 {
    rusqlite::Connection::open(store.join("catalog.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM hash_cache", [], |r| r.get(0))
        .unwrap()
}

/// `n` files of one size in `guest`'s directory `dir`, each of content
/// no other file has: unify hashes them (their size is shared) and keeps
/// their hashes, but links none.
fn unique_files(guest: &Path, dir: &str, seed: u64, n: u64) {
    for i in 0..n {
        let data = bytes(seed * 1000 + i, 4096);
        file_at(guest, &format!("{dir}/f{i}"), &data, 0o644, 1_700_000_000);
    }
}

/// Guests whose files are replaced between nightly runs (a package
/// update): the hash cache keeps rows only for files the guests still
/// have. Before, a row stayed for the store's life unless a new file took
/// its inode number (the second run: 80 rows for 40 files), and each run
/// loaded them all.
#[test]
fn hash_cache_forgets_files_the_guests_no_longer_have() {
    if !require_root("hash_cache_forgets_files_the_guests_no_longer_have") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let per_guest = 20;
    for cycle in 0..8u64 {
        // The new version first, then the old one goes (as dpkg does): the
        // new files cannot take the old ones' inode numbers.
        for (k, g) in [&a, &b].into_iter().enumerate() {
            unique_files(
                g,
                &format!("pkg{cycle}"),
                cycle * 10 + k as u64 + 1,
                per_guest,
            );
            let _ = fs::remove_dir_all(g.join(format!("pkg{}", cycle.wrapping_sub(1))));
        }
        let s = unify_json(&store, &[&a, &b]);
        assert_eq!(s["files_hashed"], 2 * per_guest, "cycle {cycle}: {s}");
        assert_eq!(
            hash_cache_rows(&store),
            2 * per_guest as i64,
            "cycle {cycle}: rows for files deleted since earlier runs"
        );
    }
    // A run over some guests leaves the others' rows alone: the next run
    // over all of them hashes nothing.
    unify_json(&store, &[&a]);
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["files_hashed"], 0, "{s}");
    assert_eq!(s["cache_hits"], 2 * per_guest, "{s}");
}
