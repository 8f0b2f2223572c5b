//! Review round 10, store maintenance while guests are live: manifests,
//! snapshots and verify running beside guests (and other unifs commands)
//! that keep changing what they read.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A running guest's temp files: made and removed as fast as it can, with
/// a directory of them now and then and a hardlink pair, until `stop`.
fn churn(dir: &Path, stop: &AtomicBool) {
    fs::create_dir_all(dir).unwrap();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let f = dir.join(format!("f{i}"));
        fs::write(&f, bytes(i, 200)).unwrap();
        let _ = fs::hard_link(&f, dir.join(format!("l{i}")));
        if i % 8 == 0 {
            let d = dir.join(format!("d{i}"));
            fs::create_dir(&d).unwrap();
            fs::write(d.join("inner"), b"x").unwrap();
        }
        if i >= 16 {
            let old = i - 16;
            let _ = fs::remove_file(dir.join(format!("f{old}")));
            let _ = fs::remove_file(dir.join(format!("l{old}")));
            if old % 8 == 0 {
                let d = dir.join(format!("d{old}"));
                let _ = fs::remove_file(d.join("inner"));
                let _ = fs::remove_dir(&d);
            }
        }
        i += 1;
    }
}

/// A backup is taken of running guests (docs/backup.md loops over them
/// with no word of stopping them). A running guest makes and removes temp
/// files all the time; `unifs manifest` failed outright with "No such file
/// or directory" whenever one went between its walk and its reading of it.
#[test]
fn a_manifest_of_a_guest_removing_files_meanwhile_succeeds() {
    if !require_root("a_manifest_of_a_guest_removing_files_meanwhile_succeeds") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    init_store(&store);
    let g = dir.path().join("g");
    for j in 0..400u64 {
        file(&g, &format!("usr/lib/f{j}"), &bytes(j, 2000), 0o644);
    }
    file(&g, "usr/bin/perl", &bytes(9, 3000), 0o755);
    fs::hard_link(g.join("usr/bin/perl"), g.join("usr/bin/perl5")).unwrap();
    let stop = AtomicBool::new(false);
    let out = dir.path().join("g.jsonl");
    let mut failed = Vec::new();
    std::thread::scope(|s| {
        let churner = s.spawn(|| churn(&g.join("tmp"), &stop));
        let deadline = Instant::now() + Duration::from_secs(6);
        let mut runs = 0;
        while runs < 25 && Instant::now() < deadline {
            let o = unifs(&store, &[&"manifest", &g, &"-o", &out]);
            if !o.status.success() {
                failed.push(String::from_utf8_lossy(&o.stderr).into_owned());
            } else {
                // (Checked here, asserted once the churner stopped: a
                // panic in the scope would wait for it for good.)
                let (_, entries) = unifs::backup::manifest::read_jsonl(&out).unwrap();
                let mut seen = std::collections::HashSet::new();
                for e in &entries {
                    // Every hardlink names a path the manifest holds before it.
                    if let Some(l) = e.link_path().filter(|l| !seen.contains(l)) {
                        failed.push(format!("{:?} links {l:?}, not listed before", e.path));
                    }
                    if e.kind == "file" && e.link_path().is_none() && e.blake3.is_none() {
                        failed.push(format!("{:?} has no hash", e.path));
                    }
                    seen.insert(e.rel_path());
                }
                if !seen.contains(Path::new("usr/lib/f399")) {
                    failed.push("usr/lib/f399 is missing".into());
                }
            }
            runs += 1;
        }
        stop.store(true, Ordering::Relaxed);
        churner.join().unwrap();
    });
    assert!(
        failed.is_empty(),
        "{} manifest(s) failed: {failed:#?}",
        failed.len()
    );
}

/// docs/backup.md: `store snapshot` is "safe while unify runs". It copied
/// 256 pages at a time with a pause between, and SQLite starts an online
/// backup over whenever another connection commits in between: beside a
/// writer committing more often than the whole copy takes (a big catalog,
/// a long unify) the snapshot never finished until the writer stopped.
#[test]
fn a_snapshot_of_a_big_catalog_finishes_while_a_writer_commits() {
    if !require_root("a_snapshot_of_a_big_catalog_finishes_while_a_writer_commits") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let o = unifs(&store, &[&"store", &"init"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let db = store.join("catalog.db");
    // About 8 MB of hash cache rows, as a store of some 50,000 files has.
    let mut conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let t = conn.transaction().unwrap();
    for i in 0..50_000i64 {
        let h = blake3::hash(&i.to_le_bytes()).to_hex().to_string();
        t.execute(
            "INSERT INTO hash_cache VALUES (1, ?1, 4096, ?1, ?1, ?2, ?2)",
            rusqlite::params![i, h],
        )
        .unwrap();
    }
    t.commit().unwrap();
    let stop = AtomicBool::new(false);
    let dest = dir.path().join("snap.db");
    let took = std::thread::scope(|s| {
        let stop = &stop;
        // The writer: one small transaction every 2 ms, for at most 8 s.
        let writer = s.spawn(move || {
            let end = Instant::now() + Duration::from_secs(8);
            let mut i = 1_000_000i64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                conn.execute(
                    "INSERT OR REPLACE INTO hash_cache VALUES (2, ?1, 1, 1, 1, 'x', 'x')",
                    [i % 50],
                )
                .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        let mut child = std::process::Command::new(crate::common::unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["store", "snapshot"])
            .arg(&dest)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            // A snapshot that never finishes beside the writer, not a
            // slow one on a loaded machine.
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let status = status.unwrap_or_else(|| {
            panic!("the snapshot had not finished after {took:?} beside the writer")
        });
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "snapshot failed: {err}");
        took
    });
    let snap = rusqlite::Connection::open(&dest).unwrap();
    let check: String = snap
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = snap
        .query_row("SELECT count(*) FROM hash_cache WHERE dev = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 50_000, "snapshot after {took:?}");
}

/// `store verify` is a reader ("check the store any time"), and `store gc`
/// removes the objects guests stopped linking (a guest's mount breaks its
/// links as it writes). Verify beside gc reported every object gc removed
/// after verify listed it as BAD ("No such file or directory") and failed:
/// a clean store looked damaged.
#[test]
fn store_verify_beside_gc_reports_no_object_gc_removed() {
    if !require_root("store_verify_beside_gc_reports_no_object_gc_removed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Objects that stay, to give verify something to read meanwhile.
    // (96 MiB: verify reads for about 0.1 s, gc takes about half that.)
    let (k1, k2) = (dir.path().join("k1"), dir.path().join("k2"));
    for j in 0..12u64 {
        let f = file(&k1, &format!("big{j}"), &bytes(j, 8 << 20), 0o644);
        fs::create_dir_all(&k2).unwrap();
        assert!(std::process::Command::new("cp")
            .arg("-p")
            .arg(&f)
            .arg(k2.join(format!("big{j}")))
            .status()
            .unwrap()
            .success());
    }
    unify_json(&store, &[&k1, &k2]);
    let deadline = Instant::now() + Duration::from_secs(7);
    let mut bad = Vec::new();
    let mut rounds = 0;
    while rounds < 12 && Instant::now() < deadline && bad.is_empty() {
        // Objects no guest links any more: a guest unified, then removed.
        let g = dir.path().join(format!("gone{rounds}"));
        for j in 0..150u64 {
            let data = bytes(1000 * (rounds + 1) + j, 3000);
            file(&g, &format!("a/f{j}"), &data, 0o644);
            file(&g, &format!("b/f{j}"), &data, 0o644);
        }
        unify_json(&store, &[&g]);
        fs::remove_dir_all(&g).unwrap();
        let verify = std::process::Command::new(crate::common::unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["store", "verify"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // gc's removal at another moment of verify's reading each round.
        std::thread::sleep(Duration::from_millis(rounds % 6 * 4));
        let gc = unifs(&store, &[&"store", &"gc"]);
        assert!(
            gc.status.success(),
            "{}",
            String::from_utf8_lossy(&gc.stderr)
        );
        let v = verify.wait_with_output().unwrap();
        if !v.status.success() {
            bad.push(format!(
                "{}{}",
                String::from_utf8_lossy(&v.stdout),
                String::from_utf8_lossy(&v.stderr)
            ));
        }
        rounds += 1;
    }
    assert!(bad.is_empty(), "verify beside gc: {bad:#?}");
    assert_verify_clean(&store);
}

/// `store stats` reads the object files for its figures, and failed
/// outright ("…/objects/…: No such file or directory") when a store gc
/// beside it removed an object it had listed.
#[test]
fn store_stats_beside_gc_does_not_fail() {
    if !require_root("store_stats_beside_gc_does_not_fail") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let deadline = Instant::now() + Duration::from_secs(7);
    let mut failed = Vec::new();
    let mut rounds = 0;
    while rounds < 3 && Instant::now() < deadline && failed.is_empty() {
        // Objects no guest links any more: a guest unified, then removed.
        let g = dir.path().join(format!("gone{rounds}"));
        for j in 0..1000u64 {
            let data = bytes(1000 * (rounds + 1) + j, 100);
            file(&g, &format!("a/f{j}"), &data, 0o644);
            file(&g, &format!("b/f{j}"), &data, 0o644);
        }
        unify_json(&store, &[&g]);
        fs::remove_dir_all(&g).unwrap();
        let mut gc = std::process::Command::new(crate::common::unifs_bin())
            .arg("--store")
            .arg(&store)
            .args(["store", "gc"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while gc.try_wait().unwrap().is_none() {
            let o = unifs(&store, &[&"store", &"stats"]);
            if !o.status.success() {
                failed.push(String::from_utf8_lossy(&o.stderr).into_owned());
            }
        }
        assert!(gc.wait().unwrap().success());
        rounds += 1;
    }
    assert!(failed.is_empty(), "stats beside gc: {failed:#?}");
}
