//! Directory listings kept from one run for the next, in the store's
//! `cache/listings-<guest id>`. Reading the directories was most of a re-run
//! on unchanged guests; now a re-run opens each directory and compares its
//! stat with the one kept. The same device, inode, size, mtime and ctime mean
//! the same entries: every change of a directory's entries sets its ctime,
//! which no one can set back (short of setting the clock). Then the kept
//! entries stand in for reading the directory.
//!
//! A listing is kept with the stat taken *before* it was read, so entries
//! that changed while it was read come with a newer ctime than the kept
//! one, and are read again next time. Where ctime is coarse (see
//! [`note_filesystem`]), a change in the same tick as that stat keeps the
//! ctime: such a listing is not kept ([`keepable`]), as the hash cache
//! does for files.
//!
//! The file ends in the blake3 hash of what comes before it: a torn or
//! foreign file is ignored whole, and a listing whose directory no longer
//! matches is ignored alone. So the cache can be old, or deleted, at any
//! time. Byte order is the machine's: it is a cache for this machine.

use super::Guest;
use crate::catalog::Map;
use crate::store::Store;
use crate::sys::{self, Stat, Timestamp};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `2`: since listings on a coarse ctime clock are not kept when changed
/// within a tick of their stat. Files of older builds (`1`), kept without
/// that rule, are ignored: one such could lack a file added in that tick.
const MAGIC: &[u8; 8] = b"unifsLs2";

/// What must be unchanged for a kept listing to stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: Timestamp,
    ctime: Timestamp,
}

impl DirKey {
    pub fn of(st: &Stat) -> DirKey {
        DirKey {
            dev: st.dev,
            ino: st.ino,
            size: st.size,
            mtime: st.mtime,
            ctime: st.ctime,
        }
    }
}

/// One directory's listing, for the next run.
#[derive(Debug)]
pub enum Listing {
    /// Read this run (boxed: most listings of a re-run are `Kept`).
    Read(Box<ReadListing>),
    /// The guest's kept listing number `index` stood in (and stands).
    Kept { guest: u32, index: u32 },
    /// A kept listing of the guest turned out stale (a subdirectory it
    /// names is gone): the guest's file is written again, without it.
    Dropped { guest: u32 },
}

/// A listing read this run: its `getdents64` records and the stat taken
/// before them.
#[derive(Debug)]
pub struct ReadListing {
    /// The guest's index in the run.
    pub guest: u32,
    pub rel: PathBuf,
    pub key: DirKey,
    pub records: Vec<u8>,
}

impl Listing {
    pub fn read(guest: u32, rel: PathBuf, key: DirKey, records: Vec<u8>) -> Listing {
        Listing::Read(Box::new(ReadListing {
            guest,
            rel,
            key,
            records,
        }))
    }

    fn guest(&self) -> usize {
        match self {
            Listing::Read(r) => r.guest as usize,
            Listing::Kept { guest, .. } | Listing::Dropped { guest } => *guest as usize,
        }
    }
}

/// The listings kept for one guest: the file's bytes, and where in them
/// each directory's path and records are (no allocation per directory).
#[derive(Default, Debug)]
pub struct Listings {
    data: Vec<u8>,
    /// Where each directory's listing starts in `data`.
    dirs: Vec<u32>,
    /// `dirs` by the hash of their paths.
    by_path: Map<u64, u32>,
}

/// Where [`keep`] saves a guest's listings.
pub fn cache_path(store: &Store, guest_id: i64) -> PathBuf {
    store
        .root()
        .join("cache")
        .join(format!("listings-{guest_id}"))
}

fn path_hash(rel: &[u8]) -> u64 {
    foldhash::quality::FixedState::default().hash_one(rel)
}

/// Whether what was read after `st` (a directory's listing, a file's
/// hash) can be kept for the next run, which trusts it while `st` is the
/// same. Where ctime is coarse (see [`note_filesystem`]), a change in the
/// same tick as that stat would leave the same ctime: there, a file or
/// directory changed within [`COARSE_WINDOW_NS`] of it is not kept.
/// `before` is [`clock`] read before that stat: read after it, a delay in
/// between would widen the window.
pub fn keepable(st: &Stat, before: Option<i128>) -> bool {
    match before {
        None => true,
        Some(before) => st.ctime.as_nanos() < before - COARSE_WINDOW_NS,
    }
}

/// More than one tick of a coarse ctime: a jiffy (at most 10 ms), or the
/// whole second of ext4 with 128-byte inodes (no room for nanoseconds).
pub const COARSE_WINDOW_NS: i128 = 2_000_000_000;

/// Set when a guest of the run is on a filesystem whose ctime is coarse.
static FS_COARSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes the filesystem of a guest root (`root`, its stat `st`) before
/// the run's first [`clock`]. From kernel 6.13, ext4, xfs, btrfs and tmpfs
/// give a change after a stat a ctime of its own (multigrain timestamps);
/// other filesystems (ext2 and ext3, even through the ext4 driver) stamp
/// ctime from the coarse clock, and a filesystem that keeps whole seconds
/// (ext4 with 128-byte inodes: every ctime has 0 ns) cannot tell two
/// changes in one second apart, multigrain or not.
pub fn note_filesystem(root: &std::path::Path, st: &Stat) {
    let fstype = crate::fs::holding_fstype(root);
    let multigrain = matches!(fstype.as_deref(), Some("ext4" | "xfs" | "btrfs" | "tmpfs"));
    if !multigrain || st.ctime.nsec == 0 {
        FS_COARSE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The time, in ns since the epoch, to pass to [`keepable`]; `None` where
/// ctime is fine-grained and it is not needed. Read it before the stat.
pub fn clock() -> Option<i128> {
    static COARSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // UNIFS_TEST_COARSE_CTIME=MS lets tests take the coarse path on any
    // kernel and filesystem, with a window MS longer (a test cannot count
    // on starting a run within the window of its last change).
    let wider = crate::sys::test_hook!("UNIFS_TEST_COARSE_CTIME")
        .and_then(|ms| ms.to_str()?.parse::<i128>().ok())
        .map(|ms| ms * 1_000_000);
    let coarse = || {
        FS_COARSE.load(std::sync::atomic::Ordering::Relaxed)
            || *COARSE.get_or_init(|| kernel_before(6, 13))
    };
    if wider.is_none() && !coarse() {
        return None;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    // A clock before 1970: nothing is keepable.
    Some(now.map_or(i128::MIN + COARSE_WINDOW_NS, |d| {
        d.as_nanos() as i128 - wider.unwrap_or(0)
    }))
}

/// Whether the running kernel is older than `major.minor` (unknown: yes).
fn kernel_before(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().ok());
    match (v.next().flatten(), v.next().flatten()) {
        (Some(a), Some(b)) => (a, b) < (major, minor),
        _ => true,
    }
}

/// One listing as saved: path, key, records.
type Entry<'a> = (&'a [u8], DirKey, &'a [u8]);

impl Listings {
    /// The listings in `path`; none if it is missing, torn or not ours.
    /// Torn is what a power cut can leave: [`Self::save`] does not fsync.
    pub fn load(path: &Path) -> Listings {
        let Ok(data) = std::fs::read(path) else {
            return Listings::default();
        };
        let len = data.len();
        Listings::parse(data).unwrap_or_else(|| {
            tracing::debug!(
                "{}: torn, of an older build or not a listings file ({len} bytes): not used; \
                 this guest's directories are read",
                sys::shown(path)
            );
            Listings::default()
        })
    }

    fn parse(data: Vec<u8>) -> Option<Listings> {
        let body = data.get(..data.len().checked_sub(32)?)?;
        if !body.starts_with(MAGIC) || blake3::hash(body).as_bytes() != &data[body.len()..] {
            return None;
        }
        let mut r = Reader {
            data: body,
            at: MAGIC.len(),
        };
        let (mut dirs, mut by_path) = (Vec::new(), Map::default());
        while r.at < body.len() {
            let at = u32::try_from(r.at).ok()?;
            let (rel, _, _) = r.listing()?;
            by_path.insert(path_hash(&body[rel]), dirs.len() as u32);
            dirs.push(at);
        }
        Some(Listings {
            data,
            dirs,
            by_path,
        })
    }

    /// The kept listing of directory `rel`, if it still has stat `key`: its
    /// number and records.
    pub fn get(&self, rel: &Path, key: &DirKey) -> Option<(u32, &[u8])> {
        let rel = rel.as_os_str().as_bytes();
        let index = *self.by_path.get(&path_hash(rel))?;
        let (path, k, records) = self.entry(index)?;
        (path == rel && k == *key).then_some((index, records))
    }

    fn entry(&self, index: u32) -> Option<Entry<'_>> {
        let at = *self.dirs.get(index as usize)? as usize;
        let mut r = Reader {
            data: &self.data,
            at,
        };
        let (rel, key, records) = r.listing()?;
        Some((&self.data[rel], key, &self.data[records]))
    }

    /// Keeps `listings` as `name` in directory `cache`, replacing what was
    /// there: written to a temp name in `tmp` and renamed over (no fsync: a
    /// cache, and a file a power cut left torn, empty or old fails its hash
    /// or its directories' stats, and costs only reads). Streamed: never the whole
    /// file in memory. By fd: a store moved meanwhile keeps it.
    fn save<'a>(
        cache: BorrowedFd,
        name: &OsStr,
        tmp: BorrowedFd,
        listings: impl Iterator<Item = Entry<'a>>,
    ) -> io::Result<()> {
        let temp = OsString::from(format!("{}.{}", name.to_string_lossy(), std::process::id()));
        let write = || -> io::Result<()> {
            // Root's alone: the listings name what is in guest directories
            // other users cannot list.
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            let file = std::fs::File::from(sys::open_at(tmp, &temp, flags, 0o600)?);
            let mut out = HashingWriter {
                w: io::BufWriter::with_capacity(256 * 1024, file),
                h: blake3::Hasher::new(),
            };
            out.put(MAGIC)?;
            for (rel, key, records) in listings {
                out.put_bytes(rel)?;
                for v in [key.dev, key.ino, key.size] {
                    out.put(&v.to_le_bytes())?;
                }
                for t in [key.mtime, key.ctime] {
                    out.put(&t.sec.to_le_bytes())?;
                    out.put(&t.nsec.to_le_bytes())?;
                }
                out.put_bytes(records)?;
            }
            let hash = out.h.finalize();
            out.w.write_all(hash.as_bytes())?;
            out.w.flush()?;
            sys::rename_at(tmp, &temp, cache, name)
        };
        write().inspect_err(|_| {
            let _ = sys::unlink_at(tmp, &temp);
        })
    }
}

/// Writes the cache file and hashes what it writes.
struct HashingWriter {
    w: io::BufWriter<std::fs::File>,
    h: blake3::Hasher,
}

impl HashingWriter {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.h.update(b);
        self.w.write_all(b)
    }

    /// A length-prefixed field.
    fn put_bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.put(&(b.len() as u32).to_le_bytes())?;
        self.put(b)
    }
}

/// Keeps each guest's listings for its next run: the walk's, with those of
/// the directories the run itself changed replaced by `relisted`. A guest
/// whose listings all came from the cache unchanged is not written again.
/// A cache that cannot be written only makes the next run read more.
/// `kept` holds each guest's kept listings (by the guest's index).
pub fn keep(
    store: &Store,
    guests: &[Guest],
    kept: &[(u32, Listings)],
    walked: Vec<Listing>,
    relisted: Vec<Listing>,
) {
    let none = Listings::default();
    let mut old_of: Vec<&Listings> = vec![&none; guests.len()];
    for (i, k) in kept.iter().rev() {
        if let Some(o) = old_of.get_mut(*i as usize) {
            *o = k;
        }
    }
    let old = |g: usize| old_of[g];
    // Each guest's listings, sorted out once (not a pass over all of them
    // for each guest: thousands of guests).
    let mut of_guest: Vec<Vec<&Listing>> = vec![Vec::new(); guests.len()];
    for l in &walked {
        of_guest[l.guest()].push(l);
    }
    let mut changed = vec![false; guests.len()];
    let mut again: Vec<HashMap<PathBuf, Box<ReadListing>>> =
        guests.iter().map(|_| HashMap::new()).collect();
    let mut walked_any = vec![false; guests.len()];
    for l in &walked {
        walked_any[l.guest()] = true;
        if let Listing::Read(_) | Listing::Dropped { .. } = l {
            changed[l.guest()] = true;
        }
    }
    // (Only for guests whose listings are kept: on other filesystems the
    // walk keeps none.)
    for l in relisted {
        if let Listing::Read(r) = l {
            let g = r.guest as usize;
            changed[g] |= walked_any[g];
            again[g].insert(r.rel.clone(), r);
        }
    }
    let Ok(tmp) = store.tmp_dir() else { return };
    let mut cache = None;
    for (g, guest) in guests.iter().enumerate() {
        if !changed[g] || guest.row.id < 0 {
            continue;
        }
        let Ok(cache) = cache.get_or_insert_with(|| store.cache_dir()) else {
            return;
        };
        let all = of_guest[g].iter().filter_map(|l| {
            let (rel, key, records) = match l {
                Listing::Read(r) => r.entry(),
                Listing::Kept { index, .. } => old(g).entry(*index)?,
                Listing::Dropped { .. } => return None,
            };
            let path = Path::new(std::ffi::OsStr::from_bytes(rel));
            Some(
                again[g]
                    .get(path)
                    .map_or((rel, key, records), |r| r.entry()),
            )
        });
        let name = OsString::from(format!("listings-{}", guest.row.id));
        let _ = Listings::save(cache.as_fd(), &name, tmp, all);
    }
}

impl ReadListing {
    fn entry(&self) -> Entry<'_> {
        (self.rel.as_os_str().as_bytes(), self.key, &self.records)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<Range<usize>> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len())?;
        let r = self.at..end;
        self.at = end;
        Some(r)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let r = self.take(N)?;
        self.data[r].try_into().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    fn time(&mut self) -> Option<Timestamp> {
        let sec = i64::from_le_bytes(self.array()?);
        let nsec = u32::from_le_bytes(self.array()?);
        Some(Timestamp { sec, nsec })
    }

    /// One directory's listing: where its path and records are, and its key.
    fn listing(&mut self) -> Option<(Range<usize>, DirKey, Range<usize>)> {
        let rel = self.bytes()?;
        let key = DirKey {
            dev: self.u64()?,
            ino: self.u64()?,
            size: self.u64()?,
            mtime: self.time()?,
            ctime: self.time()?,
        };
        Some((rel, key, self.bytes()?))
    }

    /// A length-prefixed field: where its bytes are.
    fn bytes(&mut self) -> Option<Range<usize>> {
        let n = u32::from_le_bytes(self.array()?);
        self.take(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> DirKey {
        let t = Timestamp { sec: 7, nsec: 9 };
        DirKey {
            dev: 1,
            ino: n,
            size: 4096,
            mtime: t,
            ctime: Timestamp {
                sec: 8,
                nsec: n as u32,
            },
        }
    }

    #[test]
    fn on_a_coarse_clock_only_directories_older_than_the_window_are_kept() {
        let at = |ns: i128| Stat {
            dev: 1,
            ino: 2,
            mode: 0o40755,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 4096,
            mtime: Timestamp { sec: 0, nsec: 0 },
            ctime: Timestamp {
                sec: (ns / 1_000_000_000) as i64,
                nsec: (ns % 1_000_000_000) as u32,
            },
        };
        let before = 1_000_000_000_000i128;
        assert!(keepable(&at(before - COARSE_WINDOW_NS - 1), Some(before)));
        assert!(!keepable(
            &at(before - COARSE_WINDOW_NS + 5_000_000),
            Some(before)
        ));
        assert!(!keepable(&at(before), Some(before)));
        assert!(keepable(&at(before), None), "fine-grained ctime");
    }

    #[test]
    fn this_kernel_version_is_read() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let major: u32 = release.split('.').next().unwrap().parse().unwrap();
        assert!(kernel_before(major + 1, 0));
        assert!(!kernel_before(major, 0));
        assert!(!kernel_before(2, 6));
    }

    #[test]
    fn kept_listings_come_back_only_for_the_same_stat_and_never_from_a_torn_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cache")).unwrap();
        let path = dir.path().join("cache/listings-3");
        let (k5, k300) = (key(5), key(300));
        let kept: [Entry; 2] = [(b"", k5, &[5u8; 5]), (b"usr/lib", k300, &[44u8; 300])];
        let cache = sys::open_dir(&dir.path().join("cache")).unwrap();
        let tmp = sys::open_dir(dir.path()).unwrap();
        let name = OsStr::new("listings-3");
        Listings::save(cache.as_fd(), name, tmp.as_fd(), kept.into_iter()).unwrap();
        let back = Listings::load(&path);
        assert_eq!(back.get(Path::new(""), &key(5)), Some((0, &[5u8; 5][..])));
        assert_eq!(
            back.get(Path::new("usr/lib"), &key(300))
                .map(|(i, r)| (i, r.len())),
            Some((1, 300))
        );
        assert_eq!(
            back.get(Path::new("usr/lib"), &key(301)),
            None,
            "another ctime"
        );
        assert_eq!(back.get(Path::new("usr"), &key(5)), None, "not kept");
        // No temp file is left in `tmp`.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");

        // Any byte changed or cut off: the whole file is ignored.
        let data = std::fs::read(&path).unwrap();
        for bad in [data[..data.len() - 1].to_vec(), {
            let mut d = data.clone();
            d[20] ^= 1;
            d
        }] {
            std::fs::write(&path, bad).unwrap();
            assert!(Listings::load(&path).get(Path::new(""), &key(5)).is_none());
        }
        assert!(Listings::load(&dir.path().join("missing")).dirs.is_empty());
    }
}
