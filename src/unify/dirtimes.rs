//! Directory mtimes across a run. Invariant 3 says every guest tree reads as
//! before unify, mtimes included, but replacing a file links a temp name next
//! to it, swaps the two and unlinks the temp name: three changes of its
//! directory, each setting the directory's mtime to now. So the first time a
//! directory is about to change its mtime is noted, after each change the
//! mtime that change left, and at the end of the apply phase every directory
//! gets its first mtime back (its atime is left alone: unify never lists a
//! directory while linking; its ctime cannot be put back).
//!
//! Replacements in one directory run on several threads and in many buckets,
//! so the notes live in a small sharded map keyed by the directory's (device,
//! inode). At the end each directory is opened again beneath its guest root
//! (never through a symlink) and must still be the same inode.
//!
//! A directory gets its mtime back only if it still has the one our own last
//! change left. The guest may be running: if it changed the directory after
//! our last change, the mtime it set is the true one and stays. (A change it
//! made between two of ours, or in the same clock tick as our last, cannot be
//! told from ours and loses its mtime; that needs a guest writing into a
//! directory at the microsecond unify replaces a file in it.)

use super::dirjournal::{Journal, Slot};
use super::listings::{DirKey, Listing};
use super::{worker_pool, Guest, Problem};
use crate::sys::{self, Timestamp};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;

type Key = (u64, u64);

/// What is known of one directory unify changed.
struct Seen {
    guest: u32,
    rel: PathBuf,
    /// Its mtime before our first change.
    before: Timestamp,
    /// The latest mtime one of our changes left (none yet: the mtime before
    /// may be later than any of ours, a date in the future).
    ours: Option<Timestamp>,
    /// Its record on disk, for the next run if this one is killed.
    slot: Option<Slot>,
    /// Its file handle: the directory wherever the guest renames it to
    /// before the end of the run (its path then names another or none).
    handle: Option<Box<[u8]>>,
}

#[derive(Default)]
pub struct DirTimes {
    shards: [Mutex<HashMap<Key, Seen>>; SHARDS],
    journal: Option<Journal>,
}

impl DirTimes {
    fn shard(&self, key: Key) -> MutexGuard<'_, HashMap<Key, Seen>> {
        let i = (key.0 ^ key.1) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before a change of the entries of `dir` (device and inode `key`, if
    /// known), which is `rel` beneath the root of guest `guest`. Only the first call
    /// for a directory counts: any later one of another thread comes after
    /// that first note (notes are taken before the change), so it never
    /// sees a changed mtime first. Returns what [`Self::after_change`] takes.
    #[must_use]
    pub fn before_change(
        &self,
        guest: u32,
        rel: &Path,
        dir: BorrowedFd,
        key: Option<Key>,
    ) -> Option<Key> {
        if let Some(k) = key {
            if let Some(seen) = self.shard(k).get(&k) {
                // Noted already: no stat needed.
                seen.slot.iter().for_each(Slot::begin);
                return Some(k);
            }
        }
        let st = sys::fstat(dir).ok()?;
        let key = (st.dev, st.ino);
        let mut shard = self.shard(key);
        let seen = shard.entry(key).or_insert_with(|| Seen {
            guest,
            rel: rel.to_path_buf(),
            before: st.mtime,
            ours: None,
            slot: (self.journal.as_ref()).and_then(|j| j.note(key.0, key.1, st.mtime, guest, rel)),
            handle: sys::file_handle(dir),
        });
        seen.slot.iter().for_each(Slot::begin);
        Some(key)
    }

    /// After a change of `dir`'s entries, whatever came of it; `noted` is
    /// what `before_change` returned. (If the mtime cannot be had, the
    /// record keeps the change as under way: see `dirjournal.rs`.)
    pub fn after_change(&self, dir: BorrowedFd, noted: Option<Key>) {
        let Some(key) = noted else { return };
        let Ok(st) = sys::fstat(dir) else { return };
        if (st.dev, st.ino) != key {
            return;
        }
        if let Some(seen) = self.shard(key).get_mut(&key) {
            let ours = seen.ours.map_or(st.mtime, |o| o.max(st.mtime));
            seen.ours = Some(ours);
            if let Some(slot) = &seen.slot {
                slot.end(ours);
            }
        }
    }

    /// Keeps the notes on disk too (see `dirjournal.rs`).
    pub fn keep_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// Puts back the mtime of every directory noted (and forgets them, and
    /// their record on disk). Returns the directories where that failed,
    /// and the listings of those still there, read afresh for the next run
    /// (see `listings.rs`): the walk's are out of date.
    pub fn restore(&self, guests: &[Guest]) -> (Vec<Problem>, Vec<Listing>) {
        let seen: Vec<(Key, Seen)> = self
            .shards
            .iter()
            .flat_map(|s| {
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *s)
            })
            .collect();
        let done = worker_pool().install(|| {
            seen.par_iter()
                .map(|(key, s)| {
                    let guest = &guests[s.guest as usize];
                    restore_one(guest, *key, s).map_err(|e| {
                        Problem::new(
                            guest.root.join(&s.rel),
                            format!("cannot put the directory's mtime back: {e}"),
                        )
                    })
                })
                .fold(
                    || (Vec::new(), Vec::new()),
                    |(mut problems, mut listings), r| {
                        match r {
                            Ok(l) => listings.extend(l),
                            Err(p) => problems.push(p),
                        }
                        (problems, listings)
                    },
                )
                .reduce(
                    || (Vec::new(), Vec::new()),
                    |(mut p, mut l), (p2, l2)| {
                        p.extend(p2);
                        l.extend(l2);
                        (p, l)
                    },
                )
        });
        if let Some(j) = &self.journal {
            j.remove();
        }
        done
    }
}

fn restore_one(guest: &Guest, key: Key, seen: &Seen) -> io::Result<Option<Listing>> {
    let (dir, st, at_rel) = match open_noted(guest.fd.as_fd(), &seen.rel, key)? {
        Some((dir, st)) => (dir, st, true),
        // Renamed by the guest since (`mv d d.old`): the same directory,
        // found by its handle, still reads as before. (Its path, another
        // directory or none, gets no listing.)
        None => match by_handle(guest, key, seen) {
            Some((dir, st)) => (dir, st, false),
            None => return Ok(None),
        },
    };
    // Only over an mtime of ours (so, one from this run): writing the old
    // mtime over a newer change of the guest's would hide that change from
    // whatever trusts a directory's mtime (make, caches of listings).
    if Some(st.mtime) == seen.ours && st.mtime != seen.before {
        sys::set_mtime(dir.as_fd(), seen.before)?;
    }
    Ok(if at_rel {
        relist(dir.as_fd(), seen)
    } else {
        None
    })
}

/// The noted directory by its file handle, if it is still inode `key` (and
/// a directory: a handle names one inode, and inode numbers are reused).
fn by_handle(guest: &Guest, key: Key, seen: &Seen) -> Option<(OwnedFd, sys::Stat)> {
    let handle = seen.handle.as_deref()?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let dir = sys::open_by_handle(guest.fd.as_fd(), handle, flags).ok()?;
    let st = sys::fstat(dir.as_fd()).ok()?;
    (st.is_dir() && (st.dev, st.ino) == key).then_some((dir, st))
}

/// Directory `rel` beneath `root` (never through a symlink or into another
/// mount) and its stat, if it is still inode `key`: `None` if it is gone or
/// another, so nothing of ours is there.
pub(super) fn open_noted(
    root: BorrowedFd,
    rel: &Path,
    key: Key,
) -> io::Result<Option<(OwnedFd, sys::Stat)>> {
    let dir = match sys::open_beneath(root, rel, libc::O_RDONLY | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let st = sys::fstat(dir.as_fd())?;
    Ok(((st.dev, st.ino) == key).then_some((dir, st)))
}

/// The listing of a directory the run changed, for the next run; none if
/// it cannot be had (a cache: the next run reads the directory then).
fn relist(dir: BorrowedFd, seen: &Seen) -> Option<Listing> {
    // Stat before reading, as the walk does; never an encrypted directory.
    let before = super::listings::clock();
    let (st, encrypted) = sys::fstat_dir(dir).ok()?;
    if encrypted || !super::listings::keepable(&st, before) {
        return None;
    }
    let records = sys::read_dir_records(dir).ok()?;
    Some(Listing::read(
        seen.guest,
        seen.rel.clone(),
        DirKey::of(&st),
        records,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::GuestRow;
    use std::os::unix::fs::MetadataExt;

    fn guest(root: &Path) -> Guest {
        Guest {
            row: GuestRow {
                id: 1,
                name: "g".into(),
                path: root.to_path_buf(),
            },
            root: root.to_path_buf(),
            fd: sys::open_dir(root).unwrap(),
        }
    }

    fn mtime(path: &Path) -> (i64, i64) {
        let m = std::fs::symlink_metadata(path).unwrap();
        (m.mtime(), m.mtime_nsec())
    }

    /// Notes `rel` of `g`, creates and removes a name in it (as a swap
    /// does), notes the change.
    fn change(times: &DirTimes, g: &Guest, rel: &str) {
        let dir = sys::open_beneath(g.fd.as_fd(), Path::new(rel), libc::O_RDONLY).unwrap();
        let noted = times.before_change(0, Path::new(rel), dir.as_fd(), None);
        std::fs::write(g.root.join(rel).join("tmp"), b"x").unwrap();
        std::fs::remove_file(g.root.join(rel).join("tmp")).unwrap();
        times.after_change(dir.as_fd(), noted);
    }

    fn set_old(path: &Path) {
        let t = Timestamp { sec: 1000, nsec: 7 };
        sys::lutimens(path, t, t).unwrap();
    }

    #[test]
    fn a_future_mtime_goes_back_too() {
        let root = tempfile::tempdir().unwrap();
        let future = Timestamp {
            sec: 4_000_000_000,
            nsec: 0,
        }; // 2096
        std::fs::create_dir(root.path().join("f")).unwrap();
        sys::lutimens(&root.path().join("f"), future, future).unwrap();
        let g = guest(root.path());
        let times = DirTimes::default();
        change(&times, &g, "f");
        let (problems, _) = times.restore(std::slice::from_ref(&g));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(mtime(&root.path().join("f")), (4_000_000_000, 0));
    }

    #[test]
    fn mtimes_go_back_unless_someone_else_changed_the_directory_since() {
        let root = tempfile::tempdir().unwrap();
        for d in ["a", "b", "c", "d"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
            set_old(&root.path().join(d));
        }
        set_old(root.path());
        let g = guest(root.path());
        let times = DirTimes::default();
        for rel in ["", "a", "b", "c", "d", "a"] {
            change(&times, &g, rel);
        }
        // b: the guest creates a file after our last change (a newer
        // mtime, whatever the clock granularity).
        let t = Timestamp { sec: 2000, nsec: 0 };
        let b = root.path().join("b");
        std::fs::write(b.join("guest's"), b"").unwrap();
        sys::lutimens(&b, t, t).unwrap();
        // c: renamed, its name now a symlink to d (never followed); d
        // renamed away.
        std::fs::rename(root.path().join("c"), root.path().join("c.old")).unwrap();
        std::os::unix::fs::symlink("d", root.path().join("c")).unwrap();
        std::fs::rename(root.path().join("d"), root.path().join("d.old")).unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        let d_new = mtime(&root.path().join("d"));
        let (problems, listings) = times.restore(std::slice::from_ref(&g));
        assert!(problems.is_empty(), "{problems:?}");
        // Read again: the root, a and b (c and d are other inodes now).
        let rel = |l: &Listing| match l {
            Listing::Read(r) => r.rel.clone(),
            _ => unreachable!("only read listings"),
        };
        let mut relisted: Vec<_> = listings.iter().map(rel).collect();
        relisted.sort();
        assert_eq!(relisted, ["", "a", "b"].map(PathBuf::from));
        let b_has_guests_file = listings.iter().any(|l| match l {
            Listing::Read(r) if r.rel == Path::new("b") => {
                let mut names = Vec::new();
                sys::parse_dirents(&r.records, |e| names.push(e.name.to_os_string())).unwrap();
                names.contains(&"guest's".into())
            }
            _ => false,
        });
        assert!(b_has_guests_file);
        assert_eq!(mtime(&root.path().join("a")), (1000, 7));
        assert_eq!(mtime(&b), (2000, 0), "the guest's later change stays");
        // c and d were renamed, with the mtime our change left: the same
        // directories, found by their handles, not through the symlink c.
        assert_eq!(mtime(&root.path().join("c.old")), (1000, 7));
        assert_eq!(mtime(&root.path().join("d.old")), (1000, 7));
        assert_eq!(mtime(&root.path().join("d")), d_new, "another inode");
        // The root changed after our changes too (the renames above).
        assert_ne!(mtime(root.path()), (1000, 7));
        // Nothing is left to restore a second time.
        assert!(times.restore(std::slice::from_ref(&g)).0.is_empty());
    }
}
