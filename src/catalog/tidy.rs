//! A reader leaves the store as it found it. In WAL mode SQLite makes
//! `catalog.db-wal` and `-shm` at a connection's first read and deletes
//! them when the last connection closes, but only a connection that can
//! checkpoint does (SQLite's close checkpoints, then deletes): a read-only
//! one never can, so every read-only command left both behind, empty, in a
//! store at rest that had neither (a backup saw files come and go; a store
//! copy kept for reading got files added).
//! A writer, for its part, empties the log before it closes ([`Empty`]):
//! where a reader is open then, the writer's close cannot remove the
//! files, and the reader may remove only an empty log.

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Held by a read-only catalog; on drop, after its connection has closed,
/// has SQLite remove the empty -wal and -shm where no one else uses them.
#[derive(Debug)]
pub(super) struct Tidy {
    /// None: nothing to do (disarmed).
    path: Option<PathBuf>,
}

impl Tidy {
    pub(super) fn new(path: &Path) -> Tidy {
        Tidy {
            path: Some(path.to_path_buf()),
        }
    }

    /// Where the reader made nothing (an immutable open).
    pub(super) fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for Tidy {
    /// A read-write connection, opened and closed: SQLite's own close then
    /// deletes both files, and only where it takes the EXCLUSIVE lock on
    /// catalog.db, which it cannot while any other connection is open, in
    /// any process (each holds a SHARED lock while open in WAL mode). So a
    /// log another process uses is never deleted under it.
    ///
    /// A log with changes in it is a writer's, running, killed, or one that
    /// committed and closed while this connection was open: the close
    /// would first checkpoint them into catalog.db, a write a command that
    /// only reads must not make. The connection is of the tidy's VFS
    /// ([`super::shm::TIDY`]), which lets the close have the EXCLUSIVE lock
    /// only where the log is empty, looked at while it holds it.
    fn drop(&mut self) {
        let Some(path) = &self.path else {
            return;
        };
        // (None at all: nothing to tidy, and the connection would only
        // make one. One with changes: nothing it may do.)
        match std::fs::symlink_metadata(wal(path)) {
            Ok(m) if m.len() == 0 => {}
            _ => return,
        }
        // (Not CREATE: a catalog gone since is not made again.)
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let Ok(conn) = Connection::open_with_flags_and_vfs(path, flags, super::shm::TIDY) else {
            return;
        };
        let _ = conn.busy_timeout(Duration::from_secs(1));
        // SQLite opens the log at the first read.
        let _ = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
        // The tests' hold on the moment a writer could commit and close.
        crate::sys::test_stop!("UNIFS_TEST_TIDY_STOP");
        let _ = conn.close();
    }
}

/// Held by a writer's catalog; on drop, before its connection closes, has
/// the log emptied into catalog.db. The close, the last connection's,
/// would do it (then delete both files), but where a reader is open it
/// cannot, and the log kept the writer's changes, with the -shm, until the
/// next writer; emptied (`wal_checkpoint(TRUNCATE)`, 0 bytes left), the
/// reader's own tidy removes both.
#[derive(Debug)]
pub(super) struct Empty {
    path: PathBuf,
}

impl Empty {
    pub(super) fn new(path: &Path) -> Empty {
        Empty {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Empty {
    /// A connection of its own (the writer's is borrowed by nothing here):
    /// a checkpoint is of the file, whichever connection runs it. Without
    /// waiting: a reader in the middle of a read, which TRUNCATE would
    /// wait for, leaves the log as it was (the next writer empties it).
    fn drop(&mut self) {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let Ok(conn) = Connection::open_with_flags(&self.path, flags) else {
            return;
        };
        let _ = conn.busy_timeout(Duration::ZERO);
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        let _ = conn.close();
    }
}

/// `catalog.db-wal` beside `path`.
pub(super) fn wal(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}
