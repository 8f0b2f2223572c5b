//! Review s27 (cgroups): a host whose cgroup hierarchies cannot hold a
//! guest (one not mounted, hidden under another mount, or read-only) is
//! refused before anything starts, with the command that mends it.
//!
//! The host's hierarchies are never touched: each case runs in a private
//! mount namespace of its own (`unshare -m`), where a hierarchy is
//! unmounted, covered or made read-only; it goes with the namespace.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, run_bounded, stderr, TestRoot};
use crate::guest::review_s11_life::{Guest, SLEEP};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A v1 hierarchy of `controller` mounted at /sys/fs/cgroup/CONTROLLER, or
/// a skip (these machines have one; a v2-only host has nothing to hide).
fn v1_hierarchy(test: &str, controller: &str) -> Option<PathBuf> {
    let mounts = unifs::fs::mountinfo::read().unwrap();
    let found = mounts.into_iter().find(|m| {
        m.fstype == "cgroup"
            && m.super_opts.split(',').any(|o| o == controller)
            && m.point == std::path::Path::new("/sys/fs/cgroup").join(controller)
    });
    if found.is_none() {
        eprintln!("skipping {test}: no cgroup v1 {controller} hierarchy at /sys/fs/cgroup");
    }
    found.map(|m| m.point)
}

/// Runs `setup` (sh) in a private mount namespace, then `unifs ARGS…`
/// there, with `envs`; killed after 30 s.
fn in_private_ns(setup: &str, envs: &[(&OsStr, &OsStr)], args: &[&OsStr]) -> Output {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"]);
    cmd.arg(format!("{setup} && exec \"$0\" \"$@\""));
    cmd.arg(unifs_bin()).args(args);
    cmd.envs(envs.iter().copied());
    run_bounded(cmd, Duration::from_secs(30))
}

/// `unifs run --root-mount bind` of `true` with `opts`, in a private mount
/// namespace after `setup`.
fn run_true(t: &TestRoot, setup: &str, opts: &[&str]) -> Output {
    let root = t.root();
    let mut args: Vec<&OsStr> = vec!["run".as_ref(), "--root".as_ref(), root.as_os_str()];
    args.extend(["--root-mount", "bind"].map(OsStr::new));
    args.extend(opts.iter().map(OsStr::new));
    args.extend(["--", "/bin/true"].map(OsStr::new));
    in_private_ns(setup, &[], &args)
}

/// A hierarchy hidden under a tmpfs: the groups and the limit went into
/// the tmpfs, and the run failed late with "the kernel offers none of
/// …/pids.max"; unmounted, a run without limits ran with its guest in the
/// launcher's group there. Both are now refused, naming the hierarchy and
/// how to mount it.
#[test]
fn s27_a_hierarchy_hidden_or_unmounted_is_refused_with_how_to_mount_it() {
    let test = "s27_a_hierarchy_hidden_or_unmounted_is_refused_with_how_to_mount_it";
    if !can_run(test) {
        return;
    }
    let Some(pids) = v1_hierarchy(test, "pids") else {
        return;
    };
    let t = TestRoot::new();
    let mend = format!("mount -t cgroup -o pids cgroup {}", pids.display());

    let hidden = format!("mount -t tmpfs none {}", pids.display());
    let o = run_true(&t, &hidden, &["--pids", "50"]);
    assert!(!o.status.success(), "a hidden hierarchy was used: {o:?}");
    let err = stderr(&o);
    assert!(err.contains(&mend), "{err}");
    assert!(err.contains("hierarchy pids"), "{err}");

    let unmounted = format!("umount {}", pids.display());
    let o = run_true(&t, &unmounted, &[]);
    assert!(
        !o.status.success(),
        "the guest ran in the launcher's pids group: {o:?}"
    );
    assert!(stderr(&o).contains(&mend), "{}", stderr(&o));

    // `guest start` too, before its root is mounted.
    let g = Guest::new("s27hidden", SLEEP);
    let mut cmd = g.command();
    cmd.args(["start", &g.name]);
    let envs: Vec<(&OsStr, &OsStr)> = cmd.get_envs().filter_map(|(k, v)| Some((k, v?))).collect();
    let args: Vec<&OsStr> = cmd.get_args().collect();
    let o = in_private_ns(&hidden, &envs, &args);
    assert!(!o.status.success(), "{o:?}");
    assert!(stderr(&o).contains(&mend), "{}", stderr(&o));
}

/// A read-only cgroupfs (as containers mount it): the run failed on the
/// mkdir, then waited 2 s per group and warned "could not remove cgroup"
/// for each. Now one error names the mount and `mount -o remount,rw`, at
/// once, and nothing else is said.
#[test]
fn s27_a_read_only_hierarchy_is_one_error_naming_remount_rw() {
    let test = "s27_a_read_only_hierarchy_is_one_error_naming_remount_rw";
    if !can_run(test) {
        return;
    }
    let Some(memory) = v1_hierarchy(test, "memory") else {
        return;
    };
    let t = TestRoot::new();
    // A bind remount changes this mount only, not the host's superblock.
    let ro = format!("mount -o remount,bind,ro {}", memory.display());
    let began = Instant::now();
    let o = run_true(&t, &ro, &["--memory", "64M"]);
    let took = began.elapsed();
    assert!(!o.status.success(), "{o:?}");
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line wanted:\n{err}");
    assert!(
        lines[0].contains(&format!("mount -o remount,rw {}", memory.display())),
        "{err}"
    );
    assert!(!err.contains("could not remove"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
