//! Review s44 (hooksrev) of the hooks change (41c6dfc): its tests of the
//! build without the feature (review_s44_hooks) need
//! `target/release/unifs-nohooks`, which only .ci/run makes. The README's
//! test command (`cargo test --release --features test-hooks`) does not,
//! so there they skip, and outside CI a skip said nothing: `skip` printed
//! its reason with `eprintln!`, which the test harness captures and shows
//! only for a test that fails. A run of the whole suite without the binary
//! counted those tests as passed, silently.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// A skip is said in the suite's output, not swallowed with the output of
/// a passing test: the test binary (this one), run as an unprivileged user
/// outside CI, skips a test that needs root, and the reason is on its
/// stderr. Before: the stderr held no "skipping" (libtest's capture).
#[test]
fn s44_a_skip_is_said_in_the_suites_output() {
    if !crate::common::require_root("s44_a_skip_is_said_in_the_suites_output") {
        return;
    }
    // One test of review_s44_hooks that skips without root, before it
    // looks for unifs-nohooks.
    let test = "s44_unify_of_a_build_without_the_feature_ignores_the_hooks";
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", &format!("review_s44_hooks::{test}")])
        .args(["--test-threads=1", "--color=never"])
        .env_remove("CI")
        .env_remove("RUST_TEST_NOCAPTURE")
        .current_dir("/")
        .uid(65534)
        .gid(65534);
    let o = crate::guest::harness::run_bounded(cmd, std::time::Duration::from_secs(30));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "stdout: {out}\nstderr: {err}");
    // It ran (one test, passed), as nobody.
    assert!(out.contains("1 passed"), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains(&format!("skipping {test}: needs root")),
        "the skip's reason is not in the output of the run:\nstdout: {out}\nstderr: {err}"
    );
}
