//! Directory mtimes across a run. Invariant 3 says every guest tree reads as
//! before unify, mtimes included, but replacing a file links a temp name next
//! to it, swaps the two and unlinks the temp name: three changes of its
//! directory, each setting the directory's mtime to now. So the first time a
//! directory is about to change its mtime is noted, and after each change
//! that mtime is put back (its atime is left alone: unify never lists a
//! directory while linking; its ctime cannot be put back).
//!
//! Replacements in one directory run on several threads and in many buckets,
//! so the notes live in a small sharded map keyed by the directory's (device,
//! inode), and our changes of one directory go one at a time.
//!
//! The guest may be running. Before each of our changes the directory must
//! still have the mtime we put back: if not, someone else changed it since,
//! the mtime they left is the true one, and unify stops putting it back.
//! Putting it back after each change, not once at the end, is what lets a
//! change of the guest's be told from ours by the mtime alone: on a coarse
//! clock (a tick of some milliseconds) a create of the guest's would get
//! the very mtime one of our changes in the same tick left. (A change the
//! guest makes in the few microseconds between our change and our putting
//! the mtime back is still lost.) At the end of the apply phase each
//! directory is opened again beneath its guest root (never through a
//! symlink), and listed again if it is still the same inode.

use super::dirjournal::{Journal, Slot};
use super::listings::{DirKey, Listing};
use super::{worker_pool, Guest, Problem};
use crate::sys::{self, Timestamp};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// How long a change waits for another thread's change of the same
/// directory (a few syscalls) before giving that directory up.
const WAIT: Duration = Duration::from_secs(10);

type Key = (u64, u64);

/// What is known of one directory unify changed.
struct Seen {
    guest: u32,
    rel: PathBuf,
    /// Its mtime before our first change.
    before: Timestamp,
    /// Someone else changed it between two of ours (or its mtime could not
    /// be had): its mtime stays as they left it.
    foreign: bool,
    /// Why its mtime could not be put back, if so.
    failed: Option<String>,
    /// Its record on disk, for the next run if this one is killed.
    slot: Option<Slot>,
}

impl Seen {
    fn give_up(&mut self) {
        self.foreign = true;
        if let Some(slot) = self.slot.take() {
            slot.forget();
        }
    }
}

#[derive(Default)]
struct Notes {
    seen: HashMap<Key, Seen>,
    /// Directories one of our threads is changing now.
    busy: HashSet<Key>,
}

#[derive(Default)]
struct Shard {
    notes: Mutex<Notes>,
    /// Signalled when a directory leaves `busy`.
    free: Condvar,
}

#[derive(Default)]
pub struct DirTimes {
    shards: [Shard; SHARDS],
    journal: Option<Journal>,
}

impl DirTimes {
    fn shard(&self, key: Key) -> &Shard {
        &self.shards[(key.0 ^ key.1) as usize % SHARDS]
    }

    fn notes(shard: &Shard) -> MutexGuard<'_, Notes> {
        shard.notes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before a change of the entries of `dir` (device and inode `key`, if
    /// known), which is `rel` beneath the root of guest `guest`. Waits for
    /// any other change of ours of the same directory to end; the first
    /// call notes the mtime to put back, each later one checks that nobody
    /// else changed the directory since our last change. Returns what
    /// [`Self::after_change`] takes, which must follow: none if the
    /// directory is not (or no longer) noted.
    #[must_use]
    pub fn before_change(
        &self,
        guest: u32,
        rel: &Path,
        dir: BorrowedFd,
        key: Option<Key>,
    ) -> Option<Key> {
        let key = match key {
            Some(k) => k,
            None => sys::fstat(dir).ok().map(|st| (st.dev, st.ino))?,
        };
        let shard = self.shard(key);
        let mut notes = Self::notes(shard);
        let deadline = Instant::now() + WAIT;
        while notes.busy.contains(&key) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Cannot be checked around this change: given up.
                if let Some(s) = notes.seen.get_mut(&key) {
                    s.give_up();
                }
                return None;
            }
            notes = (shard.free.wait_timeout(notes, left))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if notes.seen.get(&key).is_some_and(|s| s.foreign) {
            return None;
        }
        // One stat per change, under the shard's lock: a few microseconds.
        let Some(st) = sys::fstat(dir).ok().filter(|st| (st.dev, st.ino) == key) else {
            if let Some(s) = notes.seen.get_mut(&key) {
                s.give_up();
            }
            return None;
        };
        let seen = notes.seen.entry(key).or_insert_with(|| Seen {
            guest,
            rel: rel.to_path_buf(),
            before: st.mtime,
            foreign: false,
            failed: None,
            slot: (self.journal.as_ref()).and_then(|j| j.note(key.0, key.1, st.mtime, guest, rel)),
        });
        if seen.before != st.mtime {
            // Changed by someone else since our last change: its mtime is
            // theirs.
            seen.give_up();
            return None;
        }
        seen.slot.iter().for_each(Slot::begin);
        notes.busy.insert(key);
        Some(key)
    }

    /// After a change of `dir`'s entries, whatever came of it; `noted` is
    /// what `before_change` returned. Puts the mtime back.
    pub fn after_change(&self, dir: BorrowedFd, noted: Option<Key>) {
        let Some(key) = noted else { return };
        let shard = self.shard(key);
        let mut notes = Self::notes(shard);
        if let Some(seen) = notes.seen.get_mut(&key) {
            match sys::set_mtime(dir, seen.before) {
                // The journal's `ours`: what the next run finds if nobody
                // else changes the directory.
                Ok(()) => seen.slot.iter().for_each(|s| s.end(seen.before)),
                Err(e) => {
                    seen.failed = Some(e.to_string());
                    seen.give_up();
                }
            }
        }
        notes.busy.remove(&key);
        shard.free.notify_all();
        drop(notes);
        test_pause();
    }

    /// Keeps the notes on disk too (see `dirjournal.rs`).
    pub fn keep_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// Forgets every directory noted (and their record on disk). Returns
    /// those whose mtime could not be put back, and the listings of those
    /// still there, read afresh for the next run (see `listings.rs`): the
    /// walk's are out of date.
    pub fn restore(&self, guests: &[Guest]) -> (Vec<Problem>, Vec<Listing>) {
        let seen: Vec<(Key, Seen)> = self
            .shards
            .iter()
            .flat_map(|s| std::mem::take(&mut Self::notes(s).seen))
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
    if let Some(e) = &seen.failed {
        return Err(io::Error::other(e.clone()));
    }
    // Renamed by the guest since (`mv d d.old`): its path, another
    // directory or none, gets no listing.
    Ok(match open_noted(guest.fd.as_fd(), &seen.rel, key)? {
        Some((dir, _)) => relist(dir.as_fd(), seen),
        None => None,
    })
}

/// Sleeps for `UNIFS_TEST_DIRTIMES_PAUSE_MS` (read once; unset: not at
/// all) after each change: the tests' way to land a guest's change between
/// two of ours rather than during one.
fn test_pause() {
    crate::sys::test_pause!("UNIFS_TEST_DIRTIMES_PAUSE_MS");
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
    fn a_change_between_two_of_ours_keeps_its_mtime() {
        let root = tempfile::tempdir().unwrap();
        for d in ["a", "b"] {
            std::fs::create_dir(root.path().join(d)).unwrap();
            set_old(&root.path().join(d));
        }
        let g = guest(root.path());
        let times = DirTimes::default();
        // The guest creates a file in a between two changes of ours (its
        // mtime set apart from ours, whatever the clock's granularity).
        change(&times, &g, "a");
        change(&times, &g, "b");
        let t = Timestamp { sec: 2000, nsec: 0 };
        std::fs::write(root.path().join("a/guest's"), b"").unwrap();
        sys::lutimens(&root.path().join("a"), t, t).unwrap();
        change(&times, &g, "a");
        change(&times, &g, "b");
        let (problems, _) = times.restore(std::slice::from_ref(&g));
        assert!(problems.is_empty(), "{problems:?}");
        assert_ne!(
            mtime(&root.path().join("a")),
            (1000, 7),
            "the guest's change was covered up"
        );
        assert_eq!(mtime(&root.path().join("b")), (1000, 7));
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
