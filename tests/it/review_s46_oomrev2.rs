//! Review (session 46) "oomrev2" of "oom2": the reaper's PID socket a
//! named guest's keeper now keeps, across the guest's reboots, and exit
//! status 137 now taken for a SIGKILL under the reaper. (The v2 count's
//! tests are unit tests of guest::cgroup: this host's v2 hierarchy has no
//! memory controller.)

use crate::guest::harness::{
    can_run, ok, stderr_but_unshielded_warning, stdout, wait_bounded, within_30s, KillOnDrop,
};
use crate::guest::review_s11_life::Guest;
use crate::review_s43_forkfail::{status_once_ended, ALLOC_64M};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The kill as unifs says it, with the limit.
const BY_THE_LIMIT: &str = "killed by the memory limit (16 MiB; memory.oom_control oom_kill ";

/// A named guest of `test` whose init is `sh -c script` under unifs's
/// reaper, in 16 MiB, allowed `reboot(2)`.
fn reaper_guest_in_16m(test: &str, script: &str) -> Guest {
    let init = format!("[\"/bin/sh\", \"-c\", {script:?}]");
    let g = Guest::new(test, &init);
    let toml = format!(
        "root = {:?}\ninit = {init}\ninit_reaper = true\ncap_add = [\"sys_boot\"]\n\
         [limits]\npids = 64\nmemory = \"16M\"\n",
        g.t.root()
    );
    std::fs::write(g.config_dir().join(format!("{}.toml", g.name)), toml).unwrap();
    g
}

/// `guest status --json` of `g` (null where it says none).
pub(crate) fn status_json(g: &Guest) -> serde_json::Value {
    let json = stdout(&g.unifs(&["status", "--json", &g.name]));
    serde_json::from_str(&json).unwrap_or_default()
}

/// The keeper's open files, `/proc/KEEPER/fd`'s targets sorted (sockets
/// and pipes without their inode), once two reads half a second apart
/// agree (it closes what `start` left it just after it says its PID).
fn keeper_fds(g: &Guest) -> (u32, Vec<String>) {
    let file = g.run_dir().join(&g.name).join("keeper.pid");
    let mut last = (0, Vec::new());
    assert!(
        within_30s(|| {
            let pid = std::fs::read_to_string(&file).unwrap_or_default();
            let Ok(pid) = pid.trim().parse::<u32>() else {
                return false;
            };
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                return false;
            };
            let mut fds: Vec<String> = dir
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .map(|t| {
                    t.split_once(":[")
                        .map_or(t.clone(), |(kind, _)| kind.into())
                })
                .collect();
            fds.sort();
            let same = last == (pid, fds.clone());
            last = (pid, fds);
            std::thread::sleep(Duration::from_millis(500));
            same
        }),
        "the keeper's fds never settled: {last:?}"
    );
    last
}

/// An `init_reaper` guest that reboots four times: each boot's keeper (a
/// new one: the last execs `guest start`, which forks it) holds the same
/// files, one socket where its command says its PID, none of the boots
/// before (their keepers closed all before the exec). The fifth boot's
/// command, OOM-killed, is said so: its keeper asked the log about this
/// boot's command, not an earlier one's (a PID the log does not name
/// there: nothing would be said). A guard: it passed before this review.
#[test]
fn s46_a_reaper_guest_that_reboots_keeps_one_pid_socket_of_this_boots_command() {
    if !can_run("s46_a_reaper_guest_that_reboots_keeps_one_pid_socket_of_this_boots_command") {
        return;
    }
    let script = format!(
        "n=$(cat /boots 2>/dev/null || echo 0); n=$((n+1)); echo $n > /boots; \
         if [ $n -ge 5 ]; then while [ ! -e /oom ]; do sleep 0.1; done; {ALLOC_64M}; exit 0; fi; \
         while [ ! -e /next$n ]; do sleep 0.1; done; reboot -f"
    );
    let g = reaper_guest_in_16m("s46orboot", &script);
    ok(&g.unifs(&["start", &g.name]));
    let mut boots = Vec::new();
    for n in 1..=5 {
        let mut st = serde_json::Value::Null;
        assert!(
            within_30s(|| {
                st = status_json(&g);
                st["running"] == true && st["reboots"] == n - 1
            }),
            "boot {n} never came: {st}"
        );
        // Its command runs (it wrote /boots): exec sees this boot's count.
        let boot = format!("{n}\n");
        assert!(
            within_30s(|| stdout(&g.unifs(&["exec", &g.name, "--", "/bin/cat", "/boots"])) == boot),
            "boot {n}'s command never ran"
        );
        boots.push(keeper_fds(&g));
        let next = match n {
            5 => "/oom".to_string(),
            n => format!("/next{n}"),
        };
        ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", &next]));
    }
    eprintln!("boot 1's keeper's fds: {:?}", boots[0].1);
    let keepers: Vec<u32> = boots.iter().map(|b| b.0).collect();
    let mut distinct = keepers.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "a keeper each boot: {keepers:?}");
    for (n, (_, fds)) in boots.iter().enumerate() {
        assert_eq!(
            fds,
            &boots[0].1,
            "boot {}'s keeper's fds against the first's",
            n + 1
        );
    }
    let status = status_once_ended(&g);
    assert!(status.contains(BY_THE_LIMIT), "{status}");
    assert!(status.contains("(code=exited, status=137)"), "{status}");
}

/// An `init_reaper` guest whose command's child the OOM killer ended,
/// and which then exits 137 by itself (`sh -c '(ALLOC); exit 137'`): the
/// log names the child, neither the reaper nor its command, so the end
/// is the command's own code, as for an init without the reaper: `status`
/// `code=exited, status=137` and no kill, `list` `exited 137`, exit.json
/// `code` 137, `signal` and `oom_killed` null. A guard: it passed before
/// this review; it fails if the log's word that another process was the
/// victim is dropped (the count's window then decides: it rose).
#[test]
fn s46_a_reaper_guest_whose_command_exits_137_itself_says_the_code() {
    if !can_run("s46_a_reaper_guest_whose_command_exits_137_itself_says_the_code") {
        return;
    }
    let script = format!("({ALLOC_64M}); echo sub $?; exit 137");
    let g = reaper_guest_in_16m("s46or137", &script);
    ok(&g.unifs(&["start", &g.name]));
    let status = status_once_ended(&g);
    assert!(
        status.contains("exit:    code=exited, status=137"),
        "{status}"
    );
    assert!(!status.contains("killed"), "{status}");
    // Once its keeper has stopped it (before, the record is stale).
    let mut list = String::new();
    assert!(
        within_30s(|| {
            list = stdout(&g.unifs(&["list"]));
            list.contains("stopped (exited 137)")
        }),
        "{list}"
    );
    let json = stdout(&g.unifs(&["status", "--json", &g.name]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["last_exit"]["code"], 137, "{json}");
    assert!(v["last_exit"]["signal"].is_null(), "{json}");
    assert!(v["last_exit"]["oom_killed"].is_null(), "{json}");
    // The child was the OOM killer's (the count rose for it).
    let log = stdout(&g.unifs(&["logs", &g.name]));
    assert!(log.contains("sub 137"), "{log}");
}

/// The same for `unifs run --init`: its command exits 137 by itself just
/// after its child's OOM kill. Exit 137, and no word of the memory limit.
/// A guard, as the one above.
#[test]
fn s46_a_run_init_whose_command_exits_137_itself_says_no_oom_kill() {
    if !can_run("s46_a_run_init_whose_command_exits_137_itself_says_no_oom_kill") {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    let script = format!("({ALLOC_64M}); echo sub $?; exit 137");
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root()).arg("--init");
    run.args(["--memory", "16M", "--", "/bin/sh", "-c", &script]);
    run.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let o = wait_bounded(
        KillOnDrop(Some(run.spawn().unwrap())),
        Duration::from_secs(60),
    );
    let (out, err) = (stdout(&o), stderr_but_unshielded_warning(&o));
    assert_eq!(o.status.code(), Some(137), "{out}{err}");
    assert_eq!(out, "sub 137\n", "{err}");
    assert!(!err.contains("memory limit"), "{err}");
}
