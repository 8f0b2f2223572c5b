//! Fixtures for the overlay tests: a store and guests in one temp dir (one
//! filesystem), shared files linked as unify leaves them, and mounts that are
//! always unmounted (guard) and never waited on without a deadline.

use crate::common::unifs_bin;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const MARKER: &str = "trusted.unifs.object";

pub struct World {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
}

impl World {
    pub fn new() -> World {
        World::new_in(&std::env::temp_dir())
    }

    /// [`World::new`] in directory `dir` (on a filesystem of the test's).
    pub fn new_in(dir: &Path) -> World {
        let tmp = tempfile::Builder::new()
            .prefix("unifs-fs-")
            .tempdir_in(dir)
            .expect("temp dir");
        // Non-root test users must reach the trees.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let store = tmp.path().join("store");
        fs::create_dir_all(store.join("objects")).unwrap();
        fs::create_dir_all(store.join("tmp")).unwrap();
        World { tmp, store }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Writes `content` at the first path, makes it a store object (marker,
    /// link in objects/) and links every other path to it. Returns the
    /// object's path in the store.
    pub fn shared(&self, content: &[u8], paths: &[PathBuf]) -> PathBuf {
        fs::write(&paths[0], content).unwrap();
        self.share(paths)
    }

    /// [`World::shared`] for a first path that is written already.
    pub fn share(&self, paths: &[PathBuf]) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(1);
        let hex = format!("{:064x}", N.fetch_add(1, Ordering::Relaxed) + 0xab00);
        let first = &paths[0];
        fs::set_permissions(first, fs::Permissions::from_mode(0o644)).unwrap();
        set_xattr(first, "user.origin", b"package");
        set_xattr(first, MARKER, hex.as_bytes());
        set_mtime(first, 1_000_000_000);
        let dir = self.store.join("objects").join(&hex[..2]);
        fs::create_dir_all(&dir).unwrap();
        let obj = dir.join(&hex[2..]);
        fs::hard_link(first, &obj).unwrap();
        for p in &paths[1..] {
            fs::hard_link(first, p).unwrap();
        }
        obj
    }

    pub fn mount(&self, guest: &Path, name: &str, opts: &[&str]) -> Mount {
        let mp = self.dir(name);
        Mount::start(&self.store, guest, &mp, opts)
    }
}

/// A test that drops its world before its mounts (a struct pattern binds
/// left to right and drops right to left) would have the temp dir removed
/// through a live mount, and stop halfway: mounts below go first.
impl Drop for World {
    fn drop(&mut self) {
        let below = || mounts_below(self.tmp.path());
        for mp in below() {
            unmount_lazy(&mp);
        }
        wait_until(Duration::from_secs(5), || below().is_empty());
    }
}

/// Mount points below `dir` (its canonical path), from /proc/self/mountinfo.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    // As bytes: one mount point that is not UTF-8 must not hide the others.
    unifs::fs::mountinfo::read()
        .unwrap()
        .into_iter()
        .map(|m| m.point)
        .filter(|m| m.starts_with(&dir) && *m != dir)
        .collect()
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let f = File::open(path).unwrap();
    unifs::sys::xattr::set_fd(std::os::fd::AsFd::as_fd(&f), OsStr::new(name), value).unwrap();
}

pub fn xattrs(path: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    unifs::sys::xattr::list_path(path).unwrap()
}

pub fn set_mtime(path: &Path, sec: i64) {
    let f = File::options().write(false).read(true).open(path).unwrap();
    let t = unifs::sys::Timestamp { sec, nsec: 0 };
    unifs::sys::futimens(std::os::fd::AsFd::as_fd(&f), t, t).unwrap();
}

/// What must not change about a file seen from elsewhere.
#[derive(Debug, PartialEq, Eq)]
pub struct Look {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: Vec<(std::ffi::OsString, Vec<u8>)>,
}

pub fn look(path: &Path) -> Look {
    let m = fs::symlink_metadata(path).unwrap();
    Look {
        content: fs::read(path).unwrap(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        xattrs: xattrs(path),
    }
}

pub fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

pub fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// True when `path` is listed as a mount point in /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let mounts = unifs::fs::mountinfo::read().unwrap();
    mounts.iter().any(|m| m.point == path)
}

/// Polls `cond` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A foreground `unifs mount -f` child; dropping it unmounts (lazily, so a
/// failed test holding files open cannot block it) and reaps the daemon.
pub struct Mount {
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    /// Dropped to call off the watchdog.
    watchdog: Option<std::sync::mpsc::Sender<()>>,
}

/// No test may hang on a stuck daemon: after this long the watchdog kills
/// it, so every pending request on the mount fails (ENOTCONN) instead.
const WATCHDOG: Duration = Duration::from_secs(120);

impl Mount {
    pub fn start(store: &Path, guest: &Path, mp: &Path, opts: &[&str]) -> Mount {
        let log = fs::canonicalize(mp).unwrap().with_extension("log");
        Mount::start_logging_to(store, guest, mp, opts, File::create(&log).unwrap())
    }

    /// [`Mount::start`] with the daemon's log (stderr) going to `stderr`.
    pub fn start_logging_to(
        store: &Path,
        guest: &Path,
        mp: &Path,
        opts: &[&str],
        stderr: File,
    ) -> Mount {
        Mount::start_under(&[], store, guest, mp, opts, stderr)
    }

    /// [`Mount::start_logging_to`] with the daemon run by `wrapper` (a
    /// program and its arguments, e.g. strace injecting faults), if any.
    pub fn start_under(
        wrapper: &[&str],
        store: &Path,
        guest: &Path,
        mp: &Path,
        opts: &[&str],
        stderr: File,
    ) -> Mount {
        let mp = fs::canonicalize(mp).unwrap();
        let log = mp.with_extension("log");
        let mut cmd = match wrapper {
            [] => Command::new(unifs_bin()),
            [program, args @ ..] => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(unifs_bin());
                cmd
            }
        };
        cmd.arg("--store").arg(store).args(["-v", "mount", "-f"]);
        for o in opts {
            cmd.args(["-o", o]);
        }
        let child = cmd
            .arg(guest)
            .arg(&mp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn unifs mount");
        let watchdog = watchdog(child.id() as i32);
        let mut m = Mount {
            dir: mp.clone(),
            child: Some(child),
            log,
            watchdog: Some(watchdog),
        };
        let ok = wait_until(Duration::from_secs(30), || {
            is_mounted(&mp) || m.child.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        assert!(
            ok && is_mounted(&mp),
            "mount at {} did not come up: {}",
            mp.display(),
            fs::read_to_string(&m.log).unwrap_or_default()
        );
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Gives a test that is slow by design (on a loaded machine) `limit`
    /// from now before the watchdog kills the daemon, not [`WATCHDOG`].
    pub fn watch_for(&mut self, limit: Duration) {
        self.watchdog = Some(watchdog_after(self.pid() as i32, limit));
    }
}

/// Kills `pid` after [`WATCHDOG`] unless the returned sender is dropped
/// first (before the process is reaped, so the pid cannot be reused).
pub fn watchdog(pid: i32) -> std::sync::mpsc::Sender<()> {
    watchdog_after(pid, WATCHDOG)
}

/// [`watchdog`] after `limit`.
fn watchdog_after(pid: i32, limit: Duration) -> std::sync::mpsc::Sender<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: killing mount daemon {pid}");
            // SAFETY: signalling a process of this test that is still running.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    });
    tx
}

/// The pid of the `unifs mount` daemon serving `mp`, found in /proc
/// ([`unifs_cmdlines`]).
pub fn daemon_pid(mp: &Path) -> Option<i32> {
    let want = mp.as_os_str().as_encoded_bytes();
    unifs_cmdlines().into_iter().find_map(|(pid, cmd)| {
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let ours = args.contains(&b"mount".as_slice()) && args.last() == Some(&b"".as_slice());
        (ours && args.contains(&want) && pid as u32 != std::process::id()).then_some(pid)
    })
}

/// The unifs processes (their comm, which takes no lock, tells them) and
/// their cmdlines, each read within a bound: a cmdline read waits for the
/// process's memory-map lock, which one stuck on a stalled FUSE mount (as
/// tests running beside make) may hold for good (see
/// `unifs::sys::BoundedReads`). A look at every process's cmdline hung.
pub fn unifs_cmdlines() -> Vec<(i32, Vec<u8>)> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let unifs = procs.flatten().filter_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(e.path().join("comm")).ok()?;
        comm.starts_with("unifs").then_some(pid)
    });
    unifs
        .filter_map(|pid| Some((pid, unifs::sys::cmdline_bounded(pid)?)))
        .collect()
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.watchdog.take();
        unmount_lazy(&self.dir);
        if let Some(mut child) = self.child.take() {
            if !wait_until(Duration::from_secs(5), || {
                child.try_wait().ok().flatten().is_some()
            }) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        wait_until(Duration::from_secs(5), || !is_mounted(&self.dir));
    }
}

/// Unmounts on drop whatever the test left mounted at a path.
pub struct UnmountAt<'a>(pub &'a Path);

impl Drop for UnmountAt<'_> {
    fn drop(&mut self) {
        unmount_lazy(self.0);
        wait_until(Duration::from_secs(5), || !is_mounted(self.0));
    }
}

pub fn unmount_lazy(dir: &Path) {
    if !is_mounted(dir) {
        return;
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

/// The names in `dir`, sorted (in a backing directory: a break's temp
/// names too).
pub fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// Mounts `g` at `w`'s `m` with the daemon run under strace, its `injects`
/// (`--inject=…`) applied.
pub fn mount_under_strace(w: &World, g: &Path, injects: &[&str], opts: &[&str]) -> Mount {
    let mp = w.dir("m");
    let log = fs::File::create(mp.with_extension("log")).unwrap();
    let mut strace = vec!["strace", "-f", "-qq", "-o", "/dev/null"];
    strace.extend_from_slice(injects);
    Mount::start_under(&strace, &w.store, g, &mp, opts, log)
}

/// strace and its arguments that trace the syncfs calls of the daemon it
/// runs into `trace` (see [`syncfs_calls`]); injections and a wrapper of
/// the daemon's own (`env …`) may follow.
pub fn syncfs_traced(trace: &Path) -> Vec<String> {
    let args = ["strace", "-f", "-qq", "-e", "trace=syncfs", "-o"];
    let mut wrapper: Vec<String> = args.map(str::to_owned).to_vec();
    wrapper.push(trace.to_str().unwrap().to_owned());
    wrapper
}

/// How many syncfs calls the trace of [`syncfs_traced`] holds.
pub fn syncfs_calls(trace: &Path) -> usize {
    let calls = fs::read_to_string(trace).unwrap();
    calls.lines().filter(|l| l.contains("syncfs(")).count()
}

/// A small ext4 filesystem in an image file, loop-mounted for a test (the
/// next file created in a directory gets the lowest free inode number of
/// its block group, which is one just freed). Unmounted (and its loop
/// device freed) even when the test fails.
pub struct Ext4 {
    dir: tempfile::TempDir,
}

impl Ext4 {
    /// `mkfs`: extra `mkfs.ext4` arguments; `opts`: extra mount options.
    pub fn new(mkfs: &[&str], opts: &[&str]) -> Ext4 {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("img");
        fs::File::create(&img).unwrap().set_len(256 << 20).unwrap();
        run(Command::new("mkfs.ext4").arg("-q").args(mkfs).arg(&img));
        fs::create_dir(dir.path().join("fs")).unwrap();
        let ext4 = Ext4 { dir };
        loop_mount(&img, &ext4.root(), &[&["loop"], opts].concat().join(","));
        ext4
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("fs")
    }

    /// Switches the loop device to direct I/O: a write is then in flight
    /// until the disk under the image has it, as on a real disk, instead of
    /// done once in the image's page cache.
    pub fn direct_io(&self) {
        let dev = run(Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(self.root()));
        let dev = String::from_utf8(dev.stdout).unwrap();
        run(Command::new("losetup")
            .arg("--direct-io=on")
            .arg(dev.trim()));
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.root().join(name);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Makes ext4 fail as on a real I/O error (`trigger_fs_error`): with
    /// `errors=remount-ro` it aborts its journal and refuses every change
    /// (EROFS) from then on, its mount still `rw` (`emergency_ro`).
    pub fn fail(&self) {
        fs::write(self.sysfs().join("trigger_fs_error"), "1").unwrap();
    }

    /// The filesystem's directory in /sys/fs/ext4 (its loop device's name),
    /// there while its superblock lives.
    pub fn sysfs(&self) -> PathBuf {
        let dev = run(Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(self.root()));
        let dev = String::from_utf8(dev.stdout).unwrap();
        let name = Path::new(dev.trim()).file_name().unwrap().to_owned();
        Path::new("/sys/fs/ext4").join(name)
    }

    /// What an operator does after [`Ext4::fail`]: unmount, `e2fsck -fy`
    /// (0 or 1: clean or fixed), mount again with `opts`.
    ///
    /// The unmount ends the filesystem only once no other mount namespace
    /// holds a copy of it: where the host's mounts are private (this
    /// machine, CI), an `unshare --mount` of another test started meanwhile
    /// holds one until it ends (a `unifs run` did too before 2026-12-04;
    /// it now lets go of every mount it has no use for). Mounting the image again before
    /// then gets the failed superblock back (mount reuses the image's loop
    /// device), read-only: so wait for it to end.
    pub fn repair(&self, opts: &[&str]) {
        let sysfs = self.sysfs();
        run(Command::new("umount").arg(self.root()));
        assert!(
            wait_until(std::time::Duration::from_secs(120), || !sysfs.exists()),
            "{} still lives 120 s after its unmount: another mount namespace holds it",
            sysfs.display()
        );
        let img = self.dir.path().join("img");
        fsck_sound(&img, "fsck after a repair");
        loop_mount(&img, &self.root(), &[&["loop"], opts].concat().join(","));
    }

    /// What the disk holds right now, as a power cut would leave it: a copy
    /// of the image taken without syncing anything, its journal replayed
    /// by fsck (which must find the filesystem sound), mounted read-only.
    pub fn power_cut(&self) -> PowerCut {
        self.power_cut_mounted("loop,ro")
    }

    /// [`Ext4::power_cut`], mounted read-write (the copy is the test's own):
    /// for what runs after the power came back.
    pub fn power_cut_writable(&self) -> PowerCut {
        self.power_cut_mounted("loop")
    }

    fn power_cut_mounted(&self, opts: &str) -> PowerCut {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("img");
        let image = self.dir.path().join("img");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(image)
            .arg(&img));
        fsck_sound(&img, "fsck after a power cut");
        fs::create_dir(dir.path().join("fs")).unwrap();
        let cut = PowerCut { dir };
        loop_mount(&img, &cut.root(), opts);
        cut
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        unmount_lazy(&self.root());
    }
}

/// A power cut's disk, mounted; unmounted when dropped.
pub struct PowerCut {
    dir: tempfile::TempDir,
}

impl PowerCut {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("fs")
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        unmount_lazy(&self.root());
    }
}

fn loop_mount(img: &Path, at: &Path, opts: &str) {
    run(Command::new("mount").args(["-o", opts]).arg(img).arg(at));
}

/// Runs `cmd`, which must succeed (its stderr says why not).
pub(crate) fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `e2fsck -fy` of the image `img`, which must leave it sound: exit 0
/// (clean) or 1 (fixed, as by the journal's replay).
fn fsck_sound(img: &Path, what: &str) {
    let fsck = Command::new("e2fsck").arg("-fy").arg(img).output().unwrap();
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "{what}: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
}
