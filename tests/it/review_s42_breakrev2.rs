//! Review s42-breakrev2 of "breaknote" (813e94e): the note of a break's
//! copy before its rename, the wait before a failed syncfs's retry, and the
//! writeback errors passed on to each of the guest's open files of a file
//! (`OpenInode::wb_errors`), whose lock is held across the daemon's fsync.

use crate::common::require_root;
use crate::fs::harness::{wait_until, Ext4, Mount, World};
use crate::review_s41_breaklock::{installed, open_for_writing};
use crate::review_s41_breakrev::{assert_f1_synced, two_shared_on_ext4, PATCH};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long strace holds each of the daemon's fsyncs of the test's file.
const FSYNC_DELAY: Duration = Duration::from_secs(10);

/// The mount's daemon: the child of strace, which `m` runs.
fn daemon_pid(m: &Mount) -> u32 {
    let strace = m.child.as_ref().unwrap().id();
    let found = || {
        let children = format!("/proc/{strace}/task/{strace}/children");
        let children = fs::read_to_string(children).ok()?;
        children.split_whitespace().next()?.parse().ok()
    };
    let mut pid = None;
    let up = wait_until(Duration::from_secs(30), || {
        pid = found();
        pid.is_some()
    });
    assert!(up, "no daemon under strace {strace}");
    pid.unwrap()
}

/// Whether a thread of process `pid` is in an fsync or fdatasync (74, 75 on
/// x86-64; 82, 83 on arm64), held there by strace.
fn in_fsync(pid: u32) -> bool {
    let calls: &[&str] = if cfg!(target_arch = "aarch64") {
        &["82", "83"]
    } else {
        &["74", "75"]
    };
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let s = fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
        s.split_whitespace()
            .next()
            .is_some_and(|n| calls.contains(&n))
    })
}

/// A guest with one private file `f`, mounted with the daemon under strace,
/// which holds each fsync and fdatasync of the backing `f` for
/// [`FSYNC_DELAY`] (a slow disk, or much dirty data).
fn slow_fsync_mounted(w: &World) -> Mount {
    let g = w.dir("g");
    fs::write(g.join("f"), b"hello").unwrap();
    let delay = FSYNC_DELAY.as_micros();
    let strace = [
        "strace".to_owned(),
        "-f".into(),
        "-qq".into(),
        "-o".into(),
        "/dev/null".into(),
        "-e".into(),
        "trace=fsync,fdatasync".into(),
        "-P".into(),
        g.join("f").to_str().unwrap().into(),
        format!("--inject=fsync,fdatasync:delay_enter={delay}"),
    ];
    let strace: Vec<&str> = strace.iter().map(String::as_str).collect();
    let mp = w.dir("m");
    let log = File::create(mp.with_extension("log")).unwrap();
    Mount::start_under(&strace, &w.store, &g, &mp, &[], log)
}

/// One process's fsync of `f` takes long (held 10 s by strace); another
/// process meanwhile opens `f` and reads it. On ext4 the open does not
/// wait for the fsync, and through the mount it must not either: the
/// daemon has 4 threads, and four such opens would hold them all, so the
/// whole mount (every file of the guest) would wait for one file's fsync.
/// Fails before: the open waited for the lock of the file's writeback
/// errors, held across the daemon's fsync, and returned after it.
#[test]
fn s42_an_open_does_not_wait_for_another_handles_fsync() {
    let test = "s42_an_open_does_not_wait_for_another_handles_fsync";
    if !require_root(test) || !installed(test, "strace", "Debian: strace") {
        return;
    }
    let w = World::new();
    let m = slow_fsync_mounted(&w);
    let daemon = daemon_pid(&m);
    let writer = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    writer.write_all_at(b"HELLO", 0).unwrap();
    let synced = Arc::new(AtomicBool::new(false));
    let fsync = {
        let synced = synced.clone();
        std::thread::spawn(move || {
            let r = writer.sync_all();
            synced.store(true, Ordering::SeqCst);
            r
        })
    };
    let held = wait_until(Duration::from_secs(30), || in_fsync(daemon));
    assert!(held, "the daemon's fsync never came");
    let mut read = String::new();
    File::open(m.path("f"))
        .unwrap()
        .read_to_string(&mut read)
        .unwrap();
    let waited = synced.load(Ordering::SeqCst);
    assert_eq!(read, "HELLO");
    fsync.join().unwrap().unwrap();
    assert!(
        !waited,
        "the open of f waited for another handle's fsync of it (held {FSYNC_DELAY:?})"
    );
}

/// A break's rename is not durable when its daemon is killed (SIGKILL: the
/// OOM killer, an operator), so its note dies with it. The guest's file is
/// served again by a new daemon, through which the guest writes the copy
/// now at the name and fdatasyncs it: that fsync must make the rename
/// durable too, or a power cut brings the old shared file back without the
/// synced data. Fails before: the new daemon knew of no break, synced the
/// file only, and the power cut lost the synced write.
#[test]
fn s42_a_break_of_a_killed_daemon_is_made_durable_by_the_next_ones_fsync() {
    let test = "s42_a_break_of_a_killed_daemon_is_made_durable_by_the_next_ones_fsync";
    if !require_root(test) {
        return;
    }
    let ext4 = Ext4::new(&[], &["commit=300"]);
    let (mut m, old) = two_shared_on_ext4(&ext4, &[]);
    drop(open_for_writing(&m.path("etc/f1")));
    let mut daemon = m.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    drop(m);
    let (store, a) = (ext4.root().join("store"), ext4.root().join("a"));
    let log = File::create(ext4.root().join("mb.log")).unwrap();
    let m = Mount::start_under(&[], &store, &a, &ext4.dir("mb"), &[], log);
    let f1 = open_for_writing(&m.path("etc/f1"));
    f1.write_all_at(PATCH, 0).unwrap();
    f1.sync_data().unwrap();
    assert_f1_synced(&ext4, &old[1]);
}
