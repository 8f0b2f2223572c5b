//! Inodes hardlinked across guests, as `cp -al`, `rsync --link-dest` or
//! util-vserver's `vclone` leave them. Through the mount such an inode is
//! private to nobody: a write in one guest would show in the others
//! (invariant 1). Unify makes it a store object, so that the mount breaks
//! the link on a write like any other shared file — when it can tell that
//! doing so keeps every guest's view: each guest links the inode once, and
//! every link of the inode is in one of the guests of this run. Those that
//! can never be objects (excluded, small, linked twice by one guest; or
//! left alone at hashing or linking: sparse, with inode flags, no room for
//! the marker, another project ID) are split: guests get copies of their
//! own (`split.rs`). So are symlinks, FIFOs, sockets and device nodes
//! shared across guests. Those with links outside the run are reported.

use super::scan::{FileRec, Scan};
use super::Problem;
use crate::store::ObjectId;
use std::collections::HashMap;
use std::path::PathBuf;

/// Why an inode shared across guests is left as it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Left {
    LinksOutside,
}

impl Left {
    fn why(self) -> &'static str {
        match self {
            Left::LinksOutside => "have links outside the guests given",
        }
    }

    fn fix(self) -> &'static str {
        match self {
            Left::LinksOutside => {
                "unify every guest that shares them in one run, or give each guest its own copy"
            }
        }
    }
}

impl Scan {
    /// Sorts [`Scan::hardlinked`] and [`Scan::hardlinked_left`]: inodes
    /// linked once by each of several guests, with no link elsewhere, join
    /// the candidates; a guest's own hardlink groups are left alone
    /// (invariant 3) and counted; inodes shared across guests that can
    /// never be objects go to [`Scan::to_split`]; inodes with links outside
    /// the run are reported when the walk `looked` into excluded trees too
    /// (only then are unseen links telling), else left. An inode that
    /// carries a store marker without being an object of this store
    /// (`marker`: guests copied as root with `cp -a`, `rsync -aHX` or
    /// `tar --xattrs`, which keep xattrs and links, or unified into another
    /// store) is none of these:
    /// the mount shows each of its paths as a file of its own, so each
    /// joins the candidates, to link this store's object; those with links
    /// outside the run are noted in [`Scan::foreign`], or, where the
    /// catalog had it as this object's file (`was_ours`), in
    /// [`Scan::other_stores`]. The candidates
    /// of each inode shared across guests are noted in [`Scan::shared`].
    /// [`Scan::nodes`] (symlinks, FIFOs, device nodes) are sorted alike,
    /// but never become objects: shared across guests, they are split.
    pub fn sort_hardlinks(
        &mut self,
        looked: bool,
        guest_root: impl Fn(u32) -> PathBuf,
        marker: impl Fn(&FileRec) -> Option<ObjectId>,
        was_ours: impl Fn((u64, u64), &ObjectId) -> bool,
    ) {
        // (dev, ino) -> (paths unify may link, paths it may not).
        let mut by_inode: HashMap<(u64, u64), (Vec<FileRec>, Vec<FileRec>)> = HashMap::new();
        for rec in std::mem::take(&mut self.hardlinked) {
            let key = (rec.stat.dev, rec.stat.ino);
            by_inode.entry(key).or_default().0.push(rec);
        }
        // Nodes can never be objects: as excluded files.
        let left = std::mem::take(&mut self.hardlinked_left);
        for rec in left.into_iter().chain(std::mem::take(&mut self.nodes)) {
            let key = (rec.stat.dev, rec.stat.ino);
            by_inode.entry(key).or_default().1.push(rec);
        }
        let mut inodes: Vec<_> = by_inode.into_values().collect();
        for (ok, left) in &mut inodes {
            ok.sort_by(|a, b| (a.guest, &a.rel).cmp(&(b.guest, &b.rel)));
            left.sort_by(|a, b| (a.guest, &a.rel).cmp(&(b.guest, &b.rel)));
        }
        // One order whatever the walk's: candidates are indexed.
        let first = |(ok, left): &(Vec<FileRec>, Vec<FileRec>)| {
            let r = ok.first().or(left.first()).expect("an inode has a path");
            (r.guest, r.rel.clone())
        };
        inodes.sort_by_key(first);
        // A killed run's temp names (removed later in this run) are links
        // of ours, not outside ones: a split killed before its unlink left
        // the shared inode at one.
        let mut temp_links: HashMap<(u64, u64), u64> = HashMap::new();
        for rec in &self.stale_tmp {
            *temp_links.entry((rec.stat.dev, rec.stat.ino)).or_default() += 1;
        }
        let mut reported: HashMap<Left, (u64, PathBuf)> = HashMap::new();
        // Marked inodes with links the walk did not see: most likely
        // another store's objects (a guest unified into two stores).
        let mut elsewhere: Option<(u64, PathBuf)> = None;
        let mut other_stores: Option<OtherStores> = None;
        for (mut ok, left) in inodes {
            let all: Vec<&FileRec> = ok.iter().chain(&left).collect();
            let key = (all[0].stat.dev, all[0].stat.ino);
            let nlink =
                (all[0].stat.nlink).saturating_sub(temp_links.get(&key).copied().unwrap_or(0));
            let mut guests: Vec<u32> = all.iter().map(|r| r.guest).collect();
            guests.sort_unstable();
            let once_each = guests.windows(2).all(|w| w[0] != w[1]);
            guests.dedup();
            let all_found = all.len() as u64 == nlink;
            // A store marker (this store's or another's) on an inode that
            // is no object here: the mount shows each of its paths as a
            // file of its own, never as links of one, in whichever guests
            // and however many: each joins the candidates, to link an
            // object of this store. Its paths that can never be objects
            // stay on it, still shown as files of their own.
            // (A node is never opened: a device's open may act.)
            // One the catalog had as this object's file, before it was
            // looked up again (a copied store's catalog names its
            // original's inodes): linking it moves its guests to this
            // store, away from the original, which still links it.
            let id = all[0].stat.is_file().then(|| marker(all[0])).flatten();
            if let Some(id) = id {
                if !all_found {
                    let path = || guest_root(all[0].guest).join(&all[0].rel);
                    if was_ours(key, &id) {
                        if let Some(first) = ok.first() {
                            let o = other_stores.get_or_insert_with(|| OtherStores {
                                count: 0,
                                example: guest_root(first.guest).join(&first.rel),
                                guests: Vec::new(),
                            });
                            o.count += ok.len() as u64;
                            o.guests.extend(ok.iter().map(|r| r.guest));
                        }
                    } else {
                        elsewhere.get_or_insert((0, path())).0 += 1;
                    }
                }
                self.candidates.append(&mut ok);
                continue;
            }
            let verdict = if !all_found {
                // Links the walk did not see: telling only when excluded
                // trees were walked too. Not copied unasked (they may be a
                // snapshot's): reported, and the guests stay unsettled, so
                // the next run looks again.
                if !looked {
                    None
                } else {
                    self.unsettled.extend(&guests);
                    Some(Left::LinksOutside)
                }
            } else if guests.len() == 1 {
                None // the guest's own group
            } else if left.is_empty() && once_each {
                let start = self.candidates.len();
                self.candidates.append(&mut ok);
                self.shared.push(start..self.candidates.len());
                continue;
            } else {
                // Never an object, yet shared: each guest gets its own.
                let mut recs: Vec<FileRec> = ok.into_iter().chain(left).collect();
                recs.sort_by(|a, b| (a.guest, &a.rel).cmp(&(b.guest, &b.rel)));
                self.to_split.push((true, recs));
                continue;
            };
            // Excluded and small paths were counted as such by the walk;
            // nodes are not counted.
            self.counts.guest_hardlinks += ok.len() as u64;
            if let Some(kind) = verdict {
                let example = all[0];
                reported
                    .entry(kind)
                    .or_insert_with(|| (0, guest_root(example.guest).join(&example.rel)))
                    .0 += all.len() as u64;
            }
        }
        let mut kinds: Vec<_> = reported.into_iter().collect();
        kinds.sort_by_key(|(kind, _)| *kind);
        for (kind, (count, example)) in kinds {
            self.problems.push(Problem::new(
                example,
                format!(
                    "{count} paths (this one first) are hardlinked across guests or to \
                     places outside them (a `cp -al` clone?) and {}: left shared, so a \
                     write through one guest's mount shows in the others; {}",
                    kind.why(),
                    kind.fix()
                ),
            ));
        }
        self.foreign = elsewhere;
        self.other_stores = other_stores.map(|mut o| {
            o.guests.sort_unstable();
            o.guests.dedup();
            o
        });
    }
}

/// Marked inodes with links outside the run that the catalog had as the
/// file of their object (see [`Scan::sort_hardlinks`]): the objects of the
/// store this one was copied from, which the run would link to this
/// store's, moving their guests away from it.
#[derive(Debug)]
pub struct OtherStores {
    /// Their paths the run would link.
    pub count: u64,
    /// The first one.
    pub example: PathBuf,
    /// The guests of these paths.
    pub guests: Vec<u32>,
}

impl Scan {
    /// The inodes of [`Scan::shared`] some of whose candidates were left as
    /// they were (`left`: sparse, with inode flags, no room for the marker,
    /// another project ID, in use, …) by several guests: still shared, and
    /// no object, so each guest but the first gets its own (`split.rs`).
    pub fn shared_left(&self, left: impl Fn(usize) -> bool) -> Vec<(bool, Vec<FileRec>)> {
        let inodes = self.shared.iter().filter_map(|range| {
            let recs: Vec<FileRec> = (range.clone())
                .filter(|&i| left(i))
                .map(|i| self.candidates[i].clone())
                .collect();
            // Sorted by guest (see sort_hardlinks).
            let guests = recs.windows(2).any(|w| w[0].guest != w[1].guest);
            guests.then_some((true, recs))
        });
        inodes.collect()
    }
}

/// How many paths of `inodes` a split gives copies of their own.
pub fn split_paths(inodes: &[(bool, Vec<FileRec>)]) -> u64 {
    let paths = inodes.iter().map(|(keep_first, recs)| {
        let kept = |r: &&FileRec| *keep_first && r.guest == recs[0].guest;
        recs.iter().filter(|r| !kept(r)).count() as u64
    });
    paths.sum()
}

/// The bytes of the copies a split of `inodes` makes: one per guest but
/// the keeper, of a regular file's data (as [`super::split::split_all`]).
pub fn split_bytes(inodes: &[(bool, Vec<FileRec>)]) -> u64 {
    let bytes = inodes.iter().map(|(keep_first, recs)| {
        let guests = recs.chunk_by(|a, b| a.guest == b.guest).count();
        let copies = guests - usize::from(*keep_first);
        match recs[0].stat.is_file() {
            true => copies as u64 * recs[0].stat.size,
            false => 0,
        }
    });
    bytes.sum()
}
