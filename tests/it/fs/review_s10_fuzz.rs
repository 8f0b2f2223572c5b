//! Differential fuzzing of the mount against ext4: one seeded sequence of
//! operations runs on a plain directory and on a mount of the same tree, a
//! guest unified with a copy of itself first, so that most of its files are
//! shared store objects that break somewhere in the sequence (and that
//! `unifs unify` links again now and then, behind the mount's back). Each
//! operation's result (value, errno, data read, attributes) must be the
//! same on both, and after each one the whole trees must be (seen as root).
//! The operations run in a thread of their own, as root or as uid 1000 in
//! group 1001 too (thread-local credentials: raw setresuid), over files of
//! several owners and modes.
//!
//! `UNIFS_FUZZ_OPS=N` makes each sequence N operations long (default 150),
//! `UNIFS_FUZZ_SEEDS=a,b,…` runs other seeds. For a failure:
//! `UNIFS_FUZZ_LOG=FILE` writes the last sequence's operations to FILE, and
//! `UNIFS_FUZZ_KEEP=i,j,…` runs only those steps of the seed's sequence (to
//! shrink it to the few that matter).

use super::harness::{Mount, World};
use crate::common::require_root;
use crate::tree::{bytes, unify_json};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Directories paths are made in, and the names made in them.
const DIRS: [&str; 4] = ["", "d0", "d1", "d0/d"];
const LEAVES: [&str; 6] = ["a", "b", "c", "d", "e", "n"];
const SLOTS: usize = 6;
/// Explicit times are before this; times the kernel sets ("now") after.
const OLD: i64 = 1_500_000_000;
/// Numbers of paths that link a store object start here (docs/mount.md).
const SHARED_INO: u64 = 0xC000_0000;

#[derive(Clone, Debug)]
enum Op {
    Open(String, i32, u32, usize),
    Close(usize),
    Write(usize, u64, usize),
    Pwrite(usize, u64, usize, i64),
    Read(usize, usize),
    Pread(usize, usize, i64),
    Lseek(usize, i64, i32),
    Ftruncate(usize, i64),
    Truncate(String, i64),
    Fallocate(usize, i32, i64, i64),
    Fstat(usize),
    Fchmod(usize, u32),
    Fchown(usize, u32, u32),
    Futimens(usize, [Time; 2]),
    Fsetxattr(usize, &'static str, u64, i32),
    Fgetxattr(usize, &'static str),
    Fsync(usize),
    Flock(usize, i32),
    Setlk(usize, i16, i64, i64),
    Getlk(usize, i16, i64, i64),
    Unlink(String),
    Rmdir(String),
    Mkdir(String, u32),
    Rename(String, String, u32),
    Link(String, String),
    Symlink(&'static str, String),
    Readlink(String),
    Chmod(String, u32),
    Chown(String, u32, u32, bool),
    Utimensat(String, [Time; 2], bool),
    Setxattr(String, &'static str, u64, i32, bool),
    Getxattr(String, &'static str, bool),
    Listxattr(String, bool),
    Removexattr(String, &'static str, bool),
    Access(String, i32, bool),
    Stat(String, bool),
    Readdir(String),
    Umask(u32),
    /// copy_file_range from the second slot's fd at an offset into the
    /// first's at an offset.
    CopyRange(usize, usize, usize, i64, i64),
    /// getdents64 of the slot's fd from its start: the names.
    Getdents(usize),
    /// openat(2) relative to the slot's fd (closed at once), unlinkat.
    OpenAt(usize, &'static str, i32),
    UnlinkAt(usize, &'static str, i32),
    /// `unifs unify` of the guest and its copy, behind the mount's back
    /// (the plain tree is left as it is: the guest must see no change).
    Unify,
}

#[derive(Clone, Copy, Debug)]
enum Time {
    Now,
    Omit,
    At(i64, i64),
}

impl Time {
    fn spec(self) -> libc::timespec {
        match self {
            Time::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            Time::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            Time::At(s, n) => libc::timespec {
                tv_sec: s,
                tv_nsec: n,
            },
        }
    }
}

fn path(rng: &mut Rng) -> String {
    let d = rng.pick(&DIRS);
    let l = rng.pick(&LEAVES);
    if d.is_empty() {
        l.to_string()
    } else {
        format!("{d}/{l}")
    }
}

fn any_path(rng: &mut Rng) -> String {
    // Not the root: renaming the test's directory and the mount point differ.
    if rng.chance(10) {
        rng.pick(&DIRS[1..]).to_string()
    } else {
        path(rng)
    }
}

fn time(rng: &mut Rng) -> Time {
    match rng.below(4) {
        0 => Time::Now,
        1 => Time::Omit,
        _ => Time::At(
            1_000_000 + rng.below(1000) as i64,
            rng.below(3) as i64 * 250_000_000,
        ),
    }
}

const XATTRS: [&str; 3] = ["user.a", "user.b", "user.origin"];

fn gen(rng: &mut Rng) -> Op {
    let slot = rng.below(SLOTS as u64) as usize;
    let off =
        |rng: &mut Rng| rng.pick(&[0, 1, 4095, 4096, 70_000, 200_000]) as i64 + rng.below(3) as i64;
    match rng.below(51) {
        0..=7 => {
            let mut flags = rng.pick(&[libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR]);
            for f in [
                libc::O_CREAT,
                libc::O_EXCL,
                libc::O_TRUNC,
                libc::O_APPEND,
                libc::O_DIRECTORY,
                libc::O_NOFOLLOW,
            ] {
                if rng.chance(if f == libc::O_CREAT { 40 } else { 15 }) {
                    flags |= f;
                }
            }
            let mode = rng.pick(&[0o644, 0o600, 0o777, 0o4755, 0o2775, 0o000]);
            Op::Open(any_path(rng), flags, mode, slot)
        }
        8 => Op::Close(slot),
        9..=10 => Op::Write(slot, rng.next(), rng.below(6000) as usize),
        11 => Op::Pwrite(slot, rng.next(), rng.below(6000) as usize, off(rng)),
        12..=13 => Op::Read(slot, rng.below(9000) as usize),
        14 => Op::Pread(slot, rng.below(9000) as usize, off(rng)),
        15 => {
            let whence = rng.pick(&[
                libc::SEEK_SET,
                libc::SEEK_CUR,
                libc::SEEK_END,
                libc::SEEK_DATA,
                libc::SEEK_HOLE,
            ]);
            Op::Lseek(slot, off(rng), whence)
        }
        16 => Op::Ftruncate(slot, off(rng)),
        17 => Op::Truncate(path(rng), off(rng)),
        18 => {
            let mode = rng.pick(&[
                0,
                libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                libc::FALLOC_FL_ZERO_RANGE,
            ]);
            Op::Fallocate(slot, mode, off(rng), rng.pick(&[1, 4096, 65536]))
        }
        19 => Op::Fstat(slot),
        20 => Op::Fchmod(
            slot,
            rng.pick(&[0o644, 0o600, 0o4755, 0o2755, 0o1777, 0o000]),
        ),
        21 => Op::Fchown(
            slot,
            rng.pick(&[0, 1000, 1001, u32::MAX]),
            rng.pick(&[0, 1000, 1001, u32::MAX]),
        ),
        22 => Op::Futimens(slot, [time(rng), time(rng)]),
        23 => Op::Fsetxattr(
            slot,
            rng.pick(&XATTRS),
            rng.next(),
            rng.pick(&[0, libc::XATTR_CREATE, libc::XATTR_REPLACE]),
        ),
        24 => Op::Fgetxattr(slot, rng.pick(&XATTRS)),
        25 => Op::Fsync(slot),
        26 => {
            let op = rng.pick(&[libc::LOCK_SH, libc::LOCK_EX, libc::LOCK_UN]);
            Op::Flock(slot, op | libc::LOCK_NB)
        }
        27 => {
            let t = rng.pick(&[libc::F_RDLCK, libc::F_WRLCK, libc::F_UNLCK]) as i16;
            if rng.chance(50) {
                Op::Setlk(slot, t, rng.below(100) as i64, rng.below(100) as i64)
            } else {
                Op::Getlk(slot, t, rng.below(100) as i64, rng.below(100) as i64)
            }
        }
        28..=29 => Op::Unlink(path(rng)),
        30 => Op::Rmdir(any_path(rng)),
        31 => Op::Mkdir(path(rng), rng.pick(&[0o755, 0o700, 0o1777, 0o2775])),
        32..=33 => {
            let flags = rng.pick(&[0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE]);
            Op::Rename(any_path(rng), any_path(rng), flags)
        }
        34 => Op::Link(path(rng), path(rng)),
        // Never absolute nor with "..": a link must resolve inside its tree
        // wherever a rename takes it (the two trees are different paths of
        // one filesystem, beside each other).
        35 => Op::Symlink(rng.pick(&["a", "b", "d0", "d/a", "missing"]), path(rng)),
        36 => Op::Readlink(path(rng)),
        37 => Op::Chmod(
            any_path(rng),
            rng.pick(&[0o644, 0o600, 0o4755, 0o2755, 0o1777, 0o000, 0o777]),
        ),
        38 => Op::Chown(
            any_path(rng),
            rng.pick(&[0, 1000, 1001, u32::MAX]),
            rng.pick(&[0, 1000, 1001, u32::MAX]),
            rng.chance(30),
        ),
        39 => Op::Utimensat(any_path(rng), [time(rng), time(rng)], rng.chance(30)),
        40 => Op::Setxattr(
            any_path(rng),
            rng.pick(&XATTRS),
            rng.next(),
            rng.pick(&[0, libc::XATTR_CREATE, libc::XATTR_REPLACE]),
            rng.chance(30),
        ),
        41 => Op::Getxattr(any_path(rng), rng.pick(&XATTRS), rng.chance(30)),
        42 => Op::Listxattr(any_path(rng), rng.chance(30)),
        43 => Op::Removexattr(any_path(rng), rng.pick(&XATTRS), rng.chance(30)),
        46 => Op::CopyRange(
            slot,
            rng.below(SLOTS as u64) as usize,
            rng.below(9000) as usize,
            off(rng),
            off(rng),
        ),
        47 => Op::Getdents(slot),
        50 => Op::Unify,
        48 => {
            let flags = rng.pick(&[
                libc::O_RDONLY,
                libc::O_WRONLY | libc::O_CREAT,
                libc::O_RDWR | libc::O_TRUNC,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            ]);
            Op::OpenAt(slot, rng.pick(&LEAVES), flags)
        }
        49 => Op::UnlinkAt(slot, rng.pick(&LEAVES), rng.pick(&[0, libc::AT_REMOVEDIR])),
        44 => {
            let mode = rng.pick(&[
                libc::F_OK,
                libc::R_OK,
                libc::W_OK,
                libc::X_OK,
                libc::R_OK | libc::W_OK,
            ]);
            if rng.chance(20) {
                Op::Umask(rng.pick(&[0o022, 0o077, 0o002, 0]))
            } else {
                Op::Access(any_path(rng), mode, rng.chance(30))
            }
        }
        _ => {
            if rng.chance(30) {
                Op::Readdir(rng.pick(&DIRS).to_string())
            } else {
                Op::Stat(any_path(rng), rng.chance(50))
            }
        }
    }
}

fn cs(base: &Path, rel: &str) -> CString {
    CString::new(base.join(rel).into_os_string().into_encoded_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// What one call returned: its value, or its errno.
fn ret(r: i64) -> String {
    if r < 0 {
        format!("errno {}", errno())
    } else {
        format!("{r}")
    }
}

fn mtime(sec: i64, nsec: i64) -> String {
    // A time the kernel set runs a few ms apart on the two trees.
    if sec < OLD {
        format!("{sec}.{nsec:09}")
    } else {
        "now".to_string()
    }
}

/// The fields of a stat that must agree: not the inode number, st_dev or
/// st_blocks (a break does not copy unwritten extents; docs/mount.md),
/// nor atime and ctime (a shared file shows its mtime as both).
fn show_stat(s: &libc::stat) -> String {
    format!(
        "mode {:o} uid {} gid {} size {} nlink {} mtime {} rdev {}",
        s.st_mode,
        s.st_uid,
        s.st_gid,
        s.st_size,
        s.st_nlink,
        mtime(s.st_mtime, s.st_mtime_nsec),
        s.st_rdev
    )
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    bytes(seed, len)
}

/// Runs `op` with `base` as the tree's root; `fd` is the slot's fd (-1 if
/// none). Returns what must agree and the slot's fd afterwards.
fn exec(base: &Path, op: &Op, fd: i32, other: i32) -> (String, i32) {
    let mut keep = fd;
    // SAFETY: every pointer is a NUL-terminated string or a buffer that
    // lives across the call, with the length given.
    let out = unsafe {
        match op {
            Op::Open(p, flags, mode, _) => {
                if fd >= 0 {
                    libc::close(fd);
                }
                let r = libc::open(cs(base, p).as_ptr(), flags | libc::O_CLOEXEC, *mode);
                keep = r;
                if r < 0 {
                    ret(-1)
                } else {
                    let mut s: libc::stat = std::mem::zeroed();
                    libc::fstat(r, &mut s);
                    format!("opened {}", show_stat(&s))
                }
            }
            Op::Umask(m) => {
                libc::umask(*m);
                String::new()
            }
            Op::Close(_) => {
                keep = -1;
                if fd < 0 {
                    return ("no fd".into(), -1);
                }
                ret(libc::close(fd) as i64)
            }
            Op::Write(_, seed, len) => {
                let d = data(*seed, *len);
                ret(libc::write(fd, d.as_ptr().cast(), d.len()) as i64)
            }
            Op::Pwrite(_, seed, len, off) => {
                let d = data(*seed, *len);
                ret(libc::pwrite(fd, d.as_ptr().cast(), d.len(), *off) as i64)
            }
            Op::Read(_, len) | Op::Pread(_, len, _) => {
                // After a listing, a directory's offset is ext4's end
                // cookie (i64::MAX), past which a read fails with EINVAL.
                if is_dir(fd) {
                    return ("a directory".into(), fd);
                }
                let mut b = vec![0u8; *len];
                let n = match op {
                    Op::Pread(_, _, off) => libc::pread(fd, b.as_mut_ptr().cast(), *len, *off),
                    _ => libc::read(fd, b.as_mut_ptr().cast(), *len),
                };
                if n < 0 {
                    ret(-1)
                } else {
                    format!("{n} {}", blake3::hash(&b[..n as usize]).to_hex())
                }
            }
            Op::Lseek(_, off, whence) => {
                // A directory's offsets are cookies of the filesystem's own
                // (ext4's hashes; FUSE's the daemon's listing index).
                if is_dir(fd) {
                    return ("a directory".into(), fd);
                }
                ret(libc::lseek(fd, *off, *whence))
            }
            Op::Ftruncate(_, len) => ret(libc::ftruncate(fd, *len) as i64),
            Op::Truncate(p, len) => ret(libc::truncate(cs(base, p).as_ptr(), *len) as i64),
            Op::Fallocate(_, mode, off, len) => ret(libc::fallocate(fd, *mode, *off, *len) as i64),
            Op::Fstat(_) => {
                let mut s: libc::stat = std::mem::zeroed();
                if libc::fstat(fd, &mut s) < 0 {
                    ret(-1)
                } else {
                    show_stat(&s)
                }
            }
            Op::Fchmod(_, mode) => ret(libc::fchmod(fd, *mode) as i64),
            Op::Fchown(_, u, g) => ret(libc::fchown(fd, *u, *g) as i64),
            Op::Futimens(_, t) => {
                let t = [t[0].spec(), t[1].spec()];
                ret(libc::futimens(fd, t.as_ptr()) as i64)
            }
            Op::Fsetxattr(_, name, v, flags) => {
                let n = CString::new(*name).unwrap();
                let v = format!("v{v}");
                ret(libc::fsetxattr(fd, n.as_ptr(), v.as_ptr().cast(), v.len(), *flags) as i64)
            }
            Op::Fgetxattr(_, name) => {
                let n = CString::new(*name).unwrap();
                let mut b = [0u8; 256];
                let r = libc::fgetxattr(fd, n.as_ptr(), b.as_mut_ptr().cast(), b.len());
                value(r, &b)
            }
            Op::Fsync(_) => ret(libc::fsync(fd) as i64),
            Op::Flock(_, how) => ret(libc::flock(fd, *how) as i64),
            Op::Setlk(_, t, start, len) | Op::Getlk(_, t, start, len) => {
                let mut l: libc::flock = std::mem::zeroed();
                l.l_type = *t;
                l.l_whence = libc::SEEK_SET as i16;
                l.l_start = *start;
                l.l_len = *len;
                let cmd = if matches!(op, Op::Setlk(..)) {
                    libc::F_SETLK
                } else {
                    libc::F_GETLK
                };
                let r = libc::fcntl(fd, cmd, &mut l);
                if r < 0 {
                    ret(-1)
                } else {
                    format!("{r} type {} start {} len {}", l.l_type, l.l_start, l.l_len)
                }
            }
            Op::Unlink(p) => ret(libc::unlink(cs(base, p).as_ptr()) as i64),
            Op::Rmdir(p) => ret(libc::rmdir(cs(base, p).as_ptr()) as i64),
            Op::Mkdir(p, mode) => ret(libc::mkdir(cs(base, p).as_ptr(), *mode) as i64),
            Op::Rename(a, b, flags) => ret(libc::renameat2(
                libc::AT_FDCWD,
                cs(base, a).as_ptr(),
                libc::AT_FDCWD,
                cs(base, b).as_ptr(),
                *flags,
            ) as i64),
            Op::Link(a, b) => ret(libc::link(cs(base, a).as_ptr(), cs(base, b).as_ptr()) as i64),
            Op::Symlink(t, p) => {
                let t = CString::new(*t).unwrap();
                ret(libc::symlink(t.as_ptr(), cs(base, p).as_ptr()) as i64)
            }
            Op::Readlink(p) => {
                let mut b = [0u8; 256];
                let r = libc::readlink(cs(base, p).as_ptr(), b.as_mut_ptr().cast(), b.len());
                value(r, &b)
            }
            Op::Chmod(p, mode) => ret(libc::chmod(cs(base, p).as_ptr(), *mode) as i64),
            Op::Chown(p, u, g, nofollow) => {
                let c = cs(base, p);
                ret(if *nofollow {
                    libc::lchown(c.as_ptr(), *u, *g)
                } else {
                    libc::chown(c.as_ptr(), *u, *g)
                } as i64)
            }
            Op::Utimensat(p, t, nofollow) => {
                let t = [t[0].spec(), t[1].spec()];
                let flags = if *nofollow {
                    libc::AT_SYMLINK_NOFOLLOW
                } else {
                    0
                };
                ret(libc::utimensat(libc::AT_FDCWD, cs(base, p).as_ptr(), t.as_ptr(), flags) as i64)
            }
            Op::Setxattr(p, name, v, flags, nofollow) => {
                let n = CString::new(*name).unwrap();
                let v = format!("v{v}");
                let c = cs(base, p);
                let set = if *nofollow {
                    libc::lsetxattr
                } else {
                    libc::setxattr
                };
                ret(set(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), *flags) as i64)
            }
            Op::Getxattr(p, name, nofollow) => {
                let n = CString::new(*name).unwrap();
                let mut b = [0u8; 256];
                let c = cs(base, p);
                let get = if *nofollow {
                    libc::lgetxattr
                } else {
                    libc::getxattr
                };
                let r = get(c.as_ptr(), n.as_ptr(), b.as_mut_ptr().cast(), b.len());
                value(r, &b)
            }
            Op::Listxattr(p, nofollow) => {
                let mut b = [0u8; 1024];
                let c = cs(base, p);
                let list = if *nofollow {
                    libc::llistxattr
                } else {
                    libc::listxattr
                };
                let r = list(c.as_ptr(), b.as_mut_ptr().cast(), b.len());
                if r < 0 {
                    ret(-1)
                } else {
                    let mut names: Vec<&[u8]> = b[..r as usize]
                        .split(|c| *c == 0)
                        .filter(|n| !n.is_empty())
                        .collect();
                    names.sort();
                    format!("{r} {names:?}")
                }
            }
            Op::Removexattr(p, name, nofollow) => {
                let n = CString::new(*name).unwrap();
                let c = cs(base, p);
                let rm = if *nofollow {
                    libc::lremovexattr
                } else {
                    libc::removexattr
                };
                ret(rm(c.as_ptr(), n.as_ptr()) as i64)
            }
            Op::Access(p, mode, eaccess) => {
                let flags = if *eaccess { libc::AT_EACCESS } else { 0 };
                ret(libc::faccessat(libc::AT_FDCWD, cs(base, p).as_ptr(), *mode, flags) as i64)
            }
            Op::Stat(p, nofollow) => {
                let mut s: libc::stat = std::mem::zeroed();
                let c = cs(base, p);
                let r = if *nofollow {
                    libc::lstat(c.as_ptr(), &mut s)
                } else {
                    libc::stat(c.as_ptr(), &mut s)
                };
                if r < 0 {
                    ret(-1)
                } else {
                    show_stat(&s)
                }
            }
            Op::CopyRange(_, _, len, off_in, off_out) => {
                let (mut a, mut b) = (*off_in, *off_out);
                ret(libc::copy_file_range(other, &mut a, fd, &mut b, *len, 0) as i64)
            }
            Op::Getdents(_) => {
                let mut names = Vec::new();
                let mut buf = vec![0u8; 8192];
                let mut r = libc::lseek(fd, 0, libc::SEEK_SET);
                while r >= 0 {
                    r = libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len());
                    if r <= 0 {
                        break;
                    }
                    let mut at = 0usize;
                    while at < r as usize {
                        // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
                        let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                        let name = std::ffi::CStr::from_ptr(buf[at + 19..].as_ptr().cast());
                        names.push(name.to_string_lossy().into_owned());
                        at += reclen;
                    }
                }
                if r < 0 {
                    ret(-1)
                } else {
                    names.sort();
                    format!("{names:?}")
                }
            }
            Op::OpenAt(_, leaf, flags) => {
                let c = CString::new(*leaf).unwrap();
                let r = libc::openat(fd, c.as_ptr(), flags | libc::O_CLOEXEC, 0o640);
                if r < 0 {
                    ret(-1)
                } else {
                    let mut s: libc::stat = std::mem::zeroed();
                    libc::fstat(r, &mut s);
                    libc::close(r);
                    format!("opened {}", show_stat(&s))
                }
            }
            Op::UnlinkAt(_, leaf, flags) => {
                let c = CString::new(*leaf).unwrap();
                ret(libc::unlinkat(fd, c.as_ptr(), *flags) as i64)
            }
            Op::Unify => String::new(),
            Op::Readdir(p) => match fs::read_dir(base.join(p)) {
                Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
                Ok(rd) => {
                    let mut names: Vec<String> = rd
                        .map(|e| match e {
                            Ok(e) => e.file_name().to_string_lossy().into_owned(),
                            Err(e) => format!("error {e}"),
                        })
                        .collect();
                    names.sort();
                    format!("{names:?}")
                }
            },
        }
    };
    (out, keep)
}

fn is_dir(fd: i32) -> bool {
    // SAFETY: fstat into a zeroed stat.
    let mut s: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut s) == 0 && s.st_mode & libc::S_IFMT == libc::S_IFDIR }
}

fn value(r: isize, b: &[u8]) -> String {
    if r < 0 {
        ret(-1)
    } else {
        format!("{:?}", String::from_utf8_lossy(&b[..r as usize]))
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread with credentials of its own (setresuid by raw syscall changes
/// the calling thread only) and a umask of its own (CLONE_FS unshared).
struct Actor {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Actor {
    fn new(uid: u32) -> Actor {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || {
            // SAFETY: plain syscalls changing this thread's own state.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_FS), 0);
                libc::umask(0o022);
                if uid != 0 {
                    // In group 1001 too: files of that group, chgrp to it.
                    let groups: [libc::gid_t; 1] = [1001];
                    assert_eq!(libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()), 0);
                    assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
                    assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
                }
            }
            for job in rx {
                job();
            }
        });
        Actor {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn run(&self, base: PathBuf, op: Op, fd: i32, other: i32) -> (String, i32) {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(exec(&base, &op, fd, other));
        });
        self.tx.as_ref().unwrap().send(job).unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("an operation hung")
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The fixture: files of several owners and modes, xattrs, a sparse file,
/// a guest's own hardlink pair, symlinks, an empty file, a sticky and a
/// private directory.
fn build(root: &Path) {
    let f = |rel: &str, content: &[u8], mode: u32, uid: u32, gid: u32| {
        let p = root.join(rel);
        fs::write(&p, content).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    let d = |rel: &str, mode: u32, uid: u32| {
        let p = root.join(rel);
        fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    d("d0", 0o755, 0);
    d("d1", 0o1777, 0);
    d("d0/d", 0o700, 1000);
    f("a", &bytes(1, 70_000), 0o644, 0, 0);
    f("b", &bytes(2, 5000), 0o600, 1000, 1000);
    f("c", &bytes(3, 300), 0o640, 1001, 1000);
    f("d0/a", &bytes(4, 9000), 0o666, 1000, 1001);
    f("d0/b", &bytes(5, 100), 0o755, 0, 0);
    f("d0/c", &bytes(6, 4096), 0o4755, 0, 0);
    f("d1/a", &bytes(7, 10), 0o644, 1001, 1001);
    f("d1/b", &bytes(8, 8192), 0o600, 1000, 1000);
    f("d0/d/a", &bytes(9, 1), 0o644, 1000, 1000);
    f("d0/d/b", b"", 0o644, 1000, 1000);
    f("d0/e", &bytes(10, 3000), 0o664, 1000, 1000);
    fs::hard_link(root.join("d0/e"), root.join("d1/c")).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let s = fs::File::create(root.join("d1/d")).unwrap();
        s.set_len(300_000).unwrap();
        s.write_all_at(&bytes(11, 5000), 0).unwrap();
        s.write_all_at(&bytes(12, 5000), 131_072).unwrap();
        std::os::unix::fs::chown(root.join("d1/d"), Some(1000), Some(1000)).unwrap();
    }
    std::os::unix::fs::symlink("a", root.join("e")).unwrap();
    std::os::unix::fs::symlink("b", root.join("d1/e")).unwrap();
    crate::tree::set_xattr(&root.join("a"), "user.origin", b"package");
    crate::tree::set_xattr(&root.join("d0/a"), "user.a", b"one");
    crate::tree::set_xattr(&root.join("d0"), "user.b", b"dir");
    // Fixed old times, files first, then directories bottom up.
    let t = |rel: &str, sec: i64| {
        let c = cs(root, rel);
        let ts = [libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        }; 2];
        // SAFETY: a NUL-terminated path and two timespecs.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(r, 0);
    };
    for (i, rel) in [
        "a", "b", "c", "d0/a", "d0/b", "d0/c", "d1/a", "d1/b", "d0/d/a", "d0/d/b", "d0/e", "d1/d",
        "e", "d1/e", "d0/d", "d0", "d1", "",
    ]
    .iter()
    .enumerate()
    {
        t(rel, 1_000_000_000 + i as i64 * 1000);
    }
}

/// One path of a tree as root sees it.
fn entry(p: &Path) -> (String, u64) {
    let m = fs::symlink_metadata(p).unwrap();
    let mut s = format!(
        "mode {:o} uid {} gid {} nlink {} mtime {}",
        m.mode(),
        m.uid(),
        m.gid(),
        m.nlink(),
        mtime(m.mtime(), m.mtime_nsec())
    );
    let ft = m.file_type();
    if ft.is_file() {
        let c = fs::read(p).unwrap();
        let _ = write!(s, " size {} {}", m.size(), blake3::hash(&c).to_hex());
    } else if ft.is_symlink() {
        let _ = write!(s, " -> {:?}", fs::read_link(p).unwrap());
    } else {
        let _ = write!(s, " size {}", m.size());
    }
    if !ft.is_symlink() {
        let mut x = unifs::sys::xattr::list_path(p).unwrap();
        x.sort();
        let _ = write!(s, " xattrs {x:?}");
    }
    (s, m.ino())
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, (String, u64)>) {
    let p = root.join(rel);
    let e = entry(&p);
    let is_dir = fs::symlink_metadata(&p).unwrap().is_dir();
    out.insert(rel.to_path_buf(), e);
    if is_dir {
        for d in fs::read_dir(&p).unwrap() {
            walk(root, &rel.join(d.unwrap().file_name()), out);
        }
    }
}

fn tree(root: &Path) -> BTreeMap<PathBuf, (String, u64)> {
    let mut out = BTreeMap::new();
    // Twice: the first walk's reads may split a file (an fd of the test
    // holds its shared inode; the documented exception) after its path or
    // one of its hardlinks was stat'ed.
    walk(root, Path::new(""), &mut out);
    out.clear();
    walk(root, Path::new(""), &mut out);
    out
}

struct Slot {
    plain: i32,
    mount: i32,
    /// The mount's number of the file when it was opened, if shared.
    shared: Option<u64>,
}

impl Slot {
    const NONE: Slot = Slot {
        plain: -1,
        mount: -1,
        shared: None,
    };
}

/// Whether `path` (in the backing tree, followed as the open followed it)
/// is a store object: it carries the store's marker.
fn backing_is_object(path: &Path) -> bool {
    let (Ok(p), Ok(name)) = (
        CString::new(path.as_os_str().as_encoded_bytes()),
        CString::new("trusted.unifs.object"),
    ) else {
        return false;
    };
    // SAFETY: NUL-terminated strings; a size query (no buffer).
    unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

/// The documented exception (docs/mount.md): a change through an fd of a
/// shared file the guest unlinked (or whose path a break split off) fails
/// with ESTALE: the file is the store's, and no guest path leads to a copy.
fn unlinked_shared(slots: &[Slot], slot: Option<usize>, pfd: i32, op: &Op, got: &str) -> bool {
    let Some(s) = slot else {
        return false;
    };
    let change = matches!(
        op,
        Op::Fchmod(..) | Op::Fchown(..) | Op::Futimens(..) | Op::Fsetxattr(..)
    );
    // SAFETY: fstat of an fd this test holds into a zeroed stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let gone = unsafe { libc::fstat(pfd, &mut st) } == 0 && st.st_nlink == 0;
    change && gone && slots[s].shared.is_some() && got == format!("errno {}", libc::ESTALE)
}

/// Runs `ops` operations of `seed` as `uid`; panics at the first
/// difference, with the operations that led to it.
fn fuzz(seed: u64, uid: u32, ops: usize, opts: &[&str]) {
    let w = World::new();
    let store = w.tmp.path().join("store-real");
    let (plain, g, g2) = (w.dir("plain"), w.dir("g"), w.dir("g2"));
    for r in [&plain, &g, &g2] {
        build(r);
    }
    let s = unify_json(&store, &[&g, &g2]);
    assert!(s["files_linked"].as_u64().unwrap() >= 9, "{s}");
    let m = Mount::start(&store, &g, &w.dir("m"), opts);
    let actor = Actor::new(uid);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut slots: Vec<Slot> = (0..SLOTS).map(|_| Slot::NONE).collect();
    let mut log: Vec<String> = Vec::new();
    // Plain inode → the mount's number for it: must never change.
    let mut numbers: HashMap<u64, u64> = HashMap::new();
    let mut fail = None;
    let keep: Option<Vec<usize>> = std::env::var("UNIFS_FUZZ_KEEP").ok().map(|s| {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().unwrap())
            .collect()
    });
    let last = keep
        .as_ref()
        .and_then(|k| k.iter().max().copied())
        .unwrap_or(ops);
    for step in 0..=last {
        if step > 0 {
            let op = gen(&mut rng);
            if keep.as_ref().is_some_and(|k| !k.contains(&step)) {
                continue;
            }
            let slot = match op {
                Op::Open(.., s)
                | Op::Close(s)
                | Op::Write(s, ..)
                | Op::Pwrite(s, ..)
                | Op::Read(s, ..)
                | Op::Pread(s, ..)
                | Op::Lseek(s, ..)
                | Op::Ftruncate(s, ..)
                | Op::Fallocate(s, ..)
                | Op::Fstat(s)
                | Op::Fchmod(s, ..)
                | Op::Fchown(s, ..)
                | Op::Futimens(s, ..)
                | Op::Fsetxattr(s, ..)
                | Op::Fgetxattr(s, ..)
                | Op::Fsync(s)
                | Op::Flock(s, ..)
                | Op::Setlk(s, ..)
                | Op::Getlk(s, ..)
                | Op::CopyRange(s, ..)
                | Op::Getdents(s)
                | Op::OpenAt(s, ..)
                | Op::UnlinkAt(s, ..) => Some(s),
                _ => None,
            };
            let (pfd, mfd) = slot.map_or((-1, -1), |s| (slots[s].plain, slots[s].mount));
            let (pother, mother) = match op {
                Op::CopyRange(_, from, ..) => (slots[from].plain, slots[from].mount),
                _ => (-1, -1),
            };
            if matches!(op, Op::Unify) {
                let s = unify_json(&store, &[&g, &g2]);
                log.push(format!("{step}: unify: {} linked", s["files_linked"]));
            }
            let (want, pfd) = actor.run(plain.clone(), op.clone(), pfd, pother);
            let (got, mfd) = actor.run(m.dir.clone(), op.clone(), mfd, mother);
            log.push(format!("{step}: {op:?} -> {want}"));
            if let Some(s) = slot {
                let mut shared = slots[s].shared.filter(|_| mfd == slots[s].mount);
                if matches!(op, Op::Open(..)) && mfd >= 0 {
                    // SAFETY: fstat of an fd this test holds into a zeroed stat.
                    let mut st: libc::stat = unsafe { std::mem::zeroed() };
                    unsafe { libc::fstat(mfd, &mut st) };
                    // A number from the shared range, or a private file's
                    // number the mount kept after unify linked its path
                    // behind the mount's back (then only its backing file
                    // tells).
                    let Op::Open(p, ..) = &op else { unreachable!() };
                    let linked = st.st_ino >= SHARED_INO || backing_is_object(&g.join(p));
                    shared = linked.then_some(st.st_ino);
                }
                slots[s] = Slot {
                    plain: pfd,
                    mount: mfd,
                    shared,
                };
            }
            if want != got && unlinked_shared(&slots, slot, pfd, &op, &got) {
                // The fd's file differs from then on: close it.
                let s = &mut slots[slot.unwrap()];
                // SAFETY: closing fds this test opened.
                unsafe {
                    libc::close(s.plain);
                    libc::close(s.mount);
                }
                *s = Slot::NONE;
                log.push("   (ESTALE: a shared file unlinked, through an fd): closed".into());
            } else if want != got {
                fail = Some(format!(
                    "step {step}: {op:?}\n  ext4:  {want}\n  mount: {got}"
                ));
                break;
            }
        }
        let (a, b) = (tree(&plain), tree(&m.dir));
        let pa: Vec<(&PathBuf, &String)> = a.iter().map(|(p, (s, _))| (p, s)).collect();
        let pb: Vec<(&PathBuf, &String)> = b.iter().map(|(p, (s, _))| (p, s)).collect();
        if pa != pb {
            let mut d = String::new();
            for (p, s) in &pa {
                if b.get(*p).map(|x| &x.0) != Some(s) {
                    let _ = writeln!(
                        d,
                        "  {p:?}\n    ext4:  {s}\n    mount: {:?}",
                        b.get(*p).map(|x| &x.0)
                    );
                }
            }
            for p in b.keys().filter(|p| !a.contains_key(*p)) {
                let _ = writeln!(d, "  {p:?} only through the mount");
            }
            fail = Some(format!("trees differ after step {step}:\n{d}"));
            break;
        }
        // Hardlink groups and numbers: the same paths share one number, and
        // a file keeps its number (a plain inode gone is forgotten: ext4
        // gives freed numbers out again).
        let mut seen = HashMap::new();
        let mut bad = String::new();
        let mut split = Vec::new();
        for (p, (_, pino)) in &a {
            let mino = b[p].1;
            if let Some(old) = numbers.get(pino) {
                // The documented exception (docs/mount.md): a break while
                // an fd is open on the shared file moves the path to a new
                // number; the old fd keeps the store's file, so its reads,
                // fstat and changes differ from then on: close it.
                // Every fd on it: they all keep the store's file.
                let held: Vec<usize> = (0..slots.len())
                    .filter(|&i| slots[i].shared == Some(*old))
                    .collect();
                if *old != mino && split.contains(old) {
                    // Another name of a file split just now.
                } else if *old != mino && !held.is_empty() {
                    split.push(*old);
                    for i in held {
                        let s = &mut slots[i];
                        // SAFETY: closing fds this test opened.
                        unsafe {
                            libc::close(s.plain);
                            libc::close(s.mount);
                        }
                        *s = Slot::NONE;
                    }
                    log.push(format!("   {p:?} split off its open fds: closed"));
                } else if *old != mino {
                    let _ = writeln!(bad, "  {p:?}: number {mino:#x}, was {old:#x}");
                }
            }
            if let Some(other) = seen.insert(*pino, mino) {
                if other != mino {
                    let _ = writeln!(bad, "  {p:?}: a hardlink numbered {mino:#x} and {other:#x}");
                }
            }
        }
        let mut by_mount = HashMap::new();
        for (pino, mino) in &seen {
            if let Some(other) = by_mount.insert(*mino, *pino) {
                let _ = writeln!(bad, "  number {mino:#x} for two files ({other}, {pino})");
            }
        }
        if !bad.is_empty() {
            fail = Some(format!("numbers after step {step}:\n{bad}"));
            break;
        }
        numbers = seen;
    }
    for s in &slots {
        for fd in [s.plain, s.mount] {
            if fd >= 0 {
                // SAFETY: closing an fd this test opened.
                unsafe { libc::close(fd) };
            }
        }
    }
    drop(actor);
    drop(m);
    if let Ok(p) = std::env::var("UNIFS_FUZZ_LOG") {
        let f = fail.as_deref().unwrap_or("no difference");
        fs::write(p, format!("{f}\n{}", log.join("\n"))).unwrap();
    }
    if let Some(f) = fail {
        let from = log.len().saturating_sub(40);
        panic!(
            "seed {seed} as uid {uid} {opts:?}: {f}\nthe operations before:\n{}",
            log[from..].join("\n")
        );
    }
}

fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("UNIFS_FUZZ_SEEDS") {
        Ok(s) => s.split(',').map(|x| x.trim().parse().unwrap()).collect(),
        Err(_) => default.to_vec(),
    }
}

fn ops() -> usize {
    std::env::var("UNIFS_FUZZ_OPS").map_or(150, |s| s.parse().unwrap())
}

#[test]
fn fuzz_the_mount_against_ext4_as_root() {
    if !require_root("review_s10_fuzz_as_root") {
        return;
    }
    for seed in seeds(&[1, 2, 3]) {
        fuzz(seed, 0, ops(), &[]);
    }
}

#[test]
fn fuzz_the_mount_against_ext4_as_a_user() {
    if !require_root("review_s10_fuzz_as_a_user") {
        return;
    }
    for seed in seeds(&[1, 2, 3]) {
        fuzz(seed, 1000, ops(), &[]);
    }
}

/// The daemon serving reads, writes, lseek and copy_file_range itself.
#[test]
fn fuzz_the_mount_against_ext4_without_passthrough() {
    if !require_root("review_s10_fuzz_without_passthrough") {
        return;
    }
    for seed in seeds(&[4, 5]) {
        fuzz(seed, 0, ops(), &["nopassthrough"]);
        fuzz(seed, 1000, ops(), &["nopassthrough"]);
    }
}

/// A directory removed while a process holds it open (`rm -rf` by another
/// process under a shell's cwd, fts walks) is still a directory to that
/// fd on ext4: fstat shows it with no links, it lists empty, and chmod,
/// utimes, xattrs and fsync through the fd work. The daemon knew open directories
/// by name alone, so fstat failed with ENOENT (glibc's fdopendir, `ls` of
/// the cwd, `pwd -P` fail on it) and the rest with ENOENT or ESTALE.
#[test]
fn an_open_directory_removed_keeps_answering_through_its_fd() {
    if !require_root("review_s10_open_directory_removed") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    let m = w.mount(&g, "m", &[]);
    let run = |base: &Path| -> Vec<String> {
        let dir = base.join("x");
        fs::create_dir(&dir).unwrap();
        let c = cs(base, "x");
        // SAFETY: a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0);
        fs::remove_dir(&dir).unwrap();
        let mut out = Vec::new();
        for op in [
            Op::Fstat(0),
            Op::Fchmod(0, 0o700),
            Op::Fchown(0, 1000, 1000),
            Op::Futimens(0, [Time::At(1000, 0), Time::At(2000, 0)]),
            Op::Fsetxattr(0, "user.a", 7, 0),
            Op::Fgetxattr(0, "user.a"),
            Op::Fsync(0),
            Op::Fstat(0),
        ] {
            out.push(format!("{op:?}: {}", exec(base, &op, fd, -1).0));
        }
        // SAFETY: getdents64 into a buffer of the length given.
        let n = unsafe {
            let mut buf = [0u8; 4096];
            libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len())
        };
        out.push(format!("getdents: {}", ret(n)));
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        out
    };
    let want = run(&plain);
    assert!(want[0].contains("nlink 0"), "{want:?}");
    assert_eq!(run(&m.dir), want);
}
