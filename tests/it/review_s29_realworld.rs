//! Session 29's real-world review: Debian 12 roots made with debootstrap
//! (one with perl, one with python3 and sysvinit) unified into a store,
//! started as named guests and changed from inside as an admin does
//! (dpkg, apt-get, update-alternatives, useradd, ldconfig, sed -i, tar,
//! chmod -R, setfattr, log rotation), then compared with the same work
//! done on plain copies. Each test here keeps a defect that review met,
//! made again with a small tree.

use crate::common::require_root;
use crate::fs::harness::{wait_until, World};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A shell with a handler for SIGUSR1, sent it without pause while it opens
/// each path for writing: every open of a shared file waits for the
/// daemon's copy, and a signal meanwhile makes the kernel send the daemon
/// a FUSE_INTERRUPT for it. Prints how many signals the shell caught.
const OPEN_UNDER_SIGNALS: &str = r#"trap 'n=$((n+1))' USR1
(while kill -USR1 $$ 2>/dev/null; do :; done) & k=$!
for f in "$@"; do exec 3<>"$f"; exec 3>&-; done
kill $k; wait $k; echo "${n:-0}""#;

/// A Debian guest booting sysvinit left `ERROR Failed to send FUSE reply:
/// No such file or directory (os error 2)` lines in its `mount.log`, and
/// `guest status` then pointed the operator at them as warnings of its
/// overlay daemon. That is the kernel's answer to the daemon's reply to an
/// interrupt whose request another of its threads was still serving (each
/// thread reads a /dev/fuse fd of its own, and the kernel looks the request
/// up on the fd the reply comes on), or had answered already: nothing went
/// wrong, and libfuse keeps it out of its log too.
#[test]
fn an_interrupted_request_leaves_no_error_in_the_mount_log() {
    if !require_root("an_interrupted_request_leaves_no_error_in_the_mount_log") {
        return;
    }
    let w = World::new();
    let (g, other) = (w.dir("g"), w.dir("other"));
    let big = vec![7u8; 24 << 20];
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    for n in &names {
        w.shared(&big, &[g.join(n), other.join(n)]);
    }
    let m = w.mount(&g, "m", &[]);
    let paths: Vec<PathBuf> = names.iter().map(|n| m.path(n)).collect();
    let out = Command::new("busybox")
        .args(["sh", "-c", OPEN_UNDER_SIGNALS, "sh"])
        .args(&paths)
        .output()
        .expect("run busybox sh");
    let caught = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && caught.trim().parse::<u32>().unwrap_or(0) > 0,
        "the shell caught no signal: {out:?}"
    );
    // The daemon's answer to an interrupt may come a moment after the open.
    let log = || fs::read_to_string(&m.log).unwrap_or_default();
    wait_until(Duration::from_millis(500), || {
        log().contains("Failed to send")
    });
    let log = log();
    assert!(
        !log.contains("Failed to send FUSE reply"),
        "an interrupted request left an error in the mount's log:\n{log}"
    );
    for n in &names {
        assert_eq!(fs::read(other.join(n)).unwrap().len(), big.len());
    }
}
