//! Trial runs on an unnamed empty file (O_TMPFILE) in a shared file's
//! directory: a change the backing filesystem refuses is found there,
//! before the shared file is copied for it (a break for a change that then
//! fails costs a copy for nothing, and the file stays the guest's own).

use super::{fsys, Result};
use crate::fs::cow;
use crate::sys;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// An unnamed file in `dir`, gone when closed; `None` where the filesystem
/// has no O_TMPFILE (or the directory takes no new file): the change then
/// finds out for itself.
pub fn scratch(dir: BorrowedFd) -> Option<OwnedFd> {
    fsys::open_tmpfile(dir, 0o600).ok()
}

/// The error of a trial that says the change itself would fail: one of
/// the refusals a filesystem gives for what it does not take (not ENOSPC
/// of a full disk, which the trial file may meet where the copy would).
pub fn refusal(tried: io::Result<()>) -> Result<()> {
    match tried {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EINVAL | libc::EPERM | libc::E2BIG | libc::ERANGE)
            ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// Whether the backing filesystem takes xattr `attr` = `value` (`flags`:
/// setxattr's) on the copy a break would make of the shared file `name` in
/// `dir`: tried on a scratch file with the file's own xattrs (but the
/// store's), which share its space for them. A value too large for what
/// is left (ext4: ENOSPC, its xattrs fit in one block) or for the
/// filesystem (E2BIG) fails here, not after the copy.
pub fn refused_xattr(
    dir: BorrowedFd,
    name: &OsStr,
    attr: &OsStr,
    value: &[u8],
    flags: i32,
) -> Result<()> {
    let Some(probe) = scratch(dir) else {
        return Ok(());
    };
    // Another file renamed there since the caller's look: its own change
    // finds out what it is.
    let (_, Some(file)) = fsys::open_if_regular(dir, name)? else {
        return Ok(());
    };
    for (a, v) in sys::xattr::list_fd(file.as_fd())? {
        if !cow::is_store_xattr(&a) && sys::xattr::set_fd(probe.as_fd(), &a, &v).is_err() {
            // The copy could not have them either: the break fails by itself.
            return Ok(());
        }
    }
    let tried = sys::xattr::set_fd_flags(probe.as_fd(), attr, value, flags);
    if tried
        .as_ref()
        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOSPC))
    {
        return tried;
    }
    refusal(tried)
}

/// A size the backing filesystem refuses (EFBIG: past its largest file,
/// 16 TiB on ext4 of 4 KiB blocks) for the shared file `name` in `dir`,
/// tried on a scratch file (sparse: no block taken) before the break
/// copies the whole file for a truncate that then fails, and leaves the
/// file the guest's own. A private file, or a smaller size, answers by
/// itself.
pub fn refused_size(dir: BorrowedFd, name: &OsStr, size: u64) -> Result<()> {
    let Ok(st) = fsys::stat_at(dir, name) else {
        return Ok(());
    };
    if size <= st.st_size as u64 || !cow::is_shared(dir, name, &st, false)? {
        return Ok(());
    }
    let Some(probe) = scratch(dir) else {
        return Ok(());
    };
    match fsys::ftruncate(probe.as_fd(), size) {
        Err(e) if e.raw_os_error() == Some(libc::EFBIG) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device node and a FIFO where the shared file was (a rename
    /// between the caller's look and the trial): neither is opened. Before,
    /// the node was opened (its driver's ENXIO came back), a FIFO too.
    #[test]
    fn the_xattr_trial_opens_no_device_or_fifo() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = sys::open_dir(tmp.path()).unwrap();
        let attr = OsStr::new("user.s41");
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let name = OsStr::new("fifo");
        assert!(fsys::open_if_regular(dir.as_fd(), name)
            .unwrap()
            .1
            .is_none());
        assert!(refused_xattr(dir.as_fd(), name, attr, b"v", 0).is_ok());
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        assert!(fsys::open_if_regular(dir.as_fd(), OsStr::new("file"))
            .unwrap()
            .1
            .is_some());
        let Some(_node) = fsys::driverless_node(tmp.path()) else {
            eprintln!("skipped the device node: no free major, or mknod refused (not root)");
            return;
        };
        let opened = refused_xattr(dir.as_fd(), OsStr::new("dev"), attr, b"v", 0);
        assert!(opened.is_ok(), "the device node was opened: {opened:?}");
    }
}
