//! Session 44 (consolerev): review of the console change, whose
//! `unifs run` gives the guest a pipe for each of its caller's stdin,
//! stdout and stderr that is a file or a device, and copies through it.
//! `> out.log 2>&1` gave stdout and stderr a pipe (and a copy) each, which
//! mixed the order of their lines; a write to the file that failed (a full
//! disk) was said nowhere, and the run exited 0. And a named guest's init,
//! whose stdout is now its console (a terminal nobody types into), started
//! a pager there from `systemctl`, `git log` or `man`, waiting for good.

use crate::guest::harness::{can_run, ok, stderr, wait_bounded, within_30s, KillOnDrop, TestRoot};
use crate::guest::named::Guest;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `unifs run` of `sh -c script` in `t`, its stdout and stderr set by
/// `stdio` on the command.
fn run_sh(t: &TestRoot, script: &str, stdio: impl FnOnce(&mut Command)) -> Output {
    run_sh_with(t, &[], script, stdio)
}

/// [`run_sh`] with `unifs run`'s options `opts` (stdin /dev/null unless
/// `stdio` sets it).
pub(crate) fn run_sh_with(
    t: &TestRoot,
    opts: &[&str],
    script: &str,
    stdio: impl FnOnce(&mut Command),
) -> Output {
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.args(["run", "--root-mount", "bind", "--root"])
        .arg(t.root())
        .args(opts)
        .args(["--", "/bin/sh", "-c", script]);
    cmd.stdin(Stdio::null());
    stdio(&mut cmd);
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    wait_bounded(child, Duration::from_secs(60))
}

/// `unifs run … > out 2>&1` of a command alternating stdout and stderr
/// lines: the file holds them in the order written, as a shell's, nspawn's
/// or bwrap's would. Before: two pipes, two copies, and lines out of order
/// (`err-1` before `out-1`, or runs of one stream's lines).
#[test]
fn s44_run_keeps_the_order_of_stdout_and_stderr_in_one_file() {
    if !can_run("s44_run_keeps_the_order_of_stdout_and_stderr_in_one_file") {
        return;
    }
    let t = TestRoot::new();
    let out = t.dir.path().join("out.log");
    let script = "i=0; while [ $i -lt 3000 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done";
    let file = std::fs::File::create(&out).unwrap();
    let o = run_sh(&t, script, |cmd| {
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
    });
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let expected: String = (0..3000).map(|i| format!("out-{i}\nerr-{i}\n")).collect();
    let wrote = std::fs::read_to_string(&out).unwrap();
    let first_off = wrote
        .lines()
        .zip(expected.lines())
        .position(|(a, b)| a != b);
    assert!(
        wrote == expected,
        "{} bytes written of {}; first line out of order: {first_off:?}",
        wrote.len(),
        expected.len()
    );
}

/// `unifs run … > /dev/full`: the write fails as a full disk's would. The
/// command wrote to a pipe and never learnt it; `run` says it and exits 1,
/// as `echo hi > /dev/full` in a shell does. Before: nothing said, exit 0.
#[test]
fn s44_run_says_when_its_output_could_not_be_written() {
    if !can_run("s44_run_says_when_its_output_could_not_be_written") {
        return;
    }
    let t = TestRoot::new();
    let full = dev_full();
    let o = run_sh(&t, "echo hi", |cmd| {
        cmd.stdout(full).stderr(Stdio::piped());
    });
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains("stdout") && said.contains("No space left on device"),
        "{said}"
    );
}

/// /dev/full, open for writing: every write fails with ENOSPC.
pub(crate) fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
}

/// The same for a command that failed by itself: its own status stays.
#[test]
fn s44_run_keeps_a_failed_commands_status_when_its_output_is_lost() {
    if !can_run("s44_run_keeps_a_failed_commands_status_when_its_output_is_lost") {
        return;
    }
    let t = TestRoot::new();
    let full = dev_full();
    let o = run_sh(&t, "echo hi >&2; exit 7", |cmd| {
        cmd.stdout(Stdio::piped()).stderr(full);
    });
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
}

/// What a named guest's init printed of its environment, once its console
/// log holds the line (30 s at most).
fn init_says(g: &Guest) -> String {
    let log = g.run_dir.join(&g.name).join("console.log");
    let mut said = String::new();
    within_30s(|| {
        said = std::fs::read_to_string(&log).unwrap_or_default();
        said.contains("pager=[")
    });
    said
}

/// A named guest's init: `PAGER=cat` in its environment, so `systemctl
/// status`, `journalctl`, `git log` or `man` in an init script print
/// instead of starting `less` on the console, which no one types into:
/// (`systemctl --help` with the host's TERM on such a pty waits at
/// `lines 1-23` for good). Before: no PAGER.
#[test]
fn s44_a_named_guests_init_pages_through_cat() {
    if !can_run("s44_a_named_guests_init_pages_through_cat") {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"echo pager=[$PAGER]; exec sleep 1000\"]";
    let g = Guest::new("s44pager", init, true);
    ok(&g.unifs(&["start", &g.name]));
    let said = init_says(&g);
    ok(&g.unifs(&["stop", &g.name]));
    assert!(said.contains("pager=[cat]"), "{said}");
}

/// Guard: a pager the config names stays init's.
#[test]
fn s44_a_named_guests_own_pager_stays() {
    if !can_run("s44_a_named_guests_own_pager_stays") {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"echo pager=[$PAGER]; exec sleep 1000\"]";
    let g = Guest::new("s44pagerown", init, true);
    let toml = g.config();
    let config = std::fs::read_to_string(&toml).unwrap();
    let config = config.replacen("init_reaper", "env = [\"PAGER=more\"]\ninit_reaper", 1);
    std::fs::write(&toml, config).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let said = init_says(&g);
    ok(&g.unifs(&["stop", &g.name]));
    assert!(said.contains("pager=[more]"), "{said}");
}
