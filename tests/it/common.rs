//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The unifs binary built for these tests.
pub fn unifs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_unifs"))
}

/// Says why `test` is skipped on this machine (`why`: the tool, file or
/// kernel feature it lacks). Under CI (`CI` set) it fails instead: CI's
/// machine has all of them (.ci/run installs the packages), and a skip
/// there would count a test that never ran as passed.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why}, and CI must not skip it"
    );
    eprintln!("skipping {test}: {why}");
}

/// True when running as root; privileged tests need it. Outside CI a test
/// without it skips with a reason; under CI (`CI` set) it fails instead.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(test, "needs root");
    false
}

/// Whether strace is there (.ci/run installs it, for the fault-injection
/// tests); outside CI a test without it skips with a reason, under CI it
/// fails.
pub fn require_strace(test: &str) -> bool {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok()
    {
        return true;
    }
    skip(test, "needs strace");
    false
}

/// `mkfs.KIND ARGS` on a sparse image of `size` bytes in a new temp dir,
/// loop-mounted at its `fs` (the loop device autoclears on unmount). The
/// caller's guard unmounts it.
pub fn mounted_image(kind: &str, size: u64, mkfs_args: &[&str]) -> tempfile::TempDir {
    use std::process::Command;
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("img");
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let mkfs = Command::new(format!("mkfs.{kind}"))
        .args(mkfs_args)
        .arg(&img)
        .output()
        .unwrap_or_else(|e| panic!("mkfs.{kind}: {e} (Debian: e2fsprogs, xfsprogs, btrfs-progs)"));
    assert!(mkfs.status.success(), "{}", stderr(&mkfs));
    std::fs::create_dir(dir.path().join("fs")).unwrap();
    let mount = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(dir.path().join("fs"))
        .output()
        .unwrap();
    assert!(mount.status.success(), "{}", stderr(&mount));
    dir
}

/// The fields of /proc/PID/stat after the command name: `state` is [0],
/// `ppid` [1], `utime` and `stime` [11] and [12], `starttime` [19]
/// (proc(5)'s field N is [N - 3]).
pub fn proc_stat(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split_whitespace().map(String::from).collect()
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let f = proc_stat(pid);
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `cmd` run through `wrapper` (`unshare ARGS`, `setpriv ARGS --`): the
/// wrapper's arguments, then `cmd`'s program and arguments, with `cmd`'s
/// environment and working directory.
pub fn wrapped(wrapper: &[&str], cmd: &std::process::Command) -> std::process::Command {
    let mut outer = std::process::Command::new(wrapper[0]);
    outer
        .args(&wrapper[1..])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => outer.env(k, v),
            None => outer.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        outer.current_dir(dir);
    }
    outer
}
