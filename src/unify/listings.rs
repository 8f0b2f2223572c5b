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
//! one, and are read again next time. Where ctime has a coarse clock
//! (kernels before 6.13, or filesystems without multigrain timestamps), a
//! change in the same tick as that stat keeps the ctime: the same window
//! the hash cache has, and `--paranoid` reads every directory.
//!
//! The file ends in the blake3 hash of what comes before it: a torn or
//! foreign file is ignored whole, and a listing whose directory no longer
//! matches is ignored alone. So the cache can be old, or deleted, at any
//! time. Byte order is the machine's: it is a cache for this machine.

use super::Guest;
use crate::catalog::Map;
use crate::store::Store;
use crate::sys::{Stat, Timestamp};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"unifsLs1";

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

/// One directory's entries, as `getdents64` records.
#[derive(Debug)]
pub struct Listing {
    /// The guest's index in the run.
    pub guest: u32,
    pub rel: PathBuf,
    pub key: DirKey,
    /// Read this run; `None`: the guest's kept listing stood in.
    pub records: Option<Vec<u8>>,
}

/// The listings kept for one guest: the file's bytes, and where in them
/// each directory's path and records are (no allocation per directory).
#[derive(Default, Debug)]
pub struct Listings {
    data: Vec<u8>,
    dirs: Map<u64, Kept>,
}

#[derive(Debug)]
struct Kept {
    key: DirKey,
    rel: Range<usize>,
    records: Range<usize>,
}

/// Whether a listing read after `st` (the directory's stat) can be kept.
/// Kernels before 6.13 stamp ctime from a coarse clock, so a change in the
/// same tick as that stat would leave the same ctime: there, a directory
/// changed within the last 20 ms (more than a tick at any HZ) is not kept.
/// From 6.13, ext4, xfs, btrfs and tmpfs give a change after a stat a ctime
/// of its own (multigrain timestamps).
pub fn keepable(st: &Stat) -> bool {
    static COARSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let coarse = *COARSE.get_or_init(|| kernel_before(6, 13));
    if !coarse {
        return true;
    }
    let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
        return false;
    };
    let ctime = st.ctime.as_nanos();
    ctime < now.as_nanos() as i128 - 20_000_000
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

fn path_hash(rel: &Path) -> u64 {
    foldhash::quality::FixedState::default().hash_one(rel.as_os_str().as_bytes())
}

pub fn cache_path(store: &Store, guest_id: i64) -> PathBuf {
    store
        .root()
        .join("cache")
        .join(format!("listings-{guest_id}"))
}

impl Listings {
    /// The listings in `path`; none if it is missing, torn or not ours.
    pub fn load(path: &Path) -> Listings {
        let Ok(data) = std::fs::read(path) else {
            return Listings::default();
        };
        Listings::parse(data).unwrap_or_default()
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
        let mut dirs = Map::default();
        while r.at < body.len() {
            let rel = r.bytes()?;
            let key = DirKey {
                dev: r.u64()?,
                ino: r.u64()?,
                size: r.u64()?,
                mtime: r.time()?,
                ctime: r.time()?,
            };
            let records = r.bytes()?;
            let hash = path_hash(Path::new(std::ffi::OsStr::from_bytes(&body[rel.clone()])));
            dirs.insert(hash, Kept { key, rel, records });
        }
        Some(Listings { data, dirs })
    }

    /// The kept records of directory `rel`, if it still has stat `key`.
    pub fn get(&self, rel: &Path, key: &DirKey) -> Option<&[u8]> {
        let kept = self.dirs.get(&path_hash(rel))?;
        let same_path = self.data[kept.rel.clone()] == *rel.as_os_str().as_bytes();
        (same_path && kept.key == *key).then(|| &self.data[kept.records.clone()])
    }

    /// Keeps `listings` at `path`, replacing what was there: written to a
    /// temp name in `tmp` and renamed over (no fsync: a cache, and a torn
    /// file fails its hash).
    fn save<'a>(
        path: &Path,
        tmp: &Path,
        listings: impl Iterator<Item = (&'a Listing, &'a [u8])>,
    ) -> io::Result<()> {
        let mut out = MAGIC.to_vec();
        for (l, records) in listings {
            put_bytes(&mut out, l.rel.as_os_str().as_bytes());
            for v in [l.key.dev, l.key.ino, l.key.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for t in [l.key.mtime, l.key.ctime] {
                out.extend_from_slice(&t.sec.to_le_bytes());
                out.extend_from_slice(&t.nsec.to_le_bytes());
            }
            put_bytes(&mut out, records);
        }
        let hash = blake3::hash(&out);
        out.extend_from_slice(hash.as_bytes());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temp = tmp.join(format!("{name}.{}", std::process::id()));
        let written = std::fs::File::create(&temp).and_then(|mut f| f.write_all(&out));
        match written.and_then(|()| std::fs::rename(&temp, path)) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
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
    let mut again: Vec<HashMap<PathBuf, Listing>> = guests.iter().map(|_| HashMap::new()).collect();
    for l in relisted {
        again[l.guest as usize].insert(l.rel.clone(), l);
    }
    let mut by_guest: Vec<Vec<Listing>> = guests.iter().map(|_| Vec::new()).collect();
    let mut changed = vec![false; guests.len()];
    for l in walked {
        let g = l.guest as usize;
        let l = again[g].remove(l.rel.as_path()).unwrap_or(l);
        changed[g] |= l.records.is_some();
        by_guest[g].push(l);
    }
    let tmp = store.root().join("tmp");
    for (g, (guest, listings)) in guests.iter().zip(&by_guest).enumerate() {
        if !changed[g] || guest.row.id < 0 {
            continue;
        }
        let old = kept.iter().find(|(i, _)| *i == g as u32).map(|(_, k)| k);
        let all = listings.iter().filter_map(|l| {
            let records = match (&l.records, old) {
                (Some(r), _) => r.as_slice(),
                (None, Some(old)) => old.get(&l.rel, &l.key)?,
                (None, None) => return None,
            };
            Some((l, records))
        });
        let _ = Listings::save(&cache_path(store, guest.row.id), &tmp, all);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
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
        let path = dir.path().join("cache/listings-3");
        let listing = |rel: &str, n: u64| Listing {
            guest: 0,
            rel: rel.into(),
            key: key(n),
            records: Some(vec![n as u8; n as usize]),
        };
        let kept = [listing("", 5), listing("usr/lib", 300)];
        let all = kept.iter().map(|l| (l, l.records.as_deref().unwrap()));
        Listings::save(&path, dir.path(), all).unwrap();
        let back = Listings::load(&path);
        assert_eq!(back.get(Path::new(""), &key(5)), Some(&[5u8; 5][..]));
        assert_eq!(
            back.get(Path::new("usr/lib"), &key(300)).map(<[u8]>::len),
            Some(300)
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
