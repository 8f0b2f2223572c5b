//! Session 47 (bridgelock): a bridged guest's port locked to its own MAC
//! address (`[net] lock_mac`, `unifs run --lock-mac`). Without it a guest
//! (CAP_NET_RAW, kept by default) sends a frame from another guest's MAC
//! address, and the bridge sends that guest's frames to it until the other
//! sends again. Everything made is named with `blk` and a number of the
//! pid (bridges, guests) and removed by guards.

use crate::common::unifs_bin;
use crate::guest::harness::{ok, run_bounded, stderr, within_30s, TestRoot};
use crate::guest::named::Guest;
use crate::review_s43_netnat::exec;
use crate::review_s46_netrev::packet_socket_c;
use crate::review_s46_netv6::{bridged_guest, may_run, n, run, Link};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `blknet frame IF SRC DST LABEL`: one Ethernet frame (type 0x88b5, the
/// local experimental one) from MAC address SRC (`self`: IF's own) to DST
/// holding `blk:LABEL`, by a packet socket, as a guest with CAP_NET_RAW
/// may send. `blknet sniff IF FILE`: each frame IF takes in or sends that
/// holds `blk:` appends what follows to FILE, a line each.
const BLKNET: &str = concat!(
    packet_socket_c!(),
    r#"
static int mac_of(const char *s, unsigned char *mac) {
    unsigned v[6];
    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) return -1;
    for (int i = 0; i < 6; i++) mac[i] = v[i];
    return 0;
}
static int frame(char **argv) {
    struct sockaddr_ll at;
    unsigned char mac[6], f[100] = {0};
    int s = bound(argv[2], &at, mac);
    if (strcmp(argv[3], "self") && mac_of(argv[3], mac)) { fputs("bad SRC\n", stderr); return 4; }
    if (mac_of(argv[4], f)) { fputs("bad DST\n", stderr); return 4; }
    memcpy(f + 6, mac, 6);
    f[12] = 0x88; f[13] = 0xb5;
    int n = snprintf((char *)f + 14, sizeof f - 14, "blk:%s", argv[5]);
    int len = 14 + n + 1 < 60 ? 60 : 14 + n + 1;
    memcpy(at.sll_addr, f, 6);
    if (sendto(s, f, len, 0, (void *)&at, sizeof at) < 0) { perror("sendto"); return 3; }
    puts("sent");
    return 0;
}
int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "frame")) return frame(argv);
    if (argc == 4 && !strcmp(argv[1], "sniff")) return sniff(argv, "blk:");
    fputs("usage: blknet frame IF SRC DST LABEL | blknet sniff IF FILE\n", stderr);
    return 1;
}
"#
);

/// [`BLKNET`] built in `dir` (the host runs it too) and put at
/// `/bin/blknet` in each of `roots`; None (skipped) without `cc -static`.
pub(crate) fn with_blknet(test: &str, dir: &Path, roots: &[&Path]) -> Option<std::path::PathBuf> {
    let (src, bin) = (dir.join("blknet.c"), dir.join("blknet"));
    std::fs::write(&src, BLKNET).unwrap();
    let cc = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .status();
    if !cc.is_ok_and(|s| s.success()) {
        crate::common::skip(test, "needs cc -static (gcc, libc6-dev)");
        return None;
    }
    for root in roots {
        std::fs::copy(&bin, root.join("bin/blknet")).unwrap();
    }
    Some(bin)
}

/// Bridge `blk{N}{tag}`, up, deleted when dropped.
fn bridge(tag: char) -> Link {
    up_bridge(format!("blk{}{tag}", n()))
}

/// Bridge `br` (one left from an earlier run removed), up, deleted when
/// dropped.
pub(crate) fn up_bridge(br: String) -> Link {
    let _ = Command::new("ip").args(["link", "del", &br]).output();
    run(&["ip", "link", "add", &br, "type", "bridge"]);
    let link = Link(br.clone());
    run(&["ip", "link", "set", &br, "up"]);
    link
}

/// Sets `[net] lock_mac` in `g`'s config (appended to its `[net]`, the
/// config's last table).
pub(crate) fn set_lock_mac(g: &Guest, on: bool) {
    let toml = std::fs::read_to_string(g.config()).unwrap();
    let toml = toml.replace("lock_mac = true\n", "");
    let line = if on { "lock_mac = true\n" } else { "" };
    std::fs::write(g.config(), format!("{toml}{line}")).unwrap();
}

/// `g`'s `eth0` MAC address.
pub(crate) fn mac(g: &Guest) -> String {
    let out = exec(g, "cat /sys/class/net/eth0/address");
    let mac = out.trim().to_string();
    assert_eq!(mac.len(), 17, "{out}");
    mac
}

/// `bridge fdb show br BR`'s lines.
pub(crate) fn fdb(br: &str) -> String {
    let out = Command::new("bridge")
        .args(["fdb", "show", "br", br])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Guest `victim` sends a frame (for a learning port: the bridge learns
/// where it is), guest `forger` one from `victim`'s MAC address, then the
/// host one labelled `label` to that address through bridge `br`: who got
/// it, once one has (`both`: flooded, the bridge knew the address nowhere).
fn steal_once(
    blknet: &Path,
    br: &str,
    (forger, victim): (&Guest, &Guest),
    victim_mac: &str,
    label: &str,
) -> &'static str {
    let out = exec(victim, "/bin/blknet frame eth0 self ff:ff:ff:ff:ff:ff own");
    assert!(out.contains("sent"), "the victim's packet socket: {out}");
    let out = exec(
        forger,
        &format!("/bin/blknet frame eth0 {victim_mac} ff:ff:ff:ff:ff:ff forged"),
    );
    assert!(out.contains("sent"), "the forger's packet socket: {out}");
    let out = Command::new(blknet)
        .args(["frame", br, "self", victim_mac, label])
        .output()
        .unwrap();
    assert!(out.status.success(), "the host's frame: {out:?}");
    let has = |g: &Guest| exec(g, "cat /got 2>/dev/null").lines().any(|l| l == label);
    let mut who = "";
    let got = within_30s(|| {
        who = match (has(forger), has(victim)) {
            (true, true) => "both",
            (true, false) => "forger",
            (false, true) => "victim",
            (false, false) => "",
        };
        !who.is_empty()
    });
    assert!(got, "neither guest got the host's frame {label}");
    who
}

/// Three guests on one bridge, sniffing their `eth0`: a victim, a forger
/// and, later, a forger without the lock. With no `lock_mac`, the forger
/// sends a frame from the victim's MAC address and the host's frames to
/// the victim go to the forger (shown first, else the test tells nothing).
/// With `lock_mac` on the victim and the forger, neither forger takes them
/// any more: the victim gets them. The forger's port drops its forged
/// frame (locked); the unlocked one's port learns, but not over the
/// victim's static entry (sticky). Before: no `lock_mac` (an unknown key).
#[test]
fn s47_a_guest_forging_a_locked_guests_mac_no_longer_takes_its_frames() {
    let test = "s47_a_guest_forging_a_locked_guests_mac_no_longer_takes_its_frames";
    if !may_run(test) {
        return;
    }
    let br = bridge('a');
    let n = n();
    let sniff = "[\"/bin/blknet\", \"sniff\", \"eth0\", \"/got\"]";
    let guest = |tag: &str, last: u8| {
        bridged_guest(
            &format!("blk{n}a{tag}"),
            sniff,
            &format!("10.48.{n}.{last}/24"),
            &br.0,
        )
    };
    let (victim, forger, unlocked) = (guest("v", 2), guest("f", 3), guest("u", 4));
    let tmp = tempfile::tempdir().unwrap();
    let roots = [&victim.t.root(), &forger.t.root(), &unlocked.t.root()];
    let Some(blknet) = with_blknet(test, tmp.path(), &roots.map(|r| r.as_path())) else {
        return;
    };
    ok(&victim.unifs(&["start", &victim.name]));
    ok(&forger.unifs(&["start", &forger.name]));
    let victim_mac = mac(&victim);
    let (mut k, mut who) = (0, "");
    let stolen = within_30s(|| {
        k += 1;
        let label = format!("off-{k}");
        who = steal_once(&blknet, &br.0, (&forger, &victim), &victim_mac, &label);
        who == "forger"
    });
    assert!(
        stolen,
        "with no lock, the forger takes the victim's frames (else this test tells nothing): \
         {who} got the last; fdb {}",
        fdb(&br.0)
    );

    for g in [&victim, &forger] {
        ok(&g.unifs(&["stop", &g.name]));
        set_lock_mac(g, true);
        ok(&g.unifs(&["start", &g.name]));
    }
    ok(&unlocked.unifs(&["start", &unlocked.name]));
    let victim_mac = mac(&victim);
    for round in 0..3 {
        for (forger, what) in [(&forger, "locked"), (&unlocked, "unlocked")] {
            let label = format!("on-{what}-{round}");
            let who = steal_once(&blknet, &br.0, (forger, &victim), &victim_mac, &label);
            assert_eq!(
                who,
                "victim",
                "round {round}: a forger whose port is {what} took a locked guest's frames: \
                 fdb {}",
                fdb(&br.0)
            );
        }
    }
    drop((victim, forger, unlocked));
}

/// `g`'s IPv6 link-local address on `eth0`.
fn link_local(g: &Guest) -> String {
    let out = exec(g, "ip -6 -o addr show dev eth0 scope link");
    let addr = out
        .split_whitespace()
        .find(|w| w.starts_with("fe80:"))
        .unwrap_or_else(|| panic!("no link-local address: {out}"));
    addr.split('/').next().unwrap().to_string()
}

/// Two guests with `lock_mac` on one bridge: each `eth0` has a locally
/// administered address of unifs's, the same after a restart; the ports
/// learn nothing, are locked and hold one static sticky entry each; the
/// guests reach each other over IPv4 (ARP) and IPv6 link-local (neighbour
/// discovery); stopped, they leave no entry and no interface. Before:
/// `lock_mac` was an unknown key (the start failed).
#[test]
fn s47_locked_guests_talk_keep_their_mac_and_leave_nothing() {
    let test = "s47_locked_guests_talk_keep_their_mac_and_leave_nothing";
    if !may_run(test) {
        return;
    }
    let br = bridge('b');
    let n = n();
    let guest = |tag: &str, last: u8| {
        let g = bridged_guest(
            &format!("blk{n}b{tag}"),
            "[\"/bin/sleep\", \"1000\"]",
            &format!("10.49.{n}.{last}/24"),
            &br.0,
        );
        set_lock_mac(&g, true);
        g
    };
    let (a, b) = (guest("a", 2), guest("b", 3));
    ok(&a.unifs(&["start", &a.name]));
    ok(&b.unifs(&["start", &b.name]));
    let (mac_a, mac_b) = (mac(&a), mac(&b));
    assert_ne!(mac_a, mac_b);
    for (g, mac) in [(&a, &mac_a), (&b, &mac_b)] {
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 3, 2, "locally administered unicast: {mac}");
        let port = format!("ve-{}", g.name);
        let shown = Command::new("ip")
            .args(["-d", "link", "show", "dev", &port])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.contains("learning off") && shown.contains("locked on"),
            "{shown}"
        );
        let entries = fdb(&br.0);
        let entry = entries
            .lines()
            .find(|l| l.starts_with(mac.as_str()))
            .unwrap_or_else(|| panic!("no entry for {mac}: {entries}"));
        assert!(
            entry.contains(&format!("dev {port}"))
                && entry.contains("static")
                && entry.contains("sticky"),
            "{entry}"
        );
    }

    let b_ip = format!("10.49.{n}.3");
    let mut out = String::new();
    assert!(
        within_30s(|| {
            out = exec(&a, &format!("ping -c1 -W2 {b_ip} && ip neigh show {b_ip}"));
            out.contains("1 packets received")
        }),
        "IPv4 between locked guests: {out}"
    );
    assert!(out.contains(&format!("lladdr {mac_b}")), "ARP: {out}");
    let b6 = link_local(&b);
    assert!(
        within_30s(|| {
            out = exec(
                &a,
                &format!("ping6 -c1 -W2 -I eth0 {b6} && ip -6 neigh show {b6}"),
            );
            out.contains("1 packets received")
        }),
        "IPv6 neighbour discovery between locked guests: {out}"
    );
    assert!(out.contains(&format!("lladdr {mac_b}")), "ND: {out}");

    ok(&a.unifs(&["restart", &a.name]));
    assert_eq!(mac(&a), mac_a, "the same address after a restart");
    for g in [&a, &b] {
        ok(&g.unifs(&["stop", &g.name]));
        assert!(!Path::new("/sys/class/net")
            .join(format!("ve-{}", g.name))
            .exists());
    }
    let left = fdb(&br.0);
    for mac in [&mac_a, &mac_b] {
        assert!(!left.contains(mac.as_str()), "{mac} left: {left}");
    }
    assert!(!left.contains(" dev ve-"), "{left}");
    drop((a, b));
}

/// `unifs run --lock-mac` on a bridge: while it runs its port is locked
/// with one static entry, its guest's `eth0` address; after, nothing is
/// left. Before: no such option.
#[test]
fn s47_a_run_locks_its_port_and_leaves_nothing() {
    let test = "s47_a_run_locks_its_port_and_leaves_nothing";
    if !may_run(test) {
        return;
    }
    let br = bridge('c');
    let t = TestRoot::new();
    let n = n();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.arg("--run-dir").arg(t.dir.path().join("run-dir"));
    let ip = format!("10.50.{n}.2/24");
    cmd.args([
        "--net",
        "veth",
        "--ip",
        &ip,
        "--bridge",
        &br.0,
        "--lock-mac",
    ]);
    // Its address, then time for the host's look.
    cmd.args([
        "--",
        "/bin/sh",
        "-c",
        "cat /sys/class/net/eth0/address; sleep 3",
    ]);
    let br_name = br.0.clone();
    let looked = std::thread::spawn(move || {
        let mut seen = String::new();
        within_30s(|| {
            seen = fdb(&br_name);
            seen.contains("sticky")
        });
        seen
    });
    let out = run_bounded(cmd, Duration::from_secs(30));
    let guest_mac = ok(&out).trim().to_string();
    let seen = looked.join().unwrap();
    let entry = seen
        .lines()
        .find(|l| l.contains("sticky"))
        .unwrap_or_else(|| panic!("no sticky entry while it ran: {seen} {}", stderr(&out)));
    assert!(
        entry.starts_with(&guest_mac) && entry.contains(" dev ve-") && entry.contains("static"),
        "{entry} (eth0: {guest_mac})"
    );
    let left = fdb(&br.0);
    assert!(
        !left.contains(&guest_mac) && !left.contains(" dev ve-"),
        "{left}"
    );
}

/// `lock_mac` without a bridge is refused, naming the setting: the
/// config's key, or `unifs run`'s option. Before: an unknown key, an
/// unknown option.
#[test]
fn s47_lock_mac_without_a_bridge_is_refused_by_its_name() {
    let test = "s47_lock_mac_without_a_bridge_is_refused_by_its_name";
    if !may_run(test) {
        return;
    }
    let n = n();
    let g = Guest::new(&format!("blk{n}d"), "[\"/bin/sleep\", \"1000\"]", true);
    let toml = std::fs::read_to_string(g.config()).unwrap();
    let net = format!("[net]\nmode = \"veth\"\nip = \"10.51.{n}.2/24\"\nhost_ip = \"10.51.{n}.1/24\"\nlock_mac = true\n");
    std::fs::write(g.config(), format!("{toml}{net}")).unwrap();
    let out = g.unifs(&["start", &g.name]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "[net] lock_mac needs [net] mode = \"veth\" and [net] bridge: it locks the host \
             end's bridge port"
        ),
        "{}",
        stderr(&out)
    );
    let t = TestRoot::new();
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.arg("--run-dir").arg(t.dir.path().join("run-dir"));
    cmd.args(["--net", "none", "--lock-mac", "--", "/bin/true"]);
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--lock-mac needs --net veth and --bridge"),
        "{}",
        stderr(&out)
    );
}
