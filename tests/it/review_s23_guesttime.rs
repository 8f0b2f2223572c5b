//! Review s23: a named guest's start time and uptime in one frame, whatever
//! time namespace `unifs guest` runs in and however the wall clock steps.

use crate::common::unifs_bin;
use crate::guest::harness::{
    alive, can_run, force_clean, ok, run_bounded, stderr, stdout, within_30s, TestRoot,
};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

/// libfaketime's preload library, where this machine has it: Debian puts
/// it in its architecture's multiarch directory
/// (`/usr/lib/x86_64-linux-gnu/faketime/`, `/usr/lib/aarch64-linux-gnu/…`),
/// so it is asked for the path of the native package's file; other
/// distributions' usual paths after that.
fn faketime_lib() -> Option<PathBuf> {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let listed = run("dpkg", &["--print-architecture"])
        .and_then(|arch| {
            run(
                "dpkg-query",
                &["-L", &format!("libfaketime:{}", arch.trim())],
            )
        })
        .unwrap_or_default();
    let found = listed
        .lines()
        .chain([
            "/usr/lib64/faketime/libfaketime.so.1",
            "/usr/lib/faketime/libfaketime.so.1",
        ])
        .map(PathBuf::from)
        .find(|p| p.ends_with("faketime/libfaketime.so.1") && p.exists());
    found
}

/// A named guest running `sleep 1000` on a bind-mounted busybox root; stops
/// it and cleans up whatever is left on drop.
struct Guest {
    name: String,
    _t: TestRoot,
    config_dir: PathBuf,
    run_dir: PathBuf,
}

impl Guest {
    fn new(test: &str) -> Guest {
        let t = TestRoot::new();
        let config_dir = t.dir.path().join("config");
        let run_dir = t.dir.path().join("run");
        std::fs::create_dir(&config_dir).unwrap();
        let name = format!("t{}-{test}", std::process::id());
        let toml = format!(
            "root = {:?}\nroot_mount = \"bind\"\ninit = [\"/bin/sleep\", \"1000\"]\n",
            t.root()
        );
        std::fs::write(config_dir.join(format!("{name}.toml")), toml).unwrap();
        Guest {
            name,
            _t: t,
            config_dir,
            run_dir,
        }
    }

    /// `unifs guest ARGS`, run through `wrap` (e.g. `unshare …`) if given.
    fn cmd(&self, wrap: &[&str], args: &[&str]) -> Command {
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(unifs_bin());
                c
            }
            None => Command::new(unifs_bin()),
        };
        cmd.env("UNIFS_CONFIG_DIR", &self.config_dir);
        cmd.env("UNIFS_RUN_DIR", &self.run_dir);
        cmd.arg("guest").args(args);
        cmd
    }

    fn run(&self, wrap: &[&str], args: &[&str]) -> Output {
        run_bounded(self.cmd(wrap, args), Duration::from_secs(30))
    }

    fn status(&self, wrap: &[&str]) -> (Option<i32>, serde_json::Value) {
        let o = self.run(wrap, &["status", "--json", &self.name]);
        let json = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
        (o.status.code(), json)
    }

    fn record(&self) -> serde_json::Value {
        let path = self.run_dir.join(&self.name).join("state.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.run(&[], &["stop", "--timeout", "0", &self.name]);
        force_clean(&self.name, &self.run_dir);
    }
}

/// Start time (field 22) of `pid` as this process's /proc shows it.
fn proc_start_time(pid: i64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether time namespaces can be made here (a kernel with CONFIG_TIME_NS,
/// an unshare that knows --time); CI must have them.
fn has_time_namespaces(test: &str) -> bool {
    let o = Command::new("unshare")
        .args(["--fork", "--time", "--boottime", "1", "true"])
        .output();
    if o.is_ok_and(|o| o.status.success()) {
        return true;
    }
    crate::common::skip(test, "no time namespaces (unshare --time)");
    false
}

/// In a time namespace with a boot-time offset /proc shows every start time
/// shifted by it. A guest started there recorded its init's start time
/// shifted: from the host, `status` said "stopped (stale record)" while init
/// ran, a second `start` killed that init as a stale record's and started
/// another, and `stop` said it was not running. Start times are now
/// recorded and compared as the root namespace counts them, so each command
/// sees the same guest from either side.
#[test]
fn review_s23_a_guest_started_in_a_time_namespace_is_running_from_the_host() {
    let test = "review_s23_a_guest_started_in_a_time_namespace_is_running_from_the_host";
    if !can_run(test) || !has_time_namespaces(test) {
        return;
    }
    let shifted = ["unshare", "--fork", "--time", "--boottime", "100000"];
    let g = Guest::new("timens");
    ok(&g.run(&shifted, &["start", &g.name]));
    let rec = g.record();
    let pid = rec["pid"].as_i64().unwrap();
    assert!(alive(pid));

    let (code, st) = g.status(&[]);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["stale"], false, "{st}");
    assert_eq!(st["pid"], pid, "{st}");
    // And from inside such a namespace, uptime included (its boot clock is
    // shifted as /proc is).
    let (code, st) = g.status(&shifted);
    assert_eq!(code, Some(0), "{st}");
    assert!(st["uptime_secs"].as_u64().unwrap() < 60, "{st}");

    let o = g.run(&[], &["start", &g.name]);
    assert!(!o.status.success(), "a second start ran: {}", stderr(&o));
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
    assert!(alive(pid), "the second start killed the running init");
    assert_eq!(g.record()["pid"], pid);
    assert_eq!(
        rec["start_time"].as_u64().unwrap(),
        proc_start_time(pid),
        "the record holds the start time the host sees: {rec}"
    );

    let o = g.run(&[], &["stop", "--timeout", "5", &g.name]);
    ok(&o);
    assert!(
        !format!("{}{}", stdout(&o), stderr(&o)).contains("not running"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(within_30s(|| !alive(pid)), "stop left init {pid} running");
}

/// The other way round: a guest started on the host, seen and stopped from
/// a time namespace with an offset (a record written by an older unifs on
/// the host is as this one's).
#[test]
fn review_s23_a_guest_started_on_the_host_is_running_from_a_time_namespace() {
    let test = "review_s23_a_guest_started_on_the_host_is_running_from_a_time_namespace";
    if !can_run(test) || !has_time_namespaces(test) {
        return;
    }
    let shifted = ["unshare", "--fork", "--time", "--boottime", "-50"];
    let g = Guest::new("timens-host");
    ok(&g.run(&[], &["start", &g.name]));
    let pid = g.record()["pid"].as_i64().unwrap();
    let (code, st) = g.status(&shifted);
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["running"], true, "{st}");
    let o = g.run(&shifted, &["start", &g.name]);
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
    assert!(alive(pid), "the second start killed the running init");
    let o = g.run(&shifted, &["exec", &g.name, "--", "/bin/true"]);
    ok(&o);
    ok(&g.run(&shifted, &["stop", "--timeout", "5", &g.name]));
    assert!(within_30s(|| !alive(pid)), "stop left init {pid} running");
}

/// Uptime came from the wall clock (now minus the start's wall time): a
/// clock stepped after the start (NTP correcting a wrong RTC; here the
/// start alone runs a day behind, under libfaketime) showed a day of uptime
/// for an init that had run a second. It is now CLOCK_BOOTTIME minus init's
/// start time, as `ps` counts it.
#[test]
fn review_s23_uptime_is_unmoved_by_a_wall_clock_step() {
    let test = "review_s23_uptime_is_unmoved_by_a_wall_clock_step";
    if !can_run(test) {
        return;
    }
    let Some(faketime) = faketime_lib() else {
        return crate::common::skip(
            test,
            "needs libfaketime.so.1 (Debian: apt-get install libfaketime; not found by \
             `dpkg-query -L libfaketime:ARCH` nor in /usr/lib64/faketime or /usr/lib/faketime)",
        );
    };
    for step in ["-1d", "+1d"] {
        let g = Guest::new("uptime");
        let mut start = g.cmd(&[], &["start", &g.name]);
        start
            .env("LD_PRELOAD", &faketime)
            .env("FAKETIME", step)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("NO_FAKE_STAT", "1");
        let before = std::time::Instant::now();
        ok(&run_bounded(start, Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(1100));
        let (code, st) = g.status(&[]);
        assert_eq!(code, Some(0), "{st}");
        let uptime = st["uptime_secs"].as_u64().unwrap();
        let most = before.elapsed().as_secs() + 1;
        assert!(
            (1..=most).contains(&uptime),
            "clock stepped {step} after start: uptime {uptime} s, run for at most {most} s: {st}"
        );
        let o = g.run(&[], &["status", &g.name]);
        assert!(
            stdout(&o).contains(&format!("uptime:  {uptime}s"))
                || stdout(&o).contains(&format!("uptime:  {}s", uptime + 1)),
            "{}",
            stdout(&o)
        );
    }
}
