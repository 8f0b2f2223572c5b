//! Fidelity review (s9): the mount next to a plain directory of the backing
//! filesystem, for what is not a plain read or write.

use super::harness::*;
use crate::common::require_root;
use std::fs;
use std::path::Path;
use std::process::Command;

/// The xattr names `getfattr` lists for `path`, run by root without
/// CAP_SYS_ADMIN (as a guest's root runs: its default capabilities leave
/// it out).
fn names_listed_without_sys_admin(path: &Path) -> String {
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-sys_admin", "--"])
        .args(["getfattr", "-m", "-", "--absolute-names"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "getfattr {}: {out:?}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<_> = text.lines().skip(1).filter(|l| !l.is_empty()).collect();
    names.join(" ")
}

/// A local filesystem lists `trusted.` names only to CAP_SYS_ADMIN, not to
/// uid 0 as such; the mount listed them to every root, so a guest's root
/// (which lacks the capability) saw names it could not read (getfattr -d
/// then failed with "No such attribute").
#[test]
fn trusted_xattr_names_are_not_listed_to_root_without_cap_sys_admin() {
    if !require_root("review_s9_trusted_xattr_names_are_not_listed_to_root_without_sys_admin") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    for base in [&plain, &g] {
        fs::write(base.join("f"), b"f").unwrap();
        set_xattr(&base.join("f"), "trusted.secret", b"x");
        set_xattr(&base.join("f"), "user.tag", b"y");
    }
    let m = w.mount(&g, "m", &[]);
    let want = names_listed_without_sys_admin(&plain.join("f"));
    assert_eq!(want, "user.tag");
    assert_eq!(names_listed_without_sys_admin(&m.path("f")), want);
    // With the capability, as before.
    let all = xattrs(&m.path("f"));
    assert_eq!(all.len(), 2, "{all:?}");
}
