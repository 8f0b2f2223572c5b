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

#[test]
fn a_hardlink_pair_stays_reachable_when_a_reader_holds_the_old_inode() {
    if !require_root("a_hardlink_pair_stays_reachable_when_a_reader_holds_the_old_inode") {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (ga, gb) = (w.dir("ga"), w.dir("gb"));
        let obj = w.shared(b"conf\n", &[ga.join("f"), gb.join("f")]);
        let m = w.mount(&ga, "m", opts);
        let (f, f2) = (m.path("f"), m.path("f2"));
        // A long-lived reader (a daemon that read its config) on the shared inode.
        let reader = fs::File::open(&f).unwrap();
        fs::hard_link(&f, &f2).unwrap();
        let mut w1 = OpenOptions::new().append(true).open(&f).unwrap();
        w1.write_all(b"more\n").unwrap();
        drop(w1);
        // Both names are one file on disk: the guest must see one file.
        assert_eq!(
            fs::read(&f2).map_err(|e| e.raw_os_error()),
            Ok(b"conf\nmore\n".to_vec()),
            "{opts:?}: the second name opens and shows the write"
        );
        let (a, b) = (fs::metadata(&f).unwrap(), fs::metadata(&f2).unwrap());
        assert_eq!(a.ino(), b.ino(), "{opts:?}: a hardlink pair stays a pair");
        assert_eq!((a.nlink(), b.nlink()), (2, 2), "{opts:?}");
        drop(reader);
        assert_eq!(
            fs::read(&f2).map_err(|e| e.raw_os_error()),
            Ok(b"conf\nmore\n".to_vec()),
            "{opts:?}: still after the reader closed"
        );
        assert_eq!(fs::read(&obj).unwrap(), b"conf\n");
    }
}

#[test]
fn an_unlinked_open_shared_file_shows_no_links_of_the_store() {
    if !require_root("an_unlinked_open_shared_file_shows_no_links_of_the_store") {
        return;
    }
    let w = World::new();
    let (ga, gb, gc) = (w.dir("ga"), w.dir("gb"), w.dir("gc"));
    let obj = w.shared(b"x\n", &[ga.join("f"), gb.join("f"), gc.join("f")]);
    let m = w.mount(&ga, "m", &[]);
    let f = fs::File::open(m.path("f")).unwrap();
    fs::remove_file(m.path("f")).unwrap();
    let st = f.metadata().unwrap();
    // ext4: an unlinked open file has no links. Anything else here is the
    // store's count (store + other guests): it shows the sharing.
    assert_eq!(
        st.nlink(),
        0,
        "fstat of the unlinked shared file (store object has {} links)",
        fs::metadata(&obj).unwrap().nlink()
    );
    assert_eq!(st.atime(), st.mtime(), "times of the object stay hidden");
}

#[test]
fn a_broken_copy_keeps_its_number_when_the_kernel_forgets_it() {
    let _forgets = crate::common::forgets_held();
    if !require_root("a_broken_copy_keeps_its_number_when_the_kernel_forgets_it") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    w.shared(b"one\n", &[g.join("f")]);
    w.shared(b"two\n", &[g.join("g")]);
    let m = w.mount(&g, "m", &[]);
    let (f, h) = (m.path("f"), m.path("h"));
    fs::hard_link(&f, &h).unwrap(); // breaks f; h joins the copy
    let h_ino = fs::metadata(&h).unwrap().ino();
    fs::rename(m.path("g"), &f).unwrap(); // another shared file takes f's name
    let f_ino = fs::metadata(&f).unwrap().ino();
    assert_ne!(f_ino, h_ino);
    // The kernel forgets unused inodes (memory pressure); numbers are kept
    // for the life of the mount.
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let f_after = fs::metadata(&f).unwrap().ino();
    let h_after = fs::metadata(&h).unwrap().ino();
    assert_eq!(h_after, h_ino, "the broken copy keeps its number");
    assert_ne!(f_after, h_ino, "no other file takes a number the copy had");
}
