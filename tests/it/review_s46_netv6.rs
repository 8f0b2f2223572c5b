//! Session 46 (netv6): forged sources from the guests session 43's
//! `rp_filter` does not cover. Guest root keeps CAP_NET_RAW by default, so
//! it writes packets with any source address. `rp_filter` is IPv4's alone:
//! a guest with an IPv6 `--ip` sent the host's services (and, where the
//! host forwards IPv6, the world) datagrams from any source, and the docs'
//! `antispoof` chain sat in an `ip` table. A bridged guest's frames are not
//! routed at all: they reached the other guests on its bridge from any
//! source. The remedies are docs/guests.md's (an `inet` table; a `bridge`
//! table per port), run here as they stand. Everything made is named with
//! `n6` and the pid (namespaces, links, bridges, tables, guests) and
//! removed by guards.

use crate::common::unifs_bin;
use crate::guest::harness::{ok, run_bounded, within_30s, TestRoot};
use crate::guest::named::Guest;
use crate::review_s43_netnat::{exec, in_ns, recipe, sh};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// `n6net send DST PORT SRC=LABEL…`: one UDP datagram `LABEL` to DST:PORT
/// from each SRC, IPv4 or IPv6 as DST is, by a raw socket writing its own
/// IP header (IPPROTO_RAW: IPv6's implies IPV6_HDRINCL), as a guest with
/// CAP_NET_RAW may. `n6net recv PORT FILE`: a UDP server on `[::]:PORT`
/// (both families) appending `LABEL SOURCE` to FILE for each datagram.
/// `n6net arp IF SPA TPA`: an ARP request for TPA from IF's MAC address
/// claiming sender address SPA (a packet socket, CAP_NET_RAW too).
const N6NET: &str = r#"
#include <arpa/inet.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/if_ether.h>
#include <netpacket/packet.h>
static int arp(char **argv) {
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ARP));
    if (s < 0) { perror("socket"); return 2; }
    struct ifreq ifr = {0};
    strncpy(ifr.ifr_name, argv[2], IFNAMSIZ - 1);
    unsigned char mac[6];
    if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0) { perror("ioctl"); return 2; }
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6); /* before SIOCGIFINDEX writes the union */
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) { perror("ioctl"); return 2; }
    struct ether_header eh;
    memset(eh.ether_dhost, 0xff, 6); memcpy(eh.ether_shost, mac, 6); eh.ether_type = htons(ETH_P_ARP);
    struct ether_arp a = {0};
    a.arp_hrd = htons(ARPHRD_ETHER); a.arp_pro = htons(ETH_P_IP); a.arp_hln = 6; a.arp_pln = 4;
    a.arp_op = htons(ARPOP_REQUEST);
    memcpy(a.arp_sha, mac, 6);
    in_addr_t spa = inet_addr(argv[3]), tpa = inet_addr(argv[4]);
    memcpy(a.arp_spa, &spa, 4); memcpy(a.arp_tpa, &tpa, 4);
    unsigned char frame[60] = {0};
    memcpy(frame, &eh, sizeof eh); memcpy(frame + sizeof eh, &a, sizeof a);
    struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = ifr.ifr_ifindex, .sll_halen = 6};
    memset(to.sll_addr, 0xff, 6);
    if (sendto(s, frame, sizeof frame, 0, (void *)&to, sizeof to) < 0) { perror("sendto"); return 3; }
    puts("sent");
    return 0;
}
static uint16_t sum6(const struct in6_addr *s, const struct in6_addr *d, const uint8_t *u, size_t n) {
    uint32_t c = n + IPPROTO_UDP;
    for (int i = 0; i < 16; i += 2)
        c += (s->s6_addr[i] << 8 | s->s6_addr[i + 1]) + (d->s6_addr[i] << 8 | d->s6_addr[i + 1]);
    for (size_t i = 0; i < n; i += 2) c += u[i] << 8 | (i + 1 < n ? u[i + 1] : 0);
    while (c >> 16) c = (c & 0xffff) + (c >> 16);
    uint16_t r = ~c;
    return htons(r ? r : 0xffff);
}
static int send_all(int argc, char **argv) {
    int v6 = strchr(argv[2], ':') != NULL;
    int s = socket(v6 ? AF_INET6 : AF_INET, SOCK_RAW, IPPROTO_RAW);
    if (s < 0) { perror("socket"); return 2; }
    for (int i = 4; i < argc; i++) {
        uint8_t buf[256] = {0};
        char *label = strchr(argv[i], '=');
        *label++ = 0;
        size_t n = strlen(label), h = v6 ? 40 : 20;
        struct udphdr *u = (void *)(buf + h);
        memcpy(buf + h + 8, label, n);
        u->source = htons(4000); u->dest = htons(atoi(argv[3])); u->len = htons(8 + n);
        int r;
        if (v6) {
            struct ip6_hdr *ip = (void *)buf;
            ip->ip6_flow = htonl(6u << 28); ip->ip6_plen = htons(8 + n);
            ip->ip6_nxt = IPPROTO_UDP; ip->ip6_hlim = 64;
            if (inet_pton(AF_INET6, argv[i], &ip->ip6_src) != 1
                || inet_pton(AF_INET6, argv[2], &ip->ip6_dst) != 1) { fputs("bad address\n", stderr); return 4; }
            u->check = sum6(&ip->ip6_src, &ip->ip6_dst, buf + h, 8 + n);
            struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_addr = ip->ip6_dst};
            r = sendto(s, buf, h + 8 + n, 0, (void *)&to, sizeof to);
        } else {
            struct iphdr *ip = (void *)buf;
            ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = IPPROTO_UDP;
            ip->tot_len = htons(h + 8 + n);
            ip->saddr = inet_addr(argv[i]); ip->daddr = inet_addr(argv[2]);
            struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = ip->daddr};
            r = sendto(s, buf, h + 8 + n, 0, (void *)&to, sizeof to);
        }
        if (r < 0) { perror("sendto"); return 3; }
    }
    puts("sent");
    return 0;
}
static int recv_all(char **argv) {
    int s = socket(AF_INET6, SOCK_DGRAM, 0), off = 0;
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    struct sockaddr_in6 at = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[2]))};
    if (bind(s, (void *)&at, sizeof at) < 0) { perror("bind"); return 2; }
    for (;;) {
        char buf[256], from[64];
        struct sockaddr_in6 peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(s, buf, sizeof buf - 1, 0, (void *)&peer, &len);
        if (n < 0) continue;
        buf[n] = 0;
        inet_ntop(AF_INET6, &peer.sin6_addr, from, sizeof from);
        FILE *f = fopen(argv[3], "a");
        if (f) { fprintf(f, "%s %s\n", buf, from); fclose(f); }
    }
}
int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "send")) return send_all(argc, argv);
    if (argc == 4 && !strcmp(argv[1], "recv")) return recv_all(argv);
    if (argc == 5 && !strcmp(argv[1], "arp")) return arp(argv);
    fputs("usage: n6net send DST PORT SRC=LABEL... | n6net recv PORT FILE | n6net arp IF SPA TPA\n", stderr);
    return 1;
}
"#;

/// Our names' and subnets' number, from our pid.
pub(crate) fn n() -> u32 {
    std::process::id() % 200 + 20
}

/// True when the test may run: root, busybox, `ip`, `nft`, IPv6 and
/// `cc -static`.
pub(crate) fn may_run(test: &str) -> bool {
    if !crate::review_s43_netnat::may_run(test) {
        return false;
    }
    if !Path::new("/proc/net/if_inet6").exists() {
        crate::common::skip(test, "the kernel has no IPv6");
        return false;
    }
    true
}

pub(crate) fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// A network namespace (`ip netns`'s), deleted when dropped with what is
/// in it (interfaces, their peers' ends, nftables tables, sysctls).
pub(crate) struct Netns(pub(crate) String);

impl Netns {
    pub(crate) fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    /// `ARGS…` run in the namespace, as a command: `nsenter --net`, not
    /// `ip netns exec`, whose fresh /sys hides the cgroup v1 mounts below
    /// it (where `unifs run` places its guest).
    pub(crate) fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.0)).args(args);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A UDP server at `at` in namespace `ns`, keeping each datagram's text
/// and source.
pub(crate) struct Inbox {
    got: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Inbox {
    pub(crate) fn bind(ns: &str, at: SocketAddr) -> Inbox {
        let udp = in_ns(ns, move || UdpSocket::bind(at).unwrap());
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (Arc::clone(&got), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while !s.load(Ordering::Relaxed) {
                if let Ok((len, peer)) = udp.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                    g.lock().unwrap().push((text, peer.ip().to_string()));
                }
            }
        });
        Inbox {
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }

    /// What came so far, kept.
    pub(crate) fn got(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Labels of `got` other than `own…` ones.
fn forged(got: &[(String, String)]) -> Vec<&str> {
    got.iter()
        .map(|(t, _)| t.as_str())
        .filter(|t| !t.starts_with("own"))
        .collect()
}

/// The IPv6 world of [`s46_the_docs_recipe_drops_an_ipv6_guests_forged_sources`]:
/// namespace `n6h-PID` stands for the host (so its IPv6 forwarding is
/// turned on there, not on the machine's), namespace `n6w-PID` for the
/// world on its uplink `n6u{N}` (`fd46:N:1::1/64`, the world `::2`); the
/// guest is `unifs run` in the host's namespace, `fd46:N:2::2/64` behind
/// host end `::1`.
struct V6Host {
    host: Netns,
    world: Netns,
    uplink: String,
    net: String,
}

impl V6Host {
    fn new() -> V6Host {
        crate::review_s46_netrev::sweep_dead_runs();
        let (pid, n) = (std::process::id(), n());
        let world = Netns::new(format!("n6w-{pid}"));
        let host = Netns::new(format!("n6h-{pid}"));
        let uplink = format!("n6u{n}");
        let link = |args: &[&str]| {
            let mut all = vec!["ip", "-n", &host.0];
            all.extend_from_slice(args);
            run(&all);
        };
        link(&[
            "link", "add", &uplink, "type", "veth", "peer", "name", "wan0", "netns", &world.0,
        ]);
        let net = format!("fd46:{n}");
        link(&[
            "addr",
            "add",
            &format!("{net}:1::1/64"),
            "dev",
            &uplink,
            "nodad",
        ]);
        link(&["link", "set", &uplink, "up"]);
        let w = &world.0;
        let addr = format!("{net}:1::2/64");
        run(&["ip", "-n", w, "addr", "add", &addr, "dev", "wan0", "nodad"]);
        run(&["ip", "-n", w, "link", "set", "wan0", "up"]);
        let fwd = host
            .exec(&["sysctl", "-w", "net.ipv6.conf.all.forwarding=1"])
            .output()
            .unwrap();
        assert!(fwd.status.success(), "{fwd:?}");
        V6Host {
            host,
            world,
            uplink,
            net,
        }
    }

    /// The guest's address, its host end's and the world's.
    fn addrs(&self) -> (String, String, String) {
        let net = &self.net;
        (
            format!("{net}:2::2"),
            format!("{net}:2::1"),
            format!("{net}:1::2"),
        )
    }

    /// `unifs run` in the host's namespace, its guest on `t` sending
    /// `forged` then `own` to the host end's address and to the world's;
    /// its output.
    fn send(&self, t: &TestRoot, forged: &str) -> String {
        let (guest, host_end, world) = self.addrs();
        // The guest's network goes when the command ends, with what waits
        // there for a neighbour's address: the ping learns the host end's
        // first, the sleep lets the queue drain.
        let script = format!(
            "ping -c1 -W5 {host_end} >/dev/null; \
             /bin/n6net send {host_end} 9999 {forged} {guest}=own-to-host && \
             /bin/n6net send {world} 9999 {forged} {guest}=own-to-world && sleep 1"
        );
        let bin = unifs_bin();
        let mut cmd = self.host.exec(&[bin.to_str().unwrap()]);
        cmd.arg("run").arg("--root").arg(t.root());
        cmd.arg("--run-dir").arg(t.dir.path().join("run-dir"));
        let (ip, host_ip) = (format!("{guest}/64"), format!("{host_end}/64"));
        cmd.args(["--net", "veth", "--ip", &ip, "--host-ip", &host_ip]);
        cmd.args(["--gateway", &host_end, "--", "/bin/sh", "-c", &script]);
        let out = run_bounded(cmd, Duration::from_secs(30));
        format!("{}{}", ok(&out), crate::guest::harness::stderr(&out))
    }
}

/// Sends until both `host` and `world` got the guest's own datagram (UDP
/// on one path keeps its order: what passed of the forged ones is there
/// too); what each got.
type Got = Vec<(String, String)>;
fn until_own_arrives(v6: &V6Host, t: &TestRoot, host: &Inbox, world: &Inbox) -> (Got, Got) {
    let n = n();
    let (_, host_end, _) = v6.addrs();
    let forged = format!(
        "fd46:{n}:3::2=another-guest 2001:db8::9=internet {host_end}=host-end {}:1::7=world-host",
        v6.net
    );
    let (mut at_host, mut at_world) = (Vec::new(), Vec::new());
    let mut out = String::new();
    let arrived = within_30s(|| {
        out = v6.send(t, &forged);
        assert!(out.contains("sent\nsent"), "the guest's raw sockets: {out}");
        at_host.extend(host.take());
        at_world.extend(world.take());
        let own = |got: &Got| got.iter().any(|(t, _)| t.starts_with("own"));
        own(&at_host) && own(&at_world)
    });
    assert!(
        arrived,
        "the guest's own datagrams reach the host and the world: {out} {at_host:?} {at_world:?}"
    );
    (at_host, at_world)
}

/// An IPv6 routed guest (`--ip`/`--host-ip` IPv6, `--gateway` its host
/// end), on a host forwarding IPv6, sends datagrams claiming another
/// guest's address, an internet one, the host end's own and a world
/// host's, to a UDP service of the host on its host end's address and to
/// the world: with nothing on the host, all arrive at both (`rp_filter`,
/// which unifs sets, is IPv4's only). Then docs/guests.md's host recipe,
/// run as it stands: none arrives anywhere, the guest's own still do.
/// Before (the recipe's table was `ip`): all four arrived through it too.
#[test]
fn s46_the_docs_recipe_drops_an_ipv6_guests_forged_sources() {
    let test = "s46_the_docs_recipe_drops_an_ipv6_guests_forged_sources";
    if !may_run(test) {
        return;
    }
    let t = TestRoot::new();
    if !crate::common::static_program(test, N6NET, "n6net", &[&t.root()]) {
        return;
    }
    let v6 = V6Host::new();
    let any: SocketAddr = "[::]:9999".parse().unwrap();
    let (host, world) = (Inbox::bind(&v6.host.0, any), Inbox::bind(&v6.world.0, any));

    let (at_host, at_world) = until_own_arrives(&v6, &t, &host, &world);
    let all = ["another-guest", "internet", "host-end", "world-host"];
    for label in all {
        assert!(
            forged(&at_host).contains(&label) && forged(&at_world).contains(&label),
            "with no rules, {label} arrives at the host and the world \
             (else this test tells nothing): {at_host:?} {at_world:?}"
        );
    }

    let script = recipe(
        "host",
        &[
            ("WAN", v6.uplink.clone()),
            ("GUESTS", "10.0.0.0/8".into()),
            ("TABLE", format!("n6_{}", std::process::id())),
            ("VE", "ve-*".into()),
            ("GUEST", "10.0.3.2".into()),
            ("PORT", "8080".into()),
        ],
    );
    let out = run_bounded(
        v6.host.exec(&["sh", "-ec", &script]),
        Duration::from_secs(30),
    );
    ok(&out);
    host.take();
    world.take();
    let (at_host, at_world) = until_own_arrives(&v6, &t, &host, &world);
    assert!(
        forged(&at_host).is_empty(),
        "the host's service took forged IPv6 sources through the recipe: {at_host:?}"
    );
    assert!(
        forged(&at_world).is_empty(),
        "the host forwarded forged IPv6 sources through the recipe: {at_world:?}"
    );
    let (guest, _, _) = v6.addrs();
    assert!(
        at_world
            .iter()
            .any(|(t, s)| t == "own-to-world" && *s == guest),
        "the guest's own, routed: {at_world:?}"
    );
}

/// A link of the host (a bridge here), deleted when dropped.
pub(crate) struct Link(pub(crate) String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// nftables table `bridge NAME`, deleted when dropped.
pub(crate) struct BridgeTable(pub(crate) String);

impl Drop for BridgeTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "bridge", &self.0])
            .output();
    }
}

/// A named guest `name` with `init`, on a veth with address `ip` (with its
/// prefix) whose host end joins bridge `bridge`; not started.
pub(crate) fn bridged_guest(name: &str, init: &str, ip: &str, bridge: &str) -> Guest {
    let mut g = Guest::new(name, init, true);
    let made = g.config();
    let toml = std::fs::read_to_string(&made).unwrap();
    std::fs::remove_file(&made).unwrap();
    // A short name: its host end is `ve-NAME`, which the docs' rules name.
    g.name = name.into();
    let net = format!("[net]\nmode = \"veth\"\nip = \"{ip}\"\nbridge = \"{bridge}\"\n");
    std::fs::write(g.config(), format!("{toml}{net}")).unwrap();
    g
}

/// Two guests on bridge `n6b{N}{tag}` with addresses `NET…2` (the sender)
/// and `NET…3` (the receiver, `n6net recv` as its init), `NET` ending in
/// `.` or `::`: the sender sends datagrams claiming a third guest's
/// address (`NET…9`) and `elsewhere`, then its own, until the receiver has
/// its own. With no rules, the forged ones arrive too; with docs/guests.md's
/// bridge blocks run as they stand (for both guests' ports), none does,
/// and the own still do.
fn bridged_pair(test: &str, tag: char, net: &str, prefix: u8, elsewhere: &str) {
    let init = "[\"/bin/n6net\", \"recv\", \"9999\", \"/got\"]";
    let Some(pair) = BridgedPair::start(test, "n6", tag, net, prefix, init, ("n6net", N6NET))
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
    let cmd =
        format!("/bin/n6net send {to} 9999 {net}9=another-guest {elsewhere}=elsewhere {from}=own");
    let until_own_arrives = || {
        let mut got = String::new();
        let arrived = within_30s(|| {
            let out = exec(sender, &cmd);
            assert!(out.contains("sent"), "the guest's raw socket: {out}");
            got = exec(receiver, "cat /got 2>/dev/null");
            got.lines().any(|l| l.starts_with("own "))
        });
        assert!(arrived, "the sender's own datagram arrives: {got}");
        got
    };
    let got = until_own_arrives();
    assert!(
        got.contains("another-guest ") && got.contains("elsewhere "),
        "with no rules, the forged ones arrive (else this test tells nothing): {got}"
    );
    // IPv4: an ARP request to the receiver claiming another guest's
    // address makes the receiver take the sender's MAC address for it.
    let arp_spoof = |claim: &str| {
        let out = exec(sender, &format!("/bin/n6net arp eth0 {net}{claim} {to}"));
        assert!(out.contains("sent"), "the guest's packet socket: {out}");
    };
    let neigh = |of: &str| exec(receiver, &format!("ip neigh show {net}{of}"));
    let ipv4 = !net.contains(':');
    if ipv4 {
        let mut seen = String::new();
        assert!(
            within_30s(|| {
                arp_spoof("9");
                seen = neigh("9");
                seen.contains("lladdr")
            }),
            "with no rules, a forged ARP sender is taken: {seen:?}"
        );
    }

    let table = pair.docs_rules(&format!("n6_br_{}{tag}", std::process::id()));
    exec(receiver, ": > /got");
    if ipv4 {
        // Another address than before (the receiver, without net_admin,
        // cannot flush its entry): sent before the datagrams below, it
        // is in by the time they are if it passed.
        arp_spoof("8");
    }
    let got = until_own_arrives();
    let forged: Vec<&str> = got.lines().filter(|l| !l.starts_with("own ")).collect();
    assert!(
        forged.is_empty(),
        "forged sources crossed the bridge through the rules: {got}"
    );
    if ipv4 {
        let seen = neigh("8");
        assert!(
            !seen.contains("lladdr"),
            "a forged ARP sender crossed the bridge through the rules: {seen:?}"
        );
    }
    // An IPv4 source is seen as ::ffff:A by the dual-stack server.
    assert!(
        got.lines()
            .any(|l| l.starts_with("own ") && l.ends_with(from.as_str())),
        "{got}"
    );
    drop(pair);
    drop(table);
}

/// Two IPv4 guests on one bridge: docs/guests.md's bridge blocks keep one's
/// forged sources (a third guest's address, an internet one) from the
/// other, and its ARP requests claiming a third guest's address (which
/// the other then took as the sender's MAC address's). Before: no such
/// blocks (the docs said only "filter per bridge port"); the forged
/// datagrams and ARP arrive without them, as this test shows first.
#[test]
fn s46_the_docs_bridge_rules_keep_forged_ipv4_sources_from_another_guest() {
    let test = "s46_the_docs_bridge_rules_keep_forged_ipv4_sources_from_another_guest";
    if !may_run(test) {
        return;
    }
    let n = n();
    bridged_pair(test, 'a', &format!("10.46.{n}."), 24, "203.0.113.9");
}

/// [`s46_the_docs_bridge_rules_keep_forged_ipv4_sources_from_another_guest`]
/// with two IPv6 guests.
#[test]
fn s46_the_docs_bridge_rules_keep_forged_ipv6_sources_from_another_guest() {
    let test = "s46_the_docs_bridge_rules_keep_forged_ipv6_sources_from_another_guest";
    if !may_run(test) {
        return;
    }
    let n = n();
    bridged_pair(test, 'b', &format!("fd46:{n}:b::"), 64, "2001:db8::9");
}

/// Two started guests on a bridge of their own, `{short}b{N}{tag}`:
/// `sender` (`{short}{N}{tag}s`, sleeping) with address `from` (`NET…2`)
/// and `receiver` (`{short}{N}{tag}r`, running `init`) with `to` (`NET…3`),
/// `NET` ending in `.` or `::`; C program `program` (name, source) at
/// `/bin/NAME` in both.
pub(crate) struct BridgedPair {
    pub(crate) sender: Guest,
    pub(crate) receiver: Guest,
    pub(crate) from: String,
    pub(crate) to: String,
    // Last: dropped after the guests that use it.
    _bridge: Link,
}

impl BridgedPair {
    /// None (skipped) without `cc -static`.
    pub(crate) fn start(
        test: &str,
        short: &str,
        tag: char,
        net: &str,
        prefix: u8,
        init: &str,
        program: (&str, &str),
    ) -> Option<BridgedPair> {
        crate::review_s46_netrev::sweep_dead_runs();
        let n = n();
        let br = format!("{short}b{n}{tag}");
        let _ = Command::new("ip").args(["link", "del", &br]).output();
        run(&["ip", "link", "add", &br, "type", "bridge"]);
        let bridge = Link(br.clone());
        run(&["ip", "link", "set", &br, "up"]);
        let (from, to) = (format!("{net}2"), format!("{net}3"));
        let sleeping = "[\"/bin/sleep\", \"1000\"]";
        let sender = bridged_guest(
            &format!("{short}{n}{tag}s"),
            sleeping,
            &format!("{from}/{prefix}"),
            &br,
        );
        let receiver = bridged_guest(
            &format!("{short}{n}{tag}r"),
            init,
            &format!("{to}/{prefix}"),
            &br,
        );
        let (name, source) = program;
        let roots = [&*sender.t.root(), &*receiver.t.root()];
        if !crate::common::static_program(test, source, name, &roots) {
            return None;
        }
        ok(&sender.unifs(&["start", &sender.name]));
        ok(&receiver.unifs(&["start", &receiver.name]));
        Some(BridgedPair {
            sender,
            receiver,
            from,
            to,
            _bridge: bridge,
        })
    }

    /// docs/guests.md's `bridge` block and its `bridged-guest` block for
    /// both guests' ports, run as they stand, in table `name`.
    pub(crate) fn docs_rules(&self, name: &str) -> BridgeTable {
        let table = BridgeTable(name.to_string());
        ok(&sh(&recipe("bridge", &[("TABLE", table.0.clone())]), None));
        for (g, addr) in [(&self.sender, &self.from), (&self.receiver, &self.to)] {
            let block = recipe(
                "bridged-guest",
                &[
                    ("TABLE", table.0.clone()),
                    ("VE", format!("ve-{}", g.name)),
                    ("ADDR", addr.clone()),
                ],
            );
            ok(&sh(&block, None));
        }
        table
    }
}
