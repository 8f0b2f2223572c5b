//! Review s21: `unifs run` killed (even by SIGKILL) takes its guest with it,
//! whatever the guest's init does.

use super::escape::cc_or_skip;
use super::harness::{alive, can_run, wait_for_descendant, within_30s, KillOnDrop, TestRoot};
use crate::common::unifs_bin;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The guest's init (PID 1: no `--init`) undoes its parent-death signal and
/// ignores the signals a PID 1 may ignore.
const NO_PDEATHSIG: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>
int main(void) {
    prctl(PR_SET_PDEATHSIG, 0);
    signal(SIGTERM, SIG_IGN); signal(SIGINT, SIG_IGN); signal(SIGHUP, SIG_IGN);
    puts("ready"); fflush(stdout);
    for (;;) pause();
}
"#;

/// Waits (bounded) until `nopdeath` (NO_PDEATHSIG) sleeps: it does so only
/// in its pause(), after undoing its pdeathsig. A fixed pause was too short
/// on a loaded machine.
fn wait_in_pause(pid: u32) {
    let state = || crate::common::proc_stat(pid)[0].clone();
    assert!(within_30s(|| state() == "S"), "{pid} is {}", state());
}

/// A run's groups (`unifs/run-PID-TAG`) in every hierarchy under /sys/fs/cgroup.
pub(crate) fn run_groups(pid: u32) -> Vec<PathBuf> {
    super::harness::cgroup_hierarchies()
        .iter()
        .filter_map(|h| super::harness::run_group(h, pid))
        .collect()
}

/// The FUSE connection (`/sys/fs/fuse/connections/N`) of the guest's root.
fn fuse_connection(guest: u32) -> Option<PathBuf> {
    let file = PathBuf::from(format!("/proc/{guest}/mountinfo"));
    let mounts = unifs::fs::mountinfo::read_at(&file).ok()?;
    mounts.iter().find_map(|m| {
        if m.point != Path::new("/") || !m.fstype.starts_with("fuse") {
            return None;
        }
        let minor = m.dev.split(':').nth(1)?;
        let dir = Path::new("/sys/fs/fuse/connections").join(minor);
        dir.is_dir().then_some(dir)
    })
}

/// Kills what a failed test left: the guest, and its groups.
pub(crate) struct Leftovers {
    pub(crate) guest: Option<i32>,
    pub(crate) groups: Vec<PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(pid) = self.guest {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for g in &self.groups {
            let _ = within_30s(|| {
                let _ = std::fs::remove_dir(g.join("guest"));
                let _ = std::fs::remove_dir(g);
                !g.exists()
            });
        }
    }
}

/// What was wrong: the parent-death signal on the guest's init was the only
/// tie to `unifs run`, and init is the guest's own command, which may clear
/// it. After `kill -9` of `unifs run` such a guest ran on under the host's
/// init, its `run-PID` cgroups stayed (the next run's sweep skips groups
/// holding processes), and nothing ever stopped it. Now a keeper outside the
/// guest ends it: killed by PID, or with the run's whole process group (a
/// shell's job, `timeout`), the guest, its groups, its overlay mount and
/// daemon are gone within a bound.
#[test]
fn review_s21_a_guest_that_clears_its_pdeathsig_dies_with_a_killed_run() {
    let test = "review_s21_a_guest_that_clears_its_pdeathsig_dies_with_a_killed_run";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    if !cc_or_skip(&t, test, "nopdeath", NO_PDEATHSIG) {
        return;
    }
    let store = t.dir.path().join("store");
    for whole_group in [false, true] {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("--store").arg(&store).arg("run").arg("--root");
        cmd.arg(t.root())
            .args(["--memory", "64M", "--", "/bin/nopdeath"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd.process_group(0);
        let mut launcher = KillOnDrop(Some(cmd.spawn().unwrap()));
        let pid = launcher.0.as_ref().unwrap().id();
        let guest = wait_for_descendant(pid, "nopdeath");
        let mut left = Leftovers {
            guest: Some(guest as i32),
            groups: run_groups(pid),
        };
        assert!(!left.groups.is_empty(), "no group unifs/run-{pid}-…");
        // The run's and the guest's mount namespaces (`mnt:[INODE]`).
        let ns_ids: Vec<PathBuf> = [pid, guest]
            .iter()
            .map(|p| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap())
            .collect();
        let fuse = fuse_connection(guest);
        // The guest's init is set up, and has undone its pdeathsig.
        wait_in_pause(guest);
        let target = if whole_group {
            -(pid as i32)
        } else {
            pid as i32
        };
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(target, libc::SIGKILL) };
        let mut c = launcher.0.take().unwrap();
        let _ = c.wait();
        let how = if whole_group {
            "its process group"
        } else {
            "unifs run"
        };
        assert!(
            within_30s(|| !alive(guest.into())),
            "kill -9 of {how}: the guest's init (pid {guest}) still runs"
        );
        assert!(
            within_30s(|| run_groups(pid).is_empty()),
            "kill -9 of {how}: its groups are left: {:?}",
            run_groups(pid)
        );
        // No process holds the run's or the guest's mount namespace (the
        // overlay's daemon, the keeper): the overlay mount is gone.
        let holders = || -> Vec<i32> {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    let p: i32 = e.file_name().to_str()?.parse().ok()?;
                    let ns = std::fs::read_link(e.path().join("ns/mnt")).ok()?;
                    (ns_ids.contains(&ns) && alive(p.into())).then_some(p)
                })
                .collect()
        };
        assert!(
            within_30s(|| holders().is_empty()),
            "kill -9 of {how}: processes left in the run's mount namespaces: {:?}",
            holders()
        );
        if let Some(conn) = &fuse {
            assert!(
                within_30s(|| !conn.exists()),
                "kill -9 of {how}: the overlay's FUSE connection {} is left",
                conn.display()
            );
        }
        left.guest = None;
        left.groups.clear();
    }
}

/// The child of `pid` named `comm` (waiting up to 5 s for it to take the
/// name).
pub(crate) fn child_named(pid: u32, comm: &str) -> Option<u32> {
    let mut found = None;
    within_30s(|| {
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        found = kids
            .split_whitespace()
            .filter_map(|k| k.parse::<u32>().ok())
            .find(|k| {
                std::fs::read_to_string(format!("/proc/{k}/comm")).is_ok_and(|c| c.trim() == comm)
            });
        found.is_some()
    });
    found
}

/// What was wrong: the next `unifs run` removed only empty `run-PID` groups
/// of dead runs, so a guest left running by a killed run (here: its keeper
/// killed with it, as a service manager's SIGKILL to its whole cgroup does)
/// stayed for good, with its groups. Now the sweep kills what is left in
/// the groups of a run whose pid is gone, when those processes are that
/// run's orphans, and removes the groups.
#[test]
fn review_s21_the_next_run_ends_a_guest_its_killed_run_and_keeper_left() {
    let test = "review_s21_the_next_run_ends_a_guest_its_killed_run_and_keeper_left";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    if !cc_or_skip(&t, test, "nopdeath", NO_PDEATHSIG) {
        return;
    }
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args([
        "--root-mount",
        "bind",
        "--pids",
        "50",
        "--",
        "/bin/nopdeath",
    ]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let mut launcher = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = launcher.0.as_ref().unwrap().id();
    let guest = wait_for_descendant(pid, "nopdeath");
    let mut left = Leftovers {
        guest: Some(guest as i32),
        groups: run_groups(pid),
    };
    assert!(!left.groups.is_empty(), "no group unifs/run-{pid}-…");
    let keeper = child_named(pid, "unifs-keeper").expect("the run's keeper");
    wait_in_pause(guest);
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(keeper as i32, libc::SIGKILL) };
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = launcher.0.take().unwrap().wait();
    assert!(
        within_30s(|| !alive(keeper.into())),
        "the keeper survived SIGKILL"
    );
    // (The sweep of a run of a test beside this one may end it already.)
    let next = TestRoot::new();
    let out = super::harness::ok(&next.sh(&["--root-mount", "bind"], "true"));
    assert_eq!(out, "");
    assert!(
        within_30s(|| !alive(guest.into())),
        "the next run left the dead run's guest (pid {guest}) running"
    );
    assert!(
        within_30s(|| run_groups(pid).is_empty()),
        "the next run left the dead run's groups: {:?}",
        run_groups(pid)
    );
    left.guest = None;
    left.groups.clear();
}

/// Two `unifs run` in PID namespaces of their own (two `unshare -pf` jobs,
/// two containers sharing the host's cgroupfs) are both pid 1 there: both
/// named their groups `run-1` and shared them. The first to end killed the
/// other's guest, then read its dying processes as pid 0 (outside its PID
/// namespace) and sent SIGKILL to 0: its own process group, its caller's
/// script with it. Each run's groups are now its own, and pid 0 is never
/// signalled (review s21).
#[test]
fn review_s21_runs_in_pid_namespaces_of_their_own_keep_to_their_own_groups() {
    if !can_run("review_s21_runs_in_pid_namespaces_of_their_own_keep_to_their_own_groups") {
        return;
    }
    let (a, b) = (TestRoot::new(), TestRoot::new());
    let run = |t: &TestRoot, script: &str| {
        let mut cmd = Command::new("unshare");
        cmd.args(["-pf", "--mount-proc"])
            .arg(unifs_bin())
            .args(["run", "--root-mount", "bind", "--root"])
            .arg(t.root())
            .args(["--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A process group of its own, as a script's job: a kill of
            // group 0 by the run would end it.
            .process_group(0);
        KillOnDrop(Some(cmd.spawn().unwrap()))
    };
    // The second runs while the first does: the first waits for a file
    // the test makes only once the second has ended (before, a 6 s sleep
    // that a slow start of the second could outlast, and no look whether
    // they overlapped).
    let go = a.root().join("tmp/go");
    let first = run(
        &a,
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo A finished",
    );
    // Dropped before `first`: a test that fails lets its guest end too
    // (the kill of `unshare` leaves `unifs run` and its guest running).
    struct Go(std::path::PathBuf);
    impl Drop for Go {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, "");
        }
    }
    let _go_on_failure = Go(go.clone());
    // Its guest's init, the shell that waits.
    let shell = super::harness::wait_for_descendant(first.0.as_ref().unwrap().id(), "sh");
    let second = super::harness::wait_bounded(run(&b, "echo B finished"), Duration::from_secs(30));
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert_eq!(String::from_utf8_lossy(&second.stdout), "B finished\n");
    assert!(
        alive(shell.into()),
        "the first run's guest (its shell, pid {shell}) did not run on while the second ended"
    );
    std::fs::write(&go, "").unwrap();
    let first = super::harness::wait_bounded(first, Duration::from_secs(30));
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert_eq!(String::from_utf8_lossy(&first.stdout), "A finished\n");
}
