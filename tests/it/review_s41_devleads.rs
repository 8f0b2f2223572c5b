//! Review s41 (devleads): the device policy's loose ends. The overlay
//! daemon stays out of the devices hierarchy, so the guest's group no
//! longer allows /dev/fuse (a guest given `sys_admin` allowed it to itself);
//! a daemon left in that hierarchy's `mount` leaf no longer fails a start;
//! a node the host's own group denies is said once, naming the guest; and
//! `guest update` reports a config's device that does not parse.

use crate::guest::harness::{
    can_run, ok, remove_dirs, run_bounded, stderr, stdout, KillOnDrop, TestRoot,
};
use crate::guest::named::Guest;
use crate::review_s40_devrev2::{can_test, devices_group};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The devices hierarchy's mount point.
const DEVICES: &str = "/sys/fs/cgroup/devices";

/// With `--cap-add sys_admin --cap-add mknod` the guest mounts the devices
/// hierarchy (its root is its leaf), allows itself /dev/fuse there, makes
/// a node of it and opens it; its root, on the overlay, is still served.
/// Before: the allow was taken (the group above allowed /dev/fuse for the
/// daemon in its other leaf) and the node opened.
#[test]
fn s41_sys_admin_guest_cannot_allow_itself_dev_fuse() {
    let test = "s41_sys_admin_guest_cannot_allow_itself_dev_fuse";
    if !can_test(test) {
        return;
    }
    let t = TestRoot::new();
    let script = "mkdir /tmp/c && mount -t cgroup -o devices none /tmp/c && echo mounted; \
                  echo 'c 10:229 rwm' > /tmp/c/devices.allow && echo allowed-fuse; \
                  umount /tmp/c; mknod /dev/s41fuse c 10 229 && echo made; \
                  true 3<>/dev/s41fuse && echo opened-fuse; echo end";
    let o = t.sh(&["--cap-add", "sys_admin", "--cap-add", "mknod"], script);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        out.contains("mounted") && out.contains("made") && out.contains("end"),
        "{out}{err}"
    );
    assert!(!out.contains("allowed-fuse"), "{out}{err}");
    assert!(!out.contains("opened-fuse"), "{out}{err}");
}

/// The devices line of `pid`'s /proc/PID/cgroup: its group there.
fn devices_group_of(pid: u32) -> String {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    groups
        .lines()
        .find_map(|l| l.split_once(":devices:").map(|(_, g)| g.to_string()))
        .unwrap_or_default()
}

/// A process in the guest's devices `mount` leaf (an overlay daemon an
/// older build put there and that outlived its mount) no longer fails the
/// start: it is moved up to `unifs/`, and the new daemon is not there.
/// Before: "denying the guest every device but its own: … it has groups
/// below it … with processes in them".
#[test]
fn s41_a_process_left_in_the_devices_mount_leaf_does_not_fail_the_start() {
    let test = "s41_a_process_left_in_the_devices_mount_leaf_does_not_fail_the_start";
    if !can_test(test) {
        return;
    }
    let g = Guest::new("s41leaf", "[\"/bin/sleep\", \"1000\"]", true);
    // Its run dir, which names its groups, is made by the first start.
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    let group = devices_group(&g);
    std::fs::create_dir_all(group.join("mount")).unwrap();
    let stale = Stale {
        proc: KillOnDrop(Some(Command::new("sleep").arg("1000").spawn().unwrap())),
        leaf: group.join("mount"),
    };
    let pid = stale.proc.0.as_ref().unwrap().id();
    std::fs::write(group.join("mount/cgroup.procs"), pid.to_string()).unwrap();
    let o = g.unifs(&["start", &g.name]);
    let moved_to = devices_group_of(pid);
    let listed = std::fs::read_to_string(group.join("devices.list")).unwrap_or_default();
    let daemon_leaf = group.join("mount").is_dir();
    drop(stale);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(moved_to, "/unifs", "not moved up: {}", stderr(&o));
    assert!(
        !listed.contains("a *:*") && !listed.contains("10:229"),
        "{listed}"
    );
    assert!(!daemon_leaf, "the daemon joined the devices hierarchy");
    // The guest works: its root is served.
    ok(&g.unifs(&["exec", &g.name, "--", "/bin/true"]));
}

/// A process put in a guest's devices `mount` leaf: killed, and the leaf
/// removed, also when the test fails (the guest's stop then removes its
/// group).
struct Stale {
    proc: KillOnDrop,
    leaf: PathBuf,
}

impl Drop for Stale {
    fn drop(&mut self) {
        if let Some(c) = self.proc.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir(&self.leaf);
    }
}

/// Removes the group made for [`s41_a_node_the_host_denies_is_said_once_naming_the_guest`]
/// and what unifs made in it, also when the test fails.
struct HostGroup(PathBuf);

impl Drop for HostGroup {
    fn drop(&mut self) {
        remove_dirs(&self.0);
    }
}

/// unifs in a container whose devices group denies opening /dev/full: the run goes
/// on without it and says so once, naming the guest and the node. The
/// container is made here: a devices group denying `c 1:7 rw`, and a cgroup
/// and mount namespace whose devices hierarchy is mounted at that group
/// (over a tmpfs: the kernel refuses a hierarchy over its own mount).
/// Before: two warnings ("\"c 1:7 rwm\" in …/devices.allow: Operation not
/// permitted"), one for the group and one for its leaf, naming neither.
#[test]
fn s41_a_node_the_host_denies_is_said_once_naming_the_guest() {
    let test = "s41_a_node_the_host_denies_is_said_once_naming_the_guest";
    if !can_test(test) {
        return;
    }
    let host = HostGroup(Path::new(DEVICES).join(format!("s41-host-{}", std::process::id())));
    std::fs::create_dir(&host.0).unwrap();
    // Reads and writes, as Docker's group: `m` of any node it allows.
    std::fs::write(host.0.join("devices.deny"), "c 1:7 rw").unwrap();
    let t = TestRoot::new();
    let inner = format!(
        "mount -t tmpfs none {DEVICES} && mount -t cgroup -o devices none {DEVICES} && exec {} run --root {} -- /bin/sh -c \
         'echo x > /dev/full || echo no-full; echo x > /dev/null && echo null'",
        crate::common::unifs_bin().display(),
        t.root().display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec unshare --mount --cgroup --propagation private \
             /bin/sh -c \"$0\"",
            host.0.display()
        ))
        .arg(&inner);
    let o = run_bounded(cmd, Duration::from_secs(60));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        out.contains("null") && out.contains("no-full"),
        "{out}{err}"
    );
    let said: Vec<&str> = err.lines().filter(|l| l.contains("1:7")).collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].contains("guest run-") && said[0].contains("/dev/full"),
        "{err}"
    );
}

/// `guest update` with a config whose devices do not parse (a node missing
/// on this host) reports that, naming the config, not "devices differ".
/// Before: "the devices of CONFIG differ from the running guest's".
#[test]
fn s41_update_reports_a_config_device_that_does_not_parse() {
    let test = "s41_update_reports_a_config_device_that_does_not_parse";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s41upd", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let config = std::fs::read_to_string(g.config()).unwrap();
    let broken = config.replacen("[limits]", "devices = [\"/dev/no-such-s41\"]\n[limits]", 1);
    std::fs::write(g.config(), broken).unwrap();
    let o = g.unifs(&["update", &g.name, "--pids", "90"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("differ"), "{err}");
    assert!(
        err.contains("/dev/no-such-s41 does not exist")
            && err.contains(&g.config().display().to_string()),
        "{err}"
    );
}

/// A guest an older build started keeps its device policy until restarted:
/// `guest status` says so. Made here as the s40 build left it, its group
/// allowing /dev/fuse; a restart sets this build's. Before: nothing said.
#[test]
fn s41_status_says_a_guest_runs_with_an_older_device_policy() {
    let test = "s41_status_says_a_guest_runs_with_an_older_device_policy";
    if !can_test(test) {
        return;
    }
    let g = Guest::new("s41old", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["status", &g.name]);
    assert!(!stderr(&o).contains("older unifs"), "{}", stderr(&o));
    std::fs::write(devices_group(&g).join("devices.allow"), "c 10:229 rwm").unwrap();
    let o = g.unifs(&["status", &g.name]);
    let err = stderr(&o);
    assert!(
        err.contains("older unifs") && err.contains("/dev/fuse") && err.contains("restart"),
        "{err}"
    );
    ok(&g.unifs(&["restart", "--timeout", "0", &g.name]));
    let o = g.unifs(&["status", &g.name]);
    assert!(!stderr(&o).contains("older unifs"), "{}", stderr(&o));
}
