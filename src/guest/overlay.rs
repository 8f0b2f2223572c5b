//! `unifs run`'s root served through the copy-on-write overlay, for the life
//! of the run, as `guest start` serves a named guest's root.
//!
//! The overlay is mounted over the root directory itself, in a mount
//! namespace of `unifs run`'s own (its mounts slaves of the host's, so
//! nothing propagates to the host; all but those the run uses let go of, see
//! [`super::host_mounts`], so it keeps no host filesystem alive): the host
//! never sees the mount, the guest's namespace is a copy of ours and so
//! starts on it, and when `unifs run` ends (even by SIGKILL) the
//! namespaces and with them the mount go away. No temporary mount point is
//! left anywhere.
//!
//! The FUSE daemon is a forked child, not threads of `unifs run`: the
//! launcher must stay single-threaded, because its clone3 child runs Rust
//! code (which allocates) before it execs. The daemon dies with `unifs run`
//! (parent-death signal), leaves the caller's terminal (own session) so a
//! Ctrl-C meant for the guest does not end it, and ends by itself once its
//! filesystem is unmounted.

use super::host_mounts::{self, Used};
use super::sys::{self, Forked};
use super::{Error, Result};
use crate::fs::MountOptions;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long the daemon may take to end after the unmount before it is killed.
const DAEMON_EXIT: Duration = Duration::from_secs(5);

/// The root directory with the overlay mounted over it (in this process's
/// mount namespace only). Dropping it unmounts and reaps the daemon.
#[derive(Debug)]
pub struct OverlayRoot {
    root: PathBuf,
    daemon: Pid,
    /// Set once [`OverlayRoot::kill_daemon`] killed it.
    killed: AtomicBool,
}

impl OverlayRoot {
    /// Mounts the overlay of `root` over `root` itself, in a new
    /// mount namespace of this process. Call it while the process is
    /// single-threaded and before the guest is cloned (which then inherits
    /// the mount). Returns once the mount is ready. The daemon joins the
    /// groups whose `cgroup.procs` are open in `procs` (the guest's daemon
    /// leaves) before it mounts, its OOM score lowered. Of the host's
    /// mounts the namespace keeps those holding `root` or `used` (see
    /// [`host_mounts::let_go_of_unused`]).
    pub fn mount(
        root: &Path,
        opts: &MountOptions,
        procs: Vec<std::fs::File>,
        used: &Used,
    ) -> Result<OverlayRoot> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Permission("starting a guest"));
        }
        if !root.is_dir() {
            return Err(Error::no_root(root, None));
        }
        let failed = |reason: String| Error::OverlayRoot {
            root: root.to_path_buf(),
            reason,
        };
        match nix::sched::unshare(CloneFlags::CLONE_NEWNS) {
            Err(Errno::EPERM) => {
                return Err(Error::Permission(
                    "creating namespaces (CAP_SYS_ADMIN in the initial user namespace)",
                ))
            }
            r => r.map_err(|e| Error::sys("unshare(CLONE_NEWNS)", e))?,
        }
        // mount_namespaces(7): the copies are still peers of the host's
        // mounts. Slaves, not private: a slave gets the host's mount events
        // and sends none, so the overlay never reaches the host, and a host
        // mount the run keeps goes from here too at its unmount, where the
        // host's mounts are shared (elsewhere only letting go of it, below,
        // ends it).
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(|e| Error::sys("making the mounts of `unifs run` slaves", e))?;
        let mut used = used.clone();
        used.trees.push(root.to_path_buf());
        host_mounts::let_go_of_unused(&used);
        // The root itself (and what is mounted below it now) a private copy
        // the overlay is served from: a host mount made below the root
        // during the run would otherwise come into the guest's tree (the
        // daemon shows a mounted filesystem's root directory).
        nix::mount::mount(
            Some(root),
            root,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("bind {} on itself", root.display()), e))?;
        nix::mount::mount(
            None::<&str>,
            root,
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| Error::sys(format!("making {} private", root.display()), e))?;
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
        let parent = nix::unistd::getpid();
        match sys::fork().map_err(|e| Error::fork("forking the overlay daemon", e))? {
            Forked::Child => {
                let report = Some((tx.as_raw_fd(), ""));
                sys::in_child("the overlay daemon", report, move || {
                    drop(rx);
                    daemon(root, opts, parent, &procs, tx)
                })
            }
            Forked::Parent(pid) => {
                drop(tx);
                drop(procs);
                let msg = read_report(rx);
                if msg == "ok" {
                    return Ok(OverlayRoot {
                        root: root.to_path_buf(),
                        daemon: pid,
                        killed: AtomicBool::new(false),
                    });
                }
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                // An allocation that fails aborts the daemon: under a low
                // RLIMIT_AS, which the hint then names.
                Err(failed(if msg.is_empty() {
                    format!(
                        "the overlay daemon died before the mount was ready{}",
                        crate::fs::ready::address_space_hint()
                    )
                } else {
                    msg
                }))
            }
        }
    }

    /// The mounted root (the directory itself, with the overlay over it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Kills the daemon while the guest runs: a guest process waiting for
    /// the answer to a request the daemon has read (stopped, or hung, in
    /// the middle of it) ignores SIGKILL until the connection ends. Its
    /// files then fail (ENOTCONN) and it dies. Nothing is lost a SIGKILL of
    /// the daemon would not lose: a break is a temp file until its rename.
    pub fn kill_daemon(&self) {
        let how = match crate::fs::process_stopped(self.daemon.as_raw()) {
            Some(true) => "is stopped (SIGSTOP, or a debugger holds it)",
            _ => "does not answer them",
        };
        tracing::warn!(
            "the guest did not end on SIGKILL: its processes wait for an answer of the overlay \
             daemon (pid {}), which {how}; killing the daemon",
            self.daemon
        );
        self.killed.store(true, Ordering::SeqCst);
        let _ = kill(self.daemon, Signal::SIGKILL);
    }
}

/// The daemon's report: `ok` as soon as it comes (the daemon keeps serving),
/// else everything up to EOF (an error message, or nothing if it died).
fn read_report(rx: OwnedFd) -> String {
    let mut rx = std::fs::File::from(rx);
    let mut msg = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match rx.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => msg.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        if msg == b"ok" {
            break;
        }
    }
    String::from_utf8_lossy(&msg).into_owned()
}

/// The forked daemon: mounts, reports, serves until unmounted. Never returns.
fn daemon(
    root: &Path,
    opts: &MountOptions,
    parent: Pid,
    procs: &[std::fs::File],
    tx: OwnedFd,
) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != parent {
        sys::exit_child(1); // `unifs run` died before the line above.
    }
    let _ = nix::unistd::setsid();
    let _ = nix::unistd::chdir("/");
    // Blocked in every thread the mount starts: the guest gets the signals
    // (`unifs run` forwards them); the daemon ends with the unmount.
    let _ = super::sys::termination_signals().thread_block();
    let mut tx = std::fs::File::from(tx);
    // In the guest's groups, under its limits, before it serves anything.
    if let Err(e) = sys::join_cgroups(procs.iter().map(std::os::fd::AsFd::as_fd)) {
        let _ = write!(tx, "joining the guest's cgroups: {e}");
        sys::exit_child(1);
    }
    // Without CAP_SYS_RESOURCE its score stays.
    sys::shield_from_oom();
    // Before the mount: nothing of the caller's kept open, and nothing
    // opened later that could lie below the mount (served by ourselves).
    // But stderr, `unifs run`'s own: the daemon's warnings (its open-file
    // limit reached) go there. It ends before `unifs run` does.
    // (A closed one stays /dev/null.)
    let kept = nix::unistd::dup(std::io::stderr()).ok();
    if let Err(e) = crate::fs::sys::redirect_stdio(None) {
        let _ = write!(tx, "redirecting the daemon's output: {e}");
        sys::exit_child(1);
    }
    if let Some(fd) = kept {
        let _ = nix::unistd::dup2_stderr(&fd);
    }
    pin_mmap_threshold();
    crate::sys::test_panic!("overlay-daemon");
    // A guest's write past the caller's `ulimit -f` fails with EFBIG
    // rather than killing the daemon under the guest.
    crate::sys::ignore_sigxfsz();
    if let Err(e) = crate::fs::ready::preflight_threads(opts.threads, crate::fs::ready::Daemon::Run)
    {
        let _ = write!(tx, "{e}");
        sys::exit_child(1);
    }
    let mounted = match crate::fs::mount(root, root, opts) {
        Ok(mounted) => mounted,
        Err(e) => {
            let _ = write!(tx, "{e}");
            sys::exit_child(1)
        }
    };
    // "ok" once the mount answers with every FUSE thread started (a thread
    // that cannot start ends serving, and the guest would get a dead
    // root); from a thread, as serving is this one's.
    let report = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let threads = mounted.threads;
    let ready = {
        let (report, root) = (report.clone(), root.to_path_buf());
        std::thread::Builder::new()
            .name("unifs-ready".into())
            .spawn(move || {
                let answered = crate::fs::ready::wait_until_serving(&root, threads);
                if let Some(mut tx) = report.lock().ok().and_then(|mut r| r.take()) {
                    let _ = match answered {
                        Ok(()) => tx.write_all(b"ok"),
                        Err(e) => write!(tx, "the overlay did not answer: {e}"),
                    };
                }
            })
    };
    if let Err(e) = ready {
        let _ = write!(
            report.lock().unwrap().as_mut().unwrap(),
            "readiness thread: {e}{}",
            crate::fs::ready::thread_hint(&e)
        );
        sys::exit_child(1);
    }
    let served = mounted.serve();
    // Never said ready: `unifs run` hears why (and unmounts). In one
    // write: another thread's failed allocation may abort us meanwhile,
    // and a message cut short would hide the hint.
    if let Some(mut tx) = report.lock().ok().and_then(|mut r| r.take()) {
        let why = match &served {
            Ok(()) => "the overlay was unmounted before it was ready".to_string(),
            Err(e) => format!(
                "the overlay daemon stopped before the mount was ready: {e}{}",
                crate::fs::ready::thread_hint(e)
            ),
        };
        let _ = tx.write_all(why.as_bytes());
    }
    sys::exit_child(if served.is_ok() { 0 } else { 1 })
}

/// Each FUSE thread allocates a zeroed 16 MiB request buffer. glibc's
/// malloc raises its mmap threshold when a large mapped block is freed, and a
/// buffer then taken from an arena heap is cleared by hand: 4,096 page faults
/// and several ms of CPU per thread at every `unifs run`, where a fresh
/// mapping is zero already and only touched as requests fill it. A fixed
/// threshold keeps every block of 8 MiB and more a fresh mapping.
fn pin_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
    }
}

impl Drop for OverlayRoot {
    /// Unmounts (the guest's copy went with its namespace) and waits for the
    /// daemon, which ends once its filesystem is gone; kills it after
    /// [`DAEMON_EXIT`].
    fn drop(&mut self) {
        // A daemon that ended before its guest left it without files
        // ("Transport endpoint is not connected"): say so.
        let early = match waitpid(self.daemon, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(format!("exit status {code}")),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(format!("killed by {sig}")),
            _ => None,
        };
        let killed = self.killed.load(Ordering::SeqCst);
        if let Some(how) = early.as_ref().filter(|_| !killed) {
            tracing::warn!(
                "the overlay daemon serving {} ended while the guest ran ({how}); the guest's \
                 files were unreachable from then on",
                self.root.display()
            );
        }
        if let Err(e) = crate::fs::unmount(&self.root, true) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                tracing::warn!("unmounting the overlay at {}: {e}", self.root.display());
            }
        }
        if early.is_some() {
            return; // reaped
        }
        // A pidfd turns readable when the daemon ends: no polling delay.
        let pidfd = sys::pidfd_open(self.daemon).ok();
        let deadline = Instant::now() + DAEMON_EXIT;
        loop {
            match waitpid(self.daemon, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = u16::try_from(left.as_millis().clamp(1, 100)).unwrap_or(100);
                    match &pidfd {
                        Some(fd) => {
                            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                            let _ = poll(&mut fds, PollTimeout::from(ms));
                        }
                        None => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
                Ok(WaitStatus::StillAlive) => {
                    tracing::warn!(
                        "the overlay daemon (pid {}) did not end after the unmount; killing it",
                        self.daemon
                    );
                    let _ = kill(self.daemon, Signal::SIGKILL);
                    let _ = waitpid(self.daemon, None);
                    return;
                }
                Err(Errno::EINTR) => continue,
                Ok(_) | Err(_) => return,
            }
        }
    }
}
