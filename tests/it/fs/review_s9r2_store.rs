//! Review s9, second round: the unify, store and backup changes of the
//! first round, as operators hit them.

use super::harness::Mount;
use crate::common::require_root;
use crate::tree::{assert_verify_clean, bytes, file, ino, unifs, unify_json};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A guest whose unifs mount over its own directory lost its daemon (killed,
/// crashed: every access fails with ENOTCONN) is still a unifs mount.
/// Named on the command line it was refused as "not a directory; unify
/// takes guest root directories" (the directory could not be stat'ed),
/// which sends the operator looking for the wrong thing; it gets the error
/// a live mount gets. (`--all` skips it, as it does a live one.)
#[test]
fn unify_of_a_guest_whose_mount_over_it_lost_its_daemon_says_so() {
    if !require_root("review_s9r2_unify_of_a_guest_with_a_dead_mount") {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let store = lab.path().join("store");
    let (a, b) = (lab.path().join("a"), lab.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/lib/f", &bytes(1, 5_000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    let mut over = Mount::start(&store, &a, &a, &[]);
    let mut daemon = over.child.take().unwrap();
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert_eq!(
        fs::metadata(&a).unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    file(&b, "usr/lib/g1", &bytes(2, 6_000), 0o644);
    file(&b, "usr/lib/g2", &bytes(2, 6_000), 0o644);
    let out = unifs(&store, &[&"unify", &"--all"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(23), "{err}");
    assert!(err.contains("has a unifs mount over it"), "{err}");
    assert_eq!(ino(&b.join("usr/lib/g1")), ino(&b.join("usr/lib/g2")));
    // Named, it is refused as a live one is, not with ENOTCONN.
    let out = unifs(&store, &[&"unify", &a, &b]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("has a unifs mount over it"), "{err}");
    drop(over);
}

