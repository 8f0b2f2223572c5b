//! The launcher's syscall seam. [`Syscall`] is every call that shapes a
//! guest's view of the system (mounts, pivot_root, hostname, credentials,
//! capabilities, exec); [`Linux`] makes them for real and the test-only
//! `Recorder` writes them down, so the set-up order is unit-tested.
//! The process plumbing (clone3, pidfd, signals) is in `process`, the exec
//! trampoline in `trampoline`. Every `unsafe` block of the launcher lives in
//! this module.

use super::seccomp;
use super::SyscallFilter;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

mod process;
mod trampoline;

pub use process::*;
use trampoline::trampoline;

/// What a mount point must be before something is mounted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountPoint {
    Dir,
    File,
}

/// The calls that set up a guest, in the order the launcher makes them.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// Makes the mount at `path` and every mount below it `nosuid,nodev`
    /// (and read-only with `read_only`), keeping their other flags: a
    /// remount of `path` alone leaves the submounts a recursive bind brought
    /// along as they were on the host.
    fn lock_tree(&self, path: &Path, read_only: bool) -> nix::Result<()>;
    /// The per-mount flags (ro, nosuid, nodev, noexec, atime) of the mount
    /// holding `path`, for a bind remount that must keep them.
    fn mount_flags(&self, path: &Path) -> nix::Result<MsFlags>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// Makes `path` (below `root`) exist as a directory or empty file,
    /// refusing any symlink on the way: the guest tree is untrusted and a
    /// symlink could move a mount onto a host path.
    fn prepare_mount_point(&self, root: &Path, path: &Path, kind: MountPoint) -> nix::Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, perm: u32, dev: u64) -> nix::Result<()>;
    /// Gives `path` (not followed if a symlink) to `uid` and `gid`.
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    fn loopback_up(&self) -> nix::Result<()>;
    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()>;
    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> nix::Result<()>;
    fn setresgid(&self, gid: Gid) -> nix::Result<()>;
    fn setresuid(&self, uid: Uid) -> nix::Result<()>;
    /// Drops `cap` from the bounding set, so no exec can ever grant it.
    fn drop_bounding_cap(&self, cap: u32) -> nix::Result<()>;
    /// Sets effective and permitted to `keep`, inheritable and ambient to none.
    fn set_caps(&self, keep: u64) -> nix::Result<()>;
    /// Joins a new anonymous session keyring, so the guest does not share
    /// the launching session's keys.
    fn new_session_keyring(&self) -> nix::Result<()>;
    fn set_no_new_privs(&self) -> nix::Result<()>;
    /// Installs the syscall filter for `mode` (none for off).
    fn set_syscall_filter(&self, mode: SyscallFilter) -> nix::Result<()>;
    fn set_parent_death_signal(&self) -> nix::Result<()>;
    /// Replaces the process; returns only on failure. A failure after the
    /// launcher's code is gone (see `trampoline`) is written to `report`.
    fn exec(&self, program: &Path, args: &[String], env: &[String], report: BorrowedFd) -> Errno;
}

/// The real thing.
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn lock_tree(&self, path: &Path, read_only: bool) -> nix::Result<()> {
        let mut attr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if read_only {
            attr |= MOUNT_ATTR_RDONLY;
        }
        match mount_setattr_recursive(path, attr) {
            // Before Linux 5.12: each mount below `path`, one by one.
            Err(Errno::ENOSYS) => {}
            r => return r,
        }
        let mut extra = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if read_only {
            extra |= MsFlags::MS_RDONLY;
        }
        // The mount at `path` too, as mount_setattr's AT_RECURSIVE does.
        let all = std::iter::once(path.to_path_buf()).chain(mounts_below(path)?);
        for at in all {
            let kept = self.mount_flags(&at)?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | kept | extra;
            match nix::mount::mount(None::<&str>, &at, None::<&str>, flags, None::<&str>) {
                // Covered by a later mount: not reachable, nothing to do.
                Err(Errno::EINVAL) => {}
                r => r?,
            }
        }
        Ok(())
    }

    fn mount_flags(&self, path: &Path) -> nix::Result<MsFlags> {
        // statvfs(2) f_flag; nix's FsFlags drops ST_NOSYMFOLLOW (Linux 5.10),
        // which a remount would otherwise reset too.
        const ST_NOSYMFOLLOW: libc::c_ulong = 0x2000;
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is NUL-terminated and `st` is a statvfs-sized
        // buffer; both outlive the call.
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        Errno::result(rc)?;
        // SAFETY: statvfs succeeded, so it filled `st`.
        let have = unsafe { st.assume_init() }.f_flag;
        let pairs = [
            (libc::ST_RDONLY, MsFlags::MS_RDONLY),
            (libc::ST_NOSUID, MsFlags::MS_NOSUID),
            (libc::ST_NODEV, MsFlags::MS_NODEV),
            (libc::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (libc::ST_NOATIME, MsFlags::MS_NOATIME),
            (libc::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (libc::ST_RELATIME, MsFlags::MS_RELATIME),
            (
                ST_NOSYMFOLLOW,
                MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW),
            ),
        ];
        Ok(pairs
            .iter()
            .filter(|(st, _)| have & *st != 0)
            .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn prepare_mount_point(&self, root: &Path, path: &Path, kind: MountPoint) -> nix::Result<()> {
        let rel = path.strip_prefix(root).map_err(|_| Errno::EINVAL)?;
        let mut at = root.to_path_buf();
        let parts: Vec<_> = rel.components().collect();
        for (i, part) in parts.iter().enumerate() {
            let std::path::Component::Normal(name) = part else {
                return Err(Errno::EINVAL);
            };
            at.push(name);
            let last = i + 1 == parts.len();
            match std::fs::symlink_metadata(&at) {
                Ok(md) if md.file_type().is_symlink() => return Err(Errno::ELOOP),
                Ok(md) if !last && !md.is_dir() => return Err(Errno::ENOTDIR),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if last && kind == MountPoint::File {
                        nix::fcntl::open(
                            &at,
                            nix::fcntl::OFlag::O_CREAT
                                | nix::fcntl::OFlag::O_EXCL
                                | nix::fcntl::OFlag::O_CLOEXEC
                                | nix::fcntl::OFlag::O_WRONLY,
                            Mode::from_bits_truncate(0o644),
                        )?;
                    } else {
                        nix::unistd::mkdir(&at, Mode::from_bits_truncate(0o755))?;
                    }
                }
                Err(e) => return Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            }
        }
        Ok(())
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: u32, dev: u64) -> nix::Result<()> {
        nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(perm), dev)?;
        // mknod obeys the umask; the nodes need their exact mode.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            path,
            Mode::from_bits_truncate(perm),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()> {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
    }

    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
        nix::unistd::symlinkat(target, nix::fcntl::AT_FDCWD, link)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn loopback_up(&self) -> nix::Result<()> {
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into
        // `req`, which lives across the call; `sock` is an open socket.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
        Errno::result(rc)?;
        // SAFETY: the kernel just filled ifru_flags for this request.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
        Errno::result(rc).map(drop)
    }

    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()> {
        nix::unistd::setgroups(groups)
    }

    fn setrlimit(&self, resource: u32, soft: u64, hard: u64) -> nix::Result<()> {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `limit` is a valid rlimit the call only reads; a resource
        // number the kernel does not know is EINVAL.
        Errno::result(unsafe { libc::setrlimit(resource as _, &limit) }).map(drop)
    }

    fn setresgid(&self, gid: Gid) -> nix::Result<()> {
        nix::unistd::setresgid(gid, gid, gid)
    }

    fn setresuid(&self, uid: Uid) -> nix::Result<()> {
        nix::unistd::setresuid(uid, uid, uid)
    }

    fn drop_bounding_cap(&self, cap: u32) -> nix::Result<()> {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        match Errno::result(rc) {
            // A capability this kernel does not know is not in the set.
            Err(Errno::EINVAL) => Ok(()),
            r => r.map(drop),
        }
    }

    fn set_caps(&self, keep: u64) -> nix::Result<()> {
        // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        Errno::result(rc)?;
        capset(keep)
    }

    fn new_session_keyring(&self) -> nix::Result<()> {
        const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
        // SAFETY: a null name asks for a new anonymous keyring; no other
        // pointer is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_JOIN_SESSION_KEYRING,
                std::ptr::null::<libc::c_char>(),
            )
        };
        match Errno::result(rc) {
            // A kernel without keys has no keyring to share.
            Err(Errno::ENOSYS) => Ok(()),
            // The kernel never refuses a new anonymous session keyring with
            // EPERM: a syscall filter of the container unifs runs in does
            // (nspawn's, Docker's). The guest inherits that filter, so it
            // cannot reach the keyring either, if `add_key` is refused too.
            Err(Errno::EPERM) if add_key_refused() => Ok(()),
            r => r.map(drop),
        }
    }

    fn set_no_new_privs(&self) -> nix::Result<()> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn set_syscall_filter(&self, mode: SyscallFilter) -> nix::Result<()> {
        match seccomp::program(mode) {
            Some(p) => install_filter(&p),
            None if mode == SyscallFilter::Off => Ok(()),
            // No filter for this architecture: refuse rather than start a
            // guest without the one asked for (rootfs says why).
            None => Err(Errno::ENOSYS),
        }
    }

    fn set_parent_death_signal(&self) -> nix::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
    }

    fn exec(&self, program: &Path, args: &[String], env: &[String], report: BorrowedFd) -> Errno {
        let Ok(args) = cstrings(args.iter().map(|a| a.as_bytes())) else {
            return Errno::EINVAL;
        };
        let Ok(env) = cstrings(env.iter().map(|e| e.as_bytes())) else {
            return Errno::EINVAL;
        };
        let path = match find_executable(program, &env) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
            return Errno::EINVAL;
        };
        // The trampoline gets a copy of `report` that survives the exec into
        // it; dropped before a direct exec, which must not pass it on.
        let report = report
            .try_clone_to_owned()
            .ok()
            .filter(|r| fcntl(r, FcntlArg::F_SETFD(FdFlag::empty())).is_ok());
        if let Some((_report, trampoline)) =
            report.and_then(|r| trampoline(r.as_raw_fd()).map(|t| (r, t)))
        {
            // argv of the trampoline: its name, the program, the program's argv.
            let mut targs = vec![c"unifs-exec".to_owned(), path.clone()];
            targs.extend(args.iter().cloned());
            // Returns only on failure (e.g. vm.memfd_noexec): exec directly.
            let _ = nix::unistd::fexecve(&trampoline, &targs, &env);
        }
        match nix::unistd::execve(&path, &args, &env) {
            Err(e) => e,
            Ok(never) => match never {},
        }
    }
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Kernel ABI of mount_setattr(2), MOUNT_ATTR_SIZE_VER0.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(AT_FDCWD, path, AT_RECURSIVE, {attr_set: attr}): sets
/// `attr` on the whole mount tree at `path`, leaving every other flag alone.
fn mount_setattr_recursive(path: &Path, attr: u64) -> nix::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut args = MountAttr {
        attr_set: attr,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `args` matches the VER0 ABI; both
    // outlive the call, which only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            (libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
            &mut args as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc).map(drop)
}

/// Mount points strictly below `path`, from /proc/self/mountinfo, parents
/// first. An error where it cannot be read: a mount left out would be left
/// unlocked.
fn mounts_below(path: &Path) -> nix::Result<Vec<PathBuf>> {
    let mounts = crate::fs::mountinfo::read()
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(mounts
        .into_iter()
        .map(|m| m.point)
        .filter(|m| m != path && m.starts_with(path))
        .collect())
}

/// The first executable candidate for `program`: ENOENT if there is none,
/// or the error of the first one that exists but cannot be run.
fn find_executable(program: &Path, env: &[CString]) -> Result<PathBuf, Errno> {
    let mut first_err = None;
    for path in exec_candidates(program, env) {
        match nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK) {
            Ok(()) if path.is_file() => return Ok(path),
            Ok(()) => first_err = first_err.or(Some(Errno::EACCES)),
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    Err(first_err.unwrap_or(Errno::ENOENT))
}

/// The window size of the terminal `from`, copied to the terminal `to`.
/// False if `from` is not a terminal.
pub fn copy_window_size(from: BorrowedFd, to: BorrowedFd) -> bool {
    // SAFETY: winsize is plain old data; all-zero is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which outlives the call.
    if unsafe { libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } != 0 {
        return false;
    }
    // SAFETY: TIOCSWINSZ reads one winsize from `ws`.
    unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws) == 0 }
}

fn cstrings<'a>(items: impl Iterator<Item = &'a [u8]>) -> Result<Vec<CString>, Errno> {
    items
        .map(|b| CString::new(b).map_err(|_| Errno::EINVAL))
        .collect()
}

/// Where to look for `program`: itself when it has a slash, else each
/// directory of the guest's PATH (execvpe would use the host's).
fn exec_candidates(program: &Path, env: &[CString]) -> Vec<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return vec![program.to_path_buf()];
    }
    let path = env
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(|&b| b == b':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(OsStr::from_bytes(d)).join(program))
        .collect()
}

fn capset(keep: u64) -> nix::Result<()> {
    use crate::sys::caps::CapData;
    let word = |w: u64| CapData {
        effective: w as u32,
        permitted: w as u32,
        inheritable: 0,
    };
    crate::sys::caps::set(&[word(keep), word(keep >> 32)])
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EPERM)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_search_the_guests_path() {
        let env = [CString::new("PATH=/a:/b").unwrap()];
        assert_eq!(
            exec_candidates(Path::new("sh"), &env),
            [PathBuf::from("/a/sh"), PathBuf::from("/b/sh")]
        );
        assert_eq!(
            exec_candidates(Path::new("./x"), &env),
            [PathBuf::from("./x")]
        );
        assert_eq!(
            find_executable(Path::new("/no/such"), &env),
            Err(Errno::ENOENT)
        );
    }

    /// Under systemd-nspawn (and Docker) `guest start` failed with
    /// "joining a new session keyring: EPERM": their filter refuses the
    /// keyring syscalls, as the guest's own does. A filter without TSYNC
    /// binds only the thread that installs it, here one of the test's own.
    #[test]
    fn a_filter_refusing_the_keyring_is_no_error() {
        let r = std::thread::spawn(|| {
            Linux.set_no_new_privs().unwrap();
            Linux.set_syscall_filter(SyscallFilter::Default).unwrap();
            assert!(add_key_refused());
            Linux.new_session_keyring()
        })
        .join()
        .unwrap();
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn mounts_below_lists_submounts_only() {
        let below = mounts_below(Path::new("/")).unwrap();
        assert!(below.contains(&PathBuf::from("/proc")), "{below:?}");
        assert!(!below.contains(&PathBuf::from("/")));
        assert!(mounts_below(Path::new("/proc/self/no-such"))
            .unwrap()
            .is_empty());
    }
}

/// Installs `program` on the calling thread; what it execs keeps it. Needs
/// `no_new_privs` (or CAP_SYS_ADMIN).
fn install_filter(program: &[seccomp::Insn]) -> nix::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| Errno::E2BIG)?,
        filter: program.as_ptr() as *mut seccomp::Insn,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the
    // kernel copies the filter and keeps no pointer to it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
pub mod fake;

/// The soft and hard limit of resource `resource` (`RLIMIT_*`) of this
/// process.
pub fn getrlimit(resource: u32) -> nix::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit the call writes; a resource number
    // the kernel does not know is EINVAL.
    Errno::result(unsafe { libc::getrlimit(resource as _, &mut limit) })?;
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Whether `add_key` is refused by a syscall filter: with a null type the
/// kernel itself answers EFAULT, a filter EPERM (or ENOSYS).
fn add_key_refused() -> bool {
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: null pointers with length 0; the kernel faults on the type
    // before it reads anything else, and writes nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            KEY_SPEC_SESSION_KEYRING,
        )
    };
    matches!(Errno::result(rc), Err(Errno::EPERM | Errno::ENOSYS))
}
