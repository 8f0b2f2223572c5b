//! Review (session 44) "oomrev" of "oomexec": a SIGKILL is the memory
//! limit's OOM killer's only if the kernel's log names the process. The log
//! names the thread whose memory it took: a process whose main thread had
//! ended (`pthread_exit`) was named by another thread's ID, so its OOM kill
//! was said as a plain SIGKILL, where the count's window said it before.

use crate::guest::harness::{can_run, stderr, stdout, TestRoot};
use crate::guest::review_s11_life::SLEEP;
use crate::review_s43_forkfail::{guest_in_16m, ALLOC_64M};
use std::path::Path;
use std::process::Command;

/// The kill as unifs says it, with the limit and the kernel's count.
const BY_THE_LIMIT: &str = "killed by the memory limit (16 MiB; memory.oom_control oom_kill ";

/// A process whose main thread ends at once; its other thread then takes
/// 256 MiB, a MiB at a time.
const LEADERLESS: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void *hog(void *arg) {
    (void)arg;
    sleep(2); /* the main thread has ended by then */
    for (int i = 0; i < 256; i++) {
        char *p = malloc(1 << 20);
        if (p) memset(p, 1, 1 << 20);
    }
    _exit(0);
}
int main(void) {
    pthread_t t;
    if (pthread_create(&t, 0, hog, 0)) return 2;
    pthread_exit(0);
}
"#;

/// Compiles [`LEADERLESS`] statically to `root`/bin/leaderless; false (a
/// skip) where no static C compiler is installed, outside CI.
fn with_leaderless(root: &Path, test: &str) -> bool {
    let src = root.join("tmp/leaderless.c");
    std::fs::write(&src, LEADERLESS).unwrap();
    let cc = Command::new("cc")
        .args(["-O2", "-static", "-pthread", "-o"])
        .arg(root.join("bin/leaderless"))
        .arg(&src)
        .status();
    if cc.is_ok_and(|s| s.success()) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("needs cc -static (gcc, libc6-dev), and CI must not skip it");
    }
    crate::common::skip(test, "needs cc -static (gcc, libc6-dev)");
    false
}

/// `unifs run --memory 16M` whose command's other thread (its main one
/// ended) the OOM killer ended: 137 and nothing said, as for a SIGKILL by
/// hand. It says the memory limit killed it again.
#[test]
fn s44_a_run_whose_commands_main_thread_had_ended_says_its_oom_kill() {
    let test = "s44_a_run_whose_commands_main_thread_had_ended_says_its_oom_kill";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    if !with_leaderless(&t.root(), test) {
        return;
    }
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root());
    run.args(["--memory", "16M", "--", "/bin/leaderless"]);
    see_its_oom_kill_said(run);
}

/// Runs `run` (a `unifs run --memory 16M` whose command the OOM killer
/// ends): 137, and said so.
fn see_its_oom_kill_said(run: Command) {
    let o = crate::guest::harness::run_bounded(run, std::time::Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(137), "{err}{}", stdout(&o));
    let said = format!("the guest's command was {BY_THE_LIMIT}1)");
    assert!(err.contains(&said), "{err}");
}

/// The same through `guest exec`: 137 and nothing said.
#[test]
fn s44_an_exec_whose_commands_main_thread_had_ended_says_its_oom_kill() {
    let test = "s44_an_exec_whose_commands_main_thread_had_ended_says_its_oom_kill";
    if !can_run(test) {
        return;
    }
    let g = guest_in_16m("s44oomlead", SLEEP);
    if !with_leaderless(&g.t.root(), test) {
        return;
    }
    crate::review_s44_oomexec::exec_and_see_its_oom_kill_said(&g, &["/bin/leaderless"]);
}

/// Guard: `unifs run` in a PID namespace of its own (`unshare --pid
/// --fork`), whose PIDs are not the log's: the log is not asked, the
/// count's window says the OOM kill still (were the log asked, the
/// command's PID there would never be named).
#[test]
fn s44_a_run_in_a_pid_namespace_of_its_own_still_says_its_oom_kill() {
    if !can_run("s44_a_run_in_a_pid_namespace_of_its_own_still_says_its_oom_kill") {
        return;
    }
    let t = TestRoot::new();
    let mut run = Command::new("unshare");
    run.args(["--pid", "--fork"])
        .arg(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root());
    run.args(["--memory", "16M", "--", "/bin/sh", "-c", ALLOC_64M]);
    see_its_oom_kill_said(run);
}

/// A kernel whose log reads otherwise (before 5.x: "Kill process PID"; the
/// tests' UNIFS_TEST_KMSG_FOREIGN makes every record such): the count rose
/// but no record named any victim, so the log cannot tell and the count's
/// window decides, as before the log was read. Before, the exec'd command
/// the OOM killer ended was said as a plain SIGKILL: nothing said.
#[test]
fn s44_an_oom_kill_a_foreign_kernel_log_does_not_name_is_said_by_the_count() {
    if !can_run("s44_an_oom_kill_a_foreign_kernel_log_does_not_name_is_said_by_the_count") {
        return;
    }
    let g = guest_in_16m("s44oomforeign", SLEEP);
    let start = g.unifs(&["start", &g.name]);
    assert!(start.status.success(), "{}", stderr(&start));
    let o = g
        .command()
        .env("UNIFS_TEST_KMSG_FOREIGN", "1")
        .args(["exec", &g.name, "--", "/bin/sh", "-c", ALLOC_64M])
        .output()
        .unwrap();
    let err = stderr(&o);
    let _ = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert_eq!(o.status.code(), Some(137), "{err}");
    let said = format!("the command in guest {} was {BY_THE_LIMIT}1)", g.name);
    assert!(err.contains(&said), "{err}");
}
