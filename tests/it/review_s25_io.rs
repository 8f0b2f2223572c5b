//! Review s25 (I/O): a failed write reopen of a shared file through a magic
//! link (`echo x >/dev/fd/3`) emptied the guest's file; SEEK_DATA on a file
//! the daemon serves missed data written through a mapping; docs/mount.md
//! left out sync_file_range and gave the wrong errno for the inode-flag
//! ioctls.

use crate::common::require_root;
use crate::fs::harness::{errno, World};
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

const CONF: &[u8] = b"important=1\nsetting=1\n";

/// Opens `path` with `flags` (mode 0644 for O_CREAT).
fn open_flags(path: &str, flags: i32) -> std::io::Result<File> {
    let acc = flags & libc::O_ACCMODE;
    OpenOptions::new()
        .read(acc != libc::O_WRONLY)
        .write(acc != libc::O_RDONLY)
        .custom_flags(flags & !libc::O_ACCMODE)
        .mode(0o644)
        .open(path)
}

/// The tester's steps: a shell holding a shared file open on fd 3 writes
/// it through /dev/fd/3. The open failed with ESTALE after the break had
/// already put an empty copy under the guest's name. A write reopen
/// through a magic link of a file other fds hold on the store's object
/// still fails (ESTALE, as documented), but the file keeps its content: an
/// O_TRUNC one changes nothing (the file stays shared); one without it
/// leaves the path its private copy. A write open by path works.
#[test]
fn a_failed_write_reopen_through_a_magic_link_leaves_the_file_whole() {
    if !require_root("review_s25_magic_link_reopen") {
        return;
    }
    let cases: Vec<(&str, i32)> = ["/proc/self/fd", "/dev/fd"]
        .into_iter()
        .flat_map(|via| {
            [
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                libc::O_RDONLY | libc::O_TRUNC,
                libc::O_RDWR | libc::O_TRUNC,
                libc::O_RDWR,
                libc::O_WRONLY,
            ]
            .map(|flags| (via, flags))
        })
        .collect();
    for opts in [&[][..], &["nopassthrough"][..]] {
        let w = World::new();
        let (g, other) = (w.dir("g"), w.dir("other"));
        let share = |name: &str| w.shared(CONF, &[g.join(name), other.join(name)]);
        let obj = share("app.conf");
        let objs: Vec<_> = (0..cases.len()).map(|i| share(&format!("c{i}"))).collect();
        let links = fs::metadata(&obj).unwrap().nlink();
        let m = w.mount(&g, "m", opts);
        let path = m.path("app.conf");

        let out = Command::new("bash")
            .arg("-c")
            .arg("exec 3<\"$1\"; echo setting=2 >/dev/fd/3")
            .arg("-")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{opts:?}: {err}");
        assert!(err.contains("Stale file handle"), "{opts:?}: {err}");
        assert_eq!(fs::read(&path).unwrap(), CONF, "{opts:?}: bash");
        assert_eq!(fs::metadata(&obj).unwrap().nlink(), links, "{opts:?}: bash");

        for (i, &(via, flags)) in cases.iter().enumerate() {
            let path = m.path(&format!("c{i}"));
            let reader = File::open(&path).unwrap();
            let link = format!("{via}/{}", reader.as_raw_fd());
            let what = format!("{opts:?} {link} flags {flags:#o}");
            // Twice: the kernel's retry, and a caller's own.
            for _ in 0..2 {
                assert_eq!(errno(open_flags(&link, flags)), libc::ESTALE, "{what}");
                assert_eq!(fs::read(&path).unwrap(), CONF, "{what}");
                assert_eq!(fs::read(&link).unwrap(), CONF, "{what}: the reader's");
            }
            let shared = fs::metadata(&objs[i]).unwrap().nlink() == links;
            assert_eq!(shared, flags & libc::O_TRUNC != 0, "{what}: still shared");
            assert_eq!(fs::read(&objs[i]).unwrap(), CONF, "{what}");
            assert_eq!(fs::read(other.join(format!("c{i}"))).unwrap(), CONF);
        }

        // By path the open works while the reader holds the old file.
        let reader = File::open(&path).unwrap();
        fs::write(&path, b"setting=2\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"setting=2\n", "{opts:?}");
        assert_eq!(fs::read(g.join("app.conf")).unwrap(), b"setting=2\n");
        let link = format!("/proc/self/fd/{}", reader.as_raw_fd());
        assert_eq!(fs::read(&link).unwrap(), CONF, "{opts:?}");
        assert_eq!(fs::read(&obj).unwrap(), CONF);
        assert_eq!(fs::read(other.join("app.conf")).unwrap(), CONF);
        drop(reader);
    }
}

/// lseek(fd, off, whence) as a Result.
fn lseek(fd: &File, off: i64, whence: i32) -> std::io::Result<i64> {
    // SAFETY: lseek on an fd `fd` keeps open.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

const MIB: usize = 1 << 20;

/// A 4 MiB sparse file at `path` (opened first with `first_flags`), with
/// "MMAPD" written at 3 MiB through a shared mapping that is not synced,
/// then what SEEK_DATA from 0, and SEEK_HOLE from the data it found, answer
/// on a second fd.
fn seek_after_mmap_write(path: &Path, first_flags: i32) -> (i64, i64) {
    let first = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(first_flags)
        .open(path)
        .unwrap();
    first.set_len(4 * MIB as u64).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: a fresh shared mapping of 4 MiB of `f`, which is 4 MiB long;
    // unmapped below, and written only within its bounds.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4 * MIB,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(b"MMAPD".as_ptr(), p.cast::<u8>().add(3 * MIB), 5);
        let data = lseek(&f, 0, libc::SEEK_DATA).unwrap_or(-1);
        let hole = lseek(&f, data.max(0), libc::SEEK_HOLE).unwrap_or(-1);
        libc::munmap(p, 4 * MIB);
        (data, hole)
    }
}

/// SEEK_DATA on a file the daemon serves answered from the backing file,
/// which has not seen the mapping's write yet: ENXIO, so a sparse-aware
/// copier skipped the data. The daemon now answers as the kernel does for
/// a filesystem without SEEK_DATA (all of the file is data); a passed
/// through file keeps its exact answer.
#[test]
fn seek_data_finds_data_written_through_a_mapping() {
    if !require_root("review_s25_seek_data_mmap") {
        return;
    }
    let w = World::new();
    let (g, gn) = (w.dir("g"), w.dir("gn"));
    let m = w.mount(&g, "m", &[]);
    let mn = w.mount(&gn, "mn", &["nopassthrough"]);
    let end = 4 * MIB as i64;
    // Served by the daemon: no holes, all data.
    assert_eq!(seek_after_mmap_write(&mn.path("s"), 0), (0, end));
    assert_eq!(
        seek_after_mmap_write(&m.path("a"), libc::O_APPEND),
        (0, end)
    );
    // Passed through: the backing file's exact answer, the mapping's data
    // included (ext4 counts its dirty pages as data).
    let (data, hole) = seek_after_mmap_write(&m.path("p"), 0);
    assert_eq!(data, 3 * MIB as i64, "passthrough");
    assert!(hole > data && hole <= end, "passthrough: hole at {hole}");
    // A plain sparse file through passthrough: exact, holes and all.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("sparse"))
        .unwrap();
    f.set_len(4 * MIB as u64).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"x", MIB as u64).unwrap();
    assert_eq!(lseek(&f, 0, libc::SEEK_DATA).unwrap(), MIB as i64);
    // Past the end: ENXIO, passed through or served.
    assert_eq!(errno(lseek(&f, end, libc::SEEK_DATA)), libc::ENXIO);
    assert_eq!(errno(lseek(&f, end, libc::SEEK_HOLE)), libc::ENXIO);
    let served = File::open(mn.path("s")).unwrap();
    assert_eq!(errno(lseek(&served, end, libc::SEEK_DATA)), libc::ENXIO);
    assert_eq!(errno(lseek(&served, end, libc::SEEK_HOLE)), libc::ENXIO);
    assert_eq!(lseek(&served, 5, libc::SEEK_DATA).unwrap(), 5);
    assert_eq!(lseek(&served, 5, libc::SEEK_HOLE).unwrap(), end);
    assert_eq!(
        fs::read(gn.join("s")).unwrap()[3 * MIB..3 * MIB + 5],
        *b"MMAPD"
    );
}

/// The inode-flag ioctls of lsattr/chattr answered ENOTTY (docs said
/// EOPNOTSUPP); they are served since s36 (review_s36_attrflags), and
/// every other ioctl answers ENOTTY, as docs/mount.md says.
#[test]
fn inode_flag_ioctls_answer_enotty() {
    if !require_root("review_s25_inode_flag_ioctls") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("f"), b"hi\n").unwrap();
    let m = w.mount(&g, "m", &[]);
    let f = File::open(m.path("f")).unwrap();
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
    const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
    for (req, ok) in [
        (FS_IOC_GETFLAGS, true),
        (FS_IOC_FSGETXATTR, true),
        (FS_IOC_GETVERSION, false),
    ] {
        let mut buf = [0u8; 32];
        // SAFETY: a 32-byte buffer, more than any of these ioctls reads or
        // writes (4, 28 or 8 bytes).
        let r = unsafe { libc::ioctl(f.as_raw_fd(), req, buf.as_mut_ptr()) };
        let e = std::io::Error::last_os_error().raw_os_error();
        match ok {
            true => assert_eq!(r, 0, "ioctl {req:#x}: {e:?}"),
            false => assert_eq!((r, e), (-1, Some(libc::ENOTTY)), "ioctl {req:#x}"),
        }
    }
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mount.md")).unwrap();
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        doc.contains("every ioctl but the four of the inode flags"),
        "docs/mount.md names the ioctls served"
    );
}

/// docs/mount.md "Power cuts" names sync_file_range among the synced
/// writes that never reach the daemon.
#[test]
fn power_cuts_doc_names_sync_file_range() {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mount.md")).unwrap();
    let cuts = doc.split("## Power cuts").nth(1).unwrap();
    let cuts = cuts.split("\n## ").next().unwrap();
    assert!(
        cuts.contains("sync_file_range"),
        "Power cuts: sync_file_range"
    );
}
