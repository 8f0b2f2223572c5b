//! SQLite's own check of the catalog file, run by writers before they
//! write. It reads every page (about 15 ms of a 40 ms warm re-run of unify
//! on a 10 MB catalog), so unify runs it on a thread and connection of its
//! own, beside its walk, and waits for it only before its first write.

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

fn check_file(path: &Path) -> Result<()> {
    let path: PathBuf = path.to_path_buf();
    Catalog::try_open_readonly(&path, false)?.check_integrity(false)
}
