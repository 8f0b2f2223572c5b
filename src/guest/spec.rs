//! What a guest is: its root, command, namespaces' settings, privileges
//! and limits. Built from `unifs run` options or a guest's TOML config;
//! stored in the runtime state so `exec` applies the same privileges.

use super::{caps, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuestSpec {
    /// A name for cgroups and messages.
    pub name: String,
    /// The guest's root directory on the host (already mounted if overlay).
    pub root: PathBuf,
    /// Program and arguments, resolved inside the guest.
    pub command: Vec<String>,
    pub hostname: String,
    pub net: NetSpec,
    pub binds: Vec<Bind>,
    /// `KEY=VALUE` pairs on top of the defaults (PATH, HOME, TERM, container).
    pub env: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`--user`: the user's groups in the guest's
    /// /etc/group); empty: `gid` alone.
    #[serde(default)]
    pub groups: Vec<u32>,
    /// `--user`'s name and home in the guest (USER, LOGNAME, HOME).
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub home: Option<String>,
    /// The command's working directory in the guest (default: `home` if
    /// it can be entered, else `/`).
    #[serde(default)]
    pub workdir: Option<String>,
    /// The guest's tree (its root and the mounts below it) read-only;
    /// /dev, /proc, /run and the binds as ever.
    #[serde(default)]
    pub read_only: bool,
    /// Fresh tmpfs mounts in the guest (on top of its tree).
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
    /// Host character devices made in the guest's /dev (`--device`).
    #[serde(default)]
    pub devices: Vec<super::devices::Device>,
    /// Resource limits set before the privilege drop; the others are
    /// inherited from the launcher.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Capabilities kept, as a bit mask (see [`caps::keep_mask`]).
    pub caps: u64,
    pub limits: Limits,
    /// Run the command under a small reaper that forwards signals.
    pub init: bool,
    /// (Absent from the state of a guest started before there was one.)
    #[serde(default)]
    pub syscall_filter: SyscallFilter,
    /// What `guest stop` sends init first (a signal number).
    #[serde(default = "sigterm")]
    pub stop_signal: i32,
    /// The named guest's config file this spec was made from (None: `unifs
    /// run`'s options): a check they share names the setting as it was
    /// given ([`GuestSpec::names`], [`in_config`]).
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

fn sigterm() -> i32 {
    libc::SIGTERM
}

/// How an error names a setting that `unifs run`'s options and a named
/// guest's config share: as the option (`--host-ip`) or as the config's
/// key (`[net] host_ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Options,
    Config,
}

impl Names {
    /// `option`, one of `unifs run`'s, as named here (the option itself
    /// where a config has no key of its own for it).
    pub fn of(self, option: &'static str) -> &'static str {
        match self {
            Names::Options => option,
            Names::Config => CONFIG_KEYS
                .iter()
                .find(|(o, _)| *o == option)
                .map_or(option, |(_, key)| key),
        }
    }
}

/// The options whose checks a config shares, and their config keys.
const CONFIG_KEYS: &[(&str, &str)] = &[
    ("--net veth", "[net] mode = \"veth\""),
    ("--ip", "[net] ip"),
    ("--host-ip", "[net] host_ip"),
    ("--bridge", "[net] bridge"),
    ("--gateway", "[net] gateway"),
    ("--forward", "[net] forward"),
    ("--lock-mac", "[net] lock_mac"),
    ("--memory", "[limits] memory"),
    ("--cpus", "[limits] cpus"),
    ("--pids", "[limits] pids"),
    ("--io-weight", "[limits] io_weight"),
    ("--device", "devices"),
    ("--tmpfs", "tmpfs"),
];

/// `e`, of a check that `unifs run`'s options and a named guest's config
/// share, said as the config's (the file `path`): the setting by its key
/// (`[limits] pids`, not `--pids`), and the file. An error about no
/// setting (a cgroup hierarchy missing) is left as it is.
pub fn in_config(e: Error, path: &Path) -> Error {
    let reason = match e {
        // Named by the spec's names already (net::check).
        Error::Net(reason) => reason,
        Error::Invalid {
            what,
            value,
            reason,
        } => Error::Invalid {
            what: Names::Config.of(what),
            value,
            reason,
        }
        .to_string(),
        Error::Limit { limit, reason } => Error::Limit {
            limit: Names::Config.of(limit),
            reason,
        }
        .to_string(),
        e => return e,
    };
    Error::Config {
        path: path.to_path_buf(),
        reason,
    }
}

/// `e`, a failure of the host's in doing what a setting of the config
/// `path` asks (a bridge or a cgroup controller it lacks, no `ip`), the
/// setting named as [`in_config`] names it: not said as a bad config.
pub fn on_host(e: Error, path: &Path) -> Error {
    if let Error::CapNotHeld { .. } = e {
        return Error::HostCannot {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
    }
    match in_config(e, path) {
        Error::Config { path, reason } => Error::HostCannot { path, reason },
        e => e,
    }
}

impl GuestSpec {
    /// `e`, a failure of the host's in doing what this spec asks, said as
    /// [`on_host`] says it when the spec was made from a config; an error
    /// of the config itself is left as it is.
    pub fn on_its_host(&self, e: Error) -> Error {
        match (&self.config, e) {
            (_, e @ Error::Config { .. }) | (None, e) => e,
            (Some(path), e) => on_host(e, path),
        }
    }

    /// How errors name this spec's settings: as its config's keys, or as
    /// `unifs run`'s options.
    pub fn names(&self) -> Names {
        match self.config {
            Some(_) => Names::Config,
            None => Names::Options,
        }
    }

    /// `e`, of a check of this spec's settings, said as its config's
    /// ([`in_config`]) when it was made from one.
    pub fn in_its_config(&self, e: Error) -> Error {
        match &self.config {
            Some(path) => in_config(e, path),
            None => e,
        }
    }

    /// A spec with the defaults: host name = name, no network, default caps.
    pub fn new(name: &str, root: PathBuf, command: Vec<String>) -> GuestSpec {
        GuestSpec {
            name: name.to_string(),
            root,
            command,
            hostname: name.to_string(),
            net: NetSpec::default(),
            binds: Vec::new(),
            env: Vec::new(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            user_name: None,
            home: None,
            workdir: None,
            read_only: false,
            tmpfs: Vec::new(),
            devices: Vec::new(),
            rlimits: Vec::new(),
            caps: caps::keep_mask(&[], &[]).expect("default caps are valid"),
            limits: Limits::default(),
            init: false,
            syscall_filter: SyscallFilter::default(),
            stop_signal: libc::SIGTERM,
            config: None,
        }
    }

    /// `--user`: runs as `account` (ids, groups, name and home).
    pub fn set_user(&mut self, account: super::user::Account) {
        self.uid = account.uid;
        self.gid = account.gid;
        self.groups = account.groups;
        self.user_name = account.name;
        self.home = account.home;
    }

    /// The groups the command runs with: its gid and the supplementary ones.
    pub fn all_groups(&self) -> Vec<u32> {
        let mut all = vec![self.gid];
        all.extend(self.groups.iter().filter(|g| **g != self.gid));
        all
    }

    /// The environment the command starts with.
    pub fn environment(&self) -> Vec<String> {
        let home = match &self.home {
            Some(home) => home,
            None if self.uid == 0 => "/root",
            None => "/",
        };
        let mut env = vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            format!("HOME={home}"),
            format!("HOSTNAME={}", self.hostname),
            "container=unifs".to_string(),
        ];
        if let Some(name) = &self.user_name {
            env.push(format!("USER={name}"));
            env.push(format!("LOGNAME={name}"));
        }
        if let Ok(term) = std::env::var("TERM") {
            env.push(format!("TERM={term}"));
        }
        for extra in &self.env {
            let key = extra.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(extra.clone());
        }
        env
    }
}

/// Refuses a working directory that is not absolute: relative to what, in
/// the guest?
pub fn check_workdir(dir: &str) -> Result<()> {
    if !dir.starts_with('/') || dir.contains('\0') {
        return Err(Error::Invalid {
            what: "working directory",
            value: dir.to_string(),
            reason: "expected an absolute path inside the guest".into(),
        });
    }
    Ok(())
}

/// Why an environment entry (`--env`, a config's `env`) is refused, if it
/// is: it must be `NAME=VALUE` with a name of its own (no other process
/// can look up an empty one, and `A B` is no name a shell can use), and
/// execve takes no NUL.
pub fn env_entry_fault(entry: &str) -> Option<&'static str> {
    let Some((name, _)) = entry.split_once('=') else {
        return Some("expected KEY=VALUE");
    };
    if entry.contains('\0') {
        Some("a NUL byte cannot be passed to the guest")
    } else if name.is_empty() {
        Some("expected KEY=VALUE with a KEY before the '='")
    } else if name.chars().any(char::is_whitespace) {
        Some("the KEY (before the first '=') contains white space")
    } else {
        None
    }
}

/// Each of `items` parsed (`--bind`, `--tmpfs`, `--rlimit` values); the
/// first that does not parse is the error.
pub fn parse_all<T: std::str::FromStr<Err = Error>>(items: &[String]) -> Result<Vec<T>> {
    items.iter().map(|i| i.parse()).collect()
}

/// HOST_NAME_MAX: sethostname(2) refuses a longer name.
pub const HOST_NAME_MAX: usize = 64;

/// Refuses a host name the kernel would not take, before anything is set
/// up, and an empty one (the kernel takes it; nothing in the guest can
/// name itself then).
pub fn check_hostname(name: &str) -> Result<()> {
    let bad = |reason: String| Error::Invalid {
        what: "host name",
        value: name.to_string(),
        reason,
    };
    if name.len() > HOST_NAME_MAX {
        return Err(bad(format!(
            "at most {HOST_NAME_MAX} bytes (the kernel's limit)"
        )));
    }
    if name.is_empty() {
        return Err(bad("empty; leave it out for the default".into()));
    }
    Ok(())
}

/// Which syscall filter the guest runs under (docs/security.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SyscallFilter {
    /// Refuse the kernel keyring, io_uring, userfaultfd, bpf, perf_event_open,
    /// syslog, open_by_handle_at, kexec and user namespaces.
    #[default]
    Default,
    /// The same, but allow user namespaces (nested sandboxes: bwrap,
    /// podman, browsers, systemd's PrivateUsers=).
    AllowUserns,
    /// No filter: every syscall the capabilities allow.
    Off,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Share the host's network.
    Host,
    /// A network namespace with only loopback.
    #[default]
    None,
    /// Own namespace with a veth pair to the host.
    Veth,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSpec {
    pub mode: NetMode,
    /// veth: the guest's address, `ADDR/PREFIX`.
    pub ip: Option<String>,
    /// veth: the host end's address, `ADDR/PREFIX` (routed set-up).
    pub host_ip: Option<String>,
    /// veth: a bridge to put the host end on instead.
    pub bridge: Option<String>,
    /// veth: the guest's default gateway.
    pub gateway: Option<String>,
    /// veth with an IPv4 `host_ip`: the host end forwards (routes on) what
    /// the guest sends. Left out of a record when false, so a record of a
    /// guest without it reads as before in an older unifs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub forward: bool,
    /// veth on a bridge: eth0 gets a MAC address of unifs's choosing and
    /// the host end's port takes frames from it alone
    /// ([`super::port_lock`]). Left out of a record when false, as
    /// `forward`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lock_mac: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub read_only: bool,
}

impl std::str::FromStr for Bind {
    type Err = Error;

    /// `SRC:DST[:ro]` or `SRC:DST:rw`; DST must be absolute.
    fn from_str(s: &str) -> Result<Bind> {
        let bad = |reason: &str| Error::Invalid {
            what: "bind",
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dst, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            _ => return Err(bad("expected SRC:DST[:ro]")),
        };
        // A relative SRC would depend on the directory the command runs in
        // (a service manager's is /: "etc" would be the host's /etc).
        if !src.starts_with('/') || !dst.starts_with('/') {
            return Err(bad("SRC and DST must be absolute paths"));
        }
        if dst.split('/').any(|c| c == "..") {
            return Err(bad("DST must not contain .."));
        }
        // Over the guest's root: no overlay, no /proc, /dev or /sys.
        if dst.split('/').all(|c| c.is_empty() || c == ".") {
            return Err(bad("DST must not be / (the guest's root is its own tree)"));
        }
        Ok(Bind {
            src: src.into(),
            dst: dst.into(),
            read_only,
        })
    }
}

/// `--rlimit NAME=SOFT[:HARD]`: a resource limit the guest starts with
/// (util-vserver's per-guest rlimits, nspawn's `--rlimit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// The resource's number (`RLIMIT_NOFILE`, …), from [`RLIMITS`].
    pub resource: u32,
    /// `RLIM_INFINITY` for unlimited.
    pub soft: u64,
    pub hard: u64,
}

/// The resources `--rlimit` takes, by their names in setrlimit(2) and
/// `ulimit`'s manual.
pub const RLIMITS: &[(&str, u32)] = &[
    ("as", libc::RLIMIT_AS),
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

impl Rlimit {
    /// The resource's name, as `--rlimit` takes it.
    pub fn name(&self) -> &'static str {
        RLIMITS
            .iter()
            .find(|(_, r)| *r == self.resource)
            .map_or("?", |(n, _)| n)
    }
}

impl std::str::FromStr for Rlimit {
    type Err = Error;

    /// `NAME=SOFT[:HARD]`: `nofile=1024:4096`, `core=0`, `RLIMIT_AS=infinity`.
    fn from_str(s: &str) -> Result<Rlimit> {
        let bad = |reason: String| Error::Invalid {
            what: "rlimit",
            value: s.to_string(),
            reason,
        };
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD]".into()))?;
        let lower = name.to_ascii_lowercase();
        let key = lower.strip_prefix("rlimit_").unwrap_or(&lower);
        let resource = RLIMITS
            .iter()
            .find(|(n, _)| *n == key)
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                let names: Vec<&str> = RLIMITS.iter().map(|(n, _)| *n).collect();
                bad(format!("unknown resource; one of {}", names.join(", ")))
            })?;
        let value = |v: &str| match v {
            "infinity" | "unlimited" => Ok(libc::RLIM_INFINITY),
            v => v
                .parse::<u64>()
                .map_err(|_| bad(format!("{v:?} is not a number, `infinity` or `unlimited`"))),
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (value(soft)?, value(hard)?),
            None => (value(values)?, value(values)?),
        };
        if soft > hard {
            return Err(bad("the soft limit is above the hard one".into()));
        }
        Ok(Rlimit {
            resource,
            soft,
            hard,
        })
    }
}

/// `--tmpfs DIR[:SIZE]`: a fresh tmpfs at DIR in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    pub dst: PathBuf,
    /// Bytes; None: the kernel's default (half of RAM), bounded by the
    /// guest's memory limit, which its pages count against.
    pub size: Option<u64>,
}

impl std::str::FromStr for Tmpfs {
    type Err = Error;

    fn from_str(s: &str) -> Result<Tmpfs> {
        let (dst, size) = match s.split_once(':') {
            Some((dst, size)) => {
                let size = parse_size(size).map_err(|e| Error::Invalid {
                    what: "--tmpfs",
                    value: s.to_string(),
                    reason: match e {
                        Error::Invalid { reason, .. } => {
                            format!("size {size:?}: {reason}, as DIR:64M")
                        }
                        e => e.to_string(),
                    },
                })?;
                (dst, Some(size))
            }
            None => (s, None),
        };
        let on_proc_or_sys = ["/proc", "/sys"]
            .iter()
            .any(|m| Path::new(dst).starts_with(m));
        if !dst.starts_with('/')
            || dst.split('/').all(|c| c.is_empty() || c == ".")
            || dst.split('/').any(|c| c == "..")
            || on_proc_or_sys
        {
            return Err(Error::Invalid {
                what: "--tmpfs",
                value: s.to_string(),
                reason: "expected DIR[:SIZE], DIR absolute, not / and not in /proc or /sys".into(),
            });
        }
        if size == Some(0) {
            return Err(Error::Invalid {
                what: "--tmpfs",
                value: s.to_string(),
                reason: "a size of 0 means no limit to tmpfs; leave it out for that".into(),
            });
        }
        Ok(Tmpfs {
            dst: dst.into(),
            size,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory (swap included where the host accounts it).
    pub memory: Option<u64>,
    /// CPU time as a number of CPUs (0.5 = half of one).
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
    /// Relative block I/O weight, 10..=1000 (default 100).
    pub io_weight: Option<u32>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    pub fn check(&self) -> Result<()> {
        const MAX_CPUS: f64 = 1_000_000.0;
        const PID_MAX_LIMIT: u64 = 4 << 20;
        let bad = |what, value: String, reason: &str| Error::Invalid {
            what,
            value,
            reason: reason.into(),
        };
        if let Some(c) = self.cpus {
            // The kernel's quota is 1 ms to about 17,592 s per 100 ms.
            if !(0.01..=MAX_CPUS).contains(&c) {
                return Err(bad("--cpus", c.to_string(), "must be 0.01..=1000000"));
            }
        }
        if let Some(w) = self.io_weight {
            if !(10..=1000).contains(&w) {
                return Err(bad("--io-weight", w.to_string(), "must be 10..=1000"));
            }
        }
        if let Some(p) = self.pids.filter(|p| !(1..=PID_MAX_LIMIT).contains(p)) {
            return Err(bad(
                "--pids",
                p.to_string(),
                "must be 1..=4194304 (the kernel's most PIDs)",
            ));
        }
        if let Some(m) = self.memory.filter(|&m| m < 1 << 20) {
            return Err(bad("--memory", format!("{m} bytes"), "must be at least 1M"));
        }
        Ok(())
    }

    /// A `--pids` (a config's `limits.pids`) too low for the guest to
    /// start is refused here, before anything is made: it failed half-way,
    /// once a thread of the overlay daemon (`daemon`: how it runs, with
    /// its FUSE threads; none for a bind-mounted root) or `--init`'s fork
    /// (`reaper`) met the limit, whose groups hold both.
    pub fn check_pids_room(
        &self,
        daemon: Option<(crate::fs::ready::Daemon, usize)>,
        reaper: bool,
    ) -> Result<()> {
        let Some(max) = self.pids else {
            return Ok(());
        };
        let least = least_pids(daemon, reaper);
        if max >= least {
            return Ok(());
        }
        let guest = match reaper {
            true => "2 (its init, and the command init forks)",
            false => "1 (its init)",
        };
        let daemon = match daemon {
            Some((d, threads)) => format!(
                "its overlay daemon holds up to {} tasks while it starts (its main thread, {}{}) \
                 and {} once it serves, and ",
                d.starting_tasks(threads),
                d.describe(threads),
                match d {
                    crate::fs::ready::Daemon::Forked => ", and the `unifs mount` that waits for it",
                    _ => "",
                },
                d.serving_tasks(threads),
            ),
            None => String::new(),
        };
        Err(Error::Limit {
            limit: "--pids",
            reason: format!(
                "{max} tasks leave the guest no room to start: {daemon}the guest needs {guest}; \
                 give at least {least}"
            ),
        })
    }
}

/// The fewest tasks a guest starts in (see [`Limits::check_pids_room`]):
/// its overlay daemon's most while it starts, or, once that is ready, its
/// tasks while serving, the readiness thread (which may not have ended
/// yet) and the guest's (init, and the command `--init` forks).
pub fn least_pids(daemon: Option<(crate::fs::ready::Daemon, usize)>, reaper: bool) -> u64 {
    let guest = 1 + u64::from(reaper);
    match daemon {
        Some((d, threads)) => d
            .starting_tasks(threads)
            .max(d.serving_tasks(threads) + 1 + guest),
        None => guest,
    }
}

/// The stop signal of a guest whose init is `init`, looked up in its tree
/// at `root`:
/// - SIGRTMIN+3 for systemd (directly or through a link such as Debian's
///   /sbin/init), which halts on it and re-executes itself on SIGTERM
///   (nspawn and podman pick it too);
/// - SIGINT for sysvinit (a program named `init` beside an /etc/inittab
///   with a `ctrlaltdel` action), which ignores SIGTERM and on SIGINT runs
///   that action: Debian's shuts the services down;
/// - else SIGTERM.
pub fn default_stop_signal(root: &std::path::Path, init: &str) -> i32 {
    match init_name(root, init).as_deref() {
        Some("systemd") => libc::SIGRTMIN() + 3,
        Some("init") if inittab_has_ctrlaltdel(root) => libc::SIGINT,
        _ => libc::SIGTERM,
    }
}

/// Whether `init`, looked up in the guest's tree at `root` (links followed
/// inside it), is systemd, as [`default_stop_signal`] tells it.
pub fn init_is_systemd(root: &std::path::Path, init: &str) -> bool {
    init_name(root, init).as_deref() == Some("systemd")
}

/// The file name `init` resolves to inside `root`.
fn init_name(root: &std::path::Path, init: &str) -> Option<String> {
    let path = crate::sys::resolve_in_root(root, std::path::Path::new(init)).ok()?;
    path.file_name()?.to_str().map(str::to_owned)
}

/// Whether the guest's /etc/inittab has an active `ctrlaltdel` line, read
/// as [`crate::sys::read_regular_in_root`] allows (a device node there, a
/// watchdog or a tape, is never opened; a FIFO never waited on).
fn inittab_has_ctrlaltdel(root: &std::path::Path) -> bool {
    use std::os::fd::AsFd;
    let Ok(dir) = std::fs::File::open(root) else {
        return false;
    };
    let path = std::path::Path::new("/etc/inittab");
    let Ok(Some(text)) = crate::sys::read_regular_in_root(dir.as_fd(), path, 1 << 20) else {
        return false;
    };
    // id:runlevels:action:process
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| l.split(':').nth(2) == Some("ctrlaltdel"))
}

/// Parses a signal as `kill -s` takes it: `SIGTERM`, `TERM`, `SIGRTMIN+3`
/// (the C library's SIGRTMIN, as systemd counts), `RTMAX-1`, or a number.
pub fn parse_signal(s: &str) -> Result<i32> {
    let bad = |reason: &str| Error::Invalid {
        what: "signal",
        value: s.to_string(),
        reason: reason.into(),
    };
    let t = s.trim();
    // Also as signal_name gives one without a name (32 and 33, the C
    // library's own): "signal 33".
    let t = t.strip_prefix("signal ").unwrap_or(t);
    let n = if let Ok(n) = t.parse::<i32>() {
        n
    } else {
        let name = t.to_ascii_uppercase();
        let name = name.strip_prefix("SIG").unwrap_or(&name);
        // RTMIN+K and RTMAX-K name realtime signals only.
        let realtime = |base: i32, rest: &str| -> Option<i32> {
            // Digits only after the sign: u16's parse takes a sign too.
            let k = |k: &str| {
                k.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| k.parse::<u16>())
            };
            let n = match rest.split_at_checked(1) {
                _ if rest.is_empty() => Some(base),
                Some(("+", d)) => base.checked_add(k(d)?.ok()?.into()),
                Some(("-", d)) => base.checked_sub(k(d)?.ok()?.into()),
                // Also a first character of more than one byte ("RTMINé"),
                // which was taken for RTMIN.
                _ => None,
            }?;
            (libc::SIGRTMIN()..=libc::SIGRTMAX())
                .contains(&n)
                .then_some(n)
        };
        let n = if let Some(rest) = name.strip_prefix("RTMIN") {
            realtime(libc::SIGRTMIN(), rest)
        } else if let Some(rest) = name.strip_prefix("RTMAX") {
            realtime(libc::SIGRTMAX(), rest)
        } else {
            format!("SIG{name}")
                .parse::<nix::sys::signal::Signal>()
                .ok()
                .map(|sig| sig as i32)
        };
        n.ok_or_else(|| bad("expected a name like SIGTERM or SIGRTMIN+3, or a number"))?
    };
    if !(1..=libc::SIGRTMAX()).contains(&n) {
        return Err(bad(&format!("signals are 1 to {}", libc::SIGRTMAX())));
    }
    Ok(n)
}

/// The name of signal `n` as [`parse_signal`] reads it.
pub fn signal_name(n: i32) -> String {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(n) {
        return sig.as_str().to_string();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    match n {
        n if n == min => "SIGRTMIN".into(),
        n if n > min && n <= (min + max) / 2 => format!("SIGRTMIN+{}", n - min),
        n if n > min && n < max => format!("SIGRTMAX-{}", max - n),
        n if n == max => "SIGRTMAX".into(),
        n => format!("signal {n}"),
    }
}

/// A memory limit as [`parse_size`] reads it, its error naming
/// `--memory` ([`in_config`] says `[limits] memory` for a config's).
pub fn parse_memory(s: &str) -> Result<u64> {
    parse_size(s).map_err(|e| match e {
        Error::Invalid { value, reason, .. } => Error::Invalid {
            what: "--memory",
            value,
            reason,
        },
        e => e,
    })
}

/// Parses `512M`, `2G`, `100k` or plain bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::Invalid {
        what: "size",
        value: s.to_string(),
        reason: "expected a number (1.5 too) with an optional k, M, G or T suffix".into(),
    };
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    if let Ok(n) = digits.parse::<u64>() {
        return n.checked_mul(1 << shift).ok_or_else(bad);
    }
    // A fraction (`1.5G`, as Docker takes it), to whole bytes.
    let f: f64 = match digits.parse() {
        Ok(f) if digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') => f,
        _ => return Err(bad()),
    };
    let bytes = (f * (1u64 << shift) as f64).round();
    match bytes < u64::MAX as f64 {
        true => Ok(bytes as u64),
        false => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configs_setting_is_named_by_its_key_and_file() {
        let path = Path::new("/etc/unifs/guests/web1.toml");
        let pids = Limits {
            pids: Some(0),
            ..Limits::default()
        };
        let e = pids.check().unwrap_err();
        assert!(e.to_string().starts_with("invalid --pids \"0\""), "{e}");
        let e = in_config(e, path).to_string();
        assert!(
            e.starts_with(
                "bad guest config /etc/unifs/guests/web1.toml: invalid [limits] pids \"0\""
            ),
            "{e}"
        );
        let io = Error::Limit {
            limit: "--io-weight",
            reason: "no io controller".into(),
        };
        let e = in_config(io, path).to_string();
        assert!(
            e.ends_with(": cannot apply [limits] io_weight: no io controller"),
            "{e}"
        );
        // Of no setting: as it was.
        let e = in_config(Error::Cgroup("none mounted".into()), path).to_string();
        assert_eq!(e, "cannot place the guest in cgroups: none mounted");
    }

    #[test]
    fn what_the_host_cannot_do_is_not_called_a_bad_config() {
        let path = Path::new("/etc/unifs/guests/web1.toml");
        let missing = || Error::Limit {
            limit: "--memory",
            reason: "no cgroup v1 memory hierarchy is mounted".into(),
        };
        let e = on_host(missing(), path).to_string();
        assert_eq!(
            e,
            "the host cannot do what guest config /etc/unifs/guests/web1.toml asks: cannot \
             apply [limits] memory: no cgroup v1 memory hierarchy is mounted"
        );
        let mut spec = GuestSpec::new("web1", "/r".into(), vec!["/sbin/init".into()]);
        // `unifs run`'s: as it was.
        let e = spec.on_its_host(missing()).to_string();
        assert_eq!(
            e,
            "cannot apply --memory: no cgroup v1 memory hierarchy is mounted"
        );
        spec.config = Some(path.into());
        let e = spec.on_its_host(Error::Net("no `ip`".into())).to_string();
        assert!(e.starts_with("the host cannot do what guest config"), "{e}");
        // The config's own fault stays so.
        let bad = in_config(Error::Net("bad".into()), path);
        let e = spec.on_its_host(bad).to_string();
        assert!(e.starts_with("bad guest config"), "{e}");
    }

    /// What the review measured (s35): `unifs run` starts under 7 tasks,
    /// `guest start` under 9; a bind-mounted root needs init's alone.
    #[test]
    fn the_least_pids_a_guest_starts_under() {
        use crate::fs::ready::Daemon;
        assert_eq!(least_pids(Some((Daemon::Run, 4)), false), 7);
        assert_eq!(least_pids(Some((Daemon::Run, 4)), true), 8);
        assert_eq!(least_pids(Some((Daemon::Forked, 4)), false), 9);
        assert_eq!(least_pids(Some((Daemon::Forked, 4)), true), 9);
        assert_eq!(least_pids(None, false), 1);
        assert_eq!(least_pids(None, true), 2);
        let limits = Limits {
            pids: Some(6),
            ..Limits::default()
        };
        let e = limits.check_pids_room(Some((Daemon::Run, 4)), false);
        let e = e.unwrap_err().to_string();
        assert!(e.starts_with("cannot apply --pids: 6 tasks"), "{e}");
        assert!(e.ends_with("give at least 7"), "{e}");
        assert!(limits.check_pids_room(None, true).is_ok());
    }

    #[test]
    fn limits_out_of_range_are_named_with_their_value() {
        let memory = |m| Limits {
            memory: Some(m),
            ..Limits::default()
        };
        let e = memory(1023 << 10).check().unwrap_err().to_string();
        assert_eq!(e, "invalid --memory \"1047552 bytes\": must be at least 1M");
        assert!(memory(1 << 20).check().is_ok());
    }

    #[test]
    fn rlimits_parse_by_name_with_one_or_two_values() {
        let r: Rlimit = "nofile=1024:4096".parse().unwrap();
        assert_eq!(
            (r.resource, r.soft, r.hard),
            (libc::RLIMIT_NOFILE, 1024, 4096)
        );
        assert_eq!(r.name(), "nofile");
        let r: Rlimit = "RLIMIT_CORE=0".parse().unwrap();
        assert_eq!((r.resource, r.soft, r.hard), (libc::RLIMIT_CORE, 0, 0));
        let r: Rlimit = "stack=8388608:unlimited".parse().unwrap();
        assert_eq!(r.hard, libc::RLIM_INFINITY);
        for bad in [
            "nofile",
            "files=1",
            "nofile=x",
            "nofile=5:4",
            "nofile=1:2:3",
            "=1",
        ] {
            let e = bad.parse::<Rlimit>().unwrap_err().to_string();
            assert!(e.contains("rlimit"), "{bad}: {e}");
        }
    }

    #[test]
    fn signals_by_name_and_number() {
        for (text, n) in [
            ("SIGTERM", libc::SIGTERM),
            ("term", libc::SIGTERM),
            ("PWR", libc::SIGPWR),
            ("SIGINT", libc::SIGINT),
            ("9", 9),
            ("SIGRTMIN+3", libc::SIGRTMIN() + 3),
            ("RTMIN", libc::SIGRTMIN()),
            ("SIGRTMAX-1", libc::SIGRTMAX() - 1),
            // Found by fuzzing: named "signal 33", which was not read.
            ("33", 33),
            ("signal 32", 32),
        ] {
            assert_eq!(parse_signal(text).unwrap(), n, "{text}");
            assert_eq!(parse_signal(&signal_name(n)).unwrap(), n, "{text}");
        }
        assert_eq!(signal_name(libc::SIGRTMIN() + 4), "SIGRTMIN+4");
        for bad in [
            "",
            "SIGFOO",
            "0",
            "-1",
            "SIGRTMIN+99",
            "RTMIN+x",
            "999",
            "RTMIN+-3",
            "SIGRTMIN-1",
            "RTMAX-40",
            "RTMAX+1",
            "RTMIN+2147483647",
            // Found by fuzzing: a character of two bytes after RTMIN was
            // taken for none, a second sign for none.
            "RTMINé",
            "SIGRTMAXλ",
            "RTMIN++3",
        ] {
            let err = parse_signal(bad).unwrap_err().to_string();
            assert!(err.contains("signal"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("12x").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("0.5k").unwrap(), 512);
        for bad in [".", "1.2.3M", "-1.5G", "1e3M", "nan", "inf", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(check_hostname("").is_err());
        assert!(check_hostname("web1").is_ok());
    }

    #[test]
    fn binds() {
        let b: Bind = "/srv/data:/data:ro".parse().unwrap();
        assert_eq!(b.src, PathBuf::from("/srv/data"));
        assert_eq!(b.dst, PathBuf::from("/data"));
        assert!(b.read_only);
        assert!(!"/a:/b".parse::<Bind>().unwrap().read_only);
        assert!("/a:relative".parse::<Bind>().is_err());
        assert!("/a:/b/../../etc".parse::<Bind>().is_err());
        assert!("/a:/b:rx".parse::<Bind>().is_err());
        for bad in ["etc:/mnt", "./x:/mnt", "/a:/", "/a://", "/a:/./"] {
            let e = bad.parse::<Bind>().unwrap_err().to_string();
            assert!(
                e.contains("absolute") || e.contains("not be /"),
                "{bad}: {e}"
            );
        }
        for bad in ["//", "/./", "/.:1m"] {
            assert!(bad.parse::<Tmpfs>().is_err(), "{bad}");
        }
    }

    #[test]
    fn extra_env_replaces_defaults() {
        let mut spec = GuestSpec::new("g", "/r".into(), vec!["/bin/sh".into()]);
        spec.env = vec!["PATH=/bin".into(), "A=1".into()];
        let env = spec.environment();
        assert!(env.contains(&"PATH=/bin".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(env.contains(&"A=1".to_string()));
    }
}
