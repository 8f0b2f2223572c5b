//! Walking guests: every regular file that unify may link, the files that
//! already link a store object, and what was left out and why.
//!
//! The walk goes through directory fds, never follows symlinks and stays on
//! the guest's filesystem. Its paths are only used as names: every later
//! open goes through `sys::open_beneath` from the guest's root fd, so a
//! directory swapped for a symlink mid-walk cannot lead unify out of the guest.

use super::exclude::{Excludes, Mask};
use super::listings::{self, DirKey, Listing, Listings};
use super::split::is_split_temp;
use super::{Guest, Problem};
use crate::backup::restore::MAX_PATH;
use crate::catalog::{links_digest, Map, ObjectInode, ObjectRow};
use crate::store::{read_marker, ObjectId, Store};
use crate::sys;
use crate::sys::Stat;
use crate::words::{counted, word};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Prefix of the temp names unify gives links while replacing a file.
pub const TMP_PREFIX: &str = ".unifs-tmp-";

/// True for a temp name exactly as unify makes them (`.unifs-tmp-PID-SEQ`).
/// A guest's own file that merely starts with the prefix is an ordinary
/// file: only unify's own leftovers are ever removed.
pub fn is_tmp_name(name: &OsStr) -> bool {
    let Some(rest) = name.as_bytes().strip_prefix(TMP_PREFIX.as_bytes()) else {
        return false;
    };
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let mut parts = rest.splitn(2, |&b| b == b'-');
    let (pid, seq) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    digits(pid) && digits(seq) && pid.len() <= 10 && seq.len() <= 20
}

/// A regular file unify may replace.
#[derive(Debug, Clone)]
pub struct FileRec {
    pub guest: u32,
    /// Relative to the guest root.
    pub rel: PathBuf,
    pub stat: Stat,
}

/// A guest path that already links object copy `copy` of `id`.
#[derive(Debug, Clone)]
pub struct LinkedRec {
    pub guest: u32,
    pub rel: PathBuf,
    pub id: ObjectId,
    pub copy: u32,
    /// Found by its marker, not in the catalog (a run was killed before
    /// recording it): the object file's stat.
    pub recovered: Option<Box<Stat>>,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ScanCounts {
    pub files: u64,
    pub bytes: u64,
    pub excluded: u64,
    pub too_small: u64,
    pub guest_hardlinks: u64,
    /// Directories read, and directories whose kept listing stood in.
    pub dirs_read: u64,
    pub dirs_cached: u64,
}

impl ScanCounts {
    fn add(&mut self, o: &ScanCounts) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.excluded += o.excluded;
        self.too_small += o.too_small;
        self.guest_hardlinks += o.guest_hardlinks;
        self.dirs_read += o.dirs_read;
        self.dirs_cached += o.dirs_cached;
    }
}

#[derive(Debug, Default)]
pub struct Scan {
    pub candidates: Vec<FileRec>,
    /// Files with more than one link that link no object: a guest's own
    /// hardlink groups, or inodes hardlinked across guests (clones made
    /// with `cp -al`); [`Scan::sort_hardlinks`] tells them apart.
    pub hardlinked: Vec<FileRec>,
    /// Files with more than one link that are excluded or too small.
    pub hardlinked_left: Vec<FileRec>,
    /// Symlinks, FIFOs, sockets and device nodes with more than one link
    /// (looked for only with [`ScanContext::look_in_excluded`]): a `cp -al`
    /// clone shares them too, and a chown, chmod or touch through one
    /// guest's mount would reach the others.
    pub nodes: Vec<FileRec>,
    /// Candidates of inodes linked once by each of several guests (see
    /// [`Scan::sort_hardlinks`]), one range of `candidates` each: those that
    /// do not become an object after all are split at the end of the run.
    pub shared: Vec<std::ops::Range<usize>>,
    /// Inodes shared across guests that unify gives guests copies of (see
    /// `split.rs`): whether the first guest keeps the inode, and the paths,
    /// sorted by guest.
    pub to_split: Vec<(bool, Vec<FileRec>)>,
    /// Guests whose sharing with places outside the run was reported (or
    /// whose split failed): their next run looks into excluded trees again.
    pub unsettled: Vec<u32>,
    pub linked: Vec<LinkedRec>,
    /// `.unifs-tmp-*` names left by a killed run.
    pub stale_tmp: Vec<FileRec>,
    pub counts: ScanCounts,
    pub problems: Vec<Problem>,
    /// Marked inodes with links outside the run (most likely another
    /// store's objects), set by [`Scan::sort_hardlinks`]: how many, and
    /// the first one's path.
    pub foreign: Option<(u64, PathBuf)>,
    /// Those of them the catalog had as their object's file, set by
    /// [`Scan::sort_hardlinks`].
    pub other_stores: Option<super::clones::OtherStores>,
    /// Objects linked by excluded paths (their sizes count as scanned).
    pub excluded_linked: Vec<ObjectId>,
    /// Per guest: [`links_digest`] of its links, computed by the walk.
    pub digests: Vec<(u32, [u8; 32])>,
    /// The listing of every directory walked, to keep for the next run
    /// (none where listings are not kept).
    pub listings: Vec<Listing>,
    /// Per guest: the listings kept from its last run.
    pub kept: Vec<(u32, Listings)>,
    /// Scans of subtrees walked in parallel, in walk order, not yet merged
    /// (see [`Scan::flatten`]).
    parts: Vec<Scan>,
}

impl Scan {
    /// Calls `f` with every link found, this scan's and its parts'.
    fn each_linked<'a>(&'a self, f: &mut impl FnMut(&'a LinkedRec)) {
        self.linked.iter().for_each(&mut *f);
        for p in &self.parts {
            p.each_linked(f);
        }
    }

    /// One scan of all of `scans` and their parts, in order. Each record is
    /// moved once, into vectors sized once: merging level by level moved
    /// them again at each level and was a good part of a re-run's time.
    pub fn flatten(scans: Vec<Scan>) -> Scan {
        fn gather(s: Scan, all: &mut Vec<Scan>) {
            let mut s = s;
            let parts = std::mem::take(&mut s.parts);
            all.push(s);
            for p in parts {
                gather(p, all);
            }
        }
        let mut all = Vec::new();
        for s in scans {
            gather(s, &mut all);
        }
        // Sized once where it counts: a file's records and a directory's
        // listing (the other vectors stay small).
        let mut out = Scan::default();
        out.candidates
            .reserve_exact(all.iter().map(|s| s.candidates.len()).sum());
        out.linked
            .reserve_exact(all.iter().map(|s| s.linked.len()).sum());
        out.listings
            .reserve_exact(all.iter().map(|s| s.listings.len()).sum());
        for s in all {
            out.absorb(s);
        }
        out
    }

    /// Appends everything of `other` to this scan (its parts to ours).
    fn absorb(&mut self, other: Scan) {
        // Every field named: a field added to Scan must be added here.
        let Scan {
            candidates,
            hardlinked,
            hardlinked_left,
            nodes,
            shared,
            to_split,
            unsettled,
            linked,
            stale_tmp,
            counts,
            problems,
            foreign,
            other_stores,
            excluded_linked,
            digests,
            listings,
            kept,
            parts,
        } = other;
        self.candidates.extend(candidates);
        self.hardlinked.extend(hardlinked);
        self.hardlinked_left.extend(hardlinked_left);
        self.nodes.extend(nodes);
        // Set only after the merge (by sort_hardlinks).
        debug_assert!(shared.is_empty());
        self.to_split.extend(to_split);
        self.unsettled.extend(unsettled);
        self.linked.extend(linked);
        self.stale_tmp.extend(stale_tmp);
        self.counts.add(&counts);
        self.problems.extend(problems);
        // Set only after the merge (by sort_hardlinks).
        debug_assert!(foreign.is_none() && other_stores.is_none());
        self.excluded_linked.extend(excluded_linked);
        self.digests.extend(digests);
        self.listings.extend(listings);
        self.kept.extend(kept);
        self.parts.extend(parts);
    }

    /// Where the records one directory adds start, for [`Scan::rollback`].
    fn mark(&self) -> Mark {
        Mark {
            lens: [
                self.candidates.len(),
                self.hardlinked.len(),
                self.hardlinked_left.len(),
                self.nodes.len(),
                self.linked.len(),
                self.stale_tmp.len(),
                self.problems.len(),
                self.excluded_linked.len(),
            ],
            counts: self.counts,
        }
    }

    /// Drops what was added since `mark` by one directory's entries (the
    /// fields [`Walker::entries`] adds to).
    fn rollback(&mut self, mark: Mark) {
        let [a, b, c, d, e, f, g, h] = mark.lens;
        self.candidates.truncate(a);
        self.hardlinked.truncate(b);
        self.hardlinked_left.truncate(c);
        self.nodes.truncate(d);
        self.linked.truncate(e);
        self.stale_tmp.truncate(f);
        self.problems.truncate(g);
        self.excluded_linked.truncate(h);
        self.counts = mark.counts;
    }
}

#[derive(Clone, Copy)]
struct Mark {
    lens: [usize; 8],
    counts: ScanCounts,
}

pub struct ScanContext<'a> {
    pub store: Option<&'a Store>,
    pub excludes: &'a Excludes,
    pub min_size: u64,
    /// (dev, ino) of every object file the catalog knows.
    pub object_inodes: &'a Map<(u64, u64), ObjectInode>,
    /// Those of object files found gone, whose numbers may be another
    /// file's now: only a file with the object's marker links it.
    pub unverified: &'a Map<(u64, u64), ObjectInode>,
    /// Take the listings kept from the last run where they still match
    /// (not with `--paranoid`).
    pub use_listings: bool,
    /// Walk excluded trees too, for files hardlinked across guests (a
    /// `cp -al` clone's /var): when some guest is new or unsettled.
    pub look_in_excluded: bool,
}

/// Filesystems whose directory entries carry the inode number `stat`
/// reports (`d_ino == st_ino` for regular files): ext2/3/4, xfs, btrfs,
/// tmpfs. On others (overlayfs may differ) every file is stat'ed.
const TRUSTED_D_INO: [i64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994];

pub fn scan_guest(ctx: &ScanContext, index: u32, guest: &Guest) -> Scan {
    let mut scan = Scan::default();
    let walk = guest.fd.try_clone().and_then(|fd| {
        let walker = Walker {
            ctx,
            index,
            guest,
            dev: sys::fstat(fd.as_fd())?.dev,
            trust_d_ino: TRUSTED_D_INO.contains(&sys::fs_type(fd.as_fd())?),
            kept: None,
        };
        let walker = Walker {
            kept: match ctx.store {
                Some(store) if ctx.use_listings && walker.trust_d_ino && guest.row.id >= 0 => {
                    Some(Listings::load(&listings::cache_path(store, guest.row.id)))
                }
                _ => None,
            },
            ..walker
        };
        walker.dir(&mut scan, fd, PathBuf::new(), 0, 0);
        if let Some(kept) = walker.kept {
            scan.kept.push((index, kept));
        }
        Ok(())
    });
    if let Err(e) = walk {
        scan.problems.push(Problem::new(&guest.root, e.to_string()));
    }
    let mut linked = Vec::new();
    scan.each_linked(&mut |l| linked.push(l));
    let digest = links_digest(linked.into_iter().map(|l| (l.rel.as_path(), &l.id)));
    scan.digests.push((index, digest));
    scan
}

impl Scan {
    /// Counts the bytes of the files found linking known objects (the walk
    /// does not stat them) and drops those below `min_size`.
    pub fn size_linked(&mut self, objects: &Map<ObjectId, ObjectRow>, min_size: u64) {
        let size = |id: &ObjectId| objects.get(id).map_or(0, |o| o.size);
        let counts = &mut self.counts;
        for id in &self.excluded_linked {
            counts.bytes += size(id);
        }
        let mut dropped = HashSet::new();
        self.linked.retain(|l| {
            if l.recovered.is_some() {
                return true; // stat'ed and counted by the walk
            }
            let size = size(&l.id);
            counts.bytes += size;
            if size < min_size {
                counts.too_small += 1;
                dropped.insert(l.guest);
            }
            size >= min_size
        });
        // The walk's digests covered the dropped links: take them again
        // (each guest's links sorted out once, not a pass over all for each).
        if dropped.is_empty() {
            return;
        }
        let mut mine: HashMap<u32, Vec<(&Path, &ObjectId)>> = HashMap::new();
        for l in self.linked.iter().filter(|l| dropped.contains(&l.guest)) {
            mine.entry(l.guest)
                .or_default()
                .push((l.rel.as_path(), &l.id));
        }
        for (g, digest) in self.digests.iter_mut() {
            if dropped.contains(g) {
                let links = mine.get(g).map_or(&[][..], |v| &v[..]);
                *digest = links_digest(links.iter().copied());
            }
        }
    }
}

/// Directories this close to the guest root walk their subdirectories in
/// parallel: with cold caches the walk waits on the disk, and more
/// directories read at once keep it busy.
const PARALLEL_DEPTH: u32 = 3;

/// Directories deeper than this are not entered (and reported): the walk
/// recurses once a level on threads with 2 MiB stacks, and a guest must not
/// be able to crash unify for every guest by nesting directories. (manifest
/// stops at the same depth.)
pub const MAX_DEPTH: u32 = 1000;

/// Walks a guest through directory fds: each directory is opened beneath
/// its parent (`openat2`, no symlinks, no mount crossing), each entry
/// stat'ed relative to its directory, so no path is looked up twice, a
/// directory swapped for a symlink mid-walk is not followed and directories
/// on another filesystem are not entered.
struct Walker<'a> {
    ctx: &'a ScanContext<'a>,
    index: u32,
    guest: &'a Guest,
    dev: u64,
    /// Files whose entry names a known object inode need no stat. Also:
    /// directory listings are kept (ctime is trusted too).
    trust_d_ino: bool,
    /// The listings kept from the last run.
    kept: Option<Listings>,
}

impl Walker<'_> {
    /// Takes the entries of directory `fd` (`rel`) from `records`: files
    /// into `scan`, subdirectories into `subdirs`. With `kept` (the listing
    /// is from the last run), stops at a name that is gone and returns false.
    #[allow(clippy::too_many_arguments)]
    fn entries(
        &self,
        scan: &mut Scan,
        fd: BorrowedFd,
        rel: &Path,
        records: &[u8],
        parent_mask: Mask,
        subdirs: &mut Vec<(OsString, PathBuf, Mask)>,
        kept: bool,
    ) -> io::Result<bool> {
        // The absolute path in the guest that excludes match, one buffer per
        // directory.
        let mut abs = Path::new("/").join(rel);
        let mut all_there = true;
        let mut too_long = 0u64;
        sys::parse_dirents(records, |entry| {
            let name = entry.name;
            if name == "." || name == ".." || !all_there {
                return;
            }
            // Left alone, file or directory: restore could not rebuild such
            // a path, and the catalog, the hash cache and the kept listings
            // hold every path whole (a guest of long names nested deep made
            // them grow with files × depth, run after run).
            if joined_len(rel, name) >= MAX_PATH {
                too_long += 1;
                return;
            }
            let child = rel.join(name);
            abs.push(name);
            let mask = self.ctx.excludes.mask(parent_mask, &abs);
            abs.pop();
            match entry.kind {
                libc::DT_DIR => subdirs.push((name.to_os_string(), child, mask)),
                libc::DT_REG if self.trust_d_ino && self.known_object(name, entry.ino) => {
                    let object = self.ctx.object_inodes[&(self.dev, entry.ino)];
                    self.linked(scan, child, object, mask);
                }
                libc::DT_REG | libc::DT_UNKNOWN => {
                    let st = match sys::stat_entry(fd, name) {
                        // A file bind-mounted into the guest is not the
                        // guest's (the walk does not enter mounted
                        // directories either).
                        Ok((_, true)) => return,
                        Ok((st, false)) => st,
                        Err(e) if kept && e.raw_os_error() == Some(libc::ENOENT) => {
                            all_there = false;
                            return;
                        }
                        Err(e) => return self.problem(scan, &child, e),
                    };
                    if st.is_dir() {
                        subdirs.push((name.to_os_string(), child, mask));
                    } else if st.is_file() {
                        self.file(scan, fd, name, child, st, mask);
                    } else if self.ctx.look_in_excluded || is_split_temp(name) {
                        self.node(scan, child, st);
                    }
                }
                // Stat'ed only in a run that looks for clones' links, or
                // for a killed split's leftover.
                _ if self.ctx.look_in_excluded || is_split_temp(name) => {
                    match sys::stat_entry(fd, name) {
                        Ok((st, false)) if st.is_dir() => {
                            subdirs.push((name.to_os_string(), child, mask))
                        }
                        Ok((st, false)) if st.is_file() => {
                            self.file(scan, fd, name, child, st, mask)
                        }
                        Ok((st, false)) => self.node(scan, child, st),
                        Ok((_, true)) => {}
                        Err(e) if kept && e.raw_os_error() == Some(libc::ENOENT) => {
                            all_there = false
                        }
                        Err(e) => self.problem(scan, &child, e),
                    }
                }
                _ => {}
            }
        })?;
        if too_long > 0 {
            let why = format!(
                "{} in it {} guest paths of {MAX_PATH} bytes or more: left as {} (not \
                 linked, nothing below {} walked), as restore could not rebuild {}",
                counted(too_long, "name", "names"),
                word(too_long, "makes", "make"),
                word(too_long, "it is", "they are"),
                word(too_long, "it", "them"),
                word(too_long, "it", "them")
            );
            scan.problems
                .push(Problem::new(self.guest.root.join(rel), why));
        }
        Ok(all_there)
    }

    fn dir(&self, scan: &mut Scan, fd: OwnedFd, rel: PathBuf, parent_mask: Mask, depth: u32) {
        // Where listings are kept: the directory's stat, taken before it is
        // read (a change while reading leaves a newer ctime than the kept).
        let mut key = None;
        if self.trust_d_ino {
            let before = listings::clock();
            match sys::fstat_dir(fd.as_fd()) {
                // Another filesystem though no mount (a btrfs subvolume,
                // whose inode numbers are not the store's): not entered, as
                // a mount is not.
                Ok((st, _)) if st.dev != self.dev => return,
                // fscrypt: the names change with the key, the ctime does not.
                Ok((st, encrypted)) => {
                    key = (!encrypted && listings::keepable(&st, before)).then(|| DirKey::of(&st))
                }
                Err(e) => return self.problem(scan, &rel, e),
            }
        }
        let mut subdirs = Vec::new();
        let kept = key.and_then(|k| self.kept.as_ref()?.get(&rel, &k));
        let mut from_kept = false;
        if let Some((_, records)) = kept {
            let mark = scan.mark();
            let fd = fd.as_fd();
            match self.entries(scan, fd, &rel, records, parent_mask, &mut subdirs, true) {
                Ok(true) => from_kept = true,
                // A name of the kept listing is gone though the stat
                // matched: not to be trusted; read the directory instead.
                Ok(false) | Err(_) => {
                    scan.rollback(mark);
                    subdirs.clear();
                }
            }
        }
        let mut records = None;
        if from_kept {
            scan.counts.dirs_cached += 1;
        } else {
            let fd = fd.as_fd();
            let read = sys::read_dir_records(fd).and_then(|raw| {
                self.entries(scan, fd, &rel, &raw, parent_mask, &mut subdirs, false)?;
                Ok(raw)
            });
            match read {
                Ok(raw) => {
                    scan.counts.dirs_read += 1;
                    records = Some(raw);
                }
                Err(e) => {
                    key = None;
                    self.problem(scan, &rel, e);
                }
            }
        }
        let look = self.ctx.look_in_excluded;
        subdirs.retain(|(name, child, mask)| {
            let pruned = self.ctx.excludes.prune(*mask);
            if pruned && look {
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK;
                if let Ok(sub) = sys::open_beneath(fd.as_fd(), Path::new(name), flags) {
                    self.excluded_tree(scan, sub, child.clone(), depth + 1);
                }
            }
            !pruned
        });
        // A subdirectory of a kept listing that is gone, or no directory any
        // more: the listing was stale, and is not kept again.
        let stale = AtomicBool::new(false);
        let enter = |scan: &mut Scan, (name, child, mask): (OsString, PathBuf, Mask)| {
            // Beneath, without symlinks or mount crossings: a directory
            // swapped for a symlink, or another filesystem mounted here, is
            // not entered.
            if depth + 1 > MAX_DEPTH {
                let why = format!("nested deeper than {MAX_DEPTH} directories; not entered");
                return scan
                    .problems
                    .push(Problem::new(self.guest.root.join(&child), why));
            }
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK;
            let gone = |e: &io::Error| {
                matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                )
            };
            match sys::open_beneath(fd.as_fd(), Path::new(&name), flags) {
                Ok(sub) => self.dir(scan, sub, child, mask, depth + 1),
                Err(e) if from_kept && gone(&e) => {
                    stale.store(true, Ordering::Relaxed);
                    self.problem(scan, &child, e)
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EXDEV)) => {}
                Err(e) => self.problem(scan, &child, e),
            }
        };
        if depth < PARALLEL_DEPTH && subdirs.len() > 1 {
            let subs: Vec<Scan> = subdirs
                .into_par_iter()
                .map(|sub| {
                    let mut scan = Scan::default();
                    enter(&mut scan, sub);
                    scan
                })
                .collect();
            for sub in subs {
                // Small ones now (a part costs a Scan and its vectors for as
                // long as the walk), large ones once, at the end.
                if sub.parts.is_empty() {
                    scan.absorb(sub);
                } else {
                    scan.parts.push(sub);
                }
            }
        } else {
            for sub in subdirs {
                enter(scan, sub);
            }
        }
        let guest = self.index;
        let stale = stale.into_inner();
        if stale {
            scan.listings.push(Listing::Dropped { guest });
        }
        match (key, stale, records, kept) {
            (Some(key), false, Some(records), _) => {
                scan.listings.push(Listing::read(guest, rel, key, records))
            }
            (Some(_), false, None, Some((index, _))) => {
                scan.listings.push(Listing::Kept { guest, index })
            }
            _ => {}
        }
    }

    /// An excluded tree, walked only for files and nodes with links
    /// elsewhere (see
    /// [`ScanContext::look_in_excluded`]); nothing in it is counted.
    fn excluded_tree(&self, scan: &mut Scan, fd: OwnedFd, rel: PathBuf, depth: u32) {
        let mut subdirs = Vec::new();
        let _ = sys::read_dir(fd.as_fd(), |entry| {
            let name = entry.name;
            // Too long a path: left alone, as in the walk.
            if name == "." || name == ".." || joined_len(&rel, name) >= MAX_PATH {
                return;
            }
            match entry.kind {
                libc::DT_DIR => subdirs.push(name.to_os_string()),
                _ => {
                    let Ok((stat, false)) = sys::stat_entry(fd.as_fd(), name) else {
                        return;
                    };
                    if stat.is_file() && is_tmp_name(name) {
                        // A killed run's leftover: found and reported.
                        let rel = rel.join(name);
                        scan.stale_tmp.push(FileRec {
                            guest: self.index,
                            rel,
                            stat,
                        });
                    } else if stat.is_dir() {
                        subdirs.push(name.to_os_string());
                    } else if stat.is_file()
                        && stat.nlink > 1
                        && !self.ctx.object_inodes.contains_key(&(stat.dev, stat.ino))
                    {
                        scan.hardlinked_left.push(FileRec {
                            guest: self.index,
                            rel: rel.join(name),
                            stat,
                        });
                    } else if !stat.is_file() {
                        self.node(scan, rel.join(name), stat);
                    }
                }
            }
        });
        if depth >= MAX_DEPTH {
            return;
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK;
        for name in subdirs {
            if let Ok(sub) = sys::open_beneath(fd.as_fd(), Path::new(&name), flags) {
                self.excluded_tree(scan, sub, rel.join(&name), depth + 1);
            }
        }
    }

    /// A symlink, FIFO, socket or device node: kept if it has other links,
    /// which a clone may share (`clones.rs`). Nothing else looks at them,
    /// but for a node split's temp name a killed run left (`stale.rs`).
    fn node(&self, scan: &mut Scan, rel: PathBuf, stat: Stat) {
        if rel.file_name().is_some_and(is_split_temp) {
            return scan.stale_tmp.push(FileRec {
                guest: self.index,
                rel,
                stat,
            });
        }
        if stat.nlink > 1 && !stat.is_dir() && !stat.is_file() {
            scan.nodes.push(FileRec {
                guest: self.index,
                rel,
                stat,
            });
        }
    }

    /// A regular file whose entry names an object file the catalog knows:
    /// it links that object (object files never change), so its stat is
    /// not needed. Leftover temp names still go the long way.
    fn known_object(&self, name: &OsStr, ino: u64) -> bool {
        !is_tmp_name(name) && self.ctx.object_inodes.contains_key(&(self.dev, ino))
    }

    /// A file that links a known object: counted, then listed as linked
    /// unless excluded (then its catalog row is dropped). Its size is the
    /// object's, counted by [`Scan::size_linked`].
    fn linked(&self, scan: &mut Scan, rel: PathBuf, object: ObjectInode, mask: Mask) {
        scan.counts.files += 1;
        if self.ctx.excludes.excluded(mask) {
            scan.counts.excluded += 1;
            scan.excluded_linked.push(object.id);
        } else {
            scan.linked.push(LinkedRec {
                guest: self.index,
                rel,
                id: object.id,
                copy: object.copy,
                recovered: None,
            });
        }
    }

    fn file(
        &self,
        scan: &mut Scan,
        dir: BorrowedFd,
        name: &OsStr,
        rel: PathBuf,
        stat: Stat,
        mask: Mask,
    ) {
        let (ctx, index) = (self.ctx, self.index);
        if is_tmp_name(name) {
            scan.stale_tmp.push(FileRec {
                guest: index,
                rel,
                stat,
            });
            return;
        }
        if let Some(&object) = ctx.object_inodes.get(&(stat.dev, stat.ino)) {
            return self.linked(scan, rel, object, mask);
        }
        if let Some(&object) = ctx.unverified.get(&(stat.dev, stat.ino)) {
            if marker_of(dir, name, &stat) == Some(object.id) {
                return self.linked(scan, rel, object, mask);
            }
        }
        // A mount's copy in progress (or a killed one's): the mount hides
        // and removes it by its mark, which a link to an object would
        // spread to every guest (an object's id leaves the store's xattrs
        // out) or take away. Left alone, uncounted. (A guest's own file by
        // such a name has no mark: an ordinary file.)
        if crate::fs::cow::is_temp(dir, name) {
            return;
        }
        scan.counts.files += 1;
        scan.counts.bytes += stat.size;
        let excluded = ctx.excludes.excluded(mask);
        if excluded || stat.size == 0 || stat.size < ctx.min_size {
            if excluded {
                scan.counts.excluded += 1;
            } else {
                scan.counts.too_small += 1;
            }
            if stat.nlink > 1 {
                // Never an object, but it may be shared with another guest.
                scan.hardlinked_left.push(FileRec {
                    guest: index,
                    rel,
                    stat,
                });
            }
            return;
        }
        if stat.nlink > 1 {
            match ctx.store.and_then(|s| recover_object(s, dir, name, &stat)) {
                Some((id, copy)) => scan.linked.push(LinkedRec {
                    guest: index,
                    rel,
                    id,
                    copy,
                    recovered: Some(Box::new(stat)),
                }),
                None => scan.hardlinked.push(FileRec {
                    guest: index,
                    rel,
                    stat,
                }),
            }
            return;
        }
        scan.candidates.push(FileRec {
            guest: index,
            rel,
            stat,
        });
    }

    fn problem(&self, scan: &mut Scan, rel: &Path, e: std::io::Error) {
        scan.problems
            .push(Problem::new(self.guest.root.join(rel), e.to_string()));
    }
}

/// The length of `rel.join(name)`, without making it.
fn joined_len(rel: &Path, name: &OsStr) -> usize {
    match rel.as_os_str().len() {
        0 => name.len(),
        n => n + 1 + name.len(),
    }
}

/// A linked file the catalog does not know (`name` in `dir`, never through
/// a symlink): is it an object file (its marker names an object whose file
/// is this very inode)?
fn recover_object(
    store: &Store,
    dir: BorrowedFd,
    name: &OsStr,
    stat: &Stat,
) -> Option<(ObjectId, u32)> {
    let flags = libc::O_RDONLY | libc::O_NOATIME;
    let fd = sys::open_regular_at(dir, name, flags).ok()?;
    let st = sys::fstat(fd.as_fd()).ok()?;
    if (st.dev, st.ino) != (stat.dev, stat.ino) {
        return None;
    }
    let id = read_marker(fd.as_fd()).ok()??;
    let copy = store.find_copy(&id, stat.dev, stat.ino).ok()??;
    Some((id, copy))
}

/// The store marker of `name` in `dir`, if it is still the inode `stat`
/// describes.
fn marker_of(dir: BorrowedFd, name: &OsStr, stat: &Stat) -> Option<ObjectId> {
    let flags = libc::O_RDONLY | libc::O_NOATIME;
    let fd = sys::open_regular_at(dir, name, flags).ok()?;
    let st = sys::fstat(fd.as_fd()).ok()?;
    if (st.dev, st.ino) != (stat.dev, stat.ino) {
        return None;
    }
    read_marker(fd.as_fd()).ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unifys_own_temp_names_count_as_leftovers() {
        assert!(is_tmp_name(OsStr::new(".unifs-tmp-1234-0")));
        assert!(is_tmp_name(OsStr::new(".unifs-tmp-7-123456")));
        for guest_name in [
            ".unifs-tmp-notes",
            ".unifs-tmp-",
            ".unifs-tmp-12-",
            ".unifs-tmp--3",
            ".unifs-tmp-1-2-3",
            ".unifs-tmp-1-2.bak",
            "unifs-tmp-1-2",
        ] {
            assert!(!is_tmp_name(OsStr::new(guest_name)), "{guest_name}");
        }
    }
}
