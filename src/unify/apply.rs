//! Carrying out a plan, one file at a time, race-free:
//!
//! 1. open the file beneath its guest root (no symlinks), read-only;
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
use super::{Guest, Problem};
use crate::catalog::{Catalog, ObjectRow};
use crate::store::object::Ingested;
use crate::store::{self, ObjectId, ObjectMeta, Store};
use crate::sys::{self, Stat};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Catalog writes between commits: bounds what a killed run must redo.
const COMMIT_EVERY: usize = 4096;

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ApplyTotals {
    pub files_linked: u64,
    pub bytes_saved: u64,
    pub objects_added: u64,
    /// Objects copied (not linked) because their first file was open for writing.
    pub objects_copied: u64,
    /// Extra object copies started because one reached the link limit.
    pub extra_copies: u64,
    pub skipped_changed: u64,
    pub skipped_in_use: u64,
}

use super::Result;

/// The object copy new links go to.
struct Target {
    id: ObjectId,
    copy: u32,
    nlink: u64,
    dir: OwnedFd,
    name: OsString,
}

/// Why a file was left as it was.
enum Skip {
    Changed,
    InUse,
    Failed(String),
}

pub struct Applier<'a> {
    pub store: &'a Store,
    pub catalog: &'a Catalog,
    pub guests: &'a [Guest],
    pub candidates: &'a [FileRec],
    pub run: i64,
    /// Treat an object as full at this many links (tests; else EMLINK decides).
    pub link_max: Option<u64>,
    pub paranoid: bool,
    /// The store's ids leave mtime out.
    pub ignore_mtime: bool,
    pub totals: ApplyTotals,
    pub problems: Vec<Problem>,
    /// Candidates whose inode is gone or became an object (no cache row).
    pub consumed: Vec<usize>,
    pending: usize,
    tmp_seq: u64,
    closer: super::closer::Closer,
    parent: Option<(u32, PathBuf, OwnedFd)>,
}

impl<'a> Applier<'a> {
    pub fn new(
        store: &'a Store,
        catalog: &'a Catalog,
        guests: &'a [Guest],
        candidates: &'a [FileRec],
        run: i64,
    ) -> Applier<'a> {
        Applier {
            store,
            catalog,
            guests,
            candidates,
            run,
            link_max: None,
            paranoid: false,
            ignore_mtime: false,
            totals: ApplyTotals::default(),
            problems: Vec::new(),
            consumed: Vec::new(),
            pending: 0,
            tmp_seq: 0,
            closer: super::closer::Closer::new(),
            parent: None,
        }
    }

    /// Counts a catalog write; commits every [`COMMIT_EVERY`].
    pub fn tick(&mut self) -> Result<()> {
        self.pending += 1;
        if self.pending >= COMMIT_EVERY {
            self.catalog.commit()?;
            self.catalog.begin()?;
            self.pending = 0;
        }
        Ok(())
    }

    pub fn apply_group(&mut self, group: &Group, content: &Hashed) -> Result<()> {
        let mut target = if group.existing {
            self.open_target(&group.id)?
        } else {
            None
        };
        for &file in &group.files {
            let outcome = match target.as_mut() {
                Some(t) => self.replace(file, t),
                None => match self.ingest(file, group, content) {
                    Ok(t) => {
                        target = Some(t);
                        Ok(())
                    }
                    Err(skip) => Err(skip),
                },
            };
            if let Err(skip) = outcome {
                self.note_skip(file, skip);
            }
        }
        Ok(())
    }

    fn note_skip(&mut self, file: usize, skip: Skip) {
        let path = self.path_of(file);
        match skip {
            Skip::Changed => {
                self.totals.skipped_changed += 1;
                self.problems.push(Problem::new(
                    path,
                    "changed while unify ran; left as it was",
                ));
            }
            Skip::InUse => {
                self.totals.skipped_in_use += 1;
                self.problems
                    .push(Problem::new(path, "open for writing; left as it was"));
            }
            Skip::Failed(why) => self.problems.push(Problem::new(path, why)),
        }
    }

    fn path_of(&self, file: usize) -> PathBuf {
        let rec = &self.candidates[file];
        self.guests[rec.guest as usize].root.join(&rec.rel)
    }

    /// The highest existing copy of an object the catalog knows, if any.
    fn open_target(&mut self, id: &ObjectId) -> Result<Option<Target>> {
        let mut found = None;
        for copy in 0.. {
            match self.store.stat_object(id, copy)? {
                Some(st) => found = Some((copy, st)),
                None => break,
            }
        }
        let Some((copy, st)) = found else {
            return Ok(None);
        };
        let (dir, name) = self.store.object_link_source(id, copy)?;
        Ok(Some(Target {
            id: *id,
            copy,
            nlink: st.nlink,
            dir,
            name,
        }))
    }

    /// Makes the first file of a group the object (or copies it into the
    /// store when someone holds it open for writing).
    fn ingest(
        &mut self,
        file: usize,
        group: &Group,
        content: &Hashed,
    ) -> std::result::Result<Target, Skip> {
        let (parent, name) = self.open_parent(file).map_err(fail)?;
        let fd = self.open_checked(file, parent.as_fd(), &name)?;
        let rec = &self.candidates[file];
        let leased = match sys::take_read_lease(fd.as_fd()) {
            Ok(()) => true,
            Err(e) if lease_busy(&e) => false,
            Err(e) => return Err(fail(e)),
        };
        let st = sys::fstat(fd.as_fd()).map_err(fail)?;
        if !st.unchanged(&rec.stat) {
            return Err(Skip::Changed);
        }
        let row = object_row(&group.id, content, &rec.stat);
        let ingested = if leased {
            self.store
                .ingest_by_link(fd.as_fd(), &group.id, 0)
                .map_err(|e| Skip::Failed(e.to_string()))?
        } else {
            let meta = ObjectMeta::of_fd(fd.as_fd(), &st, self.ignore_mtime).map_err(fail)?;
            match self
                .store
                .ingest_by_copy(fd.as_fd(), &meta, &group.id, 0)
                .map_err(|e| Skip::Failed(e.to_string()))?
            {
                Some(i) => i,
                None => return Err(Skip::Changed),
            }
        };
        let record = |this: &mut Self, copy: u32, stat: &Stat| -> Result<()> {
            this.catalog.insert_object(&row, this.run)?;
            this.catalog
                .set_object_file(&group.id, copy, stat.dev, stat.ino)?;
            this.tick()
        };
        match ingested {
            Ingested::Linked { copy, stat } => {
                record(self, copy, &stat).map_err(|e| Skip::Failed(format!("{e:?}")))?;
                self.totals.objects_added += 1;
                if leased {
                    let rec = &self.candidates[file];
                    let guest = self.guests[rec.guest as usize].row.id;
                    self.catalog
                        .set_guest_link(guest, &rec.rel, &group.id, self.run)
                        .map_err(|e| Skip::Failed(e.to_string()))?;
                    self.consumed.push(file);
                } else {
                    self.totals.objects_copied += 1;
                    self.note_skip(file, Skip::InUse);
                }
                let (dir, name) = self
                    .store
                    .object_link_source(&group.id, copy)
                    .map_err(|e| Skip::Failed(e.to_string()))?;
                drop(fd);
                Ok(Target {
                    id: group.id,
                    copy,
                    nlink: stat.nlink,
                    dir,
                    name,
                })
            }
            Ingested::Exists { .. } => {
                // The store had it though the catalog did not: link to it.
                drop(fd);
                let stat = self
                    .store
                    .stat_object(&group.id, 0)
                    .map_err(|e| Skip::Failed(e.to_string()))?
                    .ok_or(Skip::Changed)?;
                record(self, 0, &stat).map_err(|e| Skip::Failed(format!("{e:?}")))?;
                let mut target = self
                    .open_target(&group.id)
                    .map_err(|e| Skip::Failed(format!("{e:?}")))?
                    .ok_or(Skip::Changed)?;
                self.replace(file, &mut target)?;
                Ok(target)
            }
        }
    }

    /// Replaces one file by a link to `target`.
    fn replace(&mut self, file: usize, target: &mut Target) -> std::result::Result<(), Skip> {
        let (parent, name) = self.open_parent(file).map_err(fail)?;
        let fd = self.open_checked(file, parent.as_fd(), &name)?;
        match sys::take_read_lease(fd.as_fd()) {
            Ok(()) => {}
            Err(e) if lease_busy(&e) => return Err(Skip::InUse),
            Err(e) => return Err(fail(e)),
        }
        let rec = &self.candidates[file];
        let st = sys::fstat(fd.as_fd()).map_err(fail)?;
        if !st.unchanged(&rec.stat) {
            return Err(Skip::Changed);
        }
        if self.paranoid && !same_bytes(fd.as_fd(), target).map_err(fail)? {
            return Err(Skip::Failed(format!(
                "--paranoid: bytes differ from object {} though the hashes match; left as it was",
                target.id
            )));
        }
        let tmp = self.link_to_tmp(target, parent.as_fd())?;
        if let Err(e) = sys::rename_exchange(parent.as_fd(), &tmp, &name) {
            let _ = sys::unlink_at(parent.as_fd(), &tmp);
            return Err(fail(e));
        }
        // The name may have been replaced after our check: only remove
        // what we swapped out if it is the inode we checked.
        match sys::stat_at(parent.as_fd(), &tmp) {
            Ok(out) if out.ino == st.ino && out.dev == st.dev => {}
            _ => {
                if sys::rename_exchange(parent.as_fd(), &tmp, &name).is_ok() {
                    let _ = sys::unlink_at(parent.as_fd(), &tmp);
                }
                return Err(Skip::Changed);
            }
        }
        sys::unlink_at(parent.as_fd(), &tmp).map_err(fail)?;
        self.closer.close(fd);
        let rec = &self.candidates[file];
        let guest = self.guests[rec.guest as usize].row.id;
        self.catalog
            .set_guest_link(guest, &rec.rel, &target.id, self.run)
            .map_err(|e| Skip::Failed(e.to_string()))?;
        self.tick().map_err(|e| Skip::Failed(format!("{e:?}")))?;
        self.consumed.push(file);
        self.totals.files_linked += 1;
        self.totals.bytes_saved += rec.stat.size;
        Ok(())
    }

    /// Links the target object to a fresh temp name in `parent`, moving on
    /// to the next copy of the object when this one is full.
    fn link_to_tmp(
        &mut self,
        target: &mut Target,
        parent: BorrowedFd,
    ) -> std::result::Result<OsString, Skip> {
        loop {
            if self.link_max.is_some_and(|max| target.nlink >= max) {
                self.next_copy(target)?;
                continue;
            }
            self.tmp_seq += 1;
            let tmp = OsString::from(format!(
                "{TMP_PREFIX}{}-{}",
                std::process::id(),
                self.tmp_seq
            ));
            match sys::link_at(target.dir.as_fd(), &target.name, parent, &tmp) {
                Ok(()) => {
                    target.nlink += 1;
                    return Ok(tmp);
                }
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) => self.next_copy(target)?,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(fail(e)),
            }
        }
    }

    /// Moves `target` to the next copy of its object, creating it if needed.
    fn next_copy(&mut self, target: &mut Target) -> std::result::Result<(), Skip> {
        let failed = |e: store::Error| Skip::Failed(e.to_string());
        let copy = target.copy + 1;
        let stat = match self.store.stat_object(&target.id, copy).map_err(failed)? {
            Some(st) => st,
            None => {
                let made = self
                    .store
                    .new_copy(&target.id, target.copy, copy, self.ignore_mtime)
                    .map_err(failed)?;
                self.totals.extra_copies += 1;
                match made {
                    Ingested::Linked { stat, .. } => stat,
                    Ingested::Exists { .. } => self
                        .store
                        .stat_object(&target.id, copy)
                        .map_err(failed)?
                        .ok_or_else(|| Skip::Failed("object copy vanished".into()))?,
                }
            }
        };
        self.catalog
            .set_object_file(&target.id, copy, stat.dev, stat.ino)
            .map_err(|e| Skip::Failed(e.to_string()))?;
        let (dir, name) = self
            .store
            .object_link_source(&target.id, copy)
            .map_err(failed)?;
        *target = Target {
            id: target.id,
            copy,
            nlink: stat.nlink,
            dir,
            name,
        };
        Ok(())
    }

    /// Opens the file read-only beneath its parent (no symlink followed) and
    /// checks it is the scanned inode, unchanged, with no other link.
    fn open_checked(
        &self,
        file: usize,
        parent: BorrowedFd,
        name: &OsStr,
    ) -> std::result::Result<OwnedFd, Skip> {
        let rec = &self.candidates[file];
        let fd = match sys::open_at(
            parent,
            name,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOATIME,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ELOOP)) => {
                return Err(Skip::Changed)
            }
            Err(e) => return Err(fail(e)),
        };
        let st = sys::fstat(fd.as_fd()).map_err(fail)?;
        if !st.is_file() || !st.unchanged(&rec.stat) || st.nlink != 1 {
            return Err(Skip::Changed);
        }
        Ok(fd)
    }

    /// The parent directory of a candidate, opened beneath the guest root.
    fn open_parent(&mut self, file: usize) -> io::Result<(OwnedFd, OsString)> {
        let rec = &self.candidates[file];
        let parent_rel = rec.rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let name = rec
            .rel
            .file_name()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?
            .to_os_string();
        if let Some((g, p, fd)) = &self.parent {
            if *g == rec.guest && *p == parent_rel {
                return Ok((fd.try_clone()?, name));
            }
        }
        let guest = &self.guests[rec.guest as usize];
        let fd = sys::open_beneath(
            guest.fd.as_fd(),
            &parent_rel,
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?;
        self.parent = Some((rec.guest, parent_rel, fd.try_clone()?));
        Ok((fd, name))
    }
}

pub fn object_row(id: &ObjectId, content: &Hashed, st: &Stat) -> ObjectRow {
    ObjectRow {
        id: *id,
        content_hash: content.content,
        size: st.size,
        perm: st.perm(),
        uid: st.uid,
        gid: st.gid,
        mtime: st.mtime,
    }
}

fn lease_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY))
}

fn fail(e: io::Error) -> Skip {
    Skip::Failed(e.to_string())
}

/// `--paranoid`: compares the file's bytes with the object's.
fn same_bytes(fd: BorrowedFd, target: &Target) -> io::Result<bool> {
    let obj = sys::open_at(target.dir.as_fd(), &target.name, libc::O_RDONLY, 0)?;
    let mut a = File::from(fd.try_clone_to_owned()?);
    let mut b = File::from(obj);
    let mut buf_a = vec![0u8; 1 << 16];
    let mut buf_b = vec![0u8; 1 << 16];
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
