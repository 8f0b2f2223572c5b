//! Review s39 (devrev) of `--device`: one host device given at two paths
//! (a host symlink to it, as /dev/char/M:m or /dev/serial/by-id links)
//! must not let a writable entry undo a `:ro` one's cgroup deny.

use crate::guest::harness::{can_run, stderr, stdout, TestRoot};
use std::path::{Path, PathBuf};

const TUN: &str = "/dev/net/tun";

/// A symlink in the host's /dev to `to`, removed when dropped (named by
/// our pid: other tests and helpers share /dev).
struct HostLink(PathBuf);

impl HostLink {
    fn new(to: &str) -> HostLink {
        let at = PathBuf::from(format!("/dev/s39-devrev-{}", std::process::id()));
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(to, &at).unwrap();
        HostLink(at)
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `/dev/net/tun:ro` and the same node through a host symlink without
/// `:ro`: the second's `c 10:200 rwm` allow would lift the first's deny,
/// so the guest could write to the "read-only" device. Refused instead.
#[test]
fn s39_same_device_at_two_paths_is_refused() {
    let test = "s39_same_device_at_two_paths_is_refused";
    if !can_run(test) || !Path::new(TUN).exists() {
        return;
    }
    let t = TestRoot::new();
    let link = HostLink::new("net/tun");
    let other = link.0.to_string_lossy().into_owned();
    let o = t.sh(
        &["--device", "/dev/net/tun:ro", "--device", &other],
        "exec 4>/dev/net/tun && echo written",
    );
    assert!(!stdout(&o).contains("written"), "{}", stderr(&o));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&other) && err.contains(TUN) && err.contains("same device"),
        "{err}"
    );
}

/// `/dev/fuse:ro` failed the start with "cannot serve guest root …
/// through the overlay: Operation not permitted": the guest's overlay
/// daemon is in its devices group, whose deny it met. Refused, saying why.
#[test]
fn s39_fuse_read_only_is_refused_clearly() {
    let test = "s39_fuse_read_only_is_refused_clearly";
    if !can_run(test) || !Path::new("/dev/fuse").exists() {
        return;
    }
    let t = TestRoot::new();
    let o = t.sh(&["--device", "/dev/fuse:ro"], "echo started");
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("/dev/fuse") && err.contains("without :ro") && !err.contains("overlay:"),
        "{err}"
    );
}
