//! The SQLite catalog: an index of the store (the filesystem stays the
//! truth). WAL mode, a busy timeout, schema version in `PRAGMA user_version`,
//! numbered migrations in `migrations/` applied in order. One writer at a
//! time is enforced by the store's lock, not here.

mod migrate;
mod rows;

pub use rows::{
    links_digest, CacheRow, GuestRow, ListedObject, Map, ObjectInode, ObjectRow, RunRow, RunTotals,
    StatsRow,
};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalog {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
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
    #[error("catalog {path}: bad value in {what}: {value:?}")]
    BadValue {
        path: PathBuf,
        what: &'static str,
        value: String,
    },
}

/// An open catalog.
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

/// The config key recording that object ids leave mtime out.
const IGNORE_MTIME: &str = "ignore_mtime";

impl Catalog {
    /// Opens (creating and migrating as needed) the catalog at `path`.
    /// A catalog of a newer schema than this build knows is refused before
    /// anything is written to it.
    pub fn open(path: &Path) -> Result<Catalog> {
        let conn = Connection::open(path).map_err(|e| sqlite(path, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| sqlite(path, e))?;
        migrate::check_not_newer(&conn, path)?;
        let cat = Catalog::setup(conn, path)?;
        migrate::apply(&cat.conn).map_err(|e| cat.err(e))?;
        Ok(cat)
    }

    /// Opens an existing catalog for reading only (no migration, no writes).
    /// A catalog not yet created (a run killed before its first commit) reads
    /// as empty.
    pub fn open_readonly(path: &Path) -> Result<Catalog> {
        if !path.exists() {
            return Catalog::in_memory();
        }
        match Catalog::try_open_readonly(path) {
            Err(Error::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            }) if e.extended_code == rusqlite::ffi::SQLITE_READONLY_ROLLBACK => {
                // A writer was killed mid-transaction: a read-write open
                // rolls its journal back, then reading works again.
                let conn = Connection::open(path).map_err(|e| sqlite(path, e))?;
                conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                    .map_err(|e| sqlite(path, e))?;
                drop(conn);
                Catalog::try_open_readonly(path)
            }
            other => other,
        }
    }

    fn try_open_readonly(path: &Path) -> Result<Catalog> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sqlite(path, e))?;
        let cat = Catalog {
            conn,
            path: path.to_path_buf(),
        };
        cat.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(|e| cat.err(e))?;
        match migrate::check_not_newer(&cat.conn, path)? {
            0 => Catalog::in_memory(),
            v if v < migrate::LATEST => {
                // An older schema: bring it up to date once, then read.
                drop(cat);
                drop(Catalog::open(path)?);
                Catalog::try_open_readonly(path)
            }
            _ => Ok(cat),
        }
    }

    /// A throw-away catalog (dry runs against a store that does not exist yet).
    pub fn in_memory() -> Result<Catalog> {
        let conn = Connection::open_in_memory().map_err(|e| sqlite(Path::new(":memory:"), e))?;
        let cat = Catalog {
            conn,
            path: PathBuf::from(":memory:"),
        };
        migrate::apply(&cat.conn).map_err(|e| cat.err(e))?;
        Ok(cat)
    }

    fn setup(conn: Connection, path: &Path) -> Result<Catalog> {
        let cat = Catalog {
            conn,
            path: path.to_path_buf(),
        };
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

fn sqlite(path: &Path, source: rusqlite::Error) -> Error {
    Error::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}
