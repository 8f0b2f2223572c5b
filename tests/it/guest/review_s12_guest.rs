//! Review s12: named guests — what a failed start leaves, what the clean-up
//! of an unrecorded guest may remove, what a running guest needs to be
//! entered, and how its init ended.
//!
//! Every guest has its own temp config and run dirs; a guard stops it and
//! unmounts its root when a test fails half-way.

use super::harness::{can_run, run_bounded, stderr, stdout, KillOnDrop, TestRoot};
use crate::common::unifs_bin;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A named guest on the overlay, in a temp dir of its own.
struct Guest {
    name: String,
    t: TestRoot,
    config_dir: PathBuf,
    run_dir: PathBuf,
    /// UNIFS_STORE for the overlay mount.
    store: PathBuf,
}

impl Guest {
    fn new(test: &str, init: &str) -> Guest {
        let t = TestRoot::new();
        let config_dir = t.dir.path().join("config");
        let run_dir = t.dir.path().join("run");
        std::fs::create_dir(&config_dir).unwrap();
        let g = Guest {
            name: format!("s12-{}-{test}", std::process::id()),
            store: t.dir.path().join("no-store"),
            t,
            config_dir,
            run_dir,
        };
        g.configure("", init);
        g
    }

    fn config(&self) -> PathBuf {
        self.config_dir.join(format!("{}.toml", self.name))
    }

    /// Writes CONFIG_DIR/NAME.toml: the root, `init`, and `extra` lines.
    fn configure(&self, extra: &str, init: &str) {
        let toml = format!(
            "root = {:?}\ninit = {init}\n{extra}\n[limits]\npids = 64\n",
            self.t.root()
        );
        std::fs::write(self.config(), toml).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(unifs_bin());
        cmd.env("UNIFS_CONFIG_DIR", &self.config_dir);
        cmd.env("UNIFS_RUN_DIR", &self.run_dir);
        // No store: the overlay mounts without one.
        cmd.env("UNIFS_STORE", &self.store);
        cmd.arg("guest").args(args);
        cmd
    }

    fn unifs(&self, args: &[&str]) -> Output {
        run_bounded(self.cmd(args), Duration::from_secs(30))
    }

    fn run(&self) -> PathBuf {
        self.run_dir.join(&self.name)
    }

    fn status(&self) -> (serde_json::Value, Output) {
        let o = self.unifs(&["status", "--json", &self.name]);
        let st = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}\n{}", stdout(&o), stderr(&o)));
        (st, o)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.unifs(&["stop", "--timeout", "0", &self.name]);
        for pid in group_pids(&self.name, &self.run_dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let root = self.run().join("root");
        if is_mounted(&root) {
            let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        }
        for g in groups(&self.name, &self.run_dir) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while g.exists() && Instant::now() < deadline {
                let _ = std::fs::remove_dir(g.join("guest"));
                let _ = std::fs::remove_dir(&g);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A guest's groups in every hierarchy where unifs makes them.
fn groups(name: &str, run_dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(run_dir.join(name)).unwrap_or_default();
    let digest = blake3::hash(dir.as_os_str().as_encoded_bytes()).to_hex();
    let group = format!("{name}@{}", &digest[..12]);
    [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
    ]
    .iter()
    .map(|base| Path::new(base).join("unifs").join(&group))
    .collect()
}

/// The processes in a guest's groups, as a test's last resort.
fn group_pids(name: &str, run_dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for g in groups(name, run_dir) {
        for sub in [g.clone(), g.join("guest")] {
            let text = std::fs::read_to_string(sub.join("cgroup.procs")).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.parse::<i32>().ok()));
        }
    }
    pids
}

fn is_mounted(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .any(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
}

fn ok(o: &Output) -> String {
    super::harness::ok(o)
}

const SLEEP: &str = "[\"/bin/sleep\", \"1000\"]";

#[test]
fn s12_a_start_whose_overlay_mount_fails_leaves_no_run_files() {
    if !can_run("s12_a_start_whose_overlay_mount_fails_leaves_no_run_files") {
        return;
    }
    // `unifs mount` refuses a store inside the guest's root (as it refuses
    // one on another filesystem). The start failed, rightly, but left an
    // empty RUN_DIR/NAME/root behind, mode 0755, for every failed start.
    let mut g = Guest::new("mountfail", SLEEP);
    g.store = g.t.root().join("store");
    let o = g.unifs(&["start", &g.name]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("mounting the root of guest"),
        "{}",
        stderr(&o)
    );
    let left: Vec<String> = std::fs::read_dir(g.run())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // The lock stays: removing a lock file others may wait on would let
    // two starts run at once.
    assert_eq!(left, ["lock"], "a failed start left {left:?}");
    assert!(group_pids(&g.name, &g.run_dir).is_empty());
    let (st, _) = g.status();
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["stale"], false, "{st}");

    // A console.log of an earlier run is kept by a failed start.
    std::fs::write(g.run().join("console.log"), "earlier run\n").unwrap();
    let o = g.unifs(&["start", &g.name]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(g.run().join("console.log")).unwrap(),
        "earlier run\n"
    );
}

#[test]
fn s12_a_start_whose_init_fails_leaves_no_new_console_log() {
    if !can_run("s12_a_start_whose_init_fails_leaves_no_new_console_log") {
        return;
    }
    // An init the root does not have: the root was unmounted and removed,
    // but an empty console.log that only this start had made stayed.
    let g = Guest::new("noinit", "[\"/sbin/no-such-init\"]");
    let o = g.unifs(&["start", &g.name]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("command not found"), "{}", stderr(&o));
    assert!(!is_mounted(&g.run().join("root")));
    assert!(!g.run().join("root").exists());
    assert!(!g.run().join("console.log").exists(), "an empty log stayed");
}

/// `guest enter NAME` with its shell's input from `script`.
fn enter(g: &Guest, script: &str) -> Output {
    let mut cmd = g.cmd(&["enter", &g.name]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    child
        .0
        .as_mut()
        .unwrap()
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    super::harness::wait_bounded(child, Duration::from_secs(20))
}

#[test]
fn s12_enter_and_exec_of_a_running_guest_need_no_config() {
    if !can_run("s12_enter_and_exec_of_a_running_guest_need_no_config") {
        return;
    }
    // `enter` read the guest's config for its shell: with NAME.toml removed
    // while the guest runs it failed with "no config for guest NAME", and
    // with NAME.toml edited it ran the new file's shell in the old guest
    // (which may not even have it). What a running guest is entered with
    // comes from its runtime record, as `machinectl shell` and `nsenter`
    // need no unit file.
    let g = Guest::new("noconf", SLEEP);
    g.configure("shell = \"/bin/sh\"", SLEEP);
    ok(&g.unifs(&["start", &g.name]));

    // Edited: another shell, which this guest lacks.
    g.configure("shell = \"/bin/no-such-shell\"", SLEEP);
    let o = enter(&g, "echo in-$(hostname)\nexit 0\n");
    assert!(o.status.success(), "edited config: {}", stderr(&o));
    assert!(stdout(&o).contains("in-"), "{}", stdout(&o));

    // Removed.
    std::fs::remove_file(g.config()).unwrap();
    let o = enter(&g, "echo still-in\nexit 4\n");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stdout(&o).contains("still-in"), "{}", stdout(&o));
    let o = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", "echo exec-ok"]);
    assert_eq!(ok(&o).trim(), "exec-ok");
    let (st, _) = g.status();
    assert_eq!(st["running"], true, "{st}");
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}
