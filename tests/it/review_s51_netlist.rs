//! Session 51 (netlist): a veth guest's host end is looked for with `ip`
//! alone (netlink: the network namespace unifs runs in), never in
//! /sys/class/net, which is the namespace's of whoever mounted that sysfs;
//! and `guest list` lists the host's links once for all its guests.
//! The guests run under `nsenter --net` in a namespace of the test's
//! (named `s51…` with a number of the pid, deleted by a guard), whose
//! /sys stays the host's: the mismatch `nsenter` leaves, and no host
//! address or interface of theirs.

use crate::guest::harness::{ok, run_bounded, stderr};
use crate::guest::named::Guest;
use crate::review_s43_netnat::{may_run, n, veth_guest_unstarted};
use crate::review_s46_netv6::{run, Netns};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `cmd` (a `unifs` with its environment) run in namespace `ns` by
/// `nsenter --net`, which leaves /sys the host's.
fn under_nsenter(ns: &Netns, cmd: &Command) -> Command {
    let mut entered = ns.exec(&["--"]);
    entered.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            entered.env(key, value);
        }
    }
    entered
}

/// `g`'s `unifs guest ARGS` in `ns`, waited for (60 s at most).
fn in_ns(ns: &Netns, g: &Guest, args: &[&str]) -> Output {
    run_bounded(under_nsenter(ns, &g.cmd(args)), Duration::from_secs(60))
}

/// Whether `ns` has interface `dev`.
fn has_link(ns: &Netns, dev: &str) -> bool {
    let shown = Command::new("ip")
        .args(["-n", &ns.0, "link", "show", dev])
        .output()
        .unwrap();
    shown.status.success()
}

/// `g`'s runtime record.
fn record_path(g: &Guest) -> PathBuf {
    g.run_dir.join(&g.name).join("state.json")
}

/// A routed veth guest `s51{N}{tag}` started in namespace `ns` (the test's:
/// `s51{N}{tag}`), its own network namespace held (`ip netns attach`, as by
/// any process or mount of it) so that its host end outlives its init until
/// a clean-up deletes it; `edit` then makes of it what the clean-up is
/// given: its stop in `ns` (as its start, under `nsenter --net`) deletes
/// its host end. Before, the proof that `ve-NAME` is the guest's
/// (`host_ifindex_owned_by`) read /sys/class/net/ve-NAME, the host's,
/// found none, and left it there.
fn stop_deletes_its_own_host_end(test: &str, tag: char, edit: impl FnOnce(&Guest)) {
    if !may_run(test) {
        return;
    }
    let n = n();
    let name = format!("s51{n}{tag}");
    let ns = Netns::new(name.clone());
    let g = veth_guest_unstarted(&name, &format!("10.66.{n}"), false);
    let o = in_ns(&ns, &g, &["start", &name]);
    assert!(o.status.success(), "start: {}", stderr(&o));
    let port = format!("ve-{name}");
    assert!(has_link(&ns, &port), "no {port} in {}", ns.0);
    assert!(!Path::new("/sys/class/net").join(&port).exists());
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record_path(&g)).unwrap()).unwrap();
    let pid = rec["pid"].as_i64().unwrap();
    let held = Netns(format!("s51{n}{tag}held"));
    run(&["ip", "netns", "attach", &held.0, &pid.to_string()]);
    edit(&g);

    // Its clean-up waits for the host's veth lock, which other tests hold
    // for seconds on purpose: not taken within its 3 s, it leaves ve-NAME
    // to its namespace, held here.
    let mut stop = g.cmd(&["stop", &name]);
    stop.env("UNIFS_TEST_CLEANUP_LOCK_MS", "60000");
    let o = run_bounded(under_nsenter(&ns, &stop), Duration::from_secs(120));
    assert!(o.status.success(), "stop: {}", stderr(&o));
    assert!(
        !has_link(&ns, &port),
        "the stop left its guest's {port} (its namespace held): {}",
        stderr(&o)
    );
    drop(held);
}

/// A record of a unifs before 2026-12-01 keeps no host end index: `stop`
/// proves `ve-NAME` the guest's while its init lives, and deletes it.
#[test]
fn s51_a_stop_under_nsenter_deletes_an_old_records_host_end() {
    let test = "s51_a_stop_under_nsenter_deletes_an_old_records_host_end";
    stop_deletes_its_own_host_end(test, 'o', |g| {
        let mut rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(record_path(g)).unwrap()).unwrap();
        let fields = rec.as_object_mut().unwrap();
        assert!(fields.remove("host_ifindex").is_some(), "{rec}");
        std::fs::write(record_path(g), serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    });
}

/// A guest without a record (its start killed before it wrote it): `stop`
/// proves `ve-NAME` its own before it kills its processes, and deletes it.
#[test]
fn s51_a_stop_under_nsenter_deletes_an_unrecorded_guests_host_end() {
    let test = "s51_a_stop_under_nsenter_deletes_an_unrecorded_guests_host_end";
    stop_deletes_its_own_host_end(test, 'u', |g| {
        std::fs::remove_file(record_path(g)).unwrap();
    });
}

/// A guest of another config than `g`'s, run from `g`'s config and run
/// dirs, stopped (and its root unmounted) when dropped.
pub(crate) struct Sibling<'a> {
    of: &'a Guest,
    pub(crate) name: String,
    _own: Guest,
}

impl Drop for Sibling<'_> {
    fn drop(&mut self) {
        let _ = self.of.unifs(&["stop", "--timeout", "0", &self.name]);
        let root = self.of.run_dir.join(&self.name).join("root");
        if crate::guest::harness::is_mounted(&root) {
            let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// `other`'s config moved to `g`'s config dir: `other` runs beside `g`.
pub(crate) fn beside<'a>(g: &'a Guest, other: Guest) -> Sibling<'a> {
    let to = g.config().with_file_name(format!("{}.toml", other.name));
    std::fs::rename(other.config(), &to).unwrap();
    Sibling {
        of: g,
        name: other.name.clone(),
        _own: other,
    }
}

/// A directory `ip` that logs each of its runs' arguments (a line each) to
/// `log` and runs the `ip` the test's PATH finds.
fn logging_ip(dir: &Path, log: &Path) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let real = std::env::split_paths(&path)
        .map(|d| d.join("ip"))
        .find(|p| p.is_file())
        .expect("no ip on PATH");
    let bin = dir.join("logging-ip");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
        log.display(),
        real.display()
    );
    let ip = bin.join("ip");
    std::fs::write(&ip, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ip, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The runs of `ip -o link show` in `log`.
fn link_listings(log: &Path) -> usize {
    let logged = std::fs::read_to_string(log).unwrap_or_default();
    logged.lines().filter(|l| *l == "-o link show").count()
}

/// `guest list` lists the host's links once for all its veth guests
/// (through an `ip` of the test's, first on PATH, which unifs finds there),
/// and names each guest's host end as `guest status` does. Before, each
/// veth guest's status ran `ip -o link show` of its own: two here.
#[test]
fn s51_list_lists_the_links_once_for_all_veth_guests() {
    let test = "s51_list_lists_the_links_once_for_all_veth_guests";
    if !may_run(test) {
        return;
    }
    let n = n();
    let ns = Netns::new(format!("s51{n}l"));
    let g = veth_guest_unstarted(&format!("s51{n}l"), &format!("10.66.{n}"), false);
    let other = veth_guest_unstarted(&format!("s51{n}m"), &format!("10.67.{n}"), false);
    let h = beside(&g, other);
    for name in [&g.name, &h.name] {
        let o = in_ns(&ns, &g, &["start", name]);
        assert!(o.status.success(), "start {name}: {}", stderr(&o));
    }
    let log = g.t.dir.path().join("ip.log");
    let wrapped = logging_ip(g.t.dir.path(), &log);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![wrapped];
    dirs.extend(std::env::split_paths(&path));
    let path: OsString = std::env::join_paths(dirs).unwrap();
    let logged = |args: &[&str]| {
        let _ = std::fs::remove_file(&log);
        let mut cmd = g.cmd(args);
        cmd.env("PATH", &path);
        let o = run_bounded(under_nsenter(&ns, &cmd), Duration::from_secs(60));
        (ok(&o), link_listings(&log))
    };

    let (list, listings) = logged(&["list", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&list).unwrap();
    for name in [&g.name, &h.name] {
        let listed = all.as_array().unwrap().iter().find(|s| s["name"] == **name);
        let listed = listed.unwrap_or_else(|| panic!("{name} not listed: {list}"));
        assert_eq!(listed["host_interface"], format!("ve-{name}"), "{list}");
        let (status, one) = logged(&["status", "--json", name]);
        assert_eq!(one, 1, "`ip -o link show` runs of a status");
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        for field in ["host_interface", "mac_address", "running", "pid"] {
            assert_eq!(listed[field], status[field], "{field}: {list}");
        }
    }
    assert_eq!(
        listings, 1,
        "`ip -o link show` runs of a list of two veth guests"
    );
    for name in [&h.name, &g.name] {
        let o = in_ns(&ns, &g, &["stop", name]);
        assert!(o.status.success(), "stop {name}: {}", stderr(&o));
    }
}
