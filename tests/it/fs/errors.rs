//! POSIX error paths: the same operations on the mount and on a plain
//! directory of the backing filesystem must fail with the same errno.

use super::harness::*;
use crate::common::require_root;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// One operation; run in a forked child, so it only makes raw syscalls.
pub(crate) enum Op {
    Open(CString, i32),
    Create(CString),
    Mkdir(CString),
    Rmdir(CString),
    Unlink(CString),
    Rename(CString, CString, u32),
    Link(CString, CString),
    Symlink(CString),
    Chmod(CString),
    Chown(CString),
    Truncate(CString),
    Utimes(CString, bool),
    Readlink(CString),
    Mkfifo(CString),
    Write(CString, &'static [u8]),
    /// open(O_WRONLY) and write at offset 0: no O_APPEND, so the mount
    /// passes the write through to the backing file.
    Overwrite(CString, &'static [u8]),
    /// listxattr: the length of the name list (not an errno).
    ListxattrLen(CString),
    /// umask(2) for the ops after it (always 0).
    Umask(u32),
    /// open(O_CREAT|O_EXCL), mkdir, mkfifo with the given mode.
    CreateMode(CString, u32),
    MkdirMode(CString, u32),
    MkfifoMode(CString, u32),
    /// open(path, flags, mode).
    OpenMode(CString, i32, u32),
    /// setxattr(path, name, value, 0).
    SetXattr(CString, CString, Vec<u8>),
    /// mknod of the character device 1:3 (/dev/null's numbers).
    MknodDev(CString),
    /// FS_IOC_SETFLAGS adding these flags to the file's.
    AddFlags(CString, u32),
    /// chmod(path, mode).
    ChmodMode(CString, u32),
    /// stat: the mode's permission bits and its group (`mode | gid << 12`,
    /// not an errno), so that a comparison sees both.
    ModeGid(CString),
}

fn run(op: &Op) -> i32 {
    // SAFETY: every pointer is a NUL-terminated string prepared before the
    // fork; the buffers are on the stack; no allocation happens here.
    let r = unsafe {
        match op {
            Op::Open(p, flags) => {
                let fd = libc::open(p.as_ptr(), *flags | libc::O_CLOEXEC, 0o644);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
            Op::Create(p) => {
                let fd = libc::open(
                    p.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
            Op::Mkdir(p) => libc::mkdir(p.as_ptr(), 0o755),
            Op::Rmdir(p) => libc::rmdir(p.as_ptr()),
            Op::Unlink(p) => libc::unlink(p.as_ptr()),
            Op::Rename(a, b, flags) => libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                *flags,
            ),
            Op::Link(a, b) => libc::link(a.as_ptr(), b.as_ptr()),
            Op::Symlink(p) => libc::symlink(c"target".as_ptr(), p.as_ptr()),
            Op::Chmod(p) => libc::chmod(p.as_ptr(), 0o600),
            Op::Chown(p) => libc::chown(p.as_ptr(), 65534, 65534),
            Op::Truncate(p) => libc::truncate(p.as_ptr(), 1),
            Op::Utimes(p, now) => {
                if *now {
                    libc::utimensat(libc::AT_FDCWD, p.as_ptr(), std::ptr::null(), 0)
                } else {
                    let t = [libc::timespec {
                        tv_sec: 5,
                        tv_nsec: 0,
                    }; 2];
                    libc::utimensat(libc::AT_FDCWD, p.as_ptr(), t.as_ptr(), 0)
                }
            }
            Op::Mkfifo(p) => libc::mkfifo(p.as_ptr(), 0o644),
            Op::Umask(m) => {
                libc::umask(*m);
                0
            }
            Op::CreateMode(p, mode) => {
                let fd = libc::open(
                    p.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                    *mode,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
            Op::OpenMode(p, flags, mode) => {
                let fd = libc::open(p.as_ptr(), *flags | libc::O_CLOEXEC, *mode);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
            Op::MkdirMode(p, mode) => libc::mkdir(p.as_ptr(), *mode),
            Op::MkfifoMode(p, mode) => libc::mkfifo(p.as_ptr(), *mode),
            Op::SetXattr(p, name, value) => libc::setxattr(
                p.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            ),
            Op::Write(p, data) | Op::Overwrite(p, data) => {
                let append = match op {
                    Op::Write(..) => libc::O_APPEND,
                    _ => 0,
                };
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | append | libc::O_CLOEXEC);
                if fd >= 0 {
                    let n = libc::write(fd, data.as_ptr().cast(), data.len());
                    libc::close(fd);
                    if n < 0 {
                        -1
                    } else {
                        0
                    }
                } else {
                    fd
                }
            }
            Op::ListxattrLen(p) => {
                let mut buf = [0u8; 256];
                let n = libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
                if n >= 0 {
                    return n as i32;
                }
                -1
            }
            Op::MknodDev(p) => libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
            Op::AddFlags(p, add) => add_flags(p, *add),
            Op::ChmodMode(p, mode) => libc::chmod(p.as_ptr(), *mode),
            Op::ModeGid(p) => {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::stat(p.as_ptr(), &mut st) < 0 {
                    -1
                } else {
                    return (st.st_mode & 0o7777) as i32 | (st.st_gid << 12) as i32;
                }
            }
            Op::Readlink(p) => {
                let mut buf = [0u8; 64];
                libc::readlink(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) as i32
            }
        }
    };
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

/// FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS with `add` too: chattr +X.
/// Raw syscalls only (it runs in a forked child).
///
/// # Safety
/// `p` must be a NUL-terminated path (a `CString`'s pointer is).
unsafe fn add_flags(p: &CString, add: u32) -> i32 {
    const GET: libc::c_ulong = 0x8008_6601;
    const SET: libc::c_ulong = 0x4008_6602;
    let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return fd;
    }
    let mut flags: libc::c_int = 0;
    let mut r = libc::ioctl(fd, GET, &mut flags);
    if r == 0 {
        flags |= add as libc::c_int;
        r = libc::ioctl(fd, SET, &flags);
    }
    let errno = *libc::__errno_location();
    libc::close(fd);
    *libc::__errno_location() = errno;
    r
}

/// The same tree in a plain dir and in a guest's backing dir.
fn build(base: &Path) {
    fs::write(base.join("file"), b"f").unwrap();
    fs::create_dir(base.join("dir")).unwrap();
    fs::create_dir_all(base.join("nonempty/child")).unwrap();
    fs::write(base.join("secret"), b"s").unwrap();
    fs::set_permissions(base.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(base.join("rootdir")).unwrap();
    fs::write(base.join("rootdir/f"), b"f").unwrap();
    fs::create_dir(base.join("sticky")).unwrap();
    fs::set_permissions(base.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(base.join("sticky/rootf"), b"r").unwrap();
    std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
    std::os::unix::fs::symlink("file", base.join("link")).unwrap();
}

pub(crate) fn c(base: &Path, rel: &str) -> CString {
    CString::new(base.join(rel).into_os_string().into_encoded_bytes()).unwrap()
}

fn root_ops(b: &Path) -> Vec<(&'static str, Op)> {
    let long = "n".repeat(256);
    vec![
        ("open missing", Op::Open(c(b, "missing"), libc::O_RDONLY)),
        ("open file/x", Op::Open(c(b, "file/x"), libc::O_RDONLY)),
        ("open dir for write", Op::Open(c(b, "dir"), libc::O_WRONLY)),
        ("open loop", Op::Open(c(b, "loop"), libc::O_RDONLY)),
        (
            "open link nofollow",
            Op::Open(c(b, "link"), libc::O_RDONLY | libc::O_NOFOLLOW),
        ),
        ("open long name", Op::Open(c(b, &long), libc::O_RDONLY)),
        (
            "open creat dir/long",
            Op::Open(c(b, &format!("dir/{long}")), libc::O_CREAT | libc::O_WRONLY),
        ),
        ("create existing", Op::Create(c(b, "file"))),
        ("create in missing", Op::Create(c(b, "missing/x"))),
        ("mkdir existing", Op::Mkdir(c(b, "dir"))),
        ("mkdir long", Op::Mkdir(c(b, &long))),
        ("mkdir in file", Op::Mkdir(c(b, "file/x"))),
        ("rmdir nonempty", Op::Rmdir(c(b, "nonempty"))),
        ("rmdir file", Op::Rmdir(c(b, "file"))),
        ("rmdir link", Op::Rmdir(c(b, "link"))),
        ("rmdir missing", Op::Rmdir(c(b, "missing"))),
        ("unlink dir", Op::Unlink(c(b, "dir"))),
        ("unlink missing", Op::Unlink(c(b, "missing"))),
        (
            "rename dir onto file",
            Op::Rename(c(b, "dir"), c(b, "file"), 0),
        ),
        (
            "rename file onto dir",
            Op::Rename(c(b, "file"), c(b, "dir"), 0),
        ),
        (
            "rename dir onto nonempty",
            Op::Rename(c(b, "dir"), c(b, "nonempty"), 0),
        ),
        (
            "rename dir into itself",
            Op::Rename(c(b, "dir"), c(b, "dir/sub"), 0),
        ),
        ("rename missing", Op::Rename(c(b, "missing"), c(b, "x"), 0)),
        (
            "rename noreplace",
            Op::Rename(c(b, "file"), c(b, "link"), libc::RENAME_NOREPLACE),
        ),
        (
            "rename exchange missing",
            Op::Rename(c(b, "file"), c(b, "missing"), libc::RENAME_EXCHANGE),
        ),
        ("rename to long", Op::Rename(c(b, "file"), c(b, &long), 0)),
        ("link dir", Op::Link(c(b, "dir"), c(b, "d2"))),
        ("link missing", Op::Link(c(b, "missing"), c(b, "x"))),
        ("link onto existing", Op::Link(c(b, "file"), c(b, "secret"))),
        ("symlink existing", Op::Symlink(c(b, "file"))),
        ("symlink long", Op::Symlink(c(b, &long))),
        ("truncate dir", Op::Truncate(c(b, "dir"))),
        ("truncate missing", Op::Truncate(c(b, "missing"))),
        ("truncate loop", Op::Truncate(c(b, "loop"))),
        ("chmod missing", Op::Chmod(c(b, "missing"))),
        ("chown missing", Op::Chown(c(b, "missing"))),
        ("chmod in file", Op::Chmod(c(b, "file/x"))),
        ("utimes missing", Op::Utimes(c(b, "missing"), false)),
        ("readlink file", Op::Readlink(c(b, "file"))),
    ]
}

fn user_ops(b: &Path) -> Vec<(&'static str, Op)> {
    vec![
        (
            "read 0600 root file",
            Op::Open(c(b, "secret"), libc::O_RDONLY),
        ),
        (
            "write 0644 root file",
            Op::Open(c(b, "rootdir/f"), libc::O_WRONLY),
        ),
        ("create in root dir", Op::Create(c(b, "rootdir/new"))),
        ("mkdir in root dir", Op::Mkdir(c(b, "rootdir/new"))),
        ("unlink in root dir", Op::Unlink(c(b, "rootdir/f"))),
        ("rmdir in root dir", Op::Rmdir(c(b, "nonempty/child"))),
        (
            "rename in root dir",
            Op::Rename(c(b, "rootdir/f"), c(b, "rootdir/g"), 0),
        ),
        ("symlink in root dir", Op::Symlink(c(b, "rootdir/s"))),
        (
            "link into root dir",
            Op::Link(c(b, "file"), c(b, "rootdir/l")),
        ),
        ("chmod root file", Op::Chmod(c(b, "file"))),
        ("chown root file", Op::Chown(c(b, "file"))),
        ("truncate root file", Op::Truncate(c(b, "file"))),
        ("utimes root file", Op::Utimes(c(b, "file"), false)),
        ("touch root file", Op::Utimes(c(b, "file"), true)),
        ("unlink in sticky dir", Op::Unlink(c(b, "sticky/rootf"))),
        ("create in sticky dir", Op::Create(c(b, "sticky/mine"))),
    ]
}

/// Runs the ops in a child with the given uid/gid; returns each errno.
pub(crate) fn run_as(uid: u32, ops: &[(&'static str, Op)]) -> Vec<i32> {
    run_by(Who::Uid(uid), ops)
}

/// Who runs the ops: a uid and gid (0 keeps every capability), or uid 0
/// with no capability left (a service's `CapabilityBoundingSet=`, a
/// container's `--cap-drop ALL`).
#[derive(Clone, Copy)]
pub(crate) enum Who {
    Uid(u32),
    CaplessRoot,
}

/// Empties the calling thread's capability sets (capset(2)); it stays
/// uid 0. Raw syscalls only (it runs in a forked child).
///
/// # Safety
/// Only for a forked child: it changes the process's credentials.
unsafe fn drop_every_capability() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3: two Data
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    libc::syscall(libc::SYS_capset, &header, none.as_ptr()) == 0
}

/// Runs the ops in a child as `who`; returns each errno.
pub(crate) fn run_by(who: Who, ops: &[(&'static str, Op)]) -> Vec<i32> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut results = vec![0i32; ops.len()];
    // SAFETY: the child only makes raw syscalls on memory prepared before
    // the fork (no allocation, no locks) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: see above. The child drops every inherited fd but the
        // pipe first: a copy of another test's fd (a flock'ed store lock)
        // must not outlive that test's own close of it.
        unsafe {
            let keep = fds[1] as libc::c_uint;
            if keep > 3 {
                libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
            }
            libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
            match who {
                Who::Uid(0) => {}
                Who::Uid(uid) => {
                    libc::setgroups(0, std::ptr::null());
                    libc::setresgid(uid, uid, uid);
                    libc::setresuid(uid, uid, uid);
                }
                // Reports nothing: the parent's check of what it read fails.
                Who::CaplessRoot if !drop_every_capability() => libc::_exit(1),
                Who::CaplessRoot => {}
            }
            for (i, (_, op)) in ops.iter().enumerate() {
                *results.as_mut_ptr().add(i) = run(op);
            }
            let bytes = results.len() * 4;
            libc::write(fds[1], results.as_ptr().cast(), bytes);
            libc::_exit(0);
        }
    }
    // The child ends on its own unless the mount hangs: then kill it.
    let exited = wait_until(std::time::Duration::from_secs(60), || {
        let mut status = 0;
        // SAFETY: polling our own child without blocking.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
    });
    if !exited {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    // SAFETY: closing our copy of the write end; reading what the exited
    // child left in the pipe into our buffer.
    unsafe {
        libc::close(fds[1]);
        let mut got = 0usize;
        let want = results.len() * 4;
        let buf = results.as_mut_ptr() as *mut u8;
        while got < want {
            let n = libc::read(fds[0], buf.add(got).cast(), want - got);
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        libc::close(fds[0]);
        assert!(exited, "the child hung on the mount");
        assert_eq!(got, want, "child reported every result");
    }
    results
}

fn compare(ops_of: fn(&Path) -> Vec<(&'static str, Op)>, uid: u32, test: &str) {
    if !require_root(test) {
        return;
    }
    let w = World::new();
    let plain = w.dir("plain");
    let g = w.dir("g");
    build(&plain);
    build(&g);
    let m = w.mount(&g, "m", &[]);
    let want_ops = ops_of(&plain);
    let got_ops = ops_of(&m.dir);
    let want = run_as(uid, &want_ops);
    let got = run_as(uid, &got_ops);
    let mut diffs = Vec::new();
    for (((name, _), w), g) in want_ops.iter().zip(&want).zip(&got) {
        if w != g {
            diffs.push(format!("{name}: plain dir {w}, mount {g}"));
        }
    }
    assert!(diffs.is_empty(), "errno differs:\n{}", diffs.join("\n"));
    // Every op was meant to fail; a test that passes by all succeeding
    // would prove nothing.
    assert!(
        want.iter().filter(|e| **e != 0).count() >= want.len() - 2,
        "{want:?}"
    );
}

#[test]
fn error_paths_match_a_plain_directory_as_root() {
    compare(root_ops, 0, "error_paths_match_a_plain_directory_as_root");
}

#[test]
fn error_paths_match_a_plain_directory_as_another_user() {
    compare(
        user_ops,
        65534,
        "error_paths_match_a_plain_directory_as_another_user",
    );
}

/// Takes the append-only flag off the files again, even when the test
/// fails: the temp dir could not be removed with it on.
pub(super) struct AppendOnly(Vec<std::path::PathBuf>);

impl AppendOnly {
    pub(super) fn set(paths: &[&Path]) -> AppendOnly {
        let guard = AppendOnly(paths.iter().map(|p| p.to_path_buf()).collect());
        for p in paths {
            let ok = std::process::Command::new("chattr")
                .arg("+a")
                .arg(p)
                .status()
                .unwrap();
            assert!(ok.success(), "chattr +a {}", p.display());
        }
        guard
    }
}

impl Drop for AppendOnly {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-a")
                .arg(p)
                .status();
        }
    }
}

/// An append-only file (`chattr +a`, a log) is appended to through the
/// mount as on ext4, and every other write open is refused as there.
#[test]
fn append_only_files_take_appends_and_nothing_else() {
    if !require_root("append_only_files_take_appends_and_nothing_else") {
        return;
    }
    let w = World::new();
    let plain = w.dir("plain");
    let g = w.dir("g");
    for d in [&plain, &g] {
        fs::write(d.join("log"), b"one\n").unwrap();
    }
    let _flags = AppendOnly::set(&[&plain.join("log"), &g.join("log")]);
    let m = w.mount(&g, "m", &[]);
    let ops = |b: &Path| {
        vec![
            ("append", Op::Write(c(b, "log"), b"two\n")),
            ("open for writing", Op::Open(c(b, "log"), libc::O_WRONLY)),
            (
                "open for appending, truncated",
                Op::Open(c(b, "log"), libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC),
            ),
            ("open for reading", Op::Open(c(b, "log"), libc::O_RDONLY)),
            ("truncate", Op::Truncate(c(b, "log"))),
            ("chmod", Op::Chmod(c(b, "log"))),
        ]
    };
    let want = run_as(0, &ops(&plain));
    assert_eq!(
        want,
        vec![0, libc::EPERM, libc::EPERM, 0, libc::EPERM, libc::EPERM]
    );
    assert_eq!(run_as(0, &ops(&m.dir)), want);
    assert_eq!(fs::read(m.path("log")).unwrap(), b"one\ntwo\n");
    assert_eq!(fs::read(g.join("log")).unwrap(), b"one\ntwo\n");
}
