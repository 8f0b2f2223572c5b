//! Review s39 (devices): `--device PATH[:ro]` and a config's `devices`
//! give a guest a character device of the host's (/dev/net/tun for VPNs)
//! in its /dev; block devices, non-devices, missing paths and our own
//! nodes are refused; `:ro` denies writes through the devices cgroup.

use crate::common::skip;
use crate::guest::harness::{can_run, ok, stderr, stdout, TestRoot};
use crate::guest::named::Guest;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

const TUN: &str = "/dev/net/tun";

/// True when the test may run and the host has /dev/net/tun.
fn has_tun(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    if !Path::new(TUN).exists() {
        skip(test, "needs /dev/net/tun (modprobe tun)");
        return false;
    }
    true
}

/// The host's /dev/net/tun as busybox `stat -c '%t:%T %a %u:%g'` shows it.
fn host_tun() -> String {
    let md = std::fs::metadata(TUN).unwrap();
    let (major, minor) = (libc::major(md.rdev()), libc::minor(md.rdev()));
    format!(
        "{major:x}:{minor:x} {:o} {}:{}",
        md.mode() & 0o777,
        md.uid(),
        md.gid()
    )
}

/// True when a cgroup v1 devices hierarchy is mounted (`:ro` needs it).
pub(crate) fn has_devices_cgroup() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "devices")
        })
}

/// The guest gets the host's tun node (same number, mode and owner) and,
/// with CAP_NET_ADMIN in its own network namespace, makes an interface
/// with it; without that capability the node opens but makes none.
#[test]
fn s39_device_tun_makes_an_interface_in_the_guest() {
    let test = "s39_device_tun_makes_an_interface_in_the_guest";
    if !has_tun(test) {
        return;
    }
    let t = TestRoot::new();
    let script = "stat -c '%t:%T %a %u:%g' /dev/net/tun; \
                  tunctl -t s39tun0 >/dev/null && ip -o link show s39tun0";
    let out = ok(&t.sh(
        &["--net", "none", "--cap-add", "net_admin", "--device", TUN],
        script,
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], host_tun(), "{out}");
    assert!(lines.get(1).is_some_and(|l| l.contains("s39tun0")), "{out}");
    // The interface was the guest's network namespace's: the host has none.
    assert!(!Path::new("/sys/class/net/s39tun0").exists());

    // Default capabilities: TUNSETIFF needs CAP_NET_ADMIN.
    let o = t.sh(
        &["--device", TUN],
        "exec 3<>/dev/net/tun && echo opened; tunctl -t s39tun1",
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("opened"), "{}", stderr(&o));
    assert!(stderr(&o).contains("not permitted"), "{}", stderr(&o));
}

/// Each refusal names the path and says why, before the guest starts.
#[test]
fn s39_device_refusals() {
    let test = "s39_device_refusals";
    if !can_run(test) {
        return;
    }
    let t = TestRoot::new();
    let block = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .find(|e| e.file_type().is_ok_and(|k| k.is_block_device()))
        .map(|e| e.path().to_string_lossy().into_owned());
    let mut cases = vec![
        ("/dev/s39-no-such-device", "does not exist on this host"),
        ("/dev/null", "the guest's own already"),
        ("/dev/pts/0", "the guest's own already"),
        ("/etc/passwd", "below /dev"),
        ("/dev/../etc/passwd", "below /dev"),
        ("/dev/net/tun:rx", "does not exist on this host"),
    ];
    // A directory.
    if Path::new("/dev/net").is_dir() {
        cases.push(("/dev/net", "is not a device"));
    }
    if let Some(block) = &block {
        cases.push((block.as_str(), "is a block device"));
    } else {
        skip(test, "no block device in /dev (its case is left out)");
    }
    for (device, why) in cases {
        let o = t.sh(&["--device", device], "echo started");
        let err = stderr(&o);
        assert!(!o.status.success(), "{device}: {}", stdout(&o));
        assert!(!stdout(&o).contains("started"), "{device}: {err}");
        let path = device.split(':').next().unwrap();
        assert!(err.contains(path) && err.contains(why), "{device}: {err}");
    }
    if Path::new(TUN).exists() {
        let o = t.sh(&["--device", TUN, "--device", "/dev/net/tun:ro"], "true");
        assert!(!o.status.success());
        assert!(stderr(&o).contains("given twice"), "{}", stderr(&o));
    }
}

/// `:ro`: the node opens for reading and not for writing, guest root's
/// CAP_DAC_OVERRIDE notwithstanding (the devices cgroup denies it); where
/// the host has no devices cgroup, `:ro` is refused rather than ignored.
/// Without `:ro` the same write open works.
#[test]
fn s39_device_read_only() {
    let test = "s39_device_read_only";
    if !has_tun(test) {
        return;
    }
    let t = TestRoot::new();
    let script = "stat -c %a /dev/net/tun; exec 3</dev/net/tun && echo read; \
                  chmod 666 /dev/net/tun; exec 4>/dev/net/tun && echo written";
    let o = t.sh(&["--device", "/dev/net/tun:ro"], script);
    if !has_devices_cgroup() {
        assert!(!o.status.success());
        assert!(stderr(&o).contains("devices controller"), "{}", stderr(&o));
        return;
    }
    let out = stdout(&o);
    let mode = u32::from_str_radix(out.lines().next().unwrap_or_default(), 8).unwrap();
    assert_eq!(mode & 0o222, 0, "{out}");
    assert!(out.contains("read"), "{out}\n{}", stderr(&o));
    assert!(!out.contains("written"), "{out}");
    assert!(stderr(&o).contains("not permitted"), "{}", stderr(&o));

    let out = ok(&t.sh(&["--device", TUN], script));
    assert!(out.contains("written"), "{out}");
}

/// A named guest's `devices` key: the node is there for init and for
/// `guest exec`; a bad entry fails the start naming the key and the file.
#[test]
fn s39_device_in_a_guest_config() {
    let test = "s39_device_in_a_guest_config";
    if !has_tun(test) {
        return;
    }
    let g = Guest::new("s39dev", "[\"/bin/sleep\", \"1000\"]", true);
    let config = std::fs::read_to_string(g.config()).unwrap();
    let with = |devices: &str| {
        let keys = format!("devices = {devices}\ncap_add = [\"net_admin\"]\n[limits]");
        std::fs::write(g.config(), config.replacen("[limits]", &keys, 1)).unwrap();
    };
    with("[\"/dev/s39-no-such-device\"]");
    let o = g.unifs(&["start", &g.name]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("devices") && err.contains("/dev/s39-no-such-device") && err.contains(".toml"),
        "{err}"
    );

    with("[\"/dev/net/tun\"]");
    ok(&g.unifs(&["start", &g.name]));
    let out = ok(&g.unifs(&[
        "exec",
        &g.name,
        "--",
        "/bin/sh",
        "-c",
        "stat -c '%t:%T %a %u:%g' /dev/net/tun; tunctl -t s39tun2 >/dev/null && ip -o link show s39tun2",
    ]));
    assert!(out.starts_with(&host_tun()), "{out}");
    assert!(out.contains("s39tun2"), "{out}");
}
