//! Guest manifests: a complete description of a guest tree (every path with
//! type, mode, owner, times, xattrs, symlink target, device numbers,
//! hardlink groups, and the object id of every unified file or a content
//! hash of every private one), as JSON lines. docs/backup.md has the format.

use super::restore::MAX_PATH;
use crate::store::{id::STORE_XATTR_PREFIX, ObjectId, Store, MARKER_XATTR};
use crate::sys::{self, Timestamp};
use crate::unify::scan::MAX_DEPTH;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The newest manifest version this build writes and reads. A version is
/// added for each field a restore must not drop (docs/backup.md); other
/// fields are added without one, and readers ignore fields they do not know.
pub const MANIFEST_VERSION: u32 = 3;

/// The version a manifest of `entries` is written as: the lowest that
/// knows all it holds, so that an older reader refuses it rather than drop
/// something, and reads every other manifest as before. 3 when a symlink,
/// FIFO or device node has `link` (version 3's use of it: a reader of 2
/// would make it an inode of its own), 2 when an entry has `flags`
/// (version 2's field), else 1.
pub fn version_for(entries: &[Entry]) -> u32 {
    let linked =
        |e: &Entry| e.link_path().is_some() && !["file", "socket"].contains(&e.kind.as_str());
    if entries.iter().any(linked) {
        3
    } else if entries.iter().any(|e| e.flags.is_some()) {
        2
    } else {
        1
    }
}

/// The path of the guest root's own entry (the first after the header).
pub const ROOT: &str = ".";

/// The first line of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub unifs_manifest: u32,
    pub guest: String,
    /// The guest root; bytes that are not UTF-8 replaced (U+FFFD), and
    /// then given exactly in `root_hex`.
    pub root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hex: Option<String>,
    pub created: i64,
    /// How many entry lines follow, so that a manifest cut short at a line
    /// boundary is refused (absent in manifests written before 2026-11-30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
}

/// One path of a guest. Bytes that are not UTF-8 (names, targets) are
/// written in `*_hex` fields instead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// file, dir, symlink, char, block, fifo, socket
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits with set-id and sticky bits (`st_mode & 07777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// "SECONDS.NANOSECONDS"
    pub mtime: String,
    pub atime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// name → hex value; store xattrs (`trusted.unifs.*`) left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev_major: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev_minor: Option<u32>,
    /// The store object this file links, if unified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// blake3 of the content (regular files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// The first path of the guest's own hardlink group this path belongs to
    /// (absent on that first path itself): a path of the same type, anything
    /// but a directory (symlinks, FIFOs and device nodes since version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `link` when that path is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_hex: Option<String>,
    /// The inode's link count, of every non-directory (1 for a file that
    /// links a store object; files only before 2026-12-02).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlink: Option<u64>,
    /// Inode flags, as chattr's letters (files and directories; absent
    /// when none, and in manifests written before 2026-12-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
}

impl Header {
    /// The guest root as its bytes: `root_hex` where it is given.
    pub fn root_path(&self) -> PathBuf {
        match self.root_hex.as_deref().and_then(from_hex) {
            Some(bytes) => PathBuf::from(<std::ffi::OsString as OsStringExt>::from_vec(bytes)),
            None => PathBuf::from(&self.root),
        }
    }
}

impl Entry {
    pub fn rel_path(&self) -> PathBuf {
        decode(&self.path, &self.path_hex)
    }

    pub fn target_path(&self) -> Option<PathBuf> {
        (self.target.is_some() || self.target_hex.is_some())
            .then(|| decode(&self.target, &self.target_hex))
    }

    /// The first path of the hardlink group this file belongs to, if any.
    pub fn link_path(&self) -> Option<PathBuf> {
        (self.link.is_some() || self.link_hex.is_some()).then(|| decode(&self.link, &self.link_hex))
    }

    pub fn object_id(&self) -> Option<ObjectId> {
        self.object.as_deref().and_then(|s| s.parse().ok())
    }

    /// True when the content must come from the guest's private backup.
    pub fn is_private_content(&self) -> bool {
        self.kind == "file" && self.object.is_none() && self.link_path().is_none()
    }
}

fn decode(text: &Option<String>, hex: &Option<String>) -> PathBuf {
    match (text, hex) {
        (Some(t), _) => PathBuf::from(t),
        (None, Some(h)) => PathBuf::from(<std::ffi::OsString as OsStringExt>::from_vec(
            from_hex(h).unwrap_or_default(),
        )),
        _ => PathBuf::new(),
    }
}

pub fn encode(bytes: &OsStr) -> (Option<String>, Option<String>) {
    match bytes.to_str() {
        Some(s) => (Some(s.to_string()), None),
        None => (None, Some(to_hex(bytes.as_bytes()))),
    }
}

pub use crate::store::id::to_hex;

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    // Digits only: from_str_radix takes a sign too ("+f" read as 0f).
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn time_string(t: Timestamp) -> String {
    format!("{}.{:09}", t.sec, t.nsec)
}

/// A time as [`time_string`] writes it (docs/backup.md): NANOSECONDS exactly
/// 9 digits, or left out for a whole second. Anything else is refused, not
/// guessed at: "1.5" is no 5 ns, and "0.1073741823" would be utimensat's
/// UTIME_NOW.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    let (text, nsec) = s.split_once('.').unwrap_or((s, "000000000"));
    let sec: i64 = text.parse().ok()?;
    // As written: no sign but `-`, no leading zero, no "-0" (0.5 s before
    // 1970 is "-1.500000000").
    let canonical = sec.to_string() == text;
    if !canonical || nsec.len() != 9 || !nsec.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Timestamp {
        sec,
        nsec: nsec.parse().ok()?,
    })
}

/// A path as entries give it: (`path`, `path_hex`).
type EntryPath = (Option<String>, Option<String>);

/// Files held open for hashing at once, hashed in parallel.
const HASH_BATCH: usize = 64;

/// What the catalog recorded of an object: its content hash, and the size
/// and mtime its file had then.
#[derive(Debug, Clone, Copy)]
pub struct Recorded {
    pub content_hash: ObjectId,
    pub size: u64,
    pub mtime: Timestamp,
}

/// What [`describe`] found.
pub struct Described {
    pub entries: Vec<Entry>,
    /// btrfs subvolumes inside the guest (listed as empty directories).
    pub subvolumes: Vec<PathBuf>,
    /// Paths linking an object whose content is no longer what the catalog
    /// recorded (changed around the store), with the object file: described
    /// as private files, by the content they have.
    pub damaged: Vec<(PathBuf, PathBuf)>,
    /// Regular files by unify's temp names (`.unifs-tmp-PID-N`), left out:
    /// a unify running meanwhile, or a killed one's leftovers.
    pub unify_temps: Vec<PathBuf>,
    /// Directories nested deeper than `max_depth`, not entered: listed as
    /// empty directories.
    pub too_deep: Vec<PathBuf>,
    /// How deep the walk went: as unify's ([`MAX_DEPTH`]), or less where
    /// the open-file limit allows no more (see [`depth_limit`]).
    pub max_depth: usize,
    /// Directories holding names whose paths would be [`MAX_PATH`] bytes or
    /// more, and how many: those are left out, with all below them.
    pub too_long: BTreeMap<PathBuf, u64>,
}

/// Describes the guest at `root`. A file is described as linking an object
/// only when `recorded` (the catalog) has that object; its content hash then
/// comes from there while the object's size and mtime are still as
/// recorded; everything else is read. (A write around the store changes
/// them; damage that keeps both only `store verify`, which reads every
/// object, finds.)
///
/// The guest may be running and may rename anything meanwhile. So each name
/// is opened from its directory's fd, one component at a time, never
/// following a symlink (a directory swapped for a symlink to the host's
/// /etc is described as that symlink, not entered), and no directory on
/// another filesystem or mount is entered. Metadata, xattrs, flags and content of an
/// entry are all read through the one fd opened for it. A name gone by the
/// time it is opened is left out: it is no longer part of the tree.
///
/// Also returns the btrfs subvolumes found inside the guest: one has a
/// device number of its own but is no mount, and is not entered either
/// (its inode numbers would mix with the guest's), so it is listed as an
/// empty directory and the caller must say so.
pub fn describe(
    root: &Path,
    store: Option<&Store>,
    recorded: &HashMap<ObjectId, Recorded>,
) -> io::Result<Described> {
    let root_dir = File::from(sys::open_dir(root)?);
    let meta = root_dir.metadata()?;
    let dev = meta.dev();
    let mount = sys::mount_id_checked(root_dir.as_fd())?;
    let xattrs =
        sys::xattr::list_fd_where(root_dir.as_fd(), kept_xattr).map_err(|e| naming(root, e))?;
    let mut walk = Walk {
        root,
        store,
        recorded,
        entries: Vec::new(),
        groups: HashMap::new(),
        to_hash: Vec::new(),
        expected: HashMap::new(),
        damaged: Vec::new(),
    };
    let root_node = Node {
        file: root_dir,
        meta,
        readable: true,
        xattrs,
    };
    let mut stack = Vec::new();
    let mut subvolumes = Vec::new();
    let mut unify_temps = Vec::new();
    let mut too_deep = Vec::new();
    let mut too_long = BTreeMap::new();
    let max_depth = depth_limit();
    if let Some(dir) = walk.add(Path::new(ROOT), root_node)? {
        stack.push(Level::list(dir, PathBuf::new())?);
    }
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            stack.pop();
            continue;
        };
        // A mount's copy in progress, or one a killed daemon left: never
        // the guest's (it never sees them), and restored it would be, its
        // mark being the store's and so not restored.
        if crate::fs::cow::is_temp(top.dir.as_fd(), &name) {
            continue;
        }
        let rel = top.rel.join(&name);
        // Left out, and all below it, as unify leaves it alone: restore
        // could not rebuild it, and a guest nesting long names deep made
        // the manifest (and the walk's memory) grow with entries × depth.
        if rel.as_os_str().len() >= MAX_PATH {
            *too_long.entry(top.rel.clone()).or_insert(0) += 1;
            continue;
        }
        // Its full path, for an error about it.
        let path = || root.join(&rel);
        let node = open_node(top.dir.as_fd(), &name).map_err(|e| naming(&path(), e))?;
        let Some(node) = node else {
            continue;
        };
        // A file the host bind-mounted onto a name of the guest is the
        // host's, not the guest's: left out, as unify leaves it alone and
        // the mount refuses it (EXDEV). (The walk enters no directory of
        // another mount, so a file on one is that mount's root.)
        if !node.meta.is_dir() && mount_of(&node).map_err(|e| naming(&path(), e))? != mount {
            continue;
        }
        // Unify's temp name (`.unifs-tmp-PID-N`), a regular file: a unify
        // linking the guest meanwhile has one there for an instant (the
        // object linked before its swap, the guest's old file after it),
        // and a killed unify leaves one behind (the next unify removes it
        // where the store holds its content). Not the guest's: the mount
        // refuses it such names, and unify never takes one for its file.
        // Recorded, it would be a path the backup's copy no longer finds,
        // or a junk file of the restored guest.
        if node.meta.is_file() && crate::unify::scan::is_tmp_name(&name) {
            unify_temps.push(rel);
            continue;
        }
        let same_fs = node.meta.dev() == dev;
        if let Some(dir) = walk.add(&rel, node).map_err(|e| naming(&path(), e))? {
            // Not into another mount, not even a bind mount of the guest's
            // own filesystem (as unify's scan, RESOLVE_NO_XDEV).
            let same_mount =
                sys::mount_id_checked(dir.as_fd()).map_err(|e| naming(&path(), e))? == mount;
            // The walk holds a directory open a level: a guest nesting
            // thousands ran it out of fds (and memory), failing the backup
            // of every guest after it. Stops where unify's walk stops.
            if same_fs && same_mount && stack.len() > max_depth {
                too_deep.push(rel);
            } else if same_fs && same_mount {
                let at = path();
                stack.push(Level::list(dir, rel).map_err(|e| naming(&at, e))?);
            } else if same_mount {
                subvolumes.push(rel);
            }
        }
    }
    walk.hash_pending()?;
    Ok(Described {
        entries: walk.entries,
        subvolumes,
        damaged: walk.damaged,
        unify_temps,
        too_deep,
        max_depth,
        too_long,
    })
}

/// `e`, naming `path`, the file it is about: an error of the system (an
/// EIO reading one file of a failing disk) or a file whose xattrs cannot
/// be listed (E2BIG); a bare "Input/output error" left the operator to
/// find the file. Not "Too many open files", which is the whole walk's
/// (and which the caller tells by its errno).
fn naming(path: &Path, e: io::Error) -> io::Error {
    let os = e.raw_os_error();
    let file_s = e.kind() == io::ErrorKind::ArgumentListTooLong || os.is_some();
    if !file_s || os == Some(libc::EMFILE) {
        return e;
    }
    io::Error::new(e.kind(), format!("{}: {e}", sys::shown(path)))
}

/// The mount `node` is on, as [`sys::mount_id_checked`] says.
fn mount_of(node: &Node) -> io::Result<Option<u64>> {
    sys::mount_id_checked(node.file.as_fd())
}

/// The fds the walk may hold beside a directory a level: the files it
/// hashes at once, and some to spare (standard streams, the catalog, an
/// entry being opened).
const FDS_BESIDE_LEVELS: u64 = HASH_BATCH as u64 + 64;

/// How deep [`describe`] walks: as deep as unify ([`MAX_DEPTH`]), or less
/// where the open-file limit would not allow a directory open a level (a
/// guest's tree must not make the manifest fail, and with it a backup
/// loop, where it can be left out with a warning instead).
pub fn depth_limit() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    soft.saturating_sub(FDS_BESIDE_LEVELS).min(MAX_DEPTH as u64) as usize
}

/// A directory of the walk: its fd and the names in it still to visit.
struct Level {
    dir: File,
    rel: PathBuf,
    names: std::vec::IntoIter<std::ffi::OsString>,
}

impl Level {
    /// The names in `dir`, sorted (parents before children, as walkdir's
    /// sorted walk gave them).
    fn list(dir: File, rel: PathBuf) -> io::Result<Level> {
        let mut names = Vec::new();
        let listed = sys::read_dir(dir.as_fd(), |e| {
            if e.name != "." && e.name != ".." {
                names.push(e.name.to_owned());
            }
        });
        match listed {
            Ok(()) => {}
            // Removed since it was opened: nothing is in it any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound => names.clear(),
            Err(e) => return Err(e),
        }
        names.sort();
        Ok(Level {
            dir,
            rel,
            names: names.into_iter(),
        })
    }
}

/// One path of the walk, open. `file` is readable for a directory or a
/// regular file; for anything else it is an `O_PATH` fd, never opened for
/// reading (a FIFO's open waits for a writer, a device's acts).
struct Node {
    file: File,
    meta: std::fs::Metadata,
    readable: bool,
    /// Its xattrs, the store's left out.
    xattrs: Vec<(std::ffi::OsString, Vec<u8>)>,
}

/// Opens the entry `name` of the directory `dir` without following it;
/// `None` when it is gone, or was swapped for another inode between the
/// look at its type and the read of its xattrs.
fn open_node(dir: BorrowedFd, name: &OsStr) -> io::Result<Option<Node>> {
    let gone = |r: io::Result<OwnedFd>| match r {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    // O_PATH: nothing of the file is opened, whatever it is.
    let Some(path_fd) = gone(sys::open_at(dir, name, libc::O_PATH, 0))? else {
        return Ok(None);
    };
    let meta = path_fd.metadata()?;
    let ft = meta.file_type();
    if !ft.is_dir() && !ft.is_file() {
        // Not openable for its xattrs: read by name, then checked to be
        // still the inode looked at.
        let xattrs = match sys::xattr::list_at(dir, name) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match sys::stat_at(dir, name) {
            Ok(st) if (st.dev, st.ino) == (meta.dev(), meta.ino()) => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let xattrs = xattrs
            .into_iter()
            .filter(|(n, _)| kept_xattr(n.as_bytes()))
            .collect();
        return Ok(Some(Node {
            file: path_fd,
            meta,
            readable: false,
            xattrs,
        }));
    }
    // The very inode looked at, opened for reading: a regular file or a
    // directory, so the open cannot wait (as a FIFO's would).
    let flags = libc::O_NOCTTY | if ft.is_dir() { libc::O_DIRECTORY } else { 0 };
    let fd = match sys::reopen(path_fd.as_fd(), flags | libc::O_NOATIME) {
        // O_NOATIME is for the file's owner (or CAP_FOWNER) only.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => sys::reopen(path_fd.as_fd(), flags),
        r => r,
    }?;
    let file = File::from(fd);
    let now = file.metadata()?;
    if (now.dev(), now.ino(), now.file_type()) != (meta.dev(), meta.ino(), ft) {
        return Ok(None);
    }
    let xattrs = sys::xattr::list_fd_where(file.as_fd(), kept_xattr)?;
    Ok(Some(Node {
        file,
        meta: now,
        readable: true,
        xattrs,
    }))
}

/// Every xattr but the store's own (`trusted.unifs.*`) and xfs' second
/// names for ACLs (the `system.posix_acl_*` entries hold them).
pub fn kept_xattr(name: &[u8]) -> bool {
    !name.starts_with(STORE_XATTR_PREFIX) && !sys::xattr::is_acl_alias(name)
}

/// The walk's state: the entries so far, hardlink groups by inode, and the
/// files still to hash.
struct Walk<'a> {
    /// The guest's root, to name a file whose hashing failed.
    root: &'a Path,
    store: Option<&'a Store>,
    recorded: &'a HashMap<ObjectId, Recorded>,
    entries: Vec<Entry>,
    /// First paths of hardlink groups, by (dev, ino, file type).
    groups: HashMap<(u64, u64, u32), EntryPath>,
    to_hash: Vec<(usize, File)>,
    /// Object files to hash (entry index → the catalog's content hash and
    /// the object file), to be told from damaged ones.
    expected: HashMap<usize, (ObjectId, PathBuf)>,
    damaged: Vec<(PathBuf, PathBuf)>,
}

impl Walk<'_> {
    /// Adds the entry of `node` at `rel`; returns its fd when it is a
    /// directory, for the walk to enter.
    fn add(&mut self, rel: &Path, node: Node) -> io::Result<Option<File>> {
        let m = &node.meta;
        let ft = m.file_type();
        if let Some((name, _)) = node.xattrs.iter().find(|(n, _)| n.to_str().is_none()) {
            // Written lossily, restore would give the file another xattr
            // (and drop this one): better no backup than a wrong one.
            let what = format!(
                "{}: its xattr `{}` has a name that is not UTF-8, which a manifest cannot \
                 record; rename that xattr (getfattr -e hex shows it) and run again",
                crate::sys::shown(rel),
                crate::sys::shown(Path::new(name))
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, what));
        }
        let (path, path_hex) = encode(rel.as_os_str());
        let mut entry = Entry {
            path,
            path_hex,
            kind: kind_of(&ft).to_string(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            // The instant, as restore can set it: nanoseconds past a
            // second (a damaged ext4 inode) made "S.1073741823", which
            // restore refused as a damaged manifest.
            mtime: time_string(Timestamp::of_stat(m.mtime(), m.mtime_nsec())),
            atime: time_string(Timestamp::of_stat(m.atime(), m.atime_nsec())),
            xattrs: node
                .xattrs
                .iter()
                .map(|(n, v)| (n.to_string_lossy().into_owned(), to_hex(v)))
                .collect(),
            ..Entry::default()
        };
        if node.readable {
            entry.flags = super::flags::to_letters(super::flags::read_fd(node.file.as_fd())?);
        }
        if ft.is_symlink() {
            let (t, th) = encode(&sys::read_link_fd(node.file.as_fd())?);
            entry.target = t;
            entry.target_hex = th;
        }
        if ft.is_char_device() || ft.is_block_device() {
            let rdev = m.rdev();
            entry.rdev_major = Some(libc::major(rdev));
            entry.rdev_minor = Some(libc::minor(rdev));
        }
        let next = self.entries.len();
        let mut hash = false;
        if ft.is_file() {
            entry.size = Some(m.size());
            // Its presence is what the mount goes by (`fs::cow::has_marker`),
            // whatever its value.
            let marker = match m.nlink() > 1 {
                true => sys::xattr::get_fd(node.file.as_fd(), OsStr::new(MARKER_XATTR))?,
                false => None,
            };
            let marked = marker.is_some();
            let object = match marker.as_deref().and_then(crate::store::parse_marker) {
                Some(id) => self.object_of(id, &node)?,
                None => None,
            };
            // Only an object the catalog records: unify commits its row
            // once the object can no longer be taken back out of the store
            // (a writer turning up during its lease undoes it), and a killed
            // unify never commits it. Any other is described as a private
            // file, so that the backup carries its content.
            let object = object.and_then(|(id, copy)| Some((id, copy, *self.recorded.get(&id)?)));
            match object {
                Some((id, copy, r)) => {
                    entry.object = Some(id.to_hex());
                    entry.nlink = Some(1);
                    let mtime = Timestamp {
                        sec: m.mtime(),
                        nsec: m.mtime_nsec() as u32,
                    };
                    if r.size == m.size() && r.mtime.instant() == mtime.instant() {
                        entry.blake3 = Some(r.content_hash.to_hex())
                    } else {
                        // Changed around the store? Read, to record what is there.
                        let file = self.store.map(|s| s.object_path(&id, copy));
                        self.expected
                            .insert(next, (r.content_hash, file.unwrap_or_default()));
                        hash = true;
                    }
                }
                // Marked but no object recorded here (a copy of a unified
                // guest, another store's object, one unify has not recorded
                // yet): the mount shows each of its paths as a file of its
                // own, and so must a restore.
                None if marked => {
                    entry.nlink = Some(1);
                    hash = true;
                }
                // A later path of a hardlink group has its first path's content.
                None => hash = !self.group(&mut entry, m),
            }
        } else if !ft.is_dir() {
            // Symlinks, FIFOs, device nodes and sockets have hardlinks too.
            self.group(&mut entry, m);
        }
        self.entries.push(entry);
        if hash {
            self.to_hash.push((next, node.file));
            if self.to_hash.len() >= HASH_BATCH {
                self.hash_pending()?;
            }
            return Ok(None);
        }
        Ok(ft.is_dir().then_some(node.file))
    }

    /// Records the link count of the inode of `entry` (anything but a
    /// directory or a store object), and makes `entry` a later path of the
    /// guest's hardlink group when an earlier path is the same inode: true
    /// then. The type is part of the key: an inode number the guest freed
    /// and reused meanwhile for another type is another inode.
    fn group(&mut self, entry: &mut Entry, m: &std::fs::Metadata) -> bool {
        entry.nlink = Some(m.nlink());
        if m.nlink() <= 1 {
            return false;
        }
        let key = (m.dev(), m.ino(), m.mode() & libc::S_IFMT);
        match self.groups.entry(key) {
            std::collections::hash_map::Entry::Occupied(first) => {
                (entry.link, entry.link_hex) = first.get().clone();
                true
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((entry.path.clone(), entry.path_hex.clone()));
                false
            }
        }
    }

    /// The object (and copy) a linked file is, when it is one: its marker
    /// names `id`, an object whose store file is this inode (or, without a
    /// store, the marker alone).
    fn object_of(&self, id: ObjectId, node: &Node) -> io::Result<Option<(ObjectId, u32)>> {
        match self.store {
            Some(s) => Ok(s
                .find_copy(&id, node.meta.dev(), node.meta.ino())
                .map_err(io::Error::other)?
                .map(|copy| (id, copy))),
            None => Ok(Some((id, 0))),
        }
    }

    /// Hashes the files waiting, in parallel, and closes them.
    fn hash_pending(&mut self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.to_hash);
        let hashed: Vec<(usize, io::Result<(String, u64)>)> = batch
            .into_par_iter()
            .map(|(i, file)| (i, hash_file(&file)))
            .collect();
        for (i, h) in hashed {
            let e = &mut self.entries[i];
            let (h, len) = h.map_err(|err| naming(&self.root.join(e.rel_path()), err))?;
            // An object whose content is not its own any more: the guest's
            // bytes are these, and a backup must hold them (the store's
            // copy, and one extracted from a backup of it, are damaged).
            if let Some((want, object)) = self.expected.remove(&i) {
                if want.to_hex() != h {
                    e.object = None;
                    self.damaged.push((e.rel_path(), object));
                }
            }
            e.blake3 = Some(h);
            // Written to since its stat (a running guest's log): the size
            // of the content hashed, so that the entry agrees with itself.
            e.size = Some(len);
        }
        Ok(())
    }
}

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

/// The blake3 of everything `file` holds from where it is, and how many
/// bytes that was. Holes are hashed as the zeros they read as without being
/// read: a guest's `truncate -s 1T` costs hashing, not a terabyte of reads
/// of zero pages (several times slower).
pub fn hash_file(file: &File) -> io::Result<(String, u64)> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let start = seek(file, 0, libc::SEEK_CUR)?;
    let mut at = start;
    // Only a file with fewer blocks than bytes can have holes: any other is
    // read plainly, without looking for them (the manifest's per-file loop).
    let st = file.metadata()?;
    let sparse = st.blocks().saturating_mul(512) < st.len();
    loop {
        let hole = match sparse {
            true => skip_hole(file, &mut h, &mut at)?,
            false => u64::MAX,
        };
        while at < hole {
            let want = buf
                .len()
                .min(usize::try_from(hole - at).unwrap_or(usize::MAX));
            match file.read_at(&mut buf[..want], at) {
                Ok(0) => return Ok((h.finalize().to_hex().to_string(), at - start)),
                Ok(n) => {
                    h.update(&buf[..n]);
                    at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Hashes the hole at `at`, if there is one, as zeros and moves `at` past
/// it; returns where the data from there ends (`u64::MAX`: read on to the
/// end).
fn skip_hole(file: &File, h: &mut blake3::Hasher, at: &mut u64) -> io::Result<u64> {
    // Before the look for data: what a writer (a running guest's log)
    // appends after it is data read on, not a hole.
    let len = file.metadata()?.len();
    let data = match seek(file, *at, libc::SEEK_DATA) {
        Ok(d) => d,
        // No data from `at` on: a hole to the end, then what was appended
        // meanwhile.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            let end = len.max(*at);
            hash_zeros(h, end - *at);
            *at = end;
            return Ok(u64::MAX);
        }
        // No hole support: all of it is data.
        Err(_) => return Ok(u64::MAX),
    };
    hash_zeros(h, data - *at);
    *at = data;
    Ok(seek(file, data, libc::SEEK_HOLE).unwrap_or(u64::MAX))
}

/// `lseek(file, at, whence)`.
fn seek(file: &File, at: u64, whence: libc::c_int) -> io::Result<u64> {
    let at = i64::try_from(at).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: lseek on an fd `file` owns; no memory is passed.
    let r = unsafe { libc::lseek(file.as_raw_fd(), at, whence) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// Feeds `n` zero bytes to `h`.
fn hash_zeros(h: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The blake3 and length of the regular file at the host path `path` (not
/// followed if a symlink; anything but a regular file is refused unread).
pub fn content_hash(path: &Path) -> io::Result<(String, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOATIME)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    hash_file(&file)
}

/// Writes a manifest as JSON lines, what a terminal would act on escaped
/// (it goes to stdout unless `-o`).
pub fn write_jsonl(out: &mut dyn io::Write, header: &Header, entries: &[Entry]) -> io::Result<()> {
    json_line(out, header)?;
    for e in entries {
        json_line(out, e).map_err(|err| {
            let path = e.path.as_deref().or(e.path_hex.as_deref()).unwrap_or("?");
            io::Error::new(err.kind(), format!("{path}: {err}"))
        })?;
    }
    Ok(())
}

/// The longest line a manifest may have, its newline included. A reader
/// holds a line whole, so a damaged or hostile manifest with no newline
/// for gigabytes would take all memory; the writer refuses an entry this
/// long (xattr values of 64 KiB each, by the thousand), so every manifest
/// it writes can be read back.
pub const MAX_LINE: usize = 64 << 20;

fn json_line(out: &mut dyn io::Write, value: &impl serde::Serialize) -> io::Result<()> {
    let text = crate::sys::json_safe(serde_json::to_string(value)?);
    if text.len() >= MAX_LINE {
        return Err(io::Error::other(format!(
            "its manifest line would be {} bytes, more than the {} MiB a manifest line may \
             have (its xattrs, mostly): remove some of them and run again",
            text.len(),
            MAX_LINE >> 20
        )));
    }
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")
}

/// The next line of `file` (without its newline), or `None` at the end:
/// an error for one longer than [`MAX_LINE`], read no further than that,
/// or not UTF-8.
fn bounded_line(file: &mut impl io::BufRead, buf: &mut Vec<u8>) -> io::Result<Option<String>> {
    use io::{BufRead, Read};
    buf.clear();
    let n = file.take(MAX_LINE as u64).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        // As `BufRead::lines`, which read them before: "\r\n" too.
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if n == MAX_LINE {
        return Err(io::Error::other(format!(
            "longer than the {} MiB a manifest line may have (damaged, or not a unifs \
             manifest); take the manifest from another backup",
            MAX_LINE >> 20
        )));
    }
    String::from_utf8(std::mem::take(buf))
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.utf8_error()))
}

/// Reads a JSON-lines manifest.
pub fn read_jsonl(path: &Path) -> io::Result<(Header, Vec<Entry>)> {
    read_jsonl_from(io::BufReader::new(File::open(path)?))
}

/// [`read_jsonl`] from any reader (standard input).
pub fn read_jsonl_from(mut file: impl io::BufRead) -> io::Result<(Header, Vec<Entry>)> {
    let mut buf = Vec::new();
    let mut lines = std::iter::from_fn(|| bounded_line(&mut file, &mut buf).transpose());
    // A line that is no text (not UTF-8), or too long, is named as a line
    // of JSON is.
    let at = |n: usize, e: io::Error| io::Error::new(e.kind(), format!("manifest line {n}: {e}"));
    let first = lines
        .next()
        .ok_or_else(|| io::Error::other("empty manifest"))?
        .map_err(|e| at(1, e))?;
    let header: Header = serde_json::from_str(&first)
        .map_err(|e| io::Error::other(format!("not a unifs manifest (first line: {e})")))?;
    if !(1..=MANIFEST_VERSION).contains(&header.unifs_manifest) {
        return Err(io::Error::other(format!(
            "manifest version {} is not supported (this unifs reads versions 1 to \
             {MANIFEST_VERSION}); upgrade unifs",
            header.unifs_manifest
        )));
    }
    let mut entries = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line.map_err(|e| at(n + 2, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(&line)
            .map_err(|err| io::Error::other(format!("manifest line {}: {err}", n + 2)))?;
        entries.push(e);
    }
    if let Some(want) = header.entries {
        if want != entries.len() as u64 {
            return Err(io::Error::other(format!(
                "the manifest is cut short or damaged: its header says {want} entries, \
                 it holds {}; take the manifest from another backup",
                entries.len()
            )));
        }
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holes are hashed as zeros without being read: the hash and length
    /// are those of reading every byte, wherever the holes are.
    #[test]
    fn hash_file_over_holes_is_that_of_every_byte() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // (writes at offsets, length): the rest is holes.
        type Case<'a> = (&'a [(u64, &'a [u8])], u64);
        let cases: [Case; 6] = [
            (&[], 0),
            // No hole: read plainly.
            (&[(0, b"dense")], 5),
            (&[], 5 << 20),
            (&[(0, b"head")], 3 << 20),
            (&[(2 << 20, b"middle"), (7 << 20, b"more")], 9 << 20),
            (&[(1 << 20, b"tail")], (1 << 20) + 4),
        ];
        for (writes, len) in cases {
            let f = File::create(&path).unwrap();
            f.set_len(len).unwrap();
            for (at, bytes) in writes {
                f.write_all_at(bytes, *at).unwrap();
            }
            let all = std::fs::read(&path).unwrap();
            let want = blake3::hash(&all).to_hex().to_string();
            let f = File::open(&path).unwrap();
            assert_eq!(hash_file(&f).unwrap(), (want, len), "{writes:?} {len}");
        }
    }

    fn entry(flags: Option<&str>) -> Entry {
        Entry {
            path: Some(ROOT.into()),
            kind: "dir".into(),
            mtime: "0.000000000".into(),
            atime: "0.000000000".into(),
            flags: flags.map(String::from),
            ..Entry::default()
        }
    }

    #[test]
    fn version_2_only_with_flags_3_with_linked_non_files_and_all_are_read() {
        assert_eq!(version_for(&[entry(None)]), 1);
        assert_eq!(version_for(&[entry(None), entry(Some("i"))]), 2);
        let linked = |kind: &str| Entry {
            path: Some(format!("{kind}2")),
            kind: kind.into(),
            link: Some(kind.into()),
            ..entry(None)
        };
        // A file's `link` is version 1's; a socket's no restore makes.
        for kind in ["file", "socket"] {
            assert_eq!(version_for(&[entry(None), linked(kind)]), 1, "{kind}");
        }
        for kind in ["symlink", "fifo", "char", "block"] {
            assert_eq!(version_for(&[entry(Some("i")), linked(kind)]), 3, "{kind}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        for version in [1, 2, 3, 4] {
            let header = Header {
                unifs_manifest: version,
                guest: "g".into(),
                root: "/g".into(),
                root_hex: None,
                created: 0,
                entries: Some(1),
            };
            let mut out = Vec::new();
            write_jsonl(&mut out, &header, &[entry(Some("i"))]).unwrap();
            std::fs::write(&path, out).unwrap();
            match read_jsonl(&path) {
                Ok((h, e)) => {
                    assert!(version <= 3);
                    assert_eq!((h, e[0].flags.as_deref()), (header, Some("i")));
                }
                Err(e) => {
                    assert_eq!(version, 4);
                    assert!(e.to_string().contains("version 4 is not supported"), "{e}");
                }
            }
        }
    }

    /// A line is read up to [`MAX_LINE`] bytes with its newline and no
    /// further: one longer is refused by its number, not read whole (a
    /// manifest with no newline for gigabytes took all memory). Lines
    /// ending in "\r\n" read as `BufRead::lines` read them.
    #[test]
    fn a_line_longer_than_the_limit_is_refused_unread() {
        let header = "{\"unifs_manifest\":1,\"guest\":\"g\",\"root\":\"/g\",\"created\":0}";
        let mut at_limit = format!("{header}\r\n").into_bytes();
        at_limit.extend(std::iter::repeat_n(b'x', MAX_LINE - 1));
        at_limit.push(b'\n');
        let err = read_jsonl_from(&at_limit[..]).unwrap_err().to_string();
        assert!(err.starts_with("manifest line 2: expected value"), "{err}");
        at_limit.pop();
        at_limit.push(b'x');
        let err = read_jsonl_from(io::BufReader::new(io::Read::chain(
            &at_limit[..],
            io::repeat(b'x'),
        )))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("manifest line 2: longer than the 64 MiB"),
            "{err}"
        );
    }

    /// Inputs fuzzing and reading found misread: a time not as
    /// [`time_string`] writes it ("1.5" was 5 ns; "0.1073741823" utimensat's
    /// UTIME_NOW), hex with a sign ("+f" was 0f), and a line that is not
    /// UTF-8, whose error named no line.
    #[test]
    fn times_hex_and_lines_are_read_only_as_written() {
        for bad in [
            "1.5",
            "0.1073741823",
            "-0.500000000",
            "01.000000000",
            "+1.000000000",
            "1.",
            ".000000000",
            "",
            "1 ",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        for t in [
            (0, 0),
            (-1, 500_000_000),
            (i64::MAX, 999_999_999),
            (i64::MIN, 1),
        ] {
            let t = Timestamp {
                sec: t.0,
                nsec: t.1,
            };
            assert_eq!(parse_time(&time_string(t)), Some(t));
        }
        assert_eq!(parse_time("7"), Some(Timestamp { sec: 7, nsec: 0 }));
        for bad in ["+f", "-1", " 1", "0x"] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(from_hex("00fF"), Some(vec![0, 0xff]));
        let head = r#"{"unifs_manifest":1,"guest":"g","root":"/g","created":0}"#;
        let text = [head.as_bytes(), b"\n{\"path\":\"\xff\"}\n"].concat();
        let err = read_jsonl_from(&text[..]).unwrap_err().to_string();
        assert!(err.contains("manifest line 2"), "{err}");
        let err = read_jsonl_from(&b"\xff\n"[..]).unwrap_err().to_string();
        assert!(err.contains("manifest line 1"), "{err}");
    }
}
