//! Review (session 45) of the loose ends of the keepers' failure paths
//! (session 44's keeper_panic), and of the tests that skipped silently.

use crate::guest::harness::{can_run, ok, run_bounded, stderr, wait_bounded, KillOnDrop, TestRoot};
use crate::guest::review_s11_life::Continue;
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s38_halt::{
    halting, init_and_keeper, nothing_left, stopped_by_its_keeper, HALT_ON_GO,
};
use crate::review_s38_keeperkill::signal;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A keeper whose thread for signals fails (UNIFS_TEST_CHILD_PANIC=
/// keeper-signals, on the first signal it takes) once init has ended by
/// itself: the keeper held at its stop of the guest (UNIFS_TEST_ENDED_STOP)
/// is sent SIGHUP, then let go on. Before, the console log said "so it
/// stops the guest now (SIGTERM, SIGKILL after 10 s)" of an init long
/// gone, and the keeper exited 101 with nothing in `exit.json` or `status`
/// saying why. Now the log says there was nothing left to stop, and the
/// record and `status` say the keeper failed once init had ended.
#[test]
fn s45_a_keeper_thread_failing_once_init_ended_says_so_and_records_it() {
    let test = "s45_a_keeper_thread_failing_once_init_ended_says_so_and_records_it";
    if !can_run(test) {
        return;
    }
    let g = halting("s45late", HALT_ON_GO);
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_ENDED_STOP", "1")
        .env("UNIFS_TEST_CHILD_PANIC", "keeper-signals")
        // Its thread's failure lands before the keeper's last look (no
        // backtrace to print first, which may take seconds).
        .env("UNIFS_TEST_KEEPER_END_PAUSE_MS", "5000")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let o = wait_bounded(
        KillOnDrop(Some(start.spawn().unwrap())),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (init, keeper) = init_and_keeper(&g);
    let go_on = Continue(keeper as i32);
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/touch", "/tmp/go"]));
    assert!(
        within_60s(|| stopped(keeper)),
        "the keeper {keeper} never got to its stop"
    );
    signal(keeper, libc::SIGHUP);
    drop(go_on);
    let st = stopped_by_its_keeper(&g);
    nothing_left(&g);
    let mut log = String::new();
    within_60s(|| {
        log = std::fs::read_to_string(g.run(&g.name).join("console.log")).unwrap_or_default();
        log.contains("its keeper failed on an internal error")
    });
    assert!(
        log.contains("its keeper failed on an internal error in its thread signals")
            && log.contains(&format!(
                "once its init (pid {init}) had ended: nothing was left to stop"
            ))
            && !log.contains("so it stops the guest now"),
        "{log}"
    );
    let mut last = st["last_exit"].clone();
    within_60s(|| {
        let o = g.unifs(&["status", "--json", &g.name]);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        last = st["last_exit"].clone();
        last["keeper_failed"].is_string()
    });
    let failed = last["keeper_failed"].as_str().unwrap_or("");
    assert!(
        failed.contains("its thread signals failed: UNIFS_TEST_CHILD_PANIC=keeper-signals"),
        "{last}"
    );
    assert_eq!(last["keeper_failed_after_end"], true, "{last}");
    assert_eq!(last["shutdown"], "halt", "{last}");
    let status = g.unifs(&["status", &g.name]);
    assert!(
        String::from_utf8_lossy(&status.stdout)
            .contains("its keeper failed once init had ended (nothing to stop): its thread"),
        "{status:?}"
    );
}

/// `unifs run`'s overlay daemon is a forked child of unifs, whose panics
/// before it serves are its parent's to say (125). Once it served, a panic
/// of any of its threads ends it as `unifs mount`'s daemon ends (101, its
/// own line naming the thread): its main thread's too
/// (UNIFS_TEST_CHILD_PANIC=mount-served, as serving ends). Before, that one
/// went the other way: "the overlay daemon (pid N) failed on an internal
/// error and ended", exit 125, while docs/guests.md says 101.
#[test]
fn s45_a_run_daemons_main_thread_failing_once_it_served_ends_as_its_others() {
    let test = "s45_a_run_daemons_main_thread_failing_once_it_served_ends_as_its_others";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let mut run = Command::new(crate::common::unifs_bin());
    run.arg("run").arg("--root").arg(t.root());
    run.args(["--", "/bin/echo", "ran"])
        .env("UNIFS_TEST_CHILD_PANIC", "mount-served");
    let o = run_bounded(run, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("failed on an internal error in its thread main")
            && err.contains("UNIFS_TEST_CHILD_PANIC=mount-served")
            && !err.contains("the overlay daemon (pid"),
        "{err}"
    );
}

/// The keeper's main thread fails with init started and recorded, before
/// `start` hears of it (UNIFS_TEST_CHILD_PANIC=keeper-init): the start
/// fails saying which process failed and why (exit 1), as for any failure
/// of the keeper before init runs, and undoes all of it: init and its
/// groups, the root, and the record the keeper had written.
#[test]
fn s45_a_keeper_failing_as_it_starts_init_fails_the_start_leaving_nothing() {
    let test = "s45_a_keeper_failing_as_it_starts_init_fails_the_start_leaving_nothing";
    if !can_run(test) {
        return;
    }
    let g =
        crate::guest::review_s11_life::Guest::new("s45init", crate::guest::review_s11_life::SLEEP);
    let mut start = g.command();
    start
        .args(["start", &g.name])
        .env("UNIFS_TEST_CHILD_PANIC", "keeper-init");
    let o = run_bounded(start, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the guest's keeper (pid ")
            && err.contains("failed on an internal error")
            && err.contains("UNIFS_TEST_CHILD_PANIC=keeper-init at "),
        "{err}"
    );
    let run = g.run(&g.name);
    assert!(
        !crate::guest::harness::is_mounted(&run.join("root")),
        "root left"
    );
    assert!(
        !run.join("state.json").exists(),
        "its record is left: {err}"
    );
    for group in crate::guest::harness::groups(&g.name, g.run_dir()) {
        assert!(!group.exists(), "{} left", group.display());
    }
    let o = g.unifs(&["status", &g.name]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/echo", "runs"]);
    assert_eq!(ok(&o), "runs\n");
    ok(&g.unifs(&["stop", &g.name]));
}

/// Every test that skips says so through `common::skip`, which writes to
/// the suite's own output (and fails under CI). Before, 19 said it with a
/// bare `eprintln!`, which the harness swallows for a test that passes: a
/// run of the suite never showed that they had skipped.
#[test]
fn s45_no_test_skips_through_a_bare_eprintln() {
    let needle = concat!("eprint", "ln!");
    let mut found = Vec::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.contains(needle) && line.to_lowercase().contains("skip") {
                    found.push(format!("{}:{}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "skips said with {needle}: {found:#?}");
}
