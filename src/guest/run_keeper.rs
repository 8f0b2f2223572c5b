//! `unifs run`'s keeper ([`Keeper`]): what ties a foreground guest to `unifs
//! run`; the report it leaves when it could not clean up after a killed run
//! ([`tell_reports`] shows it); and the run's watch for the keeper's death.

use super::cgroup::{self, Cgroup};
use super::sys::{self, Forked};
use super::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigSet;
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
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
    /// `cgroup`; it reports in `reports` ([`report_path`]).
    pub(super) fn start(guest: Pid, cgroup: &Cgroup, run: &str, reports: &Path) -> Result<Keeper> {
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
                keep_run(life, pidfd, cgroup, &report)
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
fn keep_run(life: OwnedFd, guest: Option<OwnedFd>, cgroup: &Cgroup, report: &Path) -> ! {
    crate::sys::test_panic("run-keeper");
    sys::set_not_dumpable();
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_name(c"unifs-keeper");
    // Nothing but SIGKILL ends it: a Ctrl-C or SIGTERM meant for the run
    // (`unifs run` passes them on) must not take the tie away.
    let _ = SigSet::all().thread_block();
    // Nothing of the run's kept open: its terminal, pipes someone reads to
    // their end, the guest's handshake pipes.
    sys::stdio_to_null();
    let keep: Vec<i32> = [Some(&life), guest.as_ref()]
        .into_iter()
        .flatten()
        .map(|fd| fd.as_raw_fd())
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
    crate::sys::test_stop("UNIFS_TEST_KEEPER_STOP");
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
    if left.is_empty() {
        cgroup.remove();
    }
    // Groups holding a process cannot go: a later sweep removes them.
    for pid in left {
        tracing::warn!("{}", cgroup::unkillable(pid));
    }
    crate::sys::test_panic("run-keeper-end");
    if let Some(report) = report {
        report.close();
    }
    sys::exit_child(0)
}

/// Where the keeper of the run `run` (`run-PID-TAG`) reports: in the run
/// dir `reports` (RUN_DIR), `run-PID-TAG.keeper` (no guest is named so).
pub fn report_path(reports: &Path, run: &str) -> PathBuf {
    reports.join(format!("{run}{REPORT}"))
}

const REPORT: &str = ".keeper";

/// A keeper's report, its stderr once its run is dead (its own warnings,
/// those of the cgroup code it calls, a panic's words), locked (flock)
/// while it works; removed if it stayed empty. The next `unifs run` or
/// `guest start` shows what it says ([`tell_reports`]).
struct Report {
    file: Flock<std::fs::File>,
    path: PathBuf,
}

impl Report {
    /// None if it cannot be made: the keeper works on all the same.
    fn open(path: &Path) -> Option<Report> {
        // Root's alone, as `guest start` makes it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path.parent()?)
            .ok()?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        let file = Flock::lock(file, FlockArg::LockExclusive).ok()?;
        nix::unistd::dup2_stderr(&*file).ok()?;
        Some(Report {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Nothing went wrong: nothing to tell.
    fn close(self) {
        if self.file.metadata().is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How old a report may be and still be empty for the work of a keeper
/// that has not locked it yet (a moment after it made it).
const UNLOCKED_EMPTY: Duration = Duration::from_secs(10);

/// Shows, once each, what the keepers of killed runs reported in the run
/// dir `reports` (see [`Report`]), and removes their reports. One still
/// being written (locked) waits for the next run or start.
pub fn tell_reports(reports: &Path) {
    let Ok(dir) = std::fs::read_dir(reports) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(run) = name.to_str().and_then(|n| n.strip_suffix(REPORT)) else {
            continue;
        };
        if !run.starts_with("run-") {
            continue;
        }
        let path = entry.path();
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        let Ok(file) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        let mut text = Vec::new();
        let _ = (&*file).take(64 << 10).read_to_end(&mut text);
        let text = String::from_utf8_lossy(&text);
        let age = file.metadata().and_then(|m| m.modified());
        let fresh = age.is_ok_and(|t| t.elapsed().is_ok_and(|a| a < UNLOCKED_EMPTY));
        if text.trim().is_empty() && fresh {
            continue;
        }
        let pid = run.split('-').nth(1).unwrap_or("?");
        let keeper =
            format!("the keeper of the killed `unifs run` (pid {pid}, groups unifs/{run})");
        if text.trim().is_empty() {
            tracing::warn!(
                "{keeper} ended before it was done (killed?): what is left in those groups is \
                 ended by this or a later `unifs run` or `guest start`"
            );
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match logged(line) {
                (Some(when), said) => tracing::warn!("{keeper} reported at {when}: {said}"),
                (None, said) => tracing::warn!("{keeper} reported: {said}"),
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// A line of the log format (`TIME  LEVEL MESSAGE`, colours or not) as
/// its time and message; any other line as its text.
fn logged(line: &str) -> (Option<String>, String) {
    let plain = strip_colours(line);
    let parsed = plain.split_once(' ').and_then(|(time, rest)| {
        let (level, said) = rest.trim_start().split_once(' ')?;
        let is_time = time.ends_with('Z') && time.contains('T');
        let is_level = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level);
        (is_time && is_level).then(|| (Some(time.to_string()), said.trim_start().to_string()))
    });
    parsed.unwrap_or((None, plain))
}

/// `line` without the terminal's colour sequences (`ESC [ … m`).
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_is_its_time_and_message() {
        let line = "2026-12-04T14:05:11.491386Z  WARN process 7 (sleep) survived";
        assert_eq!(
            logged(line),
            (
                Some("2026-12-04T14:05:11.491386Z".to_string()),
                "process 7 (sleep) survived".to_string()
            )
        );
        let coloured = "\x1b[2m2026-12-04T14:05:11Z\x1b[0m \x1b[33m WARN\x1b[0m gone";
        let time = Some("2026-12-04T14:05:11Z".to_string());
        assert_eq!(logged(coloured), (time, "gone".to_string()));
        let panic = "unifs: the keeper of `unifs run` (pid 9) failed";
        assert_eq!(logged(panic), (None, panic.to_string()));
    }
}
