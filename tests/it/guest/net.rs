//! `--net none|host|veth`.

use super::harness::{can_run, ok, stderr, TestRoot};

fn interfaces(t: &TestRoot, opts: &[&str]) -> Vec<String> {
    let out = ok(&t.sh(opts, "ls /sys/class/net"));
    out.split_whitespace().map(str::to_string).collect()
}

#[test]
fn net_none_has_only_loopback_and_it_is_up() {
    if !can_run("net_none_has_only_loopback_and_it_is_up") {
        return;
    }
    let t = TestRoot::new();
    assert_eq!(interfaces(&t, &[]), ["lo"]);
    let out = ok(&t.sh(
        &["--net", "none"],
        "cat /sys/class/net/lo/operstate; ping -c1 -W2 127.0.0.1 >/dev/null && echo ping-ok",
    ));
    assert!(out.contains("ping-ok"), "{out}");
}

#[test]
fn net_host_shares_the_hosts_interfaces() {
    if !can_run("net_host_shares_the_hosts_interfaces") {
        return;
    }
    let t = TestRoot::new();
    let host = || {
        let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("ve-"))
            .collect();
        names.sort();
        names
    };
    // The host's own namespace, not a copy of its list.
    let ns = ok(&t.sh(&["--net", "host"], "readlink /proc/self/ns/net"));
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(ns.trim(), host_ns.to_str().unwrap());
    // Other tests add and remove bridges meanwhile: each interface the host
    // had both before and after the run is one the guest saw.
    let before = host();
    let mut guest = interfaces(&t, &["--net", "host"]);
    guest.retain(|n| !n.starts_with("ve-"));
    let after = host();
    let unseen: Vec<&String> = before
        .iter()
        .filter(|n| after.contains(n) && !guest.contains(n))
        .collect();
    assert!(
        unseen.is_empty(),
        "the guest did not see {unseen:?}: {guest:?}"
    );
}

#[test]
fn net_veth_gives_the_guest_its_own_address() {
    if !can_run("net_veth_gives_the_guest_its_own_address") {
        return;
    }
    if !super::harness::has_ip("net_veth_gives_the_guest_its_own_address") {
        return;
    }
    let t = TestRoot::new();
    // A subnet unlikely to clash, derived from our pid.
    let n = std::process::id() % 200 + 20;
    let guest_ip = format!("10.213.{n}.2/24");
    let host_ip = format!("10.213.{n}.1/24");
    let out = t.sh(
        &["--net", "veth", "--ip", &guest_ip, "--host-ip", &host_ip],
        &format!("ls /sys/class/net | tr '\\n' ' '; echo; ip -4 addr show eth0; ping -c1 -W2 10.213.{n}.1 >/dev/null && echo ping-ok"),
    );
    let o = ok(&out);
    assert!(o.lines().next().unwrap().trim() == "eth0 lo", "{o}");
    assert!(o.contains(&format!("inet 10.213.{n}.2/24")), "{o}");
    assert!(
        o.contains("ping-ok"),
        "guest reaches the host end: {o}\n{}",
        stderr(&out)
    );
    // Without --ip: a clear error, nothing started.
    let out = t.sh(&["--net", "veth"], "true");
    assert!(
        stderr(&out).contains("--net veth needs --ip"),
        "{}",
        stderr(&out)
    );
}
