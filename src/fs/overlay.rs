//! The overlay's operations on plain types: each resolves a node to its
//! backing entry (beneath the root fd, never through a symlink), breaks the
//! link first where the operation would change a shared inode, acts, and
//! keeps the node table in step. The fuser adapter (`fuse.rs`) only
//! translates to and from these.

mod attrflags;
mod probe;

pub use attrflags::AttrFlags;

use super::cow;
use super::dircache::{self, DirCache};
use super::inode::{BackingIno, Found, InodeTable, ROOT};
use super::sys as fsys;
use crate::sys;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

pub type Result<T> = io::Result<T>;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// A backing file the guest has open, shared by every open handle of one
/// node while it names the same backing inode (passthrough allows exactly
/// one backing file per FUSE inode).
#[derive(Debug)]
pub struct OpenInode {
    pub node: u64,
    pub backing_ino: BackingIno,
    pub fd: OwnedFd,
    /// Read-write; with O_APPEND where the file was append-only (`chattr
    /// +a`) when opened, the only way such a file opens for writing (see
    /// [`Overlay::check_append`]).
    pub writable: bool,
    /// The kernel passthrough registration, set by the adapter.
    pub backing: Mutex<Option<fuser::BackingId>>,
    /// Its I/O is served in the daemon although passthrough is on (set by
    /// the adapter, under `backing`'s lock): the kernel then holds the
    /// FUSE inode in its cached mode, and a passthrough open of it, or of
    /// another backing file under it, would fail.
    pub daemon_io: std::sync::atomic::AtomicBool,
    /// The offset alignment its direct I/O needs (see
    /// [`Overlay::check_direct`]), asked for at the first O_DIRECT request.
    pub dio_align: std::sync::OnceLock<Option<u32>>,
    /// The writeback errors the fsync of `fd` reported (see
    /// [`Overlay::fsync`]). Not held across that fsync: an open reads it,
    /// and must not wait for another handle's fsync (see `syncing`).
    wb_errors: Mutex<WritebackErrors>,
    /// Held across the fsync of `fd` and the count of its error, so that
    /// two at once cannot give an error to one handle and success to the
    /// other before it is counted.
    syncing: Mutex<()>,
    /// Its file may be a break's copy whose rename an earlier daemon of
    /// this guest made and nothing made durable since: its note died with
    /// that daemon (see [`Overlay::started`]). Cleared by the first sync
    /// of its directory.
    earlier_break: std::sync::atomic::AtomicBool,
    /// The same file opened `O_NOATIME`, for the reads we serve of handles
    /// opened with that flag (the backing fd lacks it): one per file, not
    /// per handle, and held as [`fsys::held`] says, as the backing fd is:
    /// one per handle, unchecked, let a guest opening one file again and
    /// again take every fd of the daemon.
    no_atime: std::sync::OnceLock<OwnedFd>,
}

/// Whether `at`, an end of an O_DIRECT read of the file open at `fd`
/// (`st`: its stat), is off the `align` its direct I/O needs and data
/// lies from the block `at` is in up to `until`, where ext4 refuses the
/// read (EINVAL). ext4 reads a hole, an unwritten extent and anything past
/// the end of file without a check, and checks each part it reads from
/// the disk: where it begins and ends in it, and where the caller's
/// buffer is when it gets there. So a read that ends past the block the
/// end of file is in, or lies in a hole, reads (short at the end); a
/// misaligned end inside a block of data fails, and so does a misaligned
/// start followed by data anywhere in the read (the buffer is misaligned
/// by then, xfs alike). That block is the filesystem's (`st_blksize`),
/// past the end of file up to its own end: `until` is the read's end for
/// its start, the end of its block for its end.
fn misaligned_in_data(
    fd: BorrowedFd,
    st: &libc::stat,
    at: u64,
    until: Option<u64>,
    align: u64,
) -> Result<bool> {
    if at % align == 0 {
        return Ok(false);
    }
    let block = (st.st_blksize as u64).max(align);
    let start = at - at % block;
    if start >= st.st_size as u64 {
        return Ok(false);
    }
    match fsys::lseek(fd, start as i64, libc::SEEK_DATA) {
        Ok(data) => Ok((data as u64) < until.unwrap_or(start + block)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writeback errors of a file the daemon learnt of.
#[derive(Debug, Default)]
struct WritebackErrors {
    /// How many fsyncs of the file's fd failed.
    count: u64,
    /// The errno of the last one.
    last: i32,
}

impl OpenInode {
    /// Opens [`Self::no_atime`] if not yet open: EMFILE if the daemon may
    /// not hold another fd. Where the reopen fails otherwise, the reads we
    /// serve go through the backing fd (and set the atime).
    fn open_no_atime(&self) -> Result<()> {
        if self.no_atime.get().is_some() {
            return Ok(());
        }
        let flags = libc::O_RDONLY | libc::O_NOATIME | libc::O_CLOEXEC;
        match fsys::reopen(self.fd.as_fd(), flags) {
            // A second open that raced us drops its own.
            Ok(fd) => {
                let _ = self.no_atime.set(fsys::held(fd)?);
            }
            Err(e) => tracing::debug!("no O_NOATIME fd for reads of a file: {e}"),
        }
        Ok(())
    }

    /// Whether the kernel ties the FUSE inode to this file: passthrough
    /// registered, or I/O served in the daemon under passthrough.
    pub fn has_backing(&self) -> bool {
        let backing = lock(&self.backing);
        backing.is_some() || self.daemon_io.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Handle {
    node: u64,
    file: Arc<OpenInode>,
    /// Opened to run the file (exec): it must not be truncated meanwhile.
    exec: bool,
    /// Opened `O_NOATIME`: reads we serve go through the file's
    /// [`OpenInode::no_atime`] fd, with the flag.
    no_atime: bool,
    /// The uid and gid of the open: the writer of the kernel's writeback
    /// of its mapped pages, which comes with none (see [`Overlay::writer_ids`]).
    opener_ids: (u32, u32),
    /// Its file's [`WritebackErrors::count`] when it last learnt of them
    /// (opened, or synced).
    wb_errors_seen: u64,
}

/// What a setattr changes: mode, uid, gid, size, atime, mtime.
type Changes = (
    Option<u32>,
    Option<u32>,
    Option<u32>,
    Option<u64>,
    Option<fsys::SetTime>,
    Option<fsys::SetTime>,
);

/// The kernel's `__FMODE_EXEC` in the open flags of an exec.
const FMODE_EXEC: i32 = 0x20;

#[derive(Debug)]
struct DirHandle {
    node: u64,
    dir: Arc<OpenDir>,
}

/// The backing directory of an open directory handle. Listed through its
/// fd from the offset each readdir asks for (the backing filesystem's own
/// `d_off`s), as a local filesystem lists: a handle costs one fd and no
/// copy of the listing, whatever the directory's size. Also held so that
/// an fd of a directory removed meanwhile still reaches it, as on a local
/// filesystem (it has no name left to reach it by).
#[derive(Debug)]
struct OpenDir {
    fd: OwnedFd,
    /// Held while a listing sets and reads the fd's offset.
    reading: Mutex<()>,
    /// The backing directory (device, inode) its numbering is kept by.
    key: (u64, u64),
    numbering: SharedNumbering,
}

/// The offsets handed out for one backing directory, for the backing
/// `d_off`s they stand for. ext4's own are 64-bit hashes, which a 32-bit
/// program's `readdir` takes for an overflow (EOVERFLOW) and its `telldir`
/// cuts; these are small: the visible entries counted in the backing order
/// while the directory does not change, and a new number for an entry whose
/// own another `d_off` has (after a change). Shared by all handles of the
/// directory, since the kernel's cached listing (FOPEN_CACHE_DIR) hands one
/// handle's offsets to another; a number never stands for another `d_off`
/// while kept, so an offset any handle hands back names the same place.
/// Only offsets handed out are kept (about 40 bytes each while a handle is
/// open, 8 after), so a directory costs what the guest read of it: seeked
/// far and read once, it keeps a reply's worth.
#[derive(Debug)]
struct Numbering {
    /// Runs of numbers handed out, by each run's first: `runs[first][i]` is
    /// the backing `d_off` of number `first + i`.
    runs: BTreeMap<u64, Vec<u64>>,
    /// The number of each backing `d_off` numbered, for a listing that
    /// meets it again; None (to be made from `runs`) while no handle is open.
    numbers: Option<HashMap<u64, u64>>,
    /// Numbers in `runs`.
    len: usize,
    /// The directory's mtime and ctime when numbering began.
    stamp: [i64; 4],
    /// Handles of the directory open.
    open: usize,
    /// Where it is in [`Numberings::closed`] while none is.
    closed_at: Option<u64>,
    /// The node whose cached listing (the kernel's) may hold these numbers.
    node: u64,
    /// Numbers held by all numberings ([`Overlay::numbered`]): `len` is
    /// counted in it while this one lives.
    total: Arc<AtomicUsize>,
    /// The least number it hands out anew: above every number it handed
    /// out before it began again past the budget, which handles and the
    /// kernel may still hold (and get counted, in the directory as it is).
    floor: u64,
}

impl Drop for Numbering {
    fn drop(&mut self) {
        self.total.fetch_sub(self.len, Ordering::Relaxed);
    }
}

/// The stamp of a numbering started over while its directory may have
/// changed: no directory has it, so its numbers are not taken for counts.
const STAMP_RESTARTED: [i64; 4] = [i64::MIN; 4];

type SharedNumbering = Arc<Mutex<Numbering>>;

impl Numbering {
    fn new(stamp: [i64; 4], node: u64, total: Arc<AtomicUsize>) -> Numbering {
        Numbering {
            runs: BTreeMap::new(),
            numbers: Some(HashMap::new()),
            len: 0,
            stamp,
            open: 0,
            closed_at: None,
            node,
            total,
            floor: 1,
        }
    }

    /// Numbering begins again (its handles stay open): the numbers handed
    /// out stand for nothing any more, so the kernel must drop its cached
    /// listing of `node`, and a handle's offset is counted in the directory
    /// as it is (exact while it does not change). If `above`, no number
    /// handed out before is handed out anew (until past
    /// [`LIST_OFFSETS_MAX`]), for the handles that may still hold them.
    fn restart(&mut self, stamp: [i64; 4], above: bool) {
        let floor = match above {
            true => self.floor.max(self.end()),
            false => 1,
        };
        let open = self.open;
        *self = Numbering::new(stamp, self.node, self.total.clone());
        self.open = open;
        self.floor = floor;
    }

    /// The number after the highest handed out (and kept), at least the floor.
    fn end(&self) -> u64 {
        let end = self
            .runs
            .last_key_value()
            .map_or(0, |(first, offs)| first + offs.len() as u64);
        end.max(self.floor)
    }

    /// The backing `d_off` number `n` (not 0) stands for, if handed out.
    fn get(&self, n: u64) -> Option<u64> {
        let (first, offs) = self.runs.range(..=n).next_back()?;
        offs.get(usize::try_from(n - first).ok()?).copied()
    }

    /// Number `n` (not handed out) stands for `backing` from now on.
    fn add(&mut self, n: u64, backing: u64) {
        match self.runs.range_mut(..n).next_back() {
            Some((first, offs)) if first + offs.len() as u64 == n => offs.push(backing),
            _ => {
                self.runs.insert(n, vec![backing]);
            }
        }
        self.len += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(numbers) = &mut self.numbers {
            numbers.entry(backing).or_insert(n);
        }
    }

    /// Kept with no handle open: only what the numbers stand for.
    fn compact(&mut self) {
        self.numbers = None;
        for offs in self.runs.values_mut() {
            offs.shrink_to_fit();
        }
    }

    /// The number of `backing`, the `d_off` after the entry a listing meets
    /// just after number `at`: its own if numbered, else `at + 1` if free
    /// (the count, while the directory does not change), else a new one.
    /// While it is `unchanged` since numbering began, `at + 1` is its own
    /// or free. None past [`LIST_OFFSETS_MAX`].
    fn number(&mut self, at: u64, backing: u64, unchanged: bool) -> Option<u64> {
        match self.get(at + 1) {
            Some(b) if b == backing => return Some(at + 1),
            None if unchanged && at + 1 >= self.floor => return self.take(at + 1, backing),
            _ => {}
        }
        let runs = &self.runs;
        let numbers = self.numbers.get_or_insert_with(|| {
            let mut numbers = HashMap::with_capacity(self.len);
            for (first, offs) in runs {
                for (i, off) in offs.iter().enumerate() {
                    numbers.entry(*off).or_insert(first + i as u64);
                }
            }
            numbers
        });
        if let Some(&n) = numbers.get(&backing) {
            return Some(n);
        }
        let n = match self.get(at + 1) {
            None if at + 1 >= self.floor => at + 1,
            _ => self.end(),
        };
        self.take(n, backing)
    }

    /// [`Numbering::add`] within [`LIST_OFFSETS_MAX`].
    fn take(&mut self, n: u64, backing: u64) -> Option<u64> {
        if n > LIST_OFFSETS_MAX as u64 || self.len >= LIST_OFFSETS_MAX {
            return None;
        }
        self.add(n, backing);
        Some(n)
    }
}

/// The numberings of backing directories: of each with a handle open, and
/// of up to [`CLOSED_NUMBERED_DIRS`] (with up to [`CLOSED_NUMBERED_MAX`]
/// numbers in all, 8 bytes each) whose handles all closed, since the
/// kernel's cached listing outlives them and a handle opened later reads
/// its offsets from there (a second walk of a tree reads every listing from
/// there). A numbering dropped has the kernel drop that listing.
#[derive(Debug, Default)]
struct Numberings {
    all: HashMap<(u64, u64), SharedNumbering>,
    /// Those with no handle open, by when their last closed.
    closed: BTreeMap<u64, (u64, u64)>,
    closings: u64,
    /// Numbers those keep.
    closed_len: usize,
}

impl Numberings {
    /// Drops the numbering of `key`, taken off [`Numberings::closed`]: the
    /// node whose cached listing the kernel is to drop with it.
    fn drop_closed(&mut self, key: &(u64, u64)) -> Option<u64> {
        let old = self.all.remove(key)?;
        let old = lock(&old);
        self.closed_len -= old.len;
        Some(old.node)
    }
}

const CLOSED_NUMBERED_DIRS: usize = 1 << 14;
const CLOSED_NUMBERED_MAX: usize = 1 << 20;

/// The most numbers all numberings hold, open and closed (about 40 bytes
/// each while a handle is open: some 170 MB at worst): past it the closed
/// ones go first, oldest first, then the largest are started over, till
/// half is left. An open handle's numbering grows with each new name
/// listed after a change, so without it a guest churning names under a
/// handle held open (in as many directories as it likes) grew the daemon
/// without bound. 4 M numbers list twenty 200,000-entry directories at
/// once, each with any number of handles, without a restart; a restart
/// only makes the handles count their offsets in the directory as it is.
const NUMBERED_MAX: usize = 1 << 22;

/// The most offsets a directory's numbering holds, and the largest (a
/// 32-bit program's `telldir` takes offsets below 2^31): a listing that
/// needs a new one past it starts the numbering over (only a listing of a
/// directory with more visible entries than that gets EOVERFLOW).
const LIST_OFFSETS_MAX: usize = 1 << 24;

/// Where an offset not handed out stands (a number a program seeked to, as
/// `lseek(fd, 199990)`): the backing `d_off` after every
/// [`MARK_EVERY`]th visible entry of a directory, counted once while it
/// does not change and shared by its handles, so that such an offset costs
/// about what a reply of a sequential listing costs, not the whole way
/// there again. Kept for up to [`MARKED_DIRS`] directories (1/16 of the
/// entries' offsets: 12 KiB for 200,000 entries) after their handles
/// close: a program that opens, seeks far and closes in a loop has the
/// way there counted once.
#[derive(Debug)]
struct Marks {
    /// The backing directory's mtime and ctime when counted.
    stamp: [i64; 4],
    offs: Vec<u64>,
}

type SharedMarks = Arc<Mutex<Marks>>;

const MARK_EVERY: u64 = 128;
const MARKED_DIRS: usize = 64;

/// The first `getdents` buffer of a listing; each next one is twice the
/// last, up to [`LIST_CHUNK_MAX`]: a reply that takes few entries (a small
/// reader's buffer) reads little more than it sends.
const LIST_CHUNK_MIN: usize = 4096;
const LIST_CHUNK_MAX: usize = 64 * 1024;

#[derive(Debug)]
struct State {
    table: InodeTable,
    /// The open backing file of each node, while any handle has it open.
    open_inodes: HashMap<u64, Weak<OpenInode>>,
}

/// One entry as the guest sees it: node number and stat of the backing
/// entry, with the link count of a shared file hidden.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub node: u64,
    pub st: libc::stat,
}

/// How `open` came out.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    pub file: Arc<OpenInode>,
}

#[derive(Debug)]
pub struct Overlay {
    root: OwnedFd,
    /// Deep directories held as starting points (`None`: no clone of the
    /// root's mount to check them with; every path from the root).
    dir_cache: Option<DirCache>,
    state: Mutex<State>,
    handles: Mutex<HashMap<u64, Handle>>,
    dirs: Mutex<HashMap<u64, DirHandle>>,
    /// Of backing directories (device, inode) listed from afar.
    marks: Mutex<HashMap<(u64, u64), SharedMarks>>,
    numberings: Mutex<Numberings>,
    closed_numbered_dirs: usize,
    /// Numbers held by all numberings, and the most kept ([`NUMBERED_MAX`]).
    numbered: Arc<AtomicUsize>,
    numbered_max: usize,
    next_fh: AtomicU64,
    /// Breaks are rare and short next to the copy; one at a time keeps two
    /// writers of one shared path from copying it twice.
    break_lock: Mutex<()>,
    /// Taken for writing by a rename or unlink from its backing change
    /// until the node table shows it, and for reading by what reaches a
    /// node by its name in the table and acts on what that name is on disk
    /// (getattr, getxattr, listxattr): else, in between, the name is gone
    /// (an fstat of an open file failed with ENOENT) or names another file
    /// (whose attributes the node got). The kernel keeps lookups and
    /// setattr out by its own locks, but not these.
    names: std::sync::RwLock<()>,
    /// Held for reading by each change of a directory's entries or times
    /// made for the guest (create, mknod, mkdir, symlink, link, unlink,
    /// rmdir, rename, utimes), around its system call only; for writing by
    /// a break from just before its first change of its directory (and its
    /// check that the name is still the file it copied) until it put the
    /// directory's mtime back, so that it never puts back an mtime over a
    /// change of the guest's nor renames its copy over one
    /// (`cow::break_link`).
    dir_changes: std::sync::RwLock<()>,
    pub passthrough: std::sync::atomic::AtomicBool,
    /// For telling the kernel to forget names (set once mounted).
    pub notifier: std::sync::OnceLock<fuser::Notifier>,
    /// Mounted `ro`: the daemon changes nothing in the backing tree either.
    read_only: bool,
    /// Mounted `ro` or `noatime`: files and directories are read through
    /// O_NOATIME fds, so that reads (passthrough's too: they go through our
    /// backing fd) leave the backing access times alone.
    no_atime: bool,
    /// Private copies (by backing inode number) made since their
    /// directory was last synced: the break's rename may not be on disk
    /// yet, and a guest's fsync or fdatasync must make it so, or a power
    /// cut would put the old file back under the name, without the data the
    /// guest had synced. Known by inode, not node: a split gives the path a
    /// new node. At most [`UNSYNCED_BREAKS_MAX`]: then a syncfs makes them
    /// all durable.
    unsynced_breaks: Mutex<UnsyncedBreaks>,
    unsynced_breaks_max: usize,
    /// How long after a failed syncfs the first retry waits.
    syncfs_retry: std::time::Duration,
    /// When the daemon started (CLOCK_REALTIME, as ctimes: seconds and
    /// nanoseconds): a guest's first fsync of a file changed before then
    /// syncs its directory (see [`Self::changed_before_start`]).
    started: (i64, i64),
    /// The pid that opened each file handle, where FUSE gave one (see
    /// [`Self::held_after_releases`]).
    openers: Mutex<HashMap<u64, u32>>,
    /// File handles an fd of was closed (a FLUSH came): the close of the
    /// last one returns before the kernel sends its release, so a process
    /// may close a file and change it before we know it is closed.
    flushed: Mutex<HashSet<u64>>,
    /// Releases so far, and their signal, for waiting on one.
    releases: Mutex<u64>,
    released: std::sync::Condvar,
    /// A thread waits for releases ([`Self::held_after_releases`]).
    release_waiter: std::sync::atomic::AtomicBool,
}

/// How long a release that may be on its way is waited for.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What holds a node's file (or program) up: nothing, handles whose openers
/// all still run, or handles that may be released any moment (these).
enum Hold {
    Free,
    Held,
    Releasing(Vec<u64>),
}

/// The one thread waiting for releases, while it lives.
struct ReleaseWaiter<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> ReleaseWaiter<'a> {
    fn take(flag: &'a std::sync::atomic::AtomicBool) -> Option<Self> {
        let free = flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed);
        free.is_ok().then_some(ReleaseWaiter(flag))
    }
}

impl Drop for ReleaseWaiter<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Whether process (or thread) `pid` still runs: not gone, not a zombie.
/// A task that exited closed its files before it became a zombie. Unknown
/// (0: FUSE's pid of a process outside the daemon's PID namespace, as of a
/// daemon started in a container, the host's processes) may run: its
/// handles are held, not waited on for a release that may never come (100
/// ms each, the one waiter's, while a real release waited for nobody) and
/// then forgotten. Its close still says itself (a FLUSH).
fn process_alive(pid: u32) -> bool {
    if pid == 0 {
        return true;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X' | 'x') | None)
}

thread_local! {
    /// This thread serves a create, whose directory the kernel holds locked.
    static IN_CREATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How many broken files may wait for a guest's fsync to sync their
/// directory (see `Overlay::unsynced_breaks`).
const UNSYNCED_BREAKS_MAX: usize = 10_000;

/// How long the first retry of a failed syncfs of many unsynced breaks
/// waits; each further failure doubles it, up to [`SYNCFS_RETRY_MAX`].
const SYNCFS_RETRY_FIRST_MS: usize = 10_000;
const SYNCFS_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(600);

/// Private copies whose break's rename may not be durable yet (see
/// `Overlay::unsynced_breaks`).
#[derive(Debug, Default)]
struct UnsyncedBreaks {
    /// Complete copies about to be renamed over their names: noted before
    /// the rename, so that an fsync right after it finds the note, but no
    /// syncfs takes them until it is done (one begun before the rename
    /// would not make it durable).
    placing: HashSet<BackingIno>,
    /// Noted since the last syncfs began.
    noted: HashSet<BackingIno>,
    /// Noted before the syncfs under way: durable once it returns.
    syncing: HashSet<BackingIno>,
    /// A syncfs is under way (one at a time).
    under_way: bool,
    /// After a failed syncfs: when the next may run, and how long the one
    /// after that waits if it fails too. A syncfs waits for all the dirty
    /// data of the backing filesystem; one that keeps failing (a failing
    /// disk) is not tried again at every break.
    retry: Option<(std::time::Instant, std::time::Duration)>,
    /// The error of the last syncfs, if it failed: said once, not at
    /// every retry that fails the same way.
    failing: Option<i32>,
}

impl UnsyncedBreaks {
    fn contains(&self, ino: &BackingIno) -> bool {
        self.placing.contains(ino) || self.noted.contains(ino) || self.syncing.contains(ino)
    }

    fn remove(&mut self, ino: &BackingIno) {
        self.placing.remove(ino);
        self.noted.remove(ino);
        self.syncing.remove(ino);
    }

    /// Whether a syncfs of the notes is due now: `max` of them or more,
    /// none under way, and not waiting to retry one that failed.
    fn syncfs_due(&self, max: usize) -> bool {
        let waiting = self
            .retry
            .is_some_and(|(at, _)| std::time::Instant::now() < at);
        self.noted.len() >= max && !self.under_way && !waiting
    }

    /// Takes the outcome of a syncfs that covered `batch`: kept noted if it
    /// failed, and the next try put off.
    fn synced(
        &mut self,
        synced: io::Result<()>,
        batch: HashSet<BackingIno>,
        first_wait: std::time::Duration,
    ) {
        let e = match synced {
            Ok(()) => {
                self.retry = None;
                if self.failing.take().is_some() {
                    tracing::warn!(
                        "syncfs of the backing filesystem works again: the renames of the \
                         breaks noted before it are durable"
                    );
                }
                return;
            }
            Err(e) => e,
        };
        self.noted.extend(batch);
        let wait = self
            .retry
            .map_or(first_wait, |(_, wait)| (wait * 2).min(SYNCFS_RETRY_MAX));
        self.retry = Some((std::time::Instant::now() + wait, wait));
        let raw = e.raw_os_error().unwrap_or(0);
        if self.failing.replace(raw) != Some(raw) {
            tracing::warn!(
                "syncfs of the backing filesystem: {e}; the renames of {} breaks nobody synced \
                 may not be durable yet (a guest's fsync of one of those files still makes it \
                 so). Tried again in {wait:?}, then less often while it keeps failing, said \
                 again only if it fails otherwise or works again; see `dmesg` for the disk's \
                 errors",
                self.noted.len(),
            );
        } else {
            tracing::debug!("syncfs of the backing filesystem failed again: {e}");
        }
    }
}

/// The time now by CLOCK_REALTIME, the clock of files' ctimes.
fn realtime_now() -> (i64, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() as i64, i64::from(now.subsec_nanos()))
}

/// [`Overlay::moved`]'s errno; no operation of ours returns it otherwise.
const MOVED: i32 = libc::ERESTART;

/// Sleeps for `UNIFS_TEST_SYNCFS_PAUSE_MS` (read once; unset: not at all)
/// before the syncfs that makes many unsynced breaks durable: the tests'
/// stand-in for a slow one.
fn test_syncfs_pause() {
    crate::sys::test_pause!("UNIFS_TEST_SYNCFS_PAUSE_MS");
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_lock(m: &std::sync::RwLock<()>) -> std::sync::RwLockReadGuard<'_, ()> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock(m: &std::sync::RwLock<()>) -> std::sync::RwLockWriteGuard<'_, ()> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// Who made a request, for the few checks the kernel leaves to us.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    /// Whether the caller is in group `gid` (primary or supplementary) or
    /// may act as if (CAP_FSETID: uid 0 alone is not enough, a guest's root
    /// may lack it), as the kernel's `in_group_or_capable` asks. FUSE
    /// passes no supplementary groups nor capabilities: they come from
    /// /proc; if that cannot be read, yes.
    fn in_group_or_capable(&self, gid: u32) -> bool {
        if self.gid == gid {
            return true;
        }
        let Some(status) = self.status() else {
            return true;
        };
        let in_group = status_field(&status, "Groups:")
            .is_some_and(|g| g.split_whitespace().any(|g| g.parse() == Ok(gid)));
        in_group || self.capable(&status, CAP_FSETID)
    }

    /// The set-ID bits a truncation or write by the caller takes off a regular file,
    /// as the kernel's `setattr_should_drop_suidgid` decides: set-user-ID,
    /// and set-group-ID if group-executable or of a group the caller is not
    /// in; none if the caller has CAP_FSETID. If /proc cannot tell, uid 0
    /// counts as having it.
    fn set_id_bits_to_drop(&self, st: &libc::stat) -> u32 {
        let mode = st.st_mode;
        let mut drop = mode & libc::S_ISUID;
        if mode & libc::S_ISGID != 0
            && (mode & libc::S_IXGRP != 0 || !self.in_group_or_capable(st.st_gid))
        {
            drop |= libc::S_ISGID;
        }
        if drop == 0 {
            return 0;
        }
        let capable = match self.status() {
            Some(status) => self.capable(&status, CAP_FSETID),
            None => self.uid == 0,
        };
        if capable {
            0
        } else {
            drop
        }
    }

    /// Whether the caller may see `trusted.` xattrs: CAP_SYS_ADMIN in the
    /// initial user namespace, which a local filesystem asks for (uid 0
    /// alone is not enough: a guest's root lacks it). If /proc cannot tell,
    /// uid 0 counts as having it.
    fn sees_trusted(&self) -> bool {
        match self.status() {
            Some(status) => self.capable(&status, CAP_SYS_ADMIN),
            None => self.uid == 0,
        }
    }

    /// The caller's `/proc/PID/status`.
    fn status(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()
    }

    /// Whether the caller, whose `/proc/PID/status` is `status`, holds
    /// capability `cap` over our files: in effect, and in our own user
    /// namespace. A process in a user namespace of its own (`unshare -Ur`)
    /// has every capability there, but none over files outside it. If the
    /// namespaces cannot be read, uid 0 decides.
    fn capable(&self, status: &str, cap: u32) -> bool {
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
        let same_ns = match (ns(&self.pid.to_string()), ns("self")) {
            (Some(a), Some(b)) => a == b,
            _ => self.uid == 0,
        };
        same_ns && has_cap(status, cap)
    }
}

const CAP_FSETID: u32 = 4;
const CAP_SYS_ADMIN: u32 = 21;

/// The value of a `/proc/PID/status` line.
fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

/// Whether a `/proc/PID/status` shows capability `cap` in effect.
fn has_cap(status: &str, cap: u32) -> bool {
    cap_in(status, "CapEff:", cap)
}

/// Whether a `/proc/PID/status` shows capability `cap` permitted.
fn has_permitted(status: &str, cap: u32) -> bool {
    cap_in(status, "CapPrm:", cap)
}

fn cap_in(status: &str, set: &str, cap: u32) -> bool {
    status_field(status, set)
        .and_then(|c| u64::from_str_radix(c, 16).ok())
        .is_some_and(|c| c & (1 << cap) != 0)
}

/// A directory's mtime and ctime: any change of its entries moves them.
fn stamp_of(st: &libc::stat) -> [i64; 4] {
    [st.st_mtime, st.st_mtime_nsec, st.st_ctime, st.st_ctime_nsec]
}

fn is_reg(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// Runs `make`, a syscall that makes a new entry, a name or an xattr for a
/// guest's request, with the caller's filesystem ids: ext4 grants root's
/// reserved blocks, xfs and quotas charge the inode, and the kernel sets a
/// new entry's owner and group (a set-group-ID directory's group, or the
/// caller's), by them, as for the caller's own syscall. Only the ids
/// change (`with_fs_ids` keeps the capabilities): the backing filesystem's
/// permission checks pass as they did for root, which matters where the
/// kernel let the caller in by a supplementary group (it checked them,
/// `default_permissions`; FUSE does not pass them to us, so the backing
/// filesystem could not). Guest root (uid and gid 0) switches nothing.
fn as_caller<T>(uid: u32, gid: u32, make: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    sys::fsids::with_fs_ids(uid, gid, make)
}

impl Overlay {
    /// An overlay over the backing directory open at `root`.
    pub fn new(root: OwnedFd, read_only: bool, no_atime: bool) -> Result<Overlay> {
        let st = fsys::fstat(root.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(errno(libc::ENOTDIR));
        }
        Ok(Overlay {
            dir_cache: DirCache::new(root.as_fd()),
            root,
            state: Mutex::new(State {
                table: InodeTable::new(BackingIno::of(&st)),
                open_inodes: HashMap::new(),
            }),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            marks: Mutex::new(HashMap::new()),
            numberings: Mutex::new(Numberings::default()),
            // A lower bound for tests (tests/it/fs/review_s22_readdir.rs).
            closed_numbered_dirs: sys::test_bound!(
                "UNIFS_TEST_CLOSED_NUMBERED_DIRS",
                CLOSED_NUMBERED_DIRS
            ),
            numbered: Arc::new(AtomicUsize::new(0)),
            // Lowered for tests too (tests/it/fs/review_s22_readdir.rs).
            numbered_max: sys::test_bound!("UNIFS_TEST_NUMBERED_MAX", NUMBERED_MAX),
            next_fh: AtomicU64::new(1),
            break_lock: Mutex::new(()),
            names: std::sync::RwLock::new(()),
            dir_changes: std::sync::RwLock::new(()),
            passthrough: std::sync::atomic::AtomicBool::new(false),
            notifier: std::sync::OnceLock::new(),
            read_only,
            no_atime: read_only || no_atime,
            unsynced_breaks: Mutex::new(UnsyncedBreaks::default()),
            // A lower bound for tests (tests/it/fs/power.rs).
            unsynced_breaks_max: sys::test_bound!(
                "UNIFS_TEST_UNSYNCED_BREAKS_MAX",
                UNSYNCED_BREAKS_MAX
            ),
            syncfs_retry: std::time::Duration::from_millis(sys::test_bound!(
                "UNIFS_TEST_SYNCFS_RETRY_MS",
                SYNCFS_RETRY_FIRST_MS
            ) as u64),
            started: realtime_now(),
            openers: Mutex::new(HashMap::new()),
            flushed: Mutex::new(HashSet::new()),
            releases: Mutex::new(0),
            released: std::sync::Condvar::new(),
            release_waiter: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn node_count(&self) -> usize {
        lock(&self.state).table.len()
    }

    /// Opens the directory that is node `dir` (O_PATH), beneath the root:
    /// a deep one from the nearest held ancestor (see [`dircache`]).
    fn open_dir_node(&self, dir: u64) -> Result<OwnedFd> {
        let Some(cache) = &self.dir_cache else {
            let parts = lock(&self.state).table.path(dir);
            let rel: PathBuf = parts.ok_or_else(|| errno(libc::ENOENT))?.iter().collect();
            return sys::open_beneath(self.root.as_fd(), &rel, libc::O_PATH | libc::O_DIRECTORY);
        };
        loop {
            let epoch = cache.epoch();
            let (from, steps) = lock(&self.state)
                .table
                .path_from(dir, dircache::SHALLOW, |n, ino| cache.holds(n, ino))
                .ok_or_else(|| errno(libc::ENOENT))?;
            if from == ROOT {
                if steps.len() <= dircache::SHALLOW {
                    let rel: PathBuf = steps.iter().map(|s| &s.name).collect();
                    let flags = libc::O_PATH | libc::O_DIRECTORY;
                    return sys::open_beneath(self.root.as_fd(), &rel, flags);
                }
                return cache.open(self.root.as_fd(), None, &steps, epoch);
            }
            // Gone from the tree or the mount table changed: dropped, and
            // the way is looked for again (at worst from the root).
            if let Some(held) = cache.start(from) {
                return cache.open(self.root.as_fd(), Some(&held), &steps, epoch);
            }
        }
    }

    /// The backing entry of a node: its parent directory fd and its name
    /// (the root is "." in itself).
    fn entry_of(&self, node: u64) -> Result<(OwnedFd, OsString)> {
        self.named_entry(node).map(|(_, dir, name)| (dir, name))
    }

    /// [`Self::entry_of`] with the parent node the name is in.
    fn named_entry(&self, node: u64) -> Result<(u64, OwnedFd, OsString)> {
        if node == ROOT {
            let fd = sys::open_beneath(self.root.as_fd(), std::path::Path::new(""), libc::O_PATH)?;
            return Ok((ROOT, fd, OsString::from(".")));
        }
        let (parent, name) = {
            let st = lock(&self.state);
            let n = st.table.get(node).ok_or_else(|| errno(libc::ESTALE))?;
            // A node split off its path still has kernel dentries (other
            // names of a hardlinked file): ESTALE makes the kernel look
            // those names up again, which finds the new node.
            let gone = if n.split { libc::ESTALE } else { libc::ENOENT };
            n.names.first().cloned().ok_or_else(|| errno(gone))?
        };
        Ok((parent, self.open_dir_node(parent)?, name))
    }

    /// Whether (parent, name) still names node `node` in the table: an
    /// open holds no lock on the directory, so a rename through the mount
    /// may have put another file there since the open found its entry.
    fn still_named(state: &State, node: u64, parent: u64, name: &OsStr) -> bool {
        node == ROOT || state.table.child(parent, name) == Some(node)
    }

    /// Refuses (EXDEV) an entry that is the root of a mount: a file or
    /// directory the host bind-mounted onto a name of the backing tree.
    /// Reached by name from its parent's fd it is the mounted one, outside
    /// the backing tree, which the daemon never reads or changes (and a
    /// break would copy it). EXDEV, as for a path through a mounted
    /// directory, which [`sys::open_beneath`] does not cross. The root
    /// (`.`) may itself be a mount: it is the guest's.
    fn refuse_mounted(dir: BorrowedFd, name: &OsStr) -> Result<()> {
        if name == "." {
            return Ok(());
        }
        match sys::stat_entry(dir, name) {
            Ok((_, true)) => Err(errno(libc::EXDEV)),
            // Gone or unreadable: the call itself says so.
            _ => Ok(()),
        }
    }

    /// The error of a step of `open` that found the node's name moved (see
    /// [`Self::still_named`]): `open` tries again at the node's new name, as
    /// ext4 opens the file the path led to wherever it went. Internal: it
    /// never reaches the kernel.
    fn moved() -> io::Error {
        errno(MOVED)
    }

    /// What the guest is shown. A shared file's link count, ctime and atime
    /// are the store object's, moved by every guest that links, reads or
    /// breaks it: the guest sees one link, and its times as of the last
    /// change to the content (invariant 5; like a noatime mount).
    fn shown(&self, node: u64, mut st: libc::stat, shared: bool) -> Entry {
        if shared {
            st.st_nlink = 1;
            (st.st_ctime, st.st_ctime_nsec) = (st.st_mtime, st.st_mtime_nsec);
            (st.st_atime, st.st_atime_nsec) = (st.st_mtime, st.st_mtime_nsec);
        }
        Entry { node, st }
    }

    /// True for a regular file with more than one link: only such a file
    /// is checked for the store's marker for what the guest is shown.
    fn linked(st: &libc::stat) -> bool {
        is_reg(st) && st.st_nlink > 1
    }

    /// What the guest is shown of a file it unlinked but holds open: a
    /// store object's other links are not its own (invariant 5).
    fn shown_unlinked(&self, node: u64, f: &OpenInode) -> Result<Entry> {
        let shared = cow::has_marker(f.fd.as_fd())?;
        let mut e = self.shown(node, fsys::fstat(f.fd.as_fd())?, shared);
        if shared {
            e.st.st_nlink = 0;
        }
        Ok(e)
    }

    /// Looks `name` up in `parent`; takes one kernel lookup reference.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        let dir = self.open_dir_node(parent)?;
        self.lookup_in(&dir, parent, name)
    }

    /// The node of directory `node`'s parent, as `..` in its listing shows
    /// it (the root's is the root).
    pub fn parent_of(&self, node: u64) -> u64 {
        let st = lock(&self.state);
        let parent = st.table.get(node).and_then(|n| n.names.first());
        parent.map_or(ROOT, |(p, _)| *p)
    }

    /// The attributes of node `node`, whose backing directory is open at `dir`.
    pub fn dir_attr(&self, node: u64, dir: &OwnedFd) -> Result<Entry> {
        Ok(self.shown(node, fsys::fstat(dir.as_fd())?, false))
    }

    /// Looks `name` up in `parent`, whose backing directory is open at `dir`.
    pub fn lookup_in(&self, dir: &OwnedFd, parent: u64, name: &OsStr) -> Result<Entry> {
        if name.len() > 255 {
            return Err(errno(libc::ENAMETOOLONG));
        }
        if cow::is_temp(dir.as_fd(), name) {
            return Err(errno(libc::ENOENT));
        }
        // The kernel revalidates a cached name with a lookup that holds no
        // lock on its directory, so a rename, unlink or create through the
        // mount can run meanwhile: what this stat found must not reach the
        // table after their updates. Renames and unlinks are kept out by
        // `names`; a create is seen by stat'ing again under the table's lock.
        let _names = read_lock(&self.names);
        let mut attempts = 0;
        loop {
            let st = match fsys::stat_at(dir.as_fd(), name) {
                Ok(st) => st,
                Err(e) => {
                    if e.raw_os_error() == Some(libc::ENOENT) {
                        let mut state = lock(&self.state);
                        if fsys::stat_at(dir.as_fd(), name)
                            .is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
                        {
                            state.table.detach(parent, name);
                        }
                    }
                    return Err(e);
                }
            };
            if Self::linked(&st) {
                lookup_test_pause();
            }
            let shared = cow::is_shared(dir.as_fd(), name, &st, true)?;
            if !shared {
                self.drop_stale_index(parent, name, BackingIno::of(&st));
            }
            let found = Found {
                ino: BackingIno::of(&st),
                shared,
            };
            let mut state = lock(&self.state);
            attempts += 1;
            if attempts < 8 && Self::outdated(&state, dir.as_fd(), parent, name, found) {
                continue;
            }
            let node = state.table.lookup(parent, name, found);
            return Ok(self.shown(node, st, shared));
        }
    }

    /// Whether what a lookup saw at (parent, name), `found`, is older than
    /// the table's node there: a break renames its copy over the name, then
    /// binds the node to it, holding none of the lookup's locks. Put in the
    /// table, it bound the node back to the store object, taken for a
    /// private file where the marker was read after the break's rename (a
    /// write open then met the object's read-only file, a reader's, as the
    /// node's one backing file: ETXTBSY). Looked at again, under the table's
    /// lock, only where the table differs from `found`. (getattr needs no
    /// such look: it reads the table after its stat, so a break bound there
    /// already renamed before getattr reads the marker, and the copy has none.)
    fn outdated(state: &State, dir: BorrowedFd, parent: u64, name: &OsStr, found: Found) -> bool {
        let node = state
            .table
            .child(parent, name)
            .and_then(|id| state.table.get(id));
        node.is_some_and(|n| (n.backing_ino, n.shared) != (found.ino, found.shared))
            && fsys::stat_at(dir, name).map_or(true, |st| BackingIno::of(&st) != found.ino)
    }

    /// Before a private inode found at (parent, name) joins the node the
    /// table has it indexed under (a hardlink of the guest): that node's
    /// names must still name it. Unify replaces files behind the mount's
    /// back and frees their inodes, whose numbers the filesystem gives to
    /// new files; such a file joining the replaced one's node had its opens
    /// land on the replaced one's path. A name that cannot be checked (its
    /// directory unreachable) counts as naming it.
    fn drop_stale_index(&self, parent: u64, name: &OsStr, ino: BackingIno) {
        let id = {
            let state = lock(&self.state);
            match state.table.indexed(ino) {
                Some((id, names))
                    if !names.is_empty() && state.table.child(parent, name) != Some(id) =>
                {
                    id
                }
                _ => return,
            }
        };
        // One name at a time, stopping at the first that still names it:
        // a file the guest linked many times (thousands of names) must not
        // cost a copy of them all on each new link.
        for i in 0.. {
            let Some((p, n)) = lock(&self.state)
                .table
                .get(id)
                .and_then(|node| node.names.get(i).cloned())
            else {
                break;
            };
            let Ok(dir) = self.open_dir_node(p) else {
                return;
            };
            match fsys::stat_at(dir.as_fd(), &n) {
                Ok(st) if BackingIno::of(&st) != ino => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                _ => return,
            }
        }
        lock(&self.state).table.unindex(ino, id);
    }

    pub fn forget(&self, node: u64, n: u64) {
        lock(&self.state).table.forget(node, n);
    }

    /// Attributes of a node: fresh from the backing entry (sizes after
    /// passthrough writes live there), or from an open file of it.
    pub fn getattr(&self, node: u64, fh: Option<u64>) -> Result<Entry> {
        // An open file answers while it is what the node stands for (after
        // a break through a path, the path is).
        let open = fh.and_then(|fh| lock(&self.handles).get(&fh).map(|h| h.file.clone()));
        if let Some(f) = open.filter(|f| f.node == node) {
            let known = lock(&self.state)
                .table
                .get(node)
                .map(|n| (n.backing_ino, n.shared, n.names.is_empty()));
            match known {
                Some((ino, shared, _)) if ino == f.backing_ino => {
                    let st = fsys::fstat(f.fd.as_fd())?;
                    // Unify may have made this very inode a store object
                    // behind the mount (see below).
                    let now_shared = !shared && Self::linked(&st) && cow::has_marker(f.fd.as_fd())?;
                    if now_shared {
                        lock(&self.state).table.mark_shared(node, ino);
                    }
                    return Ok(self.shown(node, st, shared || now_shared));
                }
                Some((_, _, true)) | None => return self.shown_unlinked(node, &f),
                _ => {}
            }
        }
        let names = read_lock(&self.names);
        match self.entry_of(node) {
            Ok((dir, name)) => {
                let st = match fsys::stat_at(dir.as_fd(), &name) {
                    Ok(st) => st,
                    // Gone behind the mount's back, but maybe still open.
                    Err(e) => {
                        drop(names);
                        return self.unnamed_attr(node, e);
                    }
                };
                let known = lock(&self.state)
                    .table
                    .get(node)
                    .map(|n| (n.backing_ino, n.shared));
                let ino = BackingIno::of(&st);
                // A node the table has private is checked again where its
                // inode has other links (as a lookup checks it): unify may
                // have linked it to the store behind the mount, this very
                // inode (the first guest's copy becomes the object) or
                // another. Trusted, it showed the store's link count and
                // times (invariant 5), and lost its number once the kernel
                // forgot it. The guest's own hardlinks cost a getxattr.
                let shared = match known {
                    Some((k, true)) if k == ino => true,
                    _ => cow::is_shared(dir.as_fd(), &name, &st, true)?,
                };
                if shared && known.is_some_and(|k| k != (ino, true)) {
                    let mut state = lock(&self.state);
                    if state.table.get(node).is_some_and(|n| n.backing_ino == ino) {
                        state.table.mark_shared(node, ino);
                    } else {
                        state.table.relinked(node, Found { ino, shared });
                    }
                }
                Ok(self.shown(node, st, shared))
            }
            Err(e) => {
                drop(names);
                self.unnamed_attr(node, e)
            }
        }
    }

    /// Attributes of a node whose name led nowhere (`e`): unlinked, or
    /// split off its path (below), but maybe still open: a program's fstat
    /// reaches us without its handle.
    fn unnamed_attr(&self, node: u64, e: io::Error) -> Result<Entry> {
        if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)) {
            return Err(e);
        }
        let file = lock(&self.state)
            .open_inodes
            .get(&node)
            .and_then(Weak::upgrade);
        match file {
            Some(f) => self.shown_unlinked(node, &f),
            None => match self.removed_dir(node) {
                Some(fd) => Ok(self.shown(node, fsys::fstat(fd.as_fd())?, false)),
                None => Err(e),
            },
        }
    }

    /// An fd of directory node `node` that has no name left (removed) but
    /// is open: a program's fstat, fchmod and f*xattr reach us without
    /// its handle.
    fn removed_dir(&self, node: u64) -> Option<OwnedFd> {
        let dirs = lock(&self.dirs);
        let d = dirs.values().find(|d| d.node == node)?;
        d.dir.fd.try_clone().ok()
    }

    /// Makes the node's backing entry private if it is a store object.
    /// With `parent`, the name must still be the node's when the break is
    /// done (ESTALE if a rename put another file there meanwhile: the
    /// kernel then looks the path up again). `truncate`: (parent, size) of
    /// a truncation the break is for; the copy then holds only the data
    /// the truncation keeps (an O_TRUNC open of a large file needs no
    /// space nor time for a copy of it).
    fn make_private(
        &self,
        node: u64,
        parent: Option<u64>,
        dir: BorrowedFd,
        name: &OsStr,
        truncate: Option<(u64, u64)>,
    ) -> Result<()> {
        // Most changes are to private files: they do not wait for another
        // file's break (a 1 GiB copy and its fsync) to check. Not shared
        // now is not shared after the lock either (a break does not make a
        // file shared; unify's marking is caught after the open).
        let st = fsys::stat_at(dir, name)?;
        if !is_reg(&st) || !cow::is_shared(dir, name, &st, false)? {
            if let Some(p) = parent {
                self.note_private(node, p, dir, name, &st)?;
            }
            return Ok(());
        }
        let _guard = lock(&self.break_lock);
        // An open holds no lock on the name, so a rename through the mount
        // may put another file there meanwhile. A short copy (O_TRUNC) is
        // made only while renames and unlinks wait, else it could cut
        // another file's data; a full one is checked after the break, and
        // `names` keeps a rename's table update from landing between that
        // check and ours. (setattr and link hold the inode locked in the
        // kernel, which keeps renames of its names out.) Taken once: a
        // second read lock of one thread waits behind a waiting writer.
        let early = parent.is_some() && truncate.is_some();
        let _early = early.then(|| read_lock(&self.names));
        let st = fsys::stat_at(dir, name)?;
        if !is_reg(&st) || !cow::is_shared(dir, name, &st, false)? {
            // Broken while we waited: by a break that rebound another node
            // (a rename through the mount gave it this name meanwhile), this
            // one left bound to the store object. As above, or a write open
            // met that object's read-only file, a reader's, and ETXTBSY.
            drop((_early, _guard));
            if let Some(p) = parent {
                self.note_private(node, p, dir, name, &st)?;
            }
            return Ok(());
        }
        // An open that finds the node's old file still held fails after
        // the break (see usable_open_inode): its copy keeps all the data,
        // since that open never truncates (a magic link's retry reaches
        // the same node and fails too).
        let keep = match truncate {
            Some((p, size)) => {
                let state = lock(&self.state);
                let held = parent.is_some()
                    && state
                        .open_inodes
                        .get(&node)
                        .is_some_and(|w| w.strong_count() > 0);
                match Self::still_named(&state, node, p, name) && !held {
                    true => size,
                    false => u64::MAX,
                }
            }
            None => u64::MAX,
        };
        self.check_dir_unlocked(node, dir, name)?;
        let (new_ino, replaced) = self.break_noted(dir, name, keep).inspect_err(|e| {
            static LOG: super::LogLimit = super::LogLimit::new(10);
            if LOG.allows() {
                tracing::warn!(
                    node,
                    ?name,
                    "could not give the guest a private copy: {e} (logged at most 10 times a minute)"
                );
            }
        })?;
        tracing::debug!(node, ?name, ?new_ino, "broke link to shared object");
        // Open handles keep the old inode; an open that needs the new one
        // sorts out passthrough's one-backing-file rule (see open_inode).
        let _late = (parent.is_some() && !early).then(|| read_lock(&self.names));
        let mut state = lock(&self.state);
        if let Some(p) = parent {
            let here = fsys::stat_at(dir, name).map(|st| BackingIno::of(&st)).ok();
            if !Self::still_named(&state, node, p, name) || here != Some(new_ino) {
                if here == Some(new_ino) {
                    let copied = Found {
                        ino: BackingIno::of(&replaced),
                        shared: Self::linked(&replaced),
                    };
                    Self::rebind_misled(&mut state, p, name, copied, new_ino);
                }
                return Err(Self::moved());
            }
        }
        state.table.rebind_private(node, new_ino);
        drop((state, _late, _early, _guard));
        self.sync_unsynced_breaks();
        Ok(())
    }

    /// A break whose name a rename through the mount gave another node
    /// meanwhile copied that node's file, `new_ino` now at (parent, name):
    /// binds that node to the copy, as its own break would, if the table
    /// has it shared, or private under that one name (a marked file with
    /// one link, which the break freed). Left bound to its store object, a
    /// hardlink the guest made of it joined the copy under another node
    /// (two numbers for one file) until a lookup or an open bound it; left
    /// bound to the freed inode, the copy lost the node's number once the
    /// kernel forgot it. A private node with several names is a file the
    /// guest hardlinked itself, never a store object (unify leaves such
    /// groups alone; a link breaks first): a break copies nothing of it.
    /// With no node there (the kernel forgot it after the rename), the
    /// copy keeps the number the table keeps for `copied`, the file it
    /// replaced, for the next lookup (invariant 5).
    fn rebind_misled(
        state: &mut State,
        parent: u64,
        name: &OsStr,
        copied: Found,
        new_ino: BackingIno,
    ) {
        let other = state.table.child(parent, name);
        if other.is_none() && copied.ino != new_ino {
            state.table.copied_unseen(parent, name, copied, new_ino);
            return;
        }
        let stale = other
            .and_then(|o| state.table.get(o))
            .is_some_and(|n| n.backing_ino != new_ino && (n.shared || n.names.len() == 1));
        if let (Some(other), true) = (other, stale) {
            state.table.rebind_private(other, new_ino);
        }
    }

    /// Binds `node` to the private file `st` its name names where the table
    /// still has it shared, as a break does. A break through a name that a
    /// rename through the mount had just given another node broke that
    /// node's file and left it bound to the store object; an open of it
    /// then took the object's read-only file, which readers still held,
    /// for the node's one backing file, and a write open failed with
    /// ETXTBSY. Bound to the copy, the node is split off its path instead
    /// (ESTALE: the kernel looks the path up again), as after a break.
    /// "Moved" if a rename took the node's name away meanwhile (the file
    /// at it is another node's): open tries again at the node's new name,
    /// whose store object it breaks, rather than take that object's
    /// read-only file for a write (ETXTBSY).
    fn note_private(
        &self,
        node: u64,
        parent: u64,
        dir: BorrowedFd,
        name: &OsStr,
        st: &libc::stat,
    ) -> Result<()> {
        let ino = BackingIno::of(st);
        let stale = |state: &State| {
            let node = state.table.get(node);
            is_reg(st) && node.is_some_and(|n| n.shared && n.backing_ino != ino)
        };
        if !stale(&lock(&self.state)) {
            return Ok(());
        }
        let _names = read_lock(&self.names);
        let mut state = lock(&self.state);
        if !stale(&state) {
            return Ok(());
        }
        if !Self::still_named(&state, node, parent, name) {
            return Err(Self::moved());
        }
        let here = fsys::stat_at(dir, name).map(|st| BackingIno::of(&st));
        if here.ok() == Some(ino) {
            state.table.rebind_private(node, ino);
        }
        Ok(())
    }

    /// EPERM, logged with its cause, where the directory's inode flags
    /// forbid the break's rename (`chattr +i` or `+a`, set on the host;
    /// never taken off by us): before the copy, which would be in vain.
    fn check_dir_unlocked(&self, node: u64, dir: BorrowedFd, name: &OsStr) -> Result<()> {
        let Some(why) = cow::locked_dir(dir) else {
            return Ok(());
        };
        let path: PathBuf = lock(&self.state)
            .table
            .path(node)
            .map_or_else(|| name.into(), |p| p.iter().collect());
        static LOG: super::LogLimit = super::LogLimit::new(10);
        if LOG.allows() {
            tracing::warn!(
                node,
                "cannot give the guest a private copy of shared file {}: its directory is \
                 {why}, so the file cannot be replaced there; the guest's change fails with \
                 EPERM. To let it be changed, take the flag off and put it back through the \
                 mount (chattr -i -a DIR; chattr +i DIR, or +a, as root with \
                 CAP_LINUX_IMMUTABLE): set through the mount, the flag first gives the \
                 directory's shared files private copies (logged at most 10 times a minute)",
                crate::sys::shown(&path)
            );
        }
        Err(errno(libc::EPERM))
    }

    /// Runs `change`, a change of a directory's entries or times made for
    /// the guest, under [`Overlay::dir_changes`] read-locked.
    fn changing<T>(&self, change: impl FnOnce() -> T) -> T {
        let _changing = read_lock(&self.dir_changes);
        change()
    }

    /// Breaks `name` in `dir` (see [`cow::break_link`]), noting its copy
    /// before the rename that puts it in place: a guest's fsync of the file
    /// (through another open, which finds the copy at the name) right
    /// after the rename must sync the directory. Noted after it, as before
    /// 2026-12-05, an fsync in between found no note and returned with the
    /// rename not durable: a power cut brought the old file back, without
    /// the synced data. A copy the break did not put in place is forgotten.
    /// The caller holds no `dir_changes` (an unlink holds the notes' lock
    /// while it waits for that).
    fn break_noted(
        &self,
        dir: BorrowedFd,
        name: &OsStr,
        keep: u64,
    ) -> Result<(BackingIno, libc::stat)> {
        let mut copies = Vec::new();
        let broken = cow::break_link(dir, name, keep, &self.dir_changes, &mut |copy| {
            lock(&self.unsynced_breaks).placing.insert(copy);
            copies.push(copy);
        });
        let placed = broken.as_ref().ok().map(|(ino, _)| *ino);
        if !copies.is_empty() {
            let mut unsynced = lock(&self.unsynced_breaks);
            for copy in copies {
                // Not there any more: the guest synced it (after the
                // rename) or removed it.
                if unsynced.placing.remove(&copy) && Some(copy) == placed {
                    unsynced.noted.insert(copy);
                }
            }
        }
        broken
    }

    /// Runs a syncfs of the backing filesystem once a guest has broken many
    /// files and synced none ([`UNSYNCED_BREAKS_MAX`]), which bounds the
    /// notes. The notes it covers are kept (`syncing`) until it returned,
    /// so that an fsync of one of those files meanwhile syncs its directory
    /// itself rather than return early; the lock is not held across it: a
    /// syncfs waits for all the filesystem's dirty data, and an unlink or
    /// rename takes this lock with the name lock held, which every name
    /// operation of the mount waits for. Notes made meanwhile wait for the
    /// next syncfs, one at a time; after a failed one, they are kept and
    /// the next waits (see [`UnsyncedBreaks::retry`]). Callers hold no lock
    /// of the mount (the name lock least of all) for the same reason.
    fn sync_unsynced_breaks(&self) {
        let mut unsynced = lock(&self.unsynced_breaks);
        if !unsynced.syncfs_due(self.unsynced_breaks_max) {
            return;
        }
        unsynced.syncing = std::mem::take(&mut unsynced.noted);
        unsynced.under_way = true;
        drop(unsynced);
        test_syncfs_pause();
        let synced = fsys::syncfs(self.root.as_fd());
        let mut unsynced = lock(&self.unsynced_breaks);
        unsynced.under_way = false;
        let batch = std::mem::take(&mut unsynced.syncing);
        unsynced.synced(synced, batch, self.syncfs_retry);
    }

    /// Runs `remove`, which takes away `last`, the last name of a file (if
    /// any), and forgets that file's break if it was noted: no rename of
    /// it is left to make durable. dpkg breaks every shared file it
    /// replaces (its backup hardlink) and removes the copy a moment later;
    /// kept, those notes filled the set and cost a syncfs of the whole
    /// backing filesystem every [`UNSYNCED_BREAKS_MAX`] files. The set
    /// stays locked across a noted file's removal, so that no break of a
    /// new file given its freed number is noted before it is forgotten.
    fn removing_last(
        &self,
        last: Option<libc::stat>,
        remove: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let Some(ino) = last.filter(is_reg).map(|st| BackingIno::of(&st)) else {
            return remove();
        };
        let mut unsynced = lock(&self.unsynced_breaks);
        if !unsynced.contains(&ino) {
            drop(unsynced);
            return remove();
        }
        remove()?;
        unsynced.remove(&ino);
        Ok(())
    }

    /// Opens a regular file. A write access (or O_TRUNC) breaks the link
    /// first; the marker is re-read on the opened fd because unify may have
    /// made the file shared while the open waited for its lease.
    pub fn open(&self, node: u64, flags: i32, caller: Caller) -> Result<Opened> {
        let acc = flags & libc::O_ACCMODE;
        let want_write = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        // The open does the truncation (ATOMIC_O_TRUNC), and for a read-only
        // open before the kernel checks that the file is not running.
        // (For a write open the kernel checks itself, before asking us.)
        if acc == libc::O_RDONLY && flags & libc::O_TRUNC != 0 && self.running(node) {
            return Err(errno(libc::ETXTBSY));
        }
        // A node with no name left: still open (unlinked, reopened through
        // /proc/PID/fd; or replaced by a rename after the kernel looked its
        // path up), its open file serves, as ext4 opens the inode the
        // lookup found. Else ESTALE has the kernel look the path up again
        // and open the file there now (an unlink ends in ENOENT there).
        let (mut parent, mut dir, mut name) = match self.named_entry(node) {
            Ok(entry) => entry,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return match self.usable_open_inode(node, want_write) {
                    Ok(Some(file)) => self.finish_open(node, file, flags, caller, want_write),
                    Ok(None) => Err(errno(libc::ESTALE)),
                    // Its open file is a store object (read-only, readers
                    // hold it), which no write reaches and no name is left
                    // to give a private copy: ESTALE, as for a split node,
                    // not ETXTBSY (no program runs).
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && self.object_open(node) => {
                        Err(errno(libc::ESTALE))
                    }
                    Err(e) => Err(e),
                };
            }
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) && !want_write => {
                return match self.split_open_inode(node) {
                    Some(file) => self.finish_open(node, file, flags, caller, false),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let mut moves = 0;
        for _ in 0..16 {
            Self::refuse_mounted(dir.as_fd(), &name)?;
            let step = if want_write {
                let truncate = (flags & libc::O_TRUNC != 0).then_some((parent, 0));
                let split = match truncate {
                    Some(_) => self.split_if_held(node),
                    None => Ok(()),
                };
                split.and_then(|()| {
                    self.make_private(node, Some(parent), dir.as_fd(), &name, truncate)
                })
            } else {
                Ok(())
            };
            let step =
                step.and_then(|()| self.open_inode(node, parent, dir.as_fd(), &name, want_write));
            let file = match step {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
                Err(e) if e.raw_os_error() == Some(MOVED) => {
                    // Renamed meanwhile: after a few moves, let the kernel
                    // look the path up again (ESTALE) rather than chase it.
                    moves += 1;
                    if moves > 8 {
                        return Err(errno(libc::ESTALE));
                    }
                    // A node left without a name (replaced by the rename):
                    // the kernel looks the path up again.
                    (parent, dir, name) =
                        self.named_entry(node).map_err(|_| errno(libc::ESTALE))?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            return self.finish_open(node, file, flags, caller, want_write);
        }
        Err(errno(libc::EBUSY))
    }

    /// An O_TRUNC open of a shared node whose store object other handles
    /// still hold would split the node off its path after the break (see
    /// [`Self::usable_open_inode`]) and fail with ESTALE, its short copy
    /// under the name. Split it first, before anything is changed: an open
    /// by path is looked up again and breaks the path's new node (a short
    /// copy still); one through a magic link (`/proc/PID/fd/N`) reaches
    /// this node again and fails, the file as it was, not emptied. (Without
    /// O_TRUNC the break comes first, a full copy: the retry by path then
    /// finds the path private, and no reader can split it again.)
    fn split_if_held(&self, node: u64) -> Result<()> {
        let held_object = || {
            let state = lock(&self.state);
            let file = state.open_inodes.get(&node).and_then(Weak::upgrade);
            let n = state.table.get(node);
            matches!((n, file), (Some(n), Some(f)) if n.shared && f.backing_ino == n.backing_ino)
        };
        if !held_object() || self.wait_released(node).is_none() || !held_object() {
            return Ok(());
        }
        self.split_from_readers(node);
        Err(errno(libc::ESTALE))
    }

    /// Gives the path of `node`, a shared file other processes hold open
    /// (read-only, on the store object), a new node for its private copy.
    /// Their locks and inotify watches stay with the old inode, where the
    /// kernel keeps them (docs/mount.md): said in the log, so that an
    /// operator can explain a lock gone missing or a silent `tail -f`.
    fn split_from_readers(&self, node: u64) {
        let (path, names) = {
            let mut state = lock(&self.state);
            (state.table.path(node), state.table.split_off(node))
        };
        let path = path.map_or_else(
            || format!("node {node}"),
            |p| {
                let p: Vec<_> = p.iter().map(|c| c.to_string_lossy()).collect();
                format!("/{}", p.join("/"))
            },
        );
        tracing::info!(
            "{path}: a write open gave this shared file a private copy while other processes \
             held it open for reading: they keep the old file, and with it their locks and \
             inotify watches on it, which the path's new file does not have (see docs/mount.md)"
        );
        self.forget_attrs(node);
        self.forget_names(names);
    }

    /// The rest of [`Self::open`], once it has the node's open file: the
    /// append-only check, the truncation, and the handle.
    fn finish_open(
        &self,
        node: u64,
        file: Arc<OpenInode>,
        flags: i32,
        caller: Caller,
        want_write: bool,
    ) -> Result<Opened> {
        if want_write {
            Self::check_append(&file, flags)?;
            // Synced writes through passthrough never reach us as an
            // fsync: the rename that put this copy under the name must be
            // durable before the first of them is.
            if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
                self.sync_break(&file)?;
            }
        }
        // Truncate before the handle exists: an error after it would
        // leave a handle the kernel never releases.
        if want_write && flags & libc::O_TRUNC != 0 {
            fsys::ftruncate(file.fd.as_fd(), 0)?;
            // The kernel takes set-ID bits off for a truncate(2), but
            // leaves it to us for the open that truncates; we are root,
            // so the backing filesystem kept them.
            let st = fsys::fstat(file.fd.as_fd())?;
            let drop = caller.set_id_bits_to_drop(&st);
            if drop != 0 {
                sys::fchmod(file.fd.as_fd(), st.st_mode & 0o7777 & !drop)?;
            }
        }
        // (Passthrough opens its own backing file with the caller's
        // flags; this one serves reads that do not go through it.)
        let no_atime = flags & libc::O_NOATIME != 0 && !self.no_atime;
        if no_atime {
            file.open_no_atime()?;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let wb_errors_seen = lock(&file.wb_errors).count;
        lock(&self.state).table.opened(node);
        lock(&self.handles).insert(
            fh,
            Handle {
                node,
                file: file.clone(),
                exec: flags & FMODE_EXEC != 0,
                no_atime,
                opener_ids: (caller.uid, caller.gid),
                wb_errors_seen,
            },
        );
        Ok(Opened { fh, file })
    }

    /// A write open of an append-only file (`chattr +a`) needs O_APPEND
    /// and no O_TRUNC (EPERM), as on ext4, judged by the flag the inode has
    /// now: the backing fd may be older than a `chattr` on the host. One
    /// opened O_APPEND while the file was append-only loses O_APPEND once
    /// it is not, so that the writes of a handle without O_APPEND land
    /// where they are made (a handle with O_APPEND still appends: its
    /// writes carry the flag through passthrough, and the kernel gives the
    /// daemon the end of the file as their offset).
    fn check_append(file: &OpenInode, flags: i32) -> Result<()> {
        let fd = file.fd.as_fd();
        if sys::inode_flags(fd)? & sys::FS_APPEND_FL != 0 {
            if flags & libc::O_APPEND == 0 || flags & libc::O_TRUNC != 0 {
                return Err(errno(libc::EPERM));
            }
            return Ok(());
        }
        let fl = fsys::fcntl_getfl(fd)?;
        if fl & libc::O_APPEND != 0 {
            // EPERM if the flag came back meanwhile.
            fsys::fcntl_setfl(fd, fl & !libc::O_APPEND)?;
        }
        Ok(())
    }

    /// Whether a handle opened to run node `node` is open: at once if its
    /// program still runs; if its process has exited, its release may be
    /// on its way (a close's comes after the fact), which gets a moment
    /// (see [`Self::held_after_releases`]).
    fn running(&self, node: u64) -> bool {
        self.held_after_releases(|| {
            let handles = lock(&self.handles);
            let exec = handles.iter().filter(|(_, h)| h.node == node && h.exec);
            self.hold(exec.map(|(fh, _)| *fh).collect())
        })
    }

    /// Whether the handles `fhs` hold something up, and which of them may
    /// be released any moment (their openers have exited, or closed an fd
    /// of them).
    fn hold(&self, fhs: Vec<u64>) -> Hold {
        if fhs.is_empty() {
            return Hold::Free;
        }
        let releasing: Vec<u64> = {
            let openers = lock(&self.openers);
            let flushed = lock(&self.flushed);
            let opener = |fh| openers.get(fh).copied();
            fhs.iter()
                .filter(|fh| {
                    flushed.contains(fh) || opener(fh).is_some_and(|pid| !process_alive(pid))
                })
                .copied()
                .collect()
        };
        if releasing.is_empty() {
            Hold::Held
        } else {
            Hold::Releasing(releasing)
        }
    }

    /// Whether `hold()` still finds something held, after waiting up to
    /// [`RELEASE_WAIT`] for releases that may be on their way: a process
    /// that exited (or closed its fd) has the kernel send our release
    /// after the fact. Without such a release in sight, at once. One
    /// thread waits at a time, and a handle waited for in vain is not
    /// waited for again (a child of its opener may hold it): FUSE workers
    /// are few, and no user may keep them waiting.
    fn held_after_releases(&self, hold: impl Fn() -> Hold) -> bool {
        let deadline = std::time::Instant::now() + RELEASE_WAIT;
        let mut waiter = None;
        loop {
            let seen = *lock(&self.releases);
            let releasing = match hold() {
                Hold::Free => return false,
                Hold::Held => return true,
                Hold::Releasing(fhs) => fhs,
            };
            if waiter.is_none() {
                match ReleaseWaiter::take(&self.release_waiter) {
                    Some(w) => waiter = Some(w),
                    None => return true,
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                let mut openers = lock(&self.openers);
                let mut flushed = lock(&self.flushed);
                for fh in releasing {
                    openers.remove(&fh);
                    flushed.remove(&fh);
                }
                return true;
            }
            let count = lock(&self.releases);
            if *count == seen {
                let wait = self.released.wait_timeout(count, deadline - now);
                drop(wait.unwrap_or_else(|p| p.into_inner()));
            }
        }
    }

    /// Notes who opened handle `fh` (the pid FUSE gave; 0 if unknown): if
    /// it exits, the handle's release may be on its way.
    pub fn note_opener(&self, fh: u64, pid: u32) {
        if lock(&self.handles).contains_key(&fh) {
            lock(&self.openers).insert(fh, pid);
        }
    }

    /// The file a node split off its path still has open (its old readers'
    /// fds), for a read-only open of that node: an fd reopened through
    /// `/proc/self/fd`, as ext4 reopens the inode a rename replaced, or an
    /// open whose lookup came just before the split. Never for writing:
    /// that file is the store's (a write open stays ESTALE).
    fn split_open_inode(&self, node: u64) -> Option<Arc<OpenInode>> {
        let split = lock(&self.state).table.get(node).is_some_and(|n| n.split);
        split.then(|| self.current_open_inode(node)).flatten()
    }

    /// Whether the node's open backing file is a store object.
    fn object_open(&self, node: u64) -> bool {
        let file = self.current_open_inode(node);
        file.is_some_and(|f| cow::has_marker(f.fd.as_fd()).unwrap_or(false))
    }

    /// The node's open backing file, reusing the one open handles use.
    fn open_inode(
        &self,
        node: u64,
        parent: u64,
        dir: BorrowedFd,
        name: &OsStr,
        want_write: bool,
    ) -> Result<Arc<OpenInode>> {
        for attempt in 0..16 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if let Some(f) = self.usable_open_inode(node, want_write)? {
                return Ok(f);
            }
            let shared = {
                let state = lock(&self.state);
                state
                    .table
                    .get(node)
                    .ok_or_else(|| errno(libc::ESTALE))?
                    .shared
            };
            let file = Arc::new(self.open_backing_file(node, dir, name, shared, want_write)?);
            let marked = cow::has_marker(file.fd.as_fd())?;
            if marked && file.writable {
                // Unify made it a store object while we opened it (the open
                // waited for its lease): never keep a writable fd on it.
                let ino = file.backing_ino;
                drop(file);
                let _names = read_lock(&self.names);
                let mut state = lock(&self.state);
                if !Self::still_named(&state, node, parent, name) {
                    return Err(Self::moved());
                }
                state.table.set_backing(node, ino, true);
                drop(state);
                if want_write {
                    return Err(errno(libc::EAGAIN)); // the caller breaks it first
                }
                continue;
            }
            // Register it only if the path still names the inode we opened
            // and no other open of the node got in first: the kernel takes
            // one backing file per FUSE inode, and a second one means EIO.
            // `names` keeps a rename's backing change and its table update
            // together as seen from here: in between, the name names the
            // rename's source, and the node would be bound to that file
            // (the open landing on it; two numbers for its hardlinks).
            let _names = read_lock(&self.names);
            let mut state = lock(&self.state);
            if !Self::still_named(&state, node, parent, name) {
                // A rename put another file at the name: it is not this
                // node's.
                return Err(Self::moved());
            }
            let now = fsys::stat_at(dir, name)?;
            if BackingIno::of(&now) != file.backing_ino {
                continue; // a break or a rename got in between
            }
            if let Some(f) = state.open_inodes.get(&node).and_then(Weak::upgrade) {
                if f.backing_ino == file.backing_ino && (f.writable || !want_write) {
                    return Ok(f);
                }
                if f.has_backing() {
                    continue; // sorted out by usable_open_inode
                }
            }
            state.table.set_backing(node, file.backing_ino, marked);
            state.open_inodes.insert(node, Arc::downgrade(&file));
            return Ok(file);
        }
        Err(errno(libc::EBUSY))
    }

    /// The node's open backing file if an open may share it. Errors when it
    /// cannot: ESTALE if handles still use an inode the path no longer names
    /// (they keep the node; ESTALE makes the VFS look the path up again and
    /// find a new one), ETXTBSY if a write needs the one read-only backing
    /// file. `None`: open a new one.
    fn usable_open_inode(&self, node: u64, want_write: bool) -> Result<Option<Arc<OpenInode>>> {
        let cur_ino = |s: &Self| -> Result<BackingIno> {
            let state = lock(&s.state);
            Ok(state
                .table
                .get(node)
                .ok_or_else(|| errno(libc::ESTALE))?
                .backing_ino)
        };
        let Some(f) = self.current_open_inode(node) else {
            return Ok(None);
        };
        if f.backing_ino == cur_ino(self)? && (f.writable || !want_write) {
            return Ok(Some(f));
        }
        drop(f);
        // A close sends its release to us after the fact: give releases in
        // flight a moment before treating the old file as still open.
        let Some(f) = self.wait_released(node) else {
            return Ok(None);
        };
        let cur = cur_ino(self)?;
        if f.backing_ino == cur && (f.writable || !want_write) {
            return Ok(Some(f));
        }
        if f.backing_ino != cur {
            // Handles on the old inode share the FUSE inode's page cache,
            // and passthrough allows one backing file per FUSE inode.
            self.split_from_readers(node);
            return Err(errno(libc::ESTALE));
        }
        if f.has_backing() {
            // Same inode, but its one backing file is read-only (it was busy
            // as a running program when opened).
            return Err(errno(libc::ETXTBSY));
        }
        Ok(None)
    }

    /// Opens the node's backing file: a shared one (a store object: marked)
    /// read-only; a private one read-write when possible, so that later
    /// write opens can share it.
    fn open_backing_file(
        &self,
        node: u64,
        dir: BorrowedFd,
        name: &OsStr,
        shared: bool,
        want_write: bool,
    ) -> Result<OpenInode> {
        // An O_PATH probe first: the guest may have renamed a FIFO (or a
        // device its tree brought) to the name since its lookup, and a
        // real open of that would wait for a writer for good (or act on
        // the device). The opens below reopen this very inode.
        let probe = sys::open_at(dir, name, libc::O_PATH, 0)?;
        let st = fsys::fstat(probe.as_fd())?;
        if !is_reg(&st) {
            return Err(errno(libc::EINVAL));
        }
        let reopen = |flags| self.reopen_for_reading(probe.as_fd(), flags);
        // `shared` is the table's word, which may be older than the inode
        // at the name: a break renames its copy there before it updates the
        // table. The marker of the inode opened decides, or a read open in
        // between made the copy's one backing file read-only, and write
        // opens failed with ETXTBSY while it stayed open.
        let mut object = None;
        if shared && !want_write {
            let fd = reopen(libc::O_RDONLY)?;
            if cow::has_marker(fd.as_fd())? {
                object = Some(fd);
            }
        }
        let (fd, writable) = if let Some(fd) = object {
            (fd, false)
        } else {
            let rdwr = |append| reopen(libc::O_RDWR | append);
            match rdwr(0) {
                Ok(fd) => (fd, true),
                Err(e) => match (e.raw_os_error(), want_write) {
                    (Some(libc::EPERM), _) if let Ok(fd) = rdwr(libc::O_APPEND) => (fd, true),
                    (_, true) => return Err(e),
                    (_, false) => (reopen(libc::O_RDONLY)?, false),
                },
            }
        };
        let fd = fsys::held(fd)?;
        // The reopened fd is the probe's inode: its stat stands.
        Ok(OpenInode {
            node,
            backing_ino: BackingIno::of(&st),
            fd,
            writable,
            backing: Mutex::new(None),
            daemon_io: std::sync::atomic::AtomicBool::new(false),
            dio_align: std::sync::OnceLock::new(),
            wb_errors: Mutex::default(),
            syncing: Mutex::new(()),
            earlier_break: std::sync::atomic::AtomicBool::new(self.changed_before_start(&st)),
            no_atime: std::sync::OnceLock::new(),
        })
    }

    /// Reopens the inode open at `probe` (O_PATH) for a backing fd that
    /// reads it: with O_NOATIME on a `ro` or `noatime` mount, where the
    /// owner or CAP_FOWNER allows it.
    fn reopen_for_reading(&self, probe: BorrowedFd, flags: i32) -> Result<OwnedFd> {
        let flags = flags | libc::O_CLOEXEC;
        if self.no_atime {
            match fsys::reopen(probe, flags | libc::O_NOATIME) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                r => return r,
            }
        }
        fsys::reopen(probe, flags)
    }

    /// `open_at` for a backing fd that reads (or lists) the entry, with
    /// O_NOATIME if `no_atime` (see [`Self::reopen_for_reading`]).
    fn open_reading(
        &self,
        dir: BorrowedFd,
        name: &OsStr,
        flags: i32,
        no_atime: bool,
    ) -> Result<OwnedFd> {
        if no_atime {
            match sys::open_at(dir, name, flags | libc::O_NOATIME, 0) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                r => return r,
            }
        }
        sys::open_at(dir, name, flags, 0)
    }

    /// Has the kernel forget the attributes it holds for `node` (a node
    /// split off its path): its old readers' `fstat` must show a file with
    /// no links, as ext4 shows a file replaced by a rename, not the one
    /// link cached for the hour the attributes are valid. Takes no lock in
    /// the kernel (page cache left alone: offset -1), so sent from here.
    fn forget_attrs(&self, node: u64) {
        if let Some(notifier) = self.notifier.get() {
            if let Err(e) = notifier.inval_inode(fuser::INodeNo(node), -1, 0) {
                tracing::debug!(node, "cannot invalidate attributes of a split file: {e}");
            }
        }
    }

    /// Has the kernel forget the dentries of `names` (a node split off its
    /// path: its other hardlink names must lead to the path's new node, for
    /// a stat by name too). On another thread, since the kernel takes each
    /// directory's lock, which someone waiting for this daemon may hold (a
    /// create we are serving does); the open that split the node waits for
    /// it up to 50 ms, so that a stat right after it finds the new node.
    fn forget_names(&self, names: Vec<(u64, OsString)>) {
        let Some(notifier) = self.notifier.get().cloned() else {
            return;
        };
        if names.is_empty() {
            return;
        }
        let (done, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("unifs-inval".into())
            .spawn(move || {
                for (parent, name) in names {
                    let _ = notifier.inval_entry(fuser::INodeNo(parent), &name);
                }
                let _ = done.send(());
            });
        match spawned {
            Ok(_) if !IN_CREATE.with(|c| c.get()) => {
                let _ = wait.recv_timeout(std::time::Duration::from_millis(50));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot invalidate names of a split file: {e}"),
        }
    }

    fn current_open_inode(&self, node: u64) -> Option<Arc<OpenInode>> {
        lock(&self.state)
            .open_inodes
            .get(&node)
            .and_then(Weak::upgrade)
    }

    /// The node's open file if it is still open once the releases that may
    /// be on their way came (see [`Self::held_after_releases`]).
    fn wait_released(&self, node: u64) -> Option<Arc<OpenInode>> {
        let held = self.held_after_releases(|| {
            let alive = lock(&self.state)
                .open_inodes
                .get(&node)
                .is_some_and(|w| w.strong_count() > 0);
            if !alive {
                return Hold::Free;
            }
            let handles = lock(&self.handles);
            let fhs: Vec<u64> = handles
                .iter()
                .filter(|(_, h)| h.node == node)
                .map(|(fh, _)| *fh)
                .collect();
            drop(handles);
            match self.hold(fhs) {
                // Open, but by no handle: a release under way right now.
                Hold::Free => Hold::Releasing(Vec::new()),
                hold => hold,
            }
        });
        held.then(|| self.current_open_inode(node)).flatten()
    }

    pub fn file(&self, fh: u64) -> Result<Arc<OpenInode>> {
        lock(&self.handles)
            .get(&fh)
            .map(|h| h.file.clone())
            .ok_or_else(|| errno(libc::EBADF))
    }

    /// Notes that an fd of handle `fh` was closed: its release may follow.
    /// (Another fd of it, a dup or a child's, may keep it open: it is then
    /// waited for once in vain, see [`Self::held_after_releases`].)
    pub fn flush(&self, fh: u64) {
        if lock(&self.handles).contains_key(&fh) {
            lock(&self.flushed).insert(fh);
        }
    }

    pub fn release(&self, fh: u64) {
        let h = lock(&self.handles).remove(&fh);
        lock(&self.openers).remove(&fh);
        lock(&self.flushed).remove(&fh);
        if let Some(h) = h {
            let node = h.node;
            drop(h);
            let mut state = lock(&self.state);
            if state
                .open_inodes
                .get(&node)
                .is_some_and(|w| w.strong_count() == 0)
            {
                state.open_inodes.remove(&node);
            }
            state.table.closed(node);
            drop(state);
            *lock(&self.releases) += 1;
            self.released.notify_all();
        }
    }

    /// An fd the handle's reads go through: its `O_NOATIME` one if it has one.
    fn read_fd(&self, fh: u64) -> Result<OwnedFd> {
        let handles = lock(&self.handles);
        let h = handles.get(&fh).ok_or_else(|| errno(libc::EBADF))?;
        let no_atime = h.no_atime.then(|| h.file.no_atime.get()).flatten();
        no_atime.unwrap_or(&h.file.fd).try_clone()
    }

    /// Reads for handle `fh`; `flags` are the open file's now (O_DIRECT
    /// asks for [`Self::check_direct`]).
    pub fn read(&self, fh: u64, offset: u64, size: u32, flags: i32) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        if flags & libc::O_DIRECT != 0 {
            Self::check_direct(&*self.file(fh)?, offset, size.into(), true)?;
        }
        let file = std::fs::File::from(self.read_fd(fh)?);
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = file.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Writes for handle `fh`; `flags` as for [`Self::read`] (none for the
    /// kernel's writeback of cached pages).
    pub fn write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        flags: i32,
        caller: Caller,
    ) -> Result<u32> {
        use std::os::unix::fs::FileExt;
        let f = self.file(fh)?;
        if !f.writable {
            return Err(errno(libc::EBADF));
        }
        if flags & libc::O_DIRECT != 0 {
            Self::check_direct(&f, offset, data.len() as u64, false)?;
        }
        let file = std::fs::File::from(f.fd.try_clone()?);
        let (uid, gid) = self.writer_ids(fh, caller);
        sys::fsids::with_fs_ids(uid, gid, || file.write_all_at(data, offset))?;
        Ok(data.len() as u32)
    }

    /// An O_DIRECT read or write we serve is refused (EINVAL) where its
    /// offset or length is not aligned as the backing file's direct I/O
    /// needs, as ext4 refuses it: the kernel's FUSE direct I/O checks
    /// none, and we do buffered I/O. A write is checked whole. A read only
    /// where ext4 checks it, at the ends of the parts it reads from the
    /// disk (see [`misaligned_in_data`]). The caller's buffer address
    /// never reaches us: a misaligned buffer passes (docs/mount.md). The
    /// kernel cuts a large request where the caller's buffer crosses a
    /// page, so its parts are aligned only as the buffer is: the smaller
    /// of the two alignments is the one asked for. One above a page is
    /// left alone: a fault in a mapping of an O_DIRECT open reads a page
    /// with the open's flags.
    fn check_direct(f: &OpenInode, offset: u64, len: u64, read: bool) -> Result<()> {
        let align = f.dio_align.get_or_init(|| {
            let (offset, mem) = sys::dio_align(f.fd.as_fd()).ok().flatten()?;
            Some(if mem == 0 { offset } else { offset.min(mem) })
        });
        let Some(align) = align.map(u64::from).filter(|a| *a <= 4096) else {
            return Ok(());
        };
        if (offset | len) % align == 0 {
            return Ok(());
        }
        if read {
            let st = fsys::fstat(f.fd.as_fd())?;
            let end = offset.saturating_add(len);
            let fd = f.fd.as_fd();
            if !misaligned_in_data(fd, &st, offset, Some(end), align)?
                && !misaligned_in_data(fd, &st, end, None, align)?
            {
                return Ok(());
            }
        }
        Err(errno(libc::EINVAL))
    }

    /// The ids a write we serve for handle `fh` runs with: its writer's
    /// (the request's), as a local filesystem charges the writer (ext4
    /// grants its root-reserved blocks by the writer's fsuid); the opener's
    /// for the kernel's writeback of mapped pages, which names nobody
    /// (pid 0).
    fn writer_ids(&self, fh: u64, caller: Caller) -> (u32, u32) {
        if caller.pid != 0 {
            return (caller.uid, caller.gid);
        }
        let handles = lock(&self.handles);
        handles
            .get(&fh)
            .map_or((caller.uid, caller.gid), |h| h.opener_ids)
    }

    /// The ids to register `file` for passthrough with, for an open with
    /// `flags` by `caller`: the kernel does the passthrough I/O of every
    /// open of the file with the credentials of the registration, while
    /// the file stays open (one backing file per FUSE inode). A write open
    /// registers with its opener's ids; a read-only one allocates nothing
    /// itself and registers with the file owner's, whoever opens it: the
    /// owner's write open is the likeliest to join it while it stays open
    /// (root's `tail -f` of a user's file must not lend that user root's
    /// reserve, nor a user's `tail -f` of root's log take it from root).
    pub fn registration_ids(&self, file: &OpenInode, flags: i32, caller: Caller) -> (u32, u32) {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if write {
            return (caller.uid, caller.gid);
        }
        match fsys::fstat(file.fd.as_fd()) {
            Ok(st) => (st.st_uid, st.st_gid),
            Err(_) => (caller.uid, caller.gid),
        }
    }

    /// Syncs the file and, the first time after a break, its directory:
    /// the break's rename is what puts the synced data under the name.
    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let f = self.file(fh)?;
        self.sync_file(fh, &f, datasync)?;
        self.sync_break(&f)
    }

    /// fsync of the backing file for handle `fh`, reporting a writeback
    /// error (a failed write of the file's dirty pages to the disk) to
    /// each handle open when it happened, once, as the kernel reports one
    /// to each open file (errseq): all handles of a file share one fd of
    /// ours, whose fsync reports it once, to whichever handle synced first.
    /// Before 2026-12-05 a guest's other open file then synced with
    /// success, its data lost, where ext4 fails both. A handle opened
    /// after the error was reported, as on ext4, does not get it. The lock
    /// is held across the fsync: the kernel sends one fsync of a FUSE
    /// inode at a time anyway (its inode lock), and two at once would give
    /// the error to one and success to the other before it is counted.
    /// Not the lock an open reads the count under: held across the fsync
    /// until 2026-12-05, it made an open of the file wait for another
    /// handle's fsync (of 1 GiB of dirty data, or on a slow disk), and
    /// four such opens held all the daemon's threads, the whole mount.
    fn sync_file(&self, fh: u64, f: &OpenInode, datasync: bool) -> Result<()> {
        let _syncing = lock(&f.syncing);
        let synced = fsys::fsync(f.fd.as_fd(), datasync);
        let mut errors = lock(&f.wb_errors);
        if let Err(e) = &synced {
            errors.count += 1;
            errors.last = e.raw_os_error().unwrap_or(libc::EIO);
        }
        let mut handles = lock(&self.handles);
        let seen = handles
            .get_mut(&fh)
            .map(|h| std::mem::replace(&mut h.wb_errors_seen, errors.count));
        match seen {
            Some(seen) if seen < errors.count && synced.is_ok() => Err(errno(errors.last)),
            _ => synced,
        }
    }

    /// Makes the rename of the break that made `f` durable, if not yet.
    fn sync_break(&self, f: &OpenInode) -> Result<()> {
        let earlier = f.earlier_break.load(Ordering::Relaxed);
        if !earlier && !lock(&self.unsynced_breaks).contains(&f.backing_ino) {
            return Ok(());
        }
        match self.named_entry(f.node) {
            Ok((_, dir, _)) => {
                let dir = sys::open_at(
                    dir.as_fd(),
                    OsStr::new("."),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )?;
                fsys::fsync(dir.as_fd(), false)?;
            }
            // No name left, or the name is another file's now (ESTALE: the
            // node was split off it): no rename of this file to keep.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)) => {}
            Err(e) => return Err(e),
        }
        f.earlier_break.store(false, Ordering::Relaxed);
        lock(&self.unsynced_breaks).remove(&f.backing_ino);
        Ok(())
    }

    /// Whether the file `st` was last changed before this daemon started
    /// (a minute's leeway, for a clock set back): it may then be a break's
    /// copy an earlier daemon of this guest renamed into place and was
    /// killed (or stopped) before anything made that rename durable. Its
    /// notes died with it, and a guest's fsync of the file through us
    /// found none and returned with the rename not durable: a power cut
    /// brought the old shared file back without the synced data. A
    /// rename changes the ctime of the file it moves, and a guest's write
    /// through us changes it too, so a file changed since is not one.
    fn changed_before_start(&self, st: &libc::stat) -> bool {
        let ctime = (st.st_ctime, st.st_ctime_nsec);
        !self.read_only && is_reg(st) && ctime < (self.started.0 + 60, self.started.1)
    }

    pub fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        len: u64,
        mode: i32,
        caller: Caller,
    ) -> Result<()> {
        let f = self.file(fh)?;
        if !f.writable {
            return Err(errno(libc::EBADF));
        }
        let (uid, gid) = self.writer_ids(fh, caller);
        sys::fsids::with_fs_ids(uid, gid, || {
            fsys::fallocate(f.fd.as_fd(), mode, offset, len)
        })
    }

    /// SEEK_DATA and SEEK_HOLE (the kernel asks for no other). The kernel
    /// asks without writing back the pages a mapping dirtied, so for a
    /// file whose I/O the daemon serves (the pages are the FUSE inode's)
    /// the backing file may not have that data yet, and a copier would skip
    /// it: such a file is all data, as the kernel's generic lseek has it
    /// (ENOSYS would have that, but for every file of the mount). A passed
    /// through file's mapping is the backing file's: its answer is exact.
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let f = self.file(fh)?;
        if lock(&f.backing).is_some() || !matches!(whence, libc::SEEK_DATA | libc::SEEK_HOLE) {
            return fsys::lseek(f.fd.as_fd(), offset, whence);
        }
        // No writeback cache: writes reach the backing file before they
        // return, so its size is the file's.
        let size = fsys::fstat(f.fd.as_fd())?.st_size;
        match offset {
            o if o < 0 => Err(errno(libc::EINVAL)),
            o if o >= size => Err(errno(libc::ENXIO)),
            o if whence == libc::SEEK_DATA => Ok(o),
            _ => Ok(size),
        }
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        caller: Caller,
    ) -> Result<u32> {
        // The source is read as `read` reads it (O_NOATIME kept).
        let src = self.read_fd(fh_in)?;
        let dst = self.file(fh_out)?;
        if !dst.writable {
            return Err(errno(libc::EBADF));
        }
        let len = len.min(u32::MAX as u64 & !0xfff);
        let (uid, gid) = self.writer_ids(fh_out, caller);
        let n = sys::fsids::with_fs_ids(uid, gid, || {
            fsys::copy_range(src.as_fd(), off_in, dst.fd.as_fd(), off_out, len)
        })?;
        Ok(n as u32)
    }

    /// Changes attributes; every change to a shared inode breaks it first.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        node: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<fsys::SetTime>,
        mtime: Option<fsys::SetTime>,
        fh: Option<u64>,
        caller: Caller,
    ) -> Result<Entry> {
        let (parent, dir, name) = match self.named_entry(node) {
            Ok(e) => e,
            // Unlinked but open (tmpfile-style), or split off its path: act
            // on the open file (the handle's if the kernel sent one), never
            // on a store object.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)) => {
                let f = match fh.and_then(|fh| self.file(fh).ok()) {
                    Some(f) => Self::private_or_stale(f)?,
                    None => match self.removed_dir(node) {
                        Some(fd) => {
                            let changes = (mode, uid, gid, size, atime, mtime);
                            return self.setattr_open(node, fd.as_fd(), false, changes, caller);
                        }
                        None => self.still_open_private(node, e)?,
                    },
                };
                let changes = (mode, uid, gid, size, atime, mtime);
                return self.setattr_open(node, f.fd.as_fd(), f.writable, changes, caller);
            }
            Err(e) => return Err(e),
        };
        Self::refuse_mounted(dir.as_fd(), &name)?;
        // A regular file is changed through a write fd held from the check
        // on: unify cannot lease, and so cannot link or replace, an inode
        // open for writing, so the change cannot land on a store object
        // unify made of the name after the check. Other types are never
        // shared; neither is a file that cannot be opened for writing
        // (immutable, running), and those the kernel refuses to change
        // by name alike.
        if let Some(size) = size {
            probe::refused_size(dir.as_fd(), &name, size)?;
        }
        let truncate = size.map(|size| (parent, size));
        let held = self.private_write_fd(node, dir.as_fd(), &name, truncate)?;
        let (uid, gid) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
        let times = (atime.is_some() || mtime.is_some()).then(|| {
            (
                atime.unwrap_or(fsys::SetTime::Keep),
                mtime.unwrap_or(fsys::SetTime::Keep),
            )
        });
        if uid != u32::MAX || gid != u32::MAX {
            match &held {
                Some(fd) => sys::fchown(fd.as_fd(), uid, gid)?,
                None => fsys::chown_at(dir.as_fd(), &name, uid, gid)?,
            }
        }
        if let Some(mode) = mode {
            match &held {
                Some(fd) => sys::fchmod(fd.as_fd(), mode & 0o7777)?,
                None => fsys::chmod_at(dir.as_fd(), &name, mode & 0o7777)?,
            }
        }
        if let Some(size) = size {
            let open = fh.and_then(|fh| self.file(fh).ok());
            let cur = lock(&self.state).table.get(node).map(|n| n.backing_ino);
            match (open, &held) {
                (Some(f), _) if f.writable && Some(f.backing_ino) == cur => {
                    fsys::ftruncate(f.fd.as_fd(), size)?
                }
                (_, Some(fd)) => fsys::ftruncate(fd.as_fd(), size)?,
                (_, None) => {
                    // As in open_backing_file: never a blocking open of
                    // what a rename may have put at the name meanwhile.
                    let probe = sys::open_at(dir.as_fd(), &name, libc::O_PATH, 0)?;
                    if !is_reg(&fsys::fstat(probe.as_fd())?) {
                        return Err(errno(libc::EINVAL));
                    }
                    let fd = fsys::reopen(probe.as_fd(), libc::O_WRONLY | libc::O_CLOEXEC)?;
                    fsys::ftruncate(fd.as_fd(), size)?;
                }
            }
        }
        // FUSE sends the set-ID bits a truncate or a write takes off as a
        // mode change, by the old rule: a set-group-ID file without group
        // execute keeps its bit even for a caller outside its group, where
        // ext4 takes it off (the kernel's current rule). For a write or
        // fallocate (passthrough too) it then sends a setattr that changes
        // nothing: that empty request is its ask to take the bits off.
        let empty = mode.is_none() && uid == u32::MAX && gid == u32::MAX && times.is_none();
        if size.is_some() || empty {
            let st = match &held {
                Some(fd) => fsys::fstat(fd.as_fd())?,
                None => fsys::stat_at(dir.as_fd(), &name)?,
            };
            let drop = if is_reg(&st) {
                caller.set_id_bits_to_drop(&st)
            } else {
                0
            };
            if drop != 0 {
                let mode = st.st_mode & 0o7777 & !drop;
                match &held {
                    Some(fd) => sys::fchmod(fd.as_fd(), mode)?,
                    None => fsys::chmod_at(dir.as_fd(), &name, mode)?,
                }
            }
        }
        if let Some((atime, mtime)) = times {
            self.changing(|| match &held {
                Some(fd) => fsys::futimens(fd.as_fd(), atime, mtime),
                None => fsys::utimens_at(dir.as_fd(), &name, atime, mtime),
            })?;
        }
        self.getattr(node, None)
    }

    /// Breaks the entry's link if it is shared and returns a write fd on
    /// the private regular file it then names, checked unmarked on that fd;
    /// `None` for anything else, or a file that cannot be opened for writing.
    /// `truncate`: as for [`Self::make_private`].
    fn private_write_fd(
        &self,
        node: u64,
        dir: BorrowedFd,
        name: &OsStr,
        truncate: Option<(u64, u64)>,
    ) -> Result<Option<OwnedFd>> {
        for _ in 0..4 {
            self.make_private(node, None, dir, name, truncate)?;
            // An O_PATH probe: no side effect on a fifo or device, and the
            // write open below reopens this very inode, whatever the name
            // names by then.
            let probe = sys::open_at(
                dir,
                name,
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0,
            )?;
            if !is_reg(&fsys::fstat(probe.as_fd())?) {
                return Ok(None);
            }
            // Blocking: a lease unify holds is waited out (it lets go at
            // once when a writer comes).
            let fd = match fsys::reopen(probe.as_fd(), libc::O_WRONLY | libc::O_CLOEXEC) {
                Ok(fd) => fd,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EPERM | libc::EACCES | libc::ETXTBSY | libc::EROFS)
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            // While we waited, unify may have swapped the inode out of the
            // name (it then has no link left) or made it an object: look again.
            let st = fsys::fstat(fd.as_fd())?;
            let now = fsys::stat_at(dir, name)?;
            if st.st_nlink == 0 || (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                continue;
            }
            if !cow::has_marker(fd.as_fd())? {
                return Ok(Some(fd));
            }
            // Unify made it an object since the check: break that too.
        }
        Err(errno(libc::EBUSY))
    }

    /// setattr on a file that has no name left, through its open fd, which
    /// the caller found not to be a store object ([`Self::private_or_stale`]),
    /// or a removed directory's ([`Self::removed_dir`]).
    fn setattr_open(
        &self,
        node: u64,
        fd: BorrowedFd,
        writable: bool,
        (mode, uid, gid, size, atime, mtime): Changes,
        caller: Caller,
    ) -> Result<Entry> {
        let empty = mode.is_none() && uid.is_none() && gid.is_none();
        let empty = empty && atime.is_none() && mtime.is_none();
        if uid.is_some() || gid.is_some() {
            sys::fchown(fd, uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
        }
        if let Some(mode) = mode {
            sys::fchmod(fd, mode & 0o7777)?;
        }
        if let Some(size) = size {
            if !writable {
                return Err(errno(libc::EBADF));
            }
            fsys::ftruncate(fd, size)?;
        }
        // As in setattr: the set-ID bits a truncate or write takes off.
        if size.is_some() || empty {
            let st = fsys::fstat(fd)?;
            let drop = if is_reg(&st) {
                caller.set_id_bits_to_drop(&st)
            } else {
                0
            };
            if drop != 0 {
                sys::fchmod(fd, st.st_mode & 0o7777 & !drop)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            fsys::futimens(
                fd,
                atime.unwrap_or(fsys::SetTime::Keep),
                mtime.unwrap_or(fsys::SetTime::Keep),
            )?;
        }
        Ok(self.shown(node, fsys::fstat(fd)?, false))
    }

    pub fn readlink(&self, node: u64) -> Result<Vec<u8>> {
        let (dir, name) = self.entry_of(node)?;
        fsys::readlink_at(dir.as_fd(), &name)
    }

    /// Gives a new entry to the calling user, as a local filesystem does,
    /// where it was not made as that user already ([`as_caller`]: the
    /// daemon could not switch its ids, root without CAP_SETUID or
    /// CAP_SETGID, which `unifs mount` does not require); a
    /// set-group-ID directory keeps its group, which the backing fs set.
    /// `mode`: a new file's mode, whose set-ID bits the chown took off and
    /// which go back on (the kernel already took set-group-ID off for a
    /// caller outside a set-group-ID directory's group: `mode_strip_sgid`).
    /// (The VFS holds the directory locked while we create in it, so the
    /// name is still the new entry.) Where this fails (EDQUOT: the chown
    /// charges the entry to a user over its quota), the entry goes again:
    /// the guest was told it was not made, and it must not stay, root's.
    fn own_new(
        &self,
        dir: BorrowedFd,
        name: &OsStr,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    ) -> Result<()> {
        let owned = Self::give_new(dir, name, uid, gid, mode);
        if owned.is_err() {
            let is_dir =
                fsys::stat_at(dir, name).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            let removed = self.changing(|| match is_dir {
                true => fsys::rmdir_at(dir, name),
                false => sys::unlink_at(dir, name),
            });
            if let Err(e) = removed {
                tracing::warn!("removing a new entry the guest could not be given: {e}");
            }
        }
        owned
    }

    fn give_new(
        dir: BorrowedFd,
        name: &OsStr,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    ) -> Result<()> {
        // Made as the caller: owner, group and set-ID bits are the kernel's,
        // as for a local create (a chown would clear the bits). The common
        // case needs no look at the directory.
        let st = fsys::stat_at(dir, name)?;
        if (st.st_uid, st.st_gid) == (uid, gid) {
            return Ok(());
        }
        let parent = fsys::stat_at(dir, OsStr::new("."))?;
        let setgid_dir = parent.st_mode & libc::S_ISGID != 0;
        if st.st_uid == uid && setgid_dir {
            return Ok(());
        }
        fsys::chown_at(dir, name, uid, if setgid_dir { u32::MAX } else { gid })?;
        let Some(mode) = mode.map(|m| m & 0o7777) else {
            return Ok(());
        };
        let setid = mode & (libc::S_ISUID | libc::S_ISGID);
        if setid == 0 {
            return Ok(());
        }
        // On the permission bits it got (a default ACL may have set them).
        let st = fsys::stat_at(dir, name)?;
        fsys::chmod_at(dir, name, (st.st_mode & 0o1777) | setid)
    }

    /// The mode a new entry is made with: with POSIX ACLs on, the kernel
    /// leaves the caller's umask to us. It applies unless the directory has
    /// a default ACL, which the backing filesystem then applies instead (our
    /// own umask is 0), as on a local filesystem.
    fn new_mode(dir: BorrowedFd, mode: u32, umask: u32) -> u32 {
        let default_acl = OsStr::new("system.posix_acl_default");
        match fsys::get_xattr_at(dir, OsStr::new("."), default_acl) {
            Ok(Some(_)) => mode,
            _ => mode & !(umask & 0o777),
        }
    }

    /// A name the guest may create. Unify's temp names (exactly
    /// `.unifs-tmp-PID-N`) are reserved: a leftover one is removed when the
    /// store holds its content, so a guest file by such a name could vanish.
    /// (The break's temp files are told by a mark a guest cannot set, not by
    /// their names.)
    fn check_name(name: &OsStr) -> Result<()> {
        if name.len() > 255 {
            return Err(errno(libc::ENAMETOOLONG));
        }
        if crate::unify::scan::is_tmp_name(name) {
            return Err(errno(libc::EPERM));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        Self::check_name(name)?;
        let dir = self.open_dir_node(parent)?;
        let mode = Self::new_mode(dir.as_fd(), mode, umask);
        let made = || fsys::mknod_at(dir.as_fd(), name, mode, rdev as u64);
        self.changing(|| as_caller(uid, gid, made))?;
        self.own_new(dir.as_fd(), name, uid, gid, Some(mode))?;
        self.lookup_in(&dir, parent, name)
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        Self::check_name(name)?;
        let dir = self.open_dir_node(parent)?;
        let mode = Self::new_mode(dir.as_fd(), mode, umask);
        self.changing(|| as_caller(uid, gid, || sys::mkdir_at(dir.as_fd(), name, mode)))?;
        self.own_new(dir.as_fd(), name, uid, gid, None)?;
        self.lookup_in(&dir, parent, name)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        Self::check_name(name)?;
        let dir = self.open_dir_node(parent)?;
        let made = || fsys::symlink_at(target, dir.as_fd(), name);
        self.changing(|| as_caller(uid, gid, made))?;
        self.own_new(dir.as_fd(), name, uid, gid, None)?;
        self.lookup_in(&dir, parent, name)
    }

    /// Creates and opens a regular file.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        Self::check_name(name)?;
        let dir = self.open_dir_node(parent)?;
        // The open's EMFILE (the daemon may hold no more fds) comes before
        // the file is made, as open(2) takes its fd before it creates: else
        // the create failed, its file made.
        fsys::room_to_hold(dir.as_fd())?;
        let mode = Self::new_mode(dir.as_fd(), mode, umask);
        let mut flags = flags;
        let flags_new = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
        let made = || sys::open_at(dir.as_fd(), name, flags_new, mode & 0o7777);
        match self.changing(|| as_caller(caller.uid, caller.gid, made)) {
            Ok(fd) => {
                drop(fd);
                self.own_new(dir.as_fd(), name, caller.uid, caller.gid, Some(mode))?;
                // A file the open made is not truncated (as in the kernel):
                // that would take the set-ID bits it was made with.
                flags &= !libc::O_TRUNC;
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {}
            Err(e) => return Err(e),
        }
        let entry = self.lookup_in(&dir, parent, name)?;
        IN_CREATE.with(|c| c.set(true));
        let opened = self.open(entry.node, flags, caller);
        IN_CREATE.with(|c| c.set(false));
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                self.forget(entry.node, 1);
                return Err(e);
            }
        };
        match self.getattr(entry.node, Some(opened.fh)) {
            Ok(entry) => Ok((entry, opened)),
            Err(e) => {
                // The kernel never sees this handle: release it here.
                self.release(opened.fh);
                self.forget(entry.node, 1);
                Err(e)
            }
        }
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        let dir = self.open_dir_node(parent)?;
        let _names = write_lock(&self.names);
        let target = fsys::stat_at(dir.as_fd(), name).ok();
        let last = target.filter(Self::is_last_link);
        self.removing_last(last, || self.changing(|| sys::unlink_at(dir.as_fd(), name)))?;
        lock(&self.state)
            .table
            .remove_name(parent, name, last.is_some());
        Ok(())
    }

    /// Whether `st` is the last link of its file (so that removing it
    /// frees the inode, and its number, once nothing holds it open).
    fn is_last_link(st: &libc::stat) -> bool {
        st.st_nlink <= 1 || st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        let dir = self.open_dir_node(parent)?;
        let _names = write_lock(&self.names);
        let changing = read_lock(&self.dir_changes);
        match fsys::rmdir_at(dir.as_fd(), name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !self.read_only => {
                // Empty to the guest, which never sees our temp names: a
                // dead daemon's stale break temps go, then the rmdir again.
                if !self.remove_stale_temps(dir.as_fd(), name)? {
                    return Err(e);
                }
                fsys::rmdir_at(dir.as_fd(), name)?;
            }
            r => r?,
        }
        drop(changing);
        let mut state = lock(&self.state);
        if let (Some(cache), Some(gone)) = (&self.dir_cache, state.table.child(parent, name)) {
            cache.forget(gone);
        }
        state.table.remove_name(parent, name, true);
        Ok(())
    }

    /// Removes the stale break temps in `dir/name` when they are all it
    /// holds; false (nothing removed) when it holds anything else.
    fn remove_stale_temps(&self, dir: BorrowedFd, name: &OsStr) -> Result<bool> {
        let sub = sys::open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let entries = fsys::read_dir(sub.as_fd())?;
        let names = || entries.iter().map(|(n, _, _)| n.as_os_str());
        let dots = |n: &OsStr| n == "." || n == "..";
        if !names().all(|n| dots(n) || cow::is_stale_temp(sub.as_fd(), n)) {
            return Ok(false);
        }
        for n in names().filter(|n| !dots(n)) {
            sys::unlink_at(sub.as_fd(), n)?;
        }
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        Self::check_name(newname)?;
        let olddir = self.open_dir_node(parent)?;
        let newdir = self.open_dir_node(newparent)?;
        if flags & libc::RENAME_EXCHANGE == 0 && parent != newparent {
            self.break_before_locked_dir(parent, olddir.as_fd(), name, newdir.as_fd())?;
        }
        let _names = write_lock(&self.names);
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        // The target, stat'ed once: whether it loses its last link, and
        // whether it is the source's inode.
        let target = fsys::stat_at(newdir.as_fd(), newname).ok();
        let replaced_last = !exchange && target.as_ref().is_some_and(Self::is_last_link);
        let one_inode = flags == 0
            && target.is_some_and(|t| {
                fsys::stat_at(olddir.as_fd(), name)
                    .is_ok_and(|o| (o.st_dev, o.st_ino) == (t.st_dev, t.st_ino))
            });
        let changing = read_lock(&self.dir_changes);
        if one_inode {
            // Between two names of one inode a rename does nothing at all.
            // The kernel never sends that for one node, so these are two
            // files to the guest (two paths of one store object): the old
            // name goes, as the guest's rename takes it away. (Decided
            // before, not after: a break of either name in between would
            // make them two inodes, and the old name would stay.)
            sys::unlink_at(olddir.as_fd(), name)?;
        } else {
            // The new name's directory block, if it needs one, the caller's;
            // as is a whiteout.
            let replaced = target.filter(|_| replaced_last);
            self.removing_last(replaced, || {
                as_caller(uid, gid, || {
                    fsys::rename2(olddir.as_fd(), name, newdir.as_fd(), newname, flags)
                })
            })?;
        }
        drop(changing);
        let mut state = lock(&self.state);
        let replaced = state.table.child(newparent, newname);
        state
            .table
            .rename(parent, name, newparent, newname, exchange);
        if let (true, Some(id)) = (replaced_last, replaced) {
            state.table.last_link_gone(id);
        }
        drop(state);
        if flags & libc::RENAME_WHITEOUT != 0 {
            // The whiteout left at the old name is the caller's new entry,
            // not ours (the VFS holds the directory locked). The rename is
            // done: a failure here must not undo it in the kernel's eyes
            // (so not `own_new`, which would remove the whiteout).
            if let Err(e) = Self::give_new(olddir.as_fd(), name, uid, gid, None) {
                tracing::warn!(?name, "could not give a whiteout to its user: {e}");
            }
        }
        Ok(())
    }

    /// Breaks the link of a shared file about to be renamed into a
    /// directory that is append-only (`chattr +a`: it takes new names, but
    /// never lets one be replaced): there it could never be broken, and so
    /// never written, where ext4 lets such a file be written. Broken where
    /// it is now, it moves in private.
    fn break_before_locked_dir(
        &self,
        parent: u64,
        olddir: BorrowedFd,
        name: &OsStr,
        newdir: BorrowedFd,
    ) -> Result<()> {
        let Ok(st) = fsys::stat_at(olddir, name) else {
            return Ok(());
        };
        if !Self::linked(&st) || !cow::is_shared(olddir, name, &st, true)? {
            return Ok(());
        }
        // An immutable one refuses the rename itself.
        if cow::locked_dir(newdir) != Some(sys::DirLock::AppendOnly) {
            return Ok(());
        }
        let Some(node) = lock(&self.state).table.child(parent, name) else {
            return Ok(());
        };
        match self.make_private(node, Some(parent), olddir, name, None) {
            // Moved meanwhile: the rename itself fails or moves another file.
            Err(e) if e.raw_os_error() == Some(MOVED) => Ok(()),
            r => r,
        }
    }

    /// A hardlink the guest makes joins the private copy: break first.
    pub fn link(
        &self,
        node: u64,
        newparent: u64,
        newname: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<Entry> {
        Self::check_name(newname)?;
        let (dir, name) = self.entry_of(node)?;
        Self::refuse_mounted(dir.as_fd(), &name)?;
        self.make_private(node, None, dir.as_fd(), &name, None)?;
        let newdir = self.open_dir_node(newparent)?;
        let linked = || sys::link_at(dir.as_fd(), &name, newdir.as_fd(), newname);
        self.changing(|| as_caller(uid, gid, linked))?;
        self.lookup_in(&newdir, newparent, newname)
    }

    pub fn opendir(&self, node: u64, flags: i32) -> Result<u64> {
        let (dir, name) = self.entry_of(node)?;
        Self::refuse_mounted(dir.as_fd(), &name)?;
        let no_atime = self.no_atime || flags & libc::O_NOATIME != 0;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let fd = fsys::held(self.open_reading(dir.as_fd(), &name, flags, no_atime)?)?;
        let st = fsys::fstat(fd.as_fd())?;
        let key = (st.st_dev, st.st_ino);
        let numbering = {
            let mut all = lock(&self.numberings);
            let numbering = all
                .all
                .entry(key)
                .or_insert_with(|| {
                    let total = self.numbered.clone();
                    Arc::new(Mutex::new(Numbering::new(stamp_of(&st), node, total)))
                })
                .clone();
            let mut n = lock(&numbering);
            if let Some(at) = n.closed_at.take() {
                // Kept since its handles closed: open again.
                all.closed.remove(&at);
                all.closed_len -= n.len;
                if n.stamp != stamp_of(&st) {
                    // Changed meanwhile: its numbers are only in the
                    // kernel's cached listing, dropped here before this
                    // handle can read it, so numbering begins again.
                    self.forget_listing(n.node);
                    n.restart(stamp_of(&st), false);
                }
            }
            n.open += 1;
            n.node = node;
            drop(n);
            numbering
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let dir = Arc::new(OpenDir {
            fd,
            reading: Mutex::new(()),
            key,
            numbering,
        });
        lock(&self.dirs).insert(fh, DirHandle { node, dir });
        Ok(fh)
    }

    /// Lists open directory `fh` from `offset`: 0 for its start (the
    /// directory as it is now, as after rewinddir), else the offset a
    /// listing gave an entry. Calls `each(dir, name, backing ino, DT_*
    /// type, offset of the next entry)` for each entry until it answers
    /// true (the reply is full: that entry was not taken). Our temp names
    /// are left out (and removed if stale).
    pub fn list_dir(
        &self,
        fh: u64,
        offset: u64,
        mut each: impl FnMut(&OwnedFd, &OsStr, u64, u8, u64) -> bool,
    ) -> Result<()> {
        let dir = {
            let dirs = lock(&self.dirs);
            dirs.get(&fh).ok_or_else(|| errno(libc::EBADF))?.dir.clone()
        };
        let _reading = lock(&dir.reading);
        let fd = dir.fd.as_fd();
        // The kernel's offsets are ours, standing for the d_offs the backing
        // filesystem gave (valid across changes, as it keeps them).
        if offset > LIST_OFFSETS_MAX as u64 {
            return Err(errno(libc::EINVAL));
        }
        let stamp = stamp_of(&fsys::fstat(fd)?);
        let recorded = match offset {
            // A rewind ends what earlier `telldir` values mean (POSIX).
            0 => {
                self.rewound(&dir, stamp);
                Some(0)
            }
            _ => lock(&dir.numbering).get(offset),
        };
        let backing = match recorded {
            Some(b) => b,
            // Not handed out (a number the program seeked to): counted in
            // the backing order, from the nearest mark, and numbered so.
            None => match self.count_to(fd, offset)? {
                Some(b) => {
                    let mut numbering = lock(&dir.numbering);
                    match numbering.get(offset) {
                        Some(raced) => raced,
                        None => {
                            numbering.add(offset, b);
                            b
                        }
                    }
                }
                None => return Ok(()), // past the end
            },
        };
        fsys::lseek(fd, backing as i64, libc::SEEK_SET)?;
        // Where the listing is, as ours: the next entry is numbered from it.
        let mut at = offset;
        let mut buf = Vec::new();
        let mut chunk = LIST_CHUNK_MIN;
        loop {
            buf.clear();
            if sys::getdents(fd, &mut buf, chunk)? == 0 {
                return Ok(());
            }
            chunk = (chunk * 2).min(LIST_CHUNK_MAX);
            let mut full = false;
            let mut overflow = false;
            sys::parse_dirents(&buf, |e| {
                if full || overflow || self.hidden(fd, e.name) {
                    return;
                }
                // Numbered before it is handed out (a number kept but not
                // taken by a full reply only costs its 40 bytes).
                let mut numbering = lock(&dir.numbering);
                let unchanged = numbering.stamp == stamp;
                let mut ours = numbering.number(at, e.off as u64, unchanged);
                if ours.is_none() && numbering.len > 0 {
                    // Past the largest number: begun again, so that no
                    // churn leaves a listing stuck on EOVERFLOW.
                    numbering.restart(STAMP_RESTARTED, false);
                    self.forget_listing(numbering.node);
                    ours = numbering.number(0, e.off as u64, false);
                }
                drop(numbering);
                let Some(ours) = ours else {
                    overflow = true;
                    return;
                };
                if self.numbered.load(Ordering::Relaxed) > self.numbered_max {
                    self.shrink_numberings();
                    // If this numbering began again, the number about to be
                    // handed out stays, for the listing to go on from.
                    let mut numbering = lock(&dir.numbering);
                    if numbering.get(ours).is_none() {
                        numbering.add(ours, e.off as u64);
                    }
                }
                full = each(&dir.fd, e.name, e.ino, e.kind, ours);
                if !full {
                    at = ours;
                }
            })?;
            if overflow {
                return Err(errno(libc::EOVERFLOW));
            }
            if full {
                return Ok(());
            }
        }
    }

    /// A listing of `dir` starts over. If no other handle has the directory
    /// open and it changed since its numbering began, numbering begins
    /// again (else a handle rewound over and over while names come and go
    /// would keep a number for each name ever listed): no handle holds its
    /// numbers any more, and the kernel is told to drop its cached listing,
    /// which may.
    fn rewound(&self, dir: &OpenDir, stamp: [i64; 4]) {
        let mut numbering = lock(&dir.numbering);
        if numbering.stamp == stamp || numbering.open > 1 {
            return;
        }
        let node = numbering.node;
        numbering.restart(stamp, false);
        drop(numbering);
        self.forget_listing(node);
    }

    /// Brings the numbers all numberings hold down to half of
    /// [`Overlay::numbered_max`]: the closed ones dropped, oldest first, then
    /// the largest open ones started over, and the kernel told to drop
    /// those listings. Each time frees at least half the budget, so the
    /// sort over the numberings is paid once per millions of numbers.
    fn shrink_numberings(&self) {
        let target = self.numbered_max / 2;
        let over = || self.numbered.load(Ordering::Relaxed) > target;
        let held = self.numbered.load(Ordering::Relaxed);
        let mut dropped = Vec::new();
        {
            let mut all = lock(&self.numberings);
            while over() {
                let Some((_, key)) = all.closed.pop_first() else {
                    break;
                };
                dropped.extend(all.drop_closed(&key));
            }
            if over() {
                let mut open: Vec<(usize, SharedNumbering)> =
                    all.all.values().map(|n| (lock(n).len, n.clone())).collect();
                open.sort_unstable_by_key(|(len, _)| std::cmp::Reverse(*len));
                for (_, numbering) in open {
                    if !over() {
                        break;
                    }
                    let mut n = lock(&numbering);
                    if n.len == 0 || n.closed_at.is_some() {
                        continue;
                    }
                    n.restart(STAMP_RESTARTED, true);
                    dropped.push(n.node);
                }
            }
        }
        tracing::info!(
            held,
            budget = self.numbered_max,
            dirs = dropped.len(),
            left = self.numbered.load(Ordering::Relaxed),
            "directory offsets past their budget: numberings dropped or begun again"
        );
        for node in dropped {
            self.forget_listing(node);
        }
    }

    /// Has the kernel drop its cached listing of directory `node` (its page
    /// cache), whose offsets a numbering dropped stood for. Takes no lock
    /// in the kernel that a request waiting for this daemon holds.
    fn forget_listing(&self, node: u64) {
        if let Some(notifier) = self.notifier.get() {
            if let Err(e) = notifier.inval_inode(fuser::INodeNo(node), 0, 0) {
                tracing::debug!(node, "cannot drop the cached listing of a directory: {e}");
            }
        }
    }

    /// The backing `d_off` after the first `n` visible entries of the
    /// directory open at `fd`, or None if it has fewer. Reads from the
    /// nearest of its [`Marks`], adding those it passes.
    fn count_to(&self, fd: BorrowedFd, n: u64) -> Result<Option<u64>> {
        let st = fsys::fstat(fd)?;
        let stamp = stamp_of(&st);
        let marks = {
            let mut all = lock(&self.marks);
            let key = (st.st_dev, st.st_ino);
            if !all.contains_key(&key) && all.len() >= MARKED_DIRS {
                all.clear();
            }
            all.entry(key)
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Marks {
                        stamp,
                        offs: Vec::new(),
                    }))
                })
                .clone()
        };
        let mut marks = lock(&marks);
        // Counted before a change: the entries before a mark moved.
        if marks.stamp != stamp {
            marks.stamp = stamp;
            marks.offs.clear();
        }
        let passed = (n / MARK_EVERY).min(marks.offs.len() as u64);
        let mut count = passed * MARK_EVERY;
        let mut found = match passed {
            0 => 0,
            m => marks.offs[m as usize - 1],
        };
        if count == n {
            return Ok(Some(found));
        }
        fsys::lseek(fd, found as i64, libc::SEEK_SET)?;
        let mut buf = Vec::new();
        let mut chunk = LIST_CHUNK_MIN;
        while count < n {
            buf.clear();
            if sys::getdents(fd, &mut buf, chunk)? == 0 {
                return Ok(None);
            }
            chunk = (chunk * 2).min(LIST_CHUNK_MAX);
            sys::parse_dirents(&buf, |e| {
                if count >= n || self.hidden(fd, e.name) {
                    return;
                }
                count += 1;
                found = e.off as u64;
                if count % MARK_EVERY == 0 && count / MARK_EVERY > marks.offs.len() as u64 {
                    marks.offs.push(found);
                }
            })?;
        }
        Ok(Some(found))
    }

    /// Whether `name` in the directory open at `dir` is one of our temp
    /// names, which a listing leaves out: stale ones (left by a daemon
    /// killed between link and rename, or by a failed break that could not
    /// remove it) are removed.
    fn hidden(&self, dir: BorrowedFd, name: &OsStr) -> bool {
        if !cow::is_temp(dir, name) {
            return false;
        }
        if !self.read_only && cow::is_stale_temp(dir, name) {
            let _ = self.changing(|| sys::unlink_at(dir, name));
        }
        true
    }

    /// The number readdir shows for an entry: its node if known.
    pub fn known_child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        lock(&self.state).table.child(parent, name)
    }

    pub fn releasedir(&self, fh: u64) {
        let Some(DirHandle { dir, .. }) = lock(&self.dirs).remove(&fh) else {
            return;
        };
        let mut dropped = Vec::new();
        {
            let mut all = lock(&self.numberings);
            let mut n = lock(&dir.numbering);
            n.open -= 1;
            if n.open > 0 {
                return;
            }
            if n.len == 0 {
                drop(n);
                all.all.remove(&dir.key);
                return;
            }
            // Kept for the kernel's cached listing, within bounds: the
            // oldest dropped (with that listing) past them.
            n.compact();
            let at = all.closings;
            all.closings += 1;
            n.closed_at = Some(at);
            all.closed.insert(at, dir.key);
            all.closed_len += n.len;
            drop(n);
            while all.closed.len() > self.closed_numbered_dirs
                || all.closed_len > CLOSED_NUMBERED_MAX
            {
                let Some((_, key)) = all.closed.pop_first() else {
                    break;
                };
                dropped.extend(all.drop_closed(&key));
            }
        }
        for node in dropped {
            self.forget_listing(node);
        }
    }

    pub fn fsyncdir(&self, node: u64, datasync: bool) -> Result<()> {
        let fd = match self.entry_of(node) {
            Ok((dir, name)) => {
                sys::open_at(dir.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?
            }
            // Removed while open: ext4 syncs it all the same.
            Err(e) => self.removed_dir(node).ok_or(e)?,
        };
        fsys::fsync(fd.as_fd(), datasync)
    }

    pub fn statfs(&self) -> Result<libc::statvfs> {
        fsys::fstatvfs(self.root.as_fd())
    }

    pub fn getxattr(&self, node: u64, attr: &OsStr) -> Result<Vec<u8>> {
        if cow::is_store_xattr(attr) {
            return Err(errno(libc::ENODATA));
        }
        let names = read_lock(&self.names);
        let value = match self.entry_of(node) {
            Ok((dir, name)) => {
                Self::refuse_mounted(dir.as_fd(), &name)?;
                fsys::get_xattr_at(dir.as_fd(), &name, attr)?
            }
            Err(e) => {
                drop(names);
                match self.removed_dir(node) {
                    Some(fd) => sys::xattr::get_fd(fd.as_fd(), attr)?,
                    None => sys::xattr::get_fd(self.still_open(node, e)?.fd.as_fd(), attr)?,
                }
            }
        };
        value.ok_or_else(|| errno(libc::ENODATA))
    }

    /// The file of a node that has no path (unlinked, or split off it: the
    /// error `e` of looking for one) but is still open: a program's
    /// f*xattr calls reach us without its handle.
    fn still_open(&self, node: u64, e: io::Error) -> Result<Arc<OpenInode>> {
        if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESTALE)) {
            return Err(e);
        }
        // None open: a path resolved just before an unlink or a rename
        // took its name (see setattr).
        self.current_open_inode(node)
            .ok_or_else(|| errno(libc::ESTALE))
    }

    /// [`Self::still_open`] for a change: never a store object (see
    /// [`Self::private_or_stale`]).
    fn still_open_private(&self, node: u64, e: io::Error) -> Result<Arc<OpenInode>> {
        Self::private_or_stale(self.still_open(node, e)?)
    }

    /// An fd to change a node that has no path (`e`, the error of looking
    /// for one): a removed directory's, or an open file's that is not a
    /// store object.
    fn unnamed_private_fd(&self, node: u64, e: io::Error) -> Result<OwnedFd> {
        match self.removed_dir(node) {
            Some(fd) => Ok(fd),
            None => self.still_open_private(node, e)?.fd.try_clone(),
        }
    }

    /// `f` if it is not a store object, else ESTALE: the file a reader kept
    /// when a break split its path off, or when a rename replaced a shared
    /// file, is the store's; a change by path that raced the split or the
    /// rename reaches it too, and ESTALE (as NFS answers for a file replaced
    /// meanwhile) has the kernel look the path up again and change what it
    /// names now. A change through the old fd fails.
    fn private_or_stale(f: Arc<OpenInode>) -> Result<Arc<OpenInode>> {
        if cow::has_marker(f.fd.as_fd())? {
            return Err(errno(libc::ESTALE));
        }
        Ok(f)
    }

    /// The xattr names, NUL-terminated, without the store's; without any
    /// `trusted.` name for a caller without CAP_SYS_ADMIN (a local
    /// filesystem lists those only to it, and FUSE does not filter them).
    pub fn listxattr(&self, node: u64, caller: Caller) -> Result<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let names = read_lock(&self.names);
        let attrs = match self.entry_of(node) {
            Ok((dir, name)) => {
                Self::refuse_mounted(dir.as_fd(), &name)?;
                fsys::list_xattrs_at(dir.as_fd(), &name)?
            }
            Err(e) => {
                drop(names);
                let list = match self.removed_dir(node) {
                    Some(fd) => sys::xattr::list_fd(fd.as_fd())?,
                    None => sys::xattr::list_fd(self.still_open(node, e)?.fd.as_fd())?,
                };
                list.into_iter().map(|(name, _)| name).collect()
            }
        };
        let mut out = Vec::new();
        // Asked of /proc only for a file that has such a name.
        let mut hide_trusted = None;
        for attr in attrs {
            let trusted = attr.as_bytes().starts_with(b"trusted.");
            if cow::is_store_xattr(&attr)
                || trusted && *hide_trusted.get_or_insert_with(|| !caller.sees_trusted())
            {
                continue;
            }
            out.extend_from_slice(attr.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    pub fn setxattr(
        &self,
        node: u64,
        attr: &OsStr,
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> Result<()> {
        if cow::is_store_xattr(attr) {
            return Err(errno(libc::EPERM));
        }
        let (dir, name) = match self.entry_of(node) {
            Ok(e) => e,
            // Unlinked but open, or split off its path: as in setattr.
            Err(e) => {
                let fd = self.unnamed_private_fd(node, e)?;
                as_caller(caller.uid, caller.gid, || {
                    sys::xattr::set_fd_flags(fd.as_fd(), attr, value, flags)
                })?;
                // As below for an access ACL.
                let st = fsys::fstat(fd.as_fd())?;
                if attr == OsStr::new("system.posix_acl_access")
                    && st.st_mode & libc::S_ISGID != 0
                    && !caller.in_group_or_capable(st.st_gid)
                {
                    sys::fchmod(fd.as_fd(), st.st_mode & 0o7777 & !libc::S_ISGID)?;
                }
                return Ok(());
            }
        };
        Self::refuse_mounted(dir.as_fd(), &name)?;
        Self::xattr_change_fails(dir.as_fd(), &name, attr, Some(flags))?;
        let st = fsys::stat_at(dir.as_fd(), &name)?;
        if is_reg(&st) && cow::is_shared(dir.as_fd(), &name, &st, false)? {
            probe::refused_xattr(dir.as_fd(), &name, attr, value, flags)?;
        }
        // Through a held write fd, as in setattr.
        let fd = self.private_write_fd(node, dir.as_fd(), &name, None)?;
        // An xattr block, if it needs one, the caller's.
        as_caller(caller.uid, caller.gid, || match &fd {
            Some(fd) => sys::xattr::set_fd_flags(fd.as_fd(), attr, value, flags),
            None => fsys::set_xattr_at(dir.as_fd(), &name, attr, value, flags),
        })?;
        if attr != OsStr::new("system.posix_acl_access") {
            return Ok(());
        }
        // Setting an access ACL takes set-group-ID off a file whose group
        // the caller is not in (without CAP_FSETID), as chmod does: the
        // backing filesystem sees us, root, and keeps it. (The kernel tells
        // only FUSE_SETXATTR_EXT daemons, a request format fuser lacks.)
        let st = match &fd {
            Some(fd) => fsys::fstat(fd.as_fd())?,
            None => fsys::stat_at(dir.as_fd(), &name)?,
        };
        if st.st_mode & libc::S_ISGID == 0 || caller.in_group_or_capable(st.st_gid) {
            return Ok(());
        }
        let mode = st.st_mode & 0o7777 & !libc::S_ISGID;
        match &fd {
            Some(fd) => sys::fchmod(fd.as_fd(), mode),
            None => fsys::chmod_at(dir.as_fd(), &name, mode),
        }
    }

    pub fn removexattr(&self, node: u64, attr: &OsStr) -> Result<()> {
        if cow::is_store_xattr(attr) {
            return Err(errno(libc::EPERM));
        }
        let (dir, name) = match self.entry_of(node) {
            Ok(e) => e,
            // Unlinked but open, or split off its path: as in setattr.
            Err(e) => {
                if let Some(fd) = self.removed_dir(node) {
                    return sys::xattr::remove_fd(fd.as_fd(), attr);
                }
                let f = self.still_open_private(node, e)?;
                return sys::xattr::remove_fd(f.fd.as_fd(), attr);
            }
        };
        Self::refuse_mounted(dir.as_fd(), &name)?;
        Self::xattr_change_fails(dir.as_fd(), &name, attr, None)?;
        match self.private_write_fd(node, dir.as_fd(), &name, None)? {
            Some(fd) => sys::xattr::remove_fd(fd.as_fd(), attr),
            None => fsys::remove_xattr_at(dir.as_fd(), &name, attr),
        }
    }

    /// The error of a set (`flags`) or remove (`None`) of `attr` that the
    /// attribute's presence or absence dooms, found before the change: it
    /// must not break a shared file's link first, as ext4 changes nothing
    /// then. A name the backing filesystem has no handler for (`system.foo`,
    /// `foo.bar`) fails too: its getxattr answers EOPNOTSUPP, as the change
    /// would. Other `system.` names (ACLs) are left to the change: their
    /// handlers ignore these rules (removing a missing ACL succeeds).
    fn xattr_change_fails(
        dir: BorrowedFd,
        name: &OsStr,
        attr: &OsStr,
        flags: Option<i32>,
    ) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let found = fsys::get_xattr_at(dir, name, attr);
        if attr.as_bytes().starts_with(b"system.") {
            return match found {
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(e),
                _ => Ok(()),
            };
        }
        let exists = found?.is_some();
        let fails = match flags {
            None => !exists,
            Some(f) if f & libc::XATTR_REPLACE != 0 => !exists,
            Some(f) => f & libc::XATTR_CREATE != 0 && exists,
        };
        match (fails, exists) {
            (false, _) => Ok(()),
            (true, true) => Err(errno(libc::EEXIST)),
            (true, false) => Err(errno(libc::ENODATA)),
        }
    }
}

/// Sleeps for `UNIFS_TEST_LOOKUP_PAUSE_MS` (read once; unset: not at all)
/// in a lookup of a file with more than one link, between its stat and the
/// read of its marker: the tests' way to land a break in between.
fn lookup_test_pause() {
    crate::sys::test_pause!("UNIFS_TEST_LOOKUP_PAUSE_MS");
}

#[cfg(test)]
mod tests {
    /// An opener FUSE could not name (pid 0) may still run; one reaped is
    /// gone.
    #[test]
    fn an_opener_of_unknown_pid_is_taken_as_running() {
        assert!(super::process_alive(0));
        assert!(super::process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!super::process_alive(pid));
    }
}
