//! Guest manifests: a complete description of a guest tree (every path with
//! type, mode, owner, times, xattrs, symlink target, device numbers,
//! hardlink groups, and the object id of every unified file or a content
//! hash of every private one), as JSON lines. docs/backup.md has the format.

use crate::store::{id::STORE_XATTR_PREFIX, ObjectId, Store};
use crate::sys::{self, Timestamp};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const MANIFEST_VERSION: u32 = 1;

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
    /// The first path of the guest's own hardlink group this file belongs to
    /// (absent on that first path itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `link` when that path is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_hex: Option<String>,
    /// Links within the guest (1 for a file that only links a store object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlink: Option<u64>,
    /// Inode flags, as chattr's letters (files and directories; absent
    /// when none, and in manifests written before 2026-12-01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
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
    if s.len() % 2 != 0 {
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

pub fn parse_time(s: &str) -> Option<Timestamp> {
    let (sec, nsec) = s.split_once('.').unwrap_or((s, "0"));
    Some(Timestamp {
        sec: sec.parse().ok()?,
        nsec: nsec.parse().ok()?,
    })
}

/// A path as entries give it: (`path`, `path_hex`).
type EntryPath = (Option<String>, Option<String>);

/// Describes the guest at `root`. Content hashes of unified files come from
/// `content_of` (the catalog) when it knows them; everything else is read.
pub fn describe(
    root: &Path,
    store: Option<&Store>,
    content_of: &HashMap<ObjectId, ObjectId>,
) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut groups: HashMap<(u64, u64), EntryPath> = HashMap::new();
    let mut to_hash = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
        .sort_by_file_name()
    {
        let e = match e {
            Ok(e) => e,
            // A directory a running guest removed after it was listed.
            Err(e) if e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
                continue
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        let next = entries.len();
        match describe_one(&e, root, store, content_of, &mut groups, &mut to_hash, next) {
            Ok(entry) => entries.push(entry),
            // Removed since it was listed (a running guest's temp file):
            // it is no longer part of the tree.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let hashes: Vec<(usize, io::Result<String>)> = to_hash
        .par_iter()
        .map(|&i| (i, content_hash(&root.join(entries[i].rel_path()))))
        .collect();
    let mut gone = std::collections::HashSet::new();
    for (i, h) in hashes {
        match h {
            Ok(h) => entries[i].blake3 = Some(h),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                gone.insert(i);
            }
            Err(e) => return Err(e),
        }
    }
    // A hardlink group whose first path went: the next path still there
    // takes its place, so that no `link` names a path the manifest lacks.
    let mut heads: HashMap<EntryPath, Option<usize>> = gone
        .iter()
        .map(|&i| ((entries[i].path.clone(), entries[i].path_hex.clone()), None))
        .collect();
    for i in 0..entries.len() {
        let key = (entries[i].link.clone(), entries[i].link_hex.clone());
        let Some(head) = heads.get(&key).copied() else {
            continue;
        };
        match head {
            Some(h) => {
                entries[i].link = entries[h].path.clone();
                entries[i].link_hex = entries[h].path_hex.clone();
            }
            None => match content_hash(&root.join(entries[i].rel_path())) {
                Ok(h) => {
                    entries[i].blake3 = Some(h);
                    entries[i].link = None;
                    entries[i].link_hex = None;
                    heads.insert(key, Some(i));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    gone.insert(i);
                }
                Err(e) => return Err(e),
            },
        }
    }
    Ok(entries
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, e)| e)
        .collect())
}

/// The entry of one path of the walk, to be entry number `next`; files to
/// hash go to `to_hash`.
fn describe_one(
    e: &walkdir::DirEntry,
    root: &Path,
    store: Option<&Store>,
    content_of: &HashMap<ObjectId, ObjectId>,
    groups: &mut HashMap<(u64, u64), EntryPath>,
    to_hash: &mut Vec<usize>,
    next: usize,
) -> io::Result<Entry> {
    // The root itself is the entry ".": its mode, owner, times and
    // xattrs are the guest's too.
    let rel = match e.path().strip_prefix(root).map_err(io::Error::other)? {
        r if r.as_os_str().is_empty() => Path::new(ROOT),
        r => r,
    };
    let m = e.metadata().map_err(|e| match e.into_io_error() {
        Some(io) => io,
        None => io::Error::other("metadata of a walk entry"),
    })?;
    let ft = m.file_type();
    let (path, path_hex) = encode(rel.as_os_str());
    let mut entry = Entry {
        path,
        path_hex,
        kind: kind_of(&ft).to_string(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: time_string(Timestamp {
            sec: m.mtime(),
            nsec: m.mtime_nsec() as u32,
        }),
        atime: time_string(Timestamp {
            sec: m.atime(),
            nsec: m.atime_nsec() as u32,
        }),
        xattrs: xattrs_of(e.path())?,
        ..Entry::default()
    };
    if ft.is_file() || ft.is_dir() {
        entry.flags = super::flags::to_letters(super::flags::read(e.path())?);
    }
    if ft.is_symlink() {
        let (t, th) = encode(std::fs::read_link(e.path())?.as_os_str());
        entry.target = t;
        entry.target_hex = th;
    }
    if ft.is_char_device() || ft.is_block_device() {
        let rdev = m.rdev();
        entry.rdev_major = Some(libc::major(rdev));
        entry.rdev_minor = Some(libc::minor(rdev));
    }
    if ft.is_file() {
        entry.size = Some(m.size());
        let object = if m.nlink() > 1 {
            object_of(e.path(), store, m.dev(), m.ino())?
        } else {
            None
        };
        match object {
            Some(id) => {
                entry.object = Some(id.to_hex());
                entry.nlink = Some(1);
                match content_of.get(&id) {
                    Some(c) => entry.blake3 = Some(c.to_hex()),
                    None => to_hash.push(next),
                }
            }
            None => {
                entry.nlink = Some(m.nlink());
                match groups.get(&(m.dev(), m.ino())) {
                    Some((first, first_hex)) if m.nlink() > 1 => {
                        entry.link = first.clone();
                        entry.link_hex = first_hex.clone();
                    }
                    _ => {
                        if m.nlink() > 1 {
                            let me = (entry.path.clone(), entry.path_hex.clone());
                            groups.insert((m.dev(), m.ino()), me);
                        }
                        to_hash.push(next);
                    }
                }
            }
        }
    }
    Ok(entry)
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

fn xattrs_of(path: &Path) -> io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, value) in sys::xattr::list_path(path)? {
        if name.as_bytes().starts_with(STORE_XATTR_PREFIX) {
            continue;
        }
        out.insert(name.to_string_lossy().into_owned(), to_hex(&value));
    }
    Ok(out)
}

/// The object a linked file is, when it is one: its marker names an object
/// whose store file is this inode (or, without a store, the marker alone).
fn object_of(
    path: &Path,
    store: Option<&Store>,
    dev: u64,
    ino: u64,
) -> io::Result<Option<ObjectId>> {
    let Some(id) = crate::store::read_marker_path(path)? else {
        return Ok(None);
    };
    match store {
        Some(s) => Ok(s
            .find_copy(&id, dev, ino)
            .map_err(io::Error::other)?
            .map(|_| id)),
        None => Ok(Some(id)),
    }
}

pub fn content_hash(path: &Path) -> io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOATIME)
        .open(path)?;
    let mut h = blake3::Hasher::new();
    h.update_reader(&file)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Writes a manifest as JSON lines.
pub fn write_jsonl(out: &mut dyn io::Write, header: &Header, entries: &[Entry]) -> io::Result<()> {
    serde_json::to_writer(&mut *out, header)?;
    out.write_all(b"\n")?;
    for e in entries {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a JSON-lines manifest.
pub fn read_jsonl(path: &Path) -> io::Result<(Header, Vec<Entry>)> {
    use std::io::BufRead;
    let file = io::BufReader::new(File::open(path)?);
    let mut lines = file.lines();
    let first = lines
        .next()
        .ok_or_else(|| io::Error::other("empty manifest"))??;
    let header: Header = serde_json::from_str(&first)
        .map_err(|e| io::Error::other(format!("not a unifs manifest (first line: {e})")))?;
    if header.unifs_manifest != MANIFEST_VERSION {
        return Err(io::Error::other(format!(
            "manifest version {} is not supported (this unifs reads {MANIFEST_VERSION})",
            header.unifs_manifest
        )));
    }
    let mut entries = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line?;
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
