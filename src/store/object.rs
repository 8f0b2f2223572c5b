//! Putting objects into the store: by linking the checked inode itself (no
//! data copied), or by copying it when someone may still write to it, and
//! starting another copy of a full object (EMLINK).

use super::{id, MARKER_XATTR};
use super::{read_marker, Error, IoContext, ObjectId, ObjectMeta, Result, Store};
use crate::sys::{self, Stat};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The outcome of putting an inode into the store.
#[derive(Debug)]
pub enum Ingested {
    /// The inode is now object copy `copy`.
    Linked { copy: u32, stat: Stat },
    /// An object file of that id and copy already existed (a run killed
    /// before it updated the catalog); link to it instead.
    Exists { copy: u32 },
}

impl Store {
    /// Makes the open inode `fd` itself object copy `copy` of `id`: marks it,
    /// then links it into `objects/`. The caller holds a read lease on `fd`
    /// and has re-checked it, so no one can be writing to it. The marker goes
    /// on first: a crash in between leaves a marked file that is not an
    /// object (harmless: the mount copies it once), never an unmarked object.
    /// If it does not become the object (the name exists, or the link
    /// fails), a marker set here is taken off again: a marked file that is
    /// no object would be taken for a shared one by the mount.
    pub fn ingest_by_link(&self, fd: BorrowedFd, id: &ObjectId, copy: u32) -> Result<Ingested> {
        let path = self.object_path(id, copy);
        let marked_here = read_marker(fd).at(&path)? != Some(*id);
        if marked_here {
            set_marker(fd, id).at(&path)?;
        }
        let linked = self.at_object(id, copy, true, |dir, name| sys::link_fd(fd, dir, name));
        if linked.is_err() && marked_here {
            match sys::xattr::remove_fd(fd, OsStr::new(MARKER_XATTR)) {
                Err(e) if e.raw_os_error() != Some(libc::ENODATA) => return Err(e).at(&path),
                _ => {}
            }
        }
        match linked {
            Ok(()) => {}
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                return Ok(Ingested::Exists { copy })
            }
            Err(e) => return Err(e),
        }
        let stat = sys::fstat(fd).at(&path)?;
        Ok(Ingested::Linked { copy, stat })
    }

    /// Undoes [`Store::ingest_by_link`] when a writer turned up before the
    /// lease was released: the inode leaves the store and loses its marker,
    /// so the writer's changes stay the guest's own.
    pub fn undo_ingest(&self, fd: BorrowedFd, id: &ObjectId, copy: u32) -> Result<()> {
        let path = self.object_path(id, copy);
        self.at_object(id, copy, false, sys::unlink_at)?;
        match sys::xattr::remove_fd(fd, OsStr::new(MARKER_XATTR)) {
            Err(e) if e.raw_os_error() != Some(libc::ENODATA) => Err(e).at(path),
            _ => Ok(()),
        }
    }

    /// Copies the open file `src` into the store as copy `copy` of `id`, for
    /// an inode someone may still write to. The copy is hashed again and
    /// kept only if it still has id `id` (the source may have changed while
    /// copied); returns `Ok(None)` if it did not.
    pub fn ingest_by_copy(
        &self,
        src: BorrowedFd,
        meta: &ObjectMeta,
        id: &ObjectId,
        copy: u32,
    ) -> Result<Option<Ingested>> {
        let path = self.object_path(id, copy);
        let tmp_dir = self.tmp_dir()?;
        let (tmp_name, tmp) = self.create_tmp(tmp_dir).at(self.root.join("tmp"))?;
        let result = self.fill_copy(src, tmp.as_fd(), meta, id).at(&path);
        let keep = match result {
            Ok(keep) => keep,
            Err(e) => {
                let _ = sys::unlink_at(tmp_dir, &tmp_name);
                return Err(e);
            }
        };
        if !keep {
            let _ = sys::unlink_at(tmp_dir, &tmp_name);
            return Ok(None);
        }
        let renamed = self.at_object(id, copy, true, |dir, name| {
            sys::rename_noreplace(tmp_dir, &tmp_name, dir, name)
        });
        match renamed {
            Ok(()) => {}
            Err(e) => {
                let _ = sys::unlink_at(tmp_dir, &tmp_name);
                return match e {
                    Error::Io { source, .. } if source.raw_os_error() == Some(libc::EEXIST) => {
                        Ok(Some(Ingested::Exists { copy }))
                    }
                    e => Err(e),
                };
            }
        }
        let _ = self.sync_fanout(id);
        let stat = sys::fstat(tmp.as_fd()).at(&path)?;
        Ok(Some(Ingested::Linked { copy, stat }))
    }

    /// Starts copy `copy` of a full object from its existing copy `from`.
    /// `ignore_mtime`: the store's ids leave mtime out.
    pub fn new_copy(
        &self,
        id: &ObjectId,
        from: u32,
        copy: u32,
        ignore_mtime: bool,
    ) -> Result<Ingested> {
        let src_path = self.object_path(id, from);
        // Read without moving its atime: the full copy is the inode of
        // every guest path linking it.
        let src = self.at_object(id, from, false, |dir, name| {
            sys::open_regular_beneath(dir, name.as_ref(), libc::O_RDONLY | libc::O_NOATIME)
        })?;
        let st = sys::fstat(src.as_fd()).at(&src_path)?;
        let meta = ObjectMeta::of_fd(src.as_fd(), &st, ignore_mtime).at(&src_path)?;
        match self.ingest_by_copy(src.as_fd(), &meta, id, copy)? {
            Some(done) => Ok(done),
            None => Err(Error::Io {
                path: src_path,
                source: io::Error::other("object changed while copied: run `unifs store verify`"),
            }),
        }
    }

    /// [`Store::new_copy`] for a process that does not know whether the
    /// store's ids leave mtime out (restore, which needs no catalog): the
    /// mode is the one under which copy `from` hashes to `id` (one more
    /// read of it; copies are rare).
    pub fn new_copy_in_its_mode(&self, id: &ObjectId, from: u32, copy: u32) -> Result<Ingested> {
        let src_path = self.object_path(id, from);
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW;
        let src = self.open_object(id, from, flags)?;
        let st = sys::fstat(src.as_fd()).at(&src_path)?;
        // A second fd to hash through: reading moves the file position.
        let probe = File::from(self.open_object(id, from, flags)?);
        let with_mtime = ObjectMeta::of_fd(src.as_fd(), &st, false).at(&src_path)?;
        let ignore_mtime = id::hash_id(&with_mtime, &probe).at(&src_path)? != *id;
        self.new_copy(id, from, copy, ignore_mtime)
    }

    fn create_tmp(&self, tmp_dir: BorrowedFd) -> io::Result<(OsString, OwnedFd)> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let name = OsString::from(format!("obj.{}.{n}", std::process::id()));
            match sys::open_at(
                tmp_dir,
                &name,
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600,
            ) {
                Ok(fd) => return Ok((name, fd)),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Inode flags, data, then owner, mode, xattrs, marker, times (chown
    /// clears set-id bits and file capabilities, so it goes first), then
    /// fsync. Returns whether the copy hashes to `id`.
    fn fill_copy(
        &self,
        src: BorrowedFd,
        dst: BorrowedFd,
        meta: &ObjectMeta,
        id: &ObjectId,
    ) -> io::Result<bool> {
        // The copy is made in tmp/: flags that directory hands down (chattr
        // +C, xfs' extent size hints, a project) would be every linking
        // guest's, and the id does not cover them. While it is empty.
        sys::copy_inherited_flags(src, dst, None)?;
        if sys::ficlone(dst, src).is_err() {
            sys::copy_data(src, dst, meta.size).map_err(sys::name_file_size_limit)?;
        }
        let file = File::from(dst.try_clone_to_owned()?);
        let copied = id::hash_id(meta, &file)?;
        if copied != *id {
            return Ok(false);
        }
        sys::fchown(dst, meta.uid, meta.gid)?;
        sys::fchmod(dst, meta.perm)?;
        for (name, value) in &meta.xattrs {
            sys::xattr::set_fd(dst, name, value)?;
        }
        // A new file may have xattrs of its own: the access ACL a default
        // ACL on the store's directories gives it. The id does not cover
        // them, and every guest linking the copy would get them.
        for (name, _) in sys::xattr::list_fd(dst)? {
            let ours = name.as_bytes().starts_with(id::STORE_XATTR_PREFIX);
            if !ours && !meta.xattrs.iter().any(|(n, _)| *n == name) {
                sys::xattr::remove_fd(dst, &name)?;
            }
        }
        set_marker(dst, id)?;
        if let Some(mtime) = meta.mtime {
            sys::futimens(dst, mtime, mtime)?;
        } else {
            let st = sys::fstat(src)?;
            sys::futimens(dst, st.mtime, st.mtime)?;
        }
        file.sync_all()?;
        Ok(true)
    }
}

fn set_marker(fd: BorrowedFd, id: &ObjectId) -> io::Result<()> {
    if !marker_fits(fd)? {
        return Err(io::Error::other(NoXattrRoom));
    }
    match sys::xattr::set_fd(fd, OsStr::new(MARKER_XATTR), &super::marker_value(id)) {
        Err(e) if no_xattr_room(fd, &e) => Err(io::Error::other(NoXattrRoom)),
        r => r,
    }
}

/// Whether the marker's name fits in the file's xattr name list: xfs sets
/// an xattr that takes the list past what listxattr may return
/// ([`sys::xattr::LIST_MAX`]), and then no one could list the file's
/// xattrs (E2BIG) — not tar, rsync, the guest or unifs. A marker that is
/// there already (another id's) is replaced in place.
fn marker_fits(fd: BorrowedFd) -> io::Result<bool> {
    let entry = MARKER_XATTR.len() + 1;
    if sys::xattr::list_len(fd)? + entry <= sys::xattr::LIST_MAX {
        return Ok(true);
    }
    Ok(sys::xattr::get_fd(fd, OsStr::new(MARKER_XATTR))?.is_some())
}

/// The file's own xattrs leave no room for the store's marker: ext4 keeps
/// a file's xattrs in its inode and at most one block (all of them in the
/// block with 128-byte inodes), and says ENOSPC when they would not fit,
/// however much space is free; and no filesystem may take the names past
/// the 64 KiB listxattr returns ([`marker_fits`]). Such a file can never
/// become an object.
#[derive(Debug, thiserror::Error)]
#[error("no room for the store's xattr (trusted.unifs.object) beside the file's own xattrs")]
pub struct NoXattrRoom;

/// Whether `err`, setting an xattr on `fd`, means [`NoXattrRoom`]: ENOSPC
/// (E2BIG) while the filesystem has blocks free (a full disk says ENOSPC
/// too, and that is no property of the file).
fn no_xattr_room(fd: BorrowedFd, err: &io::Error) -> bool {
    match err.raw_os_error() {
        Some(libc::E2BIG) => true,
        Some(libc::ENOSPC) => {
            nix::sys::statvfs::fstatvfs(fd).is_ok_and(|st| st.blocks_free() >= 16)
        }
        _ => false,
    }
}

/// Whether `err` is a [`NoXattrRoom`] (unify leaves such files alone).
pub fn is_no_xattr_room(err: &Error) -> bool {
    matches!(err, Error::Io { source, .. }
        if source.get_ref().is_some_and(|r| r.is::<NoXattrRoom>()))
}
