//! Session 42, "operator": a hosting operator's week with real Debian 12
//! guests (debootstrap minbase with systemd-sysv, nginx-light,
//! openssh-server, cron), by the docs alone. What it found, reduced to
//! busybox roots.

use crate::guest::harness::{can_run, ok, stderr};
use crate::guest::named::Guest;

/// A root whose `/sbin/init` leads to a program named `systemd`, as
/// Debian's `systemd-sysv` lays it out (`/sbin/init -> /lib/systemd/systemd`):
/// unifs takes such an init for systemd by its name. The program is a
/// script that only waits.
fn systemd_like(g: &Guest) {
    let root = g.t.root();
    std::fs::create_dir_all(root.join("lib/systemd")).unwrap();
    std::fs::create_dir_all(root.join("sbin")).unwrap();
    std::fs::write(
        root.join("lib/systemd/systemd"),
        "#!/bin/sh\nexec sleep 1000\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("lib/systemd/systemd"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../lib/systemd/systemd", root.join("sbin/init")).unwrap();
}

/// `guest start`'s stderr for the guest's config with `top` (top-level
/// keys) put first, then the guest stopped again.
fn start_with(g: &Guest, top: &str) -> String {
    let config = g.config();
    let base = std::fs::read_to_string(&config).unwrap();
    let base = base
        .lines()
        .filter(|l| !l.starts_with("cap_add") && !l.starts_with("on_reboot"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, format!("{top}{base}\n")).unwrap();
    let o = g.unifs(&["start", &g.name]);
    ok(&o);
    let said = stderr(&o);
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    said
}

/// Debian's systemd in a container exits 0 when its reboot(2) is refused
/// ("Exiting container."), and guests keep no CAP_SYS_BOOT by default: a
/// `systemctl reboot` in the operator's nginx guest ran every unit's
/// shutdown and left the guest stopped, `exited 0`, where docs/guests.md
/// said the guest "runs on" and `on_reboot` promised a restart. The start
/// now says so, once, naming both ways out; a guest given `sys_boot`, or
/// set `on_reboot = "stop"`, or whose init is no systemd, hears nothing.
#[test]
fn s42_a_systemd_guest_without_sys_boot_is_told_its_reboot_stops_it() {
    if !can_run("s42_a_systemd_guest_without_sys_boot_is_told_its_reboot_stops_it") {
        return;
    }
    let g = Guest::new("s42rb", "[\"/sbin/init\"]", false);
    systemd_like(&g);

    let said = start_with(&g, "");
    assert!(
        said.contains("keeps no CAP_SYS_BOOT")
            && said.contains("systemctl reboot")
            && said.contains("cap_add = [\"sys_boot\"]"),
        "a systemd guest without sys_boot is told what its reboot does: {said}"
    );
    assert_eq!(
        said.matches("CAP_SYS_BOOT").count(),
        1,
        "said once per start: {said}"
    );

    for top in [
        "cap_add = [\"sys_boot\"]\n",
        "on_reboot = \"stop\"\n",
        "cap_add = [\"SYS_BOOT\"]\non_reboot = \"restart\"\n",
    ] {
        let said = start_with(&g, top);
        assert!(!said.contains("CAP_SYS_BOOT"), "{top}: {said}");
    }

    // An init that is no systemd (busybox's sleep) is not warned about.
    std::fs::remove_file(g.t.root().join("sbin/init")).unwrap();
    std::os::unix::fs::symlink("../bin/sleep", g.t.root().join("sbin/init")).unwrap();
    let config = g.config();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[\"/sbin/init\"]", "[\"/sbin/init\", \"1000\"]"),
    )
    .unwrap();
    let said = start_with(&g, "");
    assert!(!said.contains("CAP_SYS_BOOT"), "{said}");
}

/// The operator's `guest update --memory 8M` of the nginx guest: the OOM
/// killer took its init, then its overlay daemon (score 0, though
/// docs/guests.md has it at -999), then journald; systemd-sysusers said
/// `Transport endpoint is not connected`. unifs lowers the daemon's score
/// only with CAP_SYS_RESOURCE, which this machine's root lacks, and said
/// nothing of it. A start with a memory limit, without that capability,
/// now says so; without a limit it has nothing to say.
#[test]
fn s42_a_start_that_cannot_shield_its_daemon_from_the_oom_killer_says_so() {
    if !can_run("s42_a_start_that_cannot_shield_its_daemon_from_the_oom_killer_says_so") {
        return;
    }
    let g = Guest::new("s42oom", "[\"/bin/sleep\", \"1000\"]", false);
    let config = g.config();
    let base = std::fs::read_to_string(&config).unwrap();
    // Without CAP_SYS_RESOURCE, as root in a container or a unit's
    // CapabilityBoundingSet= has it: `guest start` does not need it.
    let start = || {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--bounding-set", "-sys_resource"]);
        cmd.arg(crate::common::unifs_bin());
        cmd.env("UNIFS_CONFIG_DIR", config.parent().unwrap());
        cmd.env("UNIFS_RUN_DIR", &g.run_dir);
        cmd.args(["guest", "start", &g.name]);
        let o = crate::guest::harness::run_bounded(cmd, std::time::Duration::from_secs(30));
        ok(&o);
        let said = stderr(&o);
        ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
        said
    };

    std::fs::write(
        &config,
        base.replace("pids = 64", "pids = 64\nmemory = \"256M\""),
    )
    .unwrap();
    let said = start();
    assert!(
        said.contains("lacks CAP_SYS_RESOURCE") && said.contains("OOM"),
        "a memory limit without CAP_SYS_RESOURCE is told: {said}"
    );

    std::fs::write(&config, &base).unwrap();
    let said = start();
    assert!(
        !said.contains("CAP_SYS_RESOURCE"),
        "no memory limit: {said}"
    );
}
