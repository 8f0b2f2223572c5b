//! Session 48, review of "stdio4" (task "stdiorev"): `guest exec`'s stdin
//! that is its stdout too (`<> f >&0`) had the fix stdio4 made for
//! `unifs run` only: its copy never moved the offset on, so the output
//! `exec` wrote through the one open file landed over the input.

use crate::guest::harness::{can_run, ok, stderr, wait_bounded, KillOnDrop};
use crate::guest::named::Guest;
use std::io::Seek;
use std::process::Stdio;
use std::time::Duration;

/// `unifs guest exec g -- sh -c 'read l; echo "got $l"' <> f >&0`: stdin
/// and stdout one open file, as on the host, where the output lands after
/// the line read (the offset is there) and the offset ends past both. The
/// copy is held 2 s after each write to the pipe
/// (UNIFS_TEST_STDIN_COPY_WRITTEN_PAUSE), so that the command reads and
/// writes before the copy could move the offset after the fact. Before:
/// the file was "got line1\n2\nline3\n" (the output written over the input
/// at offset 0) and the offset 16; now the input and the output after it,
/// and the offset 16 (6 read, the 10 written at 18 make 28, less the 12
/// left unread), as under `unifs run`
/// (`s48_run_output_through_its_stdin_file_never_lands_over_its_input`).
#[test]
fn s48_exec_output_through_its_stdin_file_never_lands_over_its_input() {
    if !can_run("s48_exec_output_through_its_stdin_file_never_lands_over_its_input") {
        return;
    }
    let g = Guest::new("s48rvo", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let path = g.t.dir.path().join("f");
    std::fs::write(&path, "line1\nline2\nline3\n").unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let script = "read l; echo \"got $l\"";
    let mut cmd = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", script]);
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
