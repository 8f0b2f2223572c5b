//! Session 33's review of a rare ETXTBSY of a write open of a shared file
//! (the stress test's `write_trunc sub/r5: Text file busy`).

use crate::common::{require_root, wait_for_pause};
use crate::fs::harness::{Mount, World};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Opens `path` for writing and writes `tag` at its start, in a thread of
/// its own (its open's break runs while the test acts).
pub(crate) fn write_in_thread(
    path: &Path,
    tag: &'static [u8],
) -> std::thread::JoinHandle<std::io::Result<()>> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.write_all_at(tag, 0))
    })
}

/// A break for a write open of `x` (node N) copies slowly; a rename through
/// the mount puts `a` (node M, another store object, which a reader holds
/// open) at `x` meanwhile, so the break copies and replaces M's file, and
/// leaves M bound to its store object (it broke for N). A write open of M
/// that had seen M's file still shared waited for that break, found the
/// file private after it, and went on with M bound to the object: its one
/// backing file, the reader's read-only object, could not take a write,
/// and the open failed with ETXTBSY. ext4 opens the file. The pauses
/// (`UNIFS_TEST_BREAK_PAUSE_MS`, after each copy) line the three up.
#[test]
fn a_write_open_waiting_for_a_break_a_rename_misled_does_not_fail_etxtbsy() {
    if !require_root("a_write_open_waiting_for_a_break_a_rename_misled_does_not_fail_etxtbsy") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let (old_x, old_a) = (vec![b'x'; 20_000], vec![b'a'; 20_000]);
    w.shared(&old_x, &[g.join("x"), other.join("x")]);
    w.shared(&old_a, &[g.join("a"), other.join("a")]);
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_BREAK_PAUSE_MS=700"];
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &[], log);
    let (x, a) = (m.path("x"), m.path("a"));
    let reader = fs::File::open(&a).unwrap();

    let write = |tag: &'static [u8]| write_in_thread(&x, tag);
    // N's break: copying, then paused before its rename.
    let first = write(b"one");
    wait_for_pause(m.pid(), 700);
    fs::rename(&a, &x).unwrap();
    // M's write open: sees M's file shared, waits for N's break.
    let second = write(b"two");
    let (first, second) = (first.join().unwrap(), second.join().unwrap());
    let errno = |r: &std::io::Result<()>| r.as_ref().err().and_then(|e| e.raw_os_error());
    assert_eq!(
        errno(&second),
        None,
        "write open of x: {second:?} (ext4 opens it)"
    );
    // The first open's node lost its name, and the kernel's one retry may
    // meet the one a reader holds being split off: ESTALE twice, as
    // docs/mount.md allows for an open racing a rename. Never ETXTBSY.
    assert!(
        matches!(errno(&first), None | Some(libc::ESTALE)),
        "write open of x: {first:?} (ext4 opens it)"
    );
    // x is a's old content with the last write over it (the first open's
    // came first, or failed).
    let now = fs::read(&x).unwrap();
    assert_eq!(now.len(), old_a.len());
    assert!(now.starts_with(b"two") || now.starts_with(b"one") && first.is_ok());
    assert_eq!(&now[3..], &old_a[3..]);
    let mut held = vec![0u8; old_a.len()];
    reader.read_exact_at(&mut held, 0).unwrap();
    assert_eq!(held, old_a, "the reader keeps the file it opened");
    assert_eq!(fs::read(other.join("x")).unwrap(), old_x);
    assert_eq!(fs::read(other.join("a")).unwrap(), old_a);
    drop(reader);
    drop(m);
}

/// A lookup of `x` (here a rename's target: the kernel asks again for one)
/// stat'ed x's store object; a chmod's break then renamed x's private copy
/// over it and bound the node to the copy; the lookup, reading x's marker
/// after that (none: the copy's), took the object's inode for a private
/// file and bound the node back to it. A write open of x then found the
/// name private, the node's binding private too, and the object's
/// read-only file, which a reader held, as the node's one backing file:
/// ETXTBSY. `UNIFS_TEST_LOOKUP_PAUSE_MS` holds the lookup between its stat
/// and its read of the marker.
#[test]
fn a_lookup_that_saw_a_file_before_its_break_does_not_leave_write_opens_etxtbsy() {
    let test = "a_lookup_that_saw_a_file_before_its_break_does_not_leave_write_opens_etxtbsy";
    if !require_root(test) {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let old = vec![b'x'; 20_000];
    w.shared(&old, &[g.join("x"), other.join("x")]);
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_LOOKUP_PAUSE_MS=600"];
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &[], log);
    let (x, t) = (m.path("x"), m.path("t"));
    fs::write(&t, b"t").unwrap();
    let reader = fs::File::open(&x).unwrap();
    let lookup = {
        let (t, x) = (t.clone(), x.clone());
        std::thread::spawn(move || rename_noreplace(&t, &x))
    };
    // The lookup between its stat and its read of the marker.
    wait_for_pause(m.pid(), 600);
    fs::set_permissions(&x, fs::Permissions::from_mode(0o640)).unwrap();
    let r = lookup.join().unwrap();
    assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EEXIST)));
    let r = fs::OpenOptions::new()
        .write(true)
        .open(&x)
        .and_then(|f| f.write_all_at(b"new", 0));
    assert!(r.is_ok(), "write open of x: {r:?} (ext4 opens it)");
    let mut new = old.clone();
    new[..3].copy_from_slice(b"new");
    assert_eq!(fs::read(&x).unwrap(), new);
    let mut held = vec![0u8; old.len()];
    reader.read_exact_at(&mut held, 0).unwrap();
    assert_eq!(held, old, "the reader keeps the file it opened");
    assert_eq!(fs::read(other.join("x")).unwrap(), old);
    drop(reader);
    drop(m);
}

/// The break of the first test, misled by a RENAME_EXCHANGE instead: the
/// write open follows its file to `a` and breaks it there, and the break
/// it made at `x`, of the file the exchange put there, left x's node bound
/// to that store object. Nothing looked x up again, so a hardlink the
/// guest then made of x joined the copy under another node: x and its new
/// name showed two numbers (invariant 5: the guest's own hardlinks are one
/// file), and a write through one was not seen through the other.
#[test]
fn a_break_a_rename_exchange_misled_leaves_the_other_file_one_with_its_hardlinks() {
    let test = "a_break_a_rename_exchange_misled_leaves_the_other_file_one_with_its_hardlinks";
    if !require_root(test) {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let (old_x, old_a) = (vec![b'x'; 20_000], vec![b'a'; 20_000]);
    w.shared(&old_x, &[g.join("x"), other.join("x")]);
    w.shared(&old_a, &[g.join("a"), other.join("a")]);
    let log = fs::File::create(w.tmp.path().join("m.log")).unwrap();
    let env = ["env", "UNIFS_TEST_BREAK_PAUSE_MS=700"];
    let m = Mount::start_under(&env, &w.store, &g, &w.dir("m"), &[], log);
    let (x, a, h) = (m.path("x"), m.path("a"), m.path("h"));
    // Known to the kernel, so that the open's break starts at once.
    fs::metadata(&x).unwrap();
    fs::metadata(&a).unwrap();
    let writer = write_in_thread(&x, b"one");
    wait_for_pause(m.pid(), 700);
    exchange(&a, &x).unwrap();
    let r = writer.join().unwrap();
    assert!(r.is_ok(), "write open: {r:?}");
    let mut new_a = old_x.clone();
    new_a[..3].copy_from_slice(b"one");
    assert_eq!(
        fs::read(&a).unwrap(),
        new_a,
        "the open followed its file to a"
    );
    // (No open of x before the link: a read open binds x's node to the
    // file it opens, which hid the bug.)
    fs::hard_link(&x, &h).unwrap();
    let (mx, mh) = (fs::metadata(&x).unwrap(), fs::metadata(&h).unwrap());
    assert_eq!(
        (mx.ino(), mx.nlink()),
        (mh.ino(), mh.nlink()),
        "x and its hardlink h"
    );
    fs::OpenOptions::new()
        .write(true)
        .open(&h)
        .and_then(|f| f.write_all_at(b"two", 0))
        .unwrap();
    let mut new_x = old_a.clone();
    new_x[..3].copy_from_slice(b"two");
    assert_eq!(fs::read(&x).unwrap(), new_x);
    assert_eq!(fs::read(other.join("x")).unwrap(), old_x);
    assert_eq!(fs::read(other.join("a")).unwrap(), old_a);
    drop(m);
}

fn exchange(from: &Path, to: &Path) -> std::io::Result<()> {
    rename2(from, to, libc::RENAME_EXCHANGE)
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    rename2(from, to, libc::RENAME_NOREPLACE)
}

fn rename2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
    let (from, to) = (c(from), c(to));
    // SAFETY: two NUL-terminated paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
