//! Networks: `host` shares the host's, `none` is a namespace with loopback
//! only (brought up by the child), `veth` gives the guest its own addresses
//! as VServer did: a veth pair whose guest end (`eth0`) gets `ip`, whose host
//! end (`ve-NAME`) gets `host_ip` or joins `bridge`. The pair is made with
//! iproute2's `ip` while the child waits; it vanishes with the namespace.

use super::{Error, GuestSpec, NetMode, Result};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::path::Path;
use std::process::Command;

/// The host's half of the network set-up, while the child waits.
pub fn setup_host_side(spec: &GuestSpec, pid: Pid) -> Result<()> {
    match spec.net.mode {
        NetMode::Host | NetMode::None => Ok(()),
        NetMode::Veth => setup_veth(spec, pid),
    }
}

/// Checks a veth spec before anything is created.
pub fn check(spec: &GuestSpec) -> Result<()> {
    let net = &spec.net;
    if net.mode != NetMode::Veth {
        if net.ip.is_some()
            || net.host_ip.is_some()
            || net.bridge.is_some()
            || net.gateway.is_some()
        {
            return Err(Error::Net(
                "--ip, --host-ip, --bridge and --gateway need --net veth".into(),
            ));
        }
        return Ok(());
    }
    let Some(ip) = &net.ip else {
        return Err(Error::Net(
            "--net veth needs --ip ADDR/PREFIX for the guest".into(),
        ));
    };
    for a in [Some(ip), net.host_ip.as_ref()].into_iter().flatten() {
        let (addr, prefix) = a
            .split_once('/')
            .ok_or_else(|| Error::Net(format!("{a}: expected ADDR/PREFIX")))?;
        let ok = addr.parse::<std::net::IpAddr>().is_ok()
            && prefix.parse::<u8>().is_ok_and(|p| p <= 128);
        if !ok {
            return Err(Error::Net(format!("{a}: expected ADDR/PREFIX")));
        }
    }
    if net.host_ip.is_some() && net.bridge.is_some() {
        return Err(Error::Net("give --host-ip or --bridge, not both".into()));
    }
    Ok(())
}

/// The host end's name: `ve-NAME`, within IFNAMSIZ (15 bytes).
pub fn host_ifname(spec: &GuestSpec) -> String {
    ifname_of(&spec.name)
}

fn ifname_of(guest: &str) -> String {
    let name = format!("ve-{guest}");
    if name.len() <= 15 {
        return name;
    }
    // Too long: a short stable digest of the name instead.
    let digest = blake3::hash(guest.as_bytes()).to_hex();
    format!("ve-{}", &digest[..12])
}

fn setup_veth(spec: &GuestSpec, pid: Pid) -> Result<()> {
    let net = &spec.net;
    let host_if = host_ifname(spec);
    // `ip` would say only "File exists". Never removed here: it may be
    // another guest's (one name in two run dirs, or `--net veth` guests
    // whose long names share a digest prefix).
    if Path::new("/sys/class/net").join(&host_if).exists() {
        return Err(Error::Net(format!(
            "host interface {host_if} (for guest {}) exists already: a guest of that name \
             runs with --net veth (perhaps from another run dir), or it was left behind \
             (`ip link del {host_if}` removes it)",
            spec.name
        )));
    }
    let pid_s = pid.as_raw().to_string();
    ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &pid_s,
    ])?;
    let configured = (|| {
        if let Some(bridge) = &net.bridge {
            ip(&["link", "set", &host_if, "master", bridge])?;
        }
        if let Some(host_ip) = &net.host_ip {
            ip(&["addr", "add", host_ip, "dev", &host_if])?;
        }
        ip(&["link", "set", &host_if, "up"])?;
        in_netns(pid, || {
            ip(&[
                "addr",
                "add",
                net.ip.as_deref().unwrap_or_default(),
                "dev",
                "eth0",
            ])?;
            ip(&["link", "set", "eth0", "up"])?;
            if let Some(gw) = &net.gateway {
                ip(&["route", "add", "default", "via", gw])?;
            }
            Ok(())
        })
    })();
    if configured.is_err() {
        let _ = ip(&["link", "del", &host_if]);
    }
    configured
}

/// Removes the host end of a veth guest. The kernel removes it with the
/// guest's namespace too, but asynchronously; a quick restart would find it.
pub fn teardown(spec: &GuestSpec) {
    if spec.net.mode == NetMode::Veth {
        let _ = ip(&["link", "del", &host_ifname(spec)]);
    }
}

/// The interface index of a veth guest's host end, while it exists: kept in
/// a named guest's record, so its clean-up removes its own interface only.
pub fn host_ifindex(spec: &GuestSpec) -> Option<u32> {
    if spec.net.mode != NetMode::Veth {
        return None;
    }
    let path = Path::new("/sys/class/net")
        .join(host_ifname(spec))
        .join("ifindex");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// [`teardown`] for a named guest's record: only if the host end is still
/// the interface the guest got (`ifindex`; indexes are not reused soon).
/// By the time a stale record is cleaned up, its guest's pair went with its
/// namespace long ago, and `ve-NAME` may be another run dir's guest of that
/// name, which would lose its network. A record without the index (an older
/// unifs) is cleaned up by name, as before.
pub fn teardown_recorded(spec: &GuestSpec, ifindex: Option<u32>) {
    match ifindex {
        Some(i) if host_ifindex(spec) != Some(i) => {}
        _ => teardown(spec),
    }
}

/// The index of `ve-NAME` if its peer lies in the network namespace of one
/// of `pids` (the processes of a guest without a record, before they are
/// killed): only then is it provably theirs. Neither the config (edited
/// since, or gone) nor the name can tell: a guest of that name from another
/// run dir may hold it. Checked both ways: the host end's peer index is an
/// interface there whose peer index is the host end.
pub fn host_ifindex_owned_by(guest: &str, pids: &[i32]) -> Option<u32> {
    let dir = Path::new("/sys/class/net").join(ifname_of(guest));
    let read = |f: &str| -> Option<u32> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (index, peer) = (read("ifindex")?, read("iflink")?);
    let netns = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok();
    let ours = netns("self")?;
    let mut seen = std::collections::HashSet::new();
    use std::os::unix::fs::MetadataExt;
    for &pid in pids {
        let Some(ns) = netns(&pid.to_string()) else {
            continue;
        };
        if ns.ino() == ours.ino() || !seen.insert(ns.ino()) {
            continue;
        }
        let mut links = String::new();
        let listed = in_netns(Pid::from_raw(pid), || {
            links = ip_output(&["-o", "link", "show"])?;
            Ok(())
        });
        if listed.is_ok() && links.lines().any(|l| veth_link(l) == Some((peer, index))) {
            return Some(index);
        }
    }
    None
}

/// A line of `ip -o link show`, "IDX: NAME@ifPEER: …": (IDX, PEER).
fn veth_link(line: &str) -> Option<(u32, u32)> {
    let (index, rest) = line.split_once(": ")?;
    let name = rest.split(':').next()?;
    let (_, peer) = name.rsplit_once("@if")?;
    Some((index.trim().parse().ok()?, peer.parse().ok()?))
}

/// Removes `ve-NAME` of guest `guest` if it is still interface `index`.
pub fn remove_host_if(guest: &str, index: u32) {
    let name = ifname_of(guest);
    let now = std::fs::read_to_string(Path::new("/sys/class/net").join(&name).join("ifindex"));
    if now.is_ok_and(|i| i.trim().parse() == Ok(index)) {
        let _ = ip(&["link", "del", &name]);
    }
}

/// Runs `f` (which spawns `ip`) inside the network namespace of `pid`, then
/// returns to ours. Only the calling thread moves; callers are single-threaded.
fn in_netns(pid: Pid, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let open = |p: String| std::fs::File::open(&p).map_err(|e| Error::io("opening", p, e));
    let ours = open("/proc/self/ns/net".into())?;
    let theirs = open(format!("/proc/{pid}/ns/net"))?;
    nix::sched::setns(&theirs, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys("setns into the guest's network", e))?;
    let result = f();
    nix::sched::setns(&ours, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys("setns back to the host's network", e))?;
    result
}

fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

/// `ip ARGS`' standard output.
fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        Error::Net(format!(
            "running `ip` (iproute2, needed for --net veth): {e}"
        ))
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Net(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth(ip: Option<&str>) -> GuestSpec {
        let mut s = GuestSpec::new("web1", "/r".into(), vec!["/bin/sh".into()]);
        s.net.mode = NetMode::Veth;
        s.net.ip = ip.map(str::to_string);
        s
    }

    #[test]
    fn veth_needs_a_valid_address() {
        assert!(check(&veth(Some("10.0.0.2/24"))).is_ok());
        assert!(check(&veth(None)).is_err());
        assert!(check(&veth(Some("10.0.0.2"))).is_err());
        assert!(check(&veth(Some("ten/24"))).is_err());
        let mut none = veth(Some("10.0.0.2/24"));
        none.net.mode = NetMode::None;
        assert!(check(&none).is_err(), "--ip without veth");
    }

    #[test]
    fn veth_links_are_read_from_ip_output() {
        let line = "7: eth0@if12: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue";
        assert_eq!(veth_link(line), Some((7, 12)));
        assert_eq!(veth_link("1: lo: <LOOPBACK,UP> mtu 65536"), None);
    }

    #[test]
    fn host_interface_names_fit_ifnamsiz() {
        assert_eq!(host_ifname(&veth(None)), "ve-web1");
        let mut long = veth(None);
        long.name = "a-very-long-guest-name".into();
        assert!(host_ifname(&long).len() <= 15);
    }
}
