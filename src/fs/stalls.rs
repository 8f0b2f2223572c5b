//! Refusing a path in a FUSE mount whose daemon does not answer (stopped,
//! hung): any lookup there waits for good. One [`StallCheck`] reads the
//! mount table once for all the paths a command checks.

use super::mountinfo;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The mount table as read once, and the answer each FUSE mount asked
/// gave (a mount is asked at most once, however many paths lie in it).
pub struct StallCheck {
    /// (mount point, guest when a unifs mount) of each FUSE mount.
    fuse: Vec<(PathBuf, Option<PathBuf>)>,
    /// Every mount point: a mount's root is never a symlink, and a stat
    /// of a FUSE mount's root asks its daemon.
    points: HashSet<PathBuf>,
    /// Mount point → why it is refused (None: it answers).
    asked: RefCell<HashMap<PathBuf, Option<String>>>,
    /// How long more a unifs daemon that runs (busy, not stopped) is given.
    busy_limit: Duration,
}

/// The 2 s any FUSE mount is given to answer statfs.
const ANSWER_LIMIT: Duration = Duration::from_secs(2);

/// How long more a unifs daemon that runs is given, unless told otherwise
/// ([`StallCheck::busy_limit`]).
const BUSY_LIMIT: Duration = Duration::from_secs(30);

/// Symlinks followed before a path is left to the caller (as the kernel's
/// ELOOP limit).
const MAX_LINKS: usize = 40;

impl StallCheck {
    /// Reads /proc/self/mountinfo.
    pub fn new() -> io::Result<StallCheck> {
        let mounts = mountinfo::read()?;
        Ok(StallCheck {
            fuse: mounts
                .iter()
                .filter(|m| m.fstype.starts_with("fuse"))
                .map(|m| (m.point.clone(), m.unifs_guest()))
                .collect(),
            points: mounts.into_iter().map(|m| m.point).collect(),
            asked: RefCell::default(),
            busy_limit: BUSY_LIMIT,
        })
    }

    /// Gives a unifs daemon that runs but is slow to answer (busy) only
    /// `limit` more, not 30 s: for `guest list`, where one guest's busy
    /// mount must not hold up the listing of all.
    pub fn busy_limit(mut self, limit: Duration) -> StallCheck {
        self.busy_limit = limit;
        self
    }

    /// Refuses `path` at once when a FUSE mount at or above it, as given
    /// or through its symlinks, does not answer: any look at `path` would
    /// wait for good.
    pub fn refuse(&self, path: &Path) -> io::Result<()> {
        self.check(path, false)
    }

    /// [`StallCheck::refuse`]; with `inside_only`, a mount at the path
    /// itself is left out (its caller asks it in a bounded way).
    pub(super) fn check(&self, path: &Path, inside_only: bool) -> io::Result<()> {
        let path = std::path::absolute(path)?;
        // As given (a mount at or above its text), then along the way a
        // lookup takes: a symlink into a stopped mount (`/srv/link ->
        // /mnt/sshfs/dir`) leads there too.
        self.above(&path, inside_only)?;
        self.along(&path, inside_only)
    }

    /// Walks `path` component by component as the kernel resolves it,
    /// following symlinks, each directory's mounts checked before a name
    /// is looked up in it. Stops quietly where a name does not resolve:
    /// the caller's own look says why.
    fn along(&self, path: &Path, inside_only: bool) -> io::Result<()> {
        let mut todo: Vec<PathBuf> = vec![path.to_path_buf()];
        let mut at = PathBuf::from("/");
        let mut links = 0;
        while let Some(next) = todo.pop() {
            let mut parts = next.components();
            let Some(part) = parts.next() else {
                continue;
            };
            let rest = parts.as_path();
            if !rest.as_os_str().is_empty() {
                todo.push(rest.to_path_buf());
            }
            let name = match part {
                Component::RootDir => {
                    at = PathBuf::from("/");
                    continue;
                }
                Component::CurDir | Component::Prefix(_) => continue,
                Component::ParentDir => {
                    at.pop();
                    continue;
                }
                Component::Normal(name) => name,
            };
            self.above(&at, false)?;
            let here = at.join(name);
            if self.points.contains(&here) {
                at = here;
                continue;
            }
            match std::fs::symlink_metadata(&here) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    let Ok(target) = std::fs::read_link(&here) else {
                        return Ok(());
                    };
                    if links > MAX_LINKS {
                        return Ok(());
                    }
                    todo.push(target);
                }
                Ok(_) => at = here,
                Err(_) => return Ok(()),
            }
        }
        self.above(&at, inside_only)
    }

    /// Refuses the absolute `path` when a FUSE mount at or above it (above
    /// only with `inside_only`) does not answer statfs in 2 s.
    fn above(&self, path: &Path, inside_only: bool) -> io::Result<()> {
        let mut above: Vec<&(PathBuf, Option<PathBuf>)> = self
            .fuse
            .iter()
            .filter(|(p, _)| path.starts_with(p) && !(inside_only && p == path))
            .collect();
        // Outermost first: a stopped one hangs every look below it.
        above.sort_by_key(|(m, _)| m.components().count());
        above.dedup();
        for (m, guest) in above {
            let known = self.asked.borrow().get(m).cloned();
            let refused = match known {
                Some(refused) => refused,
                None => {
                    let refused = refusal(m, guest.as_deref(), self.busy_limit);
                    self.asked.borrow_mut().insert(m.clone(), refused.clone());
                    refused
                }
            };
            if let Some(why) = refused {
                return Err(io::Error::new(io::ErrorKind::TimedOut, why));
            }
        }
        Ok(())
    }
}

/// Why the FUSE mount at `m` (serving `guest`, a unifs mount) is refused,
/// if its daemon does not answer statfs in 2 s (`busy_limit` more for a
/// unifs daemon that runs).
fn refusal(m: &Path, guest: Option<&Path>, busy_limit: Duration) -> Option<String> {
    use crate::guest::state::{root_health, RootHealth};
    let mut health = root_health(m, ANSWER_LIMIT);
    // A guest served over itself, or inside the mount, is reached only
    // through the daemon that does not answer.
    let daemon = || {
        guest
            .filter(|g| !g.starts_with(m))
            .and_then(super::guest_daemon)
    };
    // A unifs daemon that runs is busy (a long break, a flood of
    // requests), not stopped: it is given longer.
    if health == RootHealth::NoAnswer && daemon().is_some_and(|(_, stopped)| !stopped) {
        health = root_health(m, busy_limit);
    }
    if health != RootHealth::NoAnswer {
        return None;
    }
    let what = match daemon() {
        Some((pid, false)) => format!(
            "whose daemon (pid {pid}) runs but has not answered in {} s: it is busy (a long \
             break of a large file, a flood of requests) or hung; try again later",
            (ANSWER_LIMIT + busy_limit).as_secs()
        ),
        Some((pid, true)) => format!(
            "whose daemon (pid {pid}) does not answer: it is stopped (SIGSTOP, or a \
             debugger holds it); `kill -CONT {pid}` lets it go on, or unmount it first"
        ),
        _ => "whose daemon does not answer (stopped?); let its daemon go on, or unmount it \
              first"
            .into(),
    };
    Some(format!(
        "it is in the FUSE mount at {}, {what}",
        crate::sys::shown(m)
    ))
}
