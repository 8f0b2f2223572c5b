//! Review s39 (smalls2): leads from the last note. The store's cache files
//! torn as a power cut can leave them (renamed into place unsynced); the
//! FUSE abort hint for a process SIGKILL cannot end; the O_TRUNC way into
//! the log line of a break under an open reader.

use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Two guests sharing a few files in two directories, each with a
/// private one in `etc/` (same size and mtime, other content).
fn two_guests(dir: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (dir.join("g0"), dir.join("g1"));
    for (i, g) in [&a, &b].into_iter().enumerate() {
        for n in 0..3u64 {
            file(g, &format!("usr/lib/lib{n}.so"), &bytes(n, 5000), 0o644);
            file(g, &format!("usr/bin/tool{n}"), &bytes(10 + n, 4000), 0o755);
        }
        file_at(
            g,
            "etc/own.conf",
            &bytes(100 + i as u64, 3000),
            0o644,
            1_600_000_000,
        );
    }
    (a, b)
}

/// `STORE/cache`'s files (each guest's directory listings, and the record
/// of the catalog file as the last checked writer left it) are renamed into
/// place without an fsync: after a power cut a name may hold an empty, torn
/// or foreign file. Such a file is not trusted: every directory of its guest
/// is read again, the catalog is checked again, a file changed meanwhile is
/// still seen and linked, nothing else is; each is said at debug level (-vv),
/// naming the file. The next run keeps good files again.
#[test]
fn s39_torn_cache_files_are_not_trusted_and_are_said_so_at_debug_level() {
    if !crate::common::require_root("s39_torn_cache_files_are_not_trusted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_guests(dir.path());
    let store = dir.path().join("store");
    let first = unify_json(&store, &[&a, &b]);
    assert_eq!(first["files_linked"], 6, "{first}");
    let again = unify_json(&store, &[&a, &b]);
    assert_eq!(again["dirs_read"], 0, "the listings stood: {again}");
    let dirs = again["dirs_from_cache"].as_u64().unwrap();

    let cache = store.join("cache");
    let mut listings: Vec<PathBuf> = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("listings-")
        })
        .collect();
    listings.sort();
    assert_eq!(listings.len(), 2, "{listings:?}");
    // One cut short (a partial write), one of its length but garbage.
    let data = fs::read(&listings[0]).unwrap();
    fs::write(&listings[0], &data[..data.len() / 2]).unwrap();
    let len = fs::metadata(&listings[1]).unwrap().len() as usize;
    fs::write(&listings[1], bytes(77, len)).unwrap();
    // Empty, as a rename that reached the disk before its data leaves it.
    let checked = cache.join("catalog-checked");
    assert!(checked.exists());
    fs::write(&checked, b"").unwrap();

    // Meanwhile b's own file became a's, in place: same inode, size, mtime.
    let own = |g: &Path| g.join("etc/own.conf");
    fs::write(own(&b), fs::read(own(&a)).unwrap()).unwrap();
    set_mtime(&own(&b), 1_600_000_000);
    let before_a = snapshot(&a);

    let out = unifs(&store, &[&"-vv", &"unify", &"--json", &a, &b]);
    let torn = unify_summary(&out);
    let err = stderr(&out);
    assert_eq!(torn["dirs_from_cache"], 0, "{torn}");
    assert_eq!(torn["dirs_read"], dirs, "every directory read: {torn}");
    assert_eq!(torn["files_linked"], 1, "b's changed file only: {torn}");
    assert_eq!(torn["files_hashed"], 1, "{torn}");
    assert_eq!(ino(&own(&a)), ino(&own(&b)));
    assert_ne!(ino(&a.join("usr/lib/lib0.so")), ino(&own(&b)));
    assert_invisible(&before_a, &snapshot(&a), "guest a after the run");
    for l in &listings {
        let line = err
            .lines()
            .find(|line| line.contains(&*l.to_string_lossy()) && line.contains("not used"));
        assert!(
            line.is_some_and(|line| line.contains("DEBUG")),
            "says {} was not used: {err}",
            l.display()
        );
    }
    assert!(
        err.lines().any(|l| l.contains("DEBUG")
            && l.contains(&*checked.to_string_lossy())
            && l.contains("checking it")),
        "says the record was not trusted: {err}"
    );
    assert_verify_clean(&store);

    // Written again whole: the next run takes them.
    let out = unifs(&store, &[&"-vv", &"unify", &"--json", &a, &b]);
    let after = unify_summary(&out);
    assert_eq!(after["dirs_read"], 0, "{after}");
    assert_eq!(after["files_linked"], 0, "{after}");
    assert!(
        !stderr(&out).contains("not used") && !stderr(&out).contains("checking it"),
        "{}",
        stderr(&out)
    );
}

