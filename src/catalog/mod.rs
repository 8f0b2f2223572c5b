//! The SQLite catalog: an index of the store (the filesystem stays the
//! truth). WAL mode, a busy timeout, schema version in `PRAGMA user_version`,
//! numbered migrations in `migrations/` applied in order. One writer at a
//! time is enforced by the store's lock, not here.

mod check;
mod migrate;
mod rows;
mod shm;
mod tidy;

pub use check::Checking;
pub use rows::{
    links_digest, CacheRow, GuestRow, ListedObject, Map, ObjectInode, ObjectRow, RunRow, RunTotals,
    StatsRow,
};

use crate::sys::parent_dir;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// (The SQLite error is part of the message, not a `source()`: rusqlite's
    /// own chain would repeat it twice more.)
    #[error("catalog {}: {error}{}{}{}", crate::sys::shown(path), damaged_hint(error, path), full_hint(*full), refused_hint(*refused))]
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
        /// Its filesystem had no space (or no inodes) left when it failed.
        full: bool,
        /// Its filesystem refused writes (EROFS or EIO) when it failed.
        refused: bool,
    },
    #[error(
        "catalog {path} has schema version {found}, newer than this unifs knows ({known}); \
         upgrade unifs"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "catalog {path}: the store is of format {found}, which this unifs does not know \
         (it knows format {known}); upgrade unifs"
    )]
    UnknownFormat {
        path: PathBuf,
        found: String,
        known: u8,
    },
    #[error(
        "catalog {path} is damaged: SQLite's integrity check reports {report}{}",
        damaged_way_out(path)
    )]
    Damaged { path: PathBuf, report: String },
    #[error("catalog {} is not readable: {why}", crate::sys::shown(path))]
    Unreadable { path: PathBuf, why: String },
    #[error(
        "catalog {}: a read of it failed (SQLite: {why}), but read again it reads in full and \
         passes SQLite's integrity check: an I/O error the disk did not repeat. The catalog is \
         sound (do not replace it): check the disk (`dmesg` shows the kernel's errors), then \
         run the command again",
        crate::sys::shown(path)
    )]
    ReadFailedOnce { path: PathBuf, why: String },
    #[error("catalog {}: bad value in {what}: {value:?}", crate::sys::shown(path))]
    BadValue {
        path: PathBuf,
        what: &'static str,
        value: String,
    },
}

/// An open catalog.
pub struct Catalog {
    /// A writer's: empties the log before `conn` closes (fields drop in
    /// order), for a reader open meanwhile to remove.
    empty: Option<tidy::Empty>,
    conn: Connection,
    path: PathBuf,
    /// The file's own connection where `conn` is a migrated copy of an
    /// older catalog: a snapshot is of the file as it is.
    file: Option<Connection>,
    /// A reader's: removes the -wal and -shm it made, once the connections
    /// above have closed (fields drop in order).
    tidy: Option<tidy::Tidy>,
    /// An immutable reader's shared hold on the store's lock: no writer
    /// changes the file under it while it is open.
    lock: Option<crate::store::WriterLock>,
    /// A writer's: when SQLite's check last read the file's every page
    /// (unix seconds), now, or as the record of a check it skipped says.
    checked_at: Option<u64>,
}

/// Creates the catalog file (empty: SQLite takes it for a new database)
/// readable by root alone, if it is not there. It names every guest path it
/// links, with size, owner and content hash, including those in directories
/// a guest keeps from other users; SQLite would make it (and its -wal and
/// -shm, which take its mode) as the umask says, 0644.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r.map(drop),
    }
}

/// The config key recording `objects/` as (dev:ino) when unify last
/// looked up every object file's inode.
pub const OBJECTS_DIR: &str = "objects_dir";

/// The config key holding the store's serial as the last writer to finish
/// left it (see [`crate::store::SERIAL_XATTR`]).
pub const STORE_SERIAL: &str = "store_serial";

/// The config key recording that object ids leave mtime out.
const IGNORE_MTIME: &str = "ignore_mtime";

impl Catalog {
    /// Opens (creating and migrating as needed) the catalog at `path`.
    /// A catalog of a newer schema than this build knows is refused before
    /// anything is written to it.
    pub fn open(path: &Path) -> Result<Catalog> {
        Catalog::open_with(path, false).map(|(cat, _)| cat)
    }

    /// [`Catalog::open`], with SQLite's check of the file left running on a
    /// thread: wait for it before the first write. (A catalog to migrate is
    /// checked at once, before the migration writes.)
    pub fn open_checking(path: &Path) -> Result<(Catalog, Checking)> {
        Catalog::open_with(path, true)
    }

    fn open_with(path: &Path, defer_check: bool) -> Result<(Catalog, Checking)> {
        shm::register();
        prefetch(path);
        // (Where it cannot be made, SQLite's open below says why.)
        let _ = create_private(path);
        let conn = Connection::open(path).map_err(|e| sqlite(path, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| sqlite(path, e))?;
        let version = migrate::check_not_newer(&conn, path)?;
        let mut cat = Catalog::setup(conn, path)?;
        let mut checking = Checking::passed();
        // (A new catalog has nothing to check.)
        cat.checked_at = Some(check::now());
        if version > 0 {
            // Before a migration writes to it.
            cat = cat.check_format()?;
            if let Some(at) = check::unchanged_since_checked(path) {
                // As the last writer left it, checked not long ago.
                cat.checked_at = Some(at);
            } else if defer_check && version == migrate::LATEST {
                checking = Checking::start(path)?;
            } else {
                cat.check_integrity(false)?;
            }
        }
        migrate::apply(&cat.conn).map_err(|e| cat.err(e))?;
        cat.empty = Some(tidy::Empty::new(path));
        Ok((cat, checking))
    }

    /// Closes the catalog of a writer whose check passed and whose writes
    /// are done, and notes the file as it leaves it checked: the next
    /// writer skips the check if nothing has written the file since.
    /// (Where the close leaves a log, another connection is open: nothing
    /// is noted.)
    pub fn close_checked(self) {
        let Catalog {
            empty,
            conn,
            path,
            file,
            checked_at,
            ..
        } = self;
        drop(empty);
        // A migrated copy in memory: the file is another one.
        let migrated = file.is_some();
        drop(file);
        if conn.close().is_ok() && !migrated {
            check::record_checked(&path, checked_at.unwrap_or_else(check::now));
        }
    }

    /// SQLite's own check of the file: `PRAGMA quick_check`, or with
    /// `full` `integrity_check` (which also matches every index against
    /// its table). A page overwritten can leave every query unifs makes
    /// working, and a writer would then add to a catalog SQLite calls
    /// malformed. (quick_check costs a writer about 15 ms on a catalog of
    /// 25,000 guest links, 10 MB, cached: unify runs it beside its walk,
    /// [`Catalog::open_checking`].)
    pub fn check_integrity(&self, full: bool) -> Result<()> {
        let pragma = if full {
            "PRAGMA integrity_check(10)"
        } else {
            "PRAGMA quick_check(10)"
        };
        let report: Vec<String> = self
            .conn
            .prepare(pragma)
            .and_then(|mut st| {
                st.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(|e| self.err(e))?;
        if report.len() == 1 && report[0] == "ok" {
            return Ok(());
        }
        // (A page the disk failed to read is reported "unable to get the
        // page".)
        if let Some(why) = read_failure(&self.path) {
            return Err(read_failed(&self.path, why));
        }
        if checks_sound(&self.path) {
            return Err(Error::ReadFailedOnce {
                path: self.path.clone(),
                why: format!("its check reported {}", report.join("; ")),
            });
        }
        Err(Error::Damaged {
            path: self.path.clone(),
            report: report.join("; "),
        })
    }

    /// Refuses a store whose object ids are of a format this build does
    /// not compute (`config.format_version`): every id would differ.
    fn check_format(self) -> Result<Catalog> {
        match self.config("format_version")? {
            Some(v) if v != crate::store::id::FORMAT_VERSION.to_string() => {
                Err(Error::UnknownFormat {
                    path: self.path.clone(),
                    found: v,
                    known: crate::store::id::FORMAT_VERSION,
                })
            }
            _ => Ok(self),
        }
    }

    /// Refuses a store whose catalog, where it can be read at all (any
    /// schema), names an object format this build does not compute. For
    /// `restore`, which needs only the objects: a catalog that is missing,
    /// damaged or of a newer schema does not stop it.
    pub fn check_format_if_readable(path: &Path) -> Result<()> {
        shm::register();
        let read = |immutable: bool| -> rusqlite::Result<Option<String>> {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = if immutable {
                Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
            } else {
                Connection::open_with_flags(path, flags)
            }?;
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.query_row(
                "SELECT value FROM config WHERE key = 'format_version'",
                [],
                |r| r.get(0),
            )
            .optional()
        };
        if !path.exists() {
            return Ok(());
        }
        // Dropped after read's connections.
        let _tidy = tidy::Tidy::new(path);
        match read(false).or_else(|_| read(true)) {
            Ok(Some(v)) if v != crate::store::id::FORMAT_VERSION.to_string() => {
                Err(Error::UnknownFormat {
                    path: path.to_path_buf(),
                    found: v,
                    known: crate::store::id::FORMAT_VERSION,
                })
            }
            _ => Ok(()),
        }
    }

    /// Opens an existing catalog for reading only (no writes; an older
    /// schema is read through a copy in memory, migrated there). A catalog
    /// not yet created (a run killed before its first commit) reads as
    /// empty.
    ///
    /// In WAL mode even a reader needs `catalog.db-shm`; where it cannot be
    /// created (a read-only filesystem or directory) the catalog is opened
    /// immutable (`file:…?immutable=1`), with the store's lock held shared
    /// so that no writer reaching the store another way changes it
    /// meanwhile. A -wal and -shm this makes are removed again at the end,
    /// where no other connection is open ([`tidy`]).
    pub fn open_readonly(path: &Path) -> Result<Catalog> {
        shm::register();
        // Only a catalog surely not there reads as empty: one that could
        // not be looked at (EIO) would make every object pass for
        // unrecorded (a manifest describing every shared file as private).
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => return Catalog::in_memory(),
            Err(e) if disk_error(&e) => {
                return Err(read_failed(path, format!("looking it up: {e}")))
            }
            Err(e) => {
                return Err(Error::Unreadable {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                })
            }
        }
        // SQLite would say only "unable to open database file".
        if let Err(nix::errno::Errno::EACCES) =
            nix::unistd::access(path, nix::unistd::AccessFlags::R_OK)
        {
            return Err(Error::Unreadable {
                path: path.to_path_buf(),
                why: "Permission denied; a store is root's alone (unifs makes its catalog mode \
                      0600: it names every guest path): run the command as root"
                    .into(),
            });
        }
        // Dropped after the connections below, on an error too.
        let tidy = tidy::Tidy::new(path);
        let cat = match Catalog::try_open_readonly(path, false) {
            Err(Error::Sqlite {
                error: rusqlite::Error::SqliteFailure(e, _),
                ..
            }) if e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK => {
                // A writer was killed mid-transaction: a read-write open
                // rolls its journal back, then reading works again.
                let conn = Connection::open(path).map_err(|e| sqlite(path, e))?;
                conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                    .map_err(|e| sqlite(path, e))?;
                drop(conn);
                Catalog::try_open_readonly(path, false)
            }
            Err(Error::Sqlite { error, .. }) if cannot_open(&error) && !dir_writable(path) => {
                tidy.disarm();
                return Catalog::open_immutable(path, error);
            }
            other => other,
        }?;
        Ok(Catalog {
            tidy: Some(tidy),
            ..cat
        })
    }

    /// The fallback of [`Catalog::open_readonly`] in a directory nobody can
    /// write to; `first` is why the ordinary read-only open failed.
    ///
    /// Immutable, SQLite takes no lock and reads no log: a writer reaching
    /// the same store another way (a read-only bind mount of it here, the
    /// writer on a writable one) would change pages under the reader, which
    /// then reads rows of two states or calls the file malformed. The
    /// store's lock, held shared while the catalog is open, keeps writers
    /// out (as it does for `restore`), and says who writes now.
    fn open_immutable(path: &Path, first: rusqlite::Error) -> Result<Catalog> {
        let lock = match crate::store::WriterLock::acquire_reading(parent_dir(path)) {
            Ok(lock) => lock,
            Err(crate::store::Error::Busy { holder, .. }) => {
                return Err(Error::Unreadable {
                    path: path.to_path_buf(),
                    why: format!(
                        "{first}: its directory is not writable here, so SQLite can read it \
                         only as a file nobody changes, and the store is being written: \
                         another process{holder} holds its lock; run the command again once \
                         that is done, or through a writable path to the store (readers \
                         there read beside a writer)"
                    ),
                })
            }
            Err(e) => {
                return Err(Error::Unreadable {
                    path: path.to_path_buf(),
                    why: format!(
                        "{first}: its directory is not writable, and the store's lock, which \
                         keeps writers out while it is read as a file nobody changes, could \
                         not be taken: {e}"
                    ),
                })
            }
        };
        // Under the lock: a writer killed left no log this reads.
        let wal = tidy::wal(path);
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
            return Err(Error::Unreadable {
                path: path.to_path_buf(),
                why: format!(
                    "{first}: its directory is not writable, and its write-ahead log {} holds \
                     changes SQLite can read only with a catalog.db-shm it cannot create there; \
                     make the directory writable once (any unifs store command then works), or \
                     copy catalog.db and catalog.db-wal to a writable place",
                    crate::sys::shown(&wal)
                ),
            });
        }
        let cat = Catalog::try_open_readonly(path, true).map_err(|e| match e {
            Error::Sqlite { error, .. } => Error::Unreadable {
                path: path.to_path_buf(),
                why: format!(
                    "{first} (its directory is not writable), and opened immutable: {error}"
                ),
            },
            e => e,
        })?;
        Ok(Catalog {
            lock: Some(lock),
            ..cat
        })
    }

    fn try_open_readonly(path: &Path, immutable: bool) -> Result<Catalog> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if immutable {
            Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
        } else {
            Connection::open_with_flags(path, flags)
        }
        .map_err(|e| sqlite(path, e))?;
        let cat = Catalog::of(conn, path.to_path_buf());
        cat.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| cat.err(e))?;
        match migrate::check_not_newer(&cat.conn, path)? {
            0 => Catalog::in_memory(),
            // An older schema: read a migrated copy. Upgrading the file
            // would be a change (a dry run makes none), and an older unifs,
            // perhaps running now, could no longer open it.
            v if v < migrate::LATEST => cat.migrated_copy()?.check_format(),
            _ => cat.check_format(),
        }
    }

    /// A copy in memory, migrated to the latest schema (an older catalog
    /// that cannot be migrated where it is).
    fn migrated_copy(self) -> Result<Catalog> {
        let mut conn =
            Connection::open_in_memory().map_err(|e| sqlite(Path::new(":memory:"), e))?;
        rusqlite::backup::Backup::new(&self.conn, &mut conn)
            .and_then(|b| b.run_to_completion(256, Duration::ZERO, None))
            .map_err(|e| self.err(e))?;
        migrate::apply(&conn).map_err(|e| self.err(e))?;
        Ok(Catalog {
            empty: self.empty,
            conn,
            path: self.path,
            file: Some(self.conn),
            tidy: self.tidy,
            lock: self.lock,
            checked_at: self.checked_at,
        })
    }

    /// A throw-away catalog (dry runs against a store that does not exist yet).
    pub fn in_memory() -> Result<Catalog> {
        let conn = Connection::open_in_memory().map_err(|e| sqlite(Path::new(":memory:"), e))?;
        let cat = Catalog::of(conn, PathBuf::from(":memory:"));
        migrate::apply(&cat.conn).map_err(|e| cat.err(e))?;
        Ok(cat)
    }

    fn setup(conn: Connection, path: &Path) -> Result<Catalog> {
        let cat = Catalog::of(conn, path.to_path_buf());
        cat.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| cat.err(e))?;
        cat.conn
            .execute_batch(
                // A cache that holds a large store's hot pages (16 MiB at most):
                // unify's inserts land all over the indexes, and a small cache
                // spills and rewrites the same pages at every commit.
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
                 PRAGMA cache_size = -16384;",
            )
            .map_err(|e| cat.err(e))?;
        Ok(cat)
    }

    /// A catalog of `conn` alone.
    fn of(conn: Connection, path: PathBuf) -> Catalog {
        Catalog {
            empty: None,
            conn,
            path,
            file: None,
            tidy: None,
            lock: None,
            checked_at: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> Error {
        sqlite(&self.path, source)
    }

    /// The underlying connection, for read-only reports.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Starts a write transaction (IMMEDIATE: takes the write lock now).
    pub fn begin(&self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))
    }

    pub fn commit(&self) -> Result<()> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }

    pub fn config(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM config WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_config(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO config(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Whether object ids of this store leave mtime out (`--ignore-mtime`).
    pub fn ignore_mtime(&self) -> Result<bool> {
        Ok(self.config(IGNORE_MTIME)?.as_deref() == Some("1"))
    }

    /// Records the store-wide settings once, at creation; later calls must agree.
    pub fn init_config(&self, ignore_mtime: bool) -> Result<bool> {
        if let Some(v) = self.config(IGNORE_MTIME)? {
            return Ok(v == "1");
        }
        self.set_config(
            "format_version",
            &crate::store::id::FORMAT_VERSION.to_string(),
        )?;
        self.set_config(IGNORE_MTIME, if ignore_mtime { "1" } else { "0" })?;
        Ok(ignore_mtime)
    }
}

/// SQLite could not open the file, or not read-only (not: it is no database).
fn cannot_open(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly))
}

/// Whether the directory holding `path` can be written (SQLite must create
/// `catalog.db-shm` there to read a WAL database the ordinary way).
///
/// access(2) alone is not enough: an ext4 that hit an error and went
/// read-only (errors=remount-ro, shown as `emergency_ro`) keeps its mount
/// read-write, so access says writable while every create fails with
/// EROFS. An unnamed temporary file (O_TMPFILE, gone on close) asks the
/// filesystem itself and leaves nothing behind.
fn dir_writable(path: &Path) -> bool {
    nix::unistd::access(parent_dir(path), nix::unistd::AccessFlags::W_OK).is_ok()
        && !fs_refuses_writes(path)
}

/// Whether the filesystem holding `path`'s directory refuses a new file
/// with EROFS or EIO (read-only, or failing).
fn fs_refuses_writes(path: &Path) -> bool {
    use nix::fcntl::OFlag;
    let probe = nix::fcntl::open(
        parent_dir(path),
        OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::S_IRUSR,
    );
    matches!(
        probe,
        Err(nix::errno::Errno::EROFS | nix::errno::Errno::EIO)
    )
}

/// `file:PATH?immutable=1`, PATH percent-encoded.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

pub(crate) fn sqlite(path: &Path, error: rusqlite::Error) -> Error {
    // SQLite reports a read the disk failed (EIO) as "database disk image
    // is malformed" (SQLITE_IOERR_CORRUPTFS, made SQLITE_CORRUPT), or as
    // "disk I/O error": its hint for a damaged catalog (replace it) would
    // be the wrong cure for a failing disk.
    if matches!(
        error.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::DatabaseCorrupt
                | rusqlite::ErrorCode::NotADatabase
                | rusqlite::ErrorCode::SystemIoFailure
        )
    ) {
        if let Some(why) = read_failure(path) {
            return read_failed(path, why);
        }
        // A read the disk failed once, then not again (the re-read above
        // passed): the damage SQLite reported is not in the file.
        if (damage_reported(&error) || read_error(&error)) && checks_sound(path) {
            return Error::ReadFailedOnce {
                path: path.to_path_buf(),
                why: error.to_string(),
            };
        }
    }
    // SQLite reports a full disk as "database or disk is full", or, where
    // it grows catalog.db-shm (a first open, even a reader's), as "disk I/O
    // error", which reads like a failing disk; with no inode left for the
    // shm (or a journal), as "unable to open database file".
    let full = matches!(
        error.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::CannotOpen
        )
    ) && fs_full(path);
    // A filesystem that failed under a writer (ext4 gone read-only after
    // an I/O error) shows as "disk I/O error" or "attempt to write a
    // readonly database", which say neither why nor what to do.
    let refused = !full
        && matches!(
            error.sqlite_error_code(),
            Some(
                rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::CannotOpen
            )
        )
        && fs_refuses_writes(path);
    Error::Sqlite {
        path: path.to_path_buf(),
        error,
        full,
        refused,
    }
}

/// How reading the catalog file `path`, or its write-ahead log, from start
/// to end fails with a disk's error ([`disk_error`]); `None` if both read. A sector the disk cannot read fails
/// each time (it never reaches the page cache), whereas a damaged page
/// reads. Only on an error path: it reads the whole file (through a
/// descriptor [`kept_open`]: a connection to the file is open).
fn read_failure(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let wal = tidy::wal(path);
    let mut buf = vec![0u8; 1 << 16];
    for file in [path, wal.as_path()] {
        let f = match kept_open(file) {
            Ok(f) => f,
            Err(e) if disk_error(&e) => return Some(format!("opening {}: {e}", name(file))),
            Err(_) => continue,
        };
        let mut at = 0u64;
        loop {
            match f.read_at(&mut buf, at) {
                Ok(0) => break,
                Ok(n) => at += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if disk_error(&e) => {
                    return Some(format!("reading {} at byte {at}: {e}", name(file)));
                }
                Err(_) => break,
            }
        }
    }
    None
}

/// `file` opened for reading, and never closed: POSIX record locks are
/// the process's, so closing any descriptor of catalog.db drops SQLite's
/// own locks on it, among them the SHARED lock each connection holds while
/// open in WAL mode. Another process closing its connection then takes
/// itself for the last one, checkpoints, and deletes catalog.db-wal and
/// -shm under ours (SQLite's "How To Corrupt An SQLite Database File",
/// 2.2). One descriptor per file (device and inode), however often asked.
fn kept_open(file: &Path) -> std::io::Result<&'static std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    type Kept = Vec<((u64, u64), &'static std::fs::File)>;
    static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Vec::new());
    let st = std::fs::metadata(file)?;
    let id = (st.dev(), st.ino());
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, f)) = kept.iter().find(|(k, _)| *k == id) {
        return Ok(f);
    }
    let f: &'static std::fs::File = Box::leak(Box::new(std::fs::File::open(file)?));
    kept.push((id, f));
    Ok(f)
}

/// Whether SQLite calls the file damaged ("malformed", "not a database").
fn damage_reported(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Whether `e` is SQLite's bare "disk I/O error" for a read of the file
/// that failed (not a write, a lock or the -shm).
fn read_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi;
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.extended_code, ffi::SQLITE_IOERR_READ | ffi::SQLITE_IOERR_SHORT_READ
            | ffi::SQLITE_IOERR_CORRUPTFS))
}

/// Whether the catalog at `path`, read again through a connection of its
/// own, passes SQLite's full integrity check (which also matches every
/// index against its table: a query can find damage `quick_check` does
/// not). Where it does, what SQLite took for damage was a read the disk
/// failed once, and the catalog must not be replaced. Only on an error
/// path: it reads every page. (A connection, not a file of our own:
/// closing that would drop SQLite's POSIX locks on the file.)
fn checks_sound(path: &Path) -> bool {
    let check = || -> rusqlite::Result<bool> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let report: Vec<String> = conn
            .prepare("PRAGMA integrity_check(1)")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(report == ["ok"])
    };
    check().unwrap_or(false)
}

/// Whether `e` is the disk's or the filesystem's failure (EIO; ext4's
/// EUCLEAN and EBADMSG for metadata it finds corrupt or failing its
/// checksum), not a permission or the like, which the catalog's own error
/// says better.
fn disk_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::ENXIO | libc::EUCLEAN | libc::EBADMSG)
    )
}

/// A file's name, without its directory (the error names the catalog).
fn name(file: &Path) -> String {
    crate::sys::shown(Path::new(file.file_name().unwrap_or(file.as_os_str())))
}

/// The catalog at `path` could not be read (`why`): the disk, not the
/// catalog, is at fault until shown otherwise.
fn read_failed(path: &Path, why: String) -> Error {
    Error::Unreadable {
        path: path.to_path_buf(),
        why: format!(
            "{why}; this is an I/O error: the disk or filesystem under it fails to read, and the \
             catalog itself may well be sound (do not replace it): check the disk (`dmesg` shows \
             the kernel's errors; fsck the filesystem unmounted; replace a failing disk, copying \
             the store off it first), then run `unifs store verify`"
        ),
    }
}

/// Whether the filesystem holding `path` is (nearly) out of space or inodes:
/// less than SQLite needs to map catalog.db-shm and grow its log.
fn fs_full(path: &Path) -> bool {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // (Free space would not help on a read-only filesystem.)
    use nix::sys::statvfs::FsFlags;
    nix::sys::statvfs::statvfs(dir).is_ok_and(|st| {
        let space = st.blocks_available().saturating_mul(st.fragment_size());
        // A count of 0 in all is none reported (btrfs inodes, a tmpfs
        // without size= or nr_inodes=), not none left.
        let no_space = st.blocks() > 0 && space < 1 << 20;
        let no_inodes = st.files() > 0 && st.files_available() == 0;
        !st.flags().contains(FsFlags::ST_RDONLY) && (no_space || no_inodes)
    })
}

fn refused_hint(refused: bool) -> String {
    match refused {
        true => format!(
            "{}: unify then finishes what was interrupted (commands that only read work there \
             meanwhile)",
            crate::sys::REFUSED_WRITES
        ),
        false => String::new(),
    }
}

fn full_hint(full: bool) -> &'static str {
    if full {
        "; the filesystem holding it is full (no space or no inodes left): free some space \
         there (`unifs store gc` removes the objects no guest links, even now) and run the \
         command again"
    } else {
        ""
    }
}

/// What to do about a catalog SQLite finds damaged.
fn damaged_hint(e: &rusqlite::Error, path: &Path) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            format!("; the catalog is damaged{}", damaged_way_out(path))
        }
        _ => String::new(),
    }
}

/// The way out of a damaged catalog at `path`.
fn damaged_way_out(path: &Path) -> String {
    // The -wal and -shm go too: SQLite would replay the damaged one's log
    // onto a snapshot copied in.
    let store = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    format!(
        ": move it out of the store with its catalog.db-wal and catalog.db-shm, those there \
         are (`mv {s}/catalog.db* DIR/`), then copy your last `unifs store snapshot` to {c}, \
         or, with no snapshot, start an empty catalog with `unifs --store {s} store init \
         --new-catalog` and unify every guest again (see docs/store-format.md)",
        s = crate::sys::shown(store),
        c = crate::sys::shown(path)
    )
}

/// Asks the kernel to read the whole file `path` ahead, in large requests:
/// with a cold cache, SQLite's page-by-page reads of a table scan otherwise
/// wait on one small read at a time. Only a hint: errors are ignored.
/// (Through a descriptor [`kept_open`]: another connection of this process
/// may hold locks on the file.)
fn prefetch(path: &Path) {
    if let Ok(f) = kept_open(path) {
        // SAFETY: fadvise on an open fd, with no pointers.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_uris_escape_what_a_uri_would_read() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/unifs/catalog.db")),
            "file:/var/lib/unifs/catalog.db?immutable=1"
        );
        assert_eq!(
            immutable_uri(Path::new("/a b/%?#/c.db")),
            "file:/a%20b/%25%3F%23/c.db?immutable=1"
        );
    }
}
