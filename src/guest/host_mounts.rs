//! What `unifs run`'s mount namespace keeps of the host's mounts.
//!
//! `unifs run`, its overlay daemon and its keeper spend the run in a mount
//! namespace of their own ([`super::overlay`]), made as a copy of every host
//! mount. A slave copy goes at the host's unmount only where the host's
//! mounts are shared (systemd); where they are private (a container, CI) it
//! stayed for the run's life, and its filesystem with it: a loop image's
//! superblock (its loop device busy, a mount of the image again got the old
//! superblock back), a USB disk, an NFS or FUSE mount (another guest's
//! overlay, whose `stop` then waited for its daemon). So the namespace lets
//! go at once of every copy the run does not use. The guest is unaffected:
//! its namespace, a copy of this one, drops all but its root's tree and its
//! binds at its `pivot_root` anyway.

use crate::fs::mountinfo::{self, Mount};
use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What the run uses of the host's tree besides what its caller names, with
/// what is mounted below: the kernel's filesystems (/proc: pidfds,
/// mountinfo, /proc/PID; /sys: the cgroup hierarchies, /sys/class/net;
/// /dev: /dev/fuse, /dev/null) and the host's programs with their
/// libraries and configuration (`ip`, for `--net veth`).
const SYSTEM: &[&str] = &[
    "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// The host paths a run goes on using once its namespace is made.
#[derive(Debug, Default, Clone)]
pub struct Used {
    /// Used with everything mounted below them (the root, binds' sources:
    /// the guest gets those mounts).
    pub trees: Vec<PathBuf>,
    /// Used themselves only (the run dir, where the keeper reports; the
    /// cgroups; the store): the mounts they lie in, not those below them
    /// (another guest's root below the run dir).
    pub paths: Vec<PathBuf>,
}

/// Detaches, in this process's mount namespace (a copy of the host's, made
/// by the caller), every mount that holds nothing of `used` nor of
/// [`SYSTEM`]: none of them lies in it, and it lies below none of the
/// trees. Leaves the working directory for `/` (once `used` is resolved
/// from it: a relative --store): a detached mount lives on while anything
/// is open in it. Call it while single-threaded, before the daemon and the
/// guest are forked (they inherit the namespace). What cannot be detached
/// stays, as it did before.
pub fn let_go_of_unused(used: &Used) {
    let used = Used {
        trees: SYSTEM
            .iter()
            .map(Path::new)
            .chain(used.trees.iter().map(PathBuf::as_path))
            .map(resolved)
            .collect(),
        paths: used.paths.iter().map(|p| resolved(p)).collect(),
    };
    let _ = nix::unistd::chdir("/");
    // A detach uncovers a mount stacked under the one it took at that
    // point; each pass detaches at least one mount, or ends.
    for _ in 0..16 {
        let Ok(mounts) = mountinfo::read() else {
            return;
        };
        let unused = unused(&mounts, &used);
        let mut detached = false;
        for m in mounts.iter().filter(|m| unused.contains(&m.id)) {
            detached |= detach(&m.point, &unused);
        }
        if !detached {
            return;
        }
    }
}

/// The ids of the mounts of `mounts` that hold nothing of `used`.
fn unused(mounts: &[Mount], used: &Used) -> HashSet<u64> {
    let holds = |m: &Mount| {
        let lies_in = |p: &PathBuf| p.starts_with(&m.point);
        used.trees.iter().chain(&used.paths).any(lies_in)
            || used.trees.iter().any(|t| m.point.starts_with(t))
    };
    mounts.iter().filter(|m| !holds(m)).map(|m| m.id).collect()
}

/// Detaches the mount `point` leads to, if it is one of `unused`: checked
/// by its id through an fd, as `point` may lead elsewhere than mountinfo
/// said (to the top of a stack of mounts, or through a path changed since).
fn detach(point: &Path, unused: &HashSet<u64>) -> bool {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(fd) = nix::fcntl::open(point, flags, nix::sys::stat::Mode::empty()) else {
        return false;
    };
    if !mount_id(&fd).is_some_and(|id| unused.contains(&id)) {
        return false;
    }
    // umount2 follows the fd's link to the very mount checked; EINVAL
    // where `point` is no longer that mount's root.
    let at = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::umount2(at.as_str(), nix::mount::MntFlags::MNT_DETACH).is_ok()
}

/// The id of the mount `fd` is open in (its fdinfo's `mnt_id`).
fn mount_id(fd: &OwnedFd) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|id| id.trim().parse().ok())
}

/// `path` absolute, through the symlinks of its longest part that exists (a
/// run dir not made yet, below a symlinked /var/run): as mountinfo names
/// mount points.
fn resolved(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut at = path.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return rest.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(points: &[&str]) -> Vec<Mount> {
        let text: String = points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{} 1 0:1 / {p} rw - tmpfs tmpfs rw\n", i + 10))
            .collect();
        mountinfo::parse(text.as_bytes())
    }

    fn unused_points(points: &[&str], used: &Used) -> Vec<String> {
        let all = mounts(points);
        let unused = unused(&all, used);
        let mut out: Vec<String> = all
            .iter()
            .filter(|m| unused.contains(&m.id))
            .map(|m| m.point.display().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_run_keeps_the_mounts_holding_what_it_uses_and_those_below_its_trees() {
        let used = Used {
            trees: vec!["/srv/g/root".into(), "/data/src".into()],
            paths: vec!["/run/unifs".into(), "/var/lib/unifs".into()],
        };
        let points = [
            "/",
            "/srv",
            "/srv/g/root",
            "/srv/g/root/home",
            "/srv/other",
            "/data/src/sub",
            "/run",
            "/run/unifs/web1/root",
            "/var",
            "/var/lib/unifs/tmp",
            "/mnt/usb",
            "/tmp",
            "/data/srcx",
        ];
        assert_eq!(
            unused_points(&points, &used),
            [
                "/data/srcx",
                "/mnt/usb",
                "/run/unifs/web1/root",
                "/srv/other",
                "/tmp",
                "/var/lib/unifs/tmp",
            ]
        );
    }

    #[test]
    fn resolving_a_missing_path_keeps_its_missing_part() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::os::unix::fs::symlink(&real, real.join("link")).unwrap();
        assert_eq!(resolved(&real.join("link/not/yet")), real.join("not/yet"),);
    }
}
