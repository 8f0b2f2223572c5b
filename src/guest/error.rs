//! The launcher's errors. Each names the path, guest or limit it is about,
//! so the CLI can print it as is.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {}: {source}{}", path.display(), crate::sys::refused_writes_hint(source.raw_os_error()))]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    /// A fork or clone failed; EAGAIN is a limit on processes, named as
    /// they stood when it failed (`hint`).
    #[error("{what}: {source}{hint}")]
    Fork {
        what: String,
        source: nix::Error,
        hint: String,
    },
    /// A fork or clone of the guest's keeper that failed, as it said it.
    #[error("{0}")]
    KeeperFork(String),
    /// A set-up step of the guest failed; the message comes from the child.
    #[error("setting up the guest failed: {0}")]
    Setup(String),
    #[error("{command}: command not found in guest root {}", root.display())]
    CommandNotFound { command: String, root: PathBuf },
    #[error("cannot apply {limit}: {reason}")]
    Limit { limit: &'static str, reason: String },
    /// The host's cgroups cannot hold the guest (a hierarchy not mounted,
    /// or mounted read-only); the message says what to do.
    #[error("cannot place the guest in cgroups: {0}")]
    Cgroup(String),
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The guest's root is gone or not a directory; `config`: the file
    /// that names it (`guest start`), to be named with what to do.
    #[error("{}", no_root(.root, *.missing, .config.as_deref()))]
    NoRoot {
        root: PathBuf,
        missing: bool,
        config: Option<PathBuf>,
    },
    #[error("{}", no_bind_source(.src, .config.as_deref()))]
    NoBindSource {
        src: PathBuf,
        config: Option<PathBuf>,
    },
    /// What needs root; a capability it needs is named in it.
    #[error("{0} needs root")]
    Permission(&'static str),
    /// A command run as root in the guest takes the guest's capability
    /// set, which capset(2) refuses with a bare EPERM unless this process
    /// holds all of it.
    #[error(
        "guest {name} keeps {} (its cap_add and cap_drop, or the default set), which this \
         process lacks (dropped by capsh --drop, setpriv, a container or a service's \
         CapabilityBoundingSet=): run the command with {}, or as a user who is not root \
         (--user)",
        caps_text(.missing), if .missing.len() == 1 { "it" } else { "them" }
    )]
    CapsNotHeld {
        name: String,
        missing: Vec<&'static str>,
    },
    /// A capability asked for (`cap_add`, `--cap-add`) that this process
    /// does not hold: the host's limit (its root's bounding set), not a bad
    /// name.
    #[error(
        "capability {cap:?}: unifs itself does not hold it (this host's root lacks it: see \
         CapPrm in /proc/self/status), so it cannot give it to a guest"
    )]
    CapNotHeld { cap: String },
    #[error("no config for guest {name}: {} does not exist", path.display())]
    NoConfig { name: String, path: PathBuf },
    #[error("bad guest config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// What a config's setting asks that this host cannot do (no such
    /// bridge, no `ip`, a cgroup controller missing): the host is to
    /// change as much as the file ([`super::spec::on_host`]).
    #[error("the host cannot do what guest config {} asks: {reason}", path.display())]
    HostCannot { path: PathBuf, reason: String },
    /// `RUN_DIR/NAME/state.json` exists but does not parse (cut short by a
    /// crash, edited by hand).
    #[error("unreadable runtime record {}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },
    #[error(
        "guest {name} is already running (init pid {pid}): `unifs guest stop {name}` \
         first, or `unifs guest restart {name}`"
    )]
    AlreadyRunning { name: String, pid: i32 },
    /// Processes of the guest that could not be ended.
    #[error("stopping guest {name} failed: {reason}")]
    Stop { name: String, reason: String },
    /// Its record names pids of another PID namespace than ours.
    #[error(
        "guest {name} was started in another PID namespace: its pids there name other processes \
         (or none) here, so it is left alone; run `unifs guest {command} {name}` from the PID \
         namespace that started it"
    )]
    OtherPidNs { name: String, command: &'static str },
    /// `/` is no mount point: pivot_root fails with a bare EINVAL.
    #[error(
        "/ is not a mount point (running in a chroot?): pivot_root needs one; run \
         `mount --rbind DIR DIR` on the chroot's root first, or run unifs outside the chroot"
    )]
    Chroot,
    #[error("guest {name} is not running")]
    NotRunning { name: String },
    /// A `start` or `stop` of it still at work after `exec` (or `ps`)
    /// waited for it.
    #[error(
        "guest {name} is being started or stopped by another `unifs guest` command (it holds {}); \
         try again once that command is done", lock.display()
    )]
    Busy { name: String, lock: PathBuf },
    /// RUN_DIR/NAME is a mount point, or lies in a unifs mount (a guest
    /// tree mounted at /run/unifs/NAME by hand): the lock, the record and
    /// the logs, and the 0700 the directory gets, would land in that tree.
    #[error(
        "the runtime directory of guest {name}, {}, {what}: `guest start`, `stop` and \
         `update` keep the guest's lock, record and logs there and make it mode 0700, which \
         would change what is mounted there; unmount it first (`unifs umount {}`, or umount(8)), \
         and mount trees by hand elsewhere (/mnt/NAME), or give the guest another --run-dir",
        dir.display(), mount.display()
    )]
    RunDirMounted {
        name: String,
        dir: PathBuf,
        what: String,
        mount: PathBuf,
    },
    /// A mount was made over RUN_DIR/NAME or a directory above it while the
    /// guest ran (a tmpfs over /run): its record, lock and console.log, and
    /// its root's mount, are under it. Taken for a guest without a record,
    /// `stop` killed it and `start` killed it and made RUN_DIR/NAME anew;
    /// `logs` said it was never started.
    #[error(
        "the runtime directory of guest {name}, {}, is covered by the {fstype} mount at {}, \
         made over it since the guest started: its record, lock and console.log are under \
         that mount, and its root's mount too; nothing was done. Unmount it (`umount {}`): \
         the guest is seen again as it is",
        dir.display(), cover.display(), cover.display()
    )]
    RunDirCovered {
        name: String,
        dir: PathBuf,
        fstype: String,
        cover: PathBuf,
    },
    /// A `start` of it still at work after `stop` waited for it: `by`
    /// which (its pid), `then` what to do (try again once it runs; let it
    /// go on if it is stopped).
    #[error(
        "guest {name} is starting ({by} holds {}) and was not started within {secs} s; \
         nothing was stopped: {then}", lock.display()
    )]
    Starting {
        name: String,
        lock: PathBuf,
        secs: u64,
        by: String,
        then: String,
    },
    /// Another command (or the keeper) still held the guest's lock after
    /// a `start`, `stop`, `restart` or `update` waited that long for it.
    #[error(
        "guest {name} is still {} after {secs} s (it holds {}); nothing was done: {}",
        holder.describe(), lock.display(), holder.what_to_do()
    )]
    LockHeld {
        name: String,
        lock: PathBuf,
        holder: super::state::LockHolder,
        secs: u64,
    },
    /// Its init ended (a `stop`) while `exec` or `enter` was joining it:
    /// said so, not as the bare errno of the step it failed at.
    #[error(
        "guest {name} stopped while the command was being started in it (its init, pid {pid}, \
         ended); `unifs guest start {name}` starts it again"
    )]
    StoppedMeanwhile { name: String, pid: i32 },
    #[error("guest {name} runs without a runtime record (its start was interrupted); `unifs guest stop {name}` ends it")]
    Unrecorded { name: String },
    #[error(
        "the root of guest {name} is unreachable: its overlay daemon (`unifs mount`) has died or does not answer; \
         `unifs guest stop {name}` and `unifs guest start {name}` bring the guest back"
    )]
    RootLost { name: String },
    #[error(
        "the root of guest {name} does not answer: its overlay daemon (`unifs mount`, pid {pid}) is stopped \
         (SIGSTOP, or a debugger holds it); `kill -CONT {pid}` lets it go on, or `unifs guest stop {name}` \
         and `unifs guest start {name}` bring the guest back"
    )]
    RootStopped { name: String, pid: i32 },
    #[error(
        "the root of guest {name} does not answer: its overlay daemon (`unifs mount`, pid {pid}) runs but has \
         not answered in {secs} s: it is busy (a long copy of a large file, a guest flooding it with requests) \
         or hangs; try again later, and if it stays so, `unifs guest stop {name}` and \
         `unifs guest start {name}` bring the guest back"
    )]
    RootBusy { name: String, pid: i32, secs: u64 },
    #[error(
        "guest {name} is frozen ({} says so): a command would freeze with it; thaw it first \
         (`echo {thaw} > {}`)", file.display(), file.display()
    )]
    Frozen {
        name: String,
        file: PathBuf,
        thaw: &'static str,
    },
    /// A bind root that is (in) a guest the store unified ([`crate::guest::check_bind_root`]).
    #[error(
        "guest root {} {relation} the guest {} unified into the store {}: with {how} the \
         guest's own files are its root, and a write there changes a file for every guest \
         linking it, and its store object; nothing was started. Use the default overlay \
         (--root-mount overlay, root_mount = \"overlay\"); forgetting the guest does not \
         help (`store forget` leaves its files linked to the objects): a root of its own is \
         a copy of the guest made through its overlay",
        root.display(), guest.display(), store.display()
    )]
    BindUnified {
        root: PathBuf,
        relation: &'static str,
        guest: PathBuf,
        store: PathBuf,
        how: &'static str,
    },
    #[error(
        "guest root {} {relation} the unifs store {}: with {how} a write there changes the \
         store's own files; nothing was started. Name a guest's own directory",
        root.display(), store.display()
    )]
    BindInStore {
        root: PathBuf,
        relation: &'static str,
        store: PathBuf,
        how: &'static str,
    },
    #[error("mounting the root of guest {name} failed: {reason}")]
    RootMount { name: String, reason: String },
    #[error(
        "the overlay daemon for guest {name} exited before the guest was launched ({}); \
         nothing was started: `unifs guest start {name}` again mounts its root anew",
        log_end(log)
    )]
    OverlayGone { name: String, log: PathBuf },
    #[error("cannot serve guest root {} through the overlay: {reason}", root.display())]
    OverlayRoot { root: PathBuf, reason: String },
    #[error("network set-up failed: {0}")]
    Net(String),
    /// An error of the guest's keeper (the process that starts init and
    /// waits for it), as it said it.
    #[error("{0}")]
    Keeper(String),
    /// A signal that ends a command came while `guest start` worked
    /// (`systemctl stop`, Ctrl-C): what it did is undone, and it ends by
    /// it. `init`: the one it had started, stopped again.
    #[error("{}", interrupted(.name, *.signal, *.init))]
    Interrupted {
        name: String,
        signal: i32,
        init: Option<i32>,
    },
    #[error("guest {name} has no {what} ({}): {why}", path.display())]
    NoLog {
        name: String,
        /// "console log", or "overlay daemon's log".
        what: &'static str,
        /// Why there may be none.
        why: &'static str,
        path: PathBuf,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn no_root(root: &Path, missing: bool, config: Option<&Path>) -> String {
    let root = root.display();
    match (missing, config) {
        (true, Some(c)) => format!(
            "guest root {root} does not exist (`root` in {c}): restore the guest's directory \
             there, or set `root` in {c} to where it is now",
            c = c.display()
        ),
        (false, Some(c)) => format!(
            "guest root {root} is not a directory (`root` in {c}): set `root` in {c} to the \
             guest's directory",
            c = c.display()
        ),
        (true, None) => format!("guest root {root} does not exist"),
        (false, None) => format!("guest root {root} is not a directory"),
    }
}

fn no_bind_source(src: &Path, config: Option<&Path>) -> String {
    let src = src.display();
    match config {
        Some(c) => format!(
            "bind source {src} does not exist (`binds` in {c}): create it, or remove its \
             entry from `binds` in {c}",
            c = c.display()
        ),
        None => format!("bind source {src} does not exist"),
    }
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// [`Error::NoRoot`] for `root`, which is not a directory (or is gone).
    pub(crate) fn no_root(root: &Path, config: Option<&Path>) -> Self {
        Error::NoRoot {
            root: root.to_path_buf(),
            missing: std::fs::metadata(root)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound),
            config: config.map(Path::to_path_buf),
        }
    }

    pub(crate) fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    /// A failed fork or clone (`what`).
    pub(crate) fn fork(what: impl Into<String>, source: nix::Error) -> Self {
        Error::Fork {
            what: what.into(),
            source,
            hint: fork_hint(source),
        }
    }

    /// Whether it is a fork or clone that failed (the start's, or its
    /// keeper's): what a start says first, whatever else failed with it.
    pub(crate) fn is_fork(&self) -> bool {
        matches!(self, Error::Fork { .. } | Error::KeeperFork(_))
    }
}

/// The message of [`Error::Interrupted`].
fn interrupted(name: &str, signal: i32, init: Option<i32>) -> String {
    let sig = super::spec::signal_name(signal);
    match init {
        None => format!(
            "guest {name} not started: `unifs guest start` was interrupted by {sig} before it \
             started init, and undid what it had done (nothing is mounted, no group or record \
             is left)"
        ),
        Some(pid) => format!(
            "guest {name} not started: `unifs guest start` was interrupted by {sig} as its init \
             (pid {pid}) started, and stopped the guest again (nothing of it is left)"
        ),
    }
}

/// What a fork's EAGAIN means here, the limits as they stand now (the
/// pids groups of this process, with their pids.max and pids.current):
/// root is not held by RLIMIT_NPROC, so it is a group's limit, or the
/// host's.
fn fork_hint(e: nix::Error) -> String {
    match e {
        nix::Error::EAGAIN => format!(
            "; a limit on processes was reached: {}, or the host's kernel.pid_max or \
             kernel.threads-max; raise the one reached (a group's pids.max: that of the pids \
             cgroup this unifs command runs in, its service's TasksMax=)",
            crate::fs::ready::task_limits_text()
        ),
        _ => String::new(),
    }
}

/// Where the daemon's log `log` is and how it ends: its last line says why
/// the daemon ended (a thread it could not start under a pids limit, a
/// mount refused), which the user should not have to go and look up.
pub(crate) fn log_end(log: &std::path::Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut tail = Vec::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let _ = f.take(4096).read_to_end(&mut tail);
    }
    let text = String::from_utf8_lossy(&tail);
    let last = text.lines().rev().map(str::trim).find(|l| !l.is_empty());
    let at = crate::sys::shown(log);
    match last {
        Some(line) => {
            let line: String = line.chars().take(400).collect();
            format!("its log at {at} ends: {}", crate::sys::clean(&line))
        }
        None => format!("its log at {at} says nothing"),
    }
}

/// `CAP_NET_RAW, CAP_SETFCAP` from `net_raw`, `setfcap`.
fn caps_text(names: &[&str]) -> String {
    let caps: Vec<String> = names
        .iter()
        .map(|n| format!("CAP_{}", n.to_ascii_uppercase()))
        .collect();
    caps.join(", ")
}
