//! `store verify`, `store gc` and the figures of `store stats`, read from the
//! object files themselves (the filesystem is the truth).

use super::{parse_object_name, read_marker, IoContext, ObjectId, ObjectMeta, Result, Store};
use crate::sys;
use rayon::prelude::*;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    #[serde(flatten, serialize_with = "crate::sys::json_path")]
    pub path: PathBuf,
    pub what: String,
    /// For an object: the guests with a path that links it (`store
    /// verify` fills it in from the catalog).
    pub guests: Vec<String>,
    /// The object's id, when the file no longer hashes to it: what changed
    /// is for [`describe_change`] to tell, from the catalog's record.
    #[serde(skip)]
    pub changed: Option<ObjectId>,
}

impl Store {
    /// Refuses a catalog none of whose `listed` object files (id, copy) is
    /// in `objects/` while `objects/` holds objects: another store's catalog
    /// copied in (or this catalog with another store's objects/). Writing to
    /// it would record this store's guests (or `--all` the other store's)
    /// against objects that are not here, and gc would "restore" them by
    /// linking in the other store's inodes. Every reader that judges the
    /// store and every writer calls this before anything else. (The catalog
    /// records no store id: docs/store-format.md is a stable format.)
    /// `seen_dir`: the `objects/` (dev:ino) unify recorded in it; where it
    /// is this store's, the catalog is this store's own (a snapshot put
    /// back after gc removed every object it lists): not refused.
    pub fn check_catalog_lists(
        &self,
        listed: impl ExactSizeIterator<Item = (ObjectId, u32)>,
        seen_dir: Option<&str>,
    ) -> Result<()> {
        let n = listed.len();
        if n == 0 || seen_dir == Some(self.objects_identity().as_str()) {
            return Ok(());
        }
        for (id, copy) in listed {
            if self.stat_object(&id, copy)?.is_some() {
                return Ok(());
            }
        }
        if self.list_objects()?.0.is_empty() {
            return Ok(());
        }
        Err(super::Error::ForeignCatalog {
            store: self.root.clone(),
            catalog: self.catalog_path(),
            listed: n,
        })
    }

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
                    changed: None,
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
                        changed: None,
                    }),
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((files, stray))
    }

    /// Rehashes every object with its current metadata and reports each
    /// whose id no longer matches its name, or whose marker is wrong.
    /// `recorded`: the catalog's row of an object. Where ids leave mtime
    /// out, one whose file has another mtime is reported; and one whose
    /// file hashes to its id but not to what its row says (size, mode,
    /// owner, mtime, content hash): the row is damaged.
    pub fn verify(
        &self,
        ignore_mtime: bool,
        recorded: impl Fn(&ObjectId) -> Option<Recorded> + Sync,
    ) -> Result<VerifyReport> {
        let (files, mut problems) = self.list_objects()?;
        let results: Vec<Option<(u64, Option<Problem>)>> = files
            .par_iter()
            .map(|f| match verify_one(f, ignore_mtime, &recorded) {
                Ok((bytes, None)) => Some((bytes, None)),
                Ok((bytes, Some((what, changed)))) => Some((
                    bytes,
                    Some(Problem {
                        path: f.path.clone(),
                        what,
                        guests: Vec::new(),
                        changed: changed.then_some(f.id),
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
                        changed: None,
                    }),
                )),
            })
            .collect();
        let mut bytes = 0;
        let mut object_files = 0;
        for (b, p) in results.into_iter().flatten() {
            object_files += 1;
            bytes += b;
            problems.extend(p);
        }
        Ok(VerifyReport {
            object_files,
            objects: object_files,
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
    /// `keep`: object files (id, copy) to take for linked, whatever their
    /// link count.
    pub fn gc_candidates(
        &self,
        keep: &std::collections::HashSet<(ObjectId, u32)>,
    ) -> Result<Vec<(ObjectFile, u64)>> {
        let (mut files, _) = self.list_objects()?;
        files.sort_by(|a, b| (a.id, b.copy).cmp(&(b.id, a.copy)));
        let mut found = Vec::new();
        let mut kept: Option<ObjectId> = None; // an object with a linked copy above
        for f in files {
            if kept == Some(f.id) {
                continue;
            }
            let st = sys::lstat(&f.path).at(&f.path)?;
            if st.nlink == 1 && !keep.contains(&(f.id, f.copy)) {
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
    /// inode numbers that are free to be reused). Only on a full disk,
    /// where the catalog cannot be written first, does gc call it before:
    /// the next gc then drops the rows of files that are gone. (`tmp/` was
    /// emptied before, [`Store::empty_tmp`].)
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
    /// `made_mtime`: where ids leave mtime out, the mtime the catalog
    /// recorded; an inode with another is not given the name back (removing
    /// such an object is how `store verify` says to keep a changed mtime).
    /// `replace`: the object file is there, another inode (a copy put in its
    /// place) that the name is taken from, atomically.
    #[allow(clippy::too_many_arguments)]
    pub fn relink_missing(
        &self,
        id: &ObjectId,
        copy: u32,
        inode: (u64, u64),
        (guest_root, rel): (&Path, &Path),
        ignore_mtime: bool,
        made_mtime: Option<sys::Timestamp>,
        dry_run: bool,
        replace: bool,
    ) -> std::io::Result<bool> {
        let root = sys::open_dir(guest_root)?;
        // Whatever the guest put at its path since: a device node or FIFO
        // is never opened.
        let flags = libc::O_RDONLY | libc::O_NOATIME;
        let fd = match sys::open_regular_beneath(root.as_fd(), rel, flags) {
            Err(e) if sys::is_not_regular(&e) => return Ok(false),
            r => r?,
        };
        let st = sys::fstat(fd.as_fd())?;
        if !st.is_file() || (st.dev, st.ino) != inode || read_marker(fd.as_fd())? != Some(*id) {
            return Ok(false);
        }
        if ignore_mtime && made_mtime.is_some_and(|t| t.instant() != st.mtime.instant()) {
            return Ok(false);
        }
        let meta = ObjectMeta::of_fd(fd.as_fd(), &st, ignore_mtime)?;
        let file = std::fs::File::from(fd);
        if super::id::hash_id(&meta, sys::HolesAsZeros::new(&file)?)? != *id {
            return Ok(false);
        }
        if dry_run {
            return Ok(true);
        }
        let io = |e: super::Error| match e {
            super::Error::Io { source, .. } => source,
            e => std::io::Error::other(e.to_string()),
        };
        if !replace {
            self.at_object(id, copy, true, |dir, name| {
                sys::link_fd(file.as_fd(), dir, name)
            })
            .map_err(io)?;
            return Ok(true);
        }
        // Linked to a temp name in tmp/ (emptied by the next gc if we are
        // killed), then renamed over the copy: the name is never missing.
        let tmp = self.tmp_dir().map_err(io)?;
        let mut n = 0u32;
        let temp = loop {
            let temp = std::ffi::OsString::from(format!("relink.{}.{n}", std::process::id()));
            match sys::link_fd(file.as_fd(), tmp, &temp) {
                Ok(()) => break temp,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => n += 1,
                Err(e) => return Err(e),
            }
        };
        let renamed = self.at_object(id, copy, true, |dir, name| {
            sys::rename_at(tmp, &temp, dir, name)
        });
        if let Err(e) = renamed {
            let _ = sys::unlink_at(tmp, &temp);
            return Err(io(e));
        }
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
        // The guests' linked paths as files of their own, and the object
        // files holding them now (linked, or kept by gc).
        let (mut as_copies, mut holding) = (0u64, 0u64);
        for f in &files {
            let st = match std::fs::symlink_metadata(&f.path) {
                Ok(st) => st,
                // Removed since the listing (a store gc beside us).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&f.path),
            };
            // What the file takes on disk, up to its size: a restore can
            // give an object holes, and a guest's copy (a break) keeps them.
            let size = st.len().min(st.blocks().saturating_mul(512));
            ids.insert(f.id);
            u.object_files += 1;
            u.bytes_stored += size;
            let guest_links = st.nlink().saturating_sub(1);
            u.guest_links += guest_links;
            as_copies += size * guest_links;
            if guest_links > 0 {
                kept = Some(f.id);
                holding += size;
            } else if kept == Some(f.id) {
                u.unused_kept_object_files += 1;
                holding += size;
            } else {
                u.unused_object_files += 1;
            }
        }
        u.objects = ids.len() as u64;
        u.bytes_saved = as_copies.saturating_sub(holding);
        Ok(u)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Object files checked (copies of one object count each; `store
    /// stats`'s `objects` counts distinct objects).
    pub object_files: u64,
    /// `object_files` under its old name, kept for scripts that read it.
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

/// Checks one object file: its size, and what is wrong with it, if
/// anything (with `true` when it no longer hashes to its id).
fn verify_one(
    f: &ObjectFile,
    ignore_mtime: bool,
    recorded: impl Fn(&ObjectId) -> Option<Recorded>,
) -> std::io::Result<(u64, Option<(String, bool)>)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(&f.path)?;
    let st = sys::fstat(file.as_fd())?;
    if !st.is_file() {
        return Ok((0, Some(("not a regular file".into(), false))));
    }
    let meta = ObjectMeta::of_fd(file.as_fd(), &st, ignore_mtime)?;
    let row = recorded(&f.id);
    // The content hash only where there is a row to hold it against.
    let reader = sys::HolesAsZeros::new(&file)?;
    let (id, content) = match super::id::hash_maybe(&meta, reader, row.is_some()) {
        Ok(v) => v,
        Err(e) => return Ok((st.size, Some((e.to_string(), false)))),
    };
    if id != f.id {
        return Ok((
            st.size,
            Some((
                format!(
                    "content or metadata changed: it now hashes to {}",
                    id.short()
                ),
                true,
            )),
        ));
    }
    // An id without mtime still matches after a `touch` around the store,
    // yet every guest linking the inode shows the new mtime.
    if ignore_mtime
        && row
            .as_ref()
            .is_some_and(|r| r.mtime.instant() != st.mtime.instant())
    {
        return Ok((st.size, Some(("mtime changed".into(), true))));
    }
    if let Some(what) = row.and_then(|r| row_damage(&r, &meta, &st, content, ignore_mtime)) {
        return Ok((st.size, Some((what, false))));
    }
    // Flags (`chattr`) the id does not cover, yet every guest linking the
    // inode shows (and unify would pass on to every file it links to it).
    let flags = sys::inode_flags(file.as_fd())? & super::INODE_FLAGS;
    if flags != 0 {
        // The EOFBLOCKS bit has no letter to take off: Linux before 5.7
        // set it by itself, so a store made then may have many.
        let how = if flags & super::EXT4_EOFBLOCKS_FL != 0 {
            "; 0x400000 is ext4's old EOFBLOCKS bit (Linux before 5.7 set it on files with \
             blocks past their end; nothing reads it since), which `chattr` has no letter \
             for: `chattr =e` (`=` and the letters lsattr shows) clears it"
        } else {
            ""
        };
        return Ok((
            st.size,
            Some((
                format!(
                    "has inode flags (lsattr, {flags:#x}) that no object may have: \
                     every guest path linking it shows them, and unify links no file to it; \
                     `chattr` them off{how}"
                ),
                false,
            )),
        ));
    }
    let raw = sys::xattr::get_fd(file.as_fd(), std::ffi::OsStr::new(super::MARKER_XATTR))?;
    let what = match (raw.as_deref(), read_marker(file.as_fd())?) {
        (_, Some(m)) if m == f.id => return Ok((st.size, None)),
        (_, Some(m)) => format!(
            "marker names another object ({}); `unifs store gc` writes the right one (of an \
             object the catalog lists)",
            m.short()
        ),
        (Some(v), None) => format!(
            "marker xattr malformed ({} bytes, not an object id): mounts take the inode for \
             a guest's own file and write into it for every guest linking it; `unifs store \
             gc` writes the right one (of an object the catalog lists)",
            v.len()
        ),
        (None, None) => "marker xattr missing (copied without xattrs?): mounts take the inode \
                         for a guest's own file and write into it for every guest linking it; \
                         `unifs store gc` puts it back"
            .into(),
    };
    Ok((st.size, Some((what, false))))
}

/// What of the catalog's row of an object disagrees with its file, which
/// hashes to its id and so is as it was made: the row is damaged (a page
/// bit rot or a torn write changed where SQLite's checks do not look).
/// `manifest` takes the content hash from the row (backups then hold a
/// blake3 their restore refuses), so the row must not go unreported.
fn row_damage(
    r: &Recorded,
    meta: &ObjectMeta,
    st: &sys::Stat,
    content: Option<super::ContentHash>,
    ignore_mtime: bool,
) -> Option<String> {
    let mut wrong = Vec::new();
    if r.size != st.size {
        wrong.push(format!("size {} (the file's: {})", r.size, st.size));
    }
    if (r.perm, r.uid, r.gid) != (meta.perm, meta.uid, meta.gid) {
        wrong.push(format!(
            "mode {:04o} owner {}:{} (the file's: {:04o} {}:{})",
            r.perm, r.uid, r.gid, meta.perm, meta.uid, meta.gid
        ));
    }
    // (Where ids leave mtime out, the row's is the record: checked above.)
    if !ignore_mtime && r.mtime.instant() != st.mtime.instant() {
        wrong.push(format!(
            "mtime {} (the file's: {})",
            touch_time(r.mtime),
            touch_time(st.mtime)
        ));
    }
    if content.is_some_and(|c| c != r.content_hash) {
        wrong.push(format!(
            "content hash {} (the file's: {})",
            r.content_hash.short(),
            content.map(|c| c.short()).unwrap_or_default()
        ));
    }
    if wrong.is_empty() {
        return None;
    }
    Some(format!(
        "the catalog's record of this object is damaged: it says {}, but the file hashes to \
         its id, so the object is sound and the catalog is wrong (a manifest written now would \
         give its guest files a blake3 their restore refuses); put back a `unifs store \
         snapshot` that `store verify` passes, or rebuild the catalog (docs/store-format.md, \
         \"lost its catalog\": move catalog.db* aside, `unifs store init --new-catalog`, unify \
         every guest)",
        wrong.join(", ")
    ))
}

/// What the catalog recorded of an object when it was made (its row in
/// `objects`): what [`describe_change`] compares the file with.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: sys::Timestamp,
    pub size: u64,
    pub content_hash: super::ContentHash,
}

/// Says what changed in the object file `path` of object `id`, which no
/// longer hashes to its id, and what to do: the fields of `recorded` that
/// differ, and (reading the file once) whether its content or its xattrs
/// did, as far as the record tells (it keeps no xattrs: they changed when
/// the file with the recorded metadata hashes to another id over the
/// recorded content). Without a record it can only say that it changed.
pub fn describe_change(
    path: &Path,
    id: &ObjectId,
    recorded: Option<&Recorded>,
    ignore_mtime: bool,
) -> std::io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(path)?;
    let st = sys::fstat(file.as_fd())?;
    let now = ObjectMeta::of_fd(file.as_fd(), &st, ignore_mtime)?;
    // The id in the other id mode: a catalog started in the wrong one
    // makes every object read as changed.
    let other = ObjectMeta {
        mtime: ignore_mtime.then_some(st.mtime),
        ..now.clone()
    };
    let mut as_made = now.clone();
    if let Some(r) = recorded {
        (as_made.perm, as_made.uid, as_made.gid) = (r.perm, r.uid, r.gid);
        if !ignore_mtime {
            as_made.mtime = Some(r.mtime);
        }
    }
    let mut other_h = super::ObjectHasher::id_only(&other);
    let mut made_h = super::ObjectHasher::new(&as_made);
    hash_both(&file, st.size, &mut other_h, &mut made_h)?;
    let keep = format!(
        "to keep the change instead, `rm {p}`: `unifs store gc` then drops the object \
         from the catalog, and the next unify makes the inode an object of what it is now",
        p = sys::shell_word(path)
    );
    if other_h.finish().0 == *id {
        return Ok(format!(
            "hashes to its id only with the mtime {}: the object was made in a store {} \
             --ignore-mtime, but the catalog says the other (a catalog started with `unifs \
             store init --new-catalog` in the other mode?), so unify adds objects in the \
             catalog's mode beside it; see docs/store-format.md on a lost catalog",
            if ignore_mtime { "included" } else { "left out" },
            if ignore_mtime { "without" } else { "with" },
        ));
    }
    let (made_id, content) = made_h.finish();
    let Some(r) = recorded else {
        return Ok(format!(
            "content or metadata changed: it now hashes to {} (the catalog has no record of \
             the object to tell what changed); {keep}",
            made_id.short()
        ));
    };
    let mut changed = Vec::new();
    if now.perm != r.perm {
        changed.push(format!("mode {:04o} → {:04o}", r.perm, now.perm));
    }
    if now.uid != r.uid {
        changed.push(format!("owner {} → {}", r.uid, now.uid));
    }
    if now.gid != r.gid {
        changed.push(format!("group {} → {}", r.gid, now.gid));
    }
    // Also where ids leave it out: the catalog has the mtime it was made with.
    if st.mtime.instant() != r.mtime.instant() {
        changed.push(format!(
            "mtime {} → {}",
            touch_time(r.mtime),
            touch_time(st.mtime)
        ));
    }
    if st.size != r.size {
        changed.push(format!("size {} → {}", r.size, st.size));
    }
    let content_changed = st.size != r.size || content != Some(r.content_hash);
    // With the recorded metadata over the recorded content, only the
    // xattrs are left to make another id.
    let xattrs_changed = !content_changed && made_id != *id;
    if content_changed {
        changed.push("content".into());
    } else if xattrs_changed {
        changed.push("xattrs".into());
    }
    // Only the mtime, in a store whose ids leave it out: still its id.
    let still_its_id = ignore_mtime
        && made_id == *id
        && now.perm == r.perm
        && (now.uid, now.gid) == (r.uid, r.gid)
        && !content_changed;
    let mut what = format!(
        "changed around the store since it was made (as the catalog recorded it): {}{}; every \
         guest path linking it shows this, and unify links {}. ",
        changed.join(", "),
        if content_changed || xattrs_changed {
            ""
        } else {
            " (content and xattrs as made)"
        },
        if still_its_id {
            "more files to it all the same (this store's ids leave mtime out), which show it too"
        } else {
            "no more files to it"
        },
    );
    // chown clears set-id bits: chmod after it.
    let p = sys::shell_word(path);
    let mut undo = Vec::new();
    if (now.uid, now.gid) != (r.uid, r.gid) {
        undo.push(format!("chown {}:{} {p}", r.uid, r.gid));
    }
    if now.perm != r.perm || !undo.is_empty() {
        undo.push(format!("chmod {:04o} {p}", r.perm));
    }
    if st.mtime.instant() != r.mtime.instant() {
        undo.push(format!("touch -m -d {} {p}", touch_time(r.mtime)));
    }
    if content_changed {
        what.push_str(&format!(
            "Its content cannot be put back from the store: remove it (`rm {p}`) and run \
             `unifs store gc` (which drops it from the catalog), then put the object back and \
             restore the guests' files that link it from a backup (docs/backup.md, \"A damaged \
             object\"); ",
            p = sys::shell_word(path)
        ));
    } else {
        // The xattrs last: a chown takes `security.capability` off.
        if !undo.is_empty() {
            what.push_str(&format!("Put it back: `{}`; ", undo.join(" && ")));
        }
        if xattrs_changed {
            what.push_str(&format!(
                "{} its xattrs back as they were (`getfattr -d -m - {p}` lists them now; a \
                 chown takes security.capability off, so after it); ",
                if undo.is_empty() { "Put" } else { "then put" }
            ));
        }
    }
    what.push_str(&keep);
    Ok(what)
}

/// Feeds the content of `file` (`size` bytes) to both hashers, in one read.
fn hash_both(
    file: &std::fs::File,
    size: u64,
    a: &mut super::ObjectHasher,
    b: &mut super::ObjectHasher,
) -> std::io::Result<()> {
    let mut file = sys::HolesAsZeros::new(file)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match std::io::Read::read(&mut file, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        a.update(&buf[..n]);
        b.update(&buf[..n]);
    }
    if a.len() != size {
        return Err(std::io::Error::other("file changed while hashed"));
    }
    Ok(())
}

/// Whether object file `path` of object `id` hashes to its id with the
/// mtime left out (`Some(true)`), with it (`Some(false)`), or neither
/// (changed around the store).
pub fn id_mode_of(path: &Path, id: &ObjectId) -> std::io::Result<Option<bool>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(path)?;
    let st = sys::fstat(file.as_fd())?;
    if !st.is_file() {
        return Ok(None);
    }
    let with = ObjectMeta::of_fd(file.as_fd(), &st, false)?;
    let without = ObjectMeta {
        mtime: None,
        ..with.clone()
    };
    let mut with_h = super::ObjectHasher::id_only(&with);
    let mut without_h = super::ObjectHasher::id_only(&without);
    hash_both(&file, st.size, &mut with_h, &mut without_h)?;
    Ok(if without_h.finish().0 == *id {
        Some(true)
    } else if with_h.finish().0 == *id {
        Some(false)
    } else {
        None
    })
}

impl Store {
    /// The id mode the store's objects were made in (`Some(true)`: mtime
    /// left out, `--ignore-mtime`), told by the first object that hashes to
    /// its name one way or the other, with that object's path. Up to
    /// `tries` objects are read (one may have been changed around the
    /// store); `None` when none of them tells, or the store has none.
    pub fn objects_id_mode(&self, tries: usize) -> Result<Option<(bool, PathBuf)>> {
        let objects = self.root.join("objects");
        let mut tried = 0;
        for dir in std::fs::read_dir(&objects).at(&objects)? {
            let dir = dir.at(&objects)?;
            let dir_path = dir.path();
            if !dir.file_type().at(&dir_path)?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&dir_path).at(&dir_path)? {
                let entry = entry.at(&dir_path)?;
                let Some((id, _)) = parse_object_name(&dir.file_name(), &entry.file_name()) else {
                    continue;
                };
                if tried == tries {
                    return Ok(None);
                }
                tried += 1;
                let path = entry.path();
                match id_mode_of(&path, &id) {
                    Ok(Some(mode)) => return Ok(Some((mode, path))),
                    Ok(None) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).at(path),
                }
            }
        }
        Ok(None)
    }
}

/// A time as `touch -d` takes it: `@SECONDS[.NANOSECONDS]`.
fn touch_time(t: sys::Timestamp) -> String {
    let t = t.instant();
    match t.nsec {
        0 => format!("@{}", t.sec),
        // Before 1970: the seconds are rounded down, the fraction added
        // (-1.5 s is -2 and 0.5); touch reads `@-1.5` as minus all of it.
        n if t.sec < 0 => format!("@-{}.{:09}", -(t.sec + 1), 1_000_000_000 - n),
        n => format!("@{}.{n:09}", t.sec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_times_read_back_as_the_time_they_stand_for() {
        let t = |sec, nsec| touch_time(sys::Timestamp { sec, nsec });
        assert_eq!(t(5, 0), "@5");
        assert_eq!(t(1, 250_000_000), "@1.250000000");
        // -1.5 s: stored as -2 s and 0.5.
        assert_eq!(t(-2, 500_000_000), "@-1.500000000");
        assert_eq!(t(-1, 999_999_999), "@-0.000000001");
    }
}
