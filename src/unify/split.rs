//! Giving guests their own copies of an inode a clone (`cp -al`) shares
//! but unify cannot make an object: excluded, empty or small files, an
//! inode one guest links twice (a cloned hardlink pair), files hashing or
//! linking left alone (sparse, with inode flags, …), and symlinks, FIFOs,
//! sockets and device nodes (made anew, see [`split_node`]). The first guest
//! keeps the inode; every other guest gets one private copy, linked to all
//! of its paths, so its hardlink pairs stay pairs and no write through its
//! mount reaches another guest (invariant 1).
//!
//! Each path is replaced as unify replaces files: under a read lease on
//! the shared inode (a writer anywhere makes us stop and give the name
//! back), by a swap (`RENAME_EXCHANGE`) checked afterwards. The copy is
//! complete and fsync'ed before any path names it (invariant 2).

use super::apply::{break_pending, lease_busy, locked_dir};
use super::dirtimes::DirTimes;
use super::scan::{FileRec, TMP_PREFIX};
use super::{Guest, Problem};
use crate::fs::{cow, sys as fsys};
use crate::sys;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Splits every inode in `inodes` (each: whether its first guest keeps it,
/// and its paths, sorted by guest). Returns how many paths got a copy of
/// their own, the bytes of those copies (regular files' data), and what
/// could not be done.
///
/// Each directory is noted in `dir_times` before its first change, so that
/// its mtime is put back and, if the run is killed, the next run knows the
/// temp names there are ours (stale.rs).
pub fn split_all(
    guests: &[Guest],
    inodes: &[(bool, Vec<FileRec>)],
    dir_times: &DirTimes,
) -> (u64, u64, Vec<Problem>, Vec<u32>) {
    let mut done = 0;
    let mut bytes = 0;
    let mut problems = Vec::new();
    let mut failed = Vec::new();
    for (keep_first, recs) in inodes {
        let skip = usize::from(*keep_first);
        for chunk in recs.chunk_by(|a, b| a.guest == b.guest).skip(skip) {
            let guest = &guests[chunk[0].guest as usize];
            match split_guest(guest, chunk, dir_times) {
                Ok(n) => {
                    done += n;
                    // One copy for the chunk's paths (a symlink's or a
                    // node's costs no data).
                    if n > 0 && chunk[0].stat.is_file() {
                        bytes += chunk[0].stat.size;
                    }
                }
                Err(e) => {
                    failed.push(chunk[0].guest);
                    // The kernel refuses to move an immutable or
                    // append-only file's name.
                    let hint = match e.raw_os_error() == Some(libc::EPERM) {
                        true => {
                            " (if `lsattr` shows it immutable or append-only, `chattr -i -a` it)"
                        }
                        false => "",
                    };
                    problems.push(Problem::new(
                        guest.root.join(&chunk[0].rel),
                        format!(
                            "shared with another guest (a `cp -al` clone?) and could not be given \
                         a copy of its own ({e}); still shared: a write through one guest's \
                         mount shows in the others; the next run tries again{hint}"
                        ),
                    ))
                }
            }
        }
    }
    (done, bytes, problems, failed)
}

/// The entry `rel` beneath the guest root: its directory and name.
fn open_parent(guest: &Guest, rel: &Path) -> io::Result<(OwnedFd, OsString)> {
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    Ok((
        sys::open_beneath(guest.fd.as_fd(), parent, flags)?,
        name.to_os_string(),
    ))
}

fn changed() -> io::Error {
    io::Error::other("it changed while unify ran")
}

/// One guest's paths of the inode: a private copy for all of them.
fn split_guest(guest: &Guest, recs: &[FileRec], dir_times: &DirTimes) -> io::Result<u64> {
    let scanned = &recs[0].stat;
    if !scanned.is_file() {
        return split_node(guest, recs, dir_times);
    }
    let (dir, name) = open_parent(guest, &recs[0].rel)?;
    let flags = libc::O_RDONLY | libc::O_NOATIME;
    let shared = sys::open_regular_at(dir.as_fd(), &name, flags)?;
    match sys::take_read_lease(shared.as_fd()) {
        Ok(()) => {}
        Err(e) if lease_busy(&e) => return Err(io::Error::other("it is open for writing")),
        Err(e) => return Err(e),
    }
    let st = fsys::fstat(shared.as_fd())?;
    // ctime moves as other guests' paths leave the inode; the rest may not.
    let same = (st.st_dev, st.st_ino, st.st_size as u64, st.st_mode)
        == (scanned.dev, scanned.ino, scanned.size, scanned.mode)
        && (st.st_mtime, st.st_mtime_nsec) == (scanned.mtime.sec, i64::from(scanned.mtime.nsec));
    if !same {
        return Err(changed());
    }
    check_dirs(guest, recs)?;
    let copy = fsys::open_tmpfile(dir.as_fd(), 0o600)?;
    cow::fill_copy(
        shared.as_fd(),
        copy.as_fd(),
        dir.as_fd(),
        &st,
        cow::Atime::Own,
    )?;
    if break_pending(shared.as_fd()) {
        return Err(io::Error::other("it was opened for writing while copied"));
    }
    // After the swap, the temp name must hold the shared inode, which no
    // writer waits for.
    let aside = |dir: BorrowedFd, tmp: &OsStr, _: &OsStr| {
        let ours = sys::stat_at(dir, tmp).is_ok_and(|o| (o.dev, o.ino) == (st.st_dev, st.st_ino));
        if !ours {
            Err(changed())
        } else if break_pending(shared.as_fd()) {
            Err(io::Error::other("it was opened for writing"))
        } else {
            Ok(())
        }
    };
    let mut done = 0;
    for rec in recs {
        let (dir, name) = open_parent(guest, &rec.rel)?;
        let dir_rel = rec.rel.parent().unwrap_or(Path::new(""));
        // Unify's own change: the directory reads as before afterwards
        // (invariant 3).
        let noted = dir_times.before_change(rec.guest, dir_rel, dir.as_fd(), None);
        let swapped = swap_in(dir.as_fd(), &name, copy.as_fd(), &aside);
        dir_times.after_change(dir.as_fd(), noted);
        swapped?;
        done += 1;
    }
    Ok(done)
}

/// All paths or none: a name that can be neither swapped nor removed would
/// leave a temp name behind, or the guest's pair split.
fn check_dirs(guest: &Guest, recs: &[FileRec]) -> io::Result<()> {
    for rec in recs {
        if let Some(why) = locked_dir(open_parent(guest, &rec.rel)?.0.as_fd())? {
            return Err(io::Error::other(format!("its directory is {why}")));
        }
    }
    Ok(())
}

/// One guest's paths of a symlink, FIFO, socket or device node: a new node
/// of the same kind, target or device number, owner, mode, xattrs and
/// times, for all of them. No such node is opened (a device's open may
/// act), so no lease can be had on it: after each swap, the node put aside
/// must be the shared one with the owner, mode and mtime it was copied
/// with, and the name must hold the new node, or the swap is undone.
fn split_node(guest: &Guest, recs: &[FileRec], dir_times: &DirTimes) -> io::Result<u64> {
    let scanned = &recs[0].stat;
    let (dir, name) = open_parent(guest, &recs[0].rel)?;
    let st = fsys::stat_at(dir.as_fd(), &name)?;
    let meta = |st: &sys::Stat| (st.dev, st.ino, st.mode, st.uid, st.gid, st.mtime);
    let mtime = sys::Timestamp {
        sec: st.st_mtime,
        nsec: st.st_mtime_nsec as u32,
    };
    let now = (
        st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, mtime,
    );
    if now != meta(scanned) {
        return Err(changed());
    }
    check_dirs(guest, recs)?;
    let target = match st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        true => Some(OsString::from_vec(fsys::readlink_at(dir.as_fd(), &name)?)),
        false => None,
    };
    let attrs = sys::xattr::list_at(dir.as_fd(), &name)?;
    let mut done = 0;
    let mut node: Option<(OwnedFd, (u64, u64))> = None;
    for rec in recs {
        let (dir, name) = open_parent(guest, &rec.rel)?;
        let dir_rel = rec.rel.parent().unwrap_or(Path::new(""));
        let noted = dir_times.before_change(rec.guest, dir_rel, dir.as_fd(), None);
        let swapped = (|| {
            // The first path gets a new node; the others link it.
            let (made, new) = match &node {
                Some((_, key)) => (None, *key),
                None => {
                    let (fd, key, tmp) = make_node(dir.as_fd(), &st, target.as_deref(), &attrs)?;
                    (Some((fd, tmp)), key)
                }
            };
            let aside = |dir: BorrowedFd, tmp: &OsStr, name: &OsStr| {
                let shared = sys::stat_at(dir, tmp).is_ok_and(|o| meta(&o) == now);
                let put = sys::stat_at(dir, name).is_ok_and(|o| (o.dev, o.ino) == new);
                match shared && put {
                    true => Ok(()),
                    false => Err(changed()),
                }
            };
            match made {
                Some((fd, tmp)) => {
                    exchange_in(dir.as_fd(), &tmp, &name, &aside)?;
                    node = Some((fd, new));
                    Ok(())
                }
                None => {
                    let fd = node.as_ref().map(|n| n.0.as_fd()).expect("made first");
                    swap_in(dir.as_fd(), &name, fd, &aside)
                }
            }
        })();
        dir_times.after_change(dir.as_fd(), noted);
        swapped?;
        done += 1;
    }
    Ok(done)
}

/// A new node like `st` (`target` if a symlink) at a temp name in `dir`:
/// an `O_PATH` fd of it, its (dev, ino) and its name. Every call names the
/// entry and never follows it: a guest that swaps the temp name meanwhile
/// changes only its own entry, and the swap that follows is undone.
fn make_node(
    dir: BorrowedFd,
    st: &libc::stat,
    target: Option<&OsStr>,
    attrs: &[(OsString, Vec<u8>)],
) -> io::Result<(OwnedFd, (u64, u64), OsString)> {
    let tmp = temp_name();
    match target {
        Some(target) => fsys::symlink_at(target, dir, &tmp)?,
        // The mode is set below (the umask took from it).
        None => fsys::mknod_at(dir, &tmp, st.st_mode, st.st_rdev)?,
    }
    let filled = (|| {
        let fd = sys::open_at(dir, &tmp, libc::O_PATH, 0)?;
        let new = fsys::fstat(fd.as_fd())?;
        if (new.st_mode & libc::S_IFMT, new.st_nlink) != (st.st_mode & libc::S_IFMT, 1) {
            return Err(changed());
        }
        // Owner first (chown may drop set-id bits and capabilities), then
        // xattrs, mode, times, as a file's copy (cow::fill_copy).
        fsys::chown_at(dir, &tmp, st.st_uid, st.st_gid)?;
        for (attr, value) in attrs.iter().filter(|(a, _)| !cow::is_store_xattr(a)) {
            fsys::set_xattr_at(dir, &tmp, attr, value, 0)?;
        }
        if target.is_none() {
            // A directory's default ACL gave the node an access ACL the
            // shared node may not have.
            let acl = OsStr::new("system.posix_acl_access");
            if !attrs.iter().any(|(a, _)| a == acl) {
                match fsys::remove_xattr_at(dir, &tmp, acl) {
                    Err(e)
                        if !matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) =>
                    {
                        return Err(e)
                    }
                    _ => {}
                }
            }
            fsys::chmod_at(dir, &tmp, st.st_mode & 0o7777)?;
        }
        let atime = fsys::SetTime::At(st.st_atime, st.st_atime_nsec as u32);
        let mtime = fsys::SetTime::At(st.st_mtime, st.st_mtime_nsec as u32);
        fsys::utimens_at(dir, &tmp, atime, mtime)?;
        Ok((fd, (new.st_dev, new.st_ino)))
    })();
    match filled {
        Ok((fd, key)) => Ok((fd, key, tmp)),
        Err(e) => {
            let _ = sys::unlink_at(dir, &tmp);
            Err(e)
        }
    }
}

/// Temp names of splits are numbered from here, far from the linking
/// threads' sequence, so that a killed run's leftover is known as one.
const SPLIT_SEQ: u64 = 1 << 40;

/// Whether `name` is a split's temp name (`.unifs-tmp-PID-SEQ`, SEQ from
/// [`SPLIT_SEQ`]).
pub fn is_split_temp(name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(rest) = name.as_bytes().strip_prefix(TMP_PREFIX.as_bytes()) else {
        return false;
    };
    let seq = rest.rsplit(|&b| b == b'-').next().unwrap_or_default();
    std::str::from_utf8(seq)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|n| n >= SPLIT_SEQ)
}

/// A split's temp name: unify's own form, so that a leftover is found by
/// the next run.
fn temp_name() -> OsString {
    static SEQ: AtomicU64 = AtomicU64::new(SPLIT_SEQ);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!("{TMP_PREFIX}{}-{seq}", std::process::id()))
}

/// What a swap must find afterwards (`dir`, the temp name, the name): the
/// shared inode put aside at the temp name, unchanged; else it is undone
/// with this error.
type Aside<'a> = dyn Fn(BorrowedFd, &OsStr, &OsStr) -> io::Result<()> + 'a;

/// Puts `copy` at `name` in `dir` in place of the shared inode, checked
/// after the swap by `aside`.
fn swap_in(dir: BorrowedFd, name: &OsStr, copy: BorrowedFd, aside: &Aside) -> io::Result<()> {
    let tmp = temp_name();
    sys::link_fd(copy, dir, &tmp)?;
    exchange_in(dir, &tmp, name, aside)
}

/// Swaps the new inode at `tmp` in for `name`'s, checks with `aside`, and
/// removes `tmp` (the shared inode's link in this guest).
fn exchange_in(dir: BorrowedFd, tmp: &OsStr, name: &OsStr, aside: &Aside) -> io::Result<()> {
    if let Err(e) = sys::rename_exchange(dir, tmp, name) {
        let _ = sys::unlink_at(dir, tmp);
        return Err(e);
    }
    if let Err(why) = aside(dir, tmp, name) {
        if let Err(e) = sys::rename_exchange(dir, tmp, name) {
            return Err(io::Error::other(format!(
                "could not swap back ({e}); what the name held is at {}",
                tmp.to_string_lossy()
            )));
        }
        let _ = sys::unlink_at(dir, tmp);
        return Err(why);
    }
    let removed = sys::unlink_at(dir, tmp);
    if let Err(e) = &removed {
        // The temp name holds the shared inode now: a name in this guest
        // that other guests' paths link, which a write through its mount
        // would reach (invariant 1), and that no later run removes (its
        // content is no object). The name gets it back; the copy goes.
        if let Err(back) = sys::rename_exchange(dir, tmp, name) {
            return Err(io::Error::other(format!(
                "could not remove the temp name ({e}) nor swap back ({back}); \
                 the shared inode is still linked at {}",
                tmp.to_string_lossy()
            )));
        }
        let _ = sys::unlink_at(dir, tmp);
    }
    removed
}
