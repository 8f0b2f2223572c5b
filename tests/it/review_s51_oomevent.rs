//! Session 51 "oomevent": an OOM kill in a group the guest removes within
//! one of its keeper's samples (half a second apart) still counts. v1
//! counts a kill in the victim's own group alone (its parents' counts
//! stay 0), so a group gone before the next sample took its kill along.

use crate::guest::harness::{can_run, ok, stdout, within_30s};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s43_forkfail::{guest_in_16m_with, ALLOC_64M};
use crate::review_s46_oomrev2::status_json as state;
use crate::review_s47_oom3::{memory_leaf, RmdirOnDrop};

/// In the guest, one script: its memory hierarchy mounted (rooted at its
/// leaf), a group of its own made (as its systemd does a service's), a
/// process in it the OOM killer ends, and the group removed at once.
fn kill_in_a_group_and_remove_it_at_once(g: &Guest) -> String {
    let script = format!(
        "mkdir -p /tmp/m && mount -t cgroup -o memory none /tmp/m && mkdir /tmp/m/s51 && \
         sh -c 'echo $$ > /tmp/m/s51/cgroup.procs && {ALLOC_64M}'; echo sub $?; \
         rmdir /tmp/m/s51 && echo removed; umount /tmp/m"
    );
    stdout(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", &script]))
}

/// `status` said no OOM kill: the keeper had not read the group before
/// the guest removed it. Now an OOM in the guest's limit wakes it at once.
#[test]
fn s51_a_kill_in_a_group_removed_at_once_still_counts_in_status() {
    if !can_run("s51_a_kill_in_a_group_removed_at_once_still_counts_in_status") {
        return;
    }
    let g = guest_in_16m_with("s51now", SLEEP, "cap_add = [\"sys_admin\"]");
    ok(&g.unifs(&["start", &g.name]));
    // Removed at the end whatever happens (stop removes it too).
    let _rm = RmdirOnDrop(memory_leaf(&g).join("s51"));
    let out = kill_in_a_group_and_remove_it_at_once(&g);
    let mut st = state(&g);
    let counted = within_30s(|| {
        st = state(&g);
        st["oom_kills"] == 1
    });
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert!(out.contains("sub 137") && out.contains("removed"), "{out}");
    assert!(counted, "{st}\n{out}");
}
