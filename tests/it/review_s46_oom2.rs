//! Review (session 46) "oom2": OOM kills that went unsaid. A named guest
//! whose init runs under unifs's reaper (`init_reaper = true`) whose
//! command the OOM killer ended: the reaper exits 137 and nothing said
//! why. `unifs run --init` whose reaper (the guest's PID 1) the OOM killer
//! picked: the log named the reaper, and the run asked it only of its
//! command. And an OOM watch that once saw a kill counted just as it
//! skipped the log could no longer tell any kill for its life.

use crate::guest::harness::{
    can_run, ok, stderr, stdout, wait_bounded, wait_for_descendant, within_30s, KillOnDrop,
};
use crate::guest::review_s11_life::Guest;
use crate::review_s43_forkfail::{status_once_ended, ALLOC_64M};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kill as unifs says it, with the limit and the kernel's count.
const BY_THE_LIMIT: &str = "killed by the memory limit (16 MiB; memory.oom_control oom_kill ";

/// A named guest under the reaper whose command (its init) the OOM killer
/// ended: `status` said `exit:    code=exited, status=137`, `list`
/// `stopped (exited 137)`, exit.json no `oom_killed`, and the keeper's
/// line in the console log a plain end. Each says the memory limit now,
/// as for a guest without the reaper.
#[test]
fn s46_a_guest_under_the_reaper_whose_command_the_oom_killer_ended_says_so() {
    if !can_run("s46_a_guest_under_the_reaper_whose_command_the_oom_killer_ended_says_so") {
        return;
    }
    let init = format!("[\"/bin/sh\", \"-c\", {ALLOC_64M:?}]");
    let g = Guest::new("s46oomreap", &init);
    let toml = format!(
        "root = {:?}\ninit = {init}\ninit_reaper = true\n[limits]\npids = 64\n\
         memory = \"16M\"\n",
        g.t.root()
    );
    std::fs::write(g.config_dir().join(format!("{}.toml", g.name)), toml).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let status = status_once_ended(&g);
    let killed = format!("exit:    {BY_THE_LIMIT}1) (code=exited, status=137)");
    assert!(status.contains(&killed), "{status}");
    let list = stdout(&g.unifs(&["list"]));
    assert!(list.contains("killed by the memory limit)"), "{list}");
    let json = stdout(&g.unifs(&["status", "--json", &g.name]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["last_exit"]["code"], 137, "{json}");
    assert_eq!(v["last_exit"]["oom_killed"]["oom_kill"], 1, "{json}");
    assert_eq!(v["last_exit"]["oom_killed"]["host"], false, "{json}");
    // The keeper's line comes once it has stopped the guest.
    let mut logs = String::new();
    let line = format!("ended by itself ({BY_THE_LIMIT}1)");
    assert!(
        crate::guest::harness::within_30s(|| {
            logs = stdout(&g.unifs(&["logs", &g.name]));
            logs.contains(&line)
        }),
        "{logs}"
    );
}

/// `unifs run --init` whose reaper the OOM killer picked (its
/// `oom_score_adj` raised to 1000 from the host, once its command runs:
/// the kernel picks it for real, and its end ends the command): exit 137
/// and nothing said; the log named the reaper, the run asked about its
/// command alone. It says the memory limit now.
#[test]
fn s46_a_run_init_whose_reaper_the_oom_killer_picked_says_so() {
    if !can_run("s46_a_run_init_whose_reaper_the_oom_killer_picked_says_so") {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    let go = t.root().join("tmp/go");
    // The command at 0, below the reaper's 1000 whatever a memory-limited
    // guest starts with (999 where the daemon could not be shielded).
    let script =
        format!("echo 0 > /proc/self/oom_score_adj; while [ ! -e /tmp/go ]; do sleep 0.1; done; {ALLOC_64M}");
    let (session, run_pid) = run_in_16m(&t, &["--init"], &[], &script);
    let command = wait_for_descendant(run_pid, "sh");
    let reaper = parent_of(command);
    assert_eq!(
        guest_pid(reaper),
        Some(1),
        "the reaper is the guest's PID 1"
    );
    std::fs::write(format!("/proc/{reaper}/oom_score_adj"), "1000").unwrap();
    std::fs::write(&go, "").unwrap();
    let o = wait_bounded(session, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{err}{}", stdout(&o));
    let said = format!("the guest's command was {BY_THE_LIMIT}");
    assert!(err.contains(&said), "{err}");
}

/// The parent of `pid`.
fn parent_of(pid: u32) -> u32 {
    crate::guest::harness::parent_of(i64::from(pid))
}

/// `pid`'s PID in its own (the innermost) PID namespace.
fn guest_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    nspid.split_whitespace().last()?.parse().ok()
}

/// `unifs run` whose watch skipped the kernel's log just as its count
/// rose (the tests' UNIFS_TEST_KMSG_SKIP_STOP stops the run at its first
/// skip, the count read; its command's subshell is OOM-killed meanwhile,
/// whose record the skip passes over): the log then could not tell any
/// kill for the run's life. Four seconds on (past the count's 3 s window)
/// a second subshell is OOM-killed, read in the log, and the command
/// killed by hand right after: "WARN the guest's command was killed by the
/// memory limit" (the window decided). The log tells it now: that loss is
/// older than the window, so it is no longer this end's.
#[test]
fn s46_a_watch_that_lost_a_kill_as_it_skipped_tells_the_later_ones() {
    if !can_run("s46_a_watch_that_lost_a_kill_as_it_skipped_tells_the_later_ones") {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    let tmp = t.root().join("tmp");
    // The allocating subshell (and its `head` and `tr`) at 1000, above the
    // guest's PID 1: the kernel may kill a second time as the first
    // victim's pages go (seen in session 48's CI: `head`'s pipe write 8 ms
    // later), and must then take one of them, not the shell that writes
    // the line nor the overlay daemon.
    let script = "for n in 1 2; do \
         while [ ! -e /tmp/go$n ]; do sleep 0.1; done; \
         (echo 1000 > /proc/self/oom_score_adj; ALLOC); echo $? > /tmp/sub$n; \
         done; exec sleep 1000"
        .replace("ALLOC", ALLOC_64M);
    let env = [("UNIFS_TEST_KMSG_SKIP_STOP", "1")];
    let (session, run_pid) = run_in_16m(&t, &[], &env, &script);
    wait_for_descendant(run_pid, "sh");
    // Stopped at its first skip, the count read: the kill lands there.
    assert!(within_30s(|| stopped(run_pid)), "the run never stopped");
    std::fs::write(tmp.join("go1"), "").unwrap();
    assert_eq!(written(&tmp.join("sub1")), "137\n");
    kill(Pid::from_raw(run_pid as i32), Signal::SIGCONT).unwrap();
    // Past the count's window (3 s) since that loss.
    let lost = Instant::now();
    while lost.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(tmp.join("go2"), "").unwrap();
    assert_eq!(written(&tmp.join("sub2")), "137\n");
    let command = wait_for_descendant(run_pid, "sleep");
    crate::review_s44_oomexec::kill_by_hand_and_see_no_oom_said(command, session);
}

/// What the guest's shell wrote to `path` (a line), once it is all there:
/// its `>` creates the file before `echo` writes to it, through the overlay
/// whose daemon shares the guest's 16 MiB just after an OOM kill, so a
/// look as soon as the file exists may read it empty (session 48: `sub2`
/// read as "", on a loaded machine).
fn written(path: &std::path::Path) -> String {
    let mut text = String::new();
    let done = within_30s(|| {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n')
    });
    assert!(done, "{} never got its line: {text:?}", path.display());
    text
}

/// `unifs run` of `t` with `options` and `env`, `--memory 16M`, its
/// command `sh -c script`: the run (killed on drop) and its PID.
fn run_in_16m(
    t: &crate::guest::harness::TestRoot,
    options: &[&str],
    env: &[(&str, &str)],
    script: &str,
) -> (KillOnDrop, u32) {
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root()).args(options);
    run.args(["--memory", "16M", "--", "/bin/sh", "-c", script]);
    run.envs(env.iter().copied());
    run.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let session = KillOnDrop(Some(run.spawn().unwrap()));
    let pid = session.0.as_ref().unwrap().id();
    (session, pid)
}

/// Whether `pid` is stopped (state T in /proc/PID/stat).
fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    state == Some(Some('T'))
}
