//! Process plumbing of the launcher: clone3 into namespaces, fork, pidfd,
//! fd hygiene and signal forwarding.

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Kernel ABI of clone3(2), CLONE_ARGS_SIZE_VER0.
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Which side of a clone this process is.
pub enum Forked {
    Child,
    Parent(Pid),
}

/// Forks into new namespaces with clone3 (a fork with `flags`). The parent
/// must be single-threaded: the child may only run this crate's set-up code
/// and then exec or `_exit`, inside [`in_child`]. With CLONE_NEWPID the
/// child is PID 1 there.
pub fn clone_into(flags: CloneFlags) -> nix::Result<Forked> {
    let mut args = CloneArgs {
        flags: flags.bits() as u64,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: with no stack and no CLONE_VM clone3 behaves like fork: the
    // child gets a copy of the address space. `args` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match Errno::result(rc)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// A plain fork, for the `--init` reaper and for `guest exec`; the child
/// runs inside [`in_child`].
pub fn fork() -> nix::Result<Forked> {
    // SAFETY: callers are single-threaded; the child execs or `_exit`s.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// Ends a forked child without running the parent's atexit handlers.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// The exit status of a forked child of unifs whose own code failed (it
/// panicked): 125, as `env`, `timeout` or `chroot` say that they failed
/// themselves and not the command they run.
pub const CHILD_FAILED: i32 = 125;

/// Runs `body`, the whole life of a child just forked or cloned (it ends in
/// an exec or [`exit_child`]), named `what` in messages. A panic of its
/// thread ends the child at once, where it happens: unwound, it ran the
/// drops of the child's copy of the parent's frames (nix's `Flock` unlocks
/// the guest's lock, which the parent shares; an
/// [`OverlayRoot`](crate::guest::overlay::OverlayRoot) unmounts the
/// root; its own fds, the report's among them, are closed), then left as
/// the whole command, exit 101, its parent told nothing or misled (a guest
/// "started" whose init never ran, an `exec` giving 101 as its command's
/// status). Instead the child says why on stderr and on `report` (an fd and
/// the prefix its parent reads a failure by), and exits [`CHILD_FAILED`].
/// Threads the child starts itself panic as before, but the overlay
/// daemon's once it serves: any panic ends it ([`crate::fs::on_panic`]),
/// its main thread's too (101, as `unifs mount`'s daemon: not 125).
pub fn in_child(what: &str, report: Option<(i32, &str)>, body: impl FnOnce()) -> ! {
    // The report's file, to know it is still that one when written to:
    // the child may have closed the fd, and another file taken its number.
    let report = report.and_then(|(fd, prefix)| Some((fd, identity(fd)?, prefix.to_string())));
    let (said, reported) = (what.to_string(), report.clone());
    // Another child's hook where this child was forked by one: not called
    // for this one's own thread, which would end as that child.
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A daemon that serves ends on a panic of its own
        // ([`crate::fs::on_panic`]), whichever thread: its main one too.
        if nix::unistd::gettid() != nix::unistd::getpid() || crate::fs::on_panic::serving() {
            return before(info);
        }
        child_failed(&said, &panic_text(info), reported.as_ref())
    }));
    body();
    child_failed(what, "it returned into its parent's code", report.as_ref())
}

/// A panic's message and where it happened: "MESSAGE at FILE:LINE:COL".
fn panic_text(info: &std::panic::PanicHookInfo) -> String {
    let payload = info.payload();
    let why = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic");
    let at = info
        .location()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    format!("{why}{at}")
}

/// In a child of [`in_child`]: from now on a panic of any of its threads
/// but the main one calls `then` with the thread's name and [`panic_text`],
/// after the panic's own message. Such a thread ends alone: what it did for
/// the child stops, unseen, unless `then` acts. With `main_too`, a panic
/// of the main thread calls `then` too ("main"), before [`in_child`]'s hook
/// ends the child (125): else what the child kept (a guest's init) ran on
/// with nobody keeping it.
pub fn on_thread_panic(main_too: bool, then: impl Fn(&str, &str) + Send + Sync + 'static) {
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if nix::unistd::gettid() == nix::unistd::getpid() {
            if main_too {
                then("main", &panic_text(info));
            }
            return before(info);
        }
        before(info);
        let thread = std::thread::current();
        then(thread.name().unwrap_or("without a name"), &panic_text(info));
    }));
}

/// [`in_child`]'s end of a child that failed: says so, exits.
fn child_failed(what: &str, why: &str, report: Option<&(i32, (u64, u64), String)>) -> ! {
    let msg = format!(
        "{what} (pid {}) failed on an internal error and ended: {why} (a bug in unifs: please \
         report it)",
        std::process::id()
    );
    // The parent, told, says it; else it goes to stderr (the child's: the
    // command's, or /dev/null or a log once the child let go of it).
    let told = report.is_some_and(|(fd, id, prefix)| {
        identity(*fd) == Some(*id) && {
            // SAFETY: `fd` is open, and on the same file as when taken.
            let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
            nix::unistd::write(fd, format!("{prefix}{msg}").as_bytes()).is_ok()
        }
    });
    if !told {
        let line = format!("unifs: {msg}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    exit_child(CHILD_FAILED)
}

/// The device and inode of what `fd` is open on, if it is open.
fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: fstat writes into the struct it is given; a closed fd fails.
    let st = unsafe {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        (libc::fstat(fd, st.as_mut_ptr()) == 0).then(|| st.assume_init())?
    };
    Some((st.st_dev, st.st_ino))
}

/// Marks every fd above stderr close-on-exec, so no host file or directory
/// the launcher inherited (an fd of a host directory is a way out of any
/// root) reaches the guest's command.
pub fn close_fds_on_exec() -> nix::Result<()> {
    // SAFETY: close_range takes two fd numbers and flags, no pointers; with
    // CLOSE_RANGE_CLOEXEC it closes nothing now.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Errno::result(rc).map(drop)
}

/// Makes this process non-dumpable: without CAP_SYS_PTRACE nobody can ptrace
/// it or open its /proc/PID/{mem,fd,exe,environ}. execve resets it, so it
/// guards the launcher's own code inside the guest (set-up, the reaper).
pub fn set_not_dumpable() {
    let _ = nix::sys::prctl::set_dumpable(false);
}

/// Closes every fd above stderr, for the `--init` reaper, which never execs:
/// guest root could otherwise open them through /proc/1/fd.
/// Points stdin, stdout and stderr at /dev/null: a daemon's, which must
/// keep nothing of its starter open (a terminal, pipes read to their end).
pub fn stdio_to_null() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
}

pub fn close_fds() {
    // SAFETY: as above; the caller holds no fd above 2 it still needs.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Closes every fd above stderr but those in `keep`, for `unifs run`'s
/// keeper: a copy of the guest's handshake pipes or of the terminal's pty
/// held there would keep them open after `unifs run` is gone.
pub fn close_fds_except(keep: &[i32]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    let close = |from: u32, to: u32| {
        // SAFETY: as above; the fds in `keep` are left alone.
        unsafe { libc::syscall(libc::SYS_close_range, from, to, 0u32) };
    };
    let mut from = 3u32;
    for fd in keep {
        if fd > from {
            close(from, fd - 1);
        }
        from = from.max(fd + 1);
    }
    close(from, u32::MAX);
}

/// Waits for any signal (all must be blocked) and returns its number,
/// realtime signals included.
pub fn wait_blocked_signal() -> nix::Result<i32> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut sig = 0;
    // SAFETY: sigfillset initialises the set it is given; sigwait reads
    // that set and writes one int through a valid pointer.
    let rc = unsafe {
        libc::sigfillset(set.as_mut_ptr());
        libc::sigwait(set.as_ptr(), &mut sig)
    };
    match rc {
        0 => Ok(sig),
        e => Err(Errno::from_raw(e)),
    }
}

/// Sends signal number `sig` to `pid`; unlike nix's `kill`, any number,
/// realtime signals (SIGRTMIN+3, which ends systemd) included.
pub fn send_signal(pid: Pid, sig: i32) -> nix::Result<()> {
    // SAFETY: kill(2) takes no pointers; a bad number is EINVAL.
    Errno::result(unsafe { libc::kill(pid.as_raw(), sig) }).map(drop)
}

/// Whether `sig` sent to `pid` now would reach it. The kernel drops a
/// signal to a PID namespace's init that neither catches nor blocks it
/// (SIGKILL and SIGSTOP from outside aside): systemd, in the moment after
/// its exec before it blocks its signals, loses a SIGRTMIN+3 sent then.
/// True for a process that is no namespace's init (the default action
/// applies) and when /proc cannot say. One blocked but not caught counts
/// only if it is still so [`BLOCKED_AGAIN`] later: blocked for good, it is
/// read by a signalfd or a sigwait thread (systemd); blocked for a moment
/// (dash around its waits), it would be dropped as it is unblocked, before
/// init sets the handler it may set a moment later.
pub fn takes_signal(pid: Pid, sig: i32) -> bool {
    match taking(pid, sig) {
        Taking::Yes => true,
        Taking::No => false,
        Taking::Blocked => {
            std::thread::sleep(BLOCKED_AGAIN);
            taking(pid, sig) != Taking::No
        }
    }
}

/// How long after a look that found a signal blocked (not caught) it must
/// be found blocked again to count as taken ([`takes_signal`]).
pub const BLOCKED_AGAIN: std::time::Duration = std::time::Duration::from_millis(50);

/// What one look at /proc says of `pid` and `sig` ([`takes_signal`]).
#[derive(PartialEq)]
enum Taking {
    Yes,
    No,
    /// Blocked, not caught: taken if it stays so.
    Blocked,
}

fn taking(pid: Pid, sig: i32) -> Taking {
    if sig == libc::SIGKILL || sig == libc::SIGSTOP || !(1..=64).contains(&sig) {
        return Taking::Yes;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Taking::Yes;
    };
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let ns_init = crate::guest::state::nspid(&status).is_some_and(|ids| ids.last() == Some(&1));
    let bit = |key: &str| {
        field(key)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
    };
    if !ns_init || bit("SigCgt:") || in_sigwait(pid) {
        Taking::Yes
    } else if bit("SigBlk:") {
        Taking::Blocked
    } else {
        Taking::No
    }
}

/// sigwait(3) unblocks the signals it waits for while it waits, and /proc
/// shows that mask, not the one the kernel checks (unifs's own reaper, tini):
/// a process there takes them. True when /proc cannot say.
fn in_sigwait(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
        Ok(call) => call
            .split_whitespace()
            .next()
            .and_then(|nr| nr.parse::<libc::c_long>().ok())
            .is_some_and(|nr| nr == libc::SYS_rt_sigtimedwait),
        Err(_) => true,
    }
}

/// A pidfd for `pid`, for setns into all of its namespaces at once.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(fd)? as i32;
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `sig` to the process `pidfd` refers to: never to another that got
/// its pid after it was reaped.
pub fn pidfd_kill(pidfd: BorrowedFd, sig: i32) -> nix::Result<()> {
    // SAFETY: an fd, a signal number, a null siginfo and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
/// A signal that came before there was anyone to pass it to.
static PENDING: AtomicI32 = AtomicI32::new(0);
/// How many signals were caught.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// What a caught SIGTERM is passed on as (0: itself).
static SIGTERM_AS: AtomicI32 = AtomicI32::new(0);
/// Whether a SIGHUP was caught.
static HANGUP: AtomicBool = AtomicBool::new(false);
/// Whether caught signals wait in HELD for [`HeldSignal::pass_on`] rather
/// than go out from the handler (see [`hold_signals`]).
static HOLD: AtomicBool = AtomicBool::new(false);
/// A caught signal not yet passed on (0: none).
static HELD: AtomicI32 = AtomicI32::new(0);

/// From now on, a SIGTERM [`catch_signals`] catches is passed on as `sig`
/// (the guest's stop signal: SIGRTMIN+3 for systemd).
pub fn pass_sigterm_as(sig: i32) {
    SIGTERM_AS.store(sig, Ordering::SeqCst);
}

/// How many of the signals [`catch_signals`] catches came so far.
pub fn signals_caught() -> i32 {
    CAUGHT.load(Ordering::SeqCst)
}

/// Whether one of them was a SIGHUP (our terminal hung up).
pub fn hangup_caught() -> bool {
    HANGUP.load(Ordering::SeqCst)
}

extern "C" fn forward_signal(sig: libc::c_int) {
    // kill and write may set errno under the code this interrupted.
    let errno = nix::errno::Errno::last_raw();
    forward(sig);
    wake_signal_waiter();
    nix::errno::Errno::set_raw(errno);
}

/// The write end of [`wake_pipe`] (-1: not made yet), for the handler.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// A pipe the signal handler writes a byte to, so that a thread in
/// [`wait_signal_wake`] wakes as a signal comes, not at its next poll.
/// Made once and never closed: the handler never writes to an fd number
/// given since to another file.
fn wake_pipe() -> Option<&'static (OwnedFd, OwnedFd)> {
    static PIPE: std::sync::OnceLock<Option<(OwnedFd, OwnedFd)>> = std::sync::OnceLock::new();
    PIPE.get_or_init(|| {
        use nix::fcntl::OFlag;
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok()?;
        WAKE_FD.store(w.as_raw_fd(), Ordering::SeqCst);
        Some((r, w))
    })
    .as_ref()
}

/// Wakes a thread in [`wait_signal_wake`]; async-signal-safe.
pub fn wake_signal_waiter() {
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is the wake pipe's write end, open for good; one
        // byte from a valid buffer. A full pipe (EAGAIN) wakes already.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// Makes the pipe [`wait_signal_wake`] waits on, before what it waits for
/// can happen. False if it could not (no fd left): it then sleeps.
pub fn prepare_signal_wake() -> bool {
    wake_pipe().is_some()
}

/// Waits until a signal is caught or [`wake_signal_waiter`] is called (since
/// the last return: none is lost), or `timeout` passes (None: no limit).
/// Without the pipe, sleeps up to 20 ms.
pub fn wait_signal_wake(timeout: Option<std::time::Duration>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let Some((read, _)) = wake_pipe() else {
        let pause = std::time::Duration::from_millis(20);
        return std::thread::sleep(timeout.map_or(pause, |t| t.min(pause)));
    };
    let timeout = timeout.map_or(PollTimeout::NONE, |t| {
        PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX)
    });
    let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
    // EINTR is a signal too: the caller looks at what came either way.
    let _ = poll(&mut fds, timeout);
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(read, &mut buf), Ok(n) if n > 0) {}
}

fn forward(sig: libc::c_int) {
    CAUGHT.fetch_add(1, Ordering::SeqCst);
    if sig == libc::SIGHUP {
        HANGUP.store(true, Ordering::SeqCst);
    }
    let sig = match SIGTERM_AS.load(Ordering::SeqCst) {
        stop if sig == libc::SIGTERM && stop > 0 => stop,
        _ => sig,
    };
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if pid <= 0 {
        PENDING.store(sig, Ordering::SeqCst);
    } else if HOLD.load(Ordering::SeqCst) {
        HELD.store(sig, Ordering::SeqCst);
    } else {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// From now on, the signals caught for the guest are held for a
/// [`HeldSignal`] to pass on once its init takes them: sent before (just
/// after its exec, before it sets its handlers), the kernel drops them.
/// Whoever calls this must call [`HeldSignal::pass_on`] until
/// [`stop_holding`].
pub fn hold_signals() {
    HOLD.store(true, Ordering::SeqCst);
}

/// Signals go out from the handler again; one held is sent now if `send`
/// (nothing passes it on), else dropped (the guest has ended).
pub fn stop_holding(send: bool) {
    HOLD.store(false, Ordering::SeqCst);
    let sig = HELD.swap(0, Ordering::SeqCst);
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if send && sig != 0 && pid > 0 {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Passes on the signal [`hold_signals`] held, once its target takes it.
#[derive(Default)]
pub struct HeldSignal {
    since: Option<std::time::Instant>,
}

impl HeldSignal {
    /// Sends the held signal if its target takes it ([`takes_signal`]) or
    /// it has waited `limit` (then as before: the kernel may drop it, and
    /// the second signal ends the guest). True while one is still held:
    /// call again in a few ms (nothing tells when init sets its handlers).
    pub fn pass_on(&mut self, limit: std::time::Duration) -> bool {
        let sig = HELD.load(Ordering::SeqCst);
        let pid = FORWARD_TO.load(Ordering::SeqCst);
        if sig == 0 || pid <= 0 {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        if takes_signal(Pid::from_raw(pid), sig) || since.elapsed() >= limit {
            self.since = None;
            let sig = HELD.swap(0, Ordering::SeqCst);
            if sig != 0 {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid, sig) };
            }
            return false;
        }
        true
    }
}

/// Whether `sig`'s action is SIG_IGN now (false if it cannot be read).
fn is_ignored(sig: libc::c_int) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one, into a valid
    // (zeroed, so initialised) buffer.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: zeroed above, and filled by the kernel on success.
    rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

/// Those of SIGHUP, SIGINT and SIGQUIT this process was started with
/// ignored, read once, before [`catch_signals`] first installs its handler:
/// nohup's SIGHUP, or the SIGINT and SIGQUIT a non-interactive shell
/// ignores for a command it starts with `&`. The caller meant them not to
/// reach what it started, so they are left ignored and not passed on (as
/// nohup, shells and most programs do). SIGTERM is always passed on: it is
/// how a caller ends the run.
fn ignored_at_start() -> &'static [nix::sys::signal::Signal] {
    use nix::sys::signal::Signal;
    static IGNORED: std::sync::OnceLock<Vec<Signal>> = std::sync::OnceLock::new();
    IGNORED.get_or_init(|| {
        let ignored: Vec<Signal> = [Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT]
            .into_iter()
            .filter(|sig| is_ignored(*sig as libc::c_int))
            .collect();
        if !ignored.is_empty() {
            tracing::debug!("left ignored, as they were at start (not passed on): {ignored:?}");
        }
        ignored
    })
}

/// Catches SIGTERM, SIGINT, SIGHUP and SIGQUIT from now on, to pass them to
/// the guest once [`forward_signals_to`] names it, but those this process
/// was started with ignored ([`ignored_at_start`]), which stay ignored;
/// ignores SIGTSTP, SIGTTIN and SIGTTOU.
pub fn catch_signals() -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(forward_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let ignored = ignored_at_start();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ]
    .into_iter()
    .filter(|sig| !ignored.contains(sig))
    {
        // SAFETY: the handler only touches atomics and calls kill, all
        // async-signal-safe.
        unsafe { sigaction(sig, &action) }?;
    }
    // The terminal's stop signals (Ctrl-Z) are ignored: stopped, we would
    // hand the terminal back to the host's shell while the guest, a session
    // of its own they do not reach, goes on reading it and takes what is
    // typed to that shell.
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
        // SAFETY: ignoring a signal installs no handler.
        unsafe { sigaction(sig, &ignore) }?;
    }
    Ok(())
}

/// Passes caught signals on to `pid` while we wait for it, starting with
/// one that came while it was being set up.
pub fn forward_signals_to(pid: Pid) -> nix::Result<()> {
    catch_signals()?;
    FORWARD_TO.store(pid.as_raw(), Ordering::SeqCst);
    let early = PENDING.swap(0, Ordering::SeqCst);
    if early != 0 && HOLD.load(Ordering::SeqCst) {
        // Its init has only just exec'd: the likeliest to drop it.
        let _ = HELD.compare_exchange(0, early, Ordering::SeqCst, Ordering::SeqCst);
    } else if early != 0 {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid.as_raw(), early) };
    }
    Ok(())
}

/// Holds SIGTERM, SIGINT, SIGHUP and SIGQUIT back from the calling thread
/// while it lives (the commands that use it have no other thread); one that
/// came meanwhile is delivered when it drops. For a few writes that must
/// all be made, or all undone, together with their record.
pub struct SignalsHeld(Option<nix::sys::signal::SigSet>);

impl SignalsHeld {
    pub fn new() -> SignalsHeld {
        let old = termination_signals().thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK);
        SignalsHeld(old.ok())
    }
}

/// SIGTERM, SIGINT, SIGHUP and SIGQUIT: what ends a command from outside.
pub fn termination_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(sig);
    }
    set
}

impl Default for SignalsHeld {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            let _ = old.thread_set_mask();
        }
    }
}

/// Restores default handling of every signal, realtime ones included, and
/// unblocks them all, for a child about to exec: an ignored signal stays
/// ignored across exec, and the caller's (nohup's SIGHUP, a service's
/// SIGPIPE, a shell's `trap '' RTMIN+5`) is no business of the guest's.
pub fn reset_signals() {
    // The kernel's struct sigaction, all zero: SIG_DFL, no flags and an
    // empty mask, whatever the architecture's field order. Not through the
    // C library, which refuses the two signals it keeps for itself (32 and
    // 33), though a caller may have them ignored too.
    let default = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: the kernel reads a struct sigaction (at most 32
            // bytes) from a valid buffer, writes no old action (null), and
            // takes sigsetsize 8, its own.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
    }
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
}

/// Whether `sig` is a terminal's stop signal (Ctrl-Z's SIGTSTP, or
/// SIGTTIN/SIGTTOU of a background read or write), as opposed to SIGSTOP.
pub fn is_terminal_stop(sig: i32) -> bool {
    matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

/// What a shell's `fg` does, for the `--init` reaper's command stopped by
/// a terminal stop signal: its process group is made the foreground of
/// the controlling terminal (if this process has one among fds 0 to 2),
/// then continued. The reaper must block SIGTTOU (it blocks every signal):
/// tcsetpgrp from the background raises it otherwise.
pub fn resume_in_foreground(pid: Pid) {
    let group = nix::unistd::getpgid(Some(pid)).unwrap_or(pid);
    for fd in 0..=2 {
        // SAFETY: fds 0 to 2 stay open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        if nix::unistd::tcgetpgrp(fd).is_ok() {
            let _ = nix::unistd::tcsetpgrp(fd, group);
            break;
        }
    }
    if nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGCONT).is_err() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Sets this process's OOM score adjustment as low as the kernel lets it,
/// -999 at the least, so the OOM killer takes it last; true if it got
/// -999. That needs CAP_SYS_RESOURCE, or a least (the kernel's
/// `oom_score_adj_min`, inherited, and set only by a writer holding
/// CAP_SYS_RESOURCE) that low. Else the score goes to that least, found by
/// halving (a refused write changes nothing), never above the caller's: 0
/// for most callers, and for one that raised itself to 1000 without the
/// capability; -500 under a unit's `OOMScoreAdjust=-500` without it, whose
/// guest inherits that least and may lower itself to it (before 2026-12-06
/// this daemon went to 0, and the guest could go below it). A unit's
/// `OOMScoreAdjust=1000` is written by systemd, which holds the capability,
/// so its least is 1000 too: the daemon stays at 1000, and its guest,
/// refused 999, stands level with it there. Async-signal-safe: fit for a
/// pre_exec.
pub fn shield_from_oom() -> bool {
    let mut text = [0u8; 8];
    if set_oom_score_adj(score_text(-999, &mut text)) {
        return true;
    }
    let Some(mut allowed) = read_own_oom_score() else {
        return false;
    };
    let mut refused = -999;
    // Each refused write is a capable(CAP_SYS_RESOURCE) denial, which
    // SELinux and AppArmor hosts log: about 10 lines per daemon start.
    while allowed - refused > 1 {
        let mid = refused + (allowed - refused) / 2;
        match set_oom_score_adj(score_text(mid, &mut text)) {
            true => allowed = mid,
            false => refused = mid,
        }
    }
    false
}

/// Sets this process's OOM score adjustment for a guest's first process
/// and `guest exec`'s command: 0, not the caller's (a service's
/// `OOMScoreAdjust=-1000` would keep the OOM killer off every guest
/// process, which would take the host's instead), as Docker resets its
/// daemon's for a container. With CAP_SYS_RESOURCE (before the privilege
/// drop) 0 also becomes the least the guest may set itself (the kernel's
/// `oom_score_adj_min`). `above_daemon` (the guest has a memory limit and
/// its overlay daemon could not be shielded, [`shield_from_oom`]):
/// [`UNSHIELDED_GUEST_SCORE`] instead, so the OOM killer in that limit
/// still takes the guest's processes before the daemon. False if the write
/// failed: a caller's score above its own least stays. Async-signal-safe.
pub fn set_guest_oom_score(above_daemon: bool) -> bool {
    let mut text = [0u8; 8];
    match above_daemon {
        true => set_oom_score_adj(score_text(UNSHIELDED_GUEST_SCORE, &mut text)),
        false => set_oom_score_adj(b"0"),
    }
}

/// A guest's processes' OOM score where the daemon keeps 0: the shield's
/// distance (-999 below them), kept from above. The kernel adds
/// score/1000 of the limit to each process's pages, so a guest process
/// outweighs a daemon holding all but a thousandth of the limit.
pub const UNSHIELDED_GUEST_SCORE: i32 = 999;

/// Whether CAP_SYS_RESOURCE is in this thread's effective set (what
/// lowering an OOM score below its least needs).
pub fn holds_sys_resource() -> bool {
    let bit = crate::sys::caps::CAP_SYS_RESOURCE;
    crate::sys::caps::get()
        .is_ok_and(|sets| sets[(bit / 32) as usize].effective & (1 << (bit % 32)) != 0)
}

/// This process's OOM score adjustment as /proc says it (None if
/// unreadable): for `exec` to put its own back once its command has taken
/// the guest's.
pub fn own_oom_score() -> Option<Vec<u8>> {
    std::fs::read("/proc/self/oom_score_adj")
        .ok()
        .map(|v| v.trim_ascii().to_vec())
}

/// Puts back a score [`own_oom_score`] read.
pub fn put_oom_score_back(score: &[u8]) -> bool {
    set_oom_score_adj(score)
}

/// The umask a guest's set-up and its commands start with, whatever their
/// caller's (systemd-nspawn's and Docker's): a caller's 077 made the mount
/// points the set-up creates in the guest's tree (a bind's missing parents)
/// 0700, closed to the guest's users, and every file the guest made
/// private to its creator.
pub const GUEST_UMASK: u32 = 0o022;

/// Sets [`GUEST_UMASK`] for this process.
pub fn set_guest_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(GUEST_UMASK));
}

/// Clears the personality flags the kernel clears at a set-uid exec
/// (`PER_CLEAR_ON_SETID`): a caller under `setarch -R` would start the
/// guest without address space randomisation (`ADDR_NO_RANDOMIZE`), one
/// with `READ_IMPLIES_EXEC` with every readable mapping executable. The
/// execution domain stays (`linux32`: the guest's `uname -m` is `i686`).
pub fn clear_unsafe_personality() {
    let unsafe_flags = libc::ADDR_NO_RANDOMIZE
        | libc::READ_IMPLIES_EXEC
        | libc::ADDR_COMPAT_LAYOUT
        | libc::MMAP_PAGE_ZERO;
    // SAFETY: personality(2) takes a number; 0xffffffff only reads it.
    let current = unsafe { libc::personality(0xffff_ffff) };
    if current >= 0 && current & unsafe_flags != 0 {
        // SAFETY: as above; the execution domain and other flags are kept.
        unsafe { libc::personality((current & !unsafe_flags) as libc::c_ulong) };
    }
}

/// Raises the OOM score adjustment of the process whose /proc directory
/// `proc_dir` is (it names that process alone, not a later one given its
/// pid) to `to`, where it stands below; Ok(false) where it stood at `to`
/// or above, its own choice, kept. Raising needs no capability. The
/// kernel has no compare-and-set here: a process that raises its own
/// between the read and the write ends at `to`.
pub fn raise_oom_score(proc_dir: &std::fs::File, to: i32) -> std::io::Result<bool> {
    let now = std::io::read_to_string(open_oom_score(proc_dir, false)?)?;
    let now: i32 = now.trim().parse().map_err(std::io::Error::other)?;
    if now >= to {
        return Ok(false);
    }
    set_oom_score(proc_dir, to)?;
    Ok(true)
}

/// Sets the OOM score adjustment of the process whose /proc directory
/// `proc_dir` is to `score` (lowering it needs CAP_SYS_RESOURCE, which
/// also makes `score` that process's least).
pub fn set_oom_score(proc_dir: &std::fs::File, score: i32) -> std::io::Result<()> {
    let mut text = [0u8; 8];
    std::io::Write::write_all(
        &mut open_oom_score(proc_dir, true)?,
        score_text(score, &mut text),
    )
}

/// `oom_score_adj` in `proc_dir`, for reading or writing.
fn open_oom_score(proc_dir: &std::fs::File, write: bool) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{openat, OFlag};
    let flags = match write {
        true => OFlag::O_WRONLY,
        false => OFlag::O_RDONLY,
    };
    let fd = openat(
        proc_dir,
        "oom_score_adj",
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(std::fs::File::from(fd))
}

/// `score` (an OOM score adjustment, -1000..=1000) in decimal, in `buf`.
/// Async-signal-safe (no allocation).
fn score_text(score: i32, buf: &mut [u8; 8]) -> &[u8] {
    let mut n = score.unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 1 {
            break;
        }
    }
    if score < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// This process's OOM score adjustment, read with no allocation
/// (async-signal-safe); None if unreadable.
fn read_own_oom_score() -> Option<i32> {
    let mut buf = [0u8; 16];
    // SAFETY: open of a NUL-terminated literal, a read into a buffer of
    // its length, and the close of the fd opened here.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let text = buf.get(..usize::try_from(n).ok()?)?.trim_ascii();
    let (sign, digits) = match text.split_first()? {
        (b'-', rest) => (-1, rest),
        _ => (1, text),
    };
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0, |v, d| v * 10 + i32::from(d - b'0'));
    Some(sign * value)
}

/// Writes `value` to this process's `/proc/self/oom_score_adj`.
/// Async-signal-safe (no allocation).
fn set_oom_score_adj(value: &[u8]) -> bool {
    // SAFETY: open of a NUL-terminated literal, a write of a buffer of its
    // length, and the close of the fd opened here.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let n = libc::write(fd, value.as_ptr().cast(), value.len());
        libc::close(fd);
        n == value.len() as isize
    }
}

/// Writes `0` (the writer) to each fd (cgroup.procs files open for
/// writing): moves the calling process into those groups. Async-signal-safe
/// (no allocation): fit for a pre_exec.
pub fn join_cgroups<'a>(procs: impl IntoIterator<Item = BorrowedFd<'a>>) -> std::io::Result<()> {
    for fd in procs {
        // SAFETY: a write of a one-byte static buffer to an fd open for at
        // least as long as the borrow.
        if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_oom_score_is_written_in_decimal() {
        let mut buf = [0u8; 8];
        for (score, text) in [
            (-999, "-999"),
            (-5, "-5"),
            (0, "0"),
            (999, "999"),
            (1000, "1000"),
        ] {
            assert_eq!(super::score_text(score, &mut buf), text.as_bytes());
        }
    }
}
