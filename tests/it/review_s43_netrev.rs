//! Session 43 (netrev): review of netnat (316121d), `--forward` and the
//! NAT recipe of docs/guests.md, as a hosting operator and a security
//! reviewer would. Guest root keeps CAP_NET_RAW by default (Docker's set),
//! so a guest writes IP headers with any source address; with `rp_filter`
//! 0 on the host end (the kernel's and Debian 12's default: its systemd
//! ships no rp_filter setting) the host forwarded them: another guest's
//! address, a LAN host's, any internet address. Reuses netnat's world
//! (a network namespace on a veth of the host) and guest helpers; names
//! carry the pid's number and `s`/`t`, subnets 10.248–10.251 and
//! 100.66–100.67, none of which netnat's tests use.

use crate::guest::harness::{ok, within_30s};
use crate::guest::named::Guest;
use crate::review_s43_netnat::{
    exec, host_recipe, may_run, n, sh, veth_guest_unstarted, NftTable, Wan,
};
use crate::review_s46_netv6::Inbox;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

/// `spoof DST PORT SRC=LABEL…`: one UDP datagram `LABEL` to DST:PORT from
/// each SRC, by a raw socket writing its own IP header (IP_HDRINCL), as a
/// guest with CAP_NET_RAW may.
const SPOOF: &str = r#"
#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (s < 0) { perror("socket"); return 2; }
    for (int i = 3; i < argc; i++) {
        char buf[256] = {0}, *label = strchr(argv[i], '=');
        *label++ = 0;
        size_t n = strlen(label);
        struct iphdr *ip = (void *)buf;
        struct udphdr *u = (void *)(buf + 20);
        memcpy(buf + 28, label, n);
        ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = IPPROTO_UDP;
        ip->tot_len = htons(28 + n);
        ip->saddr = inet_addr(argv[i]); ip->daddr = inet_addr(argv[1]);
        u->source = htons(4000); u->dest = htons(atoi(argv[2])); u->len = htons(8 + n);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = ip->daddr};
        if (sendto(s, buf, 28 + n, 0, (void *)&to, sizeof to) < 0) { perror("sendto"); return 3; }
    }
    puts("sent");
    return 0;
}
"#;

/// Puts [`SPOOF`] at `/bin/spoof` in `g`'s tree; false (skipped) without
/// `cc -static`.
fn with_spoof(g: &Guest, test: &str) -> bool {
    crate::common::static_program(test, SPOOF, "spoof", &[&g.t.root()])
}

/// Sends `forged` (SRC=LABEL, each from a source not the guest's) and
/// then `own=GUEST_IP` from the guest until the world has `own` (UDP on
/// one path keeps its order: what was forwarded of the forged ones is
/// there too); returns what the world got.
fn spoof_until_own_arrives(
    g: &Guest,
    wan: &Wan,
    rx: &Inbox,
    own: &str,
    forged: &[String],
) -> Vec<(String, String)> {
    let cmd = format!(
        "/bin/spoof {} 9999 {} {own}=own",
        wan.server(),
        forged.join(" ")
    );
    let mut out = String::new();
    let arrived = within_30s(|| {
        out = exec(g, &cmd);
        assert!(
            out.contains("sent"),
            "the guest's raw socket (CAP_NET_RAW by default): {out}"
        );
        rx.got().iter().any(|(t, _)| t == "own")
    });
    assert!(
        arrived,
        "the guest's own datagram reaches the world: {out} {:?}",
        rx.got()
    );
    rx.got()
}

/// Labels of datagrams in `got` other than `own`.
fn forged_arrivals(got: &[(String, String)]) -> Vec<&(String, String)> {
    got.iter().filter(|(t, _)| t != "own").collect()
}

fn set_rp_filter(dev: &str, value: &str) {
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"), value).unwrap();
}

/// A guest with `--forward` sends, from its default capability set,
/// datagrams whose source is another guest's address, a host's of the
/// uplink's network, an internet address, and the host's own uplink
/// address: the host forwards none of them (before: all but the host's
/// own, which the kernel always takes for a martian), and forwards the
/// guest's own. unifs sets strict `rp_filter` on the host end with
/// `forwarding`. No nftables rule is involved (the host's rules may be
/// anything).
#[test]
fn s43_a_forwarding_guest_cannot_send_from_an_address_not_its_own() {
    let test = "s43_a_forwarding_guest_cannot_send_from_an_address_not_its_own";
    if !may_run(test) {
        return;
    }
    let n = n();
    let wan = Wan::new(&format!("{n}s"), &format!("100.66.{n}"));
    let net = format!("10.248.{n}");
    let g = veth_guest_unstarted(&format!("nn{n}s1"), &net, true);
    if !with_spoof(&g, test) {
        return;
    }
    ok(&g.unifs(&["start", &g.name]));
    let rx = Inbox::bind(
        &wan.ns,
        SocketAddr::from((wan.server().parse::<Ipv4Addr>().unwrap(), 9999)),
    );
    let forged = [
        format!("10.249.{n}.2=another-guest"),
        format!("100.66.{n}.7=lan-host"),
        "203.0.113.9=internet".to_string(),
        format!("{}=host-uplink", wan.host()),
    ];
    let got = spoof_until_own_arrives(&g, &wan, &rx, &format!("{net}.2"), &forged);
    assert!(
        forged_arrivals(&got).is_empty(),
        "the host forwarded forged sources (label, source seen): {got:?}"
    );
    assert!(
        got.iter()
            .any(|(t, s)| t == "own" && *s == format!("{net}.2")),
        "{got:?}"
    );
    let ve = format!("ve-{}", g.name);
    let rp = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{ve}/rp_filter")).unwrap();
    assert_eq!(rp.trim(), "1", "{ve}'s rp_filter");
}

/// `--forward` where /proc/sys is read-only (a container's often is): the
/// start fails saying what it needs and what to do, and leaves no host end.
/// Before: `writing /proc/sys/net/ipv4/conf/ve-…/forwarding: Read-only file
/// system`, naming neither.
#[test]
fn s43_forward_with_a_read_only_proc_sys_says_what_it_needs() {
    let test = "s43_forward_with_a_read_only_proc_sys_says_what_it_needs";
    if !may_run(test) {
        return;
    }
    let t = crate::guest::harness::TestRoot::new();
    let net = format!("10.252.{}", n());
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-ec"]);
    cmd.arg(r#"mount -o bind,ro /proc/sys /proc/sys; exec "$@""#)
        .arg("sh");
    cmd.arg(crate::common::unifs_bin())
        .arg("run")
        .arg("--root")
        .arg(t.root());
    let (ip, host_ip) = (format!("{net}.2/24"), format!("{net}.1/24"));
    cmd.args([
        "--net",
        "veth",
        "--ip",
        &ip,
        "--host-ip",
        &host_ip,
        "--forward",
    ]);
    cmd.args(["--", "/bin/true"]);
    let out = crate::guest::harness::run_bounded(cmd, Duration::from_secs(30));
    let err = crate::guest::harness::stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("needs a writable /proc/sys") && err.contains("leave forward out"),
        "{err}"
    );
    let left = Command::new("ip")
        .args(["-o", "addr", "show", "to", &format!("{net}.0/24")])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "host end left: {left:?}");
}

/// docs/guests.md's host recipe drops forged sources from guests itself
/// (nftables' `fib saddr . iif oif missing drop`), for a host where the
/// host end's `rp_filter` is not strict in effect: the kernel takes the
/// higher of `all` and the interface's, so a host-wide 2 (loose: Ubuntu's
/// default, and systemd's 50-default.conf elsewhere) makes it loose, which
/// passes every source the host has any route to. Set to 0 here by hand
/// (standing for that, or for a unifs before this fix). Before: the recipe
/// had no such rule, and the forged datagrams arrived, masqueraded (another
/// guest's address, inside GUESTS) or as they were.
#[test]
fn s43_the_docs_recipe_drops_forged_sources_whatever_rp_filter_says() {
    let test = "s43_the_docs_recipe_drops_forged_sources_whatever_rp_filter_says";
    if !may_run(test) {
        return;
    }
    let n = n();
    let wan = Wan::new(&format!("{n}t"), &format!("100.67.{n}"));
    let table = NftTable::new("netrev", &format!("{n}t"));
    let net = format!("10.250.{n}");
    let g = veth_guest_unstarted(&format!("nn{n}t1"), &net, true);
    if !with_spoof(&g, test) {
        return;
    }
    ok(&g.unifs(&["start", &g.name]));
    let script = host_recipe(
        &wan,
        &table.0,
        "10.250.0.0/15",
        &format!("nn{n}t"),
        &format!("{net}.2"),
    );
    ok(&sh(&script, None));
    set_rp_filter(&format!("ve-{}", g.name), "0");
    let rx = Inbox::bind(
        &wan.ns,
        SocketAddr::from((wan.server().parse::<Ipv4Addr>().unwrap(), 9999)),
    );
    let forged = [
        format!("10.251.{n}.2=another-guest"),
        format!("100.67.{n}.7=lan-host"),
        "203.0.113.9=internet".to_string(),
    ];
    let got = spoof_until_own_arrives(&g, &wan, &rx, &format!("{net}.2"), &forged);
    assert!(
        forged_arrivals(&got).is_empty(),
        "the recipe let forged sources out (label, source seen): {got:?}"
    );
    assert!(
        got.iter().any(|(t, s)| t == "own" && *s == wan.host()),
        "the guest's own, masqueraded: {got:?}"
    );
    drop(g);
    drop(table);
}

/// Without `--forward` too: a routed guest's forged datagrams to the host
/// itself (a service on its host end's address, which may trust source
/// addresses: syslog, a DNS or NFS export list) are dropped, and on a host
/// whose `ip_forward` is 1 (Docker's and libvirt's set it, and a new
/// `ve-NAME` then forwards with no `--forward`) no forged one is routed.
/// unifs sets `rp_filter=1` on every host end with `--host-ip`. Before:
/// the host took datagrams from another guest's address and an internet
/// address as theirs.
#[test]
fn s43_a_routed_guest_cannot_send_the_host_a_source_not_its_own() {
    let test = "s43_a_routed_guest_cannot_send_the_host_a_source_not_its_own";
    if !may_run(test) {
        return;
    }
    let n = n();
    let net = format!("10.253.{n}");
    let g = veth_guest_unstarted(&format!("nn{n}u1"), &net, false);
    if !with_spoof(&g, test) {
        return;
    }
    ok(&g.unifs(&["start", &g.name]));
    let at: Ipv4Addr = format!("{net}.1").parse().unwrap();
    let udp = UdpSocket::bind((at, 9998)).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let cmd =
        format!("/bin/spoof {at} 9998 10.249.{n}.9=another-guest 203.0.113.9=internet {net}.2=own");
    let mut got = Vec::new();
    let arrived = within_30s(|| {
        let out = exec(&g, &cmd);
        assert!(out.contains("sent"), "{out}");
        let mut buf = [0u8; 256];
        while let Ok((len, peer)) = udp.recv_from(&mut buf) {
            got.push((
                String::from_utf8_lossy(&buf[..len]).into_owned(),
                peer.ip().to_string(),
            ));
        }
        got.iter().any(|(t, _)| t == "own")
    });
    assert!(
        arrived,
        "the guest's own datagram reaches the host: {got:?}"
    );
    assert!(
        forged_arrivals(&got).is_empty(),
        "the host took forged sources (label, source seen): {got:?}"
    );
}
