//! Review (session 46) of the keepers' and lifecycle's loose ends: a
//! command behind another that holds the guest's lock, and what a keeper
//! (or `unifs run`) says and records when one of its threads fails around
//! its guest's end.

use crate::guest::harness::{can_run, ok, run_bounded, stderr, wait_bounded, KillOnDrop, TestRoot};
use crate::guest::review_s11_life::{Continue, Guest, SLEEP};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s38_halt::{
    halting, init_and_keeper, nothing_left, stopped_by_its_keeper, HALT_ON_GO,
};
use crate::review_s38_keeperkill::signal;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `guest stop G` held (UNIFS_TEST_UNMOUNT_STOP) while it holds the guest's
/// lock, once its init was killed: the stop, and its pid.
fn stop_held_in_its_lock(g: &Guest) -> (KillOnDrop, u32) {
    let mut stop = g.command();
    stop.args(["stop", "--timeout", "1", &g.name])
        .env("UNIFS_TEST_UNMOUNT_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stop = KillOnDrop(Some(stop.spawn().unwrap()));
    let pid = stop.0.as_ref().unwrap().id();
    assert!(
        within_60s(|| stopped(pid)),
        "the stop {pid} never got to its unmount"
    );
    (stop, pid)
}

/// `start`, `update`, `restart` and a second `stop` of a guest whose `stop`
/// holds its lock (held there, stopped) said nothing and waited for good
/// (flock without a bound: each was killed by the test's 30 s here). Now
/// each says on stderr at once what holds the lock (the command and its
/// pid) and that it waits, fails after its bound (3 s here,
/// UNIFS_TEST_LOCK_WAIT_MAX) with what to do (the stop is stopped: `kill
/// -CONT`), having done nothing; and a `start` behind a stop that ends
/// within the bound waits for it, then starts the guest.
#[test]
fn s46_a_command_behind_a_stop_says_what_it_waits_for_and_gives_up_in_time() {
    let test = "s46_a_command_behind_a_stop_says_what_it_waits_for_and_gives_up_in_time";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s46lock", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let (stop, stop_pid) = stop_held_in_its_lock(&g);
    let go_on = Continue(stop_pid as i32);
    let waiting = format!(
        "unifs: guest {} is being stopped by `unifs guest stop` (pid {stop_pid}): waiting for \
         it to finish (up to 3 s)",
        g.name
    );
    let gave_up = format!(
        "guest {} is still being stopped by `unifs guest stop` (pid {stop_pid}) after 3 s",
        g.name
    );
    let name = g.name.as_str();
    let commands: [&[&str]; 4] = [
        &["start", name],
        &["update", "--memory", "100M", name],
        &["restart", name],
        &["stop", name],
    ];
    for args in commands {
        let mut cmd = g.command();
        cmd.args(args).env("UNIFS_TEST_LOCK_WAIT_MAX", "3");
        let o = run_bounded(cmd, Duration::from_secs(30));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
        assert!(
            err.contains(&waiting)
                && err.contains(&gave_up)
                && err.contains("nothing was done")
                && err.contains(&format!("`kill -CONT {stop_pid}`")),
            "{args:?}: {err}"
        );
    }
    // A start behind it once more, with time to wait: the stop goes on
    // once the start said it waits, ends, and the start starts the guest.
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_LOCK_WAIT_MAX", "120")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut start = KillOnDrop(Some(start.spawn().unwrap()));
    let err = start.0.as_mut().unwrap().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let said = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    assert!(
        said.contains("waiting for it to finish (up to 120 s)"),
        "{said}"
    );
    drop(go_on);
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(o.status.success(), "{o:?}");
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{o:?}");
    let o = g.unifs(&["exec", &g.name, "--", "/bin/echo", "runs"]);
    assert_eq!(ok(&o), "runs\n");
    ok(&g.unifs(&["stop", &g.name]));
}

/// The console log of `g`, once it says `want` (waited up to 60 s).
fn console_log_once(g: &Guest, want: &str) -> String {
    let mut log = String::new();
    within_60s(|| {
        log = std::fs::read_to_string(g.run(&g.name).join("console.log")).unwrap_or_default();
        log.contains(want)
    });
    log
}

/// A guest whose init halts once told, started with the test hooks `env`
/// (no backtrace to print first), then told: it, its init's pid and its
/// keeper's.
fn halting_started(test: &str, env: &[(&str, &str)]) -> (Guest, i64, u32) {
    let g = halting(test, HALT_ON_GO);
    let mut start = g.command();
    start.args(["start", &g.name]).envs(env.iter().copied());
    start.env_remove("RUST_BACKTRACE");
    ok(&run_bounded(start, Duration::from_secs(60)));
    let (init, keeper) = init_and_keeper(&g);
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    (g, init, keeper)
}

/// The keeper's main thread fails once it has stopped its guest whose init
/// halted (UNIFS_TEST_CHILD_PANIC=keeper-stopped): the guest is torn down
/// (nothing left, `stopped_by_keeper`). Before, the console log said "the
/// keeper ends now, the guest not torn down (`unifs guest stop` does)";
/// now it says the guest was already stopped.
#[test]
fn s46_a_keepers_main_thread_failing_once_it_stopped_its_guest_says_so() {
    let test = "s46_a_keepers_main_thread_failing_once_it_stopped_its_guest_says_so";
    if !can_run(test) {
        return;
    }
    let (g, init, _) = halting_started("s46torn", &[("UNIFS_TEST_CHILD_PANIC", "keeper-stopped")]);
    stopped_by_its_keeper(&g);
    nothing_left(&g);
    let log = console_log_once(&g, "in its thread main");
    assert!(
        log.contains("UNIFS_TEST_CHILD_PANIC=keeper-stopped")
            && log.contains(&format!(
                "once its init (pid {init}) had ended: nothing was left to stop, the keeper \
                 ends now, the guest already stopped (torn down)]"
            ))
            && !log.contains("the guest not torn down"),
        "{log}"
    );
}

/// A keeper whose thread for signals fails (UNIFS_TEST_CHILD_PANIC=
/// keeper-signals, on SIGHUP) after it reaped init, which halted, but
/// before it said so (UNIFS_TEST_REAPED_PAUSE_MS: the test acts in that
/// pause). Before, the failure was taken as one while init ran: the log
/// said "so it stops the guest now" of an init already reaped, and the
/// record `keeper_failed_after_end: false`, `status` "stopped by its
/// keeper, which failed", of a guest that halted by itself. Now both say
/// the keeper failed once init had ended, with nothing to stop.
#[test]
fn s46_a_keeper_thread_failing_just_after_the_reap_records_that_init_had_ended() {
    let test = "s46_a_keeper_thread_failing_just_after_the_reap_records_that_init_had_ended";
    if !can_run(test) {
        return;
    }
    let (g, init, keeper) = halting_started(
        "s46reap",
        &[
            ("UNIFS_TEST_REAPED_PAUSE_MS", "7000"),
            ("UNIFS_TEST_CHILD_PANIC", "keeper-signals"),
        ],
    );
    crate::common::wait_for_pause(keeper, 7000);
    signal(keeper, libc::SIGHUP);
    let st = stopped_by_its_keeper(&g);
    nothing_left(&g);
    let last = &st["last_exit"];
    assert_eq!(last["shutdown"], "halt", "{last}");
    assert!(
        last["keeper_failed"]
            .as_str()
            .unwrap_or("")
            .contains("its thread signals failed: UNIFS_TEST_CHILD_PANIC=keeper-signals"),
        "{last}"
    );
    assert_eq!(last["keeper_failed_after_end"], true, "{last}");
    let status = crate::guest::harness::stdout(&g.unifs(&["status", &g.name]));
    assert!(
        status.contains("its keeper failed once init had ended (nothing to stop)")
            && !status.contains("stopped by its keeper, which failed"),
        "{status}"
    );
    let log = console_log_once(&g, "in its thread signals");
    assert!(
        log.contains(&format!(
            "once its init (pid {init}) had ended: nothing was left to stop, and the keeper ends \
             as it would have]"
        )) && !log.contains("so it stops the guest now"),
        "{log}"
    );
}

/// `unifs run`'s thread for signals fails (UNIFS_TEST_CHILD_PANIC=
/// run-signals, on a first signal) after its guest ended, before the
/// thread was told (UNIFS_TEST_WAITED_PAUSE_MS: the test's SIGTERM comes
/// in that pause). Before, the run said "so it stops the guest now
/// (SIGTERM, SIGKILL after 10 s)" of a guest already gone; now it says
/// there was nothing left to stop. It exits 101 either way.
#[test]
fn s46_a_runs_signal_thread_failing_once_its_guest_ended_says_nothing_was_left() {
    let test = "s46_a_runs_signal_thread_failing_once_its_guest_ended_says_nothing_was_left";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root());
    run.args(["--", "/bin/true"])
        .env("UNIFS_TEST_WAITED_PAUSE_MS", "7000")
        .env("UNIFS_TEST_CHILD_PANIC", "run-signals")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = KillOnDrop(Some(run.spawn().unwrap()));
    let pid = run.0.as_ref().unwrap().id();
    crate::common::wait_for_pause(pid, 7000);
    signal(pid, libc::SIGTERM);
    let o = wait_bounded(run, Duration::from_secs(60));
    let err = stderr(&o);
    assert!(
        err.contains("failed on an internal error in its thread signals")
            && err.contains("UNIFS_TEST_CHILD_PANIC=run-signals")
            && err
                .contains("had ended: nothing was left to stop, and the run ends as it would have")
            && !err.contains("stops the guest now"),
        "{err}"
    );
    assert_eq!(o.status.code(), Some(101), "{err}");
}

/// The i386 probe of the seccomp tests (cc -m32) means something on an
/// x86-64 host alone: elsewhere it skipped saying "needs cc -m32
/// (gcc-multilib …)", a package that would not help (and failed under CI).
/// It now skips first on any other architecture, saying so. (Read from the
/// test's source: this host is x86-64.)
#[test]
fn s46_the_i386_seccomp_test_skips_on_other_architectures_first() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/guest/seccomp.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let body = text
        .split("fn seccomp_filter_covers_the_i386_abi()")
        .nth(1)
        .expect("the i386 test");
    let arch = body.find("target_arch = \"x86_64\"");
    let m32 = body.find("\"-m32\"").expect("its cc -m32");
    assert!(
        arch.is_some_and(|a| a < m32),
        "the i386 test does not skip on other architectures before it builds with cc -m32"
    );
}
