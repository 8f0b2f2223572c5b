//! Session 31: a mount daemon killed while it served its own readiness
//! probe.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::fs::harness::World;
use crate::guest::harness::{run_bounded, stderr};
use crate::tree::{file, unify_json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Frees a mount whose daemon is a zombie held by a thread asleep in an
/// unanswerable FUSE request (what the old code left): aborts its FUSE
/// connection through a fusectl mount of its own, then unmounts it.
struct DeadMount(PathBuf);

impl Drop for DeadMount {
    fn drop(&mut self) {
        let Ok(mounts) = unifs::fs::mountinfo::read_at(Path::new("/proc/self/mountinfo")) else {
            return;
        };
        let Some(m) = mounts.iter().find(|m| m.point == self.0) else {
            return;
        };
        let minor = m.dev.split(':').nth(1).unwrap_or("").to_string();
        let ctl = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(ctl.path())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            let _ = std::fs::write(ctl.path().join(&minor).join("abort"), "1");
            let _ = Command::new("umount").arg(ctl.path()).status();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The daemon said "ready" once a statfs of its mount was answered, a
/// statfs made by a thread of its own. Killed while one of its FUSE
/// threads served that statfs (here: SIGKILL at the daemon's fstatfs of
/// the backing tree; in life, an abort on a failed allocation, the OOM
/// killer), it never ended: the kernel waits out a request already read,
/// uninterruptibly, and the waiting thread kept the daemon's /dev/fuse fds
/// open, whose closing would have ended the request. A zombie with a
/// thread in D state, its mount hung, and every later guest start spent
/// ~20 s failing to kill it. The probe is now a child process that holds
/// no fd of the daemon: the daemon ends, and `unifs mount` says so.
#[test]
fn a_daemon_killed_while_serving_its_readiness_probe_ends() {
    let test = "review_s31_a_daemon_killed_while_serving_its_readiness_probe_ends";
    if !require_root(test) || !require_strace(test) {
        return;
    }
    let w = World::new();
    let g = w.dir("g");
    file(&g, "etc/x", b"x\n", 0o644);
    let store = w.tmp.path().join("store");
    unify_json(&store, &[&g]);
    let mp = w.dir("mp");
    let _dead = DeadMount(mp.clone());
    let mut cmd = Command::new("strace");
    // strace -f returns once every process it follows has ended.
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fstatfs"])
        .args(["-e", "inject=fstatfs:signal=SIGKILL:when=1"])
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .arg("mount")
        .arg(&g)
        .arg(&mp);
    let o = run_bounded(cmd, Duration::from_secs(60));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("died before the mount was ready") && err.contains("SIGKILL"),
        "{err}"
    );
}
