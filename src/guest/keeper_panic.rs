//! What a named guest's keeper, or `unifs run`, does when one of its
//! threads panics (a bug): it stops the guest, and ends with [`FAILED_EXIT`].
//!
//! A thread that panics ends alone. The keeper's thread for signals
//! ([`super::keeper_signals`]) ended so left every signal sent to the
//! keeper pending for good: a `systemctl stop` of the unit reached nobody
//! and waited its whole timeout for the SIGKILL, while `guest status` said
//! all was well. Its other thread (the OOM watch) would go on silently
//! wrong. Serving on with a part gone is the state in doubt the mount
//! daemon refuses too ([`crate::fs::on_panic`]); so the keeper does what a
//! `guest stop` does first (init's stop signal, SIGKILL after
//! [`STOP_WAIT`]), then its usual end: init's exit recorded, the guest torn
//! down, not started again. A service manager sees the keeper, its main
//! process, fail (status 101; 125 for its main thread, which ends it at
//! once: [`stop_guest_on_thread_panic`]); the console log and `guest
//! status` say why.

use super::sys;
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The keeper's exit status once one of its threads failed: Rust's own for
/// a panic.
pub const FAILED_EXIT: i32 = 101;

/// How long init has to end on its stop signal before SIGKILL: as long as a
/// signal passed on waits for it (`guest stop`'s default `--timeout`).
const STOP_WAIT: Duration = super::launch::HELD_SIGNAL_LIMIT;

/// What failed, once a thread did ("its thread signals failed: …"), and
/// whether init had ended then.
static FAILED: OnceLock<(String, bool)> = OnceLock::new();

/// Set by the main thread once it reaped init ([`init_ended`]).
static INIT_ENDED: AtomicBool = AtomicBool::new(false);

/// What the keeper's stop of its guest, once init ended, came to
/// ([`stop_done`]): said by its main thread failing after it.
static STOP_DONE: OnceLock<&'static str> = OnceLock::new();

/// Why this keeper failed, if one of its threads did: it stopped its guest
/// then, unless init had ended already ([`failed_after_end`]).
pub fn failed() -> Option<&'static str> {
    FAILED.get().map(|(what, _)| what.as_str())
}

/// Whether the failure of [`failed`] came once init had ended, so that
/// there was nothing left to stop.
pub fn failed_after_end() -> bool {
    FAILED.get().is_some_and(|&(_, ended)| ended)
}

/// Said by the main thread once it has reaped init: a thread failing from
/// now on has nothing to stop, and says so rather than "stops the guest".
pub fn init_ended() {
    INIT_ENDED.store(true, Ordering::SeqCst);
}

/// Said by the main thread once its stop of the guest whose init ended is
/// over, how it went (`the guest already torn down`, …): its own failure
/// from then on says that, not that the guest was left as it was.
pub fn stop_done(how: &'static str) {
    let _ = STOP_DONE.set(how);
}

/// From now on a panic in any thread of this keeper stops guest `name` (its
/// init `init`, its stop signal `stop_signal`) and says so in `log`, its
/// console log. Its main one's too: that one then ends the keeper (125, as
/// [`sys::in_child`] ends a child that failed), and init would else run on
/// unkept, its end neither recorded nor torn down. Returns the number of
/// the pidfd it keeps for that, which the keeper must keep open.
pub fn stop_guest_on_thread_panic(
    init: Pid,
    name: &str,
    log: PathBuf,
    stop_signal: i32,
) -> nix::Result<RawFd> {
    let name = name.to_string();
    stop_on_thread_panic(init, stop_signal, true, move |thread, why, ended| {
        let failed = format!(
            "[unifs: guest {name}: its keeper failed on an internal error in its thread \
             {thread} ({why}; a bug in unifs: please report it)"
        );
        if ended {
            // Its main thread's failure ends the keeper at once (125).
            let then = match (thread, STOP_DONE.get()) {
                ("main", Some(how)) => format!("the keeper ends now, {how}"),
                ("main", None) => {
                    "the keeper ends now, the guest not torn down (`unifs guest stop` does)".into()
                }
                _ => "and the keeper ends as it would have".to_string(),
            };
            return say(
                &log,
                &format!(
                    "{failed}, once its init (pid {init}) had ended: nothing was left to stop, \
                     {then}]"
                ),
            );
        }
        let lost = match thread {
            "main" => "the keeper ends, and init would run on unkept",
            _ => "signals sent to the keeper would no longer reach init",
        };
        say(
            &log,
            &format!(
                "{failed}: {lost}, so it stops the guest now ({}, SIGKILL after {} s)]",
                super::spec::signal_name(stop_signal),
                STOP_WAIT.as_secs()
            ),
        )
    })
}

/// `unifs run`'s [`stop_guest_on_thread_panic`]: its thread that passes
/// signals on to the guest (and ends it on a second one) failing, the run
/// would be deaf to Ctrl-C and `kill` until its command ended by itself.
/// Said on stderr; the run then exits [`FAILED_EXIT`].
pub fn stop_run_on_thread_panic(init: Pid, stop_signal: i32) -> nix::Result<RawFd> {
    // A panic of its main thread ends the run, and the guest with it (its
    // parent-death signal).
    stop_on_thread_panic(init, stop_signal, false, move |thread, why, ended| {
        let failed = format!(
            "`unifs run` failed on an internal error in its thread {thread} ({why}; a bug in \
             unifs: please report it)"
        );
        match ended {
            true => tracing::error!(
                "{failed}, once its guest (pid {init}) had ended: nothing was left to stop, and \
                 the run ends as it would have"
            ),
            false => tracing::error!(
                "{failed}: signals sent to the run would no longer reach the guest, so it stops \
                 the guest now ({}, SIGKILL after {} s)",
                super::spec::signal_name(stop_signal),
                STOP_WAIT.as_secs()
            ),
        }
    })
}

/// From now on the first panic of a thread of this process but its main
/// one (with `main_too`, of any) is said by `say` (thread, message, and
/// whether init had ended already: [`init_ended`] said, or its pidfd
/// readable, as it is from init's exit on, reaped or not), and ends `init`
/// unless it had (its stop signal `stop_signal`, SIGKILL after
/// [`STOP_WAIT`]), through a pidfd whose number is returned.
fn stop_on_thread_panic(
    init: Pid,
    stop_signal: i32,
    main_too: bool,
    say: impl Fn(&str, &str, bool) + Send + Sync + 'static,
) -> nix::Result<RawFd> {
    let pidfd = sys::pidfd_open(init)?;
    let fd = pidfd.as_raw_fd();
    sys::on_thread_panic(main_too, move |thread, why| {
        // The first failure stops the guest; another one meanwhile adds nothing.
        // Init's end is its pidfd's too: a failure between the reap and
        // `init_ended` (or in `unifs run`, which says none) stopped nothing.
        let ended = INIT_ENDED.load(Ordering::SeqCst) || ends_within(&pidfd, Duration::ZERO);
        if FAILED
            .set((format!("its thread {thread} failed: {why}"), ended))
            .is_err()
        {
            return;
        }
        say(thread, why, ended);
        if ended {
            return;
        }
        let _ = sys::pidfd_kill(pidfd.as_fd(), stop_signal);
        if !ends_within(&pidfd, STOP_WAIT) {
            let _ = sys::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
        }
    });
    Ok(fd)
}

/// Whether the process of `pidfd` ends within `limit` (its pidfd readable).
pub(super) fn ends_within(pidfd: &OwnedFd, limit: Duration) -> bool {
    use nix::errno::Errno;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let end = std::time::Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(Errno::EINTR) if !left.is_zero() => continue,
            _ => return false,
        }
    }
}

/// One line appended to the console log.
fn say(log: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(log, "{line}");
    }
}
