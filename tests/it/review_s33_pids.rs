//! Thirty-third session: `unifs mount` under a limit on tasks (the pids
//! cgroup it runs in: a systemd unit's TasksMax=, a container's). The
//! daemon starts a FUSE thread each, a signal and a readiness thread and a
//! probe's child; where one could not start it ended with "died before
//! the mount was ready (exit status 1)" (its error went to no log) or a
//! bare "Resource temporarily unavailable", and a `guest start` whose
//! overlay daemon ended so said only "see its log". Each now names the
//! limit it met.

use crate::fs::harness::{is_mounted, wait_until, UnmountAt, World};
use crate::guest::harness::{wait_bounded, KillOnDrop};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A v1 pids group of a test's own, removed (once what ran in it has
/// ended) even when the test fails.
pub(crate) struct PidsGroup(pub(crate) std::path::PathBuf);

impl PidsGroup {
    /// Runs `cmd` (bounded) in this group with a limit of `max` tasks, which
    /// it joins first, before it runs anything of unifs's.
    pub(crate) fn run(&self, max: u32, cmd: Command) -> std::process::Output {
        let (child, procs) = self.spawn(max, cmd);
        let o = wait_bounded(child, Duration::from_secs(60));
        drop(procs);
        o
    }

    /// Spawns `cmd` (stdout and stderr piped) in this group with a limit of
    /// `max` tasks, which it joins first; the file returned is to be kept
    /// open until it has started.
    pub(crate) fn spawn(&self, max: u32, mut cmd: Command) -> (KillOnDrop, std::fs::File) {
        std::fs::write(self.0.join("pids.max"), max.to_string()).unwrap();
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.0.join("cgroup.procs"))
            .unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&procs);
        // SAFETY: one write(2) to an fd opened before the fork, which
        // `procs` keeps open past the spawn.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                match libc::write(fd, b"0".as_ptr().cast(), 1) {
                    1 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        (KillOnDrop(Some(cmd.spawn().unwrap())), procs)
    }
}

impl PidsGroup {
    /// `unifs --store STORE mount GUEST MP` in this group, under `max`.
    pub(crate) fn mount(
        &self,
        max: u32,
        store: &std::path::Path,
        guest: &std::path::Path,
        mp: &std::path::Path,
    ) -> std::process::Output {
        let mut mount = Command::new(crate::common::unifs_bin());
        mount
            .arg("--store")
            .arg(store)
            .arg("mount")
            .arg(guest)
            .arg(mp);
        self.run(max, mount)
    }
}

/// `unifs umount MP`, which must succeed, and the mount gone (bounded).
pub(crate) fn unmount(mp: &std::path::Path) {
    let u = Command::new(crate::common::unifs_bin())
        .arg("umount")
        .arg(mp)
        .output()
        .unwrap();
    assert!(u.status.success(), "{}", String::from_utf8_lossy(&u.stderr));
    assert!(wait_until(Duration::from_secs(30), || !is_mounted(mp)));
}

impl Drop for PidsGroup {
    fn drop(&mut self) {
        wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.0).is_ok() || !self.0.exists()
        });
    }
}

/// Limits of 1 to 14 tasks: each mount that fails names the pids group's
/// limit (pids.max) and leaves nothing mounted; the larger ones mount.
#[test]
fn a_mount_under_a_pids_limit_names_the_limit_it_met() {
    let test = "a_mount_under_a_pids_limit_names_the_limit_it_met";
    if !crate::common::require_root(test) {
        return;
    }
    let Some(pids) = crate::review_s27_cgroup::v1_hierarchy(test, "pids") else {
        return;
    };
    let w = World::new();
    let guest = w.dir("guest");
    std::fs::write(guest.join("f"), b"data").unwrap();
    let mp = w.dir("mp");
    let _unmount = UnmountAt(&mp);
    let group = PidsGroup(pids.join(format!("s33-pids-{}", std::process::id())));
    std::fs::create_dir(&group.0).unwrap();
    let (mut failed, mut mounted, mut last) = (0, 0, String::new());
    for max in 1..=14 {
        let o = group.mount(max, &w.store, &guest, &mp);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if o.status.success() {
            assert_eq!(
                std::fs::read(mp.join("f")).unwrap(),
                b"data",
                "pids.max {max}"
            );
            unmount(&mp);
            mounted += 1;
            continue;
        }
        failed += 1;
        assert!(!is_mounted(&mp), "pids.max {max}: left mounted: {err}");
        assert!(
            err.contains(&format!("allows {max} tasks")) && err.contains("pids.max"),
            "pids.max {max}: the error does not name the limit: {err}"
        );
        last = err;
    }
    assert!(
        failed >= 3 && mounted >= 1,
        "{failed} failed, {mounted} mounted; the last: {last}"
    );
}
