//! Session 52 "arena": `unifs run` under a low address-space limit
//! (`ulimit -v`, RLIMIT_AS) aborted now and then on a 64 KiB allocation
//! (`memory allocation of 65536 bytes failed`, SIGABRT) instead of running
//! or refusing: glibc reserved 64 MiB of address space for each thread's
//! malloc arena, four of them in the run and four in its overlay daemon,
//! and which got theirs before the limit ran out varied with the load.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, within_30s, KillOnDrop, TestRoot};
use std::io::Write;
use std::process::{Command, Stdio};

/// Anonymous reservations of 32 MiB and more with no access (`---p`): how
/// glibc reserves a thread's arena (64 MiB, aligned, the rest trimmed).
fn arena_reservations(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = f[0].split_once('-').unwrap();
            let len = u64::from_str_radix(b, 16).unwrap() - u64::from_str_radix(a, 16).unwrap();
            f[1] == "---p" && f.len() == 5 && len >= 32 << 20
        })
        .map(str::to_string)
        .collect()
}

fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut kids = Vec::new();
    for t in tasks.flatten() {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        kids.extend(list.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
    }
    kids
}

#[test]
fn s52_under_an_address_space_limit_run_and_its_daemon_reserve_no_thread_arenas() {
    if !can_run("s52_under_an_address_space_limit_run_and_its_daemon_reserve_no_thread_arenas") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={}", 400u64 << 20)).arg(unifs_bin());
    cmd.arg("--store").arg(t.dir.path().join("no-store"));
    cmd.args(["run", "--root", t.root().to_str().unwrap(), "--"]);
    cmd.args(["/bin/sh", "-c", "touch /ready; read x; echo done"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = KillOnDrop(Some(cmd.spawn().unwrap()));
    let child = run.0.as_mut().unwrap();
    let pid = child.id();
    let ready = t.root().join("ready");
    assert!(within_30s(|| ready.exists()), "the guest never started");
    // prlimit execs unifs: the run is this pid; its daemon a child "unifs".
    let daemon = children(pid).into_iter().find(|&p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "unifs")
    });
    let daemon = daemon.expect("the run's overlay daemon");
    for (who, p) in [("run", pid), ("its overlay daemon", daemon)] {
        let reserved = arena_reservations(p);
        assert!(
            reserved.is_empty(),
            "{who} (pid {p}) reserved thread arenas under RLIMIT_AS: {reserved:?}"
        );
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = crate::guest::harness::wait_bounded(run, std::time::Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n", "{out:?}");
}
