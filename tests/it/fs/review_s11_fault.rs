//! Syscall fault injection into the mount daemon's link break, with
//! strace's `--inject` (man strace, "Tampering"): the Nth call of a syscall
//! fails with an errno. One FUSE thread (`-o threads=1`) keeps the count
//! to the thread that breaks the link.

use super::harness::*;
use crate::common::{in_syscall, require_strace};
use std::fs;
use std::path::Path;

/// The process strace (pid `strace`) started: the daemon.
fn strace_child(strace: u32) -> u32 {
    let children = fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).unwrap();
    children.split_whitespace().next().unwrap().parse().unwrap()
}

/// A break whose rename failed (EIO) and whose temp name could not be
/// removed either left `.unifs-break.PID.N` in the backing directory. Hidden
/// from the guest, it made the directory the guest sees empty impossible to
/// remove (`rmdir`: ENOTEMPTY) for the daemon's life: only another daemon's
/// temp names counted as stale.
#[test]
fn a_directory_holding_only_a_failed_breaks_temp_name_can_be_removed() {
    let test = "a_directory_holding_only_a_failed_breaks_temp_name_can_be_removed";
    if !require_strace(test) {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    fs::create_dir(g.join("lib")).unwrap();
    w.shared(
        &vec![7u8; 20_000],
        &[g.join("lib/data"), other.join("data")],
    );
    // glibc's rename(2) of the break is the renameat syscall; the first
    // unlinkat is the removal of the break's temp name.
    let injects = [
        "--inject=renameat:error=EIO:when=1",
        "--inject=unlinkat:error=EIO:when=1",
    ];
    let m = mount_under_strace(&w, &g, &injects, &["threads=1"]);
    let err = fs::OpenOptions::new()
        .write(true)
        .open(m.path("lib/data"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(fs::read(m.path("lib/data")).unwrap(), vec![7u8; 20_000]);
    let backing = names(&g.join("lib"));
    assert!(
        backing.len() == 2 && backing[0].starts_with(".unifs-break."),
        "the fault left the temp name behind: {backing:?}"
    );
    fs::remove_file(m.path("lib/data")).unwrap();
    assert_eq!(names(&m.path("lib")), Vec::<String>::new());
    fs::remove_dir(m.path("lib")).expect("rmdir of a directory the guest sees empty");
    assert!(!g.join("lib").exists());
    assert_eq!(fs::read(other.join("data")).unwrap(), vec![7u8; 20_000]);
}

/// A break held back 3 s (its first copy_file_range, by strace) kept every
/// change to any other file of the guest waiting for it: a `chmod` of a
/// private file took as long as another file's 1 GiB copy and fsync.
#[test]
fn a_change_to_a_private_file_does_not_wait_for_another_files_break() {
    let test = "a_change_to_a_private_file_does_not_wait_for_another_files_break";
    if !require_strace(test) {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(&vec![7u8; 1 << 20], &[g.join("big"), other.join("big")]);
    fs::write(g.join("own"), b"mine").unwrap();
    // The copy waits 8 s in strace: a chmod that waited for it ends after
    // the break does.
    let injects = ["--inject=copy_file_range:delay_enter=8000000:when=1"];
    let m = mount_under_strace(&w, &g, &injects, &[]);
    let daemon = strace_child(m.pid());
    let big = m.path("big");
    std::thread::scope(|s| {
        let breaker = s.spawn(|| fs::OpenOptions::new().write(true).open(&big).map(drop));
        // The break under way, its copy held (a fixed pause may come
        // before it on a loaded machine).
        let held = wait_until(std::time::Duration::from_secs(60), || {
            in_syscall(daemon, libc::SYS_copy_file_range)
        });
        assert!(held, "the break's copy never started");
        let t = std::time::Instant::now();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(m.path("own"), fs::Permissions::from_mode(0o600)).unwrap();
        let took = t.elapsed();
        let waited = breaker.is_finished();
        breaker.join().unwrap().unwrap();
        assert!(
            !waited,
            "chmod of a private file waited {took:?} for another file's break"
        );
    });
    assert_eq!(fs::read(other.join("big")).unwrap(), vec![7u8; 1 << 20]);
}

/// `g` mounted by a daemon whose unmount of its mount point by path, as
/// it ends, comes 0.7 s late.
fn with_late_unmount(w: &World, g: &Path) -> Mount {
    mount_under_strace(w, g, &["--inject=umount2:delay_enter=700000"], &[])
}

/// Waits for `old`'s daemon, whose mount is gone, to end: its guard must
/// not unmount a new mount at the same place, only reap it.
fn reap_unmounted(w: &World, mut old: Mount) {
    old.dir = w.dir("not-mounted");
    let mut child = old.child.take().unwrap();
    assert!(wait_until(std::time::Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    }));
}

/// A restart (`unifs umount M; unifs mount G M`) lost its new mount now and
/// then: the old daemon, ending, let go of the guest's lock (its overlay
/// dropped) before fuser unmounted the mount point by path, so a new mount
/// of the guest that took the lock in between was unmounted by the old
/// daemon. Its unmount is delayed here: the new mount now waits for the
/// lock until the old daemon is done, and stays.
#[test]
fn a_remount_at_once_is_not_unmounted_by_the_ending_daemon() {
    let test = "a_remount_at_once_is_not_unmounted_by_the_ending_daemon";
    if !require_strace(test) {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"still here").unwrap();
    let old = with_late_unmount(&w, &g);
    let mp = old.dir.clone();
    let c = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    let new = Mount::start(&w.store, &g, &mp, &[]);
    reap_unmounted(&w, old);
    assert!(is_mounted(&mp), "the new mount was unmounted");
    assert_eq!(fs::read(new.path("f")).unwrap(), b"still here");
}

/// `unifs umount` returned before the daemon had done its last unmount by
/// path, so a mount of another guest made there at once was unmounted by
/// it. umount now waits for the daemon to let go of its guest.
#[test]
fn umount_returns_once_the_daemon_is_done() {
    let test = "umount_returns_once_the_daemon_is_done";
    if !require_strace(test) {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    fs::write(other.join("f"), b"the other guest").unwrap();
    let old = with_late_unmount(&w, &g);
    let mp = old.dir.clone();
    let out = std::process::Command::new(crate::common::unifs_bin())
        .arg("umount")
        .arg(&mp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let new = Mount::start(&w.store, &other, &mp, &[]);
    reap_unmounted(&w, old);
    assert!(is_mounted(&mp), "the new mount was unmounted");
    assert_eq!(fs::read(new.path("f")).unwrap(), b"the other guest");
}

/// A read open that came while a write open broke the same shared file,
/// after the break's rename and before its table update, opened the new
/// private copy read-only (the table still said shared) and made that the
/// node's one backing file: the write open, and every write open while the
/// reader held the file, then failed with ETXTBSY (the stress test's rare
/// "Text file busy"). Held in that window here: the break's rename (its
/// first renameat) returns 3 s late.
#[test]
fn a_read_open_in_a_breaks_window_does_not_make_its_write_open_fail() {
    let test = "a_read_open_in_a_breaks_window_does_not_make_its_write_open_fail";
    if !require_strace(test) {
        return;
    }
    use std::os::unix::fs::{FileExt, MetadataExt};
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(&vec![7u8; 20_000], &[g.join("data"), other.join("data")]);
    let injects = ["--inject=renameat:delay_exit=3000000:when=1"];
    let m = mount_under_strace(&w, &g, &injects, &[]);
    let data = m.path("data");
    fs::symlink_metadata(&data).unwrap();
    let shared_ino = fs::symlink_metadata(g.join("data")).unwrap().ino();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            fs::OpenOptions::new()
                .write(true)
                .open(&data)
                .and_then(|f| f.write_all_at(b"new", 0))
        });
        // The copy is under the name once its ino shows there; the break
        // then waits in strace, its table update not yet done.
        let renamed = wait_until(std::time::Duration::from_secs(30), || {
            fs::symlink_metadata(g.join("data")).is_ok_and(|m| m.ino() != shared_ino)
        });
        assert!(renamed, "the break never renamed its copy");
        let reader = fs::File::open(&data).unwrap();
        assert!(!writer.is_finished(), "the read open missed the window");
        let r = writer.join().unwrap();
        assert!(
            r.is_ok(),
            "write open after a read open in the break's window: {r:?}"
        );
        let mut head = [0u8; 4];
        reader.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"new\x07");
    });
    let mut want = vec![7u8; 20_000];
    want[..3].copy_from_slice(b"new");
    assert_eq!(fs::read(&data).unwrap(), want);
    assert_eq!(fs::read(other.join("data")).unwrap(), vec![7u8; 20_000]);
}
