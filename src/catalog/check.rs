//! SQLite's own check of the catalog file, run by writers before they
//! write. It reads every page (about 15 ms of a 40 ms warm re-run of unify
//! on a 10 MB catalog, 0.3-0.4 s on 200 MB), so unify runs it on a thread
//! and connection of its own, beside its walk, and waits for it only before
//! its first write; and not at all on the very file the last unify left
//! after its own check passed ([`unchanged_since_checked`]).

use super::{Catalog, Result};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// The check of a catalog opened with [`Catalog::open_checking`]: running,
/// or already passed.
pub struct Checking {
    thread: Option<JoinHandle<Result<()>>>,
}

impl Checking {
    /// A check with nothing left to do (a catalog opened some other way).
    pub fn passed() -> Checking {
        Checking { thread: None }
    }

    /// Starts the check of the file at `path` on a thread; where no thread
    /// can be had, checks it now.
    pub(super) fn start(path: &Path) -> Result<Checking> {
        let owned = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("catalog-check".into())
            .spawn(move || check_file(&owned));
        match spawned {
            Ok(thread) => Ok(Checking {
                thread: Some(thread),
            }),
            Err(_) => check_file(path).map(|()| Checking::passed()),
        }
    }

    /// Waits for the check: an error when SQLite calls the file damaged.
    /// Once it has passed, returns at once.
    pub fn wait(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok(()),
        }
    }

    /// `r`, unless it failed and the check finds the file damaged: then
    /// the check's error, which names the way out (a read of a damaged
    /// file fails with SQLite's bare "malformed").
    pub fn or_damaged<T, E: From<super::Error>>(&mut self, r: Result<T, E>) -> Result<T, E> {
        if r.is_err() {
            self.wait()?;
        }
        r
    }
}

/// Where a writer notes the catalog file it left, checked: its identity
/// and times ([`stamp`]). A file with the same stamp is that file, and no
/// one has written it since (every write changes its ctime), so the next
/// writer need not read every page again: on a catalog of a million guest
/// links (200 MB) the check was most of a re-run of one guest (0.3-0.4 s
/// warm, seconds cold), whatever that guest's size.
fn checked_record(catalog: &Path) -> PathBuf {
    catalog.with_file_name("cache").join("catalog-checked")
}

/// The catalog file's device, inode, size, mtime and ctime; `None` while
/// its write-ahead log holds anything (a connection of another process is
/// open, or a writer was killed): the log's pages are not in the stamp.
fn stamp(catalog: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(super::tidy::wal(catalog)).is_ok_and(|m| m.len() > 0) {
        return None;
    }
    let m = std::fs::symlink_metadata(catalog).ok()?;
    Some(format!(
        "{} {} {} {}.{:09} {}.{:09}\n",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// How long a check vouches for the file: a disk's bit rot changes the
/// file without a write, its ctime too, so the stamp cannot tell it; a
/// writer skipping the check would go on with it, and each writer's record
/// would vouch for it again. Once a day the check reads every page anyway
/// (seconds at most, on a thread beside unify's walk).
const CHECK_VOUCHES_FOR: u64 = 24 * 3600;

/// The time now, in unix seconds.
pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When SQLite's check last read the catalog file, if it is the one a
/// writer left after that check passed, untouched since, and the check was
/// less than [`CHECK_VOUCHES_FOR`] ago.
/// The record is renamed into place unsynced: a power cut may leave it
/// empty, torn or old, which no stamp of the file equals. A record without
/// the check's time (an unifs before 2026-12-05) vouches for nothing.
pub(super) fn unchanged_since_checked(catalog: &Path) -> Option<u64> {
    let now = stamp(catalog)?;
    let record = checked_record(catalog);
    let noted = std::fs::read(&record).ok()?;
    let checked_at = noted
        .strip_prefix(now.as_bytes())
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|rest| rest.strip_prefix("checked "))
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|t| t.parse::<u64>().ok());
    let Some(at) = checked_at else {
        tracing::debug!(
            "{}: names the catalog file otherwise than it is now (another program wrote \
             it since, or the record is torn or of an older unifs): checking it",
            crate::sys::shown(&record)
        );
        return None;
    };
    // A check in the future (the clock was set back since) has no age to
    // tell: it vouches for nothing.
    let Some(age) = self::now().checked_sub(at) else {
        tracing::debug!(
            "{}: the catalog file was last checked at {at}, in the future (the clock was set \
             back since): checking it",
            crate::sys::shown(&record)
        );
        return None;
    };
    if age >= CHECK_VOUCHES_FOR {
        tracing::debug!(
            "{}: the catalog file was last checked at {at}, a day or more ago: checking it \
             (damage a disk made would not show in its stamp)",
            crate::sys::shown(&record)
        );
        return None;
    }
    Some(at)
}

/// Notes the catalog file as it is now as checked at `checked_at` (its
/// writer closed it after its check passed, or after it skipped the check
/// on a record of that time: it must not vouch for longer). Best effort:
/// without the note, the next writer checks the file again.
pub(super) fn record_checked(catalog: &Path, checked_at: u64) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let record = checked_record(catalog);
    let Some(now) = stamp(catalog) else {
        let _ = std::fs::remove_file(&record);
        return;
    };
    let now = format!("{now}checked {checked_at}\n");
    let tmp = record.with_extension(format!("{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(now.as_bytes()));
    if written
        .and_then(|()| std::fs::rename(&tmp, &record))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn check_file(path: &Path) -> Result<()> {
    let path: PathBuf = path.to_path_buf();
    Catalog::try_open_readonly(&path, false)?.check_integrity(false)
}
