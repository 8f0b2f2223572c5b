//! Session 48 (mend): what session 47 left said twice, shared; and a test
//! helper's unbounded read of another process's /proc/PID/environ.

use crate::fs::harness::World;
use crate::review_s46_rundir2::environ_bounded;
use crate::review_s47_procscan::{within_30s, Stuck};

/// Guard for `BusyRunDir::probes`' read of a process's environment
/// (`environ_bounded`): that read, as a cmdline read, waits for the
/// process's memory-map lock, and one whose lock waits on a stalled FUSE
/// mount (procscan's STUCK) is given up within the bound, not waited for.
/// (Fails with the read unbounded, `std::fs::read` as it was: no answer
/// within 30 s.)
#[test]
fn s48_a_tests_look_at_a_stuck_processes_environ_ends() {
    let test = "s48_a_tests_look_at_a_stuck_processes_environ_ends";
    let w = World::new();
    let Some(stuck) = Stuck::new(test, &w, "s48-mend") else {
        return;
    };
    let pid = stuck.pid as i32;
    let read = within_30s(move || environ_bounded(pid));
    assert_eq!(
        read,
        Some(None),
        "the read of its environ did not end in 30 s"
    );
}
