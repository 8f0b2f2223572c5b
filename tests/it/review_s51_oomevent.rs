//! Session 51 "oomevent": an OOM kill in a group the guest removes within
//! one of its keeper's samples (half a second apart) still counts. v1
//! counts a kill in the victim's own group alone (its parents' counts
//! stay 0), so a group gone before the next sample took its kill along.

use crate::guest::harness::{can_run, ok, stdout, within_30s};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s43_forkfail::{guest_in_16m_with, ALLOC_64M};
use crate::review_s46_oomrev2::status_json as state;
use crate::review_s47_oom3::{memory_leaf, RmdirOnDrop};

/// How many times the script below kills and removes: the ticks alone
/// (half a second apart, the group gone 50 ms after its kill) read a kill
/// in time about one try in ten, so all of them hardly ever.
const TRIES: usize = 3;

/// In the guest, one script: its memory hierarchy mounted (rooted at its
/// leaf), then [`TRIES`] times a group of its own made (as its systemd
/// does a service's), a process in it the OOM killer ends, and the group
/// removed 50 ms after (not at once: the test is of the notice, not of
/// how soon a loaded host runs the watch after it).
fn kill_in_a_group_and_remove_it_soon(g: &Guest) -> String {
    let tries: Vec<String> = (1..=TRIES).map(|i| i.to_string()).collect();
    let tries = tries.join(" ");
    let script = format!(
        "mkdir -p /tmp/m && mount -t cgroup -o memory none /tmp/m && \
         for i in {tries}; do mkdir /tmp/m/s51$i && cd /tmp/m/s51$i && \
         sh -c 'echo $$ > cgroup.procs && {ALLOC_64M}'; echo sub $?; cd /; \
         sleep 0.05; rmdir /tmp/m/s51$i && echo removed; done; umount /tmp/m"
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
    // Removed at the end whatever happens (stop removes them too).
    let _rm: Vec<_> = (1..=TRIES)
        .map(|i| RmdirOnDrop(memory_leaf(&g).join(format!("s51{i}"))))
        .collect();
    let out = kill_in_a_group_and_remove_it_soon(&g);
    let mut st = state(&g);
    let counted = within_30s(|| {
        st = state(&g);
        st["oom_kills"] == TRIES
    });
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    let said = |word: &str| out.matches(word).count();
    assert!(
        said("sub 137") == TRIES && said("removed") == TRIES,
        "{out}"
    );
    assert!(counted, "{st}\n{out}");
}
