//! Review s44 (hooksrev) of the hooks change (41c6dfc): its tests of the
//! build without the feature (review_s44_hooks) need
//! `target/release/unifs-nohooks`, which only .ci/run makes. The README's
//! test command (`cargo test --release --features test-hooks`) does not,
//! so there they skip, and outside CI a skip said nothing: `skip` printed
//! its reason with `eprintln!`, which the test harness captures and shows
//! only for a test that fails. A run of the whole suite without the binary
//! counted those tests as passed, silently.

use crate::guest::harness::run_bounded;
use std::process::Command;
use std::time::Duration;

/// A skip is said in the suite's output, not swallowed with the output of
/// a passing test: the test binary (this one), run outside CI on a test
/// that skips without strace and with a PATH that finds none, passes it
/// and has the reason on its stderr. (A run as another user, skipping for
/// want of root, would need the build's directory readable by that user.)
/// Before: its stderr was empty (libtest had captured the `eprintln!`).
#[test]
fn s44_a_skip_is_said_in_the_suites_output() {
    let test =
        "review_s38_quota::s38_a_break_over_quota_fails_with_edquot_and_leaves_all_as_it_was";
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--test-threads=1", "--color=never"])
        .env("PATH", empty.path())
        .env_remove("CI")
        .env_remove("RUST_TEST_NOCAPTURE");
    let o = run_bounded(cmd, Duration::from_secs(30));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    // It ran: one test, passed.
    assert!(out.contains("1 passed"), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("skipping s38_a_break_over_quota_fails_with_edquot: needs strace"),
        "the skip's reason is not in the output of the run:\nstdout: {out}\nstderr: {err}"
    );
}
