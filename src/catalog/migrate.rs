//! Migrations: `migrations/NNNN_*.sql`, applied in order inside one
//! transaction each; `PRAGMA user_version` holds the last applied number.
//! Kept free of domain types so it never churns.

use super::{Error, Result};
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init.sql",
        include_str!("../../migrations/0001_init.sql"),
    ),
    (
        2,
        "0002_views.sql",
        include_str!("../../migrations/0002_views.sql"),
    ),
    (
        3,
        "0003_links_digest.sql",
        include_str!("../../migrations/0003_links_digest.sql"),
    ),
    (
        4,
        "0004_guest_files_path_bytes.sql",
        include_str!("../../migrations/0004_guest_files_path_bytes.sql"),
    ),
    (
        5,
        "0005_guest_root.sql",
        include_str!("../../migrations/0005_guest_root.sql"),
    ),
    (
        6,
        "0006_drop_old_hash_cache.sql",
        include_str!("../../migrations/0006_drop_old_hash_cache.sql"),
    ),
];

/// The schema version this build writes.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub fn apply(conn: &Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (version, file, sql) in MIGRATIONS.iter().filter(|(v, ..)| *v > current) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // Re-read under the write lock: another process may have migrated.
        let now: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now >= *version {
            conn.execute_batch("COMMIT")?;
            continue;
        }
        let result = prepare(conn, *version)
            .and_then(|_| conn.execute_batch(sql))
            .and_then(|_| conn.execute_batch(&format!("PRAGMA user_version = {version}")));
        match result {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(failed(e, *version, file));
            }
        }
    }
    Ok(())
}

/// A failed migration's error: which one, that the catalog stays as it was,
/// and SQLite's message without the migration's whole SQL (which rusqlite
/// puts in an input error's text).
fn failed(e: rusqlite::Error, version: i64, file: &str) -> rusqlite::Error {
    let (code, msg) = match e {
        rusqlite::Error::SqlInputError { error, msg, .. } => (error, msg),
        rusqlite::Error::SqliteFailure(error, msg) => {
            (error, msg.unwrap_or_else(|| error.to_string()))
        }
        other => return other,
    };
    rusqlite::Error::SqliteFailure(
        code,
        Some(format!(
            "upgrading the catalog to schema {version} (migrations/{file}) failed: {msg}; \
             rolled back: the catalog stays at schema {}",
            version - 1
        )),
    )
}

/// What migration `version` needs done first in a catalog an older build
/// wrote differently from today's `0001_init.sql`.
fn prepare(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    // The first builds (store format 1 as docs/store-format.md described it
    // then) named the links table `guest_files`, which migration 2 gives
    // its view: such a catalog failed every command with 'table guest_files
    // already exists'. It gets today's names.
    if version == 2 && is_table(conn, "guest_files")? && !is_table(conn, "guest_links")? {
        conn.execute_batch(
            "ALTER TABLE guest_files RENAME TO guest_links;
             DROP INDEX IF EXISTS guest_files_by_object;
             CREATE INDEX guest_links_by_object ON guest_links(object_id);",
        )?;
    }
    Ok(())
}

fn is_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Returns the schema version, refusing one newer than this build knows.
pub fn check_not_newer(conn: &Connection, path: &Path) -> Result<i64> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| super::sqlite(path, e))?;
    if found > LATEST {
        return Err(Error::TooNew {
            path: path.to_path_buf(),
            found,
            known: LATEST,
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_apply_twice() {
        let numbers: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(numbers, expected);
        let conn = Connection::open_in_memory().unwrap();
        apply(&conn).unwrap();
        apply(&conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, LATEST);
    }
}
