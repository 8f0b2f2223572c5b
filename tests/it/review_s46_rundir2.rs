//! Review s46 (rundir2): what s45's "rundir" left of a named guest's run
//! dir (RUN_DIR/NAME) in trouble while the guest runs: a run dir bound
//! onto itself after the start (the same directory on a new mount, no
//! cover), what a keeper writes or removes once its run dir is covered,
//! and the commands of a guest whose RUN_DIR/NAME is a FUSE mount that
//! does not answer.

use crate::guest::harness::{alive, can_run, ok, parent_of, stderr, stdout, within_30s};
use crate::guest::named::Guest;
use crate::review_s20_backup::TmpfsMount;
use crate::review_s36_hung::Hung;
use crate::review_s36_reboot::rebooting_guest;
use crate::review_s45_rundirrev::Bind;
use nix::mount::MsFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A guest started with RUN_DIR a tmpfs of the test's own, and its init.
/// Dropped: the guest stopped, the tmpfs unmounted, then the guest's temp
/// dir removed (the tmpfs is in it: mounted still, `rmdir` failed with
/// EBUSY and left the dir in /tmp, review_s51_leftover). What the test
/// mounts over the run dir, declared after it, is dropped before.
pub(crate) struct InOwnTmpfs {
    pub(crate) g: Guest,
    pub(crate) init: i64,
    tmpfs: Option<TmpfsMount>,
}

impl Drop for InOwnTmpfs {
    fn drop(&mut self) {
        let _ = self.g.unifs(&["stop", "--timeout", "0", &self.g.name]);
        self.tmpfs.take();
    }
}

pub(crate) fn started_in_own_tmpfs(test: &str, init: &str) -> InOwnTmpfs {
    let g = Guest::new(test, init, false);
    let tmpfs = TmpfsMount::at(&g.run_dir);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    InOwnTmpfs {
        g,
        init,
        tmpfs: Some(tmpfs),
    }
}

/// Kills `init` and waits for its keeper to end.
fn kill_init_and_wait_keeper(init: i64, signal: Signal) {
    let keeper = parent_of(init);
    kill(Pid::from_raw(init as i32), signal).unwrap();
    assert!(
        within_30s(|| !alive(keeper.into())),
        "keeper {keeper} lives"
    );
}

/// The guest's exit.json, parsed (Null when missing).
fn exit_json(g: &Guest) -> serde_json::Value {
    let file = g.run_dir.join(&g.name).join("exit.json");
    let text = std::fs::read_to_string(file).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_default()
}

/// RUN_DIR bound onto itself with its mounts (`mount --rbind X X`) after
/// the guest started: the same directory on a new mount, the root's mount
/// copied onto it. Before, the keeper compared mount ids, took the run
/// dir for lost and left the guest unstopped ("no longer leads to the
/// guest's"); now it compares the directory (device and inode) and stops
/// the guest as ever.
#[test]
fn s46_a_keeper_whose_run_dir_was_bound_onto_itself_stops_its_guest() {
    if !can_run("s46_a_keeper_whose_run_dir_was_bound_onto_itself_stops_its_guest") {
        return;
    }
    let s = started_in_own_tmpfs("s46rbind", "[\"/bin/sleep\", \"1000\"]");
    let (g, init) = (&s.g, s.init);
    let _bind = Bind::new(&g.run_dir, &g.run_dir, MsFlags::MS_REC);
    kill_init_and_wait_keeper(init, Signal::SIGKILL);
    let exit = exit_json(g);
    assert_eq!(exit["stopped_by_keeper"], true, "{exit}");
    assert!(exit["not_stopped"].is_null(), "{exit}");
    let o = g.unifs(&["status", &g.name]);
    assert!(
        stdout(&o).contains("state:   stopped"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// A keeper whose run dir is covered (a tmpfs over RUN_DIR) when its init
/// ends removes its `keeper.pid` from its own run dir, through the
/// directory it holds. Before, it removed it by its path, in the cover
/// (where there is none): the guest's run dir kept a keeper.pid naming a
/// keeper long gone.
#[test]
fn s46_a_keeper_whose_run_dir_is_covered_removes_its_own_keeper_pid() {
    if !can_run("s46_a_keeper_whose_run_dir_is_covered_removes_its_own_keeper_pid") {
        return;
    }
    let g = Guest::new("s46pidcov", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    let pid_file = g.run_dir.join(&g.name).join("keeper.pid");
    assert!(pid_file.exists());
    let cover = TmpfsMount::at(&g.run_dir);
    kill_init_and_wait_keeper(init, Signal::SIGKILL);
    drop(cover);
    let left = std::fs::read_to_string(&pid_file);
    assert!(left.is_err(), "{} left: {left:?}", pid_file.display());
    assert!(exit_json(&g)["not_stopped"]
        .as_str()
        .is_some_and(|w| w.contains("covered")));
}

/// A guest that reboots (`on_reboot = "restart"`) while its run dir is
/// covered: its keeper does not start it again (a start by the path would
/// land in the cover) and says why in exit.json, in its own run dir.
/// Before, the keeper ran the start, which was refused and wrote its
/// `not_restarted` by the path, into nothing: exit.json said the guest
/// rebooted, and nothing of why it was not running.
#[test]
fn s46_a_guest_rebooting_with_its_run_dir_covered_says_why_not_restarted() {
    if !can_run("s46_a_guest_rebooting_with_its_run_dir_covered_says_why_not_restarted") {
        return;
    }
    let g = rebooting_guest(
        "s46rebootcov",
        "trap 'reboot -f' USR1; while :; do sleep 1; done",
        "",
    );
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    let cover = TmpfsMount::at(&g.run_dir);
    kill_init_and_wait_keeper(init, Signal::SIGUSR1);
    drop(cover);
    let exit = exit_json(&g);
    assert_eq!(exit["shutdown"], "reboot", "{exit}");
    let why = exit["not_restarted"].as_str().unwrap_or_default();
    assert!(why.contains("covered by the tmpfs mount"), "{exit}");
    let why = exit["not_stopped"].as_str().unwrap_or_default();
    assert!(why.contains("covered by the tmpfs mount"), "{exit}");
    let o = g.unifs(&["status", &g.name]);
    assert!(
        stdout(&o).contains("stopped (stale record, rebooted)"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// RUN_DIR/NAME a FUSE mount whose daemon is stopped: `exec`, `enter`,
/// `ps` and `update` of that guest end within the bound (60 s, else
/// killed) with one line naming the mount and `kill -CONT PID`.
#[test]
fn s46_exec_enter_ps_update_of_a_guest_whose_run_dir_is_stalled_end() {
    if !can_run("s46_exec_enter_ps_update_of_a_guest_whose_run_dir_is_stalled_end") {
        return;
    }
    let h = Hung::new(false);
    std::fs::create_dir(h.dir("config")).unwrap();
    let toml = format!("root = {:?}\ninit = [\"/bin/true\"]\n", h.path("root"));
    std::fs::write(h.dir("config/hung.toml"), toml).unwrap();
    let guest = |args: &[&str]| {
        let mut cmd = h.command();
        cmd.env("UNIFS_RUN_DIR", h.dir("")).arg("guest").args(args);
        h.run(cmd)
    };
    for args in [
        &["exec", "hung", "--", "/bin/true"][..],
        &["enter", "hung"],
        &["ps", "hung"],
        &["update", "hung"],
    ] {
        h.refused(&guest(args), args[0]);
    }
}

/// A guest whose run dir is covered (a tmpfs over RUN_DIR) while it runs:
/// `status` and `list` show its pid and uptime, read through the run dir
/// its keeper holds open; with its config removed too, `list` still lists
/// it. Before, the record was hidden: no pid, no uptime, and a guest
/// without a config was missing from `list`.
#[test]
fn s46_a_guest_whose_run_dir_is_covered_shows_its_pid_and_is_listed() {
    if !can_run("s46_a_guest_whose_run_dir_is_covered_shows_its_pid_and_is_listed") {
        return;
    }
    let g = Guest::new("s46pidshow", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    let cover = TmpfsMount::at(&g.run_dir);
    let st = g.state();
    assert_eq!(st["pid"].as_i64(), Some(init), "{st}");
    assert!(st["uptime_secs"].is_u64(), "{st}");
    assert_eq!(
        st["run_dir_covered"],
        g.run_dir.display().to_string(),
        "{st}"
    );
    let o = g.unifs(&["status", &g.name]);
    let out = stdout(&o);
    assert!(out.contains(&format!("pid:     {init}\n")), "{out}");
    assert!(out.contains("running (run dir covered)"), "{out}");
    assert_eq!(o.status.code(), Some(4), "{out}");
    std::fs::remove_file(g.config()).unwrap();
    let o = g.unifs(&["list"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let line = out.lines().find(|l| l.starts_with(&format!("{} ", g.name)));
    assert!(
        line.is_some_and(
            |l| l.contains("running (run dir covered)") && l.contains(&init.to_string())
        ),
        "{out}{err}"
    );
    drop(cover);
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    assert!(!alive(init));
}

/// A test dir with RUN_DIR at `run` (configs of guests `busy` and `web`)
/// and, at `run/busy`, a unifs mount whose daemon answers statfs only
/// after `pause_ms` (the test hook UNIFS_TEST_STATFS_PAUSE_MS): a daemon
/// that runs, busy. Dropped: the mount (lazily) and its daemon.
pub(crate) struct BusyRunDir {
    pub(crate) mount: crate::fs::harness::Mount,
    t: crate::guest::harness::TestRoot,
}

impl BusyRunDir {
    pub(crate) fn new(pause_ms: u64) -> BusyRunDir {
        let t = crate::guest::harness::TestRoot::new();
        let dir = t.dir.path();
        for d in ["config", "run/busy", "tree", "store"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for name in ["busy", "web"] {
            let toml = format!("root = {:?}\ninit = [\"/bin/true\"]\n", t.root());
            std::fs::write(dir.join(format!("config/{name}.toml")), toml).unwrap();
        }
        let log = std::fs::File::create(dir.join("mount.log")).unwrap();
        let pause = format!("UNIFS_TEST_STATFS_PAUSE_MS={pause_ms}");
        let mut mount = crate::fs::harness::Mount::start_under(
            &["env", &pause],
            &dir.join("store"),
            &dir.join("tree"),
            &dir.join("run/busy"),
            &[],
            log,
        );
        mount.watch_for(std::time::Duration::from_secs(300));
        BusyRunDir { mount, t }
    }

    /// `unifs guest list` there, killed after 60 s.
    pub(crate) fn list(&self) -> std::process::Output {
        let dir = self.t.dir.path();
        let mut cmd = std::process::Command::new(crate::common::unifs_bin());
        cmd.env("UNIFS_RUN_DIR", dir.join("run"))
            .env("UNIFS_CONFIG_DIR", dir.join("config"))
            .args(["guest", "list"]);
        crate::guest::harness::run_bounded(cmd, std::time::Duration::from_secs(60))
    }

    /// The probes (`root_health`'s processes) of the busy mount alive.
    /// Only this build's processes are read (their exe, which takes no
    /// lock), each within a bound ([`environ_bounded`]).
    pub(crate) fn probes(&self) -> Vec<i32> {
        let wanted = format!("UNIFS_STATFS_PROBE={}", self.mount.dir.display());
        let procs = std::fs::read_dir("/proc").unwrap();
        procs
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let exe = std::fs::read_link(e.path().join("exe")).ok()?;
                if exe != crate::common::unifs_bin() {
                    return None;
                }
                let env = environ_bounded(pid)?;
                env.split(|&b| b == 0)
                    .any(|v| v == wanted.as_bytes())
                    .then_some(pid)
            })
            .collect()
    }
}

/// The environment of process `pid`, read within the product's bound for
/// such reads (`unifs::sys::BoundedReads`): an environ read, as a cmdline
/// read, waits for the process's memory-map lock, which one stuck on a
/// stalled FUSE mount may hold for good. None when it cannot be read or
/// was late: a probe waits in statfs, which holds no such lock, so a late
/// one is no waiting probe.
pub(crate) fn environ_bounded(pid: i32) -> Option<Vec<u8>> {
    let environ = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    unifs::sys::BoundedReads::new(unifs::sys::ARGS_LIMIT)
        .read(environ)?
        .ok()
}

/// RUN_DIR/NAME a unifs mount whose daemon runs but answers slowly (busy):
/// `guest list` gave it 2 s and then 30 s more, for a list of all guests
/// (~32 s here, the daemon answering after 40 s). Now it is given 3 s
/// more: its guest is listed as not answering, naming its daemon as busy,
/// and the others are listed. Before, the words were "does not answer
/// (stopped?)".
#[test]
fn s46_list_gives_a_busy_mount_at_a_run_dir_a_few_seconds() {
    if !can_run("s46_list_gives_a_busy_mount_at_a_run_dir_a_few_seconds") {
        return;
    }
    let b = BusyRunDir::new(40_000);
    let o = b.list();
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("busy ") && l.contains("unknown (run dir does not answer)")),
        "{out}{err}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("web ") && l.contains("stopped")),
        "{out}{err}"
    );
    let daemon = b.mount.pid();
    assert!(
        err.contains(&format!(
            "whose daemon (pid {daemon}) runs but has not answered in 5 s"
        )),
        "{err}"
    );
}

/// The probe of a mount whose daemon has read its statfs and not answered
/// waits uninterruptibly (a kill does not end it) until the daemon answers
/// or ends. Before, each `guest list` left one or two of them behind, for
/// as long as the daemon did not answer: calls made again and again piled
/// them up without bound (2 after the first list here). Now a probe still
/// waiting is waited for, not joined by another: one at most, however
/// many lists.
#[test]
fn s46_repeated_lists_leave_one_probe_on_a_mount_that_does_not_answer() {
    if !can_run("s46_repeated_lists_leave_one_probe_on_a_mount_that_does_not_answer") {
        return;
    }
    let b = BusyRunDir::new(200_000);
    for i in 0..3 {
        let o = b.list();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let probes = b.probes();
        assert!(probes.len() <= 1, "after list {i}: probes {probes:?}");
    }
}

/// The claim on a mount's probe was an abstract unix socket's name, which
/// any user, and any guest sharing the host's network, can bind first (the
/// name was a digest of the mount's path): every look at that mount then
/// waited for a "probe" that was not one and said "does not answer", so
/// `guest list` gave a mount that answers at once as unknown (and `exec`,
/// `status` refused its guest). The claim is now an flock on a file in a
/// directory of root's alone.
#[test]
fn s46_a_squatter_on_the_old_probe_claim_name_changes_nothing() {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    if !can_run("s46_a_squatter_on_the_old_probe_claim_name_changes_nothing") {
        return;
    }
    let b = BusyRunDir::new(0);
    let digest = blake3::hash(b.mount.dir.as_os_str().as_encoded_bytes()).to_hex();
    let name = format!("unifs-statfs-probe/{}", &digest[..32]);
    let addr = UnixAddr::new_abstract(name.as_bytes()).unwrap();
    let squat = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(squat.as_raw_fd(), &addr).unwrap();
    let o = b.list();
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        !out.contains("does not answer") && !err.contains("has not answered"),
        "a squatter on the claim's name made the mount unanswering:\n{out}{err}"
    );
    let claims = std::fs::symlink_metadata("/run/unifs-probes").unwrap();
    assert!(claims.is_dir(), "{claims:?}");
    assert_eq!((claims.uid(), claims.mode() & 0o777), (0, 0o700));
}
