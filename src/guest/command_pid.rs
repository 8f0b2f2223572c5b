//! The host PID of a command forked by unifs's reaper (`unifs run --init`,
//! `guest exec`), for the kernel's log of OOM kills, which names processes
//! by their PID in the initial PID namespace. The reaper of `run --init` is
//! the guest's PID 1: the PID its fork returns is the guest's, not ours.
//! So the command says its own PID on a socket whose receiving end asks
//! for credentials (SO_PASSCRED): the kernel attaches the sender's PID to
//! the message and translates it into the receiver's PID namespace. No
//! privilege is needed and none can be claimed: a process sending without
//! CAP_SYS_ADMIN can only say its own PID (net/core/scm.c).
//!
//! The reaper says on the same socket when its command exited by itself,
//! and its code: it exits with the command's status, 128 + the signal for
//! a signal, so a command that exits 137 (a shell whose last command a
//! SIGKILL ended) looks like one SIGKILLed, which the kernel's log cannot
//! always tell (where it cannot be read, the count's window decides). The
//! code, because the reaper may itself be killed after it said so (the OOM
//! killer may pick it: under `run --init` it is the guest's PID 1; a
//! stop's SIGKILL): its waiter sees a kill, and knows from the word that
//! the command had exited, and with what.

use super::{Error, Result};
use nix::sys::socket::{
    recvmsg, send, setsockopt, socketpair, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixCredentials,
};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};

/// (receiving end, sending end), both close-on-exec and non-blocking.
pub fn channel() -> Result<(OwnedFd, OwnedFd)> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let (r, w) = socketpair(AddressFamily::Unix, SockType::Datagram, None, flags)
        .map_err(|e| Error::sys("socketpair", e))?;
    // Before anything is sent: a message sent before carries no PID.
    setsockopt(&r, sockopt::PassCred, &true).map_err(|e| Error::sys("SO_PASSCRED", e))?;
    Ok((r, w))
}

/// Called in the command's own process, before its exec: says its PID.
/// A failure only leaves the receiver without it (it then cannot tell).
pub fn say_mine(to: &OwnedFd) {
    let _ = send(
        to.as_raw_fd(),
        b"p",
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

/// Called in the reaper once its command exited with `code` (not a
/// signal's end): its own status is then the command's code, not a kill's.
pub fn say_exited(to: &OwnedFd, code: i32) {
    // An exit code is a byte (the kernel keeps `code & 0xff`).
    let _ = send(
        to.as_raw_fd(),
        &[b'x', code as u8],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

/// What the command and its reaper said.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Said {
    /// The command's PID, in our PID namespace; None when it said none
    /// (it failed before, or the kernel gave no credentials).
    pub command: Option<i32>,
    /// The reaper said its command exited by itself, with this code.
    pub exited: Option<i32>,
}

/// What was said on `from`: the command's PID, and whether the reaper,
/// `reaper` in our PID namespace, said its command exited. Only the
/// reaper's own word counts for that (a process of the guest that took
/// the socket from it can only say its own PID); a few messages at most
/// are read (such a process could send without end).
pub fn received(from: &OwnedFd, reaper: i32) -> Said {
    let mut said = Said::default();
    for _ in 0..16 {
        let mut bytes = [0u8; 2];
        let mut iov = [IoSliceMut::new(&mut bytes)];
        let mut space = nix::cmsg_space!(UnixCredentials);
        let Ok(msg) = recvmsg::<()>(
            from.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT,
        ) else {
            break;
        };
        let pid = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
                _ => None,
            })
        });
        // 0: the sender is not in our PID namespace's view.
        let (pid, len) = (pid.filter(|p| *p > 0), msg.bytes);
        match (bytes, len, pid) {
            ([b'p', _], 1, Some(p)) if said.command.is_none() => said.command = Some(p),
            ([b'x', code], 2, Some(p)) if p == reaper => said.exited = Some(i32::from(code)),
            _ => {}
        }
    }
    said
}
