//! Review s39-fsidrev of the per-request filesystem ids (b360283): the
//! daemon registers passthrough files and serves writes with the caller's
//! fsuid and fsgid. These check that nothing else changed: the ids never
//! outlive the request on a worker thread, a group member's writes work,
//! and set-ID bits are cleared by a write as ext4 clears them.

use crate::common::require_root;
use crate::fs::harness::World;
use crate::tree::stderr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const USER: u32 = 1000;
const OWNER: u32 = 2000;
pub(crate) const GROUP: u32 = 3000;

/// `sh -c script` as `uid` with primary group `uid` and supplementary
/// group `GROUP`.
pub(crate) fn sh_as(uid: u32, script: &str) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg(format!("--groups={GROUP}"))
        .args(["sh", "-c", script])
        .output()
        .expect("setpriv")
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", stderr(out));
}

fn chown(p: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// After a user's writes (many, so that every worker thread serves some),
/// root's creates in a 0700 root directory work and are root's: the
/// user's fs ids and the dropped capabilities stayed with the write.
fn ids_stay_with_the_write(test: &str, opts: &[&str]) {
    if !require_root(test) {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("www")).unwrap();
    chown(&g.join("www"), USER, USER, 0o755);
    fs::create_dir(g.join("private")).unwrap();
    chown(&g.join("private"), 0, 0, 0o700);
    let m = w.mount(&g, "m", opts);
    for round in 0..8 {
        let f = m.path("www/f").display().to_string();
        let out = sh_as(
            USER,
            &format!("for i in 1 2 3 4 5 6 7 8; do echo $i >> {f}; done; dd if=/dev/zero of={f} bs=4k count=64 conv=notrunc,fsync status=none; fallocate -l 1M {f}"),
        );
        ok(&out, "user's writes");
        for i in 0..8 {
            let p = m.path(&format!("private/r{round}-{i}"));
            fs::write(&p, b"root")
                .unwrap_or_else(|e| panic!("{opts:?}: root create {}: {e}", p.display()));
            let md = fs::metadata(&p).unwrap();
            assert_eq!((md.uid(), md.gid()), (0, 0), "{opts:?}: {}", p.display());
            fs::create_dir(m.path(&format!("private/d{round}-{i}"))).unwrap();
        }
    }
}

#[test]
fn s39_ids_stay_with_the_write_passthrough() {
    ids_stay_with_the_write("s39_ids_stay_with_the_write_passthrough", &[]);
}

#[test]
fn s39_ids_stay_with_the_write_without_passthrough() {
    ids_stay_with_the_write(
        "s39_ids_stay_with_the_write_without_passthrough",
        &["nopassthrough"],
    );
}

/// A file of `OWNER`'s, group `GROUP`, mode `mode`, at `dir/name`.
fn group_file(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, b"old\n").unwrap();
    chown(&p, OWNER, GROUP, mode);
    p
}

/// A member of a file's group (a supplementary group, not its fsgid) may
/// write it through the mount, also while root has it open read-only (the
/// kernel's passthrough file is then registered with the owner's ids);
/// and the write clears set-ID bits exactly as on ext4.
fn group_member_writes(test: &str, opts: &[&str]) {
    if !require_root(test) {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let local = w.dir("local");
    for d in [&g, &local] {
        fs::create_dir(d.join("shared")).unwrap();
        chown(&d.join("shared"), OWNER, GROUP, 0o2775);
    }
    for (name, mode) in [
        ("plain", 0o664),
        ("suid", 0o4775),
        ("sgid", 0o2775),
        ("both", 0o6775),
    ] {
        group_file(&g.join("shared"), name, mode);
        group_file(&local.join("shared"), name, mode);
    }
    let m = w.mount(&g, "m", opts);
    let mut want = Vec::new();
    let mut got = Vec::new();
    for (base, out) in [
        (local.join("shared"), &mut want),
        (m.path("shared"), &mut got),
    ] {
        for name in ["plain", "suid", "sgid", "both"] {
            let p = base.join(name);
            let r = sh_as(USER, &format!("echo new >> {}", p.display()));
            ok(&r, &format!("{opts:?}: {}", p.display()));
            let md = fs::metadata(&p).unwrap();
            out.push((name, md.mode() & 0o7777, fs::read(&p).unwrap()));
        }
        // root reading, the group member writing.
        let p = base.join("plain");
        let held = Command::new("sh")
            .args(["-c", &format!("exec 3< {}; exec sleep 1000", p.display())])
            .spawn()
            .unwrap();
        // Open before the write (a fixed pause may end first under load).
        let fd3 = format!("/proc/{}/fd/3", held.id());
        let open = crate::fs::harness::wait_until(std::time::Duration::from_secs(30), || {
            fs::read_link(&fd3).is_ok_and(|t| t.ends_with("shared/plain"))
        });
        let r = sh_as(
            USER,
            &format!("echo held >> {}; cat {}", p.display(), p.display()),
        );
        let mut held = held;
        let _ = held.kill();
        let _ = held.wait();
        assert!(open, "{opts:?}: root never opened {}", p.display());
        ok(
            &r,
            &format!("{opts:?}: write while root reads {}", p.display()),
        );
        out.push(("held", 0, r.stdout));
        // A file the member makes in the setgid directory.
        let n = base.join("new");
        ok(&sh_as(USER, &format!("echo x > {}", n.display())), "create");
        let md = fs::metadata(&n).unwrap();
        out.push(("new", md.gid(), vec![]));
    }
    assert_eq!(got, want, "{opts:?}: through the mount vs ext4");
}

#[test]
fn s39_a_group_member_writes_as_on_ext4_passthrough() {
    group_member_writes("s39_a_group_member_writes_as_on_ext4_passthrough", &[]);
}

#[test]
fn s39_a_group_member_writes_as_on_ext4_without_passthrough() {
    group_member_writes(
        "s39_a_group_member_writes_as_on_ext4_without_passthrough",
        &["nopassthrough"],
    );
}

/// The reverse of the owner exception: a user's read-only open of a root
/// file (a `tail -f` of a log by a member of its group) registered the
/// kernel's one backing file with the user's ids, so root's own writes to
/// the file, joining it meanwhile, lost the reserve kept for them. A
/// read-only open now registers with the file owner's ids, whoever opens.
#[test]
fn s39_roots_write_to_a_file_a_user_is_reading_keeps_the_reserve() {
    use crate::review_s39_fsuid::{fill_to_the_reserve, reserved_ext4, user_dir, write_mib};
    let Some(fs) = reserved_ext4("s39_roots_write_to_a_file_a_user_is_reading") else {
        return;
    };
    let w = World::new_in(&fs.path(""));
    let g = w.dir("g");
    user_dir(&g.join("www"));
    fs::write(g.join("log"), b"start\n").unwrap();
    let m = w.mount(&g, "m", &[]);
    fill_to_the_reserve(&fs);
    let mut reader = Command::new("setpriv")
        .arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .args(["--clear-groups", "sh", "-c"])
        .arg(format!(
            "exec 3< {}; exec sleep 60",
            m.path("log").display()
        ))
        .spawn()
        .unwrap();
    let fd3 = format!("/proc/{}/fd/3", reader.id());
    let opened = crate::fs::harness::wait_until(std::time::Duration::from_secs(30), || {
        fs::read_link(&fd3).is_ok_and(|t| t.ends_with("log"))
    });
    let wrote = write_mib(0, &m.path("log"), &["conv=notrunc", "oflag=append"]);
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(opened, "the reader did not open the log");
    wrote.expect("root's append while a user reads went no further than the user's");
}
