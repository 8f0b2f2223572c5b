//! Session 33's review of the window between a break's check that its
//! name still is the file it copied and its rename of the copy over it.

use crate::common::{require_root, wait_for_pause};
use crate::fs::harness::{wait_until, Mount, World};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A write open (not O_TRUNC) of shared `x` breaks it, with O_TMPFILE or
/// as on a filesystem without it (`named_temp`), and pauses between its
/// check and its rename (`UNIFS_TEST_BREAK_RENAME_PAUSE_MS`); `change`, a
/// guest's change of `x` through the mount, runs meanwhile. The open
/// succeeds or fails with `lost`, the errno of an open whose file lost its
/// name meanwhile. Returns the world and the backing directory, to check
/// what x is now.
fn race_a_break(change: impl FnOnce(&Mount), lost: i32, named_temp: bool) -> (World, PathBuf) {
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let old = vec![b'x'; 20_000];
    w.shared(&old, &[g.join("x"), other.join("x")]);
    fs::write(g.join("a"), b"mine").unwrap();
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let mut env = vec!["env", "UNIFS_TEST_BREAK_RENAME_PAUSE_MS=1000"];
    if named_temp {
        env.push("UNIFS_TEST_BREAK_NO_TMPFILE=1");
    }
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &[], log);
    let x = m.path("x");
    fs::metadata(&x).unwrap();
    let writer = std::thread::spawn(move || fs::OpenOptions::new().write(true).open(&x));
    // The copy's temp name shows in the backing directory before the
    // check (either way), and stays there through the pause.
    let started = wait_until(Duration::from_secs(20), || has_temp(&g));
    assert!(started, "no break started");
    wait_for_pause(m.pid(), 1000);
    change(&m);
    let r = writer.join().unwrap();
    assert!(
        r.is_ok() || r.as_ref().err().and_then(|e| e.raw_os_error()) == Some(lost),
        "write open of x: {r:?}"
    );
    assert_eq!(fs::read(other.join("x")).unwrap(), old);
    drop(r);
    drop(m);
    (w, g)
}

fn has_temp(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().any(|e| {
        let n = e.unwrap().file_name();
        n.to_string_lossy().starts_with(".unifs-break.")
    })
}

fn temp_kind(named_temp: bool) -> &'static str {
    match named_temp {
        true => "named temp file",
        false => "O_TMPFILE",
    }
}

/// Before: the guest's `mv a x` landed between the break's check and its
/// rename (named temp file path only), and the break's copy of the old x
/// replaced the file the guest had just put there: x showed its old
/// content, and a's was gone.
#[test]
fn a_rename_over_a_file_being_broken_is_not_undone_by_the_break() {
    if !require_root("a_rename_over_a_file_being_broken_is_not_undone_by_the_break") {
        return;
    }
    // ESTALE: as docs/mount.md allows for an open racing a rename.
    let mv = |m: &Mount| fs::rename(m.path("a"), m.path("x")).unwrap();
    for named_temp in [true, false] {
        let (_w, g) = race_a_break(mv, libc::ESTALE, named_temp);
        let (now, kind) = (fs::read(g.join("x")).unwrap(), temp_kind(named_temp));
        let head = String::from_utf8_lossy(&now[..now.len().min(8)]).into_owned();
        let n = now.len();
        assert!(
            now == b"mine",
            "x after mv a x ({kind}): {n} bytes, {head:?}…"
        );
        assert!(!g.join("a").exists());
        assert!(!has_temp(&g), "a temp file left behind ({kind})");
    }
}

/// Before: the guest's `rm x` in that window came back undone: x was there
/// again, with its old content.
#[test]
fn an_unlink_of_a_file_being_broken_is_not_undone_by_the_break() {
    if !require_root("an_unlink_of_a_file_being_broken_is_not_undone_by_the_break") {
        return;
    }
    let rm = |m: &Mount| fs::remove_file(m.path("x")).unwrap();
    for named_temp in [true, false] {
        let (_w, g) = race_a_break(rm, libc::ENOENT, named_temp);
        let kind = temp_kind(named_temp);
        assert!(!g.join("x").exists(), "x came back after rm x ({kind})");
        assert!(!has_temp(&g), "a temp file left behind ({kind})");
    }
}
