//! Session 51 (scale): an operator running many guests on one host.
//!
//! 30 and 40 guests were started, exec'd into, updated, stopped and
//! restarted at once by hand (figures in the session's report); what broke
//! is kept here with fewer guests.

use crate::guest::harness::{
    alive, all_threads_stopped, can_run, ok, stderr, wait_bounded, within_30s, KillOnDrop, TestRoot,
};
use crate::guest::review_s11_life::{entry, mount_daemon, Continue, Guest, SLEEP};
use crate::guest::review_s22_sigpipe::children;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How many guests the tests run at once.
const GUESTS: usize = 6;

/// `guest list` asked each running guest's overlay root in turn, giving
/// each up to a second: with the daemons of 8 of 40 guests stopped, `list`
/// took 8.7 s, and a host whose daemons all stall at once (a hung disk)
/// waits a second per guest, just when the operator looks. Now the roots
/// are asked at once: the probes of all the stopped daemons' roots are
/// seen running together (before: one at a time, never two).
#[test]
fn s51_list_asks_the_roots_of_its_guests_at_once() {
    let test = "s51_list_asks_the_roots_of_its_guests_at_once";
    if !can_run(test) {
        return;
    }
    // A root of its own each (a tree has one mount at a time), dropped
    // after the guests are stopped.
    let roots: Vec<TestRoot> = (1..GUESTS).map(|_| TestRoot::new()).collect();
    let g = Guest::new("s51list", SLEEP);
    let mut names = vec![g.name.clone()];
    for (i, r) in roots.iter().enumerate() {
        let name = format!("{}-{i}", g.name);
        g.configure_with(&name, &r.root(), SLEEP, "");
        names.push(name);
    }
    for n in &names {
        ok(&g.unifs(&["start", n]));
    }
    let mut held = Vec::new();
    for n in &names {
        let daemon = mount_daemon(&g.run(n).join("root"));
        held.push(Continue(daemon));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        assert!(
            within_30s(|| all_threads_stopped(daemon)),
            "daemon {daemon} not stopped"
        );
    }

    let mut list = g.command();
    list.args(["list", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let list = list.spawn().unwrap();
    let pid = list.id();
    let list = KillOnDrop(Some(list));
    // Its children are its probes (no veth guest: no `ip`); one given up
    // on is killed and left a zombie until `list` ends.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid.into()) && Instant::now() < deadline {
        let asking = children(pid)
            .into_iter()
            .filter(|&c| alive(c.into()))
            .count();
        most = most.max(asking);
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = wait_bounded(list, Duration::from_secs(30));
    drop(held);
    assert!(o.status.success(), "list: {}", stderr(&o));
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for n in &names {
        assert_eq!(entry(&all, n)["root_lost"], true, "{n}: {all}");
    }
    assert!(
        most >= 3,
        "list asked the {GUESTS} roots one after another (at most {most} probe at once)"
    );
}
