//! Failures, refusals and damaged stores: unifs refuses before it changes
//! anything, says what a path is and what to do, and repairs what it can.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A temp dir holding `store/` and guests `g0`, `g1`, … on one filesystem.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// Guest `gI` with two shared files and one of its own.
    fn guest(&self, i: usize) -> PathBuf {
        let g = self.path(&format!("g{i}"));
        file(&g, "usr/a", &bytes(1, 5000), 0o644);
        file(&g, "usr/b", &bytes(2, 7000), 0o755);
        file(&g, "etc/own", &bytes(100 + i as u64, 3000), 0o644);
        g
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sql<T: rusqlite::types::FromSql>(store: &Path, query: &str) -> T {
    let conn = rusqlite::Connection::open_with_flags(
        store.join("catalog.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(query, [], |r| r.get(0)).unwrap()
}

fn runs_recorded(store: &Path) -> i64 {
    sql(store, "SELECT count(*) FROM runs")
}

fn object_files(store: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(store.join("objects"))
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

#[test]
fn a_catalog_of_a_newer_schema_is_refused_by_every_command_before_any_change() {
    if !require_root("a_catalog_of_a_newer_schema_is_refused") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    unify_json(&lab.store(), &[&a, &b]);
    // One object no guest links: gc would remove it.
    fs::remove_file(a.join("usr/a")).unwrap();
    fs::remove_file(b.join("usr/a")).unwrap();
    let objects = object_files(&lab.store());
    assert_eq!(objects.len(), 2);
    {
        let conn = rusqlite::Connection::open(lab.store().join("catalog.db")).unwrap();
        conn.execute_batch("PRAGMA user_version = 4").unwrap();
    }
    // A new file to link: unify would link it.
    let c = lab.guest(2);
    let commands: Vec<Vec<&dyn AsRef<std::ffi::OsStr>>> = vec![
        vec![&"unify", &a, &b],
        vec![&"unify", &"--all"],
        vec![&"unify", &c, &a],
        vec![&"unify", &"--dry-run", &a, &b],
        vec![&"store", &"gc"],
        vec![&"store", &"gc", &"--dry-run"],
        vec![&"store", &"init"],
        vec![&"store", &"verify"],
        vec![&"store", &"stats"],
        vec![&"store", &"runs"],
    ];
    for args in commands {
        let out = unifs(&lab.store(), &args);
        let args: Vec<_> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("newer than this unifs knows (3); upgrade unifs"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(runs_recorded(&lab.store()), 1, "a run was recorded");
    assert_eq!(object_files(&lab.store()), objects, "gc removed an object");
    assert_eq!(sql::<i64>(&lab.store(), "PRAGMA user_version"), 4);
    assert_eq!(
        fs::metadata(c.join("usr/b")).unwrap().len(),
        7000,
        "guest c is untouched"
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::nlink(&fs::metadata(c.join("usr/b")).unwrap()),
        1,
        "a file of guest c was linked"
    );
}
