//! `unifs run`'s mount namespace keeps only the host mounts the run uses:
//! a host filesystem unmounted during a run really ends, even where the
//! host's mounts are private (this machine, CI: a slave copy then gets no
//! unmount), and what the run uses (its root and store on another
//! filesystem, binds with mounts below their source, its run dir, a
//! terminal) still works.

use crate::common::unifs_bin;
use crate::fs::harness::{wait_until, Ext4};
use crate::guest::harness::{
    can_run, spawn_on_a_terminal, wait_for_descendant, wait_for_output, HostMount, KillOnDrop,
    TestRoot,
};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Makes the mount at `at` private: its copy in a namespace made after
/// gets no unmount from the host's then, on any host (as on a host whose
/// mounts are all private), so only letting go of it ends it.
fn make_private(at: &Path) {
    nix::mount::mount(
        None::<&str>,
        at,
        None::<&str>,
        nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
}

/// `unifs run --root ROOT -- /bin/sleep 60`, once its guest sleeps: the run
/// (killed on drop) and the guest's sleep.
fn sleeping_run(root: &Path) -> (KillOnDrop, u32) {
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(root);
    cmd.args(["--", "/bin/sleep", "60"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let run = KillOnDrop(Some(cmd.spawn().unwrap()));
    let sleeper = wait_for_descendant(run.0.as_ref().unwrap().id(), "sleep");
    (run, sleeper)
}

/// Ends the guest's sleep; the run must end with it.
fn end_run(mut run: KillOnDrop, sleeper: u32) {
    // SAFETY: signalling the guest process this test started.
    unsafe { libc::kill(sleeper as i32, libc::SIGKILL) };
    let c = run.0.as_mut().unwrap();
    let ended = wait_until(Duration::from_secs(30), || c.try_wait().unwrap().is_some());
    assert!(ended, "the run did not end with its guest");
}

/// The mount points process `pid`'s mount namespace lists.
fn mount_points(pid: u32) -> Vec<std::path::PathBuf> {
    let mounts = unifs::fs::mountinfo::read_at(Path::new(&format!("/proc/{pid}/mountinfo")));
    mounts.unwrap().into_iter().map(|m| m.point).collect()
}

#[test]
fn s35_a_tmpfs_unmounted_on_the_host_during_a_run_is_gone_from_its_namespace() {
    if !can_run("s35_a_tmpfs_unmounted_on_the_host_during_a_run_is_gone_from_its_namespace") {
        return;
    }
    let t = TestRoot::new();
    let at = t.dir.path().join("usb");
    let disk = HostMount::tmpfs_of_size("1M", &at);
    make_private(&at);
    let (run, sleeper) = sleeping_run(&t.root());
    let pid = run.0.as_ref().unwrap().id();
    nix::mount::umount2(&at, nix::mount::MntFlags::empty()).unwrap();
    drop(disk);
    // The run, its overlay daemon and its keeper share that namespace.
    let held = mount_points(pid).contains(&at);
    assert!(
        !held,
        "the run holds {} after the host unmounted it",
        at.display()
    );
    end_run(run, sleeper);
}

#[test]
fn s35_an_ext4_image_unmounted_on_the_host_during_a_run_really_ends() {
    if !can_run("s35_an_ext4_image_unmounted_on_the_host_during_a_run_really_ends") {
        return;
    }
    let disk = Ext4::new(&[], &[]);
    make_private(&disk.root());
    let sysfs = disk.sysfs();
    let device = sysfs.file_name().unwrap().to_str().unwrap().to_owned();
    let bound = Path::new("/sys/block").join(&device).join("loop");
    assert!(bound.exists(), "{} is no loop device", device);
    let t = TestRoot::new();
    let (run, sleeper) = sleeping_run(&t.root());
    let umount = Command::new("umount").arg(disk.root()).output().unwrap();
    assert!(umount.status.success(), "{umount:?}");
    // Its superblock ends, and with it the loop device (autoclear): free
    // for `losetup -d`, and a mount of the image again is a new one.
    let ended = wait_until(Duration::from_secs(30), || !sysfs.exists());
    assert!(
        ended,
        "{} lives on: the run holds the filesystem",
        sysfs.display()
    );
    let freed = wait_until(Duration::from_secs(30), || !bound.exists());
    assert!(
        freed,
        "{device} stays bound to the image after its filesystem ended"
    );
    end_run(run, sleeper);
}

#[test]
fn s35_a_run_on_an_image_with_binds_a_run_dir_and_a_terminal_still_has_them() {
    if !can_run("s35_a_run_on_an_image_with_binds_a_run_dir_and_a_terminal_still_has_them") {
        return;
    }
    // The roots and their store on a filesystem of their own.
    let disk = Ext4::new(&[], &[]);
    let (r1, r2) = (
        TestRoot::new_in(&disk.root()),
        TestRoot::new_in(&disk.root()),
    );
    for t in [&r1, &r2] {
        crate::tree::file(&t.root(), "data", b"shared\n", 0o644);
    }
    let store = disk.root().join("store");
    let s = crate::tree::unify_json(&store, &[&r1.root(), &r2.root()]);
    assert!(s["files_linked"].as_u64().unwrap() >= 1, "{s}");
    // A bind whose source is a mount with another mounted below it, a run
    // dir on a mount, and a host mount the run has no use for.
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("src");
    let _src = HostMount::tmpfs_of_size("1M", &src);
    std::fs::write(src.join("a"), "bound\n").unwrap();
    let _sub = HostMount::tmpfs_of_size("1M", &src.join("sub"));
    std::fs::write(src.join("sub/b"), "below\n").unwrap();
    let run_dir = host.path().join("run");
    let _run_dir = HostMount::tmpfs_of_size("1M", &run_dir);
    let other = host.path().join("other");
    let _other = HostMount::tmpfs_of_size("1M", &other);
    let mut cmd = Command::new(unifs_bin());
    cmd.env("UNIFS_RUN_DIR", run_dir.join("unifs"));
    cmd.arg("--store")
        .arg(&store)
        .arg("run")
        .arg("--root")
        .arg(r1.root());
    cmd.arg("--bind").arg(format!("{}:/mnt/b", src.display()));
    cmd.args(["--", "/bin/sh", "-c"]);
    cmd.arg(
        "echo x >> /data; cat /data /mnt/b/a /mnt/b/sub/b; tty; \
         echo waiting; read line; echo after-$line",
    );
    let (master, mut run) = spawn_on_a_terminal(cmd);
    let seen = answer_after_check(
        &master,
        run.0.as_ref().unwrap().id(),
        &[&disk.root(), &src, &src.join("sub"), &run_dir],
        &other,
    );
    for want in ["shared\r\nx\r\n", "bound\r\nbelow\r\n", "/dev/pts/0"] {
        assert!(seen.contains(want), "no {want:?} in {seen:?}");
    }
    wait_for_output(&master, "after-go");
    let c = run.0.as_mut().unwrap();
    let ended = wait_until(Duration::from_secs(30), || c.try_wait().unwrap().is_some());
    assert!(ended, "the run did not end with its guest");
    assert!(run.0.take().unwrap().wait().unwrap().success());
    // The write went to r1's private copy through the overlay.
    assert_eq!(
        std::fs::read(r1.root().join("data")).unwrap(),
        b"shared\nx\n"
    );
    assert_eq!(std::fs::read(r2.root().join("data")).unwrap(), b"shared\n");
}

/// Once the guest says it waits: the run's namespace holds each of `kept`
/// and not `gone`; then lets the guest go on. Returns what it said.
fn answer_after_check(master: &OwnedFd, pid: u32, kept: &[&Path], gone: &Path) -> String {
    let seen = wait_for_output(master, "waiting");
    let points = mount_points(pid);
    for k in kept {
        assert!(
            points.iter().any(|p| p == k),
            "the run let go of {}",
            k.display()
        );
    }
    assert!(
        !points.iter().any(|p| p == gone),
        "the run holds {}",
        gone.display()
    );
    nix::unistd::write(master, b"go\n").unwrap();
    seen
}
