//! `unifs mount` over a mountpoint in use (review s19): `mount -a` run
//! again, and a mount whose daemon died after an earlier look at it.

use super::harness::*;
use crate::common::{require_root, unifs_bin};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn unifs(store: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(unifs_bin());
    c.arg("--store").arg(store);
    for a in args {
        c.arg(a.as_ref());
    }
    c.output().expect("run unifs")
}

/// A mount whose daemon died is named as such even when something looked
/// at the mountpoint while it lived (a refused `unifs mount`, a second
/// `mount -a`): the stat is answered from the attributes the kernel keeps
/// of the mount's root, so it never saw ENOTCONN, and the message was
/// "something is mounted there". statfs is never cached.
#[test]
fn review_s19_a_dead_mount_looked_at_before_is_named_as_such() {
    if !require_root("review_s19_a_dead_mount_looked_at_before_is_named_as_such") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let other = w.dir("other");
    fs::write(g.join("motd"), b"hello\n").unwrap();
    let mut m = w.mount(&g, "m", &[]);
    // A look while it lives: a refused mount of another guest.
    let out = unifs(&w.store, &[&"mount", &other, &m.dir]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("something is mounted there"), "{err}");
    let child = m.child.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    for guest in [&g, &other] {
        let out = unifs(&w.store, &[&"mount", guest, &m.dir]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("whose daemon is gone") && err.contains("unifs umount"),
            "{err}"
        );
    }
    let out = unifs(&w.store, &[&"umount", &m.dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&m.dir));
}
