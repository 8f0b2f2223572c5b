//! Session 49 (netleft): what session 48's `lock_mac` left. A `unifs run
//! --lock-mac` showed nothing of the MAC address its port is locked to;
//! and a stale record's clean-up in one run dir deleted the port filter
//! (nftables table) of a guest of the same name just started from another.
//! Everything made is named `s49…` with a number of the pid and removed by
//! guards.

use crate::common::unifs_bin;
use crate::guest::harness::{
    kill_init_keeperless, ok, run_bounded, stderr, stdout, wait_bounded, within_30s, KillOnDrop,
    TestRoot,
};
use crate::guest::named::Guest;
use crate::guest::review_s11_life::Continue;
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s46_netv6::{bridged_guest, may_run, n, Link};
use crate::review_s47_bridgelock::{set_lock_mac, up_bridge};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The netdev tables unifs keeps for port `port` (any interface of that
/// name), as `nft list tables netdev` names them.
pub(crate) fn port_tables(port: &str) -> Vec<String> {
    let out = Command::new("nft")
        .args(["list", "tables", "netdev"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    listed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table netdev "))
        .filter(|t| {
            let Some(rest) = t.strip_prefix("unifs-lock-") else {
                return false;
            };
            rest == port
                || rest.split_once('-').is_some_and(|(i, r)| {
                    r == port && !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())
                })
        })
        .map(str::to_string)
        .collect()
}

/// Every table of port `port`, deleted when dropped (a failed test's).
pub(crate) struct PortTables(pub(crate) String);

impl Drop for PortTables {
    fn drop(&mut self) {
        for table in port_tables(&self.0) {
            let _ = Command::new("nft")
                .args(["delete", "table", "netdev", &table])
                .output();
        }
    }
}

/// A `unifs -v run --lock-mac` names the MAC address its port is locked
/// to with its host end, as `guest status` does a named guest's (`mac:`):
/// the run's name is new each run, and so is the address, which nothing
/// else showed. Before: `unifs: guest network: host end ve-… (eth0 in the
/// guest)` alone.
/// `unifs -v run` of `t`'s root (its run dir in `t`) on a veth at `ip`
/// on bridge `br`, its port locked (`--lock-mac`): the command to add
/// the guest's command to.
fn locked_run(t: &TestRoot, ip: &str, br: &str) -> Command {
    let mut cmd = Command::new(unifs_bin());
    cmd.args(["-v", "run", "--run-dir"]).arg(t.dir.path());
    cmd.arg("--root").arg(t.root());
    cmd.args(["--net", "veth", "--ip", ip, "--bridge", br, "--lock-mac"]);
    cmd
}

#[test]
fn s49_a_locked_run_names_its_mac_address() {
    let test = "s49_a_locked_run_names_its_mac_address";
    if !may_run(test) {
        return;
    }
    let n = n();
    let br = up_bridge(format!("s49{n}r"));
    let t = TestRoot::new();
    let ip = format!("10.64.{n}.2/24");
    let mut cmd = locked_run(&t, &ip, &br.0);
    cmd.args(["--", "/bin/sh", "-c", "cat /sys/class/net/eth0/address"]);
    cmd.stdin(Stdio::null());
    let o = run_bounded(cmd, Duration::from_secs(60));
    let eth0 = ok(&o).trim().to_string();
    assert_eq!(eth0.len(), 17, "{o:?}");
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("guest network: host end "))
        .unwrap_or_else(|| panic!("no host end named: {err}"));
    assert!(
        line.contains(&format!("eth0 {eth0}, the port locked to it")),
        "the locked address is not named: {line}"
    );
    // Nothing left of the run: its table went with it.
    let port = line
        .split("host end ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let _tables = PortTables(port.clone());
    assert!(port_tables(&port).is_empty(), "{port}'s table was left");
}

/// Guest `s49{N}{tag}`, locked on bridge `br` at `10.64.{N}.{last}`, with
/// a run dir of its own.
pub(crate) fn locked_guest(tag: char, last: u8, br: &str) -> Guest {
    let n = n();
    let g = bridged_guest(
        &format!("s49{n}{tag}"),
        "[\"/bin/sleep\", \"1000\"]",
        &format!("10.64.{n}.{last}/24"),
        br,
    );
    set_lock_mac(&g, true);
    g
}

/// One guest name in two run dirs: A and B, `s49{N}{tag}`, locked on one
/// bridge (`tw{N}{tag}`) at `10.64.{N}.2` and `.3`. Borrowed from, not
/// taken apart (`let Twins { a, .. } = &pair`): dropped whole, its fields
/// go in their order, the guests (stopped) before the guards.
pub(crate) struct Twins {
    pub(crate) a: Guest,
    pub(crate) b: Guest,
    /// Their host end's name, `ve-NAME`.
    pub(crate) port: String,
    /// Their port's tables, deleted, and the bridge, removed, when dropped:
    /// last, after the guests.
    pub(crate) _guards: (PortTables, Link),
}

pub(crate) fn twins(tag: char) -> Twins {
    let br = up_bridge(format!("tw{}{tag}", n()));
    let (a, b) = (locked_guest(tag, 2, &br.0), locked_guest(tag, 3, &br.0));
    assert_eq!(a.name, b.name);
    assert_ne!(a.run_dir, b.run_dir);
    let port = format!("ve-{}", a.name);
    Twins {
        a,
        b,
        _guards: (PortTables(port.clone()), br),
        port,
    }
}

/// One guest `s49{N}{tag}`, locked on a bridge of its own (`lone{N}{tag}`)
/// at `10.64.{N}.{last}`, started. Dropped whole, as [`Twins`]: the guest
/// (stopped) before the guards.
pub(crate) struct Lone {
    pub(crate) g: Guest,
    /// Its host end's name, `ve-NAME`.
    pub(crate) port: String,
    pub(crate) _guards: (PortTables, Link),
}

pub(crate) fn started_alone(tag: char, last: u8) -> Lone {
    let br = up_bridge(format!("lone{}{tag}", n()));
    let g = locked_guest(tag, last, &br.0);
    let port = format!("ve-{}", g.name);
    let _guards = (PortTables(port.clone()), br);
    // Made first: a start that fails drops the guest before the guards.
    let lone = Lone { g, port, _guards };
    ok(&lone.g.unifs(&["start", &lone.g.name]));
    lone
}

/// One guest name in two run dirs: A's record is stale (its init and
/// keeper killed, `ve-NAME` gone with its namespace, its table left), and
/// A's `stop` cleans it up while B, from the other run dir, starts. A's
/// clean-up looked: no `ve-NAME`, so the table of that name was its own
/// left one; B then made its interface and table; A deleted B's (held
/// here: A's `stop`, told to by UNIFS_TEST_NET_CLEANUP_STOP, stops itself
/// before its look at `ve-NAME` while B starts: the look and the clean-up
/// are under the host's veth lock since session 50). B ran on with an
/// unfiltered port: its tagged and bridge-control frames passed. Now a
/// table is named after the interface it was made for (its index), and a
/// clean-up deletes only its own guest's.
#[test]
fn s49_a_stale_cleanup_leaves_another_run_dirs_fresh_table() {
    let test = "s49_a_stale_cleanup_leaves_another_run_dirs_fresh_table";
    if !may_run(test) {
        return;
    }
    let pair = twins('s');
    let Twins { a, b, port, .. } = &pair;
    let dev = Path::new("/sys/class/net").join(port);

    ok(&a.unifs(&["start", &a.name]));
    let pid = a.state()["pid"].as_i64().unwrap();
    kill_init_keeperless(pid);
    assert!(within_30s(|| !dev.exists()), "{port} outlived the guest");
    assert_eq!(port_tables(port).len(), 1, "A's table is left");

    let mut stop = a.cmd(&["stop", &a.name]);
    stop.env("UNIFS_TEST_NET_CLEANUP_STOP", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stop = KillOnDrop(Some(stop.spawn().unwrap()));
    let stop_pid = stop.0.as_ref().unwrap().id();
    let go_on = Continue(stop_pid as i32);
    assert!(
        within_60s(|| stopped(stop_pid)),
        "A's stop never reached its network clean-up"
    );
    ok(&b.unifs(&["start", &b.name]));
    let b_tables = port_tables(port);
    assert_eq!(b_tables.len(), 1, "B's own: {b_tables:?}");
    drop(go_on);
    let o = wait_bounded(stop, Duration::from_secs(60));
    assert!(o.status.success(), "A's stop: {}", stderr(&o));
    assert_eq!(
        port_tables(port),
        b_tables,
        "A's clean-up of its stale record deleted B's table"
    );
    assert_eq!(b.state()["running"], true, "{}", stdout(&o));

    ok(&b.unifs(&["stop", &b.name]));
    assert_eq!(port_tables(port), Vec::<String>::new(), "B stopped");
}

/// A `unifs run --lock-mac` killed (SIGKILL): its keeper ends the guest
/// and removes its groups, and now deletes its port's filter too. Before,
/// the table stayed: no later start has the run's name (`ve-` and a
/// digest of `run-PID-TAG`) to find it by.
#[test]
fn s49_a_killed_locked_runs_keeper_deletes_its_table() {
    let test = "s49_a_killed_locked_runs_keeper_deletes_its_table";
    if !may_run(test) {
        return;
    }
    let n = n();
    let br = up_bridge(format!("s49{n}k"));
    let t = TestRoot::new();
    let ip = format!("10.64.{n}.4/24");
    let mut cmd = locked_run(&t, &ip, &br.0);
    cmd.args(["--", "/bin/sleep", "1000"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let port = crate::review_s35_net2::host_end_said(&mut child, Duration::from_secs(60));
    let _tables = PortTables(port.clone());
    assert_eq!(port_tables(&port).len(), 1, "the run's table");
    let pid = child.0.as_ref().unwrap().id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = wait_bounded(child, Duration::from_secs(30));
    assert!(
        within_60s(|| port_tables(&port).is_empty()),
        "the killed run's table was left: {:?}",
        port_tables(&port)
    );
}
