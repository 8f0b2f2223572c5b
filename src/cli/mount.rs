//! `unifs mount` / `unifs umount` (vfs-mount): checks, daemonizing, signals.
//! The filesystem itself is `crate::fs`.

use super::print::errln;
use super::{output, Global};
use crate::fs::{self as ufs, MountOptions};
use crate::guest::state::{root_health, RootHealth};
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The guest's backing directory. Refused if it is a unifs store, lies in
    /// one, or holds the store (--store); and, with no store at --store, if
    /// it looks unified (files linked from outside their directory, without
    /// the store's marker: a store moved, its markers lost).
    pub guest_dir: PathBuf,
    /// Where to mount it. A live unifs mount of the same guest there already
    /// (`mount -a` again, or another `unifs mount` of it there started at
    /// the same moment): "already mounted", exit 0 (an error if it was
    /// mounted with other ro/nosuid/nodev/noexec options, or if it serves a
    /// directory moved away from GUEST_DIR since).
    pub mountpoint: PathBuf,
    /// Stay in the foreground instead of daemonizing once the mount is ready.
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options, comma-separated (docs/mount.md): ro/rw (default rw),
    /// allow_other/noallow_other (allow_other),
    /// default_permissions (always on; nodefault_permissions is refused),
    /// passthrough/nopassthrough (on), suid/nosuid,
    /// exec/noexec, atime/noatime (default suid,exec,atime), dev/nodev
    /// (default nodev: device nodes in the tree open no devices),
    /// threads=N (1-64, default 4). The nosuid, noexec and nodev of the
    /// mount GUEST_DIR lies on are kept whatever -o says (with a warning
    /// against an explicit suid, exec or dev). Accepted and ignored, for fstab and
    /// systemd: defaults, auto, noauto, nofail, _netdev, user, users, nouser,
    /// nonempty, async, relatime, x-*, comment=*. Anything else is an error.
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Where the daemon writes its log, with -f too (default: nowhere; with -f,
    /// stderr). A mount that fails writes its error there as well as to
    /// stderr (`guest start` quotes the log's last line).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Where a unifs mount is (others are refused: use umount(8)).
    pub mountpoint: PathBuf,
    /// Detach now even if busy; the mount goes when its last user leaves.
    #[arg(short, long)]
    pub lazy: bool,
}

pub fn mount(g: &Global, a: MountArgs) -> anyhow::Result<ExitCode> {
    let log = a.log.clone();
    let r = mount_now(g, a);
    if let (Err(e), Some(log)) = (&r, log) {
        log_error(&log, e);
    }
    r
}

/// Appends why a mount failed to its `--log` too: `guest start` names the
/// log's last line, and under systemd our stderr is journaled as the
/// guest's cgroup's (we run there), not as the unit's.
fn log_error(log: &Path, e: &anyhow::Error) {
    if let Ok(mut f) = open_log(log) {
        let _ = writeln!(f, "unifs: {}", super::render(e));
    }
}

fn mount_now(g: &Global, a: MountArgs) -> anyhow::Result<ExitCode> {
    let mut opts = MountOptions::default();
    for o in a.options.iter().flat_map(|o| o.split(',')) {
        if !o.is_empty() {
            opts.apply(o).map_err(anyhow::Error::msg)?;
        }
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("unifs mount must run as root (it acts for every user of the guest)");
    }
    let guest = check_guest(&a.guest_dir)?;
    carry_backing(&mut opts, &guest, &a.options)?;
    check_not_store(&g.store, &guest)?;
    let Some(mountpoint) = check_mountpoint(&a.mountpoint, &guest, &opts)? else {
        // `mount -a` again: libmount cannot tell the fstab line's source
        // (`vfs-mount#GUEST`) from the mount's (`unifs:GUEST`).
        return Ok(already_mounted(&guest, &a.mountpoint));
    };
    if mountpoint != guest && mountpoint.starts_with(&guest) {
        // The daemon would reach the backing entry of that directory
        // through its own mount, and wait on itself.
        bail!(
            "mountpoint {} is inside the guest directory {}; mount the guest outside it",
            output::path(&mountpoint),
            output::path(&guest)
        );
    }
    if let (Some((gdev, gat)), Some((mdev, mat))) =
        (ufs::fs_location(&guest), ufs::fs_location(&mountpoint))
    {
        // The same inside another mount of the guest's filesystem (a bind
        // mount of it): with shared propagation (systemd's default) the
        // mount appears inside the guest directory too.
        if gdev == mdev && mat != gat && mat.starts_with(&gat) {
            bail!(
                "mountpoint {} is inside the guest directory {} (it is {} there, \
                 reached through a bind mount); mount the guest outside it",
                output::path(&mountpoint),
                output::path(&guest),
                output::path(&guest.join(mat.strip_prefix(&gat).unwrap_or(&mat)))
            );
        }
    }
    check_dev_fuse()?;
    check_store(&g.store, &guest)?;
    let log = match &a.log {
        Some(p) => Some(std::path::absolute(p).with_context(|| output::path(p))?),
        None => None,
    };
    if let Some(p) = &log {
        // Opened here, where an error can still be seen: the daemon has
        // no stderr left to say that its log goes nowhere.
        open_log(p).with_context(|| {
            format!(
                "cannot open the log file {} (--log); name a file in an existing, writable directory",
                output::path(p)
            )
        })?;
    }

    if a.foreground {
        let mounted = match do_mount(&guest, &mountpoint, &opts, ufs::ready::Daemon::Foreground) {
            Ok(mounted) => mounted,
            Err(_) if mounted_by_another(&a.mountpoint, &mountpoint, &guest, &opts) => {
                return Ok(already_mounted(&guest, &a.mountpoint))
            }
            Err(e) => return Err(e),
        };
        if log.is_some() {
            ufs::sys::redirect_stdio(log.as_deref()).context("redirecting output to --log")?;
        }
        return serve(mounted, None);
    }
    // Daemonize: the child mounts and reports through a pipe; the parent
    // exits once the mount answers (or failed), so `mount && ls` works.
    let (rx, tx) = nix::unistd::pipe().context("pipe")?;
    let (mut rx, tx) = (std::fs::File::from(rx), std::fs::File::from(tx));
    let forked = ufs::sys::fork().map_err(|e| {
        anyhow::anyhow!(
            "forking the mount daemon: {e}{}",
            ufs::ready::thread_hint(&e)
        )
    })?;
    match forked {
        Some(child) => {
            drop(tx);
            let mut msg = String::new();
            rx.read_to_string(&mut msg)
                .context("reading the daemon's status")?;
            match msg.strip_prefix("ok") {
                Some(_) => Ok(ExitCode::SUCCESS),
                None if msg.is_empty() => Err(died_before_ready(child, &guest, &mountpoint)),
                None => {
                    reap_failed(child);
                    if mounted_by_another(&a.mountpoint, &mountpoint, &guest, &opts) {
                        return Ok(already_mounted(&guest, &a.mountpoint));
                    }
                    bail!("{msg}")
                }
            }
        }
        None => {
            drop(rx);
            let mut tx = tx;
            let _ = ufs::sys::setsid();
            // Hold no directory of the caller busy.
            let _ = std::env::set_current_dir("/");
            match do_mount(&guest, &mountpoint, &opts, ufs::ready::Daemon::Forked) {
                Ok(mounted) => {
                    let _ = ufs::sys::redirect_stdio(log.as_deref());
                    serve(mounted, Some(tx))
                }
                Err(e) => {
                    let _ = write!(tx, "{}", super::render(&e));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// Says that `guest` is mounted at `p` already: nothing to do, exit 0.
fn already_mounted(guest: &Path, p: &Path) -> ExitCode {
    errln!(
        "unifs: {} is already mounted at {}; nothing to do",
        output::path(guest),
        output::path(p)
    );
    ExitCode::SUCCESS
}

/// Whether a mount that failed lost a race to another `unifs mount` of
/// `guest` at `p` (`mount -a` and a systemd unit at once: both found
/// nothing there, and this one's daemon lost the guest's claim): that
/// mount, once it answers, is the one asked for. Only a unifs mount of
/// `guest` at `p` (resolved: `mp`) is waited for, up to 3 s (and
/// `health`'s 2 s).
fn mounted_by_another(p: &Path, mp: &Path, guest: &Path, opts: &MountOptions) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let theirs = ufs::unifs_mount_guest(mp)
            .ok()
            .flatten()
            .is_some_and(|g| g == guest);
        if !theirs {
            return false;
        }
        if let Ok(None) = check_mountpoint(p, guest, opts) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits (up to 5 s) for the daemon `child` that said why it failed to
/// end: it ends right after. Not left to init, whose reaping can lag: the
/// zombie still counts against the pids cgroup (a unit's TasksMax=) of a
/// caller that tries again at once.
fn reap_failed(child: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let pid = nix::unistd::Pid::from_raw(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Ok(WaitStatus::StillAlive) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        if std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The error of a `unifs mount` whose daemon ended before it said the
/// mount was ready: how it ended, and a mount it left (dead) unmounted.
fn died_before_ready(child: i32, guest: &Path, mountpoint: &Path) -> anyhow::Error {
    use nix::sys::wait::{waitpid, WaitStatus};
    let how = match waitpid(nix::unistd::Pid::from_raw(child), None) {
        Ok(WaitStatus::Signaled(_, sig, _)) => format!(" (killed by {sig})"),
        Ok(WaitStatus::Exited(_, code)) => format!(" (exit status {code})"),
        _ => String::new(),
    };
    let ours = ufs::unifs_mount_guest(mountpoint)
        .ok()
        .flatten()
        .is_some_and(|g| g == guest);
    if ours && health(mountpoint) == RootHealth::Lost {
        let _ = ufs::sys::umount(mountpoint, true);
    }
    // An allocation that fails aborts (SIGABRT): under a low RLIMIT_AS.
    anyhow::anyhow!(
        "the mount daemon died before the mount was ready{how}; nothing is mounted at {}{}",
        output::path(mountpoint),
        ufs::ready::address_space_hint()
    )
}

/// Gives the mount the nosuid, noexec and nodev of the mount GUEST_DIR
/// lies on ([`MountOptions::carry_backing`]); warns once if that overrides
/// an option the user asked for.
fn carry_backing(opts: &mut MountOptions, guest: &Path, asked: &[String]) -> anyhow::Result<()> {
    let carried = opts
        .carry_backing(guest)
        .with_context(|| format!("reading the mount options of {}", output::path(guest)))?;
    let asked: Vec<&str> = asked.iter().flat_map(|o| o.split(',')).collect();
    let overridden: Vec<&str> = carried.into_iter().filter(|w| asked.contains(w)).collect();
    if !overridden.is_empty() {
        let no: Vec<String> = overridden.iter().map(|w| format!("no{w}")).collect();
        errln!(
            "unifs: warning: -o {} ignored: {} lies on a mount with {}, which the unifs mount \
             keeps (a guest must not gain there what the host forbids)",
            overridden.join(","),
            output::path(guest),
            no.join(",")
        );
    }
    Ok(())
}

/// The daemon's log file, as `redirect_stdio` opens it.
fn open_log(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(p)
}

/// `daemon`: how this daemon runs (what it starts beside its FUSE threads).
fn do_mount(
    guest: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    daemon: ufs::ready::Daemon,
) -> anyhow::Result<ufs::Mounted> {
    block_signals();
    // The daemon outlives readers of its output: a `| logger` (with -f)
    // that exited, a caller that gave up. Losing them costs log lines (or
    // the report, below), not the mount.
    crate::sys::ignore_sigpipe();
    // A write past the caller's RLIMIT_FSIZE fails with EFBIG, which the
    // guest gets, instead of killing the daemon (a dead mount).
    crate::sys::ignore_sigxfsz();
    ufs::ready::preflight_threads(opts.threads, daemon).map_err(anyhow::Error::msg)?;
    ufs::mount(guest, mountpoint, opts).with_context(|| {
        format!(
            "cannot mount {} at {}",
            output::path(guest),
            output::path(mountpoint)
        )
    })
}

/// Serves until unmounted; SIGTERM, SIGINT and SIGHUP unmount cleanly.
/// `report`, the pipe to the `unifs mount` that forked this daemon, is
/// told "ok" once the mount answered a statfs of its mount point (so the
/// caller's next command is served), or why it never did. A caller gone
/// by then (its Ctrl-C, `timeout` or hang-up missed the daemon, a session
/// of its own) was told of no mount, so none is left: unmounted as on
/// SIGTERM, and served until the kernel lets go of it (a busy one,
/// detached, when its last user leaves); exit 1.
fn serve(mounted: ufs::Mounted, report: Option<std::fs::File>) -> anyhow::Result<ExitCode> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    if let Some(limit) = crate::sys::file_size_limit() {
        tracing::warn!(
            "the file size limit (RLIMIT_FSIZE, `ulimit -f`) of this daemon is {limit} bytes: \
             a guest's write past it fails with EFBIG (File too large)"
        );
    }
    let mp = mounted.mountpoint.clone();
    let signalled = mp.clone();
    let threads = mounted.threads;
    let unready = mp.clone();
    let report = Arc::new(Mutex::new(report));
    // A thread that cannot start (EAGAIN: a pids limit) ends the daemon
    // before the mount is ready: the caller hears why, not just "exit 1".
    let untold = |what: &str, e: std::io::Error| {
        let e = anyhow::anyhow!(
            "starting its {what} thread: {e}{}",
            ufs::ready::thread_hint(&e)
        );
        if let Some(mut tx) = report.lock().ok().and_then(|mut r| r.take()) {
            let _ = ufs::unmount(&unready, true);
            let _ = write!(
                tx,
                "the mount daemon stopped before the mount was ready: {e}"
            );
        }
        e
    };
    std::thread::Builder::new()
        .name("unifs-signals".into())
        .spawn(move || {
            if let Ok(sig) = termination_signals().wait() {
                tracing::info!("{sig}: unmounting {}", output::path(&signalled));
                if let Err(e) = ufs::unmount(&signalled, true) {
                    tracing::error!("unmounting {}: {e}", output::path(&signalled));
                }
            }
        })
        .map_err(|e| untold("signal", e))?;
    let abandoned = Arc::new(AtomicBool::new(false));
    if report.lock().is_ok_and(|r| r.is_some()) {
        let (report, abandoned) = (report.clone(), abandoned.clone());
        std::thread::Builder::new()
            .name("unifs-ready".into())
            .spawn(move || say_ready(&mp, threads, &report, &abandoned))
            .map_err(|e| untold("readiness", e))?;
    } else {
        // No caller waits for a report (`-f`).
        ufs::on_panic::mark_ready();
    }
    let served = mounted.serve();
    // Never said ready: the caller hears why.
    if let Some(mut tx) = report.lock().ok().and_then(|mut r| r.take()) {
        // Its threads that started may serve on (a dead mount once we exit).
        if served.is_err() {
            let _ = ufs::unmount(&unready, true);
        }
        let _ = match &served {
            Ok(()) => write!(tx, "the mount was unmounted before it was ready"),
            Err(e) => write!(
                tx,
                "the mount daemon stopped before the mount was ready: {e}{}",
                ufs::ready::thread_hint(e)
            ),
        };
    }
    served.context("serving the mount")?;
    Ok(match abandoned.load(Ordering::SeqCst) {
        true => ExitCode::FAILURE,
        false => ExitCode::SUCCESS,
    })
}

/// Tells the caller "ok" once a statfs of `mp` was answered by this
/// daemon; unmounts if the caller is gone, or if no answer came.
fn say_ready(
    mp: &Path,
    threads: usize,
    report: &std::sync::Mutex<Option<std::fs::File>>,
    abandoned: &std::sync::atomic::AtomicBool,
) {
    // Every FUSE thread waiting for a request (its buffer taken) too: one
    // that fails to start after the answer would end the daemon.
    let answered = ufs::ready::wait_until_serving(mp, threads);
    let Some(mut tx) = report.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    let said = match answered {
        Ok(()) => tx.write_all(b"ok"),
        Err(e) => write!(tx, "the mount at {} did not answer: {e}", output::path(mp)),
    };
    drop(tx);
    match (answered, said) {
        (Ok(()), Ok(())) => return,
        (Ok(()), Err(e)) => tracing::warn!(
            "the `unifs mount` that started this daemon is gone ({e}); unmounting {}",
            output::path(mp)
        ),
        (Err(e), _) => tracing::error!("{} did not answer ({e}); unmounting it", output::path(mp)),
    }
    abandoned.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Err(e) = ufs::unmount(mp, true) {
        tracing::error!("unmounting {}: {e}", output::path(mp));
    }
}

fn termination_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut s = SigSet::empty();
    s.add(Signal::SIGTERM);
    s.add(Signal::SIGINT);
    s.add(Signal::SIGHUP);
    s
}

/// Blocked in every thread, taken by the signal thread with sigwait.
fn block_signals() {
    let _ = termination_signals().thread_block();
}

fn check_guest(p: &Path) -> anyhow::Result<PathBuf> {
    // Not stat'ed before the bounded look below: it may have a mount over
    // it (`unifs mount G G`) whose daemon is stopped.
    let guest = match ufs::resolve_without_stat(p) {
        Ok(g) => g,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("guest directory {} does not exist", output::path(p))
        }
        Err(e) => bail!("guest directory {}: {e}", output::path(p)),
    };
    if ufs::is_mount_point(&guest).context("reading /proc/self/mountinfo")? {
        match health(&guest) {
            RootHealth::Lost => bail!(
                "guest directory {} has a mount over it whose daemon is gone (killed?); \
                 unmount it first (`unifs umount {}`)",
                output::path(p),
                output::path(p)
            ),
            RootHealth::NoAnswer => bail!(
                "guest directory {} has a mount over it whose daemon does not answer \
                 (stopped?); unmount it first",
                output::path(p)
            ),
            RootHealth::Answers => {}
        }
    }
    match std::fs::metadata(&guest) {
        Ok(m) if m.is_dir() => Ok(guest),
        Ok(_) => bail!("guest directory {} is not a directory", output::path(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("guest directory {} does not exist", output::path(p))
        }
        Err(e) => bail!("guest directory {}: {e}", output::path(p)),
    }
}

/// Whether the mount at `p` answers: statfs, never served from a cache,
/// in a process of its own given 2 s (a request a stopped daemon read
/// waits for good). Asked before any stat of `p`, which can wait so too.
fn health(p: &Path) -> RootHealth {
    root_health(p, std::time::Duration::from_secs(2))
}

/// A guest directory must hold no store and be in none: not the `--store`,
/// not inside it, not around it (unify's own check), and no other unifs
/// store either. Writes through the mount would change store objects in place.
pub(super) fn check_not_store(store: &Path, guest: &Path) -> anyhow::Result<()> {
    if let Some(s) = crate::store::Store::enclosing_store(guest) {
        if s == guest {
            bail!(
                "guest directory {} is a unifs store (it holds objects/ and catalog.db), \
                 not a guest; name a guest's own directory",
                output::path(guest)
            );
        }
        bail!(
            "guest directory {} is inside the unifs store {}; name a guest's own directory",
            output::path(guest),
            output::path(&s)
        );
    }
    crate::unify::check_guest_outside_store(guest, store)?;
    Ok(())
}

/// The canonical mountpoint, or `None` when a live unifs mount of `guest`
/// (canonical) is there already.
fn check_mountpoint(
    p: &Path,
    guest: &Path,
    opts: &MountOptions,
) -> anyhow::Result<Option<PathBuf>> {
    // Nothing stats the mountpoint before the bounded look at a mount
    // there: a stat of a mount whose daemon is stopped waits for good (and
    // one of a mount whose daemon is gone may be answered from the
    // attributes the kernel keeps of its root; statfs never is).
    let mp = match ufs::resolve_without_stat(p) {
        Ok(mp) => mp,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mountpoint {} does not exist: make it first (`mkdir -p {}`)",
                output::path(p),
                output::path(p)
            )
        }
        Err(e) if ufs::daemon_gone_error(&e) => return Err(daemon_gone(p)),
        Err(e) => bail!("mountpoint {}: {e}", output::path(p)),
    };
    let mounted = ufs::is_mount_point(&mp).context("reading /proc/self/mountinfo")?;
    if mounted {
        match health(&mp) {
            RootHealth::Lost => return Err(daemon_gone(p)),
            RootHealth::NoAnswer => bail!(
                "mountpoint {} is in use by a mount whose daemon does not answer (stopped?); \
                 unmount it first",
                output::path(p)
            ),
            RootHealth::Answers => {}
        }
    }
    match std::fs::metadata(&mp) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("mountpoint {} is not a directory", output::path(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "mountpoint {} does not exist: make it first (`mkdir -p {}`)",
                output::path(p),
                output::path(p)
            )
        }
        // A FUSE mount whose daemon is gone.
        Err(e) if ufs::daemon_gone_error(&e) => return Err(daemon_gone(p)),
        Err(e) => bail!("mountpoint {}: {e}", output::path(p)),
    }
    if mounted {
        let served = ufs::unifs_mount_guest(&mp).context("reading /proc/self/mountinfo")?;
        if served.is_some_and(|g| g == guest) {
            // The source names a path, and the directory there now may be
            // another (the served one moved away, a new tree put there).
            if ufs::unifs_view_backing(guest).is_none() && !ufs::guest_still_served(guest) {
                bail!(
                    "mountpoint {} serves another directory than {}: the one that was at {} \
                     when it was mounted (moved or replaced since); unmount it first \
                     (`unifs umount {}`), then mount {} again",
                    output::path(p),
                    output::path(guest),
                    output::path(guest),
                    output::path(p),
                    output::path(guest)
                );
            }
            let have = match ufs::mounted_vfs_words(&mp) {
                Ok(have) => have,
                Err(e) if ufs::daemon_gone_error(&e) => return Err(daemon_gone(p)),
                Err(e) => bail!("mountpoint {}: {e}", output::path(p)),
            };
            let want = opts.vfs_words();
            if want != have {
                let words = |w: Vec<&str>| match w.join(",") {
                    w if w.is_empty() => "rw".to_string(),
                    w => w,
                };
                bail!(
                    "{} is already mounted at {}, but with other options ({}, asked for {}); \
                     unmount it first (`unifs umount {}`) to mount it so",
                    output::path(guest),
                    output::path(p),
                    words(have),
                    words(want),
                    output::path(p)
                );
            }
            return Ok(None);
        }
        bail!(
            "mountpoint {} is in use (something is mounted there); unmount it first",
            output::path(p)
        );
    }
    Ok(Some(mp))
}

fn daemon_gone(p: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "mountpoint {} is in use by a mount whose daemon is gone (killed?); unmount it first \
         (`unifs umount {}`)",
        output::path(p),
        output::path(p)
    )
}

pub(super) fn check_dev_fuse() -> anyhow::Result<()> {
    if let Some(what) = not_fuse_device(Path::new("/dev/fuse")) {
        // A regular file opens, and the mount fails with a bare EINVAL; a
        // wrong device node may hang or fail in ways that say nothing.
        bail!(
            "/dev/fuse is {what}, not the FUSE device (character device 10:229); \
             remove it and make the device: `mknod /dev/fuse c 10 229`"
        );
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no /dev/fuse: load the fuse kernel module (modprobe fuse)")
        }
        Err(e) => bail!("cannot open /dev/fuse: {e}"),
    }
}

/// What `dev` is when it is not the FUSE device (character device 10:229),
/// said for a message; None for the device, or nothing there (said apart).
fn not_fuse_device(dev: &Path) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(dev).ok()?;
    let t = meta.file_type();
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    Some(match () {
        _ if t.is_char_device() && (major, minor) == (10, 229) => return None,
        _ if t.is_char_device() => format!("character device {major}:{minor}"),
        _ if t.is_file() => "a regular file".into(),
        _ if t.is_dir() => "a directory".into(),
        _ if t.is_block_device() => format!("block device {major}:{minor}"),
        _ if t.is_fifo() => "a named pipe".into(),
        _ if t.is_socket() => "a socket".into(),
        _ => "not a device".into(),
    })
}

/// A store that exists must be on the guest's filesystem (hardlinks cannot
/// cross filesystems, so the guest's shared files cannot be its objects).
pub(super) fn check_store(store: &Path, guest: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // A guest's view through another mount: served again, it would show
    // the view, and its links could never be the store's.
    if let Some(backing) = ufs::unifs_view_backing(guest) {
        let path = guest.to_path_buf();
        return Err(crate::store::Error::in_unifs_view(path, backing).into());
    }
    if !crate::store::Store::exists(store) {
        // The daemon then takes every unmarked file for the guest's own: a
        // guest unified into a store now elsewhere, its markers lost on the
        // way, would have its writes go into files every guest links.
        if let Some((file, links)) = foreign_link(guest) {
            bail!(
                "guest directory {} has files linked from outside their directory and without \
                 the store's marker (e.g. {}, {links} links), and no store is at {} (--store, \
                 UNIFS_STORE or the default /var/lib/unifs): was it unified into a store that \
                 has moved since (its markers lost in a copy without xattrs)? A write would go \
                 into files other guests share; nothing was mounted. Name that store with \
                 --store; if the links are the guest's own, create a store there first \
                 (`unifs --store {} store init`)",
                output::path(guest),
                output::path(&file),
                output::path(store),
                output::path(store)
            );
        }
        tracing::info!("no store at {}; mounting without one", output::path(store));
        return Ok(());
    }
    let s = crate::store::Store::open(store)?;
    let dev = std::fs::metadata(guest)?.dev();
    s.check_same_fs(guest, dev)?;
    check_markers(&s)
}

/// Directory entries of a guest looked at, without a store, for files
/// linked from elsewhere ([`foreign_link`]).
const LINK_SAMPLE: usize = 4096;

/// Directories with such files ([`foreign_link`]) that make a guest look
/// unified: a never-unified root may have a few (git's programs linked
/// between bin/ and libexec/git-core/).
const FOREIGN_DIRS: usize = 4;

/// A regular file of `guest` (with its link count) that has links outside
/// its own directory and no store marker, found in a breadth-first look
/// at up to [`LINK_SAMPLE`] entries, if such files are in at least
/// [`FOREIGN_DIRS`] directories: store objects whose markers a copy lost.
/// A unified guest has them in most directories; a never-unified one's
/// own hardlinks seldom leave their directory (`perl`, `git-*`).
fn foreign_link(guest: &Path) -> Option<(PathBuf, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::symlink_metadata(guest).ok()?.dev();
    let mut dirs = std::collections::VecDeque::from([guest.to_path_buf()]);
    let mut left = LINK_SAMPLE;
    let mut first = None;
    let mut in_dirs = 0;
    while let Some(dir) = dirs.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        // (path, inode, links) of the files with more than one link.
        let mut linked = Vec::new();
        let mut whole = true;
        for e in entries.flatten() {
            if left == 0 {
                whole = false;
                break;
            }
            left -= 1;
            // Not followed: lstat.
            let Ok(m) = e.metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue; // another filesystem mounted in the guest
            }
            if m.is_dir() {
                dirs.push_back(e.path());
            } else if m.is_file() && m.nlink() > 1 {
                linked.push((e.path(), m.ino(), m.nlink()));
            }
        }
        // A directory read in part cannot tell which links are its own.
        let found = whole.then(|| {
            linked.iter().find(|(path, ino, links)| {
                let here = linked.iter().filter(|(_, i, _)| i == ino).count() as u64;
                let marker = std::ffi::OsStr::new(crate::store::MARKER_XATTR);
                *links > here && matches!(crate::sys::xattr::get_path(path, marker), Ok(None))
            })
        });
        if let Some(Some((path, _, links))) = found {
            first.get_or_insert_with(|| (path.clone(), *links));
            in_dirs += 1;
            if in_dirs >= FOREIGN_DIRS {
                return first;
            }
        }
        if left == 0 {
            break;
        }
    }
    None
}

/// Object files looked at for their marker before a mount.
const MARKER_SAMPLE: usize = 8;

/// Refuses a store whose objects have lost their marker xattr (a copy made
/// without xattrs): the mount knows a shared file only by it, and would
/// write into an object every guest links. A few object files are looked
/// at, not all: a cost that does not grow with the store.
fn check_markers(s: &crate::store::Store) -> anyhow::Result<()> {
    let (seen, unmarked) = s.sample_unmarked(MARKER_SAMPLE)?;
    let Some(first) = unmarked.first() else {
        return Ok(());
    };
    bail!(
        "store {}: object files without their marker (trusted.unifs.object): {} of the \
         {seen} looked at, e.g. {}; was the store copied without xattrs (`rsync -aH` \
         without -X, tar without --xattrs)? A mount knows shared files only by it, and \
         would write into files every guest shares; nothing was mounted. `unifs unify` of \
         the guests after such a copy, or `unifs store gc`, puts the markers back; \
         `unifs store verify` lists any left",
        output::path(s.root()),
        unmarked.len(),
        output::path(first)
    )
}

pub fn umount(_g: &Global, a: UmountArgs) -> anyhow::Result<ExitCode> {
    // The tests' hung unmount (a `guest stop`'s, which it bounds).
    crate::sys::test_pause!("UNIFS_TEST_UMOUNT_PAUSE");
    // Not stat'ed: a stat of a mount whose daemon is stopped waits for good.
    let mp = match ufs::resolve_without_stat(&a.mountpoint) {
        Ok(mp) => mp,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{}: no such file or directory (or a symlink to none), so nothing is mounted \
             there; `findmnt -t fuse` lists the mounts",
            output::path(&a.mountpoint)
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("mountpoint {}", output::path(&a.mountpoint)))
        }
    };
    let Some(mount) = ufs::mount_at(&mp).context("reading /proc/self/mountinfo")? else {
        bail!("{} is not mounted", output::path(&mp));
    };
    let Some(guest) = mount.unifs_guest() else {
        bail!("{} is not a unifs mount; use umount(8)", output::path(&mp));
    };
    let guest = Some(guest);
    let stopped_daemon = match guest.as_deref().and_then(ufs::guest_daemon) {
        Some((pid, true)) => Some(pid),
        _ => None,
    };
    let r = if a.lazy {
        ufs::sys::umount(&mp, true)
    } else {
        ufs::unmount(&mp, false)
    };
    match r {
        Ok(()) => {
            // Done once the daemon is (a lazy unmount's serves on): a mount
            // made there at once must not meet its last unmount.
            if let Some(guest) = guest.as_ref().filter(|_| !a.lazy) {
                ufs::wait_until_released(guest, std::time::Duration::from_secs(10));
                // One that is stopped does not end, and keeps the guest
                // from every mount until it does.
                if let Some((pid, true)) = ufs::guest_daemon(guest) {
                    tracing::warn!(
                        "unmounted {}, but its daemon (pid {pid}) is stopped (SIGSTOP, or a \
                         debugger holds it) and still holds {}: no mount, `guest start` or \
                         `unifs run` of it can start until it ends; `kill -CONT {pid}` lets it \
                         go on and end, or kill it",
                        output::path(&mp),
                        output::path(guest)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => match stopped_daemon {
            // What uses it may wait for the daemon's answer, in a request
            // no signal, not even SIGKILL, ends before it comes.
            Some(pid) => bail!(
                "{} is busy, and its daemon (pid {pid}) is stopped (SIGSTOP, or a debugger \
                 holds it): a process waiting for its answer cannot end, not even by SIGKILL; \
                 `kill -CONT {pid}` lets it go on, or kill the daemon (the waiting processes \
                 then get errors), and unmount again",
                output::path(&mp)
            ),
            None => bail!(
                "{} is busy (a process uses it); stop it, or use --lazy",
                output::path(&mp)
            ),
        },
        Err(e) => bail!("cannot unmount {}: {e}", output::path(&mp)),
    }
}
