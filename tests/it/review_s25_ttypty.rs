//! Review s25: the terminal a guest session gets. `unifs run` on a
//! terminal gave the guest a pty of the host's devpts (`tty` said "not a
//! tty" in the guest, and guest root's chmod of its terminal changed a host
//! /dev/pts node); and a session as a user (`run -u`, `exec --tty -u`,
//! `enter -u`) got a terminal owned by root, which the user could not open
//! by its name.
//!
//! The user's terminal is a pty the test opens, made the controlling
//! terminal of the unifs process. Every guest stops, every process ends,
//! on drop.

use crate::common::unifs_bin;
use crate::guest::harness::{
    can_run, force_clean, ok, run_bounded, spawn_on_a_terminal, KillOnDrop, TestRoot,
};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A unifs process on a terminal of its own, and what it wrote there.
struct Term {
    master: OwnedFd,
    child: KillOnDrop,
    seen: Vec<u8>,
}

impl Term {
    /// Spawns `cmd` on a new pty, its controlling terminal (a session of
    /// its own, as a terminal emulator starts a shell).
    fn spawn(cmd: Command) -> Term {
        let (master, child) = spawn_on_a_terminal(cmd);
        Term {
            master,
            child,
            seen: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).replace('\r', "")
    }

    /// One read of the terminal, waiting up to `ms`; false at its end.
    fn read_some(&mut self, ms: u16) -> bool {
        let mut fds = [nix::poll::PollFd::new(
            self.master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0) == 0 {
            return true;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(&self.master, &mut buf) {
            Ok(n) if n > 0 => {
                self.seen.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads the terminal until `want` shows (up to 30 s).
    fn wait_for(&mut self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.text().contains(want) {
            assert!(
                Instant::now() < deadline,
                "no {want:?} on the terminal: {:?}",
                self.text()
            );
            assert!(
                self.read_some(200),
                "the terminal closed before {want:?}: {:?}",
                self.text()
            );
        }
    }

    /// Waits (up to 30 s) for the process to end; its exit code and all it
    /// wrote.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let c = self.child.0.as_mut().unwrap();
            if let Some(status) = c.try_wait().unwrap() {
                self.child.0.take();
                while self.read_some(100) {
                    if Instant::now() > deadline {
                        break;
                    }
                    let mut fds = [nix::poll::PollFd::new(
                        self.master.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0) == 0 {
                        break;
                    }
                }
                return (status.code(), self.text());
            }
            assert!(
                Instant::now() < deadline,
                "unifs did not end: {:?}",
                self.text()
            );
            self.read_some(50);
        }
    }
}

/// A busybox root with users root and alice (1000:1000); `tty_group`: its
/// /etc/group has a `tty` group (gid 5).
fn root_with_alice(tty_group: bool) -> TestRoot {
    let t = TestRoot::new();
    let etc = t.root().join("etc");
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    let tty = if tty_group { "tty:x:5:\n" } else { "" };
    std::fs::write(
        etc.join("group"),
        format!("root:x:0:\n{tty}alice:x:1000:\n"),
    )
    .unwrap();
    t
}

/// What the session reports about its terminal: its name, the owner and
/// mode of the node, whether the user can open it by name, and how the
/// guest's devpts is mounted.
const REPORT: &str = "echo \"name=$(tty)\"; echo \"fd0=$(readlink /proc/self/fd/0)\"; \
    stat -L -c 'owner=%u:%g mode=%a' /proc/self/fd/0; \
    (echo hi > \"$(tty)\") 2>/dev/null && echo open-by-name=ok; \
    grep ' /dev/pts ' /proc/mounts; echo report-end";

/// The host's /dev/pts nodes and their modes.
fn host_ptys() -> Vec<(String, u32)> {
    std::fs::read_dir("/dev/pts")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            let mode = e.metadata().ok()?.permissions().mode() & 0o777;
            (name != "ptmx").then_some((name, mode))
        })
        .collect()
}

/// `unifs run` on a terminal: the guest's terminal is /dev/pts/0 of its
/// own devpts (tty(1) names it; before, "not a tty"), and guest root's
/// chmod of it changes no host pty (before, it made one the host's 0666).
#[test]
fn review_s25_run_on_a_terminal_gets_a_pty_of_the_guests_devpts() {
    let test = "review_s25_run_on_a_terminal_gets_a_pty_of_the_guests_devpts";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let before = host_ptys();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    let script = "echo \"name=$(tty)\"; echo \"fd0=$(readlink /proc/self/fd/0)\"; \
                  echo \"pts=$(ls /dev/pts | tr '\\n' ' ')\"; \
                  chmod 666 /proc/self/fd/0; echo chmodded; read x; echo got-$x";
    cmd.args(["--", "/bin/sh", "-c", script]);
    let mut term = Term::spawn(cmd);
    term.wait_for("chmodded");
    // The guest still runs, its terminal chmodded: no host pty that was
    // not there before is now the world's.
    let opened: Vec<(String, u32)> = host_ptys()
        .into_iter()
        .filter(|(name, mode)| *mode == 0o666 && !before.iter().any(|(b, _)| b == name))
        .collect();
    assert!(
        opened.is_empty(),
        "guest root's chmod of its terminal changed host ptys: {opened:?}"
    );
    nix::unistd::write(&term.master, b"go\n").unwrap();
    let (code, out) = term.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("name=/dev/pts/0\n"), "{out}");
    assert!(out.contains("fd0=/dev/pts/0\n"), "{out}");
    assert!(out.contains("pts=0 ptmx "), "{out}");
    assert!(out.contains("got-go"), "{out}");
}

/// `run -u alice` on a terminal: alice's terminal is hers (group tty,
/// 620, as sshd and login hand it), so she can open it by name; before it
/// was root's, 600. The guest's devpts gives new ptys its tty group.
/// Without a tty group in the guest: her own group, 600, and no gid= on
/// the devpts.
#[test]
fn review_s25_run_as_a_user_owns_its_terminal() {
    let test = "review_s25_run_as_a_user_owns_its_terminal";
    if !can_run(test) {
        return;
    }
    for (tty_group, owner, gid_option) in [
        (true, "owner=1000:5 mode=620", true),
        (false, "owner=1000:1000 mode=600", false),
    ] {
        let t = root_with_alice(tty_group);
        let mut cmd = Command::new(unifs_bin());
        cmd.arg("run")
            .arg("--root")
            .arg(t.root())
            .args(["-u", "alice"]);
        cmd.args(["--", "/bin/sh", "-c", REPORT]);
        let (code, out) = Term::spawn(cmd).finish();
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("name=/dev/pts/0\n"), "{out}");
        assert!(out.contains(owner), "tty group {tty_group}: {out}");
        assert!(
            out.contains("open-by-name=ok\n"),
            "tty group {tty_group}: {out}"
        );
        assert_eq!(out.contains(",gid=5"), gid_option, "{out}");
    }
}

/// A named guest on a busybox root with alice, running `sleep`.
struct Guest {
    name: String,
    _t: TestRoot,
    config_dir: PathBuf,
    run_dir: PathBuf,
}

impl Guest {
    fn new() -> Guest {
        let t = root_with_alice(true);
        let config_dir = t.dir.path().join("config");
        let run_dir = t.dir.path().join("run");
        std::fs::create_dir(&config_dir).unwrap();
        let name = format!("t{}-s25tty", std::process::id());
        let toml = format!(
            "root = {:?}\nroot_mount = \"bind\"\ninit = [\"/bin/sleep\", \"1000\"]\n",
            t.root()
        );
        std::fs::write(config_dir.join(format!("{name}.toml")), toml).unwrap();
        Guest {
            name,
            _t: t,
            config_dir,
            run_dir,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(unifs_bin());
        cmd.env("UNIFS_CONFIG_DIR", &self.config_dir);
        cmd.env("UNIFS_RUN_DIR", &self.run_dir);
        cmd.arg("guest").args(args);
        cmd
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let stop = self.cmd(&["stop", "--timeout", "0", &self.name]);
        let _ = run_bounded(stop, Duration::from_secs(30));
        force_clean(&self.name, &self.run_dir);
    }
}

/// `guest exec --tty -u alice` and `guest enter -u alice`: alice's
/// terminal (/dev/pts/N of the guest's devpts) is hers, group tty, 620;
/// before it was root's, and `echo hi > $(tty)` failed.
#[test]
fn review_s25_exec_tty_and_enter_as_a_user_own_their_terminal() {
    let test = "review_s25_exec_tty_and_enter_as_a_user_own_their_terminal";
    if !can_run(test) {
        return;
    }
    let g = Guest::new();
    ok(&run_bounded(
        g.cmd(&["start", &g.name]),
        Duration::from_secs(30),
    ));

    let exec = g.cmd(&[
        "exec", "--tty", "-u", "alice", &g.name, "--", "/bin/sh", "-c", REPORT,
    ]);
    let (code, out) = Term::spawn(exec).finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("name=/dev/pts/"), "{out}");
    assert!(out.contains("owner=1000:5 mode=620"), "{out}");
    assert!(out.contains("open-by-name=ok\n"), "{out}");

    let mut enter = Term::spawn(g.cmd(&["enter", "-u", "alice", &g.name]));
    nix::unistd::write(&enter.master, format!("{REPORT}; exit\n").as_bytes()).unwrap();
    enter.wait_for("report-end\n");
    let (code, out) = enter.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("owner=1000:5 mode=620"), "{out}");
    assert!(out.contains("open-by-name=ok\n"), "{out}");
}
