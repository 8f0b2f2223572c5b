//! Where ctime comes from a coarse clock (kernels before 6.13, or
//! filesystems without multigrain timestamps), two changes in one tick can
//! leave a file the same stat.

use crate::common::{require_root, unifs_bin};
use crate::tree::*;
use std::path::Path;
use std::process::Command;

/// `unify --json` with the coarse-clock path forced, its window widened to
/// `ms` (the test cannot count on unify starting within a tick of a write).
fn unify_coarse(store: &Path, guests: &[&Path], ms: u32) -> serde_json::Value {
    let out = Command::new(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(["unify", "--json"])
        .args(guests)
        .env("UNIFS_TEST_COARSE_CTIME", ms.to_string())
        .output()
        .unwrap();
    unify_summary(&out)
}

fn cached_hashes(store: &Path) -> i64 {
    rusqlite::Connection::open(store.join("catalog.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM hash_cache", [], |r| r.get(0))
        .unwrap()
}

/// A file written just before unify hashed it could be written again in
/// the same tick, same size, keeping its stat: the hash cache kept the
/// first content's id for it, and a later run, trusting it, could link the
/// file to an object of that old content (the new bytes lost). The hash of
/// a file changed within a tick of the run's start is now not kept: the
/// next run reads it again.
#[test]
fn review_s23_on_a_coarse_clock_files_changed_just_before_a_run_are_hashed_again() {
    if !require_root(
        "review_s23_on_a_coarse_clock_files_changed_just_before_a_run_are_hashed_again",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (seed, g) in [(2, &a), (3, &b)] {
        file(g, "etc/same", &bytes(1, 9000), 0o644);
        // Hashed (its size is another's), never linked.
        file(g, "usr/lone", &bytes(seed, 7000), 0o644);
    }
    let first = unify_coarse(&store, &[&a, &b], 60_000);
    assert_eq!(first["files_linked"], 1, "{first}");
    assert_eq!(
        cached_hashes(&store),
        0,
        "hashes of just-changed files were kept"
    );
    // Still within the (widened) tick: read again, still not kept.
    let again = unify_coarse(&store, &[&a, &b], 60_000);
    assert!(again["bytes_hashed"].as_u64().unwrap() > 0, "{again}");
    assert_eq!(cached_hashes(&store), 0);
    // Out of it (a fine-grained clock here): kept, and the run after reads
    // nothing.
    unify_json(&store, &[&a, &b]);
    assert!(cached_hashes(&store) > 0);
    let last = unify_json(&store, &[&a, &b]);
    assert_eq!(last["bytes_hashed"], 0, "{last}");
}
