//! Session 35: a veth guest's host end named where an operator looks, and
//! two veth starts at once with overlapping `--host-ip` subnets.

use crate::common::unifs_bin;
use crate::guest::harness::TestRoot;
use crate::guest::harness::{can_run, has_ip, host_if, ok, stderr, wait_bounded, KillOnDrop};
use crate::guest::named::Guest;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Our subnets' third byte, from our pid: clear of the other veth tests'
/// 10.213 to 10.221.
fn n() -> u32 {
    std::process::id() % 200 + 20
}

/// `unifs [GLOBAL] run --root ROOT --net veth OPTS -- sh -c SCRIPT`, spawned.
fn spawn_run(t: &TestRoot, global: &[&str], opts: &[&str], script: &str) -> Command {
    let mut cmd = Command::new(unifs_bin());
    cmd.args(global).arg("run").arg("--root").arg(t.root());
    cmd.args(["--net", "veth"]).args(opts);
    cmd.args(["--", "/bin/sh", "-c", script]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `guest status` names a running veth guest's host end, in text and in
/// `--json` (`host_interface`). Before, neither did: an operator looked
/// for it with `ip -br addr`, and a long name's is a digest.
#[test]
fn s35_status_names_the_host_end() {
    let test = "s35_status_names_the_host_end";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let g = Guest::new("s35-host-end", "[\"/bin/sleep\", \"1000\"]", true);
    let n = n();
    let cfg = g.config();
    let mut toml = std::fs::read_to_string(&cfg).unwrap();
    toml.push_str(&format!(
        "[net]\nmode = \"veth\"\nip = \"10.223.{n}.2/24\"\n"
    ));
    std::fs::write(&cfg, toml).unwrap();
    ok(&g.unifs(&["start", &g.name]));
    let ifname = host_if(&g.name)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(host_if(&g.name).exists(), "{ifname}");
    let st = g.state();
    assert_eq!(st["host_interface"], ifname.as_str(), "{st}");
    let text = ok(&g.unifs(&["status", &g.name]));
    assert!(
        text.contains(&format!("net:     veth, host end {ifname}\n")),
        "{text}"
    );
    ok(&g.unifs(&["stop", "--timeout", "2", &g.name]));
    let st = g.state();
    assert!(st["host_interface"].is_null(), "stopped: {st}");
}

/// The host end `unifs -v run` names on its stderr (piped), read as it
/// comes, within `limit`; the lines before it are read and dropped.
pub(crate) fn host_end_said(child: &mut KillOnDrop, limit: Duration) -> String {
    let err = child.0.as_mut().unwrap().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("no line naming the host end within {limit:?}: {seen:?}");
        };
        if let Some((_, rest)) = line.split_once("guest network: host end ") {
            return rest.split_whitespace().next().unwrap().to_string();
        }
        seen.push(line);
    }
}

/// `unifs -v run --net veth` names its host end (`ve-` and a digest of its
/// generated name), the interface there while the guest runs. Before,
/// nothing named it.
#[test]
fn s35_run_names_its_host_end() {
    let test = "s35_run_names_its_host_end";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let t = TestRoot::new();
    let ip = format!("10.223.{}.130/25", n());
    let mut cmd = spawn_run(&t, &["-v"], &["--ip", &ip], "sleep 20");
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let name = host_end_said(&mut child, Duration::from_secs(30));
    let digest = name.strip_prefix("ve-").unwrap_or("");
    assert!(
        digest.len() == 12 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert!(
        std::path::Path::new("/sys/class/net").join(&name).exists(),
        "{name} is not a host interface"
    );
    drop(child);
}

/// Two starts at once whose `--host-ip` subnets overlap: one is refused,
/// naming the other's host end. Before, both passed the check of the
/// host's addresses (each made before the other's address was added), and
/// the later route lost the guest's traffic without a word.
/// UNIFS_TEST_VETH_PAUSE_MS holds each between its check and its address.
#[test]
fn s35_overlapping_host_ips_started_at_once_are_refused() {
    let test = "s35_overlapping_host_ips_started_at_once_are_refused";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let n = n();
    let (a, b) = (TestRoot::new(), TestRoot::new());
    let start = |t: &TestRoot, last: u32| {
        let ip = format!("10.222.{n}.{}/24", last + 1);
        let host = format!("10.222.{n}.{last}/24");
        let mut cmd = spawn_run(t, &[], &["--ip", &ip, "--host-ip", &host], "sleep 8");
        cmd.env("UNIFS_TEST_VETH_PAUSE_MS", "3000");
        KillOnDrop(Some(cmd.spawn().unwrap()))
    };
    let (run_a, run_b) = (start(&a, 1), start(&b, 5));
    let outs = [
        wait_bounded(run_a, Duration::from_secs(60)),
        wait_bounded(run_b, Duration::from_secs(60)),
    ];
    let refused: Vec<_> = outs.iter().filter(|o| !o.status.success()).collect();
    assert_eq!(
        refused.len(),
        1,
        "one of two overlapping --host-ip starts is refused: {outs:?}"
    );
    let err = stderr(refused[0]);
    assert!(
        err.contains("in that subnet already") && err.contains(&format!("10.222.{n}.")),
        "{err}"
    );
}

/// The host's veth lock lies in /run/lock, a tmpfs of its own on systemd
/// hosts: `unifs run`'s namespace, which lets go of the host mounts the run
/// does not use, must keep that one, or the run locks a file of its own
/// (in the directory below the tmpfs) and takes no turn with the others.
/// Here a private namespace of the test's has a tmpfs at /run/lock.
#[test]
fn s35_a_veth_run_keeps_the_mount_of_the_host_lock() {
    let test = "s35_a_veth_run_keeps_the_mount_of_the_host_lock";
    if !can_run(test) || !has_ip(test) {
        return;
    }
    let t = TestRoot::new();
    let n = n();
    let (ip, host_ip) = (format!("10.224.{n}.2/24"), format!("10.224.{n}.1/24"));
    let script = format!(
        "mount -t tmpfs tmpfs /run/lock && exec {} run --root {} --net veth --ip {ip} \
         --host-ip {host_ip} -- /bin/sleep 60",
        unifs_bin().display(),
        t.root().display()
    );
    // unshare execs sh, which execs the run: one pid throughout.
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let run = KillOnDrop(Some(cmd.spawn().unwrap()));
    let pid = run.0.as_ref().unwrap().id();
    crate::guest::harness::wait_for_descendant(pid, "sleep");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let held = mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/run/lock"));
    drop(run);
    assert!(held, "the run let go of /run/lock:\n{mounts}");
}
