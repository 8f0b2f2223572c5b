//! Hashing, only where it can pay: a file needs an object id only if another
//! file or an existing object has the same size, mode, owner and mtime
//! (files differing in any of those can never share an inode). A file whose
//! (dev, ino, size, mtime, ctime) is in the hash cache is not read again.

use super::scan::FileRec;
use super::{Guest, Problem};
use crate::catalog::{CacheRow, Map, ObjectRow};
use crate::store::id::{hash_maybe, hash_reader};
use crate::store::{ContentHash, ObjectId, ObjectMeta};
use crate::sys::{self, Stat, Timestamp};
use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// What two files must share before their contents are worth comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetaKey {
    size: u64,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: Option<Timestamp>,
}

impl MetaKey {
    pub fn of_stat(st: &Stat, ignore_mtime: bool) -> MetaKey {
        MetaKey {
            size: st.size,
            perm: st.perm(),
            uid: st.uid,
            gid: st.gid,
            // As the id has it (ObjectMeta::of_fd).
            mtime: (!ignore_mtime).then_some(st.mtime.instant()),
        }
    }

    pub fn of_object(o: &ObjectRow, ignore_mtime: bool) -> MetaKey {
        MetaKey {
            size: o.size,
            perm: o.perm,
            uid: o.uid,
            gid: o.gid,
            mtime: (!ignore_mtime).then_some(o.mtime.instant()),
        }
    }
}

/// The candidates worth hashing, in buckets of one key each: those that
/// share their key with another candidate or with an object. Files of one
/// object id always fall in one bucket (the id covers the key), so each
/// bucket can be hashed, planned and linked on its own.
pub fn buckets(
    candidates: &[FileRec],
    object_keys: &HashSet<MetaKey>,
    ignore_mtime: bool,
) -> Vec<Vec<usize>> {
    // Sorted by key (largest files first, so that the last bucket the pool
    // takes is small), then cut into runs of one key.
    let key = |i: usize| MetaKey::of_stat(&candidates[i].stat, ignore_mtime);
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_unstable_by_key(|&i| {
        let k = key(i);
        (std::cmp::Reverse(k.size), k.perm, k.uid, k.gid, k.mtime, i)
    });
    order
        .chunk_by(|&a, &b| key(a) == key(b))
        .filter(|run| run.len() > 1 || object_keys.contains(&key(run[0])))
        .map(|run| run.to_vec())
        .collect()
}

/// How many candidates hashing leaves unread (no other file or object has
/// their size, mode, owner and mtime) though a candidate of another guest
/// has their path and size: most likely the same file, kept apart by its
/// mtime, mode or owner. The second figure: those whose mode and owner
/// match such a file (only the mtime differs). Counted, not hashed, to
/// say why nothing was shared.
pub fn apart_by_metadata(candidates: &[FileRec], buckets: &[Vec<usize>]) -> (u64, u64) {
    let mut unread = vec![true; candidates.len()];
    for &i in buckets.iter().flatten() {
        unread[i] = false;
    }
    let guest = |i: usize| candidates[i].guest;
    // One guest, or all read: none (a re-run of one guest pays nothing).
    let one_guest = (0..candidates.len()).all(|i| guest(i) == guest(0));
    if one_guest || !unread.contains(&true) {
        return (0, 0);
    }
    let path = |i: usize| {
        let c = &candidates[i];
        (c.rel.as_os_str().as_encoded_bytes(), c.stat.size)
    };
    let owner = |i: usize| {
        let s = &candidates[i].stat;
        (s.perm(), s.uid, s.gid)
    };
    // Each path's files side by side, those of one mode and owner within.
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_unstable_by(|&a, &b| (path(a), owner(a)).cmp(&(path(b), owner(b))));
    let two_guests = |run: &[usize]| run.iter().any(|&i| guest(i) != guest(run[0]));
    let unread_in = |run: &[usize]| run.iter().filter(|&&i| unread[i]).count() as u64;
    let (mut apart, mut mtime_only) = (0, 0);
    for run in order.chunk_by(|&a, &b| path(a) == path(b)) {
        // Every file of a path two guests hold has one of another guest.
        if two_guests(run) {
            apart += unread_in(run);
            let same_owner = run.chunk_by(|&a, &b| owner(a) == owner(b));
            mtime_only += same_owner
                .filter(|s| two_guests(s))
                .map(unread_in)
                .sum::<u64>();
        }
    }
    (apart, mtime_only)
}

/// The id of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Hashed {
    pub file: usize,
    pub id: ObjectId,
    /// Only some files are read for it (see [`hash_cached`]).
    pub content: Option<ContentHash>,
    /// False when it came from the cache (or from another path of its
    /// inode, see `from_cache`).
    pub read: bool,
    /// True when the hash cache gave it.
    pub from_cache: bool,
    /// Someone had it open for writing when it was read. Writes through a
    /// shared mapping whose pages are already dirty change neither mtime
    /// nor ctime, so its stat cannot vouch for this hash: it is not kept.
    pub writers: bool,
}

/// Hashes candidate `i`, or takes its ids from the cache where that is valid.
/// A file read comes with the fd it was read through (linking may use it).
/// Its content hash is computed only if `content`: most files read become
/// links to an object, which needs it once (half the hashing work).
pub fn hash_cached(
    guests: &[Guest],
    candidates: &[FileRec],
    i: usize,
    cache: &Map<(u64, u64), CacheRow>,
    ignore_mtime: bool,
    content: bool,
) -> Result<Read, Problem> {
    let rec = &candidates[i];
    let st = &rec.stat;
    if let Some(row) = cache.get(&(st.dev, st.ino)) {
        if cache_valid(row, st) {
            let hashed = Hashed {
                file: i,
                id: row.object_id,
                content: Some(row.content_hash),
                read: false,
                from_cache: true,
                writers: false,
            };
            return Ok(Read::Hashed(hashed, None));
        }
    }
    let guest = &guests[rec.guest as usize];
    let read = match hash_one(guest, rec, ignore_mtime, content) {
        Ok(read) => read,
        Err(e) if gone(&e) => return Ok(Read::Gone),
        Err(e) if is_changed(&e) => {
            let what = "changed while unify ran; left as it was";
            return Ok(Read::Changed(Problem::new(guest.root.join(&rec.rel), what)));
        }
        Err(e) => {
            let what = format!("cannot read it to hash it ({e}); left as it was");
            return Err(Problem::new(guest.root.join(&rec.rel), what));
        }
    };
    Ok(match read {
        HashOne::Done(id, content, fd, writers) => {
            let hashed = Hashed {
                file: i,
                id,
                content,
                read: true,
                from_cache: false,
                writers,
            };
            Read::Hashed(hashed, Some(fd))
        }
        HashOne::Flagged => {
            left_alone(
                guest,
                rec,
                "has inode flags (chattr), which a hardlink would share",
            );
            Read::Flagged
        }
        HashOne::Sparse => {
            left_alone(guest, rec, "has holes (sparse)");
            Read::Sparse
        }
    })
}

/// Names a file hashing left alone, at `-v` (the summary only counts them,
/// and they are no problem: nothing is wrong with them).
fn left_alone(guest: &Guest, rec: &FileRec, why: &str) {
    let path = guest.root.join(&rec.rel);
    tracing::info!("{}: {why}; left alone, unread", sys::shown(&path));
}

/// What [`hash_cached`] made of a candidate.
pub enum Read {
    /// Its ids, and the fd it was read through (none from the cache).
    Hashed(Hashed, Option<OwnedFd>),
    /// It has inode flags (`chattr`): left alone.
    Flagged,
    /// It has holes (`SEEK_HOLE` before its end): left alone, unread.
    Sparse,
    /// Its name is gone (deleted or moved by a running guest since the
    /// walk): nothing to do, as for a file made after the walk.
    Gone,
    /// It changed since the walk, or while it was read: left alone, and
    /// counted and reported as apply's own such skips are.
    Changed(Problem),
}

/// The error of a file found changed since the walk (see [`is_changed`]).
#[derive(Debug)]
struct Changed;

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("changed while unify ran")
    }
}

impl std::error::Error for Changed {}

fn is_changed(e: &std::io::Error) -> bool {
    // The walk found a regular file there.
    e.get_ref().is_some_and(|e| e.is::<Changed>()) || sys::is_not_regular(e)
}

/// True when `e` says the name (or a directory on its way) is gone.
pub fn gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

pub fn cache_valid(row: &CacheRow, st: &Stat) -> bool {
    row.size == st.size
        && row.mtime_ns == st.mtime.as_nanos() as i64
        && row.ctime_ns == st.ctime.as_nanos() as i64
}

pub fn cache_row(st: &Stat, id: ObjectId, content: ContentHash) -> CacheRow {
    CacheRow {
        size: st.size,
        mtime_ns: st.mtime.as_nanos() as i64,
        ctime_ns: st.ctime.as_nanos() as i64,
        object_id: id,
        content_hash: content,
    }
}

/// What [`hash_one`] made of a file.
enum HashOne {
    /// Its ids, the fd read, and whether it had writers (see `Hashed`).
    Done(ObjectId, Option<ContentHash>, OwnedFd, bool),
    Flagged,
    Sparse,
}

/// Opens the file beneath its guest root (never through a symlink), checks
/// it is the inode that was scanned, unchanged, and hashes it, unless it
/// has inode flags or holes: those are left alone.
fn hash_one(
    guest: &Guest,
    rec: &FileRec,
    ignore_mtime: bool,
    content: bool,
) -> std::io::Result<HashOne> {
    let fd = guest.open_for_reading(&rec.rel)?;
    let st = stat_unchanged(&fd, rec)?;
    if crate::store::has_inode_flags(fd.as_fd())? {
        return Ok(HashOne::Flagged);
    }
    // Holes read as zeros: a guest's `truncate -s 16T` (free to make) would
    // cost every run hours of reading and hashing, and save no disk.
    if sys::has_hole(fd.as_fd(), st.size)? {
        return Ok(HashOne::Sparse);
    }
    // Before the read: a writer that comes later changes ctime with its
    // first write (or mapped page), which the next run sees.
    let writers = has_writers(fd.as_fd());
    let meta = ObjectMeta::of_fd(fd.as_fd(), &st, ignore_mtime)?;
    let file = File::from(fd);
    let (id, content) = hash_maybe(&meta, &file, content).map_err(|e| {
        // Read short or long (a writer truncated or appended), or failed
        // after a change: the file changed, nothing is wrong with it.
        match sys::fstat(file.as_fd()) {
            Ok(now) if !now.unchanged(&rec.stat) => std::io::Error::other(Changed),
            _ => e,
        }
    })?;
    Ok(HashOne::Done(id, content, file.into(), writers))
}

/// Whether anyone has the file open for writing (or mapped shared and
/// writable): a read lease cannot be had then. The lease is let go at once,
/// so a writer opening it meanwhile waits only for that. Not known (no
/// lease to be had here): taken as yes, which costs only a re-read.
fn has_writers(fd: BorrowedFd) -> bool {
    sys::take_read_lease(fd).is_err() || sys::release_lease(fd).is_err()
}

/// Both digests of the file open at `fd` (`st` its stat), read from its
/// start whatever its offset: for a file hashed without its content hash.
pub fn both_of_fd(
    fd: &OwnedFd,
    st: &Stat,
    ignore_mtime: bool,
) -> std::io::Result<(ObjectId, ContentHash)> {
    let meta = ObjectMeta::of_fd(fd.as_fd(), st, ignore_mtime)?;
    let file = File::from(fd.try_clone()?);
    hash_reader(&meta, ReadAt { file: &file, at: 0 })
}

/// Both digests of candidate `rec`, for one hashed without its content
/// hash: through `fd` if it was kept, else opened again and checked as
/// hashing checks it.
pub fn both_of(
    guest: &Guest,
    rec: &FileRec,
    fd: Option<&OwnedFd>,
    ignore_mtime: bool,
) -> std::io::Result<(ObjectId, ContentHash)> {
    let opened;
    let fd = match fd {
        Some(fd) => fd,
        None => {
            opened = guest.open_for_reading(&rec.rel)?;
            &opened
        }
    };
    let st = stat_unchanged(fd, rec)?;
    both_of_fd(fd, &st, ignore_mtime)
}

/// The stat of `fd`, which must be `rec`'s inode as scanned.
fn stat_unchanged(fd: &OwnedFd, rec: &FileRec) -> std::io::Result<Stat> {
    let st = sys::fstat(fd.as_fd())?;
    if !st.unchanged(&rec.stat) {
        return Err(std::io::Error::other(Changed));
    }
    Ok(st)
}

/// Reads a file from `at` on, by offset.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::INODE_FLAGS;
    use std::path::PathBuf;

    fn rec(size: u64, uid: u32) -> FileRec {
        let t = Timestamp { sec: 5, nsec: 0 };
        FileRec {
            guest: 0,
            rel: PathBuf::from("f"),
            stat: Stat {
                dev: 1,
                ino: 0,
                mode: 0o100644,
                nlink: 1,
                uid,
                gid: 0,
                size,
                mtime: t,
                ctime: t,
            },
        }
    }

    #[test]
    fn buckets_hold_files_of_one_key_that_something_else_shares() {
        // 0 and 2 share a key; 1 differs only in owner; 3 is alone but an
        // object has its key; 4 is alone.
        let c = vec![rec(10, 0), rec(10, 1), rec(10, 0), rec(99, 0), rec(7, 0)];
        let objects: HashSet<MetaKey> = [MetaKey::of_stat(&c[3].stat, false)].into();
        let b = buckets(&c, &objects, false);
        // Largest files first.
        assert_eq!(b, vec![vec![3], vec![0, 2]]);
        assert!(buckets(&c, &HashSet::new(), false) == vec![vec![0, 2]]);
    }

    #[test]
    fn files_of_one_path_and_size_in_two_guests_kept_apart_are_counted() {
        // 0 (guest 0) and 1 (guest 1): one path and size, another owner; 2
        // (guest 1), that path again but another mtime only; 3, alone.
        let mut c = vec![rec(10, 0), rec(10, 1), rec(10, 0), rec(11, 0)];
        c[1].guest = 1;
        c[2].guest = 1;
        c[2].stat.mtime = Timestamp { sec: 6, nsec: 0 };
        c[3].rel = PathBuf::from("g");
        let b = buckets(&c, &HashSet::new(), false);
        assert_eq!(b, Vec::<Vec<usize>>::new());
        // 0 matches 2 in all but mtime; 1 matches none of guest 0 in owner.
        assert_eq!(apart_by_metadata(&c, &b), (3, 2));
        // Hashed files are not counted: hashing knows what they are.
        assert_eq!(apart_by_metadata(&c, &[vec![0, 3]]), (2, 1));
    }

    #[test]
    fn fs_verity_counts_as_an_inode_flag_and_exts_own_do_not() {
        // FS_VERITY_FL ('V' in lsattr): a hardlink shares it (the object
        // would become read-only and verity-checked for every guest, or a
        // guest's verity file a link to a plain object), the id covers it not.
        const FS_VERITY_FL: u32 = 0x0010_0000;
        assert_ne!(INODE_FLAGS & FS_VERITY_FL, 0);
        // ext4's own flags must not count.
        const FS_EXTENT_FL: u32 = 0x0008_0000;
        const FS_INLINE_DATA_FL: u32 = 0x1000_0000;
        assert_eq!(INODE_FLAGS & (FS_EXTENT_FL | FS_INLINE_DATA_FL), 0);
    }
}
