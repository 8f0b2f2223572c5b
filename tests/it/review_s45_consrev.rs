//! Session 45 (consrev): review of consolefix's stdio changes. `guest
//! exec`'s copy of stdin read a regular file ahead of its command (up to
//! the pipe's 64 KiB and 8 KiB more) and left the caller's offset there, as
//! `unifs run`'s did before consolefix: `(unifs guest exec … read; cat) <
//! file` lost what was read ahead.

use crate::guest::harness::{can_run, ok, stderr, stdout, wait_bounded, KillOnDrop};
use crate::guest::named::Guest;
use crate::review_s45_consolefix::numbered;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

/// `unifs guest exec` of `sh -c script` in `g` with stdin `file` (its
/// open file, offset shared), its output piped; waited for 60 s at most.
pub(crate) fn exec_sh_reading(
    g: &Guest,
    script: &str,
    file: &std::fs::File,
) -> std::process::Output {
    let mut cmd = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", script]);
    cmd.stdin(file.try_clone().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_bounded(
        KillOnDrop(Some(cmd.spawn().unwrap())),
        Duration::from_secs(60),
    )
}

/// `(unifs guest exec g -- sh -c 'read l; echo $l'; cat) < file`: `read`
/// takes the first line off the pipe (byte by byte), and `cat` goes on
/// from the second, as with `(sh -c 'read l; echo $l'; cat) < file` on the
/// host. Before: `cat` began some 72 KiB on (the copy had read ahead).
#[test]
fn s45_guest_exec_leaves_a_stdin_file_just_past_what_the_command_read() {
    if !can_run("s45_guest_exec_leaves_a_stdin_file_just_past_what_the_command_read") {
        return;
    }
    let g = Guest::new("s45cx", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let path = g.t.dir.path().join("input");
    std::fs::write(&path, numbered()).unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let o = exec_sh_reading(&g, "read l; echo $l", &file);
    assert_eq!(stdout(&o), "1\n", "{}", stderr(&o));
    let mut rest = Vec::new();
    file.read_to_end(&mut rest).unwrap();
    let want = &numbered()[2..];
    let first = String::from_utf8_lossy(&rest[..rest.len().min(20)]).into_owned();
    assert!(rest == want, "cat read on from {first:?}, not \"2\\n…\"");
}
