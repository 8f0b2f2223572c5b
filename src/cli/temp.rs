//! Temp names of the files that `manifest -o`, `--private-list` and `store
//! snapshot` write and rename over their FILE when complete:
//! `FILE.tmp-PID` (or `.unifs-manifest.tmp-PID-N` / `.unifs-snapshot.tmp-PID`
//! where FILE's name leaves no room). A run interrupted by a signal or
//! killed leaves its temp file behind (no partial FILE); the next run that
//! writes beside it removes it, once no process holds it.

use super::output;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Creates `tmp` (root's alone: what these files hold is the catalog's to
/// see) and takes an exclusive flock on it for as long as the file stays
/// open, which tells [`remove_stale`] it is in use, also from another PID
/// namespace.
pub fn create(tmp: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)?;
    // Ours alone just made: it cannot be held elsewhere but for a moment
    // by a `remove_stale` checking it, which then leaves it.
    let _ = crate::fs::sys::try_flock(file.as_fd(), true);
    Ok(file)
}

/// Removes the temp files that runs writing `dest` left beside it: names
/// `DEST.tmp-PID` (and SQLite's `-journal`, `-wal`, `-shm` of them) or
/// `long_prefix.tmp-PID…`, whose PID no longer runs and which no process
/// holds locked. Best effort: what cannot be removed stays.
pub fn remove_stale(dest: &Path, long_prefix: &str) {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut ours = name.to_owned();
    ours.push(".tmp-");
    let long = format!("{long_prefix}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let found = e.file_name();
        let rest = [ours.as_bytes(), long.as_bytes()]
            .into_iter()
            .find_map(|p| found.as_bytes().strip_prefix(p));
        let Some(pid) = rest.and_then(leading_pid) else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        remove_if_free(&dir.join(&found));
    }
}

/// The pid a temp name's tail starts with (`PID`, `PID-N`, `PID-journal`).
fn leading_pid(rest: &[u8]) -> Option<u32> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let tail = &rest[digits..];
    let known = tail.is_empty()
        || [&b"-journal"[..], b"-wal", b"-shm"].contains(&tail)
        || (tail.len() > 1 && tail[0] == b'-' && tail[1..].iter().all(u8::is_ascii_digit));
    if digits == 0 || digits > 10 || !known {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Unlinks the regular file at `path` unless a process holds it locked.
fn remove_if_free(path: &Path) {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return;
    };
    let free = file.metadata().is_ok_and(|m| m.is_file())
        && crate::fs::sys::try_flock(file.as_fd(), true).unwrap_or(false);
    if free {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!("removed {}, left by an interrupted run", output::path(path)),
            Err(e) => tracing::debug!("removing {}: {e}", output::path(path)),
        }
    }
}

/// `dest`'s temp name for this process: `DEST.tmp-PID`, or where that
/// would pass NAME_MAX with `reserve` bytes more (SQLite's `-journal`),
/// `long_prefix.tmp-PID` with `-N` from `n`.
pub fn name_for(dest: &Path, long_prefix: &str, reserve: usize, n: Option<u32>) -> PathBuf {
    let suffix = format!(".tmp-{}", std::process::id());
    let mut name: OsString = dest.file_name().unwrap_or(OsStr::new("")).to_owned();
    name.push(&suffix);
    if name.len() + reserve > 255 {
        name = match n {
            Some(n) => format!("{long_prefix}{suffix}-{n}"),
            None => format!("{long_prefix}{suffix}"),
        }
        .into();
    }
    dest.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_pid_takes_only_temp_tails() {
        assert_eq!(leading_pid(b"123"), Some(123));
        assert_eq!(leading_pid(b"123-4"), Some(123));
        assert_eq!(leading_pid(b"123-journal"), Some(123));
        assert_eq!(leading_pid(b"123-wal"), Some(123));
        for no in [&b""[..], b"x1", b"12.bak", b"12-", b"12-x", b"12345678901"] {
            assert_eq!(leading_pid(no), None, "{:?}", String::from_utf8_lossy(no));
        }
    }
}
