//! The set-up sequence inside the new namespaces: root, /proc, /sys, /dev,
//! /run, binds, pivot_root, hostname and the privilege drop. Every call goes
//! through [`Syscall`] so the order is unit-tested with a recorder.

use super::devices::Device;
use super::sys::{MountPoint, Syscall};
use super::{caps, Error, GuestSpec, NetMode, Result};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{makedev, SFlag};
use nix::unistd::{Gid, Uid};
use std::path::{Path, PathBuf};

/// Device nodes of the minimal /dev: name, major, minor (all mode 0666);
/// the guest's devices cgroup allows them ([`super::devices::own_rules`]).
pub(super) const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Parts of /proc a guest may read but not write: they change the shared kernel.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Parts of /proc that show host-wide kernel state: hidden behind /dev/null.
const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "timer_stats",
];

/// Directories of host hardware and firmware state (ACPI tables, SCSI and
/// sound devices, power meters: a side channel): an empty read-only tmpfs
/// over them, as docker and nspawn do.
const MASKED_DIRS: &[&str] = &[
    "proc/acpi",
    "proc/scsi",
    "proc/asound",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Refuses to go on where `/` is no mount point (a chroot): pivot_root
/// needs one, and fails with a bare EINVAL after the root is mounted and
/// the namespaces made. A mount table that cannot be read (no /proc)
/// leaves it to pivot_root.
pub fn require_mounted_root() -> Result<()> {
    match super::state::is_mounted(Path::new("/")) {
        Ok(false) => Err(Error::Chroot),
        _ => Ok(()),
    }
}

/// Everything between entering the namespaces and exec, in order. `foreground`
/// ties the guest to the life of the launching process; `cgroup2`: it has a
/// cgroup v2 group of its own (see [`setup_root`]). `in_root` runs in the
/// guest's root, before the privilege drop.
pub fn prepare(
    sys: &impl Syscall,
    spec: &GuestSpec,
    foreground: bool,
    cgroup2: bool,
    in_root: impl FnOnce() -> Result<()>,
) -> Result<()> {
    // The launcher put us into the guest's cgroups before letting us run, so a
    // new cgroup namespace now makes them the guest's cgroup root.
    call(
        "unshare(CLONE_NEWCGROUP)",
        sys.unshare(CloneFlags::CLONE_NEWCGROUP),
    )?;
    call(
        format!("sethostname {}", spec.hostname),
        sys.sethostname(&spec.hostname),
    )?;
    if spec.net.mode != NetMode::Host {
        call("bringing up loopback", sys.loopback_up())?;
    }
    setup_root(sys, spec, cgroup2)?;
    in_root()?;
    drop_privileges(sys, spec, foreground)
}

/// Builds the guest's mount tree on its root and pivots into it. With
/// `cgroup2` (the guest's cgroup namespace is rooted in a v2 group of its
/// own), that group is mounted writable at /sys/fs/cgroup, as nspawn does:
/// systemd needs one to run services in, and mounts it itself only with
/// CAP_SYS_ADMIN. The guest sees and changes only groups below the one its
/// limits are on.
pub fn setup_root(sys: &impl Syscall, spec: &GuestSpec, cgroup2: bool) -> Result<()> {
    let root = spec.root.as_path();
    // mount_namespaces(7): make every mount private first, so nothing we mount
    // or unmount propagates back to the host, and pivot_root(2) requires that
    // neither the new root nor the old one is shared.
    mount(
        sys,
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    // pivot_root(2): new_root must be a mount point; a bind of the root onto
    // itself makes it one (for an overlay root too, which already is).
    mount(
        sys,
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    // No device nodes and no set-id bits from the guest's own tree: it gets
    // its devices from our /dev only. A bind remount resets every flag it is
    // not given, so keep the ones the root already had (ro, atime, …).
    let kept = sys
        .mount_flags(root)
        .map_err(|e| Error::sys(format!("statvfs {}", root.display()), e))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(sys, None, root, None, flags | kept, None)?;
    // The same for every mount the recursive bind brought along (a root
    // with its own /home or /var filesystem): before our /dev, which needs
    // its devices.
    call(
        format!("making the mounts below {} nosuid,nodev", root.display()),
        sys.lock_tree(root, false),
    )?;
    if spec.read_only {
        // The mount points in the guest's tree first, while it is writable;
        // ours (/dev, /proc, /run, …) are mounted on top afterwards, and
        // stay writable.
        for dir in ["/dev", "/proc", "/sys", "/run"] {
            target(sys, root, dir, MountPoint::Dir)?;
        }
        let ours = |dst: &Path| -> Result<Option<PathBuf>> {
            if on_our_mounts(spec, dst) {
                return Ok(None);
            }
            let at = resolve_in_root(root, dst)?;
            Ok((!on_our_mounts(spec, &at)).then_some(at))
        };
        for t in &spec.tmpfs {
            if let Some(at) = ours(&t.dst)? {
                target(sys, root, &at.to_string_lossy(), MountPoint::Dir)?;
            }
        }
        for bind in &spec.binds {
            if let Some(at) = ours(&bind.dst)? {
                target(sys, root, &at.to_string_lossy(), bind_kind(bind))?;
            }
        }
        call(
            format!(
                "making {} and the mounts below it read-only",
                root.display()
            ),
            sys.lock_tree(root, true),
        )?;
    }

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let dev = target(sys, root, "/dev", MountPoint::Dir)?;
    mount(
        sys,
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )?;
    for (name, major, minor) in DEVICES {
        let node = dev.join(name);
        call(
            format!("mknod {}", node.display()),
            sys.mknod(&node, SFlag::S_IFCHR, 0o666, makedev(*major, *minor)),
        )?;
    }
    for device in &spec.devices {
        host_device(sys, root, device)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let at = dev.join(link);
        call(
            format!("symlink {}", at.display()),
            sys.symlink(Path::new(to), &at),
        )?;
    }
    let pts = target(sys, root, "/dev/pts", MountPoint::Dir)?;
    // New ptys in the guest's `tty` group, as on a host (nspawn and Docker
    // pass gid=5): `write` and `wall` reach them. Only a group the guest
    // calls tty: another one's members could write to every terminal.
    let pts_options = match super::user::tty_group(root) {
        Some(tty) => format!("newinstance,ptmxmode=0666,mode=620,gid={tty}"),
        None => "newinstance,ptmxmode=0666,mode=620".to_string(),
    };
    mount(
        sys,
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&pts_options),
    )?;
    let shm = target(sys, root, "/dev/shm", MountPoint::Dir)?;
    mount(
        sys,
        Some(Path::new("tmpfs")),
        &shm,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777"),
    )?;

    // The guest is PID 1 of a new PID namespace, so this /proc shows only it.
    let proc = target(sys, root, "/proc", MountPoint::Dir)?;
    mount(
        sys,
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;
    for name in PROC_READ_ONLY {
        read_only_bind(sys, &proc.join(name), &proc.join(name), true)?;
    }
    for name in PROC_MASKED {
        optional(mount(
            sys,
            Some(&dev.join("null")),
            &proc.join(name),
            None,
            MsFlags::MS_BIND,
            None,
        ))?;
    }

    let sys_dir = target(sys, root, "/sys", MountPoint::Dir)?;
    mount(
        sys,
        Some(Path::new("sysfs")),
        &sys_dir,
        Some("sysfs"),
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )?;
    // Kernel paths (procfs and sysfs, mounted above), not the guest's tree;
    // those this kernel lacks are skipped.
    for dir in MASKED_DIRS {
        optional(mount(
            sys,
            Some(Path::new("tmpfs")),
            &root.join(dir),
            Some("tmpfs"),
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            Some("mode=555"),
        ))?;
    }
    if cgroup2 {
        let at = target(sys, root, "/sys/fs/cgroup", MountPoint::Dir)?;
        mount(
            sys,
            Some(Path::new("cgroup2")),
            &at,
            Some("cgroup2"),
            nosuid_nodev_noexec,
            None,
        )?;
    }
    let run = target(sys, root, "/run", MountPoint::Dir)?;
    mount(
        sys,
        Some(Path::new("tmpfs")),
        &run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755"),
    )?;
    // systemd insists on a tmpfs of its own there, and needs CAP_SYS_ADMIN
    // to mount it.
    let lock = target(sys, root, "/run/lock", MountPoint::Dir)?;
    mount(
        sys,
        Some(Path::new("tmpfs")),
        &lock,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=5m"),
    )?;

    // Before the binds, so a bind may go into one.
    for t in &spec.tmpfs {
        let at = user_target(sys, root, &t.dst, MountPoint::Dir)?;
        let opts = match t.size {
            Some(size) => format!("mode=1777,size={size}"),
            None => "mode=1777".to_string(),
        };
        mount(
            sys,
            Some(Path::new("tmpfs")),
            &at,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&opts),
        )?;
    }
    for bind in &spec.binds {
        let at = user_target(sys, root, &bind.dst, bind_kind(bind))?;
        if bind.read_only {
            read_only_bind(sys, &bind.src, &at, false)?;
        } else {
            mount(
                sys,
                Some(&bind.src),
                &at,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            // Guest root keeps dac_override: a device node in a host
            // directory (or one made with `--cap-add mknod`) would open the
            // host's device. As bwrap's --bind: nodev, and nosuid.
            call(
                format!("making {} nosuid,nodev", at.display()),
                sys.lock_tree(&at, false),
            )?;
        }
    }

    // pivot_root(2), "pivot_root(".", ".")": with the new root as working
    // directory, the old root is stacked on top of it at "/"; unmounting "."
    // with MNT_DETACH then drops the old root and every host mount under it,
    // so no path, `..` included, leads back to the host.
    call(format!("chdir {}", root.display()), sys.chdir(root))?;
    call("pivot_root", sys.pivot_root(Path::new("."), Path::new(".")))?;
    call(
        "detaching the old root",
        sys.umount2(Path::new("."), MntFlags::MNT_DETACH),
    )?;
    call("chdir /", sys.chdir(Path::new("/")))
}

/// A `--device` node in our /dev (whose tmpfs, unlike the guest's tree,
/// allows devices): made rather than bound from the host, so that guest
/// root, which owns it, changes its own copy's mode or owner, never the
/// host's node. Its directories (/dev/net) first.
fn host_device(sys: &impl Syscall, root: &Path, device: &Device) -> Result<()> {
    if let Some(dir) = device.path.parent().filter(|d| *d != Path::new("/dev")) {
        target(sys, root, &dir.to_string_lossy(), MountPoint::Dir)?;
    }
    let node = root.join(device.path.strip_prefix("/").unwrap_or(&device.path));
    let rdev = makedev(device.major, device.minor);
    call(
        format!("mknod {}", node.display()),
        sys.mknod(&node, SFlag::S_IFCHR, device.mode, rdev),
    )?;
    call(
        format!("chown {}", node.display()),
        sys.chown(&node, device.uid, device.gid),
    )
}

/// Bounding set first (needs CAP_SETPCAP, which setuid may take away), then
/// ids, then the process's own sets, then no_new_privs, so neither exec nor a
/// setuid binary can give anything back.
pub fn drop_privileges(sys: &impl Syscall, spec: &GuestSpec, foreground: bool) -> Result<()> {
    // First: raising a hard limit needs CAP_SYS_RESOURCE.
    for r in &spec.rlimits {
        let shown = |v: u64| match v {
            libc::RLIM_INFINITY => "infinity".to_string(),
            v => v.to_string(),
        };
        let set = sys.setrlimit(r.resource, r.soft, r.hard);
        let why = match (set, r.resource == libc::RLIMIT_NOFILE) {
            (Err(Errno::EPERM), true) => {
                " (raising a hard limit needs CAP_SYS_RESOURCE on the host; nofile is at \
                 most fs.nr_open)"
            }
            (Err(Errno::EPERM), false) => {
                " (raising a hard limit needs CAP_SYS_RESOURCE on the host)"
            }
            _ => "",
        };
        call(
            format!(
                "setting rlimit {} to {}:{}{why}",
                r.name(),
                shown(r.soft),
                shown(r.hard)
            ),
            set,
        )?;
    }
    for cap in 0..64u32 {
        if spec.caps & (1 << cap) == 0 {
            call(
                format!("dropping capability {}", caps::name(cap)),
                sys.drop_bounding_cap(cap),
            )?;
        }
    }
    // -1 to setresuid(2)/setresgid(2) is "unchanged": the command would run
    // as root.
    if spec.uid == u32::MAX || spec.all_groups().contains(&u32::MAX) {
        return Err(Error::Invalid {
            what: "user or group id",
            value: "4294967295".into(),
            reason: "-1 is no id (the kernel would leave root's)".into(),
        });
    }
    let gid = Gid::from_raw(spec.gid);
    let groups: Vec<Gid> = spec.all_groups().into_iter().map(Gid::from_raw).collect();
    call("setgroups", sys.setgroups(&groups))?;
    call(format!("setresgid {}", spec.gid), sys.setresgid(gid))?;
    call(
        format!("setresuid {}", spec.uid),
        sys.setresuid(Uid::from_raw(spec.uid)),
    )?;
    // A non-root uid lost every capability in setresuid; keep it that way.
    let keep = if spec.uid == 0 { spec.caps } else { 0 };
    call("setting capabilities", sys.set_caps(keep))?;
    // After setresuid, so the keyring belongs to the guest's uid.
    call("joining a new session keyring", sys.new_session_keyring())?;
    call("setting no_new_privs", sys.set_no_new_privs())?;
    // After everything the set-up needs (the keyring above); the command,
    // and `--init`'s reaper, run under it.
    let filtered = sys.set_syscall_filter(spec.syscall_filter);
    let what = match filtered {
        Err(_) if !super::seccomp::BUILT => {
            "installing the syscall filter (none is built for this architecture; \
             --syscall-filter off starts the guest without one)"
        }
        _ => "installing the syscall filter",
    };
    call(what, filtered)?;
    if foreground {
        // Last: setresuid clears the parent-death signal.
        call(
            "setting the parent-death signal",
            sys.set_parent_death_signal(),
        )?;
    }
    Ok(())
}

fn bind_kind(bind: &super::Bind) -> MountPoint {
    if bind.src.is_dir() {
        MountPoint::Dir
    } else {
        MountPoint::File
    }
}

/// A guest path on the filesystems unifs mounts (/dev, /run, a --tmpfs
/// other than itself, …), not in the guest's tree.
fn on_our_mounts(spec: &GuestSpec, guest_path: &Path) -> bool {
    let tmpfs = spec.tmpfs.iter().map(|t| t.dst.as_path());
    ["/dev", "/proc", "/sys", "/run"]
        .into_iter()
        .map(Path::new)
        .chain(tmpfs)
        .any(|m| guest_path != m && guest_path.starts_with(m))
}

/// Where a `--bind` or `--tmpfs` destination `dst` is in the guest, made
/// ready to mount on: [`resolve_in_root`], then [`target`].
fn user_target(sys: &impl Syscall, root: &Path, dst: &Path, kind: MountPoint) -> Result<PathBuf> {
    let at = resolve_in_root(root, dst)?;
    if at != dst {
        // Debug: the guest's names, newlines and all, escaped.
        tracing::info!("{dst:?}: through the guest's symlinks, {at:?}");
    }
    target(sys, root, &at.to_string_lossy(), kind)
}

/// The path in the guest that `dst` (absolute) leads to: its symlinks
/// followed as the guest would follow them, but inside `root` (a link to an
/// absolute path starts again at the guest's `/`, and `..` stops there), as
/// Docker and nspawn resolve mount destinations; so `/var/run/x` in a Debian
/// guest is `/run/x`. Where a part does not exist yet, the rest is taken as
/// it is (made later). Never, through a link, into `/proc` or `/sys`: what a
/// guest's links lead to there is the kernel's, not its tree. The result
/// has no link left on its way unless the tree changes meanwhile (then
/// [`target`] refuses it).
pub(crate) fn resolve_in_root(root: &Path, dst: &Path) -> Result<PathBuf> {
    use std::ffi::OsString;
    use std::path::Component;
    // The kernel's MAXSYMLINKS.
    const MAX_LINKS: u32 = 40;
    let parts = |p: &Path| -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut pending: Vec<OsString> = parts(dst);
    pending.reverse();
    let mut at: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            at.pop();
            continue;
        }
        at.push(part);
        if links > 0 && matches!(at[0].to_str(), Some("proc" | "sys")) {
            return Err(Error::Invalid {
                what: "mount destination",
                value: dst.display().to_string(),
                reason: format!(
                    "it leads through a symlink in the guest's tree to /{}, which is the \
                     kernel's, not the guest's: mount elsewhere",
                    at.iter()
                        .map(|p| p.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/")
                ),
            });
        }
        let here: PathBuf = root.join(at.iter().collect::<PathBuf>());
        let Ok(md) = std::fs::symlink_metadata(&here) else {
            continue; // not there (yet): made later
        };
        if !md.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            let what = format!(
                "following the symlinks to mount destination {} in the guest \
                 (more than {MAX_LINKS}: a loop?)",
                dst.display()
            );
            return Err(Error::sys(what, Errno::ELOOP));
        }
        let to = std::fs::read_link(&here).map_err(|source| Error::Io {
            what: "reading the symlink",
            path: here.clone(),
            source,
        })?;
        at.pop();
        if to.is_absolute() {
            at.clear();
        }
        pending.extend(parts(&to).into_iter().rev());
    }
    if at.is_empty() {
        return Err(Error::Invalid {
            what: "mount destination",
            value: dst.display().to_string(),
            reason: "it leads to the guest's / itself: mount elsewhere".into(),
        });
    }
    Ok(Path::new("/").join(at.iter().collect::<PathBuf>()))
}

/// The guest path `guest_path` under `root`, made ready to mount on.
fn target(sys: &impl Syscall, root: &Path, guest_path: &str, kind: MountPoint) -> Result<PathBuf> {
    let at = root.join(guest_path.trim_start_matches('/'));
    let made = sys.prepare_mount_point(root, &at, kind);
    let what = match made {
        Ok(()) => return Ok(at),
        // A link could lead the mount out of the tree, so none is followed.
        Err(Errno::ELOOP) => format!(
            "preparing mount point {} (a symlink there or on the way, which a \
             mount point never follows: make it a real directory in the \
             guest's tree, or mount on the one it leads to)",
            at.display()
        ),
        Err(Errno::EROFS) => format!(
            "preparing mount point {} (missing, on a read-only filesystem: \
             make it in the guest's tree)",
            at.display()
        ),
        Err(_) => format!("preparing mount point {}", at.display()),
    };
    call(what, made)?;
    Ok(at)
}

fn read_only_bind(sys: &impl Syscall, src: &Path, at: &Path, optional_src: bool) -> Result<()> {
    let bound = mount(
        sys,
        Some(src),
        at,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    );
    if optional_src {
        if optional(bound)?.is_none() {
            return Ok(());
        }
    } else {
        bound?;
    }
    // A bind mount takes the read-only flag only on a remount (mount(2)),
    // which resets every flag it is not given: keep the source's (noexec,
    // atime), so the bind is never more permissive than its source.
    let kept = sys
        .mount_flags(at)
        .map_err(|e| Error::sys(format!("statvfs {}", at.display()), e))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | kept;
    mount(sys, None, at, None, flags, None)?;
    // The remount changes the top mount only: a host directory with a
    // filesystem mounted below it would stay writable there.
    call(
        format!("making the mounts below {} read-only", at.display()),
        sys.lock_tree(at, true),
    )
}

fn mount(
    sys: &impl Syscall,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    sys.mount(source, target, fstype, flags, data).map_err(|e| {
        let what = match (fstype, source) {
            (Some(fs), _) => format!("mounting {fs} on {}", target.display()),
            (None, Some(src)) => format!("binding {} on {}", src.display(), target.display()),
            (None, None) => format!("remounting {}", target.display()),
        };
        Error::sys(what, e)
    })
}

/// Paths some kernels lack (e.g. /proc/sched_debug) are skipped.
fn optional(r: Result<()>) -> Result<Option<()>> {
    match r {
        Err(Error::Sys {
            source: Errno::ENOENT,
            ..
        }) => Ok(None),
        r => r.map(Some),
    }
}

fn call(what: impl Into<String>, r: nix::Result<()>) -> Result<()> {
    r.map_err(|e| Error::sys(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::sys::fake::{Call, Recorder};

    fn spec() -> GuestSpec {
        let mut s = GuestSpec::new("t", "/guests/t".into(), vec!["/bin/sh".into()]);
        s.binds = vec!["/srv:/srv:ro".parse().unwrap()];
        s
    }

    fn position(calls: &[Call], pred: impl Fn(&Call) -> bool) -> usize {
        calls.iter().position(pred).expect("call not made")
    }

    fn mounts_at(calls: &[Call], at: &str) -> usize {
        position(
            calls,
            |c| matches!(c, Call::Mount { target, .. } if target == Path::new(at)),
        )
    }

    #[test]
    fn private_then_bind_then_mounts_then_pivot_then_detach() {
        let sys = Recorder::default();
        setup_root(&sys, &spec(), false).unwrap();
        let calls = sys.calls();
        // First: everything private, recursively.
        assert_eq!(
            calls[0],
            Call::Mount {
                source: None,
                target: "/".into(),
                fstype: None,
                flags: MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                data: None
            }
        );
        // Then the root bound onto itself.
        assert!(
            matches!(&calls[1], Call::Mount { source: Some(s), target, flags, .. }
            if s == Path::new("/guests/t") && target == Path::new("/guests/t") && flags.contains(MsFlags::MS_BIND))
        );
        // Then remounted without devices and set-id bits, keeping its flags.
        assert!(
            matches!(&calls[2], Call::Mount { source: None, target, flags, .. }
            if target == Path::new("/guests/t")
                && flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_RELATIME))
        );
        let proc = mounts_at(&calls, "/guests/t/proc");
        let sys_dir = mounts_at(&calls, "/guests/t/sys");
        let dev = mounts_at(&calls, "/guests/t/dev");
        let bind = mounts_at(&calls, "/guests/t/srv");
        let pivot = position(&calls, |c| matches!(c, Call::PivotRoot(..)));
        let detach = position(&calls, |c| matches!(c, Call::Umount2(..)));
        assert!(dev < proc && proc < sys_dir && sys_dir < bind && bind < pivot);
        assert_eq!(calls[pivot - 1], Call::Chdir("/guests/t".into()));
        assert_eq!(calls[pivot], Call::PivotRoot(".".into(), ".".into()));
        assert_eq!(detach, pivot + 1);
        assert_eq!(
            calls[detach],
            Call::Umount2(".".into(), MntFlags::MNT_DETACH)
        );
        assert_eq!(calls.last(), Some(&Call::Chdir("/".into())));
    }

    #[test]
    fn a_host_device_is_made_in_our_dev_with_its_directory_and_owner() {
        let mut spec = spec();
        spec.devices = vec![Device {
            path: "/dev/net/tun".into(),
            major: 10,
            minor: 200,
            mode: 0o600,
            uid: 0,
            gid: 5,
            read_only: false,
        }];
        let sys = Recorder::default();
        setup_root(&sys, &spec, false).unwrap();
        let calls = sys.calls();
        let node = Path::new("/guests/t/dev/net/tun");
        let made = position(&calls, |c| matches!(c, Call::Mknod(p, ..) if p == node));
        assert_eq!(
            calls[made],
            Call::Mknod(node.into(), 0o600, makedev(10, 200))
        );
        assert_eq!(
            calls[made - 1],
            Call::MountPoint("/guests/t/dev/net".into(), MountPoint::Dir)
        );
        assert_eq!(calls[made + 1], Call::Chown(node.into(), 0, 5));
        // In our /dev, after its tmpfs is mounted.
        assert!(mounts_at(&calls, "/guests/t/dev") < made);
    }

    #[test]
    fn the_guests_own_cgroup2_group_is_mounted_writable_and_only_then() {
        let is_cgroup2 =
            |c: &Call| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "cgroup2");
        let sys = Recorder::default();
        setup_root(&sys, &spec(), true).unwrap();
        let calls = sys.calls();
        let at = mounts_at(&calls, "/guests/t/sys/fs/cgroup");
        assert!(is_cgroup2(&calls[at]), "{:?}", calls[at]);
        assert!(
            matches!(&calls[at], Call::Mount { flags, .. } if !flags.contains(MsFlags::MS_RDONLY))
        );
        // After the read-only sysfs it is mounted on.
        assert!(mounts_at(&calls, "/guests/t/sys") < at);
        let sys = Recorder::default();
        setup_root(&sys, &spec(), false).unwrap();
        assert!(!sys.calls().iter().any(is_cgroup2));
        // /run/lock, a tmpfs of its own either way (systemd needs one).
        assert!(
            mounts_at(&sys.calls(), "/guests/t/run")
                < mounts_at(&sys.calls(), "/guests/t/run/lock")
        );
    }

    #[test]
    fn submounts_of_the_root_and_of_read_only_binds_are_locked_too() {
        let sys = Recorder::default();
        setup_root(&sys, &spec(), false).unwrap();
        let calls = sys.calls();
        let root = position(&calls, |c| *c == Call::LockTree("/guests/t".into(), false));
        // After the root's own remount, before /dev gets its devices.
        assert_eq!(root, 3);
        assert!(root < mounts_at(&calls, "/guests/t/dev"));
        let bind = position(&calls, |c| {
            *c == Call::LockTree("/guests/t/srv".into(), true)
        });
        assert!(bind > mounts_at(&calls, "/guests/t/srv"));
        assert!(calls.contains(&Call::LockTree("/guests/t/proc/sys".into(), true)));
    }

    #[test]
    fn sys_is_mounted_read_only_and_proc_sys_remounted_read_only() {
        let sys = Recorder::default();
        setup_root(&sys, &spec(), false).unwrap();
        let calls = sys.calls();
        let Call::Mount { flags, .. } = &calls[mounts_at(&calls, "/guests/t/sys")] else {
            unreachable!()
        };
        assert!(flags.contains(MsFlags::MS_RDONLY));
        let remounts: Vec<_> = calls
            .iter()
            .filter(|c| matches!(c, Call::Mount { flags, .. } if flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY)))
            .map(|c| match c {
                Call::Mount { target, .. } => target.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert!(remounts.contains(&"/guests/t/proc/sys".into()));
        assert!(
            remounts.contains(&"/guests/t/srv".into()),
            "ro bind: {remounts:?}"
        );
    }

    #[test]
    fn read_only_locks_the_tree_after_its_mount_points_and_before_ours() {
        let sys = Recorder::default();
        let mut s = spec();
        s.read_only = true;
        s.binds.push("/host/log:/run/log".parse().unwrap());
        s.binds.push("/host/cache:/tmp/cache".parse().unwrap());
        s.tmpfs = vec!["/tmp:1M".parse().unwrap()];
        setup_root(&sys, &s, false).unwrap();
        let calls = sys.calls();
        let root = Path::new("/guests/t");
        let lock = position(&calls, |c| *c == Call::LockTree(root.into(), true));
        for at in ["dev", "proc", "sys", "run", "tmp", "srv"] {
            let point = position(
                &calls,
                |c| matches!(c, Call::MountPoint(p, _) if *p == root.join(at)),
            );
            assert!(point < lock, "{at}: its mount point first");
        }
        // /run/log is on our /run tmpfs: never made in the guest's tree.
        let made = |at: &str| {
            calls
                .iter()
                .position(|c| matches!(c, Call::MountPoint(p, _) if *p == root.join(at)))
        };
        assert!(made("run/log").unwrap() > mounts_at(&calls, "/guests/t/run"));
        // Nor is one on a --tmpfs.
        assert!(made("tmp/cache").unwrap() > mounts_at(&calls, "/guests/t/tmp"));
        for at in ["dev", "proc", "run", "tmp", "srv"] {
            assert!(mounts_at(&calls, &format!("/guests/t/{at}")) > lock, "{at}");
        }
        let tmp = &calls[mounts_at(&calls, "/guests/t/tmp")];
        assert!(
            matches!(tmp, Call::Mount { data: Some(d), .. } if d == "mode=1777,size=1048576"),
            "{tmp:?}"
        );
        // Without --read-only the tree is never locked read-only.
        let sys = Recorder::default();
        setup_root(&sys, &spec(), false).unwrap();
        assert!(!sys.calls().contains(&Call::LockTree(root.into(), true)));
    }

    #[test]
    fn minimal_dev_has_the_standard_nodes() {
        let sys = Recorder::default();
        setup_root(&sys, &spec(), false).unwrap();
        let nodes: Vec<_> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mknod(p, 0o666, _) => Some(p),
                _ => None,
            })
            .collect();
        for n in ["null", "zero", "full", "random", "urandom", "tty"] {
            assert!(nodes.contains(&Path::new("/guests/t/dev").join(n)), "{n}");
        }
    }

    #[test]
    fn privileges_drop_in_order() {
        let sys = Recorder::default();
        let mut s = spec();
        s.uid = 1000;
        s.gid = 1000;
        drop_privileges(&sys, &s, true).unwrap();
        let calls = sys.calls();
        let setuid = position(&calls, |c| *c == Call::Setresuid(1000));
        let setgid = position(&calls, |c| *c == Call::Setresgid(1000));
        let last_bound = calls
            .iter()
            .rposition(|c| matches!(c, Call::DropBoundingCap(_)))
            .unwrap();
        let nnp = position(&calls, |c| *c == Call::NoNewPrivs);
        let keyring = position(&calls, |c| *c == Call::NewSessionKeyring);
        let filter = position(&calls, |c| {
            *c == Call::SyscallFilter(crate::guest::SyscallFilter::Default)
        });
        assert!(last_bound < setgid && setgid < setuid && setuid < nnp);
        assert!(setuid < keyring);
        // The filter needs no_new_privs, and would refuse the keyring call.
        assert!(nnp < filter && keyring < filter);
        // Non-root keeps no capabilities at all.
        assert!(calls.contains(&Call::SetCaps(0)));
        assert!(calls.contains(&Call::DropBoundingCap(caps::number("sys_admin").unwrap())));
        assert!(!calls.contains(&Call::DropBoundingCap(caps::number("chown").unwrap())));
        assert_eq!(calls.last(), Some(&Call::ParentDeathSignal));
    }

    #[test]
    fn minus_one_is_refused_before_any_id_changes() {
        for (uid, gid, groups) in [
            (u32::MAX, 0, vec![]),
            (5, u32::MAX, vec![]),
            (5, 5, vec![u32::MAX]),
        ] {
            let sys = Recorder::default();
            let mut s = spec();
            (s.uid, s.gid, s.groups) = (uid, gid, groups);
            let e = drop_privileges(&sys, &s, false).unwrap_err().to_string();
            assert!(e.contains("no id"), "{e}");
            assert!(!sys.calls().iter().any(|c| matches!(
                c,
                Call::Setresuid(_) | Call::Setresgid(_) | Call::Setgroups(_)
            )));
        }
    }

    #[test]
    fn root_keeps_its_kept_set() {
        let sys = Recorder::default();
        let s = spec();
        drop_privileges(&sys, &s, false).unwrap();
        assert!(sys.calls().contains(&Call::SetCaps(s.caps)));
        assert!(!sys.calls().contains(&Call::ParentDeathSignal));
    }

    #[test]
    fn cgroup_namespace_and_hostname_before_the_root() {
        let sys = Recorder::default();
        prepare(&sys, &spec(), true, false, || Ok(())).unwrap();
        let calls = sys.calls();
        assert_eq!(calls[0], Call::Unshare(CloneFlags::CLONE_NEWCGROUP));
        assert_eq!(calls[1], Call::Hostname("t".into()));
        assert_eq!(calls[2], Call::LoopbackUp);
    }

    #[test]
    fn a_failing_step_stops_the_sequence_and_names_itself() {
        let sys = Recorder {
            fail_on: Some(|c| matches!(c, Call::PivotRoot(..))),
            ..Default::default()
        };
        let err = setup_root(&sys, &spec(), false).unwrap_err();
        assert!(err.to_string().contains("pivot_root"), "{err}");
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Umount2(..))));
    }

    #[test]
    fn mount_destinations_follow_the_guests_links_inside_its_root() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["var", "run", "srv", "proc"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        for (link, to) in [
            ("var/run", "/run"),
            ("srv/data", "../data2"),
            ("out", "../../../../../etc"),
            ("gone", "/not/yet"),
            ("l1", "l2"),
            ("l2", "/l1"),
            ("kernel", "/proc/sys"),
            ("sneaky", "srv/../proc"),
            ("top", "var/.."),
        ] {
            symlink(to, root.join(link)).unwrap();
        }
        let resolve = |dst: &str| resolve_in_root(root, Path::new(dst));
        for (dst, want) in [
            ("/var/run/x", "/run/x"),
            ("/srv/data/y", "/data2/y"),
            ("/out", "/etc"),
            ("/out/../../z", "/z"),
            ("/gone/deeper", "/not/yet/deeper"),
            ("/plain/dir", "/plain/dir"),
            ("/var/./run", "/run"),
            // No link followed: as given (a bind over /proc/cpuinfo, as
            // LXCFS does, is the operator's to ask for).
            ("/proc/cpuinfo", "/proc/cpuinfo"),
        ] {
            assert_eq!(resolve(dst).unwrap(), Path::new(want), "{dst}");
        }
        let err = resolve("/l1/x").unwrap_err().to_string();
        assert!(
            err.contains("/l1/x") && err.contains("more than 40"),
            "{err}"
        );
        for dst in ["/kernel/x", "/sneaky"] {
            let err = resolve(dst).unwrap_err().to_string();
            assert!(err.contains(dst) && err.contains("kernel's"), "{err}");
        }
        for dst in ["/top", "/out/../.."] {
            let err = resolve(dst).unwrap_err().to_string();
            assert!(
                err.contains(dst) && err.contains("guest's / itself"),
                "{err}"
            );
        }
    }
}
