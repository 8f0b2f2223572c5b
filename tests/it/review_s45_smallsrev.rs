//! Review (session 45) of "keepsmalls": an opener FUSE cannot name (pid 0)
//! taken as running, tried for real with a daemon in a PID namespace of
//! its own.

use crate::fs::harness::{Mount, World};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Opens `path` O_RDONLY|O_TRUNC (the open that the daemon refuses with
/// ETXTBSY while the file runs); the errno if it fails.
fn truncating_open(path: &std::path::Path) -> Option<i32> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_TRUNC)
        .open(path);
    opened.err().map(|e| e.raw_os_error().unwrap_or(0))
}

/// Guard (the behaviour was right): a program run by a process the daemon
/// cannot name (the daemon in a PID namespace of its own, `unshare -pf`,
/// as `unifs mount` in a container: the host's processes are pid 0 to it,
/// which b071695 takes as running) is refused an O_RDONLY|O_TRUNC open
/// while it runs, and once that process is killed (SIGKILL: no close of
/// its own, and an exec's file has no fd whose close would send a FLUSH)
/// the kernel's RELEASE lets go of its handle: nothing holds the program
/// for good. Fails (ETXTBSY to the end) with `Overlay::release` keeping
/// the handle.
#[test]
fn s45_a_program_an_unnamed_process_ran_is_let_go_once_it_is_killed() {
    let test = "s45_a_program_an_unnamed_process_ran_is_let_go_once_it_is_killed";
    if !crate::common::require_root(test) || !crate::guest::harness::can_run(test) {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let mp = w.dir("mp");
    // A static program: busybox, as `sleep`.
    std::fs::copy("/bin/busybox", g.join("sleep")).unwrap();
    let log = std::fs::File::create(w.tmp.path().join("mp.log")).unwrap();
    let m = Mount::start_under(
        &["unshare", "--pid", "--fork", "--kill-child"],
        &w.store,
        &g,
        &mp,
        &[],
        log,
    );
    let prog = m.path("sleep");
    let mut sleeper = crate::guest::harness::KillOnDrop(Some(
        Command::new(&prog)
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    // Running (spawn returned: its exec has opened the file): refused.
    assert_eq!(
        truncating_open(&prog),
        Some(libc::ETXTBSY),
        "an O_TRUNC open of {} while it ran",
        prog.display()
    );
    let mut child = sleeper.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let mut last = None;
    let let_go = crate::fs::harness::wait_until(Duration::from_secs(30), || {
        last = truncating_open(&prog);
        last.is_none()
    });
    assert!(
        let_go,
        "{} was still held 30 s after the process running it was killed: {:?}",
        prog.display(),
        last.map(std::io::Error::from_raw_os_error)
    );
    drop(m);
}
