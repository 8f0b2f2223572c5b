//! The run dirs running keepers hold open ([`super::state::HeldRunDir`]).
//! A guest's run dir covered by a mount made over it (a tmpfs over /run)
//! hides its record from its path; the keeper's open directory still
//! leads to it, through /proc/KEEPER/fd/N, for `status` and `list`.

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
    let keepers = procs.flatten().map(|e| e.path()).filter(|p| {
        std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim_end() == KEEPER_COMM)
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
            if target.parent() != Some(run_dir.as_path()) {
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

/// The run dir a keeper holds for guest `name` of `run_dir`, if one does.
pub fn kept_run_dir(run_dir: &Path, name: &str) -> Option<Kept> {
    kept_run_dirs(run_dir).into_iter().find(|k| k.name == name)
}
