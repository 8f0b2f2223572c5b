//! Session 44 (console): a named guest's init got `RUN_DIR/NAME/console.log`,
//! a host file, as its standard output and error. Guest root reached it
//! through init's fds and `/proc/PID/fd/1` of any guest process: it grew
//! it without bound (the 4 MiB rotation came only at a start), outside its
//! root's quota and its memory limit, truncated it to 5 GiB and made it
//! set-uid root. Init's output now goes to its console (a pty of the
//! guest's own devpts, as nspawn does), which the keeper copies into the
//! log, setting it aside as `console.log.1` at 8 MiB while the guest runs.
//! The same held for `unifs run`'s stdin, stdout and stderr that were a
//! file or a device of its caller's: now pipes `run` copies through.

use crate::guest::harness::{
    alive, can_run, ok, parent_of, stderr, wait_bounded, within_30s, KillOnDrop, TestRoot,
};
use crate::guest::named::Guest;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The most a console log holds while its guest runs (`CONSOLE_MAX_BYTES`).
const MAX: u64 = 8 << 20;

fn console_log(g: &Guest) -> PathBuf {
    g.run_dir.join(&g.name).join("console.log")
}

/// `guest exec` of `sh -c script` in `g`.
fn exec_sh(g: &Guest, script: &str) -> std::process::Output {
    g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", script])
}

fn init_pid(g: &Guest) -> i64 {
    g.state()["pid"].as_i64().expect("init's pid")
}

/// The size and mode of the log at `p`, if it is there; panics if root
/// does not own it.
fn size_and_mode(p: &Path) -> Option<(u64, u32)> {
    let m = std::fs::metadata(p).ok()?;
    assert_eq!((m.uid(), m.gid()), (0, 0), "{} is not root's", p.display());
    Some((m.len(), m.mode() & 0o7777))
}

/// The reproducer of the finding: from `guest exec`, guest root appends
/// 20 MiB to init's stdout through `/proc/2/fd/1`, truncates it to 5 GiB
/// and chmods it 4777. Before: console.log was 5368709120 bytes,
/// `-rwsrwxrwx`. Now init's stdout is no file of the host's, and the log
/// the keeper writes stays under the cap and root's alone.
#[test]
fn s44_guest_root_cannot_grow_truncate_or_chmod_the_console_log() {
    if !can_run("s44_guest_root_cannot_grow_truncate_or_chmod_the_console_log") {
        return;
    }
    let g = Guest::new("s44escg", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let o = exec_sh(
        &g,
        "dd if=/dev/zero bs=1M count=20 >> /proc/2/fd/1 2>/dev/null; \
         truncate -s 5G /proc/2/fd/1; chmod 4777 /proc/2/fd/1; echo done",
    );
    assert!(stderr(&o).len() < 4096, "{}", stderr(&o));
    let log = console_log(&g);
    let old = log.with_extension("log.1");
    // What the keeper copied of the 20 MiB (all of it, once it caught up):
    // set aside at 8 MiB twice, the current log holding the rest.
    let copied = || {
        let len = |p: &Path| size_and_mode(p).map_or(0, |(l, _)| l);
        len(&log) + len(&old)
    };
    within_30s(|| copied() >= 4 << 20 && size_and_mode(&old).is_some());
    for p in [&log, &old] {
        let (len, mode) = size_and_mode(p).unwrap_or_else(|| panic!("no {}", p.display()));
        assert!(len <= MAX, "{} is {len} bytes, over {MAX}", p.display());
        assert!(
            mode == 0o600 || mode == 0o640,
            "{} has mode {mode:o}",
            p.display()
        );
    }
    // The guest's own console took the chmod: init (the reaper, PID 1) and
    // its command (PID 2) share their fds.
    let init = init_pid(&g);
    let stdout = std::fs::metadata(format!("/proc/{init}/fd/1")).unwrap();
    assert!(
        stdout.file_type().is_char_device(),
        "init's stdout is a host file of {} bytes, mode {:o}",
        stdout.len(),
        stdout.mode()
    );
    assert!(alive(init));
}

/// Init's standard output and error and what it writes to /dev/console
/// are one stream, logged in the order written (before, stdout and stderr
/// went straight to the file and the console came through the keeper
/// later: "out-1 err-1 out-2" then "con-1"); `guest logs` shows it.
#[test]
fn s44_init_output_and_console_land_in_the_log_in_order() {
    if !can_run("s44_init_output_and_console_land_in_the_log_in_order") {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"echo out-1; echo err-1 >&2; echo con-1 > /dev/console; \
                echo out-2; exec sleep 1000\"]";
    let g = Guest::new("s44order", init, false);
    ok(&g.unifs(&["start", &g.name]));
    let log = console_log(&g);
    let want = "out-1\nerr-1\ncon-1\nout-2\n";
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    within_30s(|| read().lines().count() >= 4);
    assert_eq!(read(), want);
    assert_eq!(ok(&g.unifs(&["logs", &g.name])), want);
    assert_eq!(ok(&g.unifs(&["logs", "-n", "1", &g.name])), "out-2\n");
}

/// The keeper (the copier) killed: init and its command live on, their
/// writes to stdout failing (EIO, a hung-up terminal's) with no signal to
/// end them, as a pipe with no reader left would (SIGPIPE). Before the fix
/// the writes went on into the host file ("the guest's writes never
/// failed").
#[test]
fn s44_init_lives_on_when_its_keeper_is_killed() {
    if !can_run("s44_init_lives_on_when_its_keeper_is_killed") {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"while :; do echo tick || touch /failed; sleep 0.2; done\"]";
    let g = Guest::new("s44keep", init, true);
    ok(&g.unifs(&["start", &g.name]));
    let log = console_log(&g);
    let ticked = || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("tick\n"));
    assert!(within_30s(ticked), "{:?}", std::fs::read_to_string(&log));
    let init = init_pid(&g);
    let keeper = parent_of(init);
    let kill = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    kill.unwrap();
    assert!(
        within_30s(|| !alive(keeper.into())),
        "keeper {keeper} lives"
    );
    let failed = g.t.root().join("failed");
    assert!(
        within_30s(|| failed.exists()),
        "the guest's writes never failed"
    );
    // Still looping after its writes failed: its command, PID 2, lives.
    let script = "rm /failed; sleep 1; test -e /failed && kill -0 2 && echo alive";
    let said = ok(&exec_sh(&g, script));
    assert_eq!(said, "alive\n");
    assert!(alive(init));
}

/// `unifs run` with a file as stdin and stdout: guest root chmods them
/// through /proc/self/fd. Before, they were the caller's files and the
/// output became `-rwsrwxrwx root` (a set-uid program for whoever reaches
/// it, written by the guest); now they are pipes `run` copies through, and
/// what the guest read and wrote is as it was.
#[test]
fn s44_run_gives_the_guest_pipes_for_the_callers_files() {
    if !can_run("s44_run_gives_the_guest_pipes_for_the_callers_files") {
        return;
    }
    let t = TestRoot::new();
    let (input, output) = (t.dir.path().join("in"), t.dir.path().join("out"));
    std::fs::write(&input, "from the host\n").unwrap();
    let mut cmd = std::process::Command::new(crate::common::unifs_bin());
    cmd.args(["run", "--root-mount", "bind", "--root"])
        .arg(t.root());
    cmd.args(["--", "/bin/sh", "-c"]);
    cmd.arg("chmod 4777 /proc/self/fd/0 /proc/self/fd/1; echo out; cat; exit 3");
    cmd.stdin(std::fs::File::open(&input).unwrap());
    cmd.stdout(std::fs::File::create(&output).unwrap());
    cmd.stderr(std::process::Stdio::piped());
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let o = wait_bounded(child, std::time::Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    for p in [&input, &output] {
        let mode = std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode & 0o7022, 0, "{} has mode {mode:o}", p.display());
    }
    let wrote = std::fs::read_to_string(&output).unwrap();
    assert_eq!(wrote, "out\nfrom the host\n");
}
