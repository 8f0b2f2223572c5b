//! Starting a guest process: cgroups, clone into new namespaces, the
//! parent/child handshake, and waiting for it.
//!
//! Handshake: the child blocks on `ready` until the parent has put it into
//! its cgroups and network; it reports a failed set-up step or exec on the
//! close-on-exec `report` pipe, whose EOF alone means the exec worked.

use super::cgroup::Cgroup;
pub use super::run_keeper::Keeper;
use super::sys::{self, Forked, Linux, Syscall};
use super::{console, net, rootfs, Error, GuestSpec, NetMode, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::PtyMaster;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the guest's standard streams go.
pub enum Stdio {
    /// Inherited: `unifs run` without a terminal.
    Inherit,
    /// `unifs run` on a terminal: those of stdin, stdout and stderr that
    /// are terminals become the slave of a pty we proxy, which is also the
    /// guest's controlling terminal. The pty is of the guest's own devpts
    /// (opened by the child once it is mounted, see
    /// [`console::open_run_terminal`]): guest root keeps chown and fowner,
    /// and given the user's own terminal or a host pty could hand it to a
    /// host user (`chown` through /proc/self/fd/0).
    Terminal,
    /// stdin from /dev/null; a new session; a console (see
    /// [`console::open_console`]), also stdout and stderr, whose master
    /// the caller gets, to relay to the console log. No file of the host's
    /// is the guest's: `null` (the host's /dev/null) only until the
    /// guest's own are there.
    Detached { null: OwnedFd },
}

/// A guest process that has exec'd its command.
pub struct Spawned {
    /// Its PID on the host.
    pub pid: Pid,
    /// `unifs run`'s (a foreground guest's) [`Keeper`].
    pub keeper: Option<Keeper>,
    /// [`Stdio::Terminal`]'s pty master, to proxy, or
    /// [`Stdio::Detached`]'s console master, to relay.
    pub pty: Option<PtyMaster>,
    /// `--init`'s: where its command said its PID on the host (see
    /// [`super::command_pid`]).
    pub command_pid: Option<OwnedFd>,
    /// A veth guest's host end as its set-up made it (its index, and
    /// `lock_mac`'s MAC address of `eth0` and port filter), for its record
    /// and clean-up.
    pub host_end: Option<net::HostEnd>,
}

impl Spawned {
    fn new(
        pid: Pid,
        keeper: Option<Keeper>,
        pty: Option<PtyMaster>,
        (command_pid, host_end): (Option<OwnedFd>, Option<net::HostEnd>),
    ) -> Spawned {
        Spawned {
            pid,
            keeper,
            pty,
            command_pid,
            host_end,
        }
    }
}

/// What `unifs run` gives [`spawn`]: its guest gets a [`Keeper`].
pub struct Foreground<'a> {
    /// Called (once) when a second signal comes (see
    /// [`sys::catch_signals`]) while the guest is still being set up: it
    /// must end what is in the guest's groups.
    pub end: &'a dyn Fn(&Cgroup),
    /// The run dir, where a keeper that could not clean up reports.
    pub reports: &'a Path,
}

/// `unifs run`: starts the guest in `cgroup` (made by the caller, whose
/// overlay daemon is in it too), waits for it, and returns the command's
/// exit status (128 + signal if a signal ended it). The caller removes the
/// groups once the overlay is unmounted. Its keeper reports in `reports`.
pub fn run(
    spec: &GuestSpec,
    overlay: Option<&super::overlay::OverlayRoot>,
    cgroup: &Cgroup,
    reports: &Path,
) -> Result<i32> {
    // Caught from before the clone, so a SIGTERM during set-up is not lost
    // (nor kills us, leaving the guest to the parent-death signal).
    sys::pass_sigterm_as(spec.stop_signal);
    sys::catch_signals().map_err(|e| Error::sys("installing signal handlers", e))?;
    let stdio = match console::terminals().is_empty() {
        true => Stdio::Inherit,
        false => Stdio::Terminal,
    };
    // A guest that a signal does not end (a PID 1 without a handler for
    // it, or one frozen in its freezer group) would keep `unifs run`
    // waiting: the second signal ends it outright.
    let end = |cgroup: &Cgroup| {
        cgroup.kill_all();
        // Still there: waiting on the overlay daemon, which is stopped
        // or hangs in a request they made (SIGKILL cannot end that).
        if let Some(overlay) = overlay {
            let deadline = std::time::Instant::now() + KILLED_GUEST_EXIT;
            while !cgroup.pids().is_empty() {
                if std::time::Instant::now() >= deadline {
                    overlay.kill_daemon();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    // The guest's set-up asks the overlay too (its root's statfs, before
    // the exec): the second signal ends a guest stuck there as well.
    crate::sys::test_pause!("UNIFS_TEST_SPAWN_PAUSE_MS");
    let foreground = Foreground { end: &end, reports };
    let oom_before = cgroup.oom_counts();
    let kernel_log = super::kernel_log::KernelLog::open();
    // A file or device of the caller's as stdin, stdout or stderr: the
    // guest gets a pipe we copy through (see `run_stdio`).
    let mut swapped = super::run_stdio::swap()
        .map_err(|e| Error::Setup(format!("giving the guest pipes for its stdio: {e}")))?;
    let spawned = spawn(spec, stdio, cgroup, Some(foreground));
    let copies = swapped.restore();
    let mut spawned = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            let _ = copies.finish();
            return Err(e);
        }
    };
    // After the clone: no thread of ours while it forks.
    let oom_watch = super::oom_watch::OomWatch::start(cgroup.clone(), oom_before, kernel_log, None);
    let host_end = spawned.host_end.clone();
    announce_host_if(spec, host_end.as_ref().and_then(|h| h.locked.as_ref()));
    // Passed on by on_second_signal's watcher once init takes them.
    sys::hold_signals();
    sys::forward_signals_to(spawned.pid)
        .map_err(|e| Error::sys("installing signal handlers", e))?;
    // A thread of ours that fails (the one passing signals on) stops the
    // guest: the run must not go on deaf to them.
    let _ = super::keeper_panic::stop_run_on_thread_panic(spawned.pid, spec.stop_signal);
    let (pty, guest) = (spawned.pty.take(), spawned.pid);
    let status = watching(spawned.keeper.as_ref(), || {
        on_second_signal(
            || end(cgroup),
            || match pty {
                Some(master) => console::proxy_terminals(master, guest),
                None => wait_exit(guest),
            },
        )
    });
    let status = match super::keeper_panic::failed() {
        Some(_) => status.map(|_| Exit::without_signal(super::keeper_panic::FAILED_EXIT)),
        None => status,
    };
    // Its command's SIGKILL (137: by itself, or passed on by --init's
    // reaper, whose command said its PID) the OOM killer's: said, or an
    // operator looks for who sent it. The reaper's own too: the OOM killer
    // may pick it (the guest's PID 1, whose end ends the command).
    let said = spawned
        .command_pid
        .as_ref()
        .map(|from| super::command_pid::received(from, guest.as_raw()));
    // Without a reaper, the guest's PID 1 alone (a None is one not known).
    let command = said.map(|s| s.command);
    let pids: Vec<_> = [Some(guest.as_raw())].into_iter().chain(command).collect();
    let what = "the guest's command";
    let ended = status.as_ref().ok().map(|&exit| Ended::of(exit, said));
    let status = match ended {
        Some(ended) => {
            let code = judge_end(oom_watch, &pids, &ended, cgroup, what, true).code;
            // The command's own code, after which its reaper was killed,
            // is no reboot's or halt's.
            match ended.reaper_killed_after_exit() {
                Some(_) => Ok(code),
                None => Ok(run_status(code, ended.killed_by)),
            }
        }
        None => {
            let _ = oom_watch.verdict(&pids, None, cgroup.memory_limit());
            status.map(|exit| exit.code)
        }
    };
    cgroup.kill_all();
    let unwritten = copies.finish();
    // By the index its set-up read: the name is the run's alone, but the
    // interface is only ever deleted by what proves it ours.
    net::teardown_recorded(spec, host_end.map(|h| h.ifindex));
    if let Some(keeper) = spawned.keeper {
        keeper.dismiss();
    }
    status.map(|code| output_lost(code, &unwritten))
}

/// The exit status of a run whose command ended with `code`, but part of
/// whose output could not be written (`unwritten`, see
/// [`super::run_stdio::Copies::finish`]): said, and 1 for a 0, as a
/// command that gets the write error itself does (`echo hi > /dev/full`).
/// 1 too for a command that SIGPIPE ended: the copy closed its pipe on the
/// error, and the command's next write got that in place of the error
/// (`yes > /dev/full` exits 1, not 141). Its own other statuses stay.
fn output_lost(code: i32, unwritten: &[String]) -> i32 {
    for what in unwritten {
        tracing::error!("{what}");
    }
    match code {
        _ if unwritten.is_empty() => code,
        0 | SIGPIPE_EXIT => 1,
        _ => code,
    }
}

/// The exit status of a command that SIGPIPE ended, as a shell gives it.
const SIGPIPE_EXIT: i32 = 128 + libc::SIGPIPE;

/// How the process a `run` or `exec` waited for ended: the guest's PID 1
/// (the command itself, or unifs's reaper of it) or exec's helper (the
/// command's reaper outside the guest's PID namespace).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ended {
    /// Its status as a shell gives it (128 + N for signal N).
    pub code: i32,
    /// The signal that ended that process itself (None: it exited): its
    /// wait status tells, where 128 + N alone does not.
    pub killed_by: Option<Signal>,
    /// What the command and its reaper said (None: no reaper, the command
    /// is that process).
    pub said: Option<super::command_pid::Said>,
}

impl Ended {
    /// The end `exit` that [`wait_exit`] (or the console's proxy) saw, and
    /// what the command and its reaper `said`.
    pub fn of(exit: Exit, said: Option<super::command_pid::Said>) -> Ended {
        let code = exit.code;
        Ended {
            code,
            killed_by: exit.killed_by.filter(|sig| code == 128 + *sig as i32),
            said,
        }
    }

    /// The command's end was a SIGKILL, or its reaper's was: the process
    /// waited for was killed by it, or the reaper passed on its command's
    /// (it exited 137 and said no exit of its command). A command's own
    /// exit 137 is none: its wait status (no reaper) or its reaper's word
    /// tells.
    pub fn killed(&self) -> bool {
        match (self.killed_by, self.said) {
            (Some(sig), _) => sig == Signal::SIGKILL,
            (None, Some(said)) => said.exited.is_none() && self.code == 128 + libc::SIGKILL,
            (None, None) => false,
        }
    }

    /// The reaper was killed (by this signal) after its command had exited
    /// with the code: that code is the command's end.
    pub fn reaper_killed_after_exit(&self) -> Option<(i32, Signal)> {
        let code = self.said.and_then(|s| s.exited)?;
        self.killed_by.map(|sig| (code, sig))
    }
}

/// What [`judge_end`] made of an end.
pub(super) struct Judged {
    /// The status to exit with: the command's (its own code when it had
    /// exited before its reaper was killed).
    pub code: i32,
    /// The OOM killer ended it (said).
    pub oom: bool,
}

/// Warns that `what` (ended by the kill of one of `pids`, None where not
/// known) was killed by the memory limit, if it `ended` by a SIGKILL and
/// `watch` says the OOM killer sent it (see
/// [`super::oom_watch::OomWatch::verdict`]). A reaper killed after its
/// command exited: the command's code stands (the guest's processes ended
/// with its reaper's end either way), and the reaper's kill is said, the
/// OOM killer's or not. `reaper_in_groups`: the reaper is in the guest's
/// groups (`run --init`'s, the guest's PID 1), so its OOM killer may pick
/// it; exec's helper is not.
pub(super) fn judge_end(
    watch: super::oom_watch::OomWatch,
    pids: &[Option<i32>],
    ended: &Ended,
    cgroup: &Cgroup,
    what: &str,
    reaper_in_groups: bool,
) -> Judged {
    let after_exit = ended.reaper_killed_after_exit();
    // A reaper outside the groups, killed after its command exited: the
    // guest's count (which a host's OOM kill of it would not raise either)
    // says nothing of it, and its window would take another process's
    // kill for its.
    let asked = ended.killed() && (after_exit.is_none() || reaper_in_groups);
    let oom = watch.verdict(pids, asked.then_some("KILL"), cgroup.memory_limit());
    let Some((code, sig)) = after_exit else {
        if let Some(oom) = &oom {
            tracing::warn!("{what} was {}", oom.describe());
        }
        return Judged {
            code: ended.code,
            oom: oom.is_some(),
        };
    };
    let how = match &oom {
        Some(oom) => oom.describe(),
        None => format!("killed by {}", sig.as_str()),
    };
    tracing::warn!("{what} exited {code}; its reaper was then {how}: exit {code}, the command's");
    Judged { code, oom: false }
}

/// Runs `wait` while a thread watches `keeper` (see [`Keeper::watch`]).
fn watching<T: Send>(keeper: Option<&Keeper>, wait: impl FnOnce() -> T) -> T {
    let stop = nix::unistd::pipe2(OFlag::O_CLOEXEC);
    let (Some(keeper), Ok((stop_r, stop_w))) = (keeper, stop) else {
        return wait();
    };
    std::thread::scope(|s| {
        // No thread (a limit on processes): no watch, the run goes on.
        // A panic there is said (and stops the guest: keeper_panic), and
        // ends that thread alone: the run goes on to clean up.
        let _ = std::thread::Builder::new().spawn_scoped(s, || {
            let watch = std::panic::AssertUnwindSafe(|| keeper.watch(stop_r.as_fd()));
            let _ = std::panic::catch_unwind(watch);
        });
        let out = wait();
        // Its hang-up ends the watch, which the scope joins.
        drop(stop_w);
        out
    })
}

/// How long a guest killed by `unifs run`'s second signal may take to end
/// before its overlay daemon is killed under it.
const KILLED_GUEST_EXIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a signal `unifs run` passes on waits for its guest's init to
/// take it (see [`sys::hold_signals`]): `guest stop`'s default --timeout.
pub(crate) const HELD_SIGNAL_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a held signal's target is looked at until it takes it.
pub(crate) const HELD_SIGNAL_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Runs `wait` (a wait for what signals were passed on to); if a second
/// signal comes meanwhile, calls `end` once: what they were passed to did
/// not end on the first. Passes on a signal [`sys::hold_signals`] held.
pub fn on_second_signal<T: Send>(end: impl FnOnce() + Send, wait: impl FnOnce() -> T) -> T {
    let waited = AtomicBool::new(false);
    // Before the watcher looks: a signal from then on wakes it.
    sys::prepare_signal_wake();
    std::thread::scope(|s| {
        let watcher = std::thread::Builder::new().name("signals".into());
        // A panic there is said (in `unifs run` it stops the guest:
        // keeper_panic); caught, it ends the thread alone, and the caller
        // goes on to clean up.
        let waited = &waited;
        let watcher = watcher.spawn_scoped(s, move || {
            let watch = std::panic::AssertUnwindSafe(move || watch_signals(waited, end));
            if std::panic::catch_unwind(watch).is_err() {
                // Not deaf meanwhile: signals go out from the handler again.
                sys::stop_holding(true);
            }
        });
        // No watcher (a limit on processes): held signals go out at once.
        if watcher.is_err() {
            sys::stop_holding(true);
        }
        let out = wait();
        // The tests' window for a signal once the guest ended, before the
        // watcher is told (review_s46_keepers3).
        crate::sys::test_pause!("UNIFS_TEST_WAITED_PAUSE_MS");
        // What it was for has ended: a signal still held goes nowhere.
        sys::stop_holding(false);
        waited.store(true, Ordering::SeqCst);
        // The scope joins the watcher: woken, it ends now.
        sys::wake_signal_waiter();
        out
    })
}

/// [`on_second_signal`]'s watcher, until `waited`: passes on a held
/// signal once init takes it, and calls `end` on a second signal.
fn watch_signals(waited: &AtomicBool, end: impl FnOnce()) {
    let mut held = sys::HeldSignal::default();
    while !waited.load(Ordering::SeqCst) {
        // The tests' way to make this thread fail (keeper_panic says what
        // follows), once a signal came.
        if sys::signals_caught() >= 1 {
            crate::sys::test_panic!("run-signals");
        }
        let holding = held.pass_on(HELD_SIGNAL_LIMIT);
        if sys::signals_caught() >= 2 {
            end();
            return;
        }
        // Woken by each signal and by the end of `wait`; polls only while
        // init has yet to take a held signal.
        sys::wait_signal_wake(holding.then_some(HELD_SIGNAL_POLL));
    }
}

/// A child's end as its wait status tells it: returned with the status
/// from where the wait is, not kept aside for another function to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// As a shell gives it (128 + N for signal N).
    pub code: i32,
    /// The signal that ended it (None: it exited, or no wait status
    /// tells): 128 + N alone does not tell a command's `exit 129`.
    pub killed_by: Option<Signal>,
}

impl Exit {
    /// A status that no wait status tells the signal of (a hang-up's 129,
    /// a failed thread's exit).
    pub fn without_signal(code: i32) -> Exit {
        Exit {
            code,
            killed_by: None,
        }
    }
}

/// The end of a child, its status as a shell reports it.
pub fn wait_exit(pid: Pid) -> Result<Exit> {
    loop {
        match waitpid(pid, None) {
            Ok(ended) => match shell_status(ended) {
                Some(exit) => return Ok(exit),
                None => continue,
            },
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(format!("waiting for pid {pid}"), e)),
        }
    }
}

/// The end of a child that ended so, with the status a shell gives it
/// (128 + N for signal N); None for no end (stopped, continued).
pub(super) fn shell_status(status: WaitStatus) -> Option<Exit> {
    match status {
        WaitStatus::Exited(_, code) => Some(Exit::without_signal(code)),
        WaitStatus::Signaled(_, sig, _) => Some(Exit {
            code: 128 + sig as i32,
            killed_by: Some(sig),
        }),
        _ => None,
    }
}

/// `unifs run`'s exit status when its guest rebooted itself (reboot(2)
/// with CAP_SYS_BOOT), as systemd-nspawn's.
pub const EXIT_REBOOTED: i32 = 133;

/// `unifs run`'s status `code` for its guest's PID 1, told apart from
/// that init's own reboot (EXIT_REBOOTED) or halt (0), which the kernel
/// reports as its death by SIGHUP or SIGINT ([`super::state::Shutdown`]):
/// `killed_by`, the signal that ended it (None: it exited).
fn run_status(code: i32, killed_by: Option<Signal>) -> i32 {
    match killed_by.filter(|sig| code == 128 + *sig as i32) {
        Some(sig) => match super::state::Shutdown::of_signal(sig) {
            Some(super::state::Shutdown::Reboot) => {
                tracing::info!("the guest rebooted itself (reboot(2)): exit {EXIT_REBOOTED}");
                EXIT_REBOOTED
            }
            Some(super::state::Shutdown::Halt) => {
                tracing::info!("the guest halted itself (reboot(2)): exit 0");
                0
            }
            None => code,
        },
        None => code,
    }
}

/// Names a `unifs run`'s host end (`ve-` and a digest of its generated
/// name, which nothing else shows) on a terminal, as nspawn's banner names
/// its container, or with --verbose; a script's stderr is left alone.
/// With `--lock-mac`, the address its port is locked to (derived from that
/// name, new each run: a DHCP server or a switch's ACL is told it here).
fn announce_host_if(spec: &GuestSpec, locked: Option<&super::port_lock::Locked>) {
    if spec.net.mode != NetMode::Veth {
        return;
    }
    let host_if = net::host_ifname(spec);
    let line = match locked {
        Some(l) => format!(
            "guest network: host end {host_if} (eth0 {}, the port locked to it)",
            l.mac
        ),
        None => format!("guest network: host end {host_if} (eth0 in the guest)"),
    };
    use std::io::{IsTerminal, Write};
    match std::io::stderr().is_terminal() {
        true => {
            let _ = writeln!(std::io::stderr(), "unifs: {line}");
        }
        false => tracing::info!("{line}"),
    }
}

/// Clones the guest into `cgroup` (made by [`Cgroup::create`] before its
/// root's overlay daemon started, which joins it too), lets it set itself
/// up and exec. The guest always gets groups of its own, limits or not: it
/// roots its cgroup namespace where it is, and guest root (in a user
/// namespace of its own, no seccomp filter) can mount cgroupfs there; left
/// in the launcher's group it would hold the host's (cgroup.kill,
/// cgroup.freeze and the limits of a login session or service).
/// `foreground`: `unifs run`'s guest (see [`Foreground`]).
pub fn spawn(
    spec: &GuestSpec,
    stdio: Stdio,
    cgroup: &Cgroup,
    foreground: Option<Foreground>,
) -> Result<Spawned> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Permission("starting a guest"));
    }
    if !spec.root.is_dir() {
        return Err(Error::no_root(&spec.root, None));
    }
    for b in &spec.binds {
        if !b.src.exists() {
            return Err(Error::NoBindSource {
                src: b.src.clone(),
                config: None,
            });
        }
    }
    spec.limits.check().map_err(|e| spec.in_its_config(e))?;
    net::check(spec)?;
    warn_if_devices_open(spec, cgroup);
    let spawned = clone_guest(spec, stdio, cgroup, foreground);
    if spawned.is_err() {
        // The caller removes the groups, once the root is unmounted.
        cgroup.kill_all();
    }
    spawned
}

/// Without a v1 devices group (a cgroup v2 host) nothing limits which
/// devices a guest opens: its /dev holds only its own, its tree and binds
/// are nodev, but a node it makes with `--cap-add mknod` opens, as does
/// every node of a devtmpfs it mounts with `sys_admin`. Said, not
/// refused: that guest asked for the capability.
fn warn_if_devices_open(spec: &GuestSpec, cgroup: &Cgroup) {
    if let Some(warning) = devices_open(&spec.name, spec.caps, cgroup.limits_devices()) {
        tracing::warn!("{warning}");
    }
}

/// The warning [`warn_if_devices_open`] gives a guest with capabilities
/// `caps`, if any.
fn devices_open(name: &str, caps: u64, limited: bool) -> Option<String> {
    let has = |cap| super::caps::number(cap).is_ok_and(|n| caps & (1 << n) != 0);
    let how = match (has("mknod"), has("sys_admin")) {
        _ if limited => return None,
        (true, _) => "with mknod it can make and open any device of the host",
        (false, true) => "with sys_admin it can mount a devtmpfs and open any device of the host",
        (false, false) => return None,
    };
    Some(format!(
        "guest {name}: {how} (its disks too): this host has no cgroup v1 devices \
         controller to limit it to its own"
    ))
}

/// The guest, as [`Spawned`] says it.
fn clone_guest(
    spec: &GuestSpec,
    stdio: Stdio,
    cgroup: &Cgroup,
    run: Option<Foreground>,
) -> Result<Spawned> {
    // A socket, sent to without SIGPIPE: a child gone (killed) before its
    // go must not take us with it.
    let (ready_r, ready_w) = report_channel()?;
    // A socket, not a pipe: the trampoline holds it across an exec that
    // leaves it dumpable, and /proc/PID/fd cannot open a socket.
    let (report_r, report_w) = report_channel()?;
    // Where the child sends the master of the pty it opens in its devpts
    // (a terminal's, or a detached guest's console).
    let (pty_r, pty_w) = match stdio {
        Stdio::Terminal | Stdio::Detached { .. } => {
            let (r, w) = report_channel()?;
            (Some(r), Some(w))
        }
        Stdio::Inherit => (None, None),
    };
    // Where --init's command says its PID on the host (its reaper, the
    // guest's PID 1, only knows the guest's).
    let (pid_r, pid_w) = match spec.init {
        true => super::command_pid::channel().map(|(r, w)| (Some(r), Some(w)))?,
        false => (None, None),
    };
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if spec.net.mode != NetMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let foreground = !matches!(stdio, Stdio::Detached { .. });
    let cgroup2 = cgroup.has_v2_group();
    // Read before the clone: the daemon has tried its shield by now (it
    // answers the mount), and the child cannot see its group.
    let above_daemon = spec.limits.memory.is_some() && cgroup.daemon_unshielded();
    // The tests' window to lower a pids limit right before the clone.
    crate::sys::test_stop!("UNIFS_TEST_BEFORE_CLONE_STOP");
    match sys::clone_into(flags) {
        Err(Errno::EPERM) => Err(Error::Permission(
            "creating namespaces (CAP_SYS_ADMIN in the initial user namespace)",
        )),
        Err(e) => Err(Error::fork("clone3 (the guest's first process)", e)),
        Ok(Forked::Child) => {
            let report = Some((report_w.as_raw_fd(), "E"));
            sys::in_child("the guest's set-up", report, move || {
                drop(ready_w);
                drop(report_r);
                drop((pty_r, pid_r));
                let pid_to = pid_w;
                let how = Child {
                    foreground,
                    cgroup2,
                    above_daemon,
                };
                child(spec, stdio, how, ready_r, report_w, pty_w, pid_to)
            })
        }
        Ok(Forked::Parent(pid)) => {
            drop(ready_r);
            drop(report_w);
            drop((pty_w, pid_w));
            let mut host_end = None;
            let joined = cgroup
                .add(pid.as_raw())
                .and_then(|()| net::setup_host_side(spec, pid))
                .map(|h| host_end = h);
            let locked = host_end.as_ref().and_then(|h| h.locked.as_ref());
            // A failure from here on leaves no filter (an interface goes
            // with the child's namespace; a table does not).
            let made = super::port_lock::Made::filter(locked.map(|l| l.table.clone()));
            // Before the guest may exec: from then on its command could
            // undo its parent-death signal.
            let keeper = match (joined, &run) {
                (Ok(()), Some(run)) => {
                    let filter = locked.map(|l| l.table.as_str());
                    Keeper::start(pid, cgroup, (&spec.name, filter), run.reports).map(Some)
                }
                (Ok(()), None) => Ok(None),
                (Err(e), _) => Err(e),
            };
            let keeper = match keeper {
                Ok(keeper) => keeper,
                Err(e) => {
                    let _ = kill(pid, Signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    return Err(e);
                }
            };
            // The tests' window to end the child before it is let go.
            crate::sys::test_stop!("UNIFS_TEST_CLONE_STOP");
            use nix::sys::socket::{send, MsgFlags};
            let go = send(ready_w.as_raw_fd(), b"1", MsgFlags::MSG_NOSIGNAL);
            drop(ready_w);
            if let Err(e) = go {
                let _ = kill(pid, Signal::SIGKILL);
                let ended = match waitpid(pid, None) {
                    Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
                    Ok(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
                    _ => e.desc().to_string(),
                };
                if let Some(keeper) = keeper {
                    keeper.dismiss();
                }
                return Err(Error::Setup(format!(
                    "the guest's first process (pid {pid}) ended before its set-up began \
                     ({ended})"
                )));
            }
            let report = read_report(report_r, || {
                if let Some(run) = &run {
                    (run.end)(cgroup);
                }
            });
            let failed = match (report.is_empty(), &pty_r) {
                (true, None) => {
                    made.keep();
                    return Ok(Spawned::new(pid, keeper, None, (pid_r, host_end)));
                }
                (true, Some(r)) => match console::receive_pty(r) {
                    Ok(pty) => {
                        made.keep();
                        return Ok(Spawned::new(pid, keeper, Some(pty), (pid_r, host_end)));
                    }
                    Err(e) => e,
                },
                (false, _) => decode_report(&spec.command[0], &spec.root, &report),
            };
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            if let Some(keeper) = keeper {
                keeper.dismiss();
            }
            Err(failed)
        }
    }
}

/// The child's report, read to its end (its exec closes the channel). If a
/// second signal comes meanwhile, `end` is called once: a child stuck
/// before its exec (in a request to an overlay daemon that does not
/// answer) would otherwise keep us here for good.
fn read_report(report: OwnedFd, end: impl FnOnce()) -> Vec<u8> {
    let mut end = Some(end);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [PollFd::new(report.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(0) | Err(Errno::EINTR) => {
                if sys::signals_caught() >= 2 {
                    if let Some(end) = end.take() {
                        end();
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(_) => return out,
        }
        match nix::unistd::read(&report, &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => return out,
        }
    }
}

/// The report channel (read end, write end), both close-on-exec.
pub fn report_channel() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair", e))
}

/// What [`child`] is to do beyond its spec: `foreground` (dies with `unifs
/// run`), `cgroup2` (the guest has a cgroup v2 group of its own, to mount
/// at /sys/fs/cgroup), `above_daemon` (its
/// processes start above an overlay daemon the OOM killer could take
/// first: [`sys::set_guest_oom_score`]).
struct Child {
    foreground: bool,
    cgroup2: bool,
    above_daemon: bool,
}

/// Runs in the clone child; never returns. `pty`: where to send the
/// master of the terminal's or console's pty. `command_pid`: where
/// `--init`'s command says its PID.
fn child(
    spec: &GuestSpec,
    stdio: Stdio,
    how: Child,
    ready: OwnedFd,
    report: OwnedFd,
    pty: Option<OwnedFd>,
    command_pid: Option<OwnedFd>,
) -> ! {
    sys::set_not_dumpable();
    // Before the set-up makes mount points in the guest's tree, and while
    // the host's /proc and every capability are there.
    sys::set_guest_umask();
    let Child {
        foreground,
        cgroup2,
        above_daemon,
    } = how;
    sys::set_guest_oom_score(above_daemon);
    sys::clear_unsafe_personality();
    if foreground {
        // Die with `unifs run` from here on (the ready socket covers the time
        // before); the privilege drop sets it again after setresuid.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    }
    let mut go = [0u8; 1];
    if !matches!(std::fs::File::from(ready).read(&mut go), Ok(1)) {
        sys::exit_child(1); // The parent gave up on us.
    }
    crate::sys::test_panic!("guest");
    let result = (|| -> Result<()> {
        // A session of its own, without a controlling terminal: the guest
        // may use the terminal it was given, but TIOCSTI (typing into the
        // host's shell) needs it as controlling tty or CAP_SYS_ADMIN.
        nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
        // Not the caller's stdio (a terminal, or the console log itself for
        // a start after a reboot) meanwhile.
        if let Stdio::Detached { null } = &stdio {
            nix::unistd::dup2_stdin(null).map_err(|e| Error::sys("redirecting stdin", e))?;
            nix::unistd::dup2_stdout(null).map_err(|e| Error::sys("redirecting stdout", e))?;
            nix::unistd::dup2_stderr(null).map_err(|e| Error::sys("redirecting stderr", e))?;
        }
        drop(stdio);
        sys::close_fds_on_exec().map_err(|e| Error::sys("close_range", e))?;
        // The pty once the guest's devpts is its /dev/pts, before the
        // privilege drop (handing it to the command's user needs chown).
        let terminal = || match &pty {
            Some(channel) if foreground => console::open_run_terminal(channel, spec.uid, spec.gid),
            Some(channel) => console::open_console(channel, spec.uid, spec.gid),
            None => Ok(()),
        };
        rootfs::prepare(&Linux, spec, foreground, cgroup2, terminal)?;
        if !foreground {
            // Guest root could chmod or chown the host's /dev/null through
            // /proc/self/fd/0: the guest's own instead, now that it has one.
            let null = nix::fcntl::open(
                "/dev/null",
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| Error::sys("opening the guest's /dev/null", e))?;
            nix::unistd::dup2_stdin(null).map_err(|e| Error::sys("redirecting stdin", e))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        fail(&report, b'E', &e.to_string())
    }
    let detached;
    let spec = match foreground {
        true => spec,
        false => {
            detached = console::without_pager(spec);
            &detached
        }
    };
    if spec.init {
        reap_and_forward(spec, report, command_pid, || Ok(()))
    }
    exec_command(spec, &report)
}

/// Execs the guest's command; on failure reports why and exits 127.
pub fn exec_command(spec: &GuestSpec, report: &OwnedFd) -> ! {
    sys::reset_signals();
    // As the command's user, after the privilege drop: it must be allowed
    // into the directory. A home that is not there is no error (login).
    match (&spec.workdir, &spec.home) {
        (Some(dir), _) => {
            if let Err(e) = nix::unistd::chdir(Path::new(dir)) {
                fail(
                    report,
                    b'E',
                    &format!("working directory {dir} in the guest: {e}"),
                )
            }
        }
        (None, Some(home)) => {
            let _ = nix::unistd::chdir(Path::new(home));
        }
        (None, None) => {}
    }
    let program = Path::new(&spec.command[0]);
    let err = Linux.exec(program, &spec.command, &spec.environment(), report.as_fd());
    let kind = if err == Errno::ENOENT { b'N' } else { b'E' };
    fail(report, kind, &format!("exec {}: {err}", program.display()))
}

fn fail(report: &OwnedFd, kind: u8, msg: &str) -> ! {
    let mut out = vec![kind];
    out.extend_from_slice(msg.as_bytes());
    let _ = nix::unistd::write(report, &out);
    sys::exit_child(127)
}

/// What is in the report socket now, at most 4 KiB of it, without waiting
/// for its end (a guest process may hold the other end).
pub fn read_report_now(report: OwnedFd) -> Vec<u8> {
    let mut out = vec![0u8; 4096];
    let mut len = 0;
    while len < out.len() {
        match nix::sys::socket::recv(
            report.as_raw_fd(),
            &mut out[len..],
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    out.truncate(len);
    out
}

/// The error a child reported on the report pipe; `root` is named if the
/// command is not there.
pub fn decode_report(command: &str, root: &Path, report: &[u8]) -> Error {
    let msg = String::from_utf8_lossy(&report[1..]).into_owned();
    match report[0] {
        b'N' => Error::CommandNotFound {
            command: command.to_string(),
            root: root.to_path_buf(),
        },
        // From the exec trampoline: its exec failed, errno in 4 bytes.
        b'X' => {
            let errno = report
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i32::from_le_bytes);
            let err = Errno::from_raw(errno);
            // The program itself was found before the exec.
            let why = match err {
                Errno::ENOENT => {
                    " (its interpreter is missing: the program on its #! line, \
                     or the ELF loader it was linked for)"
                }
                _ => "",
            };
            Error::Setup(format!("exec {command}: {err}{why}"))
        }
        _ => Error::Setup(msg),
    }
}

/// `--init`: PID 1 stays ours; it forks the command, passes it every signal
/// it gets (but a terminal's stop signals), continues it when a terminal
/// stops it, reaps orphans, and exits with the command's status. Also the
/// relay of `guest exec`, outside the guest's PID namespace (and so with no
/// orphans to reap). `before_exec` runs in the command's process, which
/// says its PID on `pid_to` (see [`super::command_pid`]).
pub(super) fn reap_and_forward(
    spec: &GuestSpec,
    report: OwnedFd,
    pid_to: Option<OwnedFd>,
    before_exec: impl FnOnce() -> Result<()>,
) -> ! {
    // Signals the launcher ignores would never be pending here to pass on.
    sys::reset_signals();
    let all = SigSet::all();
    let _ = all.thread_block();
    let command = match sys::fork() {
        Ok(Forked::Child) => sys::in_child(
            "the guest command's process",
            Some((report.as_raw_fd(), "E")),
            || {
                // A process group of its own, in the terminal's foreground
                // where there is one (`unifs run` on a terminal: the pty's):
                // Ctrl-C on it reaches the command once, not also us, who would
                // pass it on a second time. (Signals are still blocked here, so
                // tcsetpgrp from the background raises no SIGTTOU.)
                if let Some(to) = &pid_to {
                    super::command_pid::say_mine(to);
                }
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
                let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpgrp());
                crate::sys::test_panic!("command");
                if let Err(e) = before_exec() {
                    fail(&report, b'E', &e.to_string())
                }
                exec_command(spec, &report)
            },
        ),
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => fail(
            &report,
            b'E',
            &Error::fork("fork for --init", e).to_string(),
        ),
    };
    drop(report);
    // Kept: said on once the command exits (see command_pid).
    let kept: Vec<i32> = pid_to.iter().map(|to| to.as_raw_fd()).collect();
    sys::close_fds_except(&kept);
    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED;
    loop {
        // By number: realtime signals too (SIGRTMIN+3, a systemd-style stop
        // signal), which nix's `SigSet::wait` panics on.
        let Ok(sig) = sys::wait_blocked_signal() else {
            continue;
        };
        if sig != libc::SIGCHLD {
            // Not a terminal's stop signal: we are no job control shell,
            // nothing would continue the command.
            if !sys::is_terminal_stop(sig) {
                let _ = sys::send_signal(command, sig);
            }
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(flags)) {
                Ok(WaitStatus::Exited(p, code)) if p == command => {
                    if let Some(to) = &pid_to {
                        super::command_pid::say_exited(to, code);
                    }
                    // The tests' window to kill the reaper once it said so
                    // (review_s48_oom4). A pause: `run --init`'s reaper is
                    // the guest's PID 1, which ignores its own SIGSTOP.
                    crate::sys::test_pause!("UNIFS_TEST_REAPER_EXITED_PAUSE_MS");
                    sys::exit_child(code)
                }
                Ok(WaitStatus::Signaled(p, sig, _)) if p == command => {
                    sys::exit_child(128 + sig as i32)
                }
                // Ctrl-Z on the command's terminal: no shell of ours would
                // ever `fg` it, and Ctrl-C or SIGTERM would stay pending on
                // it for good. Done at once, as `fg`: Ctrl-Z does nothing,
                // as without --init (PID 1 ignores it). A job control shell
                // as the command keeps its own jobs (its children) stopped.
                // (A SIGSTOP is the guest's doing: left to it.)
                Ok(WaitStatus::Stopped(p, sig)) if p == command => {
                    if sys::is_terminal_stop(sig as i32) {
                        sys::resume_in_foreground(command);
                    }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::devices_open;
    use crate::guest::caps::number;

    #[test]
    fn a_host_without_the_devices_controller_is_said_for_mknod_and_sys_admin() {
        let cap = |name| 1u64 << number(name).unwrap();
        let mknod = devices_open("g", cap("mknod"), false).unwrap();
        assert!(mknod.contains("with mknod") && mknod.contains("no cgroup v1 devices"));
        // A devtmpfs it mounts holds every device of the host.
        let admin = devices_open("g", cap("sys_admin"), false).unwrap();
        assert!(admin.contains("devtmpfs"), "{admin}");
        assert!(devices_open("g", cap("net_admin"), false).is_none());
        assert!(devices_open("g", cap("mknod") | cap("sys_admin"), true).is_none());
    }
}
