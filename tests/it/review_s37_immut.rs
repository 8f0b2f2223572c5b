//! Review s37-immut: inode flags and link breaks. A directory made
//! immutable or append-only (`chattr +i`, `+a`) refuses the rename a break
//! ends with, so a shared file in it could not be written through the
//! mount (EPERM), where ext4 lets such a file be written; a flag change the
//! daemon or the backing filesystem refuses copied the shared file first,
//! for nothing; `+j` and btrfs' `+C` were untested.

use crate::common::require_root;
use crate::fs::harness::{errno, ino, Mount, World};
use crate::review_s18_fs::Loopfs;
use crate::review_s36_attrflags::{append, flags, letters};
use crate::tree::{chattr, Unflag};
use std::fs;
use std::path::Path;
use std::process::Command;

/// `chattr FLAGS path` with the capability `cap` dropped (e.g.
/// "sys_resource"), or with all of root's when `None`: its error, if any,
/// as chattr's message.
fn try_chattr(flags: &str, path: &Path, cap: Option<&str>) -> Result<(), String> {
    let mut cmd = match cap {
        Some(cap) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--inh-caps=-{cap}"))
                .arg(format!("--bounding-set=-{cap}"))
                .arg("chattr");
            c
        }
        None => Command::new("chattr"),
    };
    let out = cmd.arg(flags).arg(path).output().unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// chattr's message for a failure, without the path (which differs
/// between the mount and the backing tree).
fn reason(r: Result<(), String>) -> Result<(), String> {
    r.map_err(|e| e.split(" while ").next().unwrap_or("").to_string())
}

/// A directory made immutable or append-only through the mount first gives
/// its shared files private copies: they can then be written in place, as
/// on ext4 (they failed with EPERM: the break's rename was refused). The
/// other guest's files and the store's objects are untouched, the guest's
/// inode numbers stay, and the flag does what it does on ext4 (no new
/// name in `+i`, no removal in `+a`).
#[test]
fn s37_files_in_a_directory_made_immutable_through_the_mount_can_be_written() {
    if !require_root("s37_files_in_a_directory_made_immutable_through_the_mount_can_be_written") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    let mut objects = Vec::new();
    for d in ["imm", "app"] {
        for f in ["seen", "unseen"] {
            fs::create_dir_all(g.join(d)).unwrap();
            fs::create_dir_all(h.join(d)).unwrap();
            let paths = [g.join(d).join(f), h.join(d).join(f)];
            objects.push((w.shared(format!("{d}/{f}\n").as_bytes(), &paths), paths));
        }
    }
    fs::write(g.join("imm/own"), b"own\n").unwrap();
    let _unflag = Unflag(vec![g.join("imm"), g.join("app")]);
    let m = w.mount(&g, "m", &[]);
    // One file of each directory has a node (looked up), one has none.
    let seen = [ino(&m.path("imm/seen")), ino(&m.path("app/seen"))];

    chattr("+i", &m.path("imm"));
    chattr("+a", &m.path("app"));
    assert_eq!(letters(&g.join("imm")), "i");
    assert_eq!(letters(&g.join("app")), "a");
    for d in ["imm", "app"] {
        for f in ["seen", "unseen", "own"] {
            let p = m.path(&format!("{d}/{f}"));
            if d == "app" && f == "own" {
                continue;
            }
            append(&p).unwrap_or_else(|e| panic!("{d}/{f}: {e}"));
        }
    }
    assert_eq!([ino(&m.path("imm/seen")), ino(&m.path("app/seen"))], seen);
    assert_eq!(
        fs::read_to_string(m.path("imm/unseen")).unwrap(),
        "imm/unseen\nmore\n"
    );
    for (obj, [mine, other]) in &objects {
        assert_ne!(ino(mine), ino(obj), "{mine:?} still shared");
        assert_eq!(ino(other), ino(obj));
        assert_eq!(letters(obj), "", "the object got a flag");
        let name = other.strip_prefix(&h).unwrap().to_str().unwrap();
        assert_eq!(fs::read_to_string(other).unwrap(), format!("{name}\n"));
    }
    // The flags themselves, as on ext4.
    assert_eq!(errno(fs::write(m.path("imm/new"), b"x")), libc::EPERM);
    assert_eq!(errno(fs::remove_file(m.path("app/seen"))), libc::EPERM);
    fs::write(m.path("app/new"), b"x").unwrap();
}

/// A directory the host made immutable (or an older unifs let a guest make
/// so without breaking its files) keeps its shared files unwritable; the
/// daemon's log says how to change that, and doing so (the flag taken off
/// and put back through the mount) makes them writable.
#[test]
fn s37_a_directory_flagged_before_the_mount_is_fixed_by_flagging_it_again_through_it() {
    if !require_root("s37_a_directory_flagged_before_the_mount_is_fixed_by_flagging_it_again") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    fs::create_dir(g.join("d")).unwrap();
    fs::create_dir(h.join("d")).unwrap();
    let obj = w.shared(b"x\n", &[g.join("d/x"), h.join("d/x")]);
    let _unflag = Unflag(vec![g.join("d")]);
    chattr("+i", &g.join("d"));
    let m = w.mount(&g, "m", &[]);
    assert_eq!(errno(append(&m.path("d/x"))), libc::EPERM);
    let log = fs::read_to_string(&m.log).unwrap();
    assert!(log.contains("put it back through the mount"), "{log}");

    chattr("-i", &m.path("d"));
    chattr("+i", &m.path("d"));
    append(&m.path("d/x")).unwrap();
    assert_eq!(fs::read_to_string(m.path("d/x")).unwrap(), "x\nmore\n");
    assert_eq!(ino(&h.join("d/x")), ino(&obj));
    assert_eq!(fs::read_to_string(h.join("d/x")).unwrap(), "x\n");
}

/// A shared file renamed through the mount into an append-only directory
/// (which takes new names, but lets none be replaced) is broken first,
/// where it was: there it can be written (it failed with EPERM). Into an
/// immutable one the rename fails, and breaks nothing.
#[test]
fn s37_a_shared_file_moved_into_an_append_only_directory_can_be_written() {
    if !require_root("s37_a_shared_file_moved_into_an_append_only_directory_can_be_written") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    fs::create_dir(g.join("log")).unwrap();
    fs::create_dir(g.join("ro")).unwrap();
    let obj = w.shared(b"f\n", &[g.join("f"), h.join("f")]);
    let obj2 = w.shared(b"f2\n", &[g.join("f2"), h.join("f2")]);
    let _unflag = Unflag(vec![g.join("log"), g.join("ro")]);
    let m = w.mount(&g, "m", &[]);
    chattr("+a", &m.path("log"));
    chattr("+i", &m.path("ro"));
    // An immutable directory refuses the rename: nothing is copied for it.
    let into_ro = fs::rename(m.path("f2"), m.path("ro/f2"));
    assert_eq!(errno(into_ro), libc::EPERM);
    assert_eq!(ino(&g.join("f2")), ino(&obj2));
    let before = ino(&m.path("f"));
    fs::rename(m.path("f"), m.path("log/f")).unwrap();
    append(&m.path("log/f")).unwrap();
    assert_eq!(ino(&m.path("log/f")), before);
    assert_eq!(fs::read_to_string(g.join("log/f")).unwrap(), "f\nmore\n");
    assert_eq!(ino(&h.join("f")), ino(&obj));
    assert_eq!(fs::read_to_string(h.join("f")).unwrap(), "f\n");
}

/// A flag change that fails anyway fails before the break, and the file
/// stays shared (its backing inode is still the store object's): `+C`,
/// which ext4 does not have, on a file with data or empty (it copied the
/// shared file, then failed), and `+i`
/// asked of a daemon that lacks CAP_LINUX_IMMUTABLE itself (the kernel
/// checks only the caller's).
#[test]
fn s37_flag_changes_that_fail_anyway_leave_the_file_shared() {
    if !require_root("s37_flag_changes_that_fail_anyway_leave_the_file_shared") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    let obj = w.shared(b"conf\n", &[g.join("conf"), h.join("conf")]);
    fs::write(g.join("own"), b"own\n").unwrap();
    let _unflag = Unflag(vec![g.join("conf"), g.join("own")]);
    let mp = w.dir("m");
    let log = fs::File::create(mp.with_extension("log")).unwrap();
    let no_cap = [
        "setpriv",
        "--inh-caps=-linux_immutable",
        "--bounding-set=-linux_immutable",
    ];
    let m = Mount::start_under(&no_cap, &w.store, &g, &mp, &[], log);

    let native = reason(try_chattr("+C", &g.join("own"), None));
    assert!(
        native.is_err(),
        "ext4 took +C: this test needs ext4's refusal"
    );
    assert_eq!(reason(try_chattr("+C", &m.path("conf"), None)), native);
    // An empty file made through the mount: as ext4 answers for one.
    fs::write(g.join("empty"), b"").unwrap();
    fs::write(m.path("empty2"), b"").unwrap();
    let empty = reason(try_chattr("+C", &g.join("empty"), None));
    assert_eq!(reason(try_chattr("+C", &m.path("empty2"), None)), empty);
    assert_eq!(ino(&g.join("conf")), ino(&obj), "+C broke the link");

    let refused = reason(try_chattr("+i", &m.path("conf"), None));
    assert_eq!(refused, Err("chattr: Operation not permitted".into()));
    assert_eq!(ino(&g.join("conf")), ino(&obj), "+i broke the link");
    // An allowed change still breaks it, and lands.
    chattr("+d", &m.path("conf"));
    assert_ne!(ino(&g.join("conf")), ino(&obj));
    assert_eq!(letters(&g.join("conf")), "d");
    assert_eq!(flags(&obj) & 0x40, 0);
}

/// `+j` (data journalling) through the mount answers as ext4 does for the
/// same caller, with its capabilities and without CAP_SYS_RESOURCE (which
/// ext4 asks for); where it is refused, the file stays shared.
#[test]
fn s37_journal_data_flag_answers_as_on_ext4() {
    if !require_root("s37_journal_data_flag_answers_as_on_ext4") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    let obj = w.shared(b"conf\n", &[g.join("conf"), h.join("conf")]);
    fs::write(g.join("own"), b"own\n").unwrap();
    fs::write(g.join("own2"), b"own\n").unwrap();
    let m = w.mount(&g, "m", &[]);
    for cap in [Some("sys_resource"), None] {
        let native = reason(try_chattr("+j", &g.join("own"), cap));
        let through = reason(try_chattr("+j", &m.path("own2"), cap));
        assert_eq!(through, native, "private file, {cap:?} dropped");
        assert_eq!(letters(&g.join("own2")), letters(&g.join("own")));
        let shared = reason(try_chattr("+j", &m.path("conf"), cap));
        assert_eq!(shared, native, "shared file, {cap:?} dropped");
        if native.is_err() {
            assert_eq!(ino(&g.join("conf")), ino(&obj), "{cap:?} dropped");
        } else {
            assert_eq!(letters(&g.join("conf")), "j");
        }
        for p in ["own", "own2"] {
            let _ = try_chattr("-j", &g.join(p), None);
        }
    }
    assert_eq!(letters(&obj), "");
}

/// On btrfs, `+C` (NOCOW, which journald sets on each new journal file)
/// through the mount does what btrfs does: an empty file takes it, as does
/// a new file in a `+C` directory; a file with data keeps none (btrfs
/// ignores it there). A shared file is broken first: the store's object
/// and the other guest's file never get the flag.
#[test]
fn s37_nocow_on_btrfs_lands_on_private_files_as_btrfs_has_it() {
    if !require_root("s37_nocow_on_btrfs_lands_on_private_files_as_btrfs_has_it") {
        return;
    }
    let btrfs = Loopfs::new("btrfs", 256 << 20, &["-q"]);
    let w = World::new_in(&btrfs.path(""));
    let (g, h) = (w.dir("g"), w.dir("h"));
    let obj = w.shared(b"conf\n", &[g.join("conf"), h.join("conf")]);
    fs::create_dir(g.join("journal")).unwrap();
    let m = w.mount(&g, "m", &[]);

    fs::write(m.path("empty"), b"").unwrap();
    chattr("+C", &m.path("empty"));
    assert_eq!(letters(&g.join("empty")), "C");
    fs::write(m.path("full"), b"data\n").unwrap();
    chattr("+C", &m.path("full"));
    assert_eq!(letters(&g.join("full")), "", "btrfs ignores +C on data");
    chattr("+C", &m.path("journal"));
    fs::write(m.path("journal/system.journal"), b"j").unwrap();
    assert_eq!(letters(&g.join("journal/system.journal")), "C");

    chattr("+C", &m.path("conf"));
    assert_ne!(ino(&g.join("conf")), ino(&obj), "not broken");
    assert_eq!(letters(&obj), "");
    assert_eq!(ino(&h.join("conf")), ino(&obj));
    assert_eq!(fs::read_to_string(m.path("conf")).unwrap(), "conf\n");
    drop(m);
}

/// An xattr value the backing filesystem has no room for (ext4 keeps a
/// file's xattrs in one block) fails as on ext4, before the break: the file
/// stays shared (it was copied, then the set failed with ENOSPC). One that
/// fits still breaks it and lands on the copy.
#[test]
fn s37_an_xattr_the_filesystem_cannot_hold_leaves_the_file_shared() {
    if !require_root("s37_an_xattr_the_filesystem_cannot_hold_leaves_the_file_shared") {
        return;
    }
    let w = World::new();
    let (g, h) = (w.dir("g"), w.dir("h"));
    let obj = w.shared(b"conf\n", &[g.join("conf"), h.join("conf")]);
    fs::write(g.join("own"), b"own\n").unwrap();
    let m = w.mount(&g, "m", &[]);
    let set = |path: &Path, value: &[u8]| {
        let f = fs::File::open(path).unwrap();
        let name = std::ffi::OsStr::new("user.big");
        unifs::sys::xattr::set_fd(std::os::fd::AsFd::as_fd(&f), name, value)
    };
    let big = vec![b'x'; 6000];
    let native = errno(set(&g.join("own"), &big));
    assert_ne!(
        native, 0,
        "ext4 took a 6000-byte xattr: this test needs its refusal"
    );
    assert_eq!(errno(set(&m.path("conf"), &big)), native);
    assert_eq!(
        ino(&g.join("conf")),
        ino(&obj),
        "the refused set broke the link"
    );
    set(&m.path("conf"), b"small").unwrap();
    assert_ne!(ino(&g.join("conf")), ino(&obj));
    assert_eq!(ino(&h.join("conf")), ino(&obj));
}
