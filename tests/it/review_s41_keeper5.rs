//! Review s41 (keeper5): signals during a named guest's start and in its
//! keeper. An init that blocked a signal for a moment lost it; a
//! cancelled start was deaf while it stopped the guest; a `systemctl kill
//! -s HUP` cancelled a start; a `systemctl kill` reached init twice; a
//! start after a reboot left records that did not say what happened.

use crate::guest::harness::{alive, can_run, ok, stderr, wait_bounded, KillOnDrop};
use crate::guest::review_s11_life::{Continue, Guest};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s38_halt::{init_and_keeper, nothing_left};
use crate::review_s38_keeperkill::signal;
use crate::review_s40_keeper4::{keeper_held, nothing_made, rebooting, status};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

/// An init (static C) that counts the SIGUSR1s it catches in
/// /tmp/usr1-count and ends on SIGTERM. With `blink`, until /tmp/go
/// exists it has no handler for SIGUSR1 and blocks it for 10 ms of every
/// 100 ms (as dash blocks every signal around its waits): one sent to it
/// while blocked is dropped as it is unblocked.
const COUNTER: &str = r#"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static volatile sig_atomic_t got;
static void on_usr1(int s) { (void)s; got++; }
static void on_term(int s) { (void)s; _exit(0); }
static void nap(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, 0);
}
static void handle(int sig, void (*f)(int)) {
    struct sigaction a;
    memset(&a, 0, sizeof a);
    a.sa_handler = f;
    sigaction(sig, &a, 0);
}
int main(int argc, char **argv) {
    int blink = argc > 1 && strcmp(argv[1], "blink") == 0, armed = !blink, said = 0;
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR1);
    handle(SIGTERM, on_term);
    if (armed) handle(SIGUSR1, on_usr1);
    for (;;) {
        if (blink) {
            sigprocmask(SIG_BLOCK, &one, 0);
            nap(10);
            sigprocmask(SIG_UNBLOCK, &one, 0);
        }
        if (!armed && access("/tmp/go", F_OK) == 0) {
            handle(SIGUSR1, on_usr1);
            armed = 1;
        }
        if (got != said) {
            said = got;
            FILE *f = fopen("/tmp/usr1-count", "w");
            if (f) { fprintf(f, "%d\n", said); fclose(f); }
        }
        nap(blink ? 90 : 10);
    }
}
"#;

/// A guest whose init is [`COUNTER`] (`args` after it), or None (said)
/// without `cc -static`.
fn counting(test: &str, args: &str) -> Option<Guest> {
    let g = Guest::new(test, &format!("[\"/bin/counter\"{args}]"));
    let src = g.t.dir.path().join("counter.c");
    std::fs::write(&src, COUNTER).unwrap();
    let cc = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(g.t.root().join("bin/counter"))
        .arg(&src)
        .status();
    if !cc.is_ok_and(|s| s.success()) {
        crate::common::skip(test, "needs cc -static (gcc, libc6-dev)");
        return None;
    }
    Some(g)
}

/// How many SIGUSR1s the guest's init caught.
fn caught(g: &Guest) -> u32 {
    let count = std::fs::read_to_string(g.t.root().join("tmp/usr1-count"));
    count.ok().and_then(|c| c.trim().parse().ok()).unwrap_or(0)
}

/// A SIGUSR1 to the keeper of an init that blocks it for a moment now and
/// then, before it sets its handler: the keeper waits until init catches
/// it. (Found blocked once, it was counted as taken and sent, and the
/// kernel dropped it as init unblocked it.)
#[test]
fn s41_a_signal_init_blocks_for_a_moment_waits_for_its_handler() {
    let test = "s41_a_signal_init_blocks_for_a_moment_waits_for_its_handler";
    if !can_run(test) {
        return;
    }
    let Some(g) = counting("s41blink", ", \"blink\"") else {
        return;
    };
    ok(&g.unifs(&["start", &g.name]));
    let (_, keeper) = init_and_keeper(&g);
    signal(keeper, libc::SIGUSR1);
    // Many of init's blocked moments go by: each was the keeper's "taken".
    std::thread::sleep(Duration::from_millis(1500));
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    assert!(
        within_60s(|| caught(&g) == 1),
        "init never caught the SIGUSR1 (it caught {})",
        caught(&g)
    );
    let log = std::fs::read_to_string(g.run(&g.name).join("console.log")).unwrap_or_default();
    assert!(!log.contains("SIGUSR1"), "{log}");
    ok(&g.unifs(&["stop", &g.name]));
}

/// A `systemctl kill -s USR1` while the keeper sets init up reaches both
/// `guest start` and the keeper (the unit's whole group): init gets it
/// once, from the keeper, and the start says it left its own to the
/// keeper. (The start passed its own on too: init got it twice.)
#[test]
fn s41_a_systemctl_kill_during_a_start_reaches_init_once() {
    let test = "s41_a_systemctl_kill_during_a_start_reaches_init_once";
    if !can_run(test) {
        return;
    }
    let Some(g) = counting("s41once", "") else {
        return;
    };
    let (start, _) = g.start_with("UNIFS_TEST_KEEPER_STOP", "1");
    let pid = start.0.as_ref().unwrap().id();
    let (_, keeper) = keeper_held(&g);
    signal(pid, libc::SIGUSR1);
    signal(keeper, libc::SIGUSR1);
    drop(Continue(keeper as i32));
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert!(within_60s(|| caught(&g) >= 1), "init never got SIGUSR1");
    // Long enough for a second one to come, if it would.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(caught(&g), 1, "init got SIGUSR1 more than once");
    assert!(
        stderr(&o).contains("SIGUSR1 to `guest start` once its keeper ran is not passed on"),
        "{}",
        stderr(&o)
    );
    ok(&g.unifs(&["stop", &g.name]));
}

/// An init that counts its SIGHUPs in /tmp/hups and ends on SIGTERM.
const COUNTS_HUPS: &str = "[\"/bin/sh\", \"-c\", \"trap 'echo >> /tmp/hups' HUP; \
                           trap 'exit 0' TERM; while :; do sleep 0.05; done\"]";

/// SIGHUP to a `guest start` without a terminal (a unit's: `systemctl
/// kill -s HUP`) is no hang-up: it goes on to init, once, as the other
/// signals do (a reload for most inits), and the start succeeds. On a
/// terminal it is its hang-up and cancels the start, nothing left. (Both
/// cancelled the start.)
#[test]
fn s41_sighup_cancels_a_start_only_on_a_terminal() {
    let test = "s41_sighup_cancels_a_start_only_on_a_terminal";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s41hup", COUNTS_HUPS);
    let hups = g.t.root().join("tmp/hups");
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_START_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid(2) only, in the forked child: no controlling terminal.
    unsafe {
        start.pre_exec(|| match libc::setsid() {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    let start = KillOnDrop(Some(start.spawn().unwrap()));
    let pid = start.0.as_ref().unwrap().id();
    assert!(within_60s(|| stopped(pid)), "start never stopped");
    signal(pid, libc::SIGHUP);
    drop(Continue(pid as i32));
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert!(alive(g.init_pid()), "init gone");
    assert!(within_60s(|| hups.exists()), "init never got SIGHUP");
    std::thread::sleep(Duration::from_secs(2));
    let got = std::fs::read_to_string(&hups).unwrap_or_default();
    assert_eq!(got.lines().count(), 1, "init's SIGHUPs: {got:?}");
    ok(&g.unifs(&["stop", &g.name]));

    let (_terminal, start, pid) = crate::review_s41_keeperrev::start_on_a_terminal(&g);
    signal(pid, libc::SIGHUP);
    drop(Continue(pid as i32));
    let o = wait_bounded(start, Duration::from_secs(60));
    assert_eq!(o.status.signal(), Some(libc::SIGHUP), "{:?}", o.status);
    nothing_made_but_the_log(&g);
}

/// [`nothing_made`], but for the console log the first start left.
fn nothing_made_but_the_log(g: &Guest) {
    let log = g.run(&g.name).join("console.log");
    let kept = std::fs::read(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    nothing_made(g, "SIGHUP on a terminal");
    std::fs::write(&log, kept).unwrap();
}

/// A `guest start` cancelled as its init starts stops the guest with its
/// stop signal and up to 10 s; a second SIGTERM meanwhile kills it at
/// once, said so, nothing left. (The second was held, unsaid, for the
/// whole wait.)
#[test]
fn s41_a_second_sigterm_kills_a_guest_its_cancelled_start_stops() {
    let test = "s41_a_second_sigterm_kills_a_guest_its_cancelled_start_stops";
    if !can_run(test) {
        return;
    }
    // An init that takes SIGTERM but does not end on it.
    let init = "[\"/bin/sh\", \"-c\", \"trap 'echo term' TERM; while :; do sleep 0.05; done\"]";
    let g = Guest::new("s41again", init);
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_KEEPER_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.reopen().unwrap());
    let start = KillOnDrop(Some(start.spawn().unwrap()));
    let pid = start.0.as_ref().unwrap().id();
    let (init, keeper) = keeper_held(&g);
    let said = || std::fs::read_to_string(err.path()).unwrap_or_default();
    signal(pid, libc::SIGTERM);
    drop(Continue(keeper as i32));
    let stopping = "SIGTERM: stopping the guest again";
    assert!(within_60s(|| said().contains(stopping)), "{}", said());
    signal(pid, libc::SIGTERM);
    let o = wait_bounded(start, Duration::from_secs(60));
    assert_eq!(o.status.signal(), Some(libc::SIGTERM), "{:?}", o.status);
    assert!(
        said().contains("SIGTERM again: killing the guest now"),
        "{}",
        said()
    );
    assert!(!alive(init), "init lives");
    nothing_left(&g);
}

/// A start after the guest's reboot cancelled once its new init runs: the
/// new init's end, in `exit.json`, says why the guest is not running (it
/// said nothing).
#[test]
fn s41_a_start_after_a_reboot_cancelled_as_init_runs_says_so() {
    let test = "s41_a_start_after_a_reboot_cancelled_as_init_runs_says_so";
    if !can_run(test) {
        return;
    }
    let g = rebooting("s41rebootcancel");
    let (start, _) = g.start_with("UNIFS_TEST_KEEPER_STOP", "1");
    let (old, keeper) = keeper_held(&g);
    drop(Continue(keeper as i32));
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    // The keeper became the start after the reboot; its new keeper holds.
    let record = g.run(&g.name).join("state.json");
    let new_init = || {
        let st = std::fs::read(&record).ok();
        let st: Option<serde_json::Value> = st.and_then(|s| serde_json::from_slice(&s).ok());
        st.and_then(|s| s["pid"].as_i64()).filter(|&p| p != old)
    };
    assert!(within_60s(|| new_init().is_some()), "no new init");
    let new = new_init().unwrap();
    let new_keeper = crate::guest::harness::parent_of(new);
    assert!(within_60s(|| stopped(new_keeper)), "no new keeper stopped");
    signal(keeper, libc::SIGTERM);
    drop(Continue(new_keeper as i32));
    assert!(within_60s(|| !alive(keeper.into())), "the start lives");
    let mut st = serde_json::Value::Null;
    within_60s(|| {
        st = status(&g);
        st["last_exit"]["not_restarted"].is_string()
    });
    assert_eq!(st["last_exit"]["pid"], new, "{st}");
    let why = st["last_exit"]["not_restarted"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("interrupted by SIGTERM"), "{st}");
    assert_eq!(st["running"], false, "{st}");
    nothing_left(&g);
}

/// A signal to a keeper whose init has just rebooted, before it becomes
/// the start after the reboot, goes on to the new init as one to that
/// start does. (It was taken, and said in `console.log` as ignored.)
#[test]
fn s41_a_signal_as_the_keeper_starts_its_guest_again_reaches_the_new_init() {
    let test = "s41_a_signal_as_the_keeper_starts_its_guest_again_reaches_the_new_init";
    if !can_run(test) {
        return;
    }
    let g = rebooting("s41rebootsig");
    let got = g.t.root().join("tmp/got-usr1");
    let (start, _) = g.start_with("UNIFS_TEST_REBOOT_PAUSE_MS", "3000");
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    let (init, keeper) = init_and_keeper(&g);
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    // Its end recorded, the keeper pauses 3 s before it becomes the start.
    let ended = || status(&g)["last_exit"]["pid"] == init;
    assert!(within_60s(ended), "init never rebooted");
    signal(keeper, libc::SIGUSR1);
    assert!(
        within_60s(|| got.exists()),
        "the new init never got SIGUSR1"
    );
    let log = std::fs::read_to_string(g.run(&g.name).join("console.log")).unwrap_or_default();
    assert!(!log.contains("SIGUSR1 to its keeper ignored"), "{log}");
    assert_eq!(status(&g)["reboots"], 1);
    ok(&g.unifs(&["stop", &g.name]));
    nothing_left(&g);
}
