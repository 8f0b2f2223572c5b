//! Review s27 (cgroups): a host whose cgroup hierarchies cannot hold a
//! guest (one not mounted, hidden under another mount, or read-only) is
//! refused before anything starts, with the command that mends it.
//!
//! And the overlay daemon serving a guest's root was left in the caller's
//! cgroup, its work for the guest outside the guest's limits: it is now in
//! `unifs/NAME/mount`, beside the guest's `unifs/NAME/guest`.
//!
//! The host's hierarchies are never touched: each case runs in a private
//! mount namespace of its own (`unshare -m`), where a hierarchy is
//! unmounted, covered or made read-only; it goes with the namespace.

use crate::common::unifs_bin;
use crate::guest::harness::{
    can_run, groups, is_mounted, ok, run_bounded, run_group, stderr, stdout, within_30s,
    KillOnDrop, TestRoot,
};
use crate::guest::review_s11_life::{Guest, SLEEP};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A v1 hierarchy of `controller` mounted at /sys/fs/cgroup/CONTROLLER, or
/// a skip (a v2-only host has nothing to hide; CI's machine has them).
pub(crate) fn v1_hierarchy(test: &str, controller: &str) -> Option<PathBuf> {
    let mounts = unifs::fs::mountinfo::read().unwrap();
    let found = mounts.into_iter().find(|m| {
        m.fstype == "cgroup"
            && m.super_opts.split(',').any(|o| o == controller)
            && m.point == std::path::Path::new("/sys/fs/cgroup").join(controller)
    });
    if found.is_none() {
        crate::common::skip(
            test,
            &format!("no cgroup v1 {controller} hierarchy at /sys/fs/cgroup"),
        );
    }
    found.map(|m| m.point)
}

/// Runs `setup` (sh) in a private mount namespace, then `unifs ARGS…`
/// there, with `envs`; killed after 30 s.
fn in_private_ns(setup: &str, envs: &[(&OsStr, &OsStr)], args: &[&OsStr]) -> Output {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"]);
    cmd.arg(format!("{setup} && exec \"$0\" \"$@\""));
    cmd.arg(unifs_bin()).args(args);
    cmd.envs(envs.iter().copied());
    run_bounded(cmd, Duration::from_secs(30))
}

/// `unifs run --root-mount bind` of `true` with `opts`, in a private mount
/// namespace after `setup`.
fn run_true(t: &TestRoot, setup: &str, opts: &[&str]) -> Output {
    let root = t.root();
    let mut args: Vec<&OsStr> = vec!["run".as_ref(), "--root".as_ref(), root.as_os_str()];
    args.extend(["--root-mount", "bind"].map(OsStr::new));
    args.extend(opts.iter().map(OsStr::new));
    args.extend(["--", "/bin/true"].map(OsStr::new));
    in_private_ns(setup, &[], &args)
}

/// A hierarchy hidden under a tmpfs: the groups and the limit went into
/// the tmpfs, and the run failed late with "the kernel offers none of
/// …/pids.max"; unmounted, a run without limits ran with its guest in the
/// launcher's group there. Both are now refused, naming the hierarchy and
/// how to mount it.
#[test]
fn s27_a_hierarchy_hidden_or_unmounted_is_refused_with_how_to_mount_it() {
    let test = "s27_a_hierarchy_hidden_or_unmounted_is_refused_with_how_to_mount_it";
    if !can_run(test) {
        return;
    }
    let Some(pids) = v1_hierarchy(test, "pids") else {
        return;
    };
    let t = TestRoot::new();
    let mend = format!("mount -t cgroup -o pids cgroup {}", pids.display());

    let hidden = format!("mount -t tmpfs none {}", pids.display());
    let o = run_true(&t, &hidden, &["--pids", "50"]);
    assert!(!o.status.success(), "a hidden hierarchy was used: {o:?}");
    let err = stderr(&o);
    assert!(err.contains(&mend), "{err}");
    assert!(err.contains("hierarchy pids"), "{err}");

    let unmounted = format!("umount {}", pids.display());
    let o = run_true(&t, &unmounted, &[]);
    assert!(
        !o.status.success(),
        "the guest ran in the launcher's pids group: {o:?}"
    );
    assert!(stderr(&o).contains(&mend), "{}", stderr(&o));

    // `guest start` too, before its root is mounted.
    let g = Guest::new("s27hidden", SLEEP);
    let mut cmd = g.command();
    cmd.args(["start", &g.name]);
    let envs: Vec<(&OsStr, &OsStr)> = cmd.get_envs().filter_map(|(k, v)| Some((k, v?))).collect();
    let args: Vec<&OsStr> = cmd.get_args().collect();
    let o = in_private_ns(&hidden, &envs, &args);
    assert!(!o.status.success(), "{o:?}");
    assert!(stderr(&o).contains(&mend), "{}", stderr(&o));
}

/// A read-only cgroupfs (as containers mount it): the run failed on the
/// mkdir, then waited 2 s per group and warned "could not remove cgroup"
/// for each. Now one error names the mount and `mount -o remount,bind,rw`, at
/// once, and nothing else is said.
#[test]
fn s27_a_read_only_hierarchy_is_one_error_naming_remount_rw() {
    let test = "s27_a_read_only_hierarchy_is_one_error_naming_remount_rw";
    if !can_run(test) {
        return;
    }
    let Some(memory) = v1_hierarchy(test, "memory") else {
        return;
    };
    let t = TestRoot::new();
    // A bind remount changes this mount only, not the host's superblock.
    let ro = format!("mount -o remount,bind,ro {}", memory.display());
    let began = Instant::now();
    let o = run_true(&t, &ro, &["--memory", "64M"]);
    let took = began.elapsed();
    assert!(!o.status.success(), "{o:?}");
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line wanted:\n{err}");
    assert!(
        lines[0].contains(&format!("mount -o remount,bind,rw {}", memory.display())),
        "{err}"
    );
    // Its 2 s wait for a removal that cannot come ended in "could not
    // remove" (above); the bound, of three processes on a loaded machine,
    // is only for a wait much longer than that.
    assert!(!err.contains("could not remove"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// The pids in `group`'s `cgroup.procs`.
fn procs(group: &Path) -> Vec<i32> {
    let text = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
    text.lines().filter_map(|l| l.parse().ok()).collect()
}

/// Whether `pid` holds /dev/fuse open (an overlay daemon).
fn holds_fuse(pid: i32) -> bool {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten();
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/fuse")))
}

/// Checks, in every one of `groups` (one per hierarchy), that the overlay
/// daemon is in `mount` below it and `guest` holds `guest_pid` but no
/// daemon; returns the daemon's pids. But the devices hierarchy's: there
/// the daemon has no leaf (it stays out, s41, so that the guest's group
/// need not allow /dev/fuse).
fn daemon_in_mount_leaf(groups: &[PathBuf], guest_pid: i32) -> Vec<i32> {
    assert!(!groups.is_empty(), "the guest has no groups");
    let mut daemon = Vec::new();
    for g in groups {
        let in_mount = procs(&g.join("mount"));
        if g.join("devices.allow").exists() {
            assert!(!g.join("mount").exists(), "{}", g.display());
        } else {
            assert!(
                in_mount.iter().any(|&p| holds_fuse(p)),
                "no overlay daemon in {}/mount (holds {in_mount:?})",
                g.display()
            );
        }
        let in_guest = procs(&g.join("guest"));
        assert!(
            in_guest.contains(&guest_pid),
            "{}: {in_guest:?}",
            g.display()
        );
        assert!(
            !in_guest.iter().any(|&p| holds_fuse(p)),
            "a daemon in {}/guest",
            g.display()
        );
        daemon.extend(in_mount);
    }
    daemon.sort_unstable();
    daemon.dedup();
    daemon
}

/// A named guest with memory and pids limits: its overlay daemon was in
/// the caller's cgroup, outside them. It is now in `unifs/NAME/mount` in
/// every hierarchy, the guest's processes in `unifs/NAME/guest`; `ps` and
/// `status` count the guest's alone; `stop` leaves no group and no mount.
#[test]
fn s27_a_named_guests_overlay_daemon_is_in_its_mount_leaf() {
    if !can_run("s27_a_named_guests_overlay_daemon_is_in_its_mount_leaf") {
        return;
    }
    let g = Guest::new("s27daemon", SLEEP);
    // Guest::new's config has `pids = 64`; a memory limit as well.
    let toml = g.config_dir().join(format!("{}.toml", g.name));
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}memory = \"256M\"\n")).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let init = g.init_pid() as i32;
    let mine: Vec<PathBuf> = groups(&g.name, g.run_dir())
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    let daemon = daemon_in_mount_leaf(&mine, init);

    let listed = ok(&g.unifs(&["ps", "--json", &g.name]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let pids: Vec<i64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert!(pids.contains(&(init as i64)), "{pids:?}");
    assert!(
        !pids.iter().any(|p| daemon.contains(&(*p as i32))),
        "ps lists the daemon {daemon:?}: {pids:?}"
    );
    let status = ok(&g.unifs(&["status", "--json", &g.name]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["processes"], 1, "{status}");

    ok(&g.unifs(&["stop", &g.name]));
    for d in &mine {
        assert!(!d.exists(), "{} is left", d.display());
    }
    assert!(!is_mounted(&g.run(&g.name).join("root")));
    assert!(
        within_30s(|| daemon.iter().all(|&p| !holds_fuse(p))),
        "the daemon {daemon:?} outlived stop"
    );
}

/// `unifs run` with a pids limit: its forked overlay daemon joins the
/// run's `mount` leaf before it serves; the groups go with the run.
#[test]
fn s27_a_runs_overlay_daemon_is_in_its_mount_leaf() {
    if !can_run("s27_a_runs_overlay_daemon_is_in_its_mount_leaf") {
        return;
    }
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.env("UNIFS_STORE", t.dir.path().join("no-store"));
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.args(["--pids", "50", "--", "/bin/sleep", "4"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let mut run = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = run.0.as_ref().unwrap().id();
    let hierarchies: Vec<PathBuf> = crate::guest::harness::cgroup_hierarchies()
        .into_iter()
        .filter(|h| h.join("unifs").is_dir())
        .collect();
    let mut mine = Vec::new();
    assert!(
        within_30s(|| {
            mine = hierarchies
                .iter()
                .filter_map(|h| run_group(h, pid))
                .collect();
            !mine.is_empty() && mine.iter().all(|g| !procs(&g.join("guest")).is_empty())
        }),
        "the run's groups never held its guest: {mine:?}"
    );
    let guest = procs(&mine[0].join("guest"))[0];
    daemon_in_mount_leaf(&mine, guest);
    let child = run.0.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    for g in &mine {
        assert!(within_30s(|| !g.exists()), "{} is left", g.display());
    }
}

/// Thaws a v1 freezer group on drop, so a failed test leaves no frozen guest.
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
    }
}

/// A guest frozen in its v1 freezer group (`docker pause`): its overlay
/// daemon, in the caller's freezer group, ran on. It is now frozen with
/// the guest (its `mount` leaf is below the group); `status` says
/// `running (frozen)` and `exec` is refused, both at once rather than
/// waiting on the frozen daemon; `stop` thaws and ends both.
#[test]
fn s27_a_frozen_guests_daemon_is_frozen_with_it_and_refused_at_once() {
    let test = "s27_a_frozen_guests_daemon_is_frozen_with_it_and_refused_at_once";
    if !can_run(test) {
        return;
    }
    let Some(freezer) = v1_hierarchy(test, "freezer") else {
        return;
    };
    let g = Guest::new("s27frozen", SLEEP);
    ok(&g.unifs(&["start", &g.name]));
    let group = groups(&g.name, g.run_dir())
        .into_iter()
        .find(|d| d.starts_with(&freezer))
        .unwrap();
    let thaw = Thaw(group.clone());
    std::fs::write(group.join("freezer.state"), "FROZEN").unwrap();
    let daemon_state = group.join("mount/freezer.state");
    assert!(
        within_30s(|| std::fs::read_to_string(&daemon_state).is_ok_and(|s| s.trim() == "FROZEN")),
        "the daemon's group is not frozen: {:?}",
        std::fs::read_to_string(&daemon_state)
    );

    let began = Instant::now();
    let status = g.unifs(&["status", &g.name]);
    assert!(stdout(&status).contains("running (frozen)"), "{status:?}");
    let o = g.unifs(&["exec", &g.name, "--", "/bin/true"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(stderr(&o).contains("is frozen"), "{}", stderr(&o));
    // "is frozen" above tells the refusal from exec's root wait; the bound
    // catches only exec waiting BUSY_ROOT_WAIT (30 s) on the frozen daemon
    // first. (Status's 1 s ROOT_ASK is too near a loaded machine's times.)
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "status and exec took {:?}",
        began.elapsed()
    );

    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    drop(thaw);
    assert!(
        within_30s(|| !group.exists()),
        "{} is left",
        group.display()
    );
    assert!(!is_mounted(&g.run(&g.name).join("root")));
}
