//! Session 48, review of "stdio4" (task "stdiorev"): `guest exec`'s stdin
//! that is its stdout too (`<> f >&0`) had the fix stdio4 made for
//! `unifs run` only: its copy never moved the offset on, so the output
//! `exec` wrote through the one open file landed over the input.

use crate::guest::harness::{can_run, ok};
use crate::guest::named::Guest;
use crate::review_s48_stdio4::{output_lands_after_its_input, READ_A_LINE_AND_SAY_IT};

/// `unifs guest exec g -- sh -c 'read l; echo "got $l"' <> f >&0`: stdin
/// and stdout one open file, as on the host, where the output lands after
/// the line read (the offset is there) and the offset ends past both.
/// Before: the file was "got line1\n2\nline3\n" (the output written over
/// the input at offset 0) and the offset 16; now the input and the output
/// after it, and the offset 16, as under `unifs run`
/// (`s48_run_output_through_its_stdin_file_never_lands_over_its_input`,
/// [`output_lands_after_its_input`]).
#[test]
fn s48_exec_output_through_its_stdin_file_never_lands_over_its_input() {
    if !can_run("s48_exec_output_through_its_stdin_file_never_lands_over_its_input") {
        return;
    }
    let g = Guest::new("s48rvo", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let script = READ_A_LINE_AND_SAY_IT;
    let cmd = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", script]);
    output_lands_after_its_input(g.t.dir.path(), cmd);
}
