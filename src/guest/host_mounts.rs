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
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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
/// stays, as it did before. A FUSE mount whose daemon does not answer
/// (stopped, hung) is never looked into: a used path in it is none (a PATH
/// directory there, which no look could use), and a mount below it stays.
pub fn let_go_of_unused(used: &Used) {
    // One read of the mount table for all of them.
    let Ok(stalls) = crate::fs::StallCheck::new() else {
        return;
    };
    let resolved = |p: &Path| resolved(p, &stalls);
    let used = Used {
        trees: SYSTEM
            .iter()
            .map(Path::new)
            .chain(used.trees.iter().map(PathBuf::as_path))
            .filter_map(resolved)
            .collect(),
        paths: used.paths.iter().filter_map(|p| resolved(p)).collect(),
    };
    let _ = nix::unistd::chdir("/");
    let mut answers = HashMap::new();
    // A detach uncovers a mount stacked under the one it took at that
    // point; each pass detaches at least one mount, or ends.
    for _ in 0..16 {
        let Ok(mounts) = mountinfo::read() else {
            return;
        };
        let unused = unused(&mounts, &used);
        let mut detached = false;
        for m in mounts.iter().filter(|m| unused.contains(&m.id)) {
            if !behind_fuse(m, &mounts, &unused, &mut answers) {
                detached |= detach(&m.point, &unused);
            }
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

/// Whether the way to `m`'s mount point crosses a FUSE mount (one above
/// it) that is let go of too (`m` is then reached in a pass after it) or
/// that is kept and does not answer (asked once, in 2 s; remembered in
/// `answers` by mount id): every lookup there, even the O_PATH open of
/// [`detach`] (a permission check of each directory on the way asks the
/// daemon), waits for its daemon, for good if it is stopped. The mounts
/// of `mounts` are those at the mount points, not the ones on top there:
/// a FUSE mount hidden under another is taken as crossed, and so waited
/// for, which only puts `m` off.
fn behind_fuse(
    m: &Mount,
    mounts: &[Mount],
    unused: &HashSet<u64>,
    answers: &mut HashMap<u64, bool>,
) -> bool {
    use crate::guest::state::{root_health, RootHealth};
    mounts
        .iter()
        .filter(|f| f.fstype.starts_with("fuse"))
        .filter(|f| f.point != m.point && m.point.starts_with(&f.point))
        .any(|f| {
            unused.contains(&f.id)
                || !*answers.entry(f.id).or_insert_with(|| {
                    root_health(&f.point, std::time::Duration::from_secs(2)) != RootHealth::NoAnswer
                })
        })
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
    crate::sys::fd_mount_and_inode(fd.as_fd()).map(|(id, _)| id)
}

/// `path` absolute, through the symlinks of its longest part that exists (a
/// run dir not made yet, below a symlinked /var/run): as mountinfo names
/// mount points. None where `path` lies in a FUSE mount whose daemon does
/// not answer: resolving it would wait for good.
fn resolved(path: &Path, stalls: &crate::fs::StallCheck) -> Option<PathBuf> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if stalls
        .refuse(&path)
        .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
    {
        return None;
    }
    let mut rest = Vec::new();
    let mut at = path.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(at) {
            return Some(rest.iter().rev().fold(real, |p, name| p.join(name)));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                at = parent;
            }
            _ => return Some(path),
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
        assert_eq!(
            resolved(
                &real.join("link/not/yet"),
                &crate::fs::StallCheck::new().unwrap()
            ),
            Some(real.join("not/yet"))
        );
    }
}
