//! `unifs run` and `unifs guest …`: parse, call `guest`, print.

use super::print::{errln, outln};
use super::{output, Global};
use crate::guest::config::{GuestConfig, RootMount};
use crate::guest::keeper_report;
use crate::guest::lifecycle::{self, Dirs, Stopped};
use crate::guest::overlay::OverlayRoot;
use crate::guest::spec::{
    check_hostname, check_workdir, default_stop_signal, parse_all, parse_signal, HOST_NAME_MAX,
};
use crate::guest::{caps, parse_memory, GuestSpec, Limits, NetMode, NetSpec, SyscallFilter};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
#[command(after_help = RUN_EXAMPLES)]
pub struct RunArgs {
    // Boxed: these options would make `Command` very uneven in size.
    #[command(flatten)]
    pub opts: Box<RunOptions>,
}

/// Options of a one-shot guest.
#[derive(clap::Args, Debug)]
pub struct RunOptions {
    /// The guest's root directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// How the root is served: overlay (the copy-on-write unifs mount, so a
    /// write to a file shared through the store gives the guest a private
    /// copy) or bind (the directory itself; only for a root that shares no
    /// file with a store: a root the store records as a guest is refused).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = RootMount::Overlay)]
    pub root_mount: RootMount,
    /// Host name inside the guest [default: the root's directory name].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Network: host (share the host's), none (loopback only), veth (own addresses).
    #[arg(long, value_enum, default_value_t = NetMode::None)]
    pub net: NetMode,
    /// With --net veth: the guest's address, ADDR/PREFIX (IPv4 or IPv6).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<String>,
    /// With --net veth: the host end's address, ADDR/PREFIX, in the guest's subnet (routed).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub host_ip: Option<String>,
    /// With --net veth: put the host end on this bridge instead.
    #[arg(long, value_name = "BRIDGE")]
    pub bridge: Option<String>,
    /// With --net veth: the guest's default gateway, an address in its subnet.
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<String>,
    /// With --net veth and an IPv4 --host-ip: the host forwards the guest's
    /// packets (net.ipv4.conf.ve-NAME.forwarding=1), for NAT beyond the host.
    #[arg(long)]
    pub forward: bool,
    /// With --net veth and --bridge: give eth0 a MAC address unifs derives
    /// from the run's name and /etc/machine-id, and lock the host end's
    /// bridge port to it (learning off, locked on, a static sticky fdb
    /// entry; Linux 5.18+, no vlan_filtering): frames the guest sends from
    /// any other MAC address are dropped, so it cannot take another
    /// guest's frames from the bridge, and so are VLAN-tagged ones,
    /// link-control ones (pause, LACP, 802.1X, LLDP) and ones to
    /// 01:80:c2:… (STP, MVRP), by an nftables netdev table
    /// unifs-lock-INDEX-ve-NAME (INDEX the host end's interface index;
    /// needs nft). The run names the address as it starts, with its host
    /// end (on a terminal, or with -v).
    #[arg(long)]
    pub lock_mac: bool,
    /// Bind a host path into the guest (repeatable).
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    pub binds: Vec<String>,
    /// Mount a fresh tmpfs at DIR in the guest (repeatable), SIZE bytes at
    /// most (256M, 1G) [default: half of RAM, counted in --memory].
    #[arg(long = "tmpfs", value_name = "DIR[:SIZE]")]
    pub tmpfs: Vec<String>,
    /// Give the guest a character device of the host's, at the same path
    /// below /dev (repeatable; /dev/net/tun, /dev/fuse); `:ro` denies
    /// writes to it. Not a block device: that is the host's disk.
    #[arg(long = "device", value_name = "PATH[:ro]")]
    pub devices: Vec<String>,
    /// Make the guest's tree read-only (its root and the filesystems below
    /// it); /dev, /proc, /run, --tmpfs and --bind mounts are as ever.
    #[arg(long)]
    pub read_only: bool,
    /// Set an environment variable in the guest (repeatable; KEY must not
    /// be empty nor hold white space).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Numeric user id the command runs as.
    #[arg(long, default_value_t = 0, value_parser = id_parser())]
    pub uid: u32,
    /// Numeric group id the command runs as.
    #[arg(long, default_value_t = 0, value_parser = id_parser())]
    pub gid: u32,
    /// The user the command runs as, USER or USER:GROUP (names or numbers),
    /// looked up in the guest's own /etc/passwd and /etc/group: its uid,
    /// group, supplementary groups, HOME, USER and LOGNAME.
    #[arg(long, short = 'u', value_name = "USER[:GROUP]", conflicts_with_all = ["uid", "gid"])]
    pub user: Option<String>,
    /// The command's working directory in the guest [default: the --user's
    /// home if it can be entered, else /].
    #[arg(long, short = 'w', value_name = "DIR")]
    pub chdir: Option<String>,
    /// Keep a capability beyond the default set (repeatable; `all` for all).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability of the default set (repeatable; `all` for all).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Memory limit (e.g. 256M, 2G); the kernel kills a process past it.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU time limit as a number of CPUs (e.g. 0.5).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads, the overlay daemon's
    /// included (at least 7 with the overlay root, 8 with --init).
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Relative block I/O weight, 10..=1000; it acts only where the disk's I/O
    /// scheduler is bfq (or, on cgroup v2, blk-iocost is on for it): a start
    /// warns where it is not.
    #[arg(long, value_name = "W")]
    pub io_weight: Option<u32>,
    /// A resource limit, NAME=SOFT[:HARD] (nofile=1024:4096, core=0,
    /// nproc=infinity; names as in `ulimit`/setrlimit(2): as, core, cpu,
    /// data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss,
    /// rtprio, rttime, sigpending, stack); repeatable [default: the
    /// launcher's].
    #[arg(long = "rlimit", value_name = "NAME=SOFT[:HARD]")]
    pub rlimits: Vec<String>,
    /// Run the command under a small init that forwards signals and reaps
    /// zombies (and continues the command when a terminal's Ctrl-Z stops it).
    #[arg(long)]
    pub init: bool,
    /// What a SIGTERM to `unifs run` is passed on as [default, by the
    /// command (an absolute path in the root): SIGRTMIN+3 for systemd,
    /// SIGINT for sysvinit, else SIGTERM itself].
    #[arg(long, value_name = "SIG")]
    pub stop_signal: Option<String>,
    /// The syscall filter the guest runs under (docs/security.md).
    #[arg(long, value_enum, value_name = "FILTER", default_value_t = SyscallFilter::Default)]
    pub syscall_filter: SyscallFilter,
    /// Where the keeper of a killed run reports what it could not clean up
    /// (run-PID-TAG.keeper), shown by the next `unifs run` or `guest start`
    /// with the same directory (`guest`'s runtime state directory).
    #[arg(
        long,
        env = "UNIFS_RUN_DIR",
        default_value = crate::guest::state::DEFAULT_RUN_DIR,
        value_name = "DIR",
        value_parser = any_path()
    )]
    pub run_dir: PathBuf,
    /// The command and its arguments, resolved inside the guest.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

const RUN_EXAMPLES: &str = "\
The root is served through the copy-on-write overlay (as `unifs mount` serves
it) for the life of the run, so files the root shares with other guests through
the store stay unchanged for them; --root-mount bind uses the directory itself.
The guest gets new mount, PID, UTS, IPC, cgroup and (unless --net host) network
namespaces, a fresh /proc (/proc/sys read-only), /sys read-only with its own
cgroup v2 group writable at /sys/fs/cgroup, a minimal /dev and a tmpfs /run; it
keeps a reduced capability set, with no_new_privs and a syscall filter
(--syscall-filter). The exit status is the command's (128+N for signal N);
133 when the guest rebooted itself, 0 when it halted (reboot(2): --cap-add
sys_boot), as systemd-nspawn; 101 when a thread of the run itself failed on
an internal error (a bug: it stops the guest first, if it still ran).
SIGTERM (as --stop-signal: SIGRTMIN+3 for systemd), SIGINT, SIGHUP and SIGQUIT
are passed on to the guest once its PID 1 takes them (up to 10 s); a second
one kills it outright (exit 137).
Started on a terminal, the guest gets a pty of its own /dev/pts (its user's),
proxied; the terminal's hang-up (or a SIGHUP) ends the run (exit 129).
A limit the host cannot apply is an error. Needs root. More in docs/guests.md
and docs/security.md.

Examples:
  unifs run --root /srv/guests/web1 -- /bin/sh
  unifs run --root R --memory 512M --pids 200 --cpus 1 -- make -C /src
  unifs run --root R --user builder --chdir /src --read-only --tmpfs /tmp:1G -- make
  unifs run --root R --net veth --ip 10.0.3.2/24 --host-ip 10.0.3.1/24 --init -- /usr/sbin/sshd -D";

/// Where named guests' configs and runtime state live.
#[derive(clap::Args, Debug, Clone)]
pub struct GuestDirs {
    /// Folder of guest configs, one NAME.toml each.
    #[arg(
        long,
        env = "UNIFS_CONFIG_DIR",
        default_value = "/etc/unifs/guests",
        value_name = "DIR",
        value_parser = any_path()
    )]
    pub config_dir: PathBuf,
    /// Runtime state: NAME/root (the mounted root), NAME/state.json, NAME/console.log.
    #[arg(
        long,
        env = "UNIFS_RUN_DIR",
        default_value = crate::guest::state::DEFAULT_RUN_DIR,
        value_name = "DIR",
        value_parser = any_path()
    )]
    pub run_dir: PathBuf,
}

/// A uid or gid: 4294967295 is -1, which setresuid(2) takes for
/// "unchanged", i.e. root.
fn id_parser() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(..i64::from(u32::MAX))
}

/// Who `guest exec`/`enter` runs the command as, and where.
#[derive(clap::Args, Debug)]
pub struct ExecUser {
    /// Run as this user of the guest, USER or USER:GROUP (names or numbers,
    /// looked up in the running guest's /etc/passwd and /etc/group; `enter`
    /// runs its login shell) [default: the user init runs as].
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// The working directory in the guest [default: with --user, that
    /// user's home if it can be entered, else /; without, init's].
    #[arg(long, short = 'w', value_name = "DIR")]
    pub chdir: Option<String>,
}

impl ExecUser {
    fn into_lifecycle(self) -> anyhow::Result<lifecycle::ExecAs> {
        if let Some(dir) = &self.chdir {
            check_workdir(dir)?;
        }
        Ok(lifecycle::ExecAs {
            user: self.user,
            workdir: self.chdir,
            login_shell: false,
        })
    }
}

/// A path, empty too: clap's own parser says "a value is required for
/// --run-dir" when it is UNIFS_RUN_DIR that is empty; `guest` says which.
fn any_path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// How `stop` and `restart` stop a guest.
#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(long, default_value_t = lifecycle::DEFAULT_STOP_TIMEOUT as f64)]
    timeout: f64,
    /// The signal init gets first [default: the stop_signal its config
    /// had at start, else SIGRTMIN+3 for systemd, SIGINT for sysvinit,
    /// SIGTERM for others].
    #[arg(long, value_name = "SIG")]
    signal: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum GuestCommand {
    /// Mount a guest's root and start its init in the background (started
    /// again by its keeper when it reboots itself: on_reboot in its config).
    ///
    /// Its keeper (unifs-keeper, init's parent; a service unit's main
    /// process) exits 0 once it has recorded init's end and stopped the
    /// guest, 101 when one of its threads failed on an internal error (it
    /// stops the guest first, if init still ran), 125 when its main thread
    /// did. Behind another
    /// command that holds the guest's lock (a `stop` at work) it says so
    /// and waits up to 70 s, or as long as a `stop` said it may take (its
    /// --timeout and 80 s).
    Start {
        #[command(flatten)]
        dirs: GuestDirs,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
        /// The keeper's start of a guest whose init (PID:START_TIME, as in
        /// its record) rebooted it: nothing is done if the guest was
        /// stopped or started since.
        #[arg(long, hide = true, value_name = "PID:START_TIME")]
        after_reboot: Option<lifecycle::Rebooted>,
    },
    /// Send init its stop signal (stop_signal; by default SIGRTMIN+3 for
    /// systemd, SIGINT for sysvinit, else SIGTERM), wait, kill what is left,
    /// unmount (killing the root's overlay daemon if processes wait on it
    /// in vain, or it outlives the unmount). A guest that is not running
    /// is said so, exit status 0: nothing to stop. Behind another command
    /// that holds the guest's lock (a `start` at work) it says so and waits
    /// up to 30 s in all, so that with its --timeout (10 s) and at most
    /// 45 s to end what is left it stays within a service manager's 90 s.
    Stop {
        #[command(flatten)]
        dirs: GuestDirs,
        #[command(flatten)]
        how: StopArgs,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
    },
    /// Stop the guest if it runs (as `stop`, waiting up to 30 s for another
    /// command), then start it again (as `start`)
    Restart {
        #[command(flatten)]
        dirs: GuestDirs,
        #[command(flatten)]
        how: StopArgs,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
    },
    /// Show what the guest's init wrote to its standard output and error,
    /// and what the guest wrote to its /dev/console (RUN_DIR/NAME/console.log;
    /// the one before is console.log.1, set aside at a start when over 4 MiB
    /// or while the guest runs at 8 MiB; the last boot's first 64 KiB are
    /// kept in console.log.boot, which --boot shows); control characters are
    /// shown as ^X on a terminal
    Logs {
        #[command(flatten)]
        dirs: GuestDirs,
        /// Show the log of the guest's overlay daemon instead
        /// (RUN_DIR/NAME/mount.log: its warnings, such as the open-file
        /// limit reached; set aside as mount.log.1 at a start when over 4 MiB).
        #[arg(long)]
        mount: bool,
        /// Show the first 64 KiB of the guest's last boot instead
        /// (RUN_DIR/NAME/console.log.boot, begun anew by each start and
        /// reboot, which a flood cannot push out; it may end mid-line), as
        /// `journalctl -b` shows a boot's lines. Not with -f: it takes
        /// nothing past its 64 KiB; `logs -f NAME` follows the console.
        #[arg(short, long, conflicts_with_all = ["mount", "follow"])]
        boot: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<u64>,
        /// Then print what it writes while it runs, until it stops or the
        /// reader of the output goes (`… -f NAME | head -1`).
        #[arg(short, long)]
        follow: bool,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
    },
    /// Open the guest's shell inside the running guest (with -u, that
    /// user's login shell from the guest's passwd).
    Enter {
        #[command(flatten)]
        dirs: GuestDirs,
        #[command(flatten)]
        who: ExecUser,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
    },
    /// Run a command inside the running guest; exits with its status
    /// (128+N for signal N; a SIGKILL of the memory limit's OOM killer is
    /// said on stderr).
    Exec {
        #[command(flatten)]
        dirs: GuestDirs,
        /// Give the command a terminal of the guest's own.
        #[arg(short, long)]
        tty: bool,
        #[command(flatten)]
        who: ExecUser,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
        /// The command and its arguments, resolved inside the guest.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Change the limits of a running guest in place (its config is left
    /// as it is: the next start applies the config's)
    Update {
        #[command(flatten)]
        dirs: GuestDirs,
        /// Memory limit (e.g. 256M, 2G).
        #[arg(long, value_name = "SIZE")]
        memory: Option<String>,
        /// CPU time limit as a number of CPUs (e.g. 0.5).
        #[arg(long, value_name = "N")]
        cpus: Option<f64>,
        /// Maximum number of processes and threads.
        #[arg(long, value_name = "N")]
        pids: Option<u64>,
        /// Relative block I/O weight, 10..=1000.
        #[arg(long, value_name = "W")]
        io_weight: Option<u32>,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
    },
    /// List a running guest's processes, seen from the host (its own PIDs
    /// too, as `vps` shows them): init first, `exec` sessions included
    Ps {
        #[command(flatten)]
        dirs: GuestDirs,
        /// Print the result as JSON (fields: docs/store-format.md).
        #[arg(long)]
        json: bool,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
    },
    /// List guests with their state, PID and resource use (and warn of
    /// keeper reports of killed `unifs run`s in the run dir).
    List {
        #[command(flatten)]
        dirs: GuestDirs,
        /// Print the result as JSON (fields: docs/store-format.md).
        #[arg(long)]
        json: bool,
    },
    /// Show one guest's state; exits 0 if running, 3 if stopped, 4 if running
    /// with its root lost (its overlay daemon died or is stopped; one that
    /// runs but is slow to answer is "root busy", exit 0) or if it was
    /// started from another PID namespace (its state unknown here). Warns
    /// of keeper reports in the run dir, as `list` does.
    Status {
        #[command(flatten)]
        dirs: GuestDirs,
        /// Print the result as JSON (fields: docs/store-format.md).
        #[arg(long)]
        json: bool,
        /// The guest: CONFIG_DIR/NAME.toml.
        name: String,
    },
}

pub fn run(g: &Global, a: RunArgs) -> anyhow::Result<ExitCode> {
    let a = *a.opts;
    crate::guest::require_mounted_root()?;
    // One read of the mount table for every path the run checks.
    let stalls = crate::fs::StallCheck::new().context("reading /proc/self/mountinfo")?;
    let root = match stalls
        .refuse(&a.root)
        .and_then(|()| std::fs::canonicalize(&a.root))
    {
        Ok(root) => root,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(crate::guest::Error::no_root(&a.root, None).into())
        }
        Err(e) => return Err(e).with_context(|| format!("guest root {}", output::path(&a.root))),
    };
    anyhow::ensure!(
        root != std::path::Path::new("/"),
        "guest root {} is {}",
        output::path(&a.root),
        crate::guest::config::HOST_ROOT
    );
    if a.root_mount == RootMount::Bind {
        crate::guest::check_bind_root(&g.store, &root, "--root-mount bind")?;
    }
    anyhow::ensure!(
        !a.run_dir.as_os_str().is_empty(),
        "the --run-dir path is empty (UNIFS_RUN_DIR set to an empty string, or --run-dir \"\"): \
         name a directory, or unset UNIFS_RUN_DIR for the default"
    );
    // Its keeper works from /.
    let run_dir = std::path::absolute(&a.run_dir)
        .and_then(|d| stalls.refuse(&d).map(|()| d))
        .with_context(|| format!("--run-dir {}", output::path(&a.run_dir)))?;
    // A killed run's keeper reports there, and the next run reads and
    // removes what it finds: never in a guest tree's view, where that guest
    // reads and changes it (a report of its own making shown as the
    // keeper's).
    if let Some((mount, backing)) = crate::guest::state::in_unifs_view(&run_dir) {
        anyhow::bail!(
            "--run-dir {}: it lies in the unifs mount at {}, a guest tree's view (it is {} \
             there): a killed run's keeper leaves its report there, where that guest could read \
             and change it; name a directory outside any guest tree (the default is {})",
            output::path(&run_dir),
            output::path(&mount),
            output::path(&backing),
            crate::guest::state::DEFAULT_RUN_DIR
        );
    }
    // Looked up (as the guest's /etc/passwd is read later anyway: beneath
    // the root, regular files only) before anything changes, such as the
    // keeper reports shown and removed: CAP_SETUID only for another user
    // than root.
    let account = match &a.user {
        Some(user) => Some(crate::guest::user::resolve(&root, user)?),
        None => None,
    };
    if let Some(acct) = &account {
        super::privilege::require("run", &super::privilege::for_uid(acct.uid), false, &[])?;
    }
    crate::guest::keeper_report::tell_reports(&run_dir);
    // The pid alone is not unique: a run in a PID namespace of its own may
    // be pid 1 as well, and two runs must never share their cgroups.
    let name = format!(
        "run-{}-{:08x}",
        std::process::id(),
        crate::sys::random_u64() as u32
    );
    let mut spec = GuestSpec::new(&name, root.clone(), a.command.clone());
    spec.hostname = a.hostname.clone().unwrap_or_else(|| {
        let mut name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "guest".into());
        // A directory name may be longer than the kernel takes.
        while name.len() > HOST_NAME_MAX {
            name.pop();
        }
        name
    });
    check_hostname(&spec.hostname)?;
    spec.net = NetSpec {
        mode: a.net,
        ip: a.ip.clone(),
        host_ip: a.host_ip.clone(),
        bridge: a.bridge.clone(),
        gateway: a.gateway.clone(),
        forward: a.forward,
        lock_mac: a.lock_mac,
    };
    spec.binds = parse_all(&a.binds)?;
    for b in &spec.binds {
        stalls
            .refuse(&b.src)
            .with_context(|| format!("bind source {}", output::path(&b.src)))?;
    }
    spec.tmpfs = parse_all(&a.tmpfs)?;
    spec.devices = crate::guest::devices::parse_devices(&a.devices)?;
    spec.read_only = a.read_only;
    spec.rlimits = parse_all(&a.rlimits)?;
    spec.env = a.env.clone();
    for e in &spec.env {
        if let Some(reason) = crate::guest::spec::env_entry_fault(e) {
            anyhow::bail!("--env {e:?}: {reason}");
        }
    }
    spec.uid = a.uid;
    spec.gid = a.gid;
    if let Some(acct) = account {
        spec.set_user(acct);
    }
    if let Some(dir) = &a.chdir {
        check_workdir(dir)?;
        spec.workdir = Some(dir.clone());
    }
    spec.caps = caps::within_held(
        &a.cap_add,
        caps::keep_mask(&a.cap_add, &a.cap_drop)?,
        caps::held(),
    )?;
    spec.limits = Limits {
        memory: a.memory.as_deref().map(parse_memory).transpose()?,
        cpus: a.cpus,
        pids: a.pids,
        io_weight: a.io_weight,
    };
    spec.init = a.init;
    spec.syscall_filter = a.syscall_filter;
    spec.stop_signal = match &a.stop_signal {
        Some(sig) => parse_signal(sig).context("--stop-signal")?,
        None => default_stop_signal(&root, &a.command[0]),
    };
    spec.limits.check()?;
    let daemon = (a.root_mount == RootMount::Overlay).then(|| {
        let threads = crate::fs::MountOptions::default().threads;
        (crate::fs::ready::Daemon::Run, threads)
    });
    spec.limits.check_pids_room(daemon, spec.init)?;
    crate::guest::lifecycle::warn_daemon_unshielded(None, &spec.limits, a.root_mount);
    if spec.limits.io_weight.is_some() {
        if let Some(why) = crate::guest::cgroup::io_weight_inert(&root) {
            tracing::warn!("--io-weight: {why}");
        }
    }
    // Before the overlay is mounted: its daemon joins them (a host whose
    // cgroups cannot hold the guest is refused at once).
    let cgroup =
        crate::guest::cgroup::Cgroup::create(&spec.name, &spec.limits, &spec.devices, true)?;
    // Mounted for the whole run; dropped (unmounted) after the guest is gone,
    // on an error too; the groups go after it.
    let code = match a.root_mount {
        RootMount::Overlay => {
            overlay_root(g, &root, &spec, &cgroup, &run_dir, &stalls).and_then(|overlay| {
                let code = crate::guest::launch::run(&spec, Some(&overlay), &cgroup, &run_dir);
                drop(overlay);
                Ok(code?)
            })
        }
        RootMount::Bind => {
            crate::guest::launch::run(&spec, None, &cgroup, &run_dir).map_err(Into::into)
        }
    };
    cgroup.kill_all();
    cgroup.end_daemon();
    cgroup.remove();
    exit_code(code?)
}

/// The checks `unifs mount` makes, then the overlay over `root`.
fn overlay_root(
    g: &Global,
    root: &std::path::Path,
    spec: &crate::guest::GuestSpec,
    cgroup: &crate::guest::cgroup::Cgroup,
    run_dir: &std::path::Path,
    stalls: &crate::fs::StallCheck,
) -> anyhow::Result<OverlayRoot> {
    if !nix::unistd::geteuid().is_root() {
        return Err(crate::guest::Error::Permission("starting a guest").into());
    }
    anyhow::ensure!(root.is_dir(), crate::guest::Error::no_root(root, None));
    super::refuse_stalled_store(&g.store, stalls)?;
    super::mount::check_not_store(&g.store, root)?;
    super::mount::check_dev_fuse()?;
    super::mount::check_store(&g.store, root).map_err(|e| {
        match e.downcast_ref::<crate::store::Error>() {
            // `run`'s other ways out: its store may be any, or none.
            Some(crate::store::Error::CrossDevice { .. }) => anyhow::anyhow!(
                "{e}, or name a store there (--store or UNIFS_STORE); a root that shares no \
                 file with a store can run without the overlay (--root-mount bind)"
            ),
            _ => e,
        }
    })?;
    // What the run uses of the host's tree once its namespace is made.
    let used = crate::guest::host_mounts::Used {
        trees: spec.binds.iter().map(|b| b.src.clone()).collect(),
        paths: [g.store.clone(), run_dir.to_path_buf()]
            .into_iter()
            .chain(cgroup.groups.iter().cloned())
            .chain(crate::guest::net::host_paths_used(&spec.net))
            .collect(),
    };
    Ok(OverlayRoot::mount(
        root,
        &crate::fs::MountOptions::default(),
        cgroup.open_daemon_procs()?,
        &used,
    )?)
}

pub fn guest(g: &Global, c: GuestCommand) -> anyhow::Result<ExitCode> {
    // The guest named, but for `list`.
    let (d, name) = match &c {
        GuestCommand::Start { dirs, name, .. }
        | GuestCommand::Stop { dirs, name, .. }
        | GuestCommand::Restart { dirs, name, .. }
        | GuestCommand::Logs { dirs, name, .. }
        | GuestCommand::Enter { dirs, name, .. }
        | GuestCommand::Exec { dirs, name, .. }
        | GuestCommand::Update { dirs, name, .. }
        | GuestCommand::Ps { dirs, name, .. }
        | GuestCommand::Status { dirs, name, .. } => (dirs, Some(name)),
        GuestCommand::List { dirs, .. } => (dirs, None),
    };
    let stalls = crate::fs::StallCheck::new().context("reading /proc/self/mountinfo")?;
    for (dir, option, env) in [
        (&d.config_dir, "--config-dir", "UNIFS_CONFIG_DIR"),
        (&d.run_dir, "--run-dir", "UNIFS_RUN_DIR"),
    ] {
        anyhow::ensure!(
            !dir.as_os_str().is_empty(),
            "the {option} path is empty ({env} set to an empty string, or {option} \"\"): \
             name a directory, or unset {env} for the default"
        );
        // Every command reads them first: refused, not waited on for good.
        stalls
            .refuse(dir)
            .with_context(|| format!("{option} {}", output::path(dir)))?;
    }
    if let Some(name) = name {
        // Its own run dir too: a FUSE mount at RUN_DIR/NAME whose daemon
        // does not answer, where each of them looks first.
        let dir = d.run_dir.join(name);
        stalls
            .refuse(&dir)
            .with_context(|| format!("the run dir of guest {name}, {}", output::path(&dir)))?;
    }
    let dirs = |d: GuestDirs| Dirs {
        config_dir: d.config_dir,
        run_dir: d.run_dir,
        store: g.store.clone(),
    };
    match c {
        GuestCommand::Start {
            dirs: d,
            name,
            after_reboot: Some(of),
        } => {
            let cfg = match checked_config("guest start", &d, &name) {
                Ok(cfg) => cfg,
                Err(e) => {
                    let reason = format!("its config: {e:#}");
                    lifecycle::not_restarted(&dirs(d), &name, of, &reason)?;
                    return Err(e);
                }
            };
            match ended_if_interrupted(lifecycle::start_after_reboot(&dirs(d), &name, cfg, of))? {
                Ok(st) => outln!(
                    "guest {name} started again after its reboot ({} so far), init pid {}",
                    st.reboots.count,
                    st.pid
                ),
                Err(why) => errln!(
                    "guest {name} not started again after its reboot: {why}; `unifs guest \
                     start {name}` starts it"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Start {
            dirs: d,
            name,
            after_reboot: None,
        } => {
            let cfg = checked_config("guest start", &d, &name)?;
            let st = ended_if_interrupted(lifecycle::start(&dirs(d), &name, cfg))?;
            outln!("guest {name} started, init pid {}", st.pid);
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Stop { dirs: d, how, name } => {
            let (timeout, signal) = how.parse()?;
            let run = crate::guest::state::RunDir::new(&d.run_dir, &name);
            match lifecycle::stop(&dirs(d), &name, timeout, signal) {
                // Nothing to do is done, as an LSB init script's `stop` and
                // `systemctl stop` say: unifs-guest@.service's ExecStop
                // does not fail for a guest stopped by hand or halted.
                Err(crate::guest::Error::NotRunning { .. }) => {
                    match run.read_exit().filter(|e| e.stopped_by_keeper) {
                        Some(e) => outln!(
                            "guest {name} is not running (its init ended by itself: {}): \
                             nothing to stop",
                            e.describe()
                        ),
                        None => outln!("guest {name} is not running: nothing to stop"),
                    }
                }
                how => print_stopped(&name, how?),
            }
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Restart { dirs: d, how, name } => {
            let (timeout, signal) = how.parse()?;
            let cfg = checked_config("guest restart", &d, &name)?;
            // Said before the start, which may fail.
            let said = |how: Option<_>| {
                if let Some(how) = how {
                    print_stopped(&name, how);
                }
            };
            let st = lifecycle::restart(&dirs(d), &name, cfg, timeout, signal, said);
            let st = ended_if_interrupted(st)?;
            outln!("guest {name} started, init pid {}", st.pid);
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Logs {
            dirs: d,
            lines,
            follow,
            mount,
            boot,
            name,
        } => {
            use std::io::{IsTerminal, Write};
            use std::os::fd::AsFd;
            let mut stdout = std::io::stdout().lock();
            let terminal = stdout.is_terminal();
            let mut failed = None;
            // A character the last read cut, shown whole with the next.
            let mut cut = Vec::new();
            let mut out = |data: &[u8]| -> std::io::Result<()> {
                let written = match terminal {
                    true => stdout.write_all(&caret_escaped_on(&mut cut, data)),
                    false => stdout.write_all(data),
                };
                let written = written.and_then(|()| stdout.flush());
                if let Err(e) = &written {
                    failed = Some(std::io::Error::new(e.kind(), e.to_string()));
                }
                written
            };
            let sink = std::io::stdout();
            let sink = sink.as_fd();
            use crate::guest::logs::Log;
            let which = match (mount, boot) {
                (true, _) => Log::Mount,
                (_, true) => Log::Boot,
                _ => Log::Console,
            };
            crate::guest::logs::logs(&dirs(d), &name, lines, follow, which, &mut out, sink)?;
            // The log's own end cut a character (console.log.boot's 64 KiB):
            // shown as any byte that is no character is.
            if !cut.is_empty() {
                let _ = stdout.write_all(&caret_escaped(&cut));
                let _ = stdout.flush();
            }
            // A log that reached no reader fails as any command's output does
            // (a full disk); a reader gone (`| head`, a terminal hung up) ends
            // it quietly.
            match failed {
                Some(e) if !terminal => Ok(super::stdout_failed(e)),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        GuestCommand::Enter { dirs: d, who, name } => {
            let dirs = dirs(d);
            let st = joinable("guest enter", &dirs, &name, who.user.is_some())?;
            exit_code(lifecycle::enter(&dirs, &name, st, who.into_lifecycle()?)?)
        }
        GuestCommand::Exec {
            dirs: d,
            tty,
            who,
            name,
            command,
        } => {
            let dirs = dirs(d);
            let st = joinable("guest exec", &dirs, &name, who.user.is_some())?;
            exit_code(lifecycle::exec(
                &dirs,
                &name,
                st,
                command,
                tty,
                who.into_lifecycle()?,
            )?)
        }
        GuestCommand::Update {
            dirs: d,
            memory,
            cpus,
            pids,
            io_weight,
            name,
        } => {
            let changes = Limits {
                memory: memory.as_deref().map(parse_memory).transpose()?,
                cpus,
                pids,
                io_weight,
            };
            anyhow::ensure!(
                !changes.is_empty(),
                "nothing to change: give --memory, --cpus, --pids or --io-weight (the rest of \
                 its config, devices included, applies at its next start: guest restart {name})"
            );
            let now = lifecycle::update(&dirs(d), &name, &changes)?;
            outln!(
                "guest {name} updated; its limits now: {} (its config is unchanged)",
                describe_limits(&now)
            );
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Ps {
            dirs: d,
            json,
            name,
        } => {
            let all = lifecycle::processes(&dirs(d), &name)?;
            if json {
                outln!("{}", super::output::json(&all)?);
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "{:>8} {:>9} {:>6} {:>8} {:>8} S COMMAND",
                "PID",
                "GUEST-PID",
                "UID",
                "RSS",
                "TIME"
            );
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for p in &all {
                let time = p.cpu_secs.map(|t| {
                    let t = t as u64;
                    format!("{}:{:02}", t / 60, t % 60)
                });
                outln!(
                    "{:>8} {:>9} {:>6} {:>8} {:>8} {} {}",
                    p.pid,
                    or_dash(p.guest_pid.map(|g| g.to_string())),
                    or_dash(p.uid.map(|u| u.to_string())),
                    or_dash(p.rss_bytes.map(human_bytes)),
                    or_dash(time),
                    p.state.unwrap_or('?'),
                    crate::guest::ps::printable(&p.command)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::List { dirs: d, json } => {
            let dirs = dirs(d);
            // One read of the mount table for the states and the checks.
            let all = crate::fs::mountinfo::with_one_read(|| -> anyhow::Result<_> {
                let all = lifecycle::list(&dirs)?;
                // A stopped guest whose config would fail its start is listed
                // as any stopped guest: say so now, not at the next boot.
                // (Not one whose run dir does not answer: nothing of it is
                // looked into.)
                for s in all
                    .iter()
                    .filter(|s| !s.running && s.run_dir_stalled.is_none())
                {
                    use crate::guest::Error;
                    let checked = GuestConfig::load(&dirs.config_dir, &s.name)
                        .and_then(|cfg| lifecycle::check_paths(&dirs, &s.name, &cfg));
                    match checked {
                        Ok(()) | Err(Error::NoConfig { .. }) => {}
                        Err(e) => {
                            errln!("warning: {e} (`unifs guest start {}` would fail)", s.name)
                        }
                    }
                }
                Ok(all)
            })?;
            let keeper_reports = keeper_report::pending(&dirs.run_dir);
            warn_of_keeper_reports(&keeper_reports);
            for s in &all {
                warn_of_run_dir(s);
            }
            if json {
                // Each as `status --json` has it, the run dir's reports too.
                let all: Vec<StatusJson> = all
                    .iter()
                    .map(|status| StatusJson {
                        status,
                        keeper_reports: &keeper_reports,
                    })
                    .collect();
                outln!("{}", super::output::json(&all)?);
            } else {
                // Columns as wide as their longest cell ("stopped (stale
                // record)", 64-byte names).
                let name_w = all.iter().map(|s| s.name.len()).fold(20, usize::max);
                let state_w = all.iter().map(|s| state_word(s).len()).fold(8, usize::max);
                outln!(
                    "{:<name_w$} {:<state_w$} {:>8} {:>10} {:>6}",
                    "NAME",
                    "STATE",
                    "PID",
                    "MEMORY",
                    "PROCS"
                );
                for s in &all {
                    outln!(
                        "{:<name_w$} {:<state_w$} {:>8} {:>10} {:>6}",
                        s.name,
                        state_word(s),
                        s.pid.map_or("-".into(), |p| p.to_string()),
                        s.memory_bytes.map_or("-".into(), human_bytes),
                        s.processes.map_or("-".into(), |p| p.to_string()),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        GuestCommand::Status {
            dirs: d,
            json,
            name,
        } => {
            let dirs = dirs(d);
            let s = lifecycle::status(&dirs, &name)?;
            let keeper_reports = keeper_report::pending(&dirs.run_dir);
            warn_of_keeper_reports(&keeper_reports);
            warn_of_run_dir(&s);
            if let Some(e) = s
                .root_serving
                .and_then(|r| lifecycle::root_refusal(&name, r, lifecycle::ROOT_ASK))
            {
                errln!("warning: {e}");
            }
            if let Some(root) = s.root.as_ref().filter(|_| s.root_moved) {
                errln!(
                    "warning: guest {name} runs on the directory that was at {} when it started, \
                     which was moved or replaced since (the one there now is not its root); \
                     `unifs guest restart {name}` starts it on the one there now",
                    output::path(root)
                );
            }
            if let Some(why) = s.outdated_device_policy {
                errln!(
                    "warning: guest {name} was started by an older unifs: {why}; `unifs guest \
                     restart {name}` gives it this one's device policy (docs/guests.md, \
                     \"The device policy\")"
                );
            }
            if s.keeper_gone {
                errln!(
                    "warning: guest {name}'s keeper (its init's parent) is gone, killed: how its \
                     init ends will not be recorded, nor will its own reboot start it again; \
                     `unifs guest stop {name}` stops it, `unifs guest start {name}` then \
                     starts it with a keeper"
                );
            }
            if json {
                let s = StatusJson {
                    status: &s,
                    keeper_reports: &keeper_reports,
                };
                outln!("{}", super::output::json(&s)?);
            } else {
                outln!("name:    {}", s.name);
                outln!("state:   {}", state_word(&s));
                if let Some(p) = s.pid {
                    outln!("pid:     {p}");
                }
                if let Some(r) = &s.root {
                    match s.root_moved {
                        true => outln!("root:    {} (moved or replaced since)", output::path(r)),
                        false => outln!("root:    {}", output::path(r)),
                    }
                }
                if let Some(m) = s.memory_bytes {
                    outln!("memory:  {}", human_bytes(m));
                }
                if let Some(n) = s.oom_kills {
                    outln!(
                        "oom:     {n} of its processes killed by the memory limit or the \
                         host's OOM killer since it was started (its own reboots included)"
                    );
                }
                if let Some(p) = s.processes {
                    outln!("procs:   {p}");
                }
                if let Some(u) = s.uptime_secs {
                    outln!("uptime:  {u}s");
                }
                if let Some(l) = &s.limits {
                    outln!("limits:  {}", describe_limits(l));
                }
                if let Some(i) = &s.host_interface {
                    outln!("net:     veth, host end {i}");
                }
                match &s.mac_address {
                    Some(m) if s.mac_address_derived => outln!(
                        "mac:     {m} (derived) (eth0's, as this host's machine-id gives it now: \
                         the older unifs that started it recorded none)"
                    ),
                    Some(m) => outln!("mac:     {m} (eth0, its bridge port locked to it)"),
                    None => {}
                }
                if let Some(n) = s.reboots.filter(|&n| n > 0) {
                    outln!("reboots: {n} (its own, each followed by a start)");
                }
                if let Some(e) = &s.last_exit {
                    outln!("exit:    {} (init pid {})", e.describe(), e.pid);
                    if let Some(why) = &e.not_restarted {
                        outln!("         not started again: {why}");
                    }
                    match &e.keeper_failed {
                        Some(why) if e.keeper_failed_after_end => outln!(
                            "         its keeper failed once init had ended (nothing to stop): \
                             {why}"
                        ),
                        Some(why) => outln!("         stopped by its keeper, which failed: {why}"),
                        None => {}
                    }
                }
                if let Some(l) = &s.mount_log {
                    outln!(
                        "overlay: its daemon logged warnings in {} (guest logs --mount {name})",
                        l.display()
                    );
                }
            }
            // As `systemctl is-active`: 0 only for a guest that serves. One
            // whose root is lost runs, but none of its files can be reached;
            // 4, not 3: `start` would refuse it (it runs), `restart` helps.
            // Started from another PID namespace: 4 too, as LSB's
            // "status unknown" (it may run; nothing here can tell).
            // Its run dir covered: `stop` and `start` refuse it, its root
            // is not asked: unknown, as another namespace's.
            Ok(ExitCode::from(match s.running {
                true if s.root_lost || s.other_pid_ns || s.run_dir_covered.is_some() => 4,
                true => 0,
                false => 3,
            }))
        }
    }
}

/// The config `guest start` or `restart` (`command`) starts the guest
/// `name` from, read once, and checked for what it needs of this process
/// ([`super::privilege::configured`]). Only root gets here: the rest of
/// what the command needs was checked before.
fn checked_config(command: &str, d: &GuestDirs, name: &str) -> anyhow::Result<GuestConfig> {
    let mut cfg = GuestConfig::load(&d.config_dir, name)?;
    cfg.look_up_user(&d.config_dir.join(format!("{name}.toml")))?;
    super::privilege::require(command, &super::privilege::configured(&cfg), false, &[])?;
    Ok(cfg)
}

/// The runtime record of the running guest `name` that `guest exec` or
/// `enter` (`command`) joins, read once, and checked for what joining it
/// needs of this process ([`super::privilege::recorded`]), as
/// [`checked_config`] is for a start.
fn joinable(
    command: &'static str,
    dirs: &Dirs,
    name: &str,
    user_given: bool,
) -> anyhow::Result<crate::guest::state::State> {
    let word = command.trim_start_matches("guest ");
    let st = lifecycle::joinable(dirs, name, word)?;
    super::privilege::require(
        command,
        &super::privilege::recorded(&st, user_given),
        false,
        &[],
    )?;
    Ok(st)
}

/// `guest status --json` (and each of `list --json`): the guest's status,
/// and the run dir's keeper reports (docs/store-format.md).
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    status: &'a lifecycle::Status,
    keeper_reports: &'a [keeper_report::KeeperReport],
}

/// `guest list` and `status` warn of each keeper report in the run dir
/// (left for the next run or start to show and remove): a keeper that
/// could not end what a killed `unifs run` left is a host's business.
fn warn_of_keeper_reports(reports: &[keeper_report::KeeperReport]) {
    for line in reports.iter().flat_map(keeper_report::describe) {
        errln!("warning: {line}");
    }
}

/// `guest list` and `status` say why a guest's run dir tells nothing, or
/// a running guest has no record, and what to do.
fn warn_of_run_dir(s: &lifecycle::Status) {
    let name = &s.name;
    if let Some(why) = &s.run_dir_stalled {
        errln!(
            "warning: guest {name}: its run dir is not looked into: {why}; its state is \
             unknown till then"
        );
    }
    if let (Some(cover), Some(fstype)) = (&s.run_dir_covered, &s.run_dir_cover_type) {
        errln!(
            "warning: guest {name}: its run dir is covered by the {fstype} mount at {cover}, \
             made over it since the guest started: its record, console.log and root's mount \
             are under that mount (the record is read through the directory its keeper holds \
             open, while it runs), and `stop`, `start` and `update` refuse it; unmount it \
             (`umount {cover}`), and the guest is seen again as it is"
        );
    }
    if let Some(why) = s.unrecorded_why.as_ref().filter(|_| s.unrecorded) {
        errln!(
            "warning: guest {name} runs without a runtime record: {why}; the processes in its \
             cgroups ({} of them) are taken for the guest, but `exec`, `enter`, `ps` and \
             `update` need the record: `unifs guest stop {name}` ends them and cleans up, \
             then `unifs guest start {name}` starts it anew",
            s.processes.unwrap_or_default()
        );
    }
}

fn state_word(s: &lifecycle::Status) -> String {
    if s.run_dir_stalled.is_some() {
        return "unknown (run dir does not answer)".into();
    }
    let mut why = Vec::new();
    if s.stale {
        why.push("stale record".to_string());
    }
    if let Some(e) = &s.last_exit {
        why.push(e.short());
    }
    match s.running {
        true if s.other_pid_ns => "running (started in another PID namespace)".into(),
        true if s.run_dir_covered.is_some() => "running (run dir covered)".into(),
        true if s.unrecorded => "running (unrecorded)".into(),
        true if s.root_lost => "running (root lost)".into(),
        true if s.root_busy => "running (root busy)".into(),
        true if s.frozen => "running (frozen)".into(),
        true if s.keeper_gone => "running (no keeper)".into(),
        true => "running".into(),
        false if s.starting => "starting".into(),
        false if s.run_dir_covered.is_some() => "stopped (run dir covered)".into(),
        false if why.is_empty() => "stopped".into(),
        false => format!("stopped ({})", why.join(", ")),
    }
}

fn describe_limits(l: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(m) = l.memory {
        parts.push(format!("memory {}", human_bytes(m)));
    }
    if let Some(c) = l.cpus {
        parts.push(format!("cpus {c}"));
    }
    if let Some(p) = l.pids {
        parts.push(format!("pids {p}"));
    }
    if let Some(w) = l.io_weight {
        parts.push(format!("io-weight {w}"));
    }
    match parts.is_empty() {
        true => "none".into(),
        false => parts.join(", "),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        b => format!("{}K", b >> 10),
    }
}

fn exit_code(code: i32) -> anyhow::Result<ExitCode> {
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

impl StopArgs {
    /// `--timeout` and `--signal`, checked.
    fn parse(&self) -> anyhow::Result<(Duration, Option<i32>)> {
        let timeout = Duration::try_from_secs_f64(self.timeout).map_err(|_| {
            // Past the range too (`1e20`, `inf`): ">= 0" alone read
            // as if the number were negative.
            anyhow::anyhow!("--timeout {}: expected seconds, 0 to 1.8e19", self.timeout)
        })?;
        let signal = self
            .signal
            .as_deref()
            .map(parse_signal)
            .transpose()
            .context("--signal")?;
        Ok((timeout, signal))
    }
}

/// A start that a signal interrupted (and that undid what it did) says so,
/// then ends by that signal, as it would have without holding it: a shell
/// or systemd sees it ended by it.
fn ended_if_interrupted<T>(r: Result<T, crate::guest::Error>) -> Result<T, crate::guest::Error> {
    if let Err(e @ crate::guest::Error::Interrupted { signal, .. }) = &r {
        errln!("unifs: {e}");
        crate::guest::end_by(*signal);
    }
    r
}

fn print_stopped(name: &str, how: Stopped) {
    match how {
        Stopped::Clean => outln!("guest {name} stopped"),
        Stopped::Killed(None) => {
            outln!("guest {name} stopped (processes left after its init ended, killed)")
        }
        Stopped::Killed(Some(o)) => {
            let signal = crate::guest::spec::signal_name(o.signal);
            let why = match o.takes_signal {
                false => format!(
                    "its init does not catch {signal}, and a PID 1 ignores a signal it does not \
                     catch: set stop_signal in its config to one it ends on (docs/guests.md), \
                     or stop it with --signal"
                ),
                true => format!(
                    "its init took {signal} but did not end within {} s: give it longer \
                     (--timeout), or set stop_signal in its config to one it ends on \
                     (docs/guests.md)",
                    o.timeout.as_secs_f64()
                ),
            };
            outln!("guest {name} stopped (killed after the timeout: {why})")
        }
        Stopped::WasStale => {
            outln!("guest {name} was not running; its stale runtime record was removed")
        }
        Stopped::Unrecorded => outln!(
            "guest {name} stopped (it ran without a runtime record, left by an interrupted start)"
        ),
        Stopped::LeftGroups => outln!(
            "guest {name} was not running; the empty cgroups an interrupted start left were removed"
        ),
        Stopped::Meanwhile => {
            outln!("guest {name} stopped (by another `guest stop` that ran meanwhile)")
        }
        Stopped::Ended(how) => outln!(
            "guest {name} was not running: its init ended by itself ({how}), and its keeper \
             stopped it"
        ),
    }
}

/// `data` with its control characters (but newline and tab) shown as `cat
/// -v` shows them (`^[`, `^M`, `^?`), and the C1 ones (U+0080 to U+009F)
/// and bytes that are no UTF-8 as `?`: a guest's output must not drive the
/// host's terminal. (A character cut in two by the end of `data` shows as
/// `?` too.)
fn caret_escaped(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' | '\t' => out.push(c as u8),
                '\0'..='\x1f' | '\x7f' => out.extend_from_slice(&[b'^', c as u8 ^ 0x40]),
                '\u{80}'..='\u{9f}' => out.push(b'?'),
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out.extend(std::iter::repeat_n(b'?', chunk.invalid().len()));
    }
    out
}

/// [`caret_escaped`] for `data` read on from where `cut` was: a UTF-8
/// character that a read's end cut (a log read 64 KiB at a time) is
/// kept in `cut`, to be shown whole with the next read's first bytes,
/// not as a `?` for each of its parts.
fn caret_escaped_on(cut: &mut Vec<u8>, data: &[u8]) -> Vec<u8> {
    cut.extend_from_slice(data);
    let mut whole = std::mem::take(cut);
    // A cut character's first byte is one of the last three.
    let cut_at = (whole.len().saturating_sub(3)..whole.len())
        .find(|&i| std::str::from_utf8(&whole[i..]).is_err_and(|e| starts_a_character(&e)));
    if let Some(at) = cut_at {
        *cut = whole.split_off(at);
    }
    caret_escaped(&whole)
}

/// Whether bytes that `from_utf8` failed on with `e` begin a character
/// that only lacks its end.
fn starts_a_character(e: &std::str::Utf8Error) -> bool {
    e.valid_up_to() == 0 && e.error_len().is_none()
}

#[cfg(test)]
mod tests {
    use super::{caret_escaped, caret_escaped_on};

    #[test]
    fn a_character_cut_between_reads_is_shown_whole() {
        let e = "é€😀".as_bytes();
        let mut cut = Vec::new();
        let mut shown = caret_escaped_on(&mut cut, &e[..1]);
        shown.extend(caret_escaped_on(&mut cut, &e[1..4]));
        shown.extend(caret_escaped_on(&mut cut, &e[4..8]));
        shown.extend(caret_escaped_on(&mut cut, &e[8..]));
        assert_eq!((shown.as_slice(), cut.as_slice()), (e, &b""[..]));
        // No character: shown at once.
        assert_eq!(caret_escaped_on(&mut cut, b"a\xff"), b"a?");
        assert!(cut.is_empty());
    }

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(caret_escaped(b"ok\tline\n"), b"ok\tline\n");
        assert_eq!(caret_escaped(b"\x1b[2J\r\x7f"), b"^[[2J^M^?");
        assert_eq!(caret_escaped("\u{9b}2J é".as_bytes()), "?2J é".as_bytes());
        assert_eq!(caret_escaped(b"\x9b"), b"?");
        assert_eq!(
            caret_escaped("“quoted” ✓".as_bytes()),
            "“quoted” ✓".as_bytes()
        );
    }
}
