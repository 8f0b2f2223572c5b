//! Session 29, scale: work that grew faster than the number of guests.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::guest::harness::run_bounded;
use std::process::Command;
use std::time::Duration;

/// How many times `unifs ARGS` opened /proc/self/mountinfo (strace).
fn mountinfo_reads(args: &[&std::ffi::OsStr], dir: &std::path::Path) -> usize {
    let log = dir.join("strace.log");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-e", "trace=open,openat", "-o"])
        .arg(&log)
        .arg(unifs_bin())
        .args(args);
    let out = run_bounded(c, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    text.lines()
        .filter(|l| l.contains("\"/proc/self/mountinfo\""))
        .count()
}

/// `guest list` read the host's mount table three times for each guest
/// (cgroup hierarchies, and two checks of its root for a stalled FUSE
/// mount), so with N guests running (each adds its root's mount) a list
/// cost N x N lines: 100 configs and 1,000 mounts took a second. It now
/// reads the table once for the whole list, whatever the number of guests.
#[test]
fn guest_list_reads_the_mount_table_a_bounded_number_of_times() {
    if !require_root("guest_list_reads_the_mount_table_a_bounded_number_of_times")
        || !require_strace("guest_list_reads_the_mount_table_a_bounded_number_of_times")
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (cfg, run, roots) = (
        t.path().join("cfg"),
        t.path().join("run"),
        t.path().join("g"),
    );
    for d in [&cfg, &run, &roots] {
        std::fs::create_dir(d).unwrap();
    }
    let count = |n: usize| {
        for i in 0..n {
            let root = roots.join(format!("g{i}"));
            std::fs::create_dir_all(&root).unwrap();
            let toml = format!("root = {:?}\ninit = [\"/bin/true\"]\n", root);
            std::fs::write(cfg.join(format!("g{i}.toml")), toml).unwrap();
        }
        let args = [
            "guest".as_ref(),
            "list".as_ref(),
            "--config-dir".as_ref(),
            cfg.as_os_str(),
            "--run-dir".as_ref(),
            run.as_os_str(),
        ];
        mountinfo_reads(&args, t.path())
    };
    let (few, many) = (count(2), count(20));
    assert!(
        many <= few && many <= 3,
        "guest list read /proc/self/mountinfo {few} times for 2 guests, {many} for 20"
    );
}

/// How many pages of catalog.db `unifs ARGS` read (pread64 calls on it,
/// strace), with the catalog's own page count.
fn catalog_reads(
    args: &[&std::ffi::OsStr],
    store: &std::path::Path,
    dir: &std::path::Path,
) -> (usize, u64) {
    let log = dir.join("preads.log");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-y", "-e", "trace=pread64", "-o"])
        .arg(&log)
        .arg(unifs_bin())
        .arg("--store")
        .arg(store)
        .args(args);
    let out = run_bounded(c, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let reads = text.lines().filter(|l| l.contains("catalog.db>")).count();
    let pages = std::fs::metadata(store.join("catalog.db")).unwrap().len() / 4096;
    (reads, pages)
}

/// Each unify run read the whole catalog for SQLite's quick_check, so
/// adding one guest to a store of many cost time in proportion to all of
/// them (a million guest links: 0.3-0.4 s warm, seconds cold, for a guest
/// of any size). A run on the very file the last unify left after its
/// check passed (same inode, size, mtime and ctime: nothing wrote it since)
/// now skips the check; a file written since is checked.
#[test]
fn unify_rerun_does_not_reread_a_catalog_nobody_wrote_since() {
    if !require_root("unify_rerun_does_not_reread_a_catalog_nobody_wrote_since")
        || !require_strace("unify_rerun_does_not_reread_a_catalog_nobody_wrote_since")
    {
        return;
    }
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let (store, guest) = (t.path().join("store"), t.path().join("g"));
    // Many links (rows) and few objects: the catalog is mostly rows the
    // re-run of an unchanged guest has no need to read.
    for d in 0..20 {
        let dir = guest.join(format!("usr/d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            let p = dir.join(format!("a-rather-long-file-name-{f:04}"));
            std::fs::write(&p, format!("content {}\n", f % 4)).unwrap();
            let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }
    let unify = [
        "unify".as_ref(),
        "--no-progress".as_ref(),
        guest.as_os_str(),
    ];
    let first = Command::new(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(unify)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let (reads, pages) = catalog_reads(&unify, &store, t.path());
    assert!(pages > 100, "catalog of only {pages} pages");
    assert!(
        reads < pages as usize / 2,
        "a re-run read {reads} pages of a catalog of {pages} that no one wrote since the last run"
    );
    // Changed since (here only its mtime; any write changes its ctime):
    // checked again, every page read.
    let f = std::fs::File::options()
        .write(true)
        .open(store.join("catalog.db"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    let (reads, pages) = catalog_reads(&unify, &store, t.path());
    assert!(
        reads >= pages as usize,
        "a run read {reads} pages of a catalog of {pages} changed since the last run: not checked"
    );
}

/// `store stats` summed each guest's links by looking each link's row up
/// through the (guest, path) index: one random page per link once the
/// catalog outgrew SQLite's cache, so a million links took 4-9 s (a
/// quarter of them 0.8 s). It now reads the links table once, in order:
/// about one read per page.
#[test]
fn store_stats_reads_each_catalog_page_about_once() {
    if !require_root("store_stats_reads_each_catalog_page_about_once")
        || !require_strace("store_stats_reads_each_catalog_page_about_once")
    {
        return;
    }
    let t = tempfile::tempdir_in("/var/tmp").unwrap();
    let (store, guest) = (t.path().join("store"), t.path().join("g"));
    crate::tree::file(&guest, "usr/a", &crate::tree::bytes(1, 100), 0o644);
    crate::tree::file(&guest, "usr/b", &crate::tree::bytes(1, 100), 0o644);
    let first = crate::tree::unify_json(&store, &[&guest]);
    assert_eq!(first["files_linked"], 1, "{first}");
    // 60 more guests of 2,500 links each: a catalog well over the 16 MiB
    // cache.
    let db = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    db.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60)
         INSERT INTO guests(id, name, path, added_run, last_run)
         SELECT 100 + i, 'x' || i, CAST('/nonexistent/x' || i AS BLOB), 1, 1 FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150000)
         INSERT INTO guest_links(guest_id, path, object_id, run_id)
         SELECT 101 + i % 60, CAST(printf('usr/share/some/deeper/dir/file-%08d', i) AS BLOB),
                (SELECT id FROM objects), 1 FROM n;",
    )
    .unwrap();
    drop(db);
    let args = ["store".as_ref(), "stats".as_ref()];
    let (reads, pages) = catalog_reads(&args, &store, t.path());
    assert!(pages > 6_000, "catalog of only {pages} pages");
    assert!(
        reads < pages as usize * 3 / 2,
        "store stats read {reads} pages of a catalog of {pages}"
    );
}
