//! Carrying out a plan, one file at a time, race-free:
//!
//! 1. open the file beneath its guest root (no symlinks), read-only (or
//!    take the fd hashing read it through, and check its name still names
//!    it);
//! 2. re-check it is the inode that was scanned and hashed, unchanged, with
//!    no other link, and take a read lease (fails while anyone has it open
//!    for writing; a later writer waits for us);
//! 3. link the object to a temp name in the same directory, swap it with the
//!    file (RENAME_EXCHANGE), check the swapped-out inode is the one checked
//!    (else swap back), and remove the temp name.
//!
//! Every path names a complete file at every moment (invariant 2): the swap
//! is atomic, and a run killed at any point leaves at most a `.unifs-tmp-*`
//! name that the next run removes once the store holds its content.

use super::hash::Hashed;
use super::plan::Group;
use super::scan::{FileRec, TMP_PREFIX};
use super::Result;
use super::{Guest, Problem};
use crate::catalog::ObjectRow;
use crate::store::object::Ingested;
use crate::store::{self, ContentHash, ObjectId, ObjectMeta, Store};
use crate::sys::{self, Stat};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ApplyTotals {
    pub files_linked: u64,
    pub bytes_saved: u64,
    pub objects_added: u64,
    /// Objects copied (not linked) because their first file was open for writing.
    pub objects_copied: u64,
    /// Extra object copies started because one reached the link limit.
    pub extra_copies: u64,
    /// Bytes of the copies above (objects copied, extra copies): disk the
    /// run used, taken off `bytes_saved` in the summary.
    pub bytes_copied: u64,
    pub skipped_changed: u64,
    pub skipped_in_use: u64,
    /// Files whose name went away before it could be linked.
    pub gone: u64,
    /// Files whose own xattrs leave no room for the store's marker.
    pub no_xattr_room: u64,
    /// Files of another project ID than their object's.
    pub other_project: u64,
}

impl ApplyTotals {
    pub fn add(&mut self, o: &ApplyTotals) {
        self.files_linked += o.files_linked;
        self.bytes_saved += o.bytes_saved;
        self.objects_added += o.objects_added;
        self.objects_copied += o.objects_copied;
        self.extra_copies += o.extra_copies;
        self.bytes_copied += o.bytes_copied;
        self.skipped_changed += o.skipped_changed;
        self.skipped_in_use += o.skipped_in_use;
        self.gone += o.gone;
        self.no_xattr_room += o.no_xattr_room;
        self.other_project += o.other_project;
    }
}

/// A catalog write that linking a group calls for. Groups are linked in
/// parallel; their writes are made afterwards by the one catalog writer.
#[derive(Debug)]
pub enum CatalogOp {
    Object(ObjectRow),
    ObjectFile {
        id: ObjectId,
        copy: u32,
        dev: u64,
        ino: u64,
    },
    /// Candidate `file` now links `id`.
    GuestLink {
        file: usize,
        id: ObjectId,
    },
    /// Candidate `file` was hashed and stays as it is: cache its ids.
    Hash(Hashed),
}

/// What linking one group did.
#[derive(Debug, Default)]
pub struct GroupWork {
    pub ops: Vec<CatalogOp>,
    pub totals: ApplyTotals,
    pub problems: Vec<Problem>,
    /// Candidates whose inode is gone or became an object (no cache row).
    pub consumed: Vec<usize>,
}

/// The object copy new links go to.
struct Target {
    id: ObjectId,
    copy: u32,
    /// The inodes of this copy and of the copies before it: a path naming
    /// one already links the object.
    inodes: Vec<(u64, u64)>,
    nlink: u64,
    /// `objects/` (the store's one fd of it) and `ab/cdef…[.N]` beneath it.
    dir: Arc<OwnedFd>,
    name: OsString,
    /// The object file's metadata, read at its first link: an object
    /// changed around the store (a host chmod, touch or setfattr on a guest
    /// path) no longer matches its id, and a link would pass that on.
    meta: Option<ObjectMeta>,
    /// The object file's project ID (xfs/ext4 project quotas), read at its
    /// first link: a link shares it, so files of another project are left
    /// alone (and across `chattr +P` directories the kernel refuses it).
    projid: Option<u32>,
}

/// Why a file was left as it was.
enum Skip {
    /// Not skipped: the path already names the object (a path of an inode
    /// hardlinked across guests that became the object).
    IsObject,
    Changed,
    /// The name (or a directory on its way) is gone: deleted or moved by a
    /// running guest. Nothing to do, as for a file made after the walk.
    Gone,
    InUse,
    /// No room for the store's marker beside the file's own xattrs: it
    /// can never become an object on this filesystem, so no problem.
    NoXattrRoom,
    /// Of another project ID than the object: a link would give it the
    /// object's (or be refused, EXDEV, in a `chattr +P` directory).
    OtherProject,
    Failed(String),
}

/// Links groups; shared by the threads that do it (every method takes `&self`).
pub struct Applier<'a> {
    pub store: &'a Store,
    pub guests: &'a [Guest],
    pub candidates: &'a [FileRec],
    /// Treat an object as full at this many links (tests; else EMLINK decides).
    pub link_max: Option<u64>,
    pub paranoid: bool,
    /// The store's ids leave mtime out.
    pub ignore_mtime: bool,
    tmp_seq: AtomicU64,
    /// This process's id, for temp names (one getpid, not one a file).
    pid: u32,
    closer: super::closer::Closer,
    dirs: DirCache,
    /// How many of a bucket's files may keep the fd hashing read them
    /// through, for linking to take over.
    pub(super) keep_fds: usize,
    /// Mtimes of the directories linking changed, put back after each change.
    pub(super) dir_times: super::dirtimes::DirTimes,
    /// Directories where a temp name of this run could not be removed: kept
    /// for the next run as a killed run's are, so that it removes them (a
    /// `.unifs-tmp-*` name in a directory no run recorded is the guest's).
    left_behind: Mutex<super::dirjournal::KilledDirs>,
}

impl<'a> Applier<'a> {
    pub fn new(store: &'a Store, guests: &'a [Guest], candidates: &'a [FileRec]) -> Applier<'a> {
        // Half the spare fds for directories, a quarter for files hashed
        // and not yet linked (`keep_fds` per bucket, a bucket per thread).
        let spare = super::spare_fds(guests.len());
        let threads = super::worker_pool().current_num_threads().max(1);
        Applier {
            store,
            guests,
            candidates,
            link_max: None,
            paranoid: false,
            ignore_mtime: false,
            tmp_seq: AtomicU64::new(0),
            pid: std::process::id(),
            closer: super::closer::Closer::new(),
            dirs: DirCache {
                map: Mutex::default(),
                capacity: (spare / 2).min(4096),
            },
            keep_fds: (spare / 4 / threads).min(64),
            dir_times: Default::default(),
            left_behind: Mutex::default(),
        }
    }

    /// The directories holding temp names this run could not remove.
    pub(super) fn take_left_behind(&self) -> super::dirjournal::KilledDirs {
        std::mem::take(&mut *self.left_behind.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Links the files of `group`. `fds` holds files opened for hashing:
    /// each one the group uses is taken instead of opening it again.
    /// `writers`: files someone had open for writing when they were hashed
    /// (see `Hashed::writers`), whose hash their stat cannot vouch for.
    pub fn apply_group(
        &self,
        group: &Group,
        content: &Hashed,
        fds: &mut HashMap<usize, OwnedFd>,
        writers: &HashSet<usize>,
    ) -> Result<GroupWork> {
        let mut work = GroupWork::default();
        let mut own = OwnChanges::default();
        let mut target = if group.existing {
            self.open_target(&group.id)?
        } else {
            None
        };
        if let Some(why) = target.as_ref().and_then(flagged) {
            // Linked to, each file would get the flags (invariant 3).
            for &file in &group.files {
                self.note_skip(file, Skip::Failed(why.clone()), &mut work);
            }
            return Ok(work);
        }
        for &file in &group.files {
            let opened = fds.remove(&file);
            // Written through a mapping since, it could be another content
            // with the same stat: copied into the store (and hashed again),
            // never made the object or replaced by a link.
            let lease = !writers.contains(&file);
            let outcome = match target.as_mut() {
                Some(t) => self.replace(file, opened, t, lease, &mut own, &mut work),
                None => match self.ingest(file, opened, group, content, lease, &mut own, &mut work)
                {
                    Ok(t) => {
                        target = Some(t);
                        Ok(())
                    }
                    Err(skip) => Err(skip),
                },
            };
            if let Err(skip) = outcome {
                self.note_skip(file, skip, &mut work);
            }
        }
        Ok(work)
    }

    fn note_skip(&self, file: usize, skip: Skip, work: &mut GroupWork) {
        let path = self.path_of(file);
        match skip {
            Skip::IsObject => {}
            Skip::Gone => work.totals.gone += 1,
            Skip::Changed => {
                work.totals.skipped_changed += 1;
                work.problems.push(Problem::new(
                    path,
                    "changed while unify ran; left as it was",
                ));
            }
            Skip::InUse => {
                work.totals.skipped_in_use += 1;
                work.problems.push(Problem::new(
                    path,
                    "open for writing (or open at all through a unifs mount, whose daemon \
                     holds files read-write); left as it was",
                ));
            }
            Skip::NoXattrRoom => work.totals.no_xattr_room += 1,
            Skip::OtherProject => work.totals.other_project += 1,
            Skip::Failed(why) => work.problems.push(Problem::new(path, why)),
        }
    }

    fn path_of(&self, file: usize) -> PathBuf {
        let rec = &self.candidates[file];
        self.guests[rec.guest as usize].root.join(&rec.rel)
    }

    /// The highest existing copy of an object, if any.
    fn open_target(&self, id: &ObjectId) -> Result<Option<Target>> {
        let mut found = None;
        for copy in 0.. {
            match self.store.stat_object(id, copy)? {
                Some(st) => found = Some((copy, st)),
                None => break,
            }
        }
        if found.is_none() {
            // No copy 0: a gap an older gc left (or a lost file). A copy
            // past it is linked, not a new copy 0 made beside it.
            if let Some(copy) = self.store.copies_past_gaps(id)?.into_iter().max() {
                found = self.store.stat_object(id, copy)?.map(|st| (copy, st));
            }
        }
        let Some((copy, st)) = found else {
            return Ok(None);
        };
        let (dir, name) = self.store.object_link_source(id, copy);
        Ok(Some(Target {
            id: *id,
            copy,
            inodes: vec![(st.dev, st.ino)],
            nlink: st.nlink,
            dir,
            name,
            meta: None,
            projid: None,
        }))
    }

    /// Makes the first file of a group the object (or copies it into the
    /// store when someone holds it open for writing).
    #[allow(clippy::too_many_arguments)]
    fn ingest(
        &self,
        file: usize,
        opened: Option<OwnedFd>,
        group: &Group,
        content: &Hashed,
        lease: bool,
        own: &mut OwnChanges,
        work: &mut GroupWork,
    ) -> std::result::Result<Target, Skip> {
        let (parent, name) = self.open_parent(file).map_err(gone_or_fail)?;
        let (fd, st, leased) =
            self.open_leased(file, opened, parent.as_fd(), &name, own, &[], lease)?;
        let rec = &self.candidates[file];
        let content = match content.content {
            Some(c) => c,
            // Hashed for its id alone: read again for the object's row.
            None => match super::hash::both_of_fd(&fd, &st, self.ignore_mtime) {
                Ok((id, c)) if id == group.id => c,
                Ok(_) => return Err(Skip::Changed),
                // Another length than its stat's: written to meanwhile.
                Err(e) if e.kind() == io::ErrorKind::Other => return Err(Skip::Changed),
                Err(e) => return Err(fail(e)),
            },
        };
        let row = object_row(&group.id, content, &rec.stat);
        let ingested = if leased {
            // The guest may have written the file a moment ago: its data
            // must be on disk before other guests' paths, on disk for long,
            // are swapped for links to it, or a power cut leaves them empty
            // (invariant 2). The lease keeps writers out from here on. (A
            // copy into the store is fsynced.)
            sys::write_data_out(fd.as_fd()).map_err(fail)?;
            self.store
                .ingest_by_link(fd.as_fd(), &group.id, 0)
                .map_err(ingest_skip)?
        } else {
            let meta = ObjectMeta::of_fd(fd.as_fd(), &st, self.ignore_mtime).map_err(fail)?;
            match self
                .store
                .ingest_by_copy(fd.as_fd(), &meta, &group.id, 0)
                .map_err(ingest_skip)?
            {
                Some(i) => i,
                None => return Err(Skip::Changed),
            }
        };
        let record = |work: &mut GroupWork, copy: u32, stat: &Stat| {
            work.ops.push(CatalogOp::Object(row.clone()));
            work.ops.push(CatalogOp::ObjectFile {
                id: group.id,
                copy,
                dev: stat.dev,
                ino: stat.ino,
            });
        };
        if let (true, Ingested::Linked { stat, .. }) = (leased, &ingested) {
            // A writer waiting for this inode must not get the object; nor
            // may a chmod, chown, utimes or link that came after the check
            // (the lease does not hold those off) change it for everyone.
            let mut expected = st;
            expected.nlink += 1;
            let changed = !same_but_ctime(stat, &expected);
            if changed || break_pending(fd.as_fd()) {
                self.store
                    .undo_ingest(fd.as_fd(), &group.id, 0)
                    .map_err(|e| Skip::Failed(e.to_string()))?;
                return Err(if changed { Skip::Changed } else { Skip::InUse });
            }
        }
        match ingested {
            Ingested::Linked { copy, stat } => {
                record(work, copy, &stat);
                work.totals.objects_added += 1;
                if leased {
                    work.ops.push(CatalogOp::GuestLink { file, id: group.id });
                    work.consumed.push(file);
                } else {
                    work.totals.objects_copied += 1;
                    work.totals.bytes_copied += stat.size;
                    self.note_skip(file, Skip::InUse, work);
                }
                let (dir, name) = self.store.object_link_source(&group.id, copy);
                // Linked, `fd` is the object: read its metadata here rather
                // than open it again by name for the group's other files.
                let meta = leased
                    .then(|| ObjectMeta::of_fd(fd.as_fd(), &stat, self.ignore_mtime).ok())
                    .flatten();
                drop(fd);
                Ok(Target {
                    id: group.id,
                    copy,
                    inodes: vec![(stat.dev, stat.ino)],
                    nlink: stat.nlink,
                    dir,
                    name,
                    meta,
                    projid: None,
                })
            }
            Ingested::Exists { .. } => {
                // The store had it though the catalog did not: link to it.
                // (Marking and unmarking the file moved its ctime: ours.)
                own.note(fd.as_fd());
                drop(fd);
                let stat = self
                    .store
                    .stat_object(&group.id, 0)
                    .map_err(|e| Skip::Failed(e.to_string()))?
                    .ok_or(Skip::Changed)?;
                record(work, 0, &stat);
                let mut target = self
                    .open_target(&group.id)
                    .map_err(|e| Skip::Failed(e.to_string()))?
                    .ok_or(Skip::Changed)?;
                if let Some(why) = flagged(&target) {
                    return Err(Skip::Failed(why));
                }
                self.replace(file, None, &mut target, lease, own, work)?;
                Ok(target)
            }
        }
    }

    /// Replaces one file by a link to `target` (not without `lease`: see
    /// [`Applier::apply_group`]).
    fn replace(
        &self,
        file: usize,
        opened: Option<OwnedFd>,
        target: &mut Target,
        lease: bool,
        own: &mut OwnChanges,
        work: &mut GroupWork,
    ) -> std::result::Result<(), Skip> {
        let (parent, name) = self.open_parent(file).map_err(gone_or_fail)?;
        if let Some(why) = parent.locked {
            // The temp name could be linked there but neither swapped nor
            // removed again, and the mtime not put back.
            return Err(Skip::Failed(format!(
                "its directory is {why}; {LOCKED_DIR_HINT}"
            )));
        }
        let inodes = &target.inodes;
        let (fd, st, leased) =
            match self.open_leased(file, opened, parent.as_fd(), &name, own, inodes, lease) {
                Err(Skip::IsObject) => {
                    work.ops.push(CatalogOp::GuestLink {
                        file,
                        id: target.id,
                    });
                    work.consumed.push(file);
                    return Ok(());
                }
                other => other?,
            };
        if !leased {
            return Err(Skip::InUse);
        }
        let rec = &self.candidates[file];
        if self.paranoid && !same_bytes(fd.as_fd(), target).map_err(fail)? {
            return Err(Skip::Failed(format!(
                "--paranoid: bytes differ from object {} though the hashes match; left as it was",
                target.id
            )));
        }
        if target.projid.is_none() {
            target.projid = Some(object_projid(target).map_err(fail)?);
        }
        if target.projid != Some(sys::fs_xattr(fd.as_fd()).map_err(fail)?.projid) {
            return Err(Skip::OtherProject);
        }
        if target.meta.is_none() {
            target.meta = Some(object_meta(target, self.ignore_mtime).map_err(fail)?);
        }
        if target.meta.as_ref()
            != Some(&ObjectMeta::of_fd(fd.as_fd(), &st, self.ignore_mtime).map_err(fail)?)
        {
            return Err(Skip::Failed(format!(
                "object {} no longer has the mode, owner, mtime, size or xattrs its id stands \
                 for (changed around the store: see `unifs store verify`); not linked to it, \
                 left as it was",
                target.id
            )));
        }
        // The swap changes the directory's mtime: put back right after.
        let dir_rel = rec.rel.parent().unwrap_or(Path::new(""));
        let dir = parent.as_fd();
        let noted = self
            .dir_times
            .before_change(rec.guest, dir_rel, dir, Some(parent.key));
        let swapped = self.swap(target, file, &parent, &name, fd.as_fd(), &st, work);
        self.dir_times.after_change(dir, noted);
        swapped?;
        if rec.stat.nlink > 1 {
            // Its other paths come later in this group: they must find it
            // as this change left it.
            own.note(fd.as_fd());
        }
        // Space is freed only with the inode's last name: a path sharing
        // it with others (guests copied with their hardlinks) frees nothing
        // until the last goes.
        let freed = sys::fstat(fd.as_fd()).is_ok_and(|st| st.nlink == 0);
        self.closer.close(fd);
        work.ops.push(CatalogOp::GuestLink {
            file,
            id: target.id,
        });
        work.consumed.push(file);
        work.totals.files_linked += 1;
        if freed {
            work.totals.bytes_saved += rec.stat.size;
        }
        Ok(())
    }

    /// Links the object to a temp name next to `name`, swaps the two and
    /// removes the temp name, which then names the file `fd` (checked: `st`).
    #[allow(clippy::too_many_arguments)]
    fn swap(
        &self,
        target: &mut Target,
        file: usize,
        dir: &ParentDir,
        name: &OsStr,
        fd: BorrowedFd,
        st: &Stat,
        work: &mut GroupWork,
    ) -> std::result::Result<(), Skip> {
        let parent = dir.as_fd();
        let mut copies_tried = 0;
        let tmp = loop {
            let tmp = self.link_to_tmp(target, parent, work)?;
            match sys::rename_exchange(parent, &tmp, name) {
                Ok(()) => break tmp,
                // btrfs without extended inode refs limits the links from
                // one directory by the length of their names: the short
                // temp name fitted, the file's name does not. Full as if
                // the link had failed. (Bounded: a filesystem that refused
                // every copy would otherwise have us make copies for good.)
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) && copies_tried < 16 => {
                    copies_tried += 1;
                    self.remove_tmp(file, dir, &tmp).map_err(fail)?;
                    self.next_copy(target, work)?;
                }
                Err(e) => {
                    let _ = self.remove_tmp(file, dir, &tmp);
                    return Err(fail(e));
                }
            }
        };
        // The name may have been replaced after our check: only remove
        // what we swapped out if it is the inode we checked.
        // And a writer that opened the name before the swap is waiting on
        // the lease for the old inode: give the name back to it.
        let skip = match sys::stat_at(parent, &tmp) {
            Ok(out) if out.ino != st.ino || out.dev != st.dev => Some(Skip::Changed),
            Err(_) => Some(Skip::Changed),
            // A chmod, chown, utimes or link the lease does not hold off
            // landed after the check: the guest's change must stay its own.
            Ok(out) if !same_but_ctime(&out, st) => Some(Skip::Changed),
            Ok(_) if break_pending(fd) => Some(Skip::InUse),
            Ok(_) => None,
        };
        if let Some(skip) = skip {
            // Give the name back what it had; if that fails, the guest's
            // inode is under the temp name: say where, never drop it.
            let mut back = sys::rename_exchange(parent, &tmp, name);
            for _ in 0..2 {
                if back.is_ok() {
                    break;
                }
                back = sys::rename_exchange(parent, &tmp, name);
            }
            return match back.err() {
                None => {
                    let _ = self.remove_tmp(file, dir, &tmp);
                    Err(skip)
                }
                Some(e) => Err(Skip::Failed(format!(
                    "could not swap back after a change during the swap ({e}); \
                     the file as it was is at {}",
                    tmp.to_string_lossy()
                ))),
            };
        }
        if let Err(e) = self.remove_tmp(file, dir, &tmp) {
            // The swap is done: the name links the object, and only the
            // guest's old copy stays, under the temp name. Failing the file
            // here would leave the catalog without its link.
            work.problems.push(Problem::new(
                self.path_of(file).with_file_name(&tmp),
                format!(
                    "the old copy of {}, which now links its object, could not be \
                     removed ({e}); the next unify removes it",
                    sys::shown(Path::new(name))
                ),
            ));
        }
        Ok(())
    }

    /// Removes temp name `tmp` in `dir`, the directory of candidate `file`.
    /// If it cannot, the directory is kept for the next run, which then
    /// takes the name for this run's leftover (as it does a killed run's)
    /// and removes it, rather than leave it in the guest for good.
    fn remove_tmp(&self, file: usize, dir: &ParentDir, tmp: &OsStr) -> io::Result<()> {
        let removed = sys::unlink_at(dir.as_fd(), tmp);
        if removed.is_err() {
            let root = self.guests[self.candidates[file].guest as usize]
                .root
                .clone();
            let (dev, ino) = dir.key;
            self.left_behind
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((self.pid, dev, ino), root);
        }
        removed
    }

    /// Links the target object to a fresh temp name in `parent`, moving on
    /// to the next copy of the object when this one is full.
    fn link_to_tmp(
        &self,
        target: &mut Target,
        parent: BorrowedFd,
        work: &mut GroupWork,
    ) -> std::result::Result<OsString, Skip> {
        loop {
            if self.link_max.is_some_and(|max| target.nlink >= max) {
                self.next_copy(target, work)?;
                continue;
            }
            let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
            let tmp = OsString::from(format!("{TMP_PREFIX}{}-{seq}", self.pid));
            match sys::link_at(target.dir.as_fd(), &target.name, parent, &tmp) {
                Ok(()) => {
                    target.nlink += 1;
                    return Ok(tmp);
                }
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) => self.next_copy(target, work)?,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(fail(e)),
            }
        }
    }

    /// Moves `target` to the next copy of its object, creating it if needed.
    fn next_copy(
        &self,
        target: &mut Target,
        work: &mut GroupWork,
    ) -> std::result::Result<(), Skip> {
        let failed = |e: store::Error| Skip::Failed(e.to_string());
        let copy = target.copy + 1;
        let stat = match self.store.stat_object(&target.id, copy).map_err(failed)? {
            Some(st) => st,
            None => {
                let made = self
                    .store
                    .new_copy(&target.id, target.copy, copy, self.ignore_mtime)
                    .map_err(failed)?;
                work.totals.extra_copies += 1;
                let stat = match made {
                    Ingested::Linked { stat, .. } => stat,
                    Ingested::Exists { .. } => self
                        .store
                        .stat_object(&target.id, copy)
                        .map_err(failed)?
                        .ok_or_else(|| Skip::Failed("object copy vanished".into()))?,
                };
                work.totals.bytes_copied += stat.size;
                stat
            }
        };
        work.ops.push(CatalogOp::ObjectFile {
            id: target.id,
            copy,
            dev: stat.dev,
            ino: stat.ino,
        });
        let (dir, name) = self.store.object_link_source(&target.id, copy);
        let mut inodes = std::mem::take(&mut target.inodes);
        inodes.push((stat.dev, stat.ino));
        *target = Target {
            id: target.id,
            copy,
            inodes,
            nlink: stat.nlink,
            dir,
            name,
            meta: None,
            projid: None,
        };
        Ok(())
    }

    /// Opens the file read-only beneath its parent (no symlink followed),
    /// or takes `opened` (the fd hashing read it through), takes a read
    /// lease if nobody has it open for writing and `lease` (the `bool`: the
    /// lease is held), then checks it
    /// is the scanned inode, unchanged (but for this group's own changes),
    /// with no other link than it had. One stat, after the lease: a write
    /// before it shows in mtime/ctime. `Skip::IsObject` when it is one of
    /// the inodes `object`.
    #[allow(clippy::too_many_arguments)]
    fn open_leased(
        &self,
        file: usize,
        opened: Option<OwnedFd>,
        parent: BorrowedFd,
        name: &OsStr,
        own: &OwnChanges,
        object: &[(u64, u64)],
        lease: bool,
    ) -> std::result::Result<(OwnedFd, Stat, bool), Skip> {
        let rec = &self.candidates[file];
        let kept = opened.is_some();
        // An fd kept from hashing is that inode, wherever it is now: the
        // name is checked below, after the lease.
        let fd = match opened.map_or_else(
            || sys::open_regular_at(parent, name, libc::O_RDONLY | libc::O_NOATIME),
            Ok,
        ) {
            Ok(fd) => fd,
            Err(e) if super::hash::gone(&e) => return Err(Skip::Gone),
            Err(e) if sys::is_not_regular(&e) => return Err(Skip::Changed),
            Err(e) => return Err(fail(e)),
        };
        let leased = match lease.then(|| sys::take_read_lease(fd.as_fd())) {
            None => false,
            Some(Ok(())) => true,
            Some(Err(e)) if lease_busy(&e) => false,
            // Not a regular file any more (leases need one).
            Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => return Err(Skip::Changed),
            Some(Err(e)) => return Err(fail(e)),
        };
        let st = if kept {
            // The name must still be that inode: the guest may have moved
            // it, or swapped a directory above it, since it was hashed.
            // Hashing checked that the fd is the scanned inode, so when the
            // name is that inode its stat is the fd's (one syscall less).
            match sys::stat_at(parent, name) {
                Ok(now) if (now.dev, now.ino) == (rec.stat.dev, rec.stat.ino) => now,
                Ok(now) if object.contains(&(now.dev, now.ino)) => return Err(Skip::IsObject),
                Ok(_) => return Err(Skip::Changed),
                Err(e) if super::hash::gone(&e) => return Err(Skip::Gone),
                Err(e) => return Err(fail(e)),
            }
        } else {
            sys::fstat(fd.as_fd()).map_err(fail)?
        };
        if object.contains(&(st.dev, st.ino)) {
            return Err(Skip::IsObject);
        }
        let expected = own.expected(&rec.stat);
        if !st.is_file() || !st.unchanged(expected) || st.nlink != expected.nlink {
            return Err(Skip::Changed);
        }
        Ok((fd, st, leased))
    }

    /// The parent directory of a candidate, opened beneath the guest root.
    fn open_parent(&self, file: usize) -> io::Result<(Arc<ParentDir>, OsString)> {
        let rec = &self.candidates[file];
        let parent_rel = rec.rel.parent().unwrap_or(Path::new(""));
        let name = rec
            .rel
            .file_name()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
            .to_os_string();
        let guest = &self.guests[rec.guest as usize];
        let fd = self.dirs.get(rec.guest, parent_rel, || {
            sys::open_beneath(
                guest.fd.as_fd(),
                parent_rel,
                libc::O_RDONLY | libc::O_DIRECTORY,
            )
        })?;
        Ok((fd, name))
    }
}

/// Opens the object file `target` names, beneath `objects/` and never
/// through a symlink.
fn open_target(target: &Target, flags: i32) -> io::Result<OwnedFd> {
    sys::open_beneath(target.dir.as_fd(), Path::new(&target.name), flags)
}

/// Why `target` must not be linked to, if it has inode flags (`chattr`,
/// set on it by hand): the id does not cover them, and a link shares them.
fn flagged(target: &Target) -> Option<String> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOATIME;
    let fd = open_target(target, flags).ok()?;
    let found = sys::inode_flags(fd.as_fd()).ok()? & store::INODE_FLAGS;
    let xfs = sys::fs_xattr(fd.as_fd()).ok()?.xflags & store::XFS_FLAGS;
    (found | xfs != 0).then(|| {
        format!(
            "object {} has inode flags (lsattr {found:#x}, xfs_io lsattr {xfs:#x}) that a link \
             would pass on; not linked to it (see `unifs store verify`)",
            target.id
        )
    })
}

/// The metadata of the object file `target` names, as its id covers it.
fn object_meta(target: &Target, ignore_mtime: bool) -> io::Result<ObjectMeta> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOATIME | libc::O_NOFOLLOW;
    let fd = open_target(target, flags)?;
    let st = sys::fstat(fd.as_fd())?;
    ObjectMeta::of_fd(fd.as_fd(), &st, ignore_mtime)
}

/// The project ID of the object file `target` names.
fn object_projid(target: &Target) -> io::Result<u32> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOATIME | libc::O_NOFOLLOW;
    let fd = open_target(target, flags)?;
    Ok(sys::fs_xattr(fd.as_fd())?.projid)
}

/// True when `a` and `b` agree on all a change through the mount could
/// alter but ctime, which unify's own link, rename and marker change too.
fn same_but_ctime(a: &Stat, b: &Stat) -> bool {
    (a.dev, a.ino, a.mode, a.uid, a.gid, a.size, a.mtime, a.nlink)
        == (b.dev, b.ino, b.mode, b.uid, b.gid, b.size, b.mtime, b.nlink)
}

/// Inodes hardlinked across guests that this group swapped out of some of
/// their paths: how that left them, for the check of their other paths.
#[derive(Default)]
struct OwnChanges(Vec<Stat>);

impl OwnChanges {
    fn note(&mut self, fd: BorrowedFd) {
        if let Ok(st) = sys::fstat(fd) {
            self.0.retain(|s| (s.dev, s.ino) != (st.dev, st.ino));
            self.0.push(st);
        }
    }

    fn expected<'s>(&'s self, scanned: &'s Stat) -> &'s Stat {
        let same = |s: &&Stat| (s.dev, s.ino) == (scanned.dev, scanned.ino);
        self.0.iter().find(same).unwrap_or(scanned)
    }
}

/// Directories opened beneath guest roots, shared by the linking threads:
/// the files of one directory are spread over many groups. Bounded by the
/// open-file limit, which can be low.
struct DirCache {
    map: Mutex<HashMap<(u32, PathBuf), Arc<ParentDir>>>,
    capacity: usize,
}

/// An open directory, its (device, inode), and whether inode flags keep
/// unify from changing its entries (and what they are, for a report).
pub(super) struct ParentDir {
    pub fd: OwnedFd,
    pub key: (u64, u64),
    pub locked: Option<sys::DirLock>,
}

impl AsFd for ParentDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DirCache {
    fn get(
        &self,
        guest: u32,
        rel: &Path,
        open: impl FnOnce() -> io::Result<OwnedFd>,
    ) -> io::Result<Arc<ParentDir>> {
        let key = (guest, rel.to_path_buf());
        if let Some(dir) = self.map.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(dir);
        }
        let fd = open()?;
        let st = sys::fstat(fd.as_fd())?;
        let locked = locked_dir(fd.as_fd())?;
        let dir = Arc::new(ParentDir {
            fd,
            key: (st.dev, st.ino),
            locked,
        });
        if self.capacity == 0 {
            return Ok(dir); // no fds to spare
        }
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.capacity {
                // Half of them, as the hash order falls: cheap, and no
                // pattern of use keeps missing.
                let mut n = 0u32;
                map.retain(|_, _| {
                    n += 1;
                    n % 2 == 0
                });
            }
            map.insert(key, dir.clone());
        }
        Ok(dir)
    }
}

/// What a file in an immutable or append-only directory is left as, and
/// why: a link there could not be replaced by the guest's private copy
/// either (the mount's break is a rename too).
pub(super) const LOCKED_DIR_HINT: &str = "left as it was, private: a link there could never \
     be given the guest's private copy when it writes the file. Exclude the directory from \
     unify to leave it out without this problem";

/// Whether inode flags (`chattr +i`, `+a`) let no entry of the directory
/// at `fd` be renamed or removed, and which: a link swapped in there could
/// leave a temp name behind for good.
pub(super) fn locked_dir(fd: BorrowedFd) -> io::Result<Option<sys::DirLock>> {
    sys::inode_flags(fd).map(sys::DirLock::of)
}

pub fn object_row(id: &ObjectId, content: ContentHash, st: &Stat) -> ObjectRow {
    ObjectRow {
        id: *id,
        content_hash: content,
        size: st.size,
        perm: st.perm(),
        uid: st.uid,
        gid: st.gid,
        // As the id has it (ObjectMeta::of_fd): a copy of the object has
        // no other, and `store verify` compares the row with the copy.
        mtime: st.mtime.instant(),
    }
}

/// A writer waits on our lease (an error reading it counts as one).
pub(super) fn break_pending(fd: BorrowedFd) -> bool {
    sys::lease_break_pending(fd).unwrap_or(true)
}

pub(super) fn lease_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY))
}

/// A syscall of the replacement failed: the report says what was tried,
/// and that the file is as it was (a bare errno said neither).
/// Why a file could not be put into the store.
fn ingest_skip(e: store::Error) -> Skip {
    if store::object::is_no_xattr_room(&e) {
        return Skip::NoXattrRoom;
    }
    match &e {
        store::Error::Io { source, .. } if source.raw_os_error() == Some(libc::EXDEV) => {
            Skip::Failed(format!(
                "cannot link it into the store ({e}){PROJECT_EXDEV}"
            ))
        }
        _ => Skip::Failed(e.to_string()),
    }
}

/// What EXDEV means from link() within one filesystem (guests on another
/// are refused up front): a project ID boundary.
const PROJECT_EXDEV: &str = ": a directory with project inheritance (chattr +P; the \
    store's or the guest's) has another project ID (lsattr -p) than the file, and the \
    kernel refuses such a link; left as it was";

fn fail(e: io::Error) -> Skip {
    if e.raw_os_error() == Some(libc::EXDEV) {
        return Skip::Failed(format!("cannot link it ({e}){PROJECT_EXDEV}"));
    }
    Skip::Failed(format!("cannot link it ({e}); left as it was"))
}

/// [`fail`], but [`Skip::Gone`] for a guest path that is gone.
fn gone_or_fail(e: io::Error) -> Skip {
    match super::hash::gone(&e) {
        true => Skip::Gone,
        false => fail(e),
    }
}

/// `--paranoid`: compares the file's bytes with the object's. By offset:
/// `fd` may be the one hashing read to its end. The object is read without
/// moving its atime: it is the inode of every guest path linking it.
fn same_bytes(fd: BorrowedFd, target: &Target) -> io::Result<bool> {
    let flags = libc::O_RDONLY | libc::O_NOATIME;
    let obj = sys::open_regular_beneath(target.dir.as_fd(), Path::new(&target.name), flags)?;
    let a = File::from(fd.try_clone_to_owned()?);
    let b = File::from(obj);
    let mut buf_a = vec![0u8; 1 << 16];
    let mut buf_b = vec![0u8; 1 << 16];
    let mut at = 0;
    loop {
        let n = read_full(&a, &mut buf_a, at)?;
        let m = read_full(&b, &mut buf_b, at)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
        at += n as u64;
    }
}

fn read_full(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{GuestRow, Map};
    use crate::sys::Timestamp;
    use std::collections::HashSet;

    fn guest(root: &Path, id: i64) -> Guest {
        Guest {
            row: GuestRow {
                id,
                name: format!("g{id}"),
                path: root.to_path_buf(),
            },
            root: root.to_path_buf(),
            fd: sys::open_dir(root).unwrap(),
        }
    }

    /// Between hashing and linking, guest 1 swaps a directory for a new one
    /// (`mv d d.old; mkdir d; write d/f`), as package managers and deploy
    /// tools do. The inode hashed is untouched (same ctime, one link), but
    /// `d/f` now names a file the guest made during the run: linking must
    /// leave that file and its directory alone, as it did when it opened
    /// the path again (it saw another inode and skipped, touching nothing).
    #[test]
    fn a_path_the_guest_replaced_after_hashing_is_not_touched() {
        let _leasing = crate::sys::SPAWNS.read().unwrap_or_else(|e| e.into_inner());
        replaced_after_hashing(true);
    }

    /// The same, with linking opening the path again (as before 67ad9c9).
    #[test]
    fn a_path_the_guest_replaced_after_hashing_is_not_touched_when_reopened() {
        let _leasing = crate::sys::SPAWNS.read().unwrap_or_else(|e| e.into_inner());
        replaced_after_hashing(false);
    }

    /// The guest renames a directory (`mv d d.old`) while unify links in
    /// it: a file linked after the rename, through the directory unify
    /// already had open, is linked where the directory is now. That is the
    /// guest's file still, and linking it is invisible, but the directory's
    /// mtime, moved by the swap, must come back at the end like any other
    /// (invariant 3), though its path now names another directory or none.
    #[test]
    fn a_directory_the_guest_renamed_during_the_run_gets_its_mtime_back() {
        let _leasing = crate::sys::SPAWNS.read().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(&tmp.path().join("store")).unwrap();
        let t = Timestamp {
            sec: 1_000_000,
            nsec: 0,
        };
        let old = Timestamp { sec: 2000, nsec: 5 };
        let roots: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("g{i}"))).collect();
        for r in &roots {
            std::fs::create_dir_all(r.join("d")).unwrap();
            std::fs::write(r.join("d/a"), b"a file of one package").unwrap();
            std::fs::write(r.join("d/f"), b"another file of it, longer").unwrap();
            for f in ["d/a", "d/f"] {
                sys::lutimens(&r.join(f), t, t).unwrap();
            }
            sys::lutimens(&r.join("d"), old, old).unwrap();
        }
        let guests: Vec<Guest> = roots.iter().zip(1..).map(|(r, i)| guest(r, i)).collect();
        let candidates: Vec<FileRec> = (0..4)
            .map(|i| {
                let rel = PathBuf::from(if i < 2 { "d/a" } else { "d/f" });
                let stat = sys::lstat(&roots[i % 2].join(&rel)).unwrap();
                FileRec {
                    guest: (i % 2) as u32,
                    rel,
                    stat,
                }
            })
            .collect();
        let cache = Map::default();
        let hashed: Vec<_> = (0..4)
            .map(|i| {
                match super::super::hash::hash_cached(&guests, &candidates, i, &cache, false, true)
                {
                    Ok(super::super::hash::Read::Hashed(h, _)) => h,
                    _ => panic!("not hashed"),
                }
            })
            .collect();
        let groups = super::super::plan::plan(&candidates, &hashed, &HashSet::new());
        assert_eq!(groups.len(), 2);
        let first = |g: &Group| hashed.iter().find(|h| h.file == g.files[0]).unwrap();
        let applier = Applier::new(&store, &guests, &candidates);
        let (ga, gf): (Vec<&Group>, Vec<&Group>) = groups
            .iter()
            .partition(|g| candidates[g.files[0]].rel == Path::new("d/a"));
        let work = applier
            .apply_group(ga[0], first(ga[0]), &mut HashMap::new(), &HashSet::new())
            .unwrap();
        assert_eq!(work.totals.files_linked, 1, "{:?}", work.problems);

        // The guest moves d away, and makes a new d.
        let g1 = &roots[1];
        std::fs::rename(g1.join("d"), g1.join("d.old")).unwrap();
        std::fs::create_dir(g1.join("d")).unwrap();

        let work = applier
            .apply_group(gf[0], first(gf[0]), &mut HashMap::new(), &HashSet::new())
            .unwrap();
        let (problems, _) = applier.dir_times.restore(&guests);
        assert!(problems.is_empty(), "{problems:?}");
        // Whatever was linked where, d.old reads as the guest left it.
        let m = sys::lstat(&g1.join("d.old")).unwrap().mtime;
        assert_eq!(
            m, old,
            "the renamed directory kept the mtime of unify's swap ({} linked)",
            work.totals.files_linked
        );
    }

    fn replaced_after_hashing(keep_fds: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(&tmp.path().join("store")).unwrap();
        let t = Timestamp {
            sec: 1_000_000,
            nsec: 0,
        };
        let roots: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("g{i}"))).collect();
        for r in &roots {
            std::fs::create_dir_all(r.join("d")).unwrap();
            std::fs::write(r.join("d/f"), b"one package's file").unwrap();
            sys::lutimens(&r.join("d/f"), t, t).unwrap();
        }
        let guests: Vec<Guest> = roots.iter().zip(1..).map(|(r, i)| guest(r, i)).collect();
        let candidates: Vec<FileRec> = (0..2)
            .map(|g| FileRec {
                guest: g,
                rel: PathBuf::from("d/f"),
                stat: sys::lstat(&roots[g as usize].join("d/f")).unwrap(),
            })
            .collect();
        let cache = Map::default();
        let mut hashed = Vec::new();
        let mut fds = HashMap::new();
        for i in 0..2 {
            let read =
                super::super::hash::hash_cached(&guests, &candidates, i, &cache, false, i == 0);
            let Ok(super::super::hash::Read::Hashed(h, fd)) = read else {
                panic!("not hashed")
            };
            hashed.push(h);
            fds.insert(i, fd.expect("read, not cached"));
        }
        let groups = super::super::plan::plan(&candidates, &hashed, &HashSet::new());
        assert_eq!(groups.len(), 1);

        // The guest's directory swap, after hashing.
        let g1 = &roots[1];
        std::fs::rename(g1.join("d"), g1.join("d.old")).unwrap();
        std::fs::create_dir(g1.join("d")).unwrap();
        std::fs::write(g1.join("d/f"), b"the guest's new file").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let dir_before = sys::lstat(&g1.join("d")).unwrap();
        let file_before = sys::lstat(&g1.join("d/f")).unwrap();

        if !keep_fds {
            fds.clear();
        }
        let applier = Applier::new(&store, &guests, &candidates);
        let work = applier
            .apply_group(&groups[0], &hashed[0], &mut fds, &HashSet::new())
            .unwrap();
        assert_eq!(work.totals.files_linked, 0, "{:?}", work.problems);

        assert_eq!(
            std::fs::read(g1.join("d/f")).unwrap(),
            b"the guest's new file"
        );
        let dir_after = sys::lstat(&g1.join("d")).unwrap();
        let file_after = sys::lstat(&g1.join("d/f")).unwrap();
        assert_eq!(
            file_after.ctime, file_before.ctime,
            "the guest's new file was renamed (swapped out and back)"
        );
        assert_eq!(
            dir_after.ctime, dir_before.ctime,
            "unify linked into and swapped in the guest's new directory"
        );
    }
}
