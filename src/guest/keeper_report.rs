//! The report of `unifs run`'s keeper ([`super::run_keeper`]) when it could
//! not clean up after a killed run: written by the keeper ([`Report`]),
//! shown once and removed by the next run or start ([`tell_reports`]), and
//! shown, left in place, by `guest list` and `status` ([`pending`]).

use super::cgroup::{self, Cgroup};
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the keeper of the run `run` (`run-PID-TAG`) reports: in the run
/// dir `reports` (RUN_DIR), `run-PID-TAG.keeper` (no guest is named so).
pub fn report_path(reports: &Path, run: &str) -> PathBuf {
    reports.join(format!("{run}{REPORT}"))
}

const REPORT: &str = ".keeper";

/// The first line of a report, `# unifs-keeper PID`, written once its
/// keeper holds the lock: a report that says nothing more and is not
/// locked is a keeper that ended before it was done (killed).
const HEADER: &str = "# unifs-keeper ";

/// A keeper's report, its stderr once its run is dead (its own warnings,
/// those of the cgroup code it calls, a panic's words), locked (flock)
/// while it works; removed if it said nothing. The next `unifs run` or
/// `guest start` shows what it says ([`tell_reports`]).
pub(super) struct Report {
    file: Flock<std::fs::File>,
    path: PathBuf,
    /// Its length with the header alone.
    header_len: u64,
}

impl Report {
    /// None if it cannot be made: the keeper works on all the same.
    pub(super) fn open(path: &Path) -> Option<Report> {
        // Root's alone, as `guest start` makes it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path.parent()?)
            .ok()?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            // A FIFO of that name (put there by whoever can write the run
            // dir) is not waited on for a reader: ENXIO at once.
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .ok()?;
        // Nor is a device node of that name written to.
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return None;
        }
        let file = Flock::lock(file, FlockArg::LockExclusive).ok()?;
        let _ = writeln!(&*file, "{HEADER}{}", std::process::id());
        let header_len = file.metadata().map_or(0, |m| m.len());
        nix::unistd::dup2_stderr(&*file).ok()?;
        Some(Report {
            file,
            path: path.to_path_buf(),
            header_len,
        })
    }

    /// Nothing went wrong: nothing to tell.
    pub(super) fn close(self) {
        if self
            .file
            .metadata()
            .is_ok_and(|m| m.len() <= self.header_len)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How old a report may be and still be empty (without its header) for the
/// work of a keeper that has not locked it yet (a moment after it made it).
const UNLOCKED_EMPTY: Duration = Duration::from_secs(10);

/// What a report in the run dir tells of its keeper.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    /// Still at work: its report locked (or just made).
    AtWork,
    /// Ended before it was done (killed): its report says nothing.
    Unfinished,
    /// Done, with what it could not do in its report.
    Reported,
}

/// A keeper's report, read ([`pending`]).
#[derive(Debug, Clone, Serialize)]
pub struct KeeperReport {
    /// The killed run's name, its groups' (`run-PID-TAG`), and its pid.
    pub run: String,
    pub run_pid: Option<u32>,
    /// The keeper's pid, from its report's first line.
    pub keeper_pid: Option<u32>,
    #[serde(flatten, serialize_with = "crate::sys::json_path")]
    pub path: PathBuf,
    pub state: ReportState,
    /// Its lines.
    pub said: Vec<Said>,
    /// What is in the run's groups now (none while the keeper is at work).
    pub left: Vec<Left>,
}

/// A line of a report: when (if its log line says), and what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Said {
    pub time: Option<String>,
    pub message: String,
}

/// A process in a killed run's groups: which, and what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Left {
    pub pid: i32,
    pub command: String,
    pub note: String,
}

/// A report found in the run dir, with the lock asked for where its
/// keeper does not hold it.
struct Found {
    report: KeeperReport,
    lock: Option<Flock<std::fs::File>>,
}

/// The keepers' reports in the run dir `reports`, by run, each locked
/// with `lock` (non-blocking) where its keeper does not hold it.
fn find(reports: &Path, lock: FlockArg) -> Vec<Found> {
    let Ok(dir) = std::fs::read_dir(reports) else {
        return Vec::new();
    };
    let mut found: Vec<Found> = dir
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let run = name.to_str()?.strip_suffix(REPORT)?;
            run.starts_with("run-")
                .then(|| read(&entry.path(), run, lock))?
        })
        .collect();
    found.sort_by(|a, b| a.report.run.cmp(&b.report.run));
    found
}

/// The report at `path` of the run `run`.
fn read(path: &Path, run: &str, lock: FlockArg) -> Option<Found> {
    // A keeper's own file only: a FIFO of that name (put there by whoever
    // can write the run dir) made every `run`, `guest start`, `list` and
    // `status` wait for a writer, for good. Opened without waiting, then
    // looked at.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return None;
    }
    let run_pid = run.split('-').nth(1).and_then(|p| p.parse().ok());
    let mut report = KeeperReport {
        run: run.to_string(),
        run_pid,
        keeper_pid: None,
        path: path.to_path_buf(),
        state: ReportState::AtWork,
        said: Vec::new(),
        left: Vec::new(),
    };
    let Ok(file) = Flock::lock(file, lock) else {
        return Some(Found { report, lock: None });
    };
    let mut text = Vec::new();
    let _ = (&*file).take(64 << 10).read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match line.strip_prefix(HEADER) {
            Some(pid) => report.keeper_pid = pid.trim().parse().ok(),
            None => {
                let (time, message) = logged(line);
                report.said.push(Said { time, message });
            }
        }
    }
    let age = file.metadata().and_then(|m| m.modified());
    let fresh = age.is_ok_and(|t| t.elapsed().is_ok_and(|a| a < UNLOCKED_EMPTY));
    report.state = match (report.said.is_empty(), report.keeper_pid) {
        (false, _) => ReportState::Reported,
        // Made, not locked yet, or its keeper killed in that moment.
        (true, None) if fresh => ReportState::AtWork,
        (true, _) => ReportState::Unfinished,
    };
    Some(Found {
        report,
        lock: Some(file),
    })
}

/// Who made the report `r`, as its warnings name it.
fn keeper_of(r: &KeeperReport) -> String {
    let pid = r.run_pid.map_or("?".into(), |p| p.to_string());
    format!(
        "the keeper of the killed `unifs run` (pid {pid}, groups unifs/{})",
        r.run
    )
}

/// Shows, once each, what the keepers of killed runs reported in the run
/// dir `reports`, and removes their reports. One still being written
/// (locked) waits for the next run or start.
pub fn tell_reports(reports: &Path) {
    for found in find(reports, FlockArg::LockExclusiveNonblock) {
        let r = &found.report;
        if r.state == ReportState::AtWork {
            continue;
        }
        let keeper = keeper_of(r);
        if r.state == ReportState::Unfinished {
            tracing::warn!(
                "{keeper} ended before it was done (killed?): what is left in those groups is \
                 ended by this or a later `unifs run` or `guest start`"
            );
        }
        for said in &r.said {
            match &said.time {
                Some(when) => tracing::warn!("{keeper} reported at {when}: {}", said.message),
                None => tracing::warn!("{keeper} reported: {}", said.message),
            }
        }
        let _ = std::fs::remove_file(&r.path);
    }
}

/// The keepers' reports in the run dir `reports`, left in place (for
/// `guest list` and `status`), with what is in each run's groups now.
pub fn pending(reports: &Path) -> Vec<KeeperReport> {
    let mut all = Vec::new();
    // A shared lock, let go at once: a run or start that meets it in that
    // moment leaves the report to the next one.
    for Found { mut report, lock } in find(reports, FlockArg::LockSharedNonblock) {
        drop(lock);
        if report.state != ReportState::AtWork {
            let groups = Cgroup::tracked(&report.run);
            let mut pids = groups.pids();
            pids.extend(groups.daemon_pids());
            report.left = pids
                .into_iter()
                .map(|pid| Left {
                    pid,
                    command: cgroup::command_of(pid),
                    note: cgroup::left_by_killed_run(pid),
                })
                .collect();
        }
        all.push(report);
    }
    all
}

/// The warnings `guest list` and `status` give of the report `r`, a line
/// each.
pub fn describe(r: &KeeperReport) -> Vec<String> {
    let keeper = keeper_of(r);
    let report = crate::sys::shown(&r.path);
    if r.state == ReportState::AtWork {
        return vec![format!(
            "{keeper} is at work on what the run left (its report {report} is not done)"
        )];
    }
    let mut lines = Vec::new();
    if r.state == ReportState::Unfinished {
        lines.push(format!("{keeper} ended before it was done (killed?)"));
    }
    for said in &r.said {
        match &said.time {
            Some(when) => lines.push(format!("{keeper} reported at {when}: {}", said.message)),
            None => lines.push(format!("{keeper} reported: {}", said.message)),
        }
    }
    for left in &r.left {
        lines.push(format!("{keeper}: still left: {}", left.note));
    }
    let now = match r.left.len() {
        0 => "nothing is left in its groups now".to_string(),
        n => format!(
            "{} left in its groups now (above)",
            crate::words::counted(n as u64, "process", "processes")
        ),
    };
    lines.push(format!(
        "{keeper}: {now}; the next `unifs run` or `guest start` with this run dir shows its \
         report {report} once more and removes it"
    ));
    lines
}

/// A line of the log format (`TIME  LEVEL MESSAGE`, colours or not) as
/// its time and message; any other line as its text.
fn logged(line: &str) -> (Option<String>, String) {
    let plain = strip_colours(line);
    let parsed = plain.split_once(' ').and_then(|(time, rest)| {
        let (level, said) = rest.trim_start().split_once(' ')?;
        let is_time = time.ends_with('Z') && time.contains('T');
        let is_level = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level);
        (is_time && is_level).then(|| (Some(time.to_string()), said.trim_start().to_string()))
    });
    parsed.unwrap_or((None, plain))
}

/// `line` without the terminal's colour sequences (`ESC [ … m`).
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_is_its_time_and_message() {
        let line = "2026-12-04T14:05:11.491386Z  WARN process 7 (sleep) survived";
        assert_eq!(
            logged(line),
            (
                Some("2026-12-04T14:05:11.491386Z".to_string()),
                "process 7 (sleep) survived".to_string()
            )
        );
        let coloured = "\x1b[2m2026-12-04T14:05:11Z\x1b[0m \x1b[33m WARN\x1b[0m gone";
        let time = Some("2026-12-04T14:05:11Z".to_string());
        assert_eq!(logged(coloured), (time, "gone".to_string()));
        let panic = "unifs: the keeper of `unifs run` (pid 9) failed";
        assert_eq!(logged(panic), (None, panic.to_string()));
    }
}
