//! Review s36: a FUSE mount whose daemon is stopped (an sshfs to a dead
//! host, another guest's stuck overlay) answers no lookup, stat or open
//! at or below it, for good. No unifs command may hang on one: one it does
//! not need is never looked into; one holding a path it needs (a bind
//! source, the run dir, the store, a PATH directory for `ip`) is refused
//! within seconds, naming the mount.
//!
//! Each test makes its hung mount in a mount namespace of its own (the
//! other tests' FUSE and loop mounts let go of there at once, so none is
//! kept alive by it) and runs unifs there through nsenter, bounded; a
//! guard kills the stopped daemon and the namespace's holder, whatever fails.

use crate::common::{unifs_bin, wrapped};
use crate::guest::harness::{can_run, has_ip, ok, run_bounded, stderr, KillOnDrop, TestRoot};
use crate::guest::review_s11_life::mount_daemon;
use crate::guest::review_s22_stall::stop;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The namespace's holder: lets go of the FUSE and loop mounts it copied
/// (other tests'), says `ready`, and sleeps.
const HOLDER: &str = r#"awk '{ for (i = 7; $i != "-"; i++) ; if ($(i+1) ~ /^fuse/ || $(i+2) ~ /^\/dev\/loop/) print $5 }' /proc/self/mountinfo | while read -r m; do umount -l "$m" 2>/dev/null; done; echo ready; exec sleep 600"#;

/// A mount namespace (a slave copy of the host's) with a unifs mount of
/// `DIR/hung-src` at `DIR/hung` whose daemon is stopped, beside a guest
/// root (`DIR/root`, busybox) and a store (`DIR/store`).
pub(crate) struct Hung {
    t: TestRoot,
    holder: KillOnDrop,
    daemon: Option<i32>,
}

impl Hung {
    /// With `below`, a tmpfs is mounted at `hung/below` first, so that the
    /// hung mount covers it.
    pub(crate) fn new(below: bool) -> Hung {
        let t = TestRoot::new();
        let mut holder = Command::new("unshare");
        holder
            .args(["-m", "--propagation", "slave", "sh", "-c", HOLDER])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut holder = KillOnDrop(Some(holder.spawn().unwrap()));
        let out = holder.0.as_mut().unwrap().stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        let mut h = Hung {
            t,
            holder,
            daemon: None,
        };
        std::fs::create_dir_all(h.dir("hung-src/data")).unwrap();
        std::fs::create_dir_all(h.dir("hung/below")).unwrap();
        ok(&h.unifs(&["store", "init"]));
        if below {
            let mut tmpfs = Command::new("mount");
            tmpfs
                .args(["-t", "tmpfs", "below"])
                .arg(h.dir("hung/below"));
            ok(&h.run(tmpfs));
        }
        ok(&h.unifs(&["mount", &h.path("hung-src"), &h.path("hung")]));
        let daemon = mount_daemon(&h.dir("hung"));
        h.daemon = Some(daemon);
        stop(daemon);
        h
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.t.dir.path().join(name)
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir(name).display().to_string()
    }

    /// `cmd` run in the namespace, killed after 60 s (a test that hangs
    /// fails).
    pub(crate) fn run(&self, cmd: Command) -> Output {
        let pid = self.holder.0.as_ref().unwrap().id().to_string();
        let cmd = wrapped(&["nsenter", "-t", &pid, "-m", "--"], &cmd);
        run_bounded(cmd, Duration::from_secs(60))
    }

    /// `unifs ARGS` in the namespace ([`Hung::command`]).
    pub(crate) fn unifs(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        self.run(cmd)
    }

    /// `unifs` with the test's store, run dir and config dir, its
    /// arguments to add.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(unifs_bin());
        cmd.env("UNIFS_STORE", self.dir("store"))
            .env("UNIFS_RUN_DIR", self.dir("run"))
            .env("UNIFS_CONFIG_DIR", self.dir("config"));
        cmd
    }

    /// Asserts `o` failed with one line naming the hung mount and how to
    /// let its daemon go on.
    pub(crate) fn refused(&self, o: &Output, what: &str) {
        let e = stderr(o);
        assert_eq!(o.status.code(), Some(1), "{what}: {e}");
        let daemon = self.daemon.unwrap();
        assert!(
            e.contains(&format!("FUSE mount at {}", self.path("hung")))
                && e.contains(&format!("`kill -CONT {daemon}`"))
                && e.trim_end().lines().count() == 1,
            "{what}: {e}"
        );
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        // A stopped process takes SIGKILL: its mount's connection ends,
        // and with the holder gone the namespace and its mounts go.
        if let Some(daemon) = self.daemon {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(daemon),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn s36_run_lets_go_of_a_mount_under_a_hung_fuse_mount() {
    if !can_run("s36_run_lets_go_of_a_mount_under_a_hung_fuse_mount") {
        return;
    }
    // The tmpfs at hung/below, covered by the hung mount, is one the run
    // lets go of: its O_PATH open went through the hung mount's root (a
    // permission check there asks the daemon) and never returned.
    let h = Hung::new(true);
    ok(&h.unifs(&["run", "--root", &h.path("root"), "--", "/bin/true"]));
}

#[test]
fn s36_a_veth_run_skips_a_path_dir_in_a_hung_mount() {
    let test = "s36_a_veth_run_skips_a_path_dir_in_a_hung_mount";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    // `ip` is found in /usr/sbin; the PATH directory before it, in the hung
    // mount, was resolved (canonicalize) for the run's kept mounts, and
    // looked into for `ip` (execvp), each for good.
    let h = Hung::new(false);
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", h.path("hung/bin"));
    let mut cmd = h.command();
    cmd.env("PATH", path)
        .args(["run", "--net", "veth", "--ip", "10.236.1.2/24"])
        .args(["--host-ip", "10.236.1.1/24", "--root", &h.path("root")])
        .args(["--", "/bin/true"]);
    ok(&h.run(cmd));
}

#[test]
fn s36_run_refuses_a_bind_source_run_dir_or_store_in_a_hung_mount() {
    if !can_run("s36_run_refuses_a_bind_source_run_dir_or_store_in_a_hung_mount") {
        return;
    }
    let h = Hung::new(false);
    let root = h.path("root");
    let bind = format!("{}:/mnt", h.path("hung/data"));
    for mount in ["bind", "overlay"] {
        let args = [
            "run",
            "--root-mount",
            mount,
            "--root",
            &root,
            "--bind",
            &bind,
        ];
        h.refused(&h.unifs(&[&args[..], &["--", "/bin/true"]].concat()), &bind);
    }
    let run_dir = h.path("hung/run");
    let args = [
        "run",
        "--root-mount",
        "bind",
        "--run-dir",
        &run_dir,
        "--root",
        &root,
    ];
    h.refused(
        &h.unifs(&[&args[..], &["--", "/bin/true"]].concat()),
        &run_dir,
    );
    let store = h.path("hung/store");
    let args = ["--store", &store, "run", "--root", &root, "--", "/bin/true"];
    h.refused(&h.unifs(&args), "run's store");
}

#[test]
fn s36_guest_commands_refuse_their_dirs_or_a_bind_source_in_a_hung_mount() {
    if !can_run("s36_guest_commands_refuse_their_dirs_or_a_bind_source_in_a_hung_mount") {
        return;
    }
    let h = Hung::new(false);
    let run_dir = h.path("hung/run");
    let config_dir = h.path("hung/config");
    for (option, dir) in [("--run-dir", &run_dir), ("--config-dir", &config_dir)] {
        for command in ["list", "status", "stop", "start"] {
            let mut args = vec!["guest", command, option, dir];
            if command != "list" {
                args.push("web");
            }
            h.refused(&h.unifs(&args), command);
        }
    }
    // A config whose bind source is in it: `start` refuses it, `list` says
    // so and lists the rest (`exists` waited for good in both).
    std::fs::create_dir(h.dir("config")).unwrap();
    let toml = format!(
        "root = {:?}\ninit = [\"/bin/true\"]\nbinds = [\"{}:/mnt\"]\n",
        h.path("root"),
        h.path("hung/data")
    );
    std::fs::write(h.dir("config/web.toml"), toml).unwrap();
    h.refused(&h.unifs(&["guest", "start", "web"]), "start");
    let o = h.unifs(&["guest", "list"]);
    ok(&o);
    assert!(stderr(&o).contains("does not answer"), "{}", stderr(&o));
}

#[test]
fn s36_store_commands_refuse_a_store_in_a_hung_mount() {
    if !can_run("s36_store_commands_refuse_a_store_in_a_hung_mount") {
        return;
    }
    let h = Hung::new(false);
    let store = h.path("hung/store");
    let root = h.path("root");
    std::fs::create_dir(h.dir("view")).unwrap();
    let view = h.path("view");
    let commands: [&[&str]; 6] = [
        &["store", "stats"],
        &["store", "gc"],
        &["store", "verify"],
        &["unify", &root],
        &["manifest", &root],
        &["mount", &root, &view],
    ];
    for args in commands {
        h.refused(
            &h.unifs(&[&["--store", &store][..], args].concat()),
            args[0],
        );
    }
}

#[test]
fn s36_a_veth_guest_start_skips_a_path_dir_in_a_hung_mount() {
    let test = "s36_a_veth_guest_start_skips_a_path_dir_in_a_hung_mount";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    // `guest start` runs `ip` in the host's mount namespace: execvp looked
    // for it in the PATH directory in the hung mount first, for good.
    let h = Hung::new(false);
    std::fs::create_dir(h.dir("config")).unwrap();
    let toml = format!(
        "root = {:?}\ninit = [\"/bin/sleep\", \"1000\"]\n[net]\nmode = \"veth\"\n\
         ip = \"10.236.2.2/24\"\nhost_ip = \"10.236.2.1/24\"\n",
        h.path("root")
    );
    std::fs::write(h.dir("config/web.toml"), toml).unwrap();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", h.path("hung/bin"));
    let mut cmd = h.command();
    cmd.env("PATH", path).args(["guest", "start", "web"]);
    let started = h.run(cmd);
    let stopped = h.unifs(&["guest", "stop", "--timeout", "0", "web"]);
    ok(&started);
    ok(&stopped);
}
