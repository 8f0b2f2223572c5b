//! Link breaking: replace a guest path that links a shared store object by a
//! private copy, so that a change never reaches the shared inode
//! (invariant 1). The copy is complete, with its metadata and fsynced, before
//! a rename puts it in place: the path always names the old or the new file,
//! both complete (invariant 2).

use super::inode::BackingIno;
use super::sys as fsys;
use crate::store::MARKER_XATTR;
use crate::sys;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockWriteGuard};

/// Temp names of copies being put in place.
pub const TEMP_PREFIX: &str = ".unifs-break.";

/// Carried by a copy while it has a temp name, taken off once the rename
/// put it in place: what tells a break's temp file from a guest's file
/// that merely has such a name (a guest cannot set `trusted.unifs.*`
/// through the mount). Only marked files are hidden, and only marked ones
/// are ever removed.
pub const TEMP_XATTR: &str = "trusted.unifs.break";

/// True when `name` in `dir` is a break's temp file: the prefix, and the
/// mark on a regular file (hidden from guests).
pub fn is_temp(dir: BorrowedFd, name: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
        && fsys::get_xattr_at(dir, name, OsStr::new(TEMP_XATTR)).is_ok_and(|v| v.is_some())
}

/// True for a break's temp file in `dir` that no break uses any more: one
/// another (dead) daemon process left (ours carry our pid, and one mount
/// serves a guest at a time), or one of ours that a failed break could not
/// remove.
pub fn is_stale_temp(dir: BorrowedFd, name: &OsStr) -> bool {
    let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
        return false;
    };
    let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
    let unused = pid.is_some_and(|p| p != std::process::id()) || left_behind().contains(name);
    unused && is_temp(dir, name)
}

/// Temp names of this process that a failed break could not remove (its
/// rename failed, then its unlink). Hidden like any temp name, they would
/// keep the guest from removing a directory it sees empty (ENOTEMPTY) for
/// the daemon's life; as stale ones, they go when it does. Names are
/// unique in a process, so the name alone tells them apart.
fn left_behind() -> std::sync::MutexGuard<'static, std::collections::HashSet<OsString>> {
    static LEFT: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<OsString>>> =
        std::sync::OnceLock::new();
    let left = LEFT.get_or_init(Default::default);
    left.lock().unwrap_or_else(|p| p.into_inner())
}

/// True for an xattr of the store, which guests never see and copies never carry.
pub fn is_store_xattr(name: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes()
        .starts_with(crate::store::id::STORE_XATTR_PREFIX)
}

/// True when the open file carries the store's marker. Its presence is
/// what counts, whatever its value: a marker we cannot parse must still
/// never be written through.
pub fn has_marker(fd: BorrowedFd) -> io::Result<bool> {
    Ok(sys::xattr::get_fd(fd, OsStr::new(MARKER_XATTR))?.is_some())
}

/// True when the entry `name` in `dir` is a store object: a regular file
/// carrying the marker (never judged by the link count alone). With
/// `linked_only`, a file with one link is taken for private without reading
/// its xattrs (cheap, for what the guest is shown); before a change, every
/// marked file counts, even one gc unlinked from the store, so that a stale
/// marker never stays on a file the guest changed.
pub fn is_shared(
    dir: BorrowedFd,
    name: &OsStr,
    st: &libc::stat,
    linked_only: bool,
) -> io::Result<bool> {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || (linked_only && st.st_nlink < 2) {
        return Ok(false);
    }
    match fsys::get_xattr_at(dir, name, OsStr::new(MARKER_XATTR)) {
        Ok(v) => Ok(v.is_some()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why the directory open at `dir` (O_PATH will do) refuses a break's
/// rename over one of its entries, if an inode flag is why: `+i` or `+a`
/// (`chattr`), which only the host may take off. `None` if neither, or if
/// the flags cannot be read.
pub fn locked_dir(dir: BorrowedFd) -> Option<sys::DirLock> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let fd = sys::open_at(dir, OsStr::new("."), flags, 0).ok()?;
    sys::inode_flags(fd.as_fd()).ok().and_then(sys::DirLock::of)
}

/// Replaces the entry `name` in `dir` by a private copy if it is a store
/// object, of its first `keep` bytes only (for a truncation). Returns the
/// backing inode the entry names afterwards, and the stat of the file it
/// replaced (the same file where it copied nothing). `dir_changes`: held for
/// reading by every change of a directory the daemon makes for the guest
/// (create, unlink, rename, utimes …); the break holds it for writing from
/// just before its first change of `dir` (and its check that `name` is
/// still the file it copied) until the directory's mtime is put back, so
/// that no such change lands in between unseen (see [`DirMtime`]) nor is
/// undone by the break's rename. `placing`: called with the inode number
/// of each complete, synced copy before anything puts it under a name
/// (`dir_changes` not held), so that the mount can note the rename to come
/// before it happens: a guest's fsync right after it must find the note.
pub fn break_link(
    dir: BorrowedFd,
    name: &OsStr,
    keep: u64,
    dir_changes: &RwLock<()>,
    placing: &mut dyn FnMut(BackingIno),
) -> io::Result<(BackingIno, libc::stat)> {
    for _ in 0..8 {
        // A device node a guest's rename put at the name is never opened.
        let (st, src) = fsys::open_if_regular(dir, name)?;
        let Some(src) = src else {
            return Ok((BackingIno::of(&st), st));
        };
        if !has_marker(src.as_fd())? {
            return Ok((BackingIno::of(&st), st));
        }
        let mut want = st;
        want.st_size = want.st_size.min(keep.try_into().unwrap_or(i64::MAX));
        match copy_and_replace(dir, name, &src, &st, &want, dir_changes, placing) {
            Ok(ino) => return Ok((ino, st)),
            // The name changed under us (unify re-linked it): look again.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EBUSY))
}

/// `st`: the source's stat; `want`: the copy's (its size may be less).
fn copy_and_replace(
    dir: BorrowedFd,
    name: &OsStr,
    src: &OwnedFd,
    st: &libc::stat,
    want: &libc::stat,
    dir_changes: &RwLock<()>,
    placing: &mut dyn FnMut(BackingIno),
) -> io::Result<BackingIno> {
    let mut mtime = DirMtime::new(dir, dir_changes);
    let result = copy_and_rename(dir, name, src, st, want, &mut mtime, placing);
    mtime.restore();
    result
}

fn copy_and_rename(
    dir: BorrowedFd,
    name: &OsStr,
    src: &OwnedFd,
    st: &libc::stat,
    want: &libc::stat,
    mtime: &mut DirMtime,
    placing: &mut dyn FnMut(BackingIno),
) -> io::Result<BackingIno> {
    let mark = |fd: BorrowedFd| sys::xattr::set_fd(fd, OsStr::new(TEMP_XATTR), b"");
    let (tmp, mut tmp_name) = match open_tmpfile(dir) {
        Ok(fd) => {
            mark(fd.as_fd())?;
            (fd, None)
        }
        Err(_) => {
            let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
            mtime.begin();
            let (fd, n) = with_temp_name(|n| sys::open_at(dir, n, flags, 0o600))?;
            mtime.changed();
            if let Err(e) = mark(fd.as_fd()) {
                let _ = sys::unlink_at(dir, &n);
                mtime.changed();
                return Err(e);
            }
            // The copy takes long: the guest's changes of the directory
            // meanwhile must not wait for it.
            mtime.pause();
            (fd, Some(n))
        }
    };
    let result = (|| {
        fill_copy(src.as_fd(), tmp.as_fd(), dir, want, Atime::Mtime)?;
        test_pause();
        let copy = BackingIno::of(&fsys::fstat(tmp.as_fd())?);
        placing(copy);
        let n = match &tmp_name {
            Some(n) => n.clone(),
            None => {
                mtime.begin();
                let ((), n) = with_temp_name(|n| sys::link_fd(tmp.as_fd(), dir, n))?;
                mtime.changed();
                tmp_name = Some(n.clone());
                n
            }
        };
        // From the check to the rename, the guest's renames and unlinks
        // through the mount wait (`dir_changes`, held until the mtime is
        // put back): one in between was undone by our rename, the copy of
        // the old file back at the name. (The named temp file's path let
        // them in: it pauses the hold for the copy.)
        mtime.begin();
        let now = fsys::stat_at(dir, name)?;
        if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        test_rename_pause();
        sys::rename_at(dir, &n, dir, name)?;
        mtime.changed();
        tmp_name = None;
        test_renamed_pause();
        // In place, it is the guest's file. Only now: a copy killed (or
        // power cut) before the rename must still carry the mark, so that
        // the next mount hides and removes it; it was taken off before the
        // rename, which left a full copy under the temp name for the guest
        // to see. Killed here, the mark stays on the guest's file, where
        // nothing reads it (a store xattr: hidden from guests, out of ids
        // and manifests, and no temp name).
        if let Err(e) = sys::xattr::remove_fd(tmp.as_fd(), OsStr::new(TEMP_XATTR)) {
            tracing::debug!("taking the temp mark off a break's copy: {e}");
        }
        Ok(copy)
    })();
    if let Some(n) = tmp_name {
        // Marked again (the failure may have come after the mark went), so
        // that a name left behind is known for ours and removed later.
        let _ = sys::xattr::set_fd(tmp.as_fd(), OsStr::new(TEMP_XATTR), b"");
        mtime.begin();
        if sys::unlink_at(dir, &n).is_ok() {
            mtime.changed();
        } else {
            left_behind().insert(n);
        }
    }
    result
}

/// The atime a copy gets.
pub(crate) enum Atime {
    /// The source's.
    Own,
    /// Its mtime: what the mount shows as a store object's atime (the
    /// object's own moves whenever any guest reads it: invariant 5).
    Mtime,
}

/// Inode flags, owner, data, xattrs (minus the store's), mode, times; then
/// fsync. The owner goes before the xattrs because chown drops
/// security.capability, and the mode after both (chown clears set-id bits).
/// `dir`: the directory the copy is to be put in.
pub(crate) fn fill_copy(
    src: BorrowedFd,
    dst: BorrowedFd,
    dir: BorrowedFd,
    st: &libc::stat,
    atime: Atime,
) -> io::Result<()> {
    // First: btrfs changes NOCOW, xfs an extent size hint, only while a
    // file is empty.
    match_inode_flags(src, dst, dir);
    // The owner before the data: the blocks are charged to the guest's
    // uid as they are written, against its quota (xfs charges a root-owned
    // file to root, and a chown by the daemon, with CAP_FOWNER, would move
    // them past the uid's limit unchecked).
    sys::fchown(dst, st.st_uid, st.st_gid)?;
    let size = st.st_size as u64;
    if size > 0 {
        if sys::ficlone(dst, src).is_ok() {
            // A clone is of the whole file; `st` may ask for its start only.
            fsys::ftruncate(dst, size)?;
        } else {
            copy_with_writeback(src, dst, size)?;
        }
    }
    let attrs = sys::xattr::list_fd(src)?;
    for (attr, value) in &attrs {
        if is_store_xattr(attr) {
            continue;
        }
        sys::xattr::set_fd(dst, attr, value)?;
    }
    // A copy made in a directory with a default ACL got an access ACL from
    // it: a file that had none must not gain one (it would change who may
    // read or write the file).
    let acl = OsStr::new("system.posix_acl_access");
    if !attrs.iter().any(|(a, _)| a == acl) {
        match sys::xattr::remove_fd(dst, acl) {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) => {
                return Err(e)
            }
            _ => {}
        }
    }
    sys::fchmod(dst, st.st_mode & 0o7777)?;
    let mtime = fsys::SetTime::At(st.st_mtime, st.st_mtime_nsec as u32);
    let atime = match atime {
        Atime::Own => fsys::SetTime::At(st.st_atime, st.st_atime_nsec as u32),
        Atime::Mtime => mtime,
    };
    fsys::futimens(dst, atime, mtime)?;
    fsys::fsync(dst, false)
}

/// Gives `dst`, to be renamed into `dir`, the inode flags of `src` that a
/// new file takes from its directory instead ([`sys::copy_inherited_flags`]):
/// normally it clears what the directory handed down, which would show to
/// the guest and keep unify from ever sharing the file again. Where the
/// filesystem refuses, the copy keeps them (logged): the guest's change
/// still goes ahead.
fn match_inode_flags(src: BorrowedFd, dst: BorrowedFd, dir: BorrowedFd) {
    // `dir` may be an O_PATH fd, which takes no ioctl.
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let dir = sys::open_at(dir, OsStr::new("."), flags, 0).ok();
    if let Err(e) = sys::copy_inherited_flags(src, dst, dir.as_ref().map(|d| d.as_fd())) {
        tracing::warn!("a copy keeps inode flags its directory gave it, not its source's: {e}");
    }
}

/// How much data is copied before its writeback is started.
const WRITEBACK_CHUNK: u64 = 2 << 20;

/// Copies `len` bytes, data segments only (holes stay holes: a sparse file
/// must not become a fully allocated one, see [`sys::copy_sparse`]), in
/// chunks, and starts the disk writeback of each chunk as soon as it is
/// copied, so that the disk writes while the next chunk is copied and the
/// final fsync has little left to wait for (a break of a large file then
/// costs about the longer of the copy and the writeback instead of their
/// sum).
fn copy_with_writeback(src: BorrowedFd, dst: BorrowedFd, len: u64) -> io::Result<()> {
    sys::copy_sparse(src, dst, len, WRITEBACK_CHUNK, |off, n| {
        // Only a head start for the fsync, which reports any write error.
        let _ = fsys::start_writeback(dst, off, n);
    })
}

/// Sleeps for `UNIFS_TEST_BREAK_PAUSE_MS` (read once; unset: not at all)
/// after a break's copy is made and before its first change of the
/// directory: the tests' way to land a guest's change in the copy's time.
fn test_pause() {
    crate::sys::test_pause!("UNIFS_TEST_BREAK_PAUSE_MS");
}

/// Sleeps for `UNIFS_TEST_BREAK_RENAME_PAUSE_MS` (read once; unset: not
/// at all) between a break's check that the name is still the file it
/// copied and its rename over that name.
fn test_rename_pause() {
    crate::sys::test_pause!("UNIFS_TEST_BREAK_RENAME_PAUSE_MS");
}

/// Sleeps for `UNIFS_TEST_BREAK_RENAMED_PAUSE_MS` (read once; unset: not
/// at all) right after a break's rename put its copy under the name.
fn test_renamed_pause() {
    crate::sys::test_pause!("UNIFS_TEST_BREAK_RENAMED_PAUSE_MS");
}

/// An unnamed temp file in `dir` (O_TMPFILE), or EOPNOTSUPP when
/// `UNIFS_TEST_BREAK_NO_TMPFILE` is set (read once): the tests' way to take
/// the named temp file of a filesystem without O_TMPFILE.
fn open_tmpfile(dir: BorrowedFd) -> io::Result<OwnedFd> {
    if crate::sys::test_hook!("UNIFS_TEST_BREAK_NO_TMPFILE").is_some() {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    fsys::open_tmpfile(dir, 0o600)
}

/// The mtime of the directory a break works in, put back afterwards. On a
/// local filesystem a write to a file (or its chmod, …) never changes its
/// directory's mtime; the break's temp name and rename are the daemon's
/// doing, not the guest's. The mtime put back is the one the directory had
/// right before our first change of it, so that a change the guest made
/// while the copy was being made (before any change of ours) keeps its
/// mtime; and it is put back only if the directory's mtime and ctime are
/// still those our own last change left: a change somebody else made in
/// between moved the ctime at least, and keeps its mtime. The ctime cannot
/// be put back.
///
/// Times alone cannot tell two changes in one clock tick apart (the
/// kernel's coarse clock stamps both alike), so the daemon's own changes of
/// directories for the guest are kept out altogether from our first change
/// to the mtime's restore: they hold `lock` for reading, we hold it for
/// writing meanwhile (not during a copy, which takes long). Only a change
/// on the host, behind the mount's back, in the same tick as one of ours,
/// can still go unseen.
struct DirMtime<'a> {
    dir: BorrowedFd<'a>,
    lock: &'a RwLock<()>,
    guard: Option<RwLockWriteGuard<'a, ()>>,
    /// The mtime to put back.
    target: Option<sys::Timestamp>,
    /// The (mtime, ctime) our last change of the directory left.
    ours: Option<(sys::Timestamp, sys::Timestamp)>,
}

impl<'a> DirMtime<'a> {
    fn new(dir: BorrowedFd<'a>, lock: &'a RwLock<()>) -> DirMtime<'a> {
        DirMtime {
            dir,
            lock,
            guard: None,
            target: None,
            ours: None,
        }
    }

    fn now(dir: BorrowedFd) -> Option<(sys::Timestamp, sys::Timestamp)> {
        sys::fstat(dir).ok().map(|st| (st.mtime, st.ctime))
    }

    fn hold(&mut self) {
        if self.guard.is_none() {
            self.guard = Some(self.lock.write().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Right before a change of ours: the mtime to put back is the one
    /// the directory has now, unless our last change left it as it is.
    fn begin(&mut self) {
        self.hold();
        let now = Self::now(self.dir);
        if self.ours.is_none() || now != self.ours {
            self.target = now.map(|(mtime, _)| mtime);
        }
    }

    /// After a change of ours (or an attempt).
    fn changed(&mut self) {
        self.ours = Self::now(self.dir);
    }

    /// Lets the guest's changes of directories go ahead until the next
    /// [`Self::begin`].
    fn pause(&mut self) {
        self.guard = None;
    }

    fn restore(mut self) {
        let Some(ours) = self.ours else {
            return;
        };
        self.hold();
        let Some(target) = self.target else {
            return;
        };
        if target != ours.0 && Self::now(self.dir) == Some(ours) {
            if let Err(e) = sys::set_mtime(self.dir, target) {
                tracing::debug!("could not put a directory's mtime back: {e}");
            }
        }
    }
}

fn temp_name() -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!("{TEMP_PREFIX}{}.{n}", std::process::id()))
}

/// A temp name with a random number: a guest can make every name of the
/// counter's to come, but cannot guess these.
fn random_temp_name() -> OsString {
    let n = crate::sys::random_u64();
    OsString::from(format!("{TEMP_PREFIX}{}.{n}", std::process::id()))
}

/// `make` with a fresh temp name, and on EEXIST (a guest may have a file
/// of its own by that name) with a random one, up to 100 names in all.
fn with_temp_name<T>(mut make: impl FnMut(&OsStr) -> io::Result<T>) -> io::Result<(T, OsString)> {
    let mut n = temp_name();
    for _ in 1..100 {
        match make(&n) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => n = random_temp_name(),
            r => return r.map(|t| (t, n)),
        }
    }
    make(&n).map(|t| (t, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device node renamed to a shared file's name before its break (a
    /// guest's rename racing its own write): the break looks, it does not
    /// open it. The daemon is outside the guest's devices group, so the
    /// driver's open would act for the guest on the host's device. Before,
    /// it was opened (the driver's ENXIO came back).
    #[test]
    fn a_break_opens_no_device_put_at_the_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = sys::open_dir(tmp.path()).unwrap();
        let Some(_node) = fsys::driverless_node(tmp.path()) else {
            eprintln!("skipped: no free major, or mknod refused (not root)");
            return;
        };
        let dir_changes = RwLock::new(());
        let broken = break_link(
            dir.as_fd(),
            OsStr::new("dev"),
            u64::MAX,
            &dir_changes,
            &mut |_| {},
        );
        let (_, st) = broken.expect("the device node was opened");
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR);
    }

    #[test]
    fn only_marked_temp_files_of_other_processes_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let d = d.as_fd();
        let other = OsStr::new(".unifs-break.1.7");
        let ours = temp_name();
        for n in [
            other,
            &ours,
            OsStr::new(".unifs-break.x.7"),
            OsStr::new("unifs-break.1.7"),
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        // A guest's own files by such names: never taken for ours.
        assert!(!is_temp(d, other) && !is_stale_temp(d, other));
        for n in [
            other,
            &ours,
            OsStr::new(".unifs-break.x.7"),
            OsStr::new("unifs-break.1.7"),
        ] {
            let f = std::fs::File::open(dir.path().join(n)).unwrap();
            // trusted.* needs root; without it this test proves less.
            if sys::xattr::set_fd(f.as_fd(), OsStr::new(TEMP_XATTR), b"").is_err() {
                return;
            }
        }
        assert!(is_temp(d, other) && is_temp(d, &ours));
        assert!(is_stale_temp(d, other) == (std::process::id() != 1));
        assert!(!is_stale_temp(d, &ours));
        assert!(!is_stale_temp(d, OsStr::new(".unifs-break.x.7")));
        assert!(!is_temp(d, OsStr::new("unifs-break.1.7")));
    }

    #[test]
    fn store_xattrs_are_recognised_by_prefix() {
        assert!(is_store_xattr(OsStr::new("trusted.unifs.object")));
        assert!(!is_store_xattr(OsStr::new("trusted.overlay.opaque")));
        assert!(!is_store_xattr(OsStr::new("user.unifs.object")));
    }
}
