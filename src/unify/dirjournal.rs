//! The directory mtimes a run is to put back, kept on disk as well
//! (`STORE/tmp/dirtimes-PID`), so that when the run is killed before it can
//! put them back, the next run does (invariant 3; `dirtimes.rs` has the
//! rules).
//!
//! A directory's record is written before the run's first change of it;
//! then, around each change, a count of changes under way and the mtime
//! the last one left. The records live in pages of the file mapped shared,
//! so each update is a store to memory, not a syscall, and is in the page
//! cache (for the next process to read) the moment it is made.
//!
//! The next run (under the store lock, so the writer of the file is gone)
//! puts a directory's mtime back if it is still the one our last change
//! left, or, with a change under way when the run died, any other (that
//! change's own mtime was never recorded; a guest that changed the same
//! directory after the kill loses its mtime, a window of one directory per
//! linking thread). A directory someone else changed while the run worked
//! in it has its record forgotten ([`Slot::forget`]). It never follows a symlink (the directory is opened
//! beneath its guest's root) and only touches the very inode recorded.
//!
//! The file is this machine's byte order and not part of the store format;
//! deleting it only loses that repair.

use super::Problem;
use crate::store::DIR_TIMES_PREFIX as PREFIX;
use crate::sys::{self, SharedMap, Timestamp};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

const FILE_MAGIC: u64 = u64::from_ne_bytes(*b"unifsdt1");
/// A record's first word: this in its low half, the path's length in the
/// high half. Stored last, so a record cut short by a kill has none.
const RECORD_MAGIC: u64 = 0x3154_4d44;
/// Words of a record before its path: magic and length, dev, ino, the
/// mtime before (seconds; nanoseconds and guest), ours (nanoseconds, or
/// `UNSET`), changes under way.
const HEAD: usize = 7;
const OURS: usize = 5;
const BUSY: usize = 6;
/// `ours` before our first change is done.
const UNSET: i64 = i64::MIN;
/// The file grows, and is mapped, in chunks of this many words (1 MiB, a
/// multiple of any page size).
const CHUNK: usize = 1 << 17;

pub struct Journal {
    dir: OwnedFd,
    name: OsString,
    file: File,
    /// Where the records start in the file (after the guests' roots).
    records_at: u64,
    chunks: Mutex<Chunks>,
}

#[derive(Default)]
struct Chunks {
    maps: Vec<Arc<SharedMap>>,
    /// The next free word of the last chunk.
    next: usize,
}

/// One directory's record.
pub struct Slot {
    map: Arc<SharedMap>,
    at: usize,
}

impl Slot {
    /// Before a change of the directory.
    pub fn begin(&self) {
        self.map.word(self.at + BUSY).fetch_add(1, Ordering::SeqCst);
    }

    /// After it: `ours` is the mtime it left the directory with.
    pub fn end(&self, ours: Timestamp) {
        let ns = nanos(ours).unwrap_or(UNSET);
        self.map
            .word(self.at + OURS)
            .store(ns as u64, Ordering::SeqCst);
        self.map.word(self.at + BUSY).fetch_sub(1, Ordering::SeqCst);
    }

    /// Someone else changed the directory: the next run must not put its
    /// mtime back either (no change under way, none of ours to match).
    pub fn forget(&self) {
        self.map.word(self.at + BUSY).store(0, Ordering::SeqCst);
        let unset = UNSET as u64;
        self.map.word(self.at + OURS).store(unset, Ordering::SeqCst);
    }
}

impl Journal {
    /// Starts this process's file in the store's `tmp` (`dir`), naming the
    /// guests' roots.
    pub fn create(dir: BorrowedFd, roots: &[&Path]) -> io::Result<Journal> {
        let name = OsString::from(format!("{PREFIX}{}", std::process::id()));
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC;
        let mut file = File::from(sys::open_at(dir, &name, flags, 0o600)?);
        let mut head = Vec::new();
        head.extend(FILE_MAGIC.to_ne_bytes());
        head.extend(0u64.to_ne_bytes()); // where the records start: below
        head.extend((roots.len() as u64).to_ne_bytes());
        for root in roots {
            let bytes = root.as_os_str().as_bytes();
            head.extend((bytes.len() as u64).to_ne_bytes());
            head.extend(bytes);
            head.resize(head.len().next_multiple_of(8), 0);
        }
        // SAFETY: sysconf takes and returns plain integers.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let records_at = (head.len() as u64).next_multiple_of(page);
        head[8..16].copy_from_slice(&records_at.to_ne_bytes());
        file.write_all(&head)?;
        Ok(Journal {
            dir: dir.try_clone_to_owned()?,
            name,
            file,
            records_at,
            chunks: Mutex::default(),
        })
    }

    /// Records directory (`dev`, `ino`), `rel` beneath the root of guest
    /// `guest`, whose mtime is `before`. `None` if it cannot be recorded (a
    /// killed run then leaves its mtime changed, as without a journal).
    pub fn note(
        &self,
        dev: u64,
        ino: u64,
        before: Timestamp,
        guest: u32,
        rel: &Path,
    ) -> Option<Slot> {
        let path = rel.as_os_str().as_bytes();
        let need = HEAD + path.len().div_ceil(8);
        if need > CHUNK {
            return None;
        }
        let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        if chunks.maps.is_empty() || chunks.next + need > CHUNK {
            let n = chunks.maps.len() as u64;
            let at = self.records_at + n * CHUNK as u64 * 8;
            self.file.set_len(at + CHUNK as u64 * 8).ok()?;
            let map = SharedMap::new(self.file.as_fd(), at, CHUNK).ok()?;
            chunks.maps.push(Arc::new(map));
            chunks.next = 0;
        }
        let at = chunks.next;
        let map = chunks.maps.last()?.clone();
        let words = [
            dev,
            ino,
            before.sec as u64,
            u64::from(before.nsec) | u64::from(guest) << 32,
            UNSET as u64,
            0,
        ];
        for (i, w) in words.into_iter().enumerate() {
            map.word(at + 1 + i).store(w, Ordering::Relaxed);
        }
        for (i, part) in path.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..part.len()].copy_from_slice(part);
            map.word(at + HEAD + i)
                .store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
        let magic = RECORD_MAGIC | (path.len() as u64) << 32;
        map.word(at).store(magic, Ordering::SeqCst);
        chunks.next = at + need;
        Some(Slot { map, at })
    }

    /// The run put the mtimes back itself: the file goes.
    pub fn remove(&self) {
        let _ = sys::unlink_at(self.dir.as_fd(), &self.name);
    }
}

/// What a killed run's file asks for.
struct Record {
    dev: u64,
    ino: u64,
    before: Timestamp,
    guest: usize,
    ours: i64,
    busy: u64,
    rel: PathBuf,
}

/// The directories killed runs noted before changing them, as (the run's
/// pid, dev, ino), each with its guest's root: a temp name
/// `.unifs-tmp-PID-SEQ` is a leftover of run PID only in one of these (else
/// it is a file of the guest's own). A run whose record a power cut (or a
/// crash of the machine) took, as far as it noted anything, has the entry
/// (pid, [`ANY_DIR`], [`ANY_DIR`]) with no root: its temp names are
/// leftovers in any directory.
pub type KilledDirs = std::collections::HashMap<(u32, u64, u64), PathBuf>;

/// Dev and ino of a [`KilledDirs`] entry for every directory (no directory
/// has both 0: device 0:0 is never a filesystem's).
pub const ANY_DIR: u64 = 0;

/// `PREFIX` and this: the file that keeps [`KilledDirs`] until a run has
/// removed their leftovers. A killed run's own file goes once its mtimes are
/// back, before the run looks for leftovers: a run killed in between, or one
/// not given every guest, must not make the next forget them.
const LEFT: &str = "left";
const LEFT_MAGIC: u64 = u64::from_ne_bytes(*b"unifsdl1");

/// Puts back the mtimes killed runs left changed, from every file of theirs
/// in `dir` (the store's `tmp`, at `dir_path`), and removes the files.
/// Returns how many directories got theirs back, the directories the runs
/// changed (with those kept from before), and what went wrong.
pub fn recover(dir: BorrowedFd, dir_path: &Path) -> (u64, KilledDirs, Vec<Problem>) {
    let mut names = Vec::new();
    let listed = sys::read_dir(dir, |e| {
        let digits = e.name.as_bytes().strip_prefix(PREFIX.as_bytes());
        if digits.is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit)) {
            names.push(e.name.to_os_string());
        }
    });
    let mut problems = Vec::new();
    if let Err(e) = listed {
        problems.push(Problem::new(dir_path, format!("cannot list: {e}")));
    }
    let mut restored = 0;
    let left = OsString::from(format!("{PREFIX}{LEFT}"));
    let mut killed = match read_left(dir, &left) {
        Ok(killed) => killed,
        Err(e) if e.kind() == io::ErrorKind::NotFound => KilledDirs::new(),
        Err(e) => {
            let what = format!(
                "the directories killed runs changed cannot be read ({e}); \
                 temp names they left there are reported, not removed"
            );
            problems.push(Problem::new(dir_path.join(&left), what));
            KilledDirs::new()
        }
    };
    let mut done = Vec::new();
    let boot = sys::boot_time();
    for name in names {
        let path = dir_path.join(&name);
        let pid = name.as_bytes()[PREFIX.len()..]
            .iter()
            .try_fold(0u32, |n, d| {
                n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
            });
        // The records live in mapped pages the kernel writes back in its
        // own time: after a power cut they may be cut short or gone, so a
        // record of an earlier boot, or one that cannot be read, says only
        // that its run may have left temp names anywhere.
        let earlier_boot = match (sys::stat_at(dir, &name), boot) {
            (Ok(st), Some(boot)) => st.mtime.sec < boot,
            _ => false,
        };
        let parsed = read(dir, &name);
        if let (Some(pid), true) = (pid, earlier_boot || parsed.is_err()) {
            killed.insert((pid, ANY_DIR, ANY_DIR), PathBuf::new());
        }
        match parsed {
            Ok((roots, records)) => {
                if let Some(pid) = pid {
                    killed.extend(
                        records.iter().filter_map(|r| {
                            Some(((pid, r.dev, r.ino), roots.get(r.guest)?.clone()))
                        }),
                    );
                }
                let (n, mut p) = restore(&roots, &records);
                restored += n;
                problems.append(&mut p);
            }
            Err(e) => problems.push(Problem::new(
                &path,
                format!(
                    "a killed run's record of directory mtimes cannot be read ({e}); removed \
                     (its temp names are recognised by its pid, its directories keep new mtimes)"
                ),
            )),
        }
        done.push((name, path));
    }
    if !done.is_empty() {
        if let Err(e) = keep_killed(dir, &killed) {
            let what = format!(
                "cannot keep the directories killed runs changed ({e}); \
                 temp names they left there are reported, not removed"
            );
            problems.push(Problem::new(dir_path.join(&left), what));
        }
    }
    for (name, path) in done {
        if let Err(e) = sys::unlink_at(dir, &name) {
            problems.push(Problem::new(&path, format!("cannot remove: {e}")));
        }
    }
    (restored, killed, problems)
}

/// Keeps `killed` in `dir` (the store's `tmp`) for the next run, in place
/// of what was kept; none: nothing is kept.
pub fn keep_killed(dir: BorrowedFd, killed: &KilledDirs) -> io::Result<()> {
    let left = OsString::from(format!("{PREFIX}{LEFT}"));
    if killed.is_empty() {
        return match sys::unlink_at(dir, &left) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let mut bytes = Vec::new();
    bytes.extend(LEFT_MAGIC.to_ne_bytes());
    for (&(pid, dev, ino), root) in killed {
        let root = root.as_os_str().as_bytes();
        for w in [u64::from(pid), dev, ino, root.len() as u64] {
            bytes.extend(w.to_ne_bytes());
        }
        bytes.extend(root);
        bytes.resize(bytes.len().next_multiple_of(8), 0);
    }
    // Whole or not at all: a kill while writing leaves the old file. And
    // on disk before the records it takes over go (`recover` removes them
    // next): a power cut after a rename the journal had committed without
    // the data left an empty file, and the temp names of every run it
    // listed were then taken for the guests' own.
    let new = OsString::from(format!("{PREFIX}{LEFT}.new"));
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let mut file = File::from(sys::open_at(dir, &new, flags, 0o600)?);
    file.write_all(&bytes)?;
    file.sync_data()?;
    sys::rename_at(dir, &new, dir, &left)?;
    sys::fsync(dir)
}

fn read_left(dir: BorrowedFd, name: &OsStr) -> io::Result<KilledDirs> {
    let mut bytes = Vec::new();
    File::from(sys::open_at(dir, name, libc::O_RDONLY, 0)?).read_to_end(&mut bytes)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a list of directories");
    let word = |i: usize| word_at(&bytes, i);
    if word(0) != Some(LEFT_MAGIC) {
        return Err(bad());
    }
    let mut killed = KilledDirs::new();
    let mut i = 1;
    while i * 8 < bytes.len() {
        let (pid, dev, ino, len) =
            (|| Some((word(i)?, word(i + 1)?, word(i + 2)?, word(i + 3)?)))().ok_or_else(bad)?;
        let start = (i + 4) * 8;
        let root = usize::try_from(len)
            .ok()
            .and_then(|len| bytes.get(start..start.checked_add(len)?))
            .ok_or_else(bad)?;
        let pid = u32::try_from(pid).map_err(|_| bad())?;
        killed.insert((pid, dev, ino), PathBuf::from(OsStr::from_bytes(root)));
        i += 4 + (len as usize).div_ceil(8);
    }
    Ok(killed)
}

/// Word `i` of `bytes`, if it is there. Checked: a damaged file's offset
/// near `usize::MAX` overflowed `i * 8`.
fn word_at(bytes: &[u8], i: usize) -> Option<u64> {
    let start = i.checked_mul(8)?;
    let b = bytes.get(start..start.checked_add(8)?)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

fn read(dir: BorrowedFd, name: &OsStr) -> io::Result<(Vec<PathBuf>, Vec<Record>)> {
    let mut bytes = Vec::new();
    File::from(sys::open_at(dir, name, libc::O_RDONLY, 0)?).read_to_end(&mut bytes)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not a record of directory mtimes",
        )
    };
    let word = |i: usize| word_at(&bytes, i);
    // `len` bytes from word `at`.
    let text = |at: usize, len: usize| -> Option<&[u8]> {
        let start = at.checked_mul(8)?;
        bytes.get(start..start.checked_add(len)?)
    };
    if bytes.is_empty() {
        // Killed between creating the file and writing its head (one
        // write, before any directory is changed): nothing to put back.
        return Ok((Vec::new(), Vec::new()));
    }
    if word(0) != Some(FILE_MAGIC) {
        return Err(bad());
    }
    let records_at = word(1).ok_or_else(bad)? as usize;
    let count = word(2).ok_or_else(bad)?;
    let mut roots = Vec::new();
    let mut i = 3;
    for _ in 0..count {
        let len = word(i).ok_or_else(bad)? as usize;
        let b = text(i + 1, len).ok_or_else(bad)?;
        roots.push(PathBuf::from(OsStr::from_bytes(b)));
        i += 1 + len.div_ceil(8);
    }
    if records_at % 8 != 0 || records_at < i * 8 {
        return Err(bad());
    }
    // Records up to the first that is cut short or not one (the rest of
    // its chunk is unused, or the file was damaged).
    let mut records = Vec::new();
    let mut chunk = records_at / 8;
    'chunks: while word(chunk).is_some() {
        let mut at = chunk;
        while at + HEAD <= chunk + CHUNK {
            let Some(magic) = word(at) else { break 'chunks };
            let len = (magic >> 32) as usize;
            let words = HEAD + len.div_ceil(8);
            if magic & 0xffff_ffff != RECORD_MAGIC || at + words > chunk + CHUNK {
                break;
            }
            let Some(b) = text(at + HEAD, len) else {
                break 'chunks;
            };
            let w = |k: usize| word(at + k).unwrap_or_default();
            records.push(Record {
                dev: w(1),
                ino: w(2),
                before: Timestamp {
                    sec: w(3) as i64,
                    nsec: w(4) as u32,
                },
                guest: (w(4) >> 32) as usize,
                ours: w(OURS) as i64,
                busy: w(BUSY),
                rel: PathBuf::from(OsStr::from_bytes(b)),
            });
            at += words;
        }
        chunk += CHUNK;
    }
    Ok((roots, records))
}

fn restore(roots: &[PathBuf], records: &[Record]) -> (u64, Vec<Problem>) {
    let mut opened: Vec<Option<io::Result<OwnedFd>>> = roots.iter().map(|_| None).collect();
    let mut restored = 0;
    let mut problems = Vec::new();
    for r in records {
        let Some(root) = roots.get(r.guest) else {
            continue;
        };
        let root_fd = match opened[r.guest].get_or_insert_with(|| sys::open_dir(root)) {
            Ok(fd) => fd,
            Err(e) => {
                if !problems.iter().any(|p: &Problem| p.path == *root) {
                    let what = format!(
                        "a killed run changed directory mtimes beneath this guest root, \
                         which cannot be opened now ({e}); they were not put back"
                    );
                    problems.push(Problem::new(root, what));
                }
                continue;
            }
        };
        match restore_one(root_fd.as_fd(), r) {
            Ok(done) => restored += u64::from(done),
            Err(e) => problems.push(Problem::new(
                root.join(&r.rel),
                format!("cannot put back the mtime a killed run changed: {e}"),
            )),
        }
    }
    (restored, problems)
}

fn restore_one(root: BorrowedFd, r: &Record) -> io::Result<bool> {
    let Some((dir, st)) = super::dirtimes::open_noted(root, &r.rel, (r.dev, r.ino))? else {
        return Ok(false);
    };
    if st.mtime == r.before {
        return Ok(false);
    }
    // No change done yet: any mtime but the one before is that of the
    // change under way, if there is one.
    let ours = match r.ours {
        UNSET => i128::MIN,
        ns => i128::from(ns),
    };
    let now = st.mtime.as_nanos();
    if now == ours || r.busy > 0 {
        sys::set_mtime(dir.as_fd(), r.before)?;
        return Ok(true);
    }
    Ok(false)
}

fn nanos(t: Timestamp) -> Option<i64> {
    i64::try_from(t.as_nanos()).ok().filter(|&n| n != UNSET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mtime(path: &Path) -> Timestamp {
        let m = std::fs::symlink_metadata(path).unwrap();
        Timestamp {
            sec: m.mtime(),
            nsec: m.mtime_nsec() as u32,
        }
    }

    const OLD: Timestamp = Timestamp { sec: 1000, nsec: 7 };

    /// A directory `rel` of `root` with an old mtime, noted in `j`.
    fn noted(j: &Journal, root: &Path, rel: &str) -> Slot {
        let p = root.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        sys::lutimens(&p, OLD, OLD).unwrap();
        let st = sys::lstat(&p).unwrap();
        j.note(st.dev, st.ino, st.mtime, 0, Path::new(rel)).unwrap()
    }

    /// A change of `rel`, as a swap makes one, between `begin` and `end`.
    fn change(slot: &Slot, root: &Path, rel: &str, finish: bool) {
        slot.begin();
        std::fs::write(root.join(rel).join("x"), b"").unwrap();
        std::fs::remove_file(root.join(rel).join("x")).unwrap();
        if finish {
            slot.end(mtime(&root.join(rel)));
        }
    }

    #[test]
    fn the_next_run_puts_back_what_a_killed_run_changed() {
        let store_tmp = tempfile::tempdir().unwrap();
        let tmp = sys::open_dir(store_tmp.path()).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let root = guest.path();
        let j = Journal::create(tmp.as_fd(), &[root]).unwrap();
        // Changed and recorded; changed twice; killed mid-change; changed
        // by the guest after our last change; replaced by another inode;
        // a long path.
        let long = format!("deep/{}", "d".repeat(200));
        for rel in ["a", "b", "c", "d", "e", long.as_str()] {
            let slot = noted(&j, root, rel);
            change(&slot, root, rel, rel != "c");
            if rel == "b" {
                change(&slot, root, rel, true);
            }
        }
        let later = Timestamp { sec: 5000, nsec: 0 };
        sys::lutimens(&root.join("d"), later, later).unwrap();
        std::fs::rename(root.join("e"), root.join("e.old")).unwrap();
        std::fs::create_dir(root.join("e")).unwrap();
        let e_new = mtime(&root.join("e"));
        drop(j); // killed: nothing put back, the file stays
        assert_ne!(mtime(&root.join("a")), OLD);

        let a_dir = sys::lstat(&root.join("a")).unwrap();
        let (restored, killed, problems) = recover(tmp.as_fd(), store_tmp.path());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(restored, 4);
        assert_eq!(killed.len(), 6, "{killed:?}");
        assert!(killed.contains_key(&(std::process::id(), a_dir.dev, a_dir.ino)));
        for rel in ["a", "b", "c", long.as_str()] {
            assert_eq!(mtime(&root.join(rel)), OLD, "{rel}");
        }
        assert_eq!(
            mtime(&root.join("d")),
            later,
            "the guest's later change stays"
        );
        assert_eq!(mtime(&root.join("e")), e_new, "another inode is left alone");
        assert_ne!(
            mtime(&root.join("e.old")),
            OLD,
            "not followed to its new name"
        );
        // The run's file is gone; the directories it changed are kept
        // until a run removed the temp names it left there.
        let names: Vec<_> = std::fs::read_dir(store_tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from("dirtimes-left")]);
        let (_, kept, _) = recover(tmp.as_fd(), store_tmp.path());
        assert_eq!(kept, killed);
        keep_killed(tmp.as_fd(), &KilledDirs::new()).unwrap();
        assert_eq!(std::fs::read_dir(store_tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_with_a_future_mtime_gets_it_back() {
        // An mtime later than now (clock skew, a tarball's): our change
        // leaves an earlier one, which must still count as ours.
        let store_tmp = tempfile::tempdir().unwrap();
        let tmp = sys::open_dir(store_tmp.path()).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let root = guest.path();
        let future = Timestamp {
            sec: 4_000_000_000,
            nsec: 0,
        }; // 2096
        let j = Journal::create(tmp.as_fd(), &[root]).unwrap();
        std::fs::create_dir(root.join("f")).unwrap();
        sys::lutimens(&root.join("f"), future, future).unwrap();
        let st = sys::lstat(&root.join("f")).unwrap();
        let slot = j.note(st.dev, st.ino, st.mtime, 0, Path::new("f")).unwrap();
        // As DirTimes does: ours is what the change left.
        slot.begin();
        std::fs::write(root.join("f/x"), b"").unwrap();
        slot.end(mtime(&root.join("f")));
        drop(j);
        let (restored, _, problems) = recover(tmp.as_fd(), store_tmp.path());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(mtime(&root.join("f")), future, "restored {restored}");
    }

    #[test]
    fn a_damaged_file_is_reported_not_trusted() {
        let store_tmp = tempfile::tempdir().unwrap();
        let tmp = sys::open_dir(store_tmp.path()).unwrap();
        let words = |ws: &[u64]| ws.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
        // A root "length" past the end of everything; a start of records
        // inside the roots.
        let bad = [
            words(&[FILE_MAGIC, 4096, 1, u64::MAX]),
            words(&[FILE_MAGIC, 8, 1, 1, 0x2f]),
        ];
        for (k, bytes) in bad.iter().enumerate() {
            std::fs::write(store_tmp.path().join(format!("dirtimes-{k}")), bytes).unwrap();
        }
        let (restored, killed, problems) = recover(tmp.as_fd(), store_tmp.path());
        assert_eq!(restored, 0);
        assert_eq!(problems.len(), 2, "{problems:?}");
        // Their runs' temp names are known by pid alone, kept for the run
        // that looks for them.
        let mut keys: Vec<_> = killed.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [(0, ANY_DIR, ANY_DIR), (1, ANY_DIR, ANY_DIR)]);
        let left: Vec<_> = std::fs::read_dir(store_tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [OsString::from(format!("{PREFIX}{LEFT}"))]);
        assert_eq!(read_left(tmp.as_fd(), &left[0]).unwrap(), killed);
    }

    #[test]
    fn records_fill_several_chunks_and_a_cut_record_is_ignored() {
        let store_tmp = tempfile::tempdir().unwrap();
        let tmp = sys::open_dir(store_tmp.path()).unwrap();
        let guest = tempfile::tempdir().unwrap();
        let root = guest.path();
        let j = Journal::create(tmp.as_fd(), &[root]).unwrap();
        // 600 records of about 480 words: three chunks.
        let deep = vec!["n".repeat(250); 15].join("/");
        let mut slots = Vec::new();
        for k in 0..600 {
            let rel = format!("{k}/{deep}");
            slots.push((rel.clone(), noted(&j, root, &rel)));
        }
        for (rel, slot) in &slots {
            change(slot, root, rel, true);
        }
        // A record cut short by the kill: no magic yet.
        let last = j.note(1, 2, OLD, 0, Path::new("cut")).unwrap();
        last.map.word(last.at).store(0, Ordering::SeqCst);
        assert_eq!(j.chunks.lock().unwrap().maps.len(), 3);
        drop(j);
        let (restored, _, problems) = recover(tmp.as_fd(), store_tmp.path());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(restored, 600);
        for (rel, _) in &slots {
            assert_eq!(mtime(&root.join(rel)), OLD, "{rel}");
        }
    }

    #[test]
    fn a_run_that_put_them_back_leaves_no_file() {
        let store_tmp = tempfile::tempdir().unwrap();
        let tmp = sys::open_dir(store_tmp.path()).unwrap();
        let j = Journal::create(tmp.as_fd(), &[Path::new("/nonexistent")]).unwrap();
        assert!(j.note(1, 2, OLD, 0, Path::new("x")).is_some());
        j.remove();
        assert_eq!(std::fs::read_dir(store_tmp.path()).unwrap().count(), 0);
        // Files of other names in tmp/ are not ours; one of ours that is
        // not a record is reported, and goes.
        std::fs::write(store_tmp.path().join("dirtimes-x"), b"").unwrap();
        std::fs::write(store_tmp.path().join("dirtimes-7"), b"garbage").unwrap();
        let (restored, _, problems) = recover(tmp.as_fd(), store_tmp.path());
        assert_eq!(restored, 0);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].what.contains("cannot be read"), "{problems:?}");
        assert!(store_tmp.path().join("dirtimes-x").exists());
        assert!(!store_tmp.path().join("dirtimes-7").exists());
    }

    /// Damaged files (a fuzz-style loop, seeded: the same bytes each run),
    /// read without a panic; and a start of records near `usize::MAX`,
    /// which overflowed `i * 8` (a panic where overflow is checked: `cargo
    /// test --lib`, fuzzing).
    #[test]
    fn damaged_files_read_without_a_panic() {
        let store_tmp = tempfile::tempdir().unwrap();
        let tmp = sys::open_dir(store_tmp.path()).unwrap();
        let words = |ws: &[u64]| ws.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
        let name = OsStr::new("dirtimes-1");
        let at = |bytes: &[u8]| {
            std::fs::write(store_tmp.path().join(name), bytes).unwrap();
            let _ = read(tmp.as_fd(), name);
            let _ = read_left(tmp.as_fd(), name);
        };
        at(&words(&[FILE_MAGIC, !7, 0, 0]));
        at(&words(&[LEFT_MAGIC, 1, 2, 3, u64::MAX]));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3_000 {
            let magic = [FILE_MAGIC, LEFT_MAGIC][(next() % 2) as usize];
            let mut ws = vec![magic];
            for _ in 0..next() % 24 {
                // Small numbers (lengths, counts, offsets that land) or any.
                let w = next();
                ws.push(match w % 4 {
                    0 => w >> 58,
                    1 => RECORD_MAGIC | (w >> 60) << 32,
                    _ => w,
                });
            }
            let mut bytes = words(&ws);
            bytes.truncate(bytes.len() - (next() % 8) as usize);
            at(&bytes);
        }
    }
}
