//! The run dirs running keepers hold open ([`super::state::HeldRunDir`]).
//! A guest's run dir covered by a mount made over it (a tmpfs over /run)
//! hides its record from its path; the keeper's open directory still
//! leads to it, through /proc/KEEPER/fd/N, for `status` and `list`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A guest's run dir as a keeper holds it.
#[derive(Debug, Clone)]
pub struct Kept {
    /// NAME of RUN_DIR/NAME.
    pub name: String,
    /// /proc/KEEPER/fd/N: the directory itself, whatever covers its path.
    pub dir: PathBuf,
}

/// The comm a keeper gives itself (`lifecycle::keep`).
const KEEPER_COMM: &str = "unifs-keeper";

/// Whether process `pid` is named as a keeper names itself (None: not
/// read, the process gone).
pub fn named_keeper(pid: i32) -> Option<bool> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end() == KEEPER_COMM)
}

/// Every RUN_DIR/NAME of `run_dir` a running keeper holds open. Read from
/// /proc alone (readlink of the keepers' fds): nothing is asked of a
/// filesystem, so a mount that does not answer is no wait. Empty where
/// /proc cannot be read.
pub fn kept_run_dirs(run_dir: &Path) -> Vec<Kept> {
    let run_dir = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    let run_dir = std::fs::canonicalize(&run_dir).unwrap_or(run_dir);
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // Mounts of this mount namespace, by id (ids are unique across
    // namespaces).
    let ours: HashSet<u64> = match crate::fs::mountinfo::read() {
        Ok(mounts) => mounts.iter().map(|m| m.id).collect(),
        Err(_) => return Vec::new(),
    };
    // Anyone may name a process unifs-keeper (its comm is the name of the
    // file it ran): only root's are keepers.
    let keepers = procs.flatten().map(|e| e.path()).filter(|p| {
        std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim_end() == KEEPER_COMM)
            && runs_as_root(p)
    });
    let mut kept = Vec::new();
    for keeper in keepers {
        let Ok(fds) = std::fs::read_dir(keeper.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            // The path is said as the holder sees it: a directory it made
            // at that path in a mount namespace of its own (a user's
            // namespace, a guest's) is on a mount not in ours.
            if target.parent() != Some(run_dir.as_path()) || !on_our_mount(fd.path(), &ours) {
                continue;
            }
            let name = target.file_name().unwrap_or_default().to_string_lossy();
            if super::config::check_name(&name).is_ok() {
                kept.push(Kept {
                    name: name.into_owned(),
                    dir: fd.path(),
                });
            }
        }
    }
    kept
}

/// Whether the process of /proc/PID `proc` runs as root (real, effective,
/// saved and filesystem uid 0, as its status says).
fn runs_as_root(proc: &Path) -> bool {
    let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"));
    uids.is_some_and(|u| u.split_whitespace().all(|id| id == "0"))
}

/// Whether the file open at /proc/PID/fd/N `fd` is on a mount of this mount
/// namespace (`ours`): told by /proc/PID/fdinfo/N, nothing asked of it.
fn on_our_mount(fd: PathBuf, ours: &HashSet<u64>) -> bool {
    let (Some(proc), Some(n)) = (fd.parent().and_then(Path::parent), fd.file_name()) else {
        return false;
    };
    let info = std::fs::read_to_string(proc.join("fdinfo").join(n)).unwrap_or_default();
    let id = info.lines().find_map(|l| l.strip_prefix("mnt_id:"));
    id.and_then(|id| id.trim().parse().ok())
        .is_some_and(|id: u64| ours.contains(&id))
}

/// The guests of `run_dir` whose root the mount table lists as mounted (at
/// RUN_DIR/NAME/root), by name: those a keeper may hold, as `list` needs
/// to know before looking through every process's fds (a tenth of a
/// second per 2,000 processes).
pub fn roots_mounted(run_dir: &Path) -> Vec<String> {
    let run_dir = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    let run_dir = std::fs::canonicalize(&run_dir).unwrap_or(run_dir);
    let Ok(mounts) = crate::fs::mountinfo::read() else {
        return Vec::new();
    };
    let names = mounts.into_iter().filter_map(|m| {
        let dir = m.point.strip_prefix(&run_dir).ok()?;
        let mut parts = dir.components();
        let name = parts.next()?.as_os_str().to_str()?.to_string();
        (parts.next()?.as_os_str() == "root" && parts.next().is_none()).then_some(name)
    });
    names.collect()
}

/// The run dir a keeper holds for guest `name` of `run_dir`, if one does.
pub fn kept_run_dir(run_dir: &Path, name: &str) -> Option<Kept> {
    kept_run_dirs(run_dir).into_iter().find(|k| k.name == name)
}

/// [`kept_run_dirs`] of `run_dir` looked for once, when first asked, for a
/// look at many guests (`list`): each covered guest's own scan of every
/// process made a list of N covered guests N scans of /proc.
pub struct KeptOnce<'a> {
    run_dir: &'a Path,
    // Shared by `list`'s threads (at_once).
    scanned: std::sync::OnceLock<Vec<Kept>>,
}

impl<'a> KeptOnce<'a> {
    pub fn new(run_dir: &'a Path) -> KeptOnce<'a> {
        KeptOnce {
            run_dir,
            scanned: std::sync::OnceLock::new(),
        }
    }

    /// Every run dir of `run_dir` a keeper holds (scanned at the first call).
    pub fn all(&self) -> &[Kept] {
        self.scanned.get_or_init(|| kept_run_dirs(self.run_dir))
    }

    /// The run dir a keeper holds for guest `name`, if one does.
    pub fn of(&self, name: &str) -> Option<&Kept> {
        self.all().iter().find(|k| k.name == name)
    }
}
