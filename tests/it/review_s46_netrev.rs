//! Session 46 (netrev): review of netv6's docs (the `inet` host table, the
//! `bridge` table per guest port), run as a user would. The per-guest
//! bridge rules looked at a frame's IPv4, ARP or IPv6 header only when the
//! frame carried that protocol bare: a guest (CAP_NET_RAW, kept by
//! default) sent an IPv4 datagram from a forged source inside two VLAN
//! tags, and it crossed the bridge. And the blocks, run again as the docs
//! say they may be, added their rules a second time. Everything made is
//! named with `nr` and the pid, and removed by guards.

use crate::guest::harness::{ok, within_30s};
use crate::review_s43_netnat::{exec, recipe};
use crate::review_s46_netv6::{may_run, n, run, BridgeTable, BridgedPair, Netns};
use std::path::Path;
use std::process::Command;

/// The head of the tests' packet-socket programs (NRNET, blknet's): the
/// includes; `bound(IF, &at, mac)`, a packet socket bound to IF (every
/// protocol), IF's index in `at`, its MAC address in `mac`; and
/// `sniff(argv, MARK)` of `PROG sniff IF FILE`: every frame IF takes in
/// (or sends) that holds the 4 bytes MARK appends what follows them to
/// FILE (up to a NUL), a line each.
macro_rules! packet_socket_c {
    () => {
        r#"
#include <arpa/inet.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <linux/if_ether.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
static int bound(const char *name, struct sockaddr_ll *at, unsigned char *mac) {
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0) { perror("socket"); exit(2); }
    struct ifreq ifr = {0};
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0) { perror("ioctl"); exit(2); }
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) { perror("ioctl"); exit(2); }
    *at = (struct sockaddr_ll){.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                               .sll_ifindex = ifr.ifr_ifindex, .sll_halen = 6};
    if (bind(s, (void *)at, sizeof *at) < 0) { perror("bind"); exit(2); }
    return s;
}
static int sniff(char **argv, const char *mark) {
    struct sockaddr_ll at;
    unsigned char mac[6], f[2048];
    int s = bound(argv[2], &at, mac);
    for (;;) {
        ssize_t n = recv(s, f, sizeof f - 1, 0);
        if (n < 4) continue;
        for (ssize_t i = 0; i + 4 <= n; i++) {
            if (memcmp(f + i, mark, 4)) continue;
            FILE *out = fopen(argv[3], "a");
            if (out) { fprintf(out, "%.*s\n", (int)(n - i - 4), (char *)f + i + 4); fclose(out); }
            break;
        }
    }
}
"#
    };
}
pub(crate) use packet_socket_c;

/// `nrnet frame IF SRC DST LABEL TAGS`: one broadcast Ethernet frame from
/// IF's MAC address holding an IPv4 UDP datagram `nrv:LABEL` from SRC to
/// DST:9999, inside TAGS VLAN tags (0, or 2: 802.1ad then 802.1Q), as a
/// guest with CAP_NET_RAW may send. `nrnet sniff IF FILE`: every frame IF
/// takes in that holds `nrv:` appends what follows to FILE, a line each.
const NRNET: &str = concat!(
    packet_socket_c!(),
    r#"
static void put16(unsigned char *p, unsigned v) { p[0] = v >> 8; p[1] = v; }
static int frame(char **argv) {
    struct sockaddr_ll at;
    unsigned char mac[6], f[200] = {0};
    int s = bound(argv[2], &at, mac), tags = atoi(argv[6]), o = 12;
    memset(f, 0xff, 6);
    memcpy(f + 6, mac, 6);
    if (tags == 2) { put16(f + o, 0x88a8); put16(f + o + 2, 5); o += 4; }
    if (tags >= 1) { put16(f + o, 0x8100); put16(f + o + 2, 5); o += 4; }
    put16(f + o, 0x0800); o += 2;
    char data[64];
    int n = snprintf(data, sizeof data, "nrv:%s", argv[5]);
    unsigned char *ip = f + o, *u = ip + 20;
    ip[0] = 0x45; put16(ip + 2, 28 + n); ip[8] = 64; ip[9] = 17;
    in_addr_t src = inet_addr(argv[3]), dst = inet_addr(argv[4]);
    memcpy(ip + 12, &src, 4); memcpy(ip + 16, &dst, 4);
    uint32_t c = 0;
    for (int i = 0; i < 20; i += 2) c += ip[i] << 8 | ip[i + 1];
    while (c >> 16) c = (c & 0xffff) + (c >> 16);
    put16(ip + 10, ~c & 0xffff);
    put16(u, 4000); put16(u + 2, 9999); put16(u + 4, 8 + n);
    memcpy(u + 8, data, n);
    int len = o + 28 + n;
    if (len < 60) len = 60;
    memset(at.sll_addr, 0xff, 6);
    if (sendto(s, f, len, 0, (void *)&at, sizeof at) < 0) { perror("sendto"); return 3; }
    puts("sent");
    return 0;
}
int main(int argc, char **argv) {
    if (argc == 7 && !strcmp(argv[1], "frame")) return frame(argv);
    if (argc == 4 && !strcmp(argv[1], "sniff")) return sniff(argv, "nrv:");
    fputs("usage: nrnet frame IF SRC DST LABEL TAGS | nrnet sniff IF FILE\n", stderr);
    return 1;
}
"#
);

/// Two guests with addresses `NET…2` (the sender) and `NET…3` (the
/// receiver, sniffing its `eth0`) on bridge `nrb{N}{tag}` under
/// docs/guests.md's bridge blocks, run as they stand for both ports. The
/// sender sends a broadcast frame holding an IPv4 datagram to the
/// receiver from a forged source inside two VLAN tags, then (bare) from
/// `own` (its own IPv4 address, or for an IPv6 guest a frame its rules
/// drop too: the receiver then never sees it, and `own` is left out),
/// until the receiver has the last. Without the rules, the tagged one
/// arrives: shown first, else the test tells nothing.
fn tagged_through_bridge_rules(test: &str, tag: char, net: &str, prefix: u8) {
    let init = "[\"/bin/nrnet\", \"sniff\", \"eth0\", \"/got\"]";
    let Some(pair) = BridgedPair::start(test, "nr", tag, net, prefix, init, ("nrnet", NRNET))
    else {
        return;
    };
    let BridgedPair {
        ref sender,
        ref receiver,
        ref from,
        ref to,
        ..
    } = pair;
    // The receiver's IPv4 address for the datagrams (an IPv6 guest has
    // none: any does, the frame being broadcast).
    let v4 = !net.contains(':');
    let (own, dst) = if v4 {
        (from.clone(), to.clone())
    } else {
        ("10.46.0.2".to_string(), "10.46.0.3".to_string())
    };
    let send = |label: &str, src: &str, tags: u8| {
        let out = exec(
            sender,
            &format!("/bin/nrnet frame eth0 {src} {dst} {label} {tags}"),
        );
        assert!(out.contains("sent"), "the guest's packet socket: {out}");
    };
    let got = || exec(receiver, "cat /got 2>/dev/null");
    let mut seen = String::new();
    assert!(
        within_30s(|| {
            send("tagged", "192.0.2.9", 2);
            seen = got();
            seen.contains("tagged")
        }),
        "with no rules, the tagged frame arrives (else this test tells nothing): {seen:?}"
    );

    let table = pair.docs_rules(&format!("nr_br_{}{tag}", std::process::id()));
    exec(receiver, ": > /got");
    if v4 {
        // Frames from one port keep their order: once `own` (sent after)
        // is in, the tagged one is there if it passed.
        assert!(
            within_30s(|| {
                send("forged-inside-tags", "192.0.2.9", 2);
                send("own", &own, 0);
                seen = got();
                seen.contains("own")
            }),
            "the sender's own frame crosses the rules: {seen:?}"
        );
    } else {
        // An IPv6 guest sends no IPv4: nothing comes to tell when the
        // tagged frames would have been in, so they are sent for a while.
        for _ in 0..10 {
            send("forged-inside-tags", "192.0.2.9", 2);
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        seen = got();
    }
    assert!(
        !seen.contains("forged-inside-tags"),
        "a forged source inside VLAN tags crossed the bridge through the docs' rules: {seen:?}"
    );
    drop(pair);
    drop(table);
}

/// Two IPv4 guests on a bridge under docs/guests.md's bridge rules: the
/// sender's IPv4 datagram from a forged source inside an 802.1ad and an
/// 802.1Q tag no longer reaches the other guest (the rules now take only
/// bare IPv4, ARP and IPv6 frames); its own bare one still does. Before:
/// it arrived (`ip saddr` matches a frame whose protocol, once the
/// kernel took the outer tag off, is IPv4; with two tags it is 802.1Q).
#[test]
fn s46_the_docs_bridge_rules_drop_an_ipv4_guests_vlan_tagged_frames() {
    let test = "s46_the_docs_bridge_rules_drop_an_ipv4_guests_vlan_tagged_frames";
    if !may_run(test) {
        return;
    }
    let n = n();
    tagged_through_bridge_rules(test, 'a', &format!("10.47.{n}."), 24);
}

/// [`s46_the_docs_bridge_rules_drop_an_ipv4_guests_vlan_tagged_frames`]
/// with two IPv6 guests, whose rules dropped bare IPv4 and ARP but not
/// IPv4 inside tags.
#[test]
fn s46_the_docs_bridge_rules_drop_an_ipv6_guests_vlan_tagged_frames() {
    let test = "s46_the_docs_bridge_rules_drop_an_ipv6_guests_vlan_tagged_frames";
    if !may_run(test) {
        return;
    }
    let n = n();
    tagged_through_bridge_rules(test, 'b', &format!("fd47:{n}:b::"), 64);
}

/// `nft list table FAMILY NAME` in `ns`.
fn listed(ns: &Netns, family: &str, name: &str) -> String {
    let out = ns
        .exec(&["nft", "list", "table", family, name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// docs/guests.md's host recipe, bridge block and a guest's bridge block,
/// each run twice as they stand (in a namespace of the test's): the second
/// run leaves the tables as the first did, one rule each. And the host
/// recipe run again with another port forward has that one alone. Before:
/// each run added its rules again (two `antispoof` drops, two port
/// forwards, the first one's winning; two `vmap` rules).
#[test]
fn s46_the_docs_nft_blocks_run_twice_leave_one_set_of_rules() {
    let test = "s46_the_docs_nft_blocks_run_twice_leave_one_set_of_rules";
    if !may_run(test) {
        return;
    }
    sweep_dead_runs();
    let pid = std::process::id();
    let ns = Netns::new(format!("nrt-{pid}"));
    run(&[
        "ip", "-n", &ns.0, "link", "add", "nrwan", "type", "veth", "peer", "name", "nrwan2",
    ]);
    let table = "nr_twice";
    let host = |port: &str| {
        recipe(
            "host",
            &[
                ("WAN", "nrwan".into()),
                ("GUESTS", "10.0.0.0/8".into()),
                ("TABLE", table.into()),
                ("VE", "ve-*".into()),
                ("GUEST", "10.0.3.2".into()),
                ("PORT", port.into()),
            ],
        )
    };
    let bridge = recipe("bridge", &[("TABLE", table.into())]);
    let guest = recipe(
        "bridged-guest",
        &[
            ("TABLE", table.into()),
            ("VE", "ve-nrtwice".into()),
            ("ADDR", "10.0.4.2".into()),
        ],
    );
    let sh = |script: &str| {
        let out = crate::guest::harness::run_bounded(
            ns.exec(&["sh", "-ec", script]),
            std::time::Duration::from_secs(30),
        );
        ok(&out);
    };
    for script in [&host("8080"), &bridge, &guest] {
        sh(script);
    }
    let once = (listed(&ns, "inet", table), listed(&ns, "bridge", table));
    for script in [&host("8080"), &bridge, &guest] {
        sh(script);
    }
    let twice = (listed(&ns, "inet", table), listed(&ns, "bridge", table));
    assert_eq!(once.0, twice.0, "the host recipe, run twice");
    assert_eq!(once.1, twice.1, "the bridge blocks, run twice");
    assert_eq!(once.0.matches("fib saddr").count(), 1, "{}", once.0);
    assert_eq!(once.1.matches("vmap @ports").count(), 1, "{}", once.1);
    sh(&host("8081"));
    let moved = listed(&ns, "inet", table);
    assert!(
        moved.contains("dport 8081") && !moved.contains("dport 8080"),
        "the host recipe run with another PORT: {moved}"
    );
}

/// Removes what a killed run of these tests or review_s46_netv6's left (no
/// Drop ran; a panic runs them): namespaces `n6h-PID`, `n6w-PID`,
/// `nrt-PID` and `bridge` tables `n6_br_PIDTAG`, `nr_br_PIDTAG` whose PID
/// is gone (the bridges, `n6b…`/`nrb…`, each test deletes as it starts).
/// A live run's, and a reused pid's, are left alone.
pub(crate) fn sweep_dead_runs() {
    let dead = |pid: &str| {
        let digits = pid.trim_end_matches(|c: char| !c.is_ascii_digit());
        digits
            .parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
    };
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = ["n6h-", "n6w-", "nrt-"]
            .iter()
            .find_map(|p| name.strip_prefix(p));
        if pid.is_some_and(dead) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
    let Ok(tables) = Command::new("nft")
        .args(["list", "tables", "bridge"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&tables.stdout).lines() {
        let name = line.trim_start_matches("table bridge ").trim();
        let pid = ["n6_br_", "nr_br_"]
            .iter()
            .find_map(|p| name.strip_prefix(p));
        if pid.is_some_and(dead) {
            let _ = Command::new("nft")
                .args(["delete", "table", "bridge", name])
                .output();
        }
    }
}

/// Guard: a killed run's namespace and bridge table (a pid above
/// `pid_max`'s limit, never alive) go at the next run's start, a live
/// run's (ours) stay. Fails with the sweep's body left out: nothing
/// removed them before (a panic's guards did, a kill's did not).
#[test]
fn s46_a_killed_runs_namespaces_and_bridge_tables_are_swept() {
    let test = "s46_a_killed_runs_namespaces_and_bridge_tables_are_swept";
    if !may_run(test) {
        return;
    }
    let (gone, ours) = (4_999_999u32, std::process::id());
    let ns_gone = Netns::new(format!("nrt-{gone}"));
    let table = |pid: u32| format!("nr_br_{pid}z");
    for pid in [gone, ours] {
        run(&["nft", "add", "table", "bridge", &table(pid)]);
    }
    let _ours = BridgeTable(table(ours));
    let _gone = BridgeTable(table(gone));
    sweep_dead_runs();
    let listed = Command::new("nft")
        .args(["list", "tables", "bridge"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !Path::new(&format!("/run/netns/{}", ns_gone.0)).exists(),
        "a dead run's namespace is left"
    );
    assert!(
        !listed.contains(&table(gone)),
        "a dead run's table is left: {listed}"
    );
    assert!(
        listed.contains(&table(ours)),
        "a live run's table went: {listed}"
    );
}
