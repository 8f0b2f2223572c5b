//! Review s30-upgrade: a new unifs installed while guests, mounts and stores
//! of older builds are live. Found with real builds of 75f3fce
//! (2026-11-30), b9a5885 (2026-12-01) and b2e2e52 (2026-12-03); a test
//! cannot build old commits, so it crafts the state they leave.

use crate::guest::harness::{can_run, force_clean, ok, stderr};
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
        eprintln!("{test}: skipped: one hierarchy only, every guest has all its groups");
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
