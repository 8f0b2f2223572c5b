//! `unifs run`'s stdin, stdout and stderr that are a file or a device of
//! the host's (`> out`, `< /dev/null`): the guest gets a pipe instead,
//! which we copy through, as `guest exec` does. Given the host's file,
//! guest root (keeping `fowner`) reached it through `/proc/self/fd/1` and
//! could truncate it or make it set-uid root. A terminal becomes a pty of
//! the guest's own ([`super::console`]); a pipe or a socket is passed as it
//! is (what the guest can do to one acts on no file of the host's, and
//! `unifs run … | head` ends the command by SIGPIPE as before).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

/// The fs type of an anonymous pipe (`PIPEFS_MAGIC`).
const PIPEFS: i64 = 0x5049_5045;

/// How long the copies of a run's output may take to reach their end once
/// its guest is gone (every writer then is).
const DRAIN: Duration = Duration::from_secs(10);

/// The fds swapped for pipes, until [`Swapped::restore`].
pub struct Swapped {
    /// (our fd 0 to 2, what it was, our end of its pipe)
    fds: Vec<(i32, OwnedFd, OwnedFd)>,
    /// (our fd 1 or 2, what it was): one open file with an fd of `fds`
    /// (`> out 2>&1`), given that fd's pipe.
    joined: Vec<(i32, OwnedFd)>,
}

/// Whether our fd `fd` may go to the guest as it is.
fn passed_as_is(fd: BorrowedFd) -> bool {
    let Ok(st) = nix::sys::stat::fstat(fd) else {
        // Closed: nothing to give.
        return true;
    };
    let kind = st.st_mode & libc::S_IFMT;
    let pipe = kind == libc::S_IFIFO && crate::sys::fs_type(fd).is_ok_and(|t| t == PIPEFS);
    pipe || kind == libc::S_IFSOCK || nix::unistd::isatty(fd).unwrap_or(false)
}

/// Before the guest's clone: each of our fds 0 to 2 that is a file or a
/// device becomes one end of a new pipe, which the guest inherits. Call
/// [`Swapped::restore`] once it is cloned. On an error, what was swapped
/// is put back.
pub fn swap() -> std::io::Result<Swapped> {
    let mut swapped = Swapped {
        fds: Vec::new(),
        joined: Vec::new(),
    };
    for fd in 0..=2 {
        // SAFETY: fds 0 to 2 stay open (or closed) for the life of the
        // process; only borrowed here.
        let ours = unsafe { BorrowedFd::borrow_raw(fd) };
        if passed_as_is(ours) {
            continue;
        }
        // `> out 2>&1`: stdout and stderr are one open file, written in
        // the order the command wrote. One pipe (one copy) keeps that
        // order; two would mix their lines in the order the copies ran.
        let joined = swapped
            .fds
            .iter()
            .find(|(other, was, _)| *other != 0 && fd != 0 && same_open_file(was.as_fd(), ours));
        if let Some(&(other, ..)) = joined {
            let was = ours.try_clone_to_owned()?;
            // SAFETY: `other` is one of our fds 1 or 2, now its pipe's
            // writers' end, open until restore.
            let pipe = unsafe { BorrowedFd::borrow_raw(other) };
            if let Err(e) = dup2_raw(pipe, fd) {
                swapped.restore();
                return Err(e);
            }
            swapped.joined.push((fd, was));
            continue;
        }
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (guests, kept) = match fd {
            0 => (r, w),
            _ => (w, r),
        };
        let was = ours.try_clone_to_owned()?;
        if let Err(e) = dup2_raw(guests.as_fd(), fd) {
            swapped.restore();
            return Err(e);
        }
        swapped.fds.push((fd, was, kept));
    }
    Ok(swapped)
}

/// Whether `a` and `b` are one open file description (a `dup` of each
/// other, as `2>&1` makes), not two opens of one file: kcmp(2), exact.
/// Without it (a kernel built without `CONFIG_KCMP`, a seccomp filter):
/// the same file at the same offset with the same flags, which two opens
/// of one file are only by chance (`>>` twice: then their order is kept
/// where it was not).
fn same_open_file(a: BorrowedFd, b: BorrowedFd) -> bool {
    let pid = std::process::id();
    // SAFETY: kcmp only compares; both fds are open for the call.
    let kcmp = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            a.as_raw_fd(),
            b.as_raw_fd(),
        )
    };
    if kcmp >= 0 {
        return kcmp == 0;
    }
    let (Ok(sa), Ok(sb)) = (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) else {
        return false;
    };
    let flags = |fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).ok();
    let offset = |fd| nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekCur).ok();
    (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
        && flags(a) == flags(b)
        && offset(a) == offset(b)
}

/// kcmp(2)'s type for "the same open file description".
const KCMP_FILE: libc::c_int = 0;

/// `dup2(from, to)`, `to` one of 0 to 2.
fn dup2_raw(from: BorrowedFd, to: i32) -> std::io::Result<()> {
    // SAFETY: dup2 onto 0..=2, which we own as the process's stdio.
    match unsafe { libc::dup2(from.as_raw_fd(), to) } {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// The copies started by [`Swapped::restore`].
pub struct Copies {
    /// (fd, its copy's end: the write to it that failed, if one did)
    outputs: Vec<(i32, mpsc::Receiver<std::io::Result<()>>)>,
}

impl Swapped {
    /// After the guest's clone: our fds are ours again, and a thread for
    /// each copies between its pipe and it. None swapped: no thread.
    pub fn restore(&mut self) -> Copies {
        for (fd, was) in std::mem::take(&mut self.joined) {
            let _ = dup2_raw(was.as_fd(), fd);
        }
        let mut outputs = Vec::new();
        for (fd, was, kept) in std::mem::take(&mut self.fds) {
            // The guest's end goes with it: its writers' end is theirs alone.
            let _ = dup2_raw(was.as_fd(), fd);
            let (done_tx, done_rx) = mpsc::channel();
            let copied = std::thread::Builder::new()
                .name(format!("stdio-{fd}"))
                .spawn(move || {
                    no_sigpipe();
                    let copied = match fd {
                        0 => copy(was, kept),
                        _ => copy(kept, was),
                    };
                    let _ = done_tx.send(copied);
                });
            // No thread (a limit on processes): the pipe closes with `kept`,
            // and the guest reads an end of input or gets EPIPE.
            if copied.is_ok() && fd != 0 {
                outputs.push((fd, done_rx));
            }
        }
        Copies { outputs }
    }
}

impl Copies {
    /// Once the guest has ended: waits until its output is copied to its
    /// end, [`DRAIN`] at most. (The input's copy ends with us.) Says the
    /// outputs that could not be written (a full disk): the guest wrote
    /// to a pipe, which never told it.
    pub fn finish(self) -> Vec<String> {
        let mut failed = Vec::new();
        for (fd, done) in self.outputs {
            if let Ok(Err(e)) = done.recv_timeout(DRAIN) {
                let name = ["stdin", "stdout", "stderr"][fd as usize];
                failed.push(format!("writing the guest's {name} to its file: {e}"));
            }
        }
        failed
    }
}

/// Copies `from` to `to` until either ends; the error of a write to `to`.
/// (After one, the guest's next write to the pipe gets EPIPE, as it would
/// writing on with nothing taking its output.)
fn copy(from: OwnedFd, to: OwnedFd) -> std::io::Result<()> {
    let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(()),
        }
    }
}

/// In a copy's thread: a write to a pipe whose reader is gone fails with
/// EPIPE instead of ending `unifs run` (SIGPIPE goes to the thread that
/// wrote; pending on a thread that ends, it goes with it).
fn no_sigpipe() {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGPIPE);
    let _ = set.thread_block();
}
