//! Session 35: guest networking as an nspawn or LXC user would try it:
//! mistakes said before anything is made, IPv6 addresses usable at once,
//! guests on one bridge.

use crate::common::unifs_bin;
use crate::guest::harness::{
    can_run, has_ip, ok, stderr, wait_bounded, within_30s, KillOnDrop, TestRoot,
};
use crate::guest::review_s21_keeper::run_groups;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Our subnets' third byte (second for IPv6), from our pid: clear of the
/// other veth tests' 10.213 to 10.217.
fn n() -> u32 {
    std::process::id() % 200 + 20
}

/// `unifs run --root ROOT OPTS -- sh -c SCRIPT` (bounded), and its pid.
fn run(t: &TestRoot, opts: &[&str], script: &str) -> (u32, Output) {
    let mut cmd = Command::new(unifs_bin());
    // A run dir of its own: the default one's sweep warns of what other
    // tests' killed runs left there, a line these tests do not expect.
    let run_dir = t.dir.path().join("run-dir");
    cmd.arg("run").arg("--root").arg(t.root());
    cmd.arg("--run-dir").arg(&run_dir).args(opts);
    cmd.args(["--", "/bin/sh", "-c", script]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    (
        pid,
        wait_bounded(KillOnDrop(Some(child)), Duration::from_secs(30)),
    )
}

/// The host's addresses, as `ip -o addr show` lists them.
fn host_addrs() -> String {
    let out = Command::new("ip").args(["-o", "addr", "show"]).output();
    String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
}

/// A bridge on the host, removed when dropped.
struct Bridge(String);

impl Bridge {
    fn new(name: &str, addr: &str) -> Bridge {
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        let _ = Command::new("ip").args(["link", "del", name]).output();
        ip(&["link", "add", name, "type", "bridge"]);
        let bridge = Bridge(name.into());
        ip(&["addr", "add", addr, "dev", name]);
        ip(&["link", "set", name, "up"]);
        bridge
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Each mistake in `--ip`, `--host-ip`, `--gateway` or `--bridge` is one
/// line naming the option and what is wrong, and nothing is left. Before,
/// the same address on both ends or two subnets started a guest that
/// reached nothing, and the rest got `ip`'s own words ("Nexthop has invalid
/// gateway", "Operation not supported") after the pair was made.
#[test]
fn s35_veth_mistakes_are_one_line_naming_the_option() {
    let test = "s35_veth_mistakes_are_one_line_naming_the_option";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let t = TestRoot::new();
    let n = n();
    let (guest, host) = (format!("10.218.{n}.2/24"), format!("10.218.{n}.1/24"));
    let cases: &[(&[&str], String)] = &[
        (
            &["--ip", &format!("10.218.{n}.2/33"), "--host-ip", &host],
            format!("--ip 10.218.{n}.2/33: the prefix must be 0 to 32"),
        ),
        (
            &["--ip", &guest, "--host-ip", &guest],
            format!("--host-ip {guest} is the guest's own address"),
        ),
        (
            &[
                "--ip",
                &guest,
                "--host-ip",
                &format!("10.218.{}.1/24", n + 1),
            ],
            "are not in one subnet".into(),
        ),
        (
            &["--ip", &format!("fd18:{n}::2/64"), "--host-ip", &host],
            "one is IPv4, the other IPv6".into(),
        ),
        (
            &[
                "--ip",
                &guest,
                "--host-ip",
                &host,
                "--gateway",
                "10.219.0.1",
            ],
            "--gateway 10.219.0.1 is not another address of the guest's subnet".into(),
        ),
        (
            &["--ip", &guest, "--gateway", &host],
            format!("--gateway {host}: expected an address alone"),
        ),
        (
            &["--ip", &guest, "--bridge", "br-s35-nope"],
            "--bridge br-s35-nope: no such interface on the host".into(),
        ),
        (
            &["--ip", &guest, "--bridge", "lo"],
            "--bridge lo: that interface is not a bridge".into(),
        ),
    ];
    for (opts, want) in cases {
        let mut all = vec!["--net", "veth"];
        all.extend_from_slice(opts);
        let (pid, out) = run(&t, &all, "echo started");
        let err = stderr(&out);
        assert!(!out.status.success(), "{opts:?} started: {out:?}");
        assert!(
            err.contains(want.as_str()),
            "{opts:?}: want {want:?} in {err:?}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{opts:?}: one line: {err:?}");
        assert!(
            within_30s(|| run_groups(pid).is_empty()),
            "{opts:?} left groups (and so perhaps its overlay daemon): {:?}",
            run_groups(pid)
        );
        let addrs = host_addrs();
        assert!(
            !addrs.contains(&format!("10.218.{n}.")),
            "{opts:?} left a host end with its address: {addrs}"
        );
    }
}

/// A `--host-ip` whose subnet holds an address of the host already: the
/// kernel routes that subnet on to the older interface, and the guest
/// reaches nothing (it started without a word before).
#[test]
fn s35_host_ip_in_a_subnet_the_host_has_is_refused() {
    let test = "s35_host_ip_in_a_subnet_the_host_has_is_refused";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let t = TestRoot::new();
    let n = n();
    let name = format!("br-s35h-{n}");
    let _bridge = Bridge::new(&name, &format!("10.220.{n}.1/24"));
    let opts = [
        "--net",
        "veth",
        "--ip",
        &format!("10.220.{n}.3/24"),
        "--host-ip",
        &format!("10.220.{n}.2/24"),
    ];
    let (pid, out) = run(&t, &opts, "echo started");
    let err = stderr(&out);
    assert!(!out.status.success(), "started: {out:?}");
    assert!(
        err.contains(&format!(
            "--host-ip 10.220.{n}.2/24: host interface {name} has 10.220.{n}.1/24 in that subnet"
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(within_30s(|| run_groups(pid).is_empty()));
    // A wider subnet around it is fine: the guest's narrower route wins.
    let opts = [
        "--net",
        "veth",
        "--ip",
        &format!("10.220.{n}.130/25"),
        "--host-ip",
        &format!("10.220.{n}.129/25"),
    ];
    drop(_bridge);
    let _wide = Bridge::new(&name, &format!("10.220.{n}.1/16"));
    let script = format!("ping -c1 -W5 10.220.{n}.129 >/dev/null && echo ping-ok");
    let (_, out) = run(&t, &opts, &script);
    assert!(ok(&out).contains("ping-ok"), "{out:?}");
}

/// Whether the kernel has IPv6; says why `test` is skipped if not (a
/// failure under CI, whose machine has it).
fn has_ipv6(test: &str) -> bool {
    let has = std::path::Path::new("/proc/net/if_inet6").exists();
    if !has {
        crate::common::skip(test, "the kernel has no IPv6");
    }
    has
}

/// An IPv6 `--ip` and `--host-ip` are usable as the command starts. Before,
/// both stayed "tentative" (duplicate address detection) for a second or
/// more: a service binding its address failed, a ping got no answer.
#[test]
fn s35_ipv6_addresses_are_usable_at_once() {
    let test = "s35_ipv6_addresses_are_usable_at_once";
    if !can_run(test) || !has_ip(test) || !has_ipv6(test) {
        return;
    }
    let t = TestRoot::new();
    let n = n();
    let (guest, host) = (format!("fd18:{n}::2/64"), format!("fd18:{n}::1/64"));
    let gw = format!("fd18:{n}::1");
    let opts = [
        "--net",
        "veth",
        "--ip",
        &guest,
        "--host-ip",
        &host,
        "--gateway",
        &gw,
    ];
    let script = format!(
        "ip -6 addr show dev eth0 | grep fd18; ip -6 route | grep default; \
         ping -c1 -W5 {gw} >/dev/null && echo ping-ok"
    );
    let (_, out) = run(&t, &opts, &script);
    let o = ok(&out);
    assert!(o.contains(&format!("inet6 {guest}")), "{o}");
    assert!(!o.contains("tentative"), "{o}");
    assert!(o.contains(&format!("default via {gw}")), "{o}");
    assert!(o.contains("ping-ok"), "guest reaches the host end: {o}");
}

/// An IPv6 gateway named by its link-local address (fe80::1, as many
/// routers and hosting providers give it) becomes the default route. Before,
/// `ip route add default via fe80::1` failed: "Egress device not specified".
#[test]
fn s35_ipv6_link_local_gateway_is_taken() {
    let test = "s35_ipv6_link_local_gateway_is_taken";
    if !can_run(test) || !has_ip(test) || !has_ipv6(test) {
        return;
    }
    let t = TestRoot::new();
    let n = n();
    let guest = format!("fd19:{n}::2/64");
    let opts = ["--net", "veth", "--ip", &guest, "--gateway", "fe80::1"];
    let (_, out) = run(&t, &opts, "ip -6 route | grep default");
    let o = ok(&out);
    assert!(o.contains("default via fe80::1 dev eth0"), "{o}");
}

/// Two guests on one bridge reach each other and the bridge's address (a
/// check of what worked; no test had a bridge).
#[test]
fn s35_two_guests_on_one_bridge_reach_each_other() {
    let test = "s35_two_guests_on_one_bridge_reach_each_other";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let n = n();
    let name = format!("br-s35b-{n}");
    let _bridge = Bridge::new(&name, &format!("10.221.{n}.1/24"));
    let (a, b) = (TestRoot::new(), TestRoot::new());
    let mut cmd = Command::new(unifs_bin());
    cmd.arg("run").arg("--root").arg(a.root());
    cmd.args(["--net", "veth", "--ip", &format!("10.221.{n}.2/24")]);
    cmd.args(["--bridge", &name, "--gateway", &format!("10.221.{n}.1")]);
    cmd.args([
        "--",
        "/bin/sh",
        "-c",
        "while :; do echo from-a | nc -l -p 7777; done",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guest_a = KillOnDrop(Some(cmd.spawn().unwrap()));
    let addr: std::net::SocketAddr = format!("10.221.{n}.2:7777").parse().unwrap();
    assert!(
        within_30s(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()),
        "guest a listens, reached from the host through the bridge"
    );
    let opts = [
        "--net",
        "veth",
        "--ip",
        &format!("10.221.{n}.3/24"),
        "--bridge",
        &name,
    ];
    // Retried: a connection between two of a's listens (after the host's
    // probe) is refused.
    let script = format!(
        "for i in $(seq 100); do nc 10.221.{n}.2 7777 </dev/null 2>/dev/null && break; sleep 0.1; done; \
         ping -c1 -W5 10.221.{n}.1 >/dev/null && echo ping-ok"
    );
    let (_, out) = run(&b, &opts, &script);
    let o = ok(&out);
    assert!(o.contains("from-a"), "guest b reaches guest a: {o}");
    assert!(o.contains("ping-ok"), "guest b reaches the bridge: {o}");
    drop(guest_a);
}
