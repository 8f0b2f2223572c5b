//! The FUSE overlay (vfs-mount): a guest's backing directory seen through a
//! filesystem that passes everything through, except that the first change to
//! a shared store object gives the guest a private copy.
//!
//! - [`inode`]: node numbers and names, without an fd per node;
//! - [`cow`]: recognising shared inodes and breaking links;
//! - [`overlay`]: the operations on plain types;
//! - [`fuse`]: the fuser adapter; [`sys`]: the extra syscalls;
//! - [`on_panic`]: a panic ends the daemon.

pub mod cow;
pub mod dircache;
pub mod fuse;
pub mod inode;
pub mod mountinfo;
pub mod on_panic;
pub mod overlay;
pub mod ready;
pub mod stalls;
pub mod sys;

pub use stalls::StallCheck;

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Lets a log line a guest can cause at will through at most a given
/// number of times a minute: a guest looping on a refused change would
/// fill the host's log.
pub struct LogLimit {
    per_minute: u64,
    /// When the window began (seconds) in the high bits, the lines logged
    /// in it in the low 16.
    state: std::sync::atomic::AtomicU64,
}

impl LogLimit {
    pub const fn new(per_minute: u64) -> Self {
        LogLimit {
            per_minute,
            state: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// True if the line may be logged now: fewer than `per_minute` lines
    /// since the first of the last minute's window.
    pub fn allows(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        let update = |v: u64| match (v >> 16, v & 0xffff) {
            (start, n) if start != 0 && now < start + 60 => (n < self.per_minute).then_some(v + 1),
            _ => Some(now << 16 | 1),
        };
        self.state.fetch_update(Relaxed, Relaxed, update).is_ok()
    }
}

/// Why `-o nodefault_permissions` is refused. The daemon acts as root with
/// every capability and checks nothing itself; even with `noallow_other`
/// (uid 0 callers only) a root process whose capabilities were dropped
/// (a service's `CapabilityBoundingSet=`, a container's `--cap-drop`)
/// would chown, chmod, read and write every file through it.
const NO_DEFAULT_PERMISSIONS: &str = "-o nodefault_permissions is not supported: the daemon \
     acts as root with every capability and checks no permissions itself, so without the \
     kernel's checks a root process whose capabilities were dropped could still read, write, \
     chown and chmod every file through the mount (default_permissions is always on)";

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    /// `allow_other`: every uid may use the mount (a guest runs many users).
    pub allow_other: bool,
    pub passthrough: bool,
    pub suid: bool,
    pub dev: bool,
    pub exec: bool,
    pub atime: bool,
    pub threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            allow_other: true,
            passthrough: true,
            suid: true,
            // Device nodes a guest root makes must not open host devices.
            dev: false,
            exec: true,
            atime: true,
            threads: 4,
        }
    }
}

impl MountOptions {
    /// Applies one `-o` option; an unknown one is an error.
    pub fn apply(&mut self, opt: &str) -> Result<(), String> {
        match opt {
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "allow_other" => self.allow_other = true,
            "noallow_other" => self.allow_other = false,
            // Always on: the kernel checks every caller's permissions.
            "default_permissions" => {}
            "nodefault_permissions" => return Err(NO_DEFAULT_PERMISSIONS.into()),
            "passthrough" => self.passthrough = true,
            "nopassthrough" => self.passthrough = false,
            "suid" => self.suid = true,
            "nosuid" => self.suid = false,
            "dev" => self.dev = true,
            "nodev" => self.dev = false,
            "exec" => self.exec = true,
            "noexec" => self.exec = false,
            "atime" => self.atime = true,
            "noatime" => self.atime = false,
            // fstab/systemd pass these; they mean nothing to us.
            "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "nouser" | "users"
            | "nonempty" | "async" | "relatime" => {}
            // The kernel never updates a FUSE file's access time: the
            // backing files' move as their own filesystem's mount options
            // say (`atime`), or not at all (`noatime`: O_NOATIME reads).
            "norelatime" | "strictatime" => {
                return Err(format!(
                    "mount option {opt:?} is not supported: access times are the backing \
                     filesystem's, updated as its own mount options say (-o atime, the default) \
                     or left as they are (-o noatime)"
                ))
            }
            o if o.starts_with("x-") || o.starts_with("comment=") => {}
            o => {
                if let Some(n) = o.strip_prefix("threads=") {
                    self.threads = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| format!("bad value in -o {o}: 1 to 64 threads"))?;
                } else {
                    return Err(format!(
                        "unknown mount option {o:?}; `unifs mount --help` lists the options \
                         (docs/mount.md, \"Options\")"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Keeps the restrictions of the mount the guest's backing directory
    /// `guest` lies on: where the host admin mounted it nosuid, noexec or
    /// nodev, a set-uid program (or a device node) in the guest must not
    /// gain through the unifs mount what it has not there. Returns the
    /// options (`suid`, `exec`, `dev`) that were on and are now off.
    pub fn carry_backing(&mut self, guest: &Path) -> io::Result<Vec<&'static str>> {
        use nix::sys::statvfs::{statvfs, FsFlags};
        let flags = statvfs(guest).map_err(io::Error::from)?.flags();
        let mut carried = Vec::new();
        for (flag, on, word) in [
            (FsFlags::ST_NOSUID, &mut self.suid, "suid"),
            (FsFlags::ST_NOEXEC, &mut self.exec, "exec"),
            (FsFlags::ST_NODEV, &mut self.dev, "dev"),
        ] {
            if flags.contains(flag) && *on {
                *on = false;
                carried.push(word);
            }
        }
        Ok(carried)
    }

    /// The options `statvfs` shows of a mount made with these (ro, nosuid,
    /// nodev, noexec), as `-o` words, for telling a mount made otherwise.
    pub fn vfs_words(&self) -> Vec<&'static str> {
        vfs_words(self.read_only, !self.suid, !self.dev, !self.exec)
    }

    fn fuser_config(&self, guest: &Path) -> fuser::Config {
        use fuser::MountOption as O;
        let mut c = fuser::Config::default();
        let mut m = vec![
            O::FSName(mountinfo::unifs_source(guest)),
            O::Subtype("unifs".into()),
        ];
        m.push(O::DefaultPermissions);
        m.push(if self.read_only { O::RO } else { O::RW });
        m.push(if self.suid { O::Suid } else { O::NoSuid });
        m.push(if self.dev { O::Dev } else { O::NoDev });
        m.push(if self.exec { O::Exec } else { O::NoExec });
        m.push(if self.atime { O::Atime } else { O::NoAtime });
        c.mount_options = m;
        c.acl = if self.allow_other {
            fuser::SessionACL::All
        } else {
            fuser::SessionACL::Owner
        };
        c.n_threads = Some(self.threads);
        c.clone_fd = true;
        c
    }
}

/// Says so, once, where the daemon cannot act with a guest user's
/// filesystem ids (root without CAP_SETUID or CAP_SETGID): it then makes
/// the user's entries as itself and gives them away afterwards, and its
/// writes are root's, so ext4's blocks reserved for root are the user's too.
fn warn_if_ids_stay() {
    let (uid, gid) = crate::sys::fsids::switches();
    let missing: Vec<&str> = [(uid, "CAP_SETUID"), (gid, "CAP_SETGID")]
        .into_iter()
        .filter_map(|(works, cap)| (!works).then_some(cap))
        .collect();
    if missing.is_empty() {
        return;
    }
    tracing::warn!(
        "cannot take a guest user's filesystem ids (no {}): the user's new files, \
         directories and writes are made as this daemon's user and then given to \
         the user, so on ext4 they may take the blocks reserved for root (`tune2fs \
         -m`); quotas still hold. To keep guest users out of that reserve, run the \
         mount with CAP_SETUID and CAP_SETGID",
        missing.join(" or ")
    );
}

/// A mounted overlay, not yet serving.
pub struct Mounted {
    session: fuser::Session<fuse::UnifsFs>,
    /// The guest's claim (`claim_guest`): its root and ancestor
    /// directories, locked while we serve.
    claims: Vec<std::os::fd::OwnedFd>,
    pub mountpoint: PathBuf,
    /// Its FUSE threads (`-o threads`).
    pub threads: usize,
}

/// Mounts `guest` at `mountpoint`; the kernel handshake is done when this
/// returns, so the caller can report the mount ready before serving.
pub fn mount(guest: &Path, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mounted> {
    sys::set_umask(0); // the caller's umask is applied per request

    // The daemon holds an fd per file a guest has open.
    if let Err(e) = crate::sys::raise_fd_limit() {
        tracing::warn!("{e}");
    }
    // Each thread's request needs a few fds of its own at once.
    sys::keep_room_for(opts.threads);
    // The daemon writes the guest's files (breaks, and passthrough writes
    // run with the credentials of the thread that opened the backing
    // file): with CAP_SYS_RESOURCE, ext4 would let a guest past disk
    // quotas and into the blocks it keeps for root. Out of the effective
    // set of this thread, and so of the FUSE threads it starts; permitted
    // still, for `chattr +j`.
    let resource = crate::sys::caps::CAP_SYS_RESOURCE;
    if let Err(e) = crate::sys::caps::set_effective(resource, false) {
        tracing::warn!("cannot give up CAP_SYS_RESOURCE: {e}; guests may exceed disk quotas");
    }
    warn_if_ids_stay();
    // `unifs mount` has carried them already (and said so); `guest
    // start` and `run` have not.
    let mut opts = opts.clone();
    opts.carry_backing(guest)?;
    let root = crate::sys::open_dir(guest)?;
    // UNIFS_TEST_NO_CLAIM: the tests' stand-in for a daemon of a build
    // before the claim (45eff4d), which holds no flock.
    let mut claims = match crate::sys::test_hook!("UNIFS_TEST_NO_CLAIM") {
        Some(_) => Vec::new(),
        None => claim_guest(&root, guest)?,
    };
    // The root's lock is held by every fd of its open file, this one too.
    claims.push(root.try_clone()?);
    let overlay = Arc::new(overlay::Overlay::new(root, opts.read_only, !opts.atime)?);
    let fs = fuse::UnifsFs {
        overlay,
        // Never 0, the generation of every node before 2026-12-05.
        generation: (crate::sys::random_u64() as u32).max(1),
        want_passthrough: opts.passthrough,
    };
    let overlay = fs.overlay.clone();
    let session = fuser::Session::new(fs, mountpoint, &opts.fuser_config(guest))?;
    let _ = overlay.notifier.set(session.notifier());
    Ok(Mounted {
        session,
        claims,
        mountpoint: mountpoint.to_path_buf(),
        threads: opts.threads,
    })
}

impl Mounted {
    /// Serves requests until the filesystem is unmounted. A panic in any
    /// thread from now on ends the process ([`on_panic`]).
    pub fn serve(self) -> io::Result<()> {
        let Mounted {
            session,
            claims,
            mountpoint,
            ..
        } = self;
        on_panic::end_daemon_on_panic(&mountpoint);
        // When serving ends, fuser drops the overlay (its root fd) before
        // it unmounts the mount point by path, even one the kernel already
        // unmounted (`unifs umount`): a new mount of this guest there that
        // took the lock in between was unmounted. The lock is let go only
        // after that.
        let served = session.run();
        // The tests' way to make the daemon's main thread fail once it
        // served (review_s45_keepsmalls): `unifs run`'s daemon, a child of
        // unifs, ended 125 then, not 101 as on any other thread's panic.
        crate::sys::test_panic!("mount-served");
        drop(claims);
        served
    }
}

/// One daemon per guest, and none for a directory inside or around a
/// served guest: the daemon must be its tree's only writer (its node table
/// and the break rely on it). The claim is an exclusive flock on the guest
/// root, held through the overlay's root fd, and a shared one on each
/// directory above it, held through the returned fds, for the daemon's
/// life: a mount of a directory above then cannot take its exclusive lock,
/// nor one below its shared ones. flocks reach across mount namespaces
/// (`unifs run`, `guest start`). A daemon that is just exiting (an unmount
/// a moment ago) is waited for, briefly.
fn claim_guest(root: &std::os::fd::OwnedFd, guest: &Path) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    let canonical = std::fs::canonicalize(guest)?;
    let mut above = Vec::new();
    for dir in canonical.ancestors().skip(1) {
        above.push(crate::sys::open_dir(dir)?);
    }
    for _ in 0..200 {
        if sys::try_flock(root.as_fd(), true)? {
            let mut all = true;
            for fd in &above {
                all = all && sys::try_flock(fd.as_fd(), false)?;
            }
            if all {
                // Still the directory at that path? A `unifs restore` into
                // it held it (shared) and, as it ended, renamed its tree
                // there: the lock got is the old one's, which is deleted,
                // and served it would show the guest an empty root.
                let now = std::fs::metadata(&canonical)?;
                let st = sys::fstat(root.as_fd())?;
                use std::os::unix::fs::MetadataExt;
                if (now.dev(), now.ino()) != (st.st_dev, st.st_ino) {
                    for fd in above.iter().chain(std::iter::once(root)) {
                        sys::unlock(fd.as_fd());
                    }
                    return Err(io::Error::other(format!(
                        "{} was replaced while this mount waited for it (a `unifs restore` \
                         into it just ended?); mount it again",
                        crate::sys::shown(guest)
                    )));
                }
                if let Some((pid, served)) = unclaimed_daemon(&canonical, true) {
                    for fd in above.iter().chain(std::iter::once(root)) {
                        sys::unlock(fd.as_fd());
                    }
                    return Err(already_served(
                        guest,
                        &format!(
                            " (its daemon: pid {pid}, serving {}, is of an older unifs, which \
                             takes no lock)",
                            crate::sys::shown(&served)
                        ),
                    ));
                }
                return Ok(above);
            }
            // Let go of all and try again: no lock held while waiting.
            for fd in above.iter().chain(std::iter::once(root)) {
                sys::unlock(fd.as_fd());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let holder = match lock_holder(root.as_fd()) {
        // Stopped, it never ends by itself, unmounted or not.
        Some(pid) if process_stopped(pid) == Some(true) => format!(
            " (its daemon: pid {pid}, which is stopped (SIGSTOP, or a debugger holds it), and \
             holds the guest even once unmounted: `kill -CONT {pid}` lets it go on and end, or \
             kill it)"
        ),
        Some(pid) => format!(
            " (its daemon: pid {pid}; one unmounted with `--lazy` still serves the processes \
             that have files open in it, until they close them or that pid ends)"
        ),
        None => String::new(),
    };
    Err(already_served(guest, &holder))
}

fn already_served(guest: &Path, holder: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!(
            "{} is already served by another unifs mount, or a directory around it is \
             (`unifs mount`, `guest start` or `unifs run` of it, which mounts it where only \
             the guest sees it){holder}; a guest has one mount at a time: stop or unmount that \
             one first",
            crate::sys::shown(guest)
        ),
    )
}

/// A unifs daemon that serves the canonical `dir` (with `around`, also one
/// that serves a directory above or below it) without holding its flock:
/// one of a build before the claim (45eff4d, 2026-11-30), still running
/// after an upgrade. It is known by what it holds: /dev/fuse, and an fd on
/// the directory its mount's source (`unifs:DIR`, in its own mount
/// namespace) names. A directory moved away since it was mounted is held
/// under its new name, so it is not taken for the one now at `dir`.
fn unclaimed_daemon(dir: &Path, around: bool) -> Option<(i32, PathBuf)> {
    unclaimed_daemon_of(|p| p == dir || (around && (p.starts_with(dir) || dir.starts_with(p))))
}

/// [`unclaimed_daemon`] of a directory `wanted` takes.
fn unclaimed_daemon_of(wanted: impl Fn(&Path) -> bool) -> Option<(i32, PathBuf)> {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| *n != me)
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        // Only links are read: a stat through a stopped daemon's mount
        // would wait for good.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let held: Vec<PathBuf> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .collect();
        if !held.iter().any(|p| p == Path::new("/dev/fuse")) {
            continue;
        }
        // One that ended meanwhile serves nothing.
        let mounts = mountinfo::read_at(&entry.path().join("mountinfo")).unwrap_or_default();
        let served = mounts
            .iter()
            .filter_map(mountinfo::Mount::unifs_guest)
            .find(|s| wanted(s) && held.contains(s));
        if let Some(served) = served {
            return Some((pid, served));
        }
    }
    None
}

/// A guest directory a unifs mount daemon serves (it holds the exclusive
/// flock on the guest's root: see [`claim_guest`]).
#[derive(Debug, Clone)]
pub struct Served {
    /// The served guest directory (canonical).
    pub guest: PathBuf,
    /// Its daemon, where /proc/locks names it.
    pub pid: Option<i32>,
    /// Where it is mounted, as far as this mount namespace shows (a
    /// started guest's root is mounted where only the guest sees it).
    pub mount_points: Vec<PathBuf>,
}

/// Shared flocks on the existing directory `dir` and on each directory
/// above it, as a mount daemon holds them on the directories above its
/// guest: `Err(Served)` where one of them is the root of a served guest
/// (its daemon holds the exclusive flock there, so the shared one cannot be
/// had). While the returned fds are held, no mount of any of them can start
/// (its exclusive flock is refused): a writer of the tree below that is no
/// mount daemon takes them, so that it never writes behind a daemon's back.
pub fn hold_unserved(dir: &Path) -> io::Result<Result<Vec<std::os::fd::OwnedFd>, Served>> {
    let canonical = std::fs::canonicalize(dir)?;
    let mut held = Vec::new();
    for d in canonical.ancestors() {
        let fd = crate::sys::open_dir(d)?;
        if !sys::try_flock(fd.as_fd(), false)? {
            return Ok(Err(Served::by(d.to_path_buf(), lock_holder(fd.as_fd()))));
        }
        held.push(fd);
    }
    // A daemon of a build before the flocks, still serving after an
    // upgrade: of `dir` or a directory above (one below is not ours to
    // mind, as with the flocks: a new guest is restored beside served ones).
    if let Some((pid, guest)) = unclaimed_daemon_of(|p| canonical.starts_with(p)) {
        return Ok(Err(Served::by(guest, Some(pid))));
    }
    Ok(Ok(held))
}

impl Served {
    /// `guest`, served by `pid`, with the mount points this namespace shows.
    fn by(guest: PathBuf, pid: Option<i32>) -> Served {
        // Only shown to the operator: none where mountinfo cannot be read.
        let mount_points = mountinfo::read()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.unifs_guest().as_ref() == Some(&guest))
            .map(|m| m.point)
            .collect();
        Served {
            guest,
            pid,
            mount_points,
        }
    }
}

/// The pid holding a flock on `fd`'s inode, from /proc/locks.
fn lock_holder(fd: std::os::fd::BorrowedFd) -> Option<i32> {
    let st = sys::fstat(fd).ok()?;
    crate::sys::flock_holders(st.st_dev, st.st_ino)?
        .first()
        .copied()
}

/// Waits, up to `limit`, until no daemon holds `guest` (its claim's lock),
/// unless the one that does is stopped. An unmounted daemon ends by
/// unmounting its mount point by path (fuser does, even when the kernel
/// did already) and only then lets go of the lock: a mount made there
/// before that, of any guest, would be unmounted.
pub fn wait_until_released(guest: &Path, limit: std::time::Duration) {
    let Ok(root) = crate::sys::open_dir(guest) else {
        return;
    };
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        match sys::try_flock(root.as_fd(), false) {
            Ok(true) => {
                sys::unlock(root.as_fd());
                return;
            }
            Ok(false) => {}
            Err(_) => return,
        }
        if lock_holder(root.as_fd()).and_then(process_stopped) == Some(true) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Unmounts `mountpoint`: plainly, or lazily (detached, gone when its last
/// user leaves) if it is busy and `lazy_if_busy` is set.
pub fn unmount(mountpoint: &Path, lazy_if_busy: bool) -> io::Result<()> {
    // A file closed just now may still have its release in flight: retry a
    // busy mount briefly before calling it busy.
    let mut tries = 0;
    loop {
        match sys::umount(mountpoint, false) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && lazy_if_busy => {
                return sys::umount(mountpoint, true);
            }
            r => return r,
        }
    }
}

/// True when `path` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    Ok(mount_at(path)?.is_some())
}

/// True when `path` is a unifs mount (a FUSE mount whose source is ours).
pub fn is_unifs_mount(path: &Path) -> io::Result<bool> {
    Ok(unifs_mount_guest(path)?.is_some())
}

/// The guest directory the unifs mount at `path` serves (the last mount
/// there, when it is one of ours): its source, `unifs:GUEST`.
pub fn unifs_mount_guest(path: &Path) -> io::Result<Option<PathBuf>> {
    Ok(mount_at(path)?.and_then(|m| m.unifs_guest()))
}

/// Whether `e`, from a call that reached a FUSE mount, says that its
/// daemon is gone: ENOTCONN for a call made after its connection ended,
/// ECONNABORTED for one that waited for an answer as it ended (the daemon
/// was dying: a look right after its kill).
pub fn daemon_gone_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED))
}

/// Whether the directory now at `guest` (a unifs mount's source,
/// `unifs:GUEST`) is one a daemon serves: its exclusive flock
/// ([`claim_guest`]) is held, or a daemon of an older build, which takes
/// none, holds it open ([`unclaimed_daemon`]). A mount's source names only
/// a path: false when the served directory was moved away (another one, or
/// none, is at that path now), and the mount serves that one, wherever it is.
/// Not asked of a guest reached through a unifs mount (one mounted over
/// itself): its own directory cannot be seen there.
pub fn guest_still_served(guest: &Path) -> bool {
    let Ok(root) = crate::sys::open_dir(guest) else {
        return false;
    };
    match sys::try_flock(root.as_fd(), false) {
        Ok(true) => {
            sys::unlock(root.as_fd());
            std::fs::canonicalize(guest).is_ok_and(|g| unclaimed_daemon(&g, false).is_some())
        }
        // Held, or not known: as a path comparison would say.
        Ok(false) | Err(_) => true,
    }
}

/// The mount point and guest directory of the unifs mount that holds
/// `path`, when that mount serves another directory than the one now at
/// its guest's path ([`guest_still_served`]): its backing directory, as
/// [`unifs_view_backing`] names it, is not that path any more.
pub fn unifs_view_moved(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let path = std::fs::canonicalize(path).ok()?;
    let (m, rest) = holding_mount(&path)?;
    let guest = m.unifs_guest()?;
    let mount = path
        .ancestors()
        .nth(rest.components().count())?
        .to_path_buf();
    let hidden = guest.starts_with(&mount);
    (m.fstype.starts_with("fuse") && !hidden && !guest_still_served(&guest))
        .then_some((mount, guest))
}

/// Where `path` is in its guest's backing directory, when it lies in a
/// unifs mount (the view `unifs mount` serves a guest, e.g. a running
/// guest's root): the path an operator meant to give unify or `run`.
pub fn unifs_view_backing(path: &Path) -> Option<PathBuf> {
    let path = std::fs::canonicalize(path).ok()?;
    let (m, rest) = holding_mount(&path)?;
    // A bind mount of a directory of the view shows that directory.
    let mut at = m.unifs_guest()?;
    for part in m.root.components().skip(1).chain(rest.components()) {
        at.push(part);
    }
    Some(at)
}

/// The mount point of the mount that holds `path` (the deepest above it).
pub fn holding_mount_point(path: &Path) -> Option<PathBuf> {
    let path = std::fs::canonicalize(path).ok()?;
    let (_, rest) = holding_mount(&path)?;
    path.ancestors()
        .nth(rest.components().count())
        .map(Path::to_path_buf)
}

/// The filesystem type (as /proc/self/mountinfo names it: "ext4",
/// "ext3", "xfs"…) of the mount that holds `path`.
pub fn holding_fstype(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    holding_mount(&path).map(|(m, _)| m.fstype)
}

/// The mount that holds the canonical `path` (the deepest mount point
/// above it; of mounts stacked on one point, the last, on top), and where
/// `path` is below that mount point.
fn holding_mount(path: &Path) -> Option<(mountinfo::Mount, PathBuf)> {
    let mut best: Option<(usize, mountinfo::Mount, PathBuf)> = None;
    for m in mountinfo::read().ok()? {
        let Ok(rest) = path.strip_prefix(&m.point) else {
            continue;
        };
        let depth = m.point.components().count();
        if best.as_ref().is_none_or(|(d, _, _)| depth >= *d) {
            let rest = rest.to_path_buf();
            best = Some((depth, m, rest));
        }
    }
    best.map(|(_, m, rest)| (m, rest))
}

/// `path` made absolute and free of symlinks (as `canonicalize`), without a
/// stat of the path itself when it is a mount point: its directory is
/// resolved, and its last name looked up in /proc/self/mountinfo before it
/// is looked at (and, a symlink, followed the same way). A stat of a FUSE
/// mount's root goes to its daemon, and one whose daemon is stopped never
/// answers: the caller asks it in a bounded way
/// ([`crate::guest::state::root_health`]) first.
pub fn resolve_without_stat(path: &Path) -> io::Result<PathBuf> {
    StallCheck::new()?.check(path, true)?;
    let mut p = std::path::absolute(path)?;
    for _ in 0..40 {
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
            // `/`, or a path ending in `..`.
            return std::fs::canonicalize(&p);
        };
        let at = std::fs::canonicalize(dir)?.join(name);
        if listed_mount_point(&at)? {
            return Ok(at);
        }
        if !std::fs::symlink_metadata(&at)?.file_type().is_symlink() {
            return Ok(at);
        }
        let target = std::fs::read_link(&at)?;
        p = at.parent().unwrap_or(Path::new("/")).join(target);
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// `canonicalize`, refused at once (instead of waiting for good) when
/// `path` lies in a FUSE mount whose daemon does not answer.
pub fn canonicalize_bounded(path: &Path) -> io::Result<PathBuf> {
    refuse_stalled(path)?;
    std::fs::canonicalize(path)
}

/// Refuses `path` at once when a FUSE mount at or above it does not
/// answer: any look at `path` would wait for good.
/// (Of several paths: one [`StallCheck`], which reads the mount table
/// once.)
pub fn refuse_stalled(path: &Path) -> io::Result<()> {
    StallCheck::new()?.refuse(path)
}

/// The daemon serving the guest directory `guest` (the holder of its lock,
/// see [`claim_guest`]) and whether it is stopped, looked up without
/// touching any mount: None when no daemon holds it. Stopped means every
/// thread of it is (SIGSTOP, or a tracer's stop, as a debugger's), or is
/// stopping (see [`process_stopped`]): nothing is answered until it goes
/// on. A daemon with a thread that runs or sleeps is busy at worst.
pub fn guest_daemon(guest: &Path) -> Option<(i32, bool)> {
    let root = crate::sys::open_dir(guest).ok()?;
    let pid = lock_holder(root.as_fd())?;
    Some((pid, process_stopped(pid)?))
}

/// Whether `pid` is stopped (see [`guest_daemon`]): every thread of it is,
/// or one is in a group stop (`T`: SIGSTOP stops every thread, and one busy
/// in the kernel, as in a write to a slow disk, stops as it comes out).
/// None when it is gone.
pub fn process_stopped(pid: i32) -> Option<bool> {
    let state = |stat: String| stat.rsplit_once(") ")?.1.chars().next();
    let states: Vec<char> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        // A thread that ended since the listing has no state.
        .filter_map(|t| state(std::fs::read_to_string(t.path().join("stat")).ok()?))
        .collect();
    if states.is_empty() {
        return None;
    }
    Some(states.contains(&'T') || states.iter().all(|&s| s == 'T' || s == 't'))
}

/// Whether /proc/self/mountinfo lists a mount at the canonical `path`.
fn listed_mount_point(path: &Path) -> io::Result<bool> {
    Ok(mountinfo::read()?.iter().any(|m| m.point == path))
}

/// The last mount at `path` (on top of any others there), if any; none
/// where `path` cannot be resolved. The path itself is not stat'ed
/// ([`resolve_without_stat`]). An error where mountinfo cannot be read:
/// "not a mount" would be a guess.
pub fn mount_at(path: &Path) -> io::Result<Option<mountinfo::Mount>> {
    let Ok(path) = resolve_without_stat(path) else {
        return Ok(None);
    };
    Ok(mountinfo::read()?.into_iter().rfind(|m| m.point == path))
}

/// Where the canonical `path` lies in its filesystem: the device
/// (major:minor) and the path from that filesystem's root, whichever mount
/// reaches it (a bind mount of a directory above it too).
pub fn fs_location(path: &Path) -> Option<(String, PathBuf)> {
    let (m, rest) = holding_mount(path)?;
    Some((m.dev, m.root.join(rest)))
}

fn vfs_words(ro: bool, nosuid: bool, nodev: bool, noexec: bool) -> Vec<&'static str> {
    [
        (ro, "ro"),
        (nosuid, "nosuid"),
        (nodev, "nodev"),
        (noexec, "noexec"),
    ]
    .into_iter()
    .filter_map(|(on, word)| on.then_some(word))
    .collect()
}

/// The `vfs_words` of the mount at `path` (statvfs: never cached).
pub fn mounted_vfs_words(path: &Path) -> std::io::Result<Vec<&'static str>> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let f = statvfs(path).map_err(std::io::Error::from)?.flags();
    Ok(vfs_words(
        f.contains(FsFlags::ST_RDONLY),
        f.contains(FsFlags::ST_NOSUID),
        f.contains(FsFlags::ST_NODEV),
        f.contains(FsFlags::ST_NOEXEC),
    ))
}
