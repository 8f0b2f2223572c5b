//! `--device PATH[:ro]` (a config's `devices`): a character device of the
//! host's given to a guest at the same path. The host node is read here,
//! when the option is parsed; rootfs makes a node of the same number, mode
//! and owner in the guest's /dev, and [`super::cgroup`] allows it in the
//! guest's v1 `devices` group (without writes for a read-only one).
//!
//! That group denies every other device ([`own_rules`]): as Docker's, LXC's
//! and nspawn's, a guest opens only the nodes of its own /dev, whatever it
//! makes with `--cap-add mknod`.

use super::{Error, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// A host character device a guest gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Where it is on the host, and so in the guest: below /dev.
    pub path: PathBuf,
    pub major: u64,
    pub minor: u64,
    /// Permission bits of the guest's node: the host node's, without the
    /// write bits for a read-only one.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub read_only: bool,
}

/// What the guest's /dev has of its own: a device there would be made
/// twice, or below one of our mounts.
const OURS: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx", "fd", "stdin", "stdout",
    "stderr", "pts", "shm",
];

/// Each of `items` (`PATH[:ro]`) parsed, a path given twice refused.
pub fn parse_devices(items: &[String]) -> Result<Vec<Device>> {
    let devices: Vec<Device> = super::spec::parse_all(items)?;
    for (i, d) in devices.iter().enumerate() {
        if devices[..i].iter().any(|e| e.path == d.path) {
            return Err(invalid(&items[i], "given twice".into()));
        }
        // One cgroup rule per number: a second, writable entry's allow
        // would lift a `:ro` one's deny.
        if let Some(e) = devices[..i]
            .iter()
            .find(|e| (e.major, e.minor) == (d.major, d.minor))
        {
            return Err(invalid(
                &items[i],
                format!(
                    "{} is the same device (c {}:{}) as {}, given before: give it once",
                    d.path.display(),
                    d.major,
                    d.minor,
                    e.path.display()
                ),
            ));
        }
    }
    Ok(devices)
}

fn invalid(value: &str, reason: String) -> Error {
    Error::Invalid {
        what: "--device",
        value: value.to_string(),
        reason,
    }
}

impl std::str::FromStr for Device {
    type Err = Error;

    /// `PATH`, `PATH:ro` or `PATH:rw`; PATH a character device below /dev.
    fn from_str(s: &str) -> Result<Device> {
        let bad = |reason: String| invalid(s, reason);
        let (path, read_only) = match s.rsplit_once(':') {
            Some((path, "ro")) => (path, true),
            Some((path, "rw")) => (path, false),
            _ => (s, false),
        };
        let path = Path::new(path);
        // Only /dev of the guest allows devices: its tree and binds are nodev.
        let parts: Option<Vec<&std::ffi::OsStr>> = path
            .strip_prefix("/dev")
            .ok()
            .map(|rel| rel.components())
            .and_then(|parts| {
                parts
                    .map(|c| match c {
                        Component::Normal(name) => Some(name),
                        _ => None,
                    })
                    .collect()
            });
        let Some(first) = parts.as_ref().and_then(|p| p.first()) else {
            return Err(bad(
                "expected PATH[:ro], PATH a device below /dev (its path in the guest too), \
                 without . or .."
                    .into(),
            ));
        };
        if let Some(name) = OURS.iter().find(|n| *first == **n) {
            return Err(bad(format!(
                "/dev/{name} is the guest's own already (docs/guests.md, \"What the guest gets\")"
            )));
        }
        let md = match std::fs::metadata(path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(format!(
                    "{} does not exist on this host: load the driver that makes it \
                     (`modprobe tun` for /dev/net/tun, `modprobe fuse` for /dev/fuse) \
                     or make the node (`mknod {} c MAJOR MINOR`)",
                    path.display(),
                    path.display()
                )))
            }
            Err(e) => return Err(bad(format!("{}: {e}", path.display()))),
        };
        let kind = md.file_type();
        if kind.is_block_device() {
            return Err(bad(format!(
                "{} is a block device: the guest would get the host's disk itself, \
                 under every filesystem and permission on it; only character devices \
                 are given (a directory goes in with --bind)",
                path.display()
            )));
        }
        if !kind.is_char_device() {
            return Err(bad(format!(
                "{} is not a device; only character devices are given (a file or \
                 directory goes in with --bind)",
                path.display()
            )));
        }
        let rdev = md.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        if let Some(what) = host_memory(major, minor) {
            return Err(bad(format!(
                "{} is {what}: the guest would read and write the host's kernel, \
                 under every namespace and permission; it is never given",
                path.display()
            )));
        }
        if read_only && (major, minor) == FUSE {
            return Err(bad(format!(
                "{} read-only serves nothing (a FUSE daemon writes its replies to it): \
                 give it without :ro",
                path.display()
            )));
        }
        let write_bits = if read_only { 0o222 } else { 0 };
        Ok(Device {
            path: Path::new("/dev").join(parts.iter().flatten().collect::<PathBuf>()),
            major,
            minor,
            mode: md.mode() & 0o777 & !write_bits,
            uid: md.uid(),
            gid: md.gid(),
            read_only,
        })
    }
}

/// /dev/fuse's number (Documentation/admin-guide/devices.txt).
const FUSE: (u64, u64) = (10, 229);

/// /dev/ptmx, and the major of every pty of a devpts (/dev/pts/N, and the
/// guest's /dev/console, a pty bound there): Documentation/admin-guide/devices.txt.
const PTMX: (u64, u64) = (5, 2);
const PTS_MAJOR: u64 = 136;

/// What the guest's v1 devices group allows (its `devices.allow` lines)
/// after denying all (`a`): `m` of any number, as Docker, so `--cap-add
/// mknod` still makes nodes (opening one is what is checked); the nodes of
/// its own /dev (rootfs's) and its ptys. Not /dev/console's own number
/// (5:1, the host's console): the guest's is a pty. Its `--device`s are
/// [`Device::cgroup_rule`].
pub fn own_rules() -> Vec<String> {
    let mut rules = vec!["c *:* m".to_string(), "b *:* m".to_string()];
    let nodes = super::rootfs::DEVICES
        .iter()
        .map(|(_, major, minor)| (*major, *minor));
    rules.extend(
        nodes
            .chain([PTMX])
            .map(|(major, minor)| format!("c {major}:{minor} rwm")),
    );
    rules.push(format!("c {PTS_MAJOR}:* rwm"));
    rules
}

/// What one of [`own_rules`] gives the guest, for a warning where the
/// host's own group denies it: the node's path, or what the rule is for.
pub fn rule_node(rule: &str) -> String {
    let number = rule.split(' ').nth(1).unwrap_or_default();
    let own = super::rootfs::DEVICES
        .iter()
        .find(|(_, major, minor)| number == format!("{major}:{minor}"))
        .map(|(name, _, _)| format!("/dev/{name}"));
    let path = own.unwrap_or_else(|| {
        let what = match number {
            "*:*" => "making device nodes (mknod)",
            n if n == format!("{}:{}", PTMX.0, PTMX.1) => "/dev/ptmx",
            n if n == format!("{PTS_MAJOR}:*") => "its ptys (/dev/pts/N, /dev/console)",
            _ => "a device",
        };
        what.to_string()
    });
    format!("{path} ({rule})")
}

impl Device {
    /// Its `devices.allow` line: read and mknod only for a read-only one
    /// (the group denies everything it does not allow).
    pub fn cgroup_rule(&self) -> String {
        let access = if self.read_only { "rm" } else { "rwm" };
        format!("c {}:{} {access}", self.major, self.minor)
    }
}

/// The memory-class nodes that are the host's memory or I/O ports
/// (Documentation/admin-guide/devices.txt): as a block device is its disk.
fn host_memory(major: u64, minor: u64) -> Option<&'static str> {
    match (major, minor) {
        (1, 1) => Some("the host's physical memory (/dev/mem)"),
        (1, 2) => Some("the host's kernel memory (/dev/kmem)"),
        (1, 4) => Some("the host's I/O ports (/dev/port)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> String {
        match s.parse::<Device>() {
            Err(Error::Invalid { reason, .. }) => reason,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn refuses_what_is_no_host_character_device() {
        assert!(reason("/dev/null").contains("guest's own"));
        assert!(reason("/dev/pts/0").contains("guest's own"));
        assert!(reason("/etc/passwd").contains("below /dev"));
        assert!(reason("/dev/../etc/passwd").contains("below /dev"));
        assert!(reason("/dev").contains("below /dev"));
        assert!(reason("/dev/no-such-device-s39").contains("modprobe"));
        assert!(reason("/dev/no-such-device-s39:ro").contains("does not exist"));
    }

    #[test]
    fn the_group_allows_the_guests_own_nodes_and_ptys_only() {
        let rules = own_rules();
        for rule in [
            "c 1:3 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
        ] {
            assert!(rules.iter().any(|r| r == rule), "{rule}: {rules:?}");
        }
        // mknod of any number; nothing else of a block device, or of the
        // host's memory or console.
        assert!(rules.iter().any(|r| r == "b *:* m"));
        assert!(!rules.iter().any(|r| r.starts_with("b ") && r != "b *:* m"));
        assert!(!rules
            .iter()
            .any(|r| r.starts_with("c 1:1 ") || r.starts_with("c 5:1 ")));
        let mut tun = Device {
            path: "/dev/net/tun".into(),
            major: 10,
            minor: 200,
            mode: 0o666,
            uid: 0,
            gid: 0,
            read_only: false,
        };
        assert_eq!(tun.cgroup_rule(), "c 10:200 rwm");
        tun.read_only = true;
        assert_eq!(tun.cgroup_rule(), "c 10:200 rm");
        // Not /dev/fuse: the overlay daemon is outside the devices group.
        assert!(!rules.iter().any(|r| r.starts_with("c 10:229")));
        assert_eq!(rule_node("c 1:7 rwm"), "/dev/full (c 1:7 rwm)");
        assert_eq!(rule_node("c 5:2 rwm"), "/dev/ptmx (c 5:2 rwm)");
    }

    #[test]
    fn host_memory_nodes_are_never_given() {
        assert!(host_memory(1, 1).unwrap().contains("/dev/mem"));
        assert!(host_memory(1, 2).unwrap().contains("/dev/kmem"));
        assert!(host_memory(1, 4).unwrap().contains("/dev/port"));
        // /dev/null, /dev/kmsg, /dev/net/tun, /dev/fuse
        for (major, minor) in [(1, 3), (1, 11), (10, 200), (10, 229)] {
            assert_eq!(host_memory(major, minor), None, "{major}:{minor}");
        }
    }
}
