//! Review s27: readers and racers that go away or come at once: `guest logs
//! -f | head -1` with a quiet guest, and two `unifs mount` of one guest at
//! one mount point (`mount -a` and a systemd unit at the same moment).

use crate::common::{require_root, unifs_bin};
use crate::fs::harness::{is_mounted, wait_until, UnmountAt, World};
use crate::guest::harness::{can_run, ok, within_30s, KillOnDrop};
use crate::guest::review_s11_life::Guest;
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What was wrong: `guest logs -f NAME | head -1` never ended once `head`
/// had its line and the guest wrote nothing more: `logs -f` noticed the
/// closed pipe only at its next write. Now it also watches its stdout, and
/// ends as a closed pipe ends it.
#[test]
fn review_s27_logs_follow_ends_once_its_reader_is_gone() {
    if !can_run("review_s27_logs_follow_ends_once_its_reader_is_gone") {
        return;
    }
    let g = Guest::new(
        "pipes",
        "[\"/bin/sh\", \"-c\", \"echo hello; exec sleep 1000\"]",
    );
    ok(&g.unifs(&["start", &g.name]));
    let log = g.run(&g.name).join("console.log");
    assert!(within_30s(
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("hello"))
    ));
    let mut cmd = g.command();
    cmd.args(["logs", "-f", &g.name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut follower = KillOnDrop(Some(cmd.spawn().unwrap()));
    let child = follower.0.as_mut().unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    // `head -1` has its line and goes.
    drop(reader);
    let mut status = None;
    wait_until(Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.expect("`guest logs -f` ran on for 30 s after its reader was gone");
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status}"
    );
}

/// The unifs mounts at `mp`, from /proc/self/mountinfo.
fn unifs_mounts_at(mp: &Path) -> usize {
    unifs::fs::mountinfo::read()
        .unwrap()
        .iter()
        .filter(|m| m.point == mp && m.source.as_encoded_bytes().starts_with(b"unifs:"))
        .count()
}

/// `unifs mount GUEST MP`, started now (its stderr to `err`).
fn start_mount(w: &World, guest: &Path, mp: &Path, err: &Path) -> KillOnDrop {
    let child = Command::new(unifs_bin())
        .arg("--store")
        .arg(&w.store)
        .arg("mount")
        .arg(guest)
        .arg(mp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .unwrap();
    KillOnDrop(Some(child))
}

/// What was wrong: two `unifs mount` of one guest at one mount point at
/// once both found nothing mounted there; the one whose daemon lost the
/// guest's claim failed after 2 s, "already served by another unifs mount
/// … unmount that one first", though the mount it was asked for was there.
/// Now it waits for the winner's mount to answer and says "already
/// mounted", exit 0, as a second mount after the first does; and there is
/// one mount, never two stacked.
#[test]
fn review_s27_two_mounts_at_once_make_one_mount_and_both_succeed() {
    if !require_root("review_s27_two_mounts_at_once_make_one_mount_and_both_succeed") {
        return;
    }
    let w = World::new();
    let guest = w.dir("g");
    std::fs::write(guest.join("file"), "hello\n").unwrap();
    let mp = w.dir("mnt");
    let errs = [w.tmp.path().join("err0"), w.tmp.path().join("err1")];
    for round in 0..5 {
        let _unmount = UnmountAt(&mp);
        let mut both = [
            start_mount(&w, &guest, &mp, &errs[0]),
            start_mount(&w, &guest, &mp, &errs[1]),
        ];
        for (m, err) in both.iter_mut().zip(&errs) {
            let c = m.0.as_mut().unwrap();
            let mut status = None;
            wait_until(Duration::from_secs(30), || {
                status = c.try_wait().unwrap();
                status.is_some()
            });
            let text = std::fs::read_to_string(err).unwrap_or_default();
            let status = status.unwrap_or_else(|| panic!("round {round}: mount ran on: {text}"));
            assert!(status.success(), "round {round}: {status}: {text}");
        }
        assert_eq!(unifs_mounts_at(&mp), 1, "round {round}");
        assert_eq!(std::fs::read_to_string(mp.join("file")).unwrap(), "hello\n");
        let o = Command::new(unifs_bin())
            .arg("umount")
            .arg(&mp)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        assert!(wait_until(Duration::from_secs(30), || !is_mounted(&mp)));
    }
}
