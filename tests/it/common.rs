//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

/// The unifs binary built for these tests.
pub fn unifs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_unifs"))
}

/// Says why `test` is skipped on this machine (`why`: the tool, file or
/// kernel feature it lacks). Under CI (`CI` set) it fails instead: CI's
/// machine has all of them (.ci/run installs the packages), and a skip
/// there would count a test that never ran as passed. The reason goes to
/// the process's stderr itself, not through `eprintln!`, which the test
/// harness captures and shows only for a test that fails: a skipped test
/// passes, and a run of the suite would not say it skipped anything.
/// Compiles the C program `source` with `cc -static` and puts it at
/// `bin/NAME` in each of `roots`; false (skipped) without `cc -static`.
pub fn static_program(test: &str, source: &str, name: &str, roots: &[&Path]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (src, bin) = (dir.path().join(format!("{name}.c")), dir.path().join(name));
    std::fs::write(&src, source).unwrap();
    let cc = std::process::Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .status();
    if !cc.is_ok_and(|s| s.success()) {
        skip(test, "needs cc -static (gcc, libc6-dev)");
        return false;
    }
    for root in roots {
        std::fs::copy(&bin, root.join("bin").join(name)).unwrap();
    }
    true
}

pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why}, and CI must not skip it"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skipping {test}: {why}");
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

/// Whether a thread of `pid` sleeps (nanosleep, clock_nanosleep) for
/// exactly `ms`: a test pause (`UNIFS_TEST_*_PAUSE_MS`) under way. Read
/// from the sleep's own request in the process's memory (as root), so the
/// few-ms sleep of a retry loop is not taken for it; a test then acts
/// inside the pause whatever the machine's load, not after a guessed delay.
pub fn sleeping_for(pid: u32, ms: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    syscalls(pid).iter().any(|f| {
        let request = match f.first() {
            Some(&libc::SYS_nanosleep) => f.get(1),
            Some(&libc::SYS_clock_nanosleep) => f.get(3),
            _ => None,
        };
        let Some(&at) = request else {
            return false;
        };
        let mut ts = [0u8; 16];
        mem.read_exact_at(&mut ts, at as u64).is_ok() && {
            let sec = i64::from_ne_bytes(ts[..8].try_into().unwrap());
            let nsec = i64::from_ne_bytes(ts[8..].try_into().unwrap());
            sec * 1000 + nsec / 1_000_000 == ms as i64
        }
    })
}

/// The system calls the threads of `pid` are in (or stopped at the entry
/// of, as strace holds one), each as its number and six arguments.
fn syscalls(pid: u32) -> Vec<Vec<i64>> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let number = |s: &str| match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok().map(|n| n as i64),
        None => s.parse().ok(),
    };
    tasks
        .flatten()
        .filter_map(|t| {
            // "NR ARG1 ... ARG6 SP PC" while in one; "running" or "-1 SP PC".
            let call = std::fs::read_to_string(t.path().join("syscall")).ok()?;
            let f: Option<Vec<i64>> = call.split_whitespace().take(7).map(number).collect();
            f.filter(|f| f.len() == 7)
        })
        .collect()
}

/// Whether a thread of `pid` is in system call `nr` (or held at its entry
/// by strace).
pub fn in_syscall(pid: u32, nr: libc::c_long) -> bool {
    syscalls(pid).iter().any(|f| f[0] == nr)
}

/// Waits (up to 60 s) until a thread of `pid` is in its test pause of
/// `ms` (see [`sleeping_for`]); fails the test if none comes.
pub fn wait_for_pause(pid: u32, ms: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !sleeping_for(pid, ms) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} never paused for {ms} ms"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether signal `sig` waits to be taken by `pid` (pending for it or one
/// of its threads). A second one sent before the first is taken merges
/// with it: a test of what a second signal does waits for this to be false.
pub fn signal_pending(pid: u32, sig: i32) -> bool {
    let bit = 1u64 << (sig - 1);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        status.lines().any(|l| {
            let mask = l.strip_prefix("SigPnd:").or(l.strip_prefix("ShdPnd:"));
            mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
                .is_some_and(|m| m & bit != 0)
        })
    })
}

/// Held for its run by each test that makes the kernel forget inodes
/// (drop_caches), which also checks a guest's numbers around its own
/// forget: another test's forget at another moment (the suite runs tests
/// side by side) forgot its files early and changed what it checked.
pub fn forgets_held() -> std::sync::MutexGuard<'static, ()> {
    static FORGETS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed holding it leaves nothing to undo.
    FORGETS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `exec` (a spawn or run of a program the test just wrote) again
/// while it fails with ETXTBSY, for up to 30 s. Another thread of the test
/// binary forking meanwhile hands its child a copy of the writing fd until
/// that child's own exec closes it (O_CLOEXEC closes only at exec), so the
/// kernel may refuse to run a just-written program for a moment; and
/// through a mount, the writer's release may still be on its way
/// (docs/mount.md). Any other result is returned as it is.
pub fn exec_written<T>(mut exec: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match exec() {
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            r => return r,
        }
    }
}
