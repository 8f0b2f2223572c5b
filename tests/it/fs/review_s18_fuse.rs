//! Defects a tester found in the FUSE adapter (session 18): pre-1970 times
//! with a fraction were stored wrong; an fd a break split off its path
//! showed one link; fcntl(F_SETFL) could not clear O_APPEND or O_DIRECT
//! under passthrough; a setxattr the filesystem refuses broke the link; a
//! reopen of a split-off fd through /proc/self/fd failed with ESTALE.

use super::harness::*;
use crate::common::require_root;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// utimensat(2) of `path` to `(sec, nsec)` for both times.
pub(crate) fn utimens(path: &Path, sec: i64, nsec: i64) {
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    // SAFETY: a valid C string and two valid timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, cstr(path).as_ptr(), [t, t].as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat {path:?} {sec}.{nsec}");
}

/// The stored (atime, mtime) of `path`, each as (sec, nsec).
pub(crate) fn times_of(path: &Path) -> [(i64, i64); 2] {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a stat buffer.
    assert_eq!(unsafe { libc::stat(cstr(path).as_ptr(), &mut st) }, 0);
    [
        (st.st_atime, st.st_atime_nsec),
        (st.st_mtime, st.st_mtime_nsec),
    ]
}

/// `touch -d '1950-01-01 00:00:00.25'` stored 1949-12-31 23:59:59.75: fuser
/// turns a negative time into one the fraction moved the wrong way.
#[test]
fn pre_1970_times_with_a_fraction_are_stored_as_on_ext4() {
    if !require_root("review_s18_pre_1970_times") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    fs::write(plain.join("f"), b"x").unwrap();
    fs::write(g.join("f"), b"x").unwrap();
    let m = w.mount(&g, "m", &[]);
    let times = [
        (-631_152_000, 250_000_000), // 1950-01-01 00:00:00.25
        (-631_152_000, 0),
        (0, 0),
        (-1, 0),
        (-1, 1),
        (-1, 999_999_999),
        (-2, 500_000_000),
        (-123_456_789, 123_456_789),
        (1, 500_000_000),
    ];
    for (sec, nsec) in times {
        utimens(&plain.join("f"), sec, nsec);
        let want = times_of(&plain.join("f"));
        assert_eq!(want, [(sec, nsec); 2], "the plain directory's file");
        utimens(&m.path("f"), sec, nsec);
        let shown = times_of(&m.path("f"));
        assert_eq!(shown, want, "through the mount, set to {sec}.{nsec:09}");
        let backing = times_of(&g.join("f"));
        assert_eq!(backing, want, "the backing file, set to {sec}.{nsec:09}");
    }
}

/// A reader's fd a writer's open split off its path (the writer got a
/// private copy, the reader keeps the store's file): its fstat showed the
/// one link cached before the split, for an hour, unless it read first.
#[test]
fn an_fd_split_off_its_path_shows_no_links_at_once() {
    if !require_root("review_s18_split_fd_shows_no_links") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(b"shared", &[g.join("f"), other.join("f")]);
    let m = w.mount(&g, "m", &[]);
    let reader = File::open(m.path("f")).unwrap();
    assert_eq!(reader.metadata().unwrap().nlink(), 1, "before the split");
    let writer = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    assert_eq!(reader.metadata().unwrap().nlink(), 0, "the split-off fd");
    assert_eq!(writer.metadata().unwrap().nlink(), 1, "the path's new file");
    assert_eq!(fs::metadata(m.path("f")).unwrap().nlink(), 1);
}

fn cvt(r: isize) -> usize {
    assert!(r >= 0, "{}", std::io::Error::last_os_error());
    r as usize
}

/// Opens `path` O_WRONLY|O_CREAT|O_APPEND, writes 0-9, clears O_APPEND
/// with F_SETFL, writes "AB" at 0 and pwrites "CD" at 4, and
/// pwritev2(RWF_NOAPPEND) "XY" at 8 on a second O_APPEND fd: the content.
fn append_then_clear(path: &Path) -> Vec<u8> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .unwrap();
    let fd = f.as_raw_fd();
    // SAFETY (all calls below): `fd` is open; buffers valid for their lengths.
    unsafe {
        cvt(libc::write(fd, b"0123456789".as_ptr().cast(), 10));
        let fl = libc::fcntl(fd, libc::F_GETFL);
        assert_eq!(libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_APPEND), 0);
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_SET), 0);
        cvt(libc::write(fd, b"AB".as_ptr().cast(), 2));
        cvt(libc::pwrite(fd, b"CD".as_ptr().cast(), 2, 4));
    }
    drop(f);
    let f = OpenOptions::new().append(true).open(path).unwrap();
    let iov = libc::iovec {
        iov_base: b"XY".as_ptr() as *mut libc::c_void,
        iov_len: 2,
    };
    // SAFETY: an open fd and one valid iovec.
    cvt(unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, 8, libc::RWF_NOAPPEND) });
    // Another open of the file meanwhile reads it (and does not fail).
    let seen = fs::read(path).unwrap();
    drop(f);
    assert_eq!(seen, fs::read(path).unwrap());
    seen
}

/// Under passthrough the kernel's backing file kept the open's O_APPEND:
/// clearing it had no effect (0123456789ABCD), nor had RWF_NOAPPEND.
#[test]
fn clearing_o_append_with_f_setfl_works_as_on_ext4() {
    if !require_root("review_s18_clear_o_append") {
        return;
    }
    let w = World::new();
    let (plain, g, h) = (w.dir("plain"), w.dir("g"), w.dir("h"));
    let want = append_then_clear(&plain.join("f"));
    assert_eq!(want, b"AB23CD67XY");
    let m = w.mount(&g, "m", &[]);
    assert_eq!(append_then_clear(&m.path("f")), want, "passthrough");
    let n = w.mount(&h, "n", &["nopassthrough"]);
    assert_eq!(append_then_clear(&n.path("f")), want, "nopassthrough");
}

/// `dd oflag=direct` clears O_DIRECT before its last, partial block: under
/// passthrough the backing file kept it, and that write failed (EINVAL).
#[test]
fn dd_with_oflag_direct_writes_a_partial_last_block() {
    if !require_root("review_s18_dd_oflag_direct") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    let src = plain.join("odd.src");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&src, &data).unwrap();
    let m = w.mount(&g, "m", &[]);
    for out in [plain.join("out"), m.path("out")] {
        let r = Command::new("dd")
            .arg(format!("if={}", src.display()))
            .arg(format!("of={}", out.display()))
            .args(["bs=4096", "oflag=direct", "status=none"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "dd to {out:?}: {err}");
        assert_eq!(fs::read(&out).unwrap(), data, "{out:?}");
    }
}

/// setxattr/removexattr of a name the backing filesystem has no handler
/// for (EOPNOTSUPP) on a shared file gave the guest a private copy first.
#[test]
fn an_xattr_name_the_filesystem_refuses_leaves_a_shared_file_shared() {
    if !require_root("review_s18_refused_xattr_keeps_link") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(b"shared", &[g.join("f"), other.join("f")]);
    let links = fs::metadata(g.join("f")).unwrap().nlink();
    assert!(links > 1);
    let m = w.mount(&g, "m", &[]);
    let path = cstr(&m.path("f"));
    for attr in ["system.foo", "foo.bar"] {
        let a = CString::new(attr).unwrap();
        // SAFETY: valid C strings and a valid buffer.
        let r = unsafe { libc::setxattr(path.as_ptr(), a.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
        let e = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((r, e), (-1, Some(libc::EOPNOTSUPP)), "setxattr {attr}");
        // SAFETY: valid C strings.
        let r = unsafe { libc::removexattr(path.as_ptr(), a.as_ptr()) };
        let e = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((r, e), (-1, Some(libc::EOPNOTSUPP)), "removexattr {attr}");
        assert_eq!(fs::metadata(g.join("f")).unwrap().nlink(), links, "{attr}");
    }
    // A name it takes still breaks the link first.
    let a = CString::new("user.x").unwrap();
    // SAFETY: valid C strings and a valid buffer.
    let r = unsafe { libc::setxattr(path.as_ptr(), a.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, 0);
    assert_eq!(fs::metadata(g.join("f")).unwrap().nlink(), 1);
    assert_eq!(fs::metadata(other.join("f")).unwrap().nlink(), links - 1);
}

/// `exec 3< f; echo more >> f; head -c 16 /dev/fd/3` said "Stale file
/// handle": a reopen of an fd a break split off its path found no path.
/// ext4 reopens the inode; here the old, shared file serves a read-only
/// reopen, and a write reopen is refused (it is the store's).
#[test]
fn an_fd_split_off_its_path_reopens_through_proc_for_reading() {
    if !require_root("review_s18_split_fd_reopens") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let obj = w.shared(b"shared content!!", &[g.join("f"), other.join("f")]);
    let m = w.mount(&g, "m", &[]);
    let reader = File::open(m.path("f")).unwrap();
    let mut appender = OpenOptions::new().append(true).open(m.path("f")).unwrap();
    std::io::Write::write_all(&mut appender, b"more").unwrap();
    let fd_path = format!("/proc/self/fd/{}", reader.as_raw_fd());
    assert_eq!(fs::read(&fd_path).unwrap(), b"shared content!!");
    assert_eq!(
        fs::read(format!("/dev/fd/{}", reader.as_raw_fd())).unwrap(),
        b"shared content!!"
    );
    let write = OpenOptions::new().write(true).open(&fd_path);
    assert_eq!(errno(write), libc::ESTALE);
    let trunc = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_TRUNC)
        .open(&fd_path);
    assert_eq!(errno(trunc), libc::ESTALE);
    assert_eq!(fs::read(&obj).unwrap(), b"shared content!!");
    assert_eq!(fs::read(other.join("f")).unwrap(), b"shared content!!");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"shared content!!more");
    // The tester's own steps.
    w.shared(b"shared content!!", &[g.join("f2"), other.join("f2")]);
    let out = Command::new("bash")
        .arg("-c")
        .arg("exec 3< \"$1\"; echo more >> \"$1\"; head -c 16 /dev/fd/3")
        .arg("-")
        .arg(m.path("f2"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(out.stdout, b"shared content!!");
}

/// Opens of one file with and without O_APPEND, in both orders, next to a
/// shared mmap (the kernel takes one I/O mode per FUSE inode: a mix it
/// refuses would fail the open with EIO): as on ext4.
fn mixed_opens(dir: &Path) -> Vec<Vec<u8>> {
    let f = dir.join("mixed");
    fs::write(&f, b"0123456789").unwrap();
    let mut seen = Vec::new();
    let plain = OpenOptions::new().read(true).write(true).open(&f).unwrap();
    let mut append = OpenOptions::new().append(true).open(&f).unwrap();
    std::io::Write::write_all(&mut append, b"AB").unwrap();
    seen.push(fs::read(&f).unwrap());
    drop((plain, append));
    let mut append = OpenOptions::new().append(true).open(&f).unwrap();
    let plain = OpenOptions::new().read(true).write(true).open(&f).unwrap();
    let len = 12;
    // SAFETY: a shared mapping of `len` bytes of an open file, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            plain.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
    // SAFETY: `map` is `len` bytes, mapped read-write.
    unsafe { *(map as *mut u8) = b'Z' };
    std::io::Write::write_all(&mut append, b"CD").unwrap();
    // SAFETY: as above.
    seen.push(unsafe { std::slice::from_raw_parts(map as *const u8, len) }.to_vec());
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(map, len) };
    drop((plain, append));
    seen.push(fs::read(&f).unwrap());
    seen
}

#[test]
fn opens_with_and_without_o_append_mix_as_on_ext4() {
    if !require_root("review_s18_mixed_append_opens") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    let want = mixed_opens(&plain);
    assert_eq!(want[2], b"Z123456789ABCD");
    let m = w.mount(&g, "m", &[]);
    assert_eq!(mixed_opens(&m.path("")), want);
}
