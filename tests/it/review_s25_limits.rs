//! Review s25 (resource limits): where the overlay daemon's warnings go,
//! what unify's closing line counts, and an I/O weight on a disk whose
//! scheduler ignores it.
//!
//! Real guests, real mounts, small loop-mounted filesystems; guards stop
//! the guests and unmount what a test mounted, every wait bounded.

use crate::guest::harness::{can_run, ok, run_bounded, stderr, stdout, KillOnDrop, TestRoot};
use crate::guest::review_s11_life::{mount_daemon, Guest, SLEEP};
use crate::review_s9_exhaust::Ext4;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A descendant of `pid` (within 30 s) that holds /dev/fuse open: the
/// overlay daemon `unifs run` forked.
pub(crate) fn fuse_holder_below(pid: u32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut todo = vec![pid];
        while let Some(p) = todo.pop() {
            let kids =
                std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                let fds = std::fs::read_dir(format!("/proc/{k}/fd"))
                    .into_iter()
                    .flatten();
                let holds = fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l == Path::new("/dev/fuse"))
                });
                if holds {
                    return k as i32;
                }
                todo.push(k);
            }
        }
        assert!(Instant::now() < deadline, "no overlay daemon below {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lowers `pid`'s open-file limit to a few above what it holds now and the
/// quarter of the limit it keeps for requests (`room_for_requests`): the
/// next guest files opened through it meet the limit.
fn squeeze_fd_limit(pid: i32) {
    let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = ((held + 4) * 4 / 3 + 2).to_string();
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Thirty files the guest holds open at once (a background `sleep` each,
/// its stdin on one): more than the squeezed daemon can open.
const HOLD_MANY: &str = "for i in $(seq 1 30); do { sleep 2 < /tmp/f$i; } 2>/dev/null & done; wait";

fn make_files(root: &Path) {
    for i in 1..=30 {
        std::fs::write(root.join(format!("tmp/f{i}")), "x").unwrap();
    }
}

const WARNING: &str = "the daemon is at its open-file limit";

/// A named guest's overlay daemon ran with no log: its warning that guests
/// get EMFILE because it is at its open-file limit went to /dev/null. It
/// now writes RUN_DIR/NAME/mount.log, which `guest logs --mount` shows and
/// `guest status` names.
#[test]
fn s25_named_guest_daemon_warnings_reach_its_mount_log() {
    if !can_run("s25_named_guest_daemon_warnings_reach_its_mount_log") {
        return;
    }
    let g = Guest::new("emfile", SLEEP);
    make_files(&g.t.root());
    ok(&g.unifs(&["start", &g.name]));
    let daemon = mount_daemon(&g.run(&g.name).join("root"));
    squeeze_fd_limit(daemon);
    let out = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", HOLD_MANY]);
    assert!(out.status.code().is_some(), "{out:?}");
    let log = g.run(&g.name).join("mount.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains(WARNING), "{}: {text:?}", log.display());
    let shown = ok(&g.unifs(&["logs", "--mount", &g.name]));
    assert!(shown.contains(WARNING), "guest logs --mount: {shown}");
    let status = ok(&g.unifs(&["status", &g.name]));
    assert!(
        status.contains(&log.display().to_string()),
        "guest status names the daemon's log: {status}"
    );
    // Its console log stays init's alone.
    let console = ok(&g.unifs(&["logs", &g.name]));
    assert!(!console.contains(WARNING), "{console}");
}

/// `unifs run`'s overlay daemon had its output on /dev/null too: the
/// warning now comes on run's stderr.
#[test]
fn s25_run_daemon_warnings_reach_runs_stderr() {
    if !can_run("s25_run_daemon_warnings_reach_runs_stderr") {
        return;
    }
    let t = TestRoot::new();
    make_files(&t.root());
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.env("UNIFS_STORE", t.dir.path().join("no-store"));
    cmd.arg("run").arg("--root").arg(t.root());
    // The guest waits for a line on its stdin: sent once the daemon's limit
    // is lowered.
    cmd.args(["--", "/bin/sh", "-c", &format!("read go; {HOLD_MANY}")]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let c = child.0.as_mut().unwrap();
    let daemon = fuse_holder_below(c.id());
    squeeze_fd_limit(daemon);
    let mut stdin = c.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"go\n").unwrap();
    drop(stdin);
    let out = crate::guest::harness::wait_bounded(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains(WARNING), "stderr: {}", stderr(&out));
    assert!(!stdout(&out).contains(WARNING));
}

/// With no inode free for STORE/tmp/dirtimes-PID, unify warned that it
/// could not keep that record and closed with "left 1 file(s) or guest(s)
/// as they were", though it had left none. The closing line now counts
/// that warning apart and names where it was.
#[test]
fn s25_unify_without_an_inode_for_its_dirtimes_record_counts_no_left_file() {
    if !crate::common::require_root("s25_unify_without_an_inode_for_its_dirtimes_record") {
        return;
    }
    let ext4 = Ext4::with(64 << 20, &["-N", "1024"]);
    let store = ext4.path("store");
    let (a, b) = (ext4.path("g1"), ext4.path("g2"));
    for g in [&a, &b] {
        for i in 0..20 {
            crate::tree::file(
                g,
                &format!("data/f{i}"),
                format!("file {i}\n").as_bytes(),
                0o644,
            );
        }
    }
    crate::tree::unify_json(&store, &[&a, &b]);
    let fill = ext4.path("fill");
    std::fs::create_dir(&fill).unwrap();
    let mut n = 0;
    while std::fs::File::create(fill.join(format!("x{n}"))).is_ok() {
        n += 1;
    }
    // Inodes freed one by one until the run gets far enough to warn.
    for k in 0..8.min(n) {
        std::fs::remove_file(fill.join(format!("x{k}"))).unwrap();
        let out = crate::tree::unifs(&store, &[&"unify", &a, &b]);
        let err = crate::tree::stderr(&out);
        if !err.contains("cannot keep a record of the directory mtimes") {
            continue;
        }
        assert_eq!(out.status.code(), Some(23), "{err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(!last.contains("left 1 file or guest"), "{err}");
        assert!(last.contains("left no file or guest as it was"), "{last}");
        assert!(
            last.contains(&store.join("tmp").display().to_string()),
            "names where: {last}"
        );
        return;
    }
    panic!("unify never warned of its dirtimes record; the filesystem had {n} inodes left");
}

/// A tmpfs mounted for a test, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `unifs run --io-weight 10` of a busybox root at `root`, its stderr. The
/// run succeeds, or, on a kernel built without BFQ (whose v1 blkio then has
/// no weight file at all), is refused saying so: the scheduler warning
/// comes before either.
fn run_with_io_weight(root: &Path) -> String {
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.arg("run").arg("--root").arg(root);
    cmd.args(["--io-weight", "10", "--", "/bin/true"]);
    let out = run_bounded(cmd, Duration::from_secs(30));
    let err = stderr(&out);
    if out.status.code() != Some(0) {
        assert!(
            err.contains("cannot apply --io-weight: the kernel offers none of"),
            "{err}"
        );
    }
    err
}

/// Copies a TestRoot's busybox root to `to`.
fn copy_root(t: &TestRoot, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(t.root())
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// --io-weight was set and said nothing when the guest's disk does not use
/// bfq, where the weight does nothing. It now warns, naming the disk and
/// its scheduler (a loop device: the disk under its file), or saying that
/// no disk could be found (tmpfs); the guest still runs.
#[test]
fn s25_io_weight_warns_when_the_disk_scheduler_ignores_it() {
    if !can_run("s25_io_weight_warns_when_the_disk_scheduler_ignores_it") {
        return;
    }
    let t = TestRoot::new();
    // On a loop device: its file's disk decides.
    let ext4 = Ext4::new(64 << 20);
    let root = ext4.path("root");
    copy_root(&t, &root);
    let img_dev = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(ext4.path("")).unwrap().dev()
    };
    let loop_sys = std::fs::canonicalize(format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(img_dev),
        nix::sys::stat::minor(img_dev)
    ))
    .unwrap();
    let backing = std::fs::read_to_string(loop_sys.join("loop/backing_file")).unwrap();
    let disk_dev = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(backing.trim()).unwrap().dev()
    };
    let mut disk = std::fs::canonicalize(format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(disk_dev),
        nix::sys::stat::minor(disk_dev)
    ))
    .unwrap();
    if disk.join("partition").exists() {
        disk.pop();
    }
    let name = disk.file_name().unwrap().to_string_lossy().into_owned();
    let sched = std::fs::read_to_string(disk.join("queue/scheduler")).unwrap_or_default();
    let err = run_with_io_weight(&root);
    if sched.contains("[bfq]")
        || disk
            .join("slaves")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    {
        eprintln!("{name} uses bfq or is a stacked device: only the tmpfs case is checked");
    } else {
        let chosen = sched
            .split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
            .unwrap_or(sched.trim())
            .to_string();
        assert!(err.contains("--io-weight"), "no warning: {err}");
        assert!(
            err.contains(&format!(
                "is on {name}, whose I/O scheduler is {chosen}, not bfq"
            )),
            "{err}"
        );
    }
    // On a tmpfs: no disk to find, said so.
    let tmpfs = Tmpfs(tempfile::tempdir().unwrap());
    nix::mount::mount(
        Some("tmpfs"),
        tmpfs.0.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let root = tmpfs.0.path().join("root");
    copy_root(&t, &root);
    let err = run_with_io_weight(&root);
    assert!(
        err.contains("is on no block device unifs can find"),
        "{err}"
    );
}
