//! Review s12: named guests — what a failed start leaves, what the clean-up
//! of an unrecorded guest may remove, what a running guest needs to be
//! entered, and how its init ended.
//!
//! Every guest has its own temp config and run dirs; a guard stops it and
//! unmounts its root when a test fails half-way.

use super::harness::{
    alive, can_run, force_clean, group_pids, has_ip, host_if, is_mounted, ok, run_bounded, stderr,
    stdout, within_30s, KillOnDrop, TestRoot,
};
use crate::common::unifs_bin;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A named guest on the overlay, in a temp dir of its own.
struct Guest {
    name: String,
    t: TestRoot,
    config_dir: PathBuf,
    run_dir: PathBuf,
    /// UNIFS_STORE for the overlay mount.
    store: PathBuf,
}

impl Guest {
    fn new(test: &str, init: &str) -> Guest {
        let t = TestRoot::new();
        let config_dir = t.dir.path().join("config");
        let run_dir = t.dir.path().join("run");
        std::fs::create_dir(&config_dir).unwrap();
        let g = Guest {
            name: format!("s12-{}-{test}", std::process::id()),
            store: t.dir.path().join("no-store"),
            t,
            config_dir,
            run_dir,
        };
        g.configure("", init);
        g
    }

    fn config(&self) -> PathBuf {
        self.config_dir.join(format!("{}.toml", self.name))
    }

    /// Writes CONFIG_DIR/NAME.toml: the root, `init`, and `extra` lines.
    fn configure(&self, extra: &str, init: &str) {
        let toml = format!(
            "root = {:?}\ninit = {init}\n{extra}\n[limits]\npids = 64\n",
            self.t.root()
        );
        std::fs::write(self.config(), toml).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(unifs_bin());
        cmd.env("UNIFS_CONFIG_DIR", &self.config_dir);
        cmd.env("UNIFS_RUN_DIR", &self.run_dir);
        // No store: the overlay mounts without one.
        cmd.env("UNIFS_STORE", &self.store);
        cmd.arg("guest").args(args);
        cmd
    }

    fn unifs(&self, args: &[&str]) -> Output {
        run_bounded(self.cmd(args), Duration::from_secs(30))
    }

    fn run(&self) -> PathBuf {
        self.run_dir.join(&self.name)
    }

    fn record(&self) -> serde_json::Value {
        let text = std::fs::read(self.run().join("state.json")).unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    fn status(&self) -> (serde_json::Value, Output) {
        let o = self.unifs(&["status", "--json", &self.name]);
        let st = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}\n{}", stdout(&o), stderr(&o)));
        (st, o)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.unifs(&["stop", "--timeout", "0", &self.name]);
        force_clean(&self.name, &self.run_dir);
    }
}

const SLEEP: &str = "[\"/bin/sleep\", \"1000\"]";

#[test]
fn s12_a_start_whose_overlay_mount_fails_leaves_no_run_files() {
    if !can_run("s12_a_start_whose_overlay_mount_fails_leaves_no_run_files") {
        return;
    }
    // `unifs mount` refuses a store inside the guest's root (as it refuses
    // one on another filesystem). The start failed, rightly, but left an
    // empty RUN_DIR/NAME/root behind, mode 0755, for every failed start.
    let mut g = Guest::new("mountfail", SLEEP);
    g.store = g.t.root().join("store");
    let o = g.unifs(&["start", &g.name]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("mounting the root of guest"),
        "{}",
        stderr(&o)
    );
    let left: Vec<String> = std::fs::read_dir(g.run())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // The lock stays: removing a lock file others may wait on would let
    // two starts run at once. So does the mount's log, which the error
    // names and quotes (under systemd, `unifs mount`'s stderr is not the
    // unit's journal): it holds the refusal.
    let mut left = left;
    left.sort();
    assert_eq!(left, ["lock", "mount.log"], "a failed start left {left:?}");
    let log = std::fs::read_to_string(g.run().join("mount.log")).unwrap();
    assert!(log.contains("overlap"), "{log}");
    assert!(
        stderr(&o).contains("mount.log ends: unifs: "),
        "{}\n{log}",
        stderr(&o)
    );
    assert!(group_pids(&g.name, &g.run_dir).is_empty());
    let (st, _) = g.status();
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["stale"], false, "{st}");

    // A console.log of an earlier run is kept by a failed start.
    std::fs::write(g.run().join("console.log"), "earlier run\n").unwrap();
    let o = g.unifs(&["start", &g.name]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(g.run().join("console.log")).unwrap(),
        "earlier run\n"
    );
}

#[test]
fn s12_a_start_whose_init_fails_leaves_no_new_console_log() {
    if !can_run("s12_a_start_whose_init_fails_leaves_no_new_console_log") {
        return;
    }
    // An init the root does not have: the root was unmounted and removed,
    // but an empty console.log that only this start had made stayed.
    let g = Guest::new("noinit", "[\"/sbin/no-such-init\"]");
    let o = g.unifs(&["start", &g.name]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("command not found"), "{}", stderr(&o));
    assert!(!is_mounted(&g.run().join("root")));
    assert!(!g.run().join("root").exists());
    assert!(!g.run().join("console.log").exists(), "an empty log stayed");
}

/// `guest enter NAME` with its shell's input from `script`.
fn enter(g: &Guest, script: &str) -> Output {
    let mut cmd = g.cmd(&["enter", &g.name]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    child
        .0
        .as_mut()
        .unwrap()
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    super::harness::wait_bounded(child, Duration::from_secs(30))
}

#[test]
fn s12_enter_and_exec_of_a_running_guest_need_no_config() {
    if !can_run("s12_enter_and_exec_of_a_running_guest_need_no_config") {
        return;
    }
    // `enter` read the guest's config for its shell: with NAME.toml removed
    // while the guest runs it failed with "no config for guest NAME", and
    // with NAME.toml edited it ran the new file's shell in the old guest
    // (which may not even have it). What a running guest is entered with
    // comes from its runtime record, as `machinectl shell` and `nsenter`
    // need no unit file.
    let g = Guest::new("noconf", SLEEP);
    g.configure("shell = \"/bin/sh\"", SLEEP);
    ok(&g.unifs(&["start", &g.name]));

    // Edited: another shell, which this guest lacks.
    g.configure("shell = \"/bin/no-such-shell\"", SLEEP);
    let o = enter(&g, "echo in-$(hostname)\nexit 0\n");
    assert!(o.status.success(), "edited config: {}", stderr(&o));
    assert!(stdout(&o).contains("in-"), "{}", stdout(&o));

    // Removed.
    std::fs::remove_file(g.config()).unwrap();
    let o = enter(&g, "echo still-in\nexit 4\n");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stdout(&o).contains("still-in"), "{}", stdout(&o));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", "echo exec-ok"]);
    assert_eq!(ok(&o).trim(), "exec-ok");
    let (st, _) = g.status();
    assert_eq!(st["running"], true, "{st}");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// A veth network for a guest's config.
fn veth(n: u32) -> String {
    format!("[net]\nmode = \"veth\"\nip = \"10.217.{n}.2/24\"\n")
}

#[test]
fn s12_killing_an_unrecorded_guest_leaves_another_run_dirs_interface_alone() {
    let test = "s12_killing_an_unrecorded_guest_leaves_another_run_dirs_interface_alone";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    // Guest a (run dir 1) runs without a record (its start was killed
    // before writing it) and without a veth (its config said none then);
    // its config now says veth, as does that of guest b of the same name
    // in run dir 2, which runs and holds ve-NAME. `stop a` (and `start a`)
    // killed a's processes and then ran `ip link del ve-NAME` by the
    // config: b lost its network.
    let a = Guest::new("uvtwin", SLEEP);
    let b = Guest::new("uvtwin", SLEEP);
    assert_eq!(a.name, b.name);
    let n = std::process::id() % 200 + 20;
    ok(&a.unifs(&["start", &a.name]));
    let a_pid = a.record()["pid"].as_i64().unwrap();
    std::fs::remove_file(a.run().join("state.json")).unwrap();
    a.configure(&veth(n), SLEEP);
    b.configure(&veth(n), SLEEP);
    ok(&b.unifs(&["start", &b.name]));
    let iface = host_if(&b.name);
    let index = std::fs::read_to_string(iface.join("ifindex")).unwrap();

    let o = a.unifs(&["stop", "--timeout", "0", &a.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(within_30s(|| !alive(a_pid)), "a's init {a_pid} survived");
    assert_eq!(
        std::fs::read_to_string(iface.join("ifindex")).ok(),
        Some(index),
        "stopping unrecorded a removed b's interface"
    );
    ok(&b.unifs(&["exec", &b.name, "--", "/bin/true"]));
    ok(&b.unifs(&["stop", "--timeout", "0", &b.name]));
    assert!(
        within_30s(|| !iface.exists()),
        "b's stop left its interface"
    );
}

#[test]
fn s12_killing_an_unrecorded_veth_guest_removes_its_own_interface() {
    let test = "s12_killing_an_unrecorded_veth_guest_removes_its_own_interface";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    // The other side: an unrecorded guest's own ve-NAME (its peer is in the
    // guest's namespace) is removed at once, so a start right after the
    // clean-up does not find it taken.
    let g = Guest::new("uvown", SLEEP);
    let n = std::process::id() % 200 + 20;
    g.configure(&veth(n), SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let old = g.record()["pid"].as_i64().unwrap();
    std::fs::remove_file(g.run().join("state.json")).unwrap();
    let o = g.unifs(&["start", &g.name]);
    assert!(o.status.success(), "restart: {}", stderr(&o));
    assert!(stderr(&o).contains("unfinished start"), "{}", stderr(&o));
    assert!(!alive(old) || within_30s(|| !alive(old)));
    let new = g.record()["pid"].as_i64().unwrap();
    assert!(alive(new));
    assert!(host_if(&g.name).exists());
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// Waits up to 5 s for the guest to be stopped with its init's end
/// recorded (its keeper writes it a moment after init is gone), and returns
/// its status.
fn ended(g: &Guest) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let stopped = within_30s(|| {
        last = g.status().0;
        last["running"] == false && !last["last_exit"].is_null()
    });
    assert!(stopped, "init never ended: {last}");
    last
}

/// An init that exits 0 on SIGUSR1.
const TRAP_USR1: &str =
    "[\"/bin/sh\", \"-c\", \"trap 'exit 0' USR1; while :; do sleep 0.05; done\"]";

/// Sends SIGUSR1 to `pid` once it catches it: until then a guest's PID 1
/// ignores it (a loaded machine starts sh slowly).
fn usr1_when_trapped(pid: i64) {
    let caught = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGUSR1 - 1)) != 0)
    };
    assert!(within_30s(caught), "init never set its trap");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
}

#[test]
fn s48_exec_says_the_guest_stopped_under_its_command() {
    if !can_run("s48_exec_says_the_guest_stopped_under_its_command") {
        return;
    }
    // An init's end kills every process of its PID namespace: a `guest
    // exec` then exited 137 and said nothing (CI of stop 48: an exec of
    // `touch` that ended the init raced that end).
    let g = Guest::new("execend", TRAP_USR1);
    ok(&g.unifs(&["start", &g.name]));
    let pid = g.record()["pid"].as_i64().unwrap();
    let (session, _) = super::harness::exec_sleep_session(g.cmd(&[]), &g.name);
    usr1_when_trapped(pid);
    let o = super::harness::wait_bounded(session, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "the command in guest {} was killed: the guest stopped while it ran (its init, pid {pid}",
            g.name
        )),
        "{}",
        stderr(&o)
    );
    ended(&g);

    // A command killed while the guest runs on says nothing of the kind.
    g.configure("", TRAP_USR1);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(!stderr(&o).contains("stopped while"), "{}", stderr(&o));
    assert_eq!(g.status().0["running"], true);
}

#[test]
fn s12_status_and_list_say_how_a_guests_init_ended() {
    if !can_run("s12_status_and_list_say_how_a_guests_init_ended") {
        return;
    }
    // An init that exited by itself (exit 0, exit 3) or was killed left
    // `status` and `list` saying "stopped (stale record)" and nothing more:
    // nobody kept its exit status (init's parent, `guest start`, was gone;
    // the host's PID 1 reaped it). systemctl says "code=exited, status=3".
    let g = Guest::new("exit", "[\"/bin/sh\", \"-c\", \"sleep 0.2; exit 3\"]");
    ok(&g.unifs(&["start", &g.name]));
    let st = ended(&g);
    assert_eq!(st["last_exit"]["code"], 3, "{st}");
    assert_eq!(st["last_exit"]["signal"], serde_json::Value::Null, "{st}");
    let o = g.unifs(&["status", &g.name]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stdout(&o).contains("code=exited, status=3"),
        "{}",
        stdout(&o)
    );
    let o = g.unifs(&["list"]);
    assert!(stdout(&o).contains("exited 3"), "{}", stdout(&o));
    let all: serde_json::Value =
        serde_json::from_slice(&g.unifs(&["list", "--json"]).stdout).unwrap();
    assert_eq!(all[0]["last_exit"]["code"], 3, "{all}");

    // A clean exit, after the stale record's clean-up too; not before the
    // status below (a timed end could come first on a loaded machine). Ended
    // by a signal from the host: an `exec` of `touch /tmp/go` raced the end
    // it caused (init's end kills every process of its PID namespace; the
    // touch, not yet exited, ended 137).
    g.configure("", TRAP_USR1);
    ok(&g.unifs(&["start", &g.name]));
    let st = g.status().0;
    assert_eq!(
        st["last_exit"],
        serde_json::Value::Null,
        "a start clears it: {st}"
    );
    let pid = g.record()["pid"].as_i64().unwrap();
    usr1_when_trapped(pid);
    let st = ended(&g);
    assert_eq!(st["last_exit"]["code"], 0, "{st}");
    ok(&g.unifs(&["stop", &g.name]));
    let o = g.unifs(&["status", &g.name]);
    assert!(
        stdout(&o).contains("code=exited, status=0"),
        "kept after the record's clean-up: {}",
        stdout(&o)
    );

    // Killed.
    g.configure("", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let pid = g.record()["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = ended(&g);
    assert_eq!(st["last_exit"]["signal"], "KILL", "{st}");
    assert_eq!(st["last_exit"]["code"], serde_json::Value::Null, "{st}");
    let o = g.unifs(&["status", &g.name]);
    assert!(
        stdout(&o).contains("code=killed, signal=KILL"),
        "{}",
        stdout(&o)
    );
    let o = g.unifs(&["list"]);
    assert!(stdout(&o).contains("killed by SIGKILL"), "{}", stdout(&o));

    // A start that fails (no such init) says why itself, and keeps what is
    // known of the last init's end.
    g.configure("", "[\"/bin/no-such-init\"]");
    let o = g.unifs(&["start", &g.name]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let o = g.unifs(&["status", &g.name]);
    assert!(
        stdout(&o).contains("code=killed, signal=KILL"),
        "kept after a failed start: {}",
        stdout(&o)
    );
}

/// Field 22 of /proc/PID/stat: the start time in clock ticks after boot.
fn start_time(pid: u32) -> u64 {
    crate::common::proc_stat(pid)[19].parse().unwrap()
}

#[test]
fn s12_a_record_from_before_a_reboot_never_names_a_host_process() {
    if !can_run("s12_a_record_from_before_a_reboot_never_names_a_host_process") {
        return;
    }
    // A run dir on a disk (`--run-dir /var/lib/…`) keeps state.json across
    // a crash or reboot. PIDs and start times (clock ticks after boot) start
    // over at boot, and a boot runs the same services in the same order: a
    // host process may get the recorded PID *and* start time. The record
    // then named it as the guest's init: `status` said running, `start`
    // refused ("already running"), and `stop` SIGTERMed and SIGKILLed it.
    // Made here by pointing a record of another boot at a host process.
    let g = Guest::new("reboot", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let mut rec = g.record();
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    let mut host = Command::new("/bin/busybox");
    host.args(["sleep", "30"]);
    let host = KillOnDrop(Some(host.spawn().unwrap()));
    let pid = host.0.as_ref().unwrap().id();
    rec["pid"] = pid.into();
    rec["start_time"] = start_time(pid).into();
    rec["boot_id"] = "00000000-0000-4000-8000-000000000000".into();
    std::fs::write(
        g.run().join("state.json"),
        serde_json::to_vec(&rec).unwrap(),
    )
    .unwrap();

    let (st, _) = g.status();
    assert_eq!(st["running"], false, "a host process taken for init: {st}");
    assert_eq!(st["stale"], true, "{st}");
    let o = g.unifs(&["exec", &g.name, "--", "/bin/true"]);
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    let o = g.unifs(&["stop", "--timeout", "0", &g.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("stale"), "{}", stdout(&o));
    assert!(alive(pid as i64), "stop killed host process {pid}");
    assert!(!g.run().join("state.json").exists());

    // And a start over such a record starts the guest.
    std::fs::write(
        g.run().join("state.json"),
        serde_json::to_vec(&rec).unwrap(),
    )
    .unwrap();
    let o = g.unifs(&["start", &g.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(alive(pid as i64), "start killed host process {pid}");
    assert_ne!(g.record()["pid"], rec["pid"]);
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

#[test]
fn s12_an_inits_end_is_recorded_with_a_relative_run_dir() {
    if !can_run("s12_an_inits_end_is_recorded_with_a_relative_run_dir") {
        return;
    }
    // The keeper leaves the directory `start` ran in (it would keep its
    // filesystem busy): a relative --run-dir must still name the same place.
    let g = Guest::new("relexit", "[\"/bin/sh\", \"-c\", \"sleep 0.2; exit 5\"]");
    let rel = |args: &[&str]| {
        let mut cmd = g.cmd(args);
        cmd.current_dir(g.t.dir.path()).env("UNIFS_RUN_DIR", "run");
        run_bounded(cmd, Duration::from_secs(30))
    };
    ok(&rel(&["start", &g.name]));
    let st = ended(&g);
    assert_eq!(st["last_exit"]["code"], 5, "{st}");
    assert!(!Path::new("/run").join(&g.name).exists());
}

#[test]
fn s12_exec_and_enter_of_an_unknown_guest_name_its_missing_config() {
    if !can_run("s12_exec_and_enter_of_an_unknown_guest_name_its_missing_config") {
        return;
    }
    // `enter` of a typo said "no config for guest typo: …/typo.toml does not
    // exist" while it read the config first; taking what it needs from the
    // record, it said "guest typo is not running", as `exec` always had,
    // while `stop` names the missing config.
    let g = Guest::new("typo", SLEEP);
    for args in [&["exec", "typo", "--", "/bin/true"][..], &["enter", "typo"]] {
        let o = g.unifs(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("no config for guest typo") && stderr(&o).contains("typo.toml"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // A configured guest, stopped, is "not running".
    let o = g.unifs(&["exec", &g.name, "--", "/bin/true"]);
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
}
