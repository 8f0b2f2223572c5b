//! `chattr` flags through the mount: FS_IOC_GETFLAGS/SETFLAGS and
//! FS_IOC_FSGETXATTR/FSSETXATTR, which the kernel's FUSE sends as FUSE_IOCTL
//! (on regular files and directories, after its own checks: owner, and
//! CAP_LINUX_IMMUTABLE for i and a). Read from the backing inode, which for
//! a shared file shows what its private copy would (a break gives the copy
//! its source's flags); changed only on a private inode: a shared file's
//! link is broken first, as for any metadata change (invariant 1), so no
//! store object ever gets a flag.

use super::{errno, fsys, is_reg, Caller, Overlay, Result};
use crate::fs::cow;
use crate::sys;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// `chattr` flags a guest may change: those unify leaves alone but E and V
/// (encryption and fs-verity, which their own ioctls set), and D, T, P,
/// which only directories use: s u c S i a d A m j t D T C x P. Not E, V,
/// I, e, N, which the filesystem keeps itself (ext4 answers EOPNOTSUPP
/// for such a change too), nor F (casefold): names in the backing
/// directory would then match whatever their case, which the overlay's
/// name table does not.
pub const SETTABLE_FLAGS: u32 = (crate::store::INODE_FLAGS & !(FS_ENCRYPT_FL | FS_VERITY_FL))
    | FS_DIRSYNC_FL
    | FS_TOPDIR_FL
    | FS_PROJINHERIT_FL;

const FS_ENCRYPT_FL: u32 = 0x800;
const FS_VERITY_FL: u32 = 0x10_0000;
const FS_DIRSYNC_FL: u32 = 0x1_0000;
const FS_TOPDIR_FL: u32 = 0x2_0000;
const FS_PROJINHERIT_FL: u32 = 0x2000_0000;

/// `chattr +j` (data journaling), which ext4 lets only CAP_SYS_RESOURCE
/// change; it would check the daemon's.
const FS_JOURNAL_DATA_FL: u32 = 0x4000;
const CAP_SYS_RESOURCE: u32 = 24;

/// fsx_xflags a guest may change (`xfs_io chattr`): all but prealloc and
/// hasattr, which the filesystem sets.
pub const SETTABLE_XFLAGS: u32 = 0x1
    | 0x8
    | 0x10
    | 0x20
    | 0x40
    | 0x80
    | 0x100
    | 0x200
    | 0x400
    | 0x800
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x1_0000;

/// What FS_IOC_GETFLAGS or FS_IOC_FSGETXATTR tells, or a SETFLAGS or
/// FSSETXATTR asks for: the flags, or a struct fsxattr (xflags, extsize,
/// nextents, projid, cowextsize, pad).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrFlags {
    Flags(u32),
    Fsx([u32; 7]),
}

impl AttrFlags {
    /// The words of the ioctl's argument.
    pub fn words(&self) -> Vec<u32> {
        match self {
            AttrFlags::Flags(f) => vec![*f],
            AttrFlags::Fsx(raw) => raw.to_vec(),
        }
    }

    /// Whether `self`, asked for, changes nothing of `old`.
    fn same_as(&self, old: &AttrFlags) -> bool {
        match (self, old) {
            (AttrFlags::Flags(a), AttrFlags::Flags(b)) => a == b,
            // nextents and the padding are not set.
            (AttrFlags::Fsx(a), AttrFlags::Fsx(b)) => {
                [a[0], a[1], a[3], a[4]] == [b[0], b[1], b[3], b[4]]
            }
            _ => false,
        }
    }

    /// The error of a change from `old` to `self` the overlay refuses,
    /// checked before any break: EOPNOTSUPP for a flag it does not pass,
    /// EPERM for `+j` without CAP_SYS_RESOURCE and for a new project ID
    /// (the host's quota).
    fn refused(&self, old: &AttrFlags, caller: Caller) -> Result<()> {
        match (self, old) {
            (AttrFlags::Flags(new), AttrFlags::Flags(old)) => {
                let changed = new ^ old;
                if changed & !SETTABLE_FLAGS != 0 {
                    return Err(errno(libc::EOPNOTSUPP));
                }
                if changed & FS_JOURNAL_DATA_FL != 0 && !caller.may_journal_data() {
                    return Err(errno(libc::EPERM));
                }
            }
            (AttrFlags::Fsx(new), AttrFlags::Fsx(old)) => {
                if (new[0] ^ old[0]) & !SETTABLE_XFLAGS != 0 {
                    return Err(errno(libc::EOPNOTSUPP));
                }
                if new[3] != old[3] {
                    return Err(errno(libc::EPERM));
                }
            }
            _ => return Err(errno(libc::EINVAL)),
        }
        Ok(())
    }

    /// The same kind of value, as the file open at `fd` has it now.
    fn read_like(&self, fd: BorrowedFd) -> Result<AttrFlags> {
        Ok(match self {
            AttrFlags::Flags(_) => AttrFlags::Flags(sys::get_inode_flags(fd)?),
            AttrFlags::Fsx(_) => AttrFlags::Fsx(sys::get_fsxattr_raw(fd)?),
        })
    }

    fn apply(&self, fd: BorrowedFd) -> Result<()> {
        match self {
            AttrFlags::Flags(f) => sys::set_inode_flags(fd, *f),
            AttrFlags::Fsx(raw) => sys::set_fsxattr_raw(fd, raw),
        }
    }
}

impl Caller {
    /// Whether the caller may change `+j`, as ext4 asks of it (see
    /// [`Caller::capable`]); if /proc cannot tell, uid 0 decides.
    fn may_journal_data(&self) -> bool {
        match self.status() {
            Some(status) => self.capable(&status, CAP_SYS_RESOURCE),
            None => self.uid == 0,
        }
    }
}

/// An fd for the flag ioctls of the entry `name` in `dir`: regular files
/// and directories only (the kernel sends them for no other type), opened
/// through an O_PATH probe, so a fifo or device a rename put there is
/// never opened. Read-only: it breaks no lease of unify's.
fn open_for_flags(dir: BorrowedFd, name: &OsStr) -> Result<(OwnedFd, bool)> {
    let probe = sys::open_at(
        dir,
        name,
        libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    )?;
    let st = fsys::fstat(probe.as_fd())?;
    let reg = is_reg(&st);
    let flags = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => libc::O_RDONLY | libc::O_NONBLOCK,
        libc::S_IFDIR => libc::O_RDONLY | libc::O_DIRECTORY,
        _ => return Err(errno(libc::ENOTTY)),
    };
    Ok((fsys::reopen(probe.as_fd(), flags | libc::O_CLOEXEC)?, reg))
}

impl Overlay {
    /// The flags of the node's backing inode, of the kind of `want`.
    pub fn attr_flags(&self, node: u64, want: AttrFlags) -> Result<AttrFlags> {
        let names = super::read_lock(&self.names);
        let fd = match self.entry_of(node) {
            Ok((dir, name)) => {
                Self::refuse_mounted(dir.as_fd(), &name)?;
                open_for_flags(dir.as_fd(), &name)?.0
            }
            // Unlinked but open, or a removed directory: as in getxattr.
            Err(e) => {
                drop(names);
                match self.removed_dir(node) {
                    Some(fd) => fd,
                    None => self.still_open(node, e)?.fd.try_clone()?,
                }
            }
        };
        want.read_like(fd.as_fd())
    }

    /// Sets the node's flags to `new`, on a private inode: a shared file's
    /// link is broken first, unless the change is refused or changes
    /// nothing (`chattr` sets what it read back unchanged, too).
    pub fn set_attr_flags(&self, node: u64, new: AttrFlags, caller: Caller) -> Result<()> {
        let (dir, name) = match self.entry_of(node) {
            Ok(e) => e,
            // Unlinked but open, or split off its path: as in setattr.
            Err(e) => {
                let fd = self.unnamed_private_fd(node, e)?;
                new.refused(&new.read_like(fd.as_fd())?, caller)?;
                return new.apply(fd.as_fd());
            }
        };
        Self::refuse_mounted(dir.as_fd(), &name)?;
        let old = new.read_like(open_for_flags(dir.as_fd(), &name)?.0.as_fd())?;
        new.refused(&old, caller)?;
        if new.same_as(&old) {
            return Ok(());
        }
        // A write fd, held through the change, keeps unify from making the
        // file an object meanwhile (it cannot lease it), as in setattr.
        if let Some(fd) = self.private_write_fd(node, dir.as_fd(), &name, None)? {
            return new.apply(fd.as_fd());
        }
        // Not writable: a directory (never shared), a file that is
        // immutable or append-only (unify leaves those alone) or being run.
        let (fd, reg) = open_for_flags(dir.as_fd(), &name)?;
        let marked = || -> Result<bool> { Ok(reg && cow::has_marker(fd.as_fd())?) };
        if marked()? {
            return Err(errno(libc::EBUSY));
        }
        new.apply(fd.as_fd())?;
        // Unify made it an object right then: take the change back off it.
        if marked()? {
            let _ = old.apply(fd.as_fd());
            return Err(errno(libc::EBUSY));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `chattr`'s letters s u c S i a d A m j t D T C x P.
    #[test]
    fn settable_flags_are_chattrs_letters_but_the_filesystems_own() {
        let letters = [
            0x1,
            0x2,
            0x4,
            0x8,
            0x10,
            0x20,
            0x40,
            0x80,
            0x400,
            0x4000,
            0x8000,
            0x1_0000,
            0x2_0000,
            0x80_0000,
            0x200_0000,
            0x2000_0000,
        ];
        assert_eq!(SETTABLE_FLAGS, letters.iter().fold(0, |a, b| a | b));
    }
}
