//! `unifs store verify|gc|stats` against real stores.

use crate::common::require_root;
use crate::tree::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

fn two_guests_unified() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Vec<std::path::PathBuf>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests: Vec<_> = (0..2).map(|i| dir.path().join(format!("g{i}"))).collect();
    for g in &guests {
        file(g, "usr/a", &bytes(1, 5000), 0o644);
        file(g, "usr/b", &bytes(2, 7000), 0o755);
    }
    unify_json(&store, &[&guests[0], &guests[1]]);
    (dir, store, guests)
}

#[test]
fn verify_catches_an_object_written_around_the_store() {
    if !require_root("verify_catches_an_object_written_around") {
        return;
    }
    let (_dir, store, guests) = two_guests_unified();
    assert_verify_clean(&store);
    // Someone writes to the shared inode directly, not through a mount.
    let mut data = fs::read(guests[0].join("usr/a")).unwrap();
    data[100] ^= 0xff;
    fs::OpenOptions::new()
        .write(true)
        .open(guests[0].join("usr/a"))
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, &data[100..101], 100))
        .unwrap();
    let out = unifs(&store, &[&"store", &"verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BAD") && text.contains("1 problem"), "{text}");
    // A metadata change around the store is caught too.
    let out = unifs(&store, &[&"store", &"verify", &"--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"].as_array().unwrap().len(), 1);
}

#[test]
fn gc_removes_only_objects_no_guest_links() {
    if !require_root("gc_removes_only_objects_no_guest_links") {
        return;
    }
    let (_dir, store, guests) = two_guests_unified();
    for g in &guests {
        fs::remove_file(g.join("usr/a")).unwrap();
    }
    let dry = unifs(&store, &[&"store", &"gc", &"--dry-run", &"--json"]);
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["objects_removed"], 1);
    assert_eq!(count_objects(&store), 2, "dry run removed something");
    // gc empties tmp/, but for a killed unify's record of the directory
    // mtimes it changed (the next unify puts them back).
    fs::write(store.join("tmp/staged-object"), b"x").unwrap();
    fs::write(store.join("tmp/dirtimes-12345"), b"x").unwrap();
    let out = unifs(&store, &[&"store", &"gc", &"--json"]);
    assert!(!store.join("tmp/staged-object").exists());
    assert!(store.join("tmp/dirtimes-12345").exists());
    fs::remove_file(store.join("tmp/dirtimes-12345")).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["objects_removed"], 1);
    assert_eq!(out["bytes_freed"], 5000);
    assert_eq!(count_objects(&store), 1);
    assert_eq!(fs::metadata(guests[0].join("usr/b")).unwrap().nlink(), 3);
    assert_verify_clean(&store);
    let stats = unifs(&store, &[&"store", &"stats", &"--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["usage"]["objects"], 1);
    assert_eq!(stats["usage"]["bytes_stored"], 7000);
    assert_eq!(stats["usage"]["bytes_saved"], 7000);
    assert_eq!(stats["guests"].as_array().unwrap().len(), 2);
}

fn count_objects(store: &std::path::Path) -> usize {
    walkdir::WalkDir::new(store.join("objects"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count()
}

#[test]
fn every_object_is_marked_with_its_ids_32_bytes() {
    if !require_root("every_object_is_marked_with_its_ids_32_bytes") {
        return;
    }
    let (_dir, store, _guests) = two_guests_unified();
    let mut seen = 0;
    for e in walkdir::WalkDir::new(store.join("objects")) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let f = fs::File::open(e.path()).unwrap();
        let value = unifs::sys::xattr::get_fd(
            std::os::fd::AsFd::as_fd(&f),
            std::ffi::OsStr::new("trusted.unifs.object"),
        )
        .unwrap()
        .expect("an object without its marker");
        // objects/ab/cdef… : the name is the id in hex.
        let parent = e.path().parent().unwrap().file_name().unwrap();
        let hex = format!(
            "{}{}",
            parent.to_string_lossy(),
            e.file_name().to_string_lossy()
        );
        let want: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(value, want, "{}", e.path().display());
        seen += 1;
    }
    assert_eq!(seen, 2);
}

/// (object id, content hash) of every catalog object.
fn catalog_contents(store: &std::path::Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    let mut st = conn
        .prepare("SELECT id, content_hash FROM objects ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn content_hashes_are_those_of_the_objects_even_when_found_in_a_later_run() {
    if !require_root("content_hashes_are_those_of_the_objects") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // x and y share size and metadata, not content: both get hashed, and
    // neither becomes an object in the first run.
    let x = bytes(7, 9000);
    file(&a, "x", &x, 0o644);
    file(&a, "y", &bytes(8, 9000), 0o644);
    unify_json(&store, &[&a]);
    assert!(catalog_contents(&store).is_empty());
    // A second guest has x too: x becomes an object from the cache's id.
    file(&b, "x", &x, 0o644);
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["objects_added"], 1, "{s}");
    assert_eq!(s["bytes_hashed"], 9000, "only b/x is read: {s}");
    let rows = catalog_contents(&store);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, blake3::hash(&x).to_hex().to_string());
    assert_eq!(ino(&a.join("x")), ino(&b.join("x")));
    assert_verify_clean(&store);
}

#[test]
fn content_hashes_are_right_for_every_group_of_a_size() {
    if !require_root("content_hashes_are_right_for_every_group") {
        return;
    }
    // Two objects of one size and metadata: hashing takes the content hash
    // of one file of the lot only, the other object's is read from it.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (p, q) = (bytes(21, 7000), bytes(22, 7000));
    for g in [&a, &b] {
        file(g, "p", &p, 0o644);
        file(g, "q", &q, 0o644);
    }
    let s = unify_json(&store, &[&a, &b]);
    assert_eq!(s["objects_added"], 2, "{s}");
    let mut want = vec![
        blake3::hash(&p).to_hex().to_string(),
        blake3::hash(&q).to_hex().to_string(),
    ];
    want.sort();
    let mut got: Vec<String> = catalog_contents(&store).into_iter().map(|r| r.1).collect();
    got.sort();
    assert_eq!(got, want);
    assert_verify_clean(&store);
}

/// A store restored from a backup (objects and catalog, as docs/backup.md
/// makes one with tar) has every object file at another inode than the
/// catalog lists, and those numbers may now be other files'. Unify knows
/// object files by the catalog's numbers (a path whose entry names one is
/// not even stat'ed): before, it went on taking guest files of the old
/// inodes for links to the store, and never looked at them again. It must
/// look the objects up again, and link the guests to the store.
#[test]
fn review2_a_store_restored_from_a_backup_is_linked_to_again() {
    if !require_root("review2_a_store_restored_from_a_backup") {
        return;
    }
    let (dir, store, guests) = two_guests_unified();
    let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
    let old = ino(&guests[0].join("usr/a"));
    // The store, copied away and back (new inodes for everything).
    let copy = dir.path().join("store.restored");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&store)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    fs::remove_dir_all(&store).unwrap();
    fs::rename(&copy, &store).unwrap();
    assert_verify_clean(&store);
    let s = unify_json(&store, &[&guests[0], &guests[1]]);
    assert_verify_clean(&store);
    for f in ["usr/a", "usr/b"] {
        let a = ino(&guests[0].join(f));
        assert_eq!(a, ino(&guests[1].join(f)), "{s}");
        assert_eq!(
            fs::metadata(guests[0].join(f)).unwrap().nlink(),
            3,
            "{f} links no store object: {s}"
        );
    }
    assert_ne!(ino(&guests[0].join("usr/a")), old);
    // A second run finds them linked.
    let s = unify_json(&store, &[&guests[0], &guests[1]]);
    assert_eq!(s["files_already_linked"], 4, "{s}");
}

/// The objects restored as docs/backup.md says, by extracting objects.tar
/// into the store: tar replaces every object file by a new inode, but
/// `objects/` itself stays the directory it was. Unify must still look the
/// object files up again, and link the guests to them.
#[test]
fn review_s7_today_objects_extracted_into_the_store_are_linked_to_again() {
    if !require_root("review_s7_today_objects_extracted_into_the_store") {
        return;
    }
    let (dir, store, guests) = two_guests_unified();
    let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
    let old = ino(&guests[0].join("usr/a"));
    let objects_ino = ino(&store.join("objects"));
    let tar = dir.path().join("objects.tar");
    let run = |args: &[&std::ffi::OsStr]| {
        let st = std::process::Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-C"])
            .arg(&store)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "tar {args:?}");
    };
    run(&["-cf".as_ref(), tar.as_os_str(), "objects".as_ref()]);
    run(&["-xpf".as_ref(), tar.as_os_str()]);
    assert_eq!(ino(&store.join("objects")), objects_ino);
    assert_eq!(
        fs::metadata(guests[0].join("usr/a")).unwrap().nlink(),
        2,
        "tar gave the object file a new inode"
    );
    assert_verify_clean(&store);
    let s = unify_json(&store, &[&guests[0], &guests[1]]);
    assert_verify_clean(&store);
    for f in ["usr/a", "usr/b"] {
        assert_eq!(ino(&guests[0].join(f)), ino(&guests[1].join(f)), "{s}");
        assert_eq!(
            fs::metadata(guests[0].join(f)).unwrap().nlink(),
            3,
            "{f} links no store object: {s}"
        );
    }
    assert_ne!(ino(&guests[0].join("usr/a")), old);
}

/// One object file replaced by a copy of itself by hand (`cp -a`, `mv`):
/// `store gc` gives the name back to the inode the guests link (the copy
/// goes), and the guests are linked to the store again.
#[test]
fn review2_an_object_file_replaced_by_another_inode_is_repaired_by_gc() {
    if !require_root("review2_an_object_file_replaced_by_another_inode") {
        return;
    }
    let (_dir, store, guests) = two_guests_unified();
    let object = {
        let ino = fs::metadata(guests[0].join("usr/a")).unwrap().ino();
        let mut found = None;
        for dir in fs::read_dir(store.join("objects")).unwrap() {
            for f in fs::read_dir(dir.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if fs::metadata(&p).unwrap().ino() == ino {
                    found = Some(p);
                }
            }
        }
        found.expect("the object file of usr/a")
    };
    let copy = object.with_extension("restored");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&object)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    fs::rename(&copy, &object).unwrap();
    let out = unifs(&store, &[&"store", &"gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("back the inode guests link"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    unify_json(&store, &[&guests[0], &guests[1]]);
    assert_verify_clean(&store);
    let ino = |p: &std::path::Path| fs::metadata(p).unwrap().ino();
    let a = ino(&guests[0].join("usr/a"));
    assert_eq!(a, ino(&guests[1].join("usr/a")));
    assert_eq!(fs::metadata(guests[0].join("usr/a")).unwrap().nlink(), 3);
}

/// `store stats` said gc removes a link-limit copy no guest links while a
/// higher copy is linked, which gc keeps; and its per-guest rows (the
/// catalog's) did not say they are as of the last unify run.
#[test]
fn store_stats_counts_only_what_gc_removes() {
    if !require_root("store_stats_counts_only_what_gc_removes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests: Vec<_> = (0..3).map(|i| dir.path().join(format!("h{i}"))).collect();
    for g in &guests {
        file_at(g, "usr/f", &bytes(9, 4000), 0o644, 1_000_000);
    }
    // One guest link per copy: copies 0, 1 and 2.
    let out = std::process::Command::new(crate::common::unifs_bin())
        .arg("--store")
        .arg(&store)
        .args(["unify", "--json", "--link-max", "2"])
        .args(&guests)
        .output()
        .unwrap();
    let run = unify_summary(&out)["run"].as_i64().unwrap();
    let id = unifs::store::read_marker_path(&guests[0].join("usr/f"))
        .unwrap()
        .unwrap()
        .to_hex();
    let object = store.join("objects").join(&id[..2]).join(&id[2..]);
    let copy = |n: u32| match n {
        0 => object.clone(),
        n => object.with_extension(n.to_string()),
    };
    // Copy 0 unlinked below a linked copy 1 (kept), copy 2 unlinked (removed).
    for n in [0, 2] {
        let g = guests
            .iter()
            .find(|g| g.join("usr/f").exists() && ino(&g.join("usr/f")) == ino(&copy(n)))
            .unwrap();
        fs::remove_file(g.join("usr/f")).unwrap();
    }
    let stats = unifs(&store, &[&"store", &"stats", &"--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["usage"]["unused_object_files"], 1, "{stats}");
    assert_eq!(stats["usage"]["unused_kept_object_files"], 1, "{stats}");
    for g in stats["guests"].as_array().unwrap() {
        assert_eq!(g["last_run"], run, "{stats}");
    }
    let gc = unifs(&store, &[&"store", &"gc", &"--dry-run", &"--json"]);
    let gc: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(gc["objects_removed"], 1, "{gc}");
    let text = unifs(&store, &[&"store", &"stats"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("1 object file no guest links (`unifs store gc` removes them)"),
        "{text}"
    );
    assert!(
        text.contains("1 object file no guest links, kept by `unifs store gc`"),
        "{text}"
    );
    assert!(
        text.contains("per guest, as of its last unify run"),
        "{text}"
    );
}

/// Object file names outside docs/store-format.md's form were taken for
/// objects: upper-case digits, `.0`, and `.01` or `.+1` as copy 1, which gc
/// then opened as `.1` and stopped on ("No such file or directory"). They
/// are strays: verify names each, gc leaves them and runs.
#[test]
fn object_names_outside_the_documented_form_are_strays() {
    if !require_root("object_names_outside_the_documented_form_are_strays") {
        return;
    }
    let (_dir, store, _guests) = two_guests_unified();
    let object = first_object_file(&store);
    let name = object.file_name().unwrap().to_str().unwrap().to_string();
    let strays: Vec<_> = [".0", ".00", ".01", ".+1", ".02"]
        .iter()
        .map(|s| format!("{name}{s}"))
        .chain([name.to_uppercase()])
        .map(|n| object.with_file_name(n))
        .collect();
    for s in &strays {
        fs::copy(&object, s).unwrap();
    }
    let out = unifs(&store, &[&"store", &"verify", &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), strays.len(), "{report}");
    for s in &strays {
        let p = problems
            .iter()
            .find(|p| p["path"] == s.to_str().unwrap())
            .unwrap_or_else(|| panic!("{} not reported: {report}", s.display()));
        assert_eq!(p["what"], "name is not an object id", "{report}");
    }
    for out in [
        unifs(&store, &[&"store", &"gc", &"--dry-run"]),
        unifs(&store, &[&"store", &"gc"]),
    ] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for s in &strays {
        assert!(s.exists(), "gc removed {}", s.display());
    }
    assert!(object.exists());
}

/// The view `guest_files` gave a path only as TEXT (a CAST of the BLOB):
/// for a name that is not UTF-8, clients that check UTF-8 (Python's
/// sqlite3, rusqlite's String) failed the whole query. `path_bytes` has
/// the exact bytes.
#[test]
fn guest_files_gives_every_path_as_its_bytes() {
    if !require_root("guest_files_gives_every_path_as_its_bytes") {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let guests: Vec<_> = (0..2).map(|i| dir.path().join(format!("g{i}"))).collect();
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9");
    for g in &guests {
        file(g, "plain", &bytes(1, 5000), 0o644);
        fs::write(g.join(latin1), bytes(2, 5000)).unwrap();
        // One mtime in both (written a tick apart, they differ: no link).
        set_mtime(&g.join(latin1), 1_000_000_000);
    }
    let s = unify_json(&store, &[&guests[0], &guests[1]]);
    let conn = rusqlite::Connection::open(store.join("catalog.db")).unwrap();
    let rows: Vec<(Vec<u8>, String)> = conn
        .prepare(
            "SELECT path_bytes, typeof(path_bytes) FROM guest_files
             WHERE guest = 'g0' ORDER BY path_bytes",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            (b"caf\xe9".to_vec(), "blob".to_string()),
            (b"plain".to_vec(), "blob".to_string())
        ],
        "{s}"
    );
}
