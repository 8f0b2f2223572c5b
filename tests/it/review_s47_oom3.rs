//! Review (session 47) "oom3": OOM kills still unsaid or said wrongly.

use crate::guest::harness::{
    can_run, ok, stderr, stderr_but_unshielded_warning, stdout, wait_bounded, wait_for_descendant,
    within_30s, KillOnDrop,
};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s43_forkfail::{guest_in_16m, ALLOC_64M};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The kill as unifs says it, with the limit and the kernel's count.
const BY_THE_LIMIT: &str = "killed by the memory limit (16 MiB; memory.oom_control oom_kill ";

/// `guest exec` of `script` in `g` in the background (stdout and stderr
/// piped), once its command (`sh`) runs: the session, the command's PID
/// and its parent's (exec's helper).
fn exec_session(g: &Guest, script: &str) -> (KillOnDrop, u32, u32) {
    exec_session_with(g, script, &[])
}

/// [`exec_session`] with `env` set for `unifs`.
pub(crate) fn exec_session_with(
    g: &Guest,
    script: &str,
    env: &[(&str, &str)],
) -> (KillOnDrop, u32, u32) {
    let mut exec = g.command();
    exec.envs(env.iter().copied());
    exec.args(["exec", &g.name, "--", "/bin/sh", "-c", script]);
    exec.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let session = KillOnDrop(Some(exec.spawn().unwrap()));
    let command = wait_for_descendant(session.0.as_ref().unwrap().id(), "sh");
    let helper = crate::guest::harness::parent_of(i64::from(command));
    (session, command, helper)
}

/// `pid`'s v1 memory group, as /proc/PID/cgroup names it.
fn memory_group(pid: u32) -> String {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let line = groups
        .lines()
        .find(|l| l.split(':').nth(1) == Some("memory"));
    line.and_then(|l| l.splitn(3, ':').nth(2))
        .unwrap_or("")
        .to_string()
}

/// The guest's v1 memory leaf (`unifs/NAME@DIGEST/guest`), where its
/// processes are.
pub(crate) fn memory_leaf(g: &Guest) -> PathBuf {
    let groups = crate::guest::harness::groups(&g.name, g.run_dir());
    let top = groups
        .iter()
        .find(|p| p.starts_with("/sys/fs/cgroup/memory/"));
    top.expect("a v1 memory hierarchy").join("guest")
}

/// Guard (item 1): `guest exec`'s helper, which reaps its command, is not
/// in the guest's groups (only the command joins them), so the memory
/// limit's OOM killer cannot pick it; the command it may pick, and then
/// exec exits 137 and says so, as `unifs run` says its command's. Picked
/// here for real over its allocating child: its `oom_score_adj` raised to
/// 1000 from the host (the child's stays 0). It passed before this
/// review; it fails if exec asks the log about another PID than the
/// command's (`&[None]`: nothing said).
#[test]
fn s47_an_exec_whose_command_the_oom_killer_picked_over_its_child_says_so() {
    if !can_run("s47_an_exec_whose_command_the_oom_killer_picked_over_its_child_says_so") {
        return;
    }
    let g = guest_in_16m("s47expick", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    // The child at 0, below its parent's 1000 (a memory-limited guest's
    // processes start at 999 where the daemon could not be shielded).
    let script = format!(
        "(echo 0 > /proc/self/oom_score_adj; while [ ! -e /tmp/go ]; do sleep 0.1; done; {ALLOC_64M}); echo sub $?"
    );
    let (session, command, helper) = exec_session(&g, &script);
    let leaf = memory_leaf(&g);
    let guest_group = Path::new("/").join(leaf.strip_prefix("/sys/fs/cgroup/memory").unwrap());
    assert_eq!(Path::new(&memory_group(command)), guest_group);
    assert!(
        !Path::new(&memory_group(helper)).starts_with(guest_group.parent().unwrap()),
        "exec's helper is in the guest's memory group: {}",
        memory_group(helper)
    );
    // Its child (the subshell) exists: only the command's score rises.
    assert!(within_30s(|| !std::fs::read_to_string(format!(
        "/proc/{command}/task/{command}/children"
    ))
    .unwrap_or_default()
    .trim()
    .is_empty()));
    std::fs::write(format!("/proc/{command}/oom_score_adj"), "1000").unwrap();
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    // The command's kill frees nothing (its child holds the pages), so the
    // child's next page kills again, and, where the daemon is unshielded
    // (this CI: no CAP_SYS_RESOURCE), takes the guest's init (999 over the
    // child's 0): the kernel's log shows it every run, and the child
    // ends with init's PID namespace. Nothing here needs init: exec judges
    // the OOM kill before asking whether the guest stopped under it.
    let o = wait_bounded(session, Duration::from_secs(60));
    let (out, err) = (stdout(&o), stderr(&o));
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert_eq!(o.status.code(), Some(137), "{out}{err}");
    assert_eq!(out, "", "the command was the victim, not its child: {err}");
    let said = format!("the command in guest {} was {BY_THE_LIMIT}", g.name);
    assert!(err.contains(&said), "{err}");
}

/// A first `exec` in `g` whose command, moved into the guest's group
/// `service`, the OOM killer ends: that group's count is then 1.
pub(crate) fn oom_killed_in(g: &Guest, service: &Path) {
    let script = format!("while [ ! -e /tmp/go1 ]; do sleep 0.1; done; {ALLOC_64M}");
    let (first, worker, _) = exec_session(g, &script);
    std::fs::write(service.join("cgroup.procs"), worker.to_string()).unwrap();
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go1"]));
    let o = wait_bounded(first, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let kills = std::fs::read_to_string(service.join("memory.oom_control")).unwrap();
    assert!(kills.contains("oom_kill 1"), "{kills}");
}

/// Item 2, cgroup v1, which counts a kill in the victim's own group: a
/// guest's group of its own (as systemd makes a service's: here made and
/// removed from the host, standing for the guest's manager) one of whose
/// processes the OOM killer ended, then removed (the service restarted)
/// while an exec runs, whose command the OOM killer then ends: the
/// guest's count, summed over its groups, is back where it was when the
/// exec began (the removed group's kill went with it), so the exec said
/// nothing, though the kernel's log named its command. The watch keeps
/// a group's count it saw once the group is gone now.
#[test]
fn s47_an_exec_oom_killed_after_a_group_with_a_kill_was_removed_says_so() {
    if !can_run("s47_an_exec_oom_killed_after_a_group_with_a_kill_was_removed_says_so") {
        return;
    }
    let g = guest_in_16m("s47exrm", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let service = memory_leaf(&g).join("s47-service");
    std::fs::create_dir(&service).unwrap();
    // Removed at the end whatever happens (stop removes it too).
    let _rm = RmdirOnDrop(service.clone());
    oom_killed_in(&g, &service);
    // The next exec starts with the guest's count at 1.
    let script = format!("while [ ! -e /tmp/go2 ]; do sleep 0.1; done; {ALLOC_64M}");
    let (second, _, _) = exec_session(&g, &script);
    // Past a sample of its watch (every 0.5 s) before the group goes.
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::remove_dir(&service).unwrap();
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go2"]));
    let o = wait_bounded(second, Duration::from_secs(60));
    let err = stderr(&o);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert_eq!(o.status.code(), Some(137), "{err}");
    let said = format!("the command in guest {} was {BY_THE_LIMIT}2)", g.name);
    assert!(err.contains(&said), "{err}");
}

/// Removes a cgroup directory on drop, if still there.
pub(crate) struct RmdirOnDrop(pub(crate) PathBuf);

impl Drop for RmdirOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A command that exits 137 by itself just after its child's OOM kill
/// (`sh -c '(ALLOC); echo sub $?; exit 137'`: a shell whose last command
/// a SIGKILL ended), under unifs's reaper, where the kernel's log cannot
/// tell (the tests' UNIFS_TEST_KMSG_FOREIGN: a kernel whose lines read
/// otherwise; as with no /dev/kmsg, dmesg_restrict, a PID namespace of
/// unifs's own): the count rose within the window and the reaper's 137
/// was taken for a SIGKILL, so "the guest's command was killed by the
/// memory limit". The reaper says its command exited now: no kill.
const EXITS_137: &str = "(ALLOC); echo sub $?; exit 137";

/// `unifs run --init --memory 16M -- sh -c script` with `env`: its output.
fn run_init_in_16m(script: &str, env: &[(&str, &str)]) -> std::process::Output {
    let t = crate::guest::harness::TestRoot::new();
    let mut run = std::process::Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root()).arg("--init");
    run.args(["--memory", "16M", "--", "/bin/sh", "-c", script]);
    run.envs(env.iter().copied());
    run.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wait_bounded(
        KillOnDrop(Some(run.spawn().unwrap())),
        Duration::from_secs(60),
    )
}

pub(crate) const FOREIGN: [(&str, &str); 1] = [("UNIFS_TEST_KMSG_FOREIGN", "1")];

#[test]
fn s47_a_run_init_whose_command_exits_137_itself_where_the_log_cannot_tell_says_no_oom() {
    if !can_run(
        "s47_a_run_init_whose_command_exits_137_itself_where_the_log_cannot_tell_says_no_oom",
    ) {
        return;
    }
    let o = run_init_in_16m(&EXITS_137.replace("ALLOC", ALLOC_64M), &FOREIGN);
    let (out, err) = (stdout(&o), stderr_but_unshielded_warning(&o));
    assert_eq!(o.status.code(), Some(137), "{out}{err}");
    assert_eq!(out, "sub 137\n", "{err}");
    assert!(!err.contains("memory limit"), "{err}");
}

/// Guard for the one above: the reaper's command the OOM killer ended
/// (the reaper then says nothing of an exit), the log unable to tell: the
/// count's window still says it. Fails if the reaper says "exited" of a
/// command a signal ended.
#[test]
fn s47_a_run_init_whose_command_the_oom_killer_ended_where_the_log_cannot_tell_says_so() {
    if !can_run(
        "s47_a_run_init_whose_command_the_oom_killer_ended_where_the_log_cannot_tell_says_so",
    ) {
        return;
    }
    let o = run_init_in_16m(ALLOC_64M, &FOREIGN);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(137), "{out}{err}");
    let said = format!("the guest's command was {BY_THE_LIMIT}");
    assert!(err.contains(&said), "{err}");
}

/// The same through `guest exec`, whose helper reaps the command: 137,
/// the child's kill seen, and no word of the memory limit.
#[test]
fn s47_an_exec_whose_command_exits_137_itself_where_the_log_cannot_tell_says_no_oom() {
    if !can_run("s47_an_exec_whose_command_exits_137_itself_where_the_log_cannot_tell_says_no_oom")
    {
        return;
    }
    let g = guest_in_16m("s47ex137", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let script = EXITS_137.replace("ALLOC", ALLOC_64M);
    let mut exec = g.command();
    exec.envs(FOREIGN);
    exec.args(["exec", &g.name, "--", "/bin/sh", "-c", &script]);
    let o = crate::guest::harness::run_bounded(exec, Duration::from_secs(60));
    let (out, err) = (stdout(&o), stderr(&o));
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert_eq!(o.status.code(), Some(137), "{out}{err}");
    assert_eq!(out, "sub 137\n", "{err}");
    assert!(!err.contains("memory limit"), "{err}");
}

/// The same for a named guest with `init_reaper = true`, its keeper
/// started where the log cannot tell: `status` said `exit:    killed by
/// the memory limit (…) (code=exited, status=137)`; now the code alone.
#[test]
fn s47_a_reaper_guest_whose_command_exits_137_itself_where_the_log_cannot_tell_says_the_code() {
    if !can_run(
        "s47_a_reaper_guest_whose_command_exits_137_itself_where_the_log_cannot_tell_says_the_code",
    ) {
        return;
    }
    let script = EXITS_137.replace("ALLOC", ALLOC_64M);
    let init = format!("[\"/bin/sh\", \"-c\", {script:?}]");
    let g = crate::guest::review_s11_life::Guest::new("s47or137", &init);
    let toml = format!(
        "root = {:?}\ninit = {init}\ninit_reaper = true\n[limits]\npids = 64\n\
         memory = \"16M\"\n",
        g.t.root()
    );
    std::fs::write(g.config_dir().join(format!("{}.toml", g.name)), toml).unwrap();
    let mut start = g.command();
    start.envs(FOREIGN).args(["start", &g.name]);
    ok(&crate::guest::harness::run_bounded(
        start,
        Duration::from_secs(30),
    ));
    let status = crate::review_s43_forkfail::status_once_ended(&g);
    assert!(
        status.contains("exit:    code=exited, status=137"),
        "{status}"
    );
    assert!(!status.contains("killed"), "{status}");
    let log = stdout(&g.unifs(&["logs", &g.name]));
    assert!(log.contains("sub 137"), "{log}");
}
