//! A few deep directories kept open (`O_PATH`) as starting points, so that
//! a request in a deep tree resolves a few names below one of them instead
//! of its whole path from the root: without it each request cost one step
//! per level (about 8 ms at 4,000 levels) and a walk down a deep tree the
//! square of its depth.
//!
//! Bounded ([`DIRS`] entries, two fds each, the least recently used go):
//! the daemon still holds no fd per node it has seen. Nodes up to
//! [`SHALLOW`] levels deep are opened from the root as before; a way of
//! [`SHALLOW`] names or more is opened in pieces, holding the directories
//! at their ends (see [`DirCache::open`]).
//!
//! A cached fd follows its directory, a path follows the name: renames
//! and exchanges through the mount move both alike (the node table and the
//! directory), an rmdir leaves the node without a name (the table is asked
//! first), and an entry is used only while the node's backing inode is the
//! cached one. What the host does behind the mount's back is checked on
//! each use: each entry has a twin in a detached clone of the root's mount
//! (rooted at the backing root), where `..` fails once the directory is no
//! longer beneath the root, so the daemon never leaves the tree through a
//! cached fd; and any change of the mount table (a mount over a directory
//! of the tree) drops every entry, so a path that crosses a mount is
//! refused (EXDEV) as before; a request that opened its directories
//! before the change holds none of them once it was seen.

use super::inode::{BackingIno, Step};
use super::sys as fsys;
use crate::sys;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Nodes up to this many levels below the root are opened from the root.
pub const SHALLOW: usize = 32;

/// The most directories held.
const DIRS: usize = 32;

/// The most fds held: two per directory (its own and its twin's).
pub const MOST_FDS: u64 = 2 * DIRS as u64;

/// A held directory: its fd, its twin in the clone, and its inode.
#[derive(Debug)]
pub struct Held {
    fd: OwnedFd,
    twin: OwnedFd,
    ino: BackingIno,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<u64, (Arc<Held>, u64)>,
    tick: u64,
    /// Counts the changes of the mount table seen: a directory opened
    /// before one is not held after it was seen (see [`DirCache::epoch`]).
    epoch: u64,
}

#[derive(Debug)]
pub struct DirCache {
    /// The clone of the root's mount, rooted at the backing root.
    anchor: OwnedFd,
    /// `/proc/self/mountinfo`, polled for changes of the mount table.
    mounts: OwnedFd,
    entries: Mutex<Entries>,
}

fn lock(m: &Mutex<Entries>) -> std::sync::MutexGuard<'_, Entries> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DirCache {
    /// A cache for the tree at `root`; `None` where the kernel or our
    /// privileges give no clone of its mount (then every path is resolved
    /// from the root).
    pub fn new(root: BorrowedFd) -> Option<DirCache> {
        let anchor = fsys::clone_mount(root)
            .inspect_err(|e| tracing::debug!("no directory cache: cloning the root's mount: {e}"))
            .ok()?;
        let mounts = std::fs::File::open("/proc/self/mountinfo")
            .inspect_err(|e| tracing::debug!("no directory cache: /proc/self/mountinfo: {e}"))
            .ok()?;
        let mounts = OwnedFd::from(mounts);
        // Arms the poll: changes from now on are reported.
        fsys::mounts_changed(mounts.as_fd());
        Some(DirCache {
            anchor,
            mounts,
            entries: Mutex::new(Entries::default()),
        })
    }

    /// Whether node `node` is held as the inode `ino`.
    pub fn holds(&self, node: u64, ino: BackingIno) -> bool {
        lock(&self.entries)
            .map
            .get(&node)
            .is_some_and(|(h, _)| h.ino == ino)
    }

    /// Taken before a request looks for a held directory ([`Self::start`])
    /// and given to [`Self::open`]: a directory another request opened
    /// before a mount, once a third saw the mount and dropped every entry,
    /// would else be held under the mount (its way from the root refused)
    /// till the next change.
    pub fn epoch(&self) -> u64 {
        lock(&self.entries).epoch
    }

    /// Held node `node`, checked: `None` (and dropped) if it left the tree
    /// behind the mount's back, or every entry dropped if the mount table
    /// changed.
    pub fn start(&self, node: u64) -> Option<Arc<Held>> {
        if fsys::mounts_changed(self.mounts.as_fd()) {
            let mut e = lock(&self.entries);
            e.map.clear();
            e.epoch += 1;
            return None;
        }
        let held = {
            let mut e = lock(&self.entries);
            e.tick += 1;
            let tick = e.tick;
            let (held, used) = e.map.get_mut(&node)?;
            *used = tick;
            held.clone()
        };
        if sys::open_at(held.twin.as_fd(), OsStr::new(".."), PATH_DIR, 0).is_err() {
            tracing::debug!("node {node}: its directory left the tree; opened from the root");
            lock(&self.entries).map.remove(&node);
            return None;
        }
        Some(held)
    }

    /// Opens the directory `steps` lead to from held directory `from` (or
    /// from the root when `from` is `None`, with `root` its fd). A way of
    /// [`SHALLOW`] names or more is opened in pieces, and the directory at
    /// the end of each is held: the target, and the ones 32, 64, 128, ...
    /// levels above it, so that a walk back up the tree finds one near;
    /// none is held once the mount table changed since `epoch`.
    pub fn open(
        &self,
        root: BorrowedFd,
        from: Option<&Held>,
        steps: &[Step],
        epoch: u64,
    ) -> io::Result<OwnedFd> {
        let (dir, twin) = match from {
            Some(h) => (h.fd.as_fd(), h.twin.as_fd()),
            None => (root, self.anchor.as_fd()),
        };
        // A way shorter than SHALLOW ends near a held directory: nothing
        // on it is held (a walk down holds one directory in 32).
        let mut holding = steps.len() >= SHALLOW;
        let (mut fd, mut twin_fd) = (None::<OwnedFd>, None::<OwnedFd>);
        let mut done = 0;
        for cut in cuts(steps.len()) {
            let rel: PathBuf = steps[done..cut].iter().map(|s| &s.name).collect();
            let at = fd.as_ref().map_or(dir, |f| f.as_fd());
            let next = sys::open_beneath(at, &rel, PATH_DIR)?;
            if holding {
                // Its twin by the same names in the clone; a rename on the
                // host in between gives another inode, and nothing more is
                // held.
                let at = twin_fd.as_ref().map_or(twin, |f| f.as_fd());
                match sys::open_beneath(at, &rel, PATH_DIR) {
                    Ok(t) => {
                        holding = self.hold(&steps[cut - 1], &next, &t, epoch);
                        twin_fd = Some(t);
                    }
                    Err(_) => holding = false,
                }
            }
            fd = Some(next);
            done = cut;
        }
        match fd {
            Some(fd) => Ok(fd),
            None => sys::open_beneath(dir, Path::new(""), PATH_DIR),
        }
    }

    /// Holds `fd` (with its twin) as the node of `step` if both are its
    /// inode; false if either is not, or the mount table changed since
    /// `epoch`.
    fn hold(&self, step: &Step, fd: &OwnedFd, twin: &OwnedFd, epoch: u64) -> bool {
        let same =
            |f: &OwnedFd| fsys::fstat(f.as_fd()).is_ok_and(|s| BackingIno::of(&s) == step.ino);
        if !(same(fd) && same(twin)) {
            return false;
        }
        // Out of fds (the open-file limit): not held, no harm.
        if let (Ok(fd), Ok(twin)) = (fd.try_clone(), twin.try_clone()) {
            let ino = step.ino;
            return self.insert(step.node, Held { fd, twin, ino }, epoch);
        }
        true
    }

    fn insert(&self, node: u64, held: Held, epoch: u64) -> bool {
        let mut e = lock(&self.entries);
        if e.epoch != epoch {
            return false;
        }
        e.tick += 1;
        let tick = e.tick;
        if e.map.len() >= DIRS && !e.map.contains_key(&node) {
            let oldest = e
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(n, _)| *n);
            if let Some(n) = oldest {
                e.map.remove(&n);
            }
        }
        e.map.insert(node, (Arc::new(held), tick));
        true
    }

    /// Drops node `node` (its directory removed through the mount).
    pub fn forget(&self, node: u64) {
        lock(&self.entries).map.remove(&node);
    }
}

const PATH_DIR: i32 = libc::O_PATH | libc::O_DIRECTORY;

/// Where a way of `n` names is cut (counts of names from its start, the
/// last `n`): at its end, and, from [`SHALLOW`] names on, 32, 64, 128, ...
/// names before it.
fn cuts(n: usize) -> Vec<usize> {
    if n < SHALLOW {
        return if n == 0 { Vec::new() } else { vec![n] };
    }
    let mut cuts: Vec<usize> = std::iter::successors(Some(SHALLOW), |d| d.checked_mul(2))
        .take_while(|d| *d < n)
        .map(|d| n - d)
        .collect();
    cuts.reverse();
    cuts.push(n);
    cuts
}
