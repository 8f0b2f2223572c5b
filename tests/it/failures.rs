//! Failures, refusals and damaged stores: unifs refuses before it changes
//! anything, says what a path is and what to do, and repairs what it can.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::path::{Path, PathBuf};

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
        conn.execute_batch("PRAGMA user_version = 7").unwrap();
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
        vec![&"store", &"forget", &a],
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
            err.contains("newer than this unifs knows (6); upgrade unifs"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(runs_recorded(&lab.store()), 1, "a run was recorded");
    assert_eq!(object_files(&lab.store()), objects, "gc removed an object");
    assert_eq!(sql::<i64>(&lab.store(), "PRAGMA user_version"), 7);
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

/// A catalog of an older schema (a store made by an earlier unifs) is read
/// by read-only commands and dry runs through a migrated copy: they change
/// nothing, so an older unifs can still open it. The next writer upgrades it.
#[test]
fn an_older_catalog_is_read_without_being_upgraded() {
    if !require_root("an_older_catalog_is_read_without_being_upgraded") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    unify_json(&lab.store(), &[&a, &b]);
    {
        // Back to schema 2: the views of migration 2, before migration 3
        // added links_digest.
        let conn = rusqlite::Connection::open(lab.store().join("catalog.db")).unwrap();
        conn.execute_batch(&format!(
            "DROP VIEW guest_files; DROP VIEW store_objects; DROP VIEW unify_runs; {}
             {UNDO_SCHEMA_5} ALTER TABLE guests DROP COLUMN links_digest;
             PRAGMA user_version = 2",
            include_str!("../../migrations/0002_views.sql")
        ))
        .unwrap();
    }
    let c = lab.guest(2);
    let dry = unify_json(&lab.store(), &[&"--dry-run", &a, &b, &c]);
    assert_eq!(dry["files_linked"], 2, "{dry}");
    for args in [
        vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"stats"],
        vec![&"store", &"verify"],
        vec![&"store", &"runs"],
    ] {
        let out = unifs(&lab.store(), &args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(sql::<i64>(&lab.store(), "PRAGMA user_version"), 2);
    assert_eq!(runs_recorded(&lab.store()), 1);
    let real = unify_json(&lab.store(), &[&a, &b, &c]);
    assert_eq!(real["files_linked"], 2, "{real}");
    assert_eq!(sql::<i64>(&lab.store(), "PRAGMA user_version"), 6);
}

/// A small tmpfs mounted for a test, unmounted even when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=64m"),
        )
        .unwrap();
        Tmpfs(at.to_path_buf())
    }
    fn remount(&self, ro: bool) {
        let mut flags = nix::mount::MsFlags::MS_REMOUNT;
        if ro {
            flags |= nix::mount::MsFlags::MS_RDONLY;
        }
        // EBUSY while a process another test starts holds a file open that
        // it inherited between fork and exec: it goes away with the exec.
        for _ in 0..50 {
            match nix::mount::mount(None::<&str>, &self.0, None::<&str>, flags, None::<&str>) {
                Err(nix::errno::Errno::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                r => return r.unwrap(),
            }
        }
        panic!("{}: still busy, cannot remount", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn every_reading_command_works_on_a_read_only_store() {
    if !require_root("every_reading_command_works_on_a_read_only_store") {
        return;
    }
    let lab = Lab::new();
    let fs_root = lab.path("ro");
    let tmpfs = Tmpfs::mount(&fs_root);
    let store = fs_root.join("store");
    let (a, b) = (fs_root.join("a"), fs_root.join("b"));
    for g in [&a, &b] {
        file(g, "usr/a", &bytes(1, 5000), 0o644);
        file(g, "usr/b", &bytes(2, 7000), 0o755);
    }
    unify_json(&store, &[&a, &b]);
    assert!(!store.join("catalog.db-shm").exists());
    tmpfs.remount(true);
    let ok = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let out = unifs(&store, args);
        assert!(
            out.status.success(),
            "{}: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ok(&[&"store", &"verify"]).contains("2 object files"));
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&[&"store", &"stats", &"--json"])).unwrap();
    assert_eq!(stats["usage"]["objects"], 2, "{stats}");
    assert_eq!(stats["guests"].as_array().unwrap().len(), 2, "{stats}");
    assert!(ok(&[&"store", &"runs"]).contains("done"));
    assert_eq!(ok(&[&"store", &"ls"]).lines().count(), 2);
    let manifest = ok(&[&"manifest", &"a"]);
    assert!(manifest.contains("usr/b"), "{manifest}");
    let snap = lab.path("snap.db");
    ok(&[&"store", &"snapshot", &snap]);
    let n: i64 = rusqlite::Connection::open(&snap)
        .unwrap()
        .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    let dry = ok(&[&"unify", &"--dry-run", &"--json", &a, &b]);
    assert!(dry.contains("\"files_already_linked\": 4"), "{dry}");
    // Nothing can be written there: a writer says so and why.
    for args in [
        vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"gc"],
        vec![&"unify", &a, &b],
    ] {
        let out = unifs(&store, &args);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert_eq!(err.matches("Read-only file system").count(), 1, "{err}");
        assert!(err.contains(&format!("store {}", store.display())), "{err}");
    }
    assert!(!store.join("catalog.db-shm").exists());

    // A write-ahead log that only a catalog.db-shm could make readable:
    // not readable, and the error says why.
    // (Made on another filesystem: SQLite sets FD_CLOEXEC only after its
    // open, so a unifs process that another test starts meanwhile could
    // keep a file of the tmpfs open for writing, and the remount fail.)
    let copy = lab.path("copy.db");
    fs::copy(store.join("catalog.db"), &copy).unwrap();
    let wal = {
        let conn = rusqlite::Connection::open(&copy).unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; UPDATE runs SET command = 'x'")
            .unwrap();
        fs::read(lab.path("copy.db-wal")).unwrap()
    };
    assert!(!wal.is_empty());
    tmpfs.remount(false);
    fs::write(store.join("catalog.db-wal"), &wal).unwrap();
    tmpfs.remount(true);
    let out = unifs(&store, &[&"store", &"runs"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("catalog.db is not readable") && err.contains("write-ahead log"),
        "{err}"
    );
}

#[test]
fn commands_that_fail_record_no_run_and_all_runs_name_their_guests() {
    if !require_root("commands_that_fail_record_no_run") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let store = lab.store();
    // A new store is not even made for a command that fails.
    let not_a_dir = a.join("usr/a");
    let other = Tmpfs::mount(&lab.path("other"));
    file(&other.0, "g/usr/a", &bytes(1, 5000), 0o644);
    let (elsewhere, missing) = (other.0.join("g"), lab.path("nonexistent"));
    let failing: Vec<Vec<&dyn AsRef<std::ffi::OsStr>>> = vec![
        vec![&"unify", &not_a_dir],
        vec![&"unify", &a, &not_a_dir],
        vec![&"unify"],
        vec![&"unify", &a, &elsewhere],
        vec![&"unify", &missing, &a],
    ];
    for args in &failing {
        let out = unifs(&store, args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(!store.exists(), "{}: the store was made", stderr(&out));
    }
    let out = unifs(&store, &[&"unify", &"--all"]);
    assert!(stderr(&out).contains("no guests"), "{}", stderr(&out));
    assert!(!store.exists(), "{}: the store was made", stderr(&out));
    unify_json(&store, &[&a, &b]);
    let recorded = runs_recorded(&store);
    for args in &failing {
        let out = unifs(&store, args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    // --all guests that overlap a guest named: refused, after reading them.
    let out = unifs(&store, &[&"unify", &"--all", &a.join("usr")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("overlap"), "{}", stderr(&out));
    assert_eq!(
        runs_recorded(&store),
        recorded,
        "a failed command recorded a run"
    );
    let unfinished: i64 = sql(
        &store,
        "SELECT count(*) FROM runs WHERE finished_at IS NULL",
    );
    assert_eq!(unfinished, 0);
    // An --all run records the guests it worked on.
    unify_json(&store, &[&"--all"]);
    let command: String = sql(&store, "SELECT command FROM runs ORDER BY id DESC LIMIT 1");
    let (a, b) = (fs::canonicalize(&a).unwrap(), fs::canonicalize(&b).unwrap());
    assert_eq!(
        command,
        format!("unify --all {} {}", a.display(), b.display())
    );
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_store_is_made_only_in_a_new_or_empty_directory() {
    if !require_root("a_store_is_made_only_in_a_new_or_empty_directory") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let data = lab.path("data");
    file(&data, "report.txt", b"mine", 0o644);
    for args in [
        vec![&"unify" as &dyn AsRef<std::ffi::OsStr>, &a, &b],
        vec![&"unify", &"--dry-run", &a, &b],
        vec![&"store", &"init"],
    ] {
        let out = unifs(&data, &args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("store {}", data.display())) && err.contains("not empty"),
            "{err}"
        );
        assert_eq!(listing(&data), ["report.txt"]);
    }
    let not_dir = data.join("report.txt");
    let out = unifs(&not_dir, &[&"unify", &a, &b]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(&not_dir).unwrap(), b"mine");
    // An empty directory, and one a killed `store init` left, are fine.
    let empty = lab.path("empty");
    fs::create_dir(&empty).unwrap();
    unify_json(&empty, &[&a, &b]);
    let half = lab.path("half");
    fs::create_dir_all(half.join("tmp")).unwrap();
    fs::write(half.join("lock"), b"").unwrap();
    let out = unifs(&half, &[&"store", &"init"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_lost_catalog_is_refused_never_made_anew_in_silence() {
    if !require_root("a_lost_catalog_is_refused") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let store = lab.store();
    unify_json(&store, &[&a, &b]);
    let snap = lab.path("snap.db");
    assert!(unifs(&store, &[&"store", &"snapshot", &snap])
        .status
        .success());
    let catalog = store.join("catalog.db");
    for state in ["missing", "empty"] {
        match state {
            "missing" => fs::remove_file(&catalog).unwrap(),
            _ => fs::write(&catalog, b"").unwrap(),
        }
        for args in [
            vec![&"unify" as &dyn AsRef<std::ffi::OsStr>, &a, &b],
            vec![&"unify", &"--dry-run", &a, &b],
            vec![&"store", &"init"],
            vec![&"store", &"gc"],
            vec![&"store", &"verify"],
            vec![&"store", &"stats"],
            vec![&"store", &"runs"],
            vec![&"manifest", &a],
        ] {
            let out = unifs(&store, &args);
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            let err = stderr(&out);
            assert!(
                err.contains(&format!("catalog {} is {state}", catalog.display()))
                    && err.contains("store snapshot"),
                "{err}"
            );
            match state {
                "missing" => assert!(!catalog.exists(), "the catalog was made anew"),
                _ => assert_eq!(fs::metadata(&catalog).unwrap().len(), 0),
            }
        }
    }
    // Restored from the snapshot, all is well again.
    fs::copy(&snap, &catalog).unwrap();
    assert_verify_clean(&store);
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_already_linked"], 4, "{s}");
    // Without one, an empty catalog can be asked for; unify finds the
    // objects the guests link by their markers.
    fs::remove_file(&catalog).unwrap();
    let out = unifs(&store, &[&"store", &"init", &"--new-catalog"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["objects_added"], 0, "{s}");
    assert_eq!(s["files_already_linked"], 4, "{s}");
    assert_verify_clean(&store);
    let out = unifs(&store, &[&"store", &"init", &"--new-catalog"]);
    assert_eq!(out.status.code(), Some(1), "a catalog was replaced");
}

/// The per-guest link counts of `store stats`, summed.
fn guest_links_listed(stats: &serde_json::Value) -> u64 {
    stats["guests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["files_linked"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_deleted_guest_is_skipped_by_unify_all_until_store_forget_drops_it() {
    if !require_root("a_deleted_guest_is_skipped_by_unify_all") {
        return;
    }
    let lab = Lab::new();
    let (a, b, c) = (lab.guest(0), lab.guest(1), lab.guest(2));
    // An object only c links.
    file(&c, "opt/x", &bytes(9, 4000), 0o644);
    file(&c, "opt/y", &bytes(9, 4000), 0o644);
    let store = lab.store();
    unify_json(&store, &[&a, &b, &c]);
    let stats = stats_json(&store);
    assert_eq!(guest_links_listed(&stats), stats["usage"]["guest_links"]);
    fs::remove_dir_all(&c).unwrap();
    let kept_listings = || {
        fs::read_dir(store.join("cache"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("listings-")
            })
            .count()
    };
    assert_eq!(kept_listings(), 3);

    // --all goes on with the others and says how to forget c.
    let out = unifs(&store, &[&"unify", &"--all", &"--json"]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["guests"], serde_json::json!(["g0", "g1"]), "{s}");
    let problems = s["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{s}");
    assert_eq!(problems[0]["path"], c.to_str().unwrap());
    let what = problems[0]["what"].as_str().unwrap();
    assert!(
        what.contains(&format!("unifs store forget {}", c.display())),
        "{what}"
    );
    let out = unifs(&store, &[&"unify", &"--all"]);
    assert!(stderr(&out).contains("store forget"), "{}", stderr(&out));

    // Unknown guests are refused, and nothing is forgotten then.
    for args in [
        vec![
            &"store" as &dyn AsRef<std::ffi::OsStr>,
            &"forget",
            &lab.path("nope"),
        ],
        vec![&"store", &"forget", &c, &lab.path("nope")],
        vec![&"store", &"forget", &"nope"],
    ] {
        let out = unifs(&store, &args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("not a guest"), "{}", stderr(&out));
    }
    assert_eq!(stats_json(&store)["guests"].as_array().unwrap().len(), 3);
    // Named by the directory that is gone, relative to where it was.
    let out = std::process::Command::new(crate::common::unifs_bin())
        .current_dir(lab.dir.path())
        .args(["store", "forget", "g2"])
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(kept_listings(), 2, "c's kept listings go with it");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("forgot guest g2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = unifs(&store, &[&"store", &"forget", &c]);
    assert_eq!(out.status.code(), Some(1), "forgotten twice");

    let stats = stats_json(&store);
    assert_eq!(stats["guests"].as_array().unwrap().len(), 2);
    assert_eq!(guest_links_listed(&stats), stats["usage"]["guest_links"]);
    let s = unify_json(&store, &[&"--all"]);
    assert_eq!(s["problems"].as_array().unwrap().len(), 0, "{s}");
    // c's own object goes with gc; the catalog agrees with the files.
    let gc: serde_json::Value =
        serde_json::from_slice(&unifs(&store, &[&"store", &"gc", &"--json"]).stdout).unwrap();
    assert_eq!(gc["objects_removed"], 1, "{gc}");
    assert_verify_clean(&store);
    let stats = stats_json(&store);
    assert_eq!(stats["usage"]["objects"], 2);
    assert_eq!(guest_links_listed(&stats), stats["usage"]["guest_links"]);
    // With every guest gone, there is nothing to do: an error, no run.
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
    let runs = runs_recorded(&store);
    let out = unifs(&store, &[&"unify", &"--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("every guest the catalog knows was skipped"),
        "{}",
        stderr(&out)
    );
    assert_eq!(runs_recorded(&store), runs);
}

fn gc_json(store: &Path, dry_run: bool) -> serde_json::Value {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"store", &"gc", &"--json"];
    if dry_run {
        args.push(&"--dry-run");
    }
    let out = unifs(store, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn gc_repairs_object_files_that_were_deleted() {
    if !require_root("gc_repairs_object_files_that_were_deleted") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let store = lab.store();
    unify_json(&store, &[&a, &b]);
    let objects = object_files(&store);
    assert_eq!(objects.len(), 2);
    let inodes: Vec<u64> = objects.iter().map(|p| ino(p)).collect();
    for p in &objects {
        fs::remove_file(p).unwrap();
    }
    let out = unifs(&store, &[&"store", &"verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("missing: `unifs store gc` gives it its name back"),
        "{text}"
    );
    let dry = gc_json(&store, true);
    assert_eq!(
        dry["missing_restored"].as_array().unwrap().len(),
        2,
        "{dry}"
    );
    assert!(object_files(&store).is_empty(), "a dry run restored");
    // Both guests still link the objects' inodes: gc names them again.
    let gc = gc_json(&store, false);
    assert_eq!(gc["missing_restored"].as_array().unwrap().len(), 2, "{gc}");
    assert_eq!(gc["missing_dropped"].as_array().unwrap().len(), 0, "{gc}");
    assert_eq!(object_files(&store), objects);
    let again: Vec<u64> = objects.iter().map(|p| ino(p)).collect();
    assert_eq!(again, inodes);
    assert_verify_clean(&store);
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_already_linked"], 4, "{s}");
    assert_eq!(s["files_linked"], 0, "{s}");

    // No guest links usr/a's inode any more (each has a copy of its own)
    // and its object file is gone: gc drops it and its links.
    let a_object = objects
        .iter()
        .find(|p| ino(p) == ino(&a.join("usr/a")))
        .unwrap()
        .clone();
    for g in [&a, &b] {
        let data = fs::read(g.join("usr/a")).unwrap();
        fs::remove_file(g.join("usr/a")).unwrap();
        file(g, "usr/a", &data, 0o644);
    }
    fs::remove_file(&a_object).unwrap();
    assert_eq!(unifs(&store, &[&"store", &"verify"]).status.code(), Some(1));
    let gc = gc_json(&store, false);
    assert_eq!(gc["missing_restored"].as_array().unwrap().len(), 0, "{gc}");
    assert_eq!(
        gc["missing_dropped"],
        serde_json::json!([a_object.to_str().unwrap()]),
        "{gc}"
    );
    assert_eq!(gc["links_dropped"], 2, "{gc}");
    assert_verify_clean(&store);
    let links: i64 = sql(&store, "SELECT count(*) FROM guest_links");
    assert_eq!(links, 2);
    let stats = stats_json(&store);
    assert_eq!(guest_links_listed(&stats), stats["usage"]["guest_links"]);
    // The next unify takes those files for what they are: ordinary files.
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 1, "{s}");
    assert_eq!(s["objects_added"], 1, "{s}");
    assert_eq!(ino(&a.join("usr/a")), ino(&b.join("usr/a")));
    assert_verify_clean(&store);
}

#[test]
fn errors_say_what_the_path_is_and_each_cause_once() {
    if !require_root("errors_say_what_the_path_is") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let store = lab.store();
    let missing = lab.path("nonexist");
    let out = unifs(&store, &[&"unify", &missing, &a]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "unifs: guest directory {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    let not_dir = file(lab.dir.path(), "a-file", b"data", 0o644);
    let out = unifs(&not_dir, &[&"unify", &a, &b]);
    assert_eq!(
        stderr(&out),
        format!(
            "unifs: store {} is not a directory; --store (or UNIFS_STORE) names the store's \
             directory\n",
            not_dir.display()
        )
    );
    // A damaged catalog: said once, with what to do.
    unify_json(&store, &[&a, &b]);
    fs::write(store.join("catalog.db"), vec![b'x'; 8192]).unwrap();
    for args in [
        vec![&"unify" as &dyn AsRef<std::ffi::OsStr>, &a, &b],
        vec![&"unify", &"--dry-run", &a, &b],
        vec![&"store", &"stats"],
        vec![&"store", &"gc"],
        vec![&"store", &"verify"],
    ] {
        let out = unifs(&store, &args);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches("file is not a database").count(), 1, "{err}");
        assert!(
            err.contains(&format!("catalog {}", store.join("catalog.db").display()))
                && err.contains("unifs store snapshot"),
            "{err}"
        );
    }
}

/// Directories made immutable (`chattr +i`) for a test, made mutable again
/// even when it fails.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` where the filesystem has no immutable flag.
    fn set(dirs: Vec<PathBuf>) -> Option<Immutable> {
        let mut guard = Immutable(Vec::new());
        for d in dirs {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(&d)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            guard.0.push(d);
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(d)
                .status();
        }
    }
}

#[test]
fn unify_that_could_not_process_files_exits_23_with_them_listed() {
    if !require_root("unify_that_could_not_process_files_exits_23") {
        return;
    }
    let lab = Lab::new();
    let (a, b) = (lab.guest(0), lab.guest(1));
    let store = lab.store();
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["problems"].as_array().unwrap().len(), 0);
    for g in [&a, &b] {
        for i in 0..8 {
            file(g, &format!("new/f{i}"), &bytes(50 + i, 6000), 0o644);
        }
    }
    // No object can be added: objects/ and its fan-out directories are
    // immutable.
    let mut dirs = vec![store.join("objects")];
    dirs.extend(
        fs::read_dir(store.join("objects"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    let Some(guard) = Immutable::set(dirs) else {
        crate::common::skip(
            "unify_that_could_not_process_files_exits_23",
            "no chattr +i here (e2fsprogs, a filesystem with the flag)",
        );
        return;
    };
    let out = unifs(&store, &[&"unify", &a, &b]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(err.contains("exit status 23"), "{err}");
    let out = unifs(&store, &[&"unify", &"--json", &a, &b]);
    assert_eq!(out.status.code(), Some(23), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["files_linked"], 0, "{s}");
    assert!(s["problems"].as_array().unwrap().len() >= 8, "{s}");
    assert!(s["run"].as_i64().is_some(), "{s}");
    let unfinished: i64 = sql(
        &store,
        "SELECT count(*) FROM runs WHERE finished_at IS NULL",
    );
    assert_eq!(unfinished, 0, "the run finished");
    drop(guard);
    // Once it can, a run links them and exits 0.
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["files_linked"], 8, "{s}");
    let out = unifs(&store, &[&"unify", &a, &b]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A backup copy of a store as docs/backup.md makes one holds `objects/`
/// and `catalog.db` (a snapshot), no `tmp/`. Read-only (a mounted backup
/// medium), every reading command must still work on it: before, opening
/// the store tried to make `tmp/`, and failed the command when it could not.
#[test]
fn review2_a_read_only_store_without_tmp_can_be_read() {
    if !require_root("review2_a_read_only_store_without_tmp_can_be_read") {
        return;
    }
    let lab = Lab::new();
    let fs_root = lab.path("ro");
    let tmpfs = Tmpfs::mount(&fs_root);
    let store = fs_root.join("store");
    let (a, b) = (fs_root.join("a"), fs_root.join("b"));
    for g in [&a, &b] {
        file(g, "usr/a", &bytes(3, 5000), 0o644);
    }
    unify_json(&store, &[&a, &b]);
    for name in ["tmp", "cache"] {
        let _ = fs::remove_dir_all(store.join(name));
    }
    fs::remove_file(store.join("lock")).unwrap();
    tmpfs.remount(true);
    for args in [
        vec![&"store" as &dyn AsRef<std::ffi::OsStr>, &"verify"],
        vec![&"store", &"stats"],
        vec![&"store", &"ls"],
        vec![&"unify", &"--dry-run", &a, &b],
    ] {
        let out = unifs(&store, &args);
        assert!(
            out.status.success(),
            "{:?}: {}{}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
}
