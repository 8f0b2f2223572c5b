//! Cases an adversarial review of the mount (session 7) found wrong: a
//! rename between two paths of one store object, a listing rewound after a
//! change, a break in a directory with a default ACL, POSIX ACLs ignored by
//! the permission checks, an open racing a rename over its path, `trusted.`
//! xattr names listed to every user.

use super::acl::setfacl;
use super::errors::{c, run_as, Op};
use super::harness::*;
use crate::common::require_root;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// rename(a, b) where a and b are two guest paths of one store object: the
/// guest sees two files, so `a` must be gone afterwards, as on ext4. (The
/// backing rename between two names of one inode does nothing at all.)
#[test]
fn renaming_one_path_of_an_object_over_another_removes_it() {
    if !require_root("review_s7_renaming_one_path_of_an_object_over_another") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(b"same\n", &[g.join("a"), g.join("b")]);
    let m = w.mount(&g, "m", &[]);
    let a_ino = ino(&m.path("a"));
    assert_ne!(a_ino, ino(&m.path("b")));
    fs::rename(m.path("a"), m.path("b")).unwrap();
    assert_eq!(
        errno(fs::symlink_metadata(m.path("a"))),
        libc::ENOENT,
        "the renamed path is gone through the mount"
    );
    assert_eq!(
        errno(fs::symlink_metadata(g.join("a"))),
        libc::ENOENT,
        "and in the backing tree (a fresh lookup would find it)"
    );
    assert_eq!(fs::read(m.path("b")).unwrap(), b"same\n");
    assert_eq!(ino(&m.path("b")), a_ino, "b is the file that was a");
    let names: Vec<OsString> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsString::from("b")]);
    // 1 (store) + b
    assert_eq!(fs::metadata(&obj).unwrap().nlink(), 2);
}

fn list(dir: *mut libc::DIR) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    loop {
        // SAFETY: `dir` is an open DIR stream; the entry is read before the
        // next readdir call.
        let e = unsafe { libc::readdir(dir) };
        if e.is_null() {
            return out;
        }
        // SAFETY: d_name of a returned entry is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
        out.insert(name.to_bytes().to_vec());
    }
}

/// A listing rewound (rewinddir, or seekdir to 0) after the directory
/// changed shows the change, as on ext4; and the listing the kernel caches
/// from that read is no stale one either.
#[test]
fn a_rewound_listing_shows_what_changed_since() {
    if !require_root("review_s7_a_rewound_listing_shows_what_changed_since") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("old"), b"o").unwrap();
    fs::write(g.join("gone"), b"g").unwrap();
    let m = w.mount(&g, "m", &[]);
    let p = std::ffi::CString::new(m.dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    let dir = unsafe { libc::opendir(p.as_ptr()) };
    assert!(!dir.is_null());
    let first = list(dir);
    assert!(first.contains(b"old".as_slice()) && first.contains(b"gone".as_slice()));
    fs::write(m.path("new"), b"n").unwrap();
    fs::remove_file(m.path("gone")).unwrap();
    // SAFETY: `dir` is open.
    unsafe { libc::rewinddir(dir) };
    let again = list(dir);
    // SAFETY: `dir` is open and closed once.
    unsafe { libc::closedir(dir) };
    let want: BTreeSet<Vec<u8>> = [&b"."[..], b"..", b"old", b"new"]
        .iter()
        .map(|n| n.to_vec())
        .collect();
    assert_eq!(again, want, "after rewinddir");
    let fresh: BTreeSet<Vec<u8>> = fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    let want: BTreeSet<Vec<u8>> = [&b"old"[..], b"new"].iter().map(|n| n.to_vec()).collect();
    assert_eq!(fresh, want, "a new listing after that");
}

fn xattr_names(path: &Path) -> Vec<OsString> {
    xattrs(path).into_iter().map(|(n, _)| n).collect()
}

/// A break in a directory with a default ACL: the copy (created in that
/// directory) must not inherit an ACL the file did not have. Here the
/// inherited ACL would take the read access "other" gives nobody away.
#[test]
fn a_break_in_a_directory_with_a_default_acl_keeps_the_files_permissions() {
    if !require_root("review_s7_a_break_in_a_directory_with_a_default_acl") {
        return;
    }
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    fs::create_dir(ga.join("d")).unwrap();
    fs::create_dir(gb.join("d")).unwrap();
    w.shared(b"conf\n", &[ga.join("d/f"), gb.join("d/f")]);
    // Set on the directory after the file was made (setfacl -d on /etc, say).
    setfacl(&["-d", "-m", "u:nobody:---"], &ga.join("d"));
    let m = w.mount(&ga, "m", &[]);
    let f = m.path("d/f");
    let before = (fs::metadata(&f).unwrap().mode(), xattr_names(&f));
    let mut h = OpenOptions::new().append(true).open(&f).unwrap();
    h.write_all(b"more\n").unwrap();
    drop(h);
    let after = (fs::metadata(&f).unwrap().mode(), xattr_names(&f));
    assert_eq!(after, before, "mode and xattrs after the break");
    assert_eq!(
        run_as(
            65534,
            &[("read", Op::Open(c(&m.dir, "d/f"), libc::O_RDONLY))]
        ),
        vec![0],
        "nobody still reads the 0644 file"
    );
}

/// Permission checks honour POSIX ACLs as on the backing filesystem: an
/// entry that denies a user denies it, one that grants grants.
#[test]
fn posix_acls_are_enforced_as_on_a_local_filesystem() {
    if !require_root("review_s7_posix_acls_are_enforced") {
        return;
    }
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    for base in [&plain, &g] {
        fs::write(base.join("denied"), b"d").unwrap();
        fs::set_permissions(base.join("denied"), fs::Permissions::from_mode(0o644)).unwrap();
        setfacl(&["-m", "u:nobody:---"], &base.join("denied"));
        fs::write(base.join("granted"), b"g").unwrap();
        fs::set_permissions(base.join("granted"), fs::Permissions::from_mode(0o600)).unwrap();
        setfacl(&["-m", "u:nobody:rw-"], &base.join("granted"));
        // A new file in a directory with a default ACL gets it (umask
        // ignored there), in one without the umask applies.
        fs::create_dir(base.join("acldir")).unwrap();
        fs::set_permissions(base.join("acldir"), fs::Permissions::from_mode(0o777)).unwrap();
        setfacl(&["-d", "-m", "u::rwx,g::rwx,o::rwx"], &base.join("acldir"));
        fs::create_dir(base.join("plaindir")).unwrap();
        fs::set_permissions(base.join("plaindir"), fs::Permissions::from_mode(0o777)).unwrap();
    }
    let m = w.mount(&g, "m", &[]);
    let ops = |b: &Path| {
        vec![
            ("read denied", Op::Open(c(b, "denied"), libc::O_RDONLY)),
            ("read granted", Op::Open(c(b, "granted"), libc::O_RDONLY)),
            ("write granted", Op::Open(c(b, "granted"), libc::O_WRONLY)),
            ("create in acldir", Op::Create(c(b, "acldir/new"))),
            ("mkdir in acldir", Op::Mkdir(c(b, "acldir/newdir"))),
            ("create in plaindir", Op::Create(c(b, "plaindir/new"))),
            ("mkdir in plaindir", Op::Mkdir(c(b, "plaindir/newdir"))),
        ]
    };
    // SAFETY: umask cannot fail; the forked children inherit it.
    let old = unsafe { libc::umask(0o022) };
    let want = run_as(65534, &ops(&plain));
    let got = run_as(65534, &ops(&m.dir));
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    assert_eq!(want, vec![libc::EACCES, 0, 0, 0, 0, 0, 0]);
    assert_eq!(got, want, "errno per op, plain dir vs mount");
    for rel in [
        "acldir/new",
        "acldir/newdir",
        "plaindir/new",
        "plaindir/newdir",
    ] {
        let mode = |b: &Path| fs::metadata(b.join(rel)).unwrap().mode();
        assert_eq!(
            format!("{:o}", mode(&g)),
            format!("{:o}", mode(&plain)),
            "mode of {rel}"
        );
    }
}

use std::os::unix::fs::PermissionsExt;

/// A write open of a large shared file takes a while (the break copies
/// it); a rename of another file over that path meanwhile must not make
/// the open land on the file renamed in. On ext4 the open that found the
/// old file writes to the old file (unlinked by the rename): the new one is
/// never written through an fd that is not its own.
#[test]
fn a_write_open_racing_a_rename_over_its_path_never_writes_the_new_file() {
    if !require_root("review_s7_a_write_open_racing_a_rename_over_its_path") {
        return;
    }
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    let big: Vec<u8> = (0..96u32 << 20).map(|i| (i % 251) as u8).collect();
    w.shared(&big, &[ga.join("a"), gb.join("a")]);
    drop(big);
    fs::write(ga.join("c"), b"the new config\n").unwrap();
    let m = w.mount(&ga, "m", &[]);
    let (a, c) = (m.path("a"), m.path("c"));
    let a_ino = ino(&a);
    let c_ino = ino(&c);
    let opener = {
        let a = a.clone();
        std::thread::spawn(move || {
            let mut f = OpenOptions::new().append(true).open(&a).unwrap();
            f.write_all(b"appended\n").unwrap();
            f.metadata().unwrap().ino()
        })
    };
    // While the break copies 96 MiB (the open reached the daemon by now).
    std::thread::sleep(std::time::Duration::from_millis(15));
    fs::rename(&c, &a).unwrap();
    let fd_ino = opener.join().unwrap();
    let now = fs::read(&a).unwrap();
    assert_eq!(ino(&a), c_ino, "the path is the file renamed in");
    if fd_ino != c_ino {
        assert_eq!(fd_ino, a_ino, "the open's file is the old one");
        assert_eq!(
            String::from_utf8_lossy(&now),
            "the new config\n",
            "the file renamed in was written through the old file's fd"
        );
    }
    assert_eq!(fs::read(gb.join("a")).unwrap().len(), 96 << 20);
}

/// listxattr by a user without CAP_SYS_ADMIN leaves out `trusted.` names on
/// a local filesystem (they are root's); through the mount as well.
#[test]
fn trusted_xattr_names_are_not_listed_to_other_users() {
    if !require_root("review_s7_trusted_xattr_names_are_not_listed") {
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
    let want = run_as(65534, &[("list", Op::ListxattrLen(c(&plain, "f")))]);
    let got = run_as(65534, &[("list", Op::ListxattrLen(c(&m.dir, "f")))]);
    assert_eq!(want, vec!["user.tag\0".len() as i32]);
    assert_eq!(got, want, "length of the listed names");
    let root = run_as(0, &[("list", Op::ListxattrLen(c(&m.dir, "f")))]);
    assert_eq!(
        root,
        run_as(0, &[("list", Op::ListxattrLen(c(&plain, "f")))])
    );
}
