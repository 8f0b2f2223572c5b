//! POSIX success paths: the same operations by a non-root user on the mount
//! and on a plain directory leave the same tree (types, modes, owners —
//! files belong to their creator, set-group-ID directories pass their group
//! on — sizes, link counts, contents, symlink targets).

use super::errors::{c, run_as, Op};
use super::harness::*;
use crate::common::require_root;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const USER: u32 = 1000;

fn build(base: &Path) {
    for (d, mode) in [("pub", 0o777), ("sg", 0o2777)] {
        fs::create_dir(base.join(d)).unwrap();
        fs::set_permissions(base.join(d), fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::chown(base.join("sg"), None, Some(4242)).unwrap();
}

fn ops(b: &Path) -> Vec<(&'static str, Op)> {
    vec![
        ("create", Op::Create(c(b, "pub/f"))),
        ("write", Op::Write(c(b, "pub/f"), b"hello\n")),
        ("mkdir", Op::Mkdir(c(b, "pub/d"))),
        ("symlink", Op::Symlink(c(b, "pub/s"))),
        ("mkfifo", Op::Mkfifo(c(b, "pub/p"))),
        ("create in setgid dir", Op::Create(c(b, "sg/f"))),
        ("create in setgid dir", Op::Create(c(b, "sg/e"))),
        ("mkdir in setgid dir", Op::Mkdir(c(b, "sg/d"))),
        ("rename", Op::Rename(c(b, "pub/f"), c(b, "pub/g"), 0)),
        ("link", Op::Link(c(b, "pub/g"), c(b, "pub/h"))),
        (
            "exchange",
            Op::Rename(c(b, "pub/d"), c(b, "pub/s"), libc::RENAME_EXCHANGE),
        ),
        ("chmod", Op::Chmod(c(b, "pub/h"))),
        ("utimes", Op::Utimes(c(b, "pub/g"), false)),
        ("truncate", Op::Truncate(c(b, "sg/f"))),
        ("rename over", Op::Rename(c(b, "pub/p"), c(b, "sg/f"), 0)),
        ("rmdir", Op::Rmdir(c(b, "sg/d"))),
    ]
}

/// (path, type+mode, uid, gid, size of files, nlink, content, link target)
fn snapshot(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let extra = if m.file_type().is_file() {
            format!("size={} {:?}", m.size(), fs::read(e.path()).unwrap())
        } else if m.file_type().is_symlink() {
            format!("-> {:?}", fs::read_link(e.path()).unwrap())
        } else {
            String::new()
        };
        let nlink = if m.is_dir() { 0 } else { m.nlink() };
        out.push(format!(
            "{rel} mode={:o} {}:{} nlink={nlink} mtime={} {extra}",
            m.mode(),
            m.uid(),
            m.gid(),
            if m.file_type().is_file() && rel == "pub/g" {
                m.mtime()
            } else {
                0
            },
        ));
    }
    out
}

#[test]
fn a_users_changes_leave_the_same_tree_as_on_a_plain_directory() {
    if !require_root("a_users_changes_leave_the_same_tree_as_on_a_plain_directory") {
        return;
    }
    let w = World::new();
    let plain = w.dir("plain");
    let g = w.dir("g");
    build(&plain);
    build(&g);
    let m = w.mount(&g, "m", &[]);
    let want_ops = ops(&plain);
    let got_ops = ops(&m.dir);
    let want = run_as(USER, &want_ops);
    let got = run_as(USER, &got_ops);
    assert!(want.iter().all(|e| *e == 0), "plain dir: {want:?}");
    assert_eq!(got, want, "errnos on the mount");
    let (want, through, backing) = (snapshot(&plain), snapshot(&m.dir), snapshot(&g));
    assert_eq!(through, want, "the guest's view");
    assert_eq!(backing, want, "the backing tree");
    assert!(want
        .iter()
        .any(|l| l.starts_with("pub/g ") && l.contains("1000:1000")));
    assert!(want
        .iter()
        .any(|l| l.starts_with("sg/e ") && l.contains("1000:4242")));
    assert!(fs::metadata(g.join("pub/g")).unwrap().uid() == USER);
}

#[test]
fn an_unlinked_open_file_keeps_working() {
    if !require_root("an_unlinked_open_file_keeps_working") {
        return;
    }
    use std::io::{Read, Seek, SeekFrom, Write};
    let w = World::new();
    let g = w.dir("g");
    let m = w.mount(&g, "m", &[]);
    let p = m.path("tmpfile");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    fs::remove_file(&p).unwrap();
    f.write_all(b"hello world").unwrap();
    f.set_len(5).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .unwrap();
    let meta = f.metadata().unwrap();
    assert_eq!(
        (meta.len(), meta.mode() & 0o777, meta.nlink()),
        (5, 0o600, 0)
    );
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");
    assert_eq!(fs::read_dir(&g).unwrap().count(), 0);
}

#[test]
fn listings_follow_changes_through_the_mount() {
    if !require_root("listings_follow_changes_through_the_mount") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::write(g.join("a"), b"a").unwrap();
    let m = w.mount(&g, "m", &[]);
    let names = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&m.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(), ["a"]);
    assert_eq!(names(), ["a"]);
    fs::write(m.path("b"), b"b").unwrap();
    assert_eq!(names(), ["a", "b"]);
    fs::rename(m.path("a"), m.path("c")).unwrap();
    assert_eq!(names(), ["b", "c"]);
    fs::remove_file(m.path("b")).unwrap();
    fs::create_dir(m.path("d")).unwrap();
    assert_eq!(names(), ["c", "d"]);
}

#[test]
fn file_io_calls_pass_through() {
    if !require_root("file_io_calls_pass_through") {
        return;
    }
    use std::os::fd::AsRawFd;
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(b"0123456789", &[g.join("shared")]);
    let m = w.mount(&g, "m", &[]);
    // copy_file_range from a shared file into a new one
    let src = fs::File::open(m.path("shared")).unwrap();
    let dst = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.path("copy"))
        .unwrap();
    let (mut off_in, mut off_out) = (2i64, 0i64);
    // SAFETY: valid fds and offsets we own.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            5,
            0,
        )
    };
    assert_eq!(n, 5, "{}", std::io::Error::last_os_error());
    dst.sync_all().unwrap();
    dst.sync_data().unwrap();
    drop(dst);
    assert_eq!(fs::read(m.path("copy")).unwrap(), b"23456");
    assert_eq!(fs::read(&obj).unwrap(), b"0123456789");
    // a sparse file: SEEK_DATA / SEEK_HOLE and punching a hole
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(m.path("sparse"))
        .unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"data", 1 << 20).unwrap();
    // SAFETY: plain fd and integer arguments.
    let data = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
    assert_eq!(data, 1 << 20);
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
    assert_eq!(hole, 0);
    // SAFETY: as above.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            1 << 20,
            4096,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    let mut buf = [1u8; 4];
    f.read_exact_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(buf, [0; 4]);
    // statfs is the backing filesystem's
    let sv = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a zeroed statvfs is valid plain data for the kernel to fill.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: NUL-terminated path and a valid buffer.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        (s.f_blocks, s.f_bsize, s.f_files)
    };
    assert_eq!(sv(&m.dir), sv(&g));
}

#[test]
fn files_created_set_id_keep_their_mode() {
    if !require_root("files_created_set_id_keep_their_mode") {
        return;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let w = World::new();
    let (plain, g) = (w.dir("plain"), w.dir("g"));
    let m = w.mount(&g, "m", &[]);
    for mode in [0o4755, 0o2755, 0o6755] {
        let modes: Vec<u32> = [&plain, &m.dir]
            .iter()
            .map(|base| {
                let p = base.join(format!("f{mode:o}"));
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&p)
                    .unwrap();
                fs::metadata(&p).unwrap().mode() & 0o7777
            })
            .collect();
        assert_eq!(
            modes[1], modes[0],
            "open(O_CREAT, {mode:o}): mount vs plain dir"
        );
    }
}

#[test]
fn o_rdonly_o_trunc_of_a_shared_file_reads_the_truncated_file() {
    if !require_root("o_rdonly_o_trunc_of_a_shared_file_reads_the_truncated_file") {
        return;
    }
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let w = World::new();
    let g = w.dir("g");
    let obj = w.shared(b"shared content\n", &[g.join("f")]);
    let m = w.mount(&g, "m", &[]);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_TRUNC)
        .open(m.path("f"))
        .unwrap();
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0);
    assert_eq!(
        got, b"",
        "read through the fd that truncated the file (ext4: empty)"
    );
    assert_eq!(fs::read(&obj).unwrap(), b"shared content\n");
}

#[test]
fn dot_dot_in_a_listing_is_the_parent() {
    if !require_root("dot_dot_in_a_listing_is_the_parent") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir_all(g.join("x/y")).unwrap();
    let m = w.mount(&g, "m", &[]);
    let dir = std::ffi::CString::new(m.path("x/y").into_os_string().into_encoded_bytes()).unwrap();
    let mut listed = Vec::new();
    // SAFETY: `dir` is NUL-terminated; each dirent is read before the next
    // readdir and the stream is closed at the end.
    unsafe {
        let d = libc::opendir(dir.as_ptr());
        assert!(!d.is_null());
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_owned();
            listed.push((name, (*e).d_ino));
        }
        libc::closedir(d);
    }
    let dotdot = listed
        .iter()
        .find(|(n, _)| n.as_bytes() == b"..")
        .unwrap()
        .1;
    assert_eq!(
        dotdot,
        fs::metadata(m.path("x")).unwrap().ino(),
        "d_ino of .. (ext4: the parent)"
    );
}
