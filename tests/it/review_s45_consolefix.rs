//! Session 45 (consolefix): loose ends of `unifs run`'s stdio pipes
//! (session 44). A command that SIGPIPE ended once its output's copy had
//! failed (a full disk) exited 141, not the 1 of a failed copy; stdin's
//! copy read a regular file up to 128 KiB past what the command read and
//! left the caller's offset there (`(unifs run … read; cat) < file` lost
//! data); and kcmp's fallback (a kernel or seccomp filter without kcmp)
//! had no test, and `>> f 2>> f` (two opens, both appending) mixed the
//! order of its lines. And a named guest's console flood pushed its boot's
//! first lines out of both console logs (now kept in `console.log.boot`).

use crate::guest::harness::{can_run, stderr, TestRoot};
use crate::review_s44_consolerev::{dev_full, run_sh_with as run_sh};
use std::io::Read;
use std::process::{Output, Stdio};
use std::time::Duration;

/// `unifs run --init … yes > /dev/full`: the copy fails, closes its pipe,
/// and `yes` (not PID 1 under `--init`, so SIGPIPE reaches it) ends by
/// SIGPIPE. A direct `yes > /dev/full` gets ENOSPC and exits 1; so does
/// the run, saying why. Before: exit 141.
#[test]
fn s45_a_command_sigpipe_ended_after_its_output_failed_exits_1() {
    if !can_run("s45_a_command_sigpipe_ended_after_its_output_failed_exits_1") {
        return;
    }
    let t = TestRoot::new();
    let o = run_sh(&t, &["--init"], "exec yes", |cmd| {
        cmd.stdout(dev_full()).stderr(Stdio::piped());
    });
    let said = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(said.contains("No space left on device"), "{said}");
}

/// Guard: a command that SIGPIPE ended with its output all written (a
/// pipe of its own, or here a `kill -PIPE`) keeps its 141: only a failed
/// copy makes it 1.
#[test]
fn s45_a_sigpipe_of_the_commands_own_stays_141() {
    if !can_run("s45_a_sigpipe_of_the_commands_own_stays_141") {
        return;
    }
    let t = TestRoot::new();
    let o = run_sh(&t, &["--init"], "kill -PIPE $$", |cmd| {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    });
    assert_eq!(o.status.code(), Some(141), "{}", stderr(&o));
}

/// The numbered lines 1 to 50000 (some 290 KiB: more than the copy's
/// read-ahead).
pub(crate) fn numbered() -> Vec<u8> {
    (1..=50000)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// `(unifs run … -- sh -c SCRIPT; cat) < file`: what the run printed, and
/// what a later reader of the same open file reads on from its offset.
fn run_then_cat(script: &str) -> (Output, Vec<u8>) {
    let t = TestRoot::new();
    let path = t.dir.path().join("input");
    std::fs::write(&path, numbered()).unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let stdin = file.try_clone().unwrap();
    let o = run_sh(&t, &[], script, |cmd| {
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    });
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    (o, rest)
}

/// `(unifs run … sh -c 'read l; echo $l'; cat) < file`: `read` takes one
/// line off the pipe (byte by byte), and `cat` goes on from the second, as
/// with `(sh -c 'read l; echo $l'; cat) < file` on the host. Before: the
/// copy had read ahead, and `cat` began some 128 KiB on (line 23698).
#[test]
fn s45_a_file_stdin_is_left_where_the_command_stopped_reading() {
    if !can_run("s45_a_file_stdin_is_left_where_the_command_stopped_reading") {
        return;
    }
    let (o, rest) = run_then_cat("read l; echo \"$l\"");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut got = o.stdout.clone();
    got.extend_from_slice(&rest);
    let next = String::from_utf8_lossy(&rest[..rest.len().min(20)]).into_owned();
    assert!(got == numbered(), "the rest began at {next:?}");
}

/// A command that reads none of its stdin leaves the file where it was.
/// Before: read ahead by the copy, 128 KiB on.
#[test]
fn s45_a_file_stdin_the_command_never_reads_stays_at_its_start() {
    if !can_run("s45_a_file_stdin_the_command_never_reads_stays_at_its_start") {
        return;
    }
    let (o, rest) = run_then_cat("exit 0");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(rest.len(), numbered().len());
}

/// Guard: a command that reads it all leaves nothing to read on.
#[test]
fn s45_a_file_stdin_read_to_its_end_stays_at_its_end() {
    if !can_run("s45_a_file_stdin_read_to_its_end_stays_at_its_end") {
        return;
    }
    let (o, rest) = run_then_cat("wc -c");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        numbered().len().to_string()
    );
    assert!(rest.is_empty(), "{} bytes left", rest.len());
}

/// How stdout and stderr were told apart: kcmp, or its fallback.
const BOTH_WAYS: [bool; 2] = [false, true];

/// `unifs run` of `script`, its stdout and stderr `out` and `err`, with
/// kcmp (`no_kcmp` false) or its fallback (hook UNIFS_TEST_NO_KCMP).
fn run_to(
    t: &TestRoot,
    no_kcmp: bool,
    script: &str,
    out: std::fs::File,
    err: std::fs::File,
) -> Output {
    run_sh(t, &[], script, |cmd| {
        if no_kcmp {
            cmd.env("UNIFS_TEST_NO_KCMP", "1");
        }
        cmd.stdout(out).stderr(err);
    })
}

/// Both ways: a script alternating 3000 lines of stdout and stderr, run
/// with the two files `open` gives for the file at its path, leaves them
/// there in the order it wrote them.
fn lines_stay_in_order(open: impl Fn(&std::path::Path) -> (std::fs::File, std::fs::File)) {
    let n = 3000;
    let script =
        format!("i=0; while [ $i -lt {n} ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done");
    let expected: String = (0..n).map(|i| format!("out-{i}\nerr-{i}\n")).collect();
    for no_kcmp in BOTH_WAYS {
        let t = TestRoot::new();
        let path = t.dir.path().join("out.log");
        let (out, err) = open(&path);
        let o = run_to(&t, no_kcmp, &script, out, err);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let wrote = std::fs::read_to_string(&path).unwrap();
        let first_off = wrote
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b);
        assert!(
            wrote == expected,
            "no_kcmp {no_kcmp}: first line out of order: {first_off:?}"
        );
    }
}

/// Guard of the fallback: `> out 2>&1` (one description) keeps the order
/// of its lines without kcmp as with it. Breaks when the fallback's probe
/// does (an `O_NONBLOCK` set on stdout that stderr does not show).
#[test]
fn s45_one_file_for_stdout_and_stderr_shares_a_pipe_both_ways() {
    if !can_run("s45_one_file_for_stdout_and_stderr_shares_a_pipe_both_ways") {
        return;
    }
    lines_stay_in_order(|path| {
        let file = std::fs::File::create(path).unwrap();
        (file.try_clone().unwrap(), file)
    });
}

/// Guard: `2> err > out`, two files, each gets its own lines, both ways.
#[test]
fn s45_two_files_for_stdout_and_stderr_get_their_own_lines_both_ways() {
    if !can_run("s45_two_files_for_stdout_and_stderr_get_their_own_lines_both_ways") {
        return;
    }
    for no_kcmp in BOTH_WAYS {
        let t = TestRoot::new();
        let (out, err) = (t.dir.path().join("out"), t.dir.path().join("err"));
        let create = |p: &std::path::Path| std::fs::File::create(p).unwrap();
        let script = "echo to-out; echo to-err >&2";
        let o = run_to(&t, no_kcmp, script, create(&out), create(&err));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let read = |p| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            (read(&out), read(&err)),
            ("to-out\n".into(), "to-err\n".into())
        );
    }
}

/// `>> f 2>> f`: two opens of one file, both appending. Written directly,
/// each line lands at the end when written, so in the order written; one
/// pipe and copy keeps that order, both ways. Before: two pipes, two
/// copies, lines out of order (with kcmp; without it, by chance).
#[test]
fn s45_two_appending_opens_of_one_file_share_a_pipe_both_ways() {
    if !can_run("s45_two_appending_opens_of_one_file_share_a_pipe_both_ways") {
        return;
    }
    lines_stay_in_order(|path| {
        let append = || {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .unwrap()
        };
        (append(), append())
    });
}

/// Guard of the fallback: `> f 2> f`, two opens of one file that do not
/// append, each write at its own offset, as directly: `echo out; echo
/// ERR >&2` leaves 4 bytes (the second write over the first), not both
/// lines.
/// The fallback before (same file, flags and offset: two such opens look
/// alike) joined them into one pipe and the file held 8.
#[test]
fn s45_two_opens_of_one_file_keep_their_offsets_both_ways() {
    if !can_run("s45_two_opens_of_one_file_keep_their_offsets_both_ways") {
        return;
    }
    for no_kcmp in BOTH_WAYS {
        let t = TestRoot::new();
        let path = t.dir.path().join("f");
        let create = || std::fs::File::create(&path).unwrap();
        let (out, err) = (create(), create());
        let o = run_to(&t, no_kcmp, "echo out; echo ERR >&2", out, err);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let wrote = std::fs::read_to_string(&path).unwrap();
        assert_eq!(wrote.len(), 4, "no_kcmp {no_kcmp}: {wrote:?}");
    }
}

/// A named guest whose init writes its boot's first line, then floods its
/// console past both logs' 16 MiB: the first line is pushed out of
/// `console.log` and `console.log.1`, but `console.log.boot` keeps the
/// boot's first 64 KiB (0600), as journald keeps a boot's first lines.
/// Before: no such file, the line lost.
#[test]
fn s45_a_flood_leaves_the_boots_first_lines_in_console_log_boot() {
    if !can_run("s45_a_flood_leaves_the_boots_first_lines_in_console_log_boot") {
        return;
    }
    let init = "[\"/bin/sh\", \"-c\", \"echo boot-first-line; \
                yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 18000000; \
                echo flood-done; exec sleep 1000\"]";
    let g = crate::guest::named::Guest::new("s45boot", init, true);
    crate::guest::harness::ok(&g.unifs(&["start", &g.name]));
    let dir = g.run_dir.join(&g.name);
    let log = dir.join("console.log");
    // The flood is paced by the keeper's copy: bounded, generously for a
    // loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !std::fs::read(&log)
        .unwrap_or_default()
        .ends_with(b"flood-done\n")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood did not end in 180 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    crate::guest::harness::ok(&g.unifs(&["stop", &g.name]));
    let has_first = |p: &std::path::Path| {
        let bytes = std::fs::read(p).unwrap_or_default();
        bytes.windows(15).any(|w| w == b"boot-first-line")
    };
    // The premise: the flood pushed it out of both logs.
    assert!(!has_first(&log) && !has_first(&dir.join("console.log.1")));
    let boot = dir.join("console.log.boot");
    let kept = std::fs::read(&boot).unwrap_or_default();
    assert!(
        kept.starts_with(b"boot-first-line\n"),
        "{:?}",
        &kept[..kept.len().min(40)]
    );
    assert_eq!(kept.len(), 64 << 10);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&boot).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
}
