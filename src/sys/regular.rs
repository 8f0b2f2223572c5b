//! Opening an entry of a guest's tree on the host only when it is a
//! regular file. unifs runs as host root; a guest's root may put a device
//! node, a FIFO or a socket at any name, or swap one in between a look and
//! an open. A device's open is its driver's to act on (a tape rewinds, a
//! watchdog arms, a tty may become the opener's terminal), and it reaches
//! the host's device whatever the guest's devices group says; a FIFO's open
//! waits for a writer. So the entry is looked at first through `O_PATH`,
//! which opens nothing, and only a regular file is opened, by that fd (the
//! inode looked at, whatever the name holds by then).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// The error for an entry that is not a regular file: nothing was opened.
#[derive(Debug)]
pub struct NotRegular;

impl std::fmt::Display for NotRegular {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("not a regular file (a device node, FIFO or socket is never opened)")
    }
}

impl std::error::Error for NotRegular {}

/// Whether `e` is [`NotRegular`].
pub fn is_not_regular(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|e| e.is::<NotRegular>())
}

/// Opens `rel` beneath `dir` (resolved as [`super::open_beneath`] does:
/// no symlink, no `..` out, no mount crossed) for reading with `flags`, if
/// it is a regular file; else [`NotRegular`].
pub fn open_regular_beneath(dir: BorrowedFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    let probe = super::open_beneath(dir, rel, libc::O_PATH)?;
    reopen_if_regular(probe.as_fd(), flags)
}

/// Opens the entry `name` of `dir` (never followed) for reading with
/// `flags`, if it is a regular file; else [`NotRegular`].
pub fn open_regular_at(dir: BorrowedFd, name: &std::ffi::OsStr, flags: i32) -> io::Result<OwnedFd> {
    match look_at(dir, name, flags)? {
        (_, Some(fd)) => Ok(fd),
        (_, None) => Err(io::Error::other(NotRegular)),
    }
}

/// The entry `name` of `dir` (never followed) as its `O_PATH` look found
/// it: its stat, and, only if it is a regular file, that inode opened for
/// reading with `flags` (`None`: nothing was opened).
pub fn look_at(
    dir: BorrowedFd,
    name: &std::ffi::OsStr,
    flags: i32,
) -> io::Result<(libc::stat, Option<OwnedFd>)> {
    let probe = super::open_at(dir, name, libc::O_PATH, 0)?;
    let st = super::fstat_raw(probe.as_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok((st, None));
    }
    Ok((st, Some(reopen_regular(probe.as_fd(), flags)?)))
}

/// The inode open at `probe` (`O_PATH`) opened for reading, if regular.
fn reopen_if_regular(probe: BorrowedFd, flags: i32) -> io::Result<OwnedFd> {
    if !super::fstat(probe)?.is_file() {
        return Err(io::Error::other(NotRegular));
    }
    reopen_regular(probe, flags)
}

/// The regular file open at `probe` (`O_PATH`) opened for reading.
/// `O_NONBLOCK` and `O_NOCTTY` are added all the same; `O_NOATIME`, which
/// only the file's owner (or CAP_FOWNER) may ask, is dropped when refused.
fn reopen_regular(probe: BorrowedFd, flags: i32) -> io::Result<OwnedFd> {
    // The look followed no symlink; an `O_NOFOLLOW` here would refuse the
    // /proc/self/fd link the reopen goes through (ELOOP, for every file).
    let flags = (flags & !libc::O_NOFOLLOW) | libc::O_NONBLOCK | libc::O_NOCTTY;
    match super::reopen(probe, flags) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && flags & libc::O_NOATIME != 0 => {
            super::reopen(probe, flags & !libc::O_NOATIME)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn only_a_regular_file_is_opened() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/g"), b"y").unwrap();
        nix::unistd::mkfifo(
            &d.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("f", d.path().join("link")).unwrap();
        let dir = std::fs::File::open(d.path()).unwrap();
        let dir = dir.as_fd();
        let flags = libc::O_RDONLY | libc::O_NOATIME;
        assert!(open_regular_at(dir, "f".as_ref(), flags).is_ok());
        assert!(open_regular_beneath(dir, Path::new("sub/g"), flags).is_ok());
        // Opened (O_NONBLOCK: without a wait), the FIFO would be Ok here.
        for name in ["fifo", "link", "sub"] {
            let e = open_regular_at(dir, name.as_ref(), flags).unwrap_err();
            assert!(is_not_regular(&e), "{name}: {e}");
        }
        let e = open_regular_beneath(dir, Path::new("fifo"), flags).unwrap_err();
        assert!(is_not_regular(&e), "{e}");
        // A node no driver has: its open would say ENXIO.
        if let Some(node) = crate::fs::sys::driverless_node(d.path()) {
            let name = node.file_name().unwrap();
            let e = open_regular_at(dir, name, flags).unwrap_err();
            assert!(is_not_regular(&e), "{e}");
        }
        // A symlink on the way, or at the end, is not followed.
        let e = open_regular_beneath(dir, Path::new("link"), flags).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    }

    /// Callers' flags had `O_NOFOLLOW` before the helper (the look does
    /// that now): passed on to the reopen, it refused every file (ELOOP).
    #[test]
    fn s42_an_o_nofollow_asked_for_still_opens_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let dir = std::fs::File::open(d.path()).unwrap();
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOATIME;
        open_regular_at(dir.as_fd(), "f".as_ref(), flags).unwrap();
        open_regular_beneath(dir.as_fd(), Path::new("f"), flags).unwrap();
    }
}
