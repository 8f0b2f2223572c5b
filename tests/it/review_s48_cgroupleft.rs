//! Session 48, cgroupleft: the empty groups of a guest left under
//! /sys/fs/cgroup/*/unifs/ (`NAME@DIGEST`, `NAME@DIGEST/guest`) by a start
//! killed between making its groups and recording them, and by a removal
//! that listed a guest's groups once (a group made below after the
//! listing, a process in a group past the 2 s bound).

use crate::guest::harness::{
    can_run, groups, ok, remove_dirs, stderr, stdout, wait_bounded, KillOnDrop,
};
use crate::guest::named::Guest;
use crate::review_s31_doubts::{stopped, within_60s};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A guest whose groups are removed (those below first) on drop, once it
/// was stopped, whatever the test did: a group of a test must not outlive
/// it. Looked up at the drop: the run dir's path names them once it exists.
pub(crate) struct RmGroups(pub(crate) Guest);

impl Drop for RmGroups {
    fn drop(&mut self) {
        let g = &self.0;
        let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
        for g in groups(&g.name, &g.run_dir) {
            remove_dirs(&g);
        }
    }
}

/// The guest's groups that exist.
pub(crate) fn existing(g: &Guest) -> Vec<PathBuf> {
    groups(&g.name, &g.run_dir)
        .into_iter()
        .filter(|p| p.is_dir())
        .collect()
}

/// `guest start` of `g` with `hook` set to 1, spawned; waits until it
/// stopped itself there.
fn start_stopped_at(g: &Guest, hook: &str) -> KillOnDrop {
    let mut start = g.cmd(&["start", &g.name]);
    start
        .env(hook, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = KillOnDrop(Some(start.spawn().unwrap()));
    let pid = start.0.as_ref().unwrap().id();
    assert!(within_60s(|| stopped(pid)), "start never stopped at {hook}");
    start
}

/// The memory hierarchy's group of `g`, if the host has a v1 one.
fn memory_group(g: &Guest) -> Option<PathBuf> {
    groups(&g.name, &g.run_dir)
        .into_iter()
        .find(|p| p.parent().and_then(Path::parent) == Some(Path::new("/sys/fs/cgroup/memory")))
}

/// `guest stop --timeout 0` of the running `g` spawned, its groups'
/// listing held `pause_ms` (UNIFS_TEST_CGROUP_REMOVE_LISTED_PAUSE_MS),
/// `env` set too; returned once the guest and its daemon are gone and its
/// root unmounted (the stop is in the pause, or just before it), with the
/// guest's first group.
pub(crate) fn stop_at_listing(
    g: &Guest,
    pause_ms: &str,
    env: &[(&str, &str)],
) -> (KillOnDrop, PathBuf) {
    let init = g.state()["pid"].as_i64().unwrap();
    let group = existing(g).into_iter().next().expect("no group");
    let mut stop = g.cmd(&["stop", "--timeout", "0", &g.name]);
    stop.env("UNIFS_TEST_CGROUP_REMOVE_LISTED_PAUSE_MS", pause_ms)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stop = KillOnDrop(Some(stop.spawn().unwrap()));
    let procs = |leaf: &str| {
        std::fs::read_to_string(group.join(leaf).join("cgroup.procs")).unwrap_or_default()
    };
    assert!(
        within_60s(|| !Path::new(&format!("/proc/{init}")).exists()
            && procs("guest").is_empty()
            && procs("mount").is_empty()
            && !crate::guest::harness::is_mounted(&g.run_dir.join(&g.name).join("root"))),
        "the guest never ended"
    );
    (stop, group)
}

/// A start SIGKILLed once it made its groups, before anything recorded
/// them (no record, no process, no mount): before, nothing removed them.
/// `guest stop` said the guest was not running and left them, and the
/// next start took them as they were, with the killed start's limits:
/// a memory limit since taken out of the config still held the guest.
/// Now `stop` removes them (and says so), and a start makes them anew.
#[test]
fn s48_a_start_killed_after_making_its_groups_leaves_none_behind() {
    let test = "s48_a_start_killed_after_making_its_groups_leaves_none_behind";
    if !can_run(test) {
        return;
    }
    let rm = RmGroups(Guest::new("cglkill", "[\"/bin/sleep\", \"1000\"]", true));
    let g = &rm.0;
    let config = std::fs::read_to_string(g.config()).unwrap();
    std::fs::write(g.config(), format!("{config}memory = \"96M\"\n")).unwrap();

    // Killed once: `stop` removes what it left.
    let start = start_stopped_at(g, "UNIFS_TEST_START_CGROUP_STOP");
    drop(start);
    let left = existing(g);
    assert!(!left.is_empty(), "the start made no group");
    let o = g.unifs(&["stop", &g.name]);
    assert!(
        existing(g).is_empty(),
        "groups left after `guest stop` ({}; {}): {:?}",
        stdout(&o),
        stderr(&o),
        existing(g)
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("the empty cgroups an interrupted start left were removed"),
        "{}",
        stdout(&o)
    );

    // Killed again, the limit then taken out: the next start's group has
    // none of it.
    let Some(memory) = memory_group(g) else {
        return;
    };
    let start = start_stopped_at(g, "UNIFS_TEST_START_CGROUP_STOP");
    drop(start);
    let limit = |p: &Path| std::fs::read_to_string(p.join("memory.limit_in_bytes")).unwrap();
    assert_eq!(limit(&memory).trim(), (96u64 << 20).to_string());
    std::fs::write(g.config(), &config).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let now: u64 = limit(&memory).trim().parse().unwrap();
    assert!(
        now > 96 << 20,
        "the guest started without a memory limit runs under the killed start's: {now}"
    );
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    assert!(existing(g).is_empty(), "left: {:?}", existing(g));
}

/// `stop` removes a guest's groups having listed them once: a group made
/// below one of them after that (a guest's systemd making one while it is
/// stopped) kept its parent (EBUSY until the 2 s bound), and both were
/// left. The listing is held open by UNIFS_TEST_CGROUP_REMOVE_LISTED_PAUSE_MS.
#[test]
fn s48_a_group_made_below_after_the_listing_is_removed_too() {
    let test = "s48_a_group_made_below_after_the_listing_is_removed_too";
    if !can_run(test) {
        return;
    }
    let rm = RmGroups(Guest::new("cglbelow", "[\"/bin/sleep\", \"1000\"]", true));
    let g = &rm.0;
    ok(&g.unifs(&["start", &g.name]));
    let (stop, group) = stop_at_listing(g, "3000", &[]);
    // Made once the stop has listed the groups: it sleeps in its pause
    // (before, 300 ms were taken to get it there), and still does after.
    let pid = stop.0.as_ref().unwrap().id();
    crate::common::wait_for_pause(pid, 3000);
    std::fs::create_dir(group.join("guest").join("cglnew")).unwrap();
    assert!(
        crate::common::sleeping_for(pid, 3000),
        "the stop's pause ended before the group was made (missed under load, or the \
         stop went on at once)"
    );
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        existing(g).is_empty(),
        "left: {:?} ({})",
        existing(g),
        stderr(&o)
    );
}

/// A process still in a guest's group when `stop` removes it (one SIGKILL
/// has not ended: here one the test moved there after the kill): the
/// removal gave up after 2 s with `could not remove cgroup …: Device or
/// resource busy`, naming no process, and the groups stayed for good:
/// once it ended, a `stop` said the guest was not running and left them.
/// Now the warning names the process, and the next `stop` removes them.
#[test]
fn s48_a_group_a_process_held_is_named_then_removed_by_the_next_stop() {
    let test = "s48_a_group_a_process_held_is_named_then_removed_by_the_next_stop";
    if !can_run(test) {
        return;
    }
    let rm = RmGroups(Guest::new("cglheld", "[\"/bin/sleep\", \"1000\"]", true));
    let g = &rm.0;
    ok(&g.unifs(&["start", &g.name]));
    let (stop, group) = stop_at_listing(g, "3000", &[]);
    let mut held = KillOnDrop(Some(Command::new("sleep").arg("1000").spawn().unwrap()));
    let pid = held.0.as_ref().unwrap().id();
    std::fs::write(group.join("guest").join("cgroup.procs"), pid.to_string()).unwrap();
    let o = wait_bounded(stop, Duration::from_secs(60));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("process {pid} (sleep) is still in it")),
        "the warning names no process: {err}"
    );
    assert!(!existing(g).is_empty(), "the held group went");
    // Ended: the next stop removes what it held.
    if let Some(mut c) = held.0.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let o = g.unifs(&["stop", &g.name]);
    assert!(
        existing(g).is_empty(),
        "left after the next stop: {:?} ({}; {})",
        existing(g),
        stdout(&o),
        stderr(&o)
    );
    assert!(o.status.success(), "{}", stderr(&o));
}
