//! The signals a named guest's keeper is sent (`systemctl kill` of its
//! unit reaches the keeper alone: the guest is in cgroups of its own),
//! passed on to the guest's init as `unifs run` passes on its own: the
//! keeper goes on keeping init, and records its end. Held from the
//! keeper's first instruction ([`fork_holding`]); what could not reach
//! init is said in the console log.

// How long a signal waits for init to take it (see `sys::takes_signal`),
// and how often init is looked at meanwhile: as `unifs run` holds one.
use super::launch::{HELD_SIGNAL_LIMIT as HELD_LIMIT, HELD_SIGNAL_POLL as HELD_POLL};
use super::spec::signal_name;
use super::sys::{self, Forked};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Instant;

/// The signals passed on: those a user or a service manager sends to end,
/// reload or tell something (SIGRTMIN+3 halts systemd, SIGRTMIN+4
/// powers it off). Not those the keeper needs as they are: SIGCHLD, SIGPIPE
/// (ignored), SIGSTOP/SIGCONT (the tests' stop), SIGKILL, the faults
/// (SIGSEGV, SIGBUS, …) and glibc's own (32, 33, below SIGRTMIN).
fn passed_on() -> Vec<i32> {
    let mut sigs = vec![
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGPWR,
    ];
    sigs.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    sigs
}

/// The set of [`passed_on`].
fn passed_on_set() -> libc::sigset_t {
    set_of(&passed_on())
}

/// The set of `sigs`.
fn set_of(sigs: &[i32]) -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset of a valid number
    // to an initialised set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for &sig in sigs {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        set.assume_init()
    }
}

/// Blocks (`how`: SIG_BLOCK) or unblocks (SIG_UNBLOCK) the passed-on
/// signals in the calling thread; returns the mask before.
fn mask(how: libc::c_int) -> nix::Result<libc::sigset_t> {
    mask_of(how, &passed_on_set())
}

/// [`mask`] of `set`.
fn mask_of(how: libc::c_int, set: &libc::sigset_t) -> nix::Result<libc::sigset_t> {
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: a valid set; the old one written through a valid pointer.
    let rc = unsafe { libc::pthread_sigmask(how, set, old.as_mut_ptr()) };
    match rc {
        // SAFETY: pthread_sigmask succeeded: it wrote the old set.
        0 => Ok(unsafe { old.assume_init() }),
        e => Err(Errno::from_raw(e)),
    }
}

/// Forks the keeper (or the process that forks it) with the passed-on
/// signals blocked from its first instruction on: one sent while it sets
/// init up waits, pending, for the thread of [`pass_on`] (or ends with a
/// keeper whose start failed, which `start` rolls back) instead of ending
/// it there, its guest half made. The caller's mask is as it was after.
pub fn fork_holding() -> nix::Result<Forked> {
    let old = mask(libc::SIG_BLOCK)?;
    let forked = sys::fork();
    if !matches!(forked, Ok(Forked::Child)) {
        // SAFETY: a set pthread_sigmask returned; no old set asked for.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    forked
}

/// Blocks the passed-on signals in the keeper again (after a failed exec,
/// which unblocked them): they wait for the thread [`pass_on`] started.
pub fn block_again() {
    let _ = mask(libc::SIG_BLOCK);
}

/// From now on, the signals of [`passed_on`] sent to the keeper (which must
/// have no other thread yet) are passed on to `init`, its child, each once
/// init takes it (it may not have set its handlers yet: the kernel drops
/// a signal to a namespace's init that neither catches nor blocks it) or
/// has waited [`HELD_LIMIT`]. They are blocked, and taken by a thread of
/// their own: the keeper's own work (its waits, its stop of the guest) is
/// not interrupted, nor ended. Once init has ended they go nowhere (a
/// pidfd: never to a process that got its pid since). What did not reach
/// init, or reached it to no effect, is said in `log`, guest `name`'s
/// console log. On an error nothing changed. Returns the pidfd's number,
/// which the keeper must keep open.
pub fn pass_on(init: Pid, name: &str, log: PathBuf) -> nix::Result<RawFd> {
    let pidfd = sys::pidfd_open(init)?;
    let fd = pidfd.as_raw_fd();
    mask(libc::SIG_BLOCK)?;
    let said = Said {
        name: name.to_string(),
        init,
        log,
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || take_and_pass(init, pidfd, said));
    if spawned.is_err() {
        let _ = mask(libc::SIG_UNBLOCK);
        return Err(Errno::EAGAIN);
    }
    Ok(fd)
}

/// What became of a signal the keeper held for init.
enum Fate {
    /// Init takes it (a handler, or blocked): sent.
    Taken,
    /// Init neither caught nor blocked it after [`HELD_LIMIT`]: sent
    /// all the same, the kernel drops it.
    NotTaken,
    /// Init has ended (the keeper stops the guest): nothing to send it to.
    Ended,
}

/// Where [`take_and_pass`] says what did not reach init.
struct Said {
    name: String,
    init: Pid,
    log: PathBuf,
}

impl Said {
    /// One line in the console log, as the keeper's other `[unifs: …]`.
    fn say(&self, sig: i32, fate: Fate) {
        use std::io::Write;
        let (name, init, sig) = (&self.name, self.init, signal_name(sig));
        let what = match fate {
            Fate::Taken => return,
            Fate::NotTaken => format!(
                "{sig} to its keeper was passed on to its init (pid {init}), which {} s \
                 after still neither caught nor blocked it: the kernel discards such a \
                 signal to a PID namespace's init, so it had no effect",
                HELD_LIMIT.as_secs()
            ),
            Fate::Ended => format!(
                "{sig} to its keeper ignored: its init (pid {init}) has ended, and the keeper \
                 stopped the guest"
            ),
        };
        let line = format!("[unifs: guest {name}: {what}]\n");
        let log = std::fs::OpenOptions::new().append(true).open(&self.log);
        if let Ok(mut log) = log {
            let _ = log.write_all(line.as_bytes());
        }
    }
}

/// Whether the process of `pidfd` has ended (its pidfd readable).
fn has_ended(pidfd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// The thread of [`pass_on`]: until init has ended. A signal then is left
/// pending, as are those after: the start after a reboot the keeper
/// becomes takes them; else [`say_ignored`] says them.
fn take_and_pass(init: Pid, pidfd: OwnedFd, said: Said) {
    let set = passed_on_set();
    loop {
        let mut sig = 0;
        // SAFETY: a valid set (blocked in every thread of the keeper), and
        // one int written through a valid pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        // The tests' way to make this thread fail (keeper_panic says what
        // follows), on the first signal it takes.
        crate::sys::test_panic!("keeper-signals");
        let since = Instant::now();
        let fate = loop {
            if has_ended(&pidfd) {
                break Fate::Ended;
            }
            if sys::takes_signal(init, sig) {
                break Fate::Taken;
            }
            if since.elapsed() >= HELD_LIMIT {
                break Fate::NotTaken;
            }
            std::thread::sleep(HELD_POLL);
        };
        let fate = match fate {
            Fate::Ended => fate,
            // ESRCH: init ended meanwhile; the keeper records it.
            _ => match sys::pidfd_kill(pidfd.as_fd(), sig) {
                Err(Errno::ESRCH) => Fate::Ended,
                _ => fate,
            },
        };
        if let Fate::Ended = fate {
            hand_on(&[sig]);
            return;
        }
        said.say(sig, fate);
    }
}

/// In a keeper whose init has ended and that stopped its guest (it is not
/// started again), as it ends: the signals left pending for want of an
/// init ([`take_and_pass`]) are said in `log`, the console log of guest
/// `name` and its init `init`.
pub fn say_ignored(name: &str, init: Pid, log: PathBuf) {
    let set = passed_on_set();
    let said = Said {
        name: name.to_string(),
        init,
        log,
    };
    while let Some(sig) = take_one(&set) {
        said.say(sig, Fate::Ended);
    }
}

/// The signals that cancel a `guest start` at work: what ends a command
/// (`systemctl stop`, Ctrl-C, Ctrl-\, and a hang-up of the start's
/// controlling terminal). The others of [`passed_on`] go on to the
/// guest's init once it runs: SIGHUP too for a start without a terminal
/// (a unit's; a keeper's after a reboot), where it is no hang-up but a
/// `systemctl kill -s HUP`, which asks a running init to reload.
fn cancelling_set() -> &'static [i32] {
    static SET: std::sync::OnceLock<Vec<i32>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let mut sigs = vec![libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];
        if on_terminal() {
            sigs.push(libc::SIGHUP);
        }
        sigs
    })
}

/// Whether this process had a controlling terminal when first asked
/// ([`hold_in_start`] asks first): a hang-up takes the terminal away
/// (`tty_nr` 0) before its SIGHUP is looked at.
fn on_terminal() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(has_terminal)
}

/// Whether this process has a controlling terminal (`tty_nr` in
/// /proc/self/stat, the field after the session's).
fn has_terminal() -> bool {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    after
        .split_whitespace()
        .nth(4)
        .is_some_and(|tty| tty != "0")
}

/// Set by a keeper for its exec of the start after a reboot: the
/// passed-on signals are held across it ([`held_across_exec`]).
pub const HELD_ENV: &str = "UNIFS_SIGNALS_HELD";

/// Holds the passed-on signals in a `guest start` from now on: one that
/// comes while it mounts the root and sets init up waits, pending, for
/// [`cancelling`] and [`take_held`] instead of ending it there, its guest
/// half made. Call while the process has one thread (a thread made later
/// inherits the mask).
pub fn hold_in_start() {
    let mut held = passed_on();
    // On a terminal SIGWINCH is its resize, nothing to the guest, whose
    // console is not that terminal (systemd as init would start
    // kbrequest.target): not held, it is ignored as by default.
    if on_terminal() {
        held.retain(|&sig| sig != libc::SIGWINCH);
    }
    let _ = mask_of(libc::SIG_BLOCK, &set_of(&held));
}

/// In `main`, while it has one thread, for `sys::unblock_signals`: if the
/// process is a keeper's start after a reboot, which exec'd with the
/// passed-on signals held ([`HELD_ENV`]), it unblocks all others but holds
/// those, in one step (one pending since stays so), and returns true.
pub fn held_across_exec() -> bool {
    if std::env::var_os(HELD_ENV).is_none() {
        return false;
    }
    std::env::remove_var(HELD_ENV);
    // Only for that start (its hidden `--after-reboot`): set by hand on
    // another command, it would leave them blocked in the guest's processes.
    if !std::env::args_os().any(|a| a == "--after-reboot") {
        return false;
    }
    let set = passed_on_set();
    // SAFETY: a valid set; no old one asked for.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) == 0 }
}

/// Whether `sig`'s action is SIG_IGN: one the caller ignored on purpose
/// (`nohup`'s SIGHUP) is pending all the same while blocked (Linux
/// discards only an ignored signal that is not blocked), and means nothing.
fn ignored(sig: i32) -> bool {
    let mut act = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: no new action; the old one written through a valid pointer.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), act.as_mut_ptr()) };
    // SAFETY: sigaction succeeded: it wrote the action.
    rc == 0 && unsafe { act.assume_init() }.sa_sigaction == libc::SIG_IGN
}

/// The passed-on signals pending for this process (held by
/// [`hold_in_start`]), but those it ignores.
fn pending() -> Vec<i32> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending writes the set through a valid pointer.
    if unsafe { libc::sigpending(set.as_mut_ptr()) } != 0 {
        return Vec::new();
    }
    // SAFETY: sigpending succeeded: the set is initialised.
    let set = unsafe { set.assume_init() };
    // SAFETY: sigismember of an initialised set and a valid number.
    let member = |sig: &i32| unsafe { libc::sigismember(&set, *sig) } == 1;
    passed_on()
        .into_iter()
        .filter(|sig| member(sig) && !ignored(*sig))
        .collect()
}

/// A cancelling signal ([`cancelling_set`]) held for the start, if one came;
/// left pending (or taken by [`read_report`]).
pub fn cancelling() -> Option<i32> {
    let taken = TAKEN_CANCEL.load(std::sync::atomic::Ordering::Relaxed);
    if taken != 0 {
        return Some(taken);
    }
    pending()
        .into_iter()
        .find(|sig| cancelling_set().contains(sig))
}

/// Takes the passed-on signals held for the start (no longer pending), but
/// those it ignores and the cancelling ones.
pub fn take_held() -> Vec<i32> {
    let others: Vec<i32> = passed_on()
        .into_iter()
        .filter(|sig| !cancelling_set().contains(sig))
        .collect();
    let set = set_of(&others);
    std::iter::from_fn(|| take_one(&set)).collect()
}

/// In a keeper, before [`pass_on`]: `held`, what its start held before it
/// forked the keeper (pending signals are not inherited), pending again,
/// for init. Sent to the whole process: the thread of [`pass_on`] takes
/// only those.
pub fn hand_on(held: &[i32]) {
    for &sig in held {
        // SAFETY: kill(2) takes no pointers; blocked here, it stays pending.
        unsafe { libc::kill(libc::getpid(), sig) };
    }
}

/// Takes one pending signal of `set`, if any, not one this process
/// ignores (those it takes and drops).
fn take_one(set: &libc::sigset_t) -> Option<i32> {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: a valid set and timeout; no siginfo asked for.
        match unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &zero) } {
            sig @ 1.. if ignored(sig) => continue,
            sig @ 1.. => return Some(sig),
            _ => return None,
        }
    }
}

/// Ends the process by `sig` (its default action), as it would have ended
/// without [`hold_in_start`]: whoever ran it (a shell, systemd) sees so.
pub fn end_by(sig: i32) -> ! {
    let one = set_of(&[sig]);
    // SAFETY: SIG_DFL installs no handler; raise and the mask change take
    // no pointers but a valid set.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
    }
    // A signal whose default is to go on (none of [`cancelling_set`]).
    std::process::exit(128 + sig)
}

/// The cancelling signal [`read_report`] took from the pending ones (the
/// first of two), 0 if none: [`cancelling`] counts it.
static TAKEN_CANCEL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Takes one pending cancelling signal (not one the caller ignores).
fn take_cancel() -> Option<i32> {
    take_one(&set_of(cancelling_set()))
}

/// Reads guest `name`'s start report from its keeper to the end, as init
/// is set up (which can take long: a slow root). A cancelling signal
/// meanwhile is held for [`cancelling`] (the start stops the guest once
/// init runs), and said so; a second one ends the start at once, as it
/// did before signals were held, leaving the guest as its keeper makes it
/// (`guest stop` stops it): a Ctrl-C must not wait on a set-up that hangs.
pub fn read_report(report: OwnedFd, name: &str) -> Vec<u8> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::Read;
    let mut file = std::fs::File::from(report);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(Errno::EINTR) => {
                if let Some(sig) = take_cancel() {
                    said_cancel(name, sig);
                }
                continue;
            }
            _ => {}
        }
        match file.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return out,
        }
    }
}

/// A cancelling signal `sig` taken while guest `name`'s init is set up:
/// the first is held, the second ends the start.
fn said_cancel(name: &str, sig: i32) {
    use std::sync::atomic::Ordering;
    let what = signal_name(sig);
    if TAKEN_CANCEL.load(Ordering::Relaxed) == 0 {
        TAKEN_CANCEL.store(sig, Ordering::Relaxed);
        eprintln!(
            "unifs: guest {name}: {what} while its init is set up: the start stops the guest \
             once init runs; {what} again ends the start now, the guest left running \
             (`unifs guest stop {name}` stops it)"
        );
        return;
    }
    eprintln!(
        "unifs: guest {name}: {what} again: the start ends now, the guest left as its keeper \
         makes it; `unifs guest stop {name}` stops it"
    );
    end_by(sig)
}

/// For a start that stops guest `name` again on cancelling signal `first`
/// (its init runs): says so, and gives what tells whether another came
/// since, which kills the guest at once rather than after its stop
/// signal's timeout (as a second Ctrl-C to systemd-nspawn ends its
/// container harder): a Ctrl-C is never ignored.
pub fn again(name: &str, first: i32) -> impl FnMut() -> bool {
    use std::sync::atomic::Ordering;
    if TAKEN_CANCEL.load(Ordering::Relaxed) == 0 {
        let _ = take_cancel();
    }
    let what = signal_name(first);
    eprintln!(
        "unifs: guest {name}: {what}: stopping the guest again (its stop signal, then \
         SIGKILL after {} s); {what} again kills it now",
        HELD_LIMIT.as_secs()
    );
    let name = name.to_string();
    move || match take_cancel() {
        Some(sig) => {
            let what = signal_name(sig);
            eprintln!("unifs: guest {name}: {what} again: killing the guest now");
            true
        }
        None => false,
    }
}
