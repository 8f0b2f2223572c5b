//! Set-ID bits the mount kept where ext4 takes them off: a caller in a
//! user namespace of its own counted as having CAP_FSETID; a write or
//! fallocate by a non-member kept set-group-ID on a file without
//! group-execute.

use crate::common::require_root;
use crate::fs::harness::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Uid and gid of the test user; it is in no other group.
const USER: &str = "1001";

/// Runs `python3 -c script dir` as the test user, in a user namespace of
/// its own (`unshare -Ur`: root there, every capability there) if
/// `userns`. The mount's watchdog bounds any wait on it.
fn as_user(userns: bool, script: &str, dir: &Path) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", USER, "--regid", USER, "--clear-groups"]);
    if userns {
        cmd.args(["unshare", "-Ur"]);
    }
    let out = cmd
        .args(["/usr/bin/python3", "-c", script])
        .arg(dir)
        .output()
        .expect("run python3 as the test user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `dir/name` with `mode`, owner and group, unchanged since 2001.
fn file(dir: &Path, name: &str, mode: u32, uid: u32, gid: u32) {
    let p = dir.join(name);
    fs::write(&p, b"some data\n").unwrap();
    std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime(&p, 1_000_000_000);
}

/// Each file's name and permission bits, in octal for a readable diff.
fn modes(dir: &Path, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| {
            let mode = fs::metadata(dir.join(n)).unwrap().mode() & 0o7777;
            (n.to_string(), format!("{mode:o}"))
        })
        .collect()
}

/// A process that entered a user namespace of its own has CAP_FSETID
/// there, but not over the files of the mount: an O_TRUNC open of a
/// writable set-uid-root file, truncate(2) of a set-gid file of a group it
/// is not in, and setting an access ACL on its own set-gid file of such a
/// group take the bits off, as on ext4. The daemon read CapEff from /proc
/// without looking at the caller's user namespace, and kept them.
#[test]
fn review_s23_a_user_namespace_root_has_no_cap_fsetid_over_the_mount() {
    if !require_root("review_s23_a_user_namespace_root_has_no_cap_fsetid_over_the_mount") {
        return;
    }
    let names = ["s_suid", "s_sgid", "s_acl", "p_suid", "p_sgid", "p_acl"];
    let w = World::new();
    let (plain, g, other) = (w.dir("plain"), w.dir("g"), w.dir("other"));
    for d in [&plain, &g] {
        for p in ["s_", "p_"] {
            file(d, &format!("{p}suid"), 0o4777, 0, 0);
            file(d, &format!("{p}sgid"), 0o2747, 0, 0);
            file(d, &format!("{p}acl"), 0o2755, 1001, 3000);
        }
    }
    // The s_ files of the guest are store objects shared with another.
    for n in ["s_suid", "s_sgid", "s_acl"] {
        let meta = fs::metadata(g.join(n)).unwrap();
        w.share(&[g.join(n), other.join(n)]);
        std::os::unix::fs::chown(g.join(n), Some(meta.uid()), Some(meta.gid())).unwrap();
        fs::set_permissions(g.join(n), meta.permissions()).unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let script = r#"
import os, subprocess, sys
d = sys.argv[1]
for p in ("s_", "p_"):
    os.close(os.open(f"{d}/{p}suid", os.O_WRONLY | os.O_TRUNC))
    os.truncate(f"{d}/{p}sgid", 2)
    subprocess.run(["setfacl", "-m", "u:0:r,m::rx", f"{d}/{p}acl"], check=True)
"#;
    as_user(true, script, &plain);
    as_user(true, script, &m.dir);
    let want = modes(&plain, &names);
    let bits: Vec<&str> = want.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(bits, ["777", "747", "755", "777", "747", "755"]);
    assert_eq!(modes(&m.dir, &names), want, "through the mount");
    assert_eq!(modes(&g, &names), want, "backing files");
    let kept: Vec<u32> = ["s_suid", "s_sgid", "s_acl"]
        .iter()
        .map(|n| fs::metadata(other.join(n)).unwrap().mode() & 0o7777)
        .collect();
    assert_eq!(kept, [0o4777, 0o2747, 0o2755], "the other guest's files");
}

/// A write, an O_APPEND write, fallocate and a punched hole by a user
/// outside the file's group (without CAP_FSETID) take set-group-ID off a
/// file without group-execute, as on ext4 since Linux 6.x
/// (`setattr_should_drop_sgid`), with and without passthrough, shared or
/// not. FUSE's kernel side clears set-group-ID only with group-execute,
/// the older rule, and kept it.
#[test]
fn review_s23_a_write_by_a_non_member_takes_set_gid_off_without_group_exec() {
    if !require_root("review_s23_a_write_by_a_non_member_takes_set_gid_off_without_group_exec") {
        return;
    }
    let ops = ["write", "append", "falloc", "punch"];
    let names: Vec<String> = ["s_", "p_"]
        .iter()
        .flat_map(|p| ops.iter().map(move |o| format!("{p}{o}")))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let script = r#"
import ctypes, os, sys
d = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
for p in ("s_", "p_"):
    fd = os.open(f"{d}/{p}write", os.O_WRONLY); os.write(fd, b"X"); os.close(fd)
    fd = os.open(f"{d}/{p}append", os.O_WRONLY | os.O_APPEND); os.write(fd, b"X"); os.close(fd)
    fd = os.open(f"{d}/{p}falloc", os.O_WRONLY); os.posix_fallocate(fd, 0, 8192); os.close(fd)
    fd = os.open(f"{d}/{p}punch", os.O_WRONLY)
    # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
    if libc.fallocate(fd, 3, ctypes.c_long(0), ctypes.c_long(4)) != 0:
        raise OSError(ctypes.get_errno(), "punch")
    os.close(fd)
"#;
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (plain, g, other) = (w.dir("plain"), w.dir("g"), w.dir("other"));
        for d in [&plain, &g] {
            for n in &names {
                file(d, n, 0o2747, 0, 0);
            }
        }
        for n in names.iter().filter(|n| n.starts_with("s_")) {
            w.share(&[g.join(n), other.join(n)]);
            fs::set_permissions(g.join(n), fs::Permissions::from_mode(0o2747)).unwrap();
        }
        let m = w.mount(&g, "m", opts);
        as_user(false, script, &plain);
        as_user(false, script, &m.dir);
        let want = modes(&plain, &names);
        assert!(want.iter().all(|(_, m)| m == "747"), "{want:?}");
        assert_eq!(modes(&m.dir, &names), want, "through the mount {opts:?}");
        assert_eq!(modes(&g, &names), want, "backing files {opts:?}");
        assert_eq!(
            fs::read(m.path("p_append")).unwrap(),
            fs::read(plain.join("p_append")).unwrap()
        );
    }
}

/// The same inside a guest: a non-root guest user allowed user namespaces
/// (`--syscall-filter allow-userns`) enters one of its own and truncates a
/// writable set-uid-root file (an `O_TRUNC` open). Through the overlay the
/// set-uid bit stayed; on a plain copy bind-mounted as the root it goes.
#[test]
fn review_s23_a_guest_user_in_its_own_user_namespace_loses_set_uid_on_o_trunc() {
    let test = "review_s23_a_guest_user_in_its_own_user_namespace_loses_set_uid_on_o_trunc";
    if !crate::guest::harness::can_run(test) {
        return;
    }
    let (overlay, bind) = (
        crate::guest::harness::TestRoot::new(),
        crate::guest::harness::TestRoot::new(),
    );
    for t in [&overlay, &bind] {
        let root = t.root();
        let passwd = "root:x:0:0::/:/bin/sh\nu1:x:1001:1001::/:/bin/sh\n";
        fs::write(root.join("etc/passwd"), passwd).unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(root.join("t")).unwrap();
        file(&root.join("t"), "suid", 0o4777, 0, 0);
    }
    let script = "unshare -U -r sh -c ': > /t/suid' && stat -c %a /t/suid";
    let run = |t: &crate::guest::harness::TestRoot, mount: &str| {
        let mut cmd = Command::new(crate::common::unifs_bin());
        cmd.arg("--store").arg(t.dir.path().join("store"));
        cmd.arg("run").arg("--root").arg(t.root());
        cmd.args(["--root-mount", mount, "--syscall-filter", "allow-userns"]);
        cmd.args(["-u", "u1", "--", "/bin/sh", "-c", script]);
        let out = crate::guest::harness::run_bounded(cmd, std::time::Duration::from_secs(30));
        crate::guest::harness::ok(&out).trim().to_string()
    };
    assert_eq!(run(&bind, "bind"), "777", "on a plain root");
    assert_eq!(run(&overlay, "overlay"), "777", "through the overlay");
    let mode = fs::metadata(overlay.root().join("t/suid")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o777, "the backing file");
}

/// The same for a file removed while open (its setattr goes through the
/// open fd): a write by a non-member takes set-group-ID off, and so does
/// a truncate, as on ext4.
#[test]
fn review_s23_a_write_to_a_removed_open_file_takes_set_gid_off() {
    if !require_root("review_s23_a_write_to_a_removed_open_file_takes_set_gid_off") {
        return;
    }
    let script = r#"
import os, sys
d = sys.argv[1]
out = []
for n, act in (("w", lambda fd: os.write(fd, b"X")), ("t", lambda fd: os.ftruncate(fd, 2))):
    fd = os.open(f"{d}/dir/{n}", os.O_WRONLY)
    os.unlink(f"{d}/dir/{n}")
    act(fd)
    out.append("%o" % (os.fstat(fd).st_mode & 0o7777))
    os.close(fd)
open(f"{d}/out/modes", "w").write(" ".join(out))
"#;
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (plain, g) = (w.dir("plain"), w.dir("g"));
        for d in [&plain, &g] {
            for sub in ["dir", "out"] {
                fs::create_dir(d.join(sub)).unwrap();
                fs::set_permissions(d.join(sub), fs::Permissions::from_mode(0o777)).unwrap();
            }
            file(&d.join("dir"), "w", 0o2747, 0, 0);
            file(&d.join("dir"), "t", 0o2747, 0, 0);
        }
        let m = w.mount(&g, "m", opts);
        as_user(false, script, &plain);
        as_user(false, script, &m.dir);
        let got = |d: &Path| fs::read_to_string(d.join("out/modes")).unwrap();
        assert_eq!(got(&plain), "747 747");
        assert_eq!(got(&m.dir), got(&plain), "through the mount {opts:?}");
    }
}
