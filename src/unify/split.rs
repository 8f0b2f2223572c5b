//! Giving guests their own copies of an inode a clone (`cp -al`) shares
//! but unify cannot make an object: excluded, empty or small files, or an
//! inode one guest links twice (a cloned hardlink pair). The first guest
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
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Splits every inode in `inodes` (each: whether its first guest keeps it,
/// and its paths, sorted by guest). Returns how many paths got a copy of
/// their own, and what could not be done.
///
/// Each directory is noted in `dir_times` before its first change, so that
/// its mtime is put back and, if the run is killed, the next run knows the
/// temp names there are ours (stale.rs).
pub fn split_all(
    guests: &[Guest],
    inodes: &[(bool, Vec<FileRec>)],
    dir_times: &DirTimes,
) -> (u64, Vec<Problem>, Vec<u32>) {
    let mut done = 0;
    let mut problems = Vec::new();
    let mut failed = Vec::new();
    for (keep_first, recs) in inodes {
        let skip = usize::from(*keep_first);
        for chunk in recs.chunk_by(|a, b| a.guest == b.guest).skip(skip) {
            let guest = &guests[chunk[0].guest as usize];
            match split_guest(guest, chunk, dir_times) {
                Ok(n) => done += n,
                Err(e) => {
                    failed.push(chunk[0].guest);
                    problems.push(Problem::new(
                        guest.root.join(&chunk[0].rel),
                        format!(
                            "shared with another guest (a `cp -al` clone?) and could not be given \
                         a copy of its own ({e}); still shared: a write through one guest's \
                         mount shows in the others; the next run tries again"
                        ),
                    ))
                }
            }
        }
    }
    (done, problems, failed)
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
    let (dir, name) = open_parent(guest, &recs[0].rel)?;
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOATIME;
    let shared = sys::open_at(dir.as_fd(), &name, flags, 0)?;
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
    // All paths or none: a name that can be neither swapped nor removed
    // would leave a temp name behind, or the guest's pair split.
    for rec in recs {
        if let Some(why) = locked_dir(open_parent(guest, &rec.rel)?.0.as_fd())? {
            return Err(io::Error::other(format!("its directory is {why} (chattr)")));
        }
    }
    let copy = fsys::open_tmpfile(dir.as_fd(), 0o600)?;
    cow::fill_copy(shared.as_fd(), copy.as_fd(), &st, cow::Atime::Own)?;
    if break_pending(shared.as_fd()) {
        return Err(io::Error::other("it was opened for writing while copied"));
    }
    let mut done = 0;
    for rec in recs {
        let (dir, name) = open_parent(guest, &rec.rel)?;
        let dir_rel = rec.rel.parent().unwrap_or(Path::new(""));
        // Unify's own change: the directory reads as before at the end
        // (invariant 3).
        let noted = dir_times.before_change(rec.guest, dir_rel, dir.as_fd(), None);
        let swapped = swap_in(dir.as_fd(), &name, copy.as_fd(), shared.as_fd(), &st);
        dir_times.after_change(dir.as_fd(), noted);
        swapped?;
        done += 1;
    }
    Ok(done)
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

/// Puts `copy` at `name` in `dir` in place of the shared inode (`shared`,
/// `st`), checked after the swap.
fn swap_in(
    dir: BorrowedFd,
    name: &OsString,
    copy: BorrowedFd,
    shared: BorrowedFd,
    st: &libc::stat,
) -> io::Result<()> {
    // Unify's own temp-name form: a leftover is found by the next run.
    static SEQ: AtomicU64 = AtomicU64::new(SPLIT_SEQ);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = OsString::from(format!("{TMP_PREFIX}{}-{seq}", std::process::id()));
    sys::link_fd(copy, dir, &tmp)?;
    if let Err(e) = sys::rename_exchange(dir, &tmp, name) {
        let _ = sys::unlink_at(dir, &tmp);
        return Err(e);
    }
    let out = sys::stat_at(dir, &tmp);
    let ours = out.is_ok_and(|o| (o.dev, o.ino) == (st.st_dev, st.st_ino));
    if !ours || break_pending(shared) {
        if let Err(e) = sys::rename_exchange(dir, &tmp, name) {
            return Err(io::Error::other(format!(
                "could not swap back ({e}); what the name held is at {}",
                tmp.to_string_lossy()
            )));
        }
        let _ = sys::unlink_at(dir, &tmp);
        return Err(if ours {
            io::Error::other("it was opened for writing")
        } else {
            changed()
        });
    }
    let removed = sys::unlink_at(dir, &tmp);
    if let Err(e) = &removed {
        // The temp name holds the shared inode now: a name in this guest
        // that other guests' paths link, which a write through its mount
        // would reach (invariant 1), and that no later run removes (its
        // content is no object). The name gets it back; the copy goes.
        if let Err(back) = sys::rename_exchange(dir, &tmp, name) {
            return Err(io::Error::other(format!(
                "could not remove the temp name ({e}) nor swap back ({back}); \
                 the shared inode is still linked at {}",
                tmp.to_string_lossy()
            )));
        }
        let _ = sys::unlink_at(dir, &tmp);
    }
    removed
}
