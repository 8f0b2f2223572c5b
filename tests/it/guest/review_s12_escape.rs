//! Review s12: guest isolation, tested as an attacker inside a guest (root
//! with the default capabilities) reaching for host state: here the host's
//! cgroups, through a cgroup mount in a user namespace of its own. The
//! default syscall filter refuses user namespaces; these guests run with
//! `allow-userns`, so the fences beneath the filter are what is tested.

use super::escape::cc_or_skip;
use super::harness::{can_run, cgroup2_mount, stderr, stdout, wait_bounded, KillOnDrop, TestRoot};
use crate::common::unifs_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `cgwrite FILE VALUE`: in a user, mount and cgroup namespace of its own,
/// mounts cgroup2 on /mnt (the root of its cgroup namespace: the group it
/// is in) and writes VALUE to FILE there.
const CGROUP_WRITER: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>
static void put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd >= 0) { if (write(fd, s, strlen(s)) > 0) printf("wrote %s\n", path); close(fd); }
}
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP)) { perror("unshare"); return 0; }
    put("/proc/self/setgroups", "deny");
    put("/proc/self/uid_map", "0 0 1");
    put("/proc/self/gid_map", "0 0 1");
    if (mount("none", "/mnt", "cgroup2", 0, NULL)) { perror("mount cgroup2"); return 0; }
    char path[4096];
    snprintf(path, sizeof path, "/mnt/%s", argv[1]);
    fflush(stdout);
    put(path, argv[2]);
    fflush(stdout);
    umount2("/mnt", MNT_DETACH);
    return 0;
}
"#;

/// A v2 group of the test's own, standing for the host's group `unifs run`
/// is started in (an operator's login session, a service): killed and
/// removed (with any group below it) on drop.
struct HostGroup(PathBuf);

impl HostGroup {
    /// A group with cgroup.kill (Linux 5.14+), or `None` after saying why
    /// `test` is skipped.
    fn with_kill(test: &str, name: &str) -> Option<HostGroup> {
        if !super::harness::has_cgroup2(test) {
            return None;
        }
        let group = HostGroup::new(&cgroup2_mount()?, name);
        if !group.0.join("cgroup.kill").exists() {
            crate::common::skip(test, "no cgroup.kill (Linux < 5.14)");
            return None;
        }
        Some(group)
    }

    fn new(v2: &Path, test: &str) -> HostGroup {
        let dir = v2.join(format!("unifs-{test}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        HostGroup(dir)
    }

    /// `sh -c 'move into the group; exec ARGS'`.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0/cgroup.procs" && shift && exec "$@""#)
            .arg(&self.0)
            .arg("--")
            .args(args);
        cmd
    }

    fn procs(&self) -> String {
        std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default()
    }

    /// A host process in the group (the operator's shell), once it is in.
    fn neighbour(&self) -> KillOnDrop {
        let mut cmd = self.command(&["sleep", "30"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let neighbour = KillOnDrop(Some(cmd.spawn().unwrap()));
        let pid = neighbour.0.as_ref().unwrap().id().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.procs().lines().any(|l| l == pid) {
            assert!(Instant::now() < deadline, "the neighbour did not join");
            std::thread::sleep(Duration::from_millis(10));
        }
        neighbour
    }

    /// `unifs run --root-mount bind --root ROOT ARGS…` started from the
    /// group, to its end (30 s at most).
    fn run_guest(&self, root: &Path, args: &[&str]) -> std::process::Output {
        let bin = unifs_bin();
        let mut argv = vec![bin.to_str().unwrap(), "run", "--root-mount", "bind"];
        argv.extend(["--root", root.to_str().unwrap()]);
        argv.extend(args);
        let mut run = self.command(&argv);
        run.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        wait_bounded(
            KillOnDrop(Some(run.spawn().unwrap())),
            Duration::from_secs(30),
        )
    }
}

impl Drop for HostGroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.procs().trim().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut dirs = vec![self.0.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(e.path());
                    }
                }
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn escape_run_guest_cannot_kill_the_launchers_cgroup() {
    let test = "escape_run_guest_cannot_kill_the_launchers_cgroup";
    if !can_run(test) {
        return;
    }
    // `unifs run` without limits made no group: the guest stayed in the
    // group `unifs run` was started in and rooted its cgroup namespace
    // there. Guest root, in a user namespace of its own, mounted cgroup2
    // and so held the host's group: cgroup.kill killed every host process
    // in it (an operator's whole login session), cgroup.freeze froze them.
    let Some(group) = HostGroup::with_kill(test, "s12-kill") else {
        return;
    };
    let t = TestRoot::new();
    if !cc_or_skip(&t, test, "cgwrite", CGROUP_WRITER) {
        return;
    }
    // A host process in the launcher's group: the operator's shell.
    let mut neighbour = group.neighbour();
    let out = group.run_guest(
        &t.root(),
        &[
            "--syscall-filter",
            "allow-userns",
            "--",
            "/bin/cgwrite",
            "cgroup.kill",
            "1",
        ],
    );
    let alive = neighbour.0.as_mut().unwrap().try_wait().unwrap().is_none();
    assert!(
        alive,
        "guest root killed the host's processes in the group unifs run was started in \
         (run: {:?}, stdout: {}, stderr: {})",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `cg1write OPTS…`: in a user, mount and cgroup namespace of its own,
/// mounts each cgroup v1 hierarchy OPTS names (`freezer`, `cpu,cpuacct`,
/// `name=systemd`) on /mnt, its namespace's root there (the group it is
/// in), and writes 1 to that group's notify_on_release (a file every v1
/// group has; freezer.state or cpuset.cpus are as writable).
const CGROUP_V1_WRITER: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>
static void put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd >= 0) { if (write(fd, s, strlen(s)) > 0) printf("wrote %s\n", path); close(fd); }
}
int main(int argc, char **argv) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP)) { perror("unshare"); return 0; }
    put("/proc/self/setgroups", "deny");
    put("/proc/self/uid_map", "0 0 1");
    put("/proc/self/gid_map", "0 0 1");
    for (int i = 1; i < argc; i++) {
        if (mount("none", "/mnt", "cgroup", 0, argv[i])) { perror(argv[i]); continue; }
        printf("%s: ", argv[i]);
        put("/mnt/notify_on_release", "1");
        umount2("/mnt", MNT_DETACH);
    }
    fflush(stdout);
    return 0;
}
"#;

/// Every cgroup v1 hierarchy: its mount point and the options that name it.
fn cgroup_v1_hierarchies() -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    for m in unifs::fs::mountinfo::read().unwrap() {
        if m.fstype != "cgroup" {
            continue;
        }
        let mount = m.point;
        let opts: Vec<&str> = m
            .super_opts
            .split(',')
            .filter(|o| !["rw", "ro", "xattr", "noprefix", "clone_children"].contains(o))
            .filter(|o| !o.starts_with("release_agent="))
            .collect();
        if !found.iter().any(|(m, _)| *m == mount) {
            found.push((mount, opts.join(",")));
        }
    }
    found
}

/// Groups of the test's own in v1 hierarchies, removed on drop.
struct HostGroupsV1(Vec<PathBuf>);

impl Drop for HostGroupsV1 {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for g in &self.0 {
            loop {
                let procs = std::fs::read_to_string(g.join("cgroup.procs")).unwrap_or_default();
                for p in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if std::fs::remove_dir(g).is_ok() || !g.exists() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn escape_run_guest_cannot_write_the_launchers_v1_cgroups() {
    let test = "escape_run_guest_cannot_write_the_launchers_v1_cgroups";
    if !can_run(test) {
        return;
    }
    // On a host with cgroup v1 hierarchies, the guest got groups only where
    // a limit (or a named guest's tracking: memory, pids) put it; in every
    // other hierarchy (freezer, cpuset, cpu, devices, name=systemd, …) it
    // stayed in the launcher's group and rooted its cgroup namespace there:
    // guest root could write that host group's freezer.state, cpuset.cpus,
    // cpu.shares (v1 knows no namespace delegation).
    let hierarchies = cgroup_v1_hierarchies();
    if hierarchies.is_empty() {
        crate::common::skip(test, "no cgroup v1 hierarchy");
        return;
    }
    let t = TestRoot::new();
    if !cc_or_skip(&t, test, "cg1write", CGROUP_V1_WRITER) {
        return;
    }
    let name = format!("unifs-s12-v1-{}", std::process::id());
    let mut groups = HostGroupsV1(Vec::new());
    for (mount, _) in &hierarchies {
        let g = mount.join(&name);
        std::fs::create_dir(&g).unwrap();
        groups.0.push(g.clone());
        // A new cpuset group has no CPUs: the root's.
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(mount.join(f)) {
                std::fs::write(g.join(f), v.trim()).unwrap();
            }
        }
    }
    let joins: String = groups
        .0
        .iter()
        .map(|g| format!("echo $$ > '{}/cgroup.procs' && ", g.display()))
        .collect();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(format!("{joins}exec \"$@\"")).arg("sh");
    cmd.arg(unifs_bin())
        .args(["run", "--syscall-filter", "allow-userns"])
        .args(["--root-mount", "bind", "--root"])
        .arg(t.root())
        .args(["--", "/bin/cg1write"])
        .args(hierarchies.iter().map(|(_, o)| o));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_bounded(
        KillOnDrop(Some(cmd.spawn().unwrap())),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let written: Vec<String> = groups
        .0
        .iter()
        .filter(|g| {
            std::fs::read_to_string(g.join("notify_on_release")).is_ok_and(|v| v.trim() != "0")
        })
        .map(|g| g.display().to_string())
        .collect();
    assert!(
        written.is_empty(),
        "guest root wrote the launcher's host groups {written:?}\n{}",
        stdout(&out)
    );
}

#[test]
fn run_cap_drop_all_then_cap_add_keeps_the_added_capability() {
    let test = "run_cap_drop_all_then_cap_add_keeps_the_added_capability";
    if !can_run(test) {
        return;
    }
    // Docker's and Kubernetes' least-privilege idiom (drop ALL, add
    // NET_BIND_SERVICE) kept nothing at all: the drop was applied after the
    // add, so a root service in the guest could not bind its port.
    let t = TestRoot::new();
    let out = t.sh(
        &[
            "--root-mount",
            "bind",
            "--cap-drop",
            "all",
            "--cap-add",
            "net_bind_service",
        ],
        "grep -E '^Cap(Bnd|Eff)' /proc/self/status",
    );
    let caps = super::harness::ok(&out);
    // net_bind_service is capability 10.
    assert!(
        caps.contains("CapBnd:\t0000000000000400") && caps.contains("CapEff:\t0000000000000400"),
        "{caps}"
    );
}

#[test]
fn cap_add_all_means_what_the_host_holds_and_a_missing_one_is_named() {
    let test = "cap_add_all_means_what_the_host_holds_and_a_missing_one_is_named";
    if !can_run(test) {
        return;
    }
    // Where the host's root lacks a capability (this machine's bounding set
    // has no sys_resource), `--cap-add all` failed with a bare "setting
    // capabilities: EPERM", and so did naming the missing one.
    let t = TestRoot::new();
    let out = t.sh(
        &["--root-mount", "bind", "--cap-add", "all"],
        "grep '^CapEff' /proc/self/status",
    );
    let eff = super::harness::ok(&out);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let held = status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .unwrap();
    assert_eq!(eff.trim().trim_start_matches("CapEff:").trim(), held.trim());
    // sys_resource (24) or sys_nice (23), where this host's root lacks one.
    let held = u64::from_str_radix(held.trim(), 16).unwrap();
    let missing = [(24, "sys_resource"), (23, "sys_nice")]
        .into_iter()
        .find(|(cap, _)| held & (1 << cap) == 0);
    if let Some((_, name)) = missing {
        let out = t.sh(&["--root-mount", "bind", "--cap-add", name], "true");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(name), "{}", stderr(&out));
    }
}

/// `icebox`: in a user, mount and cgroup namespace of its own, mounts the
/// cgroup v1 freezer hierarchy (its namespace's root there: its own
/// group), moves itself into a new group `ice` below it and freezes that:
/// a frozen process does not end on SIGKILL until thawed (on v1).
const SELF_FREEZER: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
static int put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    int ok = write(fd, s, strlen(s)) > 0;
    close(fd);
    return ok ? 0 : -1;
}
int main(void) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP)) { perror("unshare"); return 1; }
    put("/proc/self/setgroups", "deny");
    put("/proc/self/uid_map", "0 0 1");
    put("/proc/self/gid_map", "0 0 1");
    if (mount("none", "/mnt", "cgroup", 0, "freezer")) { perror("mount freezer"); return 1; }
    mkdir("/mnt/ice", 0755);
    if (put("/mnt/ice/cgroup.procs", "0")) { perror("join ice"); return 1; }
    printf("freezing\n");
    fflush(stdout);
    put("/mnt/ice/freezer.state", "FROZEN");
    for (;;) pause();
}
"#;

/// The cgroup v1 freezer group of `pid`, from /proc/PID/cgroup.
fn freezer_group(pid: i64) -> Option<PathBuf> {
    let mount = cgroup_v1_hierarchies()
        .into_iter()
        .find(|(_, o)| o.split(',').any(|c| c == "freezer"))?
        .0;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, c, path) = (f.next()?, f.next()?, f.next()?);
        c.split(',')
            .any(|c| c == "freezer")
            .then(|| path.trim_start_matches('/').to_string())
    })?;
    Some(mount.join(rel))
}

/// Thaws a freezer group on drop, so a failing test leaves nothing frozen.
struct Thaw(Option<PathBuf>);

impl Drop for Thaw {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            let _ = std::fs::write(g.join("freezer.state"), "THAWED");
        }
    }
}

#[test]
fn escape_named_guest_cannot_freeze_itself_beyond_stop() {
    let test = "escape_named_guest_cannot_freeze_itself_beyond_stop";
    if !can_run(test) {
        return;
    }
    // Guest root froze its own processes with the cgroup v1 freezer (in a
    // group it made below its own): on v1 they then ignore SIGKILL, so
    // `guest stop` failed ("processes survived SIGKILL") and left the guest
    // running, its root mounted, until the operator thawed it by hand. The
    // frozen groups lie in the guest's own groups: stop thaws them.
    if !cgroup_v1_hierarchies()
        .iter()
        .any(|(_, o)| o.split(',').any(|c| c == "freezer"))
    {
        crate::common::skip(test, "no cgroup v1 freezer hierarchy");
        return;
    }
    let t = TestRoot::new();
    if !cc_or_skip(&t, test, "icebox", SELF_FREEZER) {
        return;
    }
    let config = t.dir.path().join("config");
    let run_dir = t.dir.path().join("run");
    std::fs::create_dir(&config).unwrap();
    let name = format!("s12ice{}", std::process::id());
    std::fs::write(
        config.join(format!("{name}.toml")),
        format!(
            "root = {:?}\nroot_mount = \"bind\"\ninit = [\"/bin/icebox\"]\n\
             syscall_filter = \"allow-userns\"\n",
            t.root()
        ),
    )
    .unwrap();
    let guest = |args: &[&str]| {
        let mut cmd = Command::new(unifs_bin());
        cmd.env("UNIFS_CONFIG_DIR", &config)
            .env("UNIFS_RUN_DIR", &run_dir)
            .arg("guest")
            .args(args);
        super::harness::run_bounded(cmd, Duration::from_secs(30))
    };
    let started = guest(&["start", &name]);
    // Whatever happens below: thawed, then stopped (Drop order: last first).
    struct Stop<'a>(&'a dyn Fn(&[&str]) -> std::process::Output, &'a str);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["stop", "--timeout", "0", self.1]);
        }
    }
    let _stop = Stop(&guest, &name);
    super::harness::ok(&started);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join(&name).join("state.json")).unwrap())
            .unwrap();
    let pid = state["pid"].as_i64().unwrap();
    // Wait until init sits in its frozen group.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ice = loop {
        let g = freezer_group(pid).filter(|g| g.ends_with("ice"));
        let frozen = g.as_ref().is_some_and(|g| {
            std::fs::read_to_string(g.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
        });
        if frozen {
            break g.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the guest did not freeze itself: {}",
            std::fs::read_to_string(run_dir.join(&name).join("console.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _thaw = Thaw(Some(ice));
    let stopped = guest(&["stop", "--timeout", "0", &name]);
    assert!(
        stopped.status.success(),
        "stop left a self-frozen guest running: {}",
        stderr(&stopped)
    );
    // Gone, or a zombie its host parent has yet to reap.
    let dead = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dead() {
        assert!(Instant::now() < deadline, "init {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn escape_run_guest_cannot_hand_the_operators_terminal_to_a_host_user() {
    use std::os::unix::fs::MetadataExt;
    let test = "escape_run_guest_cannot_hand_the_operators_terminal_to_a_host_user";
    if !can_run(test) {
        return;
    }
    // `unifs run` on a terminal gave the guest that terminal itself: guest
    // root (chown, fowner) made the operator's /dev/pts/N on the host
    // owned by host user 1000 and mode 0666, who could then open it and
    // read what was typed to the host's shell after the guest ended. Now
    // the guest gets a pty of its own, proxied (as nspawn, docker -t).
    let t = TestRoot::new();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave_path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
    ))
    .unwrap();
    let before = std::fs::metadata(&slave_path).unwrap();
    let mut cmd = Command::new(unifs_bin());
    cmd.args(["run", "--root-mount", "bind", "--root"])
        .arg(t.root())
        .args([
            "--",
            "/bin/sh",
            "-c",
            "chmod 666 /proc/self/fd/0 /proc/self/fd/1; chown 1000 /proc/self/fd/0 /proc/self/fd/1; \
             read line; echo \"got $line\"; exit 3",
        ]);
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    // Only the run holds the slave now: the master reads EIO once it ends.
    drop(cmd);
    drop(pty.slave);
    // What the guest reads, typed on the operator's terminal.
    let mut master = std::fs::File::from(pty.master);
    // Keeps the slave's node in /dev/pts after the reader is done.
    let _keep = master.try_clone().unwrap();
    std::io::Write::write_all(&mut master, b"hello\r").unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every slave is closed; bounded in case one stays open.
        let deadline = Instant::now() + Duration::from_secs(25);
        while Instant::now() < deadline {
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&master),
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap_or(0) == 0 {
                continue;
            }
            match std::io::Read::read(&mut master, &mut buf) {
                Ok(n) if n > 0 => all.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "unifs run did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.0 = None;
    let after = std::fs::metadata(&slave_path).unwrap();
    let shown = reader.join().unwrap();
    assert_eq!(
        (after.uid(), after.mode() & 0o7777),
        (before.uid(), before.mode() & 0o7777),
        "guest root changed the operator's terminal {}",
        slave_path.display()
    );
    // Still a terminal session: input reaches the guest, its output and
    // exit status come back.
    assert!(shown.contains("got hello"), "{shown:?}");
    assert_eq!(status.code(), Some(3), "{shown:?}");
}

#[test]
fn escape_run_guest_cannot_kill_the_launchers_group_through_its_cgroup_mount() {
    let test = "escape_run_guest_cannot_kill_the_launchers_group_through_its_cgroup_mount";
    if !can_run(test) {
        return;
    }
    // A guest with a v2 group of its own gets it mounted writable at
    // /sys/fs/cgroup (systemd needs one): cgroup.kill there must end the
    // guest alone, not the host group `unifs run` was started in.
    let Some(group) = HostGroup::with_kill(test, "s14-kill") else {
        return;
    };
    let t = TestRoot::new();
    let mut neighbour = group.neighbour();
    let out = group.run_guest(
        &t.root(),
        &[
            "--",
            "/bin/sh",
            "-c",
            "grep -q ' /sys/fs/cgroup cgroup2 rw' /proc/mounts || exit 3; \
             echo 1 > /sys/fs/cgroup/cgroup.kill || exit 5; sleep 1; exit 4",
        ],
    );
    // The write is taken. It kills the guest's processes, but not its PID 1
    // (init is immune to a SIGKILL sent from inside its PID namespace): 4.
    assert!(
        matches!(out.status.code(), Some(4 | 137)),
        "{:?}: {}",
        out.status,
        stderr(&out)
    );
    let alive = neighbour.0.as_mut().unwrap().try_wait().unwrap().is_none();
    assert!(
        alive,
        "the guest killed the host's processes in the launcher's group"
    );
}
