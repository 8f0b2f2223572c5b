//! Session 30's review of a disk that fails under the store and guests:
//! ext4 on a loop device mounted `errors=remount-ro`, made to fail with
//! `/sys/fs/ext4/loopN/trigger_fs_error` (ext4 marks itself in error,
//! aborts its journal and refuses every change with EROFS, as it does on
//! a real I/O or corruption error). Each test here keeps a defect that
//! review met.

use crate::common::{require_root, unifs_bin};
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

/// Makes the ext4 mounted at `root` fail as on a real error: with
/// errors=remount-ro it turns read-only at once (`emergency_ro`).
fn fail_ext4(root: &Path) {
    let src = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE"])
        .arg(root)
        .output()
        .unwrap();
    let dev = String::from_utf8(src.stdout).unwrap();
    let name = Path::new(dev.trim()).file_name().unwrap().to_owned();
    let trigger = Path::new("/sys/fs/ext4")
        .join(name)
        .join("trigger_fs_error");
    fs::write(&trigger, "1").unwrap();
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
    fail_ext4(&disk.root());
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
