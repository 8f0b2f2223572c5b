//! The node table: which FUSE node each guest path is, without holding an fd
//! per node. A node is known by its names (parent node + name) and the backing
//! inode behind them.
//!
//! A backing inode is known by its device and number ([`BackingIno`]): the
//! number alone is not unique in a guest's tree (each btrfs subvolume
//! numbers its inodes from 256).
//!
//! Node numbers (what the guest sees as st_ino):
//! - a private backing inode (file, dir, …) on the backing root's device is
//!   its backing inode number, so paths the guest hardlinked itself are one
//!   node, stable across remounts; one on another device (a btrfs
//!   subvolume) is numbered from the counter below, as its own number may
//!   be a root-device file's;
//! - a path that links a shared store object is a node of its own, numbered
//!   from [`SHARED_BASE`] up, so two guest paths linking one object are two
//!   files. When the link is broken the node keeps its number for the life of
//!   the mount and now stands for the private copy. A node the daemon finds
//!   shared that it knew as private (unify linked it behind the mount) keeps
//!   its number likewise, kept for its path from then on.
//!
//! No two live nodes ever share a number: a number in use is skipped, and a
//! private inode whose number is taken gets one from the counter.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

/// The table's maps hash with foldhash: several lookups per directory entry
/// a guest lists, where std's SipHash was a tenth of the daemon's time in a
/// first walk. Its per-process random seed still keeps a guest from
/// choosing names that collide.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub const ROOT: u64 = 1;
/// Numbers handed out to shared paths: above the inode numbers of all but
/// the largest filesystems, yet below 2^32, so that 32-bit programs without
/// large-file support can still stat them.
pub const SHARED_BASE: u64 = 0xC000_0000;

/// The FUSE generation of node number `n`: with `n`, the file handle the
/// kernel hands out (overlayfs keeps one as a copy-up's origin, knfsd gives
/// them to clients). A number below [`SHARED_BASE`] is its backing inode's
/// own, the same file in every mount: 0. Numbers from the counter name
/// other files in each mount, so they carry `mount`, drawn anew for each
/// mount: their handles from an earlier mount are stale (the kernel answers
/// ESTALE) instead of naming whatever file has that number now. A number
/// keeps its generation for the mount's life, as the kernel requires of a
/// node it still holds (another one makes it take the node for a reused
/// number, and fail its I/O).
pub fn generation(n: u64, mount: u32) -> u64 {
    if n < SHARED_BASE {
        0
    } else {
        u64::from(mount)
    }
}

/// A backing inode: its device and its number there (st_dev, st_ino).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackingIno {
    pub dev: u64,
    pub ino: u64,
}

impl BackingIno {
    pub fn of(st: &libc::stat) -> BackingIno {
        BackingIno {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// A shared path: its parent directory's backing inode and its name.
type SharedPath = (BackingIno, OsString);

/// Numbers kept after the kernel forgets their nodes, by what keeps them
/// (a shared path, or a private inode not numbered by itself), both ways:
/// a break or a rename takes a number off its path, and looking for it
/// among every shared path the mount has seen cost each of them a
/// millisecond per 100,000 such paths, under the table's lock; and a
/// private file's own number is not handed out while it is kept for
/// another file. One number has at most one key; the two maps share each
/// key (`Arc`).
#[derive(Debug)]
struct KeptNumbers<K> {
    by_key: HashMap<Arc<K>, u64>,
    by_number: HashMap<u64, Arc<K>>,
}

impl<K> Default for KeptNumbers<K> {
    fn default() -> Self {
        KeptNumbers {
            by_key: HashMap::default(),
            by_number: HashMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq> KeptNumbers<K> {
    fn get(&self, key: &K) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// The key that keeps number `n`, if any.
    fn holder(&self, n: u64) -> Option<&K> {
        self.by_number.get(&n).map(|k| &**k)
    }

    /// Gives `key` the number `n`, which no other key keeps any more.
    fn remember(&mut self, key: K, n: u64) {
        self.forget(n);
        let key = Arc::new(key);
        if let Some(old) = self.by_key.insert(key.clone(), n) {
            if self.by_number.get(&old).is_some_and(|k| **k == *key) {
                self.by_number.remove(&old);
            }
        }
        self.by_number.insert(n, key);
    }

    /// Takes number `n` off the key that kept it, if any.
    fn forget(&mut self, n: u64) {
        if let Some(key) = self.by_number.remove(&n) {
            self.by_key.remove(&*key);
        }
    }

    /// Takes `key`'s number off it, if it kept one (the path or file is
    /// gone).
    fn forget_key(&mut self, key: &K) {
        if let Some(n) = self.by_key.remove(key) {
            if self.by_number.get(&n).is_some_and(|k| **k == *key) {
                self.by_number.remove(&n);
            }
        }
    }

    /// Takes `key`'s number off it if that is `n`.
    fn forget_if(&mut self, key: &K, n: u64) {
        if self.get(key) == Some(n) {
            self.forget_key(key);
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    /// The backing inode currently behind the node.
    pub backing_ino: BackingIno,
    /// True while the backing inode is a store object.
    pub shared: bool,
    /// The (parent node, name) pairs the node is known under; the first is
    /// used to reach it. Empty once every known name is gone.
    pub names: Vec<(u64, OsString)>,
    /// Split off its path ([`InodeTable::split_off`]): its names now lead
    /// to another node, which the kernel finds by looking them up again.
    pub split: bool,
    /// Kernel lookup references (forget takes them back).
    pub lookups: u64,
    /// Open file handles; a node is kept while any is open.
    pub opens: u64,
}

#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    /// (parent, name) → node.
    children: HashMap<(u64, OsString), u64>,
    /// Private backing inode → node (hardlinks of the guest join one node).
    by_ino: HashMap<BackingIno, u64>,
    /// Numbers handed out, kept after the kernel forgets a node so that a
    /// file looked up again gets the number it had: (parent directory's
    /// backing inode, name) of a shared path, and the backing inode of a
    /// private file not numbered by its inode (a broken copy). Both drop
    /// a path or copy the guest deletes ([`Self::remove_name`],
    /// [`Self::last_link_gone`]).
    shared_numbers: KeptNumbers<SharedPath>,
    private_numbers: KeptNumbers<BackingIno>,
    next_shared: u64,
    /// The backing root's device: only its inodes are numbered by their
    /// own numbers.
    root_dev: u64,
}

/// One name on a node's way from the root: the node it leads to, that
/// node's backing inode, and the name.
#[derive(Debug, Clone)]
pub struct Step {
    pub node: u64,
    pub ino: BackingIno,
    pub name: OsString,
}

/// What a lookup found on disk for a name.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub ino: BackingIno,
    pub shared: bool,
}

impl InodeTable {
    pub fn new(root_ino: BackingIno) -> InodeTable {
        let mut t = InodeTable {
            nodes: HashMap::default(),
            children: HashMap::default(),
            by_ino: HashMap::default(),
            shared_numbers: KeptNumbers::default(),
            private_numbers: KeptNumbers::default(),
            next_shared: SHARED_BASE,
            root_dev: root_ino.dev,
        };
        t.nodes.insert(
            ROOT,
            Node {
                backing_ino: root_ino,
                shared: false,
                names: Vec::new(),
                split: false,
                lookups: 1,
                opens: 0,
            },
        );
        t.by_ino.insert(root_ino, ROOT);
        t
    }

    pub fn get(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node's path below the root, as components; `None` if it has no
    /// name any more (unlinked) or is unknown.
    pub fn path(&self, id: u64) -> Option<Vec<OsString>> {
        let (_, steps) = self.path_from(id, 0, |_, _| false)?;
        Some(steps.into_iter().map(|s| s.name).collect())
    }

    /// The way to node `id`: from the root when it is at most `near`
    /// levels down, else from its nearest ancestor (or itself) that
    /// `start` takes (given node and backing inode), else from the root.
    /// The node it starts from (ROOT for the root) and the steps below it;
    /// `None` as for [`Self::path`].
    pub fn path_from(
        &self,
        id: u64,
        near: usize,
        start: impl Fn(u64, BackingIno) -> bool,
    ) -> Option<(u64, Vec<Step>)> {
        let mut steps = Vec::new();
        let mut from = None;
        let mut cur = id;
        while cur != ROOT {
            let node = self.nodes.get(&cur)?;
            // A name whose directory the kernel has forgotten is no way in
            // (a file the guest hardlinked into two directories).
            let (parent, name) = node
                .names
                .iter()
                .find(|(p, _)| *p == ROOT || self.nodes.contains_key(p))?;
            if from.is_none() && start(cur, node.backing_ino) {
                from = Some((cur, steps.len()));
            }
            if let Some((start, below)) = from.filter(|_| steps.len() >= near) {
                steps.truncate(below);
                steps.reverse();
                return Some((start, steps));
            }
            steps.push(Step {
                node: cur,
                ino: node.backing_ino,
                name: name.clone(),
            });
            cur = *parent;
            // A path without a cycle visits each node at most once; one
            // longer would be a bug (never loop forever). Guest trees have
            // no depth limit of their own, as on ext4.
            if steps.len() > self.nodes.len() {
                return None;
            }
        }
        steps.reverse();
        Some((ROOT, steps))
    }

    /// The node `name` in `parent` stands for, given what is on disk now;
    /// creates or re-binds nodes as needed and takes one lookup reference.
    pub fn lookup(&mut self, parent: u64, name: &OsStr, found: Found) -> u64 {
        let key = (parent, name.to_owned());
        if let Some(&id) = self.children.get(&key) {
            let node = self.nodes.get_mut(&id).expect("child names a node");
            if node.backing_ino == found.ino {
                let now_shared = found.shared && !node.shared;
                node.shared = found.shared;
                node.lookups += 1;
                if !found.shared {
                    self.by_ino.entry(found.ino).or_insert(id);
                }
                if now_shared {
                    self.became_shared(id, found.ino);
                }
                return id;
            }
            if self.relinked(id, found) {
                self.nodes.get_mut(&id).expect("present").lookups += 1;
                return id;
            }
            self.detach(parent, name);
        }
        if !found.shared {
            if let Some(&id) = self.by_ino.get(&found.ino) {
                let node = self.nodes.get_mut(&id).expect("by_ino names a node");
                node.names.push(key.clone());
                node.lookups += 1;
                self.children.insert(key, id);
                return id;
            }
        }
        let id = self.number_for(parent, name, found);
        self.nodes.insert(
            id,
            Node {
                backing_ino: found.ino,
                shared: found.shared,
                names: vec![key.clone()],
                split: false,
                lookups: 1,
                opens: 0,
            },
        );
        self.children.insert(key, id);
        if !found.shared {
            self.by_ino.insert(found.ino, id);
        }
        id
    }

    /// Node `id`'s one path names `found`, another inode than the node's
    /// (unify linked it to the store, or a break by another process): the
    /// node stands for it and keeps the number the guest knows, if it can.
    /// False where it cannot (the node has other names, or a private inode
    /// another node has): the path needs a node of its own.
    pub fn relinked(&mut self, id: u64, found: Found) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        if node.names.len() != 1 || !found.shared && self.by_ino.contains_key(&found.ino) {
            return false;
        }
        let old = node.backing_ino;
        if found.shared {
            node.backing_ino = found.ino;
            if self.by_ino.get(&old) == Some(&id) {
                self.by_ino.remove(&old);
            }
            self.became_shared(id, old);
        } else {
            // As a break's copy: its number is kept for the new inode.
            self.rebind_private(id, found.ino);
        }
        true
    }

    /// Node `id` stands for a store object now, under the number the guest
    /// knows: unify linked its path behind the mount (`old`: the backing
    /// inode it stood for before, maybe this very one). It leaves the inode
    /// index, and its path keeps the number as a shared path's does, so
    /// that the kernel forgetting the node does not renumber the file (a
    /// private file's own number, or a broken copy's, was kept by its
    /// inode, which a shared path's lookup never asks for).
    fn became_shared(&mut self, id: u64, old: BackingIno) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        node.shared = true;
        let ino = node.backing_ino;
        let first = node.names.first().cloned();
        for i in [old, ino] {
            if self.by_ino.get(&i) == Some(&id) {
                self.by_ino.remove(&i);
            }
            self.private_numbers.forget_if(&i, id);
        }
        if let Some((parent, name)) = first.filter(|(p, _)| self.nodes.contains_key(p)) {
            let key = (self.parent_ino(parent), name);
            self.shared_numbers.remember(key, id);
        }
    }

    /// The number a new node for (parent, name) gets: the one it had
    /// before if that is free, else its backing inode number (private), else
    /// a fresh one.
    fn number_for(&mut self, parent: u64, name: &OsStr, found: Found) -> u64 {
        let free = |t: &Self, n: u64| n > ROOT && !t.nodes.contains_key(&n);
        if found.shared {
            let key = (self.parent_ino(parent), name.to_owned());
            if let Some(n) = self.shared_numbers.get(&key) {
                if free(self, n) {
                    return n;
                }
            }
            let n = self.next_free();
            self.shared_numbers.remember(key, n);
            return n;
        }
        if let Some(n) = self.private_numbers.get(&found.ino) {
            if free(self, n) {
                return n;
            }
        }
        // The number it gets now is the one it keeps: a node split off this
        // inode's path (still open) may hold the old one for a while. Nor
        // does it take its own where that is kept for another file (a
        // broken copy, a shared path) that had it from this inode number
        // before the filesystem freed and reused it: the two would show
        // one number in turn, each while the kernel forgot the other.
        let n = match self.own_number(found.ino) {
            Some(n) if free(self, n) && !self.kept_for_another(n, parent, name, found.ino) => n,
            _ => self.next_free(),
        };
        if Some(n) == self.own_number(found.ino) {
            self.private_numbers.forget_key(&found.ino);
        } else {
            self.private_numbers.remember(found.ino, n);
        }
        n
    }

    /// Whether number `n` is kept for another file than private inode
    /// `ino` at (parent, name): a shared path elsewhere, another inode.
    fn kept_for_another(&self, n: u64, parent: u64, name: &OsStr, ino: BackingIno) -> bool {
        let elsewhere = |(dir, kept): &SharedPath| *dir != self.parent_ino(parent) || kept != name;
        self.shared_numbers.holder(n).is_some_and(elsewhere)
            || self.private_numbers.holder(n).is_some_and(|i| *i != ino)
    }

    /// The number a backing inode may be shown under by itself: its own,
    /// on the root's device. On another device its number may be a
    /// root-device file's, or another subvolume's file's.
    fn own_number(&self, ino: BackingIno) -> Option<u64> {
        (ino.dev == self.root_dev).then_some(ino.ino)
    }

    /// The backing inode of directory node `parent`, which with a name
    /// stands for a shared path.
    fn parent_ino(&self, parent: u64) -> BackingIno {
        let none = BackingIno { dev: 0, ino: 0 };
        self.nodes.get(&parent).map_or(none, |p| p.backing_ino)
    }

    fn next_free(&mut self) -> u64 {
        loop {
            self.next_shared = self.next_shared.checked_add(1).unwrap_or(SHARED_BASE);
            if self.next_shared > ROOT && !self.nodes.contains_key(&self.next_shared) {
                return self.next_shared;
            }
        }
    }

    /// The node known under (parent, name), if any.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.children.get(&(parent, name.to_owned())).copied()
    }

    /// The node's path names backing inode `ino` now (shared or not): an
    /// open found it so, under the table's lock.
    pub fn set_backing(&mut self, id: u64, ino: BackingIno, shared: bool) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if node.backing_ino == ino && node.shared == shared {
            return;
        }
        if shared {
            let node = self.nodes.get_mut(&id).expect("present");
            let old = node.backing_ino;
            node.backing_ino = ino;
            self.became_shared(id, old);
        } else {
            self.rebind_private(id, ino);
        }
    }

    /// The node's backing inode turned out to be a store object (unify
    /// linked it while the mount ran).
    pub fn mark_shared(&mut self, id: u64, ino: BackingIno) {
        if self
            .nodes
            .get(&id)
            .is_some_and(|n| n.backing_ino == ino && !n.shared)
        {
            self.became_shared(id, ino);
        }
    }

    /// The node's backing inode was replaced by a private copy (a break).
    pub fn rebind_private(&mut self, id: u64, new_ino: BackingIno) {
        let own = self.own_number(new_ino);
        if let Some(node) = self.nodes.get_mut(&id) {
            let old = node.backing_ino;
            if self.by_ino.get(&old) == Some(&id) {
                self.by_ino.remove(&old);
            }
            // The number is the new inode's now, not the old one's, which a
            // break may have freed (a marked file with one link): a file
            // the filesystem gives its inode number must not get it.
            self.private_numbers.forget_if(&old, id);
            node.backing_ino = new_ino;
            node.shared = false;
            self.by_ino.insert(new_ino, id);
            if own != Some(id) {
                // The number is the private copy's now, and no longer its
                // path's: a shared file later at that path gets another.
                self.private_numbers.remember(new_ino, id);
                self.shared_numbers.forget(id);
            }
        }
    }

    /// A break put `copy` at (parent, name) in place of `copied`, a file
    /// no node stands for (a rename through the mount put it there during
    /// the break, and the kernel forgot its node before the break's state
    /// lock). The copy keeps the number a lookup of `copied` would have
    /// got: its path's (shared) or its inode's (private); unkept, the next
    /// lookup numbered the copy by its own inode, and the guest saw the
    /// file's number change. A number a live node has stays with it.
    pub fn copied_unseen(&mut self, parent: u64, name: &OsStr, copied: Found, copy: BackingIno) {
        let path = (self.parent_ino(parent), name.to_owned());
        let n = match copied.shared {
            true => self.shared_numbers.get(&path),
            false => {
                (self.private_numbers.get(&copied.ino)).or_else(|| self.own_number(copied.ino))
            }
        };
        let Some(n) = n.filter(|&n| n > ROOT && !self.nodes.contains_key(&n)) else {
            return;
        };
        // As `rebind_private`: the number is the copy's now, not the path's
        // nor the replaced inode's (which the filesystem may reuse).
        self.shared_numbers.forget(n);
        if self.own_number(copy) == Some(n) {
            self.private_numbers.forget(n);
        } else {
            self.private_numbers.remember(copy, n);
        }
    }

    /// The guest removed (parent, name) (unlink, rmdir): the name goes
    /// from its node, and so does the number kept for it as a shared
    /// path, which no lookup can ask for again (kept, they grew the table
    /// with every shared file a guest deleted, for the mount's life).
    /// `last_link`: the backing inode lost its last link with it
    /// ([`Self::last_link_gone`]). The node itself, and so its number,
    /// lives on while the kernel references it or a handle holds it open.
    pub fn remove_name(&mut self, parent: u64, name: &OsStr, last_link: bool) {
        self.forget_shared_path(parent, name);
        let id = self.detach(parent, name);
        if let (true, Some(id)) = (last_link, id) {
            self.last_link_gone(id);
        }
    }

    fn forget_shared_path(&mut self, parent: u64, name: &OsStr) {
        let key = (self.parent_ino(parent), name.to_owned());
        self.shared_numbers.forget_key(&key);
    }

    /// Takes (parent, name) away from the node it named; the node itself
    /// lives on while the kernel references it.
    pub fn detach(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let key = (parent, name.to_owned());
        let id = self.children.remove(&key)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.names.retain(|k| *k != key);
        }
        self.maybe_drop(id);
        Some(id)
    }

    /// The backing file of node `id` lost its last link (unlink, rmdir, a
    /// rename over it): once nothing holds it open, the filesystem may give
    /// its inode number to a new file, which must not join this node (the
    /// kernel may still hold it, unlinked). Nor does it get this node's
    /// number: the number kept for the inode (a broken copy's) goes too;
    /// the node keeps it while it lives, and no live node's number is ever
    /// handed out.
    pub fn last_link_gone(&mut self, id: u64) {
        if let Some(node) = self.nodes.get(&id) {
            let ino = node.backing_ino;
            if self.by_ino.get(&ino) == Some(&id) {
                self.by_ino.remove(&ino);
            }
            self.private_numbers.forget_if(&ino, id);
        }
    }

    /// The node private backing inode `ino` is indexed under, with its names.
    pub fn indexed(&self, ino: BackingIno) -> Option<(u64, &[(u64, OsString)])> {
        let id = *self.by_ino.get(&ino)?;
        Some((id, &self.nodes.get(&id)?.names))
    }

    /// Takes `ino` out of the index if node `id` is indexed under it: none
    /// of the node's names names that inode any more.
    pub fn unindex(&mut self, ino: BackingIno, id: u64) {
        if self.by_ino.get(&ino) == Some(&id) {
            self.by_ino.remove(&ino);
        }
    }

    /// Gives node `id` the extra name (parent, name) (link, rename target).
    pub fn attach(&mut self, id: u64, parent: u64, name: &OsStr) {
        self.detach(parent, name);
        let key = (parent, name.to_owned());
        if let Some(node) = self.nodes.get_mut(&id) {
            node.names.push(key.clone());
            self.children.insert(key, id);
            if node.shared {
                // Its number goes with it (a shared file has one name).
                let parent_ino = self.parent_ino(parent);
                self.shared_numbers
                    .remember((parent_ino, name.to_owned()), id);
            }
        }
    }

    /// Renames (parent, name) to (newparent, newname), replacing what that
    /// named; with `exchange` the two names swap nodes.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        exchange: bool,
    ) {
        let moved = self.detach_keep(parent, name);
        let target = self.detach_keep(newparent, newname);
        if !exchange {
            // What the new name named is gone; a shared node moved there
            // gives it its own number below.
            self.forget_shared_path(newparent, newname);
        }
        if let Some(id) = moved {
            self.attach(id, newparent, newname);
        }
        if let Some(id) = target {
            if exchange {
                self.attach(id, parent, name);
            }
            self.maybe_drop(id);
        }
        if let Some(id) = moved {
            self.maybe_drop(id);
        }
    }

    fn detach_keep(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let key = (parent, name.to_owned());
        let id = self.children.remove(&key)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.names.retain(|k| *k != key);
        }
        Some(id)
    }

    /// Takes every name and the inode index away from a node: it keeps
    /// serving its open handles, and the next lookup of its path makes a
    /// new node.
    /// Returns the names it had.
    pub fn split_off(&mut self, id: u64) -> Vec<(u64, OsString)> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Vec::new();
        };
        let names = std::mem::take(&mut node.names);
        node.split = true;
        let ino = node.backing_ino;
        for key in &names {
            if self.children.get(key) == Some(&id) {
                self.children.remove(key);
            }
        }
        if self.by_ino.get(&ino) == Some(&id) {
            self.by_ino.remove(&ino);
        }
        names
    }

    /// The kernel dropped `n` lookup references.
    pub fn forget(&mut self, id: u64, n: u64) {
        if id == ROOT {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        self.maybe_drop(id);
    }

    pub fn opened(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.opens += 1;
        }
    }

    pub fn closed(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.opens = node.opens.saturating_sub(1);
        }
        self.maybe_drop(id);
    }

    /// Forgets a node nobody references any more.
    fn maybe_drop(&mut self, id: u64) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if id == ROOT || node.lookups > 0 || node.opens > 0 {
            return;
        }
        let node = self.nodes.remove(&id).expect("present");
        for key in node.names {
            if self.children.get(&key) == Some(&id) {
                self.children.remove(&key);
            }
        }
        if self.by_ino.get(&node.backing_ino) == Some(&id) {
            self.by_ino.remove(&node.backing_ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: u64 = 7;

    fn ino(ino: u64) -> BackingIno {
        BackingIno { dev: DEV, ino }
    }

    fn private(n: u64) -> Found {
        Found {
            ino: ino(n),
            shared: false,
        }
    }

    fn shared(n: u64) -> Found {
        Found {
            ino: ino(n),
            shared: true,
        }
    }

    #[test]
    fn private_files_are_numbered_by_backing_inode_and_hardlinks_join() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), private(100));
        let b = t.lookup(ROOT, OsStr::new("b"), private(100));
        assert_eq!(a, 100);
        assert_eq!(a, b);
        assert_eq!(t.get(a).unwrap().names.len(), 2);
    }

    #[test]
    fn two_paths_of_one_object_are_two_nodes_and_keep_numbers_across_a_break() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), shared(100));
        let b = t.lookup(ROOT, OsStr::new("b"), shared(100));
        assert_ne!(a, b);
        assert!(a > SHARED_BASE && b > SHARED_BASE);
        t.rebind_private(a, ino(555));
        assert_eq!(t.lookup(ROOT, OsStr::new("a"), private(555)), a);
        // a guest hardlink of the private copy joins the node
        assert_eq!(t.lookup(ROOT, OsStr::new("c"), private(555)), a);
        assert_eq!(t.lookup(ROOT, OsStr::new("b"), shared(100)), b);
    }

    #[test]
    fn numbers_never_collide_between_live_nodes() {
        let mut t = InodeTable::new(ino(2));
        let s = t.lookup(ROOT, OsStr::new("s"), shared(100));
        // a private inode whose number is the shared path's
        let p = t.lookup(ROOT, OsStr::new("p"), private(s));
        assert_ne!(p, s);
        // the counter skips numbers private nodes have
        let q = t.lookup(ROOT, OsStr::new("q"), private(p + 1));
        let s2 = t.lookup(ROOT, OsStr::new("s2"), shared(100));
        let mut ids = vec![s, p, q, s2];
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert!(ids.iter().all(|i| *i < 1 << 32));
    }

    #[test]
    fn a_shared_number_follows_its_path_and_leaves_it_at_a_break() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), shared(100));
        t.rename(ROOT, OsStr::new("a"), ROOT, OsStr::new("r"), false);
        t.forget(a, 1);
        assert_eq!(t.lookup(ROOT, OsStr::new("r"), shared(100)), a);
        let a2 = t.lookup(ROOT, OsStr::new("a"), shared(100));
        assert_ne!(a2, a, "the old name kept the number");
        // Broken, the number is the copy's: a shared file at the path later
        // gets another, and the copy keeps its own.
        t.rebind_private(a, ino(900));
        t.forget(a, 1);
        let again = t.lookup(ROOT, OsStr::new("r"), shared(100));
        assert_ne!(again, a);
        assert_eq!(t.lookup(ROOT, OsStr::new("c"), private(900)), a);
        // Each number kept by one path, each path by one number.
        let n = &t.shared_numbers;
        assert_eq!(n.by_key.len(), n.by_number.len());
        assert!(n
            .by_number
            .iter()
            .all(|(k, p)| n.by_key.get(&**p) == Some(k)));
    }

    #[test]
    fn numbers_survive_the_kernel_forgetting_a_node() {
        let mut t = InodeTable::new(ino(2));
        let d = t.lookup(ROOT, OsStr::new("d"), private(50));
        let a = t.lookup(d, OsStr::new("a"), shared(100));
        let b = t.lookup(d, OsStr::new("b"), shared(100));
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert_eq!(t.lookup(d, OsStr::new("a"), shared(100)), a);
        t.rebind_private(b, ino(777));
        t.forget(b, 1);
        assert_eq!(t.lookup(d, OsStr::new("b"), private(777)), b, "broken copy");
        // the directory itself was forgotten and found again
        t.forget(a, 1);
        t.forget(b, 1);
        t.forget(d, 1);
        let d2 = t.lookup(ROOT, OsStr::new("d"), private(50));
        assert_eq!(d2, d);
        assert_eq!(t.lookup(d2, OsStr::new("a"), shared(100)), a);
    }

    #[test]
    fn a_hardlinked_file_is_reached_through_a_directory_still_known() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), private(10));
        let b = t.lookup(ROOT, OsStr::new("b"), private(20));
        let f = t.lookup(a, OsStr::new("f"), private(100));
        assert_eq!(t.lookup(b, OsStr::new("g"), private(100)), f);
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert_eq!(
            t.path(f).unwrap(),
            vec![OsString::from("b"), OsString::from("g")]
        );
    }

    #[test]
    fn a_path_has_no_depth_limit() {
        let mut t = InodeTable::new(ino(2));
        let mut dir = ROOT;
        for i in 0..5000 {
            dir = t.lookup(dir, OsStr::new("a"), private(100 + i));
        }
        assert_eq!(t.path(dir).map(|p| p.len()), Some(5000));
    }

    #[test]
    fn a_path_unify_relinked_keeps_its_number() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), private(100));
        assert_eq!(t.lookup(ROOT, OsStr::new("a"), shared(900)), a);
    }

    /// Review s21: a private file unify linked behind the mount kept its
    /// number only while the kernel held its node (its own number, or a
    /// broken copy's, was kept by an inode a shared path's lookup never
    /// asks for).
    #[test]
    fn a_private_node_seen_shared_keeps_its_number_when_forgotten() {
        let mut t = InodeTable::new(ino(2));
        let d = t.lookup(ROOT, OsStr::new("d"), private(50));
        // Seen by a getattr or an open (this very inode became the object),
        let a = t.lookup(d, OsStr::new("a"), private(100));
        t.mark_shared(a, ino(100));
        // by an open that found the path linked to another inode,
        let b = t.lookup(d, OsStr::new("b"), private(101));
        t.set_backing(b, ino(900), true);
        // by a lookup (this inode, or another),
        let c = t.lookup(d, OsStr::new("c"), private(102));
        assert_eq!(t.lookup(d, OsStr::new("c"), shared(102)), c);
        let e = t.lookup(d, OsStr::new("e"), private(103));
        assert_eq!(t.lookup(d, OsStr::new("e"), shared(900)), e);
        // a broken copy, by a getattr that found the path linked elsewhere.
        let f = t.lookup(d, OsStr::new("f"), shared(900));
        t.rebind_private(f, ino(104));
        assert!(t.relinked(f, shared(900)));
        for (id, refs) in [(a, 1), (b, 1), (c, 2), (e, 2), (f, 1)] {
            t.forget(id, refs);
            assert!(t.get(id).is_none());
        }
        for (name, id) in [("a", a), ("b", b), ("c", c), ("e", e), ("f", f)] {
            let again = t.lookup(d, OsStr::new(name), shared(900));
            assert_eq!(again, id, "{name}");
        }
        assert!(t.private_numbers.is_empty());
        let n = &t.shared_numbers;
        assert_eq!(n.by_key.len(), n.by_number.len());
    }

    /// Review s34: a node whose one path was found naming another private
    /// inode (a break a rename misled, or the host, replaced its file)
    /// kept its number only while the kernel held it.
    #[test]
    fn a_path_relinked_to_a_private_inode_keeps_its_number_when_forgotten() {
        let mut t = InodeTable::new(ino(2));
        let d = t.lookup(ROOT, OsStr::new("d"), private(50));
        let a = t.lookup(d, OsStr::new("a"), private(100));
        let s = t.lookup(d, OsStr::new("s"), shared(900));
        assert!(t.relinked(a, private(555)));
        assert!(t.relinked(s, private(556)));
        t.forget(a, 1);
        t.forget(s, 1);
        // The filesystem gives the freed inode's number to a new file.
        let new = t.lookup(d, OsStr::new("new"), private(100));
        assert_ne!(new, a, "a new file took the number a's file kept");
        assert_eq!(t.lookup(d, OsStr::new("a"), private(555)), a);
        assert_eq!(t.lookup(d, OsStr::new("s"), private(556)), s);
        assert!(t.shared_numbers.by_key.is_empty(), "s is a copy now");
    }

    /// Review s34: a break of a file numbered from the counter (another
    /// device's) left the number kept for the inode it replaced, whose
    /// inode number the filesystem may give a new file: that file took the
    /// number, and the copy another.
    #[test]
    fn a_break_takes_the_number_off_the_inode_it_replaced() {
        let mut t = InodeTable::new(ino(2));
        let other = |n| BackingIno {
            dev: DEV + 1,
            ino: n,
        };
        let found = |n| Found {
            ino: other(n),
            shared: false,
        };
        let sub = t.lookup(ROOT, OsStr::new("sub"), private(50));
        let f = t.lookup(sub, OsStr::new("f"), found(100));
        assert!(f > SHARED_BASE);
        t.rebind_private(f, other(200));
        t.forget(f, 1);
        assert_ne!(t.lookup(sub, OsStr::new("new"), found(100)), f);
        assert_eq!(t.lookup(sub, OsStr::new("f"), found(200)), f);
    }

    /// A misled break's copy of a file whose node the kernel forgot keeps
    /// that file's number: a private file's own, a shared path's; and a
    /// new file given the replaced inode's number does not take it.
    #[test]
    fn a_copy_of_a_forgotten_file_keeps_its_number() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), private(100));
        t.forget(a, 1);
        t.copied_unseen(ROOT, OsStr::new("a"), private(100), ino(300));
        assert_ne!(t.lookup(ROOT, OsStr::new("new"), private(100)), a);
        assert_eq!(t.lookup(ROOT, OsStr::new("a"), private(300)), a);
        let b = t.lookup(ROOT, OsStr::new("b"), shared(400));
        t.forget(b, 1);
        t.copied_unseen(ROOT, OsStr::new("b"), shared(400), ino(500));
        assert_eq!(t.lookup(ROOT, OsStr::new("b"), private(500)), b);
    }

    #[test]
    fn a_private_node_unify_shared_leaves_the_inode_index() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), private(100));
        t.mark_shared(a, ino(100));
        assert!(t.get(a).unwrap().shared);
        // another path linking the object is not joined to it
        assert_ne!(t.lookup(ROOT, OsStr::new("b"), shared(100)), a);
    }

    #[test]
    fn split_off_gives_the_path_a_new_node() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), shared(100));
        t.rebind_private(a, ino(200));
        t.split_off(a);
        let b = t.lookup(ROOT, OsStr::new("a"), private(200));
        assert_ne!(a, b);
        assert!(t.get(a).is_some(), "kept for its open handles");
    }

    #[test]
    fn a_reused_inode_number_never_joins_an_unlinked_node() {
        let mut t = InodeTable::new(ino(1));
        let f = t.lookup(ROOT, OsStr::new("f"), private(100));
        t.detach(ROOT, OsStr::new("f"));
        t.last_link_gone(f);
        // The kernel still holds f; the filesystem gave 100 to a new file.
        assert!(t.get(f).is_some());
        let g = t.lookup(ROOT, OsStr::new("g"), private(100));
        assert_ne!(g, f, "a new file joined the unlinked one's node");
        assert_eq!(t.get(g).unwrap().names.len(), 1);
    }

    /// The numbers kept for shared paths and broken copies go with the
    /// paths the guest deletes (review s20: they stayed for the mount's
    /// life, growing the daemon with every shared file deleted), while a
    /// node the kernel still holds keeps its number, which no other node
    /// gets meanwhile.
    #[test]
    fn numbers_kept_for_deleted_paths_are_dropped() {
        let mut t = InodeTable::new(ino(2));
        let d = t.lookup(ROOT, OsStr::new("d"), private(50));
        let names: Vec<OsString> = (0..1000).map(|i| format!("f{i}").into()).collect();
        let ids: Vec<u64> = names.iter().map(|n| t.lookup(d, n, shared(100))).collect();
        assert_eq!(t.shared_numbers.by_key.len(), 1000);
        // As Overlay::unlink: a shared path is never the inode's last link.
        for (n, id) in names.iter().zip(&ids) {
            t.remove_name(d, n, false);
            t.forget(*id, 1);
        }
        assert_eq!(t.shared_numbers.by_key.len(), 0);
        assert_eq!(t.shared_numbers.by_number.len(), 0);
        assert_eq!(t.len(), 2, "root and d");

        // A broken copy, deleted while open: it keeps its number while it
        // lives; a new file given its inode number does not get it.
        let a = t.lookup(d, OsStr::new("a"), shared(100));
        t.rebind_private(a, ino(900));
        assert_eq!(t.private_numbers.get(&ino(900)), Some(a));
        t.opened(a);
        t.remove_name(d, OsStr::new("a"), true);
        t.forget(a, 1);
        assert!(t.private_numbers.is_empty());
        assert!(t.get(a).is_some(), "open: the node lives");
        let reused = t.lookup(d, OsStr::new("b"), private(900));
        assert_ne!(reused, a);
        let fresh: Vec<u64> = (0..100)
            .map(|i| t.lookup(d, OsStr::new(&format!("s{i}")), shared(100)))
            .collect();
        assert!(!fresh.contains(&a), "a live node's number was handed out");
        t.closed(a);
        assert!(t.get(a).is_none());

        // A rename over a shared path by a private file: the path's number
        // goes with the file it named.
        let s = fresh[0];
        let p = t.lookup(d, OsStr::new("p"), private(300));
        let before = t.shared_numbers.by_key.len();
        t.rename(d, OsStr::new("p"), d, OsStr::new("s0"), false);
        assert_eq!(t.shared_numbers.by_key.len(), before - 1);
        assert_eq!(t.child(d, OsStr::new("s0")), Some(p));
        assert!(t.get(s).is_some(), "the kernel still holds the old s0");
        let n = &t.shared_numbers;
        assert_eq!(n.by_key.len(), n.by_number.len());
    }

    #[test]
    fn only_counter_numbers_carry_the_mount_generation() {
        let mut t = InodeTable::new(ino(2));
        let own = t.lookup(ROOT, OsStr::new("own"), private(40));
        let linked = t.lookup(ROOT, OsStr::new("linked"), shared(41));
        assert_eq!((own, generation(own, 9)), (40, 0));
        assert!(linked > SHARED_BASE);
        assert_eq!(generation(linked, 9), 9);
        assert_eq!(generation(ROOT, 9), 0, "the kernel's root has generation 0");
    }

    #[test]
    fn forget_drops_a_node_and_its_names() {
        let mut t = InodeTable::new(ino(2));
        let a = t.lookup(ROOT, OsStr::new("a"), private(100));
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert_eq!(t.child(ROOT, OsStr::new("a")), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rename_moves_and_exchange_swaps() {
        let mut t = InodeTable::new(ino(2));
        let d = t.lookup(ROOT, OsStr::new("d"), private(50));
        let a = t.lookup(d, OsStr::new("a"), private(100));
        let b = t.lookup(ROOT, OsStr::new("b"), private(200));
        t.rename(d, OsStr::new("a"), ROOT, OsStr::new("b"), false);
        assert_eq!(t.child(ROOT, OsStr::new("b")), Some(a));
        assert_eq!(t.child(d, OsStr::new("a")), None);
        assert!(t.get(b).unwrap().names.is_empty());
        assert_eq!(
            t.path(a).unwrap(),
            vec![OsString::from("b")],
            "path follows the rename"
        );
        let c = t.lookup(d, OsStr::new("c"), private(300));
        t.rename(d, OsStr::new("c"), ROOT, OsStr::new("b"), true);
        assert_eq!(t.child(ROOT, OsStr::new("b")), Some(c));
        assert_eq!(t.child(d, OsStr::new("c")), Some(a));
    }

    #[test]
    fn inodes_of_another_device_are_their_own_and_numbered_apart() {
        let mut t = InodeTable::new(ino(256));
        let other = |n| Found {
            ino: BackingIno {
                dev: DEV + 1,
                ino: n,
            },
            shared: false,
        };
        let third = |n| Found {
            ino: BackingIno {
                dev: DEV + 2,
                ino: n,
            },
            shared: false,
        };
        let f = t.lookup(ROOT, OsStr::new("hostname"), private(262));
        let s1 = t.lookup(ROOT, OsStr::new("sub1"), other(256));
        let s2 = t.lookup(ROOT, OsStr::new("sub2"), third(256));
        let g = t.lookup(s1, OsStr::new("n5"), other(262));
        let h = t.lookup(s2, OsStr::new("n5"), third(262));
        let mut ids = vec![ROOT, f, s1, s2, g, h];
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6, "{ids:?}");
        // Not their own numbers, which root-device files may have.
        for n in [s1, s2, g, h] {
            assert!(n > SHARED_BASE && n < 1 << 32, "{n:#x}");
        }
        // Hardlinks within one device still join.
        assert_eq!(t.lookup(s1, OsStr::new("link"), other(262)), g);
        // A number is kept after the kernel forgot the node.
        t.forget(h, 1);
        assert_eq!(t.lookup(s2, OsStr::new("n5"), third(262)), h);
    }
}
