//! Hashing overlapped with linking. Each bucket of candidates (one size and
//! metadata key, so every file of an object id is in one bucket) is hashed,
//! planned and linked on the worker pool as soon as a thread takes it. The
//! calling thread writes the catalog as buckets finish: its connection
//! stays on that one thread, and its writes overlap the linking.

use super::apply::{Applier, ApplyTotals, CatalogOp, GroupWork};
use super::hash::{self, Hashed};
use super::plan;
use super::scan::FileRec;
use super::{worker_pool, Guest, Problem, Result};
use crate::catalog::{CacheRow, Map};
use crate::store::{ContentHash, ObjectId};
use indicatif::ProgressBar;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

pub struct Inputs<'a> {
    pub guests: &'a [Guest],
    pub candidates: &'a [FileRec],
    pub cache: &'a Map<(u64, u64), CacheRow>,
    pub existing: &'a HashSet<ObjectId>,
    pub ignore_mtime: bool,
    /// `None`: a dry run, which plans but links nothing.
    pub applier: Option<&'a Applier<'a>>,
    pub progress: &'a ProgressBar,
}

/// What the buckets came to.
#[derive(Default)]
pub struct Outcome {
    pub hashed: Vec<Hashed>,
    pub bytes_hashed: u64,
    /// Files left alone for their inode flags (`chattr`).
    pub flagged: u64,
    /// Files left alone for their holes.
    pub sparse: u64,
    /// Files whose name went away while unify ran.
    pub gone: u64,
    /// Files found changed since the walk when hashed (each reported).
    pub changed: u64,
    pub problems: Vec<Problem>,
    /// What the plan would link (what a dry run reports).
    pub planned_links: u64,
    pub planned_bytes_saved: u64,
    pub planned_objects: u64,
    /// What linking did.
    pub totals: ApplyTotals,
    /// Candidates whose inode is gone or became an object.
    pub consumed: HashSet<usize>,
    /// Candidates linked to an object by this run.
    pub new_links: Vec<(usize, ObjectId)>,
    /// The (dev, ino) of every object file this run added.
    pub object_files: HashSet<(u64, u64)>,
    /// Wall time until the last file was hashed.
    pub hash_seconds: f64,
}

/// One bucket, done.
struct Done {
    hashed: Vec<Hashed>,
    /// Files left alone for their inode flags.
    flagged: u64,
    sparse: u64,
    gone: u64,
    changed: u64,
    problems: Vec<Problem>,
    planned: [u64; 3],
    works: Vec<Result<GroupWork>>,
}

/// Runs every bucket; `record` gets each catalog write, in order within a
/// group, on the calling thread. Stops taking buckets after the first error.
pub fn run(
    inputs: &Inputs,
    buckets: Vec<Vec<usize>>,
    mut record: impl FnMut(CatalogOp) -> Result<()>,
) -> Result<Outcome> {
    // UNIFS_TEST_HASH_STOP: the tests' window between the walk and the
    // first open of a file it found (a guest swapping a file for a node).
    crate::sys::test_stop!("UNIFS_TEST_HASH_STOP");
    let started = Instant::now();
    let hashed_until = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut out = Outcome::default();
    let mut first_error = None;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<Done>();
        let (stop, hashed_until, buckets) = (&stop, &hashed_until, &buckets);
        let produce = move |tx: mpsc::Sender<Done>| {
            worker_pool().install(|| {
                buckets.par_iter().for_each_with(tx, |tx, files| {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let done = bucket(inputs, files, started, hashed_until);
                    let _ = tx.send(done);
                })
            })
        };
        // Without a thread to spare, all buckets first (the channel holds
        // them), then the catalog writes.
        let spare = tx.clone();
        match std::thread::Builder::new().spawn_scoped(s, move || produce(tx)) {
            Ok(_) => drop(spare),
            Err(_) => produce(spare),
        }
        for done in rx {
            for h in &done.hashed {
                if h.read {
                    out.bytes_hashed += inputs.candidates[h.file].stat.size;
                }
            }
            out.problems.extend(done.problems);
            out.flagged += done.flagged;
            out.sparse += done.sparse;
            out.gone += done.gone;
            out.changed += done.changed;
            out.planned_links += done.planned[0];
            out.planned_bytes_saved += done.planned[1];
            out.planned_objects += done.planned[2];
            if first_error.is_none() {
                if let Err(e) = take(&mut out, done.works, &done.hashed, &mut record) {
                    stop.store(true, Ordering::Relaxed);
                    first_error = Some(e);
                }
            } // else drain what the pool still sends
            out.hashed.extend(done.hashed);
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    out.hash_seconds = hashed_until.load(Ordering::Relaxed) as f64 / 1e9;
    Ok(out)
}

/// Takes one bucket's linking into `out` and passes its catalog writes on:
/// each group's, then the ids of the files read that stay as they were.
fn take(
    out: &mut Outcome,
    works: Vec<Result<GroupWork>>,
    hashed: &[Hashed],
    record: &mut impl FnMut(CatalogOp) -> Result<()>,
) -> Result<()> {
    let mut consumed = HashSet::new();
    for work in works {
        let work = work?;
        out.totals.add(&work.totals);
        out.problems.extend(work.problems);
        consumed.extend(work.consumed);
        for op in work.ops {
            match op {
                CatalogOp::GuestLink { file, id } => out.new_links.push((file, id)),
                CatalogOp::ObjectFile { dev, ino, .. } => {
                    out.object_files.insert((dev, ino));
                }
                _ => {}
            }
            record(op)?;
        }
    }
    // (A file whose content hash could not be had gets no cache row: it
    // changed, and is read again next time. Nor does one with writers.)
    for h in hashed
        .iter()
        .filter(|h| h.read && !h.writers && h.content.is_some() && !consumed.contains(&h.file))
    {
        record(CatalogOp::Hash(*h))?;
    }
    out.consumed.extend(consumed);
    Ok(())
}

fn bucket(inputs: &Inputs, files: &[usize], started: Instant, hashed_until: &AtomicU64) -> Done {
    let mut done = Done {
        hashed: Vec::with_capacity(files.len()),
        flagged: 0,
        sparse: 0,
        gone: 0,
        changed: 0,
        problems: Vec::new(),
        planned: [0; 3],
        works: Vec::new(),
    };
    // The fds files were read through, for linking to take over (saves
    // opening them again); only single-link files, and a few per bucket
    // (the open-file limit can be low).
    let keep_max = inputs.applier.map_or(0, |a| a.keep_fds);
    let mut fds = HashMap::new();
    // Paths of one inode (hardlinked across guests) are read once.
    let mut by_inode: HashMap<(u64, u64), Hashed> = HashMap::new();
    // Content hashes, needed once an id (for its object, made from one of
    // its files) and for each file left as it was (its cache row). In most
    // buckets all files share one id: only the first file read gets both
    // digests. Once a bucket shows a second id, every file does (a bucket
    // of lone files would otherwise read each twice); the few files that
    // still lack one are read again.
    let wants = inputs.applier.is_some();
    let mut ids = HashSet::new();
    for &i in files {
        let st = &inputs.candidates[i].stat;
        if st.nlink > 1 {
            if let Some(h) = by_inode.get(&(st.dev, st.ino)) {
                done.hashed.push(Hashed {
                    file: i,
                    read: false,
                    from_cache: false,
                    ..*h
                });
                inputs.progress.inc(st.size);
                continue;
            }
        }
        match hash::hash_cached(
            inputs.guests,
            inputs.candidates,
            i,
            inputs.cache,
            inputs.ignore_mtime,
            wants && ids.len() != 1,
        ) {
            Ok(hash::Read::Flagged) => done.flagged += 1,
            Ok(hash::Read::Sparse) => done.sparse += 1,
            Ok(hash::Read::Gone) => done.gone += 1,
            Ok(hash::Read::Changed(p)) => {
                done.changed += 1;
                done.problems.push(p);
            }
            Ok(hash::Read::Hashed(h, fd)) => {
                ids.insert(h.id);
                if st.nlink > 1 {
                    by_inode.insert((st.dev, st.ino), h);
                } else if let Some(fd) = fd.filter(|_| fds.len() < keep_max) {
                    fds.insert(i, fd);
                }
                done.hashed.push(h)
            }
            Err(p) => done.problems.push(p),
        }
        inputs.progress.inc(inputs.candidates[i].stat.size);
    }
    hashed_until.fetch_max(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let mut known = HashMap::new();
    share_contents(&mut done.hashed, &mut known);
    // Where each file's hash is in `done.hashed` (a lookup per group).
    let at: HashMap<usize, usize> = (done.hashed.iter().enumerate())
        .map(|(k, h)| (h.file, k))
        .collect();
    let groups = plan::plan(inputs.candidates, &done.hashed, inputs.existing);
    for g in &groups {
        done.planned[0] += g.links();
        done.planned[1] += g.bytes_saved();
        done.planned[2] += u64::from(!g.existing);
    }
    if let Some(applier) = inputs.applier {
        // A new object needs its content hash: read one of its files again
        // now (not while linking holds its lease, which a writer waits on).
        for g in groups.iter().filter(|g| !g.existing) {
            if let std::collections::hash_map::Entry::Vacant(e) = known.entry(g.id) {
                if let Some(c) = read_content(inputs, &fds, g.files[0], &g.id) {
                    e.insert(c);
                }
            }
        }
        share_contents(&mut done.hashed, &mut known);
        let writers: HashSet<usize> = (done.hashed.iter())
            .filter(|h| h.writers)
            .map(|h| h.file)
            .collect();
        for g in &groups {
            let first = &done.hashed[at[&g.files[0]]];
            done.works
                .push(applier.apply_group(g, first, &mut fds, &writers));
        }
        // The files left as they were need their content hash for their
        // cache rows.
        let consumed: HashSet<usize> = done
            .works
            .iter()
            .flatten()
            .flat_map(|w| w.consumed.iter().copied())
            .collect();
        for k in 0..done.hashed.len() {
            let h = done.hashed[k];
            if !h.read || h.content.is_some() || consumed.contains(&h.file) {
                continue;
            }
            let c = match known.get(&h.id) {
                Some(&c) => Some(c),
                None => read_content(inputs, &fds, h.file, &h.id),
            };
            if let Some(c) = c {
                done.hashed[k].content = Some(c);
                known.insert(h.id, c);
            }
        }
    }
    done
}

/// The content hash of candidate `file`, read again (through its kept fd if
/// any); `None` if it cannot be had or the file no longer has id `id`.
fn read_content(
    inputs: &Inputs,
    fds: &HashMap<usize, OwnedFd>,
    file: usize,
    id: &ObjectId,
) -> Option<ContentHash> {
    let rec = &inputs.candidates[file];
    let guest = &inputs.guests[rec.guest as usize];
    let (read, c) = hash::both_of(guest, rec, fds.get(&file), inputs.ignore_mtime).ok()?;
    (read == *id).then_some(c)
}

/// Gives every file of an id the content hash one of them has, or `known`
/// has (which learns those of `hashed`).
fn share_contents(hashed: &mut [Hashed], known: &mut HashMap<ObjectId, ContentHash>) {
    known.extend(hashed.iter().filter_map(|h| Some((h.id, h.content?))));
    for h in hashed.iter_mut().filter(|h| h.content.is_none()) {
        h.content = known.get(&h.id).copied();
    }
}
