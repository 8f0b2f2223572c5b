//! Session 50 "oomtally": `guest status`'s count of OOM kills keeps the
//! kills of a group the guest removed (as systemd does a service's), and
//! of the boots before its reboot. The keeper's tally was in its memory
//! alone: `status` summed the groups as they were.

use crate::guest::harness::{can_run, ok, stdout, within_30s};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s43_forkfail::guest_in_16m_with;
use crate::review_s46_oomrev2::status_json as state;
use crate::review_s47_oom3::{memory_leaf, oom_killed_in, RmdirOnDrop};
use serde_json::Value;

/// In running `g`: a group of its own below its leaf (as its systemd
/// makes a service's), one of whose processes the OOM killer ends; the
/// group then removed once the keeper wrote its count (`oom.json`, its
/// sample every half second). Whether it was written.
fn kill_in_a_group_then_remove_it(g: &Guest) -> bool {
    let service = memory_leaf(g).join("s50-service");
    std::fs::create_dir(&service).unwrap();
    let _rm = RmdirOnDrop(service.clone());
    oom_killed_in(g, &service);
    let file = g.run_dir().join(&g.name).join("oom.json");
    let kept =
        within_30s(|| std::fs::read_to_string(&file).is_ok_and(|t| t.contains("\"oom_kill\":1")));
    std::fs::remove_dir(&service).unwrap();
    kept
}

/// `status` said no OOM kill once the group that had it was removed (the
/// sum of the groups left: 0). Now the keeper's count of that group.
#[test]
fn s50_a_kill_in_a_group_the_guest_removed_still_counts_in_status() {
    if !can_run("s50_a_kill_in_a_group_the_guest_removed_still_counts_in_status") {
        return;
    }
    let g = guest_in_16m_with("s50rm", SLEEP, "");
    ok(&g.unifs(&["start", &g.name]));
    let kept = kill_in_a_group_then_remove_it(&g);
    let status = stdout(&g.unifs(&["status", &g.name]));
    let st = state(&g);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    let said = "oom:     1 of its processes killed by the memory limit";
    assert!(status.contains(said), "oom.json written: {kept}\n{status}");
    assert_eq!(st["oom_kills"], 1, "{st}");
}

/// The guest's own reboot: its keeper starts it again, in new groups; the
/// kill of the boot before still counts (`reboots: 1`), until an
/// operator's start.
#[test]
fn s50_a_kill_before_the_guests_reboot_still_counts_until_an_operators_start() {
    if !can_run("s50_a_kill_before_the_guests_reboot_still_counts_until_an_operators_start") {
        return;
    }
    let script = "[ -e /rebooted ] && exec sleep 1000; \
                  while [ ! -e /reboot-now ]; do sleep 0.1; done; touch /rebooted; reboot -f";
    let init = format!("[\"/bin/sh\", \"-c\", {script:?}]");
    let g = guest_in_16m_with("s50boot", &init, "cap_add = [\"sys_boot\"]");
    ok(&g.unifs(&["start", &g.name]));
    let first = g.init_pid();
    let kept = kill_in_a_group_then_remove_it(&g);
    assert_eq!(state(&g)["oom_kills"], 1, "oom.json written: {kept}");
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/reboot-now"]));
    let mut st = Value::Null;
    let rebooted = within_30s(|| {
        st = state(&g);
        st["running"] == true && st["reboots"] == 1 && st["pid"].as_i64() != Some(first)
    });
    assert!(rebooted, "not started again: {st}");
    assert_eq!(st["oom_kills"], 1, "{st}");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    for done in ["rebooted", "reboot-now"] {
        std::fs::remove_file(g.t.root().join(done)).unwrap();
    }
    ok(&g.unifs(&["start", &g.name]));
    let st = state(&g);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert_eq!(st["running"], true, "{st}");
    assert!(st["oom_kills"].is_null(), "{st}");
}
