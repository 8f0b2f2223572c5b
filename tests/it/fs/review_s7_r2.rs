//! Cases a second review of the session-7 fixes found wrong: an append-only
//! flag set or taken off (on the host) while a guest held the file open was
//! judged by the flag as it was at the first open; a read-only (or noatime)
//! mount changed the access times of the backing files and directories;
//! setting an ACL as root without CAP_FSETID kept a set-group-ID bit.

use super::errors::AppendOnly;
use super::harness::*;
use crate::common::require_root;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

/// A write open of a file made append-only after a reader opened it is
/// refused as on ext4 (the reader's backing fd was opened before the flag,
/// without O_APPEND: reusing it let the writer overwrite the log anywhere).
#[test]
fn append_only_set_while_open_refuses_plain_write_opens() {
    if !require_root("review_s7_r2_append_only_set_while_open") {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let g = w.dir("g");
        fs::write(g.join("log"), b"one\n").unwrap();
        let m = w.mount(&g, "m", opts);
        let reader = fs::File::open(m.path("log")).unwrap();
        let _flag = AppendOnly::set(&[&g.join("log")]);
        // On the backing filesystem itself:
        let native = OpenOptions::new().write(true).open(g.join("log"));
        assert_eq!(errno(native), libc::EPERM);
        let through = OpenOptions::new().write(true).open(m.path("log"));
        if let Ok(f) = &through {
            let _ = f.write_at(b"XXXX", 0);
        }
        assert_eq!(errno(through), libc::EPERM, "{opts:?}");
        let mut appender = OpenOptions::new().append(true).open(m.path("log")).unwrap();
        appender.write_all(b"two\n").unwrap();
        drop((reader, appender));
        assert_eq!(fs::read(g.join("log")).unwrap(), b"one\ntwo\n", "{opts:?}");
    }
}

/// A file no longer append-only takes plain write opens again, and their
/// writes land where they are made, even while an appender that opened it
/// when it was append-only still has it open.
#[test]
fn append_only_taken_off_while_open_takes_writes_where_made() {
    if !require_root("review_s7_r2_append_only_taken_off_while_open") {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let g = w.dir("g");
        fs::write(g.join("log"), b"one\n").unwrap();
        let m = w.mount(&g, "m", opts);
        let flag = AppendOnly::set(&[&g.join("log")]);
        let mut appender = OpenOptions::new().append(true).open(m.path("log")).unwrap();
        drop(flag); // chattr -a
        let writer = OpenOptions::new().write(true).open(m.path("log"));
        let writer = writer.unwrap_or_else(|e| panic!("{opts:?}: plain write open: {e}"));
        writer.write_at(b"ONE", 0).unwrap();
        appender.write_all(b"two\n").unwrap();
        drop((writer, appender));
        assert_eq!(fs::read(g.join("log")).unwrap(), b"ONE\ntwo\n", "{opts:?}");
    }
}

/// A read-only mount changes nothing in the backing tree, access times
/// included; nor does a `noatime` mount change them: a directory listed, or
/// a file the daemon reads (without passthrough). (Passthrough reads go
/// through a backing file the kernel opens with the guest's open flags: the
/// daemon's O_NOATIME does not reach it, so they still touch the atime.)
#[test]
fn read_only_and_noatime_mounts_leave_access_times_alone() {
    if !require_root("review_s7_r2_read_only_mounts_leave_access_times") {
        return;
    }
    for opts in [
        &["ro", "nopassthrough"][..],
        &["noatime", "nopassthrough"][..],
        &["ro"][..],
    ] {
        let passthrough = !opts.contains(&"nopassthrough");
        let w = World::new();
        let g = w.dir("g");
        fs::create_dir(g.join("d")).unwrap();
        fs::write(g.join("d/f"), b"data").unwrap();
        let old = |p: &Path| {
            Command::new("touch")
                .args(["-a", "-d", "2001-01-01"])
                .arg(p)
                .status()
                .unwrap()
        };
        old(&g.join("d/f"));
        old(&g.join("d"));
        let atimes = || [g.join("d"), g.join("d/f")].map(|p| fs::metadata(p).unwrap().atime());
        let before = atimes();
        let (dir_before, file_before) = (before[0], before[1]);
        let m = w.mount(&g, "m", opts);
        let names: Vec<_> = fs::read_dir(m.path("d")).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert_eq!(fs::read(m.path("d/f")).unwrap(), b"data");
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(m.path("d/f"))
            .unwrap();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut buf).unwrap();
        drop(f);
        let [dir_after, file_after] = atimes();
        assert_eq!(
            dir_after, dir_before,
            "{opts:?}: the directory's atime changed"
        );
        if !passthrough {
            assert_eq!(
                file_after, file_before,
                "{opts:?}: the file's atime changed"
            );
        }
    }
}

/// Setting an access ACL takes set-group-ID off a file whose group the
/// caller is not in unless it has CAP_FSETID, as on a local filesystem: uid
/// 0 alone does not keep it (a guest's root may lack the capability).
#[test]
fn setting_an_acl_as_root_without_cap_fsetid_takes_set_group_id_off() {
    if !require_root("review_s7_r2_setting_an_acl_as_root_without_cap_fsetid") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    for d in [&plain, &g] {
        fs::write(d.join("f"), b"f").unwrap();
        std::os::unix::fs::chown(d.join("f"), Some(0), Some(4321)).unwrap();
        fs::set_permissions(
            d.join("f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o2775),
        )
        .unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let mode = |p: &Path| {
        let out = Command::new("setpriv")
            .args([
                "--bounding-set",
                "-fsetid",
                "--",
                "setfacl",
                "-m",
                "u:daemon:r",
            ])
            .arg(p)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        fs::metadata(p).unwrap().mode() & 0o7777
    };
    let want = mode(&plain.join("f"));
    assert_eq!(want, 0o775);
    assert_eq!(mode(&m.path("f")), want);
}
