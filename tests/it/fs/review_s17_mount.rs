//! Defects a tester found in the mount (session 17): every open directory
//! handle kept a copy of its listing in the daemon, the truncating open of a
//! running program held a FUSE worker 100 ms before its ETXTBSY, and trees
//! deeper than 4096 levels were unreachable.

use super::harness::*;
use crate::common::require_root;
use std::ffi::{CString, OsString};
use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One getdents64 call on `fd`: the names it gave (empty at the end).
fn getdents(fd: i32, size: usize) -> Vec<OsString> {
    dirents(fd, size)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// A user holding many fds of a large directory, each read a little and
/// the directory changed between opens (so that the kernel asks the daemon
/// again each time), cost the daemon a copy of the whole listing per fd
/// (here about 1.5 MB each, 150 MB in all). Each fd still lists the
/// directory as a plain one does.
#[test]
fn open_directory_handles_cost_the_daemon_no_copy_of_the_listing() {
    if !require_root("review_s17_open_directory_handles_cost_no_listing_copy") {
        return;
    }
    const FILES: usize = 5000;
    const FDS: usize = 100;
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("big")).unwrap();
    let long = "x".repeat(242);
    for i in 0..FILES {
        fs::write(g.join(format!("big/{i:05}-{long}")), b"").unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let big = m.path("big");
    let before = rss_kib(m.pid());
    let mut fds = Vec::new();
    for _ in 0..FDS {
        let d = fs::File::open(&big).unwrap();
        assert!(!getdents(d.as_raw_fd(), 4096).is_empty());
        fds.push(d);
        // A change through the mount drops the kernel's cached listing.
        fs::write(big.join("t"), b"").unwrap();
        fs::remove_file(big.join("t")).unwrap();
    }
    let grown_mib = rss_kib(m.pid()).saturating_sub(before) / 1024;
    // The rest of one fd's listing, read on after all those changes.
    let mut listed = Vec::new();
    loop {
        let names = getdents(fds[0].as_raw_fd(), 32 * 1024);
        if names.is_empty() {
            break;
        }
        listed.extend(names);
    }
    drop(fds);
    assert!(
        grown_mib < 40,
        "daemon RSS grew {grown_mib} MiB for {FDS} open directory fds"
    );
    // (The first read gave some names already; none comes twice.)
    let n = listed.len();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), n, "a name listed twice");
    let plain: Vec<OsString> = fs::read_dir(g.join("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(listed
        .iter()
        .all(|n| plain.contains(n) || n == "." || n == ".."));
    assert!(listed.len() + 20 >= plain.len(), "{} of {}", n, plain.len());
    // A fresh listing is the plain directory's.
    let mut fresh: Vec<OsString> = fs::read_dir(&big)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut plain = plain;
    fresh.sort();
    plain.sort();
    assert_eq!(fresh.len(), FILES);
    assert!(
        fresh == plain,
        "listing through the mount differs from the backing one"
    );
}

/// telldir/seekdir through the mount after the directory changed: seekdir
/// back to a position lists on from the same entry, as on ext4.
#[test]
fn seekdir_returns_to_the_entry_telldir_gave_after_changes() {
    if !require_root("review_s17_seekdir_after_changes") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    for d in [&plain, &g] {
        for i in 0..300 {
            fs::write(d.join(format!("f{i:03}")), b"").unwrap();
        }
    }
    let m = w.mount(&g, "m", &[]);
    let run = |dir: &Path| -> (Vec<u8>, Vec<u8>) {
        let p = CString::new(dir.as_os_str().as_bytes()).unwrap();
        let name = |e: *mut libc::dirent| {
            // SAFETY: an entry readdir just returned; d_name is NUL-terminated.
            unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) }
                .to_bytes()
                .to_vec()
        };
        // SAFETY: a NUL-terminated path; the stream is used while open and
        // closed once.
        unsafe {
            let d = libc::opendir(p.as_ptr());
            assert!(!d.is_null());
            for _ in 0..100 {
                assert!(!libc::readdir(d).is_null());
            }
            let pos = libc::telldir(d);
            let at = name(libc::readdir(d));
            for _ in 0..100 {
                assert!(!libc::readdir(d).is_null());
            }
            for i in 0..50 {
                fs::write(dir.join(format!("new{i}")), b"").unwrap();
            }
            libc::seekdir(d, pos);
            let again = name(libc::readdir(d));
            libc::closedir(d);
            (at, again)
        }
    };
    let (at, again) = run(&plain);
    assert_eq!(again, at, "plain directory");
    let (at, again) = run(&m.dir);
    assert_eq!(again, at, "through the mount");
}

/// The O_RDONLY|O_TRUNC open of a running program gets ETXTBSY at once, as
/// on ext4: the daemon waited up to 100 ms on a FUSE worker for a release
/// first, so a user looping such opens tied up every worker. (Timed only
/// against that floor: 200 opens took at least 20 s.)
#[test]
fn truncating_a_running_program_fails_at_once() {
    if !require_root("review_s17_truncating_a_running_program_fails_at_once") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    let m = w.mount(&g, "m", &["threads=1"]);
    for dir in [&plain, &m.dir] {
        let prog = dir.join("mysleep");
        fs::copy("/bin/sleep", &prog).unwrap();
        let mut running =
            crate::common::exec_written(|| Command::new(&prog).arg("30").spawn()).unwrap();
        // Running once its exec is done: /proc shows the new program.
        assert!(wait_until(Duration::from_secs(30), || {
            fs::read_link(format!("/proc/{}/exe", running.id()))
                .is_ok_and(|e| e.file_name() == Some("mysleep".as_ref()))
        }));
        let start = Instant::now();
        for _ in 0..200 {
            let r = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_TRUNC)
                .open(&prog);
            assert_eq!(errno(r), libc::ETXTBSY, "{}", dir.display());
        }
        let took = start.elapsed();
        running.kill().unwrap();
        running.wait().unwrap();
        assert!(
            took < Duration::from_secs(10),
            "{}: 200 ETXTBSY opens took {took:?} (a wait per open)",
            dir.display()
        );
        assert!(fs::metadata(&prog).unwrap().len() > 0);
    }
}

/// The wait that stays: the O_RDONLY|O_TRUNC open of a program that has
/// just exited (its release may still be on its way) truncates it, as on
/// ext4.
#[test]
fn truncating_a_program_right_after_it_exited_works() {
    if !require_root("review_s17_truncating_a_program_right_after_it_exited") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let m = w.mount(&g, "m", &[]);
    let prog = m.path("prog");
    for i in 0..200 {
        fs::copy("/bin/true", &prog).unwrap();
        // (An exec right after the write may itself meet the write's
        // release in flight: a known limit, docs/mount.md.)
        let st = crate::common::exec_written(|| Command::new(&prog).status());
        assert!(st.unwrap().success());
        let r = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_TRUNC)
            .open(&prog);
        assert_eq!(errno(r), 0, "run {i}: truncating open after the exit");
        assert_eq!(fs::metadata(&prog).unwrap().len(), 0);
    }
}

/// mkdirat relative to `dir`, then the new directory opened (O_PATH).
fn mkdir_in(dir: &OwnedFd, name: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name relative to an open directory.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    open_in(dir, name)
}

fn open_in(dir: &OwnedFd, name: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated name relative to an open directory.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir(p: &Path) -> OwnedFd {
    OwnedFd::from(fs::File::open(p).unwrap())
}

/// A tree deeper than 4096 levels (ext4 has no limit) is reached, listed
/// by find, grown and removed through the mount as in a plain directory:
/// the node table gave up on paths of more than 4096 components.
#[test]
fn a_tree_deeper_than_4096_levels_works_through_the_mount() {
    if !require_root("review_s17_a_tree_deeper_than_4096_levels") {
        return;
    }
    const DEPTH: usize = 4200;
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    for d in [&plain, &g] {
        let mut fd = open_dir(d);
        for _ in 0..DEPTH {
            fd = mkdir_in(&fd, c"a").unwrap();
        }
        // SAFETY: a NUL-terminated name relative to an open directory.
        let leaf = unsafe {
            libc::openat(
                fd.as_raw_fd(),
                c"leaf".as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            )
        };
        assert!(leaf >= 0);
        // SAFETY: the fd just opened, closed once.
        unsafe { libc::close(leaf) };
    }
    let mut m = w.mount(&g, "m", &[]);
    // About a minute on an idle machine before 2026-12-03 (every level is
    // a lookup, a find and an unlink through the mount, each of which
    // resolved its whole path from the backing root); two minutes were not
    // enough under a second test run. Seconds since the daemon holds deep
    // directories (review_s29_deep.rs); the watchdog stays generous.
    m.watch_for(Duration::from_secs(600));
    let find = |dir: &Path, args: &[&str]| {
        let out = Command::new("find").arg(dir).args(args).output().unwrap();
        let errors = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            String::from_utf8_lossy(&out.stdout).len(),
            out.status.success(),
            errors,
        )
    };
    for dir in [&plain, &m.dir] {
        // Walked down one level at a time, as a program without long paths does.
        let mut fd = open_dir(dir);
        for depth in 1..=DEPTH {
            fd = open_in(&fd, c"a")
                .unwrap_or_else(|e| panic!("{}: depth {depth}: {e}", dir.display()));
        }
        let made = mkdir_in(&fd, c"b");
        assert!(
            made.is_ok(),
            "{}: mkdir at depth {}: {made:?}",
            dir.display(),
            DEPTH + 1
        );
        let leaves = find(dir, &["-name", "leaf", "-printf", "x"]);
        assert_eq!(
            (leaves.0, leaves.1),
            (1, true),
            "{}: find: {}",
            dir.display(),
            leaves.2
        );
        let dirs = find(dir, &["-type", "d", "-printf", "x"]);
        assert_eq!(
            (dirs.0, dirs.1),
            (DEPTH + 2, true),
            "{}: find: {}",
            dir.display(),
            dirs.2
        );
        let rm = Command::new("rm")
            .arg("-rf")
            .arg(dir.join("a"))
            .output()
            .unwrap();
        assert!(
            rm.status.success(),
            "{}: rm -rf: {}",
            dir.display(),
            String::from_utf8_lossy(&rm.stderr)
        );
        assert_eq!(errno(fs::symlink_metadata(dir.join("a"))), libc::ENOENT);
    }
    assert_eq!(
        errno(fs::symlink_metadata(g.join("a"))),
        libc::ENOENT,
        "backing tree removed"
    );
}

#[test]
fn listing_offsets_fit_a_32_bit_programs_readdir() {
    if !require_root("review_s17_listing_offsets_fit_32_bits") {
        return;
    }
    // Streamed from the backing fd, listings gave the guest ext4's own
    // 64-bit hash offsets: a 32-bit program's readdir fails on those with
    // EOVERFLOW (ext4 itself gives such a caller 32-bit ones).
    let w = World::new();
    let g = w.dir("g");
    for i in 0..500 {
        fs::write(g.join(format!("file-{i}")), b"").unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let dir = fs::File::open(m.path("")).unwrap();
    let mut buf = vec![0u8; 8192];
    let mut offsets = Vec::new();
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        assert!(n >= 0, "{}", std::io::Error::last_os_error());
        if n == 0 {
            break;
        }
        let mut at = 0usize;
        while at < n as usize {
            let off = i64::from_ne_bytes(buf[at + 8..at + 16].try_into().unwrap());
            let len = u16::from_ne_bytes(buf[at + 16..at + 18].try_into().unwrap());
            offsets.push(off);
            at += len as usize;
        }
    }
    assert_eq!(offsets.len(), 502, "every entry and . and ..");
    assert!(
        offsets.iter().all(|&o| (0..1 << 31).contains(&o)),
        "{:x?}",
        &offsets[..5]
    );
}

#[test]
fn a_second_handle_goes_on_where_the_kernels_cached_listing_ends() {
    if !require_root("review_s17_second_handle_after_cached_listing") {
        return;
    }
    // The kernel keeps a directory's listing (FOPEN_CACHE_DIR): a second
    // opendir gets the part one handle read from that cache, then asks the
    // daemon to go on, through the second handle, at an offset the first
    // one handed out.
    let w = World::new();
    let g = w.dir("g");
    for i in 0..400 {
        fs::write(g.join(format!("file-{i}")), b"").unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    // The whole listing, cached by the kernel.
    assert_eq!(fs::read_dir(m.path("")).unwrap().count(), 400);
    // A second handle reads part of it from that cache; a change then
    // drops the cache, and the rest comes from the daemon.
    let second = fs::File::open(m.path("")).unwrap();
    let mut seen = getdents(second.as_raw_fd(), 2048);
    assert!(!seen.is_empty() && seen.len() < 100, "{}", seen.len());
    fs::write(m.path("new"), b"").unwrap();
    loop {
        let more = getdents(second.as_raw_fd(), 8192);
        if more.is_empty() {
            break;
        }
        seen.extend(more);
    }
    seen.sort();
    seen.dedup();
    // Every old entry once (the new one maybe), `.` and `..` too.
    assert!((402..=403).contains(&seen.len()), "{}", seen.len());
}

/// One getdents64 call on `fd` with a buffer of `size`: (name, d_off) of
/// each entry it gave (none at the end).
pub(super) fn dirents(fd: i32, size: usize) -> Vec<(OsString, i64)> {
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
    assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
    let mut out = Vec::new();
    let mut at = 0;
    while at < n as usize {
        let off = i64::from_ne_bytes(buf[at + 8..at + 16].try_into().unwrap());
        let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
        let name = &buf[at + 19..at + reclen];
        let len = name.iter().position(|&b| b == 0).unwrap();
        out.push((OsString::from_vec(name[..len].to_vec()), off));
        at += reclen;
    }
    out
}

#[test]
fn an_offset_one_handle_gave_works_on_another() {
    if !require_root("review_s18_offset_of_another_handle") {
        return;
    }
    // A program that seeks one fd of a directory to an offset another fd
    // of it gave (as on ext4, where offsets are the directory's own). The
    // first fd reads only the start, so the kernel's cache of the listing
    // is not complete and the seek reaches the daemon, through a handle
    // that never handed out an offset: the daemon counts its way there.
    let w = World::new();
    let g = w.dir("g");
    for i in 0..300 {
        fs::write(g.join(format!("file-{i}")), b"").unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let first = fs::File::open(m.path("")).unwrap();
    let start = dirents(first.as_raw_fd(), 2048);
    assert!(start.len() > 10 && start.len() < 100, "{}", start.len());
    let second = fs::File::open(m.path("")).unwrap();
    let k = start.len() - 3;
    // SAFETY: a valid fd; lseek takes plain integers.
    let at = unsafe { libc::lseek(second.as_raw_fd(), start[k].1, libc::SEEK_SET) };
    assert_eq!(at, start[k].1, "{}", std::io::Error::last_os_error());
    let mut rest = Vec::new();
    loop {
        let more = dirents(second.as_raw_fd(), 8192);
        if more.is_empty() {
            break;
        }
        rest.extend(more.into_iter().map(|(n, _)| n));
    }
    // What the first fd lists from there.
    let mut all = start.clone();
    loop {
        let more = dirents(first.as_raw_fd(), 8192);
        if more.is_empty() {
            break;
        }
        all.extend(more);
    }
    assert_eq!(all.len(), 302);
    let want: Vec<OsString> = all[k + 1..].iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(rest, want);
}
