//! Review s22: a guest process waiting in a request its overlay daemon has
//! read (the daemon stopped, or hung, in the middle of it) ignores SIGKILL
//! until the daemon answers or its connection ends: `guest stop`, `unifs
//! run`'s second signal and `unifs umount` must end or name that daemon.
//!
//! The request is held deterministically: strace holds back the daemon's
//! fstatfs (what a guest's statfs becomes), and the daemon is SIGSTOPped
//! while it holds it. Guards SIGCONT and kill what a test stopped, stop its
//! guests and unmount its mounts, whatever fails.

use super::harness::{
    can_run, is_mounted, ok, stderr, wait_bounded, wait_for_descendant, KillOnDrop, TestRoot,
};
use super::review_s11_life::{gone, mount_daemon, Continue, Guest, SLEEP};
use super::review_s22_probe::hold_statfs;
use crate::common::{signal_pending, unifs_bin};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A process's wchan (what it sleeps in).
fn wchan(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

/// Waits (up to 30 s) until one of `pids()` sleeps in a FUSE request, and
/// returns it. Still so 300 ms later: the held one, not a lookup on its way
/// (one the daemon has not read yet ends on SIGKILL).
fn waiting_in_request(pids: impl Fn() -> Vec<i32>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let waits = |p: i32| wchan(p) == "request_wait_answer";
    loop {
        if let Some(p) = pids().into_iter().find(|&p| waits(p)) {
            std::thread::sleep(Duration::from_millis(300));
            if waits(p) {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "no process waits in a request");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pid` and every process below it.
pub(crate) fn tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        let kids =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        all.extend(
            kids.split_whitespace()
                .filter_map(|k| k.parse::<i32>().ok()),
        );
        i += 1;
    }
    all
}

/// Whether every thread of `pid` is stopped (T, or t under strace).
fn stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        stat.rsplit_once(") ")
            .is_some_and(|(_, s)| s.starts_with('T') || s.starts_with('t'))
    })
}

/// SIGSTOPs `daemon` and waits (up to 30 s) until it is stopped.
pub(crate) fn stop(daemon: i32) {
    kill(Pid::from_raw(daemon), Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stopped(daemon) {
        assert!(Instant::now() < deadline, "daemon {daemon} did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child whose stdin is a pipe: one line written to it lets it go on.
pub(crate) struct Held {
    child: KillOnDrop,
}

impl Held {
    pub(crate) fn spawn(mut cmd: Command) -> Held {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Held {
            child: KillOnDrop(Some(cmd.spawn().unwrap())),
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.0.as_ref().unwrap().id() as i32
    }

    fn go(&mut self) {
        let stdin = self.child.0.as_mut().unwrap().stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

/// A guest whose root's daemon holds a request of its `guest exec`: the
/// daemon's statfs held back 60 s by strace (returned: drop it to let go).
/// Returns (daemon, the waiting process, the exec, strace).
fn guest_in_request(test: &str, g: &Guest) -> Option<(i32, i32, Held, KillOnDrop)> {
    ok(&g.unifs(&["start", &g.name]));
    let daemon = mount_daemon(&g.run(&g.name).join("root"));
    // The statfs after the exec is in: its own check of the root asks too.
    let mut exec = g.command();
    exec.args(["exec", &g.name, "--", "/bin/sh", "-c", "read x; stat -f /"]);
    let mut exec = Held::spawn(exec);
    wait_for_descendant(exec.pid() as u32, "sh");
    let strace = hold_statfs(test, daemon, Duration::from_secs(60))?;
    exec.go();
    let waiting = waiting_in_request(|| tree(exec.pid()));
    Some((daemon, waiting, exec, strace))
}

/// `guest stop` of a guest whose process waits in a request its stopped
/// overlay daemon had read failed after 6 s with "processes survived
/// SIGKILL (pids …)", naming neither the daemon nor a remedy, and left the
/// guest "running" with its root mounted, its stopped daemon alive. It
/// kills the daemon now (its processes then get errors and die), and the
/// guest stops and starts again.
#[test]
fn review_s22_stop_ends_a_guest_waiting_on_its_stopped_overlay_daemon() {
    let test = "review_s22_stop_ends_a_guest_waiting_on_its_stopped_overlay_daemon";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("stall", SLEEP);
    let Some((daemon, waiting, _exec, strace)) = guest_in_request(test, &g) else {
        return;
    };
    let _cont = Continue(daemon);
    stop(daemon);
    drop(strace);
    assert_eq!(wchan(waiting), "request_wait_answer");

    let started = Instant::now();
    let mut cmd = g.command();
    cmd.args(["stop", "--timeout", "1", &g.name]);
    let o = super::harness::run_bounded(cmd, Duration::from_secs(60));
    let took = started.elapsed();
    let err = stderr(&o);
    assert!(o.status.success(), "stop failed after {took:?}: {err}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(
        err.contains(&format!("overlay daemon (pid {daemon})")) && err.contains("stopped"),
        "says what it killed and why: {err}"
    );
    assert!(gone(waiting as i64), "the waiting process lives on");
    assert!(gone(daemon as i64), "the stopped daemon lives on");
    assert!(!is_mounted(&g.run(&g.name).join("root")));
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/true"]));
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// The same with a daemon that runs but does not answer (busy, or hung):
/// `stop` waits for it while it works, and ends it once it does nothing.
#[test]
fn review_s22_stop_ends_a_guest_waiting_on_its_busy_overlay_daemon() {
    let test = "review_s22_stop_ends_a_guest_waiting_on_its_busy_overlay_daemon";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("busy", SLEEP);
    let Some((daemon, waiting, _exec, strace)) = guest_in_request(test, &g) else {
        return;
    };
    let started = Instant::now();
    let mut cmd = g.command();
    cmd.args(["stop", "--timeout", "1", &g.name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut stop = KillOnDrop(Some(cmd.spawn().unwrap()));
    let lines = std::io::BufRead::lines(std::io::BufReader::new(
        stop.0.as_mut().unwrap().stderr.take().unwrap(),
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    // strace makes a killed daemon stop at its exit for it, which a daemon
    // that is merely busy does not: let go once `stop` kills it.
    let mut err = String::new();
    let mut strace = Some(strace);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if line.contains("killing the daemon") {
                    strace.take();
                }
                err.push_str(&line);
                err.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("stop did not finish: {e}: {err}"),
        }
    }
    let status = wait_bounded(stop, Duration::from_secs(10)).status;
    let took = started.elapsed();
    assert!(status.success(), "stop failed after {took:?}: {err}");
    assert!(took < Duration::from_secs(25), "{took:?}");
    assert!(
        err.contains(&format!("overlay daemon (pid {daemon})")),
        "says what it killed: {err}"
    );
    assert!(gone(waiting as i64));
    assert!(gone(daemon as i64));
    assert!(!is_mounted(&g.run(&g.name).join("root")));
}

/// A guest's overlay daemon SIGSTOPped while idle outlived `guest restart`
/// (its stop unmounted the root, and the daemon, stopped, never ended),
/// whose start then failed: "already served by another unifs mount …
/// stop or unmount that one first". `stop` ends its guest's daemon after
/// the unmount, as `unifs run` ends its own.
#[test]
fn review_s22_restart_of_a_guest_whose_daemon_is_stopped_starts_it() {
    let test = "review_s22_restart_of_a_guest_whose_daemon_is_stopped_starts_it";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("rest", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let daemon = mount_daemon(&g.run(&g.name).join("root"));
    let _cont = Continue(daemon);
    stop(daemon);
    let o = g.unifs(&["restart", "--timeout", "1", &g.name]);
    assert!(o.status.success(), "restart: {}", stderr(&o));
    assert!(gone(daemon as i64), "the stopped daemon lives on");
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/true"]));
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// Unmounts (lazily) and kills what a test mounted, SIGCONTs first.
pub(crate) struct Mounts(pub(crate) Vec<(PathBuf, i32)>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for (mp, daemon) in &self.0 {
            let _ = kill(Pid::from_raw(*daemon), Signal::SIGCONT);
            let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
            let _ = kill(Pid::from_raw(*daemon), Signal::SIGKILL);
        }
    }
}

/// Lets `user` (held before its statfs of `daemon`'s mount) go on, and
/// leaves the process of it that waits in that request, read by the
/// daemon and stopped there, SIGKILLed: it cannot end until the daemon
/// answers. `None` (skipped) without strace.
pub(crate) fn sigkilled_in_request(test: &str, daemon: i32, user: &mut Held) -> Option<i32> {
    let strace = hold_statfs(test, daemon, Duration::from_secs(60))?;
    user.go();
    let waiting = waiting_in_request(|| tree(user.pid()));
    stop(daemon);
    drop(strace);
    kill(Pid::from_raw(waiting), Signal::SIGKILL).unwrap();
    // Nothing marks a SIGKILL that cannot end a process: a moment to end
    // in (a late end only makes this pass).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(wchan(waiting), "request_wait_answer");
    Some(waiting)
}

/// `unifs OPTS…` with no store, bounded.
pub(crate) fn unifs(args: &[&str], paths: &[&Path]) -> std::process::Output {
    let mut cmd = Command::new(unifs_bin());
    cmd.env("UNIFS_STORE", "/nonexistent/unifs-store");
    cmd.args(args).args(paths);
    super::harness::run_bounded(cmd, Duration::from_secs(60))
}

/// `unifs umount` of a mount whose daemon is stopped: (a) unused, it
/// exited 0 in silence, the stopped daemon still holding the guest (every
/// later mount refused with "stop or unmount that one first"); (b) with a
/// SIGKILLed process waiting on the daemon, "busy (a process uses it); stop
/// it" though nothing can stop it. Both now name the stopped daemon and
/// what to do, and so does the refused mount.
#[test]
fn review_s22_umount_names_a_stopped_daemon() {
    let test = "review_s22_umount_names_a_stopped_daemon";
    if !can_run(test) || !crate::common::require_strace(test) {
        return;
    }
    let t = TestRoot::new();
    let (guest, mp) = (t.root(), t.dir.path().join("mp"));
    std::fs::create_dir(&mp).unwrap();
    let mut mounts = Mounts(Vec::new());

    // (a) Nothing uses it.
    ok(&unifs(&["mount"], &[&guest, &mp]));
    let daemon = mount_daemon(&mp);
    mounts.0.push((mp.clone(), daemon));
    stop(daemon);
    let o = unifs(&["umount"], &[&mp]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("daemon (pid {daemon}) is stopped"))
            && err.contains(&format!("kill -CONT {daemon}")),
        "warns that the daemon lives on, stopped: {err}"
    );
    let o = unifs(&["mount"], &[&guest, &mp]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("pid {daemon}, which is stopped"))
            && err.contains(&format!("kill -CONT {daemon}")),
        "{err}"
    );
    kill(Pid::from_raw(daemon), Signal::SIGCONT).unwrap();
    assert!(gone(daemon as i64), "let go, it ends");

    // (b) A SIGKILLed process waits in a request it read.
    ok(&unifs(&["mount"], &[&guest, &mp]));
    let daemon = mount_daemon(&mp);
    mounts.0.push((mp.clone(), daemon));
    let mut user = Command::new("/bin/busybox");
    user.args(["sh", "-c", "read x; stat -f \"$0\""]).arg(&mp);
    let mut user = Held::spawn(user);
    let Some(waiting) = sigkilled_in_request(test, daemon, &mut user) else {
        return;
    };
    let o = unifs(&["umount"], &[&mp]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("busy")
            && err.contains(&format!("daemon (pid {daemon}) is stopped"))
            && err.contains(&format!("kill -CONT {daemon}")),
        "names the stopped daemon: {err}"
    );
    kill(Pid::from_raw(daemon), Signal::SIGCONT).unwrap();
    assert!(gone(waiting as i64));
    drop(user);
    ok(&unifs(&["umount"], &[&mp]));
    assert!(gone(daemon as i64));
    mounts.0.clear();
}

/// `unifs run` whose guest waits in a request its stopped overlay daemon
/// had read waited for good after two SIGTERMs, though docs/guests.md
/// says the second "ends the guest outright … `unifs run` then exits 137":
/// the cgroup was killed, but the guest's processes ignore SIGKILL while
/// they wait. It kills its daemon now.
#[test]
fn review_s22_run_ends_on_a_second_signal_though_its_daemon_is_stopped() {
    run_ends_on_a_second_signal(
        "review_s22_run_ends_on_a_second_signal_though_its_daemon_is_stopped",
        false,
    );
}

/// The same, the request held while the guest is set up, before its
/// exec (the set-up's own statfs of the root): `unifs run` waited for
/// the set-up's end before it looked at signals, and so for good. This
/// is what made the test above fail now and then (strace attached
/// before the set-up's statfs or after).
#[test]
fn review_s24_run_ends_on_a_second_signal_while_its_guest_is_set_up() {
    run_ends_on_a_second_signal(
        "review_s24_run_ends_on_a_second_signal_while_its_guest_is_set_up",
        true,
    );
}

/// `unifs run` with its daemon stopped in a request of its guest, then
/// two SIGTERMs. `in_setup`: `unifs run` pauses 3 s before it clones the
/// guest (a test hook), so that the request held is the set-up's.
fn run_ends_on_a_second_signal(test: &str, in_setup: bool) {
    if !can_run(test) || !crate::common::require_strace(test) {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.env("UNIFS_STORE", t.dir.path().join("no-store"));
    if in_setup {
        cmd.env("UNIFS_TEST_SPAWN_PAUSE_MS", "3000");
    }
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--", "/bin/sh", "-c", "read x; stat -f /"]);
    let mut run = Held::spawn(cmd);
    // Its daemon: the child of `unifs run` that holds /dev/fuse.
    let holds_fuse = |p: i32| {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/fuse")))
    };
    // Past its readiness check (a statfs of its own mount, which the
    // strace below would hold too): serving (a `fuser-N` thread), its
    // `unifs-ready` thread gone once it told the run.
    let said_ready = |p: i32| {
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .collect();
        names.iter().any(|n| n.starts_with("fuser-")) && !names.iter().any(|n| n == "unifs-ready")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let daemon = loop {
        if let Some(&d) = tree(run.pid())
            .iter()
            .find(|&&p| p != run.pid() && holds_fuse(p) && said_ready(p))
        {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no ready overlay daemon below the run"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some(strace) = hold_statfs(test, daemon, Duration::from_secs(60)) else {
        return;
    };
    if !in_setup {
        run.go();
    }
    let waiting = waiting_in_request(|| tree(run.pid()));
    if in_setup {
        let comm = std::fs::read_to_string(format!("/proc/{waiting}/comm")).unwrap();
        assert_eq!(comm.trim(), "unifs", "the request held is not the set-up's");
    }
    let _cont = Continue(daemon);
    stop(daemon);
    drop(strace);

    let pid = Pid::from_raw(run.pid());
    kill(pid, Signal::SIGTERM).unwrap();
    // Taken before the second comes: two pending at once are one.
    let taken = super::harness::within_30s(|| !signal_pending(run.pid() as u32, libc::SIGTERM));
    assert!(taken, "the run never took the first SIGTERM");
    kill(pid, Signal::SIGTERM).unwrap();
    let started = Instant::now();
    let o = wait_bounded(run.child, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("overlay daemon (pid {daemon})")) && err.contains("stopped"),
        "says what it killed and why: {err}"
    );
    assert!(!err.contains("ended while the guest ran"), "{err}");
    assert!(gone(waiting as i64));
    assert!(gone(daemon as i64));
}
