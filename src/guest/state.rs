//! Runtime state of named guests, under RUN_DIR/NAME/ (default /run/unifs):
//! `root/` (the mounted root), `state.json` (init pid and how to undo the
//! start), `console.log` (init's output) and `exit.json` (how the last init
//! ended).

use super::cgroup::Cgroup;
use super::config::RootMount;
use super::{Error, GuestSpec, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where runtime state lives unless `--run-dir` says otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/unifs";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// The init's PID on the host.
    pub pid: i32,
    /// Its start time (clock ticks after boot, as the root time namespace
    /// counts them: [`start_time`]), so a reused PID is not taken for the
    /// guest.
    pub start_time: u64,
    pub root_mount: RootMount,
    pub backing: PathBuf,
    pub cgroup: Cgroup,
    /// What init was started with; `exec` applies the same privileges.
    pub spec: GuestSpec,
    /// Seconds since the epoch (informative: uptime comes from
    /// `start_time`, which steps of the wall clock do not move).
    pub started: u64,
    /// The index of a veth guest's host interface, which stop removes only
    /// while it is that one.
    #[serde(default)]
    pub host_ifindex: Option<u32>,
    /// What `enter` runs: the config's shell when the guest started, so a
    /// config edited or removed since changes nothing for the running guest
    /// (None in a record of an older unifs: the config's, then).
    #[serde(default)]
    pub shell: Option<String>,
    /// The kernel's boot id when it started. PIDs, start times and interface
    /// indexes start over at boot, and a run dir on a disk keeps its records
    /// across one: a record of another boot names nothing of this one (None
    /// in a record of an older unifs: taken as this boot's).
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The inode of the starter's PID namespace (/proc/self/ns/pid): `pid`
    /// is a PID there, and in another namespace names another process or
    /// none (None in a record of an older unifs: taken as this one's).
    #[serde(default)]
    pub pid_ns: Option<u64>,
    /// Every resource limit init started with: the launcher's, with the
    /// config's `rlimits` over them. `exec` applies them all, so that a
    /// command run in the guest gets the guest's limits, not its caller's
    /// (None in a record of an older unifs: the config's alone, then).
    #[serde(default)]
    pub start_rlimits: Option<Vec<super::spec::Rlimit>>,
    /// The guest's own reboots its keeper started it again after, since
    /// an operator's `start` (none in a record of an older unifs).
    #[serde(default)]
    pub reboots: Reboots,
    /// `lock_mac`'s address of its `eth0`, as the start derived it: what
    /// its port takes frames from, whatever /etc/machine-id says since
    /// (None without the lock, and in a record of an older unifs: derived
    /// again, then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

/// A guest's reboots that its keeper started it again after
/// (`on_reboot = "restart"`): how many since an operator's `start`, and
/// when the last ones were, for the guard against a reboot loop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reboots {
    pub count: u32,
    /// Seconds since the epoch, those within [`REBOOT_WINDOW`] of the last.
    pub recent: Vec<u64>,
}

/// More reboots than this within [`REBOOT_WINDOW`] are a loop (an init that
/// reboots as soon as it boots): the guest is not started again. As
/// systemd's default start limit (5 within 10 s), with a longer window for
/// a guest whose boot takes a while. Fixed, not a config key (docs/guests.md
/// says so): a loop of boots of 12 s or more is not caught.
pub const REBOOT_BURST: usize = 5;
pub const REBOOT_WINDOW: u64 = 60;

impl Reboots {
    /// With one more reboot at `now` (seconds since the epoch); None when
    /// that one is more than [`REBOOT_BURST`] within [`REBOOT_WINDOW`].
    pub fn after_one_more(&self, now: u64) -> Option<Reboots> {
        let mut recent: Vec<u64> = (self.recent.iter().copied())
            .filter(|&t| now.saturating_sub(t) < REBOOT_WINDOW)
            .collect();
        if recent.len() >= REBOOT_BURST {
            return None;
        }
        recent.push(now);
        Some(Reboots {
            count: self.count.saturating_add(1),
            recent,
        })
    }
}

/// How a guest's init ended by its own `reboot(2)`: the kernel ends a PID
/// namespace whose process calls it, and reports the namespace's init as
/// killed by SIGHUP for a restart, by SIGINT for a halt or power-off
/// (reboot_pid_ns, kernel/pid_namespace.c). Nothing else kills such an
/// init by those: it takes no signal it has no handler for, from inside
/// or outside its namespace, but SIGKILL and SIGSTOP from outside
/// (pid_namespaces(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shutdown {
    Reboot,
    Halt,
}

impl Shutdown {
    /// Of the init of a PID namespace killed by `signal`.
    pub fn of_signal(signal: nix::sys::signal::Signal) -> Option<Shutdown> {
        use nix::sys::signal::Signal;
        match signal {
            Signal::SIGHUP => Some(Shutdown::Reboot),
            Signal::SIGINT => Some(Shutdown::Halt),
            _ => None,
        }
    }
}

impl State {
    /// Whether this boot's process and interface numbers can be its.
    pub fn this_boot(&self) -> bool {
        self.boot_id.is_none() || self.boot_id == boot_id()
    }

    /// True while the recorded init runs: [`alive`], in this boot. Never
    /// asked of a record of [`State::other_pid_ns`]: its pid is not ours.
    pub fn init_alive(&self) -> bool {
        self.this_boot() && alive(self.pid, self.start_time)
    }

    /// Whether it was started from another PID namespace than ours: then
    /// whether it runs cannot be told from here, and its pids must not be
    /// signalled (they name other processes here, or none).
    pub fn other_pid_ns(&self) -> bool {
        self.this_boot() && self.pid_ns.is_some_and(|ns| Some(ns) != pid_ns())
    }

    /// Whether it was started from another PID namespace that has ended:
    /// every process of it, the guest's among them (in a namespace below
    /// it), ended with it.
    pub fn pid_ns_ended(&self) -> bool {
        self.other_pid_ns() && self.pid_ns.is_some_and(pid_ns_empty)
    }

    /// Running as far as can be told: its init alive, or started in
    /// another PID namespace (where it may well run).
    pub fn maybe_running(&self) -> bool {
        self.other_pid_ns() || self.init_alive()
    }
}

/// The inode of this process's PID namespace, which names it.
pub fn pid_ns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// The inode of the initial PID namespace (the kernel's PROC_PID_INIT_INO).
const INIT_PID_NS: u64 = 0xEFFF_FFFC;

/// Whether this process sees every process of every PID namespace: root
/// in the initial one.
pub fn sees_every_pid_ns() -> bool {
    pid_ns() == Some(INIT_PID_NS) && nix::unistd::geteuid().is_root()
}

/// The /proc/PID directories of /proc.
fn proc_dirs() -> Option<impl Iterator<Item = std::fs::DirEntry>> {
    let procs = std::fs::read_dir("/proc").ok()?;
    Some(procs.flatten().filter(|e| {
        let name = e.file_name();
        let digits = name.as_encoded_bytes();
        !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
    }))
}

/// Whether some process of a PID namespace below ours has the pid `pid`
/// there (the last of its NSpid), as `std::process::id()` gives it to
/// itself. None where /proc cannot be read.
pub fn pid_in_a_namespace_below(pid: i32) -> Option<bool> {
    Some(proc_dirs()?.any(|e| {
        nspid_of(&e.path()).is_some_and(|pids| pids.len() > 1 && pids.last() == Some(&pid))
    }))
}

/// The pid process `pid` has in its own PID namespace (the last of its
/// NSpid), as `std::process::id()` gives it to itself.
fn pid_in_own_ns(pid: i32) -> Option<i32> {
    nspid_of(Path::new(&format!("/proc/{pid}")))?
        .last()
        .copied()
}

/// Whether no process is in the PID namespace `ns`. Told only by root in
/// the initial namespace, which sees every process of every namespace;
/// anywhere else, and where a process's namespace cannot be read, false.
fn pid_ns_empty(ns: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    if !sees_every_pid_ns() {
        return false;
    }
    let Some(procs) = proc_dirs() else {
        return false;
    };
    for entry in procs {
        match std::fs::metadata(entry.path().join("ns/pid")) {
            Ok(m) if m.ino() == ns => return false,
            Ok(_) => {}
            // Ended since the listing (or a zombie, whose namespace is gone).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            // Root may be denied the link (pid 1 of a container host):
            // a process with one pid (NSpid) is in this namespace.
            Err(_) if in_this_pid_ns(&entry.path()) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Whether /proc/PID (`proc`) is in the namespace of this /proc: its
/// NSpid, its pid in each namespace from there down, has one.
fn in_this_pid_ns(proc: &Path) -> bool {
    nspid_of(proc).is_some_and(|pids| pids.len() == 1)
}

/// The PIDs of a process, from the outermost PID namespace its /proc shows
/// down to its own (the NSpid line of its /proc/PID/status text, `status`);
/// None without that line, or with one that is not all PIDs.
pub fn nspid(status: &str) -> Option<Vec<i32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|p| p.parse().ok()).collect()
}

/// [`nspid`] of the process of /proc/PID directory `proc`.
fn nspid_of(proc: &Path) -> Option<Vec<i32>> {
    nspid(&std::fs::read_to_string(proc.join("status")).ok()?)
}

/// This boot's id (/proc/sys/kernel/random/boot_id).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// How a guest's init ended, as its keeper (its parent, see
/// `lifecycle::spawn_init`) saw it: `RUN_DIR/NAME/exit.json`, kept until the
/// next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The init's host PID and start time, as in its [`State`].
    pub pid: i32,
    pub start_time: u64,
    /// Its exit status, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it ("KILL", "TERM", …), if one did.
    pub signal: Option<String>,
    pub core_dumped: bool,
    /// Seconds since the epoch.
    pub ended: u64,
    /// Ended by its own reboot or halt ([`Shutdown`]; None in a file of an
    /// older unifs).
    #[serde(default)]
    pub shutdown: Option<Shutdown>,
    /// Why a guest that rebooted was not started again (its config's
    /// `on_reboot`, the loop guard, a failed start).
    #[serde(default)]
    pub not_restarted: Option<String>,
    /// Its keeper stopped the guest after this end, as `guest stop` would
    /// have (root unmounted, groups, veth and record removed): it was not
    /// started again, and no `stop` or `start` had got to it first.
    #[serde(default)]
    pub stopped_by_keeper: bool,
    /// Why its keeper could not stop it so: the record stays (stale), for
    /// `guest stop` to clean up.
    #[serde(default)]
    pub not_stopped: Option<String>,
    /// The memory limit's OOM killer ended it (None in a file of an older
    /// unifs).
    #[serde(default)]
    pub oom_killed: Option<OomKilled>,
    /// Its keeper ended it because one of the keeper's own threads failed
    /// (a bug): what failed ("its thread signals failed: …").
    #[serde(default)]
    pub keeper_failed: Option<String>,
    /// That failure came once init had ended by itself: it stopped
    /// nothing (the keeper did its usual end, and exited 101).
    #[serde(default)]
    pub keeper_failed_after_end: bool,
}

/// A process killed by the OOM killer of its guest's memory group: the
/// kernel's log names it, or (where the log cannot tell) it ended by
/// SIGKILL while the group's count of OOM kills rose shortly before its
/// end: see [`super::oom_watch::OomWatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomKilled {
    /// The guest's memory limit, in bytes.
    pub limit: Option<u64>,
    /// The file that counts the group's kills (`memory.oom_control`,
    /// `memory.events`), and its `oom_kill` count then.
    pub file: String,
    pub oom_kill: u64,
    /// The host's OOM killer, the host out of memory, not the group's
    /// limit (false in a file of an older unifs).
    #[serde(default)]
    pub host: bool,
}

impl OomKilled {
    /// Whether a process that ended by `signal` ("KILL", …) was the OOM
    /// killer's: its group counted `before` kills a moment before it ended
    /// (None: none), `now` once it ended. A SIGKILL from anyone else at the same
    /// moment cannot be told apart by the count: see
    /// [`super::oom_watch::OomWatch::verdict`], which asks the kernel's log.
    pub fn of(
        signal: Option<&str>,
        before: Option<super::cgroup::OomKills>,
        now: Option<super::cgroup::OomKills>,
        limit: Option<u64>,
    ) -> Option<OomKilled> {
        let now = now?;
        let rose = now.count > before.map_or(0, |b| b.count);
        (signal == Some("KILL") && rose).then(|| OomKilled {
            limit,
            file: now.file.to_string(),
            oom_kill: now.count,
            host: false,
        })
    }

    /// The same, the host's OOM killer's (the kernel's log says so).
    pub fn by_the_host(self) -> OomKilled {
        OomKilled { host: true, ..self }
    }

    /// "killed by the memory limit (16 MiB; memory.oom_control oom_kill 1)",
    /// or the host's.
    pub fn describe(&self) -> String {
        if self.host {
            return format!("{} (the host ran out of memory)", self.short());
        }
        let limit = match self.limit {
            Some(b) if b % (1 << 20) == 0 => format!("{} MiB; ", b >> 20),
            Some(b) => format!("{b} bytes; "),
            None => String::new(),
        };
        format!(
            "{} ({limit}{} oom_kill {})",
            self.short(),
            self.file,
            self.oom_kill
        )
    }

    /// "killed by the memory limit", or by the host's OOM killer.
    pub fn short(&self) -> &'static str {
        match self.host {
            true => "killed by the host's OOM killer",
            false => "killed by the memory limit",
        }
    }
}

impl Exit {
    /// From a wait status; None for one that is no end (stopped, continued).
    pub fn from_wait(status: nix::sys::wait::WaitStatus, start_time: u64) -> Option<Exit> {
        use nix::sys::wait::WaitStatus;
        let (pid, code, signal, core_dumped, shutdown) = match status {
            WaitStatus::Exited(pid, code) => (pid, Some(code), None, false, None),
            WaitStatus::Signaled(pid, sig, core) => {
                let name = sig.as_str().trim_start_matches("SIG").to_string();
                (pid, None, Some(name), core, Shutdown::of_signal(sig))
            }
            _ => return None,
        };
        Some(Exit {
            pid: pid.as_raw(),
            start_time,
            code,
            signal,
            core_dumped,
            ended: std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            shutdown,
            not_restarted: None,
            stopped_by_keeper: false,
            not_stopped: None,
            oom_killed: None,
            keeper_failed: None,
            keeper_failed_after_end: false,
        })
    }

    /// As systemd says it: "code=exited, status=3", "code=killed, signal=KILL";
    /// its own reboot or halt first: "rebooted (code=killed, signal=HUP)".
    /// The OOM killer's first: "killed by the memory limit (16 MiB;
    /// memory.oom_control oom_kill 1) (code=killed, signal=KILL)".
    pub fn describe(&self) -> String {
        match (self.shutdown, &self.oom_killed) {
            (Some(Shutdown::Reboot), _) => format!("rebooted ({})", self.code_and_signal()),
            (Some(Shutdown::Halt), _) => format!("halted ({})", self.code_and_signal()),
            (None, Some(oom)) => format!("{} ({})", oom.describe(), self.code_and_signal()),
            (None, None) => self.code_and_signal(),
        }
    }

    fn code_and_signal(&self) -> String {
        match (&self.signal, self.code) {
            (Some(sig), _) if self.core_dumped => format!("code=dumped, signal={sig}"),
            (Some(sig), _) => format!("code=killed, signal={sig}"),
            (None, code) => format!("code=exited, status={}", code.unwrap_or_default()),
        }
    }

    /// Short, for `list`: "exited 3", "killed by SIGKILL", "rebooted".
    pub fn short(&self) -> String {
        match (self.shutdown, &self.signal, &self.oom_killed) {
            (Some(Shutdown::Reboot), _, _) => "rebooted".into(),
            (Some(Shutdown::Halt), _, _) => "halted".into(),
            // Under unifs's reaper (init_reaper) its command's kill: 137.
            (None, _, Some(oom)) => oom.short().into(),
            (None, Some(sig), None) => format!("killed by SIG{sig}"),
            (None, None, _) => format!("exited {}", self.code.unwrap_or_default()),
        }
    }
}

/// Who holds a guest's lock ([`RunDir::lock_within`]), as far as can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// What it does: `start`, `stop` or `update` (its lock file's word; ""
    /// from an older unifs).
    pub what: String,
    /// Its pid (/proc/locks); None where that cannot be told: a holder in
    /// another PID namespace (not listed there), or one gone meanwhile.
    pub pid: Option<i32>,
    /// It is the guest's keeper (`unifs-keeper`), which stops the guest
    /// whose init ended by itself.
    pub keeper: bool,
    /// How long it said it may hold the lock at most (a `stop`: its
    /// --timeout and its waits after it); None: not said.
    pub holds: Option<std::time::Duration>,
}

impl LockHolder {
    /// What the guest is going through, and by whom: "being stopped by
    /// `unifs guest stop` (pid 1234)".
    pub fn describe(&self) -> String {
        let pid = match self.pid {
            Some(pid) => format!("pid {pid}"),
            None => "its pid not to be seen from this PID namespace".into(),
        };
        match self.what.as_str() {
            "stop" if self.keeper => format!("being stopped by its keeper ({pid}): its init ended"),
            "stop" => format!("being stopped by `unifs guest stop` ({pid})"),
            "start" => format!("being started by `unifs guest start` ({pid})"),
            "update" => format!("having its limits changed by `unifs guest update` ({pid})"),
            _ => format!("locked by another `unifs guest` command ({pid})"),
        }
    }

    /// Whether it is stopped (SIGSTOP, a debugger holds it): it goes
    /// nowhere until it is let go on.
    pub fn is_stopped(&self) -> bool {
        self.pid.and_then(crate::fs::process_stopped) == Some(true)
    }

    /// What to do when it holds on: let it go on if it is stopped
    /// (SIGSTOP, a debugger), else wait for it.
    pub fn what_to_do(&self) -> String {
        match self.pid {
            Some(pid) if self.is_stopped() => format!(
                "it is stopped (SIGSTOP, or a debugger holds it): `kill -CONT {pid}` lets it go \
                 on; then try again"
            ),
            Some(pid) => format!(
                "try again once it has ended (`unifs guest status` shows the guest; a stop with \
                 a long --timeout takes that long), or see what it waits on \
                 (/proc/{pid}/stack)"
            ),
            None => "try again once it has ended".into(),
        }
    }
}

/// What a guest's lock file says of its holder: its command (`start`,
/// `stop`, `update`), its pid in its own PID namespace, and the longest it
/// may hold the lock. Written as lines `WORD`, `pid N`, `holds SECS`; an
/// older unifs wrote the word alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockWord {
    pub what: String,
    pub pid: Option<i32>,
    pub holds: Option<std::time::Duration>,
}

impl LockWord {
    /// This process's word for command `what`, which holds the lock at most
    /// `holds`.
    pub fn new(what: &str, holds: Option<std::time::Duration>) -> LockWord {
        LockWord {
            what: what.into(),
            pid: Some(std::process::id() as i32),
            holds,
        }
    }

    pub fn parse(bytes: &[u8]) -> LockWord {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.lines();
        let mut word = LockWord {
            what: lines.next().unwrap_or_default().trim().to_string(),
            ..LockWord::default()
        };
        for line in lines {
            match line.split_once(' ') {
                Some(("pid", n)) => word.pid = n.trim().parse().ok(),
                Some(("holds", n)) => {
                    word.holds = n.trim().parse().ok().map(std::time::Duration::from_secs)
                }
                _ => {}
            }
        }
        word
    }
}

impl std::fmt::Display for LockWord {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        writeln!(f, "{}", self.what)?;
        if let Some(pid) = self.pid {
            writeln!(f, "pid {pid}")?;
        }
        if let Some(holds) = self.holds {
            writeln!(f, "holds {}", holds.as_secs())?;
        }
        Ok(())
    }
}

/// The time `limit` from now. A limit the clock cannot add (`stop
/// --timeout 1e19`: `Instant + Duration` panics past 2^63 s) waits 136
/// years, which is as long as anyone waits.
pub fn far_ahead(limit: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(limit).unwrap_or_else(|| now + LONGEST)
}

/// The longest wait that is told apart from waiting for good (136 years):
/// [`far_ahead`]'s, and the most a `stop` writes it may hold the lock.
pub const LONGEST: std::time::Duration = std::time::Duration::from_secs(u32::MAX as u64);

/// The name of [`RunDir::keeper_pid_file`].
const KEEPER_PID: &str = "keeper.pid";

/// The runtime directory of one guest.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(run_dir: &Path, name: &str) -> RunDir {
        RunDir {
            dir: run_dir.join(name),
        }
    }

    /// The guest's cgroup name (below `unifs/`): its own name in the default
    /// run dir, else the name and a digest of the run dir, so guests of one
    /// name in two run dirs never share a group (whose clean-up kills
    /// everything in it).
    pub fn cgroup_name(&self) -> String {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        if dir == Path::new(DEFAULT_RUN_DIR).join(&name) {
            return name;
        }
        // '@' is not allowed in guest names: no other guest has this group.
        let digest = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
        format!("{name}@{}", &digest[..12])
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The first lines of the last boot's console (see `relay`).
    pub fn console_boot(&self) -> PathBuf {
        self.dir.join("console.log.boot")
    }

    /// The running keeper's pid, for a service manager (the `PIDFile=` of
    /// contrib/systemd/unifs-guest@.service): written by each keeper before
    /// its `start` returns, removed by it when it ends.
    pub fn keeper_pid_file(&self) -> PathBuf {
        self.dir.join(KEEPER_PID)
    }

    /// The overlay daemon's log (its warnings: the open-file limit, …).
    pub fn mount_log(&self) -> PathBuf {
        self.dir.join("mount.log")
    }

    /// How the last init ended ([`Exit`]).
    pub fn exit_file(&self) -> PathBuf {
        self.dir.join("exit.json")
    }

    /// The last init's end, if recorded and readable (it only informs).
    pub fn read_exit(&self) -> Option<Exit> {
        serde_json::from_slice(&std::fs::read(self.exit_file()).ok()?).ok()
    }

    /// Removes the recorded end when it is of another init than `st`'s:
    /// one before it, left because `st`'s start removed none (a unifs built
    /// before bd63e1a, 2026-12-01, or one whose keeper was killed first).
    /// Else, once `st`'s record goes, it would pass for the end of `st`'s
    /// init, whose end is unknown. A keeper of `st`'s init removed such a
    /// file right as its init started (long before a stop gets here) and
    /// writes only `st`'s own end.
    pub fn drop_exit_of_other_init(&self, st: &State) {
        let other = self
            .read_exit()
            .is_some_and(|e| (e.pid, e.start_time) != (st.pid, st.start_time));
        if other {
            let _ = std::fs::remove_file(self.exit_file());
        }
    }

    /// Written by the keeper, which holds no lock: temp file of its own,
    /// then rename, so a reader sees a whole one. Not where something was
    /// mounted over this directory since the start ([`RunDir::lock`]
    /// refuses it): the record would land in what is mounted there, a
    /// guest tree.
    pub fn write_exit(&self, exit: &Exit) -> std::io::Result<()> {
        self.refuse_mounted().map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".exit.json.{}", std::process::id()));
        let json = serde_json::to_vec_pretty(exit).expect("exit serializes");
        replace(&tmp, &self.exit_file(), &json).map_err(|(_, e)| e)
    }

    /// An exclusive lock on this guest's runtime directory (creating it), so
    /// two starts or stops of one guest cannot interleave. Released on drop.
    /// `what` (`start`, `stop`, `update`) is written into the lock file,
    /// for [`RunDir::locked_for`]. Waits for good for another holder: the
    /// keeper's, which nobody waits on; a command's is [`RunDir::lock_within`].
    /// `holds`: the longest this holder may keep it ([`LockHolder::holds`]).
    pub fn lock(
        &self,
        what: &str,
        holds: Option<std::time::Duration>,
    ) -> Result<nix::fcntl::Flock<std::fs::File>> {
        self.lock_within(LockWord::new(what, holds), |_| None, |_, _| {})
    }

    /// [`RunDir::lock`], waiting at most what `limit` gives for the holder
    /// found (None: for good) while another process holds it; `waiting` is
    /// told who that is and that bound, when it must wait, and again should
    /// the holder say by the bound's end that it takes longer. Past it:
    /// [`Error::LockHeld`], nothing done. A guest's keeper found holding it
    /// (stopping its guest, its init ended) is first waited for unsaid, as
    /// long as a `stop` waits for it to end.
    pub fn lock_within(
        &self,
        word: LockWord,
        mut limit: impl FnMut(&LockHolder) -> Option<std::time::Duration>,
        mut waiting: impl FnMut(&LockHolder, Option<std::time::Duration>),
    ) -> Result<nix::fcntl::Flock<std::fs::File>> {
        use nix::fcntl::{Flock, FlockArg};
        self.refuse_mounted()?;
        // Root's alone where we make it: the guest's root is mounted here
        // (suid, allow_other), with any set-uid program guest root made.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Error::io("creating", &self.dir, e))?;
        // And kept so: an older unifs made it 0755.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("restricting", &self.dir, e))?;
        let path = self.dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        let locking = |e| Error::sys(format!("locking {}", path.display()), e);
        let mut told = false;
        // Once told: the bound, and when it ends (None: waits for good).
        let mut bound: Option<Option<(std::time::Duration, std::time::Instant)>> = None;
        // When it was first found held: the bound counts from then, the
        // unsaid wait for a keeper (below) within it.
        let mut since: Option<std::time::Instant> = None;
        let mut looked_again = false;
        // A keeper found holding it, waited for unsaid: its pid, and till when.
        let mut keeper: Option<(i32, std::time::Instant)> = None;
        let lock = loop {
            let file_back = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
                Err((_, e)) => return Err(locking(e)),
            };
            let first = since.is_none();
            let since = *since.get_or_insert_with(std::time::Instant::now);
            // Till its time is out, or it is gone or stopped: then whoever
            // holds the lock is looked at again (a command it let go to, one
            // SIGSTOPped, is said at once).
            if let Some((pid, until)) = keeper {
                let runs = crate::fs::process_stopped(pid) == Some(false);
                if runs && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    file = file_back;
                    continue;
                }
            }
            if !told {
                // The tests' window between the try and the look at who
                // holds it: at the first look only (a second stop would
                // have nobody to let it go on).
                if first {
                    crate::sys::test_stop!("UNIFS_TEST_LOCK_TRIED_STOP");
                }
                let holder = self.lock_holder(&file_back);
                // Listed by none in /proc/locks: the holder may have let go
                // since the try (else it is of another PID namespace), so
                // it is tried once more before anything is said.
                if holder.pid.is_none() && !looked_again {
                    looked_again = true;
                    file = file_back;
                    continue;
                }
                // The keeper of an init that ended by itself, stopping its
                // guest: a moment's teardown, waited for as a `stop` waits
                // for it to end, without a word of a command nobody ran
                // (`locked by another …` before its word is in the file).
                // Once; one stopped is said at once, with how to go on.
                // Its time counts toward the bound.
                if let (true, None, Some(pid)) = (holder.keeper, keeper, holder.pid) {
                    if !holder.is_stopped() {
                        let wait = super::lifecycle::keeper_end_wait();
                        keeper = Some((pid, far_ahead(wait)));
                        file = file_back;
                        continue;
                    }
                }
                told = true;
                let l = limit(&holder);
                waiting(&holder, l);
                bound = Some(l.map(|l| (l, since.checked_add(l).unwrap_or(far_ahead(l)))));
            }
            match bound.flatten() {
                // Polled, not blocked on: a bound that a signal need not cut.
                Some((l, end)) if std::time::Instant::now() >= end => {
                    let holder = self.lock_holder(&file_back);
                    // A holder first seen before it wrote its word (how
                    // long it may take: a `stop --timeout 300`) may have
                    // written it since: waited for as long as it says.
                    let longer = limit(&holder);
                    if longer.is_none_or(|longer| longer > l) {
                        waiting(&holder, longer);
                        let from = |longer| since.checked_add(longer).unwrap_or(far_ahead(longer));
                        bound = Some(longer.map(|longer| (longer, from(longer))));
                        file = file_back;
                        continue;
                    }
                    return Err(Error::LockHeld {
                        name: self.name(),
                        lock: path,
                        holder,
                        secs: l.as_secs(),
                    });
                }
                Some(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                None => {
                    break Flock::lock(file_back, FlockArg::LockExclusive)
                        .map_err(|(_, e)| locking(e))?
                }
            }
            file = file_back;
        };
        // The tests' window between the lock and its word, for the
        // command it names (not the keeper's stop a start forks).
        crate::sys::test_stop!("UNIFS_TEST_LOCKED_UNSAID_STOP", word.what.as_str());
        // Only words for `status`: a file that cannot be written is no error.
        use std::os::unix::fs::FileExt;
        let _ = lock.set_len(0);
        let _ = lock.write_all_at(word.to_string().as_bytes(), 0);
        Ok(lock)
    }

    /// The guest's name: this run dir's.
    fn name(&self) -> String {
        let name = self.dir.file_name().unwrap_or_default();
        name.to_string_lossy().into_owned()
    }

    /// Who holds the lock on `file` (this run dir's lock file), as far as
    /// can be told: what its lock file says, and its pid from /proc/locks.
    fn lock_holder(&self, file: &std::fs::File) -> LockHolder {
        use std::os::unix::fs::MetadataExt;
        // None for a holder outside this PID namespace, which /proc/locks
        // does not list (flock_holders).
        let pid = file.metadata().ok().and_then(|md| {
            let pids = crate::sys::flock_holders(md.dev(), md.ino())?;
            pids.first().copied()
        });
        let word = self.holders_word(pid);
        LockHolder {
            what: word.what,
            pid,
            keeper: pid.and_then(super::kept::named_keeper) == Some(true),
            holds: word.holds,
        }
    }

    /// The lock file's word, if it is that of `pid`, the holder /proc/locks
    /// lists: a holder writes its word just after it took the lock, so
    /// until then the file still holds the word of the one before. Read
    /// again for a moment; then none. A holder not seen (None), or of an
    /// older unifs (no pid written), is taken at its word.
    fn holders_word(&self, pid: Option<i32>) -> LockWord {
        let read = || LockWord::parse(&std::fs::read(self.dir.join("lock")).unwrap_or_default());
        let Some(own) = pid.and_then(pid_in_own_ns) else {
            return read();
        };
        for _ in 0..10 {
            let word = read();
            if word.pid.is_none_or(|p| p == own) {
                return word;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        LockWord::default()
    }

    /// Refuses a runtime directory that is a mount point, or lies in a
    /// unifs mount: README's `unifs mount /vservers/web1 /run/unifs/web1`
    /// put a guest tree at the default run dir of guest web1, and its
    /// `guest start` then chmodded that tree's root 0700 and left its lock
    /// and logs in it, through the mount.
    fn refuse_mounted(&self) -> Result<()> {
        // One read of the mount table for its four looks: on a host of
        // 5,000 mounts each read takes ~0.1 s.
        crate::fs::mountinfo::with_one_read(|| self.refuse_mounted_in_table())
    }

    fn refuse_mounted_in_table(&self) -> Result<()> {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let refused = |what: String, mount: PathBuf| Error::RunDirMounted {
            name: name.clone(),
            dir: self.dir.clone(),
            what,
            mount,
        };
        match crate::fs::mount_at(&self.dir) {
            Ok(Some(m)) => {
                let what = match m.unifs_guest() {
                    Some(g) => format!("is the unifs mount of guest directory {}", g.display()),
                    None => format!("is a mount point (type {})", m.fstype),
                };
                return Err(refused(what, self.dir.clone()));
            }
            Ok(None) => {}
            Err(e) => return Err(Error::io("reading the mounts of", &self.dir, e)),
        }
        self.refuse_covered()?;
        // A run dir inside a unifs mount (a tree mounted at /run/unifs).
        if let Some((mount, backing)) = in_unifs_view(&self.dir) {
            let what = format!(
                "lies in the unifs mount at {}, a guest tree's view (it is {} there)",
                mount.display(),
                backing.display()
            );
            return Err(refused(what, mount));
        }
        Ok(())
    }

    /// Refuses a run dir a mount was made over, or over a directory above
    /// it, since the guest's root was mounted ([`RunDir::covered`]): its
    /// files, and its root, are under that mount.
    pub fn refuse_covered(&self) -> Result<()> {
        let Some(cover) = self.covered() else {
            return Ok(());
        };
        let name = self.dir.file_name().unwrap_or_default();
        Err(Error::RunDirCovered {
            name: name.to_string_lossy().into_owned(),
            dir: self.dir.clone(),
            fstype: cover.fstype,
            cover: cover.point,
        })
    }

    /// The mount this run dir is covered by: one made over RUN_DIR/NAME or
    /// a directory above it since the guest's root was mounted at its
    /// `root` (a tmpfs mounted over /run). The root's mount is still listed
    /// there, but the path no longer leads to the directory it is mounted
    /// on, nor to the guest's record, lock and console.log beside it. None
    /// when it is not covered, or no root is mounted. The guest's root is
    /// not looked at (its daemon may not answer), nor is anything asked of
    /// a filesystem: the mounts are told by /proc.
    pub fn covered(&self) -> Option<crate::fs::mountinfo::Mount> {
        let dir = self.resolved();
        let mounts = crate::fs::mountinfo::read().ok()?;
        let root = dir.join("root");
        // Each mount listed at RUN_DIR/NAME/root, by the mount it is on.
        // Not only the last: under a shared mount, RUN_DIR bound onto
        // itself before the start (as `ip netns` makes /run/netns a mount
        // point) gets the root's mount on that bind and a copy of it, by
        // propagation, on the mount beneath, listed after it and hidden.
        let on: Vec<u64> = mounts
            .iter()
            .filter(|m| m.point == root)
            .map(|m| m.parent)
            .collect();
        if on.is_empty() {
            return None;
        }
        // Where the path leads now: the run dir, or what is left of it.
        let now = dir.ancestors().find_map(|a| {
            let fd = open_path(a).ok()?;
            crate::sys::fd_mount_and_inode(fd.as_fd())
        });
        let (reached, _) = now?;
        if on.contains(&reached) {
            return None;
        }
        mounts.into_iter().find(|m| m.id == reached)
    }

    /// This run dir absolute and through its symlinks, as mountinfo names
    /// mount points, as far as it exists (a run dir covered is not there).
    fn resolved(&self) -> PathBuf {
        let dir = std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone());
        if let Ok(dir) = std::fs::canonicalize(&dir) {
            return dir;
        }
        match (dir.parent(), dir.file_name()) {
            (Some(up), Some(name)) => {
                std::fs::canonicalize(up).map_or(dir.clone(), |u| u.join(name))
            }
            _ => dir,
        }
    }

    /// What the other process that holds this guest's lock does (`start`,
    /// `stop`, `update`; "" from an older unifs); None when none holds it.
    pub fn locked_for(&self) -> Option<String> {
        self.locked_by_another().then(|| {
            LockWord::parse(&std::fs::read(self.dir.join("lock")).unwrap_or_default()).what
        })
    }

    /// Who holds this guest's lock, when another process does.
    pub fn held_by(&self) -> Option<LockHolder> {
        let file = std::fs::File::open(self.dir.join("lock")).ok()?;
        self.locked_by_another().then(|| self.lock_holder(&file))
    }

    /// Whether another process holds this guest's lock ([`RunDir::lock`]):
    /// a `start`, `stop`, `restart` or `update` at work. Creates nothing.
    pub fn locked_by_another(&self) -> bool {
        let Ok(file) = std::fs::File::open(self.dir.join("lock")) else {
            return false;
        };
        matches!(
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock),
            Err((_, nix::errno::Errno::EWOULDBLOCK))
        )
    }

    pub fn read(&self) -> Result<Option<State>> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Record {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading runtime record", path, e)),
        }
    }

    /// Temp file + fsync + rename, so a reader sees the old record or the
    /// new one, after a crash too: a run dir on a disk (not /run's tmpfs)
    /// could otherwise come back from a power loss with an empty record.
    pub fn write(&self, state: &State) -> Result<()> {
        let tmp = self.dir.join(".state.json.tmp");
        let json = serde_json::to_vec_pretty(state).expect("state serializes");
        replace(&tmp, &self.state_file(), &json)
            .map_err(|(at, e)| Error::io("writing runtime record", at, e))?;
        let _ = std::fs::File::open(&self.dir).and_then(|d| d.sync_all());
        Ok(())
    }

    /// Moves a record aside to `state.json.SUFFIX` (kept for a look, never
    /// read again) so that start and stop can go on as for a guest without
    /// a record.
    pub fn set_aside(&self, suffix: &str) -> Result<PathBuf> {
        let from = self.state_file();
        let to = self.dir.join(format!("state.json.{suffix}"));
        std::fs::rename(&from, &to).map_err(|e| Error::io("moving aside", &from, e))?;
        Ok(to)
    }
}

/// Where `dir` (which need not exist yet) lies in a unifs mount, a guest
/// tree's view: that mount's point, and what `dir` is in the guest's
/// directory. What is written there lands in the guest's tree, where the
/// guest reads and changes it.
pub fn in_unifs_view(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let existing = dir.ancestors().find(|a| a.exists())?;
    let backing = crate::fs::unifs_view_backing(existing)?;
    let mount = crate::fs::holding_mount_point(existing).unwrap_or_default();
    Some((mount, backing))
}

/// Writes `bytes` to `tmp`, flushes it to disk and renames it over `path`:
/// a reader, or the disk after a crash, has the old file or the whole new
/// one. The error comes with the file it concerns.
fn replace(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir =
        std::fs::File::open(dir.unwrap_or(Path::new("."))).map_err(|e| (path.to_path_buf(), e))?;
    let name = |p: &Path| {
        p.file_name()
            .map(std::ffi::OsStr::to_os_string)
            .unwrap_or_default()
    };
    replace_at(dir.as_fd(), &name(tmp), &name(path), bytes).map_err(|(is_tmp, e)| match is_tmp {
        true => (tmp.to_path_buf(), e),
        false => (path.to_path_buf(), e),
    })
}

/// [`replace`] of the file `name` in the directory open as `dir`, through
/// `tmp` there; the error says whether it concerns `tmp` (true).
fn replace_at(
    dir: BorrowedFd,
    tmp: &std::ffi::OsStr,
    name: &std::ffi::OsStr,
    bytes: &[u8],
) -> Result<(), (bool, std::io::Error)> {
    use nix::fcntl::OFlag;
    use std::io::Write;
    let at_tmp = |e: nix::errno::Errno| (true, std::io::Error::from(e));
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC;
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
    let fd = nix::fcntl::openat(dir, tmp, flags | OFlag::O_NOFOLLOW, mode).map_err(at_tmp)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(|e| (true, e))?;
    file.sync_all().map_err(|e| (true, e))?;
    nix::fcntl::renameat(dir, tmp, dir, name).map_err(|e| (false, e.into()))
}

/// `path` opened to be looked at only (O_PATH): no call to its filesystem,
/// so a FUSE mount at it whose daemon does not answer is no wait.
fn open_path(path: &Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())
}

/// A guest's run dir as its keeper holds it open from init's start on:
/// what the keeper writes once init ends goes into this very directory,
/// whatever was mounted over RUN_DIR/NAME or a directory above it
/// meanwhile (a tmpfs over /run): never into that mount (another's files,
/// or a run dir a start made there), and found where it belongs once that
/// mount is gone.
pub struct HeldRunDir {
    pub run: RunDir,
    fd: OwnedFd,
}

impl HeldRunDir {
    pub fn open(run: RunDir) -> std::io::Result<HeldRunDir> {
        let fd = crate::sys::open_dir(&run.dir)?;
        Ok(HeldRunDir { run, fd })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// The console log by a path through the held directory: for this
    /// process only (its /proc/self/fd), while it holds it.
    pub fn console_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/console.log", self.raw_fd()))
    }

    /// The console log, opened to append to.
    pub fn open_console(&self) -> std::io::Result<std::fs::File> {
        use nix::fcntl::OFlag;
        let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let fd = nix::fcntl::openat(
            &self.fd,
            "console.log",
            flags,
            nix::sys::stat::Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Why RUN_DIR/NAME no longer leads to this directory (a mount made
    /// over it, [`RunDir::covered`]; moved or removed): None while it does,
    /// or where /proc cannot tell.
    pub fn lost(&self) -> Option<String> {
        let held = crate::sys::fd_mount_and_inode(self.fd.as_fd())?;
        let now = open_path(&self.run.dir).ok();
        let now = now.and_then(|fd| crate::sys::fd_mount_and_inode(fd.as_fd()));
        if now.is_some_and(|now| same_dir(held, now)) {
            return None;
        }
        let dir = crate::sys::shown(&self.run.dir);
        Some(match self.run.covered() {
            Some(m) => format!(
                "its run dir {dir} was covered by the {} mount at {} while it ran (its record and \
                 console.log are under that mount)",
                m.fstype,
                crate::sys::shown(&m.point)
            ),
            None => format!(
                "its run dir {dir} no longer leads to the guest's (moved or removed, or a mount \
                 made over it)"
            ),
        })
    }

    /// Why RUN_DIR/NAME is not to be used by its path: [`HeldRunDir::lost`],
    /// or the guest's root there covered ([`RunDir::covered`]: a run dir
    /// bound onto itself without its mounts is the same directory, its
    /// root hidden).
    pub fn cut_off(&self) -> Option<String> {
        let covered = || self.run.refuse_covered().err().map(|e| e.to_string());
        self.lost().or_else(covered)
    }

    /// [`RunDir::write_exit`], into the held directory.
    pub fn write_exit(&self, exit: &Exit) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(exit).expect("exit serializes");
        self.write("exit.json", &json)
    }

    /// Writes the file `name` of the held directory whole (a temp file of
    /// this process's, then rename), so a reader sees a whole one.
    pub fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = format!(".{name}.{}", std::process::id());
        replace_at(self.fd.as_fd(), tmp.as_ref(), name.as_ref(), bytes).map_err(|(_, e)| {
            // Not left behind: a keeper writes again at each change, and
            // one after a reboot under another pid would never take it up.
            self.remove(&tmp);
            e
        })
    }

    /// The same directory, held by a descriptor of its own (close-on-exec).
    pub fn try_clone(&self) -> std::io::Result<HeldRunDir> {
        Ok(HeldRunDir {
            run: self.run.clone(),
            fd: self.fd.try_clone()?,
        })
    }

    /// Removes the file `name` of the held directory, if there.
    pub fn remove(&self, name: &str) {
        let _ = nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }

    /// The text of the file `name` of the held directory (a regular file
    /// only: a FIFO put there would never be read to its end).
    pub fn read(&self, name: &str) -> Option<String> {
        use nix::fcntl::OFlag;
        use std::io::Read;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.fd, name, flags, nix::sys::stat::Mode::empty()).ok()?;
        let mut file = std::fs::File::from(fd);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Writes this keeper's pid to `keeper.pid` ([`RunDir::keeper_pid_file`])
    /// of the held directory, whole or not at all (a service manager may
    /// read it at any time).
    pub fn write_keeper_pid(&self) {
        let pid = format!("{}\n", std::process::id());
        let tmp = format!(".keeper.pid.{}", std::process::id());
        let _ = replace_at(
            self.fd.as_fd(),
            tmp.as_ref(),
            KEEPER_PID.as_ref(),
            pid.as_bytes(),
        );
    }

    /// Removes `keeper.pid` of the held directory if it still names this
    /// keeper.
    pub fn forget_keeper_pid(&self) {
        let ours = self
            .read(KEEPER_PID)
            .is_some_and(|pid| pid.trim() == std::process::id().to_string());
        if ours {
            self.remove(KEEPER_PID);
        }
    }
}

/// Whether two directories, each by its mount and inode
/// ([`crate::sys::fd_mount_and_inode`]), are one: on one mount, or on two
/// of one filesystem (one device) with one inode number. A run dir bound
/// onto itself (`mount --bind X X`, as tools do to make a directory a
/// mount point) is the same directory on a new mount: not lost. The
/// devices come from /proc's mount table, not a stat, which a FUSE mount
/// whose daemon does not answer would never return from.
fn same_dir(a: (u64, Option<u64>), b: (u64, Option<u64>)) -> bool {
    if a == b {
        return true;
    }
    if a.1.is_none() || a.1 != b.1 {
        return false;
    }
    let Ok(mounts) = crate::fs::mountinfo::read() else {
        return false;
    };
    let dev = |id| mounts.iter().find(|m| m.id == id).map(|m| m.dev.clone());
    dev(a.0).is_some_and(|d| Some(d) == dev(b.0))
}

/// The fields of /proc/PID/stat text from the state (3) on: the command
/// name before them may hold spaces and parentheses, so they start after
/// the last ')'.
pub fn stat_fields(text: &str) -> Option<Vec<&str>> {
    Some(text.get(text.rfind(')')? + 2..)?.split(' ').collect())
}

/// State letter and start time of a process, from /proc/PID/stat, the
/// start time as the root time namespace counts it ([`to_root_ticks`]).
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // state (3), …, starttime (22).
    let fields = stat_fields(&text)?;
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, to_root_ticks(start)))
}

/// The start time of `pid` in clock ticks after boot, in the root time
/// namespace's count whatever time namespace this process is in: what
/// records hold and are compared with.
pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// True while the process `pid` that started at `start_time` runs (a zombie
/// has ended). Start times agree to a tick: seen from a time namespace
/// whose boot-time offset is no whole number of ticks, /proc's rounding
/// leaves one tick unknown.
pub fn alive(pid: i32, start_time: u64) -> bool {
    matches!(proc_stat(pid), Some((state, t))
        if t.abs_diff(start_time) <= 1 && state != 'Z' && state != 'X')
}

const NANOS: i128 = 1_000_000_000;

/// Clock ticks per second (USER_HZ), the unit of /proc's start times.
fn ticks_per_sec() -> i128 {
    // SAFETY: sysconf takes and returns plain integers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as i128
    } else {
        100
    }
}

/// The boot-time offset of this process's time namespace in nanoseconds (0
/// in the root one, or without time namespaces): /proc shows start times,
/// and CLOCK_BOOTTIME reads, shifted by it. (timens_offsets shows the
/// namespace of our children, which is ours: exec enters it, and unifs
/// unshares none.) Read once: exec's setns may change what /proc/self is.
fn boottime_offset_ns() -> i128 {
    static OFFSET: std::sync::OnceLock<i128> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/timens_offsets").unwrap_or_default();
        text.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f[..] {
                    ["boottime", s, ns] => {
                        Some(s.parse::<i128>().ok()? * NANOS + ns.parse::<i128>().ok()?)
                    }
                    _ => None,
                }
            })
            .unwrap_or(0)
    })
}

/// A start time /proc showed this process into the root time namespace's
/// count: exact for an offset of whole ticks, else it or a tick less.
fn to_root_ticks(shown: u64) -> u64 {
    let offset = boottime_offset_ns();
    if offset == 0 {
        return shown;
    }
    let tick = NANOS / ticks_per_sec();
    let root = (i128::from(shown) * tick - offset).div_euclid(tick);
    u64::try_from(root.max(0)).unwrap_or(u64::MAX)
}

/// Whole seconds since a process that started at `start_time` (as
/// [`start_time`] gives it) started: boot-relative, as `ps` counts it, so a
/// step of the wall clock (NTP correcting a wrong RTC) changes nothing.
pub fn running_secs(start_time: u64) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return 0;
    }
    let now = i128::from(now.tv_sec) * NANOS + i128::from(now.tv_nsec) - boottime_offset_ns();
    let started = i128::from(start_time) * (NANOS / ticks_per_sec());
    u64::try_from((now - started).max(0) / NANOS).unwrap_or(0)
}

/// Whether a guest's overlay root still serves its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootHealth {
    Answers,
    /// Its daemon is gone: the mount stays, and every access fails with
    /// ENOTCONN ("Transport endpoint is not connected").
    Lost,
    /// Its daemon did not answer in time (stopped, or hung).
    NoAnswer,
}

/// The variable that makes `unifs` a [`root_health`] probe: statfs of its
/// value, answered by the exit status ([`probe_statfs`]).
pub const PROBE_ENV: &str = "UNIFS_STATFS_PROBE";

/// Asks the filesystem at `root` for its statistics: statfs is never served
/// from a cache, so it reaches the FUSE daemon of an overlay root, and a
/// guest whose daemon died (killed, OOM) is told from a running one. In a
/// process of its own (this program again, with [`PROBE_ENV`]), left to
/// itself after `limit`: a request the daemon read but does not answer (it
/// was stopped) waits uninterruptibly for its answer, and as a thread of
/// ours it would keep this process from ending, and whoever waits for it.
pub fn root_health(root: &Path, limit: std::time::Duration) -> RootHealth {
    use std::process::{Command, Stdio};
    let Ok(exe) = std::env::current_exe() else {
        return RootHealth::Answers; // Cannot tell: say nothing.
    };
    let deadline = std::time::Instant::now() + limit;
    // One probe at a time per mount ([`claim_probe`]): one left
    // unanswered by an earlier command (ours, another's) is waited for,
    // not joined by another,
    // so that calls made again and again (`guest list` in a loop) leave
    // one process waiting on a hung daemon, not one each.
    while claim_probe(root).is_none() {
        if std::time::Instant::now() >= deadline {
            return RootHealth::NoAnswer;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let probe = Command::new(exe)
        .env(PROBE_ENV, root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut probe) = probe else {
        return RootHealth::Answers;
    };
    loop {
        match probe.try_wait() {
            Ok(Some(status)) if status.code() == Some(PROBE_LOST) => return RootHealth::Lost,
            Ok(Some(_)) => return RootHealth::Answers,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            // Not waited for: it ends when the daemon answers or goes.
            _ => {
                let _ = probe.kill();
                return RootHealth::NoAnswer;
            }
        }
    }
}

/// Where [`claim_probe`]'s claims are: a directory of root's alone (0700 in
/// root's /run), so no other user, and no guest, can take or hold one. (An
/// abstract unix socket's name, which the claim was first, any user and any
/// guest sharing the host's network could bind first, making every look at
/// that mount "does not answer": `guest exec` and `status` refused.)
const PROBE_CLAIMS: &str = "/run/unifs-probes";

/// A claim on the probing of `root` ([`root_health`]): an flock on a file
/// of [`PROBE_CLAIMS`] named after it, taken by the probe for as long as it
/// runs and let go of by the kernel when it ends, however it ends (a probe
/// killed while its request waits keeps it till the daemon answers). Not a
/// look at other processes' /proc/PID/environ, which waits for good on a
/// process stuck with its memory map locked (one blocked on a FUSE mount).
/// None when another holds it (a probe still waiting); an error where none
/// can be had (not root, no /run): the probe goes on without one.
fn claim_probe(root: &Path) -> Option<std::io::Result<ProbeClaim>> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let claims = Path::new(PROBE_CLAIMS);
    match std::fs::DirBuilder::new().mode(0o700).create(claims) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Some(Err(e)),
        _ => {}
    }
    // /run is root's: checked once made, no one else can swap it since.
    match std::fs::symlink_metadata(claims) {
        Ok(m) if m.is_dir() && m.uid() == 0 && m.mode() & 0o077 == 0 => {}
        Ok(_) => return Some(Err(std::io::Error::other("not root's alone"))),
        Err(e) => return Some(Err(e)),
    }
    let digest = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
    let path = claims.join(&digest[..32]);
    loop {
        match ProbeClaim::take(&path) {
            Ok(Some(claim)) => return Some(Ok(claim)),
            Ok(None) => return None,
            // Removed by the holder that just ended: a file the next
            // claimer would not see locked. Again, at the path's new file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Some(Err(e)),
        }
    }
}

/// A probe's claim held ([`claim_probe`]): its file is removed when it is
/// let go of, while still locked, so that /run/unifs-probes does not keep
/// a file for every root ever probed. (A probe killed keeps its file; the
/// next claim of that root removes it.)
struct ProbeClaim {
    /// The flock, held till dropped (after the file's removal).
    _lock: OwnedFd,
    path: PathBuf,
}

impl ProbeClaim {
    /// The flock on the file at `path`, made if need be: None when another
    /// holds it; NotFound when the file locked is no longer the one at
    /// `path` (its holder removed it on ending, maybe another made anew).
    fn take(path: &Path) -> std::io::Result<Option<ProbeClaim>> {
        ProbeClaim::lock(ProbeClaim::open(path)?, path)
    }

    /// The claim file at `path`, made if need be.
    fn open(path: &Path) -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    }

    /// [`ProbeClaim::take`] of `file`, opened at `path`.
    fn lock(file: std::fs::File, path: &Path) -> std::io::Result<Option<ProbeClaim>> {
        use std::os::unix::fs::MetadataExt;
        if !crate::fs::sys::try_flock(file.as_fd(), true)? {
            return Ok(None);
        }
        let held = file.metadata()?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == (held.dev(), held.ino()) => Ok(Some(ProbeClaim {
                _lock: OwnedFd::from(file),
                path: path.to_path_buf(),
            })),
            Ok(_) => Err(std::io::ErrorKind::NotFound.into()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for ProbeClaim {
    fn drop(&mut self) {
        // Still locked: a claimer that opened it meanwhile finds, once it
        // has the lock, no file at the path, and takes the path's anew.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A guest's overlay root as `guest status` and `exec` see it: its
/// [`root_health`], and when it does not answer, its daemon looked at
/// ([`crate::fs::guest_daemon`]): one that runs is busy, not lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootServing {
    Answers,
    /// Its daemon is gone (ENOTCONN).
    Lost,
    /// It does not answer and its daemon (pid, if found) is stopped or not
    /// to be found: nothing is answered until it goes on. (Not found is
    /// also a daemon outside this PID namespace, whose pid /proc/locks does
    /// not show; `status` and `exec` never get here for one: a guest
    /// started in another PID namespace is refused before.)
    Stopped(Option<i32>),
    /// It did not answer in time, but its daemon (pid) runs: busy (a long
    /// break of a large file, a guest flooding it with requests), or hung
    /// in a way that cannot be told from that.
    Busy(i32),
}

/// [`RootServing`] of the overlay root at `root`, served from `backing`,
/// asked within `limit`.
pub fn root_serving(root: &Path, backing: &Path, limit: std::time::Duration) -> RootServing {
    match root_health(root, limit) {
        RootHealth::Answers => RootServing::Answers,
        RootHealth::Lost => RootServing::Lost,
        RootHealth::NoAnswer => match crate::fs::guest_daemon(backing) {
            Some((pid, false)) => RootServing::Busy(pid),
            daemon => RootServing::Stopped(daemon.map(|(pid, _)| pid)),
        },
    }
}

/// [`probe_statfs`]'s exit status for a daemon gone.
const PROBE_LOST: i32 = 3;

/// The probe's whole work, run by `main` when [`PROBE_ENV`] is set: exit
/// status 0 when `path` answers statfs, [`PROBE_LOST`] for a daemon gone
/// ([`crate::fs::daemon_gone_error`]: a probe that waited as the daemon
/// died hears ECONNABORTED, not ENOTCONN), 1 otherwise.
pub fn probe_statfs(path: &Path) -> i32 {
    // Held till this process ends (a claim another took just now: two
    // probes, as before claims).
    let _claim = claim_probe(path);
    match nix::sys::statfs::statfs(path) {
        Ok(_) => 0,
        Err(e) if crate::fs::daemon_gone_error(&e.into()) => PROBE_LOST,
        Err(_) => 1,
    }
}

/// Whether `path` is a mount point, from /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> std::io::Result<bool> {
    // mountinfo has the resolved path, and `path` may be relative or go
    // through a symlink (a run dir under /var/run). Its parent only: a FUSE
    // mount whose daemon died fails stat.
    let path = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    Ok(crate::fs::mountinfo::read()?
        .iter()
        .any(|m| m.point == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let t = start_time(me).unwrap();
        assert!(alive(me, t));
        assert!(!alive(me, t + 2));
        assert!(!alive(i32::MAX, t));
    }

    #[test]
    fn root_is_mounted() {
        assert!(is_mounted(Path::new("/")).unwrap());
        assert!(!is_mounted(Path::new("/no/such/mount")).unwrap());
    }

    /// A claimer that opened the claim file before its holder removed it
    /// and let go gets the flock on a file no longer at the path: not a
    /// claim (another may hold the path's new file), but NotFound, to try
    /// again at the path.
    #[test]
    fn a_claim_file_removed_under_a_waiting_claimer_is_not_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claim");
        let first = ProbeClaim::take(&path).unwrap().unwrap();
        let late = ProbeClaim::open(&path).unwrap();
        drop(first);
        assert!(!path.exists(), "the claim's file outlived it");
        let second = ProbeClaim::take(&path).unwrap().unwrap();
        let late = ProbeClaim::lock(late, &path).map(|c| c.is_some());
        assert_eq!(
            late.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::NotFound)
        );
        assert!(ProbeClaim::take(&path).unwrap().is_none());
        drop(second);
        assert!(!path.exists());
    }
}

#[cfg(test)]
mod reboot_tests {
    use super::*;

    #[test]
    fn a_sixth_reboot_within_the_window_is_a_loop() {
        let mut r = Reboots::default();
        for i in 0..REBOOT_BURST as u64 {
            r = r.after_one_more(1000 + i).unwrap();
        }
        assert_eq!(r.count, REBOOT_BURST as u32);
        assert_eq!(r.after_one_more(1000 + REBOOT_BURST as u64), None);
        // Once the first has left the window, one more may come; the count
        // goes on, the times kept are the window's.
        let later = r.after_one_more(1000 + REBOOT_WINDOW).unwrap();
        assert_eq!(later.count, REBOOT_BURST as u32 + 1);
        assert_eq!(later.recent.len(), REBOOT_BURST);
    }

    #[test]
    fn a_reboot_and_a_halt_are_said_as_such() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        let pid = nix::unistd::Pid::from_raw(7);
        let end = |sig| Exit::from_wait(WaitStatus::Signaled(pid, sig, false), 1).unwrap();
        let reboot = end(Signal::SIGHUP);
        assert_eq!(reboot.shutdown, Some(Shutdown::Reboot));
        assert_eq!(reboot.describe(), "rebooted (code=killed, signal=HUP)");
        assert_eq!(reboot.short(), "rebooted");
        assert_eq!(end(Signal::SIGINT).short(), "halted");
        assert_eq!(end(Signal::SIGTERM).short(), "killed by SIGTERM");
        assert_eq!(end(Signal::SIGTERM).shutdown, None);
        // exit.json of an older unifs reads as before.
        let old =
            r#"{"pid":7,"start_time":1,"code":null,"signal":"HUP","core_dumped":false,"ended":2}"#;
        let old: Exit = serde_json::from_str(old).unwrap();
        assert_eq!(old.short(), "killed by SIGHUP");
    }

    #[test]
    fn a_sigkill_is_the_oom_killers_only_where_the_groups_count_rose() {
        use crate::guest::cgroup::OomKills;
        let count = |n| {
            Some(OomKills {
                file: "memory.oom_control",
                count: n,
            })
        };
        let mib16 = Some(16 << 20);
        assert_eq!(OomKilled::of(Some("KILL"), count(1), count(1), mib16), None);
        assert_eq!(OomKilled::of(Some("TERM"), count(0), count(1), mib16), None);
        assert_eq!(OomKilled::of(Some("KILL"), None, None, mib16), None);
        let oom = OomKilled::of(Some("KILL"), None, count(2), mib16).unwrap();
        assert_eq!(
            oom.describe(),
            "killed by the memory limit (16 MiB; memory.oom_control oom_kill 2)"
        );
        let pid = nix::unistd::Pid::from_raw(7);
        let status = nix::sys::wait::WaitStatus::Signaled(pid, nix::sys::signal::SIGKILL, false);
        let mut exit = Exit::from_wait(status, 1).unwrap();
        exit.oom_killed = Some(oom);
        assert_eq!(exit.short(), "killed by the memory limit");
        assert!(exit
            .describe()
            .ends_with("oom_kill 2) (code=killed, signal=KILL)"));
        exit.oom_killed = exit.oom_killed.map(OomKilled::by_the_host);
        assert_eq!(exit.short(), "killed by the host's OOM killer");
        assert_eq!(
            exit.describe(),
            "killed by the host's OOM killer (the host ran out of memory) \
             (code=killed, signal=KILL)"
        );
    }
}
