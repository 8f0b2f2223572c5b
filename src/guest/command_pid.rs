//! The host PID of a command forked by unifs's reaper (`unifs run --init`,
//! `guest exec`), for the kernel's log of OOM kills, which names processes
//! by their PID in the initial PID namespace. The reaper of `run --init` is
//! the guest's PID 1: the PID its fork returns is the guest's, not ours.
//! So the command says its own PID on a socket whose receiving end asks
//! for credentials (SO_PASSCRED): the kernel attaches the sender's PID to
//! the message and translates it into the receiver's PID namespace. No
//! privilege is needed and none can be claimed: a process sending without
//! CAP_SYS_ADMIN can only say its own PID (net/core/scm.c).

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

/// The PID the command said, in our PID namespace; None when it said
/// none (it failed before, or the kernel gave no credentials).
pub fn received(from: &OwnedFd) -> Option<i32> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(UnixCredentials);
    let msg = recvmsg::<()>(
        from.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let pid = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
        _ => None,
    });
    // 0: the sender is not in our PID namespace's view.
    pid.filter(|p| *p > 0)
}
