//! Session 30's review of real applications on a guest's files: sqlite3
//! (WAL, two writers, VACUUM), git (gc, clone --local), rsync -aHAX,
//! tar, make and gcc, python's venv and byte-compiling, and the system
//! calls such programs use, run through a mount of one of two guests
//! unified against one store and compared with the same steps on a plain
//! directory. Each test here keeps a defect that review met.

use crate::common::require_root;
use crate::fs::harness::World;
use std::fs::{self, File};
use std::os::fd::AsRawFd;

/// `poll` of a file as a program's event loop or `bash`'s `read -t 0 <
/// FILE` makes it: what the kernel answers for a file of a local
/// filesystem, readable and writable at once.
fn poll_now(f: &File) -> i16 {
    let mut p = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    assert_eq!(n, 1, "poll: {}", std::io::Error::last_os_error());
    p.revents
}

/// A guest's `read -t 0 x < FILE` (bash asks with select whether input
/// waits) left `WARN [Not Implemented] poll(ino: …)` in the mount's log,
/// six lines of debug output, and `guest status` then told the operator
/// that the guest's overlay daemon had logged warnings. The kernel asks the
/// daemon once per mount whether it polls files itself; a filesystem that
/// does not (no file of the mount ever blocks) answers ENOSYS, and the
/// kernel answers every poll as for a local file from then on.
#[test]
fn polling_a_file_leaves_no_warning_in_the_mount_log() {
    if !require_root("polling_a_file_leaves_no_warning_in_the_mount_log") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    w.shared(b"shared\n", &[g.join("shared"), other.join("shared")]);
    fs::write(g.join("own"), b"own\n").unwrap();
    let m = w.mount(&g, "m", &[]);
    for name in ["shared", "own"] {
        let local = File::open(other.join("shared")).unwrap();
        let through = File::open(m.path(name)).unwrap();
        assert_eq!(poll_now(&through), poll_now(&local), "{name}");
    }
    let log = fs::read_to_string(&m.log).unwrap();
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "polling a file left a warning in the mount's log:\n{log}"
    );
}
