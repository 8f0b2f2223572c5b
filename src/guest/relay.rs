//! A named guest's console, relayed by its keeper: what the guest writes
//! to its `/dev/console` (a pty of its own devpts, see
//! [`super::console::open_console`]), which is also init's standard output
//! and error, is appended to its console log until init ends. The log is
//! the host's and only the keeper holds it; past [`CONSOLE_MAX_BYTES`] it
//! is set aside as `console.log.1` and a new one begun, as Docker's
//! json-file driver's `max-size` with `max-file=2` does. The first
//! [`BOOT_KEEP_BYTES`] of each boot are kept in `console.log.boot` too,
//! which a flood cannot push out.
//!
//! The guest's writes wait while the keeper writes the log (the pty holds
//! some 64 KiB, the rest waits in the writer): back-pressure, no memory of
//! ours. Should the keeper end (killed), its master closes and the pty
//! hangs up: the guest's writes to it fail with EIO, as on a terminal that
//! hung up, and no signal comes (no session has it as its controlling
//! terminal unless the guest made it so itself; a PID namespace's init
//! does not take a SIGHUP it has no handler for).

use super::sys;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Past this, a running guest's console log is set aside as
/// `console.log.1` (replacing the one before) and a new one begun: what
/// the host keeps of a guest's console is at most twice this. (A start
/// sets a log over [`super::lifecycle::CONSOLE_ROTATE_BYTES`] aside too.)
pub const CONSOLE_MAX_BYTES: u64 = 8 << 20;

/// What `console.log.boot` keeps of the start of each boot's console: a
/// boot's own lines (a Debian 12 guest's systemd or sysvinit boot writes
/// some 5 to 10 KiB) that a flood later in the boot would push out of the
/// two logs, as journald keeps a boot's first lines in its journal.
pub const BOOT_KEEP_BYTES: u64 = 64 << 10;

/// Opens the console log at `path` to append to, made root's alone (0600)
/// if new.
pub fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// `console.log.boot` beside the log at `log`, begun anew (0600): the
/// boot's first lines, this boot's only.
fn open_boot(log: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log.with_extension("log.boot"))
}

pub struct ConsoleRelay {
    master: PtyMaster,
    /// A slave of our own, held: with no slave open (before init opens the
    /// console, and between its writers) the master reads EIO and polls as
    /// hung up at once, which would spin.
    peer: OwnedFd,
    log: std::fs::File,
    /// Where `log` is: set aside from there when full.
    path: PathBuf,
    /// The CRs that ended the last read: dropped if a LF follows.
    held_crs: usize,
    /// `console.log.boot`, and how much more of this boot it takes.
    boot: Option<(std::fs::File, u64)>,
}

impl ConsoleRelay {
    /// None if the master cannot be set up to relay: the guest's console
    /// writes then fail (EIO) once the master is closed, and nothing waits.
    /// `log` is open at `path`.
    pub fn new(master: PtyMaster, log: std::fs::File, path: PathBuf) -> Option<ConsoleRelay> {
        let peer = super::console::open_peer(&master).ok()?;
        let fl = fcntl(&master, FcntlArg::F_GETFL).ok()?;
        let nonblocking = OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK;
        fcntl(&master, FcntlArg::F_SETFL(nonblocking)).ok()?;
        let boot = open_boot(&path)
            .map_err(|e| tracing::warn!("opening {}.boot: {e}", path.display()))
            .ok()
            .map(|f| (f, BOOT_KEEP_BYTES));
        Some(ConsoleRelay {
            master,
            peer,
            log,
            path,
            held_crs: 0,
            boot,
        })
    }

    /// The fds the relay holds, for a caller that closes all others.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![
            self.master.as_raw_fd(),
            self.peer.as_raw_fd(),
            self.log.as_raw_fd(),
        ];
        fds.extend(self.boot.as_ref().map(|(f, _)| f.as_raw_fd()));
        fds
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

    /// Appends `out` to the log, set aside first if `out` would take it
    /// past [`CONSOLE_MAX_BYTES`].
    fn append(&mut self, out: &[u8]) {
        // Its length now: the keeper's own lines are appended by name.
        let len = self.log.metadata().map_or(0, |m| m.len());
        if len > 0 && len + out.len() as u64 > CONSOLE_MAX_BYTES {
            self.set_aside();
        }
        let _ = self.log.write_all(out);
        if let Some((boot, left)) = &mut self.boot {
            let n = out.len().min(*left as usize);
            *left -= n as u64;
            // Once full (or failed), no more of it.
            if boot.write_all(&out[..n]).is_err() || *left == 0 {
                self.boot = None;
            }
        }
    }

    /// Renames the log to `console.log.1` (replacing the one before) and
    /// goes on in a new one. One that cannot be made (a full disk, a run
    /// dir gone) leaves the log where it is, appended to on.
    fn set_aside(&mut self) {
        let old = self.path.with_extension("log.1");
        // Only the log we hold: a later start's is not ours to move.
        let ours = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            let (a, b) = (std::fs::metadata(p), self.log.metadata());
            matches!((a, b), (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
        };
        if !ours(&self.path) || std::fs::rename(&self.path, &old).is_err() {
            return;
        }
        match open_log(&self.path) {
            Ok(new) => self.log = new,
            Err(e) => tracing::warn!("starting a new {}: {e}", self.path.display()),
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
        ConsoleRelay::new(pty.master, log, PathBuf::from("/nonexistent/console.log")).unwrap()
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
    fn a_full_log_is_set_aside_and_a_new_one_begun() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let pty = super::super::console::open_pty().unwrap();
        let mut r = ConsoleRelay::new(pty.master, open_log(&path).unwrap(), path.clone()).unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..CONSOLE_MAX_BYTES >> 20 {
            r.append(&chunk);
        }
        r.append(b"next\n");
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert_eq!(len(&path.with_extension("log.1")), CONSOLE_MAX_BYTES);
        assert_eq!(std::fs::read(&path).unwrap(), b"next\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
    }
}
