//! Defects a hostile guest found in directory listings (session 21): a
//! far seek on a fresh directory handle cost the daemon memory and CPU for
//! every entry up to the offset asked, outside the guest's cgroup limits.

use super::harness::*;
use super::review_s17_mount::dirents;
use crate::common::cpu_ticks;
use crate::common::require_root;
use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

fn seek(fd: i32, off: i64) {
    // SAFETY: a valid fd; lseek takes plain integers.
    let at = unsafe { libc::lseek(fd, off, libc::SEEK_SET) };
    assert_eq!(at, off, "lseek: {}", std::io::Error::last_os_error());
}

/// All names of a directory in its backing order, `.` and `..` included.
fn backing_order(dir: &Path) -> Vec<OsString> {
    let d = fs::File::open(dir).unwrap();
    let mut all = Vec::new();
    loop {
        let more = dirents(d.as_raw_fd(), 64 * 1024);
        if more.is_empty() {
            return all;
        }
        all.extend(more.into_iter().map(|(n, _)| n));
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A guest that opened a large directory, seeked near its end and read
/// once, over and over, made the daemon count (and keep, per handle) every
/// entry up to that offset: 8 bytes an entry per handle it held open
/// (1.6 GB for 1,000 handles of a 200,000-entry directory, for a guest
/// limited to 64 MB), and the whole count again for each new handle
/// (half a core for a guest limited to 0.05). Now a handle keeps only the
/// offsets it handed out, and the count is done once per directory (while
/// it does not change) and shared. The far seeks still land on the entry
/// they name, and telldir/seekdir on such a handle go back to the same
/// entry.
#[test]
fn review_s21_far_seeks_cost_the_daemon_what_the_guest_reads() {
    if !require_root("review_s21_far_seeks_cost_the_daemon_what_the_guest_reads") {
        return;
    }
    const FILES: usize = 60_000;
    const HELD: usize = 300;
    const LOOPS: usize = 300;
    let w = World::new();
    let g = w.dir("g");
    let big = g.join("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("f0"), b"").unwrap();
    for i in 1..FILES {
        fs::hard_link(big.join("f0"), big.join(format!("f{i}"))).unwrap();
    }
    let order = backing_order(&big);
    assert_eq!(order.len(), FILES + 2);
    let m = w.mount(&g, "m", &[]);
    let big = m.path("big");
    let far = (FILES - 10) as i64;

    // Handles held open, each seeked far and read once.
    let before = rss_kib(m.pid());
    let mut held = Vec::new();
    for _ in 0..HELD {
        let d = fs::File::open(&big).unwrap();
        seek(d.as_raw_fd(), far);
        let got = dirents(d.as_raw_fd(), 4096);
        assert_eq!(got.first().map(|e| &e.0), Some(&order[far as usize]));
        held.push(d);
    }
    let grown_mib = rss_kib(m.pid()).saturating_sub(before) / 1024;
    drop(held);
    // (The old table: 8 bytes an entry up to the offset, per handle.)
    assert!(
        grown_mib < 20,
        "daemon RSS grew {grown_mib} MiB for {HELD} directory handles seeked far"
    );

    // Open, seek far, read once, close, in a loop.
    let before = cpu_ticks(m.pid());
    for i in 0..LOOPS {
        let d = fs::File::open(&big).unwrap();
        let at = far - (i % 7) as i64;
        seek(d.as_raw_fd(), at);
        let got = dirents(d.as_raw_fd(), 4096);
        assert_eq!(got.first().map(|e| &e.0), Some(&order[at as usize]));
    }
    let spent = cpu_ticks(m.pid()) - before;
    eprintln!("daemon CPU: {spent} ticks for {LOOPS} far seeks");
    // A few ticks here; counting 60,000 entries for each seek took 300.
    assert!(
        spent < 150,
        "the daemon spent {spent} ticks of CPU on {LOOPS} far seeks"
    );

    // Seeks anywhere land on the entry they name; telldir/seekdir on a
    // handle seeked far go back to the same entry.
    for at in [1usize, 127, 128, 129, 1000, 1024, 30_000, FILES - 5] {
        let d = fs::File::open(&big).unwrap();
        seek(d.as_raw_fd(), at as i64);
        let got = dirents(d.as_raw_fd(), 2048);
        let names: Vec<&OsString> = got.iter().map(|e| &e.0).collect();
        let want: Vec<&OsString> = order[at..].iter().take(names.len()).collect();
        assert!(!names.is_empty(), "nothing at {at}");
        assert_eq!(names, want, "listing from offset {at}");
        let (mark, next) = (got[2].1, got[3].0.clone());
        let more = dirents(d.as_raw_fd(), 2048);
        seek(d.as_raw_fd(), mark);
        assert_eq!(dirents(d.as_raw_fd(), 2048)[0].0, next, "seekdir at {at}");
        drop(more);
    }
    // Past the end: nothing.
    let d = fs::File::open(&big).unwrap();
    seek(d.as_raw_fd(), (FILES + 2) as i64);
    assert!(dirents(d.as_raw_fd(), 2048).is_empty());
}

/// A handle that seeked far (to an offset it had not handed out) forgot the
/// offsets it had handed out before: `seekdir` back to a `telldir` value
/// after an entry before it was deleted landed one entry on, and that entry
/// was never listed (review s21). It now keeps earlier runs of offsets.
#[test]
fn review_s21_seekdir_back_after_a_far_seek_and_a_change_finds_its_entry() {
    if !require_root("review_s21_seekdir_back_after_a_far_seek_and_a_change_finds_its_entry") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let d = g.join("d");
    fs::create_dir(&d).unwrap();
    for i in 0..300 {
        fs::write(d.join(format!("file_{i:03}")), b"").unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let dir = fs::File::open(m.path("d")).unwrap();
    let fd = dir.as_raw_fd();
    let mut first = Vec::new();
    while first.len() < 10 {
        let got = dirents(fd, 400);
        assert!(!got.is_empty());
        first.extend(got.into_iter().filter(|(n, _)| n != "." && n != ".."));
    }
    // telldir after the 5th entry; the 6th follows it.
    let (told, after) = (first[4].1, first[5].0.clone());
    seek(fd, 250);
    assert!(!dirents(fd, 400).is_empty());
    fs::remove_file(m.path("d").join(&first[1].0)).unwrap();
    seek(fd, told);
    let got = dirents(fd, 400);
    assert_eq!(got.first().map(|e| &e.0), Some(&after), "{got:?}");
}
