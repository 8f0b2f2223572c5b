//! Review (session 45) "oominit": what an OOM kill is said to be, the
//! cases session 44 left. `unifs run --init` decided by the count's 3 s
//! window (its command's host PID unknown: it runs under the guest's PID
//! 1), so a SIGKILL by hand right after another process's OOM kill was
//! said to be the memory limit's; its command now says its PID on a socket
//! whose credentials the kernel translates. And a kill by the host's OOM
//! killer (the host out of memory, not the guest's limit) was said as the
//! memory limit's (the count rose, the log named no group's victim) or as
//! a plain SIGKILL: it is said as the host's now.

use crate::guest::harness::{can_run, ok, stderr_but_unshielded_warning, stdout, TestRoot};
use crate::review_s43_forkfail::{guest_in_16m, status_once_ended, ALLOC_64M};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// How unifs says the host's OOM killer's kill.
const BY_THE_HOST: &str = "killed by the host's OOM killer (the host ran out of memory)";

/// `unifs run --init` whose command's subshell the OOM killer ended, its
/// command killed by hand right after: "WARN the guest's command was
/// killed by the memory limit" (the count rose within 3 s). It was not.
#[test]
fn s45_a_run_init_killed_by_hand_right_after_its_subshells_oom_kill_says_no_oom() {
    if !can_run("s45_a_run_init_killed_by_hand_right_after_its_subshells_oom_kill_says_no_oom") {
        return;
    }
    crate::review_s44_oomexec::kill_a_run_by_hand_right_after_its_subshells_oom_kill(
        &["--init"],
        |_| {},
    );
}

/// A host out of memory cannot be caused on a shared machine: the tests'
/// UNIFS_TEST_KMSG_HOST reads a real memory group's kill in the kernel's
/// log as the kernel words the host's ("Out of memory: Killed process",
/// CONSTRAINT_NONE). `unifs run` (with and without --init) said "killed by
/// the memory limit" for it.
#[test]
fn s45_a_run_whose_command_the_hosts_oom_killer_ended_says_the_host_ran_out() {
    if !can_run("s45_a_run_whose_command_the_hosts_oom_killer_ended_says_the_host_ran_out") {
        return;
    }
    let t = TestRoot::new();
    for opts in [&[][..], &["--init"]] {
        let mut run = Command::new(crate::common::unifs_bin());
        run.env("UNIFS_TEST_KMSG_HOST", "1");
        run.arg("run").arg("--root").arg(t.root()).args(opts);
        run.args(["--memory", "16M", "--", "/bin/sh", "-c", ALLOC_64M]);
        let o = crate::guest::harness::run_bounded(run, std::time::Duration::from_secs(60));
        let err = stderr_but_unshielded_warning(&o);
        assert_eq!(o.status.code(), Some(137), "{opts:?}: {err}{}", stdout(&o));
        let said = format!("the guest's command was {BY_THE_HOST}");
        assert!(err.contains(&said), "{opts:?}: {err}");
        assert!(!err.contains("memory limit"), "{opts:?}: {err}");
    }
}

/// A named guest whose init the host's OOM killer ended (read so, as
/// above): `status`, `list` and exit.json said the memory limit's.
#[test]
fn s45_a_guest_whose_init_the_hosts_oom_killer_ended_says_the_host_ran_out() {
    if !can_run("s45_a_guest_whose_init_the_hosts_oom_killer_ended_says_the_host_ran_out") {
        return;
    }
    let init = format!("[\"/bin/sh\", \"-c\", {ALLOC_64M:?}]");
    let g = guest_in_16m("s45oomhost", &init);
    let start = g
        .command()
        .env("UNIFS_TEST_KMSG_HOST", "1")
        .args(["start", &g.name])
        .output()
        .unwrap();
    ok(&start);
    let status = status_once_ended(&g);
    let killed = format!("exit:    {BY_THE_HOST} (code=killed, signal=KILL)");
    assert!(status.contains(&killed), "{status}");
    let list = stdout(&g.unifs(&["list"]));
    assert!(list.contains("killed by the host's OOM killer"), "{list}");
    let json = stdout(&g.unifs(&["status", "--json", &g.name]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["last_exit"]["oom_killed"]["host"], true, "{json}");
}

/// `unifs run` stopped (SIGSTOP) while the kernel's log turned over (a
/// flood slow enough for every other reader of it to keep up), then its
/// command's subshell OOM-killed and the command killed by hand: "WARN the
/// guest's command was killed by the memory limit". Its oom-watch read
/// every record of the host; once its place was overwritten it could no
/// longer tell, and the count's window decided. It now skips what is
/// logged while its group's count does not rise (a flood costs it nothing
/// and takes nothing from it).
#[test]
fn s45_a_run_whose_log_turned_over_while_no_kill_was_counted_still_tells() {
    if !can_run("s45_a_run_whose_log_turned_over_while_no_kill_was_counted_still_tells") {
        return;
    }
    crate::review_s44_oomexec::kill_a_run_by_hand_right_after_its_subshells_oom_kill(&[], |run| {
        let run = Pid::from_raw(run as i32);
        kill(run, Signal::SIGSTOP).unwrap();
        let turned = turn_the_log_over();
        kill(run, Signal::SIGCONT).unwrap();
        // A machine too slow to turn it over in the bound: seen, not failed.
        if !turned {
            eprintln!(
                "s45_a_run_whose_log_turned_over_while_no_kill_was_counted_still_tells: \
                 the kernel's log did not turn over within {TURN_OVER_BOUND:?}: \
                 checked without the turnover"
            );
        }
        // Its oom-watch reads every half second: a few rounds.
        std::thread::sleep(Duration::from_millis(1500));
    });
}

/// How long [`turn_the_log_over`] may take; it takes about 6 s.
pub(crate) const TURN_OVER_BOUND: Duration = Duration::from_secs(60);

/// Writes to the kernel's log until a place taken in it now is
/// overwritten (its reader gets EPIPE), a sixth of the ring a second (the
/// ring's size from syslog(2), 128 KiB here): every other reader of the
/// log (another test's run, reading every half second) keeps up with that
/// easily, whatever the ring's size. False if that did not happen within
/// [`TURN_OVER_BOUND`] (a machine too slow to write that much).
fn turn_the_log_over() -> bool {
    let mut place = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .unwrap();
    place.seek(SeekFrom::End(0)).unwrap();
    let pad = "x".repeat(160);
    // SYSLOG_ACTION_SIZE_BUFFER: the ring's size in bytes.
    let ring = unsafe { libc::klogctl(10, std::ptr::null_mut(), 0) };
    let per_second = (ring.max(64 * 1024) / 6) as f64;
    let started = Instant::now();
    let mut written = 0usize;
    let mut buf = vec![0u8; 8192];
    while started.elapsed() < TURN_OVER_BOUND {
        // Paced by the clock: a slow round does not slow the rate, nor is
        // more than a second's worth made up at once (a burst).
        let due = started.elapsed().as_secs_f64() * per_second;
        written = written.max((due - per_second).max(0.0) as usize);
        if written as f64 > due {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        for i in 0..10 {
            // A file each: /dev/kmsg limits one file's writes (10 in 5 s).
            let mut kmsg = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/kmsg")
                .unwrap();
            let line = format!("<7>s45-oominit: turning the log over {i} {pad}\n");
            kmsg.write_all(line.as_bytes()).unwrap();
            written += line.len();
        }
        match place.read(&mut buf) {
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading /dev/kmsg: {e}"),
        }
    }
    false
}
