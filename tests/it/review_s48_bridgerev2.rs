//! Session 48 (bridgerev2): a review of bridge2's port filter (the
//! nftables table `netdev unifs-lock-ve-NAME` of a `lock_mac` guest). A
//! table a lost clean-up left filtered the next guest of that name, locked
//! or not; a start that failed after making it left it; and the filter let
//! through frames a locked port should not pass: a tag the rule did not
//! list (0x9200), link control to a unicast or broadcast address (EAPOL),
//! and IEEE 802.1 group addresses past 01:80:c2:00:00:0f (the all-bridges
//! address, MVRP's). Everything made is named `br2` with a number of the
//! pid and removed by guards.

use crate::guest::harness::{kill_init_keeperless, ok, stderr, within_30s};
use crate::guest::named::Guest;
use crate::review_s46_netv6::{may_run, n};
use crate::review_s47_bridgelock::{set_lock_mac, up_bridge};
use crate::review_s48_bridge2::{
    host_end, locked_guest_of, none_crossed_before_the_last, port_table, send, sniffed,
    until_sniffed, with_b2net, TableGuard, BCAST,
};
use std::path::Path;

/// Guest `br2{N}{tag}` on bridge `br` at `10.59.{N}.{last}`, `lock_mac`
/// on, with init `init`.
fn locked_guest(tag: char, last: u8, br: &str, init: &str) -> Guest {
    locked_guest_of(("br2", 59), tag, last, br, init)
}

/// A guest's record lost (init and keeper killed, the run dir's record
/// removed by hand, as a crash of the clean-up between the interface and
/// the table leaves it): its table stays, hooked again by Linux 6.16+ to
/// the next `ve-NAME`. The guest started again without `lock_mac` had its
/// tagged frames dropped by it (before: the table was still there after
/// the start, and `tagged-q` never reached the host's end); now every veth
/// start deletes a table of its interface's name first.
#[test]
fn s48_a_left_table_goes_at_the_next_start_without_lock_mac() {
    let test = "s48_a_left_table_goes_at_the_next_start_without_lock_mac";
    if !may_run(test) {
        return;
    }
    let n = n();
    let br = up_bridge(format!("br2{n}a"));
    let g = locked_guest('l', 2, &br.0, "[\"/bin/sleep\", \"1000\"]");
    let tmp = tempfile::tempdir().unwrap();
    let Some(b2net) = with_b2net(test, tmp.path(), &g.t.root()) else {
        return;
    };
    let port = format!("ve-{}", g.name);
    let _table = TableGuard(port.clone());
    let dev = Path::new("/sys/class/net").join(&port);

    ok(&g.unifs(&["start", &g.name]));
    assert!(port_table(&port).is_some(), "started locked");
    let pid = g.state()["pid"].as_i64().unwrap();
    kill_init_keeperless(pid);
    assert!(within_30s(|| !dev.exists()), "{port} outlived the guest");
    // The record, lost: its clean-up never runs.
    let record = g.run_dir.join(&g.name).join("state.json");
    assert!(record.exists(), "{}", record.display());
    std::fs::remove_file(&record).unwrap();
    let _ = g.unifs(&["stop", &g.name]);
    assert!(
        port_table(&port).is_some(),
        "the table outlives a lost record (else this test tells nothing)"
    );

    set_lock_mac(&g, false);
    let (_pair, _sniffer, got) = host_end(&br.0, &format!("br2{n}m"), tmp.path(), &b2net);
    ok(&g.unifs(&["start", &g.name]));
    assert_eq!(
        port_table(&port),
        None,
        "a start without lock_mac kept the left table"
    );
    until_sniffed(&g, &got);
    send(&g, "8100", 42, BCAST, "tagged-q");
    assert!(
        within_30s(|| sniffed(&got).contains("tagged-q 8100 42")),
        "an unlocked guest's tagged frame was dropped: {}",
        sniffed(&got)
    );
    ok(&g.unifs(&["stop", &g.name]));
    drop(g);
}

/// A locked start that fails after its host side was set up (its command
/// is not in its root): the child's namespace takes the interface, not
/// the table. Before: `unifs-lock-ve-NAME` was left after the failed
/// start; now the start deletes what it made.
#[test]
fn s48_a_locked_start_that_fails_late_leaves_no_table() {
    let test = "s48_a_locked_start_that_fails_late_leaves_no_table";
    if !may_run(test) {
        return;
    }
    let n = n();
    let br = up_bridge(format!("br2{n}f"));
    let g = locked_guest('f', 3, &br.0, "[\"/bin/br2-no-such-command\"]");
    let port = format!("ve-{}", g.name);
    let _table = TableGuard(port.clone());
    let out = g.unifs(&["start", &g.name]);
    assert!(!out.status.success(), "started: {}", stderr(&out));
    assert!(
        stderr(&out).contains("br2-no-such-command"),
        "{}",
        stderr(&out)
    );
    assert_eq!(port_table(&port), None, "the failed start's table");
    drop(g);
}

/// What the filter let through. A locked guest sends, from its own
/// address: a frame tagged 0x9200 (a Q-in-Q tag a switch may be set to
/// take, as 0x9100, which was dropped), one of type 0x888e (802.1X EAPOL:
/// an EAPOL-Logoff to the switch's address logs its port off), and frames
/// to 01:80:c2:00:00:10 (all bridges) and 01:80:c2:00:00:21 (MVRP, which
/// registers VLANs on a switch's trunk port). Before: each reached the
/// host's end (`tag9200 - -`, `eapol - -`, `allbridges - -`,
/// `mvrp - -`). Now none does, and what a guest needs still passes: an
/// ARP-typed broadcast, an untagged broadcast.
#[test]
fn s48_a_locked_port_drops_other_tags_link_control_and_802_1_groups() {
    let test = "s48_a_locked_port_drops_other_tags_link_control_and_802_1_groups";
    if !may_run(test) {
        return;
    }
    let n = n();
    let br = up_bridge(format!("br2{n}d"));
    let g = locked_guest('d', 4, &br.0, "[\"/bin/sleep\", \"1000\"]");
    let tmp = tempfile::tempdir().unwrap();
    let Some(b2net) = with_b2net(test, tmp.path(), &g.t.root()) else {
        return;
    };
    let port = format!("ve-{}", g.name);
    let _table = TableGuard(port.clone());
    let (_pair, _sniffer, got) = host_end(&br.0, &format!("br2{n}p"), tmp.path(), &b2net);
    ok(&g.unifs(&["start", &g.name]));
    until_sniffed(&g, &got);
    send(&g, "9200", 42, BCAST, "tag9200");
    send(&g, "888e", 42, BCAST, "eapol");
    send(&g, "0", 0, "01:80:c2:00:00:10", "allbridges");
    send(&g, "0", 0, "01:80:c2:00:00:21", "mvrp");
    // Typed as ARP by the "tag" field (the frame is not one): the filter
    // looks at type and destination only. (Not so IPv6's: the bridge's
    // multicast snooping drops an IPv6-typed frame that is no packet.)
    send(&g, "0806", 1, BCAST, "arp");
    let dropped = ["tag9200", "eapol", "allbridges", "mvrp"];
    let lines = none_crossed_before_the_last(&g, &got, &port, &dropped);
    assert!(
        lines.lines().any(|l| l.starts_with("arp ")),
        "ARP was dropped: {lines}"
    );
    ok(&g.unifs(&["stop", &g.name]));
    assert_eq!(port_table(&port), None, "the stopped guest's table");
    drop(g);
}
