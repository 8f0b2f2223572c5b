//! Session 30's review of a disk that fails under the store and guests:
//! ext4 on a loop device mounted `errors=remount-ro`, made to fail with
//! `/sys/fs/ext4/loopN/trigger_fs_error` (ext4 marks itself in error,
//! aborts its journal and refuses every change with EROFS, as it does on
//! a real I/O or corruption error). Each test here keeps a defect that
//! review met.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::fs::harness::Ext4;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn unifs(store: &Path, args: &[&str]) -> Output {
    Command::new(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

/// After ext4 hit an error and went read-only, `store verify`, `stats`
/// and `unify --dry-run` all failed with only "catalog …: unable to open
/// database file", although the lock's own error says these read a
/// read-only store. The catalog is in WAL mode: a reader needs to create
/// catalog.db-shm, which the filesystem refuses; unifs then opens it
/// immutable, but only where access(2) says the directory is not writable,
/// and an ext4 in emergency read-only keeps its mount read-write, so
/// access still says yes.
#[test]
fn a_store_on_an_ext4_gone_read_only_after_an_error_can_still_be_read() {
    if !require_root("a_store_on_an_ext4_gone_read_only_after_an_error_can_still_be_read") {
        return;
    }
    let disk = Ext4::new(&[], &["errors=remount-ro"]);
    let store = disk.root().join("store");
    let (g1, g2) = (disk.dir("g1"), disk.dir("g2"));
    for g in [&g1, &g2] {
        fs::write(g.join("lib"), vec![7u8; 100_000]).unwrap();
    }
    let out = unifs(
        &store,
        &["unify", "--no-progress"]
            .iter()
            .copied()
            .chain([g1.to_str().unwrap(), g2.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    disk.fail();
    assert!(
        fs::write(disk.root().join("probe"), "x").is_err(),
        "ext4 should refuse writes"
    );

    for args in [
        &["store", "stats"][..],
        &["store", "verify"],
        &["unify", "-n", "--all"],
    ] {
        let out = unifs(&store, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "unifs {args:?} on a read-only store: {err}"
        );
    }
    let out = unifs(&store, &["store", "stats"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains('1'),
        "stats: {out:?}"
    );
}

/// A unify whose filesystem failed under it (ext4 gone read-only while it
/// wrote its catalog) ended with only "catalog …: disk I/O error": no word
/// of the read-only filesystem nor of what to do. It now says the
/// filesystem refuses writes and how to get out (repair, run again); after
/// the repair both guests read as before and the store verifies.
/// strace holds the run's first write to catalog.db-wal for 5 s, so the
/// failure lands while the catalog is being written, whatever the load.
#[test]
fn a_unify_whose_ext4_fails_under_its_catalog_says_so_and_how_to_repair() {
    let name = "a_unify_whose_ext4_fails_under_its_catalog_says_so_and_how_to_repair";
    if !require_root(name) || !require_strace(name) {
        return;
    }
    let disk = Ext4::new(&[], &["errors=remount-ro"]);
    let store = disk.root().join("store");
    let (g1, g2) = (disk.dir("g1"), disk.dir("g2"));
    let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for g in [&g1, &g2] {
        fs::write(g.join("lib"), &content).unwrap();
        // One mtime: written in two clock ticks, they would not be linked.
        crate::fs::harness::set_mtime(&g.join("lib"), 1_000_000_000);
    }
    // On disk before the failure, as files a guest had long had.
    nix::unistd::syncfs(fs::File::open(disk.root()).unwrap()).unwrap();
    let wal = store.join("catalog.db-wal");
    let unify = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64"])
        .args(["-e", "inject=pwrite64:delay_enter=5000000:when=1", "-P"])
        .arg(&wal)
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--no-progress"])
        .args([&g1, &g2])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // catalog.db-wal is created before its first write, which strace holds.
    let seen = crate::fs::harness::wait_until(std::time::Duration::from_secs(60), || wal.exists());
    disk.fail();
    let out = unify.wait_with_output().unwrap();
    assert!(seen, "no catalog.db-wal within 60 s");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "unify succeeded on a failed filesystem: {err}"
    );
    assert!(
        err.contains(&store.join("catalog.db").display().to_string())
            && err.contains("refuses writes")
            && err.contains("fsck"),
        "unify's error should name the catalog, the read-only filesystem and the repair: {err}"
    );

    disk.repair(&["errors=remount-ro"]);
    for g in [&g1, &g2] {
        assert_eq!(fs::read(g.join("lib")).unwrap(), content, "{}", g.display());
    }
    let out = unifs(&store, &["store", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run after the repair does the work: one object, both linked.
    let g = [g1.to_str().unwrap(), g2.to_str().unwrap()];
    let out = unifs(&store, &["unify", "--no-progress", g[0], g[1]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for g in [&g1, &g2] {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(g.join("lib")).unwrap().nlink(),
            3,
            "{}",
            g.display()
        );
    }
}
