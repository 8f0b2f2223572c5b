//! The launcher's syscall seam. [`Syscall`] is every call that shapes a
//! guest's view of the system (mounts, pivot_root, hostname, credentials,
//! capabilities, exec); [`Linux`] makes them for real and the test-only
//! `Recorder` writes them down, so the set-up order is unit-tested.
//! The process plumbing (clone3, pidfd, signals) sits here too, as free
//! functions. Every `unsafe` block of the launcher lives in this file.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Pid, Uid};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// Makes `path` (below `root`) exist as a directory or empty file,
    /// refusing any symlink on the way: the guest tree is untrusted and a
    /// symlink could move a mount onto a host path.
    fn prepare_mount_point(&self, root: &Path, path: &Path, kind: MountPoint) -> nix::Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, perm: u32, dev: u64) -> nix::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()>;
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    fn loopback_up(&self) -> nix::Result<()>;
    fn setgroups(&self, groups: &[Gid]) -> nix::Result<()>;
    fn setresgid(&self, gid: Gid) -> nix::Result<()>;
    fn setresuid(&self, uid: Uid) -> nix::Result<()>;
    /// Drops `cap` from the bounding set, so no exec can ever grant it.
    fn drop_bounding_cap(&self, cap: u32) -> nix::Result<()>;
    /// Sets effective and permitted to `keep`, inheritable and ambient to none.
    fn set_caps(&self, keep: u64) -> nix::Result<()>;
    fn set_no_new_privs(&self) -> nix::Result<()>;
    fn set_parent_death_signal(&self) -> nix::Result<()>;
    /// Replaces the process; returns only on failure.
    fn exec(&self, program: &Path, args: &[String], env: &[String]) -> Errno;
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

    fn set_no_new_privs(&self) -> nix::Result<()> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn set_parent_death_signal(&self) -> nix::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
    }

    fn exec(&self, program: &Path, args: &[String], env: &[String]) -> Errno {
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
        if let Some(trampoline) = trampoline() {
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

/// x86-64 code of the exec trampoline: `execve(argv[1], &argv[2], envp)`,
/// else `exit_group(127)`. Assembled from:
///   mov rax,[rsp]; mov rdi,[rsp+16]; lea rsi,[rsp+24]; lea rdx,[rsp+rax*8+16]
///   mov eax,59; syscall; mov edi,127; mov eax,231; syscall
const TRAMPOLINE_CODE: [u8; 38] = [
    0x48, 0x8b, 0x04, 0x24, 0x48, 0x8b, 0x7c, 0x24, 0x10, 0x48, 0x8d, 0x74, 0x24, 0x18, 0x48, 0x8d,
    0x54, 0xc4, 0x10, 0xb8, 0x3b, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x7f, 0x00, 0x00, 0x00, 0xb8,
    0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
];

/// A minimal static ELF around [`TRAMPOLINE_CODE`]: header, one R+X load
/// segment, code.
fn trampoline_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let len = HEADERS + TRAMPOLINE_CODE.len() as u64;
    let mut elf = Vec::with_capacity(len as usize);
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    for word in [0, BASE, BASE, len, len, 0x1000u64] {
        // offset, vaddr, paddr, filesz, memsz, align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&TRAMPOLINE_CODE);
    elf
}

/// A sealed memfd holding the exec trampoline, or None where it cannot be
/// had (not x86-64, no memfd). The guest's command is exec'd through it so
/// that, at that exec, /proc/self/exe is this anonymous file and not the
/// host's unifs binary: a guest script whose interpreter is /proc/self/exe
/// would otherwise run, and could then overwrite, the host's binary.
fn trampoline() -> Option<OwnedFd> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let create = |flags: libc::c_uint| {
        // SAFETY: the name is a NUL-terminated literal; flags are plain bits.
        let fd = unsafe { libc::memfd_create(c"unifs-exec".as_ptr(), flags) };
        // SAFETY: a non-negative return is a new fd nothing else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3+) keeps it executable under vm.memfd_noexec=1.
    let fd = create(base | libc::MFD_EXEC).or_else(|| create(base))?;
    nix::unistd::write(&fd, &trampoline_elf()).ok()?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS takes an int argument, no pointers.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    (rc == 0).then_some(fd)
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

/// Kernel ABI of capset(2), version 3 (two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn capset(keep: u64) -> nix::Result<()> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |w: u64| CapData {
        effective: w as u32,
        permitted: w as u32,
        inheritable: 0,
    };
    let data = [word(keep), word(keep >> 32)];
    // SAFETY: header and data match the v3 ABI (one header, two data
    // words) and outlive the call; the kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    Errno::result(rc).map(drop)
}

/// Kernel ABI of clone3(2), CLONE_ARGS_SIZE_VER0.
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Which side of a clone this process is.
pub enum Forked {
    Child,
    Parent(Pid),
}

/// Forks into new namespaces with clone3 (a fork with `flags`). The parent
/// must be single-threaded: the child may only run this crate's set-up code
/// and then exec or `_exit`. With CLONE_NEWPID the child is PID 1 there.
pub fn clone_into(flags: CloneFlags) -> nix::Result<Forked> {
    let mut args = CloneArgs {
        flags: flags.bits() as u64,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: with no stack and no CLONE_VM clone3 behaves like fork: the
    // child gets a copy of the address space. `args` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match Errno::result(rc)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// A plain fork, for the `--init` reaper and for `guest exec`.
pub fn fork() -> nix::Result<Forked> {
    // SAFETY: callers are single-threaded; the child execs or `_exit`s.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// Ends a forked child without running the parent's atexit handlers.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Marks every fd above stderr close-on-exec, so no host file or directory
/// the launcher inherited (an fd of a host directory is a way out of any
/// root) reaches the guest's command.
pub fn close_fds_on_exec() -> nix::Result<()> {
    // SAFETY: close_range takes two fd numbers and flags, no pointers; with
    // CLOSE_RANGE_CLOEXEC it closes nothing now.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Errno::result(rc).map(drop)
}

/// Makes this process non-dumpable: without CAP_SYS_PTRACE nobody can ptrace
/// it or open its /proc/PID/{mem,fd,exe,environ}. execve resets it, so it
/// guards the launcher's own code inside the guest (set-up, the reaper).
pub fn set_not_dumpable() {
    let _ = nix::sys::prctl::set_dumpable(false);
}

/// Closes every fd above stderr, for the `--init` reaper, which never execs:
/// guest root could otherwise open them through /proc/1/fd.
pub fn close_fds() {
    // SAFETY: as above; the caller holds no fd above 2 it still needs.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// A pidfd for `pid`, for setns into all of its namespaces at once.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(fd)? as i32;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Passes SIGTERM, SIGINT, SIGHUP and SIGQUIT on to `pid` while we wait for it.
pub fn forward_signals_to(pid: Pid) -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    FORWARD_TO.store(pid.as_raw(), std::sync::atomic::Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(forward_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        // SAFETY: the handler only loads an atomic and calls kill, both
        // async-signal-safe.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// Restores default handling of every signal, for a child about to exec.
pub fn reset_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: restoring the default disposition installs no handler.
            let _ = unsafe { sigaction(sig, &default) };
        }
    }
    let _ = SigSet::empty().thread_set_mask();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_elf_is_well_formed() {
        let elf = trampoline_elf();
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf.len(), 64 + 56 + TRAMPOLINE_CODE.len());
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120);
        let filesz = u64::from_le_bytes(elf[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz as usize, elf.len());
    }

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
}

#[cfg(test)]
pub mod fake {
    //! A [`Syscall`] that records each call instead of making it.
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Mount {
            source: Option<PathBuf>,
            target: PathBuf,
            fstype: Option<String>,
            flags: MsFlags,
            data: Option<String>,
        },
        Umount2(PathBuf, MntFlags),
        PivotRoot(PathBuf, PathBuf),
        Chdir(PathBuf),
        Unshare(CloneFlags),
        MountPoint(PathBuf, MountPoint),
        Mknod(PathBuf, u32, u64),
        Symlink(PathBuf, PathBuf),
        Hostname(String),
        LoopbackUp,
        Setgroups(Vec<u32>),
        Setresgid(u32),
        Setresuid(u32),
        DropBoundingCap(u32),
        SetCaps(u64),
        NoNewPrivs,
        ParentDeathSignal,
        Exec(PathBuf, Vec<String>, Vec<String>),
    }

    #[derive(Default)]
    pub struct Recorder {
        pub calls: RefCell<Vec<Call>>,
        /// Calls matching this fail with EPERM.
        pub fail_on: Option<fn(&Call) -> bool>,
    }

    impl Recorder {
        fn record(&self, call: Call) -> nix::Result<()> {
            let fail = self.fail_on.is_some_and(|f| f(&call));
            self.calls.borrow_mut().push(call);
            if fail {
                Err(Errno::EPERM)
            } else {
                Ok(())
            }
        }

        pub fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }
    }

    impl Syscall for Recorder {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> nix::Result<()> {
            self.record(Call::Mount {
                source: source.map(Path::to_path_buf),
                target: target.to_path_buf(),
                fstype: fstype.map(str::to_string),
                flags,
                data: data.map(str::to_string),
            })
        }
        fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
            self.record(Call::Umount2(target.to_path_buf(), flags))
        }
        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
            self.record(Call::PivotRoot(new_root.into(), put_old.into()))
        }
        fn chdir(&self, path: &Path) -> nix::Result<()> {
            self.record(Call::Chdir(path.into()))
        }
        fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
            self.record(Call::Unshare(flags))
        }
        fn prepare_mount_point(
            &self,
            _root: &Path,
            path: &Path,
            kind: MountPoint,
        ) -> nix::Result<()> {
            self.record(Call::MountPoint(path.into(), kind))
        }
        fn mknod(&self, path: &Path, _kind: SFlag, perm: u32, dev: u64) -> nix::Result<()> {
            self.record(Call::Mknod(path.into(), perm, dev))
        }
        fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
            self.record(Call::Symlink(target.into(), link.into()))
        }
        fn sethostname(&self, name: &str) -> nix::Result<()> {
            self.record(Call::Hostname(name.into()))
        }
        fn loopback_up(&self) -> nix::Result<()> {
            self.record(Call::LoopbackUp)
        }
        fn setgroups(&self, groups: &[Gid]) -> nix::Result<()> {
            self.record(Call::Setgroups(groups.iter().map(|g| g.as_raw()).collect()))
        }
        fn setresgid(&self, gid: Gid) -> nix::Result<()> {
            self.record(Call::Setresgid(gid.as_raw()))
        }
        fn setresuid(&self, uid: Uid) -> nix::Result<()> {
            self.record(Call::Setresuid(uid.as_raw()))
        }
        fn drop_bounding_cap(&self, cap: u32) -> nix::Result<()> {
            self.record(Call::DropBoundingCap(cap))
        }
        fn set_caps(&self, keep: u64) -> nix::Result<()> {
            self.record(Call::SetCaps(keep))
        }
        fn set_no_new_privs(&self) -> nix::Result<()> {
            self.record(Call::NoNewPrivs)
        }
        fn set_parent_death_signal(&self) -> nix::Result<()> {
            self.record(Call::ParentDeathSignal)
        }
        fn exec(&self, program: &Path, args: &[String], env: &[String]) -> Errno {
            let _ = self.record(Call::Exec(program.into(), args.to_vec(), env.to_vec()));
            Errno::UnknownErrno
        }
    }
}
