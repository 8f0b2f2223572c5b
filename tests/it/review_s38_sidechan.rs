//! Review s38 (sidechan): what one guest can learn about another through
//! the inode they share. Guests A and B link one store object, both
//! mounted; from A, every way of looking at its file (statx past the
//! kernel's cache, ioctls, xattrs, /proc/self/maps, locks, leases, inotify)
//! is tried while B reads the object, a third guest is linked to it, B
//! breaks its link and the third guest's link goes, and compared with a
//! private copy. What one page cache shows (mincore) is asserted as
//! docs/security.md ("What a guest can learn about others") describes it.

use crate::fs::harness::{set_mtime, xattrs, Mount, World, MARKER};
use crate::guest::harness::stdout;
use crate::guest::run_overlay::{sh, Cleanup, Unified};
use crate::review_s37_locks::{raw_open, seen, Holder, Watches};
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What `statx` shows of a file, asked past the kernel's attribute cache
/// (AT_STATX_FORCE_SYNC: the daemon answers each time).
#[derive(Debug, PartialEq, Eq)]
struct View {
    dev: (u32, u32),
    ino: u64,
    nlink: u32,
    mode: u16,
    size: u64,
    blocks: u64,
    atime: (i64, u32),
    mtime: (i64, u32),
    ctime: (i64, u32),
    btime: Option<(i64, u32)>,
    attributes: u64,
}

fn view(path: &Path) -> View {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: all-zero is a valid `struct statx`.
    let mut x: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated, `x` valid for the call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut x,
        )
    };
    assert_eq!(r, 0, "statx {}: {}", path.display(), last_error());
    let t = |t: libc::statx_timestamp| (t.tv_sec, t.tv_nsec);
    View {
        dev: (x.stx_dev_major, x.stx_dev_minor),
        ino: x.stx_ino,
        nlink: x.stx_nlink,
        mode: x.stx_mode,
        size: x.stx_size,
        blocks: x.stx_blocks,
        atime: t(x.stx_atime),
        mtime: t(x.stx_mtime),
        ctime: t(x.stx_ctime),
        btime: (x.stx_mask & libc::STATX_BTIME != 0).then(|| t(x.stx_btime)),
        attributes: x.stx_attributes,
    }
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Sets only the atime of `path` (the host's hand: a read then moves it,
/// relatime updating an atime older than the ctime).
fn set_atime(path: &Path, sec: i64) {
    let f = File::open(path).unwrap();
    let times = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: `times` holds two timespecs, as futimens wants.
    assert_eq!(unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) }, 0);
}

/// Guests `a` and `b` sharing `lib.so` (1 MiB) through a store object, a
/// third guest `c` to link later, and `copy`: a private file in `a` with
/// the same content and times (what A would have without the store).
struct Two {
    ma: Mount,
    mb: Mount,
    object: PathBuf,
    c: PathBuf,
    w: World,
}

impl Two {
    fn new(opts_a: &[&str]) -> Two {
        let w = World::new();
        let (a, b, c) = (w.dir("a"), w.dir("b"), w.dir("c"));
        let content = vec![b'7'; 1 << 20];
        let object = w.shared(&content, &[a.join("lib.so"), b.join("lib.so")]);
        fs::write(a.join("copy"), &content).unwrap();
        set_mtime(&a.join("copy"), 1_000_000_000);
        // An atime a read moves (older than the ctime): then the object's
        // own atime shows every guest's reads.
        set_atime(&object, 900_000_000);
        let ma = w.mount(&a, "ma", opts_a);
        let mb = w.mount(&b, "mb", &[]);
        Two {
            ma,
            mb,
            object,
            c,
            w,
        }
    }

    fn a(&self) -> PathBuf {
        self.ma.path("lib.so")
    }

    fn b(&self) -> PathBuf {
        self.mb.path("lib.so")
    }

    /// The object as the host sees it: (atime, ctime, link count).
    fn object(&self) -> (i64, i64, u64) {
        let m = fs::metadata(&self.object).unwrap();
        (
            m.atime(),
            m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            m.nlink(),
        )
    }
}

/// Every time and count A could watch moves on the object when B reads
/// it, a unify run links a third guest to it, B breaks its link, the
/// third guest's link goes (`store forget` of a guest and `rm -r` of its
/// tree) and the store name goes and comes back (gc's repair); A's statx of its path, forced past the
/// cache, stays what it was, as a private copy's does. (Before 2026-12-02
/// the mount showed the object's link count, atime and ctime.)
#[test]
fn s38_a_shared_files_statx_does_not_move_with_other_guests() {
    if !crate::common::require_root("s38_a_shared_files_statx_does_not_move_with_other_guests") {
        return;
    }
    let t = Two::new(&[]);
    let copy = t.ma.path("copy");
    let (before, before_copy) = (view(&t.a()), view(&copy));
    // What a guest sees of a shared file: one link, no birth time, the
    // mtime as atime and ctime (the documented tell of a shared file).
    assert_eq!(before.nlink, 1);
    assert_eq!((before.atime, before.ctime), (before.mtime, before.mtime));
    assert_eq!((before.btime, before.attributes), (None, 0));
    assert_eq!(before.dev, before_copy.dev, "one device for both");
    let mut host = t.object();
    type Host = (i64, i64, u64);
    let mut step = |what: &str, act: &mut dyn FnMut(), moved: &dyn Fn(Host, Host) -> bool| {
        std::thread::sleep(Duration::from_millis(20));
        act();
        let now = t.object();
        let changed = moved(host, now);
        assert!(
            changed,
            "{what}: the object did not change: {host:?} → {now:?}"
        );
        host = now;
        assert_eq!(view(&t.a()), before, "A's shared file, after {what}");
        assert_eq!(view(&copy), before_copy, "A's private copy, after {what}");
    };
    step(
        "B reads the file",
        &mut || drop(fs::read(t.b()).unwrap()),
        &|_, (atime, _, _)| atime > 900_000_000,
    );
    let third = t.c.join("lib.so");
    step(
        "a unify run links a third guest's path to the object",
        &mut || fs::hard_link(&t.object, &third).unwrap(),
        &|_, (_, _, n)| n == 4,
    );
    step(
        "B breaks its link",
        &mut || {
            let mut f = fs::OpenOptions::new().append(true).open(t.b()).unwrap();
            f.write_all(b"B's own\n").unwrap();
        },
        &|_, (_, _, n)| n == 3,
    );
    step(
        "the third guest's link goes",
        &mut || fs::remove_file(&third).unwrap(),
        &|(_, old, _), (_, ctime, n)| n == 2 && ctime != old,
    );
    let backing = t.w.tmp.path().join("a/lib.so");
    step(
        "the store name goes and gc puts it back",
        &mut || {
            fs::remove_file(&t.object).unwrap();
            fs::hard_link(&backing, &t.object).unwrap();
        },
        &|(_, old, _), (_, ctime, n)| n == 2 && ctime != old,
    );
}

/// Locks, leases and inotify watches are the kernel's, on the mount's own
/// inode: none reaches the object, so nothing A holds or watches on its
/// path is seen, conflicts with or is broken by B's use of its path to
/// the same object (one inode underneath).
#[test]
fn s38_locks_leases_and_watches_on_a_shared_file_do_not_reach_other_guests() {
    if !crate::common::require_root(
        "s38_locks_leases_and_watches_on_a_shared_file_do_not_reach_other_guests",
    ) {
        return;
    }
    let t = Two::new(&[]);
    // What B sees with no lock held anywhere (no holder).
    let free = seen(&t.b(), i32::MIN);
    for kind in ["posix_r", "ofd_r", "flock_sh", "flock_ex"] {
        let h = Holder::start(&t.a(), "r", kind);
        assert_eq!(seen(&t.b(), h.pid()), free, "B, while A holds {kind}");
        // The control: on A's own path the lock is seen.
        assert_ne!(seen(&t.a(), h.pid()), free, "A's path, {kind} held");
    }
    let lease = Holder::start(&t.a(), "r", "lease_r");
    let all = libc::IN_ALL_EVENTS;
    let watches = Watches::on(&[&t.a(), &t.ma.dir], all);
    let b_dir_watch = Watches::on(&[&t.mb.dir], all);
    drop(fs::read(t.b()).unwrap());
    let mut f = fs::OpenOptions::new().append(true).open(t.b()).unwrap();
    f.write_all(b"B's own\n").unwrap();
    drop(f);
    fs::set_permissions(t.b(), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(
        watches.events(),
        vec![],
        "A's watches, after B's read and break"
    );
    assert!(
        !b_dir_watch.events().is_empty(),
        "the control: B's own directory watch saw its break"
    );
    assert!(
        lease.lines.recv_timeout(Duration::from_secs(1)).is_err(),
        "A's lease was broken by B's write open of its own path"
    );
    // SAFETY: fcntl F_GETLEASE on an fd we own.
    let own = raw_open(&t.a(), libc::O_RDONLY);
    let got = unsafe { libc::fcntl(own.as_raw_fd(), libc::F_GETLEASE) };
    assert_eq!(
        got,
        libc::F_UNLCK,
        "a lease of its own, asked by another fd"
    );
}

const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
const FS_IOC_FIEMAP: libc::c_ulong = 0xc020_660b;

/// ioctl `cmd` on `path` with a zeroed buffer of `len` bytes: its errno.
fn ioctl_errno(path: &Path, cmd: libc::c_ulong, len: usize) -> i32 {
    let f = File::open(path).unwrap();
    let mut buf = vec![0u64; len.div_ceil(8)];
    if cmd == FS_IOC_FIEMAP {
        // struct fiemap: fm_length all, fm_extent_count 4 (room for them).
        buf[1] = u64::MAX;
        buf[3] = 4 << 32;
    }
    // SAFETY: `buf` is valid for `len` bytes, what these ioctls use.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), cmd, buf.as_mut_ptr()) };
    if r < 0 {
        last_error().raw_os_error().unwrap()
    } else {
        0
    }
}

/// The `dev:ino` column of /proc/self/maps for a mapping of `path`.
fn mapped_as(path: &Path) -> String {
    let f = File::open(path).unwrap();
    let maps = with_mapping(&f, |addr, _| {
        let start = format!("{:x}-", addr as usize);
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find(|l| l.starts_with(&start))
            .unwrap()
            .to_string()
    });
    let fields: Vec<&str> = maps.split_whitespace().collect();
    format!("{} {}", fields[3], fields[4])
}

/// Maps all of `f` (shared, read-only), hands `look` the address and
/// length, and unmaps it.
fn with_mapping<T>(f: &File, look: impl FnOnce(*mut libc::c_void, usize) -> T) -> T {
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: a fresh mapping of a file we hold open; nothing reads
    // through it, and it is unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "{}", last_error());
    let out = look(addr, len);
    // SAFETY: the mapping made above, of `len` bytes.
    unsafe { libc::munmap(addr, len) };
    out
}

/// The rest of what a file shows: physical extents (FIEMAP) are refused
/// as on a filesystem without them, the backing inode's generation
/// (FS_IOC_GETVERSION) is not given, the store's marker is in no listing
/// nor readable by name, and a mapping shows the mount's device and the
/// number the guest knows, not the object's.
#[test]
fn s38_extents_generation_marker_and_maps_do_not_show_the_object() {
    if !crate::common::require_root("s38_extents_generation_marker_and_maps_do_not_show_the_object")
    {
        return;
    }
    let t = Two::new(&[]);
    let (a, copy) = (t.a(), t.ma.path("copy"));
    let on_host = t.w.tmp.path().join("a/copy");
    assert_eq!(
        ioctl_errno(&on_host, FS_IOC_FIEMAP, 32 + 4 * 56),
        0,
        "the host fs maps extents"
    );
    for p in [&a, &copy] {
        assert_eq!(ioctl_errno(p, FS_IOC_FIEMAP, 32 + 4 * 56), libc::EOPNOTSUPP);
        assert_eq!(ioctl_errno(p, FS_IOC_GETVERSION, 8), libc::ENOTTY);
        let names: Vec<_> = xattrs(p).into_iter().map(|(n, _)| n).collect();
        assert!(!names.iter().any(|n| n == MARKER), "{names:?}");
        let marker = unifs::sys::xattr::get_path(p, OsStr::new(MARKER));
        assert!(matches!(marker, Ok(None)), "{marker:?}");
    }
    let v = view(&a);
    let want = format!("{:02x}:{:02x} {}", v.dev.0, v.dev.1, v.ino);
    assert_eq!(
        mapped_as(&a),
        want,
        "/proc/self/maps of a passthrough mapping"
    );
    assert_ne!(v.ino, fs::metadata(&t.object).unwrap().ino());
}

/// Drops the page cache of `path` (written back first: dirty pages stay).
fn evict(path: &Path) {
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: posix_fadvise on an fd we hold; no memory is passed.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
}

/// mincore(2) of a mapping of `path`: (pages it says are resident, pages).
/// `read_first`: after a read of the whole file through the same open.
fn resident(path: &Path, read_first: bool) -> (usize, usize) {
    let mut f = File::open(path).unwrap();
    if read_first {
        std::io::copy(&mut f, &mut std::io::sink()).unwrap();
    }
    with_mapping(&f, |addr, len| {
        let mut vec = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `addr` maps `len` bytes; `vec` has a byte per page.
        let r = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
        assert_eq!(r, 0, "{}", last_error());
        (vec.iter().filter(|b| *b & 1 != 0).count(), vec.len())
    })
}

/// [`resident`] asked by uid 65534 (nobody), who cannot write the file.
fn resident_as_nobody(path: &Path) -> String {
    let script = "import mmap, os, sys, ctypes\n\
        f = open(sys.argv[1], 'rb'); n = os.fstat(f.fileno()).st_size\n\
        libc = ctypes.CDLL(None, use_errno=True); libc.mmap.restype = ctypes.c_void_p\n\
        a = libc.mmap(None, ctypes.c_size_t(n), 1, 1, f.fileno(), ctypes.c_long(0))\n\
        v = (ctypes.c_ubyte * ((n + 4095) // 4096))()\n\
        assert libc.mincore(ctypes.c_void_p(a), ctypes.c_size_t(n), v) == 0\n\
        print(sum(b & 1 for b in v), len(v))";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(path)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3 (Debian's python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The page cache of a shared file is one (what unifying buys), and
/// through passthrough A's mapping is of the object itself: mincore tells
/// A's root which pages of it B read. An unprivileged uid is told every
/// page is resident (the kernel's answer to one who cannot write the
/// file). With `-o nopassthrough` A's pages are the mount's own: mincore
/// shows only A's reads (of the open it maps) (the timing of a read still shows the object's
/// cache: not asserted, docs/security.md has the numbers).
#[test]
fn s38_the_page_cache_of_a_shared_file_shows_as_documented() {
    if !crate::common::require_root("s38_the_page_cache_of_a_shared_file_shows_as_documented") {
        return;
    }
    let pages = 256;
    let t = Two::new(&[]);
    evict(&t.object);
    assert_eq!(
        resident(&t.a(), false),
        (0, pages),
        "A's root, the object evicted"
    );
    assert_eq!(
        resident_as_nobody(&t.a()),
        "256 256",
        "nobody in A: all, always"
    );
    drop(fs::read(t.b()).unwrap());
    assert_eq!(
        resident(&t.a(), false),
        (pages, pages),
        "A's root, after B read it"
    );
    drop(t);
    let t = Two::new(&["nopassthrough"]);
    evict(&t.object);
    drop(fs::read(t.b()).unwrap());
    assert_eq!(
        resident(&t.a(), false),
        (0, pages),
        "no passthrough: after B read it"
    );
    // The control: A's own read, in one open (FUSE drops a file's cache
    // at each open without passthrough).
    assert_eq!(
        resident(&t.a(), true),
        (pages, pages),
        "no passthrough: A's read"
    );
}

/// The same from inside `unifs run` guests, as root and as uid 1000: what
/// `stat` shows of a shared file is the same after the other guest read
/// it, a third root was linked to it and the other guest broke its link.
#[test]
fn s38_a_run_guest_sees_nothing_of_another_guests_use() {
    if !crate::guest::harness::can_run("s38_a_run_guest_sees_nothing_of_another_guests_use") {
        return;
    }
    let u = Unified::new();
    let (r1, r2) = (u.r1.root(), u.r2.root());
    let (_c1, _c2) = (Cleanup(r1.clone()), Cleanup(r2.clone()));
    let look = |uid: &str| {
        let out = sh(
            &u.store,
            &r1,
            &["--uid", uid],
            "stat -c '%h %s %b %X %Y %Z %a %u' /data",
        );
        assert!(out.status.success(), "{out:?}");
        stdout(&out)
    };
    let before = [look("0"), look("1000")];
    assert_eq!(before[0], before[1]);
    let fields: Vec<&str> = before[0].split_whitespace().collect();
    assert_eq!(fields[0], "1", "one link: {fields:?}");
    assert_eq!(fields[3..6], [fields[4]; 3], "atime, ctime: the mtime");
    let data = r2.join("data");
    let object_links = || fs::metadata(&data).unwrap().nlink();
    let links = object_links();
    let out = sh(&u.store, &r2, &[], "cat /data >/dev/null");
    assert!(out.status.success(), "{out:?}");
    let third = u.r2.dir.path().join("third");
    fs::hard_link(&data, &third).unwrap();
    assert_eq!(object_links(), links + 1);
    assert_eq!(
        [look("0"), look("1000")],
        before,
        "after B's read and a third link"
    );
    let out = sh(&u.store, &r2, &[], "echo mine >> /data");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::metadata(&third).unwrap().nlink(),
        links,
        "B broke its link"
    );
    assert_eq!([look("0"), look("1000")], before, "after B's break");
}
