//! Review s40 (devpolicy): a guest's v1 devices group denies every device
//! but its own /dev's (null, zero, full, random, urandom, tty, ptmx, its
//! ptys) and its `--device`s, as Docker, LXC and nspawn: with `--cap-add
//! mknod` it still makes nodes, but opening another one (the host's disk,
//! /dev/mem) is refused. Its overlay daemon, outside the devices hierarchy, still
//! serves its root, at a restart too.

use crate::guest::harness::{
    can_run, ok, spawn_on_a_terminal, stderr, stdout, wait_for_output, TestRoot,
};
use crate::guest::named::Guest;
use crate::review_s39_devices::has_devices_cgroup;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

/// The run's warning where the host has no devices controller.
const NO_CONTROLLER: &str = "no cgroup v1 devices controller";

/// A loop device over a temp image starting with `content`; detached
/// when dropped, also when the test fails.
pub(crate) struct Loop {
    _dir: tempfile::TempDir,
    dev: String,
}

impl Loop {
    pub(crate) fn new(content: &[u8]) -> Option<Loop> {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let mut data = content.to_vec();
        data.resize(64 << 10, 0);
        std::fs::write(&img, data).unwrap();
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !dev.is_empty()).then_some(Loop { _dir: dir, dev })
    }

    /// Its number, for the guest's mknod: "MAJOR MINOR".
    fn number(&self) -> String {
        let rdev = std::fs::metadata(&self.dev).unwrap().rdev();
        format!("{} {}", libc::major(rdev), libc::minor(rdev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).output();
    }
}

/// A loop device's content the guest must not read.
pub(crate) const SECRET: &str = "s40-devpolicy-secret";

/// The guest script reading the disk and /dev/mem through nodes it makes.
pub(crate) fn read_host_nodes(disk: &Loop) -> String {
    format!(
        "mknod /dev/s40disk b {} && echo made-disk; head -c 20 /dev/s40disk; echo; \
         mknod /dev/s40mem c 1 1 && echo made-mem; head -c 1 /dev/s40mem >/dev/null && echo read-mem; \
         echo end",
        disk.number()
    )
}

/// With `--cap-add mknod` the guest makes a node of a host block device
/// (a loop device over an image holding [`SECRET`]) and of /dev/mem, as
/// Docker lets it; opening either is refused ("Operation not permitted").
/// Before: it read the disk's content. On a host without the devices
/// controller the run says so.
#[test]
fn s40_mknod_guest_cannot_read_a_block_device_or_host_memory() {
    let test = "s40_mknod_guest_cannot_read_a_block_device_or_host_memory";
    if !can_run(test) {
        return;
    }
    let Some(disk) = Loop::new(SECRET.as_bytes()) else {
        crate::common::skip(test, "needs a loop device (losetup, the loop module)");
        return;
    };
    let t = TestRoot::new();
    let o = t.sh(&["--cap-add", "mknod"], &read_host_nodes(&disk));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("end"), "{out}{err}");
    if !has_devices_cgroup() {
        assert!(err.contains(NO_CONTROLLER), "{err}");
        return;
    }
    assert!(
        out.contains("made-disk") && out.contains("made-mem"),
        "{out}{err}"
    );
    assert!(
        !out.contains(SECRET),
        "the guest read the host's disk: {out}"
    );
    assert!(!out.contains("read-mem"), "{out}");
    assert_eq!(
        err.matches("Operation not permitted").count(),
        2,
        "both opens refused by the devices group: {err}"
    );
}

/// What the policy allows still works: the nodes of the guest's /dev, a
/// node of one of them it makes itself, /dev/ptmx, a `--device` (writable,
/// and read-only without writes), and on a terminal its pty (/dev/pts/N)
/// and /dev/tty. Passes before too: it guards the allow-list.
#[test]
fn s40_allowed_nodes_still_work() {
    let test = "s40_allowed_nodes_still_work";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let mut opts = vec!["--cap-add", "mknod"];
    let tun = std::path::Path::new("/dev/net/tun").exists();
    if tun {
        opts.extend(["--device", "/dev/net/tun"]);
    }
    let script = "echo x > /dev/null && echo null; head -c 4 /dev/zero | wc -c; \
                  head -c 4 /dev/urandom | wc -c; head -c 4 /dev/random | wc -c; \
                  echo x > /dev/full || echo full-refused; \
                  exec 3<>/dev/ptmx && echo ptmx; exec 3>&-; \
                  mknod /dev/null2 c 1 3 && echo x > /dev/null2 && echo made-null; \
                  if [ -e /dev/net/tun ]; then exec 4<>/dev/net/tun && echo tun; fi";
    let out = ok(&t.sh(&opts, script));
    for want in ["null", "ptmx", "made-null", "full-refused"] {
        assert!(out.lines().any(|l| l == want), "{want}: {out}");
    }
    assert_eq!(out.lines().filter(|l| l.trim() == "4").count(), 3, "{out}");
    assert_eq!(out.lines().any(|l| l == "tun"), tun, "{out}");

    // Its terminal: a pty of its devpts (136:N), and /dev/tty (5:0).
    let mut cmd = Command::new(crate::common::unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root()).args([
        "--",
        "/bin/sh",
        "-c",
        "echo a > $(tty) && echo pts-ok; echo b > /dev/tty && echo tty-ok; echo s40-end",
    ]);
    let (master, _child) = spawn_on_a_terminal(cmd);
    let seen = wait_for_output(&master, "s40-end");
    assert!(seen.contains("pts-ok") && seen.contains("tty-ok"), "{seen}");
}

/// A named guest on the overlay: its daemon, outside the devices group, serves
/// its root; init's console (a pty) and `guest exec`'s processes have
/// the policy; `guest restart` starts it again with both.
#[test]
fn s40_named_guest_has_the_policy_across_a_restart() {
    let test = "s40_named_guest_has_the_policy_across_a_restart";
    if !can_run(test) {
        return;
    }
    let Some(disk) = Loop::new(SECRET.as_bytes()) else {
        crate::common::skip(test, "needs a loop device (losetup, the loop module)");
        return;
    };
    let g = Guest::new("s40pol", "[\"/bin/sleep\", \"1000\"]", true);
    let config = std::fs::read_to_string(g.config()).unwrap();
    let keys = "cap_add = [\"mknod\"]\n[limits]";
    std::fs::write(g.config(), config.replacen("[limits]", keys, 1)).unwrap();
    let check = || {
        let script = format!(
            "{}; echo x > /dev/null && echo null; echo c > /dev/console && echo console; \
             rm -f /dev/s40disk /dev/s40mem",
            read_host_nodes(&disk)
        );
        let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", &script]);
        let (out, err) = (stdout(&o), stderr(&o));
        assert!(out.contains("end") && out.contains("null"), "{out}{err}");
        assert!(out.contains("console"), "{out}{err}");
        if has_devices_cgroup() {
            assert!(!out.contains(SECRET) && !out.contains("read-mem"), "{out}");
        }
    };
    ok(&g.unifs(&["start", &g.name]));
    check();
    ok(&g.unifs(&["restart", "--timeout", "0", &g.name]));
    check();
}

/// `guest update` changes limits only: with the config's devices changed
/// it says they apply at the next start, as when given nothing to change.
/// Before: silent.
#[test]
fn s40_update_says_devices_apply_at_the_next_start() {
    let test = "s40_update_says_devices_apply_at_the_next_start";
    if !can_run(test) || !std::path::Path::new("/dev/net/tun").exists() {
        return;
    }
    let g = Guest::new("s40upd", "[\"/bin/sleep\", \"1000\"]", true);
    ok(&g.unifs(&["start", &g.name]));
    let o = g.unifs(&["update", &g.name, "--pids", "80"]);
    assert!(!stderr(&o).contains("next start"), "{}", stderr(&o));
    let config = std::fs::read_to_string(g.config()).unwrap();
    let with_tun = config.replacen("[limits]", "devices = [\"/dev/net/tun\"]\n[limits]", 1);
    std::fs::write(g.config(), with_tun).unwrap();
    let o = g.unifs(&["update", &g.name, "--pids", "90"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("devices") && err.contains("next start"),
        "{err}"
    );
    let o = g.unifs(&["update", &g.name]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("next start"), "{}", stderr(&o));
}
