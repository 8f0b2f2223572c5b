//! Session 47 (bridgerev): review of `[net] lock_mac` (bridgelock). A
//! locked guest's address is seen by every guest on its bridge (its ARP
//! and neighbour discovery); while it is stopped, any learning port may
//! send from it. Everything made is named `brv` with a number of the pid
//! and removed by guards.

use crate::guest::harness::{ok, within_30s};
use crate::guest::named::Guest;
use crate::review_s46_netv6::{bridged_guest, may_run, n, run, Link};
use crate::review_s47_bridgelock::{fdb, mac, set_lock_mac, up_bridge, with_blknet};
use std::process::Command;

/// Bridge `brv{N}{tag}`, up, deleted when dropped.
fn bridge(tag: char) -> Link {
    up_bridge(format!("brv{}{tag}", n()))
}

/// Guest `brv{N}{tag}` on bridge `br`, at `10.57.{N}.{last}`, with
/// `lock_mac`, started.
fn locked_guest(tag: char, last: u8, br: &Link) -> Guest {
    let n = n();
    let g = bridged_guest(
        &format!("brv{n}{tag}"),
        "[\"/bin/sleep\", \"1000\"]",
        &format!("10.57.{n}.{last}/24"),
        &br.0,
    );
    set_lock_mac(&g, true);
    ok(&g.unifs(&["start", &g.name]));
    g
}

/// The fdb line of `mac` on bridge `br`, if any.
fn entry(br: &str, mac: &str) -> Option<String> {
    fdb(br)
        .lines()
        .find(|l| l.starts_with(mac))
        .map(str::to_string)
}

/// A locked guest is stopped (as in a restart); a host veth on its bridge,
/// learning as an unlocked guest's port does, sends a frame from the
/// guest's address, and the bridge learns it on that port. The guest's
/// next start then failed: `bridge fdb add` took the learned entry as
/// "File exists". Now the start takes the address back (a static sticky
/// entry on its own port), and a forger's next frame does not move it.
#[test]
fn s47_a_locked_guest_starts_though_another_port_sent_from_its_address() {
    let test = "s47_a_locked_guest_starts_though_another_port_sent_from_its_address";
    if !may_run(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(blknet) = with_blknet(test, tmp.path(), &[]) else {
        return;
    };
    let br = bridge('a');
    let n = n();
    let g = locked_guest('g', 2, &br);
    let guest_mac = mac(&g);
    let port = format!("ve-{}", g.name);
    ok(&g.unifs(&["stop", &g.name]));

    // The forger: one end on the bridge (learning), the other the host's.
    let (on_br, forger) = (format!("brv{n}x"), format!("brv{n}y"));
    let _ = Command::new("ip").args(["link", "del", &on_br]).output();
    run(&[
        "ip", "link", "add", &on_br, "type", "veth", "peer", "name", &forger,
    ]);
    let _pair = Link(on_br.clone());
    run(&["ip", "link", "set", &on_br, "master", &br.0]);
    run(&["ip", "link", "set", &on_br, "up"]);
    run(&["ip", "link", "set", &forger, "up"]);
    let forge = || {
        let out = Command::new(&blknet)
            .args(["frame", &forger, &guest_mac, "ff:ff:ff:ff:ff:ff", "forged"])
            .output()
            .unwrap();
        assert!(out.status.success(), "the forger's frame: {out:?}");
    };
    let mut seen = None;
    let learned = within_30s(|| {
        forge();
        seen = entry(&br.0, &guest_mac);
        seen.as_deref()
            .is_some_and(|l| l.contains(&format!("dev {on_br} ")))
    });
    assert!(
        learned,
        "the bridge learned the forged address on {on_br} (else this test tells nothing): \
         {seen:?}; fdb {}",
        fdb(&br.0)
    );

    ok(&g.unifs(&["start", &g.name]));
    assert_eq!(mac(&g), guest_mac);
    forge();
    let now = entry(&br.0, &guest_mac).unwrap_or_default();
    assert!(
        now.contains(&format!("dev {port} ")) && now.contains("static") && now.contains("sticky"),
        "the guest's entry after its start and another forged frame: {now:?}; fdb {}",
        fdb(&br.0)
    );
    ok(&g.unifs(&["stop", &g.name]));
    drop(g);
}

/// `guest status` (text and `--json`) shows a running locked guest's MAC
/// address, which a DHCP reservation needs; null once stopped. Before:
/// no `mac_address` (an operator ran `cat /sys/class/net/eth0/address`
/// inside).
#[test]
fn s47_guest_status_shows_a_locked_guests_mac_address() {
    let test = "s47_guest_status_shows_a_locked_guests_mac_address";
    if !may_run(test) {
        return;
    }
    let br = bridge('b');
    let g = locked_guest('s', 3, &br);
    let eth0 = mac(&g);
    let st = g.state();
    assert_eq!(st["mac_address"], eth0.as_str(), "{st}");
    let text = ok(&g.unifs(&["status", &g.name]));
    assert!(text.contains(&format!("mac:     {eth0} ")), "{text}");
    ok(&g.unifs(&["stop", &g.name]));
    let st = g.state();
    assert!(st["mac_address"].is_null(), "stopped: {st}");
    drop(g);
}
