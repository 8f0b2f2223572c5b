//! Review s38 (privops): what the mount's daemon, root with every
//! capability, does for a caller that the caller could not do itself.
//!
//! - `-o nodefault_permissions,noallow_other` mounted, and a root process
//!   with no capability left (a service's `CapabilityBoundingSet=`, a
//!   container's `--cap-drop ALL`) then read, wrote, chowned and chmodded
//!   other users' files through it, as the daemon checks nothing itself.
//!   The option is refused now.
//! - With the kernel's checks on (always), a caller gets through the mount
//!   what it gets on ext4, as uid 1000 and as a root without capabilities:
//!   flags, `trusted.`/`security.` xattrs, ACLs, device nodes, hardlinks
//!   (protected_hardlinks), sticky directories, explicit times, O_NOATIME,
//!   set-group-ID directories, and set-ID bits and file capabilities taken
//!   off by a passthrough write.

use crate::common::require_root;
use crate::fs::errors::{c, run_by, Op, Who};
use crate::fs::harness::*;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

/// A file with this owner (uid and gid) and mode.
fn file(base: &Path, rel: &str, owner: u32, mode: u32) {
    let p = base.join(rel);
    fs::write(&p, b"x").unwrap();
    chown(&p, Some(owner), Some(owner)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A file capability (VFS_CAP_REVISION_2, effective, cap_net_raw).
fn file_capability() -> Vec<u8> {
    let words: [u32; 5] = [0x0200_0001, 1 << 13, 0, 0, 0];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// What the callers act on: uid 2000's files (neither caller's), one of
/// the caller's own (`mine`), a sticky directory of uid 3000 and a
/// set-group-ID directory of group 2000 (neither caller is in it).
fn build(base: &Path, me: u32) {
    file(base, "secret", 2000, 0o600);
    file(base, "other", 2000, 0o644);
    file(base, "otherw", 2000, 0o666);
    file(base, "mine", me, 0o644);
    file(base, "suid", 2000, 0o4777);
    file(base, "sgid", 2000, 0o2666);
    file(base, "capf", 2000, 0o666);
    set_xattr(
        &base.join("capf"),
        "security.capability",
        &file_capability(),
    );
    fs::create_dir(base.join("tmp")).unwrap();
    chown(base.join("tmp"), Some(3000), Some(3000)).unwrap();
    fs::set_permissions(base.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    file(base, "tmp/victim", 2000, 0o666);
    fs::create_dir(base.join("sg")).unwrap();
    chown(base.join("sg"), Some(0), Some(2000)).unwrap();
    fs::set_permissions(base.join("sg"), fs::Permissions::from_mode(0o2777)).unwrap();
}

/// A minimal access ACL (user::rw- group::r-- other::r--), as
/// system.posix_acl_access holds it.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(1u16, 6u16), (4, 4), (0x20, 4)] {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(u32::MAX.to_le_bytes());
    }
    v
}

fn name(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// The operations that need a privilege neither caller has: on ext4 each
/// fails (checked), and through the mount each must fail alike.
fn refused_ops(b: &Path) -> Vec<(&'static str, Op)> {
    vec![
        (
            "read a 0600 file of another uid",
            Op::Open(c(b, "secret"), libc::O_RDONLY),
        ),
        (
            "write a 0644 file of another uid",
            Op::Write(c(b, "other"), b"y"),
        ),
        ("chown another uid's file", Op::Chown(c(b, "other"))),
        ("chmod another uid's file", Op::Chmod(c(b, "otherw"))),
        ("chown my own file away", Op::Chown(c(b, "mine"))),
        (
            "explicit times on a writable file of another uid",
            Op::Utimes(c(b, "otherw"), false),
        ),
        (
            "O_NOATIME open of another uid's file",
            Op::Open(c(b, "other"), libc::O_RDONLY | libc::O_NOATIME),
        ),
        (
            "hardlink a 0600 file of another uid",
            Op::Link(c(b, "secret"), c(b, "tmp/l1")),
        ),
        (
            "hardlink a 0644 file of another uid",
            Op::Link(c(b, "other"), c(b, "tmp/l2")),
        ),
        (
            "unlink another uid's file in a sticky dir",
            Op::Unlink(c(b, "tmp/victim")),
        ),
        (
            "rename another uid's file in a sticky dir",
            Op::Rename(c(b, "tmp/victim"), c(b, "tmp/moved"), 0),
        ),
        ("mknod a character device", Op::MknodDev(c(b, "tmp/null"))),
        (
            "set a trusted. xattr on my file",
            Op::SetXattr(c(b, "mine"), name("trusted.x"), b"1".to_vec()),
        ),
        (
            "set security.capability on my file",
            Op::SetXattr(c(b, "mine"), name("security.capability"), file_capability()),
        ),
        (
            "set an access ACL on another uid's file",
            Op::SetXattr(c(b, "otherw"), name("system.posix_acl_access"), acl()),
        ),
        ("chattr +i my file", Op::AddFlags(c(b, "mine"), 0x10)),
        ("chattr +a my file", Op::AddFlags(c(b, "mine"), 0x20)),
        (
            "chattr +d another uid's file",
            Op::AddFlags(c(b, "other"), 0x40),
        ),
    ]
}

/// What the caller may do, with results (modes, groups, xattr lists) to
/// compare: set-group-ID inheritance and clearing, set-ID bits and a file
/// capability taken off by a (passed through) write.
fn allowed_ops(b: &Path) -> Vec<(&'static str, Op)> {
    vec![
        (
            "touch a writable file of another uid",
            Op::Utimes(c(b, "otherw"), true),
        ),
        (
            "O_NOATIME open of my file",
            Op::Open(c(b, "mine"), libc::O_RDONLY | libc::O_NOATIME),
        ),
        ("chattr +d my file", Op::AddFlags(c(b, "mine"), 0x40)),
        ("umask 0", Op::Umask(0)),
        (
            "mkdir in a set-group-ID dir",
            Op::MkdirMode(c(b, "sg/d"), 0o755),
        ),
        ("the new dir's mode and group", Op::ModeGid(c(b, "sg/d"))),
        (
            "create g+s in a set-group-ID dir",
            Op::CreateMode(c(b, "sg/f"), 0o2755),
        ),
        ("the new file's mode and group", Op::ModeGid(c(b, "sg/f"))),
        (
            "chmod g+s by a non-member",
            Op::ChmodMode(c(b, "sg/f"), 0o2755),
        ),
        ("the file's mode after chmod", Op::ModeGid(c(b, "sg/f"))),
        (
            "chmod g+s on my dir by a non-member",
            Op::ChmodMode(c(b, "sg/d"), 0o2755),
        ),
        ("the dir's mode after chmod", Op::ModeGid(c(b, "sg/d"))),
        (
            "write a set-uid file of another uid",
            Op::Overwrite(c(b, "suid"), b"y"),
        ),
        ("the set-uid file's mode after", Op::ModeGid(c(b, "suid"))),
        (
            "write a g+s (no g+x) file of another uid",
            Op::Overwrite(c(b, "sgid"), b"y"),
        ),
        ("the g+s file's mode after", Op::ModeGid(c(b, "sgid"))),
        (
            "write a file with a capability",
            Op::Overwrite(c(b, "capf"), b"y"),
        ),
        (
            "its xattr names' length after",
            Op::ListxattrLen(c(b, "capf")),
        ),
    ]
}

/// The names of the ops that succeeded (errno 0).
fn succeeded(ops: &[(&'static str, Op)], errnos: &[i32]) -> Vec<&'static str> {
    ops.iter()
        .zip(errnos)
        .filter(|(_, e)| **e == 0)
        .map(|((name, _), _)| *name)
        .collect()
}

/// Runs the ops as `who` on a plain ext4 directory and through a mount of
/// the same tree with default options; returns the differences. With
/// `must_fail`, every op must fail on ext4 (else the tree is wrong).
fn differences(
    who: Who,
    me: u32,
    ops_of: fn(&Path) -> Vec<(&'static str, Op)>,
    must_fail: bool,
) -> Vec<String> {
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    build(&plain, me);
    build(&g, me);
    let m = w.mount(&g, "m", &[]);
    let (want_ops, got_ops) = (ops_of(&plain), ops_of(&m.dir));
    let want = run_by(who, &want_ops);
    let got = run_by(who, &got_ops);
    if must_fail {
        let passed = succeeded(&want_ops, &want);
        assert!(passed.is_empty(), "ext4 let these through: {passed:?}");
    }
    want_ops
        .iter()
        .zip(want.iter().zip(&got))
        .filter(|(_, (w, g))| w != g)
        .map(|((name, _), (w, g))| format!("{name}: ext4 {w}, mount {g}"))
        .collect()
}

fn compare(test: &str, who: Who, me: u32) {
    if !require_root(test) {
        return;
    }
    let mut diffs = differences(who, me, refused_ops, true);
    diffs.extend(differences(who, me, allowed_ops, false));
    assert!(diffs.is_empty(), "differs from ext4:\n{}", diffs.join("\n"));
}

#[test]
fn s38_a_root_without_capabilities_gets_through_the_mount_what_ext4_gives_it() {
    compare(
        "s38_a_root_without_capabilities_gets_through_the_mount_what_ext4_gives_it",
        Who::CaplessRoot,
        0,
    );
}

#[test]
fn s38_another_user_gets_through_the_mount_what_ext4_gives_it() {
    compare(
        "s38_another_user_gets_through_the_mount_what_ext4_gives_it",
        Who::Uid(1000),
        1000,
    );
}

#[test]
fn s38_nodefault_permissions_is_refused_and_says_why() {
    if !require_root("s38_nodefault_permissions_is_refused_and_says_why") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    build(&g, 0);
    let mp = fs::canonicalize(w.dir("m")).unwrap();
    for opts in [
        "nodefault_permissions,noallow_other",
        "nodefault_permissions",
    ] {
        let out = crate::tree::unifs(&w.store, &[&"mount", &"-o", &opts, &g, &mp]);
        if out.status.success() {
            // What the option let a root without capabilities do.
            let ops = refused_ops(&mp);
            let passed = succeeded(&ops, &run_by(Who::CaplessRoot, &ops));
            panic!("-o {opts} mounted; a root without capabilities then did: {passed:?}");
        }
        let err = crate::tree::stderr(&out);
        assert!(
            err.contains("nodefault_permissions is not supported")
                && err.contains("capabilities were dropped"),
            "{err}"
        );
        assert!(!is_mounted(&mp));
    }
    assert_eq!(
        fs::metadata(g.join("secret")).unwrap().permissions().mode() & 0o7777,
        0o600
    );
}
