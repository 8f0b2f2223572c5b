//! Review s20: a break put its directory's mtime back over a file the guest
//! created in that directory while the copy was being made.

use super::harness::*;
use crate::common::{require_root, wait_for_pause};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn mtime_ns(path: &std::path::Path) -> i128 {
    let m = fs::metadata(path).unwrap();
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// The daemon pauses 1.5 s after each break's copy (a test hook standing
/// for a large file's copy and fsync); the guest creates a file in the
/// directory meanwhile. The directory's mtime must never go back behind
/// that create, as it did (put back to its mtime from before the break).
/// A break with nothing else going on still leaves the mtime as it was.
#[test]
fn a_break_keeps_the_mtime_of_a_create_made_during_its_copy() {
    if !require_root("review_s20_a_break_keeps_the_mtime_of_a_create_made_during_its_copy") {
        return;
    }
    let w = World::new();
    let guest = w.dir("g");
    let d = guest.join("d");
    fs::create_dir(&d).unwrap();
    w.shared(b"shared content\n", &[d.join("a"), d.join("b")]);
    set_mtime(&d, 1_000_000_000);
    let old = mtime_ns(&d);
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_BREAK_PAUSE_MS=1500"];
    let m = Mount::start_under(&env, &w.store, &guest, &w.dir("m"), &[], log);

    let done = Arc::new(AtomicBool::new(false));
    let breaker = {
        let (a, done) = (m.path("d/a"), done.clone());
        std::thread::spawn(move || {
            let r = fs::set_permissions(&a, fs::Permissions::from_mode(0o640));
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    // In the pause after its copy (a fixed delay missed it on a loaded
    // machine).
    wait_for_pause(m.pid(), 1500);
    fs::File::create(m.path("d/new")).unwrap();
    let created = mtime_ns(&d);
    let during = !done.load(Ordering::SeqCst);
    breaker
        .join()
        .unwrap()
        .expect("chmod (a break) through the mount");
    assert!(during, "the create did not land during the break's copy");
    assert!(created > old, "the create did not move the mtime");
    let after = mtime_ns(&d);
    assert!(
        after >= created,
        "the break put the directory's mtime back behind the guest's create: \
         {after} < {created} (it was {old} before)"
    );
    assert_ne!(ino(&d.join("a")), ino(&d.join("b")), "a was broken");

    // Nothing else changes the directory: the break leaves no trace in its mtime.
    fs::set_permissions(m.path("d/b"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        mtime_ns(&d),
        after,
        "a lone break changed the directory's mtime"
    );
    drop(m);
}
