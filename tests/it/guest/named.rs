//! Named guests: start → exec → enter → stop, state, errors.
//!
//! They run on the FUSE overlay (`root_mount = "overlay"`).

use super::harness::{
    alive, can_run, is_mounted, ok, run_bounded, stderr, stdout, KillOnDrop, TestRoot,
};
use crate::common::{signal_pending, unifs_bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Named guests run on the FUSE overlay, as in production.
const ROOT_MOUNT: &str = "overlay";

/// A guest with its own config and runtime dirs; stops and unmounts on drop.
pub(crate) struct Guest {
    pub(crate) name: String,
    pub(crate) t: TestRoot,
    config_dir: PathBuf,
    pub(crate) run_dir: PathBuf,
    /// `--store` for the overlay mount (default: the global default).
    store: Option<PathBuf>,
}

impl Guest {
    pub(crate) fn new(test: &str, init: &str, reaper: bool) -> Guest {
        let t = TestRoot::new();
        let config_dir = t.dir.path().join("config");
        let run_dir = t.dir.path().join("run");
        std::fs::create_dir(&config_dir).unwrap();
        let name = format!("t{}-{test}", std::process::id());
        let toml = format!(
            "root = {:?}\nroot_mount = {ROOT_MOUNT:?}\nhostname = \"{test}\"\ninit = {init}\ninit_reaper = {reaper}\n\
             [limits]\npids = 64\n",
            t.root()
        );
        std::fs::write(config_dir.join(format!("{name}.toml")), toml).unwrap();
        Guest {
            name,
            t,
            config_dir,
            run_dir,
            store: None,
        }
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(unifs_bin());
        if let Some(store) = &self.store {
            cmd.arg("--store").arg(store);
        }
        cmd.env("UNIFS_CONFIG_DIR", &self.config_dir);
        cmd.env("UNIFS_RUN_DIR", &self.run_dir);
        cmd.arg("guest").args(args);
        cmd
    }

    pub(crate) fn unifs(&self, args: &[&str]) -> Output {
        run_bounded(self.cmd(args), Duration::from_secs(30))
    }

    pub(crate) fn state(&self) -> serde_json::Value {
        let o = self.unifs(&["status", "--json", &self.name]);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
    }

    /// CONFIG_DIR/NAME.toml.
    pub(crate) fn config(&self) -> PathBuf {
        self.config_dir.join(format!("{}.toml", self.name))
    }

    fn mounted_root(&self) -> PathBuf {
        self.run_dir.join(&self.name).join("root")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.unifs(&["stop", "--timeout", "0", &self.name]);
        let root = self.mounted_root();
        if is_mounted(&root) {
            let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn named_start_exec_enter_stop() {
    if !can_run("named_start_exec_enter_stop") {
        return;
    }
    let g = Guest::new("lifecycle", "[\"/bin/sleep\", \"1000\"]", true);
    let out = ok(&g.unifs(&["start", &g.name]));
    assert!(out.contains("started"), "{out}");
    let st = g.state();
    assert_eq!(st["running"], true, "{st}");
    let pid = st["pid"].as_i64().unwrap();
    assert!(alive(pid));
    assert!(is_mounted(&g.mounted_root()));

    // exec: inside its namespaces, as a sibling of init.
    let out = ok(&g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "lifecycle");
    assert!(
        lines[2].trim().parse::<u32>().unwrap() <= 5,
        "only the guest's processes: {out}"
    );
    // Its exit status is exec's; a write lands in the guest's tree.
    let o = g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/sh",
        "-c",
        "echo hello > /written; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(g.t.root().join("written")).unwrap(),
        "hello\n"
    );
    // Same privileges as init: no mount.
    let o = g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/mount",
        "-t",
        "tmpfs",
        "x",
        "/mnt",
    ]);
    assert!(!o.status.success());

    // enter: the shell, reading commands from stdin.
    let enter = g.cmd(&["enter", &g.name]);
    let input = b"echo entered-$(hostname)\nexit 0\n";
    let out = super::harness::run_with_input(enter, input, Duration::from_secs(20));
    assert!(
        stdout(&out).contains("entered-lifecycle"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let out = ok(&g.unifs(&["list"]));
    assert!(
        out.lines()
            .any(|l| l.starts_with(&g.name) && l.contains("running")),
        "{out}"
    );

    // stop: init (under the reaper) ends on SIGTERM; nothing is left.
    let out = ok(&g.unifs(&["stop", "--timeout", "5", &g.name]));
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(pid), "init {pid} survived stop");
    assert!(!is_mounted(&g.mounted_root()), "root still mounted");
    assert!(!g.run_dir.join(&g.name).join("state.json").exists());
    let o = g.unifs(&["status", &g.name]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("stopped"));
    for base in [
        "/sys/fs/cgroup/pids/unifs",
        "/sys/fs/cgroup/unified/unifs",
        "/sys/fs/cgroup/unifs",
    ] {
        assert!(
            !Path::new(base).join(&g.name).exists(),
            "cgroup left in {base}"
        );
    }
    // The backing tree is intact.
    assert!(g.t.root().join("bin/busybox").exists());
}

#[test]
fn named_guest_on_a_unified_root_writes_only_its_private_copy() {
    if !can_run("named_guest_on_a_unified_root") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let mut g = Guest::new("unified", "[\"/bin/sleep\", \"1000\"]", true);
    let other = TestRoot::new();
    let store = g.t.dir.path().join("store");
    for root in [g.t.root(), other.root()] {
        crate::tree::file(&root, "etc/motd", b"welcome\n", 0o644);
        // As a package would install it: the same mtime in every guest.
        crate::tree::set_mtime(&root.join("bin/busybox"), crate::tree::MTIME);
    }
    let s = crate::tree::unify_json(&store, &[&g.t.root(), &other.root()]);
    assert!(s["files_linked"].as_u64().unwrap() >= 2, "{s}");
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(g.t.root().join("etc/motd")),
        ino(other.root().join("etc/motd"))
    );
    g.store = Some(store.clone());
    ok(&g.unifs(&["start", &g.name]));
    let out = ok(&g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/sh",
        "-c",
        "echo changed >> /etc/motd; cat /etc/motd; stat -c %h /etc/motd",
    ]));
    assert_eq!(out, "welcome\nchanged\n1\n");
    ok(&g.unifs(&["stop", "--timeout", "5", &g.name]));
    assert_eq!(
        std::fs::read(g.t.root().join("etc/motd")).unwrap(),
        b"welcome\nchanged\n"
    );
    assert_eq!(
        std::fs::read(other.root().join("etc/motd")).unwrap(),
        b"welcome\n"
    );
    assert_ne!(
        ino(g.t.root().join("etc/motd")),
        ino(other.root().join("etc/motd"))
    );
    // Untouched files stay shared: the busybox binary is still one inode.
    assert_eq!(
        ino(g.t.root().join("bin/busybox")),
        ino(other.root().join("bin/busybox"))
    );
    crate::tree::assert_verify_clean(&store);
}

#[test]
fn named_stop_kills_an_init_that_ignores_sigterm() {
    if !can_run("named_stop_kills_an_init_that_ignores_sigterm") {
        return;
    }
    // As PID 1 without a handler, sleep ignores SIGTERM.
    let g = Guest::new("stubborn", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let pid = g.state()["pid"].as_i64().unwrap();
    // A second process in the guest must die too.
    let mut bg = g.cmd(&["exec", &g.name, "--", "/bin/sleep", "1000"]);
    bg.stdout(Stdio::null()).stderr(Stdio::null());
    let bg = KillOnDrop(Some(bg.spawn().unwrap()));
    // In the guest (a fixed pause was too short on a loaded machine).
    let second = super::harness::wait_for_descendant(bg.0.as_ref().unwrap().id(), "sleep");
    let out = ok(&g.unifs(&["stop", "--timeout", "0.3", &g.name]));
    assert!(out.contains("killed"), "{out}");
    assert!(!alive(pid));
    assert!(super::harness::within_30s(|| !alive(second.into())));
    assert!(!is_mounted(&g.mounted_root()));
}

#[test]
fn named_init_and_exec_run_under_the_configured_syscall_filter() {
    let test = "named_init_and_exec_run_under_the_configured_syscall_filter";
    if !can_run(test) {
        return;
    }
    // Init and `guest exec` alike: the config's filter (default when the
    // key is absent), `off` when it says so.
    let init = "[\"/bin/sh\", \"-c\", \"/bin/probe > /init.out; exec sleep 1000\"]";
    for (key, keyctl, unshare) in [("", "EPERM", "EPERM"), ("off", "ok", "ok")] {
        let g = Guest::new("filter", init, false);
        if !super::seccomp::probe_into(&g.t, test) {
            return;
        }
        if !key.is_empty() {
            let config = g.config();
            let mut toml = std::fs::read_to_string(&config).unwrap();
            toml = toml.replace("[limits]", &format!("syscall_filter = {key:?}\n[limits]"));
            std::fs::write(&config, toml).unwrap();
        }
        ok(&g.unifs(&["start", &g.name]));
        let out = ok(&g.unifs(&["exec", &g.name, "--", "/bin/probe"]));
        let exec = super::seccomp::results(&out);
        assert_eq!(exec["keyctl"], keyctl, "exec, {key:?}: {exec:?}");
        assert_eq!(exec["unshare_user"], unshare, "exec, {key:?}: {exec:?}");
        let written = g.t.root().join("init.out");
        assert!(
            super::harness::within_30s(
                || std::fs::read_to_string(&written).is_ok_and(|s| s.contains("unshare_user="))
            ),
            "init wrote no results"
        );
        let init = super::seccomp::results(&std::fs::read_to_string(&written).unwrap());
        assert_eq!(init["keyctl"], keyctl, "init, {key:?}: {init:?}");
        assert_eq!(init["unshare_user"], unshare, "init, {key:?}: {init:?}");
    }
}

#[test]
fn named_stop_sends_the_configured_stop_signal() {
    if !can_run("named_stop_sends_the_configured_stop_signal") {
        return;
    }
    // systemd takes SIGTERM for "re-execute yourself" and sysvinit ignores
    // it: each such guest was SIGKILLed after the timeout, its services
    // never stopped. An init that ends on SIGRTMIN+3 only (as systemd halts
    // on it); `trap` by number, as busybox sh knows no RTMIN names.
    let rtmin3 = libc::SIGRTMIN() + 3;
    let init = format!(
        "[\"/bin/sh\", \"-c\", \"trap 'echo $1 > /stopped; exit 0' {rtmin3}; \
         echo > /trapped; while :; do sleep 0.05; done\", \"sh\", \"halted\"]"
    );
    // `timeout`: 3 s where it is waited out; else long, so that a loaded
    // machine's slow trap is not killed (the output says which it was).
    let stop = |g: &Guest, timeout: &str, extra: &[&str]| {
        // Not before the trap is set (a loaded machine starts sh slowly):
        // until then the signal's default action ends it.
        let trapped = g.t.root().join("trapped");
        assert!(super::harness::within_30s(|| trapped.exists()));
        let mut args = vec!["stop", "--timeout", timeout];
        args.extend(extra);
        args.push(&g.name);
        let started = std::time::Instant::now();
        let out = ok(&g.unifs(&args));
        (out, started.elapsed())
    };
    let stopped = |g: &Guest| std::fs::read_to_string(g.t.root().join("stopped")).ok();

    // Default SIGTERM: ignored, killed after the timeout.
    let g = Guest::new("sigterm", &init, false);
    ok(&g.unifs(&["start", &g.name]));
    let (out, took) = stop(&g, "3", &[]);
    assert!(out.contains("killed after the timeout"), "{out}");
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert_eq!(stopped(&g), None);

    // The config's stop_signal.
    let g = Guest::new("sigrtmin", &init, false);
    let config = g.config();
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml.replace("[limits]", "stop_signal = \"SIGRTMIN+3\"\n[limits]");
    std::fs::write(&config, toml).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let (out, _) = stop(&g, "60", &[]);
    assert_eq!(out.trim(), format!("guest {} stopped", g.name));
    assert_eq!(stopped(&g).as_deref(), Some("halted\n"));

    // `--signal` over the config's default; a bad one is refused first.
    let g = Guest::new("sigflag", &init, false);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["stop", "--signal", "SIGFOO", &g.name]);
    assert!(
        !o.status.success() && stderr(&o).contains("SIGFOO"),
        "{}",
        stderr(&o)
    );
    assert_eq!(g.state()["running"], true);
    let (out, _) = stop(&g, "60", &["--signal", &rtmin3.to_string()]);
    assert_eq!(out.trim(), format!("guest {} stopped", g.name));
    assert_eq!(stopped(&g).as_deref(), Some("halted\n"));

    // Under the `--init` reaper, which passes the realtime signal on (it
    // panicked on one, and its guest died at once, SIGKILLed).
    let g = Guest::new("sigreaper", &init, true);
    ok(&g.unifs(&["start", &g.name]));
    let (out, _) = stop(&g, "60", &["--signal", "SIGRTMIN+3"]);
    assert_eq!(out.trim(), format!("guest {} stopped", g.name));
    assert_eq!(stopped(&g).as_deref(), Some("halted\n"));
    // Its keeper records the end a moment after.
    let mut st = serde_json::Value::Null;
    let recorded = super::harness::within_30s(|| {
        st = g.state();
        !st["last_exit"].is_null()
    });
    assert!(recorded, "{st}");
    assert_eq!(st["last_exit"]["code"], 0, "{st}");
    assert_eq!(st["last_exit"]["signal"], serde_json::Value::Null, "{st}");
}

/// `watch SECONDS`: scans /proc for a process whose effective capabilities
/// include CAP_SYS_ADMIN; prints "found PID" or "none".
const CAP_WATCH: &str = r#"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
int main(int argc, char **argv) {
    time_t end = time(NULL) + atoi(argv[1]);
    char path[64], line[256];
    while (time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
            snprintf(path, sizeof path, "/proc/%s/status", e->d_name);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            while (fgets(line, sizeof line, f))
                if (strncmp(line, "CapEff:", 7) == 0
                    && (strtoull(line + 7, NULL, 16) & (1ULL << 21))) {
                    printf("found %s\n", e->d_name);
                    return 0;
                }
            fclose(f);
        }
        if (d) closedir(d);
    }
    printf("none\n");
    return 0;
}
"#;

#[test]
fn named_exec_never_shows_the_guest_a_privileged_process() {
    let test = "named_exec_never_shows_the_guest_a_privileged_process";
    if !can_run(test) {
        return;
    }
    // `guest exec` forked its helper into the guest's PID namespace and
    // dropped its capabilities there: for a moment every guest process saw
    // a process with all of them, which guest root given sys_ptrace could
    // attach to. It now drops them outside, then forks the command in. A
    // guest process watches /proc while execs run.
    let init = "[\"/bin/sh\", \"-c\", \"/bin/watch 3 > /watch.out; exec sleep 1000\"]";
    let g = Guest::new("capwatch", init, false);
    if !super::escape::cc_or_skip(&g.t, test, "watch", CAP_WATCH) {
        return;
    }
    ok(&g.unifs(&["start", &g.name]));
    let out = g.t.root().join("watch.out");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut execs = 0;
    while !std::fs::read_to_string(&out).is_ok_and(|s| s.ends_with('\n')) {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never reported"
        );
        ok(&g.unifs(&["exec", &g.name, "--", "/bin/true"]));
        execs += 1;
    }
    assert!(execs >= 10, "only {execs} execs while it watched");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "none\n");
}

#[test]
fn named_stop_leaves_exec_sessions_to_end_on_their_own() {
    if !can_run("named_stop_leaves_exec_sessions_to_end_on_their_own") {
        return;
    }
    // `guest exec` sessions open in a guest whose init ends on SIGTERM at
    // once. Their host-side processes (the terminal proxy of `enter`) had
    // joined the guest's cgroups, so stop SIGKILLed those it found there a
    // moment after init had gone, before they could exit (an `enter` left
    // the user's terminal raw), and said "killed after the timeout". Only
    // the command joins the guest's cgroups.
    use std::os::unix::process::ExitStatusExt;
    let init = r#"["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]"#;
    let g = Guest::new("execstop", init, false);
    ok(&g.unifs(&["start", &g.name]));
    let groups = groups(&record(&g));
    // A group's processes, and those of `guest` below it, where they go.
    let procs = |d: &PathBuf| {
        let own = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
        own + &std::fs::read_to_string(d.join("guest/cgroup.procs")).unwrap_or_default()
    };
    let in_group = |pid: u32| {
        groups
            .iter()
            .all(|d| procs(d).lines().any(|l| l == pid.to_string()))
    };
    let sessions: Vec<KillOnDrop> = (0..3)
        .map(|_| {
            let mut c = g.cmd(&["exec", &g.name, "--", "/bin/sleep", "1000"]);
            c.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            KillOnDrop(Some(c.spawn().unwrap()))
        })
        .collect();
    for s in &sessions {
        let helper = s.0.as_ref().unwrap().id();
        let command = super::harness::wait_for_descendant(helper, "sleep");
        assert!(in_group(command), "the command is in the guest's groups");
        assert!(
            !groups
                .iter()
                .any(|d| procs(d).lines().any(|l| l == helper.to_string())),
            "the host-side session process is in the guest's groups"
        );
    }
    let out = ok(&g.unifs(&["stop", &g.name]));
    assert_eq!(out.trim(), format!("guest {} stopped", g.name));
    for s in sessions {
        let o = super::harness::wait_bounded(s, Duration::from_secs(30));
        // Ended by itself: its command was killed with the guest (137).
        assert_eq!(o.status.signal(), None, "{}", stderr(&o));
        assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    }
}

#[test]
fn named_second_start_is_refused_and_stale_records_are_cleaned() {
    if !can_run("named_second_start_is_refused_and_stale_records_are_cleaned") {
        return;
    }
    let g = Guest::new("twice", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let pid = g.state()["pid"].as_i64().unwrap();
    let o = g.unifs(&["start", &g.name]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already running"), "{}", stderr(&o));
    let hint = format!("`unifs guest stop {}` first", g.name);
    assert!(
        stderr(&o).contains(&hint),
        "says what to do: {}",
        stderr(&o)
    );

    // Init dies behind our back, its keeper too: the guest shows as
    // stopped, not running.
    super::harness::kill_init_keeperless(pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = g.state();
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["stale"], true, "{st}");
    let o = g.unifs(&["exec", &g.name, "--", "/bin/true"]);
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    // A new start cleans the stale record up and runs.
    let o = g.unifs(&["start", &g.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stale"),
        "says what it cleaned: {}",
        stderr(&o)
    );
    assert_eq!(g.state()["running"], true);
}

#[test]
fn named_errors_leave_nothing_behind() {
    if !can_run("named_errors_leave_nothing_behind") {
        return;
    }
    // An init the root does not have.
    let g = Guest::new("noinit", "[\"/sbin/no-such-init\"]", false);
    let o = g.unifs(&["start", &g.name]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/sbin/no-such-init: command not found in guest root"),
        "{}",
        stderr(&o)
    );
    assert!(!is_mounted(&g.mounted_root()));
    assert!(!g.run_dir.join(&g.name).join("state.json").exists());
    assert!(!Path::new("/sys/fs/cgroup/pids/unifs")
        .join(&g.name)
        .exists());

    let o = g.unifs(&["start", "nobody-configured-this"]);
    assert!(
        stderr(&o).contains("no config for guest nobody-configured-this"),
        "{}",
        stderr(&o)
    );
    // Nothing to stop is no failure (review s37).
    let o = g.unifs(&["stop", &g.name]);
    assert!(ok(&o).contains("is not running: nothing to stop"), "{o:?}");
    let o = g.unifs(&["start", "../etc"]);
    assert!(stderr(&o).contains("invalid guest name"), "{}", stderr(&o));

    // Not root: said first, before any file is read.
    for args in [
        &["start", &g.name][..],
        &["stop", &g.name][..],
        &["exec", &g.name, "--", "/bin/true"][..],
    ] {
        use std::os::unix::process::CommandExt;
        let mut cmd = g.cmd(args);
        cmd.uid(65534).gid(65534);
        let o = run_bounded(cmd, Duration::from_secs(30));
        assert!(
            stderr(&o).contains("needs root"),
            "{args:?}: {}",
            stderr(&o)
        );
    }

    // A bad limit: refused before the root is mounted.
    let cfg = g.config_dir.join("badlimit.toml");
    std::fs::write(
        &cfg,
        format!(
            "root = {:?}\nroot_mount = \"bind\"\n[limits]\npids = 0\n",
            g.t.root()
        ),
    )
    .unwrap();
    let o = g.unifs(&["start", "badlimit"]);
    // Named as the config names it, with the file (session 36).
    let said = format!("bad guest config {}: invalid [limits] pids", cfg.display());
    assert!(stderr(&o).contains(&said), "{}", stderr(&o));
    assert!(!is_mounted(&g.run_dir.join("badlimit/root")));

    // A backing directory that does not exist.
    let cfg = g.config_dir.join("gone.toml");
    std::fs::write(
        &cfg,
        "root = \"/nonexistent/unifs-guest\"\nroot_mount = \"bind\"\n",
    )
    .unwrap();
    let o = g.unifs(&["start", "gone"]);
    assert!(
        stderr(&o).contains("/nonexistent/unifs-guest"),
        "{}",
        stderr(&o)
    );
    assert!(!is_mounted(&g.run_dir.join("gone/root")));
}

#[test]
fn named_start_of_an_init_that_cannot_be_executed_fails() {
    if !can_run("named_start_of_an_init_that_cannot_be_executed_fails") {
        return;
    }
    // An init whose #! interpreter the guest lacks: the exec fails in the
    // trampoline. start said "started" and left a dead guest behind.
    use std::os::unix::fs::PermissionsExt;
    let g = Guest::new("badinit", "[\"/bin/broken-init\"]", false);
    let init = g.t.root().join("bin/broken-init");
    std::fs::write(&init, "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = g.unifs(&["start", &g.name]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("exec /bin/broken-init: ENOENT")
            && stderr(&o).contains("interpreter is missing"),
        "{}",
        stderr(&o)
    );
    assert!(!is_mounted(&g.mounted_root()));
    assert!(!g.run_dir.join(&g.name).join("state.json").exists());
}

#[test]
fn named_list_json() {
    if !can_run("named_list_json") {
        return;
    }
    let g = Guest::new("listed", "[\"/bin/sleep\", \"1000\"]", true);
    let o = g.unifs(&["list", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(all[0]["name"], g.name.as_str());
    assert_eq!(all[0]["running"], false);
    ok(&g.unifs(&["start", &g.name]));
    let all: serde_json::Value =
        serde_json::from_slice(&g.unifs(&["list", "--json"]).stdout).unwrap();
    assert_eq!(all[0]["running"], true);
    assert!(all[0]["processes"].as_u64().unwrap() >= 1, "{all}");
}

#[test]
fn named_concurrent_starts_start_one_guest() {
    if !can_run("named_concurrent_starts_start_one_guest") {
        return;
    }
    let g = Guest::new("race", "[\"/bin/sleep\", \"1000\"]", true);
    let spawn = || {
        let mut c = g.cmd(&["start", &g.name]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        KillOnDrop(Some(c.spawn().unwrap()))
    };
    let (a, b) = (spawn(), spawn());
    let outs = [
        super::harness::wait_bounded(a, Duration::from_secs(30)),
        super::harness::wait_bounded(b, Duration::from_secs(30)),
    ];
    let started = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        started,
        1,
        "{:?}",
        outs.iter().map(stderr).collect::<Vec<_>>()
    );
    let loser = outs.iter().find(|o| !o.status.success()).unwrap();
    assert!(
        stderr(loser).contains("already running"),
        "{}",
        stderr(loser)
    );
    let root = g.mounted_root();
    let mounts = unifs::fs::mountinfo::read().unwrap();
    let stacked = mounts.iter().filter(|m| m.point == root).count();
    assert_eq!(stacked, 1, "one root mount");
    ok(&g.unifs(&["stop", "--timeout", "2", &g.name]));
    assert!(!is_mounted(&root));
}

#[test]
fn named_exec_never_runs_the_hosts_unifs_in_the_guest() {
    if !can_run("named_exec_never_runs_the_hosts_unifs_in_the_guest") {
        return;
    }
    let g = Guest::new("selfexe", "[\"/bin/sleep\", \"1000\"]", false);
    // `exec` runs its child from the host's unifs binary up to the exec; a
    // script with interpreter /proc/self/exe must not get that binary.
    let script = g.t.root().join("tmp/echo");
    std::fs::write(&script, "#!/proc/self/exe /bin/busybox\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let out = g.unifs(&["exec", &g.name, "--", "/tmp/echo"]);
    assert!(
        !stderr(&out).contains("Usage: unifs"),
        "the host's unifs ran in the guest: {}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "\n");
}

#[test]
fn named_enter_on_a_terminal_gets_a_pty_of_the_guests_own() {
    if !can_run("named_enter_on_a_terminal_gets_a_pty_of_the_guests_own") {
        return;
    }
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let g = Guest::new("tty", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    // The user's terminal: a pty of the host, as a terminal emulator gives.
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut enter = g.cmd(&["enter", &g.name]);
    enter.stdin(Stdio::from(pty.slave.try_clone().unwrap()));
    enter.stdout(Stdio::from(pty.slave.try_clone().unwrap()));
    enter.stderr(Stdio::from(pty.slave));
    let child = KillOnDrop(Some(enter.spawn().unwrap()));
    let master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let read_until = |want: &str, seen: &mut String| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !seen.contains(want) && std::time::Instant::now() < deadline {
            let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) > 0 {
                let mut buf = [0u8; 4096];
                match std::io::Read::read(&mut &master, &mut buf) {
                    Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                    _ => break,
                }
            }
        }
        assert!(seen.contains(want), "waited for {want:?}, got:\n{seen}");
    };
    std::io::Write::write_all(&mut &master, b"echo T=$(tty)=$(hostname)=; exit 4\n").unwrap();
    read_until("=tty=", &mut seen);
    // The guest's own devpts, not the host's pty (its 0 is /dev/console).
    assert!(seen.contains("T=/dev/pts/1=tty="), "{seen}");
    let out = super::harness::wait_bounded(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn named_busybox_init_boots_and_stops() {
    if !can_run("named_busybox_init_boots_and_stops") {
        return;
    }
    // A guest booted as VServer guests were: a real init reading its inittab.
    let g = Guest::new("boot", "[\"/sbin/init\"]", false);
    std::fs::create_dir_all(g.t.root().join("sbin")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", g.t.root().join("sbin/init")).unwrap();
    std::fs::write(
        g.t.root().join("etc/inittab"),
        "::sysinit:/bin/touch /run/booted\n::respawn:/bin/sleep 1000\n",
    )
    .unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let out = loop {
        let o = g.unifs(&[
            "exec",
            &g.name,
            "--",
            "/bin/sh",
            "-c",
            "test -e /run/booted && ps -o pid,args | grep -q '[s]leep 1000' && ps -o pid,args",
        ]);
        if o.status.success() || std::time::Instant::now() > deadline {
            break ok(&o);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "init"]),
        "{out}"
    );
    assert!(out.contains("sleep 1000"), "respawned service runs: {out}");
    ok(&g.unifs(&["stop", "--timeout", "0.5", &g.name]));
    assert_eq!(g.unifs(&["status", &g.name]).status.code(), Some(3));
    assert!(!is_mounted(&g.mounted_root()));
}

#[test]
fn named_veth_guest_has_its_address_and_stop_removes_the_pair() {
    if !can_run("named_veth_guest_has_its_address_and_stop_removes_the_pair") {
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("needs iproute2's `ip` for --net veth");
        }
        eprintln!(
            "skipping named_veth_guest_has_its_address_and_stop_removes_the_pair: needs `ip`"
        );
        return;
    }
    let g = Guest::new("veth", "[\"/bin/sleep\", \"1000\"]", true);
    let n = std::process::id() % 200 + 20;
    let cfg = g.config();
    let mut toml = std::fs::read_to_string(&cfg).unwrap();
    toml.push_str(&format!(
        "[net]\nmode = \"veth\"\nip = \"10.214.{n}.2/24\"\nhost_ip = \"10.214.{n}.1/24\"\n"
    ));
    std::fs::write(&cfg, toml).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let out = ok(&g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/sh",
        "-c",
        &format!("ip -4 addr show eth0; ping -c1 -W2 10.214.{n}.1 >/dev/null && echo ping-ok"),
    ]));
    assert!(out.contains(&format!("inet 10.214.{n}.2/24")), "{out}");
    assert!(out.contains("ping-ok"), "{out}");
    let addrs = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "-4", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        addrs.contains(&format!("10.214.{n}.1/24")),
        "host end has its address: {addrs}"
    );
    ok(&g.unifs(&["stop", "--timeout", "2", &g.name]));
    let addrs = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "-4", "addr"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !addrs.contains(&format!("10.214.{n}.1/24")),
        "host end left behind: {addrs}"
    );
}

#[test]
fn named_start_kills_a_guest_left_by_an_interrupted_start() {
    if !can_run("named_start_kills_a_guest_left_by_an_interrupted_start") {
        return;
    }
    let g = Guest::new("orphan", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let old = g.state()["pid"].as_i64().unwrap();
    // What a `start` killed between its init's exec and the write of the
    // runtime record leaves: a live guest, its root mounted, no record.
    std::fs::remove_file(g.run_dir.join(&g.name).join("state.json")).unwrap();
    let o = g.unifs(&["start", &g.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unfinished start"),
        "says what it cleaned: {}",
        stderr(&o)
    );
    let new = g.state()["pid"].as_i64().unwrap();
    assert_ne!(new, old);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while alive(old) {
        assert!(
            std::time::Instant::now() < deadline,
            "the unrecorded guest (init {old}) runs beside the new one"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(alive(new));
    ok(&g.unifs(&["stop", "--timeout", "2", &g.name]));
    assert!(!is_mounted(&g.mounted_root()));
}

#[test]
fn named_bad_input_is_refused_with_a_message() {
    if !can_run("named_bad_input_is_refused_with_a_message") {
        return;
    }
    let g = Guest::new("badinput", "[\"/bin/sleep\", \"1000\"]", true);
    // An env entry without a value is refused, as `run --env` refuses it,
    // rather than silently dropped.
    let cfg = g.config_dir.join("noval.toml");
    std::fs::write(
        &cfg,
        format!(
            "root = {:?}\nroot_mount = \"bind\"\nenv = [\"LANG\"]\n",
            g.t.root()
        ),
    )
    .unwrap();
    let o = g.unifs(&["start", "noval"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("KEY=VALUE"), "{}", stderr(&o));
    assert!(!is_mounted(&g.run_dir.join("noval/root")));
    // A timeout too large for a Duration is an error, not a panic.
    ok(&g.unifs(&["start", &g.name]));
    for t in ["1e300", "-1", "NaN"] {
        let o = g.unifs(&["stop", &format!("--timeout={t}"), &g.name]);
        assert_eq!(o.status.code(), Some(1), "{t}: {}", stderr(&o));
        assert!(stderr(&o).contains("--timeout"), "{t}: {}", stderr(&o));
    }
    assert_eq!(g.state()["running"], true);
}

/// The guest's runtime record as written (`status` does not show cgroups).
fn record(g: &Guest) -> serde_json::Value {
    let path = g.run_dir.join(&g.name).join("state.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn groups(rec: &serde_json::Value) -> Vec<PathBuf> {
    rec["cgroup"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| PathBuf::from(g.as_str().unwrap()))
        .collect()
}

#[test]
fn named_guests_of_one_name_in_two_run_dirs_have_their_own_cgroups() {
    if !can_run("named_guests_of_one_name_in_two_run_dirs_have_their_own_cgroups") {
        return;
    }
    let a = Guest::new("twin", "[\"/bin/sleep\", \"1000\"]", false);
    let b = Guest::new("twin", "[\"/bin/sleep\", \"1000\"]", false);
    assert_eq!(a.name, b.name);
    ok(&a.unifs(&["start", &a.name]));
    let a_pid = a.state()["pid"].as_i64().unwrap();
    ok(&b.unifs(&["start", &b.name]));
    assert!(alive(a_pid), "starting b killed a (init {a_pid})");
    let (ga, gb) = (groups(&record(&a)), groups(&record(&b)));
    assert!(ga.iter().all(|g| !gb.contains(g)), "{ga:?} {gb:?}");
    ok(&b.unifs(&["stop", "--timeout", "0", &b.name]));
    assert!(alive(a_pid), "stopping b killed a (init {a_pid})");
    assert_eq!(a.state()["running"], true);
    ok(&a.unifs(&["stop", "--timeout", "0", &a.name]));
}

/// SIGKILLs a guest process a failing test would otherwise leave running.
struct KillPid(i64);

impl Drop for KillPid {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Waits up to 30 s for `pid` to be gone.
fn gone(pid: i64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn named_clean_up_finds_processes_in_sub_cgroups() {
    if !can_run("named_clean_up_finds_processes_in_sub_cgroups") {
        return;
    }
    let g = Guest::new("subcg", "[\"/bin/sleep\", \"1000\"]", false);
    // A guest with a cgroup mount of its own (cap_add = ["sys_admin"], as
    // systemd needs) moves its processes into groups below its group.
    let move_below = |rec: &serde_json::Value| {
        let pid = rec["pid"].as_i64().unwrap();
        for group in groups(rec) {
            let sub = group.join("sub/deeper");
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join("cgroup.procs"), pid.to_string()).unwrap();
        }
        pid
    };
    ok(&g.unifs(&["start", &g.name]));
    let first = record(&g);
    let old = move_below(&first);
    let _guard = KillPid(old);
    // The record lost (a killed start): the next start must find and kill it.
    std::fs::remove_file(g.run_dir.join(&g.name).join("state.json")).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    assert!(
        gone(old),
        "the unrecorded guest (init {old}) runs beside the new one"
    );
    // And stop removes every group, those below included.
    let second = record(&g);
    let new = move_below(&second);
    let _guard2 = KillPid(new);
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    assert!(gone(new));
    for group in groups(&second) {
        assert!(!group.exists(), "cgroup {} left behind", group.display());
    }
}

#[test]
fn named_stop_list_and_status_see_a_guest_left_by_an_interrupted_start() {
    if !can_run("named_stop_list_and_status_see_a_guest_left_by_an_interrupted_start") {
        return;
    }
    let g = Guest::new("unrec", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let old = g.state()["pid"].as_i64().unwrap();
    let _guard = KillPid(old);
    // What a `start` killed between its init's exec and the write of the
    // runtime record leaves: a live guest, its root mounted, no record.
    std::fs::remove_file(g.run_dir.join(&g.name).join("state.json")).unwrap();
    let st = g.state();
    assert_eq!(st["running"], true, "status hides a running guest: {st}");
    let o = g.unifs(&["list", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let me = all
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == g.name.as_str())
        .unwrap_or_else(|| panic!("not listed: {all}"));
    assert_eq!(me["running"], true, "{all}");
    let o = g.unifs(&["exec", &g.name, "--", "/bin/true"]);
    assert!(
        stderr(&o).contains("without a runtime record"),
        "{}",
        stderr(&o)
    );
    let o = g.unifs(&["stop", "--timeout", "1", &g.name]);
    assert!(o.status.success(), "stop: {}", stderr(&o));
    assert!(
        gone(old),
        "stop left the unrecorded guest (init {old}) running"
    );
    assert!(!is_mounted(&g.mounted_root()));
    assert_eq!(g.state()["running"], false);
}

#[test]
fn named_guest_in_a_run_dir_named_through_a_symlink_starts_and_stops() {
    if !can_run("named_guest_in_a_run_dir_named_through_a_symlink_starts_and_stops") {
        return;
    }
    let g = Guest::new("linkrun", "[\"/bin/sleep\", \"1000\"]", false);
    // As /var/run is a symlink to /run on most distributions.
    std::fs::create_dir_all(&g.run_dir).unwrap();
    let link = g.t.dir.path().join("var-run");
    std::os::unix::fs::symlink(&g.run_dir, &link).unwrap();
    let via_link = |args: &[&str]| {
        let mut cmd = g.cmd(args);
        cmd.env("UNIFS_RUN_DIR", &link);
        run_bounded(cmd, Duration::from_secs(30))
    };
    ok(&via_link(&["start", &g.name]));
    assert!(is_mounted(&g.mounted_root()));
    let pid = g.state()["pid"].as_i64().unwrap();
    let _kill = KillPid(pid);
    assert!(ok(&via_link(&["status", &g.name])).contains("running"));
    ok(&via_link(&["stop", "--timeout", "0", &g.name]));
    assert!(gone(pid), "stop left init {pid} running");
    assert!(!is_mounted(&g.mounted_root()), "stop left the root mounted");
}

/// The host end of a `--net veth` guest is `ve-NAME`, one name for guests
/// of one name in every run dir. A start that finds it taken says whose it
/// may be and how to remove a leftover (`ip` said only "File exists"), and
/// leaves it alone; once it is gone the guest starts, and stop removes it.
#[test]
fn named_veth_guest_whose_host_interface_is_taken_says_so() {
    if !can_run("named_veth_guest_whose_host_interface_is_taken_says_so") {
        return;
    }
    let g = Guest::new("vethbusy", "[\"/bin/sleep\", \"1000\"]", true);
    // Not the other veth test's subnet: they run at the same time.
    let n = std::process::id() % 200 + 20;
    let config = g.config();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "[net]\nmode = \"veth\"\nip = \"10.215.{n}.2/24\"\nhost_ip = \"10.215.{n}.1/24\"\n"
    ));
    std::fs::write(&config, toml).unwrap();
    let spec = unifs::guest::GuestSpec::new(&g.name, PathBuf::from("/"), Vec::new());
    let ifname = unifs::guest::net::host_ifname(&spec);
    let ip = |args: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(args);
        run_bounded(cmd, Duration::from_secs(30))
    };
    let exists = || Path::new("/sys/class/net").join(&ifname).exists();
    assert!(!exists(), "{ifname} is in use on this host");
    let peer = format!("vbusy{n}");
    ok(&ip(&[
        "link", "add", &ifname, "type", "veth", "peer", "name", &peer,
    ]));
    struct Del<'a>(&'a str);
    impl Drop for Del<'_> {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", self.0]).status();
        }
    }
    let _del = Del(&ifname);

    let out = g.unifs(&["start", &g.name]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("host interface {ifname}")), "{err}");
    assert!(err.contains("exists already"), "{err}");
    assert!(exists(), "the start removed the interface it did not make");
    assert!(!is_mounted(&g.mounted_root()));

    ok(&ip(&["link", "del", &ifname]));
    ok(&g.unifs(&["start", &g.name]));
    assert!(exists());
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    assert!(!exists());
}

/// A static C program: grabs, through /proc/PID/fd, any pipe above stderr of
/// another process of the guest, writes a forged report into it and holds it.
const REPORT_THIEF: &str = r#"
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
int main(void) {
    for (;;) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == getpid()) continue;
            for (int fd = 3; fd < 8; fd++) {
                char p[64];
                snprintf(p, sizeof p, "/proc/%d/fd/%d", pid, fd);
                int f = open(p, O_WRONLY | O_NONBLOCK);
                struct stat st;
                if (f >= 0 && fstat(f, &st) == 0 && S_ISFIFO(st.st_mode)) {
                    if (write(f, "Eforged by the guest", 20) < 0) {}
                    sleep(5);
                    _exit(0);
                }
                if (f >= 0) close(f);
            }
        }
        closedir(d);
    }
}
"#;

#[test]
fn named_exec_report_pipe_is_not_reachable_from_the_guest() {
    if !can_run("named_exec_report_pipe_is_not_reachable_from_the_guest") {
        return;
    }
    // The exec trampoline keeps a copy of the host's report pipe across its
    // exec, and runs dumpable: any guest process could open it through
    // /proc/PID/fd, hold it (`guest exec` waited for its EOF) and write
    // errors the host printed as its own.
    let g = Guest::new(
        "thief",
        "[\"/bin/sh\", \"-c\", \"/bin/thief & /bin/thief & exec /bin/sleep 1000\"]",
        false,
    );
    let src = g.t.dir.path().join("thief.c");
    std::fs::write(&src, REPORT_THIEF).unwrap();
    let cc = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(g.t.root().join("bin/thief"))
        .arg(&src)
        .status();
    if !cc.is_ok_and(|s| s.success()) {
        crate::common::skip(
            "named_exec_report_pipe_is_not_reachable_from_the_guest",
            "needs cc -static (gcc, libc6-dev)",
        );
        return;
    }
    ok(&g.unifs(&["start", &g.name]));
    for i in 0..300 {
        let out = run_bounded(
            g.cmd(&["exec", &g.name, "--", "/bin/true"]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "exec {i}: {:?} {}",
            out.status,
            stderr(&out)
        );
    }
}

/// Takes the report socket of each new process of the guest with
/// pidfd_getfd (no /proc/PID/fd needed: the trampoline runs as guest root,
/// dumpable), writes a forged report and 1 MiB into it, holds it for good,
/// and counts its catches in /tmp/caught.
const REPORT_GRABBER: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
static int last_pid(void) {
    char b[32];
    int fd = open("/proc/sys/kernel/ns_last_pid", O_RDONLY);
    int r = read(fd, b, 31);
    close(fd);
    b[r > 0 ? r : 0] = 0;
    return atoi(b);
}
int main(void) {
    static char junk[1 << 20];
    memset(junk, 'A', sizeof junk);
    int caught = 0, seen = last_pid();
    mkdir("/tmp", 01777);
    for (;;) {
        int now = last_pid();
        if (now == seen) continue;
        seen = now;
        int pfd = syscall(SYS_pidfd_open, now, 0);
        if (pfd < 0) continue;
        for (long i = 0; i < 2000000; i++) {
            int fd = syscall(SYS_pidfd_getfd, pfd, 3 + i % 8, 0);
            if (fd < 0) {
                if (errno == ESRCH) break;
                continue;
            }
            struct stat st;
            if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
                fcntl(fd, F_SETFL, O_NONBLOCK);
                if (write(fd, "Eforged by the guest\nunifs: second line", 40) < 0) {}
                if (write(fd, junk, sizeof junk) < 0) {}
                char n[16];
                int f = open("/tmp/caught", O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (write(f, n, snprintf(n, sizeof n, "%d", ++caught)) < 0) {}
                close(f);
                break; /* held for good */
            }
            close(fd);
        }
        close(pfd);
    }
}
"#;

#[test]
fn named_exec_ends_with_its_command_when_the_guest_holds_the_report_socket() {
    let test = "named_exec_ends_with_its_command_when_the_guest_holds_the_report_socket";
    if !can_run(test) {
        return;
    }
    // Guest root took the report socket from the exec trampoline with
    // pidfd_getfd and held it: `guest exec` waited for its end for good,
    // printed the guest's text as its own error, and read all the guest
    // wrote into memory (1 GiB: 3 GiB of RSS outside any guest limit).
    let g = Guest::new(
        "grab",
        "[\"/bin/sh\", \"-c\", \"/bin/grab & exec /bin/sleep 1000\"]",
        false,
    );
    if !super::escape::cc_or_skip(&g.t, test, "grab", REPORT_GRABBER) {
        return;
    }
    ok(&g.unifs(&["start", &g.name]));
    let caught = || std::fs::read_to_string(g.t.root().join("tmp/caught")).unwrap_or_default();
    for i in 0..60 {
        let out = run_bounded(
            g.cmd(&["exec", &g.name, "--", "/bin/echo", "hi"]),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success() && stdout(&out) == "hi\n" && out.stderr.is_empty(),
            "exec {i} (caught so far: {}): {:?} {}",
            caught(),
            out.status,
            stderr(&out)
        );
        if !caught().is_empty() {
            break;
        }
    }
    assert!(!caught().is_empty(), "the grabber never caught a socket");
    // A command that fails as a missing one does still says why.
    let out = g.unifs(&["exec", &g.name, "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/no/such/program: command not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn named_exec_tty_wants_a_terminal_and_a_second_signal_ends_exec() {
    if !can_run("named_exec_tty_wants_a_terminal_and_a_second_signal_ends_exec") {
        return;
    }
    let g = Guest::new("ttysig", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    // --tty with stdin from a pipe: the pty's end of input (a ^D) did not
    // reach an interactive shell, which then never ended.
    let o = g.unifs(&["exec", "--tty", &g.name, "--", "/bin/true"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--tty") && stderr(&o).contains("stdin is not a terminal"),
        "{}",
        stderr(&o)
    );
    // On a terminal it runs, output through the guest's pty.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || Stdio::from(std::fs::File::from(pty.slave.try_clone().unwrap()));
    let mut cmd = g.cmd(&["exec", "--tty", &g.name, "--", "/bin/echo", "on-a-pty"]);
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    let out = super::harness::wait_bounded(
        KillOnDrop(Some(cmd.spawn().unwrap())),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let mut seen = vec![0u8; 4096];
    let n = nix::unistd::read(&pty.master, &mut seen).unwrap();
    assert!(
        String::from_utf8_lossy(&seen[..n]).contains("on-a-pty"),
        "{:?}",
        String::from_utf8_lossy(&seen[..n])
    );

    // A command the guest stopped: signals are passed on and wait with it;
    // the second ends `exec`.
    let mut cmd = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", "kill -STOP $$"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut exec = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = nix::unistd::Pid::from_raw(exec.0.as_ref().unwrap().id() as i32);
    // Signalled once the command has stopped itself: a fixed pause was
    // too short on a loaded machine.
    let sh = super::harness::wait_for_descendant(pid.as_raw() as u32, "sh");
    let state = || crate::common::proc_stat(sh)[0].clone();
    assert!(
        super::harness::within_30s(|| state() == "T"),
        "the command is {}",
        state()
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Passed on: it waits, pending, on the stopped command (and two at
    // once would be one; a fixed pause was too short on a loaded machine).
    let passed = super::harness::within_30s(|| signal_pending(sh, libc::SIGTERM));
    assert!(passed, "the SIGTERM never reached the command");
    // Nothing marks exec's choice not to end: a moment to end in (a late
    // end only makes this pass).
    std::thread::sleep(Duration::from_millis(300));
    let child = exec.0.as_mut().unwrap();
    assert!(matches!(child.try_wait(), Ok(None)), "ended on one signal");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = super::harness::wait_bounded(exec, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(137), "{out:?}");
}

#[test]
fn named_exec_without_tty_does_not_leave_the_hosts_terminal_to_the_guest() {
    use std::io::Write;
    if !can_run("named_exec_without_tty_does_not_leave_the_hosts_terminal_to_the_guest") {
        return;
    }
    // `guest exec` without --tty handed the user's terminal itself to the
    // command: a guest process that kept the fd (a background job, or
    // guest root through /proc/PID/fd/0) read what the user typed to the
    // host's shell after exec had returned (a sudo password).
    let g = Guest::new("ttykeep", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let pty = nix::pty::openpty(None, None).unwrap();
    let script = "exec 5<&0; cat <&5 > /tmp/stolen & sleep 0.3";
    let mut cmd = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", script]);
    let slave = || Stdio::from(std::fs::File::from(pty.slave.try_clone().unwrap()));
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    let exec = super::harness::wait_bounded(
        KillOnDrop(Some(cmd.spawn().unwrap())),
        Duration::from_secs(30),
    );
    assert!(exec.status.success(), "{exec:?}");
    // What the user then types to the host's shell.
    let mut master = std::fs::File::from(pty.master);
    master.write_all(b"typed-at-the-host\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stolen = g.unifs(&["exec", &g.name, "--", "/bin/cat", "/tmp/stolen"]);
    assert!(
        !stdout(&stolen).contains("typed-at-the-host"),
        "a guest process read the host's terminal after exec: {}",
        stdout(&stolen)
    );
}

#[test]
fn named_guests_set_uid_programs_are_not_reachable_by_host_users_in_the_run_dir() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let test = "named_guests_set_uid_programs_are_not_reachable_by_host_users_in_the_run_dir";
    if !can_run(test) {
        return;
    }
    // The guest's root is mounted (suid, allow_other) below the run dir,
    // which start made 0755 where missing (/run/unifs on a fresh boot):
    // any host user ran a set-uid root program guest root had made, as root.
    let g = Guest::new("suidrun", "[\"/bin/sleep\", \"1000\"]", false);
    std::fs::set_permissions(g.t.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let prog = g.t.root().join("bin/rootshell");
    std::fs::copy(g.t.root().join("bin/busybox"), &prog).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let through = g.mounted_root().join("bin/rootshell");
    assert!(through.exists(), "{} not mounted", through.display());
    // busybox runs the applet its argv[0] names.
    let ran = Command::new(&through)
        .arg0("true")
        .uid(65534)
        .gid(65534)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        !ran,
        "uid 65534 ran the guest's set-uid root program at {}",
        through.display()
    );
}

#[test]
fn named_init_does_not_hold_the_hosts_dev_null() {
    use std::os::unix::fs::MetadataExt;
    if !can_run("named_init_does_not_hold_the_hosts_dev_null") {
        return;
    }
    // start gave init the host's /dev/null as stdin: guest root could
    // chmod or chown it through /proc/self/fd/0 (chmod 600 broke every
    // host user's /dev/null). Checked by identity, not by changing it.
    let init = r#"["/bin/sh", "-c", "stat -L -c 'stdin %d %i' /proc/self/fd/0; exec sleep 1000"]"#;
    let g = Guest::new("devnull", init, false);
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.starts_with("stdin ")) {
            break l.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no stat in {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let host = std::fs::metadata("/dev/null").unwrap();
    assert_ne!(
        line,
        format!("stdin {} {}", host.dev(), host.ino()),
        "init's stdin is the host's /dev/null"
    );
}

#[test]
fn named_exec_output_file_cannot_be_changed_by_the_guest() {
    use std::os::unix::fs::PermissionsExt;
    if !can_run("named_exec_output_file_cannot_be_changed_by_the_guest") {
        return;
    }
    // A file `guest exec` wrote its output to was the command's stdout
    // itself: guest root could chmod it through /proc/self/fd/1 and, once
    // filled with a program, make it set-uid root on the host.
    let g = Guest::new("outfile", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let out = g.t.dir.path().join("report.txt");
    let file = std::fs::File::create(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = "echo report; chmod 4755 /proc/self/fd/1";
    let mut cmd = g.cmd(&["exec", &g.name, "--", "/bin/sh", "-c", script]);
    cmd.stdin(Stdio::null()).stdout(file).stderr(Stdio::piped());
    let exec = super::harness::wait_bounded(
        KillOnDrop(Some(cmd.spawn().unwrap())),
        Duration::from_secs(30),
    );
    assert!(exec.status.success(), "{exec:?}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "report\n");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "the guest changed the host file's mode");
}

#[test]
fn named_init_runs_as_its_configured_user_and_exec_can_pick_another() {
    if !can_run("named_init_runs_as_its_configured_user_and_exec_can_pick_another") {
        return;
    }
    let g = Guest::new(
        "user",
        "[\"/bin/sh\", \"-c\", \"id -u > ./init.out; pwd >> ./init.out; exec sleep 1000\"]",
        true,
    );
    super::run_options::add_users(&g.t.root());
    let config = g.config();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    // Top-level keys go before the [limits] table.
    toml = toml.replace(
        "[limits]",
        "user = \"alice\"\nchdir = \"/srv\"\nrlimits = [\"nofile=300:400\"]\n[limits]",
    );
    std::fs::write(&config, toml).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let init_out = g.t.root().join("srv/init.out");
    assert!(
        super::harness::within_30s(
            || std::fs::read_to_string(&init_out).is_ok_and(|s| s.lines().count() == 2)
        ),
        "init wrote nothing"
    );
    assert_eq!(std::fs::read_to_string(&init_out).unwrap(), "1000\n/srv\n");
    // exec: as init by default (user, directory, rlimits), or as asked.
    let script = "id -u; id -G; pwd";
    let out = ok(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", script]));
    assert_eq!(out.lines().next(), Some("1000"), "{out}");
    assert_eq!(out.lines().nth(2), Some("/srv"), "{out}");
    let out = ok(&g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/sh",
        "-c",
        "ulimit -Sn; ulimit -Hn",
    ]));
    assert_eq!(out, "300\n400\n");
    let out = ok(&g.unifs(&[
        "exec", &g.name, "-u", "root", "-w", "/private", "--", "/bin/sh", "-c", script,
    ]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0", "0", "/private"],
        "{out}"
    );
    // enter -u: that user's login shell (from stdin without a terminal).
    let mut enter = g.cmd(&["enter", "-u", "alice", &g.name]);
    enter
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(Some(enter.spawn().unwrap()));
    let mut stdin = child.0.as_mut().unwrap().stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"echo $0; id -u\n").unwrap();
    drop(stdin);
    let out = ok(&super::harness::wait_bounded(
        child,
        Duration::from_secs(30),
    ));
    assert_eq!(out, "/bin/ash\n1000\n");
    // -u without -w: the user's home (root's is not there: /), not init's
    // directory, which that user may not be allowed into.
    let out = ok(&g.unifs(&["exec", &g.name, "-u", "root", "--", "/bin/pwd"]));
    assert_eq!(out, "/\n");
    let o = g.unifs(&["exec", &g.name, "--user", "bob", "--", "/bin/true"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("no such user"), "{}", stderr(&o));
    let o = g.unifs(&["exec", &g.name, "-w", "/private", "--", "/bin/true"]);
    assert!(
        stderr(&o).contains("EACCES"),
        "alice may not: {}",
        stderr(&o)
    );
}

#[test]
fn named_exec_user_never_reads_a_kernel_file_the_guest_links_in() {
    let test = "named_exec_user_never_reads_a_kernel_file_the_guest_links_in";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("kmsg", "[\"/bin/sleep\", \"1000\"]", true);
    super::run_options::add_users(&g.t.root());
    ok(&g.unifs(&["start", &g.name]));
    // Guest root may not read /proc/kmsg (no CAP_SYSLOG), but the launcher
    // looking up `-u` has every privilege: reading it there would drain the
    // host's kernel log.
    let link = "ln -sf /proc/kmsg /etc/passwd && ln -sf /proc/sys/kernel/hostname /etc/group";
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", link]));
    let o = g.unifs(&["exec", &g.name, "-u", "alice", "--", "/bin/true"]);
    assert_ne!(o.status.code(), Some(0));
    let e = stderr(&o);
    assert!(
        e.contains("/etc/passwd is not a regular file of the guest's tree"),
        "{e}"
    );
    let fix = "rm /etc/passwd && echo 'alice:x:1000:1000::/:/bin/sh' > /etc/passwd";
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", fix]));
    let o = g.unifs(&["exec", &g.name, "-u", "alice", "--", "/bin/true"]);
    let e = stderr(&o);
    assert!(
        e.contains("/etc/group is not a regular file of the guest's tree"),
        "{e}"
    );
}

/// The value of cgroup control file `file` in whichever of the running
/// guest's groups has it.
fn cgroup_value(g: &Guest, file: &str) -> Option<String> {
    let dir = group_with(g, file)?;
    Some(
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .to_string(),
    )
}

#[test]
fn named_update_changes_a_running_guests_limits_in_place() {
    if !can_run("named_update_changes_a_running_guests_limits_in_place") {
        return;
    }
    let g = Guest::new("update", "[\"/bin/sleep\", \"1000\"]", true);
    let config = g.config();
    let before_config = std::fs::read_to_string(&config).unwrap();
    let o = g.unifs(&["update", "--pids", "100", &g.name]);
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    ok(&g.unifs(&["start", &g.name]));
    let pid = g.state()["pid"].as_i64().unwrap();
    assert_eq!(cgroup_value(&g, "pids.max").as_deref(), Some("64"));

    let out = ok(&g.unifs(&["update", "--pids", "100", "--memory", "64M", &g.name]));
    assert!(
        out.contains("pids 100") && out.contains("memory 64.0M"),
        "{out}"
    );
    assert_eq!(cgroup_value(&g, "pids.max").as_deref(), Some("100"));
    let memory = memory_limit;
    assert_eq!(memory(&g), Some((64u64 << 20).to_string()));
    // Up (v1 wants memory+swap raised first) and down again.
    ok(&g.unifs(&["update", "--memory", "256M", &g.name]));
    assert_eq!(memory(&g), Some((256u64 << 20).to_string()));
    if let Some(sw) = cgroup_value(&g, "memory.memsw.limit_in_bytes") {
        assert_eq!(sw, (256u64 << 20).to_string());
    }
    ok(&g.unifs(&["update", "--memory", "32M", &g.name]));
    assert_eq!(memory(&g), Some((32u64 << 20).to_string()));

    // status shows them; the guest ran on untouched; its config is as it was.
    let st = g.state();
    assert_eq!(st["limits"]["pids"], 100, "{st}");
    assert_eq!(st["limits"]["memory"], 32u64 << 20, "{st}");
    assert_eq!(st["pid"].as_i64(), Some(pid));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before_config);
    assert!(ok(&g.unifs(&["status", &g.name])).contains("limits:  memory 32.0M, pids 100"));

    let o = g.unifs(&["update", &g.name]);
    assert!(stderr(&o).contains("nothing to change"), "{}", stderr(&o));
    let o = g.unifs(&["update", "--cpus", "0", &g.name]);
    assert!(stderr(&o).contains("invalid"), "{}", stderr(&o));
    assert_eq!(cgroup_value(&g, "pids.max").as_deref(), Some("100"));
}

/// A config from before the range was checked, with a quota below the
/// kernel's least: start raises it and says so once (it was said twice).
#[test]
fn s29_named_start_warns_once_of_a_raised_cpu_quota() {
    if !can_run("s29_named_start_warns_once_of_a_raised_cpu_quota") {
        return;
    }
    let g = Guest::new("lowcpu", "[\"/bin/sleep\", \"1000\"]", true);
    let toml = std::fs::read_to_string(g.config()).unwrap();
    std::fs::write(
        g.config(),
        toml.replace("[limits]", "[limits]\ncpus = 0.001"),
    )
    .unwrap();
    let o = g.unifs(&["start", &g.name]);
    ok(&o);
    let warnings = stderr(&o)
        .matches("limits.cpus = 0.001 is below 0.01")
        .count();
    assert_eq!(warnings, 1, "{}", stderr(&o));
    assert_eq!(g.state()["limits"]["cpus"], 0.01);
}

/// The guest's group in the hierarchy whose groups have `file`.
fn group_with(g: &Guest, file: &str) -> Option<PathBuf> {
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g.run_dir.join(&g.name).join("state.json")).unwrap())
            .unwrap();
    rec["cgroup"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .find(|d| d.join(file).exists())
}

#[test]
fn named_update_is_all_or_nothing_and_brings_the_guests_own_groups_under_it() {
    let test = "named_update_is_all_or_nothing_and_brings_the_guests_own_groups_under_it";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("update2", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["update", "--memory", "256M", "--cpus", "1", &g.name]));
    let before = (cgroup_value(&g, "pids.max"), g.state()["limits"].clone());

    // v1 refuses a memory limit under what the guest cannot give back
    // (tmpfs pages, no swap); v2 would take it and OOM-kill instead.
    let v1_memory = group_with(&g, "memory.limit_in_bytes");
    let no_swap = std::fs::read_to_string("/proc/swaps")
        .unwrap()
        .lines()
        .count()
        <= 1;
    if v1_memory.is_some() && no_swap {
        let fill = "head -c 40000000 /dev/zero > /run/fill";
        ok(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", fill]));
        let o = g.unifs(&[
            "update", "--pids", "10", "--cpus", "0.5", "--memory", "8M", &g.name,
        ]);
        assert_ne!(o.status.code(), Some(0));
        let e = stderr(&o);
        assert!(
            e.contains("free memory in it") && e.contains("no limit was changed"),
            "{e}"
        );
        assert_eq!(
            (cgroup_value(&g, "pids.max"), g.state()["limits"].clone()),
            before
        );
        let cpu = group_with(&g, "cpu.cfs_quota_us");
        if let Some(cpu) = cpu {
            let quota = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap();
            assert_eq!(quota.trim(), "100000", "--cpus put back");
        }
        assert_eq!(memory_limit(&g), Some((256u64 << 20).to_string()));
    } else {
        eprintln!("{test}: no v1 memory controller without swap here; the refusal is not tried");
    }

    // A v1 cpu group of the guest's own (it may make them in a cgroup
    // mount of its own) with a larger share would block a lower quota.
    if let Some(cpu) = group_with(&g, "cpu.cfs_quota_us") {
        let own = cpu.join("guest/own");
        std::fs::create_dir(&own).unwrap();
        std::fs::write(own.join("cpu.cfs_quota_us"), "90000").unwrap();
        ok(&g.unifs(&["update", "--cpus", "0.5", &g.name]));
        let read = |d: &Path| std::fs::read_to_string(d.join("cpu.cfs_quota_us")).unwrap();
        assert_eq!(read(&cpu).trim(), "50000");
        assert_eq!(read(&own).trim(), "50000", "brought under the new quota");
        // A short period would need less than the kernel's 1 ms: no quota
        // of its own then, the one above bounds it.
        std::fs::write(own.join("cpu.cfs_quota_us"), "5000").unwrap();
        std::fs::write(own.join("cpu.cfs_period_us"), "10000").unwrap();
        ok(&g.unifs(&["update", "--cpus", "0.04", &g.name]));
        assert_eq!(read(&cpu).trim(), "4000");
        assert_eq!(read(&own).trim(), "-1");
        let _ = std::fs::remove_dir(&own);
    }
    for (opt, value) in [
        ("--cpus", "0.001"),
        ("--cpus", "1e9"),
        ("--pids", "99999999"),
    ] {
        let o = g.unifs(&["update", opt, value, &g.name]);
        assert!(
            stderr(&o).contains("must be"),
            "{opt} {value}: {}",
            stderr(&o)
        );
    }
}

/// `guest update` cut short by a Ctrl-C between its writes (strace sends
/// SIGINT as it writes the pids limit) left that limit changed and the
/// record with the old ones, so `status` said limits the guest no longer
/// had. The writes and the record are now made with such signals held:
/// the signal ends the command after them.
#[test]
fn review_s22_named_update_cut_short_by_a_signal_still_agrees_with_its_record() {
    let test = "review_s22_named_update_cut_short_by_a_signal_still_agrees_with_its_record";
    if !can_run(test) || !crate::common::require_strace(test) {
        return;
    }
    let g = Guest::new("update3", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let pids_max = group_with(&g, "pids.max").unwrap().join("pids.max");
    let inner = g.cmd(&["update", "--pids", "42", "--cpus", "0.25", &g.name]);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-P"])
        .arg(&pids_max)
        .args([
            "-e",
            "trace=write",
            "-e",
            "inject=write:signal=SIGINT:when=1",
        ])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let o = run_bounded(cmd, Duration::from_secs(30));
    assert_ne!(o.status.code(), Some(0), "not interrupted: {}", stderr(&o));
    assert_eq!(cgroup_value(&g, "pids.max").as_deref(), Some("42"));
    let st = g.state();
    assert_eq!(st["limits"]["pids"], 42, "{st}");
    assert_eq!(st["limits"]["cpus"], 0.25, "{st}");
}

fn memory_limit(g: &Guest) -> Option<String> {
    cgroup_value(g, "memory.max").or_else(|| cgroup_value(g, "memory.limit_in_bytes"))
}

#[test]
fn named_ps_lists_the_guests_processes_with_their_own_pids() {
    if !can_run("named_ps_lists_the_guests_processes_with_their_own_pids") {
        return;
    }
    let g = Guest::new("ps", "[\"/bin/sleep\", \"1000\"]", false);
    // For a PID namespace of the guest's own, below: as bwrap would make.
    let config = g.config();
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml.replace("[limits]", "syscall_filter = \"allow-userns\"\n[limits]");
    std::fs::write(&config, toml).unwrap();
    let o = g.unifs(&["ps", &g.name]);
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    // A process that outlives its exec session, as a daemon the guest runs.
    let daemon = "/bin/sleep 999 </dev/null >/dev/null 2>&1 &";
    ok(&g.unifs(&[
        "exec",
        &g.name,
        "-u",
        "4242:4242",
        "--",
        "/bin/sh",
        "-c",
        daemon,
    ]));
    let listed = || -> serde_json::Value {
        serde_json::from_str(&ok(&g.unifs(&["ps", "--json", &g.name]))).unwrap()
    };
    let two = super::harness::within_30s(|| listed().as_array().unwrap().len() == 2);
    assert!(two, "{}", listed());
    let all = listed();
    let (first, worker) = (&all[0], &all[1]);
    assert_eq!(first["pid"].as_i64(), Some(init), "init first: {all}");
    assert_eq!(first["guest_pid"], 1, "{all}");
    assert_eq!(first["command"], "/bin/sleep 1000", "{all}");
    assert_eq!(worker["uid"], 4242, "{all}");
    assert_eq!(worker["command"], "/bin/sleep 999", "{all}");
    let (host, own) = (
        worker["pid"].as_i64().unwrap(),
        worker["guest_pid"].as_i64().unwrap(),
    );
    assert!(alive(host) && own > 1 && own != host, "{all}");
    // Only processes still in the guest's groups: a PID listed from them
    // that went to another process (this test's, here) is left out.
    let group = group_with(&g, "cgroup.procs").unwrap();
    let group = group.to_str().unwrap();
    let group = &group[group.find("unifs/").unwrap()..];
    let me = std::process::id() as i32;
    let found = unifs::guest::ps::processes(&[me, host as i32, init as i32], init as i32, group);
    let pids: Vec<i32> = found.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [host as i32, init as i32]);
    // Its command line is the guest's to choose: never a raw control byte
    // on the operator's terminal (a newline would forge a row).
    let forged = "/bin/sh -c 'sleep 998; :' \"$(printf 'x\\n 1 1 0 S /usr/sbin/sshd\\033[31m')\" \
                  </dev/null >/dev/null 2>&1 &";
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", forged]));
    // The forging shell and its sleep.
    let four = || listed().as_array().unwrap().len() == 4;
    assert!(super::harness::within_30s(four), "{}", listed());
    let text = ok(&g.unifs(&["ps", &g.name]));
    assert_eq!(text.lines().count(), 5, "a header and a row each: {text}");
    assert!(
        !text.contains('\u{1b}') && text.contains("x? 1 1 0 S /usr/sbin/sshd?[31m"),
        "{text}"
    );
    assert!(text.starts_with("     PID GUEST-PID"), "{text}");
    // A process in a PID namespace below the guest's is shown with its PID
    // in the guest's, not its own 1.
    let nested = "unshare -r -p -f /bin/sleep 997 </dev/null >/dev/null 2>&1 &";
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", nested]));
    let sleeper = || {
        listed()
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["command"] == "/bin/sleep 997")
            .cloned()
    };
    assert!(
        super::harness::within_30s(|| sleeper().is_some()),
        "{}",
        listed()
    );
    let guest_pid = sleeper().unwrap()["guest_pid"].as_i64().unwrap();
    assert!(guest_pid > 1, "{}", listed());
    assert!(
        text.contains(&format!("{host} ")) && text.contains("/bin/sleep 999"),
        "{text}"
    );
}

#[test]
fn named_start_sets_a_long_console_log_aside() {
    if !can_run("named_start_sets_a_long_console_log_aside") {
        return;
    }
    let g = Guest::new(
        "console",
        "[\"/bin/sh\", \"-c\", \"echo booted; exec sleep 1000\"]",
        false,
    );
    let dir = g.run_dir.join(&g.name);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("console.log");
    let big = vec![b'x'; 5 << 20];
    std::fs::write(&log, &big).unwrap();
    // A start that fails changes nothing of it.
    let config = g.config();
    let good = std::fs::read_to_string(&config).unwrap();
    let init = "init = [\"/bin/sh\", \"-c\", \"echo booted; exec sleep 1000\"]";
    assert!(good.contains(init), "{good}");
    std::fs::write(&config, good.replace(init, "init = [\"/bin/nonexistent\"]")).unwrap();
    assert!(!g.unifs(&["start", &g.name]).status.success());
    assert_eq!(std::fs::read(&log).unwrap(), big);
    assert!(!dir.join("console.log.1").exists() && !dir.join("console.log.new").exists());
    std::fs::write(&config, good).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    assert!(super::harness::within_30s(
        || std::fs::read(&log).is_ok_and(|l| l == b"booted\n")
    ));
    assert_eq!(std::fs::read(dir.join("console.log.1")).unwrap(), big);
    // A short one is appended to, as ever.
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    ok(&g.unifs(&["start", &g.name]));
    assert!(super::harness::within_30s(
        || std::fs::read(&log).is_ok_and(|l| l == b"booted\nbooted\n")
    ));
}

#[test]
fn named_logs_show_the_console_follow_it_and_restart_appends_to_it() {
    if !can_run("named_logs_show_the_console_follow_it_and_restart_appends_to_it") {
        return;
    }
    let g = Guest::new("logs", "[\"/bin/sh\", \"/start.sh\"]", false);
    std::fs::write(
        g.t.root().join("start.sh"),
        "printf 'one\\ntwo\\nthree\\n'\n\
         while [ ! -e /go ]; do sleep 0.05; done\n\
         echo tick; sleep 0.3; echo tock; exec sleep 1000\n",
    )
    .unwrap();
    let o = g.unifs(&["logs", &g.name]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no console log") && e.contains("console.log"),
        "{e}"
    );
    let o = g.unifs(&["logs", "nosuchguest"]);
    assert!(stderr(&o).contains("no config"), "{}", stderr(&o));

    let first = ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    let wrote = |s: &str| std::fs::read_to_string(&log).is_ok_and(|l| l.contains(s));
    assert!(super::harness::within_30s(|| wrote("three")));
    assert_eq!(ok(&g.unifs(&["logs", &g.name])), "one\ntwo\nthree\n");
    assert_eq!(ok(&g.unifs(&["logs", "-n", "2", &g.name])), "two\nthree\n");
    assert_eq!(ok(&g.unifs(&["logs", "-n", "0", &g.name])), "");

    // Followed: what comes while it runs, until it stops.
    // Its output to a file, so the guest is let on only once the follower has
    // printed its last line: a follower slow to start would see "tick" as last.
    let followed = g.t.dir.path().join("followed");
    let mut cmd = g.cmd(&["logs", "-f", "-n", "1", &g.name]);
    cmd.stdout(std::fs::File::create(&followed).unwrap());
    cmd.stderr(Stdio::piped());
    let follower = KillOnDrop(Some(cmd.spawn().unwrap()));
    let printed = |s: &str| std::fs::read_to_string(&followed).is_ok_and(|l| l.contains(s));
    assert!(super::harness::within_30s(|| printed("three")));
    std::fs::write(g.mounted_root().join("go"), "").unwrap();
    assert!(super::harness::within_30s(|| wrote("tock")));
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    let out = super::harness::wait_bounded(follower, Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read_to_string(&followed).unwrap();
    assert_eq!(got, "three\ntick\ntock\n");

    // Restart: a stopped guest is started; a running one stopped first.
    std::fs::remove_file(g.t.root().join("go")).unwrap();
    let o = ok(&g.unifs(&["restart", &g.name]));
    assert!(
        !o.contains("stopped") && o.contains("started, init pid"),
        "{o}"
    );
    let pid = |o: &str| o.trim().rsplit(' ').next().unwrap().to_string();
    let second = pid(&o);
    assert_ne!(second, pid(&first));
    assert!(super::harness::within_30s(|| {
        std::fs::read_to_string(&log).is_ok_and(|l| l.matches("three").count() == 2)
    }));
    let o = ok(&g.unifs(&["restart", "--timeout", "0", &g.name]));
    assert!(o.contains(&format!("guest {} stopped", g.name)), "{o}");
    let third = pid(&o);
    assert_ne!(third, second);
    assert!(!alive(second.parse().unwrap()));

    // A config the start would refuse leaves the guest running: restart
    // stopped it first, then failed, saying nothing of the stop.
    let config = std::fs::read_to_string(g.config()).unwrap();
    std::fs::write(g.config(), format!("{config}hostnme = \"x\"\n")).unwrap();
    let o = g.unifs(&["restart", "--timeout", "0", &g.name]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("hostnme"), "{}", stderr(&o));
    assert!(alive(third.parse().unwrap()), "restart stopped the guest");
}

#[test]
fn named_logs_follow_prints_what_init_wrote_just_before_it_ended() {
    let test = "named_logs_follow_prints_what_init_wrote_just_before_it_ended";
    if !can_run(test) || !crate::common::require_strace(test) {
        return;
    }
    // `logs -f` read to the end, then found the guest stopped and ended:
    // what init wrote in between (its last words) was never shown. Each
    // look at the record is held back 1.5 s here, so that init writes and
    // ends during one.
    let g = Guest::new(
        "lastlog",
        "[\"/bin/sh\", \"-c\", \"echo first; sleep 1; echo LAST-LINE\"]",
        false,
    );
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    assert!(super::harness::within_30s(|| {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("first"))
    }));
    let state = g.run_dir.join(&g.name).join("state.json");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=openat"]);
    cmd.args(["-e", "inject=openat:delay_exit=1500000:when=1+", "-P"]);
    cmd.arg(&state);
    cmd.arg(unifs_bin()).args(["guest", "logs", "-f", &g.name]);
    cmd.env("UNIFS_CONFIG_DIR", &g.config_dir);
    cmd.env("UNIFS_RUN_DIR", &g.run_dir);
    let out = run_bounded(cmd, Duration::from_secs(30));
    // Then, maybe, its keeper's word that it stopped the guest.
    let out = ok(&out);
    let rest = out.strip_prefix("first\nLAST-LINE\n");
    let keepers = |rest: &str| rest.lines().all(|l| l.starts_with("[unifs: "));
    assert!(rest.is_some_and(keepers), "{out}");
}

/// A named guest has a `/dev/console`, a pty of its own devpts whose
/// output its keeper appends to the console log, as systemd and sysvinit
/// write their boot and shutdown there (a guest had none: `guest logs`
/// stayed empty for them). Its "\r\n" become lines; a large write does not
/// block; the keeper does not spin while nothing is written.
#[test]
fn s29_named_guest_console_reaches_guest_logs() {
    if !can_run("s29_named_guest_console_reaches_guest_logs") {
        return;
    }
    let g = Guest::new("console", "[\"/bin/sh\", \"/start.sh\"]", false);
    std::fs::write(
        g.t.root().join("start.sh"),
        "echo out\nprintf 'booting\\r\\nup\\n' > /dev/console\nexec sleep 1000\n",
    )
    .unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run_dir.join(&g.name).join("console.log");
    let wrote = |s: &str| std::fs::read_to_string(&log).is_ok_and(|l| l.contains(s));
    assert!(
        super::harness::within_30s(|| wrote("up\n")),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    assert_eq!(ok(&g.unifs(&["logs", &g.name])), "out\nbooting\nup\n");

    let seen = ok(&g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/sh",
        "-c",
        "stat -c '%F %a %u' /dev/console; readlink /proc/self/fd/1 >/dev/null; \
         ls /dev/pts | tr '\\n' ' '",
    ]));
    assert_eq!(seen, "character special file 600 0\n0 ptmx ", "{seen}");

    // The keeper idles while the console is quiet.
    let pid = g.state()["pid"].as_i64().unwrap();
    let keeper: u32 = crate::common::proc_stat(pid as u32)[1].parse().unwrap();
    let before = crate::common::cpu_ticks(keeper);
    std::thread::sleep(Duration::from_millis(1500));
    let used = crate::common::cpu_ticks(keeper) - before;
    assert!(
        used <= 5,
        "the keeper used {used} ticks in 1.5 s of a quiet console"
    );

    // 300 KB at once, far more than a pty holds: relayed, not blocked.
    let big = "head -c 300000 /dev/zero | tr '\\0' x > /dev/console; echo done";
    assert_eq!(
        ok(&g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", big])),
        "done\n"
    );
    let xs = |l: &str| l.bytes().filter(|&b| b == b'x').count();
    assert!(super::harness::within_30s(
        || std::fs::read_to_string(&log).is_ok_and(|l| xs(&l) == 300_000)
    ));
}
