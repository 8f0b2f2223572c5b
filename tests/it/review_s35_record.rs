//! Review s35 (record): `guest exec` and `enter` read the running guest's
//! runtime record once for the capability check (CAP_SYS_PTRACE,
//! CAP_SETUID by what it records) and again to join it: a guest restarted
//! in between got a check for one init and an exec into the other, which
//! failed with a bare EPERM in place of the named refusal. Now the record
//! checked is the one joined, read once.

use crate::guest::harness::{can_run, ok};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s35_privpol::Opens;

#[test]
fn s35_exec_and_enter_check_and_join_one_read_of_the_record() {
    if !can_run("s35_exec_and_enter_check_and_join_one_read_of_the_record") {
        return;
    }
    let g = Guest::new("s35record", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let record = Opens::of(&g.run(&g.name).join("state.json"));
    // (stdin is /dev/null: enter's shell ends at once.)
    for args in [
        &["exec", &g.name, "--", "/bin/true"][..],
        &["enter", &g.name],
    ] {
        ok(&g.unifs(args));
        assert_eq!(record.take(), 1, "{args:?}: the record's opens");
    }
    ok(&g.unifs(&["stop", &g.name]));
}
