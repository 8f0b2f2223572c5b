//! `chattr` flags through the mount: FS_IOC_GETFLAGS/SETFLAGS and
//! FS_IOC_FSGETXATTR/FSSETXATTR, which the kernel's FUSE sends as FUSE_IOCTL
//! (on regular files and directories, after its own checks: owner, and
//! CAP_LINUX_IMMUTABLE for i and a). Read from the backing inode, which for
//! a shared file shows what its private copy would (a break gives the copy
//! its source's flags); changed only on a private inode: a shared file's
//! link is broken first, as for any metadata change (invariant 1), so no
//! store object ever gets a flag.

use super::{
    errno, fsys, has_cap, has_permitted, is_reg, lock, read_lock, Caller, Overlay, Result,
};
use crate::fs::cow;
use crate::fs::inode::{BackingIno, Found};
use crate::sys::{self, FS_APPEND_FL, FS_IMMUTABLE_FL};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// `chattr` flags a guest may change: those unify leaves alone but E and V
/// (encryption and fs-verity, which their own ioctls set), D, T, P, which
/// only directories use, and e (extents), which ext4 answers itself (a
/// file of at most 12 blocks in one extent loses it; any other, EOPNOTSUPP
/// once the rest is made): s u c S i a d A m j t D T C x
/// P e. Not E, V, I, N, which the filesystem keeps itself ([`KEPT_FLAGS`]),
/// nor F (casefold): names in the backing directory would then match
/// whatever their case, which the overlay's name table does not. With
/// ext4's old EOFBLOCKS bit (among unify's), which ext4 stores as asked.
pub const SETTABLE_FLAGS: u32 = (crate::store::INODE_FLAGS & !(FS_ENCRYPT_FL | FS_VERITY_FL))
    | FS_DIRSYNC_FL
    | FS_TOPDIR_FL
    | FS_PROJINHERIT_FL
    | FS_EXTENT_FL;

/// Flags FS_IOC_GETFLAGS shows that the filesystem keeps itself: E, I, V
/// and N. ext4 leaves them as the file has them whatever a SETFLAGS asks,
/// without an error, so `chattr =d DIR` on an indexed directory (`I`)
/// works; the mount takes them alike. One the file lacks, asked for, goes
/// to the filesystem: ext4 leaves it off, xfs refuses it (EOPNOTSUPP).
const KEPT_FLAGS: u32 = FS_ENCRYPT_FL | FS_INDEX_FL | FS_VERITY_FL | FS_INLINE_DATA_FL;

const FS_ENCRYPT_FL: u32 = 0x800;
const FS_INDEX_FL: u32 = 0x1000;
const FS_EXTENT_FL: u32 = 0x8_0000;
const FS_INLINE_DATA_FL: u32 = 0x1000_0000;
const FS_VERITY_FL: u32 = 0x10_0000;
const FS_DIRSYNC_FL: u32 = 0x1_0000;
const FS_TOPDIR_FL: u32 = 0x2_0000;
const FS_PROJINHERIT_FL: u32 = 0x2000_0000;

/// `chattr +j` (data journaling), which ext4 lets only CAP_SYS_RESOURCE
/// change; it would check the daemon's.
const FS_JOURNAL_DATA_FL: u32 = 0x4000;
const CAP_SYS_RESOURCE: u32 = 24;

/// `chattr +i` and `+a`, and their xfs flags (FSSETXATTR), which only
/// CAP_LINUX_IMMUTABLE changes.
const FS_XFLAG_IMMUTABLE: u32 = 0x8;
const FS_XFLAG_APPEND: u32 = 0x10;
const CAP_LINUX_IMMUTABLE: u32 = 9;

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

    /// What a SETFLAGS asking for `self` asks of a file with `old`: the
    /// [`KEPT_FLAGS`] the file has, kept. (Those it lacks stay asked for:
    /// the filesystem answers them, and xfs refuses them.)
    fn as_kept(self, old: &AttrFlags) -> AttrFlags {
        match (self, old) {
            (AttrFlags::Flags(new), AttrFlags::Flags(old)) => {
                AttrFlags::Flags(new | (old & KEPT_FLAGS))
            }
            _ => self,
        }
    }

    /// Whether `self` asks of `old` only [`KEPT_FLAGS`] it lacks, which a
    /// filesystem that takes them leaves off: a change of nothing.
    fn adds_only_kept(&self, old: &AttrFlags) -> bool {
        match (self, old) {
            (AttrFlags::Flags(new), AttrFlags::Flags(old)) => (new ^ old) & !KEPT_FLAGS == 0,
            _ => false,
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
                if changed & !(SETTABLE_FLAGS | KEPT_FLAGS) != 0 {
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
        // The daemon makes the change: one its own capabilities cannot
        // (a daemon started without them) fails before any break.
        let (lock, journal) = self.changes(old);
        if !(lock || journal) {
            return Ok(());
        }
        // One read for both; unreadable: let the change itself say.
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let has =
            |holds: fn(&str, u32) -> bool, cap| status.as_deref().is_none_or(|s| holds(s, cap));
        // CAP_SYS_RESOURCE is permitted, not effective (raised for the change).
        if (lock && !has(has_cap, CAP_LINUX_IMMUTABLE))
            || (journal && !has(has_permitted, CAP_SYS_RESOURCE))
        {
            return Err(errno(libc::EPERM));
        }
        Ok(())
    }

    /// Whether `self` has the immutable or the append-only flag.
    fn locked(&self) -> bool {
        match self {
            AttrFlags::Flags(f) => f & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0,
            AttrFlags::Fsx(raw) => raw[0] & (FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND) != 0,
        }
    }

    /// Whether a change from `old` to `self` changes `i` or `a`, and `j`.
    fn changes(&self, old: &AttrFlags) -> (bool, bool) {
        match (self, old) {
            (AttrFlags::Flags(new), AttrFlags::Flags(old)) => (
                (new ^ old) & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0,
                (new ^ old) & FS_JOURNAL_DATA_FL != 0,
            ),
            (AttrFlags::Fsx(new), AttrFlags::Fsx(old)) => {
                let changed = new[0] ^ old[0];
                (changed & (FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND) != 0, false)
            }
            _ => (false, false),
        }
    }

    /// The change from `old` the backing filesystem refuses, tried on an
    /// unnamed empty file in `dir` (O_TMPFILE) before a shared file is
    /// copied for it: ext4 has no `+C`, for one. The probe's own flags get
    /// the bits the change flips, but `i` and `a` (the probe must go when
    /// closed; the capability is checked above). A filesystem without
    /// O_TMPFILE, or a flag only an empty file takes (btrfs' `+C`, which it
    /// ignores on a file with data), leaves the answer to the change itself.
    fn refused_by_filesystem(&self, old: &AttrFlags, dir: BorrowedFd) -> Result<()> {
        const LOCKS: u32 = FS_IMMUTABLE_FL | FS_APPEND_FL;
        const XLOCKS: u32 = FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND;
        let flip = match (self, old) {
            (AttrFlags::Flags(new), AttrFlags::Flags(old)) => (new ^ old) & !LOCKS,
            (AttrFlags::Fsx(new), AttrFlags::Fsx(old)) => {
                let hints = [1, 4].iter().any(|&i| new[i] != old[i]);
                ((new[0] ^ old[0]) & !XLOCKS) | u32::from(hints)
            }
            _ => 0,
        };
        if flip == 0 {
            return Ok(());
        }
        let Some(probe) = super::probe::scratch(dir) else {
            return Ok(());
        };
        let probe = probe.as_fd();
        let tried = match (self, old) {
            (AttrFlags::Flags(_), _) => sys::get_inode_flags(probe).and_then(|own| {
                sys::caps::with_sys_resource(|| sys::set_inode_flags(probe, own ^ flip))
            }),
            (AttrFlags::Fsx(new), AttrFlags::Fsx(old)) => {
                sys::get_fsxattr_raw(probe).and_then(|mut own| {
                    own[0] ^= (new[0] ^ old[0]) & !XLOCKS;
                    (own[1], own[4]) = (new[1], new[4]);
                    sys::set_fsxattr_raw(probe, &own)
                })
            }
            _ => Ok(()),
        };
        super::probe::refusal(tried)
    }

    /// A change of nothing but clearing `e` (extents) of the file open at
    /// `fd`, which has data in its 13th block or later, is refused as ext4
    /// refuses it (EOPNOTSUPP): ext4 maps by blocks only a file whose data
    /// lies in one extent within its first 12 blocks, and the private copy
    /// a break makes has its data where the file has it. The empty file
    /// [`Self::refused_by_filesystem`] tries takes it, so a large shared
    /// file was copied for nothing and stayed private. A change with other
    /// flags goes on: ext4 makes the rest before it refuses.
    fn refused_for_blocks(&self, old: &AttrFlags, fd: BorrowedFd) -> Result<()> {
        let (AttrFlags::Flags(new), AttrFlags::Flags(old)) = (self, old) else {
            return Ok(());
        };
        if new ^ old != FS_EXTENT_FL || new & FS_EXTENT_FL != 0 {
            return Ok(());
        }
        let block = fsys::fstat(fd)?.st_blksize.max(1) as i64;
        match fsys::lseek(fd, 12 * block, libc::SEEK_DATA) {
            Ok(_) => Err(errno(libc::EOPNOTSUPP)),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The same kind of value, as the file open at `fd` has it now.
    fn read_like(&self, fd: BorrowedFd) -> Result<AttrFlags> {
        Ok(match self {
            AttrFlags::Flags(_) => AttrFlags::Flags(sys::get_inode_flags(fd)?),
            AttrFlags::Fsx(_) => AttrFlags::Fsx(sys::get_fsxattr_raw(fd)?),
        })
    }

    fn apply(&self, fd: BorrowedFd) -> Result<()> {
        // `+j` needs CAP_SYS_RESOURCE, kept out of the daemon's threads.
        sys::caps::with_sys_resource(|| match self {
            AttrFlags::Flags(f) => sys::set_inode_flags(fd, *f),
            AttrFlags::Fsx(raw) => sys::set_fsxattr_raw(fd, raw),
        })
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
                let old = new.read_like(fd.as_fd())?;
                let new = new.as_kept(&old);
                new.refused(&old, caller)?;
                return new.apply(fd.as_fd());
            }
        };
        Self::refuse_mounted(dir.as_fd(), &name)?;
        let (fd, reg) = open_for_flags(dir.as_fd(), &name)?;
        let old = new.read_like(fd.as_fd())?;
        let new = new.as_kept(&old);
        new.refused(&old, caller)?;
        if new.same_as(&old) {
            return Ok(());
        }
        if !reg && new.locked() && !old.locked() {
            return self.lock_dir(node, fd.as_fd(), new, old);
        }
        if reg && cow::has_marker(fd.as_fd())? {
            new.refused_by_filesystem(&old, dir.as_fd())?;
            new.refused_for_blocks(&old, fd.as_fd())?;
            // The filesystem took them, and keeps them itself (ext4): the
            // change changes nothing, and breaks no link.
            if new.adds_only_kept(&old) {
                return Ok(());
            }
        }
        drop(fd);
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

    /// Makes the directory `node`, open at `dir`, immutable or append-only
    /// (`new`; `old`: its flags now), after giving every shared file
    /// directly in it a private copy. Such a directory refuses the rename
    /// a break ends with, so a shared file left in it could not be written
    /// (EPERM), where ext4 lets a file in it be written; private, it is
    /// written in place. A shared file put there meanwhile (by the guest,
    /// or by unify) is found after the flag is set: the flag comes off,
    /// and that file is broken too.
    fn lock_dir(&self, node: u64, dir: BorrowedFd, new: AttrFlags, old: AttrFlags) -> Result<()> {
        for _ in 0..4 {
            for name in shared_entries(dir)? {
                self.break_entry(node, dir, &name)?;
            }
            new.apply(dir)?;
            if shared_entries(dir)?.is_empty() {
                return Ok(());
            }
            old.apply(dir)?;
        }
        Err(errno(libc::EBUSY))
    }

    /// Breaks the link of `name` in the directory `parent` (open at `dir`)
    /// if it is a store object, and binds the node the table has there (or
    /// the number it keeps for the path) to the copy, as a break through
    /// that node would.
    fn break_entry(&self, parent: u64, dir: BorrowedFd, name: &OsStr) -> Result<()> {
        let _guard = lock(&self.break_lock);
        // Held through the break: a rename's table update cannot land
        // between the rename of the copy and ours (as in make_private).
        let _names = read_lock(&self.names);
        let st = match fsys::stat_at(dir, name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !is_reg(&st) || !cow::is_shared(dir, name, &st, false)? {
            return Ok(());
        }
        let (new_ino, replaced) = self.break_noted(dir, name, u64::MAX)?;
        let copied = Found {
            ino: BackingIno::of(&replaced),
            shared: Self::linked(&replaced),
        };
        let mut state = lock(&self.state);
        let here = fsys::stat_at(dir, name).map(|st| BackingIno::of(&st));
        if here.ok() == Some(new_ino) {
            Self::rebind_misled(&mut state, parent, name, copied, new_ino);
        }
        // Not held for the syncfs of many notes, which every name
        // operation of the mount would wait for (as in make_private).
        drop((state, _names, _guard));
        self.sync_unsynced_breaks();
        Ok(())
    }
}

/// The names of the store objects directly in the directory open at `dir`
/// (any marked file, as before a change: see [`cow::is_shared`]).
fn shared_entries(dir: BorrowedFd) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    sys::rewind_dir(dir)?;
    sys::read_dir(dir, |e| {
        if matches!(e.kind, libc::DT_REG | libc::DT_UNKNOWN) {
            names.push(e.name.to_owned());
        }
    })?;
    let shared = |name: &OsString| {
        fsys::stat_at(dir, name)
            .is_ok_and(|st| is_reg(&st) && cow::is_shared(dir, name, &st, false).unwrap_or(false))
    };
    names.retain(shared);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `chattr`'s letters s u c S i a d A m j t D T C x P.
    #[test]
    fn settable_flags_are_chattrs_letters_but_the_filesystems_own_and_eofblocks() {
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
            0x8_0000,
            0x80_0000,
            0x200_0000,
            0x2000_0000,
        ];
        let letters = letters.iter().fold(0, |a, b| a | b);
        let eofblocks = crate::store::EXT4_EOFBLOCKS_FL;
        assert_eq!(SETTABLE_FLAGS, letters | eofblocks);
        // The filesystem's own are kept, not refused, but for casefold.
        assert_eq!(KEPT_FLAGS & SETTABLE_FLAGS, 0);
    }
}
