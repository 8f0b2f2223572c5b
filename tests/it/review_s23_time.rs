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

/// Writes through a shared writable mapping whose pages are already dirty
/// change neither mtime nor ctime. A program kept a guest file mapped: unify
/// hashed it (content A, the same as another guest's), the program then
/// wrote B through the mapping and exited, and the next run took A's id
/// from the hash cache (same stat) and replaced the file by a link to A's
/// object: the program's writes were lost. A file someone has open for
/// writing when it is hashed now gets no cache row, and is never linked in
/// that run.
#[test]
fn review_s23_writes_through_a_mapping_are_not_lost_to_the_hash_cache() {
    if !require_root("review_s23_writes_through_a_mapping_are_not_lost_to_the_hash_cache") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (g1, g2) = (dir.path().join("g1"), dir.path().join("g2"));
    for g in [&g1, &g2] {
        file(g, "opt/data", &[b'A'; 8192], 0o644);
    }
    let (ready, go, done) = (
        dir.path().join("ready"),
        dir.path().join("go"),
        dir.path().join("done"),
    );
    let script = r#"
import mmap, os, sys, time
path, ready, go, done = sys.argv[1:5]
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:1] = b'A'                      # the write fault that stamps mtime and ctime
os.utime(path, ns=(10**18, 10**18))
open(ready, 'w').close()
end = time.time() + 60
while not os.path.exists(go) and time.time() < end:
    time.sleep(0.01)
m[0:8192] = b'B' * 8192            # no fault, no new mtime or ctime
m.close()
os.close(fd)
open(done, 'w').close()
"#;
    let mut program = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(g1.join("opt/data"))
        .args([&ready, &go, &done])
        .spawn()
        .unwrap();
    let wait_for = |p: &Path| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !p.exists() {
            assert!(
                std::time::Instant::now() < end,
                "{} never came",
                p.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_for(&ready);
    set_mtime(&g2.join("opt/data"), 1_000_000_000);
    let first = unify_json(&store, &[&g1, &g2]);
    std::fs::write(&go, b"").unwrap();
    wait_for(&done);
    assert!(program.wait().unwrap().success());
    let written = vec![b'B'; 8192];
    assert_eq!(
        std::fs::read(g1.join("opt/data")).unwrap(),
        written,
        "{first}"
    );
    let second = unify_json(&store, &[&g1, &g2]);
    assert_eq!(
        std::fs::read(g1.join("opt/data")).unwrap(),
        written,
        "the next run put the old content back: {first}\n{second}"
    );
    assert_eq!(std::fs::read(g2.join("opt/data")).unwrap(), [b'A'; 8192]);
    assert_verify_clean(&store);
}

/// The coarse path was taken by kernel version alone: on this kernel (6.13
/// or later) every filesystem was taken to have fine-grained ctime. But
/// ext4 made with 128-byte inodes keeps whole seconds, and ext3 (through
/// the ext4 driver) has no multigrain timestamps: a guest's same-size
/// rewrite right after unify hashed a file kept its stat, and a later run
/// linked the file (and files of other guests) by the old hash.
#[test]
fn review_s23_filesystems_with_coarse_ctime_keep_no_hash_of_a_file_just_changed() {
    if !require_root("review_s23_filesystems_with_coarse_ctime_keep_no_hash_of_a_file_just_changed")
    {
        return;
    }
    for (kind, args) in [("ext4", &["-q", "-I", "128"][..]), ("ext3", &["-q"][..])] {
        let fs = crate::review_s18_fs::Loopfs::new(kind, 64 << 20, args);
        let store = fs.path("store");
        let (a, b) = (fs.path("a"), fs.path("b"));
        for (seed, g) in [(2, &a), (3, &b)] {
            file(g, "usr/lone", &bytes(seed, 7000), 0o644);
        }
        let s = unify_json(&store, &[&a, &b]);
        assert_eq!(s["files_hashed"], 2, "{kind}: {s}");
        assert_eq!(
            cached_hashes(&store),
            0,
            "{kind} {args:?}: hashes of just-changed files were kept"
        );
    }
}
