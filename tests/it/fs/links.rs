//! Guests see exactly the hardlinks they made (invariant 5).

use super::harness::*;
use crate::common::require_root;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirEntryExt, MetadataExt};

#[test]
fn paths_linking_one_object_are_separate_files() {
    if !require_root("paths_linking_one_object_are_separate_files") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("d")).unwrap();
    let obj = w.shared(b"same\n", &[g.join("a"), g.join("d/b")]);
    let m = w.mount(&g, "m", &[]);
    let (a, b) = (m.path("a"), m.path("d/b"));
    let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
    assert_ne!(
        ma.ino(),
        mb.ino(),
        "two guest paths of one object: two inodes"
    );
    assert_eq!((ma.nlink(), mb.nlink()), (1, 1));
    // readdir agrees with stat
    let listed: Vec<u64> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().ino())
        .collect();
    assert_eq!(listed, vec![mb.ino()]);
    fs::write(&a, b"changed\n").unwrap();
    assert_eq!(
        fs::read(&b).unwrap(),
        b"same\n",
        "the other path keeps its content"
    );
    assert_eq!(fs::read(&obj).unwrap(), b"same\n");
    assert_eq!(fs::metadata(&a).unwrap().ino(), ma.ino());
}

#[test]
fn a_guest_hardlink_pair_stays_a_pair() {
    if !require_root("a_guest_hardlink_pair_stays_a_pair") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("perl"), b"#!perl\n").unwrap();
    fs::hard_link(g.join("perl"), g.join("perl5.36")).unwrap();
    let m = w.mount(&g, "m", &[]);
    let (p, p5) = (m.path("perl"), m.path("perl5.36"));
    let (a, b) = (fs::metadata(&p).unwrap(), fs::metadata(&p5).unwrap());
    assert_eq!(a.ino(), b.ino());
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    let backing_ino = fs::metadata(g.join("perl")).unwrap().ino();
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"print 1\n").unwrap();
    drop(f);
    assert_eq!(fs::read(&p5).unwrap(), b"#!perl\nprint 1\n");
    std::os::unix::fs::chown(&p5, Some(7), None).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().uid(), 7);
    assert_eq!(
        fs::metadata(g.join("perl")).unwrap().ino(),
        backing_ino,
        "a private pair is never copied"
    );
    fs::hard_link(&p, m.path("perl3")).unwrap();
    assert_eq!(fs::metadata(&p5).unwrap().nlink(), 3);
    fs::remove_file(&p).unwrap();
    assert_eq!(fs::metadata(&p5).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.path("perl3")).unwrap().ino(), a.ino());
}

#[test]
fn a_hardlink_to_a_shared_file_joins_the_private_copy() {
    if !require_root("a_hardlink_to_a_shared_file_joins_the_private_copy") {
        return;
    }
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    let obj = w.shared(b"lib\n", &[ga.join("lib"), gb.join("lib")]);
    let obj_nlink = fs::metadata(&obj).unwrap().nlink();
    let m = w.mount(&ga, "m", &[]);
    let lib = m.path("lib");
    let ino = fs::metadata(&lib).unwrap().ino();
    fs::hard_link(&lib, m.path("lib.1")).unwrap();
    let (a, b) = (
        fs::metadata(&lib).unwrap(),
        fs::metadata(m.path("lib.1")).unwrap(),
    );
    assert_eq!(a.ino(), ino, "inode number kept across the break");
    assert_eq!(b.ino(), ino, "the new link is the same file");
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    fs::write(m.path("lib.1"), b"patched\n").unwrap();
    assert_eq!(fs::read(&lib).unwrap(), b"patched\n");
    assert_eq!(fs::read(&obj).unwrap(), b"lib\n");
    assert_eq!(fs::read(gb.join("lib")).unwrap(), b"lib\n");
    assert_eq!(
        fs::metadata(&obj).unwrap().nlink(),
        obj_nlink - 1,
        "the store object lost A's link and gained none"
    );
}

#[test]
fn store_xattrs_are_hidden_and_protected() {
    if !require_root("store_xattrs_are_hidden_and_protected") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(b"x\n", &[g.join("f")]);
    let m = w.mount(&g, "m", &[]);
    let f = m.path("f");
    let names: Vec<_> = xattrs(&f).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("user.origin")]);
    let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 128];
    // SAFETY: NUL-terminated strings and a valid buffer of the given length.
    let r = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"trusted.unifs.object".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::ENODATA))
    );
    // SAFETY: as above.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"trusted.unifs.object".as_ptr(),
            b"0".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EPERM))
    );
    // SAFETY: as above.
    let r = unsafe { libc::removexattr(c.as_ptr(), c"trusted.unifs.object".as_ptr()) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EPERM))
    );
    assert!(
        unifs::sys::xattr::get_path(&obj, std::ffi::OsStr::new(MARKER))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        fs::metadata(g.join("f")).unwrap().ino(),
        fs::metadata(&obj).unwrap().ino()
    );
}

#[test]
fn replacing_a_shared_file_by_rename_leaves_the_store_alone() {
    if !require_root("replacing_a_shared_file_by_rename_leaves_the_store_alone") {
        return;
    }
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    let obj = w.shared(b"conf=1\n", &[ga.join("conf"), gb.join("conf")]);
    let before = look(&obj);
    let m = w.mount(&ga, "m", &[]);
    // what `sed -i` does
    fs::write(m.path(".conf.tmp"), b"conf=2\n").unwrap();
    fs::rename(m.path(".conf.tmp"), m.path("conf")).unwrap();
    assert_eq!(fs::read(m.path("conf")).unwrap(), b"conf=2\n");
    assert_eq!(look(&obj), before);
    assert_eq!(fs::read(gb.join("conf")).unwrap(), b"conf=1\n");
    assert_eq!(fs::metadata(&obj).unwrap().nlink(), 2, "A's link is gone");
    fs::remove_file(m.path("conf")).unwrap();
    assert_eq!(look(&obj), before);
}
