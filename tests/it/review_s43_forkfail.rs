//! Review (session 43) of how a guest's start or end is told under its
//! cgroup limits: a start whose clone of the guest fails under a pids
//! limit, whatever became of its overlay daemon meanwhile; a guest's
//! process the OOM killer of its memory limit ended, told as such, not as
//! a bare SIGKILL.

use crate::guest::harness::{can_run, groups, ok, stderr, stdout, wait_bounded, TestRoot};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s33_pids::PidsGroup;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::time::Duration;

/// The processes in the cgroup `group`.
fn procs(group: &Path) -> Vec<u32> {
    std::fs::read_to_string(group.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// The overlay daemon's pid of guest `g` (in its `mount` leaf).
fn daemon_of(g: &Guest) -> u32 {
    groups(&g.name, g.run_dir())
        .into_iter()
        .flat_map(|g| procs(&g.join("mount")))
        .next()
        .expect("the daemon in its leaf")
}

/// Whether `pid` lives, no SIGKILL pending for it: not killed.
fn unkilled(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    let kill = 1 << (libc::SIGKILL - 1);
    let state = status.lines().find_map(|l| l.strip_prefix("State:"));
    state.is_some_and(|s| !s.trim().starts_with(['Z', 'X']))
        && field("SigPnd:").is_some_and(|p| p & kill == 0)
        && field("ShdPnd:").is_some_and(|p| p & kill == 0)
}

/// `guest start` of `g` in a pids group of its own, held (by
/// UNIFS_TEST_BEFORE_CLONE_STOP) right before its keeper clones the guest,
/// where `meanwhile` runs; then the group's pids.max is lowered to what it
/// holds, so that the clone fails with EAGAIN whatever the machine's load.
/// The start is held again (UNIFS_TEST_START_FAILED_STOP) once it has the
/// keeper's error, where `failed` runs. Returns the start's stderr and the
/// limit it met.
fn start_whose_clone_fails(
    g: &Guest,
    test: &str,
    meanwhile: impl FnOnce(),
    failed: impl FnOnce(),
) -> (String, u32) {
    let pids = crate::review_s27_cgroup::v1_hierarchy(test, "pids").expect("a v1 pids hierarchy");
    let group = PidsGroup(pids.join(format!("s43-forkfail-{}-{test}", std::process::id())));
    std::fs::create_dir(&group.0).unwrap();
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_BEFORE_CLONE_STOP", "1")
        .env("UNIFS_TEST_START_FAILED_STOP", "1");
    let (child, join) = group.spawn(64, start);
    let pid = child.0.as_ref().unwrap().id();
    let mut keeper = None;
    assert!(
        within_60s(|| {
            keeper = procs(&group.0).into_iter().find(|&p| stopped(p));
            keeper.is_some()
        }),
        "no keeper stopped before the clone"
    );
    drop(join);
    meanwhile();
    // Once the start has reaped the keeper's first fork: pids.current
    // counts a zombie too, whose reaping would leave the clone room.
    let read = |file| std::fs::read_to_string(group.0.join(file)).unwrap();
    let mut max = 0;
    assert!(
        within_60s(|| {
            max = read("pids.current").trim().parse().unwrap();
            max == read("tasks").lines().count() as u32
        }),
        "a task left unreaped in the group"
    );
    std::fs::write(group.0.join("pids.max"), max.to_string()).unwrap();
    kill(Pid::from_raw(keeper.unwrap() as i32), Signal::SIGCONT).unwrap();
    assert!(within_60s(|| stopped(pid)), "the start never failed");
    failed();
    kill(Pid::from_raw(pid as i32), Signal::SIGCONT).unwrap();
    let o = wait_bounded(child, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    (stderr(&o), max)
}

/// Whether `err` names the clone that failed, its EAGAIN and the pids
/// group's limit `max` with the knob to raise.
fn names_the_clone_and_limit(err: &str, max: u32) -> bool {
    err.contains("clone3 (the guest's first process): EAGAIN")
        && err.contains(&format!("allows {max} tasks and holds"))
        && err.contains("pids.max")
        && err.contains("raise the one reached")
}

/// A start whose keeper's clone of the guest failed (EAGAIN under the
/// pids group it runs in) killed its own overlay daemon on the way out:
/// the guest had no leaf group yet, so its clean-up wrote cgroup.kill to
/// the guest's v2 group itself (this host's hybrid `unified` mount),
/// whose `mount` leaf holds the daemon. The start then found the root
/// gone and said "the overlay daemon … exited before the guest was
/// launched (its log … says nothing)", not the clone: the flake of
/// s33_a_start_whose_fork_fails_names_the_fork_and_the_limit under
/// pids.max 3, when the start had not yet reaped its keeper's first fork
/// as the second cloned. Now the clone and the limit are said, and the
/// daemon lives until the start unmounts the root: held once it has the
/// keeper's error, the start's daemon is alive, no SIGKILL pending (the
/// kill, if any, came before: the keeper's clean-up ran before it said
/// its error).
#[test]
fn s43_a_start_whose_clone_fails_names_it_not_a_daemon_it_killed() {
    let test = "s43_a_start_whose_clone_fails_names_it_not_a_daemon_it_killed";
    if !can_run(test) || crate::review_s27_cgroup::v1_hierarchy(test, "pids").is_none() {
        return;
    }
    let g = Guest::new("s43clone", SLEEP);
    let daemon = std::cell::Cell::new(0);
    let (err, max) = start_whose_clone_fails(
        &g,
        test,
        || daemon.set(daemon_of(&g)),
        || {
            assert!(
                unkilled(daemon.get()),
                "the start's clean-up killed its daemon"
            )
        },
    );
    assert!(names_the_clone_and_limit(&err, max), "{err}");
    assert!(!err.contains("overlay daemon"), "{err}");
    for group in groups(&g.name, g.run_dir()) {
        assert!(!group.exists(), "{} left", group.display());
    }
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// The other order: the overlay daemon died (killed here) before the
/// keeper's clone failed. The start said only that the daemon exited;
/// the fork that failed under the pids limit is what to raise, and is
/// said first now, the daemon's end after it.
#[test]
fn s43_a_start_whose_daemon_died_before_its_clone_failed_names_the_clone() {
    let test = "s43_a_start_whose_daemon_died_before_its_clone_failed_names_the_clone";
    if !can_run(test) || crate::review_s27_cgroup::v1_hierarchy(test, "pids").is_none() {
        return;
    }
    let g = Guest::new("s43dead", SLEEP);
    let kill_daemon = || {
        let leaf = groups(&g.name, g.run_dir())
            .into_iter()
            .map(|g| g.join("mount"))
            .find(|l| !procs(l).is_empty())
            .expect("the daemon's leaf");
        for pid in procs(&leaf) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        assert!(within_60s(|| procs(&leaf).is_empty()), "the daemon lives");
    };
    let (err, max) = start_whose_clone_fails(&g, test, kill_daemon, || {});
    assert!(names_the_clone_and_limit(&err, max), "{err}");
    let clone = err.find("clone3").unwrap();
    let daemon = err.find("the overlay daemon for guest").expect(&err);
    assert!(clone < daemon, "{err}");
    assert!(!err.contains("before the guest was launched"), "{err}");
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// A shell command that grows without end (a shell variable doubled, 64
/// MiB within 26 rounds): past a 16 MiB limit, the memory group's OOM
/// killer ends it. The shell is the one process that allocates, so it is
/// the one the killer picks, and the only kill: until 2026-12-06 it read
/// `head -c 64M /dev/zero | tr` into its variable, and `head`'s pipe write
/// could hit the limit again before the shell's pages were uncharged (the
/// kernel's log: `head invoked oom-killer` 8 ms after the shell's kill),
/// which took a second process: the overlay daemon (session 48's CI), or,
/// with the guest's processes above it, one of them (a count of 2).
pub(crate) const ALLOC_64M: &str = "x=a; while :; do x=$x$x; done";

/// The kill as unifs says it now, with the limit and the kernel's count.
const BY_THE_LIMIT: &str = "killed by the memory limit (16 MiB; memory.oom_control oom_kill ";

/// `unifs run --memory 16M` whose command the OOM killer ended exited 137
/// and said nothing: an operator went looking for who sent a SIGKILL. It
/// says the memory limit killed it now (status 137 still, as a shell's).
#[test]
fn s43_a_run_whose_command_the_oom_killer_ended_says_so() {
    if !can_run("s43_a_run_whose_command_the_oom_killer_ended_says_so") {
        return;
    }
    let t = TestRoot::new();
    for opts in [&["--memory", "16M"][..], &["--memory", "16M", "--init"]] {
        let o = t.sh(opts, ALLOC_64M);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(137), "{opts:?}: {err}");
        assert_eq!(stdout(&o), "", "{opts:?}");
        assert!(
            err.contains(&format!("the guest's command was {BY_THE_LIMIT}")),
            "{opts:?}: {err}"
        );
    }
}

/// A guest of `init` under `[limits] memory = "16M"`.
pub(crate) fn guest_in_16m(test: &str, init: &str) -> Guest {
    guest_in_16m_with(test, init, "")
}

/// [`guest_in_16m`], with `extra` config lines at the top level.
pub(crate) fn guest_in_16m_with(test: &str, init: &str, extra: &str) -> Guest {
    let g = Guest::new(test, init);
    let toml = format!(
        "root = {:?}\ninit = {init}\n{extra}\n[limits]\npids = 64\nmemory = \"16M\"\n",
        g.t.root()
    );
    std::fs::write(g.config_dir().join(format!("{}.toml", g.name)), toml).unwrap();
    g
}

/// `guest status` of `g` once its init has ended and the keeper recorded
/// how (bounded: 60 s).
pub(crate) fn status_once_ended(g: &Guest) -> String {
    let mut status = String::new();
    assert!(
        within_60s(|| {
            status = stdout(&g.unifs(&["status", &g.name]));
            status.contains("state:   stopped") && status.contains("\nexit:    ")
        }),
        "{status}"
    );
    status
}

/// A guest whose init the OOM killer ended was recorded "code=killed,
/// signal=KILL" (`guest status`), "killed by SIGKILL" (`guest list`),
/// and so in the keeper's line in its console log. Each names the memory
/// limit now. The init is the one killed: it ended by SIGKILL, and the
/// group's count is 1; the daemon was not.
#[test]
fn s43_a_guest_whose_init_the_oom_killer_ended_says_the_memory_limit() {
    if !can_run("s43_a_guest_whose_init_the_oom_killer_ended_says_the_memory_limit") {
        return;
    }
    let init = format!("[\"/bin/sh\", \"-c\", {ALLOC_64M:?}]");
    let g = guest_in_16m("s43oominit", &init);
    ok(&g.unifs(&["start", &g.name]));
    let status = status_once_ended(&g);
    let killed = format!("exit:    {BY_THE_LIMIT}1) (code=killed, signal=KILL)");
    assert!(status.contains(&killed), "{status}");
    let list = stdout(&g.unifs(&["list"]));
    assert!(list.contains("killed by the memory limit"), "{list}");
    // The keeper's line comes once it has stopped the guest.
    let mut logs = String::new();
    let line = format!("ended by itself ({BY_THE_LIMIT}1)");
    assert!(
        within_60s(|| {
            logs = stdout(&g.unifs(&["logs", &g.name]));
            logs.contains(&line)
        }),
        "{logs}"
    );
}

/// A guest that lives on when the OOM killer ended one of its processes
/// (a `guest exec`'s, here) showed nothing of it in `guest status`; as
/// systemd's "A process of this unit has been killed by the OOM killer",
/// it says so now. The root still answers (status 0): the daemon lives.
#[test]
fn s43_a_guest_one_of_whose_processes_the_oom_killer_ended_says_so() {
    if !can_run("s43_a_guest_one_of_whose_processes_the_oom_killer_ended_says_so") {
        return;
    }
    let g = guest_in_16m("s43oomexec", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", ALLOC_64M]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let o = g.unifs(&["status", &g.name]);
    let status = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{status}{}", stderr(&o));
    assert!(
        status.contains("oom:     1 of its processes killed by the memory limit"),
        "{status}"
    );
    let o = g.unifs(&["exec", &g.name, "--", "/bin/echo", "runs"]);
    assert_eq!(ok(&o), "runs\n");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}
