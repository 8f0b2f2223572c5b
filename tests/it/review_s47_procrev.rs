//! Review of s47's procscan: the bounded reads of other processes'
//! cmdlines (one late read per look, not one per stuck process), and the
//! probe claims of /run/unifs-probes, which stayed behind for good.

use crate::common::skip;
use crate::fs::harness::{wait_until, World};
use crate::guest::harness::{can_run, groups, ok, stderr, stdout, KillOnDrop};
use crate::guest::named::Guest;
use crate::guest::review_s11_life::SLEEP;
use crate::review_s46_rundir2::BusyRunDir;
use crate::review_s47_procscan::{big, thread_state, Continue, STUCK};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How many processes of the guest are stuck: each waits for good on its
/// own memory-map lock (see procscan's STUCK).
const STUCK_N: usize = 3;

/// `guest ps` of a guest with several processes whose cmdline cannot be
/// read (each one's memory-map lock held on a stalled FUSE mount) waited
/// 1 s for each, leaving a thread and an fd behind for each, so thousands
/// of them made ps take thousands of seconds. Now the first late read
/// ends the reading of arguments for that look: one process is said
/// "memory map is locked", the others after it "another's were late".
/// Before: all 3 were waited for and said "its memory map is locked".
#[test]
fn s47_ps_of_a_guest_with_several_stuck_processes_waits_for_one_read_alone() {
    let test = "s47_ps_of_a_guest_with_several_stuck_processes_waits_for_one_read_alone";
    if !can_run(test) {
        return;
    }
    let python = Command::new("python3")
        .args(["-c", "import ctypes"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        return skip(test, "python3 is not installed");
    }
    // Dropped last: stopping it ends what is left in its groups.
    let g = Guest::new("s47procrevps", SLEEP, false);
    ok(&g.unifs(&["start", &g.name]));
    let w = World::new();
    let dir = w.dir("s47-procrev-g");
    std::fs::write(dir.join("big"), big()).unwrap();
    let m = w.mount(&dir, "s47-procrev-mp", &["nopassthrough"]);
    let go = w.tmp.path().join("go");
    let mut stuck = Vec::new();
    let mut ready = Vec::new();
    for i in 0..STUCK_N {
        let (lock, up) = (
            w.tmp.path().join(format!("lock{i}")),
            w.tmp.path().join(format!("ready{i}")),
        );
        std::fs::write(&lock, "").unwrap();
        let child = Command::new("python3")
            .arg("-c")
            .arg(STUCK)
            .arg(m.path("big"))
            .arg(&lock)
            .arg(&up)
            .arg(&go)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        stuck.push(KillOnDrop(Some(child)));
        ready.push(up);
    }
    let pids: Vec<u32> = stuck.iter().map(|k| k.0.as_ref().unwrap().id()).collect();
    assert!(wait_until(Duration::from_secs(30), || ready
        .iter()
        .all(|r| r.exists())));
    // Into the guest's groups (its `guest` leaf where there is one).
    let leaves: Vec<PathBuf> = groups(&g.name, &g.run_dir)
        .into_iter()
        .filter(|d| d.is_dir())
        .map(|d| match d.join("guest").is_dir() {
            true => d.join("guest"),
            false => d,
        })
        .collect();
    for pid in &pids {
        let moved = leaves
            .iter()
            .filter(|l| std::fs::write(l.join("cgroup.procs"), pid.to_string()).is_ok())
            .count();
        assert!(moved > 0, "pid {pid} went into none of {leaves:?}");
    }
    let _cont = Continue::stop(m.pid() as i32);
    std::fs::write(&go, "").unwrap();
    for &pid in &pids {
        assert!(
            wait_until(Duration::from_secs(30), || thread_state(pid, pid)
                == Some('D')),
            "process {pid} never got stuck: {:?}",
            thread_state(pid, pid)
        );
    }

    let o = g.unifs(&["ps", &g.name]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let line = |pid: u32| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
            .unwrap_or_else(|| panic!("pid {pid} not listed:\n{out}{err}"))
    };
    for &pid in &pids {
        assert!(line(pid).contains("arguments unread"), "{out}");
    }
    let waited = out.matches("its memory map is locked").count();
    assert_eq!(waited, 1, "reads waited for, one per stuck process:\n{out}");
    let skipped = out.matches("another's were late").count();
    assert!(skipped >= STUCK_N - 1, "{out}");
}

/// The file of /run/unifs-probes a look at a mount claims its probe by.
fn claim_file(b: &BusyRunDir) -> PathBuf {
    let digest = blake3::hash(b.mount.dir.as_os_str().as_encoded_bytes()).to_hex();
    PathBuf::from("/run/unifs-probes").join(&digest[..32])
}

/// Each look at a mount (`guest list` of a run dir whose RUN_DIR/NAME is
/// one) left its claim file in /run/unifs-probes for good: one for every
/// root ever probed. Now the claim's holder removes it, still locked, as
/// it lets go. Before: the file was there after the list.
#[test]
fn s47_a_look_at_a_mount_leaves_no_probe_claim_file() {
    if !can_run("s47_a_look_at_a_mount_leaves_no_probe_claim_file") {
        return;
    }
    let b = BusyRunDir::new(0);
    let o = b.list();
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(!out.contains("does not answer"), "{out}{err}");
    let file = claim_file(&b);
    assert!(!file.exists(), "{} left behind", file.display());
}

/// Guard: a probe still waiting keeps its claim (its file stays while it
/// holds it), so looks made meanwhile, two at once, start no other probe
/// and leave its file alone.
/// (Fails when the claim's file is removed as it is taken: two lists then
/// left 2 probes.)
#[test]
fn s47_looks_racing_while_a_probe_waits_start_no_other_probe() {
    if !can_run("s47_looks_racing_while_a_probe_waits_start_no_other_probe") {
        return;
    }
    let b = std::sync::Arc::new(BusyRunDir::new(200_000));
    let o = b.list();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let file = claim_file(&b);
    let first = b.probes();
    assert_eq!(first.len(), 1, "{first:?}");
    let racing: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.list())
        })
        .collect();
    for r in racing {
        let o = r.join().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let probes = b.probes();
    assert!(probes.len() <= 1, "probes {probes:?}");
    // The looks that found it held left its file (and its claim) alone.
    assert!(file.exists(), "the waiting probe's claim has no file");
}

/// Stops guest `name` (of `g`'s dirs) on drop.
struct StopOnDrop<'a>(&'a Guest, String);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.unifs(&["stop", "--timeout", "0", &self.1]);
    }
}

/// Guard for KeptOnce (`list` scans the keepers' fds once for all covered
/// guests): with three guests of one run dir running and the run dir
/// covered, `list` shows each with its own pid, read through the run dir
/// its own keeper holds. (Fails when KeptOnce::of gives the first kept run
/// dir whatever the name: all three listed with one pid.)
#[test]
fn s47_list_of_several_covered_guests_shows_each_its_own_pid() {
    if !can_run("s47_list_of_several_covered_guests_shows_each_its_own_pid") {
        return;
    }
    let g = Guest::new("s47procrevkept", SLEEP, false);
    let config_dir = g.config().parent().unwrap().to_path_buf();
    let roots: Vec<crate::guest::harness::TestRoot> = (0..2)
        .map(|_| crate::guest::harness::TestRoot::new())
        .collect();
    let mut names = vec![g.name.clone()];
    for (i, t) in roots.iter().enumerate() {
        let name = format!("{}-{i}", g.name);
        let toml = format!(
            "root = {:?}\nroot_mount = \"overlay\"\ninit = {SLEEP}\n[limits]\npids = 64\n",
            t.root()
        );
        std::fs::write(config_dir.join(format!("{name}.toml")), toml).unwrap();
        names.push(name);
    }
    let mut stops = Vec::new();
    let mut inits = Vec::new();
    for n in &names {
        ok(&g.unifs(&["start", n]));
        stops.push(StopOnDrop(&g, n.clone()));
        let o = g.unifs(&["status", "--json", n]);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        inits.push(st["pid"].as_i64().unwrap_or_else(|| panic!("{st}")));
    }
    // Dropped first: the guests are stopped uncovered.
    let _cover = crate::review_s20_backup::TmpfsMount::at(&g.run_dir);
    let o = g.unifs(&["list"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    for (n, init) in names.iter().zip(&inits) {
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(n));
        assert!(
            line.is_some_and(|l| l.contains("running (run dir covered)")
                && l.split_whitespace().any(|w| w == init.to_string())),
            "{n} (init {init}):\n{out}{err}"
        );
    }
}
