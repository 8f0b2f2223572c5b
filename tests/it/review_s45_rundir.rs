//! Review s45 (rundir): a named guest's run dir (RUN_DIR/NAME: its record,
//! lock, console.log and root's mount point) in trouble while the guest
//! runs: covered by a mount made over RUN_DIR or RUN_DIR/NAME (a tmpfs over
//! /run), its record gone, or RUN_DIR/NAME a FUSE mount whose daemon does
//! not answer; and `unifs run`'s run dir, where only a killed run's keeper
//! report is kept, in a guest tree's view or holding a FIFO by that name.

use crate::common::unifs_bin;
use crate::fs::harness::Mount;
use crate::guest::harness::{
    alive, can_run, ok, parent_of, run_bounded, stderr, stdout, within_30s, TestRoot,
};
use crate::guest::named::Guest;
use crate::review_s20_backup::TmpfsMount;
use crate::review_s36_hung::Hung;
use crate::review_s44_docaudit::names;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

/// A tmpfs mounted over RUN_DIR while a guest runs (/run mounted anew)
/// hides the guest's record and its root's mount. Before, `status` called
/// it `running (unrecorded)` (exit 0), `stop` killed it as processes a
/// killed start left (then failed on its root), `start` killed it and made
/// RUN_DIR/NAME in the tmpfs, and `logs` said it had never been started
/// with this run dir. Now each says the run dir is covered,
/// by what, and what to do; nothing is killed or made in the cover; and
/// with the cover gone the guest is seen and stopped as ever.
#[test]
fn s45_a_guest_whose_run_dir_is_covered_is_said_so_and_left_running() {
    if !can_run("s45_a_guest_whose_run_dir_is_covered_is_said_so_and_left_running") {
        return;
    }
    let g = Guest::new("s45cover", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    let cover = TmpfsMount::at(&g.run_dir);
    let covered = format!("covered by the tmpfs mount at {}", g.run_dir.display());

    let o = g.unifs(&["status", &g.name]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("running (run dir covered)"), "{out}{err}");
    assert!(
        err.contains(&covered) && err.contains("unmount"),
        "{out}{err}"
    );
    assert_eq!(o.status.code(), Some(4), "{out}{err}");
    let st = g.state();
    assert_eq!(
        st["run_dir_covered"],
        g.run_dir.display().to_string(),
        "{st}"
    );

    for command in ["stop", "start", "logs"] {
        let o = match command {
            "stop" => g.unifs(&["stop", "--timeout", "0", &g.name]),
            _ => g.unifs(&[command, &g.name]),
        };
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{command}: {err}");
        assert!(err.contains(&covered), "{command}: {err}");
        assert!(alive(init), "{command} killed the guest's init: {err}");
        let made = names(&g.run_dir);
        assert!(made.is_empty(), "{command} made {made:?} in the cover");
    }

    drop(cover);
    let st = g.state();
    assert_eq!(st["pid"].as_i64(), Some(init), "{st}");
    assert_eq!(st["run_dir_covered"], serde_json::Value::Null, "{st}");
    let out = ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(init));
}

/// The keeper of a guest whose run dir was covered (a tmpfs over RUN_DIR)
/// when its init ended: before, it took the guest's lock by its path,
/// making RUN_DIR/NAME and its lock in the tmpfs, and recorded nothing
/// (exit.json's path was not there). Now it writes through the directory
/// it holds open: exit.json, saying why the guest was not stopped, and a
/// line in console.log, both in the guest's own run dir; nothing in the
/// cover. Uncovered, `status` says how init ended and `stop` cleans up.
#[test]
fn s45_a_keeper_whose_run_dir_is_covered_records_the_end_in_its_own_dir() {
    if !can_run("s45_a_keeper_whose_run_dir_is_covered_records_the_end_in_its_own_dir") {
        return;
    }
    let g = Guest::new("s45keepcov", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    let keeper = parent_of(init);
    let cover = TmpfsMount::at(&g.run_dir);
    let mut kmsg = kernel_log_from_now();
    kill(Pid::from_raw(init as i32), Signal::SIGKILL).unwrap();
    assert!(
        within_30s(|| !alive(keeper.into())),
        "keeper {keeper} lives"
    );
    let made = names(&g.run_dir);
    assert!(made.is_empty(), "the keeper made {made:?} in the cover");
    // The one place it is seen meanwhile: the kernel's log (the journal).
    let logged = read_new_records(&mut kmsg);
    assert!(
        logged
            .iter()
            .any(|r| r.contains(&format!("unifs-keeper[{keeper}]: "))
                && r.contains(&format!(
                    "[unifs: guest {}: its init (pid {init}) ended",
                    g.name
                ))
                && r.contains("covered")),
        "{logged:?}"
    );
    drop(cover);

    let dir = g.run_dir.join(&g.name);
    let exit = std::fs::read_to_string(dir.join("exit.json")).unwrap_or_default();
    let exit: serde_json::Value = serde_json::from_str(&exit)
        .unwrap_or_else(|e| panic!("no exit.json in {}: {e}", dir.display()));
    assert_eq!(exit["signal"], "KILL", "{exit}");
    let why = exit["not_stopped"].as_str().unwrap_or_default();
    assert!(why.contains("covered"), "{exit}");
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    assert!(
        console.contains(&format!(
            "[unifs: guest {}: its init (pid {init}) ended",
            g.name
        )) && console.contains("covered"),
        "{console}"
    );
    let o = g.unifs(&["status", &g.name]);
    let out = stdout(&o);
    assert!(
        out.contains("stopped (stale record, killed by SIGKILL)"),
        "{out}"
    );
    let out = ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    assert!(out.contains("stale runtime record was removed"), "{out}");
    ok(&g.unifs(&["start", &g.name]));
}

/// /dev/kmsg opened at the end of the kernel's log, not waiting for more.
fn kernel_log_from_now() -> std::fs::File {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .unwrap();
    kmsg.seek(SeekFrom::End(0)).unwrap();
    kmsg
}

/// The records logged since the last read (a record per read; EPIPE for
/// records overwritten meanwhile is skipped).
fn read_new_records(kmsg: &mut std::fs::File) -> Vec<String> {
    use std::io::Read;
    let mut records = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => records.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    records
}

/// A guest running without a runtime record: before, `status` and `list`
/// said `running (unrecorded)` and nothing more. Now they say which
/// record is missing, what may have removed it, and what to do.
#[test]
fn s45_running_unrecorded_says_what_is_missing_and_what_to_do() {
    if !can_run("s45_running_unrecorded_says_what_is_missing_and_what_to_do") {
        return;
    }
    let g = Guest::new("s45unrec", "[\"/bin/sleep\", \"1000\"]", false);
    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap();
    let record = g.run_dir.join(&g.name).join("state.json");
    std::fs::rename(&record, record.with_extension("json.by-hand")).unwrap();
    for command in [vec!["status", &g.name], vec!["list"]] {
        let o = g.unifs(&command);
        let (out, err) = (stdout(&o), stderr(&o));
        assert!(out.contains("running (unrecorded)"), "{out}{err}");
        let said = format!(
            "guest {} runs without a runtime record: {} is missing",
            g.name,
            record.display()
        );
        assert!(err.contains(&said), "{command:?}: {err}");
        assert!(
            err.contains(&format!("`unifs guest stop {}`", g.name)),
            "{command:?}: {err}"
        );
    }
    // An unreadable one is said as such.
    std::fs::write(&record, "{").unwrap();
    let err = stderr(&g.unifs(&["status", &g.name]));
    assert!(
        err.contains(&format!("{} is unreadable", record.display())),
        "{err}"
    );
    assert!(alive(init));
}

/// RUN_DIR/NAME a FUSE mount whose daemon is stopped: before, `guest list`
/// (for every guest), `status`, `stop` and `logs` of that guest waited for
/// good
/// (killed after 60 s here). Now `list` lists the others and says which
/// guest's run dir does not answer and what to do; `status`, `stop`,
/// `logs` and `start` of it are refused at once, naming the mount and its
/// daemon; another guest's `status` and `start` are answered.
#[test]
fn s45_a_stalled_mount_at_a_guests_run_dir_hangs_no_command() {
    if !can_run("s45_a_stalled_mount_at_a_guests_run_dir_hangs_no_command") {
        return;
    }
    // The run dir is the test's dir: its `hung` is the stalled mount.
    let h = Hung::new(false);
    std::fs::create_dir(h.dir("config")).unwrap();
    for name in ["hung", "web"] {
        let toml = format!("root = {:?}\ninit = [\"/bin/true\"]\n", h.path("root"));
        std::fs::write(h.dir(&format!("config/{name}.toml")), toml).unwrap();
    }
    let guest = |args: &[&str]| {
        let mut cmd = h.command();
        cmd.env("UNIFS_RUN_DIR", h.dir("")).arg("guest").args(args);
        h.run(cmd)
    };
    let o = guest(&["list"]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("web ") && l.contains("stopped")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("hung ") && l.contains("unknown (run dir does not answer)")),
        "{out}"
    );
    assert!(
        err.contains("guest hung: its run dir") && err.contains("kill -CONT"),
        "{err}"
    );
    for command in ["status", "stop", "logs", "start"] {
        h.refused(&guest(&[command, "hung"]), command);
    }
    let o = guest(&["status", "web"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // Another guest starts (a guard: its start looked at no other's run
    // dir before either); its init ends at once, and its keeper stops it.
    let o = guest(&["start", "web"]);
    assert!(stdout(&o).contains("guest web started"), "{}", stderr(&o));
    ok(&guest(&["stop", "--timeout", "0", "web"]));
}

/// `unifs run --run-dir DIR` with DIR in a guest tree's view (a unifs
/// mount): a killed run's keeper leaves its report there, which that
/// guest reads and changes, and the next run shows and removes what it
/// finds there (a FIFO in place of a report made it wait for good, below).
/// Before, it ran (exit 0); now it is refused, as `guest` commands refuse
/// a run dir in a unifs mount.
#[test]
fn s45_run_refuses_a_run_dir_in_a_guest_trees_view() {
    if !can_run("s45_run_refuses_a_run_dir_in_a_guest_trees_view") {
        return;
    }
    let t = TestRoot::new();
    let (tree, view) = (t.dir.path().join("tree"), t.dir.path().join("view"));
    std::fs::create_dir_all(tree.join("tmp")).unwrap();
    std::fs::create_dir(&view).unwrap();
    let _m = Mount::start(&t.dir.path().join("store"), &tree, &view, &[]);
    let run_dir = view.join("tmp");
    let o = t.sh(&["--run-dir", run_dir.to_str().unwrap()], "true");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("lies in the unifs mount at {}", view.display())),
        "{err}"
    );
}

/// A FIFO named as a keeper report (`run-PID-TAG.keeper`) in a run dir,
/// put there by whoever can write it: before, `guest list` (and `run`,
/// `guest start`, `status`, which read the reports) opened it for reading
/// and waited for a writer, for good (killed after 30 s here). Now it is
/// no report: they go on.
#[test]
fn s45_a_fifo_named_as_a_keeper_report_hangs_no_command() {
    if !can_run("s45_a_fifo_named_as_a_keeper_report_hangs_no_command") {
        return;
    }
    let t = TestRoot::new();
    let (run_dir, config_dir) = (t.dir.path().join("run"), t.dir.path().join("config"));
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::create_dir(&config_dir).unwrap();
    let fifo = run_dir.join("run-1-00000000.keeper");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut list = std::process::Command::new(unifs_bin());
    list.env("UNIFS_RUN_DIR", &run_dir)
        .env("UNIFS_CONFIG_DIR", &config_dir)
        .args(["guest", "list"]);
    ok(&run_bounded(list, Duration::from_secs(30)));
    let run_dir = run_dir.to_str().unwrap();
    ok(&t.sh(&["--run-dir", run_dir], "true"));
}
