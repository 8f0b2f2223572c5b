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
    let _stop = Stop(&t);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("rel.toml"), "{err}");
    assert!(err.contains("absolute"), "{err}");
}

/// Stops the guest `rel` if a failing test started it.
struct Stop<'a>(&'a TestRoot);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = guest(
            self.0,
            self.0.dir.path(),
            &["stop", "--timeout", "0", "rel"],
        );
    }
}
