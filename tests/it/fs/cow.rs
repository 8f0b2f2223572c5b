//! Link breaking: every kind of change through guest A's mount reaches A's
//! view only; guest B, the store object and A's inode number stay as they were.

use super::harness::*;
use crate::common::require_root;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

type Change = fn(&Path);
type Check = fn(&Look) -> bool;

const CONTENT: &[u8] = b"shared content of a package file\n";

fn changes() -> Vec<(&'static str, Change, Check)> {
    vec![
        (
            "write",
            |p| {
                let f = OpenOptions::new().write(true).open(p).unwrap();
                f.write_all_at(b"SHARED", 0).unwrap();
            },
            |l| l.content.starts_with(b"SHARED content"),
        ),
        (
            "append",
            |p| {
                let mut f = OpenOptions::new().append(true).open(p).unwrap();
                f.write_all(b"more\n").unwrap();
            },
            |l| l.content.ends_with(b"file\nmore\n"),
        ),
        (
            "o_trunc",
            |p| {
                fs::write(p, b"new").unwrap();
            },
            |l| l.content == b"new",
        ),
        (
            "truncate",
            |p| {
                // truncate(2) on the path, no open file
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: `c` is a NUL-terminated path.
                assert_eq!(unsafe { libc::truncate(c.as_ptr(), 6) }, 0);
            },
            |l| l.content == b"shared",
        ),
        (
            "chmod",
            |p| {
                fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
            },
            |l| l.mode & 0o777 == 0o600,
        ),
        (
            "chown",
            |p| {
                std::os::unix::fs::lchown(p, Some(1234), Some(5678)).unwrap();
            },
            |l| l.uid == 1234 && l.gid == 5678,
        ),
        (
            "utimens",
            |p| set_mtime(p, 1_500_000_000),
            |l| l.mtime == 1_500_000_000,
        ),
        (
            "setxattr",
            |p| set_xattr(p, "user.mine", b"yes"),
            |l| {
                l.xattrs
                    .iter()
                    .any(|(n, v)| n == "user.mine" && v == b"yes")
            },
        ),
        (
            "removexattr",
            |p| {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: both strings are NUL-terminated.
                assert_eq!(
                    unsafe { libc::removexattr(c.as_ptr(), c"user.origin".as_ptr()) },
                    0
                );
            },
            |l| l.xattrs.is_empty(),
        ),
        (
            "mmap_write",
            |p| {
                let f = OpenOptions::new().read(true).write(true).open(p).unwrap();
                let len = f.metadata().unwrap().len() as usize;
                // SAFETY: a fresh shared mapping of an open file we own, of its
                // length; unmapped before returning.
                unsafe {
                    let m = libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        std::os::fd::AsRawFd::as_raw_fd(&f),
                        0,
                    );
                    assert_ne!(m, libc::MAP_FAILED);
                    std::ptr::copy_nonoverlapping(b"MMAP".as_ptr(), m as *mut u8, 4);
                    assert_eq!(libc::msync(m, len, libc::MS_SYNC), 0);
                    libc::munmap(m, len);
                }
            },
            |l| l.content.starts_with(b"MMAP"),
        ),
        (
            "fallocate",
            |p| {
                let f = OpenOptions::new().write(true).open(p).unwrap();
                // SAFETY: plain fd and integer arguments.
                let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, 4096) };
                assert_eq!(r, 0);
            },
            |l| l.content.len() == 4096,
        ),
    ]
}

fn isolation(opts: &[&str], test: &str) {
    if !require_root(test) {
        return;
    }
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    let kinds = changes();
    let mut objects = Vec::new();
    for (name, _, _) in &kinds {
        let obj = w.shared(CONTENT, &[ga.join(name), gb.join(name)]);
        objects.push(obj);
    }
    let ma = w.mount(&ga, "ma", opts);
    let mb = w.mount(&gb, "mb", opts);
    for ((name, change, changed), obj) in kinds.iter().zip(&objects) {
        let a = ma.path(name);
        let b = mb.path(name);
        let store_before = look(obj);
        let store_ino = ino(obj);
        let b_before = look(&b);
        let a_ino = ino(&a);
        let dir_mtime = mtime_ns(&ga);
        assert_eq!(
            fs::metadata(&a).unwrap().nlink(),
            1,
            "{name}: shared file shows nlink 1"
        );
        assert!(
            !xattrs(&a)
                .iter()
                .any(|(n, _)| n.to_string_lossy().starts_with("trusted.unifs.")),
            "{name}: marker hidden"
        );
        change(&a);
        let a_after = look(&a);
        assert!(changed(&a_after), "{name}: A sees its change: {a_after:?}");
        assert_eq!(
            mtime_ns(&ga),
            dir_mtime,
            "{name}: the directory's mtime is kept"
        );
        assert_eq!(look(&b), b_before, "{name}: guest B unchanged");
        assert_eq!(look(obj), store_before, "{name}: store object unchanged");
        assert_eq!(
            ino(obj),
            store_ino,
            "{name}: store object is the same inode"
        );
        assert_eq!(
            ino(&a),
            a_ino,
            "{name}: A's inode number kept across the break"
        );
        // The backing file is a private copy without store attributes.
        let backing = ga.join(name);
        assert_ne!(
            ino(&backing),
            store_ino,
            "{name}: A's backing file is private"
        );
        assert!(
            !xattrs(&backing)
                .iter()
                .any(|(n, _)| n.to_string_lossy().starts_with("trusted.unifs.")),
            "{name}: private copy carries no store xattr"
        );
        assert_eq!(
            ino(&gb.join(name)),
            store_ino,
            "{name}: B still links the object"
        );
    }
}

#[test]
fn every_change_through_a_reaches_only_a_passthrough() {
    isolation(&[], "every_change_through_a_reaches_only_a_passthrough");
}

#[test]
fn every_change_through_a_reaches_only_a_without_passthrough() {
    isolation(
        &["nopassthrough"],
        "every_change_through_a_reaches_only_a_without_passthrough",
    );
}

#[test]
fn the_copy_keeps_metadata_and_is_not_broken_twice() {
    if !require_root("the_copy_keeps_metadata_and_is_not_broken_twice") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(CONTENT, &[g.join("f")]);
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o4751)).unwrap();
    std::os::unix::fs::lchown(&obj, Some(42), Some(43)).unwrap();
    // cap_net_raw+ep (vfs_cap_data revision 2): chown would drop it
    let cap: [u8; 20] = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    set_xattr(&obj, "security.capability", &cap);
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o4751)).unwrap();
    set_mtime(&obj, 1_000_000_000);
    let before = look(&obj);
    let m = w.mount(&g, "m", &[]);
    let f = m.path("f");
    set_xattr(&f, "user.x", b"1"); // breaks
    let copy = look(&g.join("f"));
    assert_eq!(copy.content, before.content);
    assert_eq!(copy.mode, before.mode, "mode (with set-uid) carried over");
    assert_eq!((copy.uid, copy.gid), (42, 43));
    assert_eq!(copy.mtime, before.mtime);
    let mut want_xattrs = before.xattrs.clone();
    want_xattrs.retain(|(n, _)| n != MARKER);
    want_xattrs.push(("user.x".into(), b"1".to_vec()));
    want_xattrs.sort();
    assert_eq!(
        copy.xattrs, want_xattrs,
        "xattrs (capabilities too) carried over"
    );
    let copy_ino = ino(&g.join("f"));
    let mut file = OpenOptions::new().write(true).open(&f).unwrap();
    file.write_all(b"again").unwrap();
    drop(file);
    assert_eq!(
        ino(&g.join("f")),
        copy_ino,
        "a private copy is never broken again"
    );
    assert_eq!(look(&obj), before);
    assert_eq!(fs::read_dir(&g).unwrap().count(), 1, "no temp files left");
}

#[test]
fn a_break_of_a_file_larger_than_a_copy_chunk_keeps_data_and_metadata() {
    if !require_root("a_break_of_a_file_larger_than_a_copy_chunk_keeps_data_and_metadata") {
        return;
    }
    // Larger than several 2 MiB copy chunks and not a multiple of a page: the
    // copy runs chunk by chunk, each written back as it goes.
    let len = (17 << 20) + 12345;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let content: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(&content, &[g.join("f")]);
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::lchown(&obj, Some(7), Some(8)).unwrap();
    let t = |sec, nsec| unifs::sys::Timestamp { sec, nsec };
    let f = fs::File::open(&obj).unwrap();
    unifs::sys::futimens(
        std::os::fd::AsFd::as_fd(&f),
        t(1_100_000_000, 123_456_789),
        t(1_200_000_000, 987_654_321),
    )
    .unwrap();
    drop(f);
    let before = look(&obj);
    let before_meta = fs::symlink_metadata(&obj).unwrap();
    let m = w.mount(&g, "m", &[]);
    set_xattr(&m.path("f"), "user.y", b"2"); // breaks, data untouched
    let copy = g.join("f");
    assert_ne!(ino(&copy), ino(&obj), "the guest's path is a private copy");
    // Before reading it: a read may move the atime.
    let meta = fs::symlink_metadata(&copy).unwrap();
    let after = look(&copy);
    assert!(after.content == content, "every byte of every chunk copied");
    assert_eq!(after.mode, before.mode);
    assert_eq!((after.uid, after.gid), (7, 8));
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_200_000_000, 987_654_321),
        "mtime to the nanosecond"
    );
    // The atime the guest was shown: a shared file's is its mtime (the
    // object's own moves with every guest's reads).
    assert_ne!(before_meta.atime(), meta.mtime());
    assert_eq!(
        (meta.atime(), meta.atime_nsec()),
        (1_200_000_000, 987_654_321),
        "atime as the guest saw it, to the nanosecond"
    );
    let mut want_xattrs = before.xattrs.clone();
    want_xattrs.retain(|(n, _)| n != MARKER);
    want_xattrs.push(("user.y".into(), b"2".to_vec()));
    want_xattrs.sort();
    assert_eq!(after.xattrs, want_xattrs);
    // A write into the second chunk lands in the copy only.
    let file = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    file.write_all_at(b"CHUNK2", 9 << 20).unwrap();
    drop(file);
    let mut want = content.clone();
    want[9 << 20..(9 << 20) + 6].copy_from_slice(b"CHUNK2");
    assert!(fs::read(m.path("f")).unwrap() == want);
    assert_eq!(look(&obj), before, "the store object is untouched");
    assert_eq!(fs::read_dir(&g).unwrap().count(), 1, "no temp files left");
}

#[test]
fn readers_open_before_the_break_keep_reading_the_old_data() {
    if !require_root("readers_open_before_the_break_keep_reading_the_old_data") {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let g = w.dir("g");
        let old: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        w.shared(&old, &[g.join("f")]);
        let m = w.mount(&g, "m", opts);
        let f = m.path("f");
        let mut reader = fs::File::open(&f).unwrap();
        let mut head = vec![0u8; 4096];
        reader.read_exact(&mut head).unwrap();
        assert_eq!(head, old[..4096]);
        let new = vec![b'N'; 1 << 20];
        fs::write(&f, &new).unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(
            rest == old[4096..],
            "{opts:?}: the old reader sees old data only"
        );
        reader.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert!(all == old, "{opts:?}: rereading the old fd");
        assert!(
            fs::read(&f).unwrap() == new,
            "{opts:?}: new opens see the new data"
        );
    }
}

#[test]
fn concurrent_writers_of_one_shared_file_break_it_once() {
    if !require_root("concurrent_writers_of_one_shared_file_break_it_once") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(CONTENT, &[g.join("f")]);
    let before = look(&obj);
    let m = w.mount(&g, "m", &[]);
    let f = m.path("f");
    std::thread::scope(|s| {
        for i in 0..8u8 {
            let f = &f;
            s.spawn(move || {
                let file = OpenOptions::new().write(true).open(f).unwrap();
                file.write_all_at(&[b'0' + i], i as u64).unwrap();
            });
        }
    });
    let got = fs::read(&f).unwrap();
    assert_eq!(&got[..8], b"01234567", "every writer wrote to the one copy");
    assert_eq!(look(&obj), before);
}

#[test]
fn a_write_open_racing_unify_breaks_the_file_unify_just_shared() {
    if !require_root("a_write_open_racing_unify_breaks_the_file_unify_just_shared") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"private\n").unwrap();
    let m = w.mount(&g, "m", &[]);
    let f = m.path("f");
    assert_eq!(fs::read(&f).unwrap(), b"private\n");
    // Unify's side: lease, marker, link into the store, release.
    unifs::sys::ignore_sigio();
    let held = fs::File::open(g.join("f")).unwrap();
    // The daemon holds the file open read-write until the kernel's release
    // of our read arrives; the lease needs no writer.
    let leased = wait_until(std::time::Duration::from_secs(30), || {
        unifs::sys::take_read_lease(std::os::fd::AsFd::as_fd(&held)).is_ok()
    });
    assert!(leased, "read lease");
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let r = OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|mut file| file.write_all(b"guest\n"));
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    // The guest's open waits for the lease (a fixed pause could end before
    // it came, on a loaded machine, and the race was not run).
    let waits = wait_until(std::time::Duration::from_secs(60), || {
        unifs::sys::lease_break_pending(std::os::fd::AsFd::as_fd(&held)).unwrap()
    });
    assert!(waits, "the guest's write open never met the lease");
    let hex = format!("{:064x}", 0xfeed);
    unifs::sys::xattr::set_fd(
        std::os::fd::AsFd::as_fd(&held),
        std::ffi::OsStr::new(MARKER),
        hex.as_bytes(),
    )
    .unwrap();
    let obj = w.store.join("objects").join(&hex[..2]).join(&hex[2..]);
    fs::create_dir_all(obj.parent().unwrap()).unwrap();
    fs::hard_link(g.join("f"), &obj).unwrap();
    unifs::sys::release_lease(std::os::fd::AsFd::as_fd(&held)).unwrap();
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the guest's write finished");
    writer.join().unwrap();
    assert_eq!(r, Ok(()));
    assert_eq!(
        fs::read(&obj).unwrap(),
        b"private\n",
        "the new object is untouched"
    );
    assert_eq!(fs::read(g.join("f")).unwrap(), b"private\nguest\n");
    assert_ne!(ino(&g.join("f")), ino(&obj), "the guest's path was broken");
}

#[test]
fn readers_and_writers_racing_on_shared_files_never_reach_the_store() {
    if !require_root("readers_and_writers_racing_on_shared_files_never_reach_the_store") {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        racing_readers_and_writers(opts);
    }
}

fn racing_readers_and_writers(opts: &[&str]) {
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    let mut objs = Vec::new();
    for i in 0..6 {
        let name = format!("f{i}");
        let content = format!("object {i}\n").repeat(1000);
        objs.push((
            w.shared(content.as_bytes(), &[ga.join(&name), gb.join(&name)]),
            content,
        ));
    }
    let befores: Vec<Look> = objs.iter().map(|(o, _)| look(o)).collect();
    let ma = w.mount(&ga, "ma", opts);
    let mb = w.mount(&gb, "mb", opts);
    std::thread::scope(|s| {
        for t in 0..6usize {
            let (ma, mb, objs) = (&ma, &mb, &objs);
            s.spawn(move || {
                for round in 0..30usize {
                    let i = (t + round / 3) % objs.len();
                    let (pa, pb) = (ma.path(&format!("f{i}")), mb.path(&format!("f{i}")));
                    match round % 3 {
                        0 => {
                            let mut f = OpenOptions::new().append(true).open(&pa).unwrap();
                            f.write_all(format!("t{t}\n").as_bytes()).unwrap();
                        }
                        1 => {
                            let got = fs::read(&pa).unwrap();
                            assert!(got.starts_with(objs[i].1.as_bytes()), "A's f{i} lost data");
                        }
                        _ => {
                            let mut r = fs::File::open(&pa).unwrap();
                            let mut head = [0u8; 9];
                            r.read_exact(&mut head).unwrap();
                            assert_eq!(&head, format!("object {i}\n").as_bytes());
                            assert_eq!(fs::read(&pb).unwrap(), objs[i].1.as_bytes(), "B's f{i}");
                        }
                    }
                }
            });
        }
    });
    for ((obj, content), before) in objs.iter().zip(&befores) {
        assert_eq!(&look(obj), before);
        assert_eq!(fs::read(obj).unwrap(), content.as_bytes());
    }
    for (i, (_, content)) in objs.iter().enumerate() {
        let a = fs::read_to_string(ga.join(format!("f{i}"))).unwrap();
        assert!(a.starts_with(content.as_str()), "f{i} kept its start");
        assert!(a.len() > content.len(), "f{i} got appends");
    }
}

#[test]
fn fchmod_on_a_read_only_fd_of_a_shared_file_shows_through_the_fd() {
    if !require_root("fchmod_on_a_read_only_fd_of_a_shared_file_shows_through_the_fd") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(CONTENT, &[g.join("f")]);
    let before = look(&obj);
    let m = w.mount(&g, "m", &[]);
    let f = fs::File::open(m.path("f")).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .unwrap();
    assert_eq!(f.metadata().unwrap().mode() & 0o777, 0o600, "fstat");
    assert_eq!(
        fs::metadata(m.path("f")).unwrap().mode() & 0o777,
        0o600,
        "stat"
    );
    assert_eq!(look(&obj), before);
}

#[test]
fn a_marker_of_any_value_makes_a_file_shared() {
    if !require_root("a_marker_of_any_value_makes_a_file_shared") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(CONTENT, &[g.join("f")]);
    set_xattr(&obj, MARKER, b"not an object id");
    let before = look(&obj);
    let m = w.mount(&g, "m", &[]);
    fs::write(m.path("f"), b"mine").unwrap();
    assert_eq!(look(&obj), before, "never written through");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"mine");
}

#[test]
fn a_marked_file_gc_unlinked_from_the_store_is_copied_before_a_change() {
    if !require_root("a_marked_file_gc_unlinked_from_the_store_is_copied_before_a_change") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(CONTENT, &[g.join("f")]);
    fs::remove_file(&obj).unwrap(); // gc took the store's link
    let m = w.mount(&g, "m", &[]);
    let mut f = OpenOptions::new().append(true).open(m.path("f")).unwrap();
    f.write_all(b"x").unwrap();
    drop(f);
    assert!(
        unifs::sys::xattr::get_path(&g.join("f"), std::ffi::OsStr::new(MARKER))
            .unwrap()
            .is_none(),
        "a changed file keeps no stale marker"
    );
}

#[test]
fn a_break_of_a_sparse_file_keeps_its_holes() {
    if !require_root("a_break_of_a_sparse_file_keeps_its_holes") {
        return;
    }
    use crate::tree::{allocated, hash_file, sparse_file};
    let len = 1 << 30;
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    fs::create_dir_all(gb.join("usr")).unwrap();
    for name in ["chmod", "write"] {
        sparse_file(&ga.join("usr").join(name), len);
        w.share(&[ga.join("usr").join(name), gb.join("usr").join(name)]);
    }
    let want = hash_file(&ga.join("usr/chmod"));
    let small = 4 << 20;
    assert!(allocated(&ga.join("usr/chmod")) < small);
    let m = w.mount(&ga, "ma", &[]);
    fs::set_permissions(m.path("usr/chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    // A write into a hole allocates that block only.
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("usr/write"))
        .unwrap();
    f.write_all_at(b"in a hole", 3 << 28).unwrap();
    drop(f);
    for name in ["chmod", "write"] {
        let backing = ga.join("usr").join(name);
        assert_eq!(fs::metadata(&backing).unwrap().nlink(), 1, "{name}: broken");
        assert_eq!(fs::metadata(&backing).unwrap().len(), len);
        assert!(
            allocated(&backing) < small,
            "{name}: the private copy allocated {} bytes",
            allocated(&backing)
        );
        assert_eq!(hash_file(&gb.join("usr").join(name)), want, "{name}: B");
    }
    assert_eq!(hash_file(&m.path("usr/chmod")), want, "content kept");
    assert_eq!(hash_file(&ga.join("usr/chmod")), want);
    let f = fs::File::open(m.path("usr/write")).unwrap();
    let mut got = [0u8; 9];
    f.read_exact_at(&mut got, 3 << 28).unwrap();
    assert_eq!(&got, b"in a hole");
    let mut edges = vec![0u8; 65536];
    f.read_exact_at(&mut edges, len - 65536).unwrap();
    assert!(edges == crate::tree::bytes(3, 65536), "the last data block");
    f.read_exact_at(&mut edges, 0).unwrap();
    assert!(
        edges == crate::tree::bytes(1, 65536),
        "the first data block"
    );
}

/// The mtime of a path, to the nanosecond.
fn mtime_ns(path: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec())
}

#[test]
fn a_write_to_a_shared_file_leaves_its_directory_mtime_alone() {
    if !require_root("a_write_to_a_shared_file_leaves_its_directory_mtime_alone") {
        return;
    }
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    for g in [&ga, &gb] {
        fs::create_dir_all(g.join("etc")).unwrap();
    }
    for name in ["write", "chmod", "trunc"] {
        w.shared(
            CONTENT,
            &[ga.join("etc").join(name), gb.join("etc").join(name)],
        );
    }
    let old = (1_300_000_000, 123_456_789);
    let t = unifs::sys::Timestamp {
        sec: old.0,
        nsec: old.1 as u32,
    };
    unifs::sys::lutimens(&ga.join("etc"), t, t).unwrap();
    {
        let m = w.mount(&ga, "ma", &[]);
        assert_eq!(mtime_ns(&m.path("etc")), old);
        let f = OpenOptions::new()
            .write(true)
            .open(m.path("etc/write"))
            .unwrap();
        f.write_all_at(b"mine", 0).unwrap();
        drop(f);
        fs::set_permissions(m.path("etc/chmod"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(m.path("etc/trunc"), b"rewritten").unwrap();
        assert_eq!(fs::read(m.path("etc/write")).unwrap()[..4], *b"mine");
        for name in ["write", "chmod", "trunc"] {
            assert_eq!(
                fs::metadata(ga.join("etc").join(name)).unwrap().nlink(),
                1,
                "{name} was broken"
            );
        }
        assert_eq!(mtime_ns(&m.path("etc")), old, "through the mount");
        assert_eq!(mtime_ns(&ga.join("etc")), old, "on the backing tree");
        let names: Vec<_> = fs::read_dir(ga.join("etc")).unwrap().collect();
        assert_eq!(names.len(), 3, "no temp name left");
    }
    // A fresh mount has no attributes cached: it reads the backing directory.
    let m = w.mount(&ga, "ma2", &[]);
    assert_eq!(mtime_ns(&m.path("etc")), old, "through a fresh mount");
    // A change of the directory itself still shows.
    fs::write(m.path("etc/new"), b"new").unwrap();
    assert_ne!(mtime_ns(&m.path("etc")), old, "a create changes the mtime");
}

#[test]
fn a_break_does_not_show_when_other_guests_read_the_object() {
    if !require_root("a_break_does_not_show_when_other_guests_read_the_object") {
        return;
    }
    let w = World::new();
    let (ga, gb) = (w.dir("ga"), w.dir("gb"));
    w.shared(CONTENT, &[ga.join("f"), gb.join("f")]);
    let ma = w.mount(&ga, "ma", &[]);
    let mb = w.mount(&gb, "mb", &[]);
    let before = fs::metadata(ma.path("f")).unwrap();
    // Guest B reads its file (the object's atime moves, relatime).
    fs::read(mb.path("f")).unwrap();
    // Guest A changes only the mode of its file.
    fs::set_permissions(ma.path("f"), fs::Permissions::from_mode(0o600)).unwrap();
    let after = fs::metadata(ma.path("f")).unwrap();
    assert_eq!(
        (after.atime(), after.atime_nsec()),
        (before.atime(), before.atime_nsec()),
        "a chmod does not move A's atime to when guest B last read the object"
    );
}
