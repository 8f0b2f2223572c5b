//! Review s30-upgrade: a new unifs installed while guests, mounts and stores
//! of older builds are live. Found with real builds of 75f3fce
//! (2026-11-30), b9a5885 (2026-12-01) and b2e2e52 (2026-12-03); a test
//! cannot build old commits, so it crafts the state they leave.

use crate::common::proc_stat;
use crate::guest::harness::{alive, can_run, force_clean, ok, stderr, within_30s};
use crate::guest::named::Guest;
use std::path::PathBuf;

/// Stops the guest, then removes what its record no longer names.
struct Cleanup(Guest);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.unifs(&["stop", "--timeout", "0", &self.0.name]);
        force_clean(&self.0.name, &self.0.run_dir);
    }
}

/// The guest's runtime record: RUN_DIR/NAME/state.json.
fn record_path(g: &Guest) -> PathBuf {
    g.run_dir.join(&g.name).join("state.json")
}

/// A guest started by a build before d553d9e (2026-12-01; 75f3fce
/// here) has groups only in the hierarchies its limits use (v1 memory and
/// pids here), and its record lists only those. `guest update --pids` of
/// the new build refused it ("they need the group …/blkio/unifs/NAME,
/// which the running guest has none of: change its config and restart
/// it") though the pids group is there: it asked for a group in every
/// hierarchy, as a guest gets now. Only groups the new values go to are
/// needed.
#[test]
fn update_of_a_guest_an_older_build_started_needs_only_the_groups_it_writes() {
    let test = "update_of_a_guest_an_older_build_started_needs_only_the_groups_it_writes";
    if !can_run(test) {
        return;
    }
    let g = Cleanup(Guest::new("s30upd", "[\"/bin/sleep\", \"1000\"]", true));
    let g = &g.0;
    ok(&g.unifs(&["start", &g.name]));

    // The record as the older build wrote it: the pids group alone.
    let path = record_path(g);
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let all: Vec<PathBuf> = rec["cgroup"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .collect();
    let pids: Vec<PathBuf> = all
        .iter()
        .filter(|d| d.join("pids.max").exists())
        .cloned()
        .collect();
    assert_eq!(pids.len(), 1, "{all:?}");
    if all.len() == 1 {
        crate::common::skip(
            test,
            "one cgroup hierarchy only (v2): every guest has all its groups",
        );
        return;
    }
    rec["cgroup"]["groups"] = serde_json::json!(pids);
    std::fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();

    let o = g.unifs(&["update", "--pids", "100", &g.name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let max = std::fs::read_to_string(pids[0].join("pids.max")).unwrap();
    assert_eq!(max.trim(), "100");
    assert_eq!(g.state()["limits"]["pids"], 100);
}

/// A start by a unifs built before bd63e1a (2026-12-01; 75f3fce here) runs
/// init without a keeper and leaves `exit.json` as the last keeper wrote
/// it. Once this build stopped such a guest, `status` said `stopped
/// (exited 7)`, the end of the init before it, though docs/guests.md
/// promises no `last_exit` for a guest an older unifs started (its end is
/// unknown). Crafted here: a keeper killed (as docs say, its guest's end
/// is then unknown too) and the earlier end put back.
#[test]
fn stop_of_a_guest_started_without_a_keeper_reports_no_earlier_end() {
    let test = "stop_of_a_guest_started_without_a_keeper_reports_no_earlier_end";
    if !can_run(test) {
        return;
    }
    let g = Cleanup(Guest::new("s30exit", "[\"/bin/sleep\", \"1000\"]", true));
    let g = &g.0;
    ok(&g.unifs(&["start", &g.name]));
    let first = g.state()["pid"].as_i64().unwrap();
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    let exit = g.run_dir.join(&g.name).join("exit.json");
    assert!(
        within_30s(|| exit.exists()),
        "the keeper wrote no exit.json"
    );
    let earlier = std::fs::read(&exit).unwrap();

    ok(&g.unifs(&["start", &g.name]));
    let init = g.state()["pid"].as_i64().unwrap() as u32;
    let keeper: i32 = proc_stat(init)[1].parse().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{keeper}/comm")).unwrap();
    assert_eq!(comm.trim(), "unifs-keeper");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        within_30s(|| !alive(keeper as i64)),
        "keeper {keeper} lives"
    );
    std::fs::write(&exit, &earlier).unwrap();

    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    let st = g.state();
    assert_eq!(st["running"], false, "{st}");
    assert!(
        st["last_exit"].is_null(),
        "the end of init {first} shown for init {init}: {st}"
    );
}

/// A guest a unifs built before ea9ee4a (2026-12-02; 75f3fce and b9a5885
/// here) started runs on the overlay with no `mount.log`: `guest logs
/// --mount` said "it was never started on the overlay with this run dir",
/// of a guest running on the overlay from that very run dir.
#[test]
fn logs_mount_of_a_guest_an_older_build_started_says_why_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let (config, run) = (dir.path().join("config"), dir.path().join("run"));
    std::fs::create_dir_all(run.join("web")).unwrap();
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("web.toml"), "root = \"/nonexistent\"\n").unwrap();
    std::fs::write(run.join("web/console.log"), "booted\n").unwrap();
    let o = std::process::Command::new(crate::common::unifs_bin())
        .env("UNIFS_CONFIG_DIR", &config)
        .env("UNIFS_RUN_DIR", &run)
        .args(["guest", "logs", "--mount", "web"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("mount.log") && err.contains("built before 2026-12-02"),
        "{err}"
    );
}
