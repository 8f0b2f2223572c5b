//! Review s43-odirect: where the mount answered otherwise than ext4.
//! O_DIRECT reads that end past the end of file, or cover a hole and
//! data, failed with EINVAL where ext4 reads (it checks the alignment of
//! the parts it reads from the disk only); `chattr -e` of a large shared
//! file, and a truncate(2) of one past ext4's largest file, copied it
//! before ext4 refused; ext4's old EOFBLOCKS bit was refused; and the
//! daemon's fd reserve did not grow with its threads.

use crate::common::require_root;
use crate::fs::harness::{errno, Ext4, Mount, World};
use crate::review_s36_attrflags::flags;
use crate::review_s42_stressng::set_flags;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Pages for O_DIRECT buffers: aligned as any disk needs.
#[repr(C, align(4096))]
pub(crate) struct Pages(pub(crate) [u8; 32768]);

fn answer(r: isize) -> String {
    match r {
        r if r < 0 => match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINVAL) => "EINVAL".to_owned(),
            e => format!("errno {e:?}"),
        },
        r => format!("{r}"),
    }
}

/// The file every case runs on: data in [0, 4096), a hole in
/// [4096, 8192), data in [8192, 20000), 20,000 bytes in all (its last
/// block, [16384, 20480), partly past the end).
pub(crate) fn lay_out(path: &Path) {
    let f = File::create(path).unwrap();
    f.write_all_at(&[b'a'; 4096], 0).unwrap();
    f.write_all_at(&[b'b'; 20000 - 8192], 8192).unwrap();
    f.sync_all().unwrap();
}

/// (what, offset, length, buffer's distance from a page start).
const READS: &[(&str, i64, usize, usize)] = &[
    ("aligned, in data", 0, 4096, 0),
    ("length 100, in data", 0, 100, 0),
    ("offset 1, in data", 1, 4096, 0),
    ("unaligned, wholly in the hole", 4097, 100, 0),
    ("unaligned start in the hole, end in data", 4196, 4096, 0),
    ("unaligned start in the hole, end at data", 4196, 3996, 0),
    ("aligned start, ends past EOF (aligned)", 19968, 4096, 0),
    ("aligned start, ends past EOF in EOF's block", 19968, 100, 0),
    ("aligned start, ends past EOF's block", 16384, 5000, 0),
    ("the whole file, length = size", 0, 20000, 0),
    ("the whole file and more, length 30000", 0, 30000, 0),
    ("over data, hole, data, ends past EOF", 0, 20481, 0),
    ("at EOF, unaligned", 20000, 100, 0),
    ("past EOF, unaligned", 24577, 100, 0),
    ("aligned, buffer 512 into a page", 0, 4096, 512),
];

/// Each of [`READS`] on an O_DIRECT read-only open of `path`.
fn read_cases(path: &Path) -> Vec<String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut buf = Box::new(Pages([0; 32768]));
    READS
        .iter()
        .map(|&(what, off, len, mis)| {
            let r = pread(f.as_raw_fd(), &mut buf.0[mis..mis + len], off);
            format!("read {what} ({off}, {len}): {r}")
        })
        .collect()
}

pub(crate) fn pread(fd: RawFd, buf: &mut [u8], off: i64) -> String {
    // SAFETY: `buf` is valid and writable for its length.
    answer(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) })
}

fn pwrite(fd: RawFd, buf: &[u8], off: i64) -> String {
    // SAFETY: `buf` is valid for its length.
    answer(unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) })
}

/// (what, offset, length): each on a fresh [`lay_out`] file.
const WRITES: &[(&str, i64, usize)] = &[
    ("aligned, in data", 0, 4096),
    ("length 100, in data", 0, 100),
    ("offset 1, in data", 1, 4096),
    ("unaligned, in the hole", 4097, 100),
    ("aligned, in the hole", 4096, 4096),
    ("aligned start, extends the file (aligned)", 19968, 4096),
    ("aligned start, extends the file, length 100", 19968, 100),
    ("at EOF, unaligned", 20000, 512),
    ("past EOF, aligned", 24576, 4096),
    ("past EOF, unaligned", 24577, 100),
];

/// Each of [`WRITES`] on `dir/NAME` made by `make(path)`: its answer and
/// the size after.
fn write_cases(dir: &Path, make: &dyn Fn(&Path)) -> Vec<String> {
    let buf = Box::new(Pages([b'W'; 32768]));
    WRITES
        .iter()
        .enumerate()
        .map(|(i, &(what, off, len))| {
            let path = dir.join(format!("w{i}"));
            make(&path);
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .unwrap();
            let r = pwrite(f.as_raw_fd(), &buf.0[..len], off);
            drop(f);
            let size = fs::metadata(&path).unwrap().len();
            format!("write {what} ({off}, {len}): {r}, size {size}")
        })
        .collect()
}

/// [`lay_out`] as `shared` (shared with guest `h`) and `private` in guest
/// `g`, mounted with `opts`, and as their twins in a plain directory, all
/// on one fresh ext4; `also` runs in `g` and the plain directory. The
/// mount, the plain directory, then what must outlive the mount.
pub(crate) fn twins_on_ext4(
    opts: &[&str],
    also: impl Fn(&Path),
) -> (Mount, std::path::PathBuf, World, Ext4) {
    let ext4 = Ext4::new(&[], &[]);
    let w = World::new_in(&ext4.root());
    let (g, h, plain) = (w.dir("g"), w.dir("h"), w.dir("plain"));
    for d in [&g, &plain] {
        lay_out(&d.join("shared"));
        lay_out(&d.join("private"));
        also(d);
    }
    w.share(&[g.join("shared"), h.join("shared")]);
    let m = w.mount(&g, "m", opts);
    (m, plain, w, ext4)
}

/// The O_DIRECT cases on a shared file, a private one and fresh private
/// files of guest `g` through a mount with `opts`, and on their twins in
/// a plain directory of the same ext4.
fn direct_through_mount_and_on_ext4(opts: &[&str]) {
    let (m, plain, _w, _ext4) = twins_on_ext4(opts, |d| fs::create_dir(d.join("w")).unwrap());
    let run = |root: &Path| {
        let mut v = read_cases(&root.join("shared"));
        v.extend(read_cases(&root.join("private")));
        v.extend(write_cases(&root.join("w"), &lay_out));
        v
    };
    let on_ext4 = run(&plain);
    let on_mount = run(&m.dir);
    let table: Vec<String> = on_ext4
        .iter()
        .zip(&on_mount)
        .map(|(e, m)| format!("{e:70} | mount: {}", m.rsplit(": ").next().unwrap()))
        .collect();
    eprintln!("{opts:?}\n{}", table.join("\n"));
    assert_eq!(
        on_mount, on_ext4,
        "{opts:?}: through the mount, then on ext4"
    );
    drop(m);
}

/// O_DIRECT reads and writes through the mount answer as on ext4, with
/// passthrough: the mount refused with EINVAL every read whose offset or
/// length was unaligned but for one wholly in a hole or at the end, where
/// ext4 checks only the parts it reads from the disk (a read ending past
/// the end of file, or starting in a hole, reads).
#[test]
fn s43_direct_io_answers_as_on_ext4() {
    if !require_root("s43_direct_io_answers_as_on_ext4") {
        return;
    }
    direct_through_mount_and_on_ext4(&[]);
}

/// [`s43_direct_io_answers_as_on_ext4`] without passthrough.
#[test]
fn s43_direct_io_answers_as_on_ext4_without_passthrough() {
    if !require_root("s43_direct_io_answers_as_on_ext4_without_passthrough") {
        return;
    }
    direct_through_mount_and_on_ext4(&["nopassthrough"]);
}

/// A mount of `g` whose daemon may hold `limit` fds, with `threads` FUSE
/// threads.
fn mount_with_fds(w: &World, g: &Path, limit: u32, threads: u32) -> Mount {
    let mp = w.dir("m");
    let log = File::create(mp.with_extension("log")).unwrap();
    let nofile = format!("--nofile={limit}:{limit}");
    let wrapper = ["prlimit", nofile.as_str(), "--"];
    let threads = format!("threads={threads}");
    Mount::start_under(&wrapper, &w.store, g, &mp, &[threads.as_str()], log)
}

/// Branch `i` of [`deep_branches`]: 34 levels down.
fn deep(root: &Path, i: usize) -> std::path::PathBuf {
    let mut p = root.join(format!("b{i}"));
    for _ in 0..33 {
        p.push("d");
    }
    p
}

/// 40 branches of 34 levels: a lookup at the bottom of each has the
/// daemon's directory cache hold a directory (two fds), 32 at most.
fn deep_branches(root: &Path) {
    for i in 0..40 {
        fs::create_dir_all(deep(root, i)).unwrap();
        fs::write(deep(root, i).join("f"), b"f\n").unwrap();
    }
}

/// A guest holding open as many directories as the daemon lets it, then
/// walking 40 deep directories (its cache holds 64 fds) and making,
/// renaming and removing names in 64 threads at once, through a daemon of
/// 64 threads and 4,096 fds: every request works, as on ext4, and the log
/// says how far below its limit the daemon refused the opens. The daemon
/// kept a 64th of its limit, 64 fds, whatever its threads and cache: the
/// cache alone took them, and lookups or mkdirs failed with EMFILE.
#[test]
fn s43_the_fd_reserve_follows_the_threads_and_the_directory_cache() {
    if !require_root("s43_the_fd_reserve_follows_the_threads_and_the_directory_cache") {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    fs::create_dir(g.join("held")).unwrap();
    fs::create_dir(g.join("work")).unwrap();
    deep_branches(&g);
    let m = mount_with_fds(&w, &g, 4096, 64);
    let mut held = Vec::new();
    let refused = loop {
        match File::open(m.path("held")) {
            Ok(f) => held.push(f),
            Err(e) => break e,
        }
        assert!(held.len() < 5000, "the daemon's 4,096 fds did not run out");
    };
    assert_eq!(refused.raw_os_error(), Some(libc::EMFILE), "{refused}");
    for i in 0..40 {
        let f = deep(&m.dir, i).join("f");
        fs::metadata(&f).unwrap_or_else(|e| panic!("stat {}: {e}", f.display()));
    }
    std::thread::scope(|s| {
        for t in 0..64 {
            let m = &m;
            s.spawn(move || {
                let dir = match t % 2 {
                    0 => deep(&m.dir, t % 40),
                    _ => m.path("work"),
                };
                for i in 0..10 {
                    let (a, b) = (dir.join(format!("t{t}-{i}")), dir.join(format!("r{t}-{i}")));
                    fs::create_dir(&a).unwrap_or_else(|e| panic!("mkdir {}: {e}", a.display()));
                    fs::rename(&a, &b).unwrap_or_else(|e| panic!("rename {}: {e}", a.display()));
                    fs::remove_dir(&b).unwrap_or_else(|e| panic!("rmdir {}: {e}", b.display()));
                }
            });
        }
    });
    let log = fs::read_to_string(&m.log).unwrap();
    assert!(
        log.contains("open-file limit (4096) less the 608 fds it keeps for requests"),
        "{log}"
    );
    drop(held);
}

const FS_SYNC_FL: u32 = 0x8;
const FS_EXTENT_FL: u32 = 0x8_0000;
const EXT4_EOFBLOCKS_FL: u32 = 0x40_0000;

/// The SETFLAGS that sets `f(flags)` on `name` through the mount and on
/// its twin in `plain`: their answers (errno, flags after), mount's first.
fn set_both(m: &Mount, plain: &Path, name: &str, f: impl Fn(u32) -> u32) -> [(i32, u32); 2] {
    [m.path(name), plain.join(name)].map(|p| {
        let (r, after) = set_flags(&p, f(flags(&p)));
        (errno(r), after)
    })
}

/// The inode and link count of `path`.
fn links(path: &Path) -> (u64, u64) {
    let md = fs::metadata(path).unwrap();
    (md.ino(), md.nlink())
}

/// `chattr -e` of a shared file of 1 MiB fails as on ext4 (EOPNOTSUPP: ext4
/// maps by blocks only a file within its first 12 blocks), and the file
/// stays shared: it was copied first, and stayed private. A small shared
/// file loses `e` as on ext4 (its copy does), and a `-e +s` of the large
/// one sets `s` before ext4 refuses `e`, as on ext4 (guards: those break).
#[test]
fn s43_chattr_minus_e_of_a_large_shared_file_is_refused_without_a_copy() {
    if !require_root("s43_chattr_minus_e_of_a_large_shared_file_is_refused_without_a_copy") {
        return;
    }
    let ext4 = Ext4::new(&[], &[]);
    let w = World::new_in(&ext4.root());
    let (g, h, plain) = (w.dir("g"), w.dir("h"), w.dir("plain"));
    let big = vec![7u8; 1 << 20];
    let small = vec![8u8; 5000];
    for (name, data) in [("big", &big), ("small", &small), ("big2", &big)] {
        // Synced: ext4 refuses `-e` of a file whose blocks are not yet
        // allocated (delayed allocation), where a break's copy is synced.
        let f = File::create(plain.join(name)).unwrap();
        f.write_all_at(data, 0).unwrap();
        f.sync_all().unwrap();
        w.shared(data, &[g.join(name), h.join(name)]);
    }
    let shared = links(&g.join("big"));
    let m = w.mount(&g, "m", &[]);
    let [mount, ext4_says] = set_both(&m, &plain, "big", |f| f & !FS_EXTENT_FL);
    assert_eq!(ext4_says.0, libc::EOPNOTSUPP, "ext4 took -e of 1 MiB");
    assert_eq!(mount, ext4_says, "big -e: through the mount, then on ext4");
    assert_eq!(
        links(&g.join("big")),
        shared,
        "the refused change broke the link"
    );
    assert_eq!(links(&h.join("big")), shared);

    let [mount, ext4_says] = set_both(&m, &plain, "small", |f| f & !FS_EXTENT_FL);
    assert_eq!(ext4_says, (0, 0), "ext4 refused -e of 5,000 bytes");
    assert_eq!(
        mount, ext4_says,
        "small -e: through the mount, then on ext4"
    );
    assert_eq!(
        links(&g.join("small")).1,
        1,
        "the change is the guest's copy's"
    );

    let [mount, ext4_says] = set_both(&m, &plain, "big2", |f| (f & !FS_EXTENT_FL) | FS_SYNC_FL);
    assert_eq!(ext4_says, (libc::EOPNOTSUPP, FS_EXTENT_FL | FS_SYNC_FL));
    assert_eq!(
        mount, ext4_says,
        "big2 -e +s: through the mount, then on ext4"
    );
    assert_eq!(
        flags(&h.join("big2")),
        FS_EXTENT_FL,
        "the other guest got a flag"
    );
    drop(m);
}

/// ext4's old EOFBLOCKS bit (0x400000, no `chattr` letter) is stored by
/// ext4 as SETFLAGS asks, and taken off again: through the mount as on
/// ext4, on a private file, a shared one (which breaks, the other guest's
/// and the object keeping no flag) and a directory. The mount refused it
/// (EOPNOTSUPP).
#[test]
fn s43_ext4s_old_eofblocks_flag_is_taken_as_on_ext4() {
    if !require_root("s43_ext4s_old_eofblocks_flag_is_taken_as_on_ext4") {
        return;
    }
    let ext4 = Ext4::new(&[], &[]);
    let w = World::new_in(&ext4.root());
    let (g, h, plain) = (w.dir("g"), w.dir("h"), w.dir("plain"));
    for d in [&g, &plain] {
        fs::write(d.join("own"), b"own\n").unwrap();
        fs::create_dir(d.join("dir")).unwrap();
    }
    fs::write(plain.join("shared"), b"shared\n").unwrap();
    let object = w.shared(b"shared\n", &[g.join("shared"), h.join("shared")]);
    let m = w.mount(&g, "m", &[]);
    for name in ["own", "shared", "dir"] {
        let set = set_both(&m, &plain, name, |f| f | EXT4_EOFBLOCKS_FL);
        assert_eq!(
            set[0], set[1],
            "{name} +0x400000: through the mount, then on ext4"
        );
        assert_eq!(set[1].0, 0, "{name}: ext4 refused it");
        let unset = set_both(&m, &plain, name, |f| f & !EXT4_EOFBLOCKS_FL);
        assert_eq!(
            unset[0], unset[1],
            "{name} -0x400000: through the mount, then on ext4"
        );
    }
    assert_eq!(flags(&h.join("shared")), FS_EXTENT_FL);
    assert_eq!(flags(&object), FS_EXTENT_FL);
    drop(m);
}

/// truncate(2) of a shared file past ext4's largest file (17 TiB, and
/// 2^62) fails with EFBIG as on ext4, and the file stays shared: it was
/// copied first, and stayed private. (An open for writing, as `truncate
/// -s` makes, breaks the link by itself, as any write open does.)
#[test]
fn s43_truncate_of_a_shared_file_past_ext4s_largest_breaks_nothing() {
    if !require_root("s43_truncate_of_a_shared_file_past_ext4s_largest_breaks_nothing") {
        return;
    }
    let ext4 = Ext4::new(&[], &[]);
    let w = World::new_in(&ext4.root());
    let (g, h, plain) = (w.dir("g"), w.dir("h"), w.dir("plain"));
    fs::write(plain.join("f"), b"x").unwrap();
    w.shared(b"x", &[g.join("f"), h.join("f")]);
    let shared = links(&g.join("f"));
    let m = w.mount(&g, "m", &[]);
    let truncate = |p: &Path, size: u64| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path.
        let r = unsafe { libc::truncate(c.as_ptr(), size as libc::off_t) };
        (r == 0)
            .then_some(())
            .ok_or_else(std::io::Error::last_os_error)
    };
    for size in [17u64 << 40, 1 << 62] {
        let on_ext4 = errno(truncate(&plain.join("f"), size));
        assert_eq!(on_ext4, libc::EFBIG, "ext4 took {size}");
        assert_eq!(errno(truncate(&m.path("f"), size)), on_ext4, "{size}");
        assert_eq!(links(&g.join("f")), shared, "{size}: the link was broken");
    }
    assert_eq!(errno(truncate(&m.path("f"), 4096)), 0);
    assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 4096);
    assert_eq!(links(&h.join("f")), (shared.0, 2), "the other guest's file");
    drop(m);
}
