//! A few deep directories kept open (`O_PATH`) as starting points, so that
//! a request in a deep tree resolves a few names below one of them instead
//! of its whole path from the root: without it each request cost one step
//! per level (about 8 ms at 4,000 levels) and a walk down a deep tree the
//! square of its depth.
//!
//! Bounded ([`DIRS`] entries, two fds each): the daemon still holds no fd
//! per node it has seen. Only nodes more than [`SHALLOW`] levels deep are
//! kept; shallower ones are opened from the root as before.
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
//! refused (EXDEV) as before.

use super::inode::BackingIno;
use super::sys as fsys;
use crate::sys;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Nodes up to this many levels below the root are opened from the root.
pub const SHALLOW: usize = 32;

/// The most directories held.
const DIRS: usize = 32;

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

    /// Held node `node`, checked: `None` (and dropped) if it left the tree
    /// behind the mount's back, or every entry dropped if the mount table
    /// changed.
    pub fn start(&self, node: u64) -> Option<Arc<Held>> {
        if fsys::mounts_changed(self.mounts.as_fd()) {
            lock(&self.entries).map.clear();
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

    /// Opens `rel` below held directory `from` (or below the root when
    /// `from` is `None`, with `root` its fd), and holds the result as node
    /// `node` if it is the inode `ino`.
    pub fn open(
        &self,
        root: BorrowedFd,
        from: Option<&Held>,
        rel: &Path,
        node: u64,
        ino: BackingIno,
    ) -> io::Result<OwnedFd> {
        let (dir, twin) = match from {
            Some(h) => (h.fd.as_fd(), h.twin.as_fd()),
            None => (root, self.anchor.as_fd()),
        };
        let fd = sys::open_beneath(dir, rel, PATH_DIR)?;
        if rel.as_os_str().is_empty() {
            return Ok(fd);
        }
        // Its twin by the same path in the clone; a rename on the host in
        // between gives another inode, and nothing is held.
        let twin = sys::open_beneath(twin, rel, PATH_DIR);
        if let (Ok(twin), Ok(copy)) = (twin, fd.try_clone()) {
            let same =
                |f: &OwnedFd| fsys::fstat(f.as_fd()).is_ok_and(|s| BackingIno::of(&s) == ino);
            if same(&copy) && same(&twin) {
                self.insert(
                    node,
                    Held {
                        fd: copy,
                        twin,
                        ino,
                    },
                );
            }
        }
        Ok(fd)
    }

    fn insert(&self, node: u64, held: Held) {
        let mut e = lock(&self.entries);
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
    }

    /// Drops node `node` (its directory removed through the mount).
    pub fn forget(&self, node: u64) {
        lock(&self.entries).map.remove(&node);
    }
}

const PATH_DIR: i32 = libc::O_PATH | libc::O_DIRECTORY;
