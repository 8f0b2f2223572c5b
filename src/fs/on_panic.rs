//! What a panic does in a serving mount daemon: it ends the daemon.
//!
//! fuser catches no panic. A FUSE thread that panics ends; its request is
//! answered EIO only if its reply was made already (dropped while
//! unwinding), and never if the panic came first (fuser's own parsing of a
//! request): the guest process that made it then sleeps in the kernel,
//! unkillable, holding the directory's lock, so that every process looking
//! in that directory joins it, and `unifs umount` finds the mount busy. The
//! other threads serve on with the node table as the panic left it (our
//! locks ignore poisoning); when the first thread was the one, fuser
//! unmounts the mount point, and the guest's paths then reach the empty
//! directory below it. So the first panic ends the process at once: the
//! kernel then fails the requests waiting (ECONNABORTED) and every later
//! one (ENOTCONN), and the mount is dead as after a `kill -9` of the
//! daemon, which invariant 2 already covers (a break is a temp file and a
//! rename; one not yet synced is made durable by the next daemon).

use std::sync::atomic::{AtomicBool, Ordering};

/// The daemon's exit status after a panic: Rust's own for one.
pub const PANIC_EXIT: i32 = 101;

/// Set once the mount answers ([`mark_ready`]). Before, no guest waits on
/// it, and a thread that fails to start (a low RLIMIT_AS) is told to the
/// caller by the daemon's own report, which an exit here would cut short.
static READY: AtomicBool = AtomicBool::new(false);

/// From now on a panic ends the daemon ([`end_daemon_on_panic`]).
pub fn mark_ready() {
    READY.store(true, Ordering::SeqCst);
}

/// Whether this process is a mount daemon that serves ([`mark_ready`]):
/// a panic of any of its threads, its main one too, is then its own to
/// say and end (101), not that of the child of unifs it was forked as
/// (`unifs run`'s overlay daemon, see `guest::sys::in_child`).
pub fn serving() -> bool {
    READY.load(Ordering::SeqCst)
}

/// Once [`mark_ready`], a panic in any thread of this process says so in the log
/// (stderr: `--log`, or `unifs run`'s stderr), after the panic's own
/// message, and ends the process without unwinding. `mountpoint` names the
/// mount in that line.
pub fn end_daemon_on_panic(mountpoint: &std::path::Path) {
    let mountpoint = mountpoint.to_path_buf();
    let before = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The message, where, and a backtrace if asked for (or, in the
        // overlay daemon of `unifs run`, its report of a failed child).
        before(info);
        if !serving() {
            return;
        }
        let thread = std::thread::current();
        tracing::error!(
            "the mount daemon of {} (pid {}) failed on an internal error in its thread {} (a bug \
             in unifs: please report it, with the lines above); it ends now rather than serve on \
             in a state in doubt: the guest's processes waiting on it get an error, and the \
             mount answers ENOTCONN (\"Transport endpoint is not connected\") until unmounted \
             (`unifs umount`; a guest's: `unifs guest stop` and `start`). Its files are as a killed \
             daemon leaves them: each whole",
            crate::sys::shown(&mountpoint),
            std::process::id(),
            thread.name().unwrap_or("without a name"),
        );
        // SAFETY: _exit ends the process at once, running nothing of
        // ours: no drop (fuser's would unmount) and no atexit handler.
        unsafe { libc::_exit(PANIC_EXIT) }
    }));
}
