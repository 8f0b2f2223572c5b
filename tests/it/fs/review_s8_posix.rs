//! POSIX cases a review of the mount for non-root callers found different
//! from ext4: an `O_TRUNC` open by another user kept a file's set-id bits;
//! docs/mount.md said a passthrough write kept them, which it does not; an
//! `O_NOATIME` open still moved the atime of what the daemon read or listed;
//! the whiteout of a `RENAME_WHITEOUT` was root's, not the caller's.

use super::errors::{c, run_as, Op};
use super::harness::*;
use crate::common::require_root;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// An `O_TRUNC` open truncates like truncate(2), and so takes set-user-ID
/// (and a group-executable set-group-ID, or one of a group the caller is
/// not in) off a file when the caller lacks CAP_FSETID, as on ext4. The
/// kernel leaves that to the daemon when the open truncates
/// (FUSE_ATOMIC_O_TRUNC); the daemon, root, truncated and kept the bits.
#[test]
fn an_o_trunc_open_by_another_user_takes_set_id_bits_off() {
    if !require_root("review_s8_posix_o_trunc_takes_set_id_bits_off") {
        return;
    }
    let files: [(&str, u32, u32); 4] = [
        ("suid", 0, 0o6777),
        ("sgid_x", 4321, 0o2777),
        ("sgid_nox", 4321, 0o2767),
        ("root_keeps", 0, 0o6777),
    ];
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (plain, g) = (w.dir("plain"), w.dir("g"));
        for d in [&plain, &g] {
            set_id_files(d, &files);
            fs::create_dir(d.join("tmp")).unwrap();
            fs::set_permissions(d.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        }
        let m = w.mount(&g, "m", opts);
        let user_ops = |b: &Path| -> Vec<(&'static str, Op)> {
            let t = libc::O_WRONLY | libc::O_TRUNC;
            vec![
                ("suid", Op::Open(c(b, "suid"), t)),
                (
                    "sgid_x",
                    Op::Open(c(b, "sgid_x"), libc::O_RDWR | libc::O_TRUNC),
                ),
                ("sgid_nox", Op::Open(c(b, "sgid_nox"), t)),
                ("umask", Op::Umask(0)),
                // A file the open creates is not truncated: it keeps them.
                (
                    "new",
                    Op::OpenMode(c(b, "tmp/new"), t | libc::O_CREAT, 0o6755),
                ),
            ]
        };
        let root_ops = |b: &Path| {
            vec![(
                "root",
                Op::Open(c(b, "root_keeps"), libc::O_WRONLY | libc::O_TRUNC),
            )]
        };
        assert_eq!(run_as(65534, &user_ops(&plain)), vec![0; 5]);
        assert_eq!(run_as(65534, &user_ops(&m.dir)), vec![0; 5], "{opts:?}");
        assert_eq!(run_as(0, &root_ops(&plain)), vec![0]);
        assert_eq!(run_as(0, &root_ops(&m.dir)), vec![0], "{opts:?}");
        let modes = |d: &Path| modes_and_sizes(d, &files);
        let want = modes(&plain);
        assert_eq!(want, vec![(0o777, 0), (0o777, 0), (0o767, 0), (0o6777, 0)]);
        assert_eq!(modes(&m.dir), want, "through the mount {opts:?}");
        assert_eq!(modes(&g), want, "backing files {opts:?}");
        let new = |d: &Path| fs::metadata(d.join("tmp/new")).unwrap().mode() & 0o7777;
        assert_eq!(new(&plain), 0o6755);
        assert_eq!(new(&m.dir), 0o6755, "a new file {opts:?}");
    }
}

/// A write by a user without CAP_FSETID takes set-user-ID and a
/// group-executable set-group-ID off, as on ext4, through passthrough too
/// (the kernel does it on the FUSE file before it writes the backing one;
/// docs/mount.md said otherwise).
#[test]
fn a_write_by_another_user_takes_set_id_bits_off() {
    if !require_root("review_s8_posix_write_takes_set_id_bits_off") {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (plain, g) = (w.dir("plain"), w.dir("g"));
        for d in [&plain, &g] {
            for (name, mode) in [("suid", 0o4777), ("sgid", 0o2777)] {
                fs::write(d.join(name), b"content").unwrap();
                std::os::unix::fs::chown(d.join(name), Some(0), Some(4321)).unwrap();
                fs::set_permissions(d.join(name), fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        let m = w.mount(&g, "m", opts);
        let ops = |b: &Path| {
            vec![
                ("suid", Op::Write(c(b, "suid"), b"more")),
                ("sgid", Op::Write(c(b, "sgid"), b"more")),
            ]
        };
        assert_eq!(run_as(65534, &ops(&plain)), vec![0; 2]);
        assert_eq!(run_as(65534, &ops(&m.dir)), vec![0; 2], "{opts:?}");
        let modes = |d: &Path| -> Vec<u32> {
            ["suid", "sgid"]
                .iter()
                .map(|n| fs::metadata(d.join(n)).unwrap().mode() & 0o7777)
                .collect()
        };
        assert_eq!(modes(&plain), vec![0o777, 0o777]);
        assert_eq!(modes(&m.dir), modes(&plain), "{opts:?}");
        assert_eq!(modes(&g), modes(&plain), "{opts:?}");
        assert_eq!(fs::read(g.join("suid")).unwrap(), b"contentmore");
    }
}

/// A read through an `O_NOATIME` open (`tar --atime-preserve=system`, a
/// backup) leaves the access time alone, as on ext4: of a file whose reads
/// the daemon serves (no passthrough), and of a directory it lists. The
/// daemon's own fds lacked the flag, so the backing file's atime moved.
#[test]
fn o_noatime_reads_and_listings_leave_the_access_time_alone() {
    if !require_root("review_s8_posix_o_noatime_reads") {
        return;
    }
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (plain, g) = (w.dir("plain"), w.dir("g"));
        // atime before mtime: relatime would update it on a read.
        let old = |p: &Path| {
            let f = fs::File::open(p).unwrap();
            let t = |sec| unifs::sys::Timestamp { sec, nsec: 0 };
            unifs::sys::futimens(std::os::fd::AsFd::as_fd(&f), t(1_000_000), t(2_000_000)).unwrap();
        };
        for d in [&plain, &g] {
            fs::create_dir(d.join("dir")).unwrap();
            fs::write(d.join("dir/f"), b"content").unwrap();
            old(&d.join("dir/f"));
            old(&d.join("dir"));
        }
        let m = w.mount(&g, "m", opts);
        let read_all = |b: &Path| {
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME)
                .open(b.join("dir/f"))
                .unwrap();
            let mut s = Vec::new();
            f.read_to_end(&mut s).unwrap();
            assert_eq!(s, b"content");
            let d = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME | libc::O_DIRECTORY)
                .open(b.join("dir"))
                .unwrap();
            let mut buf = [0u8; 4096];
            // SAFETY: `buf` is writable for its length; `d` is an open directory.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    d.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            assert!(n > 0, "getdents64");
        };
        read_all(&plain);
        read_all(&m.dir);
        let atimes =
            |d: &Path| [d.join("dir/f"), d.join("dir")].map(|p| fs::metadata(p).unwrap().atime());
        assert_eq!(atimes(&plain), [1_000_000; 2]);
        assert_eq!(atimes(&g), [1_000_000; 2], "backing {opts:?}");
    }
}

/// The whiteout a `RENAME_WHITEOUT` leaves belongs to the caller, as on
/// ext4 (a set-group-ID directory passes its group on), so that a user can
/// remove it again in a sticky directory; the daemon made it root's.
#[test]
fn a_whiteout_belongs_to_the_user_whose_rename_left_it() {
    if !require_root("review_s8_posix_whiteout_owner") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    for d in [&plain, &g] {
        for (dir, gid, mode) in [("tmp", 0, 0o1777), ("sgid", 4321, 0o2777)] {
            fs::create_dir(d.join(dir)).unwrap();
            std::os::unix::fs::chown(d.join(dir), Some(0), Some(gid)).unwrap();
            fs::set_permissions(d.join(dir), fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let m = w.mount(&g, "m", &[]);
    let ops = |b: &Path| {
        let wo = libc::RENAME_WHITEOUT;
        vec![
            ("create", Op::Create(c(b, "tmp/f"))),
            ("rename", Op::Rename(c(b, "tmp/f"), c(b, "tmp/g"), wo)),
            ("create in sgid", Op::Create(c(b, "sgid/f"))),
            (
                "rename in sgid",
                Op::Rename(c(b, "sgid/f"), c(b, "sgid/g"), wo),
            ),
        ]
    };
    assert_eq!(run_as(65534, &ops(&plain)), vec![0; 4]);
    assert_eq!(run_as(65534, &ops(&m.dir)), vec![0; 4]);
    let owners = |b: &Path| {
        ["tmp/f", "sgid/f"].map(|n| {
            let md = fs::symlink_metadata(b.join(n)).unwrap();
            (md.mode(), md.uid(), md.gid())
        })
    };
    let want = owners(&plain);
    assert_eq!(want[0].1, 65534);
    assert_eq!(want[1].2, 4321);
    assert_eq!(owners(&m.dir), want);
    // Its owner removes it from the sticky directory.
    let rm = |b: &Path| vec![("unlink", Op::Unlink(c(b, "tmp/f")))];
    assert_eq!(run_as(65534, &rm(&plain)), vec![0]);
    assert_eq!(run_as(65534, &rm(&m.dir)), vec![0]);
}

/// truncate(2) by a user outside a set-group-ID file's group takes the bit
/// off even without group execute, as on ext4 (the kernel's current rule);
/// FUSE passes the old rule on (only with group execute), so the daemon
/// applies the current one itself. Set-user-ID goes as before.
#[test]
fn a_truncate_by_a_user_outside_the_group_takes_set_group_id_off() {
    if !require_root("review_s8_truncate_takes_set_group_id_off") {
        return;
    }
    let files: [(&str, u32, u32); 3] = [
        ("suid", 0, 0o6777),
        ("sgid_x", 4321, 0o2777),
        ("sgid_nox", 4321, 0o2767),
    ];
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (plain, g) = (w.dir("plain"), w.dir("g"));
        for d in [&plain, &g] {
            set_id_files(d, &files);
        }
        let m = w.mount(&g, "m", opts);
        let ops = |b: &Path| -> Vec<(&'static str, Op)> {
            files
                .iter()
                .map(|(name, _, _)| (*name, Op::Truncate(c(b, name))))
                .collect()
        };
        assert_eq!(run_as(65534, &ops(&plain)), vec![0; 3]);
        assert_eq!(run_as(65534, &ops(&m.dir)), vec![0; 3], "{opts:?}");
        let modes = |d: &Path| modes_and_sizes(d, &files);
        let want = modes(&plain);
        assert_eq!(want, vec![(0o777, 1), (0o777, 1), (0o767, 1)]);
        assert_eq!(modes(&m.dir), want, "through the mount {opts:?}");
        assert_eq!(modes(&g), want, "backing files {opts:?}");
    }
}

/// Root-owned files `(name, gid, mode)` in `d`, each holding "content".
fn set_id_files(d: &Path, files: &[(&str, u32, u32)]) {
    for (name, gid, mode) in files {
        fs::write(d.join(name), b"content").unwrap();
        std::os::unix::fs::chown(d.join(name), Some(0), Some(*gid)).unwrap();
        fs::set_permissions(d.join(name), fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// (permission bits, size) of each of `files` in `d`.
fn modes_and_sizes(d: &Path, files: &[(&str, u32, u32)]) -> Vec<(u32, u64)> {
    files
        .iter()
        .map(|(name, _, _)| {
            let md = fs::metadata(d.join(name)).unwrap();
            (md.mode() & 0o7777, md.len())
        })
        .collect()
}
