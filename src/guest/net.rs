//! Networks: `host` shares the host's, `none` is a namespace with loopback
//! only (brought up by the child), `veth` gives the guest its own addresses
//! as VServer did: a veth pair whose guest end (`eth0`) gets `ip`, whose host
//! end (`ve-NAME`) gets `host_ip` or joins `bridge`. The pair is made with
//! iproute2's `ip` while the child waits; it vanishes with the namespace.

use super::port_lock::Locked;
use super::spec::Names;
use super::{Error, GuestSpec, NetMode, NetSpec, Result};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A veth guest's host end as its set-up made it: what its record and
/// clean-up go by.
#[derive(Clone, Debug)]
pub struct HostEnd {
    /// The interface index of `ve-NAME`, read as it was made: its
    /// clean-up's proof that `ve-NAME` (or a port filter) is this guest's,
    /// whatever becomes of the guest's namespace before it is recorded.
    pub ifindex: u32,
    /// `lock_mac`'s address of `eth0` and the port's filter.
    pub locked: Option<Locked>,
}

/// The host's half of the network set-up, while the child waits.
/// Its failures are the host's (no such bridge, no `ip`), said so for a
/// guest's config ([`GuestSpec::on_its_host`]). Returns a veth guest's
/// host end, for the guest's record and clean-up.
pub fn setup_host_side(spec: &GuestSpec, pid: Pid) -> Result<Option<HostEnd>> {
    match spec.net.mode {
        NetMode::Host | NetMode::None => Ok(None),
        NetMode::Veth => setup_veth(spec, pid).map_err(|e| spec.on_its_host(e)),
    }
}

/// Checks a veth spec before anything is created: each mistake `ip` would
/// take, or only show as a guest that reaches nothing, said with the
/// setting to fix (`unifs run`'s option, or the key of the config the spec
/// was made from, and its file).
pub fn check(spec: &GuestSpec) -> Result<()> {
    check_as(&spec.net, spec.names()).map_err(|e| spec.in_its_config(e))?;
    // The host's part of the address (no machine-id: an image made for
    // a first boot), before a root is mounted or a process made.
    if spec.net.lock_mac {
        super::port_lock::guest_mac(&spec.name, spec.names()).map_err(|e| spec.on_its_host(e))?;
    }
    Ok(())
}

/// [`check`] of `net`, its settings named as `names` says.
fn check_as(net: &NetSpec, names: Names) -> Result<()> {
    let [veth, ip_o, host_o, bridge_o, gw_o, fwd_o, lock_o] = [
        "--net veth",
        "--ip",
        "--host-ip",
        "--bridge",
        "--gateway",
        "--forward",
        "--lock-mac",
    ]
    .map(|o| names.of(o));
    if net.lock_mac && (net.mode != NetMode::Veth || net.bridge.is_none()) {
        // A routed host end has rp_filter and the docs' antispoof chain;
        // a bridge port is what the lock is for.
        return Err(Error::Net(format!(
            "{lock_o} needs {veth} and {bridge_o}: it locks the host end's bridge port"
        )));
    }
    if net.mode != NetMode::Veth {
        if net.forward {
            return Err(Error::Net(format!("{fwd_o} needs {veth} and {host_o}")));
        }
        if net.ip.is_some()
            || net.host_ip.is_some()
            || net.bridge.is_some()
            || net.gateway.is_some()
        {
            return Err(Error::Net(format!(
                "{ip_o}, {host_o}, {bridge_o} and {gw_o} need {veth}"
            )));
        }
        return Ok(());
    }
    let Some(ip_s) = &net.ip else {
        return Err(Error::Net(format!(
            "{veth} needs {ip_o} ADDR/PREFIX for the guest"
        )));
    };
    let ip = Cidr::parse(ip_o, ip_s)?;
    if let Some(host_s) = &net.host_ip {
        let host = Cidr::parse(host_o, host_s)?;
        if host.addr.is_ipv4() != ip.addr.is_ipv4() {
            return Err(Error::Net(format!(
                "{host_o} {host_s} and {ip_o} {ip_s}: one is IPv4, the other IPv6; give both \
                 of one family"
            )));
        }
        if host.addr == ip.addr {
            return Err(Error::Net(format!(
                "{host_o} {host_s} is the guest's own address ({ip_o} {ip_s}): give the host \
                 end another address of that subnet"
            )));
        }
        // Each side routes only its own subnet to the pair.
        if !ip.contains(host.addr) || !host.contains(ip.addr) {
            return Err(Error::Net(format!(
                "{host_o} {host_s} and {ip_o} {ip_s} are not in one subnet, so neither side \
                 could reach the other: give both one prefix (10.0.3.1/24 and 10.0.3.2/24)"
            )));
        }
    }
    if net.host_ip.is_some() && net.bridge.is_some() {
        return Err(Error::Net(format!("give {host_o} or {bridge_o}, not both")));
    }
    if net.forward {
        // On a bridge the host end is a port: the bridge forwards, and the
        // host routes only through the bridge's own address.
        if net.host_ip.is_none() {
            return Err(Error::Net(format!(
                "{fwd_o} needs {host_o} (a routed host end); on {bridge_o}, forwarding is \
                 the bridge's: `sysctl net.ipv4.conf.BRIDGE.forwarding=1`"
            )));
        }
        // IPv6 has no per-interface switch: ip6_forward asks
        // net.ipv6.conf.all.forwarding alone.
        if ip.addr.is_ipv6() {
            return Err(Error::Net(format!(
                "{fwd_o} is IPv4 only ({ip_o} {ip_s}): IPv6 forwards only with the host's \
                 net.ipv6.conf.all.forwarding=1, which is the whole host's to set"
            )));
        }
    }
    if let Some(gw_s) = &net.gateway {
        let gw: IpAddr = gw_s.parse().map_err(|_| {
            Error::Net(format!(
                "{gw_o} {gw_s}: expected an address alone (10.0.3.1, fd00::1), no /PREFIX"
            ))
        })?;
        // An IPv6 router is often named by its link-local address (fe80::1).
        let link_local =
            |a: IpAddr| matches!(a, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
        let on_link = ip.contains(gw) || (ip.addr.is_ipv6() && link_local(gw));
        if gw == ip.addr || !on_link {
            return Err(Error::Net(format!(
                "{gw_o} {gw_s} is not another address of the guest's subnet ({ip_o} {ip_s}) \
                 or, for IPv6, a link-local one (fe80::1): the guest reaches a gateway only \
                 there (the host end's {host_o}, or a router on {bridge_o})"
            )));
        }
    }
    Ok(())
}

/// An address with its prefix length, as `--ip` and `--host-ip` take it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cidr {
    addr: IpAddr,
    prefix: u32,
}

impl Cidr {
    /// `ADDR/PREFIX` given as the setting `setting` (`--ip`, `[net] ip`).
    fn parse(setting: &str, s: &str) -> Result<Cidr> {
        let bad = |why: String| Error::Net(format!("{setting} {s}: {why}"));
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDR/PREFIX (10.0.3.2/24, fd00::2/64)".into()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("{addr} is not an IPv4 or IPv6 address")))?;
        let max = bits(addr).1;
        match prefix.parse::<u32>() {
            Ok(prefix) if prefix <= max => Ok(Cidr { addr, prefix }),
            _ => Err(bad(format!("the prefix must be 0 to {max}"))),
        }
    }

    /// Whether `a` is in this subnet (never for the other family).
    fn contains(&self, a: IpAddr) -> bool {
        let ((net, width), (a, a_width)) = (bits(self.addr), bits(a));
        // A shift by the full width (prefix 0) is None: every address.
        width == a_width && (net ^ a).checked_shr(width - self.prefix).unwrap_or(0) == 0
    }
}

/// An address as a number, and its width in bits.
fn bits(a: IpAddr) -> (u128, u32) {
    match a {
        IpAddr::V4(a) => (u32::from(a).into(), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// Checks what a veth spec needs of the host, before the pair is made:
/// `ip` would say only "Device does not exist" or "Operation not
/// supported" of a bridge, and would give the pair a `--host-ip` subnet
/// that a host address is in already without a word (the guest then
/// reaches nothing: the older route wins). A wider subnet around it (a
/// 10.0.0.0/8 elsewhere) is fine: the narrower route wins. Its settings
/// named as [`check`] names them.
fn check_host(spec: &GuestSpec) -> Result<()> {
    let names = spec.names();
    let [host_o, bridge_o] = ["--host-ip", "--bridge"].map(|o| names.of(o));
    let refused = Error::Net;
    if let Some(bridge) = &spec.net.bridge {
        // Asked of `ip`, as a host end is ([`link_index`]): /sys/class/net
        // is the namespace's of whoever mounted it (under `nsenter --net`,
        // the host's).
        if link_index(bridge)?.is_none() {
            return Err(refused(format!(
                "{bridge_o} {bridge}: no such interface on the host; make it first \
                 (`ip link add {bridge} type bridge`)"
            )));
        }
        // Its line, with its bridge settings; none: of another type.
        let details = ip_output(&["-d", "-o", "link", "show", "dev", bridge, "type", "bridge"])?;
        if index_in(&details, bridge).is_none() {
            return Err(refused(format!(
                "{bridge_o} {bridge}: that interface is not a bridge; name one \
                 (`ip -br link show type bridge` lists them)"
            )));
        }
        if spec.net.lock_mac {
            super::port_lock::check_bridge(&details, bridge, names)?;
        }
    }
    if let Some(host_s) = &spec.net.host_ip {
        let host = Cidr::parse(host_o, host_s).map_err(|e| spec.in_its_config(e))?;
        let addrs = ip_output(&["-o", "addr", "show"])?;
        let mut taken = addrs.lines().filter_map(host_addr);
        if let Some((dev, cidr)) = taken.find(|(_, c)| host.contains(c.addr)) {
            return Err(refused(format!(
                "{host_o} {host_s}: host interface {dev} has {}/{} in that subnet already; \
                 give the guest a subnet of its own (or put it on that network with \
                 {bridge_o})",
                cidr.addr, cidr.prefix
            )));
        }
    }
    Ok(())
}

/// A line of `ip -o addr show`, "IDX: DEV inet ADDR/PREFIX … scope S …":
/// (DEV, ADDR/PREFIX), but for link-local addresses (every link has fe80::/64).
fn host_addr(line: &str) -> Option<(&str, Cidr)> {
    let mut words = line.split_whitespace().skip(1);
    let dev = words.next()?;
    if !matches!(words.next()?, "inet" | "inet6") || line.contains(" scope link ") {
        return None;
    }
    Some((dev, Cidr::parse("", words.next()?).ok()?))
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

fn setup_veth(spec: &GuestSpec, pid: Pid) -> Result<Option<HostEnd>> {
    let net = &spec.net;
    let host_if = host_ifname(spec);
    // Held until the host end has its address: another start's check of
    // the host's addresses must see it (or this one see the other's).
    let _lock = host_lock()?;
    // `ip` would say only "File exists". Never removed here: it may be
    // another guest's (one name in two run dirs, or `--net veth` guests
    // whose long names share a digest prefix).
    if link_index(&host_if)?.is_some() {
        return Err(Error::Net(format!(
            "host interface {host_if} (for guest {}) exists already: a guest of that name \
             runs with a veth network (perhaps from another run dir), or it was left behind \
             (`ip link del {host_if}` removes it)",
            spec.name
        )));
    }
    // No interface of that name: a table of its name is one a killed
    // clean-up left, which would filter this guest, locked or not.
    super::port_lock::unfilter_port(&host_if);
    check_host(spec)?;
    // UNIFS_TEST_VETH_PAUSE_MS: the tests' window between the check and
    // the address, for two starts at once.
    crate::sys::test_pause!("UNIFS_TEST_VETH_PAUSE_MS");
    let mac = if net.lock_mac {
        Some(super::port_lock::guest_mac(&spec.name, spec.names())?)
    } else {
        None
    };
    let pid_s = pid.as_raw().to_string();
    let mut add = vec![
        "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
    ];
    if let Some(mac) = &mac {
        add.extend(["address", mac]);
    }
    add.extend(["netns", &pid_s]);
    ip(&add)?;
    let mut locked = None;
    // Read now, under the host's lock: no other start can have made
    // `ve-NAME` since. Read later (once the guest runs, for its record), it
    // would be gone with a guest that died meanwhile, and its clean-up
    // left to go by the name, which another run dir's guest may hold then.
    let index = link_index(&host_if);
    let configured = (|| {
        let index = index?
            .ok_or_else(|| Error::Net(format!("host interface {host_if} went as it was made")))?;
        if let Some(bridge) = &net.bridge {
            ip(&["link", "set", &host_if, "master", bridge])?;
            // While the port is down: no frame of the guest's crosses
            // the bridge before the lock.
            if let Some(mac) = mac {
                let table = super::port_lock::lock(&host_if, index, &mac, spec.names())?;
                locked = Some(Locked { mac, table });
            }
        }
        if let Some(host_ip) = &net.host_ip {
            add_addr(host_ip, &host_if)?;
            // Strict reverse-path filtering ([`only_own_sources`]). Without
            // forwarding what it guards is the host's own services: said,
            // not refused (such hosts ran these guests before).
            if let Err(e) = only_own_sources(&host_if) {
                if net.forward {
                    return Err(Error::Net(format!("{e}; or leave forward out there")));
                }
                tracing::warn!(
                    "guest {}: {e}: the host takes its packets whatever source address they \
                     claim",
                    spec.name
                );
            }
        }
        ip(&["link", "set", &host_if, "up"])?;
        if net.forward {
            forward_from(&host_if)
                .map_err(|e| Error::Net(format!("{e}; or leave forward out there")))?;
        }
        in_netns(pid, || {
            add_addr(net.ip.as_deref().unwrap_or_default(), "eth0")?;
            ip(&["link", "set", "eth0", "up"])?;
            if let Some(gw) = &net.gateway {
                // The device: a link-local gateway is on every link.
                ip(&["route", "add", "default", "via", gw, "dev", "eth0"])?;
            }
            Ok(())
        })
        .map(|()| index)
    })();
    if configured.is_err() {
        let _ = ip(&["link", "del", &host_if]);
        // Made by this set-up, under the host's lock: no other guest's.
        super::port_lock::unfilter_port(&host_if);
    }
    configured.map(|ifindex| Some(HostEnd { ifindex, locked }))
}

/// Strict reverse-path filtering on a routed host end: the host takes
/// (for itself, or to route on) only packets from sources it would route
/// back through `dev`, the guest's own subnet. Guest root keeps
/// CAP_NET_RAW, so it can write any source address; with `rp_filter` 0
/// (the kernel's and Debian's default) the host took another guest's or
/// any internet address as the sender's, and routed it where forwarding
/// is on (`--forward`, or a host whose `ip_forward` is 1: Docker and
/// libvirt set it, and a new interface then forwards). The kernel takes
/// the higher of `all` and `dev`, so a host-wide 2 (loose) wins:
/// docs/guests.md's nftables rule covers that.
fn only_own_sources(dev: &str) -> std::result::Result<(), String> {
    set_conf(dev, "rp_filter", "1")
}

/// Lets the host route on what comes in on `dev` (IPv4 decides by the
/// incoming interface's `forwarding`): the guest's packets, and no other
/// interface's, as the global `net.ipv4.ip_forward` would. Goes with the
/// interface.
fn forward_from(dev: &str) -> std::result::Result<(), String> {
    set_conf(dev, "forwarding", "1")
}

/// Writes `value` to `net.ipv4.conf.DEV.KEY`; the error says what it needs.
fn set_conf(dev: &str, key: &str, value: &str) -> std::result::Result<(), String> {
    let path = Path::new("/proc/sys/net/ipv4/conf").join(dev).join(key);
    std::fs::write(&path, value).map_err(|e| {
        format!(
            "writing {value} to {}: {e}; this needs a writable /proc/sys (a container's is \
             often read-only)",
            path.display()
        )
    })
}

/// The host paths the network set-up goes on using once `unifs run` is in
/// a mount namespace of its own ([`super::host_mounts`]): for veth, `ip`
/// (found on PATH) and [`HOST_LOCK`] (/run/lock, a tmpfs of its own on
/// systemd hosts, is not the run dir's mount when the run dir is
/// elsewhere: let go of, the run would lock a file of its own).
pub fn host_paths_used(net: &NetSpec) -> Vec<PathBuf> {
    paths_used(net, std::env::var_os("PATH").as_deref())
}

/// [`host_paths_used`] with `path` as PATH (relative entries are no host
/// place: they name the working directory's, which is left for `/`).
fn paths_used(net: &NetSpec, path: Option<&OsStr>) -> Vec<PathBuf> {
    if net.mode != NetMode::Veth {
        return Vec::new();
    }
    let mut paths: Vec<PathBuf> = std::env::split_paths(path.unwrap_or_default())
        .filter(|p| p.is_absolute())
        .collect();
    paths.push(HOST_LOCK.into());
    paths
}

/// Where veth set-ups take turns: one lock for the host, whatever the run
/// dir (guests of every run dir share the host's addresses).
pub const HOST_LOCK: &str = "/run/lock/unifs-veth.lock";

/// An exclusive flock on [`HOST_LOCK`], waited for; released on drop.
fn host_lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    nix::fcntl::Flock::lock(host_lock_file()?, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::sys(format!("locking {HOST_LOCK}"), e))
}

/// How long a clean-up waits for [`HOST_LOCK`]: a start holds it for as
/// long as its `ip` and `nft` take (or a stopped `unifs run` in its set-up,
/// forever), and a `stop` has its own deadline to keep.
const CLEANUP_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// [`host_lock`] for a clean-up: waited for `wait` at most; `None` if it
/// is not free by then.
fn host_lock_within(wait: std::time::Duration) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let end = std::time::Instant::now() + wait;
    let mut file = host_lock_file()?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                if std::time::Instant::now() >= end {
                    return Ok(None);
                }
                file = f;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err((_, e)) => return Err(Error::sys(format!("locking {HOST_LOCK}"), e)),
        }
    }
}

fn host_lock_file() -> Result<std::fs::File> {
    let path = Path::new(HOST_LOCK);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))
}

/// Adds address `a` (ADDR/PREFIX) to `dev`. An IPv6 one skips duplicate
/// address detection: it would keep the address "tentative", unusable (a
/// bind to it fails, a ping from it gets no answer), for the first second
/// or more of the guest's life. Duplicates are the operator's to avoid, as
/// with IPv4, which has no such check.
fn add_addr(a: &str, dev: &str) -> Result<()> {
    let mut args = vec!["addr", "add", a, "dev", dev];
    if a.contains(':') {
        args.push("nodad");
    }
    ip(&args)
}

/// The index of interface `dev` in this network namespace (`None`: there
/// is none), asked of `ip` (netlink): /sys/class/net is the namespace's of
/// whoever mounted it, not always ours (a `unifs` under `nsenter --net`).
/// Every link is listed: `ip link show dev` fails alike for a missing one
/// and for a failure of its own.
fn link_index(dev: &str) -> Result<Option<u32>> {
    Ok(index_in(&ip_output(LIST_LINKS)?, dev))
}

/// The index of `dev` in `ip -o link show`'s `listing`.
fn index_in(listing: &str, dev: &str) -> Option<u32> {
    links_in(listing).find(|l| l.name == dev).map(|l| l.index)
}

/// This network namespace's links, listed by `ip` once, at the first look:
/// `guest list` shows every veth guest's host end from one listing (one
/// `ip` run per guest made a list of N guests run N of them). A listing
/// that failed (no `ip`) shows no host end.
#[derive(Default)]
pub struct HostLinks(std::sync::OnceLock<Option<String>>);

impl HostLinks {
    /// Whether `dev` is interface `wanted` (any, for `None`). The listing
    /// may be seconds older than the record `wanted` was read from (a
    /// `list` of many guests, a stalled root each): a guest started or
    /// restarted since has a `dev` it lacks, or another index. On such a
    /// miss `dev` alone is looked for again, unless this look listed.
    fn has(&self, dev: &str, wanted: Option<u32>) -> bool {
        let mut listed_now = false;
        let listing = self.0.get_or_init(|| {
            listed_now = true;
            // UNIFS_TEST_HOST_LINKS_STOP: the tests' window between the
            // listing and a later guest's record (review_s51_netfix).
            let listing = ip_output(LIST_LINKS).ok();
            crate::sys::test_stop!("UNIFS_TEST_HOST_LINKS_STOP");
            listing
        });
        let fits = |now: Option<u32>| now.is_some_and(|now| wanted.is_none_or(|w| w == now));
        let Some(listing) = listing else {
            return false;
        };
        fits(index_in(listing, dev)) || (!listed_now && fits(link_index(dev).ok().flatten()))
    }
}

/// The host end's name for `status`, while it is the guest's: the
/// recorded interface `ifindex` (any, for a record of an older unifs),
/// looked for in `links`.
pub fn host_ifname_shown(
    spec: &GuestSpec,
    ifindex: Option<u32>,
    links: &HostLinks,
) -> Option<String> {
    let dev = host_ifname(spec);
    (spec.net.mode == NetMode::Veth && links.has(&dev, ifindex)).then_some(dev)
}

/// Removes a veth guest's host end and its port's filter at the end of
/// the guest (a named guest's record, a `unifs run`): by `ifindex`, the
/// interface its set-up made (indexes are not reused soon). The kernel
/// removes the interface with the guest's namespace too, but
/// asynchronously, and a quick restart would find it. By the time a stale
/// record is cleaned up, its guest's pair went with its namespace long ago,
/// and `ve-NAME` may be another run dir's guest of that name, which would
/// lose its network, and its port its filter. So nothing goes by the name
/// alone: without the index (a record of a unifs before 2026-12-01, or of
/// one whose guest died before it read it back) `ve-NAME` is left to go with
/// its namespace, and a filter left to the next start of the name, which
/// deletes every filter of a `ve-NAME` that is not there.
pub fn teardown_recorded(spec: &GuestSpec, ifindex: Option<u32>) {
    if spec.net.mode != NetMode::Veth {
        return;
    }
    let Some(index) = ifindex else {
        return;
    };
    // UNIFS_TEST_NET_CLEANUP_STOP: the tests' window between the record's
    // index and the look at `ve-NAME`, for another run dir's start of the
    // name.
    crate::sys::test_stop!("UNIFS_TEST_NET_CLEANUP_STOP");
    remove_own(&host_ifname(spec), index);
}

/// Removes `host_if` if it is still interface `index`, and the filter made
/// for `index`, whatever its guest's `lock_mac` now (a config edited since
/// the start): named after its interface, it is that guest's alone whatever
/// the interface of that name now (another run dir's guest's, with its
/// own), and it outlives the interface.
fn remove_own(host_if: &str, index: u32) {
    let index_of = || link_index(host_if).ok().flatten();
    // Looked at and deleted under the host's lock: `ip link del` goes by
    // the name, and once interface `index` went with its namespace, a
    // start (which makes `ve-NAME` under that lock) could make another
    // guest's between the look and the delete. Waited for a while only
    // (a start may hang in its set-up); not taken: left to go with the
    // namespace.
    let now = match host_lock_within(test_bound_wait()) {
        Ok(Some(_lock)) => {
            let now = index_of();
            // UNIFS_TEST_NET_CLEANUP_LOCKED_STOP: the tests' window between
            // the look and the delete, under the lock, for another run
            // dir's start of the name (review_s50_netfix).
            crate::sys::test_stop!("UNIFS_TEST_NET_CLEANUP_LOCKED_STOP");
            if now == Some(index) {
                let _ = ip(&["link", "del", host_if]);
            }
            now
        }
        not_taken => {
            let why = not_taken.map_or_else(|e| e.to_string(), |_| "held by a start".into());
            tracing::warn!(
                "{HOST_LOCK} not taken ({why}): {host_if} is left to go with its guest's \
                 network namespace"
            );
            index_of()
        }
    };
    super::port_lock::unfilter(&super::port_lock::table_of(host_if, index));
    // A guest started by a unifs of 2026-12-06 before the index named its
    // table `unifs-lock-ve-NAME`: its own while no other `ve-NAME` is up.
    if now.is_none_or(|n| n == index) {
        super::port_lock::unfilter(&format!("unifs-lock-{host_if}"));
    }
}

/// [`CLEANUP_LOCK_WAIT`], or UNIFS_TEST_CLEANUP_LOCK_MS's milliseconds:
/// the tests' bound, short, while they hold the lock.
fn test_bound_wait() -> std::time::Duration {
    let default = CLEANUP_LOCK_WAIT.as_millis() as usize;
    std::time::Duration::from_millis(
        crate::sys::test_bound!("UNIFS_TEST_CLEANUP_LOCK_MS", default) as u64,
    )
}

/// The index of `ve-NAME` if its peer lies in the network namespace of one
/// of `pids` (the processes of a guest without a record, before they are
/// killed): only then is it provably theirs. Neither the config (edited
/// since, or gone) nor the name can tell: a guest of that name from another
/// run dir may hold it. Checked both ways: the host end's peer index is an
/// interface there whose peer index is the host end. Both asked of `ip`,
/// as [`link_index`] is.
pub fn host_ifindex_owned_by(guest: &str, pids: &[i32]) -> Option<u32> {
    let host_if = ifname_of(guest);
    let ours_listed = ip_output(LIST_LINKS).ok()?;
    let host_end = links_in(&ours_listed).find(|l| l.name == host_if)?;
    let (index, peer) = (host_end.index, host_end.peer?);
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
        let mut theirs = String::new();
        let listed = in_netns(Pid::from_raw(pid), || {
            theirs = ip_output(LIST_LINKS)?;
            Ok(())
        });
        if listed.is_ok() && links_in(&theirs).any(|l| l.index == peer && l.peer == Some(index)) {
            return Some(index);
        }
    }
    None
}

/// `ip`'s arguments for every link of the namespace, a line each.
const LIST_LINKS: &[&str] = &["-o", "link", "show"];

/// A link as a line of `ip -o link show` gives it.
#[derive(Debug, PartialEq)]
struct Link<'a> {
    index: u32,
    name: &'a str,
    /// The index of its peer in another network namespace (a veth's other
    /// end there): "IDX: NAME@ifPEER: …". A peer in ours is shown by its
    /// name ("ve-a@ve-b"), and none is "IDX: NAME: …".
    peer: Option<u32>,
}

/// The links of `ip -o link show`'s `listing`.
fn links_in(listing: &str) -> impl Iterator<Item = Link<'_>> {
    listing.lines().filter_map(|line| {
        let (index, rest) = line.split_once(": ")?;
        // An interface's name holds no ':'.
        let field = rest.split(':').next()?;
        let (name, peer) = match field.split_once('@') {
            Some((name, peer)) => (name, peer.strip_prefix("if").and_then(|p| p.parse().ok())),
            None => (field, None),
        };
        Some(Link {
            index: index.trim().parse().ok()?,
            name,
            peer,
        })
    })
}

/// Removes `ve-NAME` of guest `guest` if it is still interface `index`,
/// and the filter made for it ([`remove_own`]): a guest without a record,
/// whose index [`host_ifindex_owned_by`] proved.
pub fn remove_host_if(guest: &str, index: u32) {
    remove_own(&ifname_of(guest), index);
}

/// Runs `f` (which spawns `ip`) inside the network namespace of `pid`, then
/// returns to ours. Only the calling thread moves (setns acts on the thread),
/// whatever other threads do: they stay in ours.
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

pub(super) fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

/// iproute2's programs, as PATH finds them.
#[derive(Clone, Copy)]
pub(super) enum Tool {
    /// `ip`: every veth network.
    Ip,
    /// `bridge`: a bridge port's fdb entry ([`super::port_lock`]).
    Bridge,
    /// `nft` (nftables): a locked port's ingress filter
    /// ([`super::port_lock`]).
    Nft,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ip => "ip",
            Tool::Bridge => "bridge",
            Tool::Nft => "nft",
        }
    }

    /// What it is needed for, in the error of a host without it.
    fn needed_for(self) -> &'static str {
        match self {
            Tool::Ip => "a veth network",
            Tool::Bridge => "locking a bridge port to the guest's MAC address",
            Tool::Nft => "dropping VLAN-tagged and bridge-control frames from a locked port",
        }
    }

    /// The package that has it.
    fn package(self) -> &'static str {
        match self {
            Tool::Ip | Tool::Bridge => "iproute2",
            Tool::Nft => "nftables",
        }
    }

    /// The program, found once, with each PATH directory in a FUSE mount
    /// that does not answer passed over: execvp's lookup there waits for
    /// good. Where none has it, its bare name, for the error execvp gives.
    fn program(self) -> &'static Path {
        static FOUND: [std::sync::OnceLock<PathBuf>; 3] = [
            std::sync::OnceLock::new(),
            std::sync::OnceLock::new(),
            std::sync::OnceLock::new(),
        ];
        FOUND[self as usize].get_or_init(|| on_path(self.name()))
    }

    /// `TOOL ARGS`' standard output.
    pub(super) fn output(self, args: &[&str]) -> Result<String> {
        let name = self.name();
        let out = Command::new(self.program())
            .args(args)
            .output()
            .map_err(|e| {
                Error::Net(format!(
                    "running `{name}` ({}, needed for {}): {e}",
                    self.package(),
                    self.needed_for()
                ))
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Net(format!(
                "`{name} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// [`Tool::program`]'s look along PATH for `name`.
fn on_path(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let stalls = crate::fs::StallCheck::new().ok();
    let stalled = |d: &Path| {
        stalls.as_ref().is_some_and(|s| {
            s.refuse(d)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        })
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|d| d.is_absolute() && !stalled(d))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| name.into())
}

/// `ip ARGS`' standard output.
fn ip_output(args: &[&str]) -> Result<String> {
    Tool::Ip.output(args)
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
        assert!(
            check(&veth(Some("10.0.0.2/33"))).is_err(),
            "IPv4 prefix past 32"
        );
        assert!(check(&veth(Some("fd00::2/64"))).is_ok());
        assert!(check(&veth(Some("fd00::2/129"))).is_err());
    }

    fn err(s: &GuestSpec) -> String {
        check(s).unwrap_err().to_string()
    }

    #[test]
    fn host_end_and_gateway_must_be_in_the_guests_subnet() {
        let with = |host: Option<&str>, gw: Option<&str>| {
            let mut s = veth(Some("10.0.3.2/24"));
            s.net.host_ip = host.map(str::to_string);
            s.net.gateway = gw.map(str::to_string);
            s
        };
        assert!(check(&with(Some("10.0.3.1/24"), Some("10.0.3.1"))).is_ok());
        // A wider host prefix still holds the guest, and the guest's it.
        assert!(check(&with(Some("10.0.3.1/16"), None)).is_ok());
        assert!(err(&with(Some("10.0.3.2/24"), None)).contains("the guest's own address"));
        assert!(err(&with(Some("10.0.4.1/24"), None)).contains("not in one subnet"));
        assert!(err(&with(Some("10.0.3.1/31"), None)).contains("not in one subnet"));
        assert!(err(&with(Some("fd00::1/64"), None)).contains("IPv6"));
        assert!(err(&with(None, Some("10.9.0.1"))).contains("--gateway 10.9.0.1"));
        assert!(err(&with(None, Some("10.0.3.2"))).contains("--gateway 10.0.3.2"));
        assert!(err(&with(None, Some("fd00::1"))).contains("--gateway fd00::1"));
        assert!(err(&with(None, Some("10.0.3.1/24"))).contains("no /PREFIX"));
        let mut v6 = veth(Some("fd00::2/64"));
        v6.net.host_ip = Some("fd00::1/64".into());
        v6.net.gateway = Some("fd00::1".into());
        assert!(check(&v6).is_ok());
        v6.net.gateway = Some("fe80::1".into());
        assert!(check(&v6).is_ok(), "a router's link-local address");
        assert!(err(&with(None, Some("fe80::1"))).contains("--gateway fe80::1"));
    }

    #[test]
    fn a_configs_network_is_named_by_its_keys_and_file() {
        let mut s = veth(Some("10.0.3.2/24"));
        s.net.host_ip = Some("10.0.3.2/24".into());
        let said = "10.0.3.2/24 is the guest's own address";
        assert!(
            err(&s).contains(&format!("--host-ip {said} (--ip 10.0.3.2/24)")),
            "{}",
            err(&s)
        );
        s.config = Some("/etc/unifs/guests/web1.toml".into());
        assert_eq!(
            err(&s),
            format!(
                "bad guest config /etc/unifs/guests/web1.toml: [net] host_ip {said} ([net] ip \
                 10.0.3.2/24): give the host end another address of that subnet"
            )
        );
        s.net.mode = NetMode::None;
        let e = err(&s);
        assert!(
            e.contains("[net] ip, [net] host_ip, [net] bridge and [net] gateway need [net] mode"),
            "{e}"
        );
        assert!(!e.contains("--"), "{e}");
    }

    #[test]
    fn forward_needs_a_routed_ipv4_host_end() {
        let mut s = veth(Some("10.0.3.2/24"));
        s.net.forward = true;
        assert!(err(&s).contains("--forward needs --host-ip"), "{}", err(&s));
        s.net.bridge = Some("br0".into());
        assert!(
            err(&s).contains("forwarding is the bridge's"),
            "{}",
            err(&s)
        );
        s.net.bridge = None;
        s.net.host_ip = Some("10.0.3.1/24".into());
        assert!(check(&s).is_ok());
        let mut v6 = veth(Some("fd00::2/64"));
        v6.net.host_ip = Some("fd00::1/64".into());
        v6.net.forward = true;
        assert!(err(&v6).contains("IPv4 only"), "{}", err(&v6));
        s.net.mode = NetMode::None;
        s.net.host_ip = None;
        assert!(err(&s).ends_with(": --forward needs --net veth and --host-ip"));
        s.config = Some("/etc/unifs/guests/web1.toml".into());
        assert!(
            err(&s).contains("[net] forward needs [net] mode"),
            "{}",
            err(&s)
        );
    }

    #[test]
    fn lock_mac_needs_a_bridged_veth() {
        let mut s = veth(Some("10.0.3.2/24"));
        s.net.lock_mac = true;
        assert!(err(&s).contains("--lock-mac needs --net veth and --bridge"));
        s.net.bridge = Some("br0".into());
        assert!(check(&s).is_ok());
        s.net.mode = NetMode::None;
        assert!(err(&s).contains("--lock-mac needs"), "{}", err(&s));
    }

    #[test]
    fn subnets_hold_their_addresses_only() {
        let c = |s: &str| Cidr::parse("--ip", s).unwrap();
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c("10.0.3.2/24").contains(a("10.0.3.255")));
        assert!(!c("10.0.3.2/24").contains(a("10.0.4.0")));
        assert!(c("10.0.3.2/0").contains(a("192.0.2.1")));
        assert!(c("10.0.3.2/32").contains(a("10.0.3.2")));
        assert!(!c("10.0.3.2/32").contains(a("10.0.3.3")));
        assert!(!c("0.0.0.0/0").contains(a("::")), "never the other family");
        assert!(c("fd00::2/64").contains(a("fd00::ffff")));
        assert!(c("::/0").contains(a("fe80::1")));
        assert!(!c("fd00::2/128").contains(a("fd00::3")));
    }

    #[test]
    fn host_addresses_are_read_from_ip_output() {
        let v4 = "2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever";
        let (dev, c) = host_addr(v4).unwrap();
        assert_eq!((dev, c.prefix), ("eth0", 24));
        assert_eq!(c.addr, "192.0.2.2".parse::<IpAddr>().unwrap());
        let local = "2: eth0    inet6 fe80::fc:ff:fe00:1/64 scope link \\       valid_lft forever";
        assert_eq!(host_addr(local), None, "every link has fe80::/64");
        assert!(host_addr("1: lo    inet6 ::1/128 scope host \\       valid_lft").is_some());
    }

    #[test]
    fn links_are_read_from_ip_output() {
        let listing = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\\    link/loopback 00:00:00:00:00:00\n\
                       7: eth0@if12: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue\\    link/ether\n\
                       9: ve-a@ve-b: <BROADCAST,MULTICAST> mtu 1500\n\
                       10: ve-b@ve-a: <BROADCAST,MULTICAST> mtu 1500\n";
        let links: Vec<Link> = links_in(listing).collect();
        let link = |index, name, peer| Link { index, name, peer };
        assert_eq!(
            links,
            [
                link(1, "lo", None),
                link(7, "eth0", Some(12)),
                link(9, "ve-a", None),
                link(10, "ve-b", None)
            ]
        );
        assert_eq!(index_in(listing, "eth0"), Some(7));
        assert_eq!(index_in(listing, "ve-b"), Some(10));
        assert_eq!(index_in(listing, "eth"), None, "a name's start is no name");
    }

    #[test]
    fn a_veth_run_keeps_ip_on_path_and_the_host_lock() {
        let path = OsStr::new("/usr/sbin:bin::/sbin");
        let veth = veth(Some("10.0.3.2/24")).net;
        assert_eq!(
            paths_used(&veth, Some(path)),
            ["/usr/sbin", "/sbin", HOST_LOCK].map(PathBuf::from),
            "relative entries left out"
        );
        assert_eq!(paths_used(&veth, None), [PathBuf::from(HOST_LOCK)]);
        for mode in [NetMode::None, NetMode::Host] {
            let net = NetSpec {
                mode,
                ..NetSpec::default()
            };
            assert!(paths_used(&net, Some(path)).is_empty(), "{mode:?}");
        }
    }

    #[test]
    fn host_interface_names_fit_ifnamsiz() {
        assert_eq!(host_ifname(&veth(None)), "ve-web1");
        let mut long = veth(None);
        long.name = "a-very-long-guest-name".into();
        assert!(host_ifname(&long).len() <= 15);
    }
}
