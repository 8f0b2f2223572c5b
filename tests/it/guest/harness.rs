//! A small real root from Debian's busybox-static, and bounded runs of unifs.

use crate::common::unifs_bin;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/bin/busybox";

/// True when the test may run: root and busybox-static present. Outside CI
/// a missing piece skips with a reason; under CI it fails.
pub fn can_run(test: &str) -> bool {
    if !crate::common::require_root(test) {
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        crate::common::skip(test, &format!("needs {BUSYBOX} (Debian busybox-static)"));
        return false;
    }
    true
}

/// True when iproute2's `ip` (for `--net veth`) is there; else as [`can_run`].
pub fn has_ip(test: &str) -> bool {
    if Command::new("ip").arg("-V").output().is_ok() {
        return true;
    }
    crate::common::skip(test, "needs iproute2's `ip`");
    false
}

/// A temp dir holding `root/` (the guest) and files beside it (the "host").
pub struct TestRoot {
    pub dir: tempfile::TempDir,
}

/// A removal that fails leaves the dir in /tmp: said (past the tests'
/// capture of stderr) with the test's name, so that CI's log tells whose
/// (review_s51_leftover: a tmpfs still mounted in it, EBUSY).
impl Drop for TestRoot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(self.dir.path()) {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            let said = format!("{test}: {} not removed: {e}\n", self.dir.path().display());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), said.as_bytes());
        }
    }
}

impl TestRoot {
    pub fn new() -> TestRoot {
        TestRoot::new_in(&std::env::temp_dir())
    }

    /// [`TestRoot::new`] in directory `parent` (a filesystem of the test's).
    pub fn new_in(parent: &Path) -> TestRoot {
        let dir = tempfile::Builder::new()
            .prefix("unifs-guest-")
            .tempdir_in(parent)
            .unwrap();
        let root = dir.path().join("root");
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "run", "mnt"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        TestRoot { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `unifs run --root ROOT OPTS -- sh -c SCRIPT`, killed after `limit`.
    pub fn sh(&self, opts: &[&str], script: &str) -> Output {
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run").arg("--root").arg(self.root()).args(opts);
        cmd.args(["--", "/bin/sh", "-c", script]);
        run_bounded(cmd, Duration::from_secs(30))
    }
}

/// Runs `cmd` to completion, killing it if it outlives `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    wait_bounded(child, limit)
}

/// Runs `cmd` with `input` on a pipe to its stdin (closed after it),
/// killing it if it outlives `limit`.
pub fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let mut stdin = child.0.as_mut().unwrap().stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, input).unwrap();
    drop(stdin);
    wait_bounded(child, limit)
}

/// Kills the child when a test fails before waiting for it.
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            // Bounded: a process with a thread asleep in a FUSE request
            // that is never answered does not end on SIGKILL.
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

pub fn wait_bounded(mut child: KillOnDrop, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    // Read beside the wait: a process the command left behind (a guest's
    // background job) may hold its pipes open after it exits, and a read
    // to their end would never return.
    let c = child.0.as_mut().unwrap();
    let out = c.stdout.take().map(read_in_background);
    let err = c.stderr.take().map(read_in_background);
    let status = loop {
        let c = child.0.as_mut().unwrap();
        if let Some(status) = c.try_wait().unwrap() {
            child.0.take();
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "command did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let collect = |rx: Option<std::sync::mpsc::Receiver<Vec<u8>>>, what: &str| {
        let Some(rx) = rx else { return Vec::new() };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!("the command exited, but its {what} stayed open (a process it left holds it)")
        })
    };
    Output {
        status,
        stdout: collect(out, "stdout"),
        stderr: collect(err, "stderr"),
    }
}

fn read_in_background(
    mut r: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// [`stderr`] without the warning a guest with a memory limit gets where
/// unifs lacks CAP_SYS_RESOURCE (`… lacks CAP_SYS_RESOURCE, so the guest's
/// overlay daemon …`, which names the memory limit and the OOM killer): for
/// tests that look for what a run says, or must not say, of an OOM kill.
pub fn stderr_but_unshielded_warning(o: &Output) -> String {
    let err = stderr(o);
    let kept = err
        .lines()
        .filter(|l| !l.contains("lacks CAP_SYS_RESOURCE"));
    kept.map(|l| format!("{l}\n")).collect()
}

/// Whether every thread of `pid` is in the stopped state (`T`).
pub fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
            .unwrap_or(false)
    })
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Waits (up to 30 s: a start on a loaded machine) until a descendant of
/// `pid` runs a program named `comm`, and returns its PID.
pub fn wait_for_descendant(pid: u32, comm: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut todo = vec![pid];
        while let Some(p) = todo.pop() {
            let kids =
                std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            for k in kids
                .split_whitespace()
                .filter_map(|k| k.parse::<u32>().ok())
            {
                let name = std::fs::read_to_string(format!("/proc/{k}/comm")).unwrap_or_default();
                if name.trim() == comm {
                    return k;
                }
                todo.push(k);
            }
        }
        assert!(Instant::now() < deadline, "no {comm} below pid {pid}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An `exec NAME -- /bin/sleep 1000` session of the running guest `name`,
/// started through `guest` (`unifs guest` with the guest's directories),
/// once its command runs: the session (killed on drop; stderr piped, for
/// [`wait_bounded`]) and the command's host PID.
pub fn exec_sleep_session(mut guest: Command, name: &str) -> (KillOnDrop, u32) {
    guest
        .args(["exec", name, "--", "/bin/sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let session = KillOnDrop(Some(guest.spawn().unwrap()));
    let command = wait_for_descendant(session.0.as_ref().unwrap().id(), "sleep");
    (session, command)
}

/// A named guest's groups (`unifs/NAME@DIGEST`) in every hierarchy mounted
/// under /sys/fs/cgroup (a guest gets one in each), as unifs names them.
pub fn groups(name: &str, run_dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(run_dir.join(name)).unwrap_or_default();
    let digest = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
    let group = format!("{name}@{}", &digest[..12]);
    cgroup_hierarchies()
        .iter()
        .map(|h| h.join("unifs").join(&group))
        .collect()
}

/// /sys/fs/cgroup and each directory in it: every place a hierarchy may be
/// mounted (v2 at the top, or v1 controllers below it).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut hierarchies = vec![base.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(base) {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    hierarchies
}

/// Removes `dir` and every directory below it, those below first (a
/// cgroup's groups go so; one still holding a process stays). Errors are
/// passed over: a guard's clean-up.
pub fn remove_dirs(dir: &Path) {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(entries) = std::fs::read_dir(&all[i]) {
            all.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    // Each is listed after the one above it.
    for d in all.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// The processes in a guest's groups (and the `guest` groups below them),
/// as a test's last resort.
pub fn group_pids(name: &str, run_dir: &Path) -> Vec<i32> {
    leaf_pids(name, run_dir, "guest")
}

/// The processes in a guest's groups and the `leaf` groups below them.
fn leaf_pids(name: &str, run_dir: &Path, leaf: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for g in groups(name, run_dir) {
        for sub in [g.clone(), g.join(leaf)] {
            let text = std::fs::read_to_string(sub.join("cgroup.procs")).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.parse::<i32>().ok()));
        }
    }
    pids
}

pub fn is_mounted(path: &Path) -> bool {
    // As bytes: one mount point that is not UTF-8 must not hide the others.
    let mounts = unifs::fs::mountinfo::read().unwrap();
    mounts.iter().any(|m| m.point == path)
}

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        .unwrap_or(false)
}

/// The parent of `pid` (a named guest's init: its keeper).
pub fn parent_of(pid: i64) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid = stat[stat.rfind(')').unwrap() + 2..].split(' ').nth(1);
    ppid.and_then(|p| p.parse().ok()).unwrap()
}

/// SIGKILLs a named guest's init `pid` as the host may, its keeper killed
/// first: a keeper there stops the guest (session 38), and what is left is
/// the stale record that the next `stop` or `start` cleans up.
pub fn kill_init_keeperless(pid: i64) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let keeper = parent_of(pid);
    kill(Pid::from_raw(keeper as i32), Signal::SIGKILL).unwrap();
    assert!(
        within_30s(|| !alive(keeper.into())),
        "keeper {keeper} lives"
    );
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
}

/// Waits up to 30 s for `done`: what takes a moment alone may take
/// seconds on a loaded 2-core machine running the whole suite, and a
/// bound here only tells a wait that ends from one that never does.
pub fn within_30s(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `ve-NAME`, or `ve-` and a digest for a long NAME (docs/guests.md).
pub fn host_if(name: &str) -> PathBuf {
    let short = format!("ve-{name}");
    let ifname = if short.len() <= 15 {
        short
    } else {
        format!("ve-{}", &blake3::hash(name.as_bytes()).to_hex()[..12])
    };
    Path::new("/sys/class/net").join(ifname)
}

/// A test's last resort after `guest stop` of guest `name` (run dir
/// `run_dir`): kills what is left in its groups, detaches its root, removes
/// its groups, so a failed test leaves nothing behind.
pub fn force_clean(name: &str, run_dir: &Path) {
    // Its overlay daemon's (`mount`) too.
    let mut pids = group_pids(name, run_dir);
    pids.extend(leaf_pids(name, run_dir, "mount"));
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let root = run_dir.join(name).join("root");
    if is_mounted(&root) {
        let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
    }
    for g in groups(name, run_dir) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while g.exists() && Instant::now() < deadline {
            let _ = std::fs::remove_dir(g.join("guest"));
            let _ = std::fs::remove_dir(g.join("mount"));
            let _ = std::fs::remove_dir(&g);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The cgroup v2 hierarchy's mount point, if the host has one.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = unifs::fs::mountinfo::read().ok()?;
    mounts
        .into_iter()
        .find_map(|m| (m.fstype == "cgroup2").then_some(m.point))
}

/// Whether the host has a cgroup v2 hierarchy; without one, `test` is
/// skipped, but not under CI, whose machines have one.
pub fn has_cgroup2(test: &str) -> bool {
    if cgroup2_mount().is_some() {
        return true;
    }
    crate::common::skip(test, "no cgroup v2 hierarchy");
    false
}

/// The group `unifs run` (pid `pid`) made in `hierarchy`: `unifs/run-PID-TAG`.
pub fn run_group(hierarchy: &std::path::Path, pid: u32) -> Option<std::path::PathBuf> {
    let prefix = format!("run-{pid}-");
    std::fs::read_dir(hierarchy.join("unifs"))
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
}

/// Whether a run's group (see [`run_group`]) holds its guest yet: the group
/// exists a moment before its limits are written and its guest joins.
pub fn guest_joined(group: &std::path::Path) -> bool {
    std::fs::read_to_string(group.join("guest/cgroup.procs"))
        .is_ok_and(|procs| !procs.trim().is_empty())
}

/// Spawns `cmd` on a new pty, its controlling terminal (a session of its
/// own, as a terminal emulator or sshd starts a shell); returns the pty's
/// master and the process.
pub fn spawn_on_a_terminal(mut cmd: Command) -> (OwnedFd, KillOnDrop) {
    let pty = nix::pty::openpty(None, None).unwrap();
    // openpty's fds are inherited: a master the child kept would never
    // hang up.
    for fd in [&pty.master, &pty.slave] {
        let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
        nix::fcntl::fcntl(fd, cloexec).unwrap();
    }
    let slave = || Stdio::from(std::fs::File::from(pty.slave.try_clone().unwrap()));
    cmd.stdin(slave()).stdout(slave()).stderr(slave());
    // SAFETY: setsid and ioctl only, in the forked child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = KillOnDrop(Some(cmd.spawn().unwrap()));
    drop(pty.slave);
    (pty.master, child)
}

/// Reads the terminal until `want` shows (up to 30 s); returns what came.
pub fn wait_for_output(master: &OwnedFd, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {want:?} on the terminal: {:?}",
            String::from_utf8_lossy(&seen)
        );
        let mut fds = [nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = left.as_millis().min(1000) as u16;
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0) > 0 {
            let mut buf = [0u8; 4096];
            match nix::unistd::read(master, &mut buf) {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => panic!(
                    "the terminal closed before {want:?}: {:?}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A tmpfs mounted on the host for a test; unmounted (lazily) on drop.
pub struct HostMount(pub std::path::PathBuf);

impl HostMount {
    /// A tmpfs of `size` (`size=` of tmpfs(5)) at `at`, made if missing.
    pub fn tmpfs_of_size(size: &str, at: &std::path::Path) -> HostMount {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        HostMount(at.to_path_buf())
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
