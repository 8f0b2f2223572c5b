//! Review s40 (keeper4): the last gaps of a named guest's start and keeper.
//! A SIGTERM, SIGINT or SIGHUP to `guest start` itself (a `systemctl stop`
//! right after `systemctl start`, Ctrl-C) ended it wherever it was, its
//! guest half made (root mounted, groups made, no record); one to a keeper
//! while it ran the start after its guest's reboot ended that start too.

use crate::guest::harness::{alive, can_run, groups, is_mounted, ok, stderr, wait_bounded};
use crate::guest::review_s11_life::{mount_daemon_if_any, Continue, Guest};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s38_halt::{halting, init_and_keeper, nothing_left};
use crate::review_s38_keeperkill::signal;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::Duration;

/// An init that ends on SIGTERM.
const ENDS_ON_TERM: &str =
    "[\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.05; done\"]";

/// Nothing of the guest is left, nor ever ran: no record, no root mounted
/// (nor its mount point), no overlay daemon, no groups, no console log.
pub(crate) fn nothing_made(g: &Guest, what: &str) {
    let run = g.run(&g.name);
    assert!(
        !run.join("state.json").exists(),
        "{what}: its record is left"
    );
    assert!(
        !is_mounted(&run.join("root")),
        "{what}: its root is mounted"
    );
    assert!(
        !run.join("root").exists(),
        "{what}: its mount point is left"
    );
    let no_daemon = || mount_daemon_if_any(&run.join("root")).is_none();
    assert!(within_60s(no_daemon), "{what}: its overlay daemon runs");
    for group in groups(&g.name, g.run_dir()) {
        assert!(!group.exists(), "{what}: {} is left", group.display());
    }
    assert!(!run.join("console.log").exists(), "{what}: a console log");
}

/// The start (`o`) ended by `sig`, saying it was interrupted so.
fn ended_by(o: &Output, sig: i32, what: &str) {
    assert_eq!(
        o.status.signal(),
        Some(sig),
        "{what}: {:?}, {}",
        o.status,
        stderr(o)
    );
    let name = nix::sys::signal::Signal::try_from(sig).unwrap();
    let said = format!("was interrupted by {name}");
    assert!(stderr(o).contains(&said), "{what}: {}", stderr(o));
}

/// `guest status --json` of `g` (exit 3 when stopped).
pub(crate) fn status(g: &Guest) -> serde_json::Value {
    let o = g.unifs(&["status", "--json", &g.name]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)))
}

/// A start held (SIGSTOP) at `hook`: its pid, and what continues it.
fn start_held_at(g: &Guest, hook: &str) -> (crate::guest::harness::KillOnDrop, Continue) {
    let (start, _) = g.start_with(hook, "1");
    let pid = start.0.as_ref().unwrap().id();
    assert!(within_60s(|| stopped(pid)), "{hook}: start never stopped");
    (start, Continue(pid as i32))
}

/// A signal that ends a command, sent to `guest start` before it starts
/// init (its lock just taken; its root mounted), makes it undo what it did
/// and end by that signal: nothing mounted, no groups, no record. (It
/// ended there, the root mounted and the groups made.)
#[test]
fn s40_a_signal_to_guest_start_before_init_undoes_the_start() {
    let test = "s40_a_signal_to_guest_start_before_init_undoes_the_start";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s40undo", "[\"/bin/sleep\", \"100000\"]");
    // SIGHUP cancels only a start on a terminal (review_s41_keeper5).
    for sig in [libc::SIGTERM, libc::SIGINT] {
        for hook in ["UNIFS_TEST_START_LOCKED_STOP", "UNIFS_TEST_START_STOP"] {
            let what = format!("signal {sig} at {hook}");
            let (start, go_on) = start_held_at(&g, hook);
            signal(go_on.0 as u32, sig);
            drop(go_on);
            let o = wait_bounded(start, Duration::from_secs(60));
            ended_by(&o, sig, &what);
            nothing_made(&g, &what);
        }
    }
    // And the guest starts as ever after.
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["stop", &g.name]));
}

/// A SIGTERM to `guest start` once its keeper has started init (while
/// the start waits for its report): the start stops the guest again, as
/// `guest stop` does, and ends by it; init's end is recorded. (The start
/// ended, and the guest ran on.)
#[test]
fn s40_a_sigterm_to_guest_start_as_init_starts_stops_the_guest() {
    let test = "s40_a_sigterm_to_guest_start_as_init_starts_stops_the_guest";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s40stopinit", ENDS_ON_TERM);
    let (start, _) = g.start_with("UNIFS_TEST_KEEPER_STOP", "1");
    let pid = start.0.as_ref().unwrap().id();
    let (init, keeper) = keeper_held(&g);
    signal(pid, libc::SIGTERM);
    drop(Continue(keeper as i32));
    let o = wait_bounded(start, Duration::from_secs(60));
    ended_by(&o, libc::SIGTERM, "SIGTERM as init started");
    assert!(
        stderr(&o).contains(&format!("its init (pid {init})")),
        "{}",
        stderr(&o)
    );
    nothing_left(&g);
    assert!(!alive(init), "init lives");
    assert!(within_60s(|| !alive(keeper.into())), "the keeper lives");
    let st: serde_json::Value = status(&g);
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["last_exit"]["pid"], init, "{st}");
}

/// SIGTERM to `guest start` at many points of its work: it either ends by
/// it with nothing of the guest left running (undone, or stopped again),
/// or it had finished (exit 0) and the guest runs, recorded. Never a half
/// made guest.
#[test]
fn s40_a_sigterm_at_any_point_of_a_start_leaves_no_half_made_guest() {
    let test = "s40_a_sigterm_at_any_point_of_a_start_leaves_no_half_made_guest";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s40points", ENDS_ON_TERM);
    let run = g.run(&g.name);
    for round in 0..16u64 {
        let what = format!("round {round}");
        let (start, _) = g.start_with("UNIFS_TEST_NONE", "1");
        let pid = start.0.as_ref().unwrap().id();
        std::thread::sleep(Duration::from_millis(10 * round));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let o = wait_bounded(start, Duration::from_secs(60));
        eprintln!("{what}: {:?}: {}", o.status, stderr(&o).trim());
        match o.status.signal() {
            Some(libc::SIGTERM) => {
                assert!(
                    !run.join("state.json").exists(),
                    "{what}: its record is left"
                );
                assert!(
                    !is_mounted(&run.join("root")),
                    "{what}: its root is mounted"
                );
                for group in groups(&g.name, g.run_dir()) {
                    assert!(!group.exists(), "{what}: {} is left", group.display());
                }
            }
            _ => {
                assert!(o.status.success(), "{what}: {:?} {}", o.status, stderr(&o));
                assert!(alive(g.init_pid()), "{what}: started, init gone");
                ok(&g.unifs(&["stop", &g.name]));
            }
        }
    }
}

/// A guest that reboots itself, its init taking SIGUSR1 (a file says so).
pub(crate) fn rebooting(name: &str) -> Guest {
    let init = "[\"/bin/sh\", \"-c\", \"trap 'touch /tmp/got-usr1' USR1; \
                while [ ! -e /tmp/go ]; do sleep 0.05; done; rm /tmp/go; reboot -f\"]";
    halting(name, init)
}

/// Has `g` reboot, and returns its keeper, held in the start after the
/// reboot (UNIFS_TEST_START_LOCKED_STOP, which `g`'s first start had).
fn held_in_the_start_after_reboot(g: &Guest) -> Continue {
    let (_, keeper) = init_and_keeper(g);
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    assert!(
        within_60s(|| stopped(keeper)),
        "the keeper's start after the reboot never stopped"
    );
    Continue(keeper as i32)
}

/// A signal to a keeper while it runs its guest's start after a reboot (it
/// has become `guest start --after-reboot`) is no longer lost or fatal:
/// SIGUSR1 goes on to the new init once it runs; SIGTERM stops the guest,
/// nothing left, said in `exit.json`. (Either ended the start there, its
/// guest half made.)
#[test]
fn s40_a_signal_to_a_keeper_starting_its_guest_again_is_kept() {
    let test = "s40_a_signal_to_a_keeper_starting_its_guest_again_is_kept";
    if !can_run(test) {
        return;
    }
    let g = rebooting("s40again");
    let got = g.t.root().join("tmp/got-usr1");
    let (start, go_on) = start_held_at(&g, "UNIFS_TEST_START_LOCKED_STOP");
    drop(go_on);
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    let held = held_in_the_start_after_reboot(&g);
    signal(held.0 as u32, libc::SIGUSR1);
    drop(held);
    assert!(
        within_60s(|| got.exists()),
        "the new init never got SIGUSR1"
    );
    let st: serde_json::Value = status(&g);
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["reboots"], 1, "{st}");

    let held = held_in_the_start_after_reboot(&g);
    let keeper = held.0;
    signal(keeper as u32, libc::SIGTERM);
    drop(held);
    assert!(within_60s(|| !alive(keeper.into())), "the keeper lives");
    let mut st = serde_json::Value::Null;
    within_60s(|| {
        st = status(&g);
        st["last_exit"]["not_restarted"].is_string()
    });
    let why = st["last_exit"]["not_restarted"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("interrupted by SIGTERM"), "{st}");
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["stale"], false, "{st}");
    nothing_left(&g);
}

/// After a `systemctl kill -s KILL` of unifs-guest@NAME (its main process,
/// the keeper, killed), systemd runs no ExecStop= but does run
/// ExecStopPost=, which stops the guest, as systemd stops an nspawn
/// container with its unit; until then `status` says its keeper is gone.
/// `guest stop` of the keeperless guest leaves nothing, not even the dead
/// keeper's keeper.pid; run again (after a clean stop) it finds nothing to
/// stop and exits 0. (The unit had no ExecStopPost=: the guest ran on.)
#[test]
fn s40_the_unit_stops_a_guest_whose_keeper_was_killed() {
    let test = "s40_the_unit_stops_a_guest_whose_keeper_was_killed";
    let unit = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/systemd/unifs-guest@.service"
    );
    let unit = std::fs::read_to_string(unit).unwrap();
    let post = "\nExecStopPost=/usr/local/bin/unifs guest stop %i\n";
    assert!(unit.contains(post), "no {post:?} in {unit}");
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s40post", "[\"/bin/sleep\", \"100000\"]");
    ok(&g.unifs(&["start", &g.name]));
    let (init, keeper) = init_and_keeper(&g);
    let pid_file = g.run(&g.name).join("keeper.pid");
    assert!(pid_file.exists(), "no keeper.pid");
    signal(keeper, libc::SIGKILL);
    assert!(within_60s(|| !alive(keeper.into())), "the keeper lives");
    let st = status(&g);
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["keeper_gone"], true, "{st}");
    let o = g.unifs(&["status", &g.name]);
    assert!(
        crate::guest::harness::stdout(&o).contains("state:   running (no keeper)\n"),
        "{}",
        crate::guest::harness::stdout(&o)
    );
    assert!(
        stderr(&o).contains("keeper (its init's parent) is gone"),
        "{}",
        stderr(&o)
    );

    // ExecStopPost=, as systemd runs it once the keeper is dead.
    let said = ok(&g.unifs(&["stop", &g.name]));
    assert!(said.contains("stopped"), "{said}");
    assert!(!alive(init), "init lives");
    nothing_left(&g);
    assert!(!pid_file.exists(), "the dead keeper's keeper.pid is left");
    let said = ok(&g.unifs(&["stop", &g.name]));
    assert!(said.contains("nothing to stop"), "{said}");
}

/// `nohup unifs guest start`: a SIGHUP it ignores (held, it is pending all
/// the same) neither cancels the start nor goes on to init.
#[test]
fn s40_a_sighup_a_nohup_start_ignores_does_not_cancel_it() {
    let test = "s40_a_sighup_a_nohup_start_ignores_does_not_cancel_it";
    if !can_run(test) {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"trap 'touch /tmp/got-hup' HUP; \
                while :; do sleep 0.05; done\"]";
    let g = Guest::new("s40nohup", init);
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_START_STOP", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: signal(2) is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut start, || {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let start = crate::guest::harness::KillOnDrop(Some(start.spawn().unwrap()));
    let pid = start.0.as_ref().unwrap().id();
    assert!(within_60s(|| stopped(pid)), "start never stopped");
    signal(pid, libc::SIGHUP);
    drop(Continue(pid as i32));
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert!(alive(g.init_pid()), "init gone");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!g.t.root().join("tmp/got-hup").exists(), "init got SIGHUP");
    ok(&g.unifs(&["stop", &g.name]));
}

/// A Ctrl-C to a `guest start` whose init's set-up hangs (here its keeper
/// stopped before its report) is held and said, but a second one ends the
/// start at once, as a Ctrl-C did before signals were held: a start must
/// not be deaf to the keyboard for as long as a set-up takes. The guest
/// is left running, kept, for `guest stop`.
#[test]
fn s40_a_second_ctrl_c_ends_a_start_whose_init_set_up_hangs() {
    let test = "s40_a_second_ctrl_c_ends_a_start_whose_init_set_up_hangs";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s40twice", ENDS_ON_TERM);
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_KEEPER_STOP", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err.reopen().unwrap());
    let mut start = crate::guest::harness::KillOnDrop(Some(start.spawn().unwrap()));
    let pid = start.0.as_ref().unwrap().id();
    let (_, keeper) = keeper_held(&g);
    let go_on = Continue(keeper as i32);
    let said = || std::fs::read_to_string(err.path()).unwrap_or_default();

    signal(pid, libc::SIGINT);
    let held = "SIGINT while its init is set up: the start stops the guest once init runs";
    assert!(within_60s(|| said().contains(held)), "{}", said());
    let c = start.0.as_mut().unwrap();
    assert!(c.try_wait().unwrap().is_none(), "the first SIGINT ended it");

    signal(pid, libc::SIGINT);
    assert!(
        within_60s(|| c.try_wait().unwrap().is_some()),
        "a second SIGINT did not end the start: {}",
        said()
    );
    let status = start.0.take().unwrap().wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "{status:?}: {}",
        said()
    );
    assert!(
        said().contains("SIGINT again: the start ends now"),
        "{}",
        said()
    );

    drop(go_on);
    ok(&g.unifs(&["stop", &g.name]));
    nothing_left(&g);
}

/// The init and keeper of `g` as its start's keeper, init running, holds
/// before its report (UNIFS_TEST_KEEPER_STOP).
pub(crate) fn keeper_held(g: &Guest) -> (i64, u32) {
    let record = g.run(&g.name).join("state.json");
    assert!(within_60s(|| record.exists()), "no record");
    let (init, keeper) = init_and_keeper(g);
    assert!(within_60s(|| stopped(keeper)), "the keeper never stopped");
    (init, keeper)
}
