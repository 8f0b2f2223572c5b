//! Review s37 (locks): what databases and daemons rely on — fcntl, OFD and
//! flock locks, leases, inotify, O_DIRECT, O_SYNC, pwritev2 flags, shared
//! mappings, sqlite3 in WAL mode — done on files a guest shares through the
//! store (each first write breaks the link) and, step for step, on a plain
//! directory of the host's filesystem: the two must agree. Locks and leases
//! are the kernel's own (the daemon takes no part), so they follow a break
//! that keeps the file's node; one that gives the path a new node (a reader
//! held the shared file) leaves them on the old file, as docs/mount.md says.

use crate::fs::harness::{ino, look, Mount, World};
use crate::guest::run_overlay::{sh, Cleanup, Unified};
use crate::tree::{assert_verify_clean, unify_json};
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Takes one lock (argv: path, `r`/`rw`, kind) and holds it until stdin
/// ends; prints `locked FD`, `broken` when a lease break's SIGIO comes
/// (then gives the lease up 300 ms later), and answers `reopen-close`
/// (an open and close of the path: POSIX locks go at any close).
const HOLDER: &str = r#"
import fcntl, os, signal, struct, sys, time
path, mode, kind = sys.argv[1:4]
fd = os.open(path, os.O_RDWR if mode == "rw" else os.O_RDONLY)
def lk(cmd, t):
    fcntl.fcntl(fd, cmd, struct.pack("hhqqi", t, 0, 0, 0, 0))
def broken(*_):
    print("broken", flush=True)
    time.sleep(0.3)
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
signal.signal(signal.SIGIO, broken)
R, W, OFD_SETLK = fcntl.F_RDLCK, fcntl.F_WRLCK, 37
{"posix_r": lambda: lk(fcntl.F_SETLK, R), "posix_w": lambda: lk(fcntl.F_SETLK, W),
 "ofd_r": lambda: lk(OFD_SETLK, R), "ofd_w": lambda: lk(OFD_SETLK, W),
 "flock_sh": lambda: fcntl.flock(fd, fcntl.LOCK_SH),
 "flock_ex": lambda: fcntl.flock(fd, fcntl.LOCK_EX),
 "lockf": lambda: os.lockf(fd, os.F_TLOCK, 0),
 "lease_r": lambda: fcntl.fcntl(fd, fcntl.F_SETLEASE, R)}[kind]()
print("locked", fd, flush=True)
for line in sys.stdin:
    if line.strip() == "reopen-close":
        os.close(os.open(path, os.O_RDONLY))
        print("done", flush=True)
"#;

/// A python3 process holding a lock; killed when dropped.
pub(crate) struct Holder {
    child: Child,
    pub(crate) lines: Receiver<String>,
    /// The holder's fd of the file.
    fd: u32,
}

impl Holder {
    pub(crate) fn start(path: &Path, mode: &str, kind: &str) -> Holder {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", HOLDER])
            .arg(path)
            .args([mode, kind])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (Debian's python3)");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut h = Holder {
            child,
            lines,
            fd: 0,
        };
        let first = h.line();
        let fd = first.strip_prefix("locked ");
        h.fd = fd
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("{kind} on {}: holder said {first:?}", path.display()));
        h
    }

    /// The holder's next line (bounded: a stuck holder fails the test).
    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| "(no answer)".into())
    }

    fn say(&mut self, what: &str) -> String {
        writeln!(self.child.stdin.as_mut().unwrap(), "{what}").unwrap();
        self.line()
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn raw_open(path: &Path, flags: i32) -> OwnedFd {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is NUL-terminated; the fd returned is owned here.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    assert!(
        fd >= 0,
        "open {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn last_errno(r: i32) -> i32 {
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    } else {
        0
    }
}

/// fcntl `cmd` (a GETLK or SETLK) for a whole-file lock of `typ`: the
/// errno, and what a GETLK found (type, and whether it names `holder`).
fn fcntl_lock(fd: RawFd, cmd: i32, typ: i32, holder: i32) -> String {
    // SAFETY: all-zero is a valid `struct flock`.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: `fl` is valid for the call.
    let e = last_errno(unsafe { libc::fcntl(fd, cmd, &mut fl) });
    let pid = match fl.l_pid {
        p if p == holder => "holder",
        0 => "0",
        -1 => "-1",
        _ => "other",
    };
    format!("errno {e}, type {}, pid {pid}", fl.l_type)
}

fn flock_nb(fd: RawFd, op: i32) -> i32 {
    // SAFETY: flock on an fd we own.
    last_errno(unsafe { libc::flock(fd, op | libc::LOCK_NB) })
}

/// What another process sees of a lock `holder` holds on `path`, through
/// read-only opens (a write open of a shared file that a holder reads
/// would give the path a new node: the next test).
pub(crate) fn seen(path: &Path, holder: i32) -> Vec<String> {
    let fd = raw_open(path, libc::O_RDONLY);
    let fd = fd.as_raw_fd();
    vec![
        fcntl_lock(fd, libc::F_GETLK, libc::F_WRLCK, holder),
        fcntl_lock(fd, libc::F_SETLK, libc::F_RDLCK, holder),
        fcntl_lock(fd, libc::F_OFD_GETLK, libc::F_WRLCK, holder),
        format!("flock ex {}", flock_nb(fd, libc::LOCK_EX)),
        format!("flock sh {}", flock_nb(fd, libc::LOCK_SH)),
    ]
}

const KINDS: [(&str, &str); 7] = [
    ("posix_r", "r"),
    ("posix_w", "rw"),
    ("ofd_r", "r"),
    ("ofd_w", "rw"),
    ("flock_sh", "r"),
    ("flock_ex", "r"),
    ("lockf", "rw"),
];

/// Every lock kind, held by another process on `dir/KIND`: what a second
/// process sees while it is held, after the holder opened and closed the
/// file once more (POSIX locks go), and once the holder is gone; and a
/// blocking F_SETLKW (F_OFD_SETLKW) that waits until the holder ends.
fn lock_story(dir: &Path) -> Vec<String> {
    let mut story = Vec::new();
    for (kind, mode) in KINDS {
        let path = dir.join(kind);
        let mut h = Holder::start(&path, mode, kind);
        story.push(format!("{kind} held: {:?}", seen(&path, h.pid())));
        assert_eq!(h.say("reopen-close"), "done", "{kind}");
        story.push(format!("{kind} after a close: {:?}", seen(&path, h.pid())));
        drop(h);
        story.push(format!("{kind} gone: {:?}", seen(&path, 0)));
    }
    for (kind, wait) in [("posix_w", libc::F_SETLKW), ("ofd_w", libc::F_OFD_SETLKW)] {
        let path = dir.join(kind);
        let h = Holder::start(&path, "rw", kind);
        let (tx, rx) = channel();
        let waiter = path.clone();
        std::thread::spawn(move || {
            let fd = raw_open(&waiter, libc::O_RDONLY);
            let _ = tx.send(fcntl_lock(fd.as_raw_fd(), wait, libc::F_RDLCK, -2));
        });
        std::thread::sleep(Duration::from_millis(300));
        let waited = rx.try_recv().is_err();
        drop(h);
        let got = rx.recv_timeout(Duration::from_secs(30));
        story.push(format!("{kind} SETLKW waited {waited}, then {got:?}"));
    }
    story
}

/// Guest `g` and `other` sharing each of `names` (content `NAME\n`), and
/// the same files, not shared, in a plain directory: (g, other, plain).
fn shared_and_plain(w: &World, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let (g, other, plain) = (w.dir("g"), w.dir("other"), w.dir("plain"));
    for n in names {
        let content = format!("{n}\n");
        w.shared(content.as_bytes(), &[g.join(n), other.join(n)]);
        fs::write(plain.join(n), content).unwrap();
    }
    (g, other, plain)
}

/// A guest sharing files with `other`, mounted, and the same files in a
/// plain directory (see [`shared_and_plain`]).
struct Pair {
    /// Dropped before the world it lies in.
    m: Mount,
    plain: PathBuf,
    other: PathBuf,
    before: Vec<(PathBuf, crate::fs::harness::Look)>,
    _w: World,
}

impl Pair {
    fn new(names: &[&str]) -> Pair {
        let w = World::new();
        let (g, other, plain) = shared_and_plain(&w, names);
        let before = looks(&other);
        let m = w.mount(&g, "m", &[]);
        Pair {
            m,
            plain,
            other,
            before,
            _w: w,
        }
    }

    fn assert_other_untouched(&self) {
        assert_eq!(looks(&self.other), self.before, "the other guest changed");
    }
}

/// Looks of every file of `dir`, to check that nothing changed there.
fn looks(dir: &Path) -> Vec<(PathBuf, crate::fs::harness::Look)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), look(&p)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// POSIX (fcntl), OFD, flock and lockf locks one process holds, as another
/// sees them (F_GETLK with the holder's pid, a conflicting F_SETLK or
/// flock refused with EAGAIN), released at any close (POSIX) or not (OFD,
/// flock), waited for (F_SETLKW), taken on shared files (read-only: still shared; read-write: the
/// holder's own open broke the link): the same as on the plain directory.
#[test]
fn s37_locks_between_processes_match_a_plain_directory() {
    if !crate::common::require_root("s37_locks_between_processes_match_a_plain_directory") {
        return;
    }
    let names: Vec<&str> = KINDS.iter().map(|k| k.0).collect();
    let p = Pair::new(&names);
    let (m, plain) = (&p.m, &p.plain);
    let want = lock_story(plain);
    assert!(
        want[3].starts_with("posix_w held: [\"errno 0, type 1, pid holder\", \"errno 11"),
        "the plain directory: {want:#?}"
    );
    let waited = "SETLKW waited true, then Ok(\"errno 0, type 0, pid 0\")";
    assert!(
        want[want.len() - 2..].iter().all(|l| l.ends_with(waited)),
        "{want:#?}"
    );
    assert_eq!(lock_story(&m.dir), want, "through the mount vs plain");
    p.assert_other_untouched();
}

/// A lock taken through a read-only fd of a shared file, then another
/// process opens the file read-write. On ext4 that open finds the lock.
/// Through the mount the open gives the path a private copy on a new node
/// (the holder's fd keeps the store's file: docs/mount.md, What the guest
/// sees, Exception), and the lock stays with the holder's file: it is seen
/// through the holder's fd (`/proc/PID/fd/N`) and not on the path, whose
/// inode number changed, as for a file replaced by a rename.
#[test]
fn s37_a_lock_on_a_shared_files_reader_stays_with_its_old_file_after_a_break() {
    if !crate::common::require_root(
        "s37_a_lock_on_a_shared_files_reader_stays_with_its_old_file_after_a_break",
    ) {
        return;
    }
    let p = Pair::new(&["flock_sh", "posix_r"]);
    let (m, plain) = (&p.m, &p.plain);
    // The lock of each kind as the writer sees it on the path, and as seen
    // through the holder's own file (`/proc/PID/fd/N`).
    let story = |dir: &Path| {
        let mut v = Vec::new();
        for kind in ["flock_sh", "posix_r"] {
            let path = dir.join(kind);
            let h = Holder::start(&path, "r", kind);
            let ino_before = ino(&path);
            let writer = raw_open(&path, libc::O_RDWR);
            let via_holder = format!("/proc/{}/fd/{}", h.pid(), h.fd);
            let old = raw_open(Path::new(&via_holder), libc::O_RDONLY);
            let (rw, old) = (writer.as_raw_fd(), old.as_raw_fd());
            let (on_path, on_old) = match kind {
                "flock_sh" => (
                    format!("flock {}", flock_nb(rw, libc::LOCK_EX)),
                    format!("flock {}", flock_nb(old, libc::LOCK_EX)),
                ),
                _ => (
                    fcntl_lock(rw, libc::F_SETLK, libc::F_WRLCK, h.pid()),
                    fcntl_lock(old, libc::F_GETLK, libc::F_WRLCK, h.pid()),
                ),
            };
            let same = ino(&path) == ino_before;
            v.push(format!(
                "{kind}: same ino {same}; path: {on_path}; holder's file: {on_old}"
            ));
        }
        v
    };
    assert_eq!(
        story(plain),
        [
            "flock_sh: same ino true; path: flock 11; holder's file: flock 11",
            "posix_r: same ino true; path: errno 11, type 1, pid 0; \
             holder's file: errno 0, type 0, pid holder",
        ],
        "the plain directory"
    );
    assert_eq!(
        story(&m.dir),
        [
            "flock_sh: same ino false; path: flock 0; holder's file: flock 11",
            "posix_r: same ino false; path: errno 0, type 1, pid 0; \
             holder's file: errno 0, type 0, pid holder",
        ],
        "through the mount (docs/mount.md: the lock stays with the old file)"
    );
    p.assert_other_untouched();
}

/// A read lease on a shared file: granted through the mount as on ext4,
/// and a write open by another process breaks it (the holder gets SIGIO)
/// and waits until the holder gives it up, then opens (and breaks the
/// link). F_GETLEASE reports it.
#[test]
fn s37_a_read_lease_is_granted_and_broken_as_on_a_plain_directory() {
    if !crate::common::require_root(
        "s37_a_read_lease_is_granted_and_broken_as_on_a_plain_directory",
    ) {
        return;
    }
    let p = Pair::new(&["leased"]);
    let (m, plain) = (&p.m, &p.plain);
    let story = |dir: &Path| {
        let path = dir.join("leased");
        let h = Holder::start(&path, "r", "lease_r");
        let start = Instant::now();
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        let waited = start.elapsed();
        f.write_all(b"after the lease\n").unwrap();
        let said = h.line();
        let own = raw_open(&path, libc::O_RDONLY);
        // SAFETY: fcntl on an fd we own.
        let lease = unsafe { libc::fcntl(own.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
        // SAFETY: as above.
        let got = unsafe { libc::fcntl(own.as_raw_fd(), libc::F_GETLEASE) };
        format!(
            "holder said {said:?}, the open waited >= 200 ms: {}, own lease {}, get {got}, {:?}",
            waited >= Duration::from_millis(200),
            last_errno(lease),
            fs::read_to_string(&path).unwrap()
        )
    };
    let want = story(plain);
    assert!(want.starts_with("holder said \"broken\""), "{want}");
    assert_eq!(story(&m.dir), want, "through the mount vs plain");
    p.assert_other_untouched();
}

/// inotify watches on a shared file and on its directory.
pub(crate) struct Watches {
    fd: OwnedFd,
}

impl Watches {
    pub(crate) fn on(paths: &[&Path], mask: u32) -> Watches {
        // SAFETY: inotify_init1 takes no pointer; its fd is owned here.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a new fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for p in paths {
            let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: `c` is NUL-terminated; `fd` is an inotify fd.
            let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
            assert!(
                wd >= 0,
                "{}: {}",
                p.display(),
                std::io::Error::last_os_error()
            );
        }
        Watches { fd }
    }

    /// (watch number from 1, mask) of the events queued within 300 ms.
    pub(crate) fn events(&self) -> Vec<(i32, u32)> {
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is valid for its length; the fd is non-blocking.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let mut v = Vec::new();
        let mut i = 0;
        while i + 16 <= n.max(0) as usize {
            let word = |k: usize| u32::from_ne_bytes(buf[i + k..i + k + 4].try_into().unwrap());
            v.push((word(0) as i32, word(4)));
            i += 16 + word(12) as usize;
        }
        v
    }
}

/// What `tail -f`, systemd path units and the like wait for: IN_MODIFY and
/// IN_CLOSE_WRITE on a watched shared file written (and so broken) through
/// the mount, on the file's watch and its directory's, as on ext4. With a
/// reader holding the file open (`tail -f` does) the write goes to the
/// path's new node: the directory's watch still sees it, the file's watch
/// (on the old file) does not, and the reader keeps reading the old data
/// (docs/mount.md, Known limits).
#[test]
fn s37_inotify_sees_writes_that_break_a_watched_shared_file() {
    if !crate::common::require_root("s37_inotify_sees_writes_that_break_a_watched_shared_file") {
        return;
    }
    let p = Pair::new(&["watched", "tailed"]);
    let (m, plain) = (&p.m, &p.plain);
    let mask = libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_ATTRIB;
    let story = |dir: &Path, name: &str, hold: bool| {
        let path = dir.join(name);
        let reader = hold.then(|| File::open(&path).unwrap());
        let watches = Watches::on(&[&path, dir], mask);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"more\n").unwrap();
        drop(f);
        // The reader stays open until the events are in (its close may
        // queue more: IN_IGNORED of the old file's watch).
        let read = reader.as_ref().map(|mut r| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut r, &mut s).unwrap();
            s
        });
        (watches.events(), read)
    };
    let (modify, close) = (libc::IN_MODIFY, libc::IN_CLOSE_WRITE);
    let want = story(plain, "watched", false);
    assert_eq!(
        want,
        (vec![(2, modify), (1, modify), (2, close), (1, close)], None),
        "the plain directory"
    );
    assert_eq!(story(&m.dir, "watched", false), want, "through the mount");
    let held = story(plain, "tailed", true);
    assert_eq!(held.0, want.0, "the plain directory, held");
    assert_eq!(held.1.as_deref(), Some("tailed\nmore\n"));
    assert_eq!(
        story(&m.dir, "tailed", true),
        (vec![(2, modify), (2, close)], Some("tailed\n".to_string())),
        "through the mount, held: the directory's watch only, the old data"
    );
    p.assert_other_untouched();
}

/// A 4096-byte buffer aligned for O_DIRECT.
#[repr(C, align(4096))]
struct Block([u8; 4096]);

fn pwritev2(fd: RawFd, data: &[u8], off: i64, flags: i32) -> String {
    let iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: one iovec over `data`, valid for the call.
    let n = unsafe { libc::pwritev2(fd, &iov, 1, off, flags) };
    format!("{n}/{}", last_errno(n as i32))
}

/// O_DIRECT, O_SYNC and O_DSYNC writes, pwritev2's RWF_* flags,
/// fdatasync, syncfs and a MAP_SHARED write with msync, each on a shared
/// file of `dir` (its open breaks the link): each call's result, and the
/// files' content after.
fn io_story(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let direct = raw_open(&dir.join("direct"), libc::O_RDWR | libc::O_DIRECT);
    let mut block = Box::new(Block([b'D'; 4096]));
    let fd = direct.as_raw_fd();
    // SAFETY: `block` is 4096 bytes, aligned, valid for the calls.
    let read = unsafe { libc::pread(fd, block.0.as_mut_ptr().cast(), 4096, 0) };
    block.0 = [b'D'; 4096];
    // SAFETY: as above.
    let wrote = unsafe { libc::pwrite(fd, block.0.as_ptr().cast(), 4096, 0) };
    v.push(format!("O_DIRECT read {read}, write {wrote}"));
    drop(direct);
    for (name, flag) in [("osync", libc::O_SYNC), ("odsync", libc::O_DSYNC)] {
        let f = raw_open(&dir.join(name), libc::O_WRONLY | libc::O_APPEND | flag);
        let fd = f.as_raw_fd();
        // SAFETY: writes from a static buffer and syncs, on an fd we own.
        let (n, sync, syncfs) = unsafe {
            (
                libc::write(fd, b"sync\n".as_ptr().cast(), 5),
                libc::fdatasync(fd),
                libc::syncfs(fd),
            )
        };
        v.push(format!(
            "{name}: write {n}, fdatasync {sync}, syncfs {syncfs}"
        ));
        for (rwf, flag) in [
            ("RWF_DSYNC", libc::RWF_DSYNC),
            ("RWF_SYNC", libc::RWF_SYNC),
            ("RWF_HIPRI", libc::RWF_HIPRI),
            ("RWF_NOWAIT", libc::RWF_NOWAIT),
            ("RWF_APPEND", libc::RWF_APPEND),
        ] {
            v.push(format!("{name} {rwf}: {}", pwritev2(fd, b"r", 0, flag)));
        }
    }
    let mapped = raw_open(&dir.join("mapped"), libc::O_RDWR);
    // SAFETY: a new shared mapping of the file's 7 bytes ("mapped\n"),
    // written within them, synced and unmapped before the fd closes.
    let synced = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            7,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            mapped.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), p.cast::<u8>(), 6);
        let r = libc::msync(p, 7, libc::MS_SYNC);
        libc::munmap(p, 7);
        r
    };
    v.push(format!("msync {synced}"));
    drop(mapped);
    for name in ["direct", "osync", "odsync", "mapped"] {
        let data = fs::read(dir.join(name)).unwrap();
        let shown = String::from_utf8_lossy(&data[..data.len().min(40)]).into_owned();
        v.push(format!("{name}: {} bytes, {shown:?}", data.len()));
    }
    v
}

/// O_DIRECT, O_SYNC/O_DSYNC, RWF_* flags, fdatasync, syncfs and a shared
/// mapping written and synced, on files a guest shares: as on a plain
/// directory, and the other guest's files untouched. (O_TMPFILE is not:
/// FUSE has no request for it, docs/mount.md Known limits.)
#[test]
fn s37_direct_sync_and_mapped_writes_to_shared_files_match_a_plain_directory() {
    if !crate::common::require_root(
        "s37_direct_sync_and_mapped_writes_to_shared_files_match_a_plain_directory",
    ) {
        return;
    }
    let names = ["direct", "osync", "odsync", "mapped"];
    let p = Pair::new(&names);
    let (m, plain) = (&p.m, &p.plain);
    let want = io_story(plain);
    assert!(want.contains(&"msync 0".to_string()), "{want:#?}");
    assert_eq!(io_story(&m.dir), want, "through the mount vs plain");
    p.assert_other_untouched();
    let tmpfile = |dir: &Path| {
        let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is NUL-terminated; a returned fd is closed at once.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
        let e = last_errno(fd);
        if fd >= 0 {
            // SAFETY: the fd just opened, closed once.
            unsafe { libc::close(fd) };
        }
        e
    };
    assert_eq!((tmpfile(plain), tmpfile(&m.dir)), (0, libc::EOPNOTSUPP));
}

/// `sqlite3 DB` running `sql`, bounded; its stdout.
fn sqlite3(db: &Path, sql: &str) -> String {
    let child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 (Debian package sqlite3)");
    let mut child = crate::guest::harness::KillOnDrop(Some(child));
    let c = child.0.as_mut().unwrap();
    c.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = crate::guest::harness::wait_bounded(child, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "sqlite3 {}: {}",
        db.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two sqlite3 processes at once writing, in WAL mode, a database two
/// guests share through a real store (the first open breaks the link; the
/// locks of both, on the database and its -shm, must be on one file):
/// every row there, `PRAGMA integrity_check` ok, the other guest's
/// database and the store as they were (`store verify`).
#[test]
fn s37_two_sqlite3_processes_write_a_shared_database_in_wal_mode() {
    if !crate::common::require_root("s37_two_sqlite3_processes_write_a_shared_database_in_wal_mode")
    {
        return;
    }
    let w = World::new();
    let (g1, g2) = (w.dir("g1"), w.dir("g2"));
    let store = w.tmp.path().join("unified-store");
    let db1 = g1.join("usr/share/app/app.db");
    fs::create_dir_all(db1.parent().unwrap()).unwrap();
    sqlite3(
        &db1,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, k INT);",
    );
    fs::create_dir_all(g2.join("usr/share/app")).unwrap();
    fs::copy(&db1, g2.join("usr/share/app/app.db")).unwrap();
    for g in [&g1, &g2] {
        crate::tree::set_mtime(&g.join("usr/share/app/app.db"), crate::tree::MTIME);
    }
    let s = unify_json(&store, &[&g1, &g2]);
    assert_eq!(s["files_linked"], 1, "{s}");
    let before = look(&g2.join("usr/share/app/app.db"));
    let m = Mount::start(&store, &g1, &w.dir("m"), &[]);
    let db = m.path("usr/share/app/app.db");
    assert_eq!(sqlite3(&db, "PRAGMA journal_mode=WAL;").trim(), "wal");
    let writers: Vec<_> = ["a", "b"]
        .iter()
        .map(|who| {
            let db = db.clone();
            let mut sql = String::from(".timeout 60000\n");
            for k in 0..300 {
                sql += &format!("INSERT INTO t(who, k) VALUES ('{who}', {k});\n");
            }
            std::thread::spawn(move || sqlite3(&db, &sql))
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let check = sqlite3(
        &db,
        "PRAGMA integrity_check; SELECT who, count(DISTINCT k) FROM t GROUP BY who;",
    );
    assert_eq!(check, "ok\na|300\nb|300\n");
    drop(m);
    assert_eq!(
        look(&g2.join("usr/share/app/app.db")),
        before,
        "the other guest's db"
    );
    assert_verify_clean(&store);
}

/// Under `unifs run` (the guest's own pid namespace, its root the overlay):
/// busybox `flock` in one guest process holds a shared file that the guest
/// wrote before (its private copy now) and a second process is refused it,
/// as on ext4; the other root and the store stay as they were.
#[test]
fn s37_flock_between_processes_of_a_run_guest() {
    if !crate::guest::harness::can_run("s37_flock_between_processes_of_a_run_guest") {
        return;
    }
    let u = Unified::new();
    let (r1, r2) = (u.r1.root(), u.r2.root());
    let _cleanup = Cleanup(r1.clone());
    let before = crate::tree::snapshot(&r2);
    // busybox has no flock: the host's util-linux one, its /usr bound in.
    fs::create_dir(r1.join("usr")).unwrap();
    for lib in ["lib", "lib64"] {
        std::os::unix::fs::symlink(format!("usr/{lib}"), r1.join(lib)).unwrap();
    }
    // The holder (a subshell that becomes `sleep`, so that killing it lets
    // the lock go) signals through a file once it holds the lock; every
    // wait is bounded (50 x 0.1 s).
    let out = crate::guest::harness::ok(&sh(
        &u.store,
        &r1,
        &["--bind", "/usr:/usr:ro"],
        "PATH=/usr/bin:/bin; echo x >> /data; \
         (exec 9</data; flock -x 9; touch /tmp/held; exec sleep 30) & \
         i=0; while [ ! -e /tmp/held ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; \
         flock -n -x /data true; echo exclusive $?; flock -n -s /data true; echo shared $?; \
         kill $!; wait; flock -n -x /data true; echo after $?; cat /data",
    ));
    assert_eq!(out, "exclusive 1\nshared 1\nafter 0\nshared\nx\n");
    crate::tree::assert_invisible(&before, &crate::tree::snapshot(&r2), "the other root");
    assert_verify_clean(&u.store);
}

/// dnotify (F_NOTIFY on a directory) while the file is appended to: the
/// number of the signals it sent (argv: directory, file).
const DNOTIFY: &str = r#"
import fcntl, os, signal, sys, time
got = []
signal.signal(signal.SIGRTMIN, lambda *_: got.append(1))
d = os.open(sys.argv[1], os.O_RDONLY)
fcntl.fcntl(d, fcntl.F_SETSIG, signal.SIGRTMIN)
fcntl.fcntl(d, fcntl.F_NOTIFY, fcntl.DN_MODIFY | fcntl.DN_MULTISHOT)
with open(sys.argv[2], "a") as f:
    f.write("more\n")
time.sleep(0.3)
print(min(len(got), 1))
"#;

/// The events of fanotify group `fd` for `file`: the union of their masks
/// (the kernel may merge events), others (the rest of the filesystem) left.
fn fanotify_mask(fd: RawFd, file: &Path) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    let mut mask = 0;
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: `buf` is valid for its length; the group is non-blocking.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return mask;
        }
        let mut i = 0;
        while i + 24 <= n as usize {
            // struct fanotify_event_metadata: len u32, vers, reserved,
            // metadata_len u16, mask u64, fd i32, pid i32.
            let len = u32::from_ne_bytes(buf[i..i + 4].try_into().unwrap()) as usize;
            let m = u64::from_ne_bytes(buf[i + 8..i + 16].try_into().unwrap());
            let efd = i32::from_ne_bytes(buf[i + 16..i + 20].try_into().unwrap());
            if efd >= 0 {
                // SAFETY: the event's fd is ours to close.
                let efd = unsafe { OwnedFd::from_raw_fd(efd) };
                let at = fs::read_link(format!("/proc/self/fd/{}", efd.as_raw_fd()));
                if at.is_ok_and(|p| p == file) {
                    mask |= m;
                }
            }
            i += len.max(24);
        }
    }
}

/// fanotify (a mark on a shared file, a mark on the whole mount) and
/// dnotify (on its directory) see a write that breaks the file through the
/// mount, as on a plain directory.
#[test]
fn s37_fanotify_and_dnotify_see_a_break_as_on_a_plain_directory() {
    if !crate::common::require_root("s37_fanotify_and_dnotify_see_a_break_as_on_a_plain_directory")
    {
        return;
    }
    let p = Pair::new(&["fan_file", "fan_mount", "dnotified"]);
    let (m, plain) = (&p.m, &p.plain);
    let wanted = libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE;
    let story = |dir: &Path| {
        let mut v = Vec::new();
        for (name, how) in [("fan_file", 0), ("fan_mount", libc::FAN_MARK_MOUNT)] {
            let path = fs::canonicalize(dir.join(name)).unwrap();
            // SAFETY: fanotify_init takes no pointer; its fd is owned here.
            let fd = unsafe {
                libc::fanotify_init(
                    libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK,
                    libc::O_RDONLY as u32,
                )
            };
            assert!(
                fd >= 0,
                "fanotify_init: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a new fd nothing else owns.
            let group = unsafe { OwnedFd::from_raw_fd(fd) };
            let target = if how == 0 {
                path.clone()
            } else {
                dir.to_path_buf()
            };
            let c = CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: `c` is NUL-terminated; `group` is a fanotify fd.
            let r = unsafe {
                libc::fanotify_mark(
                    group.as_raw_fd(),
                    libc::FAN_MARK_ADD | how,
                    wanted,
                    libc::AT_FDCWD,
                    c.as_ptr(),
                )
            };
            assert_eq!(
                r,
                0,
                "fanotify_mark {}: {}",
                target.display(),
                std::io::Error::last_os_error()
            );
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(b"more\n").unwrap();
            drop(f);
            v.push(format!(
                "{name}: {:#x}",
                fanotify_mask(group.as_raw_fd(), &path)
            ));
        }
        let out = Command::new("/usr/bin/python3")
            .args(["-c", DNOTIFY])
            .arg(dir)
            .arg(dir.join("dnotified"))
            .output()
            .unwrap();
        v.push(format!(
            "dnotify: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ));
        v
    };
    let want = story(plain);
    assert_eq!(
        want,
        ["fan_file: 0xa", "fan_mount: 0xa", "dnotify: 1"],
        "the plain directory"
    );
    assert_eq!(story(&m.dir), want, "through the mount vs plain");
    p.assert_other_untouched();
}
