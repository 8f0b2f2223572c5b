//! A terminal of the guest's own for `enter` (and `exec --tty`): a pty from
//! the guest's devpts whose slave is the command's controlling terminal,
//! and a proxy between it and the user's terminal (put in raw mode). The
//! guest never holds the host's terminal, so job control works inside and
//! nothing typed by the guest reaches the host's shell.

use super::sys;
use super::{Error, Result};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

/// The master side, opened in the guest's mount namespace (/dev/ptmx there
/// is its own devpts instance), and the slave's path inside the guest.
pub struct Pty {
    pub master: PtyMaster,
    pub slave: String,
}

pub fn open_pty() -> Result<Pty> {
    let sys_err = |what: &str, e| Error::sys(format!("{what} (guest pty)"), e);
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| sys_err("opening /dev/ptmx", e))?;
    nix::pty::grantpt(&master).map_err(|e| sys_err("grantpt", e))?;
    nix::pty::unlockpt(&master).map_err(|e| sys_err("unlockpt", e))?;
    let slave = nix::pty::ptsname_r(&master).map_err(|e| sys_err("ptsname", e))?;
    Ok(Pty { master, slave })
}

/// In the child, after setsid: the slave becomes the controlling terminal
/// (opened without O_NOCTTY by a session leader) and stdin/out/err.
pub fn attach_slave(slave: &str) -> Result<()> {
    let fd = nix::fcntl::open(slave, OFlag::O_RDWR, nix::sys::stat::Mode::empty())
        .map_err(|e| Error::sys(format!("opening {slave}"), e))?;
    for dup in [
        nix::unistd::dup2_stdin,
        nix::unistd::dup2_stdout,
        nix::unistd::dup2_stderr,
    ] {
        dup(&fd).map_err(|e| Error::sys("dup2 of the guest pty", e))?;
    }
    Ok(())
}

/// Restores the user's terminal mode when dropped.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, t);
        }
    }
}

/// Copies between the user's terminal and the guest's pty until `child`
/// exits; returns its exit status.
pub fn proxy(mut master: PtyMaster, child: Pid) -> Result<i32> {
    let _raw = RawMode::enter();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    loop {
        sys::copy_window_size(stdin.as_fd(), master.as_fd());
        let master_fd: BorrowedFd = master.as_fd();
        let mut fds = vec![PollFd::new(master_fd, PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        let master_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let stdin_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        drop(fds);
        if master_ready {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                }
                // EIO: no slave is open any more.
                _ => {}
            }
        }
        if stdin_ready {
            match std::io::stdin().lock().read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = master.write_all(&buf[..n]);
                }
                _ => {
                    // End of input: an end-of-file for the guest's reader.
                    stdin_open = false;
                    let _ = master.write_all(&[4]);
                }
            }
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return drain(master, code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return drain(master, 128 + sig as i32),
            _ => {}
        }
    }
}

/// Prints what the command wrote just before it ended.
fn drain(mut master: PtyMaster, code: i32) -> Result<i32> {
    let mut buf = [0u8; 8192];
    let mut stdout = std::io::stdout();
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) > 0;
        if !ready {
            break;
        }
        match master.read(&mut buf) {
            Ok(n) if n > 0 => {
                let _ = stdout.write_all(&buf[..n]);
            }
            _ => break,
        }
    }
    let _ = stdout.flush();
    Ok(code)
}
