//! Named guests: start, stop, exec/enter, status. A guest runs while the init
//! recorded in its runtime state lives. When init ends by itself its keeper
//! stops the guest (`stop_ended`); a record whose init died without it
//! (its keeper killed) is stale and is cleaned up (root unmounted, cgroups
//! removed) by the next start or stop.

use super::cgroup::Cgroup;
use super::config::{check_name, GuestConfig, OnReboot, RootMount};
use super::launch::{self, Stdio};
use super::oom_watch::OomWatch;
use super::state::{self, RunDir, State};
use super::sys::{self, Forked, Linux};
use super::{console, rootfs, Error, GuestSpec, Limits, NetMode, Result};
use super::{keeper_panic, keeper_signals};
use nix::mount::{MntFlags, MsFlags};
use nix::pty::PtyMaster;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// Where configs and runtime state live, and how to mount an overlay root.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub config_dir: PathBuf,
    pub run_dir: PathBuf,
    /// The store, passed on to `unifs mount`.
    pub store: PathBuf,
}

/// Checked first, so the message is about root, not a file root may read.
fn require_root(what: &'static str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::Permission(what))
    }
}

/// An error reading what only root may read (the run dir is root's, mode
/// 0700) becomes the refusal `start` and `stop` give non-root, not a bare
/// EACCES on a file of it.
fn needs_root(what: &'static str, err: Error) -> Error {
    match &err {
        Error::Io { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied
                && !nix::unistd::geteuid().is_root() =>
        {
            Error::Permission(what)
        }
        _ => err,
    }
}

/// `guest start NAME`: mount the root, start init in the background, as
/// `cfg` (its config, read by the caller, which checked what it needs of
/// this process on it: read again here, an edit in between would start a
/// guest other than the one checked).
pub fn start(dirs: &Dirs, name: &str, cfg: GuestConfig) -> Result<State> {
    start_as(dirs, name, cfg, None)?.map_err(Error::Keeper)
}

/// The init that ended by its own reboot, which its keeper starts the guest
/// again after ([`start_after_reboot`]): its PID and start time, as in its
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebooted {
    pub pid: i32,
    pub start_time: u64,
}

impl std::str::FromStr for Rebooted {
    type Err = String;
    /// `PID:START_TIME`, as the keeper passes it.
    fn from_str(s: &str) -> std::result::Result<Rebooted, String> {
        let (pid, start) = s.split_once(':').ok_or("not PID:START_TIME")?;
        Ok(Rebooted {
            pid: pid.parse().map_err(|e| format!("{pid}: {e}"))?,
            start_time: start.parse().map_err(|e| format!("{start}: {e}"))?,
        })
    }
}

/// The keeper's start of a guest whose init `of` rebooted it (`on_reboot =
/// "restart"`): as `guest start`, from its config read now, unless the
/// guest was stopped or started by someone else meanwhile (its record is
/// no longer `of`'s) or it rebooted more than [`state::REBOOT_BURST`]
/// times within [`state::REBOOT_WINDOW`] s: then why not (`Err`), also
/// noted in its `exit.json`, as a start that fails is.
pub fn start_after_reboot(
    dirs: &Dirs,
    name: &str,
    cfg: GuestConfig,
    of: Rebooted,
) -> Result<std::result::Result<State, String>> {
    let started = start_as(dirs, name, cfg, Some(of));
    if let Err(e) = &started {
        let run = RunDir::new(&dirs.run_dir, name);
        let reason = format!("its start failed: {e}");
        match e {
            Error::Interrupted {
                init: Some(new), ..
            } => note_stopped_again(&run, *new, &reason),
            _ => note_not_restarted(&run, of, &reason),
        }
    }
    started
}

/// Adds why the guest is not running after its reboot to the end of `new`,
/// the init its start after the reboot ran and stopped again (cancelled):
/// the end recorded in `exit.json` once that init's keeper has reaped it
/// (waited for up to 10 s).
fn note_stopped_again(run: &RunDir, new: i32, reason: &str) {
    let mut exit = None;
    wait_until(Duration::from_secs(10), || {
        exit = run.read_exit().filter(|e| e.pid == new);
        exit.is_some()
    });
    if let Some(mut exit) = exit {
        exit.not_restarted = Some(reason.to_string());
        let _ = run.write_exit(&exit);
    }
}

/// The config of a guest whose init `of` rebooted it could not be read or
/// used (`reason`): noted in its `exit.json` unless it was stopped or
/// started meanwhile.
pub fn not_restarted(dirs: &Dirs, name: &str, of: Rebooted, reason: &str) -> Result<()> {
    let run = RunDir::new(&dirs.run_dir, name);
    let _lock = lock_guest(&run, name, "start", Some(of))?;
    if let Some(old) = rebooted_record(&run, name, of)? {
        stop_not_restarted(&run, &old, of, reason);
    }
    Ok(())
}

/// The guest whose init `of` (its record `old`) rebooted it is not started
/// again (`reason`): stopped as one that halted is ([`stop_ended`]), and
/// both noted in its `exit.json`. Under the guest's lock.
fn stop_not_restarted(run: &RunDir, old: &State, of: Rebooted, reason: &str) {
    let stopped = teardown(run, old, libc::SIGKILL, Duration::ZERO);
    if let Err(e) = &stopped {
        tracing::warn!("guest {}: cleaning up after its reboot: {e}", old.name);
    }
    if let Some(mut exit) = run
        .read_exit()
        .filter(|e| (e.pid, e.start_time) == (of.pid, of.start_time))
    {
        exit.not_restarted = Some(reason.to_string());
        match stopped {
            Ok(_) => exit.stopped_by_keeper = true,
            Err(e) => exit.not_stopped = Some(e.to_string()),
        }
        let _ = run.write_exit(&exit);
    }
}

/// The record of the init `of` that rebooted the guest, if it is still the
/// guest's: a `stop` (which may have ended it so: sysvinit's `ctrlaltdel`
/// line reboots), a `start` or a `restart` meanwhile removed or replaced it.
fn rebooted_record(run: &RunDir, name: &str, of: Rebooted) -> Result<Option<State>> {
    Ok(read_locked(run, name)?
        .0
        .filter(|old| (old.pid, old.start_time) == (of.pid, of.start_time) && !old.init_alive()))
}

/// Adds why the guest was not started again to the end of `of` recorded
/// in `exit.json` (if that is `of`'s).
fn note_not_restarted(run: &RunDir, of: Rebooted, reason: &str) {
    if let Some(mut exit) = run
        .read_exit()
        .filter(|e| (e.pid, e.start_time) == (of.pid, of.start_time))
    {
        exit.not_restarted = Some(reason.to_string());
        let _ = run.write_exit(&exit);
    }
}

/// [`start`], or with `rebooted` [`start_after_reboot`].
fn start_as(
    dirs: &Dirs,
    name: &str,
    cfg: GuestConfig,
    rebooted: Option<Rebooted>,
) -> Result<std::result::Result<State, String>> {
    require_root("starting a guest")?;
    rootfs::require_mounted_root()?;
    // A `systemctl stop` or Ctrl-C from here on waits for a point where
    // the start can be undone, rather than ending it with its guest half
    // made ([`spawn_init`], [`settle_held`]).
    keeper_signals::hold_in_start();
    let run = RunDir::new(&dirs.run_dir, name);
    let _lock = lock_guest(&run, name, "start", rebooted)?;
    // The tests' window for a `stop` in a start's first moments.
    crate::sys::test_stop!("UNIFS_TEST_START_LOCKED_STOP");
    let mut reboots = state::Reboots::default();
    if let Some(of) = rebooted {
        let Some(old) = rebooted_record(&run, name, of)? else {
            let reason = "it was stopped or started since (`guest stop` may have ended it so)";
            if run.read().ok().flatten().is_none() {
                note_not_restarted(&run, of, reason);
            }
            return Ok(Err(reason.into()));
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match old.reboots.after_one_more(now) {
            Some(more) => reboots = more,
            None => {
                let reason = format!(
                    "it rebooted more than {} times within {} s (a reboot loop?)",
                    state::REBOOT_BURST,
                    state::REBOOT_WINDOW
                );
                stop_not_restarted(&run, &old, of, &reason);
                return Ok(Err(reason));
            }
        }
    }
    if let (Some(old), _) = read_locked(&run, name)? {
        refuse_other_pid_ns(&old, "start")?;
        if old.init_alive() {
            return Err(Error::AlreadyRunning {
                name: name.into(),
                pid: old.pid,
            });
        }
        match rebooted {
            // Nothing unexpected: what its reboot left is cleaned up.
            Some(_) => tracing::info!("guest {name}: cleaning up after its reboot"),
            None => tracing::warn!(
                "guest {name}: removing stale runtime record (init pid {} is gone)",
                old.pid
            ),
        }
        teardown(&run, &old, libc::SIGTERM, Duration::ZERO)?;
    } else {
        kill_unrecorded(name, &run, Deadline::NONE)?;
        if root_mounted(&run.root())? {
            tracing::warn!("guest {name}: unmounting a root left from an unfinished start");
            unmount_root(&run.root(), cfg.root_mount, Deadline::NONE)?;
        }
        // Made anew below: one left kept an old start's limits (a memory
        // limit since taken out of the config). Empty ones only: a process
        // in the daemon's leaf need not be a daemon of ours (an operator's,
        // one a killed start left), and `Cgroup::create` moves it up.
        let left = Cgroup::tracked(&run.cgroup_name());
        if left.remove_left() {
            tracing::info!("guest {name}: removed the cgroups an unfinished start left");
        }
    }
    // Checked before anything is mounted.
    check_paths(dirs, name, &cfg)?;
    let spec = spec_of(&cfg, dirs, name)?;
    cfg.warn_raised_limits();
    cfg.warn_reboot_without_sys_boot(name, spec.caps);
    warn_daemon_unshielded(Some(name), &spec.limits, cfg.root_mount);
    warn_if_io_weight_inert(&spec.limits, &cfg.root);
    let in_config = |e| spec.in_its_config(e);
    spec.limits.check().map_err(in_config)?;
    let daemon = (cfg.root_mount == RootMount::Overlay).then(|| {
        let threads = crate::fs::MountOptions::default().threads;
        (crate::fs::ready::Daemon::Forked, threads)
    });
    spec.limits
        .check_pids_room(daemon, spec.init)
        .map_err(in_config)?;
    // Beside the sweep of killed runs' groups, what their keepers said.
    super::keeper_report::tell_reports(&dirs.run_dir);
    // Before the root is mounted: its overlay daemon joins them.
    // A hierarchy or controller missing is the host's to change.
    let cgroup = Cgroup::create(&run.cgroup_name(), &spec.limits, &spec.devices, true)
        .map_err(|e| spec.on_its_host(e))?;
    // The tests' window for a start killed between making its groups and
    // recording them.
    crate::sys::test_stop!("UNIFS_TEST_START_CGROUP_STOP");
    let root = run.root();
    if let Err(e) = std::fs::create_dir_all(&root) {
        cgroup.remove();
        return Err(Error::io("creating", &root, e));
    }
    // A failed start leaves nothing: no mount point, no log it made, no
    // groups.
    let had_logs = [run.console(), run.mount_log()].map(|l| l.exists());
    // (The mount log kept where an error names it.)
    let undo = |keep_mount_log: bool| {
        cgroup.kill_all();
        let _ = unmount_root(&root, cfg.root_mount, Deadline::NONE);
        cgroup.end_daemon();
        cgroup.remove();
        // Any record is this start's keeper's (the one before was torn
        // down above): one that failed once it had written it, init killed
        // just now. Left, it named a dead init (a stale record).
        let _ = std::fs::remove_file(run.state_file());
        // Never remove_dir_all: a root still mounted would be the guest's files.
        let _ = std::fs::remove_dir(&root);
        let had_logs = [had_logs[0], had_logs[1] || keep_mount_log];
        for (log, had) in [run.console(), run.mount_log()].iter().zip(had_logs) {
            if !had && std::fs::metadata(log).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(log);
            }
        }
    };
    if let Err(e) = mount_root(dirs, name, &cfg.root, &run, cfg.root_mount, &cgroup) {
        // A `unifs mount` that timed out may still have mounted it.
        undo(false);
        return Err(e);
    }
    // UNIFS_TEST_START_PAUSE_MS, UNIFS_TEST_START_STOP: the tests' window
    // to end the daemon here, or to look at the guest while it starts.
    crate::sys::test_pause!("UNIFS_TEST_START_PAUSE_MS");
    crate::sys::test_stop!("UNIFS_TEST_START_STOP");
    // Else init's set-up fails on a root that answers nothing (ENOTCONN),
    // said as a confusing "not a directory".
    // Its leaf empty first: that needs no fork, which the limit a start
    // failed under may refuse the probe (taken as an answer).
    let gone = || {
        cfg.root_mount == RootMount::Overlay
            && (cgroup.daemon_pids().is_empty()
                || state::root_health(&root, ROOT_ASK) == state::RootHealth::Lost)
    };
    let started = match gone() {
        true => Err(Error::OverlayGone {
            name: name.into(),
            log: run.mount_log(),
        }),
        false => spawn_init(Starting {
            dirs,
            cfg: &cfg,
            spec,
            run: &run,
            cgroup: &cgroup,
            reboots,
            held: Vec::new(),
        }),
    };
    match started {
        // Init runs, recorded: nothing to undo from here on.
        Ok(state) => settle_held(&run, state).map(Ok),
        Err(e) => {
            // One that died while init was set up: its end, not init's
            // set-up failing on a root that answers nothing. But a fork
            // that failed is said first, whichever came first: the limit
            // reached is what to raise, the daemon's end its consequence.
            // The tests' window on a start that failed, before it looks
            // at its daemon.
            crate::sys::test_stop!("UNIFS_TEST_START_FAILED_STOP");
            let died = gone();
            let e = match died {
                true if e.is_fork() => Error::KeeperFork(format!(
                    "{e}; the overlay daemon for guest {name} has exited too ({})",
                    super::error::log_end(&run.mount_log())
                )),
                true => Error::OverlayGone {
                    name: name.into(),
                    log: run.mount_log(),
                },
                false => e,
            };
            undo(died);
            // The mount point is gone with the failed start: name the
            // directory the init must be put in.
            Err(match e {
                Error::CommandNotFound { command, .. } => Error::CommandNotFound {
                    command,
                    root: cfg.root.clone(),
                },
                e => e,
            })
        }
    }
}

/// The runtime record, an unreadable one taken as none, and whether there
/// was such a one: one bad file must neither hide every guest from `list`
/// nor keep `stop` from ending its guest. Read without the guest's lock
/// (`lenient`), a warning names it; under the lock (start, stop) it is
/// also moved aside, and they go on as for a guest without a record (what
/// is in its cgroups is its).
fn read_record(run: &RunDir, name: &str, lenient: bool) -> Result<(Option<State>, bool)> {
    match run.read() {
        Err(Error::Record { path, reason }) if lenient => {
            tracing::warn!(
                "guest {name}: ignoring its unreadable runtime record {} ({reason}); \
                 `unifs guest stop {name}` ends what is left of the guest",
                path.display()
            );
            Ok((None, true))
        }
        Err(Error::Record { path, reason }) => {
            let kept = run.set_aside("unreadable")?;
            tracing::warn!(
                "guest {name}: its runtime record {} is unreadable ({reason}); moved to {}, \
                 going on as for a guest without one",
                path.display(),
                kept.display()
            );
            Ok((None, true))
        }
        Ok(Some(st)) if st.pid_ns_ended() => {
            let ns = st.pid_ns.unwrap_or_default();
            match lenient {
                true => tracing::warn!(
                    "guest {name}: its runtime record {} is of a PID namespace that has ended \
                     (pid:[{ns}]), and its processes with it; taken as no record: `unifs guest \
                     stop {name}` cleans up what is left",
                    run.state_file().display()
                ),
                false => {
                    let kept = run.set_aside("ended-pid-ns")?;
                    tracing::warn!(
                        "guest {name}: its runtime record is of a PID namespace that has ended \
                         (pid:[{ns}]), and its processes with it; moved to {}, going on as for \
                         a guest without one",
                        kept.display()
                    );
                }
            }
            Ok((None, true))
        }
        r => r.map(|st| (st, false)),
    }
}

fn read_lenient(run: &RunDir, name: &str) -> Result<(Option<State>, bool)> {
    read_record(run, name, true)
}

fn read_locked(run: &RunDir, name: &str) -> Result<(Option<State>, bool)> {
    read_record(run, name, false)
}

/// Kills processes of this guest that no runtime record names: a `start`
/// (or its keeper) killed after its init was running but before the record
/// was written leaves a live guest nobody knows of, which would run beside
/// the new one (and hold its veth name). Its wait for them draws from
/// `end`.
fn kill_unrecorded(name: &str, run: &RunDir, end: Deadline) -> Result<()> {
    let cgroup = Cgroup::tracked(&run.cgroup_name());
    let left = cgroup.pids();
    if left.is_empty() {
        return Ok(());
    }
    // Found before the kill, while the proof (its peer in their namespace)
    // lives: `ve-NAME` may be a guest's of that name from another run dir.
    let own_if = super::net::host_ifindex_owned_by(name, &left);
    tracing::warn!(
        "guest {name}: killing {} left from an unfinished start (pids {left:?})",
        crate::words::counted(left.len() as u64, "process", "processes")
    );
    cgroup.kill_all();
    if !wait_until(end.settling(Duration::from_secs(5)), || {
        cgroup.pids().is_empty()
    }) {
        return Err(survived(name, cgroup.pids(), None, &[]));
    }
    // It goes with their namespace, but asynchronously: a start right after
    // would find it taken.
    if let Some(index) = own_if {
        super::net::remove_host_if(name, index);
    }
    Ok(())
}

/// Whether a guest without a runtime record has processes or a mounted root.
fn unrecorded(run: &RunDir) -> bool {
    // A mount table not read: taken as mounted, so that what is left is
    // looked for rather than missed.
    !Cgroup::tracked(&run.cgroup_name()).pids().is_empty()
        || state::is_mounted(&run.root()).unwrap_or(true)
}

/// Whether a group of this guest's name is there (in any hierarchy): with
/// no record and no process, one a killed start left.
fn groups_left(run: &RunDir) -> bool {
    let groups = Cgroup::tracked(&run.cgroup_name()).groups;
    groups.iter().any(|g| g.exists())
}

/// `stop` of a guest a killed `start` left without a record: kills what is in
/// its cgroups, unmounts its root, removes its groups, each wait drawn from
/// the stop's one deadline `end`, as a recorded guest's [`teardown`]'s
/// (before 2026-12-06 its own bounds: 80 s after the --timeout). False if
/// there is nothing of it.
fn stop_unrecorded(dirs: &Dirs, name: &str, run: &RunDir, end: Deadline) -> Result<bool> {
    if !unrecorded(run) {
        return Ok(false);
    }
    // For the root's kind and the limits; the config may be gone.
    let cfg = GuestConfig::load(&dirs.config_dir, name).ok();
    kill_unrecorded(name, run, end)?;
    let how = cfg.as_ref().map_or(RootMount::Overlay, |c| c.root_mount);
    unmount_root(&run.root(), how, end)?;
    // (Not the whole spec: that looks into the guest's tree for its init.)
    let limits = cfg.and_then(|c| c.limits().ok()).unwrap_or_default();
    let cgroup = Cgroup::planned(&run.cgroup_name(), &limits);
    cgroup.end_daemon_within(|bound| end.settling(bound));
    cgroup.remove_within(end.settling(Duration::MAX));
    let _ = std::fs::remove_dir(run.root());
    Ok(true)
}

/// What a start's keeper starts init with ([`spawn_init`]).
struct Starting<'a> {
    dirs: &'a Dirs,
    cfg: &'a GuestConfig,
    spec: GuestSpec,
    run: &'a RunDir,
    cgroup: &'a Cgroup,
    /// The guest's reboots it was started again after, if this start is one.
    reboots: state::Reboots,
    /// The signals the start held for init until it forked the keeper.
    held: Vec<i32>,
}

/// Starts init through a keeper: a process of its own session that stays
/// init's parent until init ends, then records how it ended (`exit.json`).
/// `start` returns at once, and after that nobody else could see init's
/// exit status: the host's PID 1 would reap it. Forked twice, so the keeper
/// is no zombie of a caller that lives on.
fn spawn_init(mut start: Starting) -> Result<State> {
    let (cfg, run) = (start.cfg, start.run);
    let (report_r, report_w) = launch::report_channel()?;
    // The last moment before init: one to the start later stops the guest.
    if let Some(signal) = keeper_signals::cancelling() {
        return Err(Error::Interrupted {
            name: start.spec.name.clone(),
            signal,
            init: None,
        });
    }
    // Those the start held go with the keeper; those after the fork are
    // the keeper's own (`systemctl kill` reaches both): init gets each once.
    start.held = keeper_signals::take_held();
    // The signals the keeper passes on to init, held from its first
    // instruction: a `systemctl stop` or `kill` right after the start
    // waits for init instead of ending the keeper mid-way.
    let forked = keeper_signals::fork_holding();
    match forked.map_err(|e| Error::fork("forking the guest's keeper", e))? {
        Forked::Child => {
            let report = Some((report_w.as_raw_fd(), "E"));
            sys::in_child("the guest's keeper", report, move || {
                drop(report_r);
                match sys::fork() {
                    Ok(Forked::Child) => keep(start, report_w),
                    Ok(Forked::Parent(_)) => sys::exit_child(0),
                    Err(e) => {
                        let e = Error::fork("forking the guest's keeper (its second fork)", e);
                        let _ = nix::unistd::write(&report_w, format!("F{e}").as_bytes());
                        sys::exit_child(1)
                    }
                }
            })
        }
        Forked::Parent(first) => {
            drop(report_w);
            let _ = launch::wait_exit(first);
            let report = keeper_signals::read_report(report_r, &start.spec.name);
            let said = |msg: &[u8]| String::from_utf8_lossy(msg).into_owned();
            match report.split_first() {
                Some((b'K', _)) => run.read()?.ok_or_else(|| {
                    Error::Keeper("the guest's keeper started init but left no record".into())
                }),
                Some((b'N', command)) => Err(Error::CommandNotFound {
                    command: said(command),
                    root: cfg.root.clone(),
                }),
                Some((b'F', msg)) => Err(Error::KeeperFork(said(msg))),
                Some((_, msg)) => Err(Error::Keeper(said(msg))),
                None => Err(Error::Keeper(
                    "the guest's keeper process ended before it started init".into(),
                )),
            }
        }
    }
}

/// What became of the signals a `start` held while its keeper started init
/// (`st`): a cancelling one (SIGTERM, SIGINT, …: a `systemctl stop`
/// that came before the keeper could get its own, a Ctrl-C) stops the
/// guest again, as `guest stop` does, under the start's lock (a second
/// one kills it at once); the others came once the keeper was forked
/// (those before went with it), which gets its own of a `systemctl kill`:
/// not passed on twice, said.
fn settle_held(run: &RunDir, st: State) -> Result<State> {
    if let Some(signal) = keeper_signals::cancelling() {
        let again = keeper_signals::again(&st.name, signal);
        teardown_or_kill(run, &st, launch::HELD_SIGNAL_LIMIT, again)?;
        return Err(Error::Interrupted {
            name: st.name.clone(),
            signal,
            init: Some(st.pid),
        });
    }
    for sig in keeper_signals::take_held() {
        eprintln!(
            "unifs: guest {}: {} to `guest start` once its keeper ran is not passed on: \
             the keeper passes on what it is sent (a `systemctl kill` reaches it too); send \
             it there (its pid in {})",
            st.name,
            super::spec::signal_name(sig),
            run.keeper_pid_file().display()
        );
    }
    Ok(st)
}

/// The keeper ([`spawn_init`]): starts init and records it, lets go of all
/// `start` had open (its terminal or pipes, which whoever ran `start` waits
/// on; the guest's lock), tells `start`, then waits for init.
fn keep(start: Starting, report: OwnedFd) -> ! {
    let Starting {
        dirs,
        cfg,
        spec,
        run,
        cgroup,
        reboots,
        held,
    } = start;
    // Not the starter's terminal's: its Ctrl-C and hang-up are not for us.
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_name(c"unifs-keeper");
    // Nor is `start`'s end: a report to a `start` gone (Ctrl-C) fails, and
    // we go on keeping init. (Init's process resets it before its exec.)
    crate::sys::ignore_sigpipe();
    let stop_signal = spec.stop_signal;
    let name = spec.name.clone();
    crate::sys::test_panic!("keeper");
    // Init's end by SIGKILL is the OOM killer's if the kernel's log names
    // it (see OomWatch). Opened before init starts: a kill at once is in it.
    let oom_before = cgroup.oom_counts();
    let kernel_log = super::kernel_log::KernelLog::open();
    // Held open from here on: what we write once init ends goes into this
    // directory, whatever is mounted over its path meanwhile. Resolved
    // first (a relative run dir): we leave for / below.
    let own_dir = state::HeldRunDir::open(RunDir {
        dir: std::fs::canonicalize(&run.dir).unwrap_or_else(|_| run.dir.clone()),
    });
    let own_dir = match own_dir {
        Ok(dir) => dir,
        Err(e) => {
            let said = format!("Eopening the guest's run dir {}: {e}", run.dir.display());
            let _ = nix::unistd::write(&report, said.as_bytes());
            sys::exit_child(1)
        }
    };
    // Before init runs: `status` counts what is in it from then on.
    let tally_file = super::oom_watch::TallyFile::begin(&own_dir, reboots.count > 0)
        .map_err(|e| tracing::warn!("guest {name}: its count of OOM kills is not kept: {e}"))
        .ok();
    let (st, console, command_pid) = match start_init(cfg, spec, run, cgroup, reboots) {
        Ok(started) => started,
        Err(e) => {
            let said = match e {
                Error::CommandNotFound { command, .. } => format!("N{command}"),
                e if e.is_fork() => format!("F{e}"),
                e => format!("E{e}"),
            };
            let _ = nix::unistd::write(&report, said.as_bytes());
            sys::exit_child(1)
        }
    };
    // A new init runs: the last one's end no longer describes the guest. (A
    // start that failed keeps it: that start's own error was said to whoever
    // ran it.) Init's end is written only after we reap it, below. Here,
    // as all the keeper writes or removes from now on, through the
    // directory held: never into a mount made over its path.
    own_dir.remove("exit.json");
    sys::stdio_to_null();
    // As a daemon: its working directory would keep the filesystem `start`
    // ran in busy for the guest's life. A relative run dir was resolved.
    let run = own_dir.run.clone();
    // So are the dirs a start after the guest's reboot is given.
    let dirs = Dirs {
        config_dir: std::path::absolute(&dirs.config_dir).unwrap_or(dirs.config_dir.clone()),
        run_dir: run
            .dir
            .parent()
            .map_or(dirs.run_dir.clone(), Path::to_path_buf),
        store: std::path::absolute(&dirs.store).unwrap_or(dirs.store.clone()),
    };
    let _ = nix::unistd::chdir("/");
    let pid = Pid::from_raw(st.pid);
    // Before `start` returns: from then on a `systemctl kill` of the unit
    // (the keeper alone) reaches init, and the keeper goes on; one held
    // since the fork goes now. (Without, a signal ends the keeper as
    // before: init runs on, unkept.)
    keeper_signals::hand_on(&held);
    // A thread of ours that fails stops the guest (before the thread for
    // signals starts: its failure too), our main one as well.
    // Their lines go to the console log through the held directory.
    let console_log = own_dir.console_path();
    let on_panic =
        keeper_panic::stop_guest_on_thread_panic(pid, &name, console_log.clone(), stop_signal);
    let passing = keeper_signals::pass_on(pid, &name, console_log.clone()).map_err(|e| {
        tracing::warn!("guest {name}: signals to its keeper will not reach init: {e}")
    });
    // A `Type=forking` unit's main process from here on: the unit ends
    // with the keeper. (After a reboot this keeper's, written before the
    // start its predecessor became returns: systemd reads it again then.)
    own_dir.write_keeper_pid();
    // The tests' window on a `start` waiting for its keeper, init running.
    crate::sys::test_stop!("UNIFS_TEST_KEEPER_STOP");
    let _ = nix::unistd::write(&report, b"K");
    // The report (its EOF lets `start` return) and the lock among them.
    let mut console = console.and_then(|(master, log)| {
        super::relay::ConsoleRelay::new(master, log, console_log.clone())
    });
    let mut keep_fds: Vec<i32> = passing.into_iter().chain(on_panic.ok()).collect();
    keep_fds.push(own_dir.raw_fd());
    keep_fds.extend(console.iter().flat_map(|relay| relay.fds()));
    keep_fds.extend(kernel_log.iter().map(|log| log.fd()));
    keep_fds.extend(tally_file.iter().map(|file| file.fd()));
    keep_fds.extend(command_pid.iter().map(|said| said.as_raw_fd()));
    sys::close_fds_except(&keep_fds);
    let mut oom_watch = Some(super::oom_watch::OomWatch::start(
        cgroup.clone(),
        oom_before,
        kernel_log,
        tally_file,
    ));
    // The tests' way to make the keeper's own thread fail, init running.
    crate::sys::test_panic!("keeper-main");
    loop {
        let status = match &mut console {
            Some(relay) => relay.wait(pid),
            None => nix::sys::wait::waitpid(pid, None),
        };
        match status {
            Ok(status) => {
                if let Some(mut exit) = state::Exit::from_wait(status, st.start_time) {
                    // The tests' window for a thread of ours to fail with
                    // init reaped, before it is said (review_s46_keepers3).
                    crate::sys::test_pause!("UNIFS_TEST_REAPED_PAUSE_MS");
                    // Reaped: a thread failing from here on stops nothing.
                    keeper_panic::init_ended();
                    exit.oom_killed = oom_watch.take().and_then(|w| {
                        let (pids, signal) = init_killed(&st, &exit, command_pid.as_ref());
                        w.verdict(&pids, signal, cgroup.memory_limit())
                    });
                    note_keeper_failed(&mut exit);
                    let reboot = exit.shutdown == Some(state::Shutdown::Reboot);
                    let restart = cfg.on_reboot == OnReboot::Restart;
                    let again = reboot && restart && exit.keeper_failed.is_none();
                    if reboot && !again {
                        exit.not_restarted = Some(match restart {
                            true => "its keeper failed on an internal error".into(),
                            false => "its config says on_reboot = \"stop\"".into(),
                        });
                    }
                    let _ = own_dir.write_exit(&exit);
                    drop(console);
                    // The tests' window on a keeper whose init rebooted,
                    // its thread for signals at work.
                    if again {
                        crate::sys::test_pause!("UNIFS_TEST_REBOOT_PAUSE_MS");
                    }
                    // A run dir covered: a start by its path would be
                    // refused, and could record that nowhere but in the
                    // cover. Said here, and the guest left as stop_ended
                    // leaves it then. (A cover made after this look is
                    // the start's to refuse, unrecorded.)
                    let lost = again.then(|| own_dir.cut_off()).flatten();
                    if let Some(why) = &lost {
                        exit.not_restarted = Some(format!("{why}: not started again"));
                        let _ = own_dir.write_exit(&exit);
                    }
                    if again && lost.is_none() {
                        let e = start_again(&dirs, &name, &own_dir, &exit);
                        // Else the guest is left stale, its root mounted.
                        keeper_signals::block_again();
                        exit.not_restarted = Some(format!(
                            "its keeper could not run its start after the reboot: {e}"
                        ));
                        let _ = own_dir.write_exit(&exit);
                    }
                    // Its lock held to the end: a failure of ours until
                    // then goes into the record, while it is this init's.
                    let ended = stop_ended(&name, &own_dir, exit);
                    // The tests' way to make the keeper's own thread fail
                    // once it stopped its guest (review_s46_keepers3).
                    crate::sys::test_panic!("keeper-stopped");
                    keeper_signals::say_ignored(&name, pid, console_log);
                    own_dir.forget_keeper_pid();
                    // The tests' window for a thread of ours to fail
                    // before the keeper ends (review_s45_keepsmalls).
                    crate::sys::test_pause!("UNIFS_TEST_KEEPER_END_PAUSE_MS");
                    if let Some((mut exit, _lock)) = ended {
                        if exit.keeper_failed.is_none() && note_keeper_failed(&mut exit) {
                            let _ = own_dir.write_exit(&exit);
                        }
                    }
                    match keeper_panic::failed() {
                        Some(_) => sys::exit_child(keeper_panic::FAILED_EXIT),
                        None => sys::exit_child(0),
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                own_dir.forget_keeper_pid();
                sys::exit_child(1)
            }
        }
    }
}

/// Which processes' SIGKILL ended init (`st`), which ended as `exit`, and
/// the signal that ended it: its own, or, under unifs's reaper
/// (`init_reaper`, which ends as its command did: 128 + its signal), the
/// command's KILL too (its PID said on `said`, [`super::command_pid`]),
/// unless the reaper said its command exited (137 its own code). The OOM
/// killer may pick either: a reaper killed ends its command (the guest's
/// PID namespace goes with its PID 1).
fn init_killed<'a>(
    st: &State,
    exit: &'a state::Exit,
    said: Option<&OwnedFd>,
) -> (Vec<Option<i32>>, Option<&'a str>) {
    let mut pids = vec![Some(st.pid)];
    let mut signal = exit.signal.as_deref();
    if st.spec.init {
        let said = said.map(|from| super::command_pid::received(from, st.pid));
        pids.push(said.and_then(|s| s.command));
        if exit.code == Some(128 + libc::SIGKILL) && said.is_none_or(|s| s.exited.is_none()) {
            signal = Some("KILL");
        }
    }
    (pids, signal)
}

/// Notes in `exit` a failure of one of this keeper's threads, if one
/// failed ([`keeper_panic::failed`]); whether one did.
fn note_keeper_failed(exit: &mut state::Exit) -> bool {
    exit.keeper_failed = keeper_panic::failed().map(String::from);
    exit.keeper_failed_after_end = keeper_panic::failed_after_end();
    exit.keeper_failed.is_some()
}

/// Removes [`RunDir::keeper_pid_file`] if the keeper it names has ended
/// without (killed): outside systemd, which removes a `PIDFile=` left,
/// nobody else would. (One alive is left to remove it itself.)
fn forget_dead_keeper(run: &RunDir) {
    let path = run.keeper_pid_file();
    let pid = std::fs::read_to_string(&path).ok();
    let pid = pid.and_then(|p| p.trim().parse::<i32>().ok());
    if pid.is_some_and(|pid| kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)) {
        let _ = std::fs::remove_file(&path);
    }
}

/// The keeper of a guest whose init ended (`exit`, recorded) and is not
/// started again: stops the guest as `guest stop` does once init is gone
/// ([`teardown`]), under the guest's lock, unless a `stop`, `start` or
/// `restart` got to it first (its record is no longer this init's). As
/// systemd-nspawn, whose container is over when its init is: else its root
/// stayed mounted, its daemon, groups and record left until the next stop
/// or start, and its backing dir could not be unified. Its warnings and what
/// it did go to the console log, where `guest logs` shows them. A run dir
/// whose path no longer leads to it (a tmpfs mounted over /run) is left as
/// it is, the guest not stopped: its lock, record and root are under that
/// mount. Said in its exit.json and console.log (through the directory
/// held, [`state::HeldRunDir`]) and in the kernel's log, which the host's
/// journal shows: the others are seen only once that mount is gone.
/// Returns the end it recorded, and the lock it holds, when the record was
/// this init's.
fn stop_ended(
    name: &str,
    held: &state::HeldRunDir,
    mut exit: state::Exit,
) -> Option<(state::Exit, nix::fcntl::Flock<std::fs::File>)> {
    use std::io::Write;
    let run = &held.run;
    let log = held.open_console();
    if let Ok(log) = &log {
        let _ = nix::unistd::dup2_stderr(log);
    }
    // The tests' window on a keeper whose init ended, before it takes the
    // guest's lock (review_s51_leftover: a `stop` gets there first).
    crate::sys::test_stop!("UNIFS_TEST_ENDED_UNLOCKED_STOP");
    let lock = match held.lost() {
        Some(why) => Err(why),
        None => run
            .lock("stop", Some(stop_holds(Duration::ZERO)))
            .map_err(|e| e.to_string()),
    };
    let lock = match lock {
        Ok(lock) => lock,
        Err(why) => {
            let said = format!(
                "[unifs: guest {name}: its init (pid {}) ended ({}), but the guest was not \
                 stopped: {why}; `unifs guest stop {name}` cleans up once its run dir is seen \
                 again]",
                exit.pid,
                exit.describe()
            );
            exit.not_stopped = Some(why);
            keeper_panic::stop_done("the guest not stopped: its run dir was out of reach");
            let _ = held.write_exit(&exit);
            if let Ok(mut log) = log.as_ref() {
                let _ = writeln!(log, "{said}");
            }
            super::kernel_log::say(&said);
            return None;
        }
    };
    // The tests' window on a keeper about to stop its guest.
    crate::sys::test_stop!("UNIFS_TEST_ENDED_STOP");
    // And its hold of the lock made long (review_s51_leftover: a `start`
    // meanwhile).
    crate::sys::test_pause!("UNIFS_TEST_ENDED_PAUSE_MS");
    let ours = |st: &State| (st.pid, st.start_time) == (exit.pid, exit.start_time);
    let st = match read_locked(run, name) {
        Ok((Some(st), _)) if ours(&st) && !st.init_alive() => st,
        _ => {
            keeper_panic::stop_done("the guest stopped or started again by another command");
            return None;
        }
    };
    let said = match teardown(run, &st, libc::SIGKILL, Duration::ZERO) {
        Ok(_) => {
            keeper_panic::stop_done("the guest already stopped (torn down)");
            exit.stopped_by_keeper = true;
            format!(
                "[unifs: guest {name} stopped: its init (pid {}) ended by itself ({})]",
                exit.pid,
                exit.describe()
            )
        }
        Err(e) => {
            let said = format!(
                "[unifs: guest {name}: its init (pid {}) ended ({}), but what it left could \
                 not be cleaned up: {e}; `unifs guest stop {name}` tries again]",
                exit.pid,
                exit.describe()
            );
            keeper_panic::stop_done(
                "the guest not stopped: what it left could not be cleaned up (`unifs guest stop` \
                 tries again)",
            );
            exit.not_stopped = Some(e.to_string());
            said
        }
    };
    let _ = held.write_exit(&exit);
    if let Ok(mut log) = log.as_ref() {
        let _ = writeln!(log, "{said}");
    }
    Some((exit, lock))
}

/// The keeper of a guest whose init `exit` rebooted it: becomes `unifs
/// guest start --after-reboot` of the guest ([`start_after_reboot`]), its
/// output appended to the console log, where `guest logs` shows it. Returns
/// only if that exec failed (the unifs binary gone or not executable): why.
fn start_again(
    dirs: &Dirs,
    name: &str,
    held: &state::HeldRunDir,
    exit: &state::Exit,
) -> std::io::Error {
    use std::io::Write;
    let log = held.open_console();
    if let Ok(mut log) = log.as_ref() {
        let _ = writeln!(
            log,
            "[unifs: guest {name} rebooted (its init, pid {}, ended by reboot(2))]",
            exit.pid
        );
    }
    let null = std::fs::File::open("/dev/null");
    if let (Ok(log), Ok(null)) = (&log, &null) {
        let _ = nix::unistd::dup2_stdin(null);
        let _ = nix::unistd::dup2_stdout(log);
        let _ = nix::unistd::dup2_stderr(log);
    }
    drop((log, null));
    // Nothing of this keeper's goes on into the start, its overlay daemon
    // or the next keeper. Its run dir stays open (close-on-exec): should
    // the exec fail, the end is still recorded through it.
    sys::close_fds_except(&[held.raw_fd()]);
    let of = format!("{}:{}", exit.pid, exit.start_time);
    let args = ["unifs".as_ref()]
        .into_iter()
        .chain(verbosity().map(OsStr::new));
    let args = args.chain([OsStr::new("--store"), dirs.store.as_os_str()]);
    let args = args.chain(["guest", "start", "--config-dir"].map(OsStr::new));
    let args = args.chain([dirs.config_dir.as_os_str(), OsStr::new("--run-dir")]);
    let args = args.chain([dirs.run_dir.as_os_str(), OsStr::new("--after-reboot")]);
    let e = exec_holding(args.chain([OsStr::new(&of), OsStr::new(name)]));
    eprintln!("unifs: guest {name}: starting it again after its reboot: {e}; stopping it");
    e
}

/// Execs this unifs with `args` (the first its name), the signals the
/// keeper passes on still held (blocked, as `Command::exec` would not
/// leave them), and said so ([`keeper_signals::HELD_ENV`]): one sent
/// meanwhile waits for the start it becomes. Returns only on failure.
fn exec_holding<'a>(args: impl Iterator<Item = &'a OsStr>) -> std::io::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |s: &[u8]| CString::new(s).map_err(|_| std::io::ErrorKind::InvalidInput);
    let args: std::result::Result<Vec<_>, _> = args.map(|a| c(a.as_bytes())).collect();
    let held = format!("{}=1", keeper_signals::HELD_ENV);
    let env = std::env::vars_os().filter(|(k, _)| k != keeper_signals::HELD_ENV);
    let env = env.map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()));
    let env: std::result::Result<Vec<_>, _> = env.chain([c(held.as_bytes())]).collect();
    match (args, env) {
        (Ok(args), Ok(env)) => match nix::unistd::execve(c"/proc/self/exe", &args, &env) {
            Ok(never) => match never {},
            Err(e) => e.into(),
        },
        _ => std::io::ErrorKind::InvalidInput.into(),
    }
}

/// The `-v`s that give the log level this process logs at (the first
/// start's, which the keeper was forked from): its start after a reboot
/// logs as much. (RUST_LOG, in the environment, goes on by itself.)
fn verbosity() -> Option<&'static str> {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        l if l >= LevelFilter::DEBUG => Some("-vv"),
        LevelFilter::INFO => Some("-v"),
        _ => None,
    }
}

/// A console log over this is set aside as `console.log.1` (replacing the
/// one before) when the guest starts: the log is appended to across
/// starts, and RUN_DIR is usually a tmpfs, whose pages outlive the
/// guest's memory limit once it stops.
pub const CONSOLE_ROTATE_BYTES: u64 = 4 << 20;

/// What [`start_init`] gives the keeper: init's state, the master of the
/// guest's `/dev/console` (init's output too) with the console log to
/// relay it to, and under unifs's reaper (`init_reaper`) where its command
/// says its PID on the host ([`super::command_pid`]).
type Started = (State, Option<(PtyMaster, std::fs::File)>, Option<OwnedFd>);

/// Starts init, its output (its console's) to be relayed to the console
/// log, which only the keeper holds.
fn start_init(
    cfg: &GuestConfig,
    spec: GuestSpec,
    run: &RunDir,
    cgroup: &Cgroup,
    reboots: state::Reboots,
) -> Result<Started> {
    let console = run.console();
    // A long log is set aside only once init runs (a failed start changes
    // nothing): init writes to a new file meanwhile, renamed in after.
    let rotate = std::fs::metadata(&console).is_ok_and(|m| m.len() > CONSOLE_ROTATE_BYTES);
    let fresh = console.with_extension("log.new");
    let opened = if rotate { &fresh } else { &console };
    let log = super::relay::open_log(opened).map_err(|e| Error::io("opening", opened, e))?;
    let state = launch_recorded(cfg, spec, run, cgroup, reboots);
    // The tests' way to make the keeper's main thread fail with init
    // started and recorded, before `start` hears of it (review_s45_keepsmalls).
    crate::sys::test_panic!("keeper-init");
    match (&state, rotate) {
        (Ok(_), true) => {
            let old = console.with_extension("log.1");
            // The keeper's relay holds the file, whatever becomes of the names.
            if let Err(e) =
                std::fs::rename(&console, &old).and_then(|()| std::fs::rename(&fresh, &console))
            {
                tracing::warn!("setting {} aside: {e}", console.display());
            }
        }
        (Err(_), true) => {
            let _ = std::fs::remove_file(&fresh);
        }
        (_, false) => {}
    }
    state.map(|(st, console, said)| (st, console.map(|master| (master, log)), said))
}

/// Starts init, its output going to its console, and records it; returns
/// its state, the master of its console, and where the command of unifs's
/// reaper says its PID.
fn launch_recorded(
    cfg: &GuestConfig,
    spec: GuestSpec,
    run: &RunDir,
    cgroup: &Cgroup,
    reboots: state::Reboots,
) -> Result<(State, Option<PtyMaster>, Option<OwnedFd>)> {
    let null =
        std::fs::File::open("/dev/null").map_err(|e| Error::io("opening", "/dev/null", e))?;
    let stdio = Stdio::Detached { null: null.into() };
    let spawned = launch::spawn(&spec, stdio, cgroup, None)?;
    // UNIFS_TEST_RECORD_STOP: the tests' window to end init before it is
    // recorded (its host end gone with its namespace): the record keeps
    // what the set-up read (review_s50_netidx).
    crate::sys::test_stop!("UNIFS_TEST_RECORD_STOP");
    let state = State {
        name: spec.name.clone(),
        pid: spawned.pid.as_raw(),
        start_time: state::start_time(spawned.pid.as_raw()).unwrap_or(0),
        root_mount: cfg.root_mount,
        backing: cfg.root.clone(),
        cgroup: cgroup.clone(),
        // As its set-up read it: init may be gone by now, and its
        // interface with its namespace.
        host_ifindex: spawned.host_end.as_ref().map(|h| h.ifindex),
        shell: Some(cfg.shell.clone()),
        boot_id: state::boot_id(),
        pid_ns: state::pid_ns(),
        start_rlimits: Some(start_rlimits(&spec)),
        reboots,
        mac_address: (spawned.host_end.as_ref())
            .and_then(|h| h.locked.as_ref())
            .map(|l| l.mac.clone()),
        spec,
        started: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    if let Err(e) = run.write(&state) {
        // `start` unmounts the root and removes the groups; the host end
        // and a locked port's table are this guest's, unrecorded.
        let _ = kill(spawned.pid, Signal::SIGKILL);
        cgroup.kill_all();
        super::net::teardown_recorded(&state.spec, state.host_ifindex);
        return Err(e);
    }
    Ok((state, spawned.pty, spawned.command_pid))
}

/// The resource limits init starts with: this process's (init inherits
/// them), with the spec's over them.
fn start_rlimits(spec: &GuestSpec) -> Vec<super::Rlimit> {
    let mut all: Vec<super::Rlimit> = super::spec::RLIMITS
        .iter()
        .filter_map(|&(_, resource)| {
            let own = sys::getrlimit(resource).ok()?;
            Some(super::Rlimit {
                resource,
                soft: own.0,
                hard: own.1,
            })
        })
        .collect();
    for r in &spec.rlimits {
        all.retain(|a| a.resource != r.resource);
        all.push(r.clone());
    }
    all
}

/// Mounts the guest's backing directory at its run dir's `root`: through the
/// overlay (a `unifs mount` that daemonizes once mounted, its log the run
/// dir's `mount.log`) or as a bind mount. The overlay's daemon joins
/// `cgroup`'s daemon leaves before it serves, with its OOM score lowered.
fn mount_root(
    dirs: &Dirs,
    name: &str,
    backing: &Path,
    run: &RunDir,
    how: RootMount,
    cgroup: &Cgroup,
) -> Result<()> {
    let root = &run.root();
    let failed = |reason: String| Error::RootMount {
        name: name.into(),
        reason,
    };
    match how {
        RootMount::Bind => nix::mount::mount(
            Some(backing),
            root,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| {
            failed(format!(
                "bind {} on {}: {e}",
                backing.display(),
                root.display()
            ))
        }),
        RootMount::Overlay => {
            let exe =
                std::env::current_exe().map_err(|e| failed(format!("own executable: {e}")))?;
            // Set aside when long, as the console log; the daemon before is
            // gone (its root was unmounted above).
            let log = run.mount_log();
            if std::fs::metadata(&log).is_ok_and(|m| m.len() > CONSOLE_ROTATE_BYTES) {
                if let Err(e) = std::fs::rename(&log, log.with_extension("log.1")) {
                    tracing::warn!("setting {} aside: {e}", log.display());
                }
            }
            let mut cmd = Command::new(exe);
            cmd.arg("--store")
                .arg(&dirs.store)
                .arg("mount")
                .arg("--log")
                .arg(&log)
                .arg(backing)
                .arg(root);
            join_before_exec(&mut cmd, cgroup.open_daemon_procs()?);
            let status = run_bounded(cmd, Duration::from_secs(60)).map_err(failed)?;
            if !status.success() {
                // Its error is in its log, not on our stderr (nor in a
                // unit's journal): say it.
                return Err(failed(format!(
                    "`unifs mount` exited with {status} ({})",
                    super::error::log_end(&log)
                )));
            }
            if !root_mounted(root)? {
                return Err(failed(format!(
                    "`unifs mount` returned but {} is not mounted",
                    root.display()
                )));
            }
            Ok(())
        }
    }
}

/// Says, once per start (`name`, the guest's) or `unifs run` (None), that
/// the overlay daemon may not be shielded from the OOM killer
/// ([`join_before_exec`]) where this process lacks CAP_SYS_RESOURCE (a
/// container's root, a service's reduced set): said before the daemon
/// starts, so in words true whatever least its caller hands on (-1000
/// lets it reach -999; -500 or 0 do not). With a memory limit the guest's
/// processes then start above the daemon
/// ([`sys::set_guest_oom_score`]), which host-wide puts them before the
/// host's own. (Before 2026-12-06 they started equal to the daemon, and a
/// guest pushed past its limit could lose its daemon first: every access
/// to its root then failed with ENOTCONN. `unifs run` said nothing.)
pub fn warn_daemon_unshielded(name: Option<&str>, limits: &Limits, how: RootMount) {
    if how != RootMount::Overlay || limits.memory.is_none() || sys::holds_sys_resource() {
        return;
    }
    let guest = name.map(|n| format!("guest {n}: ")).unwrap_or_default();
    tracing::warn!(
        "{guest}this process lacks CAP_SYS_RESOURCE, so the guest's overlay daemon may \
         not get the OOM score -999 that shields it, only the least its caller lets it (0 \
         for most callers); where that is above -999 the guest's processes start at {} \
         instead of 0 (level with the daemon where that least is above {}), so that past \
         its memory limit the OOM killer still takes them before the daemon; a host-wide \
         OOM then takes them before the host's processes too; start it with \
         CAP_SYS_RESOURCE to shield the daemon instead",
        sys::UNSHIELDED_GUEST_SCORE,
        sys::UNSHIELDED_GUEST_SCORE
    );
}

/// A memory limit `update` adds to a guest started without one, whose
/// overlay daemon could not be shielded (it stands above -999): the
/// guest's processes, started at 0 level with it, are raised to the score
/// a start with the limit gives them ([`sys::set_guest_oom_score`]), and
/// that is said; returns how many. (Before 2026-12-06 they stayed at 0
/// until the next start, and past the new limit the OOM killer could take
/// the daemon first.) Where this process holds CAP_SYS_RESOURCE the daemon
/// is shielded instead: a write of 999 by a holder also makes 999 the
/// least that process may ever set itself (the kernel's
/// `oom_score_adj_min`), which would pin the guest there for life.
fn raise_above_unshielded_daemon(name: &str, cgroup: &Cgroup) -> usize {
    if !cgroup.daemon_unshielded() {
        return 0;
    }
    if sys::holds_sys_resource() {
        let (shielded, failed) = cgroup.shield_daemon();
        tracing::warn!(
            "guest {name}: its overlay daemon stood above -999 (the unifs that started it \
             lacked CAP_SYS_RESOURCE); this one holds it, so with a memory limit the daemon \
             now stands at -999 ({shielded} of its processes lowered) and the guest's \
             processes keep their scores"
        );
        for (pid, e) in failed {
            tracing::warn!(
                "guest {name}: lowering the OOM score of its overlay daemon's process {pid} \
                 to -999 (/proc/{pid}/oom_score_adj): {e}; the OOM killer may take it before \
                 the guest's past the memory limit: restart the guest"
            );
        }
        return 0;
    }
    let to = sys::UNSHIELDED_GUEST_SCORE;
    let (raised, failed) = cgroup.raise_oom_scores(to);
    if raised > 0 {
        tracing::warn!(
            "guest {name}: its overlay daemon could not be shielded from the OOM killer \
             (its OOM score is above -999: the unifs that started it lacked \
             CAP_SYS_RESOURCE), so with a memory limit its processes now stand at {to}, as a \
             start with that limit gives them ({raised} raised; none lowered), so that past \
             the limit the OOM killer takes them before the daemon; a host-wide OOM then \
             takes them before the host's processes too"
        );
    }
    for (pid, e) in failed {
        tracing::warn!(
            "guest {name}: raising the OOM score of its process {pid} to {to} \
             (/proc/{pid}/oom_score_adj): {e}; it stays level with the overlay daemon, \
             which the OOM killer may take first past the memory limit: restart the guest"
        );
    }
    raised
}

/// Makes `cmd` join the groups whose `cgroup.procs` are open in `procs`
/// before it execs, and lowers its OOM score: a daemon the OOM killer took
/// in the guest's memory limit would lose the guest its root. Without
/// CAP_SYS_RESOURCE the score stays. `cmd` keeps `procs` open: a number
/// closed before the spawn, then reused, would have the child write to
/// another file.
fn join_before_exec(cmd: &mut Command, procs: Vec<std::fs::File>) {
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only makes write/open/close syscalls, on fds of
    // `procs`, which it owns, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            sys::join_cgroups(procs.iter().map(AsFd::as_fd))?;
            sys::shield_from_oom();
            Ok(())
        });
    }
}

/// [`state::is_mounted`], an error where mountinfo cannot be read.
fn root_mounted(root: &Path) -> Result<bool> {
    state::is_mounted(root).map_err(|e| Error::io("reading the mounts for", root, e))
}

/// Unmounts the guest's root; its waits draw from `end`.
fn unmount_root(root: &Path, how: RootMount, end: Deadline) -> Result<()> {
    if !root_mounted(root)? {
        return Ok(());
    }
    // The overlay's daemon, ended if it outlives the unmount.
    let daemon = match how {
        RootMount::Overlay => crate::fs::unifs_mount_guest(root)
            .ok()
            .flatten()
            .and_then(|guest| Some((crate::fs::guest_daemon(&guest)?.0, guest))),
        RootMount::Bind => None,
    };
    // Copies of the mount left hidden (below) go first: the daemon then
    // ends by itself, as it does once its last mount is gone.
    let end_daemon = || {
        unmount_hidden_copies(root);
        if let Some((pid, guest)) = &daemon {
            end_unmounted_daemon(root, guest, *pid, end);
        }
    };
    // The tests' window to unmount the root here, as a daemon whose start
    // was cut short does.
    crate::sys::test_stop!("UNIFS_TEST_UNMOUNT_STOP");
    // `unifs umount` (which waits for the daemon to let go of the backing
    // dir) where the stop's time allows; else, or should it hang, the
    // unmount below, which does not wait for the daemon.
    let limit = end.within(UNMOUNT_WAIT);
    if how == RootMount::Overlay && !limit.is_zero() {
        if let Ok(exe) = std::env::current_exe() {
            let mut cmd = Command::new(exe);
            // Its "busy …, or use --lazy" names an option `guest` has not:
            // what happens then is said below.
            cmd.arg("umount")
                .arg(root)
                .stderr(std::process::Stdio::null());
            match run_bounded(cmd, limit) {
                Ok(s) if s.success() => {
                    end_daemon();
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("unmounting {}: {e}; unmounting it directly", root.display())
                }
            }
        }
    }
    // An overlay daemon whose start was cut short unmounts its root by
    // itself: EINVAL once it has, which is what was wanted.
    let gone = |e| e == nix::errno::Errno::EINVAL && matches!(root_mounted(root), Ok(false));
    match nix::mount::umount2(root, MntFlags::empty()) {
        Ok(()) => {
            end_daemon();
            Ok(())
        }
        Err(e) if gone(e) => {
            end_daemon();
            Ok(())
        }
        Err(e) => {
            if e == nix::errno::Errno::EBUSY {
                // Detached, the mount lives on for them, and with it the
                // daemon's claim on the backing dir: `start` fails till then.
                tracing::warn!(
                    "the guest's root {} is busy (used by host processes: {}); detached it: it \
                     stays served to them, and the guest cannot start again, until they let go",
                    root.display(),
                    users_of(root)
                );
            }
            match nix::mount::umount2(root, MntFlags::MNT_DETACH) {
                Err(e) if !gone(e) => Err(Error::sys(format!("unmounting {}", root.display()), e)),
                _ => Ok(()),
            }
        }
    }
}

/// Unmounts what the mount table still lists at `root` (RUN_DIR/NAME/root)
/// once its path leads to none: copies of the root's mount hidden under a
/// mount made over RUN_DIR since the start. `mount --rbind RUN_DIR RUN_DIR`
/// copies the root's mount onto the new mount, over the original: an
/// unmount by the path takes the copy, and the original was left mounted,
/// out of sight, its daemon killed. Reached through the run dir the
/// guest's keeper holds ([`super::kept`]: that of the mount beneath);
/// without a keeper, said, for the operator.
fn unmount_hidden_copies(root: &Path) {
    let (Some(dir), Some(run_dir)) = (root.parent(), root.parent().and_then(Path::parent)) else {
        return;
    };
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    // Bounded: one unmount per copy, as many as there are mount layers.
    for _ in 0..8 {
        if !matches!(root_mounted(root), Ok(true)) {
            return;
        }
        let Some(kept) = super::kept::kept_run_dir(run_dir, &name) else {
            break;
        };
        if nix::mount::umount2(&kept.dir.join("root"), MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    if matches!(root_mounted(root), Ok(true)) {
        tracing::warn!(
            "a copy of the guest's root mount is left at {}, hidden under a mount made over \
             the run dir since the start (`mount --rbind`?): unmount that mount, then {0}",
            root.display()
        );
    }
}

/// Kills the overlay daemon `pid` of the guest dir `guest` if it still
/// holds it a moment after its mount at `root` was unmounted (as `unifs run`
/// does its own): one that is stopped (SIGSTOP, a debugger) never ends by
/// itself, and would keep the guest from starting again.
fn end_unmounted_daemon(root: &Path, guest: &Path, pid: i32, end: Deadline) {
    let holds = || crate::fs::guest_daemon(guest).filter(|&(p, _)| p == pid);
    // A stopped one is not waited for.
    wait_until(end.settling(Duration::from_secs(5)), || {
        holds().is_none_or(|(_, stopped)| stopped)
    });
    let Some((_, stopped)) = holds() else {
        return;
    };
    tracing::warn!(
        "the overlay daemon of {} (pid {pid}) did not end after the unmount{}; killing it",
        root.display(),
        if stopped { " (it is stopped)" } else { "" }
    );
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    wait_until(end.settling(Duration::from_secs(5)), || holds().is_none());
}

/// Processes whose working directory, root or an open file lies below
/// `mount` ("PID (COMM)", a few), for the operator to end. Read from /proc
/// links, which name paths without asking the filesystem.
fn users_of(mount: &Path) -> String {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "unknown".into();
    };
    let under = |link: PathBuf| std::fs::read_link(link).is_ok_and(|p| p.starts_with(mount));
    let mut users = Vec::new();
    for p in procs.flatten() {
        let dir = p.path();
        if p.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let fds = std::fs::read_dir(dir.join("fd")).into_iter().flatten();
        let uses = under(dir.join("cwd"))
            || under(dir.join("root"))
            || fds.flatten().any(|fd| under(fd.path()));
        if uses {
            // Its own to choose (prctl PR_SET_NAME): a newline or an
            // escape sequence in it must not reach the log as it is.
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            users.push(format!(
                "{} ({})",
                p.file_name().to_string_lossy(),
                crate::sys::clean(comm.trim())
            ));
        }
    }
    match users.len() {
        0 => "none found".into(),
        n if n > 8 => format!("{}, and {} more", users[..8].join(", "), n - 8),
        _ => users.join(", "),
    }
}

fn run_bounded(
    mut cmd: Command,
    limit: Duration,
) -> std::result::Result<std::process::ExitStatus, String> {
    let mut child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What `stop` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Init ended on the stop signal within the timeout.
    Clean,
    /// Init or other processes had to be killed: init, if it outlived
    /// its stop signal (None: it ended, and other processes were left).
    Killed(Option<Outlived>),
    /// Init had already died; the stale record was cleaned up.
    WasStale,
    /// A `start` killed before writing the record had left the guest
    /// running unrecorded; what was in its cgroups was killed.
    Unrecorded,
    /// It did not run: a `start` killed before it recorded the guest had
    /// left only its empty cgroups, now removed.
    LeftGroups,
    /// It ran when asked, and another `stop` (or `restart`) that held the
    /// guest's lock meanwhile stopped it.
    Meanwhile,
    /// Its init had ended by itself (how: [`state::Exit::describe`]), and
    /// its keeper stopped it meanwhile.
    Ended(String),
}

/// An init that outlived its stop signal (`signal`) and `timeout`, and
/// whether it takes that signal at all: a PID namespace's init does not
/// get one it neither catches nor blocks (said, so that the operator
/// knows to set another stop signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlived {
    pub signal: i32,
    pub timeout: Duration,
    pub takes_signal: bool,
}

/// `guest stop NAME`: `signal` (default: the guest's stop signal) to init,
/// wait up to `timeout`, then SIGKILL everything left in the guest's PID
/// namespace and cgroups; unmount.
pub fn stop(dirs: &Dirs, name: &str, timeout: Duration, signal: Option<i32>) -> Result<Stopped> {
    require_root("stopping a guest")?;
    super::config::check_name(name)?;
    let run = RunDir::new(&dirs.run_dir, name);
    // One bound for every wait on another command ([`STOP_LOCK_WAIT`]).
    let patience = lock_wait(STOP_LOCK_WAIT);
    let end = state::far_ahead(patience);
    // The end of the whole command, which each of its waits after the
    // --timeout draws from ([`STOP_AFTER`]).
    let all = Deadline::after(
        patience
            .saturating_add(timeout)
            .saturating_add(stop_after()),
    );
    // A `start` at work has no record yet, nor maybe a root or processes:
    // it was said to be "not running", and then ran. Waited for, then
    // stopped. So is a holder that has not written its word yet: a start
    // in the moment after it took the lock looks so (a stop or an update
    // is waited for no longer than the lock would be).
    let starting = run
        .held_by()
        .filter(|h| !h.keeper && (h.what == "start" || h.what.is_empty()));
    if let Some(holder) = &starting {
        say_waiting(name, holder, Some(patience));
    }
    if starting.is_some() && !wait_until(patience, || !run.locked_by_another()) {
        // (One that let go just now is gone: the stop goes on.)
        if let Some(holder) = run.held_by() {
            return Err(not_started(&run, name, holder, patience));
        }
    }
    let (record, bad) = read_lenient(&run, name)?;
    if record.is_none() && !bad && !unrecorded(&run) && !groups_left(&run) {
        // A name no config knows either is more likely a typo.
        let path = dirs.config_dir.join(format!("{name}.toml"));
        if !path.exists() {
            return Err(Error::NoConfig {
                name: name.into(),
                path,
            });
        }
        return Err(Error::NotRunning { name: name.into() });
    }
    let word = state::LockWord::new("stop", Some(stop_holds(timeout)));
    // What is left once a start was waited for, in whole seconds as said.
    let left = match starting {
        Some(_) => Duration::from_secs(end.saturating_duration_since(Instant::now()).as_secs()),
        None => patience,
    };
    let lock = run.lock_within(word, |_| Some(left), |h, l| say_waiting(name, h, l))?;
    // Re-read under the lock: a concurrent stop may have finished, or the
    // keeper of an init that ended by itself.
    let before = record.map(|old| (old.pid, old.start_time));
    let (record, bad) = read_locked(&run, name)?;
    let Some(st) = record else {
        let stopped = stop_unrecorded(dirs, name, &run, all)?;
        // Empty groups of a start killed before it recorded them, which
        // nothing else removes.
        let left = !stopped && Cgroup::tracked(&run.cgroup_name()).remove_left();
        return match stopped {
            true => Ok(Stopped::Unrecorded),
            // Only the unreadable record was left of it.
            false if bad => Ok(Stopped::WasStale),
            false if left => Ok(Stopped::LeftGroups),
            // What was asked for is done: not an error.
            false => match run
                .read_exit()
                .filter(|e| e.stopped_by_keeper && Some((e.pid, e.start_time)) == before)
            {
                Some(exit) => Ok(Stopped::Ended(exit.describe())),
                None if before.is_some() => Ok(Stopped::Meanwhile),
                None => Err(Error::NotRunning { name: name.into() }),
            },
        };
    };
    refuse_other_pid_ns(&st, "stop")?;
    let was_alive = st.init_alive();
    // Init's keeper; or, init ended by itself, the keeper still to take the
    // lock (to stop the guest, which it will find stopped).
    let keeper = init_keeper(&st).or_else(|| ending_keeper(&run, &st));
    let signal = signal.unwrap_or(st.spec.stop_signal);
    let ending = teardown_hurried(&run, &st, signal, timeout, || false, all)?;
    // The keeper takes the lock once init is gone, to stop the guest
    // itself; it finds it stopped and ends. Waited for, so that a `start`
    // right after (`restart`) does not find the lock held by it.
    drop(lock);
    if let Some(keeper) = keeper {
        if !super::keeper_panic::ends_within(&keeper, all.within(keeper_end_wait())) {
            tracing::debug!("guest {name}: its keeper had not ended when the stop did");
        }
    }
    Ok(match (was_alive, ending) {
        (false, _) => Stopped::WasStale,
        (true, None) => Stopped::Clean,
        (true, Some(outlived)) => Stopped::Killed(outlived),
    })
}

/// How long a `stop` waits for the guest's keeper to end once it let go
/// of the lock, at most: the keeper finds the guest stopped then, and at
/// most writes how its init ended. So long does any command wait, unsaid,
/// for a keeper that holds the lock to stop its guest ([`RunDir::lock_within`]).
const KEEPER_END_WAIT_SECS: usize = 5;

/// [`KEEPER_END_WAIT_SECS`], or the tests' longer bound
/// (UNIFS_TEST_KEEPER_END_WAIT_MAX, review_s50_realroot and
/// review_s51_leftover: a wait that ends is then told from none whatever
/// the load).
pub(super) fn keeper_end_wait() -> Duration {
    let most = crate::sys::test_bound!("UNIFS_TEST_KEEPER_END_WAIT_MAX", KEEPER_END_WAIT_SECS);
    Duration::from_secs(most as u64)
}

/// The keeper of `st`'s init (its parent, `unifs-keeper`) while init
/// lives, pinned by a pidfd (None: init gone, or no keeper its parent).
fn init_keeper(st: &State) -> Option<OwnedFd> {
    if !st.init_alive() {
        return None;
    }
    let (_, parent) = state_and_parent(st.pid)?;
    if super::kept::named_keeper(parent) != Some(true) {
        return None;
    }
    let pidfd = sys::pidfd_open(Pid::from_raw(parent)).ok()?;
    // Still init's parent once pinned: not a pid used again meanwhile.
    let still = st.init_alive() && state_and_parent(st.pid).map(|(_, p)| p) == Some(parent);
    still.then_some(pidfd)
}

/// The keeper `keeper.pid` names ([`RunDir::keeper_pid_file`]), pinned
/// by a pidfd, if it runs: that of `st`'s init that ended, which removes
/// the file only once it has taken the guest's lock (after this stop).
fn ending_keeper(run: &RunDir, st: &State) -> Option<OwnedFd> {
    // A file of a boot before: its pid is nobody's of this one.
    if !st.this_boot() {
        return None;
    }
    let pid = std::fs::read_to_string(run.keeper_pid_file()).ok()?;
    let pid: i32 = pid.trim().parse().ok()?;
    let pidfd = sys::pidfd_open(Pid::from_raw(pid)).ok()?;
    // Once pinned: a keeper, and one started no later than the guest's
    // init (it forks init; start times in ticks, /proc's rounding leaves
    // one unknown), not a pid used again since by another guest's keeper
    // or anything else (a file left by a killed keeper).
    let keeper = super::kept::named_keeper(pid) == Some(true);
    let before_init = state::start_time(pid).is_some_and(|t| t <= st.start_time + 1);
    (keeper && before_init).then_some(pidfd)
}

/// Why a `stop` that waited `waited` for the holder of the guest's lock
/// as for a `start` at work does nothing: a start still at work (its pid,
/// and, stopped, how to let it go on), or what the holder is when it never
/// wrote its word (before 2026-12-06 said to be a start "not started
/// within" the wait, to try "once it runs", which a stopped one never
/// does).
fn not_started(run: &RunDir, name: &str, holder: state::LockHolder, waited: Duration) -> Error {
    let lock = run.dir.join("lock");
    let secs = waited.as_secs();
    match holder.what == "start" {
        true => Error::Starting {
            name: name.into(),
            lock,
            secs,
            by: match holder.pid {
                Some(pid) => format!("`unifs guest start`, pid {pid},"),
                None => "a `unifs guest start`".into(),
            },
            then: match holder.is_stopped() {
                true => holder.what_to_do(),
                false => "try again once it runs".into(),
            },
        },
        false => Error::LockHeld {
            name: name.into(),
            lock,
            holder,
            secs,
        },
    }
}

/// `guest restart NAME`: `stop` if it runs (or left anything to clean up),
/// then `start`, as `vserver NAME restart` and `docker restart` do. Returns
/// how it stopped (None: it was not running) and the new state.
/// `cfg`: as [`start`]'s, which starts the guest from it.
pub fn restart(
    dirs: &Dirs,
    name: &str,
    cfg: GuestConfig,
    timeout: Duration,
    signal: Option<i32>,
    stopped: impl FnOnce(Option<Stopped>),
) -> Result<State> {
    // A config that cannot start it (a typo in a key, a root gone) leaves
    // the guest running, rather than stopped with only that error shown.
    check_paths(dirs, name, &cfg)?;
    check_init(dirs, name, &cfg)?;
    match stop(dirs, name, timeout, signal) {
        Ok(how) => stopped(Some(how)),
        Err(Error::NotRunning { .. }) => stopped(None),
        Err(e) => return Err(e),
    }
    match start(dirs, name, cfg) {
        // Another restart started it after our stop: restarted, as asked.
        Err(Error::AlreadyRunning { .. }) => RunDir::new(&dirs.run_dir, name)
            .read()?
            .filter(State::init_alive)
            .ok_or_else(|| Error::NotRunning { name: name.into() }),
        started => started,
    }
}

/// A guest whose root or a bind source is gone (moved, deleted) cannot
/// start: said naming its config file and what to do (`guest start`,
/// `restart`, and `list`'s warnings). Its other checks are [`spec_of`]'s.
pub fn check_paths(dirs: &Dirs, name: &str, cfg: &GuestConfig) -> Result<()> {
    let config = dirs.config_dir.join(format!("{name}.toml"));
    let mountinfo = Path::new("/proc/self/mountinfo");
    let stalls = crate::fs::StallCheck::new().map_err(|e| Error::io("reading", mountinfo, e))?;
    stalls.refuse(&cfg.root).map_err(|source| Error::Io {
        what: "guest root",
        path: cfg.root.clone(),
        source,
    })?;
    if !cfg.root.is_dir() {
        return Err(Error::no_root(&cfg.root, Some(&config)));
    }
    if cfg.root_mount == RootMount::Bind {
        super::check_bind_root(&dirs.store, &cfg.root, "root_mount = \"bind\" (its config)")?;
    }
    for b in spec_of(cfg, dirs, name)?.binds {
        stalls
            .refuse(&b.src)
            .map_err(|e| Error::io("bind source", &b.src, e))?;
        if !b.src.exists() {
            return Err(Error::NoBindSource {
                src: b.src,
                config: Some(config),
            });
        }
    }
    Ok(())
}

/// What `start` finds only once the root is mounted and init set up: an
/// init that is not in the guest's root, or a working directory (`chdir`)
/// that is not, refused as `start` refuses them. Looked for in the backing
/// directory as the guest will see it: its symlinks followed inside it only
/// (a link to a host path leads to that path in the guest's tree, never to
/// the host's file). A path that one of the guest's own mounts provides
/// (`/dev`, `/proc`, `/run`, a `tmpfs` or `bind` destination), or that
/// cannot be looked at, is left for `start` to judge.
pub fn check_init(dirs: &Dirs, name: &str, cfg: &GuestConfig) -> Result<()> {
    let spec = spec_of(cfg, dirs, name)?;
    let root = cfg.root.as_path();
    let mounted: Vec<PathBuf> = ["/dev", "/proc", "/sys", "/run"]
        .into_iter()
        .map(PathBuf::from)
        .chain(spec.tmpfs.iter().map(|t| t.dst.clone()))
        .chain(spec.binds.iter().map(|b| b.dst.clone()))
        .flat_map(|m| {
            let at = rootfs::resolve_in_root(root, &m).ok();
            std::iter::once(m).chain(at)
        })
        .collect();
    // Certainly not there: ENOENT or ENOTDIR on the way, nothing of ours
    // mounted over it.
    let missing = |path: &Path| -> bool {
        if !path.is_absolute() {
            return false;
        }
        let Ok(at) = rootfs::resolve_in_root(root, path) else {
            return false;
        };
        if mounted
            .iter()
            .any(|m| path.starts_with(m) || at.starts_with(m))
        {
            return false;
        }
        matches!(
            crate::sys::open_in_root(root, &at, libc::O_PATH),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
        )
    };
    if let Some(dir) = &spec.workdir {
        if missing(Path::new(dir)) {
            return Err(Error::Setup(format!(
                "working directory {dir} in the guest: {}",
                nix::errno::Errno::ENOENT
            )));
        }
    }
    let Some(command) = spec.command.first() else {
        return Ok(());
    };
    // Where exec looks (sys::find_executable): the name itself when it has
    // a slash, else each directory of the guest's PATH.
    let candidates: Vec<PathBuf> = if command.contains('/') {
        vec![PathBuf::from(command)]
    } else {
        let env = spec.environment();
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(command))
            .collect()
    };
    if !candidates.is_empty() && candidates.iter().all(|c| missing(c)) {
        return Err(Error::CommandNotFound {
            command: command.clone(),
            root: cfg.root.clone(),
        });
    }
    Ok(())
}

/// The guest's spec from its config, its network checked too; an error
/// names the config file, and a setting whose check `unifs run`'s options
/// share by its key there, not by the option (`[net] host_ip`, not
/// `--host-ip`).
fn spec_of(cfg: &GuestConfig, dirs: &Dirs, name: &str) -> Result<GuestSpec> {
    let path = dirs.config_dir.join(format!("{name}.toml"));
    let mut spec = cfg
        .spec(name, RunDir::new(&dirs.run_dir, name).root())
        .map_err(|e| match e {
            // What the host's root lacks, not the file's fault.
            e @ Error::CapNotHeld { .. } => super::spec::on_host(e, &path),
            e => match super::spec::in_config(e, &path) {
                e @ Error::Config { .. } => e,
                e => Error::Config {
                    path: path.clone(),
                    reason: e.to_string(),
                },
            },
        })?;
    spec.config = Some(path);
    super::net::check(&spec)?;
    Ok(spec)
}

/// Ends the guest's processes, unmounts its root, removes its cgroups and
/// runtime record. None if nothing had to be killed ([`teardown_hurried`]).
fn teardown(run: &RunDir, st: &State, signal: i32, timeout: Duration) -> Result<Killed> {
    teardown_hurried(run, st, signal, timeout, || false, Deadline::NONE)
}

/// [`teardown`] by the guest's stop signal, which ends its wait for init
/// (SIGKILL then) as soon as `hurry` says so.
fn teardown_or_kill(
    run: &RunDir,
    st: &State,
    timeout: Duration,
    hurry: impl FnMut() -> bool,
) -> Result<Killed> {
    teardown_hurried(run, st, st.spec.stop_signal, timeout, hurry, Deadline::NONE)
}

/// What a teardown had to kill: None, nothing; `Some(None)`, processes
/// left after init ended; `Some(Some(_))`, init, which outlived its signal.
type Killed = Option<Option<Outlived>>;

fn teardown_hurried(
    run: &RunDir,
    st: &State,
    signal: i32,
    timeout: Duration,
    mut hurry: impl FnMut() -> bool,
    end: Deadline,
) -> Result<Killed> {
    let pid = Pid::from_raw(st.pid);
    let mut killed = None;
    // A record without its host end's index (an older unifs's): proved
    // while init lives, before the kill; the clean-up goes by no name.
    let veth = st.spec.net.mode == super::NetMode::Veth;
    let ifindex = st.host_ifindex.or_else(|| {
        (veth && st.init_alive())
            .then(|| super::net::host_ifindex_owned_by(&st.name, &[st.pid]))
            .flatten()
    });
    if st.init_alive() {
        // Sent before init takes it (a `stop` right after `start`), the
        // kernel would drop it, and the stop wait out its timeout.
        let deadline = state::far_ahead(timeout);
        let mut hurried = false;
        let mut over = || {
            hurried = hurried || hurry();
            hurried || !st.init_alive()
        };
        wait_until(timeout, || over() || sys::takes_signal(pid, signal));
        let _ = sys::send_signal(pid, signal);
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_until(left, over) || st.init_alive() {
            // Asked only where init outlived the wait (hurried or not).
            let takes_signal = !st.init_alive() || sys::takes_signal(pid, signal);
            killed = Some(Some(Outlived {
                signal,
                timeout,
                takes_signal,
            }));
        }
    }
    if st.init_alive() {
        // SIGKILL to a PID namespace's init kills the whole namespace.
        let _ = kill(pid, Signal::SIGKILL);
    }
    if !st.cgroup.pids().is_empty() {
        killed = killed.or(Some(None));
        st.cgroup.kill_all();
    }
    let ended = || !st.init_alive() && st.cgroup.pids().is_empty();
    let left = || {
        let mut left = st.cgroup.pids();
        if st.init_alive() && !left.contains(&st.pid) {
            left.insert(0, st.pid);
        }
        left
    };
    let mut gone = wait_until(end.settling(Duration::from_secs(5)), ended);
    if !gone && st.root_mount == RootMount::Overlay && waiting_on_fuse(&left()) {
        gone = end_root_daemon(st, &left(), ended, end);
    }
    if !gone {
        gone = end_stopped_reapers(st, ended, end);
    }
    if !gone {
        let left = left();
        let daemon = match st.root_mount {
            RootMount::Overlay if waiting_on_fuse(&left) => {
                Some(crate::fs::guest_daemon(&st.backing))
            }
            _ => None,
        };
        let reapers = match st.init_alive() {
            true => unreaping_parents(st.pid),
            false => Vec::new(),
        };
        return Err(survived(&st.name, left, daemon, &reapers));
    }
    unmount_root(&run.root(), st.root_mount, end)?;
    st.cgroup.end_daemon_within(|bound| end.settling(bound));
    // Its 5 s for processes leaving drawn from the deadline too: a guest
    // that makes a group below each time one goes kept it busy past it.
    st.cgroup.remove_within(end.settling(Duration::MAX));
    // An index of another boot may be any interface now.
    if st.this_boot() {
        super::net::teardown_recorded(&st.spec, ifindex);
    }
    // Never remove_dir_all: if the unmount had failed, root/ would be the
    // guest's files.
    let _ = std::fs::remove_dir(run.root());
    run.drop_exit_of_other_init(st);
    let _ = std::fs::remove_file(run.state_file());
    forget_dead_keeper(run);
    Ok(killed)
}

/// How long `stop` waits for a busy overlay daemon that guest processes
/// wait on, at most, while it works ([`DAEMON_IDLE`]), before it ends it.
const BUSY_DAEMON_WAIT: Duration = Duration::from_secs(30);

/// How long a busy overlay daemon may do nothing before `stop` ends it.
const DAEMON_IDLE: Duration = Duration::from_secs(3);

/// Whether one of `pids` waits for the answer of a FUSE daemon: a request
/// the daemon has read cannot be interrupted, not even by SIGKILL, until it
/// is answered or the connection ends.
fn waiting_on_fuse(pids: &[i32]) -> bool {
    pids.iter().any(|p| {
        std::fs::read_to_string(format!("/proc/{p}/wchan"))
            .is_ok_and(|w| w == "request_wait_answer" || w.starts_with("fuse_"))
    })
}

/// Ends the overlay daemon of `st`'s root that the guest's processes `left`
/// (SIGKILLed) wait on, so that they get errors and die: a stopped one at
/// once (it answers nothing until it goes on), a busy one once it stops
/// making progress or after [`BUSY_DAEMON_WAIT`]. Nothing is lost: the
/// guest's mount is torn down anyway, and a break the daemon was making is
/// a temp file until its rename (the path keeps its old file). True when
/// the guest's processes are gone then.
fn end_root_daemon(st: &State, left: &[i32], ended: impl Fn() -> bool, end: Deadline) -> bool {
    let Some((pid, stopped)) = crate::fs::guest_daemon(&st.backing) else {
        return false;
    };
    let limit = end.within(BUSY_DAEMON_WAIT);
    let deadline = Instant::now() + limit;
    if !stopped {
        let mut last = daemon_work(pid);
        let mut worked = Instant::now();
        while !ended() && Instant::now() < deadline && worked.elapsed() < DAEMON_IDLE {
            std::thread::sleep(Duration::from_millis(100));
            let now = daemon_work(pid);
            if now != last {
                (last, worked) = (now, Instant::now());
            }
        }
        if ended() {
            return true;
        }
    }
    let how = match crate::fs::process_stopped(pid) {
        Some(true) => "is stopped (SIGSTOP, or a debugger holds it)".to_string(),
        _ if Instant::now() < deadline => format!(
            "runs but did nothing for {} s (hangs?)",
            DAEMON_IDLE.as_secs()
        ),
        _ => format!("is busy and has not answered in {} s", limit.as_secs()),
    };
    tracing::warn!(
        "guest {}: processes {left:?} wait for an answer of its overlay daemon (pid {pid}), \
         which {how}; killing the daemon so that they end",
        st.name
    );
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    wait_until(end.settling(Duration::from_secs(5)), ended)
}

/// A process outside the guest whose child, a process of the guest, has
/// ended and is not reaped: a `guest exec` session's helper (or an
/// `nsenter`). The guest's init, killed, cannot end until it is: the
/// kernel waits for every process of a PID namespace to be reaped.
struct Reaper {
    pid: i32,
    child: i32,
    stopped: bool,
}

impl std::fmt::Display for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        write!(f, "{} ({})", self.pid, crate::sys::clean(comm.trim()))
    }
}

/// The [`Reaper`]s of the guest whose init is `init`.
fn unreaping_parents(init: i32) -> Vec<Reaper> {
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let (Some(guest), Ok(procs)) = (ns(init), std::fs::read_dir("/proc")) else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p != init && ns(p).as_ref() == Some(&guest))
        .filter_map(|child| {
            let (state, ppid) = state_and_parent(child)?;
            (state == 'Z' && ns(ppid).as_ref() != Some(&guest)).then(|| Reaper {
                pid: ppid,
                child,
                stopped: crate::fs::process_stopped(ppid) == Some(true),
            })
        })
        .collect()
}

/// A process's state letter and parent, from proc(5)'s stat.
fn state_and_parent(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(") ")?.1.split(' ');
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Kills the stopped [`Reaper`]s of `st`'s guest (SIGSTOPped, or held by
/// a debugger: they never reap): `stop` ends every process of the guest,
/// and these hold its init. True when the guest's processes are gone then.
fn end_stopped_reapers(st: &State, ended: impl Fn() -> bool, end: Deadline) -> bool {
    let mut killed = false;
    for r in unreaping_parents(st.pid).iter().filter(|r| r.stopped) {
        // Its pid pinned, then checked to be the parent still.
        let Ok(fd) = sys::pidfd_open(Pid::from_raw(r.pid)) else {
            continue;
        };
        if state_and_parent(r.child).map(|(_, p)| p) != Some(r.pid) {
            continue;
        }
        tracing::warn!(
            "guest {}: its init cannot end until process {r}, outside the guest, reaps its \
             ended process {}, and it is stopped (a `guest exec` session's helper stopped by \
             SIGSTOP, or held by a debugger); killing it",
            st.name,
            r.child
        );
        killed |= sys::pidfd_kill(fd.as_fd(), libc::SIGKILL).is_ok();
    }
    killed && wait_until(end.settling(Duration::from_secs(5)), ended)
}

/// What `pid` has done so far: its I/O and CPU time counters added up (it
/// grows while the process works).
fn daemon_work(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let io: u64 = io
        .lines()
        .filter_map(|l| l.split_once(": ")?.1.trim().parse::<u64>().ok())
        .fold(0, u64::wrapping_add);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime: the 12th and 13th fields after the command name.
    let cpu: u64 = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').skip(11).take(2))
        .into_iter()
        .flatten()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    io.wrapping_add(cpu)
}

/// Why a guest could not be ended: which processes outlived SIGKILL, and
/// why where that is known. `daemon`: Some when they wait on a FUSE
/// request, with the guest's overlay daemon (pid, stopped) if one is left.
fn survived(
    name: &str,
    pids: Vec<i32>,
    daemon: Option<Option<(i32, bool)>>,
    reapers: &[Reaper],
) -> Error {
    let frozen = pids.iter().find_map(|&p| super::cgroup::frozen_v1_group(p));
    let why = match (frozen, daemon) {
        (None, None) if !reapers.is_empty() => {
            let names: Vec<String> = reapers
                .iter()
                .map(|r| format!("{r}, parent of {}", r.child))
                .collect();
            format!(
                "; the guest's init cannot end until processes outside the guest reap their \
                 ended processes of it ({}: a `guest exec` session's helper, an nsenter): end \
                 them, and stop the guest again",
                names.join("; ")
            )
        }
        (Some(dir), _) => format!(
            "; they are frozen in the cgroup v1 freezer group {0}: thaw it \
             (`echo THAWED > {0}/freezer.state`) and stop the guest again",
            dir.display()
        ),
        (None, Some(Some((pid, stopped)))) => format!(
            "; they wait for an answer of the guest's overlay daemon (`unifs mount`, pid {pid}), \
             which is {} and was killed but has not ended yet (stuck in the kernel, on a disk?); \
             stop the guest again once pid {pid} is gone",
            if stopped { "stopped" } else { "busy" }
        ),
        (None, Some(None)) => "; they wait for an answer of a FUSE filesystem's daemon that is \
             not the guest's overlay daemon (a FUSE mount bound into the guest?): let that \
             daemon go on (`kill -CONT` it), or end it, and stop the guest again"
            .to_string(),
        (None, None) => String::new(),
    };
    Error::Stop {
        name: name.into(),
        reason: format!("processes survived SIGKILL (pids {pids:?}){why}"),
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = state::far_ahead(limit);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Refuses a guest started from another PID namespace ([`State::other_pid_ns`]):
/// `command` (`stop`, `exec`, …) must run in that one.
fn refuse_other_pid_ns(st: &State, command: &'static str) -> Result<()> {
    match st.other_pid_ns() {
        true => Err(other_pid_ns(st, command)),
        false => Ok(()),
    }
}

fn other_pid_ns(st: &State, command: &'static str) -> Error {
    Error::OtherPidNs {
        name: st.name.clone(),
        command,
    }
}

/// How long `exec`, `enter` and `ps` wait for a `start` at work: it mounts
/// the root within a minute or fails.
const START_WAIT: Duration = Duration::from_secs(70);

/// How long `start`, `restart`'s start and `update` wait for the guest's
/// lock held by another command: a `start` mounts the root within a
/// minute or fails. A holder that said it may take longer (a `stop` with a
/// long --timeout, [`stop_holds`]) is waited for that long, unless it is
/// stopped (SIGSTOP: it goes nowhere meanwhile). (Below systemd's
/// TimeoutStartSec=90 of contrib's unit, so that a start behind a start
/// fails with its own message.)
const LOCK_WAIT: Duration = Duration::from_secs(70);

/// How long a `stop` (and `restart`'s) waits for other commands, all
/// told: for a `start` at work, then for the lock. So that the stop of
/// contrib's unit, ExecStop=`guest stop NAME`, ends within its
/// TimeoutStopSec=90 rather than being SIGKILLed half-way: these 30 s,
/// then its --timeout (10 s), then [`STOP_AFTER`] (45 s). Before, 70 s
/// for a start, 70 s more for the lock.
const STOP_LOCK_WAIT: Duration = Duration::from_secs(30);

/// How long a `stop` takes after its --timeout at most, all told: each of
/// its waits draws from one deadline, the end of the command (these 45 s
/// after its --timeout, plus what was left of [`STOP_LOCK_WAIT`]). The
/// waits in sequence, each with its own bound: 5 s for what SIGKILL ends,
/// 30 s and 5 s for a hung or busy overlay daemon ([`BUSY_DAEMON_WAIT`]),
/// 5 s for a stopped `exec` helper, 30 s for `unifs umount`
/// ([`UNMOUNT_WAIT`]), 5 s and 5 s for the daemon's end after it, 5 s and
/// 2 s for the daemon's cgroup leaf, 5 s for the groups: 97 s if each took
/// its bound, which systemd cut at TimeoutStopSec=90. The last
/// [`STOP_TAIL`] are kept for the [`SETTLE`] that each wait for what was
/// made to end takes at least ([`Deadline::settling`]): every wait draws
/// from the time before that tail, and one for what was made to end takes
/// its second from the tail once that time is up. So the stop ends by its
/// deadline: 30 + 10 + 45 = 85 s, within [`UNIT_STOP_SECS`].
const STOP_AFTER: Duration = Duration::from_secs(45);

/// How many waits for what was made to end ([`Deadline::settling`]) a
/// stop makes at most, one after another: for what SIGKILL ends, after
/// the kill of a daemon processes wait on, after the kill of a stopped
/// `exec` helper, two for the daemon's end after the unmount, two for its
/// cgroup leaf, one for the groups' removal.
const SETTLES: u64 = 8;

/// Of [`STOP_AFTER`], the end that is kept for the [`SETTLE`] each of
/// [`SETTLES`] waits takes at least, when the time before it is up.
const STOP_TAIL: Duration = Duration::from_secs(SETTLES * SETTLE.as_secs());

const _: () = assert!(STOP_TAIL.as_secs() < STOP_AFTER.as_secs());

/// How long `unifs umount` of a guest's root may take (it waits for the
/// daemon to let go) before it is killed and the root unmounted directly.
const UNMOUNT_WAIT: Duration = Duration::from_secs(30);

/// contrib's unit's `TimeoutStopSec=` (contrib/systemd/unifs-guest@.service),
/// read from it when unifs builds: a stop with the default --timeout must
/// end within it, with a few seconds to spare for the work between waits
/// ([`STOP_WORK`]), else systemd SIGKILLs it half-way (its guest's root
/// left mounted).
const UNIT_STOP_SECS: u64 = unit_secs(
    include_str!("../../contrib/systemd/unifs-guest@.service"),
    "TimeoutStopSec=",
);

/// What the unit's stop leaves for the work between a stop's waits
/// (spawning `unifs umount`, reading /proc and the mount table).
const STOP_WORK: u64 = 5;

const _: () = assert!(
    STOP_LOCK_WAIT.as_secs() + DEFAULT_STOP_TIMEOUT + STOP_AFTER.as_secs() + STOP_WORK
        <= UNIT_STOP_SECS
);

/// `guest stop`'s and `restart`'s --timeout when none is given (seconds).
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// The number of seconds after `key` (`TimeoutStopSec=`) at the start of a
/// line of the unit file `unit`; the build fails if there is none.
const fn unit_secs(unit: &str, key: &str) -> u64 {
    let (unit, key) = (unit.as_bytes(), key.as_bytes());
    let mut i = 0;
    while i + key.len() <= unit.len() {
        let at_line = i == 0 || unit[i - 1] == b'\n';
        let mut k = 0;
        while at_line && k < key.len() && unit[i + k] == key[k] {
            k += 1;
        }
        if at_line && k == key.len() {
            let (mut j, mut secs) = (i + k, 0);
            while j < unit.len() && unit[j].is_ascii_digit() {
                secs = secs * 10 + (unit[j] - b'0') as u64;
                j += 1;
            }
            assert!(
                j > i + k && (j == unit.len() || unit[j] == b'\n'),
                "the unit's TimeoutStopSec= is not whole seconds"
            );
            return secs;
        }
        i += 1;
    }
    panic!("the unit has no TimeoutStopSec=")
}

/// [`STOP_AFTER`], or the tests' shorter one (UNIFS_TEST_STOP_AFTER_MAX
/// seconds).
fn stop_after() -> Duration {
    let secs = crate::sys::test_bound!("UNIFS_TEST_STOP_AFTER_MAX", STOP_AFTER.as_secs() as usize);
    Duration::from_secs(secs as u64)
}

/// The longest a stop's teardown takes after its --timeout: the lock's
/// wait it may not have needed ([`STOP_LOCK_WAIT`]), [`STOP_AFTER`], and
/// some to spare (80 s).
const TEARDOWN_MAX: Duration =
    Duration::from_secs(STOP_LOCK_WAIT.as_secs() + STOP_AFTER.as_secs() + STOP_WORK);

/// What a stop of `timeout` writes in the guest's lock file as the longest
/// it may hold it ([`state::LockWord::holds`]), for a command behind it.
fn stop_holds(timeout: Duration) -> Duration {
    // `--timeout 1e19` waits as long as anyone waits: said so, not as
    // 10000000000000000080 s.
    timeout.saturating_add(TEARDOWN_MAX).min(state::LONGEST)
}

/// The end of a command's time, which each of its waits draws from (None:
/// each wait has its own bound only).
#[derive(Debug, Clone, Copy)]
struct Deadline(Option<Instant>);

impl Deadline {
    const NONE: Deadline = Deadline(None);

    /// `limit` from now.
    fn after(limit: Duration) -> Deadline {
        Deadline(Some(state::far_ahead(limit)))
    }

    /// What is left of the time before its last [`STOP_TAIL`] (None: no
    /// deadline).
    fn before_tail(self) -> Option<Duration> {
        let end = self.0?;
        let end = end.checked_sub(STOP_TAIL).unwrap_or(end);
        Some(end.saturating_duration_since(Instant::now()))
    }

    /// `bound`, or what is left of the time before its last [`STOP_TAIL`]
    /// if less: for a wait that may be cut short (a busy daemon's answer,
    /// `unifs umount`), the work after it going on anyway.
    fn within(self, bound: Duration) -> Duration {
        self.before_tail().map_or(bound, |left| bound.min(left))
    }

    /// `bound`, or what is left of the time before its last [`STOP_TAIL`]
    /// if less, but [`SETTLE`] at least: for a wait on what was just made
    /// to end (SIGKILLed processes, a daemon whose mount is gone), which
    /// ends in milliseconds. Zero looked once, at once: the killed were
    /// taken for survivors (the stop failed, the guest half torn down) and
    /// a daemon in its own clean end was SIGKILLed. The tail holds the
    /// second of each of the [`SETTLES`] such waits a stop makes at most,
    /// so the stop ends by its deadline: drawn from the whole time, the
    /// waits after it was up went past it (92 s with the defaults).
    fn settling(self, bound: Duration) -> Duration {
        let limit = self
            .before_tail()
            .map_or(bound, |left| bound.min(left.max(SETTLE)));
        // The tests' worst case (review_s49_stopleft): each such wait of a
        // stop takes all it may, as if what it waits for ended only then.
        if self.0.is_some() && crate::sys::test_hook!("UNIFS_TEST_SETTLE_FULL").is_some() {
            std::thread::sleep(limit);
            return Duration::ZERO;
        }
        limit
    }
}

/// The least a `stop` waits for what it made end, however late
/// ([`Deadline::settling`]).
const SETTLE: Duration = Duration::from_secs(1);

/// The guest's lock for command `what`, waited for at most [`LOCK_WAIT`]
/// (UNIFS_TEST_LOCK_WAIT_MAX seconds: the tests' shorter bound), or as long
/// as its holder said it may take, which is said on stderr at once: before,
/// a `start` behind a slow `stop` waited for good and said nothing. The
/// keeper's start after init's reboot `rebooted` (and its note that it is
/// not started again) waits for good, as the keeper does: nobody waits on
/// it, and giving up left the guest stopped, its record saying to try
/// again, behind a `stop` with a long --timeout or an `update`, which end
/// by themselves.
fn lock_guest(
    run: &RunDir,
    name: &str,
    what: &str,
    rebooted: Option<Rebooted>,
) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let own = lock_wait(LOCK_WAIT);
    let limit = |holder: &state::LockHolder| {
        let long = holder.holds.filter(|&h| h > own && !holder.is_stopped());
        rebooted.is_none().then(|| long.unwrap_or(own))
    };
    let word = state::LockWord::new(what, None);
    run.lock_within(word, limit, |holder, l| say_waiting(name, holder, l))
}

/// `bound`, or the tests' shorter one (UNIFS_TEST_LOCK_WAIT_MAX seconds).
fn lock_wait(bound: Duration) -> Duration {
    let secs = crate::sys::test_bound!("UNIFS_TEST_LOCK_WAIT_MAX", bound.as_secs() as usize);
    Duration::from_secs(secs as u64)
}

/// Says on stderr that a command of guest `name` waits (up to `limit`,
/// None: for good) for `holder`, which holds the guest's lock.
fn say_waiting(name: &str, holder: &state::LockHolder, limit: Option<Duration>) {
    let bound = match limit {
        None => String::new(),
        Some(l) if l >= state::LONGEST => " (as long as it takes: it may hold it for good)".into(),
        Some(l) => format!(" (up to {} s)", l.as_secs()),
    };
    // One stopped goes on only once let go: said at once, with how.
    let stopped = match holder.pid.filter(|_| holder.is_stopped()) {
        Some(pid) => format!(
            "; it is stopped (SIGSTOP, or a debugger holds it): `kill -CONT {pid}` lets it go on"
        ),
        None => String::new(),
    };
    eprintln!(
        "unifs: guest {name} is {}: waiting for it to finish{bound}{stopped}",
        holder.describe()
    );
}

/// The running guest's record for `command`, or why there is none.
fn running(dirs: &Dirs, name: &str, command: &'static str) -> Result<State> {
    super::config::check_name(name)?;
    let run = RunDir::new(&dirs.run_dir, name);
    let config = dirs.config_dir.join(format!("{name}.toml"));
    let mut found = read_lenient(&run, name)?;
    // A `start` at work mounts the root and runs init before it records
    // them: waited for, not taken for one a killed start left.
    if found.0.is_none() && unrecorded(&run) && run.locked_by_another() {
        if let Some(holder) = run.held_by() {
            say_waiting(name, &holder, Some(START_WAIT));
        }
        if !wait_until(START_WAIT, || !run.locked_by_another()) {
            return Err(Error::Busy {
                name: name.into(),
                lock: run.dir.join("lock"),
            });
        }
        found = read_lenient(&run, name)?;
    }
    match found {
        (Some(st), _) if st.other_pid_ns() => Err(other_pid_ns(&st, command)),
        (Some(st), _) if st.init_alive() => Ok(st),
        (None, _) if unrecorded(&run) => Err(Error::Unrecorded { name: name.into() }),
        // Nothing of it, and no config either: more likely a typo (as `stop`).
        (None, false) if !config.exists() => Err(Error::NoConfig {
            name: name.into(),
            path: config,
        }),
        _ => Err(Error::NotRunning { name: name.into() }),
    }
}

/// `guest update NAME --memory …`: changes the limits of a running guest
/// in place (its cgroups and its runtime record; the config is left as
/// it is). Returns the limits it has now.
pub fn update(dirs: &Dirs, name: &str, changes: &Limits) -> Result<Limits> {
    require_root("changing a guest's limits")?;
    super::config::check_name(name)?;
    let run = RunDir::new(&dirs.run_dir, name);
    // Against a concurrent stop, which removes the groups and the record.
    let _lock = lock_guest(&run, name, "update", None)?;
    let mut st = match read_locked(&run, name)? {
        (Some(st), _) if st.other_pid_ns() => return Err(other_pid_ns(&st, "update")),
        (Some(st), _) if st.init_alive() => st,
        (None, _) if unrecorded(&run) => return Err(Error::Unrecorded { name: name.into() }),
        _ => return Err(Error::NotRunning { name: name.into() }),
    };
    // The new values only: the others were taken at start, perhaps by an
    // earlier unifs with other ranges.
    changes.check()?;
    let mut limits = st.spec.limits.clone();
    let memory_added = limits.memory.is_none() && changes.memory.is_some();
    limits.memory = changes.memory.or(limits.memory);
    limits.cpus = changes.cpus.or(limits.cpus);
    limits.pids = changes.pids.or(limits.pids);
    limits.io_weight = changes.io_weight.or(limits.io_weight);
    // A Ctrl-C between two writes (or in the kernel's reclaim for a lower
    // memory limit, which it cuts short) would leave some limits changed
    // and the record saying the old ones: held until all are made (or
    // undone) and recorded.
    // Raised before the limit is written: on v2 a memory.max below the
    // guest's usage OOM-kills at once, which with the guest level with its
    // daemon could take the daemon. Harmless if the write then fails.
    let raised = match memory_added {
        true => raise_above_unshielded_daemon(name, &st.cgroup),
        false => 0,
    };
    let held = super::sys::SignalsHeld::new();
    if let Err(e) = st.cgroup.update(&group_name(&st, &run), changes) {
        if raised > 0 {
            tracing::warn!(
                "guest {name}: the new limits were not set, but its {raised} processes \
                 raised for the memory limit stay at {}, above its overlay daemon, until \
                 it is restarted: harmless in the guest, but a host-wide OOM takes them \
                 before the host's processes",
                sys::UNSHIELDED_GUEST_SCORE
            );
        }
        return Err(e);
    }
    st.spec.limits = limits.clone();
    run.write(&st)?;
    drop(held);
    warn_if_io_weight_inert(changes, &st.backing);
    warn_if_devices_changed(dirs, name, &st.spec.devices);
    Ok(limits)
}

/// A config whose `devices` differ from the running guest's: they are
/// its /dev's nodes and its devices cgroup's rules, made at start, so
/// they change at the next one. Said, as `update` changes limits only.
fn warn_if_devices_changed(dirs: &Dirs, name: &str, running: &[super::devices::Device]) {
    let Ok(cfg) = GuestConfig::load(&dirs.config_dir, name) else {
        return;
    };
    let config = dirs.config_dir.join(format!("{name}.toml"));
    let now = match super::devices::parse_devices(&cfg.devices) {
        Ok(now) => now,
        // Not "differ": what is wrong, which the next start would refuse.
        Err(e) => {
            tracing::warn!(
                "guest {name}: the devices of {}: {e}; its next start refuses them: \
                 mend them there",
                config.display()
            );
            return;
        }
    };
    // Not the host node's mode or owner, read anew: which nodes, and how.
    let key = |d: &super::devices::Device| (d.path.clone(), d.major, d.minor, d.read_only);
    if !now.iter().map(key).eq(running.iter().map(key)) {
        tracing::warn!(
            "guest {name}: the devices of {} differ from the running guest's; they \
             apply at its next start (guest restart {name})",
            config.display()
        );
    }
}

/// An I/O weight is set whatever the disk, but acts only where its
/// scheduler is bfq: said, not refused (see [`super::cgroup::io_weight_inert`]).
fn warn_if_io_weight_inert(limits: &Limits, root: &Path) {
    if limits.io_weight.is_some() {
        if let Some(why) = super::cgroup::io_weight_inert(root) {
            tracing::warn!("io_weight: {why}");
        }
    }
}

/// `guest ps NAME`: the processes in the running guest's cgroups (those of
/// `exec` sessions too), init first.
pub fn processes(dirs: &Dirs, name: &str) -> Result<Vec<super::ps::Process>> {
    let st = running(dirs, name, "ps").map_err(|e| needs_root("listing a guest's processes", e))?;
    let group = format!(
        "unifs/{}",
        group_name(&st, &RunDir::new(&dirs.run_dir, name))
    );
    let mut all = super::ps::processes(&st.cgroup.pids(), st.pid, &group);
    all.sort_by_key(|p| (p.pid != st.pid, p.guest_pid, p.pid));
    Ok(all)
}

/// The name of the running guest's groups: the one its record names (a
/// build before 2ce5951 named them unifs/NAME in every run dir, without
/// the run dir's digest), else the run dir's.
fn group_name(st: &State, run: &RunDir) -> String {
    match st.cgroup.groups.first().and_then(|g| g.file_name()) {
        Some(g) => g.to_string_lossy().into_owned(),
        None => run.cgroup_name(),
    }
}

/// Who `exec` and `enter` run the command as, and where; by default as
/// init runs.
#[derive(Debug, Default)]
pub struct ExecAs {
    /// `USER[:GROUP]` of the guest's /etc/passwd and /etc/group.
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// `enter`: the user's login shell instead of the command, if its
    /// passwd entry names one.
    pub login_shell: bool,
}

/// `guest exec NAME -- CMD`: runs CMD inside the running guest, in all its
/// namespaces and cgroups, with its privileges; returns CMD's exit status.
/// With `tty`, CMD gets a terminal of the guest's own (see [`console`]).
/// `st` is the guest's record as [`joinable`] read it.
pub fn exec(
    dirs: &Dirs,
    name: &str,
    st: State,
    command: Vec<String>,
    tty: bool,
    who: ExecAs,
) -> Result<i32> {
    // A pty's end of input is a ^D that a line editor may take before it
    // reads the pipe's last line, or not as an end at all: the command
    // never ended (as `docker exec -t` refuses it).
    if tty && !nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        return Err(Error::Invalid {
            what: "option",
            value: "--tty".into(),
            reason: "stdin is not a terminal: without --tty the command reads \
                     the pipe or file itself, to its end"
                .into(),
        });
    }
    exec_in(dirs, name, st, command, tty, who)
}

/// The record of the running guest `name` that `exec` or `enter`
/// (`command`) is to join, read once: the caller checks what joining it
/// needs on this one, then passes it to [`exec`] or [`enter`]. (Read
/// again, it could name another guest, restarted meanwhile: a check for
/// one, an exec into the other.) Whether its init still runs is checked
/// again once a pidfd pins it ([`join_and_run`]).
pub fn joinable(dirs: &Dirs, name: &str, command: &'static str) -> Result<State> {
    require_root("entering a guest")?;
    running(dirs, name, command)
}

/// How long `status` and `exec` first wait for a guest's overlay root to
/// answer.
pub const ROOT_ASK: Duration = Duration::from_secs(1);

/// How long `exec` waits for the overlay daemon of a guest that runs but
/// did not answer within [`ROOT_ASK`].
pub const BUSY_ROOT_WAIT: Duration = Duration::from_secs(30);

/// Why nothing can reach a guest's overlay root that is `serving` so, asked
/// for `waited`: None when it answers.
pub fn root_refusal(name: &str, serving: state::RootServing, waited: Duration) -> Option<Error> {
    use state::RootServing as R;
    let name = name.to_string();
    Some(match serving {
        R::Answers => return None,
        R::Lost | R::Stopped(None) => Error::RootLost { name },
        R::Stopped(Some(pid)) => Error::RootStopped { name, pid },
        R::Busy(pid) => Error::RootBusy {
            name,
            pid,
            secs: waited.as_secs(),
        },
    })
}

/// [`exec`] in the guest `st` records. A `stop` may end the guest at any
/// step of joining it, each failing with an errno of its own (ESRCH from
/// setns, ENOMEM from a fork into the dying PID namespace, a root gone):
/// said as what happened.
fn exec_in(
    dirs: &Dirs,
    name: &str,
    st: State,
    command: Vec<String>,
    tty: bool,
    who: ExecAs,
) -> Result<i32> {
    let pid = st.pid;
    let stopped = || Error::StoppedMeanwhile {
        name: name.into(),
        pid,
    };
    let pidfd = match sys::pidfd_open(Pid::from_raw(pid)) {
        Err(nix::errno::Errno::ESRCH) => return Err(stopped()),
        pidfd => pidfd.map_err(|e| Error::sys(format!("pidfd_open {pid}"), e))?,
    };
    join_and_run(dirs, name, st, &pidfd, command, tty, who).map_err(|e| match ended(&pidfd) {
        true => stopped(),
        false => e,
    })
}

/// Whether the process of `pidfd` has ended or is ending. An init that
/// ends is no zombie until every other process of its PID namespace is
/// reaped (by a parent outside it too), but its namespaces go first: asked
/// by joining its UTS namespace (ESRCH without one), which costs a failing
/// `exec` nothing, whatever namespaces it joined already.
fn ended(pidfd: &OwnedFd) -> bool {
    nix::sched::setns(pidfd, CloneFlags::CLONE_NEWUTS) == Err(nix::errno::Errno::ESRCH)
}

/// [`exec_in`]'s work. All it needs comes from the record, never from the
/// config, which may have been edited or removed since the guest started
/// (as `nsenter` needs no unit file).
fn join_and_run(
    dirs: &Dirs,
    name: &str,
    st: State,
    pidfd: &OwnedFd,
    command: Vec<String>,
    tty: bool,
    who: ExecAs,
) -> Result<i32> {
    // Else the command's exec fails with a bare ENOTCONN.
    let root = RunDir::new(&dirs.run_dir, name).root();
    if let Some((file, thaw)) = st.cgroup.frozen() {
        return Err(Error::Frozen {
            name: name.into(),
            file,
            thaw,
        });
    }
    // A daemon that does not answer (stopped, hung) would leave the
    // command waiting on the root for good. (A frozen guest's is frozen
    // with it: refused above, at once.)
    if st.root_mount == RootMount::Overlay {
        let mut waited = ROOT_ASK;
        let mut serving = state::root_serving(&root, &st.backing, waited);
        // One that runs is busy (a long break, a guest flooding it), not
        // lost: it is given longer, as `crate::fs::refuse_stalled` gives a
        // busy daemon's mount.
        if matches!(serving, state::RootServing::Busy(_)) {
            waited = BUSY_ROOT_WAIT;
            serving = state::root_serving(&root, &st.backing, waited);
        }
        if let Some(e) = root_refusal(name, serving, waited) {
            return Err(e);
        }
    }
    // Init may have died since `running` checked it, and its pid gone to
    // another process, whose namespaces the pidfd would join: checked again
    // now that the pidfd pins whichever process it is.
    if !state::alive(st.pid, st.start_time) {
        return Err(Error::NotRunning { name: name.into() });
    }
    // The guest's user database as the guest sees it now (its mounts and
    // binds included), through init's root, links kept inside it. Before
    // setns: the check in `user` reopens the file through this process's
    // /proc/self, which the guest's /proc does not show.
    let account = match &who.user {
        Some(user) => {
            let root = PathBuf::from(format!("/proc/{}/root", st.pid));
            let dir = std::fs::File::open(&root).map_err(|e| Error::io("opening", &root, e))?;
            // Init's root only while init still runs: its PID cannot have
            // gone to another process before this check.
            if !state::alive(st.pid, st.start_time) {
                return Err(Error::NotRunning { name: name.into() });
            }
            Some(super::user::resolve_in(&dir, &root, user)?)
        }
        None => None,
    };
    // A command run as root takes the guest's capability set (a user who
    // is not root keeps none): capset(2) would refuse a set this process
    // does not hold with a bare EPERM.
    if account.as_ref().map_or(st.spec.uid, |a| a.uid) == 0 {
        let lacking = st.spec.caps & !super::caps::held();
        if lacking != 0 {
            return Err(Error::CapsNotHeld {
                name: name.into(),
                missing: super::caps::names(lacking),
            });
        }
    }
    // The guest's tty group, for the command's terminal: read as the user
    // database is, and for the same reason before setns.
    let tty_group = match tty {
        true => super::user::tty_group(Path::new(&format!("/proc/{}/root", st.pid))),
        false => None,
    };
    if !state::alive(st.pid, st.start_time) {
        return Err(Error::NotRunning { name: name.into() });
    }
    // The command joins the guest's cgroups, not this process: it stays on
    // the host (proxying `enter`'s terminal) until the command has ended,
    // and `stop` kills what it finds in them. Opened before setns hides them.
    let procs = st.cgroup.open_procs()?;
    // Not the PID namespace yet: the helper below is forked outside it, so
    // no guest process can see it, let alone ptrace it (guest root may have
    // CAP_SYS_PTRACE), while it holds every capability.
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if st.spec.net.mode != NetMode::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // The command's, through the helper: in the guest's /proc neither has
    // a /proc/self yet, and the helper drops CAP_SYS_RESOURCE. This
    // process's own is put back once the helper is forked.
    let own_score = sys::own_oom_score();
    sys::set_guest_oom_score(st.spec.limits.memory.is_some() && st.cgroup.daemon_unshielded());
    // The command's end by SIGKILL is the OOM killer's if the kernel's log
    // names it (see OomWatch). Before the fork (a kill at once is counted
    // and logged after these), and before setns hides the host's /proc,
    // /dev and cgroups.
    let oom_first = st.cgroup.oom_counts();
    let kernel_log = super::kernel_log::KernelLog::open();
    // This process goes back to them once the helper is forked (see below).
    let own = own_namespaces(flags)?;
    // setns(2) with a pidfd joins all of them at once; joining the mount
    // namespace moves root and working directory to the guest's root.
    nix::sched::setns(pidfd, flags)
        .map_err(|e| Error::sys(format!("setns into guest {name}"), e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir /", e))?;
    let mut spec = st.spec.clone();
    // The limits init started with, not this caller's.
    if let Some(start) = &st.start_rlimits {
        spec.rlimits = start.clone();
    }
    spec.command = command;
    spec.root = PathBuf::from("/");
    if let Some(account) = account {
        if let Some(shell) = account.shell.as_ref().filter(|_| who.login_shell) {
            spec.command = vec![shell.clone()];
        }
        spec.set_user(account);
        // The user's home, not init's directory, unless one is named.
        spec.workdir = None;
    }
    if who.workdir.is_some() {
        spec.workdir = who.workdir;
    }
    // Opened here, after setns: /dev/ptmx is now the guest's devpts. The
    // command's user's, as sshd hands a session's pty to its user.
    let pty = if tty {
        let pty = console::open_pty()?;
        console::give_terminal(&pty, spec.uid, spec.gid, tty_group)?;
        Some(pty)
    } else {
        None
    };
    let piped = match tty {
        true => None,
        false => Some(console::Piped::open()?),
    };
    let (report_r, report_w) = launch::report_channel()?;
    // The command says its PID, for the kernel's log (see below).
    let (pid_r, pid_w) = super::command_pid::channel()?;
    // A helper outside the guest's PID namespace sets up and drops every
    // privilege; only then does it fork the command into the namespace
    // (which applies to children only), and relays signals and its status.
    match sys::fork().map_err(|e| Error::fork("forking the `exec` helper", e))? {
        Forked::Child => {
            let report = Some((report_w.as_raw_fd(), "E"));
            sys::in_child("the `exec` helper", report, move || {
                drop(report_r);
                drop((pid_r, kernel_log));
                // The host's namespaces are no business of the guest's side.
                drop(own);
                let piped = piped.as_ref();
                exec_helper(pidfd, &spec, pty.as_ref(), piped, procs, report_w, pid_w)
            })
        }
        Forked::Parent(child) => {
            drop((report_w, pid_w));
            // Out of the guest's namespaces, which would live on while this
            // process does: one stopped (SIGSTOP, a debugger) kept the
            // guest's root (its mount namespace: a `stop`'s unmount did not
            // end the overlay daemon), its SysV shared memory and message
            // queues (IPC), its network namespace and hostname after the
            // guest had stopped. Its terminal and pipes are open already.
            for (ns, flag) in &own {
                if let Err(e) = nix::sched::setns(ns, *flag) {
                    tracing::warn!("setns back to this process's {flag:?} namespace: {e}");
                }
            }
            // A caller's proxy on the host is no guest process: its score
            // stays its own (999 would make it a host-wide OOM's first).
            if let Some(score) = &own_score {
                sys::put_oom_score_back(score);
            }
            // After the fork (no thread of ours while it forks) and the
            // setns (refused to a process with threads).
            let watch = OomWatch::start(st.cgroup.clone(), oom_first, kernel_log, None);
            sys::forward_signals_to(child).map_err(|e| Error::sys("signal handlers", e))?;
            // Guest root can take the report socket from the trampoline
            // (pidfd_getfd on a process of its own uid) and hold it, or fill
            // it: so no wait for its end, and only a little of it is read,
            // once the helper is gone, and only for the helper's failure
            // status (a guest's text then claims no more than the
            // command's own stderr could).
            // Not yet waited for: the pidfd is the helper's, whatever
            // takes its pid once it is reaped.
            let helper = sys::pidfd_open(child).ok();
            // A command that signals do not end (stopped by the guest, or
            // ignoring them): the second signal ends `exec`, and the
            // command is left to the guest.
            let end = || {
                if let Some(fd) = &helper {
                    let _ = sys::pidfd_kill(fd.as_fd(), libc::SIGKILL);
                }
            };
            let status = launch::on_second_signal(end, || match (pty, piped) {
                (Some(p), _) => console::proxy(p.master, child),
                (None, Some(p)) => p.proxy(child),
                (None, None) => launch::wait_exit(child),
            })?;
            let report = launch::read_report_now(report_r);
            match (status.code, report.is_empty()) {
                (127 | sys::CHILD_FAILED, false) => Err(launch::decode_report(
                    &spec.command[0],
                    &st.backing,
                    &report,
                )),
                _ => {
                    let what = match who.login_shell {
                        true => format!("the shell in guest {name}"),
                        false => format!("the command in guest {name}"),
                    };
                    let said = super::command_pid::received(&pid_r, child.as_raw());
                    let end = launch::Ended::of(status, Some(said));
                    // The helper too: outside the guest's groups, the
                    // host's OOM killer alone may pick it.
                    let pids = [said.command, Some(child.as_raw())];
                    let judged = launch::judge_end(watch, &pids, &end, &st.cgroup, &what, false);
                    // Else a bare 137: the kernel ends every process of a
                    // PID namespace with its init (`guest stop`, or init's
                    // own end), the command's helper outside it reports a
                    // SIGKILL. Asked last: `ended` joins init's UTS
                    // namespace when it has not ended.
                    let killed = end.killed() && end.reaper_killed_after_exit().is_none();
                    if let Some(why) = (killed && !judged.oom)
                        .then(|| stopped_while_it_ran(dirs, name, &st, pidfd))
                        .flatten()
                    {
                        tracing::warn!("{what} was killed: the guest stopped while it ran ({why})");
                    }
                    Ok(judged.code)
                }
            }
        }
    }
}

/// Why a command that `exec` ran in guest `st` (its init `pidfd`) was
/// SIGKILLed, when the guest's stop did it: its init ended, and every
/// process of the guest with it; or a `stop` of it is at work (its lock
/// held for one, as it is until init has ended). A stop
/// kills what is in the guest's groups right after init: an init that
/// does not end at once (in D state, waiting on a hung overlay daemon)
/// outlives the command, and the exec, asking only whether init had
/// ended, said nothing (a bare 137). Asked last: `ended` joins init's UTS
/// namespace when it has not ended.
fn stopped_while_it_ran(dirs: &Dirs, name: &str, st: &State, pidfd: &OwnedFd) -> Option<String> {
    if ended(pidfd) {
        return Some(format!(
            "its init, pid {}, ended, and every process of the guest with it",
            st.pid
        ));
    }
    let run = RunDir::new(&dirs.run_dir, name);
    let holder = run.held_by().filter(|h| h.what == "stop")?;
    Some(format!(
        "it is {}, which ends every process of the guest",
        holder.describe()
    ))
}

/// The helper [`join_and_run`] forks: it sets up and drops every privilege,
/// then forks the command into the guest's PID namespace (which applies to
/// children only), and relays signals and its status.
fn exec_helper(
    pidfd: &OwnedFd,
    spec: &GuestSpec,
    pty: Option<&console::Pty>,
    piped: Option<&console::Piped>,
    procs: Vec<std::fs::File>,
    report: OwnedFd,
    pid_to: OwnedFd,
) -> ! {
    sys::set_not_dumpable();
    sys::set_guest_umask();
    sys::clear_unsafe_personality();
    // As in launch: no controlling terminal, so no TIOCSTI.
    let _ = nix::unistd::setsid();
    // The cgroup namespace rooted in the guest's groups, and the PID
    // namespace for the command. Only the command joins the groups
    // (`stop` must not find this helper there): through the files
    // opened before, whose opener's rights the kernel checks.
    let ready = nix::sched::setns(pidfd, CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| Error::sys("setns into the guest's cgroup namespace", e))
        .and_then(|()| {
            nix::sched::setns(pidfd, CloneFlags::CLONE_NEWPID)
                .map_err(|e| Error::sys("setns into the guest's PID namespace", e))
        })
        .and_then(|()| pty.map_or(Ok(()), |p| console::attach_slave(&p.slave)))
        .and_then(|()| piped.map_or(Ok(()), console::Piped::attach))
        .and_then(|()| sys::close_fds_on_exec().map_err(|e| Error::sys("close_range", e)))
        .and_then(|()| rootfs::drop_privileges(&Linux, spec, true));
    if let Err(e) = ready {
        let _ = nix::unistd::write(&report, format!("E{e}").as_bytes());
        sys::exit_child(127);
    }
    crate::sys::test_panic!("exec-helper");
    launch::reap_and_forward(spec, report, Some(pid_to), move || Cgroup::join(procs))
}

/// This process's own namespaces of the kinds in `flags`, to go back to.
fn own_namespaces(flags: CloneFlags) -> Result<Vec<(std::fs::File, CloneFlags)>> {
    let kinds = [
        (CloneFlags::CLONE_NEWNS, "mnt"),
        (CloneFlags::CLONE_NEWUTS, "uts"),
        (CloneFlags::CLONE_NEWIPC, "ipc"),
        (CloneFlags::CLONE_NEWNET, "net"),
    ];
    let wanted = kinds.into_iter().filter(|(flag, _)| flags.contains(*flag));
    wanted
        .map(|(flag, kind)| {
            let path = format!("/proc/self/ns/{kind}");
            let file = std::fs::File::open(&path).map_err(|e| Error::io("opening", &path, e))?;
            Ok((file, flag))
        })
        .collect()
}

/// `guest enter NAME`: the configured shell, on a terminal of the guest's
/// own when we have one. `st` is the guest's record as [`joinable`] read
/// it.
pub fn enter(dirs: &Dirs, name: &str, mut st: State, who: ExecAs) -> Result<i32> {
    // The shell it was started with; a record of an older unifs has none.
    let shell = match st.shell.take() {
        Some(shell) => shell,
        None => GuestConfig::load(&dirs.config_dir, name)?.shell,
    };
    let tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let who = ExecAs {
        login_shell: true,
        ..who
    };
    exec_in(dirs, name, st, vec![shell], tty, who)
}

/// One line of `list`, or `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub name: String,
    pub running: bool,
    pub pid: Option<i32>,
    /// Stopped, but a runtime record is left (its init died, or the record
    /// is unreadable).
    pub stale: bool,
    /// Started from another PID namespace than this one: taken as running
    /// (whether it runs cannot be told from here), and left alone.
    pub other_pid_ns: bool,
    /// Running without a runtime record (its `start` was killed before
    /// writing it): `stop` ends it, `exec` cannot enter it.
    pub unrecorded: bool,
    /// Why a guest running `unrecorded` has no record: its file missing
    /// or unreadable (for saying what to do).
    #[serde(skip)]
    pub unrecorded_why: Option<String>,
    /// The mount point of a mount made over its run dir (over RUN_DIR/NAME
    /// or a directory above it) since its root was mounted: its record,
    /// lock and console.log are under it ([`RunDir::covered`]).
    pub run_dir_covered: Option<String>,
    /// That mount's type, for saying it.
    #[serde(skip)]
    pub run_dir_cover_type: Option<String>,
    /// Why its run dir, RUN_DIR/NAME, was not looked into: it is (in) a
    /// FUSE mount whose daemon does not answer (`list` only: the others
    /// refuse such a guest). Nothing else is known of it then.
    pub run_dir_stalled: Option<String>,
    /// Running, but its overlay root does not answer: its daemon died (or
    /// is stopped), and the guest's files are unreachable until a stop and
    /// start (or, stopped, until it goes on).
    pub root_lost: bool,
    /// Running, and its overlay root did not answer within [`ROOT_ASK`], but its
    /// daemon runs: busy (a long break, a guest flooding it), or hung.
    pub root_busy: bool,
    /// How its overlay root answered (None: not asked), for saying why.
    #[serde(skip)]
    pub root_serving: Option<state::RootServing>,
    /// Running on its overlay root, but the directory at `root` is not the
    /// one served: the guest's directory was moved away (or replaced)
    /// since it started, and it runs on that one, wherever it is now.
    pub root_moved: bool,
    /// Running, but frozen (paused) in one of its cgroups: its processes
    /// do not run, and `exec`/`enter` refuse it.
    pub frozen: bool,
    /// A `start` of it is at work (its lock held, its init not yet
    /// recorded): not running yet, nor stopped; nothing is to clean up.
    pub starting: bool,
    /// Running, but its init is no longer its keeper's child: the keeper
    /// was killed (SIGKILL, the OOM killer), so how init ends will not be
    /// recorded, nor will its own reboot start it again.
    pub keeper_gone: bool,
    #[serde(flatten, serialize_with = "crate::sys::json_root")]
    pub root: Option<PathBuf>,
    pub memory_bytes: Option<u64>,
    /// Running: how many of its processes the OOM killer of its memory
    /// group killed since an operator started it, across its own reboots
    /// (more than none), as systemd says "A process of this unit has been
    /// killed by the OOM killer".
    pub oom_kills: Option<u64>,
    /// Processes (not threads) in its cgroups, as `guest ps` lists them.
    pub processes: Option<u64>,
    pub uptime_secs: Option<u64>,
    /// The limits it runs under (as started, or as `update` changed them).
    pub limits: Option<Limits>,
    /// Running with `--net veth`: its host end (`ve-NAME`), for the host's
    /// tools (`ip addr show dev …`, a firewall rule).
    pub host_interface: Option<String>,
    /// Running with `lock_mac`: the MAC address of its `eth0` (the one its
    /// port takes frames from), for a DHCP reservation or a switch's ACL.
    pub mac_address: Option<String>,
    /// `mac_address` was derived again from the name and /etc/machine-id
    /// as it is now, not recorded: the start, an older unifs's, kept none.
    pub mac_address_derived: bool,
    /// Running: how many times its keeper started it again after its own
    /// reboot, since an operator's `start`.
    pub reboots: Option<u32>,
    /// How the last init ended, while stopped (until the next start): seen
    /// by its keeper; None if unknown (an older unifs, a killed keeper).
    pub last_exit: Option<state::Exit>,
    /// The overlay daemon's log (`RUN_DIR/NAME/mount.log`), when it holds
    /// anything: a warning of the daemon (the open-file limit, …).
    #[serde(flatten, serialize_with = "crate::sys::json_mount_log")]
    pub mount_log: Option<PathBuf>,
    /// Running with the device policy of an older build (see
    /// [`Cgroup::outdated_device_policy`]): what it lacks, until a restart.
    pub outdated_device_policy: Option<&'static str>,
}

pub fn status(dirs: &Dirs, name: &str) -> Result<Status> {
    let kept = super::kept::KeptOnce::new(&dirs.run_dir);
    let links = super::net::HostLinks::default();
    status_of(dirs, name, &kept, &links).map_err(|e| needs_root("reading a guest's status", e))
}

/// [`status`], with the keepers' run dirs (`keepers`) scanned and the
/// host's links (`links`) listed once for all the guests looked at.
fn status_of(
    dirs: &Dirs,
    name: &str,
    keepers: &super::kept::KeptOnce,
    links: &super::net::HostLinks,
) -> Result<Status> {
    super::config::check_name(name)?;
    let run = RunDir::new(&dirs.run_dir, name);
    // The last exit before the record: the keeper of an init that ended
    // writes its stop into the exit only once it has removed the record,
    // so an exit read first is never newer than the record read after (the
    // other way, a record of the stop's start and an exit of its end showed
    // a guest both stopped by its keeper and stale).
    let exit = run.read_exit();
    // The tests' window between the two reads.
    crate::sys::test_stop!("UNIFS_TEST_STATUS_STOP");
    let (st, bad) = read_lenient(&run, name)?;
    // Its run dir covered: its record is read through the directory its
    // keeper holds, where there is one (init runs), as it is.
    let covered = run.covered();
    let st = match st {
        None if covered.is_some() && !bad => record_kept(keepers, name),
        st => st,
    };
    // Mounting its root and starting init before it records them; an old
    // record of a dead init is still there while it cleans it up.
    let starting = !st.as_ref().is_some_and(State::maybe_running)
        && run.locked_for().is_some_and(|what| what == "start");
    let st = st.filter(|_| !starting);
    let bad = bad && !starting;
    // No record: a killed `start` may have left the guest running.
    let unrecorded = (st.is_none() && !starting)
        .then(|| Cgroup::tracked(&run.cgroup_name()))
        .filter(|c| !c.pids().is_empty());
    let config = dirs.config_dir.join(format!("{name}.toml"));
    if st.is_none() && !bad && unrecorded.is_none() && !starting && !config.exists() {
        return Err(Error::NoConfig {
            name: name.into(),
            path: config,
        });
    }
    let other_pid_ns = st.as_ref().is_some_and(State::other_pid_ns);
    let running = other_pid_ns || st.as_ref().is_some_and(State::init_alive);
    // Nothing of its pids is ours to read.
    let live = st.as_ref().filter(|_| running && !other_pid_ns);
    let cgroup = live.map(|s| &s.cgroup).or(unrecorded.as_ref());
    // The daemon is frozen with the guest (its leaf is below the same
    // group): it is not asked, which would wait for it.
    let frozen = cgroup.is_some_and(|c| c.frozen().is_some());
    // (Its root's path leads into the cover.)
    let root_serving = live
        .filter(|s| s.root_mount == RootMount::Overlay && !frozen && covered.is_none())
        .map(|s| state::root_serving(&run.root(), &s.backing, ROOT_ASK));
    use state::RootServing as R;
    let root_lost = matches!(root_serving, Some(R::Lost | R::Stopped(_)));
    // The path recorded names the directory served only while its daemon
    // holds that directory's flock: one moved away is served where it went.
    let root_moved = live.is_some_and(|s| {
        s.root_mount == RootMount::Overlay
            && !root_lost
            && crate::fs::refuse_stalled(&s.backing).is_ok()
            && !crate::fs::guest_still_served(&s.backing)
    });
    // Its keeper's files are where its record was read: through the
    // directory the keeper holds, where a mount covers the path.
    let kept_dir = match &covered {
        Some(_) => keepers.of(name).map(|k| k.dir.clone()),
        None => Some(run.dir.clone()),
    };
    let locked = live.filter(|s| s.spec.net.lock_mac);
    let mac_address = locked.and_then(|s| {
        (s.mac_address.clone())
            .or_else(|| super::port_lock::guest_mac(&s.spec.name, s.spec.names()).ok())
    });
    Ok(Status {
        name: name.into(),
        running: running || unrecorded.is_some(),
        pid: live.map(|s| s.pid),
        // An unreadable record names no live init either.
        stale: (st.is_some() || (bad && unrecorded.is_none())) && !running,
        other_pid_ns,
        // Not unrecorded: its record is there, under the mount.
        unrecorded: unrecorded.is_some() && covered.is_none(),
        unrecorded_why: unrecorded
            .as_ref()
            .filter(|_| covered.is_none())
            .map(|_| no_record_why(&run)),
        run_dir_covered: covered.as_ref().map(|m| crate::sys::shown(&m.point)),
        run_dir_cover_type: covered.map(|m| m.fstype),
        run_dir_stalled: None,
        root_lost,
        root_busy: matches!(root_serving, Some(R::Busy(_))),
        root_serving,
        root_moved,
        frozen,
        starting,
        keeper_gone: live.is_some_and(|s| !kept(s.pid)),
        // Stopped: the configured root, which a start would take (as
        // written: a root in a mount that does not answer holds nothing up).
        root: st.as_ref().map(|s| s.backing.clone()).or_else(|| {
            (!running && unrecorded.is_none() && !starting)
                .then(|| GuestConfig::configured_root(&dirs.config_dir, name))
                .flatten()
        }),
        memory_bytes: cgroup.and_then(|c| c.memory_bytes()),
        // What its keeper kept too (a group removed since it read it).
        oom_kills: match live {
            Some(_) => cgroup.and_then(|c| super::oom_watch::kept_kills(kept_dir.as_deref(), c)),
            None => cgroup.and_then(|c| c.oom_kills()).map(|k| k.count),
        }
        .filter(|&n| n > 0),
        // Processes as `ps` lists them; pids.current counts threads too.
        processes: cgroup.map(|c| c.pids().len() as u64),
        uptime_secs: live.map(|s| state::running_secs(s.start_time)),
        limits: live.map(|s| s.spec.limits.clone()),
        host_interface: live
            .and_then(|s| super::net::host_ifname_shown(&s.spec, s.host_ifindex, links)),
        mac_address: mac_address.clone(),
        // Not without an address (no /etc/machine-id to derive it from).
        mac_address_derived: locked.is_some_and(|s| s.mac_address.is_none())
            && mac_address.is_some(),
        reboots: live.map(|s| s.reboots.count),
        last_exit: exit
            .filter(|_| !running && unrecorded.is_none() && !starting)
            // A late keeper of an earlier init says nothing of this one.
            .filter(|e| {
                st.as_ref()
                    .is_none_or(|s| (s.pid, s.start_time) == (e.pid, e.start_time))
            }),
        mount_log: Some(run.mount_log())
            .filter(|l| std::fs::metadata(l).is_ok_and(|m| m.len() > 0)),
        outdated_device_policy: live.and_then(|s| s.cgroup.outdated_device_policy(&s.spec.devices)),
    })
}

/// The record of guest `name` in the run dir its keeper holds open
/// ([`super::kept`]), where its path no longer leads to it.
fn record_kept(keepers: &super::kept::KeptOnce, name: &str) -> Option<State> {
    let kept = keepers.of(name)?;
    let bytes = std::fs::read(kept.dir.join("state.json")).ok()?;
    serde_json::from_slice::<State>(&bytes)
        .ok()
        .filter(|st| st.name == name)
}

/// Whether `init` (running) is its keeper's child, as every init `start`
/// ran is until its keeper is killed; true where that cannot be read.
fn kept(init: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
    // ppid (4), after the state (3).
    let parent = state::stat_fields(&stat).and_then(|f| f.get(1)?.parse::<i32>().ok());
    let Some(parent) = parent else {
        return true;
    };
    super::kept::named_keeper(parent).unwrap_or(true)
}

/// Why a guest that runs has no record ([`Status::unrecorded`]): its
/// file missing, unreadable or of an ended PID namespace.
fn no_record_why(run: &RunDir) -> String {
    let path = crate::sys::shown(&run.state_file());
    match run.read() {
        Err(Error::Record { reason, .. }) => format!("{path} is unreadable ({reason})"),
        Err(e) => format!("{path} cannot be read ({e})"),
        Ok(Some(st)) if st.pid_ns_ended() => {
            format!("{path} is of a PID namespace that has ended")
        }
        _ => format!(
            "{path} is missing (moved or removed, or its `guest start` or keeper was killed \
             before it wrote it)"
        ),
    }
}

/// How long more `list` gives the busy daemon of a FUSE mount at a run dir.
const LIST_BUSY_LIMIT: Duration = Duration::from_secs(3);

/// Every guest with a config or a runtime record, by name.
pub fn list(dirs: &Dirs) -> Result<Vec<Status>> {
    let mut names = std::collections::BTreeSet::new();
    // A run dir (in) a FUSE mount whose daemon does not answer: any look
    // into it waits for good, and `list` with it, for every guest. One
    // whose daemon runs but is slow (busy) is given 3 s more, not 30: its
    // guest is listed as not answering, the others without that wait.
    let mountinfo = Path::new("/proc/self/mountinfo");
    let stalls = crate::fs::StallCheck::new()
        .map_err(|e| Error::io("reading", mountinfo, e))?
        .busy_limit(LIST_BUSY_LIMIT);
    let stalled = |name: &str| {
        let dir = dirs.run_dir.join(name);
        stalls
            .refuse(&dir)
            .err()
            .filter(|e| e.kind() == std::io::ErrorKind::TimedOut)
    };
    for (dir, want_toml) in [(&dirs.config_dir, true), (&dirs.run_dir, false)] {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            // A mistyped --config-dir listed nothing, as if no guest were
            // configured. (A run dir appears with the first start.)
            Err(e) if want_toml => {
                tracing::warn!("no guest configs read from {}: {e}", dir.display());
                continue;
            }
            Err(_) => continue,
        };
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = if want_toml {
                let name = file.strip_suffix(".toml").map(str::to_string);
                // Hidden files (an editor's lock) are not meant as configs.
                if let Some(Err(err)) = name
                    .as_deref()
                    .filter(|_| !file.starts_with('.'))
                    .map(check_name)
                {
                    tracing::warn!(
                        "{} is not listed and cannot be started: {err}",
                        crate::sys::shown(&dir.join(e.file_name()))
                    );
                }
                name
            } else {
                let known = stalled(&file).is_some()
                    || e.path().join("state.json").exists()
                    || (check_name(&file).is_ok() && unrecorded(&RunDir::new(dir, &file)));
                known.then_some(file)
            };
            if let Some(n) = name.filter(|n| check_name(n).is_ok()) {
                names.insert(n);
            }
        }
    }
    // A guest whose run dir is covered (and config removed) is found by
    // its keeper, which holds that dir; one that has just ended is not.
    // Looked for only when a root is mounted there for a guest not found
    // so: all processes' fds are not read for nothing.
    let unseen = super::kept::roots_mounted(&dirs.run_dir)
        .into_iter()
        .any(|n| !names.contains(&n));
    // Scanned once, here or at the first covered guest's status.
    let keepers = super::kept::KeptOnce::new(&dirs.run_dir);
    // Listed once, at the first veth guest's status.
    let links = super::net::HostLinks::default();
    let kept: Vec<String> = match unseen {
        true => keepers.all().iter().map(|k| k.name.clone()).collect(),
        false => Vec::new(),
    };
    let kept: Vec<String> = kept.into_iter().filter(|n| !names.contains(n)).collect();
    names.extend(kept.iter().cloned());
    // Run dirs that do not answer first, in turn: their look shares what
    // it learnt of each mount.
    let names: Vec<(&String, Option<std::io::Error>)> =
        names.iter().map(|n| (n, stalled(n.as_str()))).collect();
    // Each guest's status asks its overlay root (up to ROOT_ASK): taken in
    // turn, `list` waited a second for each guest whose daemon stalls (8.7 s
    // for 8 of 40 guests), and a host whose daemons all stall at once (a
    // hung disk) a second per guest. The one mount table and `links` are
    // shared by all the looks.
    // UNIFS_TEST_LIST_LOOKS: one at a time, in name order, for a test
    // that acts between two guests' looks (review_s51_netfix).
    let threads = crate::sys::test_bound!("UNIFS_TEST_LIST_LOOKS", LIST_LOOKS);
    // UNIFS_TEST_LIST_LAST=NAME: that guest's look begins once all the
    // others' have ended (up to 30 s), so that its warning is made last
    // (review_s52_docs: the warnings still come out in the list's order).
    let last = crate::sys::test_hook!("UNIFS_TEST_LIST_LAST");
    let looked = std::sync::atomic::AtomicUsize::new(0);
    let looks = super::at_once::each(&names, threads, |(n, stalled)| {
        if last.is_some_and(|l| l == n.as_str()) {
            use std::sync::atomic::Ordering::SeqCst;
            wait_until(Duration::from_secs(30), || {
                looked.load(SeqCst) + 1 >= names.len()
            });
        }
        let look = match stalled {
            Some(why) => Some(Ok(Status {
                name: n.to_string(),
                run_dir_stalled: Some(why.to_string()),
                ..Status::default()
            })),
            None => match status_of(dirs, n, &keepers, &links) {
                Err(Error::NoConfig { .. }) if kept.contains(*n) => None,
                st => Some(st.map_err(|e| needs_root("listing guests", e))),
            },
        };
        looked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        look
    });
    looks.into_iter().flatten().collect()
}

/// How many guests `list` looks at at once.
const LIST_LOOKS: usize = 16;
