//! POSIX ACLs through the mount, against a plain directory: new entries in
//! a directory with a default ACL got the caller's umask as well (FUSE
//! applies it unless told not to); setting an ACL kept a set-group-ID bit a
//! local filesystem takes off.

use super::errors::{c, run_as, Op};
use super::harness::*;
use crate::common::require_root;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

pub(super) fn setfacl(args: &[&str], path: &Path) {
    let out = Command::new("setfacl")
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "setfacl {args:?}: {out:?}");
}

/// Mode, owner, group and ACL xattrs of a path, as text for the messages.
fn described(path: &Path) -> String {
    let m = fs::symlink_metadata(path).unwrap();
    let acls = Command::new("getfacl")
        .args(["-cpn"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        acls.status.success(),
        "getfacl {}: {acls:?}",
        path.display()
    );
    let acls = String::from_utf8_lossy(&acls.stdout).replace('\n', " ");
    format!("{:o} {}:{} {acls}", m.mode(), m.uid(), m.gid())
}

/// Files, directories and FIFOs made through the mount get the mode and ACLs
/// they get on the backing filesystem itself, for root and another user,
/// with several umasks, in directories with and without a default ACL (and a
/// set-group-ID one). With a default ACL the umask does not apply at all.
#[test]
fn new_entries_get_the_modes_and_acls_of_a_local_filesystem() {
    if !require_root("review_s7_today_new_entries_get_the_modes_and_acls") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    let dirs = ["acldir", "plaindir", "sgacldir"];
    for base in [&plain, &g] {
        for d in dirs {
            fs::create_dir(base.join(d)).unwrap();
            fs::set_permissions(base.join(d), fs::Permissions::from_mode(0o777)).unwrap();
        }
        setfacl(
            &["-d", "-m", "u::rwx,g::rwx,o::rwx,u:daemon:rwx"],
            &base.join("acldir"),
        );
        std::os::unix::fs::chown(base.join("sgacldir"), None, Some(65534)).unwrap();
        fs::set_permissions(base.join("sgacldir"), fs::Permissions::from_mode(0o2777)).unwrap();
        setfacl(
            &["-d", "-m", "u::rwx,g::r-x,o::---"],
            &base.join("sgacldir"),
        );
    }
    let m = w.mount(&g, "m", &[]);
    let mut rels = Vec::new();
    let ops = |b: &Path, uid: u32, rels: &mut Vec<String>| {
        let mut ops = Vec::new();
        for umask in [0o077, 0o022, 0] {
            ops.push(("umask", Op::Umask(umask)));
            for d in dirs {
                let p = |kind: &str| format!("{d}/{kind}.{uid}.{umask:o}");
                for (rel, op) in [
                    (p("f"), Op::CreateMode(c(b, &p("f")), 0o666)),
                    (p("x"), Op::CreateMode(c(b, &p("x")), 0o2775)),
                    (p("d"), Op::MkdirMode(c(b, &p("d")), 0o777)),
                    (p("p"), Op::MkfifoMode(c(b, &p("p")), 0o666)),
                ] {
                    rels.push(rel);
                    ops.push(("create", op));
                }
            }
        }
        ops
    };
    for uid in [0, 65534] {
        let want = run_as(uid, &ops(&plain, uid, &mut rels));
        let got = run_as(uid, &ops(&m.dir, uid, &mut Vec::new()));
        assert!(want.iter().all(|&e| e == 0), "{want:?}");
        assert_eq!(got, want, "errno per op as uid {uid}");
    }
    let mut wrong = Vec::new();
    for rel in &rels {
        let (want, got) = (described(&plain.join(rel)), described(&g.join(rel)));
        if want != got {
            wrong.push(format!("{rel}: {got}, on the backing fs {want}"));
        }
        assert_eq!(described(&m.path(rel)), got, "{rel} through the mount");
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// An access ACL in the xattr format: user::rwx, user:1:r--, group::rwx,
/// mask::rwx, other::r-x.
fn acl_bytes() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 4, 1),
        (0x04, 7, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 5, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The owner of a set-group-ID file whose group it is not in sets an ACL on
/// it: a local filesystem takes the set-group-ID bit off (as a chmod by that
/// user would), through the mount as well, on a private and a shared file
/// (whose store object keeps its mode).
#[test]
fn setting_an_acl_takes_set_group_id_off_as_on_a_local_filesystem() {
    if !require_root("review_s7_today_setting_an_acl_takes_set_group_id_off") {
        return;
    }
    let w = World::new();
    let (plain, g, other) = (w.dir("plain"), w.dir("g"), w.dir("other"));
    for base in [&plain, &g] {
        fs::write(base.join("private"), b"p").unwrap();
    }
    fs::write(plain.join("shared"), b"s").unwrap();
    let obj = w.shared(b"s", &[g.join("shared"), other.join("shared")]);
    for base in [&plain, &g] {
        for f in ["private", "shared"] {
            std::os::unix::fs::chown(base.join(f), Some(65534), Some(0)).unwrap();
            fs::set_permissions(base.join(f), fs::Permissions::from_mode(0o2775)).unwrap();
        }
    }
    let m = w.mount(&g, "m", &[]);
    let name = std::ffi::CString::new("system.posix_acl_access").unwrap();
    let ops = |b: &Path| -> Vec<(&'static str, Op)> {
        ["private", "shared"]
            .iter()
            .map(|f| ("setfacl", Op::SetXattr(c(b, f), name.clone(), acl_bytes())))
            .collect()
    };
    let want = run_as(65534, &ops(&plain));
    assert_eq!(want, vec![0, 0]);
    assert_eq!(run_as(65534, &ops(&m.dir)), want);
    for f in ["private", "shared"] {
        assert_eq!(
            described(&m.path(f)),
            described(&plain.join(f)),
            "{f} through the mount"
        );
    }
    let o = fs::metadata(&obj).unwrap();
    assert_eq!((o.mode() & 0o7777, o.nlink()), (0o2775, 2), "the object");
    assert!(xattrs(&other.join("shared"))
        .iter()
        .all(|(n, _)| !n.to_string_lossy().starts_with("system.posix_acl")));
}
