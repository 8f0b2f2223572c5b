//! Review s41 (ioapi): the less common I/O calls of databases, VM images
//! and copy tools — O_DIRECT, Linux AIO (io_submit), fallocate's modes,
//! splice, copy_file_range, the clone and dedupe ioctls — on a shared
//! file, a private one and a hardlink the guest made, through the mount
//! (with and without passthrough) and step for step on a plain directory:
//! the two agree, and the other guest and the store object are untouched.

use crate::fs::harness::{look, Look, Mount, World};
use std::ffi::c_void;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `ioctl_fideduperange(2)`'s request (not in the libc crate).
const FIDEDUPERANGE: libc::Ioctl = 0xc018_9436;

/// Opens `path` read-write (created if missing) with extra `flags`.
fn open_rw(path: &Path, flags: i32) -> File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(flags)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Each file's content: four pages and a tail, so that a page-aligned
/// write lands inside it and the end is not aligned.
fn content(n: u8) -> Vec<u8> {
    let mut v = vec![b'a' + n; 16384];
    v.extend_from_slice(b"tail");
    v
}

/// Two aligned pages, for O_DIRECT.
#[repr(C, align(4096))]
struct Pages([u8; 8192]);

fn errno_of(r: isize) -> String {
    match r {
        r if r < 0 => format!(
            "errno {}",
            std::io::Error::last_os_error().raw_os_error().unwrap()
        ),
        r => format!("{r}"),
    }
}

fn pread(fd: RawFd, buf: &mut [u8], off: i64) -> String {
    // SAFETY: `buf` is valid and writable for its length.
    errno_of(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) })
}

fn pwrite(fd: RawFd, buf: &[u8], off: i64) -> String {
    // SAFETY: `buf` is valid for its length.
    errno_of(unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) })
}

/// A guest `g` sharing `names` with `other` (the store holds each), a
/// private file `private` in g, and the same files in a plain directory.
struct Scene {
    m: Mount,
    plain: PathBuf,
    other: PathBuf,
    objects: Vec<PathBuf>,
    before: Vec<(Look, u64)>,
    _w: World,
}

impl Scene {
    fn new(names: &[&str], opts: &[&str]) -> Scene {
        let w = World::new();
        let (g, other, plain) = (w.dir("g"), w.dir("other"), w.dir("plain"));
        let mut objects = Vec::new();
        for (i, n) in names.iter().enumerate() {
            objects.push(w.shared(&content(i as u8), &[g.join(n), other.join(n)]));
            fs::write(plain.join(n), content(i as u8)).unwrap();
        }
        for d in [&g, &plain] {
            fs::write(d.join("private"), content(20)).unwrap();
        }
        let m = w.mount(&g, "m", opts);
        let mut s = Scene {
            m,
            plain,
            other,
            objects,
            before: Vec::new(),
            _w: w,
        };
        s.before = s.untouched();
        s
    }

    /// What must not change: the other guest's files and the store's
    /// objects, with the blocks each takes (a punched hole frees some).
    fn untouched(&self) -> Vec<(Look, u64)> {
        let other = fs::read_dir(&self.other)
            .unwrap()
            .map(|e| e.unwrap().path());
        let mut paths: Vec<PathBuf> = other.chain(self.objects.iter().cloned()).collect();
        paths.sort();
        let blocks = |p: &Path| fs::metadata(p).unwrap().blocks();
        paths.iter().map(|p| (look(p), blocks(p))).collect()
    }

    fn assert_untouched(&self) {
        assert!(
            self.untouched() == self.before,
            "the other guest or the store changed"
        );
    }
}

/// O_DIRECT on `name` in `dir`: an aligned read, reads and writes whose
/// offset or length is misaligned, a misaligned read at the end, an
/// aligned write, a buffered reader's view of it; then the content. With
/// `held`, a buffered reader holds the file open first (through
/// passthrough that open decides how later opens are served).
fn direct_story(dir: &Path, name: &str, flags: i32, held: bool) -> Vec<String> {
    let path = dir.join(name);
    let holder = held.then(|| File::open(&path).unwrap());
    let f = open_rw(&path, libc::O_DIRECT | flags);
    let fd = f.as_raw_fd();
    let mut b = Box::new(Pages([b'W'; 8192]));
    let mut v = vec![
        format!("aligned read {}", pread(fd, &mut b.0[..4096], 0)),
        format!("read at 1 {}", pread(fd, &mut b.0[..4096], 1)),
        format!("read of 100 {}", pread(fd, &mut b.0[..100], 0)),
        format!("read at the end {}", pread(fd, &mut b.0[..100], 16388)),
    ];
    b.0 = [b'W'; 8192];
    v.push(format!("write at 1 {}", pwrite(fd, &b.0[..4096], 1)));
    v.push(format!("write of 100 {}", pwrite(fd, &b.0[..100], 0)));
    v.push(format!("aligned write {}", pwrite(fd, &b.0[..4096], 4096)));
    let reader = File::open(&path).unwrap();
    let mut seen = [0u8; 4096];
    pread(reader.as_raw_fd(), &mut seen, 4096);
    v.push(format!(
        "a buffered reader sees it: {}",
        seen == b.0[..4096]
    ));
    drop((f, reader, holder));
    let data = fs::read(&path).unwrap();
    let w = data.iter().filter(|c| **c == b'W').count();
    v.push(format!("{name}: {} bytes, {w} written", data.len()));
    v
}

/// A 2 MiB O_DIRECT write and read from a buffer 512 bytes into a page
/// (aligned as ext4 needs on this machine's disks): the kernel's FUSE cuts
/// it where the buffer crosses pages, into parts 512 bytes short of a
/// page multiple, which must not be refused.
fn big_direct_story(dir: &Path) -> Vec<String> {
    const LEN: usize = 2 << 20;
    let f = open_rw(&dir.join("big"), libc::O_DIRECT);
    let mut mem = vec![b'B'; LEN + 8192];
    let at = mem.as_ptr().align_offset(4096) + 512;
    let buf = &mut mem[at..at + LEN];
    let wrote = pwrite(f.as_raw_fd(), buf, 0);
    buf.fill(0);
    let read = pread(f.as_raw_fd(), buf, 0);
    let all_b = buf.iter().all(|c| *c == b'B');
    vec![format!(
        "big: wrote {wrote}, read {read}, as written {all_b}"
    )]
}

/// A shared mapping of an O_DIRECT open written at the start and in the
/// last, partial page, synced: the kernel writes those pages back with
/// the open's flags, and lengths no direct I/O would have (not refused).
fn mapped_direct_story(dir: &Path) -> Vec<String> {
    let path = dir.join("mapped");
    let f = open_rw(&path, libc::O_DIRECT);
    let len = 16388;
    // SAFETY: a new shared mapping of the file's `len` bytes, written
    // within them, synced and unmapped before `f` closes.
    let synced = unsafe {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let p = p.cast::<u8>();
        std::ptr::copy_nonoverlapping(b"START".as_ptr(), p, 5);
        std::ptr::copy_nonoverlapping(b"END".as_ptr(), p.add(len - 3), 3);
        let r = libc::msync(p.cast(), len, libc::MS_SYNC);
        libc::munmap(p.cast(), len);
        r
    };
    drop(f);
    let data = fs::read(&path).unwrap();
    let ends = (&data[..5], &data[data.len() - 3..]);
    vec![format!(
        "mapped: msync {synced}, {} bytes, ends {ends:?}",
        data.len()
    )]
}

fn direct_stories(dir: &Path) -> Vec<String> {
    // The guest's own hardlink to a shared file.
    fs::hard_link(dir.join("linked"), dir.join("linked2")).unwrap();
    let mut v = Vec::new();
    v.extend(direct_story(dir, "shared", 0, false));
    v.extend(direct_story(dir, "private", 0, false));
    v.extend(direct_story(dir, "linked2", 0, false));
    v.extend(direct_story(dir, "held", 0, true));
    v.extend(direct_story(dir, "truncated", libc::O_TRUNC, false));
    v.extend(direct_story(dir, "new", libc::O_CREAT, false));
    v.extend(big_direct_story(dir));
    v.extend(mapped_direct_story(dir));
    let linked = fs::read(dir.join("linked")).unwrap();
    let w = linked.iter().filter(|c| **c == b'W').count();
    v.push(format!("linked: {} bytes, {w} written", linked.len()));
    v
}

/// O_DIRECT reads and writes through the mount: an aligned one works on
/// each kind of file, a misaligned offset or length fails with EINVAL as
/// on ext4 (the daemon served it as buffered I/O before), with and
/// without passthrough.
#[test]
fn s41_misaligned_direct_io_fails_as_on_ext4() {
    if !crate::common::require_root("s41_misaligned_direct_io_fails_as_on_ext4") {
        return;
    }
    let names = ["shared", "linked", "held", "truncated", "mapped"];
    for opts in [&[][..], &["nopassthrough"][..]] {
        let s = Scene::new(&names, opts);
        let want = direct_stories(&s.plain);
        assert!(want.contains(&"read at 1 errno 22".into()), "{want:#?}");
        assert_eq!(
            direct_stories(&s.m.dir),
            want,
            "{opts:?}: through the mount vs plain"
        );
        s.assert_untouched();
    }
}

/// Linux AIO's iocb and io_event (linux/aio_abi.h, little-endian).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: i32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

#[repr(C)]
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// One AIO request (`opcode`: 0 pread, 1 pwrite) on `fd`, submitted with
/// io_submit and waited for (10 s at most): its result, or the error of
/// the submission.
fn aio(ctx: libc::c_ulong, fd: RawFd, opcode: u16, buf: *mut u8, len: usize, off: i64) -> String {
    let mut cb = Iocb {
        opcode,
        fildes: fd as u32,
        buf: buf as u64,
        nbytes: len as u64,
        offset: off,
        ..Default::default()
    };
    let mut cbs = [&mut cb as *mut Iocb];
    // SAFETY: one valid iocb whose buffer outlives the wait below.
    let r = unsafe { libc::syscall(libc::SYS_io_submit, ctx, 1, cbs.as_mut_ptr()) };
    if r != 1 {
        return format!("submit {}", errno_of(r as isize));
    }
    let mut ev = IoEvent::default();
    let limit = libc::timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    // SAFETY: room for one event; a valid timeout.
    let n = unsafe {
        libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            1,
            1,
            &mut ev as *mut IoEvent,
            &limit,
        )
    };
    match n {
        1 => format!("{}", ev.res),
        n => format!("no event ({n})"),
    }
}

/// AIO reads and writes, buffered and O_DIRECT (aligned and not), on a
/// shared, a private and a new file of `dir`; then their content.
fn aio_story(dir: &Path) -> Vec<String> {
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: a context for 8 requests, destroyed below.
    let r = unsafe { libc::syscall(libc::SYS_io_setup, 8, &mut ctx as *mut libc::c_ulong) };
    assert_eq!(r, 0, "io_setup: {}", std::io::Error::last_os_error());
    let mut v = Vec::new();
    let mut b = Box::new(Pages([b'A'; 8192]));
    for (name, direct) in [
        ("shared", false),
        ("linked", true),
        ("private", true),
        ("new", true),
    ] {
        let flags = if direct { libc::O_DIRECT } else { 0 };
        let f = open_rw(&dir.join(name), flags);
        let (fd, p) = (f.as_raw_fd(), b.0.as_mut_ptr());
        v.push(format!(
            "{name} {direct}: read {}",
            aio(ctx, fd, 0, p, 4096, 0)
        ));
        b.0 = [b'A'; 8192];
        v.push(format!("write {}", aio(ctx, fd, 1, p, 4096, 8192)));
        v.push(format!("write of 100 at 1 {}", aio(ctx, fd, 1, p, 100, 1)));
        drop(f);
        let data = fs::read(dir.join(name)).unwrap();
        let a = data.iter().filter(|c| **c == b'A').count();
        v.push(format!("{name}: {} bytes, {a} written", data.len()));
    }
    // SAFETY: the context made above, no request pending.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    v
}

/// Linux AIO (io_submit), which host processes (databases, qemu) may use
/// on a mount: as on a plain directory, misaligned O_DIRECT refused.
#[test]
fn s41_aio_through_the_mount_matches_a_plain_directory() {
    if !crate::common::require_root("s41_aio_through_the_mount_matches_a_plain_directory") {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        let s = Scene::new(&["shared", "linked"], opts);
        let want = aio_story(&s.plain);
        assert!(want.contains(&"write of 100 at 1 -22".into()), "{want:#?}");
        assert_eq!(
            aio_story(&s.m.dir),
            want,
            "{opts:?}: through the mount vs plain"
        );
        s.assert_untouched();
    }
}

fn fallocate(fd: RawFd, mode: i32, off: i64, len: i64) -> String {
    // SAFETY: fallocate on an fd the caller owns.
    errno_of(unsafe { libc::fallocate(fd, mode, off, len) } as isize)
}

/// Changes that bypass write(2), each on its own shared file of `dir`
/// (one of `SPLICED`): fallocate's punch, zero and keep-size modes,
/// copy_file_range (from another shared file, within the file), sendfile,
/// splice from a pipe, and the clone and dedupe ioctls into it; then each
/// file's content and size. (Collapse and insert are `limits`.)
fn splice_story(dir: &Path) -> Vec<String> {
    use libc::{FALLOC_FL_KEEP_SIZE as KEEP, FALLOC_FL_PUNCH_HOLE as PUNCH};
    let open = |n: &str| open_rw(&dir.join(n), 0);
    let src = File::open(dir.join("source")).unwrap();
    let mut v = Vec::new();
    for (n, mode, off, len) in [
        ("punched", PUNCH | KEEP, 4096, 8192),
        ("zeroed", libc::FALLOC_FL_ZERO_RANGE, 4096, 4096),
        ("kept", KEEP, 16384, 1 << 20),
    ] {
        v.push(format!(
            "{n}: {}",
            fallocate(open(n).as_raw_fd(), mode, off, len)
        ));
    }
    let (copied, sent, spliced) = (open("copied"), open("sent"), open("spliced"));
    for (what, from, off_in, off_out, len) in [
        ("from another shared file", &src, 100, 10, 5000),
        ("within the file", &copied, 0, 8000, 4000),
        ("overlapping", &copied, 0, 100, 4000),
    ] {
        let r = copy_range(from, off_in, &copied, off_out, len);
        v.push(format!("copy_file_range {what}: {r}"));
    }
    let mut off = 3000i64;
    // SAFETY: open fds and an offset valid for the call.
    let r = unsafe { libc::sendfile(sent.as_raw_fd(), src.as_raw_fd(), &mut off, 6000) };
    v.push(format!("sendfile {}", errno_of(r)));
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for two fds, closed below.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    let mut at = 777i64;
    // SAFETY: valid fds and offset; the pipe holds what was written.
    let r = unsafe {
        libc::write(pipe[1], b"spliced".as_ptr().cast(), 7);
        libc::splice(
            pipe[0],
            std::ptr::null_mut(),
            spliced.as_raw_fd(),
            &mut at,
            7,
            0,
        )
    };
    v.push(format!("splice {}", errno_of(r)));
    // SAFETY: the pipe's fds, closed once.
    unsafe {
        libc::close(pipe[0]);
        libc::close(pipe[1]);
    }
    // SAFETY: FICLONE takes the source fd as its argument.
    let r = unsafe { libc::ioctl(open("cloned").as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    v.push(format!("FICLONE {}", errno_of(r as isize)));
    v.push(format!("FIDEDUPERANGE {}", dedupe(&src, &open("deduped"))));
    drop((copied, sent, spliced, src));
    for n in SPLICED {
        let data = fs::read(dir.join(n)).unwrap();
        let zeros = data.iter().filter(|c| **c == 0).count();
        let md = fs::metadata(dir.join(n)).unwrap();
        v.push(format!(
            "{n}: {} bytes, {zeros} zeros, sum {}",
            md.len(),
            data.iter().map(|c| *c as u64).sum::<u64>()
        ));
    }
    v
}

/// `copy_file_range` of `len` bytes from `from` at `off_in` to `to` at
/// `off_out`: its result.
fn copy_range(from: &File, mut off_in: i64, to: &File, mut off_out: i64, len: usize) -> String {
    let (i, o) = (from.as_raw_fd(), to.as_raw_fd());
    // SAFETY: open fds and offsets valid for the call.
    errno_of(unsafe { libc::copy_file_range(i, &mut off_in, o, &mut off_out, len, 0) })
}

/// FIDEDUPERANGE of `src`'s first page onto `dst`'s: the call's result
/// and the one range's status.
fn dedupe(src: &impl AsRawFd, dst: &impl AsRawFd) -> String {
    #[repr(C)]
    struct Range {
        src_offset: u64,
        src_length: u64,
        dest_count: u16,
        reserved1: u16,
        reserved2: u32,
        dest_fd: i64,
        dest_offset: u64,
        bytes_deduped: u64,
        status: i32,
        reserved: u32,
    }
    let mut r = Range {
        src_offset: 0,
        src_length: 4096,
        dest_count: 1,
        reserved1: 0,
        reserved2: 0,
        dest_fd: dst.as_raw_fd() as i64,
        dest_offset: 0,
        bytes_deduped: 0,
        status: 0,
        reserved: 0,
    };
    // SAFETY: a file_dedupe_range with room for its one dest entry.
    let n = unsafe {
        libc::ioctl(
            src.as_raw_fd(),
            FIDEDUPERANGE,
            &mut r as *mut Range as *mut c_void,
        )
    };
    format!("{} status {}", errno_of(n as isize), r.status)
}

const SPLICED: [&str; 10] = [
    "source",
    "punched",
    "zeroed",
    "kept",
    "copied",
    "sent",
    "spliced",
    "cloned",
    "deduped",
    "collapsed",
];

/// fallocate, copy_file_range, sendfile, splice, FICLONE and
/// FIDEDUPERANGE into shared files: as on a plain directory, and none of
/// them reaches the store object (its content and blocks stay) or the
/// other guest. FALLOC_FL_COLLAPSE_RANGE and INSERT_RANGE are refused
/// through any FUSE mount (EOPNOTSUPP: the kernel passes only punch, zero
/// and keep-size on), the file left whole (docs/mount.md).
#[test]
fn s41_fallocate_splice_and_clones_into_shared_files_leave_the_store_alone() {
    if !crate::common::require_root(
        "s41_fallocate_splice_and_clones_into_shared_files_leave_the_store_alone",
    ) {
        return;
    }
    for opts in [&[][..], &["nopassthrough"][..]] {
        let s = Scene::new(&SPLICED, opts);
        let want = splice_story(&s.plain);
        assert!(want.contains(&"punched: 0".into()), "{want:#?}");
        assert_eq!(
            splice_story(&s.m.dir),
            want,
            "{opts:?}: through the mount vs plain"
        );
        let f = open_rw(&s.m.path("collapsed"), 0);
        for mode in [libc::FALLOC_FL_COLLAPSE_RANGE, libc::FALLOC_FL_INSERT_RANGE] {
            let r = fallocate(f.as_raw_fd(), mode, 4096, 4096);
            assert_eq!(
                r,
                format!("errno {}", libc::EOPNOTSUPP),
                "{opts:?} mode {mode:#x}"
            );
        }
        drop(f);
        assert_eq!(fs::read(s.m.path("collapsed")).unwrap(), content(9));
        s.assert_untouched();
    }
}
