//! Session 44 (escape): guest root as an attacker, with the default
//! capabilities, under the default syscall filter and under
//! `--syscall-filter allow-userns`, reaching for the kernel's own
//! interfaces (docs/security.md, "Tried from inside a guest"). The probe
//! only opens a kernel file for writing and closes it: a fence that failed
//! shows as an open that worked, without anything written to the host.

use crate::common::unifs_bin;
use crate::guest::escape::cc_or_skip;
use crate::guest::harness::{can_run, ok, run_bounded, TestRoot};
use std::process::Command;
use std::time::Duration;

/// `kprobe`: prints NAME=RESULT (`ok` or the errno's name) for each try:
/// kernel files opened for writing, a block device made, the fences
/// unmounted; then, in a user and mount namespace of its own (where guest
/// root holds every capability over what it makes), the fences unmounted
/// or remounted there, a new procfs, sysfs or devtmpfs, a cgroup v1
/// hierarchy with a `release_agent`, /proc bound without what covers it,
/// and the kernel files again, through a bind of /proc with its mounts.
const KPROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
static void say(const char *name, long rc) {
    printf("%s=%s\n", name, rc < 0 ? strerrorname_np(errno) : "ok");
    fflush(stdout);
}
static long opens_for_writing(const char *path) {
    int fd = open(path, O_WRONLY);
    if (fd >= 0) close(fd);
    return fd;
}
static void put(const char *path, const char *s) {
    int fd = open(path, O_WRONLY);
    if (fd >= 0) { if (write(fd, s, strlen(s)) < 0) perror(path); close(fd); }
}
static void kernel_files(void) {
    static const char *files[] = {
        "/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
        "/proc/sysrq-trigger", "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/uevent_helper", "/sys/power/state",
    };
    for (unsigned i = 0; i < sizeof files / sizeof *files; i++) {
        char name[300];
        snprintf(name, sizeof name, "write:%s", files[i]);
        say(name, opens_for_writing(files[i]));
    }
}
int main(void) {
    kernel_files();
    say("mknod_block", mknod("/tmp/disk", S_IFBLK | 0600, makedev(8, 0)));
    say("umount_proc_sys", umount2("/proc/sys", MNT_DETACH));
    say("mount_tmpfs", mount("tmpfs", "/mnt", "tmpfs", 0, NULL));
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS)) { say("unshare_user", -1); return 0; }
    say("unshare_user", 0);
    put("/proc/self/setgroups", "deny");
    put("/proc/self/uid_map", "0 0 1");
    put("/proc/self/gid_map", "0 0 1");
    say("userns:umount_proc_sys", umount2("/proc/sys", MNT_DETACH));
    say("userns:umount_sys_firmware", umount2("/sys/firmware", MNT_DETACH));
    say("userns:remount_proc_sys_rw", mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
    say("userns:remount_sys_rw", mount(NULL, "/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
    say("userns:mount_tmpfs", mount("tmpfs", "/mnt", "tmpfs", 0, NULL));
    const char *dirs[] = {"/mnt/proc", "/mnt/sys", "/mnt/cg", "/mnt/dev", "/mnt/bind", "/mnt/rbind"};
    for (unsigned i = 0; i < sizeof dirs / sizeof *dirs; i++) mkdir(dirs[i], 0755);
    say("userns:mount_proc", mount("proc", "/mnt/proc", "proc", 0, NULL));
    say("userns:mount_sysfs", mount("sysfs", "/mnt/sys", "sysfs", MS_RDONLY, NULL));
    say("userns:mount_cgroup1_release_agent",
        mount("cgroup", "/mnt/cg", "cgroup", 0, "pids,release_agent=/bin/true"));
    say("userns:mount_devtmpfs", mount("devtmpfs", "/mnt/dev", "devtmpfs", 0, NULL));
    say("userns:mknod_block", mknod("/mnt/disk", S_IFBLK | 0600, makedev(8, 0)));
    say("userns:bind_proc_alone", mount("/proc", "/mnt/bind", NULL, MS_BIND, NULL));
    say("userns:open_tree_proc_alone", syscall(SYS_open_tree, AT_FDCWD, "/proc", 1 /* OPEN_TREE_CLONE */));
    long rbind = mount("/proc", "/mnt/rbind", NULL, MS_BIND | MS_REC, NULL);
    say("userns:bind_proc_with_its_mounts", rbind);
    if (rbind == 0) {
        say("write:/mnt/rbind/sys/kernel/core_pattern",
            opens_for_writing("/mnt/rbind/sys/kernel/core_pattern"));
        say("write:/mnt/rbind/sys/vm/drop_caches",
            opens_for_writing("/mnt/rbind/sys/vm/drop_caches"));
    }
    kernel_files();
    return 0;
}
"#;

/// What may work: the user namespace itself (with `allow-userns`: else the
/// test would test nothing) and what it makes its own (a tmpfs, /proc bound
/// with every mount over it); everything else must fail.
const MAY_WORK: &[&str] = &[
    "unshare_user",
    "userns:mount_tmpfs",
    "userns:bind_proc_with_its_mounts",
];

/// A guard (every fence held before this session): found broken when
/// /proc/sys is left writable (`sys` taken out of rootfs.rs's
/// PROC_READ_ONLY), the guest opens /proc/sys/kernel/core_pattern for
/// writing, in its own namespaces and through its bind of /proc.
#[test]
fn s44_guest_root_cannot_write_kernel_files_nor_unlock_them_in_a_user_namespace() {
    let test = "s44_guest_root_cannot_write_kernel_files_nor_unlock_them_in_a_user_namespace";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    if !cc_or_skip(&t, test, "kprobe", KPROBE) {
        return;
    }
    for filter in ["default", "allow-userns"] {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run").arg("--root").arg(t.root());
        cmd.args(["--root-mount", "bind", "--syscall-filter", filter]);
        cmd.args(["--", "/bin/kprobe"]);
        let out = ok(&run_bounded(cmd, Duration::from_secs(30)));
        let results: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('=')).collect();
        let result = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
        // Files every kernel has: the probe reached them.
        assert_eq!(
            result("write:/proc/sys/kernel/core_pattern"),
            Some("EROFS"),
            "{filter}:\n{out}"
        );
        assert_eq!(
            result("write:/proc/sys/vm/drop_caches"),
            Some("EROFS"),
            "{filter}:\n{out}"
        );
        let in_userns = filter == "allow-userns";
        assert_eq!(
            result("unshare_user"),
            Some(if in_userns { "ok" } else { "EPERM" }),
            "{filter}:\n{out}"
        );
        if in_userns {
            assert_eq!(
                result("write:/mnt/rbind/sys/kernel/core_pattern"),
                Some("EROFS"),
                "through the bind of /proc:\n{out}"
            );
        }
        let got_through: Vec<&str> = results
            .iter()
            .filter(|(name, r)| *r == "ok" && !MAY_WORK.contains(name))
            .map(|(name, _)| *name)
            .collect();
        assert!(
            got_through.is_empty(),
            "{filter}: guest root got through {got_through:?}:\n{out}"
        );
    }
}
