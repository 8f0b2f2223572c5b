//! Review s38 (pid1): contrib/systemd's units under a real systemd PID 1
//! (tests/manual/systemd-pid1.sh boots a Debian root with `systemd-nspawn
//! -b`; too slow for CI). What it found that runs without systemd is here.

use crate::common::unifs_bin;
use crate::fs::harness::UnmountAt;
use crate::guest::harness::{can_run, run_bounded, stderr};
use crate::guest::named::Guest;
use std::process::Command;
use std::time::Duration;

/// A guest whose tree another unifs mount serves (the mount unit's, enabled
/// with the guest's unit) failed to start with only "`unifs mount` exited
/// with exit status: 1" in the unit's journal: `unifs mount` said why on
/// its stderr, which journald files under the cgroup it runs in (the
/// guest's), not the unit's, and its log said nothing. Now the log has it
/// and `start`'s error ends with the log's last line.
#[test]
fn s38_a_start_whose_root_mount_fails_says_why() {
    let test = "s38_a_start_whose_root_mount_fails_says_why";
    if !can_run(test) {
        return;
    }
    let g = Guest::new("s38mnt", "[\"/bin/sleep\", \"1000\"]", false);
    let mp = g.t.dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let _unmount = UnmountAt(&mp);
    let mut mount = Command::new(unifs_bin());
    mount.arg("mount").arg(g.t.root()).arg(&mp);
    let o = run_bounded(mount, Duration::from_secs(30));
    assert!(o.status.success(), "{}", stderr(&o));

    let o = g.unifs(&["start", &g.name]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("`unifs mount` exited with"), "{err}");
    assert!(err.contains("mount.log ends:"), "{err}");
    assert!(
        err.contains("already served by another unifs mount"),
        "{err}"
    );
}
