//! Inodes hardlinked across guests, as `cp -al`, `rsync --link-dest` or
//! util-vserver's `vclone` leave them. Through the mount such an inode is
//! private to nobody: a write in one guest would show in the others
//! (invariant 1). Unify makes it a store object, so that the mount breaks
//! the link on a write like any other shared file — when it can tell that
//! doing so keeps every guest's view: each guest links the inode once, and
//! every link of the inode is in one of the guests of this run.

use super::scan::{FileRec, Scan};
use super::Problem;
use std::collections::HashMap;

impl Scan {
    /// Sorts [`Scan::hardlinked`]: inodes linked once by each of several
    /// guests, with no link elsewhere, join the candidates; a guest's own
    /// hardlink groups are left alone (invariant 3) and counted; an inode
    /// shared across guests that cannot become an object (a guest links it
    /// twice, or a link is outside the guests given) is left and reported.
    pub fn sort_hardlinks(&mut self, guest_root: impl Fn(u32) -> std::path::PathBuf) {
        let mut by_inode: HashMap<(u64, u64), Vec<FileRec>> = HashMap::new();
        for rec in std::mem::take(&mut self.hardlinked) {
            by_inode
                .entry((rec.stat.dev, rec.stat.ino))
                .or_default()
                .push(rec);
        }
        let mut inodes: Vec<Vec<FileRec>> = by_inode.into_values().collect();
        // One order whatever the walk's: candidates are indexed.
        inodes.sort_by(|a, b| (a[0].guest, &a[0].rel).cmp(&(b[0].guest, &b[0].rel)));
        for mut recs in inodes {
            recs.sort_by(|a, b| (a.guest, &a.rel).cmp(&(b.guest, &b.rel)));
            let one_guest = recs.iter().all(|r| r.guest == recs[0].guest);
            let once_each = recs.windows(2).all(|w| w[0].guest != w[1].guest);
            let all_found = recs.len() as u64 == recs[0].stat.nlink;
            if one_guest {
                self.counts.guest_hardlinks += recs.len() as u64;
            } else if once_each && all_found {
                self.candidates.append(&mut recs);
            } else {
                self.counts.guest_hardlinks += recs.len() as u64;
                let first = &recs[0];
                let why = if once_each {
                    format!(
                        "{} of its {} links are outside the guests given",
                        first.stat.nlink - recs.len() as u64,
                        first.stat.nlink
                    )
                } else {
                    "a guest links it more than once".to_string()
                };
                self.problems.push(Problem::new(
                    guest_root(first.guest).join(&first.rel),
                    format!(
                        "hardlinked across guests and {why}: left alone, so a write \
                         through one guest's mount shows in the others; unify every \
                         guest that links it in one run, or give each guest its own \
                         copy (`cp -a`, not `cp -al`)"
                    ),
                ));
            }
        }
    }
}
