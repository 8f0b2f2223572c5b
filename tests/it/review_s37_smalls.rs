//! Review s37 (smalls): three leftovers of session 37.
//!
//! - `manifest -o FILE` renamed its file into place without syncing the
//!   directory: a power cut right after it left no FILE (or the old one).
//! - A guest config's `cap_add` of a capability the host's root lacks (its
//!   bounding set) was said as a bad config: it is the host's limit.
//! - `guest stop` of a configured guest that is not running failed (exit
//!   1), which made `unifs-guest@.service`'s ExecStop fail for a guest
//!   stopped by hand or halted by itself.
//! - `store snapshot FILE` renamed its file into place unsynced too.

use crate::guest::harness::{can_run, ok, stderr, stdout};
use crate::guest::review_s11_life::{Guest, SLEEP};
use crate::review_s34_caps::{guest_as, status, without};
use crate::review_s37_powercut::{runnable, unified, Disk, KINDS};

/// A manifest written with `-o`, then the power cut (nothing committed the
/// journal since): the file is there after it, whole.
#[test]
fn s37_a_manifest_written_with_o_is_on_disk_when_it_returns() {
    let test = "s37_a_manifest_written_with_o_is_on_disk_when_it_returns";
    if !runnable(test) {
        return;
    }
    for kind in KINDS {
        let disk = Disk::new(kind);
        let (store, a, _b) = unified(&disk, false);
        let m = disk.root().join("a.manifest");
        crate::backup::manifest(&store, &a, &m);
        disk.cut(false);
        disk.power_on();
        let text = std::fs::read_to_string(&m)
            .unwrap_or_else(|e| panic!("{kind:?}: {}: {e}", m.display()));
        assert!(text.ends_with('\n'), "{kind:?}: cut short: {text:?}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{kind:?}: {e}: {l}")))
            .collect();
        let entries = lines[0]["entries"].as_u64().expect("a header with entries");
        assert_eq!(entries as usize, lines.len() - 1, "{kind:?}: {text}");
    }
}

/// A catalog snapshot, then the power cut: the file is there after it, a
/// database SQLite opens whole.
#[test]
fn s37_a_store_snapshot_is_on_disk_when_it_returns() {
    let test = "s37_a_store_snapshot_is_on_disk_when_it_returns";
    if !runnable(test) {
        return;
    }
    for kind in KINDS {
        let disk = Disk::new(kind);
        let (store, _a, _b) = unified(&disk, false);
        let snap = disk.root().join("catalog.snap");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_unifs"))
            .arg("--store")
            .arg(&store)
            .args(["store", "snapshot"])
            .arg(&snap)
            .output()
            .unwrap();
        assert!(o.status.success(), "{kind:?}: {}", stderr(&o));
        disk.cut(false);
        disk.power_on();
        let db = rusqlite::Connection::open_with_flags(
            &snap,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| panic!("{kind:?}: {}: {e}", snap.display()));
        let check: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{kind:?}: {}: {e}", snap.display()));
        assert_eq!(check, "ok", "{kind:?}");
        let objects: i64 = db
            .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
            .unwrap();
        assert!(objects > 0, "{kind:?}: no objects in the snapshot");
    }
}

/// A `cap_add` the host's root lacks is the host's limit, said so; a name
/// that is no capability is still the config's fault.
#[test]
fn s37_a_cap_add_the_host_lacks_is_not_a_bad_config() {
    if !can_run("s37_a_cap_add_the_host_lacks_is_not_a_bad_config") {
        return;
    }
    let g = Guest::new("s37capadd", SLEEP);
    let cfg = format!("{}/{}.toml", g.config_dir().display(), g.name);
    g.configure_with(&g.name, &g.t.root(), SLEEP, "cap_add = [\"sys_ptrace\"]");
    let o = guest_as(&g, &without("sys_ptrace"), &["start", &g.name]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the host cannot do what guest config {cfg} asks")),
        "{err}"
    );
    assert!(err.contains("\"sys_ptrace\""), "{err}");
    assert!(err.contains("does not hold it"), "{err}");
    assert!(!err.contains("bad guest config"), "{err}");
    assert!(!err.contains("invalid"), "{err}");
    assert_eq!(status(&g)["running"], false, "{err}");

    g.configure_with(&g.name, &g.t.root(), SLEEP, "cap_add = [\"cap_bogus\"]");
    let o = g.unifs(&["start", &g.name]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("bad guest config {cfg}")), "{err}");
    assert!(err.contains("invalid capability \"cap_bogus\""), "{err}");
    assert_eq!(status(&g)["running"], false, "{err}");
}

/// `guest stop` of a configured guest that is not running (never started,
/// stopped by hand, halted itself) has nothing to do: it succeeds, says
/// so, as `systemctl stop` of a stopped unit and an LSB init script's
/// `stop` do; unifs-guest@.service's ExecStop then does not fail. A name
/// no config knows is still an error.
#[test]
fn s37_stop_of_a_guest_that_is_not_running_succeeds() {
    if !can_run("s37_stop_of_a_guest_that_is_not_running_succeeds") {
        return;
    }
    let g = Guest::new("s37stop", SLEEP);
    let said = format!("guest {} is not running: nothing to stop\n", g.name);
    let o = g.unifs(&["stop", &g.name]);
    assert_eq!(o.status.code(), Some(0), "never started: {}", stderr(&o));
    assert_eq!(stdout(&o), said);
    assert_eq!(stderr(&o), "");
    ok(&g.unifs(&["start", &g.name]));
    ok(&g.unifs(&["stop", "--timeout", "0", &g.name]));
    // Stopped by hand, then by the unit.
    let o = g.unifs(&["stop", &g.name]);
    assert_eq!(o.status.code(), Some(0), "stopped: {}", stderr(&o));
    assert_eq!(stdout(&o), said);
    let o = g.unifs(&["stop", "s37-nobody-configured-this"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no config for guest"), "{}", stderr(&o));
}
