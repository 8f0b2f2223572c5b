//! Plan first, act second: a pure function from hashed files to the groups
//! to link. `--dry-run` reports the plan; `apply` carries it out.

use super::hash::Hashed;
use super::scan::FileRec;
use crate::store::ObjectId;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The files of one object id that will link one store object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: ObjectId,
    pub size: u64,
    /// The store already has this object: every file links to it.
    /// Otherwise the first file becomes the object.
    pub existing: bool,
    /// Candidate indices: paths of an inode hardlinked across guests
    /// first (such an inode becomes the object as it is), then in guest
    /// order and path order.
    pub files: Vec<usize>,
    /// Distinct inodes among the files.
    pub inodes: u64,
    /// Files naming the first file's inode.
    pub first_paths: u64,
    /// Inodes that go when every file is linked: all their names are files
    /// of the group (an inode with a name elsewhere stays), and they are
    /// not the first file's when that becomes the object.
    pub freed: u64,
}

impl Group {
    /// Files that will become links to the object.
    pub fn links(&self) -> u64 {
        let object_paths = if self.existing { 0 } else { self.first_paths };
        self.files.len() as u64 - object_paths
    }

    /// Bytes the plan frees when every file is linked: one file's size for
    /// each inode that goes.
    pub fn bytes_saved(&self) -> u64 {
        self.freed * self.size
    }
}

/// Groups hashed files by id. A group is kept when the store already has its
/// object or when two or more files share it; a lone file stays private.
pub fn plan(candidates: &[FileRec], hashed: &[Hashed], existing: &HashSet<ObjectId>) -> Vec<Group> {
    let mut by_id: BTreeMap<ObjectId, Vec<usize>> = BTreeMap::new();
    for h in hashed {
        by_id.entry(h.id).or_default().push(h.file);
    }
    by_id
        .into_iter()
        .filter_map(|(id, mut files)| {
            let existing = existing.contains(&id);
            if files.len() < 2 && !existing {
                return None;
            }
            files.sort_by(|&a, &b| {
                let (a, b) = (&candidates[a], &candidates[b]);
                (a.stat.nlink == 1, a.guest, &a.rel).cmp(&(b.stat.nlink == 1, b.guest, &b.rel))
            });
            let inode = |f: usize| (candidates[f].stat.dev, candidates[f].stat.ino);
            // Each inode's names among the files, and its link count.
            let mut inodes: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
            for &f in &files {
                inodes
                    .entry(inode(f))
                    .or_insert((0, candidates[f].stat.nlink))
                    .0 += 1;
            }
            let first = inode(files[0]);
            let freed = inodes
                .iter()
                .filter(|&(&i, &(names, nlink))| names >= nlink && (existing || i != first))
                .count();
            Some(Group {
                id,
                size: candidates[files[0]].stat.size,
                existing,
                inodes: inodes.len() as u64,
                first_paths: files.iter().filter(|&&f| inode(f) == first).count() as u64,
                freed: freed as u64,
                files,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Stat, Timestamp};
    use std::path::PathBuf;

    /// A file of its own inode.
    fn rec(guest: u32, rel: &str, size: u64) -> FileRec {
        let ino = u64::from(guest) << 32 | rel.bytes().fold(0, |a, b| a * 256 + u64::from(b));
        linked(guest, rel, size, ino, 1)
    }

    fn linked(guest: u32, rel: &str, size: u64, ino: u64, nlink: u64) -> FileRec {
        let t = Timestamp { sec: 0, nsec: 0 };
        FileRec {
            guest,
            rel: PathBuf::from(rel),
            stat: Stat {
                dev: 1,
                ino,
                mode: 0o100644,
                nlink,
                uid: 0,
                gid: 0,
                size,
                mtime: t,
                ctime: t,
            },
        }
    }

    fn h(file: usize, id: u8) -> Hashed {
        Hashed {
            file,
            id: ObjectId([id; 32]),
            content: Some(ObjectId([id; 32])),
            read: true,
            from_cache: false,
            writers: false,
        }
    }

    #[test]
    fn lone_files_stay_private_and_pairs_are_planned_in_guest_order() {
        let c = vec![rec(1, "b", 10), rec(0, "z", 10), rec(0, "a", 7)];
        let groups = plan(&c, &[h(0, 1), h(1, 1), h(2, 2)], &HashSet::new());
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].files, vec![1, 0]);
        assert_eq!(groups[0].links(), 1);
        assert_eq!(groups[0].bytes_saved(), 10);
    }

    #[test]
    fn a_lone_file_links_to_an_existing_object() {
        let c = vec![rec(0, "a", 7)];
        let existing: HashSet<_> = [ObjectId([2; 32])].into();
        let groups = plan(&c, &[h(0, 2)], &existing);
        assert_eq!(groups.len(), 1);
        assert!(groups[0].existing);
        assert_eq!(groups[0].bytes_saved(), 7);
    }

    #[test]
    fn an_inode_linked_across_guests_comes_first_and_frees_nothing_itself() {
        // g0/a is its own file; g1/x and g2/x are one inode (a `cp -al`).
        let c = vec![
            rec(0, "a", 10),
            linked(1, "x", 10, 77, 2),
            linked(2, "x", 10, 77, 2),
        ];
        let groups = plan(&c, &[h(0, 1), h(1, 1), h(2, 1)], &HashSet::new());
        assert_eq!(groups[0].files, vec![1, 2, 0]);
        assert_eq!(groups[0].inodes, 2);
        assert_eq!(groups[0].first_paths, 2);
        // g0/a becomes a link; the shared inode becomes the object.
        assert_eq!(groups[0].links(), 1);
        assert_eq!(groups[0].bytes_saved(), 10);
        // With the object in the store already, both inodes go.
        let existing: HashSet<_> = [ObjectId([1; 32])].into();
        let groups = plan(&c, &[h(0, 1), h(1, 1), h(2, 1)], &existing);
        assert_eq!(groups[0].links(), 3);
        assert_eq!(groups[0].bytes_saved(), 20);
    }

    #[test]
    fn an_inode_with_a_name_outside_the_group_frees_nothing() {
        // g1/x has one more name elsewhere (not a candidate).
        let c = vec![rec(0, "a", 10), linked(1, "x", 10, 77, 2)];
        let existing: HashSet<_> = [ObjectId([1; 32])].into();
        let groups = plan(&c, &[h(0, 1), h(1, 1)], &existing);
        assert_eq!(groups[0].links(), 2);
        assert_eq!(groups[0].bytes_saved(), 10);
    }
}
