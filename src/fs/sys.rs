//! The extra syscalls the overlay needs beyond `crate::sys`: full stats, node
//! creation, `*at` metadata calls that never follow a symlink, xattrs on a
//! name inside a directory fd, and file I/O helpers. Every `unsafe` block of
//! src/fs lives here, each with its invariant.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{check, cstr};

/// `flock(fd, LOCK_EX or LOCK_SH, LOCK_NB)`: false when another open file
/// holds a conflicting lock.
pub fn try_flock(fd: BorrowedFd, exclusive: bool) -> io::Result<bool> {
    let how = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: plain integer arguments.
    match check(unsafe { libc::flock(fd.as_raw_fd(), how | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `flock(fd, LOCK_UN)`; nothing to report if it was not locked.
pub fn unlock(fd: BorrowedFd) {
    // SAFETY: plain integer arguments.
    unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) };
}

fn check_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

pub use crate::sys::stat_at_raw as stat_at;

/// `fstat`, the whole `struct stat`.
pub fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid plain-data value for the kernel to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable buffer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// The file status flags of an open fd (`F_GETFL`).
pub fn fcntl_getfl(fd: BorrowedFd) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no argument and touches no memory.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// Sets the file status flags of an open fd (`F_SETFL`: O_APPEND,
/// O_NOATIME, O_NONBLOCK, …).
pub fn fcntl_setfl(fd: BorrowedFd, flags: i32) -> io::Result<()> {
    // SAFETY: F_SETFL takes an int and touches no memory.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) }).map(drop)
}

/// An unnamed regular file in `dir` (`O_TMPFILE`), linkable later.
pub fn open_tmpfile(dir: BorrowedFd, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: "." is NUL-terminated; a non-negative result is a new fd.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mknod_at(dir: BorrowedFd, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })?;
    Ok(())
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd, name: &OsStr) -> io::Result<()> {
    let target = cstr(target)?;
    let name = cstr(name)?;
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

pub fn readlink_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Vec<u8>> {
    let name = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `name` is NUL-terminated; `buf` is writable for its length.
    let n = check_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn rmdir_at(dir: BorrowedFd, name: &OsStr) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })?;
    Ok(())
}

pub use crate::sys::rename2;

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`; `u32::MAX` keeps an id.
pub fn chown_at(dir: BorrowedFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `fchmodat2(dir, name, mode, AT_SYMLINK_NOFOLLOW)` (Linux ≥ 6.6): never
/// changes the target of a symlink. Older kernels: the entry is opened with
/// O_PATH|O_NOFOLLOW and, unless it is a symlink, changed through its
/// /proc/self/fd link (what glibc does).
pub fn chmod_at(dir: BorrowedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let cname = cstr(name)?;
    // SAFETY: `cname` is NUL-terminated; the other arguments are integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            cname.as_ptr(),
            mode,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match check(ret as libc::c_int) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
        r => return r.map(|_| ()),
    }
    let fd = crate::sys::open_at(dir, name, libc::O_PATH, 0)?;
    if fstat(std::os::fd::AsFd::as_fd(&fd))?.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is NUL-terminated; it names exactly the inode open at `fd`.
    check(unsafe { libc::chmod(path.as_ptr(), mode) })?;
    Ok(())
}

/// A time for [`utimens_at`]: keep it, set it to now, or set it.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Keep,
    Now,
    At(i64, u32),
}

impl SetTime {
    fn timespec(self) -> libc::timespec {
        match self {
            SetTime::Keep => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            SetTime::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            // A stat's time, copied: its instant (nanoseconds past a
            // second would be EINVAL, UTIME_OMIT or UTIME_NOW).
            SetTime::At(sec, nsec) => crate::sys::Timestamp { sec, nsec }.timespec(),
        }
    }
}

/// `utimensat(dir, name, times, AT_SYMLINK_NOFOLLOW)`.
pub fn utimens_at(dir: BorrowedFd, name: &OsStr, atime: SetTime, mtime: SetTime) -> io::Result<()> {
    let name = cstr(name)?;
    let times = [atime.timespec(), mtime.timespec()];
    // SAFETY: `name` is NUL-terminated; `times` holds two valid timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `futimens` with [`SetTime`] values.
pub fn futimens(fd: BorrowedFd, atime: SetTime, mtime: SetTime) -> io::Result<()> {
    let times = [atime.timespec(), mtime.timespec()];
    // SAFETY: `times` holds two valid timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })?;
    Ok(())
}

pub fn ftruncate(fd: BorrowedFd, size: u64) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })?;
    Ok(())
}

pub fn fsync(fd: BorrowedFd, datasync: bool) -> io::Result<()> {
    // SAFETY: plain fd argument.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })?;
    Ok(())
}

pub fn fallocate(fd: BorrowedFd, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    check(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })?;
    Ok(())
}

pub fn lseek(fd: BorrowedFd, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain integer arguments.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

pub use crate::sys::copy_range;

/// Starts writeback of the dirty pages of `len` bytes at `offset` of the
/// open file (`sync_file_range(SYNC_FILE_RANGE_WRITE)`) and returns without
/// waiting for it. It makes nothing durable and reports no I/O error of the
/// writeback itself: only a later fsync does (that fsync then has less left
/// to wait for).
pub fn start_writeback(fd: BorrowedFd, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain integer arguments; the call touches no memory of ours.
    check(unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    })?;
    Ok(())
}

/// Writes out everything of the filesystem `fd` is on (`syncfs`).
pub fn syncfs(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: plain fd argument.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })?;
    Ok(())
}

pub fn fstatvfs(fd: BorrowedFd) -> io::Result<libc::statvfs> {
    // SAFETY: a zeroed statvfs is a valid plain-data value for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable buffer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Sets the process umask; the kernel already applied the caller's.
pub fn set_umask(mask: u32) {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe {
        libc::umask(mask);
    }
}

/// Opens the inode `fd` refers to (an O_PATH fd) anew with `flags`,
/// through its /proc/self/fd link: the same inode, never a path lookup.
pub fn reopen(fd: BorrowedFd, flags: i32) -> io::Result<OwnedFd> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is NUL-terminated; the result is checked below.
    let raw = check(unsafe { libc::open(path.as_ptr(), flags) })?;
    // SAFETY: `raw` is a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Fds left free for the work of requests (a directory's fd for a mkdir,
/// a break's copy, a lookup) once guests hold open as many files and
/// directories as the daemon can: each held one is an fd of the daemon's,
/// and with none left a guest's mkdir, unlink or stat failed with EMFILE,
/// which ext4 never answers to them. An open failing with it is what a
/// process at its own limit sees. Set by [`keep_room_for`].
static ROOM_FOR_REQUESTS: AtomicU64 = AtomicU64::new(room_for(4));

/// Fds one request may hold at once (a break about 6).
const FDS_PER_REQUEST: u64 = 8;

/// Fds beyond the threads' and the directory cache's: the log, the FUSE
/// device, the claim's, the passthrough registrations in flight.
const SPARE_FDS: u64 = 32;

/// The fds the requests of `threads` FUSE threads may hold at once, the
/// directory cache's included: 128 for the default 4 threads, 608 for 64.
/// A fixed 128 did not follow `-o threads`: 16 breaking opens at once
/// among 64 threads held 66 fds more, and the cache up to 64.
const fn room_for(threads: usize) -> u64 {
    super::dircache::MOST_FDS + FDS_PER_REQUEST * threads as u64 + SPARE_FDS
}

/// Keeps room for the requests of `threads` FUSE threads (before serving).
pub fn keep_room_for(threads: usize) {
    ROOM_FOR_REQUESTS.store(room_for(threads), Ordering::Relaxed);
}

/// The fds kept for requests under an open-file limit of `limit`: at most
/// a quarter of it, so that a daemon with only a few fds still holds files.
pub fn room_for_requests(limit: u64) -> u64 {
    ROOM_FOR_REQUESTS.load(Ordering::Relaxed).min(limit / 4)
}

/// `fd`, to be held for a guest's open file or directory, or EMFILE if
/// holding it leaves fewer than [`room_for_requests`] fds free. The kernel
/// gives an open the lowest free number (open(2)), so every number below
/// `fd` is in use.
pub fn held(fd: OwnedFd) -> io::Result<OwnedFd> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    let room = room_for_requests(limit.rlim_cur);
    if fd.as_raw_fd() as u64 + room >= limit.rlim_cur {
        return Err(io::Error::from_raw_os_error(libc::EMFILE));
    }
    Ok(fd)
}

/// EMFILE if an fd the daemon opened now would not be [`held`]: for a
/// check before a change that ends in an fd to hold (a create). `fd`: any
/// fd, duplicated to the lowest free number and closed again.
pub fn room_to_hold(fd: BorrowedFd) -> io::Result<()> {
    held(fd.try_clone_to_owned()?).map(drop)
}

/// The entry `name` of `dir` (never followed) and its stat, opened for
/// reading only if it is a regular file: looked at first through
/// `O_PATH`, which opens nothing, so a device node or FIFO a guest's
/// rename put there is never opened (a device's open is its driver's to
/// act on, and the daemon is outside the guest's devices group).
pub fn open_if_regular(dir: BorrowedFd, name: &OsStr) -> io::Result<(libc::stat, Option<OwnedFd>)> {
    crate::sys::look_at(dir, name, libc::O_RDONLY)
}

/// The path `/proc/self/fd/<dir>/<name>`: the entry `name` of the directory
/// open at `dir`. Used only with the `l*xattr` calls, which do not follow the
/// last component, so it names exactly that entry and nothing outside.
fn entry_path(dir: BorrowedFd, name: &OsStr) -> io::Result<CString> {
    if name.as_bytes().contains(&b'/') || name.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

use crate::sys::xattr::read_growing;

/// The xattr names of the entry `name` in `dir` (not following a symlink).
pub fn list_xattrs_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Vec<OsString>> {
    let path = entry_path(dir, name)?;
    let raw = read_growing(|buf| {
        // SAFETY: `path` is NUL-terminated; `buf` is valid for its length.
        unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsString::from_vec(n.to_vec()))
        .collect())
}

/// One xattr of the entry `name` in `dir`; `None` if it has none such.
pub fn get_xattr_at(dir: BorrowedFd, name: &OsStr, attr: &OsStr) -> io::Result<Option<Vec<u8>>> {
    crate::sys::xattr::get_cpath(&entry_path(dir, name)?, attr)
}

pub fn set_xattr_at(
    dir: BorrowedFd,
    name: &OsStr,
    attr: &OsStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let path = entry_path(dir, name)?;
    let cattr = cstr(attr)?;
    // SAFETY: both strings are NUL-terminated; `value` is valid for its length.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            cattr.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

pub fn remove_xattr_at(dir: BorrowedFd, name: &OsStr, attr: &OsStr) -> io::Result<()> {
    let path = entry_path(dir, name)?;
    let cattr = cstr(attr)?;
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::lremovexattr(path.as_ptr(), cattr.as_ptr()) })?;
    Ok(())
}

/// The entries of the directory `dir` (freshly opened: read from its
/// offset), as (name, inode, `DT_*` type).
pub fn read_dir(dir: BorrowedFd) -> io::Result<Vec<(OsString, u64, u8)>> {
    let mut out = Vec::new();
    crate::sys::read_dir(dir, |e| out.push((e.name.to_owned(), e.ino, e.kind)))?;
    Ok(out)
}

/// Detaches the mount at `path` (`umount2`), lazily if asked.
pub fn umount(path: &std::path::Path, lazy: bool) -> io::Result<()> {
    let p = cstr(path.as_os_str())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `p` is NUL-terminated.
    check(unsafe { libc::umount2(p.as_ptr(), flags) })?;
    Ok(())
}

/// `fork()`: `Ok(Some(pid))` in the parent, `Ok(None)` in the child. Call it
/// only while the process has one thread (before the mount starts any).
pub fn fork() -> io::Result<Option<i32>> {
    // SAFETY: the caller is single-threaded, so the child inherits no lock
    // held by another thread; fork itself has no memory preconditions.
    let pid = check(unsafe { libc::fork() })?;
    Ok((pid != 0).then_some(pid))
}

/// Starts a new session so the daemon leaves the caller's terminal.
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments, no memory touched.
    check(unsafe { libc::setsid() })?;
    Ok(())
}

/// Points stdin at /dev/null and stdout/stderr at `log` (or /dev/null), so a
/// daemon keeps no pipe of its caller open.
pub fn redirect_stdio(log: Option<&std::path::Path>) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let out = match log {
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(p)?
        }
        None => null.try_clone()?,
    };
    for (from, to) in [(&null, 0), (&out, 1), (&out, 2)] {
        // SAFETY: both are valid fds; dup2 atomically replaces `to`.
        check(unsafe { libc::dup2(from.as_raw_fd(), to) })?;
    }
    Ok(())
}

/// A detached copy of the mount `dir` is on, whose root is `dir` itself
/// (`open_tree(OPEN_TREE_CLONE)`, without the mounts below it). In it the
/// kernel refuses `..` (ENOENT) from a directory no longer beneath `dir`:
/// how the overlay's directory cache learns that a directory it holds was
/// moved out of the tree. Needs CAP_SYS_ADMIN.
pub fn clone_mount(dir: BorrowedFd) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH names `dir`
    // itself; a non-negative return is a new fd owned by no one else.
    let fd = check(unsafe {
        libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) as libc::c_int
    })?;
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the mount table changed since the last call, for an fd of
/// `/proc/self/mountinfo` (the kernel marks it with POLLPRI once per
/// change). A failed poll counts as a change.
pub fn mounts_changed(mountinfo: BorrowedFd) -> bool {
    let mut p = libc::pollfd {
        fd: mountinfo.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n != 0 && (n < 0 || p.revents & (libc::POLLPRI | libc::POLLERR) != 0)
}

/// For tests: a character device of a major no driver has (one of those
/// devices.txt keeps for local use): its open fails with ENXIO, so an
/// open is seen. `None` where none is free or mknod is refused.
#[cfg(test)]
pub fn driverless_node(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let listed = std::fs::read_to_string("/proc/devices").ok()?;
    let taken = |major: u64| {
        listed
            .lines()
            .take_while(|l| !l.starts_with("Block"))
            .any(|l| l.split_whitespace().next() == Some(&major.to_string()))
    };
    let major = (60..=63).chain(120..=127).find(|m| !taken(*m))?;
    let node = dir.join("dev");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major, 0),
    )
    .ok()?;
    std::fs::metadata(&node)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()))
        .then_some(node)
}
