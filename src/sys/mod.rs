//! Safe wrappers around the Linux syscalls unifs needs and std does not offer:
//! fd-relative resolution that never follows a symlink, leases, link/rename
//! variants, reflinks and xattrs. Every `unsafe` block of the crate's storage
//! code lives here, each with its invariant.

pub mod caps;
pub mod fsids;
pub mod held_log;
mod locks;
mod proc_args;
mod regular;
mod shared_map;
pub(crate) mod test_hooks;
mod text;
pub mod xattr;

pub(crate) use test_hooks::{test_bound, test_hook, test_panic, test_pause, test_stop};

pub use locks::flock_holders;

pub use proc_args::{cmdline_bounded, BoundedReads, ARGS_LIMIT};

pub use regular::{is_not_regular, look_at, open_regular_at, open_regular_beneath, NotRegular};

pub use shared_map::SharedMap;

pub use text::{clean, is_hidden, json_safe, log_line, shell_word, shown, shown_str};

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A random number, from the hasher keys the standard library draws from
/// the kernel (another with each call).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The directory `path` is in ("." for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs the directory `dir`: a rename into it is then on disk. Without
/// it a power cut after the rename can leave the old name, or none, though
/// the file itself was synced.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// What to add to an error whose errno (`raw`) says the filesystem refused
/// a write (EROFS, EIO): ext4 gone read-only after an error keeps its
/// mount `rw`, and a bare "Read-only file system" says neither why nor
/// what to do. Empty for any other error.
pub fn refused_writes_hint(raw: Option<i32>) -> &'static str {
    match raw {
        Some(libc::EROFS | libc::EIO) => REFUSED_WRITES,
        _ => "",
    }
}

/// [`refused_writes_hint`]'s words, for errors known to be of that kind.
pub const REFUSED_WRITES: &str = "; the filesystem holding it refuses writes (read-only, or \
     failing: see `dmesg`). If it failed (ext4 gone read-only after an error), repair it (stop \
     the guests and mounts on it, unmount it, fsck, mount it again) and run the command again";

/// The bytes of `p` in hex where they are not UTF-8 (its `*_hex` field in
/// JSON output and manifests); `None` where the text says them exactly.
pub fn hex_if_not_utf8(p: &Path) -> Option<String> {
    p.to_str()
        .is_none()
        .then(|| crate::store::id::to_hex(p.as_os_str().as_bytes()))
}

/// Serializes a path field of `--json` output (flattened into its object)
/// as `key`, text with bytes that are not UTF-8 replaced (U+FFFD), and
/// then also `hex_key`, its bytes in hex, which name it exactly: the rule
/// of the manifest's `root` and `root_hex` (docs/store-format.md).
fn path_and_hex<S: serde::Serializer>(
    key: &'static str,
    hex_key: &'static str,
    p: Option<&Path>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    map.serialize_entry(key, &p.map(|p| p.to_string_lossy()))?;
    if let Some(hex) = p.and_then(hex_if_not_utf8) {
        map.serialize_entry(hex_key, &hex)?;
    }
    map.end()
}

/// `path` and, where not UTF-8, `path_hex` ([`path_and_hex`]); for a
/// field `#[serde(flatten, serialize_with = "…")]`.
pub fn json_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    path_and_hex("path", "path_hex", Some(p), s)
}

/// `root` (null for none) and, where not UTF-8, `root_hex`.
pub fn json_root<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    path_and_hex("root", "root_hex", p.as_deref(), s)
}

/// `mount_log` (null for none) and, where not UTF-8, `mount_log_hex`.
pub fn json_mount_log<S: serde::Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    path_and_hex("mount_log", "mount_log_hex", p.as_deref(), s)
}

/// Puts the paths `paths` into the JSON object `obj` as `key`, a list of
/// texts (bytes that are not UTF-8 replaced), and, where one of them is
/// not UTF-8, `key_hex`: a list as long, with its bytes in hex for each
/// such path and null for the others.
pub fn json_paths(obj: &mut serde_json::Value, key: &str, paths: &[PathBuf]) {
    let text: Vec<_> = paths.iter().map(|p| p.to_string_lossy()).collect();
    obj[key] = serde_json::json!(text);
    let hex: Vec<_> = paths.iter().map(|p| hex_if_not_utf8(p)).collect();
    if hex.iter().any(Option::is_some) {
        obj[format!("{key}_hex")] = serde_json::json!(hex);
    }
}

/// The parts of `struct stat` unifs compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    pub fn as_nanos(self) -> i128 {
        self.sec as i128 * 1_000_000_000 + self.nsec as i128
    }

    /// The time `ns` nanoseconds from 1970 as the kernel writes one: whole
    /// seconds rounded down, nanoseconds counted forward (0.5 s before 1970
    /// is `(-1, 500_000_000)`). Past the ends of i64 seconds, the nearest end.
    pub fn of_nanos(ns: i128) -> Timestamp {
        const NANOS: i128 = 1_000_000_000;
        match i64::try_from(ns.div_euclid(NANOS)) {
            Ok(sec) => Timestamp {
                sec,
                nsec: ns.rem_euclid(NANOS) as u32,
            },
            Err(_) if ns < 0 => Timestamp {
                sec: i64::MIN,
                nsec: 0,
            },
            Err(_) => Timestamp {
                sec: i64::MAX,
                nsec: 999_999_999,
            },
        }
    }

    /// A stat's time (`st_mtime`, `st_mtime_nsec`) as the instant it
    /// stands for, its nanoseconds below a second: a filesystem may give
    /// more (ext4 decodes 30 bits of them from the inode, a FUSE server
    /// sends 32), which no `utimensat` takes (EINVAL) and a manifest reader
    /// would refuse. [`Stat`] keeps the raw pair (a cache key, compared
    /// with itself); object ids hash the instant ([`Self::instant`]).
    pub fn of_stat(sec: i64, nsec: i64) -> Timestamp {
        Timestamp::of_nanos(i128::from(sec) * 1_000_000_000 + i128::from(nsec))
    }

    /// This stat time as the instant it stands for ([`Self::of_stat`]):
    /// what an object id covers, as a copy of the file can have it (no
    /// utimensat writes nanoseconds past a second) and as
    /// scripts/object-id.py reads it (`divmod(st_mtime_ns, 10**9)`).
    pub fn instant(self) -> Timestamp {
        Timestamp::of_stat(self.sec, self.nsec.into())
    }

    /// As a `timespec` for utimensat: the instant ([`Self::of_stat`]). A
    /// stat's raw nanoseconds 1_073_741_822 and 1_073_741_823 are
    /// UTIME_OMIT and UTIME_NOW there (a copy's time was left or set to
    /// now), any other past 999_999_999 EINVAL (a link break failed).
    pub fn timespec(self) -> libc::timespec {
        let t = self.instant();
        libc::timespec {
            tv_sec: t.sec,
            tv_nsec: t.nsec.into(),
        }
    }
}

impl Stat {
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            mtime: Timestamp {
                sec: st.st_mtime,
                nsec: st.st_mtime_nsec as u32,
            },
            ctime: Timestamp {
                sec: st.st_ctime,
                nsec: st.st_ctime_nsec as u32,
            },
        }
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// Permission bits with set-id and sticky bits, without the file type.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// True when `other` is the same inode with the same content and metadata
    /// as far as a stat can tell (ctime moves on any inode change).
    pub fn unchanged(&self, other: &Stat) -> bool {
        self.dev == other.dev
            && self.ino == other.ino
            && self.size == other.size
            && self.mtime == other.mtime
            && self.ctime == other.ctime
    }
}

pub(crate) fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// [`check`] of `call`, made again while it fails with EINTR. A call that
/// fails so did nothing, and the signal (a lease break's SIGIO, a stop and
/// continue) is no fault of the file: an open, link, rename or unlink must
/// not be reported as failed, nor a file left as it was, for it.
pub(crate) fn retry(mut call: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match check(call()) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            done => return done,
        }
    }
}

/// Resolution flags for paths inside a guest: stay beneath the directory, on
/// its filesystem, and never follow a symlink (invariant 4).
const RESOLVE_GUEST: u64 = libc::RESOLVE_BENEATH
    | libc::RESOLVE_NO_SYMLINKS
    | libc::RESOLVE_NO_MAGICLINKS
    | libc::RESOLVE_NO_XDEV;

/// Opens `rel` beneath `dir` with `openat2`, refusing symlinks in any component,
/// `..` escapes and mount crossings. An empty `rel` opens `dir` itself.
pub fn open_beneath(dir: BorrowedFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    // A guest path can be longer than one call takes (PATH_MAX, 4096 bytes,
    // ENAMETOOLONG) though the walk reaches it: then its leading part is
    // opened first, and the rest beneath that.
    const PART: usize = 3072;
    if rel.as_os_str().len() >= PART {
        let mut head = std::path::PathBuf::new();
        let mut rest = rel.components();
        while let Some(c) = rest.clone().next() {
            let len = head.as_os_str().len() + 1 + c.as_os_str().len();
            if len > PART && !head.as_os_str().is_empty() {
                break;
            }
            head.push(c);
            rest.next();
        }
        if !rest.as_path().as_os_str().is_empty() {
            let part = open_beneath_once(dir, &head, libc::O_PATH | libc::O_DIRECTORY)?;
            return open_beneath(part.as_fd(), rest.as_path(), flags);
        }
    }
    open_beneath_once(dir, rel, flags)
}

/// Where `path` leads inside the tree at `root`, resolved as if `root` were
/// `/`: absolute symlinks and `..` stay inside it. A path relative to
/// `root` (on the host: the file's own), for a look at what a guest's
/// program is (its init a link to systemd?), never for writing.
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<std::path::PathBuf> {
    let fd = open_in_root(root, path, libc::O_PATH)?;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens `path` inside the tree at `root` as [`resolve_in_root`] resolves
/// it.
pub fn open_in_root(root: &Path, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    open_in_root_fd(std::fs::File::open(root)?.as_fd(), path, flags)
}

/// [`open_in_root`] for a root already open as `root`.
pub fn open_in_root_fd(root: BorrowedFd, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    openat2(
        root,
        rel,
        flags,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Reads the file at `path` inside the tree open as `root` (links followed
/// inside it only), for a privileged process looking into a guest's tree:
/// the file is looked at without being opened (`O_PATH`) and read only if
/// it is a regular file of a real filesystem. A guest could link it to a
/// device node (opening a watchdog arms it), a FIFO (never written), or a
/// kernel file of its /proc (reading /proc/kmsg drains the host's kernel
/// log). `None` if there is no such file; `InvalidData` if it is not such a
/// file or is longer than `max` bytes.
pub fn read_regular_in_root(
    root: BorrowedFd,
    path: &Path,
    max: u64,
) -> io::Result<Option<Vec<u8>>> {
    let fd = match open_in_root_fd(root, path, libc::O_PATH) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let regular = fstat(fd.as_fd())?.mode & libc::S_IFMT == libc::S_IFREG;
    if !regular || PSEUDO_FS.contains(&fs_type(fd.as_fd())?) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file of the guest's tree",
        ));
    }
    // Reopened through the checked fd, not by name again, which the guest
    // could change in between.
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, max + 1), &mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        ));
    }
    Ok(Some(bytes))
}

/// Kernel filesystems whose regular files act when read: procfs, sysfs,
/// debugfs, tracefs, securityfs, cgroup, bpf, configfs, efivarfs, pstore.
const PSEUDO_FS: &[i64] = &[
    libc::PROC_SUPER_MAGIC,
    libc::SYSFS_MAGIC,
    libc::DEBUGFS_MAGIC,
    libc::TRACEFS_MAGIC,
    libc::SECURITYFS_MAGIC,
    libc::CGROUP_SUPER_MAGIC,
    libc::CGROUP2_SUPER_MAGIC,
    libc::BPF_FS_MAGIC,
    0x6265_6570, // configfs
    0xde5e_81e4, // efivarfs
    0x6165_676C, // pstore
];

/// [`open_beneath`] in one `openat2` call.
fn open_beneath_once(dir: BorrowedFd, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
    openat2(dir, rel, flags, RESOLVE_GUEST)
}

/// `openat2(dir, rel, flags | O_CLOEXEC)` with `resolve` flags.
fn openat2(dir: BorrowedFd, rel: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let path = cstr(rel.as_os_str())?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: `path` is NUL-terminated and `how` is a fully initialised open_how
    // whose size we pass; the kernel returns a new fd we take ownership of.
    let fd = retry(|| unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        ) as libc::c_int
    })?;
    // SAFETY: a non-negative return is a new fd owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)` for one component.
pub fn open_at(dir: BorrowedFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated; a non-negative result is a new fd.
    let fd = retry(|| unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the inode `fd` refers to (an `O_PATH` fd, say) afresh with
/// `flags`, through `/proc/self/fd`: the same inode whatever its name is now
/// (a name can be swapped for another file between a look and an open).
pub fn reopen(fd: BorrowedFd, flags: i32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags & !libc::O_ACCMODE)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    Ok(file.into())
}

/// The target of the symlink open at `fd` (`O_PATH | O_NOFOLLOW`).
pub fn read_link_fd(fd: BorrowedFd) -> io::Result<std::ffi::OsString> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: an empty NUL-terminated path makes readlinkat read the
        // link `fd` itself is; `buf` is valid for its length.
        let n = unsafe {
            libc::readlinkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            return Ok(std::os::unix::ffi::OsStringExt::from_vec(buf));
        }
        // Perhaps cut short: PATH_MAX is the most a target can be.
        if buf.len() > libc::PATH_MAX as usize {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Opens a path on the host (the store, a guest's root) as a directory,
/// without following a symlink in its last component.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let p = cstr(path.as_os_str())?;
    // SAFETY: `p` is NUL-terminated; a non-negative result is a new fd.
    let fd = retry(|| unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn fstat(fd: BorrowedFd) -> io::Result<Stat> {
    Ok(Stat::from_raw(&fstat_raw(fd)?))
}

/// [`fstat`] as the kernel gives it.
pub fn fstat_raw(fd: BorrowedFd) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid plain-data value for the kernel to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fstat` of a directory, and whether it is encrypted (fscrypt), from one
/// `statx`.
pub fn fstat_dir(fd: BorrowedFd) -> io::Result<(Stat, bool)> {
    let (st, attributes) = statx(fd, c"", libc::AT_EMPTY_PATH)?;
    Ok((st, attributes & libc::STATX_ATTR_ENCRYPTED as u64 != 0))
}

/// The mount `fd` is open in and its inode number, as
/// /proc/self/fdinfo says them (`mnt_id`, `ino`): read without asking its
/// filesystem, so a FUSE mount whose daemon does not answer is no wait.
/// None where /proc does not say (`ino` is there since Linux 5.14).
pub fn fd_mount_and_inode(fd: BorrowedFd) -> Option<(u64, Option<u64>)> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((field("mnt_id:")?, field("ino:")))
}

/// The id of the mount `fd` is on (`None` where the kernel does not say,
/// or the statx fails): links cannot cross mounts, even of one filesystem.
pub fn mount_id(fd: BorrowedFd) -> Option<u64> {
    mount_id_checked(fd).ok().flatten()
}

/// [`mount_id`], with the statx's error: where a `None` would count the
/// file as on another mount (a walk leaving it out), a failure must not
/// pass for that.
pub fn mount_id_checked(fd: BorrowedFd) -> io::Result<Option<u64>> {
    let stx = statx_fd(fd, libc::STATX_MNT_ID)?;
    Ok((stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id))
}

/// The alignments direct I/O (O_DIRECT) on `fd`'s file needs, of file
/// offsets and lengths and of memory buffers (statx's `STATX_DIOALIGN`):
/// `None` where the filesystem does not say or does no direct I/O on it.
pub fn dio_align(fd: BorrowedFd) -> io::Result<Option<(u32, u32)>> {
    let stx = statx_fd(fd, libc::STATX_DIOALIGN)?;
    let said = stx.stx_mask & libc::STATX_DIOALIGN != 0;
    let (offset, mem) = (stx.stx_dio_offset_align, stx.stx_dio_mem_align);
    Ok((said && offset != 0).then_some((offset, mem)))
}

/// Which directory `fd` is: device, inode number and birth time (`None`
/// where the filesystem does not say). An inode number a removed directory
/// had can be given to a new one; with its birth time the pair cannot.
pub fn dir_identity(fd: BorrowedFd) -> io::Result<(u64, u64, Option<Timestamp>)> {
    let stx = statx_fd(fd, libc::STATX_INO | libc::STATX_BTIME)?;
    let birth = (stx.stx_mask & libc::STATX_BTIME != 0).then_some(Timestamp {
        sec: stx.stx_btime.tv_sec,
        nsec: stx.stx_btime.tv_nsec,
    });
    let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    Ok((dev, stx.stx_ino, birth))
}

/// `statx` of `fd` itself for the fields of `mask` (`stx_mask` says
/// which the filesystem filled in).
fn statx_fd(fd: BorrowedFd, mask: u32) -> io::Result<libc::statx> {
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH stats `fd`
    // itself; `stx` is a valid, writable statx buffer.
    check(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            mask,
            &mut stx,
        )
    })?;
    Ok(stx)
}

/// `stat_at`, and whether the entry is the root of a mount (a file or
/// directory bind-mounted there), from one `statx`.
pub fn stat_entry(dir: BorrowedFd, name: &OsStr) -> io::Result<(Stat, bool)> {
    let name = cstr(name)?;
    let (st, attributes) = statx(dir, &name, 0)?;
    Ok((st, attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0))
}

/// `statx(dir, name, flags | AT_SYMLINK_NOFOLLOW)`: the basic stats and
/// the attribute bits the kernel supports.
fn statx(dir: BorrowedFd, name: &std::ffi::CStr, flags: i32) -> io::Result<(Stat, u64)> {
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated (empty with AT_EMPTY_PATH: `dir`
    // itself); `stx` is a valid, writable statx buffer.
    check(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    })?;
    let time = |t: libc::statx_timestamp| Timestamp {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    };
    let st = Stat {
        dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        ino: stx.stx_ino,
        mode: stx.stx_mode as u32,
        nlink: stx.stx_nlink as u64,
        uid: stx.stx_uid,
        gid: stx.stx_gid,
        size: stx.stx_size,
        mtime: time(stx.stx_mtime),
        ctime: time(stx.stx_ctime),
    };
    Ok((st, stx.stx_attributes & stx.stx_attributes_mask))
}

/// One entry of a directory as `getdents64` gives it.
pub struct DirEntry<'a> {
    pub name: &'a OsStr,
    pub ino: u64,
    /// `DT_*`; `DT_UNKNOWN` where the filesystem does not say.
    pub kind: u8,
    /// `d_off`: the directory offset just after this entry, for `lseek`
    /// (a cookie on filesystems that hash names, e.g. ext4).
    pub off: i64,
}

/// Calls `each` for every entry of the directory `dir` (`.` and `..`
/// included), read with `getdents64` straight into one buffer: no `DIR`
/// stream, so no extra `fstat`, `fcntl` or `lseek` per directory.
pub fn read_dir(dir: BorrowedFd, each: impl FnMut(DirEntry)) -> io::Result<()> {
    let mut raw = Vec::new();
    read_dir_raw(dir, &mut raw)?;
    parse_dirents(&raw, each)
}

/// Appends every record of the directory `dir` to `out`, as `getdents64`
/// gives them (`struct linux_dirent64`), for [`parse_dirents`].
pub fn read_dir_raw(dir: BorrowedFd, out: &mut Vec<u8>) -> io::Result<()> {
    // Room for more than most directories at once.
    while getdents(dir, out, 32 * 1024)? > 0 {}
    Ok(())
}

/// Back to the start of directory `dir`, for another walk through the same
/// fd (a dup of it shares the offset).
pub fn rewind_dir(dir: BorrowedFd) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    if unsafe { libc::lseek(dir.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `getdents64` call on `dir` from its current offset, appending at
/// most `room` bytes of records to `out`; 0 at the end of the directory.
pub fn getdents(dir: BorrowedFd, out: &mut Vec<u8>, room: usize) -> io::Result<usize> {
    // Left uninitialised: only what the kernel wrote is kept, and zeroing
    // it for every directory of a large tree costs more than the walk.
    out.reserve(room);
    let room = out.capacity() - out.len();
    // SAFETY: the kernel writes at most `room` bytes, into the spare
    // capacity after `out`'s initialised bytes.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            out.as_mut_ptr().add(out.len()),
            room,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the `n` bytes after the old length.
    unsafe { out.set_len(out.len() + n as usize) };
    Ok(n as usize)
}

/// The records of directory `dir` ([`read_dir_raw`]) in a vector of their
/// own size: read into a buffer each thread keeps, for listings kept long
/// (32 KiB of room each, shrunk, left the heap in holes).
pub fn read_dir_records(dir: BorrowedFd) -> io::Result<Vec<u8>> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        let records = read_dir_raw(dir, &mut buf).map(|()| buf.to_vec());
        // A huge directory's room is not kept for the rest of the walk.
        buf.clear();
        buf.shrink_to(64 * 1024);
        records
    })
}

/// Calls `each` for every `linux_dirent64` record in `data` (a buffer
/// [`read_dir_raw`] filled, or a copy of one). Records need no alignment.
pub fn parse_dirents(data: &[u8], mut each: impl FnMut(DirEntry)) -> io::Result<()> {
    let mut at = 0;
    // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8,
    // then the NUL-terminated name, padded to d_reclen.
    while at < data.len() {
        let rec = &data[at..];
        if rec.len() < 20 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let ino = u64::from_ne_bytes(rec[0..8].try_into().expect("8 bytes"));
        let off = i64::from_ne_bytes(rec[8..16].try_into().expect("8 bytes"));
        let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
        if reclen < 20 || reclen > rec.len() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let name = &rec[19..reclen];
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        each(DirEntry {
            name: OsStr::from_bytes(&name[..len]),
            ino,
            kind: rec[18],
            off,
        });
        at += reclen;
    }
    Ok(())
}

/// The filesystem type (`f_type` of `fstatfs`) of the file `fd` refers to.
pub fn fs_type(fd: BorrowedFd) -> io::Result<i64> {
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statfs buffer.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn stat_at(dir: BorrowedFd, name: &OsStr) -> io::Result<Stat> {
    Ok(Stat::from_raw(&stat_at_raw(dir, name)?))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`, the whole `struct stat`.
pub fn stat_at_raw(dir: BorrowedFd, name: &OsStr) -> io::Result<libc::stat> {
    let name = cstr(name)?;
    // SAFETY: a zeroed stat is a valid plain-data value for the kernel to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated and `st` is a valid, writable buffer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `lstat` of a host path.
pub fn lstat(path: &Path) -> io::Result<Stat> {
    let p = cstr(path.as_os_str())?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is NUL-terminated and `st` is a valid, writable buffer.
    check(unsafe { libc::lstat(p.as_ptr(), &mut st) })?;
    Ok(Stat::from_raw(&st))
}

/// `linkat(olddir, old, newdir, new, 0)`: never follows a symlink at `old`.
pub fn link_at(olddir: BorrowedFd, old: &OsStr, newdir: BorrowedFd, new: &OsStr) -> io::Result<()> {
    let old = cstr(old)?;
    let new = cstr(new)?;
    // SAFETY: both names are NUL-terminated.
    retry(|| unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

/// Gives the inode open at `fd` the name `new` in `newdir` (`AT_EMPTY_PATH`;
/// needs CAP_DAC_READ_SEARCH). Links exactly the inode that was checked.
pub fn link_fd(fd: BorrowedFd, newdir: BorrowedFd, new: &OsStr) -> io::Result<()> {
    let new = cstr(new)?;
    // SAFETY: the empty old path is a valid C string; `new` is NUL-terminated.
    retry(|| unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// `renameat2` with the caller's flags (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
pub fn rename2(
    olddir: BorrowedFd,
    old: &OsStr,
    newdir: BorrowedFd,
    new: &OsStr,
    flags: libc::c_uint,
) -> io::Result<()> {
    let old = cstr(old)?;
    let new = cstr(new)?;
    // SAFETY: both names are NUL-terminated.
    retry(|| unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

/// Atomically swaps two names (`RENAME_EXCHANGE`): neither name is ever missing.
pub fn rename_exchange(dir: BorrowedFd, a: &OsStr, b: &OsStr) -> io::Result<()> {
    rename2(dir, a, dir, b, libc::RENAME_EXCHANGE)
}

/// Renames without replacing an existing name (`RENAME_NOREPLACE`).
pub fn rename_noreplace(
    olddir: BorrowedFd,
    old: &OsStr,
    newdir: BorrowedFd,
    new: &OsStr,
) -> io::Result<()> {
    rename2(olddir, old, newdir, new, libc::RENAME_NOREPLACE)
}

/// Renames, replacing `new` if it exists.
pub fn rename_at(
    olddir: BorrowedFd,
    old: &OsStr,
    newdir: BorrowedFd,
    new: &OsStr,
) -> io::Result<()> {
    rename2(olddir, old, newdir, new, 0)
}

pub fn unlink_at(dir: BorrowedFd, name: &OsStr) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated.
    retry(|| unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })?;
    Ok(())
}

pub fn mkdir_at(dir: BorrowedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is NUL-terminated.
    retry(|| unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })?;
    Ok(())
}

/// Takes a read lease on `fd` (opened read-only). It fails with EAGAIN while
/// any process holds the file open for writing, which proves that nobody can
/// still write to the inode through an fd opened earlier. A writer that opens
/// it later waits until the lease is released (or `lease-break-time`).
pub fn take_read_lease(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: F_SETLEASE takes an int argument and touches no memory.
    retry(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) })?;
    Ok(())
}

/// True when someone is waiting to open the leased file for writing (the
/// kernel then reports the lease it wants us to downgrade to: `F_UNLCK`).
pub fn lease_break_pending(fd: BorrowedFd) -> io::Result<bool> {
    // SAFETY: F_GETLEASE takes no argument and touches no memory.
    let kind = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLEASE) })?;
    Ok(kind == libc::F_UNLCK)
}

pub fn release_lease(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) })?;
    Ok(())
}

/// A lease break is announced with SIGIO, whose default action kills the
/// process. Unify polls for breaks instead (`lease_break_pending`); ignore it.
pub fn ignore_sigio() {
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGIO, libc::SIG_IGN);
    }
}

/// Sets the inode flags of the file open at `fd` (FS_IOC_SETFLAGS).
pub fn set_inode_flags(fd: BorrowedFd, flags: u32) -> io::Result<()> {
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    // An int, whatever the ioctl's number says (a long): the kernel reads
    // an int, which in a long is its low half only on a little-endian CPU.
    let flags = flags as libc::c_int;
    // SAFETY: FS_IOC_SETFLAGS reads an int from the int we pass, which
    // lives through the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_SETFLAGS, &flags) }).map(|_| ())
}

/// `chattr +i` and `chattr +a` among [`inode_flags`].
pub const FS_IMMUTABLE_FL: u32 = 0x10;
pub const FS_APPEND_FL: u32 = 0x20;

/// The inode flag that keeps a directory's entries from being renamed or
/// removed (a link swapped in, or a break's copy renamed over a name, could
/// not be put in place there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirLock {
    /// `chattr +i`: no new name either.
    Immutable,
    /// `chattr +a`: new names only.
    AppendOnly,
}

impl DirLock {
    /// Which of the two the inode `flags` have (immutable wins).
    pub fn of(flags: u32) -> Option<DirLock> {
        if flags & FS_IMMUTABLE_FL != 0 {
            Some(DirLock::Immutable)
        } else if flags & FS_APPEND_FL != 0 {
            Some(DirLock::AppendOnly)
        } else {
            None
        }
    }
}

impl std::fmt::Display for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            DirLock::Immutable => "immutable (chattr +i)",
            DirLock::AppendOnly => "append-only (chattr +a)",
        })
    }
}

/// The inode flags of the file open at `fd` (`chattr`'s, FS_IOC_GETFLAGS);
/// 0 where the filesystem keeps none.
pub fn inode_flags(fd: BorrowedFd) -> io::Result<u32> {
    match get_inode_flags(fd) {
        Err(e) if unsupported(&e) => Ok(0),
        r => r,
    }
}

/// [`inode_flags`], failing where the filesystem keeps none.
pub fn get_inode_flags(fd: BorrowedFd) -> io::Result<u32> {
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes an int (see `set_inode_flags`) to the
    // int we pass, which lives through the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) })?;
    Ok(flags as u32)
}

/// What FS_IOC_FSGETXATTR tells of a file: xfs' inode flags (ext4 and
/// btrfs show theirs there too), its extent size hints (xfs) and its
/// project ID (xfs, ext4).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub projid: u32,
    pub cowextsize: u32,
}

// struct fsxattr: xflags, extsize, nextents, projid, cowextsize, pad[8].
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;

/// The [`FsXattr`] of the file open at `fd`; zeros where the filesystem
/// keeps none.
pub fn fs_xattr(fd: BorrowedFd) -> io::Result<FsXattr> {
    match get_fsxattr_raw(fd) {
        Ok(raw) => Ok(FsXattr {
            xflags: raw[0],
            extsize: raw[1],
            projid: raw[3],
            cowextsize: raw[4],
        }),
        Err(e) if unsupported(&e) => Ok(FsXattr::default()),
        Err(e) => Err(e),
    }
}

/// Whether an inode-flags ioctl failed because the filesystem has none.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL)
    )
}

/// The struct fsxattr of the file open at `fd`, as FS_IOC_FSGETXATTR fills it.
pub fn get_fsxattr_raw(fd: BorrowedFd) -> io::Result<[u32; 7]> {
    let mut raw = [0u32; 7];
    // SAFETY: FS_IOC_FSGETXATTR writes a 28-byte struct fsxattr to the
    // buffer we pass, which is 28 bytes and lives through the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, raw.as_mut_ptr()) })?;
    Ok(raw)
}

/// Sets the struct fsxattr of the file open at `fd` (FS_IOC_FSSETXATTR).
pub fn set_fsxattr_raw(fd: BorrowedFd, raw: &[u32; 7]) -> io::Result<()> {
    // SAFETY: FS_IOC_FSSETXATTR reads a 28-byte struct fsxattr from the
    // buffer we pass, which is 28 bytes and lives through the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, raw.as_ptr()) })?;
    Ok(())
}

/// Inode flags (`chattr`) a new file takes from its directory, which a copy
/// must have only if its source has them: s u c S d A m j t C x. A
/// directory hands them down on ext4 (+d, +S, +A, +j …), btrfs (+C, +c,
/// +m) and xfs (+S, +A, +d). Not i and a (a copy is written, renamed and
/// changed after; a source with them is not copied to be changed), nor E
/// and V, which SETFLAGS does not change.
pub const COPIED_FLAGS: u32 =
    0x1 | 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x400 | 0x4000 | 0x8000 | 0x80_0000 | 0x200_0000;

/// xfs' own flags (fsx_xflags) a new file takes from its directory, which
/// a copy must have only if its source has them: the extent size hints
/// (extsize, cowextsize, with their sizes), nodefrag, filestream, dax. Not
/// realtime, which cannot change once the file is made.
pub const COPIED_XFLAGS: u32 = 0x800 | 0x2000 | 0x4000 | 0x8000 | 0x1_0000;

/// A directory whose new entries take its project ID (`chattr +P`).
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

/// Makes the new, still empty file `dst` carry the inode flags of `src`
/// where a new file takes them from its directory instead: the `chattr`
/// flags of [`COPIED_FLAGS`], xfs' of [`COPIED_XFLAGS`] with their extent
/// sizes, and the project ID (a directory with +P hands its own down) —
/// but where `into`, the directory `dst` is to be linked or renamed into,
/// is +P, that directory's project ID: the kernel refuses any other there
/// (EXDEV). Normally it clears what the directory handed down. Call it
/// before any data goes in: btrfs changes NOCOW, and xfs an extent size
/// hint, only while a file has no data. Fails where the filesystem refuses.
pub fn copy_inherited_flags(
    src: BorrowedFd,
    dst: BorrowedFd,
    into: Option<BorrowedFd>,
) -> io::Result<()> {
    let want = inode_flags(src)? & COPIED_FLAGS;
    let have = inode_flags(dst)?;
    if have & COPIED_FLAGS != want {
        set_inode_flags(dst, (have & !COPIED_FLAGS) | want)?;
    }
    let (from, mut to) = match (get_fsxattr_raw(src), get_fsxattr_raw(dst)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) if unsupported(&e) => return Ok(()),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let before = to;
    // The chattr flags' xflags (set above) stay as they are now.
    to[0] = (to[0] & !COPIED_XFLAGS) | (from[0] & COPIED_XFLAGS);
    to[1] = if from[0] & 0x800 != 0 { from[1] } else { 0 };
    to[3] = match into.map(fs_xattr).transpose()? {
        Some(dir) if dir.xflags & FS_XFLAG_PROJINHERIT != 0 => dir.projid,
        _ => from[3],
    };
    to[4] = if from[0] & 0x1_0000 != 0 { from[4] } else { 0 };
    if to == before {
        return Ok(());
    }
    set_fsxattr_raw(dst, &to)
}

/// Shares `src`'s data blocks with `dst` (FICLONE): a copy that costs nothing
/// on xfs and btrfs. Fails with EOPNOTSUPP/EXDEV/EINVAL where unsupported.
pub fn ficlone(dst: BorrowedFd, src: BorrowedFd) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its integer argument.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) })?;
    Ok(())
}

/// Copies the first `len` bytes of `src` into `dst`, a new empty file of the
/// caller's, without filling holes: see [`copy_sparse`].
pub fn copy_data(src: BorrowedFd, dst: BorrowedFd, len: u64) -> io::Result<()> {
    copy_sparse(src, dst, len, 1 << 30, |_, _| {})
}

/// Copies the first `len` bytes of `src` into `dst`, a new empty file of the
/// caller's, and keeps holes holes: only the data segments `SEEK_DATA` and
/// `SEEK_HOLE` find are copied (copy_file_range, which on a filesystem
/// without reflinks writes out the zeros of a hole; read/write where it
/// cannot copy between the two files), at their offsets, and the size is set
/// with ftruncate at the end. A filesystem without `SEEK_DATA` (EINVAL) gets
/// the whole rest copied as data. Data is copied in pieces of at most
/// `chunk` bytes; `copied(offset, n)` is called after each (to start its
/// writeback, say). Fails with `UnexpectedEof` if `src` is shorter than
/// `len` by the end.
pub fn copy_sparse(
    src: BorrowedFd,
    dst: BorrowedFd,
    len: u64,
    chunk: u64,
    mut copied: impl FnMut(u64, u64),
) -> io::Result<()> {
    let mut by_rw = false;
    let mut off = 0;
    while off < len {
        let (data, end) = match next_data(src, off)? {
            Some((d, e)) => (d, e.min(len)),
            None => break,
        };
        if data >= len {
            break;
        }
        let mut at = data;
        while at < end {
            let want = (end - at).min(chunk.max(1));
            let n = if by_rw {
                copy_by_rw(src, dst, at, want)?
            } else {
                match copy_range_once(src, dst, at, want) {
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
                        ) =>
                    {
                        by_rw = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Err(shrank());
            }
            copied(at, n);
            at += n;
        }
        off = end;
    }
    // A source that shrank shows as a hole at its end (SEEK_DATA: ENXIO).
    if fstat(src)?.size < len {
        return Err(shrank());
    }
    // SAFETY: plain integer arguments.
    check(unsafe { libc::ftruncate(dst.as_raw_fd(), len as libc::off_t) })?;
    Ok(())
}

/// The next data segment of `fd` at or after `off`: its start and end (the
/// next hole, which may lie past the size the caller copies). `None` when
/// only a hole (or the end of the file) follows. Without `SEEK_DATA`
/// support, everything from `off` on counts as data.
pub fn next_data(fd: BorrowedFd, off: u64) -> io::Result<Option<(u64, u64)>> {
    let seek = |at: u64, whence: i32| {
        // SAFETY: plain integer arguments.
        let r = unsafe { libc::lseek(fd.as_raw_fd(), at as libc::off_t, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    let data = match seek(off, libc::SEEK_DATA) {
        Ok(d) => d,
        // No data at or after `off`: the rest is a hole (or past the end).
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Some((off, u64::MAX))),
        Err(e) => return Err(e),
    };
    let hole = match seek(data, libc::SEEK_HOLE) {
        Ok(h) => h,
        // The file shrank between the two calls: the caller notices.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => data,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => u64::MAX,
        Err(e) => return Err(e),
    };
    Ok(Some((data, hole.max(data))))
}

/// Reads a file from its start as `read` would, but gives its holes
/// (`SEEK_DATA`) as zeros without reading them: what they read as, for a
/// `memset` instead of the kernel zeroing page after page (which also fills
/// the page cache with them). For hashing files that may be sparse (object
/// files a restore gave holes). A file with as many blocks as bytes has no
/// holes and is read plainly.
pub struct HolesAsZeros<'a> {
    file: &'a std::fs::File,
    at: u64,
    /// Zeros (a hole) from `at` up to here.
    zeros_end: u64,
    /// Data from `zeros_end` up to here (at most); past it, look again.
    /// `u64::MAX`: read on plainly.
    data_end: u64,
}

impl<'a> HolesAsZeros<'a> {
    pub fn new(file: &'a std::fs::File) -> io::Result<HolesAsZeros<'a>> {
        use std::os::unix::fs::MetadataExt;
        let st = file.metadata()?;
        let dense = st.blocks().saturating_mul(512) >= st.len();
        Ok(HolesAsZeros {
            file,
            at: 0,
            zeros_end: 0,
            data_end: if dense { u64::MAX } else { 0 },
        })
    }
}

impl io::Read for HolesAsZeros<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.data_end {
            (self.zeros_end, self.data_end) = match next_data(self.file.as_fd(), self.at)? {
                Some(segment) => segment,
                // A hole to the end; what is appended meanwhile is data.
                None => (fstat(self.file.as_fd())?.size, u64::MAX),
            };
        }
        let up_to = |end: u64| {
            buf.len()
                .min(usize::try_from(end - self.at).unwrap_or(usize::MAX))
        };
        if self.at < self.zeros_end {
            let n = up_to(self.zeros_end);
            buf[..n].fill(0);
            self.at += n as u64;
            return Ok(n);
        }
        let n = up_to(self.data_end);
        let n = std::os::unix::fs::FileExt::read_at(self.file, &mut buf[..n], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// One `copy_file_range` call between two open files at explicit offsets.
pub fn copy_range(
    src: BorrowedFd,
    off_in: u64,
    dst: BorrowedFd,
    off_out: u64,
    len: u64,
) -> io::Result<usize> {
    let mut off_in = off_in as libc::loff_t;
    let mut off_out = off_out as libc::loff_t;
    // SAFETY: the offsets are valid, writable loff_t values we own.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            len as usize,
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One copy_file_range call of at most `len` bytes at `off` in both files.
fn copy_range_once(src: BorrowedFd, dst: BorrowedFd, off: u64, len: u64) -> io::Result<u64> {
    copy_range(src, off, dst, off, len.min(1 << 30)).map(|n| n as u64)
}

fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "file shrank while being copied",
    )
}

/// Copies up to `len` bytes at `off` by pread/pwrite; returns how many (0 at
/// the end of `src`).
fn copy_by_rw(src: BorrowedFd, dst: BorrowedFd, off: u64, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let n = loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::pread(
                src.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                off as libc::off_t,
            )
        };
        match usize::try_from(n) {
            Ok(n) => break n,
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(io::Error::last_os_error()),
        }
    };
    let mut done = 0;
    while done < n {
        // SAFETY: `buf[done..n]` is initialised and readable.
        let w = unsafe {
            libc::pwrite(
                dst.as_raw_fd(),
                buf[done..n].as_ptr().cast(),
                n - done,
                (off + done as u64) as libc::off_t,
            )
        };
        match usize::try_from(w) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(w) => done += w,
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(io::Error::last_os_error()),
        }
    }
    Ok(n as u64)
}

pub fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    retry(|| unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    Ok(())
}

pub fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain integer arguments.
    retry(|| unsafe { libc::fchmod(fd.as_raw_fd(), mode) })?;
    Ok(())
}

/// Raises the soft open-file limit to the hard one (the usual soft 1024 is
/// for programs that use `select`) and returns it.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| {
            io::Error::other(format!(
                "cannot raise the open-file limit from {soft} to {hard}: {e}"
            ))
        })?;
    }
    Ok(hard)
}

/// `text`, an error's message, with the open-file limit and what to do
/// where it says that limit was hit: a bare "Too many open files" (EMFILE:
/// this process's RLIMIT_NOFILE; ENFILE: the system's fs.file-max) names
/// neither. Text that names the limit already is left as it is.
pub fn explain_fd_limit(text: &str) -> String {
    let enfile = io::Error::from_raw_os_error(libc::ENFILE).to_string();
    let emfile = io::Error::from_raw_os_error(libc::EMFILE).to_string();
    if text.contains("RLIMIT_NOFILE") || text.contains("fs.file-max") {
        return text.to_owned();
    }
    if text.contains(&enfile) {
        let max = std::fs::read_to_string("/proc/sys/fs/file-max").unwrap_or_default();
        return format!(
            "{text} (the system's open-file limit, fs.file-max, is {}: close files or raise it, \
             `sysctl fs.file-max=N`)",
            max.trim()
        );
    }
    if text.contains(&emfile) {
        use nix::sys::resource::{getrlimit, Resource};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((0, 0));
        return format!(
            "{text} (the open-file limit, RLIMIT_NOFILE, is {soft}, hard limit {hard}: raise it \
             (`ulimit -n N` in the shell that runs unifs, systemd LimitNOFILE=) and run again)"
        );
    }
    text.to_owned()
}

/// Whether the file at `fd` (`size` bytes long) has a hole before its end
/// (`SEEK_HOLE`; false where the filesystem cannot tell). Leaves the file
/// offset at 0.
pub fn has_hole(fd: BorrowedFd, size: u64) -> io::Result<bool> {
    // SAFETY: plain integer arguments.
    let hole = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_HOLE) };
    let err = (hole < 0).then(io::Error::last_os_error);
    // SAFETY: as above.
    if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    match err {
        None => Ok((hole as u64) < size),
        Some(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENXIO)) => Ok(false),
        Some(e) => Err(e),
    }
}

/// Flushes `fd` (a directory too) to disk.
pub fn fsync(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: plain integer argument.
    retry(|| unsafe { libc::fsync(fd.as_raw_fd()) })?;
    Ok(())
}

/// Writes the file's dirty data to disk and waits for it
/// (`sync_file_range` WAIT_BEFORE | WRITE | WAIT_AFTER), without forcing a
/// journal commit or a disk cache flush as fdatasync does. Enough before a
/// change whose durability needs the data: the data blocks' allocation,
/// and ext4's or xfs's conversion of unwritten extents (done before the
/// writeback counts as finished), are journaled first, so a journal commit
/// that makes the later change durable makes them durable too, and flushes
/// the disk cache before it is written. A file with nothing dirty costs a
/// lookup of its page cache.
pub fn write_data_out(fd: BorrowedFd) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain integer arguments; offset and length 0 mean the whole file.
    retry(|| unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, flags) })?;
    Ok(())
}

/// When this boot began, in seconds since the epoch (`btime` of /proc/stat).
pub fn boot_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("btime "))?;
    line["btime ".len()..].trim().parse().ok()
}

/// Sets atime and mtime of `fd`.
pub fn futimens(fd: BorrowedFd, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    let times = timespecs(atime, mtime);
    // SAFETY: `times` is an array of two valid timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })?;
    Ok(())
}

/// Sets the mtime of the file open at `fd` (an `O_PATH` fd too) and leaves
/// its atime as it is (`UTIME_OMIT`).
/// A file handle (`name_to_handle_at`) of the file open at `fd`: its
/// identity on its filesystem, wherever it is renamed to, for
/// [`open_by_handle`]. `None` where the filesystem gives none.
pub fn file_handle(fd: BorrowedFd) -> Option<Box<[u8]>> {
    const MAX_HANDLE_SZ: usize = 128;
    // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes;
    // u32 words, so the buffer is aligned for it.
    let mut buf = [0u32; 2 + MAX_HANDLE_SZ / 4];
    buf[0] = MAX_HANDLE_SZ as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a file_handle with room for MAX_HANDLE_SZ bytes, as
    // its handle_bytes says; the empty path is NUL-terminated and
    // AT_EMPTY_PATH makes the call act on `fd` itself.
    let r = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return None;
    }
    let len = 8 + (buf[0] as usize).min(MAX_HANDLE_SZ);
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).take(len).collect();
    Some(bytes.into_boxed_slice())
}

/// Opens, read-only, the file of `handle` (from [`file_handle`]) on the
/// filesystem mounted where `mount_fd` is (needs CAP_DAC_READ_SEARCH).
pub fn open_by_handle(mount_fd: BorrowedFd, handle: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let mut buf = vec![0u32; handle.len().div_ceil(4)];
    for (w, chunk) in buf.iter_mut().zip(handle.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u32::from_ne_bytes(b);
    }
    if handle.len() < 8 || buf[0] as usize != handle.len() - 8 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `buf` holds a file_handle whose handle_bytes matches the bytes
    // that follow it; a non-negative result is a new fd.
    let fd = check(unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            flags | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open_by_handle_at and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_mtime(fd: BorrowedFd, mtime: Timestamp) -> io::Result<()> {
    let mut times = timespecs(mtime, mtime);
    times[0].tv_nsec = libc::UTIME_OMIT;
    // SAFETY: the empty path is NUL-terminated; `times` holds two valid
    // timespecs. AT_EMPTY_PATH makes it act on `fd` itself.
    let r = check(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    });
    match r {
        // Kernels before 5.8 know no AT_EMPTY_PATH here (no O_PATH fds then).
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // SAFETY: `times` holds two valid timespecs.
            check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })?;
        }
        r => {
            r?;
        }
    }
    Ok(())
}

fn timespecs(atime: Timestamp, mtime: Timestamp) -> [libc::timespec; 2] {
    [atime, mtime].map(Timestamp::timespec)
}

/// Restores the default SIGPIPE action (Rust ignores it), so `unifs … | head`
/// ends quietly like other command-line tools instead of failing to print.
pub fn default_sigpipe() {
    // SAFETY: setting a signal to SIG_DFL installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Restores the default SIGCHLD action. An ignored SIGCHLD survives exec,
/// and a program started so (by a parent that set it to avoid zombies)
/// has its children reaped by the kernel: every wait for one fails with
/// ECHILD. The mount daemon's readiness probe, a child, then never
/// answered, and `unifs mount` and `unifs run` failed after 30 s ("did
/// not answer").
pub fn default_sigchld() {
    // SAFETY: setting a signal to SIG_DFL installs no handler code.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
}

/// Unblocks every signal. A blocked one survives exec, and a program
/// started so (by a parent that blocked signals around its fork, a
/// supervisor's bug) never took the SIGTERM, SIGINT, SIGHUP or SIGQUIT it
/// passes on: `unifs run` and `guest exec` ran on, their guest untold.
/// Call while this process has one thread.
pub fn unblock_signals() {
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
}

/// Ignores SIGPIPE, for the processes that outlive whoever reads their
/// output or reports (mount daemons, keepers): a write to a reader that is
/// gone then fails with EPIPE, which costs that write, not the process.
/// (Inherited across exec: a child about to exec resets it, as
/// `std::process::Command` and `guest::sys::reset_signals` do.)
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Makes this process non-dumpable: a process of the same uid can then
/// neither ptrace it nor open its /proc/PID/fd, mem or environ, which would
/// reach the host trees and the store it holds open. (The process still
/// reads its own /proc/self; an exec resets the flag, so the programs a
/// guest runs are as dumpable as ever.)
pub fn set_not_dumpable() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::debug!("PR_SET_DUMPABLE: {e}");
    }
}

/// Ignores SIGXFSZ, for the processes whose writes may go past the file
/// size limit (RLIMIT_FSIZE, `ulimit -f`) of whoever started them: the
/// write then fails with EFBIG instead of the signal killing the process
/// (a mount daemon leaving a dead mount). Reset before exec as SIGPIPE is.
pub fn ignore_sigxfsz() {
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// The soft limit of `resource` as people read it: `unlimited`, or the
/// number (`?` where it cannot be read).
pub fn soft_limit_text(resource: nix::sys::resource::Resource) -> String {
    match nix::sys::resource::getrlimit(resource) {
        Ok((libc::RLIM_INFINITY, _)) => "unlimited".into(),
        Ok((soft, _)) => soft.to_string(),
        Err(_) => "?".into(),
    }
}

/// The soft file size limit (RLIMIT_FSIZE) in bytes, if there is one.
pub fn file_size_limit() -> Option<u64> {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE) {
        Ok((libc::RLIM_INFINITY, _)) | Err(_) => None,
        Ok((soft, _)) => Some(soft),
    }
}

/// `e`, an EFBIG said so that it names the file size limit that caused it
/// (with SIGXFSZ ignored, a write past RLIMIT_FSIZE fails so).
pub fn name_file_size_limit(e: io::Error) -> io::Error {
    match (e.raw_os_error(), file_size_limit()) {
        (Some(libc::EFBIG), Some(limit)) => io::Error::new(
            e.kind(),
            format!(
                "{e}: the file size limit (RLIMIT_FSIZE, `ulimit -f`) is {limit} bytes; \
                 raise it (`ulimit -f unlimited`) and run again"
            ),
        ),
        _ => e,
    }
}

/// Under a finite RLIMIT_AS (`ulimit -v`), keeps every thread's small
/// allocations in malloc's main arena. glibc gives each new thread an arena
/// of its own, reserving 64 MiB of address space for it: four threads cost
/// `unifs run` 256 MiB of a limit that only counts, and which of them got
/// their reservation before the limit ran out varied with the load, so a run
/// was refused (the FUSE threads' check) or aborted on a 64 KiB allocation.
/// Without a limit, or with one of 4 GiB and more (where a few 64 MiB
/// reservations rarely decide), the arenas stay: less locking between
/// FUSE threads.
pub fn one_arena_under_address_limit() {
    let limited = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS)
        .is_ok_and(|(soft, _)| soft < 4 << 30);
    #[cfg(target_env = "gnu")]
    if limited {
        // SAFETY: mallopt only tunes the allocator; called at the start of
        // main, before this process starts a thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = limited;
}

/// Runs `f` while `len` bytes of address space are mapped (if RLIMIT_AS
/// allows it; else None): mapped outside malloc, whose dynamic mmap
/// threshold a large block freed would raise for good.
pub fn while_mapped<T>(len: usize, f: impl FnOnce() -> T) -> Option<T> {
    // SAFETY: a new private anonymous mapping the kernel places; nothing
    // else refers to it, and it is unmapped with the same address and length.
    let at = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if at == libc::MAP_FAILED {
        return None;
    }
    let out = f();
    // SAFETY: the mapping made above, which nothing else uses.
    unsafe {
        libc::munmap(at, len);
    }
    Some(out)
}

/// Why threads could not be started, for an error: the limits that
/// usually cause it (address space: each thread's stack and buffers;
/// processes: each thread counts) and their values.
pub fn thread_limits_text() -> String {
    use nix::sys::resource::Resource;
    // RLIMIT_AS is in bytes, `ulimit -v` in KiB: both, so that the user
    // finds the number they set.
    let address_space = match nix::sys::resource::getrlimit(Resource::RLIMIT_AS) {
        Ok((soft, _)) if soft != libc::RLIM_INFINITY => {
            format!("RLIMIT_AS is {soft} bytes (`ulimit -v` {})", soft / 1024)
        }
        _ => format!(
            "RLIMIT_AS (`ulimit -v`) is {}",
            soft_limit_text(Resource::RLIMIT_AS)
        ),
    };
    format!(
        "{address_space}, RLIMIT_NPROC (`ulimit -u`) is {}",
        soft_limit_text(Resource::RLIMIT_NPROC)
    )
}

/// Sets atime and mtime of a path without following a symlink at its end.
pub fn lutimens(path: &Path, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    let p = cstr(path.as_os_str())?;
    let times = timespecs(atime, mtime);
    // SAFETY: `p` is NUL-terminated and `times` holds two valid timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Creates a device node or FIFO (`mode` includes the file type bits).
pub fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path.as_os_str())?;
    // SAFETY: `p` is NUL-terminated; the other arguments are plain integers.
    check(unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) })?;
    Ok(())
}

/// Unit tests run side by side in one process: a child another test
/// spawns holds a copy of every fd open at its fork until its exec, so a
/// file a test has just written may count as open for writing a moment
/// longer, and a read lease on it fails (EAGAIN). Tests that spawn hold
/// this for writing while they do; tests that lease files they wrote, for
/// reading.
#[cfg(test)]
pub(crate) static SPAWNS: std::sync::RwLock<()> = std::sync::RwLock::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_name_the_same_bytes_in_bash() {
        use std::os::unix::ffi::OsStrExt;
        for name in [
            &b"/plain/path-1.2"[..],
            b"/with space/it's",
            b"/c\xffd",
            b"/new\nline\x1b[31m",
            b"/back\\slash'\xfe1f",
            "/caf\u{e9}".as_bytes(),
            "/bidi\u{202e}txt.exe".as_bytes(),
        ] {
            let word = shell_word(Path::new(OsStr::from_bytes(name)));
            assert!(!word.chars().any(is_hidden), "{word}");
            let _spawning = SPAWNS.write().unwrap_or_else(|e| e.into_inner());
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("printf %s {word}"))
                .output()
                .unwrap();
            assert_eq!(out.stdout, name, "{word}");
        }
    }
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    /// A 64 MiB file with 64 KiB of data at its start, middle and end.
    fn sparse_file(path: &Path) -> Vec<(u64, Vec<u8>)> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(path).unwrap();
        let len = 64 << 20;
        f.set_len(len).unwrap();
        let parts: Vec<(u64, Vec<u8>)> = [0, len / 2 + 4096, len - 65536]
            .iter()
            .enumerate()
            .map(|(i, &at)| (at, vec![b'a' + i as u8; 65536]))
            .collect();
        for (at, data) in &parts {
            f.write_all_at(data, *at).unwrap();
        }
        f.sync_all().unwrap();
        parts
    }

    fn copy_keeps_holes(src: &Path, dst: &Path) {
        let parts = sparse_file(src);
        let from = std::fs::File::open(src).unwrap();
        let to = std::fs::File::create(dst).unwrap();
        let len = from.metadata().unwrap().len();
        let mut pieces = 0;
        copy_sparse(from.as_fd(), to.as_fd(), len, 16384, |_, n| {
            assert!(n <= 16384);
            pieces += 1;
        })
        .unwrap();
        assert!(pieces >= 12, "{pieces} pieces of 16 KiB for 192 KiB");
        to.sync_all().unwrap();
        let m = std::fs::metadata(dst).unwrap();
        assert_eq!(m.len(), len);
        assert!(
            m.blocks() * 512 < 4 << 20,
            "the copy allocated {} bytes",
            m.blocks() * 512
        );
        assert!(std::fs::read(src).unwrap() == std::fs::read(dst).unwrap());
        let copy = std::fs::read(dst).unwrap();
        for (at, data) in parts {
            assert_eq!(&copy[at as usize..at as usize + data.len()], &data[..]);
        }
    }

    use std::os::fd::AsFd;

    #[test]
    fn copy_data_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        copy_keeps_holes(&dir.path().join("src"), &dir.path().join("dst"));
    }

    #[test]
    fn copy_between_filesystems_reads_and_writes_only_the_data() {
        // tmpfs to the temp dir's filesystem: copy_file_range says EXDEV.
        let shm = Path::new("/dev/shm");
        let dir = tempfile::tempdir().unwrap();
        if !shm.is_dir()
            || fstat(open_dir(shm).unwrap().as_fd()).unwrap().dev
                == fstat(open_dir(dir.path()).unwrap().as_fd()).unwrap().dev
        {
            eprintln!("skipping: no /dev/shm on another filesystem");
            return;
        }
        let src = tempfile::Builder::new().tempdir_in(shm).unwrap();
        copy_keeps_holes(&src.path().join("src"), &dir.path().join("dst"));
    }

    #[test]
    fn copy_data_of_a_file_that_is_shorter_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("src"), vec![1u8; 10000]).unwrap();
        let from = std::fs::File::open(dir.path().join("src")).unwrap();
        let to = std::fs::File::create(dir.path().join("dst")).unwrap();
        let e = copy_data(from.as_fd(), to.as_fd(), 20000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // An empty file, and a file that is one hole.
        for len in [0, 1 << 20] {
            let f = std::fs::File::create(dir.path().join("hole")).unwrap();
            f.set_len(len).unwrap();
            let to = std::fs::File::create(dir.path().join("dst")).unwrap();
            copy_data(f.as_fd(), to.as_fd(), len).unwrap();
            let m = to.metadata().unwrap();
            assert_eq!((m.len(), m.blocks()), (len, 0));
        }
    }

    #[test]
    fn holes_as_zeros_reads_what_read_reads() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        sparse_file(&path);
        // A hole at its start and its end too, and a file that is one hole.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len((64 << 20) + 12345).unwrap();
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: plain integer arguments on an fd of ours.
        check(unsafe { libc::fallocate(f.as_raw_fd(), punch, 0, 4096) }).unwrap();
        std::fs::File::create(dir.path().join("hole"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        std::fs::write(dir.path().join("dense"), vec![7u8; 300_000]).unwrap();
        for name in ["f", "hole", "dense"] {
            let file = std::fs::File::open(dir.path().join(name)).unwrap();
            let mut got = Vec::new();
            // Odd-sized reads, so that pieces end inside holes and data.
            let mut reader = HolesAsZeros::new(&file).unwrap();
            let mut buf = vec![0u8; 100_000];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(
                got == std::fs::read(dir.path().join(name)).unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn set_mtime_works_on_an_o_path_fd_and_keeps_atime() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        let t = |sec| Timestamp { sec, nsec: 5 };
        futimens(open_dir(&sub).unwrap().as_fd(), t(1000), t(2000)).unwrap();
        let fd = open_beneath(
            open_dir(dir.path()).unwrap().as_fd(),
            Path::new("d"),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .unwrap();
        set_mtime(fd.as_fd(), t(3000)).unwrap();
        let m = std::fs::metadata(&sub).unwrap();
        assert_eq!((m.atime(), m.atime_nsec()), (1000, 5));
        assert_eq!((m.mtime(), m.mtime_nsec()), (3000, 5));
    }

    #[test]
    fn read_dir_lists_every_entry_with_its_inode_and_type() {
        let dir = tempfile::tempdir().unwrap();
        // More names than one 32 KiB getdents buffer holds.
        let mut want = BTreeMap::new();
        for i in 0..2000 {
            let name = format!("file-with-a-longish-name-{i:05}");
            std::fs::write(dir.path().join(&name), b"x").unwrap();
            let ino = std::fs::metadata(dir.path().join(&name)).unwrap().ino();
            want.insert(name, (ino, libc::DT_REG));
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let ino = std::fs::metadata(dir.path().join("sub")).unwrap().ino();
        want.insert("sub".into(), (ino, libc::DT_DIR));
        let fd = open_dir(dir.path()).unwrap();
        let mut got = BTreeMap::new();
        read_dir(std::os::fd::AsFd::as_fd(&fd), |e| {
            if e.name != "." && e.name != ".." {
                got.insert(e.name.to_string_lossy().into_owned(), (e.ino, e.kind));
            }
        })
        .unwrap();
        assert_eq!(got, want);
    }

    /// Guard: a stat's time at the edges as the instant it stands for:
    /// nanoseconds of exactly a second and more carry into the seconds
    /// (before 1970 too), the ends of i64 seconds clamp, and UTIME_NOW's
    /// and UTIME_OMIT's values as raw nanoseconds never reach utimensat.
    #[test]
    fn a_stat_time_past_a_second_is_the_instant_it_stands_for() {
        let t = |sec, nsec| Timestamp { sec, nsec };
        let s = Timestamp::of_stat;
        assert_eq!(s(100, 1_000_000_000), t(101, 0));
        assert_eq!(s(100, 999_999_999), t(100, 999_999_999));
        assert_eq!(s(-5, 1_000_000_000), t(-4, 0));
        assert_eq!(s(-1, 1_999_999_999), t(0, 999_999_999));
        assert_eq!(s(-2, 500_000_000), t(-2, 500_000_000));
        assert_eq!(s(i64::MIN, 0), t(i64::MIN, 0));
        assert_eq!(s(i64::MIN, 1_073_741_823), t(i64::MIN + 1, 73_741_823));
        assert_eq!(s(i64::MAX, 999_999_999), t(i64::MAX, 999_999_999));
        // Past the last second: the latest time there is.
        assert_eq!(s(i64::MAX, 1_000_000_000), t(i64::MAX, 999_999_999));
        assert_eq!(s(i64::MAX - 1, 1_000_000_000), t(i64::MAX, 0));
        assert_eq!(Timestamp::of_nanos(-1), t(-1, 999_999_999));
        assert_eq!(Timestamp::of_nanos(i128::MIN), t(i64::MIN, 0));
        assert_eq!(Timestamp::of_nanos(i128::MAX), t(i64::MAX, 999_999_999));
        for (raw, ns) in [
            (libc::UTIME_NOW, 73_741_823),
            (libc::UTIME_OMIT, 73_741_822),
            (1_000_000_000, 0),
        ] {
            let ts = t(-7, raw as u32).timespec();
            assert_eq!((ts.tv_sec, ts.tv_nsec), (-6, ns), "raw {raw}");
            assert_eq!(t(-7, raw as u32).instant(), t(-6, ns as u32));
        }
        // A time below a second is itself.
        for x in [t(0, 0), t(-1, 999_999_999), t(i64::MIN, 0), t(7, 1)] {
            assert_eq!(x.instant(), x);
            let ts = x.timespec();
            assert_eq!((ts.tv_sec, i64::from(x.nsec)), (x.sec, ts.tv_nsec));
        }
    }
}
