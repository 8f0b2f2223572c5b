//! Session 48, `guest exec`'s and `unifs run`'s stdin that is a regular
//! file (task "stdio4"): `unifs run`'s stdin that is its stdout too
//! (`<> f >&0`), whose offset the copy moved on past what it read only
//! after the command could read it and write its output over it. (The
//! drain without `/proc` this session also fixed is now the drain's only
//! way, splice: `review_s47_consrev3` tests it; stdiorev dropped this
//! module's copy of that test with its hook.)

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, stderr, wait_bounded, KillOnDrop, TestRoot};
use std::io::Seek;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What both tests' command runs: a line read, and an output written.
pub(crate) const READ_A_LINE_AND_SAY_IT: &str = "read l; echo \"got $l\"";

/// `cmd` (a [`READ_A_LINE_AND_SAY_IT`] through `unifs run` or `guest
/// exec`) run with stdin and stdout one open file, `dir/f`, of three lines,
/// the copy of stdin held 2 s after each write to the pipe
/// (UNIFS_TEST_STDIN_COPY_WRITTEN_PAUSE), so that the command reads and
/// writes before the copy could move the offset on after the fact. Checks
/// that the output landed after the input and that the offset ends just
/// past what the command read and wrote (6 read, the 10 written at 18
/// make 28, less the 12 left unread: 16).
pub(crate) fn output_lands_after_its_input(dir: &Path, mut cmd: Command) {
    let path = dir.join("f");
    std::fs::write(&path, "line1\nline2\nline3\n").unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    cmd.env("UNIFS_TEST_STDIN_COPY_WRITTEN_PAUSE", "2000")
        .stdin(f.try_clone().unwrap())
        .stdout(f.try_clone().unwrap())
        .stderr(Stdio::piped());
    let o = wait_bounded(
        KillOnDrop(Some(cmd.spawn().unwrap())),
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "line1\nline2\nline3\ngot line1\n"
    );
    let mut f = f;
    assert_eq!(f.stream_position().unwrap(), 16);
}

/// `unifs run … sh -c 'read l; echo "got $l"' <> f >&0`: stdin and stdout
/// one open file, which the copy of stdin moves on past what it reads, so
/// that the command's output lands after its input. The copy moved it on
/// only once it had written to the pipe: a command that read and wrote
/// before then (its output copied to the file at once) had its output
/// written over its input, at offset 0. Before: the file was
/// "got line1\n2\nline3\n" (the input overwritten), 18 bytes; now its
/// input and the output after it, and the offset just past what the
/// command read and wrote ([`output_lands_after_its_input`]).
#[test]
fn s48_run_output_through_its_stdin_file_never_lands_over_its_input() {
    if !can_run("s48_run_output_through_its_stdin_file_never_lands_over_its_input") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root()).args([
        "--",
        "/bin/sh",
        "-c",
        READ_A_LINE_AND_SAY_IT,
    ]);
    output_lands_after_its_input(t.dir.path(), cmd);
}
