//! Directory mtimes unify puts back while the guest runs on its mount.

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::{wait_until, Mount};
use crate::tree::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// 1985, the directories' mtime before any run.
const OLD: i64 = 500_000_000;

fn mtime_ns(path: &Path) -> i128 {
    let m = std::fs::symlink_metadata(path).unwrap();
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

fn set_dir_mtime(path: &Path, sec: i64, nsec: u32) {
    let t = unifs::sys::Timestamp { sec, nsec };
    unifs::sys::lutimens(path, t, t).unwrap();
}

/// `n` files in `d` of guests `g1` and `g2`, alike, `d` with an old mtime.
fn guests(root: &Path, n: usize) {
    for g in ["g1", "g2"] {
        for i in 0..n {
            file(
                &root.join(g),
                &format!("d/f{i}"),
                format!("content {i}\n").as_bytes(),
                0o644,
            );
        }
        set_dir_mtime(&root.join(g).join("d"), OLD, 0);
    }
}

/// The guest creates a file in a directory while unify links the files
/// there. Unify noted the directory's mtime once, before its first change,
/// and took every later mtime for one of its own: at the end it put 1985
/// back over the guest's create, and make (or Python's import cache) would
/// trust a listing that lacks the new file. Now unify puts the mtime back
/// after each change, and before the next checks that it is still that.
#[test]
fn review_s23_a_guests_create_during_unify_keeps_the_directory_mtime() {
    if !require_root("review_s23_a_guests_create_during_unify_keeps_the_directory_mtime") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let n = 100;
    guests(root, n);
    let store = root.join("store");
    init_store(&store);
    std::fs::create_dir(root.join("m")).unwrap();
    let mount = Mount::start(&store, &root.join("g2"), &root.join("m"), &[]);
    let mut unify = Command::new(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "g1", "g2"])
        .current_dir(root)
        // Between two changes of unify's, not during one: one linking
        // thread, pausing after each change (unify.md: a change made during
        // one of unify's is not seen), long enough for a loaded machine.
        .env("UNIFS_THREADS", "1")
        .env("UNIFS_TEST_DIRTIMES_PAUSE_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let linked = || {
        (0..n)
            .step_by(n / 100)
            .filter(|i| {
                let p = root.join(format!("g2/d/f{i}"));
                std::fs::metadata(p).is_ok_and(|m| m.nlink() > 1)
            })
            .count()
    };
    // In a pause: some files linked, and the old mtime put back.
    let d = root.join("g2/d");
    let old_ns = i128::from(OLD) * 1_000_000_000;
    let started = wait_until(Duration::from_secs(60), || {
        linked() >= 5 && mtime_ns(&d) == old_ns
    });
    // Less a clock tick or two: file times come from a coarse clock.
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
        - 50_000_000;
    std::fs::write(mount.path("d/NEWFILE"), b"the guest wrote this\n").unwrap();
    let in_time = started && linked() < 95 && unify.try_wait().unwrap().is_none();
    assert!(
        wait_until(Duration::from_secs(120), || unify
            .try_wait()
            .unwrap()
            .is_some()),
        "unify did not end"
    );
    assert!(unify.wait().unwrap().success());
    assert!(in_time, "the create did not land while unify linked in d");
    assert!(
        mtime_ns(&d) >= created,
        "the directory's mtime went back over the guest's create: {} < {created}",
        mtime_ns(&d)
    );
    // Where nobody else changed the directory, unify's changes are not seen.
    assert_eq!(
        mtime_ns(&root.join("g1/d")),
        i128::from(OLD) * 1_000_000_000
    );
    drop(mount);
}
