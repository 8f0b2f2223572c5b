//! Named guests as docs/guests.md describes them to an operator: errors that
//! name the path to fix, configs that mean the same from any directory.

use super::harness::{can_run, run_bounded, stderr, TestRoot};
use crate::common::unifs_bin;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn guest(t: &TestRoot, cwd: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("--store").arg(t.dir.path().join("store"));
    cmd.env("UNIFS_CONFIG_DIR", t.dir.path().join("config"));
    cmd.env("UNIFS_RUN_DIR", t.dir.path().join("run"));
    cmd.current_dir(cwd);
    cmd.arg("guest").args(args);
    run_bounded(cmd, Duration::from_secs(30))
}

#[test]
fn a_start_whose_init_is_missing_names_the_guest_directory() {
    if !can_run("a_start_whose_init_is_missing_names_the_guest_directory") {
        return;
    }
    let t = TestRoot::new();
    let config = t.dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    for how in ["bind", "overlay"] {
        let name = format!("noinit-{how}");
        std::fs::write(
            config.join(format!("{name}.toml")),
            format!(
                "root = {:?}\nroot_mount = {how:?}\ninit = [\"/sbin/no-such-init\"]\n",
                t.root()
            ),
        )
        .unwrap();
        let o = guest(&t, t.dir.path(), &["start", &name]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        // It named RUN_DIR/NAME/root, the mount point the failed start
        // had just removed, not where the init must be put.
        let want = format!(
            "/sbin/no-such-init: command not found in guest root {}",
            t.root().display()
        );
        assert!(stderr(&o).contains(&want), "{how}: {}", stderr(&o));
    }
}

#[test]
fn a_relative_root_in_a_guest_config_is_refused() {
    if !can_run("a_relative_root_in_a_guest_config_is_refused") {
        return;
    }
    let t = TestRoot::new();
    let config = t.dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("rel.toml"),
        "root = \"root\"\nroot_mount = \"bind\"\ninit = [\"/bin/sleep\", \"100\"]\n",
    )
    .unwrap();
    // From the config's parent, "root" is the guest; from anywhere else
    // (a systemd unit runs in /) another directory, or none: it was taken
    // from the directory the command ran in.
    let o = guest(&t, t.dir.path(), &["start", "rel"]);
    let _stop = Stop(&t, "rel");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("rel.toml"), "{err}");
    assert!(err.contains("absolute"), "{err}");
}

/// Stops a guest the test started (or, failing, may have started).
struct Stop<'a>(&'a TestRoot, &'a str);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = guest(
            self.0,
            self.0.dir.path(),
            &["stop", "--timeout", "0", self.1],
        );
    }
}

#[test]
fn a_started_guests_root_is_out_of_reach_of_host_users() {
    if !can_run("a_started_guests_root_is_out_of_reach_of_host_users") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let t = TestRoot::new();
    // A host whose path to the run dir any user may walk, as /run is.
    std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = t.dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("reach.toml"),
        format!("root = {:?}\ninit = [\"/bin/sleep\", \"1000\"]\n", t.root()),
    )
    .unwrap();
    let o = guest(&t, t.dir.path(), &["start", "reach"]);
    let _stop = Stop(&t, "reach");
    assert!(o.status.success(), "{}", stderr(&o));
    // Guest root can make a set-uid-root program; the mount (suid, as a
    // guest needs) is at RUN_DIR/NAME/root, and unifs made RUN_DIR and
    // RUN_DIR/NAME 0755: any host user could run it there, as host root.
    let o = guest(
        &t,
        t.dir.path(),
        &[
            "exec",
            "reach",
            "--",
            "/bin/sh",
            "-c",
            "cp /bin/busybox /tmp/su && chmod 4755 /tmp/su",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let su = t.dir.path().join("run/reach/root/tmp/su");
    assert!(su.exists());
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["stat", "-c", "%a"])
        .arg(&su)
        .uid(65534)
        .gid(65534);
    let o = run_bounded(cmd, Duration::from_secs(30));
    assert!(
        !o.status.success(),
        "a host user reaches {}: {}",
        su.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}
