//! Review of the store as backup tools and operators use it (review s9).

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// A host `chmod`, `chown`, `touch` or `setfattr` on a guest path (not
/// through a mount) changes the store object every guest links. A later
/// unify must not link other guests' intact files to that object: each
/// would silently take the changed mode, owner, mtime or xattrs.
#[test]
fn unify_does_not_link_files_to_an_object_changed_around_the_store() {
    if !require_root("unify_does_not_link_files_to_an_object_changed_around_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for g in [&a, &b] {
        file(g, "usr/mode", &bytes(1, 5000), 0o644);
        file(g, "usr/mtime", &bytes(2, 5000), 0o644);
        file(g, "usr/xattr", &bytes(3, 5000), 0o644);
        file(g, "usr/fine", &bytes(4, 5000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    // The operator changes a's files on the host: the objects change.
    fs::set_permissions(a.join("usr/mode"), fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&a.join("usr/mtime"), MTIME + 3600);
    set_xattr(&a.join("usr/xattr"), "user.changed", b"1");
    // A new guest with the original files.
    let c = dir.path().join("c");
    for (rel, seed) in [
        ("usr/mode", 1),
        ("usr/mtime", 2),
        ("usr/xattr", 3),
        ("usr/fine", 4),
    ] {
        file(&c, rel, &bytes(seed, 5000), 0o644);
    }
    let before = snapshot(&c);
    let out = unifs(&store, &[&"unify", &"--json", &c]);
    let summary = unify_summary(&out);
    assert_invisible(&before, &snapshot(&c), "unify of c");
    assert_eq!(summary["files_linked"], 1, "{summary}");
    let problems = summary["problems"].to_string();
    for rel in ["usr/mode", "usr/mtime", "usr/xattr"] {
        assert_eq!(
            fs::metadata(c.join(rel)).unwrap().nlink(),
            1,
            "{rel} linked"
        );
        assert!(problems.contains(rel), "{rel} not reported: {problems}");
    }
    assert!(problems.contains("store verify"), "{problems}");
}
