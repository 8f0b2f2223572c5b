//! Review round 10: `unifs unify` running again and again on a guest whose
//! processes keep writing through its mount, breaking links unify keeps
//! making.

use super::harness::Mount;
use crate::common::require_root;
use crate::tree::{assert_verify_clean, bytes, file, set_mtime, unifs, unify_summary};
use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FILES: u64 = 24;
const MTIME: u64 = 1_500_000_000;

/// Two writers through A's mount each own half of A's files: they rewrite
/// one, append to it, read it back, and now and then give it its original
/// content and mtime back, so that the next unify links it to the store
/// again and the next write must break it again; unify runs all the while.
/// Every read through the mount must show the guest's last write, B and the
/// store must never change, and store verify must stay clean.
#[test]
fn unify_again_and_again_beside_writers_through_the_mount() {
    if !require_root("unify_again_and_again_beside_writers_through_the_mount") {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        unify_beside_writers(opts);
    }
}

fn unify_beside_writers(opts: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let original = |i: u64| bytes(i, 5000 + i as usize);
    for g in [&a, &b] {
        for i in 0..FILES {
            crate::tree::file_at(g, &format!("f{i}"), &original(i), 0o644, MTIME);
        }
    }
    file(&a, "keep", b"x", 0o644);
    let first = unify_summary(&unifs(&store, &[&"unify", &"--json", &a, &b]));
    assert_eq!(first["files_linked"], FILES, "{first}");
    let mp = tmp.path().join("ma");
    fs::create_dir(&mp).unwrap();
    let m = Mount::start(&store, &a, &mp, opts);
    let stop = AtomicBool::new(false);
    let errors = Mutex::new(Vec::<String>::new());
    let (mut runs, mut relinked) = (0, 0);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (m, stop, errors) = (&m, &stop, &errors);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = (n * 2 + t) % FILES;
                    let p = m.path(&format!("f{i}"));
                    let want = if n % 3 == 2 {
                        let data = original(i);
                        let r = fs::write(&p, &data);
                        if let Err(e) = r {
                            errors.lock().unwrap().push(format!("f{i}: restore: {e}"));
                        }
                        set_mtime(&p, MTIME);
                        data
                    } else {
                        let mut data = format!("writer {t} round {n}\n").into_bytes();
                        let r = fs::write(&p, &data).and_then(|()| {
                            let mut f = fs::OpenOptions::new().append(true).open(&p)?;
                            f.write_all(b"appended\n")
                        });
                        if let Err(e) = r {
                            errors.lock().unwrap().push(format!("f{i}: write: {e}"));
                        }
                        data.extend_from_slice(b"appended\n");
                        data
                    };
                    match fs::read(&p) {
                        Ok(got) if got == want => {}
                        Ok(got) => errors.lock().unwrap().push(format!(
                            "f{i} round {n}: read {} bytes, not the {} just written",
                            got.len(),
                            want.len()
                        )),
                        Err(e) => errors.lock().unwrap().push(format!("f{i}: read: {e}")),
                    }
                    n += 1;
                }
            });
        }
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            let o = unifs(&store, &[&"unify", &"--json", &a, &b]);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
                relinked += v["files_linked"].as_u64().unwrap_or(0);
            }
            if !matches!(o.status.code(), Some(0) | Some(23)) {
                errors
                    .lock()
                    .unwrap()
                    .push(format!("unify: {}", String::from_utf8_lossy(&o.stderr)));
            }
            runs += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    drop(m);
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{opts:?}, after {runs} unify runs: {errors:#?}"
    );
    // Else the test tried nothing: unify must have linked files again.
    assert!(
        relinked > 0,
        "{opts:?}: {runs} unify runs linked nothing again"
    );
    for i in 0..FILES {
        assert_eq!(
            fs::read(b.join(format!("f{i}"))).unwrap(),
            original(i),
            "B's f{i}"
        );
    }
    assert_verify_clean(&store);
}
