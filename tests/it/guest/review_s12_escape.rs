//! Review s12: guest isolation, tested as an attacker inside a guest (root
//! with the default capabilities) reaching for host state: here the host's
//! cgroups, through a cgroup mount in a user namespace of its own (there
//! is no seccomp filter: docs/security.md).

use super::escape::cc_into;
use super::harness::{can_run, stderr, stdout, wait_bounded, KillOnDrop, TestRoot};
use crate::common::unifs_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Builds a static helper into the guest; under CI a missing compiler is a
/// failure (.ci/run installs gcc and libc6-dev), elsewhere a skip.
fn helper(t: &TestRoot, test: &str, name: &str, src: &str) -> bool {
    if cc_into(t, name, src) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs cc -static (gcc, libc6-dev), and CI must not skip it");
    }
    eprintln!("skipping {test}: needs cc -static");
    false
}

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

/// The cgroup v2 hierarchy's mount point, if the host has one.
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mount = left.split(' ').nth(4)?;
        (right.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(mount))
    })
}

/// A v2 group of the test's own, standing for the host's group `unifs run`
/// is started in (an operator's login session, a service): killed and
/// removed (with any group below it) on drop.
struct HostGroup(PathBuf);

impl HostGroup {
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
    let Some(v2) = cgroup2_mount() else {
        eprintln!("skipping {test}: no cgroup v2 hierarchy");
        return;
    };
    let t = TestRoot::new();
    if !helper(&t, test, "cgwrite", CGROUP_WRITER) {
        return;
    }
    let group = HostGroup::new(&v2, "s12-kill");
    if !group.0.join("cgroup.kill").exists() {
        eprintln!("skipping {test}: no cgroup.kill (Linux < 5.14)");
        return;
    }
    // A host process in the launcher's group: the operator's shell.
    let mut neighbour = group.command(&["sleep", "30"]);
    neighbour.stdin(Stdio::null()).stdout(Stdio::null());
    let mut neighbour = KillOnDrop(Some(neighbour.spawn().unwrap()));
    let pid = neighbour.0.as_ref().unwrap().id().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !group.procs().lines().any(|l| l == pid) {
        assert!(Instant::now() < deadline, "the neighbour did not join");
        std::thread::sleep(Duration::from_millis(10));
    }
    let root = t.root();
    let bin = unifs_bin();
    let mut run = group.command(&[
        bin.to_str().unwrap(),
        "run",
        "--root-mount",
        "bind",
        "--root",
        root.to_str().unwrap(),
        "--",
        "/bin/cgwrite",
        "cgroup.kill",
        "1",
    ]);
    run.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_bounded(
        KillOnDrop(Some(run.spawn().unwrap())),
        Duration::from_secs(30),
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
