//! Session 50 (netidx): a veth guest's clean-up goes by the interface
//! index its set-up read, never by `ve-NAME` alone, which a guest of that
//! name from another run dir may hold; and a MAC address `status` derives
//! (a record of an older unifs kept none) says so. Everything made is
//! named `s50…` with a number of the pid and removed by guards.

use crate::guest::harness::{alive, ok, stderr, wait_bounded, KillOnDrop};
use crate::guest::named::Guest;
use crate::guest::review_s11_life::Continue;
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s46_netv6::{may_run, n};
use crate::review_s49_netleft::{port_tables, started_alone, twins, Lone, Twins};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// `g`'s runtime record.
fn record_path(g: &Guest) -> PathBuf {
    g.run_dir.join(&g.name).join("state.json")
}

fn record(g: &Guest) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(record_path(g)).unwrap()).unwrap()
}

/// A stopped keeper of `g` (a start's second fork: no child of it).
fn stopped_keeper(g: &Guest) -> Option<u32> {
    let run_dir = format!("UNIFS_RUN_DIR={}", g.run_dir.display());
    let procs = std::fs::read_dir("/proc").ok()?;
    let pids = procs.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
    pids.into_iter().find(|&pid| {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        comm.trim() == "unifs-keeper"
            && env.split(|&b| b == 0).any(|v| v == run_dir.as_bytes())
            && stopped(pid)
    })
}

/// The interface index of `port`, if it is there.
fn ifindex(port: &str) -> Option<String> {
    let path = Path::new("/sys/class/net").join(port).join("ifindex");
    std::fs::read_to_string(path)
        .ok()
        .map(|i| i.trim().to_string())
}

/// B, the guest of that name from the other run dir, was left as it was:
/// its host end still interface `index`, its port's tables `tables`, it
/// runs. Then stopped, leaving no table.
fn spared(b: &Guest, port: &str, index: &str, tables: &[String]) {
    assert_eq!(
        ifindex(port).as_deref(),
        Some(index),
        "A's clean-up deleted B's {port}"
    );
    assert_eq!(port_tables(port), tables, "A's clean-up deleted B's table");
    assert_eq!(b.state()["running"], true);
    ok(&b.unifs(&["stop", &b.name]));
    assert_eq!(port_tables(port), Vec::<String>::new(), "B stopped");
}

/// The record of a guest whose init died before its keeper recorded it
/// (its host end gone with its namespace) keeps the host end's index its
/// set-up read. Before, the record read the index again after the spawn,
/// found none, and the keeper's clean-up of that guest went by the name:
/// it deleted `ve-NAME` and every filter of it, by then those of the guest
/// of that name another run dir had started. Held here: A's keeper stops
/// before its record (UNIFS_TEST_RECORD_STOP) while A's init is killed,
/// and again in its network clean-up (UNIFS_TEST_NET_CLEANUP_STOP) while B
/// starts.
#[test]
fn s50_a_guest_dead_before_its_record_keeps_its_index_and_spares_another_run_dirs() {
    let test = "s50_a_guest_dead_before_its_record_keeps_its_index_and_spares_another_run_dirs";
    if !may_run(test) {
        return;
    }
    let pair = twins('i');
    let Twins { a, b, port, .. } = &pair;

    let mut start = a.cmd(&["start", &a.name]);
    start
        .env("UNIFS_TEST_RECORD_STOP", "1")
        .env("UNIFS_TEST_NET_CLEANUP_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = KillOnDrop(Some(start.spawn().unwrap()));
    let mut keeper = 0;
    assert!(
        within_60s(|| {
            keeper = stopped_keeper(a).unwrap_or(0);
            keeper != 0
        }),
        "A's keeper never reached its record"
    );
    let go_on = Continue(keeper as i32);
    let kids = std::fs::read_to_string(format!("/proc/{keeper}/task/{keeper}/children")).unwrap();
    let init: Vec<i32> = kids
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .collect();
    assert_eq!(init.len(), 1, "the keeper's children: {kids}");
    let made = ifindex(port).expect("A's host end");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        within_60s(|| ifindex(port).is_none()),
        "{port} outlived A's init"
    );
    drop(go_on);
    let said = wait_bounded(start, Duration::from_secs(60));
    // Its init reaped, the keeper cleans up, and stops in its network's.
    let go_on = Continue(keeper as i32);
    assert!(
        within_60s(|| stopped(keeper)),
        "A's keeper never reached its network clean-up: {}",
        stderr(&said)
    );
    let recorded = record(a)["host_ifindex"].to_string();

    ok(&b.unifs(&["start", &b.name]));
    let b_index = ifindex(port).expect("B's host end");
    let b_tables = port_tables(port);
    assert_eq!(b_tables.len(), 1, "B's own: {b_tables:?}");
    drop(go_on);
    assert!(
        within_60s(|| !record_path(a).exists() && !alive(keeper.into())),
        "A's keeper never ended"
    );
    spared(b, port, &b_index, &b_tables);
    assert_eq!(recorded, made, "A's record's host_ifindex");
}

/// A record of a unifs before 2026-12-01 keeps no host end index. Its
/// stale clean-up (init long dead, `ve-NAME` gone with its namespace) went
/// by the name: `ip link del ve-NAME` and every filter of that port,
/// those of the guest of that name another run dir runs. Now nothing goes
/// by the name alone: B keeps its interface and its filter.
#[test]
fn s50_an_old_records_stale_cleanup_spares_another_run_dirs_port() {
    let test = "s50_an_old_records_stale_cleanup_spares_another_run_dirs_port";
    if !may_run(test) {
        return;
    }
    let pair = twins('o');
    let Twins { a, b, port, .. } = &pair;

    ok(&a.unifs(&["start", &a.name]));
    let pid = a.state()["pid"].as_i64().unwrap();
    crate::guest::harness::kill_init_keeperless(pid);
    assert!(within_60s(|| ifindex(port).is_none()), "{port} outlived A");
    // As the older unifs wrote it: no index, no MAC address.
    let mut rec = record(a);
    let fields = rec.as_object_mut().unwrap();
    assert!(fields.remove("host_ifindex").is_some(), "{rec}");
    fields.remove("mac_address");
    std::fs::write(record_path(a), serde_json::to_vec_pretty(&rec).unwrap()).unwrap();

    ok(&b.unifs(&["start", &b.name]));
    let b_index = ifindex(port).expect("B's host end");
    let b_tables = port_tables(port);
    assert_eq!(b_tables.len(), 1, "B's own: {b_tables:?}");
    let o = a.unifs(&["stop", &a.name]);
    assert!(o.status.success(), "A's stop: {}", stderr(&o));
    assert!(!record_path(a).exists(), "A's stale record is left");
    spared(b, port, &b_index, &b_tables);
}

/// A running guest's record of an older unifs holds no MAC address:
/// `status` derives it from the name and /etc/machine-id as it is now,
/// and says so, `(derived)` (`mac_address_derived` in `--json`); an
/// address the start recorded is shown as before. Before, both were
/// shown alike, as if recorded.
#[test]
fn s50_status_marks_a_mac_it_derived() {
    let test = "s50_status_marks_a_mac_it_derived";
    if !may_run(test) {
        return;
    }
    let lone = started_alone('m', 4);
    let g = &lone.g;
    let mac_line = |g: &Guest| {
        let out = ok(&g.unifs(&["status", &g.name])).to_string();
        let line = out.lines().find(|l| l.starts_with("mac:"));
        line.unwrap_or_else(|| panic!("no mac: {out}")).to_string()
    };
    let recorded = record(g)["mac_address"].as_str().unwrap().to_string();
    let line = mac_line(g);
    assert!(
        line.contains(&recorded) && !line.contains("derived"),
        "{line}"
    );

    let mut rec = record(g);
    rec.as_object_mut().unwrap().remove("mac_address");
    std::fs::write(record_path(g), serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    let line = mac_line(g);
    assert!(
        line.contains(&format!("{recorded} (derived)")),
        "a derived address shown as recorded: {line}"
    );
    let st = g.state();
    assert_eq!(st["mac_address"], recorded.as_str(), "{st}");
    assert_eq!(st["mac_address_derived"], true, "{st}");
    let list = ok(&g.unifs(&["list", "--json"])).to_string();
    let all: serde_json::Value = serde_json::from_str(&list).unwrap();
    let listed = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == g.name.as_str());
    assert_eq!(listed.unwrap()["mac_address_derived"], true, "{list}");
    // Its start's own, recorded: not derived.
    ok(&g.unifs(&["restart", &g.name]));
    assert_eq!(g.state()["mac_address_derived"], false);
    ok(&g.unifs(&["stop", &g.name]));
}

/// A stale record's host end still there (its namespace held: here by
/// `ip netns attach`, as by any process or mount of it, or for the moment
/// the kernel takes to free it) when the clean-up looks, gone before it
/// deletes, and `ve-NAME` made meanwhile by another run dir's start of the
/// name: `ip link del` goes by the name, and deleted that guest's. Now the
/// look and the delete are under the host's veth lock, which a start holds
/// from its own look until its `ve-NAME` is made. Held here: A's `stop`
/// stops at UNIFS_TEST_NET_CLEANUP_STOP (before, after its look; now
/// before it) while the namespace goes and B starts.
#[test]
fn s50_a_host_end_gone_between_the_look_and_the_delete_spares_the_next() {
    let test = "s50_a_host_end_gone_between_the_look_and_the_delete_spares_the_next";
    if !may_run(test) {
        return;
    }
    let pair = twins('h');
    let Twins { a, b, port, .. } = &pair;
    let n = n();

    ok(&a.unifs(&["start", &a.name]));
    let pid = a.state()["pid"].as_i64().unwrap();
    let held = crate::review_s46_netv6::Netns(format!("s50{n}held"));
    crate::review_s46_netv6::run(&["ip", "netns", "attach", &held.0, &pid.to_string()]);
    crate::guest::harness::kill_init_keeperless(pid);
    assert!(within_60s(|| !alive(pid)), "A's init lives");
    let a_index = ifindex(port).expect("A's host end, its namespace held");

    let mut stop = a.cmd(&["stop", &a.name]);
    stop.env("UNIFS_TEST_NET_CLEANUP_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stop = KillOnDrop(Some(stop.spawn().unwrap()));
    let stop_pid = stop.0.as_ref().unwrap().id();
    let go_on = Continue(stop_pid as i32);
    assert!(
        within_60s(|| stopped(stop_pid)),
        "A's stop never reached its network clean-up"
    );
    drop(held);
    assert!(
        within_60s(|| ifindex(port).is_none()),
        "{port} outlived its namespace"
    );
    ok(&b.unifs(&["start", &b.name]));
    let b_index = ifindex(port).expect("B's host end");
    assert_ne!(a_index, b_index);
    let b_tables = port_tables(port);
    drop(go_on);
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(o.status.success(), "A's stop: {}", stderr(&o));
    spared(b, port, &b_index, &b_tables);
}

/// Whether a process of `g`'s run dir waits for a flock (`/proc/locks`
/// lists a waiter as "N: -> FLOCK … PID …"): a start at the host's veth
/// lock.
fn waits_for_a_flock(g: &Guest) -> bool {
    let run_dir = format!("UNIFS_RUN_DIR={}", g.run_dir.display());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let pid = match f.as_slice() {
            [_, "->", "FLOCK", _, _, pid, ..] => pid,
            _ => return false,
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        env.split(|&b| b == 0).any(|v| v == run_dir.as_bytes())
    })
}

/// What the host's veth lock guarantees a stale record's clean-up: its
/// look at `ve-NAME` and its `ip link del` (by the name) are one step for
/// a start, which makes `ve-NAME` under that lock. Held here: A's `stop`
/// stops at UNIFS_TEST_NET_CLEANUP_LOCKED_STOP, under the lock, after its
/// look found its own interface (its namespace held by `ip netns attach`)
/// and before the delete; the namespace goes; B (another run dir, the same
/// name) starts meanwhile. B's start waits for the lock, its `ve-NAME`
/// not made, until A's delete is done. Without the lock, B made its
/// `ve-NAME` there and A deleted it.
#[test]
fn s50_a_start_waits_for_a_cleanup_between_its_look_and_its_delete() {
    let test = "s50_a_start_waits_for_a_cleanup_between_its_look_and_its_delete";
    if !may_run(test) {
        return;
    }
    let pair = twins('k');
    let Twins { a, b, port, .. } = &pair;
    let n = n();

    ok(&a.unifs(&["start", &a.name]));
    let pid = a.state()["pid"].as_i64().unwrap();
    let held = crate::review_s46_netv6::Netns(format!("s50{n}lheld"));
    crate::review_s46_netv6::run(&["ip", "netns", "attach", &held.0, &pid.to_string()]);
    crate::guest::harness::kill_init_keeperless(pid);
    assert!(within_60s(|| !alive(pid)), "A's init lives");
    ifindex(port).expect("A's host end, its namespace held");

    let mut stop = a.cmd(&["stop", &a.name]);
    // Its look needs the host's veth lock, which other tests hold for
    // seconds on purpose: not taken within its 3 s, no look.
    stop.env("UNIFS_TEST_NET_CLEANUP_LOCKED_STOP", "1")
        .env("UNIFS_TEST_CLEANUP_LOCK_MS", "60000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stop = KillOnDrop(Some(stop.spawn().unwrap()));
    let stop_pid = stop.0.as_ref().unwrap().id();
    let go_on = Continue(stop_pid as i32);
    assert!(
        within_60s(|| stopped(stop_pid)),
        "A's stop never reached its look under the lock"
    );
    drop(held);
    assert!(
        within_60s(|| ifindex(port).is_none()),
        "{port} outlived its namespace"
    );
    let mut start = b.cmd(&["start", &b.name]);
    start
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut start = KillOnDrop(Some(start.spawn().unwrap()));
    let start_done = |s: &mut KillOnDrop| s.0.as_mut().unwrap().try_wait().unwrap().is_some();
    assert!(
        within_60s(|| start_done(&mut start) || waits_for_a_flock(b)),
        "B's start neither ended nor waited for the lock"
    );
    let made = ifindex(port);
    drop(go_on);
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(o.status.success(), "A's stop: {}", stderr(&o));
    let o = wait_bounded(start, Duration::from_secs(60));
    assert!(o.status.success(), "B's start: {}", stderr(&o));
    let b_index = ifindex(port).expect("B's host end");
    assert_eq!(
        made, None,
        "B made {port} while A was between its look and its delete"
    );
    let b_tables = port_tables(port);
    assert!(!b_tables.is_empty(), "B's port unlocked");
    spared(b, port, &b_index, &b_tables);
}

/// A `stop`'s network clean-up waits for the host's veth lock a bounded
/// time (here UNIFS_TEST_CLEANUP_LOCK_MS's 200 ms), then leaves `ve-NAME`
/// to go with its namespace and says so. Before, it waited for as long as
/// any start held the lock (a hung `ip`, a stopped `unifs run`): past its
/// own deadline. Held here by `flock`, for as long as the stop takes.
#[test]
fn s50_a_stops_cleanup_waits_for_the_veth_lock_a_bounded_time() {
    let test = "s50_a_stops_cleanup_waits_for_the_veth_lock_a_bounded_time";
    if !may_run(test) {
        return;
    }
    let lone = started_alone('w', 8);
    let Lone { g: a, port, .. } = &lone;

    let mut flock = std::process::Command::new("flock");
    flock
        .args(["-x", "/run/lock/unifs-veth.lock", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let flock = KillOnDrop(Some(flock.spawn().unwrap()));
    let flock_pid = flock.0.as_ref().unwrap().id();
    assert!(
        within_60s(|| std::fs::read_to_string("/proc/locks")
            .unwrap_or_default()
            .lines()
            .any(|l| !l.contains("->")
                && l.split_whitespace().nth(4) == Some(flock_pid.to_string().as_str()))),
        "flock never took the lock"
    );
    let mut stop = a.cmd(&["stop", &a.name]);
    stop.env("UNIFS_TEST_CLEANUP_LOCK_MS", "200")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut stop = KillOnDrop(Some(stop.spawn().unwrap()));
    let ended = within_60s(|| stop.0.as_mut().unwrap().try_wait().unwrap().is_some());
    drop(flock);
    assert!(ended, "A's stop waited for the veth lock");
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(o.status.success(), "A's stop: {}", stderr(&o));
    assert!(
        within_60s(|| ifindex(port).is_none()),
        "{port} outlived its namespace"
    );
}
