//! Session 43 (netnat): a veth guest reaching the world, set up as an
//! operator would by docs/guests.md ("Reaching the network from a guest").
//! A network namespace on a veth of the host stands for the world (a TCP
//! server and a name server in it); the docs' own blocks are run, their
//! first lines' values swapped for the test's; the guest reaches the world,
//! the world the guest through a port forward, and guests not each other.
//! Everything made is the test's (names with `nn`/`netnat` and the pid's
//! number) and removed by guards: the namespace, the uplink (whose
//! `forwarding` goes with it), the nftables table, the guests.

use crate::common::unifs_bin;
use crate::guest::harness::{can_run, has_ip, host_if, ok, run_bounded, stderr, within_30s};
use crate::guest::named::Guest;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Our subnets' third byte, from our pid (each test has its own second).
pub(crate) fn n() -> u32 {
    std::process::id() % 200 + 20
}

/// True when the test may run: root, busybox, `ip` and `nft`.
pub(crate) fn may_run(test: &str) -> bool {
    if !can_run(test) || !has_ip(test) {
        return false;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        crate::common::skip(test, "needs nftables' `nft` (.ci/run installs it)");
        return false;
    }
    true
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

/// Runs `f` in a thread that joined network namespace `ns` (`ip netns`'s):
/// a socket it makes stays that namespace's wherever it is used.
pub(crate) fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// "The world": namespace `netnat-wan-N-PID` on the host's veth `nnwN` (the
/// host's uplink, `NET.1/24`; the world's end `NET.2/24`), with a TCP
/// server on port 8000 that says whom it sees (`hello-from-wan PEER`) and
/// a name server that answers every A question with `NET.2`. The world has
/// no route to the guests' subnets, as the internet has none: only
/// masqueraded packets get answers.
pub(crate) struct Wan {
    pub(crate) ns: String,
    pub(crate) uplink: String,
    net: String,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

impl Wan {
    pub(crate) fn new(tag: &str, net: &str) -> Wan {
        sweep_dead_runs();
        let pid = std::process::id();
        let (ns, uplink) = (format!("netnat-wan-{tag}-{pid}"), format!("nnw{tag}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &uplink]).output();
        run("ip", &["netns", "add", &ns]);
        let mut wan = Wan {
            ns: ns.clone(),
            uplink: uplink.clone(),
            net: net.into(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        run(
            "ip",
            &[
                "link", "add", &uplink, "type", "veth", "peer", "name", "wan0", "netns", &ns,
            ],
        );
        run(
            "ip",
            &["addr", "add", &format!("{net}.1/24"), "dev", &uplink],
        );
        run("ip", &["link", "set", &uplink, "up"]);
        let addr = format!("{net}.2/24");
        run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "wan0"]);
        run("ip", &["-n", &ns, "link", "set", "wan0", "up"]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let server: Ipv4Addr = format!("{net}.2").parse().unwrap();
        let tcp = in_ns(&ns, move || TcpListener::bind((server, 8000)).unwrap());
        let udp = in_ns(&ns, move || UdpSocket::bind((server, 53)).unwrap());
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = wan.stop.clone();
        wan.servers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut c, peer)) => {
                        let _ = writeln!(c, "hello-from-wan {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }));
        let stop = wan.stop.clone();
        wan.servers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((len, peer)) = udp.recv_from(&mut buf) {
                    if let Some(answer) = dns_answer(&buf[..len], server) {
                        let _ = udp.send_to(&answer, peer);
                    }
                }
            }
        }));
        wan
    }

    /// The world's address (`NET.2`).
    pub(crate) fn server(&self) -> String {
        format!("{}.2", self.net)
    }

    /// The host's address on the world (`NET.1`).
    pub(crate) fn host(&self) -> String {
        format!("{}.1", self.net)
    }

    /// What a client in the world reads from `addr` (empty if it cannot
    /// connect, or reads nothing, within 3 s).
    fn fetch(&self, addr: SocketAddr) -> String {
        in_ns(&self.ns, move || {
            let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
                return String::new();
            };
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut got = String::new();
            let _ = c.read_to_string(&mut got);
            got
        })
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.servers.drain(..) {
            let _ = t.join();
        }
        // The uplink's peer is in the namespace: both go with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.uplink])
            .output();
    }
}

/// A DNS answer to question `q`: address `a` for an A question, none
/// (but no error) for any other type, so a resolver asking AAAA too is done.
fn dns_answer(q: &[u8], a: Ipv4Addr) -> Option<Vec<u8>> {
    let mut i = 12;
    while *q.get(i)? != 0 {
        i += 1 + usize::from(q[i]);
    }
    let end = i + 5; // the name's last byte, its type and class
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let mut r = q.get(..end)?.to_vec();
    // A response, recursion desired and available, no error; one question,
    // one answer for A.
    r[2..12].copy_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(qtype == 1), 0, 0, 0, 0]);
    if qtype == 1 {
        r.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend(a.octets());
    }
    Some(r)
}

/// Removes what a run of these tests that was killed (no Drop ran) left:
/// namespaces `netnat-wan-TAG-PID` (their uplink pair goes with them) and
/// tables `netnat_TAG_PID`/`netrev_TAG_PID` whose PID is gone (`inet`, the
/// docs' family since session 46, and `ip`, the one before). A live run's,
/// and a reused pid's, are left alone.
fn sweep_dead_runs() {
    let dead = |name: &str| {
        name.rsplit(['-', '_'])
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("netnat-wan-") && dead(&name) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
    for family in ["inet", "ip"] {
        let tables = Command::new("nft")
            .args(["list", "tables", family])
            .output();
        for line in tables.iter().flat_map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .into_owned()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        }) {
            let name = line.trim_start_matches(&format!("table {family} ")).trim();
            if (name.starts_with("netnat_") || name.starts_with("netrev_")) && dead(name) {
                let _ = Command::new("nft")
                    .args(["delete", "table", family, name])
                    .output();
            }
        }
    }
}

/// nftables table `inet PREFIX_TAG_PID`, deleted when dropped (the docs'
/// recipe made it); [`sweep_dead_runs`] deletes a killed run's.
pub(crate) struct NftTable(pub(crate) String);

impl NftTable {
    pub(crate) fn new(prefix: &str, tag: &str) -> NftTable {
        NftTable(format!("{prefix}_{tag}_{}", std::process::id()))
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.0])
            .output();
    }
}

/// A named guest `name` on a veth (`NET.2/24`, host end `NET.1/24`, which
/// is its gateway), `forward = true` when `forward` (no key otherwise, as a
/// config before `forward` was), serving `hello-from-NAME` on its port 80.
fn veth_guest(name: &str, net: &str, forward: bool) -> Guest {
    let g = veth_guest_unstarted(name, net, forward);
    let out = g.unifs(&["start", name]);
    assert!(out.status.success(), "guest start {name}: {}", stderr(&out));
    g
}

/// [`veth_guest`], its config written but the guest not started (to put
/// files in its tree first).
pub(crate) fn veth_guest_unstarted(name: &str, net: &str, forward: bool) -> Guest {
    let init = format!(
        "[\"/bin/sh\", \"-c\", \"while :; do echo hello-from-{name} | nc -l -p 80; done\"]"
    );
    let mut g = Guest::new(name, &init, true);
    let made = g.config();
    let toml = std::fs::read_to_string(&made).unwrap();
    std::fs::remove_file(&made).unwrap();
    // A short name: its host end is `ve-NAME`, which the recipe's `VE`
    // pattern matches (a long one's is a digest).
    g.name = name.into();
    let forward = if forward { "forward = true\n" } else { "" };
    let net_toml = format!(
        "[net]\nmode = \"veth\"\nip = \"{net}.2/24\"\nhost_ip = \"{net}.1/24\"\ngateway = \"{net}.1\"\n{forward}"
    );
    std::fs::write(g.config(), format!("{toml}{net_toml}")).unwrap();
    g
}

/// The block of docs/guests.md after `<!-- netnat: WHICH …`, its
/// `NAME=VALUE` lines given the test's `values` (each must be there, and
/// every such line must get one: the docs' own values are the operator's
/// host's, never this one's).
pub(crate) fn recipe(which: &str, values: &[(&str, String)]) -> String {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/guests.md"),
    )
    .unwrap();
    let marker = format!("<!-- netnat: {which} ");
    let start = docs
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} in docs"));
    let block = docs[start..].split("```sh\n").nth(1).unwrap();
    let block = block.split("\n```").next().unwrap();
    let mut used = Vec::new();
    let lines: Vec<String> = block
        .lines()
        .map(|l| {
            let Some((name, _)) = l
                .split_once('=')
                .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_uppercase()))
            else {
                return l.to_string();
            };
            let (_, v) = values
                .iter()
                .find(|(k, _)| *k == name)
                .unwrap_or_else(|| panic!("the test gives no value for {name} of {which}"));
            used.push(name.to_string());
            format!("{name}='{v}'")
        })
        .collect();
    for (k, _) in values {
        assert!(used.iter().any(|u| u == k), "{which} sets no {k}: {block}");
    }
    lines.join("\n") + "\n"
}

/// Runs `script` with sh -e (bounded), `unifs` on PATH, in `g`'s config
/// and run dirs.
pub(crate) fn sh(script: &str, g: Option<&Guest>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.args(["-ec", script]);
    let bin = unifs_bin();
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env(
        "PATH",
        format!("{}:{path}", bin.parent().unwrap().display()),
    );
    if let Some(g) = g {
        cmd.env("UNIFS_CONFIG_DIR", g.config().parent().unwrap());
        cmd.env("UNIFS_RUN_DIR", &g.run_dir);
    }
    run_bounded(cmd, Duration::from_secs(30))
}

/// `guest exec NAME -- sh -c SCRIPT`'s standard output, whatever its exit.
pub(crate) fn exec(g: &Guest, script: &str) -> String {
    let out = g.unifs(&["exec", &g.name, "--", "/bin/sh", "-c", script]);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out))
}

/// The host's recipe for guests `guests`, the world `wan`, port 8080 to
/// `to`'s port 80, host ends matching `ve-PREFIX*`.
pub(crate) fn host_recipe(wan: &Wan, table: &str, guests: &str, prefix: &str, to: &str) -> String {
    recipe(
        "host",
        &[
            ("WAN", wan.uplink.clone()),
            ("GUESTS", guests.into()),
            ("TABLE", table.into()),
            ("VE", format!("ve-{prefix}*")),
            ("GUEST", to.into()),
            ("PORT", "8080".into()),
        ],
    )
}

/// The world on `wan_net`, guest `nnNTAG1` on `10.OCTET.N.0/24` (with
/// `forward` as given) serving its port 80, and the docs' host recipe run
/// for them, port 8080 to that guest. Dropped in this order: the guest,
/// the table, the world.
fn behind_the_recipe(tag: char, wan_net: &str, octet: u8, forward: bool) -> (Guest, NftTable, Wan) {
    let n = n();
    let wan = Wan::new(&format!("{n}{tag}"), wan_net);
    let table = NftTable::new("netnat", &format!("{n}{tag}"));
    let net = format!("10.{octet}.{n}");
    let g = veth_guest(&format!("nn{n}{tag}1"), &net, forward);
    let prefix = format!("nn{n}{tag}");
    let script = host_recipe(
        &wan,
        &table.0,
        &format!("{net}.0/24"),
        &prefix,
        &format!("{net}.2"),
    );
    ok(&sh(&script, None));
    (g, table, wan)
}

pub(crate) fn forwarding(dev: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"))
        .unwrap_or_default()
        .trim()
        .into()
}

/// docs/guests.md's recipe, run as it stands: a guest with `forward = true`
/// reaches the world's server (which sees the host's uplink address: the
/// masquerade), resolves a name with the world's name server (the DNS
/// block), and a client in the world reaches the guest's server through
/// the uplink's port 8080. Only the guest's host end and the uplink
/// forward: the host's `ip_forward` is left as it was. Before: no
/// `forward` key (`unknown field`), and by hand the forwarding on
/// `ve-NAME` was lost at each start.
#[test]
fn s43_the_docs_recipe_takes_a_forwarding_guest_to_the_world_and_back() {
    let test = "s43_the_docs_recipe_takes_a_forwarding_guest_to_the_world_and_back";
    if !may_run(test) {
        return;
    }
    let n = n();
    let ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let (g, table, wan) = behind_the_recipe('a', &format!("198.18.{n}"), 243, true);
    let ve = host_if(&g.name);
    let ve = ve.file_name().unwrap().to_str().unwrap();
    assert_eq!(forwarding(ve), "1", "{ve} forwards");
    let dns = recipe("dns", &[("NAME", g.name.clone()), ("DNS", wan.server())]);
    ok(&sh(&dns, Some(&g)));

    let got = exec(
        &g,
        &format!("timeout 10 nc {} 8000 </dev/null", wan.server()),
    );
    assert!(
        got.contains(&format!("hello-from-wan {}", wan.host())),
        "the guest reaches the world, masqueraded as the uplink: {got}"
    );
    let got = exec(&g, "timeout 10 nslookup wan.netnat.test");
    assert!(
        got.contains(&format!("Address: {}", wan.server())),
        "the guest resolves with its resolv.conf's name server: {got}"
    );
    let port: SocketAddr = format!("{}:8080", wan.host()).parse().unwrap();
    let mut seen = String::new();
    assert!(
        within_30s(|| {
            seen = wan.fetch(port);
            seen.contains(&format!("hello-from-{}", g.name))
        }),
        "a client in the world reaches the guest's port 80 through the uplink's 8080: {seen:?}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        ip_forward,
        "the host's ip_forward is left alone"
    );
    // A restart makes the host end anew (a value set by hand would be
    // gone); the new one forwards too, and the tree keeps its resolv.conf.
    let ifindex = || std::fs::read_to_string(format!("/sys/class/net/{ve}/ifindex")).unwrap();
    let first = ifindex();
    ok(&g.unifs(&["restart", &g.name]));
    assert_ne!(ifindex(), first, "a new {ve}");
    assert_eq!(forwarding(ve), "1", "the new {ve} forwards");
    let got = exec(
        &g,
        &format!(
            "timeout 10 nc {} 8000 </dev/null; timeout 10 nslookup wan.netnat.test",
            wan.server()
        ),
    );
    assert!(
        got.contains(&format!("hello-from-wan {}", wan.host()))
            && got.contains(&format!("Address: {}", wan.server())),
        "after the restart: {got}"
    );
    drop(g);
    drop(table);
}

/// Guard (the default was right): without `forward`, the recipe run all
/// the same, the guest reaches its host end and nothing beyond it. Fails
/// when the host end is made forwarding whatever the config says.
#[test]
fn s43_without_forward_a_guest_reaches_no_further_than_the_host() {
    let test = "s43_without_forward_a_guest_reaches_no_further_than_the_host";
    if !may_run(test) {
        return;
    }
    let n = n();
    let (g, table, wan) = behind_the_recipe('b', &format!("198.19.{n}"), 244, false);
    let ve = host_if(&g.name);
    assert_eq!(forwarding(ve.file_name().unwrap().to_str().unwrap()), "0");
    let net = format!("10.244.{n}");
    let got = exec(
        &g,
        &format!(
            "ping -c1 -W5 {net}.1 >/dev/null && echo host-end-ok; timeout 5 nc {} 8000 </dev/null",
            wan.server()
        ),
    );
    assert!(
        got.contains("host-end-ok"),
        "the guest reaches its host end: {got}"
    );
    assert!(!got.contains("hello-from-wan"), "nothing beyond it: {got}");
    drop(g);
    drop(table);
}

/// Two guests with `forward`: the host routes between them (one reaches
/// the other's server) until the recipe's `forward` chain keeps them apart;
/// then each still reaches the world, and the other's host end (an address
/// of the host's, as docs/guests.md says).
#[test]
fn s43_the_recipe_keeps_forwarding_guests_apart() {
    let test = "s43_the_recipe_keeps_forwarding_guests_apart";
    if !may_run(test) {
        return;
    }
    let n = n();
    let wan = Wan::new(&format!("{n}c"), &format!("100.64.{n}"));
    let table = NftTable::new("netnat", &format!("{n}c"));
    let (net1, net2) = (format!("10.246.{n}"), format!("10.247.{n}"));
    let g1 = veth_guest(&format!("nn{n}c1"), &net1, true);
    let g2 = veth_guest(&format!("nn{n}c2"), &net2, true);
    let to_g2 = format!("timeout 5 nc {net2}.2 80 </dev/null");
    let mut got = String::new();
    assert!(
        within_30s(|| {
            got = exec(&g1, &to_g2);
            got.contains(&format!("hello-from-{}", g2.name))
        }),
        "with forward on both, the host routes between them: {got}"
    );
    let script = host_recipe(
        &wan,
        &table.0,
        "10.246.0.0/15",
        &format!("nn{n}c"),
        &format!("{net1}.2"),
    );
    ok(&sh(&script, None));
    let got = exec(&g1, &to_g2);
    assert!(
        !got.contains("hello-from"),
        "the recipe keeps them apart: {got}"
    );
    let got = exec(
        &g1,
        &format!(
            "ping -c1 -W5 {net2}.1 >/dev/null && echo host-end-ok; timeout 10 nc {} 8000 </dev/null",
            wan.server()
        ),
    );
    assert!(
        got.contains("host-end-ok"),
        "the other's host end is the host's: {got}"
    );
    assert!(
        got.contains(&format!("hello-from-wan {}", wan.host())),
        "and the world is still reached: {got}"
    );
    drop((g1, g2));
    drop(table);
}
