//! Review s22: a named guest's keeper outlives a `guest start` interrupted
//! while the keeper starts init.

use super::harness::{can_run, is_mounted, run_bounded, within_30s, KillOnDrop, TestRoot};
use crate::common::{require_strace, unifs_bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Stops the guest and unmounts its root, whatever the test left.
struct Guest {
    t: TestRoot,
    name: String,
    config_dir: PathBuf,
    run_dir: PathBuf,
}

impl Guest {
    fn cmd(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("UNIFS_CONFIG_DIR", &self.config_dir)
            .env("UNIFS_RUN_DIR", &self.run_dir);
        cmd
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let mut stop = self.cmd(&unifs_bin());
        stop.args(["guest", "stop", "--timeout", "0", &self.name]);
        let _ = run_bounded(stop, Duration::from_secs(30));
        let root = self.run_dir.join(&self.name).join("root");
        if is_mounted(&root) {
            let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The children of `parent`, from /proc.
pub(crate) fn children(parent: u32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// What was wrong: Ctrl-C on `guest start` while its keeper started init
/// (the keeper, a session of its own, is missed by it) ended `start`; the
/// keeper then wrote its report to the dead `start` and died of SIGPIPE
/// (set back to its default for `unifs … | head`). The guest ran on without
/// its keeper, and how init ended was never recorded (no exit.json;
/// `status` said only "stopped"). Now the failed report costs nothing:
/// the keeper stays init's parent and records its exit status. (strace
/// holds init's pivot_root until `start` is gone.) `start` is killed here
/// (SIGKILL): a SIGINT it now holds, and stops the guest once init runs
/// (`review_s40_keeper4`), but nothing can hold a SIGKILL.
#[test]
fn review_s22_an_interrupted_start_keeps_the_guests_keeper() {
    let test = "review_s22_an_interrupted_start_keeps_the_guests_keeper";
    if !can_run(test) || !require_strace(test) {
        return;
    }
    let t = TestRoot::new();
    let config_dir = t.dir.path().join("config");
    let run_dir = t.dir.path().join("run");
    std::fs::create_dir(&config_dir).unwrap();
    let name = format!("t{}-keeper", std::process::id());
    std::fs::write(
        config_dir.join(format!("{name}.toml")),
        format!(
            "root = {:?}\ninit = [\"/bin/sh\", \"-c\", \"sleep 1; exit 7\"]\n",
            t.root()
        ),
    )
    .unwrap();
    let g = Guest {
        t,
        name,
        config_dir,
        run_dir,
    };
    let trace = g.t.dir.path().join("trace");
    let mut start = g.cmd(Path::new("strace"));
    // -I1: SIGINT detaches strace from everything it traces.
    start
        .args(["-I1", "-f", "-o"])
        .arg(&trace)
        .args(["-e", "trace=pivot_root"])
        .args(["-e", "inject=pivot_root:delay_enter=60000000:when=1"])
        .arg(unifs_bin())
        .args(["guest", "start", &g.name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut strace = KillOnDrop(Some(start.spawn().unwrap()));
    let strace_pid = strace.0.as_ref().unwrap().id();
    assert!(
        poll(Duration::from_secs(30), || std::fs::read_to_string(&trace)
            .is_ok_and(|s| s.contains("pivot_root("))),
        "init never reached its pivot_root"
    );
    // The keeper waits for init; `start` waits for the keeper's report.
    let start_pid = *children(strace_pid)
        .first()
        .expect("`guest start` under strace");
    // SAFETY: kill has no memory preconditions; strace has not reaped it.
    assert_eq!(unsafe { libc::kill(start_pid, libc::SIGKILL) }, 0);
    // (strace pads the pid to the width of the widest.)
    let killed = |l: &str| {
        l.split_once(' ').is_some_and(|(pid, rest)| {
            pid == start_pid.to_string() && rest.trim() == "+++ killed by SIGKILL +++"
        })
    };
    assert!(
        poll(Duration::from_secs(10), || std::fs::read_to_string(&trace)
            .is_ok_and(|s| s.lines().any(killed))),
        "`guest start` did not die of its SIGKILL: {}",
        std::fs::read_to_string(&trace).unwrap_or_default()
    );
    // Init goes on; its keeper reports to nobody.
    // SAFETY: as above; strace is our child, not yet reaped.
    assert_eq!(unsafe { libc::kill(strace_pid as i32, libc::SIGINT) }, 0);
    let c = strace.0.as_mut().unwrap();
    assert!(
        within_30s(|| c.try_wait().unwrap().is_some()),
        "strace did not detach"
    );

    let exit = g.run_dir.join(&g.name).join("exit.json");
    assert!(
        poll(Duration::from_secs(15), || exit.exists()),
        "no {} after init's end: its keeper is gone",
        exit.display()
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&exit).unwrap()).unwrap();
    assert_eq!(json["code"], 7, "{json}");
}
