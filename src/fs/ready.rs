//! Whether a mount can serve, before and after it is made: the address
//! space its FUSE threads take (RLIMIT_AS), and a mount that answers with
//! every thread waiting for requests. `unifs mount` and `unifs run` say
//! "ready" only past both; a thread that fails to start after that would
//! end the daemon, and leave a dead mount under the caller.

use std::path::{Path, PathBuf};

/// Address space a FUSE thread takes when it starts: fuser's request
/// buffer (the largest write, 16 MiB, and a page) and its stack (2 MiB,
/// and a guard page).
pub const FUSE_THREAD_SPACE: usize = (16 << 20) + 4096 + (2 << 20) + 4096;

/// Room beyond the threads' for what serving allocates.
const SERVE_SPACE: usize = 16 << 20;

/// What a mount daemon starts beside its FUSE threads, as its caller runs
/// it: a pids limit must leave room for those tasks too, or the start
/// fails half-way, once the mount is made (a thread or the probe's fork
/// that cannot start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// `unifs mount -f`: a signal thread.
    Foreground,
    /// `unifs mount` (a named guest's root too): a signal thread, and until
    /// it is ready a readiness thread and its probe (a child process); the
    /// `unifs mount` that forked it waits in the same groups meanwhile.
    Forked,
    /// `unifs run`'s: a readiness thread and its probe, until it is ready.
    Run,
}

impl Daemon {
    /// Its tasks beside its main thread and its FUSE threads while it
    /// starts, named for the messages.
    fn starting(self) -> &'static [&'static str] {
        match self {
            Daemon::Foreground => &["a signal thread"],
            Daemon::Forked => &["a signal thread", "a readiness thread", "a probe's child"],
            Daemon::Run => &["a readiness thread", "a probe's child"],
        }
    }

    /// The most tasks it holds while it starts, with `threads` FUSE
    /// threads: its main thread and the others, and the `unifs mount`
    /// that forked it.
    pub fn starting_tasks(self, threads: usize) -> u64 {
        let parent = u64::from(self == Daemon::Forked);
        parent + 1 + threads as u64 + self.starting().len() as u64
    }

    /// The tasks it keeps while it serves: its main thread, its FUSE
    /// threads, a signal thread (not `unifs run`'s).
    pub fn serving_tasks(self, threads: usize) -> u64 {
        1 + threads as u64 + u64::from(self != Daemon::Run)
    }

    /// "4 FUSE threads, a signal thread and ...", for a message.
    pub fn describe(self, threads: usize) -> String {
        let plural = if threads == 1 { "" } else { "s" };
        let mut all = vec![format!("{threads} FUSE thread{plural}")];
        all.extend(self.starting().iter().map(|s| s.to_string()));
        let last = all.pop().unwrap_or_default();
        format!("{} and {last}", all.join(", "))
    }
}

/// Whether the tasks `daemon` starts (its `threads` FUSE threads and the
/// others it runs until it is ready) fit in the pids cgroups this process
/// is in, and whether the address space the FUSE threads take when they
/// start is there (RLIMIT_AS), tried by mapping it all at once and letting
/// it go: else a thread aborts on its buffer after the mount was made.
/// Said here, nothing is mounted yet. (Mapped outside malloc, whose dynamic
/// mmap threshold a large block freed would raise for good.)
pub fn preflight_threads(threads: usize, daemon: Daemon) -> Result<(), String> {
    // What is running already (this thread, a `unifs mount` that waits)
    // is counted in pids.current; the caller's other threads come and go.
    let tasks = threads as u64 + daemon.starting().len() as u64;
    if let Some((group, max, current)) = pids_limits().find(|&(_, max, cur)| max < cur + tasks) {
        return Err(format!(
            "cannot start the mount's {} ({tasks} tasks): the pids cgroup {} allows {max} \
             tasks (pids.max; a systemd unit's TasksMax=) and holds {current}: raise it, or \
             mount with fewer threads (-o threads=1)",
            daemon.describe(threads),
            crate::sys::shown(&group)
        ));
    }
    if crate::sys::while_mapped(threads * FUSE_THREAD_SPACE + SERVE_SPACE, || ()).is_some() {
        return Ok(());
    }
    Err(format!(
        "cannot start the mount's {threads} FUSE threads: not enough address space for \
         their {} MiB each; {}: raise it (`ulimit -v unlimited`), or mount with fewer threads \
         (-o threads=1)",
        FUSE_THREAD_SPACE >> 20,
        crate::sys::thread_limits_text()
    ))
}

/// What a thread's or a fork's failure `e` adds to its message: the
/// limits on tasks for EAGAIN, else [`address_space_hint`].
pub fn thread_hint(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => format!(
            "; a limit on processes and threads was reached: {}",
            task_limits_text()
        ),
        _ => address_space_hint(),
    }
}

/// The limits on tasks a thread or fork that failed with EAGAIN may have
/// met: the pids cgroups this process is in, RLIMIT_NPROC and RLIMIT_AS.
pub fn task_limits_text() -> String {
    let groups: Vec<String> = pids_limits()
        .map(|(group, max, current)| {
            format!(
                "the pids cgroup {} allows {max} tasks and holds {current} (pids.max; a \
                 systemd unit's TasksMax=)",
                crate::sys::shown(&group)
            )
        })
        .collect();
    let mut text = groups.join(", ");
    if !text.is_empty() {
        text.push_str(", ");
    }
    text + &crate::sys::thread_limits_text()
}

/// The pids cgroups (v1 `pids` or v2) this process is in, from its own
/// group up, that set a limit: (directory, pids.max, pids.current). A
/// group's limit is "max" where it sets none.
fn pids_limits() -> impl Iterator<Item = (PathBuf, u64, u64)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let groups: Vec<(&'static str, PathBuf)> = own
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let top = match (id, controllers) {
                (_, c) if c.split(',').any(|c| c == "pids") => "/sys/fs/cgroup/pids",
                ("0", "") => "/sys/fs/cgroup",
                _ => return None,
            };
            Some((top, Path::new(top).join(path.trim_start_matches('/'))))
        })
        .collect();
    let read = |p: PathBuf| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let mut limits = Vec::new();
    for (top, group) in &groups {
        for dir in group.ancestors().take_while(|a| a.starts_with(top)) {
            if let (Some(max), Some(current)) =
                (read(dir.join("pids.max")), read(dir.join("pids.current")))
            {
                limits.push((dir.to_path_buf(), max, current));
            }
        }
    }
    limits.into_iter()
}

/// Where RLIMIT_AS is set: the limits to raise, as a parenthesis; else
/// nothing. Under it an allocation aborts and a thread fails to start
/// (EAGAIN), however much memory the host has.
pub fn address_space_hint() -> String {
    let limited = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS)
        .is_ok_and(|(soft, _)| soft != libc::RLIM_INFINITY);
    match limited {
        true => format!(
            " ({}: raise them, `ulimit -v unlimited`)",
            crate::sys::thread_limits_text()
        ),
        false => String::new(),
    }
}

/// Whether `threads` of this process's threads are fuser's (`fuser-N`),
/// all asleep: waiting for a request, past their start.
fn fuse_threads_waiting(threads: usize) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return true; // no /proc: not told
    };
    let waiting = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            Some((name.starts_with("fuser-"), rest.starts_with('S')))
        })
        .filter(|&(fuser, _)| fuser)
        .map(|(_, asleep)| asleep)
        .collect::<Vec<_>>();
    waiting.len() >= threads && waiting.iter().all(|&asleep| asleep)
}

/// How long a daemon waits for its own mount to answer.
pub const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits, up to [`READY_WAIT`], until this process's mount at `mp` answers
/// a statfs and its `threads` FUSE threads all wait for requests (their
/// buffers taken). Call it from a thread of the serving daemon; once it
/// answers, a panic ends the daemon ([`super::on_panic`]).
pub fn wait_until_serving(mp: &Path, threads: usize) -> nix::Result<()> {
    let serving = serving(mp, threads);
    if serving.is_ok() {
        super::on_panic::mark_ready();
    }
    serving
}

/// [`wait_until_serving`]'s wait.
fn serving(mp: &Path, threads: usize) -> nix::Result<()> {
    let deadline = std::time::Instant::now() + READY_WAIT;
    let path = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes())
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let asked = statfs_apart(&path, left).and_then(|_| match fuse_threads_waiting(threads) {
            true => Ok(()),
            false => Err(nix::errno::Errno::EAGAIN),
        });
        match asked {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

/// A statfs of `mp` made by a child process that holds none of this
/// process's file descriptors, waited for up to `limit` (ETIMEDOUT).
/// Made by the daemon's own thread, a request one of its FUSE threads had
/// read when the daemon was killed (its abort on a failed allocation, the
/// OOM killer) was never answered: the kernel waits out a request already
/// read, uninterruptibly, and the waiting thread kept open the daemon's
/// /dev/fuse fds, whose closing would have ended the request. The daemon
/// stayed a zombie with its mount hung for good. A child ends with the
/// connection. Where no child can be made (a pids limit), asked here.
fn statfs_apart(mp: &std::ffi::CStr, limit: std::time::Duration) -> nix::Result<()> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    // SAFETY: the child makes raw system calls only (no allocation, no
    // lock another thread may hold), on a path made before the fork, then
    // `_exit`s.
    let child = match unsafe { libc::fork() } {
        -1 => return nix::sys::statfs::statfs(mp).map(|_| ()),
        0 => unsafe {
            libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
            let mut buf: libc::statfs = std::mem::zeroed();
            let code = match libc::statfs(mp.as_ptr(), &mut buf) {
                0 => 0,
                _ => *libc::__errno_location(),
            };
            libc::_exit(code)
        },
        pid => nix::unistd::Pid::from_raw(pid),
    };
    reap_killed_before();
    let deadline = std::time::Instant::now() + limit;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, code)) => return Err(nix::errno::Errno::from_raw(code)),
            Ok(WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(WaitStatus::StillAlive) => {
                kill_and_reap(child);
                return Err(nix::errno::Errno::ETIMEDOUT);
            }
            Ok(_) => return Err(nix::errno::Errno::EINTR),
            Err(e) => return Err(e),
        }
    }
}

/// Probe children killed on a timeout that had not ended after
/// [`kill_and_reap`]'s wait: reaped by a later probe.
static KILLED: std::sync::Mutex<Vec<nix::unistd::Pid>> = std::sync::Mutex::new(Vec::new());

/// Kills a probe child that timed out and waits, a little, for it to end:
/// one waited for once with WNOHANG right after the kill stayed a zombie
/// until the daemon ended. SIGKILL ends a statfs whose request the daemon
/// has not read; one it has read is waited out uninterruptibly, so a child
/// not ended in time is left for [`reap_killed_before`].
fn kill_and_reap(child: nix::unistd::Pid) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while let Ok(WaitStatus::StillAlive) = waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        if std::time::Instant::now() >= deadline {
            KILLED.lock().unwrap_or_else(|e| e.into_inner()).push(child);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Reaps the children [`kill_and_reap`] left, those that have ended.
fn reap_killed_before() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut killed = KILLED.lock().unwrap_or_else(|e| e.into_inner());
    killed.retain(|&pid| {
        matches!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's children that are zombies, by pid: those forked by
    /// this thread (they have its name), not other tests'.
    fn zombies() -> Vec<i32> {
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        let mine = format!("({}) Z", comm.trim_end());
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for pid in children.split_whitespace() {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                if stat.contains(&mine) {
                    found.push(pid.parse().unwrap());
                }
            }
        }
        found
    }

    /// A probe that times out (a zero limit: its child is killed before it
    /// ends) leaves no zombie behind.
    #[test]
    fn a_timed_out_probe_leaves_no_zombie() {
        let before = zombies();
        let root = std::ffi::CString::new("/").unwrap();
        let mut timeouts = 0;
        for _ in 0..20 {
            if statfs_apart(&root, std::time::Duration::ZERO) == Err(nix::errno::Errno::ETIMEDOUT) {
                timeouts += 1;
            }
        }
        assert!(timeouts > 0, "no probe timed out");
        let left: Vec<i32> = zombies()
            .into_iter()
            .filter(|z| !before.contains(z))
            .collect();
        assert!(left.is_empty(), "{timeouts} timeouts left zombies {left:?}");
    }
}
