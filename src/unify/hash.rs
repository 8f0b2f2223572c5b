//! Hashing, only where it can pay: a file needs an object id only if another
//! file or an existing object has the same size, mode, owner and mtime
//! (files differing in any of those can never share an inode). A file whose
//! (dev, ino, size, mtime, ctime) is in the hash cache is not read again.

use super::scan::FileRec;
use super::{Guest, Problem};
use crate::catalog::{CacheRow, ObjectRow};
use crate::store::{id::hash_reader, ContentHash, ObjectId, ObjectMeta};
use crate::sys::{self, Stat, Timestamp};
use indicatif::ProgressBar;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsFd;

/// What two files must share before their contents are worth comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetaKey {
    size: u64,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: Option<Timestamp>,
}

impl MetaKey {
    pub fn of_stat(st: &Stat, ignore_mtime: bool) -> MetaKey {
        MetaKey {
            size: st.size,
            perm: st.perm(),
            uid: st.uid,
            gid: st.gid,
            mtime: (!ignore_mtime).then_some(st.mtime),
        }
    }

    pub fn of_object(o: &ObjectRow, ignore_mtime: bool) -> MetaKey {
        MetaKey {
            size: o.size,
            perm: o.perm,
            uid: o.uid,
            gid: o.gid,
            mtime: (!ignore_mtime).then_some(o.mtime),
        }
    }
}

/// Indices of the candidates that share their key with another candidate
/// or with an object.
pub fn worth_hashing(
    candidates: &[FileRec],
    object_keys: &HashSet<MetaKey>,
    ignore_mtime: bool,
) -> Vec<usize> {
    let mut counts: HashMap<MetaKey, u32> = HashMap::new();
    for c in candidates {
        *counts
            .entry(MetaKey::of_stat(&c.stat, ignore_mtime))
            .or_default() += 1;
    }
    (0..candidates.len())
        .filter(|&i| {
            let key = MetaKey::of_stat(&candidates[i].stat, ignore_mtime);
            counts[&key] > 1 || object_keys.contains(&key)
        })
        .collect()
}

/// The id of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Hashed {
    pub file: usize,
    pub id: ObjectId,
    pub content: ContentHash,
    /// False when it came from the cache.
    pub read: bool,
}

pub struct HashOutcome {
    pub hashed: Vec<Hashed>,
    pub bytes_hashed: u64,
    pub problems: Vec<Problem>,
}

/// Hashes candidates `which` in parallel, using the cache where it is valid.
pub fn hash_files(
    guests: &[Guest],
    candidates: &[FileRec],
    which: &[usize],
    cache: &HashMap<(u64, u64), CacheRow>,
    ignore_mtime: bool,
    progress: &ProgressBar,
) -> HashOutcome {
    let results: Vec<Result<Hashed, Problem>> = which
        .par_iter()
        .map(|&i| {
            let rec = &candidates[i];
            let st = &rec.stat;
            if let Some(row) = cache.get(&(st.dev, st.ino)) {
                if cache_valid(row, st) {
                    progress.inc(st.size);
                    return Ok(Hashed {
                        file: i,
                        id: row.object_id,
                        content: row.content_hash,
                        read: false,
                    });
                }
            }
            let guest = &guests[rec.guest as usize];
            let out = hash_one(guest, rec, ignore_mtime)
                .map(|(id, content)| Hashed {
                    file: i,
                    id,
                    content,
                    read: true,
                })
                .map_err(|e| Problem::new(guest.root.join(&rec.rel), e.to_string()));
            progress.inc(st.size);
            out
        })
        .collect();
    let mut out = HashOutcome {
        hashed: Vec::with_capacity(results.len()),
        bytes_hashed: 0,
        problems: Vec::new(),
    };
    for r in results {
        match r {
            Ok(h) => {
                if h.read {
                    out.bytes_hashed += candidates[h.file].stat.size;
                }
                out.hashed.push(h);
            }
            Err(p) => out.problems.push(p),
        }
    }
    out
}

pub fn cache_valid(row: &CacheRow, st: &Stat) -> bool {
    row.size == st.size
        && row.mtime_ns == st.mtime.as_nanos() as i64
        && row.ctime_ns == st.ctime.as_nanos() as i64
}

pub fn cache_row(st: &Stat, id: ObjectId, content: ContentHash) -> CacheRow {
    CacheRow {
        size: st.size,
        mtime_ns: st.mtime.as_nanos() as i64,
        ctime_ns: st.ctime.as_nanos() as i64,
        object_id: id,
        content_hash: content,
    }
}

/// Opens the file beneath its guest root (never through a symlink), checks
/// it is the inode that was scanned, unchanged, and hashes it.
fn hash_one(
    guest: &Guest,
    rec: &FileRec,
    ignore_mtime: bool,
) -> std::io::Result<(ObjectId, ContentHash)> {
    let fd = guest.open_for_reading(&rec.rel)?;
    let st = sys::fstat(fd.as_fd())?;
    if !st.unchanged(&rec.stat) {
        return Err(std::io::Error::other("changed while unify ran; skipped"));
    }
    let meta = ObjectMeta::of_fd(fd.as_fd(), &st, ignore_mtime)?;
    let file = File::from(fd);
    hash_reader(&meta, &file)
}
