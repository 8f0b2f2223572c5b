//! Leftovers of a killed run: `.unifs-tmp-*` names in guest directories, and
//! objects linked into the store but not yet recorded in the catalog.

use super::apply::{object_row, Applier, CatalogOp};
use super::dirjournal::{KilledDirs, ANY_DIR};
use super::record::Writer;
use super::scan::{FileRec, LinkedRec, TMP_PREFIX};
use super::split::is_split_temp;
use super::Error;
use super::Problem;
use crate::catalog::ObjectRow;
use crate::store::{
    id::hash_id, id::hash_reader, read_marker, IoContext, ObjectId, ObjectMeta, Store,
};
use crate::sys;
use std::collections::HashSet;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

/// Removes temp names whose content the store holds: a link to an object (run
/// killed before the swap) or the swapped-out original of a file that now
/// links its object (killed before the unlink); or a clone split's temp name
/// that still links the inode other guests share (killed before the
/// unlink), or such a symlink, FIFO, socket or device node at a node
/// split's temp name. Only in a directory the run of the name's pid noted before
/// changing it (`killed`; any directory for a run whose record a power cut
/// took): a guest's own
/// file of that name is not ours to remove. Anything else is left and
/// reported. Returns how many were removed, and the entries of `killed`
/// whose directories still hold a leftover of theirs.
pub fn clean(
    a: &Applier,
    stale: &[FileRec],
    killed: &KilledDirs,
    existing: &HashSet<ObjectId>,
    ignore_mtime: bool,
) -> (u64, HashSet<(u32, u64, u64)>, Vec<Problem>) {
    let mut removed = 0;
    let mut left = HashSet::new();
    let mut problems = Vec::new();
    for rec in stale {
        let guest = &a.guests[rec.guest as usize];
        let path = guest.root.join(&rec.rel);
        let parent = rec.rel.parent().unwrap_or(Path::new(""));
        let name = rec.rel.file_name().unwrap_or_default();
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let dir = match sys::open_beneath(guest.fd.as_fd(), parent, flags) {
            Ok(dir) => dir,
            Err(e) => {
                problems.push(Problem::new(
                    path,
                    format!("cannot open its directory: {e}"),
                ));
                continue;
            }
        };
        let any_dir = |pid: u32| (pid, ANY_DIR, ANY_DIR);
        let key = sys::fstat(dir.as_fd())
            .ok()
            .and_then(|st| Some((pid_of(name)?, st.dev, st.ino)))
            .and_then(|key| match killed.contains_key(&key) {
                true => Some(key),
                false => Some(any_dir(key.0)).filter(|k| killed.contains_key(k)),
            });
        let Some(key) = key else {
            let what = unrecorded_temp_name(&path);
            problems.push(Problem::new(path, what));
            continue;
        };
        // Until removed, it stays known as a leftover (its directory may
        // hold others that go, so the key is kept for any that stays).
        let stays = match held_by_store(a, dir.as_fd(), rec, existing, ignore_mtime) {
            Ok(true) => {
                let noted = a
                    .dir_times
                    .before_change(rec.guest, parent, dir.as_fd(), None);
                let done = sys::unlink_at(dir.as_fd(), name);
                a.dir_times.after_change(dir.as_fd(), noted);
                match done {
                    Ok(()) => {
                        removed += 1;
                        false
                    }
                    Err(e) => {
                        problems.push(Problem::new(path, format!("cannot remove: {e}")));
                        true
                    }
                }
            }
            Ok(false) => {
                problems.push(Problem::new(
                    path,
                    "temp name left by a killed run whose content the store does not hold; \
                     left for you to inspect",
                ));
                true
            }
            Err(e) => {
                problems.push(Problem::new(path, e.to_string()));
                true
            }
        };
        if stays {
            left.insert(key);
        }
    }
    (removed, left, problems)
}

/// Why a temp name no killed run recorded is left, and how to tell it is
/// safe to delete. (Not removed: it may be the guest's own file.)
fn unrecorded_temp_name(path: &Path) -> String {
    // $'…' where it must be: a newline or a byte that is not UTF-8 names
    // the same file when pasted.
    let quoted = crate::sys::shell_word(path);
    format!(
        "named like a temp name of unify, but no killed run recorded changing its directory: \
         left alone. An older unifs (whose killed runs left no record in STORE/tmp) may have \
         left it: then it is safe to delete when it links a store object or its content is \
         that of another file beside it. To tell, as root: `f={quoted}; getfattr -n \
         trusted.unifs.object \"$f\"; find \"${{f%/*}}\" -maxdepth 1 -type f ! -samefile \"$f\" \
         -exec cmp -s \"$f\" {{}} \\; -print` (a value, or a file named, says so); else it \
         is the guest's own: rename it"
    )
}

/// The pid in a temp name `.unifs-tmp-PID-SEQ`.
fn pid_of(name: &std::ffi::OsStr) -> Option<u32> {
    use std::os::unix::ffi::OsStrExt;
    let rest = name.as_bytes().strip_prefix(TMP_PREFIX.as_bytes())?;
    let pid = rest.split(|&b| b == b'-').next()?;
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// Whether the leftover `rec` (in `dir`) is a name whose content is held
/// elsewhere: see [`clean`].
fn held_by_store(
    a: &Applier,
    dir: BorrowedFd,
    rec: &FileRec,
    existing: &HashSet<ObjectId>,
    ignore_mtime: bool,
) -> std::io::Result<bool> {
    let name = rec.rel.file_name().unwrap_or_default();
    // Not opened: a FIFO's open waits, a device's may act.
    let now = sys::stat_at(dir, name)?;
    if !now.is_file() {
        // A killed node split's temp name holding the node other guests
        // share (swapped out; the guest's name holds its copy) is removed,
        // as for files below. One link only: the copy it made (not swapped
        // in), or a guest's new node (a guest that replaced the path while
        // unify swapped), or a guest's own node of that name: reported.
        return Ok(is_split_temp(name) && !now.is_dir() && now.nlink > 1);
    }
    let guest = &a.guests[rec.guest as usize];
    let fd = match guest.open_for_reading(&rec.rel) {
        Err(e) if sys::is_not_regular(&e) => return Ok(false),
        r => r?,
    };
    let st = sys::fstat(fd.as_fd())?;
    // A clone split killed between its swap and the unlink left the inode
    // other guests link at its temp name: the guest's own name holds the
    // complete copy, and the inode lives on in the others. Kept, the name
    // would let a write through this guest's mount reach them (invariant 1).
    if is_split_temp(name) && st.nlink > 1 {
        return Ok(true);
    }
    if let Some(id) = read_marker(fd.as_fd())? {
        if st.nlink > 1
            && a.store
                .find_copy(&id, st.dev, st.ino)
                .ok()
                .flatten()
                .is_some()
        {
            return Ok(true);
        }
    }
    let meta = ObjectMeta::of_fd(fd.as_fd(), &st, ignore_mtime)?;
    let id = hash_id(&meta, File::from(fd))?;
    Ok(existing.contains(&id) || a.store.stat_object(&id, 0).ok().flatten().is_some())
}

/// Records an object found by its marker but missing from the catalog.
pub fn recover_object(
    store: &Store,
    writer: &mut Writer,
    l: &LinkedRec,
    ignore_mtime: bool,
) -> Result<(), Error> {
    let path = store.object_path(&l.id, l.copy);
    let file = File::open(&path).at(&path)?;
    let st = sys::fstat(file.as_fd()).at(&path)?;
    let meta = ObjectMeta::of_fd(file.as_fd(), &st, ignore_mtime).at(&path)?;
    let holes = sys::HolesAsZeros::new(&file).at(&path)?;
    let (_, content) = hash_reader(&meta, holes).at(&path)?;
    let row = object_row(&l.id, content, &st);
    writer.record(CatalogOp::Object(row), &[], &[])?;
    writer.record(
        CatalogOp::ObjectFile {
            id: l.id,
            copy: l.copy,
            dev: st.dev,
            ino: st.ino,
        },
        &[],
        &[],
    )
}

/// An object file in `objects/` that the catalog lacks, read for its rows.
pub struct Unrecorded {
    pub row: ObjectRow,
    pub copy: u32,
    pub stat: sys::Stat,
}

/// Every object file in `objects/` whose (id, copy) is not in `known` (the
/// catalog's): what a killed run linked into the store but did not record,
/// whatever guests link it. Each is read once, and one that does not hash
/// to its name is reported and left unrecorded (`store verify` tells what
/// changed). A file gone meanwhile is no object.
pub fn unrecorded_objects(
    store: &Store,
    known: &HashSet<(ObjectId, u32)>,
    ignore_mtime: bool,
) -> Result<(Vec<Unrecorded>, Vec<Problem>), Error> {
    use rayon::prelude::*;
    let (files, _) = store.list_objects()?;
    let read = |f: &crate::store::maintain::ObjectFile| -> std::io::Result<Option<Unrecorded>> {
        let file = match File::open(&f.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = sys::fstat(file.as_fd())?;
        if !st.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let meta = ObjectMeta::of_fd(file.as_fd(), &st, ignore_mtime)?;
        let (id, content) = hash_reader(&meta, sys::HolesAsZeros::new(&file)?)?;
        if id != f.id {
            return Err(std::io::Error::other(format!(
                "does not hash to its name (it is {id}): left out of the catalog; \
                 `unifs store verify` tells what changed"
            )));
        }
        Ok(Some(Unrecorded {
            row: object_row(&id, content, &st),
            copy: f.copy,
            stat: st,
        }))
    };
    let results: Vec<_> = files
        .par_iter()
        .filter(|f| !known.contains(&(f.id, f.copy)))
        .map(|f| (f, read(f)))
        .collect();
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (f, r) in results {
        match r {
            Ok(Some(u)) => found.push(u),
            Ok(None) => {}
            Err(e) => problems.push(Problem::new(
                &f.path,
                format!("object file the catalog lacks: {e}"),
            )),
        }
    }
    Ok((found, problems))
}

/// Records an object file [`unrecorded_objects`] found.
pub fn record_unrecorded(writer: &mut Writer, u: &Unrecorded) -> Result<(), Error> {
    writer.record(CatalogOp::Object(u.row.clone()), &[], &[])?;
    writer.record(
        CatalogOp::ObjectFile {
            id: u.row.id,
            copy: u.copy,
            dev: u.stat.dev,
            ino: u.stat.ino,
        },
        &[],
        &[],
    )
}
