//! Review s36 (reboot): a guest's own `reboot` or `halt` (with
//! `cap_add = ["sys_boot"]`). The kernel ends its PID namespace and reports
//! its init killed by SIGHUP for a reboot, by SIGINT for a halt. Before,
//! a named guest that rebooted stayed stopped, shown as `killed by
//! SIGHUP`, and `unifs run` exited 129 or 130. Now its keeper starts it
//! again (`on_reboot = "restart"`, the default; at most 5 times within
//! 60 s), `status` and `exit.json` say `rebooted`/`halted`, and `unifs run`
//! exits 133 on a reboot (as systemd-nspawn), 0 on a halt.

use crate::guest::harness::{can_run, ok, stdout, TestRoot};
use crate::guest::named::Guest;
use crate::review_s31_doubts::within_60s;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A named guest (overlay root) whose init is `sh -c SCRIPT`, allowed
/// `reboot(2)`, with `extra` config lines.
pub(crate) fn rebooting_guest(test: &str, script: &str, extra: &str) -> Guest {
    let init = format!("[\"/bin/sh\", \"-c\", {script:?}]");
    let g = Guest::new(test, &init, false);
    let toml = std::fs::read_to_string(g.config()).unwrap();
    let keys = format!("cap_add = [\"sys_boot\"]\n{extra}\n[limits]");
    std::fs::write(g.config(), toml.replacen("[limits]", &keys, 1)).unwrap();
    g
}

/// The init pid `guest start` names.
pub(crate) fn started_pid(g: &Guest) -> i64 {
    let out = ok(&g.unifs(&["start", &g.name]));
    let pid = out.trim().rsplit(' ').next().unwrap();
    pid.parse().unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Waits up to `secs` for the guest's status to satisfy `done`; the last
/// status either way.
pub(crate) fn wait_status(g: &Guest, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = g.state();
        if done(&st) || Instant::now() > deadline {
            return st;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn console_log(g: &Guest) -> String {
    std::fs::read_to_string(g.run_dir.join(&g.name).join("console.log")).unwrap_or_default()
}

/// Stopped with the end of an init recorded.
pub(crate) fn ended(st: &Value) -> bool {
    st["running"] == false && st["starting"] == false && !st["last_exit"].is_null()
}

#[test]
fn s36_a_named_guest_that_reboots_is_started_again() {
    let test = "s36_a_named_guest_that_reboots_is_started_again";
    if !can_run(test) {
        return;
    }
    // Its first boot reboots; the second stays up.
    let g = rebooting_guest(
        "s36reboot",
        "echo boot; [ -e /rebooted ] && exec sleep 1000; touch /rebooted; reboot -f",
        "",
    );
    let first = started_pid(&g);
    let st = wait_status(&g, 30, |st| {
        st["running"] == true && st["pid"].as_i64().is_some_and(|p| p != first)
    });
    assert_eq!(
        st["running"],
        true,
        "not started again: {st}\n{}",
        console_log(&g)
    );
    assert_ne!(st["pid"].as_i64(), Some(first), "{st}");
    assert_eq!(st["reboots"], 1, "{st}");
    assert!(st["last_exit"].is_null(), "{st}");
    let status = ok(&g.unifs(&["status", &g.name]));
    assert!(status.contains("reboots: 1"), "{status}");
    // The second boot's echo, and its start's word, come a moment after
    // its record (a loaded machine may show the record first).
    let mut log = String::new();
    within_60s(|| {
        log = console_log(&g);
        log.contains("(1 so far)") && log.matches("boot\n").count() >= 2
    });
    assert!(
        log.contains(&format!("rebooted (its init, pid {first}")),
        "{log}"
    );
    assert!(
        log.contains("started again after its reboot (1 so far)"),
        "{log}"
    );
    assert_eq!(log.matches("boot\n").count(), 2, "two boots: {log}");
    // It runs as one started by `guest start`: in its groups, on its
    // root, and `stop` ends it.
    let o = g.unifs(&["exec", &g.name, "--", "/bin/ls", "/rebooted"]);
    assert!(o.status.success(), "{}", stdout(&o));
    ok(&g.unifs(&["stop", &g.name]));
    let st = g.state();
    assert_eq!(st["running"], false, "{st}");
}

#[test]
fn s36_a_named_guest_that_halts_stays_stopped() {
    let test = "s36_a_named_guest_that_halts_stays_stopped";
    if !can_run(test) {
        return;
    }
    for (i, cmd) in ["halt -f", "poweroff -f"].into_iter().enumerate() {
        let g = rebooting_guest(&format!("s36halt{i}"), cmd, "");
        let (exit, status) = ends_by(&g, "halt");
        assert_eq!(exit["signal"], "INT", "{cmd}: {exit}");
        assert!(exit["not_restarted"].is_null(), "{cmd}: {exit}");
        assert!(status.contains("stopped (halted)"), "{status}");
        let said = "exit:    halted (code=killed, signal=INT)";
        assert!(status.contains(said), "{status}");
    }
}

#[test]
fn s36_on_reboot_stop_leaves_it_stopped() {
    let test = "s36_on_reboot_stop_leaves_it_stopped";
    if !can_run(test) {
        return;
    }
    let g = rebooting_guest("s36stop", "reboot -f", "on_reboot = \"stop\"");
    let (exit, status) = ends_by(&g, "reboot");
    let why = exit["not_restarted"].as_str().unwrap_or_default();
    assert!(why.contains("on_reboot = \"stop\""), "{exit}");
    assert!(status.contains("stopped (rebooted)"), "{status}");
    let said = "exit:    rebooted (code=killed, signal=HUP)";
    assert!(status.contains(said), "{status}");
    let said = "not started again: its config says";
    assert!(status.contains(said), "{status}");
}

/// Starts `g`, waits for its init to end by its own `shutdown` ("halt",
/// "reboot"), and sees it stay stopped: its `last_exit`, and `status`.
fn ends_by(g: &Guest, shutdown: &str) -> (Value, String) {
    let first = started_pid(g);
    // Once its keeper stopped it too (session 38).
    let st = wait_status(g, 30, |st| {
        ended(st) && st["last_exit"]["stopped_by_keeper"] == true
    });
    let exit = st["last_exit"].clone();
    assert_eq!(exit["pid"], first, "{st}");
    assert_eq!(exit["shutdown"], shutdown, "{st}");
    let o = g.unifs(&["status", &g.name]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    // And stays so.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(g.state()["last_exit"]["pid"], first, "{st}");
    (exit, stdout(&o))
}

#[test]
fn s36_a_reboot_loop_is_not_restarted_for_ever() {
    let test = "s36_a_reboot_loop_is_not_restarted_for_ever";
    if !can_run(test) {
        return;
    }
    // A bind root: quick starts, so that 6 reboots fall within 60 s on a
    // loaded machine too.
    let g = rebooting_guest("s36loop", "reboot -f", "root_mount = \"bind\"");
    let toml = std::fs::read_to_string(g.config()).unwrap();
    std::fs::write(
        g.config(),
        toml.replacen("root_mount = \"overlay\"\n", "", 1),
    )
    .unwrap();
    started_pid(&g);
    let st = wait_status(&g, 90, |st| {
        ended(st) && !st["last_exit"]["not_restarted"].is_null()
    });
    let why = st["last_exit"]["not_restarted"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("more than 5 times within 60 s"),
        "{st}\n{}",
        console_log(&g)
    );
    let log = console_log(&g);
    assert!(
        log.contains("started again after its reboot (5 so far)"),
        "{log}"
    );
    assert!(!log.contains("(6 so far)"), "{log}");
    assert!(
        log.contains("not started again after its reboot: it rebooted more than 5"),
        "{log}"
    );
    // And stopped as after a halt (session 38): nothing left mounted.
    assert_eq!(st["last_exit"]["stopped_by_keeper"], true, "{st}");
    assert_eq!(st["stale"], false, "{st}");
    let root = g.run_dir.join(&g.name).join("root");
    assert!(!crate::guest::harness::is_mounted(&root), "{st}");
    // An operator's start starts it, and counts anew: 5 more restarts.
    let looped = st["last_exit"]["pid"].clone();
    ok(&g.unifs(&["start", &g.name]));
    let st = wait_status(&g, 90, |st| {
        ended(st) && st["last_exit"]["pid"] != looped && !st["last_exit"]["not_restarted"].is_null()
    });
    let log = console_log(&g);
    assert_eq!(log.matches("(5 so far)").count(), 2, "{st}\n{log}");
    assert!(!log.contains("(6 so far)"), "{log}");
}

#[test]
fn s36_a_stop_that_makes_init_reboot_leaves_it_stopped() {
    let test = "s36_a_stop_that_makes_init_reboot_leaves_it_stopped";
    if !can_run(test) {
        return;
    }
    // As sysvinit's `ctrlaltdel` line on `stop`'s SIGINT: init reboots.
    let script = "trap 'reboot -f' TERM; echo up; while :; do sleep 0.1; done";
    let g = rebooting_guest("s36stopreboot", script, "");
    let first = started_pid(&g);
    ok(&g.unifs(&["stop", "--timeout", "20", &g.name]));
    // Its keeper's word comes a moment after.
    let st = wait_status(&g, 30, |st| {
        !st["last_exit"]["not_restarted"].is_null() || st["running"] == true
    });
    let exit = &st["last_exit"];
    assert_eq!(st["running"], false, "started again after a stop: {st}");
    assert_eq!(exit["pid"], first, "{st}");
    assert_eq!(exit["shutdown"], "reboot", "{st}");
    let why = exit["not_restarted"].as_str().unwrap_or_default();
    assert!(why.contains("stopped or started since"), "{st}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(g.state()["running"], false);
}

#[test]
fn s36_run_exits_133_on_the_guests_reboot_and_0_on_its_halt() {
    let test = "s36_run_exits_133_on_the_guests_reboot_and_0_on_its_halt";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let cap = ["--root-mount", "bind", "--cap-add", "sys_boot"];
    let init = ["--root-mount", "bind", "--cap-add", "sys_boot", "--init"];
    for (opts, script, want) in [
        (&cap[..], "reboot -f", 133),
        (&init[..], "reboot -f", 133),
        (&cap[..], "halt -f", 0),
        (&cap[..], "poweroff -f", 0),
        (&init[..], "halt -f", 0),
        // A command's own 129 and 130 are its own.
        (&cap[..], "exit 129", 129),
        (&cap[..], "exit 130", 130),
        // Without CAP_SYS_BOOT reboot fails, and the command goes on.
        (&["--root-mount", "bind"][..], "reboot -f; exit 7", 7),
    ] {
        let o = t.sh(opts, script);
        assert_eq!(o.status.code(), Some(want), "{opts:?} {script}: {o:?}");
    }
    // On the overlay too.
    let o = t.sh(&["--cap-add", "sys_boot"], "reboot -f");
    assert_eq!(o.status.code(), Some(133), "{o:?}");
}
