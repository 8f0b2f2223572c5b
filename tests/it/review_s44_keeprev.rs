//! Review (session 44) of "keeper": a panic in a named guest's keeper.
//!
//! A panic of a keeper thread but its main one stops the guest
//! (keeper_panic). A panic of its main one, once init ran, ended the keeper
//! at once (125, as any child of unifs that fails), and init ran on with
//! nobody keeping it: signals to the keeper (a `systemctl stop`) reached
//! nobody, and its end was neither recorded nor torn down.

use crate::guest::harness::{alive, can_run, ok, run_bounded};
use crate::guest::review_s11_life::Guest;
use crate::review_s31_doubts::within_60s;
use crate::review_s38_halt::nothing_left;
use crate::review_s44_keeper::ENDS_ON_TERM;
use std::time::Duration;

/// The keeper's main thread panics once init runs
/// (UNIFS_TEST_CHILD_PANIC=keeper-main): it stops init (its stop signal)
/// and says why in the console log before it ends; `guest stop` then
/// clears what is left. Before, init ran on for good, unkept.
#[test]
fn s44_a_panic_in_the_keepers_main_thread_stops_the_guest() {
    let test = "s44_a_panic_in_the_keepers_main_thread_stops_the_guest";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s44mainpanic", ENDS_ON_TERM);
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_CHILD_PANIC", "keeper-main");
    ok(&run_bounded(start, Duration::from_secs(30)));
    let init = g.init_pid();
    assert!(
        within_60s(|| !alive(init)),
        "init (pid {init}) runs on after its keeper's main thread failed"
    );
    let log = std::fs::read_to_string(g.run(&g.name).join("console.log")).unwrap_or_default();
    assert!(
        log.contains("its keeper failed on an internal error in its thread main")
            && log.contains("UNIFS_TEST_CHILD_PANIC=keeper-main"),
        "{log}"
    );
    ok(&g.unifs(&["stop", &g.name]));
    nothing_left(&g);
}
