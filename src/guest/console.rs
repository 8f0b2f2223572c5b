//! A terminal of the guest's own for `enter` (and `exec --tty`): a pty from
//! the guest's devpts whose slave is the command's controlling terminal,
//! and a proxy between it and the user's terminal (put in raw mode). The
//! guest never holds the host's terminal, so job control works inside and
//! nothing typed by the guest reaches the host's shell.

use super::launch::Exit;
use super::sys;
use super::{Error, GuestSpec, Result};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sys::stat::Mode;
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

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

/// Hands the session's terminal (the slave of `pty`) to the user it runs
/// as, as sshd and login do: owner `uid`, group `tty` (the guest's tty
/// group) with mode 620, so `write` and `wall` (setgid tty) reach it, or
/// without one `gid` with mode 600. Root, before the privilege drop: a
/// user could not open its own terminal by name (`echo hi > $(tty)`,
/// screen, pinentry) otherwise.
pub fn give_terminal(pty: &Pty, uid: u32, gid: u32, tty: Option<u32>) -> Result<()> {
    let (group, mode) = match tty {
        Some(tty) => (tty, 0o620),
        None => (gid, 0o600),
    };
    let err = |e| Error::sys(format!("handing {} to uid {uid}", pty.slave), e);
    // The slave through its master, not its path: guest root may have
    // changed what the guest's /dev leads to, and we are host root.
    let slave = open_peer(&pty.master).map_err(err)?;
    nix::unistd::fchown(
        &slave,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(group)),
    )
    .map_err(err)?;
    nix::sys::stat::fchmod(&slave, nix::sys::stat::Mode::from_bits_truncate(mode)).map_err(err)
}

/// A new fd of `master`'s slave (read-write, close-on-exec), opened
/// through the master, never by a path the guest could have changed; and
/// `O_NOCTTY`: it makes no session's controlling terminal, so its hang-up
/// (the master closed: the keeper gone) signals nobody.
pub fn open_peer(master: &PtyMaster) -> nix::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: `master` is an open pty master; TIOCGPTPEER returns a new
    // fd, which only this OwnedFd owns.
    match unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) } {
        -1 => Err(nix::errno::Errno::last()),
        fd => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
    }
}

/// `unifs run` on a terminal, in the guest's child after its root is set
/// up and before the privilege drop: a pty of the guest's own devpts
/// (nothing the guest does to it touches a host pty), given to the
/// command's user, becomes the controlling terminal and those of stdin,
/// stdout and stderr that are terminals; its master goes to the launcher
/// over `channel`, to proxy.
pub fn open_run_terminal(channel: &OwnedFd, uid: u32, gid: u32) -> Result<()> {
    let pty = open_pty()?;
    // "/" is the guest's root, /proc its own.
    let tty = super::user::tty_group(std::path::Path::new("/"));
    give_terminal(&pty, uid, gid, tty)?;
    attach_slave_to_terminals(&pty.slave)?;
    send_master(channel, &pty, "passing the guest's pty to unifs run")
}

/// A named guest's `/dev/console`, in the guest's child after its root is
/// set up and before the privilege drop: a pty of the guest's own devpts
/// bound over an empty file in its `/dev`, as nspawn gives a container
/// one. systemd and sysvinit write their boot and shutdown messages there.
/// Owned by init's user, mode 600. It is init's standard output and error
/// too, as nspawn makes it: no file of the host's is ever the guest's
/// (guest root could fill, truncate or chmod one through /proc/PID/fd/1),
/// and its output and the console's come in the order written. The master
/// goes to the guest's keeper over `channel`, which appends what comes to
/// the console log.
pub fn open_console(channel: &OwnedFd, uid: u32, gid: u32) -> Result<()> {
    let pty = open_pty()?;
    give_terminal(&pty, uid, gid, None)?;
    let console = "/dev/console";
    let err = |what: &str, e| Error::sys(format!("{what} {console}"), e);
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
    let file = nix::fcntl::open(
        console,
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| err("creating", e))?;
    drop(file);
    nix::mount::mount(
        Some(pty.slave.as_str()),
        console,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err("binding the console's pty to", e))?;
    let peer = open_peer(&pty.master).map_err(|e| err("opening", e))?;
    nix::unistd::dup2_stdout(&peer).map_err(|e| err("pointing stdout at", e))?;
    nix::unistd::dup2_stderr(&peer).map_err(|e| err("pointing stderr at", e))?;
    send_master(channel, &pty, "passing the guest's console to its keeper")
}

/// Sends `pty`'s master over `channel` (to [`receive_pty`]).
fn send_master(channel: &OwnedFd, pty: &Pty, what: &str) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let fds = [pty.master.as_raw_fd()];
    sendmsg::<UnixAddr>(
        channel.as_raw_fd(),
        &[std::io::IoSlice::new(b"p")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::sys(what, e))?;
    Ok(())
}

/// The launcher's end of [`open_run_terminal`] and [`open_console`]: the
/// master the child sent, which is queued by the time the guest has
/// exec'd.
pub fn receive_pty(channel: &OwnedFd) -> Result<PtyMaster> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let msg = recvmsg::<UnixAddr>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::sys("receiving the guest's pty", e))?;
    let mut fds = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(|e| Error::sys("receiving the guest's pty", e))?
    {
        if let ControlMessageOwned::ScmRights(got) = c {
            // SAFETY: SCM_RIGHTS gave us these fds, owned by nothing else.
            fds.extend(
                got.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    match (fds.pop(), fds.is_empty()) {
        // SAFETY: the child sent the master of the pty it opened.
        (Some(fd), true) => Ok(unsafe { PtyMaster::from_owned_fd(fd) }),
        _ => Err(Error::Setup("the guest's child sent no pty".into())),
    }
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

/// Which of stdin, stdout and stderr are terminals.
pub fn terminals() -> Vec<i32> {
    (0..=2)
        .filter(|&fd| {
            // SAFETY: fds 0 to 2 stay open for the life of the process.
            nix::unistd::isatty(unsafe { BorrowedFd::borrow_raw(fd) }).unwrap_or(false)
        })
        .collect()
}

/// A named guest's `spec` for its init, whose stdout is its console: a
/// terminal, so `systemctl`, `journalctl`, `git` or `man` start a pager
/// there, which waits for a key nobody types (the keeper only reads the
/// console) and holds up the script that ran it for good. `PAGER=cat`
/// (which systemd, git and man take as "no pager"), unless the config's
/// `env` names a pager. Not in `guest exec`'s environment: its terminal,
/// if it has one, is a person's.
pub fn without_pager(spec: &GuestSpec) -> GuestSpec {
    let mut spec = spec.clone();
    if !spec.env.iter().any(|e| e.starts_with("PAGER=")) {
        spec.env.push("PAGER=cat".to_string());
    }
    spec
}

/// In `unifs run`'s child, after setsid: the slave becomes the controlling
/// terminal and replaces each of stdin, stdout and stderr that is a
/// terminal (the others, a pipe or a file, stay as they are).
pub fn attach_slave_to_terminals(slave: &str) -> Result<()> {
    let which = terminals();
    let fd = nix::fcntl::open(slave, OFlag::O_RDWR, nix::sys::stat::Mode::empty())
        .map_err(|e| Error::sys(format!("opening {slave}"), e))?;
    let dups = [
        nix::unistd::dup2_stdin::<&OwnedFd>,
        nix::unistd::dup2_stdout::<&OwnedFd>,
        nix::unistd::dup2_stderr::<&OwnedFd>,
    ];
    for t in which {
        dups[t as usize](&fd).map_err(|e| Error::sys("dup2 of the run's pty", e))?;
    }
    Ok(())
}

/// Restores the user's terminal mode when dropped, unless we are in the
/// terminal's background by then: its shell has the terminal and set it
/// up as it wants (a change from the background would undo that).
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
        let stdin = std::io::stdin();
        if let Some(t) = &self.saved {
            if standing(stdin.as_fd()) == Standing::Foreground {
                let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, t);
            }
        }
    }
}

/// Where we stand on the user's terminal, a job control shell's.
#[derive(PartialEq, Eq)]
enum Standing {
    /// In its foreground process group, or it is not our controlling
    /// terminal (no job control through it): ours to read and set up.
    Foreground,
    /// A background job (`unifs run … &`): a read gets EIO (SIGTTIN is
    /// ignored) and the terminal is the shell's.
    Background,
    /// Hung up: every ioctl on it fails with EIO.
    HungUp,
}

fn standing(terminal: BorrowedFd) -> Standing {
    match nix::unistd::tcgetpgrp(terminal) {
        Ok(group) if group == nix::unistd::getpgrp() => Standing::Foreground,
        Ok(_) => Standing::Background,
        Err(nix::errno::Errno::ENOTTY) => Standing::Foreground,
        Err(_) => Standing::HungUp,
    }
}

/// Copies between the user's terminal and the guest's pty until `child`
/// exits; returns its exit status.
pub fn proxy(master: PtyMaster, child: Pid) -> Result<Exit> {
    let stdin = std::io::stdin();
    proxy_between(master, child, Some(stdin.as_fd()), &mut std::io::stdout())
}

/// `unifs run`'s proxy (see [`attach_slave_to_terminals`]): input from
/// stdin if it is a terminal (else the guest reads stdin itself), output
/// to the first of stdout and stderr that is one.
pub fn proxy_terminals(master: PtyMaster, child: Pid) -> Result<Exit> {
    let ttys = terminals();
    let stdin = std::io::stdin();
    let input = ttys.contains(&0).then(|| stdin.as_fd());
    if ttys.contains(&1) || !ttys.contains(&2) {
        proxy_between(master, child, input, &mut std::io::stdout())
    } else {
        proxy_between(master, child, input, &mut std::io::stderr())
    }
}

/// The proxy: `input` (a terminal, put in raw mode) to the pty, the pty to
/// `out` (a terminal too, whose window size the pty gets). Ends early on the
/// user's terminal's hang-up (see [`hang_up`]).
fn proxy_between<W: Write + AsFd>(
    mut master: PtyMaster,
    child: Pid,
    input: Option<BorrowedFd>,
    out: &mut W,
) -> Result<Exit> {
    let is_tty = |fd: BorrowedFd| nix::unistd::isatty(fd).unwrap_or(false);
    // A piped input's end is an end of input; a terminal's (in raw mode, no
    // ^D ends a read) is its hang-up, as is EIO on writing to one.
    let input_tty = input.is_some_and(is_tty);
    let out_tty = is_tty(out.as_fd());
    let mut buf = [0u8; 8192];
    let mut stdin_open = input.is_some();
    // The user's terminal is read, and in raw mode, only while we are in
    // its foreground: a background job's read gets EIO, no hang-up, and
    // its terminal modes are the shell's.
    let mut raw: Option<RawMode> = None;
    loop {
        if sys::hangup_caught() {
            return hang_up(master, child);
        }
        let reading = match input.filter(|_| input_tty).map(standing) {
            None => stdin_open,
            Some(Standing::Foreground) => {
                raw.get_or_insert_with(RawMode::enter);
                stdin_open
            }
            Some(Standing::Background) => {
                raw = None;
                false
            }
            Some(Standing::HungUp) => return hang_up(master, child),
        };
        let size_from = input.unwrap_or(out.as_fd());
        sys::copy_window_size(size_from, master.as_fd());
        let master_fd: BorrowedFd = master.as_fd();
        let mut fds = vec![PollFd::new(master_fd, PollFlags::POLLIN)];
        if let (true, Some(i)) = (reading, input) {
            fds.push(PollFd::new(i, PollFlags::POLLIN));
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
                    let written = out.write_all(&buf[..n]).and_then(|()| out.flush());
                    if out_tty && written.is_err_and(|e| e.raw_os_error() == Some(libc::EIO)) {
                        return hang_up(master, child);
                    }
                }
                // EIO: no slave is open any more.
                _ => {}
            }
        }
        if let (true, Some(i)) = (stdin_ready, input) {
            match nix::unistd::read(i, &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = master.write_all(&buf[..n]);
                }
                // Unless we were just put in the background.
                _ if input_tty && standing(i) != Standing::Background => {
                    return hang_up(master, child)
                }
                _ if input_tty => {}
                _ => {
                    // End of input: an end-of-file for the guest's reader.
                    stdin_open = false;
                    let _ = master.write_all(&[4]);
                }
            }
        }
        // A command that ended as the terminal hung up (a shell reading
        // end of input there exits 0) ended by the hang-up.
        let status = |code: i32| if sys::hangup_caught() { 129 } else { code };
        if let Ok(ended) = waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            if let Some(exit) = super::launch::shell_status(ended) {
                let code = status(exit.code);
                return drain(master, out, Exit { code, ..exit });
            }
        }
    }
}

/// How long a command's session has to end after its hang-up.
const HANG_UP_WAIT: Duration = Duration::from_secs(2);

/// The user's terminal hung up (its window closed, an ssh session dropped;
/// or a SIGHUP came, passed on already): the session ends, as sshd ends
/// one. Closing the guest's pty gives the command's session the kernel's
/// hang-up (SIGHUP, and EIO on its terminal), which the SIGHUP passed on
/// alone is not to a command that ignores it; nothing would then end
/// this proxy, polling a dead terminal. `child` gets [`HANG_UP_WAIT`] to
/// end (a shell ends at once); if it has not, it is killed: `exec`'s relay,
/// leaving the command to the guest (as the second signal does), or `run`'s
/// guest, which `run` ends anyway. Returns 129 (SIGHUP's) either way: the
/// status a command has then (a shell that read the end of input before
/// its SIGHUP came exits 0) says only how the hang-up reached it.
fn hang_up(master: PtyMaster, child: Pid) -> Result<Exit> {
    drop(master);
    let mut deadline = Instant::now() + HANG_UP_WAIT;
    let mut killed = false;
    loop {
        let ended = match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
            Ok(_) => None,
            Err(_) => Some(129),
        };
        if ended.is_some() {
            return Ok(Exit::without_signal(129));
        }
        if Instant::now() >= deadline {
            if killed {
                // Not reaped: it is left to init when we exit, soon after.
                return Ok(Exit::without_signal(129));
            }
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            killed = true;
            deadline = Instant::now() + HANG_UP_WAIT;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Prints what the command wrote just before it ended.
fn drain(mut master: PtyMaster, stdout: &mut impl Write, exit: Exit) -> Result<Exit> {
    let mut buf = [0u8; 8192];
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
    Ok(exit)
}

/// `exec` without a terminal of the guest's own: each of stdin, stdout and
/// stderr (a terminal, a file, a device, a pipe) reaches the command as a
/// pipe we copy, never itself. A guest process could keep a terminal fd
/// (its own background job, or guest root through /proc/PID/fd) and read
/// what the user types to the host's shell after the command ended; guest
/// root could chmod or chown a file or device; and one that kept the host's
/// pipe would hold up its reader (a shell's `$(…)`) until the guest stops,
/// writing into it what it likes. Our pipe leads nowhere once we stop
/// copying.
pub struct Piped {
    /// (our end, the command's end) of fds 0, 1 and 2.
    ends: [Option<(std::fs::File, OwnedFd)>; 3],
}

impl Piped {
    pub fn open() -> Result<Piped> {
        let mut ends: [Option<(std::fs::File, OwnedFd)>; 3] = [None, None, None];
        for (fd, end) in ends.iter_mut().enumerate() {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| Error::sys("pipe2 for the guest's stdio", e))?;
            if fd == 0 {
                // Never blocked on a command that stops reading.
                nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                    .map_err(|e| Error::sys("fcntl of a stdio pipe", e))?;
            }
            *end = Some(if fd == 0 {
                (w.into(), r)
            } else {
                (r.into(), w)
            });
        }
        Ok(Piped { ends })
    }

    /// In the child: the command's ends become its stdin, stdout, stderr.
    pub fn attach(&self) -> Result<()> {
        let dups = [
            nix::unistd::dup2_stdin::<&OwnedFd>,
            nix::unistd::dup2_stdout::<&OwnedFd>,
            nix::unistd::dup2_stderr::<&OwnedFd>,
        ];
        for (end, dup) in self.ends.iter().zip(dups) {
            if let Some((_, theirs)) = end {
                dup(theirs).map_err(|e| Error::sys("dup2 of a stdio pipe", e))?;
            }
        }
        Ok(())
    }

    /// Copies between our stdio and the pipes until `child` exits (then
    /// what it wrote just before); returns its exit status. Nothing is
    /// read from our stdin that the command's pipe cannot take.
    pub fn proxy(self, child: Pid) -> Result<Exit> {
        let _epipe = PipeErrors::returned();
        // A regular file as stdin is copied by a thread of its own, with
        // `pread` (a read of it that hangs, on a hung FUSE or NFS mount,
        // must not hold up this loop and so `exec`'s end), and set back by
        // what the command left unread once it ends, as `unifs run` does.
        // A reader's end of its pipe kept, to count that.
        let [stdin, stdout, stderr] = self.ends;
        let file_copy = stdin.as_ref().and_then(|(ours, theirs)| {
            let reader = theirs.try_clone().ok()?;
            super::run_stdio::copy_stdin_file(ours.as_fd(), reader)
        });
        let [stdin, stdout, stderr] = [stdin, stdout, stderr].map(|e| e.map(|(ours, _)| ours));
        // The copy holds the pipe now: a clone of ours would keep it open.
        let mut to_guest = stdin.filter(|_| file_copy.is_none());
        let mut outs: Vec<(std::fs::File, i32)> = [(stdout, 1), (stderr, 2)]
            .into_iter()
            .filter_map(|(f, fd)| f.map(|f| (f, fd)))
            .collect();
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: fd 0 stays open for the life of the process.
            let our_stdin = unsafe { BorrowedFd::borrow_raw(0) };
            let mut fds = Vec::new();
            if let Some(w) = &to_guest {
                fds.push(match pending.is_empty() {
                    true => PollFd::new(our_stdin, PollFlags::POLLIN),
                    false => PollFd::new(w.as_fd(), PollFlags::POLLOUT),
                });
            }
            for (r, _) in &outs {
                fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, PollTimeout::from(100u16));
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut next = 0;
            if let Some(w) = to_guest.as_mut() {
                if ready[0] && pending.is_empty() {
                    match std::io::stdin().lock().read(&mut buf) {
                        Ok(n) if n > 0 => pending.extend_from_slice(&buf[..n]),
                        // End of input: the command reads an end of file.
                        _ => to_guest = None,
                    }
                } else if ready[0] {
                    match w.write(&pending) {
                        Ok(n) => drop(pending.drain(..n)),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // The command closed its stdin.
                        Err(_) => to_guest = None,
                    }
                }
                next = 1;
            }
            let mut closed = Vec::new();
            for (i, (r, fd)) in outs.iter_mut().enumerate() {
                if ready[next + i] && !copy_out(r, *fd, &mut buf) {
                    closed.push(i);
                }
            }
            for i in closed.into_iter().rev() {
                outs.remove(i);
            }
            // Through shell_status: the signal that ended the helper is
            // exec's to judge (launch::Ended).
            let ended = waitpid(child, Some(WaitPidFlag::WNOHANG)).ok();
            let Some(exit) = ended.and_then(super::launch::shell_status) else {
                continue;
            };
            // What it wrote just before it ended; not what processes it
            // left behind write later.
            for (r, fd) in &mut outs {
                loop {
                    let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
                    if poll(&mut fds, PollTimeout::ZERO).unwrap_or(0) == 0
                        || !copy_out(r, *fd, &mut buf)
                    {
                        break;
                    }
                }
            }
            // Left just past what it read (after its output, as `unifs
            // run` does: a stdin that is stdout too, `<> f >&0`, would get
            // it over what the command left unread); what it left in the
            // pipe is taken out, so that a process of the guest's left
            // holding the pipe does not read it too.
            if let Some(copy) = file_copy {
                copy.set_back();
            }
            return Ok(exit);
        }
    }
}

/// One read from a command's output pipe, written to our fd `fd`; false
/// at its end.
fn copy_out(r: &mut std::fs::File, fd: i32, buf: &mut [u8]) -> bool {
    match r.read(buf) {
        // Whoever reads our end went away (`… | head`): this pipe is closed
        // too, and the command's next write fails as it would there.
        Ok(n) if n > 0 => match fd {
            1 => std::io::stdout().lock().write_all(&buf[..n]).is_ok(),
            _ => std::io::stderr().lock().write_all(&buf[..n]).is_ok(),
        },
        _ => false,
    }
}

/// SIGPIPE ignored while it lives: a write to a pipe whose reader is gone
/// (the command's stdin, which it closed; our stdout) then fails with
/// EPIPE, which the copying handles, instead of killing `exec` (the
/// program's default, for `unifs … | head`) and losing the command's exit
/// status.
struct PipeErrors;

impl PipeErrors {
    fn returned() -> PipeErrors {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        PipeErrors
    }
}

impl Drop for PipeErrors {
    fn drop(&mut self) {
        crate::sys::default_sigpipe();
    }
}
