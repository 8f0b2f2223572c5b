//! Cases a review of the session-7 fixes found wrong: new entries in a
//! directory with a default ACL got the caller's umask as well (FUSE applies
//! it unless told not to).

use super::errors::{c, run_as, Op};
use super::harness::*;
use crate::common::require_root;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn setfacl(args: &[&str], path: &Path) {
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
    assert!(acls.status.success(), "getfacl {}: {acls:?}", path.display());
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
        setfacl(&["-d", "-m", "u::rwx,g::r-x,o::---"], &base.join("sgacldir"));
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
