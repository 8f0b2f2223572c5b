//! `unifs run`'s keeper ([`Keeper`]): what ties a foreground guest to `unifs
//! run`, cleaning up after a killed run (what it could not do goes to its
//! report, [`super::keeper_report`]); and the run's watch for the keeper's
//! death.

use super::cgroup::{self, Cgroup};
use super::keeper_report::{report_path, Report};
use super::sys::{self, Forked};
use super::{Error, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigSet;
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// What ties a foreground guest (`unifs run`'s) to `unifs run`, whatever
/// the guest does. The parent-death signal of the guest's init is not
/// enough: without `--init` init is the guest's own command, which may
/// clear it (`prctl(PR_SET_PDEATHSIG, 0)`) and outlive a SIGKILLed `unifs
/// run`. The keeper is a child of `unifs run` outside the guest (in none of
/// its namespaces, not dumpable, a session of its own so a kill of the
/// run's process group misses it, every catchable signal blocked) that
/// holds one end of a socket pair only `unifs run` holds the other end of
/// (close-on-exec, made after the guest was cloned). Its end without a
/// word first means `unifs run` died: the keeper SIGKILLs the guest's init
/// through a pidfd (and with it the guest's PID namespace), then
/// everything in the guest's cgroups, and removes them, as `unifs run`
/// would have. What it could not do goes to its report ([`Report`]).
pub struct Keeper {
    /// Our end: one byte says `unifs run` cleaned up itself; its hang-up
    /// says the keeper is gone.
    tell: OwnedFd,
    pid: Pid,
    /// The guest's init, and the run's name (`run-PID-TAG`, its groups').
    guest: Pid,
    run: String,
}

/// How long the keeper tries to end what is left in a dead run's cgroups.
const KEEPER_KILL: Duration = Duration::from_secs(5);

impl Keeper {
    /// Forks the keeper of `guest`, our clone child not yet reaped (so its
    /// pid is still that process), of the run `run` whose groups are
    /// `cgroup` and whose locked port's filter is `filter`; it reports in
    /// `reports` ([`report_path`]).
    pub(super) fn start(
        guest: Pid,
        cgroup: &Cgroup,
        (run, filter): (&str, Option<&str>),
        reports: &Path,
    ) -> Result<Keeper> {
        // A pidfd stays that process's whatever becomes of its pid. None on
        // a kernel without pidfds (before 5.3): the cgroups alone then.
        let pidfd = sys::pidfd_open(guest).ok();
        // A socket, not a pipe: a keeper gone (killed) must not take
        // `unifs run` with it by the SIGPIPE of the dismissal's write.
        let (life, tell) = super::launch::report_channel()?;
        let report = report_path(reports, run);
        match sys::fork().map_err(|e| Error::fork("forking the keeper of `unifs run`", e))? {
            Forked::Child => sys::in_child("the keeper of `unifs run`", None, move || {
                drop(tell);
                keep_run(life, pidfd, (cgroup, filter), &report)
            }),
            Forked::Parent(pid) => Ok(Keeper {
                tell,
                pid,
                guest,
                run: run.to_string(),
            }),
        }
    }

    /// `unifs run` ended its guest and removed its groups itself: the
    /// keeper ends without touching anything. (Not waited for: it ends at
    /// once, and `unifs run` soon after.)
    pub fn dismiss(self) {
        use nix::sys::socket::{send, MsgFlags};
        let _ = send(self.tell.as_raw_fd(), b"d", MsgFlags::MSG_NOSIGNAL);
    }

    /// Waits until the keeper is gone, then warns (once): the guest is no
    /// longer tied to the run. Returns then, or when `stop` hangs up.
    ///
    /// Not restarted: only root or the OOM killer can kill it (it is
    /// root's, not dumpable, every other signal blocked), an operator's
    /// choice not to undo or a memory shortage a new fork would add to;
    /// the run itself still cleans up when its command ends.
    pub fn watch(&self, stop: BorrowedFd<'_>) {
        let hung_up = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        loop {
            // The keeper never writes: any event on our end is its end.
            let mut fds = [
                PollFd::new(self.tell.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop, PollFlags::POLLIN),
            ];
            // The keeper's end first: it is dismissed only after the stop.
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) if hung_up(&fds[0]) => break,
                Ok(_) if hung_up(&fds[1]) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
        tracing::warn!(
            "the keeper of this `unifs run` (unifs-keeper, pid {}) has ended (killed?): the \
             guest is no longer tied to the run. The run goes on and cleans up when its \
             command ends; but if `unifs run` (pid {}) is killed with SIGKILL, the guest may \
             run on in the groups unifs/{}: end it then with `kill -KILL {}` (its PID 1: that \
             ends every process of its PID namespace), or the next `unifs run` or `guest \
             start` ends what is left there and removes the groups",
            self.pid,
            std::process::id(),
            self.run,
            self.guest
        );
    }
}

/// The keeper ([`Keeper`]) of the run whose report is `report`; never
/// returns.
fn keep_run(
    life: OwnedFd,
    guest: Option<OwnedFd>,
    (cgroup, filter): (&Cgroup, Option<&str>),
    report: &Path,
) -> ! {
    crate::sys::test_panic!("run-keeper");
    // Held until it ends: the sweep of a later run or start leaves the
    // groups of this run, once dead, to this keeper while it lives.
    let held = cgroup.keeper_lock();
    sys::set_not_dumpable();
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_name(c"unifs-keeper");
    // Nothing but SIGKILL ends it: a Ctrl-C or SIGTERM meant for the run
    // (`unifs run` passes them on) must not take the tie away.
    let _ = SigSet::all().thread_block();
    // Nothing of the run's kept open: its terminal, pipes someone reads to
    // their end, the guest's handshake pipes.
    sys::stdio_to_null();
    let keep: Vec<i32> = [
        Some(life.as_raw_fd()),
        guest.as_ref().map(|g| g.as_raw_fd()),
        held.as_ref().map(|h| h.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    .collect();
    sys::close_fds_except(&keep);
    let _ = nix::unistd::chdir("/");
    let mut word = [0u8; 1];
    let mut life = std::fs::File::from(life);
    loop {
        match life.read(&mut word) {
            Ok(1) => sys::exit_child(0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    // `unifs run` is gone, and nobody hears our stderr: from here on it is
    // the report, which the next run or start shows.
    let report = Report::open(report);
    // The tests' window on a keeper at work (its report made, nothing
    // done yet): to look at it, or kill it there.
    crate::sys::test_stop!("UNIFS_TEST_KEEPER_STOP");
    // The guest's init is PID 1 of its namespace: its SIGKILL from here
    // ends every process there.
    if let Some(fd) = &guest {
        let _ = sys::pidfd_kill(fd.as_fd(), libc::SIGKILL);
    }
    // And what is in its groups (thawing a freezer group it froze itself
    // in, where a SIGKILL waits).
    let deadline = Instant::now() + KEEPER_KILL;
    let left = loop {
        cgroup.kill_all();
        let left = cgroup.pids();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The run's overlay daemon died with it (parent-death signal).
    cgroup.end_daemon();
    // Its port's filter outlives the interface, and no later start has
    // the run's name to find it by.
    if let Some(table) = filter {
        super::port_lock::unfilter(table);
    }
    if left.is_empty() {
        cgroup.remove();
    }
    // Groups holding a process cannot go: a later sweep removes them.
    for pid in left {
        tracing::warn!("{}", cgroup::unkillable(pid));
    }
    crate::sys::test_panic!("run-keeper-end");
    if let Some(report) = report {
        report.close();
    }
    sys::exit_child(0)
}
