//! Review s40 (devrev2) of the device policy: a guest given `sys_admin`
//! that mounts the v1 devices hierarchy (its root is the guest's leaf)
//! cannot allow itself every device again: the group above the leaf has
//! the policy too, and the kernel
//! lets a group allow only what its parent allows.

use crate::guest::harness::{can_run, groups, ok, stderr, stdout, TestRoot};
use crate::guest::named::Guest;
use crate::review_s39_devices::has_devices_cgroup;
use crate::review_s40_devpolicy::{read_host_nodes, Loop, SECRET};

/// Whether `test` can run: as root, on a host with the devices controller.
pub(crate) fn can_test(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    if !has_devices_cgroup() {
        crate::common::skip(test, "needs the cgroup v1 devices controller");
        return false;
    }
    true
}

/// With `--cap-add sys_admin --cap-add mknod` the guest mounts the devices
/// hierarchy, tries to allow itself everything (`a`), then reads the host's
/// disk through a node it makes. Before: `a` was taken (the group above
/// allowed all), and it read the disk's content.
#[test]
fn s40_sys_admin_guest_cannot_lift_its_device_policy() {
    let test = "s40_sys_admin_guest_cannot_lift_its_device_policy";
    if !can_test(test) {
        return;
    }
    let Some(disk) = Loop::new(SECRET.as_bytes()) else {
        crate::common::skip(test, "needs a loop device (losetup, the loop module)");
        return;
    };
    let t = TestRoot::new();
    let script = format!(
        "mkdir /tmp/c && mount -t cgroup -o devices none /tmp/c && echo mounted; \
         echo a > /tmp/c/devices.allow && echo lifted; \
         echo 'b *:* rwm' > /tmp/c/devices.allow && echo lifted-b; \
         grep -c . /tmp/c/devices.list; umount /tmp/c; {}",
        read_host_nodes(&disk)
    );
    let o = t.sh(&["--cap-add", "sys_admin", "--cap-add", "mknod"], &script);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("mounted") && out.contains("end"), "{out}{err}");
    assert!(
        !out.contains("lifted"),
        "the guest lifted its policy: {out}"
    );
    assert!(
        !out.contains(SECRET),
        "the guest read the host's disk: {out}"
    );
}

/// The guest's group in the devices hierarchy, for `g`, once started.
pub(crate) fn devices_group(g: &Guest) -> std::path::PathBuf {
    groups(&g.name, &g.run_dir)
        .into_iter()
        .find(|p| p.starts_with("/sys/fs/cgroup/devices"))
        .expect("a devices group")
}

/// A start after a crash that left the guest's leaf with an empty group
/// below it (the guest's own, made through its cgroup mount): the empty
/// groups go, and the policy is set on the group and its leaf. Before:
/// the start failed ("it has groups below it").
#[test]
fn s40_start_over_a_leftover_leaf_with_a_group_below_it() {
    let test = "s40_start_over_a_leftover_leaf_with_a_group_below_it";
    if !can_test(test) {
        return;
    }
    let g = Guest::new("s40left", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    let group = devices_group(&g);
    std::fs::create_dir_all(group.join("guest/s40-own")).unwrap();
    let o = g.unifs(&["start", &g.name]);
    let listed = std::fs::read_to_string(group.join("devices.list")).unwrap_or_default();
    // Before the asserts: a failed start leaves them to the Guest's drop.
    let _ = std::fs::remove_dir(group.join("guest/s40-own"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!listed.contains("a *:* rwm"), "{listed}");
    // Not /dev/fuse either: the overlay daemon is outside this hierarchy (s41).
    assert!(
        listed.contains("c 1:3 rwm") && !listed.contains("10:229"),
        "{listed}"
    );
}
