//! Review s46 (rundirrev2) of "rundir2": who `status`/`list` take for a
//! guest's keeper when its run dir is covered (anyone may name a process
//! unifs-keeper), and what `stop` leaves of a root whose run dir was
//! bound onto itself with its mounts.

use crate::guest::harness::{can_run, ok, stderr, stdout, within_30s, KillOnDrop};
use crate::guest::named::Guest;
use crate::review_s20_backup::TmpfsMount;
use std::process::{Command, Stdio};

/// `argv` run as user nobody (uid 65534, no groups).
fn as_nobody(argv: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Field 22 of /proc/PID/stat: the process's start time, in ticks.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(19).unwrap().parse().unwrap()
}

/// User nobody, in a user and mount namespace of its own, makes RUN_DIR/NAME
/// there (a tmpfs over the top directory of the run dir's path), holds it
/// open and names itself unifs-keeper (its comm: the name of the file it
/// ran): /proc then shows a "keeper" holding /run/…/NAME. Started before
/// the guest's keeper, it came first in /proc, and once the guest's run dir
/// was covered, `status` read the record put in that directory: the pid
/// and start of the poser's choosing (here its own: "running", pid of the
/// poser). Now only root's keepers holding a directory on a mount of our
/// namespace are read: the guest's own record is shown.
#[test]
fn s46_a_process_posing_as_a_keeper_does_not_feed_status_a_record() {
    if !can_run("s46_a_process_posing_as_a_keeper_does_not_feed_status_a_record") {
        return;
    }
    let g = Guest::new("s46poser", "[\"/bin/sleep\", \"1000\"]", false);
    let top = g.run_dir.ancestors().nth(g.run_dir.ancestors().count() - 2);
    let top = top.unwrap().to_str().unwrap().to_string();
    // Its state.json made by itself, to be written by the test (root may
    // write a file of that tmpfs, not make one: its uid is not mapped).
    let script = "mount -t tmpfs s46poser \"$1\" && mkdir -p \"$2/$3\" && \
                  : >\"$2/$3/state.json\" && chmod 666 \"$2/$3/state.json\" && \
                  ln -s /bin/sleep \"$1/unifs-keeper\" && exec 3<\"$2/$3\" && \
                  exec \"$1/unifs-keeper\" 1000";
    let run_dir = g.run_dir.to_str().unwrap();
    let args = [
        "unshare", "-Urm", "sh", "-c", script, "sh", &top, run_dir, &g.name,
    ];
    let poser = KillOnDrop(Some(as_nobody(&args).spawn().unwrap()));
    let pid = poser.0.as_ref().unwrap().id();
    let comm = format!("/proc/{pid}/comm");
    assert!(
        within_30s(|| std::fs::read_to_string(&comm).is_ok_and(|c| c == "unifs-keeper\n")),
        "the poser did not get ready"
    );
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    let real = g.run_dir.join(&g.name).join("state.json");
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(real).unwrap()).unwrap();
    forged["pid"] = pid.into();
    forged["start_time"] = start_time(pid).into();
    let held = format!("/proc/{pid}/fd/3/state.json");
    std::fs::write(held, serde_json::to_vec(&forged).unwrap()).unwrap();
    let cover = TmpfsMount::at(&g.run_dir);
    let st = g.state();
    assert_eq!(st["pid"].as_i64(), Some(init), "{st}");
    let o = g.unifs(&["status", &g.name]);
    let out = stdout(&o);
    assert!(!out.contains(&format!("{pid}")), "{out}");
    drop(cover);
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
}

/// The mounts the table lists at `point`.
fn mounts_at(point: &std::path::Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = point.to_str().unwrap();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(point))
        .count()
}

/// RUN_DIR bound onto itself with its mounts after the start (`mount
/// --rbind X X`): the root's mount is copied onto the new mount, the
/// original hidden under it. `stop` unmounted the copy, the path's, and
/// killed the daemon that still served the original: that was left
/// mounted, hidden and dead.
#[test]
fn s46_stop_after_an_rbind_of_the_run_dir_leaves_no_root_mounted() {
    if !can_run("s46_stop_after_an_rbind_of_the_run_dir_leaves_no_root_mounted") {
        return;
    }
    let s =
        crate::review_s46_rundir2::started_in_own_tmpfs("s46rbstop", "[\"/bin/sleep\", \"1000\"]");
    let g = &s.g;
    let flags = nix::mount::MsFlags::MS_REC;
    let _bind = crate::review_s45_rundirrev::Bind::new(&g.run_dir, &g.run_dir, flags);
    let root = std::fs::canonicalize(&g.run_dir)
        .unwrap()
        .join(&g.name)
        .join("root");
    assert_eq!(mounts_at(&root), 2);
    let o = g.unifs(&["stop", "--timeout", "0", &g.name]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert_eq!(mounts_at(&root), 0, "{out}{err}");
}
