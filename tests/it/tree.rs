//! Building guest trees and taking snapshots of them, for tests that check
//! that unify (and later the mount) is invisible.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// A fixed mtime, as packages ship.
pub const MTIME: u64 = 1_700_000_000;

/// Writes `data` at `root/rel` with `mode` and the fixed mtime.
pub fn file(root: &Path, rel: &str, data: &[u8], mode: u32) -> PathBuf {
    file_at(root, rel, data, mode, MTIME)
}

pub fn file_at(root: &Path, rel: &str, data: &[u8], mode: u32, mtime: u64) -> PathBuf {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, data).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(&path, mtime);
    path
}

pub fn set_mtime(path: &Path, mtime: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
        .unwrap();
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let f = fs::File::open(path).unwrap();
    unifs::sys::xattr::set_fd(f.as_fd(), OsStr::new(name), value).unwrap();
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A sparse file of `len` bytes at `path`: 64 KiB of data at its start,
/// in its middle and at its end, holes between.
pub fn sparse_file(path: &Path, len: u64) {
    use std::os::unix::fs::FileExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (i, at) in [0, len / 2 + 12288, len - 65536].into_iter().enumerate() {
        f.write_all_at(&bytes(i as u64 + 1, 65536), at).unwrap();
    }
    f.sync_all().unwrap();
}

/// The blake3 hash of a file's bytes, read in a stream (sparse files here
/// are far larger than what one would read into memory).
pub fn hash_file(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(path).unwrap()).unwrap();
    h.finalize()
}

/// Bytes allocated on disk for a file (`st_blocks`).
pub fn allocated(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().blocks() * 512
}

pub fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

/// Everything a guest can observe of one path, but its inode number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: Option<String>,
    pub target: Option<PathBuf>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// A guest tree as seen from inside: every path, and the hardlink groups
/// (paths sharing an inode within the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: BTreeMap<PathBuf, Entry>,
    pub groups: BTreeSet<BTreeSet<PathBuf>>,
}

/// Snapshots `root`. Store xattrs (`trusted.unifs.*`) are the store's, not the
/// guest's, and are left out; so are names for which `skip` says true.
pub fn snapshot_with(root: &Path, skip: impl Fn(&Path) -> bool) -> Snapshot {
    let mut entries = BTreeMap::new();
    let mut by_ino: HashMap<u64, BTreeSet<PathBuf>> = HashMap::new();
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
        if skip(&rel) {
            continue;
        }
        let m = e.path().symlink_metadata().unwrap();
        let ft = m.file_type();
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "other"
        };
        let content = ft.is_file().then(|| {
            blake3::hash(&fs::read(e.path()).unwrap())
                .to_hex()
                .to_string()
        });
        let target = ft.is_symlink().then(|| fs::read_link(e.path()).unwrap());
        let xattrs = unifs::sys::xattr::list_path(e.path())
            .unwrap()
            .into_iter()
            .filter(|(n, _)| !n.as_bytes().starts_with(b"trusted.unifs."))
            .map(|(n, v)| (n.to_string_lossy().into_owned(), v))
            .collect();
        if ft.is_file() {
            by_ino.entry(m.ino()).or_default().insert(rel.clone());
        }
        let mtime = (m.mtime(), m.mtime_nsec());
        entries.insert(
            rel,
            Entry {
                kind,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime,
                size: if ft.is_dir() { 0 } else { m.size() },
                content,
                target,
                xattrs,
            },
        );
    }
    let groups = by_ino.into_values().filter(|g| g.len() > 1).collect();
    Snapshot { entries, groups }
}

pub fn snapshot(root: &Path) -> Snapshot {
    snapshot_with(root, |_| false)
}

impl Snapshot {
    /// The snapshot without directory mtimes, for trees whose directories
    /// change on purpose (a killed unify leaves its temp names' mark on them).
    pub fn without_dir_mtimes(mut self) -> Snapshot {
        for e in self.entries.values_mut() {
            if e.kind == "dir" {
                e.mtime = (0, 0);
            }
        }
        self
    }
}

/// A snapshot to compare with a restored tree, whose root directory has the
/// restore's mtime (restore puts back those of the directories below it).
pub fn snapshot_for_restore(root: &Path) -> Snapshot {
    let mut s = snapshot(root);
    if let Some(e) = s.entries.get_mut(Path::new("")) {
        e.mtime = (0, 0);
    }
    s
}

/// Sets the mtime of every directory of the tree at `root` (its root too) to
/// `mtime`, so that a change of any of them shows.
pub fn set_dir_mtimes(root: &Path, mtime: u64) {
    let t = unifs::sys::Timestamp {
        sec: mtime as i64,
        nsec: 0,
    };
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            unifs::sys::lutimens(e.path(), t, t).unwrap();
        }
    }
}

/// Asserts `after` reads exactly as `before`, and that every hardlink group
/// of `before` is still linked together in `after`.
pub fn assert_invisible(before: &Snapshot, after: &Snapshot, what: &str) {
    let paths_before: Vec<_> = before.entries.keys().collect();
    let paths_after: Vec<_> = after.entries.keys().collect();
    assert_eq!(paths_before, paths_after, "{what}: paths differ");
    for (path, e) in &before.entries {
        assert_eq!(
            e,
            &after.entries[path],
            "{what}: {} differs",
            path.display()
        );
    }
    for group in &before.groups {
        assert!(
            after.groups.iter().any(|g| group.is_subset(g)),
            "{what}: hardlink group {group:?} was split"
        );
    }
}

/// Runs the unifs binary with `--store store` and `args`.
pub fn unifs(store: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.arg("--store").arg(store);
    for a in args {
        cmd.arg(a.as_ref());
    }
    cmd.env_remove("UNIFS_TEST_LINK_MAX");
    cmd.output().unwrap()
}

/// A command's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `unifs store init` at `store` (`manifest` needs a store).
pub fn init_store(store: &Path) {
    let out = unifs(store, &[&"store", &"init"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `unifs restore --manifest M --from FROM TARGET` from `store`.
pub fn restore(store: &Path, m: &Path, from: &Path, target: &Path) -> Output {
    unifs(
        store,
        &[&"restore", &"--manifest", &m, &"--from", &from, &target],
    )
}

/// SQL that takes the `guests` columns of migration 5 away again, for tests
/// that make a catalog of an older schema.
pub const UNDO_SCHEMA_5: &str = "ALTER TABLE guests DROP COLUMN root_dev;
    ALTER TABLE guests DROP COLUMN root_ino; ALTER TABLE guests DROP COLUMN root_birth_ns;
    ALTER TABLE guests DROP COLUMN links_outside;";

/// Runs `unifs unify --json …`, asserts it finished, returns the summary.
pub fn unify_json(store: &Path, args: &[&dyn AsRef<OsStr>]) -> serde_json::Value {
    let mut all: Vec<&dyn AsRef<OsStr>> = vec![&"unify", &"--json"];
    all.extend_from_slice(args);
    unify_summary(&unifs(store, &all))
}

/// The summary of a `unify --json` that finished: exit status 0 with no
/// problems listed, 23 with some.
pub fn unify_summary(out: &Output) -> serde_json::Value {
    let text = || {
        format!(
            "{:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
    };
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("unify failed ({e}): {}", text()));
    let problems = s["problems"].as_array().map_or(0, |p| p.len());
    let want = if problems == 0 { 0 } else { 23 };
    assert_eq!(out.status.code(), Some(want), "{}", text());
    s
}

/// `store stats --json`, which must succeed.
pub fn stats_json(store: &Path) -> serde_json::Value {
    let out = unifs(store, &[&"store", &"stats", &"--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `store verify` passes.
pub fn assert_verify_clean(store: &Path) {
    let out = unifs(store, &[&"store", &"verify"]);
    assert!(
        out.status.success(),
        "store verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first object file of `store` a directory walk finds.
pub fn first_object_file(store: &Path) -> PathBuf {
    walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_type().is_file())
        .expect("an object file")
        .into_path()
}

/// Runs `chattr FLAGS path` (root), which must succeed.
pub fn chattr(flags: &str, path: &Path) {
    let out = Command::new("chattr")
        .arg(flags)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chattr {flags} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The inode flags of `path` as `lsattr -d` prints them (which must work).
pub fn lsattr(path: &Path) -> String {
    let out = Command::new("lsattr").arg("-d").arg(path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Takes `chattr -ai` off the paths when dropped, so the temp dir can go
/// whatever the test did.
pub struct Unflag(pub Vec<PathBuf>);

impl Drop for Unflag {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-ai").arg(p).status();
        }
    }
}

/// The files in `dir` whose names start with `prefix`.
pub fn files_named_from(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}
