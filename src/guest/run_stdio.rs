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
    let mut swapped = Swapped { fds: Vec::new() };
    for fd in 0..=2 {
        // SAFETY: fds 0 to 2 stay open (or closed) for the life of the
        // process; only borrowed here.
        let ours = unsafe { BorrowedFd::borrow_raw(fd) };
        if passed_as_is(ours) {
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
    outputs: Vec<mpsc::Receiver<()>>,
}

impl Swapped {
    /// After the guest's clone: our fds are ours again, and a thread for
    /// each copies between its pipe and it. None swapped: no thread.
    pub fn restore(&mut self) -> Copies {
        let mut outputs = Vec::new();
        for (fd, was, kept) in std::mem::take(&mut self.fds) {
            // The guest's end goes with it: its writers' end is theirs alone.
            let _ = dup2_raw(was.as_fd(), fd);
            let (done_tx, done_rx) = mpsc::channel();
            let copied = std::thread::Builder::new()
                .name(format!("stdio-{fd}"))
                .spawn(move || {
                    no_sigpipe();
                    match fd {
                        0 => copy(was, kept),
                        _ => copy(kept, was),
                    }
                    let _ = done_tx.send(());
                });
            // No thread (a limit on processes): the pipe closes with `kept`,
            // and the guest reads an end of input or gets EPIPE.
            if copied.is_ok() && fd != 0 {
                outputs.push(done_rx);
            }
        }
        Copies { outputs }
    }
}

impl Copies {
    /// Once the guest has ended: waits until its output is copied to its
    /// end, [`DRAIN`] at most. (The input's copy ends with us.)
    pub fn finish(self) {
        for done in self.outputs {
            let _ = done.recv_timeout(DRAIN);
        }
    }
}

/// Copies `from` to `to` until either ends.
fn copy(from: OwnedFd, to: OwnedFd) {
    let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) if to.write_all(&buf[..n]).is_ok() => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => return,
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
