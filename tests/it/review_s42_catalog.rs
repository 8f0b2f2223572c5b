//! Review s42-catalog: a catalog damaged for real (bytes flipped in its
//! pages, cut short, a page zeroed, an index dropped, rows deleted or
//! made up, another database's log, a newer schema) met by every command
//! that reads the store. No command may change a guest's file, or remove
//! an object a guest links, because of what the damaged catalog says; each
//! stops with an error (never a panic, never a hang) or goes on safely; the
//! documented rebuild (move catalog.db* aside, `store init --new-catalog`,
//! unify every guest) gets back to a clean `store verify`. And a manifest
//! with a line that never ends is refused in bounded memory.

use crate::common::{require_root, unifs_bin};
use crate::tree::{
    assert_invisible, bytes, file_at, snapshot, snapshot_for_restore, stderr, unify_json, Snapshot,
};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `unifs --store STORE ARGS…`, killed after 120 s: a hang shows as a
/// signal, not as a test that never ends.
pub(crate) fn run(store: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "120"]).arg(unifs_bin());
    cmd.arg("--store").arg(store);
    for a in args {
        cmd.arg(a.as_ref());
    }
    cmd.env_remove("UNIFS_TEST_LINK_MAX");
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Guests `a` and `b` in `dir`: shared files (a few of one size, mode and
/// mtime, so that their rows sit side by side), a private file each and a
/// hardlink pair each; unified into `dir/store`.
pub(crate) fn unified_guests(dir: &Path) -> (PathBuf, [PathBuf; 2]) {
    let store = dir.join("store");
    let roots = ["a", "b"].map(|g| dir.join(g));
    for (n, root) in roots.iter().enumerate() {
        for i in 0..24 {
            file_at(
                root,
                &format!("usr/lib/f{i}"),
                &bytes(i, 3000 + (i as usize % 4) * 1000),
                0o644,
                1_600_000_000,
            );
        }
        file_at(
            root,
            "etc/own",
            &bytes(100 + n as u64, 2000),
            0o600,
            1_600_000_000,
        );
        let one = file_at(root, "bin/one", &bytes(200, 4000), 0o755, 1_600_000_000);
        fs::hard_link(&one, root.join("bin/two")).unwrap();
    }
    unify_json(&store, &[&roots[0], &roots[1]]);
    (store, roots)
}

/// The object files guests link (link count above 1), by path and inode.
fn linked_objects(store: &Path) -> Vec<(PathBuf, u64)> {
    walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| {
            let m = e.metadata().unwrap();
            (m.nlink() > 1).then(|| (e.path().to_path_buf(), m.ino()))
        })
        .collect()
}

/// What a command did, for the table the report gives.
pub(crate) fn said(out: &Output) -> String {
    let code = match out.status.code() {
        Some(c) => c.to_string(),
        None => format!("{:?}", out.status),
    };
    let err = stderr(out);
    let first = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(150)
        .collect::<String>();
    format!("exit {code}: {first}")
}

/// Runs every command that reads the store on the damaged `store`, and
/// checks the rule: guests' trees as before, every object a guest linked
/// still there, no panic (101), no hang (a signal). Returns what each did,
/// and whether `store verify` passed.
fn every_command(
    dir: &Path,
    store: &Path,
    roots: &[PathBuf; 2],
    before: &[Snapshot; 2],
    objects: &[(PathBuf, u64)],
    kind: &str,
) -> (Vec<String>, bool) {
    let manifest = dir.join(format!("m-{kind}.jsonl"));
    let target = dir.join(format!("r-{kind}"));
    let mut table = Vec::new();
    let mut verified = false;
    let mut manifest_written = false;
    let cmds: Vec<(&str, Vec<&dyn AsRef<OsStr>>)> = vec![
        ("store stats", vec![&"store", &"stats"]),
        ("store ls", vec![&"store", &"ls"]),
        ("store verify", vec![&"store", &"verify"]),
        ("manifest", vec![&"manifest", &roots[0], &"-o", &manifest]),
        ("gc --dry-run", vec![&"store", &"gc", &"--dry-run"]),
        ("store gc", vec![&"store", &"gc"]),
        ("unify", vec![&"unify", &roots[0], &roots[1]]),
        ("unify again", vec![&"unify", &roots[0], &roots[1]]),
        ("unify --all", vec![&"unify", &"--all"]),
    ];
    for (name, args) in cmds {
        let out = run(store, &args);
        let code = out.status.code();
        assert!(
            code.is_some() && code != Some(101),
            "{kind}: {name} crashed or hung: {:?}\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        if name == "store verify" {
            verified = code == Some(0);
        }
        if name == "manifest" {
            manifest_written = code == Some(0);
        }
        table.push(format!("{kind} | {name} | {}", said(&out)));
        for (root, was) in roots.iter().zip(before) {
            assert_invisible(was, &snapshot(root), &format!("{kind}: {name}"));
        }
        for (path, ino) in objects {
            let now = fs::symlink_metadata(path).map(|m| m.ino());
            assert_eq!(
                now.as_ref().ok(),
                Some(ino),
                "{kind}: {name} took {path:?} away, an object guests link"
            );
        }
    }
    // A manifest written from the damaged catalog must restore the guest
    // (its private files from the guest's own tree).
    if manifest_written {
        let out = run(
            store,
            &[
                &"restore",
                &"--manifest",
                &manifest,
                &"--from",
                &roots[0],
                &target,
            ],
        );
        table.push(format!("{kind} | restore | {}", said(&out)));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{kind}: the manifest written from this catalog does not restore: {}",
            stderr(&out)
        );
        assert_invisible(
            &snapshot_for_restore(&roots[0]),
            &snapshot_for_restore(&target),
            &format!("{kind}: restored"),
        );
    }
    (table, verified)
}

/// The documented way back from a damaged catalog: moved aside with its
/// log, a new one, every guest unified again: verify passes, guests intact.
fn rebuild(dir: &Path, store: &Path, roots: &[PathBuf; 2], before: &[Snapshot; 2], kind: &str) {
    let aside = dir.join(format!("aside-{kind}"));
    fs::create_dir(&aside).unwrap();
    for name in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        if store.join(name).exists() {
            fs::rename(store.join(name), aside.join(name)).unwrap();
        }
    }
    let out = run(store, &[&"store", &"init", &"--new-catalog"]);
    assert_eq!(out.status.code(), Some(0), "{kind}: {}", stderr(&out));
    let out = run(store, &[&"unify", &roots[0], &roots[1]]);
    assert_eq!(out.status.code(), Some(0), "{kind}: {}", stderr(&out));
    let out = run(store, &[&"store", &"verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{kind}: after the rebuild: {}{}",
        stdout(&out),
        stderr(&out)
    );
    for (root, was) in roots.iter().zip(before) {
        assert_invisible(was, &snapshot(root), &format!("{kind}: rebuilt"));
    }
}

fn sql(store: &Path, text: &str) {
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    conn.execute_batch(text).unwrap();
}

/// The byte offset in the catalog file of `text` (ASCII), which a row holds.
fn offset_of(db: &[u8], text: &str) -> usize {
    db.windows(text.len())
        .position(|w| w == text.as_bytes())
        .unwrap_or_else(|| panic!("{text} not in the catalog file"))
}

/// Gives `file` back the times `was` had (`touch -r`).
pub(crate) fn keep_times(file: &Path, was: &fs::Metadata) {
    let times = fs::FileTimes::new()
        .set_accessed(was.accessed().unwrap())
        .set_modified(was.modified().unwrap());
    fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_times(times)
        .unwrap();
}

/// One object's content hash, as its row holds it.
fn a_content_hash(store: &Path) -> String {
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    conn.query_row("SELECT content_hash FROM objects LIMIT 1", [], |r| r.get(0))
        .unwrap()
}

/// A small xorshift, seeded: the same damage on every run.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The damage done to a catalog, by name.
fn damage(store: &Path, kind: &str, scratch: &Path) {
    let catalog = store.join("catalog.db");
    match kind {
        "truncated" => {
            let len = fs::metadata(&catalog).unwrap().len();
            let f = fs::OpenOptions::new().write(true).open(&catalog).unwrap();
            f.set_len(len / 2).unwrap();
        }
        "page zeroed" => {
            let mut db = fs::read(&catalog).unwrap();
            let pages = db.len() / 4096;
            let at = (pages / 2) * 4096;
            db[at..at + 4096].fill(0);
            fs::write(&catalog, &db).unwrap();
        }
        "index dropped" => sql(store, "DROP INDEX guest_links_by_object"),
        "guest links deleted" => sql(store, "DELETE FROM guest_links"),
        "objects deleted" => sql(store, "DELETE FROM object_files; DELETE FROM objects"),
        "hash cache deleted" => sql(store, "DELETE FROM hash_cache"),
        "rows of objects not on disk" => sql(
            store,
            &format!(
                "INSERT INTO objects(id, content_hash, size, mode, uid, gid, mtime_sec, \
                 mtime_nsec, added_run) VALUES ('{0}', '{0}', 3000, 420, 0, 0, 1600000000, 0, 1);
                 INSERT INTO object_files(object_id, copy, dev, ino) VALUES ('{0}', 0, 1, 2);
                 INSERT INTO guest_links(guest_id, path, object_id, run_id)
                    SELECT id, CAST('usr/lib/none' AS BLOB), '{0}', 1 FROM guests;",
                "ab".repeat(32)
            ),
        ),
        "objects on disk not in the catalog" => sql(
            store,
            "DELETE FROM object_files WHERE object_id IN (SELECT id FROM objects LIMIT 5);
             DELETE FROM guest_links WHERE object_id IN (SELECT id FROM objects LIMIT 5);
             DELETE FROM objects WHERE id IN (SELECT id FROM objects LIMIT 5);",
        ),
        "another database's log" => {
            // A log written for another catalog (its own salt), left
            // beside this one: SQLite must not replay it onto this file.
            let other = scratch.join("other.db");
            let conn = rusqlite::Connection::open(&other).unwrap();
            conn.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
                 CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(20000));",
            )
            .unwrap();
            fs::copy(scratch.join("other.db-wal"), store.join("catalog.db-wal")).unwrap();
            drop(conn);
        }
        "newer schema" => sql(store, "PRAGMA user_version = 99"),
        "inode numbers swapped" => sql(
            store,
            "CREATE TEMP TABLE two AS SELECT rowid AS r, ino FROM object_files LIMIT 2;
             UPDATE object_files SET ino = (SELECT ino FROM two WHERE r != object_files.rowid)
                WHERE rowid IN (SELECT r FROM two);",
        ),
        "links to the wrong objects" => sql(
            store,
            "UPDATE guest_links SET object_id = (SELECT id FROM objects
                WHERE id != guest_links.object_id ORDER BY id LIMIT 1);",
        ),
        "content hash flipped in place" => {
            // Bit rot inside a row: no index holds the content hash, so
            // SQLite's checks pass; size and mtime kept (`touch -r`).
            let hash = a_content_hash(store);
            let was = fs::metadata(&catalog).unwrap();
            let mut db = fs::read(&catalog).unwrap();
            let at = offset_of(&db, &hash);
            db[at] = if db[at] == b'0' { b'1' } else { b'0' };
            fs::write(&catalog, &db).unwrap();
            keep_times(&catalog, &was);
        }
        _ => unreachable!("{kind}"),
    }
}

/// Every kind of damage against every command that reads the store (13
/// kinds). The
/// table of what each did is printed (`--nocapture`). Before the fix: a
/// content hash flipped inside its row (SQLite's checks pass; size and
/// mtime kept) left `store verify` at "0 problem(s)", and the manifest
/// written from it gave the guest's files a blake3 its restore refused
/// ("the store's object is damaged", which verify then denied).
#[test]
fn s42_every_command_on_a_damaged_catalog_keeps_the_guests_data() {
    if !require_root("s42_every_command_on_a_damaged_catalog_keeps_the_guests_data") {
        return;
    }
    let kinds = [
        "truncated",
        "page zeroed",
        "index dropped",
        "guest links deleted",
        "objects deleted",
        "hash cache deleted",
        "rows of objects not on disk",
        "objects on disk not in the catalog",
        "another database's log",
        "newer schema",
        "inode numbers swapped",
        "links to the wrong objects",
        "content hash flipped in place",
    ];
    let mut table = Vec::new();
    for kind in kinds {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (store, roots) = unified_guests(dir.path());
        let before = [snapshot(&roots[0]), snapshot(&roots[1])];
        let objects = linked_objects(&store);
        damage(&store, kind, dir.path());
        let (rows, verified) = every_command(dir.path(), &store, &roots, &before, &objects, kind);
        table.extend(rows);
        if kind == "content hash flipped in place" {
            assert!(!verified, "{kind}: store verify found nothing wrong");
        }
        rebuild(dir.path(), &store, &roots, &before, kind);
    }
    println!("{}", table.join("\n"));
}

/// Bytes flipped at random in random pages of the catalog (bit rot,
/// seeded: 32 seeds), with the catalog's size and mtime kept, and the
/// record of the last check forged to match the file as it is now (bit
/// rot keeps the ctime too, so a writer skips SQLite's check): every
/// command keeps the guests' data, and wherever `store verify` passes, a
/// manifest written then restores the guest.
#[test]
fn s42_bytes_flipped_in_the_catalog_cost_no_guest_data() {
    if !require_root("s42_bytes_flipped_in_the_catalog_cost_no_guest_data") {
        return;
    }
    let mut table = Vec::new();
    let mut caught = 0;
    for seed in 1..=32u64 {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (store, roots) = unified_guests(dir.path());
        let before = [snapshot(&roots[0]), snapshot(&roots[1])];
        let objects = linked_objects(&store);
        let catalog = store.join("catalog.db");
        let was = fs::metadata(&catalog).unwrap();
        let mut db = fs::read(&catalog).unwrap();
        let mut rng = Seeded(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        // Past the first page (the header and schema: damage there is
        // "not a database", which review_s18 covers).
        let pages = db.len() / 4096;
        for _ in 0..4 {
            let page = 1 + rng.next() as usize % (pages - 1);
            let at = page * 4096 + rng.next() as usize % 4096;
            db[at] ^= 1 << (rng.next() % 8);
        }
        fs::write(&catalog, &db).unwrap();
        keep_times(&catalog, &was);
        // Bit rot leaves the ctime too: the record of the last check then
        // still names the file (forged here, as no write can keep a ctime).
        fs::write(store.join("cache/catalog-checked"), catalog_stamp(&store)).unwrap();
        let kind = format!("flips seed {seed}");
        let (rows, verified) = every_command(dir.path(), &store, &roots, &before, &objects, &kind);
        if !verified {
            caught += 1;
        }
        table.extend(rows);
        rebuild(dir.path(), &store, &roots, &before, &kind);
    }
    println!("{}\nverify found {caught} of 32 damaged", table.join("\n"));
}

/// A manifest whose line never ends (damaged, or hostile: gigabytes
/// without a newline) was read whole into memory by `restore`: under a
/// 1 GiB address-space limit it died of a failed allocation (SIGABRT)
/// before the fix. It is now refused at 64 MiB, naming the line.
#[test]
fn s42_a_manifest_line_that_never_ends_is_refused_in_bounded_memory() {
    if !require_root("s42_a_manifest_line_that_never_ends") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (store, roots) = unified_guests(dir.path());
    let manifest = dir.path().join("m.jsonl");
    let out = run(&store, &[&"manifest", &roots[0], &"-o", &manifest]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The header kept, then 4 GiB of zeros (a hole: no disk taken).
    let text = fs::read_to_string(&manifest).unwrap();
    let header = text.lines().next().unwrap();
    let bad = dir.path().join("bad.jsonl");
    fs::write(&bad, format!("{header}\n")).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&bad).unwrap();
    f.set_len(header.len() as u64 + 1 + (4 << 30)).unwrap();
    let target = dir.path().join("restored");
    let out = Command::new("prlimit")
        .arg("--as=1073741824")
        .arg("--")
        .arg("timeout")
        .args(["-s", "KILL", "120"])
        .arg(unifs_bin())
        .arg("--store")
        .arg(&store)
        .args([OsStr::new("restore"), OsStr::new("--manifest")])
        .arg(&bad)
        .arg("--from")
        .arg(&roots[0])
        .arg(&target)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{:?}: {err}", out.status);
    assert!(
        err.contains(&bad.display().to_string())
            && err.contains("manifest line 2")
            && err.contains("longer than the 64 MiB"),
        "{err}"
    );
    assert!(!target.exists(), "restore wrote {target:?}");
}

/// The record of the last check, with its stamp made that of the catalog
/// file as it is now (as bit rot, which keeps the ctime, leaves it) and the
/// check's time, where the record has one, set to `checked_at`.
fn forge_checked_record(store: &Path, checked_at: u64) {
    let record = store.join("cache/catalog-checked");
    let text = fs::read_to_string(&record).unwrap();
    let mut forged = catalog_stamp(store);
    if text.contains("checked ") {
        forged.push_str(&format!("checked {checked_at}\n"));
    }
    fs::write(&record, forged).unwrap();
}

/// Bit rot over an index's root page (guest_links_by_object); the
/// catalog's size and times as they were.
pub(crate) fn rot_index_root(store: &Path) {
    let catalog = store.join("catalog.db");
    let was = fs::metadata(&catalog).unwrap();
    let page = crate::review_s18_store::root_page(store, "guest_links_by_object");
    let mut db = fs::read(&catalog).unwrap();
    let at = (page as usize - 1) * 4096;
    db[at..at + 4096].fill(0x55);
    fs::write(&catalog, &db).unwrap();
    keep_times(&catalog, &was);
}

/// The catalog file's stamp as `cache/catalog-checked` records it
/// (device, inode, size, mtime, ctime), as the file is now.
pub(crate) fn catalog_stamp(store: &Path) -> String {
    let now = fs::metadata(store.join("catalog.db")).unwrap();
    format!(
        "{} {} {} {}.{:09} {}.{:09}\n",
        now.dev(),
        now.ino(),
        now.len(),
        now.mtime(),
        now.mtime_nsec(),
        now.ctime(),
        now.ctime_nsec()
    )
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A writer skips SQLite's check on the file the last unify left checked
/// (same device, inode, size, mtime, ctime). A disk's bit rot keeps all
/// five, and each writer's record then vouched for the damaged file again:
/// writers never checked it again (only `store verify` found it). Before
/// the fix (main's binary, by hand as below): an index's root page so
/// overwritten (as for each of five other tables and indexes), two days
/// after the last check, and `store gc` went on (exit 0) writing into it;
/// unify refused it (it reads those pages). A check now vouches for a day:
/// both refuse the catalog; and a writer that skipped the check keeps the
/// record's time rather than renewing it (before: the record had none).
#[test]
fn s42_a_check_a_day_old_does_not_vouch_for_a_catalog_bit_rot_changed() {
    if !require_root("s42_a_check_a_day_old_does_not_vouch_for_a_catalog") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (store, roots) = unified_guests(dir.path());
    let before = [snapshot(&roots[0]), snapshot(&roots[1])];
    // A skipped check is not renewed: the record keeps its time.
    let hour_ago = unix_now() - 3600;
    forge_checked_record(&store, hour_ago);
    let out = run(&store, &[&"unify", &roots[0], &roots[1]]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = fs::read_to_string(store.join("cache/catalog-checked")).unwrap();
    assert!(
        record.ends_with(&format!("checked {hour_ago}\n")),
        "a writer that skipped the check renewed its record: {record:?}"
    );
    rot_index_root(&store);
    for args in [
        vec![&"store" as &dyn AsRef<OsStr>, &"gc"],
        vec![&"unify", &roots[0], &roots[1]],
    ] {
        forge_checked_record(&store, unix_now() - 2 * 24 * 3600);
        let out = run(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", said(&out));
        assert!(
            err.contains("damaged") && err.contains("catalog.db* DIR/"),
            "{err}"
        );
        for (root, was) in roots.iter().zip(&before) {
            assert_invisible(was, &snapshot(root), "refused");
        }
    }
}
