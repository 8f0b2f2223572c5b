//! Session 29, scale: work that grew faster than the number of guests.

use crate::common::{require_root, require_strace, unifs_bin};
use crate::guest::harness::run_bounded;
use std::process::Command;
use std::time::Duration;

/// How many times `unifs ARGS` opened /proc/self/mountinfo (strace).
fn mountinfo_reads(args: &[&std::ffi::OsStr], dir: &std::path::Path) -> usize {
    let log = dir.join("strace.log");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-e", "trace=open,openat", "-o"])
        .arg(&log)
        .arg(unifs_bin())
        .args(args);
    let out = run_bounded(c, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    text.lines()
        .filter(|l| l.contains("\"/proc/self/mountinfo\""))
        .count()
}

/// `guest list` read the host's mount table three times for each guest
/// (cgroup hierarchies, and two checks of its root for a stalled FUSE
/// mount), so with N guests running (each adds its root's mount) a list
/// cost N x N lines: 100 configs and 1,000 mounts took a second. It now
/// reads the table once for the whole list, whatever the number of guests.
#[test]
fn guest_list_reads_the_mount_table_a_bounded_number_of_times() {
    if !require_root("guest_list_reads_the_mount_table_a_bounded_number_of_times")
        || !require_strace("guest_list_reads_the_mount_table_a_bounded_number_of_times")
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (cfg, run, roots) = (
        t.path().join("cfg"),
        t.path().join("run"),
        t.path().join("g"),
    );
    for d in [&cfg, &run, &roots] {
        std::fs::create_dir(d).unwrap();
    }
    let count = |n: usize| {
        for i in 0..n {
            let root = roots.join(format!("g{i}"));
            std::fs::create_dir_all(&root).unwrap();
            let toml = format!("root = {:?}\ninit = [\"/bin/true\"]\n", root);
            std::fs::write(cfg.join(format!("g{i}.toml")), toml).unwrap();
        }
        let args = [
            "guest".as_ref(),
            "list".as_ref(),
            "--config-dir".as_ref(),
            cfg.as_os_str(),
            "--run-dir".as_ref(),
            run.as_os_str(),
        ];
        mountinfo_reads(&args, t.path())
    };
    let (few, many) = (count(2), count(20));
    assert!(
        many <= few && many <= 3,
        "guest list read /proc/self/mountinfo {few} times for 2 guests, {many} for 20"
    );
}
