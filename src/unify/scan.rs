//! Walking guests: every regular file that unify may link, the files that
//! already link a store object, and what was left out and why.
//!
//! The walk (walkdir) never follows symlinks and stays on the guest's
//! filesystem. Its paths are only used as names: every later open goes
//! through `sys::open_beneath` from the guest's root fd, so a directory
//! swapped for a symlink mid-walk cannot lead unify out of the guest.

use super::exclude::{Excludes, Mask};
use super::{Guest, Problem};
use crate::store::{read_marker_path, ObjectId, Store};
use crate::sys::{Stat, Timestamp};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Prefix of the temp names unify gives links while replacing a file.
pub const TMP_PREFIX: &str = ".unifs-tmp-";

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
    pub stat: Stat,
    /// Found by its marker, not in the catalog: a run was killed before
    /// recording it.
    pub recovered: bool,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ScanCounts {
    pub files: u64,
    pub bytes: u64,
    pub excluded: u64,
    pub too_small: u64,
    pub guest_hardlinks: u64,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub candidates: Vec<FileRec>,
    pub linked: Vec<LinkedRec>,
    /// `.unifs-tmp-*` names left by a killed run.
    pub stale_tmp: Vec<FileRec>,
    pub counts: ScanCounts,
    pub problems: Vec<Problem>,
}

impl Scan {
    pub fn merge(&mut self, other: Scan) {
        self.candidates.extend(other.candidates);
        self.linked.extend(other.linked);
        self.stale_tmp.extend(other.stale_tmp);
        let (a, b) = (&mut self.counts, other.counts);
        a.files += b.files;
        a.bytes += b.bytes;
        a.excluded += b.excluded;
        a.too_small += b.too_small;
        a.guest_hardlinks += b.guest_hardlinks;
        self.problems.extend(other.problems);
    }
}

pub struct ScanContext<'a> {
    pub store: Option<&'a Store>,
    pub excludes: &'a Excludes,
    pub min_size: u64,
    /// (dev, ino) of every object file the catalog knows.
    pub object_inodes: &'a HashMap<(u64, u64), (ObjectId, u32)>,
}

pub fn scan_guest(ctx: &ScanContext, index: u32, guest: &Guest) -> Scan {
    let mut scan = Scan::default();
    let mut masks: Vec<Mask> = vec![0];
    let mut walk = walkdir::WalkDir::new(&guest.root)
        .follow_links(false)
        .same_file_system(true)
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                scan.problems.push(Problem::new(path, e.to_string()));
                continue;
            }
        };
        let depth = entry.depth();
        if depth == 0 {
            continue;
        }
        let rel = match entry.path().strip_prefix(&guest.root) {
            Ok(r) => r.to_path_buf(),
            Err(_) => continue,
        };
        masks.truncate(depth);
        let mask = ctx
            .excludes
            .mask(masks[depth - 1], &Path::new("/").join(&rel));
        let file_type = entry.file_type();
        if file_type.is_dir() {
            if ctx.excludes.prune(mask) {
                walk.skip_current_dir();
            }
            masks.push(mask);
            continue;
        }
        if !file_type.is_file() {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                scan.problems
                    .push(Problem::new(entry.path(), e.to_string()));
                continue;
            }
        };
        let stat = stat_of(&meta);
        if entry
            .file_name()
            .as_bytes()
            .starts_with(TMP_PREFIX.as_bytes())
        {
            scan.stale_tmp.push(FileRec {
                guest: index,
                rel,
                stat,
            });
            continue;
        }
        scan.counts.files += 1;
        scan.counts.bytes += stat.size;
        if ctx.excludes.excluded(mask) {
            scan.counts.excluded += 1;
            continue;
        }
        if stat.size == 0 || stat.size < ctx.min_size {
            scan.counts.too_small += 1;
            continue;
        }
        if let Some(&(id, copy)) = ctx.object_inodes.get(&(stat.dev, stat.ino)) {
            scan.linked.push(LinkedRec {
                guest: index,
                rel,
                id,
                copy,
                stat,
                recovered: false,
            });
            continue;
        }
        if stat.nlink > 1 {
            match ctx
                .store
                .and_then(|s| recover_object(s, entry.path(), &stat))
            {
                Some((id, copy)) => scan.linked.push(LinkedRec {
                    guest: index,
                    rel,
                    id,
                    copy,
                    stat,
                    recovered: true,
                }),
                // A hardlink group the guest made itself: left alone, so
                // its paths keep hardlink semantics (invariant 3).
                None => scan.counts.guest_hardlinks += 1,
            }
            continue;
        }
        scan.candidates.push(FileRec {
            guest: index,
            rel,
            stat,
        });
    }
    scan
}

/// A linked file the catalog does not know: is it an object file (its
/// marker names an object whose file is this very inode)?
fn recover_object(store: &Store, path: &Path, stat: &Stat) -> Option<(ObjectId, u32)> {
    let id = read_marker_path(path).ok()??;
    let copy = store.find_copy(&id, stat.dev, stat.ino).ok()??;
    Some((id, copy))
}

pub fn stat_of(m: &std::fs::Metadata) -> Stat {
    Stat {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        nlink: m.nlink(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        mtime: Timestamp {
            sec: m.mtime(),
            nsec: m.mtime_nsec() as u32,
        },
        ctime: Timestamp {
            sec: m.ctime(),
            nsec: m.ctime_nsec() as u32,
        },
    }
}
