//! Session 52 "arena": `unifs run` under a low address-space limit
//! (`ulimit -v`, RLIMIT_AS) aborted now and then on a 64 KiB allocation
//! (`memory allocation of 65536 bytes failed`, SIGABRT) instead of running
//! or refusing: glibc reserved 64 MiB of address space for each thread's
//! malloc arena, four of them in the run and four in its overlay daemon,
//! and which got theirs before the limit ran out varied with the load.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, within_30s, KillOnDrop, TestRoot};
use crate::review_s25_limits::fuse_holder_below;
use std::io::Write;
use std::process::{Command, Stdio};

/// Anonymous reservations of 32 MiB and more with no access (`---p`): how
/// glibc reserves a thread's arena on 64-bit (64 MiB, aligned, the rest
/// trimmed).
fn arena_reservations(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(!maps.is_empty(), "no maps read for pid {pid}");
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

#[cfg(target_pointer_width = "64")]
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
    // prlimit execs unifs: the run is this pid.
    let daemon = fuse_holder_below(pid) as u32;
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
