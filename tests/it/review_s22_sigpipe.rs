//! Review s22: `unifs` sets SIGPIPE back to its default (so `unifs … | head`
//! ends quietly); the mount daemon, which outlives its caller and whoever
//! reads its log, died of it on its first write to a reader that was gone.

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::{is_mounted, wait_until, UnmountAt, World};
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// State, parent and session of `pid` (from /proc/PID/stat), if it exists.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    Some((f[0].chars().next()?, f[1].parse().ok()?, f[3].parse().ok()?))
}

/// A child of `parent` that made a session of its own (the daemon, after
/// its setsid).
fn session_child(parent: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let (_, ppid, sid) = stat(pid)?;
        (ppid == parent && sid == pid).then_some(pid)
    })
}

fn ended(pid: i32) -> bool {
    stat(pid).is_none_or(|(state, _, _)| state == 'Z' || state == 'X')
}

/// Kills (and reaps) a child a failed test left running.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            wait_until(Duration::from_secs(5), || {
                c.try_wait().ok().flatten().is_some()
            });
        }
    }
}

fn wait_exit(child: &mut Reap, limit: Duration) -> std::process::ExitStatus {
    let c = child.0.as_mut().unwrap();
    let mut status = None;
    wait_until(limit, || {
        status = c.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap_or_else(|| panic!("unifs did not end within {limit:?}"));
    child.0.take();
    status
}

/// `unifs --store STORE ARGS`, bounded: its status and stderr.
fn unifs(w: &World, args: &[&OsStr]) -> (std::process::ExitStatus, String) {
    let err = w.tmp.path().join("stderr");
    let mut child = Reap(Some(
        Command::new(unifs_bin())
            .arg("--store")
            .arg(&w.store)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    ));
    let status = wait_exit(&mut child, Duration::from_secs(30));
    (status, std::fs::read_to_string(&err).unwrap_or_default())
}

/// What was wrong: `unifs mount` interrupted while its daemon was starting
/// (Ctrl-C, `timeout`, a hang-up: here SIGINT to its process group, the
/// terminal's) lost only the waiting parent; the daemon, a session of its
/// own, mounted, wrote "ok" to the dead parent and died of SIGPIPE, leaving
/// a mount with no daemon (ENOTCONN) that nothing reported. Now the daemon
/// finds nobody to tell, unmounts and ends: nothing is left mounted, and
/// the next mount works. (The start is held by a flock on the guest root,
/// as a daemon that is just exiting holds it.)
#[test]
fn review_s22_an_interrupted_mount_leaves_no_mount_without_daemon() {
    if !require_root("review_s22_an_interrupted_mount_leaves_no_mount_without_daemon") {
        return;
    }
    let w = World::new();
    let guest = w.dir("g");
    std::fs::write(guest.join("file"), "hello\n").unwrap();
    let mp = w.dir("mnt");
    let _unmount = UnmountAt(&mp);
    let lock = std::fs::File::open(&guest).unwrap();
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let mut parent = Reap(Some(
        Command::new(unifs_bin())
            .arg("--store")
            .arg(&w.store)
            .arg("mount")
            .arg(&guest)
            .arg(&mp)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let pid = parent.0.as_ref().unwrap().id() as i32;
    let mut daemon = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            daemon = session_child(pid);
            daemon.is_some()
        }),
        "no daemon forked by unifs mount"
    );
    let daemon = daemon.unwrap();
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(-pid, libc::SIGINT) }, 0);
    let status = wait_exit(&mut parent, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status}");
    // The daemon may go on now (within its 2 s wait for the lock).
    drop(lock);

    assert!(
        wait_until(Duration::from_secs(30), || ended(daemon)),
        "the daemon {daemon} of the interrupted mount did not end"
    );
    assert!(
        !is_mounted(&mp),
        "the interrupted mount left {} mounted, its daemon gone",
        mp.display()
    );
    // The next mount of the guest there works.
    let (status, err) = unifs(&w, &["mount".as_ref(), guest.as_ref(), mp.as_ref()]);
    assert!(status.success(), "{err}");
    assert_eq!(std::fs::read_to_string(mp.join("file")).unwrap(), "hello\n");
    let (status, err) = unifs(&w, &["umount".as_ref(), mp.as_ref()]);
    assert!(status.success(), "{err}");
}

/// What was wrong: `unifs mount -f` (a `Type=simple` service, its log going
/// through a pipe: `| logger`, a log shipper) died of SIGPIPE on its next
/// log line once that reader had gone, SIGPIPE set back to its default
/// whatever the service manager set (systemd's IgnoreSIGPIPE=yes). The
/// next line was the one a stop (SIGTERM) logs: the stop left a mount with
/// no daemon instead of unmounting. Now losing the reader costs log lines:
/// the mount is served on, and SIGTERM unmounts it and ends the daemon
/// with status 0.
#[test]
fn review_s22_mount_f_outlives_the_reader_of_its_log() {
    if !require_root("review_s22_mount_f_outlives_the_reader_of_its_log") {
        return;
    }
    let w = World::new();
    let guest = w.dir("g");
    std::fs::write(guest.join("file"), "hello\n").unwrap();
    let mp = w.dir("mnt");
    let _unmount = UnmountAt(&mp);
    let mut daemon = Reap(Some(
        Command::new(unifs_bin())
            .arg("--store")
            .arg(&w.store)
            .args(["-v", "mount", "-f"])
            .arg(&guest)
            .arg(&mp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let c = daemon.0.as_mut().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || is_mounted(&mp)
            || c.try_wait().unwrap().is_some()),
        "no mount"
    );
    assert!(is_mounted(&mp), "the mount did not come up");
    // The log's reader goes (its pipe's only read end is ours).
    drop(c.stderr.take());
    assert_eq!(std::fs::read_to_string(mp.join("file")).unwrap(), "hello\n");
    let pid = c.id() as i32;
    // SAFETY: kill has no memory preconditions; the child is not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut daemon, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "the daemon did not end cleanly on SIGTERM: {status}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || !is_mounted(&mp)),
        "the stopped daemon left {} mounted",
        mp.display()
    );
}
