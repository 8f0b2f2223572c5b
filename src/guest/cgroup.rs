//! Resource limits through cgroups, on v2 (one unified hierarchy, limits
//! where its controllers are enabled) and on v1 (one hierarchy per
//! controller). Each limit goes to v2 if v2 offers its controller, else to
//! the v1 hierarchy of that controller; if neither exists the guest is not
//! started and the error says which limit and why.
//!
//! A guest's group is `unifs/NAME` below each hierarchy's root. [`plan`] is
//! pure (unit-tested against made-up hosts); [`Cgroup::create`] applies it.

use super::devices::Device;
use super::{Error, Limits, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cgroup hierarchies this host has mounted.
#[derive(Debug, Clone, Default)]
pub struct Hierarchies {
    pub v2: Option<V2>,
    /// v1 controller name → its hierarchy's mount point.
    pub v1: BTreeMap<String, PathBuf>,
    /// Every v1 hierarchy's mount point, named ones (`name=systemd`) and
    /// those of controllers unifs sets no limit in included: a guest gets a
    /// group in each (see [`plan`] with `track`).
    pub v1_all: Vec<PathBuf>,
    /// The v1 cpuset hierarchy: a new group there has no CPUs until given some.
    pub cpuset: Option<PathBuf>,
    /// Why a hierarchy this process is in cannot hold a guest (none usable
    /// is mounted, or it is read-only), with what to do: see [`Hierarchies::check`].
    pub unusable: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct V2 {
    pub mount: PathBuf,
    /// What the root's `cgroup.controllers` offers.
    pub controllers: Vec<String>,
}

impl Hierarchies {
    pub fn detect() -> Hierarchies {
        // Unreadable: no hierarchy is found.
        let mounts = crate::fs::mountinfo::read().unwrap_or_default();
        let mut h = Hierarchies::default();
        // (controllers or name, mount point) of each v1 hierarchy used.
        let mut v1_opts: Vec<(Vec<String>, PathBuf)> = Vec::new();
        for m in mounts.into_iter().filter(really_mounted) {
            let (mount, opts) = (m.point, m.super_opts.as_str());
            match m.fstype.as_str() {
                "cgroup2" if h.v2.is_none() => {
                    let controllers = std::fs::read_to_string(mount.join("cgroup.controllers"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_string)
                        .collect();
                    h.v2 = Some(V2 { mount, controllers });
                }
                "cgroup" => {
                    if v1_opts.iter().any(|(_, p)| *p == mount) {
                        continue;
                    }
                    v1_opts.push((opts.split(',').map(str::to_string).collect(), mount.clone()));
                    h.v1_all.push(mount.clone());
                    if opts.split(',').any(|o| o == "cpuset") {
                        h.cpuset = Some(mount.clone());
                    }
                    for opt in opts.split(',') {
                        if ["memory", "pids", "cpu", "blkio", "freezer"].contains(&opt) {
                            h.v1.entry(opt.to_string()).or_insert_with(|| mount.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        h.unusable = unusable(&own, h.v2.as_ref(), &v1_opts);
        h
    }

    /// An error saying why the guest cannot be placed in its groups, before
    /// anything is made: a hierarchy this process is in with no usable
    /// mount would leave the guest in the launcher's group there (outside
    /// its limits, and writable by guest root), and a read-only one fails
    /// half-way.
    pub fn check(&self) -> Result<()> {
        match self.unusable.first() {
            Some(why) => Err(Error::Cgroup(why.clone())),
            None => Ok(()),
        }
    }
}

/// Whether mountinfo's cgroup mount `m` is what its mount point shows:
/// not one hidden under a later mount (a tmpfs over /sys/fs/cgroup/memory,
/// whose mkdir and writes would go to the tmpfs instead).
fn really_mounted(m: &crate::fs::mountinfo::Mount) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    let magic = match m.fstype.as_str() {
        "cgroup" => CGROUP_SUPER_MAGIC,
        "cgroup2" => CGROUP2_SUPER_MAGIC,
        _ => return false,
    };
    let same_dev = std::fs::metadata(&m.point).is_ok_and(|md| {
        let (major, minor) = (
            nix::sys::stat::major(md.dev()),
            nix::sys::stat::minor(md.dev()),
        );
        m.dev == format!("{major}:{minor}")
    });
    same_dev && statfs(&m.point).is_ok_and(|s| s.filesystem_type() == magic)
}

/// What is wrong with the hierarchies listed in `own` (/proc/self/cgroup):
/// one without a usable mount (v1: one whose options name all its
/// controllers), or with a read-only one, each with the command that mends
/// it. v2 at its root with no mount is no error: a v1 host lists v2 even
/// where nothing mounts it, and nobody's limits are there.
fn unusable(own: &str, v2: Option<&V2>, v1: &[(Vec<String>, PathBuf)]) -> Vec<String> {
    let mut found = Vec::new();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(names), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mount = if names.is_empty() {
            match v2 {
                Some(v2) => v2.mount.clone(),
                None if path == "/" => continue,
                None => {
                    found.push(
                        "the cgroup v2 hierarchy this process is in is not mounted (or is \
                         hidden under another mount): mount it (mount -t cgroup2 cgroup2 \
                         /sys/fs/cgroup/unified)"
                            .to_string(),
                    );
                    continue;
                }
            }
        } else {
            let wanted: Vec<&str> = names.split(',').collect();
            let found_at = v1
                .iter()
                .find(|(opts, _)| wanted.iter().all(|w| opts.iter().any(|o| o == w)));
            match found_at {
                Some((_, mount)) => mount.clone(),
                None => {
                    let dir = names.trim_start_matches("name=");
                    let opts = match names.starts_with("name=") {
                        true => format!("none,{names}"),
                        false => names.to_string(),
                    };
                    found.push(format!(
                        "the cgroup v1 hierarchy {names} this process is in is not mounted (or \
                         is hidden under another mount): mount it (mount -t cgroup -o {opts} \
                         cgroup /sys/fs/cgroup/{dir})"
                    ));
                    continue;
                }
            }
        };
        let ro = nix::sys::statvfs::statvfs(&mount)
            .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        if ro {
            found.push(format!(
                "the cgroup hierarchy at {0} is mounted read-only: make it writable \
                 (mount -o remount,bind,rw {0})",
                mount.display()
            ));
        }
    }
    found
}

/// One step of creating a group.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Mkdir(PathBuf),
    /// Write `value` into the first of `files` that exists; none is an error
    /// naming `limit`. One file means that file must take the value.
    Write {
        limit: &'static str,
        files: Vec<PathBuf>,
        value: String,
    },
    /// Like `Write`, but a missing file only logs a warning: a refinement
    /// (no swap accounting) rather than the limit itself.
    WriteIfPresent {
        files: Vec<PathBuf>,
        value: String,
    },
    /// Writes what `from` holds into `to` (a v1 cpuset group's CPUs and
    /// memory nodes, from its parent); a missing `from` is skipped.
    Copy {
        from: PathBuf,
        to: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The groups the guest's processes join, one per hierarchy used.
    pub groups: Vec<PathBuf>,
}

/// Control files and the values to write, by file name.
type FileValues = Vec<(&'static str, String)>;

/// The kernel names of what a limit needs: (v2 controller, v1 controller).
fn controllers(limit: &str) -> (&'static str, &'static str) {
    match limit {
        "--memory" => ("memory", "memory"),
        "--pids" => ("pids", "pids"),
        "--cpus" => ("cpu", "cpu"),
        _ => ("io", "blkio"),
    }
}

/// How many groups a guest may have in its v2 group, its own included
/// (systemd makes one per unit and slice), and how many levels deep.
pub const V2_MAX_DESCENDANTS: u32 = 2048;
pub const V2_MAX_DEPTH: u32 = 12;

/// Works out the groups and writes for `limits`. With `track`, the guest also
/// gets a v2 group (for `cgroup.kill`) and a group in every v1 hierarchy (v1
/// memory and pids for `status` to report use): a guest roots its cgroup
/// namespace where it is, so in any hierarchy where it stayed in the
/// launcher's group, guest root (in a user namespace of its own) could mount
/// that hierarchy and write the host group's files (v1 has no namespace
/// delegation check: freezer.state, cpu and cpuset settings).
pub fn plan(h: &Hierarchies, name: &str, limits: &Limits, track: bool) -> Result<Plan> {
    const CFS_PERIOD: u64 = 100_000;
    let mut wanted: Vec<(&'static str, FileValues, FileValues)> = Vec::new();
    if let Some(m) = limits.memory {
        wanted.push((
            "--memory",
            vec![
                ("memory.max", m.to_string()),
                ("memory.swap.max?", "0".into()),
            ],
            vec![
                ("memory.limit_in_bytes", m.to_string()),
                ("memory.memsw.limit_in_bytes?", m.to_string()),
            ],
        ));
    }
    if let Some(p) = limits.pids {
        wanted.push((
            "--pids",
            vec![("pids.max", p.to_string())],
            vec![("pids.max", p.to_string())],
        ));
    }
    if let Some(c) = limits.cpus {
        // Limits::check keeps it in the kernel's range (1 ms and up).
        let quota = ((c * CFS_PERIOD as f64).round() as u64).max(1000);
        wanted.push((
            "--cpus",
            vec![("cpu.max", format!("{quota} {CFS_PERIOD}"))],
            vec![
                ("cpu.cfs_period_us", CFS_PERIOD.to_string()),
                ("cpu.cfs_quota_us", quota.to_string()),
            ],
        ));
    }
    if let Some(w) = limits.io_weight {
        wanted.push((
            "--io-weight",
            vec![("io.weight|io.bfq.weight", w.to_string())],
            vec![("blkio.weight|blkio.bfq.weight", w.to_string())],
        ));
    }

    let rel = Path::new("unifs").join(name);
    let mut v2_controllers: Vec<&str> = Vec::new();
    let mut v2_writes = Vec::new();
    let mut v1_groups: BTreeMap<PathBuf, Vec<Step>> = BTreeMap::new();
    for (limit, v2_files, v1_files) in wanted {
        let (c2, c1) = controllers(limit);
        if let Some(v2) =
            h.v2.as_ref()
                .filter(|v2| v2.controllers.iter().any(|c| c == c2))
        {
            v2_controllers.push(c2);
            let dir = v2.mount.join(&rel);
            v2_writes.extend(writes(limit, &dir, v2_files));
        } else if let Some(mount) = h.v1.get(c1) {
            let dir = mount.join(&rel);
            let steps = writes(limit, &dir, v1_files);
            v1_groups.entry(mount.clone()).or_default().extend(steps);
        } else {
            let v2_note = match &h.v2 {
                Some(v2) => format!(
                    "the cgroup v2 hierarchy at {} does not offer the {c2} controller (it offers: {})",
                    v2.mount.display(),
                    if v2.controllers.is_empty() { "none".to_string() } else { v2.controllers.join(" ") }
                ),
                None => "no cgroup v2 hierarchy is mounted".to_string(),
            };
            return Err(Error::Limit {
                limit,
                reason: format!("{v2_note}, and no cgroup v1 {c1} hierarchy is mounted"),
            });
        }
    }
    if track {
        for mount in &h.v1_all {
            v1_groups.entry(mount.clone()).or_default();
        }
    }

    let mut plan = Plan {
        steps: Vec::new(),
        groups: Vec::new(),
    };
    if let Some(v2) = &h.v2 {
        if track || !v2_controllers.is_empty() {
            // cgroups(7) v2: a controller must be enabled in every ancestor's
            // cgroup.subtree_control to be usable in a child.
            let enable: String = v2_controllers.iter().map(|c| format!("+{c} ")).collect();
            let parent = v2.mount.join("unifs");
            plan.steps.push(Step::Mkdir(parent.clone()));
            if !enable.is_empty() {
                for dir in [&v2.mount, &parent] {
                    plan.steps.push(Step::Write {
                        limit: "cgroup set-up",
                        files: vec![dir.join("cgroup.subtree_control")],
                        value: enable.trim_end().to_string(),
                    });
                }
            }
            let dir = v2.mount.join(&rel);
            plan.steps.push(Step::Mkdir(dir.clone()));
            plan.steps.extend(v2_writes);
            // The guest gets its group below this one mounted writable (for
            // systemd): bound how many groups it makes (each costs kernel
            // memory no v1 limit counts) and how deep (paths past PATH_MAX
            // could not be removed by name).
            for (file, max) in [
                ("cgroup.max.descendants", V2_MAX_DESCENDANTS),
                ("cgroup.max.depth", V2_MAX_DEPTH),
            ] {
                plan.steps.push(Step::Write {
                    limit: "cgroup set-up",
                    files: vec![dir.join(file)],
                    value: max.to_string(),
                });
            }
            plan.groups.push(dir);
        }
    }
    for (mount, steps) in v1_groups {
        let dir = mount.join(&rel);
        let parent = mount.join("unifs");
        plan.steps.push(Step::Mkdir(parent.clone()));
        if h.cpuset.as_ref() == Some(&mount) {
            plan.steps.extend(cpuset_init(&mount, &parent));
        }
        plan.steps.push(Step::Mkdir(dir.clone()));
        plan.steps.extend(steps);
        plan.groups.push(dir);
    }
    Ok(plan)
}

/// cgroups(7) v1 cpuset: a new group has no CPUs or memory nodes, and no
/// process can join it. `unifs/` gets the root's; with clone_children set,
/// the groups made below it (each guest's, and its leaf) copy their parent's.
fn cpuset_init(mount: &Path, parent: &Path) -> Vec<Step> {
    let mut steps: Vec<Step> = ["cpuset.cpus", "cpuset.mems"]
        .iter()
        .map(|f| Step::Copy {
            from: mount.join(f),
            to: parent.join(f),
        })
        .collect();
    steps.push(Step::Write {
        limit: "cgroup set-up",
        files: vec![parent.join("cgroup.clone_children")],
        value: "1".into(),
    });
    steps
}

/// The kernel's refusal of a limit, with what to do about it.
fn refused(limit: &'static str, file: &Path, value: &str, e: std::io::Error) -> Error {
    let dir = file.parent().unwrap_or(file);
    let used = [
        "memory.current",
        "memory.usage_in_bytes",
        "memory.memsw.usage_in_bytes",
    ]
    .iter()
    .find_map(|f| {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    });
    let hint = match (limit, e.raw_os_error(), used) {
        ("--memory", Some(libc::EBUSY), Some(used)) => format!(
            " (the guest uses {used} bytes and the kernel could not reclaim enough: free \
             memory in it, or choose a higher limit; no limit was changed)"
        ),
        _ => " (no limit was changed)".to_string(),
    };
    Error::Limit {
        limit,
        reason: format!("writing {value:?} to {}: {e}{hint}", file.display()),
    }
}

/// cgroups v1 cpu: no group may have a larger share than the one above it,
/// and the guest may have set its own groups' quotas (a cgroup mount in a
/// user namespace of its own). Before the quota in `file` goes down to
/// `value`, every group below it is brought under it, deepest first; each
/// change goes into `done` (file, old value).
fn clamp_v1_quotas_below(
    file: &Path,
    value: &str,
    done: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let Some(dir) = file.parent() else {
        return Ok(());
    };
    let read = |d: &Path, f: &str| -> Option<i64> {
        std::fs::read_to_string(d.join(f)).ok()?.trim().parse().ok()
    };
    let (Ok(quota), Some(period)) = (value.parse::<i64>(), read(dir, "cpu.cfs_period_us")) else {
        return Ok(());
    };
    if quota <= 0 {
        return Ok(());
    }
    for below in subtree(dir).into_iter().skip(1).rev() {
        let (Some(q), Some(p)) = (
            read(&below, "cpu.cfs_quota_us"),
            read(&below, "cpu.cfs_period_us"),
        ) else {
            continue;
        };
        // Shares compared as quota/period, as the kernel does.
        if q > 0 && q as i128 * period as i128 > quota as i128 * p as i128 {
            // Under the kernel's 1 ms floor for this group's period: no
            // quota of its own (-1), the group above bounds it.
            let scaled = (quota as i128 * p as i128) / period as i128;
            let clamped = if scaled < 1000 { -1 } else { scaled as i64 };
            let at = below.join("cpu.cfs_quota_us");
            std::fs::write(&at, clamped.to_string()).map_err(|e| Error::Limit {
                limit: "--cpus",
                reason: format!("lowering {} to {clamped} first: {e}", at.display()),
            })?;
            done.push((at, q.to_string()));
        }
    }
    Ok(())
}

/// cgroups v1 memory: the memory+swap limit may never be below the memory
/// limit, so a raise writes it first (a new group's is unlimited, so
/// `create` writes the memory limit first).
fn memsw_first_when_raising(steps: &mut [Step]) {
    for i in 1..steps.len() {
        let (before, after) = steps.split_at(i);
        let (Step::Write { files, value, .. }, Step::WriteIfPresent { files: sw, .. }) =
            (&before[i - 1], &after[0])
        else {
            continue;
        };
        let is = |f: &[PathBuf], name: &str| f.len() == 1 && f[0].ends_with(name);
        if !is(files, "memory.limit_in_bytes") || !is(sw, "memory.memsw.limit_in_bytes") {
            continue;
        }
        let now: Option<u64> = std::fs::read_to_string(&files[0])
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let new: Option<u64> = value.parse().ok();
        if matches!((now, new), (Some(now), Some(new)) if new > now) {
            steps.swap(i - 1, i);
        }
    }
}

/// `name` may list alternatives (`a|b`: the first that exists) and end in `?`
/// (optional refinement).
fn writes(limit: &'static str, dir: &Path, files: Vec<(&'static str, String)>) -> Vec<Step> {
    files
        .into_iter()
        .map(|(name, value)| {
            let optional = name.ends_with('?');
            let files = name
                .trim_end_matches('?')
                .split('|')
                .map(|f| dir.join(f))
                .collect();
            if optional {
                Step::WriteIfPresent { files, value }
            } else {
                Step::Write {
                    limit,
                    files,
                    value,
                }
            }
        })
        .collect()
}

/// The group below each of a guest's groups that its processes join, and
/// where its cgroup namespace is rooted: the limits, on the group itself,
/// lie outside what the guest sees. Guest root can mount cgroupfs in a user
/// namespace of its own, and would write them at its namespace's root.
const LEAF: &str = "guest";

/// The group below each of a guest's groups that its overlay daemon joins
/// before it serves: the limits on the group above cover the daemon's work
/// for the guest too, while `ps`, `status`'s process count and `stop`'s
/// kill of the guest look at [`LEAF`] alone.
const DAEMON_LEAF: &str = "mount";

/// How many times [`Cgroup::raise_oom_scores`] lists a guest's processes
/// anew for those forked meanwhile.
const RAISE_PASSES: usize = 20;

/// [`Cgroup::raise_oom_scores`]'s passes over the pids `list` gives:
/// `write` is called on the /proc directory of each new one still listed
/// after it was opened (a pid that ended and was reused is left alone).
fn rescore(
    list: impl Fn(&Cgroup) -> Vec<i32>,
    cgroup: &Cgroup,
    write: impl Fn(&std::fs::File) -> std::io::Result<bool>,
) -> (usize, Vec<(i32, std::io::Error)>) {
    let mut seen = std::collections::HashSet::new();
    let (mut done, mut failed) = (0, Vec::new());
    for _ in 0..RAISE_PASSES {
        let new: Vec<i32> = list(cgroup)
            .into_iter()
            .filter(|p| seen.insert(*p))
            .collect();
        if new.is_empty() {
            break;
        }
        let opened: Vec<_> = new
            .into_iter()
            .filter_map(|pid| Some((pid, std::fs::File::open(format!("/proc/{pid}")).ok()?)))
            .collect();
        let listed = list(cgroup);
        for (pid, dir) in opened.iter().filter(|(p, _)| listed.contains(p)) {
            match write(dir) {
                Ok(true) => done += 1,
                Ok(false) => {}
                // Ended since it was listed.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) => {}
                Err(e) => failed.push((*pid, e)),
            }
        }
    }
    (done, failed)
}

/// How long the overlay daemon may take to end after its root was
/// unmounted before what is left in its leaf is killed.
const DAEMON_EXIT: Duration = Duration::from_secs(5);

/// How long [`Cgroup::end_daemon`] waits for the daemon's leaf once it
/// killed what was left in it.
const DAEMON_KILLED: Duration = Duration::from_secs(2);

/// The guest's device policy in its v1 `devices` group, if it has one:
/// every device denied, then its own /dev's and its `devices` (`--device`)
/// allowed ([`super::devices`]). On the [`LEAF`], so that every process of
/// the guest has it, `guest exec`'s and the groups it makes too; and on the
/// group above it, the bound: a guest given `sys_admin` that mounts the
/// devices hierarchy (its root is the leaf) can allow itself again only
/// what the group allows (the kernel checks the parent's). Not /dev/fuse:
/// the overlay daemon, which opens it, stays out of this hierarchy
/// ([`Cgroup::open_daemon_procs`]), else the group would allow it and so
/// the guest. The kernel refuses `a` in a group with children, so the
/// empty ones an earlier run left are removed first (a daemon an older
/// build left in its leaf here is moved out). Without that hierarchy no
/// device is refused, and a read-only one cannot be: guest root opens a
/// node for writing whatever its mode, and unifs has no cgroup v2 device
/// filter. `name` is the group's: the guest's name, `@DIGEST` after it
/// for a named guest of another run dir.
fn device_policy(name: &str, groups: &[PathBuf], devices: &[Device]) -> Result<()> {
    let Some(group) = groups.iter().find(|g| is_devices_group(g)) else {
        return match devices.iter().find(|d| d.read_only) {
            Some(d) => Err(Error::Limit {
                limit: "--device",
                reason: format!(
                    "{}:ro: read-only needs the cgroup v1 devices controller, which this \
                     host has not mounted (guest root could write to the node whatever \
                     its mode): give it without :ro, or mount the devices hierarchy",
                    d.path.display()
                ),
            }),
            None => Ok(()),
        };
    };
    move_out_daemons(group);
    // Left by an earlier run: the empty ones go (a group with processes
    // stays, and the deny below says so).
    for below in subtree(group).into_iter().skip(1).rev() {
        let _ = std::fs::remove_dir(below);
    }
    let denied = deny_all_but(group, devices)?;
    let leaf = group.join(LEAF);
    match std::fs::create_dir(&leaf) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::io("creating cgroup", leaf, e))
        }
        _ => {}
    }
    // The leaf is denied what its group is: said once, for the group.
    deny_all_but(&leaf, devices)?;
    if !denied.is_empty() {
        let guest = name.split('@').next().unwrap_or(name);
        let nodes: Vec<String> = denied
            .iter()
            .map(|r| super::devices::rule_node(r))
            .collect();
        tracing::warn!(
            "guest {guest}: the devices group unifs runs in (a container's) denies {}, \
             so the guest does without: allow them to the container to give them to the \
             guest",
            nodes.join(", ")
        );
    }
    Ok(())
}

/// Whether `dir` is a group of the v1 devices hierarchy.
fn is_devices_group(dir: &Path) -> bool {
    dir.join("devices.allow").exists()
}

/// Moves what is left in `group`'s [`DAEMON_LEAF`] of the devices
/// hierarchy (an overlay daemon an older build put there, one that
/// outlived its mount) up to the group's parent, `unifs/`, which has
/// no policy: the policy cannot be set over a group with processes, and a
/// daemon needs /dev/fuse. Its other groups' `mount` leaves still hold it
/// (`guest stop` ends it there).
fn move_out_daemons(group: &Path) {
    let Some(parent) = group.parent() else {
        return;
    };
    for pid in procs_in(subtree(&group.join(DAEMON_LEAF)).into_iter()) {
        if let Err(e) = std::fs::write(parent.join("cgroup.procs"), pid.to_string()) {
            tracing::warn!(
                "moving process {pid} ({}) out of {}: {e}",
                command_shown(pid),
                group.join(DAEMON_LEAF).display()
            );
        }
    }
}

/// Writes into the v1 devices group `dir`: `a` denied, then the guest's
/// own rules and each of `devices`. Returns the own rules a group above
/// denies (unifs in a container): the guest does without, as its host.
fn deny_all_but(dir: &Path, devices: &[Device]) -> Result<Vec<String>> {
    let write = |file: &str, rule: &str| {
        let at = dir.join(file);
        std::fs::write(&at, rule).map_err(|e| (at, e))
    };
    // A group just removed below stays online a moment after its rmdir
    // (the kernel takes it offline asynchronously): a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(2);
    let deny_all = || loop {
        match write("devices.deny", "a") {
            Err((_, e))
                if e.raw_os_error() == Some(libc::EINVAL)
                    && subtree(dir).len() == 1
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            done => return done,
        }
    };
    deny_all().map_err(|(at, e)| {
        let why = match e.raw_os_error() {
            Some(libc::EINVAL) => {
                let left: Vec<String> = subtree(dir)
                    .into_iter()
                    .skip(1)
                    .flat_map(|g| {
                        procs_in(std::iter::once(g.clone()))
                            .into_iter()
                            .map(move |p| {
                                format!("{p} ({}) in {}", command_shown(p), crate::sys::shown(&g))
                            })
                    })
                    .collect();
                format!(
                    " (it has groups below it, left by an earlier run, with processes in \
                     them: {}; end those (`kill PID`), then start it again: the start \
                     removes the empty groups)",
                    left.join(", ")
                )
            }
            _ => String::new(),
        };
        Error::Cgroup(format!(
            "denying the guest every device but its own: writing \"a\" to {}: {e}{why}",
            at.display()
        ))
    })?;
    let mut denied = Vec::new();
    for rule in super::devices::own_rules() {
        match write("devices.allow", &rule) {
            Ok(()) => {}
            Err((_, e)) if e.raw_os_error() == Some(libc::EPERM) => denied.push(rule),
            Err((at, e)) => {
                return Err(Error::Cgroup(format!(
                    "allowing the guest its own devices: writing {rule:?} to {}: {e}",
                    at.display()
                )))
            }
        }
    }
    for d in devices {
        let rule = d.cgroup_rule();
        write("devices.allow", &rule).map_err(|(at, e)| {
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => " (a group above it denies that device)",
                _ => "",
            };
            Error::Limit {
                limit: "--device",
                reason: format!(
                    "{}: writing {rule:?} to {}: {e}{why}",
                    d.path.display(),
                    at.display()
                ),
            }
        })?;
    }
    Ok(denied)
}

/// The lock [`Cgroup::create`] took on the groups it made, held by the
/// creating process (and a keeper forked from it) until it ends; never
/// dropped, as a drop would unlock it for the keeper too.
static CREATOR_LOCK: std::sync::Mutex<Option<Flock<std::fs::File>>> = std::sync::Mutex::new(None);

/// A guest's groups, once created.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Cgroup {
    pub groups: Vec<PathBuf>,
}

impl Cgroup {
    /// Creates the groups, applies the limits and the device policy; on
    /// failure removes what it made and says which limit could not be
    /// applied.
    pub fn create(name: &str, limits: &Limits, devices: &[Device], track: bool) -> Result<Cgroup> {
        let h = Hierarchies::detect();
        h.check()?;
        let plan = plan(&h, name, limits, track)?;
        sweep_dead_runs(&plan.groups);
        let cg = Cgroup {
            groups: plan.groups.clone(),
        };
        if let Err(e) = apply(&plan.steps).and_then(|()| device_policy(name, &cg.groups, devices)) {
            cg.remove();
            return Err(e);
        }
        // Locked from now on, not only once the keeper runs: a sweep in
        // another PID namespace sees no /proc/PID for this run and took
        // its groups for a dead run's while the overlay was mounted (a
        // start's "creating cgroup …/guest: ENOENT").
        if let Some(lock) = cg.new_lock() {
            *CREATOR_LOCK.lock().unwrap_or_else(|e| e.into_inner()) = Some(lock);
        }
        Ok(cg)
    }

    /// A lock on the run's first group, for its keeper to hold while it
    /// lives: the sweep leaves the groups of a dead run to a keeper that
    /// holds it ([`keeper_at_work`]). The one [`Cgroup::create`] took in
    /// the process the keeper was forked from, if any (the same open file
    /// description: a new one would conflict with it); else a new one.
    /// None without groups.
    pub fn keeper_lock(&self) -> Option<Flock<std::fs::File>> {
        let mut created = CREATOR_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        created.take().or_else(|| self.new_lock())
    }

    fn new_lock(&self) -> Option<Flock<std::fs::File>> {
        let dir = open_dir(self.groups.first()?)?;
        Flock::lock(dir, FlockArg::LockExclusiveNonblock).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// True when the guest's devices are limited to its own (a v1
    /// `devices` group, see [`device_policy`]).
    pub fn limits_devices(&self) -> bool {
        self.groups.iter().any(|g| is_devices_group(g))
    }

    /// What is missing of the device policy a start sets now in the
    /// running guest's devices group ([`device_policy`]), which a build
    /// before it left: none at all (before 2026-12-05: any node the guest
    /// makes opens), or /dev/fuse allowed (a guest with `sys_admin` can
    /// allow it to itself). A start sets the policy; `update` does not.
    pub fn outdated_device_policy(&self, devices: &[Device]) -> Option<&'static str> {
        let group = self.groups.iter().find(|g| is_devices_group(g))?;
        let listed = std::fs::read_to_string(group.join("devices.list")).ok()?;
        let fuse_given = devices.iter().any(|d| (d.major, d.minor) == (10, 229));
        if listed.lines().any(|l| l == "a *:* rwm") {
            Some("it has no device policy: any device it makes a node of opens")
        } else if !fuse_given && listed.lines().any(|l| l == "c 10:229 rwm") {
            Some("its group allows /dev/fuse, which it can allow to itself given sys_admin")
        } else {
            None
        }
    }

    /// True when one of the groups is in a cgroup v2 hierarchy: the guest's
    /// cgroup namespace then has a v2 root of its own, which can be mounted
    /// for it without showing any group of the host.
    pub fn has_v2_group(&self) -> bool {
        self.groups.iter().any(|g| {
            nix::sys::statfs::statfs(g)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        })
    }

    /// The groups a named guest `name` always gets (see [`plan`] with
    /// `track`), without creating anything: where its processes are found
    /// when no runtime record names them.
    pub fn tracked(name: &str) -> Cgroup {
        Cgroup::planned(name, &Limits::default())
    }

    /// The groups a named guest `name` with `limits` gets, without creating
    /// anything.
    pub fn planned(name: &str, limits: &Limits) -> Cgroup {
        let groups = plan(&Hierarchies::detect(), name, limits, true)
            .map(|p| p.groups)
            .unwrap_or_default();
        Cgroup { groups }
    }

    /// Moves `pid` (and so its future children) into every group, in
    /// fact into the [`LEAF`] below it.
    pub fn add(&self, pid: i32) -> Result<()> {
        for g in &self.groups {
            let leaf = g.join(LEAF);
            match std::fs::create_dir(&leaf) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::io("creating cgroup", leaf, e))
                }
                _ => {}
            }
            let procs = leaf.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string())
                .map_err(|e| Error::io("joining cgroup", procs, e))?;
        }
        Ok(())
    }

    /// Each group's [`DAEMON_LEAF`]'s `cgroup.procs` (made if need be),
    /// open for writing: the overlay daemon joins them (see
    /// [`crate::guest::sys::join_cgroups`]) before it serves. Not in the
    /// devices hierarchy: there the daemon stays in its launcher's group,
    /// as it opens /dev/fuse, which the guest's group must not allow (see
    /// [`device_policy`]); that hierarchy has no limit to put it under.
    pub fn open_daemon_procs(&self) -> Result<Vec<std::fs::File>> {
        self.groups
            .iter()
            .filter(|g| !is_devices_group(g))
            .map(|g| {
                let leaf = g.join(DAEMON_LEAF);
                match std::fs::create_dir(&leaf) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(Error::io("creating cgroup", leaf, e))
                    }
                    _ => {}
                }
                let procs = leaf.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&procs)
                    .map_err(|e| Error::io("opening cgroup", procs, e))
            })
            .collect()
    }

    /// Each group's `cgroup.procs`, open for writing, for [`Cgroup::join`]
    /// by a process that will no longer see them (`guest exec`'s command):
    /// the leaf's, or the group's own where it has no leaf (a guest started
    /// by a build before e600671, whose processes are in the group itself).
    pub fn open_procs(&self) -> Result<Vec<std::fs::File>> {
        self.groups
            .iter()
            .map(|g| {
                let leaf = g.join(LEAF);
                let procs = match leaf.is_dir() {
                    true => leaf.join("cgroup.procs"),
                    false => g.join("cgroup.procs"),
                };
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&procs)
                    .map_err(|e| Error::io("opening cgroup", procs, e))
            })
            .collect()
    }

    /// Moves the calling process into the groups opened by
    /// [`Cgroup::open_procs`] (`0` names the writer).
    pub fn join(procs: Vec<std::fs::File>) -> Result<()> {
        use std::io::Write;
        for mut f in procs {
            f.write_all(b"0")
                .map_err(|e| Error::Setup(format!("joining the guest's cgroups: {e}")))?;
        }
        Ok(())
    }

    /// Changes the limits of a running guest (`guest update`): the writes
    /// [`Cgroup::create`] makes for `limits`, into the groups the guest
    /// has, all or none: a write the kernel refuses (memory the guest uses
    /// and cannot give back) puts back those made before it. A limit
    /// needing a group it was started without is an error. Only the
    /// groups the new values go to are needed: a guest started by a build
    /// before d553d9e has groups only in the hierarchies of its limits.
    pub fn update(&self, name: &str, limits: &Limits) -> Result<()> {
        let plan = plan(&Hierarchies::detect(), name, limits, false)?;
        if let Some(missing) = plan.groups.iter().find(|g| !self.groups.contains(g)) {
            return Err(Error::Limit {
                limit: "the new limits",
                reason: format!(
                    "they need the group {}, which the running guest has none of: \
                     change its config and restart it",
                    missing.display()
                ),
            });
        }
        let (set_up, mut writes): (Vec<Step>, Vec<Step>) = plan.steps.into_iter().partition(|s| {
            !matches!(s, Step::Write { limit, .. } if !limit.starts_with("cgroup"))
                && !matches!(s, Step::WriteIfPresent { .. })
        });
        apply(&set_up)?;
        // Every file there before anything is written; memory last: on v2 a
        // lower memory.max is taken at once, by OOM-killing the guest's
        // processes if need be, which no later rollback could undo.
        if let Some(Step::Write { limit, files, .. }) = writes
            .iter()
            .find(|s| matches!(s, Step::Write { files, .. } if !files.iter().any(|f| f.exists())))
        {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            return Err(Error::Limit {
                limit,
                reason: format!("the kernel offers none of {}", names.join(", ")),
            });
        }
        let is_memory = |s: &Step| match s {
            Step::Write { limit, .. } => *limit == "--memory",
            _ => matches!(s, Step::WriteIfPresent { .. }),
        };
        writes.sort_by_key(is_memory);
        memsw_first_when_raising(&mut writes);
        let mut done: Vec<(PathBuf, String)> = Vec::new();
        let result = writes.iter().try_for_each(|step| {
            let (limit, files, value, required) = match step {
                Step::Write {
                    limit,
                    files,
                    value,
                } => (*limit, files, value, true),
                Step::WriteIfPresent { files, value } => ("--memory", files, value, false),
                _ => return Ok(()),
            };
            let Some(file) = files.iter().find(|f| f.exists()) else {
                return match required {
                    true => apply(std::slice::from_ref(step)),
                    false => Ok(()),
                };
            };
            // The first line: io.weight lists per-device weights after its
            // "default N", which it takes back alone.
            let old = std::fs::read_to_string(file).unwrap_or_default();
            let old = old.lines().next().unwrap_or_default();
            if file.ends_with("cpu.cfs_quota_us") {
                clamp_v1_quotas_below(file, value, &mut done)?;
            }
            std::fs::write(file, value).map_err(|e| refused(limit, file, value, e))?;
            done.push((file.clone(), old.trim().to_string()));
            Ok(())
        });
        if result.is_err() {
            for (file, old) in done.iter().rev() {
                if let Err(e) = std::fs::write(file, old) {
                    tracing::warn!("putting {old:?} back into {}: {e}", file.display());
                }
            }
        }
        result
    }

    /// Every process of the guest: in its groups, and in groups below them
    /// (a guest with its own cgroup mount may move processes there), but
    /// for its overlay daemon's ([`DAEMON_LEAF`]).
    pub fn pids(&self) -> Vec<i32> {
        let guest = self.groups.iter().flat_map(|g| {
            let daemon = g.join(DAEMON_LEAF);
            subtree(g)
                .into_iter()
                .filter(move |d| !d.starts_with(&daemon))
        });
        procs_in(guest)
    }

    /// The processes of the guest's overlay daemon (its [`DAEMON_LEAF`]s).
    pub fn daemon_pids(&self) -> Vec<i32> {
        procs_in(
            self.groups
                .iter()
                .flat_map(|g| subtree(&g.join(DAEMON_LEAF))),
        )
    }

    /// Whether the guest's overlay daemon could not be shielded from the
    /// OOM killer: a process in its leaf at an `oom_score_adj` above -999
    /// (unifs lacked CAP_SYS_RESOURCE). False with no daemon (a bind root):
    /// then the guest's processes have nothing to stand above.
    pub fn daemon_unshielded(&self) -> bool {
        self.daemon_pids().iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .is_some_and(|score| score > -999)
        })
    }

    /// Raises each process of the guest ([`Cgroup::pids`], not its
    /// daemon's) whose OOM score stands below `to` to `to`, never lowering
    /// one (`guest update` adding a memory limit above a daemon that could
    /// not be shielded). Returns how many it raised, and the pids it could
    /// not raise with why. A pid is raised through its /proc directory,
    /// opened before the groups are listed again and only if still listed
    /// there: one that ended and was reused by a host process is left
    /// alone. Passes until one finds no new process (a child forked before
    /// its parent was raised copied the old score), at most
    /// [`RAISE_PASSES`] (a guest forking without end).
    pub fn raise_oom_scores(&self, to: i32) -> (usize, Vec<(i32, std::io::Error)>) {
        rescore(Self::pids, self, |dir| {
            crate::guest::sys::raise_oom_score(dir, to)
        })
    }

    /// Sets each process of the guest's overlay daemon to -999 (`guest
    /// update` adding a memory limit, run with the CAP_SYS_RESOURCE the
    /// unifs that started the daemon lacked), as [`Cgroup::raise_oom_scores`]
    /// goes: how many it set, and the pids it could not with why.
    pub fn shield_daemon(&self) -> (usize, Vec<(i32, std::io::Error)>) {
        rescore(Self::daemon_pids, self, |dir| {
            crate::guest::sys::set_oom_score(dir, -999).map(|()| true)
        })
    }

    /// Once the guest's root is unmounted: waits up to [`DAEMON_EXIT`] for
    /// its overlay daemon to end, then kills what is left in its leaf.
    pub fn end_daemon(&self) {
        self.end_daemon_within(|bound| bound)
    }

    /// [`Cgroup::end_daemon`], each of its two waits (5 s for the daemon's
    /// end, 2 s once its leaf is killed) bounded by what `limit` makes of
    /// it: a `stop` draws them from its one deadline.
    pub fn end_daemon_within(&self, limit: impl Fn(Duration) -> Duration) {
        let first = limit(DAEMON_EXIT);
        let deadline = Instant::now() + first;
        while !self.daemon_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.daemon_pids();
        if left.is_empty() {
            return;
        }
        tracing::warn!(
            "the overlay daemon (pids {left:?}) did not end within {} s of the unmount; \
             killing it",
            first.as_secs_f32()
        );
        for g in &self.groups {
            let _ = std::fs::write(g.join(DAEMON_LEAF).join("cgroup.kill"), "1");
        }
        kill_and_thaw(&left, self.groups.iter().map(|g| g.join(DAEMON_LEAF)));
        let deadline = Instant::now() + limit(DAEMON_KILLED);
        while !self.daemon_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The processes in `groups`, sorted, each once.
fn procs_in(groups: impl Iterator<Item = PathBuf>) -> Vec<i32> {
    let mut pids: Vec<i32> = groups
        .filter_map(|g| std::fs::read_to_string(g.join("cgroup.procs")).ok())
        .flat_map(|t| t.lines().filter_map(|l| l.parse().ok()).collect::<Vec<_>>())
        // A process outside our PID namespace reads as 0: a kill(0)
        // would end our own process group.
        .filter(|&pid| pid > 0)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

impl Cgroup {
    /// SIGKILLs every process in the groups (cgroup.kill on v2 where the
    /// kernel has it, else one by one), then thaws any v1 freezer group
    /// among them and below them: a frozen process does not end on SIGKILL
    /// until thawed, and guest root can freeze its own (a freezer mount in
    /// a user namespace of its own) to outlive `stop`.
    ///
    /// Not the overlay daemon ([`Cgroup::end_daemon`] after the unmount),
    /// but its freezer group is thawed too: a frozen daemon would hold the
    /// guest's processes that wait on it.
    pub fn kill_all(&self) {
        for g in &self.groups {
            // The group itself for a guest started without the leaf, but
            // never one holding the daemon's leaf: cgroup.kill takes the
            // whole subtree, and a start whose clone of the guest failed
            // (no leaf yet) killed its daemon so, its fork's EAGAIN then
            // reported as "the overlay daemon exited".
            let leaf = g.join(LEAF);
            let target = match leaf.is_dir() {
                true => leaf,
                false if g.join(DAEMON_LEAF).is_dir() => continue,
                false => g.clone(),
            };
            let _ = std::fs::write(target.join("cgroup.kill"), "1");
        }
        kill_and_thaw(&self.pids(), self.groups.iter().cloned());
    }

    /// Removes the groups (those below them first: a group with children
    /// cannot go), waiting up to [`REMOVE_WAIT`] for dying processes to
    /// leave them. Each round lists the groups again: a guest (its systemd)
    /// may have made one below after a listing, and a group still holding
    /// a process that SIGKILL has not ended (in D state, a frozen one)
    /// stays, named in a warning with its processes.
    pub fn remove(&self) {
        self.remove_within(REMOVE_WAIT)
    }

    /// [`Cgroup::remove`], waiting `limit` at most: a `stop` draws it from
    /// its one deadline, as its other waits do.
    pub fn remove_within(&self, limit: Duration) {
        let deadline = Instant::now() + REMOVE_WAIT.min(limit);
        let mut read_only: Vec<PathBuf> = Vec::new();
        let mut first_round = true;
        loop {
            let left: Vec<PathBuf> = self
                .groups
                .iter()
                .flat_map(|g| subtree(g).into_iter().rev())
                .filter(|g| g.exists())
                .collect();
            // UNIFS_TEST_CGROUP_REMOVE_LISTED_PAUSE_MS: the tests' window to
            // make a group below once the groups were listed.
            if std::mem::take(&mut first_round) {
                crate::sys::test_pause!("UNIFS_TEST_CGROUP_REMOVE_LISTED_PAUSE_MS");
            }
            let mut busy = None;
            for g in &left {
                match std::fs::remove_dir(g) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    // Waiting does not help, and one line says it for all.
                    Err(e) if e.raw_os_error() == Some(libc::EROFS) => read_only.push(g.clone()),
                    Err(e) => {
                        busy.get_or_insert((g.clone(), e));
                    }
                }
            }
            // Every rmdir of the round done: all gone, as each group was
            // removed after those below it.
            if busy.is_none() || !read_only.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                if let Some((g, e)) = busy {
                    tracing::warn!("{}", left_group(&g, &e));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(first) = read_only.first() {
            tracing::warn!(
                "could not remove {} ({}{}): the hierarchy is mounted read-only (make it writable \
                 with mount -o remount,bind,rw on its mount point, then rmdir {})",
                crate::words::counted(read_only.len() as u64, "cgroup", "cgroups"),
                crate::sys::shown(first),
                crate::words::word(read_only.len() as u64, "", " first"),
                crate::words::word(read_only.len() as u64, "it", "them"),
            );
        }
    }

    /// Removes the groups of this name left empty by a start that was
    /// killed before it recorded them (or whose removal gave up on a
    /// process that ended since), so that a start makes them anew, with
    /// none of an old start's limits in them. Never a group that holds a
    /// process: rmdir fails on one (EBUSY), and it stays. True when one
    /// was removed.
    pub fn remove_left(&self) -> bool {
        let left = self
            .groups
            .iter()
            .flat_map(|g| subtree(g).into_iter().rev());
        let removed = left.filter(|g| std::fs::remove_dir(g).is_ok()).count();
        removed > 0
    }
    /// The first of the guest's groups, or of their leaves (where its
    /// processes are, and an exec goes), that is frozen (v1 `freezer.state` not
    /// THAWED, its parents' freezing included; v2 `cgroup.freeze` 1, or
    /// `cgroup.events` saying `frozen 1`), with how to thaw it: a process
    /// that joins it stops there at once (an operator's pause, as `docker
    /// pause`).
    pub fn frozen(&self) -> Option<(PathBuf, &'static str)> {
        // Not the groups below the leaf: the guest's own (a systemd
        // `freeze` of one unit), where no exec goes.
        let joined = self.groups.iter().flat_map(|g| [g.clone(), g.join(LEAF)]);
        joined.into_iter().find_map(|g| {
            let v1 = std::fs::read_to_string(g.join("freezer.state"));
            if v1.is_ok_and(|s| s.trim() != "THAWED") {
                return Some((g.join("freezer.state"), "THAWED"));
            }
            // Asked for (it may still be freezing), or frozen by a parent.
            let asked = std::fs::read_to_string(g.join("cgroup.freeze"));
            let events = std::fs::read_to_string(g.join("cgroup.events"));
            (asked.is_ok_and(|s| s.trim() == "1")
                || events.is_ok_and(|s| s.lines().any(|l| l == "frozen 1")))
            .then(|| (g.join("cgroup.freeze"), "0"))
        })
    }

    /// How many of the guest's processes the OOM killer has killed so far
    /// (the overlay daemon's not counted), and the file counting them. A
    /// kill is counted in the victim's own group (the guest's leaf, not the
    /// group whose limit was met). v1 `memory.oom_control`'s `oom_kill`
    /// line (Linux 4.13 on) counts that group's alone: summed over the
    /// subtree. v2 `memory.events` holds the subtree's since Linux 5.2 (a
    /// group the guest removed, as systemd does a service's, still
    /// counted): read where it says a kill. It holds the group's own
    /// before 5.2 or on a hierarchy mounted with `memory_localevents`, and
    /// the group has no process (always 0): then `memory.events.local`
    /// (5.3 on), or `memory.events` where that is missing, summed over the
    /// subtree. The groups are new at each start: the count is of this
    /// run. None without a memory group that counts them.
    pub fn oom_kills(&self) -> Option<OomKills> {
        self.oom_counts().map(|c| c.total())
    }

    /// What [`Cgroup::oom_kills`] adds up: the file, and the count of each
    /// group it reads, by the group's device and inode (a group removed and
    /// made again is another; a group renamed, as v1 allows within its
    /// parent, the same), for [`OomCounts::total`] or a tally that keeps
    /// the count of a group removed since ([`super::oom_watch`]).
    pub fn oom_counts(&self) -> Option<OomCounts> {
        let read = |dir: &Path, file: &str| -> Option<(GroupId, u64)> {
            let text = std::fs::read_to_string(dir.join(file)).ok()?;
            let count = text.lines().find_map(|l| l.strip_prefix("oom_kill "))?;
            let meta = std::fs::metadata(dir).ok()?;
            Some(((meta.dev(), meta.ino()), count.trim().parse().ok()?))
        };
        self.groups.iter().find_map(|g| {
            let daemon = g.join(DAEMON_LEAF);
            let summed = |file: &'static str| {
                let own = read(g, file)?;
                let below = subtree(g)
                    .into_iter()
                    .skip(1)
                    .filter(|d| !d.starts_with(&daemon))
                    .filter_map(|d| read(&d, file));
                Some(OomCounts {
                    file,
                    groups: std::iter::once(own).chain(below).collect(),
                    keeps_removed: false,
                })
            };
            if let Some(v1) = summed("memory.oom_control") {
                return Some(v1);
            }
            let (top, all) = read(g, "memory.events")?;
            if all > 0 {
                let daemons = read(&daemon, "memory.events").map_or(0, |d| d.1);
                return Some(OomCounts {
                    file: "memory.events",
                    groups: vec![(top, all.saturating_sub(daemons))],
                    keeps_removed: true,
                });
            }
            // None in the subtree, or the group's own count (none).
            summed("memory.events.local").or_else(|| summed("memory.events"))
        })
    }

    /// The memory limit, in bytes, from the first group that sets one
    /// (v2 `max`, v1's huge "unlimited" taken as none).
    pub fn memory_limit(&self) -> Option<u64> {
        self.read_first(&["memory.max", "memory.limit_in_bytes"])
            .filter(|&b| b < 1 << 60)
    }

    /// Memory in use, in bytes, from the first group that reports it.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.read_first(&["memory.current", "memory.usage_in_bytes"])
    }

    fn read_first(&self, files: &[&str]) -> Option<u64> {
        self.groups
            .iter()
            .flat_map(|g| files.iter().map(move |f| g.join(f)))
            .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
    }
}

/// A group of the guest's, as [`OomCounts`] knows it: its device and
/// inode. Not its path: a group renamed (v1's rename(2) of a group within
/// its parent) is the same group, and by its path it was counted twice,
/// once as gone and once as new.
pub type GroupId = (u64, u64);

/// The counts [`Cgroup::oom_kills`] adds up ([`Cgroup::oom_counts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomCounts {
    pub file: &'static str,
    pub groups: Vec<(GroupId, u64)>,
    /// The count is the subtree's as the kernel keeps it (v2's
    /// `memory.events`), a removed group's kills still in it.
    pub keeps_removed: bool,
}

impl OomCounts {
    /// The groups' counts, added up.
    pub fn total(&self) -> OomKills {
        OomKills {
            file: self.file,
            count: self.groups.iter().map(|g| g.1).sum(),
        }
    }
}

/// A memory group's count of OOM kills ([`Cgroup::oom_kills`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomKills {
    /// `memory.oom_control` (v1), `memory.events` (v2), or, summed where
    /// that holds the group's own count, `memory.events.local` (or
    /// `memory.events` before Linux 5.3).
    pub file: &'static str,
    pub count: u64,
}

/// SIGKILLs `pids`, then thaws every v1 freezer group in and below `groups`
/// (a frozen process does not end on SIGKILL until thawed).
fn kill_and_thaw(pids: &[i32], groups: impl Iterator<Item = PathBuf>) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    for g in groups.flat_map(|g| subtree(&g)) {
        let state = g.join("freezer.state");
        if std::fs::read_to_string(&state).is_ok_and(|s| s.trim() != "THAWED") {
            let _ = std::fs::write(&state, "THAWED");
        }
    }
}

/// The cgroup v1 freezer group holding `pid`, if that group is frozen: a
/// process there does not end on SIGKILL until the group is thawed (on v2
/// it does). [`Cgroup::kill_all`] thaws the guest's own freezer groups; an
/// operator may have put a guest's processes in another one (a paused
/// guest).
pub fn frozen_v1_group(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == "freezer")
            .then(|| path.trim_start_matches('/').to_string())
    })?;
    let dir = Hierarchies::detect().v1.get("freezer")?.join(rel);
    let state = std::fs::read_to_string(dir.join("freezer.state")).ok()?;
    (state.trim() != "THAWED").then_some(dir)
}

/// Why an I/O weight would do nothing for a guest whose files are at
/// `root`, or None when it acts (or [`io_weight_acts`] cannot tell better).
/// A weight acts only on a disk whose scheduler is bfq (or, on cgroup v2,
/// with blk-iocost enabled for it); the guest is started anyway: setups
/// that give a weight on other disks exist, and the host's scheduler is
/// its operator's choice.
pub fn io_weight_inert(root: &Path) -> Option<String> {
    let v2 = Hierarchies::detect().v2.map(|v| v.mount);
    io_weight_acts(root, v2.as_deref()).err()
}

/// Follows `path`'s filesystem to the disk under it: a partition's disk,
/// a loop device's backing file's disk, a device-mapper device's one
/// underlying device; then reads its scheduler.
fn io_weight_acts(path: &Path, v2: Option<&Path>) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let dev = std::fs::metadata(path)
        .map_err(|e| format!("cannot tell which disk {shown} is on ({e})"))?
        .dev();
    let (mut major, mut minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    // A few steps: a loop on a file on a partition is three.
    for _ in 0..8 {
        if major == 0 {
            return Err(format!(
                "{shown} is on no block device unifs can find (tmpfs, btrfs, NFS, overlayfs, …): \
                 whether the weight acts cannot be told"
            ));
        }
        let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
            .map_err(|e| format!("cannot find the disk under {shown} ({major}:{minor}: {e})"))?;
        let disk = match sys.join("partition").exists() {
            true => sys.parent().unwrap_or(&sys).to_path_buf(),
            false => sys,
        };
        let name = disk.file_name().unwrap_or_default().to_string_lossy();
        if let Ok(file) = std::fs::read_to_string(disk.join("loop/backing_file")) {
            let file = file.trim_end_matches('\n');
            let dev = std::fs::metadata(file)
                .map_err(|e| format!("cannot find the disk under {name}'s file {file} ({e})"))?
                .dev();
            (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
            continue;
        }
        let slaves: Vec<_> = std::fs::read_dir(disk.join("slaves"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        match slaves.len() {
            0 => {}
            1 => {
                let text = std::fs::read_to_string(slaves[0].join("dev")).unwrap_or_default();
                let parsed = text
                    .trim()
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                let Some(next) = parsed else {
                    return Err(format!("cannot find the disk under {name} ({shown})"));
                };
                (major, minor) = next;
                continue;
            }
            _ => {
                return Err(format!(
                    "{shown} is on {name}, over several devices: the weight acts only on those \
                     whose scheduler is bfq"
                ))
            }
        }
        let text = std::fs::read_to_string(disk.join("queue/scheduler")).unwrap_or_default();
        let chosen = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
            .unwrap_or(text.trim());
        if chosen == "bfq" {
            return Ok(());
        }
        // v2's io.weight acts through blk-iocost where that is enabled.
        let iocost = v2
            .and_then(|m| std::fs::read_to_string(m.join("io.cost.qos")).ok())
            .is_some_and(|q| {
                q.lines()
                    .any(|l| l.starts_with(&format!("{major}:{minor} enable=1")))
            });
        if iocost {
            return Ok(());
        }
        return Err(format!(
            "{shown} is on {name}, whose I/O scheduler is {}, not bfq: the weight is set but \
             has no effect there (echo bfq > /sys/block/{name}/queue/scheduler)",
            if chosen.is_empty() { "unknown" } else { chosen }
        ));
    }
    Err(format!(
        "cannot find the disk under {shown} (too many layers)"
    ))
}

/// How long [`Cgroup::remove`] waits for the processes that keep a group
/// (killed, not yet out of it) before it leaves the group.
const REMOVE_WAIT: Duration = Duration::from_secs(5);

/// What to say of `group`, which rmdir refused (`e`): the processes still
/// in it and below it, and who removes it once they end.
fn left_group(group: &Path, e: &std::io::Error) -> String {
    let pids = procs_in(subtree(group).into_iter());
    let held = match pids.is_empty() {
        true => String::new(),
        false => {
            let shown: Vec<String> = pids
                .iter()
                .take(8)
                .map(|&p| format!("{p} ({})", command_shown(p)))
                .collect();
            format!(
                "; {} {}{} {} still in it (`cat /proc/PID/stack` tells what {} waits on)",
                crate::words::word(pids.len() as u64, "process", "processes"),
                shown.join(", "),
                if pids.len() > 8 { ", …" } else { "" },
                crate::words::word(pids.len() as u64, "is", "are"),
                crate::words::word(pids.len() as u64, "it", "one"),
            )
        }
    };
    format!(
        "could not remove cgroup {}: {e}{held}; it stays: once they end, the guest's next \
         `guest start` or `guest stop` removes it (a `unifs run`'s, the next run), or `rmdir` it, \
         the groups below it first",
        crate::sys::shown(group)
    )
}

/// `dir` and every group below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(entries) = std::fs::read_dir(&all[i]) {
            let below = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path());
            all.extend(below.collect::<Vec<_>>());
        }
        i += 1;
    }
    all
}

/// `dir`, opened to lock it.
fn open_dir(dir: &Path) -> Option<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .ok()
}

/// Whether the keeper of the dead run whose groups are `groups` lives: it
/// holds a lock on one of them ([`Cgroup::keeper_lock`]) until it ends.
fn keeper_at_work(groups: &[PathBuf]) -> bool {
    groups.iter().filter_map(|g| open_dir(g)).any(|dir| {
        matches!(
            Flock::lock(dir, FlockArg::LockSharedNonblock),
            Err((_, Errno::EAGAIN))
        )
    })
}

/// How long after their creation the groups of a run that looks dead may
/// be those of a run still starting ([`maybe_starting`]).
const START_GRACE: Duration = Duration::from_secs(60);

/// Whether the groups `groups` of run `pid` (its pid as that run saw it),
/// no keeper's lock on them and no process in them, may be those of a run
/// still starting, made by a unifs older than session 43's, which locked
/// them only once its keeper ran: made less than [`START_GRACE`] ago, and
/// `pid` may name a live process where the run was (a namespace this one
/// cannot see into, or one below it where a process has that pid). The
/// run's pid alone says nothing: /proc/PID is of our PID namespace, and a
/// run names its groups by the pid of its own.
fn maybe_starting(pid: &str, groups: &[PathBuf]) -> bool {
    let young = groups.iter().any(|g| {
        std::fs::metadata(g)
            .and_then(|m| m.modified())
            .is_ok_and(|made| made.elapsed().map_or(true, |age| age < START_GRACE))
    });
    if !young {
        return false;
    }
    if !super::state::sees_every_pid_ns() {
        return true;
    }
    let pid = pid.parse::<i32>().unwrap_or(0);
    super::state::pid_in_a_namespace_below(pid) != Some(false)
}

/// How long a sweep waits, once for all the dead runs' processes it kills,
/// before it leaves those still there.
const SWEEP_WAIT: Duration = Duration::from_secs(2);

/// How long a sweep waits for processes killed before it.
const ENDING_WAIT: Duration = Duration::from_millis(200);

/// Removes the `run-PID-TAG` groups (and the groups below them) beside ours
/// whose `unifs run` is gone (killed before it could clean up). Its keeper
/// ends the guest of a killed run: the groups of a run whose keeper is
/// still at work are left to it. Killed with the run (a service manager's
/// kill of its whole cgroup), the keeper left the guest running: what is
/// left there is killed first, if provably the dead run's (see
/// [`orphaned`]).
///
/// "Gone" is the lock, which holds in every PID namespace: a run locks its
/// groups from their creation ([`Cgroup::create`]) until it and its keeper
/// end. Its pid missing from our /proc only picks the runs to look at (a
/// run in another namespace names its groups by a pid of its own); an
/// unlocked run's empty, young groups that an older unifs may still be
/// starting are left ([`maybe_starting`]). A group that holds a process is
/// never removed (rmdir fails, whoever looks) and its processes are
/// killed only if [`orphaned`] proves them the dead run's.
///
/// A run has a group in every hierarchy: its groups are taken together,
/// killed once and waited for once (all runs at once, for [`SWEEP_WAIT`]),
/// so that a process SIGKILL cannot end (in D state: on a FUSE mount that
/// does not answer, in a frozen freezer group) costs one wait and one
/// warning, not one per hierarchy, and none once it was killed before.
fn sweep_dead_runs(groups: &[PathBuf]) {
    let mut killed = Vec::new();
    let mut dead_runs = Vec::new();
    for (pid, groups) in dead_runs_beside(groups) {
        if keeper_at_work(&groups) {
            continue;
        }
        let dead = Cgroup { groups };
        // Its overlay daemon too (in its `mount` leaf): one that
        // outlived its parent-death signal (stopped) holds the group.
        let mut left = dead.pids();
        left.extend(dead.daemon_pids());
        if left.is_empty() && maybe_starting(&pid, &dead.groups) {
            continue;
        }
        if !left.is_empty() {
            if !orphaned(&left) {
                continue;
            }
            let fresh: Vec<i32> = left.into_iter().filter(|&p| !being_killed(p)).collect();
            if !fresh.is_empty() {
                let name = dead.groups[0].file_name().unwrap_or_default();
                tracing::warn!(
                    "killing {} (pids {fresh:?}) left in the groups unifs/{} by a `unifs run` \
                     (pid {pid}) that was killed",
                    crate::words::counted(fresh.len() as u64, "process", "processes"),
                    name.to_string_lossy()
                );
            }
            killed.extend(fresh);
            dead.kill_all();
            kill_and_thaw(&dead.daemon_pids(), dead.groups.iter().cloned());
        }
        dead_runs.push(dead);
    }
    let left = || {
        dead_runs
            .iter()
            .flat_map(|d| d.pids().into_iter().chain(d.daemon_pids()))
            .collect::<Vec<_>>()
    };
    // Those killed before this sweep (by another sweep, a stop) are stuck
    // already, or end in a moment: given that moment only.
    let began = Instant::now();
    let waited = || {
        let left = left();
        let ours = left.iter().any(|p| killed.contains(p));
        (!ours || began.elapsed() > SWEEP_WAIT)
            && (left.is_empty() || began.elapsed() > ENDING_WAIT)
    };
    while !waited() {
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in left() {
        tracing::warn!("{}", unkillable(pid));
    }
    for dead in &dead_runs {
        // Its leaves (`guest` and `mount`, where the processes were)
        // first: a group with children cannot go. One still in use stays.
        for g in dead
            .groups
            .iter()
            .flat_map(|g| subtree(g).into_iter().rev())
        {
            let _ = std::fs::remove_dir(g);
        }
    }
}

/// The groups of each run whose `unifs run` is gone, in every hierarchy of
/// `groups` (their parents: `unifs/`), by the run's pid.
fn dead_runs_beside(groups: &[PathBuf]) -> Vec<(String, Vec<PathBuf>)> {
    let mut runs: BTreeMap<std::ffi::OsString, (String, Vec<PathBuf>)> = BTreeMap::new();
    for parent in groups.iter().filter_map(|g| g.parent()) {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            // `run-PID-TAG` (`run-PID` from before the tag).
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("run-"))
                .and_then(|n| n.split('-').next())
            else {
                continue;
            };
            if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
                continue;
            }
            let pid = pid.to_string();
            runs.entry(name)
                .or_insert((pid, Vec::new()))
                .1
                .push(e.path());
        }
    }
    runs.into_values().collect()
}

/// Whether `pid` has a SIGKILL pending (in any of its threads): it was
/// killed and has not ended.
fn being_killed(pid: i32) -> bool {
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        status.lines().any(|l| {
            ["SigPnd:", "ShdPnd:"].iter().any(|k| {
                l.strip_prefix(k)
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                    .is_some_and(|v| v & SIGKILL_BIT != 0)
            })
        })
    })
}

/// What to say of `pid`, a dead run's process that SIGKILL did not end:
/// which it is, what it waits on where that can be told, what to do.
pub(crate) fn unkillable(pid: i32) -> String {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let why = if let Some(dir) = frozen_v1_group(pid) {
        format!(
            "it is frozen in the cgroup v1 freezer group {0}: thaw it (`echo THAWED > \
             {0}/freezer.state`)",
            dir.display()
        )
    } else if wchan == "request_wait_answer" || wchan.starts_with("fuse_") {
        format!(
            "it waits for the answer of a FUSE filesystem's daemon: let that daemon go on (`kill \
             -CONT` it), or end it, or abort its connection ({})",
            fuse_abort_hint(pid)
        )
    } else {
        format!(
            "it waits in the kernel ({}; `cat /proc/{pid}/stack` tells on what): end what it \
             waits on",
            if wchan.is_empty() { "?" } else { &wchan }
        )
    };
    format!(
        "process {pid} ({}), left by a killed `unifs run`, survived SIGKILL: {why}; its groups \
         stay until it ends, and a later `unifs run` or `guest start` removes them",
        command_shown(pid)
    )
}

/// How to abort the FUSE connection `pid` waits on: of the FUSE mounts in
/// its mount namespace, those whose connection has requests waiting (all
/// of them if none says so), each by its fusectl `abort` file and its
/// mount point there. Read from /proc and /sys: nothing that could wait
/// on the hung daemon itself.
fn fuse_abort_hint(pid: i32) -> String {
    use crate::fs::mountinfo;
    let mounts = mountinfo::read_at(Path::new(&format!("/proc/{pid}/mountinfo")));
    let mut fuse: Vec<(PathBuf, PathBuf)> = Vec::new();
    for m in mounts.unwrap_or_default() {
        // (Not `fusectl`, the connections' own filesystem.)
        let is_fuse = m.fstype == "fuse" || m.fstype == "fuseblk" || m.fstype.starts_with("fuse.");
        let Some(dir) = is_fuse
            .then(|| mountinfo::fuse_connection_dir(&m.dev))
            .flatten()
        else {
            continue;
        };
        // Bind mounts of one filesystem share its connection.
        if !fuse.iter().any(|(known, _)| *known == dir) {
            fuse.push((dir, m.point));
        }
    }
    let waiting = |dir: &Path| {
        std::fs::read_to_string(dir.join("waiting"))
            .ok()
            .and_then(|w| w.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    };
    if fuse.iter().any(|(dir, _)| waiting(dir)) {
        fuse.retain(|(dir, _)| waiting(dir));
    }
    let shown: Vec<String> = fuse
        .iter()
        .map(|(dir, point)| {
            format!(
                "`echo 1 > {}/abort` for the FUSE mount at {} in its mount namespace",
                dir.display(),
                crate::sys::shown(point)
            )
        })
        .collect();
    // fusectl is not mounted everywhere (a container's /sys).
    let mount_ctl = if !fuse.is_empty() && !fuse.iter().any(|(dir, _)| dir.is_dir()) {
        "mount the connections' filesystem first, `mount -t fusectl fusectl \
         /sys/fs/fuse/connections`, then "
    } else {
        ""
    };
    match shown.len() {
        0 => "`echo 1 > /sys/fs/fuse/connections/N/abort`, N the minor number of the FUSE \
              mount's device, `0:N` in /proc/PID/mountinfo"
            .replace("PID", &pid.to_string()),
        1 => format!("{mount_ctl}{}", shown[0]),
        _ => format!("{mount_ctl}the one it waits on of: {}", shown.join("; ")),
    }
}

/// What to say of `pid`, in the groups of a killed run (to `guest list`
/// and `status`): [`unkillable`]'s words once it was killed, else how it
/// ends.
pub(crate) fn left_by_killed_run(pid: i32) -> String {
    if being_killed(pid) {
        return unkillable(pid);
    }
    format!(
        "process {pid} ({}), left by a killed `unifs run`, is not killed yet: `kill -KILL {pid}` \
         ends it, or the next `unifs run` or `guest start`, which then removes its groups",
        command_shown(pid)
    )
}

/// The command name of `pid` (its comm; empty once it is gone).
pub(crate) fn command_of(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.strip_suffix('\n').unwrap_or(&comm).to_string()
}

/// [`command_of`] for a message: a guest's process names itself (a
/// newline or an escape sequence in an error line), so it is shown escaped.
fn command_shown(pid: i32) -> String {
    crate::sys::shown_str(&command_of(pid))
}

/// Whether `pids`, in the groups of a run whose pid is gone, are the
/// orphans of that run's guest: each one seen in our PID namespace, with
/// a parent among them or one that is no `unifs` (the host's init or a
/// subreaper that took them in). A live run's guest has the run as its
/// parent: a run whose pid is the dead one's again (reused since), or one
/// in another PID namespace (which names its groups by the pid it sees), is
/// left alone.
fn orphaned(pids: &[i32]) -> bool {
    pids.iter().all(|&pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<i32>().ok());
        match ppid {
            // Gone meanwhile: nothing to kill.
            None if pid > 0 => true,
            // Outside our PID namespace (its parent, or itself).
            None | Some(0) => false,
            Some(p) if pids.contains(&p) => true,
            Some(p) => std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| !c.trim().starts_with("unifs")),
        }
    })
}

fn apply(steps: &[Step]) -> Result<()> {
    for step in steps {
        match step {
            Step::Mkdir(dir) => match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(Error::io("creating cgroup (needs root)", dir, e))
                }
                Err(e) => return Err(Error::io("creating cgroup", dir, e)),
            },
            Step::Write {
                limit,
                files,
                value,
            } => {
                let Some(file) = files.iter().find(|f| f.exists()) else {
                    let names: Vec<String> =
                        files.iter().map(|f| f.display().to_string()).collect();
                    return Err(Error::Limit {
                        limit,
                        reason: format!("the kernel offers none of {}", names.join(", ")),
                    });
                };
                std::fs::write(file, value).map_err(|e| Error::Limit {
                    limit,
                    reason: format!("writing {value:?} to {}: {e}", file.display()),
                })?;
            }
            Step::WriteIfPresent { files, value } => {
                match files
                    .iter()
                    .find(|f| f.exists())
                    .map(|f| (f, std::fs::write(f, value)))
                {
                    Some((_, Ok(()))) => {}
                    Some((f, Err(e))) => {
                        tracing::warn!("writing {value:?} to {}: {e}", f.display())
                    }
                    None => tracing::info!("{} not offered by this kernel", files[0].display()),
                }
            }
            Step::Copy { from, to } => {
                let Ok(value) = std::fs::read_to_string(from) else {
                    continue;
                };
                std::fs::write(to, value.trim()).map_err(|e| Error::Limit {
                    limit: "cgroup set-up",
                    reason: format!("copying {} to {}: {e}", from.display(), to.display()),
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process's name is the guest's to choose: a newline in it must not
    /// start a line of its own in a message (`/proc/TID/comm` of a thread
    /// named so stands in for a guest's process).
    #[test]
    fn a_command_name_in_a_message_is_one_line() {
        std::thread::spawn(|| {
            nix::sys::prctl::set_name(c"x\nunifs: ok").unwrap();
            let tid = nix::unistd::gettid().as_raw();
            assert_eq!(command_of(tid), "x\nunifs: ok");
            let shown = command_shown(tid);
            assert!(!shown.contains('\n'), "{shown:?}");
            assert!(shown.starts_with('x'), "{shown:?}");
        })
        .join()
        .unwrap();
    }

    /// A v2 group laid out as the kernel lays one out (its docs,
    /// Documentation/admin-guide/cgroup-v2.rst): `memory.events` holds the
    /// subtree's counts, or, on a hierarchy mounted with
    /// `memory_localevents`, the group's own; `memory.events.local` always
    /// the group's own. This host's v2 hierarchy has no memory controller:
    /// the files stand in for the kernel's. Under `memory_localevents` the
    /// guest's kill was counted 0 (the group itself has no processes).
    #[test]
    fn a_v2_groups_oom_kills_are_its_subtrees_but_the_daemons() {
        for local_events in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let g = dir.path().join("g");
            let write = |d: &Path, own: u64, subtree: u64| {
                std::fs::create_dir_all(d).unwrap();
                let events = if local_events { own } else { subtree };
                let line = |n| format!("low 0\nhigh 0\nmax 3\noom 2\noom_kill {n}\n");
                std::fs::write(d.join("memory.events"), line(events)).unwrap();
                std::fs::write(d.join("memory.events.local"), line(own)).unwrap();
            };
            // One kill in the guest's leaf, one below it, one in the daemon's.
            write(&g, 0, 3);
            write(&g.join(LEAF), 1, 2);
            write(&g.join(LEAF).join("sub"), 1, 1);
            write(&g.join(DAEMON_LEAF), 1, 1);
            let cg = Cgroup { groups: vec![g] };
            let kills = cg.oom_kills().unwrap();
            assert_eq!(kills.count, 2, "memory_localevents {local_events}");
            let file = match local_events {
                true => "memory.events.local",
                false => "memory.events",
            };
            assert_eq!(kills.file, file);
        }
    }

    /// The same before Linux 5.2 (review_s46_oomrev2): `memory.events`
    /// held the group's own counts (hierarchical since 9852ae3fe529,
    /// 5.2), and `.local` came in 5.3. The top group's read 0 whatever
    /// the guest's leaves counted.
    #[test]
    fn s46_a_v2_group_before_5_2_sums_its_local_memory_events() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g");
        let write = |d: &Path, own: u64| {
            std::fs::create_dir_all(d).unwrap();
            let line = format!("low 0\nhigh 0\nmax 3\noom 2\noom_kill {own}\n");
            std::fs::write(d.join("memory.events"), line).unwrap();
        };
        write(&g, 0);
        write(&g.join(LEAF), 1);
        write(&g.join(LEAF).join("sub"), 1);
        write(&g.join(DAEMON_LEAF), 1);
        let kills = Cgroup { groups: vec![g] }.oom_kills().unwrap();
        assert_eq!((kills.count, kills.file), (2, "memory.events"));
    }

    /// A v2 group whose guest removed the group its process was
    /// OOM-killed in (systemd removes a service's once it ended;
    /// review_s46_oomrev2): its `memory.events.local` went with it, the
    /// top group's `memory.events` (hierarchical, the default) still
    /// counts the kill. Summed `.local`s said one kill fewer: a count that
    /// went down.
    #[test]
    fn s46_a_v2_groups_count_keeps_the_kills_of_a_group_removed() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("g");
        let write = |d: &Path, own: u64, subtree: u64| {
            std::fs::create_dir_all(d).unwrap();
            let line = |n| format!("low 0\nhigh 0\nmax 3\noom 2\noom_kill {n}\n");
            std::fs::write(d.join("memory.events"), line(subtree)).unwrap();
            std::fs::write(d.join("memory.events.local"), line(own)).unwrap();
        };
        // One kill in the guest's leaf, one in a group below it since
        // removed, one in the daemon's.
        write(&g, 0, 3);
        write(&g.join(LEAF), 1, 1);
        write(&g.join(DAEMON_LEAF), 1, 1);
        let kills = Cgroup { groups: vec![g] }.oom_kills().unwrap();
        assert_eq!((kills.count, kills.file), (2, "memory.events"));
    }

    fn v1_host() -> Hierarchies {
        // These machines: v1 controllers plus an empty v2 hierarchy.
        let mut v1 = BTreeMap::new();
        for c in ["memory", "pids", "cpu", "blkio"] {
            v1.insert(c.to_string(), PathBuf::from("/sys/fs/cgroup").join(c));
        }
        let mut v1_all: Vec<PathBuf> = v1.values().cloned().collect();
        for other in ["cpuset", "devices", "systemd"] {
            v1_all.push(PathBuf::from("/sys/fs/cgroup").join(other));
        }
        Hierarchies {
            v2: Some(V2 {
                mount: "/sys/fs/cgroup/unified".into(),
                controllers: vec![],
            }),
            v1,
            v1_all,
            cpuset: Some("/sys/fs/cgroup/cpuset".into()),
            unusable: vec![],
        }
    }

    fn v2_host() -> Hierarchies {
        Hierarchies {
            v2: Some(V2 {
                mount: "/sys/fs/cgroup".into(),
                controllers: ["cpu", "io", "memory", "pids"].map(String::from).to_vec(),
            }),
            ..Default::default()
        }
    }

    fn limits() -> Limits {
        Limits {
            memory: Some(64 << 20),
            pids: Some(50),
            cpus: Some(0.5),
            io_weight: None,
        }
    }

    fn writes_to(plan: &Plan) -> Vec<(String, String)> {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::Write { files, value, .. } | Step::WriteIfPresent { files, value } => {
                    Some((files[0].display().to_string(), value.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn v2_host_enables_controllers_then_writes_limits() {
        let plan = plan(&v2_host(), "web1", &limits(), false).unwrap();
        assert_eq!(
            plan.groups,
            vec![PathBuf::from("/sys/fs/cgroup/unifs/web1")]
        );
        let w = writes_to(&plan);
        assert_eq!(
            w[0],
            (
                "/sys/fs/cgroup/cgroup.subtree_control".into(),
                "+memory +pids +cpu".into()
            )
        );
        assert_eq!(w[1].0, "/sys/fs/cgroup/unifs/cgroup.subtree_control");
        assert!(w.contains(&(
            "/sys/fs/cgroup/unifs/web1/memory.max".into(),
            (64u64 << 20).to_string()
        )));
        assert!(w.contains(&("/sys/fs/cgroup/unifs/web1/pids.max".into(), "50".into())));
        assert!(w.contains(&(
            "/sys/fs/cgroup/unifs/web1/cpu.max".into(),
            "50000 100000".into()
        )));
        let mkdir = plan
            .steps
            .iter()
            .position(|s| *s == Step::Mkdir("/sys/fs/cgroup/unifs/web1".into()));
        let limit = plan.steps.iter().position(|s| {
            matches!(
                s,
                Step::Write {
                    limit: "--memory",
                    ..
                }
            )
        });
        assert!(mkdir < limit);
    }

    #[test]
    fn v1_host_uses_one_hierarchy_per_controller() {
        let plan = plan(&v1_host(), "web1", &limits(), false).unwrap();
        let w = writes_to(&plan);
        assert!(w.contains(&(
            "/sys/fs/cgroup/memory/unifs/web1/memory.limit_in_bytes".into(),
            (64u64 << 20).to_string()
        )));
        assert!(w.contains(&(
            "/sys/fs/cgroup/pids/unifs/web1/pids.max".into(),
            "50".into()
        )));
        assert!(w.contains(&(
            "/sys/fs/cgroup/cpu/unifs/web1/cpu.cfs_quota_us".into(),
            "50000".into()
        )));
        // The empty v2 hierarchy is not used when nothing needs it.
        assert!(!plan
            .groups
            .iter()
            .any(|g| g.starts_with("/sys/fs/cgroup/unified")));
        assert_eq!(plan.groups.len(), 3);
    }

    #[test]
    fn tracking_joins_v2_for_kill_and_v1_for_accounting() {
        let plan = plan(&v1_host(), "web1", &Limits::default(), true).unwrap();
        assert!(plan
            .groups
            .contains(&"/sys/fs/cgroup/unified/unifs/web1".into()));
        assert!(plan
            .groups
            .contains(&"/sys/fs/cgroup/memory/unifs/web1".into()));
        assert!(plan
            .groups
            .contains(&"/sys/fs/cgroup/pids/unifs/web1".into()));
        // No controllers to enable on the empty v2 hierarchy.
        assert!(!writes_to(&plan)
            .iter()
            .any(|(f, _)| f.ends_with("subtree_control")));
    }

    #[test]
    fn tracking_joins_every_v1_hierarchy_and_gives_cpuset_groups_cpus() {
        // Left in the launcher's group of any hierarchy, the guest would root
        // its cgroup namespace there (and guest root could write it).
        let plan = plan(&v1_host(), "web1", &Limits::default(), true).unwrap();
        for h in [
            "memory", "pids", "cpu", "blkio", "cpuset", "devices", "systemd",
        ] {
            let g = PathBuf::from("/sys/fs/cgroup").join(h).join("unifs/web1");
            assert!(plan.groups.contains(&g), "{h}: {:?}", plan.groups);
        }
        let at = |step: &Step| plan.steps.iter().position(|s| s == step).unwrap();
        let copy = at(&Step::Copy {
            from: "/sys/fs/cgroup/cpuset/cpuset.cpus".into(),
            to: "/sys/fs/cgroup/cpuset/unifs/cpuset.cpus".into(),
        });
        let clone = plan
            .steps
            .iter()
            .position(|s| matches!(s, Step::Write { files, .. } if files[0] == Path::new("/sys/fs/cgroup/cpuset/unifs/cgroup.clone_children")))
            .unwrap();
        let mkdir = at(&Step::Mkdir("/sys/fs/cgroup/cpuset/unifs/web1".into()));
        assert!(at(&Step::Mkdir("/sys/fs/cgroup/cpuset/unifs".into())) < copy);
        assert!(copy < clone && clone < mkdir);
    }

    #[test]
    fn a_limit_nobody_offers_is_an_error_not_ignored() {
        let mut h = v1_host();
        h.v1.remove("pids");
        let err = plan(&h, "g", &limits(), false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--pids"), "{msg}");
        assert!(msg.contains("does not offer the pids controller"), "{msg}");
        let none = Hierarchies::default();
        assert!(plan(&none, "g", &limits(), false).is_err());
        assert!(plan(&none, "g", &Limits::default(), true)
            .unwrap()
            .groups
            .is_empty());
    }

    #[test]
    fn no_limits_no_groups() {
        let plan = plan(&v2_host(), "g", &Limits::default(), false).unwrap();
        assert!(plan.steps.is_empty() && plan.groups.is_empty());
    }
}
