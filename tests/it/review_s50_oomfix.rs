//! Session 50 "oomfix": review of "oomscore". A memory limit `guest
//! update` adds raises the guest's processes above an unshielded daemon
//! before the limit is written, not after.

use crate::guest::harness::{can_run, ok, stderr, within_30s};
use crate::guest::review_s11_life::Guest;
use crate::review_s50_oomscore::{raised, score_of, scores};

/// The raise comes before the limit is written: on v2 a `memory.max`
/// below the guest's usage OOM-kills at once, which with the guest level
/// with its daemon at 0 could take the daemon. Seen here as a limit the
/// kernel refuses (v1: a limit below usage that reclaim cannot reach,
/// with no swap, fails EBUSY): the processes were raised before it, and
/// the update says they stay so. Before 2026-12-06 the raise came after
/// the write, and a failed write left them at 0.
#[test]
fn s50_an_update_raises_the_guest_before_it_writes_the_memory_limit() {
    if !can_run("s50_an_update_raises_the_guest_before_it_writes_the_memory_limit") {
        return;
    }
    // 8 MB held in the shell's heap, which no reclaim can take without swap.
    let init = "[\"/bin/sh\", \"-c\", \
                \"x=$(head -c 8000000 /dev/zero | tr -c a a); \
                while :; do sleep 1000; done\"]";
    let g = Guest::new("s50oomorder", init);
    ok(&g.unifs(&["start", &g.name]));
    let init_pid = g.init_pid();
    let ready = within_30s(|| {
        std::fs::read_to_string(format!("/proc/{init_pid}/status"))
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("RssAnon:"))?.to_string();
                l.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .is_some_and(|kb| kb > 4000)
    });
    assert!(ready, "the guest's init never held its 8 MB");
    let o = g.unifs(&["update", "--memory", "1M", &g.name]);
    let said = stderr(&o);
    let after = scores(&g);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    if o.status.success() {
        // A kernel that took the limit (v2 OOM-kills instead): not this case.
        eprintln!("the 1M limit was taken, not refused: {said}");
        return;
    }
    let raised = raised();
    assert_eq!(
        score_of(&after, init_pid),
        Some(raised),
        "init after a refused update: {after:?}; {said}"
    );
    if raised == "999" {
        assert!(
            said.contains("were not set") && said.contains("stay at 999"),
            "the refused update says the raise stays: {said}"
        );
    }
}
