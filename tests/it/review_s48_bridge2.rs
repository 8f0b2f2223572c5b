//! Session 48 (bridge2): what a port locked by `[net] lock_mac` still let
//! through, and what `guest status` shows of it. A locked port checks a
//! frame's source address only: a guest (root keeps CAP_NET_RAW) sent
//! 802.1Q/802.1ad-tagged frames from its own address, which a bridge
//! without `vlan_filtering` forwards as they are, onto a VLAN the host's
//! other ports carry, and frames to the bridge group address (STP), which
//! a bridge without STP floods. Everything made is named `b2` with a
//! number of the pid and removed by guards.

use crate::guest::harness::{kill_init_keeperless, ok, stderr, within_30s};
use crate::guest::named::Guest;
use crate::review_s43_netnat::exec;
use crate::review_s46_netv6::{bridged_guest, may_run, n, run, Link};
use crate::review_s47_bridgelock::{mac, set_lock_mac, up_bridge};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `b2net send IF TPID VID DST LABEL`: one frame from IF's own address to
/// DST, type 0x88b5, holding `b2:LABEL`, tagged with TPID (hex; 0: no
/// tag) and VLAN VID, by a packet socket as a guest may send it.
/// `b2net sniff IF FILE`: each frame IF takes that holds `b2:` appends
/// `LABEL TPID VID` to FILE (`LABEL - -` untagged; a tag the kernel took
/// off the frame is read from PACKET_AUXDATA).
const B2NET: &str = r#"
#include <net/if.h>
#include <netpacket/packet.h>
#include <linux/if_ether.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <arpa/inet.h>
/* linux/if_packet.h's, which clashes with glibc's netpacket/packet.h */
struct aux {
    unsigned int tp_status, tp_len, tp_snaplen;
    unsigned short tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid;
};
#ifndef PACKET_AUXDATA
#define PACKET_AUXDATA 8
#endif
#define VLAN_VALID (1 << 4)
#define VLAN_TPID_VALID (1 << 6)
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
static int send_one(char **argv) {
    struct sockaddr_ll at;
    unsigned char mac[6], f[120] = {0};
    unsigned v[6], tpid = strtoul(argv[3], 0, 16), vid = strtoul(argv[4], 0, 10);
    int s = bound(argv[2], &at, mac);
    if (sscanf(argv[5], "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) {
        fputs("bad DST\n", stderr);
        return 4;
    }
    for (int i = 0; i < 6; i++) f[i] = v[i];
    memcpy(f + 6, mac, 6);
    int at_type = 12;
    if (tpid) {
        f[12] = tpid >> 8; f[13] = tpid; f[14] = vid >> 8; f[15] = vid;
        at_type = 16;
    }
    f[at_type] = 0x88; f[at_type + 1] = 0xb5;
    int n = snprintf((char *)f + at_type + 2, 60, "b2:%s", argv[6]);
    int len = at_type + 2 + n + 1 < 64 ? 64 : at_type + 2 + n + 1;
    memcpy(at.sll_addr, f, 6);
    if (sendto(s, f, len, 0, (void *)&at, sizeof at) < 0) { perror("sendto"); return 3; }
    puts("sent");
    return 0;
}
static int sniff(char **argv) {
    struct sockaddr_ll at;
    unsigned char mac[6], f[2048];
    int s = bound(argv[2], &at, mac), one = 1;
    if (setsockopt(s, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) < 0) { perror("aux"); exit(2); }
    for (;;) {
        union { struct cmsghdr c; char b[CMSG_SPACE(sizeof(struct aux))]; } ctl;
        struct iovec iov = {f, sizeof f - 1};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
                           .msg_controllen = sizeof ctl};
        ssize_t n = recvmsg(s, &m, 0);
        if (n < 4) continue;
        f[n] = 0;
        unsigned tpid = 0, vid = 0;
        int tagged = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
            struct aux *a = (void *)CMSG_DATA(c);
            if (a->tp_status & VLAN_VALID) {
                tagged = 1;
                vid = a->tp_vlan_tci & 0xfff;
                tpid = a->tp_status & VLAN_TPID_VALID ? a->tp_vlan_tpid : 0x8100;
            }
        }
        for (ssize_t i = 0; i + 3 <= n; i++) {
            if (memcmp(f + i, "b2:", 3)) continue;
            FILE *out = fopen(argv[3], "a");
            if (!out) break;
            if (tagged) fprintf(out, "%s %04x %u\n", (char *)f + i + 3, tpid, vid);
            else fprintf(out, "%s - -\n", (char *)f + i + 3);
            fclose(out);
            break;
        }
    }
}
int main(int argc, char **argv) {
    if (argc == 7 && !strcmp(argv[1], "send")) return send_one(argv);
    if (argc == 4 && !strcmp(argv[1], "sniff")) return sniff(argv);
    fputs("usage: b2net send IF TPID VID DST LABEL | b2net sniff IF FILE\n", stderr);
    return 1;
}
"#;

/// [`B2NET`] built in `dir` and put at `/bin/b2net` in `root`; None
/// (skipped) without `cc -static`.
pub(crate) fn with_b2net(test: &str, dir: &Path, root: &Path) -> Option<PathBuf> {
    let (src, bin) = (dir.join("b2net.c"), dir.join("b2net"));
    std::fs::write(&src, B2NET).unwrap();
    let cc = Command::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .output();
    match cc {
        Ok(out) if out.status.success() => {}
        _ => {
            crate::common::skip(test, "needs cc -static (gcc, libc6-dev)");
            return None;
        }
    }
    std::fs::copy(&bin, root.join("bin/b2net")).unwrap();
    Some(bin)
}

/// A host process (the sniffer), killed when dropped.
pub(crate) struct Killed(pub(crate) std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Guest `b2{N}{tag}` on bridge `br` at `10.58.{N}.{last}`, `lock_mac` on,
/// with init `init`.
fn locked_guest(tag: char, last: u8, br: &str, init: &str) -> Guest {
    let n = n();
    let g = bridged_guest(
        &format!("b2{n}{tag}"),
        init,
        &format!("10.58.{n}.{last}/24"),
        br,
    );
    set_lock_mac(&g, true);
    g
}

/// The netdev table unifs keeps for port `port`, as `nft` lists it (None:
/// no such table).
pub(crate) fn port_table(port: &str) -> Option<String> {
    // Named after the interface it was made for (review_s49_netleft).
    let table = crate::review_s49_netleft::port_tables(port).pop()?;
    let out = Command::new("nft")
        .args(["list", "table", "netdev", &table])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Port `port`'s table, deleted when dropped (a failed test's).
pub(crate) struct TableGuard(pub(crate) String);

impl Drop for TableGuard {
    fn drop(&mut self) {
        drop(crate::review_s49_netleft::PortTables(self.0.clone()));
    }
}

/// A locked guest and a host veth on one bridge (no `vlan_filtering`, no
/// STP), the host's far end sniffed. The guest sends, from its own
/// address, an untagged frame, frames tagged 802.1Q VLAN 42 and 802.1ad
/// VLAN 42, and one to the bridge group address (01:80:c2:00:00:00, an
/// STP BPDU's), then another untagged one. Before: every one reached the
/// host's end, the tagged ones with their tag (`tagged-q 8100 42`,
/// `tagged-ad 88a8 42`), so the guest was on VLAN 42 of whatever the
/// bridge's uplink carries. Now the port's ingress drops the tagged ones
/// and the BPDU; the untagged ones pass. Stopped, the guest leaves no
/// table.
#[test]
fn s48_a_locked_port_drops_tagged_and_bridge_control_frames() {
    let test = "s48_a_locked_port_drops_tagged_and_bridge_control_frames";
    if !may_run(test) {
        return;
    }
    let n = n();
    let br = up_bridge(format!("b2{n}a"));
    let g = locked_guest('g', 2, &br.0, "[\"/bin/sleep\", \"1000\"]");
    let tmp = tempfile::tempdir().unwrap();
    let Some(b2net) = with_b2net(test, tmp.path(), &g.t.root()) else {
        return;
    };
    // The host's port on the bridge, and its far end, sniffed.
    let (on_br, far) = (format!("b2{n}x"), format!("b2{n}y"));
    let _ = Command::new("ip").args(["link", "del", &on_br]).output();
    run(&[
        "ip", "link", "add", &on_br, "type", "veth", "peer", "name", &far,
    ]);
    let _pair = Link(on_br.clone());
    run(&["ip", "link", "set", &on_br, "master", &br.0]);
    for l in [&on_br, &far] {
        run(&["ip", "link", "set", l, "up"]);
    }
    let got = tmp.path().join("got");
    let _sniffer = Killed(
        Command::new(&b2net)
            .args(["sniff", &far])
            .arg(&got)
            .spawn()
            .unwrap(),
    );
    let port = format!("ve-{}", g.name);
    let _table = TableGuard(port.clone());
    ok(&g.unifs(&["start", &g.name]));
    let bcast = "ff:ff:ff:ff:ff:ff";
    let send = |tpid: &str, dst: &str, label: &str| {
        let out = exec(&g, &format!("/bin/b2net send eth0 {tpid} 42 {dst} {label}"));
        assert!(out.contains("sent"), "the guest's packet socket: {out}");
    };
    let seen = || std::fs::read_to_string(&got).unwrap_or_default();
    // The sniffer is bound once a frame of the guest's reaches it.
    let mut k = 0;
    assert!(
        within_30s(|| {
            k += 1;
            send("0", bcast, &format!("first-{k}"));
            std::thread::sleep(Duration::from_millis(200));
            seen().contains(" - -")
        }),
        "the guest's untagged frames never reached the host's end: {}",
        seen()
    );
    send("8100", bcast, "tagged-q");
    send("88a8", bcast, "tagged-ad");
    send("0", "01:80:c2:00:00:00", "bpdu");
    send("0", bcast, "last");
    assert!(
        within_30s(|| seen().contains("last - -")),
        "the last untagged frame: {}",
        seen()
    );
    let lines = seen();
    for label in ["tagged-q", "tagged-ad", "bpdu"] {
        assert!(
            !lines.lines().any(|l| l.starts_with(&format!("{label} "))),
            "{label} crossed the locked port {port}: {lines}"
        );
    }
    let table = port_table(&port).unwrap_or_default();
    assert!(table.contains(&format!("device \"{port}\"")), "{table}");

    ok(&g.unifs(&["stop", &g.name]));
    assert_eq!(port_table(&port), None, "the stopped guest's table");
    drop(g);
}

/// A locked guest's table outlives its interface (gone with the guest's
/// network namespace), so the clean-ups delete it: a stale record's (init
/// and keeper killed, then `guest stop`), and the keeper's when init is
/// killed under it. Guard of the clean-up (fails without the deletes in
/// `teardown_recorded`): before, no table was made.
#[test]
fn s48_a_locked_guests_table_goes_when_its_interface_went_first() {
    let test = "s48_a_locked_guests_table_goes_when_its_interface_went_first";
    if !may_run(test) {
        return;
    }
    let n = n();
    let br = up_bridge(format!("b2{n}d"));
    let g = locked_guest('k', 6, &br.0, "[\"/bin/sleep\", \"1000\"]");
    let port = format!("ve-{}", g.name);
    let _table = TableGuard(port.clone());
    let dev = Path::new("/sys/class/net").join(&port);

    ok(&g.unifs(&["start", &g.name]));
    assert!(port_table(&port).is_some(), "started");
    let pid = g.state()["pid"].as_i64().unwrap();
    kill_init_keeperless(pid);
    assert!(within_30s(|| !dev.exists()), "{port} outlived the guest");
    assert!(
        port_table(&port).is_some(),
        "the table outlives the interface (else this test tells nothing)"
    );
    ok(&g.unifs(&["stop", &g.name]));
    assert_eq!(port_table(&port), None, "after the stale record's clean-up");

    ok(&g.unifs(&["start", &g.name]));
    let pid = g.state()["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut st = serde_json::Value::Null;
    assert!(
        within_30s(|| {
            st = g.state();
            st["running"] == false && port_table(&port).is_none()
        }),
        "after its keeper's clean-up: {st}; table {:?}",
        port_table(&port)
    );
    drop(g);
}

/// `unifs guest …` as `g.cmd` runs it, in a mount namespace of its own
/// where `id` is bound over /etc/machine-id (the host's stays as it is).
fn with_machine_id(g: &Guest, id: &Path, args: &[&str]) -> Output {
    let inner = g.cmd(args);
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"]);
    cmd.arg("mount --bind \"$1\" /etc/machine-id && shift && exec \"$@\"");
    cmd.arg("sh").arg(id).arg(inner.get_program());
    cmd.args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    crate::guest::harness::run_bounded(cmd, Duration::from_secs(30))
}

/// `guest status` shows the MAC address the guest started with, not one
/// derived again from what /etc/machine-id says now (a host whose id was
/// written again, a cloned image given its own): the port is locked to
/// the started one. Before: `mac_address` was derived at each status, and
/// showed an address the port takes nothing from.
#[test]
fn s48_status_shows_the_started_mac_though_the_machine_id_changed() {
    let test = "s48_status_shows_the_started_mac_though_the_machine_id_changed";
    if !may_run(test) {
        return;
    }
    if !Path::new("/etc/machine-id").is_file() {
        crate::common::skip(test, "needs /etc/machine-id (the one bound over)");
        return;
    }
    let n = n();
    let br = up_bridge(format!("b2{n}b"));
    let g = locked_guest('s', 3, &br.0, "[\"/bin/sleep\", \"1000\"]");
    let _table = TableGuard(format!("ve-{}", g.name));
    ok(&g.unifs(&["start", &g.name]));
    let eth0 = mac(&g);
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("machine-id");
    std::fs::write(&other, "0123456789abcdef0123456789abcdef\n").unwrap();
    let out = with_machine_id(&g, &other, &["status", "--json", &g.name]);
    let st: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(st["mac_address"], eth0.as_str(), "{st}");
    ok(&g.unifs(&["stop", &g.name]));
    drop(g);
}

/// No machine-id (an empty /etc/machine-id, as an image built for
/// first-boot leaves it): a locked guest's start is refused, saying what
/// to do, before anything is made: no interface, no table, nothing
/// mounted, the guest neither running nor stale. Guard: the refusal
/// was there before (fails if `guest_mac` takes any id).
#[test]
fn s48_a_locked_start_without_a_machine_id_is_refused_leaving_nothing() {
    let test = "s48_a_locked_start_without_a_machine_id_is_refused_leaving_nothing";
    if !may_run(test) {
        return;
    }
    if !Path::new("/etc/machine-id").is_file() {
        crate::common::skip(test, "needs /etc/machine-id (the one bound over)");
        return;
    }
    let n = n();
    let br = up_bridge(format!("b2{n}c"));
    let g = locked_guest('m', 4, &br.0, "[\"/bin/sleep\", \"1000\"]");
    // A start that went through (the code broken) leaves none either.
    let _table = TableGuard(format!("ve-{}", g.name));
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("machine-id");
    std::fs::write(&empty, "").unwrap();
    let out = with_machine_id(&g, &empty, &["start", &g.name]);
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("[net] lock_mac: /etc/machine-id is missing, empty or not 32 hex digits")
            && err.contains("systemd-machine-id-setup"),
        "{err}"
    );
    let port = format!("ve-{}", g.name);
    assert!(!Path::new("/sys/class/net").join(&port).exists());
    assert_eq!(port_table(&port), None);
    let st = g.state();
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["stale"], false, "{st}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&g.name), "{mounts}");
    drop(g);
}

/// A real bridge with `vlan_filtering 1`: a locked guest's start is
/// refused by name, and leaves no interface. Guard: the refusal was
/// tested on a fake /sys only (fails if `check_bridge` lets it through).
#[test]
fn s48_a_real_vlan_filtering_bridge_is_refused() {
    let test = "s48_a_real_vlan_filtering_bridge_is_refused";
    if !may_run(test) {
        return;
    }
    let n = n();
    let br = format!("b2{n}v");
    let _ = Command::new("ip").args(["link", "del", &br]).output();
    let made = Command::new("ip")
        .args(["link", "add", &br, "type", "bridge", "vlan_filtering", "1"])
        .output()
        .unwrap();
    let br = Link(br);
    if !made.status.success() {
        // Not `common::skip`, which fails under CI: a kernel built without
        // CONFIG_BRIDGE_VLAN_FILTERING (EOPNOTSUPP) has no such bridge for
        // unifs to refuse either (no `bridge/vlan_filtering` file).
        eprintln!(
            "{test}: the kernel makes no VLAN-filtering bridge: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        );
        return;
    }
    run(&["ip", "link", "set", &br.0, "up"]);
    let g = locked_guest('f', 5, &br.0, "[\"/bin/sleep\", \"1000\"]");
    let out = g.unifs(&["start", &g.name]);
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "[net] lock_mac on [net] bridge {}: the bridge filters VLANs (vlan_filtering 1)",
            br.0
        )),
        "{err}"
    );
    let port = format!("ve-{}", g.name);
    assert!(!Path::new("/sys/class/net").join(&port).exists());
    assert_eq!(g.state()["running"], false);
    drop(g);
}
