//! Migrations: `migrations/NNNN_*.sql`, applied in order inside one
//! transaction each; `PRAGMA user_version` holds the last applied number.
//! Kept free of domain types so it never churns.

use super::{Error, Result};
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_views.sql")),
    (3, include_str!("../../migrations/0003_links_digest.sql")),
];

/// The schema version this build writes.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub fn apply(conn: &Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // Re-read under the write lock: another process may have migrated.
        let now: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now >= *version {
            conn.execute_batch("COMMIT")?;
            continue;
        }
        let result = conn
            .execute_batch(sql)
            .and_then(|_| conn.execute_batch(&format!("PRAGMA user_version = {version}")));
        match result {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
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
