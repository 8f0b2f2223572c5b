//! A named guest's console, relayed by its keeper: what the guest writes
//! to its `/dev/console` (a pty of its own devpts, see
//! [`super::console::open_console`]) is appended to its console log until
//! init ends, up to the guest's memory limit.

use super::sys;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct ConsoleRelay {
    master: PtyMaster,
    /// A slave of our own, held: with no slave open (before init opens the
    /// console, and between its writers) the master reads EIO and polls as
    /// hung up at once, which would spin.
    peer: OwnedFd,
    log: std::fs::File,
    /// The CRs that ended the last read: dropped if a LF follows.
    held_crs: usize,
    /// What may still be appended, with a memory limit: the log's pages
    /// (on the usual tmpfs /run) are charged to us, not to the guest,
    /// whose own output to the log its limit bounds.
    room: Option<u64>,
    /// Whether output was left out for want of room (said once).
    cut: bool,
}

/// The line that ends a console's output cut at the guest's memory limit.
const CUT: &[u8] = b"\n[unifs: console output past the guest's memory limit left out]\n";

impl ConsoleRelay {
    /// None if the master cannot be set up to relay: the guest's console
    /// writes then fail (EIO) once the master is closed, and nothing waits.
    /// `limit`: the guest's memory limit, the most appended.
    pub fn new(master: PtyMaster, log: std::fs::File, limit: Option<u64>) -> Option<ConsoleRelay> {
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: `master` is an open pty master; TIOCGPTPEER returns a new
        // fd, which only this OwnedFd owns.
        let peer = match unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) } {
            -1 => return None,
            fd => unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let fl = fcntl(&master, FcntlArg::F_GETFL).ok()?;
        let nonblocking = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
        fcntl(&master, FcntlArg::F_SETFL(nonblocking)).ok()?;
        Some(ConsoleRelay {
            master,
            peer,
            log,
            held_crs: 0,
            room: limit,
            cut: false,
        })
    }

    /// The fds the relay holds, for a caller that closes all others.
    pub fn fds(&self) -> [RawFd; 3] {
        [
            self.master.as_raw_fd(),
            self.peer.as_raw_fd(),
            self.log.as_raw_fd(),
        ]
    }

    /// Relays until `pid` (our child) ends or changes state; returns its
    /// wait status, having relayed all the console held by then.
    pub fn wait(&mut self, pid: Pid) -> nix::Result<WaitStatus> {
        // Readable once the child has ended: no polling delay. Without one
        // (an old kernel) the poll's timeout paces the checks.
        let pidfd = sys::pidfd_open(pid).ok();
        loop {
            let mut fds = vec![PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            if let Some(p) = &pidfd {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(1000u16)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
            self.copy();
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                Ok(status) => {
                    self.copy();
                    let crs = vec![b'\r'; std::mem::take(&mut self.held_crs)];
                    self.append(&crs);
                    return Ok(status);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends what the console holds now to the log. A log that cannot
    /// be written (a full disk) loses it: the guest must not wait on us.
    fn copy(&mut self) {
        let mut buf = [0u8; 16384];
        loop {
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let out = self.without_crs(&buf[..n]);
                    self.append(&out);
                }
                Err(Errno::EINTR) => {}
                // EAGAIN: nothing more now.
                Err(_) => return,
            }
        }
    }

    /// Appends `out` to the log, as much as there is room for: past it,
    /// one line says what was left out, and the rest is read and dropped
    /// (the guest must not wait on us either).
    fn append(&mut self, out: &[u8]) {
        let Some(room) = self.room else {
            let _ = self.log.write_all(out);
            return;
        };
        let fits = usize::try_from(room).map_or(out.len(), |room| room.min(out.len()));
        let _ = self.log.write_all(&out[..fits]);
        self.room = Some(room - fits as u64);
        if fits < out.len() && !std::mem::replace(&mut self.cut, true) {
            let _ = self.log.write_all(CUT);
        }
    }

    /// `bytes` with the CRs right before each LF left out: a console's
    /// output turns "\n" into "\r\n" (systemd sets it so; a "\r\n" of
    /// the guest's becomes "\r\r\n"), a log wants lines.
    fn without_crs(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + self.held_crs);
        for &b in bytes {
            if b == b'\r' {
                self.held_crs += 1;
                continue;
            }
            let crs = std::mem::take(&mut self.held_crs);
            if b != b'\n' {
                out.resize(out.len() + crs, b'\r');
            }
            out.push(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> ConsoleRelay {
        let pty = super::super::console::open_pty().unwrap();
        let log = tempfile::tempfile().unwrap();
        ConsoleRelay::new(pty.master, log, None).unwrap()
    }

    #[test]
    fn crs_before_lfs_are_left_out_across_reads() {
        let mut r = relay();
        assert_eq!(r.without_crs(b"a\r\nb\r"), b"a\nb");
        assert_eq!(r.without_crs(b"\nc\rd\r"), b"\nc\rd");
        assert_eq!(r.without_crs(b"\r"), b"");
        assert_eq!(r.without_crs(b"e\r\r\r\n"), b"\r\re\n");
    }

    #[test]
    fn output_past_the_room_is_left_out_and_said_once() {
        let pty = super::super::console::open_pty().unwrap();
        let log = tempfile::tempfile().unwrap();
        let mut r = ConsoleRelay::new(pty.master, log.try_clone().unwrap(), Some(5)).unwrap();
        r.append(b"abc");
        r.append(b"de");
        r.append(b"fgh");
        r.append(b"ij");
        let logged = std::fs::read(format!("/proc/self/fd/{}", log.as_raw_fd())).unwrap();
        assert_eq!(logged, [b"abcde", CUT].concat());
    }
}
