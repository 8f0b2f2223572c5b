//! `store verify`, `store gc` and the figures of `store stats`, read from the
//! object files themselves (the filesystem is the truth).

use super::{parse_object_name, read_marker, IoContext, ObjectId, ObjectMeta, Result, Store};
use crate::sys;
use rayon::prelude::*;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One file under `objects/`.
#[derive(Debug, Clone)]
pub struct ObjectFile {
    pub id: ObjectId,
    pub copy: u32,
    pub path: PathBuf,
}

/// Something wrong with an object file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    #[serde(serialize_with = "crate::sys::lossy_path")]
    pub path: PathBuf,
    pub what: String,
    /// For an object: the guests with a path that links it (`store
    /// verify` fills it in from the catalog).
    pub guests: Vec<String>,
}

impl Store {
    /// Every object file, sorted by path. Stray names are reported as problems.
    pub fn list_objects(&self) -> Result<(Vec<ObjectFile>, Vec<Problem>)> {
        let objects = self.root.join("objects");
        let mut files = Vec::new();
        let mut stray = Vec::new();
        for dir in std::fs::read_dir(&objects).at(&objects)? {
            let dir = dir.at(&objects)?;
            let dir_path = dir.path();
            if !dir.file_type().at(&dir_path)?.is_dir() {
                stray.push(Problem {
                    path: dir_path,
                    what: "not an object fan-out directory".into(),
                    guests: Vec::new(),
                });
                continue;
            }
            for entry in std::fs::read_dir(&dir_path).at(&dir_path)? {
                let entry = entry.at(&dir_path)?;
                let path = entry.path();
                match parse_object_name(&dir.file_name(), &entry.file_name()) {
                    Some((id, copy)) => files.push(ObjectFile { id, copy, path }),
                    None => stray.push(Problem {
                        path,
                        what: "name is not an object id".into(),
                        guests: Vec::new(),
                    }),
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((files, stray))
    }

    /// Rehashes every object with its current metadata and reports each
    /// whose id no longer matches its name, or whose marker is wrong.
    pub fn verify(&self, ignore_mtime: bool) -> Result<VerifyReport> {
        let (files, mut problems) = self.list_objects()?;
        let results: Vec<Option<(u64, Option<Problem>)>> = files
            .par_iter()
            .map(|f| match verify_one(f, ignore_mtime) {
                Ok((bytes, None)) => Some((bytes, None)),
                Ok((bytes, Some(what))) => Some((
                    bytes,
                    Some(Problem {
                        path: f.path.clone(),
                        what,
                        guests: Vec::new(),
                    }),
                )),
                // Removed since the listing (a store gc beside us, or a
                // unify giving a just-made object back): no object, no
                // problem. One the catalog lists is checked for by the
                // caller.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some((
                    0,
                    Some(Problem {
                        path: f.path.clone(),
                        what: e.to_string(),
                        guests: Vec::new(),
                    }),
                )),
            })
            .collect();
        let mut bytes = 0;
        let mut objects = 0;
        for (b, p) in results.into_iter().flatten() {
            objects += 1;
            bytes += b;
            problems.extend(p);
        }
        Ok(VerifyReport {
            objects,
            bytes,
            problems,
        })
    }

    /// Object files that no guest links any more (`nlink == 1`), with their
    /// sizes: what gc removes. The caller holds the writer lock, so nothing
    /// links them meanwhile.
    /// A copy goes only with every higher copy of its object: unify finds
    /// copies by counting up from 0 and stops at the first gap, so a copy
    /// past a gap would never be linked to again.
    pub fn gc_candidates(&self) -> Result<Vec<(ObjectFile, u64)>> {
        let (mut files, _) = self.list_objects()?;
        files.sort_by(|a, b| (a.id, b.copy).cmp(&(b.id, a.copy)));
        let mut found = Vec::new();
        let mut kept: Option<ObjectId> = None; // an object with a linked copy above
        for f in files {
            if kept == Some(f.id) {
                continue;
            }
            let st = sys::lstat(&f.path).at(&f.path)?;
            if st.nlink == 1 {
                found.push((f, st.size));
            } else {
                kept = Some(f.id);
            }
        }
        Ok(found)
    }

    /// Unlinks the object files [`Store::gc_candidates`] found, once the
    /// catalog no longer lists them (a gc killed in between leaves files
    /// no row names, which the next gc finds again; never rows naming
    /// inode numbers that are free to be reused). (`tmp/` was emptied
    /// before, [`Store::empty_tmp`].)
    pub fn gc_remove(&self, files: &[(ObjectFile, u64)]) -> Result<()> {
        for (f, _) in files {
            match std::fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&f.path),
            }
        }
        Ok(())
    }

    /// Removes what killed runs left in `tmp/` (a copy being staged as an
    /// object, a cache file being written: whole files' worth of space),
    /// but for their records of directory mtimes. The caller holds the
    /// writer lock: every process that stages there holds it too, so
    /// nothing in `tmp/` is in use.
    pub fn empty_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).at(&tmp)? {
            let entry = entry.at(&tmp)?;
            // A killed unify's record of the directory mtimes it changed:
            // for the next unify to put them back.
            if entry
                .file_name()
                .as_bytes()
                .starts_with(super::DIR_TIMES_PREFIX.as_bytes())
            {
                continue;
            }
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(())
    }

    /// Gives a missing object file (copy `copy` of `id`, whose inode the
    /// catalog recorded as `inode`) its name back from the guest path
    /// (`guest_root`, `rel`), if that path still links the very inode, is
    /// marked as this object and still hashes to its id. Returns whether it
    /// did (with `dry_run`: whether it would). The path is opened beneath
    /// the guest root, never through a symlink, and the inode linked is the
    /// one checked (by its fd), whatever the guest does meanwhile.
    pub fn relink_missing(
        &self,
        id: &ObjectId,
        copy: u32,
        inode: (u64, u64),
        (guest_root, rel): (&Path, &Path),
        ignore_mtime: bool,
        dry_run: bool,
    ) -> std::io::Result<bool> {
        let root = sys::open_dir(guest_root)?;
        let fd = sys::open_beneath(
            root.as_fd(),
            rel,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOATIME | libc::O_NONBLOCK,
        )?;
        let st = sys::fstat(fd.as_fd())?;
        if !st.is_file() || (st.dev, st.ino) != inode || read_marker(fd.as_fd())? != Some(*id) {
            return Ok(false);
        }
        let meta = ObjectMeta::of_fd(fd.as_fd(), &st, ignore_mtime)?;
        let file = std::fs::File::from(fd);
        if super::id::hash_id(&meta, &file)? != *id {
            return Ok(false);
        }
        if dry_run {
            return Ok(true);
        }
        let dir = self.fanout_dir(id, true).map_err(|e| match e {
            super::Error::Io { source, .. } => source,
            e => std::io::Error::other(e.to_string()),
        })?;
        let (_, name) = super::object_names(id, copy);
        sys::link_fd(file.as_fd(), dir.as_fd(), &name)?;
        Ok(true)
    }

    /// Store-wide figures from the object files.
    pub fn usage(&self) -> Result<Usage> {
        let (mut files, _) = self.list_objects()?;
        // Highest copy first, as gc_candidates decides what stays.
        files.sort_by(|a, b| (a.id, b.copy).cmp(&(b.id, a.copy)));
        let mut kept: Option<ObjectId> = None; // an object with a linked copy above
        let mut u = Usage::default();
        let mut ids = std::collections::HashSet::new();
        for f in &files {
            let st = match sys::lstat(&f.path) {
                Ok(st) => st,
                // Removed since the listing (a store gc beside us).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&f.path),
            };
            ids.insert(f.id);
            u.object_files += 1;
            u.bytes_stored += st.size;
            let guest_links = st.nlink.saturating_sub(1);
            u.guest_links += guest_links;
            // One guest link per object file would have existed anyway.
            u.bytes_saved += st.size * guest_links.saturating_sub(1);
            if guest_links > 0 {
                kept = Some(f.id);
            } else if kept == Some(f.id) {
                u.unused_kept_object_files += 1;
            } else {
                u.unused_object_files += 1;
            }
        }
        u.objects = ids.len() as u64;
        Ok(u)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub objects: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Usage {
    pub objects: u64,
    pub object_files: u64,
    /// No guest links them, and `store gc` removes them.
    pub unused_object_files: u64,
    /// No guest links them, but a higher copy of the object is linked:
    /// `store gc` keeps them (the link-limit copies).
    pub unused_kept_object_files: u64,
    pub guest_links: u64,
    pub bytes_stored: u64,
    pub bytes_saved: u64,
}

fn verify_one(f: &ObjectFile, ignore_mtime: bool) -> std::io::Result<(u64, Option<String>)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(&f.path)?;
    let st = sys::fstat(file.as_fd())?;
    if !st.is_file() {
        return Ok((0, Some("not a regular file".into())));
    }
    let meta = ObjectMeta::of_fd(file.as_fd(), &st, ignore_mtime)?;
    let id = match super::id::hash_id(&meta, &file) {
        Ok(v) => v,
        Err(e) => return Ok((st.size, Some(e.to_string()))),
    };
    if id != f.id {
        return Ok((
            st.size,
            Some(format!(
                "content or metadata changed: it now hashes to {}",
                id.short()
            )),
        ));
    }
    // Flags (`chattr`) the id does not cover, yet every guest linking the
    // inode shows (and unify would pass on to every file it links to it).
    let flags = sys::inode_flags(file.as_fd())? & super::INODE_FLAGS;
    if flags != 0 {
        return Ok((
            st.size,
            Some(format!(
                "has inode flags (lsattr, {flags:#x}) that no object may have: \
                 every guest path linking it shows them; `chattr` them off"
            )),
        ));
    }
    match read_marker(file.as_fd())? {
        Some(m) if m == f.id => Ok((st.size, None)),
        Some(m) => Ok((
            st.size,
            Some(format!("marker names another object: {}", m.short())),
        )),
        None => Ok((
            st.size,
            Some(
                "marker xattr missing (copied without xattrs?): mounts take the inode for a \
                 guest's own file and write into it for every guest linking it; \
                 `unifs store gc` puts it back"
                    .into(),
            ),
        )),
    }
}
