//! Session 28's POSIX review of the mount for every uid: the ways a user
//! changes a file that no earlier test took, each done on a plain
//! directory and through the mount to files shared with another guest and
//! to private ones, with the same result expected, and the other guest
//! left as it was. The review found these as on ext4; the tests keep them
//! so (the kernel leaves most of them to the daemon: FUSE sends the set-ID
//! bits and capability a write takes off as requests of their own).

use crate::common::require_root;
use crate::fs::harness::{look, set_mtime, set_xattr, Look, World};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const CONTENT: &[u8] = b"shared content\n";
const NOBODY: &str = "65534";
/// cap_net_raw+ep (vfs_cap_data revision 2).
const CAP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A plain directory, a guest and another guest linking the same objects.
struct Trees {
    w: World,
    plain: PathBuf,
    g: PathBuf,
    other: PathBuf,
}

impl Trees {
    fn new() -> Trees {
        let w = World::new();
        let (plain, g, other) = (w.dir("plain"), w.dir("g"), w.dir("other"));
        Trees { w, plain, g, other }
    }

    /// `name` with `mode` and owner root in the plain directory and in the
    /// guest, where it is shared with the other guest if `shared`.
    fn file(&self, name: &str, mode: u32, shared: bool) {
        for d in [&self.plain, &self.g] {
            let p = d.join(name);
            fs::write(&p, CONTENT).unwrap();
            set_xattr(&p, "user.origin", b"package");
        }
        if shared {
            self.w.share(&[self.g.join(name), self.other.join(name)]);
        }
        for d in [&self.plain, &self.g] {
            let p = d.join(name);
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            set_mtime(&p, 1_000_000_000);
        }
    }

    /// What the other guest sees of its files.
    fn others(&self) -> Vec<(String, Look)> {
        let mut v: Vec<_> = fs::read_dir(&self.other)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    look(&e.path()),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// Runs xfs_io's `commands` on `file` as `uid` (group the same, no others);
/// its stderr, which names any failure. A command starting with `-` is an
/// option of the open (`-a`: O_APPEND, `-d`: O_DIRECT).
fn xfs_io(uid: &str, file: &Path, commands: &[&str]) -> String {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", uid, "--regid", uid, "--clear-groups", "xfs_io"]);
    for c in commands {
        if c.starts_with('-') {
            cmd.arg(c);
        } else {
            cmd.args(["-c", c]);
        }
    }
    let out = cmd.arg(file).output().expect("setpriv xfs_io");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode_and_size(p: &Path) -> (u32, u64) {
    let m = fs::metadata(p).unwrap();
    (m.mode() & 0o7777, m.len())
}

/// Each way of writing a file's data a user has takes set-user-ID, and a
/// set-group-ID of a group it is not in, off as on ext4, whether the file
/// was shared (its first change breaks it) or private, with passthrough and
/// without: pwrite, pwritev, copy_file_range into it, fallocate (growing,
/// KEEP_SIZE, PUNCH_HOLE), ftruncate, and writes through an `O_APPEND` or
/// `O_DIRECT` open (which the daemon serves). A read-write open that
/// writes nothing keeps them.
#[test]
fn every_write_by_another_user_takes_set_id_bits_off_as_on_ext4() {
    if !require_root("review_s28_posix_every_write_takes_set_id_bits_off") {
        return;
    }
    let ways: [(&str, &[&str]); 11] = [
        ("pwrite", &["pwrite -q 1 1"]),
        ("pwritev", &["pwrite -q -V 1 1 1"]),
        ("copy_range", &["copy_range -s 0 -d 0 -l 3 SRC"]),
        ("falloc", &["falloc 0 100"]),
        ("falloc_keep", &["falloc -k 0 100"]),
        ("punch", &["fpunch 0 2"]),
        ("ftruncate", &["truncate 2"]),
        ("ftruncate_same", &["truncate 15"]),
        ("append", &["-a", "pwrite -q 0 1"]),
        ("direct", &["-d", "pwrite -q 0 4096"]),
        ("open_only", &["fsync"]),
    ];
    for opts in [&[][..], &["nopassthrough"][..]] {
        let t = Trees::new();
        let mut names = Vec::new();
        for (way, _) in ways {
            for (kind, mode) in [("suid", 0o6777), ("sgid_nox", 0o2666)] {
                for shared in [true, false] {
                    let name = format!("{way}.{kind}.{}", if shared { "s" } else { "p" });
                    t.file(&name, mode, shared);
                    names.push((way, name));
                }
            }
        }
        for d in [&t.plain, &t.g] {
            fs::write(d.join("SRC"), b"abc").unwrap();
        }
        let before = t.others();
        let m = t.w.mount(&t.g, "m", opts);
        for (way, name) in &names {
            let commands = ways.iter().find(|w| w.0 == *way).unwrap().1;
            for d in [&t.plain, &m.dir] {
                let src = d.join("SRC");
                let commands: Vec<String> = commands
                    .iter()
                    .map(|c| c.replace("SRC", src.to_str().unwrap()))
                    .collect();
                let commands: Vec<&str> = commands.iter().map(|c| c.as_str()).collect();
                let err = xfs_io(NOBODY, &d.join(name), &commands);
                assert_eq!(err, "", "{name} in {} {opts:?}", d.display());
            }
            assert_eq!(
                mode_and_size(&m.path(name)),
                mode_and_size(&t.plain.join(name)),
                "{name}: mode and size through the mount as on ext4 {opts:?}"
            );
            assert_eq!(
                fs::read(m.path(name)).unwrap(),
                fs::read(t.plain.join(name)).unwrap(),
                "{name}: content {opts:?}"
            );
        }
        assert_eq!(t.others(), before, "the other guest is untouched {opts:?}");
    }
}

/// A write, a truncate or a chown takes a file capability
/// (`security.capability`) off, as on ext4, by root too: of a shared file
/// (from the private copy the change gives the guest, the other guest
/// keeping its own) and of a private one. An open that writes nothing
/// keeps it.
#[test]
fn a_write_takes_a_file_capability_off_as_on_ext4() {
    if !require_root("review_s28_posix_a_write_takes_a_file_capability_off") {
        return;
    }
    let ways: [(&str, &str, &[&str]); 5] = [
        ("root_write", "0", &["pwrite -q 15 1"]),
        ("user_write", NOBODY, &["pwrite -q 15 1"]),
        ("root_truncate", "0", &["truncate 3"]),
        ("user_truncate", NOBODY, &["truncate 3"]),
        ("user_open", NOBODY, &["fsync"]),
    ];
    for opts in [&[][..], &["nopassthrough"][..]] {
        let t = Trees::new();
        for (way, _, _) in ways {
            for s in ["s", "p"] {
                let name = format!("{way}.{s}");
                t.file(&name, 0o777, s == "s");
                for d in [&t.plain, &t.g] {
                    set_xattr(&d.join(&name), "security.capability", &CAP);
                }
            }
        }
        let before = t.others();
        let m = t.w.mount(&t.g, "m", opts);
        for (way, uid, commands) in ways {
            for s in ["s", "p"] {
                let name = format!("{way}.{s}");
                for d in [&t.plain, &m.dir] {
                    assert_eq!(xfs_io(uid, &d.join(&name), commands), "", "{name}");
                }
                let cap = |p: &Path| unifs::sys::xattr::list_path(p).unwrap();
                assert_eq!(
                    cap(&m.path(&name)),
                    cap(&t.plain.join(&name)),
                    "{name}: xattrs through the mount as on ext4 {opts:?}"
                );
            }
        }
        assert_eq!(t.others(), before, "the other guest is untouched {opts:?}");
    }
}

fn utimensat(p: &Path, atime: libc::timespec, mtime: libc::timespec) -> i32 {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let t = [atime, mtime];
    // SAFETY: `c` is a NUL-terminated path, `t` two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// utimensat on a shared file: UTIME_OMIT for both times changes nothing
/// and breaks nothing; UTIME_NOW for the access time alone sets it and
/// keeps the modification time; an explicit modification time with the
/// access time omitted sets just that. The other guest keeps its times.
#[test]
fn utime_omit_and_now_on_a_shared_file_set_what_they_ask() {
    if !require_root("review_s28_posix_utime_omit_and_now_on_a_shared_file") {
        return;
    }
    let t = Trees::new();
    for name in ["omit", "now_atime", "set_mtime"] {
        t.file(name, 0o644, true);
    }
    let before = t.others();
    let m = t.w.mount(&t.g, "m", &[]);
    let omit = ts(0, libc::UTIME_OMIT);
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(utimensat(&m.path("omit"), omit, omit), 0);
    assert_eq!(
        utimensat(&m.path("now_atime"), ts(0, libc::UTIME_NOW), omit),
        0
    );
    assert_eq!(utimensat(&m.path("set_mtime"), omit, ts(1234567, 0)), 0);
    let times = |n: &str| {
        let m = fs::metadata(m.path(n)).unwrap();
        (m.atime(), m.mtime())
    };
    assert_eq!(times("omit"), (1_000_000_000, 1_000_000_000));
    let (a, mt) = times("now_atime");
    assert!(a >= start, "atime set to now: {a} < {start}");
    assert_eq!(mt, 1_000_000_000, "mtime kept");
    assert_eq!(times("set_mtime"), (1_000_000_000, 1234567));
    let marked = |n: &str| {
        unifs::sys::xattr::list_path(&t.g.join(n))
            .unwrap()
            .iter()
            .any(|(k, _)| k == crate::fs::harness::MARKER)
    };
    assert!(marked("omit"), "UTIME_OMIT twice breaks nothing");
    assert!(
        !marked("now_atime") && !marked("set_mtime"),
        "the others broke"
    );
    assert_eq!(t.others(), before, "the other guest keeps its times");
}
