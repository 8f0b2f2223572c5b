//! Review s41 (keeperrev) of the signals of a `guest start` and its keeper
//! (commit aa3e068): a hang-up of the start's terminal went on to init
//! when it came before the start had looked at its terminal; a resize of
//! its terminal went on to init as a SIGWINCH (systemd's kbrequest).

use crate::guest::harness::{can_run, ok, spawn_on_a_terminal, stderr, wait_bounded, KillOnDrop};
use crate::guest::review_s11_life::{Continue, Guest};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s38_halt::init_and_keeper;
use crate::review_s38_keeperkill::signal;
use crate::review_s40_keeper4::nothing_made;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// `guest start` of `g` on a terminal of its own, stopped as it has
/// mounted the root (UNIFS_TEST_START_STOP): the pty's master, the start
/// and its pid.
pub(crate) fn start_on_a_terminal(g: &Guest) -> (OwnedFd, KillOnDrop, u32) {
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_START_STOP", "1");
    let (terminal, start) = spawn_on_a_terminal(start);
    let pid = start.0.as_ref().unwrap().id();
    assert!(within_60s(|| stopped(pid)), "start never stopped");
    (terminal, start, pid)
}

/// The terminal of a `guest start` hangs up (closed) while it mounts the
/// root: the hang-up cancels the start, nothing left. (The hang-up took
/// the terminal away first; the start, looking for one only later, took
/// its SIGHUP for a `systemctl kill -s HUP`, and started the guest.)
#[test]
fn s41_a_hang_up_while_a_start_mounts_cancels_it() {
    let test = "s41_a_hang_up_while_a_start_mounts_cancels_it";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s41hangup", "[\"/bin/sleep\", \"100000\"]");
    let (terminal, start, pid) = start_on_a_terminal(&g);
    // Its last open end closed: the kernel hangs the terminal up, sends
    // its session leader (the start) SIGHUP and SIGCONT.
    drop(terminal);
    drop(Continue(pid as i32));
    let o = wait_bounded(start, Duration::from_secs(60));
    assert_eq!(o.status.signal(), Some(libc::SIGHUP), "{:?}", o.status);
    nothing_made(&g, "a hang-up");
}

/// An init that counts its SIGWINCHs in /tmp/winches and ends on SIGTERM.
const COUNTS_WINCHES: &str = "[\"/bin/sh\", \"-c\", \"trap 'echo >> /tmp/winches' WINCH; \
                              trap 'exit 0' TERM; while :; do sleep 0.05; done\"]";

/// The terminal of a `guest start` is resized while it mounts the root:
/// its SIGWINCH is the terminal's, not for the guest's init (whose console
/// is no terminal of the caller's), which gets only the one sent to its
/// keeper. (It went with the keeper to init: a systemd init starts
/// kbrequest.target on it, a sysvinit runs inittab's kbrequest.)
#[test]
fn s41_a_resize_of_a_starts_terminal_does_not_reach_init() {
    let test = "s41_a_resize_of_a_starts_terminal_does_not_reach_init";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s41winch", COUNTS_WINCHES);
    let winches = g.t.root().join("tmp/winches");
    let (terminal, start, pid) = start_on_a_terminal(&g);
    let size = libc::winsize {
        ws_row: 41,
        ws_col: 103,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through a valid pointer; the
    // kernel sends the terminal's foreground group (the start) SIGWINCH.
    let rc = unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    drop(Continue(pid as i32));
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    // A SIGWINCH held for init goes as soon as its trap is set.
    std::thread::sleep(Duration::from_secs(2));
    let (_, keeper) = init_and_keeper(&g);
    signal(keeper, libc::SIGWINCH);
    assert!(within_60s(|| winches.exists()), "init never got SIGWINCH");
    // Long enough for another to come, if it would.
    std::thread::sleep(Duration::from_secs(1));
    let got = std::fs::read_to_string(&winches).unwrap_or_default();
    assert_eq!(got.lines().count(), 1, "init's SIGWINCHs: {got:?}");
    ok(&g.unifs(&["stop", &g.name]));
}
